//! The machine's NIC as the uplink of a nic_tag (`netd::host::Netd` with
//! a platform whose "NIC" is two queues): frames from the wire reach the
//! host stack, which answers out of the uplink; malformed frames from the
//! wire are dropped and counted; no VMM reaches the uplink; and the `nic`
//! lines of netd.conf.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};

use libipc::framering::RingRegion;
use libipc::in_process::channel;
use libipc::interfaces::{VnicError, vnic};
use netd::host::Netd;
use netd::vnics::{NetConfig, NicSpec, VnicPlatform};
use netd_testkit::ether;

struct Region(Vec<u8>);

impl RingRegion for Region {
    fn len(&self) -> usize {
        self.0.len()
    }
    fn read(&self, offset: usize, buf: &mut [u8]) {
        buf.copy_from_slice(&self.0[offset..offset + buf.len()]);
    }
    fn write(&mut self, offset: usize, data: &[u8]) {
        self.0[offset..offset + data.len()].copy_from_slice(data);
    }
}

/// The "wire": what the NIC received (for netd to take) and what netd sent.
#[derive(Default)]
struct Wire {
    received: VecDeque<(String, Vec<u8>)>,
    sent: Vec<(String, Vec<u8>)>,
    clock: AtomicU64,
}

impl VnicPlatform for Wire {
    type Region = Region;
    fn create(&mut self, pages: usize) -> Result<(Region, u32), String> {
        Ok((Region(vec![0; pages * 4096]), 100))
    }
    fn destroy(&mut self, _region: Region) {}
    fn signal(&mut self, _client: u64, _vnic: u32) {}
    fn uplink(&mut self, switch: &str, frame: &[u8]) {
        self.sent.push((switch.to_string(), frame.to_vec()));
    }
    fn receive(&mut self) -> Option<(String, Vec<u8>)> {
        self.received.pop_front()
    }
    fn nic_status(&self) -> String {
        "nic 0 (test wire) on admin\n".to_string()
    }
    fn now_ns(&self) -> u64 {
        self.clock.fetch_add(1_000_000, Ordering::AcqRel)
    }
}

const CONF: &str = "\
nic_tag admin
vnic client=3 switch=admin mac=02:08:20:00:00:01 ip=10.0.2.20
host switch=admin mac=02:08:20:ff:00:01 ip=10.0.2.15/24 gateway=10.0.2.2 echo=7
";
/// QEMU user networking's gateway (slirp's MAC for 10.0.2.2).
const SLIRP_MAC: [u8; 6] = [0x52, 0x55, 0x0a, 0x00, 0x02, 0x02];
const HOST_MAC: [u8; 6] = [0x02, 0x08, 0x20, 0xff, 0, 1];

/// An ARP request from the gateway: who has `ip`?
fn arp_request(ip: [u8; 4]) -> Vec<u8> {
    let mut arp = vec![0, 1, 8, 0, 6, 4, 0, 1];
    arp.extend_from_slice(&SLIRP_MAC);
    arp.extend_from_slice(&[10, 0, 2, 2]);
    arp.extend_from_slice(&[0; 6]);
    arp.extend_from_slice(&ip);
    ether([0xff; 6], SLIRP_MAC, 0x0806, &arp)
}

fn netd(conf: &str) -> Netd<Wire> {
    Netd::new(&NetConfig::parse(conf).unwrap(), Wire::default(), 1)
}

#[test]
fn an_arp_request_from_the_wire_is_answered_out_of_the_uplink() {
    let mut n = netd(CONF);
    n.vnics().platform().received.push_back(("admin".into(), arp_request([10, 0, 2, 15])));
    assert_eq!(n.nic_input(64), 1);
    let sent = std::mem::take(&mut n.vnics().platform().sent);
    let replies: Vec<_> = sent.iter().filter(|(_, f)| f.len() >= 42 && f[12..14] == [8, 6] && f[20..22] == [0, 2]).collect();
    assert_eq!(replies.len(), 1, "one ARP reply out of the uplink: {sent:?}");
    let (tag, f) = replies[0];
    assert_eq!(tag, "admin");
    assert_eq!((&f[..6], &f[6..12]), (&SLIRP_MAC[..], &HOST_MAC[..]), "to the gateway, from the host's VNIC");
    assert_eq!(&f[28..32], &[10, 0, 2, 15]);
    // The same frame for a nic_tag netd does not have goes nowhere.
    n.vnics().platform().received.push_back(("external".into(), arp_request([10, 0, 2, 15])));
    assert_eq!(n.nic_input(64), 1);
    assert!(n.vnics().platform().sent.is_empty(), "{:?}", n.vnics().platform().sent);
    let status = n.status_text();
    assert!(status.contains("nic 0 (test wire) on admin"), "{status}");
    assert!(status.contains("  uplink: in 1 frames 60 bytes, out 1 frames"), "{status}");
}

#[test]
fn malformed_frames_from_the_wire_are_dropped_and_counted() {
    let mut n = netd(CONF);
    let good = arp_request([10, 0, 2, 15]);
    let mut stacked = good[..12].to_vec();
    stacked.extend_from_slice(&[0x81, 0, 0, 5, 0x81, 0, 0, 6]);
    stacked.extend_from_slice(&good[12..]);
    let frames = vec![
        Vec::new(),
        vec![0xff; 5],
        good[..13].to_vec(),
        vec![0xff; 1600],
        vec![0xff; 65_536],
        stacked,
        // A group source MAC.
        ether([0xff; 6], [0x01, 0, 0x5e, 0, 0, 1], 0x0806, &good[14..42]),
    ];
    let count = frames.len();
    for f in frames {
        n.vnics().platform().received.push_back(("admin".into(), f));
    }
    assert_eq!(n.nic_input(64), count);
    assert!(n.vnics().platform().sent.is_empty(), "nothing answered: {:?}", n.vnics().platform().sent);
    let status = n.status_text();
    assert!(
        status.contains("drops in: runt=3 oversized=2 bad_vlan_tag=1 bad_source_mac=1;"),
        "every malformed frame counted by reason: {status}"
    );
    assert!(status.contains("  uplink: in 0 frames 0 bytes"), "{status}");
    // netd goes on: a good frame after them is answered.
    n.vnics().platform().received.push_back(("admin".into(), good));
    assert_eq!(n.nic_input(64), 1);
    assert_eq!(n.vnics().platform().sent.len(), 1);
}

#[test]
fn nic_input_takes_at_most_its_budget() {
    let mut n = netd(CONF);
    for _ in 0..5 {
        n.vnics().platform().received.push_back(("admin".into(), vec![0; 3]));
    }
    assert_eq!(n.nic_input(2), 2);
    assert_eq!(n.nic_input(64), 3);
    assert_eq!(n.nic_input(64), 0);
}

#[test]
fn no_vmm_reaches_the_uplink_or_the_hosts_vnic() {
    let (client, mut end) = channel(4);
    let server = std::thread::spawn(move || {
        let mut n = netd(CONF);
        end.serve_until_closed(&mut n);
    });
    let vmm = vnic::Client::new(client.badged(3));
    // Its own VNIC is 0; 1 would be the next (the host's VNIC is no
    // configured VNIC, the uplink no VNIC at all).
    for v in [1, 2, 64, u32::MAX] {
        assert_eq!(vmm.attach(v, 0).unwrap(), Err(VnicError::NoSuchVnic { vnic: v }), "vnic {v}");
    }
    let listed = vmm.vnics().unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    // Another client (the host's own badge included) gets nothing.
    for badge in [4, u64::MAX] {
        let other = vnic::Client::new(client.badged(badge));
        assert_eq!(other.attach(0, 0).unwrap(), Err(VnicError::NoSuchVnic { vnic: 0 }), "badge {badge}");
    }
    drop(vmm);
    drop(client);
    server.join().unwrap();
}

#[test]
fn nic_lines_name_a_nic_tag_and_default_to_admin() {
    let c = NetConfig::parse("nic_tag admin\nnic_tag external\n").unwrap();
    assert_eq!((c.uplink_of(0), c.uplink_of(1)), (Some("admin"), None), "NIC 0 serves admin by default");
    let c = NetConfig::parse("nic_tag admin\nnic_tag external\nnic 0 nic_tag=external\nnic 1 nic_tag=admin\n").unwrap();
    assert_eq!((c.uplink_of(0), c.uplink_of(1), c.uplink_of(2)), (Some("external"), Some("admin"), None));
    assert_eq!(c.nics[0], NicSpec { index: 0, nic_tag: "external".into() });
    let c = NetConfig::parse("etherstub admin\n").unwrap();
    assert_eq!(c.uplink_of(0), None, "an etherstub has no uplink");
    let bad = |text: &str| NetConfig::parse(text).unwrap_err().to_string();
    assert_eq!(bad("nic_tag admin\nnic 0 nic_tag=x\n"), "netd.conf line 2: property \"nic_tag\": \"x\" is no nic_tag defined above");
    assert_eq!(bad("etherstub s\nnic 0 nic_tag=s\n"), "netd.conf line 2: property \"nic_tag\": \"s\" is an etherstub (it has no uplink)");
    assert_eq!(bad("nic_tag a\nnic x nic_tag=a\n"), "netd.conf line 2: nic: expected the NIC's number (0 to 63), got \"x\"");
    assert_eq!(bad("nic_tag a\nnic\n"), "netd.conf line 2: nic: the NIC's number is missing (nic 0 nic_tag=admin)");
    assert_eq!(bad("nic_tag a\nnic 0\n"), "netd.conf line 2: property \"nic_tag\" is missing");
    assert_eq!(bad("nic_tag a\nnic 0 nic_tag=a mtu=9000\n"), "netd.conf line 2: property \"mtu\" is not a NIC property");
    assert_eq!(
        bad("nic_tag a\nnic_tag b\nnic 0 nic_tag=a\nnic 0 nic_tag=b\n"),
        "netd.conf line 4: NIC 0 is already the uplink of \"a\" (one NIC a nic_tag, one nic_tag a NIC)"
    );
    assert_eq!(
        bad("nic_tag a\nnic 0 nic_tag=a\nnic 1 nic_tag=a\n"),
        "netd.conf line 3: NIC 0 is already the uplink of \"a\" (one NIC a nic_tag, one nic_tag a NIC)"
    );
}
