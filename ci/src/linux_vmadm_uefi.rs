//! `linux/vmadm-uefi` (issue 15): a VM made at run time by `vmadm create`
//! from an imported image that requires UEFI, booted through OVMF.
//!
//! The machine (manifest `initrd/manifests/vmuefi.toml`) is
//! `linux/vmadm-net`'s with one VMM template carrying Debian's OVMF. The
//! harness makes a GRUB disk with the EFI GRUB only (the cloud kernel and
//! the test initramfs, the guest's default `/init`: it hashes its disk,
//! writes its marker and powers off), serves it xz-compressed as a `zvol`
//! image whose manifest says `requirements.bootrom: "uefi"`, and types on
//! the console: `imgadm sources -a`, `imgadm import`, a `vmadm create`
//! asking for `bootrom: "bios"` on that image (refused, naming `bootrom`),
//! the same payload without `bootrom` (the VM takes the image's), `vmadm
//! get` once the guest powered off, `vmadm delete` and `poweroff`.
//!
//! It wants: the import; the BIOS create refused with vmadm's error naming
//! `bootrom` and the image's requirement; the second create; OVMF's banner,
//! GRUB started by it on the `efi` platform, the guest's `/init` and its
//! power-off; `vmadm get` answering `"bootrom": "uefi"`; the delete; the
//! machine ended by `poweroff`.

use crate::Result;
use crate::emu::capture_timed_script;
use crate::guest_images::Images;
use crate::harness::Ending;
use crate::image::{self, BootSystem};
use kcore::testproto::{EXIT_PASS, qemu_status};
use std::fs;
use std::path::Path;
use std::time::Duration;
use vmm_server::config::Bootrom;

pub const CASE: &str = "linux/vmadm-uefi";
pub const ALIAS: &str = "vmadm-uefi";
const HOSTNAME: &str = "uefitest";
/// The image (the EFI GRUB disk).
const IMAGE: &str = "1a9e0000-0000-4000-8000-0000000000e2";
const IMAGE_NAME: &str = "alcove-efi-grub-linux";
const UUID: &str = "7e7e0000-0000-4000-8000-0000000000c1";
const MEM_MIB: u32 = 1024;
const NETD_CONF: &str = "# linux/vmadm-uefi (ci/src/linux_vmadm_uefi.rs)\nnic_tag admin\n";

/// The payload: the image's clone as the boot disk; `bootrom` as given
/// (`None`: the image's).
pub fn payload(bootrom: Option<&str>) -> String {
    let mut p = serde_json::json!({
        "uuid": UUID,
        "brand": "bhyve",
        "alias": ALIAS,
        // GRUB's EFI heap runs out loading the kernel at 128 MiB.
        "ram": 256,
        "vcpus": 1,
        "disks": [{"image_uuid": IMAGE, "boot": true, "model": "virtio"}],
    });
    if let Some(b) = bootrom {
        p["bootrom"] = serde_json::json!(b);
    }
    p.to_string()
}

fn script(source_port: u16) -> Vec<(String, Vec<u8>)> {
    vec![
        (format!("Alcove operator shell on {HOSTNAME}"), format!("imgadm sources -a http://10.0.2.2:{source_port}\r").into_bytes()),
        ("Added image source".into(), format!("imgadm import {IMAGE}\r").into_bytes()),
        (format!("Imported image {IMAGE}"), format!("vmadm create <<< '{}'\r", payload(Some("bios"))).into_bytes()),
        ("requires bootrom".into(), format!("vmadm create <<< '{}'\r", payload(None)).into_bytes()),
        // The VMM's last lines (its run's counts): the guest's kernel has
        // stopped printing, so its shutdown lines cannot fall inside the
        // echo of what is typed next.
        (format!("vm {ALIAS}: ran "), format!("vmadm get {UUID}\r").into_bytes()),
        ("\"bootrom\"".into(), format!("vmadm delete {UUID}\r").into_bytes()),
        (format!("Successfully deleted VM {UUID}"), b"poweroff\r".to_vec()),
    ]
}

/// Runs the case.
pub fn run(kernel: &Path, images: &Images, timeout: Duration) -> Result<crate::linux_vmadm_net::Outcome> {
    let dir = crate::out_dir().join("vmadm-uefi");
    fs::create_dir_all(&dir)?;
    let (raw_bytes, file) = crate::linux_vmadm_net::grub_image_files(&dir, images, "console=ttyS0 panic=-1", "x86_64-efi")?;
    let mut extra = crate::imgsource::Extra::zvol(IMAGE, IMAGE_NAME, raw_bytes, file, "xz");
    extra.manifest["requirements"] = serde_json::json!({"bootrom": "uefi"});
    let source = crate::imgsource::start_with(vec![extra])?;
    let mut system = BootSystem::named("vmuefi")?;
    system.host_files.push((vmm_server::firmware::OVMF_FILE.into(), crate::fwboot::ovmf()?));
    let conf = dir.join("netd.conf");
    fs::write(&conf, format!("{NETD_CONF}{}", crate::vm::admin_host_line()))?;
    system.host_files.push(("netd.conf".into(), conf));
    let iso = image::iso_of(kernel, "test-linux-vmadm-uefi", "", &system)?;
    let c = crate::linux_vmadm_net::shell_machine(&dir, &iso, MEM_MIB, true)?;
    let t = capture_timed_script(c, &CASE.replace('/', "-"), Some(timeout), false, script(source.port))?;
    drop(source);
    let (problems, summary) = judge(&t.run.serial, t.run.ending, &t.lines);
    Ok(crate::linux_vmadm_net::Outcome { run: t.run, problems, summary })
}

/// What is wrong with the run (empty: it passed), and a summary.
pub fn judge(serial: &str, ending: Ending, lines: &[(Duration, String)]) -> (Vec<String>, String) {
    let mut problems = Vec::new();
    let text = serial.replace("\r\n", "\n").replace('\r', "\n");
    let has = |s: &str| text.contains(s);
    if !has(&format!("Imported image {IMAGE} ({IMAGE_NAME}@1.0)")) {
        problems.push("`imgadm import` of the EFI GRUB image did not say `Imported image`".into());
    }
    let refusal = text.lines().find(|l| l.contains("requires bootrom"));
    if !refusal.is_some_and(|l| l.contains("\"uefi\"")) {
        problems.push(format!("the create asking for bootrom \"bios\" was not refused for the image's \"uefi\": {refusal:?}"));
    }
    if !has(&format!("Successfully created VM {UUID}")) {
        problems.push(format!("`vmadm create` without bootrom ({UUID}) did not succeed"));
    }
    let banner = crate::fwboot::firmware_banner(Bootrom::Uefi);
    let grub = format!("{} (efi)", crate::fwboot::GRUB_LINE);
    for (what, line) in [("OVMF's banner", banner), ("GRUB on the efi platform", grub.as_str()), ("the guest's /init", "alcove-guest: init started"), ("the guest's power-off", "alcove-guest: poweroff")] {
        if !has(line) {
            problems.push(format!("no {what} ({line:?}) on the console"));
        }
    }
    // After the guest's last line (not found by the echo of `vmadm get`,
    // which another writer's line may split).
    let get_bootrom = text.lines().skip_while(|l| !l.contains("alcove-guest: poweroff")).find(|l| l.contains("\"bootrom\""));
    if !get_bootrom.is_some_and(|l| l.contains("\"uefi\"")) {
        problems.push(format!("`vmadm get` did not answer \"bootrom\": \"uefi\": {get_bootrom:?}"));
    }
    if !has(&format!("Successfully deleted VM {UUID}")) {
        problems.push("`vmadm delete` of the VM did not succeed".into());
    }
    match ending {
        Ending::Qemu(s) if s == qemu_status(EXIT_PASS) => {}
        other => problems.push(format!("the machine did not end by `poweroff`: {other:?}")),
    }
    let at = |p: &str| lines.iter().find(|(_, l)| l.contains(p)).map(|(t, _)| t.as_secs_f64());
    let summary = match (at(&format!("Successfully created VM {UUID}")), at(banner), at("alcove-guest: init started")) {
        (Some(c), Some(b), Some(i)) => format!("created at {c:.1} s, OVMF {b:.1} s, guest's /init {i:.1} s"),
        _ => String::from("timings incomplete"),
    };
    (problems, summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transcript(get_bootrom: &str) -> String {
        let p = format!("[root@{HOSTNAME} ~]# ");
        format!(
            "Alcove operator shell on {HOSTNAME}\n{p}imgadm import {IMAGE}\nImported image {IMAGE} ({IMAGE_NAME}@1.0)\n\
             {p}vmadm create <<< 'x'\nInvalid value(s) for: bootrom: \"bios\": the boot disk's image {IMAGE} requires bootrom \"uefi\" (requirements.bootrom)\n\
             {p}vmadm create <<< 'y'\nSuccessfully created VM {UUID}\n{p}BdsDxe: starting Boot0001\n{} (efi)\n\
             alcove-guest: init started\nalcove-guest: poweroff\nvmadm get 7e7e[    3.6] ACPI: PM: Preparing to enter system sleep state S5\n\
             {{\n  \"bootrom\": \"{get_bootrom}\",\n}}\n\
             {p}vmadm delete {UUID}\nSuccessfully deleted VM {UUID}\n{p}poweroff\n",
            crate::fwboot::GRUB_LINE
        )
    }

    #[test]
    fn the_judge_wants_the_refusal_ovmf_the_guest_and_uefi_kept() {
        let ok = Ending::Qemu(qemu_status(EXIT_PASS));
        assert_eq!(judge(&transcript("uefi"), ok, &[]).0, Vec::<String>::new());
        let p = judge(&transcript("bios"), ok, &[]).0;
        assert!(p.len() == 1 && p[0].contains("vmadm get"), "{p:?}");
        let p = judge(&transcript("uefi").replace("BdsDxe", "SeaBIOS"), ok, &[]).0;
        assert!(p.len() == 1 && p[0].contains("OVMF"), "{p:?}");
        let p = judge(&transcript("uefi").replace("requires bootrom", "is fine with"), ok, &[]).0;
        assert!(p.len() == 1 && p[0].contains("not refused"), "{p:?}");
        let v: serde_json::Value = serde_json::from_str(&payload(None)).unwrap();
        assert!(v.get("bootrom").is_none() && v["disks"][0]["image_uuid"] == IMAGE);
        assert!(!payload(Some("bios")).contains('\''));
    }
}
