//! Instances and the set of them: the record `vmadm get` prints, its state,
//! and lookups by `field=value` filters.

use alloc::borrow::ToOwned;
use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use serde_json::{Map, Value};

use crate::state::{self, Event, Refused, State};
use crate::uuid::Uuid;

/// The most instances one registry holds.
pub const MAX_INSTANCES: usize = 4096;

/// One instance: its properties (a checked create payload with its
/// defaults, as updated since) and its state.
#[derive(Clone, Debug, PartialEq)]
pub struct Instance {
    pub uuid: Uuid,
    pub state: State,
    /// Everything `vmadm get` prints except what is computed from the
    /// state and the machine (`state`, `zone_state`, `type`, `hvm`,
    /// `zonename`, `zonepath`, `server_uuid`, `v`).
    pub props: Map<String, Value>,
}

impl Instance {
    /// A new instance, `provisioning`, from a checked payload with its
    /// defaults (which holds `uuid`); `now` is an ISO 8601 timestamp.
    pub fn new(mut props: Map<String, Value>, now: &str) -> Result<Self, String> {
        let uuid = props
            .get("uuid")
            .and_then(Value::as_str)
            .and_then(Uuid::parse)
            .ok_or_else(|| "vmadm: the payload has no valid uuid".to_owned())?;
        props.insert("create_timestamp".into(), Value::String(now.into()));
        props.insert("last_modified".into(), Value::String(now.into()));
        Ok(Self { uuid, state: State::Provisioning, props })
    }

    /// An instance read back from its stored `vmadm get` JSON (after a
    /// reboot or a zone-server restart): computed properties are dropped
    /// and recomputed.
    pub fn from_stored(mut props: Map<String, Value>) -> Result<Self, String> {
        let state = props.get("state").and_then(Value::as_str).and_then(State::parse).unwrap_or(State::Stopped);
        for k in COMPUTED {
            props.remove(*k);
        }
        let uuid = props
            .get("uuid")
            .and_then(Value::as_str)
            .and_then(Uuid::parse)
            .ok_or_else(|| "vmadm: stored instance has no valid uuid".to_owned())?;
        Ok(Self { uuid, state, props })
    }

    pub fn brand(&self) -> &str {
        self.props.get("brand").and_then(Value::as_str).unwrap_or("bhyve")
    }

    /// The `type` property: `KVM`, or `BHYV` for bhyve (as `vmadm list`
    /// prints it on SmartOS, in its four-character TYPE column).
    pub fn type_name(&self) -> &'static str {
        if self.brand() == "kvm" { "KVM" } else { "BHYV" }
    }

    pub fn alias(&self) -> Option<&str> {
        self.props.get("alias").and_then(Value::as_str)
    }

    pub fn autoboot(&self) -> bool {
        self.props.get("autoboot").and_then(Value::as_bool).unwrap_or(false)
    }

    /// Applies an event at time `now`: the new state, and what vmadm
    /// records with it (`autoboot` set by start and cleared by stop,
    /// `boot_timestamp` and `pid` only while running, `last_modified`).
    pub fn apply(&mut self, event: Event, now: &str) -> Result<State, Refused> {
        let next = state::next(self.state, event)?;
        match event {
            Event::Start => {
                self.props.insert("autoboot".into(), Value::Bool(true));
            }
            Event::StopRequested | Event::Halted => {
                self.props.insert("autoboot".into(), Value::Bool(false));
            }
            _ => {}
        }
        if next == State::Running && (self.state != State::Running || event == Event::Reboot) {
            self.props.insert("boot_timestamp".into(), Value::String(now.into()));
        }
        if next != State::Running && next != State::Stopping {
            self.props.remove("boot_timestamp");
            self.props.remove("pid");
        }
        if next != State::Stopping {
            // A transition (`transition_to`, `transition_expire`) lasts
            // only while the VM is stopping.
            self.props.remove("transition_to");
            self.props.remove("transition_expire");
        }
        self.state = next;
        self.props.insert("last_modified".into(), Value::String(now.into()));
        Ok(next)
    }

    /// The object `vmadm get` prints.
    pub fn to_json(&self, server_uuid: &str) -> Map<String, Value> {
        let mut m = self.props.clone();
        let uuid = self.uuid.text();
        m.insert("state".into(), Value::String(self.state.name().into()));
        m.insert("zone_state".into(), Value::String(self.state.zone_state().into()));
        m.insert("type".into(), Value::String(self.type_name().into()));
        m.insert("hvm".into(), Value::Bool(true));
        m.insert("zonename".into(), Value::String(uuid.clone()));
        m.insert("zonepath".into(), Value::String(format!("/zones/{uuid}")));
        m.insert("server_uuid".into(), Value::String(server_uuid.into()));
        m.insert("v".into(), Value::from(1));
        m
    }

    /// A property [`Instance::to_json`] computes, without building the
    /// whole object.
    pub fn computed(&self, name: &str, server_uuid: &str) -> Option<Value> {
        Some(match name {
            "state" => Value::String(self.state.name().into()),
            "zone_state" => Value::String(self.state.zone_state().into()),
            "type" => Value::String(self.type_name().into()),
            "hvm" => Value::Bool(true),
            "zonename" => Value::String(self.uuid.text()),
            "zonepath" => Value::String(format!("/zones/{}", self.uuid)),
            "server_uuid" => Value::String(server_uuid.into()),
            "v" => Value::from(1),
            _ => return None,
        })
    }

    /// The values at a dotted field path (`ram`, `nics.*.ip`), as
    /// [`resolve`] finds them in [`Instance::to_json`], without building it.
    pub fn field(&self, path: &str, server_uuid: &str) -> Vec<Value> {
        let parts: Vec<&str> = path.split('.').collect();
        if let Some(v) = self.computed(parts[0], server_uuid) {
            return if parts.len() == 1 { alloc::vec![v] } else { Vec::new() };
        }
        resolve(&self.props, &parts).into_iter().cloned().collect()
    }

    /// MAC addresses of the instance's NICs.
    pub fn macs(&self) -> Vec<String> {
        macs_of(&self.props)
    }
}

/// The properties [`Instance::to_json`] computes.
pub const COMPUTED: &[&str] = &["state", "zone_state", "type", "hvm", "zonename", "zonepath", "server_uuid", "v"];

/// The MAC addresses of the NICs of a property object.
pub fn macs_of(props: &Map<String, Value>) -> Vec<String> {
    props
        .get("nics")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|n| n.get("mac").and_then(Value::as_str)).map(str::to_owned).collect())
        .unwrap_or_default()
}

/// A `field=value` filter of `list` and `lookup`. `field` may reach into
/// arrays and objects with dots: `nics.0.ip`, `nics.*.nic_tag` (any NIC),
/// `customer_metadata.role`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Filter {
    pub field: String,
    pub value: String,
}

impl Filter {
    /// Parses `field=value`. `field=~regex` is refused: regular
    /// expressions are not supported yet.
    pub fn parse(arg: &str) -> Result<Self, String> {
        let shown: String = arg.chars().filter(|c| !c.is_control()).take(64).collect();
        let Some((field, value)) = arg.split_once('=') else {
            return Err(format!("Bad arguments: unable to split {shown}"));
        };
        if field.is_empty() {
            return Err(format!("Bad arguments: unable to split {shown}"));
        }
        if value.starts_with('~') {
            return Err(format!(
                "Invalid filter \"{shown}\": regular expression filters (field=~value) are not supported yet"
            ));
        }
        Ok(Self { field: field.into(), value: value.into() })
    }

    pub fn matches(&self, vm: &Instance, server_uuid: &str) -> bool {
        vm.field(&self.field, server_uuid).iter().any(|v| text_of(v).as_deref() == Some(self.value.as_str()))
    }
}

/// The values at a dotted path (`*` matches every element of an array).
pub fn resolve<'a>(vm: &'a Map<String, Value>, parts: &[&str]) -> Vec<&'a Value> {
    let Some((first, rest)) = parts.split_first() else { return Vec::new() };
    let Some(v) = vm.get(*first) else { return Vec::new() };
    let mut cur = alloc::vec![v];
    for part in rest {
        let mut next = Vec::new();
        for v in cur {
            match v {
                Value::Array(a) if *part == "*" => next.extend(a.iter()),
                Value::Array(a) => {
                    if let Some(x) = part.parse::<usize>().ok().and_then(|i| a.get(i)) {
                        next.push(x);
                    }
                }
                Value::Object(m) => {
                    if let Some(x) = m.get(*part) {
                        next.push(x);
                    }
                }
                _ => {}
            }
        }
        cur = next;
    }
    cur
}

/// A value as `list` prints it and filters compare it: strings as they
/// are, numbers and booleans in JSON form, arrays joined with commas.
pub fn text_of(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        Value::Number(_) | Value::Bool(_) => Some(v.to_string()),
        Value::Array(a) => Some(a.iter().filter_map(text_of).collect::<Vec<_>>().join(",")),
        Value::Object(_) => Some(v.to_string()),
    }
}

/// Why the registry refused a change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegistryError {
    Duplicate(Uuid),
    DuplicateMac { mac: String, owner: Uuid },
    Full,
    NotFound(Uuid),
}

impl core::fmt::Display for RegistryError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            RegistryError::Duplicate(u) => write!(f, "VM with UUID {u} already exists"),
            RegistryError::DuplicateMac { mac, owner } => {
                write!(f, "MAC address {mac} is already used by VM {owner}")
            }
            RegistryError::Full => write!(f, "this machine already has {MAX_INSTANCES} VMs"),
            RegistryError::NotFound(u) => write!(f, "VM {u} not found"),
        }
    }
}

/// The instances of one machine.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Registry {
    /// This machine's UUID (`server_uuid` of every instance).
    pub server_uuid: String,
    instances: BTreeMap<Uuid, Instance>,
}

impl Registry {
    pub fn new(server_uuid: &str) -> Self {
        Self { server_uuid: server_uuid.into(), instances: BTreeMap::new() }
    }

    pub fn len(&self) -> usize {
        self.instances.len()
    }

    pub fn is_empty(&self) -> bool {
        self.instances.is_empty()
    }

    /// Adds an instance; refuses a uuid or a NIC MAC address already in use.
    pub fn add(&mut self, vm: Instance) -> Result<(), RegistryError> {
        if self.instances.contains_key(&vm.uuid) {
            return Err(RegistryError::Duplicate(vm.uuid));
        }
        if self.instances.len() >= MAX_INSTANCES {
            return Err(RegistryError::Full);
        }
        self.check_macs(&vm.uuid, &vm.macs())?;
        self.instances.insert(vm.uuid, vm);
        Ok(())
    }

    /// Refuses MACs another instance than `uuid` uses.
    pub fn check_macs(&self, uuid: &Uuid, macs: &[String]) -> Result<(), RegistryError> {
        for other in self.instances.values().filter(|o| o.uuid != *uuid) {
            for mac in other.macs() {
                if macs.contains(&mac) {
                    return Err(RegistryError::DuplicateMac { mac, owner: other.uuid });
                }
            }
        }
        Ok(())
    }

    pub fn get(&self, uuid: &Uuid) -> Option<&Instance> {
        self.instances.get(uuid)
    }

    pub fn get_mut(&mut self, uuid: &Uuid) -> Option<&mut Instance> {
        self.instances.get_mut(uuid)
    }

    pub fn remove(&mut self, uuid: &Uuid) -> Result<Instance, RegistryError> {
        self.instances.remove(uuid).ok_or(RegistryError::NotFound(*uuid))
    }

    /// Every instance, by uuid.
    pub fn iter(&self) -> impl Iterator<Item = &Instance> {
        self.instances.values()
    }

    /// Rebuilds the registry from stored records (`vmadm get` JSON).
    ///
    /// After a zone-server restart (`machine_boot` false) the VMs kept
    /// running and every state stands. After a machine boot no vmm-server
    /// survives: a running or stopping VM is stopped now, one that was
    /// still provisioning has failed. Returns the registry, the VMs to
    /// start because their `autoboot` is set (machine boot only; by uuid),
    /// and one message per record that could not be taken back (bad JSON,
    /// no uuid, a duplicate) — those are skipped, never fatal.
    pub fn restore(
        server_uuid: &str,
        records: &[&str],
        machine_boot: bool,
        now: &str,
    ) -> (Self, Vec<Uuid>, Vec<String>) {
        let mut reg = Registry::new(server_uuid);
        let mut errors = Vec::new();
        for (i, text) in records.iter().enumerate() {
            let vm = serde_json::from_str::<Map<String, Value>>(text)
                .map_err(|e| e.to_string())
                .and_then(Instance::from_stored);
            let mut vm = match vm {
                Ok(vm) => vm,
                Err(e) => {
                    errors.push(format!("vmadm: stored record {i} skipped: {e}"));
                    continue;
                }
            };
            if machine_boot {
                let event = match vm.state {
                    State::Running | State::Stopping => Some(Event::Exited),
                    State::Provisioning => Some(Event::ProvisionFailed),
                    State::Stopped | State::Failed => None,
                };
                if let Some(e) = event {
                    let _ = vm.apply(e, now);
                }
            }
            if let Err(e) = reg.add(vm) {
                errors.push(format!("vmadm: stored record {i} skipped: {e}"));
            }
        }
        let boot = if machine_boot {
            reg.iter().filter(|vm| vm.state == State::Stopped && vm.autoboot()).map(|vm| vm.uuid).collect()
        } else {
            Vec::new()
        };
        (reg, boot, errors)
    }

    /// The VMs with a disk cloned from `image` (imgadm refuses to delete
    /// an image in use).
    pub fn using_image(&self, image: &Uuid) -> Vec<Uuid> {
        let text = image.text();
        self.instances
            .values()
            .filter(|vm| {
                vm.props.get("disks").and_then(Value::as_array).is_some_and(|d| {
                    d.iter().any(|d| d.get("image_uuid").and_then(Value::as_str) == Some(text.as_str()))
                })
            })
            .map(|vm| vm.uuid)
            .collect()
    }

    /// The instances matching every filter, by uuid.
    pub fn select(&self, filters: &[Filter]) -> Vec<&Instance> {
        self.instances.values().filter(|vm| filters.iter().all(|f| f.matches(vm, &self.server_uuid))).collect()
    }

    /// The instances matching every filter, as `vmadm get` objects, by uuid.
    pub fn lookup(&self, filters: &[Filter]) -> Vec<(Uuid, Map<String, Value>)> {
        self.select(filters).into_iter().map(|vm| (vm.uuid, vm.to_json(&self.server_uuid))).collect()
    }
}
