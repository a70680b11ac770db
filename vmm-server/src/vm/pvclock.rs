//! KVM's paravirtual clock (Linux's `kvmclock`), so that a Linux guest
//! learns the TSC frequency and trusts the TSC instead of calibrating it
//! against the PIT and the ACPI PM timer, whose ports trap to the VMM:
//! under nested virtualization that calibration fails (too few port reads
//! fit in its window), Linux then marks the TSC unstable and reads the PM
//! timer port for every clock read. The interface is KVM's
//! (Documentation/virt/kvm/x86/cpuid.rst and msr.rst): the hypervisor
//! signature "KVMKVMKVM" at CPUID 0x4000_0000, the features at 0x4000_0001
//! (here only CLOCKSOURCE2 and CLOCKSOURCE_STABLE_BIT, so no other KVM
//! paravirtual feature is used), and the two MSRs through which the guest
//! names where the VMM writes `pvclock_vcpu_time_info` and
//! `pvclock_wall_clock`. Guests see the host's TSC unchanged (no offset,
//! constant rate), so each structure is written once and stays valid.

/// `MSR_KVM_WALL_CLOCK_NEW`: guest-physical address of a
/// `pvclock_wall_clock`, written at once.
pub const MSR_KVM_WALL_CLOCK_NEW: u32 = 0x4b56_4d00;
/// `MSR_KVM_SYSTEM_TIME_NEW`: guest-physical address (4-byte aligned) of
/// this vCPU's `pvclock_vcpu_time_info`, bit 0 = enabled.
pub const MSR_KVM_SYSTEM_TIME_NEW: u32 = 0x4b56_4d01;
/// CPUID 0x4000_0001 EAX bits.
pub const KVM_FEATURE_CLOCKSOURCE2: u32 = 1 << 3;
pub const KVM_FEATURE_CLOCKSOURCE_STABLE_BIT: u32 = 1 << 24;
/// `pvclock_vcpu_time_info.flags`: the TSC is synchronized across vCPUs.
pub const PVCLOCK_TSC_STABLE_BIT: u8 = 1 << 0;
pub const TIME_INFO_LEN: usize = 32;
pub const WALL_CLOCK_LEN: usize = 12;

/// `(tsc_to_system_mul, tsc_shift)` with ns = ((tsc << shift, or >> -shift)
/// * mul) >> 32, for a TSC of `tsc_khz` (as KVM's `kvm_get_time_scale`).
pub fn time_scale(tsc_khz: u64) -> (u32, i8) {
    let khz = u128::from(tsc_khz.max(1));
    let target = 1_000_000u128 << 32; // ns per ms, as a 32.32 fraction
    let mut shift: i8 = 0;
    // Scale the TSC down (negative shift) while the multiplier would be
    // too small to be precise, up while it would not fit in 32 bits.
    loop {
        let scaled = if shift >= 0 { khz << shift } else { khz >> (-shift) };
        let mul = target / scaled.max(1);
        if mul >= 1 << 32 {
            shift += 1;
        } else if mul < 1 << 31 && shift > -31 && (khz >> (1 - shift)) > 0 {
            shift -= 1;
        } else {
            return (mul as u32, shift);
        }
    }
}

/// Nanoseconds for `delta` TSC ticks with `(mul, shift)`, as the guest
/// computes them.
pub fn scale_delta(delta: u64, mul: u32, shift: i8) -> u64 {
    let d = if shift >= 0 { delta << shift } else { delta >> (-shift) };
    ((u128::from(d) * u128::from(mul)) >> 32) as u64
}

/// The guest's clock: system time 0 at TSC `tsc_base`, which was wall-clock
/// time `unix_seconds`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvmClock {
    pub tsc_base: u64,
    pub tsc_khz: u64,
    pub unix_seconds: u64,
}

impl KvmClock {
    /// `pvclock_vcpu_time_info` (version 2: even, complete).
    pub fn time_info(&self) -> [u8; TIME_INFO_LEN] {
        let (mul, shift) = time_scale(self.tsc_khz);
        let mut b = [0u8; TIME_INFO_LEN];
        b[0..4].copy_from_slice(&2u32.to_le_bytes());
        b[8..16].copy_from_slice(&self.tsc_base.to_le_bytes());
        b[16..24].copy_from_slice(&0u64.to_le_bytes());
        b[24..28].copy_from_slice(&mul.to_le_bytes());
        b[28] = shift as u8;
        b[29] = PVCLOCK_TSC_STABLE_BIT;
        b
    }

    /// `pvclock_wall_clock`: the wall-clock time at system time 0 (a
    /// 32-bit seconds field, as the ABI has it).
    pub fn wall_clock(&self) -> [u8; WALL_CLOCK_LEN] {
        let mut b = [0u8; WALL_CLOCK_LEN];
        b[0..4].copy_from_slice(&2u32.to_le_bytes());
        b[4..8].copy_from_slice(&(self.unix_seconds.min(u64::from(u32::MAX)) as u32).to_le_bytes());
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Linux's `pvclock_tsc_khz`.
    fn guest_khz(mul: u32, shift: i8) -> u64 {
        let khz = (1_000_000u64 << 32) / u64::from(mul);
        if shift < 0 { khz << -shift } else { khz >> shift }
    }

    #[test]
    fn scale_converts_ticks_to_nanoseconds_for_any_frequency() {
        for khz in [1u64, 999, 32_768, 1_000_000, 2_600_000, 3_579_545, 5_000_000, 100_000_000] {
            let (mul, shift) = time_scale(khz);
            // One second of ticks is one second, to 1 ppm.
            let ns = scale_delta(khz * 1000, mul, shift);
            let err = (ns as i128 - 1_000_000_000).abs();
            assert!(err <= 1_000 + 1_000_000_000 / khz as i128, "{khz} kHz: {ns} ns (mul {mul:#x} shift {shift})");
            let back = guest_khz(mul, shift);
            assert!((back as i128 - khz as i128).abs() <= 1 + khz as i128 / 100_000, "{khz} kHz read back as {back}");
        }
    }

    #[test]
    fn structures_have_the_abi_layout() {
        let c = KvmClock { tsc_base: 0x1122_3344_5566_7788, tsc_khz: 2_000_000, unix_seconds: 1_700_000_000 };
        let t = c.time_info();
        assert_eq!(u32::from_le_bytes(t[0..4].try_into().unwrap()) % 2, 0, "version even: complete");
        assert_eq!(u64::from_le_bytes(t[8..16].try_into().unwrap()), 0x1122_3344_5566_7788);
        let (mul, shift) = (u32::from_le_bytes(t[24..28].try_into().unwrap()), t[28] as i8);
        assert_eq!(scale_delta(2_000_000, mul, shift), 1_000_000);
        assert_eq!(t[29], PVCLOCK_TSC_STABLE_BIT);
        let w = c.wall_clock();
        assert_eq!(u32::from_le_bytes(w[4..8].try_into().unwrap()), 1_700_000_000);
    }
}
