//! Memory the machine's NIC reaches: DMA frames, the mapped BARs, and
//! `virtio-drivers`' `Hal` over them. The same discipline as storaged's
//! HAL (`storaged/src/bin/storaged/dma.rs`), trimmed to what the NIC
//! needs; the two should become one crate.
//!
//! **This is netd's only `unsafe` code**: turning addresses of mappings
//! this module made into pointers and slices, volatile writes to device
//! registers inside mapped BARs, and the `Hal` contract. Every block says
//! why it holds.
//!
//! * DMA frames are contiguous kernel frames (`Sys::Create` of a frame,
//!   physical address from `Sys::FrameInfo`), mapped read-write at
//!   addresses from a bump allocator that never reuses a range. The NIC's
//!   receive and transmit buffers are private frames ([`alloc_private`])
//!   that `share` hands to the device directly; anything else (the
//!   virtio-net header `virtio-drivers` keeps on the stack) is bounced
//!   through a one-page DMA frame from a small pool.
//! * Device memory: each BAR of the NIC is mapped through a frame derived
//!   from the manifest's `pci_bars` capability ([`map_bar`]);
//!   `mmio_phys_to_virt` and [`mmio_write`] translate inside those
//!   windows only.
//! * Capability slots: this module hands out every free slot of the
//!   process ([`take_slot`]), so the frames of the VNICs' rings and the
//!   NIC's never collide.
//!
//! The NIC is driven from netd's serving thread only; the state sits
//! behind one spin lock that is never held across a call into
//! `virtio-drivers`.

use alloc::vec::Vec;
use core::ptr::NonNull;

use abi::{CapSlot, ObjectType, PAGE_SIZE, Rights};
use alcove_rt::start::{SLOT_FREE, SLOT_SELF};
use libipc::sys;
use spin::Mutex;
use virtio_drivers::{BufferDirection, Hal, PhysAddr};

const PAGE: usize = PAGE_SIZE as usize;
/// Where DMA frames are mapped (bump-allocated, a guard page after each).
const DMA_VA_BASE: usize = 0x0000_1000_0000_0000;
/// Where BARs are mapped.
const MMIO_VA_BASE: usize = 0x0000_2000_0000_0000;
/// One-page bounce frames kept for reuse.
const BOUNCE_POOL: usize = 8;

#[derive(Clone, Copy, Debug)]
struct DmaFrame {
    slot: CapSlot,
    va: usize,
    phys: u64,
    pages: usize,
}

impl DmaFrame {
    fn contains(&self, va: usize, len: usize) -> bool {
        va >= self.va && va.checked_add(len).is_some_and(|end| end <= self.va + self.pages * PAGE)
    }
}

struct Bounce {
    frame: DmaFrame,
    original: usize,
    len: usize,
}

struct State {
    frames: Vec<DmaFrame>,
    bounce_pool: Vec<DmaFrame>,
    bounces: Vec<Bounce>,
    /// (phys, bytes, va) of each mapped BAR.
    windows: Vec<(u64, u64, usize)>,
    free_slots: Vec<CapSlot>,
    next_slot: CapSlot,
    next_va: usize,
    next_mmio_va: usize,
}

static STATE: Mutex<State> = Mutex::new(State {
    frames: Vec::new(),
    bounce_pool: Vec::new(),
    bounces: Vec::new(),
    windows: Vec::new(),
    free_slots: Vec::new(),
    next_slot: SLOT_FREE,
    next_va: DMA_VA_BASE,
    next_mmio_va: MMIO_VA_BASE,
});

impl State {
    fn slot(&mut self) -> CapSlot {
        self.free_slots.pop().unwrap_or_else(|| {
            let s = self.next_slot;
            self.next_slot += 1;
            s
        })
    }

    fn alloc(&mut self, pages: usize) -> Result<DmaFrame, abi::Error> {
        let slot = self.slot();
        if let Err(e) = sys::create(ObjectType::Frame, slot, pages as u64) {
            self.free_slots.push(slot);
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
                self.free_slots.push(slot);
                return Err(e);
            }
        };
        self.next_va += (pages + 1) * PAGE;
        let frame = DmaFrame { slot, va, phys: info.phys_addr, pages };
        // SAFETY: the frame was mapped readable and writable at `va` just
        // now and nobody else maps it: plain stores into our own pages.
        unsafe { core::ptr::write_bytes(va as *mut u8, 0, pages * PAGE) };
        self.frames.push(frame);
        Ok(frame)
    }

    fn free(&mut self, phys: u64) -> bool {
        let Some(i) = self.frames.iter().position(|f| f.phys == phys) else { return false };
        let f = self.frames.swap_remove(i);
        // SAFETY: the frame was handed out by `alloc` and given back by its
        // only user (`Hal::dma_dealloc`'s contract, or a bounce that ended),
        // so no reference into the range is left.
        let _ = unsafe { sys::unmap(SLOT_SELF, f.va as u64, f.pages as u64) };
        let _ = sys::cap_delete(f.slot);
        self.free_slots.push(f.slot);
        true
    }

    fn window(&self, phys: u64, len: usize) -> Option<usize> {
        self.windows
            .iter()
            .find(|&&(base, size, _)| phys >= base && phys.checked_add(len as u64).is_some_and(|e| e <= base + size))
            .map(|&(base, _, va)| va + (phys - base) as usize)
    }
}

/// An empty capability slot of this process.
pub fn take_slot() -> CapSlot {
    STATE.lock().slot()
}

/// Gives back a slot from [`take_slot`], emptied by the caller.
pub fn give_slot(slot: CapSlot) {
    STATE.lock().free_slots.push(slot);
}

/// A new DMA frame of `pages` pages that stays netd's alone (its
/// capability is never handed out): the NIC's buffers.
pub fn alloc_private(pages: usize) -> Result<&'static mut [u8], abi::Error> {
    let frame = STATE.lock().alloc(pages)?;
    // SAFETY: `alloc` mapped the frame readable and writable at `va`; its
    // capability stays in this process and the frame is never freed, so
    // this slice is the only way to the memory for the process's life
    // (the device writes it only between `share` and `unshare`, while
    // `virtio-drivers` holds the borrow).
    Ok(unsafe { core::slice::from_raw_parts_mut(frame.va as *mut u8, pages * PAGE) })
}

/// Maps the pages holding `phys..phys+len` (a device's BAR) through a
/// frame derived from the device-memory capability in `root` (the
/// manifest's `pci_bars`), unless a mapped window covers them already.
pub fn map_bar(root: CapSlot, phys: u64, len: u64) -> Result<(), abi::Error> {
    if covered(phys, len) {
        return Ok(());
    }
    let base = phys & !(PAGE as u64 - 1);
    let end = phys.checked_add(len).ok_or(abi::Error::InvalidArgument)?;
    let pages = (end - base).div_ceil(PAGE as u64);
    let mut s = STATE.lock();
    let slot = s.slot();
    if let Err(e) = sys::create_device_frame(slot, base, pages, root) {
        s.free_slots.push(slot);
        return Err(e);
    }
    let va = s.next_mmio_va;
    if let Err(e) = sys::map(SLOT_SELF, slot, va as u64, Rights::READ | Rights::WRITE) {
        let _ = sys::cap_delete(slot);
        s.free_slots.push(slot);
        return Err(e);
    }
    s.next_mmio_va += pages as usize * PAGE + PAGE;
    s.windows.push((base, pages * PAGE as u64, va));
    Ok(())
}

/// Whether `phys..phys+len` lies inside a mapped BAR.
pub fn covered(phys: u64, len: u64) -> bool {
    let end = phys.checked_add(len);
    STATE.lock().windows.iter().any(|&(base, size, _)| phys >= base && end.is_some_and(|e| e <= base + size))
}

/// A device register write: `value` (1, 2 or 4 bytes, little-endian as
/// PCI is) at `phys`, which must lie inside a mapped BAR; `false` if it
/// does not (nothing is written).
pub fn mmio_write(phys: u64, value: u32, bytes: usize) -> bool {
    if !matches!(bytes, 1 | 2 | 4) || !phys.is_multiple_of(bytes as u64) {
        return false;
    }
    let Some(va) = STATE.lock().window(phys, bytes) else { return false };
    // SAFETY: `va..va + bytes` lies inside a BAR mapped (uncached) by
    // `map_bar` and never unmapped; it is aligned to its size, and device
    // memory is reached only by volatile accesses, never by references.
    unsafe {
        match bytes {
            1 => (va as *mut u8).write_volatile(value as u8),
            2 => (va as *mut u16).write_volatile(value as u16),
            _ => (va as *mut u32).write_volatile(value),
        }
    }
    true
}

/// A device register read, as [`mmio_write`]; `None` outside the BARs.
pub fn mmio_read(phys: u64, bytes: usize) -> Option<u32> {
    if !matches!(bytes, 1 | 2 | 4) || !phys.is_multiple_of(bytes as u64) {
        return None;
    }
    let va = STATE.lock().window(phys, bytes)?;
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
//    kernel maps device frames so) for addresses inside the mapped BARs;
//    callers check BARs with `covered` first.
// 3. `share` returns a physical address where the device sees the buffer's
//    contents (directly, for buffers inside a DMA frame, else a bounce page
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
        match STATE.lock().window(paddr, size) {
            Some(va) => NonNull::new(va as *mut u8).unwrap_or(NonNull::dangling()),
            None => {
                // Callers check BARs with `covered`; reaching here means a
                // device moved its BAR since. A dangling pointer faults on
                // first use and init restarts netd.
                log::error!("MMIO at {paddr:#x} (+{size:#x}) is outside the mapped BARs");
                NonNull::dangling()
            }
        }
    }

    unsafe fn share(buffer: NonNull<[u8]>, direction: BufferDirection) -> PhysAddr {
        let va = buffer.as_ptr() as *mut u8 as usize;
        let len = buffer.len();
        let mut s = STATE.lock();
        if let Some(f) = s.frames.iter().find(|f| f.contains(va, len)) {
            return f.phys + (va - f.va) as u64;
        }
        let pages = len.div_ceil(PAGE).max(1);
        let frame = match (pages, s.bounce_pool.pop()) {
            (1, Some(f)) => f,
            (_, pooled) => {
                if let Some(f) = pooled {
                    s.bounce_pool.push(f);
                }
                match s.alloc(pages) {
                    Ok(f) => f,
                    Err(e) => {
                        log::error!("DMA: no bounce frame for {len} bytes: {e}");
                        return 0;
                    }
                }
            }
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
        if b.frame.pages == 1 && s.bounce_pool.len() < BOUNCE_POOL {
            s.bounce_pool.push(b.frame);
        } else {
            s.free(b.frame.phys);
        }
    }
}
