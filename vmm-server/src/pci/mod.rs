//! PCI bus 0 of an Alcove guest: configuration access, BAR decoding and the
//! interrupts PCI functions raise.
//!
//! Where it sits: the VMM's exit handler hands [`PciBus`] every `in`/`out`
//! its [`PortBus`](crate::devices::PortBus) did not claim
//! ([`PciBus::io_read`], [`PciBus::io_write`]) and every MMIO exit outside
//! the platform devices ([`PciBus::mmio_read`], [`PciBus::mmio_write`]); the
//! bus answers `None`/`false` when nothing decodes the access. After each
//! access (and after the runtime pushes work into a device) it collects
//! [`PciBus::take_msi`] and samples [`PciBus::intx_lines`].
//!
//! * Configuration mechanism #1 (PCI Local Bus Specification 3.0 §3.2.2.3.2):
//!   the dword CONFIG_ADDRESS at port 0xCF8, CONFIG_DATA at 0xCFC-0xCFF of
//!   any size and offset inside the dword.
//! * ECAM (PCIe 6.0 §7.2.2): 4 KiB per function at
//!   [`layout::ECAM_BASE`], bus 0 only, as the ACPI MCFG table says.
//! * Functions: one per device number (function 0, single-function); the
//!   host bridge at 00:00.0 ([`HostBridge`]); absent functions read all
//!   ones (§6.1: a vendor ID of 0xFFFF means no function).
//! * BARs: placed at [`PciBus::add`] as firmware would, memory BARs (32- and
//!   64-bit) upward from [`layout::PCI_MMIO32_BASE`] in the 32-bit window
//!   the ACPI `_CRS` of `\_SB.PCI0` announces, I/O BARs upward from port
//!   [`IO_BAR_BASE`]; decoding (memory and I/O) is enabled in the command
//!   register. The guest may move them or turn decoding off: every access is
//!   matched against the BARs as programmed at that moment, and only while
//!   the command register's Memory/I/O Space enable is set (§6.2.2).
//! * Interrupts: MSI/MSI-X messages the functions raise queue up as
//!   [`MsiMessage`]s; INTx is a level per function, wired (as SeaBIOS wires
//!   a PIIX/Q35 board) to ISA IRQ 10 or 11 by device number and pin, which
//!   the bus also writes into the Interrupt Line register.
//!
//! Every access is guest input: sizes, offsets and values of any kind end in
//! all ones or an ignored write, never a panic.

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::any::Any;
use core::fmt;

use crate::boot::layout;
use crate::virtio::GuestMemory;

pub mod config;
pub mod host_bridge;
pub mod msix;

pub use config::{BarKind, BarRegion, BarSpec, ConfigError, ConfigSpace, PciIds};
pub use host_bridge::HostBridge;
pub use msix::Msix;

/// CONFIG_ADDRESS (dword only).
pub const CONFIG_ADDRESS_PORT: u16 = 0xCF8;
/// CONFIG_DATA: 0xCFC-0xCFF.
pub const CONFIG_DATA_PORT: u16 = 0xCFC;
/// The ICH's Reset Control register shares the range; byte accesses to it
/// are left to the VMM (`io_read`/`io_write` do not claim them).
pub const RESET_CONTROL_PORT: u16 = 0xCF9;
/// I/O BARs are placed from here up to 0xFFFF (inside the `_CRS` I/O
/// window 0x0D00-0xFFFF, clear of the ISA devices).
pub const IO_BAR_BASE: u16 = 0xC000;
/// Device numbers on a bus.
pub const SLOTS: usize = 32;
/// The ISA IRQs INTx is wired to, by PIRQ line A-D (SeaBIOS's defaults).
pub const INTX_IRQS: [u8; 4] = [10, 10, 11, 11];

// CONFIG_ADDRESS fields (§3.2.2.3.2).
const CONFIG_ENABLE: u32 = 1 << 31;
const CONFIG_ADDRESS_MASK: u32 = 0x80FF_FFFC;

/// An MSI or MSI-X message: a dword write of `data` to `address`, which on
/// x86 is an interrupt for a local APIC (Intel SDM Vol. 3A §11.11): address
/// 0xFEEx_xxxx with the destination APIC ID in bits 19:12, data with the
/// vector in bits 7:0 and the delivery mode in bits 10:8.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MsiMessage {
    pub address: u64,
    pub data: u32,
}

impl MsiMessage {
    /// Whether the address lies in the interrupt window 0xFEE0_0000-
    /// 0xFEEF_FFFF (anything else is a stray DMA write the VMM drops).
    pub fn is_interrupt(&self) -> bool {
        self.address >> 20 == 0xFEE
    }

    /// The destination APIC ID (address bits 19:12).
    pub fn destination_id(&self) -> u8 {
        (self.address >> 12) as u8
    }

    /// Destination mode: logical (address bit 2) or physical.
    pub fn logical_destination(&self) -> bool {
        self.address & (1 << 2) != 0
    }

    pub fn vector(&self) -> u8 {
        self.data as u8
    }

    /// Delivery mode (data bits 10:8): 0 fixed, 1 lowest priority, 2 SMI,
    /// 4 NMI, 5 INIT, 7 ExtINT.
    pub fn delivery_mode(&self) -> u8 {
        ((self.data >> 8) & 7) as u8
    }

    /// Trigger mode (data bit 15): level rather than edge.
    pub fn level_triggered(&self) -> bool {
        self.data & (1 << 15) != 0
    }
}

/// A PCI function's model. The bus does configuration and BAR decoding;
/// the device reacts to what reaches it.
pub trait PciDevice: Any + Send {
    /// The function's configuration space as it stands.
    fn config(&self) -> &ConfigSpace;
    fn config_mut(&mut self) -> &mut ConfigSpace;

    /// A guest's configuration read of `size` bytes at `offset` (< 4096,
    /// inside one dword). By default the configuration space answers.
    fn config_read(&mut self, offset: u16, size: u8) -> u32 {
        self.config().read(offset, size)
    }

    /// A guest's configuration write. By default the configuration space
    /// takes it through its masks; a device with registers that act (MSI-X
    /// control, a BAR window) overrides this and calls that first.
    fn config_write(&mut self, offset: u16, size: u8, value: u32, _mem: &mut dyn GuestMemory) {
        self.config_mut().write(offset, size, value);
    }

    /// A read of `size` bytes at `offset` inside BAR `bar`: 1, 2, 4 or 8 for
    /// memory, 1, 2 or 4 for I/O (the bus answers other sizes itself).
    fn bar_read(&mut self, bar: usize, offset: u64, size: u8) -> u64;

    /// A write to BAR `bar`; `mem` is guest RAM, for the work it sets off.
    fn bar_write(&mut self, bar: usize, offset: u64, size: u8, value: u64, mem: &mut dyn GuestMemory);

    /// Moves the MSI/MSI-X messages raised since the last call to `out`.
    fn take_msi(&mut self, _out: &mut Vec<MsiMessage>) {}

    /// Whether the function asserts its INTx pin (before the command
    /// register's Interrupt Disable, which the bus applies).
    fn intx_asserted(&self) -> bool {
        false
    }

    /// Work the function put off (a virtio queue pass that reached its
    /// bound, requests carried out but not yet completed), done now; the
    /// VMM's timer calls it. Returns whether there was any.
    fn poll(&mut self, _mem: &mut dyn GuestMemory) -> bool {
        false
    }
}

/// A device number on bus 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PciSlot(pub u8);

/// Why a device could not be put on the bus.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PciError {
    /// All 32 device numbers are taken.
    BusFull,
    /// Device number past 31.
    InvalidSlot(u8),
    SlotOccupied(u8),
    /// The 32-bit MMIO window has no room for a BAR of `size` bytes.
    NoMmioSpace {
        size: u64,
    },
    /// The I/O BAR range has no room for `size` ports.
    NoIoSpace {
        size: u64,
    },
}

impl fmt::Display for PciError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            PciError::BusFull => write!(f, "pci: bus 0 has no free device number"),
            PciError::InvalidSlot(s) => write!(f, "pci: device number {s} is past 31"),
            PciError::SlotOccupied(s) => write!(f, "pci: device number {s} is taken"),
            PciError::NoMmioSpace { size } => {
                write!(f, "pci: no room in the MMIO window for a BAR of {size:#x}")
            }
            PciError::NoIoSpace { size } => {
                write!(f, "pci: no room for an I/O BAR of {size:#x} ports")
            }
        }
    }
}

/// The level of one interrupt line the PCI functions share.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IntxLine {
    /// The ISA IRQ (= I/O APIC pin) the line is wired to.
    pub irq: u8,
    /// Any function on it asserts its pin.
    pub asserted: bool,
}

struct Slot {
    device: Box<dyn PciDevice>,
    /// The ISA IRQ the function's INTx pin is wired to.
    intx_irq: Option<u8>,
}

/// Bus 0 with its host bridge and devices.
pub struct PciBus {
    slots: Vec<Option<Slot>>,
    /// CONFIG_ADDRESS as last written.
    config_address: u32,
    /// Where the next memory and I/O BARs go.
    mmio_next: u64,
    io_next: u64,
}

impl Default for PciBus {
    fn default() -> Self {
        Self::new()
    }
}

/// All ones in `size` bytes (1, 2, 4, 8; others as 4).
pub(crate) fn all_ones64(size: u8) -> u64 {
    match size {
        8 => u64::MAX,
        s => u64::from(crate::devices::all_ones(s)),
    }
}

/// A location in a function's space: which function, which register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ConfigTarget {
    bus: u8,
    device: u8,
    function: u8,
    register: u16,
}

impl PciBus {
    /// Bus 0 with the host bridge at 00:00.0.
    pub fn new() -> Self {
        let mut slots = Vec::with_capacity(SLOTS);
        slots.resize_with(SLOTS, || None);
        slots[0] = Some(Slot { device: Box::new(HostBridge::new()), intx_irq: None });
        Self { slots, config_address: 0, mmio_next: layout::PCI_MMIO32_BASE, io_next: u64::from(IO_BAR_BASE) }
    }

    /// Puts `device` at the lowest free device number and places its BARs
    /// (see [`PciBus::add_at`]).
    pub fn add(&mut self, device: Box<dyn PciDevice>) -> Result<PciSlot, PciError> {
        let slot = self.slots.iter().position(Option::is_none).ok_or(PciError::BusFull)?;
        self.add_at(PciSlot(slot as u8), device)
    }

    /// Puts `device` at device number `slot`, as firmware would leave it:
    /// each BAR at the next free address aligned to its size (largest
    /// first; memory BARs in the 32-bit window from
    /// [`layout::PCI_MMIO32_BASE`], I/O BARs from [`IO_BAR_BASE`]), memory
    /// and I/O decoding enabled for the kinds it has, and the Interrupt
    /// Line register set to the IRQ its pin is wired to. On an error nothing
    /// changes.
    pub fn add_at(&mut self, slot: PciSlot, mut device: Box<dyn PciDevice>) -> Result<PciSlot, PciError> {
        let n = usize::from(slot.0);
        if n >= SLOTS {
            return Err(PciError::InvalidSlot(slot.0));
        }
        if self.slots[n].is_some() {
            return Err(PciError::SlotOccupied(slot.0));
        }
        let mut bars: Vec<(usize, BarSpec)> =
            device.config().bar_specs().iter().enumerate().filter_map(|(i, s)| Some((i, (*s)?))).collect();
        bars.sort_by(|a, b| b.1.size.cmp(&a.1.size).then(a.0.cmp(&b.0)));
        let (mut mmio, mut io) = (self.mmio_next, self.io_next);
        let mmio_end = layout::PCI_MMIO32_BASE + layout::PCI_MMIO32_SIZE;
        let mut placed = Vec::with_capacity(bars.len());
        let mut command = device.config().command();
        for (index, spec) in bars {
            let (next, end, err) = match spec.kind {
                BarKind::Io => (&mut io, 0x1_0000, PciError::NoIoSpace { size: spec.size }),
                _ => (&mut mmio, mmio_end, PciError::NoMmioSpace { size: spec.size }),
            };
            let at = next.checked_next_multiple_of(spec.size).ok_or(err)?;
            let after = at.checked_add(spec.size).filter(|&a| a <= end).ok_or(err)?;
            *next = after;
            placed.push((index, at));
            command |= if spec.kind.is_memory() { config::COMMAND_MEMORY } else { config::COMMAND_IO };
        }
        self.mmio_next = mmio;
        self.io_next = io;
        let cfg = device.config_mut();
        for (index, at) in placed {
            cfg.set_bar_address(index, at);
        }
        cfg.set_command(command);
        let pin = cfg.interrupt_pin();
        let intx_irq = (pin != 0).then(|| {
            // PIRQ = (pin - 1 + device - 1) mod 4, as SeaBIOS's
            // piix_pci_slot_get_irq swizzles.
            let pirq = (usize::from(pin) - 1 + n + 3) % 4;
            INTX_IRQS[pirq]
        });
        cfg.set_u8(config::INTERRUPT_LINE, intx_irq.unwrap_or(0xFF));
        self.slots[n] = Some(Slot { device, intx_irq });
        Ok(slot)
    }

    /// Lets every function do the work it put off ([`PciDevice::poll`]);
    /// whether any had some.
    pub fn poll(&mut self, mem: &mut dyn GuestMemory) -> bool {
        let mut any = false;
        for slot in self.slots.iter_mut().flatten() {
            any |= slot.device.poll(mem);
        }
        any
    }

    /// The device at `slot` as its concrete type.
    pub fn device_mut<T: PciDevice>(&mut self, slot: PciSlot) -> Option<&mut T> {
        let device: &mut dyn Any = self.slots.get_mut(usize::from(slot.0))?.as_mut()?.device.as_mut();
        device.downcast_mut::<T>()
    }

    pub fn device<T: PciDevice>(&self, slot: PciSlot) -> Option<&T> {
        let device: &dyn Any = self.slots.get(usize::from(slot.0))?.as_ref()?.device.as_ref();
        device.downcast_ref::<T>()
    }

    /// The configuration space at `slot`, whatever the device's type.
    pub fn config(&self, slot: PciSlot) -> Option<&ConfigSpace> {
        Some(self.slots.get(usize::from(slot.0))?.as_ref()?.device.config())
    }

    /// The ISA IRQ `slot`'s INTx pin is wired to.
    pub fn intx_irq(&self, slot: PciSlot) -> Option<u8> {
        self.slots.get(usize::from(slot.0))?.as_ref()?.intx_irq
    }

    fn function(&mut self, target: ConfigTarget) -> Option<&mut Box<dyn PciDevice>> {
        if target.bus != 0 || target.function != 0 {
            return None;
        }
        Some(&mut self.slots.get_mut(usize::from(target.device))?.as_mut()?.device)
    }

    fn config_read(&mut self, target: ConfigTarget, size: u8) -> u32 {
        if !config::valid_access(usize::from(target.register), size) {
            return crate::devices::all_ones(size);
        }
        match self.function(target) {
            Some(d) => d.config_read(target.register, size),
            None => crate::devices::all_ones(size),
        }
    }

    fn config_write(&mut self, target: ConfigTarget, size: u8, value: u32, mem: &mut dyn GuestMemory) {
        if !config::valid_access(usize::from(target.register), size) {
            return;
        }
        if let Some(d) = self.function(target) {
            d.config_write(target.register, size, value, mem);
        }
    }

    /// The function CONFIG_ADDRESS selects for a data access at `port`,
    /// if the enable bit is set.
    fn cf8_target(&self, port: u16) -> Option<ConfigTarget> {
        let a = self.config_address;
        (a & CONFIG_ENABLE != 0).then(|| ConfigTarget {
            bus: (a >> 16) as u8,
            device: ((a >> 11) & 0x1F) as u8,
            function: ((a >> 8) & 7) as u8,
            register: (a & 0xFC) as u16 + (port - CONFIG_DATA_PORT),
        })
    }

    /// An `in` of `size` bytes at `port`: the configuration ports or an
    /// I/O BAR; `None` when nothing here decodes it.
    pub fn io_read(&mut self, port: u16, size: u8) -> Option<u32> {
        match port {
            CONFIG_ADDRESS_PORT if size == 4 => Some(self.config_address),
            RESET_CONTROL_PORT if size == 1 => None,
            // Other widths at 0xCF8-0xCFB are no configuration cycle (Linux's
            // type-2 probe reads 0xCF8 and 0xCFA as bytes and must fail).
            CONFIG_ADDRESS_PORT..=0xCFB => Some(crate::devices::all_ones(size)),
            CONFIG_DATA_PORT..=0xCFF => {
                if usize::from(port - CONFIG_DATA_PORT) + usize::from(size) > 4 {
                    return Some(crate::devices::all_ones(size));
                }
                Some(match self.cf8_target(port) {
                    Some(t) => self.config_read(t, size),
                    None => crate::devices::all_ones(size),
                })
            }
            _ => {
                let (slot, bar, offset) = self.decode(u64::from(port), false)?;
                if !matches!(size, 1 | 2 | 4) {
                    return Some(crate::devices::all_ones(size));
                }
                let d = &mut self.slots[slot].as_mut()?.device;
                Some(d.bar_read(bar, offset, size) as u32 & crate::devices::all_ones(size))
            }
        }
    }

    /// An `out` of `size` bytes at `port`; `false` when nothing decodes it.
    pub fn io_write(&mut self, port: u16, size: u8, value: u32, mem: &mut dyn GuestMemory) -> bool {
        match port {
            CONFIG_ADDRESS_PORT if size == 4 => {
                self.config_address = value & CONFIG_ADDRESS_MASK;
                true
            }
            RESET_CONTROL_PORT if size == 1 => false,
            CONFIG_ADDRESS_PORT..=0xCFB => true,
            CONFIG_DATA_PORT..=0xCFF => {
                if usize::from(port - CONFIG_DATA_PORT) + usize::from(size) <= 4
                    && let Some(t) = self.cf8_target(port)
                {
                    self.config_write(t, size, value, mem);
                }
                true
            }
            _ => match self.decode(u64::from(port), false) {
                Some((slot, bar, offset)) => {
                    if let Some(s) = self.slots[slot].as_mut().filter(|_| matches!(size, 1 | 2 | 4)) {
                        s.device.bar_write(bar, offset, size, u64::from(value), mem);
                    }
                    true
                }
                None => false,
            },
        }
    }

    /// The function and register an ECAM address names.
    fn ecam_target(gpa: u64) -> Option<ConfigTarget> {
        let offset = gpa.checked_sub(layout::ECAM_BASE).filter(|&o| o < layout::ECAM_SIZE)?;
        Some(ConfigTarget {
            bus: (offset >> 20) as u8,
            device: ((offset >> 15) & 0x1F) as u8,
            function: ((offset >> 12) & 7) as u8,
            register: (offset & 0xFFF) as u16,
        })
    }

    /// A memory read of `size` bytes at `gpa`: ECAM or a memory BAR; `None`
    /// when nothing here decodes it.
    pub fn mmio_read(&mut self, gpa: u64, size: u8) -> Option<u64> {
        if let Some(t) = Self::ecam_target(gpa) {
            return Some(match size {
                1 | 2 | 4 => u64::from(self.config_read(t, size)),
                _ => all_ones64(size),
            });
        }
        let (slot, bar, offset) = self.decode(gpa, true)?;
        if !matches!(size, 1 | 2 | 4 | 8) {
            return Some(all_ones64(size));
        }
        let d = &mut self.slots[slot].as_mut()?.device;
        Some(d.bar_read(bar, offset, size) & all_ones64(size))
    }

    /// A memory write at `gpa`; `false` when nothing here decodes it.
    pub fn mmio_write(&mut self, gpa: u64, size: u8, value: u64, mem: &mut dyn GuestMemory) -> bool {
        if let Some(t) = Self::ecam_target(gpa) {
            if matches!(size, 1 | 2 | 4) {
                self.config_write(t, size, value as u32, mem);
            }
            return true;
        }
        match self.decode(gpa, true) {
            Some((slot, bar, offset)) => {
                if let Some(s) = self.slots[slot].as_mut().filter(|_| matches!(size, 1 | 2 | 4 | 8)) {
                    s.device.bar_write(bar, offset, size, value, mem);
                }
                true
            }
            None => false,
        }
    }

    /// Which function's BAR decodes `address` in memory or I/O space now:
    /// (slot index, BAR index, offset in the BAR).
    fn decode(&self, address: u64, memory: bool) -> Option<(usize, usize, u64)> {
        for (n, slot) in self.slots.iter().enumerate() {
            let Some(slot) = slot else { continue };
            let cfg = slot.device.config();
            let enabled = if memory { cfg.memory_enabled() } else { cfg.io_enabled() };
            if !enabled {
                continue;
            }
            for bar in 0..config::BAR_COUNT {
                let Some(region) = cfg.bar(bar) else { continue };
                if region.kind.is_memory() != memory {
                    continue;
                }
                if let Some(offset) = region.offset_of(address) {
                    return Some((n, bar, offset));
                }
            }
        }
        None
    }

    /// The MSI/MSI-X messages the functions raised since the last call,
    /// in order, for the VMM to deliver to the local APICs they name.
    pub fn take_msi(&mut self) -> Vec<MsiMessage> {
        let mut out = Vec::new();
        for slot in self.slots.iter_mut().flatten() {
            slot.device.take_msi(&mut out);
        }
        out
    }

    /// Every IRQ a function's INTx pin is wired to, ascending, with whether
    /// any function on it asserts its pin (and has not set Interrupt
    /// Disable). The lines are level-triggered and shared (the guest's ACPI
    /// code registers them level, active low; [`crate::devices::ioapic`]
    /// takes the asserted state as is): the VMM hands changes to the PIC and
    /// the I/O APIC.
    pub fn intx_lines(&self) -> Vec<IntxLine> {
        let mut lines: Vec<IntxLine> = Vec::new();
        for slot in self.slots.iter().flatten() {
            let Some(irq) = slot.intx_irq else { continue };
            let cfg = slot.device.config();
            let asserted = slot.device.intx_asserted() && !cfg.intx_disabled();
            match lines.iter_mut().find(|l| l.irq == irq) {
                Some(l) => l.asserted |= asserted,
                None => lines.push(IntxLine { irq, asserted }),
            }
        }
        lines.sort_by_key(|l| l.irq);
        lines
    }
}

#[cfg(test)]
mod tests;
