//! The token bucket behind a VNIC's `maxbw`, after Firecracker's rate
//! limiter: tokens are bytes, refilled at the cap's rate up to a burst.
//! Time comes from the caller (nanoseconds on any monotonic clock), so the
//! bucket is exact and testable: tokens are kept in byte-nanoseconds, and a
//! refill adds `elapsed_ns * bytes_per_s` with no rounding to drift.

const NS_PER_S: u128 = 1_000_000_000;

/// A token bucket for one direction of one VNIC.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenBucket {
    bytes_per_s: u64,
    /// Capacity and level in byte-nanoseconds.
    capacity: u128,
    tokens: u128,
    last_ns: u64,
}

impl TokenBucket {
    /// A full bucket refilling at `bytes_per_s` (at least 1) and holding
    /// at most `burst_bytes` (at least 1).
    pub fn new(bytes_per_s: u64, burst_bytes: u64, now_ns: u64) -> Self {
        let bytes_per_s = bytes_per_s.max(1);
        let capacity = u128::from(burst_bytes.max(1)) * NS_PER_S;
        Self { bytes_per_s, capacity, tokens: capacity, last_ns: now_ns }
    }

    /// The bucket for a cap of `mbit_per_s` (10^6 bit/s, as Crossbow's
    /// `maxbw`): a burst of 10 ms at that rate, at least two frames of
    /// `max_frame` bytes so that every frame can pass.
    pub fn for_mbit(mbit_per_s: u32, max_frame: usize, now_ns: u64) -> Self {
        let rate = u64::from(mbit_per_s) * 125_000;
        let burst = (rate / 100).max(2 * max_frame as u64);
        Self::new(rate, burst, now_ns)
    }

    /// The refill rate.
    pub const fn bytes_per_s(&self) -> u64 {
        self.bytes_per_s
    }

    fn refill(&mut self, now_ns: u64) {
        // A clock that went back refills nothing (and never panics).
        if now_ns > self.last_ns {
            let add = u128::from(now_ns - self.last_ns) * u128::from(self.bytes_per_s);
            self.tokens = self.tokens.saturating_add(add).min(self.capacity);
            self.last_ns = now_ns;
        }
    }

    /// Takes `bytes` if the bucket holds them; otherwise takes nothing and
    /// returns the time at which it will. A frame larger than the burst
    /// needs a full bucket (and empties it).
    pub fn take(&mut self, bytes: usize, now_ns: u64) -> Result<(), u64> {
        self.refill(now_ns);
        let need = (bytes as u128 * NS_PER_S).min(self.capacity);
        if self.tokens >= need {
            self.tokens -= need;
            return Ok(());
        }
        let wait = (need - self.tokens).div_ceil(u128::from(self.bytes_per_s));
        Err(now_ns.max(self.last_ns).saturating_add(u64::try_from(wait).unwrap_or(u64::MAX)))
    }
}
