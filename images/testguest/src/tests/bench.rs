//! Test 11: path lengths of VM exits, measured by the guest with RDTSC.
//! Each figure is the TSC delta over `ITERATIONS` runs of a loop around one
//! instruction, divided by `ITERATIONS`, after `WARMUP` unmeasured runs.
//! Under QEMU's `-icount shift=0` a TSC tick is one instruction executed
//! (by the host and the guest together), so the figures are deterministic
//! "instructions per exit". Each loop is one asm block, so its instructions
//! are exactly those written here: the exiting one, `dec` and `jnz` (CPUID
//! also zeroes EAX and ECX first); `vmexit_none` runs a `nop` in its place
//! and so shows what the loop itself costs.
use core::arch::asm;

use testguest::protocol::bench::{ITERATIONS, NAMES, PIO_PORT, UNIT, WARMUP};
use testguest::protocol::mmio::BASE;

use super::{Outcome, Run};

/// TSC ticks over `$n` (nonzero) iterations of a loop running `$body`.
/// `$pre` runs once before the loop, after the first RDTSC; `$post` once
/// after it, before the second. `$operands` are the extra registers they use.
macro_rules! timed_loop {
    ($n:expr, pre [$($pre:literal),*], body [$($body:literal),+], post [$($post:literal),*], $($operands:tt)*) => {{
        let ticks: u64;
        // SAFETY: see each call.
        unsafe {
            asm!(
                "lfence", "rdtsc", "shl rdx, 32", "or rax, rdx", "mov {t0}, rax",
                $($pre,)*
                "2:",
                $($body,)+
                "dec {n}", "jnz 2b",
                $($post,)*
                "lfence", "rdtsc", "shl rdx, 32", "or rax, rdx", "sub rax, {t0}",
                t0 = out(reg) _,
                n = inout(reg) $n => _,
                out("rax") ticks,
                out("rdx") _,
                $($operands)*
            )
        }
        ticks
    }};
}

#[derive(Clone, Copy)]
enum Kind {
    Cpuid,
    PioUser,
    MmioUser,
    None,
}

/// In the order of `protocol::bench::NAMES`.
const KINDS: [Kind; 4] = [Kind::Cpuid, Kind::PioUser, Kind::MmioUser, Kind::None];

/// TSC ticks over `n` (nonzero) iterations of `kind`'s loop.
fn ticks(kind: Kind, n: u64) -> u64 {
    match kind {
        // SAFETY: CPUID only writes registers; RBX, which asm! cannot name
        // as an operand, is saved in {save} and restored.
        Kind::Cpuid => timed_loop!(
            n,
            pre ["mov {save}, rbx"],
            body ["xor eax, eax", "xor ecx, ecx", "cpuid"],
            post ["mov rbx, {save}"],
            save = out(reg) _, out("rcx") _, options(nomem, nostack)
        ),
        // SAFETY: port I/O has no effect on this guest's memory (see cpu.rs);
        // the VMM ignores the value.
        Kind::PioUser => timed_loop!(
            n,
            pre ["xor eax, eax", "mov edx, {port}"],
            body ["out dx, al"],
            post [],
            port = const PIO_PORT, options(nomem, nostack)
        ),
        // SAFETY: BASE is the MMIO test page, identity-mapped uncached by
        // boot.s and backed by no guest RAM: the load reaches only the
        // VMM's device, never memory Rust knows of.
        Kind::MmioUser => timed_loop!(
            n,
            pre [],
            body ["mov ecx, dword ptr [rsi]"],
            post [],
            in("rsi") BASE, out("rcx") _, options(readonly, nostack)
        ),
        // SAFETY: only the loop's own registers change.
        Kind::None => timed_loop!(n, pre [], body ["nop"], post [], options(nomem, nostack)),
    }
}

pub fn run(r: &mut Run) -> Outcome {
    let mut figures = [0u64; 4];
    let mut deltas = [0u64; 4];
    for (i, kind) in KINDS.into_iter().enumerate() {
        ticks(kind, WARMUP);
        deltas[i] = ticks(kind, ITERATIONS);
        figures[i] = deltas[i] / ITERATIONS;
    }
    for (name, figure) in NAMES.into_iter().zip(figures) {
        println!("bench {name} {figure} {UNIT}");
    }
    for (name, delta) in NAMES.into_iter().zip(deltas) {
        r.expect(name, delta > 0, format_args!("TSC advanced {delta} over {ITERATIONS} iterations"))?;
    }
    Ok(())
}
