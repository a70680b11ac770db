//! A guest driver made of fuzzer bytes against every virtio device model
//! (block, net, console, rng): mostly well-formed request chains, some
//! through indirect tables, with bytes of the rings and buffers flipped,
//! `avail.idx` moved, configuration writes and resets in between (the
//! script is `vmm_server::virtio::fuzzing`; a host test runs it on
//! generated inputs). Nothing may panic, loop without end or touch memory
//! outside guest RAM.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = vmm_server::virtio::fuzzing::run(data);
});
