//! The NICs between vm.json and netd: MACs, netd's configuration lines,
//! matching netd's VNICs, and two guests' virtio-net devices (driven over
//! the PCI transport as Linux drives them) exchanging frames through
//! netd's `vnic` interface on the in-process transport.

extern crate std;

use super::*;
use crate::config::{MacAddr, VmConfig};
use crate::virtio::mock::MockQueue;
use crate::virtio::net::{HDR_BYTES, VIRTIO_NET_F_MAC};
use crate::virtio::pci::*;
use crate::virtio::{
    VIRTIO_F_VERSION_1, VIRTIO_STATUS_ACKNOWLEDGE, VIRTIO_STATUS_DRIVER, VIRTIO_STATUS_DRIVER_OK,
    VIRTIO_STATUS_FEATURES_OK, VecMemory, feature,
};
use alloc::vec;
use libipc::interfaces::{VnicError, vnic};
use netd::vnics::{NetConfig, VnicServer};
use netd_testkit::{Platform, Seen, Shared};
use std::sync::{Arc, Mutex};

fn vm(alias: &str, nics: &str) -> VmConfig {
    let json = format!(r#"{{"brand": "bhyve", "alias": "{alias}", "ram": 64, "vcpus": 1, "kernel": "k", "nics": [{nics}]}}"#);
    VmConfig::from_json(&json).unwrap()
}

#[test]
fn generated_macs_are_stable_local_unicast_and_per_nic() {
    let a = vm("web", r#"{"nic_tag": "stub0"}, {"nic_tag": "stub0"}"#);
    let (m0, m1) = (nic_mac(&a, 0), nic_mac(&a, 1));
    assert_eq!(m0, nic_mac(&vm("web", r#"{"nic_tag": "stub0"}"#), 0), "the same every time");
    assert_ne!(m0, m1);
    assert_ne!(m0, nic_mac(&vm("db", r#"{"nic_tag": "stub0"}"#), 0));
    for m in [m0, m1] {
        assert_eq!(m[0] & 0x03, 0x02, "locally administered, unicast: {m:x?}");
    }
    let given = vm("web", r#"{"nic_tag": "stub0", "mac": "90:b8:d0:c0:ff:ee"}"#);
    assert_eq!(nic_mac(&given, 0), [0x90, 0xb8, 0xd0, 0xc0, 0xff, 0xee]);
}

#[test]
fn netd_conf_lines_are_what_netd_reads() {
    let c = vm(
        "web",
        r#"{"nic_tag": "stub0", "mac": "02:00:00:00:00:0a", "ip": "10.0.0.10", "netmask": "255.255.255.0", "vlan_id": 5},
           {"nic_tag": "admin", "allow_ip_spoofing": true, "maxbw": 20}"#,
    );
    let text = format!("etherstub stub0\nnic_tag admin\n{}", netd_conf(&c, 7));
    let parsed = NetConfig::parse(&text).unwrap();
    assert_eq!(parsed.vnics.len(), 2);
    let v0 = &parsed.vnics[0];
    assert_eq!((v0.client, v0.switch.as_str(), v0.config.mac.0, v0.config.vlan_id), (7, "stub0", [2, 0, 0, 0, 0, 0xa], 5));
    assert_eq!(v0.config.protection.ip, Some("10.0.0.10".parse().unwrap()));
    assert!(!v0.config.protection.allow_ip_spoofing);
    assert_eq!(parsed.vnics[1].config.mac.0, nic_mac(&c, 1));
    assert!(parsed.vnics[1].config.protection.allow_ip_spoofing);
    // `maxbw` (Mbit/s) becomes the VNIC's cap in netd's switch.
    assert_eq!((v0.config.maxbw_mbit, parsed.vnics[1].config.maxbw_mbit), (None, Some(20)));
    let json = |maxbw: &str| {
        format!(r#"{{"brand": "bhyve", "alias": "w", "ram": 64, "vcpus": 1, "kernel": "k", "nics": [{{"nic_tag": "a", "maxbw": {maxbw}}}]}}"#)
    };
    for bad in ["0", "100001", "\"20M\"", "-1"] {
        let e = format!("{:?}", VmConfig::from_json(&json(bad)).unwrap_err());
        assert!(e.contains("nics[0].maxbw"), "{bad}: {e}");
    }
}

/// Every link protection of a NIC reaches netd: the four `allow_*` and
/// the `allowed_ips`/`allowed_dhcp_cids` lists (canonical); a bad entry
/// is refused naming it, a list over 20 too.
#[test]
fn every_link_protection_reaches_netd() {
    let c = vm(
        "web",
        r#"{"nic_tag": "stub0", "ip": "10.0.0.10", "netmask": "255.255.255.0", "allow_dhcp_spoofing": true,
            "allow_restricted_traffic": true, "allowed_ips": ["10.0.1.0/24", "FD00::7"], "allowed_dhcp_cids": ["0xAB01"]},
           {"nic_tag": "stub0"}"#,
    );
    let text = format!("etherstub stub0\n{}", netd_conf(&c, 7));
    let parsed = NetConfig::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let (p0, p1) = (&parsed.vnics[0].config.protection, &parsed.vnics[1].config.protection);
    assert!(p0.allow_dhcp_spoofing && p0.allow_restricted_traffic && !p0.allow_ip_spoofing && !p0.allow_mac_spoofing);
    let allowed: Vec<String> = p0.allowed_ips.iter().map(|n| format!("{}/{}", n.addr, n.prefix)).collect();
    assert_eq!(allowed, ["10.0.1.0/24", "fd00::7/128"]);
    assert_eq!(p0.allowed_dhcp_cids, [vec![0xab, 0x01]]);
    // SmartOS's defaults: everything protected.
    assert!(!p1.allow_dhcp_spoofing && !p1.allow_restricted_traffic && p1.allowed_ips.is_empty() && p1.allowed_dhcp_cids.is_empty());
    let json = |nic: &str| format!(r#"{{"brand": "bhyve", "alias": "w", "ram": 64, "vcpus": 1, "kernel": "k", "nics": [{{"nic_tag": "a", {nic}}}]}}"#);
    let many = format!(r#""allowed_ips": [{}]"#, vec!["\"10.0.0.1\""; 21].join(","));
    for (bad, names) in [
        (r#""allowed_ips": ["10.0.0.0/33"]"#, "nics[0].allowed_ips[0]"),
        (r#""allowed_ips": ["10.0.0.1", "host"]"#, "nics[0].allowed_ips[1]"),
        (r#""allowed_ips": ["10.0.0.0/"]"#, "nics[0].allowed_ips[0]"),
        (r#""allowed_ips": [7]"#, "nics[0].allowed_ips[0]"),
        (r#""allowed_ips": "10.0.0.1""#, "nics[0].allowed_ips"),
        (many.as_str(), "nics[0].allowed_ips"),
        (r#""allowed_dhcp_cids": ["0xabc"]"#, "nics[0].allowed_dhcp_cids[0]"),
        (r#""allowed_dhcp_cids": ["abcd"]"#, "nics[0].allowed_dhcp_cids[0]"),
        (r#""allowed_dhcp_cids": ["0x,a"]"#, "nics[0].allowed_dhcp_cids[0]"),
        (r#""allow_dhcp_spoofing": "yes""#, "nics[0].allow_dhcp_spoofing"),
    ] {
        let e = format!("{:?}", VmConfig::from_json(&json(bad)).unwrap_err());
        assert!(e.contains(names), "{bad}: {e}");
    }
}

#[test]
fn each_nic_finds_its_vnic_or_is_named() {
    let c = vm("web", r#"{"nic_tag": "stub0"}, {"nic_tag": "stub0", "vlan_id": 3}"#);
    let info = |vnic, mac, vlan_id, switch: &str| VnicInfo { vnic, mac, vlan_id, switch: switch.into(), attached: false };
    let offered = [info(9, nic_mac(&c, 1), 3, "stub0"), info(4, nic_mac(&c, 0), 0, "stub0")];
    assert_eq!(match_vnics(&c, &offered).unwrap(), [4, 9]);
    let wrong_vlan = [info(4, nic_mac(&c, 0), 0, "stub0"), info(9, nic_mac(&c, 1), 0, "stub0")];
    let e = match_vnics(&c, &wrong_vlan).unwrap_err();
    assert!(e.starts_with("vmadm: property \"nics[1]\": netd holds no VNIC for this VM with mac "), "{e}");
    assert!(e.contains(&format!("{}", MacAddr(nic_mac(&c, 1)))) && e.contains("VLAN 3"), "{e}");
    assert!(match_vnics(&c, &[]).unwrap_err().contains("nics[0]"));
}

// ---------------------------------------------------------------------------
// Two VMMs and netd, in one process.

const RX_AT: u64 = 0x1000;
const TX_AT: u64 = 0x4000;
const RX_BUF: u64 = 0x2_0000;
const TX_BUF: u64 = 0x4_0000;

/// One VMM: its guest's RAM and PCI bus, the virtio-net device on it
/// (driven as Linux's virtio_net does: two queues, VERSION_1 and MAC),
/// and its netd client.
struct Vmm {
    bus: PciBus,
    mem: VecMemory,
    port: NicPort<Shared>,
    bar: u64,
    rx: MockQueue,
    tx: MockQueue,
    sent: u16,
    netd: vnic::Client<libipc::in_process::ClientEnd>,
}

impl Vmm {
    fn boot(config: &VmConfig, netd: vnic::Client<libipc::in_process::ClientEnd>, seen: &Arc<Mutex<Seen>>) -> Self {
        let vnics = match_vnics(config, &netd.vnics().unwrap()).unwrap();
        let attached = netd.attach(vnics[0], 0).unwrap().unwrap();
        assert_eq!(attached.mac, nic_mac(config, 0));
        let region = seen.lock().unwrap().regions.last().unwrap().clone();
        let mut bus = PciBus::new();
        let port = NicPort::add(&mut bus, attached.mac, region, attached.handle).unwrap();
        let bar = bus.config(port.slot).unwrap().bar(0).unwrap().address;
        let mut mem = VecMemory::new(0, 0x10_0000);
        let rx = MockQueue::new(&mut mem, RX_AT, 16);
        let tx = MockQueue::new(&mut mem, TX_AT, 16);
        let mut v = Self { bus, mem, port, bar, rx, tx, sent: 0, netd };
        v.driver_init();
        v
    }

    fn w(&mut self, off: u64, size: u8, val: u64) {
        assert!(self.bus.mmio_write(self.bar + off, size, val, &mut self.mem));
    }

    fn r(&mut self, off: u64, size: u8) -> u64 {
        self.bus.mmio_read(self.bar + off, size).unwrap()
    }

    /// virtio 1.2 §3.1.1, both queues, then receive buffers posted.
    fn driver_init(&mut self) {
        self.w(COMMON_DEVICE_STATUS, 1, 0);
        self.w(COMMON_DEVICE_STATUS, 1, u64::from(VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER));
        let want = feature(VIRTIO_F_VERSION_1) | feature(VIRTIO_NET_F_MAC);
        for sel in 0..2u64 {
            self.w(COMMON_DRIVER_FEATURE_SELECT, 4, sel);
            self.w(COMMON_DRIVER_FEATURE, 4, (want >> (32 * sel)) & 0xffff_ffff);
        }
        let s = VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_FEATURES_OK;
        self.w(COMMON_DEVICE_STATUS, 1, u64::from(s));
        assert_ne!(self.r(COMMON_DEVICE_STATUS, 1) as u8 & VIRTIO_STATUS_FEATURES_OK, 0);
        for q in 0..2u64 {
            let (desc, avail, used) = {
                let m = if q == 0 { &self.rx } else { &self.tx };
                (m.desc_table, m.avail_ring, m.used_ring)
            };
            self.w(COMMON_QUEUE_SELECT, 2, q);
            self.w(COMMON_QUEUE_SIZE, 2, 16);
            for (reg, addr) in [(COMMON_QUEUE_DESC, desc), (COMMON_QUEUE_DRIVER, avail), (COMMON_QUEUE_DEVICE, used)] {
                self.w(reg, 4, addr & 0xffff_ffff);
                self.w(reg + 4, 4, addr >> 32);
            }
            self.w(COMMON_QUEUE_ENABLE, 2, 1);
        }
        self.w(COMMON_DEVICE_STATUS, 1, u64::from(s | VIRTIO_STATUS_DRIVER_OK));
        assert_eq!(self.r(COMMON_DEVICE_STATUS, 1) as u8 & 0x40, 0, "no NEEDS_RESET");
        for i in 0..8u64 {
            self.rx.add_chain(&mut self.mem, &[(RX_BUF + i * 0x800, 0x800, true)]);
        }
        self.w(NOTIFY_OFFSET, 2, 0);
    }

    /// The guest sends `frame` and notifies transmitq; the VMM pumps and,
    /// as asked, rings netd's doorbell. Returns the frames netd took.
    fn send(&mut self, frame: &[u8]) -> u32 {
        let at = TX_BUF + u64::from(self.sent % 8) * 0x800;
        self.sent += 1;
        self.mem.write(at, &[0; HDR_BYTES]).unwrap();
        self.mem.write(at + HDR_BYTES as u64, frame).unwrap();
        self.tx.add_chain(&mut self.mem, &[(at, (HDR_BYTES + frame.len()) as u32, false)]);
        self.w(NOTIFY_OFFSET + u64::from(NOTIFY_OFF_MULTIPLIER), 2, 1);
        let p = self.port.pump(&mut self.bus, &mut self.mem).unwrap();
        assert!(p.kick_netd);
        self.netd.kick(self.port.handle).unwrap().unwrap()
    }

    /// The VMM pumps; returns what landed in the guest's buffers since the
    /// last call.
    fn receive(&mut self, seen: &mut u16) -> Vec<Vec<u8>> {
        self.port.pump(&mut self.bus, &mut self.mem).unwrap();
        let mut got = vec![];
        let used = self.rx.used_idx(&self.mem);
        while *seen != used {
            let (head, len) = self.rx.used_elem(&self.mem, *seen);
            let mut b = vec![0u8; len as usize];
            self.mem.read(RX_BUF + u64::from(head) * 0x800, &mut b).unwrap();
            got.push(b[HDR_BYTES..].to_vec());
            *seen += 1;
        }
        got
    }
}

fn arp(mac: [u8; 6], ip: [u8; 4]) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&mac);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&ip);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&[10, 0, 0, 99]);
    f.resize(60, 0);
    f
}

#[test]
fn two_guests_talk_through_netd_and_one_cannot_take_the_others_vnic() {
    let a = vm("a", r#"{"nic_tag": "stub0", "ip": "10.0.0.1", "netmask": "255.255.255.0"}"#);
    let b = vm("b", r#"{"nic_tag": "stub0", "ip": "10.0.0.2", "netmask": "255.255.255.0"}"#);
    let text = format!("etherstub stub0\n{}{}", netd_conf(&a, 1), netd_conf(&b, 2));
    let config = NetConfig::parse(&text).unwrap();
    let (platform, seen) = Platform::new(Seen::default());
    let (unbadged, mut end) = libipc::in_process::channel(8);
    let server = std::thread::spawn(move || {
        let mut s = VnicServer::new(&config, platform);
        end.serve_until_closed(&mut s);
        s.status_text()
    });

    let netd_b = vnic::Client::new(unbadged.badged(2));
    // B cannot attach A's VNIC: netd lists B only its own, and A's number
    // is refused.
    let theirs = vnic::Client::new(unbadged.badged(1)).vnics().unwrap()[0].vnic;
    assert_eq!(netd_b.attach(theirs, 0).unwrap(), Err(VnicError::NoSuchVnic { vnic: theirs }));

    let mut vmm_a = Vmm::boot(&a, vnic::Client::new(unbadged.badged(1)), &seen);
    let mut vmm_b = Vmm::boot(&b, netd_b, &seen);
    let (mut seen_a, mut seen_b) = (0u16, 0u16);

    let mac_a = nic_mac(&a, 0);
    let hello = arp(mac_a, [10, 0, 0, 1]);
    assert_eq!(vmm_a.send(&hello), 1);
    assert_eq!(vmm_b.receive(&mut seen_b), [hello]);
    assert!(vmm_a.receive(&mut seen_a).is_empty(), "not back to the sender");

    // B forges A's address: taken by netd, dropped by the switch.
    assert_eq!(vmm_b.send(&arp(nic_mac(&b, 0), [10, 0, 0, 1])), 1);
    assert!(vmm_a.receive(&mut seen_a).is_empty());
    let reply = arp(nic_mac(&b, 0), [10, 0, 0, 2]);
    assert_eq!(vmm_b.send(&reply), 1);
    assert_eq!(vmm_a.receive(&mut seen_a), [reply]);

    let sa = vmm_a.port.stats(&vmm_a.bus).unwrap();
    assert_eq!((sa.tx_frames, sa.rx_frames), (1, 1));
    // A VM that ends detaches; its handle is gone for good.
    let h = vmm_a.port.handle;
    assert_eq!(vmm_a.netd.detach(h).unwrap(), Ok(()));
    assert_eq!(vmm_a.netd.kick(h).unwrap(), Err(VnicError::NoSuchHandle { handle: h }));
    drop((vmm_a, vmm_b, unbadged));
    let status = server.join().unwrap();
    assert!(status.contains("ip_spoof=1"), "{status}");
    assert!(status.contains("not attached (client 1)"), "{status}");
}

#[test]
fn the_link_to_netd_is_lost_on_a_stale_handle_or_a_failed_call_and_retried_with_backoff() {
    let mut l = NetdLink::default();
    let ok: Result<Result<u32, VnicError>, &str> = Ok(Ok(3));
    assert_eq!(l.kicked(&ok, 5), KickOutcome::Fine);
    assert!(!l.lost() && !l.due(5));
    // A refusal that is not about the handle keeps the link.
    let other: Result<Result<u32, VnicError>, &str> = Ok(Err(VnicError::TooLarge { slots: 1, max: 0 }));
    assert!(matches!(l.kicked(&other, 5), KickOutcome::Refused(_)));
    assert!(!l.lost());
    // netd no longer knows the handle: lost, attach again at once.
    let stale: Result<Result<u32, VnicError>, &str> = Ok(Err(VnicError::NoSuchHandle { handle: 9 }));
    match l.kicked(&stale, 100) {
        KickOutcome::Lost(why) => assert!(why.contains("handle 9") && why.contains("restarted"), "{why}"),
        o => panic!("{o:?}"),
    }
    assert!(l.lost() && l.due(100));
    // Failed attaches back off: 10 ms doubling, at most 1 s.
    let mut now = 100;
    let mut delays = Vec::new();
    for _ in 0..9 {
        let at = l.failed(now);
        delays.push((at - now) / 1_000_000);
        assert!(!l.due(at - 1) && l.due(at));
        now = at;
    }
    assert_eq!(delays, [10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
    // A second failed kick while lost does not reset the wait.
    let gone: Result<Result<u32, VnicError>, &str> = Err("gone");
    let at = l.failed(now);
    assert!(matches!(l.kicked(&gone, now), KickOutcome::Lost(_)));
    assert!(!l.due(now) && l.due(at));
    l.relinked();
    assert!(!l.lost() && !l.due(u64::MAX) && l.relinks == 1);
    // The call itself failing (netd died answering it) loses the link too.
    match l.kicked(&gone, 7) {
        KickOutcome::Lost(why) => assert!(why.contains("gone"), "{why}"),
        o => panic!("{o:?}"),
    }
    assert!(l.due(7));
    // And after success, the backoff starts over.
    l.relinked();
    assert!(matches!(l.kicked(&stale, 50), KickOutcome::Lost(_)));
    assert_eq!(l.failed(50), 50 + NetdLink::FIRST_RETRY_NS);
}

/// The starter says netd was restarted (an idle guest's VMM kicks
/// nothing, so no kick of its fails): the link is lost and due at once;
/// said again while lost, the backoff it is in goes on.
#[test]
fn the_starter_saying_netd_restarted_loses_the_link_once() {
    let mut l = NetdLink::default();
    l.restarted(40);
    assert!(l.lost() && l.due(40) && !l.due(39));
    let at = l.failed(40);
    l.restarted(41);
    assert!(!l.due(41) && l.due(at), "a second word does not reset the wait");
    l.relinked();
    assert!(!l.lost() && l.relinks == 1);
    l.restarted(90);
    assert!(l.due(90));
    assert_eq!(l.failed(90), 90 + NetdLink::FIRST_RETRY_NS, "the backoff starts over");
}

type NetdLife = (Arc<Mutex<Seen>>, libipc::in_process::ClientEnd, std::thread::JoinHandle<String>);

/// One netd (a `VnicServer` over netd.conf `text`) on its own thread.
fn netd_life(text: &str, first: u32) -> NetdLife {
    let config = NetConfig::parse(text).unwrap();
    let (platform, seen) = Platform::new(Seen::default());
    let (unbadged, mut end) = libipc::in_process::channel(8);
    let server = std::thread::spawn(move || {
        let mut s = VnicServer::new(&config, platform);
        s.set_first_handle(first);
        end.serve_until_closed(&mut s);
        s.status_text()
    });
    (seen, unbadged, server)
}

#[test]
fn after_netd_restarts_the_vmms_attach_again_and_their_guests_talk_on() {
    let a = vm("a", r#"{"nic_tag": "stub0", "ip": "10.0.0.1", "netmask": "255.255.255.0"}"#);
    let b = vm("b", r#"{"nic_tag": "stub0", "ip": "10.0.0.2", "netmask": "255.255.255.0"}"#);
    let text = format!("etherstub stub0\n{}{}", netd_conf(&a, 1), netd_conf(&b, 2));
    let (seen, unbadged, server) = netd_life(&text, 40);
    let mut vmm_a = Vmm::boot(&a, vnic::Client::new(unbadged.badged(1)), &seen);
    let mut vmm_b = Vmm::boot(&b, vnic::Client::new(unbadged.badged(2)), &seen);
    let (mut seen_a, mut seen_b) = (0u16, 0u16);
    let hello = arp(nic_mac(&a, 0), [10, 0, 0, 1]);
    assert_eq!(vmm_a.send(&hello), 1);
    assert_eq!(vmm_b.receive(&mut seen_b), [hello]);

    // netd dies; init starts it again from the same netd.conf (the
    // endpoint is init's and outlives it: the VMMs' clients reach the new
    // one, modelled here by a new channel with the same badges).
    let (seen, new_netd, new_server) = netd_life(&text, 9000);
    vmm_a.netd = vnic::Client::new(new_netd.badged(1));
    vmm_b.netd = vnic::Client::new(new_netd.badged(2));
    drop(unbadged);
    server.join().unwrap();
    let (unbadged, server) = (new_netd, new_server);

    // A's guest sends; the frame goes into the old ring, which nobody
    // reads; the kick is refused and the link is lost.
    let lost = arp(nic_mac(&a, 0), [10, 0, 0, 1]);
    let at = TX_BUF + u64::from(vmm_a.sent % 8) * 0x800;
    vmm_a.sent += 1;
    vmm_a.mem.write(at, &[0; HDR_BYTES]).unwrap();
    vmm_a.mem.write(at + HDR_BYTES as u64, &lost).unwrap();
    vmm_a.tx.add_chain(&mut vmm_a.mem, &[(at, (HDR_BYTES + lost.len()) as u32, false)]);
    vmm_a.w(NOTIFY_OFFSET + u64::from(NOTIFY_OFF_MULTIPLIER), 2, 1);
    assert!(vmm_a.port.pump(&mut vmm_a.bus, &mut vmm_a.mem).unwrap().kick_netd);
    let mut link = NetdLink::default();
    let r = vmm_a.netd.kick(vmm_a.port.handle);
    assert!(matches!(link.kicked(&r, 0), KickOutcome::Lost(_)), "{r:?}");
    assert!(link.due(0));

    // Each VMM attaches its VNIC again (the same one, from netd.conf) and
    // puts its device on the new ring; the guests' devices are not reset.
    for (vmm, config, n) in [(&mut vmm_a, &a, 0usize), (&mut vmm_b, &b, 1)] {
        let ids = match_vnics(config, &vmm.netd.vnics().unwrap()).unwrap();
        let again = vmm.netd.attach(ids[0], 0).unwrap().unwrap();
        assert_eq!((again.handle, again.mac), (9000 + n as u32, nic_mac(config, 0)));
        let region = seen.lock().unwrap().regions[n].clone();
        let old_handle = vmm.port.handle;
        vmm.port.relink(region, again.handle).map_err(|(_, e)| e).unwrap();
        assert_ne!(vmm.port.handle, old_handle);
        assert_eq!(vmm.r(COMMON_DEVICE_STATUS, 1) as u8 & VIRTIO_STATUS_DRIVER_OK, VIRTIO_STATUS_DRIVER_OK, "still running");
    }
    link.relinked();
    assert!(!link.lost());
    // Traffic resumes both ways with the earlier receive buffers.
    let hello2 = arp(nic_mac(&a, 0), [10, 0, 0, 1]);
    assert_eq!(vmm_a.send(&hello2), 1);
    assert_eq!(vmm_b.receive(&mut seen_b), core::slice::from_ref(&hello2));
    let reply = arp(nic_mac(&b, 0), [10, 0, 0, 2]);
    assert_eq!(vmm_b.send(&reply), 1);
    assert_eq!(vmm_a.receive(&mut seen_a), [reply]);
    let sa = vmm_a.port.stats(&vmm_a.bus).unwrap();
    assert_eq!((sa.tx_frames, sa.rx_frames), (3, 1), "the lost frame left the guest, as on a link that flapped");
    // A new ring with a bad header is refused and handed back; the port
    // keeps its ring and handle.
    let h = vmm_a.port.handle;
    let bad = Shared::zeroed(65 * 4096);
    assert!(vmm_a.port.relink(bad, 77).is_err());
    assert_eq!(vmm_a.port.handle, h);
    assert_eq!(vmm_a.send(&hello2), 1);
    drop((vmm_a, vmm_b, unbadged));
    let status = server.join().unwrap();
    // A's one kick of the earlier netd's handle, counted by the new one.
    assert!(status.contains("1 kicks or detaches named a handle of an earlier netd"), "{status}");
}
