//! Direct kernel boot: everything the VMM writes into a fresh guest before
//! its boot vCPU runs (Firecracker's "boot source"): the bzImage's kernel at
//! its load address, the initrd at the top of low RAM, the command line,
//! the ACPI tables, the boot GDT, identity page tables and the zero page
//! with the e820 map.
//!
//! Works on guest RAM as one byte slice starting at guest-physical 0 (how
//! the runtime maps it), so it is tested on the host with a `Vec`.

use alloc::vec::Vec;
use core::fmt;

use crate::boot::acpi::{AcpiError, AcpiLayout, AcpiTables};
use crate::boot::e820::{E820, E820Error};
use crate::boot::layout;
use crate::boot::linux::{BootParams, BzImage, GuestRange, LinuxEntry, LinuxError};
use crate::boot::long_mode::{self, PagingError};

/// What a guest is booted with.
pub struct BootSource<'a> {
    pub kernel: &'a [u8],
    pub initrd: Option<&'a [u8]>,
    pub cmdline: &'a str,
    pub vcpus: u32,
}

/// Why a guest could not be loaded.
#[derive(Debug, PartialEq, Eq)]
pub enum LoadError {
    Kernel(LinuxError),
    Acpi(AcpiError),
    MemoryMap(E820Error),
    Paging(PagingError),
    /// Guest RAM (`ram` bytes) is too small for what must go into it.
    TooSmall { what: &'static str, needed: u64, ram: u64 },
    /// The command line holds a NUL or does not fit below the legacy hole.
    BadCmdline { len: usize },
    /// The slice given as the first RAM block is not that block's size.
    LowBlock { len: u64, expected: u64 },
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Kernel(e) => write!(f, "kernel: {e}"),
            Self::Acpi(e) => write!(f, "{e}"),
            Self::MemoryMap(e) => write!(f, "memory map: {e}"),
            Self::Paging(e) => write!(f, "boot page tables: {e}"),
            Self::TooSmall { what, needed, ram } => {
                write!(f, "guest RAM of {} MiB is too small for the {what} (needs {needed:#x} bytes)", ram >> 20)
            }
            Self::LowBlock { len, expected } => {
                write!(f, "guest RAM below the PCI hole is {len:#x} bytes, expected {expected:#x}")
            }
            Self::BadCmdline { len } => {
                write!(f, "cmdline: {len} bytes with a NUL or longer than {} bytes", layout::CMDLINE_MAX - 1)
            }
        }
    }
}

/// Identity-mapped by the boot page tables: all of the first 4 GiB (RAM
/// below the ECAM window and the devices above it).
const IDENTITY_GIB: u64 = 4;

fn slot<'r>(ram: &'r mut [u8], gpa: u64, len: u64, what: &'static str) -> Result<&'r mut [u8], LoadError> {
    let total = ram.len() as u64;
    let end = gpa.checked_add(len).filter(|&e| e <= total).ok_or(LoadError::TooSmall { what, needed: gpa.saturating_add(len), ram: total })?;
    Ok(&mut ram[gpa as usize..end as usize])
}

/// Loads `source` into `ram` (guest RAM from guest-physical 0; its length
/// is the guest's RAM size, all below [`layout::LOW_RAM_END`]) and returns
/// where the boot vCPU starts ([`crate::boot::linux::set_boot_vcpu`]).
pub fn load_linux(ram: &mut [u8], source: &BootSource<'_>) -> Result<LinuxEntry, LoadError> {
    let ram_bytes = ram.len() as u64;
    load_linux_in(ram, ram_bytes, source)
}

/// Loads `source` into a guest of `ram_bytes` of RAM backed as
/// [`layout::ram_blocks`] says: `low` is the first block (from
/// guest-physical 0), where everything the loader writes goes; the RAM
/// above 4 GiB only appears in the memory map.
pub fn load_linux_in(low: &mut [u8], ram_bytes: u64, source: &BootSource<'_>) -> Result<LinuxEntry, LoadError> {
    let ram = low;
    let image = BzImage::parse(source.kernel).map_err(LoadError::Kernel)?;
    let blocks = layout::ram_blocks(ram_bytes);
    let low_end = blocks[0].end();
    if ram.len() as u64 != low_end {
        return Err(LoadError::LowBlock { len: ram.len() as u64, expected: low_end });
    }
    // The first block is backed from guest-physical 0, holes below 1 MiB
    // included, so the RAM the map places around them ends where the
    // backing does: below the ECAM window, then from 4 GiB.
    let usable = ram_bytes.checked_sub(layout::BELOW_1M_HOLES).filter(|&u| u > layout::HIGH_MEMORY_START).ok_or(
        LoadError::TooSmall { what: "memory map", needed: 2 * layout::HIGH_MEMORY_START, ram: ram_bytes },
    )?;
    let map = E820::pc(usable).build().map_err(LoadError::MemoryMap)?;
    debug_assert!(map.ram().iter().all(|r| blocks.iter().any(|b| b.gpa <= r.start && r.end <= b.end())));

    // The kernel, where its header asks (it decompresses in place up to
    // init_size).
    let needed = image.memory_needed();
    let bytes = image.kernel();
    let span = (needed.end - needed.start).max(bytes.len() as u64);
    let kernel_dst = slot(ram, needed.start, span, "kernel (init_size)")?;
    kernel_dst[..bytes.len()].copy_from_slice(bytes);

    // The initrd at the top of the RAM below the PCI hole, and not past the
    // kernel's initrd_addr_max (as QEMU's loader places it), page-aligned,
    // above the kernel.
    let initrd = match source.initrd.filter(|i| !i.is_empty()) {
        None => None,
        Some(data) => {
            let len = data.len() as u64;
            let top = low_end.min(image.initrd_addr_max().saturating_add(1));
            let gpa = top.checked_sub(len).map(|a| a & !0xfff).filter(|&a| a >= needed.start + span).ok_or(
                LoadError::TooSmall { what: "initrd above the kernel", needed: needed.end + len, ram: top },
            )?;
            slot(ram, gpa, len, "initrd")?.copy_from_slice(data);
            Some(GuestRange { gpa, len })
        }
    };

    // The command line, NUL-terminated.
    let cmd = source.cmdline.as_bytes();
    if cmd.contains(&0) || cmd.len() as u64 + 1 > layout::CMDLINE_MAX {
        return Err(LoadError::BadCmdline { len: cmd.len() });
    }
    let c = slot(ram, layout::CMDLINE, cmd.len() as u64 + 1, "command line")?;
    c[..cmd.len()].copy_from_slice(cmd);
    c[cmd.len()] = 0;

    let tables = AcpiTables::build(source.vcpus, &AcpiLayout::pc()).map_err(LoadError::Acpi)?;
    slot(ram, tables.base, tables.bytes.len() as u64, "ACPI tables")?.copy_from_slice(&tables.bytes);

    slot(ram, layout::BOOT_GDT, long_mode::BOOT_GDT_BYTES as u64, "boot GDT")?
        .copy_from_slice(&long_mode::boot_gdt_bytes());
    let pt_len = long_mode::identity_map_bytes(IDENTITY_GIB).map_err(LoadError::Paging)? as u64;
    let cr3 = long_mode::build_identity_map(slot(ram, layout::PAGE_TABLES, pt_len, "page tables")?, layout::PAGE_TABLES, IDENTITY_GIB)
        .map_err(LoadError::Paging)?;

    let e820: Vec<_> = map.entries().to_vec();
    let params = BootParams {
        cmdline: Some(GuestRange { gpa: layout::CMDLINE, len: cmd.len() as u64 }),
        initrd,
        e820: &e820,
        acpi_rsdp: Some(tables.rsdp_gpa()),
    };
    let zp = slot(ram, layout::ZERO_PAGE, 4096, "zero page")?;
    image.write_zero_page(&params, zp).map_err(LoadError::Kernel)?;
    Ok(LinuxEntry { entry_64: image.entry_64(), zero_page: layout::ZERO_PAGE, cr3, gdt_base: layout::BOOT_GDT })
}
