//! Malformed and hostile `vmadm create` payloads, each with what vmadm
//! must say about it: one table for the host tests (`tests/hostile.rs`,
//! over a direct-boot payload) and for the machine (the `api/http-qemu`
//! case sends each to a running Alcove through the HTTP API), so both
//! check the same 50-odd cases. NICs are on `admin`, a nic_tag the
//! machine has (an unknown one is refused first, naming it).

use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use serde_json::{Map, Value, json};

/// Where vmadm's answer names the property.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum List {
    /// `bad_values`: refused.
    BadValue,
    /// `bad_properties`: `validate` refuses it, `create` warns and goes on.
    BadProperty,
    /// `missing_properties`: refused.
    Missing,
}

/// What each payload is, its properties (merged over a valid payload by
/// [`payload_of`]), the list that must name it and the property named.
pub fn cases() -> Vec<(&'static str, Value, List, &'static str)> {
    use List::*;
    let nic = |extra: Value| {
        let mut n = Map::new();
        n.insert("nic_tag".into(), json!("admin"));
        if let Some(extra) = extra.as_object() {
            n.extend(extra.clone());
        }
        json!({"nics": [n]})
    };
    let disk = |d: Value| json!({"kernel": Value::Null, "disks": [d]});
    let many_keys: Map<String, Value> = (0..300).map(|i| (format!("k{i}"), json!("v"))).collect();
    vec![
        ("negative ram", json!({"ram": -1}), BadValue, "ram"),
        ("huge ram", json!({"ram": 1_000_000_000_000_000i64}), BadValue, "ram"),
        ("ram in exponent form", json!({"ram": "1e3"}), BadValue, "ram"),
        ("ram as an array", json!({"ram": [256]}), BadValue, "ram"),
        ("zero vcpus", json!({"vcpus": 0}), BadValue, "vcpus"),
        ("too many vcpus", json!({"vcpus": 100000}), BadValue, "vcpus"),
        ("alias path trick", json!({"alias": "../../etc/passwd"}), BadValue, "alias"),
        ("alias dot-dot", json!({"alias": ".."}), BadValue, "alias"),
        ("alias with NUL", json!({"alias": "a\u{0}b"}), BadValue, "alias"),
        ("alias with escape sequence", json!({"alias": "a\u{1b}[2Jb"}), BadValue, "alias"),
        ("huge alias", json!({"alias": "a".repeat(10_000)}), BadValue, "alias"),
        ("bad hostname", json!({"hostname": "bad_host!"}), BadValue, "hostname"),
        ("uuid not a uuid", json!({"uuid": "not-a-uuid"}), BadValue, "uuid"),
        ("uuid path trick", json!({"uuid": "../11111111-1111-4111-8111-11111111111"}), BadValue, "uuid"),
        ("brand a number", json!({"brand": 5}), BadValue, "brand"),
        ("disks an object", json!({"disks": {"boot": true}}), BadValue, "disks"),
        (
            "five disks",
            json!({"disks": [{"size": 1}, {"size": 1}, {"size": 1}, {"size": 1}, {"size": 1}]}),
            BadValue,
            "disks",
        ),
        ("disk size zero", json!({"disks": [{"size": 0}]}), BadValue, "disks.0.size"),
        ("disk size huge", json!({"disks": [{"size": 1i64 << 40}]}), BadValue, "disks.0.size"),
        ("disk path trick", json!({"disks": [{"path": "../../dev/sda"}]}), BadValue, "disks.0.path"),
        ("disk path dot", json!({"disks": [{"path": "/zones/./x"}]}), BadValue, "disks.0.path"),
        (
            "disk block size not a power of two",
            json!({"disks": [{"size": 10, "block_size": 1000}]}),
            BadValue,
            "disks.0.block_size",
        ),
        ("two boot disks", json!({"disks": [{"size": 1, "boot": true}, {"size": 1, "boot": true}]}), BadValue, "disks"),
        ("firmware boot without a boot disk", disk(json!({"size": 10})), BadValue, "disks"),
        (
            "image and size",
            json!({"disks": [{"image_uuid": "462d1d03-8457-e134-a408-cf9ea2b9be96", "size": 1}]}),
            BadValue,
            "disks.0.size",
        ),
        ("disk without size or image", json!({"disks": [{"boot": true}]}), Missing, "disks.0.size"),
        (
            "duplicate disk uuids",
            json!({"disks": [{"size": 1, "uuid": "462d1d03-8457-e134-a408-cf9ea2b9be96"},
            {"size": 1, "uuid": "462D1D03-8457-E134-A408-CF9EA2B9BE96"}]}),
            BadValue,
            "disks.1.uuid",
        ),
        ("nine nics", json!({"nics": vec![json!({"nic_tag": "admin"}); 9]}), BadValue, "nics"),
        ("nic without nic_tag", json!({"nics": [{"ip": "dhcp"}]}), Missing, "nics.0.nic_tag"),
        ("nic_tag path trick", nic(json!({"nic_tag": "../admin"})), BadValue, "nics.0.nic_tag"),
        ("multicast mac", nic(json!({"mac": "01:00:5e:00:00:01"})), BadValue, "nics.0.mac"),
        ("garbage mac", nic(json!({"mac": "zz:zz"})), BadValue, "nics.0.mac"),
        (
            "duplicate macs",
            json!({"nics": [{"nic_tag": "admin", "mac": "90:b8:d0:00:00:01"},
            {"nic_tag": "admin", "mac": "90:B8:D0:0:0:1"}]}),
            BadValue,
            "nics.1.mac",
        ),
        (
            "two primaries",
            json!({"nics": [{"nic_tag": "admin", "primary": true}, {"nic_tag": "admin", "primary": "true"}]}),
            BadValue,
            "nics",
        ),
        ("vlan out of range", nic(json!({"vlan_id": 5000})), BadValue, "nics.0.vlan_id"),
        ("static ip without netmask", nic(json!({"ip": "10.0.0.5"})), Missing, "nics.0.netmask"),
        ("ips without prefix", nic(json!({"ips": ["10.0.0.5"]})), BadValue, "nics.0.ips.0"),
        ("huge ips entry", nic(json!({"ips": ["1".repeat(4000)]})), BadValue, "nics.0.ips.0"),
        (
            "ip disagrees with ips",
            nic(json!({"ip": "10.0.0.5", "netmask": "255.0.0.0", "ips": ["10.0.0.6/8"]})),
            BadValue,
            "nics.0.ip",
        ),
        (
            "non-contiguous netmask",
            nic(json!({"ip": "10.0.0.5", "netmask": "255.0.255.0"})),
            BadValue,
            "nics.0.netmask",
        ),
        ("unknown nic property", nic(json!({"colour": "red"})), BadProperty, "nics.0.colour"),
        ("unknown property", json!({"foo": 1}), BadProperty, "foo"),
        ("read-only property", json!({"state": "running"}), BadProperty, "state"),
        ("zone-only property", json!({"dns_domain": "example.com"}), BadProperty, "dns_domain"),
        ("nested metadata", json!({"customer_metadata": {"a": {"b": "c"}}}), BadValue, "customer_metadata.a"),
        ("metadata with 300 keys", json!({"customer_metadata": many_keys}), BadValue, "customer_metadata"),
        (
            "huge metadata value",
            json!({"customer_metadata": {"a": "x".repeat(100_000)}}),
            BadValue,
            "customer_metadata.a",
        ),
        (
            "metadata key with control characters",
            json!({"internal_metadata": {"a\nb": "c"}}),
            BadValue,
            "internal_metadata",
        ),
        ("tag value an array", json!({"tags": {"a": [1]}}), BadValue, "tags.a"),
        ("100 resolvers", json!({"resolvers": vec![json!("8.8.8.8"); 100]}), BadValue, "resolvers"),
        ("resolver not an address", json!({"resolvers": ["dns.example.com"]}), BadValue, "resolvers.0"),
        ("kernel and bootrom", json!({"bootrom": "bios"}), BadValue, "kernel"),
        ("cmdline with NUL", json!({"cmdline": "console=ttyS0\u{0}init=/bin/sh"}), BadValue, "cmdline"),
        (
            "max_physical_memory below ram",
            json!({"ram": 1024, "max_physical_memory": 512}),
            BadValue,
            "max_physical_memory",
        ),
        ("billing_id not a uuid", json!({"billing_id": "abc"}), BadValue, "billing_id"),
    ]
}

/// `base` (a valid payload) with `extra`'s properties over it; a `null`
/// one removes the property.
pub fn payload_of(base: &Value, extra: &Value) -> Value {
    let mut p = base.clone();
    let (Some(p_map), Some(extra)) = (p.as_object_mut(), extra.as_object()) else { return p };
    for (k, v) in extra {
        if v.is_null() {
            p_map.remove(k);
        } else {
            p_map.insert(k.clone(), v.clone());
        }
    }
    p
}

