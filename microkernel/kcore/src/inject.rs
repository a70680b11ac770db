//! The state of the kernel's fault injection for system tests
//! (`microkernel/src/kernel/inject.rs` does the pausing; `abi::FaultPoint`
//! names the points): which point is armed and where it stands, shared by
//! every CPU without a lock. A point fires once per arming, on the first
//! CPU to reach it; a pause ends when the test releases it or disarms.

use abi::{FaultPhase, FaultPoint, FAULT_ARM, FAULT_DISARM, FAULT_MAX_PAUSE_NS, FAULT_RELEASE, FAULT_STATUS};
use core::sync::atomic::{AtomicU64, Ordering};

pub struct Injector {
    /// The armed point as a number (0: none).
    point: AtomicU64,
    phase: AtomicU64,
    max_pause_ns: AtomicU64,
}

impl Default for Injector {
    fn default() -> Self {
        Self::new()
    }
}

impl Injector {
    pub const fn new() -> Self {
        Self { point: AtomicU64::new(0), phase: AtomicU64::new(FaultPhase::Idle as u64), max_pause_ns: AtomicU64::new(0) }
    }

    /// Whether `p` is the armed point (the one load every point pays).
    #[inline(always)]
    pub fn armed(&self, p: FaultPoint) -> bool {
        self.point.load(Ordering::Relaxed) == p as u64
    }

    fn phase_now(&self) -> FaultPhase {
        FaultPhase::from_u64(self.phase.load(Ordering::Acquire)).unwrap_or(FaultPhase::Idle)
    }

    fn step(&self, from: FaultPhase, to: FaultPhase) -> bool {
        self.phase.compare_exchange(from as u64, to as u64, Ordering::AcqRel, Ordering::Acquire).is_ok()
    }

    /// Fires `p` if armed and not yet fired (a point that acts at once).
    pub fn fire(&self, p: FaultPoint) -> bool {
        self.armed(p) && self.step(FaultPhase::Armed, FaultPhase::Done)
    }

    /// Starts a pause at `p` if armed and not yet fired: `Some(the longest
    /// it may last)`. The caller waits while [`Injector::pausing`] holds,
    /// then calls [`Injector::end_pause`].
    pub fn begin_pause(&self, p: FaultPoint) -> Option<u64> {
        (self.armed(p) && self.step(FaultPhase::Armed, FaultPhase::Paused)).then(|| self.max_pause_ns.load(Ordering::Relaxed))
    }

    /// Whether a pause begun goes on (not released, not disarmed).
    pub fn pausing(&self) -> bool {
        self.phase_now() == FaultPhase::Paused
    }

    /// The pausing CPU goes on: `Done`, unless a disarm came first.
    pub fn end_pause(&self) {
        if !self.step(FaultPhase::Paused, FaultPhase::Done) {
            self.step(FaultPhase::Released, FaultPhase::Done);
        }
    }

    /// `Sys::FaultInject`'s operations: `(armed point, phase)`, or `None`
    /// for an unknown operation or point, a pause beyond
    /// `FAULT_MAX_PAUSE_NS`, or an arming while a CPU is paused.
    pub fn control(&self, op: u64, point: u64, ns: u64) -> Option<(u64, u64)> {
        match op {
            FAULT_ARM => {
                let p = FaultPoint::from_u64(point)?;
                if ns > FAULT_MAX_PAUSE_NS || matches!(self.phase_now(), FaultPhase::Paused | FaultPhase::Released) {
                    return None;
                }
                // Disarmed first, so no CPU sees the new point with the
                // old phase.
                self.point.store(0, Ordering::Release);
                self.max_pause_ns.store(ns, Ordering::Relaxed);
                self.phase.store(FaultPhase::Armed as u64, Ordering::Release);
                self.point.store(p as u64, Ordering::Release);
            }
            FAULT_STATUS => {}
            FAULT_RELEASE => {
                self.step(FaultPhase::Paused, FaultPhase::Released);
            }
            FAULT_DISARM => {
                // A CPU still paused sees the phase change and goes on.
                self.point.store(0, Ordering::Release);
                self.phase.store(FaultPhase::Idle as u64, Ordering::Release);
            }
            _ => return None,
        }
        Some((self.point.load(Ordering::Acquire), self.phase.load(Ordering::Acquire)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use FaultPoint::*;

    fn status(i: &Injector) -> (u64, u64) {
        i.control(FAULT_STATUS, 0, 0).unwrap()
    }

    #[test]
    fn nothing_fires_or_pauses_unless_armed() {
        let i = Injector::new();
        for p in [IoPortEnableReturn, HaltExit, GuestWalk] {
            assert!(!i.armed(p));
            assert!(!i.fire(p));
            assert_eq!(i.begin_pause(p), None);
        }
        assert_eq!(status(&i), (0, FaultPhase::Idle as u64));
    }

    #[test]
    fn an_armed_point_fires_once_and_only_itself() {
        let i = Injector::new();
        assert_eq!(i.control(FAULT_ARM, IoPortEnableReturn as u64, 0), Some((1, FaultPhase::Armed as u64)));
        assert!(!i.fire(HaltExit));
        assert_eq!(i.begin_pause(GuestWalk), None);
        assert!(i.fire(IoPortEnableReturn));
        assert!(!i.fire(IoPortEnableReturn), "once per arming");
        assert_eq!(status(&i), (1, FaultPhase::Done as u64));
        assert_eq!(i.control(FAULT_DISARM, 0, 0), Some((0, FaultPhase::Idle as u64)));
        assert!(!i.armed(IoPortEnableReturn));
    }

    #[test]
    fn a_pause_goes_on_until_released_and_arming_waits_for_it() {
        let i = Injector::new();
        i.control(FAULT_ARM, HaltExit as u64, 1234).unwrap();
        assert_eq!(i.begin_pause(HaltExit), Some(1234));
        assert_eq!(i.begin_pause(HaltExit), None, "one CPU pauses");
        assert!(i.pausing());
        assert_eq!(status(&i).1, FaultPhase::Paused as u64);
        assert_eq!(i.control(FAULT_ARM, GuestWalk as u64, 0), None, "no arming while a CPU is paused");
        assert_eq!(i.control(FAULT_RELEASE, 0, 0), Some((2, FaultPhase::Released as u64)));
        assert!(!i.pausing());
        i.end_pause();
        assert_eq!(status(&i), (2, FaultPhase::Done as u64));
        assert_eq!(i.control(FAULT_RELEASE, 0, 0), Some((2, FaultPhase::Done as u64)), "release after the end changes nothing");
        assert!(i.control(FAULT_ARM, GuestWalk as u64, 0).is_some());
    }

    #[test]
    fn a_pause_that_ends_by_itself_or_is_disarmed() {
        let i = Injector::new();
        i.control(FAULT_ARM, GuestWalk as u64, 5).unwrap();
        assert!(i.begin_pause(GuestWalk).is_some());
        i.end_pause(); // its deadline
        assert_eq!(status(&i).1, FaultPhase::Done as u64);
        i.control(FAULT_ARM, GuestWalk as u64, 5).unwrap();
        assert!(i.begin_pause(GuestWalk).is_some());
        i.control(FAULT_DISARM, 0, 0).unwrap();
        assert!(!i.pausing());
        i.end_pause();
        assert_eq!(status(&i), (0, FaultPhase::Idle as u64), "a disarm stays a disarm");
    }

    #[test]
    fn bad_requests_are_refused() {
        let i = Injector::new();
        assert_eq!(i.control(FAULT_ARM, 0, 0), None);
        assert_eq!(i.control(FAULT_ARM, 4, 0), None);
        assert_eq!(i.control(FAULT_ARM, HaltExit as u64, FAULT_MAX_PAUSE_NS + 1), None);
        assert_eq!(i.control(9, 0, 0), None);
        assert_eq!(status(&i), (0, FaultPhase::Idle as u64));
    }
}
