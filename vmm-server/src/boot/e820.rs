//! The guest's physical memory map: where its RAM is and which address
//! ranges it must leave alone, as the BIOS E820 call would report it
//! (ACPI 6.5 §15, "System Address Map Interfaces"; Linux takes it from the
//! zero page's `e820_table`).
//!
//! The VMM gives the amount of RAM and the holes (address ranges that are
//! not RAM: the legacy VGA window, MMIO windows, ECAM, the APIC pages).
//! RAM is placed from address 0 upwards and flows around the holes: the
//! part that would fall into a hole continues after it, so the guest always
//! sees exactly the RAM it was given, and [`E820Map::ram`] tells the VMM
//! which guest-physical ranges to back with memory. Holes are listed in the
//! map with the type the VMM chose (reserved, ACPI) or left out (a PCI MMIO
//! window must not be listed, so the guest may place BARs in it).

use alloc::vec::Vec;
use core::fmt;
use core::ops::Range;

use super::layout;

/// Address range types (ACPI 6.5 Table 15.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum E820Type {
    Ram = 1,
    Reserved = 2,
    /// ACPI tables, reclaimable once the OS has read them.
    Acpi = 3,
    /// ACPI NVS: preserved across sleep states.
    Nvs = 4,
    Unusable = 5,
}

/// One entry of the map, as `struct boot_e820_entry` (20 bytes, packed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct E820Entry {
    pub addr: u64,
    pub size: u64,
    pub kind: E820Type,
}

/// Bytes in one `struct boot_e820_entry`.
pub const E820_ENTRY_SIZE: usize = 20;

impl E820Entry {
    /// One past the last byte (the builder guarantees no overflow).
    pub fn end(&self) -> u64 {
        self.addr.saturating_add(self.size)
    }

    /// The packed `boot_e820_entry` layout: addr u64, size u64, type u32.
    pub fn to_bytes(&self) -> [u8; E820_ENTRY_SIZE] {
        let mut b = [0u8; E820_ENTRY_SIZE];
        b[0..8].copy_from_slice(&self.addr.to_le_bytes());
        b[8..16].copy_from_slice(&self.size.to_le_bytes());
        b[16..20].copy_from_slice(&(self.kind as u32).to_le_bytes());
        b
    }
}

/// An address range that is not RAM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hole {
    pub base: u64,
    pub size: u64,
    /// How the map lists it; `None` leaves it out (a gap the guest may use
    /// for MMIO, such as a PCI window).
    pub report: Option<E820Type>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum E820Error {
    /// A hole of size 0.
    EmptyHole { base: u64 },
    /// A hole, or the RAM placed after the holes, runs past 2^64.
    AddressOverflow,
    /// Two holes share addresses.
    HolesOverlap { first: u64, second: u64 },
}

impl fmt::Display for E820Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::EmptyHole { base } => write!(f, "e820: hole at {base:#x} has size 0"),
            Self::AddressOverflow => write!(f, "e820: the memory map runs past the 64-bit address space"),
            Self::HolesOverlap { first, second } => {
                write!(f, "e820: holes at {first:#x} and {second:#x} overlap")
            }
        }
    }
}

/// The memory map builder.
#[derive(Clone, Debug)]
pub struct E820 {
    ram_bytes: u64,
    holes: Vec<Hole>,
}

/// A built memory map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct E820Map {
    entries: Vec<E820Entry>,
    ram: Vec<Range<u64>>,
}

impl E820Map {
    /// The entries, sorted by address, not overlapping, adjacent entries of
    /// one type merged.
    pub fn entries(&self) -> &[E820Entry] {
        &self.entries
    }

    /// The guest-physical ranges that are RAM (sorted): what the VMM backs
    /// with memory. Firmware areas it fills itself (the ACPI tables in
    /// [`layout::ACPI_TABLES_BASE`]) are holes and need backing too.
    pub fn ram(&self) -> &[Range<u64>] {
        &self.ram
    }

    /// The end of the highest RAM range (0 without RAM).
    pub fn ram_end(&self) -> u64 {
        self.ram.last().map_or(0, |r| r.end)
    }
}

impl E820 {
    /// `ram_bytes` of RAM and no holes yet.
    pub fn new(ram_bytes: u64) -> Self {
        Self { ram_bytes, holes: Vec::new() }
    }

    /// The PC map of [`layout`]: the legacy hole and firmware area below
    /// 1 MiB, the ECAM window (bus range reserved), the 32-bit PCI MMIO
    /// window, the I/O APIC and local APIC pages; RAM that does not fit
    /// below [`layout::LOW_RAM_END`] goes above 4 GiB.
    pub fn pc(ram_bytes: u64) -> Self {
        use layout::*;
        let ioapic_end = IOAPIC_BASE + APIC_PAGE_SIZE;
        let lapic_end = LAPIC_BASE + APIC_PAGE_SIZE;
        Self::new(ram_bytes)
            .hole(LEGACY_HOLE_START, ACPI_TABLES_BASE - LEGACY_HOLE_START, None)
            .hole(ACPI_TABLES_BASE, ACPI_TABLES_SIZE, Some(E820Type::Reserved))
            .hole(ECAM_BASE, ECAM_SIZE, Some(E820Type::Reserved))
            .hole(ECAM_BASE + ECAM_SIZE, ECAM_WINDOW_END - (ECAM_BASE + ECAM_SIZE), None)
            .hole(PCI_MMIO32_BASE, PCI_MMIO32_SIZE, None)
            .hole(IOAPIC_BASE, APIC_PAGE_SIZE, Some(E820Type::Reserved))
            .hole(ioapic_end, LAPIC_BASE - ioapic_end, None)
            .hole(LAPIC_BASE, APIC_PAGE_SIZE, Some(E820Type::Reserved))
            .hole(lapic_end, FOUR_GIB - lapic_end, None)
    }

    /// Adds a hole: `[base, base + size)` is not RAM.
    pub fn hole(mut self, base: u64, size: u64, report: Option<E820Type>) -> Self {
        self.holes.push(Hole { base, size, report });
        self
    }

    /// Places the RAM around the holes and produces the map.
    pub fn build(&self) -> Result<E820Map, E820Error> {
        let mut holes = self.holes.clone();
        holes.sort_by_key(|h| h.base);
        let mut prev_end: Option<(u64, u64)> = None;
        for h in &holes {
            if h.size == 0 {
                return Err(E820Error::EmptyHole { base: h.base });
            }
            let end = h.base.checked_add(h.size).ok_or(E820Error::AddressOverflow)?;
            if let Some((prev_base, prev)) = prev_end
                && h.base < prev
            {
                return Err(E820Error::HolesOverlap { first: prev_base, second: h.base });
            }
            prev_end = Some((h.base, end));
        }

        let mut ram: Vec<Range<u64>> = Vec::new();
        let mut cursor = 0u64;
        let mut left = self.ram_bytes;
        for h in &holes {
            if left > 0 && cursor < h.base {
                let take = left.min(h.base - cursor);
                ram.push(cursor..cursor + take);
                left -= take;
            }
            // Holes are sorted and checked, so `base + size` fits.
            cursor = cursor.max(h.base + h.size);
        }
        if left > 0 {
            let end = cursor.checked_add(left).ok_or(E820Error::AddressOverflow)?;
            ram.push(cursor..end);
        }

        let mut all: Vec<E820Entry> = ram
            .iter()
            .map(|r| E820Entry { addr: r.start, size: r.end - r.start, kind: E820Type::Ram })
            .chain(holes.iter().filter_map(|h| h.report.map(|kind| E820Entry { addr: h.base, size: h.size, kind })))
            .collect();
        all.sort_by_key(|e| e.addr);
        let mut entries: Vec<E820Entry> = Vec::with_capacity(all.len());
        for e in all {
            match entries.last_mut() {
                Some(last) if last.kind == e.kind && last.end() == e.addr => last.size += e.size,
                _ => entries.push(e),
            }
        }
        Ok(E820Map { entries, ram })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;

    fn e(addr: u64, size: u64, kind: E820Type) -> E820Entry {
        E820Entry { addr, size, kind }
    }

    #[test]
    fn ram_without_holes_is_one_entry() {
        let map = E820::new(64 * MIB).build().unwrap();
        assert_eq!(map.entries(), &[e(0, 64 * MIB, E820Type::Ram)]);
        assert_eq!(map.ram().len(), 1);
        assert_eq!(map.ram()[0], 0..64 * MIB);
    }

    #[test]
    fn pc_layout_with_small_ram() {
        use layout::*;
        let map = E820::pc(256 * MIB).build().unwrap();
        let low = LEGACY_HOLE_START;
        // RAM displaced by the hole below 1 MiB continues above 1 MiB.
        let high = 256 * MIB - low;
        assert_eq!(
            map.entries(),
            &[
                e(0, low, E820Type::Ram),
                e(ACPI_TABLES_BASE, ACPI_TABLES_SIZE, E820Type::Reserved),
                e(HIGH_MEMORY_START, high, E820Type::Ram),
                e(ECAM_BASE, ECAM_SIZE, E820Type::Reserved),
                e(IOAPIC_BASE, 0x1000, E820Type::Reserved),
                e(LAPIC_BASE, 0x1000, E820Type::Reserved),
            ]
        );
        assert_eq!(map.ram(), &[0..low, HIGH_MEMORY_START..HIGH_MEMORY_START + high]);
        let total: u64 = map.entries().iter().filter(|x| x.kind == E820Type::Ram).map(|x| x.size).sum();
        assert_eq!(total, 256 * MIB);
    }

    #[test]
    fn pc_layout_with_large_ram_goes_above_4g() {
        use layout::*;
        let map = E820::pc(4 * GIB).build().unwrap();
        let below = LEGACY_HOLE_START + (LOW_RAM_END - HIGH_MEMORY_START);
        let above = 4 * GIB - below;
        assert_eq!(map.ram(), &[0..LEGACY_HOLE_START, HIGH_MEMORY_START..LOW_RAM_END, FOUR_GIB..FOUR_GIB + above]);
        let es = map.entries();
        assert_eq!(es.last(), Some(&e(FOUR_GIB, above, E820Type::Ram)));
        // Sorted, not overlapping, and nothing listed inside the PCI window.
        for w in es.windows(2) {
            assert!(w[0].end() <= w[1].addr, "{w:?}");
        }
        assert!(es.iter().all(|x| x.end() <= PCI_MMIO32_BASE || x.addr >= IOAPIC_BASE));
    }

    #[test]
    fn adjacent_entries_of_one_type_merge() {
        let map = E820::new(MIB)
            .hole(0x10_0000, 0x1000, Some(E820Type::Reserved))
            .hole(0x10_1000, 0x1000, Some(E820Type::Reserved))
            .build()
            .unwrap();
        assert_eq!(map.entries(), &[e(0, MIB, E820Type::Ram), e(MIB, 0x2000, E820Type::Reserved)]);
    }

    #[test]
    fn hole_order_does_not_matter_and_ram_fills_gaps_between_holes() {
        let a = E820::new(10 * MIB).hole(4 * MIB, MIB, None).hole(MIB, MIB, Some(E820Type::Acpi)).build().unwrap();
        assert_eq!(a.ram(), &[0..MIB, 2 * MIB..4 * MIB, 5 * MIB..12 * MIB]);
        assert_eq!(
            a.entries(),
            &[
                e(0, MIB, E820Type::Ram),
                e(MIB, MIB, E820Type::Acpi),
                e(2 * MIB, 2 * MIB, E820Type::Ram),
                e(5 * MIB, 7 * MIB, E820Type::Ram),
            ]
        );
        assert_eq!(a.ram_end(), 12 * MIB);
    }

    #[test]
    fn bad_holes_are_rejected() {
        assert_eq!(
            E820::new(MIB).hole(0x1000, 0x2000, None).hole(0x2000, 0x1000, None).build(),
            Err(E820Error::HolesOverlap { first: 0x1000, second: 0x2000 })
        );
        assert_eq!(E820::new(MIB).hole(0x1000, 0, None).build(), Err(E820Error::EmptyHole { base: 0x1000 }));
        assert_eq!(E820::new(MIB).hole(u64::MAX - 5, 10, None).build(), Err(E820Error::AddressOverflow));
        assert_eq!(E820::new(u64::MAX).hole(0, 10, None).build(), Err(E820Error::AddressOverflow));
    }

    #[test]
    fn entry_bytes_are_packed_20() {
        let b = e(0x1122_3344_5566_7788, 0x10, E820Type::Acpi).to_bytes();
        assert_eq!(
            b.to_vec(),
            vec![0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, 0x10, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0]
        );
    }
}
