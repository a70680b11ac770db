//! A label header (FORMAT.md "Labels"): the fuzzer's bytes as a label block
//! as read from disk (the seal almost always fails), then the same bytes
//! zero-padded to a block and resealed, so the fields' checks see them.
//! Never a panic; what parses re-encodes to a label that parses to the same
//! header and index, and satisfies the invariants import relies on.
#![no_main]

use alcove_pool::format::{BLOCK, CKSUM_SHA256, LabelHeader, MAX_CHILDREN, MIN_DISK, checksum_with};
use libfuzzer_sys::fuzz_target;

fn check(b: &[u8]) {
    let Ok((h, index)) = LabelHeader::decode(b) else { return };
    assert!(!h.children.is_empty() && h.children.len() <= MAX_CHILDREN, "children {:?}", h.children);
    assert_eq!(h.children[h.child as usize], h.vdev_guid, "this disk's guid among the children");
    assert!(h.asize >= MIN_DISK && h.asize % BLOCK == 0, "asize {}", h.asize);
    let again = h.encode(index);
    assert_eq!(again.len(), BLOCK as usize);
    assert_eq!(LabelHeader::decode(&again), Ok((h, index)), "a label that does not round-trip");
}

fuzz_target!(|data: &[u8]| {
    let n = BLOCK as usize;
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
