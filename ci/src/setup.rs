//! Installs what the other commands need, idempotently: Debian packages
//! through apt-get and the toolchain's components and target through rustup.
//! Silent when everything is already there.

use crate::{Result, root, run_quiet};
use std::process::Command;

/// Debian packages the build and the emulators need. `bochs-term` is Bochs's
/// terminal display: Debian's Bochs has no `nogui`, and `term` runs headless.
pub const PACKAGES: &[&str] = &[
    "qemu-system-x86",
    "bochs",
    "bochs-term",
    "bochsbios",
    "vgabios",
    "grub-pc-bin",
    "grub-efi-amd64-bin",
    "xorriso",
    "mtools",
    "ovmf",
    "cpio",
];

fn installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${db:Status-Status}", pkg])
        .output()
        .map(|o| o.status.success() && o.stdout == b"installed")
        .unwrap_or(false)
}

fn as_root(args: &[&str]) -> Command {
    let is_root = Command::new("id").arg("-u").output().map(|o| o.stdout.starts_with(b"0")).unwrap_or(false);
    let mut c = if is_root { Command::new(args[0]) } else { let mut c = Command::new("sudo"); c.arg(args[0]); c };
    c.args(&args[1..]).env("DEBIAN_FRONTEND", "noninteractive");
    c
}

pub fn ensure() -> Result<()> {
    let missing: Vec<&str> = PACKAGES.iter().copied().filter(|p| !installed(p)).collect();
    if !missing.is_empty() {
        eprintln!("xtask: installing {}", missing.join(" "));
        let mut install = vec!["apt-get", "install", "-y", "-q", "--no-install-recommends"];
        install.extend(&missing);
        if run_quiet(&mut as_root(&install)).is_err() {
            // A fresh machine may have no package lists yet.
            run_quiet(&mut as_root(&["apt-get", "update", "-q"]))?;
            run_quiet(&mut as_root(&install))?;
        }
    }
    let have = |args: &[&str], what: &str| -> bool {
        Command::new("rustup")
            .args(args)
            .current_dir(root())
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).lines().any(|l| l.starts_with(what)))
            .unwrap_or(false)
    };
    // rust-src builds `core` for the kernel target; clippy is the `clippy`
    // tier (rust-toolchain.toml names both, but an older rustup or a
    // toolchain installed by hand may lack them).
    for component in ["rust-src", "clippy"] {
        if !have(&["component", "list", "--installed"], component) {
            eprintln!("xtask: adding the {component} component");
            run_quiet(Command::new("rustup").args(["component", "add", component]).current_dir(root()))?;
        }
    }
    if !have(&["target", "list", "--installed"], "x86_64-unknown-none") {
        eprintln!("xtask: adding the x86_64-unknown-none target");
        run_quiet(Command::new("rustup").args(["target", "add", "x86_64-unknown-none"]).current_dir(root()))?;
    }
    Ok(())
}
