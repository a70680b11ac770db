//! virtio-console alone with mock queues, then behind the PCI transport.

use super::*;
use crate::devices::XorShift;
use crate::pci::{MsiMessage, PciBus};
use crate::virtio::VecMemory;
use crate::virtio::mock::MockQueue;
use crate::virtio::pci::*;
use alloc::boxed::Box;
use alloc::vec;

const RX_AT: u64 = 0x1000;
const TX_AT: u64 = 0x8000;
const BUF: u64 = 0x2_0000;

struct Rig {
    mem: VecMemory,
    rx: MockQueue,
    tx: MockQueue,
    queues: [Queue; 2],
    dev: Console,
}

fn rig() -> Rig {
    let mut mem = VecMemory::new(0, 0x10_0000);
    let rx = MockQueue::new(&mut mem, RX_AT, 16);
    let tx = MockQueue::new(&mut mem, TX_AT, 16);
    let mut dev = Console::new();
    dev.ack_features(u64::MAX);
    let queues = [rx.device_queue(), tx.device_queue()];
    Rig { mem, rx, tx, queues, dev }
}

impl Rig {
    fn run(&mut self, q: usize) -> Result<bool, QueueError> {
        self.dev.process_queue(q, &mut self.queues, &mut self.mem)
    }

    /// The guest writes `data` in one transmit buffer at `at`.
    fn send(&mut self, at: u64, data: &[u8]) {
        self.mem.write(at, data).unwrap();
        self.tx.add_chain(&mut self.mem, &[(at, data.len() as u32, false)]);
    }
}

#[test]
fn identity_and_configuration() {
    let mut r = rig();
    assert_eq!(r.dev.device_type(), VIRTIO_ID_CONSOLE);
    assert_eq!(r.dev.queue_sizes(), &[QUEUE_SIZE, QUEUE_SIZE]);
    assert_eq!(r.dev.features() & feature(VIRTIO_CONSOLE_F_MULTIPORT), 0);
    assert_eq!(r.dev.features() & feature(VIRTIO_CONSOLE_F_SIZE), 0);
    assert_ne!(r.dev.acked_features() & feature(VIRTIO_CONSOLE_F_EMERG_WRITE), 0);
    let mut b = [0xFFu8; 16];
    r.dev.read_config(0, &mut b);
    assert_eq!(b, [0; 16]);
    // emerg_wr, by dword and by byte; other fields ignore writes.
    r.dev.write_config(8, &u32::from(b'E').to_le_bytes());
    r.dev.write_config(8, b"m");
    r.dev.write_config(6, &[1, 2, b'!', 4]);
    r.dev.write_config(0, &[b'x'; 4]);
    r.dev.write_config(9, b"y");
    r.dev.write_config(u64::MAX, b"z");
    assert_eq!(r.dev.take_output(), b"Em!");
    r.dev.reset();
    assert_eq!(r.dev.acked_features(), 0);
    assert_eq!(r.run(2), Ok(false));
}

#[test]
fn transmit_collects_output_across_descriptors() {
    let mut r = rig();
    r.send(BUF, b"hello, ");
    r.mem.write(BUF + 0x100, b"wor").unwrap();
    r.mem.write(BUF + 0x200, b"ld\n").unwrap();
    r.tx.add_chain(&mut r.mem, &[(BUF + 0x100, 3, false), (BUF + 0x200, 3, false)]);
    assert_eq!(r.run(TRANSMITQ), Ok(true));
    assert_eq!(r.dev.take_output(), b"hello, world\n");
    assert!(r.dev.take_output().is_empty());
    assert_eq!(r.tx.used_idx(&r.mem), 2);
    assert_eq!(r.tx.used_elem(&r.mem, 0).1, 0, "nothing written into a transmit buffer");
    // Writable buffers in a transmit chain are skipped.
    r.tx.add_chain(&mut r.mem, &[(BUF, 2, false), (BUF + 0x300, 8, true)]);
    r.run(TRANSMITQ).unwrap();
    assert_eq!(r.dev.take_output(), b"he");
}

#[test]
fn input_waits_for_receive_buffers() {
    let mut r = rig();
    assert_eq!(r.dev.push_input(b"ls -l\n"), 6);
    // No buffers posted: nothing happens, nothing is lost.
    assert_eq!(r.run(RECEIVEQ), Ok(false));
    assert_eq!(r.dev.pending_input(), 6);
    // Two small buffers take 4 bytes; the rest waits.
    r.rx.add_chain(&mut r.mem, &[(BUF, 2, true)]);
    r.rx.add_chain(&mut r.mem, &[(BUF + 0x10, 1, true), (BUF + 0x20, 1, true)]);
    assert_eq!(r.run(RECEIVEQ), Ok(true));
    assert_eq!(r.dev.pending_input(), 2);
    assert_eq!((r.rx.used_elem(&r.mem, 0).1, r.rx.used_elem(&r.mem, 1).1), (2, 2));
    let mut got = [0u8; 4];
    r.mem.read(BUF, &mut got[..2]).unwrap();
    r.mem.read(BUF + 0x10, &mut got[2..3]).unwrap();
    r.mem.read(BUF + 0x20, &mut got[3..]).unwrap();
    assert_eq!(&got, b"ls -");
    // The guest posts a big buffer: the rest arrives, the buffer is
    // returned with what was written.
    r.rx.add_chain(&mut r.mem, &[(BUF + 0x100, 64, true)]);
    r.rx.set_used_event(&mut r.mem, 2);
    assert_eq!(r.run(RECEIVEQ), Ok(true));
    assert_eq!(r.rx.used_elem(&r.mem, 2).1, 2);
    let mut rest = [0u8; 2];
    r.mem.read(BUF + 0x100, &mut rest).unwrap();
    assert_eq!(&rest, b"l\n");
    // A buffer stays posted while there is no input.
    r.rx.add_chain(&mut r.mem, &[(BUF + 0x200, 64, true)]);
    assert_eq!(r.run(RECEIVEQ), Ok(false));
    assert_eq!(r.rx.used_idx(&r.mem), 3);
    r.dev.push_input(b"q");
    r.rx.set_used_event(&mut r.mem, 3);
    assert_eq!(r.run(RECEIVEQ), Ok(true));
    assert_eq!(r.rx.used_elem(&r.mem, 3).1, 1);
}

#[test]
fn input_is_bounded() {
    let mut r = rig();
    let big = vec![b'a'; INPUT_LIMIT + 10];
    assert_eq!(r.dev.push_input(&big), INPUT_LIMIT);
    assert_eq!(r.dev.push_input(b"b"), 0);
    // A receive chain with no writable byte is returned empty.
    r.rx.add_chain(&mut r.mem, &[(BUF, 4, false)]);
    r.run(RECEIVEQ).unwrap();
    assert_eq!(r.rx.used_elem(&r.mem, 0).1, 0);
    assert_eq!(r.dev.pending_input(), INPUT_LIMIT);
}

#[test]
fn output_backpressure_keeps_buffers_in_the_ring() {
    let mut r = rig();
    let chunk = vec![b'x'; OUTPUT_LIMIT / 2];
    for i in 0..3 {
        r.send(BUF + (i as u64) * 0x1_0000, &chunk);
    }
    r.run(TRANSMITQ).unwrap();
    assert!(r.dev.transmit_stalled());
    assert_eq!(r.tx.used_idx(&r.mem), 2, "the third buffer waits in the ring");
    assert_eq!(r.dev.take_output().len(), OUTPUT_LIMIT);
    r.run(TRANSMITQ).unwrap();
    assert!(!r.dev.transmit_stalled());
    assert_eq!(r.tx.used_idx(&r.mem), 3);
    assert_eq!(r.dev.take_output().len(), OUTPUT_LIMIT / 2);
    // One chain larger than the limit is cut at the limit.
    r.mem.write(BUF, &vec![b'y'; OUTPUT_LIMIT + 100]).unwrap();
    r.tx.add_chain(&mut r.mem, &[(BUF, OUTPUT_LIMIT as u32 + 100, false)]);
    r.run(TRANSMITQ).unwrap();
    assert_eq!(r.dev.take_output().len(), OUTPUT_LIMIT);
    // emerg_wr respects the limit too.
    r.send(BUF, &vec![b'z'; OUTPUT_LIMIT]);
    r.run(TRANSMITQ).unwrap();
    r.dev.write_config(8, b"!");
    assert_eq!(r.dev.take_output().len(), OUTPUT_LIMIT);
}

#[test]
fn malformed_chains_are_errors() {
    let mut r = rig();
    r.tx.add_chain(&mut r.mem, &[(0xFFFF_0000, 16, false)]);
    assert!(matches!(r.run(TRANSMITQ), Err(QueueError::DescriptorOutOfRange { .. })));
    r.dev.push_input(b"x");
    r.rx.add_chain(&mut r.mem, &[(BUF, 4, true), (BUF + 8, 4, false)]);
    assert_eq!(r.run(RECEIVEQ), Err(QueueError::ReadableAfterWritable));
}

#[test]
fn fuzz_console_queues() {
    let mut rng = XorShift(0x0C04_501E);
    for _ in 0..200 {
        let mut r = rig();
        for _ in 0..50 {
            match rng.below(6) {
                0 => {
                    let n = rng.below(300) as usize;
                    r.dev.push_input(&vec![b'i'; n]);
                }
                1 => {
                    let bufs = [(rng.below(0x11_0000), rng.below(0x400) as u32, rng.below(2) == 0)];
                    r.rx.add_chain(&mut r.mem, &bufs);
                }
                2 => {
                    let bufs = [(rng.below(0x11_0000), rng.below(0x400) as u32, rng.below(4) == 0)];
                    r.tx.add_chain(&mut r.mem, &bufs);
                }
                3 => {
                    let at = RX_AT + rng.below(0x8000);
                    let _ = r.mem.write(at, &rng.next().to_le_bytes());
                }
                _ => {
                    let q = rng.below(3) as usize;
                    let _ = r.run(q);
                    r.dev.take_output();
                }
            }
        }
    }
}

/// The console behind virtio-pci on a bus, with MSI-X vectors 1 and 2 for
/// the two queues.
#[test]
fn console_through_the_pci_transport() {
    let mut bus = PciBus::new();
    let slot = bus.add(Box::new(VirtioPci::new(Console::new()).unwrap())).unwrap();
    let cfg = bus.config(slot).unwrap();
    assert_eq!(cfg.get_u16(2), 0x1043);
    let bar = cfg.bar(0).unwrap().address;
    let mut mem = VecMemory::new(0, 0x10_0000);
    let w = |bus: &mut PciBus, mem: &mut VecMemory, off: u64, size: u8, v: u64| {
        assert!(bus.mmio_write(bar + off, size, v, mem));
    };
    // Enable MSI-X with vectors 0..3 programmed, bus mastering on.
    let ecam = crate::boot::layout::ECAM_BASE + (u64::from(slot.0) << 15);
    bus.mmio_write(ecam + 4, 2, 0x6, &mut mem);
    let msix_cap = bus.device::<VirtioPci<Console>>(slot).unwrap().msix().capability_offset() as u64;
    assert_eq!(bus.device::<VirtioPci<Console>>(slot).unwrap().msix().vectors(), 3);
    for v in 0..3u64 {
        let e = MSIX_TABLE_OFFSET + 16 * v;
        w(&mut bus, &mut mem, e, 4, 0xFEE0_0000);
        w(&mut bus, &mut mem, e + 8, 4, 0x40 + v);
        w(&mut bus, &mut mem, e + 12, 4, 0);
    }
    bus.mmio_write(ecam + msix_cap + 2, 2, 0x8000, &mut mem);
    // Driver init.
    w(&mut bus, &mut mem, COMMON_DEVICE_STATUS, 1, 3);
    w(&mut bus, &mut mem, COMMON_DRIVER_FEATURE_SELECT, 4, 1);
    w(&mut bus, &mut mem, COMMON_DRIVER_FEATURE, 4, 1);
    w(&mut bus, &mut mem, COMMON_DEVICE_STATUS, 1, 3 | 8);
    w(&mut bus, &mut mem, COMMON_CONFIG_MSIX_VECTOR, 2, 0);
    let rx = MockQueue::new(&mut mem, RX_AT, 16);
    let mut tx = MockQueue::new(&mut mem, TX_AT, 16);
    for (i, m) in [&rx, &tx].into_iter().enumerate() {
        w(&mut bus, &mut mem, COMMON_QUEUE_SELECT, 2, i as u64);
        w(&mut bus, &mut mem, COMMON_QUEUE_SIZE, 2, 16);
        w(&mut bus, &mut mem, COMMON_QUEUE_DESC, 8, m.desc_table);
        w(&mut bus, &mut mem, COMMON_QUEUE_DRIVER, 8, m.avail_ring);
        w(&mut bus, &mut mem, COMMON_QUEUE_DEVICE, 8, m.used_ring);
        w(&mut bus, &mut mem, COMMON_QUEUE_MSIX_VECTOR, 2, i as u64 + 1);
        w(&mut bus, &mut mem, COMMON_QUEUE_ENABLE, 2, 1);
    }
    w(&mut bus, &mut mem, COMMON_DEVICE_STATUS, 1, 15);
    assert!(bus.device::<VirtioPci<Console>>(slot).unwrap().is_live());
    // The guest posts a receive buffer (and notifies: no input yet).
    let mut rx = rx;
    rx.add_chain(&mut mem, &[(BUF, 64, true)]);
    w(&mut bus, &mut mem, NOTIFY_OFFSET, 2, 0);
    assert!(bus.take_msi().is_empty());
    // Output: the guest writes and notifies transmitq (notify_off 1).
    mem.write(BUF + 0x1000, b"login: ").unwrap();
    tx.add_chain(&mut mem, &[(BUF + 0x1000, 7, false)]);
    w(&mut bus, &mut mem, NOTIFY_OFFSET + u64::from(NOTIFY_OFF_MULTIPLIER), 2, 1);
    assert_eq!(bus.take_msi(), [MsiMessage { address: 0xFEE0_0000, data: 0x42 }]);
    let t = bus.device_mut::<VirtioPci<Console>>(slot).unwrap();
    assert_eq!(t.device_mut().take_output(), b"login: ");
    // Input: the VMM pushes and kicks receiveq.
    assert_eq!(t.device_mut().push_input(b"root\n"), 5);
    t.kick(RECEIVEQ, &mut mem);
    assert_eq!(bus.take_msi(), [MsiMessage { address: 0xFEE0_0000, data: 0x41 }]);
    let mut got = [0u8; 5];
    mem.read(BUF, &mut got).unwrap();
    assert_eq!(&got, b"root\n");
    assert_eq!(rx.used_elem(&mem, 0).1, 5);
    // emerg_wr through the device configuration region.
    w(&mut bus, &mut mem, DEVICE_CFG_OFFSET + 8, 4, u64::from(b'#'));
    assert_eq!(bus.device_mut::<VirtioPci<Console>>(slot).unwrap().device_mut().take_output(), b"#");
}
