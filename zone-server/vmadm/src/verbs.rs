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
use alloc::string::String;
use alloc::vec::Vec;

use serde_json::{Map, Value};

use crate::argv::{self, Command};
use crate::coerce;
use crate::list;
use crate::ops::{self, OpError};
use crate::registry::{Instance, Registry};
use crate::state::State;
use crate::uuid::Uuid;
use crate::validate::{self, Action, Problems};

/// What the verbs need from the machine. zone-server implements it with
/// storaged, netd and vmm-server processes; tests with a fake.
/// Of an installed image, what `vmadm create` takes from it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageFacts {
    /// `image_size`: MiB.
    pub size_mib: u64,
    /// `requirements.bootrom` (`bios` or `uefi`), if the image names one: a
    /// VM booting it gets that firmware unless the payload says which, and
    /// a payload asking for the other is refused.
    pub bootrom: Option<String>,
}

pub trait Host {
    /// The time now, ISO 8601 (`2026-12-03T17:32:13.000Z`).
    fn now(&mut self) -> String;
    /// Fills `buf` with random bytes (uuids, MACs).
    fn random(&mut self, buf: &mut [u8]);
    /// The payload of `create`/`validate`/`update`: the file's text with
    /// `-f FILE`, stdin's without (refused when stdin is a terminal).
    fn read_payload(&mut self, file: Option<&str>) -> Result<String, String>;
    /// What a VM cloning an installed image needs of it (`imgadm list`):
    /// its size and firmware, or why it cannot be used (not installed, not
    /// a zvol image).
    fn image(&mut self, image: &Uuid) -> Result<ImageFacts, String>;
    /// Sets up a new instance's resources (volumes cloned from images or
    /// made with their size, VNICs). `vmm_json` is its vmm-server
    /// description.
    fn provision(&mut self, vm: &Instance, vmm_json: &str) -> Result<(), String>;
    /// Starts the instance's vmm-server; returns its process id.
    fn start(&mut self, vm: &Instance, vmm_json: &str) -> Result<u64, String>;
    /// Milliseconds since 1970 (`transition_expire`: when a stop that
    /// waits for the guest is forced).
    fn now_ms(&mut self) -> u64;
    /// Presses the guest's ACPI power button and returns at once: a
    /// graceful stop begins ([`ops::stop_begin`]); its end is seen with
    /// [`Host::vmm_running`]. `Err`: there is no button to press (the
    /// stop then halts the VM).
    fn power_button(&mut self, vm: &Instance) -> Result<(), String>;
    /// Whether the VM's vmm-server still runs (false once the guest
    /// powered off, or when none was started).
    fn vmm_running(&mut self, vm: &Instance) -> bool;
    /// Halts the VM at once (`stop -F`, a stop's deadline, delete): its
    /// vmm-server ended and what it held given back. Bounded: it never
    /// waits for the guest.
    fn halt(&mut self, vm: &Instance) -> Result<(), String>;
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
    /// Snapshots every disk of the VM as `name` (all or none).
    fn snapshot(&mut self, vm: &Instance, name: &str) -> Result<(), String>;
    /// Destroys the VM's disks' snapshots `name`.
    fn destroy_snapshot(&mut self, vm: &Instance, name: &str) -> Result<(), String>;
    /// Rolls every disk of the stopped VM back to its snapshot `name`
    /// (none newer exists).
    fn rollback(&mut self, vm: &Instance, name: &str) -> Result<(), String>;
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
        Err(argv::ArgError::Usage(msg)) => {
            let msg = if msg.is_empty() { msg } else { msg + "\n" };
            Output { stdout: String::new(), stderr: format!("{msg}{}", argv::USAGE), code: 2 }
        }
        Err(argv::ArgError::Invalid(msg)) => Output::fail(msg),
    }
}

/// A command that waits for a guest (`stop` without `-F`, `reboot`):
/// begun, its VM `stopping`, its end still to come.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wait {
    pub uuid: Uuid,
    /// `reboot` rather than `stop`.
    pub reboot: bool,
}

/// What [`begin`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ran {
    /// The command is over: what it printed.
    Done(Output),
    /// The command waits for the guest ([`waited`] gives its output once
    /// [`ops::settle`], or anything else, ended the VM's transition).
    Waiting(Wait),
}

/// Runs `vmadm ARGS...` without waiting for a guest: a `stop` or
/// `reboot` that has to (the ACPI power button pressed) answers
/// [`Ran::Waiting`]; everything else runs as [`run`] does. What a server
/// calls: no command holds it longer than its own bounded work.
pub fn begin(args: &[&str], reg: &mut Registry, host: &mut dyn Host) -> Ran {
    let waiting = |r: Result<ops::Begun, OpError>, uuid: Uuid, reboot: bool, verb: &str, success: String| match r {
        Ok(ops::Begun::Waiting) => Ran::Waiting(Wait { uuid, reboot }),
        r => Ran::Done(done(r.map(|_| ()), verb, &uuid, success)),
    };
    match argv::parse(args) {
        Ok(Command::Stop { uuid, force, timeout }) => waiting(
            ops::stop_begin(reg, host, &uuid, force, timeout),
            uuid,
            false,
            "stop",
            format!("Successfully completed stop for VM {uuid}"),
        ),
        Ok(Command::Reboot { uuid, force }) => waiting(
            ops::reboot_begin(reg, host, &uuid, force, argv::DEFAULT_STOP_TIMEOUT),
            uuid,
            true,
            "reboot",
            format!("Successfully completed reboot for VM {uuid}"),
        ),
        _ => Ran::Done(run(args, reg, host)),
    }
}

/// The output of the waiting command `w` once its VM's transition is
/// over (`None` while it goes on): `settled` is how it ended when
/// [`ops::settle`] ended it; without it, something else did (`stop -F`
/// halted it, `delete` removed it).
pub fn waited(w: &Wait, settled: Option<&ops::Settled>, reg: &Registry) -> Option<Output> {
    use ops::Settled;
    let verb = if w.reboot { "reboot" } else { "stop" };
    let uuid = &w.uuid;
    let Some(vm) = reg.get(uuid) else {
        return Some(Output::fail(format!("Unable to {verb} VM {uuid}: VM was deleted while it was stopping")));
    };
    if settled.is_none() && ops::Transition::of(vm).is_some() {
        return None;
    }
    let success = Output::ok_err(format!("Successfully completed {verb} for VM {uuid}"));
    Some(match settled {
        Some(Settled::HaltFailed(why)) => Output::fail(format!("Unable to {verb} VM {uuid}: could not halt it: {why}")),
        Some(Settled::RebootFailed(why)) => {
            Output::fail(format!("Unable to reboot VM {uuid}: stopped, but did not start again: {why}"))
        }
        Some(_) => success,
        // A reboot another command ended (stop -F) did not start it again.
        None if w.reboot && vm.state != State::Running => {
            Output::fail(format!("Unable to reboot VM {uuid}: VM was stopped meanwhile (currently: {})", vm.state))
        }
        None => success,
    })
}

fn problem_lines(p: &Problems) -> String {
    let mut s = String::new();
    for r in &p.reasons {
        s.push('\n');
        s.push_str(r);
    }
    s
}

/// vmadm's failure text for `verb`: `Unable to <verb> VM <uuid>: <why>`,
/// and one line per refused property.
fn unable(verb: &str, uuid: &Uuid, e: &OpError) -> Output {
    let details = match e {
        OpError::Invalid(p) => problem_lines(p),
        _ => String::new(),
    };
    Output::fail(format!("Unable to {verb} VM {uuid}: {}{details}", e.reason()))
}

fn done(r: Result<(), OpError>, verb: &str, uuid: &Uuid, success: String) -> Output {
    match r {
        Ok(()) => Output::ok_err(success),
        // vmadm treats starting a running VM or stopping a stopped one as
        // done: the message, exit 0.
        Err(OpError::Noop(why)) => Output::ok_err(format!("VM {uuid} {why}")),
        Err(e) => unable(verb, uuid, &e),
    }
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
        Command::Info { uuid, types } => match ops::info(reg, &uuid, &types) {
            Ok(m) => Output::out(list::get_json(&m)),
            Err(e) => Output::fail(format!("Unable to get VM info for VM {uuid}: {}", e.reason())),
        },
        Command::Start { uuid } => {
            done(ops::start(reg, host, &uuid), "start", &uuid, format!("Successfully started VM {uuid}"))
        }
        Command::Stop { uuid, force, timeout } => done(
            ops::stop(reg, host, &uuid, force, timeout),
            "stop",
            &uuid,
            format!("Successfully completed stop for VM {uuid}"),
        ),
        Command::Reboot { uuid, force } => done(
            ops::reboot(reg, host, &uuid, force, argv::DEFAULT_STOP_TIMEOUT),
            "reboot",
            &uuid,
            format!("Successfully completed reboot for VM {uuid}"),
        ),
        Command::Update { uuid, file, props } => update_verb(reg, host, &uuid, file.as_deref(), &props),
        Command::Delete { uuid } => match ops::delete(reg, host, &uuid) {
            Ok(()) => Output::ok_err(format!("Successfully deleted VM {uuid}")),
            Err(e) => Output::fail(format!("Failed to delete VM {uuid}: {}", e.reason())),
        },
        Command::CreateSnapshot { uuid, name } => match ops::create_snapshot(reg, host, &uuid, &name) {
            Ok(()) => Output::ok_err(format!("Created snapshot {name} for VM {uuid}")),
            Err(e) => Output::fail(format!("Failed to create snapshot {name} for VM {uuid}: {}", e.reason())),
        },
        Command::DeleteSnapshot { uuid, name } => match ops::delete_snapshot(reg, host, &uuid, &name) {
            Ok(()) => Output::ok_err(format!("Deleted snapshot {name} for VM {uuid}")),
            Err(e) => Output::fail(format!("Failed to delete snapshot {name} for VM {uuid}: {}", e.reason())),
        },
        Command::RollbackSnapshot { uuid, name } => match ops::rollback_snapshot(reg, host, &uuid, &name) {
            Ok(()) => Output::ok_err(format!("Rolled back VM {uuid} to snapshot {name}")),
            Err(e) => Output::fail(format!("Failed to rollback snapshot {name} for VM {uuid}: {}", e.reason())),
        },
        Command::Console { uuid } => match ops::console(reg, host, &uuid) {
            Ok(()) => Output::default(),
            Err(e) => Output::fail(format!("Unable to connect to console of VM {uuid}: {}", e.reason())),
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
        Output::ok_err(format!("VALID '{}' payload for {brand} brand VMs.", action.name()))
    } else {
        Output::fail(checked.problems.json_pretty())
    }
}

fn create(file: Option<&str>, reg: &mut Registry, host: &mut dyn Host) -> Output {
    let text = match host.read_payload(file) {
        Ok(t) => t,
        Err(e) => return Output::fail(e),
    };
    match ops::create(&text, reg, host) {
        Ok(c) => {
            let mut s = String::new();
            for w in &c.warnings {
                s.push_str(w);
                s.push('\n');
            }
            Output::ok_err(format!("{s}Successfully created VM {}", c.uuid))
        }
        Err(OpError::Failed { uuid: Some(u), why }) => Output::fail(format!("Failed to create VM {u}: {why}")),
        Err(OpError::Invalid(p)) => {
            Output::fail(format!("Failed to create VM: {}{}", ops::summary(&p), problem_lines(&p)))
        }
        Err(OpError::Payload(e)) => Output::fail(e),
        Err(e) => Output::fail(format!("Failed to create VM: {}", e.reason())),
    }
}

fn update_verb(
    reg: &mut Registry,
    host: &mut dyn Host,
    uuid: &Uuid,
    file: Option<&str>,
    pairs: &[(String, String)],
) -> Output {
    if reg.get(uuid).is_none() {
        return unable("update", uuid, &OpError::NotFound);
    }
    let m = if pairs.is_empty() {
        match payload(host, file) {
            Ok(m) => m,
            Err(e) => return unable("update", uuid, &OpError::Payload(e)),
        }
    } else {
        pairs.iter().map(|(k, v)| (k.clone(), coerce::from_cli(v))).collect()
    };
    done(ops::update(reg, host, uuid, &m).map(|_| ()), "update", uuid, format!("Successfully updated VM {uuid}"))
}
