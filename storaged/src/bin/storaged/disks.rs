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
use alcove_hal::pci;
use libipc::blkring::{BlockDevice, DiskError, ID_BYTES};
use storaged::ramdisk::{RamDisk, RamDiskPlan};
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
    let mut root = PciRoot::new(pci::cam());
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
    root: &mut PciRoot<pci::Cam>,
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

/// A RAM disk over a boot file mapped read-only, its written blocks in
/// private frames charged to storaged's budget.
pub type BootFileDisk = RamDisk<&'static [u8], &'static mut [u8]>;

/// The disks storaged serves: the machine's virtio-blk disks, then RAM
/// disks over boot files.
pub enum MachineBlk {
    /// Boxed: the driver's state is large, a RAM disk's small.
    Virtio(alloc::boxed::Box<VirtioDisk>),
    Ram(BootFileDisk),
}

impl MachineBlk {
    fn dev(&mut self) -> &mut dyn BlockDevice {
        match self {
            MachineBlk::Virtio(d) => &mut **d,
            MachineBlk::Ram(d) => d,
        }
    }
}

impl BlockDevice for MachineBlk {
    fn capacity_sectors(&self) -> u64 {
        match self {
            MachineBlk::Virtio(d) => d.capacity_sectors(),
            MachineBlk::Ram(d) => d.capacity_sectors(),
        }
    }
    fn read_only(&self) -> bool {
        match self {
            MachineBlk::Virtio(d) => d.read_only(),
            MachineBlk::Ram(d) => d.read_only(),
        }
    }
    fn read(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), DiskError> {
        self.dev().read(sector, buf)
    }
    fn write(&mut self, sector: u64, data: &[u8]) -> Result<(), DiskError> {
        self.dev().write(sector, data)
    }
    fn flush(&mut self) -> Result<(), DiskError> {
        self.dev().flush()
    }
    fn id(&mut self) -> Result<[u8; ID_BYTES], DiskError> {
        self.dev().id()
    }
}

/// Where boot files are mapped read-only: file `i` of the start
/// information at `FILE_VA + i * FILE_STRIDE`.
const FILE_VA: u64 = 0x30_0000_0000;
const FILE_STRIDE: u64 = 0x1_0000_0000;

/// The RAM disks `plan` names, each with its name (`ram boot-disk.img`);
/// one that cannot be served (no such boot file, a bad size, the mapping
/// refused) is logged with why and left out.
pub fn ram_disks(files: &[(String, abi::CapSlot, u64)], plan: &RamDiskPlan) -> Vec<(String, BootFileDisk)> {
    let mut out = Vec::new();
    for name in &plan.files {
        let Some(index) = files.iter().position(|(n, _, _)| n == name) else {
            log::error!("ramdisk={name}: no such boot file among storaged's files; not served");
            continue;
        };
        let (_, slot, len) = files[index];
        if let Err(e) = storaged::ramdisk::check_size(len) {
            log::error!("ramdisk={name}: {e}; not served");
            continue;
        }
        let va = FILE_VA + index as u64 * FILE_STRIDE;
        if len > FILE_STRIDE {
            log::error!("ramdisk={name}: {len} bytes, more than the {FILE_STRIDE} bytes a boot file may map; not served");
            continue;
        }
        match libipc::sys::map(alcove_rt::start::SLOT_SELF, slot, va, abi::Rights::READ) {
            Ok(()) | Err(abi::Error::AlreadyMapped) => {}
            Err(e) => {
                log::error!("ramdisk={name}: cannot map the boot file: {e}; not served");
                continue;
            }
        }
        let source = alcove_rt::user_bytes(va, len as usize);
        let alloc: storaged::ramdisk::ChunkAlloc<&'static mut [u8]> = alloc::boxed::Box::new(|bytes| {
            dma::alloc_private(bytes.div_ceil(4096)).map_err(|e| format!("a frame of {bytes} bytes: {e}"))
        });
        match RamDisk::new(source, name, plan.mem_bytes, alloc) {
            Ok(d) => {
                log::info!(
                    "ram {name}: {} sectors from the boot file, writes kept in memory (at most {} KiB)",
                    len / 512,
                    plan.mem_bytes / 1024
                );
                out.push((format!("ram {name}"), d));
            }
            Err(e) => log::error!("ramdisk={name}: {e}; not served"),
        }
    }
    out
}
