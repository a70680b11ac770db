//! A set of `(deadline, id)` pairs ordered by deadline (the kernel's
//! timeouts and throttled threads) that keeps its earliest deadline in a
//! field: the ways out of the kernel ask for it on every pass (the `VcpuRun`
//! return and `exit_kernel`), where a B-tree's first key is a walk down its
//! left edge behind a call. Kept exact: every insertion and removal updates
//! it (a removal only walks the tree when it took the first entry).

use alloc::collections::BTreeSet;

#[derive(Debug)]
pub struct Deadlines<K> {
    set: BTreeSet<(u64, K)>,
    /// The earliest deadline in `set`, `u64::MAX` when it is empty.
    first: u64,
}

impl<K: Ord + Copy> Default for Deadlines<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Ord + Copy> Deadlines<K> {
    pub const fn new() -> Self {
        Self { set: BTreeSet::new(), first: u64::MAX }
    }

    /// The earliest deadline, `u64::MAX` when there is none: one load.
    #[inline(always)]
    pub fn first(&self) -> u64 {
        self.first
    }

    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }

    pub fn len(&self) -> usize {
        self.set.len()
    }

    /// Adds `key` at `deadline`; false if that pair was there already.
    pub fn insert(&mut self, deadline: u64, key: K) -> bool {
        let new = self.set.insert((deadline, key));
        self.first = self.first.min(deadline);
        new
    }

    /// Removes the pair; false if it was not there.
    pub fn remove(&mut self, deadline: u64, key: K) -> bool {
        let gone = self.set.remove(&(deadline, key));
        if gone && deadline <= self.first {
            self.first = self.set.first().map_or(u64::MAX, |&(d, _)| d);
        }
        gone
    }

    /// The earliest pair if its deadline is at or before `now`, removed.
    pub fn pop_due(&mut self, now: u64) -> Option<(u64, K)> {
        if self.first > now {
            return None;
        }
        let due = self.set.pop_first();
        self.first = self.set.first().map_or(u64::MAX, |&(d, _)| d);
        due
    }

    pub fn iter(&self) -> impl Iterator<Item = &(u64, K)> {
        self.set.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    #[test]
    fn first_follows_inserts_and_removals() {
        let mut d = Deadlines::new();
        assert_eq!((d.first(), d.is_empty()), (u64::MAX, true));
        assert!(d.insert(30, 'a'));
        assert!(d.insert(10, 'b'));
        assert!(d.insert(20, 'c'));
        assert!(!d.insert(20, 'c'), "the same pair twice");
        assert_eq!((d.first(), d.len()), (10, 3));
        assert!(!d.remove(10, 'a'), "a pair that is not there");
        assert_eq!(d.first(), 10);
        assert!(d.remove(20, 'c'));
        assert_eq!(d.first(), 10, "a later one removed");
        assert!(d.remove(10, 'b'));
        assert_eq!(d.first(), 30, "the first one removed");
        assert!(d.remove(30, 'a'));
        assert_eq!(d.first(), u64::MAX);
    }

    #[test]
    fn equal_deadlines_keep_first_until_the_last_goes() {
        let mut d = Deadlines::new();
        d.insert(5, 1u32);
        d.insert(5, 2u32);
        d.insert(9, 3u32);
        d.remove(5, 1);
        assert_eq!(d.first(), 5);
        d.remove(5, 2);
        assert_eq!(d.first(), 9);
    }

    #[test]
    fn pop_due_takes_only_what_is_due_in_order() {
        let mut d = Deadlines::new();
        for (t, k) in [(40, 'w'), (10, 'x'), (30, 'y'), (10, 'z')] {
            d.insert(t, k);
        }
        let mut got = Vec::new();
        while let Some(p) = d.pop_due(30) {
            got.push(p);
        }
        assert_eq!(got, [(10, 'x'), (10, 'z'), (30, 'y')]);
        assert_eq!((d.first(), d.len()), (40, 1));
        assert_eq!(d.pop_due(39), None);
        assert_eq!(d.pop_due(u64::MAX), Some((40, 'w')));
        assert_eq!((d.first(), d.pop_due(u64::MAX)), (u64::MAX, None));
    }

    /// Against a plain set under a pseudo-random mix of operations.
    #[test]
    fn first_matches_a_model() {
        let mut d = Deadlines::new();
        let mut model = BTreeSet::new();
        let mut x = 0x1234_5678_9abc_def0u64;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let (t, k) = (x % 64, (x >> 8) % 8);
            match (x >> 16) % 3 {
                0 => assert_eq!(d.insert(t, k), model.insert((t, k))),
                1 => assert_eq!(d.remove(t, k), model.remove(&(t, k))),
                _ => {
                    let now = (x >> 24) % 64;
                    let want = model.first().copied().filter(|&(t, _)| t <= now);
                    if want.is_some() {
                        model.pop_first();
                    }
                    assert_eq!(d.pop_due(now), want);
                }
            }
            assert_eq!(d.first(), model.first().map_or(u64::MAX, |&(t, _)| t));
            assert_eq!(d.len(), model.len());
        }
    }
}
