//! The verbs end to end against the fake machine: what vmadm prints, its
//! exit codes, and what reaches the machine.

use super::*;

const U1: &str = "11111111-1111-4111-8111-111111111111";
const U2: &str = "22222222-2222-4222-8222-222222222222";
const U3: &str = "33333333-3333-4333-8333-333333333333";

fn machine() -> (Registry, FakeHost) {
    (Registry::new("00000000-0000-0000-0000-0000000000aa"), FakeHost::default())
}

fn make(reg: &mut Registry, host: &mut FakeHost, p: Value) -> Output {
    let out = run_stdin("create", &p.to_string(), reg, host);
    assert_eq!(out.code, 0, "{out:?}");
    out
}

#[test]
fn validate_prints_vmadms_lines() {
    let (mut reg, mut host) = machine();
    let out = run_stdin("validate create", &smartos_payload().to_string(), &mut reg, &mut host);
    assert_eq!(
        out,
        Output { stdout: String::new(), stderr: "VALID 'create' payload for bhyve brand VMs.\n".into(), code: 0 }
    );
    host.files.insert("vm.json".into(), json!({"brand": "kvm", "kernel": "k"}).to_string());
    let out = run("validate create -f vm.json", &mut reg, &mut host);
    assert_eq!(out.stderr, "VALID 'create' payload for kvm brand VMs.\n");
    let out = run_stdin("validate update bhyve", r#"{"ram": 2048, "set_tags": {"a": "b"}}"#, &mut reg, &mut host);
    assert_eq!(out.stderr, "VALID 'update' payload for bhyve brand VMs.\n");
    let out = run_stdin(
        "validate create",
        r#"{"brand": "bhyve", "kernel": "k", "ram": "lots", "foo": 1}"#,
        &mut reg,
        &mut host,
    );
    assert_eq!(out.code, 1);
    assert_eq!(out.stdout, "");
    assert_eq!(
        out.stderr,
        "{\n  \"bad_values\": [\n    \"ram\"\n  ],\n  \"bad_properties\": [\n    \"foo\"\n  ],\n  \"missing_properties\": []\n}\n"
    );
    let out = run_stdin("validate update joyent", "{}", &mut reg, &mut host);
    assert_eq!((out.code, out.stderr.as_str()), (1, "{\"bad_brand\":\"joyent\"}\n"));
    host.stdin = None;
    let out = run("validate create", &mut reg, &mut host);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("terminal"), "{out:?}");
}

#[test]
fn the_lifecycle_of_a_vm() {
    let (mut reg, mut host) = machine();
    let mut p = smartos_payload();
    p["uuid"] = json!(U1);
    let out = make(&mut reg, &mut host, p);
    assert_eq!(out.stderr, format!("Successfully created VM {U1}\n"));
    assert_eq!(host.calls, vec![format!("provision {U1}"), format!("start {U1}")]);
    let out = run(&format!("get {U1}"), &mut reg, &mut host);
    let j: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!((j["state"].as_str(), j["pid"].as_u64()), (Some("running"), Some(101)));
    assert_eq!(j["server_uuid"], "00000000-0000-0000-0000-0000000000aa");
    assert_eq!(j["hostname"], "web0.example.com");
    assert!(out.stdout.starts_with("{\n  \""), "two-space indent: {}", out.stdout);
    // The stored record is what get prints.
    let stored: Value = serde_json::from_str(&host.stored[U1]).unwrap();
    assert_eq!(stored, j);

    // Starting a running VM or stopping a stopped one is done already (exit 0).
    let out = run(&format!("start {U1}"), &mut reg, &mut host);
    assert_eq!((out.code, out.stderr), (0, format!("VM {U1} is already running\n")));
    let out = run(&format!("stop {U1} -t 30"), &mut reg, &mut host);
    assert_eq!((out.code, out.stderr.clone()), (0, format!("Successfully completed stop for VM {U1}\n")));
    // The button, then the ended vmm-server reaped.
    assert!(host.calls.ends_with(&[format!("button {U1}"), format!("halt {U1} state=stopping")]), "{:?}", host.calls);
    let out = run(&format!("stop {U1}"), &mut reg, &mut host);
    assert_eq!((out.code, out.stderr), (0, format!("VM {U1} is already not 'running' (currently: stopped)\n")));
    assert!(!reg.get(&Uuid::parse(U1).unwrap()).unwrap().autoboot());

    // Update ram while stopped: next start; max_physical_memory follows.
    let out = run(&format!("update {U1} ram=2048"), &mut reg, &mut host);
    assert_eq!(out.stderr, format!("Successfully updated VM {U1}\n"));
    let vm = reg.get(&Uuid::parse(U1).unwrap()).unwrap();
    assert_eq!((vm.props["ram"].as_i64(), vm.props["max_physical_memory"].as_i64()), (Some(2048), Some(3072)));
    let out = run(&format!("console {U1}"), &mut reg, &mut host);
    assert_eq!(out.stderr, format!("Unable to connect to console of VM {U1}: VM is not running\n"));

    let out = run(&format!("start {U1}"), &mut reg, &mut host);
    assert_eq!(out.stderr, format!("Successfully started VM {U1}\n"));
    assert!(reg.get(&Uuid::parse(U1).unwrap()).unwrap().autoboot());
    assert_eq!(run(&format!("console {U1}"), &mut reg, &mut host).code, 0);
    let out = run(&format!("reboot {U1}"), &mut reg, &mut host);
    assert_eq!(out.stderr, format!("Successfully completed reboot for VM {U1}\n"));
    assert_eq!(run(&format!("stop {U1} -F"), &mut reg, &mut host).code, 0);
    assert_eq!(host.calls.last().unwrap(), &format!("halt {U1} state=running"));
    assert_eq!(run(&format!("start {U1}"), &mut reg, &mut host).code, 0);

    let out = run(&format!("delete {U1}"), &mut reg, &mut host);
    assert_eq!(out.stderr, format!("Successfully deleted VM {U1}\n"));
    assert!(host.calls.ends_with(&[format!("halt {U1} state=running"), format!("destroy {U1}")]));
    assert!(reg.is_empty() && host.stored.is_empty());
    assert_eq!(run(&format!("get {U1}"), &mut reg, &mut host).stderr, format!("Unable to get VM {U1}: VM not found\n"));
    assert_eq!(run(&format!("delete {U1}"), &mut reg, &mut host).code, 1);
}

#[test]
fn create_generates_a_uuid_and_warns_about_unknown_properties() {
    let (mut reg, mut host) = machine();
    let out = make(&mut reg, &mut host, json!({"brand": "bhyve", "kernel": "k", "autoboot": false, "frob": 1}));
    let uuid = reg.iter().next().unwrap().uuid;
    assert_eq!(
        out.stderr,
        format!("WARNING: ignoring property \"frob\": not a bhyve create property\nSuccessfully created VM {uuid}\n")
    );
    let vm = reg.get(&uuid).unwrap();
    assert_eq!(vm.state, State::Stopped);
    assert!(!vm.props.contains_key("frob"));
    assert_eq!(host.calls, vec![format!("provision {uuid}")]);
}

#[test]
fn a_failed_provision_leaves_a_failed_vm() {
    let (mut reg, mut host) = machine();
    host.fail.insert("provision", "image 462d1d03-8457-e134-a408-cf9ea2b9be96 is not installed".into());
    let mut p = smartos_payload();
    p["uuid"] = json!(U1);
    let out = run_stdin("create", &p.to_string(), &mut reg, &mut host);
    assert_eq!(out.code, 1);
    assert_eq!(
        out.stderr,
        format!("Failed to create VM {U1}: image 462d1d03-8457-e134-a408-cf9ea2b9be96 is not installed\n")
    );
    assert_eq!(reg.get(&Uuid::parse(U1).unwrap()).unwrap().state, State::Failed);
    assert!(host.stored[U1].contains("\"state\":\"failed\""));
    let out = run(&format!("start {U1}"), &mut reg, &mut host);
    assert_eq!(out.stderr, format!("Unable to start VM {U1}: VM failed to provision; delete it and create it again\n"));
    assert_eq!(run(&format!("delete {U1}"), &mut reg, &mut host).code, 0);
}

#[test]
fn a_stop_that_fails_changes_nothing() {
    let (mut reg, mut host) = machine();
    make(&mut reg, &mut host, json!({"brand": "bhyve", "kernel": "k", "uuid": U1}));
    let before = reg.clone();
    host.fail.insert("halt", "vmm-server did not answer".into());
    let out = run(&format!("stop {U1} -F"), &mut reg, &mut host);
    assert_eq!(out.stderr, format!("Unable to stop VM {U1}: vmm-server did not answer\n"));
    assert_eq!(reg, before);
    // No button to press: the stop halts, which fails the same way.
    host.fail.insert("button", "no control notification".into());
    let out = run(&format!("stop {U1}"), &mut reg, &mut host);
    assert_eq!(out.stderr, format!("Unable to stop VM {U1}: vmm-server did not answer\n"));
    assert_eq!(reg, before);
}

fn three_vms() -> (Registry, FakeHost) {
    let (mut reg, mut host) = machine();
    make(&mut reg, &mut host, json!({"brand": "bhyve", "kernel": "k", "uuid": U2, "ram": 1024, "alias": "db"}));
    make(&mut reg, &mut host, json!({"brand": "kvm", "kernel": "k", "uuid": U3, "ram": 256, "autoboot": false}));
    make(&mut reg, &mut host, json!({"brand": "bhyve", "kernel": "k", "uuid": U1, "ram": 1024, "alias": "web"}));
    (reg, host)
}

#[test]
fn list_prints_as_smartos() {
    let (mut reg, mut host) = three_vms();
    let out = run("list", &mut reg, &mut host);
    let want = format!(
        "UUID                                  TYPE  RAM      STATE             ALIAS
{U3}  KVM   256      stopped           -
{U1}  BHYV  1024     running           web
{U2}  BHYV  1024     running           db
"
    );
    assert_eq!(out.stdout, want);
    let out = run("list -p", &mut reg, &mut host);
    assert_eq!(out.stdout, format!("{U3}:KVM:256:stopped:\n{U1}:BHYV:1024:running:web\n{U2}:BHYV:1024:running:db\n"));
    let out = run("list -H -o alias,ram -s -ram,alias state=running", &mut reg, &mut host);
    assert_eq!(out.stdout, "db          1024\nweb         1024\n");
    let out = run("list -o uuid,vcpus type=KVM", &mut reg, &mut host);
    assert_eq!(out.stdout, format!("UUID                                  VCPUS\n{U3}  1\n"));
    let out = run("list alias=nothing", &mut reg, &mut host);
    assert_eq!(out.stdout, "UUID                                  TYPE  RAM      STATE             ALIAS\n");
}

#[test]
fn lookup_prints_as_smartos() {
    let (mut reg, mut host) = three_vms();
    assert_eq!(run("lookup ram=1024", &mut reg, &mut host).stdout, format!("{U1}\n{U2}\n"));
    let out = run("lookup -1 alias=web", &mut reg, &mut host);
    assert_eq!((out.code, out.stdout), (0, format!("{U1}\n")));
    let out = run("lookup -1 ram=1024", &mut reg, &mut host);
    assert_eq!((out.code, out.stderr.as_str()), (1, "Requested unique lookup but found 2 results.\n"));
    let out = run("lookup -j -o uuid,alias state=stopped", &mut reg, &mut host);
    let j: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(j, json!([{"uuid": U3}]));
}

#[test]
fn info_reports_a_running_vm() {
    let (mut reg, mut host) = three_vms();
    let out = run(&format!("info {U1} cpus,chardev"), &mut reg, &mut host);
    let j: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(j["cpus"], json!([{"cpu": 0}]));
    assert!(j.get("block").is_none());
    let out = run(&format!("info {U3}"), &mut reg, &mut host);
    assert_eq!(out.stderr, format!("Unable to get VM info for VM {U3}: VM is not running\n"));
}

#[test]
fn update_live_and_next_start() {
    let (mut reg, mut host) = machine();
    make(
        &mut reg,
        &mut host,
        json!({"brand": "bhyve", "kernel": "k", "uuid": U1,
        "customer_metadata": {"a": "1", "b": "2"}, "nics": [{"nic_tag": "admin", "mac": "90:b8:d0:00:00:01"}]}),
    );
    let u = crate::uuid::Uuid::parse(U1).unwrap();
    // Live on a running VM: the machine hears of it.
    let out = run(&format!("update {U1} cpu_cap=150 hostname=web1"), &mut reg, &mut host);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(host.calls.last().unwrap(), &format!("live {U1} cpu_cap"));
    // Next start: only recorded.
    let calls = host.calls.len();
    run(&format!("update {U1} vcpus=4"), &mut reg, &mut host);
    assert_eq!(host.calls.len(), calls);
    assert_eq!(reg.get(&u).unwrap().props["vcpus"], 4);
    // The key/value forms.
    let out = run_stdin(
        &format!("update {U1}"),
        r#"{"set_customer_metadata": {"c": "3"}, "remove_customer_metadata": ["a"]}"#,
        &mut reg,
        &mut host,
    );
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(reg.get(&u).unwrap().props["customer_metadata"], json!({"b": "2", "c": "3"}));
    // NICs: add (the new one primary), update by MAC, remove by MAC.
    let out = run_stdin(
        &format!("update {U1}"),
        r#"{"add_nics": [{"nic_tag": "external", "ips": ["10.1.1.5/24"], "primary": true}]}"#,
        &mut reg,
        &mut host,
    );
    assert_eq!(out.code, 0, "{out:?}");
    let nics = reg.get(&u).unwrap().props["nics"].clone();
    assert_eq!(nics.as_array().unwrap().len(), 2);
    assert_eq!((nics[0].get("primary"), nics[1]["primary"].as_bool()), (None, Some(true)));
    assert_eq!(nics[1]["interface"], "net1");
    let mac1 = nics[1]["mac"].as_str().unwrap().to_owned();
    let out = run_stdin(
        &format!("update {U1}"),
        r#"{"update_nics": [{"mac": "90:B8:D0:00:00:01", "vlan_id": 20}]}"#,
        &mut reg,
        &mut host,
    );
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(reg.get(&u).unwrap().props["nics"][0]["vlan_id"], 20);
    let out = run_stdin(&format!("update {U1}"), &json!({"remove_nics": [mac1]}).to_string(), &mut reg, &mut host);
    assert_eq!(out.code, 0, "{out:?}");
    let nics = reg.get(&u).unwrap().props["nics"].clone();
    assert_eq!((nics.as_array().unwrap().len(), nics[0]["primary"].as_bool()), (1, Some(true)));
    // Changing the address in either form keeps both forms consistent.
    let out = run_stdin(
        &format!("update {U1}"),
        r#"{"update_nics": [{"mac": "90:b8:d0:00:00:01", "ip": "10.3.3.3", "netmask": "255.255.0.0"}]}"#,
        &mut reg,
        &mut host,
    );
    assert_eq!(out.code, 0, "{out:?}");
    let n = reg.get(&u).unwrap().props["nics"][0].clone();
    assert_eq!((n["ip"].as_str(), n["ips"].clone()), (Some("10.3.3.3"), json!(["10.3.3.3/16"])));
    let out = run_stdin(
        &format!("update {U1}"),
        r#"{"update_nics": [{"mac": "90:b8:d0:00:00:01", "ips": ["dhcp"]}]}"#,
        &mut reg,
        &mut host,
    );
    assert_eq!(out.code, 0, "{out:?}");
    let n = reg.get(&u).unwrap().props["nics"][0].clone();
    assert_eq!((n["ip"].as_str(), n.get("netmask")), (Some("dhcp"), None));
    let out = run_stdin(&format!("update {U1}"), r#"{"remove_nics": ["90:b8:d0:99:99:99"]}"#, &mut reg, &mut host);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("no NIC has MAC address 90:b8:d0:99:99:99"), "{}", out.stderr);
}

#[test]
fn update_disks() {
    let (mut reg, mut host) = machine();
    make(&mut reg, &mut host, json!({"brand": "bhyve", "uuid": U1, "disks": [{"boot": true, "size": 1024}]}));
    let u = crate::uuid::Uuid::parse(U1).unwrap();
    let out = run_stdin(&format!("update {U1}"), r#"{"add_disks": [{"size": 2048}]}"#, &mut reg, &mut host);
    assert_eq!(out.code, 0, "{out:?}");
    let disks = reg.get(&u).unwrap().props["disks"].clone();
    assert_eq!(disks[1]["path"], format!("/dev/zvol/rdsk/zones/{U1}/disk1"));
    let grow = json!({"update_disks": [{"path": format!("/dev/zvol/rdsk/zones/{U1}/disk1"), "size": 4096}]});
    assert_eq!(run_stdin(&format!("update {U1}"), &grow.to_string(), &mut reg, &mut host).code, 0);
    let shrink = json!({"update_disks": [{"path": format!("/dev/zvol/rdsk/zones/{U1}/disk1"), "size": 10}]});
    let out = run_stdin(&format!("update {U1}"), &shrink.to_string(), &mut reg, &mut host);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("\"update_disks.0.size\": shrinking a disk (4096 to 10 MiB) loses data"),
        "{}",
        out.stderr
    );
    // The boot disk cannot go: a firmware VM needs one.
    let rm = json!({"remove_disks": [format!("/dev/zvol/rdsk/zones/{U1}/disk0")]});
    let out = run_stdin(&format!("update {U1}"), &rm.to_string(), &mut reg, &mut host);
    assert_eq!(out.code, 1, "{out:?}");
    let rm = json!({"remove_disks": [format!("/dev/zvol/rdsk/zones/{U1}/disk1")]});
    assert_eq!(run_stdin(&format!("update {U1}"), &rm.to_string(), &mut reg, &mut host).code, 0);
    assert_eq!(reg.get(&u).unwrap().props["disks"].as_array().unwrap().len(), 1);
}

#[test]
fn a_mac_in_use_by_another_vm_is_refused() {
    let (mut reg, mut host) = machine();
    make(
        &mut reg,
        &mut host,
        json!({"brand": "bhyve", "kernel": "k", "uuid": U1, "nics": [{"nic_tag": "a", "mac": "90:b8:d0:00:00:01"}]}),
    );
    let out = run_stdin(
        "create",
        &json!({"brand": "bhyve", "kernel": "k", "uuid": U2,
        "nics": [{"nic_tag": "a", "mac": "90:b8:d0:00:00:01"}]})
        .to_string(),
        &mut reg,
        &mut host,
    );
    assert_eq!(out.stderr, format!("Failed to create VM: MAC address 90:b8:d0:00:00:01 is already used by VM {U1}\n"));
    make(&mut reg, &mut host, json!({"brand": "bhyve", "kernel": "k", "uuid": U2}));
    let out = run_stdin(
        &format!("update {U2}"),
        r#"{"add_nics": [{"nic_tag": "a", "mac": "90:b8:d0:00:00:01"}]}"#,
        &mut reg,
        &mut host,
    );
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("already used by VM"), "{}", out.stderr);
}

#[test]
fn a_registry_rebuilt_from_stored_records_is_the_same() {
    let (reg, host) = three_vms();
    let mut back = Registry::new(&reg.server_uuid);
    for text in host.stored.values() {
        let m: Map<String, Value> = serde_json::from_str(text).unwrap();
        back.add(Instance::from_stored(m).unwrap()).unwrap();
    }
    assert_eq!(back, reg);
}

#[test]
fn restore_after_a_machine_boot_and_after_a_zone_server_restart() {
    let (mut reg, mut host) = three_vms();
    // U1 and U2 run (autoboot set by start), U3 is stopped (autoboot false).
    run(&format!("stop {U2}"), &mut reg, &mut host);
    run(&format!("update {U2} autoboot=true"), &mut reg, &mut host);
    let mut records: Vec<String> = host.stored.values().cloned().collect();
    records.push("{not json".into());
    records.push(host.stored[U1].clone());
    let texts: Vec<&str> = records.iter().map(String::as_str).collect();

    // zone-server restarted: the VMs kept running; nothing to start.
    let (back, boot, errors) = Registry::restore(&reg.server_uuid, &texts, false, "t");
    assert_eq!(back, reg);
    assert!(boot.is_empty());
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(errors[1].contains("already exists"), "{errors:?}");

    // The machine rebooted: nothing runs; autoboot VMs are to be started.
    let (back, boot, _) = Registry::restore(&reg.server_uuid, &texts, true, "t");
    let states: Vec<State> = back.iter().map(|vm| vm.state).collect();
    assert_eq!(states, vec![State::Stopped; 3]);
    let u = |s: &str| Uuid::parse(s).unwrap();
    assert_eq!(boot, vec![u(U1), u(U2)]);
    assert_eq!(back.get(&u(U1)).unwrap().props.get("pid"), None);
}

#[test]
fn update_nics_applies_every_entry_even_after_a_new_primary() {
    let (mut reg, mut host) = machine();
    make(
        &mut reg,
        &mut host,
        json!({"brand": "bhyve", "kernel": "k", "uuid": U1, "nics": [
        {"nic_tag": "a", "mac": "90:b8:d0:00:00:01"}, {"nic_tag": "b", "mac": "90:b8:d0:00:00:02"}]}),
    );
    let out = run_stdin(
        &format!("update {U1}"),
        r#"{"update_nics": [{"mac": "90:b8:d0:00:00:02", "primary": true}, {"mac": "90:b8:d0:00:00:01", "vlan_id": 7}]}"#,
        &mut reg,
        &mut host,
    );
    assert_eq!(out.code, 0, "{out:?}");
    let nics = reg.get(&Uuid::parse(U1).unwrap()).unwrap().props["nics"].clone();
    assert_eq!((nics[0].get("primary"), nics[1]["primary"].as_bool()), (None, Some(true)));
    assert_eq!(nics[0]["vlan_id"], 7);
}

#[test]
fn operations_answer_with_structured_errors() {
    use crate::ops::{self, OpError};
    let (mut reg, mut host) = machine();
    let u = crate::uuid::Uuid::parse(U1).unwrap();
    assert_eq!(ops::start(&mut reg, &mut host, &u), Err(OpError::NotFound));
    assert!(matches!(ops::create("{", &mut reg, &mut host), Err(OpError::Payload(_))));
    match ops::create(r#"{"brand": "bhyve", "kernel": "k", "ram": 1}"#, &mut reg, &mut host) {
        Err(OpError::Invalid(p)) => assert_eq!(p.bad_values, vec!["ram"]),
        other => panic!("{other:?}"),
    }
    let c = ops::create(&json!({"brand": "bhyve", "kernel": "k", "uuid": U1, "x": 1}).to_string(), &mut reg, &mut host);
    assert_eq!(c.map(|c| (c.uuid, c.warnings.len())), Ok((u, 1)));
    assert_eq!(ops::start(&mut reg, &mut host, &u), Err(OpError::Noop("is already running".into())));
    ops::stop(&mut reg, &mut host, &u, true, 1).unwrap();
    assert_eq!(ops::reboot(&mut reg, &mut host, &u, false, 1), Err(OpError::Conflict("VM is not running".into())));
    ops::start(&mut reg, &mut host, &u).unwrap();
    host.fail.insert("provision", "no space".into());
    let e = ops::create(&json!({"brand": "bhyve", "kernel": "k", "uuid": U2}).to_string(), &mut reg, &mut host);
    assert_eq!(e, Err(OpError::Failed { uuid: Some(Uuid::parse(U2).unwrap()), why: "no space".into() }));
    let applied = ops::update(&mut reg, &mut host, &u, &obj(json!({"cpu_cap": 50, "ram": 512, "alias": "a"}))).unwrap();
    assert_eq!(
        (applied.live, applied.next_start, applied.stored),
        (vec!["cpu_cap".to_owned()], vec!["ram".to_owned()], vec!["alias".to_owned()])
    );
}

#[test]
fn disks_from_images_need_the_image_installed() {
    let (mut reg, mut host) = machine();
    let p = json!({"brand": "bhyve", "uuid": U1, "disks": [{"boot": true, "image_uuid": "c1a2b3c4-0000-4000-8000-000000000000"}]});
    let out = run_stdin("create", &p.to_string(), &mut reg, &mut host);
    assert_eq!(out.code, 1);
    assert_eq!(
        out.stderr,
        "Failed to create VM: Invalid value(s) for: disks.0.image_uuid\nvmadm: property \"disks.0.image_uuid\": \
         image c1a2b3c4-0000-4000-8000-000000000000: not installed (imgadm list)\n"
    );
    assert!(reg.is_empty() && host.calls.is_empty());
    let mut p = smartos_payload();
    p["uuid"] = json!(U1);
    make(&mut reg, &mut host, p);
    let d = reg.get(&Uuid::parse(U1).unwrap()).unwrap().props["disks"][0].clone();
    assert_eq!((d["image_size"].as_u64(), d["size"].as_u64()), (Some(10240), Some(10240)));
    assert_eq!(
        reg.using_image(&Uuid::parse("462d1d03-8457-e134-a408-cf9ea2b9be96").unwrap()),
        vec![Uuid::parse(U1).unwrap()]
    );
    assert!(reg.using_image(&Uuid::parse(U2).unwrap()).is_empty());
    let add = r#"{"add_disks": [{"image_uuid": "c1a2b3c4-0000-4000-8000-000000000000"}]}"#;
    let out = run_stdin(&format!("update {U1}"), add, &mut reg, &mut host);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("Invalid value(s) for: add_disks.0.image_uuid"), "{}", out.stderr);
}

#[test]
fn list_keeps_vmadms_fixed_widths_and_its_false_values() {
    let (mut reg, mut host) = machine();
    make(
        &mut reg,
        &mut host,
        json!({"brand": "bhyve", "kernel": "k", "uuid": U1, "alias": "a-rather-long-alias", "cpu_cap": 0}),
    );
    make(
        &mut reg,
        &mut host,
        json!({"brand": "bhyve", "kernel": "k", "uuid": U2, "alias": "b", "cpu_cap": 50, "autoboot": false}),
    );
    let out = run("list -o alias,cpu_cap,autoboot -s cpu_cap", &mut reg, &mut host);
    // ALIAS is 10 wide, CPU_CAP 7: a longer alias pushes the line right;
    // 0 and false print as "-" and sort after the others, as vmadm.
    assert_eq!(
        out.stdout,
        "ALIAS       CPU_CAP  AUTOBOOT\nb           50       -\na-rather-long-alias  -        true\n"
    );
    let out = run("list -p -o alias,cpu_cap -s -cpu_cap", &mut reg, &mut host);
    assert_eq!(out.stdout, "a-rather-long-alias:\nb:50\n");
    let out = run("list -H -o uuid,nics.0.ip", &mut reg, &mut host);
    assert_eq!(out.stdout, format!("{U1}  -\n{U2}  -\n"));
}

fn begin(args: &str, reg: &mut Registry, host: &mut FakeHost) -> verbs::Ran {
    let argv: Vec<&str> = args.split_whitespace().collect();
    verbs::begin(&argv, reg, host)
}

#[test]
fn a_stop_begins_and_the_vm_is_stopping_until_its_deadline_halts_it() {
    use crate::ops::{self, Settled, Transition};
    let (mut reg, mut host) = machine();
    make(&mut reg, &mut host, json!({"brand": "bhyve", "kernel": "k", "uuid": U1}));
    let u = crate::uuid::Uuid::parse(U1).unwrap();
    host.deaf = true;
    let wait = match begin(&format!("stop {U1} -t 5"), &mut reg, &mut host) {
        verbs::Ran::Waiting(w) => w,
        other => panic!("{other:?}"),
    };
    assert_eq!(wait, verbs::Wait { uuid: u, reboot: false });
    // Stopping, with SmartOS's transition in the record (and in get).
    let vm = reg.get(&u).unwrap();
    assert_eq!(vm.state, State::Stopping);
    let t = Transition::of(vm).unwrap();
    assert!(!t.reboot);
    let stored: Value = serde_json::from_str(&host.stored[U1]).unwrap();
    assert_eq!((stored["state"].as_str(), stored["transition_to"].as_str()), (Some("stopping"), Some("stopped")));
    assert_eq!(stored["transition_expire"].as_u64(), Some(t.expire_ms));
    // Meanwhile: list answers, a second stop is vmadm's "already not
    // running", start and reboot are refused, the waiter is not done.
    assert!(run("list -H -o state", &mut reg, &mut host).stdout.contains("stopping"));
    let out = run(&format!("stop {U1}"), &mut reg, &mut host);
    assert_eq!((out.code, out.stderr), (0, format!("VM {U1} is already not 'running' (currently: stopping)\n")));
    let out = run(&format!("start {U1}"), &mut reg, &mut host);
    assert_eq!((out.code, out.stderr), (1, format!("Unable to start VM {U1}: VM is stopping; start it once it has stopped\n")));
    assert_eq!(run(&format!("reboot {U1}"), &mut reg, &mut host).stderr, format!("Unable to reboot VM {U1}: VM is stopping\n"));
    assert_eq!(verbs::waited(&wait, None, &reg), None);
    // Before the deadline the deaf guest is left alone; at it, halted.
    assert_eq!(ops::settle(&mut reg, &mut host, &u), None);
    assert!(host.ms < t.expire_ms && !host.calls.iter().any(|c| c.starts_with("halt")));
    host.ms = t.expire_ms;
    let settled = ops::settle(&mut reg, &mut host, &u);
    assert_eq!(settled, Some(Settled::Stopped { forced: true }));
    assert_eq!(host.calls.last().unwrap(), &format!("halt {U1} state=stopping"));
    let vm = reg.get(&u).unwrap();
    assert_eq!(vm.state, State::Stopped);
    assert!(!vm.props.contains_key("transition_to") && !vm.props.contains_key("transition_expire") && !vm.autoboot());
    let out = verbs::waited(&wait, settled.as_ref(), &reg).unwrap();
    assert_eq!((out.code, out.stderr), (0, format!("Successfully completed stop for VM {U1}\n")));
    // Nothing left to settle.
    assert_eq!(ops::settle(&mut reg, &mut host, &u), None);
    assert_eq!(ops::transitions(&reg), (vec![], None));
}

#[test]
fn a_guest_that_powers_off_ends_its_stop_before_the_deadline() {
    use crate::ops::{self, Settled};
    let (mut reg, mut host) = machine();
    make(&mut reg, &mut host, json!({"brand": "bhyve", "kernel": "k", "uuid": U1}));
    let u = crate::uuid::Uuid::parse(U1).unwrap();
    // A -t past the largest (a day) is vmadm's usage error; the largest
    // makes a deadline a day away, even at the end of the clock.
    assert_eq!(run(&format!("stop {U1} -t 4294967295"), &mut reg, &mut host).code, 2);
    host.ms = u64::MAX - 10_000_000;
    let verbs::Ran::Waiting(wait) = begin(&format!("stop {U1} -t 86400"), &mut reg, &mut host) else { panic!() };
    let (vms, soonest) = ops::transitions(&reg);
    assert_eq!((vms, soonest), (vec![u], Some(u64::MAX)));
    assert_eq!(ops::settle(&mut reg, &mut host, &u), Some(Settled::Stopped { forced: false }));
    assert_eq!(verbs::waited(&wait, None, &reg).unwrap().code, 0);
}

#[test]
fn a_forced_stop_or_a_delete_ends_another_client_s_stop() {
    let (mut reg, mut host) = machine();
    make(&mut reg, &mut host, json!({"brand": "bhyve", "kernel": "k", "uuid": U1}));
    make(&mut reg, &mut host, json!({"brand": "bhyve", "kernel": "k", "uuid": U2}));
    host.deaf = true;
    let verbs::Ran::Waiting(w1) = begin(&format!("stop {U1}"), &mut reg, &mut host) else { panic!() };
    let verbs::Ran::Waiting(w2) = begin(&format!("stop {U2}"), &mut reg, &mut host) else { panic!() };
    // stop -F halts the stopping VM at once: the first stop is over too.
    assert_eq!(begin(&format!("stop {U1} -F"), &mut reg, &mut host), verbs::Ran::Done(Output {
        stdout: String::new(),
        stderr: format!("Successfully completed stop for VM {U1}\n"),
        code: 0
    }));
    assert_eq!(verbs::waited(&w1, None, &reg).unwrap().stderr, format!("Successfully completed stop for VM {U1}\n"));
    // delete halts it and removes it: its waiter is told.
    assert_eq!(run(&format!("delete {U2}"), &mut reg, &mut host).code, 0);
    let out = verbs::waited(&w2, None, &reg).unwrap();
    assert_eq!((out.code, out.stderr), (1, format!("Unable to stop VM {U2}: VM was deleted while it was stopping\n")));
    // A stop of the deleted VM: not found.
    let out = run(&format!("stop {U2}"), &mut reg, &mut host);
    assert_eq!((out.code, out.stderr), (1, format!("Unable to stop VM {U2}: VM not found\n")));
}

#[test]
fn a_reboot_waits_for_the_guest_then_starts_it_again_keeping_autoboot() {
    use crate::ops::{self, Settled};
    let (mut reg, mut host) = machine();
    make(&mut reg, &mut host, json!({"brand": "bhyve", "kernel": "k", "uuid": U1}));
    let u = crate::uuid::Uuid::parse(U1).unwrap();
    host.deaf = true;
    let verbs::Ran::Waiting(w) = begin(&format!("reboot {U1}"), &mut reg, &mut host) else { panic!() };
    assert_eq!(w, verbs::Wait { uuid: u, reboot: true });
    assert_eq!(reg.get(&u).unwrap().state, State::Stopping);
    assert_eq!(reg.get(&u).unwrap().props["transition_to"], "running");
    host.ms = u64::MAX / 2;
    let settled = ops::settle(&mut reg, &mut host, &u);
    assert_eq!(settled, Some(Settled::Rebooted { forced: true }));
    let vm = reg.get(&u).unwrap();
    assert_eq!((vm.state, vm.autoboot(), vm.props.get("transition_to")), (State::Running, true, None));
    assert!(host.calls.ends_with(&[format!("halt {U1} state=stopping"), format!("start {U1}")]), "{:?}", host.calls);
    assert_eq!(verbs::waited(&w, settled.as_ref(), &reg).unwrap().stderr, format!("Successfully completed reboot for VM {U1}\n"));
    // A reboot whose new vmm-server does not start: stopped, and said.
    let verbs::Ran::Waiting(w) = begin(&format!("reboot {U1}"), &mut reg, &mut host) else { panic!() };
    host.fail.insert("start", "out of budget".into());
    host.ms = u64::MAX - 10_000;
    let settled = ops::settle(&mut reg, &mut host, &u);
    assert_eq!(settled, Some(Settled::RebootFailed("out of budget".into())));
    assert_eq!(reg.get(&u).unwrap().state, State::Stopped);
    let out = verbs::waited(&w, settled.as_ref(), &reg).unwrap();
    assert_eq!(out.stderr, format!("Unable to reboot VM {U1}: stopped, but did not start again: out of budget\n"));
}

#[test]
fn a_machine_boot_during_a_stop_or_a_reboot_ends_both() {
    let (mut reg, mut host) = machine();
    make(&mut reg, &mut host, json!({"brand": "bhyve", "kernel": "k", "uuid": U1}));
    make(&mut reg, &mut host, json!({"brand": "bhyve", "kernel": "k", "uuid": U2}));
    host.deaf = true;
    assert!(matches!(begin(&format!("stop {U1}"), &mut reg, &mut host), verbs::Ran::Waiting(_)));
    assert!(matches!(begin(&format!("reboot {U2}"), &mut reg, &mut host), verbs::Ran::Waiting(_)));
    let records: Vec<&str> = [U1, U2].iter().map(|u| host.stored[*u].as_str()).collect();
    // A zone-server restart keeps both transitions (their VMMs still run).
    let (kept, _, errors) = Registry::restore("s", &records, false, "2026-12-03T11:00:00.000Z");
    assert!(errors.is_empty());
    assert_eq!(crate::ops::transitions(&kept).0.len(), 2);
    // A machine boot: both stopped, transitions gone; the rebooting one
    // (autoboot still set) boots, the stopped one (autoboot cleared) not.
    let (booted, boot, _) = Registry::restore("s", &records, true, "2026-12-03T11:00:00.000Z");
    assert_eq!(crate::ops::transitions(&booted), (vec![], None));
    assert_eq!(boot, vec![Uuid::parse(U2).unwrap()]);
}

/// `create-snapshot`, `rollback-snapshot`, `delete-snapshot`: vmadm's
/// messages, the `snapshots` list in the record (names and times, oldest
/// first), what reaches the machine, and refusals that change nothing:
/// bad names, duplicates, unknown snapshots, a snapshot the record could
/// not keep (undone on the machine); a rollback of a running VM halts and
/// starts it.
#[test]
fn snapshots_are_taken_listed_rolled_back_and_deleted() {
    let (mut reg, mut host) = machine();
    let mut p = smartos_payload();
    p["uuid"] = json!(U1);
    make(&mut reg, &mut host, p);
    let snaps = |reg: &Registry| -> Vec<String> {
        let vm = reg.get(&Uuid::parse(U1).unwrap()).unwrap();
        vm.props.get("snapshots").and_then(Value::as_array).into_iter().flatten().map(|s| s["name"].as_str().unwrap().to_string()).collect()
    };
    for name in ["before-upgrade", "second", "third"] {
        let out = run(&format!("create-snapshot {U1} {name}"), &mut reg, &mut host);
        assert_eq!((out.code, out.stderr), (0, format!("Created snapshot {name} for VM {U1}\n")));
    }
    assert_eq!(snaps(&reg), ["before-upgrade", "second", "third"]);
    let stored: Value = serde_json::from_str(&host.stored[U1]).unwrap();
    assert_eq!(stored["snapshots"][0]["name"], "before-upgrade");
    assert!(stored["snapshots"][0]["created_at"].as_str().unwrap().ends_with('Z'));
    // Refused, nothing changed.
    let calls = host.calls.len();
    for (args, code, why) in [
        (format!("create-snapshot {U1} second"), 1, "already exists"),
        (format!("create-snapshot {U1} bad/name"), 1, "invalid snapname"),
        (format!("create-snapshot {U1} {}", "x".repeat(65)), 1, "invalid snapname"),
        (format!("create-snapshot {U1}"), 2, "missing snapname"),
        (format!("delete-snapshot {U1} nope"), 1, "not found"),
        ("create-snapshot 00000000-0000-4000-8000-000000000000 a".to_string(), 1, "VM not found"),
    ] {
        let out = run(&args, &mut reg, &mut host);
        assert!(out.code == code && out.stderr.contains(why), "{args}: {out:?}");
    }
    assert_eq!(host.calls.len(), calls, "{:?}", &host.calls[calls..]);
    assert_eq!(snaps(&reg), ["before-upgrade", "second", "third"]);
    // A rollback of the running VM halts it, destroys the newer ones,
    // rolls back and starts it again.
    let calls = host.calls.len();
    let out = run(&format!("rollback-snapshot {U1} second"), &mut reg, &mut host);
    assert_eq!((out.code, out.stderr), (0, format!("Rolled back VM {U1} to snapshot second\n")));
    assert_eq!(
        host.calls[calls..],
        [format!("destroy_snapshot {U1}@third"), format!("halt {U1} state=running"), format!("rollback {U1}@second"), format!("start {U1}")]
    );
    assert_eq!(reg.get(&Uuid::parse(U1).unwrap()).unwrap().state, crate::state::State::Running);
    // Of the stopped VM: no halt, no start.
    run(&format!("stop {U1} -F"), &mut reg, &mut host);
    let calls = host.calls.len();
    let out = run(&format!("rollback-snapshot {U1} before-upgrade"), &mut reg, &mut host);
    assert_eq!((out.code, out.stderr), (0, format!("Rolled back VM {U1} to snapshot before-upgrade\n")));
    assert_eq!(host.calls[calls..], [format!("destroy_snapshot {U1}@second"), format!("rollback {U1}@before-upgrade")]);
    assert_eq!(reg.get(&Uuid::parse(U1).unwrap()).unwrap().state, crate::state::State::Stopped);
    assert_eq!(snaps(&reg), ["before-upgrade"]);
    let out = run(&format!("delete-snapshot {U1} before-upgrade"), &mut reg, &mut host);
    assert_eq!((out.code, out.stderr), (0, format!("Deleted snapshot before-upgrade for VM {U1}\n")));
    assert!(snaps(&reg).is_empty());
    let stored: Value = serde_json::from_str(&host.stored[U1]).unwrap();
    assert!(stored.get("snapshots").is_none(), "{stored}");
    // A snapshot the record cannot keep is destroyed again.
    host.fail.insert("persist", "pool: out of space".into());
    let out = run(&format!("create-snapshot {U1} lost"), &mut reg, &mut host);
    assert!(out.code == 1 && out.stderr.contains("out of space"), "{out:?}");
    assert!(host.calls.ends_with(&[format!("snapshot {U1}@lost"), format!("destroy_snapshot {U1}@lost")]), "{:?}", host.calls);
    assert!(snaps(&reg).is_empty());
    host.fail.remove("persist");
    // At most MAX_SNAPSHOTS.
    for i in 0..crate::ops::MAX_SNAPSHOTS {
        assert_eq!(run(&format!("create-snapshot {U1} s{i}"), &mut reg, &mut host).code, 0);
    }
    let out = run(&format!("create-snapshot {U1} one-more"), &mut reg, &mut host);
    assert!(out.code == 1 && out.stderr.contains("delete one first"), "{out:?}");
}

/// `stop` and `reboot` take their options before or after the uuid, as
/// SmartOS's vmadm does; anything else stays a usage error.
#[test]
fn stop_and_reboot_options_go_before_or_after_the_uuid() {
    use crate::argv::{parse, Command, DEFAULT_STOP_TIMEOUT};
    let u = crate::uuid::Uuid::parse(U1).unwrap();
    let words = |s: &str| s.split_whitespace().map(String::from).collect::<Vec<_>>();
    let parse = |line: &str| {
        let w = words(line);
        let refs: Vec<&str> = w.iter().map(String::as_str).collect();
        parse(&refs)
    };
    for line in [format!("stop -F {U1}"), format!("stop {U1} -F")] {
        assert!(matches!(parse(&line), Ok(Command::Stop { uuid, force: true, timeout: DEFAULT_STOP_TIMEOUT }) if uuid == u), "{line}");
    }
    assert!(matches!(parse(&format!("stop -t 5 {U1}")), Ok(Command::Stop { force: false, timeout: 5, .. })));
    assert!(matches!(parse(&format!("reboot -F {U1}")), Ok(Command::Reboot { uuid, force: true }) if uuid == u));
    for bad in [format!("stop {U1} {U1}"), "stop -F".to_string(), format!("reboot -t 5 {U1}"), format!("stop -X {U1}"), "stop".to_string()] {
        assert!(parse(&bad).is_err(), "{bad}");
    }
}
