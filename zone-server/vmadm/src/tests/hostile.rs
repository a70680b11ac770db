//! Malformed and hostile payloads: each gets a clear error naming the
//! property, and a `vmadm create` of it changes nothing.

use super::*;
use crate::hostile::{List, cases};

/// The host tests' valid payload the cases go over (direct boot).
fn payload_of(extra: &Value) -> Value {
    crate::hostile::payload_of(&json!({"brand": "bhyve", "kernel": "bzImage"}), extra)
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
