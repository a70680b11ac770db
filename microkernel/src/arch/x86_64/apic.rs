//! The local APIC (x2APIC through MSRs when the CPU has it, xAPIC through MMIO
//! otherwise) and the IOAPICs: per-CPU timer, inter-processor interrupts,
//! end-of-interrupt, and routing of device lines to vectors.
//!
//! Vectors: 0x30 + line for IOAPIC lines 0..=23, [`TIMER_VECTOR`] for the
//! local timer, [`RESCHED_VECTOR`] and [`TLB_VECTOR`] for IPIs.

use super::{cpu, paging, time};
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

pub const IRQ_BASE_VECTOR: u8 = 0x30;
pub const IRQ_LINES: u32 = 24;
/// Vectors handed out for message-signalled interrupts.
pub const MSI_BASE_VECTOR: u8 = 0x50;
pub const MSI_VECTORS: usize = 0xf0 - 0x50;
pub const TIMER_VECTOR: u8 = 0xf0;
pub const RESCHED_VECTOR: u8 = 0xf1;
pub const TLB_VECTOR: u8 = 0xf2;
pub const SPURIOUS_VECTOR: u8 = 0xff;

static X2APIC: AtomicBool = AtomicBool::new(false);
/// Use the TSC-deadline timer mode (SDM Vol. 3A §12.5.4.1) when the CPU has it.
static TSC_DEADLINE: AtomicBool = AtomicBool::new(false);
const IA32_TSC_DEADLINE: u32 = 0x6e0;
static XAPIC_BASE: AtomicU64 = AtomicU64::new(0);
/// LAPIC timer ticks (after the divider) per millisecond.
static TIMER_TICKS_PER_MS: AtomicU64 = AtomicU64::new(0);

const IA32_APIC_BASE: u32 = 0x1b;
const REG_ID: u32 = 0x20;
const REG_EOI: u32 = 0xb0;
const REG_SVR: u32 = 0xf0;
const REG_ICR_LOW: u32 = 0x300;
const REG_ICR_HIGH: u32 = 0x310;
const REG_LVT_TIMER: u32 = 0x320;
const REG_TIMER_INIT: u32 = 0x380;
const REG_TIMER_CURRENT: u32 = 0x390;
const REG_TIMER_DIV: u32 = 0x3e0;

fn read(reg: u32) -> u32 {
    if X2APIC.load(Ordering::Relaxed) {
        // SAFETY: x2APIC mode is enabled; MSR 0x800 + reg/16 is the register
        // (SDM Vol. 3A §12.12.1).
        unsafe { x86::msr::rdmsr(0x800 + (reg >> 4)) as u32 }
    } else {
        let base = XAPIC_BASE.load(Ordering::Relaxed);
        // SAFETY: `base` is the direct-map address of the xAPIC page, mapped
        // at init; registers are 32-bit aligned.
        unsafe { core::ptr::read_volatile((base + u64::from(reg)) as *const u32) }
    }
}

fn write(reg: u32, value: u32) {
    if X2APIC.load(Ordering::Relaxed) {
        // SAFETY: as in `read`.
        unsafe { x86::msr::wrmsr(0x800 + (reg >> 4), u64::from(value)) }
    } else {
        let base = XAPIC_BASE.load(Ordering::Relaxed);
        // SAFETY: as in `read`.
        unsafe { core::ptr::write_volatile((base + u64::from(reg)) as *mut u32, value) }
    }
}

/// Enables this CPU's local APIC (x2APIC if available) with the spurious
/// vector set; returns its APIC id.
pub fn init_local(lapic_phys: u64) -> u32 {
    let x2 = cpu::features().x2apic;
    X2APIC.store(x2, Ordering::Relaxed);
    // SAFETY: IA32_APIC_BASE exists on every x86-64 CPU; setting EN (bit 11)
    // and, with x2APIC support, EXTD (bit 10) is the architected enable
    // sequence (SDM Vol. 3A §12.12.5).
    unsafe {
        let base = x86::msr::rdmsr(IA32_APIC_BASE);
        let mut v = base | (1 << 11);
        if x2 {
            v |= 1 << 10;
        }
        x86::msr::wrmsr(IA32_APIC_BASE, v);
    }
    if !x2 {
        let va = paging::direct_map(lapic_phys, 4096).expect("the local APIC is below 4 GiB");
        XAPIC_BASE.store(va, Ordering::Relaxed);
    }
    write(REG_SVR, 0x100 | u32::from(SPURIOUS_VECTOR));
    if cpu::features().tsc_deadline {
        TSC_DEADLINE.store(true, Ordering::Relaxed);
        write(REG_LVT_TIMER, (0b10 << 17) | u32::from(TIMER_VECTOR));
    } else {
        write(REG_LVT_TIMER, 1 << 16); // masked until armed
    }
    id()
}

pub fn id() -> u32 {
    let raw = read(REG_ID);
    if X2APIC.load(Ordering::Relaxed) { raw } else { raw >> 24 }
}

pub fn x2apic() -> bool {
    X2APIC.load(Ordering::Relaxed)
}

pub fn eoi() {
    write(REG_EOI, 0);
}

/// Sends an IPI. `mode`: 0 fixed, 4 NMI, 5 INIT, 6 STARTUP (SDM Vol. 3A
/// §12.6.1). Uses no per-CPU data (no GS), so it works in the window where
/// the user's GS base is loaded (the NMI test uses it there).
fn send_ipi(dest_apic_id: u32, vector: u8, mode: u32) {
    let low = u32::from(vector) | (mode << 8) | (1 << 14); // assert
    if X2APIC.load(Ordering::Relaxed) {
        // SAFETY: the x2APIC ICR is one 64-bit MSR (0x830) with the
        // destination in the high half.
        unsafe { x86::msr::wrmsr(0x830, (u64::from(dest_apic_id) << 32) | u64::from(low)) }
    } else {
        write(REG_ICR_HIGH, dest_apic_id << 24);
        write(REG_ICR_LOW, low);
        for _ in 0..1_000_000 {
            if read(REG_ICR_LOW) & (1 << 12) == 0 {
                break; // delivered
            }
            core::hint::spin_loop();
        }
    }
}

pub fn send_fixed(dest_apic_id: u32, vector: u8) {
    send_ipi(dest_apic_id, vector, 0);
}

pub fn send_nmi(dest_apic_id: u32) {
    send_ipi(dest_apic_id, 0, 4);
}

pub fn send_init(dest_apic_id: u32) {
    send_ipi(dest_apic_id, 0, 5);
}

pub fn send_startup(dest_apic_id: u32, page: u8) {
    send_ipi(dest_apic_id, page, 6);
}

/// Whether the timer runs in TSC-deadline mode.
pub fn tsc_deadline() -> bool {
    TSC_DEADLINE.load(Ordering::Relaxed)
}

/// Measures the LAPIC timer against the TSC (divider 16); not needed in
/// TSC-deadline mode.
pub fn calibrate_timer() {
    if TSC_DEADLINE.load(Ordering::Relaxed) {
        return;
    }
    write(REG_TIMER_DIV, 0b0011); // divide by 16
    write(REG_LVT_TIMER, (1 << 16) | u32::from(TIMER_VECTOR));
    write(REG_TIMER_INIT, u32::MAX);
    time::spin_us(10_000);
    let elapsed = u32::MAX - read(REG_TIMER_CURRENT);
    write(REG_TIMER_INIT, 0);
    TIMER_TICKS_PER_MS.store(u64::from(elapsed / 10).max(1), Ordering::Relaxed);
}

/// Arms this CPU's timer to fire once after `us` microseconds.
pub fn arm_oneshot_us(us: u64) {
    if TSC_DEADLINE.load(Ordering::Relaxed) {
        let deadline = cpu::rdtsc().saturating_add(us.saturating_mul(time::tsc_khz()) / 1000);
        // SAFETY: the CPU has TSC-deadline mode (checked in init_local) and
        // the LVT timer is in that mode; the MSR only arms the timer.
        unsafe { x86::msr::wrmsr(IA32_TSC_DEADLINE, deadline.max(1)) };
        return;
    }
    let ticks = (TIMER_TICKS_PER_MS.load(Ordering::Relaxed).max(1) * us / 1000).clamp(1, u64::from(u32::MAX));
    write(REG_TIMER_DIV, 0b0011);
    write(REG_LVT_TIMER, u32::from(TIMER_VECTOR)); // one-shot, unmasked
    write(REG_TIMER_INIT, ticks as u32);
}

// ---- IOAPIC ---------------------------------------------------------------

static IOAPIC_BASE: AtomicU64 = AtomicU64::new(0);
static IOAPIC_GSI_BASE: AtomicU64 = AtomicU64::new(0);

fn ioapic_write(reg: u32, value: u32) {
    let base = IOAPIC_BASE.load(Ordering::Relaxed);
    if base == 0 {
        return;
    }
    // SAFETY: `base` maps the IOAPIC's register window (IOREGSEL at 0,
    // IOWIN at 0x10), set up by `init_ioapic`; accesses are serialised by
    // the big kernel lock.
    unsafe {
        core::ptr::write_volatile(base as *mut u32, reg);
        core::ptr::write_volatile((base + 0x10) as *mut u32, value);
    }
}

/// Maps the first IOAPIC and masks every line.
pub fn init_ioapic(phys: u64, gsi_base: u32) {
    if let Ok(va) = paging::direct_map(phys, 4096) {
        IOAPIC_BASE.store(va, Ordering::Relaxed);
        IOAPIC_GSI_BASE.store(u64::from(gsi_base), Ordering::Relaxed);
        for line in 0..IRQ_LINES {
            set_line_masked(line, true);
        }
    }
}

/// Routes IOAPIC line `line` to vector 0x30 + line on the CPU with
/// `dest_apic_id`; `level`/`active_low` from the MADT overrides (ISA lines
/// are edge/high by default).
pub fn route_line(line: u32, dest_apic_id: u32, level: bool, active_low: bool) {
    if line >= IRQ_LINES {
        return;
    }
    let low = (u32::from(IRQ_BASE_VECTOR) + line) | (u32::from(active_low) << 13) | (u32::from(level) << 15) | (1 << 16);
    ioapic_write(0x10 + 2 * line + 1, dest_apic_id << 24);
    ioapic_write(0x10 + 2 * line, low);
}

pub fn set_line_masked(line: u32, masked: bool) {
    if line >= IRQ_LINES {
        return;
    }
    let base = IOAPIC_BASE.load(Ordering::Relaxed);
    if base == 0 {
        return;
    }
    // SAFETY: as `ioapic_write`; read-modify-write of the redirection entry.
    let low = unsafe {
        core::ptr::write_volatile(base as *mut u32, 0x10 + 2 * line);
        core::ptr::read_volatile((base + 0x10) as *const u32)
    };
    let low = if masked { low | (1 << 16) } else { low & !(1 << 16) };
    ioapic_write(0x10 + 2 * line, low);
}
