//! Building the system: the kernel ELF, the boot archive (cpio, from a
//! manifest in `initrd/manifests/`) and a GRUB hybrid ISO (BIOS and UEFI).

use crate::{Result, cargo, out_dir, root, run_quiet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

pub const KERNEL_TARGET: &str = "x86_64-unknown-none";

/// The processes that go into boot archives (each a package with a binary of
/// the same name).
pub const USER_PACKAGES: &[&str] =
    &["init", "console", "shell", "storaged", "netd", "zone-server", "apid", "vmm-server", "ktest-user", "ktest-fuzz", "ktest-victim", "ktest-vmm", "testguest"];

/// Builds the kernel (release, with debug info) and every process binary;
/// returns the kernel's path.
pub fn kernel() -> Result<PathBuf> {
    let status = kernel_target_cargo("build").current_dir(root()).status()?;
    if !status.success() {
        return Err("building the kernel and the servers failed".into());
    }
    Ok(root().join("target").join(KERNEL_TARGET).join("release").join("alcove-kernel"))
}

/// `cargo SUBCOMMAND` over everything built for the kernel target: the
/// kernel and every process binary, as [`kernel`] builds them (`build`, or
/// `clippy` for the clippy tier).
pub fn kernel_target_cargo(subcommand: &str) -> Command {
    let mut c = cargo();
    c.args([subcommand, "--release", "--quiet", "--target", KERNEL_TARGET, "-p", "alcove-kernel"]);
    for p in USER_PACKAGES {
        c.args(["-p", p]);
    }
    c
}

/// What a boot archive is packed from: a manifest's text and where data
/// files that are not built binaries come from.
#[derive(Clone, Debug)]
pub struct BootSystem {
    /// Where the manifest came from (for error messages).
    pub origin: String,
    pub toml: String,
    /// Archive file name → host path, for the servers' `files` (a VM's
    /// kernel and initrd) and anything else not in the build output.
    pub host_files: Vec<(String, PathBuf)>,
}

impl BootSystem {
    /// `initrd/manifests/NAME.toml`, everything from the build output.
    pub fn named(manifest: &str) -> Result<Self> {
        let path = root().join("initrd/manifests").join(format!("{manifest}.toml"));
        let toml = fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(Self { origin: path.display().to_string(), toml, host_files: vec![] })
    }

    /// This system with `args` appended to server `server`'s arguments
    /// (the manifest's `args`). An error if no server has that name.
    pub fn with_server_args(&self, server: &str, args: &[String]) -> Result<Self> {
        let toml = add_server_args(&self.toml, server, args).map_err(|e| format!("{}: {e}", self.origin))?;
        Ok(Self { origin: format!("{} (with {server} args {args:?})", self.origin), toml, host_files: self.host_files.clone() })
    }
}

/// A manifest's text with `args` appended to server `server`'s `args` (the
/// result is the same manifest otherwise, written out again by `toml`).
pub fn add_server_args(manifest: &str, server: &str, args: &[String]) -> std::result::Result<String, String> {
    let mut doc: toml::Table = manifest.parse().map_err(|e| format!("not TOML: {e}"))?;
    let entry = doc
        .get_mut("server")
        .and_then(toml::Value::as_array_mut)
        .and_then(|servers| {
            servers.iter_mut().filter_map(toml::Value::as_table_mut).find(|t| t.get("name").and_then(toml::Value::as_str) == Some(server))
        })
        .ok_or_else(|| format!("no server named {server:?}"))?;
    let list = entry.entry("args").or_insert_with(|| toml::Value::Array(vec![]));
    let list = list.as_array_mut().ok_or_else(|| format!("server {server:?}: args is not a list"))?;
    list.extend(args.iter().map(|a| toml::Value::String(a.clone())));
    toml::to_string(&doc).map_err(|e| format!("writing the manifest: {e}"))
}

/// A manifest's text with server `server`'s argument `KEY=...` set to
/// `KEY=value`: the first argument starting with `KEY=` is replaced (any
/// later ones removed), or the argument appended when there is none.
pub fn set_server_arg(manifest: &str, server: &str, key: &str, value: &str) -> std::result::Result<String, String> {
    let mut doc: toml::Table = manifest.parse().map_err(|e| format!("not TOML: {e}"))?;
    let entry = doc
        .get_mut("server")
        .and_then(toml::Value::as_array_mut)
        .and_then(|servers| {
            servers.iter_mut().filter_map(toml::Value::as_table_mut).find(|t| t.get("name").and_then(toml::Value::as_str) == Some(server))
        })
        .ok_or_else(|| format!("no server named {server:?}"))?;
    let list = entry.entry("args").or_insert_with(|| toml::Value::Array(vec![]));
    let list = list.as_array_mut().ok_or_else(|| format!("server {server:?}: args is not a list"))?;
    let prefix = format!("{key}=");
    let arg = toml::Value::String(format!("{prefix}{value}"));
    match list.iter().position(|a| a.as_str().is_some_and(|a| a.starts_with(&prefix))) {
        Some(i) => {
            list[i] = arg;
            let mut j = i + 1;
            while j < list.len() {
                if list[j].as_str().is_some_and(|a| a.starts_with(&prefix)) {
                    list.remove(j);
                } else {
                    j += 1;
                }
            }
        }
        None => list.push(arg),
    }
    toml::to_string(&doc).map_err(|e| format!("writing the manifest: {e}"))
}

/// Server `server`'s argument `KEY=...` in a manifest's text: the value
/// of the first, if any.
pub fn server_arg(manifest: &str, server: &str, key: &str) -> Option<String> {
    let doc: toml::Table = manifest.parse().ok()?;
    let entry = doc
        .get("server")?
        .as_array()?
        .iter()
        .filter_map(toml::Value::as_table)
        .find(|t| t.get("name").and_then(toml::Value::as_str) == Some(server))?;
    let prefix = format!("{key}=");
    entry.get("args")?.as_array()?.iter().filter_map(toml::Value::as_str).find_map(|a| a.strip_prefix(&prefix)).map(str::to_string)
}

/// Packs the boot archive of a system: the manifest, validated, as
/// `manifest.toml` and `manifest.bin`, `bin/init` and `bin/<binary>` for
/// each server, and `files/<name>` for each server's files. A name found in
/// `host_files` is read from its host path; anything else comes from
/// `target/x86_64-unknown-none/release/` (built by [`kernel`]). Every binary
/// is checked as init will load it; a missing file is an error.
pub fn boot_archive_of(system: &BootSystem) -> Result<Vec<u8>> {
    // Two host files of one name would leave the archive with whichever
    // came first (the API case once booted with the zone case's netd.conf).
    for (i, (name, path)) in system.host_files.iter().enumerate() {
        if let Some((_, other)) = system.host_files[..i].iter().find(|(n, _)| n == name) {
            return Err(format!("two boot files named {name}: {} and {}", other.display(), path.display()).into());
        }
    }
    let bin_dir = root().join("target").join(KERNEL_TARGET).join("release");
    let binary = |name: &str| -> std::result::Result<Option<Vec<u8>>, String> {
        if let Some((_, host)) = system.host_files.iter().find(|(n, _)| n == name) {
            return fs::read(host).map(Some).map_err(|e| format!("{}: {e}", host.display()));
        }
        let file = bin_dir.join(name);
        match fs::read(&file) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) => Err(format!("{} (build it with `cargo xtask build`): {e}", file.display())),
        }
    };
    initrd::pack_system_partial(&system.toml, &binary).map_err(|e| format!("{}: {e}", system.origin).into())
}

/// Builds `target/alcove/NAME.iso` with GRUB for BIOS and UEFI, booting
/// `system` (a manifest of `initrd/manifests/` through
/// [`BootSystem::named`], or a generated one) with the kernel command line
/// `cmdline`.
pub fn iso_of(kernel: &Path, name: &str, cmdline: &str, system: &BootSystem) -> Result<PathBuf> {
    let tree = out_dir().join("iso").join(name);
    let _ = fs::remove_dir_all(&tree);
    fs::create_dir_all(tree.join("boot/grub"))?;
    fs::copy(kernel, tree.join("boot/alcove"))?;
    fs::write(tree.join("boot/alcove.cpio"), boot_archive_of(system)?)?;
    fs::write(
        tree.join("boot/grub/grub.cfg"),
        format!(
            "set timeout=0\nset default=0\n\
             menuentry \"Alcove\" {{\n\
             \x20 multiboot2 /boot/alcove {}\n\
             \x20 module2 /boot/alcove.cpio bootarchive\n\
             \x20 boot\n}}\n",
            cmdline
        ),
    )?;
    let iso = out_dir().join(format!("{name}.iso"));
    run_quiet(Command::new("grub-mkrescue").arg("-o").arg(&iso).arg(&tree))
        .map_err(|e| format!("grub-mkrescue: {e}"))?;
    Ok(iso)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_args_are_appended_to_the_named_server_only() {
        let text = fs::read_to_string(root().join("initrd/manifests/storage.toml")).unwrap();
        let before = initrd::manifest::Manifest::from_toml(&text).unwrap();
        let out = add_server_args(&text, "ktest-storage", &["expect_cpus=4".into()]).unwrap();
        let after = initrd::manifest::Manifest::from_toml(&out).unwrap();
        let server = |m: &initrd::manifest::Manifest, name: &str| m.servers.iter().find(|s| s.name == name).unwrap().clone();
        assert_eq!(server(&before, "ktest-storage").args, ["storage"]);
        assert_eq!(server(&after, "ktest-storage").args, ["storage", "expect_cpus=4"]);
        // Nothing else changed.
        let mut expected = before.clone();
        expected.servers.iter_mut().find(|s| s.name == "ktest-storage").unwrap().args.push("expect_cpus=4".into());
        assert_eq!(after, expected);
        // A server without arguments gets them.
        let text = fs::read_to_string(root().join("initrd/manifests/test.toml")).unwrap();
        let after = initrd::manifest::Manifest::from_toml(&add_server_args(&text, "ktest-user", &["expect_cpus=1".into()]).unwrap()).unwrap();
        assert_eq!(server(&after, "ktest-user").args, ["expect_cpus=1"]);
    }

    #[test]
    fn a_server_arg_is_replaced_or_added() {
        let text = fs::read_to_string(root().join("initrd/manifests/demo.toml")).unwrap();
        assert_eq!(server_arg(&text, "apid", "port").as_deref(), Some("8080"));
        let out = set_server_arg(&text, "apid", "token", "a-new-token-0123456789").unwrap();
        let m = initrd::manifest::Manifest::from_toml(&out).unwrap();
        let apid = m.servers.iter().find(|s| s.name == "apid").unwrap();
        assert_eq!(apid.args, ["token=a-new-token-0123456789", "port=8080"]);
        assert_eq!(server_arg(&out, "apid", "token").as_deref(), Some("a-new-token-0123456789"));
        // Absent: appended; twice: one left.
        let out = set_server_arg(&out, "shell", "token", "x").unwrap();
        let m = initrd::manifest::Manifest::from_toml(&out).unwrap();
        assert_eq!(m.servers.iter().find(|s| s.name == "shell").unwrap().args, ["hostname=alcove", "token=x"]);
        let twice = add_server_args(&out, "apid", &["token=old".into()]).unwrap();
        let out = set_server_arg(&twice, "apid", "token", "new").unwrap();
        let m = initrd::manifest::Manifest::from_toml(&out).unwrap();
        assert_eq!(m.servers.iter().find(|s| s.name == "apid").unwrap().args, ["token=new", "port=8080"]);
        // A prefix of another key is not the key.
        assert_eq!(server_arg(&out, "apid", "tok"), None);
        assert!(set_server_arg(&text, "nobody", "token", "x").unwrap_err().contains("no server named"));
        assert!(set_server_arg("not = [toml", "apid", "token", "x").is_err());
        assert_eq!(server_arg("not = [toml", "apid", "token"), None);
    }

    #[test]
    fn server_args_for_a_missing_server_are_an_error() {
        let text = fs::read_to_string(root().join("initrd/manifests/vm.toml")).unwrap();
        let e = add_server_args(&text, "ktest-user", &["expect_cpus=2".into()]).unwrap_err();
        assert!(e.contains("no server named \"ktest-user\""), "{e}");
        assert!(add_server_args("not = [toml", "x", &[]).is_err());
    }
}
