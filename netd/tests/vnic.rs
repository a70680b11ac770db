//! The `vnic` interface from the VMMs' side, through the in-process
//! transport with badged clients: who may attach what, handles that went
//! stale, sizes out of range, hostile rings, and frames crossing the
//! switch between two VMMs' rings.

use std::sync::{Arc, Mutex};
use std::thread;

use libipc::blkring::RingRegion;
use libipc::framering::{Consumer, Direction, Geometry, MAX_SLOTS, Producer};
use libipc::in_process::{ClientEnd, channel};
use libipc::interfaces::{VnicError, vnic};
use netd::vnics::{NetConfig, VnicServer};
use netd_testkit::{Platform, Seen, Shared};

const A: u64 = 3;
const B: u64 = 4;
const MAC_A: [u8; 6] = [0x02, 0x08, 0x20, 0, 0, 1];
const MAC_B: [u8; 6] = [0x02, 0x08, 0x20, 0, 0, 2];

const CONF: &str = "\
# two VMs on one etherstub, one more VNIC of A's on another VLAN
etherstub stub0
nic_tag admin
vnic client=3 switch=stub0 mac=02:08:20:00:00:01 ip=10.0.0.1
vnic client=4 switch=stub0 mac=02:08:20:00:00:02 ip=10.0.0.2
vnic client=3 switch=stub0 mac=02:08:20:00:00:03 vlan_id=7 allow_ip_spoofing=true
";

struct Rig {
    seen: Arc<Mutex<Seen>>,
    unbadged: ClientEnd,
    server: thread::JoinHandle<String>,
}

fn rig() -> Rig {
    let (platform, seen) = Platform::new(Seen { max_pages: 128, ..Seen::default() });
    let config = NetConfig::parse(CONF).unwrap();
    let (unbadged, mut end) = channel(8);
    let server = thread::spawn(move || {
        let mut s = VnicServer::new(&config, platform);
        end.serve_until_closed(&mut s);
        s.status_text()
    });
    Rig { seen, unbadged, server }
}

impl Rig {
    fn client(&self, badge: u64) -> vnic::Client<ClientEnd> {
        vnic::Client::new(self.unbadged.badged(badge))
    }
    fn region(&self, n: usize) -> Shared {
        self.seen.lock().unwrap().regions[n].clone()
    }
    fn finish(self) -> (String, Arc<Mutex<Seen>>) {
        drop(self.unbadged);
        (self.server.join().unwrap(), self.seen)
    }
}

/// A broadcast ARP request from `mac`/`ip` for 10.0.0.9.
fn arp(mac: [u8; 6], ip: [u8; 4]) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&mac);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&ip);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&[10, 0, 0, 9]);
    f.resize(60, 0);
    f
}

/// The VMM's side of a region.
struct Vmm {
    region: Shared,
    tx: Producer,
    rx: Consumer,
}

impl Vmm {
    fn new(region: Shared) -> Self {
        let g = Geometry::from_header(&region).unwrap();
        Self { region, tx: Producer::new(g, Direction::ToNetd), rx: Consumer::new(g, Direction::ToVmm) }
    }
    fn send(&mut self, frame: &[u8]) {
        assert!(self.tx.push(&mut self.region, frame).unwrap());
    }
    fn received(&mut self) -> Vec<Vec<u8>> {
        let mut got = Vec::new();
        let mut buf = vec![0; 2048];
        self.rx.pop_all(&mut self.region, &mut buf, 64, |f| got.push(f.to_vec())).unwrap();
        got
    }
}

#[test]
fn a_vmm_attaches_only_its_own_vnics_and_handles_do_not_outlive_detach() {
    let r = rig();
    let (a, b) = (r.client(A), r.client(B));
    let anyone = vnic::Client::new(r.unbadged.clone());

    let listed: Vec<_> = a.vnics().unwrap().into_iter().map(|v| (v.vnic, v.mac, v.vlan_id, v.attached)).collect();
    assert_eq!(listed, [(0, MAC_A, 0, false), (2, [0x02, 0x08, 0x20, 0, 0, 3], 7, false)]);
    assert_eq!(b.vnics().unwrap().iter().map(|v| v.vnic).collect::<Vec<_>>(), [1]);
    assert!(anyone.vnics().unwrap().is_empty());

    // Another client's VNIC, an unbadged caller's, one that does not exist:
    // all look the same.
    assert_eq!(b.attach(0, 0).unwrap(), Err(VnicError::NoSuchVnic { vnic: 0 }));
    assert_eq!(anyone.attach(0, 0).unwrap(), Err(VnicError::NoSuchVnic { vnic: 0 }));
    assert_eq!(a.attach(1, 0).unwrap(), Err(VnicError::NoSuchVnic { vnic: 1 }));
    assert_eq!(a.attach(u32::MAX, 0).unwrap(), Err(VnicError::NoSuchVnic { vnic: u32::MAX }));
    // Sizes out of range: refused before anything is made.
    assert_eq!(a.attach(0, u32::MAX).unwrap(), Err(VnicError::TooLarge { slots: u32::MAX, max: MAX_SLOTS }));
    assert_eq!(a.attach(0, MAX_SLOTS + 1).unwrap(), Err(VnicError::TooLarge { slots: MAX_SLOTS + 1, max: MAX_SLOTS }));
    // The largest ring needs more pages than this platform gives: a clear
    // error, nothing attached.
    match a.attach(0, MAX_SLOTS).unwrap() {
        Err(VnicError::Setup { why }) => assert!(why.contains("no frame of"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert!(r.seen.lock().unwrap().regions.is_empty());

    let got = a.attach(0, 0).unwrap().unwrap();
    assert_eq!((got.mac, got.mtu, got.ring_pages), (MAC_A, 1500, 65));
    assert!(a.vnics().unwrap()[0].attached);
    // Attached again by its client (a restarted VMM): the first handle
    // goes stale, its region is given back.
    let h_old = got.handle;
    let got = a.attach(0, 0).unwrap().unwrap();
    assert_ne!(got.handle, h_old);
    assert_eq!(a.kick(h_old).unwrap(), Err(VnicError::NoSuchHandle { handle: h_old }));
    assert_eq!(r.seen.lock().unwrap().destroyed, 1);
    let h = got.handle;
    // B and the unbadged caller cannot ring or drop A's ring.
    assert_eq!(b.kick(h).unwrap(), Err(VnicError::NoSuchHandle { handle: h }));
    assert_eq!(b.detach(h).unwrap(), Err(VnicError::NoSuchHandle { handle: h }));
    assert_eq!(anyone.kick(h).unwrap(), Err(VnicError::NoSuchHandle { handle: h }));
    assert_eq!(a.kick(u32::MAX).unwrap(), Err(VnicError::NoSuchHandle { handle: u32::MAX }));
    assert_eq!(a.kick(h).unwrap(), Ok(0));

    assert_eq!(a.detach(h).unwrap(), Ok(()));
    assert_eq!(r.seen.lock().unwrap().destroyed, 2);
    // A stale handle stays stale, also once the VNIC is attached again.
    assert_eq!(a.kick(h).unwrap(), Err(VnicError::NoSuchHandle { handle: h }));
    assert_eq!(a.detach(h).unwrap(), Err(VnicError::NoSuchHandle { handle: h }));
    let again = a.attach(0, 16).unwrap().unwrap();
    assert_ne!(again.handle, h);
    assert_eq!(again.ring_pages, 17);
    assert_eq!(a.kick(h).unwrap(), Err(VnicError::NoSuchHandle { handle: h }));
    assert_eq!(a.kick(again.handle).unwrap(), Ok(0));
    drop((a, b, anyone));
    let (status, _) = r.finish();
    assert!(status.contains("vnic 1 mac 02:08:20:00:00:02 vlan 0 on stub0: not attached (client 4)"), "{status}");
}

#[test]
fn frames_cross_between_two_vmms_and_forged_ones_are_dropped_and_counted() {
    let r = rig();
    let (a, b) = (r.client(A), r.client(B));
    let ha = a.attach(0, 0).unwrap().unwrap().handle;
    let hb = b.attach(1, 0).unwrap().unwrap().handle;
    let (mut vmm_a, mut vmm_b) = (Vmm::new(r.region(0)), Vmm::new(r.region(1)));

    let hello = arp(MAC_A, [10, 0, 0, 1]);
    vmm_a.send(&hello);
    assert_eq!(a.kick(ha).unwrap(), Ok(1));
    assert_eq!(vmm_b.received(), [hello]);
    assert!(r.seen.lock().unwrap().signals.contains(&(B, 1)), "B's VMM is told");
    // Only stub0's VNICs saw it: an etherstub has no uplink.
    assert!(r.seen.lock().unwrap().uplink.is_empty());

    // B answers with a forged source IP, then a forged source MAC: both
    // are taken from its ring and dropped by the switch.
    vmm_b.send(&arp(MAC_B, [10, 0, 0, 66]));
    vmm_b.send(&arp([0x02, 0, 0, 0, 0, 0x66], [10, 0, 0, 2]));
    let real = arp(MAC_B, [10, 0, 0, 2]);
    vmm_b.send(&real);
    assert_eq!(b.kick(hb).unwrap(), Ok(3));
    assert_eq!(vmm_a.received(), [real]);

    drop((a, b));
    let (status, _) = r.finish();
    assert!(status.contains("ip_spoof=1") && status.contains("mac_spoof=1"), "{status}");
}

#[test]
fn a_kick_signals_each_receiving_vmm_once_and_not_the_kicker() {
    let r = rig();
    let (a, b) = (r.client(A), r.client(B));
    let ha = a.attach(0, 0).unwrap().unwrap().handle;
    b.attach(1, 0).unwrap().unwrap();
    let (mut vmm_a, mut vmm_b) = (Vmm::new(r.region(0)), Vmm::new(r.region(1)));
    r.seen.lock().unwrap().signals.clear();
    // Three frames in one kick: B is told once; A learns from the reply.
    for _ in 0..3 {
        vmm_a.send(&arp(MAC_A, [10, 0, 0, 1]));
    }
    assert_eq!(a.kick(ha).unwrap(), Ok(3));
    assert_eq!(vmm_b.received().len(), 3);
    assert_eq!(r.seen.lock().unwrap().signals, [(B, 1)]);
    // B's forged frame, taken by A's kick (a kick moves the whole
    // switch): B is told its ring has room, though nothing reached A.
    r.seen.lock().unwrap().signals.clear();
    vmm_b.send(&arp(MAC_B, [10, 0, 0, 66]));
    assert_eq!(a.kick(ha).unwrap(), Ok(0));
    assert!(vmm_a.received().is_empty());
    assert_eq!(r.seen.lock().unwrap().signals, [(B, 1)]);
    drop((a, b));
    let (status, _) = r.finish();
    assert!(status.contains("ip_spoof=1"), "{status}");
}

/// A VMM's vCPU thread rings netd's doorbell (a notification) instead of
/// calling `kick`: netd's process then polls every ring
/// ([`VnicServer::poll`], what `Netd::tick` runs on the doorbell's bit).
/// That alone moves the frames and tells the receiving VMM; a ring with
/// nothing new, or with forged frames only, moves nothing and tells no one.
#[test]
fn netd_s_doorbell_moves_frames_without_a_kick_and_a_needless_ring_moves_nothing() {
    let (platform, seen) = Platform::new(Seen { max_pages: 128, netd_doorbell: Some(77), ..Seen::default() });
    let config = NetConfig::parse(CONF).unwrap();
    let (unbadged, mut end) = channel(8);
    let mut server = VnicServer::new(&config, platform);
    // The VMMs attach from their threads; netd serves on this one.
    let (a, b) = (vnic::Client::new(unbadged.badged(A)), vnic::Client::new(unbadged.badged(B)));
    // One after the other: the regions below are taken in attach order
    // (A's first; with both threads at once B's could come first, and
    // "A's" frame was then B's forged one, 1 run in ~70).
    let attach = |c: vnic::Client<libipc::in_process::ClientEnd>, vnic: u32| thread::spawn(move || c.attach(vnic, 0).unwrap().unwrap());
    let mut serve = |t: thread::JoinHandle<_>| {
        while !end.serve_one(&mut server) {
            thread::yield_now();
        }
        t
    };
    let ta = serve(attach(a, 0));
    let tb = serve(attach(b, 1));
    let (ha, hb) = (ta.join().unwrap().handle, tb.join().unwrap().handle);
    assert_ne!(ha, hb);
    // Each attach reply offered netd's doorbell.
    assert_eq!(seen.lock().unwrap().netd_doorbell_offered, 2);
    let regions = seen.lock().unwrap().regions.clone();
    let (mut vmm_a, mut vmm_b) = (Vmm::new(regions[0].clone()), Vmm::new(regions[1].clone()));
    seen.lock().unwrap().signals.clear();

    // Rung with nothing in any ring: nothing moves, no VMM is told.
    server.poll();
    assert!(seen.lock().unwrap().signals.is_empty());
    assert!(vmm_b.received().is_empty());
    // A's frame, then the doorbell: in B's ring, B told, A not.
    let hello = arp(MAC_A, [10, 0, 0, 1]);
    vmm_a.send(&hello);
    server.poll();
    assert_eq!(vmm_b.received(), [hello]);
    assert_eq!(seen.lock().unwrap().signals, [(B, 1)]);
    // Rung again for the same frame (a spurious ring): nothing twice.
    seen.lock().unwrap().signals.clear();
    server.poll();
    assert!(vmm_b.received().is_empty() && seen.lock().unwrap().signals.is_empty());
    // The doorbell passes no frame the switch would not: a forged source
    // IP from B is taken and dropped, A gets nothing.
    vmm_b.send(&arp(MAC_B, [10, 0, 0, 66]));
    server.poll();
    assert!(vmm_a.received().is_empty());
    assert!(server.status_text().contains("ip_spoof=1"), "{}", server.status_text());
    // A ring filled to its last slot (its VMM may hold more, waiting for
    // room): all 64 go over on one ring, and A is told of the room too.
    seen.lock().unwrap().signals.clear();
    for _ in 0..64 {
        vmm_a.send(&arp(MAC_A, [10, 0, 0, 1]));
    }
    server.poll();
    assert_eq!(vmm_b.received().len(), 64);
    let signals = seen.lock().unwrap().signals.clone();
    assert!(signals.contains(&(B, 1)) && signals.contains(&(A, 0)) && signals.len() == 2, "{signals:?}");
    // No kick was made: the kick path counted the two rings that moved
    // frames (1, then 64), not the others.
    assert!(server.status_text().contains("kick path: 2 kicks, 65 frames into rings"), "{}", server.status_text());
}

#[test]
fn one_kick_takes_more_than_a_poll_budget_and_signals_the_kicker_only_if_its_ring_was_full() {
    let r = rig();
    let (a, b) = (r.client(A), r.client(B));
    let ha = a.attach(0, 0).unwrap().unwrap().handle;
    b.attach(1, 0).unwrap().unwrap();
    let (mut vmm_a, mut vmm_b) = (Vmm::new(r.region(0)), Vmm::new(r.region(1)));
    r.seen.lock().unwrap().signals.clear();
    let n = netd::fabric::POLL_BUDGET as usize + 16;
    for _ in 0..n {
        vmm_a.send(&arp(MAC_A, [10, 0, 0, 1]));
    }
    // Frames past the first budget do not wait for another kick.
    assert_eq!(a.kick(ha).unwrap(), Ok(n as u32));
    assert_eq!(vmm_b.received().len(), n);
    assert_eq!(r.seen.lock().unwrap().signals, [(B, 1)]);
    // A ring that was full when kicked: its VMM may hold frames that found
    // no room, so it is told of the room too.
    r.seen.lock().unwrap().signals.clear();
    for _ in 0..64 {
        vmm_a.send(&arp(MAC_A, [10, 0, 0, 1]));
    }
    assert_eq!(a.kick(ha).unwrap(), Ok(64));
    assert_eq!(vmm_b.received().len(), 64);
    let signals = r.seen.lock().unwrap().signals.clone();
    assert!(signals.contains(&(B, 1)) && signals.contains(&(A, 0)) && signals.len() == 2, "{signals:?}");
    drop((a, b));
    r.finish();
}

#[test]
fn the_kick_path_counts_the_frames_into_rings_and_the_ticks_of_kicks_that_were_served() {
    let r = rig();
    r.seen.lock().unwrap().tsc_step = 500;
    let (a, b) = (r.client(A), r.client(B));
    let ha = a.attach(0, 0).unwrap().unwrap().handle;
    let hb = b.attach(1, 0).unwrap().unwrap().handle;
    let (mut vmm_a, mut vmm_b) = (Vmm::new(r.region(0)), Vmm::new(r.region(1)));
    // One frame into B's ring.
    vmm_a.send(&arp(MAC_A, [10, 0, 0, 1]));
    assert_eq!(a.kick(ha).unwrap(), Ok(1));
    // Three taken from B's ring, two dropped (forged): one into A's.
    vmm_b.send(&arp(MAC_B, [10, 0, 0, 66]));
    vmm_b.send(&arp([0x02, 0, 0, 0, 0, 0x66], [10, 0, 0, 2]));
    vmm_b.send(&arp(MAC_B, [10, 0, 0, 2]));
    assert_eq!(b.kick(hb).unwrap(), Ok(3));
    assert_eq!(vmm_a.received().len(), 1);
    assert_eq!(vmm_b.received().len(), 1);
    // A kick that moves nothing costs a kick and its ticks.
    assert_eq!(a.kick(ha).unwrap(), Ok(0));
    // Refused kicks are not part of the path: another's handle, a handle
    // never given, and one detached.
    assert!(matches!(b.kick(ha).unwrap(), Err(VnicError::NoSuchHandle { .. })));
    assert!(matches!(a.kick(0x7fff_0000).unwrap(), Err(VnicError::NoSuchHandle { .. })));
    b.detach(hb).unwrap().unwrap();
    assert!(matches!(b.kick(hb).unwrap(), Err(VnicError::NoSuchHandle { .. })));
    drop((a, b));
    let (status, _) = r.finish();
    assert!(
        status.contains("kick path: 3 kicks, 2 frames into rings, 1500 ticks (750 a frame, one-frame kick at least 500) (TSC ticks)"),
        "{status}"
    );
}

#[test]
fn a_netd_that_was_never_kicked_shows_no_kick_path() {
    let r = rig();
    let a = r.client(A);
    a.attach(0, 0).unwrap().unwrap();
    drop(a);
    let (status, _) = r.finish();
    assert!(!status.contains("kick path"), "{status}");
}

#[test]
fn a_hostile_ring_costs_its_own_frames_only() {
    let r = rig();
    let (a, b) = (r.client(A), r.client(B));
    let ha = a.attach(0, 0).unwrap().unwrap().handle;
    let hb = b.attach(1, 0).unwrap().unwrap().handle;
    let (mut vmm_a, mut vmm_b) = (Vmm::new(r.region(0)), Vmm::new(r.region(1)));

    // A descriptor claiming a huge frame: skipped, the next one goes.
    vmm_a.send(&arp(MAC_A, [10, 0, 0, 1]));
    let mut ra = r.region(0);
    ra.write(512, &u32::MAX.to_le_bytes());
    let good = arp(MAC_A, [10, 0, 0, 1]);
    vmm_a.send(&good);
    assert_eq!(a.kick(ha).unwrap(), Ok(1));
    assert_eq!(vmm_b.received(), [good]);

    // A producer index far ahead of the ring: A's ring is refused from
    // now on, B's still works.
    ra.write(64, &0x7fff_0000u32.to_le_bytes());
    assert_eq!(a.kick(ha).unwrap(), Ok(0));
    let from_b = arp(MAC_B, [10, 0, 0, 2]);
    vmm_b.send(&from_b);
    assert_eq!(b.kick(hb).unwrap(), Ok(1));
    assert!(vmm_a.received().is_empty(), "a refused ring gets nothing");
    drop((a, b));
    let (status, _) = r.finish();
    assert!(status.contains("ring refused"), "{status}");
}

#[test]
fn an_ended_client_leaves_no_ring_behind() {
    let seen = Arc::new(Mutex::new(Seen { max_pages: 128, ..Seen::default() }));
    let mut s = VnicServer::new(&NetConfig::parse(CONF).unwrap(), Platform(seen.clone()));
    s.set_caller(A);
    use libipc::interfaces::vnic::Server;
    s.attach(0, 0).unwrap();
    s.attach(2, 0).unwrap();
    s.set_caller(B);
    s.attach(1, 0).unwrap();
    assert_eq!(s.client_gone(A), 2);
    assert_eq!(s.attached(), 1);
    assert_eq!(seen.lock().unwrap().destroyed, 2);
    assert_eq!(s.client_gone(A), 0);
    // Each attach took the client's doorbell; each detach let it go (a
    // VMM's notification must not outlive its VNIC in netd).
    let seen = seen.lock().unwrap();
    assert_eq!(seen.doorbells, [(A, 0), (A, 2), (B, 1)]);
    assert_eq!(seen.doorbells_gone, [(A, 0), (A, 2)]);
}

#[test]
fn the_configuration_names_what_is_wrong() {
    let bad = |text: &str| NetConfig::parse(text).unwrap_err().to_string();
    assert_eq!(bad("etherstub s\nvnic client=1 switch=t mac=02:00:00:00:00:01"), "netd.conf line 2: property \"switch\": \"t\" is no etherstub or nic_tag defined above");
    assert_eq!(bad("etherstub s\nvnic client=1 switch=s"), "netd.conf line 2: property \"mac\" is missing");
    assert_eq!(bad("etherstub s\nvnic switch=s mac=02:00:00:00:00:01"), "netd.conf line 2: property \"client\" is missing");
    assert_eq!(
        bad("etherstub s\nvnic client=1 switch=s mac=03:00:00:00:00:01"),
        "netd.conf line 2: property \"mac\": expected a unicast MAC address, got \"03:00:00:00:00:01\""
    );
    assert_eq!(
        bad("etherstub s\nvnic client=1 switch=s mac=02:00:00:00:00:01 vlan_id=4095"),
        "netd.conf line 2: property \"vlan_id\": expected 0 to 4094, got \"4095\""
    );
    assert_eq!(
        bad("etherstub s\nvnic client=1 switch=s mac=02:00:00:00:00:01 maxbw=0"),
        "netd.conf line 2: property \"maxbw\": expected Mbit/s, at least 1, got \"0\""
    );
    assert_eq!(
        bad("etherstub s\nvnic client=1 switch=s mac=02:00:00:00:00:01 allow_ip_spoofing=yes"),
        "netd.conf line 2: property \"allow_ip_spoofing\": expected true or false, got \"yes\""
    );
    assert_eq!(bad("etherstub s\nvnic client=1 switch=s mac=02:00:00:00:00:01 speed=10"), "netd.conf line 2: property \"speed\" is not a VNIC property");
    for cids in ["0xabc", "ab01", "0x", "0xzz", "0x01,", "0x01,,0x02"] {
        assert_eq!(
            bad(&format!("etherstub s\nvnic client=1 switch=s mac=02:00:00:00:00:01 allowed_dhcp_cids={cids}")),
            format!("netd.conf line 2: property \"allowed_dhcp_cids\": expected client identifiers (0x and hex digits), comma-separated, got \"{cids}\""),
            "{cids}"
        );
    }
    let cids = NetConfig::parse("etherstub s\nvnic client=1 switch=s mac=02:00:00:00:00:01 allowed_dhcp_cids=0x01ab,0xFF00").unwrap();
    assert_eq!(cids.vnics[0].config.protection.allowed_dhcp_cids, [vec![0x01, 0xab], vec![0xff, 0x00]]);
    assert_eq!(
        bad("etherstub s\nvnic client=1 switch=s mac=02:00:00:00:00:01\nvnic client=2 switch=s mac=02:00:00:00:00:01"),
        "netd.conf line 3: property \"mac\": 02:00:00:00:00:01 is already on switch \"s\", VLAN 0"
    );
    assert_eq!(bad("etherstub s\netherstub s"), "netd.conf line 2: switch \"s\" is defined twice");
    assert_eq!(bad("bridge x"), "netd.conf line 1: \"bridge\" is not etherstub, nic_tag, vnic, nic or host");
    let ok = NetConfig::parse(CONF).unwrap();
    assert_eq!((ok.switches.len(), ok.vnics.len()), (2, 3));
    assert!(ok.vnics[2].config.protection.allow_ip_spoofing);
    assert_eq!(ok.vnics[2].config.vlan_id, 7);
}

/// The control plane (an admin: init's unbadged endpoint here) grants each
/// run-time VM its VNICs: the holder of a grant's badge lists and attaches
/// exactly its own, never another grant's or the boot configuration's;
/// frames cross between two granted VNICs on one etherstub; revoke
/// detaches and deletes them, and their MACs can be granted again.
#[test]
fn granted_vnics_reach_only_their_holder_and_go_at_revoke() {
    let r = rig();
    let admin = vnic::Client::new(r.unbadged.clone());
    // Not an admin: a VMM of the boot configuration.
    let line = |mac: &str| format!("switch=stub0 mac={mac} ip=10.0.0.{}", &mac[mac.len() - 1..]);
    assert_eq!(r.client(A).grant(vec![line("02:00:00:00:01:05")]).unwrap(), Err(VnicError::NotPermitted));
    assert_eq!(r.client(A).revoke(1 << 48).unwrap(), Err(VnicError::NotPermitted));

    let g1 = admin.grant(vec![line("02:00:00:00:01:05"), "switch=admin mac=02:00:00:00:01:06 vlan_id=12".into()]).unwrap().unwrap();
    let g2 = admin.grant(vec![line("02:00:00:00:02:07")]).unwrap().unwrap();
    assert_ne!(g1.badge, g2.badge);
    assert!(g1.badge >= netd::vnics::GRANT_BADGE_BASE && g2.badge >= netd::vnics::GRANT_BADGE_BASE);
    assert_eq!(g1.vnics, [3, 4]);
    assert_eq!(g2.vnics, [5]);
    assert_eq!(r.seen.lock().unwrap().minted, [g1.badge, g2.badge]);
    let (v1, v2) = (r.client(g1.badge), r.client(g2.badge));
    let listed: Vec<_> = v1.vnics().unwrap().into_iter().map(|v| (v.vnic, v.mac, v.vlan_id, v.switch)).collect();
    assert_eq!(
        listed,
        [(3, [2, 0, 0, 0, 1, 5], 0, "stub0".to_string()), (4, [2, 0, 0, 0, 1, 6], 12, "admin".to_string())]
    );
    assert_eq!(v2.vnics().unwrap().iter().map(|v| v.vnic).collect::<Vec<_>>(), [5]);
    // The abuse: one VMM's grant attaching another's VNIC, or a boot
    // VNIC; a boot client attaching a granted one. All look absent.
    assert_eq!(v1.attach(5, 0).unwrap(), Err(VnicError::NoSuchVnic { vnic: 5 }));
    assert_eq!(v1.attach(0, 0).unwrap(), Err(VnicError::NoSuchVnic { vnic: 0 }));
    assert_eq!(r.client(A).attach(3, 0).unwrap(), Err(VnicError::NoSuchVnic { vnic: 3 }));
    // A granted VMM cannot grant either.
    assert_eq!(v1.grant(vec![line("02:00:00:00:03:08")]).unwrap(), Err(VnicError::NotPermitted));
    assert_eq!(v2.revoke(g1.badge).unwrap(), Err(VnicError::NotPermitted));

    // Frames pass between the two granted VNICs on stub0.
    let h1 = v1.attach(3, 0).unwrap().unwrap();
    let h2 = v2.attach(5, 0).unwrap().unwrap();
    // An admin sees every VNIC and which are attached; nobody else may.
    let shown: Vec<_> = admin.show(0).unwrap().unwrap().into_iter().map(|v| (v.vnic, v.attached)).collect();
    assert_eq!(shown, [(0, false), (1, false), (2, false), (3, true), (4, false), (5, true)]);
    assert_eq!(admin.show(4).unwrap().unwrap().len(), 2);
    assert_eq!(v1.show(0).unwrap(), Err(VnicError::NotPermitted));
    let (mut m1, mut m2) = (Vmm::new(r.region(0)), Vmm::new(r.region(1)));
    let ask = arp([2, 0, 0, 0, 1, 5], [10, 0, 0, 5]);
    m1.send(&ask);
    assert_eq!(v1.kick(h1.handle).unwrap(), Ok(1));
    assert_eq!(m2.received(), [ask]);

    // Revoked: detached, deleted, the endpoint minted for it revoked.
    assert_eq!(admin.revoke(g2.badge).unwrap(), Ok(1));
    assert_eq!(r.seen.lock().unwrap().unminted, 1);
    assert!(v2.vnics().unwrap().is_empty());
    assert!(admin.show(0).unwrap().unwrap().iter().all(|v| v.vnic != 5));
    assert_eq!(v2.kick(h2.handle).unwrap(), Err(VnicError::NoSuchHandle { handle: h2.handle }));
    assert_eq!(admin.revoke(g2.badge).unwrap(), Err(VnicError::Invalid { why: format!("no grant {:#x}", g2.badge) }));
    // Its MAC is free again; its slot is reused.
    let g3 = admin.grant(vec![line("02:00:00:00:02:07")]).unwrap().unwrap();
    assert_eq!(g3.vnics, [5]);
    assert!(r.client(g2.badge).vnics().unwrap().is_empty());
    assert_eq!(admin.revoke(g1.badge).unwrap(), Ok(2));
    assert_eq!(admin.revoke(g3.badge).unwrap(), Ok(1));
    drop((admin, v1, v2));
    let (status, seen) = r.finish();
    assert!(!status.contains("02:00:00:00:01"), "{status}");
    assert_eq!(seen.lock().unwrap().unminted, 3);
}

/// Hostile grants: each refused naming the VNIC and property, nothing made.
#[test]
fn a_bad_grant_names_what_is_wrong_and_makes_nothing() {
    let r = rig();
    let admin = vnic::Client::new(r.unbadged.clone());
    let nine: Vec<String> = (0..9).map(|i| format!("switch=stub0 mac=02:00:00:00:09:0{i}")).collect();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec![], "1 to 8 VNICs, got 0"),
        (nine, "1 to 8 VNICs, got 9"),
        (vec!["switch=stub0 mac=02:00:00:00:01:05 client=3".into()], "VNIC 0: property \"client\""),
        (vec!["switch=nosuch mac=02:00:00:00:01:05".into()], "VNIC 0: property \"switch\": \"nosuch\""),
        (vec!["switch=stub0 mac=zz:00:00:00:01:05".into()], "VNIC 0: property \"mac\""),
        (vec!["switch=stub0 mac=01:00:5e:00:00:01".into()], "VNIC 0: property \"mac\""),
        (vec!["switch=stub0 mac=02:00:00:00:01:05 vlan_id=4095".into()], "VNIC 0: property \"vlan_id\""),
        (vec!["switch=stub0 mac=02:00:00:00:01:05 vlan_id=-1".into()], "VNIC 0: property \"vlan_id\""),
        (vec!["switch=stub0 mac=02:00:00:00:01:05 ip=10.0.0.300".into()], "VNIC 0: property \"ip\""),
        (vec!["switch=stub0".into()], "VNIC 0: property \"mac\" is missing"),
        (vec!["mac=02:00:00:00:01:05".into()], "VNIC 0: property \"switch\" is missing"),
        (vec!["switch=stub0 mac=02:00:00:00:01:05 frob=1".into()], "VNIC 0: property \"frob\""),
        // The boot configuration's A already has this MAC on stub0.
        (vec!["switch=stub0 mac=02:08:20:00:00:01".into()], "VNIC 0: property \"mac\": 02:08:20:00:00:01 is already on switch \"stub0\""),
        (
            vec!["switch=stub0 mac=02:00:00:00:01:05".into(), "switch=stub0 mac=02:00:00:00:01:05".into()],
            "VNIC 1: property \"mac\"",
        ),
    ];
    for (lines, want) in cases {
        match admin.grant(lines.clone()).unwrap() {
            Err(VnicError::Invalid { why }) => assert!(why.contains(want), "{lines:?}: {why}"),
            other => panic!("{lines:?}: {other:?}"),
        }
    }
    assert!(r.seen.lock().unwrap().minted.is_empty());
    drop(admin);
    let (status, _) = r.finish();
    assert!(!status.contains("02:00:00:00:01:05"), "{status}");
}

type Life = (Arc<Mutex<Seen>>, ClientEnd, thread::JoinHandle<(String, u64, u64)>);

/// One life of netd (a `VnicServer` from `CONF`, handles from `first`)
/// on its own thread; what it said at the end: its status, the stale
/// handles it counted and the frames its switches took.
fn life(first: u32) -> Life {
    let (platform, seen) = Platform::new(Seen { max_pages: 128, ..Seen::default() });
    let config = NetConfig::parse(CONF).unwrap();
    let (unbadged, mut end) = channel(8);
    let server = thread::spawn(move || {
        let mut s = VnicServer::new(&config, platform);
        s.set_first_handle(first);
        end.serve_until_closed(&mut s);
        (s.status_text(), s.stale_handles(), s.frames_taken())
    });
    (seen, unbadged, server)
}

#[test]
fn a_restarted_netd_refuses_the_earlier_ones_handles_and_its_vmms_attach_again() {
    // The first netd: both VMMs attached, frames crossing.
    let (seen, unbadged, server) = life(100);
    let (a, b) = (vnic::Client::new(unbadged.badged(A)), vnic::Client::new(unbadged.badged(B)));
    let ha = a.attach(0, 0).unwrap().unwrap().handle;
    let hb = b.attach(1, 0).unwrap().unwrap().handle;
    assert_eq!((ha, hb), (100, 101), "handles start where the process said");
    let region = |seen: &Arc<Mutex<Seen>>, n: usize| seen.lock().unwrap().regions[n].clone();
    let (mut vmm_a, mut vmm_b) = (Vmm::new(region(&seen, 0)), Vmm::new(region(&seen, 1)));
    vmm_a.send(&arp(MAC_A, [10, 0, 0, 1]));
    vmm_a.send(&arp(MAC_A, [10, 0, 0, 1]));
    assert_eq!(a.kick(ha).unwrap(), Ok(2));
    assert_eq!(vmm_b.received().len(), 2);
    // A handle this netd never gave is refused and counted; one it gave
    // and took back (a replaced attachment) is refused but not counted.
    assert_eq!(a.kick(99).unwrap(), Err(VnicError::NoSuchHandle { handle: 99 }));
    assert_eq!(a.detach(5000).unwrap(), Err(VnicError::NoSuchHandle { handle: 5000 }));
    let ha2 = a.attach(0, 0).unwrap().unwrap().handle;
    assert_eq!(a.kick(ha).unwrap(), Err(VnicError::NoSuchHandle { handle: ha }));
    drop((a, b));
    drop(unbadged);
    let (status, stale, taken) = server.join().unwrap();
    assert_eq!(stale, 2, "{status}");
    assert!(status.contains("2 kicks or detaches named a handle of an earlier netd"), "{status}");
    // A's first attachment (2 frames) was replaced: only attached VNICs count.
    assert_eq!(taken, 0);

    // init restarts netd: the same netd.conf, new handles. The VMMs still
    // hold the earlier handles and rings; their kicks are refused (and
    // counted) until each attaches again, and frames cross once more.
    let (seen, unbadged, server) = life(7000);
    let (a, b) = (vnic::Client::new(unbadged.badged(A)), vnic::Client::new(unbadged.badged(B)));
    assert_eq!(a.kick(ha2).unwrap(), Err(VnicError::NoSuchHandle { handle: ha2 }));
    assert_eq!(b.kick(hb).unwrap(), Err(VnicError::NoSuchHandle { handle: hb }));
    // The earlier handles are not B's or A's either way round.
    assert_eq!(b.kick(ha2).unwrap(), Err(VnicError::NoSuchHandle { handle: ha2 }));
    let listed: Vec<_> = a.vnics().unwrap().into_iter().map(|v| (v.vnic, v.attached)).collect();
    assert_eq!(listed, [(0, false), (2, false)], "the VNICs came back from netd.conf, unattached");
    let na = a.attach(0, 0).unwrap().unwrap();
    let nb = b.attach(1, 0).unwrap().unwrap();
    assert_eq!((na.handle, nb.handle, na.mac, nb.mac), (7000, 7001, MAC_A, MAC_B));
    let (mut vmm_a, mut vmm_b) = (Vmm::new(region(&seen, 0)), Vmm::new(region(&seen, 1)));
    let hello = arp(MAC_B, [10, 0, 0, 2]);
    vmm_b.send(&hello);
    assert_eq!(b.kick(nb.handle).unwrap(), Ok(1));
    assert_eq!(vmm_a.received(), [hello]);
    drop((a, b));
    drop(unbadged);
    let (status, stale, taken) = server.join().unwrap();
    assert_eq!((stale, taken), (3, 1), "{status}");
}

#[test]
fn the_first_handle_is_set_only_before_any_attach_and_never_zero() {
    let (_seen, unbadged, server) = life(0);
    let a = vnic::Client::new(unbadged.badged(A));
    assert_eq!(a.attach(0, 0).unwrap().unwrap().handle, 1, "0 is no handle");
    drop(a);
    drop(unbadged);
    let (_, stale, _) = server.join().unwrap();
    assert_eq!(stale, 0);
}

/// One life of netd whose grant badges start at `offset` above
/// `GRANT_BADGE_BASE` (the process gives a random one).
fn grant_life(offset: u64) -> Life {
    let (platform, seen) = Platform::new(Seen { max_pages: 128, ..Seen::default() });
    let config = NetConfig::parse(CONF).unwrap();
    let (unbadged, mut end) = channel(8);
    let server = thread::spawn(move || {
        let mut s = VnicServer::new(&config, platform);
        s.set_first_grant(offset);
        end.serve_until_closed(&mut s);
        (s.status_text(), s.stale_handles(), s.frames_taken())
    });
    (seen, unbadged, server)
}

/// init restarted netd: the grants zone-server had made are gone until it
/// makes them again (`regrant`) under the badges their VMMs still hold;
/// then each VMM lists and attaches exactly its own VNICs and frames cross.
/// The abuse: a regrant by a non-admin, of a client badge, of a grant that
/// is live or that this netd revoked (a stale badge), or naming another
/// grant's VNIC (its MAC) makes nothing; new grants never take a
/// regranted badge; a revoked regrant is gone for good.
#[test]
fn a_restarted_netd_makes_an_earlier_ones_grants_again_for_their_holders_alone() {
    use netd::vnics::GRANT_BADGE_BASE;
    let line = |mac: &str, ip: &str| format!("switch=stub0 mac={mac} ip={ip}");
    let lines1 = vec![line("02:00:00:00:01:05", "10.0.0.5"), "switch=admin mac=02:00:00:00:01:06 vlan_id=12".to_string()];
    let lines2 = vec![line("02:00:00:00:02:07", "10.0.0.7")];
    // The first netd: two grants, their badges from the process's start.
    let (seen, unbadged, server) = grant_life(10);
    let admin = vnic::Client::new(unbadged.clone());
    let g1 = admin.grant(lines1.clone()).unwrap().unwrap();
    let g2 = admin.grant(lines2.clone()).unwrap().unwrap();
    assert_eq!((g1.badge, g2.badge), (GRANT_BADGE_BASE + 10, GRANT_BADGE_BASE + 11));
    assert_eq!(seen.lock().unwrap().minted.len(), 2);
    drop(admin);
    drop(unbadged);
    server.join().unwrap();

    // The second netd (another start): the VMMs' badged capabilities reach
    // it, but it knows none of their VNICs yet.
    let (seen, unbadged, server) = grant_life(5000);
    let admin = vnic::Client::new(unbadged.clone());
    let (v1, v2) = (vnic::Client::new(unbadged.badged(g1.badge)), vnic::Client::new(unbadged.badged(g2.badge)));
    assert!(v1.vnics().unwrap().is_empty());
    assert_eq!(v1.attach(3, 0).unwrap(), Err(VnicError::NoSuchVnic { vnic: 3 }));
    // Not an admin: a boot client, or the VMM itself.
    assert_eq!(vnic::Client::new(unbadged.badged(A)).regrant(g1.badge, lines1.clone()).unwrap(), Err(VnicError::NotPermitted));
    assert_eq!(v1.regrant(g1.badge, lines1.clone()).unwrap(), Err(VnicError::NotPermitted));
    // A client badge of init's is no grant.
    match admin.regrant(A, lines1.clone()).unwrap() {
        Err(VnicError::Invalid { why }) => assert!(why.contains("no grant's badge"), "{why}"),
        other => panic!("{other:?}"),
    }
    // A new grant meanwhile: its badge is this life's, not an earlier one's.
    let g3 = admin.grant(vec![line("02:00:00:00:03:08", "10.0.0.8")]).unwrap().unwrap();
    assert_eq!(g3.badge, GRANT_BADGE_BASE + 5000);
    // g2's VM made again, then deleted (revoked).
    assert_eq!(admin.regrant(g2.badge, lines2.clone()).unwrap().unwrap().vnics.len(), 1);
    assert_eq!(admin.revoke(g2.badge).unwrap(), Ok(1));
    // Revoked by this netd: g2's badge is stale and comes back no more.
    match admin.regrant(g2.badge, lines2.clone()).unwrap() {
        Err(VnicError::Invalid { why }) => assert!(why.contains("revoked by this netd"), "{why}"),
        other => panic!("{other:?}"),
    }
    let r1 = admin.regrant(g1.badge, lines1.clone()).unwrap().unwrap();
    assert_eq!(r1.badge, g1.badge);
    assert_eq!(r1.vnics.len(), 2);
    // Nothing is granted twice: the live grant, g3's live badge.
    assert_eq!(admin.regrant(g1.badge, lines1.clone()).unwrap(), Err(VnicError::GrantLive { badge: g1.badge }));
    assert_eq!(admin.regrant(g3.badge, lines2.clone()).unwrap(), Err(VnicError::GrantLive { badge: g3.badge }));
    // Another holder naming g1's VNIC now: refused by MAC, nothing made.
    let other = GRANT_BADGE_BASE + 77;
    match admin.regrant(other, vec![lines1[0].clone()]).unwrap() {
        Err(VnicError::Invalid { why }) => assert!(why.contains("is already on switch"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert!(vnic::Client::new(unbadged.badged(other)).vnics().unwrap().is_empty());
    // No endpoint was minted for a regrant: the holder's copy is the earlier one's.
    assert_eq!(seen.lock().unwrap().minted, [g3.badge]);
    // g1's holder reaches exactly its VNICs; g3's holder none of them.
    let listed: Vec<_> = v1.vnics().unwrap().into_iter().map(|v| (v.vnic, v.mac, v.vlan_id)).collect();
    assert_eq!(listed, [(r1.vnics[0], [2, 0, 0, 0, 1, 5], 0), (r1.vnics[1], [2, 0, 0, 0, 1, 6], 12)]);
    let v3 = vnic::Client::new(unbadged.badged(g3.badge));
    assert_eq!(v3.attach(r1.vnics[0], 0).unwrap(), Err(VnicError::NoSuchVnic { vnic: r1.vnics[0] }));
    // Frames cross between the regranted VNIC and g3's.
    let h1 = v1.attach(r1.vnics[0], 0).unwrap().unwrap();
    let h3 = v3.attach(g3.vnics[0], 0).unwrap().unwrap();
    let region = |n: usize| seen.lock().unwrap().regions[n].clone();
    let (mut m1, mut m3) = (Vmm::new(region(0)), Vmm::new(region(1)));
    let ask = arp([2, 0, 0, 0, 1, 5], [10, 0, 0, 5]);
    m1.send(&ask);
    assert_eq!(v1.kick(h1.handle).unwrap(), Ok(1));
    assert_eq!(m3.received(), [ask]);
    assert_eq!(v3.kick(h3.handle).unwrap(), Ok(0));
    // Revoked (the VM was deleted): its VNICs go, nothing to unmint, and
    // it is not made again.
    assert_eq!(admin.revoke(g1.badge).unwrap(), Ok(2));
    assert_eq!(seen.lock().unwrap().unminted, 0);
    assert!(v1.vnics().unwrap().is_empty());
    assert_eq!(v1.kick(h1.handle).unwrap(), Err(VnicError::NoSuchHandle { handle: h1.handle }));
    match admin.regrant(g1.badge, lines1.clone()).unwrap() {
        Err(VnicError::Invalid { why }) => assert!(why.contains("revoked by this netd"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert!(admin.show(0).unwrap().unwrap().iter().all(|v| v.mac != [2, 0, 0, 0, 1, 5]));
    drop((admin, v1, v2, v3));
    drop(unbadged);
    server.join().unwrap();
}

/// A regranted badge is skipped by the grants that follow (a netd whose
/// random start happened to fall on an earlier netd's badges).
#[test]
fn a_new_grant_never_takes_a_regranted_badge() {
    use netd::vnics::GRANT_BADGE_BASE;
    let (_seen, unbadged, server) = grant_life(0);
    let admin = vnic::Client::new(unbadged.clone());
    let r = admin.regrant(GRANT_BADGE_BASE, vec!["switch=stub0 mac=02:00:00:00:04:01".into()]).unwrap().unwrap();
    assert_eq!(r.badge, GRANT_BADGE_BASE);
    let g = admin.grant(vec!["switch=stub0 mac=02:00:00:00:04:02".into()]).unwrap().unwrap();
    assert_eq!(g.badge, GRANT_BADGE_BASE + 1);
    drop(admin);
    drop(unbadged);
    server.join().unwrap();
}

#[test]
fn a_kick_that_throttles_its_sender_sets_netds_wake_up_and_the_tick_sends_the_rest() {
    const CAPPED: &str = "\
etherstub stub0
vnic client=3 switch=stub0 mac=02:08:20:00:00:01 ip=10.0.0.1 maxbw=1
vnic client=4 switch=stub0 mac=02:08:20:00:00:02 ip=10.0.0.2
";
    let (platform, seen) = Platform::new(Seen { max_pages: 128, tick_ns: 1_000_000, ..Seen::default() });
    let config = NetConfig::parse(CAPPED).unwrap();
    let (unbadged, mut end) = channel(8);
    let server = thread::spawn(move || {
        let mut n = netd::host::Netd::new(&config, platform, 1);
        end.serve_until_closed(&mut n);
        let after_kick = n.wake_at_ns();
        // The process's timer, at the time asked for, until none is asked.
        let mut ticks = 0;
        while n.wake_at_ns().is_some() && ticks < 100 {
            ticks += 1;
            n.tick();
        }
        (after_kick, n.wake_at_ns(), n.status_text())
    });
    let (a, b) = (vnic::Client::new(unbadged.badged(A)), vnic::Client::new(unbadged.badged(B)));
    let ha = a.attach(0, 0).unwrap().unwrap().handle;
    b.attach(1, 0).unwrap().unwrap();
    let region = |n: usize| seen.lock().unwrap().regions[n].clone();
    let (mut vmm_a, mut vmm_b) = (Vmm::new(region(0)), Vmm::new(region(1)));
    // 60 ARPs of 60 bytes: more than the 1 Mbit/s bucket's burst (two
    // full frames, 3028 bytes) holds.
    for _ in 0..60 {
        vmm_a.send(&arp(MAC_A, [10, 0, 0, 1]));
    }
    assert_eq!(a.kick(ha).unwrap(), Ok(60), "all taken, some held back");
    let first = vmm_b.received().len();
    assert!((1..60).contains(&first), "{first}");
    drop((a, b));
    drop(unbadged);
    let (after_kick, at_end, status) = server.join().unwrap();
    assert!(after_kick.is_some(), "the kick asked for a wake-up");
    assert_eq!(at_end, None, "nothing waits any more");
    assert_eq!(first + vmm_b.received().len(), 60, "the ticks sent the rest: {status}");
}

/// `dladm show-link`'s source: netd's switches, for admins alone (init's
/// badge 0 here); a VMM's client asking gets `NotPermitted`.
#[test]
fn switches_are_listed_for_admins_only() {
    let r = rig();
    let admin = r.client(0);
    let listed: Vec<_> = admin.switches().unwrap().unwrap().into_iter().map(|s| (s.name, s.etherstub, s.uplink)).collect();
    assert_eq!(listed, [("stub0".to_string(), true, None), ("admin".to_string(), false, None)]);
    assert!(admin.switches().unwrap().unwrap().iter().all(|s| s.mtu >= 1500));
    assert_eq!(r.client(A).switches().unwrap(), Err(VnicError::NotPermitted));
    assert_eq!(r.client(0xdead).switches().unwrap(), Err(VnicError::NotPermitted));
    // netd goes on serving the refused client.
    assert!(r.client(A).vnics().unwrap().iter().any(|v| v.vnic == 0));
    drop(admin);
    r.finish();
}

/// `dladm create-etherstub`, `delete-etherstub`, `create-vnic`,
/// `delete-vnic` at run time: admins only; illumos link names; duplicates,
/// netd's own names, unknown links and huge counts refused with a reason;
/// an etherstub with VNICs on it and a VM's VNIC cannot be deleted; what
/// is made can be used (granted onto, listed) and deleted again.
#[test]
fn etherstubs_and_operator_vnics_are_made_and_deleted_at_run_time() {
    use libipc::interfaces::{ETHERSTUBS_MAX, OPERATOR_VNICS_MAX};
    let r = rig();
    let admin = r.client(0);
    let names = |c: &vnic::Client<ClientEnd>| -> Vec<String> { c.switches().unwrap().unwrap().into_iter().map(|s| s.name).collect() };
    // Not an admin: every call refused, nothing made.
    let vmm = r.client(A);
    assert_eq!(vmm.create_etherstub("stub1".into()).unwrap(), Err(VnicError::NotPermitted));
    assert_eq!(vmm.delete_etherstub("stub0".into()).unwrap(), Err(VnicError::NotPermitted));
    assert_eq!(vmm.create_vnic("op0".into(), "switch=stub0 mac=02:00:00:00:09:01".into()).unwrap(), Err(VnicError::NotPermitted));
    assert_eq!(vmm.delete_vnic("vnic0".into()).unwrap(), Err(VnicError::NotPermitted));
    assert_eq!(vmm.vnic_names(0).unwrap(), Err(VnicError::NotPermitted));
    assert_eq!(names(&admin), ["stub0", "admin"]);

    // Names.
    let bad = |n: &str| match admin.create_etherstub(n.into()).unwrap() {
        Err(VnicError::BadName { name, .. }) => name == n,
        _ => false,
    };
    for n in ["", "stub", "0stub1", "stub-1", "stub 1", "stub01", "a/../b1", "ü1", &"s".repeat(31), &format!("{}1", "s".repeat(31)), "vnic3", "vioif0", "s99999999999"] {
        assert!(bad(n), "{n:?} taken as a link name");
    }
    assert_eq!(admin.create_etherstub("stub0".into()).unwrap(), Err(VnicError::Exists { name: "stub0".into() }));
    assert_eq!(admin.create_etherstub("admin".into()).unwrap(), Err(VnicError::BadName { name: "admin".into(), why: "it must end in a number (vnic0, stub1)".into() }));

    // Made, used, refused while used, deleted.
    admin.create_etherstub("stub1".into()).unwrap().unwrap();
    assert_eq!(names(&admin), ["stub0", "admin", "stub1"]);
    let g = admin.grant(vec!["switch=stub1 mac=02:00:00:00:09:02".into()]).unwrap().unwrap();
    assert_eq!(
        admin.delete_etherstub("stub1".into()).unwrap(),
        Err(VnicError::Busy { name: "stub1".into(), why: "1 VNIC(s) on it".into() })
    );
    let vm_vnic = format!("vnic{}", g.vnics[0]);
    assert!(matches!(admin.delete_vnic(vm_vnic.clone()).unwrap(), Err(VnicError::Busy { .. })), "a VM's VNIC");
    r.client(g.badge).attach(g.vnics[0], 0).unwrap().unwrap();
    assert!(matches!(admin.delete_vnic(vm_vnic).unwrap(), Err(VnicError::Busy { why, .. }) if why.contains("attached")));
    let op = admin.create_vnic("op0".into(), "switch=stub1 mac=02:00:00:00:09:03 vlan_id=5".into()).unwrap().unwrap();
    assert_eq!(admin.vnic_names(0).unwrap().unwrap(), [(op, "op0".to_string())]);
    assert!(admin.show(0).unwrap().unwrap().iter().any(|v| v.vnic == op && v.vlan_id == 5 && v.switch == "stub1" && !v.attached));
    assert_eq!(admin.create_vnic("op0".into(), "switch=stub1 mac=02:00:00:00:09:04".into()).unwrap(), Err(VnicError::Exists { name: "op0".into() }));
    assert_eq!(admin.create_etherstub("op0".into()).unwrap(), Err(VnicError::Exists { name: "op0".into() }));
    // The same MAC on the same switch and VLAN, an unknown switch, a
    // client named: refused as a grant's line would be.
    assert!(matches!(admin.create_vnic("op1".into(), "switch=stub1 mac=02:00:00:00:09:03 vlan_id=5".into()).unwrap(), Err(VnicError::Invalid { .. })));
    assert!(matches!(admin.create_vnic("op1".into(), "switch=nowhere9 mac=02:00:00:00:09:05".into()).unwrap(), Err(VnicError::Invalid { .. })));
    assert!(matches!(admin.create_vnic("op1".into(), "client=3 switch=stub1 mac=02:00:00:00:09:05".into()).unwrap(), Err(VnicError::Invalid { .. })));
    // Nobody attaches an operator's VNIC.
    assert_eq!(vmm.attach(op, 0).unwrap(), Err(VnicError::NoSuchVnic { vnic: op }));
    assert_eq!(admin.delete_vnic("op9".into()).unwrap(), Err(VnicError::NotFound { name: "op9".into() }));
    assert_eq!(admin.delete_etherstub("admin".into()).unwrap(), Err(VnicError::NotFound { name: "admin".into() }), "a nic_tag");
    assert_eq!(admin.delete_etherstub("stub7".into()).unwrap(), Err(VnicError::NotFound { name: "stub7".into() }));
    admin.revoke(g.badge).unwrap().unwrap();
    assert!(matches!(admin.delete_etherstub("stub1".into()).unwrap(), Err(VnicError::Busy { .. })), "op0 is on it");
    admin.delete_vnic("op0".into()).unwrap().unwrap();
    assert_eq!(admin.vnic_names(0).unwrap().unwrap(), []);
    admin.delete_etherstub("stub1".into()).unwrap().unwrap();
    assert_eq!(names(&admin), ["stub0", "admin"]);
    assert!(admin.grant(vec!["switch=stub1 mac=02:00:00:00:09:06".into()]).unwrap().is_err(), "stub1 is gone");

    // Huge counts: bounded, and the bounds come back when things go.
    for i in 0..ETHERSTUBS_MAX {
        admin.create_etherstub(format!("es{i}")).unwrap().unwrap();
    }
    assert_eq!(
        admin.create_etherstub("es99".into()).unwrap(),
        Err(VnicError::TooMany { what: "etherstubs made at run time".into(), limit: ETHERSTUBS_MAX })
    );
    admin.delete_etherstub("es0".into()).unwrap().unwrap();
    admin.create_etherstub("es99".into()).unwrap().unwrap();
    for i in 0..OPERATOR_VNICS_MAX {
        admin.create_vnic(format!("op{i}"), format!("switch=es1 mac=02:00:00:00:0a:{i:02x}")).unwrap().unwrap();
    }
    assert_eq!(
        admin.create_vnic("op999".into(), "switch=es1 mac=02:00:00:00:0b:01".into()).unwrap(),
        Err(VnicError::TooMany { what: "VNICs made with create_vnic".into(), limit: OPERATOR_VNICS_MAX })
    );
    let mut listed = Vec::new();
    while let Some(last) = {
        let page = admin.vnic_names(listed.last().map_or(0, |(n, _): &(u32, String)| n + 1)).unwrap().unwrap();
        let last = page.last().cloned();
        listed.extend(page);
        last
    } {
        let _ = last;
    }
    assert_eq!(listed.len(), OPERATOR_VNICS_MAX as usize);
    drop((admin, vmm));
    let (status, _) = r.finish();
    assert!(status.contains("es99"), "{status}");
}

/// `dlstat`'s source: each VNIC's counters and drops by reason, from the
/// VNIC's side, for admins alone; a VMM asking (for its own VNICs too) gets
/// `NotPermitted` and netd goes on.
#[test]
fn stats_count_each_vnics_frames_and_drops_by_reason_for_admins_only() {
    let r = rig();
    let (a, b, admin) = (r.client(A), r.client(B), r.client(0));
    let ha = a.attach(0, 0).unwrap().unwrap().handle;
    let mut vmm_a = Vmm::new(r.region(0));
    b.attach(1, 0).unwrap().unwrap();
    let mut vmm_b = Vmm::new(r.region(1));
    // Before any frame: attached, nothing counted; VNIC 2 not attached.
    let before = admin.stats(0).unwrap().unwrap();
    assert_eq!(before.iter().map(|s| (s.vnic, s.attached, s.sent_frames)).collect::<Vec<_>>(), [(0, true, 0), (1, true, 0), (2, false, 0)]);
    // A sends one good frame, two with a forged source IP and one with a
    // forged source MAC.
    let good = arp(MAC_A, [10, 0, 0, 1]);
    vmm_a.send(&good);
    vmm_a.send(&arp(MAC_A, [10, 0, 0, 66]));
    vmm_a.send(&arp(MAC_A, [10, 0, 0, 67]));
    vmm_a.send(&arp([0x02, 0x08, 0x20, 0, 0, 0x99], [10, 0, 0, 1]));
    assert_eq!(a.kick(ha).unwrap(), Ok(4));
    assert_eq!(vmm_b.received(), std::slice::from_ref(&good));
    let stats = admin.stats(0).unwrap().unwrap();
    let (sa, sb) = (&stats[0], &stats[1]);
    assert_eq!((sa.sent_frames, sa.sent_bytes, sa.received_frames), (1, good.len() as u64, 0), "{sa:?}");
    let mut drops = sa.sent_drops.clone();
    drops.sort();
    assert_eq!(drops, [("ip_spoof".to_string(), 2), ("mac_spoof".to_string(), 1)]);
    assert!(sa.received_drops.is_empty());
    assert_eq!((sb.received_frames, sb.received_bytes, sb.sent_frames), (1, good.len() as u64, 0), "{sb:?}");
    assert!(sb.sent_drops.is_empty() && sb.received_drops.is_empty());
    // Pages: from a number on; past the last, nothing.
    assert_eq!(admin.stats(1).unwrap().unwrap().iter().map(|s| s.vnic).collect::<Vec<_>>(), [1, 2]);
    assert!(admin.stats(3).unwrap().unwrap().is_empty());
    assert!(admin.stats(u32::MAX).unwrap().unwrap().is_empty());
    // The abuse: VMMs reading counters, their own or another's.
    assert_eq!(a.stats(0).unwrap(), Err(VnicError::NotPermitted));
    assert_eq!(r.client(0xdead).stats(1).unwrap(), Err(VnicError::NotPermitted));
    assert_eq!(b.kick(ha).unwrap(), Err(VnicError::NoSuchHandle { handle: ha }));
    drop((a, b, admin));
    let (status, _) = r.finish();
    assert!(status.contains("ip_spoof=2") && status.contains("mac_spoof=1"), "{status}");
}
