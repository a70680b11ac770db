//! A send and a receive in pieces need memory bounded by a piece, not by
//! the volume: the peak heap while a volume moves from one pool to another
//! piece by piece is the same for a volume 8 times larger (the disks and
//! the source data are allocated before the count starts; each pool's
//! metadata cache is set small so that it is full at both sizes).
//!
//! Its own test binary: the counting allocator sees this test alone.


use alcove_pool::fault::Rng;
use alcove_pool::{MemDisk, Pool};

#[path = "common/counting.rs"]
mod counting;

const MIB: usize = 1024 * 1024;

/// Peak heap above the start while a `size` volume, full of data, moves
/// from one pool to another piece by piece; and the pieces' count.
fn peak_moving(size: usize) -> (usize, u64) {
    let mut rng = Rng(size as u64);
    let mut a = Pool::create("zones", vec![MemDisk::new(2 * size + 32 * MIB)], 1).unwrap();
    let mut b = Pool::create("zones", vec![MemDisk::new(2 * size + 32 * MIB)], 2).unwrap();
    // storaged's bounds on an open group; a metadata cache (a bounded
    // structure of each pool, 16 KiB an indirect block) small enough to be
    // full at both sizes.
    a.set_meta_cache_blocks(8);
    b.set_meta_cache_blocks(8);
    b.set_dirty_limit(Some(4 * MIB as u64));
    b.set_dirty_block_limit(Some(1024));
    a.create_volume("zones/src", size as u64, 4096).unwrap();
    let chunk: Vec<u8> = (0..MIB).map(|_| rng.next() as u8).collect();
    for (i, at) in (0..size).step_by(MIB).enumerate() {
        let mut c = chunk.clone();
        c[..8].copy_from_slice(&(i as u64).to_le_bytes());
        a.write("zones/src", at as u64, &c).unwrap();
        a.sync().unwrap();
    }
    a.snapshot("zones/src@s").unwrap();
    drop(chunk);
    let mut piece = Vec::with_capacity(64 * 1024);
    let start = counting::start();
    let mut c = a.send_start("zones/src@s", None).unwrap();
    let mut rx = b.receive_start("zones/dst").unwrap();
    let mut n = 0;
    while a.send_piece(&mut c, &mut piece).unwrap() {
        b.receive_bytes(&mut rx, &piece).unwrap();
        n += 1;
    }
    b.receive_finish(rx).unwrap();
    let peak = counting::peak_since(start);
    let mut x = vec![0u8; 4096];
    let mut y = vec![0u8; 4096];
    for at in (0..size).step_by(MIB / 2) {
        a.read("zones/src@s", at as u64, &mut x).unwrap();
        b.read("zones/dst@s", at as u64, &mut y).unwrap();
        assert!(x == y, "at {at}");
    }
    (peak, n)
}

#[test]
fn send_and_receive_memory_does_not_grow_with_the_volume() {
    let (small, n_small) = peak_moving(4 * MIB);
    let (big, n_big) = peak_moving(32 * MIB);
    println!("bench send-receive-peak-heap-4MiB {} KiB", small / 1024);
    println!("bench send-receive-peak-heap-32MiB {} KiB", big / 1024);
    assert!(n_big > 7 * n_small, "{n_small} and {n_big} pieces");
    assert!(big < small + small / 4, "peak heap {small} bytes for 4 MiB, {big} for 32 MiB: it grows with the volume");
}
