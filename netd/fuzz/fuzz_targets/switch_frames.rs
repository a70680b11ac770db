//! Frames a guest (or the wire) could send, into the switch with every
//! link protection, a VLAN and a cap: never a panic, the fabric's way and
//! the copying way agree, every frame is counted (`netd_switch::fuzzing`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    netd_switch::fuzzing::frames(data);
});
