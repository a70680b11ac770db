//! The physical frame allocator: one bit per 4 KiB frame of the free ranges
//! that [`crate::memmap::FreeMap`] yields at boot. Everything above it (page
//! tables, kernel heap, untyped memory handed to processes, DMA buffers)
//! comes from here.
//!
//! The kernel carves the bitmap's storage out of free memory itself (sized by
//! [`bitmap_words`]) and then [`FrameAllocator::reserve`]s it. The ranges are
//! packed one after the other in bit space, so holes in the memory map cost
//! no bits. Not thread-safe by itself: the kernel wraps it in a lock.
//!
//! A second bitmap says which free frames are known to hold zeros: an idle
//! CPU zeroes free frames ahead of need ([`FrameAllocator::zero_some`]),
//! and an allocation then clears only the frames that are not
//! ([`FrameAllocator::take_dirty`]), so a VM's RAM or a new process's
//! pages come mostly without a memset under the kernel's lock. A frame's
//! zero bit is set only while it is free and holds zeros: freeing or
//! reserving a frame clears it.

use core::ops::Range;

use crate::memmap::PAGE_SIZE;

/// Free ranges the allocator can manage; the kernel's `FreeMap<64>` fits.
pub const MAX_RANGES: usize = 64;

const PAGE_SHIFT: u32 = 12;

/// Why the allocator refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// The bitmap storage is shorter than [`bitmap_words`] says it must be.
    StorageTooSmall { needed_words: usize, got_words: usize },
    /// More non-empty ranges than [`MAX_RANGES`].
    TooManyRanges,
    /// Ranges unsorted, overlapping, reversed or not page-aligned.
    BadRanges,
    /// The address is not 4 KiB aligned.
    Unaligned,
    /// The address is not in any managed range.
    NotManaged,
    /// The frame is already free: a double free, or a frame never handed out.
    DoubleFree,
}

/// How many `u64` words the allocator's two bitmaps (free, and known
/// zero) for `ranges` need.
pub fn bitmap_words(ranges: &[(u64, u64)]) -> usize {
    let pages: u64 =
        ranges.iter().map(|&(s, e)| e.saturating_sub(s) >> PAGE_SHIFT).fold(0, u64::saturating_add);
    2 * pages.div_ceil(64) as usize
}

/// One managed range: `pages` frames from `start`, bits from `first_bit`.
#[derive(Clone, Copy, Debug, Default)]
struct Span {
    start: u64,
    pages: usize,
    first_bit: usize,
}

impl Span {
    fn end(&self) -> u64 {
        self.start + ((self.pages as u64) << PAGE_SHIFT)
    }
}

/// A bitmap frame allocator; a set bit is a free frame.
pub struct FrameAllocator<'a> {
    spans: [Span; MAX_RANGES],
    span_count: usize,
    bits: &'a mut [u64],
    /// A set bit: the frame is free and holds zeros (a subset of `bits`).
    zeroed: &'a mut [u64],
    /// Set bits in `zeroed`.
    zeroed_count: usize,
    /// Where [`FrameAllocator::zero_some`] looks first.
    zero_hint: usize,
    total: usize,
    free: usize,
    /// A word that probably has a free bit: where the last alloc or free was,
    /// so the common alloc looks at one word instead of scanning.
    hint: usize,
}

impl<'a> FrameAllocator<'a> {
    /// Manages `ranges` (sorted, disjoint, page-aligned, as
    /// `FreeMap::ranges()` gives them), all frames free, with `storage` as
    /// the bitmap. Storage beyond [`bitmap_words`] is left unused.
    pub fn new(ranges: &[(u64, u64)], storage: &'a mut [u64]) -> Result<Self, FrameError> {
        let mut spans = [Span::default(); MAX_RANGES];
        let mut span_count = 0;
        let mut total = 0usize;
        let mut prev_end = 0;
        for &(start, end) in ranges {
            if !start.is_multiple_of(PAGE_SIZE)
                || !end.is_multiple_of(PAGE_SIZE)
                || end < start
                || start < prev_end
            {
                return Err(FrameError::BadRanges);
            }
            prev_end = end;
            if start == end {
                continue;
            }
            if span_count == MAX_RANGES {
                return Err(FrameError::TooManyRanges);
            }
            let pages = ((end - start) >> PAGE_SHIFT) as usize;
            spans[span_count] = Span { start, pages, first_bit: total };
            span_count += 1;
            total += pages;
        }
        let words = total.div_ceil(64);
        let needed_words = 2 * words;
        if storage.len() < needed_words {
            return Err(FrameError::StorageTooSmall { needed_words, got_words: storage.len() });
        }
        let (bits, rest) = storage.split_at_mut(words);
        let zeroed = &mut rest[..words];
        bits.fill(u64::MAX);
        if !total.is_multiple_of(64) {
            // Bits past the last frame read as used forever.
            bits[words - 1] = (1u64 << (total % 64)) - 1;
        }
        // Nothing is known to be zero at boot.
        zeroed.fill(0);
        Ok(Self { spans, span_count, bits, zeroed, zeroed_count: 0, zero_hint: 0, total, free: total, hint: 0 })
    }

    fn spans(&self) -> &[Span] {
        &self.spans[..self.span_count]
    }

    /// The bit of the frame at `phys`, if managed.
    fn bit_of(&self, phys: u64) -> Option<usize> {
        let spans = self.spans();
        let i = spans.partition_point(|s| s.end() <= phys);
        let s = spans.get(i)?;
        (s.start <= phys).then(|| s.first_bit + ((phys - s.start) >> PAGE_SHIFT) as usize)
    }

    fn phys_of(&self, bit: usize) -> u64 {
        let spans = self.spans();
        let s = &spans[spans.partition_point(|s| s.first_bit + s.pages <= bit)];
        s.start + (((bit - s.first_bit) as u64) << PAGE_SHIFT)
    }

    fn is_set(&self, bit: usize) -> bool {
        self.bits[bit / 64] & (1 << (bit % 64)) != 0
    }

    /// Calls `f(word, mask, first_bit_of_word)` for each word covering bits
    /// `[bit, bit + len)`, stopping at the first `Some`.
    fn each_word<R>(
        &mut self,
        bit: usize,
        len: usize,
        mut f: impl FnMut(&mut u64, u64, usize) -> Option<R>,
    ) -> Option<R> {
        let end = bit + len;
        let mut b = bit;
        while b < end {
            let (w, off) = (b / 64, b % 64);
            let n = (64 - off).min(end - b);
            let mask = if n == 64 { u64::MAX } else { ((1u64 << n) - 1) << off };
            if let Some(r) = f(&mut self.bits[w], mask, w * 64) {
                return Some(r);
            }
            b += n;
        }
        None
    }

    /// A free 4 KiB frame's physical address (contents not cleared).
    pub fn alloc(&mut self) -> Option<u64> {
        if self.free == 0 {
            return None;
        }
        let n = self.bits.len();
        for k in 0..n {
            let w = (self.hint + k) % n;
            let word = self.bits[w];
            if word != 0 {
                let b = word.trailing_zeros() as usize;
                self.bits[w] &= !(1 << b);
                self.free -= 1;
                self.hint = w;
                return Some(self.phys_of(w * 64 + b));
            }
        }
        None
    }

    /// `pages` physically contiguous frames starting at a multiple of
    /// `align_pages` frames (0 counts as 1), for DMA buffers, huge pages and
    /// guest RAM. First fit among frames known to hold zeros (so that the
    /// caller has the least to clear, see [`Self::take_dirty`]), else first
    /// fit among all free ones; scanning, meant for setup paths, not hot
    /// ones.
    pub fn alloc_contiguous(&mut self, pages: usize, align_pages: usize) -> Option<u64> {
        if pages == 0 || pages > self.free {
            return None;
        }
        let align = (align_pages.max(1) as u64).checked_mul(PAGE_SIZE)?;
        let bytes = (pages as u64).checked_mul(PAGE_SIZE)?;
        let found = if pages <= self.zeroed_count {
            self.first_fit(&*self.zeroed, pages, align, bytes)
        } else {
            None
        };
        let (cand, bit) = match found {
            Some(f) => f,
            None => self.first_fit(&*self.bits, pages, align, bytes)?,
        };
        self.each_word(bit, pages, |word, mask, _| {
            *word &= !mask;
            None::<()>
        });
        self.free -= pages;
        Some(cand)
    }

    /// The first window of `pages` frames (`bytes` long, aligned to
    /// `align` bytes) whose bits are all set in `map` (the free bitmap, or
    /// the known-zero one): its address and first bit.
    fn first_fit(&self, map: &[u64], pages: usize, align: u64, bytes: u64) -> Option<(u64, usize)> {
        for s in self.spans() {
            let mut cand = s.start.checked_next_multiple_of(align)?;
            while cand.checked_add(bytes).is_some_and(|end| end <= s.end()) {
                let bit = s.first_bit + ((cand - s.start) >> PAGE_SHIFT) as usize;
                // The last frame of the window that `map` does not have.
                let mut used = None;
                let (mut b, end) = (bit, bit + pages);
                while b < end {
                    let (w, off) = (b / 64, b % 64);
                    let n = (64 - off).min(end - b);
                    let mask = if n == 64 { u64::MAX } else { ((1u64 << n) - 1) << off };
                    let u = !map[w] & mask;
                    if u != 0 {
                        used = Some(w * 64 + (63 - u.leading_zeros()) as usize);
                    }
                    b += n;
                }
                match used {
                    None => return Some((cand, bit)),
                    // Restart past the last missing frame in the window.
                    Some(u) => match self
                        .phys_of(u)
                        .checked_add(PAGE_SIZE)
                        .and_then(|p| p.checked_next_multiple_of(align))
                    {
                        Some(next) => cand = next,
                        None => break,
                    },
                }
            }
        }
        None
    }

    /// Returns one frame.
    pub fn free(&mut self, phys: u64) -> Result<(), FrameError> {
        self.free_contiguous(phys, 1)
    }

    /// Returns `pages` frames from `phys`. Checked as a whole first: on an
    /// error nothing is freed.
    pub fn free_contiguous(&mut self, phys: u64, pages: usize) -> Result<(), FrameError> {
        if !phys.is_multiple_of(PAGE_SIZE) {
            return Err(FrameError::Unaligned);
        }
        for k in 0..pages as u64 {
            let p = phys.checked_add(k << PAGE_SHIFT).ok_or(FrameError::NotManaged)?;
            let bit = self.bit_of(p).ok_or(FrameError::NotManaged)?;
            if self.is_set(bit) {
                return Err(FrameError::DoubleFree);
            }
        }
        for k in 0..pages as u64 {
            let bit = self.bit_of(phys + (k << PAGE_SHIFT)).expect("checked above");
            self.bits[bit / 64] |= 1 << (bit % 64);
            // What it holds now is whatever its last owner left.
            self.clear_zeroed(bit);
            self.hint = bit / 64;
        }
        self.free += pages;
        Ok(())
    }

    /// Marks every managed frame touching `range` (bytes, rounded outwards)
    /// as used, e.g. the bitmap's own storage or a region found to be
    /// firmware's after all. Frames outside the managed ranges are ignored.
    /// Returns how many frames were taken.
    pub fn reserve(&mut self, range: Range<u64>) -> usize {
        let start = range.start & !(PAGE_SIZE - 1);
        let end = range.end.checked_next_multiple_of(PAGE_SIZE).unwrap_or(!(PAGE_SIZE - 1));
        let mut taken = 0;
        for i in 0..self.span_count {
            let s = self.spans[i];
            let (lo, hi) = (start.max(s.start), end.min(s.end()));
            if lo >= hi {
                continue;
            }
            let bit = s.first_bit + ((lo - s.start) >> PAGE_SHIFT) as usize;
            let len = ((hi - lo) >> PAGE_SHIFT) as usize;
            self.each_word(bit, len, |word, mask, _| {
                taken += (*word & mask).count_ones() as usize;
                *word &= !mask;
                None::<()>
            });
            for b in bit..bit + len {
                self.clear_zeroed(b);
            }
        }
        self.free -= taken;
        taken
    }

    fn clear_zeroed(&mut self, bit: usize) {
        let (w, m) = (bit / 64, 1u64 << (bit % 64));
        if self.zeroed[w] & m != 0 {
            self.zeroed[w] &= !m;
            self.zeroed_count -= 1;
        }
    }

    /// For `pages` frames from `phys` just allocated ([`Self::alloc`],
    /// [`Self::alloc_contiguous`]): calls `dirty(start, count)` for each
    /// run of them not known to hold zeros (the caller clears those), and
    /// forgets that the others were zero (they are in use now).
    pub fn take_dirty(&mut self, phys: u64, pages: usize, mut dirty: impl FnMut(u64, usize)) {
        let mut run: Option<(u64, usize)> = None;
        for k in 0..pages as u64 {
            let p = phys + (k << PAGE_SHIFT);
            let clean = match self.bit_of(p) {
                Some(bit) => {
                    let was = self.zeroed[bit / 64] & (1 << (bit % 64)) != 0;
                    self.clear_zeroed(bit);
                    was
                }
                None => false,
            };
            run = match (run, clean) {
                (Some((s, n)), false) => Some((s, n + 1)),
                (None, false) => Some((p, 1)),
                (Some((s, n)), true) => {
                    dirty(s, n);
                    None
                }
                (None, true) => None,
            };
        }
        if let Some((s, n)) = run {
            dirty(s, n);
        }
    }

    /// Zeroes up to one bitmap word's worth (64) of free frames not known
    /// to hold zeros, through `zero(phys)` for each, and marks them zeroed;
    /// returns how many. Stops at 0 once `limit` frames are known zero (a
    /// bound on the work an idle CPU does ahead of need). The frames stay
    /// free throughout (the caller holds the allocator's lock).
    pub fn zero_some(&mut self, limit: usize, mut zero: impl FnMut(u64)) -> usize {
        if self.zeroed_count >= limit.min(self.free) {
            return 0;
        }
        let n = self.bits.len();
        for k in 0..n {
            let w = (self.zero_hint + k) % n;
            let dirty = self.bits[w] & !self.zeroed[w];
            if dirty == 0 {
                continue;
            }
            self.zero_hint = w;
            let mut left = dirty;
            while left != 0 {
                let b = left.trailing_zeros() as usize;
                left &= left - 1;
                zero(self.phys_of(w * 64 + b));
            }
            self.zeroed[w] |= dirty;
            let count = dirty.count_ones() as usize;
            self.zeroed_count += count;
            return count;
        }
        0
    }

    /// Free frames known to hold zeros.
    pub fn zeroed_frames(&self) -> usize {
        self.zeroed_count
    }

    /// Whether the frame at `phys` is managed and free.
    pub fn is_free(&self, phys: u64) -> bool {
        phys.is_multiple_of(PAGE_SIZE) && self.bit_of(phys).is_some_and(|b| self.is_set(b))
    }

    /// Frames available now, for budgets and for the memory report.
    pub fn free_frames(&self) -> usize {
        self.free
    }

    /// Frames managed, free or not.
    pub fn total_frames(&self) -> usize {
        self.total
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::collections::BTreeSet;
    use alloc::vec;
    use alloc::vec::Vec;

    const MIB: u64 = 0x10_0000;

    /// Three ranges with holes, sizes not multiples of 64 frames.
    const HOLEY: [(u64, u64); 3] = [
        (MIB, MIB + 0x5000),
        (2 * MIB, 3 * MIB + 0x3000),
        (0x1_0000_0000, 0x1_0000_0000 + 70 * 0x1000),
    ];

    fn pages(ranges: &[(u64, u64)]) -> usize {
        ranges.iter().map(|(s, e)| ((e - s) / PAGE_SIZE) as usize).sum()
    }

    #[test]
    fn bitmap_size() {
        // Two bitmaps: free, and known zero.
        assert_eq!(bitmap_words(&[]), 0);
        assert_eq!(bitmap_words(&[(0, 64 * 4096)]), 2);
        assert_eq!(bitmap_words(&[(0, 65 * 4096)]), 4);
        assert_eq!(bitmap_words(&HOLEY), 2 * pages(&HOLEY).div_ceil(64));
    }

    /// Frames known zero: only free ones, found by `zero_some`, forgotten
    /// when allocated (`take_dirty` names the rest) or freed again.
    #[test]
    fn zeroed_frames_are_tracked_until_allocated_or_freed() {
        let mut st = vec![0u64; bitmap_words(&HOLEY)];
        let mut a = FrameAllocator::new(&HOLEY, &mut st).unwrap();
        let total = pages(&HOLEY);
        assert_eq!(a.zeroed_frames(), 0);
        // A frame in use is never zeroed by the idle work.
        let used = a.alloc().unwrap();
        let mut zeroed = BTreeSet::new();
        while a.zero_some(usize::MAX, |p| assert!(zeroed.insert(p), "{p:#x} zeroed twice")) > 0 {}
        assert_eq!(zeroed.len(), total - 1);
        assert!(!zeroed.contains(&used));
        assert_eq!(a.zeroed_frames(), total - 1);
        assert!(zeroed.iter().all(|&p| a.is_free(p)));
        // Allocated: nothing to clear; the zero marks are gone.
        let p = a.alloc_contiguous(3, 1).unwrap();
        let mut dirty = Vec::new();
        a.take_dirty(p, 3, |s, n| dirty.push((s, n)));
        assert!(dirty.is_empty(), "{dirty:?}");
        assert_eq!(a.zeroed_frames(), total - 4);
        // Freed: dirty again, so the next owner gets it cleared.
        a.free_contiguous(p, 3).unwrap();
        assert_eq!(a.zeroed_frames(), total - 4);
        // The next run comes from frames known zero, not from those.
        let q = a.alloc_contiguous(3, 1).unwrap();
        assert!(q >= p + 3 * PAGE_SIZE, "{q:#x} overlaps the dirty {p:#x}");
        let mut dirty = Vec::new();
        a.take_dirty(q, 3, |s, n| dirty.push((s, n)));
        assert!(dirty.is_empty(), "{dirty:?}");
        // Single frames come first-fit whatever they hold: the one freed
        // is named dirty.
        a.free(used).unwrap();
        let r = a.alloc().unwrap();
        assert_eq!(r, used);
        let mut dirty = Vec::new();
        a.take_dirty(r, 1, |s, n| dirty.push((s, n)));
        assert_eq!(dirty, [(used, 1)]);
        // Runs: a zeroed frame between dirty ones splits them.
        // Zero only the middle one: mark the rest dirty by a fresh free.
        let five = [(MIB, MIB + 5 * PAGE_SIZE)];
        let mut st3 = vec![0u64; bitmap_words(&five)];
        let mut c = FrameAllocator::new(&five, &mut st3).unwrap();
        let all = c.alloc_contiguous(5, 1).unwrap();
        c.free(all + 2 * PAGE_SIZE).unwrap();
        assert_eq!(c.zero_some(usize::MAX, |p| assert_eq!(p, all + 2 * PAGE_SIZE)), 1);
        c.free_contiguous(all, 2).unwrap();
        c.free_contiguous(all + 3 * PAGE_SIZE, 2).unwrap();
        let again = c.alloc_contiguous(5, 1).unwrap();
        assert_eq!(again, all);
        let mut dirty = Vec::new();
        c.take_dirty(again, 5, |s, n| dirty.push((s, n)));
        assert_eq!(dirty, [(all, 2), (all + 3 * PAGE_SIZE, 2)]);
    }

    /// The idle work stops at its bound, and a reserved frame is not
    /// counted as zero.
    #[test]
    fn zeroing_stops_at_the_limit_and_reserve_forgets() {
        let ranges = [(0x10_0000, 0x10_0000 + 256 * PAGE_SIZE)];
        let mut st = vec![0u64; bitmap_words(&ranges)];
        let mut a = FrameAllocator::new(&ranges, &mut st).unwrap();
        let mut n = 0;
        while a.zero_some(100, |_| {}) > 0 {
            n += 1;
        }
        assert!(a.zeroed_frames() >= 100 && a.zeroed_frames() < 100 + 64, "{}", a.zeroed_frames());
        assert_eq!(n, 2);
        let before = a.zeroed_frames();
        assert_eq!(a.reserve(0x10_0000..0x10_0000 + 10 * PAGE_SIZE), 10);
        assert_eq!(a.zeroed_frames(), before - 10);
        // All free frames zero: nothing more to do, whatever the bound.
        while a.zero_some(usize::MAX, |_| {}) > 0 {}
        assert_eq!(a.zeroed_frames(), a.free_frames());
        assert_eq!(a.zero_some(usize::MAX, |_| panic!("nothing is dirty")), 0);
    }

    #[test]
    fn construction_errors() {
        let mut small = [0u64; 1];
        assert_eq!(
            FrameAllocator::new(&HOLEY, &mut small).err(),
            Some(FrameError::StorageTooSmall { needed_words: bitmap_words(&HOLEY), got_words: 1 })
        );
        let mut st = [0u64; 64];
        assert_eq!(
            FrameAllocator::new(&[(0x2000, 0x3000), (0x1000, 0x2000)], &mut st).err(),
            Some(FrameError::BadRanges)
        );
        assert_eq!(
            FrameAllocator::new(&[(0x1000, 0x3000), (0x2000, 0x4000)], &mut st).err(),
            Some(FrameError::BadRanges)
        );
        assert_eq!(
            FrameAllocator::new(&[(0x1000, 0x1800)], &mut st).err(),
            Some(FrameError::BadRanges)
        );
        assert_eq!(
            FrameAllocator::new(&[(0x3000, 0x1000)], &mut st).err(),
            Some(FrameError::BadRanges)
        );
        let many: Vec<(u64, u64)> = (0..65u64).map(|i| (i * 0x2000, i * 0x2000 + 0x1000)).collect();
        assert_eq!(FrameAllocator::new(&many, &mut st).err(), Some(FrameError::TooManyRanges));
        // Empty ranges and an empty map are fine.
        let mut none: [u64; 0] = [];
        let mut a = FrameAllocator::new(&[(0x1000, 0x1000)], &mut none).unwrap();
        assert_eq!((a.total_frames(), a.alloc(), a.alloc_contiguous(1, 1)), (0, None, None));
    }

    #[test]
    fn exhaust_then_free_everything() {
        let mut st = vec![0u64; bitmap_words(&HOLEY)];
        let mut a = FrameAllocator::new(&HOLEY, &mut st).unwrap();
        let total = pages(&HOLEY);
        assert_eq!((a.total_frames(), a.free_frames()), (total, total));
        let mut got = BTreeSet::new();
        while let Some(f) = a.alloc() {
            assert_eq!(f % PAGE_SIZE, 0);
            assert!(HOLEY.iter().any(|&(s, e)| s <= f && f < e), "{f:#x} outside the ranges");
            assert!(got.insert(f), "{f:#x} handed out twice");
        }
        assert_eq!((got.len(), a.free_frames()), (total, 0));
        for &f in &got {
            a.free(f).unwrap();
        }
        assert_eq!(a.free_frames(), total);
        let again = (0..total).map(|_| a.alloc().unwrap()).collect::<BTreeSet<_>>();
        assert_eq!(again, got);
    }

    #[test]
    fn free_errors() {
        let mut st = vec![0u64; bitmap_words(&HOLEY)];
        let mut a = FrameAllocator::new(&HOLEY, &mut st).unwrap();
        let f = a.alloc().unwrap();
        assert_eq!(a.free(f + 8), Err(FrameError::Unaligned));
        assert_eq!(a.free(MIB + 0x5000), Err(FrameError::NotManaged)); // in the hole
        assert_eq!(a.free(0), Err(FrameError::NotManaged));
        assert_eq!(a.free(!0xfff), Err(FrameError::NotManaged));
        assert_eq!(a.free(f), Ok(()));
        assert_eq!(a.free(f), Err(FrameError::DoubleFree));
        assert_eq!(a.free_frames(), a.total_frames());
        // free_contiguous is all or nothing.
        let p = a.alloc_contiguous(4, 1).unwrap();
        a.free(p + 0x2000).unwrap();
        assert_eq!(a.free_contiguous(p, 4), Err(FrameError::DoubleFree));
        assert!(!a.is_free(p) && !a.is_free(p + 0x1000) && a.is_free(p + 0x2000));
        assert_eq!(a.free_contiguous(!0xfff, 4), Err(FrameError::NotManaged));
    }

    #[test]
    fn contiguous_alignment_and_holes() {
        // Starts just past a 2 MiB boundary; one aligned 2 MiB block fits.
        let ranges = [(0x20_1000, 0x60_0000)];
        let mut st = vec![0u64; bitmap_words(&ranges)];
        let mut a = FrameAllocator::new(&ranges, &mut st).unwrap();
        let p = a.alloc_contiguous(512, 512).unwrap();
        assert_eq!(p, 0x40_0000);
        assert!((0..512).all(|k| !a.is_free(p + k * 0x1000)));
        assert_eq!(a.alloc_contiguous(512, 512), None); // no second aligned 2 MiB
        assert_eq!(a.free_frames(), a.total_frames() - 512);
        // Fragment the low part: a used frame every 8 frames.
        let low: Vec<u64> = (0..64).map(|_| a.alloc().unwrap()).collect();
        for (i, &f) in low.iter().enumerate() {
            if i % 8 != 0 {
                a.free(f).unwrap();
            }
        }
        let q = a.alloc_contiguous(7, 1).unwrap();
        assert_eq!(q, 0x20_2000);
        let r = a.alloc_contiguous(8, 1).unwrap();
        // The first run of 8: after the last used frame of the pattern.
        assert_eq!(r, 0x20_1000 + 57 * 0x1000);
        // Runs never cross a hole between ranges.
        let ranges = [(0x10_0000, 0x10_4000), (0x10_5000, 0x10_9000)];
        let mut st = vec![0u64; 2];
        let mut a = FrameAllocator::new(&ranges, &mut st).unwrap();
        assert_eq!(a.alloc_contiguous(5, 1), None);
        assert_eq!(a.alloc_contiguous(4, 4), Some(0x10_0000));
        assert_eq!(a.alloc_contiguous(3, 2), Some(0x10_6000));
        assert_eq!(a.free_frames(), 1);
        a.free_contiguous(0x10_6000, 3).unwrap();
        a.free_contiguous(0x10_0000, 4).unwrap();
        assert_eq!(a.free_frames(), 8);
        assert_eq!(a.alloc_contiguous(1, usize::MAX), None);
        assert_eq!(a.alloc_contiguous(0, 1), None);
    }

    #[test]
    fn reserve_takes_frames_out() {
        let mut st = vec![0u64; bitmap_words(&HOLEY)];
        let mut a = FrameAllocator::new(&HOLEY, &mut st).unwrap();
        // Spans a hole and rounds outwards: 0x10_4000..0x10_5000 is the last
        // frame of range 0; 0x20_0000..0x20_2000 the first two of range 1.
        assert_eq!(a.reserve(MIB + 0x4123..2 * MIB + 0x1001), 3);
        assert_eq!(a.reserve(MIB + 0x4000..MIB + 0x5000), 0); // already taken
        assert_eq!(a.reserve(0..0x1000), 0); // unmanaged
        assert_eq!(a.free_frames(), a.total_frames() - 3);
        let mut seen = Vec::new();
        while let Some(f) = a.alloc() {
            seen.push(f);
        }
        assert!(!seen.iter().any(|&f| f == MIB + 0x4000 || f == 2 * MIB || f == 2 * MIB + 0x1000));
        assert_eq!(a.free(2 * MIB), Ok(())); // a reserved frame can be given back
        assert_eq!(a.reserve(0..u64::MAX), 1);
    }

    #[test]
    fn hint_reuses_freed_frame() {
        let mut st = vec![0u64; bitmap_words(&HOLEY)];
        let mut a = FrameAllocator::new(&HOLEY, &mut st).unwrap();
        let frames: Vec<u64> = (0..200).map(|_| a.alloc().unwrap()).collect();
        a.free(frames[3]).unwrap();
        assert_eq!(a.alloc(), Some(frames[3]));
    }
}
