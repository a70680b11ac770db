//! Test 1: the CPUID leaves a guest uses to find its hypervisor.
use testguest::protocol::cpuid::{BASE_LEAF, HYPERVISOR_BIT, MIN_MAX_LEAF, SIGNATURE, TSC_FREQ_LEAF, signature_regs};

use super::{Outcome, Run};
use crate::cpu::cpuid;

pub fn run(r: &mut Run) -> Outcome {
    let ecx = cpuid(1)[2];
    r.expect("leaf 1 ECX[31] hypervisor bit", ecx & HYPERVISOR_BIT != 0, format_args!("ecx {ecx:#x}"))?;

    let [max, ebx, ecx, edx] = cpuid(BASE_LEAF);
    r.expect(
        "leaf 0x40000000 max leaf >= 0x40000010",
        max >= MIN_MAX_LEAF,
        format_args!("eax {max:#x}"),
    )?;
    let mut sig = [0u8; 12];
    sig[..4].copy_from_slice(&ebx.to_le_bytes());
    sig[4..8].copy_from_slice(&ecx.to_le_bytes());
    sig[8..].copy_from_slice(&edx.to_le_bytes());
    let shown = core::str::from_utf8(&sig).unwrap_or("(not ASCII)");
    r.expect(
        "leaf 0x40000000 signature \"AlcoveAlcove\"",
        [ebx, ecx, edx] == signature_regs() && sig == SIGNATURE,
        format_args!("{shown:?} ebx {ebx:#x} ecx {ecx:#x} edx {edx:#x}"),
    )?;

    let khz = cpuid(TSC_FREQ_LEAF)[0];
    r.expect("leaf 0x40000010 TSC kHz nonzero", khz != 0, format_args!("{khz} kHz"))
}
