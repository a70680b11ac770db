//! The body of the `switch_frames` fuzz target (`netd/fuzz`): frames from
//! fuzzer bytes into a switch with an uplink and four VNICs under every
//! link-protection setting (one with a VLAN, one capped), each frame also
//! routed by a twin through `route_from_vnic`. Nothing may panic, the twins
//! must decide and count alike, and every frame a VNIC offered is taken,
//! dropped with a reason or throttled. The host tests run it on random
//! inputs (`cargo test -p netd-switch`).
use crate::{MacAddr, Outcome, Port, Route, Switch, SwitchConfig, VnicConfig, VnicId};
use alloc::vec;
use alloc::vec::Vec;
use core::net::{IpAddr, Ipv4Addr};

/// Feeds `input` to a fresh switch: each frame is a header of three bytes
/// (port: `0..4` a VNIC, else the uplink; length, little-endian u16, cut
/// to what is left) and that many bytes; the clock moves 1 ms a frame.
pub fn frames(input: &[u8]) {
    let config = SwitchConfig { uplink: true, ..SwitchConfig::default() };
    let (mut s, mut twin) = (Switch::new(config), Switch::new(config));
    let mut ids = vec![];
    for i in 0..4u8 {
        let mut c = VnicConfig::new(MacAddr([2, 0, 0, 0, 1, i]));
        c.protection.ip = Some(IpAddr::V4(Ipv4Addr::new(10, 0, 1, i)));
        c.protection.allow_mac_spoofing = i & 1 != 0;
        c.protection.allow_ip_spoofing = i & 2 != 0;
        c.vlan_id = u16::from(i % 2) * 9;
        if i == 3 {
            c.maxbw_mbit = Some(1);
        }
        twin.add_vnic(c.clone(), 0).expect("a valid VNIC");
        ids.push(s.add_vnic(c, 0).expect("a valid VNIC"));
    }
    let mut to: Vec<VnicId> = Vec::new();
    let (mut offered, mut dropped) = (0u64, 0u64);
    let (mut rest, mut now) = (input, 0u64);
    while rest.len() >= 3 {
        let port = rest[0];
        let len = usize::from(u16::from_le_bytes([rest[1], rest[2]])).min(rest.len() - 3);
        let frame = &rest[3..3 + len];
        rest = &rest[3 + len..];
        now += 1_000_000;
        let Some(&id) = ids.get(usize::from(port)) else {
            assert_eq!(s.from_uplink(frame, now), twin.from_uplink(frame, now));
            continue;
        };
        offered += 1;
        let out = s.from_vnic(id, frame, now).expect("the VNIC exists");
        let route = twin.route_from_vnic(id, frame, now, &mut to).expect("the VNIC exists");
        match (&out, route) {
            (Outcome::Forward(fw), Route::Forward { vlan, uplink }) => {
                assert_eq!((fw.vlan, fw.uplink, &fw.vnics, &fw.frame[..]), (vlan, uplink, &to, frame));
            }
            (Outcome::Dropped(a), Route::Dropped(b)) => assert_eq!(*a, b),
            (Outcome::Throttled { retry_at_ns: a }, Route::Throttled { retry_at_ns: b }) => assert_eq!(*a, b),
            other => panic!("from_vnic and route_from_vnic differ: {other:?}"),
        }
        if !matches!(route, Route::Forward { .. }) {
            assert!(to.is_empty(), "receivers listed for a frame that did not go");
        }
        if let Outcome::Dropped(_) = out {
            dropped += 1;
        }
    }
    let (mut taken, mut counted, mut throttled) = (0, 0, 0);
    for &id in &ids {
        let st = s.port_stats(Port::Vnic(id)).expect("the VNIC exists");
        assert_eq!(Some(st), twin.port_stats(Port::Vnic(id)));
        taken += st.in_frames;
        counted += st.in_drops.total();
        throttled += st.throttled;
    }
    assert_eq!(s.port_stats(Port::Uplink), twin.port_stats(Port::Uplink));
    assert_eq!(counted, dropped, "every drop counted once, with its reason");
    assert_eq!(taken + counted + throttled, offered, "every offered frame taken, dropped or throttled");
}
