//! PCI configuration space for drivers: mechanism #1 (ports 0xCF8/0xCFC,
//! PCI Local Bus 3.0 §3.2.2.3.2, through `libipc::pio`) as
//! `virtio-drivers`' `ConfigurationAccess`, and what every driver does to
//! a function it takes: map its memory BARs into the process
//! ([`map_bars`]) and turn on its memory decoding and bus mastering
//! ([`enable`]).
//!
//! The ports are a driver's only with the I/O-port capability init grants
//! from the manifest; a port the process was not given faults.

use alloc::format;
use alloc::string::String;

use abi::CapSlot;
use libipc::interfaces::PciFunction;
use libipc::pio;
use virtio_drivers::transport::pci::bus::{Command, ConfigurationAccess, DeviceFunction, PciRoot};

use crate::cfgshadow::Shadowed;
use crate::dma;

/// BARs in a type-0 configuration header.
pub const BARS: usize = 6;

/// Configuration space through ports 0xCF8/0xCFC, as it is: for
/// registers other than the command register and the BARs (capabilities,
/// MSI-X control). Drivers hand [`cam`] to `virtio-drivers`.
pub struct PortCam;

/// What drivers give `virtio-drivers`: [`PortCam`] with BAR sizing done
/// once per function ([`crate::cfgshadow`] says why).
pub type Cam = Shadowed<PortCam>;

/// A fresh [`Cam`].
pub fn cam() -> Cam {
    Shadowed::new(PortCam)
}

impl ConfigurationAccess for PortCam {
    fn read_word(&self, df: DeviceFunction, register_offset: u8) -> u32 {
        pio::pci_config_read(df.bus, df.device, df.function, register_offset)
    }

    fn write_word(&mut self, df: DeviceFunction, register_offset: u8, data: u32) {
        pio::pci_config_write(df.bus, df.device, df.function, register_offset, data)
    }

    unsafe fn unsafe_clone(&self) -> Self {
        PortCam
    }
}

/// The memory BARs of `df` (address and size; `None` for an I/O BAR, an
/// unused one or one the firmware left at 0), each mapped into the
/// process: through a frame derived from `root` (the manifest's
/// `pci_bars`) when the driver holds it, else it must lie inside a
/// window mapped already (the manifest's `device_memory`). `driver` names
/// the process in the error.
pub fn map_bars(
    pci: &mut PciRoot<Cam>,
    df: DeviceFunction,
    root: Option<CapSlot>,
    driver: &str,
) -> Result<[Option<(u64, u64)>; BARS], String> {
    let bars = pci.bars(df).map_err(|e| format!("reading its BARs: {e}"))?;
    let mut memory = [None; BARS];
    for (i, bar) in bars.iter().enumerate() {
        let Some((address, size)) = bar.as_ref().and_then(|b| b.memory_address_size()) else { continue };
        if address == 0 || size == 0 {
            continue;
        }
        if let Some(r) = root {
            dma::map_bar(r, address, size).map_err(|e| format!("BAR{i} at {address:#x} (+{size:#x}): cannot map: {e}"))?;
        }
        if !dma::covered(address, size) {
            return Err(format!(
                "BAR{i} at {address:#x} (+{size:#x}) is outside {driver}'s device_memory windows (see the manifest)"
            ));
        }
        memory[i] = Some((address, size));
    }
    Ok(memory)
}

/// Registers `df` with init (`proc.pci_claim` through `proc`, init's
/// endpoint, when the manifest lets the driver call it), then turns on its
/// memory decoding and bus mastering. The device may then DMA into any
/// physical memory: there is no IOMMU, so only a driver trusted with DMA
/// frames takes a function, and init, knowing which functions are this
/// driver's, clears their bus mastering when the driver dies, before it
/// restarts it. A function init refuses (another driver's) is not
/// enabled; without a `proc` endpoint the function is enabled and the
/// driver says that its death leaves the device mastering.
pub fn enable(pci: &mut PciRoot<Cam>, df: DeviceFunction, proc: Option<CapSlot>, driver: &str) -> Result<(), String> {
    let function = PciFunction { bus: df.bus, device: df.device, function: df.function };
    match proc {
        Some(ep) => {
            let client = libipc::interfaces::proc::Client::new(libipc::kernel::KernelTransport::new(
                libipc::cap::Cap::from_slot(ep),
            ));
            match client.pci_claim(function) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(format!("init refused it: {e}")),
                Err(e) => return Err(format!("registering it with init: {e}")),
            }
        }
        None => log::warn!(
            "{driver}: PCI {function}: no \"proc\" endpoint to register it with init (manifest calls); if {driver} dies the device keeps bus mastering"
        ),
    }
    let (_, command) = pci.get_status_command(df);
    pci.set_command(df, command | Command::MEMORY_SPACE | Command::BUS_MASTER);
    Ok(())
}
