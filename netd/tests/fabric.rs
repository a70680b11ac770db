//! The fabric's batches: one poll moves many frames from a VMM's ring
//! through the switch into other rings. Each frame of a batch is judged
//! and counted on its own (dropped ones by reason, forwarded ones into
//! the receivers' rings), a receiving ring that fills mid-batch drops
//! and counts the rest (never silently), a sender's bucket that empties
//! mid-batch keeps the rest in order, and each VMM is signalled once a
//! poll however many frames it got.

use std::net::{IpAddr, Ipv4Addr};

use libipc::framering::{Consumer, Direction, Geometry, Producer};
use netd::fabric::{Fabric, POLL_BUDGET};
use netd_switch::frame::MacAddr;
use netd_switch::{DropReason, SwitchConfig, VnicConfig, VnicId};
use netd_testkit::Shared;

const MAC_A: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0xa]);
const MAC_B: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0xb]);
const IP_A: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const IP_B: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

/// An IPv4 (TCP) frame of `len` bytes from `src`/`ip_src` to `dst`, its last
/// byte `seq` (to tell frames apart).
fn ipv4(dst: MacAddr, src: MacAddr, ip_src: Ipv4Addr, len: usize, seq: u8) -> Vec<u8> {
    let mut f = Vec::with_capacity(len);
    f.extend_from_slice(&dst.0);
    f.extend_from_slice(&src.0);
    f.extend_from_slice(&0x0800u16.to_be_bytes());
    f.extend_from_slice(&[0x45, 0]);
    f.extend_from_slice(&((len - 14) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0, 0, 0, 64, 6, 0, 0]);
    f.extend_from_slice(&ip_src.octets());
    f.extend_from_slice(&IP_B.octets());
    f.resize(len, 0);
    f[len - 1] = seq;
    f
}

fn vnic(mac: MacAddr, ip: Ipv4Addr, maxbw: Option<u32>) -> VnicConfig {
    let mut c = VnicConfig::new(mac);
    c.protection.ip = Some(IpAddr::V4(ip));
    c.maxbw_mbit = maxbw;
    c
}

fn region(g: Geometry) -> Shared {
    Shared::zeroed(g.region_pages() * 4096)
}

/// A VMM's end of a VNIC's rings (the same region as netd's).
struct Vmm {
    region: Shared,
    tx: Producer,
    rx: Consumer,
}

impl Vmm {
    fn of(fabric: &mut Fabric<Shared>, id: VnicId) -> Self {
        let region = fabric.region_mut(id).unwrap().clone();
        let g = Geometry::from_header(&region).unwrap();
        Self { region, tx: Producer::new(g, Direction::ToNetd), rx: Consumer::new(g, Direction::ToVmm) }
    }
    fn send(&mut self, frame: &[u8]) {
        assert!(self.tx.push(&mut self.region, frame).unwrap(), "room in the ring");
    }
    fn received(&mut self) -> Vec<Vec<u8>> {
        let mut got = Vec::new();
        let mut buf = vec![0; 2048];
        self.rx.pop_all(&mut self.region, &mut buf, 256, |f| got.push(f.to_vec())).unwrap();
        got
    }
}

/// A and B on an etherstub, B's ring `b_slots` slots, A capped at `maxbw`.
fn two(b_slots: u32, maxbw: Option<u32>) -> (Fabric<Shared>, VnicId, VnicId, Vmm, Vmm) {
    let mut f = Fabric::new(SwitchConfig::default(), 64).unwrap();
    let g = f.geometry();
    let a = f.attach(vnic(MAC_A, IP_A, maxbw), region(g), 0).unwrap();
    let gb = Geometry::new(b_slots).unwrap();
    let b = f.attach_with(vnic(MAC_B, IP_B, None), region(gb), gb, 0).map_err(|(e, _)| e).unwrap();
    let (va, vb) = (Vmm::of(&mut f, a), Vmm::of(&mut f, b));
    (f, a, b, va, vb)
}

#[test]
fn a_batch_that_mixes_dropped_and_forwarded_frames_counts_each_where_it_belongs() {
    let (mut f, a, b, mut va, mut vb) = two(64, None);
    let good = |seq| ipv4(MAC_B, MAC_A, IP_A, 200, seq);
    let mut tagged = good(9);
    tagged.splice(12..12, [0x81, 0x00, 0x00, 0x07]);
    let sent = [
        good(1),
        ipv4(MAC_B, MAC_A, Ipv4Addr::new(10, 0, 0, 66), 200, 2), // forged IP
        good(3),
        ipv4(MAC_B, MacAddr([0x02, 0, 0, 0, 0, 0x66]), IP_A, 200, 4), // forged MAC
        good(5)[..10].to_vec(),                                       // runt
        tagged,                                                       // a guest's VLAN tag
        ipv4(MAC_B, MAC_A, IP_A, 1600, 7),                            // over the MTU
        good(8),
    ];
    for s in &sent {
        va.send(s);
    }
    let work = f.poll(1);
    assert_eq!(vb.received(), [good(1), good(3), good(8)], "the good ones, in order, and nothing else");
    assert_eq!(work.signal, [b], "B is signalled once for three frames");
    assert_eq!(work.room, [a], "A's ring had frames taken");
    assert_eq!(f.taken(a), Some(8));
    assert_eq!(f.delivered(), 3);
    let sa = f.stats(a).unwrap();
    assert_eq!((sa.in_frames, sa.in_bytes), (3, 600));
    for r in [DropReason::IpSpoof, DropReason::MacSpoof, DropReason::Runt, DropReason::GuestVlanTag, DropReason::Oversized] {
        assert_eq!(sa.in_drops.get(r), 1, "{r}");
    }
    assert_eq!(sa.in_drops.total(), 5);
    let sb = f.stats(b).unwrap();
    assert_eq!((sb.out_frames, sb.out_bytes, sb.in_frames), (3, 600, 0));
    assert_eq!(f.ring_state(b), Some((0, None)));
    // Nothing more to do: an empty poll signals nobody.
    let idle = f.poll(2);
    assert!(idle.signal.is_empty() && idle.room.is_empty() && idle.wake_at_ns.is_none(), "{idle:?}");
}

#[test]
fn a_receiving_ring_that_fills_mid_batch_drops_and_counts_the_rest() {
    let (mut f, a, b, mut va, mut vb) = two(4, None);
    let frames: Vec<Vec<u8>> = (0..10).map(|i| ipv4(MAC_B, MAC_A, IP_A, 1514, i)).collect();
    for x in &frames {
        va.send(x);
    }
    let work = f.poll(1);
    assert_eq!(work.signal, [b]);
    // B's ring holds 4: those are the first 4; the 6 others are counted.
    assert_eq!(vb.received(), frames[..4]);
    assert_eq!(f.taken(a), Some(10));
    assert_eq!(f.delivered(), 4);
    assert_eq!(f.ring_state(b), Some((6, None)));
    // The switch forwarded all 10: each is in B's ring or in ring_full.
    let sb = f.stats(b).unwrap();
    assert_eq!(sb.out_frames, f.delivered() + f.ring_state(b).unwrap().0);
    assert!(f.status("stub0").contains("ring full 6"), "{}", f.status("stub0"));
    // B read its ring: the next frames go in again.
    va.send(&frames[4]);
    f.poll(2);
    assert_eq!(vb.received(), [frames[4].clone()]);
    assert_eq!(f.ring_state(b), Some((6, None)));
}

#[test]
fn a_ring_fuller_than_a_poll_budget_takes_several_polls_and_loses_nothing() {
    let (mut f, a, _b, mut va, mut vb) = two(64, None);
    let frames: Vec<Vec<u8>> = (0..48).map(|i| ipv4(MAC_B, MAC_A, IP_A, 100, i)).collect();
    for x in &frames {
        va.send(x);
    }
    f.poll(1);
    assert_eq!(f.taken(a), Some(u64::from(POLL_BUDGET)));
    f.poll(2);
    assert_eq!(f.taken(a), Some(48));
    assert_eq!(vb.received(), frames);
}

#[test]
fn a_bucket_that_empties_mid_batch_keeps_the_rest_in_order_until_it_allows() {
    // 1 Mbit/s: a burst of two full frames, then one every ~12 ms.
    let (mut f, a, _b, mut va, mut vb) = two(64, Some(1));
    let frames: Vec<Vec<u8>> = (0..5).map(|i| ipv4(MAC_B, MAC_A, IP_A, 1514, i)).collect();
    for x in &frames {
        va.send(x);
    }
    let work = f.poll(0);
    assert_eq!(vb.received(), frames[..2], "the burst");
    assert_eq!(f.taken(a), Some(5), "the ring is read, the rest held");
    assert_eq!(f.held(a), Some(3));
    let wake = work.wake_at_ns.expect("a wake-up for the held frames");
    assert!(wake > 0);
    // Before that time nothing moves and the time is given again.
    let early = f.poll(wake - 1);
    assert_eq!(early.wake_at_ns, Some(wake));
    assert!(vb.received().is_empty());
    // Frames sent meanwhile queue behind the held ones.
    let later = ipv4(MAC_B, MAC_A, IP_A, 1514, 9);
    va.send(&later);
    let mut got = Vec::new();
    let mut now = wake;
    for _ in 0..20 {
        let w = f.poll(now);
        got.extend(vb.received());
        match w.wake_at_ns {
            Some(t) => now = t,
            None => break,
        }
    }
    let mut want = frames[2..].to_vec();
    want.push(later);
    assert_eq!(got, want, "every frame, in order");
    assert_eq!(f.held(a), Some(0));
    let sa = f.stats(a).unwrap();
    assert_eq!(sa.in_frames, 6);
    assert!(sa.throttled >= 3, "{}", sa.throttled);
}

#[test]
fn a_flood_reaches_every_other_vnic_on_the_vlan_and_signals_each_once() {
    let mut f: Fabric<Shared> = Fabric::new(SwitchConfig::default(), 64).unwrap();
    let g = f.geometry();
    let a = f.attach(vnic(MAC_A, IP_A, None), region(g), 0).unwrap();
    let b = f.attach(vnic(MAC_B, IP_B, None), region(g), 0).unwrap();
    let c = f.attach(vnic(MacAddr([2, 0, 0, 0, 0, 0xc]), Ipv4Addr::new(10, 0, 0, 3), None), region(g), 0).unwrap();
    let mut other_vlan = vnic(MacAddr([2, 0, 0, 0, 0, 0xd]), Ipv4Addr::new(10, 0, 0, 4), None);
    other_vlan.vlan_id = 5;
    let d = f.attach(other_vlan, region(g), 0).unwrap();
    let (mut va, mut vb, mut vc, mut vd) = (Vmm::of(&mut f, a), Vmm::of(&mut f, b), Vmm::of(&mut f, c), Vmm::of(&mut f, d));
    let bcast = ipv4(MacAddr([0xff; 6]), MAC_A, IP_A, 120, 1);
    let bcast2 = ipv4(MacAddr([0xff; 6]), MAC_A, IP_A, 120, 2);
    va.send(&bcast);
    va.send(&bcast2);
    let work = f.poll(1);
    assert_eq!(work.signal, [b, c]);
    assert_eq!(vb.received(), [bcast.clone(), bcast2.clone()]);
    assert_eq!(vc.received(), [bcast, bcast2]);
    assert!(vd.received().is_empty(), "another VLAN");
    assert!(va.received().is_empty(), "not back to the sender");
    assert_eq!(f.delivered(), 4);
}

#[test]
fn a_hostile_receiving_ring_is_refused_and_the_others_still_get_the_batch() {
    let mut f: Fabric<Shared> = Fabric::new(SwitchConfig::default(), 64).unwrap();
    let g = f.geometry();
    let a = f.attach(vnic(MAC_A, IP_A, None), region(g), 0).unwrap();
    let b = f.attach(vnic(MAC_B, IP_B, None), region(g), 0).unwrap();
    let c = f.attach(vnic(MacAddr([2, 0, 0, 0, 0, 0xc]), Ipv4Addr::new(10, 0, 0, 3), None), region(g), 0).unwrap();
    let (mut va, mut vc) = (Vmm::of(&mut f, a), Vmm::of(&mut f, c));
    // B's VMM writes a consumer index no consumer could have.
    use libipc::blkring::RingRegion;
    f.region_mut(b).unwrap().clone().write(256, &0x4000_0000u32.to_le_bytes());
    let bcast = ipv4(MacAddr([0xff; 6]), MAC_A, IP_A, 120, 1);
    va.send(&bcast);
    va.send(&bcast);
    let work = f.poll(1);
    assert_eq!(work.signal, [c]);
    assert_eq!(vc.received().len(), 2);
    assert!(f.ring_state(b).unwrap().1.is_some(), "B's ring is refused");
    assert_eq!(f.delivered(), 2);
}

