//! Scrub as `zpool status -v` reports it: it walks every block even past
//! blocks no copy can repair, counts errors per disk, repairs what a mirror
//! can, and names the volumes (and snapshots, and clones sharing the block)
//! and the bytes that hold each permanent error.

use alcove_pool::format::{BLOCK, BP_PER_INDIRECT};
use alcove_pool::{DataError, MemDisk, Pool, SCAN_ERRORS_KEPT};
use std::sync::atomic::{AtomicU64, Ordering};

const MIB: usize = 1024 * 1024;
const VBS: u64 = 4096;

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    let mut rng = alcove_pool::fault::Rng(u64::from(seed) + 1);
    (0..len).map(|_| rng.next() as u8 | 1).collect()
}

fn flip(d: &mut MemDisk, at: u64) {
    d.bytes[at as usize] ^= 0x40;
}

/// Where on the disk the block holding `needle` (a block's first bytes) is.
fn find(d: &MemDisk, needle: &[u8]) -> u64 {
    let hits: Vec<u64> =
        d.bytes.chunks(BLOCK as usize).enumerate().filter(|(_, c)| c.starts_with(needle)).map(|(i, _)| i as u64 * BLOCK).collect();
    assert_eq!(hits.len(), 1, "one copy of the block on the disk");
    hits[0]
}

fn err(dataset: &str, blk: u64, blocks: u64, block: u64, level: u8) -> DataError {
    DataError { dataset: Some(dataset.into()), offset: blk * VBS, len: blocks * VBS, block, level }
}

/// A, its snapshot and a clone of it share A's first MiB; B has its own.
fn pool_with(disks: Vec<MemDisk>) -> (Pool<MemDisk>, Vec<u8>, Vec<u8>) {
    let mut pool = Pool::create("zones", disks, 5).unwrap();
    let (a, b) = (pattern(1, MIB), pattern(2, MIB));
    pool.create_volume("zones/a-disk0", MIB as u64, VBS as u32).unwrap();
    pool.create_volume("zones/b-disk0", MIB as u64, VBS as u32).unwrap();
    pool.write("zones/a-disk0", 0, &a).unwrap();
    pool.write("zones/b-disk0", 0, &b).unwrap();
    pool.sync().unwrap();
    pool.snapshot("zones/a-disk0@s").unwrap();
    pool.clone_snapshot("zones/a-disk0@s", "zones/c-disk0").unwrap();
    (pool, a, b)
}

#[test]
fn single_disk_scrub_walks_every_block_and_names_the_damaged_volumes() {
    let (mut pool, a, b) = pool_with(vec![MemDisk::new(16 * MIB)]);
    let clean = pool.scrub().unwrap();
    assert!(clean.errors.is_empty() && clean.space_checked, "{clean:?}");
    let mut disks = pool.into_disks();
    let shared = find(&disks[0], &a[3 * 4096..3 * 4096 + 64]);
    let own = find(&disks[0], &b[200 * 4096..200 * 4096 + 64]);
    flip(&mut disks[0], shared + 17);
    flip(&mut disks[0], own + 4000);
    let mut pool = Pool::import(disks).unwrap();
    let r = pool.scrub().expect("the scrub finishes past blocks it cannot repair");
    assert_eq!((r.blocks, r.bytes), (clean.blocks, clean.bytes), "every block walked");
    assert!(r.space_checked, "data blocks only: the space map still checked");
    let want = vec![
        err("zones/a-disk0", 3, 1, shared, 0),
        err("zones/b-disk0", 200, 1, own, 0),
        err("zones/a-disk0@s", 3, 1, shared, 0),
        err("zones/c-disk0", 3, 1, shared, 0),
    ];
    let mut got = r.errors.clone();
    let mut want_sorted = want.clone();
    got.sort_by(|x, y| x.dataset.cmp(&y.dataset));
    want_sorted.sort_by(|x, y| x.dataset.cmp(&y.dataset));
    assert_eq!(got, want_sorted);
    assert_eq!(r.errors.iter().map(|e| e.to_string()).find(|l| l.starts_with("zones/b-disk0")).unwrap(),
        format!("zones/b-disk0 bytes 819200..823296 (data block at {own:#x})"));
    let s = pool.child_stats()[0];
    assert_eq!((s.checksum_errors, s.repaired_bytes), (2, 0), "each bad block counted once, nothing repaired");
    assert_eq!(pool.state(), "ONLINE");
    let rec = pool.last_scrub().expect("the scrub is recorded");
    assert_eq!((rec.errors_total, &rec.errors, rec.blocks, rec.txg), (r.errors.len() as u64, &r.errors, r.blocks, r.txg));
    // The rest reads right; the damaged blocks give errors, never wrong data.
    let mut got = vec![0u8; 4096];
    pool.read("zones/c-disk0", 2 * 4096, &mut got).unwrap();
    assert_eq!(got, a[2 * 4096..3 * 4096]);
    assert!(pool.read("zones/c-disk0", 3 * 4096, &mut got).is_err());
    assert!(pool.read("zones/b-disk0", 200 * 4096, &mut got).is_err());
    // A verify (no scrub) still stops at the first bad block.
    assert!(pool.verify(false).is_err());
    // Overwriting the damaged block in every dataset that holds it clears it.
    pool.destroy("zones/c-disk0", false).unwrap();
    pool.destroy("zones/a-disk0@s", false).unwrap();
    pool.write("zones/a-disk0", 3 * 4096, &a[3 * 4096..4 * 4096]).unwrap();
    pool.write("zones/b-disk0", 200 * 4096, &b[200 * 4096..201 * 4096]).unwrap();
    pool.sync().unwrap();
    let again = pool.scrub().unwrap();
    assert!(again.errors.is_empty() && again.space_checked, "{again:?}");
}

/// The disk offset of the indirect block holding the pointer to the data
/// block at `data_at`: its first 8 bytes, at a 64-byte slot of a block.
fn indirect_holding(d: &MemDisk, data_at: u64) -> u64 {
    let key = data_at.to_le_bytes();
    let hits: Vec<usize> = (0..d.bytes.len() / 64).map(|i| i * 64).filter(|&o| d.bytes[o..o + 8] == key).collect();
    assert_eq!(hits.len(), 1, "one block pointer to {data_at:#x}");
    hits[0] as u64 / BLOCK * BLOCK
}

#[test]
fn an_unreadable_indirect_block_names_every_byte_below_it() {
    let (mut pool, _a, b) = pool_with(vec![MemDisk::new(16 * MIB)]);
    let clean = pool.scrub().unwrap();
    let mut disks = pool.into_disks();
    // B's block 70: its level-1 indirect block covers blocks 64..128.
    let data = find(&disks[0], &b[70 * 4096..70 * 4096 + 64]);
    let ind = indirect_holding(&disks[0], data);
    flip(&mut disks[0], ind + 5);
    let mut pool = Pool::import(disks).unwrap();
    let r = pool.scrub().unwrap();
    assert_eq!(r.errors, vec![err("zones/b-disk0", BP_PER_INDIRECT, BP_PER_INDIRECT, ind, 1)]);
    assert_eq!(r.errors[0].to_string(), format!("zones/b-disk0 bytes 262144..524288 (indirect block at {ind:#x})"));
    assert!(!r.space_checked, "the blocks below it are out of reach");
    assert_eq!(r.blocks, clean.blocks - BP_PER_INDIRECT, "everything else walked");
    let mut got = vec![0u8; 4096];
    pool.read("zones/b-disk0", 130 * 4096, &mut got).unwrap();
    assert_eq!(got, b[130 * 4096..131 * 4096]);
}

#[test]
fn mirror_scrub_repairs_each_side_and_reports_only_what_both_lost() {
    let (pool, a, b) = pool_with(vec![MemDisk::new(16 * MIB), MemDisk::new(16 * MIB)]);
    let mut disks = pool.into_disks();
    // Block 1 of A bad on side 0, block 9 on side 1: both repairable.
    // Block 30 of B bad on both sides: a permanent error.
    let one = find(&disks[0], &a[4096..4096 + 64]);
    let nine = find(&disks[1], &a[9 * 4096..9 * 4096 + 64]);
    let lost = find(&disks[0], &b[30 * 4096..30 * 4096 + 64]);
    flip(&mut disks[0], one + 1);
    flip(&mut disks[1], nine + 2);
    flip(&mut disks[0], lost + 3);
    flip(&mut disks[1], lost + 4);
    let mut pool = Pool::import(disks).unwrap();
    let r = pool.scrub().unwrap();
    assert_eq!(r.errors, vec![err("zones/b-disk0", 30, 1, lost, 0)]);
    let s = pool.child_stats();
    assert_eq!((s[0].checksum_errors, s[0].repaired_bytes), (2, 4096), "side 0: block 1 repaired, block 30 not");
    assert_eq!((s[1].checksum_errors, s[1].repaired_bytes), (2, 4096), "side 1: block 9 repaired, block 30 not");
    assert_eq!(pool.state(), "ONLINE");
    let mut got = vec![0u8; 4096];
    pool.read("zones/a-disk0", 9 * 4096, &mut got).unwrap();
    assert_eq!(got, a[9 * 4096..10 * 4096]);
    // The repairs hold: a second scrub counts only the block both lost.
    let mut pool = Pool::import(pool.into_disks()).unwrap();
    let r = pool.scrub().unwrap();
    assert_eq!(r.errors.len(), 1);
    let s = pool.child_stats();
    assert_eq!((s[0].checksum_errors, s[1].checksum_errors, s[0].repaired_bytes + s[1].repaired_bytes), (1, 1, 0));
}

#[test]
fn scrub_tells_its_progress() {
    let mut pool = Pool::create("zones", vec![MemDisk::new(128 * MIB)], 6).unwrap();
    pool.create_volume("zones/p-disk0", 40 * MIB as u64, 8192).unwrap();
    pool.write("zones/p-disk0", 0, &pattern(3, 40 * MIB)).unwrap();
    pool.sync().unwrap();
    let mut calls: Vec<(u64, u64)> = Vec::new();
    let r = pool.scrub_with_progress(Some(&mut |done, total| calls.push((done, total)))).unwrap();
    let allocated = pool.size_bytes() - pool.free_bytes();
    assert!(calls.len() >= 3, "every 16 MiB and at the end: {calls:?}");
    assert!(calls.windows(2).all(|w| w[0].0 < w[1].0), "{calls:?}");
    assert!(calls.iter().all(|&(d, t)| t == allocated && d <= t), "{calls:?} of {allocated}");
    assert_eq!(calls.last().map(|c| c.0), Some(r.bytes));
    assert!(r.bytes >= 40 * MIB as u64);
}

/// The wall clock the next test's pools read (seconds since 1970).
static NOW: AtomicU64 = AtomicU64::new(0);

fn now() -> u64 {
    NOW.load(Ordering::SeqCst)
}

#[test]
fn the_last_scrub_and_creation_times_survive_an_export_and_import() {
    NOW.store(1_796_395_841, Ordering::SeqCst);
    let mut pool = Pool::create("zones", vec![MemDisk::new(32 * MIB)], 7).unwrap();
    pool.set_wall_clock(now);
    pool.create_volume("zones/t-disk0", MIB as u64, VBS as u32).unwrap();
    let b = pattern(4, MIB);
    pool.write("zones/t-disk0", 0, &b).unwrap();
    NOW.store(1_796_395_900, Ordering::SeqCst);
    pool.snapshot("zones/t-disk0@s").unwrap();
    assert!(pool.last_scrub().is_none(), "no scrub has run");
    // A pool without a clock: times unknown (0), never made up.
    let mut plain = Pool::create("zones", vec![MemDisk::new(16 * MIB)], 8).unwrap();
    plain.create_volume("zones/u-disk0", MIB as u64, VBS as u32).unwrap();
    assert_eq!(plain.get("zones/u-disk0").unwrap().creation, 0);

    // 40 damaged blocks: more than the pool keeps by name.
    let mut disks = pool.into_disks();
    for blk in 0..40 {
        let at = find(&disks[0], &b[blk * 4096..blk * 4096 + 64]);
        flip(&mut disks[0], at + 9);
    }
    let mut pool = Pool::import(disks).unwrap();
    pool.set_wall_clock(now);
    NOW.store(1_796_396_000, Ordering::SeqCst);
    let r = pool.scrub().unwrap();
    // Each block is held by the volume and its snapshot.
    assert_eq!(r.errors.len(), 80);

    NOW.store(1_796_400_000, Ordering::SeqCst);
    let pool = Pool::import(pool.into_disks()).unwrap();
    let rec = pool.last_scrub().expect("the scrub's record is on disk");
    assert_eq!((rec.start, rec.end), (1_796_396_000, 1_796_396_000));
    assert_eq!((rec.errors_total, rec.errors.len()), (80, SCAN_ERRORS_KEPT));
    assert_eq!(rec.errors[..], r.errors[..SCAN_ERRORS_KEPT]);
    assert_eq!((rec.blocks, rec.bytes, rec.txg, rec.repaired), (r.blocks, r.bytes, r.txg, 0));
    assert!(rec.space_checked);
    assert_eq!(pool.get("zones/t-disk0").unwrap().creation, 1_796_395_841);
    assert_eq!(pool.get("zones/t-disk0@s").unwrap().creation, 1_796_395_900);
}
