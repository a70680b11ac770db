//! The kernel's IPC fast path (`microkernel/src/kernel/fastpath.rs`) gives
//! what the general path gives: the same replies, badges and refusals, and
//! the same scheduling outcome. Each case is designed so that a fast path
//! that skipped the check would show it: a refused call reaching the server,
//! a lost badge, or the caller resuming before a higher-priority thread that
//! became ready. The kernel's phase counts (`Sys::BenchPhases`) show which
//! calls the fast path completed, so the cases also check that it took the
//! simple ones and fell back on the others. A call that fits the fast path
//! still falls back, by design, when the CPU has scheduling work pending (a
//! tick, a higher-priority driver woken by an interrupt: a CPU hog beside
//! the emulator makes that likelier); the kernel counts those fallbacks
//! apart, and a case wants its fast calls, or the shortfall accounted for
//! exactly by them. The suite runs twice in CI, with
//! the fast path on and off (`alcove.fastpath=off`, manifest argument
//! `fastpath=off`): with it off, nothing may take it.

use abi::{CapSlot, IpcBuffer, MsgInfo, ObjectType, Rights, FOREVER, PAGE_SIZE};
use alcove_rt::start::{SLOT_CONSOLE, SLOT_SELF};
use alloc::format;
use alloc::string::String;
use core::sync::atomic::{AtomicU64, Ordering};
use libipc::sys;

use crate::tests::Env;

/// Asks the probe server to make the waker thread ready before it replies.
const LABEL_WAKE: u32 = 7;
const LABEL_PLAIN: u32 = 8;
/// A long message both ways: the probe replies with five words, word 4 (in
/// its IPC buffer) being the word 4 it received plus one.
const LABEL_LONG: u32 = 9;
/// Carries one capability (a notification): the probe signals it with word
/// 0's bits, deletes it, and replies `[badge, n, the signal's error code (0
/// = it could), capabilities received]`.
const LABEL_CAP: u32 = 10;
/// The probe replies `[badge, n, one-way calls the fast path completed on
/// its CPU since the counts were reset, 0]`.
const LABEL_FAST_COUNT: u32 = 11;
/// The empty slot where the probe receives capabilities (set before it
/// starts).
static PROBE_RECV_SLOT: AtomicU64 = AtomicU64::new(0);

/// Times the waker thread ran.
static WOKEN: AtomicU64 = AtomicU64::new(0);
/// Messages the probe server received.
static RECEIVED: AtomicU64 = AtomicU64::new(0);

fn check(cond: bool, why: impl FnOnce() -> String) -> Result<(), String> {
    if cond { Ok(()) } else { Err(why()) }
}

/// The probe server: replies `[badge, messages received, word 0, 0]`; for
/// `LABEL_WAKE` it first signals the waker's notification (`note`); see
/// `LABEL_LONG` and `LABEL_CAP` for those.
extern "C" fn probe_server(ipc: u64, endpoint: u64, note: u64) -> ! {
    let ep = endpoint as CapSlot;
    let buffer = ipc as *mut IpcBuffer;
    let recv_slot = PROBE_RECV_SLOT.load(Ordering::SeqCst);
    let arm = move || {
        // SAFETY: `ipc` is this thread's own IPC buffer page, mapped
        // writable by its creator; only this thread touches it.
        unsafe { (*buffer).recv_slots[0] = recv_slot };
    };
    arm();
    let mut msg = match sys::recv(ep, FOREVER) {
        Ok(m) => m,
        Err(_) => sys::exit(92),
    };
    loop {
        let n = RECEIVED.fetch_add(1, Ordering::SeqCst) + 1;
        let mut words = 4;
        let reply = match msg.info.label {
            LABEL_WAKE => {
                let _ = sys::signal(note as CapSlot, 1);
                [msg.badge, n, msg.words[0], 0]
            }
            LABEL_LONG => {
                words = 5;
                // SAFETY: as above; the kernel wrote word 4 there.
                unsafe { (*buffer).words[4] = (*buffer).words[4].wrapping_add(1) };
                [msg.badge, n, msg.words[0], u64::from(msg.info.words)]
            }
            LABEL_CAP => {
                // SAFETY: as above.
                let got = unsafe { (*buffer).recv_caps };
                let slot = recv_slot as CapSlot;
                let r = sys::signal(slot, msg.words[0]).err().map_or(0, |e| e as u64);
                let _ = sys::cap_delete(slot);
                [msg.badge, n, r, got]
            }
            LABEL_FAST_COUNT => [msg.badge, n, fast_calls().unwrap_or(u64::MAX), 0],
            _ => [msg.badge, n, msg.words[0], 0],
        };
        arm();
        msg = match sys::reply_recv(ep, MsgInfo::new(msg.info.label, words, 0), reply) {
            Ok(m) => m,
            Err(_) => match sys::recv(ep, FOREVER) {
                Ok(m) => m,
                Err(_) => sys::exit(93),
            },
        };
    }
}

/// The waker: counts each signal of its notification.
extern "C" fn waker(_ipc: u64, note: u64, _: u64) -> ! {
    loop {
        if sys::wait(note as CapSlot, FOREVER).is_ok() {
            WOKEN.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// The low-priority client: one `LABEL_WAKE` call, then signals `done`
/// with `1 | (WOKEN seen right after the reply) << 1`, or `1 | 1 << 40` if
/// the call failed; then parks on `park`.
extern "C" fn client(_ipc: u64, endpoint: u64, notes: u64) -> ! {
    let (done, park) = ((notes & 0xffff_ffff) as CapSlot, (notes >> 32) as CapSlot);
    let bits = match sys::call(endpoint as CapSlot, MsgInfo::new(LABEL_WAKE, 1, 0), [5, 0, 0, 0]) {
        Ok(_) => 1 | (WOKEN.load(Ordering::SeqCst) << 1),
        Err(_) => 1 | 1 << 40,
    };
    let _ = sys::signal(done, bits);
    loop {
        let _ = sys::wait(park, FOREVER);
    }
}

/// Starts a thread on CPU 0; returns its capability.
pub(crate) fn spawn(env: &mut Env, entry: extern "C" fn(u64, u64, u64) -> !, prio: u8, a0: u64, a1: u64) -> Result<CapSlot, String> {
    spawn_on(env, entry, prio, a0, a1, 0)
}

/// Starts a thread on CPU `cpu`; returns its capability.
pub(crate) fn spawn_on(env: &mut Env, entry: extern "C" fn(u64, u64, u64) -> !, prio: u8, a0: u64, a1: u64, cpu: u32) -> Result<CapSlot, String> {
    let (_, stack) = env.frame(4, Rights::READ.union(Rights::WRITE))?;
    let (_, ipc) = env.frame(1, Rights::READ.union(Rights::WRITE))?;
    let t = env.slot();
    sys::create(ObjectType::Thread, t, u64::from(SLOT_SELF)).map_err(|e| format!("thread: {e}"))?;
    // SAFETY: stack and IPC buffer are fresh mappings owned by the new thread.
    unsafe { sys::thread_configure(t, entry as *const () as u64, stack + 4 * PAGE_SIZE - 8, ipc, a0, a1) }
        .map_err(|e| format!("configure: {e}"))?;
    // CPU 0 is the suite's main thread's (the manifest pins it there).
    sys::thread_set_priority(t, prio, Some(cpu)).map_err(|e| format!("priority: {e}"))?;
    sys::thread_resume(t).map_err(|e| format!("resume: {e}"))?;
    Ok(t)
}

/// One-way calls the fast path completed on this CPU since the last reset.
fn fast_calls() -> Result<u64, String> {
    sys::bench_phases(SLOT_CONSOLE, 2).map(|(_, calls)| calls).map_err(|e| format!("phase counts: {e}"))
}

/// [`fast_calls`], and the calls on this CPU since the last reset that fit
/// the fast path but fell back because the CPU had scheduling work pending.
fn fast_and_pending() -> Result<(u64, u64), String> {
    let fast = fast_calls()?;
    let pending = sys::bench_fallbacks(SLOT_CONSOLE).map_err(|e| format!("fallback count: {e}"))?;
    Ok((fast, pending))
}

/// Tries of the plain round trip while each finds work pending.
const PLAIN_TRIES: u32 = 5;

pub fn fast_and_general_paths_agree(env: &mut Env) -> Result<(), String> {
    let fast_on = !env.info().args.iter().any(|a| a == "fastpath=off");
    // With the fast path off nothing may take it; on, a simple round trip
    // is two fast calls (the Call and the ReplyRecv).
    let want = |n: u64| if fast_on { n } else { 0 };
    let (ep, note, done, park) = (env.slot(), env.slot(), env.slot(), env.slot());
    sys::create(ObjectType::Endpoint, ep, 0).map_err(|e| format!("endpoint: {e}"))?;
    for n in [note, done, park] {
        sys::create(ObjectType::Notification, n, 0).map_err(|e| format!("notification: {e}"))?;
    }
    let probe_recv = env.slot();
    PROBE_RECV_SLOT.store(u64::from(probe_recv), Ordering::SeqCst);
    // All at or below our own priority 100, on our CPU.
    let server = spawn(env, probe_server, 100, u64::from(ep), u64::from(note))?;
    spawn(env, waker, 80, u64::from(note), 0)?;
    sys::yield_now().map_err(|e| format!("yield: {e}"))?; // let the server reach its Recv
    let call = |slot: CapSlot, w0: u64| sys::call(slot, MsgInfo::new(LABEL_PLAIN, 1, 0), [w0, 0, 0, 0]);

    // 1. A plain call: the reply, and both ways on the fast path. A first
    // round trip leaves the server waiting on the endpoint (the yield may
    // not have: a tick or a driver can preempt it before its Recv). A call
    // that falls back for pending work must be counted as such, and one of
    // a few tries must go through the fast path both ways: a kernel that
    // always found work pending would not.
    call(ep, 40).map_err(|e| format!("first plain call: {e}"))?;
    for attempt in 1..=PLAIN_TRIES {
        sys::bench_phases(SLOT_CONSOLE, 0).map_err(|e| format!("phase counting: {e}"))?;
        let before = RECEIVED.load(Ordering::SeqCst);
        let r = call(ep, 41).map_err(|e| format!("plain call: {e}"))?;
        let (fast, pending) = fast_and_pending()?;
        check(r.words == [0, before + 1, 41, 0] && r.info.label == LABEL_PLAIN, || format!("plain call: reply {:?}", r.words))?;
        check(fast + pending == want(2), || {
            format!("plain call: {fast} fast-path calls and {pending} left to the general path for pending work, expected {} together", want(2))
        })?;
        if pending == 0 {
            break;
        }
        check(attempt < PLAIN_TRIES, || format!("plain call: work pending in each of {PLAIN_TRIES} tries, never both ways on the fast path"))?;
    }

    // 2. A badged capability: the server sees the badge either way.
    let badged = env.slot();
    sys::cap_copy(ep, badged, Rights::SEND.union(Rights::RECV), 0x77).map_err(|e| format!("badged copy: {e}"))?;
    sys::bench_phases(SLOT_CONSOLE, 0).map_err(|e| format!("phase counting: {e}"))?;
    let r = call(badged, 42).map_err(|e| format!("badged call: {e}"))?;
    let (fast, pending) = fast_and_pending()?;
    check(r.words[0] == 0x77 && r.words[2] == 42, || format!("badged call: reply {:?}, expected badge 0x77", r.words))?;
    check(fast + pending == want(2), || {
        format!("badged call: {fast} fast-path calls and {pending} left for pending work, expected {} together", want(2))
    })?;

    // 3. No SEND right: refused, and the server never hears of it.
    let recv_only = env.slot();
    sys::cap_copy(ep, recv_only, Rights::RECV, 0).map_err(|e| format!("receive-only copy: {e}"))?;
    sys::bench_phases(SLOT_CONSOLE, 0).map_err(|e| format!("phase counting: {e}"))?;
    let before = RECEIVED.load(Ordering::SeqCst);
    let got = call(recv_only, 43);
    let fast = fast_calls()?;
    check(got.as_ref().err() == Some(&abi::Error::NoRights), || format!("call without SEND: {got:?}, expected NoRights"))?;
    check(fast == 0, || format!("call without SEND: {fast} fast-path calls"))?;
    let r = call(ep, 44).map_err(|e| format!("call after the refused one: {e}"))?;
    check(r.words[1] == before + 1 && r.words[2] == 44, || format!("the refused call reached the server: reply {:?}", r.words))?;

    // 4. A server with a CPU budget: its time is charged from the moment
    // it gets the CPU, which only the general path does; the reply comes
    // the same, and no call takes the fast path.
    sys::thread_set_budget(server, 50_000_000, 100_000_000).map_err(|e| format!("server budget: {e}"))?;
    sys::bench_phases(SLOT_CONSOLE, 0).map_err(|e| format!("phase counting: {e}"))?;
    let before = RECEIVED.load(Ordering::SeqCst);
    let r = call(ep, 45).map_err(|e| format!("call to a budgeted server: {e}"))?;
    let fast = fast_calls()?;
    sys::thread_set_budget(server, 0, 0).map_err(|e| format!("server budget removed: {e}"))?;
    check(r.words == [0, before + 1, 45, 0], || format!("call to a budgeted server: reply {:?}", r.words))?;
    check(fast == 0, || format!("call to a budgeted server: {fast} fast-path calls, expected 0"))?;

    // 5. A higher-priority thread made ready during the call: the reply to
    // a priority-50 client must let the waker (80) run first, as the
    // scheduler would. The fast path takes the Call, not the ReplyRecv:
    // that one fits it but for the waker, ready above the client, which
    // counts as pending work (the Call may meet some too).
    WOKEN.store(0, Ordering::SeqCst);
    sys::bench_phases(SLOT_CONSOLE, 0).map_err(|e| format!("phase counting: {e}"))?;
    spawn(env, client, 50, u64::from(ep), u64::from(done) | u64::from(park) << 32)?;
    let bits = sys::wait(done, FOREVER).map_err(|e| format!("waiting for the client: {e}"))?;
    let (fast, pending) = fast_and_pending()?;
    sys::bench_phases(SLOT_CONSOLE, 1).map_err(|e| format!("phase counting off: {e}"))?;
    check(bits & 1 << 40 == 0, || "the client's call failed".into())?;
    let seen = bits >> 1;
    check(seen == 1, || format!("the client resumed having seen the waker run {seen} times, expected 1 (it must run first)"))?;
    check(fast + pending == want(2) && pending >= want(1), || {
        format!("wake case: {fast} fast-path calls and {pending} left for pending work, expected {} together, at least {} of them left", want(2), want(1))
    })?;

    // 6. A call made while the caller's own IPC buffer is borrowed (inside
    // `with_ipc_buffer`) is refused by libipc before it reaches the kernel,
    // which could otherwise write the buffer under that borrow; libipc
    // checks the flag only when some buffer is borrowed (a count), so this
    // fails if the count missed the borrow. Outside it, calls work again.
    let before = RECEIVED.load(Ordering::SeqCst);
    let nested = sys::with_ipc_buffer(|_| call(ep, 46)).map_err(|e| format!("borrowing the IPC buffer: {e}"))?;
    check(nested.as_ref().err() == Some(&abi::Error::BadState), || {
        format!("a call with the IPC buffer borrowed: {nested:?}, expected BadState")
    })?;
    let r = call(ep, 47).map_err(|e| format!("call after the refused nested one: {e}"))?;
    check(r.words[1] == before + 1 && r.words[2] == 47, || {
        format!("the nested call reached the server: reply {:?}, {before} received before", r.words)
    })?;

    // 7. A long message both ways (word 4 travels in the IPC buffers): the
    // fast path carries registers only, so it must leave both ways to the
    // general path, which copies word 4 there and back.
    sys::with_ipc_buffer(|b| b.words[4] = 1000).map_err(|e| format!("IPC buffer: {e}"))?;
    sys::bench_phases(SLOT_CONSOLE, 0).map_err(|e| format!("phase counting: {e}"))?;
    let r = sys::call(ep, MsgInfo::new(LABEL_LONG, 5, 0), [48, 0, 0, 0]).map_err(|e| format!("long call: {e}"))?;
    let fast = fast_calls()?;
    let w4 = sys::with_ipc_buffer(|b| b.words[4]).map_err(|e| format!("IPC buffer: {e}"))?;
    check(r.words[2] == 48 && r.words[3] == 5 && r.info.words == 5 && w4 == 1001, || {
        format!("long call: reply {:?} of {} words, word 4 {w4}; expected the server to see 5 words and word 4 1000+1", r.words, r.info.words)
    })?;
    check(fast == 0, || format!("long call: {fast} fast-path calls, expected 0"))?;

    // 8. A capability transfer: only the general path moves it; the reply
    // (short, none) may take the fast path.
    let gift = env.slot();
    sys::create(ObjectType::Notification, gift, 0).map_err(|e| format!("notification: {e}"))?;
    sys::with_ipc_buffer(|b| b.send_caps[0] = u64::from(gift)).map_err(|e| format!("IPC buffer: {e}"))?;
    sys::bench_phases(SLOT_CONSOLE, 0).map_err(|e| format!("phase counting: {e}"))?;
    let r = sys::call(ep, MsgInfo::new(LABEL_CAP, 1, 1), [0b110, 0, 0, 0]).map_err(|e| format!("capability call: {e}"))?;
    let (fast, pending) = fast_and_pending()?;
    sys::bench_phases(SLOT_CONSOLE, 1).map_err(|e| format!("phase counting off: {e}"))?;
    let bits = sys::poll(gift).map_err(|e| format!("poll: {e}"))?;
    let _ = sys::cap_delete(gift);
    check(r.words[2] == 0 && r.words[3] == 1 && bits == 0b110, || {
        format!("capability call: reply {:?}, notification bits {bits:#b}; expected the server to get 1 capability and signal 0b110", r.words)
    })?;
    check(fast + pending == want(1), || {
        format!("capability call: {fast} fast-path calls and {pending} left for pending work, expected {} together", want(1))
    })?;

    // 9. A server on another CPU (machines with more than one): the fast
    // path switches only between threads of one CPU, so neither the call
    // (here) nor the reply (there) may take it; the general path wakes the
    // other CPU, and the replies are the same. A fast path that let a
    // cross-CPU peer through would run the server here, and count.
    if env.cpus() > 1 {
        let far_ep = env.slot();
        sys::create(ObjectType::Endpoint, far_ep, 0).map_err(|e| format!("endpoint: {e}"))?;
        spawn_on(env, probe_server, 100, u64::from(far_ep), u64::from(note), 1)?;
        // The first call may find the server not yet waiting; after its
        // reply it waits on the endpoint, as a server does.
        call(far_ep, 60).map_err(|e| format!("first call to the server on CPU 1: {e}"))?;
        sys::bench_phases(SLOT_CONSOLE, 0).map_err(|e| format!("phase counting: {e}"))?;
        let before = RECEIVED.load(Ordering::SeqCst);
        let r = call(far_ep, 61).map_err(|e| format!("cross-core call: {e}"))?;
        let there = sys::call(far_ep, MsgInfo::new(LABEL_FAST_COUNT, 1, 0), [0, 0, 0, 0])
            .map_err(|e| format!("asking the server on CPU 1 for its count: {e}"))?;
        let here = fast_calls()?;
        sys::bench_phases(SLOT_CONSOLE, 1).map_err(|e| format!("phase counting off: {e}"))?;
        check(r.words == [0, before + 1, 61, 0] && r.info.label == LABEL_PLAIN, || format!("cross-core call: reply {:?}", r.words))?;
        check(here == 0 && there.words[2] == 0, || {
            format!("cross-core calls: {here} fast-path calls on this CPU, {} on the server's; expected none", there.words[2])
        })?;
    }

    // 10. The same checks with the phase counting off: the kernel's entry
    // runs a second copy of its path then, with the benchmark's stamps
    // compiled out (`phases::stamp_if`), and that copy must check rights,
    // keep badges and priorities as the counted one above does.
    sys::bench_phases(SLOT_CONSOLE, 1).map_err(|e| format!("phase counting off: {e}"))?;
    let before = RECEIVED.load(Ordering::SeqCst);
    let r = call(ep, 70).map_err(|e| format!("uncounted plain call: {e}"))?;
    check(r.words == [0, before + 1, 70, 0] && r.info.label == LABEL_PLAIN, || format!("uncounted plain call: reply {:?}", r.words))?;
    let r = call(badged, 71).map_err(|e| format!("uncounted badged call: {e}"))?;
    check(r.words[0] == 0x77 && r.words[1] == before + 2 && r.words[2] == 71, || {
        format!("uncounted badged call: reply {:?}, expected badge 0x77", r.words)
    })?;
    let got = call(recv_only, 72);
    check(got.as_ref().err() == Some(&abi::Error::NoRights), || format!("uncounted call without SEND: {got:?}, expected NoRights"))?;
    let r = call(ep, 73).map_err(|e| format!("uncounted call after the refused one: {e}"))?;
    check(r.words[1] == before + 3 && r.words[2] == 73, || format!("the uncounted refused call reached the server: reply {:?}", r.words))?;
    WOKEN.store(0, Ordering::SeqCst);
    spawn(env, client, 50, u64::from(ep), u64::from(done) | u64::from(park) << 32)?;
    let bits = sys::wait(done, FOREVER).map_err(|e| format!("waiting for the uncounted client: {e}"))?;
    check(bits & 1 << 40 == 0, || "the uncounted client's call failed".into())?;
    let seen = bits >> 1;
    check(seen == 1, || format!("uncounted: the client resumed having seen the waker run {seen} times, expected 1 (it must run first)"))?;
    Ok(())
}
