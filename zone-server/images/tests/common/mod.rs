#![allow(dead_code)]

use std::io::Write;

use alcove_images::Manifest;
use alcove_pool::{MemDisk, Pool};
use serde_json::{Value, json};
use sha1::{Digest, Sha1};

pub const IMAGE: &str = "0b7b3b7e-8d6c-4c8e-9d3a-2f1e5a6b7c8d";
pub const INSTANCE: &str = "5e4d3c2b-1a09-4f8e-8d7c-6b5a49382716";

pub fn pool() -> Pool<MemDisk> {
    Pool::create("zones", vec![MemDisk::new(48 << 20)], 0x1234).expect("pool")
}

pub fn sha1_hex(b: &[u8]) -> String {
    Sha1::digest(b).iter().map(|x| format!("{x:02x}")).collect()
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// xz with a small dictionary (64 KiB: the tests decode many files) and
/// the default CRC64 check, by an encoder independent of the decoder.
pub fn xz(data: &[u8]) -> Vec<u8> {
    let mut o = lzma_rust2::XzOptions::with_preset(1);
    o.lzma_options.dict_size = 64 << 10;
    let mut w = lzma_rust2::XzWriter::new(Vec::new(), o).unwrap();
    w.write_all(data).unwrap();
    w.finish().unwrap()
}

/// A manifest for `file` (its size and SHA-1) of a `image_size_mib` disk.
pub fn manifest_json(uuid: &str, file: &[u8], compression: &str, image_size_mib: u64) -> Value {
    json!({
        "v": 2,
        "uuid": uuid,
        "owner": "930896af-bf8c-48d4-885c-6573a94b1853",
        "name": "debian-12",
        "version": "20240131",
        "type": "zvol",
        "os": "linux",
        "state": "active",
        "disabled": false,
        "public": true,
        "published_at": "2024-01-31T12:00:00Z",
        "image_size": image_size_mib,
        "requirements": {"bootrom": "bios", "min_ram": 256},
        "files": [{"sha1": sha1_hex(file), "size": file.len(), "compression": compression}]
    })
}

pub fn manifest(uuid: &str, file: &[u8], compression: &str, image_size_mib: u64) -> Manifest {
    Manifest::from_json(manifest_json(uuid, file, compression, image_size_mib)).expect("manifest")
}

/// A disk image: `len` bytes with data in some places and zeros in others.
pub fn disk_image(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = vec![0u8; len];
    for (i, b) in v.iter_mut().enumerate() {
        // Every third 64 KiB stretch stays zero (a sparse disk).
        if (i / 65536) % 3 == 2 {
            continue;
        }
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = (x >> 24) as u8;
    }
    v
}

pub fn read_volume(pool: &mut Pool<MemDisk>, name: &str, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len.div_ceil(512) * 512];
    pool.read(name, 0, &mut buf).expect("read volume");
    buf.truncate(len);
    buf
}

pub fn names(pool: &Pool<MemDisk>) -> Vec<String> {
    pool.list().into_iter().map(|d| d.name).collect()
}
