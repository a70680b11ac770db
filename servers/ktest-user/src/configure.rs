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

use crate::fastpath::{spawn, spawn_on};
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

/// Counted by `spinner` as it runs.
static SPINS: AtomicU64 = AtomicU64::new(0);

/// Where the configured spinner goes: signals `note` (`a0`) with
/// `HIJACKED`, then spins (it must not wait on `note` and take its own
/// signal before the test's wait does).
extern "C" fn moved(_ipc: u64, note: u64, _: u64) -> ! {
    let _ = sys::signal(note as CapSlot, HIJACKED);
    loop {
        core::hint::spin_loop();
    }
}

/// Spins in ring 3 for good, counting.
extern "C" fn spinner(_ipc: u64, _: u64, _: u64) -> ! {
    loop {
        SPINS.fetch_add(1, Ordering::Relaxed);
        core::hint::spin_loop();
    }
}

/// A thread suspended while it runs on another CPU stops there at once
/// (not at that CPU's next tick), and is configurable only once that CPU
/// has let go of it: configured before, the write would be lost at its next
/// kernel entry (which saves the frame over it) and resumed it would carry
/// on spinning. Needs two CPUs.
pub fn configure_a_thread_suspended_on_another_cpu(env: &mut Env) -> Result<(), String> {
    if env.cpus() < 2 {
        return Ok(());
    }
    let note = env.slot();
    sys::create(ObjectType::Notification, note, 0).map_err(|e| format!("notification: {e}"))?;
    let (_, stack) = env.frame(1, abi::Rights::READ.union(abi::Rights::WRITE))?;
    let stack = stack + abi::PAGE_SIZE - 8;
    for round in 0..10 {
        SPINS.store(0, Ordering::SeqCst);
        let t = spawn_on(env, spinner, 100, 0, 0, 1)?;
        // Until it runs on CPU 1.
        let mut waited = 0u64;
        while SPINS.load(Ordering::SeqCst) == 0 {
            waited += 1;
            check(waited < 2_000_000_000, || format!("round {round}: the spinner never ran on CPU 1"))?;
            core::hint::spin_loop();
        }
        sys::thread_suspend(t).map_err(|e| format!("suspend: {e}"))?;
        // Stopped: its count stands still from here (a moment for the last
        // increments in flight).
        let a = SPINS.load(Ordering::SeqCst);
        for _ in 0..200_000 {
            core::hint::spin_loop();
        }
        let b = SPINS.load(Ordering::SeqCst);
        for _ in 0..2_000_000 {
            core::hint::spin_loop();
        }
        let c = SPINS.load(Ordering::SeqCst);
        check(b == c, || format!("round {round}: a suspended thread went on spinning on CPU 1 ({a}, {b}, {c})"))?;
        // Configurable once CPU 1 let go of it (BadState until then).
        until_let_go("configuring the suspended thread", || {
            // SAFETY: the entry is this program's code, the stack a page reserved for it.
            unsafe { sys::thread_configure(t, moved as *const () as u64, stack, 0, u64::from(note), 0) }
        })
        .map_err(|e| format!("round {round}: {e}"))?;
        sys::thread_resume(t).map_err(|e| format!("resume: {e}"))?;
        let bits = sys::wait(note, 2_000_000_000).map_err(|e| {
            format!("round {round}: the configured thread never reached its new entry ({e}; it spun on: {})", SPINS.load(Ordering::SeqCst) != c)
        })?;
        check(bits & HIJACKED != 0, || format!("round {round}: the configured thread signalled {bits:#x}"))?;
        let _ = sys::thread_suspend(t);
        let _ = sys::cap_delete(t);
    }
    Ok(())
}

/// Answers `caller_loop` got.
static CALLS: AtomicU64 = AtomicU64::new(0);
/// The first error `caller_loop` got, plus one (0: none).
static WRONG: AtomicU64 = AtomicU64::new(0);

/// Signals `note` (`a0`) bit 0 for good, counting the answers and keeping
/// the first error (a signal of a live notification cannot fail).
extern "C" fn caller_loop(_ipc: u64, note: u64, _: u64) -> ! {
    loop {
        match sys::signal(note as CapSlot, 1) {
            Ok(()) => {
                CALLS.fetch_add(1, Ordering::SeqCst);
            }
            Err(e) => {
                let _ = WRONG.compare_exchange(0, e as u64 + 1, Ordering::SeqCst, Ordering::SeqCst);
            }
        }
    }
}

/// Retries `f` while it answers `BadState` (a thread just suspended that
/// its CPU has not let go of yet), for up to 10 s, spinning in user mode
/// between tries so the other CPU gets the kernel lock (a spinning lock,
/// not a fair one: back-to-back system calls from here could keep it).
fn until_let_go(what: &str, mut f: impl FnMut() -> Result<(), abi::Error>) -> Result<(), String> {
    let start = sys::clock_ns().map_err(|e| format!("clock: {e}"))?;
    let mut tries = 0u64;
    loop {
        match f() {
            Err(abi::Error::BadState) => {}
            r => return r.map_err(|e| format!("{what}: {e}")),
        }
        tries += 1;
        let now = sys::clock_ns().map_err(|e| format!("clock: {e}"))?;
        if now.saturating_sub(start) > 10_000_000_000 {
            return Err(format!("{what}: still BadState after 10 s ({tries} tries)"));
        }
        for _ in 0..10_000 {
            core::hint::spin_loop();
        }
    }
}

/// Whether `CALLS` passes `from` within a bounded spin.
fn went_on(from: u64) -> bool {
    for _ in 0..50_000_000u64 {
        if CALLS.load(Ordering::SeqCst) > from {
            return true;
        }
        core::hint::spin_loop();
    }
    false
}

/// A thread making system calls on another CPU, suspended: it may have
/// entered a call the kernel has not begun (its CPU waits for the kernel
/// lock the suspending call holds). That call must neither complete after
/// `ThreadSuspend` returned (a suspended thread acting) nor be lost or
/// answered wrongly: it is made when the thread is resumed. Tried pinned to
/// CPU 1, moved between CPUs 1 and 2 while suspended (three CPUs or more),
/// and with no affinity (resumed at once, the kernel may pick another CPU
/// than the one still letting go of it: it must not, or two CPUs would run
/// it from one saved context). Needs two CPUs.
pub fn a_thread_suspended_in_a_system_call_makes_it_when_resumed(env: &mut Env) -> Result<(), String> {
    if env.cpus() < 2 {
        return Ok(());
    }
    let note = env.slot();
    sys::create(ObjectType::Notification, note, 0).map_err(|e| format!("notification: {e}"))?;
    CALLS.store(0, Ordering::SeqCst);
    WRONG.store(0, Ordering::SeqCst);
    let t = spawn_on(env, caller_loop, 100, u64::from(note), 0, 1)?;
    check(went_on(0), || String::from("the calling thread never ran on CPU 1"))?;
    let phases: &[(&str, u32)] = if env.cpus() > 2 { &[("pinned", 100), ("moved", 100), ("unpinned", 100)] } else { &[("pinned", 150), ("unpinned", 100)] };
    for &(phase, rounds) in phases {
        for round in 0..rounds {
            if phase == "unpinned" && round == 0 {
                sys::thread_suspend(t).map_err(|e| format!("suspend: {e}"))?;
                until_let_go("unpinning the suspended thread", || sys::thread_set_priority(t, 100, None))?;
                sys::thread_resume(t).map_err(|e| format!("resume: {e}"))?;
            }
            let calls = CALLS.load(Ordering::SeqCst);
            sys::thread_suspend(t).map_err(|e| format!("suspend: {e}"))?;
            if phase != "unpinned" {
                // Resumed at once when unpinned: while its CPU still lets go.
                let _ = sys::poll(note).map_err(|e| format!("poll: {e}"))?;
                for _ in 0..20_000 {
                    core::hint::spin_loop();
                }
                let late = sys::poll(note).map_err(|e| format!("poll: {e}"))?;
                check(late == 0, || format!("{phase} round {round}: a signal from the suspended thread arrived after ThreadSuspend returned"))?;
            }
            if phase == "moved" {
                // CPU 0 is the suite's.
                until_let_go("moving the suspended thread", || sys::thread_set_priority(t, 100, Some(1 + (round + 1) % 2)))?;
            }
            sys::thread_resume(t).map_err(|e| format!("resume: {e}"))?;
            check(went_on(calls), || format!("{phase} round {round}: the resumed thread made no more calls"))?;
            let wrong = WRONG.load(Ordering::SeqCst);
            check(wrong == 0, || format!("{phase} round {round}: a call of the suspended and resumed thread answered error {}", wrong - 1))?;
        }
    }
    let _ = sys::thread_suspend(t);
    let _ = sys::cap_delete(t);
    Ok(())
}
