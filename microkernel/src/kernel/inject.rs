//! Fault injection for the system tests: widens a race window at a named
//! point (`abi::FaultPoint`) so that a test can land the racing operation
//! inside it, as KCSAN's delay injection and syzkaller's fault injection
//! do. Three findings of the security review (3, 7, 13) are races whose
//! windows are a few instructions wide; under QEMU's TCG no test hits them
//! at will, so their tests could not fail before the fixes.
//!
//! Off unless the kernel command line says `alcove.inject=on` (the test
//! ISOs of the `user` suite do; `cargo xtask build` and `run` never pass
//! it): then `Sys::FaultInject` does not exist (`NoSyscall`), and every
//! point is one relaxed load of a zero. A command-line switch rather than a
//! cargo feature keeps one kernel binary: the suites test the very kernel
//! `cargo xtask run` boots. Even when on, arming needs the console
//! capability with MANAGE (the right to end the machine), which only
//! system-test servers get; a point fires once per arming, and every pause
//! has a deadline, so nothing hangs on a test that dies.

use crate::arch::{self, time};
use abi::FaultPoint;
use core::sync::atomic::{AtomicBool, Ordering};
use kcore::inject::Injector;

/// Set at boot from `alcove.inject=on`.
static ENABLED: AtomicBool = AtomicBool::new(false);
static STATE: Injector = Injector::new();

/// How long a `GuestWalk` pause goes on once the guest's tables changed:
/// the unmapper that changed them may be waiting for this CPU (it does
/// when the walk is announced through `in_guest`, and gives up after
/// 100 ms), so the pause must end well before that.
const EARLY_END_NS: u64 = 5_000_000;

pub fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
}

pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Whether `p` is armed: the cheap check before a point does anything.
#[inline(always)]
pub fn armed(p: FaultPoint) -> bool {
    STATE.armed(p)
}

/// Fires `p` if it is armed: true once per arming, on the CPU that got
/// there first. For points that act at once (no pause).
pub fn fire(p: FaultPoint) -> bool {
    STATE.fire(p)
}

/// Pauses this CPU at `p` if it is armed: until the test releases it, the
/// armed deadline passes, or `EARLY_END_NS` after `changed()` first
/// returns true. Spins without the kernel lock, with interrupts open (as
/// the lock's own spin does: TLB shootdowns and kicks still get in).
/// Returns whether it paused.
pub fn pause(p: FaultPoint, changed: impl Fn() -> bool) -> bool {
    let Some(max) = STATE.begin_pause(p) else { return false };
    let start = time::nanos_since_boot();
    let mut changed_at: Option<u64> = None;
    arch::cpu::interrupts_on();
    while STATE.pausing() {
        let now = time::nanos_since_boot();
        if now.saturating_sub(start) > max {
            break;
        }
        if changed_at.is_none() && changed() {
            changed_at = Some(now);
        }
        if changed_at.is_some_and(|t| now.saturating_sub(t) > EARLY_END_NS) {
            break;
        }
        core::hint::spin_loop();
    }
    arch::cpu::interrupts_off();
    STATE.end_pause();
    true
}

/// Whether freed pages are poisoned: while `GuestWalk` is armed, so that a
/// walk that reads a page after it was freed sees `abi::FAULT_POISON`.
#[inline(always)]
pub fn poisoning() -> bool {
    armed(FaultPoint::GuestWalk)
}

/// `Sys::FaultInject`'s operations (the caller has checked `enabled` and
/// the capability): `(armed point, phase)`, or `None` for a bad request.
pub fn control(op: u64, point: u64, ns: u64) -> Option<(u64, u64)> {
    STATE.control(op, point, ns)
}
