//! Physical memory for the kernel's objects: the frame allocator (kcore's
//! bitmap over the boot free map), page-table memory through the direct map,
//! and checked access to user memory by walking a process's page tables (the
//! kernel never dereferences a user pointer directly, so SMAP stays on and a
//! bad pointer is an error, not a fault).

use crate::arch::{self, PHYS_OFFSET};
use kcore::frames::FrameAllocator;
use kcore::pagetable::{self, Flags, PhysAddr, TableMemory, X86_64};
use core::sync::atomic::{AtomicBool, Ordering};
use spin::Mutex;

pub const PAGE: u64 = 4096;

static FRAMES: Mutex<Option<FrameAllocator<'static>>> = Mutex::new(None);

/// Sets up the allocator over `ranges`; its bitmap is carved from the first
/// range large enough. RAM above the boot direct map's 4 GiB is mapped into
/// the direct map first (2 MiB pages, a GiB at a time, as far as the
/// direct map's pool of page directories reaches): a machine with more
/// than 4 GiB has most of its RAM up there (QEMU's pc machine keeps at
/// most 3 GiB below 4 GiB), and a large guest needs it.
pub fn init(ranges: &[(u64, u64)]) -> Result<(u64, u64), &'static str> {
    const GIB: u64 = 1 << 30;
    let mut reach = u64::MAX;
    let usable: heapless::Vec<(u64, u64), 64> = ranges
        .iter()
        .filter_map(|&(s, e)| {
            let mut end = s.max(arch::DIRECT_MAP_LIMIT);
            while end < e.min(reach) {
                let next = ((end / GIB) + 1) * GIB;
                let next = next.min(e);
                if let Err(err) = arch::paging::direct_map(end, next - end) {
                    log::warn!("memory: RAM from {end:#x} left unused: {err}");
                    reach = end;
                    break;
                }
                end = next;
            }
            let e = e.min(end.max(arch::DIRECT_MAP_LIMIT));
            (s < e).then_some((s, e))
        })
        .collect();
    let words = kcore::frames::bitmap_words(&usable);
    let bytes = (words as u64 * 8).div_ceil(PAGE) * PAGE;
    let &(store_start, _) =
        usable.iter().find(|(s, e)| e - s > bytes).ok_or("no free range can hold the frame bitmap")?;
    // SAFETY: [store_start, store_start + bytes) is free RAM from the boot
    // memory map inside the direct map; it is reserved in the allocator below
    // so nothing else will ever use it, and it lives for the kernel's life.
    let storage: &'static mut [u64] =
        unsafe { core::slice::from_raw_parts_mut((store_start + PHYS_OFFSET) as *mut u64, words) };
    let mut fa = FrameAllocator::new(&usable, storage).map_err(|_| "frame allocator refused the memory map")?;
    fa.reserve(store_start..store_start + bytes);
    let r = (fa.free_frames() as u64 * PAGE, fa.total_frames() as u64 * PAGE);
    *FRAMES.lock() = Some(fa);
    Ok(r)
}

/// A zeroed frame.
pub fn alloc_frame() -> Option<u64> {
    alloc_frames(1)
}

/// `pages` zeroed, physically contiguous frames. Those an idle CPU zeroed
/// ahead ([`zero_ahead`]) are not written again.
pub fn alloc_frames(pages: usize) -> Option<u64> {
    let mut frames = FRAMES.lock();
    let fa = frames.as_mut()?;
    let phys = if pages == 1 { fa.alloc()? } else { fa.alloc_contiguous(pages, 1)? };
    // Under the allocator's lock, as the idle zeroing is: a frame it is
    // zeroing is never handed out meanwhile.
    fa.take_dirty(phys, pages, zero);
    ZERO_WORK.store(true, Ordering::Relaxed);
    Some(phys)
}

/// Whether [`zero_ahead`] may have work: set (under the allocator's lock)
/// whenever frames are allocated or freed, cleared when it finds none, so
/// that an idle CPU looks without taking the lock on every pass.
static ZERO_WORK: AtomicBool = AtomicBool::new(true);

/// Set by the boot flag `alcove.zero_ahead=off` (the `-icount` benchmarks,
/// whose virtual clock counts every CPU's instructions: one CPU zeroing
/// while another is measured would lengthen the measured paths).
pub static ZERO_AHEAD_OFF: AtomicBool = AtomicBool::new(false);

/// The most memory an idle CPU keeps zeroed ahead of need: a quarter of
/// the machine's, at most 256 MiB (a VM's RAM, a process's pages then come
/// without a memset under the kernel's lock).
const ZERO_AHEAD_MAX: usize = (256 << 20) / PAGE as usize;

/// One batch of the idle CPU's work (up to 64 frames): zeroes free frames
/// not known to hold zeros. Returns how many; 0 when there is nothing to
/// do (or another CPU has the allocator: the idle CPU does not wait).
pub fn zero_ahead() -> usize {
    if !ZERO_WORK.load(Ordering::Relaxed) || ZERO_AHEAD_OFF.load(Ordering::Relaxed) {
        return 0;
    }
    let Some(mut frames) = FRAMES.try_lock() else { return 0 };
    let Some(fa) = frames.as_mut() else { return 0 };
    let limit = (fa.total_frames() / 4).min(ZERO_AHEAD_MAX);
    let done = fa.zero_some(limit, |phys| zero(phys, 1));
    if done == 0 {
        ZERO_WORK.store(false, Ordering::Relaxed);
    }
    done
}

pub fn free_frames(phys: u64, pages: usize) {
    if super::inject::poisoning() {
        // Test-only (kernel/inject.rs): a freed page read later shows as
        // the poison byte.
        // SAFETY: frames being freed are RAM in the direct map that nothing
        // may use any more (the caller gives them up); they are written
        // before the allocator can hand them out again.
        unsafe { core::ptr::write_bytes((phys + PHYS_OFFSET) as *mut u8, abi::FAULT_POISON, pages * PAGE as usize) };
    }
    if let Some(fa) = FRAMES.lock().as_mut() {
        ZERO_WORK.store(true, Ordering::Relaxed);
        let r = if pages == 1 { fa.free(phys) } else { fa.free_contiguous(phys, pages) };
        if let Err(e) = r {
            log::error!("mem: freeing {pages} frame(s) at {phys:#x}: {e:?}");
        }
    }
}

pub fn free_bytes() -> u64 {
    FRAMES.lock().as_ref().map_or(0, |fa| fa.free_frames() as u64 * PAGE)
}

fn zero(phys: u64, pages: usize) {
    // SAFETY: frames in the direct map that nobody else may touch: freshly
    // allocated ones, owned by the caller and not yet visible to anyone
    // else, or free ones, which the allocator's lock (held by the caller)
    // keeps from being handed out meanwhile.
    unsafe { core::ptr::write_bytes((phys + PHYS_OFFSET) as *mut u8, 0, pages * PAGE as usize) };
}

/// Page-table memory through the direct map, counting tables made and freed
/// so the caller can charge or refund the process that pays for them.
pub struct Tables {
    pub allocated: usize,
    pub freed: usize,
    /// Whether emptied tables are kept until [`Tables::release`].
    defer: bool,
    /// The first kept table; each holds the next one's address in its
    /// entry 0 (a 4 KiB-aligned address: not present, were a CPU still to
    /// walk it), 0 after the last. No allocation on the unmap path.
    kept: PhysAddr,
}

impl Tables {
    pub const fn new() -> Self {
        Self { allocated: 0, freed: 0, defer: false, kept: 0 }
    }

    /// Tables whose emptied frames are kept, not freed, until
    /// [`Tables::release`]: an unmap frees them only after every CPU that
    /// may hold the old translations (a TLB or paging-structure cache, a
    /// vCPU inside its guest) has let go of them. Freed at once, a table
    /// could be reused (say as another guest's memory) while a CPU still
    /// walks it.
    pub const fn deferring() -> Self {
        Self { allocated: 0, freed: 0, defer: true, kept: 0 }
    }

    /// Frees the tables kept since [`Tables::deferring`].
    pub fn release(&mut self) {
        while self.kept != 0 {
            let t = self.kept;
            self.kept = self.read_entry(t, 0);
            free_frames(t, 1);
        }
    }
}

impl TableMemory for Tables {
    fn read_entry(&self, table: PhysAddr, index: usize) -> u64 {
        // SAFETY: `table` is a page-table frame (from alloc_frame or the boot
        // tables) inside the direct map; index < 512 (pagetable's contract).
        unsafe { ((table + PHYS_OFFSET) as *const u64).add(index).read_volatile() }
    }

    fn write_entry(&mut self, table: PhysAddr, index: usize, value: u64) {
        // SAFETY: as read_entry; page tables are changed only under the big
        // kernel lock.
        unsafe { ((table + PHYS_OFFSET) as *mut u64).add(index).write_volatile(value) }
    }

    fn alloc_table(&mut self) -> Option<PhysAddr> {
        let t = alloc_frame()?;
        self.allocated += 1;
        Some(t)
    }

    fn free_table(&mut self, table: PhysAddr) {
        self.freed += 1;
        if self.defer {
            let next = self.kept;
            self.write_entry(table, 0, next);
            self.kept = table;
        } else {
            free_frames(table, 1);
        }
    }
}

/// A new address space root: an empty user half and the kernel half shared
/// with every other address space (PML4 entries 256..512 of the boot tables).
pub fn new_pml4() -> Option<u64> {
    let pml4 = alloc_frame()?;
    let boot = arch::paging::boot_cr3();
    let mut t = Tables::new();
    for i in 256..512 {
        let e = t.read_entry(boot, i);
        t.write_entry(pml4, i, e);
    }
    Some(pml4)
}

/// Where a user virtual address is, if it is RAM mapped with the access
/// asked.
pub fn translate_user(pml4: u64, vaddr: u64, write: bool) -> Option<u64> {
    if vaddr >= abi::USER_MAX {
        return None;
    }
    let (phys, flags): (u64, Flags) = pagetable::translate::<X86_64, _>(&Tables::new(), pml4, vaddr & !(PAGE - 1))?;
    // Device frames (mapped uncached, and only they) are never RAM the
    // direct map covers: a BAR above 4 GiB would fault in ring 0, one below
    // be read cached (security issue finding 14).
    if !flags.user || (write && !flags.writable) || flags.cache_disable {
        return None;
    }
    Some(phys + (vaddr & (PAGE - 1)))
}

/// Copies `buf.len()` bytes from user memory; false if any byte is not mapped
/// readable.
pub fn copy_from_user(pml4: u64, vaddr: u64, buf: &mut [u8]) -> bool {
    let mut done = 0;
    while done < buf.len() {
        let va = match vaddr.checked_add(done as u64) {
            Some(v) => v,
            None => return false,
        };
        let Some(pa) = translate_user(pml4, va, false) else { return false };
        let chunk = ((PAGE - (va & (PAGE - 1))) as usize).min(buf.len() - done);
        // SAFETY: `pa..pa+chunk` lies in one user-mapped frame, inside the
        // direct map; the destination is kernel memory we own.
        unsafe { core::ptr::copy_nonoverlapping((pa + PHYS_OFFSET) as *const u8, buf[done..].as_mut_ptr(), chunk) };
        done += chunk;
    }
    true
}

/// The IPC buffer of a thread, if it is still mapped writable (it must be
/// one whole page, page-aligned).
pub fn ipc_buffer(pml4: u64, vaddr: u64) -> Option<UserIpcBuffer> {
    if vaddr == 0 || !vaddr.is_multiple_of(PAGE) {
        return None;
    }
    translate_user(pml4, vaddr, true).map(|pa| UserIpcBuffer((pa + PHYS_OFFSET) as *mut abi::IpcBuffer))
}

/// A thread's IPC buffer in the direct map. Other threads of its process
/// may write it at any moment, so no Rust reference points into it: each
/// value is read once (volatile) and used as read, never checked in the
/// page and read again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UserIpcBuffer(*mut abi::IpcBuffer);

impl UserIpcBuffer {
    /// `send_caps[i]` (`i < MSG_MAX_CAPS`), read once.
    pub fn send_cap(self, i: usize) -> u64 {
        // SAFETY: the page is mapped user-writable RAM in the direct map
        // (`ipc_buffer`) and the kernel lock keeps the mapping while the
        // caller uses it; the index is bounds-checked on the array place.
        unsafe { core::ptr::addr_of!((*self.0).send_caps[i]).read_volatile() }
    }

    /// `recv_slots[i]` (`i < MSG_MAX_CAPS`), read once.
    pub fn recv_slot(self, i: usize) -> u64 {
        // SAFETY: as in `send_cap`.
        unsafe { core::ptr::addr_of!((*self.0).recv_slots[i]).read_volatile() }
    }

    pub fn set_recv_caps(self, n: u64) {
        // SAFETY: as in `send_cap`; the page is mapped writable.
        unsafe { core::ptr::addr_of_mut!((*self.0).recv_caps).write_volatile(n) }
    }

    /// Copies message words `words` from this buffer to `to`'s (another
    /// page: the caller checks), each word read once.
    pub fn copy_words(self, to: UserIpcBuffer, words: core::ops::Range<usize>) {
        for i in words.start..words.end.min(abi::MSG_MAX_WORDS) {
            // SAFETY: as in `send_cap`, for both pages; `i` is in bounds.
            unsafe {
                let w = core::ptr::addr_of!((*self.0).words[i]).read_volatile();
                core::ptr::addr_of_mut!((*to.0).words[i]).write_volatile(w);
            }
        }
    }
}
