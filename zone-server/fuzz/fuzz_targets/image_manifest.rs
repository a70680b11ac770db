//! Manifest JSON and `/images` answers from an image source: errors only,
//! never a panic.
#![no_main]

use alcove_images::{Manifest, imgapi};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = Manifest::parse(data);
    let _ = imgapi::parse_list(data);
    let _ = imgapi::parse_image(data, "0b7b3b7e-8d6c-4c8e-9d3a-2f1e5a6b7c8d");
});
