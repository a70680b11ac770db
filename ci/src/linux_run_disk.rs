//! `linux/run-host-disk` (issue 12, item 13): `cargo xtask run --vm
//! FILE.json` with a disk given as a host file, run as a user runs it (the
//! `xtask` binary itself, `--pool` a fresh pool file), twice.
//!
//! The description is the Linux test guest's (Debian's cloud kernel, the
//! test initramfs, 1 vCPU) with `disks[0].path` a host file of random
//! bytes. `run` imports the file into a new volume of the pool file before
//! the boot; the guest hashes its disk, writes its marker into sector 0
//! and powers off; `run` exports the volume back into the file. Then the
//! host changes the file (a pattern at 4 MiB) and runs it again: the
//! volume is there already, and the import writes only what differs.
//!
//! It wants, each run: exit status 0 (the guest powered off); `run`'s
//! lines saying the file was imported (into a new volume the first time
//! only) and exported back; the guest's hash of its disk equal to the
//! file's before the run (the second time: with the first run's marker and
//! the host's change in it); after the run, the file as before but for the
//! marker in sector 0, at its length.

use crate::Result;
use crate::guest_images::Images;
use crate::vm;
use std::fs;
use std::process::{Command, Stdio};
use std::time::Duration;

pub const CASE: &str = "linux/run-host-disk";
const ALIAS: &str = "run-host-disk";
/// The disk file.
const DISK_BYTES: usize = 8 << 20;
/// Where the host writes between the runs, and what.
const CHANGE_AT: usize = 4 << 20;
const CHANGE: &[u8] = b"ALCOVE-HOST-CHANGE between the runs\n";

/// The description: the test guest with the host file `disk.img` as its
/// one disk (a path relative to the description, as a user writes it).
pub fn vm_json(images: &Images) -> String {
    serde_json::json!({
        "alias": ALIAS,
        "brand": "bhyve",
        "ram": 256,
        "vcpus": 1,
        "disks": [{"path": "disk.img", "model": "virtio"}],
        "kernel": images.vmlinuz.display().to_string(),
        "initrd": images.initramfs.display().to_string(),
        "cmdline": "console=ttyS0 panic=-1",
    })
    .to_string()
}

/// Runs the case: (problems, summary).
pub fn run(images: &Images, timeout: Duration) -> Result<(Vec<String>, String)> {
    let dir = crate::out_dir().join(ALIAS);
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir)?;
    let (disk, json, pool) = (dir.join("disk.img"), dir.join("vm.json"), dir.join("pool.img"));
    fs::write(&json, vm_json(images))?;
    let mut bytes = vm::random_bytes(DISK_BYTES);
    fs::write(&disk, &bytes)?;
    let mut problems = Vec::new();
    let mut secs = Vec::new();
    for round in 1..=2 {
        if round == 2 {
            bytes[CHANGE_AT..CHANGE_AT + CHANGE.len()].copy_from_slice(CHANGE);
            fs::write(&disk, &bytes)?;
        }
        let hash = vm::sha256_file(&disk)?;
        let started = std::time::Instant::now();
        let out = Command::new(std::env::current_exe()?)
            .arg("run")
            .arg("--vm")
            .arg(&json)
            .arg("--pool")
            .arg(&pool)
            .args(["--timeout", &timeout.as_secs().to_string()])
            .stdin(Stdio::null())
            .output()?;
        secs.push(started.elapsed().as_secs_f64());
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        fs::write(dir.join(format!("run{round}.log")), format!("{stdout}\n--- stderr ---\n{stderr}"))?;
        let after = fs::read(&disk)?;
        problems.extend(judge(round, out.status.code(), &stdout, &stderr, &hash, &bytes, &after).into_iter().map(|p| format!("run {round}: {p}")));
        bytes = after;
    }
    let summary = format!(
        "run --vm with a host-file disk, twice ({:.1} s and {:.1} s): imported into a pool volume, the guest read the file's bytes and its write came back into the file",
        secs[0], secs[1]
    );
    Ok((problems, summary))
}

/// What is wrong with run `round` of `run --vm` (exit status `code`, its
/// output), given the file's hash before it, its bytes before and after.
pub fn judge(round: u32, code: Option<i32>, stdout: &str, stderr: &str, hash: &str, before: &[u8], after: &[u8]) -> Vec<String> {
    let mut problems = Vec::new();
    if code != Some(0) {
        problems.push(format!("`cargo xtask run --vm` exited with {code:?}, not 0 (the guest powers off); its last lines: {:?}", last_lines(stderr, 4)));
    }
    // (`zones/vm-ALIAS-diskN` for a description without a uuid.)
    let volume = format!("zones/vm-{ALIAS}-disk0");
    let imported = format!("imported into {}{volume}", if round == 1 { "new volume " } else { "" });
    if !stderr.lines().any(|l| l.starts_with("xtask: disks[0]: ") && l.ends_with(&imported)) {
        problems.push(format!("`run` did not say {imported:?}"));
    }
    if !stderr.lines().any(|l| l.starts_with(&format!("xtask: disks[0]: {volume} exported back into "))) {
        problems.push("`run` did not say the volume was exported back into the file".into());
    }
    let guest_hash = stdout.lines().find_map(|l| l.trim_end_matches('\r').split("alcove-guest: vda-sha256 ").nth(1)).map(|h| h.split_whitespace().next().unwrap_or(""));
    if guest_hash != Some(hash) {
        problems.push(format!("the guest hashed its disk as {guest_hash:?}, the file's hash before the run is {hash}"));
    }
    if let Some(p) = vm::check_disk_after(before, after, 1) {
        problems.push(format!("the file after the run: {p}"));
    }
    problems
}

fn last_lines(text: &str, n: usize) -> Vec<&str> {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A good run passes; a wrong exit status, a guest that read other
    /// bytes, a file the write did not reach, a missing export line each
    /// fail it.
    #[test]
    fn the_judge_wants_the_file_in_and_back() {
        let before = vec![7u8; 4096];
        let mut after = before.clone();
        let m = vm::marker(1);
        after[..512].fill(0);
        after[..m.len()].copy_from_slice(m.as_bytes());
        let stderr = "xtask: disks[0]: /x/disk.img imported into new volume zones/vm-run-host-disk-disk0\n\
                      xtask: disks[0]: zones/vm-run-host-disk-disk0 exported back into /x/disk.img\n";
        let stdout = "alcove-guest: vda-sha256 abc  /dev/vda\r\nalcove-guest: vda-marker written\n";
        assert_eq!(judge(1, Some(0), stdout, stderr, "abc", &before, &after), Vec::<String>::new());
        // The second run's volume is not new.
        assert_eq!(judge(2, Some(0), stdout, stderr, "abc", &before, &after).len(), 1);
        assert_eq!(judge(2, Some(0), stdout, &stderr.replace("new volume ", ""), "abc", &before, &after), Vec::<String>::new());
        assert_eq!(judge(1, Some(3), stdout, stderr, "abc", &before, &after).len(), 1);
        assert_eq!(judge(1, Some(0), stdout, stderr, "abd", &before, &after).len(), 1);
        assert_eq!(judge(1, Some(0), stdout, stderr, "abc", &before, &before).len(), 1);
        assert_eq!(judge(1, Some(0), stdout, &stderr[..stderr.find("xtask: disks[0]: zones").unwrap()], "abc", &before, &after).len(), 1);
    }

    #[test]
    fn the_description_names_a_host_file_disk() {
        let images = Images {
            vmlinuz: "/i/vmlinuz".into(),
            initramfs: "/i/initramfs.cpio".into(),
            modules: "/i/modules".into(),
            release: "6.1".into(),
            kernel_package: "k".into(),
        };
        let c = vmm_server::config::VmConfig::from_json(&vm_json(&images)).unwrap();
        assert_eq!((c.alias.as_deref(), c.vcpus, c.disks.len()), (Some(ALIAS), 1, 1));
        assert_eq!(c.disks[0].path, "disk.img");
    }
}
