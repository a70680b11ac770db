//! The kernel heap: a fixed arena in .bss behind a linked-list allocator. It
//! holds boot-time structures only; kernel objects made for processes will be
//! charged to their budgets and come from frames, not from here.

use linked_list_allocator::LockedHeap;

const HEAP_SIZE: usize = 4 << 20;

#[repr(C, align(4096))]
struct Arena([u8; HEAP_SIZE]);

static mut ARENA: Arena = Arena([0; HEAP_SIZE]);

#[global_allocator]
static ALLOCATOR: LockedHeap = LockedHeap::empty();

pub fn init() {
    // SAFETY: called once at boot; ARENA is used by nothing but the allocator
    // from here on.
    unsafe {
        let start = (&raw mut ARENA).cast::<u8>();
        ALLOCATOR.lock().init(start, HEAP_SIZE);
    }
}

/// Bytes in use, for tests and diagnostics.
pub fn used() -> usize {
    ALLOCATOR.lock().used()
}
