//! The `zone` suite (manifest `zone.toml`, manifest argument `zone`): the
//! control plane at run time. This process is zone-server's `vmadm` client
//! (and may look at storaged's pool); it creates VMs from SmartOS payloads,
//! sees them in `vmadm list`, stops and deletes them, and checks that the
//! volumes and init's kernel memory come back. It also calls init's `proc`
//! with a small `spawns` budget of its own, for the abuse cases; and
//! `ktest-zone-other` (argument `zone-other`), a process that is not a
//! control-plane client, reports whether `vmadm` and `proc` refused it.
//!
//! The VMs boot the test kernels the harness packs (`zone-guest-halt`:
//! prints a line and spins; `zone-guest-off`: prints a line and powers the
//! VM off), so a stop by the guest itself is seen too.

use abi::CapSlot;
use alcove_rt::start::SLOT_CONSOLE;
use alcove_rt::{StartInfo, println};
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;
use kcore::testproto::PREFIX;
use libipc::IpcError;
use libipc::cap::Cap;
use libipc::interfaces::{
    PROC_START_DATA_MAX, PROC_START_DATA_TOTAL_MAX, ProcError, ProcState, VmadmOutput, pool, proc, status, vmadm,
};
use libipc::kernel::KernelTransport;
use libipc::sys;

struct Env {
    zone: CapSlot,
    storaged: CapSlot,
    proc: CapSlot,
    other: Option<CapSlot>,
    /// netd (this process is one of its `vnic-admin`s in zone.toml).
    netd: Option<CapSlot>,
    /// A VM the lifecycle test created (for the tests after it).
    vm: Option<String>,
}

type Test = fn(&mut Env) -> Result<(), String>;

fn client(slot: CapSlot) -> KernelTransport {
    KernelTransport::new(Cap::from_slot(slot))
}

impl Env {
    /// `vmadm delete UUID`, after which the pool holds nothing of the VM and
    /// init's kernel memory is back at `init_before` KiB.
    fn delete_leaving_nothing(&self, uuid: &str, init_before: u64) -> Result<(), String> {
        self.ok(&["delete", uuid], "")?;
        let left: Vec<String> = self.datasets()?.into_iter().filter(|d| d.contains(uuid)).collect();
        let init_after = self.init_used_kib()?;
        if !left.is_empty() || init_after != init_before {
            return Err(format!("after delete: pool {left:?}, init {init_before} -> {init_after} KiB"));
        }
        Ok(())
    }

    fn imgadm(&self, args: &[&str], stdin: &str) -> Result<VmadmOutput, String> {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        vmadm::Client::new(client(self.zone)).imgadm(args.clone(), stdin.into()).map_err(|e| format!("imgadm {args:?}: {e}"))
    }

    fn pool_free(&self) -> Result<u64, String> {
        let c = pool::Client::new(client(self.storaged));
        Ok(c.status().map_err(|e| format!("pool.status: {e}"))?.map_err(|e| format!("pool.status: {e}"))?.free_bytes)
    }

    /// `vmadm ARGS` as the shell sends it: `vmadm.begin`, `vmadm.step`
    /// while a stop waits for its guest, `vmadm.read`.
    fn vmadm(&self, args: &[&str], stdin: &str) -> Result<VmadmOutput, String> {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let c = vmadm::Client::new(client(self.zone));
        let pause = || sleep_ns(libipc::interfaces::VMADM_STEP_PAUSE_MS * 1_000_000);
        libipc::interfaces::vmadm_run_whole(&c, "vmadm", args.clone(), stdin.into(), pause)
            .map_err(|e| format!("vmadm {args:?}: {e}"))
    }

    /// `vmadm ARGS` through `vmadm.run`, which never waits (nor touches
    /// this client's pending command).
    fn vmadm_run(&self, args: &[&str]) -> Result<VmadmOutput, String> {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        vmadm::Client::new(client(self.zone)).run(args.clone(), String::new()).map_err(|e| format!("vmadm {args:?}: {e}"))
    }

    /// `vmadm ARGS`, which must succeed: its stdout.
    fn ok(&self, args: &[&str], stdin: &str) -> Result<VmadmOutput, String> {
        let out = self.vmadm(args, stdin)?;
        if out.code != 0 {
            return Err(format!("vmadm {args:?} exited {}: {}{}", out.code, out.stdout, out.stderr));
        }
        Ok(out)
    }

    fn datasets(&self) -> Result<Vec<String>, String> {
        let c = pool::Client::new(client(self.storaged));
        let mut names = Vec::new();
        let mut after = String::new();
        loop {
            let page = c.list(after).map_err(|e| format!("pool.list: {e}"))?.map_err(|e| format!("pool.list: {e}"))?;
            names.extend(page.datasets.into_iter().map(|d| d.name));
            match page.next {
                Some(n) => after = n,
                None => return Ok(names),
            }
        }
    }

    /// init's kernel memory, read once init's ready round is over (the
    /// servers it still starts until then would otherwise come between
    /// two readings).
    fn init_used_kib(&self) -> Result<u64, String> {
        let usage = || proc::Client::new(client(self.proc)).usage().map_err(|e| format!("proc.usage: {e}"));
        if !wait_for(|| Ok(usage()?.init_ready), 50_000_000)? {
            return Err("init's ready round did not end".into());
        }
        Ok(usage()?.init_used_kib)
    }

    /// The VM's `vmadm list` state.
    fn state(&self, uuid: &str) -> Result<String, String> {
        let out = self.ok(&["list", "-p", "-o", "state", &format!("uuid={uuid}")], "")?;
        Ok(out.stdout.trim().to_string())
    }
}

/// A bhyve payload for one of the test kernels, with one disk of 16 MiB.
fn payload(alias: &str, kernel: &str) -> String {
    format!(
        r#"{{"brand": "bhyve", "alias": "{alias}", "ram": 64, "vcpus": 1, "kernel": "/{kernel}",
  "customer_metadata": {{"role": "test"}}, "disks": [{{"size": 16}}]}}"#
    )
}

fn created(out: &VmadmOutput) -> Result<String, String> {
    // vmadm: "Successfully created VM <uuid>".
    out.stderr
        .lines()
        .find_map(|l| l.strip_prefix("Successfully created VM "))
        .map(|u| u.trim().to_string())
        .ok_or_else(|| format!("no \"Successfully created VM\" line: {out:?}"))
}

pub fn main(info: StartInfo) -> u64 {
    if info.args.first().map(String::as_str) == Some("zone-other") {
        return other_main(info);
    }
    let tests: Vec<(&str, Test)> = vec![
        ("a_bad_payload_gets_vmadm_s_error_and_changes_nothing", a_bad_payload_gets_vmadm_s_error),
        ("create_list_stop_delete_gives_everything_back", create_list_stop_delete),
        ("a_guest_that_powers_off_is_seen_stopped", a_guest_that_powers_off_is_seen_stopped),
        ("a_guest_deaf_to_the_power_button_is_halted", a_guest_deaf_to_the_power_button_is_halted),
        ("a_restarted_zone_server_finds_its_running_vms", a_restarted_zone_server_finds_its_running_vms),
        ("a_vm_s_nics_are_vnics_only_its_vmm_reaches", a_vm_s_nics_are_vnics_only_its_vmm_reaches),
        ("a_guest_reads_its_metadata_on_com2", a_guest_reads_its_metadata_on_com2),
        ("a_running_vm_s_metadata_update_reaches_its_guest", a_running_vm_s_metadata_update_reaches_its_guest),
        ("two_vms_from_an_installed_image_share_its_blocks", two_vms_from_an_installed_image_share_its_blocks),
        ("a_vm_stops_and_starts_again_and_again", a_vm_stops_and_starts_again_and_again),
        ("proc_refuses_what_the_caller_may_not_do", proc_refuses_what_the_caller_may_not_do),
        ("other_clients_reach_neither_vmadm_nor_proc", other_clients_reach_neither_vmadm_nor_proc),
        // Last: it stops netd (init restarts it).
        ("a_restarted_netd_gets_a_running_vm_s_vnic_again", a_restarted_netd_gets_a_running_vm_s_vnic_again),
    ];
    println!("{PREFIX} suite zone {}", tests.len());
    let (Some(zone), Some(storaged), Some(procs)) = (info.calls("zone-server"), info.calls("storaged"), info.calls("proc"))
    else {
        println!("{PREFIX} run {}", tests[0].0);
        println!("{PREFIX} fail {} zone.toml grants no zone-server, storaged or proc endpoint", tests[0].0);
        println!("{PREFIX} end 0 1");
        let _ = sys::machine_exit(SLOT_CONSOLE, 1);
        return 1;
    };
    let mut env = Env { zone, storaged, proc: procs, other: info.calls("zone-other"), netd: info.calls("netd"), vm: None };
    crate::tests::run_suite(&mut env, tests)
}

/// A payload with a wrong type and an unknown property: `validate`
/// answers SmartOS's problem object, `create` refuses it naming both, and
/// nothing is made.
fn a_bad_payload_gets_vmadm_s_error(env: &mut Env) -> Result<(), String> {
    let before = env.datasets()?;
    let bad = r#"{"brand": "bhyve", "ram": "lots", "kernel": "/zone-guest-halt", "frobnicate": true}"#;
    let out = env.vmadm(&["validate", "create"], bad)?;
    let ok = out.code == 1
        && out.stderr.contains("\"bad_values\"")
        && out.stderr.contains("\"ram\"")
        && out.stderr.contains("\"bad_properties\"")
        && out.stderr.contains("\"frobnicate\"");
    if !ok {
        return Err(format!("validate create of a bad payload: {out:?}"));
    }
    let out = env.vmadm(&["create"], bad)?;
    if out.code != 1 || !out.stderr.contains("ram") {
        return Err(format!("create of a bad payload: {out:?}"));
    }
    let out = env.vmadm(&["create"], "{\"brand\": ")?;
    if out.code != 1 {
        return Err(format!("create of broken JSON: {out:?}"));
    }
    // A NIC on a nic_tag netd does not have (zone.toml's netd has the
    // etherstub stub0 only): refused by name.
    let nic = r#"{"brand": "bhyve", "ram": 64, "kernel": "/zone-guest-halt", "disks": [{"size": 8}],
        "nics": [{"nic_tag": "admin", "ips": ["dhcp"]}]}"#;
    let out = env.vmadm(&["create"], nic)?;
    if out.code != 1 || !out.stderr.contains("\"nics.0.nic_tag\"") || !out.stderr.contains("\"admin\"") {
        return Err(format!("create with a NIC on an unknown nic_tag: {out:?}"));
    }
    // Bad nics[] values: each refused naming the property.
    let nine = [r#"{"nic_tag": "stub0"}"#; 9].join(",");
    for (nics, property) in [
        (r#"[{"nic_tag": "stub0", "mac": "zz:08:20:00:00:01"}]"#.to_string(), "mac"),
        (r#"[{"nic_tag": "stub0", "vlan_id": 4095}]"#.to_string(), "vlan_id"),
        (r#"[{"nic_tag": "../stub0"}]"#.to_string(), "nic_tag"),
        (format!("[{nine}]"), "nics"),
    ] {
        let payload = format!(r#"{{"brand": "bhyve", "ram": 64, "kernel": "/zone-guest-halt", "nics": {nics}}}"#);
        let out = env.vmadm(&["create"], &payload)?;
        if out.code != 1 || !out.stderr.contains(property) {
            return Err(format!("create with nics {nics}: {out:?}"));
        }
    }
    let list = env.ok(&["list", "-p", "-o", "uuid"], "")?;
    if !list.stdout.is_empty() {
        return Err(format!("after refused payloads, vmadm list shows {:?}", list.stdout));
    }
    let after = env.datasets()?;
    if after != before {
        return Err(format!("refused payloads changed the pool: {before:?} -> {after:?}"));
    }
    Ok(())
}

/// A VM with a disk and a NIC stopped and started seventy times (each
/// start a new VMM process from init, with its pool grant, its VNIC grant,
/// frames and capabilities): every start succeeds, the VM runs after each,
/// and init's kernel memory is the same after the last start as after the
/// first; then such VMs are created and deleted fifteen times, each delete
/// leaving nothing. (Each start once took a dozen of init's 1024
/// capability slots for good: starts failed after some sixty.)
fn a_vm_stops_and_starts_again_and_again(env: &mut Env) -> Result<(), String> {
    const CYCLES: u32 = 70;
    const CREATES: u32 = 15;
    let init_before = env.init_used_kib()?;
    let cycle_payload = nic_payload("zone-cycle", NET_MAC_A, "10.9.0.21");
    let out = env.ok(&["create"], &cycle_payload)?;
    let uuid = created(&out)?;
    let init_running = env.init_used_kib()?;
    for n in 1..=CYCLES {
        env.ok(&["stop", "-F", &uuid], "").map_err(|e| format!("stop {n}: {e}"))?;
        env.ok(&["start", &uuid], "").map_err(|e| format!("start {n} of {CYCLES}: {e}"))?;
    }
    let line = env.ok(&["list", "-p", "-o", "state", &format!("uuid={uuid}")], "")?.stdout;
    if line.trim() != "running" {
        return Err(format!("after {CYCLES} stops and starts vmadm list says {line:?}"));
    }
    let init_after = env.init_used_kib()?;
    if init_after != init_running {
        return Err(format!("init's kernel memory with the VM running: {init_running} KiB after the first start, {init_after} KiB after {CYCLES} more"));
    }
    println!("zone: {CYCLES} stops and starts of one VM, init at {init_after} KiB throughout");
    env.delete_leaving_nothing(&uuid, init_before)?;
    for n in 1..=CREATES {
        let out = env.ok(&["create"], &cycle_payload).map_err(|e| format!("create {n} of {CREATES}: {e}"))?;
        let uuid = created(&out)?;
        env.delete_leaving_nothing(&uuid, init_before).map_err(|e| format!("delete {n}: {e}"))?;
    }
    println!("zone: {CREATES} creates and deletes of a VM with a disk and a NIC, each leaving nothing");
    Ok(())
}

fn create_list_stop_delete(env: &mut Env) -> Result<(), String> {
    let init_before = env.init_used_kib()?;
    let out = env.ok(&["create"], &payload("zone-halt", "zone-guest-halt"))?;
    let uuid = created(&out)?;
    env.vm = Some(uuid.clone());
    println!("zone: created VM {uuid}");
    // Its volume exists and is the VMM's: storaged refuses to destroy it.
    let volume = format!("zones/{uuid}-disk0");
    let sets = env.datasets()?;
    if !sets.contains(&volume) || !sets.contains(&format!("zones/{uuid}-vm")) {
        return Err(format!("after create the pool holds {sets:?}, without {volume} and its record"));
    }
    let c = pool::Client::new(client(env.storaged));
    match c.destroy(volume.clone(), true).map_err(|e| format!("pool.destroy: {e}"))? {
        Err(libipc::interfaces::PoolError::Busy { .. }) => {}
        other => return Err(format!("destroying a running VM's volume gave {other:?}, expected Busy (granted)")),
    }
    let line = env.ok(&["list", "-p", "-o", "uuid,type,ram,state,alias"], "")?.stdout;
    if line.trim() != format!("{uuid}:BHYV:64:running:zone-halt") {
        return Err(format!("vmadm list -p: {line:?}"));
    }
    let got = env.ok(&["get", &uuid], "")?.stdout;
    if !got.contains("\"role\": \"test\"") || !got.contains("\"state\": \"running\"") {
        return Err(format!("vmadm get: {got}"));
    }
    // A VMM runs: init's kernel memory holds its process.
    let init_running = env.init_used_kib()?;
    if init_running <= init_before {
        return Err(format!("init's kernel memory did not grow while a VMM ran ({init_before} -> {init_running} KiB)"));
    }
    // A graceful stop: the guest sees the ACPI power button and powers off
    // (the harness checks its VMM's "ended: poweroff" line).
    println!("zone: stopping VM {uuid}");
    env.ok(&["stop", &uuid, "-t", "60"], "")?;
    let state = env.state(&uuid)?;
    if state != "stopped" {
        return Err(format!("after stop, the state is {state:?}"));
    }
    // Its volume is no longer granted: the record stays until delete.
    env.ok(&["delete", &uuid], "")?;
    env.vm = None;
    let list = env.ok(&["list", "-p"], "")?.stdout;
    if !list.is_empty() {
        return Err(format!("after delete, vmadm list shows {list:?}"));
    }
    let left: Vec<String> = env.datasets()?.into_iter().filter(|d| d.contains(&uuid)).collect();
    if !left.is_empty() {
        return Err(format!("after delete, the pool still holds {left:?}"));
    }
    let out = env.vmadm(&["get", &uuid], "")?;
    if out.code != 1 {
        return Err(format!("vmadm get of a deleted VM: {out:?}"));
    }
    let init_after = env.init_used_kib()?;
    if init_after != init_before {
        return Err(format!("init held {init_before} KiB before the VM and {init_after} KiB after its delete"));
    }
    Ok(())
}

/// Polls `done` until it says so, waiting `step_ns` between tries; gives
/// up after many tries (a generous bound for a loaded host, not a timing
/// assertion).
fn wait_for(mut done: impl FnMut() -> Result<bool, String>, step_ns: u64) -> Result<bool, String> {
    let n = sys::create(abi::ObjectType::Notification, 199, 0).is_ok();
    for _ in 0..600 {
        if done()? {
            if n {
                let _ = sys::cap_delete(199);
            }
            return Ok(true);
        }
        if n {
            let _ = sys::wait(199, step_ns);
        } else {
            let _ = sys::yield_now();
        }
    }
    if n {
        let _ = sys::cap_delete(199);
    }
    Ok(false)
}

/// How long the zone-server restart test leaves the ticking guests
/// between the restart and their stop.
const TICK_WATCH_NS: u64 = 2_500_000_000;

/// Waits `ns` (on a notification nobody signals), or yields once if none
/// can be made.
fn sleep_ns(ns: u64) {
    if sys::create(abi::ObjectType::Notification, 199, 0).is_ok() {
        let _ = sys::wait(199, ns);
        let _ = sys::cap_delete(199);
    } else {
        let _ = sys::yield_now();
    }
}

/// The deaf VM's first stop: `-t` seconds zone-server waits for its guest.
const DEAF_STOP_SECS: u64 = 8;

/// `zone-guest-deaf` ignores the ACPI power button. A `stop -t 8` begun
/// with `vmadm.begin` answers `pending` at once; while it waits,
/// zone-server answers this client's `vmadm.run`s (`list` says
/// `stopping`, a second `stop` is vmadm's "already not 'running'
/// (currently: stopping)", `start` is refused); then the suite asks
/// nothing until past the deadline, and zone-server's timer halts the VM
/// (its line comes between the suite's two lines: the harness checks);
/// the next `vmadm.step` answers vmadm's success. Then `stop -t 1`
/// presses it, waits its second and halts the VM all the same; `stop
/// -F` halts it at once. Each time it ends `stopped` with its volume no
/// longer granted.
fn a_guest_deaf_to_the_power_button_is_halted(env: &mut Env) -> Result<(), String> {
    let init_before = env.init_used_kib()?;
    let uuid = created(&env.ok(&["create"], &payload("zone-deaf", "zone-guest-deaf"))?)?;
    let c = vmadm::Client::new(client(env.zone));
    let args: Vec<String> = ["stop", uuid.as_str(), "-t", &DEAF_STOP_SECS.to_string()].iter().map(|a| a.to_string()).collect();
    let step = c.begin("vmadm".into(), args, String::new()).map_err(|e| format!("vmadm.begin: {e}"))?;
    if !step.pending {
        return Err(format!("stop -t {DEAF_STOP_SECS} of a deaf guest answered at once: {step:?}"));
    }
    println!("zone: stop -t {DEAF_STOP_SECS} of the deaf VM {uuid} begun: pending"); // ci/src/zone.rs: DEAF_BEGUN_LINE
    let list = env.vmadm_run(&["list", "-p", "-o", "state", &format!("uuid={uuid}")])?;
    if list.code != 0 || list.stdout.trim() != "stopping" {
        return Err(format!("while its stop waits, vmadm list answered {list:?}, expected \"stopping\""));
    }
    let again = env.vmadm_run(&["stop", &uuid])?;
    if again.code != 0 || !again.stderr.contains("is already not 'running' (currently: stopping)") {
        return Err(format!("a second stop while stopping answered {again:?}"));
    }
    let start = env.vmadm_run(&["start", &uuid])?;
    if start.code != 1 || !start.stderr.contains("VM is stopping") {
        return Err(format!("a start while stopping answered {start:?}"));
    }
    println!("zone: vmadm list answered \"stopping\" while the stop waits; asking nothing until its deadline");
    sleep_ns((DEAF_STOP_SECS + 3) * 1_000_000_000);
    println!("zone: the deaf VM's stop deadline passed with nobody asking"); // DEAF_DEADLINE_LINE
    let step = c.step().map_err(|e| format!("vmadm.step: {e}"))?;
    let said = c.read(libipc::interfaces::VmadmStream::Stderr, 0).map_err(|e| format!("vmadm.read: {e}"))?;
    let said = String::from_utf8_lossy(&said).into_owned();
    if step.pending || step.code != 0 || said != format!("Successfully completed stop for VM {uuid}\n") {
        return Err(format!("past its deadline the stop steps {step:?}: {said:?}"));
    }
    if env.state(&uuid)? != "stopped" {
        return Err(format!("after the deadline the deaf VM is {:?}", env.state(&uuid)?));
    }
    env.ok(&["start", &uuid], "")?;
    for how in [&["-t", "1"][..], &["-F"][..]] {
        if env.state(&uuid)? != "running" {
            return Err(format!("before stop {how:?}, the deaf VM is {:?}", env.state(&uuid)?));
        }
        let mut args = vec!["stop", uuid.as_str()];
        args.extend_from_slice(how);
        env.ok(&args, "")?;
        let state = env.state(&uuid)?;
        if state != "stopped" {
            return Err(format!("after stop {how:?} of a guest deaf to the button, the state is {state:?}"));
        }
        if how[0] == "-t" {
            env.ok(&["start", &uuid], "")?;
        }
    }
    env.delete_leaving_nothing(&uuid, init_before)
}

/// The guest writes its line and powers the VM off: zone-server sees its
/// VMM end and `vmadm list` says `stopped`; delete gives everything back.
fn a_guest_that_powers_off_is_seen_stopped(env: &mut Env) -> Result<(), String> {
    let init_before = env.init_used_kib()?;
    let out = env.ok(&["create"], &payload("zone-off", "zone-guest-off"))?;
    let uuid = created(&out)?;
    let stopped = wait_for(|| Ok(env.state(&uuid)? == "stopped"), 500_000_000)?;
    if !stopped {
        return Err(format!("the VM whose guest powers off is still {:?}", env.state(&uuid)?));
    }
    // Started again, it runs (and powers off again).
    env.ok(&["start", &uuid], "")?;
    env.delete_leaving_nothing(&uuid, init_before)
}

/// zone-server is stopped (init restarts it) while two VMs run, one with
/// a NIC: both VMMs keep running, and the new zone-server, from the
/// records on the pool (`alcove:vmm` of each record volume names the VMM's
/// init instance, its pool grant and its VNIC grant), lists them
/// `running`, stops them (giving back the VNIC: its MAC can be granted
/// again) and deletes them. The two guests tick on their consoles
/// (`zone-guest-tick-a`, `-b`): the harness checks that both go on
/// ticking after this test's `zone-server restarted` line, each VM's VMM
/// started once (the restarted zone-server did not boot them again).
fn a_restarted_zone_server_finds_its_running_vms(env: &mut Env) -> Result<(), String> {
    let init_before = env.init_used_kib()?;
    let keep = created(&env.ok(&["create"], &payload("zone-keep", "zone-guest-tick-a"))?)?;
    let net = created(&env.ok(&["create"], &nic_payload_booting("zone-keep-net", NET_MAC_C, "10.9.0.13", "zone-guest-tick-b"))?)?;
    let st = status::Client::new(client(env.zone));
    let first = st.status().map_err(|e| format!("status: {e}"))?;
    libipc::interfaces::lifecycle::Client::new(client(env.zone)).stop(0).map_err(|e| format!("stop zone-server: {e}"))??;
    // The next call waits in the endpoint until init has restarted it.
    let again = st.status().map_err(|e| format!("status after the restart: {e}"))?;
    if again.requests_served != 1 {
        return Err(format!("expected a fresh zone-server (1 request), got {} (was {})", again.requests_served, first.requests_served));
    }
    println!("zone: zone-server restarted with two VMs running"); // ci/src/zone.rs: RESTARTED_LINE
    let lines = env.ok(&["list", "-p", "-s", "alias", "-o", "uuid,state,alias"], "")?.stdout;
    let want = format!("{keep}:running:zone-keep\n{net}:running:zone-keep-net\n");
    if lines != want {
        return Err(format!("the restarted zone-server lists {lines:?}, expected {want:?}"));
    }
    let init_running = env.init_used_kib()?;
    if init_running <= init_before {
        return Err(format!("the VMMs did not survive zone-server's restart (init {init_before} -> {init_running} KiB)"));
    }
    // Only the VMMs' starter gets their control notifications back from
    // init: this process (which may start VMMs of its own) cannot press
    // their power buttons.
    for uuid in [&keep, &net] {
        others_control_refused(env, uuid)?;
    }
    // Time for the guests to show on their consoles that they run on.
    sleep_ns(TICK_WATCH_NS);
    println!("zone: stopping the two VMs through the restarted zone-server"); // STOPPING_LINE
    // The running VM's MAC is taken on stub0.
    if granted_mac_is_free(env, NET_MAC_C)? {
        return Err(format!("netd granted {NET_MAC_C} while VM {net} holds it"));
    }
    // `zone-keep` by its power button (its guest says it saw it: the
    // harness checks), `zone-keep-net` halted at once (`-F`: its guest
    // never sees the button).
    for (uuid, how) in [(&keep, None), (&net, Some("-F"))] {
        let mut args = vec!["stop", uuid.as_str()];
        args.extend(how);
        env.ok(&args, "")?;
        let state = env.state(uuid)?;
        if state != "stopped" {
            return Err(format!("after stop {how:?} by the restarted zone-server, {uuid} is {state:?}"));
        }
    }
    if !granted_mac_is_free(env, NET_MAC_C)? {
        return Err(format!("after stop by the restarted zone-server, netd still holds VM {net}'s VNIC ({NET_MAC_C})"));
    }
    env.ok(&["delete", &keep], "")?;
    env.delete_leaving_nothing(&net, init_before)
}

/// `proc.control` of the VMM that runs `uuid` (its init instance from
/// its record volume's `alcove:vmm`), asked by this process, which is not
/// its starter: init answers that it has no such instance and sends no
/// capability.
fn others_control_refused(env: &Env, uuid: &str) -> Result<(), String> {
    let c = pool::Client::new(client(env.storaged));
    let record = format!("zones/{uuid}-vm");
    let prop = c
        .get_prop(record.clone(), "alcove:vmm".into(), 0)
        .map_err(|e| format!("pool.get_prop: {e}"))?
        .map_err(|e| format!("{record} alcove:vmm: {e}"))?;
    let text = String::from_utf8(prop.bytes).map_err(|_| format!("{record} alcove:vmm: not UTF-8"))?;
    let instance: u32 =
        text.split(':').next().and_then(|n| n.parse().ok()).ok_or_else(|| format!("{record} alcove:vmm is {text:?}"))?;
    let slot = 197;
    let _ = sys::cap_delete(slot);
    let t = libipc::kernel::CapTransport::new(Cap::from_slot(env.proc), &[slot]);
    let got = proc::Client::new(&t).control(instance).map_err(|e| format!("proc.control: {e}"))?;
    let received = t.received();
    let _ = sys::cap_delete(slot);
    if got != Err(ProcError::NoSuchInstance { instance }) || received != 0 {
        return Err(format!("proc.control of zone-server's instance {instance} (VM {uuid}), asked by another: {got:?}, {received} capabilities"));
    }
    Ok(())
}

/// Lines of the metadata guest's `cloud-init:user-data`, as
/// `ci/src/zone.rs`'s `mdata_user_data_line` makes them (the harness
/// requires each on the console).
const MDATA_USER_DATA_LINES: usize = 32;

/// `text` (letters, digits, `-`, `/`, spaces and newlines) as a JSON string.
fn json_string(text: &str) -> String {
    format!("\"{}\"", text.replace('\n', "\\n"))
}

fn mdata_user_data() -> String {
    let letters = "abcdefghijklmnopqrstuvwxyz0123456789-".repeat(2);
    let lines: Vec<String> = (0..MDATA_USER_DATA_LINES)
        .map(|i| format!("zone-md-user-data {i:02}/{MDATA_USER_DATA_LINES} {}", &letters[i..i + 38]))
        .collect();
    lines.join("\n")
}

/// The metadata guest asks COM2 for `sdc:hostname` and `customer_metadata`
/// keys `role` and `cloud-init:user-data` (2 KiB: the VM's `vm.json` is
/// longer than one message, so zone-server stages it with init in
/// pieces), copies the answers to its console (the harness checks the
/// values, every line of the user-data, and the `FAILURE` of its
/// malformed request) and powers off: the VM is seen `stopped`, and
/// delete leaves nothing. Meanwhile this process (another `proc` caller)
/// has start data staged with init, which zone-server's start never gets.
fn a_guest_reads_its_metadata_on_com2(env: &mut Env) -> Result<(), String> {
    let init_before = env.init_used_kib()?;
    let p = proc::Client::new(client(env.proc));
    let staged = p.append_start_data(0, b"}{not zone-server's".to_vec()).map_err(|e| format!("proc.append_start_data: {e}"))?;
    if staged != Ok(19) {
        return Err(format!("append_start_data of 19 bytes: {staged:?}"));
    }
    let user_data = mdata_user_data();
    let payload = format!(
        r#"{{"brand": "bhyve", "alias": "zone-md", "hostname": "zone-md-host", "ram": 64, "vcpus": 1,
  "kernel": "/zone-guest-mdata", "customer_metadata": {{"role": "mdata-role-value", "cloud-init:user-data": {}}},
  "disks": [{{"size": 8}}]}}"#,
        json_string(&user_data)
    );
    let uuid = created(&env.ok(&["create"], &payload)?)?;
    let got = env.ok(&["get", &uuid], "")?.stdout;
    if !got.contains("\"hostname\": \"zone-md-host\"") {
        return Err(format!("vmadm get of a VM with a hostname: {got}"));
    }
    if !got.contains(&format!("\"cloud-init:user-data\": {}", json_string(&user_data))) {
        return Err(format!("vmadm get of a VM with 2 KiB of user-data: {got}"));
    }
    if !wait_for(|| Ok(env.state(&uuid)? == "stopped"), 500_000_000)? {
        return Err(format!("the metadata guest's VM is still {:?}", env.state(&uuid)?));
    }
    // The guest's PUT (protocol v2: `guest-said`) came back from its VMM
    // to the record.
    let got = env.ok(&["get", &uuid], "")?.stdout;
    if !got.contains("\"guest-said\": \"put-by-the-guest\"") {
        return Err(format!("vmadm get after the guest's PUT of guest-said: {got}"));
    }
    // Ours is still there, untouched by zone-server's start; offset 0
    // with nothing drops it.
    let more = p.append_start_data(19, b"!".to_vec()).map_err(|e| format!("proc.append_start_data: {e}"))?;
    let dropped = p.append_start_data(0, Vec::new()).map_err(|e| format!("proc.append_start_data: {e}"))?;
    if (more.clone(), dropped.clone()) != (Ok(20), Ok(0)) {
        return Err(format!("this process's staging after zone-server's start: {more:?}, then dropped: {dropped:?}"));
    }
    env.delete_leaving_nothing(&uuid, init_before)
}

/// `vmadm update` of a running VM's `customer_metadata` reaches its
/// guest at once: `zone-guest-mdata-live` asks for `live-key` (absent at
/// create: NOTFOUND) until the update sets it, then prints it and powers
/// off. The VM stopping by itself is the guest having read the value; the
/// harness checks the lines and that its VMM started once.
fn a_running_vm_s_metadata_update_reaches_its_guest(env: &mut Env) -> Result<(), String> {
    let init_before = env.init_used_kib()?;
    let payload = r#"{"brand": "bhyve", "alias": "zone-md-live", "ram": 64, "vcpus": 1, "kernel": "/zone-guest-mdata-live", "disks": [{"size": 8}]}"#;
    let uuid = created(&env.ok(&["create"], payload)?)?;
    env.vm = Some(uuid.clone());
    // Let it ask a few times first (the harness wants a NOTFOUND before).
    sleep_ns(300_000_000);
    env.ok(&["update", &uuid], r#"{"set_customer_metadata": {"live-key": "set-while-running"}}"#)?;
    if !wait_for(|| Ok(env.state(&uuid)? == "stopped"), 500_000_000)? {
        return Err(format!("after the live update the guest is still {:?}: it never read the key", env.state(&uuid)?));
    }
    env.vm = None;
    env.delete_leaving_nothing(&uuid, init_before)
}

/// MACs of the suite's VMs' NICs (on zone.toml's etherstub `stub0`).
const NET_MAC_A: &str = "02:08:20:07:00:01";
const NET_MAC_B: &str = "02:08:20:07:00:02";
const NET_MAC_C: &str = "02:08:20:07:00:03";
/// The VM that runs through netd's restart, and one deleted before it.
const NET_MAC_KEEP: &str = "02:08:20:07:00:04";
const NET_MAC_GONE: &str = "02:08:20:07:00:05";
/// A VNIC of this process's own grant (the abuse case).
const OWN_MAC: &str = "02:08:20:07:00:09";

/// A payload with one NIC on `stub0`.
fn nic_payload(alias: &str, mac: &str, ip: &str) -> String {
    nic_payload_booting(alias, mac, ip, "zone-guest-halt")
}

/// A payload with one NIC on `stub0` whose VM boots `kernel`.
fn nic_payload_booting(alias: &str, mac: &str, ip: &str, kernel: &str) -> String {
    format!(
        r#"{{"brand": "bhyve", "alias": "{alias}", "ram": 64, "vcpus": 1, "kernel": "/{kernel}",
  "disks": [{{"size": 8}}], "nics": [{{"nic_tag": "stub0", "mac": "{mac}", "ips": ["{ip}/24"], "primary": true}}]}}"#
    )
}

fn netd_admin(env: &Env) -> Result<libipc::interfaces::vnic::Client<KernelTransport>, String> {
    let netd = env.netd.ok_or("zone.toml grants ktest-zone no netd endpoint")?;
    Ok(libipc::interfaces::vnic::Client::new(client(netd)))
}

/// Whether netd grants a VNIC with `mac` on stub0 now (it refuses a MAC a
/// VNIC holds); the grant is given back at once.
fn granted_mac_is_free(env: &Env, mac: &str) -> Result<bool, String> {
    let v = netd_admin(env)?;
    match v.grant(vec![format!("switch=stub0 mac={mac}")]).map_err(|e| format!("vnic.grant: {e}"))? {
        Ok(g) => {
            v.revoke(g.badge).map_err(|e| format!("vnic.revoke: {e}"))?.map_err(|e| format!("vnic.revoke: {e}"))?;
            Ok(true)
        }
        Err(libipc::interfaces::VnicError::Invalid { why }) if why.contains("already on switch") => Ok(false),
        Err(e) => Err(format!("vnic.grant of {mac}: {e}")),
    }
}

/// Two VMs with a NIC each on the etherstub: zone-server had netd make
/// their VNICs and gave each VMM a netd endpoint of its own grant (the
/// harness checks netd's line that each VMM attached its VNIC). A grant of
/// this process's reaches its own VNIC only: every other VNIC number,
/// the VMs' included, answers "no such VNIC"; its endpoint cannot grant;
/// its VNIC passes frames (an ARP request to netd's host address on the
/// etherstub is answered). Stopping a VM gives its VNIC back; delete
/// leaves nothing.
fn a_vm_s_nics_are_vnics_only_its_vmm_reaches(env: &mut Env) -> Result<(), String> {
    use libipc::interfaces::{VnicError, vnic};
    use libipc::kernel::CapTransport;
    let init_before = env.init_used_kib()?;
    let a = created(&env.ok(&["create"], &nic_payload("zone-net-a", NET_MAC_A, "10.9.0.11"))?)?;
    let b = created(&env.ok(&["create"], &nic_payload("zone-net-b", NET_MAC_B, "10.9.0.12"))?)?;
    for uuid in [&a, &b] {
        let state = env.state(uuid)?;
        if state != "running" {
            return Err(format!("VM {uuid} with a NIC is {state:?}"));
        }
    }
    // Each VMM attaches its VNIC as it starts (through its own grant).
    let attached = |mac: &str| -> Result<bool, String> {
        let shown = netd_admin(env)?.show(0).map_err(|e| format!("vnic.show: {e}"))?.map_err(|e| format!("vnic.show: {e}"))?;
        Ok(shown.iter().any(|v| format!("{}", MacText(v.mac)) == mac && v.attached && v.switch == "stub0"))
    };
    if !wait_for(|| Ok(attached(NET_MAC_A)? && attached(NET_MAC_B)?), 200_000_000)? {
        return Err("the VMs' VMMs never attached their VNICs on stub0".into());
    }
    println!("zone: both VMs' VMMs attached their VNICs");
    let got = env.ok(&["get", &a], "")?.stdout;
    if !got.contains(NET_MAC_A) || !got.contains("\"nic_tag\": \"stub0\"") {
        return Err(format!("vmadm get of a VM with a NIC: {got}"));
    }
    // The VMs' MACs are taken: a grant of one is refused by name.
    for mac in [NET_MAC_A, NET_MAC_B] {
        if granted_mac_is_free(env, mac)? {
            return Err(format!("netd granted {mac} while a VM holds it"));
        }
    }
    // The abuse case: a grant of our own.
    let netd = env.netd.ok_or("zone.toml grants ktest-zone no netd endpoint")?;
    let (own, frame) = (193, 194);
    let t = CapTransport::new(Cap::from_slot(netd), &[own]);
    let g = vnic::Client::new(&t)
        .grant(vec![format!("switch=stub0 mac={OWN_MAC} ip=10.9.0.9")])
        .map_err(|e| format!("vnic.grant: {e}"))?
        .map_err(|e| format!("vnic.grant: {e}"))?;
    if t.received() != 1 {
        return Err("vnic.grant: no endpoint came with the reply".into());
    }
    let mine = vnic::Client::new(client(own));
    let result = (|| -> Result<(), String> {
        let listed = mine.vnics().map_err(|e| format!("vnics: {e}"))?;
        if listed.len() != 1 || listed[0].vnic != g.vnics[0] || format!("{}", MacText(listed[0].mac)) != OWN_MAC {
            return Err(format!("our grant lists {listed:?}"));
        }
        for n in 0..32 {
            if n == g.vnics[0] {
                continue;
            }
            match mine.attach(n, 0).map_err(|e| format!("attach {n}: {e}"))? {
                Err(VnicError::NoSuchVnic { .. }) => {}
                other => return Err(format!("our grant attaching VNIC {n} (another's or none) got {other:?}")),
            }
        }
        match mine.grant(vec![format!("switch=stub0 mac=02:08:20:07:00:0a")]).map_err(|e| format!("grant: {e}"))? {
            Err(VnicError::NotPermitted) => {}
            other => return Err(format!("a grant's endpoint granting got {other:?}")),
        }
        arp_through_own_vnic(own, frame, g.vnics[0])
    })();
    let _ = sys::cap_delete(frame);
    let v = netd_admin(env)?;
    let revoked = v.revoke(g.badge).map_err(|e| format!("vnic.revoke: {e}"))?;
    let _ = sys::cap_delete(own);
    result?;
    if revoked != Ok(1) {
        return Err(format!("vnic.revoke of our grant: {revoked:?}"));
    }
    // Stopped, A's VNIC is gone; B's is still held.
    env.ok(&["stop", &a, "-F"], "")?;
    if !granted_mac_is_free(env, NET_MAC_A)? || granted_mac_is_free(env, NET_MAC_B)? {
        return Err("after stopping VM A, netd should hold B's VNIC only".into());
    }
    env.ok(&["delete", &a], "")?;
    env.delete_leaving_nothing(&b, init_before)?;
    if !granted_mac_is_free(env, NET_MAC_B)? {
        return Err(format!("after delete, netd still holds {NET_MAC_B}"));
    }
    Ok(())
}

struct MacText([u8; 6]);

impl core::fmt::Display for MacText {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let m = self.0;
        write!(f, "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2], m[3], m[4], m[5])
    }
}

/// Attaches VNIC `vnic` through the grant endpoint `own` (its ring's frame
/// lands in `frame`), sends an ARP request for netd's host address
/// 10.9.0.1 (zone.toml's netd.conf) and waits for the reply.
fn arp_through_own_vnic(own: CapSlot, frame: CapSlot, vnic_id: u32) -> Result<(), String> {
    use alcove_rt::SharedMemory;
    use libipc::framering::{Consumer, Direction, Geometry, Producer};
    use libipc::interfaces::vnic;
    use libipc::kernel::CapTransport;
    let t = CapTransport::new(Cap::from_slot(own), &[frame]);
    let attached = vnic::Client::new(&t).attach(vnic_id, 0).map_err(|e| format!("attach: {e}"))?.map_err(|e| format!("attach: {e}"))?;
    if t.received() != 1 {
        return Err("attach: no ring came with the reply".into());
    }
    let mine = vnic::Client::new(client(own));
    let mut region =
        SharedMemory::map_frame(frame, 0x2c00_0000, u64::from(attached.ring_pages)).map_err(|e| format!("map the ring: {e}"))?;
    let g = Geometry::from_header(&region).map_err(|e| format!("ring header: {e}"))?;
    let (mut tx, mut rx) = (Producer::new(g, Direction::ToNetd), Consumer::new(g, Direction::ToVmm));
    let mac = attached.mac;
    let mut ask = vec![0xff; 6];
    ask.extend_from_slice(&mac);
    ask.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
    ask.extend_from_slice(&mac);
    ask.extend_from_slice(&[10, 9, 0, 9]);
    ask.extend_from_slice(&[0; 6]);
    ask.extend_from_slice(&[10, 9, 0, 1]);
    ask.resize(60, 0);
    let mut answered = false;
    let mut buf = vec![0u8; 2048];
    let note = sys::create(abi::ObjectType::Notification, 199, 0).is_ok();
    for round in 0..200 {
        if round % 20 == 0 {
            tx.push(&mut region, &ask).map_err(|e| format!("ring: {e}"))?;
        }
        mine.kick(attached.handle).map_err(|e| format!("kick: {e}"))?.map_err(|e| format!("kick: {e}"))?;
        rx.pop_all(&mut region, &mut buf, 16, |f| {
            if f.len() >= 42 && f[12..14] == [0x08, 0x06] && f[20..22] == [0, 2] && f[28..32] == [10, 9, 0, 1] && f[32..38] == mac {
                answered = true;
            }
        })
        .map_err(|e| format!("ring: {e}"))?;
        if answered {
            break;
        }
        if note {
            let _ = sys::wait(199, 50_000_000);
        }
    }
    if note {
        let _ = sys::cap_delete(199);
    }
    let _ = mine.detach(attached.handle);
    drop(region);
    if !answered {
        return Err("no ARP reply from netd's host address 10.9.0.1 through our granted VNIC".into());
    }
    println!("zone: a granted VNIC's ARP request to 10.9.0.1 was answered");
    Ok(())
}

/// This process may start `vmm-server` with a small budget (zone.toml):
/// init refuses an unknown template, start data beyond its limit (a
/// message's, a staged chunk's, the staged total's), a staged chunk that
/// does not follow on, a budget beyond what is left, and instance numbers
/// that are not (or no longer) the caller's; a failed start drops what was
/// staged for it; an instance started from staged start data that ends is
/// reported, then reaped.
fn proc_refuses_what_the_caller_may_not_do(env: &mut Env) -> Result<(), String> {
    let p = proc::Client::new(client(env.proc));
    let call = |r: Result<Result<u32, ProcError>, IpcError>| r.map_err(|e| format!("proc: {e}"));
    let got = call(p.start("ktest-zone".into(), vec![], 64))?;
    if got != Err(ProcError::NotPermitted { template: "ktest-zone".into() }) {
        return Err(format!("start of a server not in spawns: {got:?}"));
    }
    let got = call(p.start("no-such-server".into(), vec![], 64))?;
    if got != Err(ProcError::UnknownTemplate { template: "no-such-server".into() }) {
        return Err(format!("start of an unknown template: {got:?}"));
    }
    let huge = vec![b'{'; PROC_START_DATA_MAX as usize + 1];
    let got = call(p.start("vmm-server".into(), huge.clone(), 64))?;
    if !matches!(got, Err(ProcError::TooLarge { .. })) {
        return Err(format!("start with too much start data: {got:?}"));
    }
    // Start data staged in pieces: each at most one message's, following
    // on from what is staged, in all at most PROC_START_DATA_TOTAL_MAX.
    let chunk = vec![b' '; PROC_START_DATA_MAX as usize];
    let append = |offset: u32, bytes: &[u8]| call(p.append_start_data(offset, bytes.to_vec()));
    let got = append(0, &huge)?;
    if !matches!(got, Err(ProcError::TooLarge { max, .. }) if max == u64::from(PROC_START_DATA_MAX)) {
        return Err(format!("append_start_data of a chunk over one message: {got:?}"));
    }
    append(0, &chunk)?.map_err(|e| format!("append_start_data of one message: {e}"))?;
    let got = append(1, &chunk)?;
    if !matches!(got, Err(ProcError::StartData { ref why }) if why.contains("bytes are staged")) {
        return Err(format!("append_start_data at an offset that is not the bytes staged: {got:?}"));
    }
    let mut got = Ok(0);
    let mut offset = 0;
    while let Ok(staged) = got {
        offset = staged;
        got = append(offset, &chunk)?;
    }
    if offset != PROC_START_DATA_TOTAL_MAX || !matches!(got, Err(ProcError::TooLarge { max, .. }) if max == u64::from(PROC_START_DATA_TOTAL_MAX)) {
        return Err(format!("append_start_data past the total: {got:?} after {offset} bytes"));
    }
    let limit = p.usage().map_err(|e| format!("proc.usage: {e}"))?.budget_limit_kib;
    let got = call(p.start("vmm-server".into(), vec![], limit + 1))?;
    if got != Err(ProcError::OutOfBudget { asked_kib: limit + 1, left_kib: limit }) {
        return Err(format!("start beyond the spawn budget of {limit} KiB: {got:?}"));
    }
    // Numbers that are not ours: never given, and zone-server's (1, 2...).
    for n in [0, 1, 2, 3, 9999, u32::MAX] {
        let got = p.state(n).map_err(|e| format!("proc.state: {e}"))?;
        if got != Err(ProcError::NoSuchInstance { instance: n }) {
            return Err(format!("state of instance {n}, not ours: {got:?}"));
        }
        let got = p.stop(n).map_err(|e| format!("proc.stop: {e}"))?;
        if got != Err(ProcError::NoSuchInstance { instance: n }) {
            return Err(format!("stop of instance {n}, not ours: {got:?}"));
        }
    }
    // A capability that is not an endpoint cannot stand in for storaged;
    // the start data staged for that start goes with it.
    append(0, b"{\"stale\"")?.map_err(|e| format!("append_start_data: {e}"))?;
    let note = 198;
    sys::create(abi::ObjectType::Notification, note, 0).map_err(|e| format!("notification: {e}"))?;
    let t = libipc::kernel::CapTransport::new(Cap::from_slot(env.proc), &[]).sending(&[note]);
    let got = proc::Client::new(&t).start("vmm-server".into(), b"{}".to_vec(), limit);
    let _ = sys::cap_delete(note);
    if !matches!(got, Ok(Err(ProcError::Start { ref why })) if why.contains("not an endpoint")) {
        return Err(format!("start with a notification as its storaged: {got:?}"));
    }
    let got = append(9, b"}")?;
    if !matches!(got, Err(ProcError::StartData { ref why }) if why.contains("0 bytes are staged")) {
        return Err(format!("append_start_data after a failed start: {got:?}, expected its staging gone"));
    }
    // `give`: only the names an instance takes, each of its own kind, and
    // only with a capability sent.
    let give = |name: &str, sent: Option<CapSlot>| {
        let slots: Vec<CapSlot> = sent.into_iter().collect();
        let t = libipc::kernel::CapTransport::new(Cap::from_slot(env.proc), &[]).sending(&slots);
        proc::Client::new(&t).give(name.into()).map_err(|e| format!("proc.give: {e}"))
    };
    sys::create(abi::ObjectType::Notification, note, 0).map_err(|e| format!("notification: {e}"))?;
    for (name, sent, why) in [
        ("storaged", Some(note), "not a name"),
        ("console", Some(env.zone), "not a name"),
        ("control", None, "no capability"),
        ("control", Some(env.zone), "not a notification"),
        ("netd", Some(note), "not an endpoint"),
    ] {
        let got = give(name, sent)?;
        if !matches!(&got, Err(ProcError::BadCapability { name: n, why: w }) if n == name && w.contains(why)) {
            let _ = sys::cap_delete(note);
            return Err(format!("give {name:?} with {sent:?}: {got:?}, expected BadCapability ({why})"));
        }
    }
    // Ours are still ours after a refusal.
    if sys::cap_identify(note).is_err() || vmadm::Client::new(client(env.zone)).run(vec!["list".into()], String::new()).is_err() {
        return Err("a refused give took the caller's own capability".into());
    }
    // A right one is kept for the next start (the VMM below takes it).
    let got = give("control", Some(note))?;
    let _ = sys::cap_delete(note);
    got.map_err(|e| format!("give \"control\" with a notification: {e}"))?;
    // A real one: a VMM with a description it refuses ends with an error
    // (its start data staged in two pieces, the last with start).
    append(0, b"{\"ram\"")?.map_err(|e| format!("append_start_data: {e}"))?;
    let id = call(p.start("vmm-server".into(), b": 1}".to_vec(), limit))?
        .map_err(|e| format!("start of a VMM within the budget: {e}"))?;
    let mut state = ProcState::Running;
    wait_for(
        || {
            state = p.state(id).map_err(|e| format!("proc.state: {e}"))?.map_err(|e| format!("proc.state: {e}"))?;
            Ok(state != ProcState::Running)
        },
        100_000_000,
    )?;
    if !matches!(state, ProcState::Exited { code } if code != 0) {
        return Err(format!("a VMM given a bad description is {state:?}, expected an error exit"));
    }
    let got = p.stop(id).map_err(|e| format!("proc.stop: {e}"))?;
    if got != Ok(state) {
        return Err(format!("stop of the ended instance: {got:?}"));
    }
    // Stale now.
    let got = p.stop(id).map_err(|e| format!("proc.stop: {e}"))?;
    if got != Err(ProcError::NoSuchInstance { instance: id }) {
        return Err(format!("a second stop of instance {id}: {got:?}"));
    }
    let u = p.usage().map_err(|e| format!("proc.usage: {e}"))?;
    if u.instances != 0 || u.budget_used_kib != 0 {
        return Err(format!("after the stop: {u:?}"));
    }
    Ok(())
}

/// `ktest-zone-other` holds zone-server's and init's endpoints but is
/// neither a vmadm client nor allowed to start anything or stop zone-server:
/// asked through its `status.echo`, it tries all three and answers 0 when
/// each refused it.
fn other_clients_reach_neither_vmadm_nor_proc(env: &mut Env) -> Result<(), String> {
    let other = env.other.ok_or("zone.toml grants no zone-other endpoint")?;
    let code = status::Client::new(client(other)).echo(1).map_err(|e| format!("zone-other: {e}"))?;
    match code {
        0 => Ok(()),
        1 => Err("vmadm answered a process that is not one of its clients".into()),
        2 => Err("init let a process that may spawn nothing start a VMM".into()),
        4 => Err("zone-server stopped on the lifecycle.stop of a process the manifest does not let stop it".into()),
        6 => Err("init gave a process that started no VMM a VMM's control notification".into()),
        7 => Err("init staged start data for a process that may spawn nothing".into()),
        n => Err(format!("zone-other answered {n}")),
    }
}

/// `zone-other`: serves `status`; `echo(1)` runs the two attempts.
fn other_main(info: StartInfo) -> u64 {
    struct Other {
        zone: Option<CapSlot>,
        proc: Option<CapSlot>,
        service: alcove_rt::Service,
    }
    impl status::Server for Other {
        fn status(&mut self) -> libipc::interfaces::ServerStatus {
            self.service.status()
        }
        fn echo(&mut self, value: u64) -> u64 {
            if value != 1 {
                return value;
            }
            let (Some(zone), Some(procs)) = (self.zone, self.proc) else { return 3 };
            let v = vmadm::Client::new(client(zone)).run(vec!["list".into()], String::new());
            if !matches!(v, Err(IpcError::WrongInterface)) {
                println!("zone-other: vmadm answered: {v:?}");
                return 1;
            }
            let p = proc::Client::new(client(procs)).start("vmm-server".into(), b"{}".to_vec(), 64);
            if p != Ok(Err(ProcError::NotPermitted { template: "vmm-server".into() })) {
                println!("zone-other: proc.start answered: {p:?}");
                return 2;
            }
            // Nor stage start data for one.
            let a = proc::Client::new(client(procs)).append_start_data(0, b"{}".to_vec());
            if !matches!(&a, Ok(Err(ProcError::StartData { why })) if why.contains("spawns")) {
                println!("zone-other: proc.append_start_data answered: {a:?}");
                return 7;
            }
            // Nor press any VM's power button: init gives a VMM's control
            // notification to its starter only.
            for n in 0..=32 {
                let t = libipc::kernel::CapTransport::new(Cap::from_slot(procs), &[196]);
                let got = proc::Client::new(&t).control(n);
                if got != Ok(Err(ProcError::NoSuchInstance { instance: n })) || t.received() != 0 {
                    println!("zone-other: proc.control({n}) answered {got:?} with {} capabilities", t.received());
                    let _ = sys::cap_delete(196);
                    return 6;
                }
            }
            // It may not stop zone-server either (zone.toml names only
            // ktest-zone in lifecycle-stop): the same zone-server answers
            // after the attempt, its request count going on.
            let st = status::Client::new(client(zone));
            let Ok(before) = st.status() else { return 3 };
            let stop = libipc::interfaces::lifecycle::Client::new(client(zone)).stop(9);
            if !matches!(&stop, Ok(Err(why)) if why.contains("refused")) {
                println!("zone-other: lifecycle.stop answered {stop:?}, not a refusal");
                return 5;
            }
            match st.status() {
                Ok(after) if after.requests_served > before.requests_served && after.uptime_ns > before.uptime_ns => {}
                after => {
                    println!("zone-other: lifecycle.stop answered {stop:?}; zone-server then: {after:?} (before: {before:?})");
                    return 4;
                }
            }
            0
        }
    }
    libipc::impl_dispatch!(Other: libipc::interfaces::status);
    let Some(slot) = info.serves("zone-other") else { return 1 };
    let server = Other {
        zone: info.calls("zone-server"),
        proc: info.calls("proc"),
        service: alcove_rt::Service::new("zone-other", 1),
    };
    alcove_rt::serve_forever(slot, server)
}

/// The test image: `IMAGE_DATA` bytes of data, then zeros to `IMAGE_FILE`
/// bytes (the file), on a disk of 2 MiB (`image_size`).
const IMAGE_UUID: &str = "0b7b3b7e-8d6c-4c8e-9d3a-2f1e5a6b7c8d";
const IMAGE_FILE: usize = 1536 * 1024;
const IMAGE_DATA: usize = 1024 * 1024;
/// The volume the test puts the image file in (the `-f` of install).
const UPLOAD: &str = "zones/upload";

fn image_byte(i: usize) -> u8 {
    if i < IMAGE_DATA { (i.wrapping_mul(7919) % 251) as u8 ^ (i >> 12) as u8 | 1 } else { 0 }
}

/// Writes the image file into a new volume `UPLOAD` through a block ring
/// of this process's own grant (as a client of the pool would upload it).
fn upload_image_file(env: &Env) -> Result<(), String> {
    use abi::{PAGE_SIZE, Rights};
    use alcove_rt::SharedMemory;
    use alcove_rt::start::SLOT_SELF;
    use libipc::blkring::{RingClient, StorageDoorbell};
    use libipc::interfaces::storage;
    use libipc::kernel::CapTransport;
    let (grant, frame, token) = (190, 191, 192);
    let c = pool::Client::new(client(env.storaged));
    c.create(UPLOAD.into(), IMAGE_FILE as u64, 0).map_err(|e| format!("pool.create: {e}"))?.map_err(|e| format!("pool.create: {e}"))?;
    let t = CapTransport::new(Cap::from_slot(env.storaged), &[grant]);
    let g = pool::Client::new(&t).grant(vec![UPLOAD.into()]).map_err(|e| format!("grant: {e}"))?.map_err(|e| format!("grant: {e}"))?;
    sys::cap_copy(SLOT_SELF, token, Rights::NONE, 0).map_err(|e| format!("cap_copy: {e}"))?;
    let t = CapTransport::new(Cap::from_slot(grant), &[frame]).sending(&[token]);
    let opened = storage::Client::new(&t).open(0);
    let _ = sys::cap_delete(token);
    let opened = opened.map_err(|e| format!("open: {e}"))?.map_err(|e| format!("open: {e}"))?;
    let pages = u64::from(opened.ring_pages);
    let region = SharedMemory::map_frame(frame, 0x2800_0000, pages).map_err(|e| format!("map: {e}"))?;
    let _ = PAGE_SIZE;
    let bell = StorageDoorbell::new(client(grant), opened.handle);
    let mut ring = RingClient::new(region, bell).map_err(|e| format!("ring: {e}"))?;
    let mut piece = vec![0u8; 64 * 1024];
    let mut written = Ok(());
    for at in (0..IMAGE_DATA).step_by(piece.len()) {
        for (i, b) in piece.iter_mut().enumerate() {
            *b = image_byte(at + i);
        }
        written = ring.write((at / 512) as u64, &piece).map_err(|e| format!("write at {at}: {e}"));
        if written.is_err() {
            break;
        }
    }
    let written = written.and_then(|()| ring.flush().map_err(|e| format!("flush: {e}")));
    let (region, bell) = ring.into_parts();
    let _ = bell.client().close(opened.handle);
    drop(region);
    let _ = sys::cap_delete(frame);
    let _ = sys::cap_delete(grant);
    c.revoke(g.badge).map_err(|e| format!("revoke: {e}"))?.map_err(|e| format!("revoke: {e}"))?;
    written
}

/// A second image from the same file, with a 1 GiB volume.
const BIG_IMAGE_UUID: &str = "5c2e0a51-3f0e-4b7e-8a51-6d0c9e1f2a3b";

/// `vmadm create` of `payload`, its sending time printed (`zone: vmadm
/// create of ALIAS sent at T ns since boot`) for the benchmark, which pairs
/// it with the VMM's `vm ALIAS: first guest entry at T ns since boot`.
fn timed_create(env: &Env, payload: &str, alias: &str) -> Result<String, String> {
    let sent = sys::clock_ns().map_err(|e| format!("clock: {e}"))?;
    let uuid = created(&env.ok(&["create"], payload)?)?;
    println!("zone: vmadm create of {alias} sent at {sent} ns since boot");
    Ok(uuid)
}

fn image_manifest() -> String {
    use sha1::{Digest, Sha1};
    let mut h = Sha1::new();
    let mut piece = vec![0u8; 64 * 1024];
    for at in (0..IMAGE_FILE).step_by(piece.len()) {
        for (i, b) in piece.iter_mut().enumerate() {
            *b = image_byte(at + i);
        }
        h.update(&piece);
    }
    let sha1: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    format!(
        r#"{{"v": 2, "uuid": "{IMAGE_UUID}", "owner": "930896af-bf8c-48d4-885c-6573a94b1853", "name": "zone-test",
  "version": "1.0", "type": "zvol", "os": "linux", "state": "active", "disabled": false, "public": true,
  "image_size": 2, "files": [{{"sha1": "{sha1}", "size": {IMAGE_FILE}, "compression": "none"}}]}}"#
    )
}

/// `imgadm install` takes the file from a volume on the pool (read through
/// a ring, its size and SHA-1 checked) as `zones/<uuid>@final`; two VMs
/// created from it boot on clones of that snapshot, so the pool's free
/// space drops by far less than one copy of the image; the image cannot
/// be deleted while they exist, and everything is given back after.
fn two_vms_from_an_installed_image_share_its_blocks(env: &mut Env) -> Result<(), String> {
    let init_before = env.init_used_kib()?;
    let before = env.datasets()?;
    upload_image_file(env)?;
    let manifest = image_manifest();
    // A manifest whose size (so SHA-1) is not the file's is refused.
    let bad = manifest.replace("\"size\": 1572864", "\"size\": 1572352");
    let out = env.imgadm(&["install", "-m", "-", "-f", UPLOAD], &bad)?;
    if out.code != 1 || !out.stderr.contains("SHA-1") {
        return Err(format!("install of a file whose SHA-1 is not the manifest's: {out:?}"));
    }
    let out = env.imgadm(&["install", "-m", "-", "-f", UPLOAD], &manifest)?;
    if out.code != 0 {
        return Err(format!("imgadm install: {out:?}"));
    }
    println!("zone: {}", out.stdout.trim());
    let list = env.imgadm(&["list", "-H", "-o", "uuid,name,version"], "")?.stdout;
    if list.split_whitespace().collect::<Vec<_>>() != [IMAGE_UUID, "zone-test", "1.0"] {
        return Err(format!("imgadm list: {list:?}"));
    }
    let free_before = env.pool_free()?;
    // Metadata enough that `vmadm lookup -j` of the two is longer than
    // one reply.
    let blob = "m".repeat(1500);
    let payload = |alias: &str| {
        format!(
            r#"{{"brand": "bhyve", "alias": "{alias}", "ram": 64, "kernel": "/zone-guest-halt",
  "customer_metadata": {{"blob": "{blob}"}}, "disks": [{{"boot": true, "image_uuid": "{IMAGE_UUID}"}}]}}"#
        )
    };
    let a = timed_create(env, &payload("img-a"), "img-a")?;
    let b = timed_create(env, &payload("img-b"), "img-b")?;
    let c = pool::Client::new(client(env.storaged));
    for vm in [&a, &b] {
        let disk = format!("zones/{vm}-disk0");
        let info = c.get(disk.clone()).map_err(|e| format!("pool.get: {e}"))?.map_err(|e| format!("pool.get {disk}: {e}"))?;
        if info.origin.as_deref() != Some(&*format!("zones/{IMAGE_UUID}@final")) || info.volsize != 2 << 20 {
            return Err(format!("{disk}: origin {:?}, volsize {}", info.origin, info.volsize));
        }
        if env.state(vm)? != "running" {
            return Err(format!("VM {vm} from the image is {:?}", env.state(vm)?));
        }
    }
    let grew = free_before.saturating_sub(env.pool_free()?);
    println!("zone: two VMs from a {IMAGE_DATA}-byte image took {grew} bytes of the pool");
    if grew >= IMAGE_DATA as u64 {
        return Err(format!("two clones took {grew} bytes of the pool: the image's {IMAGE_DATA} bytes were copied"));
    }
    // ram is taken at the next start: a reboot starts a VMM with it.
    let out = env.vmadm(&["update", &a, "ram=96"], "")?;
    if out.code != 0 {
        return Err(format!("vmadm update ram of a running VM: {out:?}"));
    }
    env.ok(&["reboot", &a], "")?;
    let line = env.ok(&["list", "-p", "-o", "ram,state", &format!("uuid={a}")], "")?.stdout;
    if line.trim() != "96:running" {
        return Err(format!("after update ram=96 and reboot, vmadm list says {line:?}"));
    }
    // An output longer than one reply, read in pieces.
    let args: Vec<String> = ["lookup", "-j"].iter().map(|a| a.to_string()).collect();
    let c2 = vmadm::Client::new(client(env.zone));
    let whole = libipc::interfaces::vmadm_run_whole(&c2, "vmadm", args.clone(), String::new(), || {})
        .map_err(|e| format!("vmadm.start/read: {e}"))?;
    let short = c2.run(args, String::new()).map_err(|e| format!("vmadm.run: {e}"))?;
    let n = whole.stdout.matches("\"uuid\": \"").count();
    let fits = whole.stdout.len() + whole.stderr.len() <= libipc::interfaces::VMADM_REPLY_MAX as usize;
    if whole.code != 0 || n < 2 || fits || !whole.stdout.contains(&blob) || !short.stderr.contains("vmadm.read") {
        return Err(format!("vmadm lookup -j: {} bytes, {n} VMs, code {}; run said {short:?}", whole.stdout.len(), whole.code));
    }
    println!("zone: vmadm lookup -j: {} bytes read with vmadm.start/read", whole.stdout.len());
    let out = env.imgadm(&["delete", IMAGE_UUID], "")?;
    if out.code != 1 || !out.stderr.contains("ImageHasDependentClones") {
        return Err(format!("imgadm delete of an image in use: {out:?}"));
    }
    env.ok(&["delete", &a], "")?;
    env.delete_leaving_nothing(&b, init_before)?;
    let out = env.imgadm(&["delete", IMAGE_UUID], "")?;
    if out.code != 0 {
        return Err(format!("imgadm delete once unused: {out:?}"));
    }
    // The same file as an image of 1 GiB (`image_size` 1024): a VM from it
    // is created as fast as from the 2 MiB one (a clone is one record
    // whatever the volume's size; `cargo xtask bench --case
    // bench/vmadm-create` reads the times).
    let big = image_manifest().replace(IMAGE_UUID, BIG_IMAGE_UUID).replace("\"image_size\": 2,", "\"image_size\": 1024,");
    let out = env.imgadm(&["install", "-m", "-", "-f", UPLOAD], &big)?;
    if out.code != 0 {
        return Err(format!("imgadm install of the 1 GiB image: {out:?}"));
    }
    let payload = format!(
        r#"{{"brand": "bhyve", "alias": "img-big", "ram": 64, "kernel": "/zone-guest-halt",
  "disks": [{{"boot": true, "image_uuid": "{BIG_IMAGE_UUID}"}}]}}"#
    );
    let d = timed_create(env, &payload, "img-big")?;
    let disk = format!("zones/{d}-disk0");
    let info = c.get(disk.clone()).map_err(|e| format!("pool.get: {e}"))?.map_err(|e| format!("pool.get {disk}: {e}"))?;
    if info.volsize != 1 << 30 || env.state(&d)? != "running" {
        return Err(format!("{disk}: volsize {}, VM {:?}", info.volsize, env.state(&d)?));
    }
    // Its guest gets 2 s to start before the delete, so the VMM's first
    // entry is in the log for the benchmark (nothing here depends on it).
    let mut steps = 0;
    wait_for(
        || {
            steps += 1;
            Ok(steps > 10)
        },
        200_000_000,
    )?;
    env.delete_leaving_nothing(&d, init_before)?;
    let out = env.imgadm(&["delete", BIG_IMAGE_UUID], "")?;
    if out.code != 0 {
        return Err(format!("imgadm delete of the 1 GiB image: {out:?}"));
    }
    c.destroy(UPLOAD.into(), true).map_err(|e| format!("pool.destroy: {e}"))?.map_err(|e| format!("pool.destroy: {e}"))?;
    let after = env.datasets()?;
    if after != before {
        return Err(format!("the pool held {before:?} before and {after:?} after"));
    }
    Ok(())
}

/// netd stopped while a VM with a NIC runs (`lifecycle.stop` through this
/// process's netd endpoint, the test's way to make it exit): init restarts
/// it and tells zone-server (`lifecycle.restarted`), which makes the VM's
/// VNIC grant again under its badge and tells the VMM, which attaches its
/// NIC again through the capability it was started with (the harness
/// checks each of those lines). The new netd lists that VNIC, attached,
/// once; a VM deleted before the restart gets nothing back; `vmadm
/// delete` afterwards gives the VNIC back.
fn a_restarted_netd_gets_a_running_vm_s_vnic_again(env: &mut Env) -> Result<(), String> {
    use libipc::interfaces::{lifecycle, status};
    let gone = created(&env.ok(&["create"], &nic_payload("zone-netd-gone", NET_MAC_GONE, "10.9.0.15"))?)?;
    env.ok(&["delete", &gone], "")?;
    let keep = created(&env.ok(&["create"], &nic_payload("zone-netd-keep", NET_MAC_KEEP, "10.9.0.14"))?)?;
    let shown = |env: &Env, mac: &str| -> Result<Vec<bool>, String> {
        let all = netd_admin(env)?.show(0).map_err(|e| format!("vnic.show: {e}"))?.map_err(|e| format!("vnic.show: {e}"))?;
        Ok(all.iter().filter(|v| format!("{}", MacText(v.mac)) == mac).map(|v| v.attached).collect())
    };
    if !wait_for(|| Ok(shown(env, NET_MAC_KEEP)? == [true]), 200_000_000)? {
        return Err(format!("VM {keep}'s VMM never attached its VNIC {NET_MAC_KEEP}"));
    }
    let netd = env.netd.ok_or("zone.toml grants ktest-zone no netd endpoint")?;
    let stopped_at = sys::clock_ns().map_err(|e| format!("clock: {e}"))?;
    lifecycle::Client::new(client(netd)).stop(1).map_err(|e| format!("lifecycle.stop of netd: {e}"))??;
    println!("zone: netd stopped while VM {keep} runs");
    // The new netd: up for less time than since the stop, and listing the
    // VM's VNIC attached again.
    let mut last = Vec::new();
    let back = wait_for(
        || {
            let now = sys::clock_ns().map_err(|e| format!("clock: {e}"))?;
            let s = status::Client::new(client(netd)).status().map_err(|e| format!("netd status: {e}"))?;
            if s.uptime_ns > now.saturating_sub(stopped_at) {
                return Ok(false); // still the earlier netd
            }
            last = shown(env, NET_MAC_KEEP)?;
            Ok(last == [true])
        },
        200_000_000,
    )?;
    if !back {
        return Err(format!("the restarted netd lists VM {keep}'s VNIC {NET_MAC_KEEP} as {last:?} (attached: want [true])"));
    }
    println!("zone: the restarted netd lists VM {keep}'s VNIC, attached again");
    // Not granted twice (its MAC is held), the deleted VM's not back, nor
    // the earlier cases' (their VMs are deleted).
    if granted_mac_is_free(env, NET_MAC_KEEP)? {
        return Err(format!("the restarted netd granted {NET_MAC_KEEP} while VM {keep} holds it"));
    }
    for mac in [NET_MAC_GONE, NET_MAC_A, NET_MAC_B, NET_MAC_C, OWN_MAC] {
        if !shown(env, mac)?.is_empty() {
            return Err(format!("the restarted netd has VNIC {mac} of a VM deleted before it"));
        }
    }
    if env.state(&keep)? != "running" {
        return Err(format!("VM {keep} is not running after netd's restart"));
    }
    env.ok(&["delete", &keep], "")?;
    let left: Vec<String> = env.datasets()?.into_iter().filter(|d| d.contains(&keep)).collect();
    if !left.is_empty() {
        return Err(format!("after delete: pool {left:?}"));
    }
    if !shown(env, NET_MAC_KEEP)?.is_empty() || !granted_mac_is_free(env, NET_MAC_KEEP)? {
        return Err(format!("after delete, the restarted netd still holds {NET_MAC_KEEP}"));
    }
    Ok(())
}
