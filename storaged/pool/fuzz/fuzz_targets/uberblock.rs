//! An uberblock slot (FORMAT.md "Uberblock ring"): the fuzzer's bytes as a
//! slot read from disk (the seal almost always fails), then zero-padded to
//! a slot and resealed, so the fields' checks see them. Never a panic; what
//! parses names a MOS import can read, and re-encodes to a slot that parses
//! to the same uberblock.
#![no_main]

use alcove_pool::format::{BLOCK, BlockKind, BlockPtr, CKSUM_SHA256, UB_SLOT, Uberblock, checksum_with};
use libfuzzer_sys::fuzz_target;

fn check(b: &[u8]) {
    let Ok(u) = Uberblock::decode(b) else { return };
    assert!(u.txg != 0, "txg 0");
    assert!(!u.mos.is_hole() && u.mos.kind == BlockKind::Mos as u8, "MOS pointer {:?}", u.mos);
    assert_eq!(BlockPtr::decode(&{
        let mut e = [0u8; 64];
        u.mos.encode(&mut e);
        e
    }), Ok(u.mos), "the MOS pointer does not parse on its own");
    assert!(u.log % BLOCK == 0, "log {}", u.log);
    let again = u.encode();
    assert_eq!(again.len(), UB_SLOT as usize);
    assert_eq!(Uberblock::decode(&again), Ok(u), "an uberblock that does not round-trip");
}

fuzz_target!(|data: &[u8]| {
    let n = UB_SLOT as usize;
    if data.len() > n {
        return;
    }
    check(data);
    let mut b = data.to_vec();
    b.resize(n, 0);
    let sum = checksum_with(CKSUM_SHA256, &b[..n - 32]);
    b[n - 32..].copy_from_slice(&sum);
    check(&b);
});
