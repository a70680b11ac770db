//! The root task's logic (see main.rs).

use abi::{CapSlot, ObjectType, Rights, PAGE_SIZE};
use alcove_rt::start::{self, Named, StartInfo};
use alcove_rt::Start;
use alloc::string::String;
use alloc::vec::Vec;
use initrd::manifest::{Manifest, Server};
use libipc::interfaces::{MachineInfo, ProcError, ProcState, ProcUsage, SvcError, SvcInfo, SvcState, proc, svc};
use libipc::sys;

use crate::instances::Instances;
use crate::worker::{Done, Job, Lane, WORKER_BIT, Worker};

/// A scratch window in init's address space for filling frames.
const SCRATCH: u64 = 0x0000_5000_0000_0000;

/// init's capability slots: new ones from `next` on, and those given back
/// by [`Slots::delete`] again first. Before slots were given back, every
/// process start took a dozen for good (the process, its frames, the
/// capabilities it was granted through), and after some sixty VM starts
/// init had none of its 1024 left: no VM and no crashed server could start
/// again.
struct Slots {
    next: CapSlot,
    free: Vec<CapSlot>,
}

impl Slots {
    fn new(first: CapSlot) -> Self {
        Self { next: first, free: Vec::new() }
    }

    /// An empty slot: one given back if there is one (still empty: a slot
    /// given back twice is handed out once), else a new one.
    fn next(&mut self) -> CapSlot {
        while let Some(s) = self.free.pop() {
            if sys::cap_identify(s) == Err(abi::Error::EmptySlot) {
                return s;
            }
        }
        let s = self.next;
        self.next += 1;
        s
    }

    /// Deletes the capability in `slot` and takes the slot back.
    fn delete(&mut self, slot: CapSlot) {
        if matches!(sys::cap_delete(slot), Ok(()) | Err(abi::Error::EmptySlot)) && !self.free.contains(&slot) {
            self.free.push(slot);
        }
    }
}

struct Child {
    server: Server,
    process: Option<CapSlot>,
    restarts: u32,
    /// The pool grant (storaged's badge) init made for this server's
    /// volumes, revoked when the process ends.
    grant: Option<u64>,
    /// When its process was started (the kernel's clock, ns since boot).
    started_ns: u64,
    /// A grant job for its volumes is under way: it starts when it ends.
    starting: bool,
    /// `svc.disable`d: kept down until `svc.enable`.
    disabled: bool,
}

impl Child {
    fn new(server: Server) -> Self {
        Self { server, process: None, restarts: 0, grant: None, started_ns: 0, starting: false, disabled: false }
    }

    fn started(&mut self, p: CapSlot) {
        self.process = Some(p);
        self.started_ns = sys::clock_ns().unwrap_or(0);
    }
}

pub fn main(start: Start) -> u64 {
    start::set_name("init");
    alcove_rt::set_console(abi::INIT_SLOT_CONSOLE);
    let archive = initrd::Archive::new(start.info_bytes());
    let manifest = match archive.find(initrd::MANIFEST_BIN) {
        Ok(Some(e)) => match Manifest::decode(e.data) {
            Ok(m) => m,
            Err(e) => {
                log::error!("the manifest is invalid: {e}");
                return 1;
            }
        },
        _ => {
            log::error!("the boot archive has no {}", initrd::MANIFEST_BIN);
            return 1;
        }
    };
    log::info!("system \"{}\": {} servers", manifest.system.name, manifest.servers.len());
    let mut slots = Slots::new(abi::INIT_SLOT_FREE);
    // What `svc.machine` reports, taken before any server is charged:
    // init's budget is then all the memory the kernel left free.
    let machine = MachineInfo {
        cpus: cpus_online(slots.next()),
        memory_kib: sys::budget_info().map(|b| b.limit_bytes / 1024).unwrap_or(0),
        servers: manifest.servers.len() as u32,
    };

    // One endpoint per served name; init keeps the originals, so endpoints
    // outlive the servers behind them and clients' capabilities stay valid
    // across restarts.
    let mut endpoints: Vec<(String, CapSlot)> = Vec::new();
    for (name, _) in manifest.endpoints() {
        let s = slots.next();
        if let Err(e) = sys::create(ObjectType::Endpoint, s, 0) {
            log::error!("cannot create endpoint {name}: {e}");
            return 1;
        }
        endpoints.push((String::from(name), s));
    }
    // init's own endpoint (`proc`): servers that call it start instances
    // of the manifest's servers at run time (zone-server: one VMM per VM).
    let proc_ep = slots.next();
    if let Err(e) = sys::create(ObjectType::Endpoint, proc_ep, 0) {
        log::error!("cannot create the proc endpoint: {e}");
        return 1;
    }
    let watch = slots.next();
    if let Err(e) = sys::create(ObjectType::Notification, watch, 0) {
        log::error!("cannot create the watch notification: {e}");
        return 1;
    }

    // Who calls each endpoint and the badge its calls carry, so a server
    // can tell its clients apart by name (storaged: the control plane).
    let callers: Vec<(String, String, u64)> = manifest
        .servers
        .iter()
        .enumerate()
        .flat_map(|(j, s)| s.calls.iter().map(move |c| (c.clone(), s.name.clone(), j as u64 + 1)))
        .collect();
    let endpoints = Endpoints { slots: endpoints, callers, proc: proc_ep };

    // init's calls to its servers go through its worker threads, so this
    // one serves `proc` from the start (see worker.rs).
    let (worker, teller) = match (Worker::start(Lane::Pool, watch, || slots.next()), Worker::start(Lane::Tell, watch, || slots.next())) {
        (Ok(w), Ok(t)) => (w, t),
        (Err(e), _) | (_, Err(e)) => {
            log::error!("cannot start init's worker threads: {e}");
            return 1;
        }
    };
    let mut children: Vec<Child> =
        manifest.servers.iter().map(|s| Child::new(s.clone())).collect();
    // The templates' code, shared by their instances.
    for c in children.iter().filter(|c| c.server.on_demand) {
        match share_read_only_segments(&archive, &c.server, &mut slots) {
            Ok(bytes) => log::info!("{} KiB of \"{}\"'s code and constants shared by its instances", bytes / 1024, c.server.name),
            Err(e) => log::warn!("\"{}\"'s code is copied for each instance: {e}", c.server.name),
        }
    }
    for (i, c) in children.iter_mut().enumerate() {
        if c.server.on_demand {
            continue; // a template: instances start through `proc`
        }
        if let Some(job) = grant_job(i, &c.server, &endpoints, &mut slots) {
            // Started when storaged has made its volumes ready.
            worker.post(job);
            c.starting = true;
            continue;
        }
        match spawn(&archive, &c.server, i, &endpoints, watch, &mut slots, &Extra::default()) {
            Ok(p) => c.started(p),
            Err(e) => log::error!("cannot start server \"{}\": {e}", c.server.name),
        }
    }
    // Ready when every endpoint answers `status` (a VMM's after its grant).
    worker.post(Job::Round { endpoints: endpoints.slots.clone() });

    // init serves `proc`; the watch notification, bound to its thread,
    // arrives through the same loop (and with it the ready round's end).
    if let Err(e) = sys::thread_bind_notification(abi::INIT_SLOT_THREAD, watch) {
        log::error!("cannot bind the watch notification: {e}");
        return 1;
    }
    let offered = slots.next();
    libipc::request_caps::offer(offered);
    // The PCI configuration ports, for clearing a dead driver's bus
    // mastering (only while that driver is dead; see `servers_ended`).
    let config_ports = enable_config_ports(&mut slots);
    let mut init = Init {
        archive,
        manifest,
        endpoints,
        children,
        watch,
        slots,
        instances: Instances::default(),
        given: Vec::new(),
        spare: Vec::new(),
        machine,
        worker,
        teller,
        ready: false,
        pci: crate::pci::Claims::default(),
        config_ports,
    };
    match libipc::kernel::serve(libipc::cap::Cap::from_slot(proc_ep), &mut init) {
        Ok(never) => match never {},
        Err(e) => {
            log::error!("cannot serve the proc endpoint: {e}");
            1
        }
    }
}

/// For a server on pool volumes, the worker's job that makes them ready
/// and grants them (its storaged endpoint is that grant, made before it
/// starts); `None` for any other server.
fn grant_job(i: usize, server: &Server, endpoints: &Endpoints, slots: &mut Slots) -> Option<Job> {
    if server.volumes.is_empty() || !server.calls.iter().any(|c| c == "storaged") {
        return None;
    }
    let storaged = endpoints.storaged()?;
    Some(Job::Grant {
        child: i,
        name: server.name.clone(),
        volumes: server.volumes.clone(),
        storaged,
        slot: slots.next(),
    })
}

/// The watch bit every instance started through `proc` signals.
const INSTANCE_BIT: u64 = 1 << 63;

/// init after boot: its servers, and the instances it runs for `proc`
/// callers.
struct Init<'a> {
    archive: initrd::Archive<'a>,
    manifest: Manifest,
    endpoints: Endpoints,
    children: Vec<Child>,
    watch: CapSlot,
    slots: Slots,
    instances: Instances<CapSlot>,
    /// Capabilities `proc.give` kept for a caller's next `start`:
    /// (caller, name, init's slot).
    given: Vec<(usize, String, CapSlot)>,
    /// Slots `given` used and gave back (reused, so giving never runs
    /// init's slots out).
    spare: Vec<CapSlot>,
    /// CPUs and memory as found at boot.
    machine: MachineInfo,
    /// init's calls to its servers.
    worker: Worker,
    /// The worker that tells servers of a restart (its own thread: a told
    /// server that is slow to answer delays no grant).
    teller: Worker,
    /// Whether the ready round is over.
    ready: bool,
    /// The PCI functions each driver registered (`proc.pci_claim`).
    pci: crate::pci::Claims,
    /// Whether init could enable the PCI configuration ports for itself.
    config_ports: bool,
}

/// Enables ports 0xCF8..0xCFF for init itself (derived from the root
/// I/O-port capability); false, logged, if the kernel refuses.
fn enable_config_ports(slots: &mut Slots) -> bool {
    let (first, count) = crate::pci::CONFIG_PORTS;
    let s = slots.next();
    let r = sys::create_from(ObjectType::IoPorts, s, u64::from(first) | (u64::from(count) << 16), abi::INIT_SLOT_IOPORTS)
        .and_then(|()| sys::io_port_enable(s));
    match r {
        Ok(()) => true,
        Err(e) => {
            log::error!("PCI configuration ports: cannot enable for init: {e}; a dead driver's devices keep bus mastering");
            false
        }
    }
}

/// Clears the Bus Master Enable bit (command register, bit 2) of the
/// functions `server` held: it ended, and without an IOMMU its devices
/// would go on DMA-ing into the frames the kernel took back. Its other
/// command bits stay as they were; the restarted driver turns bus
/// mastering on again when it takes the function.
///
/// Config space has one user at a time: the dead driver is gone, and the
/// other drivers touch config space only while they start (before they
/// answer `status`); init clears only for a driver that died, before it
/// starts the next one.
fn stop_bus_mastering(server: &str, functions: &[libipc::interfaces::PciFunction]) {
    const COMMAND: u8 = 0x04;
    const BUS_MASTER: u32 = 1 << 2;
    for f in functions {
        let word = libipc::pio::pci_config_read(f.bus, f.device, f.function, COMMAND);
        if word == u32::MAX {
            log::warn!("server \"{server}\" ended: PCI {f} does not answer; bus mastering not cleared");
            continue;
        }
        // The status half (upper 16 bits) is write-1-to-clear: write 0s.
        let command = word & 0xffff & !BUS_MASTER;
        libipc::pio::pci_config_write(f.bus, f.device, f.function, COMMAND, command);
        let after = libipc::pio::pci_config_read(f.bus, f.device, f.function, COMMAND) & 0xffff;
        if after & BUS_MASTER == 0 {
            log::info!("server \"{server}\" ended: PCI {f} bus mastering off (command {:#06x} -> {after:#06x})", word & 0xffff);
        } else {
            log::error!("server \"{server}\" ended: PCI {f} bus mastering still on (command {after:#06x})");
        }
    }
}

/// The CPUs online: the kernel takes a CPU number as a thread's affinity
/// only if that CPU is online, so a thread made (inactive) for the purpose
/// in `slot` is pinned to 0, 1, ... until it refuses; then freed.
fn cpus_online(slot: CapSlot) -> u32 {
    if sys::create(ObjectType::Thread, slot, u64::from(abi::INIT_SLOT_SELF)).is_err() {
        return 0;
    }
    let mut n = 0;
    while n < 1024 && sys::thread_set_priority(slot, 1, Some(n)).is_ok() {
        n += 1;
    }
    let _ = sys::cap_delete(slot);
    n
}

/// The `svc` handlers, for the caller `caller` (from its badge).
struct SvcCall<'a, 'b> {
    init: &'a mut Init<'b>,
    caller: Option<usize>,
}

impl svc::Server for SvcCall<'_, '_> {
    fn services(&mut self) -> Vec<SvcInfo> {
        self.init.services()
    }

    fn machine(&mut self) -> MachineInfo {
        self.init.machine.clone()
    }

    fn restart(&mut self, name: String) -> Result<(), SvcError> {
        let i = crate::svcadm::check(&self.init.manifest, self.caller, &name)?;
        let c = &self.init.children[i];
        if c.disabled {
            return Err(SvcError::Refused { name, why: "disabled (svcadm enable starts it)".into() });
        }
        if c.starting {
            return Err(SvcError::Refused { name, why: "starting (its volumes are being granted)".into() });
        }
        log::warn!("server \"{name}\": restart asked by \"{}\"", self.who());
        self.init.end_server(i);
        self.init.start_server(i).map_err(|why| SvcError::Start { name: name.clone(), why })?;
        self.init.tell_callers(i);
        Ok(())
    }

    fn disable(&mut self, name: String) -> Result<(), SvcError> {
        let i = crate::svcadm::check(&self.init.manifest, self.caller, &name)?;
        if self.init.children[i].disabled {
            return Ok(());
        }
        log::warn!("server \"{name}\": disabled by \"{}\"", self.who());
        self.init.children[i].disabled = true;
        self.init.end_server(i);
        Ok(())
    }

    fn enable(&mut self, name: String) -> Result<(), SvcError> {
        let i = crate::svcadm::check(&self.init.manifest, self.caller, &name)?;
        let c = &mut self.init.children[i];
        let was_disabled = core::mem::replace(&mut c.disabled, false);
        if c.process.is_some() || c.starting {
            return Ok(());
        }
        log::warn!(
            "server \"{name}\": enabled by \"{}\" ({})",
            self.who(),
            if was_disabled { "was disabled" } else { "was in maintenance" }
        );
        self.init.start_server(i).map_err(|why| SvcError::Start { name: name.clone(), why })?;
        self.init.tell_callers(i);
        Ok(())
    }
}

impl SvcCall<'_, '_> {
    fn who(&self) -> &str {
        self.caller.and_then(|c| self.init.manifest.servers.get(c)).map_or("?", |s| s.name.as_str())
    }
}

impl Init<'_> {
    fn services(&mut self) -> Vec<SvcInfo> {
        let mut held = alloc::vec![0u32; self.children.len()];
        for i in self.instances.live_mut() {
            if let Some(n) = held.get_mut(i.template) {
                *n += 1;
            }
        }
        self.children
            .iter()
            .enumerate()
            .map(|(t, c)| {
                let running = c.process.and_then(process_state) == Some(ProcState::Running);
                let state = if c.server.on_demand {
                    SvcState::OnDemand
                } else if running {
                    SvcState::Online
                } else if c.disabled {
                    SvcState::Disabled
                } else {
                    SvcState::Maintenance
                };
                let started_ns = if running { c.started_ns } else { 0 };
                SvcInfo { name: c.server.name.clone(), state, restarts: c.restarts, instances: held[t], started_ns }
            })
            .collect()
    }
}

impl Init<'_> {
    /// The worker finished a job: a server whose volumes are granted now
    /// starts (without a storaged endpoint should the grant have failed:
    /// its disks fail to open, the reason is logged here).
    fn worker_done(&mut self, done: Done) {
        let (i, slot, result) = match done {
            Done::Round => {
                self.ready = true;
                return;
            }
            Done::Grant { child, slot, result } => (child, slot, result),
        };
        let Some(c) = self.children.get_mut(i) else { return };
        c.starting = false;
        if c.disabled {
            // Disabled while its grant was being made: not started.
            if let Ok(badge) = result
                && let Some(storaged) = self.endpoints.storaged()
            {
                let _ = sys::cap_delete(slot);
                self.worker.post(Job::Revoke { server: c.server.name.clone(), storaged, badge });
            }
            return;
        }
        let volumes = match result {
            Ok(badge) => Some((slot, badge)),
            Err(why) => {
                log::error!("server \"{}\": {why}; it gets no storaged endpoint", c.server.name);
                None
            }
        };
        let extra = Extra { volumes, ..Extra::default() };
        match spawn(&self.archive, &c.server, i, &self.endpoints, self.watch, &mut self.slots, &extra) {
            Ok(p) => c.started(p),
            Err(e) => log::error!("cannot start server \"{}\": {e}", c.server.name),
        }
        // The VMM holds its own copy of the grant's endpoint now.
        if volumes.is_some() {
            let _ = sys::cap_delete(slot);
            c.grant = volumes.map(|(_, badge)| badge);
        }
    }

    /// A server (or instance) ended: restart what its policy allows.
    fn servers_ended(&mut self, bits: u64) {
        let mut restarted = Vec::new();
        for i in 0..self.children.len() {
            if bits & (1 << (i % 64)) == 0 {
                continue;
            }
            let Some(p) = self.children[i].process else { continue };
            let how = match sys::process_info(p) {
                Ok(info) => match info.state {
                    abi::ProcessState::Running => continue,
                    abi::ProcessState::Exited => alloc::format!("exited with code {}", info.code),
                    abi::ProcessState::Faulted => alloc::format!("faulted (vector {})", info.code),
                },
                Err(e) => alloc::format!("is gone ({e})"),
            };
            self.slots.delete(p);
            self.children[i].process = None;
            self.release(i);
            let c = &mut self.children[i];
            if c.server.restart.allows(c.restarts) {
                c.restarts += 1;
                log::warn!("server \"{}\" {how}; restarting ({})", c.server.name, c.restarts);
                restarted.push(i);
                if let Err(e) = self.start_server(i) {
                    log::error!("cannot restart \"{}\": {e}", self.children[i].server.name);
                }
            } else {
                log::warn!("server \"{}\" {how}; not restarting (restart policy)", c.server.name);
            }
        }
        for i in restarted {
            self.tell_callers(i);
        }
        if bits & INSTANCE_BIT != 0 {
            for ins in self.instances.live_mut() {
                if let Some(state) = process_state(ins.process)
                    && state != ProcState::Running
                {
                    log::info!("instance {} ended: {state:?}", ins.id);
                    ins.ended = Some(state);
                }
            }
        }
    }
}

impl Init<'_> {
    /// What server `i` held beyond its process, now that it has ended: its
    /// devices stop DMA before anything else reuses its memory or a new
    /// instance of it takes them, and its pool grant goes (storaged drops
    /// the grant's state and closes its rings; a restart gets a new one).
    fn release(&mut self, i: usize) {
        // Start data it staged for a start it will never make.
        self.instances.drop_start_data(i);
        // And what it gave for that start (`proc.give`): a new instance of
        // the server must not start a VMM holding the grant (another VM's
        // VNICs) or control notification its predecessor gave.
        self.drop_given_of(i);
        let Some(c) = self.children.get_mut(i) else { return };
        let held = self.pci.release(i);
        if !held.is_empty() {
            if self.config_ports {
                stop_bus_mastering(&c.server.name, &held);
            } else {
                log::error!("server \"{}\" ended: cannot clear bus mastering of its {} PCI functions", c.server.name, held.len());
            }
        }
        if let Some(badge) = c.grant.take()
            && let Some(storaged) = self.endpoints.storaged()
        {
            self.worker.post(Job::Revoke { server: c.server.name.clone(), storaged, badge });
        }
    }

    /// Deletes init's copies of what server `owner` gave (`proc.give`).
    fn drop_given_of(&mut self, owner: usize) {
        let spare = &mut self.spare;
        self.given.retain(|(o, _, s)| {
            if *o == owner {
                let _ = sys::cap_delete(*s);
                spare.push(*s);
            }
            *o != owner
        });
    }

    /// Starts server `i` (again): at once, or, for a server on pool
    /// volumes, when storaged has made a new grant.
    fn start_server(&mut self, i: usize) -> Result<(), String> {
        let Some(c) = self.children.get_mut(i) else { return Err("no such server".into()) };
        if let Some(job) = grant_job(i, &c.server, &self.endpoints, &mut self.slots) {
            self.worker.post(job);
            c.starting = true;
            return Ok(());
        }
        let p = spawn(&self.archive, &c.server, i, &self.endpoints, self.watch, &mut self.slots, &Extra::default())?;
        c.started(p);
        Ok(())
    }

    /// Ends server `i`'s process now (svcadm): the kernel ends a process
    /// when the last capability to it goes, as `proc.stop` ends an
    /// instance; what it held is released as for a server that died.
    fn end_server(&mut self, i: usize) {
        let Some(p) = self.children.get_mut(i).and_then(|c| c.process.take()) else { return };
        let _ = sys::cap_revoke(p);
        self.slots.delete(p);
        self.release(i);
    }

    /// Server `i` was restarted: each running server whose manifest entry
    /// `calls` one of its endpoints and serves one of its own is told so
    /// (`lifecycle.restarted(ENDPOINT)`, on the teller thread: init's main
    /// thread never calls a server), so it makes again what it had made
    /// there (zone-server: the VNIC grants of its running VMs in netd).
    fn tell_callers(&mut self, i: usize) {
        let Some(restarted) = self.children.get(i) else { return };
        for endpoint in &restarted.server.serves {
            let callers: Vec<(String, CapSlot)> = self
                .children
                .iter()
                .enumerate()
                .filter(|(j, c)| *j != i && c.process.is_some() && c.server.calls.contains(endpoint))
                .filter_map(|(_, c)| {
                    let own = c.server.serves.first()?;
                    let slot = self.endpoints.slots.iter().find(|(n, _)| n == own)?.1;
                    Some((c.server.name.clone(), slot))
                })
                .collect();
            if !callers.is_empty() {
                self.teller.post(Job::Restarted { endpoint: endpoint.clone(), callers });
            }
        }
    }
}

/// A process's state, `None` if the kernel does not answer.
fn process_state(p: CapSlot) -> Option<ProcState> {
    let info = sys::process_info(p).ok()?;
    Some(match info.state {
        abi::ProcessState::Running => ProcState::Running,
        abi::ProcessState::Exited => ProcState::Exited { code: info.code },
        abi::ProcessState::Faulted => ProcState::Faulted { vector: info.code },
    })
}

/// The `proc` handlers, for the caller `owner` (from its badge).
struct ProcCall<'a, 'b> {
    init: &'a mut Init<'b>,
    owner: Option<usize>,
}

impl proc::Server for ProcCall<'_, '_> {
    fn start(&mut self, template: String, start_data: Vec<u8>, budget_kib: u32) -> Result<u32, ProcError> {
        let given = libipc::request_caps::take();
        // What `append_start_data` staged comes first; it is used or, when
        // the start fails, dropped (taken out here either way).
        let data = self.init.instances.take_start_data(self.owner, start_data);
        let r = data.and_then(|data| self.start_with(&template, data, budget_kib, given));
        if let Some(slot) = given {
            // The instance got its own copy; init keeps none.
            let _ = sys::cap_delete(slot);
            libipc::request_caps::offer(slot);
        }
        // What `give` kept is used or, when the start failed, dropped.
        self.drop_given();
        r
    }

    fn give(&mut self, name: String) -> Result<(), ProcError> {
        let sent = libipc::request_caps::take();
        let r = self.give_with(&name, sent);
        if let (Err(_), Some(slot)) = (&r, sent) {
            let _ = sys::cap_delete(slot);
            libipc::request_caps::offer(slot);
        }
        r
    }

    fn state(&mut self, instance: u32) -> Result<ProcState, ProcError> {
        let ins = self.init.instances.get(self.owner, instance)?;
        Ok(ins.ended.or_else(|| process_state(ins.process)).unwrap_or(ProcState::Exited { code: 0 }))
    }

    fn stop(&mut self, instance: u32) -> Result<ProcState, ProcError> {
        let ins = self.init.instances.remove(self.owner, instance)?;
        let before = ins.ended.or_else(|| process_state(ins.process)).unwrap_or(ProcState::Exited { code: 0 });
        // Revoking takes every capability derived from init's (the
        // instance's own, and copies it handed out); with the last one
        // gone the kernel ends the process and frees its memory.
        let _ = sys::cap_revoke(ins.process);
        self.init.slots.delete(ins.process);
        if let Some(control) = ins.control {
            let _ = sys::cap_delete(control);
            self.init.spare.push(control);
        }
        log::info!("instance {instance} stopped ({before:?} before)");
        Ok(before)
    }

    fn pci_claim(&mut self, function: libipc::interfaces::PciFunction) -> Result<(), ProcError> {
        let r = self.init.pci.claim(&self.init.manifest, self.owner, function);
        match (&r, self.owner.and_then(|o| self.init.manifest.servers.get(o))) {
            (Ok(()), Some(s)) => log::info!("server \"{}\" holds PCI {function}", s.name),
            (Err(e), _) => log::warn!("{e}"),
            _ => {}
        }
        r
    }

    fn control(&mut self, instance: u32) -> Result<(), ProcError> {
        let slot = self.init.instances.control(self.owner, instance)?;
        libipc::reply_caps::attach(libipc::cap::Cap::<libipc::cap::Notification>::from_slot(slot))
            .map_err(|e| ProcError::BadCapability { name: "control".into(), why: alloc::format!("{e}") })
    }

    fn append_start_data(&mut self, offset: u32, chunk: Vec<u8>) -> Result<u32, ProcError> {
        let init = &mut *self.init;
        let r = init.instances.append_start_data(&init.manifest, self.owner, offset, &chunk);
        if let (Err(e), Some(s)) = (&r, self.owner.and_then(|o| init.manifest.servers.get(o))) {
            log::warn!("server \"{}\": {e}", s.name);
        }
        r
    }

    fn usage(&mut self) -> ProcUsage {
        let mut u = self.init.instances.usage(&self.init.manifest, self.owner);
        u.init_used_kib = sys::budget_info().map(|b| b.used_bytes / 1024).unwrap_or(0);
        u.init_ready = self.init.ready;
        u
    }
}

impl ProcCall<'_, '_> {
    /// `give`: keeps `sent` (init's slot) as `name` for the caller's next
    /// `start`; on `Err` the caller of this frees `sent`.
    fn give_with(&mut self, name: &str, sent: Option<CapSlot>) -> Result<(), ProcError> {
        let bad = |why: &str| ProcError::BadCapability { name: crate::instances::clip(name), why: why.into() };
        let owner = self.owner.ok_or_else(|| bad("this client starts no instances"))?;
        if self.init.manifest.servers[owner].spawns.is_empty() {
            return Err(bad("this client starts no instances (manifest: spawns)"));
        }
        let Some(&(_, kind)) = libipc::interfaces::PROC_GIVE_NAMES.iter().find(|(n, _)| *n == name) else {
            return Err(bad("not a name an instance takes (netd, control)"));
        };
        let slot = sent.ok_or_else(|| bad("no capability was sent with the request"))?;
        // What the instance needs of it: to wait on a notification, to
        // call through an endpoint.
        let needs = if kind == ObjectType::Endpoint { Rights::SEND } else { Rights::READ };
        let rights = match sys::cap_identify(slot) {
            Ok(c) if c.object_type == kind && c.rights.contains(needs) => c.rights,
            Ok(c) if c.object_type == kind => return Err(bad("the capability sent lacks the right the instance needs")),
            _ => {
                return Err(bad(if kind == ObjectType::Endpoint {
                    "the capability sent is not an endpoint"
                } else {
                    "the capability sent is not a notification"
                }));
            }
        };
        // Init keeps it in a slot of its own (the request's slot is reused).
        let kept = self.init.spare.pop().unwrap_or_else(|| self.init.slots.next());
        if let Err(err) = sys::cap_copy(slot, kept, rights, 0) {
            self.init.spare.push(kept);
            return Err(bad(&alloc::format!("cannot keep it: {err}")));
        }
        let _ = sys::cap_delete(slot);
        libipc::request_caps::offer(slot);
        if let Some(old) = self.init.given.iter().position(|(o, n, _)| *o == owner && n == name) {
            let (_, _, s) = self.init.given.remove(old);
            let _ = sys::cap_delete(s);
            self.init.spare.push(s);
        }
        self.init.given.push((owner, name.into(), kept));
        Ok(())
    }

    /// Deletes init's copies of what the caller gave (after a `start`).
    fn drop_given(&mut self) {
        if let Some(owner) = self.owner {
            self.init.drop_given_of(owner);
        }
    }

    fn start_with(
        &mut self,
        template: &str,
        start_data: Vec<u8>,
        budget_kib: u32,
        given: Option<CapSlot>,
    ) -> Result<u32, ProcError> {
        let asked = alcove_rt::clock_ns();
        let init = &mut *self.init;
        let t = init.instances.check_start(&init.manifest, self.owner, template, start_data.len(), budget_kib)?;
        if let Some(slot) = given
            && sys::cap_identify(slot).map(|c| c.object_type) != Ok(ObjectType::Endpoint)
        {
            return Err(ProcError::Start { why: "the capability sent with start is not an endpoint".into() });
        }
        let owner = self.owner.ok_or(ProcError::NotPermitted { template: template.into() })?;
        let mut server = init.manifest.servers[t].clone();
        server.budget_kib = budget_kib;
        server.serves.clear();
        server.restart = initrd::manifest::Restart::Never;
        let extra = Extra {
            files: alloc::vec![(String::from("vm.json"), start_data)],
            storaged: given,
            named: init.given.iter().filter(|(o, _, _)| *o == owner).map(|(_, n, s)| (n.clone(), *s)).collect(),
            name: Some(alloc::format!("{}-{}", server.name, init.instances.next_id())),
            watch_bit: Some(INSTANCE_BIT),
            instance: true,
            badge: Some(libipc::interfaces::proc_instance_badge(init.instances.next_id())),
            // An instance's grant is its starter's (zone-server's), given
            // as `storaged` above.
            volumes: None,
            marks: core::cell::RefCell::new(alloc::vec![("asked", asked)]),
        };
        let p = spawn(&init.archive, &server, t, &init.endpoints, init.watch, &mut init.slots, &extra)
            .map_err(|why| ProcError::Start { why })?;
        extra.mark("resumed");
        let id = init.instances.add(owner, t, budget_kib, p);
        // init keeps the right to signal its control notification, for
        // `proc.control` (a restarted starter gets it back from there).
        if let Some((_, given)) = extra.named.iter().find(|(n, _)| n == "control") {
            let kept = init.spare.pop().unwrap_or_else(|| init.slots.next());
            match sys::cap_copy(*given, kept, Rights::WRITE, 0) {
                Ok(()) => init.instances.set_control(id, kept),
                Err(err) => {
                    init.spare.push(kept);
                    log::warn!("instance {id}: cannot keep its control notification: {err}");
                }
            }
        }
        log::info!(
            "instance {id} of \"{template}\" started for \"{}\" ({budget_kib} KiB)",
            init.manifest.servers[owner].name
        );
        // When each stage of the start ended, for `cargo xtask bench --case
        // bench/vmadm-create` (the instance's own line names it too).
        let mut line = alloc::format!("init: start stages ({})", extra.name.as_deref().unwrap_or("?"));
        for (stage, ns) in extra.marks.borrow().iter() {
            line.push_str(&alloc::format!(" {stage}={ns}"));
        }
        alcove_rt::println!("{line}");
        Ok(id)
    }
}

impl libipc::Dispatch for Init<'_> {
    fn dispatch(&mut self, interface: u32, request: &[u8]) -> Result<Vec<u8>, libipc::RemoteError> {
        self.dispatch_from(0, interface, request)
    }

    fn dispatch_from(&mut self, badge: u64, interface: u32, request: &[u8]) -> Result<Vec<u8>, libipc::RemoteError> {
        let owner = crate::instances::caller(&self.manifest, badge);
        if interface == svc::ID {
            return svc::dispatch(&mut SvcCall { init: self, caller: owner }, interface, request);
        }
        proc::dispatch(&mut ProcCall { init: self, owner }, interface, request)
    }

    fn notified(&mut self, bits: u64) {
        if bits & WORKER_BIT != 0 {
            for done in self.worker.finished() {
                self.worker_done(done);
            }
        }
        self.servers_ended(bits);
    }
}

/// What an instance gets beyond its template's capabilities.
#[derive(Default)]
struct Extra {
    /// Boot files given as bytes (`vm.json`).
    files: Vec<(String, Vec<u8>)>,
    /// An endpoint that stands in for the template's `storaged` (a pool
    /// grant's).
    storaged: Option<CapSlot>,
    /// Capabilities `proc.give` kept, by name ([`libipc::interfaces::PROC_GIVE_NAMES`]).
    named: Vec<(String, CapSlot)>,
    /// The instance's name in its start-up information.
    name: Option<String>,
    /// The watch bit its end signals (default: its server's).
    watch_bit: Option<u64>,
    /// An instance started through `proc` (not a manifest server).
    instance: bool,
    /// The badge of the endpoints it calls (default: its server's index
    /// plus one); an instance's is its own
    /// ([`libipc::interfaces::proc_instance_badge`]), so the servers it
    /// calls (the console: `vmadm console`) tell instances apart.
    badge: Option<u64>,
    /// The pool grant made for the server's volumes (the worker's): init's
    /// slot of its capability, and its badge.
    volumes: Option<(CapSlot, u64)>,
    /// When each stage of an instance's start ended (the kernel's clock).
    marks: core::cell::RefCell<Vec<(&'static str, u64)>>,
}

impl Extra {
    /// Notes the end of a start's stage (instances only).
    fn mark(&self, stage: &'static str) {
        if self.instance {
            self.marks.borrow_mut().push((stage, alcove_rt::clock_ns()));
        }
    }
}

/// The endpoints init made (name, slot), and their callers (endpoint,
/// caller's name, the badge its calls carry).
struct Endpoints {
    slots: Vec<(String, CapSlot)>,
    callers: Vec<(String, String, u64)>,
    /// init's own `proc` endpoint.
    proc: CapSlot,
}

impl Endpoints {
    /// init's own (unbadged) storaged endpoint: init may use the pool
    /// interface.
    fn storaged(&self) -> Option<CapSlot> {
        self.slots.iter().find(|(n, _)| n == "storaged").map(|(_, s)| *s)
    }
}

/// Builds and starts one server's process.
fn spawn(
    archive: &initrd::Archive<'_>,
    server: &Server,
    index: usize,
    all: &Endpoints,
    watch: CapSlot,
    slots: &mut Slots,
    extra: &Extra,
) -> Result<CapSlot, String> {
    let path = initrd::binary_path(&server.binary);
    let elf = match archive.find(&path) {
        Ok(Some(e)) => e.data,
        _ => return Err(alloc::format!("no {path} in the boot archive")),
    };
    let plan = initrd::elf::load_plan(elf).map_err(|e| alloc::format!("{path}: {e:?}"))?;
    let proc = slots.next();
    let budget = u64::from(server.budget_kib) * 1024;
    sys::create_from(ObjectType::Process, proc, budget, abi::CSPACE_SLOTS).map_err(|err| match err {
        // A budget shortfall names both figures: the manifest asked for
        // more than init has left to carve from (the machine's memory).
        abi::Error::OutOfBudget => {
            let left = sys::budget_info().map(|b| b.limit_bytes.saturating_sub(b.used_bytes) / 1024).unwrap_or(0);
            alloc::format!(
                "create process: budget_kib {} KiB is more than init has left ({left} KiB): {err}",
                server.budget_kib
            )
        }
        _ => alloc::format!("create process: {err}"),
    })?;
    extra.mark("process");
    let built = build(Parts { archive, server, index, all, watch, extra, elf, plan: &plan }, slots, proc);
    if built.is_err() {
        // A half-built process is ended and freed, not left behind.
        let _ = sys::cap_revoke(proc);
        slots.delete(proc);
    }
    built.map(|()| proc)
}

/// What [`build`] builds a process from.
struct Parts<'a> {
    archive: &'a initrd::Archive<'a>,
    server: &'a Server,
    index: usize,
    all: &'a Endpoints,
    watch: CapSlot,
    extra: &'a Extra,
    elf: &'a [u8],
    plan: &'a initrd::elf::LoadPlan,
}

/// Fills process `proc` (made by [`spawn`]) and starts its thread.
fn build(parts: Parts<'_>, slots: &mut Slots, proc: CapSlot) -> Result<(), String> {
    let Parts { archive, server, index, all, watch, extra, elf, plan } = parts;
    let endpoints = &all.slots[..];
    fn e(what: &'static str) -> impl Fn(abi::Error) -> String {
        move |err| alloc::format!("{what}: {err}")
    }

    // Segments: a template's read-only ones are the frames made at boot
    // (`share_read_only_segments`), mapped as they are; the others are
    // filled through the scratch window, then mapped in.
    let path = initrd::binary_path(&server.binary);
    for seg in plan.segments() {
        if let Some(frame) = shared_frame(&path, seg) {
            sys::map(proc, frame, seg.pages().start, seg.rights()).map_err(e("map shared segment"))?;
            continue;
        }
        let frame = filled_frame(elf, seg, slots)?;
        sys::map(proc, frame, seg.pages().start, seg.rights()).map_err(e("map segment"))?;
        slots.delete(frame); // the mapping keeps the frame
    }
    extra.mark("elf");
    let rw = Rights::READ | Rights::WRITE;
    let stack = slots.next();
    sys::create(ObjectType::Frame, stack, start::STACK_PAGES).map_err(e("stack"))?;
    sys::map(proc, stack, start::STACK_TOP - start::STACK_PAGES * PAGE_SIZE, rw).map_err(e("map stack"))?;
    slots.delete(stack);
    let ipcb = slots.next();
    sys::create(ObjectType::Frame, ipcb, 1).map_err(e("ipc buffer"))?;
    sys::map(proc, ipcb, start::IPC_BUFFER_ADDR, rw).map_err(e("map ipc buffer"))?;
    slots.delete(ipcb);

    // Capabilities, exactly as the manifest says.
    let name = extra.name.clone().unwrap_or_else(|| server.name.clone());
    let mut info = StartInfo { name, args: server.args.clone(), ..StartInfo::default() };
    let console_rights = if server.machine_exit { Rights::WRITE | Rights::MANAGE } else { Rights::WRITE };
    sys::cap_grant(proc, abi::INIT_SLOT_CONSOLE, start::SLOT_CONSOLE, console_rights).map_err(e("grant console"))?;
    sys::cap_grant(proc, proc, start::SLOT_SELF, Rights::MANAGE).map_err(e("grant self"))?;
    let mut next_slot = 16;
    for name in &server.serves {
        let Some((_, ep)) = endpoints.iter().find(|(n, _)| n == name) else { continue };
        sys::cap_grant(proc, *ep, next_slot, Rights::SEND | Rights::RECV | Rights::GRANT).map_err(e("grant served endpoint"))?;
        info.serves.push(Named { name: name.clone(), slot: next_slot });
        next_slot += 1;
        info.clients.extend(all.callers.iter().filter(|(ep, _, _)| ep == name).cloned());
    }
    if extra.instance {
        // What the starter gave, under its names; the template's own
        // endpoints of those names are never the instance's.
        for (name, given) in &extra.named {
            // Waiting (control) or calling (netd), and passing on what it
            // sends when the giver allowed that; `give` checked the rest.
            let wanted = if name == "control" { Rights::READ } else { Rights::SEND | Rights::GRANT };
            let held = sys::cap_identify(*given).map(|c| c.rights).unwrap_or(Rights::NONE);
            let rights = Rights(wanted.0 & held.0);
            sys::cap_grant(proc, *given, next_slot, rights).map_err(e("grant a given capability"))?;
            info.calls.push(Named { name: name.clone(), slot: next_slot });
            next_slot += 1;
        }
    }
    for name in &server.calls {
        if extra.instance && libipc::interfaces::PROC_GIVE_NAMES.iter().any(|(n, _)| n == name) {
            continue;
        }
        let ep = if name == initrd::manifest::PROC_ENDPOINT {
            &all.proc
        } else if extra.instance && name == "storaged" {
            // An instance reaches storaged only through the endpoint its
            // starter sent (a pool grant's, badged by storaged), never
            // through the template's own: without one it has none.
            let Some(given) = extra.storaged else { continue };
            sys::cap_grant(proc, given, next_slot, Rights::SEND | Rights::GRANT).map_err(e("grant the given endpoint"))?;
            info.calls.push(Named { name: name.clone(), slot: next_slot });
            next_slot += 1;
            continue;
        } else {
            let Some((_, ep)) = endpoints.iter().find(|(n, _)| n == name) else { continue };
            ep
        };
        if name == "storaged" && !server.volumes.is_empty() {
            // A VMM on pool volumes: its storaged endpoint is a grant for
            // exactly its volumes (made ready first), not the machine's
            // disks. Should that fail, it gets no storaged endpoint at all
            // and its disks fail to open; the reason is logged here.
            if let Some((granted, _)) = extra.volumes {
                sys::cap_grant(proc, granted, next_slot, Rights::SEND | Rights::GRANT)
                    .map_err(e("grant the volumes' endpoint"))?;
                info.calls.push(Named { name: name.clone(), slot: next_slot });
                next_slot += 1;
            }
            continue;
        }
        // Badged with the caller's identity, so the server knows who calls.
        let tmp = slots.next();
        let badge = extra.badge.unwrap_or(index as u64 + 1);
        sys::cap_copy(*ep, tmp, Rights::SEND | Rights::GRANT, badge).map_err(e("badge endpoint"))?;
        let r = sys::cap_grant(proc, tmp, next_slot, Rights::SEND | Rights::GRANT);
        slots.delete(tmp);
        r.map_err(e("grant called endpoint"))?;
        info.calls.push(Named { name: name.clone(), slot: next_slot });
        next_slot += 1;
    }
    for &line in &server.irqs {
        sys::cap_grant(proc, abi::INIT_SLOT_IRQ_BASE + u32::from(line), next_slot, Rights::MANAGE)
            .map_err(e("grant irq"))?;
        info.irqs.push((line, next_slot));
        next_slot += 1;
    }
    for r in &server.ioports {
        let tmp = slots.next();
        sys::create_from(ObjectType::IoPorts, tmp, u64::from(r.first) | (u64::from(r.count) << 16), abi::INIT_SLOT_IOPORTS)
            .map_err(e("derive ioports"))?;
        let g = sys::cap_grant(proc, tmp, next_slot, Rights::MANAGE);
        slots.delete(tmp);
        g.map_err(e("grant ioports"))?;
        info.ioports.push((r.first, r.count, next_slot));
        next_slot += 1;
    }

    for d in &server.device_memory {
        let tmp = slots.next();
        sys::create_device_frame(tmp, d.phys_base, d.bytes.div_ceil(PAGE_SIZE), abi::INIT_SLOT_DEVICE_MEMORY)
            .map_err(e("device memory"))?;
        let g = sys::cap_grant(proc, tmp, next_slot, Rights::READ | Rights::WRITE);
        slots.delete(tmp);
        g.map_err(e("grant device memory"))?;
        info.device_memory.push((d.phys_base, d.bytes, next_slot));
        next_slot += 1;
    }

    if server.pci_bars {
        sys::cap_grant(proc, abi::INIT_SLOT_DEVICE_MEMORY, next_slot, Rights::MANAGE)
            .map_err(e("grant the device-memory capability"))?;
        info.device_memory_root = Some(next_slot);
        next_slot += 1;
    }

    extra.mark("caps");
    let given = extra.files.iter().map(|(n, d)| Ok((n, &d[..])));
    let archived = server.files.iter().map(|name| {
        let path = initrd::file_path(name);
        match archive.find(&path) {
            Ok(Some(e)) => Ok((name, e.data)),
            _ => Err(alloc::format!("no {path} in the boot archive")),
        }
    });
    for file in archived.chain(given) {
        let (name, data) = file?;
        let pages = (data.len() as u64).div_ceil(PAGE_SIZE).max(1);
        let f = slots.next();
        sys::create(ObjectType::Frame, f, pages).map_err(e("file frame"))?;
        sys::map(abi::INIT_SLOT_SELF, f, SCRATCH, rw).map_err(e("map scratch"))?;
        write_scratch(SCRATCH, data);
        // SAFETY: nothing in init refers to the scratch window any more.
        unsafe { sys::unmap(abi::INIT_SLOT_SELF, SCRATCH, pages) }.map_err(e("unmap scratch"))?;
        let g = sys::cap_grant(proc, f, next_slot, Rights::READ);
        slots.delete(f);
        g.map_err(e("grant file"))?;
        info.files.push((name.clone(), next_slot, data.len() as u64));
        next_slot += 1;
    }
    extra.mark("files");

    // Start-up information, read-only.
    let bytes = postcard::to_allocvec(&info).map_err(|_| String::from("encoding start info"))?;
    let pages = (bytes.len() as u64).div_ceil(PAGE_SIZE).max(1);
    let sframe = slots.next();
    sys::create(ObjectType::Frame, sframe, pages).map_err(e("start info"))?;
    sys::map(abi::INIT_SLOT_SELF, sframe, SCRATCH, rw).map_err(e("map scratch"))?;
    write_scratch(SCRATCH, &bytes);
    // SAFETY: nothing in init refers to the scratch window any more.
    unsafe { sys::unmap(abi::INIT_SLOT_SELF, SCRATCH, pages) }.map_err(e("unmap scratch"))?;
    sys::map(proc, sframe, start::START_INFO_ADDR, Rights::READ).map_err(e("map start info"))?;
    slots.delete(sframe);

    let thread = slots.next();
    sys::create(ObjectType::Thread, thread, u64::from(proc)).map_err(e("thread"))?;
    sys::cap_grant(proc, thread, start::SLOT_THREAD, Rights::MANAGE).map_err(e("grant thread"))?;
    // SAFETY: the entry, stack and IPC buffer are mapped in the child above.
    unsafe {
        sys::thread_configure(
            thread,
            plan.entry(),
            start::STACK_TOP - 8,
            start::IPC_BUFFER_ADDR,
            start::START_INFO_ADDR,
            bytes.len() as u64,
        )
    }
    .map_err(e("configure thread"))?;
    sys::thread_set_priority(thread, server.priority, server.cpu).map_err(e("priority"))?;
    sys::process_watch(proc, watch, extra.watch_bit.unwrap_or(1 << (index % 64))).map_err(e("watch"))?;
    sys::thread_resume(thread).map_err(e("resume"))?;
    slots.delete(thread);
    Ok(())
}

/// A new frame holding segment `seg` of `elf`, filled through the scratch
/// window (its slot; the caller maps it and lets it go, or keeps it).
fn filled_frame(elf: &[u8], seg: &initrd::elf::Segment, slots: &mut Slots) -> Result<CapSlot, String> {
    fn e(what: &'static str) -> impl Fn(abi::Error) -> String {
        move |err| alloc::format!("{what}: {err}")
    }
    let pages = seg.page_count();
    let frame = slots.next();
    sys::create(ObjectType::Frame, frame, pages).map_err(e("segment frame"))?;
    let filled = (|| {
        sys::map(abi::INIT_SLOT_SELF, frame, SCRATCH, Rights::READ | Rights::WRITE).map_err(e("map scratch"))?;
        for copy in seg.page_copies() {
            let dst = SCRATCH + (copy.page_vaddr - seg.pages().start) + copy.dst_offset as u64;
            let bytes = elf.get(copy.src.clone()).ok_or("segment outside the file")?;
            write_scratch(dst, bytes);
        }
        // SAFETY: nothing in init refers to the scratch window any more.
        unsafe { sys::unmap(abi::INIT_SLOT_SELF, SCRATCH, pages) }.map_err(e("unmap scratch"))
    })();
    match filled {
        Ok(()) => Ok(frame),
        Err(why) => {
            slots.delete(frame);
            Err(why)
        }
    }
}

/// A template's read-only segment (code, constants), filled once at boot
/// and mapped read-only into every instance, as an OS shares a program's
/// text: an instance started at run time (a VMM, for each VM) maps it
/// instead of having init zero and copy it, and all instances use the
/// same memory. (Under QEMU's TCG an instance also reuses the code the
/// emulator translated for the one before: translating it afresh was most
/// of a new VMM's start-up.)
struct SharedSegment {
    /// The binary's path in the boot archive.
    path: String,
    /// The segment's first page and its length in pages.
    start: u64,
    pages: u64,
    /// init's capability to the frame (kept for init's life).
    frame: CapSlot,
}

static SHARED_SEGMENTS: spin::Mutex<Vec<SharedSegment>> = spin::Mutex::new(Vec::new());

/// The shared frame of segment `seg` of binary `path`, if there is one
/// (only read-only segments are shared).
fn shared_frame(path: &str, seg: &initrd::elf::Segment) -> Option<CapSlot> {
    if seg.rights().contains(Rights::WRITE) {
        return None;
    }
    let (start, pages) = (seg.pages().start, seg.page_count());
    SHARED_SEGMENTS.lock().iter().find(|s| s.path == path && s.start == start && s.pages == pages).map(|s| s.frame)
}

/// Makes the shared frames of template `server`'s read-only segments (see
/// [`SharedSegment`]); returns their bytes. A failure leaves that segment
/// copied at each start, as any other server's.
fn share_read_only_segments(archive: &initrd::Archive<'_>, server: &Server, slots: &mut Slots) -> Result<u64, String> {
    let path = initrd::binary_path(&server.binary);
    let elf = match archive.find(&path) {
        Ok(Some(e)) => e.data,
        _ => return Err(alloc::format!("no {path} in the boot archive")),
    };
    let plan = initrd::elf::load_plan(elf).map_err(|e| alloc::format!("{path}: {e:?}"))?;
    let mut bytes = 0;
    for seg in plan.segments() {
        if seg.rights().contains(Rights::WRITE) || shared_frame(&path, seg).is_some() {
            continue;
        }
        let frame = filled_frame(elf, seg, slots)?;
        SHARED_SEGMENTS.lock().push(SharedSegment { path: path.clone(), start: seg.pages().start, pages: seg.page_count(), frame });
        bytes += seg.page_count() * PAGE_SIZE;
    }
    Ok(bytes)
}

/// Writes into the scratch window (mapped writable by the caller).
fn write_scratch(addr: u64, bytes: &[u8]) {
    // SAFETY: the scratch window is a range init maps frames into only to
    // fill them (never Rust-managed memory, no reference into it) and the
    // caller mapped it writable for `bytes`.
    unsafe { alcove_rt::poke(addr, bytes) };
}
