//! `ThreadConfigure` rewrites a thread's entry, stack and start registers:
//! only of a thread that is not running or waiting (created, or suspended).
//! Rewriting the saved registers of a thread blocked in a system call would
//! resume it somewhere else in the middle of its call (or, while it runs,
//! be lost or half applied); and the IPC fast path returns to a waiting
//! peer by SYSRET on the grounds that its frame is the one its own SYSCALL
//! saved. Each state a thread waits in is tried here, and the thread must
//! carry on untouched; a suspended thread can still be configured.

use abi::{CapSlot, MsgInfo, ObjectType, FOREVER};
use alcove_rt::start::SLOT_THREAD;
use alloc::format;
use alloc::string::String;
use core::sync::atomic::{AtomicU64, Ordering};
use libipc::sys;

use crate::fastpath::spawn;
use crate::tests::Env;

/// Signalled by `hijacked`: where a rewritten thread ends up.
const HIJACKED: u64 = 1 << 50;

/// Messages `holder` received.
static HELD: AtomicU64 = AtomicU64::new(0);

fn check(cond: bool, why: impl FnOnce() -> String) -> Result<(), String> {
    if cond { Ok(()) } else { Err(why()) }
}

/// A server on `endpoint` (low half of `a1`) that, per message, signals
/// `got` (the high half) and waits on `go` (`a0`) before replying word 0
/// plus one; then waits for the next message.
extern "C" fn holder(_ipc: u64, go: u64, a1: u64) -> ! {
    let (ep, got) = ((a1 & 0xffff_ffff) as CapSlot, (a1 >> 32) as CapSlot);
    let mut msg = match sys::recv(ep, FOREVER) {
        Ok(m) => m,
        Err(_) => sys::exit(94),
    };
    loop {
        HELD.fetch_add(1, Ordering::SeqCst);
        let _ = sys::signal(got, 1);
        let _ = sys::wait(go as CapSlot, FOREVER);
        msg = match sys::reply_recv(ep, MsgInfo::new(msg.info.label, 1, 0), [msg.words[0] + 1, 0, 0, 0]) {
            Ok(m) => m,
            Err(_) => sys::exit(95),
        };
    }
}

/// One call on `endpoint` (low half of `a1`) with word 0 = 41; signals
/// `done` (the high half) with the reply's word 0, or `1 << 40` if the call
/// failed; then waits on `park` (`a0`) for good.
extern "C" fn caller(_ipc: u64, park: u64, a1: u64) -> ! {
    let (ep, done) = ((a1 & 0xffff_ffff) as CapSlot, (a1 >> 32) as CapSlot);
    let bits = match sys::call(ep, MsgInfo::new(1, 1, 0), [41, 0, 0, 0]) {
        Ok(r) => r.words[0],
        Err(_) => 1 << 40,
    };
    let _ = sys::signal(done, bits);
    loop {
        let _ = sys::wait(park as CapSlot, FOREVER);
    }
}

/// Where a configured thread goes: signals `note` (`a0`) with `HIJACKED`.
extern "C" fn hijacked(_ipc: u64, note: u64, _: u64) -> ! {
    let _ = sys::signal(note as CapSlot, HIJACKED);
    loop {
        let _ = sys::wait(note as CapSlot, FOREVER);
    }
}

/// Tries to point thread `t` at `hijacked`; must be refused with `BadState`.
fn refused(t: CapSlot, note: CapSlot, what: &str, stack: u64) -> Result<(), String> {
    // SAFETY: refused by the kernel (what this checks); were it not, the
    // entry is this program's own code on a stack reserved for it.
    let r = unsafe { sys::thread_configure(t, hijacked as *const () as u64, stack, 0, u64::from(note), 0) };
    check(r == Err(abi::Error::BadState), || format!("configuring {what}: {r:?}, expected BadState"))
}

pub fn configure_only_threads_that_wait_for_nothing(env: &mut Env) -> Result<(), String> {
    let (ep, go, got, done, park, note) = (env.slot(), env.slot(), env.slot(), env.slot(), env.slot(), env.slot());
    sys::create(ObjectType::Endpoint, ep, 0).map_err(|e| format!("endpoint: {e}"))?;
    for n in [go, got, done, park, note] {
        sys::create(ObjectType::Notification, n, 0).map_err(|e| format!("notification: {e}"))?;
    }
    let (_, stack) = env.frame(1, abi::Rights::READ.union(abi::Rights::WRITE))?;
    let stack = stack + abi::PAGE_SIZE - 8;
    // Sending: a caller on an endpoint nobody receives on.
    let lonely = env.slot();
    sys::create(ObjectType::Endpoint, lonely, 0).map_err(|e| format!("endpoint: {e}"))?;
    let s = spawn(env, caller, 100, u64::from(park), u64::from(lonely) | u64::from(done) << 32)?;
    sys::yield_now().map_err(|e| format!("yield: {e}"))?; // it runs to its Call and blocks
    refused(s, note, "a thread blocked sending", stack)?;

    // Receiving (the holder before any message), then AwaitingReply and
    // Waiting. (A thread the yield did not get as far is Runnable: refused
    // as well.)
    HELD.store(0, Ordering::SeqCst);
    let h = spawn(env, holder, 100, u64::from(go), u64::from(ep) | u64::from(got) << 32)?;
    sys::yield_now().map_err(|e| format!("yield: {e}"))?;
    refused(h, note, "a thread receiving on an endpoint", stack)?;
    let c = spawn(env, caller, 100, u64::from(park), u64::from(ep) | u64::from(done) << 32)?;
    sys::wait(got, FOREVER).map_err(|e| format!("waiting for the holder to get the call: {e}"))?;
    // The holder has the message and waits on `go`; the caller waits for
    // its reply.
    refused(c, note, "a thread awaiting its reply", stack)?;
    refused(h, note, "a thread waiting on a notification", stack)?;
    sys::signal(go, 1).map_err(|e| format!("signal: {e}"))?;
    let bits = sys::wait(done, FOREVER).map_err(|e| format!("waiting for the caller: {e}"))?;
    check(bits == 42, || {
        format!("the caller ended its call with {bits:#x}, expected the reply 42 (1<<40: the call failed, {HIJACKED:#x}: it was moved)")
    })?;
    check(HELD.load(Ordering::SeqCst) == 1, || format!("the holder got {} messages, expected 1", HELD.load(Ordering::SeqCst)))?;
    // The holder is back in its Recv (ReplyRecv), the caller waits on
    // `park`: both still refused.
    refused(h, note, "a thread back in ReplyRecv", stack)?;
    refused(c, note, "a parked thread", stack)?;
    check(sys::poll(note).map_err(|e| format!("poll: {e}"))? == 0, || "a refused configure ran the new entry anyway".into())?;

    // Suspended: configurable again, and resumed it starts at the new entry.
    sys::thread_suspend(c).map_err(|e| format!("suspend: {e}"))?;
    // SAFETY: the entry is this program's code, the stack a page reserved for it.
    unsafe { sys::thread_configure(c, hijacked as *const () as u64, stack, 0, u64::from(note), 0) }
        .map_err(|e| format!("configuring a suspended thread: {e}"))?;
    sys::thread_resume(c).map_err(|e| format!("resume: {e}"))?;
    let bits = sys::wait(note, FOREVER).map_err(|e| format!("waiting for the reconfigured thread: {e}"))?;
    check(bits & HIJACKED != 0, || format!("the reconfigured thread signalled {bits:#x}, expected {HIJACKED:#x}"))?;
    check(sys::poll(done).map_err(|e| format!("poll: {e}"))? == 0, || "the caller blocked sending got an answer".into())?;
    for t in [c, h, s] {
        let _ = sys::thread_suspend(t);
        let _ = sys::cap_delete(t);
    }
    // Running: the caller itself (last: were it allowed, this thread would
    // go on at the new entry instead of reporting).
    refused(SLOT_THREAD, note, "the running thread itself", stack)
}
