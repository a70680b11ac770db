//! The process heap: a fixed arena in the image ([`crate::HEAP_BYTES`]),
//! and memory the process adds on request with [`grow_heap`] for work that
//! needs more for a while (zone-server's xz import: an 8 MiB dictionary at
//! `xz -6`, 64 MiB at `-9`).
//!
//! A growth creates frames (charged to this process's kernel-memory budget,
//! like every frame it creates) and maps them read-write at the end of what
//! the window [`HEAP_WINDOW_BASE`]`..+`[`HEAP_WINDOW_BYTES`] already holds.
//! The window is a second heap after the arena: an allocation is served by
//! the arena when it fits there, else by the window. The heap never
//! shrinks: what a growth maps stays mapped (and charged) until the process
//! ends.
//!
//! Address space: the image sits at 4 MiB (`user.ld`), servers map their
//! own objects below 0x60_0000_0000 (guest RAM at 0x1000_0000_0000), init
//! puts the boot archive at 0x4000_0000_0000 and its own scratch and worker
//! stacks at 0x5000_0000_0000 and 0x5100_0000_0000, and the stack, IPC
//! buffer and start-up information sit just below 0x8000_0000_0000. The
//! window at 0x6000_0000_0000 is in none of these.
//!
//! Capability slots: a growth creates each frame in [`SLOT_HEAP`], maps it
//! and deletes the capability at once (the mapping holds the frame, as init
//! does with a server's segments). So the slot is empty between growths,
//! no slot is ever used up, and the number of growths is bounded only by
//! the window (65,536 growths of one page) and the budget. Nothing can
//! unmap or revoke the heap's frames through a capability either: none is
//! left.

use abi::{Error, PAGE_SIZE};
use core::alloc::{GlobalAlloc, Layout};
use core::ptr::NonNull;
use linked_list_allocator::Heap;

/// Where the heap grows: the first byte of the window.
pub const HEAP_WINDOW_BASE: u64 = 0x0000_6000_0000_0000;
/// The most the heap can grow by, in all: 256 MiB (four `xz -9`
/// dictionaries).
pub const HEAP_WINDOW_BYTES: u64 = 256 << 20;
/// Pages of one frame a growth creates (1 MiB). Frames are physically
/// contiguous: small pieces survive fragmentation (as the VMM's guest RAM,
/// in 4 MiB pieces, does); each costs the budget one 128-byte range entry.
#[cfg(target_os = "none")]
const FRAME_PAGES: u64 = 256;

/// How much of the window is mapped (the heap's growth so far).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Window {
    mapped: u64,
}

impl Window {
    /// The range a growth of `bytes` maps next, `(address, length)`, whole
    /// pages right after what is mapped; or why it cannot be:
    /// `InvalidArgument` for nothing or more than the whole window ever
    /// holds, `OutOfMemory` for more than is left of it.
    fn next(&self, bytes: usize) -> Result<(u64, u64), Error> {
        if bytes == 0 {
            return Err(Error::InvalidArgument);
        }
        let len = u64::try_from(bytes)
            .ok()
            .and_then(|b| b.checked_next_multiple_of(PAGE_SIZE))
            .filter(|&l| l <= HEAP_WINDOW_BYTES)
            .ok_or(Error::InvalidArgument)?;
        if len > HEAP_WINDOW_BYTES - self.mapped {
            return Err(Error::OutOfMemory);
        }
        Ok((HEAP_WINDOW_BASE + self.mapped, len))
    }
}

/// The two heaps: the arena, and the window's (empty until the first
/// growth).
struct Heaps {
    arena: Heap,
    grown: Heap,
}

/// The global allocator of a process: the arena first, then the window.
pub struct ProcessHeap {
    heaps: spin::Mutex<Heaps>,
}

impl ProcessHeap {
    pub const fn empty() -> Self {
        Self { heaps: spin::Mutex::new(Heaps { arena: Heap::empty(), grown: Heap::empty() }) }
    }

    /// Gives the heap its arena.
    ///
    /// # Safety
    ///
    /// Called once, before any allocation; `bottom..bottom + size` is
    /// writable memory of this process's that nothing else uses, for good.
    pub unsafe fn init_arena(&self, bottom: *mut u8, size: usize) {
        // SAFETY: the caller's contract.
        unsafe { self.heaps.lock().arena.init(bottom, size) }
    }

    /// Adds `bottom..bottom + size` to the window's heap.
    ///
    /// # Safety
    ///
    /// The range is writable memory of this process's that nothing else
    /// uses, for good; it starts where the previous range added here ended
    /// (anywhere, the first time), and is at least a page.
    #[cfg_attr(not(any(target_os = "none", test)), allow(dead_code))]
    unsafe fn add_grown(&self, bottom: *mut u8, size: usize) {
        let mut heaps = self.heaps.lock();
        if heaps.grown.size() == 0 {
            // SAFETY: the first range (the caller's contract); the heap is
            // empty.
            unsafe { heaps.grown.init(bottom, size) }
        } else {
            // SAFETY: the range starts at the heap's top (the caller's
            // contract) and is the process's alone.
            unsafe { heaps.grown.extend(size) }
        }
    }

    /// Bytes allocated from the window's heap (for tests and figures).
    pub fn grown_used(&self) -> usize {
        self.heaps.lock().grown.used()
    }
}

impl Default for ProcessHeap {
    fn default() -> Self {
        Self::empty()
    }
}

// SAFETY: both heaps hand out disjoint blocks of memory of their own, each
// block to one caller until it is given back; the lock serialises every
// use of the free lists.
unsafe impl GlobalAlloc for ProcessHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let mut heaps = self.heaps.lock();
        let block = match heaps.arena.allocate_first_fit(layout) {
            Ok(b) => Ok(b),
            Err(()) => heaps.grown.allocate_first_fit(layout),
        };
        block.map_or(core::ptr::null_mut(), NonNull::as_ptr)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let mut heaps = self.heaps.lock();
        let grown = &heaps.grown;
        let from_grown = grown.size() > 0 && (grown.bottom()..grown.top()).contains(&ptr);
        let Some(block) = NonNull::new(ptr) else { return };
        // SAFETY: `ptr` came from `alloc` with `layout` (GlobalAlloc's
        // contract), so from the heap whose range holds it.
        unsafe {
            if from_grown { heaps.grown.deallocate(block, layout) } else { heaps.arena.deallocate(block, layout) }
        }
    }
}

/// Makes the heap at least `bytes` larger (rounded up to whole pages): new
/// frames, charged to this process's budget, mapped read-write after what
/// the window holds. All or nothing: on an error nothing new stays mapped
/// or created, the budget and the heap are as they were.
///
/// Errors: `InvalidArgument` for 0 or more than [`HEAP_WINDOW_BYTES`],
/// `OutOfMemory` for more than is left of the window (see
/// [`heap_grown_bytes`]) or than the machine has, `OutOfBudget` when the
/// budget cannot pay for the frames or their page tables, and the slot's
/// error should [`SLOT_HEAP`](crate::start::SLOT_HEAP) be taken. One growth
/// runs at a time; other threads' allocations go on meanwhile.
pub fn grow_heap(bytes: usize) -> Result<(), Error> {
    let mut window = GROWTH.lock();
    let (va, len) = window.next(bytes)?;
    #[cfg(target_os = "none")]
    {
        map_fresh(va, len)?;
        // SAFETY: `map_fresh` mapped `va..va + len` read-write from frames
        // it created and whose capabilities it deleted: nothing else in
        // this process reaches them. `va` is the window's mapped end, where
        // the previous range added ended (the window's base the first
        // time); the lock above keeps other growths out meanwhile.
        unsafe { target::ALLOCATOR.add_grown(va as *mut u8, len as usize) };
        window.mapped += len;
        Ok(())
    }
    #[cfg(not(target_os = "none"))]
    {
        let _ = (va, len, &mut window);
        Err(Error::NoSyscall)
    }
}

/// Bytes the heap has grown by so far (mapped in the window).
pub fn heap_grown_bytes() -> u64 {
    GROWTH.lock().mapped
}

/// The window's bookkeeping; its lock is held for a whole growth.
static GROWTH: crate::sync::Mutex<Window> = crate::sync::Mutex::new(Window { mapped: 0 });

/// Creates and maps frames over `va..va + len` (whole pages), deleting
/// each frame's capability once mapped; on an error unmaps what it mapped
/// (which frees those frames and gives their charge back).
#[cfg(target_os = "none")]
fn map_fresh(va: u64, len: u64) -> Result<(), Error> {
    use crate::start::{SLOT_HEAP, SLOT_SELF};
    use abi::{ObjectType, Rights};
    use libipc::sys;

    let pages = len / PAGE_SIZE;
    let mut done = 0;
    while done < pages {
        let n = (pages - done).min(FRAME_PAGES);
        let made = sys::create(ObjectType::Frame, SLOT_HEAP, n).and_then(|()| {
            let mapped = sys::map(SLOT_SELF, SLOT_HEAP, va + done * PAGE_SIZE, Rights::READ | Rights::WRITE);
            // Mapped, the frame lives as long as the mapping; unmapped, it
            // goes with its capability.
            let _ = sys::cap_delete(SLOT_HEAP);
            mapped
        });
        if let Err(e) = made {
            if done > 0 {
                // SAFETY: the range was mapped by this call and never given
                // to the allocator: nothing refers to it.
                let _ = unsafe { sys::unmap(SLOT_SELF, va, done) };
            }
            return Err(e);
        }
        done += n;
    }
    Ok(())
}

#[cfg(target_os = "none")]
pub(crate) mod target {
    use super::ProcessHeap;

    const HEAP_SIZE: usize = crate::HEAP_BYTES;

    #[repr(C, align(4096))]
    struct Arena([u8; HEAP_SIZE]);
    static mut ARENA: Arena = Arena([0; HEAP_SIZE]);

    #[global_allocator]
    pub(super) static ALLOCATOR: ProcessHeap = ProcessHeap::empty();

    pub fn init_heap() {
        // SAFETY: runs once, first thing in `_start`, before any
        // allocation; ARENA is used by nothing but the allocator.
        unsafe { ALLOCATOR.init_arena((&raw mut ARENA).cast::<u8>(), HEAP_SIZE) }
    }

    /// Bytes allocated from the window's heap.
    pub fn heap_grown_used() -> usize {
        ALLOCATOR.grown_used()
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use std::vec::Vec;

    const MIB: usize = 1 << 20;

    #[test]
    fn nothing_and_absurd_sizes_are_refused() {
        let w = Window::default();
        assert_eq!(w.next(0), Err(Error::InvalidArgument));
        assert_eq!(w.next(usize::MAX), Err(Error::InvalidArgument));
        assert_eq!(w.next(usize::MAX - 4095), Err(Error::InvalidArgument));
        assert_eq!(w.next(HEAP_WINDOW_BYTES as usize + 1), Err(Error::InvalidArgument));
        assert_eq!(w.next(HEAP_WINDOW_BYTES as usize), Ok((HEAP_WINDOW_BASE, HEAP_WINDOW_BYTES)));
    }

    #[test]
    fn growths_are_whole_pages_one_after_another_up_to_the_window() {
        let mut w = Window::default();
        assert_eq!(w.next(1), Ok((HEAP_WINDOW_BASE, 4096)));
        let mut growths = 0;
        loop {
            match w.next(3 * MIB + 1) {
                Ok((va, len)) => {
                    assert_eq!(va, HEAP_WINDOW_BASE + w.mapped, "right after what is mapped");
                    assert_eq!(len, 3 * MIB as u64 + 4096);
                    w.mapped += len;
                    growths += 1;
                }
                Err(e) => {
                    assert_eq!(e, Error::OutOfMemory);
                    break;
                }
            }
        }
        assert_eq!(growths, HEAP_WINDOW_BYTES / (3 * MIB as u64 + 4096));
        let left = HEAP_WINDOW_BYTES - w.mapped;
        assert!(left > 0 && left < 3 * MIB as u64 + 4096);
        // What is left is still given, to the last page, and no more.
        assert_eq!(w.next(left as usize), Ok((HEAP_WINDOW_BASE + w.mapped, left)));
        w.mapped += left;
        assert_eq!(w.mapped, HEAP_WINDOW_BYTES);
        assert_eq!(w.next(1), Err(Error::OutOfMemory));
        // A size never possible stays InvalidArgument, full or not.
        assert_eq!(w.next(HEAP_WINDOW_BYTES as usize + 1), Err(Error::InvalidArgument));
    }

    /// Page-aligned memory of `len` bytes that lives for the test run.
    fn region(len: usize) -> *mut u8 {
        let v: &'static mut [u64] = Vec::leak(std::vec![0u64; (len + 4096) / 8]);
        let p = v.as_mut_ptr().cast::<u8>();
        p.wrapping_add(p.align_offset(4096))
    }

    /// The allocator over two regions (no Alcove under `cargo test`): the
    /// arena serves what fits, the window's heap the rest, a grown heap is
    /// one contiguous range across growths, and blocks go back to the heap
    /// they came from.
    #[test]
    fn the_arena_first_then_the_grown_heap_across_growths() {
        let heap = ProcessHeap::empty();
        let arena = region(64 * 1024);
        let grown = region(4 * 4096);
        // SAFETY: both regions are leaked, page-aligned and this test's alone.
        unsafe { heap.init_arena(arena, 64 * 1024) };
        let small = Layout::from_size_align(1024, 8).unwrap();
        let big = Layout::from_size_align(3 * 4096, 8).unwrap();
        let huge = Layout::from_size_align(100 * 1024, 8).unwrap();
        // SAFETY (all `alloc`/`dealloc` below): layouts are non-zero and
        // blocks are given back with the layout they were taken with.
        unsafe {
            let a = heap.alloc(small);
            assert!(!a.is_null() && (arena..arena.add(64 * 1024)).contains(&a));
            assert!(heap.alloc(huge).is_null(), "more than the arena and nothing grown");
            heap.add_grown(grown, 4096);
            heap.add_grown(grown.add(4096), 4096);
            heap.add_grown(grown.add(2 * 4096), 2 * 4096);
            // The arena nearly full, a block larger than any one growth
            // is served by the grown heap: one range across the three.
            let fill = heap.alloc(Layout::from_size_align(62 * 1024, 8).unwrap());
            assert!(!fill.is_null() && (arena..arena.add(64 * 1024)).contains(&fill));
            let b = heap.alloc(big);
            assert!(!b.is_null() && (grown..grown.add(4 * 4096)).contains(&b), "from the grown heap");
            assert_eq!(heap.grown_used(), 3 * 4096);
            heap.dealloc(b, big);
            assert_eq!(heap.grown_used(), 0, "given back to the grown heap");
            heap.dealloc(fill, Layout::from_size_align(62 * 1024, 8).unwrap());
            heap.dealloc(a, small);
            // All free again: the arena takes a block nearly its size.
            let again = heap.alloc(Layout::from_size_align(60 * 1024, 8).unwrap());
            assert!((arena..arena.add(64 * 1024)).contains(&again));
            heap.dealloc(again, Layout::from_size_align(60 * 1024, 8).unwrap());
        }
    }
}
