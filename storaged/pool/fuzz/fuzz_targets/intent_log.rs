//! An intent-log block (FORMAT.md "Intent log"): the fuzzer's bytes as the
//! block read at a log offset (the seal almost always fails), then sealed
//! again over the length the block claims with the function its version
//! names (SHA-256 for version 1, fletcher4 after), so the fields' checks see
//! them. Never a panic; what parses holds only data blocks and holes and
//! re-encodes (as the current version) to a block that parses the same; a
//! block of the current version re-encodes to its own bytes.
#![no_main]

use alcove_pool::format::{
    BLOCK, BlockKind, CKSUM_FLETCHER4, CKSUM_SHA256, LOG_BLOCK, LOG_HEADER, LOG_RECORDS_PER_BLOCK, LOG_VERSION, LogBlock,
    checksum_with,
};
use libfuzzer_sys::fuzz_target;

fn check(b: &[u8]) {
    let Ok(lb) = LogBlock::decode(b) else { return };
    assert!(lb.records.len() <= LOG_RECORDS_PER_BLOCK);
    assert!(lb.next != 0 && lb.next % BLOCK == 0, "next {}", lb.next);
    for r in &lb.records {
        assert!(r.bp.is_hole() || (r.bp.kind == BlockKind::Data as u8 && r.bp.level == 0), "record {r:?}");
    }
    let e = lb.encode();
    assert!((e.len() as u64).is_multiple_of(BLOCK) && e.len() as u64 <= LOG_BLOCK, "encoded to {} bytes", e.len());
    if lb.version == LOG_VERSION {
        assert_eq!(&e[..], &b[..e.len()], "log block parsed from bytes it does not encode to");
    }
    let again = LogBlock::decode(&e).expect("an encoded log block parses");
    assert_eq!(again, LogBlock { version: LOG_VERSION, ..lb }, "a log block that does not round-trip");
}

fuzz_target!(|data: &[u8]| {
    if data.len() > LOG_BLOCK as usize {
        return;
    }
    check(data);
    if data.len() < LOG_HEADER {
        return;
    }
    let len = u32::from_le_bytes(data[12..16].try_into().unwrap()) as usize;
    if len < LOG_HEADER + 32 || !len.is_multiple_of(BLOCK as usize) || len as u64 > LOG_BLOCK {
        return;
    }
    let algo = match u32::from_le_bytes(data[8..12].try_into().unwrap()) {
        1 => CKSUM_SHA256,
        _ => CKSUM_FLETCHER4,
    };
    let mut b = data.to_vec();
    b.resize(LOG_BLOCK as usize, 0);
    let sum = checksum_with(algo, &b[..len - 32]);
    b[len - 32..len].copy_from_slice(&sum);
    check(&b);
});
