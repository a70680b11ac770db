//! The split virtqueue, device side (virtio 1.2 §2.7).
//!
//! The guest's driver lays out three areas in its RAM (the descriptor table,
//! the available ring and the used ring) and the transport tells the device
//! where they are (the public fields of [`Queue`]). A device pops the
//! descriptor chains the driver made available ([`Queue::pop`]), reads and
//! writes the buffers they name ([`DescriptorChain::read_at`],
//! [`DescriptorChain::write_at`]), hands them back ([`Queue::add_used`]) and
//! asks whether the driver wants an interrupt for that
//! ([`Queue::needs_notification`]).
//!
//! Everything in those areas is written by the guest and is hostile. A chain
//! is walked and checked once, in `pop`, and devices see only checked
//! [`Descriptor`]s: inside guest RAM, device-readable before device-writable,
//! at most 2^32 - 1 bytes in all. Malformed input comes back as a typed
//! [`QueueError`] (the device then sets DEVICE_NEEDS_RESET, §2.1.2), never a
//! panic, and every walk is bounded by the queue size or, inside an indirect
//! table, by the table's length, so a loop cannot hang the monitor.

use alloc::vec::Vec;
use core::fmt;
use core::sync::atomic::{Ordering, fence};

use super::{VIRTIO_F_EVENT_IDX, VIRTIO_F_INDIRECT_DESC, feature};

/// The buffer continues in the descriptor named by `next` (§2.7.5).
pub const VIRTQ_DESC_F_NEXT: u16 = 1;
/// The buffer is device-writable (otherwise device-readable) (§2.7.5).
pub const VIRTQ_DESC_F_WRITE: u16 = 2;
/// The buffer holds a table of descriptors (§2.7.5.3).
pub const VIRTQ_DESC_F_INDIRECT: u16 = 4;
/// `avail.flags`: the driver wants no used-buffer interrupts (§2.7.7).
pub const VIRTQ_AVAIL_F_NO_INTERRUPT: u16 = 1;
/// `used.flags`: the device wants no available-buffer notifications (§2.7.10).
pub const VIRTQ_USED_F_NO_NOTIFY: u16 = 1;

/// The largest split queue (§2.7: "Queue Size ... maximum 32768").
pub const MAX_QUEUE_SIZE: u16 = 32768;
/// One `struct virtq_desc`: le64 addr, le32 len, le16 flags, le16 next.
pub const DESCRIPTOR_SIZE: u64 = 16;
/// Indirect tables may hold this many descriptors even in a smaller queue.
/// §2.7.5.3.1 bounds a chain by the queue size, but Linux sizes indirect
/// tables by its scatterlist (it only warns when a chain outgrows the ring
/// without indirect descriptors) and QEMU accepts up to 1024, so do we.
pub const MIN_INDIRECT_LIMIT: u32 = 1024;

// Offsets inside the rings (§2.7.6, §2.7.8).
const RING_IDX: u64 = 2;
const RING_ENTRIES: u64 = 4;
const AVAIL_ENTRY_SIZE: u64 = 2;
const USED_ENTRY_SIZE: u64 = 8;

/// A guest-physical range that is not guest RAM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemError {
    pub gpa: u64,
    pub len: u64,
}

impl fmt::Display for MemError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "guest-physical range {:#x}+{:#x} is not guest RAM", self.gpa, self.len)
    }
}

/// Guest RAM by guest-physical address, as the device sees it. The VMM
/// implements it over the guest's memory; [`VecMemory`] is one for tests.
pub trait GuestMemory {
    /// Whether `len` bytes from `gpa` are all RAM (so later reads and writes
    /// of any part of that range succeed). Must not overflow on any input.
    fn check_range(&self, gpa: u64, len: u64) -> Result<(), MemError>;
    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), MemError>;
    fn write(&mut self, gpa: u64, data: &[u8]) -> Result<(), MemError>;
}

/// Guest RAM as one `Vec` starting at guest-physical `base`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VecMemory {
    base: u64,
    bytes: Vec<u8>,
}

impl VecMemory {
    /// `size` zeroed bytes of RAM at guest-physical `base`.
    pub fn new(base: u64, size: usize) -> Self {
        Self { base, bytes: alloc::vec![0; size] }
    }

    pub fn base(&self) -> u64 {
        self.base
    }

    pub fn as_slice(&self) -> &[u8] {
        &self.bytes
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.bytes
    }

    fn offset(&self, gpa: u64, len: usize) -> Result<usize, MemError> {
        let len64 = len as u64;
        self.check_range(gpa, len64)?;
        // In range, so the offset fits the Vec's length, a usize.
        usize::try_from(gpa - self.base).map_err(|_| MemError { gpa, len: len64 })
    }
}

impl GuestMemory for VecMemory {
    fn check_range(&self, gpa: u64, len: u64) -> Result<(), MemError> {
        let err = MemError { gpa, len };
        let start = gpa.checked_sub(self.base).ok_or(err)?;
        let end = start.checked_add(len).ok_or(err)?;
        if end > self.bytes.len() as u64 { Err(err) } else { Ok(()) }
    }

    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), MemError> {
        let at = self.offset(gpa, buf.len())?;
        buf.copy_from_slice(&self.bytes[at..at + buf.len()]);
        Ok(())
    }

    fn write(&mut self, gpa: u64, data: &[u8]) -> Result<(), MemError> {
        let at = self.offset(gpa, data.len())?;
        self.bytes[at..at + data.len()].copy_from_slice(data);
        Ok(())
    }
}

/// Which area of a queue a configuration error is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueArea {
    DescriptorTable,
    AvailRing,
    UsedRing,
}

/// Why a queue or a descriptor chain was refused. Apart from
/// [`QueueError::UsedHeadOutOfRange`] (a device bug) each names a guest
/// driver's violation of §2.7.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueError {
    /// A ring or descriptor-table access fell outside guest RAM.
    Memory(MemError),
    /// The queue size is zero, not a power of two or above the device's
    /// maximum (§2.7, §4.1.4.3.2).
    InvalidSize { size: u16, max: u16 },
    /// An area is not aligned as §2.7 requires (16, 2, 4 bytes).
    Misaligned { area: QueueArea, addr: u64 },
    /// An area does not lie inside guest RAM.
    AreaOutsideMemory { area: QueueArea, addr: u64, len: u64 },
    /// The driver moved `avail.idx` more than a queue's worth past the
    /// device (§2.7.6: it can only have made `size` chains available).
    AvailIndexTooFar { avail_idx: u16, next_avail: u16, size: u16 },
    /// An available ring entry names no descriptor of the table.
    HeadOutOfRange { head: u16, size: u16 },
    /// A descriptor's `next` lies outside its table (the queue, or the
    /// indirect table of `limit` entries).
    NextOutOfRange { next: u16, limit: u32 },
    /// A chain is longer than its table allows, so it loops (§2.7.5.2,
    /// §2.7.5.3.1).
    ChainTooLong { limit: u32 },
    /// A buffer lies (or wraps) outside guest RAM.
    DescriptorOutOfRange { addr: u64, len: u32 },
    /// VIRTQ_DESC_F_INDIRECT without VIRTIO_F_INDIRECT_DESC (§2.7.5.3.1).
    IndirectNotNegotiated,
    /// VIRTQ_DESC_F_INDIRECT together with VIRTQ_DESC_F_NEXT (§2.7.5.3.1).
    IndirectWithNext,
    /// VIRTQ_DESC_F_INDIRECT inside an indirect table (§2.7.5.3.1).
    NestedIndirect,
    /// An indirect table that is empty, not a whole number of descriptors,
    /// or longer than `max(queue size, MIN_INDIRECT_LIMIT)` entries.
    IndirectTableLength { len: u32 },
    /// A device-readable buffer after a device-writable one (§2.7.4.2).
    ReadableAfterWritable,
    /// The buffers add up to 2^32 bytes or more (§2.7.5.2), more than a used
    /// element's `len` can report.
    ChainTooLarge,
    /// The device returned a head index the queue does not have.
    UsedHeadOutOfRange { head: u16, size: u16 },
}

impl From<MemError> for QueueError {
    fn from(e: MemError) -> Self {
        QueueError::Memory(e)
    }
}

impl fmt::Display for QueueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            QueueError::Memory(e) => write!(f, "virtqueue: {e}"),
            QueueError::InvalidSize { size, max } => {
                write!(f, "virtqueue: size {size} is not a power of two in 1..={max}")
            }
            QueueError::Misaligned { area, addr } => write!(f, "virtqueue: {area:?} at {addr:#x} is misaligned"),
            QueueError::AreaOutsideMemory { area, addr, len } => {
                write!(f, "virtqueue: {area:?} at {addr:#x}+{len:#x} is outside guest RAM")
            }
            QueueError::AvailIndexTooFar { avail_idx, next_avail, size } => {
                write!(f, "virtqueue: avail.idx {avail_idx} is more than the queue size {size} past {next_avail}")
            }
            QueueError::HeadOutOfRange { head, size } => {
                write!(f, "virtqueue: available head {head} is outside a queue of {size}")
            }
            QueueError::NextOutOfRange { next, limit } => {
                write!(f, "virtqueue: descriptor next {next} is outside a table of {limit}")
            }
            QueueError::ChainTooLong { limit } => {
                write!(f, "virtqueue: descriptor chain longer than {limit} (a loop)")
            }
            QueueError::DescriptorOutOfRange { addr, len } => {
                write!(f, "virtqueue: buffer {addr:#x}+{len:#x} is outside guest RAM")
            }
            QueueError::IndirectNotNegotiated => {
                write!(f, "virtqueue: indirect descriptor without VIRTIO_F_INDIRECT_DESC")
            }
            QueueError::IndirectWithNext => write!(f, "virtqueue: indirect descriptor with F_NEXT"),
            QueueError::NestedIndirect => write!(f, "virtqueue: indirect descriptor inside an indirect table"),
            QueueError::IndirectTableLength { len } => {
                write!(f, "virtqueue: indirect table of {len} bytes")
            }
            QueueError::ReadableAfterWritable => {
                write!(f, "virtqueue: device-readable buffer after a device-writable one")
            }
            QueueError::ChainTooLarge => write!(f, "virtqueue: descriptor chain of 2^32 bytes or more"),
            QueueError::UsedHeadOutOfRange { head, size } => {
                write!(f, "virtqueue: used head {head} is outside a queue of {size}")
            }
        }
    }
}

/// One checked buffer of a chain: `len` bytes of guest RAM from `addr`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Descriptor {
    pub addr: u64,
    pub len: u32,
    /// Device-writable (VIRTQ_DESC_F_WRITE); otherwise device-readable.
    pub writable: bool,
}

/// A checked descriptor chain popped from a queue: its buffers, readable
/// ones first, and the head index to return with [`Queue::add_used`].
///
/// Devices must not assume how a request is framed into buffers (§2.7.4), so
/// [`read_at`](Self::read_at) and [`write_at`](Self::write_at) treat the
/// readable and the writable buffers each as one byte stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DescriptorChain {
    head: u16,
    descriptors: Vec<Descriptor>,
    first_writable: usize,
    readable_len: u32,
    writable_len: u32,
}

impl DescriptorChain {
    /// The index to hand back in the used ring.
    pub fn head_index(&self) -> u16 {
        self.head
    }

    pub fn iter(&self) -> core::slice::Iter<'_, Descriptor> {
        self.descriptors.iter()
    }

    pub fn descriptors(&self) -> &[Descriptor] {
        &self.descriptors
    }

    pub fn readable(&self) -> &[Descriptor] {
        &self.descriptors[..self.first_writable]
    }

    pub fn writable(&self) -> &[Descriptor] {
        &self.descriptors[self.first_writable..]
    }

    /// Frees the room the walk left past the descriptors (for a chain a
    /// device keeps while its request is in flight).
    pub fn shrink_to_fit(&mut self) {
        self.descriptors.shrink_to_fit();
    }

    /// Total bytes of the device-readable buffers.
    pub fn readable_len(&self) -> u32 {
        self.readable_len
    }

    /// Total bytes of the device-writable buffers.
    pub fn writable_len(&self) -> u32 {
        self.writable_len
    }

    /// Reads the readable stream from byte `offset` into `buf`; returns how
    /// many bytes it had (fewer than `buf.len()` where the stream ends).
    pub fn read_at(&self, mem: &dyn GuestMemory, offset: u64, buf: &mut [u8]) -> Result<usize, MemError> {
        for_each_segment(self.readable(), offset, buf.len(), |gpa, range| mem.read(gpa, &mut buf[range]))
    }

    /// Writes `data` into the writable stream from byte `offset`; returns how
    /// many bytes fitted.
    pub fn write_at(&self, mem: &mut dyn GuestMemory, offset: u64, data: &[u8]) -> Result<usize, MemError> {
        for_each_segment(self.writable(), offset, data.len(), |gpa, range| mem.write(gpa, &data[range]))
    }
}

impl<'a> IntoIterator for &'a DescriptorChain {
    type Item = &'a Descriptor;
    type IntoIter = core::slice::Iter<'a, Descriptor>;
    fn into_iter(self) -> Self::IntoIter {
        self.descriptors.iter()
    }
}

/// Calls `f` for each piece of `descs` (as one stream) that covers
/// `offset..offset + len`, with the piece's address and its place in the
/// caller's buffer; returns the bytes covered.
fn for_each_segment(
    descs: &[Descriptor],
    offset: u64,
    len: usize,
    mut f: impl FnMut(u64, core::ops::Range<usize>) -> Result<(), MemError>,
) -> Result<usize, MemError> {
    let mut skip = offset;
    let mut done = 0usize;
    for d in descs {
        if done == len {
            break;
        }
        let dlen = u64::from(d.len);
        if skip >= dlen {
            skip -= dlen;
            continue;
        }
        let n = usize::try_from(dlen - skip).unwrap_or(usize::MAX).min(len - done);
        // `pop` checked that addr + len does not overflow, and skip < len.
        f(d.addr + skip, done..done + n)?;
        done += n;
        skip = 0;
    }
    Ok(done)
}

/// A descriptor as the guest wrote it.
#[derive(Clone, Copy, Debug)]
struct RawDescriptor {
    addr: u64,
    len: u32,
    flags: u16,
    next: u16,
}

fn read_raw(mem: &dyn GuestMemory, gpa: u64) -> Result<RawDescriptor, QueueError> {
    let mut b = [0u8; DESCRIPTOR_SIZE as usize];
    mem.read(gpa, &mut b)?;
    Ok(RawDescriptor {
        addr: u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]),
        len: u32::from_le_bytes([b[8], b[9], b[10], b[11]]),
        flags: u16::from_le_bytes([b[12], b[13]]),
        next: u16::from_le_bytes([b[14], b[15]]),
    })
}

fn read_u16(mem: &dyn GuestMemory, gpa: u64) -> Result<u16, MemError> {
    let mut b = [0u8; 2];
    mem.read(gpa, &mut b)?;
    Ok(u16::from_le_bytes(b))
}

fn write_u16(mem: &mut dyn GuestMemory, gpa: u64, v: u16) -> Result<(), MemError> {
    mem.write(gpa, &v.to_le_bytes())
}

/// `base + off`, or the error of an access there (the area would wrap).
fn at(base: u64, off: u64, len: u64) -> Result<u64, MemError> {
    base.checked_add(off).ok_or(MemError { gpa: base, len: off.saturating_add(len) })
}

/// The event-index test (§2.7.7.2, Linux's `vring_need_event`): has the used
/// index moved from `old` to `new` past the driver's `event`?
pub fn vring_need_event(event: u16, new: u16, old: u16) -> bool {
    new.wrapping_sub(event).wrapping_sub(1) < new.wrapping_sub(old)
}

/// The accumulating state of one chain walk.
struct ChainBuilder {
    descriptors: Vec<Descriptor>,
    first_writable: Option<usize>,
    readable_len: u64,
    writable_len: u64,
}

impl ChainBuilder {
    fn new() -> Self {
        Self { descriptors: Vec::new(), first_writable: None, readable_len: 0, writable_len: 0 }
    }

    fn push(&mut self, mem: &dyn GuestMemory, d: RawDescriptor) -> Result<(), QueueError> {
        let bad = QueueError::DescriptorOutOfRange { addr: d.addr, len: d.len };
        d.addr.checked_add(u64::from(d.len)).ok_or(bad)?;
        mem.check_range(d.addr, u64::from(d.len)).map_err(|_| bad)?;
        let writable = d.flags & VIRTQ_DESC_F_WRITE != 0;
        if writable {
            self.first_writable.get_or_insert(self.descriptors.len());
            self.writable_len += u64::from(d.len);
        } else if self.first_writable.is_some() {
            // §2.7.4.2: readable elements come before writable ones.
            return Err(QueueError::ReadableAfterWritable);
        } else {
            self.readable_len += u64::from(d.len);
        }
        if self.readable_len + self.writable_len > u64::from(u32::MAX) {
            return Err(QueueError::ChainTooLarge);
        }
        self.descriptors.push(Descriptor { addr: d.addr, len: d.len, writable });
        Ok(())
    }

    fn finish(self, head: u16) -> DescriptorChain {
        DescriptorChain {
            head,
            first_writable: self.first_writable.unwrap_or(self.descriptors.len()),
            // Both fit a u32: push keeps their sum below 2^32.
            readable_len: self.readable_len as u32,
            writable_len: self.writable_len as u32,
            descriptors: self.descriptors,
        }
    }
}

/// One split virtqueue's device-side state. The transport fills the public
/// configuration fields as the driver writes them (`size`, the three area
/// addresses, `ready`) and sets the negotiated ring features with
/// [`Queue::set_features`]; [`Queue::validate`] checks the result when the
/// driver sets DRIVER_OK.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Queue {
    /// The largest size the device supports.
    pub max_size: u16,
    /// The size the driver chose (§4.1.4.3: it may lower it).
    pub size: u16,
    pub ready: bool,
    pub desc_table: u64,
    pub avail_ring: u64,
    pub used_ring: u64,
    /// The next available-ring index the device will read (free-running).
    pub next_avail: u16,
    /// The next used-ring index the device will write (free-running).
    pub next_used: u16,
    /// VIRTIO_F_EVENT_IDX was negotiated (§2.7.7, §2.7.10).
    pub event_idx_enabled: bool,
    /// VIRTIO_F_INDIRECT_DESC was negotiated (§2.7.5.3).
    pub indirect_enabled: bool,
    /// Used elements added since the last `needs_notification`.
    num_added: u32,
    /// Chains `pop` may still hand out in this pass (one notification's
    /// worth: the queue size), and whether it stopped with more waiting.
    pass_left: u16,
    deferred: bool,
}

impl Queue {
    pub fn new(max_size: u16) -> Self {
        Self {
            max_size,
            size: max_size,
            ready: false,
            desc_table: 0,
            avail_ring: 0,
            used_ring: 0,
            next_avail: 0,
            next_used: 0,
            event_idx_enabled: false,
            indirect_enabled: false,
            num_added: 0,
            pass_left: max_size,
            deferred: false,
        }
    }

    /// Starts a pass over the queue (a driver notification): `pop` hands
    /// out at most the queue's size of chains before it returns `None`, so
    /// a driver that keeps making buffers available cannot keep the device
    /// busy for ever; what is left waits for [`Self::deferred`]'s next pass.
    pub fn start_pass(&mut self) {
        self.pass_left = self.size;
        self.deferred = false;
    }

    /// Whether the last pass stopped at its bound with chains still
    /// available: run another pass later.
    pub fn deferred(&self) -> bool {
        self.deferred
    }

    /// Ends this pass early, as if it had reached its bound: a device that
    /// cannot take more chains now (virtio-blk with a queue's worth of
    /// requests in flight) leaves the rest for a later pass.
    pub fn defer(&mut self) {
        self.pass_left = 0;
        self.deferred = true;
    }

    /// Whether the driver has made chains available that `pop` has not
    /// taken yet.
    pub fn has_available(&self, mem: &dyn GuestMemory) -> Result<bool, QueueError> {
        if !self.ready || self.size == 0 {
            return Ok(false);
        }
        Ok(read_u16(mem, at(self.avail_ring, RING_IDX, 2)?)? != self.next_avail)
    }

    /// Back to the state after `new` (device reset, §2.4).
    pub fn reset(&mut self) {
        *self = Self::new(self.max_size);
    }

    /// Takes the ring features from the negotiated feature bits.
    pub fn set_features(&mut self, acked: u64) {
        self.event_idx_enabled = acked & feature(VIRTIO_F_EVENT_IDX) != 0;
        self.indirect_enabled = acked & feature(VIRTIO_F_INDIRECT_DESC) != 0;
    }

    /// Checks the driver's configuration: a power-of-two size no larger
    /// than `max_size`, and each area aligned and inside guest RAM (§2.7,
    /// "Virtqueue Part / Alignment / Size").
    pub fn validate(&self, mem: &dyn GuestMemory) -> Result<(), QueueError> {
        let size = self.size;
        if size == 0 || !size.is_power_of_two() || size > self.max_size || size > MAX_QUEUE_SIZE {
            return Err(QueueError::InvalidSize { size, max: self.max_size.min(MAX_QUEUE_SIZE) });
        }
        let n = u64::from(size);
        let areas = [
            (QueueArea::DescriptorTable, self.desc_table, 16, DESCRIPTOR_SIZE * n),
            (QueueArea::AvailRing, self.avail_ring, 2, 6 + AVAIL_ENTRY_SIZE * n),
            (QueueArea::UsedRing, self.used_ring, 4, 6 + USED_ENTRY_SIZE * n),
        ];
        for (area, addr, align, len) in areas {
            if addr % align != 0 {
                return Err(QueueError::Misaligned { area, addr });
            }
            if mem.check_range(addr, len).is_err() {
                return Err(QueueError::AreaOutsideMemory { area, addr, len });
            }
        }
        Ok(())
    }

    /// Pops the next available chain, walked and checked, or `None` when the
    /// driver has made nothing new available (or the queue is not ready).
    ///
    /// A chain that fails a check is consumed all the same (`next_avail`
    /// moves past it) and reported as an error; the device is then broken
    /// and should set DEVICE_NEEDS_RESET (§2.1.2).
    pub fn pop(&mut self, mem: &mut dyn GuestMemory) -> Result<Option<DescriptorChain>, QueueError> {
        if !self.ready || self.size == 0 {
            return Ok(None);
        }
        let size = self.size;
        // Order our earlier avail_event store before the idx load (the
        // store/load pair of §2.7.10's event-index protocol).
        fence(Ordering::SeqCst);
        let avail_idx = read_u16(mem, at(self.avail_ring, RING_IDX, 2)?)?;
        let pending = avail_idx.wrapping_sub(self.next_avail);
        if pending == 0 {
            return Ok(None);
        }
        if pending > size {
            return Err(QueueError::AvailIndexTooFar { avail_idx, next_avail: self.next_avail, size });
        }
        if self.pass_left == 0 {
            self.deferred = true;
            return Ok(None);
        }
        self.pass_left -= 1;
        // The ring entries and descriptors were written before avail.idx
        // (§2.7.13): read them only after it.
        fence(Ordering::Acquire);
        let slot = u64::from(self.next_avail % size);
        let head = read_u16(mem, at(self.avail_ring, RING_ENTRIES + AVAIL_ENTRY_SIZE * slot, 2)?)?;
        self.next_avail = self.next_avail.wrapping_add(1);
        if self.event_idx_enabled {
            // §2.7.10: ask to be notified once the driver makes anything
            // available past what we have taken.
            let avail_event = at(self.used_ring, RING_ENTRIES + USED_ENTRY_SIZE * u64::from(size), 2)?;
            write_u16(mem, avail_event, self.next_avail)?;
        }
        if head >= size {
            return Err(QueueError::HeadOutOfRange { head, size });
        }
        self.walk(mem, head).map(Some)
    }

    /// Walks the chain from `head`: at most `size` descriptors of the table,
    /// the last of which may refer to one indirect table (§2.7.5.3.2).
    fn walk(&self, mem: &dyn GuestMemory, head: u16) -> Result<DescriptorChain, QueueError> {
        let limit = u32::from(self.size);
        let mut chain = ChainBuilder::new();
        let mut index = head;
        let mut steps = 0u32;
        loop {
            if steps == limit {
                return Err(QueueError::ChainTooLong { limit });
            }
            steps += 1;
            let d = read_raw(mem, at(self.desc_table, DESCRIPTOR_SIZE * u64::from(index), DESCRIPTOR_SIZE)?)?;
            if d.flags & VIRTQ_DESC_F_INDIRECT != 0 {
                if !self.indirect_enabled {
                    return Err(QueueError::IndirectNotNegotiated);
                }
                if d.flags & VIRTQ_DESC_F_NEXT != 0 {
                    return Err(QueueError::IndirectWithNext);
                }
                self.walk_indirect(mem, d, &mut chain)?;
                break;
            }
            chain.push(mem, d)?;
            if d.flags & VIRTQ_DESC_F_NEXT == 0 {
                break;
            }
            if d.next >= self.size {
                return Err(QueueError::NextOutOfRange { next: d.next, limit });
            }
            index = d.next;
        }
        Ok(chain.finish(head))
    }

    /// Walks the indirect table `d` refers to: from its first entry, at most
    /// as many descriptors as it holds (§2.7.5.3). Its own WRITE flag is
    /// ignored (§2.7.5.3.2).
    fn walk_indirect(
        &self,
        mem: &dyn GuestMemory,
        d: RawDescriptor,
        chain: &mut ChainBuilder,
    ) -> Result<(), QueueError> {
        let max_entries = u32::from(self.size).max(MIN_INDIRECT_LIMIT);
        let entries = d.len / DESCRIPTOR_SIZE as u32;
        if d.len == 0 || u64::from(d.len) % DESCRIPTOR_SIZE != 0 || entries > max_entries {
            return Err(QueueError::IndirectTableLength { len: d.len });
        }
        let bad = QueueError::DescriptorOutOfRange { addr: d.addr, len: d.len };
        d.addr.checked_add(u64::from(d.len)).ok_or(bad)?;
        mem.check_range(d.addr, u64::from(d.len)).map_err(|_| bad)?;
        let mut index = 0u16;
        let mut steps = 0u32;
        loop {
            if steps == entries {
                return Err(QueueError::ChainTooLong { limit: entries });
            }
            steps += 1;
            // index < entries, so this stays inside the checked table.
            let e = read_raw(mem, d.addr + DESCRIPTOR_SIZE * u64::from(index))?;
            if e.flags & VIRTQ_DESC_F_INDIRECT != 0 {
                return Err(QueueError::NestedIndirect);
            }
            chain.push(mem, e)?;
            if e.flags & VIRTQ_DESC_F_NEXT == 0 {
                return Ok(());
            }
            if u32::from(e.next) >= entries {
                return Err(QueueError::NextOutOfRange { next: e.next, limit: entries });
            }
            index = e.next;
        }
    }

    /// Returns the chain with head `head` to the driver, `len` bytes written
    /// into its device-writable buffers (§2.7.8, §2.7.14).
    pub fn add_used(&mut self, mem: &mut dyn GuestMemory, head: u16, len: u32) -> Result<(), QueueError> {
        let size = self.size;
        if head >= size {
            return Err(QueueError::UsedHeadOutOfRange { head, size });
        }
        let slot = u64::from(self.next_used % size);
        let mut elem = [0u8; USED_ENTRY_SIZE as usize];
        elem[..4].copy_from_slice(&u32::from(head).to_le_bytes());
        elem[4..].copy_from_slice(&len.to_le_bytes());
        mem.write(at(self.used_ring, RING_ENTRIES + USED_ENTRY_SIZE * slot, USED_ENTRY_SIZE)?, &elem)?;
        // The element must be visible before the index that publishes it
        // (§2.7.8.2).
        fence(Ordering::Release);
        let next = self.next_used.wrapping_add(1);
        write_u16(mem, at(self.used_ring, RING_IDX, 2)?, next)?;
        self.next_used = next;
        self.num_added = self.num_added.saturating_add(1);
        Ok(())
    }

    /// Returns several chains at once, `(head, len)` each, published by one
    /// update of the used index after all their elements are written: the
    /// driver sees all of them or none (a mergeable receive's buffers,
    /// §5.1.6.4.2: "at least num_buffers are observed by driver as used").
    pub fn add_used_together(&mut self, mem: &mut dyn GuestMemory, used: &[(u16, u32)]) -> Result<(), QueueError> {
        let size = self.size;
        if let Some(&(head, _)) = used.iter().find(|(h, _)| *h >= size) {
            return Err(QueueError::UsedHeadOutOfRange { head, size });
        }
        let mut next = self.next_used;
        for &(head, len) in used {
            let slot = u64::from(next % size);
            let mut elem = [0u8; USED_ENTRY_SIZE as usize];
            elem[..4].copy_from_slice(&u32::from(head).to_le_bytes());
            elem[4..].copy_from_slice(&len.to_le_bytes());
            mem.write(at(self.used_ring, RING_ENTRIES + USED_ENTRY_SIZE * slot, USED_ENTRY_SIZE)?, &elem)?;
            next = next.wrapping_add(1);
        }
        fence(Ordering::Release);
        write_u16(mem, at(self.used_ring, RING_IDX, 2)?, next)?;
        self.next_used = next;
        self.num_added = self.num_added.saturating_add(used.len() as u32);
        Ok(())
    }

    /// Whether the driver wants an interrupt for the used elements added
    /// since the last call: with VIRTIO_F_EVENT_IDX, when the used index has
    /// passed the driver's `used_event` (§2.7.7.2, `vring_need_event`);
    /// otherwise unless the driver set VIRTQ_AVAIL_F_NO_INTERRUPT. If the
    /// ring cannot be read it says yes: a spurious interrupt is harmless.
    pub fn needs_notification(&mut self, mem: &dyn GuestMemory) -> bool {
        let added = core::mem::take(&mut self.num_added);
        if added == 0 || self.size == 0 {
            return false;
        }
        // Our used.idx store must be ordered before the driver's flag or
        // used_event load (the store/load pair of §2.7.7).
        fence(Ordering::SeqCst);
        if self.event_idx_enabled {
            if added > u32::from(u16::MAX) {
                return true;
            }
            let used_event = at(self.avail_ring, RING_ENTRIES + AVAIL_ENTRY_SIZE * u64::from(self.size), 2)
                .and_then(|gpa| read_u16(mem, gpa));
            let Ok(event) = used_event else { return true };
            let new = self.next_used;
            vring_need_event(event, new, new.wrapping_sub(added as u16))
        } else {
            match read_u16(mem, self.avail_ring) {
                Ok(flags) => flags & VIRTQ_AVAIL_F_NO_INTERRUPT == 0,
                Err(_) => true,
            }
        }
    }
}

#[cfg(test)]
mod tests;
