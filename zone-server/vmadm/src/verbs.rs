//! The verbs: one `vmadm` command run against the registry, with its side
//! effects done through [`Host`], producing what vmadm prints and its exit
//! code. The operator shell, the HTTP API and the host CLI all come here.
//!
//! Messages (on stderr, as vmadm): `Successfully created VM <uuid>`,
//! `Successfully started VM <uuid>`, `Successfully completed stop for VM
//! <uuid>`, `Successfully completed reboot for VM <uuid>`, `Successfully
//! updated VM <uuid>`, `Successfully deleted VM <uuid>`; failures `Unable to
//! <verb> VM <uuid>: <why>` (create: `Failed to create VM: <why>` and one
//! line per problem). Exit codes: 0 done, 1 refused or failed, 2 usage.

use alloc::borrow::ToOwned;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use serde_json::{Map, Value};

use crate::argv::{self, Command};
use crate::coerce;
use crate::list;
use crate::registry::{Instance, Registry};
use crate::state::{Event, State};
use crate::update;
use crate::uuid::Uuid;
use crate::validate::{self, Action, Problems};
use crate::vmm;

/// What the verbs need from the machine. zone-server implements it with
/// storaged, netd and vmm-server processes; tests with a fake.
pub trait Host {
    /// The time now, ISO 8601 (`2026-12-03T17:32:13.000Z`).
    fn now(&mut self) -> String;
    /// Fills `buf` with random bytes (uuids, MACs).
    fn random(&mut self, buf: &mut [u8]);
    /// The payload of `create`/`validate`/`update`: the file's text with
    /// `-f FILE`, stdin's without (refused when stdin is a terminal).
    fn read_payload(&mut self, file: Option<&str>) -> Result<String, String>;
    /// Sets up a new instance's resources (volumes cloned from images or
    /// made with their size, VNICs). `vmm_json` is its vmm-server
    /// description.
    fn provision(&mut self, vm: &Instance, vmm_json: &str) -> Result<(), String>;
    /// Starts the instance's vmm-server; returns its process id.
    fn start(&mut self, vm: &Instance, vmm_json: &str) -> Result<u64, String>;
    /// Stops the VM: with `force` at once, else the ACPI power button and
    /// a halt after `timeout` seconds. Returns when it has stopped.
    fn stop(&mut self, vm: &Instance, force: bool, timeout: u32) -> Result<(), String>;
    /// Applies properties changed live (`cpu_cap`, metadata...) to a
    /// running VM.
    fn update_live(&mut self, vm: &Instance, changed: &[String]) -> Result<(), String>;
    /// Returns the instance's resources (volumes, VNICs) after it stopped.
    fn destroy(&mut self, vm: &Instance) -> Result<(), String>;
    /// Attaches the caller's terminal to the VM's serial console until
    /// the user types CTRL-].
    fn console(&mut self, vm: &Instance) -> Result<(), String>;
    /// Keeps the instance's record (`vmadm get` JSON) where it survives a
    /// reboot; `None` forgets it (delete).
    fn persist(&mut self, uuid: &Uuid, record: Option<&str>) -> Result<(), String>;
}

/// What a command printed and its exit code.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Output {
    pub stdout: String,
    pub stderr: String,
    pub code: i32,
}

impl Output {
    fn ok_err(msg: String) -> Self {
        Self { stdout: String::new(), stderr: msg + "\n", code: 0 }
    }
    fn fail(msg: String) -> Self {
        Self { stdout: String::new(), stderr: msg + "\n", code: 1 }
    }
    fn out(text: String) -> Self {
        Self { stdout: text, stderr: String::new(), code: 0 }
    }
}

/// Runs `vmadm ARGS...` (without the program name).
pub fn run(args: &[&str], reg: &mut Registry, host: &mut dyn Host) -> Output {
    match argv::parse(args) {
        Ok(cmd) => execute(cmd, reg, host),
        Err(argv::Usage(msg)) => Output { stdout: String::new(), stderr: format!("{msg}\n{}", argv::USAGE), code: 2 },
    }
}

fn record(reg: &Registry, vm: &Instance) -> String {
    Value::Object(vm.to_json(&reg.server_uuid)).to_string()
}

fn save(reg: &Registry, host: &mut dyn Host, uuid: &Uuid) -> Result<(), String> {
    match reg.get(uuid) {
        Some(vm) => host.persist(uuid, Some(&record(reg, vm))),
        None => host.persist(uuid, None),
    }
}

fn problem_lines(p: &Problems) -> String {
    let mut s = String::new();
    for r in &p.reasons {
        s.push_str(r);
        s.push('\n');
    }
    s
}

fn summary(p: &Problems) -> String {
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

/// Executes a parsed command.
pub fn execute(cmd: Command, reg: &mut Registry, host: &mut dyn Host) -> Output {
    match cmd {
        Command::Help => Output::out(argv::USAGE.to_owned()),
        Command::Validate { action, brand, file } => validate_verb(action, brand.as_deref(), file.as_deref(), host),
        Command::Create { file } => create(file.as_deref(), reg, host),
        Command::List { format, filters } => Output::out(list::render(reg.select(&filters), &reg.server_uuid, &format)),
        Command::Lookup { json, one, fields, filters } => {
            let found = reg.select(&filters);
            if one && found.len() != 1 {
                return Output::fail(format!("Requested unique lookup but found {} results.", found.len()));
            }
            if json {
                let vms: Vec<Map<String, Value>> = found.iter().map(|vm| vm.to_json(&reg.server_uuid)).collect();
                Output::out(list::lookup_json(&vms, fields.as_deref()))
            } else {
                Output::out(found.iter().map(|vm| format!("{}\n", vm.uuid)).collect())
            }
        }
        Command::Get { uuid } => match reg.get(&uuid) {
            Some(vm) => Output::out(list::get_json(&vm.to_json(&reg.server_uuid))),
            None => Output::fail(format!("Unable to get VM {uuid}: VM not found")),
        },
        Command::Info { uuid, types } => info(reg, &uuid, &types),
        Command::Start { uuid } => start(reg, host, &uuid),
        Command::Stop { uuid, force, timeout } => stop(reg, host, &uuid, force, timeout),
        Command::Reboot { uuid, force } => reboot(reg, host, &uuid, force),
        Command::Update { uuid, file, props } => update_verb(reg, host, &uuid, file.as_deref(), &props),
        Command::Delete { uuid } => delete(reg, host, &uuid),
        Command::Console { uuid } => match reg.get(&uuid) {
            None => Output::fail(format!("Unable to connect to console of VM {uuid}: VM not found")),
            Some(vm) if vm.state != State::Running && vm.state != State::Stopping => {
                Output::fail(format!("Unable to connect to console of VM {uuid}: VM is not running"))
            }
            Some(vm) => match host.console(vm) {
                Ok(()) => Output::default(),
                Err(e) => Output::fail(format!("Unable to connect to console of VM {uuid}: {e}")),
            },
        },
    }
}

fn payload(host: &mut dyn Host, file: Option<&str>) -> Result<Map<String, Value>, String> {
    let text = host.read_payload(file)?;
    validate::parse(&text)
}

fn validate_verb(action: Action, brand: Option<&str>, file: Option<&str>, host: &mut dyn Host) -> Output {
    if let Some(b) = brand
        && b != "bhyve"
        && b != "kvm"
    {
        let b = Value::String(b.chars().take(64).collect());
        return Output::fail(format!("{{\"bad_brand\":{b}}}"));
    }
    let m = match payload(host, file) {
        Ok(m) => m,
        Err(e) => return Output::fail(e),
    };
    let checked = match action {
        Action::Create => validate::check_create(&m),
        Action::Update => validate::check_update(brand.unwrap_or("bhyve"), &m),
    };
    if checked.problems.is_empty() {
        let brand = brand.map(str::to_owned).unwrap_or(checked.brand);
        Output::out(format!("VALID '{}' payload for {brand} brand VMs.\n", action.name()))
    } else {
        Output { stdout: String::new(), stderr: format!("{}\n", checked.problems.json()), code: 1 }
    }
}

fn create(file: Option<&str>, reg: &mut Registry, host: &mut dyn Host) -> Output {
    let m = match payload(host, file) {
        Ok(m) => m,
        Err(e) => return Output::fail(format!("Failed to create VM: {e}")),
    };
    let checked = validate::check_create(&m);
    let p = &checked.problems;
    if !p.only_bad_properties() {
        return Output::fail(format!("Failed to create VM: {}\n{}", summary(p), problem_lines(p).trim_end()));
    }
    let mut warnings = String::new();
    for name in &p.bad_properties {
        warnings.push_str(&format!("WARNING: ignoring property \"{name}\": not a bhyve create property\n"));
    }
    let mut props = checked.payload;
    validate::create_defaults(&mut props, &mut |b| host.random(b));
    let now = host.now();
    let vm = match Instance::new(props, &now) {
        Ok(vm) => vm,
        Err(e) => return Output::fail(format!("{warnings}Failed to create VM: {e}")),
    };
    let uuid = vm.uuid;
    if let Err(e) = reg.add(vm) {
        return Output::fail(format!("{warnings}Failed to create VM: {e}"));
    }
    let fail = |reg: &mut Registry, host: &mut dyn Host, e: String, warnings: &str| {
        let now = host.now();
        if let Some(vm) = reg.get_mut(&uuid) {
            let _ = vm.apply(Event::ProvisionFailed, &now);
        }
        let _ = save(reg, host, &uuid);
        Output::fail(format!("{warnings}Failed to create VM {uuid}: {e}"))
    };
    let vm = reg.get(&uuid).expect("just added");
    let config = vmm::vm_config_json(&vm.props);
    let boot = vm.autoboot();
    if let Err(e) = host.provision(vm, &config) {
        return fail(reg, host, e, &warnings);
    }
    if boot {
        match host.start(vm, &config) {
            Ok(pid) => {
                let vm = reg.get_mut(&uuid).expect("just added");
                let _ = vm.apply(Event::Provisioned { boot: true }, &now);
                vm.props.insert("pid".into(), Value::from(pid));
            }
            Err(e) => return fail(reg, host, e, &warnings),
        }
    } else {
        let _ = reg.get_mut(&uuid).expect("just added").apply(Event::Provisioned { boot: false }, &now);
    }
    if let Err(e) = save(reg, host, &uuid) {
        warnings.push_str(&format!("WARNING: VM {uuid} was created but its record was not saved: {e}\n"));
    }
    Output::ok_err(format!("{warnings}Successfully created VM {uuid}"))
}

fn start(reg: &mut Registry, host: &mut dyn Host, uuid: &Uuid) -> Output {
    let Some(vm) = reg.get(uuid) else { return Output::fail(format!("Unable to start VM {uuid}: VM not found")) };
    if let Err(r) = crate::state::next(vm.state, Event::Start) {
        return Output::fail(format!("Unable to start VM {uuid}: {r}"));
    }
    let config = vmm::vm_config_json(&vm.props);
    match host.start(vm, &config) {
        Ok(pid) => {
            let now = host.now();
            let vm = reg.get_mut(uuid).expect("present");
            let _ = vm.apply(Event::Start, &now);
            vm.props.insert("pid".into(), Value::from(pid));
            let _ = save(reg, host, uuid);
            Output::ok_err(format!("Successfully started VM {uuid}"))
        }
        Err(e) => Output::fail(format!("Unable to start VM {uuid}: {e}")),
    }
}

fn stop(reg: &mut Registry, host: &mut dyn Host, uuid: &Uuid, force: bool, timeout: u32) -> Output {
    let now = host.now();
    let Some(vm) = reg.get_mut(uuid) else { return Output::fail(format!("Unable to stop VM {uuid}: VM not found")) };
    let before = vm.clone();
    let first = if force { Event::Halted } else { Event::StopRequested };
    if let Err(r) = crate::state::next(vm.state, first) {
        return Output::fail(format!("Unable to stop VM {uuid}: {r}"));
    }
    if !force {
        let _ = vm.apply(Event::StopRequested, &now);
    }
    let vm_now = vm.clone();
    match host.stop(&vm_now, force, timeout) {
        Ok(()) => {
            let now = host.now();
            let vm = reg.get_mut(uuid).expect("present");
            let _ = vm.apply(Event::Halted, &now);
            let _ = save(reg, host, uuid);
            Output::ok_err(format!("Successfully completed stop for VM {uuid}"))
        }
        Err(e) => {
            *reg.get_mut(uuid).expect("present") = before;
            Output::fail(format!("Unable to stop VM {uuid}: {e}"))
        }
    }
}

fn reboot(reg: &mut Registry, host: &mut dyn Host, uuid: &Uuid, force: bool) -> Output {
    let Some(vm) = reg.get(uuid) else { return Output::fail(format!("Unable to reboot VM {uuid}: VM not found")) };
    if let Err(r) = crate::state::next(vm.state, Event::Reboot) {
        return Output::fail(format!("Unable to reboot VM {uuid}: {r}"));
    }
    let vm = vm.clone();
    if let Err(e) = host.stop(&vm, force, argv::DEFAULT_STOP_TIMEOUT) {
        return Output::fail(format!("Unable to reboot VM {uuid}: {e}"));
    }
    // The new vmm-server gets the properties changed for the next start.
    let config = vmm::vm_config_json(&vm.props);
    let now = host.now();
    match host.start(&vm, &config) {
        Ok(pid) => {
            let vm = reg.get_mut(uuid).expect("present");
            let _ = vm.apply(Event::Reboot, &now);
            vm.props.insert("pid".into(), Value::from(pid));
            let _ = save(reg, host, uuid);
            Output::ok_err(format!("Successfully completed reboot for VM {uuid}"))
        }
        Err(e) => {
            let vm = reg.get_mut(uuid).expect("present");
            let _ = vm.apply(Event::Exited, &now);
            let _ = save(reg, host, uuid);
            Output::fail(format!("Unable to reboot VM {uuid}: stopped, but did not start again: {e}"))
        }
    }
}

fn update_verb(
    reg: &mut Registry,
    host: &mut dyn Host,
    uuid: &Uuid,
    file: Option<&str>,
    pairs: &[(String, String)],
) -> Output {
    let Some(vm) = reg.get(uuid) else { return Output::fail(format!("Unable to update VM {uuid}: VM not found")) };
    if matches!(vm.state, State::Provisioning | State::Failed) {
        let why = crate::state::next(vm.state, Event::Start).err().map(|r| r.0).unwrap_or("VM cannot be updated now");
        return Output::fail(format!("Unable to update VM {uuid}: {why}"));
    }
    let brand = vm.brand().to_owned();
    let m = if pairs.is_empty() {
        match payload(host, file) {
            Ok(m) => m,
            Err(e) => return Output::fail(format!("Unable to update VM {uuid}: {e}")),
        }
    } else {
        pairs.iter().map(|(k, v)| (k.clone(), coerce::from_cli(v))).collect()
    };
    let checked = validate::check_update(&brand, &m);
    if !checked.problems.is_empty() {
        let p = &checked.problems;
        return Output::fail(format!("Unable to update VM {uuid}: {}\n{}", summary(p), problem_lines(p).trim_end()));
    }
    let mut props = vm.props.clone();
    let applied = match update::apply(&mut props, &checked.payload, &mut |b| host.random(b)) {
        Ok(a) => a,
        Err(p) => {
            return Output::fail(format!(
                "Unable to update VM {uuid}: {}\n{}",
                summary(&p),
                problem_lines(&p).trim_end()
            ));
        }
    };
    if let Err(e) = reg.check_macs(uuid, &crate::registry::macs_of(&props)) {
        return Output::fail(format!("Unable to update VM {uuid}: {e}"));
    }
    let now = host.now();
    let vm = reg.get_mut(uuid).expect("present");
    vm.props = props;
    vm.props.insert("last_modified".into(), Value::String(now));
    let running = vm.state == State::Running;
    let vm = vm.clone();
    if running
        && !applied.live.is_empty()
        && let Err(e) = host.update_live(&vm, &applied.live)
    {
        let _ = save(reg, host, uuid);
        return Output::fail(format!(
            "Unable to update VM {uuid}: saved, but the running VM did not take {}: {e}",
            applied.live.join(",")
        ));
    }
    let _ = save(reg, host, uuid);
    Output::ok_err(format!("Successfully updated VM {uuid}"))
}

fn delete(reg: &mut Registry, host: &mut dyn Host, uuid: &Uuid) -> Output {
    let Some(vm) = reg.get(uuid) else { return Output::fail(format!("Unable to delete VM {uuid}: VM not found")) };
    let vm = vm.clone();
    if matches!(vm.state, State::Running | State::Stopping)
        && let Err(e) = host.stop(&vm, true, 0)
    {
        return Output::fail(format!("Unable to delete VM {uuid}: could not halt it: {e}"));
    }
    if let Err(e) = host.destroy(&vm) {
        return Output::fail(format!("Unable to delete VM {uuid}: {e}"));
    }
    let _ = reg.remove(uuid);
    let _ = host.persist(uuid, None);
    Output::ok_err(format!("Successfully deleted VM {uuid}"))
}

fn info(reg: &Registry, uuid: &Uuid, types: &[String]) -> Output {
    let Some(vm) = reg.get(uuid) else {
        return Output::fail(format!("Unable to get info for VM {uuid}: VM not found"));
    };
    if vm.state != State::Running {
        return Output::fail(format!("Unable to get info for VM {uuid}: VM is not running"));
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
    Output::out(list::get_json(&m))
}
