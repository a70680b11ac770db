//! Tests 4, 5 and 17: the local APIC timer waking a halted vCPU, and (17)
//! reaching one that spins. Test 4 uses the
//! xAPIC (one-shot, periodic, TSC-deadline); test 5 switches to x2APIC mode
//! and repeats the one-shot timer through MSRs. The `apic` module hides the
//! mode, so both run the same one-shot code. Timer modes: SDM Vol. 3A §11.5.4.
use core::arch::asm;
use core::sync::atomic::Ordering;

use testguest::protocol::apic::TIMER_VECTOR;

use super::{Outcome, Run};
use crate::apic::{self, DIVIDE_BY_1, LVT_MASKED, LVT_TIMER, SVR, TIMER_CURRENT, TIMER_DIVIDE, TIMER_INITIAL};
use crate::cpu;
use crate::trap::TIMER_TICKS;

/// Timer counts at divide-by-1: about 100 µs and 200 µs at a 1 GHz APIC bus.
const ONE_SHOT_COUNT: u32 = 100_000;
const PERIODIC_COUNT: u32 = 200_000;
const PERIODIC_INTERRUPTS: u32 = 3;
const TSC_DEADLINE_CYCLES: u64 = 1_000_000;
/// CPUID.1:ECX feature bits.
const CPUID_X2APIC: u32 = 21;
const CPUID_TSC_DEADLINE: u32 = 24;

/// Halts until TIMER_TICKS reaches `target`; returns the ticks taken since
/// `since`. If the timer never fires the vCPU stays halted (the host test's
/// timeout catches that).
fn halt_until_ticks(since: u32, target: u32) -> u32 {
    while TIMER_TICKS.load(Ordering::SeqCst) < target {
        cpu::wait_for_interrupt();
    }
    TIMER_TICKS.load(Ordering::SeqCst) - since
}

fn check_svr(r: &mut Run, what: &str) -> Outcome {
    apic::enable();
    r.expect_eq(what, (apic::read(SVR) & 0x1FF).into(), 0x1FF)
}

fn one_shot(r: &mut Run) -> Outcome {
    apic::write(TIMER_DIVIDE, DIVIDE_BY_1);
    apic::write(LVT_TIMER, apic::TIMER_ONE_SHOT | u32::from(TIMER_VECTOR));
    let before = TIMER_TICKS.load(Ordering::SeqCst);
    apic::write(TIMER_INITIAL, ONE_SHOT_COUNT);
    let taken = halt_until_ticks(before, before + 1);
    r.expect_eq("one-shot: one interrupt via sti; hlt", taken.into(), 1)?;
    r.expect_eq("one-shot: current count reached 0", apic::read(TIMER_CURRENT).into(), 0)
}

/// Test 4.
pub fn run_xapic(r: &mut Run) -> Outcome {
    check_svr(r, "SVR: enabled, spurious vector 0xFF")?;
    one_shot(r)?;

    apic::write(LVT_TIMER, apic::TIMER_PERIODIC | u32::from(TIMER_VECTOR));
    let before = TIMER_TICKS.load(Ordering::SeqCst);
    apic::write(TIMER_INITIAL, PERIODIC_COUNT);
    let taken = halt_until_ticks(before, before + PERIODIC_INTERRUPTS);
    apic::write(LVT_TIMER, LVT_MASKED | apic::TIMER_PERIODIC | u32::from(TIMER_VECTOR));
    // An initial count of 0 stops the timer (SDM Vol. 3A §11.5.4).
    apic::write(TIMER_INITIAL, 0);
    r.expect("periodic: 3 interrupts via hlt", taken >= PERIODIC_INTERRUPTS, format_args!("{taken} taken"))?;
    let (lvt, current) = (apic::read(LVT_TIMER), apic::read(TIMER_CURRENT));
    r.expect(
        "periodic: masked and stopped",
        lvt & LVT_MASKED != 0 && current == 0,
        format_args!("lvt {lvt:#x}, current count {current}"),
    )?;

    if !cpu::has_leaf1_ecx(CPUID_TSC_DEADLINE) {
        r.skip("tsc-deadline", "not offered");
        return Ok(());
    }
    apic::write(LVT_TIMER, apic::TIMER_TSC_DEADLINE | u32::from(TIMER_VECTOR));
    // SAFETY: mfence orders the LVT write before the MSR write, as SDM Vol.
    // 3A §11.5.4.1 asks; it touches no data.
    unsafe { asm!("mfence", options(nostack, preserves_flags)) }
    let before = TIMER_TICKS.load(Ordering::SeqCst);
    // SAFETY: arming the deadline timer does not affect guest memory.
    let armed = unsafe { cpu::wrmsr(apic::MSR_TSC_DEADLINE, cpu::rdtsc() + TSC_DEADLINE_CYCLES) };
    r.expect("tsc-deadline: wrmsr 0x6E0", armed.is_ok(), format_args!("{armed:?}"))?;
    let taken = halt_until_ticks(before, before + 1);
    r.expect_eq("tsc-deadline: one interrupt via hlt", taken.into(), 1)?;
    let deadline = cpu::rdmsr(apic::MSR_TSC_DEADLINE);
    r.expect("tsc-deadline: MSR 0x6E0 cleared on firing", deadline == Ok(0), format_args!("{deadline:x?}"))
}

/// Test 5.
pub fn run_x2apic(r: &mut Run) -> Outcome {
    if !cpu::has_leaf1_ecx(CPUID_X2APIC) {
        r.skip("x2apic", "not offered");
        return Ok(());
    }
    let base = apic::enter_x2apic();
    let want = apic::APIC_BASE_ENABLE | apic::APIC_BASE_EXTD;
    r.expect(
        "IA32_APIC_BASE: EN and EXTD set",
        base.is_ok_and(|b| b & want == want),
        format_args!("{base:x?}"),
    )?;
    let id = cpu::rdmsr(apic::x2apic_msr(apic::ID));
    r.expect("x2APIC ID (MSR 0x802) readable", id.is_ok(), format_args!("{id:x?}"))?;
    check_svr(r, "SVR (MSR 0x80F): enabled, spurious vector 0xFF")?;
    one_shot(r)
}

/// Waits with interrupts on, without halting, until TIMER_TICKS reaches
/// `target`; returns the ticks taken since `since`. The loop is plain loads
/// and a branch: nothing in it exits to the hypervisor, so the interrupt
/// must come from the hypervisor noticing the timer by itself. If it never
/// does, the vCPU spins on (the host test's timeout catches that).
// No PAUSE (`spin_loop`): a hypervisor may intercept it, and this loop
// must give the hypervisor no exit.
#[allow(clippy::missing_spin_loop)]
fn spin_until_ticks(since: u32, target: u32) -> u32 {
    // SAFETY: the IDT handles every vector; handlers preserve all registers.
    unsafe { asm!("sti", options(nomem, nostack)) }
    while TIMER_TICKS.load(Ordering::SeqCst) < target {}
    // SAFETY: as above; turns interrupts off again.
    unsafe { asm!("cli", options(nomem, nostack)) }
    TIMER_TICKS.load(Ordering::SeqCst) - since
}

/// Test 17.
pub fn run_spinning(r: &mut Run) -> Outcome {
    check_svr(r, "SVR: enabled, spurious vector 0xFF")?;
    apic::write(TIMER_DIVIDE, DIVIDE_BY_1);
    apic::write(LVT_TIMER, apic::TIMER_ONE_SHOT | u32::from(TIMER_VECTOR));
    let before = TIMER_TICKS.load(Ordering::SeqCst);
    apic::write(TIMER_INITIAL, ONE_SHOT_COUNT);
    let taken = spin_until_ticks(before, before + 1);
    r.expect_eq("one-shot: one interrupt while spinning", taken.into(), 1)?;
    r.expect_eq("one-shot: current count reached 0", apic::read(TIMER_CURRENT).into(), 0)?;

    if !cpu::has_leaf1_ecx(CPUID_TSC_DEADLINE) {
        r.skip("tsc-deadline", "not offered");
        return Ok(());
    }
    apic::write(LVT_TIMER, apic::TIMER_TSC_DEADLINE | u32::from(TIMER_VECTOR));
    // SAFETY: mfence orders the LVT write before the MSR write (SDM Vol.
    // 3A §11.5.4.1); it touches no data.
    unsafe { asm!("mfence", options(nostack, preserves_flags)) }
    let before = TIMER_TICKS.load(Ordering::SeqCst);
    let deadline = cpu::rdtsc() + TSC_DEADLINE_CYCLES;
    // SAFETY: arming the deadline timer does not affect guest memory.
    let armed = unsafe { cpu::wrmsr(apic::MSR_TSC_DEADLINE, deadline) };
    r.expect("tsc-deadline: wrmsr 0x6E0", armed.is_ok(), format_args!("{armed:?}"))?;
    let taken = spin_until_ticks(before, before + 1);
    let late = cpu::rdtsc().saturating_sub(deadline);
    r.expect_eq("tsc-deadline: one interrupt while spinning", taken.into(), 1)?;
    r.note(format_args!("tsc-deadline: the interrupt was handled {late} TSC cycles after the deadline"));
    let msr = cpu::rdmsr(apic::MSR_TSC_DEADLINE);
    r.expect("tsc-deadline: MSR 0x6E0 cleared on firing", msr == Ok(0), format_args!("{msr:x?}"))
}
