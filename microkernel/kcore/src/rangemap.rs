//! Page ranges mapped into an address space (a process's or a guest's), one
//! entry per `map` call rather than one per page: a 256 MiB guest is a few
//! dozen entries, not 65536, so the kernel heap a process can make the
//! kernel spend grows with its calls, not with the memory it maps.
//!
//! Keys are page-aligned start addresses; each entry covers `pages` pages
//! and carries a value (the frame object mapped there) plus the page offset
//! into that frame where the entry starts, so partial unmaps can split it.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

const PAGE: u64 = 4096;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry<V> {
    pub pages: u64,
    pub value: V,
    /// The page index in the mapped object of this entry's first page.
    pub first_page: u64,
}

/// A piece taken out by [`RangeMap::remove`]: `pages` pages at `start`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Removed<V> {
    pub start: u64,
    pub pages: u64,
    pub value: V,
}

#[derive(Clone, Debug, Default)]
pub struct RangeMap<V> {
    entries: BTreeMap<u64, Entry<V>>,
}

fn end_of(start: u64, pages: u64) -> u64 {
    start.saturating_add(pages.saturating_mul(PAGE))
}

impl<V: Copy> RangeMap<V> {
    pub const fn new() -> Self {
        Self { entries: BTreeMap::new() }
    }

    /// Whether any page of `[start, start + pages pages)` is mapped.
    pub fn overlaps(&self, start: u64, pages: u64) -> bool {
        if pages == 0 {
            return false;
        }
        let end = end_of(start, pages);
        if self.entries.range(start..end).next().is_some() {
            return true;
        }
        self.entries.range(..start).next_back().is_some_and(|(&s, e)| end_of(s, e.pages) > start)
    }

    /// Records `pages` pages at `start` (the caller checked
    /// [`Self::overlaps`]).
    pub fn insert(&mut self, start: u64, pages: u64, value: V) {
        if pages > 0 {
            self.entries.insert(start, Entry { pages, value, first_page: 0 });
        }
    }

    /// The value mapped at `addr`, if any.
    pub fn get(&self, addr: u64) -> Option<V> {
        let (&s, e) = self.entries.range(..=addr).next_back()?;
        (addr < end_of(s, e.pages)).then_some(e.value)
    }

    /// Takes out whatever lies in `[start, start + pages pages)`, splitting
    /// entries that stick out on either side; returns the pieces removed.
    pub fn remove(&mut self, start: u64, pages: u64) -> Vec<Removed<V>> {
        let end = end_of(start, pages);
        let mut out = Vec::new();
        // Nothing to take (an empty range inside an entry must not split it:
        // each split is one more entry the caller pays for).
        if pages == 0 {
            return out;
        }
        // An entry that begins before `start` and reaches into the range.
        if let Some((&s, &e)) = self.entries.range(..start).next_back()
            && end_of(s, e.pages) > start
        {
            let head = (start - s) / PAGE;
            self.entries.insert(s, Entry { pages: head, ..e });
            self.entries.insert(start, Entry { pages: e.pages - head, value: e.value, first_page: e.first_page + head });
        }
        let keys: Vec<u64> = self.entries.range(start..end).map(|(&k, _)| k).collect();
        for k in keys {
            let Some(e) = self.entries.remove(&k) else { continue };
            let e_end = end_of(k, e.pages);
            if e_end > end {
                let inside = (end - k) / PAGE;
                self.entries.insert(end, Entry { pages: e.pages - inside, value: e.value, first_page: e.first_page + inside });
                out.push(Removed { start: k, pages: inside, value: e.value });
            } else {
                out.push(Removed { start: k, pages: e.pages, value: e.value });
            }
        }
        out
    }

    /// Whether [`Self::remove`] of `[start, start + pages pages)` would
    /// leave one more entry than before: the range lies strictly inside
    /// one entry, which splits in two around it. (Every other removal
    /// keeps or lowers the count, so a caller that charges per entry
    /// charges one more only then.)
    pub fn splits(&self, start: u64, pages: u64) -> bool {
        if pages == 0 {
            return false;
        }
        let end = end_of(start, pages);
        self.entries.range(..start).next_back().is_some_and(|(&s, e)| s < start && end_of(s, e.pages) > end)
    }

    /// Every entry's start and length.
    pub fn ranges(&self) -> Vec<(u64, u64)> {
        self.entries.iter().map(|(&s, e)| (s, e.pages)).collect()
    }

    /// The start and length of every entry whose value `pick` accepts (the
    /// mappings made through a capability that is being revoked).
    pub fn ranges_where(&self, mut pick: impl FnMut(&V) -> bool) -> Vec<(u64, u64)> {
        self.entries.iter().filter(|(_, e)| pick(&e.value)).map(|(&s, e)| (s, e.pages)).collect()
    }

    /// Changes values in place (ranges stay as they are).
    pub fn update_values(&mut self, mut change: impl FnMut(&mut V)) {
        for e in self.entries.values_mut() {
            change(&mut e.value);
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_found_and_changed_by_value() {
        let mut m = RangeMap::new();
        m.insert(0x10000, 4, 'a');
        m.insert(0x20000, 1, 'b');
        m.insert(0x30000, 2, 'a');
        assert_eq!(m.ranges_where(|&v| v == 'a'), [(0x10000, 4), (0x30000, 2)]);
        m.update_values(|v| if *v == 'a' { *v = 'c' });
        assert_eq!(m.ranges_where(|&v| v == 'a'), []);
        assert_eq!(m.ranges_where(|&v| v == 'c'), [(0x10000, 4), (0x30000, 2)]);
        assert_eq!(m.get(0x20000), Some('b'));
    }

    #[test]
    fn overlap_checks_see_entries_starting_before() {
        let mut m = RangeMap::new();
        m.insert(0x10000, 4, 'a');
        assert!(m.overlaps(0x12000, 1));
        assert!(m.overlaps(0xf000, 2));
        assert!(!m.overlaps(0xf000, 1));
        assert!(!m.overlaps(0x14000, 10));
        assert_eq!(m.get(0x13fff), Some('a'));
        assert_eq!(m.get(0x14000), None);
    }

    #[test]
    fn partial_removal_splits_and_returns_pieces() {
        let mut m = RangeMap::new();
        m.insert(0x10000, 8, 'a');
        m.insert(0x20000, 2, 'b');
        let r = m.remove(0x12000, 2);
        assert_eq!(r, [Removed { start: 0x12000, pages: 2, value: 'a' }]);
        assert_eq!(m.ranges(), [(0x10000, 2), (0x14000, 4), (0x20000, 2)]);
        assert_eq!(m.entries[&0x14000].first_page, 4);
        // Across two entries and a gap, clipping the second.
        let r = m.remove(0x16000, 0xb);
        assert_eq!(r, [Removed { start: 0x16000, pages: 2, value: 'a' }, Removed { start: 0x20000, pages: 1, value: 'b' }]);
        assert_eq!(m.ranges(), [(0x10000, 2), (0x14000, 2), (0x21000, 1)]);
        assert!(m.remove(0x40000, 100).is_empty());
        let r = m.remove(0, u64::MAX);
        assert_eq!(r.iter().map(|p| p.pages).sum::<u64>(), 5);
        assert!(m.is_empty());
    }

    #[test]
    fn splits_is_exactly_when_removal_adds_an_entry() {
        let mut m = RangeMap::new();
        m.insert(0x10000, 8, 'a');
        m.insert(0x20000, 2, 'b');
        for start in (0xe000..0x24000).step_by(0x1000) {
            for pages in 0..12 {
                let mut copy = m.clone();
                let before = copy.len();
                copy.remove(start, pages);
                assert_eq!(m.splits(start, pages), copy.len() > before, "remove({start:#x}, {pages})");
                assert!(copy.len() <= before + 1);
            }
        }
    }

    #[test]
    fn model_check_against_a_page_set() {
        let mut m = RangeMap::new();
        let mut pages = alloc::collections::BTreeMap::new();
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for i in 0..3000u32 {
            let start = (next() % 64) * PAGE;
            let n = next() % 9;
            if next() % 2 == 0 {
                if !m.overlaps(start, n) {
                    assert!((0..n).all(|p| !pages.contains_key(&(start + p * PAGE))));
                    m.insert(start, n, i);
                    for p in 0..n {
                        pages.insert(start + p * PAGE, i);
                    }
                } else {
                    assert!((0..n).any(|p| pages.contains_key(&(start + p * PAGE))));
                }
            } else {
                let removed: u64 = m.remove(start, n).iter().map(|r| r.pages).sum();
                let before = pages.len();
                for p in 0..n {
                    pages.remove(&(start + p * PAGE));
                }
                assert_eq!(removed as usize, before - pages.len());
            }
            for a in 0..64 {
                assert_eq!(m.get(a * PAGE), pages.get(&(a * PAGE)).copied());
            }
        }
    }
}
