//! Frames per second through the switch alone, on the host: two fully
//! protected VNICs on an etherstub exchanging full-size IPv4 frames, and
//! 64-byte ones, through `from_vnic` (a copy of each frame, as the uplink
//! path makes) and through `route_from_vnic` (no copy: netd's fabric
//! path). Prints `bench <name> <value> <unit>`. Run with
//! `cargo run --release -p netd-switch --example switch_bench`.

use netd_switch::frame::MacAddr;
use netd_switch::{Outcome, Route, Switch, SwitchConfig, VnicConfig};
use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

fn frame(dst: MacAddr, src: MacAddr, ip_src: Ipv4Addr, ip_dst: Ipv4Addr, len: usize) -> Vec<u8> {
    let mut f = Vec::with_capacity(len);
    f.extend_from_slice(&dst.0);
    f.extend_from_slice(&src.0);
    f.extend_from_slice(&0x0800u16.to_be_bytes());
    let total = (len - 14) as u16;
    f.extend_from_slice(&[0x45, 0]);
    f.extend_from_slice(&total.to_be_bytes());
    f.extend_from_slice(&[0, 0, 0, 0, 64, 6, 0, 0]);
    f.extend_from_slice(&ip_src.octets());
    f.extend_from_slice(&ip_dst.octets());
    f.resize(len, 0);
    f
}

fn main() {
    let (ma, mb) = (MacAddr([2, 0, 0, 0, 0, 1]), MacAddr([2, 0, 0, 0, 0, 2]));
    let (ia, ib) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
    let runs = [
        ("switch_frames_per_s_1514", 1514, false),
        ("switch_frames_per_s_64", 64, false),
        ("switch_route_frames_per_s_1514", 1514, true),
        ("switch_route_frames_per_s_64", 64, true),
    ];
    for (name, len, route) in runs {
        let mut s = Switch::new(SwitchConfig::default());
        let mut ca = VnicConfig::new(ma);
        ca.protection.ip = Some(IpAddr::V4(ia));
        let mut cb = VnicConfig::new(mb);
        cb.protection.ip = Some(IpAddr::V4(ib));
        let a = s.add_vnic(ca, 0).unwrap();
        let b = s.add_vnic(cb, 0).unwrap();
        let fa = frame(mb, ma, ia, ib, len);
        let fb = frame(ma, mb, ib, ia, len);
        let n = 1_000_000u64;
        let mut to = Vec::new();
        let start = Instant::now();
        let mut delivered = 0u64;
        for i in 0..n {
            let (id, f) = if i % 2 == 0 { (a, &fa) } else { (b, &fb) };
            if route {
                if let Ok(Route::Forward { .. }) = s.route_from_vnic(id, f, i, &mut to) {
                    delivered += to.len() as u64;
                }
            } else if let Ok(Outcome::Forward(f)) = s.from_vnic(id, f, i) {
                delivered += f.vnics.len() as u64;
            }
        }
        let secs = start.elapsed().as_secs_f64();
        assert_eq!(delivered, n, "every frame reaches its peer");
        println!("bench {name} {:.0} frames/s", n as f64 / secs);
    }
}
