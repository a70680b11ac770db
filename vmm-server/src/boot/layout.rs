//! The guest-physical and I/O-port map of an Alcove PC guest: one place for
//! the addresses that the memory map ([`super::e820`]), the ACPI tables
//! ([`super::acpi`]) and the device models must agree on.
//!
//! ```text
//! 0x0000_0000  RAM (real-mode IVT/BDA area, unused by a 64-bit boot)
//! 0x0000_0500  boot GDT                  (BOOT_GDT)
//! 0x0000_7000  zero page                 (ZERO_PAGE)
//! 0x0000_9000  identity page tables      (PAGE_TABLES, 6 pages for 4 GiB)
//! 0x0002_0000  kernel command line       (CMDLINE, up to CMDLINE_MAX)
//! 0x000A_0000  hole: legacy VGA / option ROM window (not listed)
//! 0x000E_0000  firmware area: ACPI tables, RSDP (e820 reserved)
//! 0x0010_0000  RAM (the kernel loads at its pref_address, 16 MiB)
//! 0xB000_0000  PCI ECAM, bus 0 (e820 reserved); rest up to 0xC000_0000 unused
//! 0xC000_0000  32-bit PCI MMIO window (BARs)
//! 0xFEC0_0000  I/O APIC (reserved)
//! 0xFEE0_0000  local APIC (reserved)
//! 0x1_0000_0000  RAM above 4 GiB (what did not fit below 0xB000_0000)
//! ```
//!
//! RAM below 4 GiB ends where the ECAM window begins (2.75 GiB, the size
//! up to which QEMU's q35 also keeps all RAM low); a larger guest gets
//! its first 2.75 GiB there and the rest from 4 GiB up ([`ram_blocks`]).
//! QEMU's q35 would drop to 2 GiB below 4 GiB for such a guest to align
//! the split to 1 GiB pages; nothing here needs that, so the low block
//! stays as large as the hole allows.

/// Guest-physical address of the boot GDT ([`super::long_mode::BOOT_GDT`]).
pub const BOOT_GDT: u64 = 0x500;
/// Guest-physical address of the zero page (`struct boot_params`).
pub const ZERO_PAGE: u64 = 0x7000;
/// Guest-physical address of the identity page tables.
pub const PAGE_TABLES: u64 = 0x9000;
/// Room for identity tables of 4 GiB (PML4, PDPT, 4 page directories).
pub const PAGE_TABLES_SIZE: u64 = 6 * 0x1000;
/// Guest-physical address of the kernel command line.
pub const CMDLINE: u64 = 0x2_0000;
/// Room for the command line including its NUL (up to the VGA hole).
pub const CMDLINE_MAX: u64 = LEGACY_HOLE_START - CMDLINE;

/// The legacy hole below 1 MiB: VGA memory and option ROMs, not RAM.
pub const LEGACY_HOLE_START: u64 = 0xA_0000;
/// The firmware area at the top of the first MiB: ACPI tables (and the
/// RSDP, where a guest scanning 0xE0000–0xFFFFF finds it).
pub const ACPI_TABLES_BASE: u64 = 0xE_0000;
pub const ACPI_TABLES_SIZE: u64 = 0x2_0000;
/// The first MiB ends; RAM continues here.
pub const HIGH_MEMORY_START: u64 = 0x10_0000;

/// PCI Express enhanced configuration space (PCIe 6.0 §7.2.2): 1 MiB per bus.
pub const ECAM_BASE: u64 = 0xB000_0000;
/// The last PCI bus number (buses 0..=ECAM_LAST_BUS).
pub const ECAM_LAST_BUS: u8 = 0;
pub const ECAM_SIZE: u64 = (ECAM_LAST_BUS as u64 + 1) << 20;
/// Where the ECAM window would end with all 256 buses; up to here is kept
/// free of RAM.
pub const ECAM_WINDOW_END: u64 = 0xC000_0000;
/// RAM below 4 GiB ends where the ECAM window begins.
pub const LOW_RAM_END: u64 = ECAM_BASE;

/// The 32-bit PCI MMIO window for BARs.
pub const PCI_MMIO32_BASE: u64 = 0xC000_0000;
pub const PCI_MMIO32_SIZE: u64 = IOAPIC_BASE - PCI_MMIO32_BASE;

/// The I/O APIC's registers (one 4 KiB page).
pub const IOAPIC_BASE: u64 = 0xFEC0_0000;
/// The local APIC's registers, as every vCPU sees them (one 4 KiB page).
pub const LAPIC_BASE: u64 = 0xFEE0_0000;
pub const APIC_PAGE_SIZE: u64 = 0x1000;

/// 4 GiB: RAM that does not fit below [`LOW_RAM_END`] continues here.
pub const FOUR_GIB: u64 = 0x1_0000_0000;

/// One block of guest RAM's backing: `len` bytes from guest-physical `gpa`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RamBlock {
    pub gpa: u64,
    pub len: u64,
}

impl RamBlock {
    pub fn end(&self) -> u64 {
        self.gpa + self.len
    }
}

/// Where the VMM backs `ram_bytes` of guest RAM: one block from
/// guest-physical 0 up to [`LOW_RAM_END`] at most and, if that is not
/// all, a second from [`FOUR_GIB`]. The first block also backs the
/// holes below 1 MiB (the loader writes the ACPI tables into the firmware
/// area), so the memory map ([`super::e820::E820::pc`] of `ram_bytes`
/// less those holes) lists as RAM exactly what these blocks back outside
/// them. `ram_bytes` is at most `u64::MAX - FOUR_GIB` (the VM description
/// allows 1 TiB).
pub fn ram_blocks(ram_bytes: u64) -> alloc::vec::Vec<RamBlock> {
    let mut v = alloc::vec![RamBlock { gpa: 0, len: ram_bytes.min(LOW_RAM_END) }];
    if ram_bytes > LOW_RAM_END {
        v.push(RamBlock { gpa: FOUR_GIB, len: ram_bytes - LOW_RAM_END });
    }
    v
}

/// The holes below 1 MiB (legacy VGA window and firmware area): backed by
/// the first RAM block, not listed as RAM.
pub const BELOW_1M_HOLES: u64 = HIGH_MEMORY_START - LEGACY_HOLE_START;

// The boot structures below 1 MiB do not overlap.
const _: () = assert!(BOOT_GDT + 32 <= ZERO_PAGE);
const _: () = assert!(ZERO_PAGE + 0x1000 <= PAGE_TABLES);
const _: () = assert!(PAGE_TABLES + PAGE_TABLES_SIZE <= CMDLINE);
const _: () = assert!(CMDLINE < LEGACY_HOLE_START);
