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
//!
//! The backend is not called under the VMM's device lock: a notification
//! only queues the requests, the VMM carries them out with the lock
//! released ([`Disk::execute`]) and completes them under it again (see
//! [`Disk`]).

use alloc::collections::VecDeque;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

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
/// The smallest chunk [`Executor::grow_scratch`] falls back to (a page;
/// a whole number of sectors).
const MIN_SCRATCH_BYTES: usize = 4096;

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
    /// The reads it has served, as (sector, bytes).
    pub reads: Vec<(u64, usize)>,
}

impl MemBackend {
    /// A zeroed disk of `sectors` sectors.
    pub fn new(sectors: usize, id: &[u8]) -> Self {
        let mut serial = [0u8; ID_BYTES];
        let n = id.len().min(ID_BYTES);
        serial[..n].copy_from_slice(&id[..n]);
        Self { data: alloc::vec![0; sectors * SECTOR_SIZE as usize], id: serial, read_only: false, flushes: 0, reads: Vec::new() }
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
        self.reads.push((sector, buf.len()));
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
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Completion {
    status: u8,
    data_written: u32,
}

impl Completion {
    const fn status(status: u8) -> Self {
        Self { status, data_written: 0 }
    }
}

/// What a checked request asks of the backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    /// VIRTIO_BLK_T_IN: `len` bytes from `sector` into the writable stream.
    Read { sector: u64, len: u32 },
    /// VIRTIO_BLK_T_OUT: the `len` bytes of the readable stream after the
    /// header to `sector`.
    Write { sector: u64, len: u32 },
    /// VIRTIO_BLK_T_FLUSH.
    Flush,
}

/// What the queue step makes of a request with a status byte.
enum Checked {
    /// Carry it out on the backend.
    Queue(Op),
    /// Complete it now with this outcome (malformed, unsupported, GET_ID).
    Now(Completion),
}

/// A request waiting for the backend: its chain (checked by
/// [`Queue::pop`]), what it asks and the device generation it belongs to.
struct Request {
    generation: u64,
    chain: DescriptorChain,
    op: Op,
}

/// A request the backend carried out, waiting to be completed. An error
/// is guest memory that failed (the device then needs a reset).
struct Done {
    generation: u64,
    chain: DescriptorChain,
    outcome: Result<Completion, QueueError>,
}

/// The backend and the buffer data moves through: whoever holds them
/// carries requests out.
struct Executor<B> {
    backend: B,
    /// Reused between requests: at most [`CHUNK_BYTES`].
    scratch: Vec<u8>,
    /// Read-ahead: the sectors `scratch` holds from a sequential read
    /// (first sector, bytes), valid until the next backend transfer or
    /// write. Each backend transfer is a synchronous round trip to
    /// storaged that costs about as much for 64 KiB as for 512 bytes, and
    /// firmware and boot loaders read a disk in small sequential pieces
    /// (SeaBIOS under GRUB: 1,167 transfers a boot, 14 KiB on average).
    window: Option<(u64, usize)>,
    /// The sector after the last read: a read starting there is
    /// sequential.
    next_sector: u64,
}

/// The request side of a virtio-blk disk, shared between the [`Block`]
/// device (which lives under the VMM's device lock) and the threads that
/// carry requests out with that lock released (issue 10, finding 17: the
/// backend's doorbell is a synchronous IPC call to storaged, and no lock
/// the vCPUs contend for may be held across it).
///
/// A notification is handled in three steps:
/// 1. **queue** (device lock held): [`VirtioDevice::process_queue`] pops
///    the available chains (a bounded pass, finding 21), checks each
///    request's header, direction and bounds, and records it here;
/// 2. **execute** (no device lock): [`Disk::execute`] moves the data
///    between guest RAM and the backend. The backend has a lock of its
///    own, only ever *tried*: the thread that holds it carries out every
///    request waiting, including those queued meanwhile by threads that
///    found it busy, so one disk's backend (its ring to storaged) is driven
///    by one thread at a time, in the order the requests were made
///    available (a FLUSH follows the writes before it), and nobody waits
///    for it;
/// 3. **complete** (device lock held again):
///    [`VirtioDevice::complete_queue`] writes the status bytes and the
///    used ring and asks for the interrupt.
///
/// Requests may complete in another order than they were made available
/// (two vCPUs, or GET_ID answered at once): virtio allows it, since
/// VIRTIO_F_IN_ORDER is not offered (§2.7.9). A device reset starts a new
/// generation: requests of the old one that are still waiting are
/// dropped, and one being carried out is not completed (its data went to
/// guest RAM the guest owns, but no used entry reaches the new rings).
pub struct Disk<B: BlockBackend> {
    capacity_sectors: u64,
    id: [u8; ID_BYTES],
    read_only: bool,
    /// Bumped by every device reset.
    generation: AtomicU64,
    waiting: spin::Mutex<VecDeque<Request>>,
    done: spin::Mutex<Vec<Done>>,
    executor: spin::Mutex<Executor<B>>,
}

impl<B: BlockBackend> Disk<B> {
    fn new(backend: B) -> Self {
        Self {
            capacity_sectors: backend.capacity_sectors(),
            id: backend.id(),
            read_only: backend.read_only(),
            generation: AtomicU64::new(0),
            waiting: spin::Mutex::new(VecDeque::new()),
            done: spin::Mutex::new(Vec::new()),
            executor: spin::Mutex::new(Executor { backend, scratch: Vec::new(), window: None, next_sector: u64::MAX }),
        }
    }

    /// Carries out the requests waiting for the backend, with guest RAM
    /// `mem`; call it with no device lock held. If another thread is
    /// carrying out this disk's requests it returns at once: that thread
    /// takes the waiting ones too. One call carries out at most
    /// [`EXECUTE_BUDGET`] requests (finding 21: vCPUs that keep adding
    /// requests while others complete them cannot hold this thread for
    /// ever): see [`Executed::budget_spent`].
    pub fn execute(&self, mem: &mut dyn GuestMemory) -> Executed {
        self.execute_at_most(mem, EXECUTE_BUDGET)
    }

    /// [`Self::execute`] with a budget of `budget` requests.
    pub fn execute_at_most(&self, mem: &mut dyn GuestMemory, mut budget: usize) -> Executed {
        let mut budget_spent = false;
        'tries: while let Some(mut executor) = self.executor.try_lock() {
            loop {
                if budget == 0 {
                    budget_spent = self.has_work();
                    break 'tries;
                }
                let next = self.waiting.lock().pop_front();
                let Some(request) = next else { break };
                budget -= 1;
                if request.generation != self.generation.load(Ordering::Acquire) {
                    // Queued before a reset: the driver has forgotten it.
                    continue;
                }
                let outcome = executor.run(request.op, &request.chain, mem);
                self.done.lock().push(Done { generation: request.generation, chain: request.chain, outcome });
            }
            drop(executor);
            // A request queued after the last look, by a thread that found
            // the backend busy, is this thread's to carry out.
            if self.waiting.lock().is_empty() {
                break;
            }
        }
        Executed { to_complete: self.has_completions(), budget_spent }
    }

    /// Whether requests wait for the backend.
    pub fn has_work(&self) -> bool {
        !self.waiting.lock().is_empty()
    }

    /// Whether carried-out requests wait to be completed.
    pub fn has_completions(&self) -> bool {
        !self.done.lock().is_empty()
    }

    /// Runs `f` on the backend, waiting for a thread that is carrying out
    /// requests to finish (for set-up and tests).
    pub fn with_backend<R>(&self, f: impl FnOnce(&mut B) -> R) -> R {
        let mut executor = self.executor.lock();
        // `f` may change the disk under the read-ahead window.
        executor.window = None;
        f(&mut executor.backend)
    }

    fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// A device reset: a new generation; what waits is forgotten.
    fn reset(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.waiting.lock().clear();
        self.done.lock().clear();
    }
}

impl<B: BlockBackend> Executor<B> {
    /// Carries out one checked request. Only a guest-memory failure is an
    /// error; everything else the guest gets to see as a status.
    fn run(&mut self, op: Op, chain: &DescriptorChain, mem: &mut dyn GuestMemory) -> Result<Completion, QueueError> {
        match op {
            Op::Read { sector, len } => self.read(chain, mem, sector, len),
            Op::Write { sector, len } => self.write(chain, mem, sector, len),
            Op::Flush => Ok(Completion::status(match self.backend.flush() {
                Ok(()) => VIRTIO_BLK_S_OK,
                Err(_) => VIRTIO_BLK_S_IOERR,
            })),
        }
    }

    /// Makes the scratch buffer big enough for one chunk of `len` bytes,
    /// as far as the heap allows; returns the chunk size to use (0: no
    /// buffer at all). The old buffer goes before the new one is taken (no
    /// realloc holding both; its size is tried on the way down), and when the heap has no room for a whole
    /// chunk a smaller one does: a VMM with many disks in its fixed heap
    /// (`alcove_rt::HEAP_BYTES`) moves a request in more pieces instead of
    /// aborting (a firmware-booted VM with a boot disk and a data disk did:
    /// "memory allocation of 65536 bytes failed").
    fn grow_scratch(&mut self, len: u32) -> usize {
        let want = (len as usize).min(CHUNK_BYTES);
        if self.scratch.len() >= want {
            return want;
        }
        // The old buffer goes first, so its room counts towards the new
        // one; a smaller one than it was is never taken (a size that
        // fitted before fits again).
        let had = core::mem::take(&mut self.scratch).len();
        let mut size = want;
        loop {
            let mut v = Vec::new();
            if v.try_reserve_exact(size).is_ok() {
                v.resize(size, 0);
                self.scratch = v;
                return size;
            }
            if size <= MIN_SCRATCH_BYTES {
                return 0;
            }
            // Halving, but the size that fitted before is tried on the way.
            size = if size > had && size / 2 < had { had } else { (size / 2).max(MIN_SCRATCH_BYTES) };
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
        let sequential = sector == self.next_sector;
        self.next_sector = sector.saturating_add(u64::from(len) / SECTOR_SIZE);
        if let Some(at) = self.in_window(sector, len) {
            chain.write_at(mem, 0, &self.scratch[at..at + len as usize])?;
            return Ok(Completion { status: VIRTIO_BLK_S_OK, data_written: len });
        }
        if sequential && self.read_ahead(sector, len) {
            chain.write_at(mem, 0, &self.scratch[..len as usize])?;
            return Ok(Completion { status: VIRTIO_BLK_S_OK, data_written: len });
        }
        self.window = None;
        let chunk = self.grow_scratch(len);
        if chunk == 0 && len > 0 {
            return Ok(Completion { status: VIRTIO_BLK_S_IOERR, data_written: 0 });
        }
        let mut done = 0u32;
        while done < len {
            let n = ((len - done) as usize).min(chunk);
            let buf = &mut self.scratch[..n];
            if self.backend.read(sector + u64::from(done) / SECTOR_SIZE, buf).is_err() {
                return Ok(Completion { status: VIRTIO_BLK_S_IOERR, data_written: done });
            }
            chain.write_at(mem, u64::from(done), buf)?;
            done += n as u32;
        }
        Ok(Completion { status: VIRTIO_BLK_S_OK, data_written: len })
    }

    /// Where in `scratch` the read-ahead window holds all of `len` bytes
    /// from `sector`, if it does.
    fn in_window(&self, sector: u64, len: u32) -> Option<usize> {
        let (first, bytes) = self.window?;
        let at = usize::try_from(sector.checked_sub(first)?.checked_mul(SECTOR_SIZE)?).ok()?;
        (at.checked_add(len as usize)? <= bytes).then_some(at)
    }

    /// Reads a window of up to [`CHUNK_BYTES`] from `sector` (the disk's end
    /// permitting) into `scratch` for a sequential read of `len` bytes that
    /// is smaller: the read's own bytes first, the rest for the reads that
    /// follow. False when it cannot (no room, a read of the window failed:
    /// the caller then reads just what was asked, so a bad sector past the
    /// request fails nothing the guest asked for).
    fn read_ahead(&mut self, sector: u64, len: u32) -> bool {
        self.window = None;
        if len == 0 || len as usize >= CHUNK_BYTES {
            return false;
        }
        let left = self.backend.capacity_sectors().saturating_sub(sector).saturating_mul(SECTOR_SIZE);
        let want = usize::try_from(left).unwrap_or(usize::MAX).min(CHUNK_BYTES);
        let got = self.grow_scratch(want as u32) / SECTOR_SIZE as usize * SECTOR_SIZE as usize;
        if got <= len as usize {
            return false;
        }
        if self.backend.read(sector, &mut self.scratch[..got]).is_err() {
            return false;
        }
        self.window = Some((sector, got));
        true
    }

    /// VIRTIO_BLK_T_OUT: the readable stream after the header to disk.
    fn write(
        &mut self,
        chain: &DescriptorChain,
        mem: &mut dyn GuestMemory,
        sector: u64,
        len: u32,
    ) -> Result<Completion, QueueError> {
        // The window may hold the sectors written, and `scratch` is about
        // to carry the data.
        self.window = None;
        let chunk = self.grow_scratch(len);
        if chunk == 0 && len > 0 {
            return Ok(Completion::status(VIRTIO_BLK_S_IOERR));
        }
        let mut done = 0u32;
        while done < len {
            let n = ((len - done) as usize).min(chunk);
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

/// What a [`Disk::execute`] call leaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Executed {
    /// Requests carried out wait to be completed
    /// ([`VirtioDevice::complete_queue`], through `VirtioPci::complete`).
    pub to_complete: bool,
    /// The call stopped at its budget with requests still waiting: call
    /// it again (on Alcove, the VMM's timer thread does).
    pub budget_spent: bool,
}

/// The most requests one [`Disk::execute`] carries out: a queue's worth.
pub const EXECUTE_BUDGET: usize = QUEUE_SIZE as usize;

/// How many descriptors the requests in flight (queued, being carried out
/// or waiting for completion) may hold between them before the device
/// stops taking more: their chains live in the VMM's heap (512 KiB) until
/// completed, 16 bytes a descriptor. One more chain may pass the mark (at
/// most the queue size plus an indirect table, `Queue::pop`'s bounds), so
/// a disk holds at most about 36 KiB of them. Linux's requests take 3 to
/// 256 descriptors.
pub const MAX_IN_FLIGHT_DESCRIPTORS: usize = 1024;

/// The virtio-blk device.
pub struct Block<B: BlockBackend> {
    disk: Arc<Disk<B>>,
    acked_features: u64,
    queue_sizes: [u16; 1],
    /// Requests popped and not yet completed, and their descriptors. A
    /// driver never has more than a queue's worth of chains out (each takes
    /// a descriptor of the table); one that reuses descriptors of chains
    /// in flight waits for them.
    in_flight: u16,
    in_flight_descriptors: usize,
}

impl<B: BlockBackend> Block<B> {
    pub fn new(backend: B) -> Self {
        Self {
            disk: Arc::new(Disk::new(backend)),
            acked_features: 0,
            queue_sizes: [QUEUE_SIZE],
            in_flight: 0,
            in_flight_descriptors: 0,
        }
    }

    /// The request side, for the threads that carry requests out.
    pub fn disk(&self) -> &Arc<Disk<B>> {
        &self.disk
    }

    fn config_space(&self) -> [u8; CONFIG_LEN] {
        let mut c = [0u8; CONFIG_LEN];
        c[CONFIG_CAPACITY..CONFIG_CAPACITY + 8].copy_from_slice(&self.disk.capacity_sectors.to_le_bytes());
        // As QEMU: the header and the status take two of a chain's
        // descriptors.
        let seg_max = u32::from(self.queue_sizes[0]).saturating_sub(2);
        c[CONFIG_SEG_MAX..CONFIG_SEG_MAX + 4].copy_from_slice(&seg_max.to_le_bytes());
        c[CONFIG_BLK_SIZE..CONFIG_BLK_SIZE + 4].copy_from_slice(&(SECTOR_SIZE as u32).to_le_bytes());
        c
    }

    /// Checks a request that has a status byte: its header, the direction
    /// and size of its data and the sectors it names. Only a guest-memory
    /// failure is an error.
    fn check(&self, chain: &DescriptorChain, mem: &mut dyn GuestMemory) -> Result<Checked, QueueError> {
        // Bytes past the header in the readable part, and before the status
        // byte in the writable part.
        let (Some(readable_data), Some(writable_data)) =
            (chain.readable_len().checked_sub(REQUEST_HEADER_SIZE), chain.writable_len().checked_sub(1))
        else {
            return Ok(Checked::Now(Completion::status(VIRTIO_BLK_S_IOERR)));
        };
        let mut header = [0u8; REQUEST_HEADER_SIZE as usize];
        chain.read_at(mem, 0, &mut header)?;
        let request_type = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        let sector = u64::from_le_bytes([
            header[8], header[9], header[10], header[11], header[12], header[13], header[14], header[15],
        ]);
        let ioerr = Checked::Now(Completion::status(VIRTIO_BLK_S_IOERR));
        Ok(match request_type {
            VIRTIO_BLK_T_IN if readable_data == 0 => {
                if self.in_disk(sector, writable_data) {
                    Checked::Queue(Op::Read { sector, len: writable_data })
                } else {
                    ioerr
                }
            }
            // §5.2.6.2: with VIRTIO_BLK_F_RO offered, IOERR and write nothing.
            VIRTIO_BLK_T_OUT if writable_data == 0 => {
                if !self.disk.read_only && self.in_disk(sector, readable_data) {
                    Checked::Queue(Op::Write { sector, len: readable_data })
                } else {
                    ioerr
                }
            }
            VIRTIO_BLK_T_FLUSH if readable_data == 0 && writable_data == 0 => Checked::Queue(Op::Flush),
            // The serial is known without the backend: answered at once.
            VIRTIO_BLK_T_GET_ID if readable_data == 0 => {
                let n = (writable_data as usize).min(ID_BYTES);
                let put = chain.write_at(mem, 0, &self.disk.id[..n])?;
                Checked::Now(Completion { status: VIRTIO_BLK_S_OK, data_written: put as u32 })
            }
            // A known type with data in the wrong direction.
            VIRTIO_BLK_T_IN | VIRTIO_BLK_T_OUT | VIRTIO_BLK_T_FLUSH | VIRTIO_BLK_T_GET_ID => ioerr,
            _ => Checked::Now(Completion::status(VIRTIO_BLK_S_UNSUPP)),
        })
    }

    /// Whether `len` bytes from `sector` are whole sectors inside the disk
    /// (§5.2.6.1: the driver must not ask for more).
    fn in_disk(&self, sector: u64, len: u32) -> bool {
        let len = u64::from(len);
        len % SECTOR_SIZE == 0
            && sector.checked_add(len / SECTOR_SIZE).is_some_and(|end| end <= self.disk.capacity_sectors)
    }

    /// Whether the requests in flight leave room for another.
    fn room(&self, queue: &Queue) -> bool {
        self.in_flight < queue.size && self.in_flight_descriptors < MAX_IN_FLIGHT_DESCRIPTORS
    }
}

/// Writes a request's status, its last writable byte whatever the request
/// wrote before it (§5.2.6), and returns the chain to the driver.
fn finish(queue: &mut Queue, mem: &mut dyn GuestMemory, chain: &DescriptorChain, done: Completion) -> Result<(), QueueError> {
    let status_at = chain.writable_len().saturating_sub(1);
    chain.write_at(mem, u64::from(status_at), &[done.status])?;
    queue.add_used(mem, chain.head_index(), done.data_written + 1)
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
        if self.disk.read_only {
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

    /// The queue step (see [`Disk`]): pops what the driver made available,
    /// answers at once what needs no backend, and records the rest for
    /// [`Disk::execute`].
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
        let generation = self.disk.generation();
        loop {
            if !self.room(queue) {
                // The rest waits for a later pass (the VMM's timer runs
                // deferred passes).
                if queue.has_available(mem)? {
                    queue.defer();
                }
                break;
            }
            let Some(chain) = queue.pop(mem)? else { break };
            if chain.writable_len() == 0 {
                // Nowhere to put a status: hand the chain back untouched.
                queue.add_used(mem, chain.head_index(), 0)?;
                continue;
            }
            match self.check(&chain, mem)? {
                Checked::Now(done) => finish(queue, mem, &chain, done)?,
                Checked::Queue(op) => {
                    let mut chain = chain;
                    chain.shrink_to_fit();
                    self.in_flight += 1;
                    self.in_flight_descriptors += chain.descriptors().len();
                    self.disk.waiting.lock().push_back(Request { generation, chain, op });
                }
            }
        }
        Ok(queue.needs_notification(mem))
    }

    /// The complete step (see [`Disk`]): status bytes and used entries of
    /// the requests carried out since, but none for a generation before
    /// the last reset.
    fn complete_queue(
        &mut self,
        index: usize,
        queues: &mut [Queue],
        mem: &mut dyn GuestMemory,
    ) -> Result<bool, QueueError> {
        if index != 0 {
            return Ok(false);
        }
        let Some(queue) = queues.get_mut(0) else { return Ok(false) };
        let generation = self.disk.generation();
        let done = core::mem::take(&mut *self.disk.done.lock());
        for d in done {
            if d.generation != generation {
                // Carried out for the driver before a reset: its chain
                // belongs to rings that are gone or set up anew.
                continue;
            }
            self.in_flight = self.in_flight.saturating_sub(1);
            self.in_flight_descriptors = self.in_flight_descriptors.saturating_sub(d.chain.descriptors().len());
            finish(queue, mem, &d.chain, d.outcome?)?;
        }
        Ok(queue.needs_notification(mem))
    }

    fn reset(&mut self) {
        self.acked_features = 0;
        self.in_flight = 0;
        self.in_flight_descriptors = 0;
        self.disk.reset();
    }
}

#[cfg(test)]
mod tests;
