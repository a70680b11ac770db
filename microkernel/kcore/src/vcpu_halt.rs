//! What a vCPU's HLT and NMIs become: the decisions the kernel's run loop
//! takes around them, as plain values so they are tested on the host.
//!
//! * HLT with interrupts off does not end a vCPU: an NMI, INIT or reset
//!   still wakes it (SDM Vol. 3A §10.2 "HLT"; AMD APM Vol. 3 "HLT").
//!   Guests rely on that: memtest86+ parks its CPUs at a barrier with
//!   `cli; hlt` and the last one to arrive wakes the others with NMI IPIs.
//!   Only when every vCPU of the guest is stopped like that (or waits for a
//!   start-up IPI) can nothing wake any of them. The kernel tells the VMM
//!   of every such stop and whether it was the last (the VMM then ends the
//!   VM as halted); [`hlt_decision`] says which.
//! * NMI blocking (SDM Vol. 3A §6.7.1): after an NMI is delivered, the next
//!   waits until the handler's IRET. Under VMX the CPU tracks that for the
//!   kernel ("virtual NMIs", the interruptibility state); under SVM event
//!   injection ignores it, so [`NmiGate`] tracks it in software as KVM does:
//!   masked at injection, IRET intercepted, unmasked once the guest is past
//!   that IRET (the next exit finds RIP elsewhere).

/// What a HLT becomes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HltDecision {
    /// An event the HLT waits for is already there: carry on in the guest.
    Continue,
    /// Sleep until the APIC timer at this APIC time, or until an IPI.
    SleepUntil(u64),
    /// Interrupts off: stopped until an NMI or INIT arrives. The VMM is
    /// told, with whether every other vCPU is stopped too (then nothing can
    /// wake the guest any more and the VMM ends it); running the vCPU
    /// again sleeps until the NMI or INIT.
    Stopped { all: bool },
}

/// The state of the halting vCPU and of the others in its guest.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HltInputs {
    /// RFLAGS.IF.
    pub interrupts_on: bool,
    /// An NMI is latched in the vCPU's APIC.
    pub nmi_pending: bool,
    /// A fixed interrupt is ready to be taken (only counts with IF = 1).
    pub interrupt_ready: bool,
    /// The vCPU's next APIC timer deadline.
    pub timer_deadline: Option<u64>,
    /// Whether every other vCPU of the guest is [`OtherVcpu::stopped`].
    pub others_stopped: bool,
}

/// Decides a HLT (the instruction is already retired: RIP is past it).
pub fn hlt_decision(i: &HltInputs) -> HltDecision {
    if i.nmi_pending {
        return HltDecision::Continue;
    }
    if !i.interrupts_on {
        return HltDecision::Stopped { all: i.others_stopped };
    }
    if i.interrupt_ready {
        return HltDecision::Continue;
    }
    HltDecision::SleepUntil(i.timer_deadline.unwrap_or(u64::MAX))
}

/// A HLT with interrupts off and no NMI latched when the kernel looked:
/// the vCPU announces that it is stopped (`announce`, what the others'
/// [`OtherVcpu::halted_no_interrupts`] reads), then takes one [`Look`] at
/// its own APIC and at the other vCPUs, a snapshot taken under the lock
/// that IPI delivery takes (so no NMI lands between its two halves).
/// Looking again at its own APIC closes a race: an NMI latched after the
/// first look came from a vCPU that may have stopped meanwhile, having
/// seen this one not yet stopped; without the second look this vCPU
/// would find every other one stopped and tell the VMM the guest can never
/// wake, with its own wake-up NMI waiting (memtest86+ ended "halted" under
/// load, one barrier's NMI left latched).
pub fn stop_with_interrupts_off(announce: impl FnOnce(), look: impl FnOnce() -> Look) -> HltDecision {
    announce();
    let l = look();
    if l.own.nmi {
        return HltDecision::Continue;
    }
    if l.own.init {
        // The next run takes the INIT; it is not the guest's last stop.
        return HltDecision::Stopped { all: false };
    }
    HltDecision::Stopped { all: l.others_stopped }
}

/// What a stopping vCPU sees in one snapshot (see
/// [`stop_with_interrupts_off`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Look {
    /// What its own APIC has latched.
    pub own: Latched,
    /// Whether every other vCPU is [`OtherVcpu::stopped`] (may be left
    /// false, unread, when `own` has something latched).
    pub others_stopped: bool,
}

/// What a vCPU's own APIC has latched that wakes it from a stop.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Latched {
    pub nmi: bool,
    pub init: bool,
}

/// Another vCPU of the same guest, as a halting vCPU sees it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OtherVcpu {
    /// Halted with interrupts off.
    pub halted_no_interrupts: bool,
    /// In wait-for-SIPI state (an AP not started, or after INIT).
    pub waiting_for_sipi: bool,
    /// A start-up IPI is latched for it.
    pub sipi_pending: bool,
    /// An NMI or INIT is latched for it (it will run again).
    pub nmi_or_init_pending: bool,
}

impl OtherVcpu {
    /// Whether it can neither run nor be woken by anything but another
    /// vCPU's NMI, INIT or SIPI.
    pub fn stopped(&self) -> bool {
        if self.nmi_or_init_pending || self.sipi_pending {
            return false;
        }
        self.halted_no_interrupts || self.waiting_for_sipi
    }
}

/// Whether a vCPU stopped with interrupts off may run again: an NMI or an
/// INIT is latched for it.
pub fn wakes_from_stop(nmi_pending: bool, init_pending: bool) -> bool {
    nmi_pending || init_pending
}

/// Software NMI blocking for SVM (see the module comment).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NmiGate {
    masked: bool,
    /// The RIP of the IRET the guest was about to run when intercepted.
    iret_at: Option<u64>,
}

impl NmiGate {
    /// Whether an NMI may be injected now, the guest being at `rip`. A
    /// masked gate opens once the guest has left the intercepted IRET.
    pub fn can_inject(&mut self, rip: u64) -> bool {
        if let Some(at) = self.iret_at
            && at != rip
        {
            self.masked = false;
            self.iret_at = None;
        }
        !self.masked
    }

    /// An NMI was injected: blocked until its handler's IRET has run.
    pub fn injected(&mut self) {
        self.masked = true;
        self.iret_at = None;
    }

    /// The guest is about to run an IRET at `rip` (the IRET intercept).
    pub fn iret_intercepted(&mut self, rip: u64) {
        if self.masked {
            self.iret_at = Some(rip);
        }
    }

    /// Whether the IRET intercept is needed: masked and no IRET seen yet.
    pub fn wants_iret_intercept(&self) -> bool {
        self.masked && self.iret_at.is_none()
    }

    /// INIT or reset: no NMI in progress.
    pub fn reset(&mut self) {
        *self = Self::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs() -> HltInputs {
        HltInputs { interrupts_on: true, ..HltInputs::default() }
    }

    #[test]
    fn hlt_with_interrupts_on_sleeps_until_the_timer_or_an_ipi() {
        assert_eq!(hlt_decision(&inputs()), HltDecision::SleepUntil(u64::MAX));
        let i = HltInputs { timer_deadline: Some(1234), ..inputs() };
        assert_eq!(hlt_decision(&i), HltDecision::SleepUntil(1234));
        let i = HltInputs { interrupt_ready: true, ..inputs() };
        assert_eq!(hlt_decision(&i), HltDecision::Continue);
        // Others being stopped does not matter: the timer still wakes it.
        let i = HltInputs { others_stopped: true, ..inputs() };
        assert_eq!(hlt_decision(&i), HltDecision::SleepUntil(u64::MAX));
    }

    #[test]
    fn a_stop_is_announced_before_the_vcpu_looks_again() {
        use core::cell::Cell;
        let announced = Cell::new(false);
        let d = stop_with_interrupts_off(
            || announced.set(true),
            || {
                assert!(announced.get(), "looked before announcing the stop");
                Look { own: Latched::default(), others_stopped: true }
            },
        );
        assert_eq!(d, HltDecision::Stopped { all: true });
    }

    #[test]
    fn an_nmi_latched_after_the_first_look_wakes_the_vcpu_whatever_the_others_are() {
        // The sender latched the NMI, went on and stopped itself: every
        // other vCPU is stopped now. This one must run its NMI handler, not
        // report the guest dead.
        let d = stop_with_interrupts_off(|| {}, || Look { own: Latched { nmi: true, init: false }, others_stopped: true });
        assert_eq!(d, HltDecision::Continue);
    }

    #[test]
    fn an_init_latched_after_the_first_look_is_never_the_last_stop() {
        let d = stop_with_interrupts_off(|| {}, || Look { own: Latched { nmi: false, init: true }, others_stopped: true });
        assert_eq!(d, HltDecision::Stopped { all: false });
        let d = stop_with_interrupts_off(|| {}, || Look { own: Latched::default(), others_stopped: false });
        assert_eq!(d, HltDecision::Stopped { all: false });
    }

    /// Two vCPUs: a receiver halting with interrupts off, and a sender
    /// that latches an NMI for it, runs on and stops itself (one step, as
    /// the kernel's IPI delivery and the sender's own stop are each under
    /// the lock the receiver's look takes), at every point of the
    /// receiver's sequence. In no interleaving does either report every
    /// vCPU stopped while the receiver's NMI is latched.
    #[test]
    fn no_interleaving_of_an_nmi_and_two_stops_ends_the_guest_with_the_nmi_latched() {
        use core::cell::Cell;
        for send_at in 0..4 {
            let receiver_stopped = Cell::new(false);
            let nmi = Cell::new(false);
            let sender_stopped = Cell::new(false);
            let sender_all = Cell::new(None);
            let send = || {
                nmi.set(true);
                sender_stopped.set(true);
                let other = OtherVcpu { halted_no_interrupts: receiver_stopped.get(), nmi_or_init_pending: nmi.get(), ..OtherVcpu::default() };
                sender_all.set(Some(other.stopped()));
            };
            let step = |i: u32| {
                if i == send_at {
                    send();
                }
            };
            step(0);
            let d = if nmi.get() {
                HltDecision::Continue
            } else {
                stop_with_interrupts_off(
                    || {
                        step(1);
                        receiver_stopped.set(true);
                    },
                    || {
                        step(2);
                        Look { own: Latched { nmi: nmi.get(), init: false }, others_stopped: sender_stopped.get() }
                    },
                )
            };
            step(3);
            assert_ne!(d, HltDecision::Stopped { all: true }, "sent at step {send_at}: the receiver reported every vCPU stopped");
            assert_ne!(sender_all.get(), Some(true), "sent at step {send_at}: the sender saw the receiver stopped with its NMI latched");
            if d != HltDecision::Continue {
                assert!(nmi.get(), "sent at step {send_at}");
            }
        }
    }

    #[test]
    fn hlt_with_interrupts_off_waits_for_an_nmi_while_another_vcpu_runs() {
        let off = HltInputs { interrupts_on: false, ..HltInputs::default() };
        assert_eq!(hlt_decision(&off), HltDecision::Stopped { all: false });
        // A ready fixed interrupt does not wake it with IF = 0.
        let i = HltInputs { interrupt_ready: true, timer_deadline: Some(5), ..off };
        assert_eq!(hlt_decision(&i), HltDecision::Stopped { all: false });
        // An NMI does, with IF = 0 or 1.
        let i = HltInputs { nmi_pending: true, others_stopped: true, ..off };
        assert_eq!(hlt_decision(&i), HltDecision::Continue);
        assert_eq!(hlt_decision(&HltInputs { nmi_pending: true, ..inputs() }), HltDecision::Continue);
    }

    #[test]
    fn hlt_with_interrupts_off_ends_the_guest_only_when_all_are_stopped() {
        let i = HltInputs { interrupts_on: false, others_stopped: true, ..HltInputs::default() };
        assert_eq!(hlt_decision(&i), HltDecision::Stopped { all: true });
    }

    #[test]
    fn which_other_vcpus_count_as_stopped() {
        let halted = OtherVcpu { halted_no_interrupts: true, ..OtherVcpu::default() };
        assert!(halted.stopped());
        assert!(OtherVcpu { waiting_for_sipi: true, ..OtherVcpu::default() }.stopped());
        // Running (or halted with IF = 1): not stopped.
        assert!(!OtherVcpu::default().stopped());
        // About to wake: an NMI or INIT latched, or a SIPI.
        assert!(!OtherVcpu { nmi_or_init_pending: true, ..halted }.stopped());
        assert!(!OtherVcpu { waiting_for_sipi: true, sipi_pending: true, ..OtherVcpu::default() }.stopped());
        assert!(wakes_from_stop(true, false) && wakes_from_stop(false, true) && !wakes_from_stop(false, false));
    }

    #[test]
    fn nmi_gate_blocks_from_injection_until_past_the_iret() {
        let mut g = NmiGate::default();
        assert!(g.can_inject(0x1000));
        assert!(!g.wants_iret_intercept());
        g.injected();
        assert!(g.wants_iret_intercept());
        // In the handler: blocked, at any RIP.
        assert!(!g.can_inject(0x2000));
        assert!(!g.can_inject(0x1000));
        // The handler's IRET at 0x2100 is intercepted; the exit comes
        // before it runs, so at that RIP the NMI is still blocked.
        g.iret_intercepted(0x2100);
        assert!(!g.wants_iret_intercept());
        assert!(!g.can_inject(0x2100));
        // Past it: open again.
        assert!(g.can_inject(0x1001));
        assert!(g.can_inject(0x2100));
    }

    #[test]
    fn nmi_gate_ignores_an_iret_outside_a_handler_and_resets() {
        let mut g = NmiGate::default();
        g.iret_intercepted(0x10);
        assert!(g.can_inject(0x10));
        g.injected();
        g.reset();
        assert!(g.can_inject(0x10));
        assert!(!g.wants_iret_intercept());
    }
}
