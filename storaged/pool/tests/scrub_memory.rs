//! A scrub's memory does not grow with the pool: it keeps no map of the
//! blocks it walked (a shared block is walked once, in the oldest dataset
//! holding it, found by births; the space check is a fingerprint of a few
//! words). 32768 data blocks of 4 KiB with snapshots and a clone
//! sharing most of them: the old per-block map (a `BTreeMap<u64, u32>`
//! entry, about 40 bytes, a block) would have been over 1.2 MiB; the peak
//! heap of the whole scrub here is bounded by the walk's stack and the
//! metadata cache, and is the same for a pool 4 times smaller.
//!
//! Its own test binary: the counting allocator sees this test alone.


use alcove_pool::fault::Rng;
use alcove_pool::{MemDisk, Pool};

#[path = "common/counting.rs"]
mod counting;

const MIB: usize = 1024 * 1024;

/// A pool with `blocks` data blocks of 4 KiB in a volume, two
/// snapshots, a clone of the first, and some rewrites in each (so blocks are
/// shared three ways and some are each one's own); the peak heap of a scrub
/// of it in 64 KiB steps, and its report's blocks and bytes.
fn scrub_peak(blocks: usize) -> (usize, u64, u64, u64) {
    let mut rng = Rng(blocks as u64);
    let size = blocks * 4096;
    let mut p = Pool::create("zones", vec![MemDisk::new(size + size / 2 + 64 * MIB)], 1).unwrap();
    p.create_volume("zones/v", size as u64, 4096).unwrap();
    // In 1 MiB groups: a group's space check counts every indirect block
    // a dirty block may need, 16 KiB each.
    const RUN: usize = 1024 * 1024;
    let chunk: Vec<u8> = (0..RUN).map(|_| rng.next() as u8 | 1).collect();
    for at in (0..size).step_by(RUN) {
        p.write("zones/v", at as u64, &chunk).unwrap_or_else(|e| panic!("at {at}: {e} ({} free of {})", p.free_bytes(), p.size_bytes()));
        p.sync().unwrap();
    }
    let rewrite = |p: &mut Pool<MemDisk>, name: &str, rng: &mut Rng| {
        for _ in 0..64 {
            let at = rng.below((size / 4096 - 1) as u64) * 4096;
            p.write(name, at, &[rng.next() as u8 | 1; 4096]).unwrap();
        }
        p.sync().unwrap();
    };
    p.snapshot("zones/v@a").unwrap();
    rewrite(&mut p, "zones/v", &mut rng);
    p.snapshot("zones/v@b").unwrap();
    rewrite(&mut p, "zones/v", &mut rng);
    p.clone_snapshot("zones/v@a", "zones/c").unwrap();
    rewrite(&mut p, "zones/c", &mut rng);
    p.snapshot("zones/c@x").unwrap();
    rewrite(&mut p, "zones/c", &mut rng);
    p.set_meta_cache_blocks(8);
    // The intent log's first block is allocated but not walked (no pointer).
    let log = if p.log_head() != 0 { alcove_pool::format::LOG_BLOCK } else { 0 };
    let allocated = p.size_bytes() - p.free_bytes() - log;
    // The scrub's own memory: no commit of its record in the middle (a
    // commit encodes the MOS, space map included, whoever makes it).
    p.set_scrub_record_every(0);
    let start = counting::start();
    p.scrub_start().unwrap();
    let report = loop {
        if let Some(r) = p.scrub_step(64 * 1024).unwrap() {
            break r;
        }
    };
    let peak = counting::peak_since(start);
    assert!(report.errors.is_empty() && report.space_checked);
    (peak, report.blocks, report.bytes, allocated)
}

#[test]
fn a_scrub_keeps_no_map_of_the_blocks_it_walked() {
    let (small, small_blocks, _, _) = scrub_peak(8192);
    let (big, big_blocks, big_bytes, allocated) = scrub_peak(32768);
    println!("bench scrub-peak-heap-8192-blocks {} KiB", small / 1024);
    println!("bench scrub-peak-heap-32768-blocks {} KiB", big / 1024);
    assert!(big_blocks > 32768 && big_blocks > 3 * small_blocks, "{small_blocks} and {big_blocks} blocks walked");
    // Every block once: the bytes walked are the bytes allocated (a block
    // walked twice or missed would also fail the scrub's own space check).
    assert_eq!(big_bytes, allocated, "each block walked once");
    assert!(big < small + small / 4, "peak heap {small} bytes for the small pool, {big} for the large one");
    assert!(big < 1024 * 1024, "peak heap {big} bytes; the old map alone would be over 1.2 MiB");
}
