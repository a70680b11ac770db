//! Virtio 1.x devices, device side (virtio 1.2), for the guests' own virtio
//! drivers (Linux's virtio-pci).
//!
//! In Firecracker's shape: a [`VirtioDevice`] is the device model alone (its
//! type, features, configuration space and what it does with its queues);
//! a transport (virtio-pci, §4.1) owns the device status, the feature
//! negotiation registers and the [`Queue`]s, and calls into the device. The
//! split virtqueue, where all guest-supplied ring data is checked, is
//! [`queue`]; each device is its own module ([`block`], [`rng`]).
//!
//! The flow on a guest's notification: the transport calls
//! [`VirtioDevice::process_queue`], which pops chains, carries them out and
//! returns them; if it answers `true` the transport raises the queue's
//! interrupt. If it answers an error, the guest broke the ring protocol: the
//! transport sets DEVICE_NEEDS_RESET and sends a configuration-change
//! interrupt (§2.1.2), and the device does nothing more until reset.
//!
//! A device whose work waits on another process (virtio-blk on storaged)
//! splits it in three, so that no lock the VMM's devices share is held
//! across that wait (issue 10, finding 17): `process_queue` only *queues*
//! the requests (pops and checks them, under the caller's device lock),
//! the VMM *executes* them with that lock released
//! ([`block::Disk::execute`]), and [`VirtioDevice::complete_queue`], under
//! the lock again, *completes* them (status, used ring, interrupt).

pub mod block;
pub mod console;
pub mod net;
pub mod pci;
pub mod queue;
pub mod rng;

#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
#[cfg(any(test, feature = "fuzzing"))]
pub mod mock;

use core::fmt;

pub use queue::{Descriptor, DescriptorChain, GuestMemory, MemError, Queue, QueueError, VecMemory};

// Device IDs (§5).
pub const VIRTIO_ID_NET: u32 = 1;
pub const VIRTIO_ID_BLOCK: u32 = 2;
pub const VIRTIO_ID_CONSOLE: u32 = 3;
pub const VIRTIO_ID_ENTROPY: u32 = 4;

// Device status bits (§2.1).
pub const VIRTIO_STATUS_ACKNOWLEDGE: u8 = 1;
pub const VIRTIO_STATUS_DRIVER: u8 = 2;
pub const VIRTIO_STATUS_DRIVER_OK: u8 = 4;
pub const VIRTIO_STATUS_FEATURES_OK: u8 = 8;
pub const VIRTIO_STATUS_DEVICE_NEEDS_RESET: u8 = 64;
pub const VIRTIO_STATUS_FAILED: u8 = 128;

// Reserved (device-independent) feature bit numbers (§6). Linux calls the
// first two VIRTIO_RING_F_INDIRECT_DESC and VIRTIO_RING_F_EVENT_IDX.
pub const VIRTIO_F_INDIRECT_DESC: u32 = 28;
pub const VIRTIO_F_EVENT_IDX: u32 = 29;
pub const VIRTIO_F_VERSION_1: u32 = 32;
pub const VIRTIO_F_ACCESS_PLATFORM: u32 = 33;
pub const VIRTIO_F_RING_PACKED: u32 = 34;
pub const VIRTIO_F_IN_ORDER: u32 = 35;
pub const VIRTIO_F_ORDER_PLATFORM: u32 = 36;
pub const VIRTIO_F_SR_IOV: u32 = 37;
pub const VIRTIO_F_NOTIFICATION_DATA: u32 = 38;
pub const VIRTIO_F_NOTIF_CONFIG_DATA: u32 = 39;
pub const VIRTIO_F_RING_RESET: u32 = 40;

/// The mask of feature bit `bit`.
pub const fn feature(bit: u32) -> u64 {
    1 << bit
}

/// What every device here offers of the reserved features: a modern
/// (non-legacy) device, §6 and §7, with the split ring's indirect tables and
/// event-index notification suppression.
pub const COMMON_FEATURES: u64 =
    feature(VIRTIO_F_VERSION_1) | feature(VIRTIO_F_INDIRECT_DESC) | feature(VIRTIO_F_EVENT_IDX);

/// Why the transport could not take a device to DRIVER_OK.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ActivateError {
    /// The driver did not accept VIRTIO_F_VERSION_1, so it is a legacy
    /// driver, which this device model does not serve (§6.1).
    LegacyDriver,
    /// Queue `index` is misconfigured.
    Queue { index: usize, error: QueueError },
    /// The device itself refused (a backend it could not reach, say).
    Device(&'static str),
}

impl fmt::Display for ActivateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ActivateError::LegacyDriver => write!(f, "virtio: driver did not accept VIRTIO_F_VERSION_1"),
            ActivateError::Queue { index, error } => write!(f, "virtio: queue {index}: {error}"),
            ActivateError::Device(why) => write!(f, "virtio: device refused to activate: {why}"),
        }
    }
}

/// A virtio device model, apart from its transport.
pub trait VirtioDevice {
    /// The device ID (§5): [`VIRTIO_ID_BLOCK`], [`VIRTIO_ID_ENTROPY`], ...
    fn device_type(&self) -> u32;
    /// The feature bits the device offers (§2.2).
    fn features(&self) -> u64;
    /// The features the driver accepted; the transport passes only offered
    /// bits. Called when the driver sets FEATURES_OK (§3.1.1).
    fn ack_features(&mut self, features: u64);
    /// The features accepted so far.
    fn acked_features(&self) -> u64;
    /// The maximum size of each of the device's queues; the transport makes
    /// one [`Queue`] per entry.
    fn queue_sizes(&self) -> &[u16];
    /// Reads the device configuration space (§2.5). Bytes past the end of
    /// the device's layout read as zero.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Writes the device configuration space; read-only fields ignore it.
    fn write_config(&mut self, offset: u64, data: &[u8]);
    /// The driver set DRIVER_OK; `queues` are validated (see
    /// [`prepare_queues`]).
    fn activate(&mut self, _queues: &[Queue]) -> Result<(), ActivateError> {
        Ok(())
    }
    /// The driver notified queue `index`: handle what it made available.
    /// Answers whether to interrupt the driver, or an error if the guest
    /// broke the ring protocol (then set DEVICE_NEEDS_RESET, §2.1.2).
    fn process_queue(
        &mut self,
        index: usize,
        queues: &mut [Queue],
        mem: &mut dyn GuestMemory,
    ) -> Result<bool, QueueError>;
    /// Hands back to queue `index` the requests the device carried out
    /// since `process_queue` queued them (see the module documentation);
    /// answers as `process_queue` does. Devices that finish everything in
    /// `process_queue` have nothing to complete.
    fn complete_queue(
        &mut self,
        _index: usize,
        _queues: &mut [Queue],
        _mem: &mut dyn GuestMemory,
    ) -> Result<bool, QueueError> {
        Ok(false)
    }
    /// Device reset (§2.4): forget negotiated features and any request
    /// state (a request still being carried out must not reach the rings
    /// the driver sets up next). The transport resets the queues.
    fn reset(&mut self);
}

/// The device-independent half of DRIVER_OK: check that the driver is a
/// modern one, hand the ring features to every queue and validate the
/// queues the driver enabled (§3.1.1 steps 7-8).
pub fn prepare_queues(queues: &mut [Queue], acked: u64, mem: &dyn GuestMemory) -> Result<(), ActivateError> {
    if acked & feature(VIRTIO_F_VERSION_1) == 0 {
        return Err(ActivateError::LegacyDriver);
    }
    for (index, q) in queues.iter_mut().enumerate() {
        q.set_features(acked);
        if q.ready {
            q.validate(mem).map_err(|error| ActivateError::Queue { index, error })?;
        }
    }
    Ok(())
}

/// Reads `data.len()` bytes at `offset` of a configuration space laid out in
/// `space`; whatever lies past its end reads as zero.
pub fn read_config_space(space: &[u8], offset: u64, data: &mut [u8]) {
    data.fill(0);
    let Ok(start) = usize::try_from(offset) else { return };
    if start >= space.len() {
        return;
    }
    let n = data.len().min(space.len() - start);
    data[..n].copy_from_slice(&space[start..start + n]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_space_reads_zero_past_the_end() {
        let space = [1u8, 2, 3, 4];
        let mut b = [0xffu8; 3];
        read_config_space(&space, 2, &mut b);
        assert_eq!(b, [3, 4, 0]);
        read_config_space(&space, 9, &mut b);
        assert_eq!(b, [0, 0, 0]);
        read_config_space(&space, u64::MAX, &mut b);
        assert_eq!(b, [0, 0, 0]);
    }

    #[test]
    fn prepare_queues_refuses_legacy_drivers_and_bad_queues() {
        let mem = VecMemory::new(0, 0x10000);
        let mut qs = [Queue::new(8), Queue::new(8)];
        assert_eq!(prepare_queues(&mut qs, 0, &mem), Err(ActivateError::LegacyDriver));

        qs[0].ready = true;
        qs[0].desc_table = 0x1000;
        qs[0].avail_ring = 0x2000;
        qs[0].used_ring = 0x3000;
        // Queue 1 is not enabled, so its zero addresses do not matter.
        prepare_queues(&mut qs, COMMON_FEATURES, &mem).unwrap();
        assert!(qs[0].event_idx_enabled && qs[0].indirect_enabled);
        assert!(qs[1].event_idx_enabled);

        qs[1].ready = true;
        qs[1].desc_table = 0x1008;
        assert!(matches!(
            prepare_queues(&mut qs, COMMON_FEATURES, &mem),
            Err(ActivateError::Queue { index: 1, error: QueueError::Misaligned { .. } })
        ));
    }
}
