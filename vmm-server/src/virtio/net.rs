//! virtio-net (device ID 1, virtio 1.2 §5.1): the guest's NIC, one queue
//! pair, its frames carried to netd's switch by the VMM.
//!
//! Offered: VIRTIO_NET_F_MAC (the VNIC's MAC in the configuration space,
//! from the VM description's `nics[].mac`), VIRTIO_NET_F_STATUS (link up),
//! VIRTIO_NET_F_MTU (1500) and VIRTIO_NET_F_MRG_RXBUF (mergeable receive
//! buffers: a frame may span several receive chains, `num_buffers` in the
//! first one's header). No checksum or segmentation offloads: frames cross
//! netd's switch to other guests, the machine's NIC and netd's own stack
//! as bare Ethernet frames, so a checksum left to the device would have to
//! be computed here anyway (no saving under emulation, where both sides'
//! instructions cost the same), and segmentation would need the frame
//! ring to carry the header. Without MRG_RXBUF every frame is whole in one
//! chain, so a guest's receive buffers hold [`HDR_BYTES`] + 1514 bytes
//! (Linux's "small" buffers do).
//!
//! The flow with the VMM, as virtio-console's:
//! * Transmit: on a `transmitq` notification the device checks each chain
//!   (the 12-byte `virtio_net_hdr` of §5.1.6, then one Ethernet frame):
//!   a header asking for an offload not negotiated, a frame shorter than
//!   an Ethernet header or longer than [`MAX_FRAME`] is dropped and
//!   counted, never passed on. Good frames wait (at most [`TX_LIMIT`])
//!   until the VMM takes them ([`Net::take_tx`]) for the frame ring; past
//!   the limit the device leaves the guest's chains in the ring (the guest
//!   sees back-pressure, no frame is lost) until the VMM took the frames
//!   and kicked `transmitq` again ([`Net::transmit_stalled`]).
//! * Receive: [`Net::push_rx`] queues frames from netd (at most
//!   [`RX_LIMIT`]; more are dropped and counted, as a NIC whose ring is
//!   full drops), and they go into the guest's receive buffers when
//!   `receiveq` is processed (the guest's notification, or the VMM's kick
//!   after pushing). A frame larger than the buffer the guest posted is
//!   dropped and counted, and the buffer serves the next frame. With
//!   MRG_RXBUF the device instead takes chains until they hold the header
//!   and the frame, fills them in order and returns them together (the
//!   used index moves once, §5.1.6.4.2); chains taken while the guest has
//!   not yet given enough stay with the device for the frame (no chain is
//!   put back). A chain shorter than the header (the driver MUST give at
//!   least one, §5.1.6.3.1) goes back empty and is counted; a frame that
//!   would need more than [`MAX_MERGED`] chains is dropped and counted, and
//!   the chains it took serve the next frame.

use alloc::collections::VecDeque;
use alloc::vec;
use alloc::vec::Vec;

use libipc::framering::{Consumer, Direction, FrameRingError, Geometry, Producer, RingRegion};

use super::queue::{DescriptorChain, Queue};
use super::{COMMON_FEATURES, GuestMemory, QueueError, VIRTIO_ID_NET, VirtioDevice, feature, read_config_space};

// Feature bits (§5.1.3).
pub const VIRTIO_NET_F_CSUM: u32 = 0;
pub const VIRTIO_NET_F_GUEST_CSUM: u32 = 1;
pub const VIRTIO_NET_F_MTU: u32 = 3;
pub const VIRTIO_NET_F_MAC: u32 = 5;
pub const VIRTIO_NET_F_GUEST_TSO4: u32 = 7;
pub const VIRTIO_NET_F_HOST_TSO4: u32 = 11;
pub const VIRTIO_NET_F_MRG_RXBUF: u32 = 15;
pub const VIRTIO_NET_F_STATUS: u32 = 16;
pub const VIRTIO_NET_F_CTRL_VQ: u32 = 17;

/// `status`: the link is up (§5.1.4).
pub const VIRTIO_NET_S_LINK_UP: u16 = 1;
/// `virtio_net_hdr.flags`: the driver left the checksum to the device.
pub const VIRTIO_NET_HDR_F_NEEDS_CSUM: u8 = 1;
/// `virtio_net_hdr.gso_type`: no segmentation.
pub const VIRTIO_NET_HDR_GSO_NONE: u8 = 0;

/// `receiveq1`.
pub const RECEIVEQ: usize = 0;
/// `transmitq1`.
pub const TRANSMITQ: usize = 1;
/// Each queue's maximum size.
pub const QUEUE_SIZE: u16 = 256;
/// `virtio_net_hdr` with `num_buffers`: always 12 bytes once
/// VIRTIO_F_VERSION_1 is negotiated (§5.1.6).
pub const HDR_BYTES: usize = 12;
/// The MTU in the configuration space.
pub const MTU: u16 = 1500;
/// The largest frame either way: the MTU and the MAC header (no FCS, no tag).
pub const MAX_FRAME: usize = MTU as usize + 14;
/// Frames the device holds for the VMM before it stops taking chains.
/// With as many again waiting in [`FrameLink`] for room in the ring and
/// [`RX_LIMIT`] for the guest, a NIC holds at most
/// [`MAX_HELD_FRAMES`] frames on the VMM's heap (512 KiB on Alcove):
/// 256 each way exhausted it once a `maxbw` cap let the ring fill (the
/// VMM panicked on an allocation of 1514 bytes; 64 and 32 still did).
/// The ring's 64 slots each way carry the bursts.
pub const TX_LIMIT: usize = 16;
/// Frames the device holds for the guest before it drops new ones (more
/// wait in netd's ring).
pub const RX_LIMIT: usize = 16;
/// The most frames one NIC keeps on the VMM's heap: [`TX_LIMIT`] in the
/// device, as many waiting for room in the ring, [`RX_LIMIT`] for the
/// guest.
pub const MAX_HELD_FRAMES: usize = 2 * TX_LIMIT + RX_LIMIT;

/// Receive chains one frame may span with MRG_RXBUF: 64 of Linux's
/// smallest mergeable buffers (1,530 bytes) hold a 64 KiB frame; a frame
/// here is at most [`MAX_FRAME`], so only a guest posting tiny buffers
/// reaches it.
pub const MAX_MERGED: usize = 64;

// Configuration layout (§5.1.4): mac[6], le16 status,
// le16 max_virtqueue_pairs, le16 mtu.
const CONFIG_LEN: usize = 12;

const QUEUE_SIZES: [u16; 2] = [QUEUE_SIZE, QUEUE_SIZE];

/// What the device counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetStats {
    /// Frames the guest sent that the device passed on.
    pub tx_frames: u64,
    /// Bytes of `tx_frames`.
    pub tx_bytes: u64,
    /// Transmit chains dropped: a header asking for offloads not
    /// negotiated, or shorter than a header and an Ethernet header.
    pub tx_malformed: u64,
    /// Transmit chains dropped for a frame over [`MAX_FRAME`].
    pub tx_oversized: u64,
    /// Frames put into the guest's buffers.
    pub rx_frames: u64,
    /// Bytes of `rx_frames`.
    pub rx_bytes: u64,
    /// Frames dropped because [`RX_LIMIT`] frames already waited.
    pub rx_overflow: u64,
    /// Frames dropped because the guest's buffer was too small (or, with
    /// MRG_RXBUF, needed over [`MAX_MERGED`] buffers), and buffers shorter
    /// than the header given back empty.
    pub rx_small_buffer: u64,
    /// Frames that spanned more than one buffer (MRG_RXBUF).
    pub rx_merged: u64,
}

/// The virtio-net device.
#[derive(Clone, Debug)]
pub struct Net {
    mac: [u8; 6],
    acked_features: u64,
    tx: VecDeque<Vec<u8>>,
    rx: VecDeque<Vec<u8>>,
    /// Receive chains taken for the next frame (MRG_RXBUF) that do not
    /// hold it yet.
    rx_held: Vec<DescriptorChain>,
    stalled: bool,
    stats: NetStats,
}

impl Net {
    /// A NIC with `mac` (the VNIC's address).
    pub fn new(mac: [u8; 6]) -> Self {
        Self {
            mac,
            acked_features: 0,
            tx: VecDeque::new(),
            rx: VecDeque::new(),
            rx_held: Vec::new(),
            stalled: false,
            stats: NetStats::default(),
        }
    }

    /// The MAC in the configuration space.
    pub const fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// The counters.
    pub const fn stats(&self) -> &NetStats {
        &self.stats
    }

    /// The frames the guest sent since the last call, oldest first.
    pub fn take_tx(&mut self) -> VecDeque<Vec<u8>> {
        core::mem::take(&mut self.tx)
    }

    /// Whether the device stopped taking `transmitq`'s chains because
    /// [`TX_LIMIT`] frames wait for the VMM (more chains may be in the
    /// ring): take the frames, then kick [`TRANSMITQ`].
    pub const fn transmit_stalled(&self) -> bool {
        self.stalled
    }

    /// Queues a frame for the guest; `false` (and counted) if
    /// [`RX_LIMIT`] frames already wait. Follow with
    /// `VirtioPci::kick(RECEIVEQ, mem)` to deliver.
    pub fn push_rx(&mut self, frame: &[u8]) -> bool {
        if self.rx.len() >= RX_LIMIT {
            self.stats.rx_overflow += 1;
            return false;
        }
        self.rx.push_back(frame.to_vec());
        true
    }

    /// Frames waiting for a guest buffer.
    pub fn pending_rx(&self) -> usize {
        self.rx.len()
    }

    /// MRG_RXBUF's receive: each frame in as many chains as it needs.
    fn receive_merged(&mut self, queue: &mut Queue, mem: &mut dyn GuestMemory) -> Result<(), QueueError> {
        while let Some(len) = self.rx.front().map(Vec::len) {
            let need = HDR_BYTES + len;
            let mut room: usize = self.rx_held.iter().map(|c| c.writable_len() as usize).sum();
            while room < need && self.rx_held.len() < MAX_MERGED {
                let Some(chain) = queue.pop(mem)? else { return Ok(()) };
                if (chain.writable_len() as usize) < HDR_BYTES {
                    // Too short for a header: back empty (the guest's fault).
                    self.stats.rx_small_buffer += 1;
                    queue.add_used(mem, chain.head_index(), 0)?;
                    continue;
                }
                room += chain.writable_len() as usize;
                self.rx_held.push(chain);
            }
            let Some(frame) = self.rx.pop_front() else { return Ok(()) };
            if room < need {
                // MAX_MERGED chains and still no room: the frame goes, the
                // chains wait for the next one.
                self.stats.rx_small_buffer += 1;
                continue;
            }
            // Fill the chains in order; the first holds the header.
            let mut used: Vec<(u16, u32)> = Vec::new();
            let mut at = 0usize;
            for chain in &self.rx_held {
                if at == frame.len() && !used.is_empty() {
                    break;
                }
                let mut written = 0usize;
                let mut cap = chain.writable_len() as usize;
                if used.is_empty() {
                    cap -= HDR_BYTES;
                    written = HDR_BYTES;
                }
                let take = cap.min(frame.len() - at);
                chain.write_at(mem, written as u64, &frame[at..at + take])?;
                at += take;
                used.push((chain.head_index(), (written + take) as u32));
            }
            let mut hdr = [0u8; HDR_BYTES];
            hdr[10..12].copy_from_slice(&(used.len() as u16).to_le_bytes());
            self.rx_held[0].write_at(mem, 0, &hdr)?;
            self.rx_held.drain(..used.len());
            queue.add_used_together(mem, &used)?;
            self.stats.rx_frames += 1;
            self.stats.rx_bytes += frame.len() as u64;
            if used.len() > 1 {
                self.stats.rx_merged += 1;
            }
        }
        Ok(())
    }

    fn receive(&mut self, queue: &mut Queue, mem: &mut dyn GuestMemory) -> Result<(), QueueError> {
        if self.acked_features & feature(VIRTIO_NET_F_MRG_RXBUF) != 0 {
            return self.receive_merged(queue, mem);
        }
        // num_buffers is 1: every frame is in one chain (§5.1.6.3.1).
        let mut hdr = [0u8; HDR_BYTES];
        hdr[10..12].copy_from_slice(&1u16.to_le_bytes());
        while !self.rx.is_empty() {
            let Some(chain) = queue.pop(mem)? else { break };
            let room = chain.writable_len() as usize;
            // Frames that do not fit this buffer are dropped; the buffer
            // waits for the next frame.
            let mut used = 0u32;
            while let Some(frame) = self.rx.pop_front() {
                if HDR_BYTES + frame.len() > room {
                    self.stats.rx_small_buffer += 1;
                    continue;
                }
                chain.write_at(mem, 0, &hdr)?;
                chain.write_at(mem, HDR_BYTES as u64, &frame)?;
                self.stats.rx_frames += 1;
                self.stats.rx_bytes += frame.len() as u64;
                used = (HDR_BYTES + frame.len()) as u32;
                break;
            }
            queue.add_used(mem, chain.head_index(), used)?;
        }
        Ok(())
    }

    fn transmit(&mut self, queue: &mut Queue, mem: &mut dyn GuestMemory) -> Result<(), QueueError> {
        self.stalled = false;
        let offloads = self.acked_features & feature(VIRTIO_NET_F_CSUM) != 0;
        loop {
            if self.tx.len() >= TX_LIMIT {
                self.stalled = queue.ready;
                return Ok(());
            }
            let Some(chain) = queue.pop(mem)? else { return Ok(()) };
            let len = chain.readable_len() as usize;
            if len > HDR_BYTES + MAX_FRAME {
                self.stats.tx_oversized += 1;
            } else if len < HDR_BYTES + 14 {
                self.stats.tx_malformed += 1;
            } else {
                // The header, checked first; then one copy of the frame,
                // passed on as it is (no bytes moved to drop the header).
                let mut hdr = [0u8; HDR_BYTES];
                let got = chain.read_at(mem, 0, &mut hdr)?;
                let (flags, gso_type) = (hdr[0], hdr[1]);
                let needs_csum = flags & VIRTIO_NET_HDR_F_NEEDS_CSUM != 0;
                if got != HDR_BYTES || gso_type != VIRTIO_NET_HDR_GSO_NONE || (needs_csum && !offloads) {
                    self.stats.tx_malformed += 1;
                } else {
                    let mut frame = vec![0u8; len - HDR_BYTES];
                    if chain.read_at(mem, HDR_BYTES as u64, &mut frame)? != frame.len() {
                        self.stats.tx_malformed += 1;
                    } else {
                        self.stats.tx_frames += 1;
                        self.stats.tx_bytes += frame.len() as u64;
                        self.tx.push_back(frame);
                    }
                }
            }
            queue.add_used(mem, chain.head_index(), 0)?;
        }
    }
}

impl VirtioDevice for Net {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_NET
    }

    fn features(&self) -> u64 {
        COMMON_FEATURES
            | feature(VIRTIO_NET_F_MAC)
            | feature(VIRTIO_NET_F_STATUS)
            | feature(VIRTIO_NET_F_MTU)
            | feature(VIRTIO_NET_F_MRG_RXBUF)
    }

    fn ack_features(&mut self, features: u64) {
        self.acked_features = features & self.features();
    }

    fn acked_features(&self) -> u64 {
        self.acked_features
    }

    fn queue_sizes(&self) -> &[u16] {
        &QUEUE_SIZES
    }

    /// mac, status (link up), max_virtqueue_pairs (1), mtu; all read-only.
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let mut space = [0u8; CONFIG_LEN];
        space[..6].copy_from_slice(&self.mac);
        space[6..8].copy_from_slice(&VIRTIO_NET_S_LINK_UP.to_le_bytes());
        space[8..10].copy_from_slice(&1u16.to_le_bytes());
        space[10..12].copy_from_slice(&MTU.to_le_bytes());
        read_config_space(&space, offset, data);
    }

    /// §5.1.4.2: the driver SHOULD NOT write `mac` with VERSION_1; nothing
    /// here is writable.
    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}

    fn process_queue(
        &mut self,
        index: usize,
        queues: &mut [Queue],
        mem: &mut dyn GuestMemory,
    ) -> Result<bool, QueueError> {
        let Some(queue) = queues.get_mut(index) else { return Ok(false) };
        match index {
            RECEIVEQ => self.receive(queue, mem)?,
            TRANSMITQ => self.transmit(queue, mem)?,
            _ => return Ok(false),
        }
        Ok(queue.needs_notification(mem))
    }

    /// Forgets the negotiation and the frames in flight (a reset NIC has
    /// neither); the counters stay.
    fn reset(&mut self) {
        self.acked_features = 0;
        self.stalled = false;
        self.tx.clear();
        self.rx.clear();
        self.rx_held.clear();
    }
}

/// What [`FrameLink::pump`] leaves the VMM to do.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pumped {
    /// Frames went into the ring: signal netd.
    pub signal_netd: bool,
    /// Frames arrived for the guest: kick [`RECEIVEQ`].
    pub kick_receiveq: bool,
    /// The device stopped at [`TX_LIMIT`] and has room again: kick
    /// [`TRANSMITQ`].
    pub kick_transmitq: bool,
}

/// The VMM's end of a VNIC's frame rings ([`libipc::framering`]): moves
/// the guest's frames from the device into the ring to netd and netd's
/// frames into the device. Frames the ring has no room for wait here (at
/// most what the device held) and the device takes no more until they
/// went, so a full ring slows the guest down instead of losing frames.
pub struct FrameLink<R: RingRegion> {
    region: R,
    to_netd: Producer,
    from_netd: Consumer,
    waiting: VecDeque<Vec<u8>>,
    buf: Vec<u8>,
}

impl<R: RingRegion> FrameLink<R> {
    /// The link over `region`, which netd formatted (its header checked here).
    pub fn new(region: R) -> Result<Self, FrameRingError> {
        let g = Geometry::from_header(&region)?;
        Ok(Self {
            region,
            to_netd: Producer::new(g, Direction::ToNetd),
            from_netd: Consumer::new(g, Direction::ToVmm),
            waiting: VecDeque::new(),
            buf: vec![0; g.slot_bytes],
        })
    }

    /// Moves the link onto `region`, a new ring of the same VNIC (netd
    /// was restarted and the VMM attached again): the guest's frames that
    /// wait for room go into the new ring; what the old ring held is lost,
    /// as frames in flight on a link that flapped. The old region comes
    /// back; a new one with a bad header is refused and handed back with
    /// the link unchanged.
    pub fn relink(&mut self, region: R) -> Result<R, (R, FrameRingError)> {
        let g = match Geometry::from_header(&region) {
            Ok(g) => g,
            Err(e) => return Err((region, e)),
        };
        self.to_netd = Producer::new(g, Direction::ToNetd);
        self.from_netd = Consumer::new(g, Direction::ToVmm);
        self.buf = vec![0; g.slot_bytes];
        Ok(core::mem::replace(&mut self.region, region))
    }

    /// Frames netd sent that were malformed (skipped), and frames the
    /// guest sent that wait for room in the ring.
    pub fn counts(&self) -> (u64, usize) {
        (self.from_netd.malformed, self.waiting.len())
    }

    /// Frames in the ring that netd has not taken yet.
    pub fn unconsumed(&mut self) -> Result<u32, FrameRingError> {
        let free = self.to_netd.free(&self.region)?;
        Ok(Geometry::from_header(&self.region).map_or(0, |g| g.slots.saturating_sub(free)))
    }

    /// One round both ways. An error means netd broke the ring protocol.
    pub fn pump(&mut self, dev: &mut Net) -> Result<Pumped, FrameRingError> {
        let mut out = Pumped::default();
        if self.waiting.is_empty() {
            self.waiting = dev.take_tx();
        }
        let n = self.to_netd.push_all(&mut self.region, self.waiting.iter().map(|f| f.as_slice()))?;
        self.waiting.drain(..n);
        out.signal_netd = n > 0;
        out.kick_transmitq = self.waiting.is_empty() && dev.transmit_stalled();
        let room = RX_LIMIT.saturating_sub(dev.pending_rx()) as u32;
        let got = self.from_netd.pop_all(&mut self.region, &mut self.buf, room, |f| {
            dev.push_rx(f);
        })?;
        out.kick_receiveq = got > 0;
        Ok(out)
    }
}

#[cfg(test)]
mod tests;
