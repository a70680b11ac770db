//! Tests for the kernel findings of the security review (issue 10), each
//! named after its finding: what an ordinary process, holding only its own
//! capabilities, could do to the kernel before the fix.

use abi::{CapSlot, Error, MsgInfo, ObjectType, Rights, FOREVER, PAGE_SIZE};
use alcove_rt::start::SLOT_SELF;
use alloc::format;
use alloc::string::String;
use libipc::sys;

use crate::tests::Env;

const RW: Rights = Rights(Rights::READ.0 | Rights::WRITE.0);

fn check(cond: bool, why: impl FnOnce() -> String) -> Result<(), String> {
    if cond { Ok(()) } else { Err(why()) }
}

fn word(page: u64, i: u64) -> u64 {
    // SAFETY: `page` is a page this test mapped writable for its threads.
    unsafe { ((page + 8 * i) as *const u64).read_volatile() }
}

fn set_word(page: u64, i: u64, v: u64) {
    // SAFETY: as in `word`.
    unsafe { ((page + 8 * i) as *mut u64).write_volatile(v) }
}

fn sleep(env: &mut Env, ns: u64) -> Result<(), String> {
    let n = env.slot();
    sys::create(ObjectType::Notification, n, 0).map_err(|e| format!("{e}"))?;
    let r = sys::wait(n, ns);
    let _ = sys::cap_delete(n);
    check(r == Err(Error::Timeout), || format!("sleep ended with {r:?}"))
}

/// A thread of this process running `entry(page, arg)` on a fresh stack,
/// configured but not resumed.
fn thread(env: &mut Env, entry: extern "C" fn(u64, u64, u64) -> !, page: u64, arg: u64) -> Result<CapSlot, String> {
    let s = env.slot();
    sys::create(ObjectType::Frame, s, 1).map_err(|e| format!("stack: {e}"))?;
    let stack = env.reserve_va(1);
    sys::map(SLOT_SELF, s, stack, RW).map_err(|e| format!("map stack: {e}"))?;
    let t = env.slot();
    sys::create(ObjectType::Thread, t, u64::from(SLOT_SELF)).map_err(|e| format!("thread: {e}"))?;
    // SAFETY: the stack is a fresh mapping for this thread alone; it uses
    // no IPC buffer (short messages only).
    unsafe { sys::thread_configure(t, entry as *const () as u64, stack + PAGE_SIZE - 8, 0, page, arg) }
        .map_err(|e| format!("configure: {e}"))?;
    Ok(t)
}

fn result_code(r: Result<(), Error>) -> u64 {
    match r {
        Ok(()) => 1,
        Err(e) => 100 + e as u64,
    }
}

// ---- finding 1: a stale thread in an endpoint queue -------------------------

/// Word 0: the go flag the test sets; word 1: the phase the thread reached
/// (1 receiving, 2 its receive returned); word 2: a spin counter.
extern "C" fn throttled_then_receive(_ipc: u64, page: u64, ep: u64) -> ! {
    while word(page, 0) == 0 {
        set_word(page, 2, word(page, 2).wrapping_add(1));
    }
    set_word(page, 1, 1);
    let _ = sys::recv(ep as CapSlot, FOREVER);
    // Nobody sends to it before it is ended: reaching here means it was
    // woken without a message (the bug).
    set_word(page, 1, 2);
    loop {
        set_word(page, 2, word(page, 2).wrapping_add(1));
    }
}

/// Receives one message and records its first word in word 3.
extern "C" fn receive_once(_ipc: u64, page: u64, ep: u64) -> ! {
    if let Ok(m) = sys::recv(ep as CapSlot, FOREVER) {
        set_word(page, 3, m.words[0]);
    }
    loop {
        let _ = sys::recv(ep as CapSlot, FOREVER);
    }
}

/// A thread throttled by its CPU budget is resumed, blocks in `Recv`, and
/// its budget then comes back: it must stay blocked (it used to be woken
/// with no message while still in the endpoint's queue). Deleted there,
/// a send to the endpoint must reach another receiver (it used to find the
/// freed thread first and panic the kernel).
pub fn stale_thread_in_an_endpoint_queue(env: &mut Env) -> Result<(), String> {
    let ep = env.slot();
    sys::create(ObjectType::Endpoint, ep, 0).map_err(|e| format!("endpoint: {e}"))?;
    let p = env.slot();
    sys::create(ObjectType::Frame, p, 1).map_err(|e| format!("frame: {e}"))?;
    let page = env.reserve_va(1);
    sys::map(SLOT_SELF, p, page, RW).map_err(|e| format!("map: {e}"))?;
    let t = thread(env, throttled_then_receive, page, u64::from(ep))?;
    sys::thread_set_priority(t, 50, Some(0)).map_err(|e| format!("priority: {e}"))?;
    // 1 ms per 100 ms: spinning, it is throttled almost at once.
    sys::thread_set_budget(t, 1_000_000, 100_000_000).map_err(|e| format!("budget: {e}"))?;
    sys::thread_resume(t).map_err(|e| format!("resume: {e}"))?;
    for _ in 0..100 {
        sleep(env, 10_000_000)?;
        if word(page, 2) > 0 {
            break;
        }
    }
    check(word(page, 2) > 0, || "the capped thread never ran".into())?;
    sleep(env, 10_000_000)?;
    // Throttled now; resume it (again) until it reaches its receive.
    set_word(page, 0, 1);
    for _ in 0..400 {
        if word(page, 1) != 0 {
            break;
        }
        sys::thread_resume(t).map_err(|e| format!("resume: {e}"))?;
        sleep(env, 1_000_000)?;
    }
    check(word(page, 1) == 1, || format!("the thread did not reach its receive (phase {})", word(page, 1)))?;
    // Past its next replenishment: it must still be waiting.
    sleep(env, 250_000_000)?;
    let phase = word(page, 1);
    sys::cap_delete(t).map_err(|e| format!("delete: {e}"))?;
    if phase != 1 {
        // Deleting the endpoint, not sending to it, so the later tests
        // still run on a kernel with the bug.
        let _ = sys::cap_delete(ep);
        return Err("a thread blocked in Recv was woken with no message when its CPU budget came back".into());
    }
    let r = thread(env, receive_once, page, u64::from(ep))?;
    sys::thread_resume(r).map_err(|e| format!("resume: {e}"))?;
    sys::send(ep, MsgInfo::new(1, 1, 0), [0x5eed, 0, 0, 0]).map_err(|e| format!("send: {e}"))?;
    for _ in 0..100 {
        if word(page, 3) != 0 {
            break;
        }
        sleep(env, 1_000_000)?;
    }
    let got = word(page, 3);
    let _ = sys::cap_delete(r);
    let _ = sys::cap_delete(ep);
    check(got == 0x5eed, || format!("the receiver got {got:#x}, not the message sent"))
}

// ---- finding 15: scheduling limits --------------------------------------------

/// Run by a thread the low-priority, capped creator made: tries to give a
/// fresh thread (slot `target`) priority 90, no CPU cap, and a tight cap;
/// records each result in words 4, 5 and 6.
extern "C" fn probe_limits(_ipc: u64, page: u64, target: u64) -> ! {
    let target = target as CapSlot;
    set_word(page, 4, result_code(sys::thread_set_priority(target, 90, None)));
    set_word(page, 5, result_code(sys::thread_set_budget(target, 0, 0)));
    set_word(page, 6, result_code(sys::thread_set_budget(target, 1_000_000, 100_000_000)));
    loop {
        let _ = sys::yield_now();
    }
}

/// The creator: makes a thread in slot `slots & 0xffff` that runs
/// `probe_limits` on the stack whose top is in word 7, and resumes it.
extern "C" fn create_prober(_ipc: u64, page: u64, slots: u64) -> ! {
    let (child, target) = ((slots & 0xffff) as CapSlot, slots >> 16);
    let made = sys::create(ObjectType::Thread, child, u64::from(SLOT_SELF)).and_then(|()| {
        // SAFETY: word 7 holds the top of a stack the test mapped for this
        // thread alone; it uses no IPC buffer.
        unsafe { sys::thread_configure(child, probe_limits as *const () as u64, word(page, 7), 0, page, target) }
    });
    let made = made.and_then(|()| sys::thread_resume(child));
    set_word(page, 8, result_code(made));
    loop {
        let _ = sys::yield_now();
    }
}

/// A thread at priority 20 with a 50% CPU cap creates a thread: that
/// thread may not hand out priority 90 or lift a CPU cap (it used to start
/// at priority 100 with no cap), but may give a tighter cap.
pub fn new_threads_inherit_their_creators_limits(env: &mut Env) -> Result<(), String> {
    let p = env.slot();
    sys::create(ObjectType::Frame, p, 1).map_err(|e| format!("frame: {e}"))?;
    let page = env.reserve_va(1);
    sys::map(SLOT_SELF, p, page, RW).map_err(|e| format!("map: {e}"))?;
    let s = env.slot();
    sys::create(ObjectType::Frame, s, 1).map_err(|e| format!("stack: {e}"))?;
    let stack = env.reserve_va(1);
    sys::map(SLOT_SELF, s, stack, RW).map_err(|e| format!("map stack: {e}"))?;
    set_word(page, 7, stack + PAGE_SIZE - 8);
    let target = env.slot();
    sys::create(ObjectType::Thread, target, u64::from(SLOT_SELF)).map_err(|e| format!("thread: {e}"))?;
    let child = env.slot();
    let creator = thread(env, create_prober, page, u64::from(child) | (u64::from(target) << 16))?;
    sys::thread_set_priority(creator, 20, None).map_err(|e| format!("priority: {e}"))?;
    sys::thread_set_budget(creator, 5_000_000, 10_000_000).map_err(|e| format!("budget: {e}"))?;
    sys::thread_resume(creator).map_err(|e| format!("resume: {e}"))?;
    for _ in 0..500 {
        if word(page, 6) != 0 || word(page, 8) > 1 {
            break;
        }
        sleep(env, 1_000_000)?;
    }
    let (made, prio, lift, tighter) = (word(page, 8), word(page, 4), word(page, 5), word(page, 6));
    for slot in [child, creator, target] {
        let _ = sys::cap_delete(slot);
    }
    let no_rights = 100 + Error::NoRights as u64;
    // (The creator records `made` after resuming its thread, which, when
    // it outranks its creator, may never let it: its own results say.)
    check(tighter != 0, || format!("the capped creator's thread never reported (creating it: code {made})"))?;
    check(prio == no_rights, || format!("a thread made by a priority-20 thread gave priority 90 (code {prio}, 1 = allowed)"))?;
    check(lift == no_rights, || format!("a thread made by a capped thread lifted a CPU cap (code {lift}, 1 = allowed)"))?;
    check(tighter == 1, || format!("a tighter CPU cap was refused (code {tighter})"))
}

/// `ThreadSetBudget(u64::MAX, u64::MAX)` (whose deadline `now + budget`
/// wrapped) and a budget too small to enforce are refused; an ordinary one
/// is not.
pub fn cpu_budgets_that_wrap_are_refused(env: &mut Env) -> Result<(), String> {
    let t = env.slot();
    sys::create(ObjectType::Thread, t, u64::from(SLOT_SELF)).map_err(|e| format!("thread: {e}"))?;
    let huge = sys::thread_set_budget(t, u64::MAX, u64::MAX);
    let tiny = sys::thread_set_budget(t, 1, 1_000_000);
    let fine = sys::thread_set_budget(t, 1_000_000, 10_000_000);
    let _ = sys::cap_delete(t);
    check(huge == Err(Error::InvalidArgument), || format!("a budget of u64::MAX per u64::MAX ns gave {huge:?}"))?;
    check(tiny == Err(Error::InvalidArgument), || format!("a budget of 1 ns per ms gave {tiny:?}"))?;
    check(fine == Ok(()), || format!("a budget of 1 ms per 10 ms gave {fine:?}"))
}

// ---- finding 4: recursion in process teardown ---------------------------------

/// The most processes the chain below holds (each costs this suite 64 KiB
/// of budget, so its length is also bounded by what the suite has left).
const CHAIN_MAX: usize = 150;

/// A chain of child processes, each holding the next one's capability,
/// hung from one capability and deleted: every process ends and its
/// budget comes back, and the kernel lives on. Ending them used to
/// recurse once per link (`obj_unref` → `end_process` → `destroy_space` →
/// `obj_unref`), overflowing the 32 KiB kernel stack on a long chain.
pub fn unbounded_recursion_in_process_teardown(env: &mut Env) -> Result<(), String> {
    let before = sys::budget_info().map_err(|e| format!("{e}"))?.used_bytes;
    let mut chain = alloc::vec::Vec::new();
    for _ in 0..CHAIN_MAX {
        let c = env.slot();
        // `create_from`'s source argument is, for a process, how many
        // capability slots it gets: 4 keeps each link small.
        match sys::create_from(ObjectType::Process, c, 64 * 1024, 4) {
            Ok(()) => chain.push(c),
            Err(Error::OutOfBudget) => break,
            Err(e) => return Err(format!("create process {}: {e}", chain.len())),
        }
    }
    let links = chain.len();
    log::info!("process chain of {links} links");
    check(links >= 40, || format!("only {links} processes fit in the budget"))?;
    for w in chain.windows(2) {
        sys::cap_grant(w[0], w[1], 0, Rights::ALL).map_err(|e| format!("grant: {e}"))?;
    }
    for &c in &chain[1..] {
        sys::cap_delete(c).map_err(|e| format!("delete: {e}"))?;
    }
    let hung = sys::budget_info().map_err(|e| format!("{e}"))?.used_bytes;
    check(hung > before, || "the chain cost nothing".into())?;
    sys::cap_delete(chain[0]).map_err(|e| format!("delete the chain: {e}"))?;
    let after = sys::budget_info().map_err(|e| format!("{e}"))?.used_bytes;
    check(after == before, || format!("kernel memory {before} -> {after} bytes after the chain of {links} ended"))?;
    // And the kernel still makes processes.
    let p = env.slot();
    sys::create(ObjectType::Process, p, 64 * 1024).map_err(|e| format!("a process after the chain: {e}"))?;
    sys::cap_delete(p).map_err(|e| format!("{e}"))
}

// ---- finding 2: kernel memory not charged ---------------------------------------

/// `ProcessWatch` calls made in a loop on one process.
const WATCHES: u64 = 150_000;

/// `ProcessWatch` of one process with one notification, in a loop: the
/// kernel keeps one entry (the bits ORed), charged to the caller, and the
/// end of the process signals it once and gives the charge back. Each call
/// used to add an uncharged entry to a kernel vector until the 4 MiB
/// kernel heap ran out and the allocation failure panicked the kernel.
pub fn watching_a_process_in_a_loop(env: &mut Env) -> Result<(), String> {
    let before = sys::budget_info().map_err(|e| format!("{e}"))?.used_bytes;
    let child = env.slot();
    sys::create_from(ObjectType::Process, child, 64 * 1024, 4).map_err(|e| format!("create process: {e}"))?;
    let n = env.slot();
    sys::create(ObjectType::Notification, n, 0).map_err(|e| format!("notification: {e}"))?;
    let made = sys::budget_info().map_err(|e| format!("{e}"))?.used_bytes;
    for i in 0..WATCHES {
        sys::process_watch(child, n, 1 << (i % 64)).map_err(|e| format!("watch {i}: {e}"))?;
    }
    let watching = sys::budget_info().map_err(|e| format!("{e}"))?.used_bytes;
    sys::cap_delete(child).map_err(|e| format!("delete: {e}"))?;
    let bits = sys::poll(n).map_err(|e| format!("poll: {e}"))?;
    let _ = sys::cap_delete(n);
    let after = sys::budget_info().map_err(|e| format!("{e}"))?.used_bytes;
    check(watching > made && watching - made <= 1024, || format!("{WATCHES} watches of one process cost {} bytes of budget", watching.saturating_sub(made)))?;
    check(bits == u64::MAX, || format!("the process's end signalled {bits:#x}, not every bit watched"))?;
    check(after == before, || format!("kernel memory {before} -> {after} bytes after the watched process ended"))
}
