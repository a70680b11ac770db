//! send / receive between two pools: a received volume equals its source
//! byte for byte, full and incremental; a stream cut short or altered is
//! refused with a clear error and leaves the receiving pool as it was.

use alcove_pool::fault::Rng;
use alcove_pool::{MemDisk, Pool};

const MIB: usize = 1024 * 1024;
const SIZE: usize = 4 * MIB;

fn send(pool: &mut Pool<MemDisk>, snap: &str, from: Option<&str>) -> Vec<u8> {
    let mut out = Vec::new();
    let n = pool.send(snap, from, &mut |b| out.extend_from_slice(b)).unwrap();
    assert_eq!(n as usize, out.len());
    out
}

fn read(pool: &mut Pool<MemDisk>, name: &str) -> Vec<u8> {
    let mut v = vec![0u8; SIZE];
    pool.read(name, 0, &mut v).unwrap();
    v
}

fn scribble(pool: &mut Pool<MemDisk>, vol: &str, rng: &mut Rng, n: usize) {
    for _ in 0..n {
        let len = 512 * (1 + rng.below(32) as usize);
        let at = rng.below(((SIZE - len) / 512) as u64) * 512;
        let data: Vec<u8> = if rng.below(4) == 0 { vec![0; len] } else { (0..len).map(|_| rng.next() as u8).collect() };
        pool.write(vol, at, &data).unwrap();
    }
}

#[test]
fn full_and_incremental_round_trip() {
    let mut rng = Rng(21);
    let mut a = Pool::create("zones", vec![MemDisk::new(32 * MIB)], 1).unwrap();
    let mut b = Pool::create("zones", vec![MemDisk::new(32 * MIB)], 2).unwrap();
    a.create_volume("zones/src", SIZE as u64, 4096).unwrap();
    scribble(&mut a, "zones/src", &mut rng, 60);
    a.snapshot("zones/src@one").unwrap();
    let full = send(&mut a, "zones/src@one", None);
    assert_eq!(b.receive("zones/dst", &full).unwrap(), "zones/dst@one");
    assert!(read(&mut b, "zones/dst") == read(&mut a, "zones/src@one"));
    // Incremental: a few changes (zeros among them: holes again).
    scribble(&mut a, "zones/src", &mut rng, 8);
    a.write("zones/src", 0, &vec![0; 64 * 1024]).unwrap();
    a.snapshot("zones/src@two").unwrap();
    let inc = send(&mut a, "zones/src@two", Some("zones/src@one"));
    assert!(inc.len() < full.len() / 3, "incremental {} bytes against full {}", inc.len(), full.len());
    b.receive("zones/dst", &inc).unwrap();
    assert!(read(&mut b, "zones/dst") == read(&mut a, "zones/src@two"));
    assert!(read(&mut b, "zones/dst@one") == read(&mut a, "zones/src@one"));
    b.verify(false).unwrap();
    // The same incremental again: its base is no longer the latest snapshot.
    let err = b.receive("zones/dst", &inc).unwrap_err().to_string();
    assert!(err.contains("already exists") || err.contains("not the stream's base"), "{err}");
    // And onto a volume that changed since its base.
    b.write("zones/dst", 0, &[1; 512]).unwrap();
    scribble(&mut a, "zones/src", &mut rng, 2);
    a.snapshot("zones/src@three").unwrap();
    let inc3 = send(&mut a, "zones/src@three", Some("zones/src@two"));
    let err = b.receive("zones/dst", &inc3).unwrap_err().to_string();
    assert!(err.contains("changed since"), "{err}");
    b.rollback("zones/dst@two").unwrap();
    b.receive("zones/dst", &inc3).unwrap();
    assert!(read(&mut b, "zones/dst@three") == read(&mut a, "zones/src@three"));
    b.verify(false).unwrap();
}

#[test]
fn cut_or_altered_streams_are_refused_and_change_nothing() {
    let mut rng = Rng(22);
    let mut a = Pool::create("zones", vec![MemDisk::new(16 * MIB)], 3).unwrap();
    a.create_volume("zones/src", SIZE as u64, 8192).unwrap();
    scribble(&mut a, "zones/src", &mut rng, 20);
    a.snapshot("zones/src@s").unwrap();
    let full = send(&mut a, "zones/src@s", None);
    let mut b = Pool::create("zones", vec![MemDisk::new(16 * MIB)], 4).unwrap();
    let txg = b.txg();
    let cuts: Vec<usize> = (0..full.len()).step_by(full.len() / 97 + 1).chain([full.len() - 1, full.len() - 32, 10]).collect();
    for cut in cuts {
        let err = b.receive("zones/dst", &full[..cut]).unwrap_err().to_string();
        assert!(err.contains("cut short") || err.contains("checksum"), "cut at {cut}: {err}");
    }
    for _ in 0..50 {
        let mut bad = full.clone();
        let i = rng.below(bad.len() as u64) as usize;
        bad[i] ^= 1 << rng.below(8);
        let err = b.receive("zones/dst", &bad).unwrap_err().to_string();
        assert!(err.starts_with("receive:") || err.contains("stream"), "flip at {i}: {err}");
    }
    assert_eq!(b.txg(), txg, "nothing was written");
    assert!(b.list().is_empty());
    b.receive("zones/dst", &full).unwrap();
    assert!(read(&mut b, "zones/dst") == read(&mut a, "zones/src"));
}

/// storaged's bound on a stream it makes: past it the walk stops, having
/// read about that much of the snapshot (not all of it); under it the
/// stream is the whole one.
#[test]
fn a_bounded_send_stops_at_its_bound() {
    let mut rng = Rng(23);
    let mut a = Pool::create("zones", vec![MemDisk::new(32 * MIB)], 1).unwrap();
    a.create_volume("zones/src", SIZE as u64, 4096).unwrap();
    let data: Vec<u8> = (0..SIZE).map(|_| rng.next() as u8 | 1).collect();
    a.write("zones/src", 0, &data).unwrap();
    a.snapshot("zones/src@full").unwrap();
    let whole = send(&mut a, "zones/src@full", None);
    let limit = (MIB / 2) as u64;
    let reads0 = a.meter().disk_read_bytes;
    let mut out = Vec::new();
    let r = a.send_bounded("zones/src@full", None, limit, &mut |b| out.extend_from_slice(b)).unwrap();
    let read = a.meter().disk_read_bytes - reads0;
    assert_eq!(r, None, "a {} byte stream is over {limit}", whole.len());
    assert!(out.len() as u64 <= limit + 4096 + 64, "{} bytes handed out", out.len());
    assert!(read < 2 * limit && read < SIZE as u64 / 4, "{read} bytes read to refuse it");
    let mut out = Vec::new();
    let n = a.send_bounded("zones/src@full", None, whole.len() as u64, &mut |b| out.extend_from_slice(b)).unwrap();
    assert_eq!(n, Some(whole.len() as u64));
    assert!(out == whole, "a stream within the bound is the whole stream");
    let mut out = Vec::new();
    let r = a.send_bounded("zones/src@full", None, whole.len() as u64 - 1, &mut |b| out.extend_from_slice(b)).unwrap();
    assert_eq!(r, None, "one byte over");
}
