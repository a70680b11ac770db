//! A model of one CPU running two vCPU threads of equal priority (issue 14):
//! the kernel's path from a timer tick to `need_resched`, a `VcpuRun` that
//! ends `Interrupted`, the return to the VMM, its next `VcpuRun` and the
//! scheduling pass in between, step by step in microseconds, with
//! [`RunQueue`] and [`should_switch`] deciding as they do in the kernel.
//!
//! What is modelled, as `kernel/mod.rs` and `kernel/vm.rs` do it:
//! * the LAPIC timer: one deadline, armed (`exit_kernel`) only when a slice
//!   ended; when it passes, its interrupt is pending until interrupts are
//!   open, and arming a new deadline does not take back one already
//!   pending (TSC-deadline mode);
//! * interrupts are open in ring 3 (the VMM's code between two runs), in
//!   the window a VM exit for an interrupt or the VMX-preemption timer
//!   opens, and (the fix) in the window `exit_kernel` opens before it reads
//!   `need_resched`; closed in the kernel otherwise. In the guest a pending
//!   tick makes the vCPU exit at once under SVM and on hardware; under
//!   Bochs's VMX it does not while the guest runs with interrupts off;
//! * a taken tick sets `need_resched`; `exit_kernel` swaps it for
//!   `slice_over`: the current thread goes behind the other one when the
//!   slice is over and the other is queued, and the timer is re-armed;
//! * a `VcpuRun` checks `need_resched` before every entry and ends
//!   `Interrupted` when it is set; under VMX it also ends one slice after
//!   it started (the preemption timer, or the check before an entry, which
//!   sets `need_resched`); a run that ends without `need_resched` goes
//!   straight back to the VMM (`fastpath::resume_caller`).

use super::*;

const SLICE_US: u64 = DEFAULT_TIME_SLICE_NS / 1000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Where {
    /// In the VMM's code for this many more µs, then `VcpuRun`.
    Vmm(u64),
    /// In `VcpuRun` since `start` (µs).
    Guest { start: u64 },
}

#[derive(Clone, Copy)]
struct Thread {
    at: Where,
    /// µs between the guest's exits the kernel finishes itself (CPUID, the
    /// PM timer); `None`: it spins in memory without exits.
    exit_every: Option<u64>,
    guest_us: u64,
}

/// The platform and the kernel rule under test.
#[derive(Clone, Copy)]
struct Rules {
    /// A pending host interrupt makes the guest exit (SVM, VMX on
    /// hardware); false for Bochs's VMX with the guest's interrupts off.
    guest_exits_on_tick: bool,
    /// The VMX run loop's per-run slice (VMX-preemption timer).
    vmx_slice: bool,
    /// `exit_kernel` takes pending interrupts before it reads
    /// `need_resched` (the fix).
    drain_before_decide: bool,
}

struct Cpu {
    rules: Rules,
    now: u64,
    threads: [Thread; 2],
    current: usize,
    queue: RunQueue<usize>,
    need_resched: bool,
    deadline: Option<u64>,
    pending: bool,
    vmm_us: u64,
}

const PRIO: u8 = 90;

/// How late the VMX-preemption timer ends a run after its slice: it counts
/// in units of 2^rate TSC ticks and is re-armed at each entry, so a guest
/// that exits every few microseconds meets the run loop's own check of the
/// slice's end first. Session 13's OVMF log shows that: of 37 sampled
/// `Interrupted` runs of the BSP under Bochs, every one ended after a port
/// exit (the PM timer) and none on a preemption-timer exit.
const PREEMPTION_LATE_US: u64 = 5;

impl Cpu {
    fn new(rules: Rules, exit_every: [Option<u64>; 2]) -> Self {
        let vmm_us = 5;
        let t = |e| Thread { at: Where::Vmm(vmm_us), exit_every: e, guest_us: 0 };
        let mut queue = RunQueue::new();
        queue.push_back(1, PRIO);
        Self {
            rules,
            now: 0,
            threads: [t(exit_every[0]), t(exit_every[1])],
            current: 0,
            queue,
            need_resched: false,
            deadline: Some(SLICE_US),
            pending: false,
            vmm_us,
        }
    }

    /// Takes a pending tick (interrupts open for a moment).
    fn take_pending(&mut self) {
        if self.pending {
            self.pending = false;
            self.need_resched = true;
        }
    }

    /// `exit_kernel`: decide, switch, re-arm, back to ring 3 (where a tick
    /// still pending is taken at once: then round again).
    fn exit_kernel(&mut self) {
        loop {
            if self.rules.drain_before_decide {
                self.take_pending();
            }
            let slice_over = core::mem::take(&mut self.need_resched);
            let best = self.queue.peek_highest_priority();
            if should_switch(PRIO, best, slice_over) {
                let (next, _) = self.queue.pop_highest().expect("queued");
                self.queue.push_back(self.current, PRIO);
                self.current = next;
            }
            if slice_over {
                self.deadline = Some(self.now + SLICE_US);
            }
            if !self.pending {
                return;
            }
            // Ring 3 with the tick pending: trap_from_user at once.
            self.take_pending();
        }
    }

    /// The end of a `VcpuRun`: straight back to the VMM unless something
    /// asked for a scheduling pass.
    fn end_run(&mut self) {
        let vmm_us = self.vmm_us;
        self.threads[self.current].at = Where::Vmm(vmm_us);
        if self.need_resched {
            self.exit_kernel();
        } else if self.pending {
            // Ring 3: the tick is taken on arrival.
            self.take_pending();
            self.exit_kernel();
        }
    }

    fn step(&mut self) {
        self.now += 1;
        if self.deadline.is_some_and(|d| self.now >= d) {
            self.deadline = None;
            self.pending = true;
        }
        let me = self.current;
        match self.threads[me].at {
            Where::Vmm(left) => {
                if self.pending {
                    self.take_pending();
                    self.exit_kernel();
                } else if left > 1 {
                    self.threads[me].at = Where::Vmm(left - 1);
                } else if self.need_resched {
                    // The run loop's first check.
                    self.end_run();
                } else {
                    self.threads[me].at = Where::Guest { start: self.now };
                }
            }
            Where::Guest { start } => {
                self.threads[me].guest_us += 1;
                let ran = self.now - start;
                if self.pending && self.rules.guest_exits_on_tick {
                    // External-interrupt exit, window opened: Interrupted.
                    self.take_pending();
                    self.end_run();
                } else if self.threads[me].exit_every.is_some_and(|e| ran.is_multiple_of(e)) {
                    // A kernel-finished exit, interrupts off; the loop's
                    // check before the next entry.
                    if self.need_resched {
                        self.end_run();
                    } else if self.rules.vmx_slice && ran >= SLICE_US {
                        self.need_resched = true;
                        self.end_run();
                    }
                } else if self.rules.vmx_slice && ran >= SLICE_US + PREEMPTION_LATE_US {
                    // VMX-preemption timer exit: window opened.
                    self.take_pending();
                    self.need_resched = true;
                    self.end_run();
                }
            }
        }
    }

    /// Guest time of each thread over `us` microseconds.
    fn run(mut self, us: u64) -> [u64; 2] {
        while self.now < us {
            self.step();
        }
        [self.threads[0].guest_us, self.threads[1].guest_us]
    }
}

/// Thread 0 (the BSP) exits every 3 µs to the kernel only, thread 1 (the
/// AP) spins without exits: one second on one CPU.
fn shares(rules: Rules) -> [u64; 2] {
    Cpu::new(rules, [Some(3), None]).run(1_000_000)
}

/// Each of the two got at least 40% of the CPU as guest time.
fn fair(s: [u64; 2]) -> bool {
    s.iter().all(|&t| t >= 400_000)
}

const BOCHS: Rules = Rules { guest_exits_on_tick: false, vmx_slice: true, drain_before_decide: true };
const SVM: Rules = Rules { guest_exits_on_tick: true, vmx_slice: false, drain_before_decide: true };
const VMX_HW: Rules = Rules { guest_exits_on_tick: true, vmx_slice: true, drain_before_decide: true };

#[test]
fn two_vcpu_threads_share_one_cpu_fairly() {
    for (name, rules) in [("Bochs VMX", BOCHS), ("SVM", SVM), ("VMX", VMX_HW)] {
        let s = shares(rules);
        assert!(fair(s), "{name}: guest µs per thread {s:?}");
        // And the other way round: the AP exits, the BSP spins.
        let s = Cpu::new(rules, [None, Some(3)]).run(1_000_000);
        assert!(fair(s), "{name}, roles swapped: guest µs per thread {s:?}");
        // Both exiting.
        let s = Cpu::new(rules, [Some(3), Some(7)]).run(1_000_000);
        assert!(fair(s), "{name}, both exiting: guest µs per thread {s:?}");
    }
}

/// Issue 14 as the model shows it: without the window before the decision,
/// under Bochs the tick armed at the BSP's switch comes while its guest
/// runs with interrupts off, stays pending past the end of its run (one
/// slice after the run started, later than the tick), and is taken in ring
/// 3 right after the switch to the AP's thread: the AP's turn ends before
/// its `VcpuRun`, every time. SVM and VMX on hardware exit on the tick and
/// were never affected.
#[test]
fn a_tick_left_pending_starved_the_other_thread() {
    let old = |r: Rules| Rules { drain_before_decide: false, ..r };
    let s = shares(old(BOCHS));
    assert!(s[1] < 10_000, "the AP ran {s:?}: the model no longer shows issue 14");
    assert!(fair(shares(old(SVM))));
    assert!(fair(shares(old(VMX_HW))));
}
