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
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use crate::mmio::{self, AccessKind, FaultKind, MemFault};
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
    /// The current privilege level: SS.DPL in protected mode (APM Vol. 2
    /// §15.5.1; SDM Vol. 3C §26.3.1.5 keeps it so under VMX), 3 in
    /// virtual-8086 mode, 0 in real mode.
    cpl: u8,
    /// RFLAGS.AC: with CR4.SMAP, supervisor data accesses to user pages are
    /// allowed only while it is set.
    ac: bool,
}

const CR0_PE: u64 = 1 << 0;
const CR0_WP: u64 = 1 << 16;
const CR0_PG: u64 = 1 << 31;
const CR4_PSE: u64 = 1 << 4;
const CR4_PAE: u64 = 1 << 5;
const CR4_LA57: u64 = 1 << 12;
const CR4_SMEP: u64 = 1 << 20;
const CR4_SMAP: u64 = 1 << 21;
const EFER_NXE: u64 = 1 << 11;
const EFER_LMA: u64 = 1 << 10;
const RFLAGS_AC: u64 = 1 << 18;
const RFLAGS_VM: u64 = 1 << 17;

// Paging-structure entry bits (SDM Vol. 3A §4.3-§4.5).
const PTE_P: u64 = 1 << 0;
const PTE_RW: u64 = 1 << 1;
const PTE_US: u64 = 1 << 2;
const PTE_PS: u64 = 1 << 7;
const PTE_XD: u64 = 1 << 63;
const PTE_ADDR: u64 = 0x000f_ffff_ffff_f000;

// Page-fault error code bits (SDM Vol. 3A §4.7, APM Vol. 2 §8.4.2).
pub const PF_PRESENT: u32 = 1 << 0;
pub const PF_WRITE: u32 = 1 << 1;
pub const PF_USER: u32 = 1 << 2;
pub const PF_RESERVED: u32 = 1 << 3;
pub const PF_FETCH: u32 = 1 << 4;

/// Why a walk stopped.
enum Stop {
    NotPresent,
    Reserved,
    NonCanonical,
    /// A paging structure outside guest RAM.
    TableNotRam(u64),
}

/// A finished walk: the physical address and the rights the levels grant
/// together (U/S and R/W are ANDed, XD ORed: SDM Vol. 3A §4.6.1).
struct Walk {
    gpa: u64,
    user: bool,
    writable: bool,
    no_exec: bool,
}

impl<'a, M: PhysMemory> GuestRam<'a, M> {
    /// Physical accesses only (virtual ones are identity, at CPL 0).
    pub fn physical(mem: &'a M) -> Self {
        Self { mem, cr0: 0, cr3: 0, cr4: 0, efer: 0, cpl: 0, ac: false }
    }

    /// With the paging state and privilege level `run` holds.
    pub fn for_vcpu(mem: &'a M, run: &VcpuRun) -> Self {
        let cpl = if run.cr0 & CR0_PE == 0 {
            0
        } else if run.rflags & RFLAGS_VM != 0 {
            3
        } else {
            ((run.segments[2].attrib >> 5) & 3) as u8
        };
        Self { mem, cr0: run.cr0, cr3: run.cr3, cr4: run.cr4, efer: run.efer, cpl, ac: run.rflags & RFLAGS_AC != 0 }
    }

    /// The guest-physical address of linear `va`, whatever the
    /// permissions: `None` where unmapped.
    pub fn translate(&self, va: u64) -> Option<u64> {
        self.walk(va).ok().map(|w| w.gpa)
    }

    /// The entries the guest's page-table walk for linear `va` reads, top
    /// level first, each with its guest-physical address, as far as the
    /// walk goes (none with paging off).
    pub fn entries_read(&self, va: u64) -> Vec<(u64, u64)> {
        let mut seen = Vec::new();
        let _ = self.walk_seeing(va, |gpa, e| seen.push((gpa, e)));
        seen
    }

    /// The guest's page-table walk for linear `va` in words, for a fault
    /// report: each entry read (`[its gpa] value`, top level first) and
    /// where the walk ended, e.g. `0xffff8000 (cr3 0x1000): [0x1ff8]
    /// 0x2003 [0x2000] 0x0: not present`. What the tables hold now, in
    /// guest RAM as the VMM sees it.
    pub fn walk_report(&self, va: u64) -> String {
        let mut out = format!("{va:#x} (cr3 {:#x}):", self.cr3);
        let end = self.walk_seeing(va, |gpa, e| out.push_str(&format!(" [{gpa:#x}] {e:#x}")));
        // A stop before any entry: "0x... (cr3 0x...): not canonical".
        let sep = if out.ends_with(':') { " " } else { ": " };
        let end = match end {
            Ok(_) if self.cr0 & CR0_PG == 0 => String::from(" paging off"),
            Ok(w) => format!(
                " -> gpa {:#x} ({}{}{})",
                w.gpa,
                if w.writable { "writable" } else { "read-only" },
                if w.user { ", user" } else { "" },
                if w.no_exec { ", no-execute" } else { "" }
            ),
            Err(Stop::NotPresent) => format!("{sep}not present"),
            Err(Stop::Reserved) => format!("{sep}reserved bit set"),
            Err(Stop::NonCanonical) => format!("{sep}not canonical"),
            Err(Stop::TableNotRam(gpa)) => format!("{sep}table entry at {gpa:#x} is not guest RAM"),
        };
        out.push_str(&end);
        out
    }

    fn entry(&self, gpa: u64, wide: bool) -> Result<u64, Stop> {
        let mut b = [0u8; 8];
        let n = if wide { 8 } else { 4 };
        if !self.mem.read(gpa, &mut b[..n]) {
            return Err(Stop::TableNotRam(gpa));
        }
        Ok(u64::from_le_bytes(b))
    }

    /// Walks the guest's tables for `va` in its paging mode: none, 32-bit
    /// (4 KiB and, with CR4.PSE, 4 MiB pages), PAE, 4-level and 5-level
    /// (SDM Vol. 3A §4.3-§4.5). Accessed and dirty bits are not set.
    fn walk(&self, va: u64) -> Result<Walk, Stop> {
        self.walk_seeing(va, |_, _| {})
    }

    /// [`GuestRam::walk`], telling `seen` each paging-structure entry it
    /// read (its guest-physical address and value), top level first.
    fn walk_seeing(&self, va: u64, mut seen: impl FnMut(u64, u64)) -> Result<Walk, Stop> {
        let mut read = |gpa: u64, wide: bool| -> Result<u64, Stop> {
            let e = self.entry(gpa, wide)?;
            seen(gpa, e);
            Ok(e)
        };
        let nxe = self.efer & EFER_NXE != 0;
        let mut w = Walk { gpa: va, user: true, writable: true, no_exec: false };
        if self.cr0 & CR0_PG == 0 {
            return Ok(w);
        }
        let take = |w: &mut Walk, e: u64| -> Result<(), Stop> {
            if e & PTE_P == 0 {
                return Err(Stop::NotPresent);
            }
            if e & PTE_XD != 0 && !nxe {
                return Err(Stop::Reserved);
            }
            w.user &= e & PTE_US != 0;
            w.writable &= e & PTE_RW != 0;
            w.no_exec |= e & PTE_XD != 0;
            Ok(())
        };
        if self.cr4 & CR4_PAE == 0 {
            // 32-bit paging: two levels of 4-byte entries, no XD.
            let va = va & 0xffff_ffff;
            let pde = read((self.cr3 & 0xffff_f000) + ((va >> 22) & 0x3ff) * 4, false)?;
            take(&mut w, pde & 0xffff_ffff)?;
            if pde & PTE_PS != 0 && self.cr4 & CR4_PSE != 0 {
                // PSE-36: bits 39:32 of the page in PDE bits 20:13.
                w.gpa = (pde & 0xffc0_0000) | ((pde >> 13) & 0xff) << 32 | (va & 0x3f_ffff);
                return Ok(w);
            }
            let pte = read((pde & 0xffff_f000) + ((va >> 12) & 0x3ff) * 4, false)?;
            take(&mut w, pte & 0xffff_ffff)?;
            w.gpa = (pte & 0xffff_f000) | (va & 0xfff);
            return Ok(w);
        }
        let (mut table, top) = if self.efer & EFER_LMA != 0 {
            let bits = if self.cr4 & CR4_LA57 != 0 { 57 } else { 48 };
            // Canonical: the bits above the top one copy it (SDM Vol. 1 §3.3.7.1).
            let high = (va as i64) >> (bits - 1);
            if high != 0 && high != -1 {
                return Err(Stop::NonCanonical);
            }
            (self.cr3 & PTE_ADDR, if bits == 57 { 4 } else { 3 })
        } else {
            // PAE: the PDPTE (no rights of its own), then two levels.
            let va = va & 0xffff_ffff;
            let pdpte = read((self.cr3 & 0xffff_ffe0) + ((va >> 30) & 3) * 8, true)?;
            if pdpte & PTE_P == 0 {
                return Err(Stop::NotPresent);
            }
            if pdpte & (0x1e6 | PTE_XD) != 0 {
                return Err(Stop::Reserved);
            }
            (pdpte & PTE_ADDR, 1)
        };
        for level in (0..=top).rev() {
            let shift = 12 + 9 * level;
            let e = read(table + ((va >> shift) & 0x1ff) * 8, true)?;
            take(&mut w, e)?;
            if level > 0 && e & PTE_PS != 0 {
                // 2 MiB (PD) and 1 GiB (PDPT) pages; PS is reserved above.
                if level > 2 {
                    return Err(Stop::Reserved);
                }
                let page_mask = (1u64 << shift) - 1;
                // Bits 12 (PAT) to the page size are reserved below it.
                if e & page_mask & !0x1fff & PTE_ADDR != 0 {
                    return Err(Stop::Reserved);
                }
                w.gpa = (e & PTE_ADDR & !page_mask) | (va & page_mask);
                return Ok(w);
            }
            if level == 0 {
                w.gpa = (e & PTE_ADDR) | (va & 0xfff);
                return Ok(w);
            }
            table = e & PTE_ADDR;
        }
        Err(Stop::NotPresent)
    }

    /// Whether the vCPU may make an access of `kind` at `va` (SDM Vol. 3A
    /// §4.6: U/S against CPL, R/W with CR0.WP for supervisor writes, XD,
    /// SMEP and SMAP), and its guest-physical address; a refusal carries
    /// the page-fault error code the hardware would give (§4.7).
    pub fn check(&self, va: u64, kind: AccessKind) -> Result<u64, MemFault> {
        let user = self.cpl == 3;
        let smep = self.cr4 & CR4_SMEP != 0;
        let smap = self.cr4 & CR4_SMAP != 0;
        let pae_nx = self.cr4 & CR4_PAE != 0 && self.efer & EFER_NXE != 0;
        let mut code = 0;
        if kind == AccessKind::Write {
            code |= PF_WRITE;
        }
        if user {
            code |= PF_USER;
        }
        if kind == AccessKind::Fetch && (smep || pae_nx) {
            code |= PF_FETCH;
        }
        let page = |error_code| MemFault { gva: va, kind: FaultKind::Page { error_code } };
        let w = match self.walk(va) {
            Ok(w) => w,
            Err(Stop::NotPresent) => return Err(page(code)),
            Err(Stop::Reserved) => return Err(page(code | PF_PRESENT | PF_RESERVED)),
            Err(Stop::NonCanonical) => return Err(MemFault { gva: va, kind: FaultKind::General }),
            Err(Stop::TableNotRam(gpa)) => return Err(MemFault { gva: va, kind: FaultKind::NotRam { gpa } }),
        };
        if self.cr0 & CR0_PG == 0 {
            return Ok(w.gpa);
        }
        let allowed = match (kind, user) {
            (AccessKind::Read, true) => w.user,
            (AccessKind::Write, true) => w.user && w.writable,
            (AccessKind::Fetch, true) => w.user && !w.no_exec,
            (AccessKind::Read, false) => !(w.user && smap && !self.ac),
            (AccessKind::Write, false) => {
                (w.writable || self.cr0 & CR0_WP == 0) && !(w.user && smap && !self.ac)
            }
            (AccessKind::Fetch, false) => !w.no_exec && !(w.user && smep),
        };
        if allowed { Ok(w.gpa) } else { Err(page(code | PF_PRESENT)) }
    }

    /// Checks every page-sized piece of `len` bytes at linear `va` for
    /// `kind`, then runs `f(offset in the access, gpa, length)` on each:
    /// nothing is touched unless the whole access is allowed.
    fn access(
        &self,
        va: u64,
        len: usize,
        kind: AccessKind,
        mut f: impl FnMut(usize, u64, usize) -> bool,
    ) -> Result<(), MemFault> {
        for pass in 0..2 {
            let mut done = 0;
            while done < len {
                let at = va.wrapping_add(done as u64);
                let n = ((0x1000 - (at & 0xfff)) as usize).min(len - done);
                let gpa = self.check(at, kind)?;
                if pass == 1 && !f(done, gpa, n) {
                    return Err(MemFault { gva: at, kind: FaultKind::NotRam { gpa } });
                }
                done += n;
            }
        }
        Ok(())
    }

    /// Whether `len` bytes at `gpa` are all guest RAM.
    fn is_ram(&self, gpa: u64, len: usize) -> bool {
        gpa.checked_add(len as u64).is_some_and(|end| end <= self.mem.size())
    }
}

impl<M: PhysMemory> mmio::GuestMemory for GuestRam<'_, M> {
    fn read(&mut self, gva: u64, buf: &mut [u8]) -> Result<(), MemFault> {
        let mem = self.mem;
        self.access(gva, buf.len(), AccessKind::Read, |at, gpa, n| mem.read(gpa, &mut buf[at..at + n]))
    }
    fn write(&mut self, gva: u64, data: &[u8]) -> Result<(), MemFault> {
        let mem = self.mem;
        // All of it must be RAM before any byte is written.
        self.access(gva, data.len(), AccessKind::Write, |_, gpa, n| self.is_ram(gpa, n))?;
        self.access(gva, data.len(), AccessKind::Write, |at, gpa, n| mem.write(gpa, &data[at..at + n]))
    }
    fn fetch(&mut self, gva: u64, buf: &mut [u8]) -> Result<(), MemFault> {
        let mem = self.mem;
        self.access(gva, buf.len(), AccessKind::Fetch, |at, gpa, n| mem.read(gpa, &mut buf[at..at + n]))
    }
    fn check(&mut self, gva: u64, kind: AccessKind) -> Result<u64, MemFault> {
        GuestRam::check(self, gva, kind)
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
    use crate::boot::long_mode;
    use crate::mmio::{self, EmulateError, GuestMemory as _, MmioBus};
    use abi::Segment;

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
        assert_eq!(g.read(0x4000_0000, &mut b), Err(MemFault { gva: 0x4000_0000, kind: FaultKind::Page { error_code: 0 } }));
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

    /// 4-level tables for the low 2 MiB: PML4 at 0x1000, PDPT 0x2000,
    /// PD 0x3000, PT 0x4000; the upper levels allow everything, so each
    /// page's own entry decides.
    fn tables(ram: &Ram) -> u64 {
        let all = PTE_P | PTE_RW | PTE_US;
        assert!(ram.write(0x1000, &(0x2000 | all).to_le_bytes()));
        assert!(ram.write(0x2000, &(0x3000 | all).to_le_bytes()));
        assert!(ram.write(0x3000, &(0x4000 | all).to_le_bytes()));
        0x1000
    }

    fn map(ram: &Ram, va: u64, gpa: u64, flags: u64) {
        assert!(va < 0x20_0000);
        assert!(ram.write(0x4000 + (va >> 12) * 8, &(gpa | flags).to_le_bytes()));
    }

    /// A 64-bit vCPU at `cpl` with those tables (NXE on, CR0.WP on).
    fn vcpu(cpl: u16) -> VcpuRun {
        let data = Segment { selector: 0, attrib: 0x93 | cpl << 5, limit: u32::MAX, base: 0 };
        let mut run = VcpuRun {
            cr0: CR0_PG | CR0_WP | CR0_PE,
            cr3: 0x1000,
            cr4: CR4_PAE,
            efer: EFER_LMA | (1 << 8) | EFER_NXE,
            rip: 0x8000,
            rflags: 2,
            segments: [data; 8],
            ..VcpuRun::ZERO
        };
        run.segments[1].attrib = 0x29b | cpl << 5;
        run
    }

    /// A device page that records its accesses.
    #[derive(Default)]
    struct Dev(Vec<(bool, u64, u8, u64)>);

    impl MmioBus for Dev {
        fn read(&mut self, gpa: u64, size: u8) -> u64 {
            self.0.push((false, gpa, size, 0));
            0x5a5a_5a5a_5a5a_5a5a & mmio_mask(size)
        }
        fn write(&mut self, gpa: u64, size: u8, value: u64) {
            self.0.push((true, gpa, size, value));
        }
    }

    fn mmio_mask(size: u8) -> u64 {
        if size >= 8 { u64::MAX } else { (1 << (8 * size)) - 1 }
    }

    const DEV_GPA: u64 = 0xfe00_0000;

    /// Emulates `bytes` for an exit at `DEV_GPA` with `run`'s paging state.
    fn emu(ram: &Ram, bytes: &[u8], run: &mut VcpuRun, dev: &mut Dev) -> Result<mmio::Done, EmulateError> {
        let mut mem = GuestRam::for_vcpu(ram, run);
        mmio::emulate(bytes, run, DEV_GPA, &mut mem, dev)
    }
    const P: u64 = PTE_P;
    const RW: u64 = PTE_RW;
    const US: u64 = PTE_US;

    fn page_fault(gva: u64, error_code: u32) -> EmulateError {
        EmulateError::Fault { rip: 0x8000, fault: MemFault { gva, kind: FaultKind::Page { error_code } } }
    }

    /// Issue finding 23: a guest user process with a device mapping cannot
    /// use `rep movs` to write a kernel-only or read-only page, nor read a
    /// kernel-only page: the emulator walks with the vCPU's CPL and rights
    /// and the guest gets its #PF (error code per SDM Vol. 3A §4.7).
    #[test]
    fn finding23_string_moves_honour_the_guests_page_permissions() {
        let ram = Ram(RefCell::new(vec![0u8; 0x10_0000]));
        tables(&ram);
        map(&ram, 0x10_0000, DEV_GPA, P | RW | US); // the user's device mapping
        map(&ram, 0x11_0000, 0x8_0000, P | RW); // kernel-only
        map(&ram, 0x12_0000, 0x9_0000, P | US); // user, read-only
        map(&ram, 0x13_0000, 0xa_0000, P | RW | US); // user, writable
        assert!(ram.write(0x8_0000, b"secret!!"));
        // rep movsb from the device into the kernel page, at CPL 3.
        let movsb = [0xf3, 0xa4];
        let mut run = vcpu(3);
        run.gprs[6] = 0x10_0000;
        run.gprs[7] = 0x11_0000;
        run.gprs[1] = 8;
        let mut dev = Dev::default();
        let e = emu(&ram, &movsb, &mut run, &mut dev).unwrap_err();
        assert_eq!(e, page_fault(0x11_0000, 0x7)); // P | W | U
        let mut b = [0u8; 8];
        assert!(ram.read(0x8_0000, &mut b));
        assert_eq!(&b, b"secret!!");
        assert!(dev.0.is_empty(), "the device was read for a write that cannot happen: {:?}", dev.0);
        assert_eq!((run.rip, run.gprs[1]), (0x8000, 8));
        // ... into the read-only user page: the same.
        run.gprs[7] = 0x12_0000;
        let e = emu(&ram, &movsb, &mut run, &mut dev).unwrap_err();
        assert_eq!(e, page_fault(0x12_0000, 0x7));
        // ... from the kernel page to the device: a read refused (P | U).
        let mut run = vcpu(3);
        run.gprs[6] = 0x11_0000;
        run.gprs[7] = 0x10_0000;
        run.gprs[1] = 8;
        let e = emu(&ram, &movsb, &mut run, &mut dev).unwrap_err();
        assert_eq!(e, page_fault(0x11_0000, 0x5));
        assert!(dev.0.is_empty());
        // ... from a page that is not mapped: not present (U only).
        run.gprs[6] = 0x14_0000;
        let e = emu(&ram, &movsb, &mut run, &mut dev).unwrap_err();
        assert_eq!(e, page_fault(0x14_0000, 0x4));
        // Its own writable page works, and so does the kernel at CPL 0.
        run.gprs[6] = 0x13_0000;
        emu(&ram, &movsb, &mut run, &mut dev).unwrap();
        assert_eq!(dev.0.len(), 8);
        let mut run = vcpu(0);
        run.gprs[6] = 0x10_0000;
        run.gprs[7] = 0x11_0000;
        run.gprs[1] = 8;
        emu(&ram, &movsb, &mut run, &mut dev).unwrap();
        assert!(ram.read(0x8_0000, &mut b));
        assert_eq!(b, [0x5a; 8]);
        // The kernel writing a read-only page: refused with CR0.WP (P | W),
        // allowed without.
        run.rip = 0x8000;
        run.gprs[1] = 1;
        run.gprs[6] = 0x10_0000;
        run.gprs[7] = 0x12_0000;
        let e = emu(&ram, &movsb, &mut run, &mut dev).unwrap_err();
        assert_eq!(e, page_fault(0x12_0000, 0x3));
        run.cr0 &= !CR0_WP;
        emu(&ram, &movsb, &mut run, &mut dev).unwrap();
    }

    #[test]
    fn page_walk_rights_and_error_codes() {
        let ram = Ram(RefCell::new(vec![0u8; 0x10_0000]));
        tables(&ram);
        map(&ram, 0x11_0000, 0x8_0000, P | RW); // kernel
        map(&ram, 0x12_0000, 0x9_0000, P | RW | US | PTE_XD); // user data, no-exec
        map(&ram, 0x13_0000, 0xa_0000, P | US); // user code
        let check = |run: &VcpuRun, va, kind| GuestRam::for_vcpu(&ram, run).check(va, kind);
        let pf = |gva, error_code| Err::<u64, _>(MemFault { gva, kind: FaultKind::Page { error_code } });
        let kernel = vcpu(0);
        let user = vcpu(3);
        assert_eq!(check(&kernel, 0x11_0123, AccessKind::Write), Ok(0x8_0123));
        assert_eq!(check(&user, 0x11_0123, AccessKind::Read), pf(0x11_0123, 0x5));
        // NX: a fetch from a no-exec page (P | I/D, and U at CPL 3).
        assert_eq!(check(&kernel, 0x12_0000, AccessKind::Fetch), pf(0x12_0000, 0x11));
        assert_eq!(check(&user, 0x12_0000, AccessKind::Fetch), pf(0x12_0000, 0x15));
        assert_eq!(check(&user, 0x13_0000, AccessKind::Fetch), Ok(0xa_0000));
        // SMEP: the kernel fetching user code; SMAP: the kernel reading
        // user data unless RFLAGS.AC.
        let mut k = vcpu(0);
        k.cr4 |= CR4_SMEP | CR4_SMAP;
        assert_eq!(check(&k, 0x13_0000, AccessKind::Fetch), pf(0x13_0000, 0x11));
        assert_eq!(check(&k, 0x12_0000, AccessKind::Read), pf(0x12_0000, 0x1));
        k.rflags |= RFLAGS_AC;
        assert_eq!(check(&k, 0x12_0000, AccessKind::Read), Ok(0x9_0000));
        // XD without EFER.NXE is a reserved bit (P | RSVD).
        let mut old = vcpu(0);
        old.efer &= !EFER_NXE;
        assert_eq!(check(&old, 0x12_0000, AccessKind::Read), pf(0x12_0000, 0x9));
        // Not canonical: #GP, not #PF.
        assert_eq!(
            check(&kernel, 0x8000_0000_0000, AccessKind::Read),
            Err(MemFault { gva: 0x8000_0000_0000, kind: FaultKind::General })
        );
        // Writes check every page before any byte is written.
        let mut g = GuestRam::for_vcpu(&ram, &user);
        map(&ram, 0x12_1000, 0xb_0000, P | US); // read-only after the data page
        assert_eq!(g.write(0x12_0ffe, &[1, 2, 3, 4]), pf(0x12_1000, 0x7).map(drop));
        let mut b = [0u8; 2];
        assert!(ram.read(0x9_0ffe, &mut b));
        assert_eq!(b, [0, 0]);
    }

    /// A fault report's walk names each entry read and where it ended,
    /// for a good mapping and for each way a walk stops; a garbage entry
    /// (a table pointer past RAM, reserved bits) is reported, not followed.
    #[test]
    fn walk_reports_each_level_and_where_it_stopped() {
        let ram = Ram(RefCell::new(vec![0u8; 0x10_0000]));
        tables(&ram);
        map(&ram, 0x11_0000, 0x8_0000, P | RW | PTE_XD);
        map(&ram, 0x11_1000, 0x9_0000, P);
        let kernel = vcpu(0);
        let g = GuestRam::for_vcpu(&ram, &kernel);
        assert_eq!(
            g.walk_report(0x11_0123),
            "0x110123 (cr3 0x1000): [0x1000] 0x2007 [0x2000] 0x3007 [0x3000] 0x4007 [0x4880] 0x8000000000080003 \
             -> gpa 0x80123 (writable, no-execute)"
        );
        assert_eq!(
            g.walk_report(0x11_1000),
            "0x111000 (cr3 0x1000): [0x1000] 0x2007 [0x2000] 0x3007 [0x3000] 0x4007 [0x4888] 0x90001 -> gpa 0x90000 (read-only)"
        );
        assert_eq!(
            g.walk_report(0x11_2000),
            "0x112000 (cr3 0x1000): [0x1000] 0x2007 [0x2000] 0x3007 [0x3000] 0x4007 [0x4890] 0x0: not present"
        );
        assert_eq!(g.walk_report(0x8000_0000_0000), "0x800000000000 (cr3 0x1000): not canonical");
        // The page directory's entry points past RAM.
        assert!(ram.write(0x3008, &(0xdead_b000u64 | P | RW).to_le_bytes()));
        assert_eq!(
            g.walk_report(0x20_0000),
            "0x200000 (cr3 0x1000): [0x1000] 0x2007 [0x2000] 0x3007 [0x3008] 0xdeadb003: table entry at 0xdeadb000 is not guest RAM"
        );
        // XD without EFER.NXE is a reserved bit; a 1 GiB page in the PML4 too.
        let mut old = vcpu(0);
        old.efer &= !EFER_NXE;
        assert!(GuestRam::for_vcpu(&ram, &old).walk_report(0x11_0000).ends_with("[0x4880] 0x8000000000080003: reserved bit set"));
        assert!(ram.write(0x1008, &(0x4000_0000u64 | P | PTE_PS).to_le_bytes()));
        assert!(g.walk_report(0x80_0000_0000).ends_with("[0x1008] 0x40000081: reserved bit set"), "{}", g.walk_report(0x80_0000_0000));
        // Paging off: no tables.
        assert_eq!(GuestRam::physical(&ram).walk_report(0x1234), "0x1234 (cr3 0x0): paging off");
    }

    /// 32-bit paging (4 KiB and 4 MiB pages) and PAE paging walk too.
    #[test]
    fn legacy_paging_modes_translate() {
        let ram = Ram(RefCell::new(vec![0u8; 0x10_0000]));
        // 32-bit: PD at 0x1000, PT at 0x2000; 0x0040_0000 a 4 MiB page.
        assert!(ram.write(0x1000, &(0x2003u32 | 4).to_le_bytes()));
        assert!(ram.write(0x1004, &(0x0080_0083u32).to_le_bytes()));
        assert!(ram.write(0x2000 + 5 * 4, &(0x7003u32).to_le_bytes()));
        let mut run = VcpuRun { cr0: CR0_PG | CR0_PE, cr3: 0x1000, cr4: CR4_PSE, ..VcpuRun::ZERO };
        run.segments[2].attrib = 0x93;
        let g = GuestRam::for_vcpu(&ram, &run);
        assert_eq!(g.translate(0x5123), Some(0x7123));
        assert_eq!(g.translate(0x0041_2345), Some(0x0081_2345));
        assert_eq!(g.check(0x6000, AccessKind::Read), Err(MemFault { gva: 0x6000, kind: FaultKind::Page { error_code: 0 } }));
        // PAE: PDPT at 0x3000 (32-byte aligned), PD 0x4000, PT 0x5000.
        assert!(ram.write(0x3000, &0x4001u64.to_le_bytes()));
        assert!(ram.write(0x4000, &0x5007u64.to_le_bytes()));
        assert!(ram.write(0x5000 + 2 * 8, &0xc001u64.to_le_bytes()));
        let run = VcpuRun { cr0: CR0_PG | CR0_PE, cr3: 0x3000, cr4: CR4_PAE, ..VcpuRun::ZERO };
        let g = GuestRam::for_vcpu(&ram, &run);
        assert_eq!(g.translate(0x2abc), Some(0xcabc));
        // Read-only: a supervisor write with WP clear is allowed.
        assert_eq!(g.check(0x2abc, AccessKind::Write), Ok(0xcabc));
    }

    /// Issue finding 24: an access split across two linear pages that map
    /// to unrelated physical pages goes to each page's own frame.
    #[test]
    fn finding24_split_access_goes_to_each_pages_own_frame() {
        let ram = Ram(RefCell::new(vec![0u8; 0x10_0000]));
        tables(&ram);
        map(&ram, 0x10_0000, 0x8_0000, P | RW); // RAM
        map(&ram, 0x10_1000, DEV_GPA, P | RW); // the device, elsewhere
        let mut run = vcpu(0);
        // mov [rax], ecx with two bytes on each side: the exit is at the
        // device page's start.
        run.gprs[0] = 0x10_0ffe;
        run.gprs[1] = 0x4433_2211;
        let mut dev = Dev::default();
        emu(&ram, &[0x89, 0x08], &mut run, &mut dev).unwrap();
        assert_eq!(dev.0, [(true, DEV_GPA, 2, 0x4433)]);
        let mut b = [0u8; 2];
        assert!(ram.read(0x8_0ffe, &mut b));
        assert_eq!(b, [0x11, 0x22]);
        assert_eq!(run.rip, 0x8002);
        // The RAM side read-only at CPL 0 with WP: #PF, nothing written.
        map(&ram, 0x10_0000, 0x8_0000, P);
        let mut run = vcpu(0);
        run.gprs[0] = 0x10_0ffe;
        let mut dev = Dev::default();
        let e = emu(&ram, &[0x89, 0x08], &mut run, &mut dev).unwrap_err();
        assert_eq!(e, page_fault(0x10_0ffe, 0x3));
        assert!(dev.0.is_empty());
    }
}
