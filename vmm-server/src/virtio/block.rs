//! virtio-blk (device ID 2, virtio 1.2 §5.2): a guest's disk.
//!
//! One queue, `requestq`. Each request is a chain holding, as byte streams
//! (framing is the driver's choice, §2.7.4): a 16-byte header
//! (le32 type, le32 reserved, le64 sector) in the device-readable part, the
//! data (device-readable for writes, device-writable for reads and GET_ID),
//! and a status byte, the last device-writable byte (§5.2.6). Requests are
//! carried out against a [`BlockBackend`]; on Alcove that is a shared-memory
//! ring to storaged, here a small trait with [`MemBackend`] for tests.
//!
//! A request that is malformed at the block level (too short, data in the
//! wrong direction, not a whole number of sectors, past the end of the
//! disk) or that the backend fails gets VIRTIO_BLK_S_IOERR, an unknown type
//! VIRTIO_BLK_S_UNSUPP; only a broken ring (a [`QueueError`]) stops the
//! device.

use alloc::vec::Vec;

use super::queue::{DescriptorChain, Queue};
use super::{COMMON_FEATURES, GuestMemory, QueueError, VIRTIO_ID_BLOCK, VirtioDevice, feature, read_config_space};

// Feature bits (§5.2.3).
pub const VIRTIO_BLK_F_SIZE_MAX: u32 = 1;
pub const VIRTIO_BLK_F_SEG_MAX: u32 = 2;
pub const VIRTIO_BLK_F_GEOMETRY: u32 = 4;
pub const VIRTIO_BLK_F_RO: u32 = 5;
pub const VIRTIO_BLK_F_BLK_SIZE: u32 = 6;
pub const VIRTIO_BLK_F_FLUSH: u32 = 9;
pub const VIRTIO_BLK_F_TOPOLOGY: u32 = 10;
pub const VIRTIO_BLK_F_CONFIG_WCE: u32 = 11;
pub const VIRTIO_BLK_F_MQ: u32 = 12;
pub const VIRTIO_BLK_F_DISCARD: u32 = 13;
pub const VIRTIO_BLK_F_WRITE_ZEROES: u32 = 14;

// Request types (§5.2.6).
pub const VIRTIO_BLK_T_IN: u32 = 0;
pub const VIRTIO_BLK_T_OUT: u32 = 1;
pub const VIRTIO_BLK_T_FLUSH: u32 = 4;
pub const VIRTIO_BLK_T_GET_ID: u32 = 8;
pub const VIRTIO_BLK_T_DISCARD: u32 = 11;
pub const VIRTIO_BLK_T_WRITE_ZEROES: u32 = 13;

// Status values (§5.2.6).
pub const VIRTIO_BLK_S_OK: u8 = 0;
pub const VIRTIO_BLK_S_IOERR: u8 = 1;
pub const VIRTIO_BLK_S_UNSUPP: u8 = 2;

/// `sector` counts 512-byte units whatever the block size (§5.2.6).
pub const SECTOR_SIZE: u64 = 512;
/// The request header: le32 type, le32 reserved, le64 sector.
pub const REQUEST_HEADER_SIZE: u32 = 16;
/// The GET_ID string: up to 20 bytes, NUL-padded (§5.2.6).
pub const ID_BYTES: usize = 20;
/// The requestq's maximum size.
pub const QUEUE_SIZE: u16 = 256;
/// Data moves between guest RAM and the backend in pieces of this size.
const CHUNK_BYTES: usize = 64 * 1024;

// Configuration layout offsets (§5.2.4).
const CONFIG_CAPACITY: usize = 0;
const CONFIG_SEG_MAX: usize = 12;
const CONFIG_BLK_SIZE: usize = 20;
/// Up to and including `num_queues`; later fields belong to features not
/// offered and read as zero.
const CONFIG_LEN: usize = 36;

/// A backend could not carry out an operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendError {
    /// Outside the disk (the device checks first, so a backend bug).
    OutOfRange,
    /// The medium or storaged failed.
    Io,
}

/// What the device reads and writes. Buffers are whole sectors; the device
/// has checked that they lie inside `capacity_sectors()`.
pub trait BlockBackend {
    fn read(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), BackendError>;
    fn write(&mut self, sector: u64, data: &[u8]) -> Result<(), BackendError>;
    /// Makes completed writes durable.
    fn flush(&mut self) -> Result<(), BackendError>;
    /// The disk size in 512-byte sectors.
    fn capacity_sectors(&self) -> u64;
    /// The serial the guest reads with GET_ID (NUL-padded).
    fn id(&self) -> [u8; ID_BYTES];
    /// Offer VIRTIO_BLK_F_RO and refuse writes.
    fn read_only(&self) -> bool {
        false
    }
}

/// A disk in a `Vec`, for tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemBackend {
    pub data: Vec<u8>,
    pub id: [u8; ID_BYTES],
    pub read_only: bool,
    /// How many flushes it has seen.
    pub flushes: u32,
}

impl MemBackend {
    /// A zeroed disk of `sectors` sectors.
    pub fn new(sectors: usize, id: &[u8]) -> Self {
        let mut serial = [0u8; ID_BYTES];
        let n = id.len().min(ID_BYTES);
        serial[..n].copy_from_slice(&id[..n]);
        Self { data: alloc::vec![0; sectors * SECTOR_SIZE as usize], id: serial, read_only: false, flushes: 0 }
    }

    fn range(&self, sector: u64, len: usize) -> Result<core::ops::Range<usize>, BackendError> {
        let start = usize::try_from(sector.checked_mul(SECTOR_SIZE).ok_or(BackendError::OutOfRange)?)
            .map_err(|_| BackendError::OutOfRange)?;
        let end = start.checked_add(len).ok_or(BackendError::OutOfRange)?;
        if end > self.data.len() { Err(BackendError::OutOfRange) } else { Ok(start..end) }
    }
}

impl BlockBackend for MemBackend {
    fn read(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), BackendError> {
        let r = self.range(sector, buf.len())?;
        buf.copy_from_slice(&self.data[r]);
        Ok(())
    }

    fn write(&mut self, sector: u64, data: &[u8]) -> Result<(), BackendError> {
        if self.read_only {
            return Err(BackendError::Io);
        }
        let r = self.range(sector, data.len())?;
        self.data[r].copy_from_slice(data);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), BackendError> {
        self.flushes += 1;
        Ok(())
    }

    fn capacity_sectors(&self) -> u64 {
        self.data.len() as u64 / SECTOR_SIZE
    }

    fn id(&self) -> [u8; ID_BYTES] {
        self.id
    }

    fn read_only(&self) -> bool {
        self.read_only
    }
}

/// The outcome of one request: its status and the data bytes written to
/// the guest before the status byte.
struct Completion {
    status: u8,
    data_written: u32,
}

impl Completion {
    const fn status(status: u8) -> Self {
        Self { status, data_written: 0 }
    }
}

/// The virtio-blk device.
pub struct Block<B: BlockBackend> {
    backend: B,
    acked_features: u64,
    queue_sizes: [u16; 1],
    /// Reused between requests: at most [`CHUNK_BYTES`].
    scratch: Vec<u8>,
}

impl<B: BlockBackend> Block<B> {
    pub fn new(backend: B) -> Self {
        Self { backend, acked_features: 0, queue_sizes: [QUEUE_SIZE], scratch: Vec::new() }
    }

    pub fn backend(&self) -> &B {
        &self.backend
    }

    pub fn backend_mut(&mut self) -> &mut B {
        &mut self.backend
    }

    fn config_space(&self) -> [u8; CONFIG_LEN] {
        let mut c = [0u8; CONFIG_LEN];
        c[CONFIG_CAPACITY..CONFIG_CAPACITY + 8].copy_from_slice(&self.backend.capacity_sectors().to_le_bytes());
        // As QEMU: the header and the status take two of a chain's
        // descriptors.
        let seg_max = u32::from(self.queue_sizes[0]).saturating_sub(2);
        c[CONFIG_SEG_MAX..CONFIG_SEG_MAX + 4].copy_from_slice(&seg_max.to_le_bytes());
        c[CONFIG_BLK_SIZE..CONFIG_BLK_SIZE + 4].copy_from_slice(&(SECTOR_SIZE as u32).to_le_bytes());
        c
    }

    /// Carries out one request. Only a guest-memory failure is an error;
    /// everything else the guest gets to see as a status.
    fn execute(&mut self, chain: &DescriptorChain, mem: &mut dyn GuestMemory) -> Result<Completion, QueueError> {
        // Bytes past the header in the readable part, and before the status
        // byte in the writable part.
        let (Some(readable_data), Some(writable_data)) =
            (chain.readable_len().checked_sub(REQUEST_HEADER_SIZE), chain.writable_len().checked_sub(1))
        else {
            return Ok(Completion::status(VIRTIO_BLK_S_IOERR));
        };
        let mut header = [0u8; REQUEST_HEADER_SIZE as usize];
        chain.read_at(mem, 0, &mut header)?;
        let request_type = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        let sector = u64::from_le_bytes([
            header[8], header[9], header[10], header[11], header[12], header[13], header[14], header[15],
        ]);
        Ok(match request_type {
            VIRTIO_BLK_T_IN if readable_data == 0 => self.read(chain, mem, sector, writable_data)?,
            VIRTIO_BLK_T_OUT if writable_data == 0 => self.write(chain, mem, sector, readable_data)?,
            VIRTIO_BLK_T_FLUSH if readable_data == 0 && writable_data == 0 => match self.backend.flush() {
                Ok(()) => Completion::status(VIRTIO_BLK_S_OK),
                Err(_) => Completion::status(VIRTIO_BLK_S_IOERR),
            },
            VIRTIO_BLK_T_GET_ID if readable_data == 0 => {
                let id = self.backend.id();
                let n = (writable_data as usize).min(ID_BYTES);
                let put = chain.write_at(mem, 0, &id[..n])?;
                Completion { status: VIRTIO_BLK_S_OK, data_written: put as u32 }
            }
            // A known type with data in the wrong direction.
            VIRTIO_BLK_T_IN | VIRTIO_BLK_T_OUT | VIRTIO_BLK_T_FLUSH | VIRTIO_BLK_T_GET_ID => {
                Completion::status(VIRTIO_BLK_S_IOERR)
            }
            _ => Completion::status(VIRTIO_BLK_S_UNSUPP),
        })
    }

    /// Whether `len` bytes from `sector` are whole sectors inside the disk
    /// (§5.2.6.1: the driver must not ask for more).
    fn in_disk(&self, sector: u64, len: u32) -> bool {
        let len = u64::from(len);
        len % SECTOR_SIZE == 0
            && sector.checked_add(len / SECTOR_SIZE).is_some_and(|end| end <= self.backend.capacity_sectors())
    }

    /// Makes the scratch buffer big enough for one chunk of `len` bytes.
    fn grow_scratch(&mut self, len: u32) {
        let want = (len as usize).min(CHUNK_BYTES);
        if self.scratch.len() < want {
            self.scratch.resize(want, 0);
        }
    }

    /// VIRTIO_BLK_T_IN: disk to the writable stream.
    fn read(
        &mut self,
        chain: &DescriptorChain,
        mem: &mut dyn GuestMemory,
        sector: u64,
        len: u32,
    ) -> Result<Completion, QueueError> {
        if !self.in_disk(sector, len) {
            return Ok(Completion::status(VIRTIO_BLK_S_IOERR));
        }
        self.grow_scratch(len);
        let mut done = 0u32;
        while done < len {
            let n = ((len - done) as usize).min(CHUNK_BYTES);
            let buf = &mut self.scratch[..n];
            if self.backend.read(sector + u64::from(done) / SECTOR_SIZE, buf).is_err() {
                return Ok(Completion { status: VIRTIO_BLK_S_IOERR, data_written: done });
            }
            chain.write_at(mem, u64::from(done), buf)?;
            done += n as u32;
        }
        Ok(Completion { status: VIRTIO_BLK_S_OK, data_written: len })
    }

    /// VIRTIO_BLK_T_OUT: the readable stream after the header to disk.
    fn write(
        &mut self,
        chain: &DescriptorChain,
        mem: &mut dyn GuestMemory,
        sector: u64,
        len: u32,
    ) -> Result<Completion, QueueError> {
        // §5.2.6.2: with VIRTIO_BLK_F_RO offered, IOERR and write nothing.
        if self.backend.read_only() || !self.in_disk(sector, len) {
            return Ok(Completion::status(VIRTIO_BLK_S_IOERR));
        }
        self.grow_scratch(len);
        let mut done = 0u32;
        while done < len {
            let n = ((len - done) as usize).min(CHUNK_BYTES);
            let buf = &mut self.scratch[..n];
            chain.read_at(mem, u64::from(REQUEST_HEADER_SIZE + done), buf)?;
            if self.backend.write(sector + u64::from(done) / SECTOR_SIZE, buf).is_err() {
                return Ok(Completion::status(VIRTIO_BLK_S_IOERR));
            }
            done += n as u32;
        }
        Ok(Completion::status(VIRTIO_BLK_S_OK))
    }
}

impl<B: BlockBackend> VirtioDevice for Block<B> {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_BLOCK
    }

    fn features(&self) -> u64 {
        let mut f = COMMON_FEATURES
            | feature(VIRTIO_BLK_F_SEG_MAX)
            | feature(VIRTIO_BLK_F_BLK_SIZE)
            | feature(VIRTIO_BLK_F_FLUSH);
        if self.backend.read_only() {
            f |= feature(VIRTIO_BLK_F_RO);
        }
        f
    }

    fn ack_features(&mut self, features: u64) {
        self.acked_features = features & self.features();
    }

    fn acked_features(&self) -> u64 {
        self.acked_features
    }

    fn queue_sizes(&self) -> &[u16] {
        &self.queue_sizes
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_space(&self.config_space(), offset, data);
    }

    /// Nothing is writable: `writeback` needs VIRTIO_BLK_F_CONFIG_WCE,
    /// which is not offered (§5.2.4).
    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}

    fn process_queue(
        &mut self,
        index: usize,
        queues: &mut [Queue],
        mem: &mut dyn GuestMemory,
    ) -> Result<bool, QueueError> {
        if index != 0 {
            return Ok(false);
        }
        let Some(queue) = queues.get_mut(0) else { return Ok(false) };
        while let Some(chain) = queue.pop(mem)? {
            let used_len = match chain.writable_len().checked_sub(1) {
                // Nowhere to put a status: hand the chain back untouched.
                None => 0,
                Some(status_at) => {
                    let done = self.execute(&chain, mem)?;
                    // The status is the last writable byte whatever the
                    // request wrote before it (§5.2.6).
                    chain.write_at(mem, u64::from(status_at), &[done.status])?;
                    done.data_written + 1
                }
            };
            queue.add_used(mem, chain.head_index(), used_len)?;
        }
        Ok(queue.needs_notification(mem))
    }

    fn reset(&mut self) {
        self.acked_features = 0;
    }
}

#[cfg(test)]
mod tests;
