//! Port-I/O exits counted by port: which device a guest's exits go to (a
//! firmware boot's hundreds of thousands of them, for one). Each vCPU
//! thread keeps its own [`PortCounts`] (no atomics on the exit path) and
//! the VM merges them when it ends, for its closing log line.
//!
//! The table has room for [`PortCounts::SLOTS`] ports; exits to ports past
//! that are counted together as "other", so the report never loses an exit.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortCounts {
    /// (port, reads, writes), in the order first seen; `len` are used.
    slots: [(u16, u64, u64); Self::SLOTS],
    len: usize,
    /// Exits to ports that found no free slot.
    other: u64,
}

impl Default for PortCounts {
    fn default() -> Self {
        Self::new()
    }
}

impl PortCounts {
    pub const SLOTS: usize = 48;

    pub const fn new() -> Self {
        Self { slots: [(0, 0, 0); Self::SLOTS], len: 0, other: 0 }
    }

    /// One exit (`write`: an OUT) to `port`; `n` elements (a `rep` batch
    /// counts as one exit).
    pub fn add(&mut self, port: u16, write: bool, n: u64) {
        let used = &mut self.slots[..self.len];
        let slot = match used.iter().position(|s| s.0 == port) {
            Some(i) => &mut used[i],
            None if self.len < Self::SLOTS => {
                self.len += 1;
                let s = &mut self.slots[self.len - 1];
                *s = (port, 0, 0);
                s
            }
            None => {
                self.other += n;
                return;
            }
        };
        if write {
            slot.2 += n;
        } else {
            slot.1 += n;
        }
    }

    /// Adds `other`'s counts to these.
    pub fn merge(&mut self, other: &PortCounts) {
        for &(port, r, w) in &other.slots[..other.len] {
            if r > 0 {
                self.add(port, false, r);
            }
            if w > 0 {
                self.add(port, true, w);
            }
        }
        self.other += other.other;
    }

    /// Every exit counted.
    pub fn total(&self) -> u64 {
        self.slots[..self.len].iter().map(|s| s.1 + s.2).sum::<u64>() + self.other
    }

    /// The `n` busiest ports as (port, reads, writes), busiest first (ties:
    /// lower port first).
    pub fn busiest(&self, n: usize) -> Vec<(u16, u64, u64)> {
        let mut v: Vec<_> = self.slots[..self.len].to_vec();
        v.sort_by(|a, b| (b.1 + b.2).cmp(&(a.1 + a.2)).then(a.0.cmp(&b.0)));
        v.truncate(n);
        v
    }

    /// "0xb008 r41200, 0x510 w12 r3, …, other 5": the `n` busiest ports
    /// and what the rest add up to.
    pub fn summary(&self, n: usize) -> String {
        let top = self.busiest(n);
        let shown: u64 = top.iter().map(|s| s.1 + s.2).sum();
        let mut parts: Vec<String> = top
            .iter()
            .map(|&(port, r, w)| match (r, w) {
                (r, 0) => format!("{port:#x} in {r}"),
                (0, w) => format!("{port:#x} out {w}"),
                (r, w) => format!("{port:#x} in {r} out {w}"),
            })
            .collect();
        let rest = self.total() - shown;
        if rest > 0 {
            parts.push(format!("other ports {rest}"));
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
}
