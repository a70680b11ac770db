//! Test 6: starting an AP and sending it an IPI through the xAPIC ICR. The
//! BSP sends INIT-SIPI-SIPI to all but itself (SDM Vol. 3A §9.4.4.1); the AP
//! runs boot.s into long mode and [`ap_main`], publishes its APIC id and
//! halts with interrupts on; the BSP then sends it a fixed IPI, vector
//! 0x41, and waits for the AP's handler to count it. The AP never writes
//! the result port. Test 18 starts the AP the same way and waits for its
//! work with CPUID exits ([`run_while_exiting`]).
use core::sync::atomic::{AtomicU32, Ordering};

use testguest::protocol::SIPI_VECTOR;
use testguest::protocol::apic::IPI_VECTOR;

use super::{Outcome, Run};
use crate::apic::{self, ICR_DELIVERY_PENDING, ICR_HIGH, ICR_LOW};
use crate::trap::IPIS;
use crate::{AP_BOOT, cpu};

/// ICR fields (SDM Vol. 3A §11.6.1).
const ICR_ALL_BUT_SELF: u32 = 3 << 18;
const ICR_LEVEL_ASSERT: u32 = 1 << 14;
const ICR_INIT: u32 = 5 << 8;
const ICR_STARTUP: u32 = 6 << 8;
const ICR_FIXED: u32 = 0;

/// `pause` iterations: the "10 ms" after INIT and "200 µs" after SIPI (a
/// VMM needs neither, hardware would), and the bounds of the waits.
const INIT_DELAY: u32 = 100_000;
const SIPI_DELAY: u32 = 10_000;
const ICR_WAIT: u32 = 1_000_000;
const AP_WAIT: u32 = 200_000_000;

/// Set by the AP once it is in long mode with its APIC enabled.
static AP_READY: AtomicU32 = AtomicU32::new(0);
static AP_APIC_ID: AtomicU32 = AtomicU32::new(0);

fn spin(iterations: u32) {
    for _ in 0..iterations {
        core::hint::spin_loop();
    }
}

/// Spins (bounded) until `done`; whether it happened.
fn spin_until(bound: u32, done: impl Fn() -> bool) -> bool {
    for _ in 0..bound {
        if done() {
            return true;
        }
        core::hint::spin_loop();
    }
    done()
}

/// Sends an IPI; whether the xAPIC reported it delivered.
fn send(destination: u32, command: u32) -> bool {
    apic::write(ICR_HIGH, destination << 24);
    apic::write(ICR_LOW, command);
    spin_until(ICR_WAIT, || apic::read(ICR_LOW) & ICR_DELIVERY_PENDING == 0)
}

/// Set by the BSP before it starts the AP: the `pause` iterations the AP
/// counts (test 18) before it sets [`AP_DONE`]; 0 for test 6.
static AP_WORK: AtomicU32 = AtomicU32::new(0);
/// Set by the AP when its work is done (test 18).
static AP_DONE: AtomicU32 = AtomicU32::new(0);

/// INIT-SIPI-SIPI to all but self (checks 1 and 2).
fn start_aps(r: &mut Run) -> Outcome {
    apic::enable();
    AP_BOOT.store(1, Ordering::SeqCst);

    let init = send(0, ICR_ALL_BUT_SELF | ICR_LEVEL_ASSERT | ICR_INIT);
    r.expect("INIT to all but self sent", init, format_args!("icr {:#x}", apic::read(ICR_LOW)))?;
    spin(INIT_DELAY);
    let sipi = ICR_ALL_BUT_SELF | ICR_LEVEL_ASSERT | ICR_STARTUP | u32::from(SIPI_VECTOR);
    let first = send(0, sipi);
    spin(SIPI_DELAY);
    // The second SIPI is ignored by an AP that already left wait-for-SIPI.
    let second = send(0, sipi);
    r.expect("two SIPIs (vector 0x08) sent", first && second, format_args!("icr {:#x}", apic::read(ICR_LOW)))
}

pub fn run(r: &mut Run) -> Outcome {
    start_aps(r)?;
    let ready = spin_until(AP_WAIT, || AP_READY.load(Ordering::Acquire) != 0);
    let ap_id = AP_APIC_ID.load(Ordering::Relaxed);
    r.expect("AP reached long mode", ready, format_args!("AP APIC id {ap_id}"))?;

    let before = IPIS.load(Ordering::SeqCst);
    let sent = send(ap_id, ICR_FIXED | u32::from(IPI_VECTOR));
    r.expect("fixed IPI vector 0x41 to the AP sent", sent, format_args!("destination {ap_id}"))?;
    let taken = spin_until(AP_WAIT, || IPIS.load(Ordering::SeqCst) != before);
    r.expect(
        "the AP's handler took the IPI",
        taken,
        format_args!("{} IPIs counted", IPIS.load(Ordering::SeqCst) - before),
    )
}

/// Test 18: the BSP starts the AP, then waits for the AP's work to be done
/// making only CPUID exits, which the kernel finishes itself: its vCPU
/// thread goes back to the VMM only when the kernel ends its run, so the
/// AP's thread, on the same host CPU, runs only if the kernel's scheduler
/// gives it turns.
pub fn run_while_exiting(r: &mut Run) -> Outcome {
    AP_DONE.store(0, Ordering::SeqCst);
    AP_WORK.store(testguest::protocol::AP_WORK, Ordering::SeqCst);
    start_aps(r)?;
    let mut exits = 0u64;
    while AP_DONE.load(Ordering::Acquire) == 0 && exits < testguest::protocol::BSP_CPUID_BOUND {
        core::hint::black_box(cpu::cpuid(0));
        exits += 1;
    }
    let done = AP_DONE.load(Ordering::Acquire) != 0;
    r.expect(
        "the AP finished its work while the BSP waited with CPUID exits",
        done,
        format_args!("{exits} CPUID exits, bound {}", testguest::protocol::BSP_CPUID_BOUND),
    )
}

/// The AP's life: publish, do test 18's work if asked, then halt with
/// interrupts on, forever.
pub fn ap_main() -> ! {
    apic::enable();
    let id = apic::read(apic::ID) >> 24;
    AP_APIC_ID.store(id, Ordering::Relaxed);
    println!("ipi: AP with APIC id {id} is in long mode");
    AP_READY.store(1, Ordering::Release);
    let work = AP_WORK.load(Ordering::Acquire);
    if work != 0 {
        // Plain work, no PAUSE: QEMU's TCG leaves its execution loop on
        // every PAUSE, which under one emulator thread for all CPUs hands
        // the host CPU to the next vCPU each iteration.
        for i in 0..work {
            core::hint::black_box(i);
        }
        AP_DONE.store(1, Ordering::Release);
    }
    loop {
        cpu::wait_for_interrupt();
    }
}
