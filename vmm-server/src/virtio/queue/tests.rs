//! Tests of the split virtqueue against a driver-side mock, including every
//! malformed-chain case and a fuzz-style run over random rings.

use core::cell::Cell;

use super::*;
use crate::virtio::mock::MockQueue;
use crate::virtio::{VIRTIO_F_VERSION_1, feature};

const MEM_SIZE: usize = 0x10_0000;
const RING_BASE: u64 = 0x1000;
const TABLE: u64 = 0x2_0000;

fn setup(size: u16) -> (VecMemory, MockQueue, Queue) {
    let mut mem = VecMemory::new(0, MEM_SIZE);
    let mock = MockQueue::new(&mut mem, RING_BASE, size);
    let q = mock.device_queue();
    (mem, mock, q)
}

fn pop_err(q: &mut Queue, mem: &mut VecMemory) -> QueueError {
    q.pop(mem).expect_err("chain should be refused")
}

fn pop_ok(q: &mut Queue, mem: &mut VecMemory) -> DescriptorChain {
    q.pop(mem).unwrap().expect("a chain")
}

fn desc(addr: u64, len: u32, writable: bool) -> Descriptor {
    Descriptor { addr, len, writable }
}

#[test]
fn empty_and_not_ready_queues_pop_nothing() {
    let (mut mem, mut mock, mut q) = setup(16);
    assert_eq!(q.pop(&mut mem), Ok(None));
    mock.add_chain(&mut mem, &[(0x10000, 8, false)]);
    q.ready = false;
    assert_eq!(q.pop(&mut mem), Ok(None));
    q.ready = true;
    assert!(q.pop(&mut mem).unwrap().is_some());
    assert_eq!(q.pop(&mut mem), Ok(None));
}

#[test]
fn pops_a_chain_and_returns_it_through_the_used_ring() {
    let (mut mem, mut mock, mut q) = setup(16);
    let head = mock.add_chain(&mut mem, &[(0x10000, 100, false), (0x11000, 200, true), (0x12000, 1, true)]);
    let chain = pop_ok(&mut q, &mut mem);
    assert_eq!(chain.head_index(), head);
    assert_eq!(chain.descriptors(), &[desc(0x10000, 100, false), desc(0x11000, 200, true), desc(0x12000, 1, true)]);
    assert_eq!(chain.readable(), &[desc(0x10000, 100, false)]);
    assert_eq!(chain.writable().len(), 2);
    assert_eq!((chain.readable_len(), chain.writable_len()), (100, 201));
    assert_eq!(chain.iter().count(), 3);
    assert_eq!((&chain).into_iter().filter(|d| d.writable).count(), 2);

    q.add_used(&mut mem, head, 50).unwrap();
    assert_eq!(mock.used_idx(&mem), 1);
    assert_eq!(mock.used_elem(&mem, 0), (u32::from(head), 50));
    assert_eq!(q.pop(&mut mem), Ok(None));
}

#[test]
fn pops_chains_in_order_across_the_index_wrap() {
    let (mut mem, mut mock, mut q) = setup(4);
    mock.set_avail_idx(&mut mem, 65534);
    q.next_avail = 65534;
    q.next_used = 65534;
    let heads: Vec<u16> = (0..4).map(|i| mock.add_chain(&mut mem, &[(0x10000 + i * 0x100, 16, true)])).collect();
    for &h in &heads {
        let chain = pop_ok(&mut q, &mut mem);
        assert_eq!(chain.head_index(), h);
        q.add_used(&mut mem, h, 16).unwrap();
    }
    assert_eq!(q.pop(&mut mem), Ok(None));
    assert_eq!((q.next_avail, q.next_used), (2, 2));
    assert_eq!(mock.used_idx(&mem), 2);
    for (i, &h) in heads.iter().enumerate() {
        assert_eq!(mock.used_elem(&mem, 65534u16.wrapping_add(i as u16)), (u32::from(h), 16));
    }
}

#[test]
fn reads_and_writes_the_streams_across_buffers() {
    let (mut mem, mut mock, mut q) = setup(16);
    mem.write(0x10000, b"abc").unwrap();
    mem.write(0x10100, b"defgh").unwrap();
    mock.add_chain(&mut mem, &[(0x10000, 3, false), (0x10100, 5, false), (0x11000, 4, true), (0x11100, 4, true)]);
    let chain = pop_ok(&mut q, &mut mem);

    let mut buf = [0u8; 6];
    assert_eq!(chain.read_at(&mem, 1, &mut buf), Ok(6));
    assert_eq!(&buf, b"bcdefg");
    assert_eq!(chain.read_at(&mem, 6, &mut buf), Ok(2));
    assert_eq!(&buf[..2], b"gh");
    assert_eq!(chain.read_at(&mem, 8, &mut buf), Ok(0));
    assert_eq!(chain.read_at(&mem, u64::MAX, &mut buf), Ok(0));

    assert_eq!(chain.write_at(&mut mem, 2, b"12345"), Ok(5));
    let mut out = [0u8; 4];
    mem.read(0x11000, &mut out).unwrap();
    assert_eq!(&out, b"\0\x0012");
    mem.read(0x11100, &mut out).unwrap();
    assert_eq!(&out, b"345\0");
    assert_eq!(chain.write_at(&mut mem, 7, b"xyz"), Ok(1));
}

#[test]
fn validate_checks_size_alignment_and_memory() {
    let (mem, _mock, q) = setup(16);
    q.validate(&mem).unwrap();
    for size in [0, 3, 12, 32] {
        let mut bad = q.clone();
        bad.size = size;
        assert!(matches!(bad.validate(&mem), Err(QueueError::InvalidSize { .. })), "size {size}");
    }
    let mut bad = q.clone();
    bad.desc_table += 8;
    assert_eq!(
        bad.validate(&mem),
        Err(QueueError::Misaligned { area: QueueArea::DescriptorTable, addr: RING_BASE + 8 })
    );
    let mut bad = q.clone();
    bad.avail_ring += 1;
    assert!(matches!(bad.validate(&mem), Err(QueueError::Misaligned { area: QueueArea::AvailRing, .. })));
    let mut bad = q.clone();
    bad.used_ring += 2;
    assert!(matches!(bad.validate(&mem), Err(QueueError::Misaligned { area: QueueArea::UsedRing, .. })));
    let mut bad = q.clone();
    bad.used_ring = MEM_SIZE as u64 - 8;
    assert!(matches!(bad.validate(&mem), Err(QueueError::AreaOutsideMemory { area: QueueArea::UsedRing, .. })));
    let mut bad = q.clone();
    bad.desc_table = u64::MAX - 15;
    assert!(matches!(bad.validate(&mem), Err(QueueError::AreaOutsideMemory { .. })));
}

#[test]
fn queue_reset_forgets_the_configuration() {
    let (mut mem, mut mock, mut q) = setup(16);
    mock.add_chain(&mut mem, &[(0x10000, 8, true)]);
    pop_ok(&mut q, &mut mem);
    q.reset();
    assert_eq!(q, Queue::new(16));
}

#[test]
fn pops_an_indirect_chain() {
    let (mut mem, mut mock, mut q) = setup(16);
    let head =
        mock.add_indirect_chain(&mut mem, TABLE, &[(0x10000, 16, false), (0x11000, 512, true), (0x12000, 1, true)]);
    let chain = pop_ok(&mut q, &mut mem);
    assert_eq!(chain.head_index(), head);
    assert_eq!(chain.descriptors(), &[desc(0x10000, 16, false), desc(0x11000, 512, true), desc(0x12000, 1, true)]);
    assert_eq!((chain.readable_len(), chain.writable_len()), (16, 513));
}

#[test]
fn indirect_tables_follow_next_and_may_end_a_direct_chain() {
    let (mut mem, mut mock, mut q) = setup(16);
    // Table entries linked 0 -> 2 -> 1.
    MockQueue::write_desc_at(&mut mem, TABLE, 0, 0x10000, 4, VIRTQ_DESC_F_NEXT, 2);
    MockQueue::write_desc_at(&mut mem, TABLE, 1, 0x12000, 6, VIRTQ_DESC_F_WRITE, 0);
    MockQueue::write_desc_at(&mut mem, TABLE, 2, 0x11000, 5, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 1);
    // A direct readable descriptor, then one that refers to the table. Its
    // WRITE flag is ignored (§2.7.5.3.2).
    mock.set_desc(&mut mem, 3, 0x13000, 7, VIRTQ_DESC_F_NEXT, 5);
    mock.set_desc(&mut mem, 5, TABLE, 48, VIRTQ_DESC_F_INDIRECT | VIRTQ_DESC_F_WRITE, 0);
    mock.publish(&mut mem, 3);
    let chain = pop_ok(&mut q, &mut mem);
    assert_eq!(chain.head_index(), 3);
    assert_eq!(
        chain.descriptors(),
        &[desc(0x13000, 7, false), desc(0x10000, 4, false), desc(0x11000, 5, true), desc(0x12000, 6, true)]
    );
}

#[test]
fn refuses_a_loop() {
    let (mut mem, mut mock, mut q) = setup(16);
    mock.set_desc(&mut mem, 0, 0x10000, 8, VIRTQ_DESC_F_NEXT, 1);
    mock.set_desc(&mut mem, 1, 0x10000, 8, VIRTQ_DESC_F_NEXT, 0);
    mock.publish(&mut mem, 0);
    assert_eq!(pop_err(&mut q, &mut mem), QueueError::ChainTooLong { limit: 16 });
    // The chain is consumed: the device moves on (or is reset).
    assert_eq!(q.next_avail, 1);
    assert_eq!(q.pop(&mut mem), Ok(None));
}

#[test]
fn refuses_a_self_loop() {
    let (mut mem, mut mock, mut q) = setup(2);
    mock.set_desc(&mut mem, 1, 0x10000, 8, VIRTQ_DESC_F_NEXT, 1);
    mock.publish(&mut mem, 1);
    assert_eq!(pop_err(&mut q, &mut mem), QueueError::ChainTooLong { limit: 2 });
}

#[test]
fn a_loop_through_the_largest_queue_ends() {
    let mut mem = VecMemory::new(0, 0x90_0000);
    let mut mock = MockQueue::new(&mut mem, 0x1000, MAX_QUEUE_SIZE);
    for i in 0..MAX_QUEUE_SIZE {
        mock.set_desc(&mut mem, i, 0x80_0000, 1, VIRTQ_DESC_F_NEXT, (i + 1) % MAX_QUEUE_SIZE);
    }
    mock.publish(&mut mem, 77);
    let mut q = mock.device_queue();
    assert_eq!(pop_err(&mut q, &mut mem), QueueError::ChainTooLong { limit: 32768 });
}

#[test]
fn refuses_next_out_of_range() {
    let (mut mem, mut mock, mut q) = setup(16);
    mock.set_desc(&mut mem, 0, 0x10000, 8, VIRTQ_DESC_F_NEXT, 16);
    mock.publish(&mut mem, 0);
    assert_eq!(pop_err(&mut q, &mut mem), QueueError::NextOutOfRange { next: 16, limit: 16 });
}

#[test]
fn refuses_a_head_out_of_range() {
    let (mut mem, mut mock, mut q) = setup(16);
    mock.publish(&mut mem, 16);
    assert_eq!(pop_err(&mut q, &mut mem), QueueError::HeadOutOfRange { head: 16, size: 16 });
    mock.publish(&mut mem, u16::MAX);
    assert_eq!(pop_err(&mut q, &mut mem), QueueError::HeadOutOfRange { head: u16::MAX, size: 16 });
}

#[test]
fn refuses_an_avail_index_too_far_ahead() {
    let (mut mem, mut mock, mut q) = setup(16);
    mock.set_avail_idx(&mut mem, 17);
    assert_eq!(pop_err(&mut q, &mut mem), QueueError::AvailIndexTooFar { avail_idx: 17, next_avail: 0, size: 16 });
    // Going backwards looks the same: 65535 ahead.
    mock.set_avail_idx(&mut mem, u16::MAX);
    assert!(matches!(pop_err(&mut q, &mut mem), QueueError::AvailIndexTooFar { .. }));
    assert_eq!(q.next_avail, 0);
}

#[test]
fn refuses_buffers_outside_memory() {
    let (mut mem, mut mock, mut q) = setup(16);
    let end = MEM_SIZE as u64;
    mock.add_chain(&mut mem, &[(end - 10, 20, false)]);
    assert_eq!(pop_err(&mut q, &mut mem), QueueError::DescriptorOutOfRange { addr: end - 10, len: 20 });
    mock.add_chain(&mut mem, &[(0x10000, 8, false), (end, 1, true)]);
    assert_eq!(pop_err(&mut q, &mut mem), QueueError::DescriptorOutOfRange { addr: end, len: 1 });
    // Exactly up to the end is fine.
    mock.add_chain(&mut mem, &[(end - 10, 10, true)]);
    assert_eq!(pop_ok(&mut q, &mut mem).descriptors(), &[desc(end - 10, 10, true)]);
}

#[test]
fn refuses_buffers_whose_end_overflows() {
    let (mut mem, mut mock, mut q) = setup(16);
    mock.add_chain(&mut mem, &[(u64::MAX - 4, 16, false)]);
    assert_eq!(pop_err(&mut q, &mut mem), QueueError::DescriptorOutOfRange { addr: u64::MAX - 4, len: 16 });
    mock.add_chain(&mut mem, &[(0x10000, u32::MAX, true)]);
    assert!(matches!(pop_err(&mut q, &mut mem), QueueError::DescriptorOutOfRange { .. }));
}

#[test]
fn refuses_readable_after_writable() {
    let (mut mem, mut mock, mut q) = setup(16);
    mock.add_chain(&mut mem, &[(0x10000, 8, false), (0x11000, 8, true), (0x12000, 8, false)]);
    assert_eq!(pop_err(&mut q, &mut mem), QueueError::ReadableAfterWritable);
    // Across the indirect boundary as well.
    MockQueue::write_desc_at(&mut mem, TABLE, 0, 0x10000, 8, 0, 0);
    mock.set_desc(&mut mem, 8, 0x11000, 8, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 9);
    mock.set_desc(&mut mem, 9, TABLE, 16, VIRTQ_DESC_F_INDIRECT, 0);
    mock.publish(&mut mem, 8);
    assert_eq!(pop_err(&mut q, &mut mem), QueueError::ReadableAfterWritable);
}

/// Guest RAM that claims a terabyte (reads past the backing are zeros), to
/// reach the 2^32-byte chain limit.
struct HugeMemory(VecMemory);

impl GuestMemory for HugeMemory {
    fn check_range(&self, gpa: u64, len: u64) -> Result<(), MemError> {
        match gpa.checked_add(len) {
            Some(end) if end <= 1 << 40 => Ok(()),
            _ => Err(MemError { gpa, len }),
        }
    }
    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), MemError> {
        self.0.read(gpa, buf).or_else(|_| {
            buf.fill(0);
            Ok(())
        })
    }
    fn write(&mut self, gpa: u64, data: &[u8]) -> Result<(), MemError> {
        self.0.write(gpa, data)
    }
}

#[test]
fn refuses_chains_of_4_gib_or_more() {
    let (mut mem, mut mock, mut q) = setup(16);
    mock.add_chain(&mut mem, &[(0x1_0000_0000, u32::MAX, false), (0x2_0000_0000, 0, true)]);
    mock.add_chain(&mut mem, &[(0x1_0000_0000, u32::MAX, false), (0x2_0000_0000, 1, true)]);
    let mut huge = HugeMemory(mem);
    let chain = q.pop(&mut huge).unwrap().unwrap();
    assert_eq!(chain.readable_len(), u32::MAX);
    assert_eq!(q.pop(&mut huge), Err(QueueError::ChainTooLarge));
}

#[test]
fn refuses_malformed_indirect_descriptors() {
    let (mut mem, mut mock, mut q) = setup(16);
    MockQueue::write_desc_at(&mut mem, TABLE, 0, 0x10000, 8, VIRTQ_DESC_F_NEXT, 1);
    MockQueue::write_desc_at(&mut mem, TABLE, 1, 0x11000, 8, VIRTQ_DESC_F_WRITE, 0);
    let mut offer = |mem: &mut VecMemory, addr: u64, len: u32, flags: u16| {
        mock.set_desc(mem, 0, addr, len, flags, 1);
        mock.publish(mem, 0);
    };
    let indirect = VIRTQ_DESC_F_INDIRECT;

    offer(&mut mem, TABLE, 32, indirect | VIRTQ_DESC_F_NEXT);
    assert_eq!(pop_err(&mut q, &mut mem), QueueError::IndirectWithNext);
    for len in [0, 8, 24, 1025 * 16] {
        offer(&mut mem, TABLE, len, indirect);
        assert_eq!(pop_err(&mut q, &mut mem), QueueError::IndirectTableLength { len });
    }
    offer(&mut mem, MEM_SIZE as u64 - 16, 32, indirect);
    assert_eq!(pop_err(&mut q, &mut mem), QueueError::DescriptorOutOfRange { addr: MEM_SIZE as u64 - 16, len: 32 });
    offer(&mut mem, u64::MAX - 15, 32, indirect);
    assert!(matches!(pop_err(&mut q, &mut mem), QueueError::DescriptorOutOfRange { .. }));

    // Not negotiated.
    let mut legacy = q.clone();
    legacy.set_features(feature(VIRTIO_F_VERSION_1));
    offer(&mut mem, TABLE, 32, indirect);
    assert_eq!(pop_err(&mut legacy, &mut mem), QueueError::IndirectNotNegotiated);
    q.next_avail = legacy.next_avail;

    // Well-formed, to show the table itself is good.
    offer(&mut mem, TABLE, 32, indirect);
    assert_eq!(pop_ok(&mut q, &mut mem).descriptors().len(), 2);

    // Nested.
    MockQueue::write_desc_at(&mut mem, TABLE, 1, TABLE, 32, VIRTQ_DESC_F_INDIRECT, 0);
    offer(&mut mem, TABLE, 32, indirect);
    assert_eq!(pop_err(&mut q, &mut mem), QueueError::NestedIndirect);

    // A loop inside the table.
    MockQueue::write_desc_at(&mut mem, TABLE, 1, 0x11000, 8, VIRTQ_DESC_F_NEXT, 0);
    offer(&mut mem, TABLE, 32, indirect);
    assert_eq!(pop_err(&mut q, &mut mem), QueueError::ChainTooLong { limit: 2 });

    // Next past the table's end (but inside the queue size).
    MockQueue::write_desc_at(&mut mem, TABLE, 1, 0x11000, 8, VIRTQ_DESC_F_NEXT, 2);
    offer(&mut mem, TABLE, 32, indirect);
    assert_eq!(pop_err(&mut q, &mut mem), QueueError::NextOutOfRange { next: 2, limit: 2 });

    // A buffer in the table outside memory.
    MockQueue::write_desc_at(&mut mem, TABLE, 1, MEM_SIZE as u64, 8, VIRTQ_DESC_F_WRITE, 0);
    offer(&mut mem, TABLE, 32, indirect);
    assert!(matches!(pop_err(&mut q, &mut mem), QueueError::DescriptorOutOfRange { .. }));
}

#[test]
fn large_indirect_tables_are_accepted_up_to_the_limit() {
    let (mut mem, mut mock, mut q) = setup(16);
    let n = MIN_INDIRECT_LIMIT as u16;
    for i in 0..n {
        let flags = if i + 1 < n { VIRTQ_DESC_F_NEXT } else { 0 } | VIRTQ_DESC_F_WRITE;
        MockQueue::write_desc_at(&mut mem, TABLE, i, 0x10000, 1, flags, i + 1);
    }
    mock.set_desc(&mut mem, 0, TABLE, u32::from(n) * 16, VIRTQ_DESC_F_INDIRECT, 0);
    mock.publish(&mut mem, 0);
    let chain = pop_ok(&mut q, &mut mem);
    assert_eq!(chain.descriptors().len(), usize::from(n));
    assert_eq!(chain.writable_len(), u32::from(n));
}

#[test]
fn add_used_refuses_a_head_out_of_range() {
    let (mut mem, mock, mut q) = setup(16);
    assert_eq!(q.add_used(&mut mem, 16, 0), Err(QueueError::UsedHeadOutOfRange { head: 16, size: 16 }));
    assert_eq!(mock.used_idx(&mem), 0);
}

#[test]
fn a_zero_size_queue_neither_panics_nor_pops() {
    let (mut mem, mut mock, mut q) = setup(16);
    mock.add_chain(&mut mem, &[(0x10000, 8, true)]);
    q.size = 0;
    assert_eq!(q.pop(&mut mem), Ok(None));
    assert!(q.add_used(&mut mem, 0, 0).is_err());
    assert!(!q.needs_notification(&mem));
}

#[test]
fn rings_outside_memory_are_errors_not_panics() {
    let (mut mem, mut mock, mut q) = setup(16);
    mock.add_chain(&mut mem, &[(0x10000, 8, true)]);
    let mut bad = q.clone();
    bad.avail_ring = u64::MAX - 1;
    assert!(matches!(bad.pop(&mut mem), Err(QueueError::Memory(_))));
    let mut bad = q.clone();
    bad.desc_table = u64::MAX - 20;
    assert!(matches!(bad.pop(&mut mem), Err(QueueError::Memory(_))));
    let mut bad = q.clone();
    bad.used_ring = u64::MAX - 3;
    assert!(matches!(bad.pop(&mut mem), Err(QueueError::Memory(_))));
    assert!(matches!(bad.add_used(&mut mem, 0, 1), Err(QueueError::Memory(_))));
    // Nothing was published: no interrupt.
    assert!(!bad.needs_notification(&mem));
    // Something was, but used_event cannot be read: interrupt to be safe.
    q.add_used(&mut mem, 0, 1).unwrap();
    q.avail_ring = u64::MAX;
    assert!(q.needs_notification(&mem));
}

#[test]
fn pop_publishes_avail_event() {
    let (mut mem, mut mock, mut q) = setup(16);
    for _ in 0..3 {
        mock.add_chain(&mut mem, &[(0x10000, 8, true)]);
    }
    pop_ok(&mut q, &mut mem);
    assert_eq!(mock.avail_event(&mem), 1);
    pop_ok(&mut q, &mut mem);
    pop_ok(&mut q, &mut mem);
    assert_eq!(mock.avail_event(&mem), 3);

    // Without EVENT_IDX the field is left alone.
    let (mut mem, mut mock, mut q) = setup(16);
    q.set_features(feature(VIRTIO_F_VERSION_1));
    mock.add_chain(&mut mem, &[(0x10000, 8, true)]);
    pop_ok(&mut q, &mut mem);
    assert_eq!(mock.avail_event(&mem), 0);
}

#[test]
fn event_idx_interrupts_only_past_used_event() {
    let (mut mem, mock, mut q) = setup(16);
    assert!(!q.needs_notification(&mem), "nothing used yet");
    mock.set_used_event(&mut mem, 1);
    q.add_used(&mut mem, 0, 0).unwrap(); // used 0 -> 1: not past event 1
    assert!(!q.needs_notification(&mem));
    q.add_used(&mut mem, 0, 0).unwrap(); // 1 -> 2: passes 1
    assert!(q.needs_notification(&mem));
    assert!(!q.needs_notification(&mem), "already told");

    mock.set_used_event(&mut mem, 3);
    for _ in 0..3 {
        q.add_used(&mut mem, 0, 0).unwrap(); // 2 -> 5 in one batch
    }
    assert!(q.needs_notification(&mem));
    mock.set_used_event(&mut mem, 10);
    q.add_used(&mut mem, 0, 0).unwrap();
    assert!(!q.needs_notification(&mem));
    // The NO_INTERRUPT flag means nothing under EVENT_IDX (§2.7.7.2).
    mock.set_avail_flags(&mut mem, VIRTQ_AVAIL_F_NO_INTERRUPT);
    mock.set_used_event(&mut mem, 6);
    q.add_used(&mut mem, 0, 0).unwrap(); // 6 -> 7
    assert!(q.needs_notification(&mem));
}

#[test]
fn without_event_idx_the_no_interrupt_flag_decides() {
    let (mut mem, mock, mut q) = setup(16);
    q.set_features(feature(VIRTIO_F_VERSION_1));
    mock.set_avail_flags(&mut mem, VIRTQ_AVAIL_F_NO_INTERRUPT);
    q.add_used(&mut mem, 0, 0).unwrap();
    assert!(!q.needs_notification(&mem));
    mock.set_avail_flags(&mut mem, 0);
    q.add_used(&mut mem, 0, 0).unwrap();
    assert!(q.needs_notification(&mem));
    assert!(!q.needs_notification(&mem));
}

#[test]
fn vring_need_event_wraps() {
    assert!(vring_need_event(0, 1, 0));
    assert!(!vring_need_event(1, 1, 0));
    assert!(vring_need_event(65535, 1, 65534));
    assert!(!vring_need_event(2, 1, 65534));
    assert!(vring_need_event(65533, 65534, 65533));
}

#[test]
fn errors_say_what_is_wrong() {
    let s = alloc::format!("{}", QueueError::NextOutOfRange { next: 9, limit: 8 });
    assert_eq!(s, "virtqueue: descriptor next 9 is outside a table of 8");
    let s = alloc::format!("{}", QueueError::Memory(MemError { gpa: 0x1000, len: 2 }));
    assert_eq!(s, "virtqueue: guest-physical range 0x1000+0x2 is not guest RAM");
}

// --- fuzz-style ---------------------------------------------------------

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, one_in: u64) -> bool {
        self.below(one_in) == 0
    }
}

/// Guest memory that counts accesses, to show each `pop` is bounded.
struct Counting<'a> {
    inner: &'a mut VecMemory,
    reads: Cell<u64>,
}

impl GuestMemory for Counting<'_> {
    fn check_range(&self, gpa: u64, len: u64) -> Result<(), MemError> {
        self.inner.check_range(gpa, len)
    }
    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), MemError> {
        self.reads.set(self.reads.get() + 1);
        self.inner.read(gpa, buf)
    }
    fn write(&mut self, gpa: u64, data: &[u8]) -> Result<(), MemError> {
        self.inner.write(gpa, data)
    }
}

const FUZZ_MEM: usize = 0x4000;

/// A random descriptor, usually near-valid so walks get deep.
fn random_descriptor(rng: &mut XorShift, mem: &mut VecMemory, gpa: u64, entries: u64) {
    let addr = match rng.below(16) {
        0 => rng.next(),
        1 => u64::MAX - rng.below(64),
        _ => rng.below(FUZZ_MEM as u64 + 64),
    };
    let len = match rng.below(8) {
        0 => rng.next() as u32,
        1 => 16 * rng.below(40) as u32,
        2 => u32::MAX - rng.below(4) as u32,
        _ => rng.below(600) as u32,
    };
    let flags = if rng.chance(16) {
        rng.next() as u16
    } else {
        let mut f = 0;
        if rng.below(10) < 6 {
            f |= VIRTQ_DESC_F_NEXT;
        }
        if rng.chance(2) {
            f |= VIRTQ_DESC_F_WRITE;
        }
        if rng.chance(10) {
            f |= VIRTQ_DESC_F_INDIRECT;
        }
        f
    };
    let next = if rng.chance(8) { rng.next() as u16 } else { rng.below(entries + 2) as u16 };
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&addr.to_le_bytes());
    b[8..12].copy_from_slice(&len.to_le_bytes());
    b[12..14].copy_from_slice(&flags.to_le_bytes());
    b[14..].copy_from_slice(&next.to_le_bytes());
    let _ = mem.write(gpa, &b);
}

fn check_chain(chain: &DescriptorChain, mem: &VecMemory, size: u16) {
    assert!(chain.head_index() < size);
    let descs = chain.descriptors();
    assert!(!descs.is_empty());
    let first_writable = descs.iter().position(|d| d.writable).unwrap_or(descs.len());
    assert!(descs[first_writable..].iter().all(|d| d.writable), "readable after writable");
    let mut total = 0u64;
    for d in descs {
        mem.check_range(d.addr, u64::from(d.len)).expect("descriptor inside memory");
        total += u64::from(d.len);
    }
    assert!(total <= u64::from(u32::MAX));
    assert_eq!(u64::from(chain.readable_len()) + u64::from(chain.writable_len()), total);
}

#[test]
fn fuzz_pop_never_panics_or_runs_away() {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let mut chains = 0u32;
    let mut errors = 0u32;
    for _ in 0..5000 {
        let mut mem = VecMemory::new(0, FUZZ_MEM);
        for w in mem.as_mut_slice().chunks_mut(8) {
            w.copy_from_slice(&rng.next().to_le_bytes());
        }
        let size: u16 = match rng.below(10) {
            0 => rng.next() as u16,
            1 => 0,
            _ => 1 << rng.below(8),
        };
        let n = u64::from(size);
        let mut q = Queue::new(size);
        q.ready = true;
        q.set_features(rng.next());
        if rng.chance(8) {
            q.desc_table = rng.next();
            q.avail_ring = rng.next();
            q.used_ring = rng.next();
        } else {
            q.desc_table = rng.below(0x400) & !15;
            q.avail_ring = rng.below(0x3000);
            q.used_ring = rng.below(0x3000);
        }
        // Near-valid descriptors in the table and in a few would-be
        // indirect tables elsewhere.
        for i in 0..n.min(256) {
            random_descriptor(&mut rng, &mut mem, q.desc_table.wrapping_add(16 * i), n);
        }
        for _ in 0..64 {
            let gpa = rng.below(FUZZ_MEM as u64) & !15;
            random_descriptor(&mut rng, &mut mem, gpa, 40);
        }
        q.next_avail = rng.next() as u16;
        for i in 0..n.min(256) {
            let head = if rng.chance(16) { rng.next() as u16 } else { rng.below(n + 1) as u16 };
            let _ = mem.write(q.avail_ring.wrapping_add(4 + 2 * i), &head.to_le_bytes());
        }
        q.next_used = rng.next() as u16;
        let avail_idx =
            if rng.chance(2) { q.next_avail.wrapping_add(rng.below(n + 2) as u16) } else { rng.next() as u16 };
        let _ = mem.write(q.avail_ring.wrapping_add(2), &avail_idx.to_le_bytes());

        let max_reads = 2 + u64::from(q.size) + u64::from(q.size).max(u64::from(MIN_INDIRECT_LIMIT));
        for _ in 0..(n.min(64) + 2) {
            let mut counting = Counting { inner: &mut mem, reads: Cell::new(0) };
            let result = q.pop(&mut counting);
            assert!(counting.reads.get() <= max_reads, "pop read {} times", counting.reads.get());
            match result {
                Ok(Some(chain)) => {
                    chains += 1;
                    check_chain(&chain, &mem, q.size);
                    let _ = q.add_used(&mut mem, chain.head_index(), rng.next() as u32);
                    let _ = q.needs_notification(&mem);
                }
                Ok(None) | Err(QueueError::AvailIndexTooFar { .. }) => break,
                Err(_) => errors += 1,
            }
        }
    }
    // The generator reaches both sides.
    assert!(chains > 1000, "only {chains} chains popped");
    assert!(errors > 1000, "only {errors} errors");
}

/// A driver that keeps one more buffer available than the device has taken
/// (another vCPU refilling as fast as the device pops) gets at most the
/// queue's size of chains per pass; the rest waits for the next pass.
#[test]
fn one_pass_takes_at_most_the_queue_size() {
    let (mut mem, mut mock, mut q) = setup(8);
    q.start_pass();
    let mut taken = 0;
    mock.add_chain(&mut mem, &[(0x10000, 16, true)]);
    while let Some(chain) = q.pop(&mut mem).unwrap() {
        q.add_used(&mut mem, chain.head_index(), 0).unwrap();
        taken += 1;
        // The hostile driver: a new buffer for every one used.
        mock.add_chain(&mut mem, &[(0x10000, 16, true)]);
        assert!(taken <= 8, "the pass did not stop");
    }
    assert_eq!(taken, 8);
    assert!(q.deferred(), "more was waiting");
    q.start_pass();
    assert!(!q.deferred());
    assert!(q.pop(&mut mem).unwrap().is_some(), "the next pass goes on");
}
