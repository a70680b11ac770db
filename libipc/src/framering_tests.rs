//! Host tests of the frame ring: both sides honest, then each side facing
//! a hostile or broken peer.

use super::*;
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use core::cell::RefCell;
use core::sync::atomic::{AtomicU32, Ordering};
use std::collections::BTreeMap;

fn region(slots: u32) -> (Geometry, Vec<u8>) {
    let g = Geometry::new(slots).unwrap();
    let mut r = vec![0xa5u8; g.region_bytes()];
    g.format(&mut r).unwrap();
    (g, r)
}

fn frame(seq: u32, len: usize) -> Vec<u8> {
    (0..len).map(|i| (seq as usize * 31 + i) as u8).collect()
}

fn pop(c: &mut Consumer, r: &mut Vec<u8>, budget: u32) -> Result<Vec<Vec<u8>>, FrameRingError> {
    let mut buf = vec![0; SLOT_BYTES];
    let mut got = vec![];
    c.pop_all(r, &mut buf, budget, |f| got.push(f.to_vec()))?;
    Ok(got)
}

#[test]
fn frames_cross_in_order_both_ways_and_wrap() {
    let (g, mut r) = region(8);
    assert_eq!(Geometry::from_header(&r), Ok(g));
    assert_eq!(g.region_pages(), 9);
    for dir in [Direction::ToNetd, Direction::ToVmm] {
        // Start near the index wrap so it is crossed.
        let mut p = Producer::resume(g, dir, u32::MAX - 20);
        let mut c = Consumer::resume(g, dir, u32::MAX - 20);
        r[dir.prod_at()..dir.prod_at() + 4].copy_from_slice(&(u32::MAX - 20).to_le_bytes());
        r[dir.cons_at()..dir.cons_at() + 4].copy_from_slice(&(u32::MAX - 20).to_le_bytes());
        let mut seq = 0u32;
        let mut expect = 0u32;
        for round in 0..20 {
            let batch: Vec<Vec<u8>> = (0..(round % 11)).map(|i| frame(seq + i, 14 + (seq + i) as usize * 37 % 2035)).collect();
            let n = p.push_all(&mut r, batch.iter().map(|f| f.as_slice())).unwrap();
            assert_eq!(n, batch.len().min(8));
            seq += n as u32;
            for f in pop(&mut c, &mut r, 5).unwrap().into_iter().chain(pop(&mut c, &mut r, 100).unwrap()) {
                assert_eq!(f, frame(expect, 14 + expect as usize * 37 % 2035));
                expect += 1;
            }
        }
        assert_eq!(expect, seq);
        assert_eq!((p.frames, c.frames, c.malformed), (u64::from(seq), u64::from(seq), 0));
    }
}

#[test]
fn a_full_ring_refuses_more_until_the_consumer_takes() {
    let (g, mut r) = region(4);
    let mut p = Producer::new(g, Direction::ToVmm);
    let mut c = Consumer::new(g, Direction::ToVmm);
    for i in 0..4 {
        assert_eq!(p.push(&mut r, &frame(i, 60)), Ok(true));
    }
    assert_eq!(p.push(&mut r, &frame(9, 60)), Ok(false));
    assert_eq!(p.free(&r), Ok(0));
    assert_eq!(pop(&mut c, &mut r, 1).unwrap(), vec![frame(0, 60)]);
    assert_eq!(p.free(&r), Ok(1));
    assert_eq!(p.push(&mut r, &frame(4, 60)), Ok(true));
    let rest = pop(&mut c, &mut r, 10).unwrap();
    assert_eq!(rest, (1..5).map(|i| frame(i, 60)).collect::<Vec<_>>());
    // The other direction is untouched.
    assert_eq!(pop(&mut Consumer::new(g, Direction::ToNetd), &mut r, 10).unwrap(), Vec::<Vec<u8>>::new());
}

#[test]
fn frames_that_do_not_fit_a_slot_are_refused_to_push() {
    let (g, mut r) = region(4);
    let mut p = Producer::new(g, Direction::ToNetd);
    assert_eq!(p.push(&mut r, &[]), Err(FrameRingError::BadFrame { bytes: 0, max: SLOT_BYTES }));
    assert_eq!(p.push(&mut r, &[0; SLOT_BYTES + 1]), Err(FrameRingError::BadFrame { bytes: SLOT_BYTES + 1, max: SLOT_BYTES }));
    assert_eq!(p.push(&mut r, &[7; SLOT_BYTES]), Ok(true));
}

#[test]
fn malformed_descriptors_are_skipped_and_counted() {
    let (g, mut r) = region(8);
    let mut p = Producer::new(g, Direction::ToNetd);
    let mut c = Consumer::new(g, Direction::ToNetd);
    for i in 0..6 {
        p.push(&mut r, &frame(i, 100)).unwrap();
    }
    // A hostile VMM rewrites lengths: 0, one past the slot, u32::MAX.
    for (slot, len) in [(1u32, 0u32), (3, SLOT_BYTES as u32 + 1), (4, u32::MAX)] {
        let at = g.desc_at(Direction::ToNetd, slot);
        r[at..at + 4].copy_from_slice(&len.to_le_bytes());
    }
    let got = pop(&mut c, &mut r, 100).unwrap();
    assert_eq!(got, vec![frame(0, 100), frame(2, 100), frame(5, 100)]);
    assert_eq!((c.frames, c.malformed), (3, 3));
    // The ring goes on.
    p.push(&mut r, &frame(6, 70)).unwrap();
    assert_eq!(pop(&mut c, &mut r, 100).unwrap(), vec![frame(6, 70)]);
}

#[test]
fn a_peer_index_out_of_range_is_refused_without_taking_anything() {
    let (g, mut r) = region(8);
    let mut c = Consumer::new(g, Direction::ToNetd);
    let prod_at = Direction::ToNetd.prod_at();
    for bad in [9u32, u32::MAX, 0x8000_0000] {
        r[prod_at..prod_at + 4].copy_from_slice(&bad.to_le_bytes());
        assert_eq!(pop(&mut c, &mut r, 100), Err(FrameRingError::BadIndex { ours: 0, theirs: bad, slots: 8 }));
    }
    assert_eq!((c.bad_index, c.frames), (3, 0));
    assert_eq!(&r[Direction::ToNetd.cons_at()..][..4], &[0; 4], "cons not moved");
    // Exactly a ring's worth is fine.
    r[prod_at..prod_at + 4].copy_from_slice(&8u32.to_le_bytes());
    assert!(pop(&mut c, &mut r, 100).is_ok());
    // A consumer that claims to have taken frames never posted.
    let mut p = Producer::new(g, Direction::ToVmm);
    let cons_at = Direction::ToVmm.cons_at();
    r[cons_at..cons_at + 4].copy_from_slice(&5u32.to_le_bytes());
    assert_eq!(p.push(&mut r, &frame(0, 60)), Err(FrameRingError::BadIndex { ours: 0, theirs: 5, slots: 8 }));
    assert_eq!(p.bad_index, 1);
    // A short copy buffer is refused before anything is taken.
    let mut small = [0u8; 100];
    assert!(matches!(c.pop_all(&mut r, &mut small, 1, |_| {}), Err(FrameRingError::RegionTooSmall { .. })));
}

#[test]
fn headers_are_checked_before_use() {
    let (g, r) = region(8);
    let cases: [(usize, u32, &str); 6] = [
        (hdr::MAGIC, 0x4b4c_4241, "magic"),
        (hdr::VERSION, 2, "version"),
        (hdr::SLOT_BYTES, 4096, "slot size"),
        (hdr::DATA_OFFSET, 0, "data offset"),
        (hdr::SLOTS, 0, "slot count"),
        (hdr::SLOTS, 16, "region size"), // more slots than the region was made for
    ];
    for (at, v, field) in cases {
        let mut bad = r.clone();
        bad[at..at + 4].copy_from_slice(&v.to_le_bytes());
        match Geometry::from_header(&bad) {
            Err(FrameRingError::BadHeader { field: f, .. }) => assert_eq!(f, field),
            other => panic!("{field}: {other:?}"),
        }
    }
    let mut huge = r.clone();
    huge[hdr::SLOTS..hdr::SLOTS + 4].copy_from_slice(&(MAX_SLOTS + 1).to_le_bytes());
    assert!(Geometry::from_header(&huge).is_err());
    let short = r[..g.region_bytes() - 1].to_vec();
    assert!(matches!(Geometry::from_header(&short), Err(FrameRingError::RegionTooSmall { .. })));
    assert!(matches!(Geometry::from_header(&vec![0u8; 100]), Err(FrameRingError::RegionTooSmall { .. })));
    assert!(g.format(&mut vec![0u8; 4096]).is_err());
    assert!(Geometry::new(MAX_SLOTS).is_ok() && Geometry::new(MAX_SLOTS + 1).is_err());
}

/// A region whose descriptor lengths change every time they are read, to
/// catch a consumer that reads one twice (checks one value, uses another).
struct Flipping {
    bytes: RefCell<Vec<u8>>,
    reads: RefCell<BTreeMap<usize, u32>>,
    geometry: Geometry,
}

impl RingRegion for Flipping {
    fn len(&self) -> usize {
        self.bytes.borrow().len()
    }
    fn read(&self, offset: usize, buf: &mut [u8]) {
        buf.copy_from_slice(&self.bytes.borrow()[offset..offset + buf.len()]);
        *self.reads.borrow_mut().entry(offset).or_default() += 1;
        let descs = DESC_OFFSET..DESC_OFFSET + 2 * self.geometry.slots as usize * DESC_BYTES;
        if descs.contains(&offset) {
            // After the read: a length far past the slot.
            self.bytes.borrow_mut()[offset..offset + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        }
    }
    fn write(&mut self, offset: usize, data: &[u8]) {
        self.bytes.get_mut()[offset..offset + data.len()].copy_from_slice(data);
    }
}

#[test]
fn each_descriptor_is_read_once() {
    let (g, r) = region(8);
    let mut f = Flipping { bytes: RefCell::new(r), reads: RefCell::new(BTreeMap::new()), geometry: g };
    let mut p = Producer::new(g, Direction::ToNetd);
    for i in 0..5 {
        p.push(&mut f, &frame(i, 200)).unwrap();
    }
    f.reads.get_mut().clear();
    let mut c = Consumer::new(g, Direction::ToNetd);
    let mut buf = vec![0; SLOT_BYTES];
    let mut got = vec![];
    c.pop_all(&mut f, &mut buf, 100, |fr| got.push(fr.to_vec())).unwrap();
    assert_eq!(got, (0..5).map(|i| frame(i, 200)).collect::<Vec<_>>());
    for i in 0..5 {
        assert_eq!(f.reads.borrow()[&g.desc_at(Direction::ToNetd, i)], 1, "descriptor {i}");
    }
    assert_eq!(f.reads.borrow()[&Direction::ToNetd.prod_at()], 1, "prod read once per batch");
}

/// Shared memory as the two sides of a real ring see it: aligned 32-bit
/// words, each read or written in one access (as an aligned `mov` is on
/// x86), so an index is never seen half-written; other bytes are updated
/// inside their word atomically.
#[derive(Clone)]
struct Shared(Arc<[AtomicU32]>);

impl Shared {
    fn new(bytes: usize) -> Self {
        Shared((0..bytes.div_ceil(4)).map(|_| AtomicU32::new(0)).collect())
    }
}

impl RingRegion for Shared {
    fn len(&self) -> usize {
        self.0.len() * 4
    }
    fn read(&self, offset: usize, buf: &mut [u8]) {
        if offset.is_multiple_of(4) && buf.len() == 4 {
            buf.copy_from_slice(&self.0[offset / 4].load(Ordering::SeqCst).to_le_bytes());
            return;
        }
        for (i, b) in buf.iter_mut().enumerate() {
            let at = offset + i;
            *b = self.0[at / 4].load(Ordering::SeqCst).to_le_bytes()[at % 4];
        }
    }
    fn write(&mut self, offset: usize, data: &[u8]) {
        if offset.is_multiple_of(4) && data.len() == 4 {
            self.0[offset / 4].store(u32::from_le_bytes(data.try_into().expect("4 bytes")), Ordering::SeqCst);
            return;
        }
        for (i, b) in data.iter().enumerate() {
            let at = offset + i;
            let _ = self.0[at / 4].fetch_update(Ordering::SeqCst, Ordering::SeqCst, |w| {
                let mut bytes = w.to_le_bytes();
                bytes[at % 4] = *b;
                Some(u32::from_le_bytes(bytes))
            });
        }
    }
}

#[test]
fn two_threads_move_frames_through_one_region() {
    let g = Geometry::new(16).unwrap();
    let mut shared = Shared::new(g.region_bytes());
    g.format(&mut shared).unwrap();
    const N: u32 = 20_000;
    let mut tx = shared.clone();
    let producer = std::thread::spawn(move || {
        let mut p = Producer::new(g, Direction::ToNetd);
        let mut seq = 0;
        while seq < N {
            let f = frame(seq, 14 + seq as usize % 1500);
            if p.push(&mut tx, &f).unwrap() {
                seq += 1;
            } else {
                std::thread::yield_now();
            }
        }
    });
    let mut c = Consumer::new(g, Direction::ToNetd);
    let mut buf = vec![0; SLOT_BYTES];
    let mut expect = 0;
    while expect < N {
        let n = c
            .pop_all(&mut shared, &mut buf, 7, |f| {
                assert_eq!(f, frame(expect, 14 + expect as usize % 1500).as_slice(), "frame {expect}");
                expect += 1;
            })
            .unwrap();
        if n == 0 {
            std::thread::yield_now();
        }
    }
    producer.join().unwrap();
    assert_eq!((c.frames, c.malformed, c.bad_index), (u64::from(N), 0, 0));
}

/// Random bytes over the header page between honest operations: no
/// panic, only errors and counted skips.
#[test]
fn random_header_scribbles_never_panic() {
    let mut seed = 0xf00d_u64;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let (g, mut r) = region(8);
    let mut p = Producer::new(g, Direction::ToVmm);
    let mut c = Consumer::new(g, Direction::ToVmm);
    let mut buf = vec![0; SLOT_BYTES];
    for _ in 0..20_000 {
        match rnd() % 4 {
            0 => {
                let at = 64 + rnd() as usize % (PAGE_BYTES - 64 - 4);
                r[at..at + 4].copy_from_slice(&(rnd() as u32).to_le_bytes());
            }
            1 => {
                let _ = p.push(&mut r, &frame(rnd() as u32, 1 + rnd() as usize % SLOT_BYTES));
            }
            _ => {
                let _ = c.pop_all(&mut r, &mut buf, rnd() as u32 % 10, |f| assert!(!f.is_empty() && f.len() <= SLOT_BYTES));
            }
        }
        let _ = Geometry::from_header(&r);
    }
}
