//! Test 7: MSRs. Plain guest state must read back what was written (the
//! VMM switches or passes these through); the VMM's own MSR must answer as
//! agreed; an MSR nobody implements must raise #GP in the guest, caught by
//! the guest's handler.
use testguest::protocol::msr::{UNIMPLEMENTED_MSR, VMM_MSR, VMM_MSR_READ_VALUE, VMM_MSR_WRITE_VALUE};

use super::{Outcome, Run};
use crate::cpu;

/// (name, MSR, value written). Addresses are canonical and SYSENTER_ESP/EIP
/// fit 32 bits (AMD keeps only the low half); SFMASK and TSC_AUX have
/// reserved upper halves; the PAT value makes entry 2 write-combining and
/// leaves entry 3 (UC, used by the APIC mapping) alone.
const PLAIN: [(&str, u32, u64); 9] = [
    ("IA32_STAR", 0xC000_0081, 0x0023_0010_0000_0000),
    ("IA32_LSTAR", 0xC000_0082, 0xFFFF_8000_1234_5000),
    ("IA32_CSTAR", 0xC000_0083, 0xFFFF_8000_1234_6000),
    ("IA32_FMASK", 0xC000_0084, 0x0004_7700),
    ("IA32_KERNEL_GS_BASE", 0xC000_0102, 0xFFFF_8000_DEAD_B000),
    ("IA32_SYSENTER_CS", 0x174, 0x10),
    ("IA32_SYSENTER_ESP", 0x175, 0x7000_1000),
    ("IA32_SYSENTER_EIP", 0x176, 0x0040_1000),
    ("IA32_PAT", 0x277, 0x0007_0406_0007_0106),
];
const TSC_AUX: u32 = 0xC000_0103;
const TSC_AUX_VALUE: u64 = 0xAB;
/// CPUID.8000_0001:EDX bit 27: RDTSCP and IA32_TSC_AUX.
const CPUID_RDTSCP: u32 = 1 << 27;

fn write_read_back(r: &mut Run, name: &str, msr: u32, value: u64) -> Outcome {
    // SAFETY: these MSRs serve syscalls and sysenter, which this guest never
    // executes, or are the PAT with only an unused entry changed.
    let written = unsafe { cpu::wrmsr(msr, value) };
    let read = cpu::rdmsr(msr);
    r.expect(
        name,
        written.is_ok() && read == Ok(value),
        format_args!("wrote {value:#x} ({written:?}), read {read:x?}"),
    )
}

pub fn run(r: &mut Run) -> Outcome {
    for (name, msr, value) in PLAIN {
        write_read_back(r, name, msr, value)?;
    }
    if cpu::cpuid(0x8000_0000)[0] >= 0x8000_0001 && cpu::cpuid(0x8000_0001)[3] & CPUID_RDTSCP != 0 {
        write_read_back(r, "IA32_TSC_AUX", TSC_AUX, TSC_AUX_VALUE)?;
    } else {
        r.skip("IA32_TSC_AUX", "RDTSCP not offered");
    }

    let read = cpu::rdmsr(VMM_MSR);
    r.expect(
        "rdmsr 0x4B564D00 answered by the VMM",
        read == Ok(VMM_MSR_READ_VALUE),
        format_args!("read {read:x?}, want {VMM_MSR_READ_VALUE:#x}"),
    )?;
    // SAFETY: the VMM's MSR has no meaning to the CPU.
    let written = unsafe { cpu::wrmsr(VMM_MSR, VMM_MSR_WRITE_VALUE) };
    r.expect("wrmsr 0x1234 to 0x4B564D00 accepted", written.is_ok(), format_args!("{written:?}"))?;

    let read = cpu::rdmsr(UNIMPLEMENTED_MSR);
    r.expect(
        "rdmsr 0x12345678 raises #GP in the guest",
        read == Err(cpu::GpFault),
        format_args!("{read:x?}"),
    )
}
