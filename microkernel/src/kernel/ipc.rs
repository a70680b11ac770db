//! Synchronous endpoints (call, send, recv, reply-recv) and notifications,
//! seL4-style: a message moves directly from the sender's registers and IPC
//! buffer to the receiver's at the rendezvous; nothing is buffered in the
//! kernel. A caller waits for its reply in `AwaitingReply`; the server thread
//! that received the call holds the implicit reply right (`reply_to`).

use super::{Kernel, Obj, ThreadState, mem};
use crate::arch::percpu;
use abi::{Error, MsgInfo, Rights, MSG_MAX_CAPS, MSG_REG_WORDS};
use kcore::slab::Id;

/// The calling thread (a system call comes from a current thread; were it
/// not, an error rather than a kernel panic).
fn current(k: &Kernel) -> Result<Id, Error> {
    k.current[percpu::index()].ok_or(Error::BadState)
}

/// Copies a message from `src` to `dst`: label, words (registers, then IPC
/// buffer), and capabilities when `grant` allows. Returns the info the
/// receiver sees, or `Gone` (nothing copied, nothing changed) if either
/// thread or its process no longer exists: the callers hold ids they
/// believe live, and a stale one must not take the kernel down.
#[inline]
fn transfer(k: &mut Kernel, src: Id, dst: Id, info: MsgInfo, badge: u64, grant: bool) -> Result<MsgInfo, Error> {
    let s = k.thread(src).ok_or(Error::Gone)?;
    let regs = [s.ctx.rdx, s.ctx.r10, s.ctx.r8, s.ctx.r9];
    // Short messages travel in registers alone: the common case skips the
    // IPC buffers (and their page-table walks) entirely.
    let out = if info.words as usize <= MSG_REG_WORDS && (info.caps == 0 || !grant) {
        MsgInfo::new(info.label, info.words, 0)
    } else {
        transfer_long(k, src, dst, info, grant)?
    };
    let d = k.thread_mut(dst).ok_or(Error::Gone)?;
    d.ctx.rax = 0;
    d.ctx.rdi = badge;
    d.ctx.rsi = out.encode();
    d.ctx.rdx = regs[0];
    d.ctx.r10 = regs[1];
    d.ctx.r8 = regs[2];
    d.ctx.r9 = regs[3];
    Ok(out)
}

/// The IPC-buffer part of [`transfer`]: words beyond the registers and
/// capabilities. Both threads and processes are looked up before anything
/// is copied (a refusal changes nothing); nothing after it frees a thread,
/// so the receiver's registers can be written after. Out of line: the
/// register-only message stays small enough to inline.
#[inline(never)]
fn transfer_long(k: &mut Kernel, src: Id, dst: Id, info: MsgInfo, grant: bool) -> Result<MsgInfo, Error> {
    let (src_buf, src_space) = {
        let s = k.thread(src).ok_or(Error::Gone)?;
        let p = k.processes.get(s.process).ok_or(Error::Gone)?;
        (mem::ipc_buffer(p.pml4, s.ipc_buffer), p.space)
    };
    let (dst_buf, dst_space) = {
        let d = k.thread(dst).ok_or(Error::Gone)?;
        let p = k.processes.get(d.process).ok_or(Error::Gone)?;
        (mem::ipc_buffer(p.pml4, d.ipc_buffer), p.space)
    };
    let mut words = info.words as usize;
    if words > MSG_REG_WORDS {
        match (src_buf, dst_buf) {
            // Distinct pages (the kernel lock keeps both mapped meanwhile).
            (Some(s), Some(d)) if s != d => s.copy_words(d, MSG_REG_WORDS..words),
            _ => words = MSG_REG_WORDS,
        }
    }
    let mut caps_moved = 0u8;
    if info.caps > 0 && grant
        && let (Some(s), Some(d)) = (src_buf, dst_buf) {
            for i in 0..(info.caps as usize).min(MSG_MAX_CAPS) {
                // Each read once; the checks below look at these copies.
                let (from, to) = (s.send_cap(i), d.recv_slot(i));
                let (Ok(from), Ok(to)) = (u32::try_from(from), u32::try_from(to)) else { continue };
                let Ok(c) = k.caps.lookup(src_space, from) else { continue };
                let (obj, rights) = (c.object, c.rights);
                if k.caps.copy(src_space, from, dst_space, to, rights, None).is_ok() {
                    k.obj_ref(obj);
                    caps_moved += 1;
                }
            }
        }
    if let Some(d) = dst_buf {
        d.set_recv_caps(u64::from(caps_moved));
    }
    Ok(MsgInfo::new(info.label, words as u16, caps_moved))
}

/// `send` and `call` on an endpoint capability.
pub fn send(k: &mut Kernel, call: bool) -> Result<(), Error> {
    let me = current(k)?;
    let frame = k.thread(me).ok_or(Error::Gone)?.ctx;
    let space = k.processes.get(k.thread(me).ok_or(Error::Gone)?.process).ok_or(Error::Gone)?.space;
    let cap = k.caps.lookup(space, user_slot(frame.rdi)?)?;
    let (Obj::Endpoint(ep), badge, rights, node) = (cap.object, cap.badge, cap.rights, cap.node) else {
        return Err(Error::WrongType);
    };
    if !rights.contains(Rights::SEND) {
        return Err(Error::NoRights);
    }
    let info = MsgInfo::decode(frame.rsi).ok_or(Error::InvalidArgument)?;
    if info.caps > 0 && !rights.contains(Rights::GRANT) {
        return Err(Error::NoRights);
    }
    // The message travels from the saved context, so store the frame first.
    let grant = rights.contains(Rights::GRANT);
    let Kernel { endpoints, threads, .. } = &mut *k;
    let receiver = endpoints.get_mut(ep).ok_or(Error::Gone)?.receivers.pop_front(threads);
    if let Some(r) = receiver {
        // Already off the endpoint's queue; only a timeout may remain.
        if let Some(d) = k.thread_mut(r).and_then(|t| t.deadline.take()) {
            k.timeouts.remove(d, r);
        }
        // `r` was just taken off the list (which checks ids), `me` runs: a
        // refusal would be a kernel bug, an error then, not a panic.
        transfer(k, me, r, info, badge, grant)?;
        if call {
            k.thread_mut(r).ok_or(Error::Gone)?.reply_to = Some(me);
            k.thread_mut(me).ok_or(Error::Gone)?.state = ThreadState::AwaitingReply;
            k.block_current(None);
            if k.switch_directly(r) {
                return Ok(());
            }
        }
        k.make_runnable(r);
        // The caller that blocked gets its reply registers later; a plain
        // send returns success now.
        Ok(())
    } else {
        let th = k.thread_mut(me).ok_or(Error::Gone)?;
        th.state = ThreadState::Sending { endpoint: ep, call };
        th.send_badge = badge;
        th.send_grant = grant;
        th.send_node = Some(node);
        k.endpoints.get_mut(ep).ok_or(Error::Gone)?.senders.push_back(me);
        k.block_current(None);
        Ok(())
    }
}

/// A slot number from a user's register: beyond 32 bits it names no slot
/// (it used to be truncated onto a real one; found by the syscall fuzzer).
fn user_slot(v: u64) -> Result<u32, Error> {
    u32::try_from(v).map_err(|_| Error::InvalidSlot)
}

/// `recv` on an endpoint (or a notification, which is `wait`).
pub fn recv(k: &mut Kernel, slot: u64, timeout_ns: u64) -> Result<(), Error> {
    let me = current(k)?;
    let space = k.processes.get(k.thread(me).ok_or(Error::Gone)?.process).ok_or(Error::Gone)?.space;
    let slot32 = user_slot(slot)?;
    let obj = k.cap(space, slot32, Rights::NONE)?;
    let ep = match obj {
        Obj::Endpoint(ep) => ep,
        Obj::Notification(_) => return wait(k, slot, timeout_ns),
        _ => return Err(Error::WrongType),
    };
    if !k.caps.lookup(space, slot32)?.rights.contains(Rights::RECV) {
        return Err(Error::NoRights);
    }
    // A bound notification that is already signalled wins.
    if let Some(n) = k.thread(me).and_then(|t| t.bound_notification)
        && let Some(nt) = k.notifications.get_mut(n)
            && nt.bits != 0 {
                let bits = core::mem::take(&mut nt.bits);
                let ctx = &mut k.thread_mut(me).ok_or(Error::Gone)?.ctx;
                ctx.rax = 0;
                ctx.rdi = 0;
                ctx.rsi = MsgInfo::new(MsgInfo::NOTIFICATION_LABEL, 1, 0).encode();
                ctx.rdx = bits;
                return Ok(());
            }
    // The longest-waiting sender that still exists (a thread leaves the
    // queue before it is freed: a stale id is a kernel bug, dropped here
    // rather than a panic).
    let found = loop {
        let Some(s) = k.endpoints.get_mut(ep).ok_or(Error::Gone)?.senders.pop_front() else { break None };
        if let Some(st) = k.thread(s) {
            let call = matches!(st.state, ThreadState::Sending { call: true, .. });
            break Some((s, call, st.send_badge, st.send_grant, MsgInfo::decode(st.ctx.rsi).unwrap_or_default()));
        }
        stale_sender(s);
    };
    if let Some((s, call, badge, grant, sinfo)) = found {
        if let Some(d) = k.thread_mut(s).and_then(|t| t.deadline.take()) {
            k.timeouts.remove(d, s);
        }
        transfer(k, s, me, sinfo, badge, grant)?;
        if call {
            k.thread_mut(me).ok_or(Error::Gone)?.reply_to = Some(s);
            k.thread_mut(s).ok_or(Error::Gone)?.state = ThreadState::AwaitingReply;
        } else {
            let st = k.thread_mut(s).ok_or(Error::Gone)?;
            st.ctx.rax = 0;
            st.state = ThreadState::Inactive;
            k.make_runnable(s);
        }
        return Ok(());
    }
    if timeout_ns == 0 {
        return Err(Error::WouldBlock);
    }
    let Kernel { endpoints, threads, .. } = &mut *k;
    // The caller runs, so it is in no list (a refusal would be a kernel bug:
    // an error then, not a thread blocked where nobody finds it).
    endpoints.get_mut(ep).ok_or(Error::Gone)?.receivers.push_back(threads, me).map_err(|_| Error::BadState)?;
    k.thread_mut(me).ok_or(Error::Gone)?.state = ThreadState::Receiving { endpoint: ep };
    let deadline = deadline(timeout_ns);
    k.block_current(deadline);
    Ok(())
}

#[cold]
fn stale_sender(s: Id) {
    log::warn!("ipc: an endpoint's sender {s:?} no longer exists; dropped from its queue");
}

fn deadline(timeout_ns: u64) -> Option<u64> {
    (timeout_ns != abi::FOREVER).then(|| crate::arch::time::nanos_since_boot().saturating_add(timeout_ns))
}

/// `reply_recv`: answer the caller this thread owes, then receive.
pub fn reply_recv(k: &mut Kernel) -> Result<(), Error> {
    let me = current(k)?;
    let frame = k.thread(me).ok_or(Error::Gone)?.ctx;
    let info = MsgInfo::decode(frame.rsi).ok_or(Error::InvalidArgument)?;
    let mut direct = None;
    if let Some(caller) = k.thread_mut(me).ok_or(Error::Gone)?.reply_to.take()
        && k.thread(caller).is_some_and(|c| c.state == ThreadState::AwaitingReply) {
            // A reply may carry capabilities (a server handing out a frame it
            // created, as storaged does with its rings); they land only in the
            // empty slots the caller named in its IPC buffer's `recv_slots`.
            // The caller was just checked to exist: `transfer` cannot refuse.
            if transfer(k, me, caller, info, 0, true).is_ok()
                && let Some(c) = k.thread_mut(caller)
            {
                c.state = ThreadState::Inactive;
                c.ctx.rdi = 0;
                direct = Some(caller);
            }
        }
    let r = recv(k, frame.rdi, abi::FOREVER);
    if let Some(caller) = direct {
        // Fast path: the server blocked to receive, so the CPU goes straight
        // back to the caller.
        if !k.switch_directly(caller) {
            k.make_runnable(caller);
        }
    }
    r
}

/// `signal`: OR bits in; wake one waiter or the bound receiver.
pub fn signal(k: &mut Kernel, n: Id, bits: u64) -> Result<(), Error> {
    let nt = k.notifications.get_mut(n).ok_or(Error::Gone)?;
    nt.bits |= bits;
    if let Some(w) = nt.waiters.pop_front() {
        let bits = core::mem::take(&mut nt.bits);
        k.unblock_cleanup(w);
        if let Some(t) = k.thread_mut(w) {
            t.ctx.rax = 0;
            t.ctx.rdi = bits;
            t.state = ThreadState::Inactive;
        }
        k.make_runnable(w);
    } else if let Some(b) = nt.bound {
        let receiving = k.thread(b).is_some_and(|t| matches!(t.state, ThreadState::Receiving { .. }));
        if receiving {
            let bits = core::mem::take(&mut k.notifications.get_mut(n).ok_or(Error::Gone)?.bits);
            k.unblock_cleanup(b);
            if let Some(t) = k.thread_mut(b) {
                t.ctx.rax = 0;
                t.ctx.rdi = 0;
                t.ctx.rsi = MsgInfo::new(MsgInfo::NOTIFICATION_LABEL, 1, 0).encode();
                t.ctx.rdx = bits;
                t.state = ThreadState::Inactive;
            }
            k.make_runnable(b);
        }
    }
    Ok(())
}

/// `wait` (and `recv` on a notification): take the bits or block.
pub fn wait(k: &mut Kernel, slot: u64, timeout_ns: u64) -> Result<(), Error> {
    let me = current(k)?;
    let space = k.processes.get(k.thread(me).ok_or(Error::Gone)?.process).ok_or(Error::Gone)?.space;
    let Obj::Notification(n) = k.cap(space, user_slot(slot)?, Rights::READ)? else {
        return Err(Error::WrongType);
    };
    let nt = k.notifications.get_mut(n).ok_or(Error::Gone)?;
    if nt.bits != 0 {
        let bits = core::mem::take(&mut nt.bits);
        let ctx = &mut k.thread_mut(me).ok_or(Error::Gone)?.ctx;
        ctx.rax = 0;
        ctx.rdi = bits;
        return Ok(());
    }
    if timeout_ns == 0 {
        return Err(Error::WouldBlock);
    }
    nt.waiters.push_back(me);
    k.thread_mut(me).ok_or(Error::Gone)?.state = ThreadState::Waiting { notification: n };
    k.block_current(deadline(timeout_ns));
    Ok(())
}

/// An MSI vector (index from MSI_BASE_VECTOR) fired: signal its notification.
pub fn msi_fired(k: &mut Kernel, index: usize) {
    match k.msis.get(index).copied().flatten() {
        Some(super::IrqLine { notification: Some(n), bits, .. }) => {
            let _ = signal(k, n, bits);
        }
        _ => log::warn!("irq: MSI vector {index} fired with no handler bound"),
    }
}

/// An IOAPIC line fired: signal its bound notification; the line stays
/// masked until the driver acknowledges.
pub fn irq_fired(k: &mut Kernel, line: u8) {
    let l = k.irqs[line as usize];
    match l.notification {
        Some(n) => {
            k.irqs[line as usize].pending_ack = true;
            let _ = signal(k, n, l.bits);
        }
        None => log::warn!("irq: line {line} fired with no handler bound"),
    }
}
