//! A token bucket per client: how much console output each caller may send
//! now. Tokens are bytes; a bucket fills at [`Rate::bytes_per_s`] up to
//! [`Rate::burst`] and each byte written takes one. Time comes from the
//! caller (`now_ns`, any monotonic clock), so the logic is plain arithmetic
//! the host tests drive with a made-up clock.

/// A client's allowance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    /// Bytes per second the bucket fills by.
    pub bytes_per_s: u64,
    /// Most bytes it holds (what a quiet client may send at once).
    pub burst: u64,
}

const NS_PER_S: u64 = 1_000_000_000;

/// One client's bucket. Tokens are kept in byte-nanoseconds (bytes × 10⁹),
/// so that refills a few nanoseconds apart lose nothing to rounding.
#[derive(Clone, Debug)]
pub struct Bucket {
    scaled: u64,
    last_ns: u64,
}

impl Bucket {
    /// A full bucket at time `now_ns`.
    pub fn new(rate: Rate, now_ns: u64) -> Self {
        Self { scaled: rate.burst.saturating_mul(NS_PER_S), last_ns: now_ns }
    }

    fn refill(&mut self, rate: Rate, now_ns: u64) {
        let elapsed = now_ns.saturating_sub(self.last_ns);
        self.last_ns = self.last_ns.max(now_ns);
        let cap = rate.burst.saturating_mul(NS_PER_S);
        self.scaled = self.scaled.saturating_add(elapsed.saturating_mul(rate.bytes_per_s)).min(cap);
    }

    /// Bytes the client may send at `now_ns`.
    pub fn available(&mut self, rate: Rate, now_ns: u64) -> u64 {
        self.refill(rate, now_ns);
        self.scaled / NS_PER_S
    }

    /// Takes `bytes` tokens (at most what is there).
    pub fn take(&mut self, rate: Rate, now_ns: u64, bytes: u64) {
        self.refill(rate, now_ns);
        self.scaled = self.scaled.saturating_sub(bytes.saturating_mul(NS_PER_S));
    }

    /// How long from `now_ns` until `bytes` tokens (at most a burst) are
    /// there: 0 when they are already.
    pub fn wait_ns(&mut self, rate: Rate, now_ns: u64, bytes: u64) -> u64 {
        self.refill(rate, now_ns);
        let want = bytes.min(rate.burst).saturating_mul(NS_PER_S);
        if want <= self.scaled {
            return 0;
        }
        if rate.bytes_per_s == 0 {
            return u64::MAX;
        }
        (want - self.scaled).div_ceil(rate.bytes_per_s)
    }

    /// Whether the bucket is full (its client has been quiet): such a bucket
    /// may be forgotten, a new one starts full too.
    pub fn is_full(&mut self, rate: Rate, now_ns: u64) -> bool {
        self.refill(rate, now_ns);
        self.scaled >= rate.burst.saturating_mul(NS_PER_S)
    }

    /// When it was last refilled (for choosing one to forget).
    pub fn last_ns(&self) -> u64 {
        self.last_ns
    }
}

/// How much of `bytes` a client with `available` tokens sends now: whole
/// lines where it can (so that clients' lines do not interleave on the
/// console), the allowance up to its last newline; a line longer than
/// `burst` goes in pieces of a full bucket, or it could never go.
pub fn portion(bytes: &[u8], available: u64, burst: u64) -> usize {
    let allowed = usize::try_from(available).unwrap_or(usize::MAX).min(bytes.len());
    if allowed == bytes.len() {
        return allowed;
    }
    match bytes[..allowed].iter().rposition(|&b| b == b'\n') {
        Some(i) => i + 1,
        None if available >= burst => allowed,
        None => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATE: Rate = Rate { bytes_per_s: 1000, burst: 100 };

    #[test]
    fn a_bucket_starts_full_drains_and_refills_at_the_rate() {
        let mut b = Bucket::new(RATE, 5);
        assert_eq!(b.available(RATE, 5), 100);
        b.take(RATE, 5, 100);
        assert_eq!(b.available(RATE, 5), 0);
        // 1000 bytes/s: one byte per millisecond, in pieces of 1 µs too.
        for t in 0..1000 {
            assert_eq!(b.available(RATE, 5 + t * 1000), t / 1000);
        }
        assert_eq!(b.available(RATE, 5 + 1_000_000), 1);
        assert_eq!(b.wait_ns(RATE, 5 + 1_000_000, 11), 10_000_000);
        assert_eq!(b.available(RATE, 5 + 50_000_000), 50);
        // Never above the burst, and time going back changes nothing.
        assert_eq!(b.available(RATE, 10 * NS_PER_S), 100);
        assert!(b.is_full(RATE, 3));
        assert_eq!(b.wait_ns(RATE, 10 * NS_PER_S, 5000), 0);
    }

    #[test]
    fn portions_end_at_a_line_unless_a_line_is_longer_than_the_burst() {
        assert_eq!(portion(b"ab\ncd\n", 100, 100), 6);
        assert_eq!(portion(b"ab\ncd\nef", 7, 100), 6);
        assert_eq!(portion(b"ab\ncd\nef", 5, 100), 3);
        assert_eq!(portion(b"abcdef", 5, 100), 0);
        assert_eq!(portion(b"abcdef", 5, 5), 5);
        assert_eq!(portion(b"", 0, 5), 0);
    }
}
