//! Tests 13-15: the FPU/SSE state the VMM and the guest hand each other
//! through the run page (see `protocol::fpu`). The guest is soft-float, so
//! nothing but these asm blocks touches the x87/SSE registers.
use core::arch::asm;

use testguest::protocol::cpuid::{BASE_LEAF, signature_regs};
use testguest::protocol::fpu::{self as f, State};

use super::{Outcome, Run};
use crate::cpu;

#[repr(C, align(16))]
struct Image([u8; 512]);

/// CR4.OSFXSR and OSXMMEXCPT on, CR0.EM and TS off, MP on: SSE usable.
fn enable_sse() {
    // SAFETY: only FPU/SSE enable bits change; the guest's paging and
    // protection stay as they are.
    unsafe {
        asm!(
            "mov {t}, cr4", "or {t}, 0x600", "mov cr4, {t}",
            "mov {t}, cr0", "and {t}, ~0xc", "or {t}, 2", "mov cr0, {t}",
            t = out(reg) _, options(nomem, nostack, preserves_flags)
        )
    }
}

/// The vCPU's FPU/SSE state now.
fn current() -> State {
    let mut image = Image([0; 512]);
    // SAFETY: FXSAVE writes 512 bytes at a 16-byte aligned buffer we own;
    // SSE is enabled (enable_sse).
    unsafe { asm!("fxsave64 [{}]", in(reg) image.0.as_mut_ptr(), options(nostack, preserves_flags)) };
    State::from_fxsave(&image.0)
}

/// Loads `s`'s control word, MXCSR, XMM0 and XMM15 with the plain
/// instructions (FLDCW, LDMXCSR, MOVDQU), not FXRSTOR.
fn load(s: &State) {
    let (fcw, mxcsr, x0, x15) = (s.fcw, s.mxcsr, s.xmm0.to_le_bytes(), s.xmm15.to_le_bytes());
    // SAFETY: every pointer is to a local of the right size; the values are
    // valid (protocol's host test checks the MXCSRs); the XMM registers
    // are not used by this soft-float code.
    unsafe {
        asm!(
            "fldcw [{fcw}]",
            "ldmxcsr [{mxcsr}]",
            "movdqu xmm0, [{x0}]",
            "movdqu xmm15, [{x15}]",
            fcw = in(reg) &fcw, mxcsr = in(reg) &mxcsr, x0 = in(reg) x0.as_ptr(), x15 = in(reg) x15.as_ptr(),
            options(nostack, preserves_flags, readonly)
        )
    }
}

/// Test 13.
pub fn run(r: &mut Run) -> Outcome {
    enable_sse();
    let s = current();
    r.expect("the VMM's first image is loaded", s == f::VMM_FIRST, format_args!("{s:x?}"))?;
    load(&f::GUEST);
    let s = current();
    r.expect("the guest's own values are loaded", s == f::GUEST, format_args!("{s:x?}"))?;
    // The VMM checks that it sees GUEST here and loads VMM_SECOND.
    cpu::outb(f::SWAP_PORT, 1);
    let s = current();
    r.expect("the VMM's second image is loaded", s == f::VMM_SECOND, format_args!("{s:x?}"))?;
    // Left loaded for the VMM to find in the run page after the result.
    load(&f::GUEST);
    Ok(())
}

/// Test 14.
pub fn run_fresh(r: &mut Run) -> Outcome {
    enable_sse();
    let s = current();
    r.expect("a new guest starts from the clean state", s == f::CLEAN, format_args!("{s:x?}"))
}

/// MXCSR now (STMXCSR).
fn mxcsr() -> u32 {
    let mut m = 0u32;
    // SAFETY: STMXCSR writes 4 bytes to a local; SSE is enabled.
    unsafe { asm!("stmxcsr [{}]", in(reg) &mut m, options(nostack, preserves_flags)) };
    m
}

/// Test 15.
pub fn run_race(r: &mut Run) -> Outcome {
    enable_sse();
    let want = signature_regs();
    let mut bad_cpuid = None;
    // Real hardware faults (#GP) on FXRSTOR of reserved MXCSR bits, in the
    // kernel; QEMU's TCG loads them: either way the kernel must never load
    // an image it did not check.
    let (mut reserved, mut first_reserved) = (0u32, None);
    for round in 0..f::RACE_ROUNDS {
        cpu::outb(f::RACE_PORT, round as u8);
        let m = mxcsr();
        if m & f::RACE_RESERVED_BITS != 0 {
            reserved += 1;
            first_reserved.get_or_insert((round, m));
        }
        let [_, b, c, d] = cpu::cpuid(BASE_LEAF);
        if bad_cpuid.is_none() && [b, c, d] != want {
            bad_cpuid = Some((round, [b, c, d]));
        }
    }
    r.expect(
        "no round ran with reserved MXCSR bits loaded",
        reserved == 0,
        format_args!("{reserved} of {} rounds, first {first_reserved:x?}", f::RACE_ROUNDS),
    )?;
    r.expect("the CPUID signature held in every round", bad_cpuid.is_none(), format_args!("{bad_cpuid:x?}"))?;
    r.expect_eq("MXCSR is the racing image's valid value", u64::from(mxcsr()), u64::from(f::RACE_MXCSR))
}
