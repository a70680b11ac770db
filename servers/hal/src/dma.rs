//! Memory a driver's devices reach: DMA frames, the device-memory windows
//! where the PCI BARs are, and `virtio-drivers`' `Hal` over them.
//!
//! * DMA frames are contiguous kernel frames (`Sys::Create` of a frame,
//!   physical address from `Sys::FrameInfo`), mapped read-write at
//!   addresses from a bump allocator that never reuses a range (a guard
//!   page after each).
//! * Frames shared with another process (storaged's rings) are reached
//!   only by opaque copies ([`SharedFrame`]), never as a slice, and no
//!   device DMA targets them. A driver's own buffers are private frames
//!   ([`alloc_private`]: storaged's bounce frame, netd's receive and
//!   transmit buffers) that `share` finds among the DMA frames and gives
//!   the device directly. Any other buffer (the request headers and
//!   status bytes `virtio-drivers` keeps on the stack, storaged's pool
//!   metadata from the heap) is bounced through a DMA frame from a small
//!   pool of reused frames ([`crate::table::BouncePool`]).
//! * Device memory: windows the manifest granted whole ([`map_window`],
//!   storaged's `device_memory`) or each BAR through a frame derived from
//!   the manifest's `pci_bars` capability ([`map_bar`]);
//!   `mmio_phys_to_virt`, [`mmio_read`] and [`mmio_write`] translate inside
//!   them only. Callers check that a device's BARs lie inside a window
//!   ([`covered`]) before handing the device to `virtio-drivers`.
//! * Capability slots: this module hands out every free slot of the
//!   process ([`take_slot`]), so the driver's frames and whatever else the
//!   process receives never collide.
//!
//! A driver drives its devices from one thread; the state sits behind one
//! spin lock that is never held across a call into `virtio-drivers`.

use core::ptr::NonNull;

use abi::{CapSlot, ObjectType, Rights};
use alcove_rt::start::{SLOT_FREE, SLOT_SELF};
use alloc::vec::Vec;
use libipc::sys;
use spin::Mutex;
use virtio_drivers::{BufferDirection, Hal, PhysAddr};

use crate::table::{BouncePool, DmaFrame, PAGE, Slots, Windows};

/// Where DMA frames are mapped (bump-allocated, a guard page after each).
const DMA_VA_BASE: usize = 0x0000_1000_0000_0000;
/// Where the device-memory windows are mapped.
const MMIO_VA_BASE: usize = 0x0000_2000_0000_0000;

struct Bounce {
    frame: DmaFrame,
    original: usize,
    len: usize,
}

struct State {
    frames: Vec<DmaFrame>,
    bounce_pool: BouncePool,
    bounces: Vec<Bounce>,
    windows: Windows,
    slots: Slots,
    next_va: usize,
    next_mmio_va: usize,
}

static STATE: Mutex<State> = Mutex::new(State {
    frames: Vec::new(),
    bounce_pool: BouncePool::new(),
    bounces: Vec::new(),
    windows: Windows::new(),
    slots: Slots::new(SLOT_FREE),
    next_va: DMA_VA_BASE,
    next_mmio_va: MMIO_VA_BASE,
});

impl State {
    fn alloc(&mut self, pages: usize) -> Result<DmaFrame, abi::Error> {
        let slot = self.slots.take();
        if let Err(e) = sys::create(ObjectType::Frame, slot, pages as u64) {
            self.slots.give(slot);
            return Err(e);
        }
        let va = self.next_va;
        let mapped =
            sys::map(SLOT_SELF, slot, va as u64, Rights::READ | Rights::WRITE).and_then(|()| sys::frame_info(slot));
        let info = match mapped {
            Ok(info) => info,
            Err(e) => {
                // SAFETY: the range was mapped (if at all) just now and
                // nothing refers to it.
                let _ = unsafe { sys::unmap(SLOT_SELF, va as u64, pages as u64) };
                let _ = sys::cap_delete(slot);
                self.slots.give(slot);
                return Err(e);
            }
        };
        self.next_va += (pages + 1) * PAGE;
        let frame = DmaFrame { slot, va, phys: info.phys_addr, pages };
        // SAFETY: the frame was mapped readable and writable at `va` just
        // now and nobody else maps it yet: plain stores into our own pages.
        unsafe { core::ptr::write_bytes(va as *mut u8, 0, pages * PAGE) };
        self.frames.push(frame);
        Ok(frame)
    }

    fn free(&mut self, phys: u64) -> bool {
        let Some(i) = self.frames.iter().position(|f| f.phys == phys) else { return false };
        let f = self.frames.swap_remove(i);
        // SAFETY: the frame was handed out by `alloc` and given back by its
        // only user (`Hal::dma_dealloc`'s contract, `free_shared`'s caller,
        // or a bounce that ended), so no reference into the range is left.
        let _ = unsafe { sys::unmap(SLOT_SELF, f.va as u64, f.pages as u64) };
        let _ = sys::cap_delete(f.slot);
        self.slots.give(f.slot);
        true
    }
}

/// A frame another process maps too (a ring): the driver reaches it only
/// by [`SharedFrame::read`] and [`SharedFrame::write`], each one string
/// move (`rep movsq`, then `rep movsb` for the tail) the compiler cannot
/// see into, as a volatile copy: the other process may write the frame at
/// any time, and no Rust reference ever points into it. String moves
/// rather than a loop of volatile words, because storaged's bounce buffer
/// makes every request's data cross here once more: under QEMU `-icount`,
/// a 64 KiB read through the ring took about 66k instructions when the
/// disk's DMA went straight to the ring, 124k with the bounce and a
/// volatile-word loop, 77k with the bounce and `rep movsq`.
pub struct SharedFrame {
    frame: DmaFrame,
}

impl SharedFrame {
    /// The frame's capability slot (handed to the client).
    pub fn slot(&self) -> CapSlot {
        self.frame.slot
    }

    /// Bytes in the frame.
    pub fn len(&self) -> usize {
        self.frame.bytes()
    }

    /// Whether the frame holds no bytes (never: a frame has a page at least).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Copies `buf.len()` bytes from `offset`; nothing if that runs past the
    /// end (the ring server checks its ranges first).
    pub fn read(&self, offset: usize, buf: &mut [u8]) {
        if offset.checked_add(buf.len()).is_some_and(|end| end <= self.len()) {
            // SAFETY: `offset..offset + len` lies inside the frame, mapped
            // readable at `va` until `free_shared` consumes `self`; `buf` is
            // this process's own memory, distinct from the frame.
            unsafe { copy_opaque(buf.as_mut_ptr(), (self.frame.va + offset) as *const u8, buf.len()) }
        }
    }

    /// Copies `data` to `offset`; nothing if that runs past the end.
    pub fn write(&mut self, offset: usize, data: &[u8]) {
        if offset.checked_add(data.len()).is_some_and(|end| end <= self.len()) {
            // SAFETY: as `read`; the frame is mapped writable.
            unsafe { copy_opaque((self.frame.va + offset) as *mut u8, data.as_ptr(), data.len()) }
        }
    }
}

/// Copies `n` bytes: `rep movsq` for the whole words, `rep movsb` for the
/// rest.
///
/// # Safety
///
/// `dst` is valid for `n` bytes of writes, `src` for `n` bytes of reads,
/// and the ranges do not overlap.
unsafe fn copy_opaque(dst: *mut u8, src: *const u8, n: usize) {
    // SAFETY: the caller's contract; the direction flag is clear (the
    // System V ABI keeps it so across calls), and the string moves touch
    // only rdi, rsi, rcx and the two ranges (`rep movsq` leaves rdi and
    // rsi just past the words for `rep movsb`).
    unsafe {
        core::arch::asm!(
            "rep movsq",
            "mov rcx, {tail}",
            "rep movsb",
            tail = in(reg) n % 8,
            inout("rcx") n / 8 => _,
            inout("rdi") dst => _,
            inout("rsi") src => _,
            options(nostack, preserves_flags),
        );
    }
}

/// A new frame of `pages` pages, zeroed and mapped, whose capability the
/// caller hands to another process (a ring).
pub fn alloc_shared(pages: usize) -> Result<SharedFrame, abi::Error> {
    let frame = STATE.lock().alloc(pages)?;
    Ok(SharedFrame { frame })
}

/// Gives a frame from [`alloc_shared`] back: this process's mapping and
/// capability go (the client's copy keeps the frame alive until it
/// deletes it).
pub fn free_shared(frame: SharedFrame) {
    STATE.lock().free(frame.frame.phys);
}

/// A new DMA frame of `pages` pages that stays this process's alone (its
/// capability is never handed out): a driver's own buffers.
pub fn alloc_private(pages: usize) -> Result<&'static mut [u8], abi::Error> {
    let frame = STATE.lock().alloc(pages)?;
    // SAFETY: `alloc` mapped the frame readable and writable at `va`; its
    // capability stays in this process and the frame is never freed, so
    // this slice is the only way to the memory for the process's life
    // (the device reads and writes it only between `share` and `unshare`,
    // while `virtio-drivers` holds the borrow).
    Ok(unsafe { core::slice::from_raw_parts_mut(frame.va as *mut u8, frame.bytes()) })
}

/// An empty capability slot of this process.
pub fn take_slot() -> CapSlot {
    STATE.lock().slots.take()
}

/// Gives back a slot from [`take_slot`], emptied by the caller.
pub fn give_slot(slot: CapSlot) {
    STATE.lock().slots.give(slot);
}

/// Maps a granted device-memory window (`phys`, `len` bytes, frame
/// `slot`). A window costs page tables for its whole size, so a driver
/// maps its windows only once it found a device.
pub fn map_window(phys: u64, len: u64, slot: CapSlot) -> Result<(), abi::Error> {
    let mut s = STATE.lock();
    let va = s.next_mmio_va;
    sys::map(SLOT_SELF, slot, va as u64, Rights::READ | Rights::WRITE)?;
    s.next_mmio_va += (len as usize).div_ceil(PAGE) * PAGE + PAGE;
    s.windows.push(phys, len, va);
    Ok(())
}

/// Maps the pages holding `phys..phys+len` (a device's BAR) through a
/// frame derived from the device-memory capability in `root` (the
/// manifest's `pci_bars`), unless a mapped window covers them already.
/// Only the BARs of the devices a driver drives are mapped, wherever the
/// firmware put them.
pub fn map_bar(root: CapSlot, phys: u64, len: u64) -> Result<(), abi::Error> {
    if covered(phys, len) {
        return Ok(());
    }
    let base = phys & !(PAGE as u64 - 1);
    let end = phys.checked_add(len).ok_or(abi::Error::InvalidArgument)?;
    let pages = (end - base).div_ceil(PAGE as u64);
    let mut s = STATE.lock();
    let slot = s.slots.take();
    if let Err(e) = sys::create_device_frame(slot, base, pages, root) {
        s.slots.give(slot);
        return Err(e);
    }
    let va = s.next_mmio_va;
    if let Err(e) = sys::map(SLOT_SELF, slot, va as u64, Rights::READ | Rights::WRITE) {
        let _ = sys::cap_delete(slot);
        s.slots.give(slot);
        return Err(e);
    }
    s.next_mmio_va += pages as usize * PAGE + PAGE;
    s.windows.push(base, pages * PAGE as u64, va);
    Ok(())
}

/// Whether any window is mapped.
pub fn has_windows() -> bool {
    !STATE.lock().windows.is_empty()
}

/// Whether `phys..phys+len` lies inside a mapped window.
pub fn covered(phys: u64, len: u64) -> bool {
    STATE.lock().windows.covers(phys, len)
}

/// A device register write: `value` (1, 2 or 4 bytes, little-endian as
/// PCI is) at `phys`, which must lie inside a mapped window; `false` if it
/// does not (nothing is written).
pub fn mmio_write(phys: u64, value: u32, bytes: usize) -> bool {
    if !matches!(bytes, 1 | 2 | 4) || !phys.is_multiple_of(bytes as u64) {
        return false;
    }
    let Some(va) = STATE.lock().windows.translate(phys, bytes as u64) else { return false };
    // SAFETY: `va..va + bytes` lies inside a window mapped (uncached: the
    // kernel maps device frames so) by `map_bar` or `map_window` and never
    // unmapped; it is aligned to its size, and device memory is reached
    // only by volatile accesses, never by references.
    unsafe {
        match bytes {
            1 => (va as *mut u8).write_volatile(value as u8),
            2 => (va as *mut u16).write_volatile(value as u16),
            _ => (va as *mut u32).write_volatile(value),
        }
    }
    true
}

/// A device register read, as [`mmio_write`]; `None` outside the windows.
pub fn mmio_read(phys: u64, bytes: usize) -> Option<u32> {
    if !matches!(bytes, 1 | 2 | 4) || !phys.is_multiple_of(bytes as u64) {
        return None;
    }
    let va = STATE.lock().windows.translate(phys, bytes as u64)?;
    // SAFETY: as in `mmio_write`.
    Some(unsafe {
        match bytes {
            1 => u32::from((va as *const u8).read_volatile()),
            2 => u32::from((va as *const u16).read_volatile()),
            _ => (va as *const u32).read_volatile(),
        }
    })
}

/// `virtio-drivers`' view of this process.
pub struct AlcoveHal;

// SAFETY: the `Hal` contract:
// 1. `dma_alloc` returns zeroed, contiguous, mapped pages with their physical
//    address (a kernel frame is physically contiguous), or paddr 0 on failure.
// 2. `mmio_phys_to_virt` returns a mapping of device memory (uncached: the
//    kernel maps device frames so) for addresses inside the windows; callers
//    check BARs with `covered` first.
// 3. `share` returns a physical address where the device sees the buffer's
//    contents (directly, for buffers inside a DMA frame, else a bounce frame
//    filled from the buffer), valid until `unshare`, which copies device
//    writes back to the buffer.
unsafe impl Hal for AlcoveHal {
    fn dma_alloc(pages: usize, _direction: BufferDirection) -> (PhysAddr, NonNull<u8>) {
        match STATE.lock().alloc(pages) {
            Ok(f) => (f.phys, NonNull::new(f.va as *mut u8).unwrap_or(NonNull::dangling())),
            Err(e) => {
                log::error!("DMA: no frame of {pages} pages: {e}");
                (0, NonNull::dangling())
            }
        }
    }

    unsafe fn dma_dealloc(paddr: PhysAddr, _vaddr: NonNull<u8>, _pages: usize) -> i32 {
        if STATE.lock().free(paddr) { 0 } else { -1 }
    }

    unsafe fn mmio_phys_to_virt(paddr: PhysAddr, size: usize) -> NonNull<u8> {
        match STATE.lock().windows.translate(paddr, size as u64) {
            Some(va) => NonNull::new(va as *mut u8).unwrap_or(NonNull::dangling()),
            None => {
                // Callers check BARs with `covered`; reaching here means a
                // device moved its BAR since. A dangling pointer faults on
                // first use and init restarts the driver.
                log::error!("MMIO at {paddr:#x} (+{size:#x}) is outside the mapped windows");
                NonNull::dangling()
            }
        }
    }

    unsafe fn share(buffer: NonNull<[u8]>, direction: BufferDirection) -> PhysAddr {
        let va = buffer.as_ptr() as *mut u8 as usize;
        let len = buffer.len();
        let mut s = STATE.lock();
        if let Some(f) = s.frames.iter().find(|f| f.contains(va, len)) {
            return f.phys_of(va);
        }
        let pages = len.div_ceil(PAGE).max(1);
        let frame = match s.bounce_pool.take(pages) {
            Some(f) => f,
            None => match s.alloc(pages) {
                Ok(f) => f,
                Err(e) => {
                    log::error!("DMA: no bounce frame for {len} bytes: {e}");
                    return 0;
                }
            },
        };
        if matches!(direction, BufferDirection::DriverToDevice | BufferDirection::Both) {
            // SAFETY: the `Hal` contract makes `buffer` valid for reads for
            // the call; the bounce frame is ours, mapped, at least `len` long.
            unsafe { core::ptr::copy_nonoverlapping(va as *const u8, frame.va as *mut u8, len) };
        }
        s.bounces.push(Bounce { frame, original: va, len });
        frame.phys
    }

    unsafe fn unshare(paddr: PhysAddr, buffer: NonNull<[u8]>, direction: BufferDirection) {
        let mut s = STATE.lock();
        let Some(i) = s.bounces.iter().position(|b| b.frame.phys == paddr) else { return };
        let b = s.bounces.swap_remove(i);
        if matches!(direction, BufferDirection::DeviceToDriver | BufferDirection::Both) {
            let len = b.len.min(buffer.len());
            // SAFETY: the `Hal` contract makes `buffer` (the one shared, at
            // `b.original`) valid for writes now that the device is done; the
            // bounce frame holds at least `len` bytes.
            unsafe { core::ptr::copy_nonoverlapping(b.frame.va as *const u8, b.original as *mut u8, len) };
        }
        if let Err(f) = s.bounce_pool.keep(b.frame) {
            s.free(f.phys);
        }
    }
}
