//! Reading the firmware's ACPI tables with the `acpi` crate: the RSDP comes
//! from the Multiboot2 information (BIOS or UEFI alike), the tables are read
//! through the kernel's direct map, and the MADT tells how many CPUs and
//! IOAPICs the machine has. AML (power off, device discovery) belongs to the
//! platform server in userspace, so the kernel builds `acpi` without it.

use super::cpu;
use super::paging;
use acpi::sdt::madt::{Madt, MadtEntry};
use acpi::{AcpiTables, Handler, PciAddress, PhysicalMapping};
use core::ptr::NonNull;

/// Maps physical memory for the `acpi` crate through the direct map.
#[derive(Clone, Copy, Debug)]
pub struct KernelAcpiHandler;

fn pci_config_address(a: PciAddress, offset: u16) -> u32 {
    0x8000_0000
        | (u32::from(a.bus()) << 16)
        | (u32::from(a.device()) << 11)
        | (u32::from(a.function()) << 8)
        | u32::from(offset & 0xfc)
}

impl Handler for KernelAcpiHandler {
    unsafe fn map_physical_region<T>(&self, physical_address: usize, size: usize) -> PhysicalMapping<Self, T> {
        let virt = paging::direct_map(physical_address as u64, size as u64).unwrap_or_else(|e| {
            panic!("ACPI table at {physical_address:#x} (+{size:#x}) cannot be mapped: {e}")
        });
        PhysicalMapping {
            physical_start: physical_address,
            // The direct map never hands out address 0.
            virtual_start: NonNull::new(virt as *mut T).expect("direct map address is not null"),
            region_length: size,
            mapped_length: size,
            handler: *self,
        }
    }

    fn unmap_physical_region<T>(_region: &PhysicalMapping<Self, T>) {
        // The direct map stays; nothing to undo.
    }

    fn read_u8(&self, address: usize) -> u8 {
        self.read(address)
    }
    fn read_u16(&self, address: usize) -> u16 {
        self.read(address)
    }
    fn read_u32(&self, address: usize) -> u32 {
        self.read(address)
    }
    fn read_u64(&self, address: usize) -> u64 {
        self.read(address)
    }
    fn write_u8(&self, address: usize, value: u8) {
        self.write(address, value)
    }
    fn write_u16(&self, address: usize, value: u16) {
        self.write(address, value)
    }
    fn write_u32(&self, address: usize, value: u32) {
        self.write(address, value)
    }
    fn write_u64(&self, address: usize, value: u64) {
        self.write(address, value)
    }
    fn read_io_u8(&self, port: u16) -> u8 {
        cpu::inb(port)
    }
    fn read_io_u16(&self, port: u16) -> u16 {
        cpu::inw(port)
    }
    fn read_io_u32(&self, port: u16) -> u32 {
        cpu::inl(port)
    }
    fn write_io_u8(&self, port: u16, value: u8) {
        cpu::outb(port, value)
    }
    fn write_io_u16(&self, port: u16, value: u16) {
        cpu::outw(port, value)
    }
    fn write_io_u32(&self, port: u16, value: u32) {
        cpu::outl(port, value)
    }
    fn read_pci_u8(&self, address: PciAddress, offset: u16) -> u8 {
        (self.read_pci_u32(address, offset) >> ((offset & 3) * 8)) as u8
    }
    fn read_pci_u16(&self, address: PciAddress, offset: u16) -> u16 {
        (self.read_pci_u32(address, offset) >> ((offset & 2) * 8)) as u16
    }
    fn read_pci_u32(&self, address: PciAddress, offset: u16) -> u32 {
        cpu::outl(0xcf8, pci_config_address(address, offset));
        cpu::inl(0xcfc)
    }
    fn write_pci_u8(&self, address: PciAddress, offset: u16, value: u8) {
        cpu::outl(0xcf8, pci_config_address(address, offset));
        cpu::outb(0xcfc + (offset & 3), value)
    }
    fn write_pci_u16(&self, address: PciAddress, offset: u16, value: u16) {
        cpu::outl(0xcf8, pci_config_address(address, offset));
        cpu::outw(0xcfc + (offset & 2), value)
    }
    fn write_pci_u32(&self, address: PciAddress, offset: u16, value: u32) {
        cpu::outl(0xcf8, pci_config_address(address, offset));
        cpu::outl(0xcfc, value)
    }
    fn nanos_since_boot(&self) -> u64 {
        super::time::nanos_since_boot()
    }
    fn stall(&self, microseconds: u64) {
        super::time::spin_us(microseconds)
    }
    fn sleep(&self, milliseconds: u64) {
        super::time::spin_us(milliseconds.saturating_mul(1000))
    }
}

impl KernelAcpiHandler {
    fn read<T: Copy>(&self, address: usize) -> T {
        let virt = paging::direct_map(address as u64, size_of::<T>() as u64)
            .unwrap_or_else(|e| panic!("ACPI access to {address:#x}: {e}"));
        // SAFETY: `virt` maps `size_of::<T>()` bytes of physical memory that
        // the firmware's AML names as a register; volatile because it may be
        // MMIO.
        unsafe { core::ptr::read_volatile(virt as *const T) }
    }

    fn write<T: Copy>(&self, address: usize, value: T) {
        let virt = paging::direct_map(address as u64, size_of::<T>() as u64)
            .unwrap_or_else(|e| panic!("ACPI access to {address:#x}: {e}"));
        // SAFETY: as `read`.
        unsafe { core::ptr::write_volatile(virt as *mut T, value) }
    }
}

/// Where the RSDP information came from.
#[derive(Clone, Copy, Debug)]
pub enum RootPointer {
    /// ACPI 1.0: the RSDT's physical address.
    Rsdt(u64),
    /// ACPI 2.0+: the revision and the XSDT's physical address.
    Xsdt { revision: u8, address: u64 },
}

/// An IOAPIC: its MMIO address and the first global system interrupt it
/// serves.
#[derive(Clone, Copy, Debug)]
pub struct IoApicInfo {
    pub id: u8,
    pub address: u64,
    pub gsi_base: u32,
}

/// An ISA IRQ that the firmware routes to another GSI, or with another
/// polarity/trigger than ISA's edge/high (ACPI 6.5 §5.2.12.5).
#[derive(Clone, Copy, Debug)]
pub struct IsaOverride {
    pub isa_irq: u8,
    pub gsi: u32,
    /// MPS INTI flags: polarity bits 0..1, trigger bits 2..3.
    pub flags: u16,
}

/// What the kernel needs from the MADT.
#[derive(Clone, Debug, Default)]
pub struct Platform {
    /// Processors the firmware lists as enabled or online-capable.
    pub cpus: u32,
    /// Their local APIC ids, bootstrap processor included.
    pub apic_ids: heapless::Vec<u32, { super::MAX_CPUS }>,
    pub ioapics: u32,
    pub ioapic: heapless::Vec<IoApicInfo, 8>,
    pub overrides: heapless::Vec<IsaOverride, 16>,
    pub local_apic_address: u64,
    pub has_8259: bool,
}

#[derive(Debug)]
pub enum Error {
    Acpi(acpi::AcpiError),
    NoMadt,
}

impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Error::Acpi(e) => write!(f, "ACPI tables unreadable: {e:?}"),
            Error::NoMadt => write!(f, "no MADT (APIC) table"),
        }
    }
}

/// Reads the MADT.
pub fn discover(root: RootPointer) -> Result<Platform, Error> {
    let (revision, address) = match root {
        RootPointer::Rsdt(a) => (0, a),
        RootPointer::Xsdt { revision, address } => (revision.max(2), address),
    };
    // SAFETY: the address comes from the RSDP the bootloader copied out of
    // firmware memory; the handler maps it through the direct map and the
    // crate checks signatures and lengths before trusting contents.
    let tables = unsafe { AcpiTables::from_rsdt(KernelAcpiHandler, revision, address as usize) }
        .map_err(Error::Acpi)?;
    let madt = tables.find_table::<Madt>().ok_or(Error::NoMadt)?;
    let mut p = Platform {
        local_apic_address: u64::from(madt.get().local_apic_address),
        has_8259: madt.get().supports_8259(),
        ..Platform::default()
    };
    for entry in madt.get().entries() {
        match entry {
            MadtEntry::LocalApic(l) => {
                let flags = l.flags;
                if flags & 0b11 != 0 {
                    p.cpus += 1;
                    let _ = p.apic_ids.push(u32::from(l.apic_id));
                }
            }
            MadtEntry::LocalX2Apic(l) => {
                let flags = l.flags;
                if flags & 0b11 != 0 {
                    p.cpus += 1;
                    let _ = p.apic_ids.push(l.x2apic_id);
                }
            }
            MadtEntry::IoApic(io) => {
                p.ioapics += 1;
                let _ = p.ioapic.push(IoApicInfo {
                    id: io.io_apic_id,
                    address: u64::from(io.io_apic_address),
                    gsi_base: io.global_system_interrupt_base,
                });
            }
            MadtEntry::InterruptSourceOverride(o) => {
                let _ = p.overrides.push(IsaOverride { isa_irq: o.irq, gsi: o.global_system_interrupt, flags: o.flags });
            }
            MadtEntry::LocalApicAddressOverride(o) => p.local_apic_address = o.local_apic_address,
            _ => {}
        }
    }
    Ok(p)
}
