//! Pool figures on the host (memory disks, so they measure the pool's own
//! work: checksums, copy-on-write, commits), printed as `bench NAME VALUE
//! UNIT`; with each checksum, the share of the write's time spent
//! checksumming, on the disk and committing; snapshot + clone time at
//! two volume sizes (flat: no data touched); send and receive MB/s, full
//! and incremental; fletcher4's scalar and SSE2 code on their own. x86_64
//! only (the SSE2 code). Run: `cargo run --release -p alcove-pool --example bench`.
//! Nothing asserts on time (the received volume is checked against its source).

use std::time::Instant;

use alcove_pool::fault::Rng;
use alcove_pool::format::{CKSUM_BLAKE3, CKSUM_FLETCHER4, CKSUM_SHA256, checksum_with, cksum_name};
use alcove_pool::{Disk, MemDisk, Pool};

const MIB: u64 = 1024 * 1024;

fn filled(size_mib: u64, rng: &mut Rng) -> (Pool<MemDisk>, f64) {
    // Room for the incremental send's new data beside the snapshot's.
    let mut pool = Pool::create("zones", vec![MemDisk::new(((size_mib + size_mib / 4 + 64) * MIB) as usize)], 1).unwrap();
    pool.create_volume("zones/v-disk0", size_mib * MIB, 8192).unwrap();
    let chunk: Vec<u8> = (0..MIB).map(|_| rng.next() as u8).collect();
    let t = Instant::now();
    for i in 0..size_mib {
        pool.write("zones/v-disk0", i * MIB, &chunk).unwrap();
        if i % 32 == 31 {
            pool.sync().unwrap();
        }
    }
    pool.sync().unwrap();
    let mbps = size_mib as f64 / t.elapsed().as_secs_f64();
    (pool, mbps)
}

fn clock() -> u64 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// Sequential write (commits every 4 MiB, as storaged's dirty bound) and
/// read of 64 MiB with each checksum, and where the write's time went.
fn per_checksum(rng: &mut Rng) {
    let chunk: Vec<u8> = (0..64 * 1024).map(|_| rng.next() as u8).collect();
    // fletcher4's three ways (`checksum_fletcher4` below is whichever the
    // build uses: SSE4.1's loads on the host, SSE2's without them).
    type Way = fn(&[u8]) -> alcove_fletcher4::Sums;
    let ways: [(&str, Way); 3] =
        [("scalar", alcove_fletcher4::scalar), ("sse2", alcove_fletcher4::sse2), ("sse41", alcove_fletcher4::sse41)];
    for (way, f) in ways {
        let t = Instant::now();
        for _ in 0..256 {
            std::hint::black_box(f(std::hint::black_box(&chunk)));
        }
        println!("bench checksum_fletcher4_{way} {:.0} MB/s", 16.0 / t.elapsed().as_secs_f64());
    }
    for algo in [CKSUM_SHA256, CKSUM_BLAKE3, CKSUM_FLETCHER4] {
        let name = cksum_name(algo);
        let t = Instant::now();
        for _ in 0..256 {
            std::hint::black_box(checksum_with(algo, std::hint::black_box(&chunk)));
        }
        println!("bench checksum_{name} {:.0} MB/s", 16.0 / t.elapsed().as_secs_f64());
        let mut pool = Pool::create("zones", vec![MemDisk::new((128 * MIB) as usize)], 3).unwrap();
        pool.set_clock(Some(clock));
        pool.create_volume("zones/v-disk0", 64 * MIB, 8192).unwrap();
        pool.set_prop("zones/v-disk0", "checksum", name).unwrap();
        pool.set_dirty_limit(Some(4 * MIB));
        let m0 = pool.meter();
        let t = Instant::now();
        for i in 0..(64 * MIB / chunk.len() as u64) {
            let at = i * chunk.len() as u64;
            if let Err(alcove_pool::Error::DirtyFull { .. }) = pool.write("zones/v-disk0", at, &chunk) {
                pool.sync().unwrap();
                pool.write("zones/v-disk0", at, &chunk).unwrap();
            }
        }
        pool.sync().unwrap();
        let secs = t.elapsed().as_secs_f64();
        println!("bench pool_seq_write_{name} {:.0} MB/s", 64.0 / secs);
        let m = pool.meter();
        let ms = |ticks: u64| ticks as f64 / 1e6;
        println!(
            "bench pool_write_{name}_share checksum {:.0}% disk {:.0}% commit-tree {:.0}% ({} commits, {} disk writes, {} flushes)",
            100.0 * ms(m.checksum_ticks - m0.checksum_ticks) / (secs * 1e3),
            100.0 * ms(m.disk_write_ticks - m0.disk_write_ticks) / (secs * 1e3),
            100.0 * ms(m.commit_ticks - m0.commit_ticks) / (secs * 1e3),
            m.commits - m0.commits,
            m.disk_writes - m0.disk_writes,
            m.flushes - m0.flushes,
        );
        let mut buf = vec![0u8; chunk.len()];
        let t = Instant::now();
        for i in 0..(64 * MIB / chunk.len() as u64) {
            pool.read("zones/v-disk0", i * chunk.len() as u64, &mut buf).unwrap();
        }
        println!("bench pool_seq_read_{name} {:.0} MB/s", 64.0 / t.elapsed().as_secs_f64());
    }
}

/// Full send of the volume's snapshot `@s` (`size` MiB of data) into
/// memory and receive into another pool; then 1/8 of it overwritten, an
/// incremental stream from `@s` to `@t`, received on top. MB/s of volume
/// data (the stream carries each block once, with its checksum).
fn send_receive(pool: &mut Pool<MemDisk>, size: u64, rng: &mut Rng) {
    let mut stream = Vec::new();
    let t = Instant::now();
    pool.send("zones/v-disk0@s", None, &mut |b| stream.extend_from_slice(b)).unwrap();
    let secs = t.elapsed().as_secs_f64();
    println!("bench pool_send_full_{size}mib {:.0} MB/s", size as f64 / secs);
    let mut other = Pool::create("zones", vec![MemDisk::new(((size + size / 4 + 64) * MIB) as usize)], 9).unwrap();
    let t = Instant::now();
    other.receive("zones/copy-disk0", &stream).unwrap();
    println!("bench pool_receive_full_{size}mib {:.0} MB/s", size as f64 / t.elapsed().as_secs_f64());
    let chunk: Vec<u8> = (0..MIB).map(|_| rng.next() as u8).collect();
    let changed = size / 8;
    for i in 0..changed {
        pool.write("zones/v-disk0", i * 8 * MIB, &chunk).unwrap();
        if i % 4 == 3 {
            // The commit's worst case is reserved per write: commit often,
            // as storaged does (its 4 MiB bound).
            pool.sync().unwrap();
        }
    }
    pool.snapshot("zones/v-disk0@t").unwrap();
    stream.clear();
    let t = Instant::now();
    pool.send("zones/v-disk0@t", Some("zones/v-disk0@s"), &mut |b| stream.extend_from_slice(b)).unwrap();
    println!("bench pool_send_incremental_{size}mib {:.0} MB/s ({changed} MiB changed)", changed as f64 / t.elapsed().as_secs_f64());
    let t = Instant::now();
    other.receive("zones/copy-disk0", &stream).unwrap();
    println!("bench pool_receive_incremental_{size}mib {:.0} MB/s", changed as f64 / t.elapsed().as_secs_f64());
    let (mut a, mut b) = (vec![0u8; MIB as usize], vec![0u8; MIB as usize]);
    for i in 0..size {
        pool.read("zones/v-disk0@t", i * MIB, &mut a).unwrap();
        other.read("zones/copy-disk0@t", i * MIB, &mut b).unwrap();
        assert!(a == b, "the received volume differs at MiB {i}");
    }
    // Back to what the rest of the bench measures.
    pool.destroy("zones/v-disk0@t", false).unwrap();
    pool.rollback("zones/v-disk0@s").unwrap();
}

fn main() {
    let mut rng = Rng(1);
    per_checksum(&mut rng);
    for size in [64u64, 1024] {
        let (mut pool, write_mbps) = filled(size, &mut rng);
        let t = Instant::now();
        pool.snapshot("zones/v-disk0@s").unwrap();
        pool.clone_snapshot("zones/v-disk0@s", "zones/c-disk0").unwrap();
        println!("bench pool_snapshot_clone_{size}mib {:.2} ms", t.elapsed().as_secs_f64() * 1000.0);
        send_receive(&mut pool, size, &mut rng);
        if size == 1024 {
            println!("bench pool_seq_write {write_mbps:.0} MB/s");
            let mut buf = vec![0u8; MIB as usize];
            let t = Instant::now();
            for i in 0..size {
                pool.read("zones/v-disk0", i * MIB, &mut buf).unwrap();
            }
            println!("bench pool_seq_read {:.0} MB/s", size as f64 / t.elapsed().as_secs_f64());
            let t = Instant::now();
            let r = pool.scrub().unwrap();
            println!("bench pool_scrub {:.0} MB/s", r.bytes as f64 / MIB as f64 / t.elapsed().as_secs_f64());
            // The same bytes straight to a memory disk: the pool's cost as a ratio.
            let mut raw = MemDisk::new((size * MIB) as usize);
            let t = Instant::now();
            for i in 0..size {
                raw.write(i * MIB, &buf).unwrap();
            }
            let raw_mbps = size as f64 / t.elapsed().as_secs_f64();
            println!("bench pool_write_vs_raw_disk {:.3} ratio", write_mbps / raw_mbps);
        }
    }
    let mut pool = Pool::create("zones", vec![MemDisk::new((128 * MIB) as usize)], 2).unwrap();
    pool.create_volume("zones/text-disk0", 64 * MIB, 16384).unwrap();
    pool.set_prop("zones/text-disk0", "compression", "lz4").unwrap();
    let words = ["alcove", "zone", "volume", "snapshot", "clone", "mirror", "scrub", "kernel", "guest", "ring"];
    let mut text = Vec::new();
    while text.len() < (32 * MIB) as usize {
        text.extend_from_slice(words[rng.below(words.len() as u64) as usize].as_bytes());
        text.push(b' ');
    }
    text.truncate((32 * MIB) as usize);
    pool.write("zones/text-disk0", 0, &text).unwrap();
    pool.sync().unwrap();
    let s = pool.space_of("zones/text-disk0").unwrap();
    let r = s.compressratio_x100();
    println!("bench pool_compressratio_words {}.{:02} x", r / 100, r % 100);
}
