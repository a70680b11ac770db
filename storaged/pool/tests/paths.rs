//! The write and read paths' disk requests, counted by the pool's meter
//! (counts, not time): a sequential writer's data goes to disk once, as
//! it is written, one request per request; the commit then writes only the
//! tree above it, the MOS and the uberblocks; a sequential reader reads
//! each indirect block once (the metadata cache) and a request's blocks
//! with one disk read. And the `checksum` property: every function reads
//! back after import, and a clone keeps its origin's.

use alcove_pool::format::LABELS;
use alcove_pool::{Error, MemDisk, Pool};

const MIB: u64 = 1 << 20;
const CHUNK: usize = 64 * 1024;

fn chunk(i: u64) -> Vec<u8> {
    (0..CHUNK).map(|j| (j as u64 * 31 + i * 7 + 1) as u8 | 1).collect()
}

#[test]
fn a_sequential_writer_is_one_disk_request_per_request_and_the_commit_writes_only_metadata() {
    let mut pool = Pool::create("zones", vec![MemDisk::new((64 * MIB) as usize)], 5).unwrap();
    pool.create_volume("zones/v-disk0", 8 * MIB, 8192).unwrap();
    let m0 = pool.meter();
    for i in 0..16 {
        pool.write("zones/v-disk0", i * CHUNK as u64, &chunk(i)).unwrap();
    }
    let m1 = pool.meter();
    assert_eq!(m1.disk_writes - m0.disk_writes, 16, "one disk request per 64 KiB request");
    assert_eq!(m1.disk_write_bytes - m0.disk_write_bytes, MIB, "the data, once");
    pool.sync().unwrap();
    let m2 = pool.meter();
    // 1 MiB of 8 KiB blocks: the root and 2 level-1 indirect blocks, the
    // MOS, the uberblock in every label.
    assert_eq!(m2.disk_writes - m1.disk_writes, 3 + 1 + LABELS as u64);
    assert!(m2.disk_write_bytes - m1.disk_write_bytes < 64 * 1024, "the commit rewrote data: {:?}", m2);
    assert_eq!(m2.flushes - m1.flushes, 2);
    let mut pool = Pool::import(pool.into_disks()).unwrap();
    let m0 = pool.meter();
    let mut buf = vec![0u8; CHUNK];
    for i in 0..16 {
        pool.read("zones/v-disk0", i * CHUNK as u64, &mut buf).unwrap();
        assert!(buf == chunk(i), "chunk {i} read back");
    }
    let m1 = pool.meter();
    assert_eq!(m1.meta_misses - m0.meta_misses, 3, "each indirect block read once");
    assert_eq!(m1.disk_reads - m0.disk_reads, 3 + 16, "the indirect blocks, then one read per request");
    pool.verify(false).unwrap();
}

#[test]
fn every_checksum_reads_back_and_a_clone_keeps_its_origins() {
    let mut pool = Pool::create("zones", vec![MemDisk::new((32 * MIB) as usize)], 6).unwrap();
    for (v, sum) in [("zones/s-disk0", "sha256"), ("zones/b-disk0", "blake3"), ("zones/f-disk0", "fletcher4"), ("zones/d-disk0", "on")] {
        pool.create_volume(v, 4 * MIB, 8192).unwrap();
        pool.set_prop(v, "checksum", sum).unwrap();
        pool.write(v, 4096, &chunk(3)).unwrap();
        pool.write(v, MIB + 512, &chunk(4)[..3 * 512]).unwrap();
    }
    let bad = pool.set_prop("zones/s-disk0", "checksum", "fletcher2");
    assert!(matches!(&bad, Err(Error::Invalid(m)) if m.contains("\"checksum\"")), "{bad:?}");
    pool.snapshot("zones/s-disk0@a").unwrap();
    pool.clone_snapshot("zones/s-disk0@a", "zones/c-disk0").unwrap();
    assert_eq!(pool.get("zones/c-disk0").unwrap().props.get("checksum").map(String::as_str), Some("sha256"));
    let mut pool = Pool::import(pool.into_disks()).unwrap();
    for v in ["zones/s-disk0", "zones/b-disk0", "zones/f-disk0", "zones/d-disk0", "zones/c-disk0"] {
        let mut buf = vec![0u8; CHUNK];
        pool.read(v, 4096, &mut buf).unwrap();
        assert!(buf == chunk(3), "{v}: data back");
        pool.read(v, MIB + 512, &mut buf[..3 * 512]).unwrap();
        assert!(buf[..3 * 512] == chunk(4)[..3 * 512], "{v}: partial block back");
    }
    pool.verify(false).unwrap();
}
