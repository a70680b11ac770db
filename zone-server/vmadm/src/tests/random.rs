//! Random payloads built from good and bad values of every property:
//! validation never panics, and every payload it accepts becomes a VM
//! description vmm-server's own parser accepts.

use super::*;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    /// Mostly the first (good) value, sometimes any.
    fn pick(&mut self, vs: &[Value]) -> Value {
        if self.below(5) == 0 { vs[self.below(vs.len())].clone() } else { vs[0].clone() }
    }
}

fn top_candidates() -> Vec<(&'static str, Vec<Value>)> {
    vec![
        ("brand", vec![json!("bhyve"), json!("kvm"), json!("bhyve"), json!("lx"), json!(1)]),
        ("alias", vec![json!("web"), json!(""), json!("a/b"), json!("x".repeat(300)), json!(5)]),
        (
            "ram",
            vec![json!(64), json!(256), json!("1024"), json!(63), json!(1 << 20), json!((1 << 20) + 1), json!("x")],
        ),
        ("vcpus", vec![json!(1), json!(255), json!(256), json!(0), json!("4")]),
        ("max_physical_memory", vec![json!(64), json!(4096), json!(2_000_000), json!(-5)]),
        ("cpu_cap", vec![json!(0), json!(100), json!(25500), json!(25501)]),
        ("cpu_shares", vec![json!(0), json!(1), json!(100), json!(4_000_000_000u64)]),
        ("quota", vec![json!(0), json!(10), json!("20"), json!(-1)]),
        ("autoboot", vec![json!(true), json!("false"), json!(1), json!("maybe")]),
        ("customer_metadata", vec![json!({}), json!({"a": "b"}), json!({"a": 1}), json!({"": "x"})]),
        ("kernel", vec![json!("bzImage"), json!(""), json!("../k"), json!(null)]),
        ("initrd", vec![json!("initrd.img"), json!(""), json!(null)]),
        ("cmdline", vec![json!("console=ttyS0"), json!("a".repeat(3000)), json!(null)]),
        ("bootrom", vec![json!("bios"), json!("uefi"), json!("/x"), json!(null)]),
        ("hostname", vec![json!("h1"), json!("-bad"), json!(null)]),
        ("tags", vec![json!({"a": true}), json!({"a": {"b": 1}}), json!(null)]),
        ("uuid", vec![json!("930896af-bf8c-48d4-885c-6573a94b1853"), json!("nope"), json!(null)]),
    ]
}

fn disk(r: &mut Rng) -> Value {
    let mut d = Map::new();
    let cands: Vec<(&str, Vec<Value>)> = vec![
        ("boot", vec![json!(true), json!(false), json!("true")]),
        ("size", vec![json!(1), json!(1024), json!(0), json!(1i64 << 40), json!("10")]),
        ("image_uuid", vec![json!("462d1d03-8457-e134-a408-cf9ea2b9be96"), json!("x")]),
        ("model", vec![json!("virtio"), json!("ahci"), json!("floppy")]),
        ("media", vec![json!("disk"), json!("cdrom")]),
        ("block_size", vec![json!(512), json!(4096), json!(131072), json!(1000)]),
        ("path", vec![json!("disk.img"), json!(""), json!("../x")]),
        ("nocreate", vec![json!(true)]),
        ("compression", vec![json!("lz4"), json!("gzip-9"), json!("gzip-10")]),
    ];
    for (k, vs) in cands {
        if r.below(3) == 0 {
            d.insert(k.into(), r.pick(&vs));
        }
    }
    Value::Object(d)
}

fn nic(r: &mut Rng) -> Value {
    let mut n = Map::new();
    let cands: Vec<(&str, Vec<Value>)> = vec![
        ("nic_tag", vec![json!("admin"), json!("external"), json!("bad tag")]),
        ("ip", vec![json!("10.0.0.5"), json!("dhcp"), json!("addrconf"), json!("300.1.1.1")]),
        ("netmask", vec![json!("255.255.255.0"), json!("255.0.255.0"), json!("0.0.0.0")]),
        (
            "ips",
            vec![json!(["10.0.0.5/24"]), json!(["fd00::1/64"]), json!(["dhcp", "addrconf"]), json!(["10.0.0.5/33"])],
        ),
        ("gateway", vec![json!("10.0.0.1"), json!("x")]),
        ("gateways", vec![json!(["10.0.0.1"]), json!([])]),
        ("mac", vec![json!("90:b8:d0:00:00:01"), json!("90:b8:d0:00:00:02"), json!("ff:ff:ff:ff:ff:ff")]),
        ("vlan_id", vec![json!(0), json!(4094), json!(4095)]),
        ("mtu", vec![json!(576), json!(9000), json!(1500), json!(9001)]),
        ("primary", vec![json!(true), json!(false)]),
        ("model", vec![json!("virtio"), json!("e1000")]),
        ("allow_ip_spoofing", vec![json!(true), json!("1")]),
    ];
    for (k, vs) in cands {
        if r.below(3) == 0 {
            n.insert(k.into(), r.pick(&vs));
        }
    }
    Value::Object(n)
}

#[test]
fn every_accepted_random_payload_is_a_vm_vmm_server_accepts() {
    use vmm_server::config::VmConfig;
    let mut r = Rng(0x9e37_79b9_7f4a_7c15);
    let (mut accepted, mut refused) = (0, 0);
    for _ in 0..3000 {
        let mut p = Map::new();
        for (k, vs) in top_candidates() {
            if k == "brand" || r.below(2) == 0 {
                let v = r.pick(&vs);
                if !v.is_null() {
                    p.insert(k.into(), v);
                }
            }
        }
        if r.below(2) == 0 {
            let most = if r.below(8) == 0 { 6 } else { 3 };
            let n = r.below(most);
            p.insert("disks".into(), Value::Array((0..n).map(|_| disk(&mut r)).collect()));
        }
        if r.below(2) == 0 {
            let most = if r.below(8) == 0 { 10 } else { 3 };
            let n = r.below(most);
            p.insert("nics".into(), Value::Array((0..n).map(|_| nic(&mut r)).collect()));
        }
        let c = validate::check_create(&p);
        if !c.problems.only_bad_properties() {
            refused += 1;
            assert!(!c.problems.reasons.is_empty());
            continue;
        }
        accepted += 1;
        let mut props = c.payload;
        validate::create_defaults(&mut props, &mut counter_random());
        let json = crate::vmm::vm_config_json(&props, "44454c4c-3800-1036-8051-b7c04f4e5331");
        if let Err(e) = VmConfig::from_json(&json) {
            panic!("accepted but vmm-server refuses it: {e}\npayload: {}\nvmm: {json}", Value::Object(p));
        }
    }
    assert!(accepted > 100 && refused > 100, "{accepted} accepted, {refused} refused");
}
