//! Host tests: validation (good payloads, coercions, defaults, deprecated
//! forms, 30+ malformed and hostile payloads), the state machine, the
//! registry, list/lookup/get output, update, the verbs against a fake
//! machine, and the bridge accepted by vmm-server's own parser.

extern crate std;

use alloc::borrow::ToOwned;
use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;

use serde_json::{Map, Value, json};

use crate::properties;
use crate::registry::{Filter, Instance, Registry};
use crate::state::{self, Event, State};
use crate::uuid::Uuid;
use crate::validate::{self, Checked};
use crate::verbs::{self, Host, Output};

mod hostile;
mod random;
mod verbs_tests;
mod vm_json_size;

fn obj(v: Value) -> Map<String, Value> {
    v.as_object().expect("an object").clone()
}

fn create(v: Value) -> Checked {
    validate::check_create(&obj(v))
}

/// A SmartOS bhyve payload, as vmadm(8)'s examples write one.
fn smartos_payload() -> Value {
    json!({
        "brand": "bhyve",
        "alias": "web0",
        "ram": 1024,
        "vcpus": 2,
        "hostname": "web0.example.com",
        "resolvers": ["8.8.8.8", "8.8.4.4"],
        "owner_uuid": "930896af-bf8c-48d4-885c-6573a94b1853",
        "tags": {"role": "web", "tier": 2},
        "customer_metadata": {"user-script": "#!/bin/sh\necho hi"},
        "disks": [
            {"boot": true, "model": "virtio", "image_uuid": "462d1d03-8457-e134-a408-cf9ea2b9be96"},
            {"model": "virtio", "size": 10240}
        ],
        "nics": [
            {"nic_tag": "admin", "ips": ["10.88.88.50/24"], "gateways": ["10.88.88.1"], "primary": true},
            {"nic_tag": "internal", "ip": "dhcp"}
        ]
    })
}

fn counter_random() -> impl FnMut(&mut [u8]) {
    let mut n = 0u8;
    move |b: &mut [u8]| {
        for x in b {
            n = n.wrapping_add(1);
            *x = n;
        }
    }
}

#[test]
fn a_smartos_payload_validates_unchanged() {
    let c = create(smartos_payload());
    assert!(c.problems.is_empty(), "{:?}", c.problems);
    assert_eq!(c.brand, "bhyve");
    // Everything is kept, in vmadm's forms.
    assert_eq!(c.payload["hostname"], "web0.example.com");
    assert_eq!(c.payload["tags"]["tier"], 2);
    assert_eq!(c.payload["owner_uuid"], "930896af-bf8c-48d4-885c-6573a94b1853");
}

#[test]
fn coercions_as_vmadm() {
    let c = create(json!({"brand": "bhyve", "ram": "512", "vcpus": "2", "autoboot": "false",
        "do_not_inventory": 1, "archive_on_delete": "1", "kernel": "bzImage"}));
    assert!(c.problems.is_empty(), "{:?}", c.problems);
    assert_eq!(c.payload["ram"], 512);
    assert_eq!(c.payload["vcpus"], 2);
    assert_eq!(c.payload["autoboot"], false);
    assert_eq!(c.payload["do_not_inventory"], true);
    assert_eq!(c.payload["archive_on_delete"], true);
    // But not anything that merely looks like a number or a boolean.
    for (k, v) in [
        ("ram", json!("512MB")),
        ("ram", json!(512.5)),
        ("ram", json!(" 512")),
        ("autoboot", json!("yes")),
        ("autoboot", json!(2)),
        ("vcpus", json!(true)),
    ] {
        let c = create(json!({"brand": "bhyve", "kernel": "k", k: v}));
        assert_eq!(c.problems.bad_values, vec![k.to_owned()], "{k}={v}");
    }
}

#[test]
fn defaults_as_vmadm() {
    let c = create(json!({"brand": "bhyve", "disks": [{"boot": true, "size": 1024}]}));
    assert!(c.problems.is_empty(), "{:?}", c.problems);
    let mut p = c.payload;
    validate::create_defaults(&mut p, &mut counter_random());
    assert_eq!(p["ram"], 256);
    assert_eq!(p["vcpus"], 1);
    assert_eq!(p["max_physical_memory"], 256 + 1024);
    assert_eq!(p["max_locked_memory"], 256 + 1024);
    assert_eq!(p["max_swap"], 256 + 1024);
    assert_eq!(p["cpu_shares"], 100);
    assert_eq!(p["zfs_io_priority"], 100);
    assert_eq!(p["autoboot"], true);
    assert_eq!(p["bootrom"], "bios");
    assert_eq!(p["owner_uuid"], "00000000-0000-0000-0000-000000000000");
    assert_eq!(p["customer_metadata"], json!({}));
    // A uuid from the caller's random source: version 4, variant 1.
    assert_eq!(p["uuid"], "01020304-0506-4708-890a-0b0c0d0e0f10");
    let d = &p["disks"][0];
    assert_eq!(d["model"], "virtio");
    assert_eq!(d["media"], "disk");
    assert_eq!(d["path"], "/dev/zvol/rdsk/zones/01020304-0506-4708-890a-0b0c0d0e0f10/disk0");
}

#[test]
fn nic_defaults_link_protection_and_deprecated_forms() {
    let c = create(json!({"brand": "bhyve", "kernel": "k", "nics": [
        {"nic_tag": "admin", "ip": "10.0.0.5", "netmask": "255.255.255.0", "gateway": "10.0.0.1"},
        {"nic_tag": "external", "ips": ["192.168.1.9/16", "fd00::9/64"], "gateways": ["192.168.0.1"]}
    ]}));
    assert!(c.problems.is_empty(), "{:?}", c.problems);
    let mut p = c.payload;
    validate::create_defaults(&mut p, &mut counter_random());
    let n0 = &p["nics"][0];
    // The deprecated forms gain their current ones, and the reverse.
    assert_eq!(n0["ips"], json!(["10.0.0.5/24"]));
    assert_eq!(n0["gateways"], json!(["10.0.0.1"]));
    let n1 = &p["nics"][1];
    assert_eq!((n1["ip"].as_str(), n1["netmask"].as_str()), (Some("192.168.1.9"), Some("255.255.0.0")));
    assert_eq!(n1["gateway"], "192.168.0.1");
    // Link protections on, a primary, interface names, generated MACs.
    for n in [n0, n1] {
        for k in ["allow_ip_spoofing", "allow_mac_spoofing", "allow_dhcp_spoofing", "allow_restricted_traffic"] {
            assert_eq!(n[k], false, "{k}");
        }
        assert!(n["mac"].as_str().unwrap().starts_with("90:b8:d0:"));
        assert_eq!(n["model"], "virtio");
    }
    assert_eq!(n0["primary"], true);
    assert_eq!(n1.get("primary"), None);
    assert_eq!((n0["interface"].as_str(), n1["interface"].as_str()), (Some("net0"), Some("net1")));
    assert_ne!(n0["mac"], n1["mac"]);
}

#[test]
fn brands() {
    assert!(create(json!({"brand": "kvm", "kernel": "k"})).problems.is_empty());
    for b in ["joyent", "joyent-minimal", "lx"] {
        let c = create(json!({"brand": b}));
        assert_eq!(c.problems.bad_values, vec!["brand"]);
        assert!(c.problems.reasons[0].contains("not supported yet"), "{:?}", c.problems.reasons);
    }
    let c = create(json!({"ram": 256}));
    assert_eq!(c.problems.missing_properties, vec!["brand"]);
    assert_eq!(create(json!({"brand": "xen"})).problems.bad_values, vec!["brand"]);
}

#[test]
fn what_alcove_cannot_do_is_refused_by_name() {
    let cases = [
        (
            json!({"disks": [{"boot": true, "size": 10, "model": "ahci"}]}),
            "disks.0.model",
            "\"ahci\" disk models are not supported yet",
        ),
        (json!({"disks": [{"boot": true, "size": 10, "model": "nvme"}]}), "disks.0.model", "nvme"),
        (json!({"disks": [{"boot": true, "media": "cdrom", "path": "x.iso"}]}), "disks.0.media", "cdrom"),
        (json!({"disks": [{"boot": true, "size": 10, "pci_slot": "0:4:0"}]}), "disks.0.pci_slot", "PCI slot"),
        (json!({"kernel": "k", "nics": [{"nic_tag": "a", "model": "e1000"}]}), "nics.0.model", "e1000"),
        (json!({"kernel": "k", "vnc_port": 5900}), "vnc_port", "VNC"),
        (json!({"kernel": "k", "bhyve_extra_opts": "-s 9,foo"}), "bhyve_extra_opts", "bhyve"),
    ];
    for (mut p, prop, words) in cases {
        p["brand"] = json!("bhyve");
        let c = create(p);
        assert_eq!(c.problems.bad_values, vec![prop.to_owned()], "{prop}");
        assert!(
            c.problems.reasons.iter().any(|r| r.contains(prop) && r.contains(words)),
            "{prop}: {:?}",
            c.problems.reasons
        );
    }
}

#[test]
fn validate_output_is_vmadms() {
    let p = validate::Problems {
        bad_values: vec!["ram".into()],
        bad_properties: vec!["foo".into()],
        missing_properties: vec![],
        reasons: vec![],
    };
    assert_eq!(p.json(), r#"{"bad_values":["ram"],"bad_properties":["foo"],"missing_properties":[]}"#);
}

#[test]
fn every_table_is_sorted_and_every_property_consistent() {
    for table in [properties::TOP, properties::DISK, properties::NIC] {
        for w in table.windows(2) {
            assert!(w[0].name < w[1].name, "{} before {}", w[0].name, w[1].name);
        }
        for p in table {
            // A read-only property has no default and is not honoured from a payload.
            if p.read_only() {
                assert!(p.default.is_none(), "{}", p.name);
            }
        }
    }
    // The properties issue 15 names are all there.
    for name in [
        "hostname",
        "resolvers",
        "tags",
        "customer_metadata",
        "internal_metadata",
        "owner_uuid",
        "billing_id",
        "cpu_type",
        "flexible_disk_size",
        "do_not_inventory",
        "uuid",
        "state",
        "zone_state",
        "create_timestamp",
        "last_modified",
        "zonename",
        "zonepath",
        "server_uuid",
        "pid",
        "max_physical_memory",
        "quota",
        "cpu_cap",
    ] {
        assert!(properties::top(name).is_some(), "{name}");
    }
    use crate::list::{column, filter_key};
    assert_eq!(column("state"), Some(("STATE".into(), 16)));
    assert_eq!(column("cpu_shares"), Some(("CPU_SHARE".into(), 9)));
    assert_eq!(column("nics.0.ip"), Some(("NICS.0.IP".into(), 20)));
    assert_eq!(column("tags.role"), Some(("TAGS.ROLE".into(), 20)));
    assert!(column("customer_metadata").is_none() && column("nics.*.ip").is_none() && column("kernel").is_none());
    assert!(filter_key("nics.*.nic_tag") && filter_key("disks.0.size") && filter_key("customer_metadata.a.b"));
    assert!(!filter_key("nics.0.mtu") && !filter_key("kernel"));
}

// ---- the state machine ----

#[test]
fn state_machine() {
    use Event::*;
    use State::*;
    let allowed = [
        (Provisioning, Provisioned { boot: true }, Running),
        (Provisioning, Provisioned { boot: false }, Stopped),
        (Provisioning, ProvisionFailed, Failed),
        (Stopped, Start, Running),
        (Running, StopRequested, Stopping),
        (Running, Halted, Stopped),
        (Stopping, Halted, Stopped),
        (Running, Exited, Stopped),
        (Stopping, Exited, Stopped),
        (Running, Reboot, Running),
        (Running, RebootRequested, Stopping),
        (Stopping, Restarted, Running),
    ];
    for (s, e, want) in allowed {
        assert_eq!(state::next(s, e), Ok(want), "{s} {e:?}");
    }
    let all_states = [Provisioning, Stopped, Running, Stopping, Failed];
    let all_events = [
        Provisioned { boot: true },
        Provisioned { boot: false },
        ProvisionFailed,
        Start,
        StopRequested,
        Halted,
        Exited,
        Reboot,
        RebootRequested,
        Restarted,
    ];
    let mut refused = 0;
    for s in all_states {
        for e in all_events {
            let listed = allowed.iter().any(|(a, b, _)| *a == s && *b == e) || (s == Stopping && e == StopRequested);
            match state::next(s, e) {
                Ok(_) => assert!(listed, "{s} {e:?} allowed but not listed"),
                Err(r) => {
                    assert!(!listed);
                    assert!(!r.0.is_empty());
                    refused += 1;
                }
            }
        }
    }
    assert!(refused > 20);
    assert_eq!(state::next(Running, Start).unwrap_err().0, "VM is already running");
    assert_eq!(state::next(Failed, Start).unwrap_err().0, "VM failed to provision; delete it and create it again");
}

fn instance(uuid: &str, ram: i64, alias: Option<&str>) -> Instance {
    let mut p = obj(json!({"brand": "bhyve", "uuid": uuid, "ram": ram, "kernel": "k"}));
    if let Some(a) = alias {
        p.insert("alias".into(), json!(a));
    }
    Instance::new(p, "2026-12-03T10:00:00.000Z").unwrap()
}

#[test]
fn instance_records_what_vmadm_records() {
    let mut vm = instance("11111111-1111-4111-8111-111111111111", 512, None);
    assert_eq!(vm.state, State::Provisioning);
    vm.apply(Event::Provisioned { boot: true }, "2026-12-03T10:00:01.000Z").unwrap();
    let j = vm.to_json("00000000-0000-0000-0000-0000000000aa");
    assert_eq!(j["state"], "running");
    assert_eq!(j["zone_state"], "running");
    assert_eq!(j["type"], "BHYV");
    assert_eq!(j["zonename"], "11111111-1111-4111-8111-111111111111");
    assert_eq!(j["zonepath"], "/zones/11111111-1111-4111-8111-111111111111");
    assert_eq!(j["create_timestamp"], "2026-12-03T10:00:00.000Z");
    assert_eq!(j["boot_timestamp"], "2026-12-03T10:00:01.000Z");
    vm.apply(Event::StopRequested, "2026-12-03T10:00:02.000Z").unwrap();
    assert!(!vm.autoboot());
    vm.apply(Event::Halted, "2026-12-03T10:00:03.000Z").unwrap();
    let j = vm.to_json("x");
    assert_eq!((j["state"].as_str(), j["zone_state"].as_str()), (Some("stopped"), Some("installed")));
    assert_eq!(j.get("boot_timestamp"), None);
    assert_eq!(j["last_modified"], "2026-12-03T10:00:03.000Z");
    vm.apply(Event::Start, "2026-12-03T10:00:04.000Z").unwrap();
    assert!(vm.autoboot());
    // The stored record reads back as the same instance.
    let back = Instance::from_stored(vm.to_json("x")).unwrap();
    assert_eq!(back, vm);
}

#[test]
fn registry_refuses_duplicates_and_filters() {
    let mut r = Registry::new("00000000-0000-0000-0000-0000000000aa");
    r.add(instance("11111111-1111-4111-8111-111111111111", 512, Some("a"))).unwrap();
    r.add(instance("22222222-2222-4222-8222-222222222222", 256, Some("b"))).unwrap();
    let e = r.add(instance("11111111-1111-4111-8111-111111111111", 1024, Some("c"))).unwrap_err();
    assert_eq!(e.to_string(), "VM with UUID 11111111-1111-4111-8111-111111111111 already exists");
    assert_eq!(r.len(), 2);
    let f = |s: &str| Filter::parse(s).unwrap();
    assert_eq!(r.lookup(&[f("ram=256")]).len(), 1);
    assert_eq!(r.lookup(&[f("type=BHYV"), f("state=provisioning")]).len(), 2);
    assert_eq!(r.lookup(&[f("alias=a"), f("ram=256")]).len(), 0);
    assert!(Filter::parse("alias=~^a").unwrap_err().contains("not supported yet"));
    let u = Uuid::parse("22222222-2222-4222-8222-222222222222").unwrap();
    assert_eq!(r.remove(&u).unwrap().alias(), Some("b"));
    assert!(r.remove(&u).is_err());
}

#[test]
fn registry_refuses_a_mac_in_use() {
    let mut r = Registry::new("s");
    let mk = |u: &str| {
        let p = obj(json!({"brand": "bhyve", "uuid": u, "kernel": "k",
            "nics": [{"nic_tag": "admin", "mac": "90:b8:d0:00:00:01"}]}));
        Instance::new(p, "t").unwrap()
    };
    r.add(mk("11111111-1111-4111-8111-111111111111")).unwrap();
    let e = r.add(mk("22222222-2222-4222-8222-222222222222")).unwrap_err();
    assert!(e.to_string().contains("90:b8:d0:00:00:01"), "{e}");
}

#[test]
fn nic_filters_reach_into_arrays() {
    let mut r = Registry::new("s");
    let p = obj(json!({"brand": "bhyve", "uuid": "11111111-1111-4111-8111-111111111111", "kernel": "k",
        "nics": [{"nic_tag": "admin", "ip": "10.0.0.1"}, {"nic_tag": "external", "ip": "dhcp"}]}));
    r.add(Instance::new(p, "t").unwrap()).unwrap();
    let f = |s: &str| Filter::parse(s).unwrap();
    assert_eq!(r.lookup(&[f("nics.*.nic_tag=external")]).len(), 1);
    assert_eq!(r.lookup(&[f("nics.0.nic_tag=external")]).len(), 0);
    assert_eq!(r.lookup(&[f("nics.1.ip=dhcp")]).len(), 1);
}

// ---- the bridge to vmm-server ----

fn created(v: Value) -> Map<String, Value> {
    let c = create(v);
    assert!(c.problems.is_empty(), "{:?}", c.problems);
    let mut p = c.payload;
    validate::create_defaults(&mut p, &mut counter_random());
    p
}

#[test]
fn vmm_server_accepts_what_the_bridge_makes() {
    use vmm_server::config::{Bootrom, Brand, DiskModel, NicIp, VmConfig};
    let mut p = created(smartos_payload());
    p.insert("create_timestamp".into(), json!("2026-12-06T05:59:59.999Z"));
    let json = crate::vmm::vm_config_json(&p, "44454c4c-3800-1036-8051-b7c04f4e5331");
    let c = VmConfig::from_json(&json).unwrap_or_else(|e| panic!("{e}\n{json}"));
    assert_eq!(c.brand, Brand::Bhyve);
    // What the guest's sdc:create_timestamp and sdc:server_uuid answer.
    assert_eq!(c.metadata.get("create_timestamp"), Some(&json!("2026-12-06T05:59:59.999Z")));
    assert_eq!(c.metadata.get("server_uuid"), Some(&json!("44454c4c-3800-1036-8051-b7c04f4e5331")));
    assert_eq!(c.uuid.map(|u| u.to_string()), p["uuid"].as_str().map(str::to_owned));
    assert_eq!((c.ram_mib, c.vcpus), (1024, 2));
    assert_eq!(c.max_physical_memory_mib, Some(2048));
    assert_eq!(c.cpu_shares, Some(100));
    assert_eq!(c.bootrom, Some(Bootrom::Bios));
    assert_eq!(c.alias.as_deref(), Some("web0"));
    assert_eq!(c.customer_metadata.get("user-script").map(String::as_str), Some("#!/bin/sh\necho hi"));
    assert_eq!(c.disks.len(), 2);
    assert!(c.disks[0].boot && c.disks[0].model == DiskModel::Virtio);
    assert_eq!(c.disks[0].image_uuid.map(|u| u.to_string()).as_deref(), Some("462d1d03-8457-e134-a408-cf9ea2b9be96"));
    assert_eq!(c.disks[1].size_mib, Some(10240));
    // The VMM opens the pool volume behind SmartOS's device path.
    assert_eq!(c.disks[1].path, format!("zones/{}-disk1", p["uuid"].as_str().unwrap()));
    assert_eq!(c.volume_specs()[0].to_text(), format!("zones/{}-disk0 origin=zones/462d1d03-8457-e134-a408-cf9ea2b9be96@final", p["uuid"].as_str().unwrap()));
    assert_eq!(c.nics.len(), 2);
    assert_eq!(c.nics[0].ip, Some(NicIp::Static("10.88.88.50".parse().unwrap())));
    assert_eq!(c.nics[0].netmask, Some("255.255.255.0".parse().unwrap()));
    assert_eq!(c.nics[0].gateway, Some("10.88.88.1".parse().unwrap()));
    assert!(c.nics[0].primary && !c.nics[1].primary);
    assert_eq!(c.nics[1].ip, Some(NicIp::Dhcp));
    assert_eq!(c.nics[0].mac.map(|m| m.to_string()), p["nics"][0]["mac"].as_str().map(str::to_owned));
    assert!(!c.nics[0].allow_ip_spoofing && !c.nics[0].allow_mac_spoofing);
}

/// A NIC's link protections cross to the VMM as given, and every address
/// of `ips` past the first (the VMM's `ip`) joins `allowed_ips`, so netd
/// lets the guest send from each, as SmartOS's ip-nospoof does; the
/// resolvers cross too (the metadata service's `sdc:resolvers`).
#[test]
fn link_protections_and_every_address_of_ips_reach_the_vmm() {
    use vmm_server::config::{NicIp, VmConfig};
    let p = created(json!({"brand": "bhyve", "kernel": "bzImage", "ram": 64, "resolvers": ["10.0.0.53", "8.8.4.4"], "nics": [
        {"nic_tag": "stub0", "ips": ["10.0.0.5/24", "10.0.0.6/24", "fd00::5/64"], "allowed_ips": ["10.9.0.0/16"],
         "allow_dhcp_spoofing": true, "allow_restricted_traffic": "true", "allowed_dhcp_cids": ["0x0102"]},
        {"nic_tag": "stub0", "ips": ["dhcp"]}]}));
    let json = crate::vmm::vm_config_json(&p, "");
    let c = VmConfig::from_json(&json).unwrap_or_else(|e| panic!("{e}\n{json}"));
    let n = &c.nics[0];
    assert_eq!(n.ip, Some(NicIp::Static("10.0.0.5".parse().unwrap())));
    assert_eq!(n.allowed_ips, ["10.9.0.0/16", "10.0.0.6", "fd00::5"]);
    assert!(n.allow_dhcp_spoofing && n.allow_restricted_traffic && !n.allow_ip_spoofing);
    assert_eq!(n.allowed_dhcp_cids, ["0x0102"]);
    let d = &c.nics[1];
    assert!(d.allowed_ips.is_empty() && !d.allow_dhcp_spoofing && !d.allow_restricted_traffic);
    // The resolvers reach the VMM's metadata service (`sdc:resolvers`).
    assert_eq!(c.resolvers, ["10.0.0.53", "8.8.4.4"]);
}

/// The machine holds at most MAX_INSTANCES: the next create is refused
/// saying so, and nothing is made; a delete makes room.
#[test]
fn creates_stop_at_the_machines_instance_bound() {
    let mut reg = Registry::new("s");
    let mut host = FakeHost::default();
    for i in 0..properties::MAX_INSTANCES {
        let p = format!(r#"{{"brand": "bhyve", "kernel": "k", "ram": 64, "autoboot": false, "uuid": "11111111-1111-4111-8111-{i:012}"}}"#);
        let out = run_stdin("create", &p, &mut reg, &mut host);
        assert_eq!(out.code, 0, "{i}: {out:?}");
    }
    let calls = host.calls.len();
    let last = r#"{"brand": "bhyve", "kernel": "k", "ram": 64, "uuid": "22222222-2222-4222-8222-222222222222"}"#;
    let out = run_stdin("create", last, &mut reg, &mut host);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains(&format!("at most {}", properties::MAX_INSTANCES)), "{out:?}");
    assert_eq!((reg.len(), host.calls.len()), (properties::MAX_INSTANCES, calls));
    let first = reg.iter().next().unwrap().uuid.text();
    assert_eq!(run(&format!("delete {first}"), &mut reg, &mut host).code, 0);
    let out = run_stdin("create", last, &mut reg, &mut host);
    assert_eq!(out.code, 0, "{out:?}");
}

/// A record the pool does not keep (its user properties full, storaged
/// gone): `create` undoes the VM (halted, its resources given back, no
/// record in the registry) and says why; `update` and a guest's metadata
/// write-back change nothing and say why.
#[test]
fn nothing_is_kept_whose_record_the_pool_does_not_keep() {
    let mut reg = Registry::new("s");
    let mut host = FakeHost::default();
    host.fail.insert("persist", "out of space: the pool's user properties would take 524300 bytes".into());
    let out = run_stdin("create", r#"{"brand": "bhyve", "kernel": "k", "ram": 64}"#, &mut reg, &mut host);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("could not be saved on the pool") && out.stderr.contains("user properties"), "{out:?}");
    assert!(reg.is_empty(), "nothing kept");
    assert!(host.calls.iter().any(|c| c.starts_with("destroy ")) && host.calls.iter().any(|c| c.starts_with("halt ")), "{:?}", host.calls);
    host.fail.remove("persist");
    let u = "11111111-1111-4111-8111-111111111111";
    let out = run_stdin("create", &format!(r#"{{"brand": "bhyve", "kernel": "k", "ram": 64, "uuid": "{u}"}}"#), &mut reg, &mut host);
    assert_eq!(out.code, 0, "{out:?}");
    let before = reg.clone();
    host.fail.insert("persist", "storaged did not answer".into());
    let out = run_stdin(&format!("update {u}"), r#"{"set_customer_metadata": {"a": "b"}}"#, &mut reg, &mut host);
    assert!(out.code == 1 && out.stderr.contains("nothing changed"), "{out:?}");
    assert_eq!(reg, before);
    let e = crate::ops::guest_metadata(&mut reg, &mut host, &Uuid::parse(u).unwrap(), false, "a", Some("b")).unwrap_err();
    assert!(e.reason().contains("nothing changed"), "{}", e.reason());
    assert_eq!(reg, before);
}

/// What the guest's metadata service answers beyond the VM itself crosses
/// to the VMM: `tags`, `owner_uuid`, `billing_id`,
/// `internal_metadata_namespaces` and, of
/// `internal_metadata`, only the keys a guest may read (`*_pw` and those
/// in a listed namespace); the rest of the record stays behind.
#[test]
fn what_the_metadata_service_answers_reaches_the_vmm() {
    use vmm_server::config::VmConfig;
    let owner = "930896af-bf8c-48d4-885c-6573a94b1853";
    let p = created(json!({"brand": "bhyve", "kernel": "bzImage", "ram": 64, "owner_uuid": owner,
        "billing_id": "00000000-0000-4000-8000-00000000b111",
        "tags": {"role": "web", "count": 3, "prod": true},
        "internal_metadata_namespaces": ["ops"],
        "internal_metadata": {"ops:level": "7", "root_pw": "s3cret", "secret:key": "hidden"}}));
    let json = crate::vmm::vm_config_json(&p, "");
    let c = VmConfig::from_json(&json).unwrap_or_else(|e| panic!("{e}\n{json}"));
    let m = &c.metadata;
    assert_eq!(m["owner_uuid"], owner);
    assert_eq!(m["billing_id"], "00000000-0000-4000-8000-00000000b111");
    assert_eq!(m["tags"], json!({"role": "web", "count": 3, "prod": true}));
    assert_eq!(m["internal_metadata_namespaces"], json!(["ops"]));
    assert_eq!(m["internal_metadata"], json!({"ops:level": "7", "root_pw": "s3cret"}), "secret:key is not the guest's");
    assert!(!json.contains("hidden"));
}

/// An installed image whose manifest says `requirements.bootrom: uefi`.
const UEFI_IMAGE: &str = "0ef10000-0000-4000-8000-000000000001";

/// `bootrom`: both firmwares are accepted and cross to the VMM; a VM whose
/// boot disk clones an image that names its firmware gets it when the
/// payload names none, and a payload naming the other is refused naming
/// `bootrom` (nothing is made).
#[test]
fn bootrom_uefi_is_taken_and_an_image_names_its_firmware() {
    use vmm_server::config::{Bootrom, VmConfig};
    let mut reg = Registry::new("s");
    let mut host = FakeHost::default();
    let made = |reg: &mut Registry, host: &mut FakeHost, payload: Value| -> Result<Map<String, Value>, crate::ops::OpError> {
        let c = crate::ops::create(&payload.to_string(), reg, host)?;
        Ok(reg.get(&c.uuid).expect("made").props.clone())
    };
    let uefi = made(&mut reg, &mut host, json!({"brand": "bhyve", "bootrom": "uefi", "disks": [{"boot": true, "size": 10}]})).unwrap();
    assert_eq!(uefi["bootrom"], "uefi");
    let c = VmConfig::from_json(&crate::vmm::vm_config_json(&uefi, "")).unwrap();
    assert_eq!(c.bootrom, Some(Bootrom::Uefi));
    let from_image = made(&mut reg, &mut host, json!({"brand": "bhyve", "disks": [{"boot": true, "image_uuid": UEFI_IMAGE}]})).unwrap();
    assert_eq!(from_image["bootrom"], "uefi");
    let plain =
        made(&mut reg, &mut host, json!({"brand": "bhyve", "disks": [{"boot": true, "image_uuid": "462d1d03-8457-e134-a408-cf9ea2b9be96"}]}))
            .unwrap();
    assert_eq!(plain["bootrom"], "bios", "no requirement: vmadm's default");
    let before = (reg.len(), host.calls.len());
    let bad = json!({"brand": "bhyve", "bootrom": "bios", "disks": [{"boot": true, "image_uuid": UEFI_IMAGE}]});
    match made(&mut reg, &mut host, bad) {
        Err(crate::ops::OpError::Invalid(p)) => {
            assert_eq!(p.bad_values, ["bootrom"]);
            assert!(p.reasons.iter().any(|r| r.contains("requires bootrom \"uefi\"")), "{:?}", p.reasons);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!((reg.len(), host.calls.len()), before, "nothing made");
}

/// The VMM's description crosses as `proc.start`'s start data: a VM with
/// the most NICs, each with every link protection given and two
/// addresses, and 16 resolvers still fits in that one message (only
/// `customer_metadata` makes a VM's start stage its `vm.json` in pieces).
#[test]
fn the_largest_nic_set_fits_the_vmms_start_data() {
    let nic = |i: u32| {
        json!({"nic_tag": "external", "mac": format!("90:b8:d0:00:00:{i:02x}"), "ips": [format!("10.1.{i}.10/24"), format!("10.2.{i}.10/24")],
               "gateways": [format!("10.1.{i}.1")], "vlan_id": 4000 + i, "allow_ip_spoofing": false, "allow_mac_spoofing": false,
               "allow_dhcp_spoofing": false, "allow_restricted_traffic": false, "primary": i == 0, "model": "virtio"})
    };
    let resolvers: Vec<String> = (0..16).map(|i| format!("192.168.100.{i}")).collect();
    let p = created(json!({"brand": "bhyve", "uuid": "0bad1dea-0000-4000-8000-000000000001", "alias": "many-nics", "ram": 1024,
        "vcpus": 4, "bootrom": "bios", "resolvers": resolvers, "disks": [{"size": 10240, "boot": true}],
        "nics": (0..8).map(nic).collect::<Vec<_>>()}));
    // As a made instance's: with its timestamp and the machine's uuid.
    let mut p = p;
    p.insert("create_timestamp".into(), json!("2026-12-06T05:59:59.999Z"));
    let json = crate::vmm::vm_config_json(&p, "44454c4c-3800-1036-8051-b7c04f4e5331");
    // libipc's PROC_START_DATA_MAX (this crate does not depend on libipc).
    assert!(json.len() <= 2048, "{} bytes: {json}", json.len());
}

#[test]
fn vmm_server_accepts_a_direct_boot_instance() {
    use vmm_server::config::VmConfig;
    let p = created(json!({"brand": "kvm", "kernel": "bzImage", "initrd": "initrd.img", "cmdline": "console=ttyS0",
        "ram": "128", "cpu_cap": 0, "quota": 0, "disks": [{"path": "disk.img", "nocreate": true, "boot": true}]}));
    let json = crate::vmm::vm_config_json(&p, "");
    let c = VmConfig::from_json(&json).unwrap_or_else(|e| panic!("{e}\n{json}"));
    assert_eq!(
        (c.kernel.as_str(), c.initrd.as_deref(), c.cmdline.as_str()),
        ("bzImage", Some("initrd.img"), "console=ttyS0")
    );
    assert_eq!(c.bootrom, None);
    assert_eq!(c.ram_mib, 128);
    // vmadm's 0 = "no cap" / "no quota" is left out.
    assert_eq!((c.cpu_cap, c.quota_gib), (None, None));
    assert_eq!(c.disks[0].path, "disk.img");
}

// ---- the fake machine the verbs run against ----

#[derive(Default)]
struct FakeHost {
    clock: u32,
    rnd: u8,
    files: BTreeMap<String, String>,
    stdin: Option<String>,
    calls: Vec<String>,
    fail: BTreeMap<&'static str, String>,
    stored: BTreeMap<String, String>,
    next_pid: u64,
    /// ms since 1970 ([`Host::now_ms`]).
    ms: u64,
    /// The VMs whose vmm-server runs.
    running: alloc::collections::BTreeSet<String>,
    /// The guests ignore the power button.
    deaf: bool,
}

impl FakeHost {
    fn call(&mut self, what: &'static str, vm: &Instance) -> Result<(), String> {
        self.calls.push(format!("{what} {}", vm.uuid));
        match self.fail.get(what) {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }
}

impl Host for FakeHost {
    fn now(&mut self) -> String {
        self.clock += 1;
        format!("2026-12-03T10:00:{:02}.000Z", self.clock % 60)
    }
    fn random(&mut self, buf: &mut [u8]) {
        for b in buf {
            self.rnd = self.rnd.wrapping_add(7);
            *b = self.rnd;
        }
    }
    fn read_payload(&mut self, file: Option<&str>) -> Result<String, String> {
        match file {
            Some(f) => self.files.get(f).cloned().ok_or_else(|| format!("{f}: no such file")),
            None => self.stdin.take().ok_or_else(|| "refusing to read a payload from a terminal; use -f".into()),
        }
    }
    fn image(&mut self, image: &Uuid) -> Result<crate::verbs::ImageFacts, String> {
        let facts = |size_mib, bootrom: Option<&str>| Ok(crate::verbs::ImageFacts { size_mib, bootrom: bootrom.map(String::from) });
        match image.text().as_str() {
            "462d1d03-8457-e134-a408-cf9ea2b9be96" => facts(10240, None),
            UEFI_IMAGE => facts(2048, Some("uefi")),
            _ => Err("not installed (imgadm list)".into()),
        }
    }
    fn provision(&mut self, vm: &Instance, vmm_json: &str) -> Result<(), String> {
        vmm_server::config::VmConfig::from_json(vmm_json).map_err(|e| e.to_string())?;
        self.call("provision", vm)
    }
    fn start(&mut self, vm: &Instance, vmm_json: &str) -> Result<u64, String> {
        vmm_server::config::VmConfig::from_json(vmm_json).map_err(|e| e.to_string())?;
        self.call("start", vm)?;
        self.running.insert(vm.uuid.text());
        self.next_pid += 1;
        Ok(100 + self.next_pid)
    }
    fn now_ms(&mut self) -> u64 {
        // A second passes at each look at the clock.
        self.ms = self.ms.saturating_add(1000);
        self.ms
    }
    fn power_button(&mut self, vm: &Instance) -> Result<(), String> {
        self.call("button", vm)?;
        if !self.deaf {
            self.running.remove(&vm.uuid.text());
        }
        Ok(())
    }
    fn vmm_running(&mut self, vm: &Instance) -> bool {
        self.running.contains(&vm.uuid.text())
    }
    fn halt(&mut self, vm: &Instance) -> Result<(), String> {
        self.calls.push(format!("halt {} state={}", vm.uuid, vm.state));
        match self.fail.get("halt") {
            Some(e) => Err(e.clone()),
            None => {
                self.running.remove(&vm.uuid.text());
                Ok(())
            }
        }
    }
    fn update_live(&mut self, vm: &Instance, changed: &[String]) -> Result<(), String> {
        self.calls.push(format!("live {} {}", vm.uuid, changed.join(",")));
        Ok(())
    }
    fn destroy(&mut self, vm: &Instance) -> Result<(), String> {
        self.call("destroy", vm)
    }
    fn console(&mut self, vm: &Instance) -> Result<(), String> {
        self.call("console", vm)
    }
    fn snapshot(&mut self, vm: &Instance, name: &str) -> Result<(), String> {
        self.call("snapshot", vm).map(|()| self.calls.last_mut().expect("pushed").push_str(&format!("@{name}")))
    }
    fn destroy_snapshot(&mut self, vm: &Instance, name: &str) -> Result<(), String> {
        self.call("destroy_snapshot", vm).map(|()| self.calls.last_mut().expect("pushed").push_str(&format!("@{name}")))
    }
    fn rollback(&mut self, vm: &Instance, name: &str) -> Result<(), String> {
        self.call("rollback", vm).map(|()| self.calls.last_mut().expect("pushed").push_str(&format!("@{name}")))
    }
    fn persist(&mut self, uuid: &Uuid, record: Option<&str>) -> Result<(), String> {
        if let Some(e) = self.fail.get("persist") {
            return Err(e.clone());
        }
        match record {
            Some(r) => self.stored.insert(uuid.text(), r.into()),
            None => self.stored.remove(&uuid.text()),
        };
        Ok(())
    }
}

fn run(args: &str, reg: &mut Registry, host: &mut FakeHost) -> Output {
    let argv: Vec<&str> = args.split_whitespace().collect();
    verbs::run(&argv, reg, host)
}

fn run_stdin(args: &str, payload: &str, reg: &mut Registry, host: &mut FakeHost) -> Output {
    host.stdin = Some(payload.into());
    run(args, reg, host)
}
