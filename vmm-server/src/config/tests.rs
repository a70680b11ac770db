//! Every rule of the VM description, and its error messages.

use super::*;
use crate::devices::XorShift;
use alloc::string::ToString;
use alloc::vec;
use serde_json::json;

const UUID: &str = "0f3b2e7c-5a1d-4c8e-9b6f-2d4e6a8c0b1d";

/// A full, valid description.
fn full() -> Value {
    json!({
        "uuid": UUID,
        "alias": "debian-test",
        "brand": "bhyve",
        "ram": 512,
        "vcpus": 2,
        "max_physical_memory": 1024,
        "cpu_cap": 200,
        "cpu_shares": 100,
        "quota": 10,
        "autoboot": true,
        "customer_metadata": {"user-script": "#!/bin/sh\necho hi"},
        "disks": [
            {"path": "disk.img", "model": "virtio", "boot": true, "media": "disk", "size": 1024,
             "image_uuid": "A0B1C2D3-E4F5-4617-8899-AABBCCDDEEFF", "block_size": 4096},
            {"path": "data.img"}
        ],
        "nics": [
            {"nic_tag": "admin", "mac": "90:b8:d0:c0:ff:ee", "ip": "10.0.0.5", "netmask": "255.255.255.0",
             "gateway": "10.0.0.1", "vlan_id": 12, "model": "virtio", "primary": true, "mtu": 1500,
             "allow_ip_spoofing": false, "allow_mac_spoofing": true},
            {"nic_tag": "external", "ip": "dhcp"}
        ],
        "kernel": "vmlinuz",
        "initrd": "initrd.img",
        "cmdline": "console=ttyS0 panic=-1"
    })
}

/// The smallest valid description.
fn minimal() -> Value {
    json!({"brand": "kvm", "kernel": "bzImage"})
}

fn parse(v: &Value) -> Result<VmConfig, ConfigError> {
    VmConfig::from_json(&v.to_string())
}

/// `base` with `key` set to `value` (or removed for `Value::Null`).
fn with(mut base: Value, key: &str, value: Value) -> Value {
    let map = base.as_object_mut().unwrap();
    if value.is_null() {
        map.remove(key);
    } else {
        map.insert(key.into(), value);
    }
    base
}

fn err(v: Value) -> ConfigError {
    parse(&v).unwrap_err()
}

fn msg(v: Value) -> String {
    err(v).to_string()
}

#[test]
fn full_description_parses() {
    let c = parse(&full()).unwrap();
    assert_eq!(c.uuid.unwrap().to_string(), UUID);
    assert_eq!(c.alias.as_deref(), Some("debian-test"));
    assert_eq!(c.brand, Brand::Bhyve);
    assert_eq!((c.ram_mib, c.vcpus, c.ram_bytes()), (512, 2, 512 << 20));
    assert_eq!(c.max_physical_memory_mib, Some(1024));
    assert_eq!((c.cpu_cap, c.cpu_shares, c.quota_gib, c.autoboot), (Some(200), Some(100), Some(10), Some(true)));
    assert_eq!(c.customer_metadata["user-script"], "#!/bin/sh\necho hi");
    assert_eq!(c.disks.len(), 2);
    let d = &c.disks[0];
    assert_eq!((d.path.as_str(), d.model, d.media, d.boot), ("disk.img", DiskModel::Virtio, DiskMedia::Disk, true));
    assert_eq!((d.size_mib, d.block_size), (Some(1024), Some(4096)));
    assert_eq!(d.image_uuid.unwrap().to_string(), "a0b1c2d3-e4f5-4617-8899-aabbccddeeff");
    assert_eq!(
        c.disks[1],
        DiskConfig {
            path: "data.img".into(),
            model: DiskModel::Virtio,
            media: DiskMedia::Disk,
            boot: false,
            size_mib: None,
            image_uuid: None,
            block_size: None,
        }
    );
    let n = &c.nics[0];
    assert_eq!(n.nic_tag, "admin");
    assert_eq!(n.mac.unwrap().to_string(), "90:b8:d0:c0:ff:ee");
    assert_eq!(n.ip, Some(NicIp::Static(Ipv4Addr::new(10, 0, 0, 5))));
    assert_eq!(n.netmask, Some(Ipv4Addr::new(255, 255, 255, 0)));
    assert_eq!(n.gateway, Some(Ipv4Addr::new(10, 0, 0, 1)));
    assert_eq!((n.vlan_id, n.model, n.primary, n.mtu), (12, NicModel::Virtio, true, Some(1500)));
    assert!(!n.allow_ip_spoofing && n.allow_mac_spoofing);
    assert_eq!(c.nics[1].ip, Some(NicIp::Dhcp));
    assert_eq!((c.kernel.as_str(), c.initrd.as_deref()), ("vmlinuz", Some("initrd.img")));
    assert_eq!(c.cmdline, "console=ttyS0 panic=-1");
}

#[test]
fn defaults_follow_smartos() {
    let c = parse(&minimal()).unwrap();
    assert_eq!(c.brand, Brand::Kvm);
    assert_eq!((c.ram_mib, c.vcpus), (DEFAULT_RAM_MIB, 1));
    assert_eq!((c.uuid, c.alias.as_ref(), c.initrd.as_ref()), (None, None, None));
    assert!(c.disks.is_empty() && c.nics.is_empty() && c.customer_metadata.is_empty());
    assert_eq!(c.cmdline, "");
    assert_eq!(c.check_supported(), Ok(()));
}

#[test]
fn virtio_nics_are_supported_other_models_and_mtus_are_named() {
    let c = parse(&full()).unwrap();
    assert_eq!(c.check_supported(), Ok(()));
    let e1000 = parse(&with(full(), "nics", json!([{"nic_tag": "admin"}, {"nic_tag": "admin", "model": "e1000"}]))).unwrap();
    let e = e1000.check_supported().unwrap_err();
    assert_eq!(e.property(), Some("nics[1].model"));
    assert_eq!(e.to_string(), "vmadm: property \"nics[1].model\": \"e1000\" NICs are not supported yet");
    let jumbo = parse(&with(full(), "nics", json!([{"nic_tag": "admin", "mtu": 9000}]))).unwrap();
    assert_eq!(
        jumbo.check_supported().unwrap_err().to_string(),
        "vmadm: property \"nics[0].mtu\": MTUs other than 1500 (9000) are not supported yet"
    );
    let no_nics = parse(&with(full(), "nics", json!([]))).unwrap();
    assert_eq!(no_nics.check_supported(), Ok(()));
}

#[test]
fn ram_limits() {
    assert_eq!(msg(with(minimal(), "ram", json!(16))), "vmadm: property \"ram\": must be at least 64 (MiB), got 16");
    assert_eq!(
        err(with(minimal(), "ram", json!(MAX_RAM_MIB + 1))),
        ConfigError::TooLarge { property: "ram".into(), max: MAX_RAM_MIB, got: MAX_RAM_MIB + 1, unit: "MiB" }
    );
    assert_eq!(parse(&with(minimal(), "ram", json!(64))).unwrap().ram_mib, 64);
    assert_eq!(parse(&with(minimal(), "ram", json!(MAX_RAM_MIB))).unwrap().ram_mib, MAX_RAM_MIB);
    // Past the old 1008 MiB cap and past the PCI hole (2.75 GiB).
    for mib in [1009, 2816, 2817, 4096, 65536] {
        assert_eq!(parse(&with(minimal(), "ram", json!(mib))).unwrap().ram_mib, mib);
    }
    for bad in [json!(-1), json!(1.5), json!("1024"), json!(null_not()), json!([1])] {
        assert_eq!(
            err(with(minimal(), "ram", bad)),
            ConfigError::WrongType { property: "ram".into(), expected: "a whole number" }
        );
    }
    assert_eq!(msg(with(minimal(), "ram", json!(true))), "vmadm: property \"ram\": must be a whole number");
    // max_physical_memory below ram.
    let v = with(with(minimal(), "ram", json!(512)), "max_physical_memory", json!(256));
    assert_eq!(msg(v), "vmadm: property \"max_physical_memory\": must be at least 512 (MiB), got 256");
}

/// A JSON value that is no number (an object).
fn null_not() -> Value {
    json!({"n": 1})
}

#[test]
fn vcpu_limits() {
    assert_eq!(msg(with(minimal(), "vcpus", json!(0))), "vmadm: property \"vcpus\": must be at least 1, got 0");
    assert_eq!(
        msg(with(minimal(), "vcpus", json!(MAX_VCPUS + 1))),
        format!("vmadm: property \"vcpus\": must be at most {MAX_VCPUS}, got {}", MAX_VCPUS + 1)
    );
    assert_eq!(parse(&with(minimal(), "vcpus", json!(MAX_VCPUS))).unwrap().vcpus, MAX_VCPUS);
}

#[test]
fn brand_rules() {
    assert_eq!(
        msg(with(minimal(), "brand", json!("joyent"))),
        "vmadm: property \"brand\": must be \"bhyve\" or \"kvm\", got \"joyent\""
    );
    assert_eq!(err(with(minimal(), "brand", json!(7))).property(), Some("brand"));
    assert_eq!(err(with(minimal(), "brand", Value::Null)).property(), Some("brand"));
    assert!(msg(with(minimal(), "brand", Value::Null)).contains("required"));
    assert_eq!(parse(&with(minimal(), "brand", json!("bhyve"))).unwrap().brand, Brand::Bhyve);
}

#[test]
fn uuid_format() {
    for good in [UUID, "0F3B2E7C-5A1D-4C8E-9B6F-2D4E6A8C0B1D", "00000000-0000-0000-0000-000000000000"] {
        assert!(parse(&with(minimal(), "uuid", json!(good))).is_ok(), "{good}");
    }
    for bad in [
        "",
        "0f3b2e7c5a1d4c8e9b6f2d4e6a8c0b1d",
        "0f3b2e7c-5a1d-4c8e-9b6f-2d4e6a8c0b1",
        "0f3b2e7c-5a1d-4c8e-9b6f-2d4e6a8c0b1dd",
        "0f3b2e7c-5a1d-4c8e-9b6f_2d4e6a8c0b1d",
        "0f3b2e7g-5a1d-4c8e-9b6f-2d4e6a8c0b1d",
        "0f3b2e7c-5a1d-4c8e-9b6f-2d4e6a8c0b1é",
        "+f3b2e7c-5a1d-4c8e-9b6f-2d4e6a8c0b1d",
    ] {
        let e = err(with(minimal(), "uuid", json!(bad)));
        assert_eq!(e.property(), Some("uuid"), "{bad}");
        assert!(e.to_string().starts_with("vmadm: property \"uuid\": must be a UUID"), "{e}");
    }
    assert_eq!(msg(with(minimal(), "uuid", json!(5))), "vmadm: property \"uuid\": must be a string");
}

#[test]
fn kernel_is_required_and_strings_are_checked() {
    let e = err(with(minimal(), "kernel", Value::Null));
    assert_eq!(e.property(), Some("kernel"));
    assert!(e.to_string().contains("required") && e.to_string().contains("bootrom"), "{e}");
    assert_eq!(msg(with(minimal(), "kernel", json!(""))), "vmadm: property \"kernel\": must be a non-empty string");
    assert_eq!(err(with(minimal(), "kernel", json!(["a"]))).property(), Some("kernel"));
    assert_eq!(err(with(minimal(), "initrd", json!(1))).property(), Some("initrd"));
    assert_eq!(err(with(minimal(), "alias", json!(""))).property(), Some("alias"));
    let long = "x".repeat(MAX_CMDLINE_BYTES + 1);
    assert_eq!(
        err(with(minimal(), "cmdline", json!(long))),
        ConfigError::TooLarge {
            property: "cmdline".into(),
            max: MAX_CMDLINE_BYTES as u64,
            got: MAX_CMDLINE_BYTES as u64 + 1,
            unit: "bytes"
        }
    );
    assert_eq!(err(with(minimal(), "cmdline", json!("a\u{0}b"))).property(), Some("cmdline"));
    let huge = "k".repeat(MAX_STRING_BYTES + 1);
    assert_eq!(err(with(minimal(), "kernel", json!(huge))).property(), Some("kernel"));
    assert_eq!(err(with(minimal(), "autoboot", json!("yes"))).property(), Some("autoboot"));
    assert_eq!(err(with(minimal(), "cpu_cap", json!(0))).property(), Some("cpu_cap"));
    assert_eq!(err(with(minimal(), "customer_metadata", json!({"k": 1}))).property(), Some("customer_metadata.k"));
    assert_eq!(err(with(minimal(), "customer_metadata", json!("x"))).property(), Some("customer_metadata"));
}

#[test]
fn unknown_properties_are_named() {
    let v = with(with(minimal(), "zfs_io_priority", json!(30)), "state", json!("running"));
    assert_eq!(err(v.clone()), ConfigError::UnknownProperties(vec!["state".into(), "zfs_io_priority".into()]));
    assert_eq!(msg(v), "vmadm: unknown properties \"state\", \"zfs_io_priority\"");
    assert_eq!(msg(with(minimal(), "Ram", json!(1))), "vmadm: unknown property \"Ram\"");
    let d = with(minimal(), "disks", json!([{"path": "a"}, {"path": "b", "compression": "lz4"}]));
    assert_eq!(msg(d), "vmadm: unknown property \"disks[1].compression\"");
    let n = with(minimal(), "nics", json!([{"nic_tag": "admin", "ips": ["10.0.0.1/24"]}]));
    assert_eq!(msg(n), "vmadm: unknown property \"nics[0].ips\"");
}

#[test]
fn disk_rules() {
    let disk = |d: Value| with(minimal(), "disks", json!([d]));
    assert_eq!(
        msg(disk(json!({"path": "a", "model": "floppy"}))),
        "vmadm: property \"disks[0].model\": must be \"virtio\", got \"floppy\""
    );
    assert_eq!(
        msg(disk(json!({"path": "a", "model": "ide"}))),
        "vmadm: property \"disks[0].model\": \"ide\" disks are not supported yet"
    );
    assert_eq!(
        msg(disk(json!({"path": "a", "media": "cdrom"}))),
        "vmadm: property \"disks[0].media\": CD-ROMs are not supported yet"
    );
    assert_eq!(err(disk(json!({"path": "a", "media": "tape"}))).property(), Some("disks[0].media"));
    assert!(msg(disk(json!({"model": "virtio"}))).starts_with("vmadm: property \"disks[0].path\": required"));
    assert_eq!(err(disk(json!({"path": ""}))).property(), Some("disks[0].path"));
    assert_eq!(err(disk(json!({"path": "a", "boot": 1}))).property(), Some("disks[0].boot"));
    assert_eq!(err(disk(json!({"path": "a", "size": 0}))).property(), Some("disks[0].size"));
    assert_eq!(err(disk(json!({"path": "a", "image_uuid": "x"}))).property(), Some("disks[0].image_uuid"));
    assert_eq!(
        msg(disk(json!({"path": "a", "block_size": 3000}))),
        "vmadm: property \"disks[0].block_size\": must be a power of two, got 3000"
    );
    assert_eq!(err(disk(json!({"path": "a", "block_size": 256}))).property(), Some("disks[0].block_size"));
    assert_eq!(msg(disk(json!("disk.img"))), "vmadm: property \"disks[0]\": must be an object");
    assert_eq!(msg(with(minimal(), "disks", json!({"path": "a"}))), "vmadm: property \"disks\": must be an array");
    let two_boot = with(minimal(), "disks", json!([{"path": "a", "boot": true}, {"path": "b", "boot": true}]));
    assert_eq!(err(two_boot).property(), Some("disks"));
    let many: Vec<Value> = (0..=MAX_DISKS).map(|i| json!({"path": format!("d{i}")})).collect();
    assert_eq!(err(with(minimal(), "disks", Value::Array(many))).property(), Some("disks"));
}

/// Issue 12: a disk names a pool volume (`zones/<name>`), or has no path
/// and a size (or an image) and is `zones/<uuid>-disk<N>`; what init or
/// the control plane provisions comes from that.
#[test]
fn pool_volume_disks() {
    use libipc::provision::{IfAbsent, VolumeSpec};
    let disks = |d: Value| with(minimal(), "disks", d);
    let vm = |d: Value| parse(&with(disks(d), "uuid", json!(UUID))).unwrap();
    let c = vm(json!([
        {"path": "zones/data-disk0"},
        {"size": 64},
        {"image_uuid": "A0B1C2D3-E4F5-4617-8899-AABBCCDDEEFF", "boot": true},
        {"path": "zones/kept", "size": 2}
    ]));
    let specs = c.volume_specs();
    let image = "zones/a0b1c2d3-e4f5-4617-8899-aabbccddeeff@final";
    assert_eq!(
        specs,
        vec![
            VolumeSpec { name: "zones/data-disk0".into(), if_absent: IfAbsent::Fail },
            VolumeSpec { name: format!("zones/{UUID}-disk1"), if_absent: IfAbsent::Create { volsize: 64 << 20 } },
            VolumeSpec { name: format!("zones/{UUID}-disk2"), if_absent: IfAbsent::Clone { origin: image.into() } },
            VolumeSpec { name: "zones/kept".into(), if_absent: IfAbsent::Create { volsize: 2 << 20 } },
        ]
    );
    assert_eq!(c.disks[1].path, format!("zones/{UUID}-disk1"));
    // Every spec reads back as init gets it from the manifest.
    for s in &specs {
        assert_eq!(&VolumeSpec::parse(&s.to_text()).unwrap(), s);
    }
    // Host files and machine disks are no volumes.
    assert!(parse(&disks(json!([{"path": "disk.img"}, {"path": "/x/zones/a"}]))).unwrap().volume_specs().is_empty());
    // Errors name the property.
    let e = err(disks(json!([{"size": 64}])));
    assert_eq!(e.property(), Some("disks[0].path"));
    assert!(e.to_string().contains("uuid"), "{e}");
    for bad in ["zones/", "zones/a/b", "zones/a@snap", "zones/a b", "zones/\u{e9}"] {
        let e = err(with(disks(json!([{"path": bad}])), "uuid", json!(UUID)));
        assert_eq!(e.property(), Some("disks[0].path"), "{bad}");
        assert!(e.to_string().contains("pool volume"), "{bad}: {e}");
    }
    let e = err(disks(json!([{"path": "zones/a"}, {"path": "disk.img"}])));
    assert_eq!(e.property(), Some("disks"));
    assert!(e.to_string().contains("every disk a pool volume"), "{e}");
}

#[test]
fn nic_rules() {
    let nic = |n: Value| with(minimal(), "nics", json!([n]));
    let e = |n: Value| err(nic(n)).property().map(str::to_owned);
    assert!(msg(nic(json!({"ip": "dhcp"}))).starts_with("vmadm: property \"nics[0].nic_tag\": required"));
    assert_eq!(
        msg(nic(json!({"nic_tag": "admin", "mac": "90:b8:d0:c0:ff"}))),
        "vmadm: property \"nics[0].mac\": must be a MAC address like 90:b8:d0:c0:ff:ee, got \"90:b8:d0:c0:ff\""
    );
    for bad in
        ["90:b8:d0:c0:ff:ee:00", "90-b8-d0-c0-ff-ee", "90:b8:d0:c0:ff:", "90:b8:d0:c0:ff:eee", "zz:b8:d0:c0:ff:ee"]
    {
        assert_eq!(e(json!({"nic_tag": "admin", "mac": bad})).as_deref(), Some("nics[0].mac"), "{bad}");
    }
    assert!(msg(nic(json!({"nic_tag": "a", "mac": "01:00:5e:00:00:01"}))).contains("unicast"));
    assert_eq!(
        parse(&nic(json!({"nic_tag": "a", "mac": "2:8:20:AB:c:1"}))).unwrap().nics[0].mac.unwrap().to_string(),
        "02:08:20:ab:0c:01"
    );
    assert_eq!(e(json!({"nic_tag": "a", "ip": "10.0.0.256", "netmask": "255.0.0.0"})).as_deref(), Some("nics[0].ip"));
    assert_eq!(e(json!({"nic_tag": "a", "ip": "10.0.0.1"})).as_deref(), Some("nics[0].netmask"));
    assert_eq!(
        msg(nic(json!({"nic_tag": "a", "ip": "10.0.0.1", "netmask": "255.0.255.0"}))),
        "vmadm: property \"nics[0].netmask\": must be a contiguous netmask like 255.255.255.0, got \"255.0.255.0\""
    );
    assert_eq!(e(json!({"nic_tag": "a", "gateway": "gw"})).as_deref(), Some("nics[0].gateway"));
    assert_eq!(
        msg(nic(json!({"nic_tag": "a", "vlan_id": 4095}))),
        "vmadm: property \"nics[0].vlan_id\": must be at most 4094, got 4095"
    );
    assert_eq!(e(json!({"nic_tag": "a", "model": "ne2000"})).as_deref(), Some("nics[0].model"));
    assert_eq!(e(json!({"nic_tag": "a", "mtu": 100})).as_deref(), Some("nics[0].mtu"));
    assert_eq!(e(json!({"nic_tag": "a", "primary": "yes"})).as_deref(), Some("nics[0].primary"));
    let c = parse(&nic(json!({"nic_tag": "a", "ip": "addrconf", "model": "e1000", "netmask": "0.0.0.0"}))).unwrap();
    assert_eq!((c.nics[0].ip, c.nics[0].model), (Some(NicIp::Addrconf), NicModel::E1000));
    let two_primary =
        with(minimal(), "nics", json!([{"nic_tag": "a", "primary": true}, {"nic_tag": "b", "primary": true}]));
    assert_eq!(err(two_primary).property(), Some("nics"));
}

#[test]
fn not_json_or_not_an_object() {
    assert!(matches!(VmConfig::from_json("{\"brand\": "), Err(ConfigError::Json(_))));
    assert!(VmConfig::from_json("{,}").unwrap_err().to_string().starts_with("vmadm: invalid JSON: "));
    assert_eq!(VmConfig::from_json("[1, 2]"), Err(ConfigError::NotAnObject));
    assert_eq!(VmConfig::from_json("\"bhyve\""), Err(ConfigError::NotAnObject));
    // Deep nesting is refused by serde_json's recursion limit, not a crash.
    let deep = "[".repeat(100_000);
    assert!(matches!(VmConfig::from_json(&deep), Err(ConfigError::Json(_))));
    // Trailing garbage.
    assert!(matches!(VmConfig::from_json("{\"brand\":\"kvm\",\"kernel\":\"k\"} x"), Err(ConfigError::Json(_))));
}

#[test]
fn fuzz_mutated_descriptions() {
    let mut rng = XorShift(0x5E17_0505);
    let keys: Vec<&str> = TOP_LEVEL.iter().copied().chain(["bogus"]).collect();
    let values = [
        json!(null),
        json!(0),
        json!(-1),
        json!(1.5),
        json!(u64::MAX),
        json!(""),
        json!("virtio"),
        json!(true),
        json!([]),
        json!([{}]),
        json!([{"path": 1}]),
        json!({}),
        json!({"a": []}),
    ];
    for _ in 0..3000 {
        let mut v = full();
        for _ in 0..=rng.below(3) {
            let key = keys[rng.below(keys.len() as u64) as usize];
            let value = values[rng.below(values.len() as u64) as usize].clone();
            v = with(v, key, value);
        }
        match parse(&v) {
            Ok(c) => assert!(c.ram_mib >= MIN_RAM_MIB && (1..=MAX_VCPUS).contains(&c.vcpus)),
            Err(e) => {
                let m = e.to_string();
                assert!(m.starts_with("vmadm: "), "{m}");
                if let Some(p) = e.property() {
                    assert!(m.contains(p));
                }
            }
        }
    }
    // Random bytes as JSON text.
    for _ in 0..2000 {
        let len = rng.below(64) as usize;
        let text: String = (0..len).map(|_| b"{}[]\",:0123 abtrue"[rng.below(18) as usize] as char).collect();
        let _ = VmConfig::from_json(&text);
    }
}

#[test]
fn bootrom_boots_the_boot_disk_instead_of_a_kernel() {
    let disk = json!([{"path": "d0.img"}, {"path": "boot.img", "boot": true}]);
    let bios = with(with(with(minimal(), "kernel", Value::Null), "bootrom", json!("bios")), "disks", disk.clone());
    let c = parse(&bios).unwrap();
    assert_eq!(c.bootrom, Some(Bootrom::Bios));
    assert_eq!(c.kernel, "");
    assert_eq!(c.boot_disk(), Some(1));
    assert!(c.check_supported().is_ok());
    // uefi boots the same disk through OVMF.
    let uefi = parse(&with(bios.clone(), "bootrom", json!("uefi"))).unwrap();
    assert_eq!(uefi.bootrom, Some(Bootrom::Uefi));
    assert!(uefi.check_supported().is_ok());
    assert_eq!(
        msg(with(bios.clone(), "bootrom", json!("coreboot"))),
        "vmadm: property \"bootrom\": must be \"bios\" or \"uefi\", got \"coreboot\""
    );
    assert_eq!(err(with(bios.clone(), "bootrom", json!(1))).property(), Some("bootrom"));
    // Both a kernel and a bootrom, or a kernel's companions: named.
    assert_eq!(err(with(bios.clone(), "kernel", json!("vmlinuz"))).property(), Some("kernel"));
    assert_eq!(err(with(bios.clone(), "initrd", json!("initrd.img"))).property(), Some("initrd"));
    assert_eq!(err(with(bios.clone(), "cmdline", json!("quiet"))).property(), Some("cmdline"));
    // No boot disk.
    let e = err(with(bios, "disks", json!([{"path": "d0.img"}])));
    assert_eq!(e.property(), Some("disks"));
    assert!(e.to_string().contains("\"boot\": true"), "{e}");
    // Direct boot is unchanged.
    assert_eq!(parse(&minimal()).unwrap().bootrom, None);
}
