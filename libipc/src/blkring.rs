//! The block ring: how a VMM and storaged move disk requests and their data
//! through one shared region, with IPC carrying only the doorbell.
//!
//! ```text
//!  vmm-server (RingClient)              storaged (RingServer + BlockDevice)
//!   post request in slot, prod += 1
//!   Doorbell::kick  ── storage.kick(handle) ──▶  pop prod - cons requests,
//!                                               validate each, do the I/O
//!                                               to/from the data area,
//!                                               write status, cons = prod
//!   read status  ◀──────── reply ──────────────
//! ```
//!
//! The region is a frame storaged creates (contiguous, so the disk's DMA goes
//! straight to and from the data area) and hands over in the reply to
//! `storage.open` ([`crate::interfaces::storage`]). Its layout, all integers
//! little-endian:
//!
//! | bytes | what |
//! |---|---|
//! | 0..64 | header: magic `ABLK`, version, slot count, slot size, slots offset, data offset, data size, sector size, capacity (sectors, u64), flags (bit 0: read-only), `req_prod` (client), `req_cons` (server) |
//! | 64.. | `slots` request slots of 32 bytes: op (u8), status (u8), data length (u32 at 4), data offset in the data area (u32 at 8), result length (u32 at 12), sector (u64 at 16), tag (u64 at 24) |
//! | page 1.. | the data area, whole 512-byte sectors |
//!
//! The doorbell is synchronous: `kick` returns once storaged carried out
//! the posted requests (up to a per-kick budget: `req_cons` says how far it
//! got, the client kicks again for the rest), so one kick per batch is the whole protocol; the
//! free-running `req_prod`/`req_cons` indices leave room for an asynchronous
//! storaged later without a new layout.
//!
//! The server treats the region as hostile: it never reads its geometry back
//! from it (it keeps its own [`Geometry`]), reads each slot once into a local
//! value and checks every field (op, sector range against the capacity with
//! overflow checks, data offset and length inside the data area, sector
//! multiples) before touching the disk; a bad request gets a failing
//! [`Status`] and never a panic. The client checks the header storaged wrote
//! before trusting it.
//!
//! Both sides reach the region only through [`RingRegion`]: copies in and
//! out, never a reference (on Alcove `alcove_rt::SharedMemory`, volatile
//! copies: the other process may write the region at any time, and a
//! hostile or broken peer gets inconsistent bytes, never undefined
//! behaviour). The server copies each slot out once, checks the copy and
//! acts on it alone; the request's data moves between the ring and a
//! buffer of the server's own, where the disk's DMA goes (storaged: a
//! private DMA frame, one extra copy of each request's data). A kick does
//! at most [`KICK_BUDGET_BYTES`] of data, so one client's kick holds
//! storaged for a bounded time. In one process ([`LocalDoorbell`]: host
//! tests, appliance builds) the doorbell serves the client's region in place
//! during the kick.
#![forbid(unsafe_code)]

use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

use crate::interfaces::{StorageError, storage};
use crate::{IpcError, Transport};

/// Bytes per sector on the ring (the virtio-blk sector, virtio 1.2 §5.2.6).
pub const SECTOR_BYTES: usize = 512;
/// Bytes of a GET_ID answer (virtio 1.2 §5.2.6: VIRTIO_BLK_ID_BYTES).
pub const ID_BYTES: usize = 20;
/// The page size the layout is built on.
pub const PAGE_BYTES: usize = 4096;
/// `ABLK`.
pub const MAGIC: u32 = u32::from_le_bytes(*b"ABLK");
/// The layout version this module speaks.
pub const VERSION: u32 = 1;
/// Header size; the slots follow it.
pub const HEADER_BYTES: usize = 64;
/// Size of one request slot.
pub const SLOT_BYTES: usize = 32;
/// Slots a ring made by [`RingServer::format`] has.
pub const SLOTS: u32 = 64;
/// Most slots that fit in the header page.
pub const MAX_SLOTS: u32 = ((PAGE_BYTES - HEADER_BYTES) / SLOT_BYTES) as u32;
/// The ring size storaged uses: the header page and 64 KiB of data.
pub const DEFAULT_RING_PAGES: usize = 17;

mod hdr {
    pub const MAGIC: usize = 0;
    pub const VERSION: usize = 4;
    pub const SLOTS: usize = 8;
    pub const SLOT_BYTES: usize = 12;
    pub const SLOTS_OFFSET: usize = 16;
    pub const DATA_OFFSET: usize = 20;
    pub const DATA_BYTES: usize = 24;
    pub const SECTOR_BYTES: usize = 28;
    pub const CAPACITY: usize = 32;
    pub const FLAGS: usize = 40;
    pub const REQ_PROD: usize = 48;
    pub const REQ_CONS: usize = 52;
    pub const FLAG_READ_ONLY: u32 = 1;
}

mod slot {
    pub const OP: usize = 0;
    pub const STATUS: usize = 1;
    pub const DATA_LEN: usize = 4;
    pub const DATA_OFFSET: usize = 8;
    pub const RESULT_LEN: usize = 12;
    pub const SECTOR: usize = 16;
    pub const TAG: usize = 24;
}

fn get_u32(b: &[u8], at: usize) -> u32 {
    let mut w = [0; 4];
    w.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(w)
}

fn get_u64(b: &[u8], at: usize) -> u64 {
    let mut w = [0; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// What a request asks for (the slot's op byte).
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Sectors from the disk into the data area.
    Read = 1,
    /// Sectors from the data area onto the disk.
    Write = 2,
    /// Make completed writes durable.
    Flush = 3,
    /// The disk's serial, [`ID_BYTES`] bytes into the data area.
    GetId = 4,
}

impl Op {
    /// The op for a slot's byte; `None` for anything else.
    pub const fn from_u8(b: u8) -> Option<Self> {
        Some(match b {
            1 => Op::Read,
            2 => Op::Write,
            3 => Op::Flush,
            4 => Op::GetId,
            _ => return None,
        })
    }
}

/// How a request ended (the slot's status byte). 0..=2 are virtio-blk's own
/// (virtio 1.2 §5.2.6); the rest say why the server refused it.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Done.
    Ok = 0,
    /// The disk failed the request.
    IoError = 1,
    /// Not an op the ring knows.
    Unsupported = 2,
    /// The data offset or length lies outside the data area, is not whole
    /// sectors, or is empty.
    BadBuffer = 3,
    /// The sectors lie (partly) past the end of the disk.
    OutOfRange = 4,
    /// A write to a read-only disk.
    ReadOnly = 5,
    /// Posted, not yet carried out (the client writes this).
    Pending = 0xff,
}

impl Status {
    /// The status for a slot's byte; `None` for a byte no server writes.
    pub const fn from_u8(b: u8) -> Option<Self> {
        Some(match b {
            0 => Status::Ok,
            1 => Status::IoError,
            2 => Status::Unsupported,
            3 => Status::BadBuffer,
            4 => Status::OutOfRange,
            5 => Status::ReadOnly,
            0xff => Status::Pending,
            _ => return None,
        })
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Ok => "ok",
            Status::IoError => "the disk failed the request",
            Status::Unsupported => "unsupported operation",
            Status::BadBuffer => "data buffer outside the ring's data area or not whole sectors",
            Status::OutOfRange => "sectors past the end of the disk",
            Status::ReadOnly => "the disk is read-only",
            Status::Pending => "not carried out",
        })
    }
}

/// The shape of one ring: where the slots and the data area are, and the
/// disk behind it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// Request slots.
    pub slots: u32,
    /// Offset of the data area in the region.
    pub data_offset: usize,
    /// Size of the data area, whole sectors.
    pub data_bytes: usize,
    /// The disk's size in sectors.
    pub capacity_sectors: u64,
    /// The disk refuses writes.
    pub read_only: bool,
}

impl Geometry {
    /// The geometry [`RingServer::format`] gives a region of `region_bytes`:
    /// [`SLOTS`] slots in the first page, the rest data.
    pub fn for_region(region_bytes: usize, capacity_sectors: u64, read_only: bool) -> Result<Self, RingError> {
        let need = 2 * PAGE_BYTES;
        if region_bytes < need {
            return Err(RingError::RegionTooSmall { bytes: region_bytes, need });
        }
        let data_bytes = (region_bytes - PAGE_BYTES) / SECTOR_BYTES * SECTOR_BYTES;
        if u32::try_from(data_bytes).is_err() {
            return Err(RingError::BadHeader { field: "data size", value: data_bytes as u64 });
        }
        Ok(Self { slots: SLOTS, data_offset: PAGE_BYTES, data_bytes, capacity_sectors, read_only })
    }

    /// Bytes the region must have.
    pub const fn region_bytes(&self) -> usize {
        self.data_offset + self.data_bytes
    }

    fn slot_at(&self, index: u32) -> usize {
        HEADER_BYTES + (index % self.slots) as usize * SLOT_BYTES
    }
}

/// What is wrong with a ring (its region or its header), or with how the
/// other side used it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RingError {
    /// The region is shorter than the ring needs.
    #[allow(missing_docs)]
    RegionTooSmall { bytes: usize, need: usize },
    /// The header is not a ring's (`field` holds `value`).
    #[allow(missing_docs)]
    BadHeader { field: &'static str, value: u64 },
    /// The client posted more requests than there are slots.
    #[allow(missing_docs)]
    Overrun { pending: u32, slots: u32 },
}

impl fmt::Display for RingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RingError::RegionTooSmall { bytes, need } => {
                write!(f, "block ring: region of {bytes} bytes, need at least {need}")
            }
            RingError::BadHeader { field, value } => write!(f, "block ring: header field {field} is {value:#x}"),
            RingError::Overrun { pending, slots } => {
                write!(f, "block ring: {pending} requests posted, the ring has {slots} slots")
            }
        }
    }
}

impl core::error::Error for RingError {}

impl From<RingError> for StorageError {
    fn from(e: RingError) -> Self {
        match e {
            RingError::Overrun { pending, slots } => StorageError::RingOverrun { pending, slots },
            other => StorageError::RingSetup { why: alloc::format!("{other}") },
        }
    }
}

// ----------------------------------------------------------------------------
// The server side.

/// A disk failed an operation; the request completes with
/// [`Status::IoError`]. `what` is for the server's log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiskError {
    /// What failed, e.g. `"virtio-blk read"`.
    pub what: &'static str,
}

impl fmt::Display for DiskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} failed", self.what)
    }
}

/// A disk a ring server drives. The server has checked every range before
/// calling: sectors lie inside `capacity_sectors()`, buffers are whole,
/// non-empty sectors.
pub trait BlockDevice {
    /// Size in 512-byte sectors.
    fn capacity_sectors(&self) -> u64;
    /// Writes are refused.
    fn read_only(&self) -> bool;
    /// Reads `buf.len() / 512` sectors from `sector`.
    fn read(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), DiskError>;
    /// Writes `data.len() / 512` sectors at `sector`.
    fn write(&mut self, sector: u64, data: &[u8]) -> Result<(), DiskError>;
    /// Makes completed writes durable.
    fn flush(&mut self) -> Result<(), DiskError>;
    /// The serial, NUL-padded.
    fn id(&mut self) -> Result<[u8; ID_BYTES], DiskError>;
}

impl<T: BlockDevice + ?Sized> BlockDevice for &mut T {
    fn capacity_sectors(&self) -> u64 {
        (**self).capacity_sectors()
    }
    fn read_only(&self) -> bool {
        (**self).read_only()
    }
    fn read(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), DiskError> {
        (**self).read(sector, buf)
    }
    fn write(&mut self, sector: u64, data: &[u8]) -> Result<(), DiskError> {
        (**self).write(sector, data)
    }
    fn flush(&mut self) -> Result<(), DiskError> {
        (**self).flush()
    }
    fn id(&mut self) -> Result<[u8; ID_BYTES], DiskError> {
        (**self).id()
    }
}

/// A disk in memory: for tests, and as an appliance's RAM disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemDisk {
    /// The sectors.
    pub data: Vec<u8>,
    /// The serial.
    pub id: [u8; ID_BYTES],
    /// Refuse writes.
    pub read_only: bool,
    /// Flushes seen.
    pub flushes: u32,
}

impl MemDisk {
    /// A zeroed disk of `sectors` sectors with serial `serial` (cut to 20 bytes).
    pub fn new(sectors: usize, serial: &str) -> Self {
        let mut id = [0; ID_BYTES];
        let n = serial.len().min(ID_BYTES);
        id[..n].copy_from_slice(&serial.as_bytes()[..n]);
        Self { data: vec![0; sectors * SECTOR_BYTES], id, read_only: false, flushes: 0 }
    }

    fn range(&self, sector: u64, len: usize) -> Result<core::ops::Range<usize>, DiskError> {
        let start = usize::try_from(sector).ok().and_then(|s| s.checked_mul(SECTOR_BYTES));
        let range = start.and_then(|s| Some(s..s.checked_add(len)?));
        // The ring server checks ranges first; a miss here is a server bug,
        // reported as a failed I/O rather than a panic.
        range.filter(|r| r.end <= self.data.len()).ok_or(DiskError { what: "memory disk: range outside the disk" })
    }
}

impl BlockDevice for MemDisk {
    fn capacity_sectors(&self) -> u64 {
        (self.data.len() / SECTOR_BYTES) as u64
    }
    fn read_only(&self) -> bool {
        self.read_only
    }
    fn read(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), DiskError> {
        let r = self.range(sector, buf.len())?;
        buf.copy_from_slice(&self.data[r]);
        Ok(())
    }
    fn write(&mut self, sector: u64, data: &[u8]) -> Result<(), DiskError> {
        if self.read_only {
            return Err(DiskError { what: "memory disk: write to a read-only disk" });
        }
        let r = self.range(sector, data.len())?;
        self.data[r].copy_from_slice(data);
        Ok(())
    }
    fn flush(&mut self) -> Result<(), DiskError> {
        self.flushes += 1;
        Ok(())
    }
    fn id(&mut self) -> Result<[u8; ID_BYTES], DiskError> {
        Ok(self.id)
    }
}

/// One request as the server read it from its slot (read once; the client
/// may change the slot meanwhile, it changes nothing here).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct RawRequest {
    op: u8,
    data_len: u32,
    data_offset: u32,
    sector: u64,
}

/// What the server's checks make of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Checked {
    Read { sector: u64, data: (usize, usize) },
    Write { sector: u64, data: (usize, usize) },
    Flush,
    GetId { data: usize },
}

/// Most data one kick moves (reads and writes together) before the server
/// stops and leaves the rest for the next kick: bounds one client's share
/// of storaged's time per kick (one request always goes, whatever its size).
pub const KICK_BUDGET_BYTES: usize = 256 * 1024;

/// The server side of one ring: formats the region, then carries out what
/// the client posts. Holds its own copy of the geometry and of `req_cons`,
/// so nothing the client writes can move them.
///
/// It reaches the region only through [`RingRegion`] copies: each slot is
/// copied out once and checked, and the request's data moves between the
/// ring and a buffer of the server's own (`bounce`, which the disk's DMA
/// targets), so a client that rewrites the ring during a kick changes what
/// it gets back, never what the server checked.
#[derive(Clone, Debug)]
pub struct RingServer {
    geometry: Geometry,
    cons: u32,
    completed: u64,
    failed: u64,
}

impl RingServer {
    /// Writes a fresh header for a disk of `capacity_sectors` into `region`
    /// (the whole region: header page and data area) and clears the slots.
    pub fn format(region: &mut dyn RingRegion, capacity_sectors: u64, read_only: bool) -> Result<Self, RingError> {
        let g = Geometry::for_region(region.len(), capacity_sectors, read_only)?;
        let mut page = vec![0u8; g.data_offset];
        put_u32(&mut page, hdr::MAGIC, MAGIC);
        put_u32(&mut page, hdr::VERSION, VERSION);
        put_u32(&mut page, hdr::SLOTS, g.slots);
        put_u32(&mut page, hdr::SLOT_BYTES, SLOT_BYTES as u32);
        put_u32(&mut page, hdr::SLOTS_OFFSET, HEADER_BYTES as u32);
        put_u32(&mut page, hdr::DATA_OFFSET, g.data_offset as u32);
        // `for_region` checked that the data size fits a u32.
        put_u32(&mut page, hdr::DATA_BYTES, g.data_bytes as u32);
        put_u32(&mut page, hdr::SECTOR_BYTES, SECTOR_BYTES as u32);
        put_u64(&mut page, hdr::CAPACITY, capacity_sectors);
        put_u32(&mut page, hdr::FLAGS, if read_only { hdr::FLAG_READ_ONLY } else { 0 });
        region.write(0, &page);
        Ok(Self { geometry: g, cons: 0, completed: 0, failed: 0 })
    }

    /// The ring's shape.
    pub fn geometry(&self) -> Geometry {
        self.geometry
    }

    /// Requests completed with [`Status::Ok`] and with a failure, so far.
    pub fn counts(&self) -> (u64, u64) {
        (self.completed, self.failed)
    }

    /// Carries out the requests posted since the last call, up to
    /// [`KICK_BUDGET_BYTES`] of data (at least one request), and returns
    /// how many; `req_cons` tells the client how far it got. Data moves
    /// through `bounce` (at least one sector; a request larger than it goes
    /// in pieces). Fails without touching the disk if the region is not the
    /// one formatted (shorter), `bounce` is shorter than a sector, or the
    /// client posted more than the ring holds.
    pub fn serve(
        &mut self,
        region: &mut dyn RingRegion,
        disk: &mut dyn BlockDevice,
        bounce: &mut [u8],
    ) -> Result<u32, RingError> {
        let g = self.geometry;
        if region.len() < g.region_bytes() {
            return Err(RingError::RegionTooSmall { bytes: region.len(), need: g.region_bytes() });
        }
        if bounce.len() < SECTOR_BYTES {
            return Err(RingError::RegionTooSmall { bytes: bounce.len(), need: SECTOR_BYTES });
        }
        let mut word = [0u8; 4];
        region.read(hdr::REQ_PROD, &mut word);
        let prod = u32::from_le_bytes(word);
        let pending = prod.wrapping_sub(self.cons);
        if pending > g.slots {
            return Err(RingError::Overrun { pending, slots: g.slots });
        }
        let mut done = 0;
        let mut moved = 0usize;
        while done < pending && (done == 0 || moved < KICK_BUDGET_BYTES) {
            let at = g.slot_at(self.cons.wrapping_add(done));
            // The one read of the slot: everything below uses this copy.
            let mut s = [0u8; SLOT_BYTES];
            region.read(at, &mut s);
            let raw = RawRequest {
                op: s[slot::OP],
                data_len: get_u32(&s, slot::DATA_LEN),
                data_offset: get_u32(&s, slot::DATA_OFFSET),
                sector: get_u64(&s, slot::SECTOR),
            };
            let (status, result_len) = match self.check(raw, disk.read_only()) {
                Ok(request) => {
                    moved = moved.saturating_add(request.data_bytes());
                    Self::carry_out(request, g.data_offset, region, disk, bounce)
                }
                Err(status) => (status, 0),
            };
            if status == Status::Ok {
                self.completed += 1;
            } else {
                self.failed += 1;
            }
            region.write(at + slot::STATUS, &[status as u8]);
            region.write(at + slot::RESULT_LEN, &result_len.to_le_bytes());
            done += 1;
        }
        self.cons = self.cons.wrapping_add(done);
        region.write(hdr::REQ_CONS, &self.cons.to_le_bytes());
        Ok(done)
    }

    /// The boundary: every field of a request checked once, here.
    fn check(&self, raw: RawRequest, read_only: bool) -> Result<Checked, Status> {
        let g = &self.geometry;
        let op = Op::from_u8(raw.op).ok_or(Status::Unsupported)?;
        let buffer = |min_len: usize| -> Result<(usize, usize), Status> {
            let (offset, len) = (raw.data_offset as usize, raw.data_len as usize);
            let end = offset.checked_add(len).ok_or(Status::BadBuffer)?;
            if len < min_len || end > g.data_bytes {
                return Err(Status::BadBuffer);
            }
            Ok((offset, len))
        };
        match op {
            Op::Read | Op::Write => {
                let (offset, len) = buffer(SECTOR_BYTES)?;
                if !len.is_multiple_of(SECTOR_BYTES) {
                    return Err(Status::BadBuffer);
                }
                let sectors = (len / SECTOR_BYTES) as u64;
                let end = raw.sector.checked_add(sectors).ok_or(Status::OutOfRange)?;
                if end > g.capacity_sectors {
                    return Err(Status::OutOfRange);
                }
                if op == Op::Write {
                    if read_only || g.read_only {
                        return Err(Status::ReadOnly);
                    }
                    Ok(Checked::Write { sector: raw.sector, data: (offset, len) })
                } else {
                    Ok(Checked::Read { sector: raw.sector, data: (offset, len) })
                }
            }
            Op::Flush => Ok(Checked::Flush),
            Op::GetId => buffer(ID_BYTES).map(|(offset, _)| Checked::GetId { data: offset }),
        }
    }

    /// Does a checked request; the data goes between the ring's data area
    /// (from `data_offset` in the region) and the disk through `bounce`.
    fn carry_out(
        request: Checked,
        data_offset: usize,
        region: &mut dyn RingRegion,
        disk: &mut dyn BlockDevice,
        bounce: &mut [u8],
    ) -> (Status, u32) {
        let io = |r: Result<(), DiskError>| if r.is_ok() { Status::Ok } else { Status::IoError };
        // Whole sectors of the bounce buffer (it holds at least one).
        let step = bounce.len() / SECTOR_BYTES * SECTOR_BYTES;
        match request {
            Checked::Read { sector, data: (o, n) } => {
                for (i, start) in (0..n).step_by(step).enumerate() {
                    let part = &mut bounce[..step.min(n - start)];
                    if disk.read(sector + (i * step / SECTOR_BYTES) as u64, part).is_err() {
                        return (Status::IoError, 0);
                    }
                    region.write(data_offset + o + start, part);
                }
                (Status::Ok, n as u32)
            }
            Checked::Write { sector, data: (o, n) } => {
                for (i, start) in (0..n).step_by(step).enumerate() {
                    let part = &mut bounce[..step.min(n - start)];
                    region.read(data_offset + o + start, part);
                    if disk.write(sector + (i * step / SECTOR_BYTES) as u64, part).is_err() {
                        return (Status::IoError, 0);
                    }
                }
                (Status::Ok, n as u32)
            }
            Checked::Flush => (io(disk.flush()), 0),
            Checked::GetId { data: o } => match disk.id() {
                Ok(id) => {
                    region.write(data_offset + o, &id);
                    (Status::Ok, ID_BYTES as u32)
                }
                Err(_) => (Status::IoError, 0),
            },
        }
    }
}

impl Checked {
    /// Bytes of data the request moves.
    fn data_bytes(&self) -> usize {
        match *self {
            Checked::Read { data: (_, n), .. } | Checked::Write { data: (_, n), .. } => n,
            Checked::Flush => 0,
            Checked::GetId { .. } => ID_BYTES,
        }
    }
}

// ----------------------------------------------------------------------------
// The client side.

/// Why a kick did not go through.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KickError {
    /// The IPC call failed (storaged gone, wrong capability…).
    Ipc(IpcError),
    /// storaged refused (unknown handle, overrun…).
    Refused(StorageError),
}

impl fmt::Display for KickError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KickError::Ipc(e) => write!(f, "kick: {e}"),
            KickError::Refused(e) => write!(f, "kick: {e}"),
        }
    }
}

/// How the client reaches the ring's region: by copies, never by a
/// reference the server's writes could change underneath.
pub trait RingRegion {
    /// The region's size in bytes.
    fn len(&self) -> usize;
    /// Whether the region is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Copies `buf.len()` bytes from `offset`; the caller keeps inside
    /// [`Self::len`] (the client checks its geometry against it once).
    fn read(&self, offset: usize, buf: &mut [u8]);
    /// Copies `data` to `offset`, inside [`Self::len`].
    fn write(&mut self, offset: usize, data: &[u8]);
}

impl RingRegion for Vec<u8> {
    fn len(&self) -> usize {
        Vec::len(self)
    }
    fn read(&self, offset: usize, buf: &mut [u8]) {
        buf.copy_from_slice(&self[offset..offset + buf.len()]);
    }
    fn write(&mut self, offset: usize, data: &[u8]) {
        self[offset..offset + data.len()].copy_from_slice(data);
    }
}

/// Tells the server that requests are posted and waits until it carried
/// them out. `region` is the ring (the in-process wiring needs it; across
/// processes the server has its own mapping and the doorbell ignores it).
pub trait Doorbell {
    /// Rings, and returns once every posted request is complete.
    fn kick(&mut self, region: &mut dyn RingRegion) -> Result<(), KickError>;
}

/// The doorbell across processes: `storage.kick(handle)` over any transport
/// (on Alcove a `KernelTransport` to storaged's endpoint).
#[derive(Debug)]
pub struct StorageDoorbell<T: Transport> {
    client: storage::Client<T>,
    handle: u32,
}

impl<T: Transport> StorageDoorbell<T> {
    /// Kicks ring `handle` (from [`crate::interfaces::OpenedDisk`]) through `transport`.
    pub const fn new(transport: T, handle: u32) -> Self {
        Self { client: storage::Client::new(transport), handle }
    }

    /// The ring's handle.
    pub const fn handle(&self) -> u32 {
        self.handle
    }

    /// The storage client, for `close`.
    pub fn client(&self) -> &storage::Client<T> {
        &self.client
    }
}

impl<T: Transport> Doorbell for StorageDoorbell<T> {
    fn kick(&mut self, _region: &mut dyn RingRegion) -> Result<(), KickError> {
        match self.client.kick(self.handle) {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(KickError::Refused(e)),
            Err(e) => Err(KickError::Ipc(e)),
        }
    }
}

/// The doorbell within one process: runs the server on the spot (host
/// tests, appliance builds), on the client's region, through copies.
pub struct LocalDoorbell<D: BlockDevice> {
    /// The server side.
    pub server: RingServer,
    /// The disk it drives.
    pub disk: D,
    bounce: Vec<u8>,
}

impl<D: BlockDevice> LocalDoorbell<D> {
    /// `server` driving `disk`, with a bounce buffer the size of the ring's
    /// data area.
    pub fn new(server: RingServer, disk: D) -> Self {
        let bounce = vec![0; server.geometry().data_bytes.max(SECTOR_BYTES)];
        Self { server, disk, bounce }
    }
}

impl<D: BlockDevice> Doorbell for LocalDoorbell<D> {
    fn kick(&mut self, region: &mut dyn RingRegion) -> Result<(), KickError> {
        self.server.serve(region, &mut self.disk, &mut self.bounce).map(drop).map_err(|e| KickError::Refused(e.into()))
    }
}

/// Why a client request failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BlkError {
    /// The buffer is not whole sectors (or is empty).
    #[allow(missing_docs)]
    NotWholeSectors { bytes: usize },
    /// The server failed the request for the sectors from `sector`.
    #[allow(missing_docs)]
    Status { op: Op, sector: u64, status: Status },
    /// The doorbell failed.
    Kick(KickError),
    /// The server broke the protocol (`what`).
    #[allow(missing_docs)]
    Protocol { what: &'static str },
}

impl fmt::Display for BlkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BlkError::NotWholeSectors { bytes } => write!(f, "block ring: {bytes} bytes is not whole 512-byte sectors"),
            BlkError::Status { op, sector, status } => write!(f, "block ring: {op:?} at sector {sector}: {status}"),
            BlkError::Kick(e) => write!(f, "block ring: {e}"),
            BlkError::Protocol { what } => write!(f, "block ring: server broke the protocol: {what}"),
        }
    }
}

impl core::error::Error for BlkError {}

/// The client side of one ring: what a VMM's virtio-blk backend calls.
/// Requests are carried out one at a time (post, kick, read the status);
/// transfers larger than the data area are split.
///
/// On Alcove: receive the frame with `storage.open` through a
/// [`crate::kernel::CapTransport`] that also sends a copy of the caller's
/// process capability (no rights; storaged watches it), map it as an
/// `alcove_rt::SharedMemory` (all `ring_pages` pages), and build
/// `RingClient::new(memory, StorageDoorbell::new(KernelTransport::new(storaged), handle))`.
pub struct RingClient<R: RingRegion, D: Doorbell> {
    region: R,
    doorbell: D,
    geometry: Geometry,
    prod: u32,
    tag: u64,
}

impl<R: RingRegion, D: Doorbell> RingClient<R, D> {
    /// A client of the ring in `region` (formatted by the server), kicking
    /// through `doorbell`. Checks the header first.
    pub fn new(region: R, doorbell: D) -> Result<Self, RingError> {
        let len = region.len();
        if len < PAGE_BYTES {
            return Err(RingError::RegionTooSmall { bytes: len, need: PAGE_BYTES });
        }
        // One copy of the header, checked.
        let mut r = [0u8; HEADER_BYTES];
        region.read(0, &mut r);
        let r = &r[..];
        let field = |name: &'static str, at: usize, ok: &dyn Fn(u32) -> bool| {
            let v = get_u32(r, at);
            if ok(v) { Ok(v) } else { Err(RingError::BadHeader { field: name, value: u64::from(v) }) }
        };
        field("magic", hdr::MAGIC, &|v| v == MAGIC)?;
        field("version", hdr::VERSION, &|v| v == VERSION)?;
        let slots = field("slot count", hdr::SLOTS, &|v| (1..=MAX_SLOTS).contains(&v))?;
        field("slot size", hdr::SLOT_BYTES, &|v| v as usize == SLOT_BYTES)?;
        field("slots offset", hdr::SLOTS_OFFSET, &|v| v as usize == HEADER_BYTES)?;
        field("sector size", hdr::SECTOR_BYTES, &|v| v as usize == SECTOR_BYTES)?;
        let slots_end = HEADER_BYTES + slots as usize * SLOT_BYTES;
        let data_offset = field("data offset", hdr::DATA_OFFSET, &|v| v as usize >= slots_end)? as usize;
        let data_bytes = field("data size", hdr::DATA_BYTES, &|v| {
            v as usize >= SECTOR_BYTES
                && (v as usize).is_multiple_of(SECTOR_BYTES)
                && data_offset.checked_add(v as usize).is_some_and(|end| end <= len)
        })? as usize;
        let geometry = Geometry {
            slots,
            data_offset,
            data_bytes,
            capacity_sectors: get_u64(r, hdr::CAPACITY),
            read_only: get_u32(r, hdr::FLAGS) & hdr::FLAG_READ_ONLY != 0,
        };
        let prod = get_u32(r, hdr::REQ_PROD);
        Ok(Self { region, doorbell, geometry, prod, tag: 0 })
    }

    /// The ring's shape (the disk's capacity and read-only flag included).
    pub fn geometry(&self) -> Geometry {
        self.geometry
    }

    /// The disk's size in 512-byte sectors.
    pub fn capacity_sectors(&self) -> u64 {
        self.geometry.capacity_sectors
    }

    /// The disk refuses writes.
    pub fn read_only(&self) -> bool {
        self.geometry.read_only
    }

    /// The doorbell (e.g. to `close` the ring through its client).
    pub fn doorbell(&self) -> &D {
        &self.doorbell
    }

    /// Gives the region and the doorbell back.
    pub fn into_parts(self) -> (R, D) {
        (self.region, self.doorbell)
    }

    /// Reads `buf.len() / 512` sectors from `sector`.
    pub fn read(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), BlkError> {
        let chunk = self.chunk_bytes(buf.len())?;
        let mut sector = sector;
        for part in buf.chunks_mut(chunk) {
            self.submit(Op::Read, sector, part.len())?;
            self.region.read(self.geometry.data_offset, part);
            sector = sector.saturating_add((part.len() / SECTOR_BYTES) as u64);
        }
        Ok(())
    }

    /// Writes `data.len() / 512` sectors at `sector`.
    pub fn write(&mut self, sector: u64, data: &[u8]) -> Result<(), BlkError> {
        let chunk = self.chunk_bytes(data.len())?;
        let mut sector = sector;
        for part in data.chunks(chunk) {
            self.region.write(self.geometry.data_offset, part);
            self.submit(Op::Write, sector, part.len())?;
            sector = sector.saturating_add((part.len() / SECTOR_BYTES) as u64);
        }
        Ok(())
    }

    /// Makes completed writes durable.
    pub fn flush(&mut self) -> Result<(), BlkError> {
        self.submit(Op::Flush, 0, 0).map(drop)
    }

    /// The disk's serial (virtio-blk GET_ID), NUL-padded.
    pub fn get_id(&mut self) -> Result<[u8; ID_BYTES], BlkError> {
        let n = self.submit(Op::GetId, 0, ID_BYTES)?;
        if n as usize != ID_BYTES {
            return Err(BlkError::Protocol { what: "GET_ID answered with a length other than 20" });
        }
        let mut id = [0; ID_BYTES];
        self.region.read(self.geometry.data_offset, &mut id);
        Ok(id)
    }

    fn chunk_bytes(&self, len: usize) -> Result<usize, BlkError> {
        if len == 0 || !len.is_multiple_of(SECTOR_BYTES) {
            return Err(BlkError::NotWholeSectors { bytes: len });
        }
        Ok(self.geometry.data_bytes)
    }

    /// Posts one request with its data at the start of the data area, kicks,
    /// and returns the result length of a successful request.
    fn submit(&mut self, op: Op, sector: u64, data_len: usize) -> Result<u32, BlkError> {
        let g = self.geometry;
        let at = g.slot_at(self.prod);
        self.tag = self.tag.wrapping_add(1);
        let mut r = [0u8; SLOT_BYTES];
        r[slot::OP] = op as u8;
        r[slot::STATUS] = Status::Pending as u8;
        // `data_len` is at most the data area, whose size the header gave as a u32.
        put_u32(&mut r, slot::DATA_LEN, data_len as u32);
        put_u32(&mut r, slot::DATA_OFFSET, 0);
        put_u64(&mut r, slot::SECTOR, sector);
        put_u64(&mut r, slot::TAG, self.tag);
        self.region.write(at, &r);
        self.prod = self.prod.wrapping_add(1);
        self.region.write(hdr::REQ_PROD, &self.prod.to_le_bytes());
        self.doorbell.kick(&mut self.region).map_err(BlkError::Kick)?;
        // One copy each of what the server wrote back, then checked.
        let mut cons = [0u8; 4];
        self.region.read(hdr::REQ_CONS, &mut cons);
        if u32::from_le_bytes(cons) != self.prod {
            return Err(BlkError::Protocol { what: "the kick returned before the request was consumed" });
        }
        self.region.read(at, &mut r);
        let status = Status::from_u8(r[slot::STATUS]).ok_or(BlkError::Protocol { what: "unknown status byte" })?;
        match status {
            Status::Ok => Ok(get_u32(&r, slot::RESULT_LEN)),
            Status::Pending => Err(BlkError::Protocol { what: "request consumed but left pending" }),
            status => Err(BlkError::Status { op, sector, status }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(sectors: usize) -> RingClient<Vec<u8>, LocalDoorbell<MemDisk>> {
        let mut region = vec![0u8; DEFAULT_RING_PAGES * PAGE_BYTES];
        let disk = MemDisk::new(sectors, "alcove-disk-0");
        let server = RingServer::format(&mut region, disk.capacity_sectors(), false).unwrap();
        RingClient::new(region, LocalDoorbell::new(server, disk)).unwrap()
    }

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
    }

    #[test]
    fn read_write_flush_get_id() {
        let mut c = ring(256);
        assert_eq!(c.capacity_sectors(), 256);
        assert!(!c.read_only());
        let data = pattern(3 * SECTOR_BYTES, 7);
        c.write(10, &data).unwrap();
        let mut back = vec![0; data.len()];
        c.read(10, &mut back).unwrap();
        assert_eq!(back, data);
        c.flush().unwrap();
        let id = c.get_id().unwrap();
        assert_eq!(&id[..13], b"alcove-disk-0");
        assert!(id[13..].iter().all(|&b| b == 0));
        let (_, bell) = c.into_parts();
        assert_eq!(bell.disk.flushes, 1);
        assert_eq!(&bell.disk.data[10 * SECTOR_BYTES..13 * SECTOR_BYTES], &data[..]);
        assert_eq!(bell.server.counts(), (4, 0));
    }

    #[test]
    fn transfers_larger_than_the_data_area_are_split() {
        let mut c = ring(1024);
        let data_bytes = c.geometry().data_bytes;
        let data = pattern(data_bytes * 2 + 5 * SECTOR_BYTES, 3);
        c.write(100, &data).unwrap();
        let mut back = vec![0; data.len()];
        c.read(100, &mut back).unwrap();
        assert_eq!(back, data);
        // Wrap the slot index past the slot count.
        for i in 0..(SLOTS as u64 * 2 + 3) {
            c.write(i % 1000, &data[..SECTOR_BYTES]).unwrap();
        }
        let (_, bell) = c.into_parts();
        assert_eq!(&bell.disk.data[100 * SECTOR_BYTES..100 * SECTOR_BYTES + data.len()], &data[..]);
    }

    #[test]
    fn requests_outside_the_disk_fail_and_the_ring_goes_on() {
        let mut c = ring(16);
        let mut buf = vec![0; 2 * SECTOR_BYTES];
        assert_eq!(
            c.read(15, &mut buf),
            Err(BlkError::Status { op: Op::Read, sector: 15, status: Status::OutOfRange })
        );
        assert_eq!(
            c.write(u64::MAX, &buf),
            Err(BlkError::Status { op: Op::Write, sector: u64::MAX, status: Status::OutOfRange })
        );
        assert_eq!(c.read(0, &mut buf[..100]), Err(BlkError::NotWholeSectors { bytes: 100 }));
        assert_eq!(c.read(0, &mut []), Err(BlkError::NotWholeSectors { bytes: 0 }));
        c.read(14, &mut buf).unwrap();
    }

    #[test]
    fn read_only_disks_refuse_writes() {
        let mut region = vec![0u8; 4 * PAGE_BYTES];
        let mut disk = MemDisk::new(8, "ro");
        disk.read_only = true;
        let server = RingServer::format(&mut region, 8, true).unwrap();
        let mut c = RingClient::new(region, LocalDoorbell::new(server, disk)).unwrap();
        assert!(c.read_only());
        let r = c.write(0, &[1; SECTOR_BYTES]);
        assert_eq!(r, Err(BlkError::Status { op: Op::Write, sector: 0, status: Status::ReadOnly }));
        c.read(0, &mut [0; SECTOR_BYTES]).unwrap();
    }

    #[test]
    fn the_client_checks_the_header() {
        struct Never;
        impl Doorbell for Never {
            fn kick(&mut self, _: &mut dyn RingRegion) -> Result<(), KickError> {
                Err(KickError::Refused(StorageError::NoSuchHandle { handle: 0 }))
            }
        }
        let zero = vec![0u8; 4 * PAGE_BYTES];
        assert!(matches!(RingClient::new(zero, Never), Err(RingError::BadHeader { field: "magic", .. })));
        let mut region = vec![0u8; 4 * PAGE_BYTES];
        RingServer::format(&mut region, 8, false).unwrap();
        let mut bad = region.clone();
        put_u32(&mut bad, hdr::DATA_BYTES, 1 << 30);
        assert!(matches!(RingClient::new(bad, Never), Err(RingError::BadHeader { field: "data size", .. })));
        let mut bad = region.clone();
        put_u32(&mut bad, hdr::SLOTS, 10_000);
        assert!(matches!(RingClient::new(bad, Never), Err(RingError::BadHeader { field: "slot count", .. })));
        assert!(matches!(RingClient::new(vec![0u8; 100], Never), Err(RingError::RegionTooSmall { .. })));
        let mut c = RingClient::new(region, Never).unwrap();
        assert!(matches!(c.flush(), Err(BlkError::Kick(KickError::Refused(_)))));
        assert!(matches!(RingServer::format(&mut vec![0u8; 4096], 1, false), Err(RingError::RegionTooSmall { .. })));
    }

    /// A hostile client: requests posted by hand with every bad field.
    #[test]
    fn the_server_checks_every_field() {
        let mut region = vec![0u8; 4 * PAGE_BYTES];
        let mut server = RingServer::format(&mut region, 64, false).unwrap();
        let mut disk = MemDisk::new(64, "x");
        let g = server.geometry();
        let post = |region: &mut Vec<u8>, i: u32, op: u8, sector: u64, off: u32, len: u32| {
            let at = g.slot_at(i);
            region[at + slot::OP] = op;
            put_u64(region, at + slot::SECTOR, sector);
            put_u32(region, at + slot::DATA_OFFSET, off);
            put_u32(region, at + slot::DATA_LEN, len);
        };
        let cases: [(u8, u64, u32, u32, Status); 12] = [
            (0, 0, 0, 512, Status::Unsupported),
            (9, 0, 0, 512, Status::Unsupported),
            (1, 64, 0, 512, Status::OutOfRange),
            (1, 63, 0, 1024, Status::OutOfRange),
            (2, u64::MAX, 0, 512, Status::OutOfRange),
            (1, 0, 0, 0, Status::BadBuffer),
            (1, 0, 0, 100, Status::BadBuffer),
            (1, 0, g.data_bytes as u32, 512, Status::BadBuffer),
            (1, 0, u32::MAX, 512, Status::BadBuffer),
            (4, 0, g.data_bytes as u32 - 10, 20, Status::BadBuffer),
            (1, 63, 512, 512, Status::Ok),
            (4, 0, g.data_bytes as u32 - 20, 20, Status::Ok),
        ];
        for (i, &(op, sector, off, len, _)) in cases.iter().enumerate() {
            post(&mut region, i as u32, op, sector, off, len);
        }
        put_u32(&mut region, hdr::REQ_PROD, cases.len() as u32);
        let mut bounce = vec![0u8; g.data_bytes];
        assert_eq!(server.serve(&mut region, &mut disk, &mut bounce), Ok(cases.len() as u32));
        for (i, &(.., want)) in cases.iter().enumerate() {
            let got = region[g.slot_at(i as u32) + slot::STATUS];
            assert_eq!(Status::from_u8(got), Some(want), "case {i}: {:?}", cases[i]);
        }
        // Nothing new posted: nothing done.
        assert_eq!(server.serve(&mut region, &mut disk, &mut bounce), Ok(0));
        // More than the ring holds.
        put_u32(&mut region, hdr::REQ_PROD, cases.len() as u32 + SLOTS + 1);
        assert_eq!(server.serve(&mut region, &mut disk, &mut bounce), Err(RingError::Overrun { pending: SLOTS + 1, slots: SLOTS }));
        // A shorter region than formatted.
        assert!(matches!(server.serve(&mut region[..PAGE_BYTES].to_vec(), &mut disk, &mut bounce), Err(RingError::RegionTooSmall { .. })));
        // A bounce buffer shorter than a sector.
        assert!(matches!(server.serve(&mut region, &mut disk, &mut [0u8; 100]), Err(RingError::RegionTooSmall { .. })));
    }

    /// xorshift64*: deterministic noise without a dependency.
    struct Noise(u64);
    impl Noise {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
    }

    /// A disk that fails the test if the server lets a bad request through.
    struct Strict(MemDisk);
    impl Strict {
        fn check(&self, sector: u64, len: usize) {
            assert!(len > 0 && len.is_multiple_of(SECTOR_BYTES), "buffer of {len} bytes reached the disk");
            let end = sector.checked_add((len / SECTOR_BYTES) as u64).expect("sector overflow reached the disk");
            assert!(end <= self.0.capacity_sectors(), "sectors {sector}..{end} reached a disk of {}", self.0.capacity_sectors());
        }
    }
    impl BlockDevice for Strict {
        fn capacity_sectors(&self) -> u64 {
            self.0.capacity_sectors()
        }
        fn read_only(&self) -> bool {
            self.0.read_only
        }
        fn read(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), DiskError> {
            self.check(sector, buf.len());
            self.0.read(sector, buf)
        }
        fn write(&mut self, sector: u64, data: &[u8]) -> Result<(), DiskError> {
            self.check(sector, data.len());
            assert!(!self.0.read_only, "a write reached a read-only disk");
            self.0.write(sector, data)
        }
        fn flush(&mut self) -> Result<(), DiskError> {
            self.0.flush()
        }
        fn id(&mut self) -> Result<[u8; ID_BYTES], DiskError> {
            self.0.id()
        }
    }

    /// Fuzz-style: random bytes in the header and slots, and random but
    /// plausible requests with edge values, never panic the server and never
    /// reach the disk with a request outside it ([`Strict`] checks).
    #[test]
    fn random_bytes_never_panic_the_server() {
        let mut noise = Noise(0x9e37_79b9_7f4a_7c15);
        let mut region = vec![0u8; 3 * PAGE_BYTES];
        // A small bounce buffer: requests go through it in pieces.
        let mut bounce = vec![0u8; 3 * SECTOR_BYTES];
        for round in 0..3000 {
            let sectors = 1 + (noise.next() % 64) as usize;
            let mut server = RingServer::format(&mut region, sectors as u64, round % 7 == 0).unwrap();
            let mut disk = Strict(MemDisk::new(sectors, "fuzz"));
            disk.0.read_only = round % 7 == 0;
            let g = server.geometry();
            for _ in 0..4 {
                if round % 2 == 0 {
                    // Raw noise over the header page.
                    for b in region[..PAGE_BYTES].iter_mut() {
                        if noise.next().is_multiple_of(8) {
                            *b = noise.next() as u8;
                        }
                    }
                } else {
                    // Plausible requests with edge values.
                    let n = (noise.next() % u64::from(SLOTS + 2)) as u32;
                    let prod = get_u32(&region, hdr::REQ_PROD);
                    for i in 0..n {
                        let at = g.slot_at(prod.wrapping_add(i));
                        let edge = |x: u64, noise: &mut Noise| match noise.next() % 4 {
                            0 => x,
                            1 => x.wrapping_sub(1),
                            2 => x.wrapping_add(1),
                            _ => noise.next(),
                        };
                        region[at + slot::OP] = (noise.next() % 6) as u8;
                        put_u64(&mut region, at + slot::SECTOR, edge(sectors as u64 - 1, &mut noise) % (sectors as u64 + 2));
                        put_u32(&mut region, at + slot::DATA_OFFSET, edge(g.data_bytes as u64 - 512, &mut noise) as u32);
                        put_u32(&mut region, at + slot::DATA_LEN, edge(512, &mut noise) as u32);
                    }
                    put_u32(&mut region, hdr::REQ_PROD, prod.wrapping_add(n));
                }
                match server.serve(&mut region, &mut disk, &mut bounce) {
                    Ok(n) => assert!(n <= g.slots),
                    Err(RingError::Overrun { pending, slots }) => assert!(pending > slots),
                    Err(e) => panic!("unexpected {e}"),
                }
            }
        }
    }

    /// A hostile client that rewrites every slot the moment the server has
    /// read it: sector past the end, op flipped to a write, buffer outside
    /// the data area. The server acts on what it read once.
    struct Flipping {
        bytes: core::cell::RefCell<Vec<u8>>,
        geometry: Geometry,
        slot_reads: core::cell::Cell<u32>,
    }
    impl RingRegion for Flipping {
        fn len(&self) -> usize {
            self.bytes.borrow().len()
        }
        fn read(&self, offset: usize, buf: &mut [u8]) {
            let mut b = self.bytes.borrow_mut();
            buf.copy_from_slice(&b[offset..offset + buf.len()]);
            let slots = HEADER_BYTES..HEADER_BYTES + self.geometry.slots as usize * SLOT_BYTES;
            if slots.contains(&offset) {
                self.slot_reads.set(self.slot_reads.get() + 1);
                let at = offset - (offset - HEADER_BYTES) % SLOT_BYTES;
                b[at + slot::OP] = Op::Write as u8;
                put_u64(&mut b, at + slot::SECTOR, self.geometry.capacity_sectors);
                put_u32(&mut b, at + slot::DATA_OFFSET, self.geometry.data_bytes as u32 - SECTOR_BYTES as u32);
                put_u32(&mut b, at + slot::DATA_LEN, 0x4000_0000);
            }
        }
        fn write(&mut self, offset: usize, data: &[u8]) {
            self.bytes.get_mut()[offset..offset + data.len()].copy_from_slice(data);
        }
    }

    #[test]
    fn a_slot_changed_between_check_and_use_changes_nothing() {
        let mut region = vec![0u8; 4 * PAGE_BYTES];
        let mut server = RingServer::format(&mut region, 16, true).unwrap();
        let g = server.geometry();
        let mut disk = Strict(MemDisk::new(16, "flip"));
        disk.0.read_only = true;
        disk.0.data[7 * SECTOR_BYTES..8 * SECTOR_BYTES].fill(0x5a);
        // Two good requests: read sector 7 into the data area's second
        // sector, and GET_ID into its start.
        let at = g.slot_at(0);
        region[at + slot::OP] = Op::Read as u8;
        put_u64(&mut region, at + slot::SECTOR, 7);
        put_u32(&mut region, at + slot::DATA_OFFSET, SECTOR_BYTES as u32);
        put_u32(&mut region, at + slot::DATA_LEN, SECTOR_BYTES as u32);
        let at = g.slot_at(1);
        region[at + slot::OP] = Op::GetId as u8;
        put_u32(&mut region, at + slot::DATA_OFFSET, 0);
        put_u32(&mut region, at + slot::DATA_LEN, ID_BYTES as u32);
        put_u32(&mut region, hdr::REQ_PROD, 2);
        let mut flipping =
            Flipping { bytes: core::cell::RefCell::new(region), geometry: g, slot_reads: core::cell::Cell::new(0) };
        let mut bounce = vec![0u8; SECTOR_BYTES];
        // `Strict` fails the test if a flipped field reached the disk.
        assert_eq!(server.serve(&mut flipping, &mut disk, &mut bounce), Ok(2));
        assert_eq!(flipping.slot_reads.get(), 2, "each slot is read exactly once");
        let region = flipping.bytes.into_inner();
        for i in 0..2 {
            assert_eq!(Status::from_u8(region[g.slot_at(i) + slot::STATUS]), Some(Status::Ok), "request {i}");
        }
        assert!(region[g.data_offset + SECTOR_BYTES..][..SECTOR_BYTES].iter().all(|&b| b == 0x5a));
        assert_eq!(&region[g.data_offset..][..4], b"flip");
        assert_eq!(server.counts(), (2, 0));
    }

    /// A kick moves at most `KICK_BUDGET_BYTES`; the rest waits for the
    /// next kick, and `req_cons` says how far the server got.
    #[test]
    fn one_kick_does_a_bounded_amount_of_work() {
        let mut region = vec![0u8; DEFAULT_RING_PAGES * PAGE_BYTES];
        let mut server = RingServer::format(&mut region, 1024, false).unwrap();
        let g = server.geometry();
        let mut disk = MemDisk::new(1024, "budget");
        for i in 0..SLOTS {
            let at = g.slot_at(i);
            region[at + slot::OP] = Op::Read as u8;
            put_u64(&mut region, at + slot::SECTOR, 0);
            put_u32(&mut region, at + slot::DATA_OFFSET, 0);
            put_u32(&mut region, at + slot::DATA_LEN, g.data_bytes as u32);
        }
        put_u32(&mut region, hdr::REQ_PROD, SLOTS);
        let mut bounce = vec![0u8; g.data_bytes];
        let per_kick = KICK_BUDGET_BYTES.div_ceil(g.data_bytes) as u32;
        let mut kicks = 0;
        let mut done = 0;
        while done < SLOTS {
            let n = server.serve(&mut region, &mut disk, &mut bounce).unwrap();
            assert!(n >= 1 && n <= per_kick, "a kick did {n} requests of {} bytes", g.data_bytes);
            done += n;
            kicks += 1;
            assert_eq!(get_u32(&region, hdr::REQ_CONS), done);
        }
        assert_eq!(kicks, SLOTS.div_ceil(per_kick));
        assert_eq!(server.counts(), (u64::from(SLOTS), 0));
    }
}
