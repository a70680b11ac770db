//! virtio-blk requests end to end: a driver-side mock queue in a
//! `VecMemory`, the device, and a `MemBackend` disk.

use super::*;
use crate::virtio::mock::{Buf, MockQueue};
use crate::virtio::{VIRTIO_F_EVENT_IDX, VIRTIO_F_VERSION_1, VecMemory};

const SECTORS: usize = 512; // 256 KiB
const HDR: u64 = 0x1_0000;
const DATA: u64 = 0x2_0000;
const STATUS: u64 = 0x8_0000;

struct Rig<B: BlockBackend> {
    mem: VecMemory,
    mock: MockQueue,
    queues: [Queue; 1],
    dev: Block<B>,
}

fn rig() -> Rig<MemBackend> {
    rig_with(MemBackend::new(SECTORS, b"alcove-disk-0"))
}

fn rig_with<B: BlockBackend>(backend: B) -> Rig<B> {
    let mut mem = VecMemory::new(0, 0x10_0000);
    let mock = MockQueue::new(&mut mem, 0x1000, QUEUE_SIZE);
    let mut dev = Block::new(backend);
    dev.ack_features(dev.features());
    let queue = mock.device_queue();
    Rig { mem, mock, queues: [queue], dev }
}

impl<B: BlockBackend> Rig<B> {
    fn header(&mut self, request_type: u32, sector: u64) {
        let mut h = [0u8; 16];
        h[..4].copy_from_slice(&request_type.to_le_bytes());
        h[4..8].copy_from_slice(&0xdead_beefu32.to_le_bytes()); // reserved: ignored
        h[8..].copy_from_slice(&sector.to_le_bytes());
        self.mem.write(HDR, &h).unwrap();
        self.mem.write(STATUS, &[0xff]).unwrap();
    }

    /// Submits `bufs` as one request and runs the device; returns the
    /// status byte at STATUS and the used length.
    fn submit(&mut self, bufs: &[Buf]) -> (u8, u32) {
        let head = self.mock.add_chain(&mut self.mem, bufs);
        self.run().unwrap();
        let last = self.mock.used_idx(&self.mem).wrapping_sub(1);
        let (id, len) = self.mock.used_elem(&self.mem, last);
        assert_eq!(id, u32::from(head));
        (self.status(), len)
    }

    /// A notification as the VMM handles it: queue (the device lock
    /// held), execute (released), complete (held again).
    fn run(&mut self) -> Result<bool, QueueError> {
        let queued = self.dev.process_queue(0, &mut self.queues, &mut self.mem)?;
        assert!(!self.dev.disk().execute(&mut self.mem).budget_spent);
        let completed = self.dev.complete_queue(0, &mut self.queues, &mut self.mem)?;
        Ok(queued | completed)
    }

    fn status(&self) -> u8 {
        let mut s = [0u8];
        self.mem.read(STATUS, &mut s).unwrap();
        s[0]
    }

    fn fill(&mut self, gpa: u64, len: usize, seed: u8) {
        let bytes: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(7).wrapping_add(seed)).collect();
        self.mem.write(gpa, &bytes).unwrap();
    }

    fn guest(&self, gpa: u64, len: usize) -> Vec<u8> {
        let mut v = alloc::vec![0u8; len];
        self.mem.read(gpa, &mut v).unwrap();
        v
    }
}

impl Rig<MemBackend> {
    /// The disk's bytes.
    fn data(&self) -> Vec<u8> {
        self.dev.disk().with_backend(|b| b.data.clone())
    }

    fn flushes(&self) -> u32 {
        self.dev.disk().with_backend(|b| b.flushes)
    }
}

fn config_u32(dev: &Block<MemBackend>, offset: u64) -> u32 {
    let mut b = [0u8; 4];
    dev.read_config(offset, &mut b);
    u32::from_le_bytes(b)
}

#[test]
fn identifies_itself_and_lays_out_config_space() {
    let mut r = rig();
    let dev = &mut r.dev;
    assert_eq!(dev.device_type(), 2);
    assert_eq!(dev.queue_sizes(), &[QUEUE_SIZE]);
    let f = dev.features();
    for bit in [VIRTIO_F_VERSION_1, VIRTIO_F_EVENT_IDX, VIRTIO_BLK_F_SEG_MAX, VIRTIO_BLK_F_BLK_SIZE, VIRTIO_BLK_F_FLUSH]
    {
        assert_ne!(f & feature(bit), 0, "bit {bit}");
    }
    assert_eq!(f & feature(VIRTIO_BLK_F_RO), 0);

    let mut cap = [0u8; 8];
    dev.read_config(0, &mut cap);
    assert_eq!(u64::from_le_bytes(cap), SECTORS as u64);
    assert_eq!(config_u32(dev, 4), 0);
    assert_eq!(config_u32(dev, 12), u32::from(QUEUE_SIZE) - 2);
    assert_eq!(config_u32(dev, 20), 512);
    assert_eq!(config_u32(dev, 34), 0);
    assert_eq!(config_u32(dev, 0x1000), 0);
    dev.write_config(0, &[1, 2, 3, 4]);
    assert_eq!(config_u32(dev, 0), SECTORS as u32);

    dev.ack_features(u64::MAX);
    assert_eq!(dev.acked_features(), f);
    dev.reset();
    assert_eq!(dev.acked_features(), 0);
}

#[test]
fn writes_then_reads_back_across_descriptors() {
    let mut r = rig();
    r.header(VIRTIO_BLK_T_OUT, 3);
    r.fill(DATA, 1536, 1);
    let written = r.guest(DATA, 1536);
    let (status, used) =
        r.submit(&[(HDR, 16, false), (DATA, 512, false), (DATA + 512, 1024, false), (STATUS, 1, true)]);
    assert_eq!((status, used), (VIRTIO_BLK_S_OK, 1));
    assert_eq!(&r.data()[3 * 512..3 * 512 + 1536], &written[..]);

    r.header(VIRTIO_BLK_T_IN, 3);
    let out = DATA + 0x4000;
    let (status, used) = r.submit(&[
        (HDR, 16, false),
        (out, 100, true),
        (out + 0x1000, 1000, true),
        (out + 0x2000, 436, true),
        (STATUS, 1, true),
    ]);
    assert_eq!((status, used), (VIRTIO_BLK_S_OK, 1537));
    let mut back = r.guest(out, 100);
    back.extend(r.guest(out + 0x1000, 1000));
    back.extend(r.guest(out + 0x2000, 436));
    assert_eq!(back, written);
}

#[test]
fn framing_is_the_drivers_choice() {
    // §2.7.4: the header split over two buffers, data and status in one.
    let mut r = rig();
    r.dev.disk().with_backend(|b| b.data[512..1024].fill(0x5a));
    r.header(VIRTIO_BLK_T_IN, 1);
    r.mock.add_chain(&mut r.mem, &[(HDR, 5, false), (HDR + 5, 11, false), (DATA, 513, true)]);
    assert!(r.run().unwrap());
    assert_eq!(r.mock.used_elem(&r.mem, 0).1, 513);
    let got = r.guest(DATA, 513);
    assert!(got[..512].iter().all(|&b| b == 0x5a));
    assert_eq!(got[512], VIRTIO_BLK_S_OK);
}

#[test]
fn large_requests_move_in_chunks() {
    let mut r = rig();
    let len = 2 * CHUNK_BYTES + 1024;
    r.header(VIRTIO_BLK_T_OUT, 10);
    r.fill(DATA, len, 3);
    let written = r.guest(DATA, len);
    let (status, _) = r.submit(&[(HDR, 16, false), (DATA, len as u32, false), (STATUS, 1, true)]);
    assert_eq!(status, VIRTIO_BLK_S_OK);
    assert_eq!(&r.data()[10 * 512..10 * 512 + len], &written[..]);

    r.mem.as_mut_slice()[DATA as usize..DATA as usize + len].fill(0);
    r.header(VIRTIO_BLK_T_IN, 10);
    let (status, used) = r.submit(&[(HDR, 16, false), (DATA, len as u32, true), (STATUS, 1, true)]);
    assert_eq!((status, used), (VIRTIO_BLK_S_OK, len as u32 + 1));
    assert_eq!(r.guest(DATA, len), written);
}

#[test]
fn reads_and_writes_reach_the_last_sector_only() {
    let mut r = rig();
    let last = SECTORS as u64 - 1;
    r.header(VIRTIO_BLK_T_OUT, last);
    r.fill(DATA, 512, 9);
    assert_eq!(r.submit(&[(HDR, 16, false), (DATA, 512, false), (STATUS, 1, true)]).0, VIRTIO_BLK_S_OK);
    r.header(VIRTIO_BLK_T_OUT, last);
    assert_eq!(r.submit(&[(HDR, 16, false), (DATA, 1024, false), (STATUS, 1, true)]).0, VIRTIO_BLK_S_IOERR);
    r.header(VIRTIO_BLK_T_IN, last);
    assert_eq!(r.submit(&[(HDR, 16, false), (DATA, 1024, true), (STATUS, 1, true)]), (VIRTIO_BLK_S_IOERR, 1));
    r.header(VIRTIO_BLK_T_IN, SECTORS as u64);
    assert_eq!(r.submit(&[(HDR, 16, false), (DATA, 512, true), (STATUS, 1, true)]).0, VIRTIO_BLK_S_IOERR);
    for sector in [u64::MAX, u64::MAX / 512, u64::MAX - 1] {
        r.header(VIRTIO_BLK_T_IN, sector);
        assert_eq!(r.submit(&[(HDR, 16, false), (DATA, 512, true), (STATUS, 1, true)]).0, VIRTIO_BLK_S_IOERR);
        r.header(VIRTIO_BLK_T_OUT, sector);
        assert_eq!(r.submit(&[(HDR, 16, false), (DATA, 512, false), (STATUS, 1, true)]).0, VIRTIO_BLK_S_IOERR);
    }
    // An empty read at the end is harmless.
    r.header(VIRTIO_BLK_T_IN, SECTORS as u64);
    assert_eq!(r.submit(&[(HDR, 16, false), (STATUS, 1, true)]), (VIRTIO_BLK_S_OK, 1));
}

#[test]
fn refuses_partial_sectors() {
    let mut r = rig();
    r.header(VIRTIO_BLK_T_IN, 0);
    assert_eq!(r.submit(&[(HDR, 16, false), (DATA, 511, true), (STATUS, 1, true)]).0, VIRTIO_BLK_S_IOERR);
    r.header(VIRTIO_BLK_T_OUT, 0);
    r.fill(DATA, 600, 1);
    assert_eq!(r.submit(&[(HDR, 16, false), (DATA, 600, false), (STATUS, 1, true)]).0, VIRTIO_BLK_S_IOERR);
    assert!(r.data().iter().all(|&b| b == 0), "nothing written");
}

#[test]
fn flushes() {
    let mut r = rig();
    r.header(VIRTIO_BLK_T_FLUSH, 0);
    assert_eq!(r.submit(&[(HDR, 16, false), (STATUS, 1, true)]), (VIRTIO_BLK_S_OK, 1));
    assert_eq!(r.flushes(), 1);
    // Data with a flush is malformed.
    r.header(VIRTIO_BLK_T_FLUSH, 0);
    assert_eq!(r.submit(&[(HDR, 16, false), (DATA, 512, true), (STATUS, 1, true)]).0, VIRTIO_BLK_S_IOERR);
    r.header(VIRTIO_BLK_T_FLUSH, 0);
    assert_eq!(r.submit(&[(HDR, 16, false), (DATA, 512, false), (STATUS, 1, true)]).0, VIRTIO_BLK_S_IOERR);
    assert_eq!(r.flushes(), 1);
}

#[test]
fn reports_its_id() {
    let mut r = rig();
    r.header(VIRTIO_BLK_T_GET_ID, 0);
    r.mem.write(DATA, &[0xee; 32]).unwrap();
    assert_eq!(r.submit(&[(HDR, 16, false), (DATA, 20, true), (STATUS, 1, true)]), (VIRTIO_BLK_S_OK, 21));
    let mut want = [0u8; 20];
    want[..13].copy_from_slice(b"alcove-disk-0");
    assert_eq!(r.guest(DATA, 20), want);
    // A short buffer gets the start; a long one only 20 bytes.
    r.mem.write(DATA, &[0xee; 32]).unwrap();
    r.header(VIRTIO_BLK_T_GET_ID, 0);
    assert_eq!(r.submit(&[(HDR, 16, false), (DATA, 6, true), (STATUS, 1, true)]), (VIRTIO_BLK_S_OK, 7));
    assert_eq!(r.guest(DATA, 7), b"alcove\xee");
    r.header(VIRTIO_BLK_T_GET_ID, 0);
    assert_eq!(r.submit(&[(HDR, 16, false), (DATA, 32, true), (STATUS, 1, true)]), (VIRTIO_BLK_S_OK, 21));
    assert_eq!(r.guest(DATA + 20, 12), [0xee; 12]);
    // Readable data with GET_ID is the wrong direction.
    r.header(VIRTIO_BLK_T_GET_ID, 0);
    assert_eq!(r.submit(&[(HDR, 16, false), (DATA, 20, false), (STATUS, 1, true)]).0, VIRTIO_BLK_S_IOERR);
}

#[test]
fn refuses_data_in_the_wrong_direction() {
    let mut r = rig();
    r.header(VIRTIO_BLK_T_OUT, 0);
    r.mem.write(DATA, &[0x11; 512]).unwrap();
    assert_eq!(r.submit(&[(HDR, 16, false), (DATA, 512, true), (STATUS, 1, true)]), (VIRTIO_BLK_S_IOERR, 1));
    r.header(VIRTIO_BLK_T_IN, 0);
    assert_eq!(r.submit(&[(HDR, 16, false), (DATA, 512, false), (STATUS, 1, true)]).0, VIRTIO_BLK_S_IOERR);
    assert!(r.data().iter().all(|&b| b == 0));
    assert_eq!(r.guest(DATA, 512), [0x11; 512]);
}

#[test]
fn short_requests_get_ioerr() {
    let mut r = rig();
    r.header(VIRTIO_BLK_T_IN, 0);
    // A header of 8 bytes.
    assert_eq!(r.submit(&[(HDR, 8, false), (STATUS, 1, true)]), (VIRTIO_BLK_S_IOERR, 1));
    // No header at all, only a status byte.
    r.header(VIRTIO_BLK_T_IN, 0);
    assert_eq!(r.submit(&[(STATUS, 1, true)]), (VIRTIO_BLK_S_IOERR, 1));
    // The header as writable: no readable bytes.
    r.header(VIRTIO_BLK_T_IN, 0);
    assert_eq!(r.submit(&[(HDR, 16, true), (STATUS, 1, true)]).1, 1);
    assert_eq!(r.status(), VIRTIO_BLK_S_IOERR);
}

#[test]
fn a_request_without_a_status_byte_comes_back_untouched() {
    let mut r = rig();
    r.header(VIRTIO_BLK_T_OUT, 0);
    r.fill(DATA, 512, 1);
    let head = r.mock.add_chain(&mut r.mem, &[(HDR, 16, false), (DATA, 512, false)]);
    r.run().unwrap();
    assert_eq!(r.mock.used_elem(&r.mem, 0), (u32::from(head), 0));
    assert!(r.data().iter().all(|&b| b == 0));
    assert_eq!(r.status(), 0xff);
}

#[test]
fn unknown_types_are_unsupported() {
    let mut r = rig();
    for t in [2, 3, VIRTIO_BLK_T_DISCARD, VIRTIO_BLK_T_WRITE_ZEROES, 99, u32::MAX] {
        r.header(t, 0);
        assert_eq!(r.submit(&[(HDR, 16, false), (DATA, 16, false), (STATUS, 1, true)]), (VIRTIO_BLK_S_UNSUPP, 1));
    }
}

#[test]
fn a_read_only_disk_refuses_writes() {
    let mut backend = MemBackend::new(SECTORS, b"ro");
    backend.read_only = true;
    let mut r = rig_with(backend);
    assert_ne!(r.dev.features() & feature(VIRTIO_BLK_F_RO), 0);
    r.header(VIRTIO_BLK_T_OUT, 0);
    r.fill(DATA, 512, 1);
    assert_eq!(r.submit(&[(HDR, 16, false), (DATA, 512, false), (STATUS, 1, true)]).0, VIRTIO_BLK_S_IOERR);
    assert!(r.data().iter().all(|&b| b == 0));
    r.header(VIRTIO_BLK_T_IN, 0);
    assert_eq!(r.submit(&[(HDR, 16, false), (DATA, 512, true), (STATUS, 1, true)]).0, VIRTIO_BLK_S_OK);
}

/// A disk whose medium has failed.
struct FailingBackend(MemBackend);

impl BlockBackend for FailingBackend {
    fn read(&mut self, _: u64, _: &mut [u8]) -> Result<(), BackendError> {
        Err(BackendError::Io)
    }
    fn write(&mut self, _: u64, _: &[u8]) -> Result<(), BackendError> {
        Err(BackendError::Io)
    }
    fn flush(&mut self) -> Result<(), BackendError> {
        Err(BackendError::Io)
    }
    fn capacity_sectors(&self) -> u64 {
        self.0.capacity_sectors()
    }
    fn id(&self) -> [u8; ID_BYTES] {
        self.0.id()
    }
}

#[test]
fn backend_failures_get_ioerr() {
    let mut r = rig_with(FailingBackend(MemBackend::new(SECTORS, b"bad")));
    r.header(VIRTIO_BLK_T_IN, 0);
    assert_eq!(r.submit(&[(HDR, 16, false), (DATA, 512, true), (STATUS, 1, true)]), (VIRTIO_BLK_S_IOERR, 1));
    r.header(VIRTIO_BLK_T_OUT, 0);
    assert_eq!(r.submit(&[(HDR, 16, false), (DATA, 512, false), (STATUS, 1, true)]).0, VIRTIO_BLK_S_IOERR);
    r.header(VIRTIO_BLK_T_FLUSH, 0);
    assert_eq!(r.submit(&[(HDR, 16, false), (STATUS, 1, true)]).0, VIRTIO_BLK_S_IOERR);
}

#[test]
fn mem_backend_checks_its_bounds() {
    let mut b = MemBackend::new(2, b"0123456789abcdefghijKLMN");
    assert_eq!(&b.id(), b"0123456789abcdefghij");
    let mut buf = [0u8; 512];
    assert_eq!(b.read(2, &mut buf), Err(BackendError::OutOfRange));
    assert_eq!(b.read(u64::MAX, &mut buf), Err(BackendError::OutOfRange));
    assert_eq!(b.write(1, &[0; 1024]), Err(BackendError::OutOfRange));
    b.write(1, &[7; 512]).unwrap();
    b.read(1, &mut buf).unwrap();
    assert_eq!(buf, [7; 512]);
}

#[test]
fn handles_a_batch_and_asks_for_one_interrupt() {
    let mut r = rig();
    for sector in 0..4u64 {
        let hdr = HDR + 0x100 * sector;
        let mut h = [0u8; 16];
        h[..4].copy_from_slice(&VIRTIO_BLK_T_IN.to_le_bytes());
        h[8..].copy_from_slice(&sector.to_le_bytes());
        r.mem.write(hdr, &h).unwrap();
        r.mock.add_chain(
            &mut r.mem,
            &[(hdr, 16, false), (DATA + 0x1000 * sector, 512, true), (STATUS + sector, 1, true)],
        );
    }
    assert_eq!(r.run(), Ok(true));
    assert_eq!(r.mock.used_idx(&r.mem), 4);
    assert_eq!(r.guest(STATUS, 4), [VIRTIO_BLK_S_OK; 4]);
    // With used_event ahead of what is used, no interrupt.
    r.mock.set_used_event(&mut r.mem, 10);
    r.header(VIRTIO_BLK_T_FLUSH, 0);
    r.mock.add_chain(&mut r.mem, &[(HDR, 16, false), (STATUS, 1, true)]);
    assert_eq!(r.run(), Ok(false));
    assert_eq!(r.mock.used_idx(&r.mem), 5);
    assert_eq!(r.dev.process_queue(1, &mut r.queues, &mut r.mem), Ok(false));
}

#[test]
fn a_malformed_chain_breaks_the_device() {
    let mut r = rig();
    r.header(VIRTIO_BLK_T_IN, 0);
    r.mock.add_chain(&mut r.mem, &[(HDR, 16, false), (STATUS, 1, true), (DATA, 512, false)]);
    assert_eq!(r.run(), Err(QueueError::ReadableAfterWritable));
    r.mock.add_chain(&mut r.mem, &[(HDR, 16, false), (0x10_0000, 1, true)]);
    assert!(matches!(r.run(), Err(QueueError::DescriptorOutOfRange { .. })));
    assert_eq!(r.mock.used_idx(&r.mem), 0);
}

#[test]
fn a_notification_only_queues_requests_for_the_backend() {
    let mut r = rig();
    r.header(VIRTIO_BLK_T_OUT, 2);
    r.fill(DATA, 512, 4);
    let written = r.guest(DATA, 512);
    let head = r.mock.add_chain(&mut r.mem, &[(HDR, 16, false), (DATA, 512, false), (STATUS, 1, true)]);
    // Queue: popped and checked, nothing carried out or returned yet.
    assert_eq!(r.dev.process_queue(0, &mut r.queues, &mut r.mem), Ok(false));
    assert!(r.dev.disk().has_work());
    assert!(r.data().iter().all(|&b| b == 0));
    assert_eq!((r.mock.used_idx(&r.mem), r.status()), (0, 0xff));
    // Execute: on the disk, still not returned.
    assert!(r.dev.disk().execute(&mut r.mem).to_complete);
    assert!(!r.dev.disk().has_work());
    assert_eq!(&r.data()[2 * 512..3 * 512], &written[..]);
    assert_eq!((r.mock.used_idx(&r.mem), r.status()), (0, 0xff));
    // Complete: status, used entry, interrupt.
    assert_eq!(r.dev.complete_queue(0, &mut r.queues, &mut r.mem), Ok(true));
    assert!(!r.dev.disk().has_completions());
    assert_eq!(r.status(), VIRTIO_BLK_S_OK);
    assert_eq!(r.mock.used_elem(&r.mem, 0), (u32::from(head), 1));
    // Nothing twice.
    assert!(!r.dev.disk().execute(&mut r.mem).to_complete);
    assert_eq!(r.dev.complete_queue(0, &mut r.queues, &mut r.mem), Ok(false));
    assert_eq!(r.mock.used_idx(&r.mem), 1);
}

#[test]
fn requests_queued_before_a_reset_are_dropped() {
    let mut r = rig();
    r.header(VIRTIO_BLK_T_OUT, 0);
    r.fill(DATA, 512, 4);
    r.mock.add_chain(&mut r.mem, &[(HDR, 16, false), (DATA, 512, false), (STATUS, 1, true)]);
    r.dev.process_queue(0, &mut r.queues, &mut r.mem).unwrap();
    // The transport's reset: the device's, then its queues'.
    r.dev.reset();
    r.queues[0] = r.mock.device_queue();
    r.queues[0].next_avail = 1;
    assert!(!r.dev.disk().execute(&mut r.mem).to_complete, "nothing to carry out");
    assert!(r.data().iter().all(|&b| b == 0), "the forgotten write reached the disk");
    assert_eq!(r.dev.complete_queue(0, &mut r.queues, &mut r.mem), Ok(false));
    assert_eq!((r.mock.used_idx(&r.mem), r.status()), (0, 0xff));
}

#[test]
fn requests_in_flight_are_bounded() {
    // A driver that reuses table entries of chains still in flight: at
    // most a queue's worth of them is taken.
    let mut r = rig();
    r.header(VIRTIO_BLK_T_FLUSH, 0);
    for _ in 0..QUEUE_SIZE {
        r.mock.add_chain(&mut r.mem, &[(HDR, 16, false), (STATUS, 1, true)]);
    }
    r.queues[0].start_pass();
    r.dev.process_queue(0, &mut r.queues, &mut r.mem).unwrap();
    assert!(!r.queues[0].deferred());
    r.mock.add_chain(&mut r.mem, &[(HDR, 16, false), (STATUS, 1, true)]);
    r.queues[0].start_pass();
    r.dev.process_queue(0, &mut r.queues, &mut r.mem).unwrap();
    assert!(r.queues[0].deferred(), "a request past the queue size was taken");
    assert_eq!(r.queues[0].next_avail, QUEUE_SIZE);
    r.dev.disk().execute(&mut r.mem);
    r.dev.complete_queue(0, &mut r.queues, &mut r.mem).unwrap();
    assert_eq!(r.flushes(), u32::from(QUEUE_SIZE));
    // Once they are back, the next pass takes the rest.
    r.queues[0].start_pass();
    r.dev.process_queue(0, &mut r.queues, &mut r.mem).unwrap();
    assert!(!r.queues[0].deferred());
    r.dev.disk().execute(&mut r.mem);
    r.dev.complete_queue(0, &mut r.queues, &mut r.mem).unwrap();
    assert_eq!(r.mock.used_idx(&r.mem), QUEUE_SIZE + 1);

    // And their descriptors (they live in the VMM's heap until completed):
    // flushes with 1023 empty descriptors in an indirect table each.
    let mut r = rig();
    r.header(VIRTIO_BLK_T_FLUSH, 0);
    let mut bufs = alloc::vec![(HDR, 16, false)];
    bufs.extend(core::iter::repeat_n((DATA, 0, false), 1022));
    bufs.push((STATUS, 1, true));
    for i in 0..3u64 {
        r.mock.add_indirect_chain(&mut r.mem, 0x4_0000 + 0x4000 * i, &bufs);
    }
    r.queues[0].start_pass();
    r.dev.process_queue(0, &mut r.queues, &mut r.mem).unwrap();
    assert!(r.queues[0].deferred());
    assert_eq!(r.queues[0].next_avail, (MAX_IN_FLIGHT_DESCRIPTORS / 1024) as u16);
    // Each completion makes room for the next.
    for done in 1..=3 {
        r.queues[0].start_pass();
        r.run().unwrap();
        assert_eq!(r.mock.used_idx(&r.mem), done);
    }
    assert_eq!(r.mock.used_idx(&r.mem), 3);
    assert_eq!(r.flushes(), 3);
}

#[test]
fn one_execute_carries_out_at_most_its_budget() {
    let mut r = rig();
    r.header(VIRTIO_BLK_T_FLUSH, 0);
    for _ in 0..5 {
        r.mock.add_chain(&mut r.mem, &[(HDR, 16, false), (STATUS, 1, true)]);
    }
    r.dev.process_queue(0, &mut r.queues, &mut r.mem).unwrap();
    let disk = r.dev.disk().clone();
    assert_eq!(disk.execute_at_most(&mut r.mem, 2), Executed { to_complete: true, budget_spent: true });
    assert_eq!(r.flushes(), 2);
    assert!(disk.has_work());
    assert_eq!(disk.execute_at_most(&mut r.mem, 3), Executed { to_complete: true, budget_spent: false });
    assert_eq!(r.flushes(), 5);
    r.dev.complete_queue(0, &mut r.queues, &mut r.mem).unwrap();
    assert_eq!(r.mock.used_idx(&r.mem), 5);
}

/// A disk whose every byte says where it is: byte `i` is `i * 13 + i / 512`.
fn patterned(sectors: usize) -> MemBackend {
    let mut b = MemBackend::new(sectors, b"pattern");
    for (i, v) in b.data.iter_mut().enumerate() {
        *v = (i as u8).wrapping_mul(13).wrapping_add((i / 512) as u8);
    }
    b
}

impl<B: BlockBackend> Rig<B> {
    /// Reads `len` bytes from `sector` as the guest would: status and data.
    fn read_guest(&mut self, sector: u64, len: u32) -> (u8, Vec<u8>) {
        self.header(VIRTIO_BLK_T_IN, sector);
        self.mem.write(DATA, &alloc::vec![0xee; len as usize]).unwrap();
        let (status, _) = self.submit(&[(HDR, 16, false), (DATA, len, true), (STATUS, 1, true)]);
        (status, self.guest(DATA, len as usize))
    }
}

fn disk_bytes(b: &MemBackend, sector: u64, len: u32) -> Vec<u8> {
    b.data[sector as usize * 512..][..len as usize].to_vec()
}

#[test]
fn small_sequential_reads_are_served_from_one_read_ahead_window() {
    let mut r = rig_with(patterned(SECTORS));
    let want = patterned(SECTORS);
    // A first read (nothing before it) goes as asked; the sequential ones
    // after it come from one 64 KiB backend read.
    let mut sector = 0;
    for len in [1024u32, 2048, 512, 7168, 1024, 2048] {
        assert_eq!(r.read_guest(sector, len), (VIRTIO_BLK_S_OK, disk_bytes(&want, sector, len)), "sector {sector}");
        sector += u64::from(len) / 512;
    }
    let reads = r.dev.disk().with_backend(|b| b.reads.clone());
    assert_eq!(reads, [(0, 1024), (2, CHUNK_BYTES)]);
    // Past the window: another window from where the reads got to.
    let past = 2 + (CHUNK_BYTES / 512) as u64;
    let mut r = rig_with(patterned(SECTORS));
    assert_eq!(r.read_guest(past - 2, 1024).1, disk_bytes(&want, past - 2, 1024));
    assert_eq!(r.read_guest(past, 4096).1, disk_bytes(&want, past, 4096));
    assert_eq!(r.read_guest(past + 8, 4096).1, disk_bytes(&want, past + 8, 4096));
    assert_eq!(r.dev.disk().with_backend(|b| b.reads.len()), 2);
}

#[test]
fn a_write_or_a_jump_ends_the_read_ahead_window() {
    let mut r = rig_with(patterned(SECTORS));
    r.read_guest(0, 1024);
    r.read_guest(2, 1024); // window from sector 2
    // The guest writes sector 4 (inside the window), then reads on from it.
    r.header(VIRTIO_BLK_T_OUT, 4);
    r.fill(DATA, 512, 0x5a);
    let written = r.guest(DATA, 512);
    assert_eq!(r.submit(&[(HDR, 16, false), (DATA, 512, false), (STATUS, 1, true)]).0, VIRTIO_BLK_S_OK);
    let (status, data) = r.read_guest(4, 1024);
    assert_eq!(status, VIRTIO_BLK_S_OK);
    assert_eq!(&data[..512], &written[..], "the write, not the window's old copy");
    assert_eq!(&data[512..], &disk_bytes(&patterned(SECTORS), 5, 512)[..]);
    // A backend changed from outside (set-up) is read again too.
    r.dev.disk().with_backend(|b| b.data[6 * 512] = 0x77);
    assert_eq!(r.read_guest(6, 512).1[0], 0x77);
    // A read elsewhere (not sequential) goes to the backend as asked.
    let before = r.dev.disk().with_backend(|b| b.reads.len());
    r.read_guest(100, 512);
    assert_eq!(r.dev.disk().with_backend(|b| b.reads.last().copied()), Some((100, 512)));
    assert_eq!(r.dev.disk().with_backend(|b| b.reads.len()), before + 1);
}

#[test]
fn the_read_ahead_window_stops_at_the_disks_end() {
    let want = patterned(SECTORS);
    let end = SECTORS as u64;
    let mut r = rig_with(patterned(SECTORS));
    r.read_guest(end - 12, 1024);
    assert_eq!(r.read_guest(end - 10, 1024).1, disk_bytes(&want, end - 10, 1024));
    assert_eq!(r.read_guest(end - 8, 4096).1, disk_bytes(&want, end - 8, 4096));
    let reads = r.dev.disk().with_backend(|b| b.reads.clone());
    assert_eq!(reads, [(end - 12, 1024), (end - 10, 5120)]);
    // The last sectors exactly: nothing to read ahead, read as asked.
    assert_eq!(r.read_guest(end - 2, 1024).1, disk_bytes(&want, end - 2, 1024));
    // Past the end: refused as before.
    assert_eq!(r.read_guest(end, 512).0, VIRTIO_BLK_S_IOERR);
}

/// A disk whose sectors from `bad` on cannot be read.
struct BadFrom(MemBackend, u64);

impl BlockBackend for BadFrom {
    fn read(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), BackendError> {
        if sector + buf.len() as u64 / 512 > self.1 {
            return Err(BackendError::Io);
        }
        self.0.read(sector, buf)
    }
    fn write(&mut self, sector: u64, data: &[u8]) -> Result<(), BackendError> {
        self.0.write(sector, data)
    }
    fn flush(&mut self) -> Result<(), BackendError> {
        self.0.flush()
    }
    fn capacity_sectors(&self) -> u64 {
        self.0.capacity_sectors()
    }
    fn id(&self) -> [u8; ID_BYTES] {
        self.0.id()
    }
}

#[test]
fn a_bad_sector_past_a_read_fails_only_the_read_that_reaches_it() {
    let want = patterned(SECTORS);
    let mut r = rig_with(BadFrom(patterned(SECTORS), 20));
    r.read_guest(10, 1024);
    // The window (12..140) reaches the bad sectors: read as asked instead.
    assert_eq!(r.read_guest(12, 1024), (VIRTIO_BLK_S_OK, disk_bytes(&want, 12, 1024)));
    assert_eq!(r.read_guest(14, 3072), (VIRTIO_BLK_S_OK, disk_bytes(&want, 14, 3072)));
    assert_eq!(r.read_guest(20, 512).0, VIRTIO_BLK_S_IOERR);
}
