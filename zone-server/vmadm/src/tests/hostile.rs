//! Malformed and hostile payloads: each gets a clear error naming the
//! property, and a `vmadm create` of it changes nothing.

use super::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum List {
    BadValue,
    BadProperty,
    Missing,
}

/// Payloads (merged over a valid direct-boot one) and what vmadm must say.
fn cases() -> Vec<(&'static str, Value, List, &'static str)> {
    use List::*;
    let nic = |extra: Value| {
        let mut n = json!({"nic_tag": "admin"});
        for (k, v) in extra.as_object().unwrap() {
            n[k] = v.clone();
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
        ("nine nics", json!({"nics": vec![json!({"nic_tag": "a"}); 9]}), BadValue, "nics"),
        ("nic without nic_tag", json!({"nics": [{"ip": "dhcp"}]}), Missing, "nics.0.nic_tag"),
        ("nic_tag path trick", nic(json!({"nic_tag": "../admin"})), BadValue, "nics.0.nic_tag"),
        ("multicast mac", nic(json!({"mac": "01:00:5e:00:00:01"})), BadValue, "nics.0.mac"),
        ("garbage mac", nic(json!({"mac": "zz:zz"})), BadValue, "nics.0.mac"),
        (
            "duplicate macs",
            json!({"nics": [{"nic_tag": "a", "mac": "90:b8:d0:00:00:01"},
            {"nic_tag": "b", "mac": "90:B8:D0:0:0:1"}]}),
            BadValue,
            "nics.1.mac",
        ),
        (
            "two primaries",
            json!({"nics": [{"nic_tag": "a", "primary": true}, {"nic_tag": "b", "primary": "true"}]}),
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

fn payload_of(extra: &Value) -> Value {
    let mut p = json!({"brand": "bhyve", "kernel": "bzImage"});
    for (k, v) in extra.as_object().unwrap() {
        if v.is_null() {
            p.as_object_mut().unwrap().remove(k);
        } else {
            p[k] = v.clone();
        }
    }
    p
}

#[test]
fn hostile_payloads_get_clear_errors_naming_the_property() {
    let cases = cases();
    assert!(cases.len() >= 30, "{}", cases.len());
    for (what, extra, list, prop) in &cases {
        let c = create(payload_of(extra));
        let p = &c.problems;
        let named = match list {
            List::BadValue => &p.bad_values,
            List::BadProperty => &p.bad_properties,
            List::Missing => &p.missing_properties,
        };
        assert!(named.iter().any(|n| n == prop), "{what}: {prop} not in {list:?}: {p:?}");
        assert!(p.reasons.iter().any(|r| r.contains(&format!("\"{prop}\""))), "{what}: no reason names {prop}: {p:?}");
        // Reasons stay short and printable whatever the payload held.
        for r in &p.reasons {
            assert!(r.len() < 300 && !r.chars().any(|c| c.is_control()), "{what}: {r:?}");
        }
    }
}

#[test]
fn hostile_creates_change_nothing() {
    for (what, extra, list, _) in cases() {
        let mut reg = Registry::new("s");
        let mut host = FakeHost::default();
        let text = payload_of(&extra).to_string();
        let out = run_stdin("create", &text, &mut reg, &mut host);
        if list == List::BadProperty {
            // Unknown properties: create warns, ignores them, and creates.
            assert_eq!(out.code, 0, "{what}: {out:?}");
            assert!(out.stderr.starts_with("WARNING: ignoring property"), "{what}: {out:?}");
            continue;
        }
        assert_eq!(out.code, 1, "{what}: {out:?}");
        assert!(out.stderr.starts_with("Failed to create VM: "), "{what}: {out:?}");
        assert!(reg.is_empty() && host.calls.is_empty() && host.stored.is_empty(), "{what}");
        // And validate says so in vmadm's JSON.
        host.stdin = Some(text);
        let v = run("validate create", &mut reg, &mut host);
        assert_eq!(v.code, 1, "{what}");
        let j: Value = serde_json::from_str(v.stderr.trim()).unwrap_or_else(|e| panic!("{what}: {e}: {}", v.stderr));
        assert!(j["bad_values"].is_array() && j["bad_properties"].is_array() && j["missing_properties"].is_array());
    }
}

#[test]
fn unparsable_payloads_are_refused_before_anything() {
    let deep = format!("{}1{}", "[".repeat(40), "]".repeat(40));
    let deep_meta = {
        let mut v = json!("x");
        for _ in 0..20 {
            v = json!({ "a": v });
        }
        json!({"brand": "bhyve", "customer_metadata": v}).to_string()
    };
    let cases = [
        ("not JSON", "{\"brand\": \"bhyve\",".to_owned(), "Invalid JSON payload: "),
        ("not an object", "[1,2]".to_owned(), "must be a JSON object"),
        ("deep nesting", deep, "nests deeper"),
        ("deep metadata", deep_meta, "nests deeper"),
        ("huge payload", format!("{{\"alias\": \"{}\"}}", "a".repeat(2 << 20)), "at most"),
        ("empty", String::new(), "Invalid JSON payload: "),
    ];
    for (what, text, words) in cases {
        let mut reg = Registry::new("s");
        let mut host = FakeHost::default();
        let out = run_stdin("create", &text, &mut reg, &mut host);
        assert_eq!(out.code, 1, "{what}");
        assert!(out.stderr.contains(words), "{what}: {}", out.stderr);
        assert!(reg.is_empty() && host.calls.is_empty(), "{what}");
    }
}

#[test]
fn a_duplicate_uuid_is_refused_and_changes_nothing() {
    let mut reg = Registry::new("s");
    let mut host = FakeHost::default();
    let p = json!({"brand": "bhyve", "kernel": "k", "uuid": "11111111-1111-4111-8111-111111111111", "alias": "first"});
    assert_eq!(run_stdin("create", &p.to_string(), &mut reg, &mut host).code, 0);
    let before = (reg.clone(), host.calls.clone(), host.stored.clone());
    let p2 =
        json!({"brand": "bhyve", "kernel": "k", "uuid": "11111111-1111-4111-8111-111111111111", "alias": "second"});
    let out = run_stdin("create", &p2.to_string(), &mut reg, &mut host);
    assert_eq!(out.code, 1);
    assert_eq!(out.stderr, "Failed to create VM: VM with UUID 11111111-1111-4111-8111-111111111111 already exists\n");
    assert_eq!((reg, host.calls, host.stored), before);
}

#[test]
fn hostile_command_lines_are_refused() {
    let mut reg = Registry::new("s");
    let mut host = FakeHost::default();
    // Usage errors: the message, the usage summary, exit 2.
    for args in [
        "",
        "frobnicate",
        "get ../../etc/passwd",
        "get 11111111-1111-4111-8111-11111111111Z",
        "start",
        "stop 11111111-1111-4111-8111-111111111111 -t 0",
        "stop 11111111-1111-4111-8111-111111111111 -t 99999999999",
        "stop 11111111-1111-4111-8111-111111111111 -t",
        "list -x",
        "list alias",
        "info 11111111-1111-4111-8111-111111111111 secrets",
        "update 11111111-1111-4111-8111-111111111111 =5",
        "validate update",
        "validate destroy",
        "create -f",
    ] {
        let out = run(args, &mut reg, &mut host);
        assert_eq!(out.code, 2, "{args}: {out:?}");
        assert!(out.stderr.contains("Usage: vmadm"), "{args}");
    }
    // Bad fields and filters: one line, exit 1.
    for (args, msg) in [
        ("list -o customer_metadata", "invalid order field: customer_metadata"),
        ("list -s -kernel", "invalid sort field: -kernel"),
        ("list -o nics.*.ip", "Invalid order key: \"nics.*.ip\""),
        ("list nics.0.mtu=1500", "Invalid filter key: \"nics.0.mtu\""),
        ("lookup kernel=x", "Invalid lookup key: \"kernel\""),
        ("lookup -o uuid", "Cannot specify -o without -j"),
        ("list alias=~^web", "regular expression filters (field=~value) are not supported yet"),
    ] {
        let out = run(args, &mut reg, &mut host);
        assert_eq!(out.code, 1, "{args}: {out:?}");
        assert!(out.stderr.contains(msg) && !out.stderr.contains("Usage"), "{args}: {}", out.stderr);
    }
    assert!(host.calls.is_empty());
}

#[test]
fn hostile_updates_are_refused_by_name() {
    let cases = [
        ("ram=abc", "ram"),
        ("ram=16", "ram"),
        ("uuid=22222222-2222-4222-8222-222222222222", "uuid"),
        ("brand=kvm", "brand"),
        ("state=running", "state"),
        ("zonepath=/etc", "zonepath"),
        ("alias=../x", "alias"),
        ("vnc_port=5900", "vnc_port"),
        ("disks=[]", "disks"),
        ("frob=1", "frob"),
    ];
    for (args, prop) in cases {
        let mut reg = Registry::new("s");
        let mut host = FakeHost::default();
        let p = json!({"brand": "bhyve", "kernel": "k", "uuid": "11111111-1111-4111-8111-111111111111", "ram": 512});
        assert_eq!(run_stdin("create", &p.to_string(), &mut reg, &mut host).code, 0);
        let before = reg.clone();
        let out = run(&format!("update 11111111-1111-4111-8111-111111111111 {args}"), &mut reg, &mut host);
        assert_eq!(out.code, 1, "{args}: {out:?}");
        assert!(out.stderr.starts_with("Unable to update VM 11111111-1111-4111-8111-111111111111: "), "{args}");
        assert!(out.stderr.contains(&format!("\"{prop}\"")), "{args}: {}", out.stderr);
        assert_eq!(reg, before, "{args}");
    }
}

#[test]
fn hostile_property_names_cannot_drive_the_terminal() {
    let mut reg = Registry::new("s");
    let mut host = FakeHost::default();
    let name = format!("\u{1b}]0;pwned\u{7}\u{1b}[2J{}", "x".repeat(10_000));
    let mut p = json!({"brand": "bhyve", "kernel": "k"});
    p[name.as_str()] = json!(1);
    p["customer_metadata"] = json!({ name.as_str(): {"nested": 1} });
    let out = run_stdin("validate create", &p.to_string(), &mut reg, &mut host);
    assert_eq!(out.code, 1);
    assert!(!out.stderr.chars().any(|c| c.is_control() && c != '\n'), "{:?}", out.stderr);
    assert!(out.stderr.len() < 1000, "{}", out.stderr.len());
    assert!(out.stderr.contains(r#"\\u{1b}]0;pwned\\u{7}"#), "{}", &out.stderr[..200]);
    p["customer_metadata"] = json!({});
    let out = run_stdin("create", &p.to_string(), &mut reg, &mut host);
    assert_eq!(out.code, 0);
    let warning = out.stderr.lines().next().unwrap();
    assert!(!warning.chars().any(|c| c.is_control()) && warning.len() < 250, "{warning:?}");
}
