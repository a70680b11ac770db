//! A VM's record is bounded by what the pool keeps for it
//! (`properties::MAX_RECORD`), and its description for its VMM (`vm.json`,
//! a part of it) by what init starts a VMM with
//! (`properties::MAX_VM_JSON`): a payload whose `customer_metadata` would
//! take either past its bound is refused when it is validated, created or
//! updated, naming the property (SmartOS's `bad_values`), never made and
//! then lost at a restart or refused at its start.

use super::*;

const U1: &str = "11111111-1111-4111-8111-111111111111";

fn machine() -> (Registry, FakeHost) {
    (Registry::new("00000000-0000-0000-0000-0000000000aa"), FakeHost::default())
}

/// A direct-boot VM (no disks, no NICs: nothing generated but its uuid)
/// with `customer_metadata` `{"user-script": "x" * script}`.
fn payload(script: usize) -> Value {
    json!({"brand": "bhyve", "uuid": U1, "kernel": "/boot/vmlinuz", "ram": 256,
           "customer_metadata": {"user-script": "x".repeat(script)}})
}

/// The length of the record `vmadm create` makes from `p`, as the check
/// counts it (the properties and `RECORD_OVERHEAD`).
fn record_len(p: &Value) -> usize {
    let mut props = validate::check_create(&obj(p.clone())).payload;
    validate::create_defaults(&mut props, &mut counter_random());
    Value::Object(props).to_string().len() + properties::RECORD_OVERHEAD
}

/// The metadata size that makes the record exactly the limit.
fn script_at_the_limit() -> usize {
    let base = record_len(&payload(0));
    let n = properties::MAX_RECORD - base;
    assert_eq!(record_len(&payload(n)), properties::MAX_RECORD);
    n
}

#[test]
fn validate_refuses_a_vm_json_over_the_limit_naming_customer_metadata() {
    let (mut reg, mut host) = machine();
    let n = script_at_the_limit();
    let out = run_stdin("validate create", &payload(n).to_string(), &mut reg, &mut host);
    assert_eq!((out.code, out.stderr.as_str()), (0, "VALID 'create' payload for bhyve brand VMs.\n"));
    let out = run_stdin("validate create", &payload(n + 1).to_string(), &mut reg, &mut host);
    assert_eq!(out.code, 1, "{out:?}");
    assert_eq!(
        out.stderr,
        "{\n  \"bad_values\": [\n    \"customer_metadata\"\n  ],\n  \"bad_properties\": [],\n  \"missing_properties\": []\n}\n"
    );
    let c = validate::check_create(&obj(payload(n + 1)));
    assert_eq!(c.problems.bad_values, ["customer_metadata"]);
    let why = &c.problems.reasons[0];
    assert!(why.starts_with("vmadm: property \"customer_metadata\": "), "{why}");
    assert!(why.contains(&format!("{} bytes", properties::MAX_RECORD + 1)) && why.contains("the pool keeps"), "{why}");
}

#[test]
fn create_refuses_it_before_anything_is_made() {
    let (mut reg, mut host) = machine();
    let n = script_at_the_limit();
    let out = run_stdin("create", &payload(n + 1).to_string(), &mut reg, &mut host);
    assert_eq!(out.code, 1, "{out:?}");
    let mut lines = out.stderr.lines();
    assert_eq!(lines.next(), Some("Failed to create VM: Invalid value(s) for: customer_metadata"));
    let why = lines.next().unwrap_or_default();
    assert!(why.starts_with("vmadm: property \"customer_metadata\": ") && why.contains(&format!("{} bytes", properties::MAX_RECORD + 1)), "{why}");
    assert_eq!((reg.len(), host.calls.len(), host.stored.len()), (0, 0, 0), "nothing made");
    // At the limit it is made and started, with the metadata whole.
    let out = run_stdin("create", &payload(n).to_string(), &mut reg, &mut host);
    assert_eq!((out.code, out.stderr.as_str()), (0, format!("Successfully created VM {U1}\n").as_str()));
    assert_eq!(host.calls, [format!("provision {U1}"), format!("start {U1}")]);
    let vm = reg.get(&Uuid::parse(U1).unwrap()).unwrap();
    // The record as saved fits what the pool keeps (the overhead counted
    // is at least what `vmadm get` adds), and the VMM gets the metadata.
    let record = Value::Object(vm.to_json(&reg.server_uuid)).to_string();
    assert!(record.len() <= properties::MAX_RECORD, "{}", record.len());
    let json = crate::vmm::vm_config_json(&vm.props, &reg.server_uuid);
    let c = vmm_server::config::VmConfig::from_json(&json).unwrap();
    assert_eq!(c.customer_metadata.get("user-script").map(String::len), Some(n));
}

/// Metadata set piece by piece (each update well within a request) may
/// not take the description past the limit either: the update that
/// would is refused and the VM keeps what it had.
#[test]
fn update_refuses_the_metadata_that_would_not_fit() {
    let (mut reg, mut host) = machine();
    let n = script_at_the_limit();
    let out = run_stdin("create", &payload(n - 100).to_string(), &mut reg, &mut host);
    assert_eq!(out.code, 0, "{out:?}");
    let before = reg.get(&Uuid::parse(U1).unwrap()).unwrap().props.clone();
    let set = json!({"set_customer_metadata": {"cloud-init:user-data": "y".repeat(200)}});
    let out = run_stdin(&format!("update {U1}"), &set.to_string(), &mut reg, &mut host);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.starts_with(&format!("Unable to update VM {U1}: Invalid value(s) for: customer_metadata\nvmadm: property \"customer_metadata\": ")),
        "{out:?}"
    );
    assert_eq!(reg.get(&Uuid::parse(U1).unwrap()).unwrap().props, before, "unchanged");
    // Room made first: then it fits.
    let out = run_stdin(&format!("update {U1}"), r#"{"remove_customer_metadata": ["user-script"]}"#, &mut reg, &mut host);
    assert_eq!(out.code, 0, "{out:?}");
    let out = run_stdin(&format!("update {U1}"), &set.to_string(), &mut reg, &mut host);
    assert_eq!(out.code, 0, "{out:?}");
}

/// What else is long (many NICs with long DHCP client ids) is named when
/// it, not the metadata, takes the most.
#[test]
fn the_property_that_takes_the_most_is_named() {
    let cids: Vec<String> = (0..20).map(|i| format!("0x{:02x}{}", i, "ab".repeat(254))).collect();
    let nics: Vec<Value> = (0..8)
        .map(|i| json!({"nic_tag": "admin", "ips": ["dhcp"], "mac": format!("90:b8:d0:00:00:{i:02x}"), "allowed_dhcp_cids": cids}))
        .collect();
    let p = json!({"brand": "bhyve", "kernel": "/k", "customer_metadata": {"a": "b"}, "nics": nics});
    let c = validate::check_create(&obj(p));
    assert_eq!(c.problems.bad_values, ["nics"], "{:?}", c.problems);
}
