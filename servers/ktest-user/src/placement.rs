//! Work-conserving placement: a thread that can run never waits in a busy
//! CPU's queue while another CPU idles. Two vCPU threads of one guest once
//! shared CPU 0 for good while CPU 1 idled (threads stayed on the CPU they
//! were first given), and the guest's CPU 0 waited on its CPU 1 for a
//! cross-CPU call that the thread queued behind it would run.
//!
//! The test's main thread runs on CPU 0 at priority 100. Spinners pinned
//! to every other CPU at 60 keep them busy; the waker (50, no affinity)
//! starts behind one of them: when CPU 0 goes idle it must take the waker
//! from that CPU's queue. Then CPU 1 idles and CPU 0 is busy (the main thread polling):
//! the woken waker must go to CPU 1 rather than queue behind the main
//! thread. Before, the waker never ran in either case while the other
//! thread kept its CPU.

use abi::{CapSlot, FOREVER, ObjectType};
use alcove_rt::{Thread, ThreadSlots, println};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use libipc::sys;

use crate::tests::Env;

const STACK_PAGES: u64 = 4;
/// How long the main thread waits for the waker each time.
const PATIENCE_NS: u64 = 3_000_000_000;
/// CPUs the test keeps busy at most (1 up to this).
const MAX_SPINNERS: usize = 16;

static STOP: [AtomicBool; MAX_SPINNERS + 1] = [const { AtomicBool::new(false) }; MAX_SPINNERS + 1];
static WAKER_RUNS: AtomicU64 = AtomicU64::new(0);

/// Pinned to CPU `cpu`: says it runs (bit `cpu` of `started`), spins
/// until its [`STOP`] flag, says so (bit 32 + `cpu`), then parks for good
/// on `park` (`started_park`: the two slots, `park` in the high half).
extern "C" fn spinner(_ipc: u64, started_park: u64, cpu: u64) -> ! {
    let cpu = cpu as usize;
    let (started, park) = (started_park & 0xffff_ffff, started_park >> 32);
    let _ = sys::signal(started as CapSlot, 1 << cpu);
    while !STOP[cpu].load(Ordering::Acquire) {
        core::hint::spin_loop();
    }
    let _ = sys::signal(started as CapSlot, 1 << (32 + cpu));
    loop {
        let _ = sys::wait(park as CapSlot, FOREVER);
    }
}

/// Counts each time it runs, says so on `done`, waits for `go`.
extern "C" fn waker(_ipc: u64, go: u64, done: u64) -> ! {
    loop {
        WAKER_RUNS.fetch_add(1, Ordering::AcqRel);
        let _ = sys::signal(done as CapSlot, 1);
        let _ = sys::wait(go as CapSlot, FOREVER);
    }
}

/// Waits until every bit of `want` came on `n`.
fn wait_bits(n: CapSlot, want: u64, what: &str) -> Result<(), String> {
    let mut seen = 0;
    while seen & want != want {
        seen |= sys::wait(n, PATIENCE_NS).map_err(|e| format!("{what}: {e} (bits {seen:#x} of {want:#x})"))?;
    }
    Ok(())
}

pub fn an_idle_cpu_runs_what_waits_on_a_busy_one(env: &mut Env) -> Result<(), String> {
    let cpus = env.cpus() as usize;
    if cpus < 2 {
        return Ok(());
    }
    let spinners = (cpus - 1).min(MAX_SPINNERS);
    let before = sys::budget_info().map_err(|e| format!("{e}"))?.used_bytes;
    let mut notes = [0; 4];
    for n in &mut notes {
        *n = env.slot();
        sys::create(ObjectType::Notification, *n, 0).map_err(|e| format!("notification: {e}"))?;
    }
    let [started, park, go, done] = notes;
    for s in &STOP {
        s.store(false, Ordering::Release);
    }
    WAKER_RUNS.store(0, Ordering::Release);
    let mut threads: Vec<Thread> = Vec::new();
    let result = (|| -> Result<(), String> {
        let mut spawn = |env: &mut Env, entry: extern "C" fn(u64, u64, u64) -> !, a0: u64, a1: u64, place| {
            let slots = ThreadSlots { thread: env.slot(), stack: env.slot(), ipc: env.slot() };
            let va = env.reserve_va(STACK_PAGES + 1);
            let t = Thread::spawn_placed(slots, va, STACK_PAGES, entry, a0, a1, Some(place)).map_err(|e| format!("spawn: {e}"))?;
            threads.push(t);
            Ok::<(), String>(())
        };
        // Every CPU but ours (0) busy at 60.
        for cpu in 1..=spinners {
            spawn(env, spinner, u64::from(started) | u64::from(park) << 32, cpu as u64, (60, Some(cpu as u32)))?;
        }
        let all: u64 = (1..=spinners).map(|c| 1u64 << c).sum();
        wait_bits(started, all, "the spinners never all started")?;
        // No CPU idles: the waker queues behind a spinner (the lowest
        // priority running), which never lets go.
        spawn(env, waker, u64::from(go), u64::from(done), (50, None))?;
        // We wait: CPU 0 idles, and must take the waker.
        sys::wait(done, PATIENCE_NS)
            .map_err(|e| format!("a thread queued behind a busy CPU's never ran while CPU 0 idled ({e})"))?;
        // The waker last ran on CPU 0. CPU 1 idles once its spinner parks.
        STOP[1].store(true, Ordering::Release);
        wait_bits(started, 1 << 33, "the spinner on CPU 1 never parked")?;
        // Wake the waker while we keep CPU 0 (polling, never blocking): it
        // must run on CPU 1 rather than wait behind us.
        let runs = WAKER_RUNS.load(Ordering::Acquire);
        sys::signal(go, 1).map_err(|e| format!("signal: {e}"))?;
        let start = sys::clock_ns().map_err(|e| format!("clock: {e}"))?;
        while sys::poll(done).map_err(|e| format!("poll: {e}"))? == 0 {
            let now = sys::clock_ns().map_err(|e| format!("clock: {e}"))?;
            if now.saturating_sub(start) > PATIENCE_NS {
                return Err("a woken thread waited behind a busy CPU's thread while CPU 1 idled".into());
            }
        }
        let after = WAKER_RUNS.load(Ordering::Acquire);
        if after != runs + 1 {
            return Err(format!("the waker ran {} times for one wake-up", after - runs));
        }
        Ok(())
    })();
    for s in &STOP {
        s.store(true, Ordering::Release);
    }
    drop(threads);
    for n in notes {
        let _ = sys::cap_delete(n);
    }
    result?;
    let after = sys::budget_info().map_err(|e| format!("{e}"))?.used_bytes;
    if after != before {
        return Err(format!("the threads' memory was not all returned: {before} bytes before, {after} after"));
    }
    Ok(())
}

/// Yields without end: a thread that is in and out of the kernel all the
/// time.
extern "C" fn yielder(_ipc: u64, started: u64, cpu: u64) -> ! {
    let cpu = cpu as usize;
    let _ = sys::signal(started as CapSlot, 1 << cpu);
    while !STOP[cpu].load(Ordering::Acquire) {
        let _ = sys::yield_now();
    }
    // Nobody looks at `started` any more: park on it.
    loop {
        let _ = sys::wait(started as CapSlot, FOREVER);
    }
}

/// Threads on every other CPU calling `Yield` in a loop (each pass takes
/// the big lock) must not keep this CPU out of the kernel: its system calls
/// that take the lock still finish. With a test-and-set lock the other
/// CPU took the lock again and again ahead of this one, which never got in
/// (a hang, bounded here).
pub fn yielding_threads_do_not_keep_other_cpus_out_of_the_kernel(env: &mut Env) -> Result<(), String> {
    const CALLS: u32 = 2000;
    let cpus = env.cpus() as usize;
    if cpus < 2 {
        return Ok(());
    }
    let others = (cpus - 1).min(MAX_SPINNERS);
    let before = sys::budget_info().map_err(|e| format!("{e}"))?.used_bytes;
    let (started, n) = (env.slot(), env.slot());
    for s in [started, n] {
        sys::create(ObjectType::Notification, s, 0).map_err(|e| format!("notification: {e}"))?;
    }
    for s in &STOP {
        s.store(false, Ordering::Release);
    }
    let mut threads: Vec<Thread> = Vec::new();
    let result = (|| -> Result<(), String> {
        for cpu in 1..=others {
            let slots = ThreadSlots { thread: env.slot(), stack: env.slot(), ipc: env.slot() };
            let va = env.reserve_va(STACK_PAGES + 1);
            let t = Thread::spawn_placed(slots, va, STACK_PAGES, yielder, u64::from(started), cpu as u64, Some((60, Some(cpu as u32))))
                .map_err(|e| format!("spawn: {e}"))?;
            threads.push(t);
        }
        let all: u64 = (1..=others).map(|c| 1u64 << c).sum();
        wait_bits(started, all, "the yielders never all started")?;
        // Signal and Poll take the lock (the general path) every time.
        // The kernel counts the turns CPUs spin for it meanwhile (the
        // benchmark's counter; what the cross-core IPC figure reads as 0
        // when the lock is never contended).
        let counting = sys::bench_phases(alcove_rt::start::SLOT_CONSOLE, 0).is_ok();
        let start = sys::clock_ns().map_err(|e| format!("clock: {e}"))?;
        for i in 0..CALLS {
            sys::signal(n, 1).map_err(|e| format!("signal {i}: {e}"))?;
            if sys::poll(n).map_err(|e| format!("poll {i}: {e}"))? != 1 {
                return Err(format!("poll {i} did not see the signal"));
            }
            let now = sys::clock_ns().map_err(|e| format!("clock: {e}"))?;
            if now.saturating_sub(start) > 10 * PATIENCE_NS {
                return Err(format!("CPU 0 made only {i} of {CALLS} system calls while the other CPUs yielded"));
            }
        }
        if counting {
            let spins = sys::bench_phases(alcove_rt::start::SLOT_CONSOLE, crate::tests::LOCK_SPINS_OP).map(|(t, _)| t);
            let _ = sys::bench_phases(alcove_rt::start::SLOT_CONSOLE, 1);
            if let Ok(turns) = spins {
                println!("ALCOVE-BENCH lock_spins_beside_yielders {turns} turns");
            }
        }
        Ok(())
    })();
    for s in &STOP {
        s.store(true, Ordering::Release);
    }
    drop(threads);
    for s in [started, n] {
        let _ = sys::cap_delete(s);
    }
    result?;
    let after = sys::budget_info().map_err(|e| format!("{e}"))?.used_bytes;
    if after != before {
        return Err(format!("the threads' memory was not all returned: {before} bytes before, {after} after"));
    }
    Ok(())
}
