//! The kernel's direct map of physical memory at `PHYS_OFFSET`.
//!
//! The boot page tables (boot.s) map the first 4 GiB; firmware tables and MMIO
//! above that are mapped on demand with 2 MiB pages taken from a static pool
//! of page directories (one per GiB: firmware tables, and RAM above 4 GiB,
//! which the frame allocator manages), up to 512 GiB (one PDPT).

use super::{DIRECT_MAP_LIMIT, PHYS_OFFSET};
use spin::Mutex;

/// Page directories for the direct map above 4 GiB (4 KiB each): RAM up to
/// about 36 GiB, beyond which the frame allocator leaves it unused.
const PD_POOL: usize = 32;
const GIB: u64 = 1 << 30;
const REACH: u64 = 512 * GIB;

#[repr(C, align(4096))]
struct PageTable([u64; 512]);

struct Pool {
    tables: [PageTable; PD_POOL],
    used: usize,
}

static POOL: Mutex<Pool> = Mutex::new(Pool { tables: [const { PageTable([0; 512]) }; PD_POOL], used: 0 });

unsafe extern "C" {
    static boot_pml4: u8;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapError {
    /// Beyond the 512 GiB the direct map can reach.
    OutOfReach,
    /// The static pool of page directories is used up.
    PoolExhausted,
    /// Not a page of the kernel image mapped by the boot tables.
    NotKernelImage,
}

impl core::fmt::Display for MapError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            MapError::OutOfReach => write!(f, "beyond the 512 GiB direct map"),
            MapError::PoolExhausted => write!(f, "direct-map page directories used up"),
            MapError::NotKernelImage => write!(f, "not a page of the kernel image"),
        }
    }
}

/// The direct-map address of `[phys, phys + len)`, mapping it first if it
/// lies above the boot-time 4 GiB.
pub fn direct_map(phys: u64, len: u64) -> Result<u64, MapError> {
    let end = phys.checked_add(len.max(1)).ok_or(MapError::OutOfReach)?;
    if end <= DIRECT_MAP_LIMIT {
        return Ok(phys + PHYS_OFFSET);
    }
    if end > REACH {
        return Err(MapError::OutOfReach);
    }
    let mut pool = POOL.lock();
    let pml4 = &raw const boot_pml4 as u64 + PHYS_OFFSET;
    // SAFETY: boot_pml4 is the live kernel PML4 in .boot.bss, reachable through
    // the direct map; its entry 256 was set in boot.s to the direct map's PDPT,
    // whose address (bits 12..51) is physical memory below 4 GiB.
    let pdpt = unsafe { ((*(pml4 as *const [u64; 512]))[256] & 0x000f_ffff_ffff_f000) + PHYS_OFFSET };
    let pdpt = pdpt as *mut u64;
    for gib in phys / GIB..end.div_ceil(GIB) {
        // SAFETY: `gib` < 512 (checked against REACH); the PDPT is a live page
        // table page of 512 entries that only this function changes, under
        // the pool lock.
        let entry = unsafe { pdpt.add(gib as usize).read_volatile() };
        if entry & 1 != 0 {
            continue;
        }
        if pool.used == PD_POOL {
            return Err(MapError::PoolExhausted);
        }
        let used = pool.used;
        let pd = &mut pool.tables[used];
        for (i, e) in pd.0.iter_mut().enumerate() {
            // present | writable | huge; cache-disable for MMIO
            // safety is left to the PAT default (write-back) as firmware
            // tables are RAM.
            *e = (gib * GIB + (i as u64) * (2 << 20)) | 0x83;
        }
        let pd_phys = pd as *const PageTable as u64 - super::KERNEL_VMA;
        pool.used += 1;
        // SAFETY: as above; the new PD is a static that lives forever.
        unsafe { pdpt.add(gib as usize).write_volatile(pd_phys | 0x3) };
    }
    Ok(phys + PHYS_OFFSET)
}

/// The physical address of the boot PML4, whose kernel half every address
/// space shares (and whose identity map the AP trampoline needs).
pub fn boot_cr3() -> u64 {
    &raw const boot_pml4 as u64
}

/// Page tables for splitting 2 MiB pages of the kernel image (the kernel
/// stacks' guard pages: 32 stacks of 36 KiB span at most 2 such pages).
const PT_POOL: usize = 4;

static PT_POOL_TABLES: Mutex<(usize, [PageTable; PT_POOL])> = Mutex::new((0, [const { PageTable([0; 512]) }; PT_POOL]));

const PRESENT: u64 = 1;
const HUGE: u64 = 1 << 7;

/// Unmaps the 4 KiB page at `virt` of the kernel image, splitting the
/// 2 MiB boot mapping around it into 4 KiB pages first. The boot page
/// directories also hold the direct map of the same physical memory, so
/// the page goes from both views; every address space shares them.
pub fn unmap_kernel_page(virt: u64) -> Result<(), MapError> {
    if virt < super::KERNEL_VMA || !virt.is_multiple_of(4096) {
        return Err(MapError::NotKernelImage);
    }
    let entry = |table_phys: u64, index: u64| (table_phys + PHYS_OFFSET + index * 8) as *mut u64;
    let index = |shift: u32| (virt >> shift) & 511;
    // SAFETY: the boot tables are page tables reached through the direct
    // map (low 4 GiB, always mapped); this runs on the bootstrap CPU before
    // any other CPU starts, so nothing walks them concurrently; the split
    // maps every byte as before (the PD entry changes only after its page
    // table is complete) except the one page unmapped, which is a guard
    // page nothing uses.
    unsafe {
        let pdpt = *entry(boot_cr3(), index(39));
        if pdpt & PRESENT == 0 {
            return Err(MapError::NotKernelImage);
        }
        let pd = *entry(pdpt & ADDR, index(30));
        if pd & PRESENT == 0 || pd & HUGE != 0 {
            return Err(MapError::NotKernelImage);
        }
        let pde = entry(pd & ADDR, index(21));
        let mut e = *pde;
        if e & PRESENT == 0 {
            return Err(MapError::NotKernelImage);
        }
        if e & HUGE != 0 {
            let mut pool = PT_POOL_TABLES.lock();
            let (used, tables) = &mut *pool;
            let pt = tables.get_mut(*used).ok_or(MapError::PoolExhausted)?;
            *used += 1;
            let base = e & ADDR & !((1 << 21) - 1);
            // The 2 MiB entry's flags without PS (bit 7, which is PAT in a
            // 4 KiB entry: 0 for these write-back pages) and its PAT bit 12.
            let flags = e & !ADDR & !HUGE;
            for (j, pte) in pt.0.iter_mut().enumerate() {
                *pte = (base + j as u64 * 4096) | flags;
            }
            let pt_phys = pt as *const PageTable as u64 - super::KERNEL_VMA;
            e = pt_phys | (e & 0x7) | (e & (1 << 63));
            core::ptr::write_volatile(pde, e);
        }
        let pte = entry(e & ADDR, index(12));
        core::ptr::write_volatile(pte, 0);
    }
    super::cpu::write_cr3(super::cpu::read_cr3());
    Ok(())
}

/// The address bits of a page-table entry.
const ADDR: u64 = 0x000f_ffff_ffff_f000;
