//! init's worker thread: every call init makes to one of its servers.
//!
//! init's main thread serves `proc`, and servers call `proc` before they
//! answer anything themselves (storaged and netd register their PCI
//! functions with `proc.pci_claim` before they import the pool or bring a
//! link up; zone-server starts VMMs through `proc.start`). So the main
//! thread never waits for a server: what init asks of its servers — the
//! ready round, a VMM's pool volumes made ready and granted, a dead VMM's
//! grant revoked — is queued here and done on this thread, which reports
//! back through init's watch notification ([`WORKER_BIT`]). A server that
//! is still starting (or restarting) only delays its own jobs.
//!
//! init runs two such threads ([`Lane`]): one for the pool and the ready
//! round (grants, revokes, status), one that tells servers of a restart
//! (`lifecycle.restarted`). A told server answers when it has made again
//! what it had made in the restarted one, and it may be busy for minutes
//! first (zone-server inside a `vmadm stop`, waiting for a guest to power
//! off): that delays only other tellings, never a VMM's grant.

use abi::{CapSlot, ObjectType, Rights, FOREVER, PAGE_SIZE};
use alcove_rt::println;
use alloc::collections::VecDeque;
use alloc::string::String;
use alloc::vec::Vec;
use libipc::sys;

/// The watch bit the worker signals when it finished a job (shared, as
/// init's instance bit is, with one server's bit, which then only makes
/// init look at that server's state).
pub const WORKER_BIT: u64 = 1 << 62;
/// Where the first worker's stack and, on the page above it, its IPC
/// buffer are mapped in init; the next lane's are [`LANE_STRIDE`] higher.
const STACK_VA: u64 = 0x0000_5100_0000_0000;
const STACK_PAGES: u64 = 8;
const LANE_STRIDE: u64 = 0x1_0000_0000;

/// Which of init's worker threads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lane {
    /// The ready round, pool grants and revokes.
    Pool = 0,
    /// Telling servers that a server they call was restarted.
    Tell = 1,
}

/// What init asks the worker to do.
pub enum Job {
    /// Ask every endpoint (name, init's original) for its status and print
    /// the outcome and the `boot_to_ready` figure.
    Round { endpoints: Vec<(String, CapSlot)> },
    /// Make server `name`'s pool volumes (the manifest's specs) ready
    /// through storaged's endpoint (init's own copy: init may use the pool
    /// interface); the grant's capability lands in `slot`.
    Grant { child: usize, name: String, volumes: Vec<String>, storaged: CapSlot, slot: CapSlot },
    /// Revoke the pool grant `badge` made for `server`, which ended.
    Revoke { server: String, storaged: CapSlot, badge: u64 },
    /// The server of `endpoint` was restarted: tell each of `callers`
    /// (name, init's copy of its endpoint) with `lifecycle.restarted`.
    Restarted { endpoint: String, callers: Vec<(String, CapSlot)> },
}

/// A finished job the main thread acts on.
pub enum Done {
    /// The ready round is over.
    Round,
    /// Child `child`'s volumes: the grant's badge with its capability in
    /// `slot`, or why there is none.
    Grant { child: usize, slot: CapSlot, result: Result<u64, String> },
}

struct Queue {
    jobs: VecDeque<Job>,
    done: Vec<Done>,
    /// The notification the worker waits on for jobs.
    work: CapSlot,
    /// init's watch notification.
    watch: CapSlot,
}

static QUEUES: [spin::Mutex<Option<Queue>>; 2] = [spin::Mutex::new(None), spin::Mutex::new(None)];

/// A worker thread, once started; it runs as long as init does.
pub struct Worker {
    lane: Lane,
    work: CapSlot,
}

impl Worker {
    /// Starts the worker of `lane` (a thread of init at init's priority,
    /// its stack and IPC buffer from `slots`' next four slots), which
    /// signals `watch` with [`WORKER_BIT`] after each job.
    pub fn start(lane: Lane, watch: CapSlot, mut next_slot: impl FnMut() -> CapSlot) -> Result<Self, abi::Error> {
        let (work, thread, stack, ipc) = (next_slot(), next_slot(), next_slot(), next_slot());
        let stack_va = STACK_VA + lane as u64 * LANE_STRIDE;
        let ipc_va = stack_va + STACK_PAGES * PAGE_SIZE;
        let rw = Rights::READ | Rights::WRITE;
        sys::create(ObjectType::Notification, work, 0)?;
        sys::create(ObjectType::Frame, stack, STACK_PAGES)?;
        sys::map(abi::INIT_SLOT_SELF, stack, stack_va, rw)?;
        sys::create(ObjectType::Frame, ipc, 1)?;
        sys::map(abi::INIT_SLOT_SELF, ipc, ipc_va, rw)?;
        sys::create(ObjectType::Thread, thread, u64::from(abi::INIT_SLOT_SELF))?;
        // SAFETY: the buffer is the page just mapped at `ipc_va` (new,
        // zeroed, aligned), used only by libipc and the kernel for the new
        // thread; the stack below it is that thread's alone and overlaps
        // no other registered stack. The thread runs as long as init, so
        // the registration is never given back.
        unsafe { sys::register_thread_buffer(stack_va, ipc_va, ipc_va as *mut abi::IpcBuffer) }?;
        *QUEUES[lane as usize].lock() = Some(Queue { jobs: VecDeque::new(), done: Vec::new(), work, watch });
        // SAFETY: `run` is an `extern "C"` function that never returns; its
        // stack (top less the return-address slot) and IPC buffer are the
        // pages mapped above, reserved for this thread for init's life; its
        // first argument names its lane's queue.
        unsafe { sys::thread_configure(thread, run as *const () as usize as u64, ipc_va - 8, ipc_va, lane as u64, 0) }?;
        sys::thread_resume(thread)?;
        Ok(Worker { lane, work })
    }

    /// Queues `job`; the worker takes jobs in order. A job of the other
    /// lane is a mistake of init's: it is logged and dropped.
    pub fn post(&self, job: Job) {
        let lane = match job {
            Job::Restarted { .. } => Lane::Tell,
            _ => Lane::Pool,
        };
        if lane != self.lane {
            log::error!("init: a {lane:?} job posted to the {:?} worker; dropped", self.lane);
            return;
        }
        if let Some(q) = QUEUES[lane as usize].lock().as_mut() {
            q.jobs.push_back(job);
        }
        let _ = sys::signal(self.work, 1);
    }

    /// The jobs finished since the last call.
    pub fn finished(&self) -> Vec<Done> {
        QUEUES[self.lane as usize].lock().as_mut().map(|q| core::mem::take(&mut q.done)).unwrap_or_default()
    }
}

/// A worker thread's loop (the kernel starts it with its IPC buffer, then
/// the two start arguments); `lane` indexes its queue.
extern "C" fn run(_ipc_buffer: u64, lane: u64, _: u64) -> ! {
    let queue = &QUEUES[(lane as usize).min(QUEUES.len() - 1)];
    loop {
        let (job, work, watch) = {
            let mut q = queue.lock();
            let Some(q) = q.as_mut() else { continue };
            (q.jobs.pop_front(), q.work, q.watch)
        };
        let Some(job) = job else {
            // A job posted after the queue was found empty has signalled
            // `work`, so this returns at once.
            let _ = sys::wait(work, FOREVER);
            continue;
        };
        let done = match job {
            Job::Round { endpoints } => {
                round(&endpoints);
                Some(Done::Round)
            }
            Job::Grant { child, name, volumes, storaged, slot } => {
                Some(Done::Grant { child, slot, result: grant_volumes(storaged, &name, &volumes, slot) })
            }
            Job::Revoke { server, storaged, badge } => {
                revoke_grant(storaged, &server, badge);
                None
            }
            Job::Restarted { endpoint, callers } => {
                tell_restarted(&endpoint, &callers);
                None
            }
        };
        if let Some(d) = done
            && let Some(q) = queue.lock().as_mut()
        {
            q.done.push(d);
        }
        let _ = sys::signal(watch, WORKER_BIT);
    }
}

/// The ready round: asks every endpoint for its status and prints the
/// outcome (and the `boot_to_ready` figure).
fn round(endpoints: &[(String, CapSlot)]) {
    let t0 = sys::clock_ns().unwrap_or(0);
    let mut answered = 0;
    for (name, ep) in endpoints {
        let client = libipc::interfaces::status::Client::new(libipc::kernel::KernelTransport::new(
            libipc::cap::Cap::from_slot(*ep),
        ));
        match client.status() {
            Ok(s) => {
                answered += 1;
                log::info!("{name}: {} v{} up", s.name, s.version);
            }
            Err(e) => log::error!("{name} does not answer status: {e}"),
        }
    }
    let t1 = sys::clock_ns().unwrap_or(0);
    // Under QEMU's -icount shift=0 a virtual nanosecond is one instruction,
    // so this is the instruction count from kernel entry to ready.
    println!("ALCOVE-BENCH boot_to_ready {t1} ns");
    println!(
        "init: ready: {answered} of {} endpoints answered status ({} us after the first call; {} ms since boot)",
        endpoints.len(),
        (t1 - t0) / 1000,
        t1 / 1_000_000
    );
}

/// Makes server `server`'s pool volumes ready through storaged's endpoint
/// `ep` and returns the grant's badge, its capability (storaged's
/// endpoint with that badge) in `slot`.
fn grant_volumes(ep: CapSlot, server: &str, volumes: &[String], slot: CapSlot) -> Result<u64, String> {
    use libipc::provision::{VolumeSpec, provision};
    let specs = volumes.iter().map(|v| VolumeSpec::parse(v)).collect::<Result<Vec<_>, _>>()?;
    let t = libipc::kernel::CapTransport::new(libipc::cap::Cap::from_slot(ep), &[slot]);
    let done = provision(&libipc::interfaces::pool::Client::new(&t), &specs).map_err(|e| alloc::format!("{e}"))?;
    if t.received() != 1 {
        return Err(alloc::format!("storaged's grant {:#x} came without its capability", done.granted.badge));
    }
    let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
    log::info!(
        "server \"{}\": volumes {} granted ({:#x}){}{}",
        server,
        names.join(", "),
        done.granted.badge,
        if done.created.is_empty() { "" } else { ", created " },
        done.created.join(", ")
    );
    Ok(done.granted.badge)
}

/// Tells each of `callers` that the server of `endpoint`, which it calls,
/// was restarted. A caller answers when it has made again what it had
/// made there; the calls wait for the new server meanwhile (the restarted
/// server never calls its callers, so this ends).
fn tell_restarted(endpoint: &str, callers: &[(String, CapSlot)]) {
    for (name, ep) in callers {
        let t = libipc::kernel::KernelTransport::new(libipc::cap::Cap::from_slot(*ep));
        match libipc::interfaces::lifecycle::Client::new(&t).restarted(endpoint.into()) {
            Ok(()) => log::info!("server \"{name}\" told that \"{endpoint}\" was restarted"),
            Err(e) => log::warn!("server \"{name}\" was not told that \"{endpoint}\" was restarted: {e}"),
        }
    }
}

/// Revokes the pool grant `badge` made for `server`, which ended.
fn revoke_grant(ep: CapSlot, server: &str, badge: u64) {
    let t = libipc::kernel::KernelTransport::new(libipc::cap::Cap::from_slot(ep));
    match libipc::interfaces::pool::Client::new(&t).revoke(badge) {
        Ok(Ok(closed)) => log::info!("server \"{server}\" ended: its pool grant {badge:#x} revoked ({closed} rings closed)"),
        Ok(Err(e)) => log::warn!("server \"{server}\" ended: revoking its pool grant {badge:#x}: {e}"),
        Err(e) => log::warn!("server \"{server}\" ended: storaged did not answer the revoke of {badge:#x}: {e}"),
    }
}
