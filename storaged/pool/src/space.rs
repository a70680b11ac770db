//! The space map: which byte ranges of the data region are allocated.
//!
//! In memory it is the set of free extents (first fit); on disk (in the MOS)
//! the condensed list of allocated extents, rewritten each transaction group.
//! Frees made in the open group are held back ([`SpaceMap::defer_free`])
//! and return to the free set only after the group's uberblock is durable
//! ([`SpaceMap::release_deferred`]): until then the last committed group may
//! still point at them.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpaceMap {
    start: u64,
    end: u64,
    /// start -> length, disjoint, never adjacent.
    free: BTreeMap<u64, u64>,
    /// start -> length, disjoint: freed in the open group.
    deferred: BTreeMap<u64, u64>,
    /// While [`SpaceMap::hold`] holds: start -> length, disjoint, freed by
    /// groups committed since, kept out of the free set (a scrub under way
    /// still reads them as the group it walks had them).
    held: Option<BTreeMap<u64, u64>>,
}

impl SpaceMap {
    /// Everything in `[start, end)` free.
    pub fn new(start: u64, end: u64) -> Self {
        let mut free = BTreeMap::new();
        if end > start {
            free.insert(start, end - start);
        }
        SpaceMap { start, end, free, deferred: BTreeMap::new(), held: None }
    }

    /// From the allocated extents recorded on disk; `None` if they overlap
    /// or fall outside the region.
    pub fn from_allocated(start: u64, end: u64, allocated: &[(u64, u64)]) -> Option<Self> {
        let mut m = SpaceMap::new(start, end);
        for &(off, len) in allocated {
            if !m.claim(off, len) {
                return None;
            }
        }
        Some(m)
    }

    /// The allocated extents, sorted and coalesced (what goes on disk). The
    /// deferred frees are still allocated.
    pub fn allocated(&self) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        let mut at = self.start;
        for (&s, &l) in &self.free {
            if s > at {
                out.push((at, s - at));
            }
            at = s + l;
        }
        if self.end > at {
            out.push((at, self.end - at));
        }
        out
    }

    /// How many free extents there are (the allocated ones number at
    /// most one more).
    pub fn free_extents(&self) -> usize {
        self.free.len()
    }

    pub fn free_bytes(&self) -> u64 {
        self.free.values().sum()
    }

    pub fn size(&self) -> u64 {
        self.end - self.start
    }

    /// First fit.
    pub fn alloc(&mut self, len: u64) -> Option<u64> {
        let (&s, &l) = self.free.iter().find(|&(_, &l)| l >= len)?;
        self.free.remove(&s);
        if l > len {
            self.free.insert(s + len, l - len);
        }
        Some(s)
    }

    /// Marks `[off, off+len)` allocated; false if any of it is not free.
    pub fn claim(&mut self, off: u64, len: u64) -> bool {
        let Some((&s, &l)) = self.free.range(..=off).next_back() else { return false };
        let Some(end) = off.checked_add(len) else { return false };
        if len == 0 || end > s + l {
            return false;
        }
        self.free.remove(&s);
        if off > s {
            self.free.insert(s, off - s);
        }
        if s + l > end {
            self.free.insert(end, s + l - end);
        }
        true
    }

    /// Frees at once (a block written in the open group and never committed).
    pub fn free_now(&mut self, off: u64, len: u64) {
        let mut s = off;
        let mut l = len;
        if let Some((&ps, &pl)) = self.free.range(..off).next_back() {
            debug_assert!(ps + pl <= off, "double free at {off:#x}");
            if ps + pl == off {
                self.free.remove(&ps);
                s = ps;
                l += pl;
            }
        }
        if let Some(&nl) = self.free.get(&(off + len)) {
            self.free.remove(&(off + len));
            l += nl;
        }
        self.free.insert(s, l);
    }

    /// Whether `[off, off+len)` lies in the region and none of it is free.
    pub fn is_allocated(&self, off: u64, len: u64) -> bool {
        let Some(end) = off.checked_add(len) else {
            return false;
        };
        len > 0
            && off >= self.start
            && end <= self.end
            && !self
                .free
                .range(..end)
                .next_back()
                .is_some_and(|(&s, &l)| s + l > off)
    }

    pub fn is_free(&self, off: u64, len: u64) -> bool {
        self.free.range(..=off).next_back().is_some_and(|(&s, &l)| off + len <= s + l)
    }

    /// Frees after the open group commits. Refuses (false, nothing
    /// changed) a range that is not wholly allocated, or already freed in
    /// this group: a hostile or damaged pool names such blocks, and freeing
    /// them would let two blocks share space.
    #[must_use]
    pub fn defer_free(&mut self, off: u64, len: u64) -> bool {
        let Some(end) = off.checked_add(len) else { return false };
        let overlaps = |m: &BTreeMap<u64, u64>| m.range(..end).next_back().is_some_and(|(&s, &l)| s + l > off);
        let held = self.held.as_ref().is_some_and(overlaps);
        if len == 0 || off < self.start || end > self.end || overlaps(&self.free) || overlaps(&self.deferred) || held {
            return false;
        }
        self.deferred.insert(off, len);
        true
    }

    /// The open group committed: its frees become free (while held: held).
    pub fn release_deferred(&mut self) {
        for (o, l) in core::mem::take(&mut self.deferred) {
            match &mut self.held {
                Some(h) => insert_coalesced(h, o, l),
                None => self.free_now(o, l),
            }
        }
    }

    /// From now on frees of committed groups stay allocated in memory (not
    /// on disk: [`SpaceMap::unhold`] on a copy gives what a commit writes)
    /// until [`SpaceMap::unhold`]: nothing the last committed group holds
    /// is written over meanwhile.
    pub fn hold(&mut self) {
        if self.held.is_none() {
            self.held = Some(BTreeMap::new());
        }
    }

    /// Ends a [`SpaceMap::hold`]: what it held is free.
    pub fn unhold(&mut self) {
        for (o, l) in self.held.take().unwrap_or_default() {
            self.free_now(o, l);
        }
    }

    /// Bytes a hold keeps from the free set.
    pub fn held_bytes(&self) -> u64 {
        self.held.as_ref().map_or(0, |h| h.values().sum())
    }

    /// The extents a hold keeps (adjacent ones merged): its memory.
    pub fn held_extents(&self) -> usize {
        self.held.as_ref().map_or(0, BTreeMap::len)
    }

    pub fn deferred_bytes(&self) -> u64 {
        self.deferred.values().sum()
    }

    /// The ranges freed in the open group, sorted.
    pub fn deferred(&self) -> Vec<(u64, u64)> {
        self.deferred.iter().map(|(&o, &l)| (o, l)).collect()
    }
}

/// Adds `[off, off+len)` (overlapping none of them) to `m`, merged with
/// the extents it touches.
fn insert_coalesced(m: &mut BTreeMap<u64, u64>, off: u64, len: u64) {
    let (mut s, mut l) = (off, len);
    if let Some((&ps, &pl)) = m.range(..off).next_back()
        && ps + pl == off
    {
        m.remove(&ps);
        s = ps;
        l += pl;
    }
    if let Some(nl) = m.remove(&(off + len)) {
        l += nl;
    }
    m.insert(s, l);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alloc_free_coalesce_round_trip() {
        let mut m = SpaceMap::new(0x1000, 0x11000);
        let a = m.alloc(0x2000).unwrap();
        let b = m.alloc(0x1000).unwrap();
        let c = m.alloc(0x3000).unwrap();
        assert_eq!((a, b, c), (0x1000, 0x3000, 0x4000));
        m.free_now(b, 0x1000);
        assert_eq!(m.allocated(), [(0x1000, 0x2000), (0x4000, 0x3000)]);
        let back = SpaceMap::from_allocated(0x1000, 0x11000, &m.allocated()).unwrap();
        assert_eq!(back.free, m.free);
        m.free_now(a, 0x2000);
        m.free_now(c, 0x3000);
        assert_eq!(m.allocated(), []);
        assert_eq!(m.free.len(), 1);
        assert!(SpaceMap::from_allocated(0x1000, 0x11000, &[(0x1000, 0x2000), (0x2000, 0x1000)]).is_none());
        assert!(SpaceMap::from_allocated(0x1000, 0x11000, &[(0x10000, 0x2000)]).is_none());
    }

    /// Regression (found by tests/fuzz.rs): a forged block pointer to free
    /// space, or one named twice, was freed anyway: a debug assertion
    /// panicked, a release build merged overlapping free extents.
    #[test]
    fn freeing_what_is_not_allocated_is_refused() {
        let mut m = SpaceMap::new(0x1000, 0x11000);
        let a = m.alloc(0x2000).unwrap();
        assert!(!m.defer_free(0x8000, 0x1000), "free space");
        assert!(!m.defer_free(a + 0x1000, 0x2000), "runs into free space");
        assert!(!m.defer_free(0, 0x1000), "outside the region");
        assert!(!m.defer_free(a, 0), "empty");
        assert!(!m.defer_free(u64::MAX - 10, 0x1000), "overflow");
        assert!(m.defer_free(a, 0x1000));
        assert!(!m.defer_free(a, 0x1000), "freed twice in a group");
        assert!(!m.defer_free(a, 0x2000), "overlaps a deferred free");
        assert!(m.defer_free(a + 0x1000, 0x1000));
        m.release_deferred();
        assert_eq!(m.allocated(), []);
        assert_eq!(m.free.len(), 1);
    }

    #[test]
    fn a_hold_keeps_committed_frees_until_it_ends() {
        let mut m = SpaceMap::new(0, 0x4000);
        let a = m.alloc(0x2000).unwrap();
        let b = m.alloc(0x2000).unwrap();
        m.hold();
        // Freed in two groups, held as one extent.
        assert!(m.defer_free(a + 0x1000, 0x1000));
        m.release_deferred();
        assert!(m.defer_free(a, 0x1000));
        m.release_deferred();
        assert_eq!((m.held_bytes(), m.held_extents()), (0x2000, 1));
        assert_eq!(m.alloc(0x1000), None, "held space is not handed out");
        assert!(!m.defer_free(a, 0x1000), "a held range freed again");
        // What a commit writes: the held range is free there.
        let mut on_disk = m.clone();
        on_disk.unhold();
        assert_eq!(on_disk.allocated(), [(b, 0x2000)]);
        m.unhold();
        assert_eq!(m.held_bytes(), 0);
        assert_eq!(m.alloc(0x2000), Some(a));
    }

    #[test]
    fn deferred_frees_stay_allocated_until_released() {
        let mut m = SpaceMap::new(0, 0x4000);
        let a = m.alloc(0x4000).unwrap();
        assert!(m.defer_free(a, 0x4000));
        assert_eq!(m.alloc(0x1000), None);
        assert_eq!(m.allocated(), [(0, 0x4000)]);
        m.release_deferred();
        assert_eq!(m.alloc(0x1000), Some(0));
    }
}
