//! Exits counted by where they went: port-I/O exits by port (which
//! device a guest's exits go to: a firmware boot's hundreds of thousands
//! of them, for one), MMIO exits by guest-physical address, MSR exits by
//! MSR. Each vCPU thread keeps its own [`Counts`] (no atomics on the exit
//! path) and the VM merges them when it ends, for its closing log lines.
//!
//! A table has room for [`Counts::SLOTS`] keys; exits to keys past that
//! are counted together as "other", so the report never loses an exit.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::LowerHex;

/// Port-I/O exits by port.
pub type PortCounts = Counts<u16>;
/// MMIO exits by guest-physical address, or MSR exits by MSR.
pub type AddrCounts = Counts<u64>;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Counts<K> {
    /// (key, reads, writes), in the order first seen; `len` are used.
    slots: [(K, u64, u64); SLOTS],
    /// Time spent on each slot's exits (`add_timed`), in the caller's unit.
    times: [u64; SLOTS],
    len: usize,
    /// Exits to keys that found no free slot.
    other: u64,
    /// What the keys are, plural ("ports"), for the summary's "other".
    noun: &'static str,
}

const SLOTS: usize = 48;

impl Default for PortCounts {
    fn default() -> Self {
        Self::new()
    }
}

impl PortCounts {
    pub fn new() -> Self {
        Self::named("ports")
    }
}

impl<K: Copy + Default + Ord + LowerHex> Counts<K> {
    pub const SLOTS: usize = SLOTS;

    /// An empty table whose keys the summary calls `noun` (plural).
    pub fn named(noun: &'static str) -> Self {
        Self { slots: [(K::default(), 0, 0); SLOTS], times: [0; SLOTS], len: 0, other: 0, noun }
    }

    /// One exit (`write`: an OUT or a store) to `key`; `n` elements (a
    /// `rep` batch counts as one exit).
    pub fn add(&mut self, key: K, write: bool, n: u64) {
        self.add_timed(key, write, n, 0);
    }

    /// [`Self::add`], and `time` spent on them (any unit: the summary's
    /// `per_ms` converts it).
    pub fn add_timed(&mut self, key: K, write: bool, n: u64, time: u64) {
        let i = match self.slots[..self.len].iter().position(|s| s.0 == key) {
            Some(i) => i,
            None if self.len < SLOTS => {
                self.len += 1;
                self.slots[self.len - 1] = (key, 0, 0);
                self.times[self.len - 1] = 0;
                self.len - 1
            }
            None => {
                self.other += n;
                return;
            }
        };
        self.times[i] = self.times[i].saturating_add(time);
        let slot = &mut self.slots[i];
        if write {
            slot.2 += n;
        } else {
            slot.1 += n;
        }
    }

    /// Adds `other`'s counts to these.
    pub fn merge(&mut self, other: &Counts<K>) {
        for (&(key, r, w), &t) in other.slots[..other.len].iter().zip(&other.times) {
            if r > 0 || w == 0 {
                self.add_timed(key, false, r, t);
            }
            if w > 0 {
                self.add_timed(key, true, w, if r > 0 { 0 } else { t });
            }
        }
        self.other += other.other;
    }

    /// Every exit counted.
    pub fn total(&self) -> u64 {
        self.slots[..self.len].iter().map(|s| s.1 + s.2).sum::<u64>() + self.other
    }

    /// The `n` busiest keys as (key, reads, writes), busiest first (ties:
    /// lower key first).
    pub fn busiest(&self, n: usize) -> Vec<(K, u64, u64)> {
        self.busiest_timed(n).into_iter().map(|(s, _)| s).collect()
    }

    /// [`Self::busiest`] with each key's time.
    fn busiest_timed(&self, n: usize) -> Vec<((K, u64, u64), u64)> {
        let mut v: Vec<_> = self.slots[..self.len].iter().copied().zip(self.times.iter().copied()).collect();
        v.sort_by(|(a, _), (b, _)| (b.1 + b.2).cmp(&(a.1 + a.2)).then(a.0.cmp(&b.0)));
        v.truncate(n);
        v
    }

    /// The time of every exit counted (`add_timed`'s unit).
    pub fn total_time(&self) -> u64 {
        self.times[..self.len].iter().sum()
    }

    /// "0xb008 in 41200, 0x510 in 3 out 12, …, other ports 5": the `n`
    /// busiest keys and what the rest add up to.
    pub fn summary(&self, n: usize) -> String {
        self.summary_timed(n, 0)
    }

    /// [`Self::summary`], each key followed by its time in ms when
    /// `per_ms` (time units a millisecond) is not 0: "0x3f8 out 562 (40 ms)".
    pub fn summary_timed(&self, n: usize, per_ms: u64) -> String {
        let top = self.busiest_timed(n);
        let shown: u64 = top.iter().map(|(s, _)| s.1 + s.2).sum();
        let mut parts: Vec<String> = top
            .iter()
            .map(|&((key, r, w), t)| {
                let counts = match (r, w) {
                    (r, 0) => format!("{key:#x} in {r}"),
                    (0, w) => format!("{key:#x} out {w}"),
                    (r, w) => format!("{key:#x} in {r} out {w}"),
                };
                match t.checked_div(per_ms) {
                    Some(ms) => format!("{counts} ({ms} ms)"),
                    None => counts,
                }
            })
            .collect();
        let rest = self.total() - shown;
        if rest > 0 {
            parts.push(format!("other {} {rest}", self.noun));
        }
        if parts.is_empty() {
            return "none".into();
        }
        parts.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_reads_and_writes_per_port_busiest_first() {
        let mut c = PortCounts::new();
        for _ in 0..5 {
            c.add(0xb008, false, 1);
        }
        c.add(0x510, true, 1);
        c.add(0x511, false, 1);
        c.add(0x511, false, 1);
        c.add(0x510, false, 1);
        assert_eq!(c.busiest(2), [(0xb008, 5, 0), (0x510, 1, 1)]);
        assert_eq!(c.total(), 9);
        assert_eq!(c.summary(2), "0xb008 in 5, 0x510 in 1 out 1, other ports 2");
        assert_eq!(PortCounts::new().summary(4), "none");
    }

    #[test]
    fn a_full_table_counts_the_rest_as_other_and_merging_keeps_every_exit() {
        let mut a = PortCounts::new();
        for p in 0..(PortCounts::SLOTS as u16 + 10) {
            a.add(p, p % 2 == 0, 2);
        }
        assert_eq!(a.total(), 2 * (PortCounts::SLOTS as u64 + 10));
        let mut b = PortCounts::new();
        b.add(0x70, true, 7);
        b.add(0x71, false, 3);
        b.merge(&a);
        assert_eq!(b.total(), a.total() + 10);
        // 0x70 and 0x71 kept their slots; a's ports fill the rest.
        assert_eq!(b.busiest(1), [(0x70, 0, 7)]);
        assert!(b.summary(3).ends_with(&format!("other ports {}", b.total() - 7 - 3 - 2)));
    }

    #[test]
    fn addresses_and_msrs_count_alike_under_their_own_name() {
        let mut m = AddrCounts::named("addresses");
        m.add(0xfebf_f000, true, 1);
        m.add(0xfebf_f000, true, 1);
        m.add(0xfee0_00b0, true, 1);
        m.add(u64::MAX, false, 1);
        assert_eq!(m.busiest(1), [(0xfebf_f000, 0, 2)]);
        assert_eq!(m.summary(2), "0xfebff000 out 2, 0xfee000b0 out 1, other addresses 1");
        let mut full = AddrCounts::named("MSRs");
        for k in 0..(AddrCounts::SLOTS as u64 + 3) {
            full.add(k, false, 1);
        }
        assert_eq!(full.total(), AddrCounts::SLOTS as u64 + 3);
        assert!(full.summary(1).ends_with(&format!("other MSRs {}", AddrCounts::SLOTS + 2)));
    }

    #[test]
    fn timed_counts_keep_each_keys_time_through_a_merge() {
        let mut a = PortCounts::new();
        a.add_timed(0x3f8, true, 1, 3000);
        a.add_timed(0x3f8, true, 1, 1000);
        a.add_timed(0xcf8, false, 1, 500);
        let mut b = PortCounts::new();
        b.add_timed(0xcf8, true, 1, 1500);
        b.merge(&a);
        assert_eq!(b.total_time(), 6000);
        assert_eq!(b.summary_timed(2, 1000), "0x3f8 out 2 (4 ms), 0xcf8 in 1 out 1 (2 ms)");
        assert_eq!(b.summary(1), "0x3f8 out 2, other ports 2");
    }
}
