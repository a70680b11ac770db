//! zone-server: zones, instance lifecycle and the vmadm/imgadm control plane.
//!
//! This is the server's logic as a library (host-testable, embeddable in
//! appliance builds with the in-process transport); `src/bin/zone-server.rs` is
//! the thin process that wires it to its capabilities. It serves `status`
//! to everyone and `vmadm` (SmartOS's verbs, [`alcove_vmadm`], and
//! `imgadm`'s, [`alcove_images`]) to the clients its arguments name; a
//! verb's side effects go through [`host::ZoneHost`] to storaged's pool
//! and init's `proc`.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod host;
pub mod imgsrc;
pub mod slots;

use alloc::string::String;
use alloc::vec::Vec;

use alcove_vmadm::ops::{self, Settled};
use alcove_vmadm::registry::Registry;
use alcove_vmadm::state::Event;
use alcove_vmadm::verbs::{self, Host, Wait};
use alcove_vmadm::uuid::Uuid;
use alloc::string::ToString;
use alloc::collections::BTreeMap;
use libipc::interfaces::{
    IMPORT_STALE_SECS, VMADM_CHUNK_BYTES, VMADM_REPLY_MAX, VMADM_REQUEST_MAX, VMADM_STAGE_PIECE_MAX, VMADM_STDIN_MAX, VmadmConsole, VmadmImport, VmadmOutput,
    VmadmStarted, VmadmStep, VmadmStream, mdata, status, vmadm,
};

pub use host::{Machine, ZoneHost};

/// Grows zone-server's heap for an xz dictionary that does not fit it
/// (`alcove_rt::grow_heap`: frames charged to zone-server's own budget,
/// which its manifests size for xz's default 8 MiB dictionary; the heap
/// never shrinks, so the memory stays zone-server's for later imports).
pub(crate) fn grow_heap(bytes: usize) -> Result<(), String> {
    alcove_rt::grow_heap(bytes).map_err(|e| alloc::format!("{e}"))
}

pub const VERSION: u32 = 2;

/// Bytes zone-server adds to its heap at start for the instances'
/// records (`alcove_vmadm::properties::MAX_INSTANCES` of them, each at
/// most `MAX_RECORD` as JSON, some times that as values) and the outputs
/// listing them; the manifests give zone-server 16 MiB (4 of them this,
/// 10 an xz import's dictionary).
pub const HEAP_GROWTH_BYTES: usize = 4 << 20;

/// The bit of zone-server's bound notification that wakes it for the
/// restore after its first `status` answer ([`Machine::wake_after_reply`];
/// bit 0 is alcove-rt's lifecycle's).
pub const WAKE_RESTORE: u64 = 1 << 1;

/// The bit of zone-server's bound notification its timer signals when a
/// VM's transition is due a look ([`ZoneServer::next_wake_ms`]): a stop
/// nobody steps still ends, the guest gone or its deadline passed.
pub const WAKE_TIMER: u64 = 1 << 2;

/// How often a stopping VM's vmm-server is looked at (whether the guest
/// powered off) between its stop's begin and deadline.
pub const TRANSITION_POLL_MS: u64 = 500;

/// Why a request is refused for its size, if it is larger than
/// `vmadm` takes (`tool` names what the caller ran).
fn oversized(tool: &str, size: usize) -> Option<String> {
    (size > VMADM_REQUEST_MAX as usize).then(|| alloc::format!("{tool}: the request is {size} bytes, at most {VMADM_REQUEST_MAX}\n"))
}

/// Why a command is refused for its size: its arguments past one
/// message's worth, or its payload (staged pieces and all) past
/// `VMADM_STDIN_MAX`.
fn request_too_large(tool: &str, args: &[String], stdin: &str) -> Option<String> {
    oversized(tool, args.iter().map(String::len).sum::<usize>()).or_else(|| {
        (stdin.len() > VMADM_STDIN_MAX as usize)
            .then(|| alloc::format!("{tool}: the payload is {} bytes, at most {VMADM_STDIN_MAX}\n", stdin.len()))
    })
}

/// The machine's uuid as vmadm reports it (`server_uuid`) until the
/// platform reports one.
pub const SERVER_UUID: &str = "00000000-0000-0000-0000-000000000000";

/// zone-server's state: the instances, the machine behind them, and who
/// may use `vmadm` (badges of the clients named by `vmadm-clients=`).
pub struct ZoneServer<M> {
    service: alcove_rt::Service,
    pub registry: Registry,
    pub host: ZoneHost<M>,
    vmadm_badges: Vec<u64>,
    /// Whether [`ZoneServer::restore`] is still to run before the next
    /// `vmadm` request.
    restore_pending: bool,
    /// Whether the serve loop was asked to wake this server for the
    /// restore ([`Machine::wake_after_reply`]).
    wake_asked: bool,
    /// The badge of the request being served.
    caller: u64,
    /// Each client's last output, for `vmadm.read` (one per client: the
    /// clients are the few `vmadm-clients=` names).
    outputs: BTreeMap<u64, VmadmOutput>,
    /// Each client's staged payload (`vmadm.stage_stdin`), at most
    /// `VMADM_STDIN_MAX` bytes a client, for its next command.
    staged: BTreeMap<u64, String>,
    /// A guest's metadata change whose value comes in pieces
    /// (`mdata.change` with `continues`), by its VMM's badge: internal,
    /// key and the value so far (at most `MAX_META_VALUE` bytes).
    mdata_pieces: BTreeMap<u64, (bool, String, String)>,
    /// The import a client steps (`vmadm.import_begin`/`import_step`):
    /// one on the machine at a time (the pool has one receive).
    import: Option<ImportSlot>,
    /// The command each client waits for (`vmadm.begin`/`step`): a stop
    /// or reboot whose VM is `stopping`. At most one a client.
    waits: BTreeMap<u64, Wait>,
    /// How VMs' transitions ended when [`ops::settle`] ended them, until
    /// their waiter steps (gone with the VM or at the next begin).
    settled: BTreeMap<Uuid, Settled>,
}

/// An import under way, whose it is, and when it was last stepped
/// (`Machine::unix_seconds`).
struct ImportSlot {
    owner: u64,
    job: imgsrc::ImportJob,
    stepped_at: u64,
}

impl<M: Machine> ZoneServer<M> {
    /// A server with no instances whose `vmadm` answers the callers whose
    /// badges are in `vmadm_badges` (others find no such interface).
    pub fn new(machine: M, vmadm_badges: Vec<u64>) -> Self {
        Self {
            service: alcove_rt::Service::new("zone-server", VERSION),
            registry: Registry::new(SERVER_UUID),
            host: ZoneHost::new(machine),
            vmadm_badges,
            restore_pending: false,
            wake_asked: false,
            caller: 0,
            outputs: BTreeMap::new(),
            staged: BTreeMap::new(),
            mdata_pieces: BTreeMap::new(),
            import: None,
            waits: BTreeMap::new(),
            settled: BTreeMap::new(),
        }
    }

    /// Has [`ZoneServer::restore`] run once the first `status` is
    /// answered (at machine boot, init's ready round: the autoboot VMs
    /// start with the machine), or before the first `vmadm` request if
    /// that comes first (a restarted zone-server, which init does not ask
    /// for `status`), rather than at start: init's worker thread, which
    /// makes a VMM's volumes ready before init starts it, is the one that
    /// waits for every server's `status` in the ready round, so a VMM
    /// started before this server answered would never be.
    pub fn restore_before_first_request(&mut self) {
        self.restore_pending = true;
    }

    /// Runs [`ZoneServer::restore`] if it is still pending (logging what
    /// it found wrong).
    pub fn restore_now(&mut self) {
        if core::mem::take(&mut self.restore_pending) {
            for problem in self.restore() {
                log::warn!("{problem}");
            }
        }
    }

    /// Runs `vmadm ARGS...` with `stdin` as the payload, never waiting
    /// for a guest (`vmadm.run`, `vmadm.start`): a stop or reboot that
    /// would is refused, nothing done (`vmadm.begin` runs it).
    pub fn vmadm(&mut self, args: &[String], stdin: String) -> VmadmOutput {
        self.vmadm_command(args, stdin, false).expect("a command that may not wait does not")
    }

    /// Runs `vmadm ARGS...`; `None`: it waits for a guest (`may_wait`,
    /// `vmadm.begin`), which the caller steps (`vmadm.step`).
    fn vmadm_command(&mut self, args: &[String], stdin: String, may_wait: bool) -> Option<VmadmOutput> {
        self.host.stages = host::Stages::default();
        let create = args.first().is_some_and(|a| a == "create");
        if create {
            self.host.stages.mark("received");
        }
        if let Some(why) = request_too_large("vmadm", args, &stdin) {
            return Some(VmadmOutput { stdout: String::new(), stderr: why, code: 1 });
        }
        if create && let Some(refusal) = self.unknown_nic_tag(&stdin) {
            // Refused before the VM is recorded: a refused payload changes
            // nothing (as SmartOS's vmadm checks nic_tags at validation).
            return Some(VmadmOutput { stdout: String::new(), stderr: alloc::format!("Failed to create VM: {refusal}\n"), code: 1 });
        }
        self.restore_now();
        self.refresh();
        if create {
            self.host.stages.mark("refreshed");
        }
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        if !may_wait && let Some(why) = self.would_wait(&argv) {
            return Some(VmadmOutput { stdout: String::new(), stderr: why, code: 1 });
        }
        self.host.stdin = stdin;
        let ran = verbs::begin(&argv, &mut self.registry, &mut self.host);
        self.host.stdin.clear();
        if create {
            // The record written, the answer ready.
            self.host.stages.mark("answered");
            if let Some(line) = self.host.stages.line("zone-server") {
                alcove_rt::println!("{line}");
            }
        }
        match ran {
            verbs::Ran::Done(out) => Some(VmadmOutput { stdout: out.stdout, stderr: out.stderr, code: out.code }),
            verbs::Ran::Waiting(wait) => {
                log::info!("VM {}: {} begun: power button pressed, stopping", wait.uuid, if wait.reboot { "reboot" } else { "stop" });
                self.settled.remove(&wait.uuid);
                self.waits.insert(self.caller, wait);
                None
            }
        }
    }

    /// Why `argv` may not run through `vmadm.run`/`vmadm.start`: a stop
    /// or reboot of a running VM without `-F` waits for its guest.
    fn would_wait(&self, argv: &[&str]) -> Option<String> {
        use alcove_vmadm::argv::{self, Command};
        let (verb, uuid) = match argv::parse(argv) {
            Ok(Command::Stop { uuid, force: false, .. }) => ("stop", uuid),
            Ok(Command::Reboot { uuid, force: false }) => ("reboot", uuid),
            _ => return None,
        };
        let running = self.registry.get(&uuid).is_some_and(|vm| vm.state == alcove_vmadm::state::State::Running);
        running.then(|| {
            alloc::format!(
                "vmadm: {verb} of VM {uuid} waits for its guest: send it with vmadm.begin and vmadm.step \
                 (libipc::interfaces::vmadm_run_whole), not vmadm.run or vmadm.start\n"
            )
        })
    }

    /// `vmadm.begin`: runs `program ARGS...` for the caller; a command
    /// that waits for a guest only begins (`pending`). The caller's
    /// earlier pending command is no longer its to wait for.
    pub fn begin(&mut self, program: &str, args: &[String], stdin: String) -> VmadmStep {
        self.waits.remove(&self.caller);
        let out = match program {
            "vmadm" => match self.vmadm_command(args, stdin, true) {
                Some(out) => out,
                None => return VmadmStep { pending: true, ..VmadmStep::default() },
            },
            "imgadm" => ZoneServer::imgadm(self, args, stdin),
            _ => VmadmOutput {
                stdout: String::new(),
                stderr: alloc::format!("vmadm.begin: no program {program:?} (vmadm or imgadm)\n"),
                code: 2,
            },
        };
        self.keep(out)
    }

    /// `vmadm.step`: whether the caller's pending command is over (its
    /// VM's transition settled now if its time has come); never waits.
    pub fn step(&mut self) -> VmadmStep {
        let Some(wait) = self.waits.get(&self.caller).cloned() else {
            let why = "vmadm: no command of yours is under way (vmadm.begin begins one)\n";
            return self.keep(VmadmOutput { stdout: String::new(), stderr: why.into(), code: 1 });
        };
        self.restore_now();
        self.refresh();
        let settled = self.settled.get(&wait.uuid);
        let Some(out) = verbs::waited(&wait, settled, &self.registry) else {
            return VmadmStep { pending: true, ..VmadmStep::default() };
        };
        self.settled.remove(&wait.uuid);
        self.waits.remove(&self.caller);
        self.keep(VmadmOutput { stdout: out.stdout, stderr: out.stderr, code: out.code })
    }

    /// Keeps `out` for the caller's `vmadm.read`: its code and lengths.
    fn keep(&mut self, out: VmadmOutput) -> VmadmStep {
        let step =
            VmadmStep { pending: false, stdout_bytes: out.stdout.len() as u32, stderr_bytes: out.stderr.len() as u32, code: out.code };
        self.outputs.insert(self.caller, out);
        step
    }

    /// When (ms since 1970) the timer should next wake this server for
    /// [`ZoneServer::tick`]: while a VM is `stopping`, every
    /// [`TRANSITION_POLL_MS`] or at its deadline if that is sooner;
    /// `None` when nothing waits.
    pub fn next_wake_ms(&mut self) -> Option<u64> {
        let (_, soonest) = ops::transitions(&self.registry);
        let poll = self.host.now_ms().saturating_add(TRANSITION_POLL_MS);
        soonest.map(|s| s.min(poll))
    }

    /// The timer's wake-up: the transitions whose time has come end
    /// (the guest powered off, or the deadline passed: halted), with no
    /// request needed.
    pub fn tick(&mut self) {
        if !self.restore_pending {
            self.refresh();
        }
    }
}

impl<M: Machine> ZoneServer<M> {
    /// Runs `imgadm ARGS...` with `stdin` as the manifest of `install`.
    pub fn imgadm(&mut self, args: &[String], stdin: String) -> VmadmOutput {
        if let Some(why) = request_too_large("imgadm", args, &stdin) {
            return VmadmOutput { stdout: String::new(), stderr: why, code: 1 };
        }
        if matches!(args.first().map(String::as_str), Some("import" | "install")) {
            if let Some(refusal) = self.import_refusal() {
                return VmadmOutput { stdout: String::new(), stderr: refusal, code: 1 };
            }
            // An install begun now would end the pool's receive under it.
            self.give_up_import();
        }
        self.restore_now();
        self.refresh();
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = self.host.imgadm(&argv, &stdin);
        VmadmOutput { stdout: out.stdout, stderr: out.stderr, code: out.status }
    }

    /// Why an import or install cannot begin for the caller now: another
    /// client's import was stepped less than [`IMPORT_STALE_SECS`] ago.
    fn import_refusal(&mut self) -> Option<String> {
        let slot = self.import.as_ref()?;
        let now = self.host.machine.unix_seconds();
        (slot.owner != self.caller && now.saturating_sub(slot.stepped_at) < IMPORT_STALE_SECS).then(|| {
            alloc::format!(
                "imgadm: error (ImportInProgress): image {} is being imported by another client; try again when it is done\n",
                slot.job.uuid()
            )
        })
    }

    /// Gives up the import under way, if any (nothing of it installed).
    fn give_up_import(&mut self) {
        if let Some(slot) = self.import.take() {
            log::info!("imgadm: import of {} given up (client {:#x})", slot.job.uuid(), slot.owner);
            slot.job.cancel(&mut self.host.machine);
        }
    }

    /// `vmadm.import_begin`: starts the caller's `imgadm import ...`
    /// (`args` is imgadm's, `import` first),
    /// to be stepped with [`ZoneServer::import_step`].
    pub fn import_begin(&mut self, args: &[String]) -> VmadmImport {
        if let Some(why) = request_too_large("imgadm", args, "") {
            return VmadmImport { stderr: why, code: 1, ..VmadmImport::default() };
        }
        if let Some(refusal) = self.import_refusal() {
            return VmadmImport { stderr: refusal, code: 1, ..VmadmImport::default() };
        }
        // The caller's own earlier import (its client gone), or a stale one.
        self.give_up_import();
        self.restore_now();
        self.refresh();
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let Some(("import", argv)) = argv.split_first().map(|(first, rest)| (*first, rest)) else {
            let why = "imgadm: error (Usage): vmadm.import_begin runs imgadm import [-q] UUID [-S SOURCE_URL] alone\n";
            return VmadmImport { stderr: why.into(), code: 1, ..VmadmImport::default() };
        };
        match imgsrc::import_begin(&mut self.host.machine, argv) {
            Ok((job, stdout)) => {
                let (done_bytes, total_bytes) = job.progress();
                let stepped_at = self.host.machine.unix_seconds();
                self.import = Some(ImportSlot { owner: self.caller, job, stepped_at });
                VmadmImport { running: true, done_bytes, total_bytes, stdout: fit(stdout), ..VmadmImport::default() }
            }
            Err(out) => ended(out, None),
        }
    }

    /// `vmadm.import_step`: the next part of the caller's import.
    pub fn import_step(&mut self) -> VmadmImport {
        let slot = match self.import.take() {
            Some(slot) if slot.owner == self.caller => slot,
            other => {
                self.import = other;
                let why = "imgadm: error: no import of yours is under way (imgadm import UUID begins one)\n";
                return VmadmImport { stderr: why.into(), code: 1, ..VmadmImport::default() };
            }
        };
        let owner = slot.owner;
        match slot.job.step(&mut self.host.machine) {
            imgsrc::Stepped::Running(job) => {
                let (done_bytes, total_bytes) = job.progress();
                let line = job.line().unwrap_or_default().to_string();
                let stepped_at = self.host.machine.unix_seconds();
                self.import = Some(ImportSlot { owner, job: *job, stepped_at });
                VmadmImport { running: true, done_bytes, total_bytes, line, ..VmadmImport::default() }
            }
            imgsrc::Stepped::Done { out, last_line } => ended(out, last_line),
        }
    }

    /// `vmadm console UUID` from the operator shell: vmadm's usage and
    /// failure messages, or where the running VM's serial input goes (its
    /// VMM's console badge) and its alias.
    pub fn console(&mut self, uuid: &str) -> VmadmConsole {
        use alcove_vmadm::argv::{self, ArgError, Command};
        let fail = |code: i32, stderr: String| VmadmConsole { code, stderr, ..VmadmConsole::default() };
        if let Some(why) = oversized("vmadm", uuid.len()) {
            return fail(1, why);
        }
        let uuid = match argv::parse(&["console", uuid]) {
            Ok(Command::Console { uuid }) => uuid,
            Ok(_) => return fail(2, argv::USAGE.into()),
            Err(ArgError::Usage(msg)) => return fail(2, alloc::format!("{msg}\n{}", argv::USAGE)),
            Err(ArgError::Invalid(msg)) => return fail(1, alloc::format!("{msg}\n")),
        };
        self.restore_now();
        // A VM whose guest powered off is stopped before it is looked at.
        self.refresh();
        let unable = |why: String| alloc::format!("Unable to connect to console of VM {uuid}: {why}\n");
        let vm = match alcove_vmadm::ops::console_target(&self.registry, &uuid) {
            Ok(vm) => vm,
            Err(e) => return fail(1, unable(e.reason())),
        };
        let alias = vm.props.get("alias").and_then(serde_json::Value::as_str).unwrap_or_default().to_string();
        match self.host.running.get(&uuid) {
            Some(r) => VmadmConsole {
                code: 0,
                stderr: String::new(),
                target: libipc::interfaces::proc_instance_badge(r.instance),
                alias,
            },
            None => fail(1, unable("its VMM is not known to zone-server".into())),
        }
    }

    /// VMs whose VMM ended by itself (the guest powered off, the VMM
    /// failed) are `stopped` now: the VMM is reaped, its grant revoked and
    /// the record saved, as vmadm shows a VM whose guest halted.
    pub fn refresh(&mut self) {
        // Stopping VMs first: their stop or reboot ends as it says (a
        // reboot's VM starts again).
        for uuid in ops::transitions(&self.registry).0 {
            if let Some(settled) = ops::settle(&mut self.registry, &mut self.host, &uuid) {
                let how = match &settled {
                    Settled::Stopped { forced: false } => String::from("the guest powered off: stopped"),
                    Settled::Stopped { forced: true } => String::from("the guest did not power off by its deadline: halted, stopped"),
                    Settled::Rebooted { forced: false } => String::from("the guest powered off: started again (reboot)"),
                    Settled::Rebooted { forced: true } => {
                        String::from("the guest did not power off by its deadline: halted, started again (reboot)")
                    }
                    Settled::RebootFailed(e) => alloc::format!("reboot: stopped, but did not start again: {e}"),
                    Settled::HaltFailed(e) => alloc::format!("stop: its VMM could not be ended ({e}): stopped all the same"),
                };
                log::info!("VM {uuid}: {how}");
                self.settled.insert(uuid, settled);
            }
        }
        let registry = &self.registry;
        self.settled.retain(|u, _| registry.get(u).is_some());
        // The others whose VMM ended. A VM still stopping is its
        // transition's (its VMM may have ended since `settle` looked: the
        // next look ends it as its stop or reboot says).
        let registry = &self.registry;
        let ended: Vec<Uuid> = self
            .host
            .running
            .iter()
            .filter(|(u, _)| registry.get(u).and_then(ops::Transition::of).is_none())
            .map(|(u, r)| (*u, r.instance))
            .collect::<Vec<_>>()
            .into_iter()
            .filter(|(_, instance)| matches!(self.host.machine.vmm_running(*instance), Ok(false)))
            .map(|(u, _)| u)
            .collect();
        for uuid in ended {
            let Some(r) = self.host.running.remove(&uuid) else { continue };
            let _ = self.host.machine.stop_vmm(r.instance);
            let _ = self.host.give_back(r);
            let now = self.host.now();
            let server_uuid = self.registry.server_uuid.clone();
            if let Some(vm) = self.registry.get_mut(&uuid) {
                let _ = vm.apply(Event::Exited, &now);
                let record = serde_json::Value::Object(vm.to_json(&server_uuid)).to_string();
                let _ = self.host.persist(&uuid, Some(&record));
            }
            log::info!("VM {uuid}: its VMM ended (instance {}): stopped", r.instance);
        }
    }
}

impl<M: Machine> ZoneServer<M> {
    /// Takes the instances back from their records on the pool (at start):
    /// after a zone-server restart the VMMs that still run are found again
    /// (by the instance and grant their record volume names) and stay
    /// `running`; after a machine boot (init runs no VMM of ours) every VM
    /// is stopped and those with `autoboot` start. Returns one message per
    /// record or VM that could not be taken back.
    pub fn restore(&mut self) -> Vec<String> {
        let mut problems = Vec::new();
        let names = match self.host.machine.list_volumes() {
            Ok(n) => n,
            Err(e) => return alloc::vec![alloc::format!("vmadm: cannot list the pool: {e}")],
        };
        let mut records = Vec::new();
        for name in &names {
            let Some(uuid) = name.strip_prefix("zones/").and_then(|n| n.strip_suffix("-vm")).and_then(Uuid::parse) else {
                continue;
            };
            match host::load_record(&mut self.host.machine, name) {
                Ok(Some((r, slots))) => {
                    self.host.records.insert(uuid, slots);
                    records.push((uuid, r));
                }
                Ok(None) => problems.push(alloc::format!("vmadm: {name} has no record (or only a torn one)")),
                Err(e) => problems.push(alloc::format!("vmadm: {name}: {e}")),
            }
        }
        let machine_boot = self.host.machine.vmm_instances().map(|n| n == 0).unwrap_or(true);
        let now = self.host.now();
        let texts: Vec<&str> = records.iter().map(|(_, r)| r.as_str()).collect();
        let (reg, boot, errors) = Registry::restore(SERVER_UUID, &texts, machine_boot, &now);
        self.registry = reg;
        problems.extend(errors);
        if !machine_boot {
            for (uuid, _) in &records {
                let Some(vm) = self.registry.get(uuid) else { continue };
                if !matches!(vm.state, alcove_vmadm::state::State::Running | alcove_vmadm::state::State::Stopping) {
                    continue;
                }
                let vmm = self
                    .host
                    .machine
                    .get_property(&host::record_volume(uuid), host::VMM_PROP)
                    .ok()
                    .flatten()
                    .and_then(|v| host::Running::from_prop(&v));
                match vmm {
                    Some(r) => {
                        // `refresh` stops it if that VMM has ended meanwhile.
                        self.host.running.insert(*uuid, r);
                    }
                    None => {
                        let server_uuid = self.registry.server_uuid.clone();
                        if let Some(vm) = self.registry.get_mut(uuid) {
                            let _ = vm.apply(Event::Exited, &now);
                            let record = serde_json::Value::Object(vm.to_json(&server_uuid)).to_string();
                            let _ = self.host.persist(uuid, Some(&record));
                        }
                        problems.push(alloc::format!("VM {uuid}: its VMM is not recorded: stopped"));
                    }
                }
            }
            self.refresh();
        }
        for uuid in boot {
            if let Err(e) = alcove_vmadm::ops::start(&mut self.registry, &mut self.host, &uuid) {
                problems.push(alloc::format!("VM {uuid}: autoboot failed: {}", e.reason()));
            }
        }
        log::info!(
            "vmadm: {} instance(s) restored ({}), {} running",
            self.registry.len(),
            if machine_boot { "machine boot" } else { "zone-server restart" },
            self.host.running.len()
        );
        problems
    }
}

impl<M: Machine> ZoneServer<M> {
    /// netd was restarted (init says so, `lifecycle.restarted`): the new
    /// netd knows only its `netd.conf`, so every VM whose VMM runs with a
    /// VNIC grant has it made again under the same badge, with the VNICs
    /// its record describes (`vnic.regrant`); its VMM, whose netd
    /// capability carries that badge, then attaches them again. VMs that
    /// are stopped or deleted hold no grant here and get none. Returns one
    /// line per VM (what a log shows).
    pub fn regrant_vnics(&mut self) -> Vec<String> {
        self.restore_now();
        // A VMM that ended meanwhile gives its grant back instead.
        self.refresh();
        let mut said = Vec::new();
        let held: Vec<(Uuid, host::Running)> =
            self.host.running.iter().filter(|(_, r)| r.vnics != 0).map(|(u, r)| (*u, *r)).collect();
        for (uuid, r) in held {
            let Some(vm) = self.registry.get(&uuid) else { continue };
            let json = alcove_vmadm::vmm::vm_config_json(&vm.props, &self.registry.server_uuid);
            let regranted = host::vnic_lines(&json).and_then(|l| self.host.machine.regrant_vnics(r.vnics, &l).map(|made| (made, l.len())));
            let told = match regranted {
                Ok((true, _)) => match self.host.machine.netd_restarted(r.instance) {
                    Ok(()) => String::from("its VMM told"),
                    Err(e) => alloc::format!("its VMM not told: {e}"),
                },
                _ => String::new(),
            };
            let line = match regranted {
                Ok((true, n)) => alloc::format!("VM {uuid}: VNIC grant {:#x} made again ({n} VNICs); {told}", r.vnics),
                Ok((false, _)) => alloc::format!("VM {uuid}: netd holds VNIC grant {:#x} already", r.vnics),
                Err(e) => alloc::format!("VM {uuid}: VNIC grant {:#x} not made again: {e}", r.vnics),
            };
            log::info!("{line}");
            said.push(line);
        }
        said
    }
}

impl<M: Machine> ZoneServer<M> {
    /// A create payload's `nics[i].nic_tag` that netd has no switch for,
    /// named: netd is asked to grant one VNIC per NIC on its nic_tag and
    /// the grant is given back at once (the MAC here is a stand-in, any
    /// other refusal is left to provisioning, which grants the real ones).
    fn unknown_nic_tag(&mut self, payload: &str) -> Option<String> {
        let v: serde_json::Value = serde_json::from_str(payload).ok()?;
        let nics = v.get("nics")?.as_array()?;
        if nics.is_empty() || nics.len() > libipc::interfaces::VNIC_GRANT_MAX as usize {
            return None; // vmadm's validation names the count
        }
        let mut lines = Vec::new();
        for (i, n) in nics.iter().enumerate() {
            let tag = n.get("nic_tag")?.as_str()?;
            if tag.is_empty() || !tag.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
                return Some(alloc::format!("vmadm: property \"nics.{i}.nic_tag\": {tag:?} is no nic_tag or etherstub name"));
            }
            lines.push(alloc::format!("switch={tag} mac=02:00:5e:00:00:{:02x}", i + 1));
        }
        match self.host.machine.grant_vnics(&lines) {
            Ok(badge) => {
                let _ = self.host.machine.revoke_vnics(badge);
                None
            }
            Err(e) if e.contains("\"switch\"") => {
                let i = e.split("VNIC ").nth(1).and_then(|r| r.split(':').next()).unwrap_or("0");
                Some(alloc::format!("vmadm: property \"nics.{i}.nic_tag\": {e}"))
            }
            Err(_) => None,
        }
    }
}

/// At most what one reply carries (an error quoting a source's answer
/// may be long): cut at a character boundary, saying so.
fn fit(mut text: String) -> String {
    let max = VMADM_REPLY_MAX as usize / 2;
    if text.len() > max {
        let mut cut = max - 16;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push_str(" ...(cut)\n");
    }
    text
}

/// An import's end as `vmadm.import_*` answers it.
fn ended(out: alcove_images::cli::Output, last_line: Option<String>) -> VmadmImport {
    VmadmImport {
        running: false,
        done_bytes: 0,
        total_bytes: 0,
        line: last_line.unwrap_or_default(),
        stdout: fit(out.stdout),
        stderr: fit(out.stderr),
        code: out.status,
    }
}

impl<M: Machine> status::Server for ZoneServer<M> {
    /// At machine boot the first `status` is init's ready round: once it
    /// is answered, the restore runs (the autoboot VMs start with the
    /// machine rather than at the first `vmadm` request).
    fn status(&mut self) -> libipc::interfaces::ServerStatus {
        if self.restore_pending && !self.wake_asked {
            self.wake_asked = self.host.machine.wake_after_reply();
        }
        self.service.status()
    }
    fn echo(&mut self, value: u64) -> u64 {
        self.service.echo(value)
    }
}

impl<M: Machine> ZoneServer<M> {
    /// Tells the machine's timer when to wake this server next.
    fn publish_wake(&mut self) {
        let at = self.next_wake_ms();
        self.host.machine.wake_at(at);
    }

    /// Keeps `out` as the caller's last output and answers it, or, when it
    /// is longer than one reply carries, says so (it is read with
    /// `vmadm.read`).
    fn reply(&mut self, out: VmadmOutput) -> VmadmOutput {
        let len = out.stdout.len() + out.stderr.len();
        let code = out.code;
        let short = len <= VMADM_REPLY_MAX as usize;
        let answer = if short { out.clone() } else { VmadmOutput::default() };
        self.outputs.insert(self.caller, out);
        if short {
            return answer;
        }
        VmadmOutput {
            stdout: String::new(),
            stderr: alloc::format!(
                "vmadm: the output is {len} bytes (exit code {code}), more than one reply carries ({VMADM_REPLY_MAX}): read it with vmadm.start and vmadm.read\n"
            ),
            code: 1,
        }
    }
}

impl<M: Machine> ZoneServer<M> {
    /// `stdin` after what the caller staged (`vmadm.stage_stdin`), which
    /// the command takes.
    fn with_staged(&mut self, stdin: String) -> String {
        match self.staged.remove(&self.caller) {
            Some(mut staged) => {
                staged.push_str(&stdin);
                staged
            }
            None => stdin,
        }
    }
}

impl<M: Machine> ZoneServer<M> {
    /// The VM whose running VMM calls with `badge` (its instance's badge,
    /// [`libipc::interfaces::proc_instance_badge`]).
    fn vm_of_vmm(&self, badge: u64) -> Option<Uuid> {
        self.host.running.iter().find(|(_, r)| libipc::interfaces::proc_instance_badge(r.instance) == badge).map(|(u, _)| *u)
    }
}

impl<M: Machine> mdata::Server for ZoneServer<M> {
    fn config(&mut self, offset: u32) -> Result<Vec<u8>, String> {
        let Some(uuid) = self.vm_of_vmm(self.caller) else { return Err("no VM of zone-server's runs with this VMM".into()) };
        let vm = self.registry.get(&uuid).ok_or("the VM is gone")?;
        let json = alcove_vmadm::vmm::vm_config_json(&vm.props, &self.registry.server_uuid);
        let from = (offset as usize).min(json.len());
        let to = (from + libipc::interfaces::MDATA_PIECE_MAX as usize).min(json.len());
        Ok(json.as_bytes()[from..to].to_vec())
    }

    fn change(&mut self, internal: bool, key: String, value: Option<String>, continues: bool) -> Result<u32, String> {
        let badge = self.caller;
        let Some(uuid) = self.vm_of_vmm(badge) else { return Err("no VM of zone-server's runs with this VMM".into()) };
        // The pieces so far, when they are of this change.
        let mut whole = match self.mdata_pieces.remove(&badge) {
            Some((i, k, v)) if i == internal && k == key => Some(v),
            _ => None,
        };
        if let Some(piece) = value {
            if piece.len() > libipc::interfaces::MDATA_PIECE_MAX as usize {
                return Err(alloc::format!("a piece is {} bytes, at most {}", piece.len(), libipc::interfaces::MDATA_PIECE_MAX));
            }
            let v = whole.get_or_insert_with(String::new);
            if v.len() + piece.len() > alcove_vmadm::properties::MAX_META_VALUE {
                return Err(alloc::format!(
                    "the value of {key:?} is over {} bytes, at most {}",
                    v.len() + piece.len(),
                    alcove_vmadm::properties::MAX_META_VALUE
                ));
            }
            v.push_str(&piece);
        } else if continues || whole.is_some() {
            return Err("a removal comes in one call, alone".into());
        }
        let taken = whole.as_ref().map_or(0, String::len) as u32;
        if continues {
            self.mdata_pieces.insert(badge, (internal, key, whole.unwrap_or_default()));
            return Ok(taken);
        }
        let r = ops::guest_metadata(&mut self.registry, &mut self.host, &uuid, internal, &key, whole.as_deref());
        match r {
            Ok(()) => {
                let what = if whole.is_some() { "set" } else { "removed" };
                log::info!("VM {uuid}: its guest {what} {} {key:?} (metadata service)", if internal { "internal_metadata" } else { "customer_metadata" });
                Ok(taken)
            }
            Err(e) => {
                log::warn!("VM {uuid}: its guest's change of {key:?} was not kept: {}", e.reason());
                Err(e.reason())
            }
        }
    }
}

impl<M: Machine> vmadm::Server for ZoneServer<M> {
    fn run(&mut self, args: Vec<String>, stdin: String) -> VmadmOutput {
        let stdin = self.with_staged(stdin);
        let out = self.vmadm(&args, stdin);
        self.reply(out)
    }
    fn imgadm(&mut self, args: Vec<String>, stdin: String) -> VmadmOutput {
        let stdin = self.with_staged(stdin);
        let out = ZoneServer::imgadm(self, &args, stdin);
        self.reply(out)
    }
    fn stage_stdin(&mut self, piece: String, first: bool) -> Result<u32, String> {
        if first {
            self.staged.remove(&self.caller);
        }
        if piece.len() > VMADM_STAGE_PIECE_MAX as usize {
            self.staged.remove(&self.caller);
            return Err(alloc::format!("a staged piece is {} bytes, at most {VMADM_STAGE_PIECE_MAX}", piece.len()));
        }
        let staged = self.staged.entry(self.caller).or_default();
        if staged.len() + piece.len() > VMADM_STDIN_MAX as usize {
            let total = staged.len() + piece.len();
            self.staged.remove(&self.caller);
            return Err(alloc::format!("the payload is over {total} bytes, at most {VMADM_STDIN_MAX}"));
        }
        staged.push_str(&piece);
        Ok(staged.len() as u32)
    }
    fn start(&mut self, program: String, args: Vec<String>, stdin: String) -> VmadmStarted {
        let stdin = self.with_staged(stdin);
        let out = match program.as_str() {
            "vmadm" => self.vmadm(&args, stdin),
            "imgadm" => ZoneServer::imgadm(self, &args, stdin),
            _ => VmadmOutput {
                stdout: String::new(),
                stderr: alloc::format!("vmadm.start: no program {program:?} (vmadm or imgadm)\n"),
                code: 2,
            },
        };
        let kept = self.keep(out);
        VmadmStarted { stdout_bytes: kept.stdout_bytes, stderr_bytes: kept.stderr_bytes, code: kept.code }
    }
    fn console(&mut self, uuid: String) -> VmadmConsole {
        ZoneServer::console(self, &uuid)
    }
    fn import_begin(&mut self, args: Vec<String>) -> VmadmImport {
        ZoneServer::import_begin(self, &args)
    }
    fn import_step(&mut self) -> VmadmImport {
        ZoneServer::import_step(self)
    }
    fn begin(&mut self, program: String, args: Vec<String>, stdin: String) -> VmadmStep {
        let stdin = self.with_staged(stdin);
        ZoneServer::begin(self, &program, &args, stdin)
    }
    fn step(&mut self) -> VmadmStep {
        ZoneServer::step(self)
    }
    fn read(&mut self, stream: VmadmStream, offset: u32) -> Vec<u8> {
        let Some(out) = self.outputs.get(&self.caller) else { return Vec::new() };
        let text = match stream {
            VmadmStream::Stdout => out.stdout.as_bytes(),
            VmadmStream::Stderr => out.stderr.as_bytes(),
        };
        let from = (offset as usize).min(text.len());
        let to = (from + VMADM_CHUNK_BYTES as usize).min(text.len());
        text[from..to].to_vec()
    }
}

impl<M: Machine> libipc::Dispatch for ZoneServer<M> {
    fn dispatch(&mut self, interface: u32, request: &[u8]) -> Result<Vec<u8>, libipc::RemoteError> {
        self.dispatch_from(0, interface, request)
    }

    /// [`WAKE_RESTORE`]: the restore asked for while answering the first
    /// `status` runs now, that answer sent.
    fn notified(&mut self, bits: u64) {
        if bits & WAKE_RESTORE != 0 {
            self.restore_now();
        }
        if bits & WAKE_TIMER != 0 {
            self.tick();
        }
        self.publish_wake();
    }

    fn dispatch_from(&mut self, badge: u64, interface: u32, request: &[u8]) -> Result<Vec<u8>, libipc::RemoteError> {
        if interface == mdata::ID {
            // Only the VMM of a VM zone-server runs: its instance's badge.
            if self.vm_of_vmm(badge).is_none() {
                return Err(libipc::RemoteError::WrongInterface);
            }
            self.caller = badge;
            return mdata::dispatch(self, interface, request);
        }
        if interface == vmadm::ID {
            if !self.vmadm_badges.contains(&badge) {
                // Not one of the control plane's clients: for it there is
                // no such interface.
                return Err(libipc::RemoteError::WrongInterface);
            }
            self.caller = badge;
            let answer = vmadm::dispatch(self, interface, request);
            self.publish_wake();
            return answer;
        }
        status::dispatch(self, interface, request)
    }

    fn peer_restarted(&mut self, server: &str) {
        // netd's grants live in netd's memory alone; storaged's pool grants
        // are not made again here yet.
        if server == "netd" {
            self.regrant_vnics();
        }
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod imgsrc_tests;
