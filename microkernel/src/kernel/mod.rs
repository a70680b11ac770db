//! The kernel proper: every kernel object, the capability system over them,
//! per-CPU scheduling, and the entry points from ring 3.
//!
//! One big kernel lock serialises all of it (as seL4 does on multicore): the
//! kernel runs to completion with interrupts off, never blocks on a kernel
//! stack, and a thread that has to wait is simply not current when the CPU
//! returns to ring 3. Policy lives in kcore (capabilities, budgets, run
//! queues, page tables); this module wires it to the hardware.

pub mod dump;
pub mod fastpath;
pub mod fpu;
pub mod inject;
pub mod ipc;
pub mod mem;
pub mod phases;
pub mod process;
pub mod runpage;
pub mod syscall;
pub mod vm;

use crate::arch::{self, apic, percpu, trap::TrapFrame, MAX_CPUS};
use abi::{CapSlot, Rights};
use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::vec::Vec;
use core::sync::atomic::Ordering;
use kcore::budget::Budget;
use kcore::cap::{CapSystem, SpaceId};
use kcore::deadlines::Deadlines;
use kcore::sched::RunQueue;
use kcore::slab::{Id, Slab};
use kcore::waitlist::{Link, Node, WaitList};
use spin::mutex::{TicketMutex, TicketMutexGuard};

/// What a capability designates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Obj {
    Frame(Id),
    Process(Id),
    Thread(Id),
    Endpoint(Id),
    Notification(Id),
    Irq(u8),
    IoPorts { first: u16, count: u16 },
    /// Authority over physical addresses `[first_page, first_page + pages)`
    /// pages that are not RAM, from which MMIO frames are made.
    DeviceMemory { first_page: u64, pages: u64 },
    Console,
    Guest(Id),
    Vcpu(Id),
    /// A message-signalled interrupt vector.
    Msi(u8),
}

impl Obj {
    pub fn object_type(&self) -> abi::ObjectType {
        use abi::ObjectType as T;
        match self {
            Obj::Frame(_) => T::Frame,
            Obj::Process(_) => T::Process,
            Obj::Thread(_) => T::Thread,
            Obj::Endpoint(_) => T::Endpoint,
            Obj::Notification(_) => T::Notification,
            Obj::Irq(_) => T::Irq,
            Obj::IoPorts { .. } => T::IoPorts,
            Obj::DeviceMemory { .. } => T::DeviceMemory,
            Obj::Console => T::Console,
            Obj::Guest(_) => T::Guest,
            Obj::Vcpu(_) => T::Vcpu,
            Obj::Msi(_) => T::Irq,
        }
    }
}

/// Bytes of budget each kind of object costs (kernel memory it stands for).
pub mod cost {
    pub const THREAD: u64 = 1024;
    pub const ENDPOINT: u64 = 128;
    pub const NOTIFICATION: u64 = 128;
    pub const PROCESS: u64 = 4096 + 512; // the PML4 and the bookkeeping
    pub const PAGE_TABLE: u64 = 4096;
    /// One `ProcessWatch` entry (with room for its vector's growth).
    pub const WATCH: u64 = 64;
    /// One range-map entry (a `Map` or `GuestMap`, or the piece a partial
    /// unmap splits off): a B-tree slot with its share of the node.
    pub const RANGE_ENTRY: u64 = 128;
    /// A process's I/O-permission bitmap (made by its first `IoPortEnable`).
    pub const IO_BITMAP: u64 = crate::arch::gdt::IOMAP_BYTES as u64 + 64;
}

/// Physical pages, owned by the kernel while any capability or mapping
/// refers to them.
pub struct Frame {
    pub phys: u64,
    pub pages: u32,
    /// Capabilities plus mappings.
    pub refs: u32,
    /// Who paid, and how much to give back when the frame is freed.
    pub charged_to: Option<Id>,
    pub charged: u64,
    /// Boot-archive or device memory: never returned to the allocator.
    pub fixed: bool,
    /// MMIO: mapped uncached.
    pub device: bool,
}

/// Physical ranges that are RAM (from the boot memory map), so device-memory
/// capabilities can never reach it.
pub static RAM: spin::Once<heapless::Vec<(u64, u64), 128>> = spin::Once::new();

fn is_ram(start: u64, end: u64) -> bool {
    RAM.get().is_none_or(|r| r.iter().any(|&(s, e)| start < e && s < end))
}

pub struct Endpoint {
    pub senders: VecDeque<Id>,
    /// Threads waiting in `Recv`, linked through their `wait_link`: a
    /// thread is in this list exactly while its state is `Receiving` on this
    /// endpoint and it was not yet taken for a message, so every way out of
    /// that state (`unblock_cleanup`, a sender taking it, the endpoint's
    /// end) unlinks it first.
    pub receivers: WaitList,
    pub refs: u32,
    pub charged_to: Option<Id>,
}

pub struct Notification {
    pub bits: u64,
    pub waiters: VecDeque<Id>,
    /// A thread that receives on an endpoint and wants this too.
    pub bound: Option<Id>,
    pub refs: u32,
    pub charged_to: Option<Id>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ThreadState {
    /// Created or suspended: not scheduled.
    Inactive,
    Runnable,
    Running,
    /// In an endpoint's send queue (`call` says whether it wants a reply).
    Sending { endpoint: Id, call: bool },
    Receiving { endpoint: Id },
    /// Called, message delivered, waiting for the reply.
    AwaitingReply,
    Waiting { notification: Id },
    /// A vCPU thread sleeping through a guest HLT (or an AP waiting for its
    /// start-up IPI); it re-enters `VcpuRun` when woken.
    GuestHalted,
}

pub struct Thread {
    /// Saved user registers; `return_to_user` restores them. Boxed threads
    /// never move, so PerCpu.context_top can point here.
    pub ctx: TrapFrame,
    pub process: Id,
    pub state: ThreadState,
    pub priority: u8,
    pub affinity: Option<usize>,
    /// The CPU whose run queue it is on (or last ran on).
    pub cpu: usize,
    pub ipc_buffer: u64,
    pub configured: bool,
    pub bound_notification: Option<Id>,
    /// The caller this thread owes a reply to.
    pub reply_to: Option<Id>,
    /// Absolute deadline (ns since boot) of the current block.
    pub deadline: Option<u64>,
    /// The badge and rights of the capability the pending send used.
    pub send_badge: u64,
    pub send_grant: bool,
    /// The capability a queued send went through: when it is revoked or
    /// deleted the send fails with `Gone` rather than being delivered with
    /// the badge and GRANT right captured above (finding 12).
    pub send_node: Option<kcore::cap::NodeId>,
    /// The process whose budget paid for this thread.
    pub charged_to: Id,
    /// Capabilities naming it; deleting the last one ends the thread (as
    /// seL4 destroys a TCB with its last capability).
    pub refs: u32,
    /// CPU-time cap (kcore's policy); unlimited by default.
    pub cpu_budget: kcore::sched::CpuBudget,
    /// When it last entered ring 3 (ns since boot), for charging the budget.
    pub ran_since: u64,
    /// Its key in `Kernel::throttled` while its CPU budget is spent, so
    /// every path that wakes or ends it takes it out of there.
    pub throttled_until: Option<u64>,
    /// Its place in the endpoint's receiver list while it waits in `Recv`
    /// (`Endpoint::receivers`); `None` otherwise.
    pub wait_link: Option<Link>,
    /// Its FPU/SSE registers while another thread has the CPU's (`fpu`).
    pub fpu: fpu::ThreadFpu,
}

// A thread's record, its FPU area included, within what it is charged.
const _: () = assert!(core::mem::size_of::<Thread>() as u64 <= cost::THREAD);

impl Node for Thread {
    #[inline(always)]
    fn link(&mut self) -> &mut Option<Link> {
        &mut self.wait_link
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProcessState {
    Running,
    Exited(u64),
    Faulted(u64),
}

#[derive(Clone, Copy, Debug)]
pub struct Mapping {
    pub frame: Id,
    /// The capability it was mapped through: revoking that capability (or
    /// an ancestor) unmaps it; deleting it hands the mapping to its parent
    /// (security issue finding 12). `None` for what the kernel mapped
    /// itself (init's image) and once the root it came down to is deleted.
    pub through: Option<kcore::cap::NodeId>,
}

pub struct Process {
    pub name: heapless::String<32>,
    pub space: SpaceId,
    pub pml4: u64,
    pub budget: Budget,
    pub parent: Option<Id>,
    pub threads: Vec<Id>,
    pub state: ProcessState,
    /// User pages, by virtual address.
    pub mappings: kcore::rangemap::RangeMap<Mapping>,
    pub page_tables: u64,
    /// Capabilities naming this process.
    pub refs: u32,
    pub watchers: Vec<Watcher>,
    pub io_bitmap: Option<Box<[u8; arch::gdt::IOMAP_BYTES]>>,
    /// What its record, PML4 and capability space cost its own budget
    /// (refunded when it ends and they are freed).
    pub own_charge: u64,
}

/// A notification to signal when a process ends (`ProcessWatch`): one per
/// notification and process, charged to whoever asked.
#[derive(Clone, Copy, Debug)]
pub struct Watcher {
    pub notification: Id,
    pub bits: u64,
    pub payer: Id,
}

#[derive(Clone, Copy, Default)]
pub struct IrqLine {
    pub notification: Option<Id>,
    pub bits: u64,
    pub pending_ack: bool,
}

pub struct Kernel {
    pub caps: CapSystem<Obj>,
    pub threads: Slab<Box<Thread>>,
    pub processes: Slab<Process>,
    pub endpoints: Slab<Endpoint>,
    pub notifications: Slab<Notification>,
    pub frames: Slab<Frame>,
    pub guests: Slab<vm::Guest>,
    pub vcpus: Slab<Box<vm::Vcpu>>,
    pub irqs: [IrqLine; apic::IRQ_LINES as usize],
    /// MSI vectors: allocated, and where each is delivered.
    pub msis: [Option<IrqLine>; apic::MSI_VECTORS],
    /// Capabilities to each MSI vector: the vector is free again when its
    /// last one goes (security issue finding 12).
    pub msi_refs: [u32; apic::MSI_VECTORS],
    pub run_queues: Vec<RunQueue<Id>>,
    pub current: [Option<Id>; MAX_CPUS],
    /// Threads blocked with a deadline, by (deadline, thread).
    pub timeouts: Deadlines<Id>,
    /// Threads that used up their CPU budget, by (replenish time, thread).
    pub throttled: Deadlines<Id>,
    pub cpus_online: usize,
    /// Address-space roots of ended processes, freed once no CPU has one
    /// loaded (a CPU waiting for the lock may still run on it).
    pub dead_pml4s: Vec<u64>,
    /// Whose I/O bitmap each CPU's TSS holds (None: all ports denied).
    pub io_bitmap_owner: [Option<Id>; MAX_CPUS],
    /// Processes whose last capability went, waiting to be ended and freed
    /// by the teardown loop in `obj_unref` (a work list, not recursion).
    pub unreachable: Vec<Id>,
    /// Whether that loop is running (further ends only join the list).
    pub tearing_down: bool,
    /// The thread each CPU last entered ring 3 with, and the timer deadline
    /// armed for it, so an unchanged thread does not reprogram the timer.
    pub last_run: [Option<(Id, u64)>; MAX_CPUS],
    /// The thread whose FPU/SSE registers each CPU holds, CR0.TS clear for
    /// it (`fpu`); `None`: TS set.
    pub fpu_owner: [Option<Id>; MAX_CPUS],
}

static KERNEL: TicketMutex<Kernel, LockSpin> = TicketMutex::new(Kernel::EMPTY);

/// How a CPU waits for the big lock: `spin_loop` (PAUSE) each turn, and,
/// while the benchmark's phase counting is on, a count of the turns
/// (`PerCpu::lock_spins`, read with `Sys::BenchPhases`), so a benchmark
/// can tell waiting for the lock from the work it measures (under QEMU's
/// one thread for all CPUs a wait lasts until the holder's turn to run).
/// Off, one more load and branch per turn of a wait.
pub struct LockSpin;

impl spin::RelaxStrategy for LockSpin {
    #[inline(always)]
    fn relax() {
        if phases::on() {
            percpu::this().lock_spins.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
        }
        core::hint::spin_loop();
    }
}

/// Takes the big kernel lock, in turn: a ticket lock, so a CPU that goes
/// through the kernel in a loop (a thread calling `Yield` or polling
/// without end) cannot take it again ahead of one already waiting. With a
/// test-and-set lock it did, under QEMU every time: the other CPU never got
/// in (the vCPU-teardown test hung once its main thread ran on the other
/// CPU). `spin`'s `FairMutex` (a waiter marks itself starved after 1024
/// spins) did not hold under `-icount`. Under QEMU's one thread for all
/// CPUs a release with a waiter hands over and the holder then waits for
/// the waiter's turn to run; the cross-core IPC benchmark never contends
/// (its `ipc_roundtrip_cross_core_lock_spins` reads 0 turns: its rise from
/// 2870 to 7923 instructions in session 20 was the idle CPUs' run-queue
/// scan in `steal`, `RunQueue::find`, not this lock). Waits with interrupts enabled so
/// that IPIs (TLB shootdowns) still reach this CPU meanwhile; the handlers
/// taken then only record (none takes this lock), so one taken just after
/// the lock is ours does no harm.
pub fn lock() -> KernelGuard {
    if let Some(g) = KERNEL.try_lock() {
        return KernelGuard(g);
    }
    arch::cpu::interrupts_on();
    let g = KERNEL.lock();
    arch::cpu::interrupts_off();
    KernelGuard(g)
}

pub struct KernelGuard(TicketMutexGuard<'static, Kernel>);

impl core::ops::Deref for KernelGuard {
    type Target = Kernel;
    fn deref(&self) -> &Kernel {
        &self.0
    }
}

impl core::ops::DerefMut for KernelGuard {
    fn deref_mut(&mut self) -> &mut Kernel {
        &mut self.0
    }
}

pub fn init(cpus: usize) {
    let mut k = KERNEL.lock();
    k.run_queues = (0..MAX_CPUS).map(|_| RunQueue::new()).collect();
    k.cpus_online = cpus;
}

impl Kernel {
    /// The kernel before boot has filled anything in (a constant, so the
    /// lock guards the state itself rather than an `Option` of it).
    const EMPTY: Kernel = Kernel {
        caps: CapSystem::new(),
        threads: Slab::new(),
        processes: Slab::new(),
        endpoints: Slab::new(),
        notifications: Slab::new(),
        frames: Slab::new(),
        guests: Slab::new(),
        vcpus: Slab::new(),
        irqs: [IrqLine { notification: None, bits: 0, pending_ack: false }; apic::IRQ_LINES as usize],
        msis: [None; apic::MSI_VECTORS],
        msi_refs: [0; apic::MSI_VECTORS],
        run_queues: Vec::new(),
        current: [None; MAX_CPUS],
        timeouts: Deadlines::new(),
        throttled: Deadlines::new(),
        dead_pml4s: Vec::new(),
        cpus_online: 1,
        io_bitmap_owner: [None; MAX_CPUS],
        unreachable: Vec::new(),
        tearing_down: false,
        last_run: [None; MAX_CPUS],
        fpu_owner: [None; MAX_CPUS],
    };

    pub fn thread(&self, id: Id) -> Option<&Thread> {
        self.threads.get(id).map(|b| &**b)
    }

    pub fn thread_mut(&mut self, id: Id) -> Option<&mut Thread> {
        self.threads.get_mut(id).map(|b| &mut **b)
    }

    /// Looks up a capability of the calling process, checking its rights.
    pub fn cap(&self, space: SpaceId, slot: CapSlot, need: Rights) -> Result<Obj, abi::Error> {
        let c = self.caps.lookup(space, slot)?;
        if !c.rights.contains(need) {
            return Err(abi::Error::NoRights);
        }
        Ok(c.object)
    }

    // ---- scheduling -------------------------------------------------------

    /// Hands this CPU directly to `t`, which must be blocked and bound to
    /// this CPU (the IPC fast path: no run-queue round trip). Returns false,
    /// changing nothing, when that would skip a higher-priority thread.
    pub fn switch_directly(&mut self, t: Id) -> bool {
        let cpu = percpu::index();
        let Some(th) = self.thread(t) else { return false };
        if th.cpu != cpu || th.deadline.is_some() {
            return false;
        }
        let prio = th.priority;
        if self.run_queues[cpu].peek_highest_priority().is_some_and(|p| p > prio) {
            return false;
        }
        if let Some(cur) = self.current[cpu] {
            // The caller has already been blocked by the IPC path.
            if self.thread(cur).is_some_and(|c| c.state == ThreadState::Running) {
                return false;
            }
        }
        self.thread_mut(t).expect("checked").state = ThreadState::Running;
        self.current[cpu] = Some(t);
        true
    }

    /// Makes a thread runnable on its CPU, preempting there if it should.
    /// It leaves every queue it sat on first (an endpoint's or a
    /// notification's, the timeouts, the throttled set): a thread in a
    /// queue it no longer waits in is found there after it is gone.
    pub fn make_runnable(&mut self, t: Id) {
        let Some(th) = self.thread(t) else { return };
        if matches!(th.state, ThreadState::Runnable | ThreadState::Running) {
            return;
        }
        self.unblock_cleanup(t);
        self.unthrottle(t);
        let Some(th) = self.thread_mut(t) else { return };
        th.state = ThreadState::Runnable;
        let deadline = th.deadline.take();
        let (home, prio, pinned) = (th.cpu, th.priority, th.affinity.is_some());
        if let Some(d) = deadline {
            self.timeouts.remove(d, t);
        }
        let cpu = self.wake_cpu(t, home, pinned, prio);
        if cpu != home
            && let Some(th) = self.thread_mut(t)
        {
            th.cpu = cpu;
        }
        self.run_queues[cpu].push_back(t, prio);
        let cur_prio = self.current[cpu].and_then(|c| self.thread(c)).map(|c| c.priority);
        if kcore::sched::should_preempt(cur_prio, prio) {
            self.resched(cpu);
        }
    }

    /// Asks `cpu` to run its scheduler (an IPI when it is another CPU).
    fn resched(&self, cpu: usize) {
        if cpu == percpu::index() {
            percpu::this().need_resched.store(true, Ordering::Relaxed);
        } else {
            let p = percpu::of(cpu);
            p.need_resched.store(true, Ordering::Relaxed);
            apic::send_fixed(p.apic_id.load(Ordering::Relaxed), apic::RESCHED_VECTOR);
        }
    }

    /// The priority of the thread running on `cpu`; `None` when it idles
    /// or its thread is leaving it (blocked, not yet switched away from).
    fn running_prio(&self, cpu: usize) -> Option<u8> {
        self.current[cpu].and_then(|t| self.thread(t)).filter(|t| t.state == ThreadState::Running).map(|t| t.priority)
    }

    /// What `kcore::sched::wake_cpu` and `steal_from` know of each CPU: the
    /// priority of the thread running there (`None` when it idles or its
    /// thread is leaving it) and its queue's length (`movable`: only the
    /// threads another CPU may take).
    /// One entry per online CPU, built in place (no table of `MAX_CPUS`
    /// entries to fill first: the cross-core IPC round trip builds one on
    /// each idle entry).
    fn cpu_loads(&self, movable: bool) -> heapless::Vec<kcore::sched::CpuLoad, MAX_CPUS> {
        let mut loads = heapless::Vec::new();
        for c in 0..self.cpus_online.min(MAX_CPUS) {
            let highest_prio = self.running_prio(c);
            // `steal_from` takes only from a CPU running a thread: the
            // queue of one that idles is not looked through.
            let queued = if !movable {
                self.run_queues[c].len()
            } else if highest_prio.is_some() && !self.run_queues[c].is_empty() {
                usize::from(self.movable_in(c).is_some())
            } else {
                0
            };
            let online = percpu::of(c).online.load(Ordering::Relaxed);
            // Cannot be refused: at most MAX_CPUS entries.
            let _ = loads.push(kcore::sched::CpuLoad { online, highest_prio, queued });
        }
        loads
    }

    /// Where thread `t`, waking at `prio` with `home` its CPU, queues
    /// (`kcore::sched::wake_cpu`): home when it runs there at once, else
    /// an idle CPU. A thread still current somewhere (suspended in ring 3,
    /// that CPU not yet back in the kernel) goes back there, always.
    fn wake_cpu(&self, t: Id, home: usize, pinned: bool, prio: u8) -> usize {
        if pinned || kcore::sched::should_preempt(self.running_prio(home), prio) || self.cpus_online < 2 || self.cpu_holding(t).is_some() {
            return home;
        }
        let loads = self.cpu_loads(false);
        kcore::sched::wake_cpu(home, pinned, prio, &loads)
    }

    /// The first thread queued on `cpu` that another CPU may run: runnable,
    /// no affinity, current nowhere.
    fn movable_in(&self, cpu: usize) -> Option<(Id, u8)> {
        self.run_queues[cpu].find(|t| {
            self.thread(t).is_some_and(|th| th.state == ThreadState::Runnable && th.affinity.is_none() && th.throttled_until.is_none())
                && self.cpu_holding(t).is_none()
        })
    }

    /// An idle `cpu` takes a thread queued on another (the longest queue's
    /// first that may move): whether it took one.
    fn steal(&mut self, cpu: usize) -> bool {
        if self.cpus_online < 2 || (0..self.cpus_online).all(|c| c == cpu || self.run_queues[c].is_empty()) {
            return false;
        }
        let loads = self.cpu_loads(true);
        let Some(from) = kcore::sched::steal_from(cpu, &loads) else { return false };
        let Some((t, prio)) = self.movable_in(from) else { return false };
        self.run_queues[from].remove(t, prio);
        if let Some(th) = self.thread_mut(t) {
            th.cpu = cpu;
        }
        self.run_queues[cpu].push_back(t, prio);
        true
    }

    /// A CPU that goes on with its thread while another waits in its queue
    /// wakes an idle CPU to take that one (`steal`).
    fn offer_queued(&self, cpu: usize) {
        if self.run_queues[cpu].is_empty() || self.cpus_online < 2 || self.movable_in(cpu).is_none() {
            return;
        }
        let idle = (0..self.cpus_online).find(|&c| {
            c != cpu && self.current[c].is_none() && self.run_queues[c].is_empty() && percpu::of(c).online.load(Ordering::Relaxed)
        });
        if let Some(c) = idle {
            self.resched(c);
        }
    }

    /// Takes a thread off whatever it waits on (queues, timeouts).
    pub fn unblock_cleanup(&mut self, t: Id) {
        let Some(th) = self.thread(t) else { return };
        match th.state {
            ThreadState::Sending { endpoint, .. } => {
                if let Some(ep) = self.endpoints.get_mut(endpoint) {
                    ep.senders.retain(|&x| x != t);
                }
            }
            ThreadState::Receiving { endpoint } => {
                // Not linked if a sender already took it off (it is woken
                // with its message): then there is nothing to undo.
                if let Some(ep) = self.endpoints.get_mut(endpoint) {
                    let _ = ep.receivers.remove(&mut self.threads, t);
                }
            }
            ThreadState::Waiting { notification } => {
                if let Some(n) = self.notifications.get_mut(notification) {
                    n.waiters.retain(|&x| x != t);
                }
            }
            ThreadState::Runnable => {
                let (cpu, prio) = (th.cpu, th.priority);
                self.run_queues[cpu].remove(t, prio);
            }
            _ => {}
        }
        if let Some(d) = self.thread_mut(t).and_then(|th| th.deadline.take()) {
            self.timeouts.remove(d, t);
        }
    }

    /// Takes `t` out of the throttled set, if it is there.
    pub fn unthrottle(&mut self, t: Id) {
        if let Some(until) = self.thread_mut(t).and_then(|th| th.throttled_until.take()) {
            self.throttled.remove(until, t);
        }
    }

    /// Blocks the current thread of this CPU (its state already set by the
    /// caller), with an optional deadline.
    pub fn block_current(&mut self, deadline: Option<u64>) {
        let cpu = percpu::index();
        if let Some(t) = self.current[cpu].take() {
            if let Some(th) = self.thread_mut(t) {
                th.deadline = deadline;
                if !th.cpu_budget.is_unlimited() {
                    // Charge the run that ends here; the throttle check
                    // happens when it next leaves the kernel.
                    let now = arch::time::nanos_since_boot();
                    th.cpu_budget.charge(now, now.saturating_sub(th.ran_since));
                    th.ran_since = now;
                }
            }
            if let Some(d) = deadline {
                self.timeouts.insert(d, t);
            }
        }
    }

    /// Charges the thread running on this CPU for the time since it entered
    /// ring 3, if it has a CPU budget; throttles it when the budget is spent.
    pub fn account_current(&mut self, cpu: usize) {
        let Some(t) = self.current[cpu] else { return };
        let Some(th) = self.thread_mut(t) else { return };
        if th.cpu_budget.is_unlimited() || th.state != ThreadState::Running {
            return;
        }
        let now = arch::time::nanos_since_boot();
        let ran = now.saturating_sub(th.ran_since);
        th.cpu_budget.charge(now, ran);
        th.ran_since = now;
        if th.cpu_budget.is_throttled(now) {
            let until = th.cpu_budget.replenish_at().unwrap_or(now + 1_000_000);
            th.state = ThreadState::Inactive;
            let before = th.throttled_until.replace(until);
            self.current[cpu] = None;
            if let Some(b) = before {
                self.throttled.remove(b, t);
            }
            self.throttled.insert(until, t);
        }
    }

    /// Returns throttled threads whose budget came back to their run queues.
    pub fn replenish(&mut self, now: u64) {
        while let Some((_, t)) = self.throttled.pop_due(now) {
            if let Some(th) = self.thread_mut(t) {
                th.throttled_until = None;
            }
            self.make_runnable(t);
        }
    }

    /// Wakes threads whose deadline passed, with `Timeout`.
    pub fn expire_timeouts(&mut self, now: u64) {
        while let Some((_, t)) = self.timeouts.pop_due(now) {
            self.unblock_cleanup(t);
            if let Some(th) = self.thread_mut(t) {
                // A halted vCPU restarts its system call; others time out.
                if th.state != ThreadState::GuestHalted {
                    th.ctx.rax = abi::Error::Timeout as u64;
                }
            }
            self.make_runnable(t);
        }
    }

    /// Picks what this CPU runs next: the current thread keeps the CPU
    /// unless a higher-priority one is ready or its slice ended.
    pub fn schedule(&mut self, cpu: usize, slice_over: bool) -> Option<Id> {
        let cur = self.current[cpu].filter(|&c| self.thread(c).is_some_and(|t| t.state == ThreadState::Running));
        if let Some(c) = cur {
            let prio = self.thread(c).map_or(0, |t| t.priority);
            let best = self.run_queues[cpu].peek_highest_priority();
            if !kcore::sched::should_switch(prio, best, slice_over) {
                return Some(c);
            }
            if let Some(th) = self.thread_mut(c) {
                th.state = ThreadState::Runnable;
            }
            if slice_over {
                self.run_queues[cpu].push_back(c, prio);
            } else {
                self.run_queues[cpu].push_front(c, prio);
            }
        }
        self.current[cpu] = None;
        while let Some((t, _)) = self.run_queues[cpu].pop_highest() {
            if let Some(th) = self.thread_mut(t)
                && th.state == ThreadState::Runnable {
                    th.state = ThreadState::Running;
                    self.current[cpu] = Some(t);
                    return Some(t);
                }
        }
        None
    }

    /// Frees dead address-space roots that no CPU has loaded any more; moves
    /// this CPU off one first.
    pub fn reap_pml4s(&mut self) {
        use core::sync::atomic::Ordering::Acquire;
        let mine = percpu::this().cr3.load(Acquire);
        if self.dead_pml4s.contains(&mine) {
            arch::cpu::write_cr3(arch::paging::boot_cr3());
        }
        let online = self.cpus_online;
        self.dead_pml4s.retain(|&p| {
            let loaded = (0..online).any(|c| percpu::of(c).cr3.load(Acquire) == p);
            if !loaded {
                mem::free_frames(p, 1);
            }
            loaded
        });
    }

    /// The earliest timeout or budget replenishment (two loads: each set
    /// keeps its first deadline).
    #[inline(always)]
    pub fn first_deadline(&self) -> u64 {
        self.timeouts.first().min(self.throttled.first())
    }

    /// The CPU that still has thread `t` current, if any: a thread
    /// suspended from another CPU stays current there until that CPU
    /// schedules again (`ThreadSuspend` made it leave ring 3). Until then
    /// its saved frame may still change and it must go back to that CPU.
    pub fn cpu_holding(&self, t: Id) -> Option<usize> {
        self.current.iter().position(|&c| c == Some(t))
    }

    pub fn pick_cpu(&self, affinity: Option<usize>) -> usize {
        let loads: Vec<kcore::sched::CpuLoad> = (0..self.cpus_online)
            .map(|c| kcore::sched::CpuLoad {
                online: percpu::of(c).online.load(Ordering::Relaxed),
                highest_prio: self.current[c].and_then(|t| self.thread(t)).map(|t| t.priority),
                queued: self.run_queues[c].len(),
            })
            .collect();
        kcore::sched::pick_cpu(affinity, &loads)
    }
}

// ---- entry points ---------------------------------------------------------

/// Prepares the CPU to run `t` in ring 3 (address space, saved-context
/// pointer, I/O bitmap) and the timer for its slice.
fn switch_to(k: &mut Kernel, cpu: usize, t: Id) {
    let (top, pml4, owner) = {
        let th = k.thread(t).expect("current thread exists");
        let proc = k.processes.get(th.process).expect("thread's process exists");
        (context_top_of(th), proc.pml4, proc.io_bitmap.as_ref().map(|_| th.process))
    };
    load_context(top, pml4);
    set_io_bitmap_owner(&mut k.io_bitmap_owner, &k.processes, cpu, owner);
    if k.fpu_owner[cpu].is_some_and(|o| o != t) {
        fpu::park(&mut k.fpu_owner[cpu], &mut k.threads);
    }
}

/// Where `PerCpu.context_top` points for thread `th`: just past its saved
/// registers.
fn context_top_of(th: &Thread) -> u64 {
    (&th.ctx as *const TrapFrame as u64) + core::mem::size_of::<TrapFrame>() as u64
}

/// The register and address-space part of `switch_to`: the saved-context
/// pointer (and TSS.RSP0) and CR3, each written only when it changes.
#[inline(always)]
fn load_context(top: u64, pml4: u64) {
    let me = percpu::this();
    if me.context_top != top {
        percpu::set_context_top(top);
    }
    if me.cr3.load(Ordering::Relaxed) != pml4 {
        arch::cpu::write_cr3(pml4);
    }
}

/// The I/O-bitmap part of `switch_to`: `owner` is the process whose bitmap
/// this CPU's TSS must hold (None: all ports denied). The bitmap is 8 KiB:
/// copied only when the owner changes.
#[inline(always)]
fn set_io_bitmap_owner(owners: &mut [Option<Id>; MAX_CPUS], processes: &Slab<Process>, cpu: usize, owner: Option<Id>) {
    if owners[cpu] != owner {
        change_io_bitmap_owner(owners, processes, cpu, owner);
    }
}

/// The copy of [`set_io_bitmap_owner`], out of line: the switches of the
/// IPC fast path and the VM exit's way back seldom change the owner.
#[cold]
#[inline(never)]
fn change_io_bitmap_owner(owners: &mut [Option<Id>; MAX_CPUS], processes: &Slab<Process>, cpu: usize, owner: Option<Id>) {
    let bitmap = owner.and_then(|pid| processes.get(pid)).and_then(|p| p.io_bitmap.as_deref());
    arch::gdt::set_io_bitmap(cpu, bitmap);
    owners[cpu] = owner;
}

const SLICE_US: u64 = 10_000;

/// Leaves the kernel: to the current thread in ring 3, or to the idle loop.
pub fn exit_kernel(mut k: KernelGuard) -> ! {
    let cpu = percpu::index();
    // A loop, not recursion through an idle function: an idle CPU comes back
    // here after every interrupt, and each pass must not grow the stack.
    loop {
    if !k.dead_pml4s.is_empty() {
        k.reap_pml4s();
    }
    k.account_current(cpu);
    // The clock is read only when something depends on it.
    let first_timeout = k.first_deadline();
    let mut now = if first_timeout != u64::MAX { arch::time::nanos_since_boot() } else { 0 };
    if first_timeout <= now {
        k.expire_timeouts(now);
        k.replenish(now);
    }
    // A tick that came while interrupts were off (a guest that cannot be
    // made to exit by it, as under Bochs, or a kernel-finished VM exit)
    // belongs to the thread that ran: take it before deciding, so it ends
    // that thread's slice and not, delivered in ring 3 right after the
    // switch, the next thread's before it ran at all (issue 14; the
    // handlers taken here only record, none takes the lock).
    arch::cpu::open_interrupt_window();
    let slice_over = percpu::this().need_resched.swap(false, Ordering::Relaxed);
    match k.schedule(cpu, slice_over) {
        Some(t) => {
            k.offer_queued(cpu);
            switch_to(&mut k, cpu, t);
            // A new slice, an earlier timeout, or coming out of idle needs
            // the timer; a thread that got the CPU through IPC carries on
            // with the slice it was handed (as seL4's fast path does). A
            // thread with a CPU budget is stopped when the budget runs out.
            let mut first_timeout = if now == 0 { u64::MAX } else { k.first_deadline() };
            let limited = k.thread(t).is_some_and(|th| !th.cpu_budget.is_unlimited());
            if limited {
                if now == 0 {
                    now = arch::time::nanos_since_boot();
                }
                let th = k.thread_mut(t).expect("current");
                th.ran_since = now;
                first_timeout = first_timeout.min(now.saturating_add(th.cpu_budget.remaining_ns(now).max(1000)));
            }
            let rearm = match k.last_run[cpu] {
                Some((last, armed)) => slice_over || first_timeout < armed || (limited && last != t),
                None => true,
            };
            if rearm {
                if now == 0 {
                    now = arch::time::nanos_since_boot();
                }
                let deadline = (now + SLICE_US * 1000).min(first_timeout);
                apic::arm_oneshot_us(deadline.saturating_sub(now) / 1000 + 1);
                k.last_run[cpu] = Some((t, deadline));
            }
            // Flag ring 3 before letting go of the lock: another CPU that
            // ends this thread's process must see it and wait for us.
            percpu::this().in_user.store(true, Ordering::Release);
            drop(k);
            arch::enter_user()
        }
        None => {
            // Work queued on a busy CPU runs here instead.
            if k.steal(cpu) {
                continue;
            }
            if now == 0 {
                now = arch::time::nanos_since_boot();
            }
            let first = k.first_deadline();
            let next = (first != u64::MAX).then(|| first.saturating_sub(now) / 1000 + 1);
            k.last_run[cpu] = None;
            // Its registers saved before the lock goes: the thread may be
            // woken on another CPU meanwhile.
            let Kernel { fpu_owner, threads, .. } = &mut *k;
            fpu::park(&mut fpu_owner[cpu], threads);
            drop(k);
            // Every pass through here must start from a shallow stack (no
            // recursion between idling and scheduling: that once overran
            // the 32 KiB kernel stack after tens of seconds of idling).
            let depth = percpu::this().kernel_stack_top.saturating_sub(arch::cpu::stack_pointer());
            assert!(depth < 2048, "idle at a kernel stack depth of {depth} bytes");
            // Idle: zero free memory ahead of need, a batch per pass (the
            // pass after it looks for work again, interrupts taken in the
            // window), and once there is none to zero, wait for an
            // interrupt that may have made work.
            if mem::zero_ahead() > 0 {
                arch::cpu::open_interrupt_window();
            } else {
                apic::arm_oneshot_us(next.unwrap_or(100_000).min(100_000));
                arch::cpu::wait_for_interrupt();
            }
            k = lock();
            deliver_pending_irqs(&mut k);
        }
    }
    }
}

/// Turns IOAPIC lines that fired while this CPU was in the kernel into
/// notification signals.
#[inline(always)]
pub fn deliver_pending_irqs(k: &mut Kernel) {
    // Checked inline (every system call passes here); the swap and the
    // delivery only when something is pending.
    if percpu::any_pending() {
        deliver_pending_irqs_slow(k);
    }
}

#[inline(never)]
fn deliver_pending_irqs_slow(k: &mut Kernel) {
    if !percpu::this().any_pending.swap(false, Ordering::AcqRel) {
        return;
    }
    for (w, word) in percpu::this().pending_msi.iter().enumerate() {
        if word.load(Ordering::Relaxed) == 0 {
            continue;
        }
        let bits = word.swap(0, Ordering::AcqRel);
        for b in 0..64 {
            if bits & (1 << b) != 0 {
                ipc::msi_fired(k, w * 64 + b);
            }
        }
    }
    if percpu::this().pending_irqs.load(Ordering::Relaxed) == 0 {
        return;
    }
    let pending = percpu::this().pending_irqs.swap(0, Ordering::AcqRel);
    for line in 0..apic::IRQ_LINES {
        if pending & (1 << line) != 0 {
            ipc::irq_fired(k, line as u8);
        }
    }
}

/// Called from entry.s with the `preserve_none` convention: it never returns
/// (each way out is a jump to ring 3 through `return_to_user*`), so the
/// registers a C callee would save for its caller hold nothing anybody
/// needs, and saving them cost six pushes on every system call.
#[unsafe(no_mangle)]
extern "rust-preserve-none" fn syscall_from_user() -> ! {
    // The entry saved the registers into the current thread's context;
    // dispatch reaches them through the thread object. Two copies of
    // the path: with the benchmark's phase stamps and without (one check
    // here instead of one per stamp).
    if phases::on() { syscall_path::<true>() } else { syscall_path::<false>() }
}

#[inline(always)]
fn syscall_path<const STAMP: bool>() -> ! {
    phases::stamp_if::<STAMP>(0);
    percpu::set_in_user::<false>();
    let mut k = lock();
    deliver_pending_irqs(&mut k);
    phases::stamp_if::<STAMP>(1);
    // Running a vCPU gives up the lock while the guest runs.
    let cpu = percpu::index();
    if let Some(me) = k.current[cpu] {
        match fastpath::try_ipc::<STAMP>(&mut k, cpu, me) {
            fastpath::Attempt::Switched => {
                // The fast path has switched to the next thread itself.
                phases::stamp_if::<STAMP>(4);
                percpu::set_in_user::<true>();
                drop(k);
                phases::done_if::<STAMP>();
                arch::enter_user_after_syscall()
            }
            // The thread runs (the fast path looked) and its call is not
            // IPC: the two calls handled apart from the dispatch take what
            // they need from that same look.
            fastpath::Attempt::Other { number, arg0, process } => {
                if number == abi::Sys::VcpuRun as u64 {
                    let (mut k, exit) = vm::vcpu_run(k, me, process, arg0);
                    deliver_pending_irqs(&mut k);
                    let k = fastpath::resume_caller(k, cpu, me, exit.map(|e| e as u64));
                    exit_kernel(k)
                }
                if number == abi::Sys::DebugWrite as u64 {
                    let k = debug_write(k, cpu, me);
                    exit_kernel(k)
                }
            }
            // Suspended from another CPU while this one came in for the lock
            // (or suspended and resumed: then it waits in this CPU's run
            // queue): the call has not begun and must not, or a suspended
            // thread would act, block or be woken. It restarts when the thread
            // runs again: RIP back over SYSCALL, RAX still its number.
            fastpath::Attempt::Declined => {
                if let Some(th) = k.thread_mut(me)
                    && th.state != ThreadState::Running
                {
                    th.ctx.rip = th.ctx.rip.wrapping_sub(2);
                    exit_kernel(k)
                }
            }
        }
    }
    syscall::dispatch(&mut k);
    exit_kernel(k)
}

/// Bytes `DebugWrite` sends to the UART per taking of the serial lock.
const DEBUG_WRITE_CHUNK: usize = 64;

/// `DebugWrite`: the bytes are checked and copied under the big lock, then
/// written to the polled UART with only the serial lock held, a chunk at a
/// time: 4 KiB of newlines takes the UART about 0.7 s at 115200 baud,
/// which once stalled every CPU waiting for the big lock (security issue
/// finding 15). The writer's own CPU still spends that time; the kernel's
/// own messages wait at most one chunk.
fn debug_write(mut k: KernelGuard, cpu: usize, me: kcore::slab::Id) -> KernelGuard {
    let mut buf = [0u8; 4096];
    let r = syscall::debug_write_prepare(&k, me, &mut buf);
    if let Ok(len) = r {
        drop(k);
        // Bytes as they came: a guest's console output is not always
        // UTF-8 (box drawing in code page 437, a character cut at a chunk
        // boundary), and none of it may be lost.
        for chunk in buf[..len].chunks(DEBUG_WRITE_CHUNK) {
            arch::serial::with_locked(|w| w.write_bytes(chunk));
        }
        k = lock();
        deliver_pending_irqs(&mut k);
    }
    // Still this CPU's thread (not ended meanwhile, its id not reused):
    // only this CPU changes `current[cpu]` to another thread.
    if k.current[cpu] == Some(me)
        && let Some(th) = k.thread_mut(me)
    {
        match r {
            Ok(len) => {
                th.ctx.rax = 0;
                th.ctx.rdi = len as u64;
            }
            Err(e) => th.ctx.rax = e as u64,
        }
    }
    k
}

#[unsafe(no_mangle)]
extern "C" fn trap_from_user(frame: &mut TrapFrame) -> ! {
    percpu::this().in_user.store(false, Ordering::Release);
    let vector = frame.vector as u8;
    match vector {
        apic::TIMER_VECTOR | apic::RESCHED_VECTOR => {
            percpu::this().need_resched.store(true, Ordering::Relaxed);
            percpu::this().ticks.fetch_add(1, Ordering::Relaxed);
            apic::eoi();
        }
        apic::TLB_VECTOR => {
            arch::cpu::flush_tlb();
            percpu::this().tlb_acks.fetch_add(1, Ordering::AcqRel);
            apic::eoi();
            arch::enter_user();
        }
        v if (apic::IRQ_BASE_VECTOR..apic::IRQ_BASE_VECTOR + apic::IRQ_LINES as u8).contains(&v) => {
            apic::set_line_masked(u32::from(v - apic::IRQ_BASE_VECTOR), true);
            percpu::this().pending_irqs.fetch_or(1 << (v - apic::IRQ_BASE_VECTOR), Ordering::AcqRel);
            percpu::this().any_pending.store(true, Ordering::Release);
            apic::eoi();
        }
        v if (apic::MSI_BASE_VECTOR..apic::TIMER_VECTOR).contains(&v) => msi_arrived(v),
        apic::SPURIOUS_VECTOR => {}
        7 => {
            // #NM: the thread's first FPU/SSE use since it got the CPU.
            let mut k = lock();
            fpu::claim(&mut k, percpu::index());
            deliver_pending_irqs(&mut k);
            exit_kernel(k)
        }
        0..=31 => {
            let mut k = lock();
            process::user_fault(&mut k, frame);
            exit_kernel(k)
        }
        _ => apic::eoi(),
    }
    let mut k = lock();
    deliver_pending_irqs(&mut k);
    exit_kernel(k)
}

/// Interrupts taken in ring 0 (the idle loop, or spinning for the lock):
/// only record them; the next pass through the scheduler acts on them.
pub fn interrupt_in_kernel(vector: u8) {
    match vector {
        apic::TIMER_VECTOR | apic::RESCHED_VECTOR => {
            percpu::this().need_resched.store(true, Ordering::Relaxed);
            percpu::this().ticks.fetch_add(1, Ordering::Relaxed);
            apic::eoi();
        }
        apic::TLB_VECTOR => {
            arch::cpu::flush_tlb();
            percpu::this().tlb_acks.fetch_add(1, Ordering::AcqRel);
            apic::eoi();
        }
        v if (apic::IRQ_BASE_VECTOR..apic::IRQ_BASE_VECTOR + apic::IRQ_LINES as u8).contains(&v) => {
            apic::set_line_masked(u32::from(v - apic::IRQ_BASE_VECTOR), true);
            percpu::this().pending_irqs.fetch_or(1 << (v - apic::IRQ_BASE_VECTOR), Ordering::AcqRel);
            percpu::this().any_pending.store(true, Ordering::Release);
            apic::eoi();
        }
        v if (apic::MSI_BASE_VECTOR..apic::TIMER_VECTOR).contains(&v) => msi_arrived(v),
        apic::SPURIOUS_VECTOR => {}
        _ => apic::eoi(),
    }
}

/// An MSI arrived: edge-triggered, so acknowledged at once and delivered at
/// the next pass through the kernel.
fn msi_arrived(v: u8) {
    let i = usize::from(v - apic::MSI_BASE_VECTOR);
    percpu::this().pending_msi[i / 64].fetch_or(1 << (i % 64), Ordering::AcqRel);
    percpu::this().any_pending.store(true, Ordering::Release);
    apic::eoi();
}

/// Every CPU ends bring-up here.
pub fn run_cpu() -> ! {
    let k = lock();
    exit_kernel(k)
}
