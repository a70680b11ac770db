//! The IPC fast path, after seL4's: `Call` to a server already waiting on
//! the endpoint and `ReplyRecv` to a caller waiting for its reply, on the
//! same CPU, with a message in registers alone and no capabilities, switch
//! straight to the other thread: no run queue, no timer reprogramming (the
//! callee runs on the caller's time slice), no general scheduling pass.
//! Anything else — a cross-CPU peer, a higher-priority thread ready, a
//! timeout, a CPU budget, a long message — takes the general path in
//! `ipc.rs`, which gives the same results.

use super::{Kernel, Obj, ThreadState};
use crate::arch::percpu;
use abi::{MsgInfo, Rights, Sys, MSG_REG_WORDS};
use core::sync::atomic::{AtomicBool, Ordering};
use kcore::slab::Id;

/// Set by the boot flag `alcove.fastpath=off`: every system call takes the
/// general path (the null call's assembly path included, entry.s reads it),
/// so a test suite run both ways shows the two paths agree.
#[unsafe(no_mangle)]
pub static FASTPATH_OFF: AtomicBool = AtomicBool::new(false);

/// Tries the fast path for the current thread `me` on `cpu`; on success the
/// next thread is current and the caller only has to leave the kernel.
pub fn try_ipc(k: &mut Kernel, cpu: usize, me: Id) -> bool {
    let Some(th) = k.thread(me) else { return false };
    let n = th.ctx.rax;
    let call = if n == Sys::Call as u64 {
        true
    } else if n == Sys::ReplyRecv as u64 {
        false
    } else {
        return false;
    };
    if FASTPATH_OFF.load(Ordering::Relaxed)
        || percpu::this().need_resched.load(Ordering::Relaxed) || !k.throttled.is_empty() || !th.cpu_budget.is_unlimited() {
        return false;
    }
    let (slot, raw_info, regs) = (th.ctx.rdi, th.ctx.rsi, [th.ctx.rdx, th.ctx.r10, th.ctx.r8, th.ctx.r9]);
    let Some(info) = MsgInfo::decode(raw_info) else { return false };
    if info.words as usize > MSG_REG_WORDS || info.caps != 0 {
        return false;
    }
    let Some(space) = k.processes.get(th.process).map(|p| p.space) else { return false };
    super::phases::stamp(2);
    let Ok(slot) = u32::try_from(slot) else { return false };
    let Ok(cap) = k.caps.lookup(space, slot) else { return false };
    let (Obj::Endpoint(ep), badge, rights) = (cap.object, cap.badge, cap.rights) else { return false };
    if !rights.contains(if call { Rights::SEND } else { Rights::RECV }) {
        return false;
    }
    super::phases::stamp(3);
    let my_prio = th.priority;
    let highest_ready = k.run_queues[cpu].peek_highest_priority();
    // The thread that gets the CPU must be the one the scheduler would pick.
    let fits = |t: &super::Thread| {
        t.cpu == cpu && t.deadline.is_none() && t.cpu_budget.is_unlimited() && highest_ready.is_none_or(|p| p <= t.priority)
    };
    if call {
        if !rights.contains(Rights::SEND) {
            return false;
        }
        let Some(&r) = k.endpoints.get(ep).and_then(|e| e.receivers.front()) else { return false };
        match k.thread(r) {
            Some(t) if fits(t) && t.priority >= my_prio && matches!(t.state, ThreadState::Receiving { .. }) => {}
            _ => return false,
        }
        k.endpoints.get_mut(ep).expect("checked").receivers.pop_front();
        let rt = k.thread_mut(r).expect("checked");
        rt.ctx.rax = 0;
        rt.ctx.rdi = badge;
        rt.ctx.rsi = MsgInfo::new(info.label, info.words, 0).encode();
        rt.ctx.rdx = regs[0];
        rt.ctx.r10 = regs[1];
        rt.ctx.r8 = regs[2];
        rt.ctx.r9 = regs[3];
        rt.reply_to = Some(me);
        rt.state = ThreadState::Running;
        k.thread_mut(me).expect("me").state = ThreadState::AwaitingReply;
        k.current[cpu] = Some(r);
        true
    } else {
        if !rights.contains(Rights::RECV) {
            return false;
        }
        let Some(c) = k.thread(me).and_then(|t| t.reply_to) else { return false };
        match k.thread(c) {
            Some(t) if fits(t) && t.state == ThreadState::AwaitingReply => {}
            _ => return false,
        }
        let Some(e) = k.endpoints.get(ep) else { return false };
        if !e.senders.is_empty() {
            return false; // a message is waiting: the general path receives it
        }
        if let Some(nt) = k.thread(me).and_then(|t| t.bound_notification).and_then(|n| k.notifications.get(n))
            && nt.bits != 0 {
                return false;
            }
        let ct = k.thread_mut(c).expect("checked");
        ct.ctx.rax = 0;
        ct.ctx.rdi = 0;
        ct.ctx.rsi = MsgInfo::new(info.label, info.words, 0).encode();
        ct.ctx.rdx = regs[0];
        ct.ctx.r10 = regs[1];
        ct.ctx.r8 = regs[2];
        ct.ctx.r9 = regs[3];
        ct.state = ThreadState::Running;
        let mt = k.thread_mut(me).expect("me");
        mt.reply_to = None;
        mt.state = ThreadState::Receiving { endpoint: ep };
        k.endpoints.get_mut(ep).expect("checked").receivers.push_back(me);
        k.current[cpu] = Some(c);
        true
    }
}

/// The way back from a system call that leaves the caller current (a
/// `VcpuRun` whose exit goes to the VMM): straight back to ring 3 when the
/// general exit (`exit_kernel`) would pick the same thread and change
/// nothing: no reschedule asked for, no thread of higher priority ready, no
/// CPU budget to charge, no page tables to reap, no timeout due (the next
/// one's timer interrupt then does what the general path would, as for a
/// thread that never entered the kernel). Otherwise gives the lock back for
/// the general path.
pub fn resume_caller(mut k: super::KernelGuard, cpu: usize, me: Id) -> super::KernelGuard {
    if FASTPATH_OFF.load(Ordering::Relaxed) || percpu::this().need_resched.load(Ordering::Relaxed) || !k.dead_pml4s.is_empty() {
        return k;
    }
    if k.current[cpu] != Some(me) {
        return k;
    }
    let Some(th) = k.thread(me) else { return k };
    if th.state != ThreadState::Running || !th.cpu_budget.is_unlimited() {
        return k;
    }
    if k.run_queues[cpu].peek_highest_priority().is_some_and(|p| p > th.priority) {
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
    if first != u64::MAX && first <= crate::arch::time::nanos_since_boot() {
        return k;
    }
    super::switch_to(&mut k, cpu, me);
    percpu::this().in_user.store(true, Ordering::Release);
    drop(k);
    crate::arch::enter_user()
}
