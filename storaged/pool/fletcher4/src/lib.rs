//! ZFS's fletcher4, the default checksum of the pool's data and indirect
//! blocks (`storaged/pool/FORMAT.md`, "Checksums"): four 64-bit running
//! sums over a block's little-endian 32-bit words, `a += w; b += a;
//! c += b; d += c`, each wrapping modulo 2^64. A tail shorter than a word
//! is zero-padded to one (the pool's blocks are multiples of 4096 bytes, so
//! none has one).
//!
//! Two ways to the same sums:
//! * [`scalar`]: the recurrence itself, word by word (a load and four adds
//!   a word): the reference, and the code wherever SSE2 may not run.
//! * [`sse2`] (x86_64): four lanes, lane `j` running the recurrence over
//!   words `j, j + 4, j + 8, ...`, two lanes to an XMM register, 64 bytes
//!   per loop; the lanes' sums are then combined into the block's (the
//!   formulas are at [`combine`]) and any bytes left after the last
//!   64-byte piece continue the recurrence in scalar code. About 0.8
//!   instructions a byte against the scalar code's 1.3.
//!
//! * [`sse41`] (x86_64, CPUs with SSE4.1): [`sse2`]'s lanes, each group of
//!   words loaded and zero-extended by `pmovzxdq` (two instructions where
//!   SSE2 needs four): about 0.67 instructions a byte.
//!
//! Which one [`fletcher4`] uses is fixed at build time ([`USES_SSE2`]): SSE2
//! where the target turns it on (the host's x86_64), or with the `sse2`
//! feature on a target that does not (`x86_64-unknown-none`, Alcove's
//! processes: only in a process whose kernel keeps its threads' XMM state),
//! and then SSE4.1's loads where CPUID has them (asked once at run time).
//!
//! Why assembly and not `core::arch` intrinsics: `x86_64-unknown-none` is
//! a soft-float target (`+soft-float`), for which LLVM has no XMM
//! registers at all, so intrinsics in a `#[target_feature(enable =
//! "sse2")]` function compile but are lowered to scalar code (checked with
//! `--emit asm`: not one SSE instruction), and `asm!` cannot name an XMM
//! register as an operand or clobber there. The loop is therefore written
//! in `asm!`, saving every XMM register it uses and restoring it before it
//! ends, so that it is sound whether or not the compiler itself keeps
//! values in XMM registers (it does on the host).
#![no_std]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

/// The four sums, `[a, b, c, d]`.
pub type Sums = [u64; 4];

/// Whether [`fletcher4`] runs the SSE2 code in this build.
pub const USES_SSE2: bool = cfg!(all(target_arch = "x86_64", any(target_feature = "sse2", feature = "sse2")));

/// fletcher4 of `data`: [`sse41`] where [`USES_SSE2`] and the CPU has
/// SSE4.1 ([`has_sse41`]), [`sse2`] where only [`USES_SSE2`], else
/// [`scalar`] (the same sums every way).
pub fn fletcher4(data: &[u8]) -> Sums {
    #[cfg(all(target_arch = "x86_64", any(target_feature = "sse2", feature = "sse2")))]
    {
        if has_sse41() { sse41(data) } else { sse2(data) }
    }
    #[cfg(not(all(target_arch = "x86_64", any(target_feature = "sse2", feature = "sse2"))))]
    {
        scalar(data)
    }
}

/// fletcher4 of `data` by the recurrence, word by word.
pub fn scalar(data: &[u8]) -> Sums {
    update([0; 4], data)
}

/// The sums `s` carried on over `data` (its words, then a zero-padded
/// tail): `update(scalar(x), y)` is `scalar(x ++ y)` when `x` is a whole
/// number of words.
pub fn update(s: Sums, data: &[u8]) -> Sums {
    let [mut a, mut b, mut c, mut d] = s;
    let mut add = |w: u32| {
        a = a.wrapping_add(u64::from(w));
        b = b.wrapping_add(a);
        c = c.wrapping_add(b);
        d = d.wrapping_add(c);
    };
    // 16 words a loop (unrolled by the compiler: a load and four adds a
    // word, the loop's own three instructions once per 64 bytes).
    let mut pieces = data.chunks_exact(64);
    for piece in &mut pieces {
        for w in piece.chunks_exact(4) {
            add(u32::from_le_bytes([w[0], w[1], w[2], w[3]]));
        }
    }
    let mut words = pieces.remainder().chunks_exact(4);
    for w in &mut words {
        add(u32::from_le_bytes([w[0], w[1], w[2], w[3]]));
    }
    let tail = words.remainder();
    if !tail.is_empty() {
        let mut w = [0u8; 4];
        w[..tail.len()].copy_from_slice(tail);
        add(u32::from_le_bytes(w));
    }
    [a, b, c, d]
}

/// The block's sums from four lanes' (`lanes[k][j]`: sum `k` of lane `j`,
/// each lane having run the recurrence over the same number `n` of words,
/// lane `j` over words `j, j + 4, ...`).
///
/// Word `4m + j` of the block's `4n` counts `k = 4(n - m) - j` times in
/// `b`, `k(k+1)/2` in `c` and `k(k+1)(k+2)/6` in `d`; in its lane it
/// counts `p = n - m` times in `b`, `p(p+1)/2` in `c`, `p(p+1)(p+2)/6` in
/// `d`. Writing the block's coefficients in the lane's (polynomials in
/// `p`) gives, summed over the lanes:
///
/// * `A = Σ a_j`
/// * `B = Σ 4 b_j − j a_j`
/// * `C = Σ 16 c_j − (6 + 4j) b_j + j(j−1)/2 a_j`
/// * `D = Σ 64 d_j − (48 + 16j) c_j + (4 + 4j + 2j²) b_j − j(j−1)(j−2)/6 a_j`
///
/// integer identities, so they hold modulo 2^64 too (the lanes' sums wrap
/// as the block's do). For one group of words (`n = 1`, `p = 1`) the `d`
/// coefficients are 64 − 48 + 4 = 20, 64 − 64 + 10 = 10, 64 − 80 + 20 = 4
/// and 64 − 96 + 34 − 1 = 1: `k(k+1)(k+2)/6` for `k` = 4, 3, 2, 1.
pub fn combine(lanes: &[[u64; 4]; 4]) -> Sums {
    let [a, b, c, d] = lanes;
    let mut s = [0u64; 4];
    for j in 0..4 {
        let jj = j as u64;
        let m = |x: u64, k: u64| x.wrapping_mul(k);
        s[0] = s[0].wrapping_add(a[j]);
        s[1] = s[1].wrapping_add(m(b[j], 4)).wrapping_sub(m(a[j], jj));
        s[2] = s[2].wrapping_add(m(c[j], 16)).wrapping_sub(m(b[j], 6 + 4 * jj)).wrapping_add(m(a[j], jj * jj.saturating_sub(1) / 2));
        s[3] = s[3]
            .wrapping_add(m(d[j], 64))
            .wrapping_sub(m(c[j], 48 + 16 * jj))
            .wrapping_add(m(b[j], 4 + 4 * jj + 2 * jj * jj))
            .wrapping_sub(m(a[j], jj * jj.saturating_sub(1) * jj.saturating_sub(2) / 6));
    }
    s
}

/// fletcher4 of `data` with SSE2: the lanes over its whole 64-byte pieces,
/// [`combine`]d, then [`update`] over what is left. Any length and
/// alignment. Runs SSE2 instructions whatever the build: on Alcove only in
/// a process whose kernel keeps XMM state (elsewhere it faults; nothing
/// worse).
#[cfg(target_arch = "x86_64")]
pub fn sse2(data: &[u8]) -> Sums {
    let body = data.len() / 64 * 64;
    let s = if body == 0 { [0; 4] } else { combine(&lanes_sse2(&data[..body])) };
    update(s, &data[body..])
}

/// [`sse2`] with SSE4.1's zero-extending loads (`pmovzxdq`): 43
/// instructions per 64 bytes where [`sse2`] runs 51 (about 0.67 a byte).
/// On a CPU without SSE4.1 (CPUID, [`has_sse41`]) it is [`sse2`].
#[cfg(target_arch = "x86_64")]
pub fn sse41(data: &[u8]) -> Sums {
    if !has_sse41() {
        return sse2(data);
    }
    let body = data.len() / 64 * 64;
    let s = if body == 0 { [0; 4] } else { combine(&lanes_sse41(&data[..body])) };
    update(s, &data[body..])
}

/// Whether this CPU has SSE4.1 (CPUID leaf 1, ECX bit 19), asked once.
/// Emulated CPUs differ: QEMU's `qemu64` has none, its `EPYC` has it.
#[cfg(target_arch = "x86_64")]
pub fn has_sse41() -> bool {
    use core::sync::atomic::{AtomicU8, Ordering};
    // 0: not asked yet, 1: no, 2: yes.
    static KNOWN: AtomicU8 = AtomicU8::new(0);
    match KNOWN.load(Ordering::Relaxed) {
        0 => {
            let yes = core::arch::x86_64::__cpuid(1).ecx & (1 << 19) != 0;
            KNOWN.store(if yes { 2 } else { 1 }, Ordering::Relaxed);
            yes
        }
        k => k == 2,
    }
}

/// One 16-byte group of words: zero-extended to two pairs of 64-bit lanes
/// (words 0, 1 in xmm8 and 2, 3 in xmm9; xmm10 is zero), added into a
/// (xmm0, xmm1), then b += a (xmm2, xmm3), c += b (xmm4, xmm5), d += c
/// (xmm6, xmm7).
#[cfg(target_arch = "x86_64")]
macro_rules! group {
    ($off:literal) => {
        concat!(
            "movdqu xmm8, [{p} + ",
            $off,
            "]\n",
            "movdqa xmm9, xmm8\n",
            "punpckldq xmm8, xmm10\n",
            "punpckhdq xmm9, xmm10\n",
            "paddq xmm0, xmm8\n",
            "paddq xmm1, xmm9\n",
            "paddq xmm2, xmm0\n",
            "paddq xmm3, xmm1\n",
            "paddq xmm4, xmm2\n",
            "paddq xmm5, xmm3\n",
            "paddq xmm6, xmm4\n",
            "paddq xmm7, xmm5\n",
        )
    };
}

/// [`group`] with SSE4.1's `pmovzxdq`, which loads two words and
/// zero-extends them to 64-bit lanes in one instruction: 10 instructions a
/// group where SSE2 needs 12 (the load, a copy and two unpacks).
#[cfg(target_arch = "x86_64")]
macro_rules! group41 {
    ($off:literal) => {
        concat!(
            "pmovzxdq xmm8, qword ptr [{p} + ",
            $off,
            "]\n",
            "pmovzxdq xmm9, qword ptr [{p} + ",
            $off,
            " + 8]\n",
            "paddq xmm0, xmm8\n",
            "paddq xmm1, xmm9\n",
            "paddq xmm2, xmm0\n",
            "paddq xmm3, xmm1\n",
            "paddq xmm4, xmm2\n",
            "paddq xmm5, xmm3\n",
            "paddq xmm6, xmm4\n",
            "paddq xmm7, xmm5\n",
        )
    };
}

/// The lanes' loop over `$data` with `$group` (the name of a macro making
/// one 16-byte group's instructions).
#[cfg(target_arch = "x86_64")]
macro_rules! lanes_asm {
    ($data:expr, $group:ident) => {{
    let data: &[u8] = $data;
    assert!(!data.is_empty() && data.len().is_multiple_of(64), "whole 64-byte pieces");
    // xmm0..xmm7 in order: a0 a1 | a2 a3 | b0 b1 | b2 b3 | ... | d2 d3.
    let mut out = [[0u64; 4]; 4];
    let mut save = [0u8; 11 * 16];
    let range = data.as_ptr_range();
    // SAFETY:
    // 1. Reads: 64 bytes from each `p` in `range.start`, `+ 64`, ... below
    //    `range.end`: `data` is a non-zero multiple of 64 bytes (asserted),
    //    so every load lies inside it (`movdqu`, `pmovzxdq`: any alignment).
    // 2. Writes: 128 bytes at `out` (16 u64) and 176 at `save`, both
    //    locals that large; nothing else.
    // 3. Registers: `p` is an in-out operand; the flags are not declared
    //    preserved. xmm0..xmm10 are stored to `save` before their first
    //    use and loaded back from it last, so they leave as they came in,
    //    as `asm!` requires of undeclared registers (they cannot be
    //    declared on a soft-float target, which has none). MXCSR is
    //    untouched (integer instructions only).
    // 4. SSE2 is in every x86_64 CPU; SSE4.1's `pmovzxdq` (`group41`) runs
    //    only after `has_sse41` found it in CPUID; that the OS lets this thread use
    //    XMM registers is the build's promise (`USES_SSE2`; a fault, not
    //    undefined behaviour, if broken). No stack use.
    unsafe {
        core::arch::asm!(
            "movdqu [{save}], xmm0",
            "movdqu [{save} + 16], xmm1",
            "movdqu [{save} + 32], xmm2",
            "movdqu [{save} + 48], xmm3",
            "movdqu [{save} + 64], xmm4",
            "movdqu [{save} + 80], xmm5",
            "movdqu [{save} + 96], xmm6",
            "movdqu [{save} + 112], xmm7",
            "movdqu [{save} + 128], xmm8",
            "movdqu [{save} + 144], xmm9",
            "movdqu [{save} + 160], xmm10",
            "pxor xmm0, xmm0",
            "pxor xmm1, xmm1",
            "pxor xmm2, xmm2",
            "pxor xmm3, xmm3",
            "pxor xmm4, xmm4",
            "pxor xmm5, xmm5",
            "pxor xmm6, xmm6",
            "pxor xmm7, xmm7",
            "pxor xmm10, xmm10",
            "2:",
            $group!("0"),
            $group!("16"),
            $group!("32"),
            $group!("48"),
            "add {p}, 64",
            "cmp {p}, {end}",
            "jne 2b",
            "movdqu [{out}], xmm0",
            "movdqu [{out} + 16], xmm1",
            "movdqu [{out} + 32], xmm2",
            "movdqu [{out} + 48], xmm3",
            "movdqu [{out} + 64], xmm4",
            "movdqu [{out} + 80], xmm5",
            "movdqu [{out} + 96], xmm6",
            "movdqu [{out} + 112], xmm7",
            "movdqu xmm0, [{save}]",
            "movdqu xmm1, [{save} + 16]",
            "movdqu xmm2, [{save} + 32]",
            "movdqu xmm3, [{save} + 48]",
            "movdqu xmm4, [{save} + 64]",
            "movdqu xmm5, [{save} + 80]",
            "movdqu xmm6, [{save} + 96]",
            "movdqu xmm7, [{save} + 112]",
            "movdqu xmm8, [{save} + 128]",
            "movdqu xmm9, [{save} + 144]",
            "movdqu xmm10, [{save} + 160]",
            p = inout(reg) range.start => _,
            end = in(reg) range.end,
            out = in(reg) out.as_mut_ptr(),
            save = in(reg) save.as_mut_ptr(),
            options(nostack),
        );
    }
    // Little-endian lanes: the u64s in `out` are a0 a1 a2 a3 b0 ... d3.
    out
    }};
}

/// The four lanes' sums over `data` (a non-zero multiple of 64 bytes):
/// `[a, b, c, d]`, each `[lane 0, 1, 2, 3]`.
#[cfg(target_arch = "x86_64")]
fn lanes_sse2(data: &[u8]) -> [[u64; 4]; 4] {
    lanes_asm!(data, group)
}

/// [`lanes_sse2`] with [`group41`]'s loads: the same lanes. Only where the
/// CPU has SSE4.1 ([`has_sse41`]).
#[cfg(target_arch = "x86_64")]
fn lanes_sse41(data: &[u8]) -> [[u64; 4]; 4] {
    lanes_asm!(data, group41)
}
