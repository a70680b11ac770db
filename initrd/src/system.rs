//! Packing a whole system (host only): the manifest, checked and encoded,
//! and every executable it names, each checked as init will load it.

use crate::manifest::Manifest;
use crate::{File, MANIFEST_BIN, MANIFEST_TOML, binary_path, pack};
use std::format;
use std::string::{String, ToString};
use std::vec::Vec;

/// Looks up an executable by name: `Ok(None)` when it does not exist (yet).
pub type MaybeBinary<'a> = dyn Fn(&str) -> Result<Option<Vec<u8>>, String> + 'a;

/// Packs the boot archive for a manifest: `manifest.toml` (the text),
/// `manifest.bin`, `bin/init` and `bin/<binary>` for every server.
/// `binaries(name)` returns the executable called `name` (`"init"` for init);
/// each must pass [`crate::elf::load_plan`].
pub fn pack_system(manifest_toml: &str, binaries: &dyn Fn(&str) -> Result<Vec<u8>, String>) -> Result<Vec<u8>, String> {
    pack_system_partial(manifest_toml, &|name| binaries(name).map(Some))
}

/// As [`pack_system`], but a binary for which `binaries` returns `Ok(None)`
/// is left out of the archive (while the servers are still being written).
/// The manifest is always validated and always included.
pub fn pack_system_partial(manifest_toml: &str, binaries: &MaybeBinary<'_>) -> Result<Vec<u8>, String> {
    let manifest = Manifest::from_toml(manifest_toml).map_err(|e| e.to_string())?;
    let encoded = manifest.encode().map_err(|e| e.to_string())?;
    let mut names = Vec::from([crate::manifest::INIT]);
    names.extend(manifest.binaries());
    let mut executables: Vec<(String, Vec<u8>)> = Vec::new();
    for name in names {
        let path = binary_path(name);
        let Some(bytes) = binaries(name).map_err(|e| format!("{path}: {e}"))? else { continue };
        crate::elf::load_plan(&bytes).map_err(|e| format!("{path}: not a loadable executable: {e}"))?;
        executables.push((path, bytes));
    }
    let mut data_files: Vec<(String, Vec<u8>)> = Vec::new();
    for name in manifest.files() {
        let path = crate::file_path(name);
        let Some(bytes) = binaries(name).map_err(|e| format!("{path}: {e}"))? else { continue };
        data_files.push((path, bytes));
    }
    let mut files = Vec::from([
        File { name: MANIFEST_TOML, data: manifest_toml.as_bytes(), perm: 0o644 },
        File { name: MANIFEST_BIN, data: &encoded, perm: 0o644 },
    ]);
    files.extend(executables.iter().map(|(name, data)| File { name, data, perm: 0o755 }));
    files.extend(data_files.iter().map(|(name, data)| File { name, data, perm: 0o644 }));
    Ok(pack(&files))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Archive, INIT_BINARY};

    const TOML: &str = r#"
        [system]
        name = "t"
        [[server]]
        name = "console"
        priority = 200
        budget_kib = 256
        serves = ["console"]
        [[server]]
        name = "console2"
        binary = "console"
        priority = 200
        budget_kib = 256
        calls = ["console"]
        [[server]]
        name = "netd"
        priority = 150
        budget_kib = 256
    "#;

    fn exe() -> Vec<u8> {
        crate::elf::tests::Builder::two_segments().build()
    }

    #[test]
    fn packs_manifest_and_every_binary_once() {
        let asked = std::cell::RefCell::new(Vec::new());
        let bytes = pack_system(TOML, &|name| {
            asked.borrow_mut().push(name.to_string());
            Ok(exe())
        })
        .unwrap();
        assert_eq!(*asked.borrow(), ["init", "console", "netd"]);
        let a = Archive::new(&bytes);
        let names: Vec<_> = a.entries().map(|e| e.unwrap().name).collect();
        assert_eq!(names, [MANIFEST_TOML, MANIFEST_BIN, INIT_BINARY, "bin/console", "bin/netd"]);
        assert_eq!(a.find(MANIFEST_TOML).unwrap().unwrap().data, TOML.as_bytes());
        let m = Manifest::decode(a.find(MANIFEST_BIN).unwrap().unwrap().data).unwrap();
        assert_eq!(m, Manifest::from_toml(TOML).unwrap());
        let init = a.find(INIT_BINARY).unwrap().unwrap();
        assert_eq!(init.mode, 0o100755);
        assert!(crate::elf::load_plan(init.data).is_ok());
    }

    #[test]
    fn errors_name_the_file() {
        let missing = pack_system(TOML, &|name| if name == "netd" { Err("no such file".into()) } else { Ok(exe()) });
        assert_eq!(missing.unwrap_err(), "bin/netd: no such file");
        let mut pie = exe();
        pie[16] = 3; // ET_DYN
        let pie = pack_system(TOML, &|_| Ok(pie.clone()));
        assert!(pie.unwrap_err().starts_with("bin/init: not a loadable executable: type ET_DYN"));
        let bad =
            pack_system("[system]\nname = \"t\"\n[[server]]\nname = \"a\"\npriority = 0\nbudget_kib = 1\n", &|_| {
                Ok(exe())
            });
        assert_eq!(
            bad.unwrap_err(),
            r#"manifest: server "a": property "priority": 0 is outside 1..=254 (0 is idle, 255 is init's)"#
        );
    }

    #[test]
    fn partial_skips_missing_binaries_but_keeps_the_manifest() {
        let bytes = pack_system_partial(TOML, &|name| Ok((name == "netd").then(exe))).unwrap();
        let names: Vec<_> = Archive::new(&bytes).entries().map(|e| e.unwrap().name).collect();
        assert_eq!(names, [MANIFEST_TOML, MANIFEST_BIN, "bin/netd"]);
        assert!(pack_system_partial("[system]\nname = \"\"\n", &|_| Ok(None)).is_err());
    }
}
