//! What the bootloader handed over, read once from the Multiboot2 information
//! into plain values: command line, memory map, boot modules, ACPI root.

use crate::arch::{self, acpi::RootPointer};
use kcore::memmap::{Region, RegionKind};
use multiboot2::{BootInformation, BootInformationHeader, MemoryAreaType};

pub const MULTIBOOT2_MAGIC: u32 = 0x36d7_6289;
pub const MAX_REGIONS: usize = 128;
pub const MAX_MODULES: usize = 8;

#[derive(Clone, Copy, Debug)]
pub struct Module {
    pub start: u64,
    pub end: u64,
    pub name: &'static str,
}

pub struct BootInfo {
    pub cmdline: &'static str,
    pub bootloader: &'static str,
    pub regions: heapless::Vec<Region, MAX_REGIONS>,
    pub modules: heapless::Vec<Module, MAX_MODULES>,
    pub acpi_root: Option<RootPointer>,
    /// The information structure itself, to keep out of the free map.
    pub info_range: (u64, u64),
    pub uefi: bool,
}

#[derive(Debug)]
pub enum Error {
    BadMagic(u32),
    Unreadable,
    NoMemoryMap,
}

impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Error::BadMagic(m) => write!(f, "not booted by a Multiboot2 loader (magic {m:#x})"),
            Error::Unreadable => write!(f, "the Multiboot2 information is unreadable"),
            Error::NoMemoryMap => write!(f, "the bootloader gave no memory map"),
        }
    }
}

/// Reads the Multiboot2 information at physical address `info_phys`.
pub fn read(magic: u32, info_phys: u64) -> Result<BootInfo, Error> {
    if magic != MULTIBOOT2_MAGIC {
        return Err(Error::BadMagic(magic));
    }
    // The header's first word is the total size; map that much.
    let va = arch::phys_to_virt(info_phys, 8).ok_or(Error::Unreadable)?;
    // SAFETY: the loader placed the information below 4 GiB (Multiboot2 §3.3),
    // inside the boot direct map; it stays untouched because the free map
    // excludes `info_range`.
    let mbi = unsafe { BootInformation::load(va as *const BootInformationHeader) }
        .map_err(|_| Error::Unreadable)?;
    let mut bi = BootInfo {
        cmdline: "",
        bootloader: "",
        regions: heapless::Vec::new(),
        modules: heapless::Vec::new(),
        acpi_root: None,
        info_range: (info_phys, info_phys + mbi.total_size() as u64),
        uefi: mbi.efi_sdt64_tag().is_some(),
    };
    // The boot information lives for the kernel's lifetime in the direct map;
    // extend the borrows accordingly.
    fn forever(s: &str) -> &'static str {
        // SAFETY: see above: the bytes are never freed or overwritten.
        unsafe { &*(s as *const str) }
    }
    if let Some(c) = mbi.command_line_tag().and_then(|t| t.cmdline().ok()) {
        bi.cmdline = forever(c);
    }
    if let Some(n) = mbi.boot_loader_name_tag().and_then(|t| t.name().ok()) {
        bi.bootloader = forever(n);
    }
    if let Some(map) = mbi.memory_map_tag() {
        for a in map.memory_areas() {
            let kind = match MemoryAreaType::from(a.typ()) {
                MemoryAreaType::Available => RegionKind::Usable,
                MemoryAreaType::AcpiAvailable => RegionKind::AcpiReclaimable,
                MemoryAreaType::ReservedHibernate => RegionKind::AcpiNvs,
                MemoryAreaType::Defective => RegionKind::Bad,
                _ => RegionKind::Reserved,
            };
            if bi.regions.push(Region { start: a.start_address(), len: a.size(), kind }).is_err() {
                log::warn!("memory map has more than {MAX_REGIONS} regions; ignoring the rest");
                break;
            }
        }
    } else if let Some(map) = mbi.efi_memory_map_tag() {
        use multiboot2::EFIMemoryAreaType as T;
        for d in map.memory_areas() {
            let kind = match d.ty {
                T::CONVENTIONAL | T::BOOT_SERVICES_CODE | T::BOOT_SERVICES_DATA | T::LOADER_CODE | T::LOADER_DATA => {
                    RegionKind::Usable
                }
                T::ACPI_RECLAIM => RegionKind::AcpiReclaimable,
                T::ACPI_NON_VOLATILE => RegionKind::AcpiNvs,
                T::UNUSABLE => RegionKind::Bad,
                _ => RegionKind::Reserved,
            };
            let region = Region { start: d.phys_start, len: d.page_count.saturating_mul(4096), kind };
            if bi.regions.push(region).is_err() {
                log::warn!("memory map has more than {MAX_REGIONS} regions; ignoring the rest");
                break;
            }
        }
    } else {
        return Err(Error::NoMemoryMap);
    }
    for m in mbi.module_tags() {
        let module = Module {
            start: u64::from(m.start_address()),
            end: u64::from(m.end_address()),
            name: forever(m.cmdline().unwrap_or("")),
        };
        if bi.modules.push(module).is_err() {
            log::warn!("more than {MAX_MODULES} boot modules; ignoring the rest");
            break;
        }
    }
    bi.acpi_root = if let Some(r) = mbi.rsdp_v2_tag() {
        Some(RootPointer::Xsdt { revision: r.revision(), address: r.xsdt_address() as u64 })
    } else {
        mbi.rsdp_v1_tag().map(|r| RootPointer::Rsdt(r.rsdt_address() as u64))
    };
    Ok(bi)
}
