//! The Linux guest on a network (issue 13): one VM with two virtio NICs on
//! one etherstub. Its `/init` (`alcove.net-pair`) gives them 10.0.0.1 and
//! 10.0.0.2 and arpings 10.0.0.2 out of eth0: the request leaves the
//! guest's eth0, crosses the VMM's frame ring, netd's switch and the ring
//! of the VMM's other NIC into eth1, and eth1's reply comes back the same
//! way. The test wants each NIC with the MAC its `vm.json` gave it, at
//! least one reply from eth1's MAC, and the VM powered off.
//!
//! `linux/net-host` (issue 13): one VM whose NIC is on the `admin` switch
//! at 10.0.2.20, where netd's own TCP/IP holds the host address
//! ([`crate::vm::HOST_ADDRESS`], with its TCP echo on port 7): the guest
//! (`alcove.net-host`) pings it and sends a line and 128 KiB of random
//! bytes to the echo; the test wants 3 replies, the line back unchanged,
//! and the bytes back with the same SHA-256.
//!
//! Both are in the linux tier (each passed at least three runs in a row
//! here first); `cargo xtask test --tier linux --case net-pair` (or
//! `--case net-host`) runs one.

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
pub const HOST_CASE: &str = "linux/net-host";
pub const HOST_ALIAS: &str = "net-host";
/// The line the guest sends to netd's echo.
pub const ECHO_LINE: &str = "hello-from-the-guest";
/// Random bytes the guest sends to netd's echo.
pub const ECHO_BYTES: u64 = 131_072;
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

/// The VM of `linux/net-host`: 1 vCPU, 256 MiB, one NIC on `admin`.
pub fn host_vm_json(images: &Images) -> String {
    format!(
        "{{\n  \"alias\": \"{HOST_ALIAS}\",\n  \"brand\": \"bhyve\",\n  \"ram\": 256,\n  \"vcpus\": 1,\n  \
         \"nics\": [\n    {{\"nic_tag\": \"admin\", \"mac\": \"{}\", \"ip\": \"10.0.2.20\", \"netmask\": \"255.255.255.0\"}}\n  ],\n  \
         \"kernel\": {},\n  \"initrd\": {},\n  \"cmdline\": \"console=ttyS0 panic=-1 alcove.net-host\"\n}}\n",
        MACS[0],
        json_string(&images.vmlinuz.display().to_string()),
        json_string(&images.initramfs.display().to_string()),
    )
}

/// What is wrong with `linux/net-host`'s serial log (empty: it passed).
pub fn judge_host(serial: &str, vm_name: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let lines: Vec<&str> = serial.lines().map(|l| l.trim_end_matches('\r')).collect();
    let field = |prefix: &str| lines.iter().find_map(|l| l.strip_prefix(prefix)).map(str::trim);
    let ping: Vec<&str> = lines.iter().copied().filter(|l| l.starts_with("alcove-guest: ping: ")).collect();
    // busybox: "3 packets transmitted, 3 packets received, 0% packet loss"
    if !ping.iter().any(|l| l.contains(" 3 packets transmitted, 3 packets received")) {
        problems.push(format!("netd's host address did not answer all 3 pings; ping said: {ping:?}"));
    }
    match field("alcove-guest: echo said ") {
        Some(s) if s == ECHO_LINE => {}
        other => problems.push(format!("netd's echo sent back {other:?}, not {ECHO_LINE:?}")),
    }
    let sent = field("alcove-guest: echo sent ");
    let back = field("alcove-guest: echo back ");
    let want_len = ECHO_BYTES.to_string();
    match (sent, back) {
        (Some(s), Some(b)) if s == b && s.split_whitespace().nth(1) == Some(want_len.as_str()) => {}
        (s, b) => problems.push(format!("the {ECHO_BYTES} random bytes did not all come back the same: sent {s:?}, back {b:?}")),
    }
    let log = VmLog::read(lines.iter().copied(), vm_name);
    problems.extend(log.problems.iter().cloned());
    match log.ending() {
        Some(e) if e.to_string().contains("poweroff") => {}
        other => problems.push(format!("the VM did not power off: {other:?}")),
    }
    problems
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

/// Boots case `case`'s VM ([`CASE`] or [`HOST_CASE`]) on Alcove under
/// QEMU's SVM and judges its log.
pub fn run(case: &str, kernel: &Path, images: &Images, timeout: Duration) -> Result<(Run, Vec<String>)> {
    let dir = crate::out_dir().join("linux-e2e").join(case.replace('/', "-"));
    std::fs::create_dir_all(&dir)?;
    let json_path = dir.join("vm.json");
    let host = case == HOST_CASE;
    std::fs::write(&json_path, if host { host_vm_json(images) } else { vm_json(images) })?;
    let plan = VmPlan::load(&json_path)?;
    let system = plan.write_boot_files(&dir.join("boot"))?;
    let iso = image::iso_of(kernel, &format!("test-{}", case.replace('/', "-")), "", &system)?;
    let mut c = plan.qemu().command(&iso);
    c.args(["-monitor", "none", "-serial", "stdio"]);
    let t = capture_timed_answering(c, &case.replace('/', "-"), Some(timeout), false, None)?;
    let mut problems = if host { judge_host(&t.run.serial, &plan.name) } else { judge(&t.run.serial, &plan.name) };
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

    fn host_log(ping: &str, said: &str, back: &str) -> String {
        format!(
            "vm {HOST_ALIAS}: started: 1 vCPUs, 256 MiB\r\n\
             alcove-guest: init started\r\n\
             alcove-guest: ping: PING 10.0.2.15 (10.0.2.15): 56 data bytes\r\n\
             alcove-guest: ping: --- 10.0.2.15 ping statistics ---\r\n\
             alcove-guest: ping: {ping}\r\n\
             alcove-guest: echo said {said}\r\n\
             alcove-guest: echo sent 0123abcd 131072\r\n\
             alcove-guest: echo back {back}\r\n\
             alcove-guest: poweroff\r\n\
             vm {HOST_ALIAS}: ended: poweroff\r\n"
        )
    }

    #[test]
    fn the_host_case_wants_every_ping_the_line_and_the_same_bytes_back() {
        let all = "3 packets transmitted, 3 packets received, 0% packet loss";
        assert_eq!(judge_host(&host_log(all, ECHO_LINE, "0123abcd 131072"), HOST_ALIAS), Vec::<String>::new());
        let p = judge_host(&host_log("3 packets transmitted, 2 packets received, 33% packet loss", ECHO_LINE, "0123abcd 131072"), HOST_ALIAS);
        assert!(p.len() == 1 && p[0].starts_with("netd's host address did not answer"), "{p:?}");
        let p = judge_host(&host_log(all, "", "0123abcd 131072"), HOST_ALIAS);
        assert!(p.len() == 1 && p[0].starts_with("netd's echo sent back"), "{p:?}");
        let p = judge_host(&host_log(all, ECHO_LINE, "0123abcd 65536"), HOST_ALIAS);
        assert!(p.len() == 1 && p[0].contains("did not all come back"), "{p:?}");
        let p = judge_host(&host_log(all, ECHO_LINE, "e3b0c442 131072"), HOST_ALIAS);
        assert!(p.len() == 1 && p[0].contains("did not all come back"), "{p:?}");
    }
}
