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
    images(props.get_mut("disks"), "disks", host)?;
    validate::create_defaults(&mut props, &mut |b| host.random(b));
    let now = host.now();
    let vm = Instance::new(props, &now).map_err(OpError::Payload)?;
    let uuid = vm.uuid;
    reg.add(vm).map_err(|e| OpError::Conflict(e.to_string()))?;
    let vm = reg.get(&uuid).expect("just added");
    let config = vmm::vm_config_json(&vm.props);
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
            let mut created = Created { uuid, warnings };
            if let Err(e) = save(reg, host, &uuid) {
                created.warnings.push(format!("WARNING: VM {uuid} was created but its record was not saved: {e}"));
            }
            Ok(created)
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
/// vmadm shows every disk's size).
fn images(disks: Option<&mut Value>, name: &str, host: &mut dyn Host) -> Result<(), OpError> {
    let mut problems = Problems::default();
    if let Some(Value::Array(disks)) = disks {
        for (i, d) in disks.iter_mut().enumerate() {
            let Some(d) = d.as_object_mut() else { continue };
            let Some(image) = d.get("image_uuid").and_then(Value::as_str).and_then(Uuid::parse) else { continue };
            match host.image_size(&image) {
                Ok(mib) => {
                    let size = d.get("image_size").and_then(Value::as_u64).unwrap_or(mib);
                    d.insert("image_size".into(), Value::from(size));
                    d.insert("size".into(), Value::from(size));
                }
                Err(why) => problems.bad_value(&format!("{name}.{i}.image_uuid"), format!("image {image}: {why}")),
            }
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
    let config = vmm::vm_config_json(&vm.props);
    let pid = host.start(vm, &config).map_err(|why| OpError::Failed { uuid: None, why })?;
    let now = host.now();
    let vm = reg.get_mut(uuid).expect("found");
    let _ = vm.apply(Event::Start, &now);
    vm.props.insert("pid".into(), Value::from(pid));
    let _ = save(reg, host, uuid);
    Ok(())
}

/// `vmadm stop [-F] [-t timeout]`: the VM is `stopping` while the guest is
/// asked to power off, `stopped` once it has.
pub fn stop(reg: &mut Registry, host: &mut dyn Host, uuid: &Uuid, force: bool, timeout: u32) -> Result<(), OpError> {
    let now = host.now();
    let vm = found(reg, uuid)?;
    if vm.state == State::Stopped {
        return Err(OpError::Noop("is already not 'running' (currently: stopped)".into()));
    }
    allowed(vm, if force { Event::Halted } else { Event::StopRequested })?;
    let before = vm.clone();
    let vm = reg.get_mut(uuid).expect("found");
    if !force {
        let _ = vm.apply(Event::StopRequested, &now);
    }
    let vm = vm.clone();
    if let Err(why) = host.stop(&vm, force, timeout) {
        *reg.get_mut(uuid).expect("found") = before;
        return Err(OpError::Failed { uuid: None, why });
    }
    let now = host.now();
    let _ = reg.get_mut(uuid).expect("found").apply(Event::Halted, &now);
    let _ = save(reg, host, uuid);
    Ok(())
}

/// `vmadm reboot [-F]`: stop, then a new vmm-server with the properties
/// changed for the next start.
pub fn reboot(reg: &mut Registry, host: &mut dyn Host, uuid: &Uuid, force: bool, timeout: u32) -> Result<(), OpError> {
    let vm = found(reg, uuid)?;
    allowed(vm, Event::Reboot)?;
    let vm = vm.clone();
    host.stop(&vm, force, timeout).map_err(|why| OpError::Failed { uuid: None, why })?;
    let config = vmm::vm_config_json(&vm.props);
    let started = host.start(&vm, &config);
    let now = host.now();
    let vm = reg.get_mut(uuid).expect("found");
    let result = match started {
        Ok(pid) => {
            let _ = vm.apply(Event::Reboot, &now);
            vm.props.insert("pid".into(), Value::from(pid));
            Ok(())
        }
        Err(e) => {
            let _ = vm.apply(Event::Exited, &now);
            Err(OpError::Failed { uuid: None, why: format!("stopped, but did not start again: {e}") })
        }
    };
    let _ = save(reg, host, uuid);
    result
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
    reg.check_macs(uuid, &macs_of(&props)).map_err(|e| OpError::Conflict(e.to_string()))?;
    let now = host.now();
    let vm = reg.get_mut(uuid).expect("found");
    vm.props = props;
    vm.props.insert("last_modified".into(), Value::String(now));
    let vm = vm.clone();
    let live = if vm.state == State::Running && !applied.live.is_empty() {
        host.update_live(&vm, &applied.live)
    } else {
        Ok(())
    };
    let _ = save(reg, host, uuid);
    live.map_err(|e| OpError::Failed {
        uuid: None,
        why: format!("saved, but the running VM did not take {}: {e}", applied.live.join(",")),
    })?;
    Ok(applied)
}

/// `vmadm delete`: halts a running VM, returns its resources, forgets it.
pub fn delete(reg: &mut Registry, host: &mut dyn Host, uuid: &Uuid) -> Result<(), OpError> {
    let vm = found(reg, uuid)?.clone();
    if matches!(vm.state, State::Running | State::Stopping) {
        host.stop(&vm, true, 0).map_err(|e| OpError::Failed { uuid: None, why: format!("could not halt it: {e}") })?;
    }
    host.destroy(&vm).map_err(|why| OpError::Failed { uuid: None, why })?;
    let _ = reg.remove(uuid);
    let _ = host.persist(uuid, None);
    Ok(())
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
