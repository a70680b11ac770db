//! The kernel's state on the serial port when the machine gets an NMI it
//! did not send itself (an operator's NMI button, QEMU's `nmi` monitor
//! command): each CPU's current thread and queue, the timeouts, every
//! thread that is not running, and every vCPU with its local APIC. It is
//! how a machine that stopped making progress says why (the test harness
//! sends the NMI when a case times out).
//!
//! Runs in the NMI handler, so it takes nothing it could wait for: the
//! kernel lock and each APIC's only if free (a CPU that holds one says so
//! instead), the serial port only if free. One CPU prints, the others
//! return at once.

use core::fmt::Write;
use core::sync::atomic::{AtomicBool, Ordering};

use super::{Kernel, ThreadState};
use crate::arch::{percpu, serial};

static DUMPING: AtomicBool = AtomicBool::new(false);

/// Called by the NMI handler for an NMI the kernel did not send itself.
pub fn on_nmi() {
    if DUMPING.swap(true, Ordering::AcqRel) {
        return;
    }
    // A CPU that holds the lock is elsewhere in the kernel and lets go soon,
    // unless it is this one (then the NMI came in under it): a bounded wait.
    let mut k = None;
    for _ in 0..1_000_000 {
        k = super::KERNEL.try_lock();
        if k.is_some() {
            break;
        }
        core::hint::spin_loop();
    }
    serial::try_with_locked(|w| match k.as_deref() {
        Some(k) => {
            let _ = write_state(w, k);
        }
        None => {
            let _ = writeln!(w, "[dump ] the kernel lock stayed held: no state");
        }
    });
    drop(k);
    DUMPING.store(false, Ordering::Release);
}

fn write_state(w: &mut impl Write, k: &Kernel) -> core::fmt::Result {
    let now = crate::arch::time::nanos_since_boot();
    writeln!(w, "[dump ] kernel state at {now} ns since boot (NMI)")?;
    for cpu in 0..k.cpus_online {
        let p = percpu::of(cpu);
        writeln!(
            w,
            "[dump ] cpu {cpu}: current {:?}, {} queued, timer armed for {:?}, need_resched {}",
            k.current[cpu].map(|t| t.index),
            k.run_queues.get(cpu).map_or(0, |q| q.len()),
            k.last_run[cpu].map(|(t, at)| (t.index, at)),
            p.need_resched.load(Ordering::Relaxed),
        )?;
    }
    let first = k.first_deadline();
    writeln!(
        w,
        "[dump ] timeouts {} (first due in {:?} ns), throttled {}",
        k.timeouts.len(),
        (first != u64::MAX).then(|| first as i128 - now as i128),
        k.throttled.len()
    )?;
    for (id, th) in k.threads.iter() {
        if th.state == ThreadState::Inactive {
            continue;
        }
        let name = k.processes.get(th.process).map_or("?", |p| p.name.as_str());
        writeln!(
            w,
            "[dump ] thread {} ({name}) {:?} cpu {} prio {} deadline {:?} rip {:#x}",
            id.index,
            th.state,
            th.cpu,
            th.priority,
            th.deadline.map(|d| d as i128 - now as i128),
            th.ctx.rip
        )?;
    }
    let lapic_now = super::vm::lapic_now();
    for (id, v) in k.vcpus.iter() {
        write!(
            w,
            "[dump ] vcpu {} thread {:?} running {} in_guest {} kicked {} attention {} stopped {} halt_until {:?} virq {:?}",
            id.index,
            v.thread.map(|t| t.index),
            v.running,
            v.in_guest.load(Ordering::Relaxed),
            v.kicked.load(Ordering::Relaxed),
            v.attention.load(Ordering::Relaxed),
            v.stopped.load(Ordering::Relaxed),
            v.halt_until,
            v.virq,
        )?;
        match v.lapic.try_lock() {
            Some(l) => writeln!(
                w,
                " apic: pending {:?} ppr {:#x} nmi {} init {} sipi {} waiting_for_sipi {} timer armed {} lvt {:#x} due in {:?} ns",
                l.pending_interrupt(),
                l.ppr(),
                l.nmi_pending(),
                l.init_pending(),
                l.sipi_pending(),
                l.waiting_for_sipi(),
                l.timer_armed(),
                l.lvt(kcore::vlapic::Lvt::Timer),
                l.next_timer_deadline().map(|d| d as i128 - lapic_now as i128),
            )?,
            None => writeln!(w, " apic: locked")?,
        }
    }
    writeln!(w, "[dump ] end")
}
