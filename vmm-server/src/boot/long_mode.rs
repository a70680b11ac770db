//! What a vCPU needs to start in 64-bit mode: identity-mapped page tables,
//! a flat GDT, and the control registers, EFER and segment state that go
//! with them (SDM Vol. 3A §9.8.5 "Initializing IA-32e Mode"; AMD APM Vol. 2
//! §14.6 "Enabling and Activating Long Mode").
//!
//! The VMM writes the tables and the GDT into guest memory and loads the
//! state into the run page; [`super::linux::set_boot_vcpu`] adds the Linux
//! specifics (entry point, zero page in RSI).

use abi::{Segment, VcpuRun};
use core::fmt;

use super::le;

pub const PAGE_SIZE: u64 = 0x1000;
const ENTRIES: u64 = 512;
const TWO_MIB: u64 = 1 << 21;
const ONE_GIB: u64 = 1 << 30;

// Page-table entry bits (SDM Vol. 3A §4.5, Table 4-15 ff.).
const PTE_PRESENT: u64 = 1 << 0;
const PTE_WRITABLE: u64 = 1 << 1;
const PTE_PAGE_SIZE: u64 = 1 << 7;
/// Physical address bits 12..51 of an entry.
const PTE_ADDR: u64 = 0x000f_ffff_ffff_f000;
/// The highest physical address an entry can name (MAXPHYADDR ≤ 52).
const PHYS_LIMIT: u64 = 1 << 52;

/// The most one PDPT (one PML4 entry) covers with 2 MiB pages.
pub const MAX_IDENTITY_GIB: u64 = 512;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PagingError {
    /// Asked to map 0 GiB or more than [`MAX_IDENTITY_GIB`].
    BadSize { gib: u64 },
    /// The tables' guest-physical base is not 4 KiB aligned.
    Misaligned { base: u64 },
    /// The tables would sit past the 52-bit physical address limit.
    TooHigh { base: u64 },
    /// The buffer is smaller than [`identity_map_bytes`].
    BufferTooSmall { needed: usize, got: usize },
}

impl fmt::Display for PagingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadSize { gib } => {
                write!(f, "page tables: must map 1 to {MAX_IDENTITY_GIB} GiB, got {gib}")
            }
            Self::Misaligned { base } => write!(f, "page tables: base {base:#x} is not 4 KiB aligned"),
            Self::TooHigh { base } => write!(f, "page tables: base {base:#x} is beyond 52-bit physical addresses"),
            Self::BufferTooSmall { needed, got } => {
                write!(f, "page tables: buffer of {got} bytes, need {needed}")
            }
        }
    }
}

/// Bytes of page tables to identity-map `gib` GiB with 2 MiB pages: one
/// PML4, one PDPT and one page directory per GiB.
pub fn identity_map_bytes(gib: u64) -> Result<usize, PagingError> {
    if gib == 0 || gib > MAX_IDENTITY_GIB {
        return Err(PagingError::BadSize { gib });
    }
    Ok(((2 + gib) * PAGE_SIZE) as usize)
}

/// Writes 4-level page tables identity-mapping `[0, gib GiB)` with 2 MiB
/// pages, present and writable, into `buf`, which the VMM then copies to
/// guest-physical `base`. Returns the CR3 value (the PML4's address).
///
/// Layout in `buf`: PML4 at 0, PDPT at 4 KiB, then the page directories.
pub fn build_identity_map(buf: &mut [u8], base: u64, gib: u64) -> Result<u64, PagingError> {
    let needed = identity_map_bytes(gib)?;
    if !base.is_multiple_of(PAGE_SIZE) {
        return Err(PagingError::Misaligned { base });
    }
    if base.checked_add(needed as u64).is_none_or(|end| end > PHYS_LIMIT) {
        return Err(PagingError::TooHigh { base });
    }
    let Some(tables) = buf.get_mut(..needed) else {
        return Err(PagingError::BufferTooSmall { needed, got: buf.len() });
    };
    tables.fill(0);
    let pdpt = base + PAGE_SIZE;
    le::put_u64(tables, 0, pdpt | PTE_PRESENT | PTE_WRITABLE);
    for g in 0..gib {
        let pd = base + (2 + g) * PAGE_SIZE;
        le::put_u64(tables, (PAGE_SIZE + g * 8) as usize, pd | PTE_PRESENT | PTE_WRITABLE);
        for i in 0..ENTRIES {
            let phys = g * ONE_GIB + i * TWO_MIB;
            let off = ((2 + g) * PAGE_SIZE + i * 8) as usize;
            le::put_u64(tables, off, phys | PTE_PRESENT | PTE_WRITABLE | PTE_PAGE_SIZE);
        }
    }
    Ok(base)
}

/// Translates `va` through 4-level page tables rooted at `cr3`, reading
/// each 8-byte entry through `read_u64(guest_physical_address)` (`None`
/// where that is not readable). Handles 4 KiB, 2 MiB and 1 GiB pages;
/// returns `None` for a non-canonical address, a non-present entry or an
/// unreadable table. Permissions are not checked.
pub fn translate(read_u64: impl Fn(u64) -> Option<u64>, cr3: u64, va: u64) -> Option<u64> {
    // Canonical: bits 63..47 all equal (SDM Vol. 1 §3.3.7.1).
    let top = va >> 47;
    if top != 0 && top != (1 << 17) - 1 {
        return None;
    }
    let mut table = cr3 & PTE_ADDR;
    for level in (0..4u32).rev() {
        let shift = 12 + 9 * level;
        let index = (va >> shift) & (ENTRIES - 1);
        let entry = read_u64(table + index * 8)?;
        if entry & PTE_PRESENT == 0 {
            return None;
        }
        // PS means a leaf in the PDPT (1 GiB) and the PD (2 MiB).
        if level == 0 || ((level == 1 || level == 2) && entry & PTE_PAGE_SIZE != 0) {
            let page_mask = (1u64 << shift) - 1;
            return Some((entry & PTE_ADDR & !page_mask) | (va & page_mask));
        }
        table = entry & PTE_ADDR;
    }
    None
}

/// The boot GDT: null, unused, then the flat 64-bit code and data
/// descriptors at the selectors Linux's 64-bit boot protocol names
/// (`__BOOT_CS` 0x10, `__BOOT_DS` 0x18; boot.rst §"64-bit Boot Protocol").
/// Code: base 0, limit 4 GiB (G), present, DPL 0, execute/read, accessed,
/// L = 1, D = 0. Data: base 0, limit 4 GiB, read/write, accessed, D/B = 1.
pub const BOOT_GDT: [u64; 4] = [0, 0, 0x00af_9b00_0000_ffff, 0x00cf_9300_0000_ffff];
pub const BOOT_CS: u16 = 0x10;
pub const BOOT_DS: u16 = 0x18;
/// The GDT's size in bytes (GDTR limit is this minus one).
pub const BOOT_GDT_BYTES: usize = BOOT_GDT.len() * 8;

/// [`BOOT_GDT`] as the bytes to place in guest memory.
pub fn boot_gdt_bytes() -> [u8; BOOT_GDT_BYTES] {
    let mut b = [0u8; BOOT_GDT_BYTES];
    for (i, d) in BOOT_GDT.iter().enumerate() {
        le::put_u64(&mut b, i * 8, *d);
    }
    b
}

/// A segment descriptor's attributes in the VMCB `attrib` layout: access
/// byte (descriptor bits 40..47) in bits 0..7, flags (AVL, L, D/B, G:
/// descriptor bits 52..55) in bits 8..11.
pub const fn descriptor_attrib(descriptor: u64) -> u16 {
    (((descriptor >> 40) & 0xff) | (((descriptor >> 52) & 0xf) << 8)) as u16
}

// Control register and EFER bits (SDM Vol. 3A §2.5, §2.2.1).
pub const CR0_PE: u64 = 1 << 0;
pub const CR0_ET: u64 = 1 << 4;
pub const CR0_NE: u64 = 1 << 5;
pub const CR0_PG: u64 = 1 << 31;
pub const CR4_PAE: u64 = 1 << 5;
pub const EFER_LME: u64 = 1 << 8;
pub const EFER_LMA: u64 = 1 << 10;
/// RFLAGS with only the always-one bit 1: interrupts off.
pub const RFLAGS_RESERVED: u64 = 1 << 1;

/// The CR0, CR4 and EFER values of the 64-bit entry: protected mode and
/// paging on, PAE, long mode enabled and active.
pub const LONG_MODE_CR0: u64 = CR0_PE | CR0_ET | CR0_NE | CR0_PG;
pub const LONG_MODE_CR4: u64 = CR4_PAE;
pub const LONG_MODE_EFER: u64 = EFER_LME | EFER_LMA;

// `VcpuRun::segments` order.
const ES: usize = 0;
const CS: usize = 1;
const SS: usize = 2;
const DS: usize = 3;
const FS: usize = 4;
const GS: usize = 5;
const LDTR: usize = 6;
const TR: usize = 7;

/// Puts the system state of `run` in flat 64-bit mode: CR0/CR3/CR4/EFER,
/// CS = [`BOOT_CS`], DS/ES/SS/FS/GS = [`BOOT_DS`] with the attributes of
/// [`BOOT_GDT`], GDTR at `gdt_base`, an empty IDT, a present LDT and busy
/// 64-bit TSS (both unused, but VMX requires them usable-looking), RFLAGS
/// with interrupts off. Sets `LOAD_SYSTEM`; GPRs and RIP are the caller's.
pub fn set_flat_long_mode(run: &mut VcpuRun, cr3: u64, gdt_base: u64) {
    run.cr0 = LONG_MODE_CR0;
    run.cr2 = 0;
    run.cr3 = cr3;
    run.cr4 = LONG_MODE_CR4;
    run.efer = LONG_MODE_EFER;
    run.rflags = RFLAGS_RESERVED;
    let flat = |selector: u16| Segment {
        selector,
        attrib: descriptor_attrib(BOOT_GDT[(selector / 8) as usize]),
        limit: 0xffff_ffff,
        base: 0,
    };
    let data = flat(BOOT_DS);
    for seg in [ES, SS, DS, FS, GS] {
        run.segments[seg] = data;
    }
    run.segments[CS] = flat(BOOT_CS);
    run.segments[LDTR] = Segment { selector: 0, attrib: 0x82, limit: 0xffff, base: 0 };
    run.segments[TR] = Segment { selector: 0, attrib: 0x8b, limit: 0x67, base: 0 };
    run.gdtr = Segment { selector: 0, attrib: 0, limit: (BOOT_GDT_BYTES - 1) as u32, base: gdt_base };
    run.idtr = Segment { selector: 0, attrib: 0, limit: 0, base: 0 };
    run.load_state |= abi::LOAD_SYSTEM;
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    const GIB: u64 = 1 << 30;

    fn reader(buf: &[u8], base: u64) -> impl Fn(u64) -> Option<u64> + '_ {
        move |gpa| {
            let off = usize::try_from(gpa.checked_sub(base)?).ok()?;
            le::u64_at(buf, off)
        }
    }

    #[test]
    fn identity_map_translates_every_address_to_itself() {
        let base = 0x9000;
        let mut buf = vec![0xaau8; identity_map_bytes(4).unwrap()];
        assert_eq!(buf.len(), 6 * 4096);
        let cr3 = build_identity_map(&mut buf, base, 4).unwrap();
        assert_eq!(cr3, base);
        let t = |va| translate(reader(&buf, base), cr3, va);
        for va in [0, 0x1234, 0x20_0000, 0x100_0200, GIB - 1, GIB, 0xfee0_0000, 4 * GIB - 1] {
            assert_eq!(t(va), Some(va), "{va:#x}");
        }
        // Beyond the mapped 4 GiB, in another PML4 slot, non-canonical.
        assert_eq!(t(4 * GIB), None);
        assert_eq!(t(512 * GIB), None);
        assert_eq!(t(0x0000_8000_0000_0000), None);
        // Entries: PML4[0] → PDPT, PDPT[3] → 4th PD, PD entries are 2 MiB leaves.
        assert_eq!(le::u64_at(&buf, 0), Some(0xa003));
        assert_eq!(le::u64_at(&buf, 4096 + 3 * 8), Some(0xe003));
        assert_eq!(le::u64_at(&buf, 4096 + 4 * 8), Some(0), "unmapped PDPT slots are zeroed");
        assert_eq!(le::u64_at(&buf, 2 * 4096 + 8), Some(0x20_0083));
    }

    #[test]
    fn identity_map_rejects_bad_requests() {
        let mut buf = vec![0u8; 3 * 4096];
        assert_eq!(build_identity_map(&mut buf, 0x1000, 0), Err(PagingError::BadSize { gib: 0 }));
        assert_eq!(build_identity_map(&mut buf, 0x1000, 513), Err(PagingError::BadSize { gib: 513 }));
        assert_eq!(build_identity_map(&mut buf, 0x1001, 1), Err(PagingError::Misaligned { base: 0x1001 }));
        assert_eq!(
            build_identity_map(&mut buf, (1 << 52) - 0x1000, 1),
            Err(PagingError::TooHigh { base: (1 << 52) - 0x1000 })
        );
        assert_eq!(
            build_identity_map(&mut buf, 0x1000, 2),
            Err(PagingError::BufferTooSmall { needed: 4 * 4096, got: 3 * 4096 })
        );
        assert_eq!(build_identity_map(&mut buf, 0x1000, 1), Ok(0x1000));
    }

    #[test]
    fn translate_handles_4k_and_1g_pages() {
        // PML4 at 0, PDPT at 0x1000 with a 1 GiB page in slot 1 and a PD in
        // slot 0; PD at 0x2000 → PT at 0x3000; PT[5] maps 0x5000 → 0x7_7000.
        let mut mem = vec![0u8; 0x4000];
        le::put_u64(&mut mem, 0, 0x1003);
        le::put_u64(&mut mem, 0x1000, 0x2003);
        le::put_u64(&mut mem, 0x1008, 0x8000_0083);
        le::put_u64(&mut mem, 0x2000, 0x3003);
        le::put_u64(&mut mem, 0x3000 + 5 * 8, 0x7_7003);
        let t = |va| translate(reader(&mem, 0), 0, va);
        assert_eq!(t(0x5abc), Some(0x7_7abc));
        assert_eq!(t(0x6000), None);
        assert_eq!(t(GIB + 0x1234), Some(0x8000_1234));
    }

    #[test]
    fn gdt_and_attributes_match_the_boot_protocol() {
        let g = boot_gdt_bytes();
        assert_eq!(&g[0x10..0x18], &[0xff, 0xff, 0, 0, 0, 0x9b, 0xaf, 0]);
        assert_eq!(&g[0x18..0x20], &[0xff, 0xff, 0, 0, 0, 0x93, 0xcf, 0]);
        // Code: type 0xb, S, P, L, G; no D. Data: type 3, S, P, D/B, G.
        assert_eq!(descriptor_attrib(BOOT_GDT[2]), 0xa9b);
        assert_eq!(descriptor_attrib(BOOT_GDT[3]), 0xc93);
    }
}
