//! The local APIC, in xAPIC mode (MMIO at 0xFEE0_0000, mapped uncached by
//! boot.s) or x2APIC mode (MSR 0x800 + offset / 16, SDM Vol. 3A §11.12.1.2).
//! Registers are named by their xAPIC offset in both modes, so the timer
//! code runs unchanged in either.
use core::sync::atomic::{AtomicBool, Ordering};

use testguest::protocol::apic::{SPURIOUS_VECTOR, XAPIC_BASE};

use crate::cpu;

pub const ID: u32 = 0x20;
pub const EOI: u32 = 0xB0;
pub const SVR: u32 = 0xF0;
pub const ICR_LOW: u32 = 0x300;
pub const ICR_HIGH: u32 = 0x310;
pub const LVT_TIMER: u32 = 0x320;
pub const TIMER_INITIAL: u32 = 0x380;
pub const TIMER_CURRENT: u32 = 0x390;
pub const TIMER_DIVIDE: u32 = 0x3E0;

/// SVR bit 8: APIC software enable.
pub const SVR_ENABLE: u32 = 1 << 8;
/// LVT bit 16: masked.
pub const LVT_MASKED: u32 = 1 << 16;
/// LVT timer mode, bits 17-18 (SDM Vol. 3A §11.5.1).
pub const TIMER_ONE_SHOT: u32 = 0 << 17;
pub const TIMER_PERIODIC: u32 = 1 << 17;
pub const TIMER_TSC_DEADLINE: u32 = 2 << 17;
/// Divide configuration 0b1011: divide by 1.
pub const DIVIDE_BY_1: u32 = 0b1011;
/// ICR bit 12 (xAPIC only): send pending.
pub const ICR_DELIVERY_PENDING: u32 = 1 << 12;

pub const MSR_APIC_BASE: u32 = 0x1B;
pub const APIC_BASE_EXTD: u64 = 1 << 10;
pub const APIC_BASE_ENABLE: u64 = 1 << 11;
pub const MSR_TSC_DEADLINE: u32 = 0x6E0;

/// Whether this guest switched its (BSP's) APIC to x2APIC mode.
static X2APIC: AtomicBool = AtomicBool::new(false);

pub fn x2apic_msr(reg: u32) -> u32 {
    0x800 + (reg >> 4)
}

pub fn read(reg: u32) -> u32 {
    if X2APIC.load(Ordering::Relaxed) {
        return cpu::rdmsr(x2apic_msr(reg)).unwrap_or(u32::MAX.into()) as u32;
    }
    // SAFETY: the xAPIC page is identity-mapped uncached and `reg` is one of
    // the register offsets above, 16-byte aligned inside it.
    unsafe { core::ptr::read_volatile((XAPIC_BASE + u64::from(reg)) as *const u32) }
}

pub fn write(reg: u32, value: u32) {
    if X2APIC.load(Ordering::Relaxed) {
        // SAFETY: x2APIC registers do not affect this guest's memory.
        let _ = unsafe { cpu::wrmsr(x2apic_msr(reg), value.into()) };
        return;
    }
    // SAFETY: as in read.
    unsafe { core::ptr::write_volatile((XAPIC_BASE + u64::from(reg)) as *mut u32, value) }
}

/// Software-enables this CPU's APIC with the spurious vector 0xFF.
pub fn enable() {
    write(SVR, SVR_ENABLE | u32::from(SPURIOUS_VECTOR));
}

pub fn eoi() {
    write(EOI, 0);
}

/// Moves the APIC to x2APIC mode (xAPIC → x2APIC is the one legal direct
/// transition, SDM Vol. 3A §11.12.5). Returns the new IA32_APIC_BASE.
pub fn enter_x2apic() -> Result<u64, cpu::GpFault> {
    let base = cpu::rdmsr(MSR_APIC_BASE)?;
    let new = base | APIC_BASE_ENABLE | APIC_BASE_EXTD;
    // SAFETY: the xAPIC page is not used once X2APIC is set (read/write go
    // through MSRs), and the base address is unchanged.
    unsafe { cpu::wrmsr(MSR_APIC_BASE, new)? };
    X2APIC.store(true, Ordering::Relaxed);
    cpu::rdmsr(MSR_APIC_BASE)
}
