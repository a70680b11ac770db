//! The threads waiting to receive on an endpoint are linked through the
//! threads themselves (kcore's `WaitList`): every way a thread stops
//! waiting must take it out of that list first, or a later `Call` would be
//! delivered to a dead thread (or follow a link through freed memory). Here
//! receivers leave the queue each way there is — killed at the middle and
//! at the end, suspended at the head, timed out, the endpoint deleted under
//! them — and each `Call` after that must be answered by a live receiver in
//! the order they queued, or fail with `Gone` when the endpoint is gone.

use abi::{CapSlot, MsgInfo, ObjectType, FOREVER};
use alloc::format;
use alloc::string::String;
use core::sync::atomic::{AtomicU64, Ordering};
use libipc::sys;

use crate::fastpath::spawn;
use crate::tests::Env;

/// Per receiver (by its number): what ended its receiving, the error code
/// plus one (0: still receiving).
static ENDED: [AtomicU64; 8] = [const { AtomicU64::new(0) }; 8];
/// The helper caller's outcome: the reply's word 0, or `CALL_FAILED` | the
/// error code; 0 while it waits.
static CALLED: AtomicU64 = AtomicU64::new(0);
const CALL_FAILED: u64 = 1 << 40;

/// Bits on the test's notification: receiver `i` is about to receive
/// (`1 << i`), receiver `i` stopped with an error (`1 << (16 + i)`), the
/// helper's call returned (`CALL_DONE`).
const fn ready(i: u64) -> u64 {
    1 << i
}
const fn ended(i: u64) -> u64 {
    1 << (16 + i)
}
const CALL_DONE: u64 = 1 << 40;

fn check(cond: bool, why: impl FnOnce() -> String) -> Result<(), String> {
    if cond { Ok(()) } else { Err(why()) }
}

/// Slots in one word: the endpoint, the notification, the parking one.
fn slots(ep: CapSlot, note: CapSlot, park: CapSlot) -> u64 {
    u64::from(ep) | u64::from(note) << 16 | u64::from(park) << 32
}

fn unslots(a: u64) -> (CapSlot, CapSlot, CapSlot) {
    ((a & 0xffff) as CapSlot, ((a >> 16) & 0xffff) as CapSlot, ((a >> 32) & 0xffff) as CapSlot)
}

/// Receiver number `a1 & 0xff` (with a timeout of `a1 >> 8` ms, 0 for
/// none): answers every call with its own number, until a receive fails;
/// then records why, says so, and parks.
extern "C" fn receiver(_ipc: u64, a0: u64, a1: u64) -> ! {
    let (ep, note, park) = unslots(a0);
    let (id, ms) = (a1 & 0xff, a1 >> 8);
    let timeout = if ms == 0 { FOREVER } else { ms * 1_000_000 };
    let _ = sys::signal(note, ready(id));
    let mut r = sys::recv(ep, timeout);
    while let Ok(m) = r {
        r = sys::reply_recv(ep, MsgInfo::new(m.info.label, 1, 0), [id, 0, 0, 0]);
    }
    if let Err(e) = r {
        ENDED[id as usize].store(e as u64 + 1, Ordering::SeqCst);
    }
    let _ = sys::signal(note, ended(id));
    loop {
        let _ = sys::wait(park, FOREVER);
    }
}

/// One call on the endpoint; records the outcome in `CALLED`, says so, parks.
extern "C" fn caller(_ipc: u64, a0: u64, _: u64) -> ! {
    let (ep, note, park) = unslots(a0);
    let out = match sys::call(ep, MsgInfo::new(3, 1, 0), [7, 0, 0, 0]) {
        Ok(m) => m.words[0],
        Err(e) => CALL_FAILED | e as u64,
    };
    CALLED.store(out, Ordering::SeqCst);
    let _ = sys::signal(note, CALL_DONE);
    loop {
        let _ = sys::wait(park, FOREVER);
    }
}

/// Waits on `note` until every bit of `want` came; returns the bits seen.
fn wait_for(note: CapSlot, want: u64, seen: &mut u64, what: &str) -> Result<(), String> {
    for _ in 0..1000 {
        if *seen & want == want {
            *seen &= !want;
            return Ok(());
        }
        *seen |= sys::wait(note, 2_000_000_000).map_err(|e| format!("waiting for {what}: {e}"))?;
    }
    Err(format!("waiting for {what}: bits {seen:#x}, want {want:#x}"))
}

/// A call from this thread: the number of the receiver that answered.
fn call(ep: CapSlot, what: &str) -> Result<u64, String> {
    let m = sys::call(ep, MsgInfo::new(2, 1, 0), [5, 0, 0, 0]).map_err(|e| format!("{what}: {e}"))?;
    check(m.info.words == 1, || format!("{what}: {} words in the reply, expected 1", m.info.words))?;
    Ok(m.words[0])
}

pub fn receivers_leave_the_queue_every_way(env: &mut Env) -> Result<(), String> {
    let (ep, note, park) = (env.slot(), env.slot(), env.slot());
    check(ep.max(note).max(park) < 0x1_0000, || "slot numbers beyond 16 bits".into())?;
    sys::create(ObjectType::Endpoint, ep, 0).map_err(|e| format!("endpoint: {e}"))?;
    for n in [note, park] {
        sys::create(ObjectType::Notification, n, 0).map_err(|e| format!("notification: {e}"))?;
    }
    for e in &ENDED {
        e.store(0, Ordering::SeqCst);
    }
    CALLED.store(0, Ordering::SeqCst);
    let a0 = slots(ep, note, park);
    let mut seen = 0;
    // Queued in this order: 0, 1, 2, and 3 with a 30 ms timeout. Each is
    // at this thread's priority on its CPU, so one yield after the last
    // says it is ready lets the last reach its Recv.
    let mut t = [0 as CapSlot; 6];
    for (i, ms) in [(0, 0), (1, 0), (2, 0), (3, 30)] {
        t[i] = spawn(env, receiver, 100, a0, i as u64 | ms << 8)?;
        wait_for(note, ready(i as u64), &mut seen, "a receiver to start")?;
        sys::yield_now().map_err(|e| format!("yield: {e}"))?;
    }
    // Killed in the middle of the queue (its last capability deleted).
    sys::cap_delete(t[1]).map_err(|e| format!("deleting receiver 1: {e}"))?;
    // The head answers; then it queues again behind 2 and 3.
    let who = call(ep, "call after killing the middle receiver")?;
    check(who == 0, || format!("first call answered by receiver {who}, expected 0 (the head; 1 was killed)"))?;
    // 3 times out and leaves from the middle: 2, 3, 0 → 2, 0.
    wait_for(note, ended(3), &mut seen, "receiver 3's timeout")?;
    let why = ENDED[3].load(Ordering::SeqCst);
    check(why == abi::Error::Timeout as u64 + 1, || format!("receiver 3 stopped with code {}, expected Timeout", why.wrapping_sub(1)))?;
    // The head suspended: 0 alone is left.
    sys::thread_suspend(t[2]).map_err(|e| format!("suspending receiver 2: {e}"))?;
    for n in 0..3 {
        let who = call(ep, "call after the suspend")?;
        check(who == 0, || format!("call {n} after suspending 2 answered by receiver {who}, expected 0 (the only one left)"))?;
    }
    // Killed at the end (the only one): the queue is empty, so a call
    // waits for a receiver and is answered by the next one that comes.
    sys::cap_delete(t[0]).map_err(|e| format!("deleting receiver 0: {e}"))?;
    let c = spawn(env, caller, 100, a0, 0)?;
    sys::yield_now().map_err(|e| format!("yield: {e}"))?;
    check(CALLED.load(Ordering::SeqCst) == 0, || {
        format!("a call with every receiver gone returned {:#x} (expected it to wait)", CALLED.load(Ordering::SeqCst))
    })?;
    t[4] = spawn(env, receiver, 100, a0, 4)?;
    wait_for(note, ready(4) | CALL_DONE, &mut seen, "the waiting call to be answered")?;
    let got = CALLED.load(Ordering::SeqCst);
    check(got == 4, || format!("the waiting call returned {got:#x}, expected receiver 4's answer"))?;
    // Two receivers queued (4 back after its reply, 5 new), then the
    // endpoint's last capability deleted: both learn it is gone.
    t[5] = spawn(env, receiver, 100, a0, 5)?;
    wait_for(note, ready(5), &mut seen, "receiver 5 to start")?;
    sys::yield_now().map_err(|e| format!("yield: {e}"))?;
    sys::cap_delete(ep).map_err(|e| format!("deleting the endpoint: {e}"))?;
    wait_for(note, ended(4) | ended(5), &mut seen, "the receivers of a deleted endpoint to wake")?;
    for i in [4, 5] {
        let why = ENDED[i].load(Ordering::SeqCst);
        check(why == abi::Error::Gone as u64 + 1, || format!("receiver {i} stopped with code {}, expected Gone", why.wrapping_sub(1)))?;
    }
    // Nobody else woke: the killed never, the suspended one not yet.
    for i in [0, 1, 2] {
        let why = ENDED[i].load(Ordering::SeqCst);
        check(why == 0, || format!("receiver {i} (killed or suspended) stopped with code {}", why.wrapping_sub(1)))?;
    }
    let r = sys::call(ep, MsgInfo::new(2, 1, 0), [5, 0, 0, 0]);
    check(r.is_err(), || "a call on a deleted endpoint's slot was answered".into())?;
    for s in [c, t[2], t[3], t[4], t[5]] {
        let _ = sys::thread_suspend(s);
        let _ = sys::cap_delete(s);
    }
    Ok(())
}

/// Server number `a1 >> 16` on the endpoint: per message, says it holds
/// one (`ready`), waits on `go` (`a1 & 0xffff`), then answers its number.
extern "C" fn holder(_ipc: u64, a0: u64, a1: u64) -> ! {
    let (ep, note, park) = unslots(a0);
    let (go, id) = ((a1 & 0xffff) as CapSlot, a1 >> 16);
    let mut r = sys::recv(ep, FOREVER);
    while let Ok(m) = r {
        let _ = sys::signal(note, ready(id));
        let _ = sys::wait(go, FOREVER);
        r = sys::reply_recv(ep, MsgInfo::new(m.info.label, 1, 0), [id, 0, 0, 0]);
    }
    if let Err(e) = r {
        ENDED[id as usize].store(e as u64 + 1, Ordering::SeqCst);
    }
    let _ = sys::signal(note, ended(id));
    loop {
        let _ = sys::wait(park, FOREVER);
    }
}

/// The fast path looks a server's caller up without the slab's generation
/// check, on the grounds that a thread's death clears every `reply_to`
/// naming it. A caller killed while its server holds the call, and a new
/// thread in its slot awaiting another server's reply: the first server's
/// reply must reach nobody, the new thread only its own server's.
pub fn a_reply_owed_to_a_killed_caller_reaches_nobody(env: &mut Env) -> Result<(), String> {
    let (ep_s, ep_t, note, park, go_s, go_t) = (env.slot(), env.slot(), env.slot(), env.slot(), env.slot(), env.slot());
    check(ep_s.max(ep_t).max(note).max(park).max(go_s).max(go_t) < 0x1_0000, || "slot numbers beyond 16 bits".into())?;
    for e in [ep_s, ep_t] {
        sys::create(ObjectType::Endpoint, e, 0).map_err(|e| format!("endpoint: {e}"))?;
    }
    for n in [note, park, go_s, go_t] {
        sys::create(ObjectType::Notification, n, 0).map_err(|e| format!("notification: {e}"))?;
    }
    let (a_s, a_t) = (slots(ep_s, note, park), slots(ep_t, note, park));
    let mut seen = 0;
    let s = spawn(env, holder, 100, a_s, u64::from(go_s) | 6 << 16)?;
    let t = spawn(env, holder, 100, a_t, u64::from(go_t) | 7 << 16)?;
    sys::yield_now().map_err(|e| format!("yield: {e}"))?;
    // C calls S, which holds the call; C is killed meanwhile.
    let c = spawn(env, caller, 100, a_s, 0)?;
    wait_for(note, ready(6), &mut seen, "server 6 to hold the first call")?;
    sys::cap_delete(c).map_err(|e| format!("deleting the first caller: {e}"))?;
    // D (most likely in C's slot: the slab reuses the last freed one)
    // calls T, which holds that call too: D awaits a reply.
    CALLED.store(0, Ordering::SeqCst);
    let d = spawn(env, caller, 100, a_t, 0)?;
    wait_for(note, ready(7), &mut seen, "server 7 to hold the second call")?;
    // S replies to its dead caller and goes back to receiving.
    sys::signal(go_s, 1).map_err(|e| format!("signal: {e}"))?;
    for _ in 0..3 {
        sys::yield_now().map_err(|e| format!("yield: {e}"))?;
    }
    let got = CALLED.load(Ordering::SeqCst);
    check(got == 0, || format!("a reply owed to a killed caller reached another thread: it returned {got:#x}"))?;
    sys::signal(go_t, 1).map_err(|e| format!("signal: {e}"))?;
    wait_for(note, CALL_DONE, &mut seen, "the second call's reply")?;
    let got = CALLED.load(Ordering::SeqCst);
    check(got == 7, || format!("the second call returned {got:#x}, expected server 7's answer"))?;
    for x in [s, t, d] {
        let _ = sys::thread_suspend(x);
        let _ = sys::cap_delete(x);
    }
    for e in [ep_s, ep_t] {
        let _ = sys::cap_delete(e);
    }
    Ok(())
}
