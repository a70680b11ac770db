//! virtio-net alone with mock queues, then behind the PCI transport.

use super::*;
use crate::devices::XorShift;
use crate::pci::PciBus;
use crate::virtio::mock::MockQueue;
use crate::virtio::pci::*;
use crate::virtio::{VIRTIO_F_VERSION_1, VecMemory};
use alloc::boxed::Box;

const RX_AT: u64 = 0x1000;
const TX_AT: u64 = 0x8000;
const BUF: u64 = 0x2_0000;
const MAC: [u8; 6] = [0x02, 0x08, 0x20, 0x11, 0x22, 0x33];

struct Rig {
    mem: VecMemory,
    rx: MockQueue,
    tx: MockQueue,
    queues: [Queue; 2],
    dev: Net,
}

fn rig() -> Rig {
    let mut mem = VecMemory::new(0, 0x10_0000);
    let rx = MockQueue::new(&mut mem, RX_AT, 16);
    let tx = MockQueue::new(&mut mem, TX_AT, 16);
    let mut dev = Net::new(MAC);
    // Everything but mergeable buffers (their own rig, `merged_rig`).
    dev.ack_features(!feature(VIRTIO_NET_F_MRG_RXBUF));
    let queues = [rx.device_queue(), tx.device_queue()];
    Rig { mem, rx, tx, queues, dev }
}

/// An Ethernet frame of `len` bytes numbered `seq`.
fn frame(seq: u8, len: usize) -> Vec<u8> {
    let mut f: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(7).wrapping_add(seq)).collect();
    f[..6].copy_from_slice(&[0xff; 6]);
    f[6..12].copy_from_slice(&MAC);
    f
}

impl Rig {
    /// One notification of queue `q`, as the transport delivers it.
    fn run(&mut self, q: usize) -> Result<bool, QueueError> {
        if let Some(queue) = self.queues.get_mut(q) {
            queue.start_pass();
        }
        self.dev.process_queue(q, &mut self.queues, &mut self.mem)
    }

    /// The guest sends `frame` behind header `hdr`, header and frame in
    /// separate descriptors (as Linux's scatter-gather does).
    fn send_with(&mut self, at: u64, hdr: [u8; HDR_BYTES], frame: &[u8]) {
        self.mem.write(at, &hdr).unwrap();
        self.mem.write(at + 0x100, frame).unwrap();
        self.tx.add_chain(&mut self.mem, &[(at, HDR_BYTES as u32, false), (at + 0x100, frame.len() as u32, false)]);
    }

    fn send(&mut self, at: u64, frame: &[u8]) {
        self.send_with(at, [0; HDR_BYTES], frame);
    }
}

#[test]
fn identity_and_configuration() {
    let r = rig();
    assert_eq!(r.dev.device_type(), 1);
    assert_eq!(r.dev.queue_sizes(), &[QUEUE_SIZE, QUEUE_SIZE]);
    let f = r.dev.features();
    for bit in [VIRTIO_NET_F_MAC, VIRTIO_NET_F_STATUS, VIRTIO_NET_F_MTU, VIRTIO_NET_F_MRG_RXBUF, VIRTIO_F_VERSION_1] {
        assert_ne!(f & feature(bit), 0, "bit {bit} offered");
    }
    for bit in [VIRTIO_NET_F_CSUM, VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_HOST_TSO4, VIRTIO_NET_F_GUEST_TSO4, VIRTIO_NET_F_CTRL_VQ] {
        assert_eq!(f & feature(bit), 0, "bit {bit} not offered");
    }
    let mut c = [0xffu8; 16];
    r.dev.read_config(0, &mut c);
    assert_eq!(c, [2, 8, 0x20, 0x11, 0x22, 0x33, 1, 0, 1, 0, 0xdc, 0x05, 0, 0, 0, 0]);
    let mut status = [0u8; 2];
    r.dev.read_config(6, &mut status);
    assert_eq!(u16::from_le_bytes(status), VIRTIO_NET_S_LINK_UP);
    // Nothing is writable, not even the MAC.
    let mut dev = r.dev.clone();
    dev.write_config(0, &[0xaa; 12]);
    dev.read_config(0, &mut c[..6]);
    assert_eq!(c[..6], MAC);
}

#[test]
fn transmit_passes_whole_frames_without_the_header() {
    let mut r = rig();
    let a = frame(1, 60);
    let b = frame(2, MAX_FRAME);
    r.send(BUF, &a);
    // Header and frame in one descriptor too.
    let mut one = vec![0u8; HDR_BYTES];
    one.extend_from_slice(&b);
    r.mem.write(BUF + 0x1000, &one).unwrap();
    r.tx.add_chain(&mut r.mem, &[(BUF + 0x1000, one.len() as u32, false)]);
    assert_eq!(r.run(TRANSMITQ), Ok(true));
    assert_eq!(r.dev.take_tx(), [a.clone(), b.clone()]);
    assert!(r.dev.take_tx().is_empty());
    assert_eq!(r.tx.used_idx(&r.mem), 2);
    assert_eq!(r.tx.used_elem(&r.mem, 0).1, 0, "nothing written into a transmit buffer");
    let s = r.dev.stats();
    assert_eq!((s.tx_frames, s.tx_bytes, s.tx_malformed, s.tx_oversized), (2, (a.len() + b.len()) as u64, 0, 0));
}

#[test]
fn transmit_drops_and_counts_what_it_cannot_pass_on() {
    let mut r = rig();
    // One byte over the largest frame.
    r.send(BUF, &frame(1, MAX_FRAME + 1));
    // Huge: 64 KiB of "TSO" the device never offered.
    r.mem.write(BUF + 0x1_0000, &vec![0u8; 0x1_0000]).unwrap();
    r.tx.add_chain(&mut r.mem, &[(BUF + 0x1_0000, 0x1_0000, false)]);
    // A header alone; a header and 13 bytes.
    r.tx.add_chain(&mut r.mem, &[(BUF, HDR_BYTES as u32, false)]);
    r.send(BUF + 0x2000, &frame(2, 14)[..13]);
    // GSO asked for, checksum offload asked for: neither negotiated.
    let mut gso = [0u8; HDR_BYTES];
    gso[1] = 1; // VIRTIO_NET_HDR_GSO_TCPV4
    r.send_with(BUF + 0x3000, gso, &frame(3, 100));
    let mut csum = [0u8; HDR_BYTES];
    csum[0] = VIRTIO_NET_HDR_F_NEEDS_CSUM;
    r.send_with(BUF + 0x4000, csum, &frame(4, 100));
    // A good one after all that.
    r.send(BUF + 0x5000, &frame(5, 100));
    assert_eq!(r.run(TRANSMITQ), Ok(true));
    assert_eq!(r.dev.take_tx(), [frame(5, 100)]);
    let s = r.dev.stats();
    assert_eq!((s.tx_oversized, s.tx_malformed, s.tx_frames), (2, 4, 1));
    assert_eq!(r.tx.used_idx(&r.mem), 7, "every chain is returned");
}

#[test]
fn transmit_backpressure_keeps_chains_in_the_ring() {
    let mut r = rig();
    let mut sent = 0u16;
    // Fill the device's holding area, 8 two-descriptor chains at a time
    // (the mock's table has 16 entries).
    for round in 0..(TX_LIMIT / 8) {
        for i in 0..8 {
            r.send(BUF + i * 0x800, &frame(round as u8, 60));
            sent += 1;
        }
        r.run(TRANSMITQ).unwrap();
    }
    assert_eq!(r.tx.used_idx(&r.mem), sent);
    assert!(r.dev.transmit_stalled(), "full: it stopped looking");
    // One more: the device holds TX_LIMIT frames and leaves it in the ring.
    r.send(BUF, &frame(0xee, 60));
    r.run(TRANSMITQ).unwrap();
    assert!(r.dev.transmit_stalled());
    assert_eq!(r.tx.used_idx(&r.mem), sent);
    assert_eq!(r.dev.take_tx().len(), TX_LIMIT);
    r.run(TRANSMITQ).unwrap();
    assert!(!r.dev.transmit_stalled());
    assert_eq!(r.tx.used_idx(&r.mem), sent + 1);
    assert_eq!(r.dev.take_tx(), [frame(0xee, 60)]);
}

#[test]
fn receive_puts_a_header_and_the_frame_in_each_buffer() {
    let mut r = rig();
    assert!(r.dev.push_rx(&frame(1, 60)));
    assert!(r.dev.push_rx(&frame(2, MAX_FRAME)));
    // No buffers yet: the frames wait.
    assert_eq!(r.run(RECEIVEQ), Ok(false));
    assert_eq!(r.dev.pending_rx(), 2);
    // A buffer of Linux's small size, split in header and data descriptors.
    let small = (HDR_BYTES + 1518) as u32;
    r.rx.add_chain(&mut r.mem, &[(BUF, HDR_BYTES as u32, true), (BUF + 0x100, small - HDR_BYTES as u32, true)]);
    r.rx.add_chain(&mut r.mem, &[(BUF + 0x1000, small, true)]);
    assert_eq!(r.run(RECEIVEQ), Ok(true));
    assert_eq!(r.dev.pending_rx(), 0);
    assert_eq!(r.rx.used_elem(&r.mem, 0).1, (HDR_BYTES + 60) as u32);
    assert_eq!(r.rx.used_elem(&r.mem, 1).1, (HDR_BYTES + MAX_FRAME) as u32);
    let mut hdr = [0xffu8; HDR_BYTES];
    r.mem.read(BUF, &mut hdr).unwrap();
    assert_eq!(hdr, [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0], "no offloads, num_buffers 1");
    let mut got = vec![0u8; 60];
    r.mem.read(BUF + 0x100, &mut got).unwrap();
    assert_eq!(got, frame(1, 60));
    let mut got = vec![0u8; MAX_FRAME];
    r.mem.read(BUF + 0x1000 + HDR_BYTES as u64, &mut got).unwrap();
    assert_eq!(got, frame(2, MAX_FRAME));
    assert_eq!((r.dev.stats().rx_frames, r.dev.stats().rx_bytes), (2, (60 + MAX_FRAME) as u64));
}

#[test]
fn receive_drops_what_does_not_fit_and_keeps_the_buffer() {
    let mut r = rig();
    r.dev.push_rx(&frame(1, 1000));
    r.dev.push_rx(&frame(2, 100));
    // A 200-byte buffer: the first frame is dropped, the second fills it.
    r.rx.add_chain(&mut r.mem, &[(BUF, 200, true)]);
    r.run(RECEIVEQ).unwrap();
    assert_eq!(r.rx.used_elem(&r.mem, 0).1, (HDR_BYTES + 100) as u32);
    assert_eq!(r.dev.stats().rx_small_buffer, 1);
    // A buffer with no writable byte gets nothing and goes back empty.
    r.dev.push_rx(&frame(3, 60));
    r.rx.add_chain(&mut r.mem, &[(BUF, 200, false)]);
    r.run(RECEIVEQ).unwrap();
    assert_eq!(r.rx.used_elem(&r.mem, 1).1, 0);
    assert_eq!(r.dev.stats().rx_small_buffer, 2);
    // Beyond RX_LIMIT waiting frames, new ones are dropped and counted.
    for i in 0..RX_LIMIT + 5 {
        r.dev.push_rx(&frame(i as u8, 60));
    }
    assert_eq!(r.dev.pending_rx(), RX_LIMIT);
    assert_eq!(r.dev.stats().rx_overflow, 5);
    // A reset forgets frames in flight.
    r.dev.reset();
    assert_eq!((r.dev.pending_rx(), r.dev.acked_features()), (0, 0));
}

fn merged_rig() -> Rig {
    let mut r = rig();
    r.dev.ack_features(u64::MAX);
    assert_ne!(r.dev.acked_features() & feature(VIRTIO_NET_F_MRG_RXBUF), 0);
    r
}

/// The header (`num_buffers` at bytes 10..12) and what follows it, read
/// back from buffers at `bufs` (address, bytes used), in order.
fn merged_read(mem: &VecMemory, bufs: &[(u64, u32)]) -> (u16, Vec<u8>) {
    let mut all = Vec::new();
    for &(at, len) in bufs {
        let mut b = vec![0u8; len as usize];
        mem.read(at, &mut b).unwrap();
        all.extend_from_slice(&b);
    }
    (u16::from_le_bytes([all[10], all[11]]), all[HDR_BYTES..].to_vec())
}

/// MRG_RXBUF: a frame larger than one buffer spans several, header in the
/// first with `num_buffers`, the used lengths what each got, all published
/// at once; a small frame takes one buffer and leaves the rest for the
/// next.
#[test]
fn merged_receive_spreads_a_frame_over_buffers_and_publishes_them_together() {
    let mut r = merged_rig();
    for i in 0..4u64 {
        r.rx.add_chain(&mut r.mem, &[(BUF + i * 0x1000, 600, true)]);
    }
    let big = frame(1, MAX_FRAME);
    let small = frame(2, 60);
    assert!(r.dev.push_rx(&big) && r.dev.push_rx(&small));
    assert_eq!(r.run(RECEIVEQ), Ok(true));
    assert_eq!(r.dev.pending_rx(), 0);
    // 12 + 1514 bytes: 600, 600, 326 for the big one; the fourth buffer
    // holds the small one.
    assert_eq!(r.rx.used_idx(&r.mem), 4);
    let lens: Vec<u32> = (0..4).map(|i| r.rx.used_elem(&r.mem, i).1).collect();
    assert_eq!(lens, [600, 600, 326, (HDR_BYTES + 60) as u32]);
    let (n, bytes) = merged_read(&r.mem, &[(BUF, 600), (BUF + 0x1000, 600), (BUF + 0x2000, 326)]);
    assert_eq!((n, bytes), (3, big.clone()));
    let (n, bytes) = merged_read(&r.mem, &[(BUF + 0x3000, (HDR_BYTES + 60) as u32)]);
    assert_eq!((n, bytes), (1, small));
    let s = r.dev.stats();
    assert_eq!((s.rx_frames, s.rx_merged, s.rx_small_buffer), (2, 1, 0));
}

/// MRG_RXBUF when the guest gives too little: a frame waits with the
/// chains taken for it until enough come (none is put back, nothing is
/// published half); a buffer shorter than the header goes back empty and
/// counted; a guest posting tiny buffers loses frames that would need more
/// than MAX_MERGED, never the device's progress; a reset drops held chains.
#[test]
fn merged_receive_waits_for_room_and_bounds_what_tiny_buffers_cost() {
    let mut r = merged_rig();
    r.rx.add_chain(&mut r.mem, &[(BUF, 500, true)]);
    r.rx.add_chain(&mut r.mem, &[(BUF + 0x1000, 8, true)]);
    let big = frame(3, 1200);
    r.dev.push_rx(&big);
    r.run(RECEIVEQ).unwrap();
    // The 8-byte buffer went back empty; the frame waits with 500 bytes.
    assert_eq!(r.rx.used_idx(&r.mem), 1);
    assert_eq!(r.rx.used_elem(&r.mem, 0), (1, 0));
    assert_eq!((r.dev.pending_rx(), r.dev.stats().rx_small_buffer), (1, 1));
    r.rx.add_chain(&mut r.mem, &[(BUF + 0x2000, 500, true)]);
    r.run(RECEIVEQ).unwrap();
    assert_eq!(r.rx.used_idx(&r.mem), 1, "still short: nothing published");
    r.rx.add_chain(&mut r.mem, &[(BUF + 0x3000, 500, true)]);
    r.run(RECEIVEQ).unwrap();
    assert_eq!(r.rx.used_idx(&r.mem), 4);
    let (n, bytes) = merged_read(&r.mem, &[(BUF, 500), (BUF + 0x2000, 500), (BUF + 0x3000, 212)]);
    assert_eq!((n, bytes), (3, big));
    assert_eq!(r.rx.used_elem(&r.mem, 3).1, 212);

    // Tiny (header-sized plus 4) buffers: MAX_MERGED of them hold 4 + 63 x
    // 16 bytes of frame; a 1514-byte frame is dropped, a 30-byte one fits.
    let mut r = merged_rig();
    let size = 16u16;
    let mut posted = 0u64;
    let mut post = |r: &mut Rig, n: u64| {
        for _ in 0..n {
            r.rx.add_chain(&mut r.mem, &[(BUF + posted * 0x20, (HDR_BYTES + 4) as u32, true)]);
            posted += 1;
        }
    };
    r.dev.push_rx(&frame(4, MAX_FRAME));
    r.dev.push_rx(&frame(5, 30));
    // The mock queue holds 16 chains at a time: post, run, repeat.
    for _ in 0..(MAX_MERGED as u64 / u64::from(size)) {
        post(&mut r, u64::from(size));
        r.run(RECEIVEQ).unwrap();
    }
    assert_eq!(r.dev.stats().rx_small_buffer, 1, "the big frame went");
    assert_eq!(r.dev.stats().rx_frames, 1, "the 30-byte frame came in three of the held buffers");
    assert_eq!(r.dev.pending_rx(), 0);
    // A reset forgets the chains held.
    r.dev.push_rx(&frame(6, MAX_FRAME));
    r.dev.reset();
    assert_eq!(r.dev.pending_rx(), 0);
}

#[test]
fn malformed_chains_are_errors() {
    let mut r = rig();
    r.tx.add_chain(&mut r.mem, &[(0xFFFF_0000, 64, false)]);
    assert!(matches!(r.run(TRANSMITQ), Err(QueueError::DescriptorOutOfRange { .. })));
    r.dev.push_rx(&frame(1, 60));
    r.rx.add_chain(&mut r.mem, &[(BUF, 4, true), (BUF + 8, 4, false)]);
    assert_eq!(r.run(RECEIVEQ), Err(QueueError::ReadableAfterWritable));
    assert_eq!(r.run(7), Ok(false));
}

#[test]
fn fuzz_net_queues() {
    let mut rng = XorShift(0x0E7_F00D);
    for round in 0..400 {
        // Half the rounds with mergeable receive buffers.
        let mut r = if round % 2 == 0 { rig() } else { merged_rig() };
        for _ in 0..60 {
            match rng.below(6) {
                0 => {
                    let n = rng.below(1600) as usize;
                    r.dev.push_rx(&vec![0x5a; n]);
                }
                1 => {
                    let bufs = [(rng.below(0x11_0000), rng.below(0x800) as u32, rng.below(4) != 0)];
                    r.rx.add_chain(&mut r.mem, &bufs);
                }
                2 => {
                    let at = rng.below(0x10_0000);
                    let bufs = [(at, rng.below(0x800) as u32, false), (at + 0x800, rng.below(0x800) as u32, rng.below(4) == 0)];
                    let _ = r.mem.write(at, &rng.next().to_le_bytes());
                    r.tx.add_chain(&mut r.mem, &bufs);
                }
                3 => {
                    let at = RX_AT + rng.below(0x8000);
                    let _ = r.mem.write(at, &rng.next().to_le_bytes());
                }
                _ => {
                    let q = rng.below(3) as usize;
                    let _ = r.run(q);
                    for f in r.dev.take_tx() {
                        assert!((14..=MAX_FRAME).contains(&f.len()));
                    }
                }
            }
        }
    }
}

#[test]
fn net_through_the_pci_transport() {
    let mut bus = PciBus::new();
    let slot = bus.add(Box::new(VirtioPci::new(Net::new(MAC)).unwrap())).unwrap();
    let cfg = bus.config(slot).unwrap();
    assert_eq!(cfg.get_u16(2), 0x1041);
    assert_eq!(cfg.get_u32(8) >> 8, 0x02_00_00, "network controller, Ethernet");
    let bar = cfg.bar(0).unwrap().address;
    let mut mac = [0u8; 6];
    for (i, b) in mac.iter_mut().enumerate() {
        *b = bus.mmio_read(bar + DEVICE_CFG_OFFSET + i as u64, 1).unwrap() as u8;
    }
    assert_eq!(mac, MAC);
}

// ---------------------------------------------------------------------------
// Guest to guest on the host: two virtio-net devices, each with its
// FrameLink, on one netd Fabric (an etherstub), the regions shared in one
// process as two processes share a frame.

mod guest_to_guest {
    use super::*;
    use core::net::{IpAddr, Ipv4Addr};
    use netd::fabric::Fabric;
    use netd_switch::frame::MacAddr;
    use netd_switch::{DropReason, SwitchConfig, VnicConfig, VnicId};
    use netd_testkit::Shared;

    struct Guest {
        r: Rig,
        link: FrameLink<Shared>,
        id: VnicId,
        mac: [u8; 6],
    }

    impl Guest {
        fn new(fabric: &mut Fabric<Shared>, mac: [u8; 6], ip: Ipv4Addr, maxbw: Option<u32>) -> Self {
            let mut r = rig();
            r.dev = Net::new(mac);
            r.dev.ack_features(u64::MAX);
            let region = Shared::zeroed(fabric.geometry().region_bytes());
            let mut cfg = VnicConfig::new(MacAddr(mac));
            cfg.protection.ip = Some(IpAddr::V4(ip));
            cfg.maxbw_mbit = maxbw;
            let id = fabric.attach(cfg, region.clone(), 0).unwrap();
            let link = FrameLink::new(region).unwrap();
            Self { r, link, id, mac }
        }

        /// The guest transmits `frame`; the VMM moves it to the ring.
        fn send(&mut self, frame: &[u8]) {
            let at = BUF + u64::from(self.r.tx.avail_idx % 8) * 0x800;
            self.r.send(at, frame);
            self.r.run(TRANSMITQ).unwrap();
            self.link.pump(&mut self.r.dev).unwrap();
        }

        /// The VMM takes what netd sent; the guest's posted buffers fill.
        /// Returns the frames received.
        fn receive(&mut self) -> Vec<Vec<u8>> {
            let before = self.r.rx.used_idx(&self.r.mem);
            for i in 0..4u64 {
                self.r.rx.add_chain(&mut self.r.mem, &[(BUF + 0x8000 + i * 0x800, 0x800, true)]);
            }
            self.link.pump(&mut self.r.dev).unwrap();
            self.r.run(RECEIVEQ).unwrap();
            let mut got = vec![];
            for i in before..self.r.rx.used_idx(&self.r.mem) {
                let (head, len) = self.r.rx.used_elem(&self.r.mem, i);
                let mut b = vec![0u8; len as usize];
                self.r.mem.read(BUF + 0x8000 + u64::from(head % 4) * 0x800, &mut b).unwrap();
                if len > 0 {
                    got.push(b[HDR_BYTES..].to_vec());
                }
            }
            // The guest's ring is reset for the next round (fresh buffers).
            self.r.rx = MockQueue::new(&mut self.r.mem, RX_AT, 16);
            self.r.queues[RECEIVEQ] = self.r.rx.device_queue();
            got
        }
    }

    fn ether(dst: [u8; 6], src: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![];
        f.extend_from_slice(&dst);
        f.extend_from_slice(&src);
        f.extend_from_slice(&ethertype.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    fn arp(oper: u16, sha: [u8; 6], spa: Ipv4Addr, tpa: Ipv4Addr) -> Vec<u8> {
        let mut p = vec![0, 1, 8, 0, 6, 4];
        p.extend_from_slice(&oper.to_be_bytes());
        p.extend_from_slice(&sha);
        p.extend_from_slice(&spa.octets());
        p.extend_from_slice(&[0; 6]);
        p.extend_from_slice(&tpa.octets());
        p
    }

    fn icmp_echo(src: Ipv4Addr, dst: Ipv4Addr, len: usize) -> Vec<u8> {
        let total = 20 + 8 + len;
        let mut p = vec![0x45, 0];
        p.extend_from_slice(&(total as u16).to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, 0, 64, 1, 0, 0]);
        p.extend_from_slice(&src.octets());
        p.extend_from_slice(&dst.octets());
        p.extend_from_slice(&[8, 0, 0, 0, 0, 1, 0, 1]);
        p.extend((0..len).map(|i| i as u8));
        p
    }

    const MAC_A: [u8; 6] = [2, 0, 0, 0, 0, 0xa];
    const MAC_B: [u8; 6] = [2, 0, 0, 0, 0, 0xb];
    const IP_A: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 10);
    const IP_B: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 11);

    #[test]
    fn arp_and_ping_cross_the_switch_and_spoofs_do_not() {
        let mut fabric: Fabric<Shared> = Fabric::new(SwitchConfig::default(), 16).unwrap();
        let mut a = Guest::new(&mut fabric, MAC_A, IP_A, None);
        let mut b = Guest::new(&mut fabric, MAC_B, IP_B, None);
        // A: who has 10.0.0.11?
        let who_has = ether([0xff; 6], a.mac, 0x0806, &arp(1, a.mac, IP_A, IP_B));
        a.send(&who_has);
        let work = fabric.poll(1);
        assert!(work.signal.contains(&b.id) && work.uplink.is_empty());
        assert_eq!(b.receive(), vec![who_has]);
        assert_eq!(a.receive(), Vec::<Vec<u8>>::new(), "not back to the sender");
        // B: 10.0.0.11 is at B.
        let is_at = ether(a.mac, b.mac, 0x0806, &arp(2, b.mac, IP_B, IP_A));
        b.send(&is_at);
        fabric.poll(2);
        assert_eq!(a.receive(), vec![is_at]);
        // A pings B with a full-size frame.
        let ping = ether(b.mac, a.mac, 0x0800, &icmp_echo(IP_A, IP_B, 1472));
        assert_eq!(ping.len(), MAX_FRAME);
        a.send(&ping);
        fabric.poll(3);
        assert_eq!(b.receive(), vec![ping]);
        // A forges its source IP, then its MAC: both dropped at A's port.
        a.send(&ether(b.mac, a.mac, 0x0800, &icmp_echo(Ipv4Addr::new(10, 0, 0, 66), IP_B, 8)));
        a.send(&ether(b.mac, [2, 0, 0, 0, 0, 0x66], 0x0800, &icmp_echo(IP_A, IP_B, 8)));
        fabric.poll(4);
        assert_eq!(b.receive(), Vec::<Vec<u8>>::new());
        let st = fabric.stats(a.id).unwrap();
        assert_eq!((st.in_drops.get(DropReason::IpSpoof), st.in_drops.get(DropReason::MacSpoof)), (1, 1));
        assert_eq!(st.in_frames, 2);
        assert_eq!(fabric.stats(b.id).unwrap().out_frames, 2);
        // What an operator reads.
        let status = fabric.status("stub0");
        let lines: Vec<&str> = status.lines().collect();
        assert!(lines[0].starts_with("switch stub0: etherstub, mtu 1500, 2 vnics, fdb 2/4096 entries"), "{status}");
        assert!(lines[1].starts_with("  vnic 0 mac 02:00:00:00:00:0a vlan 0 maxbw none: in 2 frames"), "{status}");
        assert_eq!(lines[2], "    drops in: mac_spoof=1 ip_spoof=1; out: none");
        assert_eq!(lines[4], "    drops in: none; out: none");
    }

    #[test]
    fn a_capped_guest_is_slowed_not_dropped() {
        // A capped at 1 Mbit/s (125 kB/s, a burst of 3028 bytes): of 40
        // full frames sent at once, two pass now; the rest wait in the
        // rings and pass as simulated time goes on, none lost.
        let mut fabric: Fabric<Shared> = Fabric::new(SwitchConfig::default(), 16).unwrap();
        let mut a = Guest::new(&mut fabric, MAC_A, IP_A, Some(1));
        let mut b = Guest::new(&mut fabric, MAC_B, IP_B, None);
        let ping = ether(b.mac, a.mac, 0x0800, &icmp_echo(IP_A, IP_B, 1472));
        for _ in 0..40 {
            a.send(&ping);
        }
        let work = fabric.poll(0);
        let wake = work.wake_at_ns.expect("throttled");
        assert_eq!(fabric.stats(a.id).unwrap().in_frames, 2);
        assert_eq!(b.receive().len(), 2);
        let (mut now, mut received) = (wake, 2);
        for _ in 0..10_000 {
            if received >= 40 {
                break;
            }
            a.link.pump(&mut a.r.dev).unwrap();
            a.r.run(TRANSMITQ).unwrap();
            a.link.pump(&mut a.r.dev).unwrap();
            let work = fabric.poll(now);
            received += b.receive().len();
            now = work.wake_at_ns.unwrap_or(now + 1_000_000);
        }
        assert_eq!(received, 40);
        let st = fabric.stats(a.id).unwrap();
        assert_eq!((st.in_frames, st.in_drops.total()), (40, 0));
        assert!(st.throttled > 0);
        // 38 frames beyond the burst at 125 kB/s take about 0.46 s of simulated time.
        let expect = 38.0 * MAX_FRAME as f64 / 125_000.0;
        let took = now as f64 / 1e9;
        assert!(took > expect * 0.9, "took {took} s, expected about {expect} s");
    }

    // -----------------------------------------------------------------
    // The host's own TCP/IP (netd::stack, smoltcp) on a VNIC of the same
    // switch. The guest's OS is a second smoltcp stack driving the
    // guest's virtio-net device, so every frame goes through the device
    // model, its FrameLink, the rings, the switch and the host's RingPort.

    mod host_stack {
        use super::*;
        use netd::stack::{AddressConfig, HostStack, RingPort, StackError, TcpState};

        const HOST_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
        const HOST_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);

        struct Net2 {
            fabric: Fabric<Shared>,
            guest: Guest,
            host: HostStack,
            host_region: Shared,
            port: RingPort,
            now: u64,
        }

        fn net() -> Net2 {
            let mut fabric: Fabric<Shared> = Fabric::new(SwitchConfig::default(), 16).unwrap();
            let guest = Guest::new(&mut fabric, MAC_A, IP_A, None);
            let host_region = Shared::zeroed(fabric.geometry().region_bytes());
            let mut cfg = VnicConfig::new(MacAddr(HOST_MAC));
            cfg.protection.ip = Some(IpAddr::V4(HOST_IP));
            fabric.attach(cfg, host_region.clone(), 0).unwrap();
            let port = RingPort::new(&host_region).unwrap();
            let host = HostStack::new(HOST_MAC, AddressConfig::Static { ip: HOST_IP, prefix: 24, gateway: None }, 1, 0).unwrap();
            Net2 { fabric, guest, host, host_region, port, now: 0 }
        }

        impl Net2 {
            /// One round: the host's frames into the switch, the switch,
            /// and what reaches the guest. Returns the guest's frames.
            fn step(&mut self) -> Vec<Vec<u8>> {
                self.now += 1_000_000;
                let mut region = self.host_region.clone();
                self.port.pump(&mut region, &mut self.host, self.now).unwrap();
                self.fabric.poll(self.now);
                self.port.pump(&mut region, &mut self.host, self.now).unwrap();
                self.fabric.poll(self.now);
                self.guest.receive()
            }
        }

        fn checksum(bytes: &[u8]) -> u16 {
            let mut sum = 0u32;
            for c in bytes.chunks(2) {
                sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
            }
            while sum > 0xffff {
                sum = (sum & 0xffff) + (sum >> 16);
            }
            !(sum as u16)
        }

        /// `icmp_echo` with its checksums filled in (smoltcp checks them).
        fn ping_packet(len: usize) -> Vec<u8> {
            let mut p = icmp_echo(IP_A, HOST_IP, len);
            let c = checksum(&p[..20]);
            p[10..12].copy_from_slice(&c.to_be_bytes());
            let c = checksum(&p[20..]);
            p[22..24].copy_from_slice(&c.to_be_bytes());
            p
        }

        #[test]
        fn a_guest_resolves_and_pings_the_host_stack() {
            let mut n = net();
            let who_has = ether([0xff; 6], MAC_A, 0x0806, &arp(1, MAC_A, IP_A, HOST_IP));
            n.guest.send(&who_has);
            let got = n.step();
            assert_eq!(got.len(), 1, "one ARP reply");
            let reply = &got[0];
            assert_eq!((&reply[..6], &reply[6..12], &reply[12..14]), (&MAC_A[..], &HOST_MAC[..], &[8u8, 6][..]));
            assert_eq!(&reply[20..22], &[0, 2], "an ARP reply");
            assert_eq!((&reply[22..28], &reply[28..32]), (&HOST_MAC[..], &HOST_IP.octets()[..]));
            // A full-size ping: the reply carries the same data back.
            let ping = ether(HOST_MAC, MAC_A, 0x0800, &ping_packet(1472));
            assert_eq!(ping.len(), MAX_FRAME);
            n.guest.send(&ping);
            let got = n.step();
            assert_eq!(got.len(), 1, "one echo reply");
            let r = &got[0];
            assert_eq!(r.len(), MAX_FRAME);
            assert_eq!((&r[26..30], &r[30..34]), (&HOST_IP.octets()[..], &IP_A.octets()[..]));
            assert_eq!(r[34], 0, "echo reply");
            assert_eq!(&r[38..], &ping[38..], "identifier, sequence and data echoed");
            // A ping with a bad checksum gets no answer.
            let mut bad = ping_packet(8);
            bad[30] ^= 1;
            n.guest.send(&ether(HOST_MAC, MAC_A, 0x0800, &bad));
            assert_eq!(n.step(), Vec::<Vec<u8>>::new());
        }

        #[test]
        fn a_guest_connects_to_a_listener_on_the_host_and_data_crosses_both_ways() {
            let mut n = net();
            let mut os = HostStack::new(MAC_A, AddressConfig::Static { ip: IP_A, prefix: 24, gateway: None }, 2, 0).unwrap();
            let listener = n.host.listen(8080).unwrap();
            assert_eq!(n.host.listen(8080), Err(StackError::PortInUse(8080)));
            let conn = os.connect(HOST_IP, 8080).unwrap();
            let up: Vec<u8> = (0..100_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
            let down: Vec<u8> = (0..70_000u32).map(|i| (i * 13 + 5) as u8).collect();
            let (mut sent_up, mut sent_down, mut got_up, mut got_down) = (0, 0, Vec::new(), Vec::new());
            let mut accepted = None;
            for _ in 0..5_000 {
                // The guest's OS runs, its frames go out through the device.
                os.poll(n.now);
                for f in os.take_tx() {
                    n.guest.send(&f);
                }
                for f in n.step() {
                    os.push_rx(&f);
                }
                os.poll(n.now);
                if accepted.is_none() {
                    accepted = n.host.accept(listener).unwrap();
                }
                let Some(server) = accepted else { continue };
                if os.tcp_state(conn) == Ok(TcpState::Established) && sent_up < up.len() {
                    sent_up += os.send(conn, &up[sent_up..]).unwrap();
                }
                got_up.extend(n.host.recv(server, 4096).unwrap());
                if sent_down < down.len() {
                    sent_down += n.host.send(server, &down[sent_down..]).unwrap();
                }
                got_down.extend(os.recv(conn, 4096).unwrap());
                if got_up.len() == up.len() && got_down.len() == down.len() {
                    break;
                }
            }
            assert!(accepted.is_some(), "the connection was accepted");
            assert_eq!(got_up.len(), up.len());
            assert!(got_up == up, "guest to host: the same bytes");
            assert!(got_down == down, "host to guest: the same bytes");
            // The guest closes: the host sees the end, then closes too.
            os.close(conn).unwrap();
            let server = accepted.unwrap();
            for _ in 0..50 {
                os.poll(n.now);
                for f in os.take_tx() {
                    n.guest.send(&f);
                }
                for f in n.step() {
                    os.push_rx(&f);
                }
                if n.host.tcp_state(server) == Ok(TcpState::PeerClosed) {
                    break;
                }
            }
            assert_eq!(n.host.tcp_state(server), Ok(TcpState::PeerClosed));
            assert_eq!(n.host.recv(server, 10), Err(StackError::NotConnected(server)));
            n.host.close(server).unwrap();
            assert_eq!(n.host.recv(server, 10), Err(StackError::NoSocket(server)), "a closed id stays invalid");
            // The listener listens again: a second connection is accepted.
            let again = os.connect(HOST_IP, 8080).unwrap();
            let mut second = None;
            for _ in 0..50 {
                os.poll(n.now);
                for f in os.take_tx() {
                    n.guest.send(&f);
                }
                for f in n.step() {
                    os.push_rx(&f);
                }
                second = n.host.accept(listener).unwrap();
                if second.is_some() {
                    break;
                }
            }
            let second = second.expect("a second connection");
            assert_ne!(second, server);
            os.poll(n.now);
            assert_eq!(os.tcp_state(again), Ok(TcpState::Established));
            let st = n.fabric.stats(n.guest.id).unwrap();
            assert_eq!(st.in_drops.total(), 0, "nothing the guest sent was dropped");
        }
    }
}
