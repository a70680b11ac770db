//! Where a fast-path system call spends its instructions: the benchmark's
//! per-phase breakdown (`cargo xtask bench`, `ipc_phase_*`). Off unless a
//! holder of the console capability turns it on (`Sys::BenchPhases`); each
//! stamp is then one RDTSC, which under QEMU `-icount shift=0` counts
//! instructions. Off, a stamp costs a load and a branch, except in the
//! system-call entry's path (`on`, `stamp_if`), which checks once.
//!
//! Phases of one system call that the fast path completed, from the entry
//! to Rust (`syscall_from_user`) to the jump back to ring 3: `lock` (the
//! big lock and pending interrupts), `decode` (the caller's thread, number
//! and message info), `cap` (the capability lookup and rights), `switch`
//! (the peer's checks, the message, the thread switch), `exit` (leaving the
//! lock, up to the register restore). The assembly entry and exit and the
//! user code are what the benchmark's own count leaves over.
//!
//! A `VcpuRun` whose exit goes back to the VMM by `resume_caller` is
//! counted with the same stamps and other boundaries (`vmexit_phase_*`):
//! `lock` as above, `entry` (the capability, the run page's requests, the
//! VMCB/VMCS loads and the virtual APIC's work, up to VMRUN/VMRESUME; with
//! the exits the kernel finished itself in the same run), `guest` (the world
//! switch both ways and the guest's own instructions up to its exit),
//! `exit` (the exit's decoding, the state saved and the run page
//! published), `return` (the lock taken again, the checks of the way back).
//! A run that never entered the guest leaves stale stamps, which `done`
//! recognises by their order and does not count.

use crate::arch::percpu::{self, PHASE_STAMPS};
use core::sync::atomic::{AtomicBool, Ordering};

static ON: AtomicBool = AtomicBool::new(false);

#[inline(always)]
fn tsc() -> u64 {
    // SAFETY: RDTSC only reads the time-stamp counter.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Stamps phase boundary `i` on this CPU (0 = entry to Rust).
#[inline(always)]
pub fn stamp(i: usize) {
    if ON.load(Ordering::Relaxed) {
        store(i);
    }
}

/// Whether stamps are being counted: the system-call entry asks once and
/// runs a copy of its path with the stamps compiled in (`ON` = true) or out
/// (`stamp_if::<false>` is nothing), so the fast path pays one check for
/// the breakdown instead of one per stamp.
#[inline(always)]
pub fn on() -> bool {
    ON.load(Ordering::Relaxed)
}

/// [`stamp`] in a path copy that already knows whether stamps are on.
#[inline(always)]
pub fn stamp_if<const STAMP: bool>(i: usize) {
    if STAMP {
        store(i);
    }
}

/// [`done`] in such a path copy.
#[inline(always)]
pub fn done_if<const STAMP: bool>() {
    if STAMP {
        done();
    }
}

#[inline(always)]
fn store(i: usize) {
    percpu::this().phase_stamps[i].store(tsc(), Ordering::Relaxed);
}

/// The fast path completed a call: the last stamp, and the differences
/// between stamps added to this CPU's sums.
#[inline(always)]
pub fn done() {
    if !ON.load(Ordering::Relaxed) {
        return;
    }
    let p = percpu::this();
    p.phase_stamps[PHASE_STAMPS - 1].store(tsc(), Ordering::Relaxed);
    // Stamps out of order belong to an earlier call (a `VcpuRun` that did
    // not enter the guest): nothing to count.
    if (0..PHASE_STAMPS - 1).any(|i| p.phase_stamps[i + 1].load(Ordering::Relaxed) < p.phase_stamps[i].load(Ordering::Relaxed)) {
        return;
    }
    for i in 0..PHASE_STAMPS - 1 {
        let d = p.phase_stamps[i + 1].load(Ordering::Relaxed).wrapping_sub(p.phase_stamps[i].load(Ordering::Relaxed));
        p.phase_sums[i].fetch_add(d, Ordering::Relaxed);
    }
    p.phase_ops.fetch_add(1, Ordering::Relaxed);
}

/// In a path copy with the stamps on: the fast path passed every check of
/// the call itself but left it to the general path because this CPU has
/// scheduling work pending (a timer tick or reschedule to act on, a
/// throttled thread to refill, a thread of higher priority than the one
/// that would get the CPU ready, e.g. a driver woken by an interrupt just
/// delivered). Counted apart from the completed calls, so a test can tell
/// such a fallback (by design, and what a CPU hog beside the emulator
/// provokes) from a call the fast path should have taken and did not.
#[inline(always)]
pub fn fallback_if<const STAMP: bool>() {
    if STAMP {
        percpu::this().phase_fallbacks.fetch_add(1, Ordering::Relaxed);
    }
}

/// `Sys::BenchPhases` operation reading the turns every CPU spun waiting
/// for the big lock while counting was on: `(turns, 0, 0)`.
pub const LOCK_SPINS: u64 = 100;

/// `Sys::BenchPhases` operations: 0 clears every CPU's sums and starts
/// counting, 1 stops, `2 + i` reads phase `i` of the caller's CPU as
/// `(ticks, calls counted, fallbacks for pending work)`, [`LOCK_SPINS`]
/// the lock waits of all CPUs.
pub fn control(op: u64) -> Option<(u64, u64, u64)> {
    match op {
        LOCK_SPINS => {
            let turns = (0..crate::arch::MAX_CPUS).map(|cpu| percpu::of(cpu).lock_spins.load(Ordering::Relaxed)).sum();
            Some((turns, 0, 0))
        }
        0 => {
            for cpu in 0..crate::arch::MAX_CPUS {
                let p = percpu::of(cpu);
                p.phase_sums.iter().for_each(|s| s.store(0, Ordering::Relaxed));
                p.phase_ops.store(0, Ordering::Relaxed);
                p.phase_fallbacks.store(0, Ordering::Relaxed);
                p.lock_spins.store(0, Ordering::Relaxed);
            }
            ON.store(true, Ordering::Relaxed);
            Some((0, 0, 0))
        }
        1 => {
            ON.store(false, Ordering::Relaxed);
            Some((0, 0, 0))
        }
        n if n >= 2 && ((n - 2) as usize) < PHASE_STAMPS - 1 => {
            let p = percpu::this();
            let (sum, ops) = (p.phase_sums[(n - 2) as usize].load(Ordering::Relaxed), p.phase_ops.load(Ordering::Relaxed));
            Some((sum, ops, p.phase_fallbacks.load(Ordering::Relaxed)))
        }
        _ => None,
    }
}
