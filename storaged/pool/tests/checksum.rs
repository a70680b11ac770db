//! The block checksum functions (FORMAT.md "Checksums"): fletcher4's known
//! answers, the `checksum` property (`on` is fletcher4 for data and the
//! indirect blocks above it, and the MOS is fletcher4; `off` is refused),
//! blocks keeping the function their pointer names across a change of the
//! property, a pool from before session 18 (BLAKE3 indirect blocks and
//! MOS) reading and growing, a flipped bit in a fletcher4 block healed from
//! the mirror and counted by scrub, and block pointers naming no known
//! function refused.

use alcove_pool::format::*;
use alcove_pool::{Error, MemDisk, Pool};

const MIB: usize = 1 << 20;

/// Words of `len` bytes that differ from block to block and from any other
/// test's (`seed`), none zero.
fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8 | 1
        })
        .collect()
}

/// fletcher4 from its closed form, not its recurrence: over n words, word
/// i (from 0) counts k = n - i times in b, k(k+1)/2 in c and
/// k(k+1)(k+2)/6 in d, all modulo 2^64.
fn fletcher4_closed_form(data: &[u8]) -> [u64; 4] {
    let words: Vec<u128> = data.chunks(4).map(|w| u128::from(u32::from_le_bytes(w.try_into().unwrap()))).collect();
    let n = words.len() as u128;
    let m = 1u128 << 64;
    let mut s = [0u128; 4];
    for (i, &w) in words.iter().enumerate() {
        let k = n - i as u128;
        let coeff = [1, k, k * (k + 1) / 2, k * (k + 1) * (k + 2) / 6];
        for j in 0..4 {
            s[j] = (s[j] + (coeff[j] % m) * w % m) % m;
        }
    }
    s.map(|x| x as u64)
}

fn words(c: &Checksum) -> [u64; 4] {
    core::array::from_fn(|i| u64::from_le_bytes(c[i * 8..i * 8 + 8].try_into().unwrap()))
}

#[test]
fn fletcher4_known_answers() {
    assert_eq!(fletcher4(&[]), [0; 32], "no words: all four sums zero");
    // Words 1, 2, 3: a = 6, b = 1+3+6, c = 1+4+10, d = 1+5+15.
    assert_eq!(words(&fletcher4(&[1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0])), [6, 10, 15, 21]);
    // A short tail is a zero-padded word: "abc" is the word 0x636261.
    assert_eq!(words(&fletcher4(b"abc")), [0x636261; 4]);
    // Fixed vectors, derived once with Python's integers from the
    // definition (struct.iter_unpack('<I', data); a += w, b += a, c += b,
    // d += c, each mod 2**64; struct.pack('<4Q', a, b, c, d).hex()):
    // bytes i % 256 for i in 0..4096; 0xff × 128 KiB (c and d wrap).
    let ramp: Vec<u8> = (0..4096).map(|i| i as u8).collect();
    assert_eq!(
        hex(&fletcher4(&ramp)),
        "00f8fd010602000000a885939df70300005433ab197f3e05004c8a0683b02234"
    );
    assert_eq!(
        hex(&fletcher4(&vec![0xff; 128 * 1024])),
        "0080ffffff7f000000c0ffdfff3f00200080aa8aaa7a557500e0ff37556d55c7"
    );
    // The closed form agrees on blocks of every size a block may have.
    for (seed, len) in [(1, 4096), (2, 8192), (3, 65536), (4, 128 * 1024), (5, 12), (6, 4)] {
        let d = pattern(seed, len);
        assert_eq!(words(&fletcher4(&d)), fletcher4_closed_form(&d), "{len} bytes");
        assert_eq!(checksum_with(CKSUM_FLETCHER4, &d), fletcher4(&d));
    }
    // Every single-bit flip of a block changes it (fletcher4 detects them
    // all: a flip changes a by ±2^j).
    let block = pattern(7, 4096);
    let sum = fletcher4(&block);
    let mut b = block.clone();
    for bit in (0..4096 * 8).step_by(5) {
        b[bit / 8] ^= 1 << (bit % 8);
        assert_ne!(fletcher4(&b), sum, "bit {bit} flipped, same checksum");
        b[bit / 8] ^= 1 << (bit % 8);
    }
    // Words swapped: a is the same, b is not.
    b.swap(0, 4);
    assert_ne!(fletcher4(&b), sum);
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn names_and_pointer_values() {
    assert_eq!(cksum_from_name("on"), Some(CKSUM_FLETCHER4), "on is ZFS's default, fletcher4");
    for algo in [CKSUM_SHA256, CKSUM_BLAKE3, CKSUM_FLETCHER4] {
        assert_eq!(cksum_from_name(cksum_name(algo)), Some(algo));
    }
    for bad in ["off", "fletcher2", "sha512", "ON", ""] {
        assert_eq!(cksum_from_name(bad), None, "{bad:?}");
    }
    // Indirect blocks take their data's function, fletcher4 included (as
    // on ZFS; BLAKE3 above fletcher4 before session 18); the MOS fletcher4.
    for algo in [CKSUM_SHA256, CKSUM_BLAKE3, CKSUM_FLETCHER4] {
        assert_eq!(indirect_cksum(algo), algo);
    }
    assert_eq!(MOS_CKSUM, CKSUM_FLETCHER4);
    // Byte 27 of a block pointer: 0, 1 and 2 parse; every other value is
    // refused as corrupt.
    let bp = BlockPtr { offset: 1 << 20, psize: 8192, lsize: 8192, birth: 3, kind: 1, comp: 0, level: 0, cksum: 0, checksum: [9; 32] };
    let mut raw = [0u8; BP_SIZE];
    for v in 0..=255u8 {
        BlockPtr { cksum: v, ..bp }.encode(&mut raw);
        assert_eq!(raw[27], v);
        let r = BlockPtr::decode(&raw);
        if v <= 2 {
            assert_eq!(r, Ok(BlockPtr { cksum: v, ..bp }));
        } else {
            assert_eq!(r, Err(FormatError::BadField("block pointer checksum function")), "cksum {v}");
        }
    }
}

/// The block pointers anywhere on `disk` whose checksum is `data`'s by
/// one of the known functions (a test of the write path: it finds what the
/// pool wrote without the pool's code).
fn pointers_to(disk: &[u8], data: &[u8]) -> Vec<(usize, BlockPtr)> {
    let mut out = Vec::new();
    for algo in [CKSUM_SHA256, CKSUM_BLAKE3, CKSUM_FLETCHER4] {
        let sum = checksum_with(algo, data);
        for at in (32..disk.len() - 32).filter(|&i| disk[i..i + 32] == sum) {
            if let Ok(bp) = BlockPtr::decode(&disk[at - 32..at + 32])
                && bp.cksum == algo
            {
                out.push((at - 32, bp));
            }
        }
    }
    out
}

/// The one pointer to `data`, and the function it names.
fn function_of(disk: &[u8], data: &[u8]) -> u8 {
    let found = pointers_to(disk, data);
    assert_eq!(found.len(), 1, "{found:?}");
    found[0].1.cksum
}

#[test]
fn on_is_fletcher4_for_data_and_the_tree_above_it_and_off_is_refused() {
    let mut pool = Pool::create("zones", vec![MemDisk::new(16 * MIB)], 11).unwrap();
    let v = "zones/d-disk0";
    pool.create_volume(v, 4 * MIB as u64, 8192).unwrap();
    let off = pool.set_prop(v, "checksum", "off");
    assert!(
        matches!(&off, Err(Error::Invalid(m)) if m.contains("\"checksum\": off is not supported") && m.contains("self-healing")),
        "{off:?}"
    );
    let bad = pool.set_prop(v, "checksum", "fletcher2");
    assert!(matches!(&bad, Err(Error::Invalid(m)) if m.contains("must be on, fletcher4, blake3 or sha256")), "{bad:?}");
    assert_eq!(pool.get(v).unwrap().props.get("checksum"), None, "refused values are not set");
    let a = pattern(20, 8192);
    pool.write(v, 3 * 8192, &a).unwrap();
    pool.sync().unwrap();
    let disk = pool.into_disks().remove(0).bytes;
    let found = pointers_to(&disk, &a);
    assert_eq!(found.len(), 1, "{found:?}");
    let (at, bp) = found[0];
    assert_eq!((bp.cksum, bp.kind), (CKSUM_FLETCHER4, BlockKind::Data as u8), "absent is on: fletcher4");
    // The pointer sits in the volume's level-1 indirect block (4 MiB of
    // 8 KiB blocks: 512 pointers, two levels), which fletcher4 guards too,
    // and so does the root above it; the MOS is fletcher4.
    let indirect = &disk[at / 4096 * 4096..][..4096];
    let above = pointers_to(&disk, indirect);
    assert_eq!(above.len(), 1, "{above:?}");
    assert_eq!((above[0].1.cksum, above[0].1.kind, above[0].1.level), (CKSUM_FLETCHER4, BlockKind::Indirect as u8, 1));
    let root = &disk[above[0].0 / 4096 * 4096..][..4096];
    let top = pointers_to(&disk, root);
    assert_eq!(top.len(), 1, "{top:?}");
    assert_eq!((top[0].1.cksum, top[0].1.kind, top[0].1.level), (CKSUM_FLETCHER4, BlockKind::Indirect as u8, 2));
    assert_eq!(newest_uberblock(&disk).mos.cksum, CKSUM_FLETCHER4, "the MOS");
    // Explicitly `fletcher4` and `on` are the same function.
    let mut pool = Pool::import(vec![MemDisk { bytes: disk }]).unwrap();
    pool.set_prop(v, "checksum", "fletcher4").unwrap();
    let b = pattern(21, 8192);
    pool.write(v, 9 * 8192, &b).unwrap();
    pool.set_prop(v, "checksum", "sha256").unwrap();
    let c = pattern(22, 8192);
    pool.write(v, 10 * 8192, &c).unwrap();
    pool.sync().unwrap();
    assert_eq!(pool.get(v).unwrap().props.get("checksum").map(String::as_str), Some("sha256"));
    let disk = pool.into_disks().remove(0).bytes;
    assert_eq!(function_of(&disk, &b), CKSUM_FLETCHER4);
    assert_eq!(function_of(&disk, &c), CKSUM_SHA256);
}

/// A pool written with the old default (BLAKE3; set explicitly here, as a
/// pool from before the change has it recorded in every pointer) reads
/// back after the volume's property becomes `on`: old blocks keep BLAKE3,
/// new ones are fletcher4, and both verify after import.
#[test]
fn blake3_blocks_read_back_after_the_default_becomes_fletcher4() {
    let mut pool = Pool::create("zones", vec![MemDisk::new(32 * MIB), MemDisk::new(32 * MIB)], 12).unwrap();
    let v = "zones/o-disk0";
    pool.create_volume(v, 8 * MIB as u64, 8192).unwrap();
    pool.set_prop(v, "checksum", "blake3").unwrap();
    let old = pattern(30, 2 * MIB);
    pool.write(v, 0, &old).unwrap();
    pool.sync().unwrap();
    pool.snapshot("zones/o-disk0@old").unwrap();
    let mut pool = Pool::import(pool.into_disks()).unwrap();
    pool.set_prop(v, "checksum", "on").unwrap();
    let new = pattern(31, MIB);
    pool.write(v, MIB as u64, &new).unwrap();
    pool.sync().unwrap();
    let disks = pool.into_disks();
    let d0 = &disks[0].bytes;
    assert_eq!(function_of(d0, &old[..8192]), CKSUM_BLAKE3, "an old block keeps its function");
    assert_eq!(function_of(d0, &new[..8192]), CKSUM_FLETCHER4, "a new block is fletcher4");
    let mut pool = Pool::import(disks).unwrap();
    let mut want = old.clone();
    want[MIB..].copy_from_slice(&new);
    let mut got = vec![0u8; 2 * MIB];
    pool.read(v, 0, &mut got).unwrap();
    assert!(got == want, "the volume: old blocks and new");
    pool.read("zones/o-disk0@old", 0, &mut got).unwrap();
    assert!(got == old, "the snapshot: every block BLAKE3, unchanged");
    let r = pool.scrub().unwrap();
    assert!(r.errors.is_empty() && r.space_checked, "{r:?}");
    assert!(pool.child_stats().iter().all(|s| s.checksum_errors == 0 && s.repaired_bytes == 0), "{:?}", pool.child_stats());
}

/// The uberblock of the highest txg in label 0's ring.
fn newest_uberblock(disk: &[u8]) -> Uberblock {
    (0..UB_SLOTS)
        .filter_map(|i| Uberblock::decode(&disk[(BLOCK + i * UB_SLOT) as usize..][..UB_SLOT as usize]).ok())
        .max_by_key(|u| u.txg)
        .expect("an uberblock")
}

/// Block `b` of the old pool's volume (what session 17's code wrote there).
fn old_block(b: u64) -> Vec<u8> {
    (0..8192u64).map(|k| (k / 4 * (2 * b + 1) + b) as u8 | 1).collect()
}

/// A pool written by session 17's code (`tests/data/fletcher4-blake3-
/// indirect.pool.lz4`, one 4 MiB disk, LZ4 with its size in front): a
/// fletcher4 volume `zones/old-disk0` (2 MiB, 8 KiB blocks) with blocks 0,
/// 1, 2, 3, 64, 65, 130 and 255 written, then the snapshot `@before`,
/// then block 1 overwritten (with block 1000's pattern); its indirect
/// blocks and MOS are BLAKE3. It imports, reads, scrubs clean, and takes
/// new writes whose tree is fletcher4 beside the old BLAKE3 blocks.
#[test]
fn a_pool_with_blake3_indirect_blocks_and_mos_reads_and_grows() {
    let packed = include_bytes!("data/fletcher4-blake3-indirect.pool.lz4");
    let disk = lz4_flex::block::decompress_size_prepended(packed).expect("the fixture unpacks");
    assert_eq!(disk.len(), 4 * MIB);
    assert_eq!(newest_uberblock(&disk).mos.cksum, CKSUM_BLAKE3, "the old MOS");
    let indirect_of = |disk: &[u8], data: &[u8]| {
        let (at, bp) = pointers_to(disk, data)[0];
        let above = pointers_to(disk, &disk[at / 4096 * 4096..][..4096]);
        (bp.cksum, above[0].1.cksum)
    };
    assert_eq!(indirect_of(&disk, &old_block(64)), (CKSUM_FLETCHER4, CKSUM_BLAKE3), "old: fletcher4 data under BLAKE3");
    let v = "zones/old-disk0";
    let want = |b: u64, snap: bool| match b {
        1 if !snap => old_block(1000),
        0 | 1 | 2 | 3 | 64 | 65 | 130 | 255 => old_block(b),
        _ => vec![0; 8192],
    };
    let check = |pool: &mut Pool<MemDisk>, name: &str, snap: bool| {
        let mut got = vec![0u8; 2 * MIB];
        pool.read(name, 0, &mut got).unwrap();
        for (b, block) in got.chunks(8192).enumerate() {
            assert!(block == want(b as u64, snap), "{name}: block {b}");
        }
    };
    let mut pool = Pool::import(vec![MemDisk { bytes: disk }]).unwrap();
    check(&mut pool, v, false);
    check(&mut pool, "zones/old-disk0@before", true);
    let r = pool.scrub().unwrap();
    assert!(r.errors.is_empty() && r.space_checked, "{r:?}");
    // New writes: block 66 shares its level-1 block with 64 and 65 (now
    // rewritten, fletcher4); block 200's level-1 block is new; block 130's
    // stays BLAKE3 until written.
    let (n66, n200) = (pattern(40, 8192), pattern(41, 8192));
    pool.write(v, 66 * 8192, &n66).unwrap();
    pool.write(v, 200 * 8192, &n200).unwrap();
    pool.sync().unwrap();
    let disk = pool.into_disks().remove(0).bytes;
    assert_eq!(newest_uberblock(&disk).mos.cksum, CKSUM_FLETCHER4, "the new MOS");
    assert_eq!(indirect_of(&disk, &n66), (CKSUM_FLETCHER4, CKSUM_FLETCHER4));
    assert_eq!(indirect_of(&disk, &n200), (CKSUM_FLETCHER4, CKSUM_FLETCHER4));
    assert_eq!(indirect_of(&disk, &old_block(130)), (CKSUM_FLETCHER4, CKSUM_BLAKE3), "unwritten: as it was");
    let mut pool = Pool::import(vec![MemDisk { bytes: disk }]).unwrap();
    let mut got = vec![0u8; 8192];
    pool.read(v, 66 * 8192, &mut got).unwrap();
    assert!(got == n66);
    pool.read(v, 200 * 8192, &mut got).unwrap();
    assert!(got == n200);
    check(&mut pool, "zones/old-disk0@before", true);
    let r = pool.scrub().unwrap();
    assert!(r.errors.is_empty() && r.space_checked, "{r:?}");
    pool.verify(false).unwrap();
}

fn find(disk: &[u8], needle: &[u8]) -> usize {
    let at: Vec<usize> = (0..disk.len() / 4096).map(|i| i * 4096).filter(|&i| disk[i..].starts_with(needle)).collect();
    assert_eq!(at.len(), 1, "{needle:?} found at {at:?}");
    at[0]
}

#[test]
fn a_flipped_bit_in_a_fletcher4_block_is_healed_from_the_mirror_and_counted_by_scrub() {
    let mut pool = Pool::create("zones", vec![MemDisk::new(16 * MIB), MemDisk::new(16 * MIB)], 13).unwrap();
    let v = "zones/m-disk0";
    pool.create_volume(v, 2 * MIB as u64, 8192).unwrap();
    let data = pattern(40, MIB);
    pool.write(v, 0, &data).unwrap();
    pool.sync().unwrap();
    let mut disks = pool.into_disks();
    assert_eq!(function_of(&disks[0].bytes, &data[8192..16384]), CKSUM_FLETCHER4);
    // One bit of block 1 on side 0 (a read heals it), one of block 5 and
    // one of block 9 on side 1 (only scrub reads side 1 while side 0 is
    // good).
    let b1 = find(&disks[0].bytes, &data[8192..8192 + 64]);
    disks[0].bytes[b1 + 1000] ^= 0x10;
    for k in [5, 9] {
        let at = find(&disks[1].bytes, &data[k * 8192..k * 8192 + 64]);
        disks[1].bytes[at + 8191] ^= 0x80;
    }
    let mut pool = Pool::import(disks).unwrap();
    let mut got = vec![0u8; 8192];
    pool.read(v, 8192, &mut got).unwrap();
    assert!(got[..] == data[8192..16384], "the guest reads correct data");
    let s = pool.child_stats();
    assert_eq!((s[0].checksum_errors, s[0].repaired_bytes, s[1].checksum_errors), (1, 8192, 0), "{s:?}");
    let r = pool.scrub().unwrap();
    assert!(r.errors.is_empty(), "every block had a good copy: {r:?}");
    let s = pool.child_stats();
    assert_eq!((s[1].checksum_errors, s[1].repaired_bytes), (2, 2 * 8192), "scrub found and repaired side 1's two: {s:?}");
    assert_eq!((s[0].checksum_errors, s[0].repaired_bytes), (1, 8192), "side 0 was repaired already: {s:?}");
    let scan = pool.last_scrub().unwrap().clone();
    assert_eq!(scan.repaired, 2 * 8192, "{scan:?}");
    let disks = pool.into_disks();
    let (lo, hi) = data_region(asize_of(disks[0].bytes.len() as u64));
    let (lo, hi) = (lo as usize, hi as usize);
    assert!(disks[0].bytes[lo..hi] == disks[1].bytes[lo..hi], "both sides' data the same again");
    // On one disk, the same flip is an I/O error, never the wrong data.
    let mut one = vec![disks[0].clone()];
    let at = find(&one[0].bytes, &data[3 * 8192..3 * 8192 + 64]);
    one[0].bytes[at + 4] ^= 1;
    let mut pool = Pool::import(one).unwrap();
    let r = pool.read(v, 3 * 8192, &mut got);
    assert!(matches!(r, Err(Error::Checksum { .. })), "{r:?}");
    let r = pool.scrub().unwrap();
    assert_eq!(r.errors.len(), 1, "{r:?}");
}
