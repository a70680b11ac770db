//! The image store holds none of a send-stream image: `imgadm import` /
//! install feed the pool's receive as the bytes arrive, so the peak heap
//! of an install is the pool's one piece and its own bookkeeping, the same
//! for a 4 MiB and a 32 MiB image (it was the whole stream before). Its own
//! test binary: the counting allocator sees this test alone.

#[path = "../../../storaged/pool/tests/common/counting.rs"]
mod counting;
mod common;

use alcove_images::store::Install;
use alcove_pool::{MemDisk, Pool};
use common::*;

/// Installs a send stream of a `mib` MiB image; returns the stream's
/// length and the install's peak heap.
fn install_peak(mib: usize) -> (usize, usize) {
    let big = || Pool::create("zones", vec![MemDisk::new(96 << 20)], 0x99).unwrap();
    let mut src = big();
    src.create_volume("zones/golden", (mib as u64) << 20, 8192).unwrap();
    let data = disk_image(mib << 20, 5);
    for (i, c) in data.chunks(1 << 20).enumerate() {
        src.write("zones/golden", (i as u64) << 20, c).unwrap();
        src.sync().unwrap();
    }
    src.snapshot("zones/golden@final").unwrap();
    let mut stream = Vec::new();
    src.send("zones/golden@final", None, &mut |b| stream.extend_from_slice(b)).unwrap();
    drop(src);
    let m = manifest(IMAGE, &stream, "none", mib as u64);
    let mut p = big();
    // The same metadata cache and open group bound at both sizes (full at
    // both), as storaged bounds them (its open group: 1024 blocks).
    p.set_meta_cache_blocks(8);
    p.set_dirty_block_limit(Some(256));
    let base = counting::start();
    let mut inst = Install::begin(&mut p, m, None).unwrap();
    for c in stream.chunks(16 * 1024) {
        inst.write(c).unwrap();
    }
    inst.finish().unwrap();
    let peak = counting::peak_since(base);
    assert!(read_volume(&mut p, &format!("zones/{IMAGE}@final"), data.len()) == data, "{mib} MiB: installed byte for byte");
    (stream.len(), peak)
}

#[test]
fn a_send_stream_install_holds_a_piece_not_the_stream() {
    let (small_len, small) = install_peak(4);
    let (big_len, big) = install_peak(32);
    println!("install of a {small_len}-byte stream: peak heap {} KiB", small / 1024);
    println!("install of a {big_len}-byte stream: peak heap {} KiB", big / 1024);
    assert!(big_len > 7 * small_len, "the streams differ in size");
    assert!(big < small + small / 4, "the peak grows with the image: {small} -> {big} bytes");
    assert!(big < big_len / 16, "the install held {big} bytes of a {big_len}-byte stream");
}
