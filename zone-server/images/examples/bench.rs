//! Image store figures on the host (memory disks: the store's and the
//! pool's own work), printed as `bench NAME VALUE UNIT`. Run: `cargo run
//! --release -p alcove-images --example bench`. Nothing asserts on them.
//!
//! * `image_install_raw`, `image_install_gzip`, `image_install_xz`: MB of
//!   disk image per second through `store::install` (SHA-1, gunzip or unxz
//!   with xz -6's 8 MiB dictionary, pool writes and commits).
//! * `image_clone_for_instance_<N>mib`: an instance disk cloned from an
//!   image holding N MiB of data (the same at both sizes: no data moves).

use std::io::Write;
use std::time::Instant;

use alcove_images::{Manifest, store};
use alcove_pool::{MemDisk, Pool};
use serde_json::json;
use sha1::{Digest, Sha1};

const MIB: usize = 1 << 20;

fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    // Half random, half text-like (compressible) megabytes.
    (0..len)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if (i / MIB).is_multiple_of(2) { x as u8 } else { b"alcove image "[i % 13] }
        })
        .collect()
}

fn manifest(uuid: &str, file: &[u8], compression: &str, mib: usize) -> Manifest {
    let sha1: String = Sha1::digest(file).iter().map(|b| format!("{b:02x}")).collect();
    Manifest::from_json(json!({
        "v": 2, "uuid": uuid, "name": "bench", "version": "1", "type": "zvol", "os": "linux",
        "image_size": mib, "files": [{"sha1": sha1, "size": file.len(), "compression": compression}]
    }))
    .unwrap()
}

fn main() {
    let inst = "5e4d3c2b-1a09-4f8e-8d7c-6b5a49382716";
    for (i, size) in [64usize, 256].into_iter().enumerate() {
        let uuid = format!("0b7b3b7e-8d6c-4c8e-9d3a-2f1e5a6b7c{i:02x}");
        let mut pool = Pool::create("zones", vec![MemDisk::new(2 * size * MIB + 64 * MIB)], 1).unwrap();
        let disk = data(size * MIB, i as u64 + 1);
        let t = Instant::now();
        store::install(&mut pool, manifest(&uuid, &disk, "none", size), &disk, None).unwrap();
        if size == 64 {
            println!("bench image_install_raw {:.0} MB/s", size as f64 / t.elapsed().as_secs_f64());
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(&disk).unwrap();
            let gz = e.finish().unwrap();
            let mut pool2 = Pool::create("zones", vec![MemDisk::new(2 * size * MIB + 64 * MIB)], 1).unwrap();
            let t = Instant::now();
            store::install(&mut pool2, manifest(&uuid, &gz, "gzip", size), &gz, None).unwrap();
            println!("bench image_install_gzip {:.0} MB/s", size as f64 / t.elapsed().as_secs_f64());
            let mut w = lzma_rust2::XzWriter::new(Vec::new(), lzma_rust2::XzOptions::with_preset(6)).unwrap();
            w.write_all(&disk).unwrap();
            let xz = w.finish().unwrap();
            let mut pool3 = Pool::create("zones", vec![MemDisk::new(2 * size * MIB + 64 * MIB)], 1).unwrap();
            let t = Instant::now();
            store::install(&mut pool3, manifest(&uuid, &xz, "xz", size), &xz, None).unwrap();
            println!("bench image_install_xz {:.0} MB/s", size as f64 / t.elapsed().as_secs_f64());
        }
        let t = Instant::now();
        store::clone_for_instance(&mut pool, &uuid, inst, 0).unwrap();
        println!("bench image_clone_for_instance_{size}mib {:.2} ms", t.elapsed().as_secs_f64() * 1000.0);
    }
}
