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
    &["init", "console", "storaged", "netd", "zone-server", "vmm-server", "ktest-user", "ktest-victim", "ktest-vmm", "testguest"];

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
}

/// Packs the boot archive of a system: the manifest, validated, as
/// `manifest.toml` and `manifest.bin`, `bin/init` and `bin/<binary>` for
/// each server, and `files/<name>` for each server's files. A name found in
/// `host_files` is read from its host path; anything else comes from
/// `target/x86_64-unknown-none/release/` (built by [`kernel`]). Every binary
/// is checked as init will load it; a missing file is an error.
pub fn boot_archive_of(system: &BootSystem) -> Result<Vec<u8>> {
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

/// One bootable image: a kernel command line and a manifest.
pub struct IsoSpec<'a> {
    pub name: &'a str,
    pub cmdline: &'a str,
    pub manifest: &'a str,
}

/// Builds `target/alcove/NAME.iso` with GRUB for BIOS and UEFI.
pub fn iso(kernel: &Path, spec: &IsoSpec<'_>) -> Result<PathBuf> {
    iso_of(kernel, spec.name, spec.cmdline, &BootSystem::named(spec.manifest)?)
}

/// As [`iso`], for a system given as a [`BootSystem`] (a generated manifest).
pub fn iso_of(kernel: &Path, name: &str, cmdline: &str, system: &BootSystem) -> Result<PathBuf> {
    let spec = IsoSpec { name, cmdline, manifest: "" };
    let tree = out_dir().join("iso").join(spec.name);
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
            spec.cmdline
        ),
    )?;
    let iso = out_dir().join(format!("{}.iso", spec.name));
    run_quiet(Command::new("grub-mkrescue").arg("-o").arg(&iso).arg(&tree))
        .map_err(|e| format!("grub-mkrescue: {e}"))?;
    Ok(iso)
}
