//! `linux/net-protect` (issue 13's link-protection test): one Linux VM
//! made at run time by `vmadm create` from a SmartOS payload, with five
//! NICs on etherstub `stub0`, tries what SmartOS's link protection stops,
//! and the operator reads netd's drop counters with `dlstat`.
//!
//! The machine (manifest `initrd/manifests/netprotect.toml`) is the shell
//! case's: the operator shell on the serial console, zone-server, storaged's
//! pool on a blank drive, netd with etherstub `stub0`; the VMM template
//! carries Debian's cloud kernel and the test initramfs, which the payload
//! boots directly (`kernel`, `initrd`, `cmdline` with `alcove.net-protect`).
//! The NICs: eth0 and eth1 with SmartOS's defaults (every `allow_*` false),
//! eth2 with `allow_ip_spoofing` and `allow_dhcp_spoofing`, eth3 and eth4
//! on VLAN 5. The guest's `/init` (`images/linux/init`) gives ethN
//! 10.0.0.N+1 and prints how many of 3 ARP requests were answered, or
//! whether a DHCP client got a lease, for each try:
//!
//! | try | what | wanted |
//! |---|---|---|
//! | own | eth0 asks for eth1's address from its own | answered |
//! | forged-ip | eth0 asks from 10.0.0.9 (not its `ips`) | none |
//! | allowed-ip | eth2 asks from 10.0.0.9 (`allow_ip_spoofing`) | answered |
//! | other-vlan | eth3 (VLAN 5) asks for eth1's (VLAN 0) | none |
//! | same-vlan | eth3 asks for eth4's (both VLAN 5) | answered |
//! | forged-mac | eth0 with another MAC asks for eth1's | none |
//! | mac-back | eth0 with its own MAC again | answered |
//! | rogue-dhcp | a DHCP server on eth0, the client on eth1 | no lease |
//! | allowed-dhcp | the server on eth2 (`allow_dhcp_spoofing`) | a lease |
//!
//! Then the harness types `dladm show-vnic` (each VNIC's link name and
//! MAC), `dlstat` (netd's counters), `vmadm delete` and `poweroff`. It
//! wants, besides the guest's answers: eth0's VNIC with at least 3
//! `ip_spoof`, 3 `mac_spoof` and 1 `dhcp_spoof` among the frames it sent
//! that were dropped; none of those three reasons on eth1, eth3 or eth4,
//! and neither `ip_spoof` nor `dhcp_spoof` on eth2; the VM deleted; the
//! machine ended by `poweroff`.

use crate::Result;
use crate::emu::capture_timed_script;
use crate::guest_images::Images;
use crate::harness::{Ending, First, Transcript};
use crate::image::{self, BootSystem};
use kcore::testproto::{EXIT_PASS, qemu_status};
use std::fs;
use std::path::Path;
use std::time::Duration;

pub const CASE: &str = "linux/net-protect";
pub const ALIAS: &str = "net-protect";
const HOSTNAME: &str = "protecttest";
const UUID: &str = "5e11c0de-0000-4000-8000-0000000000b1";
const RAM_MIB: u32 = 256;
const MEM_MIB: u32 = 1024;
/// The NICs' MACs, eth0 to eth4 (`dladm` prints them without leading
/// zeros: `2:8:20:5f:0:1`).
const MACS: [&str; 5] = ["02:08:20:5f:00:01", "02:08:20:5f:00:02", "02:08:20:5f:00:03", "02:08:20:5f:00:04", "02:08:20:5f:00:05"];
const NETD_CONF: &str = "# linux/net-protect (ci/src/linux_protect.rs)\netherstub stub0\n";

/// A try's name and whether it must get through (an answer or a lease).
pub const TRIES: [(&str, &str, bool); 9] = [
    ("own", "replies", true),
    ("forged-ip", "replies", false),
    ("allowed-ip", "replies", true),
    ("other-vlan", "replies", false),
    ("same-vlan", "replies", true),
    ("forged-mac", "replies", false),
    ("mac-back", "replies", true),
    ("rogue-dhcp", "leases", false),
    ("allowed-dhcp", "leases", true),
];

/// The SmartOS payload: direct boot of the test guest, five NICs.
pub fn payload() -> String {
    let nic = |i: usize, extra: serde_json::Value| {
        let mut n = serde_json::json!({"nic_tag": "stub0", "mac": MACS[i], "ips": [format!("10.0.0.{}/24", i + 1)], "model": "virtio"});
        if let (Some(o), Some(e)) = (n.as_object_mut(), extra.as_object()) {
            o.extend(e.clone());
        }
        n
    };
    serde_json::json!({
        "uuid": UUID,
        "brand": "bhyve",
        "alias": ALIAS,
        "ram": RAM_MIB,
        "vcpus": 1,
        "kernel": "/vmlinuz",
        "initrd": "/initramfs.cpio",
        "cmdline": "console=ttyS0 panic=-1 alcove.net-protect",
        "nics": [
            nic(0, serde_json::json!({})),
            nic(1, serde_json::json!({})),
            nic(2, serde_json::json!({"allow_ip_spoofing": true, "allow_dhcp_spoofing": true})),
            nic(3, serde_json::json!({"vlan_id": 5})),
            nic(4, serde_json::json!({"vlan_id": 5})),
        ],
    })
    .to_string()
}

fn script() -> Vec<(String, Vec<u8>)> {
    vec![
        (format!("Alcove operator shell on {HOSTNAME}"), format!("vmadm create <<< '{}'\r", payload()).into_bytes()),
        ("alcove-guest: protect done".into(), b"dladm show-vnic\r".to_vec()),
        ("MACADDRTYPE".into(), b"dlstat\r".to_vec()),
        ("ODROPS".into(), format!("vmadm delete {UUID}\r").into_bytes()),
        (format!("Successfully deleted VM {UUID}"), b"poweroff\r".to_vec()),
    ]
}

/// A run's result (as `linux/vmadm-net`'s).
pub use crate::linux_vmadm_net::Outcome;

/// Runs the case.
pub fn run(kernel: &Path, images: &Images, timeout: Duration) -> Result<Outcome> {
    let dir = crate::out_dir().join("net-protect");
    fs::create_dir_all(&dir)?;
    let mut system = BootSystem::named("netprotect")?;
    system.host_files.push(("vmlinuz".into(), images.vmlinuz.clone()));
    system.host_files.push(("initramfs.cpio".into(), images.initramfs.clone()));
    let conf = dir.join("netd.conf");
    fs::write(&conf, NETD_CONF)?;
    system.host_files.push(("netd.conf".into(), conf));
    let iso = image::iso_of(kernel, "test-linux-net-protect", "", &system)?;
    let c = crate::linux_vmadm_net::shell_machine(&dir, &iso, MEM_MIB, false)?;
    let t = capture_timed_script(c, &CASE.replace('/', "-"), Some(timeout), false, script())?;
    let (problems, summary) = judge(&t.run.serial, t.run.ending);
    Ok(Outcome { run: t.run, problems, summary })
}

/// Console lines other writers put between the shell's: the servers'
/// logs and the VMM's lines.
fn other_writer(line: &str) -> bool {
    const OTHERS: [&str; 6] = ["[INFO ] ", "[WARN ] ", "[ERROR] ", "[DEBUG] ", "init: ready: ", "vm net-protect"];
    OTHERS.iter().any(|m| line.contains(m))
}

/// `dladm show-vnic`'s header and `dlstat`'s.
const VNIC_HEADER: First = First::Header(&["LINK", "OVER", "SPEED", "MACADDRESS", "MACADDRTYPE", "VID"]);
const DLSTAT_HEADER: First = First::Header(&["LINK", "IPKTS", "RBYTES", "IDROPS", "OPKTS", "OBYTES", "ODROPS"]);

/// A MAC as illumos prints it (`2:8:20:5f:0:1`).
fn illumos_mac(mac: &str) -> String {
    mac.split(':').map(|b| u8::from_str_radix(b, 16).map_or_else(|_| b.to_string(), |v| format!("{v:x}"))).collect::<Vec<_>>().join(":")
}

/// Reasons and counts of a `dlstat` drops column (`ip_spoof=3,mac_spoof=1`
/// or `--`).
fn drops(column: &str) -> Vec<(String, u64)> {
    column.split(',').filter_map(|d| d.split_once('=')).filter_map(|(r, n)| Some((r.to_string(), n.parse().ok()?))).collect()
}

/// What is wrong with the run (empty: it passed), and a summary.
pub fn judge(serial: &str, ending: Ending) -> (Vec<String>, String) {
    let mut problems = Vec::new();
    let text = serial.replace("\r\n", "\n").replace('\r', "\n");
    let shell = Transcript::new(text.lines().filter(|l| !other_writer(l)).collect(), &format!("[root@{HOSTNAME} ~]# "));
    // The tables after the guest's last line, found by their headers (not
    // by the echoes of their commands, which another writer's line may
    // swallow).
    let table = |header: &First| -> Vec<&str> {
        shell.after_last("alcove-guest: protect done").and_then(|from| shell.answer_after(from, header)).map(|a| a.rows().to_vec()).unwrap_or_default()
    };
    if !text.contains(&format!("Successfully created VM {UUID}")) {
        problems.push(format!("`vmadm create` of the VM ({UUID}) did not succeed"));
    }
    // The guest's tries.
    let mut results = Vec::new();
    for (name, what, passes) in TRIES {
        let p = format!("alcove-guest: protect {name} {what}=");
        let got: Option<u32> = text.lines().find_map(|l| l.find(&p).and_then(|i| l[i + p.len()..].trim().parse().ok()));
        match got {
            None => problems.push(format!("the guest printed no line for try {name:?} ({p}N)")),
            Some(n) if passes && n == 0 => problems.push(format!("try {name:?} should have got through and got no {what}")),
            Some(n) if !passes && n > 0 => problems.push(format!("try {name:?} should have been stopped and got {n} {what}")),
            Some(n) => results.push(format!("{name} {n}")),
        }
    }
    // Link names by MAC, then each NIC's drops from dlstat.
    let vnics = table(&VNIC_HEADER);
    let link_of = |mac: &str| {
        let want = illumos_mac(mac);
        vnics.iter().find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 4 && f[3] == want).then(|| f[0].to_string())
        })
    };
    let stats = table(&DLSTAT_HEADER);
    let mut sent_drops = Vec::new();
    for (i, mac) in MACS.iter().enumerate() {
        let Some(link) = link_of(mac) else {
            problems.push(format!("`dladm show-vnic` did not list eth{i}'s VNIC ({mac}): {vnics:?}"));
            continue;
        };
        // LINK IPKTS RBYTES IDROPS OPKTS OBYTES ODROPS
        let row = stats.iter().map(|l| l.split_whitespace().collect::<Vec<_>>()).find(|f| f.len() == 7 && f[0] == link);
        let Some(row) = row else {
            problems.push(format!("`dlstat` has no row for {link} (eth{i}): {stats:?}"));
            continue;
        };
        let d = drops(row[6]);
        let count = |r: &str| d.iter().find(|(n, _)| n == r).map_or(0, |(_, n)| *n);
        let mut wrong = |why: String| problems.push(format!("eth{i}'s VNIC {link}: {why} (dlstat ODROPS {:?})", row[6]));
        if i == 0 {
            for (reason, at_least) in [("ip_spoof", 3), ("mac_spoof", 3), ("dhcp_spoof", 1)] {
                if count(reason) < at_least {
                    wrong(format!("{} {reason} drops counted, at least {at_least} wanted", count(reason)));
                }
            }
        } else {
            let kept: &[&str] = if i == 2 { &["ip_spoof", "dhcp_spoof"] } else { &["ip_spoof", "mac_spoof", "dhcp_spoof"] };
            for reason in kept {
                if count(reason) > 0 {
                    wrong(format!("{} {reason} drops counted, none wanted", count(reason)));
                }
            }
        }
        sent_drops.push(format!("eth{i} {}", row[6]));
    }
    if !text.contains(&format!("Successfully deleted VM {UUID}")) {
        problems.push("`vmadm delete` of the VM did not succeed".into());
    }
    match ending {
        Ending::Qemu(s) if s == qemu_status(EXIT_PASS) => {}
        other => problems.push(format!("the machine did not end by `poweroff`: {other:?}")),
    }
    (problems, format!("tries: {}; dropped from each NIC: {}", results.join(", "), sent_drops.join("; ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A transcript as the console gives it.
    fn transcript(forged_ip_replies: u32, eth0_drops: &str, eth2_drops: &str) -> String {
        let p = format!("[root@{HOSTNAME} ~]# ");
        let mut guest = String::new();
        for (name, what, passes) in TRIES {
            let n = if name == "forged-ip" { forged_ip_replies } else { u32::from(passes) * if what == "leases" { 1 } else { 3 } };
            guest.push_str(&format!("alcove-guest: protect {name} {what}={n}\n"));
        }
        let mut vnics = String::from("LINK         OVER         SPEED  MACADDRESS        MACADDRTYPE       VID\n");
        let mut stats = String::from("LINK             IPKTS      RBYTES IDROPS                   OPKTS      OBYTES ODROPS\n");
        for (i, mac) in MACS.iter().enumerate() {
            vnics.push_str(&format!("vnic{i}        stub0        0      {:<17} fixed             0\n", illumos_mac(mac)));
            let d = match i {
                0 => eth0_drops,
                2 => eth2_drops,
                _ => "--",
            };
            stats.push_str(&format!("vnic{i}               12        1500 --                           7         640 {d}\n"));
        }
        format!(
            "Alcove operator shell on {HOSTNAME}\n{p}vmadm create <<< 'x'\nSuccessfully created VM {UUID}\n\
             {p}vm net-protect: started: 1 vCPUs, 256 MiB\n{guest}alcove-guest: protect done\n\
             dladm show-vnic\n{vnics}[INFO ] netd: something\n{p}dlstat\n{stats}{p}vmadm delete {UUID}\n\
             Successfully deleted VM {UUID}\n{p}poweroff\n"
        )
    }

    fn judged(serial: &str) -> Vec<String> {
        judge(serial, Ending::Qemu(qemu_status(EXIT_PASS))).0
    }

    /// A good run passes, its echoes lost or not; a forged address
    /// answered, drops not counted on the forging NIC, a drop on the
    /// allowed one, a missing try line and a timeout each fail it, naming
    /// what.
    #[test]
    fn the_judge_wants_each_try_stopped_or_through_and_the_drops_counted() {
        let good = transcript(0, "ip_spoof=3,mac_spoof=4,dhcp_spoof=2", "--");
        assert_eq!(judged(&good), Vec::<String>::new());
        let p = judged(&transcript(2, "ip_spoof=3,mac_spoof=4,dhcp_spoof=2", "--"));
        assert!(p.len() == 1 && p[0].contains("forged-ip"), "{p:?}");
        let p = judged(&transcript(0, "mac_spoof=4,dhcp_spoof=2", "--"));
        assert!(p.len() == 1 && p[0].contains("0 ip_spoof drops"), "{p:?}");
        let p = judged(&transcript(0, "ip_spoof=3,mac_spoof=4,dhcp_spoof=2", "dhcp_spoof=1"));
        assert!(p.len() == 1 && p[0].contains("eth2") && p[0].contains("none wanted"), "{p:?}");
        let p = judged(&good.replace("alcove-guest: protect rogue-dhcp leases=0\n", ""));
        assert!(p.len() == 1 && p[0].contains("rogue-dhcp"), "{p:?}");
        let p = judge(&good, Ending::Timeout(600)).0;
        assert!(p.len() == 1 && p[0].contains("poweroff"), "{p:?}");
        // The tables are found by their headers: the echo of `dlstat` lost
        // with its prompt in the VMM's line changes nothing, and a drop
        // not counted still fails.
        let echo = format!("[root@{HOSTNAME} ~]# dlstat\n");
        let lost = good.replacen(&echo, "vm net-protect: ran 5 sdlstat\n", 1);
        assert_ne!(lost, good);
        assert_eq!(judged(&lost), Vec::<String>::new());
        let bad = transcript(0, "mac_spoof=4,dhcp_spoof=2", "--").replacen(&echo, "vm net-protect: ran 5 sdlstat\n", 1);
        let p = judged(&bad);
        assert!(p.len() == 1 && p[0].contains("0 ip_spoof drops"), "{p:?}");
    }

    #[test]
    fn the_payload_is_a_smartos_payload_with_five_nics() {
        let v: serde_json::Value = serde_json::from_str(&payload()).unwrap();
        assert_eq!(v["nics"].as_array().map(Vec::len), Some(5));
        assert_eq!(v["nics"][2]["allow_dhcp_spoofing"], true);
        assert_eq!(v["nics"][3]["vlan_id"], 5);
        assert!(!payload().contains('\''), "typed inside single quotes");
        assert_eq!(illumos_mac("02:08:20:5f:00:01"), "2:8:20:5f:0:1");
    }
}
