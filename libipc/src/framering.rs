//! The frame ring: how a VMM's virtio-net and netd move Ethernet frames
//! through one shared region, with IPC carrying only doorbells.
//!
//! ```text
//!  vmm-server                                   netd
//!   guest TX ─▶ Producer(ToNetd).push ─ doorbell ─▶ Consumer(ToNetd).pop ─▶ switch
//!   guest RX ◀─ Consumer(ToVmm).pop  ◀─ doorbell ─ Producer(ToVmm).push ◀─ switch
//! ```
//!
//! netd creates the region (a frame it hands over when a VMM attaches to a
//! VNIC) and formats it; both sides map it. Two single-producer,
//! single-consumer rings of fixed-size slots, one per direction. Layout,
//! integers little-endian:
//!
//! | bytes | what |
//! |---|---|
//! | 0..32 | header: magic `AFRM`, version, slots per ring, slot bytes, data offset, region bytes |
//! | 64, 128, 192, 256 | `to_netd.prod` (VMM), `to_netd.cons` (netd), `to_vmm.prod` (netd), `to_vmm.cons` (VMM), each on its own cache line |
//! | 512.. | `slots` descriptors of the ToNetd ring, then of the ToVmm ring: 8 bytes, the frame's length (u32) and flags (u32, 0) |
//! | page 1.. | the ToNetd ring's slots, then the ToVmm ring's, `slot bytes` each |
//!
//! A slot's buffer is at a place fixed by the geometry each side keeps for
//! itself, never an offset read from the region; a descriptor holds only
//! the length. Both sides treat the region as hostile, as the block ring's
//! server does ([`crate::blkring`]): each keeps its own copy of its index,
//! reads the other side's index once per batch and refuses it when it is
//! more than a ring ahead (or behind), reads each descriptor once and
//! checks its length (0 or over the slot is *malformed*: the slot is
//! skipped and counted), and copies the frame out before anyone looks at
//! it. A broken peer costs its own frames, never a panic or a frame of
//! another ring.
//!
//! The doorbell is a notification (a bit: one signal covers a batch). The
//! producer publishes its index after the slots it filled (a release fence
//! between), the consumer reads the index before the slots (an acquire
//! fence); on Alcove the region is `alcove_rt::SharedMemory` (volatile
//! copies), so the fences order them for the other CPU.
#![forbid(unsafe_code)]

use core::fmt;
use core::sync::atomic::{Ordering, fence};

pub use crate::blkring::RingRegion;

/// `AFRM`.
pub const MAGIC: u32 = u32::from_le_bytes(*b"AFRM");
/// The layout version this module speaks.
pub const VERSION: u32 = 1;
/// The page size the layout is built on.
pub const PAGE_BYTES: usize = 4096;
/// Bytes of a slot: an Ethernet frame of 1500 bytes of payload with a VLAN
/// tag (1518), rounded up.
pub const SLOT_BYTES: usize = 2048;
/// Slots per ring in a region netd makes.
pub const SLOTS: u32 = 64;
/// Where the descriptors start.
pub const DESC_OFFSET: usize = 512;
/// Bytes of one descriptor.
pub const DESC_BYTES: usize = 8;
/// Most slots per ring (both rings' descriptors fit the header page).
pub const MAX_SLOTS: u32 = ((PAGE_BYTES - DESC_OFFSET) / (2 * DESC_BYTES)) as u32;

mod hdr {
    pub const MAGIC: usize = 0;
    pub const VERSION: usize = 4;
    pub const SLOTS: usize = 8;
    pub const SLOT_BYTES: usize = 12;
    pub const DATA_OFFSET: usize = 16;
    pub const REGION_BYTES: usize = 20;
}

/// The ring's direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// The guest's transmit: the VMM produces, netd consumes.
    ToNetd,
    /// The guest's receive: netd produces, the VMM consumes.
    ToVmm,
}

impl Direction {
    const fn prod_at(self) -> usize {
        match self {
            Direction::ToNetd => 64,
            Direction::ToVmm => 192,
        }
    }
    const fn cons_at(self) -> usize {
        self.prod_at() + 64
    }
    const fn index(self) -> usize {
        match self {
            Direction::ToNetd => 0,
            Direction::ToVmm => 1,
        }
    }
}

/// The shape of a region: both sides keep their own copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// Slots per ring.
    pub slots: u32,
    /// Bytes per slot (the largest frame).
    pub slot_bytes: usize,
}

impl Geometry {
    /// `slots` slots per ring of [`SLOT_BYTES`].
    pub fn new(slots: u32) -> Result<Self, FrameRingError> {
        if !(1..=MAX_SLOTS).contains(&slots) {
            return Err(FrameRingError::BadHeader { field: "slot count", value: u64::from(slots) });
        }
        Ok(Self { slots, slot_bytes: SLOT_BYTES })
    }

    /// Bytes the region needs.
    pub const fn region_bytes(&self) -> usize {
        PAGE_BYTES + 2 * self.slots as usize * self.slot_bytes
    }

    /// Pages the region needs.
    pub const fn region_pages(&self) -> usize {
        self.region_bytes().div_ceil(PAGE_BYTES)
    }

    fn desc_at(&self, dir: Direction, index: u32) -> usize {
        DESC_OFFSET + (dir.index() * self.slots as usize + (index % self.slots) as usize) * DESC_BYTES
    }

    fn slot_at(&self, dir: Direction, index: u32) -> usize {
        PAGE_BYTES + (dir.index() * self.slots as usize + (index % self.slots) as usize) * self.slot_bytes
    }

    /// Formats `region` (netd's side): header, zero indices and descriptors.
    pub fn format(&self, region: &mut dyn RingRegion) -> Result<(), FrameRingError> {
        if region.len() < self.region_bytes() {
            return Err(FrameRingError::RegionTooSmall { bytes: region.len(), need: self.region_bytes() });
        }
        let mut page = [0u8; PAGE_BYTES];
        let mut put = |at: usize, v: u32| page[at..at + 4].copy_from_slice(&v.to_le_bytes());
        put(hdr::MAGIC, MAGIC);
        put(hdr::VERSION, VERSION);
        put(hdr::SLOTS, self.slots);
        put(hdr::SLOT_BYTES, self.slot_bytes as u32);
        put(hdr::DATA_OFFSET, PAGE_BYTES as u32);
        put(hdr::REGION_BYTES, self.region_bytes() as u32);
        region.write(0, &page);
        Ok(())
    }

    /// Reads and checks the header netd wrote (the VMM's side): the
    /// region must hold what the header claims.
    pub fn from_header(region: &dyn RingRegion) -> Result<Self, FrameRingError> {
        if region.len() < PAGE_BYTES {
            return Err(FrameRingError::RegionTooSmall { bytes: region.len(), need: PAGE_BYTES });
        }
        let mut h = [0u8; 32];
        region.read(0, &mut h);
        let get = |at: usize| u32::from_le_bytes([h[at], h[at + 1], h[at + 2], h[at + 3]]);
        let check = |field: &'static str, at: usize, want: u32| {
            let v = get(at);
            if v == want { Ok(()) } else { Err(FrameRingError::BadHeader { field, value: u64::from(v) }) }
        };
        check("magic", hdr::MAGIC, MAGIC)?;
        check("version", hdr::VERSION, VERSION)?;
        check("slot size", hdr::SLOT_BYTES, SLOT_BYTES as u32)?;
        check("data offset", hdr::DATA_OFFSET, PAGE_BYTES as u32)?;
        let g = Self::new(get(hdr::SLOTS))?;
        check("region size", hdr::REGION_BYTES, g.region_bytes() as u32)?;
        if region.len() < g.region_bytes() {
            return Err(FrameRingError::RegionTooSmall { bytes: region.len(), need: g.region_bytes() });
        }
        Ok(g)
    }
}

/// What is wrong with a region or with how the other side used it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FrameRingError {
    /// The region is shorter than the ring needs.
    #[allow(missing_docs)]
    RegionTooSmall { bytes: usize, need: usize },
    /// The header is not a frame ring's (`field` holds `value`).
    #[allow(missing_docs)]
    BadHeader { field: &'static str, value: u64 },
    /// The other side's index is more than a ring away from ours: it broke
    /// the protocol (the ring stays refused until it is reset).
    #[allow(missing_docs)]
    BadIndex { ours: u32, theirs: u32, slots: u32 },
    /// A frame to push is empty or larger than a slot.
    #[allow(missing_docs)]
    BadFrame { bytes: usize, max: usize },
}

impl fmt::Display for FrameRingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameRingError::RegionTooSmall { bytes, need } => {
                write!(f, "frame ring: region of {bytes} bytes, need at least {need}")
            }
            FrameRingError::BadHeader { field, value } => write!(f, "frame ring: header field {field} is {value:#x}"),
            FrameRingError::BadIndex { ours, theirs, slots } => {
                write!(f, "frame ring: peer index {theirs} is more than {slots} slots from ours ({ours})")
            }
            FrameRingError::BadFrame { bytes, max } => write!(f, "frame ring: frame of {bytes} bytes (1 to {max})"),
        }
    }
}

impl core::error::Error for FrameRingError {}

fn read_u32(region: &dyn RingRegion, at: usize) -> u32 {
    let mut w = [0u8; 4];
    region.read(at, &mut w);
    u32::from_le_bytes(w)
}

/// The producing side of one direction.
#[derive(Clone, Debug)]
pub struct Producer {
    geometry: Geometry,
    dir: Direction,
    prod: u32,
    /// Frames pushed.
    pub frames: u64,
    /// Times the peer's index was out of range.
    pub bad_index: u64,
}

impl Producer {
    /// The producer of `dir` on a freshly formatted region.
    pub const fn new(geometry: Geometry, dir: Direction) -> Self {
        Self::resume(geometry, dir, 0)
    }

    /// The producer of `dir` going on from index `prod` (a side that
    /// restarted and kept the region; the index it published last).
    pub const fn resume(geometry: Geometry, dir: Direction, prod: u32) -> Self {
        Self { geometry, dir, prod, frames: 0, bad_index: 0 }
    }

    /// Free slots, by the consumer's index read once; an index that no
    /// consumer could have written is an error.
    pub fn free(&mut self, region: &dyn RingRegion) -> Result<u32, FrameRingError> {
        let cons = read_u32(region, self.dir.cons_at());
        fence(Ordering::Acquire);
        let used = self.prod.wrapping_sub(cons);
        if used > self.geometry.slots {
            self.bad_index += 1;
            return Err(FrameRingError::BadIndex { ours: self.prod, theirs: cons, slots: self.geometry.slots });
        }
        Ok(self.geometry.slots - used)
    }

    /// Copies `frames` into free slots in order and publishes them; returns
    /// how many went (fewer when the ring fills). The caller rings the
    /// doorbell if any went.
    pub fn push_all<'f>(
        &mut self,
        region: &mut dyn RingRegion,
        frames: impl IntoIterator<Item = &'f [u8]>,
    ) -> Result<usize, FrameRingError> {
        let mut free = self.free(region)?;
        let mut n = 0;
        for frame in frames {
            if free == 0 {
                break;
            }
            if frame.is_empty() || frame.len() > self.geometry.slot_bytes {
                return Err(FrameRingError::BadFrame { bytes: frame.len(), max: self.geometry.slot_bytes });
            }
            let index = self.prod.wrapping_add(n as u32);
            region.write(self.geometry.slot_at(self.dir, index), frame);
            let mut desc = [0u8; DESC_BYTES];
            desc[..4].copy_from_slice(&(frame.len() as u32).to_le_bytes());
            region.write(self.geometry.desc_at(self.dir, index), &desc);
            free -= 1;
            n += 1;
        }
        if n > 0 {
            self.prod = self.prod.wrapping_add(n as u32);
            fence(Ordering::Release);
            region.write(self.dir.prod_at(), &self.prod.to_le_bytes());
            self.frames += n as u64;
        }
        Ok(n)
    }

    /// One frame; `Ok(false)` when the ring is full.
    pub fn push(&mut self, region: &mut dyn RingRegion, frame: &[u8]) -> Result<bool, FrameRingError> {
        self.push_all(region, [frame]).map(|n| n == 1)
    }
}

/// The consuming side of one direction.
#[derive(Clone, Debug)]
pub struct Consumer {
    geometry: Geometry,
    dir: Direction,
    cons: u32,
    /// Frames taken.
    pub frames: u64,
    /// Bytes of `frames`.
    pub bytes: u64,
    /// Slots skipped for a length of 0 or over the slot size.
    pub malformed: u64,
    /// Times the peer's index was out of range.
    pub bad_index: u64,
}

impl Consumer {
    /// The consumer of `dir` on a freshly formatted region.
    pub const fn new(geometry: Geometry, dir: Direction) -> Self {
        Self::resume(geometry, dir, 0)
    }

    /// The consumer of `dir` going on from index `cons`.
    pub const fn resume(geometry: Geometry, dir: Direction, cons: u32) -> Self {
        Self { geometry, dir, cons, frames: 0, bytes: 0, malformed: 0, bad_index: 0 }
    }

    /// Takes up to `budget` frames posted since the last call, in order,
    /// handing each to `deliver` as a copy in `buf` (at least a slot long;
    /// a shorter one is an error before anything is taken), then publishes
    /// how far it got. Returns the frames delivered.
    pub fn pop_all(
        &mut self,
        region: &mut dyn RingRegion,
        buf: &mut [u8],
        budget: u32,
        mut deliver: impl FnMut(&[u8]),
    ) -> Result<u32, FrameRingError> {
        if buf.len() < self.geometry.slot_bytes {
            return Err(FrameRingError::RegionTooSmall { bytes: buf.len(), need: self.geometry.slot_bytes });
        }
        // The producer's index, read once for the batch.
        let prod = read_u32(region, self.dir.prod_at());
        fence(Ordering::Acquire);
        let pending = prod.wrapping_sub(self.cons);
        if pending > self.geometry.slots {
            self.bad_index += 1;
            return Err(FrameRingError::BadIndex { ours: self.cons, theirs: prod, slots: self.geometry.slots });
        }
        let take = pending.min(budget);
        let mut delivered = 0;
        for i in 0..take {
            let index = self.cons.wrapping_add(i);
            // The one read of the descriptor: the length below is this copy.
            let mut desc = [0u8; DESC_BYTES];
            region.read(self.geometry.desc_at(self.dir, index), &mut desc);
            let len = u32::from_le_bytes([desc[0], desc[1], desc[2], desc[3]]) as usize;
            if len == 0 || len > self.geometry.slot_bytes {
                self.malformed += 1;
                continue;
            }
            let frame = &mut buf[..len];
            region.read(self.geometry.slot_at(self.dir, index), frame);
            self.frames += 1;
            self.bytes += len as u64;
            delivered += 1;
            deliver(frame);
        }
        if take > 0 {
            self.cons = self.cons.wrapping_add(take);
            fence(Ordering::Release);
            region.write(self.dir.cons_at(), &self.cons.to_le_bytes());
        }
        Ok(delivered)
    }
}

#[cfg(test)]
#[path = "framering_tests.rs"]
mod tests;
