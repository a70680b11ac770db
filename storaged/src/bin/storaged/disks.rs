//! Finding the machine's virtio-blk disks on PCI bus 0 (configuration
//! mechanism #1, ports 0xCF8..0xCFF, through `alcove_hal::pci`) and driving them with `virtio-drivers`
//! (its modern PCI transport, virtio 1.2 §4.1). Completion is polled: a
//! request spins on the used ring until the device is done, which is fine
//! while storaged carries out one kick at a time; interrupt-driven
//! completion (MSI-X to a notification) comes with asynchronous rings.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use alcove_hal::dma::{self, AlcoveHal};
use alcove_hal::pci::{self, PortCam};
use libipc::blkring::{BlockDevice, DiskError, ID_BYTES};
use virtio_drivers::device::blk::VirtIOBlk;
use virtio_drivers::transport::pci::bus::{DeviceFunction, PciRoot};
use virtio_drivers::transport::pci::{PciTransport, virtio_device_type};
use virtio_drivers::transport::DeviceType;

/// One virtio-blk disk.
pub struct VirtioDisk {
    blk: VirtIOBlk<AlcoveHal, PciTransport>,
}

impl BlockDevice for VirtioDisk {
    fn capacity_sectors(&self) -> u64 {
        self.blk.capacity()
    }

    fn read_only(&self) -> bool {
        self.blk.readonly()
    }

    fn read(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), DiskError> {
        self.blk.read_blocks(sector as usize, buf).map_err(|_| DiskError { what: "virtio-blk read" })
    }

    fn write(&mut self, sector: u64, data: &[u8]) -> Result<(), DiskError> {
        self.blk.write_blocks(sector as usize, data).map_err(|_| DiskError { what: "virtio-blk write" })
    }

    fn flush(&mut self) -> Result<(), DiskError> {
        self.blk.flush().map_err(|_| DiskError { what: "virtio-blk flush" })
    }

    fn id(&mut self) -> Result<[u8; ID_BYTES], DiskError> {
        let mut id = [0; ID_BYTES];
        self.blk.device_id(&mut id).map_err(|_| DiskError { what: "virtio-blk get id" })?;
        Ok(id)
    }
}

/// Every virtio-blk function on bus 0 that could be started, with its name
/// (`virtio-blk 00:04.0`); one that could not is logged and skipped.
/// Each is registered with init through `proc` (see `pci::enable`).
pub fn find(
    windows: &[(u64, u64, abi::CapSlot)],
    bar_root: Option<abi::CapSlot>,
    proc: Option<abi::CapSlot>,
) -> Vec<(String, VirtioDisk)> {
    let mut root = PciRoot::new(PortCam);
    let mut found = Vec::new();
    let functions: Vec<_> = root.enumerate_bus(0).collect();
    for (df, info) in functions {
        if virtio_device_type(&info) != Some(DeviceType::Block) {
            continue;
        }
        let name = format!("virtio-blk {:02x}:{:02x}.{}", df.bus, df.device, df.function);
        if !dma::has_windows() {
            for &(phys, bytes, slot) in windows {
                if let Err(e) = dma::map_window(phys, bytes, slot) {
                    log::error!("device memory {phys:#x}+{bytes:#x}: cannot map: {e}");
                }
            }
        }
        match start(&mut root, df, bar_root, proc) {
            Ok(disk) => {
                log::info!("{name}: {} sectors{}", disk.blk.capacity(), if disk.blk.readonly() { ", read-only" } else { "" });
                found.push((name, disk));
            }
            Err(why) => log::error!("{name}: not used: {why}"),
        }
    }
    found
}

fn start(
    root: &mut PciRoot<PortCam>,
    df: DeviceFunction,
    bar_root: Option<abi::CapSlot>,
    proc: Option<abi::CapSlot>,
) -> Result<VirtioDisk, String> {
    pci::map_bars(root, df, bar_root, "storaged")?;
    pci::enable(root, df, proc, "storaged")?;
    let transport = PciTransport::new::<AlcoveHal, _>(root, df).map_err(|e| format!("virtio PCI transport: {e}"))?;
    let blk = VirtIOBlk::<AlcoveHal, _>::new(transport).map_err(|e| format!("virtio-blk start: {e}"))?;
    Ok(VirtioDisk { blk })
}
