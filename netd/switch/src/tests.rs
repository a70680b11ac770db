//! Host tests of the switch: frames built byte by byte, as a guest or the
//! wire would send them.

use alloc::vec;
use alloc::vec::Vec;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::bucket::TokenBucket;
use crate::frame::{self, Ethernet, FrameError, MacAddr};
use crate::*;

const A: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0xa]);
const B: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0xb]);
const C: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0xc]);
const X: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x77]);
const IP_A: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 10);
const IP_B: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 11);
const SEC: u64 = 1_000_000_000;

fn eth(dst: MacAddr, src: MacAddr, ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst.0);
    f.extend_from_slice(&src.0);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn arp(oper: u16, sha: MacAddr, spa: Ipv4Addr, tpa: Ipv4Addr) -> Vec<u8> {
    let mut p = vec![0, 1, 0x08, 0, 6, 4];
    p.extend_from_slice(&oper.to_be_bytes());
    p.extend_from_slice(&sha.0);
    p.extend_from_slice(&spa.octets());
    p.extend_from_slice(&[0; 6]);
    p.extend_from_slice(&tpa.octets());
    p
}

fn ipv4_udp(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, data: &[u8]) -> Vec<u8> {
    let total = 20 + 8 + data.len();
    let mut p = vec![0x45, 0];
    p.extend_from_slice(&(total as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, 0, 64, 17, 0, 0]);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(&sport.to_be_bytes());
    p.extend_from_slice(&dport.to_be_bytes());
    p.extend_from_slice(&((8 + data.len()) as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(data);
    p
}

fn ipv4_icmp(src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
    let mut p = vec![0x45, 0, 0, 28, 0, 0, 0, 0, 64, 1, 0, 0];
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(&[8, 0, 0, 0, 0, 1, 0, 1]);
    p
}

fn ipv6_udp(src: Ipv6Addr, dst: Ipv6Addr, sport: u16, dport: u16) -> Vec<u8> {
    let mut p = vec![0x60, 0, 0, 0, 0, 8, 17, 64];
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(&sport.to_be_bytes());
    p.extend_from_slice(&dport.to_be_bytes());
    p.extend_from_slice(&[0, 8, 0, 0]);
    p
}

/// A BOOTP/DHCP client message with `chaddr` and, if given, option 61.
fn dhcp_client(chaddr: MacAddr, cid: Option<&[u8]>) -> Vec<u8> {
    let mut m = vec![0u8; 240];
    m[0] = 1;
    m[1] = 1;
    m[2] = 6;
    m[28..34].copy_from_slice(&chaddr.0);
    m[236..240].copy_from_slice(&[99, 130, 83, 99]);
    m.extend_from_slice(&[53, 1, 1]);
    if let Some(cid) = cid {
        m.push(61);
        m.push(cid.len() as u8);
        m.extend_from_slice(cid);
    }
    m.push(255);
    m
}

fn forwarded(o: Outcome) -> Forward {
    match o {
        Outcome::Forward(f) => f,
        other => panic!("expected forwarding, got {other:?}"),
    }
}

fn dropped(o: Outcome) -> DropReason {
    match o {
        Outcome::Dropped(r) => r,
        other => panic!("expected a drop, got {other:?}"),
    }
}

fn vnic(mac: MacAddr, ip: Ipv4Addr) -> VnicConfig {
    let mut c = VnicConfig::new(mac);
    c.protection.ip = Some(IpAddr::V4(ip));
    c
}

/// An etherstub with A (10.0.0.10) and B (10.0.0.11), fully protected.
fn stub() -> (Switch, VnicId, VnicId) {
    let mut s = Switch::new(SwitchConfig::default());
    let a = s.add_vnic(vnic(A, IP_A), 0).unwrap();
    let b = s.add_vnic(vnic(B, IP_B), 0).unwrap();
    (s, a, b)
}

fn drops_in(s: &Switch, id: VnicId, r: DropReason) -> u64 {
    s.port_stats(Port::Vnic(id)).unwrap().in_drops.get(r)
}

#[test]
fn arp_and_ping_between_two_vnics() {
    let (mut s, a, b) = stub();
    // A asks who has B's address: broadcast, flooded to B only.
    let req = eth(MacAddr::BROADCAST, A, frame::ETHERTYPE_ARP, &arp(1, A, IP_A, IP_B));
    let f = forwarded(s.from_vnic(a, &req, 0).unwrap());
    assert_eq!(f.vnics, vec![b]);
    assert!(!f.uplink);
    assert_eq!(f.frame, req);
    // B answers A: unicast to A's fixed entry.
    let rep = eth(A, B, frame::ETHERTYPE_ARP, &arp(2, B, IP_B, IP_A));
    assert_eq!(forwarded(s.from_vnic(b, &rep, 1).unwrap()).vnics, vec![a]);
    let ping = eth(B, A, frame::ETHERTYPE_IPV4, &ipv4_icmp(IP_A, IP_B));
    assert_eq!(forwarded(s.from_vnic(a, &ping, 2).unwrap()).vnics, vec![b]);
    let st = s.port_stats(Port::Vnic(a)).unwrap();
    assert_eq!((st.in_frames, st.out_frames), (2, 1));
    assert_eq!(st.in_bytes, (req.len() + ping.len()) as u64);
    assert_eq!(st.in_drops.total(), 0);
}

#[test]
fn learning_ageing_and_flooding_of_unknown_unicast() {
    let mut cfg = SwitchConfig { uplink: true, ..SwitchConfig::default() };
    cfg.ageing_ns = 10 * SEC;
    let mut s = Switch::new(cfg);
    let a = s.add_vnic(vnic(A, IP_A), 0).unwrap();
    let b = s.add_vnic(vnic(B, IP_B), 0).unwrap();
    // Unknown unicast to X: flooded to B and the uplink, not back to A.
    let to_x = eth(X, A, frame::ETHERTYPE_IPV4, &ipv4_icmp(IP_A, Ipv4Addr::new(10, 0, 0, 99)));
    let f = forwarded(s.from_vnic(a, &to_x, 0).unwrap());
    assert_eq!((f.vnics, f.uplink), (vec![b], true));
    // X speaks on the wire: learned on the uplink.
    let from_x = eth(A, X, frame::ETHERTYPE_IPV4, &ipv4_icmp(Ipv4Addr::new(10, 0, 0, 99), IP_A));
    assert_eq!(forwarded(s.from_uplink(&from_x, SEC)).vnics, vec![a]);
    let f = forwarded(s.from_vnic(a, &to_x, 2 * SEC).unwrap());
    assert_eq!((f.vnics, f.uplink), (vec![], true), "known unicast goes to its port alone");
    // Ten seconds after X was last seen, it is forgotten: flooded again.
    let f = forwarded(s.from_vnic(a, &to_x, 11 * SEC).unwrap());
    assert_eq!((f.vnics, f.uplink), (vec![b], true));
    let before = s.fdb_len();
    s.age(11 * SEC);
    assert_eq!(s.fdb_len(), before - 1, "ageing purges X, keeps the VNICs' fixed entries");
    // Multicast is always flooded.
    let mc = eth(MacAddr([0x01, 0, 0x5e, 0, 0, 1]), A, frame::ETHERTYPE_IPV4, &ipv4_icmp(IP_A, IP_B));
    let f = forwarded(s.from_vnic(a, &mc, 12 * SEC).unwrap());
    assert_eq!((f.vnics, f.uplink), (vec![b], true));
}

#[test]
fn a_vnics_mac_cannot_be_stolen_from_the_wire() {
    let mut s = Switch::new(SwitchConfig { uplink: true, ..SwitchConfig::default() });
    let a = s.add_vnic(vnic(A, IP_A), 0).unwrap();
    let b = s.add_vnic(vnic(B, IP_B), 0).unwrap();
    // A host on the wire claims B's MAC.
    let forged = eth(A, B, frame::ETHERTYPE_IPV4, &ipv4_icmp(IP_B, IP_A));
    forwarded(s.from_uplink(&forged, 0));
    assert_eq!(s.stats().fixed_moves_refused, 1);
    let to_b = eth(B, A, frame::ETHERTYPE_IPV4, &ipv4_icmp(IP_A, IP_B));
    let f = forwarded(s.from_vnic(a, &to_b, 1).unwrap());
    assert_eq!((f.vnics, f.uplink), (vec![b], false));
}

#[test]
fn a_full_table_floods_instead_of_forgetting() {
    let cfg = SwitchConfig { uplink: true, fdb_entries: 4, ..SwitchConfig::default() };
    let mut s = Switch::new(cfg);
    let a = s.add_vnic(vnic(A, IP_A), 0).unwrap();
    let _b = s.add_vnic(vnic(B, IP_B), 0).unwrap();
    // A MAC flood from the wire: two fit, the rest are not learned.
    for i in 0..100u8 {
        let src = MacAddr([0x02, 0x10, 0, 0, 0, i]);
        forwarded(s.from_uplink(&eth(A, src, frame::ETHERTYPE_IPV4, &ipv4_icmp(IP_B, IP_A)), 0));
    }
    assert_eq!(s.fdb_len(), 4);
    assert_eq!(s.stats().fdb_full, 98);
    let first = MacAddr([0x02, 0x10, 0, 0, 0, 0]);
    let f = forwarded(s.from_vnic(a, &eth(first, A, frame::ETHERTYPE_IPV4, &ipv4_icmp(IP_A, IP_B)), 1).unwrap());
    assert_eq!(f.vnics, vec![], "the early entry survives the flood");
}

#[test]
fn vlans_isolate_and_tag_on_the_wire_only() {
    let mut s = Switch::new(SwitchConfig { uplink: true, ..SwitchConfig::default() });
    let mut ca = vnic(A, IP_A);
    ca.vlan_id = 100;
    let mut cb = vnic(B, IP_B);
    cb.vlan_id = 200;
    let mut cc = vnic(C, Ipv4Addr::new(10, 0, 0, 12));
    cc.vlan_id = 100;
    let a = s.add_vnic(ca, 0).unwrap();
    let b = s.add_vnic(cb, 0).unwrap();
    let c = s.add_vnic(cc, 0).unwrap();
    // A's broadcast reaches C (same VLAN) and the wire tagged 100; never B.
    let bc = eth(MacAddr::BROADCAST, A, frame::ETHERTYPE_ARP, &arp(1, A, IP_A, IP_B));
    let f = forwarded(s.from_vnic(a, &bc, 0).unwrap());
    assert_eq!((f.vnics.clone(), f.uplink, f.vlan), (vec![c], true, 100));
    assert_eq!(f.frame, bc, "VNICs get it untagged");
    let wire = f.wire_frame();
    assert_eq!(&wire[12..16], &[0x81, 0x00, 0x00, 100]);
    assert_eq!(&wire[16..], &bc[12..]);
    // Unicast straight at B's MAC from A's VLAN: B is not there; it floods
    // VLAN 100 (C and the wire) and B never sees it.
    let to_b = eth(B, A, frame::ETHERTYPE_IPV4, &ipv4_icmp(IP_A, IP_B));
    let f = forwarded(s.from_vnic(a, &to_b, 1).unwrap());
    assert!(!f.vnics.contains(&b));
    // From the wire: tagged 200 goes to B untagged; untagged goes to nobody
    // (no VNIC on VLAN 0); tagged 300 to nobody.
    let tagged = frame::tag(&eth(MacAddr::BROADCAST, X, frame::ETHERTYPE_ARP, &arp(1, X, IP_A, IP_B)), 200);
    let f = forwarded(s.from_uplink(&tagged, 2));
    assert_eq!(f.vnics, vec![b]);
    assert_eq!(&f.frame[12..14], &[0x08, 0x06], "the tag is gone");
    let untagged = eth(MacAddr::BROADCAST, X, frame::ETHERTYPE_ARP, &arp(1, X, IP_A, IP_B));
    assert_eq!(forwarded(s.from_uplink(&untagged, 3)).vnics, vec![]);
    assert_eq!(forwarded(s.from_uplink(&frame::tag(&untagged, 300), 3)).vnics, vec![]);
    // The same MAC may exist on two VLANs, not twice on one.
    let mut dup = vnic(A, IP_A);
    dup.vlan_id = 200;
    assert!(s.add_vnic(dup.clone(), 0).is_ok());
    assert_eq!(s.add_vnic(dup, 0), Err(SwitchError::DuplicateMac(A)));
}

#[test]
fn guests_cannot_tag_and_the_wire_cannot_stack_tags() {
    let mut s = Switch::new(SwitchConfig { uplink: true, ..SwitchConfig::default() });
    let a = s.add_vnic(vnic(A, IP_A), 0).unwrap();
    let plain = eth(MacAddr::BROADCAST, A, frame::ETHERTYPE_ARP, &arp(1, A, IP_A, IP_B));
    // Guest sends an 802.1Q tag (VLAN hopping), an S-tag, a stacked pair.
    assert_eq!(dropped(s.from_vnic(a, &frame::tag(&plain, 5), 0).unwrap()), DropReason::GuestVlanTag);
    let mut prio = plain.clone();
    prio.splice(12..12, [0x81, 0x00, 0x00, 0x00]); // a priority tag, VID 0
    assert_eq!(dropped(s.from_vnic(a, &prio, 0).unwrap()), DropReason::GuestVlanTag);
    let mut stag = plain.clone();
    stag[12..14].copy_from_slice(&frame::TPID_8021AD.to_be_bytes());
    assert_eq!(dropped(s.from_vnic(a, &stag, 0).unwrap()), DropReason::GuestVlanTag);
    let double = frame::tag(&frame::tag(&plain, 7), 5);
    assert_eq!(dropped(s.from_vnic(a, &double, 0).unwrap()), DropReason::GuestVlanTag);
    assert_eq!(drops_in(&s, a, DropReason::GuestVlanTag), 4);
    // From the wire: VLAN-in-VLAN, S-tag and VID 4095 dropped, counted on the uplink.
    let from_x = eth(MacAddr::BROADCAST, X, frame::ETHERTYPE_ARP, &arp(1, X, IP_B, IP_A));
    assert_eq!(dropped(s.from_uplink(&frame::tag(&frame::tag(&from_x, 3), 4), 0)), DropReason::BadVlanTag);
    let mut stag = from_x.clone();
    stag[12..14].copy_from_slice(&frame::TPID_8021AD.to_be_bytes());
    assert_eq!(dropped(s.from_uplink(&stag, 0)), DropReason::BadVlanTag);
    let mut reserved = frame::tag(&from_x, 1);
    reserved[14..16].copy_from_slice(&[0x0f, 0xff]);
    assert_eq!(dropped(s.from_uplink(&reserved, 0)), DropReason::BadVlanTag);
    assert_eq!(s.port_stats(Port::Uplink).unwrap().in_drops.get(DropReason::BadVlanTag), 3);
    // A priority tag (VID 0) from the wire reads as VLAN 0.
    let mut prio = from_x.clone();
    prio.splice(12..12, [0x81, 0x00, 0xe0, 0x00]);
    assert_eq!(forwarded(s.from_uplink(&prio, 0)).vnics, vec![a]);
}

#[test]
fn runts_oversized_and_bad_sources_are_dropped_and_counted() {
    let (mut s, a, _b) = stub();
    for len in [0, 1, 13] {
        assert_eq!(dropped(s.from_vnic(a, &vec![0xff; len], 0).unwrap()), DropReason::Runt);
    }
    // A tag cut short.
    let mut cut = eth(MacAddr::BROADCAST, A, 0x8100, &[]);
    cut.push(0);
    assert_eq!(dropped(s.from_vnic(a, &cut, 0).unwrap()), DropReason::Runt);
    // Exactly the MTU passes, one byte more does not.
    let mut big = ipv4_udp(IP_A, IP_B, 9, 9, &[0; 1500 - 28]);
    let ok = eth(B, A, frame::ETHERTYPE_IPV4, &big);
    assert_eq!(ok.len(), 1514);
    forwarded(s.from_vnic(a, &ok, 0).unwrap());
    big.push(0);
    let over = eth(B, A, frame::ETHERTYPE_IPV4, &big);
    assert_eq!(dropped(s.from_vnic(a, &over, 0).unwrap()), DropReason::Oversized);
    assert_eq!(dropped(s.from_vnic(a, &vec![0; 65536], 0).unwrap()), DropReason::Oversized);
    // Multicast and zero source MACs, even with MAC spoofing allowed.
    let mut free = s.remove_vnic(a).unwrap();
    free.protection.allow_mac_spoofing = true;
    let a = s.add_vnic(free, 0).unwrap();
    let mc_src = eth(B, MacAddr([0x01, 0, 0x5e, 0, 0, 1]), frame::ETHERTYPE_IPV4, &ipv4_icmp(IP_A, IP_B));
    assert_eq!(dropped(s.from_vnic(a, &mc_src, 0).unwrap()), DropReason::BadSourceMac);
    let zero = eth(B, MacAddr([0; 6]), frame::ETHERTYPE_IPV4, &ipv4_icmp(IP_A, IP_B));
    assert_eq!(dropped(s.from_vnic(a, &zero, 0).unwrap()), DropReason::BadSourceMac);
    let st = s.port_stats(Port::Vnic(a)).unwrap();
    assert_eq!((st.in_drops.get(DropReason::BadSourceMac), st.in_frames), (2, 0));
    // Unknown VNIC: an error, not a panic.
    assert_eq!(s.from_vnic(VnicId(999), &ok, 0), Err(SwitchError::NoVnic(VnicId(999))));
}

#[test]
fn mac_spoofing_is_dropped_unless_allowed() {
    let (mut s, a, b) = stub();
    let forged = eth(B, X, frame::ETHERTYPE_IPV4, &ipv4_icmp(IP_A, IP_B));
    assert_eq!(dropped(s.from_vnic(a, &forged, 0).unwrap()), DropReason::MacSpoof);
    // Spoofed ARP: right Ethernet source, another station's sender MAC
    // (ARP cache poisoning).
    let poison = eth(MacAddr::BROADCAST, A, frame::ETHERTYPE_ARP, &arp(2, X, IP_A, IP_B));
    assert_eq!(dropped(s.from_vnic(a, &poison, 0).unwrap()), DropReason::MacSpoof);
    assert_eq!(drops_in(&s, a, DropReason::MacSpoof), 2);
    // Allowed: both pass, and X is learned on A's port.
    let mut cfg = s.remove_vnic(a).unwrap();
    cfg.protection.allow_mac_spoofing = true;
    let a = s.add_vnic(cfg, 0).unwrap();
    forwarded(s.from_vnic(a, &forged, 1).unwrap());
    forwarded(s.from_vnic(a, &poison, 1).unwrap());
    let back = eth(X, B, frame::ETHERTYPE_IPV4, &ipv4_icmp(IP_B, IP_A));
    assert_eq!(forwarded(s.from_vnic(b, &back, 2).unwrap()).vnics, vec![a]);
    // Still no stealing of B's own address.
    let as_b = eth(MacAddr::BROADCAST, B, frame::ETHERTYPE_ARP, &arp(1, B, IP_A, IP_B));
    forwarded(s.from_vnic(a, &as_b, 3).unwrap());
    let to_b = eth(B, X, frame::ETHERTYPE_IPV4, &ipv4_icmp(IP_A, IP_B));
    assert_eq!(forwarded(s.from_vnic(a, &to_b, 4).unwrap()).vnics, vec![b]);
}

#[test]
fn ip_spoofing_is_dropped_unless_allowed() {
    let (mut s, a, _b) = stub();
    let other = Ipv4Addr::new(10, 0, 0, 66);
    let forged = eth(B, A, frame::ETHERTYPE_IPV4, &ipv4_icmp(other, IP_B));
    assert_eq!(dropped(s.from_vnic(a, &forged, 0).unwrap()), DropReason::IpSpoof);
    // Spoofed ARP claiming another address (gratuitous ARP takeover).
    let garp = eth(MacAddr::BROADCAST, A, frame::ETHERTYPE_ARP, &arp(2, A, IP_B, IP_B));
    assert_eq!(dropped(s.from_vnic(a, &garp, 0).unwrap()), DropReason::IpSpoof);
    // An ARP probe (sender 0.0.0.0) and a DHCP discover from 0.0.0.0 pass.
    let probe = eth(MacAddr::BROADCAST, A, frame::ETHERTYPE_ARP, &arp(1, A, Ipv4Addr::UNSPECIFIED, IP_A));
    forwarded(s.from_vnic(a, &probe, 0).unwrap());
    let discover = ipv4_udp(Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST, 68, 67, &dhcp_client(A, None));
    forwarded(s.from_vnic(a, &eth(MacAddr::BROADCAST, A, frame::ETHERTYPE_IPV4, &discover), 0).unwrap());
    // ... but 0.0.0.0 to anything else does not.
    let zero_src = eth(B, A, frame::ETHERTYPE_IPV4, &ipv4_icmp(Ipv4Addr::UNSPECIFIED, IP_B));
    assert_eq!(dropped(s.from_vnic(a, &zero_src, 0).unwrap()), DropReason::IpSpoof);
    // IPv6: the link-local from the MAC and :: pass, others do not.
    let ll = ipv6_udp(A.ipv6_link_local(), "ff02::1".parse().unwrap(), 5000, 5000);
    forwarded(s.from_vnic(a, &eth(MacAddr::BROADCAST, A, frame::ETHERTYPE_IPV6, &ll), 0).unwrap());
    let dad = ipv6_udp(Ipv6Addr::UNSPECIFIED, "ff02::1".parse().unwrap(), 5000, 5000);
    forwarded(s.from_vnic(a, &eth(MacAddr::BROADCAST, A, frame::ETHERTYPE_IPV6, &dad), 0).unwrap());
    let v6 = ipv6_udp(B.ipv6_link_local(), "ff02::1".parse().unwrap(), 5000, 5000);
    assert_eq!(
        dropped(s.from_vnic(a, &eth(MacAddr::BROADCAST, A, frame::ETHERTYPE_IPV6, &v6), 0).unwrap()),
        DropReason::IpSpoof
    );
    assert_eq!(drops_in(&s, a, DropReason::IpSpoof), 4);
    // allowed_ips (address and prefix) widen the set.
    let mut cfg = s.remove_vnic(a).unwrap();
    cfg.protection.allowed_ips = vec!["10.0.0.64/30".parse().unwrap(), "fd00::5".parse().unwrap()];
    let a = s.add_vnic(cfg, 0).unwrap();
    forwarded(s.from_vnic(a, &forged, 1).unwrap());
    let outside = eth(B, A, frame::ETHERTYPE_IPV4, &ipv4_icmp(Ipv4Addr::new(10, 0, 0, 68), IP_B));
    assert_eq!(dropped(s.from_vnic(a, &outside, 1).unwrap()), DropReason::IpSpoof);
    let fd = ipv6_udp("fd00::5".parse().unwrap(), "fd00::6".parse().unwrap(), 1, 2);
    forwarded(s.from_vnic(a, &eth(B, A, frame::ETHERTYPE_IPV6, &fd), 1).unwrap());
    // allow_ip_spoofing: anything goes.
    let mut cfg = s.remove_vnic(a).unwrap();
    cfg.protection.allow_ip_spoofing = true;
    let a = s.add_vnic(cfg, 0).unwrap();
    forwarded(s.from_vnic(a, &outside, 2).unwrap());
    forwarded(s.from_vnic(a, &garp, 2).unwrap());
}

#[test]
fn rogue_dhcp_servers_never_leave_their_vnic() {
    let mut s = Switch::new(SwitchConfig { uplink: true, ..SwitchConfig::default() });
    let a = s.add_vnic(vnic(A, IP_A), 0).unwrap();
    let _b = s.add_vnic(vnic(B, IP_B), 0).unwrap();
    let offer = ipv4_udp(IP_A, Ipv4Addr::BROADCAST, 67, 68, &[2; 300]);
    let offer = eth(MacAddr::BROADCAST, A, frame::ETHERTYPE_IPV4, &offer);
    assert_eq!(dropped(s.from_vnic(a, &offer, 0).unwrap()), DropReason::DhcpSpoof);
    let adv6 = ipv6_udp(A.ipv6_link_local(), "ff02::1:2".parse().unwrap(), 547, 546);
    let adv6 = eth(MacAddr([0x33, 0x33, 0, 1, 0, 2]), A, frame::ETHERTYPE_IPV6, &adv6);
    assert_eq!(dropped(s.from_vnic(a, &adv6, 0).unwrap()), DropReason::DhcpSpoof);
    // A client asking for a lease in another station's name (starvation).
    let steal = ipv4_udp(Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST, 68, 67, &dhcp_client(X, None));
    let steal = eth(MacAddr::BROADCAST, A, frame::ETHERTYPE_IPV4, &steal);
    assert_eq!(dropped(s.from_vnic(a, &steal, 0).unwrap()), DropReason::DhcpSpoof);
    let own_mac = [&[1u8][..], &A.0].concat();
    let other_cid = ipv4_udp(Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST, 68, 67, &dhcp_client(A, Some(&[1, 2, 3])));
    let other_cid = eth(MacAddr::BROADCAST, A, frame::ETHERTYPE_IPV4, &other_cid);
    assert_eq!(dropped(s.from_vnic(a, &other_cid, 0).unwrap()), DropReason::DhcpSpoof);
    let good = ipv4_udp(Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST, 68, 67, &dhcp_client(A, Some(&own_mac)));
    forwarded(s.from_vnic(a, &eth(MacAddr::BROADCAST, A, frame::ETHERTYPE_IPV4, &good), 0).unwrap());
    // A DHCP message cut short, and an option running past the end.
    let short = ipv4_udp(Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST, 68, 67, &[1; 100]);
    let short = eth(MacAddr::BROADCAST, A, frame::ETHERTYPE_IPV4, &short);
    assert_eq!(dropped(s.from_vnic(a, &short, 0).unwrap()), DropReason::Malformed);
    let mut bad_opt = dhcp_client(A, None);
    bad_opt.truncate(bad_opt.len() - 1);
    bad_opt.extend_from_slice(&[61, 200, 1]);
    let bad_opt = ipv4_udp(Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST, 68, 67, &bad_opt);
    let bad_opt = eth(MacAddr::BROADCAST, A, frame::ETHERTYPE_IPV4, &bad_opt);
    assert_eq!(dropped(s.from_vnic(a, &bad_opt, 0).unwrap()), DropReason::Malformed);
    assert_eq!(drops_in(&s, a, DropReason::DhcpSpoof), 4);
    assert_eq!(s.port_stats(Port::Uplink).unwrap().out_frames, 1, "only the good request left");
    // allowed_dhcp_cids, then allow_dhcp_spoofing.
    let mut cfg = s.remove_vnic(a).unwrap();
    cfg.protection.allowed_dhcp_cids = vec![vec![1, 2, 3]];
    let a = s.add_vnic(cfg, 0).unwrap();
    forwarded(s.from_vnic(a, &other_cid, 1).unwrap());
    assert_eq!(dropped(s.from_vnic(a, &offer, 1).unwrap()), DropReason::DhcpSpoof);
    let mut cfg = s.remove_vnic(a).unwrap();
    cfg.protection.allow_dhcp_spoofing = true;
    let a = s.add_vnic(cfg, 0).unwrap();
    assert!(forwarded(s.from_vnic(a, &offer, 2).unwrap()).uplink);
}

#[test]
fn restricted_traffic_is_only_ipv4_ipv6_and_arp() {
    let (mut s, a, b) = stub();
    for ethertype in [0x88cc /* LLDP */, 0x8863 /* PPPoE */, 0x0042 /* 802.3 length */, 0x9000] {
        let f = eth(B, A, ethertype, &[0; 46]);
        assert_eq!(dropped(s.from_vnic(a, &f, 0).unwrap()), DropReason::Restricted, "{ethertype:#x}");
    }
    let mut cfg = s.remove_vnic(a).unwrap();
    cfg.protection.allow_restricted_traffic = true;
    let a = s.add_vnic(cfg, 0).unwrap();
    assert_eq!(forwarded(s.from_vnic(a, &eth(B, A, 0x88cc, &[0; 46]), 1).unwrap()).vnics, vec![b]);
}

#[test]
fn malformed_packets_are_dropped_only_where_protection_must_look() {
    let (mut s, a, _b) = stub();
    let mut cases: Vec<Vec<u8>> = vec![
        eth(B, A, frame::ETHERTYPE_ARP, &[0, 1, 8, 0, 6, 4]),              // ARP cut short
        eth(B, A, frame::ETHERTYPE_ARP, &arp(1, A, IP_A, IP_B)[..27]),      // one byte short
        eth(B, A, frame::ETHERTYPE_IPV4, &[0x45; 19]),                     // IPv4 cut short
        eth(B, A, frame::ETHERTYPE_IPV6, &[0x60; 39]),                     // IPv6 cut short
    ];
    let mut ihl = ipv4_icmp(IP_A, IP_B);
    ihl[0] = 0x44; // header of four words
    cases.push(eth(B, A, frame::ETHERTYPE_IPV4, &ihl));
    let mut v = ipv4_icmp(IP_A, IP_B);
    v[0] = 0x65; // version 6 in an IPv4 frame
    cases.push(eth(B, A, frame::ETHERTYPE_IPV4, &v));
    let mut long = ipv4_icmp(IP_A, IP_B);
    long[2..4].copy_from_slice(&1000u16.to_be_bytes()); // total length past the frame
    cases.push(eth(B, A, frame::ETHERTYPE_IPV4, &long));
    let mut udp_len = ipv4_udp(IP_A, IP_B, 1, 2, &[0; 4]);
    udp_len[24..26].copy_from_slice(&500u16.to_be_bytes()); // UDP length past the packet
    cases.push(eth(B, A, frame::ETHERTYPE_IPV4, &udp_len));
    let mut v6len = ipv6_udp(A.ipv6_link_local(), B.ipv6_link_local(), 1, 2);
    v6len[4..6].copy_from_slice(&900u16.to_be_bytes());
    cases.push(eth(B, A, frame::ETHERTYPE_IPV6, &v6len));
    let mut arp_hw = arp(1, A, IP_A, IP_B);
    arp_hw[4] = 8; // 8-byte hardware addresses
    cases.push(eth(B, A, frame::ETHERTYPE_ARP, &arp_hw));
    for (i, f) in cases.iter().enumerate() {
        assert_eq!(dropped(s.from_vnic(a, f, 0).unwrap()), DropReason::Malformed, "case {i}");
    }
    assert_eq!(drops_in(&s, a, DropReason::Malformed), cases.len() as u64);
    // With every protection off, the switch carries them as Ethernet frames.
    let mut cfg = s.remove_vnic(a).unwrap();
    cfg.protection = Protection {
        allow_mac_spoofing: true,
        allow_ip_spoofing: true,
        allow_dhcp_spoofing: true,
        allow_restricted_traffic: true,
        ..Protection::default()
    };
    let a = s.add_vnic(cfg, 0).unwrap();
    for f in &cases {
        forwarded(s.from_vnic(a, f, 1).unwrap());
    }
}

#[test]
fn ipv6_extension_headers_do_not_hide_a_dhcpv6_server() {
    let (mut s, a, _b) = stub();
    // Hop-by-hop options (8 bytes), then UDP from 547.
    let mut p = ipv6_udp(A.ipv6_link_local(), "ff02::1:2".parse().unwrap(), 547, 546);
    p[6] = 0;
    let udp = p.split_off(40);
    p.extend_from_slice(&[17, 0, 0, 0, 0, 0, 0, 0]);
    p.extend_from_slice(&udp);
    p[4..6].copy_from_slice(&16u16.to_be_bytes());
    let f = eth(MacAddr([0x33, 0x33, 0, 1, 0, 2]), A, frame::ETHERTYPE_IPV6, &p);
    assert_eq!(dropped(s.from_vnic(a, &f, 0).unwrap()), DropReason::DhcpSpoof);
    // Nine chained destination-option headers: refused, not walked forever.
    let mut q = ipv6_udp(A.ipv6_link_local(), "ff02::1:2".parse().unwrap(), 547, 546);
    q[6] = 60;
    let udp = q.split_off(40);
    for i in 0..9 {
        q.extend_from_slice(&[if i == 8 { 17 } else { 60 }, 0, 0, 0, 0, 0, 0, 0]);
    }
    q.extend_from_slice(&udp);
    q[4..6].copy_from_slice(&(72u16 + 8).to_be_bytes());
    let f = eth(MacAddr([0x33, 0x33, 0, 1, 0, 2]), A, frame::ETHERTYPE_IPV6, &q);
    assert_eq!(dropped(s.from_vnic(a, &f, 0).unwrap()), DropReason::Malformed);
}

#[test]
fn the_token_bucket_holds_the_rate() {
    // 20 Mbit/s = 2.5 MB/s; a sender offering full frames as fast as the
    // bucket allows for 10 simulated seconds.
    let mut b = TokenBucket::for_mbit(20, 1514, 0);
    let (mut now, mut sent) = (0u64, 0u64);
    while now < 10 * SEC {
        match b.take(1514, now) {
            Ok(()) => sent += 1514,
            Err(at) => {
                assert!(at > now, "retry time in the future");
                now = at;
            }
        }
    }
    let rate = sent as f64 / 10.0;
    assert!((rate - 2_500_000.0).abs() / 2_500_000.0 < 0.01, "got {rate} B/s");
    // A clock that goes back neither refills nor panics; huge gaps saturate.
    let mut b = TokenBucket::new(1000, 1000, 5 * SEC);
    assert!(b.take(1000, 5 * SEC).is_ok());
    assert!(b.take(1, 0).is_err());
    assert!(b.take(1000, u64::MAX).is_ok());
    assert!(b.take(2000, u64::MAX).is_err());
    // A frame larger than the burst passes on a full bucket.
    let mut b = TokenBucket::new(1000, 100, 0);
    assert!(b.take(1500, 0).is_ok());
    assert_eq!(b.take(1, 0), Err(1_000_000));
}

#[test]
fn maxbw_throttles_the_sender_and_drops_over_the_receivers_cap() {
    let mut s = Switch::new(SwitchConfig::default());
    let mut ca = vnic(A, IP_A);
    ca.maxbw_mbit = Some(20);
    let a = s.add_vnic(ca, 0).unwrap();
    let mut cb = vnic(B, IP_B);
    cb.maxbw_mbit = Some(10);
    let b = s.add_vnic(cb, 0).unwrap();
    let frame = eth(B, A, frame::ETHERTYPE_IPV4, &ipv4_udp(IP_A, IP_B, 9, 9, &[0; 1472]));
    let (mut now, mut throttles) = (0u64, 0u64);
    while now < 4 * SEC {
        match s.from_vnic(a, &frame, now).unwrap() {
            Outcome::Forward(_) => {}
            Outcome::Throttled { retry_at_ns } => {
                throttles += 1;
                now = retry_at_ns;
            }
            Outcome::Dropped(r) => panic!("dropped: {r}"),
        }
    }
    let sa = *s.port_stats(Port::Vnic(a)).unwrap();
    let sb = *s.port_stats(Port::Vnic(b)).unwrap();
    let a_rate = sa.in_bytes as f64 / 4.0;
    let b_rate = sb.out_bytes as f64 / 4.0;
    assert!((a_rate - 2_500_000.0).abs() < 2_500_000.0 * 0.02, "A sent {a_rate} B/s");
    assert!((b_rate - 1_250_000.0).abs() < 1_250_000.0 * 0.02, "B received {b_rate} B/s");
    assert_eq!(sa.throttled, throttles);
    assert_eq!(sa.in_drops.total(), 0, "throttling is not dropping");
    assert!(sb.out_drops.get(DropReason::RateLimited) > 0);
    assert_eq!(sb.out_frames + sb.out_drops.get(DropReason::RateLimited), sa.in_frames);
}

#[test]
fn bad_vnic_descriptions_are_refused_by_name() {
    let mut s = Switch::new(SwitchConfig { max_vnics: 2, ..SwitchConfig::default() });
    let e = s.add_vnic(VnicConfig::new(MacAddr::BROADCAST), 0).unwrap_err();
    assert_eq!(alloc::format!("{e}"), "property \"mac\": ff:ff:ff:ff:ff:ff is not a unicast station address");
    assert_eq!(s.add_vnic(VnicConfig::new(MacAddr([0; 6])), 0), Err(SwitchError::BadMac(MacAddr([0; 6]))));
    let mut c = VnicConfig::new(A);
    c.vlan_id = 4095;
    assert_eq!(alloc::format!("{}", s.add_vnic(c, 0).unwrap_err()), "property \"vlan_id\": must be 0 to 4094, got 4095");
    let mut c = VnicConfig::new(A);
    c.maxbw_mbit = Some(0);
    assert_eq!(s.add_vnic(c, 0), Err(SwitchError::BadMaxbw));
    s.add_vnic(VnicConfig::new(A), 0).unwrap();
    s.add_vnic(VnicConfig::new(B), 0).unwrap();
    assert_eq!(s.add_vnic(VnicConfig::new(C), 0), Err(SwitchError::Full));
    assert_eq!(s.remove_vnic(VnicId(77)), Err(SwitchError::NoVnic(VnicId(77))));
}

#[test]
fn removing_a_vnic_forgets_what_it_taught() {
    let mut s = Switch::new(SwitchConfig::default());
    let mut ca = vnic(A, IP_A);
    ca.protection.allow_mac_spoofing = true;
    let a = s.add_vnic(ca, 0).unwrap();
    let b = s.add_vnic(vnic(B, IP_B), 0).unwrap();
    forwarded(s.from_vnic(a, &eth(B, X, frame::ETHERTYPE_IPV4, &ipv4_icmp(IP_A, IP_B)), 0).unwrap());
    assert_eq!(s.fdb_len(), 3);
    s.remove_vnic(a).unwrap();
    assert_eq!(s.fdb_len(), 1);
    let f = forwarded(s.from_vnic(b, &eth(X, B, frame::ETHERTYPE_IPV4, &ipv4_icmp(IP_B, IP_A)), 1).unwrap());
    assert_eq!(f.vnics, vec![]);
}

#[test]
fn parsing_and_text_forms() {
    assert_eq!("02:00:00:00:00:0a".parse::<MacAddr>(), Ok(A));
    assert_eq!("02:0:0:0:0:A".parse::<MacAddr>(), Ok(A));
    for bad in ["", "02:00:00:00:00", "02:00:00:00:00:0a:0b", "02:00:00:00:00:0g", "002:00:00:00:00:0a", "02::00:00:00:0a"] {
        assert!(bad.parse::<MacAddr>().is_err(), "{bad}");
    }
    assert_eq!(alloc::format!("{A}"), "02:00:00:00:00:0a");
    assert_eq!(A.ipv6_link_local(), "fe80::ff:fe00:a".parse::<Ipv6Addr>().unwrap());
    let n: IpNet = "10.0.0.0/8".parse().unwrap();
    assert!(n.contains(IpAddr::V4(Ipv4Addr::new(10, 200, 1, 1))));
    assert!(!n.contains(IpAddr::V4(Ipv4Addr::new(11, 0, 0, 1))));
    assert!(!n.contains(IpAddr::V6(Ipv6Addr::LOCALHOST)));
    assert!("0.0.0.0/0".parse::<IpNet>().unwrap().contains(IpAddr::V4(IP_A)));
    assert!("::/0".parse::<IpNet>().unwrap().contains(IpAddr::V6(Ipv6Addr::LOCALHOST)));
    for bad in ["10.0.0.0/33", "fd00::/129", "10.0.0/8", "10.0.0.1/x", "dhcp"] {
        assert!(bad.parse::<IpNet>().is_err(), "{bad}");
    }
    assert_eq!(Ethernet::parse(&[0; 13], 1500), Err(FrameError::Runt));
    assert_eq!(DropReason::ALL.iter().map(|r| r.name()).collect::<Vec<_>>().len(), 11);
}

/// A fuzz-style loop: random bytes and random mutations of valid frames
/// into both kinds of port, under every protection setting. Nothing may
/// panic, and the counters must add up.
#[test]
fn random_frames_never_panic_and_counters_add_up() {
    let mut seed = 0x5eed_2026_u64;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut s = Switch::new(SwitchConfig { uplink: true, ..SwitchConfig::default() });
    // A twin fed the same frames through `route_from_vnic` (the fabric's
    // way, no copy): it must decide and count exactly as `from_vnic`.
    let mut twin = Switch::new(SwitchConfig { uplink: true, ..SwitchConfig::default() });
    let mut to = vec![VnicId(99)];
    let mut ids = vec![];
    for i in 0..4u8 {
        let mut c = vnic(MacAddr([2, 0, 0, 0, 1, i]), Ipv4Addr::new(10, 0, 1, i));
        c.protection.allow_mac_spoofing = i & 1 != 0;
        c.protection.allow_ip_spoofing = i & 2 != 0;
        c.vlan_id = u16::from(i % 2) * 9;
        if i == 3 {
            c.maxbw_mbit = Some(1);
        }
        twin.add_vnic(c.clone(), 0).unwrap();
        ids.push(s.add_vnic(c, 0).unwrap());
    }
    let templates = [
        eth(MacAddr::BROADCAST, MacAddr([2, 0, 0, 0, 1, 0]), frame::ETHERTYPE_ARP, &arp(1, MacAddr([2, 0, 0, 0, 1, 0]), IP_A, IP_B)),
        eth(B, MacAddr([2, 0, 0, 0, 1, 1]), frame::ETHERTYPE_IPV4, &ipv4_udp(IP_A, IP_B, 68, 67, &dhcp_client(A, Some(&[1, 2])))),
        eth(B, MacAddr([2, 0, 0, 0, 1, 2]), frame::ETHERTYPE_IPV6, &ipv6_udp(A.ipv6_link_local(), B.ipv6_link_local(), 547, 546)),
        frame::tag(&eth(B, A, frame::ETHERTYPE_IPV4, &ipv4_icmp(IP_A, IP_B)), 9),
    ];
    let (mut offered, mut dropped_n) = (0u64, 0u64);
    for round in 0..20_000u64 {
        let r = rnd();
        let mut f = if r % 4 == 0 {
            (0..(rnd() % 1600) as usize).map(|_| rnd() as u8).collect::<Vec<u8>>()
        } else {
            templates[(r >> 8) as usize % templates.len()].clone()
        };
        for _ in 0..rnd() % 6 {
            if f.is_empty() {
                break;
            }
            let at = (rnd() as usize) % f.len();
            match rnd() % 3 {
                0 => f[at] = rnd() as u8,
                1 => f.truncate(at),
                _ => f.insert(at, rnd() as u8),
            }
        }
        if r & 0x10 != 0 {
            let id = ids[(r >> 20) as usize % ids.len()];
            offered += 1;
            let out = s.from_vnic(id, &f, round).unwrap();
            let route = twin.route_from_vnic(id, &f, round, &mut to).unwrap();
            match (&out, route) {
                (Outcome::Forward(fw), Route::Forward { vlan, uplink }) => {
                    assert_eq!((fw.vlan, fw.uplink, &fw.vnics, &fw.frame), (vlan, uplink, &to, &f));
                }
                (Outcome::Dropped(a), Route::Dropped(b)) => assert_eq!(*a, b),
                (Outcome::Throttled { retry_at_ns: a }, Route::Throttled { retry_at_ns: b }) => assert_eq!(*a, b),
                other => panic!("from_vnic and route_from_vnic differ: {other:?}"),
            }
            if !matches!(route, Route::Forward { .. }) {
                assert!(to.is_empty(), "no receivers listed for a frame that did not go");
            }
            if let Outcome::Dropped(_) = out {
                dropped_n += 1;
            }
        } else {
            let _ = s.from_uplink(&f, round);
            let _ = twin.from_uplink(&f, round);
        }
    }
    for port in ids.iter().map(|id| Port::Vnic(*id)).chain([Port::Uplink]) {
        assert_eq!(s.port_stats(port), twin.port_stats(port), "{port:?}");
    }
    let (mut taken, mut counted) = (0, 0);
    for id in &ids {
        let st = s.port_stats(Port::Vnic(*id)).unwrap();
        taken += st.in_frames;
        counted += st.in_drops.total();
    }
    assert_eq!(counted, dropped_n);
    // Throttled frames are neither taken nor dropped (offered again later).
    let throttled = s.port_stats(Port::Vnic(ids[3])).unwrap().throttled;
    assert_eq!(taken + counted + throttled, offered);
    assert!(dropped_n > 0 && taken > 0);
}

/// The fuzz target's body (`fuzzing::frames`, run open-ended by
/// `netd/fuzz`'s `switch_frames`) on random inputs and on inputs made of
/// the valid frames' bytes, cut and bent.
#[test]
fn the_fuzz_target_s_body_holds_on_random_inputs() {
    let mut seed = 0xf1a3_2026_u64;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let valid = [
        eth(MacAddr::BROADCAST, MacAddr([2, 0, 0, 0, 1, 0]), frame::ETHERTYPE_ARP, &arp(1, MacAddr([2, 0, 0, 0, 1, 0]), IP_A, IP_B)),
        frame::tag(&eth(B, MacAddr([2, 0, 0, 0, 1, 1]), frame::ETHERTYPE_IPV4, &ipv4_icmp(IP_A, IP_B)), 9),
    ];
    for _ in 0..300 {
        let mut input = Vec::new();
        for _ in 0..rnd() % 40 {
            let f: Vec<u8> = if rnd() % 2 == 0 {
                (0..rnd() % 1600).map(|_| rnd() as u8).collect()
            } else {
                let mut f = valid[(rnd() % 2) as usize].clone();
                let at = (rnd() as usize) % f.len();
                f[at] ^= rnd() as u8;
                f
            };
            input.push((rnd() % 6) as u8);
            input.extend_from_slice(&(f.len() as u16).to_le_bytes());
            input.extend_from_slice(&f);
        }
        crate::fuzzing::frames(&input);
    }
    crate::fuzzing::frames(&[]);
    crate::fuzzing::frames(&[0, 0xff, 0xff, 1, 2]);
}
