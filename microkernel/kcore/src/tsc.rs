//! Time-stamp-counter ticks as nanoseconds: the kernel's clock
//! (`arch::time::nanos_since_boot`), and the check of a deadline against it
//! without the 128-bit division (the `VcpuRun` return path asks on every
//! exit to the VMM).

/// `ticks` of a counter running at `khz` kHz (at least 1) as nanoseconds,
/// rounded down.
#[inline(always)]
pub fn ticks_to_ns(ticks: u64, khz: u64) -> u64 {
    (u128::from(ticks) * 1_000_000 / u128::from(khz.max(1))) as u64
}

/// Whether `deadline_ns <= ticks_to_ns(ticks, khz)`, exactly, with two
/// multiplications instead of a division: for integers, `d <= ⌊x / k⌋`
/// exactly when `d·k <= x` (k > 0). The one difference: where
/// `ticks_to_ns` would not fit in 64 bits (its `as u64` wraps, after 584
/// years at 1 GHz) this says the deadline has passed.
#[inline(always)]
pub fn ns_reached(deadline_ns: u64, ticks: u64, khz: u64) -> bool {
    u128::from(deadline_ns) * u128::from(khz.max(1)) <= u128::from(ticks) * 1_000_000
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small xorshift: the same inputs in every run.
    fn next(s: &mut u64) -> u64 {
        *s ^= *s << 13;
        *s ^= *s >> 7;
        *s ^= *s << 17;
        *s
    }

    #[test]
    fn converts_as_the_division_did() {
        assert_eq!(ticks_to_ns(0, 2_000_000), 0);
        assert_eq!(ticks_to_ns(2_000_000, 2_000_000), 1_000_000);
        assert_eq!(ticks_to_ns(3, 2_000_000), 1); // 1.5 ns rounds down
        assert_eq!(ticks_to_ns(5, 0), 5_000_000); // a 0 kHz counter counts as 1 kHz
        assert_eq!(ticks_to_ns(u64::MAX, 1_000_000), u64::MAX);
    }

    /// The comparison agrees with converting and comparing, at the edges
    /// (a deadline one below, at and one above the conversion) and for many
    /// generated values, frequencies from 1 kHz to 10 GHz included.
    #[test]
    fn reached_agrees_with_converting() {
        let mut s = 0x9e37_79b9_7f4a_7c15u64;
        let khzs = [1, 999, 1_000, 1_000_000, 1_999_999, 2_893_441, 3_000_000, 10_000_000];
        for i in 0..20_000 {
            let khz = if i % 2 == 0 { khzs[i % khzs.len()] } else { next(&mut s) % 10_000_000 + 1 };
            // Up to about a year of ticks at 10 GHz, fewer where the
            // conversion would not fit in 64 bits (a slow counter).
            let limit = (u128::from(khz) * u128::from(u64::MAX) / 1_000_000).min(1 << 58) as u64;
            let ticks = next(&mut s) % limit.max(1);
            let now = ticks_to_ns(ticks, khz);
            for d in [now.saturating_sub(1), now, now.saturating_add(1), 0, u64::MAX, next(&mut s) % now.max(1).saturating_mul(2)] {
                assert_eq!(ns_reached(d, ticks, khz), d <= now, "deadline {d}, {ticks} ticks at {khz} kHz");
            }
        }
        // A 0 kHz counter: as 1 kHz in both.
        assert!(ns_reached(5_000_000, 5, 0));
        assert!(!ns_reached(5_000_001, 5, 0));
        // Past what 64 bits of nanoseconds hold: reached.
        assert!(ns_reached(u64::MAX - 1, u64::MAX, 1));
        // Never: u64::MAX is the "no deadline" value and is not reached.
        assert!(!ns_reached(u64::MAX, 1 << 58, 3_000_000));
    }
}
