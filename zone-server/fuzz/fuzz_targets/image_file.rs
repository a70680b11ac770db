//! An image file whose manifest matches it (size, SHA-1), so the fuzzer
//! reaches gunzip, unxz, the raw and send-stream paths and the pool: an
//! install either succeeds with the image in place or fails leaving nothing
//! behind.
#![no_main]

use alcove_images::{Manifest, store};
use alcove_pool::{MemDisk, Pool};
use libfuzzer_sys::fuzz_target;
use serde_json::json;
use sha1::{Digest, Sha1};

const UUID: &str = "0b7b3b7e-8d6c-4c8e-9d3a-2f1e5a6b7c8d";

fuzz_target!(|data: &[u8]| {
    let Some((&mode, file)) = data.split_first() else { return };
    if file.is_empty() {
        return;
    }
    let sha1: String = Sha1::digest(file).iter().map(|b| format!("{b:02x}")).collect();
    let compression = ["gzip", "none", "xz", "xz"][usize::from(mode & 3)];
    let m = Manifest::from_json(json!({
        "uuid": UUID, "name": "fuzz", "version": "1", "type": "zvol", "os": "linux", "image_size": 1,
        "files": [{"sha1": sha1, "size": file.len(), "compression": compression}]
    }))
    .unwrap();
    let mut pool = Pool::create("zones", vec![MemDisk::new(8 << 20)], 1).unwrap();
    let piece = usize::from(mode >> 2).max(1) * 64;
    let mut inst = store::Install::begin(&mut pool, m, None).unwrap();
    let r = file.chunks(piece).try_for_each(|c| inst.write(c)).and_then(|()| inst.finish());
    let names: Vec<String> = pool.list().into_iter().map(|d| d.name).collect();
    match r {
        Ok(_) => assert!(names.contains(&format!("zones/{UUID}@final")), "{names:?}"),
        Err(_) => assert!(names.is_empty(), "{names:?}"),
    }
});
