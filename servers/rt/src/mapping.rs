//! Memory a process maps for itself, reached only through objects that own
//! the mapping (as rust-vmm's `vm-memory` does with `GuestMemoryMmap` and
//! `VolatileSlice`):
//!
//! * [`PrivateMapping`]: new frames mapped into this process alone. Until
//!   they are shared, nothing else can write them, so they are lent out as
//!   `&mut [u8]` (a VMM loads its guest's kernel this way).
//! * [`SharedMemory`]: memory another party writes concurrently (guest RAM
//!   once a vCPU runs, a ring another process serves). Only bounds-checked
//!   volatile copies reach it, never a reference; the mapping goes away
//!   when the last handle does.
//! * [`RunPage`]: a vCPU with its run page. The kernel writes the page
//!   during `VcpuRun`, which only [`RunPage::run`] calls, through `&mut
//!   self`: no reference into the page can be alive then.
//!
//! A capability slot a mapping object holds is its own: mapping it again
//! elsewhere through `libipc::sys` behind the object's back breaks the
//! object's guarantees (as using a file descriptor another object owns
//! does).

use alloc::sync::Arc;
use alloc::vec::Vec;

use abi::{CapSlot, Error, ObjectType, PAGE_SIZE, Rights, VcpuRun};

use crate::start::SLOT_SELF;
#[cfg(not(target_os = "none"))]
use crate::hostsys as sys;
#[cfg(target_os = "none")]
use libipc::sys;

const RW: Rights = Rights(Rights::READ.0 | Rights::WRITE.0);

/// A range of this process's address space that the owner mapped and
/// unmaps when dropped.
struct Mapped {
    va: u64,
    len: u64,
}

/// Pages one unmap call covers: the kernel gathers an unmap's frames
/// before it frees them, so a gigabyte of guest RAM goes in pieces.
const UNMAP_CHUNK_PAGES: u64 = 1024;

impl Drop for Mapped {
    fn drop(&mut self) {
        let pages = self.len.div_ceil(PAGE_SIZE);
        let mut done = 0;
        while done < pages {
            let n = (pages - done).min(UNMAP_CHUNK_PAGES);
            #[cfg(target_os = "none")]
            // SAFETY: this object made the mapping and is its only owner; it
            // is dropped when the last handle (and so the last user) goes.
            unsafe {
                let _ = sys::unmap(SLOT_SELF, self.va + done * PAGE_SIZE, n);
            }
            done += n;
        }
    }
}

/// Creates a frame of `pages` in `slot` and maps it at `va` in this
/// process; on failure nothing is left behind.
fn map_new_frame(slot: CapSlot, pages: u64, va: u64) -> Result<(), Error> {
    sys::create(ObjectType::Frame, slot, pages)?;
    if let Err(e) = sys::map(SLOT_SELF, slot, va, RW) {
        let _ = sys::cap_delete(slot);
        return Err(e);
    }
    Ok(())
}

/// New memory mapped into this process only: frames created in the slots
/// `slots` yields (one per `frame_pages` pages), mapped one after another
/// from `va`.
pub struct PrivateMapping {
    mapped: Mapped,
    frames: Vec<CapSlot>,
}

impl PrivateMapping {
    /// Creates and maps `len` bytes (rounded up to pages) from `va`, in
    /// frames of at most `frame_pages` pages, their capabilities in the
    /// slots `slots` yields. Fails without leaving anything mapped if a
    /// slot is taken, the budget is short or any part of the range is
    /// already mapped.
    pub fn create(va: u64, len: u64, frame_pages: u64, mut slots: impl Iterator<Item = CapSlot>) -> Result<Self, Error> {
        if !va.is_multiple_of(PAGE_SIZE) || frame_pages == 0 || va.checked_add(len).is_none() {
            return Err(Error::InvalidArgument);
        }
        let total = len.div_ceil(PAGE_SIZE);
        let mut this = PrivateMapping { mapped: Mapped { va, len: 0 }, frames: Vec::new() };
        let mut done = 0;
        while done < total {
            let pages = (total - done).min(frame_pages);
            let made = slots.next().ok_or(Error::InvalidSlot).and_then(|slot| {
                map_new_frame(slot, pages, va + done * PAGE_SIZE)?;
                Ok(slot)
            });
            match made {
                Ok(slot) => this.frames.push(slot),
                Err(e) => {
                    // Unmap what was mapped (dropping `this`), then free it.
                    let frames = core::mem::take(&mut this.frames);
                    drop(this);
                    for f in frames {
                        let _ = sys::cap_delete(f);
                    }
                    return Err(e);
                }
            }
            done += pages;
            this.mapped.len = done * PAGE_SIZE;
        }
        Ok(this)
    }

    /// The frames' capability slots, in address order (to map them
    /// elsewhere once shared: see [`Self::share`]).
    pub fn frames(&self) -> &[CapSlot] {
        &self.frames
    }

    /// The memory, this process's alone.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        #[cfg(target_os = "none")]
        {
            // SAFETY: `create` mapped `va..va + len` readable and writable
            // in this process from frames it made; no other mapping of them
            // exists (their slots are this object's) and `&mut self` makes
            // this the only reference until it ends.
            unsafe { core::slice::from_raw_parts_mut(self.mapped.va as *mut u8, self.mapped.len as usize) }
        }
        #[cfg(not(target_os = "none"))]
        {
            &mut []
        }
    }

    /// Gives up exclusive use: from now on the frames may be mapped
    /// elsewhere (into a guest, another process) and the memory is reached
    /// only through volatile copies. The frame slots stay the caller's.
    pub fn share(self) -> (SharedMemory, Vec<CapSlot>) {
        let PrivateMapping { mapped, frames } = self;
        let len = mapped.len;
        (SharedMemory { inner: Arc::new(mapped), offset: 0, len }, frames)
    }
}

/// Memory this process maps and someone else writes at the same time:
/// read and written only by bounds-checked volatile copies. A torn read
/// of data being written concurrently gives bytes inconsistent, which
/// every user of the data must check anyway. Cheap to clone; the mapping
/// goes when the last clone does.
#[derive(Clone)]
pub struct SharedMemory {
    inner: Arc<Mapped>,
    offset: u64,
    len: u64,
}

impl core::fmt::Debug for SharedMemory {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "SharedMemory({:#x}+{:#x})", self.inner.va + self.offset, self.len)
    }
}

impl SharedMemory {
    /// Maps the frame in `frame` (`pages` pages, another party's: a ring
    /// storaged serves) at `va` in this process.
    pub fn map_frame(frame: CapSlot, va: u64, pages: u64) -> Result<Self, Error> {
        let len = pages.checked_mul(PAGE_SIZE).ok_or(Error::InvalidArgument)?;
        sys::map(SLOT_SELF, frame, va, RW)?;
        Ok(SharedMemory { inner: Arc::new(Mapped { va, len }), offset: 0, len })
    }

    /// A handle on memory the caller mapped itself.
    ///
    /// # Safety
    ///
    /// `addr..addr + len` is mapped readable and writable in this process,
    /// stays mapped while any clone of the handle lives (dropping the last
    /// one unmaps it), and no Rust reference points into it.
    pub unsafe fn from_raw(addr: u64, len: u64) -> Self {
        SharedMemory { inner: Arc::new(Mapped { va: addr, len }), offset: 0, len }
    }

    pub const fn len(&self) -> u64 {
        self.len
    }

    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The part `offset..offset + len`, if inside.
    pub fn slice(&self, offset: u64, len: u64) -> Option<SharedMemory> {
        let end = offset.checked_add(len)?;
        (end <= self.len).then(|| SharedMemory { inner: self.inner.clone(), offset: self.offset + offset, len })
    }

    /// The address of `offset..offset + n` if it lies inside the region.
    fn span(&self, offset: u64, n: usize) -> Option<u64> {
        let end = offset.checked_add(n as u64)?;
        (end <= self.len).then(|| self.inner.va + self.offset + offset)
    }

    /// Copies `buf.len()` bytes from `offset`; false (and nothing copied)
    /// if that runs outside the region.
    pub fn read(&self, offset: u64, buf: &mut [u8]) -> bool {
        let Some(src) = self.span(offset, buf.len()) else { return false };
        #[cfg(target_os = "none")]
        // SAFETY: `src..src + len` lies inside the mapping, which lives as
        // long as `self.inner`; `buf` is this process's own, distinct memory.
        unsafe {
            volatile_copy(buf.as_mut_ptr(), src as *const u8, buf.len(), false)
        }
        #[cfg(not(target_os = "none"))]
        let _ = src;
        true
    }

    /// Copies `data` to `offset`; false (and nothing written) if that runs
    /// outside the region.
    pub fn write(&self, offset: u64, data: &[u8]) -> bool {
        let Some(dst) = self.span(offset, data.len()) else { return false };
        #[cfg(target_os = "none")]
        // SAFETY: `dst..dst + len` lies inside the mapping (writable, no
        // Rust reference into it), which lives as long as `self.inner`;
        // `data` is other memory.
        unsafe {
            volatile_copy(dst as *mut u8, data.as_ptr(), data.len(), true)
        }
        #[cfg(not(target_os = "none"))]
        let _ = dst;
        true
    }

    /// Reads a little-endian u64 at `offset`.
    pub fn read_u64(&self, offset: u64) -> Option<u64> {
        let mut b = [0u8; 8];
        self.read(offset, &mut b).then(|| u64::from_le_bytes(b))
    }
}

/// A block ring's region on the client's side: storaged writes it during a
/// kick (and a broken storaged at any time), so only copies reach it.
impl libipc::blkring::RingRegion for SharedMemory {
    fn len(&self) -> usize {
        self.len as usize
    }
    fn read(&self, offset: usize, buf: &mut [u8]) {
        // Out of range reads nothing (the client checked its geometry
        // against `len` once); the bytes stay as they were.
        let _ = SharedMemory::read(self, offset as u64, buf);
    }
    fn write(&mut self, offset: usize, data: &[u8]) {
        let _ = SharedMemory::write(self, offset as u64, data);
    }
}

/// Copies `n` bytes with volatile accesses on the shared side (`dst` when
/// `to_shared`, `src` otherwise), 8 bytes at a time where both sides allow.
///
/// # Safety
///
/// Both ranges are valid for the access and do not overlap.
#[cfg(any(target_os = "none", test))]
unsafe fn volatile_copy(dst: *mut u8, src: *const u8, n: usize, to_shared: bool) {
    // An aligned 32-bit word on the shared side (a frame ring's index) is
    // one access, whatever the private side's alignment: a peer on another
    // CPU updating it is never seen half old, half new.
    let shared = if to_shared { dst as usize } else { src as usize };
    if n == 4 && shared.is_multiple_of(4) {
        // SAFETY: both ranges are valid for 4 bytes (the caller's
        // contract); the shared side is 4-aligned, the private side is
        // accessed unaligned.
        unsafe {
            if to_shared {
                dst.cast::<u32>().write_volatile(src.cast::<u32>().read_unaligned());
            } else {
                dst.cast::<u32>().write_unaligned(src.cast::<u32>().read_volatile());
            }
        }
        return;
    }
    let mut i = 0;
    if (dst as usize) % 8 == (src as usize) % 8 {
        while i < n && !(dst as usize + i).is_multiple_of(8) {
            // SAFETY: `i < n`: inside both ranges (the caller's contract).
            unsafe { copy_byte(dst.add(i), src.add(i), to_shared) };
            i += 1;
        }
        while i + 8 <= n {
            // SAFETY: both addresses are 8-aligned here and `i + 8 <= n`.
            unsafe {
                let d = dst.add(i).cast::<u64>();
                let s = src.add(i).cast::<u64>();
                if to_shared { d.write_volatile(s.read()) } else { d.write(s.read_volatile()) }
            }
            i += 8;
        }
    }
    while i < n {
        // SAFETY: `i < n`: inside both ranges.
        unsafe { copy_byte(dst.add(i), src.add(i), to_shared) };
        i += 1;
    }
}

/// # Safety
///
/// Both pointers are valid for one byte.
#[cfg(any(target_os = "none", test))]
unsafe fn copy_byte(dst: *mut u8, src: *const u8, to_shared: bool) {
    // SAFETY: the caller's contract.
    unsafe {
        if to_shared { dst.write_volatile(src.read()) } else { dst.write(src.read_volatile()) }
    }
}

/// A vCPU and its run page, mapped in this process. The kernel reads the
/// page when the vCPU enters the guest and writes it when the run returns,
/// all inside [`RunPage::run`].
pub struct RunPage {
    vcpu: CapSlot,
    // Read on Alcove only (`state`); its `Drop` unmaps the page.
    #[cfg_attr(not(target_os = "none"), allow(dead_code))]
    mapped: Mapped,
}

// SAFETY: the object is the run page's only user; moving it to another
// thread moves that use with it (the kernel does not care which thread of
// the process runs the vCPU).
unsafe impl Send for RunPage {}

impl RunPage {
    /// Creates a run page (a frame in `frame_slot`, mapped at `va`) and a
    /// vCPU of `guest` on it (in `vcpu_slot`), its state zeroed.
    pub fn create(guest: CapSlot, frame_slot: CapSlot, vcpu_slot: CapSlot, va: u64) -> Result<Self, Error> {
        map_new_frame(frame_slot, 1, va)?;
        let mapped = Mapped { va, len: PAGE_SIZE };
        if let Err(e) = sys::create_from(ObjectType::Vcpu, vcpu_slot, u64::from(guest), frame_slot) {
            drop(mapped);
            let _ = sys::cap_delete(frame_slot);
            return Err(e);
        }
        let mut page = RunPage { vcpu: vcpu_slot, mapped };
        *page.state() = VcpuRun::ZERO;
        Ok(page)
    }

    /// The vCPU's capability slot (other threads may kick it or raise
    /// interrupts in it; only this object runs it).
    pub fn vcpu(&self) -> CapSlot {
        self.vcpu
    }

    /// Runs the vCPU until its next exit to the VMM (`VcpuRun`).
    pub fn run(&mut self) -> Result<u64, Error> {
        // SAFETY: `&mut self`: no reference into the run page is alive
        // while the kernel reads and writes it.
        unsafe { sys::vcpu_run(self.vcpu) }
    }

    /// The run page: the guest's registers and the last exit.
    pub fn state(&mut self) -> &mut VcpuRun {
        #[cfg(target_os = "none")]
        {
            // SAFETY: `create` mapped a writable page at `va` for this
            // object alone; `VcpuRun` is plain integers (any bit pattern is
            // valid); the kernel writes the page only inside `run`, which
            // needs `&mut self` and so cannot overlap this borrow.
            unsafe { &mut *(self.mapped.va as *mut VcpuRun) }
        }
        #[cfg(not(target_os = "none"))]
        {
            panic!("run pages exist only on Alcove")
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::volatile_copy;
    use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};
    use std::sync::Arc;

    /// A frame ring's index in shared memory, read by `volatile_copy` into
    /// a private buffer of any alignment while a peer thread keeps storing
    /// to it: every value read is one the peer stored, never half of two.
    #[test]
    fn an_aligned_word_is_read_whole_while_a_peer_writes_it() {
        const VALUES: [u32; 2] = [0x0000_0000, 0xffff_ffff];
        let word = Arc::new(AtomicU32::new(VALUES[0]));
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let (word, stop) = (word.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut i = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    word.store(VALUES[i % 2], Ordering::Relaxed);
                }
            })
        };
        let mut torn = 0u32;
        let mut buf = [0u8; 5];
        for _ in 0..2_000_000 {
            // SAFETY: the word is 4 bytes, aligned, alive for the loop (the
            // Arc); `buf[1..5]` is this thread's own memory (unaligned on
            // purpose). The peer only stores whole aligned words.
            unsafe { volatile_copy(buf.as_mut_ptr().add(1), word.as_ptr().cast::<u8>(), 4, false) };
            let v = u32::from_le_bytes([buf[1], buf[2], buf[3], buf[4]]);
            if !VALUES.contains(&v) {
                torn += 1;
            }
        }
        stop.store(true, Ordering::Relaxed);
        writer.join().unwrap();
        assert_eq!(torn, 0, "reads of the word saw a mix of two stores");
    }
}
