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
    dev.ack_features(u64::MAX);
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
    for bit in [VIRTIO_NET_F_MAC, VIRTIO_NET_F_STATUS, VIRTIO_NET_F_MTU, VIRTIO_F_VERSION_1] {
        assert_ne!(f & feature(bit), 0, "bit {bit} offered");
    }
    for bit in [VIRTIO_NET_F_CSUM, VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_HOST_TSO4, VIRTIO_NET_F_GUEST_TSO4, VIRTIO_NET_F_MRG_RXBUF, VIRTIO_NET_F_CTRL_VQ] {
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
    for _ in 0..200 {
        let mut r = rig();
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
