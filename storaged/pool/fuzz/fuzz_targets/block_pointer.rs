//! A block pointer (FORMAT.md "Block pointers"), as it sits in an indirect
//! block, the MOS or an uberblock: never a panic; what parses is a hole or
//! a pointer with the documented invariants, and re-encodes to the same 64
//! bytes (nothing ignored, as `tests/fuzz.rs` asserts).
#![no_main]

use alcove_pool::format::{
    BLOCK, BP_SIZE, BlockKind, BlockPtr, COMP_LZ4, COMP_OFF, INDIRECT_SIZE, MAX_LSIZE, cksum_known,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() > 4 * BP_SIZE {
        return;
    }
    let Ok(bp) = BlockPtr::decode(data) else {
        return;
    };
    assert!(data.len() >= BP_SIZE);
    let mut e = [0u8; BP_SIZE];
    bp.encode(&mut e);
    assert_eq!(&e[..], &data[..BP_SIZE], "block pointer parsed from bytes it does not encode to");
    assert!(cksum_known(bp.cksum), "checksum function {}", bp.cksum);
    if bp.is_hole() {
        assert_eq!(bp, BlockPtr::HOLE, "a hole with fields set");
        return;
    }
    assert!(bp.psize > 0 && u64::from(bp.psize) % BLOCK == 0 && bp.offset % BLOCK == 0, "{bp:?}");
    assert!(bp.lsize > 0 && bp.birth > 0, "{bp:?}");
    match bp.comp {
        COMP_OFF => assert!(bp.lsize <= bp.psize, "{bp:?}"),
        COMP_LZ4 => assert!(bp.kind == BlockKind::Data as u8 && bp.lsize <= MAX_LSIZE && bp.psize < bp.lsize, "{bp:?}"),
        c => panic!("compression {c} parsed"),
    }
    match bp.kind {
        1 | 3 => assert_eq!(bp.level, 0, "{bp:?}"),
        2 => assert!(bp.level > 0 && bp.psize as usize == INDIRECT_SIZE, "{bp:?}"),
        k => panic!("kind {k} parsed"),
    }
});
