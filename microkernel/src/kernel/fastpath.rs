//! The IPC fast path, after seL4's: `Call` to a server already waiting on
//! the endpoint and `ReplyRecv` to a caller waiting for its reply, on the
//! same CPU, with a message in registers alone and no capabilities, switch
//! straight to the other thread: no run queue, no timer reprogramming (the
//! callee runs on the caller's time slice), no general scheduling pass.
//! Anything else — a cross-CPU peer, a higher-priority thread ready, a
//! timeout, a CPU budget, a long message — takes the general path in
//! `ipc.rs`, which gives the same results.

use super::{Kernel, Obj, Thread, ThreadState};
use crate::arch::percpu;
use abi::{Rights, Sys, MSG_REG_WORDS};
use core::sync::atomic::{AtomicBool, Ordering};
use kcore::cap::CapSystem;
use kcore::slab::Id;

/// Set by the boot flag `alcove.fastpath=off`: every system call takes the
/// general path (the null call's assembly path included, entry.s reads it),
/// so a test suite run both ways shows the two paths agree.
#[unsafe(no_mangle)]
pub static FASTPATH_OFF: AtomicBool = AtomicBool::new(false);

/// What [`try_ipc`] did.
pub enum Attempt {
    /// The next thread is current, its context and address space loaded:
    /// the caller only has to leave the kernel.
    Switched,
    /// Not taken (nothing has changed): the general path decides.
    Declined,
    /// The running caller's call is neither `Call` nor `ReplyRecv`: its
    /// number, first argument and process, read by the same lookup of the
    /// thread (nothing has changed), so that `VcpuRun` and `DebugWrite`
    /// need not look the thread up again.
    Other { number: u64, arg0: u64, process: Id },
}

/// Tries the fast path for the current thread `me` on `cpu`; on success the
/// next thread is current, its context and address space are loaded, and
/// the caller only has to leave the kernel. On failure nothing has changed.
///
/// Each object is looked up once (the kernel's fields are borrowed apart,
/// the caller and its peer together), the message header is checked with
/// one compare, and the switch writes only what differs between the two
/// threads (CR3 and the I/O bitmap belong to the process: unchanged between
/// threads of one process). The caller's FPU/SSE registers are saved only
/// if it used them since it got the CPU (`fpu`: the peer's are loaded at
/// its first use).
/// `STAMP`: whether the benchmark's phase stamps are on (`phases::on`,
/// checked once by the caller).
#[inline(always)]
pub fn try_ipc<const STAMP: bool>(k: &mut Kernel, cpu: usize, me: Id) -> Attempt {
    // Lookups by ids this path knows to be live skip the slab's generation
    // compare (`get_live`; each says why): `me` is this CPU's current
    // thread, and `kill_thread` clears `current` on every CPU before the
    // thread is freed.
    let Some(th) = k.threads.get_live(me) else { return Attempt::Declined };
    // Suspended from another CPU as this one came in: the general path
    // restarts the call later.
    if th.state != ThreadState::Running {
        return Attempt::Declined;
    }
    let n = th.ctx.rax;
    let call = if n == Sys::Call as u64 {
        true
    } else if n == Sys::ReplyRecv as u64 {
        false
    } else {
        return Attempt::Other { number: n, arg0: th.ctx.rdi, process: th.process };
    };
    if FASTPATH_OFF.load(Ordering::Relaxed) || !th.cpu_budget.is_unlimited() {
        return Attempt::Declined;
    }
    // The header in one compare: above bit 32 only a word count of at most
    // MSG_REG_WORDS (no capabilities, no stray bits). Such a header is
    // exactly what the receiver sees (`MsgInfo::new(label, words, 0)`).
    let info = th.ctx.rsi;
    if info >> 32 > MSG_REG_WORDS as u64 {
        return Attempt::Declined;
    }
    // Only what the checks before the switch need is read here; the rest
    // comes from the caller's thread once both threads are borrowed (read
    // early, it would sit in stack slots across the lookups).
    let (my_process, reply_to) = (th.process, th.reply_to);
    let Ok(slot) = u32::try_from(th.ctx.rdi) else { return Attempt::Declined };
    super::phases::stamp_if::<STAMP>(2);
    // A copy of the rest for each call: the compiler then knows which one
    // at every step, which spares a register and a test at each of them.
    if call {
        ipc::<STAMP, true>(k, cpu, me, info, slot, my_process, reply_to)
    } else {
        ipc::<STAMP, false>(k, cpu, me, info, slot, my_process, reply_to)
    }
}

/// The rest of [`try_ipc`] for a `Call` (`CALL`) or a `ReplyRecv` of the
/// running thread `me` whose header `info`, capability `slot`, process and
/// `reply_to` it read and checked.
#[inline(always)]
fn ipc<const STAMP: bool, const CALL: bool>(
    k: &mut Kernel,
    cpu: usize,
    me: Id,
    info: u64,
    slot: u32,
    my_process: Id,
    reply_to: Option<Id>,
) -> Attempt {
    let call = CALL;
    let Kernel { threads, processes, caps, endpoints, notifications, run_queues, throttled, current, io_bitmap_owner, fpu_owner, .. } = k;
    // A peer on another CPU takes the general path (which wakes it there):
    // its CPU is checked as soon as the peer is known, before any other
    // lookup, so a cross-CPU round trip wastes as little as it can here.
    // A reply's peer is known from the caller alone, before the capability
    // lookup; a call's is the endpoint's first waiting receiver.
    let (peer, ep, badge, proc, e, mt, pt) = if call {
        let Some((ep, badge, proc)) = endpoint_of(caps, processes, my_process, slot, Rights::SEND) else { return Attempt::Declined };
        super::phases::stamp_if::<STAMP>(3);
        // Live: the capability just looked up holds a reference to it.
        let Some(e) = endpoints.get_live_mut(ep) else { return Attempt::Declined };
        let Some(r) = e.receivers.front() else { return Attempt::Declined };
        // `r` is live: a thread is unlinked from its receiver list before it
        // is freed (`kill_thread` runs `unblock_cleanup` first, and checks).
        let Some((mt, pt)) = threads.get2_live_mut(me, r) else { return Attempt::Declined };
        if pt.cpu != cpu {
            return Attempt::Declined;
        }
        (r, ep, badge, proc, e, mt, pt)
    } else {
        let Some(c) = reply_to else { return Attempt::Declined };
        // `c` is live: `kill_thread` clears every `reply_to` naming the
        // thread it frees.
        let Some((mt, pt)) = threads.get2_live_mut(me, c) else { return Attempt::Declined };
        if pt.cpu != cpu {
            return Attempt::Declined;
        }
        let Some((ep, badge, proc)) = endpoint_of(caps, processes, my_process, slot, Rights::RECV) else { return Attempt::Declined };
        super::phases::stamp_if::<STAMP>(3);
        // Live: the capability just looked up holds a reference to it.
        let Some(e) = endpoints.get_live_mut(ep) else { return Attempt::Declined };
        if !e.senders.is_empty() {
            return Attempt::Declined; // a message is waiting: the general path receives it
        }
        if let Some(nt) = mt.bound_notification.and_then(|n| notifications.get(n))
            && nt.bits != 0
        {
            return Attempt::Declined; // a bound notification is signalled: it wins
        }
        (c, ep, badge, proc, e, mt, pt)
    };
    // Through the boxes once: each write below is then one store.
    let (mt, pt): (&mut Thread, &mut Thread) = (&mut **mt, &mut **pt);
    let fits = pt.deadline.is_none()
        && pt.cpu_budget.is_unlimited()
        && if call {
            pt.priority >= mt.priority && matches!(pt.state, ThreadState::Receiving { .. })
        } else {
            // The caller is about to be queued: it must be in no list
            // (it runs, so it is not; checked, as a refused queueing after
            // the commit would leave it waiting where nobody finds it).
            matches!(pt.state, ThreadState::AwaitingReply) && mt.wait_link.is_none()
        };
    if !fits {
        return Attempt::Declined;
    }
    // The call itself fits. The thread that gets the CPU must also be the
    // one the scheduler would pick (its CPU is this one, checked above),
    // and the scheduler must have nothing to do first: checked last, so the
    // benchmark counts exactly the calls that fell back for such pending
    // work alone (`phases::fallback_if`).
    if percpu::need_resched()
        || !throttled.is_empty()
        || run_queues[cpu].peek_highest_priority().is_some_and(|p| p > pt.priority)
    {
        super::phases::fallback_if::<STAMP>();
        return Attempt::Declined;
    }
    // The peer's address space and I/O bitmap: the caller's when both are
    // threads of one process.
    let pp = if pt.process == my_process {
        proc
    } else {
        // A live thread's process is live (`endpoint_of`).
        let Some(pp) = processes.get_live(pt.process) else { return Attempt::Declined };
        pp
    };
    let (pml4, io) = (pp.pml4, pp.io_bitmap.is_some());

    // The peer waits in a system call (Receiving or AwaitingReply, checked
    // above), so its frame is the one its SYSCALL saved and the way back
    // may be SYSRET without comparing RCX/R11 (`enter_user_after_syscall`).
    debug_assert!(pt.ctx.rcx == pt.ctx.rip && pt.ctx.r11 == pt.ctx.rflags && pt.ctx.rip >> 47 == 0);
    // Committed: nothing below fails.
    // The receiver list first, through the two threads in hand: the peer of
    // a call is the list's head (`front` above, with nothing stored since,
    // so the compiler can see that it still is), the caller of a ReplyRecv
    // runs, so it is in no list. What is left for a neighbour (a second
    // receiver waiting) is done once they are let go.
    let fix = if call {
        e.receivers.pop_front_held(peer, pt)
    } else {
        // Cannot be refused: `me` is in no list (checked with `fits`).
        e.receivers.push_back_held(me, mt).unwrap_or(kcore::waitlist::Fixup::NONE)
    };
    pt.ctx.rax = 0;
    pt.ctx.rdi = if call { badge } else { 0 };
    pt.ctx.rsi = info;
    pt.ctx.rdx = mt.ctx.rdx;
    pt.ctx.r10 = mt.ctx.r10;
    pt.ctx.r8 = mt.ctx.r8;
    pt.ctx.r9 = mt.ctx.r9;
    pt.state = ThreadState::Running;
    if call {
        pt.reply_to = Some(me);
        mt.state = ThreadState::AwaitingReply;
    } else {
        mt.reply_to = None;
        mt.state = ThreadState::Receiving { endpoint: ep };
    }
    let (top, owner) = (super::context_top_of(pt), io.then_some(pt.process));
    if fpu_owner[cpu].is_some() {
        // The caller used the FPU in this run: its registers go to its
        // thread object and CR0.TS is set for the peer. They can only be
        // the caller's: the owner is always the CPU's current thread on
        // the way into a system call (`fpu`'s invariant: every other way to
        // ring 3 parks first).
        debug_assert_eq!(fpu_owner[cpu], Some(me));
        crate::arch::cpu::fpu_save(&mut mt.fpu.area.0);
        fpu_owner[cpu] = None;
    }
    fix.apply(threads);
    current[cpu] = Some(peer);
    super::load_context(top, pml4);
    super::set_io_bitmap_owner(io_bitmap_owner, processes, cpu, owner);
    Attempt::Switched
}

/// The way back from a system call that leaves the caller current (a
/// `VcpuRun` whose exit goes to the VMM): first the call's result, `exit`
/// if it has one to write (`rax` 0, `rdi` the exit, on every way out: the
/// thread is looked up once for it and for the checks), then straight back to ring 3
/// when the general exit (`exit_kernel`) would pick the same thread and
/// change nothing: no reschedule asked for, no thread of higher priority
/// ready, no CPU budget to charge, no page tables to reap, no timeout due
/// (the next one's timer interrupt then does what the general path would,
/// as for a thread that never entered the kernel). Otherwise gives the
/// lock back for the general path.
#[inline(always)]
pub fn resume_caller(mut k: super::KernelGuard, cpu: usize, me: Id, exit: Option<u64>) -> super::KernelGuard {
    let Some(th) = k.thread_mut(me) else { return k };
    if let Some(exit) = exit {
        th.ctx.rax = 0;
        th.ctx.rdi = exit;
    }
    if th.state != ThreadState::Running || !th.cpu_budget.is_unlimited() {
        return k;
    }
    let (priority, pid) = (th.priority, th.process);
    if FASTPATH_OFF.load(Ordering::Relaxed) || percpu::need_resched() || !k.dead_pml4s.is_empty() {
        return k;
    }
    if k.current[cpu] != Some(me) {
        return k;
    }
    if k.run_queues[cpu].peek_highest_priority().is_some_and(|p| p > priority) {
        return k;
    }
    // This CPU's timer is armed for the slice (for whichever thread ran
    // then: only a thread with a budget, excluded above, needs it armed for
    // itself); a timeout is armed by the CPU that set it, but one already
    // due is expired now, by the general path.
    if k.last_run[cpu].is_none() {
        return k;
    }
    let first = k.first_deadline();
    if first != u64::MAX && crate::arch::time::reached(first) {
        return k;
    }
    // No `switch_to`: the thread never left this CPU, so the context
    // pointer (TSS.RSP0) is still its own, and the CR3 too (a VM exit
    // restores the host CR3 the entry saved, and nothing on this CPU loads
    // another while the lock is down). Only the TSS's I/O bitmap is looked
    // at: another thread of the process may have been given ports on
    // another CPU meanwhile, which the next switch here would pick up.
    // Live: the process of a live thread (looked up above with its
    // generation).
    let owner = k.processes.get_live(pid).and_then(|p| p.io_bitmap.as_ref()).map(|_| pid);
    let super::Kernel { io_bitmap_owner, processes, .. } = &mut *k;
    super::set_io_bitmap_owner(io_bitmap_owner, processes, cpu, owner);
    percpu::set_in_user::<true>();
    drop(k);
    super::phases::done();
    crate::arch::enter_user_flagged()
}

/// The endpoint that capability `slot` of `process`'s table names, with the
/// capability's badge and the process, if it holds `right`.
#[inline(always)]
fn endpoint_of<'p>(
    caps: &CapSystem<Obj>,
    processes: &'p kcore::slab::Slab<super::Process>,
    process: Id,
    slot: u32,
    right: Rights,
) -> Option<(Id, u64, &'p super::Process)> {
    // Live: the process of a live thread (a process record is freed only
    // once it has ended, and ending it kills its threads; an ended process
    // gets no new ones).
    let proc = processes.get_live(process)?;
    let cap = caps.lookup(proc.space, slot).ok()?;
    let (Obj::Endpoint(ep), badge, rights) = (cap.object, cap.badge, cap.rights) else { return None };
    rights.contains(right).then_some((ep, badge, proc))
}
