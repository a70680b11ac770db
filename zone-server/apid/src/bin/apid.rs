//! The apid process: alcove-api's HTTP server on netd's `socket` interface
//! (manifest: `calls` "netd"), every request a command at zone-server's
//! `vmadm` interface (`calls` "zone-server"; zone-server's `vmadm-clients=`
//! names apid). Arguments: `token=SECRET` (required), `port=N`.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
extern crate alloc;

/// How long apid sleeps when no byte moved.
#[cfg(target_os = "none")]
const IDLE_NS: u64 = 10_000_000;
/// How long it waits before trying to listen again.
#[cfg(target_os = "none")]
const RETRY_NS: u64 = 2_000_000_000;
#[cfg(target_os = "none")]
const IDLE_SLOT: abi::CapSlot = alcove_rt::start::SLOT_FREE;

#[cfg(target_os = "none")]
fn main(start: alcove_rt::Start) -> u64 {
    use libipc::cap::Cap;
    use libipc::interfaces::{console, socket, vmadm};
    use libipc::kernel::KernelTransport;

    let info = start.server("apid");
    let settings = match apid::settings(&info.args) {
        Ok(s) => s,
        Err(e) => {
            log::error!("{e}");
            return 1;
        }
    };
    let (Some(netd), Some(zone)) = (info.calls("netd"), info.calls("zone-server")) else {
        log::error!("needs the endpoints \"netd\" and \"zone-server\" (manifest: calls)");
        return 1;
    };
    // Room for the bodies of a full house of connections (each up to
    // VMADM_STDIN_MAX) and one parsed at a time (a body of small JSON
    // values parses to some times its size), beside the arena: taken at
    // start, so a flood of large requests finds it there rather than an
    // allocation failing in the middle of one.
    let mut settings = settings;
    if let Err(e) = alcove_rt::grow_heap(apid::HEAP_GROWTH_BYTES) {
        settings.config.limits = apid::degraded(settings.config.limits);
        log::warn!(
            "cannot grow the heap by {} KiB for request bodies ({e}): serving bodies of at most {} bytes",
            apid::HEAP_GROWTH_BYTES / 1024,
            settings.config.limits.max_body_bytes
        );
    }
    if let Err(e) = libipc::sys::create(abi::ObjectType::Notification, IDLE_SLOT, 0) {
        log::error!("cannot create the idle notification: {e}");
        return 1;
    }
    let zone = Zone {
        zone: vmadm::Client::new(KernelTransport::new(Cap::from_slot(zone))),
        console: info.calls("console").map(|c| console::Client::new(KernelTransport::new(Cap::from_slot(c)))),
    };
    let mut server = alcove_api::Server::new(apid::backend::VmadmBackend::new(zone), settings.config);
    let mut net = socket::Client::new(KernelTransport::new(Cap::from_slot(netd)));
    let mut pump = apid::pump::Pump::new(settings.port, apid::NETD_SOCKETS);
    let mut listening = false;
    let mut told = false;
    loop {
        let now_ms = alcove_rt::clock_ns() / 1_000_000;
        match pump.step(&mut server, &mut net, now_ms) {
            Ok(moved) => {
                if !listening {
                    listening = true;
                    log::info!("the HTTP API listens on port {} of the admin address", settings.port);
                }
                if !moved {
                    let _ = libipc::sys::wait(IDLE_SLOT, IDLE_NS);
                }
            }
            Err(e) => {
                // Said once: netd may have no admin address yet, and the
                // operator's console is no place for a line every 2 s.
                if !core::mem::replace(&mut told, true) {
                    log::warn!("cannot listen on port {}: {e}; trying again every 2 s", settings.port);
                }
                let _ = libipc::sys::wait(IDLE_SLOT, RETRY_NS);
            }
        }
    }
}

/// zone-server's `vmadm` and the console's `tail`, as apid's backend uses them.
#[cfg(target_os = "none")]
struct Zone {
    zone: libipc::interfaces::vmadm::Client<libipc::kernel::KernelTransport>,
    console: Option<libipc::interfaces::console::Client<libipc::kernel::KernelTransport>>,
}

#[cfg(target_os = "none")]
impl apid::backend::Vmadm for Zone {
    /// `vmadm.begin` (+ `vmadm.step` should a command wait for a guest:
    /// the backend sends graceful stops and reboots through
    /// [`apid::backend::Vmadm::begin`] instead) + `vmadm.read`: the
    /// program's own method (vmadm or imgadm) and no reply-size limit.
    fn run(
        &mut self,
        program: &str,
        args: alloc::vec::Vec<alloc::string::String>,
        stdin: alloc::string::String,
    ) -> Result<libipc::interfaces::VmadmOutput, alloc::string::String> {
        use alloc::string::ToString;
        let pause = || {
            let _ = libipc::sys::wait(IDLE_SLOT, libipc::interfaces::VMADM_STEP_PAUSE_MS * 1_000_000);
        };
        libipc::interfaces::vmadm_run_whole(&self.zone, program, args, stdin, pause).map_err(|e| e.to_string())
    }

    /// `vmadm.begin` alone: a graceful stop or reboot only begins
    /// (`None`); the backend watches the VM's state while apid serves its
    /// other connections.
    fn begin(
        &mut self,
        program: &str,
        args: alloc::vec::Vec<alloc::string::String>,
        stdin: alloc::string::String,
    ) -> Result<Option<libipc::interfaces::VmadmOutput>, alloc::string::String> {
        use alloc::string::ToString;
        let step = self.zone.begin(program.into(), args, stdin).map_err(|e| e.to_string())?;
        if step.pending {
            return Ok(None);
        }
        libipc::interfaces::vmadm_read_whole(&self.zone, step).map(Some).map_err(|e| e.to_string())
    }

    fn console(&mut self, uuid: &str) -> Result<libipc::interfaces::VmadmConsole, alloc::string::String> {
        use alloc::string::ToString;
        self.zone.console(uuid.into()).map_err(|e| e.to_string())
    }

    fn tail(
        &mut self,
        target: u64,
        from: u64,
    ) -> Result<Result<libipc::interfaces::ConsoleTail, libipc::interfaces::ConsoleRefusal>, alloc::string::String> {
        use alloc::string::ToString;
        match &self.console {
            Some(c) => c.tail(target, from).map_err(|e| e.to_string()),
            None => Err("apid has no console endpoint (manifest: calls \"console\")".into()),
        }
    }

    fn feed(
        &mut self,
        target: u64,
        bytes: alloc::vec::Vec<u8>,
    ) -> Result<Result<u32, libipc::interfaces::ConsoleRefusal>, alloc::string::String> {
        use alloc::string::ToString;
        match &self.console {
            Some(c) => c.feed(target, bytes).map_err(|e| e.to_string()),
            None => Err("apid has no console endpoint (manifest: calls \"console\")".into()),
        }
    }
}

#[cfg(target_os = "none")]
alcove_rt::entry!(main);

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("apid runs only on Alcove (build it for x86_64-unknown-none)");
}
