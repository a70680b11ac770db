//! The Linux guest on a network (issue 13): one VM with two virtio NICs on
//! one etherstub. Its `/init` (`alcove.net-pair`) gives them 10.0.0.1 and
//! 10.0.0.2 and arpings 10.0.0.2 out of eth0: the request leaves the
//! guest's eth0, crosses the VMM's frame ring, netd's switch and the ring
//! of the VMM's other NIC into eth1, and eth1's reply comes back the same
//! way. The test wants each NIC with the MAC its `vm.json` gave it, at
//! least one reply from eth1's MAC, and the VM powered off.
//!
//! Not in a tier (it has not yet run reliably here): `cargo xtask test
//! --tier linux --case linux/net-pair` runs it.

use crate::Result;
use crate::emu::{Run, capture_timed_answering};
use crate::guest_images::Images;
use crate::harness::Ending;
use crate::image;
use crate::vm::{VmLog, VmPlan};
use kcore::testproto::{EXIT_PASS, qemu_status};
use std::path::Path;
use std::time::Duration;

pub const CASE: &str = "linux/net-pair";
pub const ALIAS: &str = "net-pair";
/// The NICs' MACs (given, so the test knows them).
pub const MACS: [&str; 2] = ["02:08:20:00:00:01", "02:08:20:00:00:02"];

fn json_string(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

/// The VM: 1 vCPU, 256 MiB, no disk, two NICs on etherstub `stub0`.
pub fn vm_json(images: &Images) -> String {
    format!(
        "{{\n  \"alias\": \"{ALIAS}\",\n  \"brand\": \"bhyve\",\n  \"ram\": 256,\n  \"vcpus\": 1,\n  \
         \"nics\": [\n    {{\"nic_tag\": \"stub0\", \"mac\": \"{}\", \"ip\": \"10.0.0.1\", \"netmask\": \"255.255.255.0\"}},\n    \
         {{\"nic_tag\": \"stub0\", \"mac\": \"{}\", \"ip\": \"10.0.0.2\", \"netmask\": \"255.255.255.0\"}}\n  ],\n  \
         \"kernel\": {},\n  \"initrd\": {},\n  \"cmdline\": \"console=ttyS0 panic=-1 alcove.net-pair\"\n}}\n",
        MACS[0],
        MACS[1],
        json_string(&images.vmlinuz.display().to_string()),
        json_string(&images.initramfs.display().to_string()),
    )
}

/// `a:b:c:d:e:f` in hex, one or two digits a byte.
fn mac_bytes(s: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut out {
        let p = parts.next()?;
        if p.is_empty() || p.len() > 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

/// What is wrong with the run's serial log (empty: it passed).
pub fn judge(serial: &str, vm_name: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let lines: Vec<&str> = serial.lines().map(|l| l.trim_end_matches('\r')).collect();
    for (i, mac) in MACS.iter().enumerate() {
        let want = format!("alcove-guest: eth{i} {mac}");
        if !lines.contains(&want.as_str()) {
            problems.push(format!("the guest did not list eth{i} with {mac} (no line {want:?})"));
        }
    }
    // busybox prints the MAC as ether_ntoa does (no leading zeros).
    let from_eth1 = |l: &str| {
        let Some(rest) = l.strip_prefix("alcove-guest: arping: Unicast reply from 10.0.0.2 [") else { return false };
        rest.split(']').next().and_then(mac_bytes) == mac_bytes(MACS[1])
    };
    let replies = lines.iter().filter(|l| from_eth1(l)).count();
    if replies == 0 {
        let arping: Vec<&str> = lines.iter().copied().filter(|l| l.starts_with("alcove-guest: arping")).collect();
        problems.push(format!("no ARP reply from eth1 ({}) reached eth0; arping said: {arping:?}", MACS[1]));
    }
    let log = VmLog::read(lines.iter().copied(), vm_name);
    problems.extend(log.problems.iter().cloned());
    match log.ending() {
        Some(e) if e.to_string().contains("poweroff") => {}
        other => problems.push(format!("the VM did not power off: {other:?}")),
    }
    problems
}

/// Boots the VM on Alcove under QEMU's SVM and judges its log.
pub fn run(kernel: &Path, images: &Images, timeout: Duration) -> Result<(Run, Vec<String>)> {
    let dir = crate::out_dir().join("linux-e2e").join(CASE.replace('/', "-"));
    std::fs::create_dir_all(&dir)?;
    let json_path = dir.join("vm.json");
    std::fs::write(&json_path, vm_json(images))?;
    let plan = VmPlan::load(&json_path)?;
    let system = plan.write_boot_files(&dir.join("boot"))?;
    let iso = image::iso_of(kernel, &format!("test-{}", CASE.replace('/', "-")), "", &system)?;
    let mut c = plan.qemu().command(&iso);
    c.args(["-monitor", "none", "-serial", "stdio"]);
    let t = capture_timed_answering(c, &CASE.replace('/', "-"), Some(timeout), false, None)?;
    let mut problems = judge(&t.run.serial, &plan.name);
    match t.run.ending {
        Ending::Qemu(s) if s == qemu_status(EXIT_PASS) => {}
        Ending::Qemu(s) => problems.push(format!("QEMU exited with status {s} (a powered-off VM ends it with 33)")),
        Ending::Timeout(s) => problems.push(format!("timed out after {s} s")),
        Ending::Bochs { .. } => {}
    }
    Ok((t.run, problems))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(arping: &str) -> String {
        format!(
            "vm {ALIAS}: started: 1 vCPUs, 256 MiB\r\n\
             alcove-guest: init started\r\n\
             alcove-guest: eth0 02:08:20:00:00:01\r\n\
             alcove-guest: eth1 02:08:20:00:00:02\r\n\
             {arping}\
             alcove-guest: poweroff\r\n\
             vm {ALIAS}: ended: poweroff\r\n"
        )
    }

    #[test]
    fn a_reply_from_eth1_passes_and_its_absence_is_named() {
        let good = log(
            "alcove-guest: arping: ARPING 10.0.0.2 from 10.0.0.1 eth0\r\n\
             alcove-guest: arping: Unicast reply from 10.0.0.2 [2:8:20:0:0:2] 1.234ms\r\n",
        );
        let p = judge(&good, ALIAS);
        assert!(p.iter().all(|p| !p.contains("ARP") && !p.contains("eth")), "{p:?}");
        let none = log("alcove-guest: arping: Received 0 response(s)\r\n");
        let p = judge(&none, ALIAS);
        assert!(p.iter().any(|p| p.starts_with("no ARP reply from eth1")), "{p:?}");
        let wrong_mac = log("alcove-guest: arping: Unicast reply from 10.0.0.2 [02:08:20:00:00:09] 1.0ms\r\n")
            .replace("eth1 02:08:20:00:00:02", "eth1 02:08:20:00:00:09");
        let p = judge(&wrong_mac, ALIAS);
        assert!(p.iter().any(|p| p.contains("eth1 with 02:08:20:00:00:02")), "{p:?}");
        assert!(p.iter().any(|p| p.starts_with("no ARP reply")), "{p:?}");
    }
}
