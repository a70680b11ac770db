//! The drivers' bookkeeping, apart from the system calls that act on it:
//! mapped DMA frames, device-memory windows and the translation inside
//! them, the pool of bounce frames kept for reuse, and free capability
//! slots. Nothing here touches memory; `dma` does, with what this finds.

use alloc::vec::Vec;

use abi::{CapSlot, PAGE_SIZE};

/// Bytes in a page.
pub const PAGE: usize = PAGE_SIZE as usize;

/// Bounce frames kept for reuse (creating, mapping and zeroing a frame for
/// every request of more than a page cost storaged's pool reads and
/// writes more than the copy): at most this many, of at most
/// [`BOUNCE_POOL_FRAME_PAGES`] pages each and [`BOUNCE_POOL_PAGES`] in all.
pub const BOUNCE_POOL: usize = 8;
/// The largest bounce frame kept for reuse, in pages.
pub const BOUNCE_POOL_FRAME_PAGES: usize = 16;
/// Pages the kept bounce frames hold together at most.
pub const BOUNCE_POOL_PAGES: usize = 64;

/// A mapped DMA frame: its capability, where this process maps it, where
/// the device sees it (a kernel frame is physically contiguous), and its
/// size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DmaFrame {
    pub slot: CapSlot,
    pub va: usize,
    pub phys: u64,
    pub pages: usize,
}

impl DmaFrame {
    /// Bytes in the frame.
    pub fn bytes(&self) -> usize {
        self.pages * PAGE
    }

    /// Whether `va..va + len` lies inside the frame's mapping.
    pub fn contains(&self, va: usize, len: usize) -> bool {
        va >= self.va && va.checked_add(len).is_some_and(|end| end <= self.va + self.bytes())
    }

    /// The physical address of `va`, which [`Self::contains`].
    pub fn phys_of(&self, va: usize) -> u64 {
        self.phys + (va - self.va) as u64
    }
}

/// One mapped window of device memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Window {
    phys: u64,
    bytes: u64,
    va: usize,
}

impl Window {
    /// Whether `phys..phys + len` lies inside, in arithmetic that cannot
    /// overflow (a window may end at the top of the address space).
    fn holds(&self, phys: u64, len: u64) -> bool {
        phys >= self.phys && len <= self.bytes && phys - self.phys <= self.bytes - len
    }
}

/// The device-memory windows a process mapped: where each lies in
/// physical memory and where it is mapped.
#[derive(Debug, Default)]
pub struct Windows(Vec<Window>);

impl Windows {
    pub const fn new() -> Self {
        Self(Vec::new())
    }

    /// Records `phys..phys + bytes`, mapped at `va`.
    pub fn push(&mut self, phys: u64, bytes: u64, va: usize) {
        self.0.push(Window { phys, bytes, va });
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `phys..phys + len` lies inside one window (a range that
    /// wraps around the address space lies in none).
    pub fn covers(&self, phys: u64, len: u64) -> bool {
        self.0.iter().any(|w| w.holds(phys, len))
    }

    /// Where `phys..phys + len` is mapped, if one window holds it whole.
    pub fn translate(&self, phys: u64, len: u64) -> Option<usize> {
        self.0.iter().find(|w| w.holds(phys, len)).map(|w| w.va + (phys - w.phys) as usize)
    }
}

/// Bounce frames kept for reuse, within [`BOUNCE_POOL`],
/// [`BOUNCE_POOL_FRAME_PAGES`] and [`BOUNCE_POOL_PAGES`].
#[derive(Debug, Default)]
pub struct BouncePool(Vec<DmaFrame>);

impl BouncePool {
    pub const fn new() -> Self {
        Self(Vec::new())
    }

    /// Takes the smallest kept frame of at least `pages` pages.
    pub fn take(&mut self, pages: usize) -> Option<DmaFrame> {
        let i = self.0.iter().enumerate().filter(|(_, f)| f.pages >= pages).min_by_key(|(_, f)| f.pages).map(|(i, _)| i)?;
        Some(self.0.swap_remove(i))
    }

    /// Keeps `frame` for reuse if the pool has room for it; otherwise
    /// hands it back, for the caller to free.
    pub fn keep(&mut self, frame: DmaFrame) -> Result<(), DmaFrame> {
        let kept: usize = self.0.iter().map(|f| f.pages).sum();
        if frame.pages <= BOUNCE_POOL_FRAME_PAGES && self.0.len() < BOUNCE_POOL && kept + frame.pages <= BOUNCE_POOL_PAGES {
            self.0.push(frame);
            Ok(())
        } else {
            Err(frame)
        }
    }
}

/// A process's free capability slots: those given back first, then new
/// ones counting up from the first slot the runtime leaves free.
#[derive(Debug)]
pub struct Slots {
    free: Vec<CapSlot>,
    next: CapSlot,
}

impl Slots {
    pub const fn new(first: CapSlot) -> Self {
        Self { free: Vec::new(), next: first }
    }

    /// An empty slot.
    pub fn take(&mut self) -> CapSlot {
        self.free.pop().unwrap_or_else(|| {
            let s = self.next;
            self.next += 1;
            s
        })
    }

    /// Gives back a slot from [`Self::take`], emptied by the caller.
    pub fn give(&mut self, slot: CapSlot) {
        self.free.push(slot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(phys: u64, pages: usize) -> DmaFrame {
        DmaFrame { slot: 0, va: 0x1000_0000 + phys as usize, phys, pages }
    }

    #[test]
    fn a_frame_contains_only_its_own_range() {
        let f = DmaFrame { slot: 5, va: 0x10_000, phys: 0x8000_0000, pages: 2 };
        assert!(f.contains(0x10_000, 2 * PAGE));
        assert!(f.contains(0x11_fff, 1));
        assert!(!f.contains(0x11_fff, 2), "runs one byte past the end");
        assert!(!f.contains(0xf_fff, 1), "starts before the frame");
        assert!(!f.contains(usize::MAX, 2), "wraps around");
        assert_eq!(f.phys_of(0x10_123), 0x8000_0123);
    }

    #[test]
    fn windows_translate_inside_and_refuse_outside() {
        let mut w = Windows::new();
        assert!(w.is_empty());
        w.push(0xfe00_0000, 0x4000, 0x2000_0000_0000);
        w.push(0xc000_0000, 0x1000, 0x2000_0000_6000);
        assert!(!w.is_empty());
        assert_eq!(w.translate(0xfe00_0010, 4), Some(0x2000_0000_0010));
        assert_eq!(w.translate(0xc000_0ffc, 4), Some(0x2000_0000_6ffc));
        assert!(w.covers(0xfe00_0000, 0x4000));
        assert!(!w.covers(0xfe00_0000, 0x4001), "one byte past the window");
        assert_eq!(w.translate(0xc000_0ffe, 4), None, "straddles the end");
        assert_eq!(w.translate(0xbfff_fffc, 8), None, "straddles the start");
        assert!(!w.covers(u64::MAX - 1, 4), "wraps around");
        // A window at the very top of the address space cannot make a
        // wrapped range look covered.
        w.push(u64::MAX - 0xfff, 0x1000, 0x2000_0001_0000);
        assert!(!w.covers(u64::MAX - 1, 4));
        assert!(w.covers(u64::MAX - 0xfff, 0xfff));
    }

    #[test]
    fn the_bounce_pool_hands_out_the_smallest_frame_that_fits() {
        let mut p = BouncePool::new();
        p.keep(frame(0x1000, 4)).unwrap();
        p.keep(frame(0x9000, 1)).unwrap();
        p.keep(frame(0x20000, 16)).unwrap();
        assert_eq!(p.take(2).map(|f| f.pages), Some(4));
        assert_eq!(p.take(1).map(|f| f.pages), Some(1));
        assert_eq!(p.take(17), None, "nothing kept is large enough");
        assert_eq!(p.take(1).map(|f| f.pages), Some(16));
        assert_eq!(p.take(1), None);
    }

    #[test]
    fn the_bounce_pool_keeps_within_its_limits() {
        let mut p = BouncePool::new();
        assert_eq!(p.keep(frame(0, BOUNCE_POOL_FRAME_PAGES + 1)).map_err(|f| f.pages), Err(BOUNCE_POOL_FRAME_PAGES + 1));
        for i in 0..BOUNCE_POOL_PAGES / BOUNCE_POOL_FRAME_PAGES {
            p.keep(frame(i as u64 * 0x10_0000, BOUNCE_POOL_FRAME_PAGES)).unwrap();
        }
        assert!(p.keep(frame(0x900_0000, 1)).is_err(), "the pages in all are spent");
        let mut q = BouncePool::new();
        for i in 0..BOUNCE_POOL {
            q.keep(frame(i as u64 * 0x1000, 1)).unwrap();
        }
        assert!(q.keep(frame(0x900_0000, 1)).is_err(), "the frames are spent");
    }

    #[test]
    fn slots_given_back_are_reused_first() {
        let mut s = Slots::new(128);
        assert_eq!((s.take(), s.take()), (128, 129));
        s.give(128);
        assert_eq!(s.take(), 128);
        assert_eq!(s.take(), 130);
    }
}
