//! Time: the TSC, calibrated once at boot against the PIT (channel 2, whose
//! gate and output are readable through port 0x61 without interrupts).

use super::cpu::{inb, outb, rdtsc};
use core::sync::atomic::{AtomicU64, Ordering};

static TSC_KHZ: AtomicU64 = AtomicU64::new(0);
static BOOT_TSC: AtomicU64 = AtomicU64::new(0);
static CALIBRATION_TICKS: AtomicU64 = AtomicU64::new(0);

/// Records the TSC at kernel entry (the first thing `kmain` does).
pub fn mark_entry() {
    BOOT_TSC.store(rdtsc(), Ordering::Relaxed);
}

/// TSC ticks since kernel entry.
pub fn ticks_since_entry() -> u64 {
    rdtsc().wrapping_sub(BOOT_TSC.load(Ordering::Relaxed))
}

/// TSC ticks the calibration spent waiting on the PIT.
pub fn calibration_ticks() -> u64 {
    CALIBRATION_TICKS.load(Ordering::Relaxed)
}

const PIT_HZ: u64 = 1_193_182;

/// Measures the TSC frequency over 10 ms of PIT channel 2.
pub fn calibrate() -> u64 {
    let ticks = (PIT_HZ / 100) as u16; // 10 ms
    let gate = inb(0x61);
    outb(0x61, (gate & !0x02) | 0x01); // speaker off, gate on
    outb(0x43, 0b1011_0000); // channel 2, lobyte/hibyte, mode 0
    outb(0x42, ticks as u8);
    outb(0x42, (ticks >> 8) as u8);
    // Restart the count: gate low then high.
    let g = inb(0x61);
    outb(0x61, g & !0x01);
    outb(0x61, g | 0x01);
    let start = rdtsc();
    let mut spins = 0u64;
    while inb(0x61) & 0x20 == 0 {
        spins += 1;
        if spins > 100_000_000 {
            break; // no PIT: fall through to a guess below
        }
    }
    let end = rdtsc();
    CALIBRATION_TICKS.store(end - start, Ordering::Relaxed);
    outb(0x61, gate);
    let khz = ((end - start) / 10).max(1_000); // at least 1 MHz
    TSC_KHZ.store(khz, Ordering::Relaxed);
    khz
}

pub fn tsc_khz() -> u64 {
    TSC_KHZ.load(Ordering::Relaxed).max(1)
}

/// Unix time (seconds) when `nanos_since_boot` was 0; 0 if unknown.
static BOOT_UNIX: AtomicU64 = AtomicU64::new(0);

/// Reads the CMOS clock once (after the TSC is calibrated): the wall-clock
/// time the machine booted at. Returns it, or `None` without a clock.
pub fn read_wall_clock() -> Option<u64> {
    let cmos = |reg: u8| {
        outb(0x70, 0x80 | reg); // bit 7 keeps NMIs masked while we read
        inb(0x71)
    };
    let read = || {
        // Wait out an update in progress (register A bit 7), a few ms at most.
        let mut spins = 0;
        while cmos(0x0A) & 0x80 != 0 && spins < 1_000_000 {
            spins += 1;
        }
        kcore::wallclock::CmosDate {
            second: cmos(0x00),
            minute: cmos(0x02),
            hour: cmos(0x04),
            day: cmos(0x07),
            month: cmos(0x08),
            year: cmos(0x09),
            status_b: cmos(0x0B),
        }
    };
    // Two equal reads in a row: no update fell between the registers.
    let mut date = read();
    for _ in 0..4 {
        let again = read();
        if again == date {
            break;
        }
        date = again;
    }
    outb(0x70, 0x00); // NMIs back on
    let unix = u64::try_from(date.unix_seconds()?).ok()?;
    let boot = unix.saturating_sub(nanos_since_boot() / 1_000_000_000);
    BOOT_UNIX.store(boot, Ordering::Relaxed);
    Some(boot)
}

/// Seconds since the Unix epoch now, from the boot-time CMOS reading; 0 if
/// the machine had no clock.
pub fn unix_seconds() -> u64 {
    match BOOT_UNIX.load(Ordering::Relaxed) {
        0 => 0,
        boot => boot + nanos_since_boot() / 1_000_000_000,
    }
}

pub fn nanos_since_boot() -> u64 {
    let d = rdtsc().wrapping_sub(BOOT_TSC.load(Ordering::Relaxed));
    kcore::tsc::ticks_to_ns(d, tsc_khz())
}

/// Whether `nanos_since_boot() >= deadline` now, exactly, without its
/// 128-bit division (`kcore::tsc::ns_reached`).
#[inline(always)]
pub fn reached(deadline: u64) -> bool {
    let d = rdtsc().wrapping_sub(BOOT_TSC.load(Ordering::Relaxed));
    kcore::tsc::ns_reached(deadline, d, tsc_khz())
}

/// Busy-waits at least `us` microseconds.
pub fn spin_us(us: u64) {
    let end = rdtsc().saturating_add(us.saturating_mul(tsc_khz()) / 1000);
    while rdtsc() < end {
        core::hint::spin_loop();
    }
}
