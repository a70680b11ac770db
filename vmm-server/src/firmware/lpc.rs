//! The ICH9 LPC bridge at 00:1f.0 (8086:2918) of a firmware-booted VM:
//! the function on QEMU's `q35` machine where firmware finds the ACPI PM
//! block. OVMF's platform code and its ACPI timer library read the PM
//! base address from here (config 0x40, PMBASE) before every PM-timer
//! read, and enable it through ACPI_CNTL (0x44); without the function
//! those reads give all ones and every firmware delay spins forever.
//!
//! The PM block does not move: it is fixed at [`PM_BASE`] (0x600, where
//! OVMF and SeaBIOS put it on q35 and where the ACPI tables name it).
//! PMBASE, ACPI_CNTL, the PIRQ routing registers (0x60-0x63, 0x68-0x6B)
//! and RCBA (0xF0) are plain storage the guest reads back: they describe
//! the fixed platform, they do not reconfigure it (INTx routing is the
//! bus's fixed swizzle, which the DSDT's `_PRT` gives the guest OS).
//!
//! Direct kernel boot has no LPC function (Linux needs none), so its PCI
//! bus is unchanged.

use crate::pci::config::{ConfigSpace, PciIds};
use crate::pci::{PciDevice, PciSlot};
use crate::virtio::GuestMemory;

/// Where the function sits (device 31, function 0, as on q35).
pub const LPC_SLOT: PciSlot = PciSlot(0x1F);

pub const LPC_IDS: PciIds = PciIds {
    vendor_id: 0x8086,
    device_id: 0x2918,
    revision_id: 2,
    // Bridge device, ISA bridge.
    class_code: 0x06_01_00,
    subsystem_vendor_id: 0x1AF4,
    subsystem_id: 0x1100,
};

/// ICH9 LPC config offsets (Intel I/O Controller Hub 9 datasheet §13.1).
pub const PMBASE: usize = 0x40;
pub const ACPI_CNTL: usize = 0x44;
pub const PIRQA_ROUT: usize = 0x60;
pub const PIRQE_ROUT: usize = 0x68;
pub const RCBA: usize = 0xF0;
/// PMBASE bit 0: the register names an I/O range (read-only 1).
pub const PMBASE_IO: u32 = 1;
/// ACPI_CNTL bit 7: the PM block decodes.
pub const ACPI_EN: u8 = 1 << 7;
/// The PM block's fixed I/O base.
pub const PM_BASE: u16 = crate::boot::acpi::PM1A_EVT_BLK;

/// The LPC function.
#[derive(Clone, Debug)]
pub struct Lpc {
    config: ConfigSpace,
}

impl Lpc {
    /// As the firmware finds it at power-on: PMBASE names the fixed PM
    /// block, decoding off until it sets ACPI_EN; PIRQs disabled (0x80).
    pub fn new() -> Self {
        let mut config = ConfigSpace::new(LPC_IDS, 0);
        config.set_u32(PMBASE, u32::from(PM_BASE) | PMBASE_IO);
        // PMBASE bits 15:7 (a 128-byte block; bit 0 reads 1).
        config.set_writable(PMBASE, &[0x80, 0xFF, 0, 0]);
        config.set_writable(ACPI_CNTL, &[0xFF]);
        config.set_u32(PIRQA_ROUT, 0x8080_8080);
        config.set_u32(PIRQE_ROUT, 0x8080_8080);
        config.set_writable(PIRQA_ROUT, &[0x8F; 4]);
        config.set_writable(PIRQE_ROUT, &[0x8F; 4]);
        // RCBA: base bits 31:14 and the enable bit.
        config.set_writable(RCBA, &[0x01, 0xC0, 0xFF, 0xFF]);
        Self { config }
    }
}

impl Default for Lpc {
    fn default() -> Self {
        Self::new()
    }
}

impl PciDevice for Lpc {
    fn config(&self) -> &ConfigSpace {
        &self.config
    }

    fn config_mut(&mut self) -> &mut ConfigSpace {
        &mut self.config
    }

    fn bar_read(&mut self, _bar: usize, _offset: u64, size: u8) -> u64 {
        crate::pci::all_ones64(size)
    }

    fn bar_write(&mut self, _bar: usize, _offset: u64, _size: u8, _value: u64, _mem: &mut dyn GuestMemory) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pci::PciBus;
    use crate::virtio::VecMemory;

    /// A config read through ports 0xCF8/0xCFC, as firmware does it.
    fn cf8_read(bus: &mut PciBus, slot: PciSlot, reg: u16, size: u8) -> u32 {
        let mut m = VecMemory::new(0, 0x1000);
        let addr = 0x8000_0000 | u32::from(slot.0) << 11 | u32::from(reg & 0xFC);
        bus.io_write(0xCF8, 4, addr, &mut m);
        bus.io_read(0xCFC + (reg & 3), size).unwrap()
    }

    fn cf8_write(bus: &mut PciBus, slot: PciSlot, reg: u16, size: u8, value: u32) {
        let mut m = VecMemory::new(0, 0x1000);
        let addr = 0x8000_0000 | u32::from(slot.0) << 11 | u32::from(reg & 0xFC);
        bus.io_write(0xCF8, 4, addr, &mut m);
        bus.io_write(0xCFC + (reg & 3), size, value, &mut m);
    }

    #[test]
    fn ovmf_finds_the_pm_block_where_the_platform_has_it() {
        let mut bus = PciBus::new();
        bus.add_at(LPC_SLOT, alloc::boxed::Box::new(Lpc::new())).unwrap();
        assert_eq!(cf8_read(&mut bus, LPC_SLOT, 0, 4), 0x2918_8086);
        assert_eq!(cf8_read(&mut bus, LPC_SLOT, 0x0A, 2), 0x0601, "ISA bridge");
        // OVMF's AcpiTimerLib: PMBASE & 0xFF80, then the timer at +8.
        assert_eq!(cf8_read(&mut bus, LPC_SLOT, PMBASE as u16, 4) & 0xFF80, 0x600);
        // PlatformPei: ACPI_EN clear, so PMBASE := 0x600 and ACPI_EN set.
        assert_eq!(cf8_read(&mut bus, LPC_SLOT, ACPI_CNTL as u16, 1) & u32::from(ACPI_EN), 0);
        cf8_write(&mut bus, LPC_SLOT, PMBASE as u16, 4, 0x600);
        cf8_write(&mut bus, LPC_SLOT, ACPI_CNTL as u16, 1, u32::from(ACPI_EN));
        assert_eq!(cf8_read(&mut bus, LPC_SLOT, PMBASE as u16, 4), 0x601, "bit 0 stays set");
        assert_eq!(cf8_read(&mut bus, LPC_SLOT, ACPI_CNTL as u16, 1), u32::from(ACPI_EN));
        // The PIRQ routes and RCBA read back; reserved bits stay 0.
        cf8_write(&mut bus, LPC_SLOT, PIRQA_ROUT as u16, 4, 0x0B0B_0A0A);
        assert_eq!(cf8_read(&mut bus, LPC_SLOT, PIRQA_ROUT as u16, 4), 0x0B0B_0A0A);
        cf8_write(&mut bus, LPC_SLOT, PIRQE_ROUT as u16, 4, 0xFFFF_FFFF);
        assert_eq!(cf8_read(&mut bus, LPC_SLOT, PIRQE_ROUT as u16, 4), 0x8F8F_8F8F);
        cf8_write(&mut bus, LPC_SLOT, RCBA as u16, 4, 0xFED1_C001);
        assert_eq!(cf8_read(&mut bus, LPC_SLOT, RCBA as u16, 4), 0xFED1_C001);
        // The IDs and the rest of the space are read-only.
        cf8_write(&mut bus, LPC_SLOT, 0, 4, 0);
        cf8_write(&mut bus, LPC_SLOT, 0x48, 4, 0xFFFF_FFFF);
        assert_eq!(cf8_read(&mut bus, LPC_SLOT, 0, 4), 0x2918_8086);
        assert_eq!(cf8_read(&mut bus, LPC_SLOT, 0x48, 4), 0);
        // Not multi-function: functions 1-7 are absent.
        assert_eq!(cf8_read(&mut bus, LPC_SLOT, 0x0E, 1) & 0x80, 0);
    }
}
