//! The kernel heap: a fixed arena in .bss for boot-time structures, and more
//! regions taken from the frame allocator when it runs out. Everything the
//! heap holds on a process's behalf (thread records, capability tables,
//! range-map entries, I/O bitmaps, watch entries) is charged to that
//! process's budget before it is allocated (`kernel::cost`), and budgets are
//! carved from the frames left after boot (init gets 7/8 of them), so a
//! process that fills the heap runs out of budget, never the kernel out of
//! memory: the heap grows into frames the budgets already account for, as
//! seL4's objects come out of their caller's untyped memory (security issue
//! finding 2: a fixed 4 MiB heap used to run out and panic the kernel).
//!
//! Each region is a `linked_list_allocator` heap of its own; a free goes to
//! the region whose address range holds the pointer. Regions are never
//! given back (the heap keeps its high-water mark).

use core::alloc::{GlobalAlloc, Layout};
use core::ptr::{self, NonNull};
use linked_list_allocator::Heap;
use spin::Mutex;

const ARENA_BYTES: usize = 4 << 20;
/// The most regions the heap grows to (the arena included).
const MAX_REGIONS: usize = 64;
/// The smallest region taken from the frame allocator; later regions grow
/// with the heap (a quarter of its size so far), up to `MAX_GROWTH`.
const MIN_GROWTH: usize = 1 << 20;
const MAX_GROWTH: usize = 32 << 20;
const PAGE: usize = 4096;

#[repr(C, align(4096))]
struct Arena([u8; ARENA_BYTES]);

static mut ARENA: Arena = Arena([0; ARENA_BYTES]);

struct Region {
    start: usize,
    end: usize,
    heap: Heap,
}

struct Regions {
    list: heapless::Vec<Region, MAX_REGIONS>,
    bytes: usize,
}

impl Regions {
    fn alloc(&mut self, layout: Layout) -> Option<NonNull<u8>> {
        self.list.iter_mut().rev().find_map(|r| r.heap.allocate_first_fit(layout).ok())
    }

    /// Adds a region from the frame allocator big enough for `layout`.
    fn grow(&mut self, layout: Layout) -> bool {
        if self.list.is_full() {
            return false;
        }
        // Room for the request, its alignment and the allocator's hole
        // bookkeeping.
        let Some(need) = layout.size().checked_add(layout.align()).and_then(|n| n.checked_add(PAGE)) else {
            return false;
        };
        let want = (self.bytes / 4).clamp(MIN_GROWTH, MAX_GROWTH).max(need);
        // A smaller region if memory is too fragmented for the larger one.
        for bytes in [want, need] {
            let pages = bytes.div_ceil(PAGE);
            let Some(phys) = crate::kernel::mem::alloc_frames(pages) else { continue };
            let start = (phys + crate::arch::PHYS_OFFSET) as usize;
            let mut heap = Heap::empty();
            // SAFETY: the frames are fresh from the frame allocator, inside
            // the direct map, owned by the heap from now on (never freed),
            // and not used by anything else.
            unsafe { heap.init(start as *mut u8, pages * PAGE) };
            let region = Region { start, end: start + pages * PAGE, heap };
            if self.list.push(region).is_err() {
                crate::kernel::mem::free_frames(phys, pages);
                return false;
            }
            self.bytes += pages * PAGE;
            return true;
        }
        false
    }
}

struct GrowingHeap(Mutex<Regions>);

// SAFETY: `linked_list_allocator::Heap` hands out disjoint, suitably aligned
// blocks of its region; every region is memory owned by the heap alone;
// `dealloc` returns a block to the region it came from (found by address).
unsafe impl GlobalAlloc for GrowingHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let mut r = self.0.lock();
        if let Some(p) = r.alloc(layout) {
            return p.as_ptr();
        }
        if r.grow(layout) && let Some(p) = r.alloc(layout) {
            return p.as_ptr();
        }
        ptr::null_mut()
    }

    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        let Some(nn) = NonNull::new(p) else { return };
        let mut r = self.0.lock();
        let a = p as usize;
        if let Some(region) = r.list.iter_mut().find(|g| (g.start..g.end).contains(&a)) {
            // SAFETY: `p` came from this region's heap with `layout` (the
            // GlobalAlloc contract; regions do not overlap).
            unsafe { region.heap.deallocate(nn, layout) };
        }
    }
}

#[global_allocator]
static ALLOCATOR: GrowingHeap = GrowingHeap(Mutex::new(Regions { list: heapless::Vec::new(), bytes: 0 }));

pub fn init() {
    let start = (&raw mut ARENA).cast::<u8>();
    let mut heap = Heap::empty();
    // SAFETY: called once at boot; ARENA is used by nothing but the
    // allocator from here on.
    unsafe { heap.init(start, ARENA_BYTES) };
    let mut r = ALLOCATOR.0.lock();
    let _ = r.list.push(Region { start: start as usize, end: start as usize + ARENA_BYTES, heap });
    r.bytes = ARENA_BYTES;
}

/// Bytes in use, for tests and diagnostics.
pub fn used() -> usize {
    ALLOCATOR.0.lock().list.iter().map(|r| r.heap.used()).sum()
}
