//! The operations behind the verbs, with structured results: what the
//! HTTP API answers from (an error kind it maps to a status, the problems
//! as data) and what [`crate::verbs`] prints as vmadm does. Each takes the
//! registry and the machine ([`Host`]); on failure the registry is as it
//! was, except a create whose provisioning failed (that VM stays, `failed`,
//! as on SmartOS).

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use serde_json::{Map, Value};

use crate::registry::{Instance, Registry, macs_of};
use crate::state::{self, Event, State};
use crate::update::{self, Applied};
use crate::uuid::Uuid;
use crate::validate::{self, Problems};
use crate::verbs::Host;
use crate::vmm;

/// Why an operation did not happen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpError {
    /// No VM has that uuid.
    NotFound,
    /// The payload is not JSON, too large or too deep (the message).
    Payload(String),
    /// The payload's properties were refused.
    Invalid(Problems),
    /// The VM's state or another VM forbids it (the reason).
    Conflict(String),
    /// Nothing to do: the VM is already running (start) or stopped (stop).
    /// vmadm prints `VM <uuid> <this>` and exits 0.
    Noop(String),
    /// The machine failed to do it (the reason); for a create, the VM
    /// exists and is `failed`.
    Failed { uuid: Option<Uuid>, why: String },
}

impl OpError {
    /// The sentence after `Unable to <verb> VM <uuid>: `.
    pub fn reason(&self) -> String {
        match self {
            OpError::NotFound => "VM not found".into(),
            OpError::Payload(m) => m.clone(),
            OpError::Invalid(p) => summary(p),
            OpError::Conflict(m) => m.clone(),
            OpError::Noop(m) => m.clone(),
            OpError::Failed { why, .. } => why.clone(),
        }
    }
}

/// One line naming every refused property by list.
pub fn summary(p: &Problems) -> String {
    let mut parts = Vec::new();
    if !p.bad_values.is_empty() {
        parts.push(format!("Invalid value(s) for: {}", p.bad_values.join(",")));
    }
    if !p.missing_properties.is_empty() {
        parts.push(format!("Missing required properties: {}", p.missing_properties.join(",")));
    }
    if !p.bad_properties.is_empty() {
        parts.push(format!("Invalid properties: {}", p.bad_properties.join(",")));
    }
    parts.join("; ")
}

/// A created VM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Created {
    pub uuid: Uuid,
    /// Properties ignored (unknown, or not for a create payload), each
    /// `WARNING: ...`.
    pub warnings: Vec<String>,
}

fn save(reg: &Registry, host: &mut dyn Host, uuid: &Uuid) -> Result<(), String> {
    match reg.get(uuid) {
        Some(vm) => host.persist(uuid, Some(&Value::Object(vm.to_json(&reg.server_uuid)).to_string())),
        None => host.persist(uuid, None),
    }
}

/// `vmadm create`: validates the payload, fills in vmadm's defaults,
/// records the VM (`provisioning`), has the machine provision it, and
/// starts it when `autoboot` (the default) is set.
pub fn create(text: &str, reg: &mut Registry, host: &mut dyn Host) -> Result<Created, OpError> {
    let m = validate::parse(text).map_err(OpError::Payload)?;
    if reg.len() >= crate::properties::MAX_INSTANCES {
        return Err(OpError::Conflict(format!(
            "the machine holds {} instances, at most {}: delete one first",
            reg.len(),
            crate::properties::MAX_INSTANCES
        )));
    }
    let checked = validate::check_create(&m);
    if !checked.problems.only_bad_properties() {
        return Err(OpError::Invalid(checked.problems));
    }
    let warnings = checked
        .problems
        .bad_properties
        .iter()
        .map(|name| format!("WARNING: ignoring property \"{name}\": not a bhyve create property"))
        .collect();
    let mut props = checked.payload;
    create_images(&mut props, host)?;
    validate::create_defaults(&mut props, &mut |b| host.random(b));
    // Again with what the images added (`check_create` had the payload
    // alone): a VM that could never start is not made.
    let mut problems = Problems::default();
    validate::check_vm_json(&props, &mut problems);
    if !problems.is_empty() {
        return Err(OpError::Invalid(problems));
    }
    let now = host.now();
    let vm = Instance::new(props, &now).map_err(OpError::Payload)?;
    let uuid = vm.uuid;
    reg.add(vm).map_err(|e| OpError::Conflict(e.to_string()))?;
    let vm = reg.get(&uuid).expect("just added");
    let config = vmm::vm_config_json(&vm.props, &reg.server_uuid);
    let boot = vm.autoboot();
    let result =
        host.provision(vm, &config).and_then(|()| if boot { host.start(vm, &config).map(Some) } else { Ok(None) });
    let now = host.now();
    let vm = reg.get_mut(&uuid).expect("just added");
    match result {
        Ok(pid) => {
            let _ = vm.apply(Event::Provisioned { boot }, &now);
            if let Some(pid) = pid {
                vm.props.insert("pid".into(), Value::from(pid));
            }
            if let Err(e) = save(reg, host, &uuid) {
                // A VM whose record is not on the pool would be gone at the
                // next restart: undone now, saying why (the pool's user
                // properties full, storaged gone).
                let vm = reg.get(&uuid).expect("just added").clone();
                if boot {
                    let _ = host.halt(&vm);
                }
                let _ = host.destroy(&vm);
                let _ = reg.remove(&uuid);
                return Err(OpError::Failed { uuid: None, why: format!("its record could not be saved on the pool ({e}): nothing was kept") });
            }
            Ok(Created { uuid, warnings })
        }
        Err(why) => {
            let _ = vm.apply(Event::ProvisionFailed, &now);
            let _ = save(reg, host, &uuid);
            Err(OpError::Failed { uuid: Some(uuid), why })
        }
    }
}

/// Disks cloned from an image: the image must be installed; the disk
/// gets the image's size as `image_size` (unless given) and `size` (as
/// vmadm shows every disk's size). Returns the boot disk's image and the
/// firmware it requires, if it names one.
fn disk_images(disks: Option<&mut Value>, name: &str, host: &mut dyn Host, problems: &mut Problems) -> Option<(Uuid, String)> {
    let mut boot_needs = None;
    if let Some(Value::Array(disks)) = disks {
        for (i, d) in disks.iter_mut().enumerate() {
            let Some(d) = d.as_object_mut() else { continue };
            let Some(image) = d.get("image_uuid").and_then(Value::as_str).and_then(Uuid::parse) else { continue };
            match host.image(&image) {
                Ok(facts) => {
                    let size = d.get("image_size").and_then(Value::as_u64).unwrap_or(facts.size_mib);
                    d.insert("image_size".into(), Value::from(size));
                    d.insert("size".into(), Value::from(size));
                    if d.get("boot") == Some(&Value::Bool(true))
                        && let Some(rom) = facts.bootrom
                    {
                        boot_needs = Some((image, rom));
                    }
                }
                Err(why) => problems.bad_value(&format!("{name}.{i}.image_uuid"), format!("image {image}: {why}")),
            }
        }
    }
    boot_needs
}

/// [`disk_images`] for `update`'s `add_disks`.
fn images(disks: Option<&mut Value>, name: &str, host: &mut dyn Host) -> Result<(), OpError> {
    let mut problems = Problems::default();
    disk_images(disks, name, host, &mut problems);
    if problems.is_empty() { Ok(()) } else { Err(OpError::Invalid(problems)) }
}

/// A create's disks ([`disk_images`]); the boot disk's image that names
/// its firmware (`requirements.bootrom`) gives the VM that `bootrom`
/// unless the payload names one (a VM booting a kernel directly has none),
/// and a payload naming the other is refused.
fn create_images(props: &mut Map<String, Value>, host: &mut dyn Host) -> Result<(), OpError> {
    let mut problems = Problems::default();
    let boot_needs = disk_images(props.get_mut("disks"), "disks", host, &mut problems);
    if let Some((image, rom)) = boot_needs
        && !props.contains_key("kernel")
    {
        match props.get("bootrom").and_then(Value::as_str) {
            None => {
                props.insert("bootrom".into(), Value::String(rom));
            }
            Some(given) if given != rom => problems.bad_value(
                "bootrom",
                format!("\"{given}\": the boot disk's image {image} requires bootrom \"{rom}\" (requirements.bootrom)"),
            ),
            Some(_) => {}
        }
    }
    if problems.is_empty() { Ok(()) } else { Err(OpError::Invalid(problems)) }
}

fn found<'a>(reg: &'a Registry, uuid: &Uuid) -> Result<&'a Instance, OpError> {
    reg.get(uuid).ok_or(OpError::NotFound)
}

fn allowed(vm: &Instance, event: Event) -> Result<(), OpError> {
    state::next(vm.state, event).map(|_| ()).map_err(|r| OpError::Conflict(r.0.into()))
}

/// `vmadm start`.
pub fn start(reg: &mut Registry, host: &mut dyn Host, uuid: &Uuid) -> Result<(), OpError> {
    let vm = found(reg, uuid)?;
    if vm.state == State::Running {
        return Err(OpError::Noop("is already running".into()));
    }
    allowed(vm, Event::Start)?;
    let config = vmm::vm_config_json(&vm.props, &reg.server_uuid);
    let pid = host.start(vm, &config).map_err(|why| OpError::Failed { uuid: None, why })?;
    let now = host.now();
    let vm = reg.get_mut(uuid).expect("found");
    let _ = vm.apply(Event::Start, &now);
    vm.props.insert("pid".into(), Value::from(pid));
    let _ = save(reg, host, uuid);
    Ok(())
}

/// What a stop or reboot waits for, kept in the VM's record while it is
/// `stopping` (SmartOS's `transition_to` and `transition_expire`): the
/// state it goes to once the guest has powered off, and when (ms since
/// 1970) it is halted if the guest has not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transition {
    /// `true`: a reboot (`transition_to` `running`: started again once
    /// stopped); `false`: a stop (`stopped`).
    pub reboot: bool,
    pub expire_ms: u64,
}

impl Transition {
    /// The VM's transition, if it is stopping with one recorded.
    pub fn of(vm: &Instance) -> Option<Self> {
        if vm.state != State::Stopping {
            return None;
        }
        let reboot = match vm.props.get("transition_to").and_then(Value::as_str)? {
            "stopped" => false,
            "running" => true,
            _ => return None,
        };
        let expire_ms = vm.props.get("transition_expire").and_then(Value::as_u64)?;
        Some(Self { reboot, expire_ms })
    }

    fn record(self, vm: &mut Instance) {
        let to = if self.reboot { "running" } else { "stopped" };
        vm.props.insert("transition_to".into(), Value::String(to.into()));
        vm.props.insert("transition_expire".into(), Value::from(self.expire_ms));
    }
}

/// How a stop or reboot that was asked for stands once it answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Begun {
    /// Done: the VM is stopped (or, for a reboot, runs again).
    Done,
    /// The power button is pressed and the VM `stopping`: [`settle`]
    /// ends it when the guest has powered off or at the deadline.
    Waiting,
}

/// How a VM's transition ended ([`settle`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Settled {
    /// The guest powered off (`forced`: it had not by the deadline and
    /// was halted) and the VM is stopped.
    Stopped { forced: bool },
    /// A reboot: stopped and started again.
    Rebooted { forced: bool },
    /// A reboot: stopped, but the new vmm-server did not start (why).
    RebootFailed(String),
    /// The halt at the deadline failed (why); the VM is recorded stopped
    /// all the same (zone-server no longer holds its vmm-server).
    HaltFailed(String),
}

/// When a transition begun now with `timeout_s` expires.
fn deadline(host: &mut dyn Host, timeout_s: u32) -> u64 {
    host.now_ms().saturating_add(u64::from(timeout_s).saturating_mul(1000))
}

/// Halts the VM now and records it `stopped`.
fn halt_now(reg: &mut Registry, host: &mut dyn Host, uuid: &Uuid) -> Result<(), OpError> {
    let vm = found(reg, uuid)?.clone();
    host.halt(&vm).map_err(|why| OpError::Failed { uuid: None, why })?;
    let now = host.now();
    let _ = reg.get_mut(uuid).expect("found").apply(Event::Halted, &now);
    let _ = save(reg, host, uuid);
    Ok(())
}

/// `vmadm stop [-F] [-t timeout]`, begun: with `-F` the VM is halted and
/// `stopped` now ([`Begun::Done`]); otherwise the guest's ACPI power
/// button is pressed and the VM is `stopping` with its deadline recorded
/// ([`Begun::Waiting`]); [`settle`] ends it. Nothing here waits for the
/// guest. A VM already stopping is vmadm's "already not 'running'"
/// (exit 0) without `-F`, and halted with it (which ends the earlier
/// stop too).
pub fn stop_begin(reg: &mut Registry, host: &mut dyn Host, uuid: &Uuid, force: bool, timeout_s: u32) -> Result<Begun, OpError> {
    let vm = found(reg, uuid)?;
    match vm.state {
        State::Stopped => return Err(OpError::Noop("is already not 'running' (currently: stopped)".into())),
        State::Stopping if !force => return Err(OpError::Noop("is already not 'running' (currently: stopping)".into())),
        _ => {}
    }
    allowed(vm, if force { Event::Halted } else { Event::StopRequested })?;
    if force {
        halt_now(reg, host, uuid)?;
        return Ok(Begun::Done);
    }
    let vm = vm.clone();
    if host.power_button(&vm).is_err() {
        // No button to press (the host says why in its log): halted now.
        halt_now(reg, host, uuid)?;
        return Ok(Begun::Done);
    }
    let expire_ms = deadline(host, timeout_s);
    let now = host.now();
    let vm = reg.get_mut(uuid).expect("found");
    let _ = vm.apply(Event::StopRequested, &now);
    Transition { reboot: false, expire_ms }.record(vm);
    let _ = save(reg, host, uuid);
    Ok(Begun::Waiting)
}

/// `vmadm stop` to its end, for callers that may wait (the tests): begun,
/// then settled until the guest is off or the deadline passed on `host`'s
/// clock.
pub fn stop(reg: &mut Registry, host: &mut dyn Host, uuid: &Uuid, force: bool, timeout_s: u32) -> Result<(), OpError> {
    if stop_begin(reg, host, uuid, force, timeout_s)? == Begun::Waiting {
        while settle(reg, host, uuid).is_none() && reg.get(uuid).and_then(Transition::of).is_some() {}
    }
    Ok(())
}

/// Starts a stopped VM's new vmm-server for a reboot.
fn restart(reg: &mut Registry, host: &mut dyn Host, uuid: &Uuid) -> Result<(), String> {
    let vm = reg.get(uuid).expect("found").clone();
    let config = vmm::vm_config_json(&vm.props, &reg.server_uuid);
    let started = host.start(&vm, &config);
    let now = host.now();
    let vm = reg.get_mut(uuid).expect("found");
    let result = match started {
        Ok(pid) => {
            let _ = vm.apply(Event::Restarted, &now);
            vm.props.insert("pid".into(), Value::from(pid));
            Ok(())
        }
        Err(e) => {
            let _ = vm.apply(Event::Exited, &now);
            Err(e)
        }
    };
    let _ = save(reg, host, uuid);
    result
}

/// `vmadm reboot [-F]`, begun: with `-F` the VM is halted and started
/// again now; otherwise the power button is pressed and the VM is
/// `stopping` (`transition_to` `running`) until [`settle`] starts it
/// again.
pub fn reboot_begin(reg: &mut Registry, host: &mut dyn Host, uuid: &Uuid, force: bool, timeout_s: u32) -> Result<Begun, OpError> {
    let vm = found(reg, uuid)?;
    allowed(vm, Event::RebootRequested)?;
    let vm = vm.clone();
    // Without a button to press (-F, or none), halted and started now.
    let halt = force || host.power_button(&vm).is_err();
    let expire_ms = deadline(host, timeout_s);
    let now = host.now();
    let entry = reg.get_mut(uuid).expect("found");
    let _ = entry.apply(Event::RebootRequested, &now);
    Transition { reboot: true, expire_ms }.record(entry);
    if halt {
        if let Err(why) = host.halt(&vm) {
            let _ = reg.get_mut(uuid).expect("found").apply(Event::Exited, &now);
            let _ = save(reg, host, uuid);
            return Err(OpError::Failed { uuid: None, why: format!("could not halt it: {why}") });
        }
        return match restart(reg, host, uuid) {
            Ok(()) => Ok(Begun::Done),
            Err(e) => Err(OpError::Failed { uuid: None, why: format!("stopped, but did not start again: {e}") }),
        };
    }
    let _ = save(reg, host, uuid);
    Ok(Begun::Waiting)
}

/// `vmadm reboot` to its end, for callers that may wait (see [`stop`]).
pub fn reboot(reg: &mut Registry, host: &mut dyn Host, uuid: &Uuid, force: bool, timeout_s: u32) -> Result<(), OpError> {
    if reboot_begin(reg, host, uuid, force, timeout_s)? == Begun::Waiting {
        loop {
            match settle(reg, host, uuid) {
                Some(Settled::RebootFailed(e)) => {
                    return Err(OpError::Failed { uuid: None, why: format!("stopped, but did not start again: {e}") });
                }
                Some(_) => return Ok(()),
                None if reg.get(uuid).and_then(Transition::of).is_none() => return Ok(()),
                None => {}
            }
        }
    }
    Ok(())
}

/// Ends VM `uuid`'s transition if its time has come: its guest powered
/// off (the vmm-server ended), or its deadline passed (then it is
/// halted). A reboot's VM is started again. `None`: no transition, or
/// still waiting. Bounded: one look at the vmm-server, at most one halt
/// and one start.
pub fn settle(reg: &mut Registry, host: &mut dyn Host, uuid: &Uuid) -> Option<Settled> {
    let vm = reg.get(uuid)?.clone();
    let t = Transition::of(&vm)?;
    let ended = !host.vmm_running(&vm);
    if !ended && host.now_ms() < t.expire_ms {
        return None;
    }
    let forced = !ended;
    // An ended vmm-server is reaped and its grants given back the same way.
    let halted = host.halt(&vm);
    if let (true, Ok(())) = (t.reboot, &halted) {
        return Some(match restart(reg, host, uuid) {
            Ok(()) => Settled::Rebooted { forced },
            Err(e) => Settled::RebootFailed(e),
        });
    }
    let now = host.now();
    let _ = reg.get_mut(uuid).expect("found").apply(if forced && !t.reboot { Event::Halted } else { Event::Exited }, &now);
    let _ = save(reg, host, uuid);
    Some(match halted {
        Err(why) => Settled::HaltFailed(why),
        Ok(()) => Settled::Stopped { forced },
    })
}

/// The VMs with a transition, and the soonest deadline among them (when
/// zone-server's timer next has to look, at the latest).
pub fn transitions(reg: &Registry) -> (Vec<Uuid>, Option<u64>) {
    let mut vms = Vec::new();
    let mut soonest: Option<u64> = None;
    for vm in reg.iter() {
        if let Some(t) = Transition::of(vm) {
            vms.push(vm.uuid);
            soonest = Some(soonest.map_or(t.expire_ms, |s| s.min(t.expire_ms)));
        }
    }
    (vms, soonest)
}

/// `vmadm update`: the payload checked for the VM's brand, applied, the
/// MACs checked against the other VMs, the live properties handed to a
/// running VM. Returns what changed by when it takes effect.
pub fn update(
    reg: &mut Registry,
    host: &mut dyn Host,
    uuid: &Uuid,
    m: &Map<String, Value>,
) -> Result<Applied, OpError> {
    let vm = found(reg, uuid)?;
    if matches!(vm.state, State::Provisioning | State::Failed) {
        allowed(vm, Event::Start)?;
    }
    let checked = validate::check_update(vm.brand(), m);
    if !checked.problems.is_empty() {
        return Err(OpError::Invalid(checked.problems));
    }
    let mut payload = checked.payload;
    images(payload.get_mut("add_disks"), "add_disks", host)?;
    let mut props = vm.props.clone();
    let applied = update::apply(&mut props, &payload, &mut |b| host.random(b)).map_err(OpError::Invalid)?;
    // Metadata set piece by piece must still fit what its VMM starts with.
    let mut problems = Problems::default();
    validate::check_vm_json(&props, &mut problems);
    if !problems.is_empty() {
        return Err(OpError::Invalid(problems));
    }
    reg.check_macs(uuid, &macs_of(&props)).map_err(|e| OpError::Conflict(e.to_string()))?;
    let now = host.now();
    let vm = reg.get_mut(uuid).expect("found");
    let before = core::mem::replace(&mut vm.props, props);
    vm.props.insert("last_modified".into(), Value::String(now));
    let vm = vm.clone();
    // Saved first: a change the pool did not keep is not made.
    if let Err(e) = save(reg, host, uuid) {
        if let Some(vm) = reg.get_mut(uuid) {
            vm.props = before;
        }
        return Err(OpError::Failed { uuid: None, why: format!("its record could not be saved on the pool ({e}): nothing changed") });
    }
    let live = if vm.state == State::Running && !applied.live.is_empty() {
        host.update_live(&vm, &applied.live)
    } else {
        Ok(())
    };
    live.map_err(|e| OpError::Failed {
        uuid: None,
        why: format!("saved, but the running VM did not take {}: {e}", applied.live.join(",")),
    })?;
    Ok(applied)
}

/// A change the VM's guest made through its metadata service (`PUT` or
/// `DELETE`, which its VMM already answered and holds): `key` set to
/// `value` (removed for `None`) in `internal_metadata` (`internal`) or
/// `customer_metadata`, checked as `vmadm update`'s `set_X`/`remove_X`
/// (key and value lengths, the number of keys, the VM's description
/// for its VMM) and saved; the running VM is not told (its VMM made it).
pub fn guest_metadata(
    reg: &mut Registry,
    host: &mut dyn Host,
    uuid: &Uuid,
    internal: bool,
    key: &str,
    value: Option<&str>,
) -> Result<(), OpError> {
    let vm = found(reg, uuid)?;
    let map = if internal { "internal_metadata" } else { "customer_metadata" };
    let mut m = Map::new();
    match value {
        Some(v) => {
            let mut set = Map::new();
            set.insert(key.into(), Value::String(v.into()));
            m.insert(format!("set_{map}"), Value::Object(set));
        }
        None => {
            m.insert(format!("remove_{map}"), Value::Array(alloc::vec![Value::String(key.into())]));
        }
    }
    let checked = validate::check_update(vm.brand(), &m);
    if !checked.problems.is_empty() {
        return Err(OpError::Invalid(checked.problems));
    }
    let mut props = vm.props.clone();
    update::apply(&mut props, &checked.payload, &mut |b| host.random(b)).map_err(OpError::Invalid)?;
    let mut problems = Problems::default();
    validate::check_vm_json(&props, &mut problems);
    if !problems.is_empty() {
        return Err(OpError::Invalid(problems));
    }
    let now = host.now();
    let vm = reg.get_mut(uuid).expect("found");
    let before = core::mem::replace(&mut vm.props, props);
    vm.props.insert("last_modified".into(), Value::String(now));
    save(reg, host, uuid).map_err(|why| {
        if let Some(vm) = reg.get_mut(uuid) {
            vm.props = before;
        }
        OpError::Failed { uuid: None, why: format!("its record could not be saved on the pool ({why}): nothing changed") }
    })
}

/// `vmadm delete`: halts a running VM, returns its resources, forgets it.
pub fn delete(reg: &mut Registry, host: &mut dyn Host, uuid: &Uuid) -> Result<(), OpError> {
    let vm = found(reg, uuid)?.clone();
    if matches!(vm.state, State::Running | State::Stopping) {
        // Halted at once (a stop under way ends with it): delete never
        // waits for the guest.
        host.halt(&vm).map_err(|e| OpError::Failed { uuid: None, why: format!("could not halt it: {e}") })?;
    }
    host.destroy(&vm).map_err(|why| OpError::Failed { uuid: None, why })?;
    let _ = reg.remove(uuid);
    let _ = host.persist(uuid, None);
    Ok(())
}

/// Snapshots one VM keeps at most (each is an entry of its record).
pub const MAX_SNAPSHOTS: usize = 32;

/// The VM's `snapshots` (`{name, created_at}` each, oldest first).
fn snapshot_list(vm: &Instance) -> Vec<Value> {
    vm.props.get("snapshots").and_then(Value::as_array).cloned().unwrap_or_default()
}

fn snapshot_index(list: &[Value], name: &str) -> Option<usize> {
    list.iter().position(|s| s.get("name").and_then(Value::as_str) == Some(name))
}

/// Sets the VM's `snapshots` (none: the property goes) and saves the
/// record; `Err` with the list as it was put back when the save failed.
fn save_snapshots(reg: &mut Registry, host: &mut dyn Host, uuid: &Uuid, list: Vec<Value>) -> Result<(), String> {
    let vm = reg.get_mut(uuid).expect("found");
    let before = vm.props.remove("snapshots");
    if !list.is_empty() {
        vm.props.insert("snapshots".into(), Value::Array(list));
    }
    let r = save(reg, host, uuid);
    if r.is_err() {
        let vm = reg.get_mut(uuid).expect("found");
        vm.props.remove("snapshots");
        if let Some(b) = before {
            vm.props.insert("snapshots".into(), b);
        }
    }
    r
}

/// `vmadm create-snapshot`: every disk of a running or stopped VM
/// snapshotted at once (crash-consistent for a running guest), the
/// snapshot listed in the VM's `snapshots`.
pub fn create_snapshot(reg: &mut Registry, host: &mut dyn Host, uuid: &Uuid, name: &str) -> Result<(), OpError> {
    let vm = found(reg, uuid)?;
    if !matches!(vm.state, State::Running | State::Stopped) {
        return Err(OpError::Conflict(format!("VM is {}: only a running or stopped VM is snapshotted", vm.state)));
    }
    let mut list = snapshot_list(vm);
    if snapshot_index(&list, name).is_some() {
        return Err(OpError::Conflict(format!("snapshot \"{name}\" already exists")));
    }
    if list.len() >= MAX_SNAPSHOTS {
        return Err(OpError::Conflict(format!("VM has {MAX_SNAPSHOTS} snapshots already: delete one first")));
    }
    host.snapshot(vm, name).map_err(|why| OpError::Failed { uuid: None, why })?;
    let now = host.now();
    let mut entry = Map::new();
    entry.insert("name".into(), Value::String(name.into()));
    entry.insert("created_at".into(), Value::String(now));
    list.push(Value::Object(entry));
    if let Err(why) = save_snapshots(reg, host, uuid, list) {
        // Not listed, so not kept either.
        let vm = reg.get(uuid).expect("found");
        let _ = host.destroy_snapshot(vm, name);
        return Err(OpError::Failed { uuid: None, why: format!("the record was not saved: {why}") });
    }
    Ok(())
}

/// `vmadm delete-snapshot`.
pub fn delete_snapshot(reg: &mut Registry, host: &mut dyn Host, uuid: &Uuid, name: &str) -> Result<(), OpError> {
    let vm = found(reg, uuid)?;
    let mut list = snapshot_list(vm);
    let i = snapshot_index(&list, name).ok_or_else(|| OpError::Conflict(format!("snapshot \"{name}\" not found")))?;
    host.destroy_snapshot(vm, name).map_err(|why| OpError::Failed { uuid: None, why })?;
    list.remove(i);
    save_snapshots(reg, host, uuid, list).map_err(|why| OpError::Failed { uuid: None, why: format!("the record was not saved: {why}") })
}

/// `vmadm rollback-snapshot`: the disks back to the snapshot; the
/// snapshots taken after it are destroyed first (as `zfs rollback -r`)
/// and leave the list. A running VM is halted first (what it has not
/// written is rolled back anyway) and started again after, as SmartOS's.
pub fn rollback_snapshot(reg: &mut Registry, host: &mut dyn Host, uuid: &Uuid, name: &str) -> Result<(), OpError> {
    let vm = found(reg, uuid)?;
    let was_running = vm.state == State::Running;
    if !was_running && vm.state != State::Stopped {
        return Err(OpError::Conflict(format!("VM is {}: only a running or stopped VM is rolled back", vm.state)));
    }
    let mut list = snapshot_list(vm);
    let i = snapshot_index(&list, name).ok_or_else(|| OpError::Conflict(format!("snapshot \"{name}\" not found")))?;
    while list.len() > i + 1 {
        let newer = list.last().and_then(|s| s.get("name")).and_then(Value::as_str).unwrap_or_default().to_string();
        let vm = reg.get(uuid).expect("found");
        host.destroy_snapshot(vm, &newer).map_err(|why| OpError::Failed { uuid: None, why: format!("newer snapshot {newer}: {why}") })?;
        list.pop();
        save_snapshots(reg, host, uuid, list.clone())
            .map_err(|why| OpError::Failed { uuid: None, why: format!("the record was not saved: {why}") })?;
    }
    if was_running {
        halt_now(reg, host, uuid)?;
    }
    let vm = reg.get(uuid).expect("found");
    let rolled = host.rollback(vm, name).map_err(|why| OpError::Failed { uuid: None, why });
    if was_running {
        // Started again either way: a failed rollback left the disks as
        // they were.
        start(reg, host, uuid).map_err(|e| OpError::Failed { uuid: None, why: format!("halted for the rollback, but did not start again: {}", e.reason()) })?;
    }
    rolled
}

/// `vmadm console`: only a running (or stopping) VM has one.
pub fn console(reg: &Registry, host: &mut dyn Host, uuid: &Uuid) -> Result<(), OpError> {
    let vm = console_target(reg, uuid)?;
    host.console(vm).map_err(|why| OpError::Failed { uuid: None, why })
}

/// The VM `vmadm console` may attach to: one that exists and runs.
pub fn console_target<'a>(reg: &'a Registry, uuid: &Uuid) -> Result<&'a Instance, OpError> {
    let vm = found(reg, uuid)?;
    if vm.state != State::Running && vm.state != State::Stopping {
        return Err(OpError::Conflict("VM is not running".into()));
    }
    Ok(vm)
}

/// `vmadm info`: what a running VM is made of (Alcove's answer to the
/// types vmadm knows: `block`, `chardev`, `cpus`, `version`; the others,
/// qemu's, are empty).
pub fn info(reg: &Registry, uuid: &Uuid, types: &[String]) -> Result<Map<String, Value>, OpError> {
    let vm = found(reg, uuid)?;
    if vm.state != State::Running {
        return Err(OpError::Conflict("VM is not running".into()));
    }
    let want = |t: &str| types.is_empty() || types.iter().any(|x| x == t || x == "all");
    let mut m = Map::new();
    if want("block") {
        let disks = vm.props.get("disks").and_then(Value::as_array).cloned().unwrap_or_default();
        let block: Vec<Value> = disks
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let mut b = Map::new();
                b.insert("device".into(), Value::String(format!("virtio{i}")));
                for k in ["path", "model", "size", "boot", "media"] {
                    if let Some(v) = d.get(k) {
                        b.insert(k.into(), v.clone());
                    }
                }
                Value::Object(b)
            })
            .collect();
        m.insert("block".into(), Value::Array(block));
    }
    if want("chardev") {
        let mut c = Map::new();
        c.insert("serial0".into(), Value::String("console".into()));
        c.insert("serial1".into(), Value::String("metadata".into()));
        m.insert("chardev".into(), Value::Object(c));
    }
    if want("cpus") {
        let n = vm.props.get("vcpus").and_then(Value::as_u64).unwrap_or(1);
        m.insert("cpus".into(), Value::Array((0..n).map(|i| serde_json::json!({ "cpu": i })).collect()));
    }
    if want("version") {
        m.insert("version".into(), Value::String(format!("alcove vmm-server (vmadm {})", env!("CARGO_PKG_VERSION"))));
    }
    Ok(m)
}
