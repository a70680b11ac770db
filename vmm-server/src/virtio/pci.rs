//! The modern virtio-over-PCI transport (virtio 1.2 §4.1), as Linux's
//! `virtio_pci_modern` drives it.
//!
//! [`VirtioPci`] wraps a [`VirtioDevice`] into a [`PciDevice`] for
//! [`PciBus`](crate::pci::PciBus): a non-transitional function (device ID
//! 0x1040 + type, revision 1, §4.1.2) with one 64-bit memory BAR 0 laid out
//! as
//!
//! ```text
//! 0x0000  common configuration (§4.1.4.3)     VIRTIO_PCI_CAP_COMMON_CFG
//! 0x1000  ISR status (§4.1.4.5)                VIRTIO_PCI_CAP_ISR_CFG
//! 0x2000  device configuration (§4.1.4.6)      VIRTIO_PCI_CAP_DEVICE_CFG
//! 0x3000  notifications, 4 bytes a queue        VIRTIO_PCI_CAP_NOTIFY_CFG
//! 0x4000  MSI-X table (one vector per queue + one for configuration)
//! 0x5000  MSI-X pending bits
//! ```
//!
//! and the VIRTIO_PCI_CAP_PCI_CFG window (§4.1.4.9) into the same BAR.
//!
//! The transport owns the device status (§2.1: reset on a 0 write, the
//! FEATURES_OK check of §3.1.1), feature negotiation through the select
//! registers, the queues' configuration, and interrupts. On a notification
//! (a write to the queue's notify address, or [`VirtioPci::kick`] from the
//! VMM) it calls [`VirtioDevice::process_queue`] with guest memory and, if
//! the device asks, raises the queue's interrupt; what a device carries out
//! away from the transport (virtio-blk) comes back through
//! [`VirtioPci::complete`], which does the same. A ring protocol error
//! sets DEVICE_NEEDS_RESET and sends a configuration-change interrupt
//! (§2.1.2); the device then does nothing more until the driver resets it.
//!
//! Interrupts (§4.1.5.3, §4.1.5.4): with MSI-X enabled, a queue's
//! interrupt is the MSI-X message of its `queue_msix_vector` (none for
//! VIRTIO_MSI_NO_VECTOR); the VMM collects messages with
//! [`PciBus::take_msi`](crate::pci::PciBus::take_msi). Without MSI-X the
//! ISR status bit is set and INTx asserted until the driver reads the ISR.
//! A configuration change sets ISR bit 1 either way.
//!
//! Bus mastering is not enforced: a guest that clears it still gets its
//! queues served (as Firecracker and Cloud Hypervisor do).

use alloc::vec::Vec;
use core::fmt;

use super::queue::Queue;
use super::{
    ActivateError, GuestMemory, QueueError, VIRTIO_F_VERSION_1, VIRTIO_ID_BLOCK, VIRTIO_ID_CONSOLE, VIRTIO_ID_ENTROPY,
    VIRTIO_ID_NET, VIRTIO_STATUS_DEVICE_NEEDS_RESET, VIRTIO_STATUS_DRIVER_OK, VIRTIO_STATUS_FEATURES_OK, VirtioDevice,
    feature, prepare_queues,
};
use crate::pci::config::{BarKind, BarSpec, ConfigError, ConfigSpace, PciIds};
use crate::pci::{MsiMessage, Msix, PciDevice};

/// The virtio vendor ID (§4.1.2).
pub const VIRTIO_PCI_VENDOR_ID: u16 = 0x1AF4;
/// Non-transitional device IDs are 0x1040 + the virtio device ID (§4.1.2).
pub const VIRTIO_PCI_DEVICE_ID_BASE: u16 = 0x1040;
/// Non-transitional devices have revision 1 or higher (§4.1.2.1).
pub const VIRTIO_PCI_REVISION: u8 = 1;
/// Subsystem device ID: 0x40 or higher for non-transitional devices
/// (§4.1.2.1); QEMU's value.
pub const VIRTIO_PCI_SUBSYSTEM_ID: u16 = 0x1100;
/// "No MSI-X vector" for config_msix_vector and queue_msix_vector (§4.1.4.3).
pub const VIRTIO_MSI_NO_VECTOR: u16 = 0xFFFF;

// Capability types (§4.1.4).
pub const VIRTIO_PCI_CAP_COMMON_CFG: u8 = 1;
pub const VIRTIO_PCI_CAP_NOTIFY_CFG: u8 = 2;
pub const VIRTIO_PCI_CAP_ISR_CFG: u8 = 3;
pub const VIRTIO_PCI_CAP_DEVICE_CFG: u8 = 4;
pub const VIRTIO_PCI_CAP_PCI_CFG: u8 = 5;
/// Vendor-specific capability ID (PCI 3.0 Appendix H).
pub const PCI_CAP_ID_VNDR: u8 = 0x09;

// ISR status bits (§4.1.4.5).
pub const VIRTIO_PCI_ISR_QUEUE: u8 = 1;
pub const VIRTIO_PCI_ISR_CONFIG: u8 = 2;

/// BAR 0 regions.
pub const BAR_INDEX: usize = 0;
pub const BAR_SIZE: u64 = 0x8000;
pub const COMMON_CFG_OFFSET: u64 = 0x0000;
pub const ISR_OFFSET: u64 = 0x1000;
pub const DEVICE_CFG_OFFSET: u64 = 0x2000;
pub const NOTIFY_OFFSET: u64 = 0x3000;
pub const MSIX_TABLE_OFFSET: u64 = 0x4000;
pub const MSIX_PBA_OFFSET: u64 = 0x5000;
/// Each region's size in the BAR (and in its capability's `length`, as
/// QEMU announces them).
pub const REGION_SIZE: u64 = 0x1000;
/// Queue `n` is notified at `NOTIFY_OFFSET + n * NOTIFY_OFF_MULTIPLIER`
/// (§4.1.4.4; QEMU's multiplier).
pub const NOTIFY_OFF_MULTIPLIER: u32 = 4;
/// The most queues the notify region and the MSI-X table page hold.
pub const MAX_QUEUES: usize = (REGION_SIZE / crate::pci::msix::ENTRY_SIZE) as usize - 1;

// struct virtio_pci_common_cfg (§4.1.4.3).
pub const COMMON_DEVICE_FEATURE_SELECT: u64 = 0;
pub const COMMON_DEVICE_FEATURE: u64 = 4;
pub const COMMON_DRIVER_FEATURE_SELECT: u64 = 8;
pub const COMMON_DRIVER_FEATURE: u64 = 12;
pub const COMMON_CONFIG_MSIX_VECTOR: u64 = 16;
pub const COMMON_NUM_QUEUES: u64 = 18;
pub const COMMON_DEVICE_STATUS: u64 = 20;
pub const COMMON_CONFIG_GENERATION: u64 = 21;
pub const COMMON_QUEUE_SELECT: u64 = 22;
pub const COMMON_QUEUE_SIZE: u64 = 24;
pub const COMMON_QUEUE_MSIX_VECTOR: u64 = 26;
pub const COMMON_QUEUE_ENABLE: u64 = 28;
pub const COMMON_QUEUE_NOTIFY_OFF: u64 = 30;
pub const COMMON_QUEUE_DESC: u64 = 32;
pub const COMMON_QUEUE_DRIVER: u64 = 40;
pub const COMMON_QUEUE_DEVICE: u64 = 48;
pub const COMMON_QUEUE_NOTIFY_DATA: u64 = 56;
pub const COMMON_QUEUE_RESET: u64 = 58;
/// The structure's size in virtio 1.2.
pub const COMMON_CFG_LEN: usize = 60;

/// The fields of the common configuration: (offset, width).
const COMMON_FIELDS: [(u64, u64); 18] = [
    (COMMON_DEVICE_FEATURE_SELECT, 4),
    (COMMON_DEVICE_FEATURE, 4),
    (COMMON_DRIVER_FEATURE_SELECT, 4),
    (COMMON_DRIVER_FEATURE, 4),
    (COMMON_CONFIG_MSIX_VECTOR, 2),
    (COMMON_NUM_QUEUES, 2),
    (COMMON_DEVICE_STATUS, 1),
    (COMMON_CONFIG_GENERATION, 1),
    (COMMON_QUEUE_SELECT, 2),
    (COMMON_QUEUE_SIZE, 2),
    (COMMON_QUEUE_MSIX_VECTOR, 2),
    (COMMON_QUEUE_ENABLE, 2),
    (COMMON_QUEUE_NOTIFY_OFF, 2),
    (COMMON_QUEUE_DESC, 8),
    (COMMON_QUEUE_DRIVER, 8),
    (COMMON_QUEUE_DEVICE, 8),
    (COMMON_QUEUE_NOTIFY_DATA, 2),
    (COMMON_QUEUE_RESET, 2),
];

// struct virtio_pci_cap offsets from the capability's start (§4.1.4).
const CAP_BAR: usize = 4;
const CAP_OFFSET: usize = 8;
const CAP_LENGTH: usize = 12;
/// virtio_pci_cfg_cap.pci_cfg_data.
const CAP_PCI_CFG_DATA: usize = 16;

/// Why the device stopped: kept for the VMM to log once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransportError {
    /// The driver set DRIVER_OK without FEATURES_OK (§3.1.1).
    DriverOkWithoutFeaturesOk,
    /// DRIVER_OK failed: a legacy driver, a bad queue, or the device.
    Activate(ActivateError),
    /// Queue `index` broke the ring protocol.
    Queue { index: usize, error: QueueError },
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransportError::DriverOkWithoutFeaturesOk => {
                write!(f, "virtio-pci: driver set DRIVER_OK without FEATURES_OK")
            }
            TransportError::Activate(e) => write!(f, "virtio-pci: {e}"),
            TransportError::Queue { index, error } => {
                write!(f, "virtio-pci: queue {index}: {error}")
            }
        }
    }
}

/// The PCI class code for a virtio device type (QEMU's choices).
pub fn class_code(device_type: u32) -> u32 {
    match device_type {
        VIRTIO_ID_NET => 0x02_00_00,     // network controller, Ethernet
        VIRTIO_ID_BLOCK => 0x01_00_00,   // mass storage, SCSI
        VIRTIO_ID_CONSOLE => 0x07_80_00, // communication controller, other
        VIRTIO_ID_ENTROPY => 0xFF_00_00, // unassigned class
        _ => 0xFF_00_00,
    }
}

/// A virtio device on PCI.
pub struct VirtioPci<D: VirtioDevice> {
    device: D,
    config: ConfigSpace,
    msix: Msix,
    queues: Vec<Queue>,
    queue_vectors: Vec<u16>,
    config_vector: u16,
    device_feature_select: u32,
    driver_feature_select: u32,
    driver_features: u64,
    status: u8,
    config_generation: u8,
    queue_select: u16,
    isr: u8,
    msi_out: Vec<MsiMessage>,
    /// The VIRTIO_PCI_CAP_PCI_CFG capability's offset in config space.
    pci_cfg_cap: usize,
    error: Option<TransportError>,
}

impl<D: VirtioDevice> fmt::Debug for VirtioPci<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VirtioPci")
            .field("device_type", &self.device.device_type())
            .field("status", &self.status)
            .field("isr", &self.isr)
            .field("error", &self.error)
            .finish()
    }
}

/// `virtio_pci_cap` after the ID and next bytes: cap_len, cfg_type, bar,
/// id, padding, offset, length.
fn virtio_cap_body(cap_len: u8, cfg_type: u8, offset: u64, length: u64) -> [u8; 14] {
    let mut b = [0u8; 14];
    b[0] = cap_len;
    b[1] = cfg_type;
    b[2] = BAR_INDEX as u8;
    b[6..10].copy_from_slice(&(offset as u32).to_le_bytes());
    b[10..14].copy_from_slice(&(length as u32).to_le_bytes());
    b
}

impl<D: VirtioDevice> VirtioPci<D> {
    /// Wraps `device`: its configuration space, capabilities and BAR 0 as
    /// described in the module documentation, every vector unassigned.
    /// Fails only for a device with more than [`MAX_QUEUES`] queues.
    pub fn new(device: D) -> Result<Self, ConfigError> {
        let device_type = device.device_type();
        let num_queues = device.queue_sizes().len();
        if num_queues > MAX_QUEUES {
            return Err(ConfigError::NoCapabilitySpace { len: num_queues });
        }
        let ids = PciIds {
            vendor_id: VIRTIO_PCI_VENDOR_ID,
            device_id: VIRTIO_PCI_DEVICE_ID_BASE.wrapping_add(device_type as u16),
            revision_id: VIRTIO_PCI_REVISION,
            class_code: class_code(device_type),
            subsystem_vendor_id: VIRTIO_PCI_VENDOR_ID,
            subsystem_id: VIRTIO_PCI_SUBSYSTEM_ID,
        };
        let mut config = ConfigSpace::new(ids, 1);
        config.add_bar(BAR_INDEX, BarSpec { kind: BarKind::Memory64 { prefetchable: false }, size: BAR_SIZE })?;
        let notify_len = num_queues.max(1) as u64 * u64::from(NOTIFY_OFF_MULTIPLIER);
        let caps: [(u8, u64, u64); 3] = [
            (VIRTIO_PCI_CAP_COMMON_CFG, COMMON_CFG_OFFSET, REGION_SIZE),
            (VIRTIO_PCI_CAP_ISR_CFG, ISR_OFFSET, REGION_SIZE),
            (VIRTIO_PCI_CAP_DEVICE_CFG, DEVICE_CFG_OFFSET, REGION_SIZE),
        ];
        for (cfg_type, offset, length) in caps {
            config.add_capability(PCI_CAP_ID_VNDR, &virtio_cap_body(16, cfg_type, offset, length), &[])?;
        }
        // struct virtio_pci_notify_cap: the cap and notify_off_multiplier.
        let mut notify = [0u8; 18];
        notify[..14].copy_from_slice(&virtio_cap_body(20, VIRTIO_PCI_CAP_NOTIFY_CFG, NOTIFY_OFFSET, notify_len));
        notify[14..].copy_from_slice(&NOTIFY_OFF_MULTIPLIER.to_le_bytes());
        config.add_capability(PCI_CAP_ID_VNDR, &notify, &[])?;
        // struct virtio_pci_cfg_cap: bar, offset, length and pci_cfg_data
        // are the driver's to write (§4.1.4.9).
        let mut cfg_cap = [0u8; 18];
        cfg_cap[..14].copy_from_slice(&virtio_cap_body(20, VIRTIO_PCI_CAP_PCI_CFG, 0, 0));
        let mut writable = [0u8; 18];
        writable[CAP_BAR - 2] = 0xFF;
        writable[CAP_OFFSET - 2..CAP_PCI_CFG_DATA + 4 - 2].fill(0xFF);
        let pci_cfg_cap = config.add_capability(PCI_CAP_ID_VNDR, &cfg_cap, &writable)?;
        let vectors = (num_queues + 1) as u16;
        let msix = Msix::new(
            &mut config,
            vectors,
            BAR_INDEX as u8,
            MSIX_TABLE_OFFSET as u32,
            BAR_INDEX as u8,
            MSIX_PBA_OFFSET as u32,
        )?;
        let queues = device.queue_sizes().iter().map(|&max| Queue::new(max)).collect();
        Ok(Self {
            device,
            config,
            msix,
            queues,
            queue_vectors: alloc::vec![VIRTIO_MSI_NO_VECTOR; num_queues],
            config_vector: VIRTIO_MSI_NO_VECTOR,
            device_feature_select: 0,
            driver_feature_select: 0,
            driver_features: 0,
            status: 0,
            config_generation: 0,
            queue_select: 0,
            isr: 0,
            msi_out: Vec::new(),
            pci_cfg_cap,
            error: None,
        })
    }

    pub fn device(&self) -> &D {
        &self.device
    }

    /// The device model, for the VMM to push work into (console input,
    /// say); follow with [`VirtioPci::kick`] so the transport runs it.
    pub fn device_mut(&mut self) -> &mut D {
        &mut self.device
    }

    /// The device status register (§2.1).
    pub fn status(&self) -> u8 {
        self.status
    }

    pub fn queues(&self) -> &[Queue] {
        &self.queues
    }

    pub fn isr(&self) -> u8 {
        self.isr
    }

    pub fn msix(&self) -> &Msix {
        &self.msix
    }

    /// Why the device set DEVICE_NEEDS_RESET, until the driver resets it.
    pub fn error(&self) -> Option<TransportError> {
        self.error
    }

    /// Whether the driver finished initialisation and the device works.
    pub fn is_live(&self) -> bool {
        self.status & VIRTIO_STATUS_DRIVER_OK != 0 && self.status & VIRTIO_STATUS_DEVICE_NEEDS_RESET == 0
    }

    /// Runs queue `index` as a driver notification would: the device
    /// handles what is available and, if it says so, the queue's interrupt
    /// is raised (collect it with `take_msi` / `intx_asserted`). Does
    /// nothing unless the device is live and the queue enabled. The VMM
    /// calls it after giving the device new work of its own (console
    /// input).
    pub fn kick(&mut self, index: usize, mem: &mut dyn GuestMemory) {
        if !self.is_live() || !self.queues.get(index).is_some_and(|q| q.ready) {
            return;
        }
        self.queues[index].start_pass();
        match self.device.process_queue(index, &mut self.queues, mem) {
            Ok(true) => self.queue_interrupt(index),
            Ok(false) => {}
            Err(error) => self.fail(TransportError::Queue { index, error }),
        }
    }

    /// Completes what the device carried out away from the transport
    /// ([`VirtioDevice::complete_queue`]: virtio-blk's requests, executed by
    /// `block::Disk::execute` with the VMM's device lock released) and
    /// raises the interrupts the driver asks for. Nothing reaches the rings
    /// unless the device is live (a reset drops what was in flight).
    /// Returns whether it raised an interrupt or the device failed.
    pub fn complete(&mut self, mem: &mut dyn GuestMemory) -> bool {
        let mut raised = false;
        for index in 0..self.queues.len() {
            if !self.is_live() || !self.queues[index].ready {
                continue;
            }
            match self.device.complete_queue(index, &mut self.queues, mem) {
                Ok(true) => {
                    self.queue_interrupt(index);
                    raised = true;
                }
                Ok(false) => {}
                Err(error) => {
                    self.fail(TransportError::Queue { index, error });
                    raised = true;
                }
            }
        }
        raised
    }

    /// Whether a queue's last pass stopped before taking everything
    /// available (see [`Self::run_deferred`]).
    pub fn has_deferred(&self) -> bool {
        self.queues.iter().any(Queue::deferred)
    }

    /// Runs another pass over every queue whose last pass stopped at its
    /// bound (see `Queue::start_pass`); the VMM calls it from its timer,
    /// outside any one vCPU's exit. Returns whether any queue had work.
    pub fn run_deferred(&mut self, mem: &mut dyn GuestMemory) -> bool {
        let waiting: Vec<usize> = (0..self.queues.len()).filter(|&i| self.queues[i].deferred()).collect();
        for &i in &waiting {
            self.kick(i, mem);
        }
        !waiting.is_empty()
    }

    /// The device's configuration changed (§4.1.5.4): a new generation, and
    /// a configuration interrupt once the driver is running.
    pub fn config_changed(&mut self) {
        self.config_generation = self.config_generation.wrapping_add(1);
        if self.status & VIRTIO_STATUS_DRIVER_OK != 0 {
            self.config_interrupt();
        }
    }

    /// Device reset (§2.4, a 0 written to device_status): the device forgets
    /// features and requests, queues and vectors return to their reset
    /// state. The PCI side (BARs, MSI-X table) is untouched.
    pub fn reset(&mut self) {
        self.device.reset();
        for q in &mut self.queues {
            q.reset();
        }
        self.queue_vectors.fill(VIRTIO_MSI_NO_VECTOR);
        self.config_vector = VIRTIO_MSI_NO_VECTOR;
        self.device_feature_select = 0;
        self.driver_feature_select = 0;
        self.driver_features = 0;
        self.status = 0;
        self.queue_select = 0;
        self.isr = 0;
        self.error = None;
        self.sync_intx();
    }

    /// Sets DEVICE_NEEDS_RESET (§2.1.2) and, if the driver is running,
    /// sends a configuration-change interrupt. The first error is kept.
    fn fail(&mut self, error: TransportError) {
        if self.status & VIRTIO_STATUS_DEVICE_NEEDS_RESET != 0 {
            return;
        }
        self.error = Some(error);
        self.status |= VIRTIO_STATUS_DEVICE_NEEDS_RESET;
        if self.status & VIRTIO_STATUS_DRIVER_OK != 0 {
            self.config_interrupt();
        }
    }

    /// §4.1.5.3: the queue's MSI-X vector, or ISR bit 0 and INTx.
    fn queue_interrupt(&mut self, index: usize) {
        let vector = self.queue_vectors.get(index).copied().unwrap_or(VIRTIO_MSI_NO_VECTOR);
        if !self.msix.enabled(&self.config) {
            self.isr |= VIRTIO_PCI_ISR_QUEUE;
        } else if vector != VIRTIO_MSI_NO_VECTOR {
            self.msix.notify(vector, &self.config, &mut self.msi_out);
        }
        self.sync_intx();
    }

    /// §4.1.5.4: ISR bit 1, and the configuration vector or INTx.
    fn config_interrupt(&mut self) {
        self.isr |= VIRTIO_PCI_ISR_CONFIG;
        if self.msix.enabled(&self.config) && self.config_vector != VIRTIO_MSI_NO_VECTOR {
            self.msix.notify(self.config_vector, &self.config, &mut self.msi_out);
        }
        self.sync_intx();
    }

    /// INTx is asserted while the ISR is non-zero and MSI-X is off; the
    /// status register shows it (PCI 3.0 §6.2.3).
    fn sync_intx(&mut self) {
        let asserted = self.intx_level();
        self.config.set_interrupt_status(asserted);
    }

    fn intx_level(&self) -> bool {
        self.isr != 0 && !self.msix.enabled(&self.config)
    }

    /// A vector the driver may assign: inside the table, or NO_VECTOR
    /// (§4.1.5.1.2.1: the device answers NO_VECTOR when it cannot map one).
    fn checked_vector(&self, v: u16) -> u16 {
        if v < self.msix.vectors() { v } else { VIRTIO_MSI_NO_VECTOR }
    }

    fn selected_queue(&self) -> Option<&Queue> {
        self.queues.get(usize::from(self.queue_select))
    }

    /// The value of the common-configuration field at `offset`.
    fn common_field(&self, offset: u64) -> u64 {
        let q = self.selected_queue();
        let qv = |f: fn(&Queue) -> u64| q.map_or(0, f);
        match offset {
            COMMON_DEVICE_FEATURE_SELECT => u64::from(self.device_feature_select),
            COMMON_DEVICE_FEATURE => match self.device_feature_select {
                0 => self.device.features() & 0xFFFF_FFFF,
                1 => self.device.features() >> 32,
                _ => 0,
            },
            COMMON_DRIVER_FEATURE_SELECT => u64::from(self.driver_feature_select),
            COMMON_DRIVER_FEATURE => match self.driver_feature_select {
                0 => self.driver_features & 0xFFFF_FFFF,
                1 => self.driver_features >> 32,
                _ => 0,
            },
            COMMON_CONFIG_MSIX_VECTOR => u64::from(self.config_vector),
            COMMON_NUM_QUEUES => self.queues.len() as u64,
            COMMON_DEVICE_STATUS => u64::from(self.status),
            COMMON_CONFIG_GENERATION => u64::from(self.config_generation),
            COMMON_QUEUE_SELECT => u64::from(self.queue_select),
            // §4.1.4.3: 0 for a queue that does not exist.
            COMMON_QUEUE_SIZE => qv(|q| u64::from(q.size)),
            COMMON_QUEUE_MSIX_VECTOR => self
                .queue_vectors
                .get(usize::from(self.queue_select))
                .map_or(u64::from(VIRTIO_MSI_NO_VECTOR), |&v| u64::from(v)),
            COMMON_QUEUE_ENABLE => qv(|q| u64::from(q.ready)),
            // Queue n is notified at n * multiplier.
            COMMON_QUEUE_NOTIFY_OFF => q.map_or(0, |_| u64::from(self.queue_select)),
            COMMON_QUEUE_DESC => qv(|q| q.desc_table),
            COMMON_QUEUE_DRIVER => qv(|q| q.avail_ring),
            COMMON_QUEUE_DEVICE => qv(|q| q.used_ring),
            // Without VIRTIO_F_NOTIF_CONFIG_DATA and VIRTIO_F_RING_RESET
            // (not offered) these read 0.
            _ => 0,
        }
    }

    fn common_read(&self, offset: u64, size: u8) -> u64 {
        let mut v = 0u64;
        for i in 0..u64::from(size) {
            let at = offset + i;
            let byte = COMMON_FIELDS
                .iter()
                .find(|&&(f, len)| (f..f + len).contains(&at))
                .map_or(0, |&(f, _)| (self.common_field(f) >> (8 * (at - f))) as u8);
            v |= u64::from(byte) << (8 * i);
        }
        v
    }

    /// A write of `size` bytes at `offset`: each field it touches takes the
    /// written bytes over its current value (so a 64-bit address may come
    /// as two dwords, §4.1.3.1).
    fn common_write(&mut self, offset: u64, size: u8, value: u64, mem: &mut dyn GuestMemory) {
        let end = offset + u64::from(size);
        for (f, len) in COMMON_FIELDS {
            if end <= f || offset >= f + len {
                continue;
            }
            let mut v = self.common_field(f);
            for at in offset.max(f)..end.min(f + len) {
                let byte = (value >> (8 * (at - offset))) & 0xFF;
                let shift = 8 * (at - f);
                v = (v & !(0xFF << shift)) | byte << shift;
            }
            self.set_common_field(f, v, mem);
        }
    }

    fn set_common_field(&mut self, offset: u64, v: u64, mem: &mut dyn GuestMemory) {
        let sel = usize::from(self.queue_select);
        // Queue fields take writes only while the queue is disabled
        // (§4.1.4.3.2: the driver configures it before enabling it).
        let configurable = self.queues.get(sel).is_some_and(|q| !q.ready);
        match offset {
            COMMON_DEVICE_FEATURE_SELECT => self.device_feature_select = v as u32,
            COMMON_DRIVER_FEATURE_SELECT => self.driver_feature_select = v as u32,
            COMMON_DRIVER_FEATURE if self.status & VIRTIO_STATUS_FEATURES_OK == 0 => match self.driver_feature_select {
                0 => self.driver_features = (self.driver_features & !0xFFFF_FFFF) | (v & 0xFFFF_FFFF),
                1 => self.driver_features = (self.driver_features & 0xFFFF_FFFF) | (v & 0xFFFF_FFFF) << 32,
                _ => {}
            },
            COMMON_CONFIG_MSIX_VECTOR => self.config_vector = self.checked_vector(v as u16),
            COMMON_DEVICE_STATUS => self.write_status(v as u8, mem),
            COMMON_QUEUE_SELECT => self.queue_select = v as u16,
            COMMON_QUEUE_MSIX_VECTOR if sel < self.queue_vectors.len() => {
                self.queue_vectors[sel] = self.checked_vector(v as u16);
            }
            COMMON_QUEUE_SIZE if configurable => self.queues[sel].size = v as u16,
            COMMON_QUEUE_DESC if configurable => self.queues[sel].desc_table = v,
            COMMON_QUEUE_DRIVER if configurable => self.queues[sel].avail_ring = v,
            COMMON_QUEUE_DEVICE if configurable => self.queues[sel].used_ring = v,
            // §4.1.4.3.2: the driver must not write 0 to queue_enable.
            COMMON_QUEUE_ENABLE if configurable && v == 1 => self.enable_queue(sel, mem),
            // Read-only fields and writes to a queue that does not exist or
            // is enabled.
            _ => {}
        }
    }

    fn enable_queue(&mut self, index: usize, mem: &mut dyn GuestMemory) {
        let acked = self.device.acked_features();
        let live = self.is_live();
        let Some(q) = self.queues.get_mut(index) else {
            return;
        };
        q.ready = true;
        if live {
            // Enabled after DRIVER_OK: check it now, as DRIVER_OK would have.
            q.set_features(acked);
            if let Err(error) = q.validate(mem) {
                self.fail(TransportError::Activate(ActivateError::Queue { index, error }));
            }
        }
    }

    /// A write to device_status (§2.1, §3.1.1, §4.1.4.3.2).
    fn write_status(&mut self, v: u8, mem: &mut dyn GuestMemory) {
        if v == 0 {
            self.reset();
            return;
        }
        let old = self.status;
        // The driver sets bits one at a time and never clears them
        // (§2.1.1); DEVICE_NEEDS_RESET is the device's.
        let mut new = (v | old) & !VIRTIO_STATUS_DEVICE_NEEDS_RESET | (old & VIRTIO_STATUS_DEVICE_NEEDS_RESET);
        if new & VIRTIO_STATUS_FEATURES_OK != 0 && old & VIRTIO_STATUS_FEATURES_OK == 0 {
            // §2.2.2: refuse features not offered; §6.1: a modern device
            // refuses a driver without VIRTIO_F_VERSION_1. The driver reads
            // FEATURES_OK back and sees it clear (§3.1.1 step 6).
            let offered = self.device.features();
            if self.driver_features & !offered != 0 || self.driver_features & feature(VIRTIO_F_VERSION_1) == 0 {
                new &= !VIRTIO_STATUS_FEATURES_OK;
            } else {
                self.device.ack_features(self.driver_features);
            }
        }
        self.status = new;
        if new & VIRTIO_STATUS_DRIVER_OK != 0 && old & VIRTIO_STATUS_DRIVER_OK == 0 {
            if new & VIRTIO_STATUS_FEATURES_OK == 0 {
                self.fail(TransportError::DriverOkWithoutFeaturesOk);
                return;
            }
            let acked = self.device.acked_features();
            let result =
                prepare_queues(&mut self.queues, acked, &*mem).and_then(|()| self.device.activate(&self.queues));
            if let Err(e) = result {
                self.fail(TransportError::Activate(e));
            }
        }
    }

    /// BAR 0 reads.
    fn read_bar(&mut self, offset: u64, size: u8) -> u64 {
        let region = offset & !(REGION_SIZE - 1);
        let off = offset - region;
        match region {
            COMMON_CFG_OFFSET => self.common_read(off, size),
            ISR_OFFSET if off == 0 => {
                // §4.1.4.5: reading the ISR clears it and deasserts INTx.
                let v = self.isr;
                self.isr = 0;
                self.sync_intx();
                u64::from(v)
            }
            DEVICE_CFG_OFFSET => {
                let mut b = [0u8; 8];
                let n = usize::from(size).min(8);
                self.device.read_config(off, &mut b[..n]);
                u64::from_le_bytes(b)
            }
            MSIX_TABLE_OFFSET => self.msix.read_table(off, size),
            MSIX_PBA_OFFSET => self.msix.read_pba(off, size),
            _ => 0,
        }
    }

    /// BAR 0 writes.
    fn write_bar(&mut self, offset: u64, size: u8, value: u64, mem: &mut dyn GuestMemory) {
        let region = offset & !(REGION_SIZE - 1);
        let off = offset - region;
        match region {
            COMMON_CFG_OFFSET => self.common_write(off, size, value, mem),
            DEVICE_CFG_OFFSET => {
                let n = usize::from(size).min(8);
                self.device.write_config(off, &value.to_le_bytes()[..n]);
            }
            NOTIFY_OFFSET => {
                // The queue is the address's (§4.1.4.4); the value (the
                // queue index, without VIRTIO_F_NOTIFICATION_DATA) is not
                // needed.
                let index = (off / u64::from(NOTIFY_OFF_MULTIPLIER)) as usize;
                self.kick(index, mem);
            }
            MSIX_TABLE_OFFSET => self.msix.write_table(off, size, value, &self.config, &mut self.msi_out),
            // The ISR and the PBA are read-only.
            _ => {}
        }
        self.sync_intx();
    }

    /// The VIRTIO_PCI_CAP_PCI_CFG window's target (§4.1.4.9): offset and
    /// length in BAR 0, if the driver set up a valid access (BAR 0, length
    /// 1, 2 or 4, aligned, inside the BAR).
    fn pci_cfg_target(&self) -> Option<(u64, u8)> {
        let cap = self.pci_cfg_cap;
        let bar = self.config.get_u8(cap + CAP_BAR);
        let offset = u64::from(self.config.get_u32(cap + CAP_OFFSET));
        let length = self.config.get_u32(cap + CAP_LENGTH);
        let ok = usize::from(bar) == BAR_INDEX
            && matches!(length, 1 | 2 | 4)
            && offset % u64::from(length) == 0
            && offset + u64::from(length) <= BAR_SIZE;
        ok.then_some((offset, length as u8))
    }

    /// Whether a config access at `offset` of `size` bytes touches
    /// pci_cfg_data.
    fn touches_pci_cfg_data(&self, offset: u16, size: u8) -> bool {
        let data = self.pci_cfg_cap + CAP_PCI_CFG_DATA;
        let (start, end) = (usize::from(offset), usize::from(offset) + usize::from(size));
        start < data + 4 && end > data
    }
}

impl<D: VirtioDevice + Send + 'static> PciDevice for VirtioPci<D> {
    fn config(&self) -> &ConfigSpace {
        &self.config
    }

    /// Completions first (a request carried out by a thread that has not
    /// completed it yet), then the deferred passes.
    fn poll(&mut self, mem: &mut dyn GuestMemory) -> bool {
        let completed = self.complete(mem);
        self.run_deferred(mem) | completed
    }

    fn config_mut(&mut self) -> &mut ConfigSpace {
        &mut self.config
    }

    /// A read of pci_cfg_data reads the BAR through the window first.
    fn config_read(&mut self, offset: u16, size: u8) -> u32 {
        if self.touches_pci_cfg_data(offset, size)
            && let Some((bar_offset, length)) = self.pci_cfg_target()
        {
            let v = self.read_bar(bar_offset, length) as u32;
            self.config.set_u32(self.pci_cfg_cap + CAP_PCI_CFG_DATA, v);
        }
        self.config.read(offset, size)
    }

    /// Writes go through the masks; then MSI-X may have been unmasked, and
    /// a write to pci_cfg_data is carried out on the BAR.
    fn config_write(&mut self, offset: u16, size: u8, value: u32, mem: &mut dyn GuestMemory) {
        self.config.write(offset, size, value);
        if self.touches_pci_cfg_data(offset, size)
            && let Some((bar_offset, length)) = self.pci_cfg_target()
        {
            let v = self.config.get_u32(self.pci_cfg_cap + CAP_PCI_CFG_DATA);
            let mask = crate::devices::all_ones(length);
            self.write_bar(bar_offset, length, u64::from(v & mask), mem);
        }
        self.msix.config_written(&self.config, &mut self.msi_out);
        self.sync_intx();
    }

    fn bar_read(&mut self, bar: usize, offset: u64, size: u8) -> u64 {
        if bar != BAR_INDEX {
            return 0;
        }
        self.read_bar(offset, size)
    }

    fn bar_write(&mut self, bar: usize, offset: u64, size: u8, value: u64, mem: &mut dyn GuestMemory) {
        if bar == BAR_INDEX {
            self.write_bar(offset, size, value, mem);
        }
    }

    fn take_msi(&mut self, out: &mut Vec<MsiMessage>) {
        out.append(&mut self.msi_out);
    }

    fn intx_asserted(&self) -> bool {
        self.intx_level()
    }
}

// The common configuration fits its region.
const _: () = assert!(COMMON_CFG_LEN as u64 <= REGION_SIZE);

#[cfg(test)]
mod tests;
