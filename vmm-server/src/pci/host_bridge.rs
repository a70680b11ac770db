//! The host bridge at 00:00.0: what a Linux guest looks for first on bus 0
//! (its `pci_sanity_check` wants a host bridge or an Intel device there).
//! It has the IDs of the Q35 chipset's DRAM controller (Intel 82G33/P35
//! MCH, 8086:29C0), as QEMU's `q35` machine presents, with QEMU's
//! subsystem IDs; no BARs, no interrupt, no capabilities. The ECAM window it
//! would configure on real hardware (PCIEXBAR) is fixed here and announced
//! through the ACPI MCFG table instead.

use super::config::{ConfigSpace, PciIds};
use super::{GuestMemory, PciDevice};

pub const HOST_BRIDGE_IDS: PciIds = PciIds {
    vendor_id: 0x8086,
    device_id: 0x29C0,
    revision_id: 0,
    // Bridge device, host bridge (PCI Code and ID Assignment §1.7).
    class_code: 0x06_00_00,
    subsystem_vendor_id: 0x1AF4,
    subsystem_id: 0x1100,
};

/// The host bridge function.
#[derive(Clone, Debug)]
pub struct HostBridge {
    config: ConfigSpace,
}

impl HostBridge {
    pub fn new() -> Self {
        let mut config = ConfigSpace::new(HOST_BRIDGE_IDS, 0);
        // As firmware leaves it: the bridge forwards memory and I/O.
        config.set_command(super::config::COMMAND_IO | super::config::COMMAND_MEMORY);
        // PAM and PCIEXBAR, which firmware programs (crate::firmware::chipset).
        crate::firmware::chipset::make_firmware_registers_writable(&mut config);
        Self { config }
    }
}

impl Default for HostBridge {
    fn default() -> Self {
        Self::new()
    }
}

impl PciDevice for HostBridge {
    fn config(&self) -> &ConfigSpace {
        &self.config
    }

    fn config_mut(&mut self) -> &mut ConfigSpace {
        &mut self.config
    }

    fn bar_read(&mut self, _bar: usize, _offset: u64, size: u8) -> u64 {
        super::all_ones64(size)
    }

    fn bar_write(&mut self, _bar: usize, _offset: u64, _size: u8, _value: u64, _mem: &mut dyn GuestMemory) {}
}
