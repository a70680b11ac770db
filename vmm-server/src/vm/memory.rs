//! Guest RAM as the device models and the instruction emulator see it.
//!
//! The runtime maps all guest RAM at one place in its own address space
//! and hands it over as a [`PhysMemory`] (on Alcove an
//! `alcove_rt::SharedMemory`: the guest writes it concurrently, so nothing
//! holds references into it). [`GuestRam`] puts the two views on top:
//! guest-physical addresses for virtqueues ([`crate::virtio::GuestMemory`])
//! and guest-virtual ones, through the guest's own page tables, for MMIO
//! instruction emulation ([`crate::mmio::GuestMemory`]). RAM larger than
//! the room below the PCI hole comes in two blocks
//! ([`crate::boot::layout::ram_blocks`]); [`RamMap`] joins them into one
//! [`PhysMemory`] by guest-physical address.

use abi::VcpuRun;

use crate::boot::long_mode;
use crate::mmio::{self, MemFault};
use crate::virtio::{self, MemError};

/// Bytes of guest RAM by guest-physical address.
pub trait PhysMemory {
    /// One past the highest address.
    fn size(&self) -> u64;
    /// False, and nothing copied, if the range is not all inside.
    fn read(&self, gpa: u64, buf: &mut [u8]) -> bool;
    fn write(&self, gpa: u64, data: &[u8]) -> bool;
    /// Whether `gpa..gpa + len` is all RAM (below [`PhysMemory::size`]
    /// unless the memory has holes).
    fn contains(&self, gpa: u64, len: u64) -> bool {
        gpa.checked_add(len).is_some_and(|end| end <= self.size())
    }
}

/// Guest RAM in blocks, each a [`PhysMemory`] of its own (addressed from
/// 0) placed at a guest-physical base: RAM below the PCI hole and RAM
/// above 4 GiB. An access must lie inside one block; one that touches a
/// hole (or runs from one block into the next) is refused like one past
/// the end.
pub struct RamMap<M: PhysMemory> {
    /// (guest-physical base, block), sorted, not overlapping.
    blocks: alloc::vec::Vec<(u64, M)>,
}

impl<M: PhysMemory> RamMap<M> {
    /// `blocks` as (guest-physical base, memory); `None` if two overlap
    /// or one runs past 2^64.
    pub fn new(mut blocks: alloc::vec::Vec<(u64, M)>) -> Option<Self> {
        blocks.sort_by_key(|(base, _)| *base);
        let mut end = 0u64;
        for (base, m) in &blocks {
            if *base < end {
                return None;
            }
            end = base.checked_add(m.size())?;
        }
        Some(Self { blocks })
    }

    /// The block holding all of `gpa..gpa + len`, and the offset in it.
    fn find(&self, gpa: u64, len: u64) -> Option<(&M, u64)> {
        let end = gpa.checked_add(len)?;
        let (base, m) = self.blocks.iter().rev().find(|(base, _)| *base <= gpa)?;
        (end - base <= m.size()).then(|| (m, gpa - base))
    }
}

impl<M: PhysMemory> RamMap<M> {
    /// Copies from guest-physical `gpa`; false (nothing copied) unless the
    /// range lies inside one block.
    pub fn read(&self, gpa: u64, buf: &mut [u8]) -> bool {
        self.find(gpa, buf.len() as u64).is_some_and(|(m, off)| m.read(off, buf))
    }

    /// Copies to guest-physical `gpa`; false (nothing copied) unless the
    /// range lies inside one block.
    pub fn write(&self, gpa: u64, data: &[u8]) -> bool {
        self.find(gpa, data.len() as u64).is_some_and(|(m, off)| m.write(off, data))
    }
}

impl<M: PhysMemory> PhysMemory for RamMap<M> {
    fn size(&self) -> u64 {
        self.blocks.last().map_or(0, |(base, m)| base + m.size())
    }
    fn read(&self, gpa: u64, buf: &mut [u8]) -> bool {
        RamMap::read(self, gpa, buf)
    }
    fn write(&self, gpa: u64, data: &[u8]) -> bool {
        RamMap::write(self, gpa, data)
    }
    fn contains(&self, gpa: u64, len: u64) -> bool {
        self.find(gpa, len).is_some()
    }
}

impl PhysMemory for alcove_rt::SharedMemory {
    fn size(&self) -> u64 {
        self.len()
    }
    fn read(&self, gpa: u64, buf: &mut [u8]) -> bool {
        alcove_rt::SharedMemory::read(self, gpa, buf)
    }
    fn write(&self, gpa: u64, data: &[u8]) -> bool {
        alcove_rt::SharedMemory::write(self, gpa, data)
    }
}

/// Guest RAM with the paging state of one vCPU (for virtual addresses).
pub struct GuestRam<'a, M: PhysMemory> {
    pub mem: &'a M,
    cr0: u64,
    cr3: u64,
    cr4: u64,
    efer: u64,
}

const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const EFER_LMA: u64 = 1 << 10;

impl<'a, M: PhysMemory> GuestRam<'a, M> {
    /// Physical accesses only (virtual ones are identity).
    pub fn physical(mem: &'a M) -> Self {
        Self { mem, cr0: 0, cr3: 0, cr4: 0, efer: 0 }
    }

    /// With the paging state `run` holds.
    pub fn for_vcpu(mem: &'a M, run: &VcpuRun) -> Self {
        Self { mem, cr0: run.cr0, cr3: run.cr3, cr4: run.cr4, efer: run.efer }
    }

    /// The guest-physical address of linear `va`: identity without
    /// paging, a 4-level walk in long mode; `None` where unmapped or in a
    /// paging mode not handled here (32-bit and PAE paging, which no 64-bit
    /// guest uses for device access).
    pub fn translate(&self, va: u64) -> Option<u64> {
        if self.cr0 & CR0_PG == 0 {
            return Some(va);
        }
        if self.efer & EFER_LMA == 0 || self.cr4 & CR4_PAE == 0 {
            return None;
        }
        let read = |gpa: u64| {
            let mut b = [0u8; 8];
            self.mem.read(gpa, &mut b).then(|| u64::from_le_bytes(b))
        };
        long_mode::translate(read, self.cr3, va)
    }

    /// Runs `f(offset in the access, gpa, length)` for each page-sized
    /// piece of `len` bytes at linear `va`.
    fn pieces(&self, va: u64, len: usize, mut f: impl FnMut(usize, u64, usize) -> bool) -> Result<(), MemFault> {
        let mut done = 0;
        while done < len {
            let at = va.wrapping_add(done as u64);
            let n = ((0x1000 - (at & 0xfff)) as usize).min(len - done);
            let gpa = self.translate(at).ok_or(MemFault { gva: at })?;
            if !f(done, gpa, n) {
                return Err(MemFault { gva: at });
            }
            done += n;
        }
        Ok(())
    }
}

impl<M: PhysMemory> mmio::GuestMemory for GuestRam<'_, M> {
    fn read(&mut self, gva: u64, buf: &mut [u8]) -> Result<(), MemFault> {
        let mem = self.mem;
        self.pieces(gva, buf.len(), |at, gpa, n| mem.read(gpa, &mut buf[at..at + n]))
    }
    fn write(&mut self, gva: u64, data: &[u8]) -> Result<(), MemFault> {
        let mem = self.mem;
        self.pieces(gva, data.len(), |at, gpa, n| mem.write(gpa, &data[at..at + n]))
    }
    fn translate(&mut self, gva: u64) -> Option<u64> {
        GuestRam::translate(self, gva)
    }
}

impl<M: PhysMemory> virtio::GuestMemory for GuestRam<'_, M> {
    fn check_range(&self, gpa: u64, len: u64) -> Result<(), MemError> {
        if self.mem.contains(gpa, len) { Ok(()) } else { Err(MemError { gpa, len }) }
    }
    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), MemError> {
        if self.mem.read(gpa, buf) { Ok(()) } else { Err(MemError { gpa, len: buf.len() as u64 }) }
    }
    fn write(&mut self, gpa: u64, data: &[u8]) -> Result<(), MemError> {
        if self.mem.write(gpa, data) { Ok(()) } else { Err(MemError { gpa, len: data.len() as u64 }) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::cell::RefCell;
    use alloc::vec;
    use alloc::vec::Vec;
    use crate::mmio::GuestMemory as _;

    struct Ram(RefCell<Vec<u8>>);

    impl PhysMemory for Ram {
        fn size(&self) -> u64 {
            self.0.borrow().len() as u64
        }
        fn read(&self, gpa: u64, buf: &mut [u8]) -> bool {
            let m = self.0.borrow();
            match m.get(gpa as usize..).and_then(|s| s.get(..buf.len())) {
                Some(s) if gpa <= usize::MAX as u64 => {
                    buf.copy_from_slice(s);
                    true
                }
                _ => false,
            }
        }
        fn write(&self, gpa: u64, data: &[u8]) -> bool {
            let mut m = self.0.borrow_mut();
            match m.get_mut(gpa as usize..).and_then(|s| s.get_mut(..data.len())) {
                Some(s) => {
                    s.copy_from_slice(data);
                    true
                }
                None => false,
            }
        }
    }

    #[test]
    fn virtual_accesses_walk_the_guests_tables_and_split_at_pages() {
        let ram = Ram(RefCell::new(vec![0u8; 0x40_0000]));
        // Identity tables for 1 GiB at 0x1000 (2 MiB pages) ...
        let mut tables = vec![0u8; long_mode::identity_map_bytes(1).unwrap()];
        let cr3 = long_mode::build_identity_map(&mut tables, 0x1000, 1).unwrap();
        assert!(ram.write(0x1000, &tables));
        let run = VcpuRun { cr0: CR0_PG | 1, cr3, cr4: CR4_PAE, efer: EFER_LMA | (1 << 8), ..VcpuRun::ZERO };
        let mut g = GuestRam::for_vcpu(&ram, &run);
        g.write(0x20_0ffe, &[1, 2, 3, 4]).unwrap();
        let mut b = [0u8; 4];
        g.read(0x20_0ffe, &mut b).unwrap();
        assert_eq!(b, [1, 2, 3, 4]);
        assert_eq!(mmio::GuestMemory::translate(&mut g, 0x12_3456), Some(0x12_3456));
        // Past 1 GiB nothing is mapped; past RAM nothing is readable.
        assert_eq!(g.read(0x4000_0000, &mut b), Err(MemFault { gva: 0x4000_0000 }));
        assert!(g.read(0x3f_fffe, &mut b).is_err());
        assert!(virtio::GuestMemory::check_range(&g, u64::MAX, 2).is_err());
        assert!(virtio::GuestMemory::check_range(&g, 0x3f_fffc, 4).is_ok());
        // Paging off: identity.
        let p = GuestRam::physical(&ram);
        assert_eq!(p.translate(0xdead_b000), Some(0xdead_b000));
    }

    /// RAM below the PCI hole and above 4 GiB, as a 4 GiB guest has it
    /// (scaled down: 64 KiB blocks at 0 and at 1 MiB).
    #[test]
    fn a_ram_map_reaches_both_blocks_and_refuses_the_hole() {
        let low = Ram(RefCell::new(vec![0u8; 0x1_0000]));
        let high = Ram(RefCell::new(vec![0u8; 0x1_0000]));
        let map = RamMap::new(vec![(0x10_0000, high), (0, low)]).unwrap();
        assert_eq!(map.size(), 0x11_0000);
        assert!(map.write(0xfffc, &[1, 2, 3, 4]));
        assert!(map.write(0x10_0000, &[5, 6]));
        assert!(map.write(0x10_fffe, &[7, 8]));
        let mut b = [0u8; 4];
        assert!(map.read(0xfffc, &mut b));
        assert_eq!(b, [1, 2, 3, 4]);
        assert!(map.read(0x10_fffc, &mut b));
        assert_eq!(b, [0, 0, 7, 8]);
        assert_eq!(map.blocks[1].1.0.borrow()[0..2], [5, 6]);
        // The hole, across the hole's edges, past the end, overflow.
        for (gpa, len) in [(0x1_0000, 1), (0xfffe, 4), (0xf_fffe, 4), (0x10_fffe, 4), (0x11_0000, 1), (u64::MAX, 2)] {
            let mut buf = vec![0u8; len];
            assert!(!map.read(gpa, &mut buf), "{gpa:#x}+{len}");
            assert!(!map.write(gpa, &buf), "{gpa:#x}+{len}");
            assert!(!map.contains(gpa, len as u64), "{gpa:#x}+{len}");
            assert!(virtio::GuestMemory::check_range(&GuestRam::physical(&map), gpa, len as u64).is_err());
        }
        assert!(virtio::GuestMemory::check_range(&GuestRam::physical(&map), 0x10_8000, 0x8000).is_ok());
        // Overlapping blocks are refused.
        let a = Ram(RefCell::new(vec![0u8; 0x2000]));
        let c = Ram(RefCell::new(vec![0u8; 0x2000]));
        assert!(RamMap::new(vec![(0, a), (0x1000, c)]).is_none());
    }
}
