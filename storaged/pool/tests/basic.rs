//! The pool as a user sees it: volumes read back what was written across
//! export and import, snapshots and clones share blocks and stay apart,
//! mirrors heal, a single disk gives an error instead of wrong data.

use alcove_pool::format::{BLOCK, BlockPtr, LOG_BLOCK, LabelHeader, Uberblock};
use alcove_pool::pool::{Error, volume_name};
use alcove_pool::{MemDisk, Pool};

const MIB: usize = 1024 * 1024;

/// Bytes that never repeat at a block's distance and are never zero.
fn pattern(seed: u8, len: usize) -> Vec<u8> {
    let mut rng = alcove_pool::fault::Rng(u64::from(seed) + 1);
    (0..len).map(|_| rng.next() as u8 | 1).collect()
}

fn reimport(pool: Pool<MemDisk>) -> Pool<MemDisk> {
    Pool::import(pool.into_disks()).expect("import")
}

#[test]
fn volume_survives_export_and_import_and_is_sparse() {
    let mut pool = Pool::create("zones", vec![MemDisk::new(16 * MIB)], 42).unwrap();
    let vol = volume_name("zones", "5a7bb5a3-7a6e-4a30-9a4c-0e6cd1b40c7b", 0);
    assert_eq!(vol, "zones/5a7bb5a3-7a6e-4a30-9a4c-0e6cd1b40c7b-disk0");
    // 64 GiB volume on a 16 MiB pool: sparse.
    pool.create_volume(&vol, 64 << 30, 8192).unwrap();
    let free0 = pool.free_bytes();
    let data = pattern(7, 3 * 4096 + 512);
    pool.write(&vol, (40 << 30) + 1024, &data).unwrap();
    pool.write(&vol, 512, &pattern(9, 512)).unwrap();
    pool.sync().unwrap();
    assert!(free0 - pool.free_bytes() < 256 * 1024, "a few blocks written, not the volume");
    let txg = pool.txg();
    let mut pool = reimport(pool);
    assert_eq!(pool.txg(), txg);
    let mut back = vec![0u8; data.len()];
    pool.read(&vol, (40 << 30) + 1024, &mut back).unwrap();
    assert_eq!(back, data);
    let mut head = vec![0u8; 1024];
    pool.read(&vol, 0, &mut head).unwrap();
    assert_eq!(&head[..512], &[0u8; 512][..]);
    assert_eq!(&head[512..], &pattern(9, 512)[..]);
    pool.verify(false).unwrap();
    // Overwriting frees the old blocks (no snapshot): space comes back.
    for _ in 0..20 {
        pool.write(&vol, 512, &pattern(3, 512)).unwrap();
        pool.sync().unwrap();
    }
    pool.verify(false).unwrap();
    // Zeros make holes again.
    pool.write(&vol, (40 << 30) + 1024, &vec![0; data.len()]).unwrap();
    pool.write(&vol, 0, &[0; 1024]).unwrap();
    pool.sync().unwrap();
    pool.verify(false).unwrap();
    let used = pool.size_bytes() - pool.free_bytes();
    assert!(used <= 8 * BLOCK + LOG_BLOCK, "only the MOS and the log's first block left, {used} bytes used");
}

#[test]
fn bad_requests_get_errors_naming_the_problem() {
    let mut pool = Pool::create("zones", vec![MemDisk::new(8 * MIB)], 1).unwrap();
    assert!(matches!(pool.create_volume("zones/a", 1000, 512), Err(Error::Invalid(_))));
    assert!(matches!(pool.create_volume("zones/a", 4096, 1000), Err(Error::Invalid(_))));
    assert!(matches!(pool.create_volume("other/a", 4096, 512), Err(Error::Invalid(_))));
    assert!(matches!(pool.create_volume("zones/a/b", 4096, 512), Err(Error::Invalid(_))));
    pool.create_volume("zones/a", 1 << 20, 4096).unwrap();
    assert!(matches!(pool.create_volume("zones/a", 1 << 20, 4096), Err(Error::Exists(_))));
    assert!(matches!(pool.write("zones/a", (1 << 20) - 512, &[1; 1024]), Err(Error::Invalid(_))));
    assert!(matches!(pool.write("zones/a", 100, &[1; 512]), Err(Error::Invalid(_))));
    assert!(matches!(pool.write("zones/nope", 0, &[1; 512]), Err(Error::NotFound(_))));
    // A 4 MiB volume of incompressible data does not fit on an 8 MiB disk
    // twice: the write past the pool's space is refused, the pool goes on.
    pool.create_volume("zones/big", 16 << 20, 4096).unwrap();
    let mut err = None;
    for i in 0..4096u64 {
        if let Err(e) = pool.write("zones/big", i * 4096, &pattern(i as u8, 4096)) {
            err = Some(e);
            break;
        }
    }
    assert_eq!(err, Some(Error::NoSpace));
    pool.sync().unwrap();
    pool.verify(false).unwrap();
    let msg = Pool::create("x/y", vec![MemDisk::new(8 * MIB)], 1).err().unwrap().to_string();
    assert!(msg.contains("pool name"), "{msg}");
}

#[test]
fn snapshot_clone_rollback_destroy() {
    let mut pool = Pool::create("zones", vec![MemDisk::new(32 * MIB)], 5).unwrap();
    let v = "zones/img-disk0";
    pool.create_volume(v, 4 << 20, 4096).unwrap();
    let a = pattern(1, 1 << 20);
    pool.write(v, 0, &a).unwrap();
    pool.snapshot("zones/img-disk0@base").unwrap();
    let used_before_clone = pool.size_bytes() - pool.free_bytes();
    pool.clone_snapshot("zones/img-disk0@base", "zones/vm1-disk0").unwrap();
    let used_after_clone = pool.size_bytes() - pool.free_bytes();
    assert!(used_after_clone - used_before_clone <= 2 * BLOCK, "a clone shares every block");
    // The clone's writes leave the origin and the snapshot unchanged.
    let b = pattern(2, 8192);
    pool.write("zones/vm1-disk0", 4096, &b).unwrap();
    pool.write(v, 65536, &b).unwrap();
    pool.sync().unwrap();
    let mut pool = reimport(pool);
    let mut got = vec![0u8; 1 << 20];
    pool.read("zones/img-disk0@base", 0, &mut got).unwrap();
    assert_eq!(got, a);
    pool.read("zones/vm1-disk0", 0, &mut got).unwrap();
    let mut want = a.clone();
    want[4096..4096 + 8192].copy_from_slice(&b);
    assert_eq!(got, want);
    assert!(pool.write("zones/img-disk0@base", 0, &b).is_err(), "snapshots are read-only");
    assert_eq!(pool.get("zones/vm1-disk0").unwrap().origin.as_deref(), Some("zones/img-disk0@base"));
    pool.verify(false).unwrap();
    // Destroy refuses while a clone depends on the snapshot.
    assert!(matches!(pool.destroy("zones/img-disk0@base", false), Err(Error::Busy(_))));
    assert!(matches!(pool.destroy(v, false), Err(Error::Busy(_))));
    // Rollback returns the volume to the snapshot.
    pool.rollback("zones/img-disk0@base").unwrap();
    pool.read(v, 0, &mut got).unwrap();
    assert_eq!(got, a);
    pool.verify(false).unwrap();
    // Rename, user properties.
    pool.rename("zones/vm1-disk0", "zones/vm2-disk0").unwrap();
    pool.set_user_prop("zones/vm2-disk0", "alcove:json", "{\"ram\":256}").unwrap();
    pool.sync().unwrap();
    let mut pool = reimport(pool);
    assert_eq!(pool.get("zones/vm2-disk0").unwrap().props["alcove:json"], "{\"ram\":256}");
    // Tear everything down: all the space comes back.
    pool.destroy("zones/vm2-disk0", false).unwrap();
    pool.destroy(v, true).unwrap();
    pool.verify(false).unwrap();
    assert!(pool.list().is_empty());
    assert!(pool.size_bytes() - pool.free_bytes() <= 8 * BLOCK + LOG_BLOCK, "only the MOS and the log's first block left");
}

#[test]
fn snapshots_keep_overwritten_blocks_until_destroyed() {
    let mut pool = Pool::create("zones", vec![MemDisk::new(32 * MIB)], 6).unwrap();
    let v = "zones/v";
    pool.create_volume(v, 2 << 20, 4096).unwrap();
    let gens: Vec<Vec<u8>> = (0..4).map(|g| pattern(g as u8 * 17 + 3, 2 << 20)).collect();
    for (g, data) in gens.iter().enumerate() {
        pool.write(v, 0, data).unwrap();
        pool.snapshot(&format!("{v}@s{g}")).unwrap();
    }
    pool.write(v, 0, &pattern(99, 1 << 20)).unwrap();
    pool.sync().unwrap();
    pool.verify(false).unwrap();
    // Destroy a middle snapshot, then the first: the others read back.
    pool.destroy(&format!("{v}@s1"), false).unwrap();
    pool.verify(false).unwrap();
    pool.destroy(&format!("{v}@s0"), false).unwrap();
    pool.verify(false).unwrap();
    let mut pool = reimport(pool);
    let mut got = vec![0u8; 2 << 20];
    for g in [2usize, 3] {
        pool.read(&format!("{v}@s{g}"), 0, &mut got).unwrap();
        assert_eq!(got, gens[g], "snapshot s{g}");
    }
    pool.destroy(&format!("{v}@s3"), false).unwrap();
    pool.destroy(&format!("{v}@s2"), false).unwrap();
    pool.verify(false).unwrap();
    let used = pool.size_bytes() - pool.free_bytes();
    assert!(used < (2 << 20) + 256 * 1024, "only the volume's own blocks stay: {used}");
}

/// The two sides of a mirror hold the same blocks (labels differ: each
/// names its own disk).
fn same_data(a: &MemDisk, b: &MemDisk) -> bool {
    let (lo, hi) = alcove_pool::format::data_region(a.bytes.len() as u64);
    a.bytes[lo as usize..hi as usize] == b.bytes[lo as usize..hi as usize]
}

fn flip(d: &mut MemDisk, at: u64) {
    d.bytes[at as usize] ^= 0x40;
}

/// Offsets of every data block a volume uses, found by flipping: a test of
/// the read path, so locate blocks by where the data is on the disk.
fn find(d: &MemDisk, needle: &[u8]) -> Vec<u64> {
    d.bytes.chunks(BLOCK as usize).enumerate().filter(|(_, c)| c.starts_with(needle)).map(|(i, _)| i as u64 * BLOCK).collect()
}

#[test]
fn mirror_heals_a_corrupted_side_and_counts_it() {
    let mut pool = Pool::create("zones", vec![MemDisk::new(16 * MIB), MemDisk::new(16 * MIB)], 7).unwrap();
    let v = "zones/m-disk0";
    pool.create_volume(v, 1 << 20, 4096).unwrap();
    let data = pattern(5, 1 << 20);
    pool.write(v, 0, &data).unwrap();
    pool.sync().unwrap();
    let mut disks = pool.into_disks();
    let spot = |d: &MemDisk, k: u64| {
        let at = find(d, &data[(k * BLOCK) as usize..][..64]);
        assert_eq!(at.len(), 1);
        at[0]
    };
    // Corrupt 3 blocks on side 0 only.
    for k in [0u64, 5, 200] {
        let off = spot(&disks[0], k);
        flip(&mut disks[0], off + 100);
    }
    let mut pool = Pool::import(disks).unwrap();
    let mut got = vec![0u8; 1 << 20];
    pool.read(v, 0, &mut got).unwrap();
    assert_eq!(got, data, "the guest reads correct data");
    assert_eq!(pool.child_stats()[0].checksum_errors, 3);
    assert_eq!(pool.child_stats()[0].repaired_bytes, 3 * BLOCK);
    assert_eq!(pool.child_stats()[1].checksum_errors, 0);
    let disks = pool.into_disks();
    assert!(same_data(&disks[0], &disks[1]), "side 0 rewritten from side 1");
    // Scrub finds damage nothing has read yet, on the other side.
    let mut disks = disks;
    let off = spot(&disks[1], 7);
    flip(&mut disks[1], off + 9);
    let mut pool = Pool::import(disks).unwrap();
    pool.scrub().unwrap();
    assert_eq!(pool.child_stats()[1].checksum_errors, 1);
    assert_eq!(pool.child_stats()[1].repaired_bytes, BLOCK);
    let disks = pool.into_disks();
    assert!(same_data(&disks[0], &disks[1]), "side 1 rewritten from side 0");
    // One side gone entirely: the pool imports from the other.
    let mut pool = Pool::import(vec![disks[1].clone()]).unwrap();
    pool.read(v, 0, &mut got).unwrap();
    assert_eq!(got, data);
}

#[test]
fn single_disk_damage_is_an_error_never_wrong_data() {
    let mut pool = Pool::create("zones", vec![MemDisk::new(16 * MIB)], 8).unwrap();
    let v = "zones/s-disk0";
    pool.create_volume(v, 1 << 20, 4096).unwrap();
    let data = pattern(6, 1 << 20);
    pool.write(v, 0, &data).unwrap();
    pool.sync().unwrap();
    let mut disks = pool.into_disks();
    let spot = find(&disks[0], &data[4096..4096 + 64])[0];
    flip(&mut disks[0], spot + 1);
    let mut pool = Pool::import(disks).unwrap();
    let mut one = vec![0u8; 4096];
    assert_eq!(pool.read(v, 4096, &mut one), Err(Error::Checksum { offset: spot }));
    pool.read(v, 8192, &mut one).unwrap();
    assert_eq!(one, data[8192..12288]);
    let r = pool.scrub().unwrap();
    let names: Vec<String> = r.errors.iter().map(|e| e.to_string()).collect();
    assert_eq!(names, vec![format!("zones/s-disk0 bytes 4096..8192 (data block at {spot:#x})")]);
}

#[test]
fn import_refuses_foreign_disks_and_leaves_them_untouched() {
    let mut blank = MemDisk::new(8 * MIB);
    blank.bytes[1000] = 0xaa;
    let copy = blank.clone();
    let err = Pool::import(vec![blank]).err().unwrap();
    assert!(err.to_string().contains("no pool label"), "{err}");
    let _ = copy;
    let a = Pool::create("zones", vec![MemDisk::new(8 * MIB)], 100).unwrap().into_disks();
    let b = Pool::create("zones", vec![MemDisk::new(8 * MIB)], 200).unwrap().into_disks();
    let err = Pool::import(vec![a[0].clone(), b[0].clone()]).err().unwrap();
    assert!(err.to_string().contains("another pool"), "{err}");
}

#[test]
fn parsers_reject_garbage_without_panicking() {
    let mut rng = alcove_pool::fault::Rng(0x5eed);
    let h = LabelHeader { pool_guid: 1, pool_name: "zones".into(), vdev_guid: 9, child: 0, children: vec![9], asize: 16 << 20 };
    let good = h.encode(0);
    assert_eq!(LabelHeader::decode(&good).unwrap().0, h);
    let ub = Uberblock { txg: 3, pool_guid: 1, mos: BlockPtr { offset: 4096 * 64, psize: 4096, lsize: 100, birth: 3, kind: 3, comp: 0, level: 0, cksum: 0, checksum: [7; 32] }, log: 0 };
    let good_ub = ub.encode();
    assert_eq!(Uberblock::decode(&good_ub).unwrap(), ub);
    for _ in 0..20000 {
        let mut b = if rng.below(2) == 0 { good.clone() } else { good_ub.clone() };
        for _ in 0..1 + rng.below(4) {
            let i = rng.below(b.len() as u64) as usize;
            b[i] ^= 1 << rng.below(8);
        }
        assert!(LabelHeader::decode(&b).is_err() && Uberblock::decode(&b).is_err(), "a flipped bit is caught by the checksum");
        let mut raw = [0u8; 64];
        raw.iter_mut().for_each(|x| *x = rng.next() as u8);
        let _ = BlockPtr::decode(&raw);
        let n = rng.below(100) as usize;
        let _ = BlockPtr::decode(&raw[..n.min(64)]);
    }
}

#[test]
fn lz4_compression_saves_space_and_reads_back() {
    let mut pool = Pool::create("zones", vec![MemDisk::new(32 * MIB)], 12).unwrap();
    let v = "zones/z-disk0";
    pool.create_volume(v, 8 << 20, 16384).unwrap();
    assert!(matches!(pool.set_prop(v, "compression", "gzip"), Err(Error::Invalid(_))));
    pool.set_prop(v, "compression", "lz4").unwrap();
    // Text-like data: compresses well. Random data: stored as is.
    let text: Vec<u8> = b"alcove zones volume lz4 ".iter().cycle().take(4 << 20).copied().collect();
    let noise = pattern(3, 1 << 20);
    pool.write(v, 0, &text).unwrap();
    pool.write(v, 4 << 20, &noise).unwrap();
    pool.sync().unwrap();
    let mut pool = reimport(pool);
    let mut got = vec![0u8; 4 << 20];
    pool.read(v, 0, &mut got).unwrap();
    assert!(got == text);
    pool.read(v, 4 << 20, &mut got[..1 << 20]).unwrap();
    assert!(got[..1 << 20] == noise[..]);
    let s = pool.space_of(v).unwrap();
    assert!(s.logical >= 5 << 20 && s.logical < (5 << 20) + (64 << 10), "logical {} (data and indirect blocks)", s.logical);
    // Each 16 KiB text block fits one 4 KiB allocation unit; noise does not shrink.
    assert!(s.referenced <= (1 << 20) + (1 << 20) + (64 << 10), "referenced {}", s.referenced);
    assert!(s.compressratio_x100() > 240, "compressratio {}", s.compressratio_x100());
    pool.verify(false).unwrap();
    // A clone inherits the setting; send/receive carries logical data.
    pool.snapshot("zones/z-disk0@a").unwrap();
    pool.clone_snapshot("zones/z-disk0@a", "zones/z2-disk0").unwrap();
    assert_eq!(pool.get("zones/z2-disk0").unwrap().props["compression"], "lz4");
    let mut stream = Vec::new();
    pool.send("zones/z-disk0@a", None, &mut |b| stream.extend_from_slice(b)).unwrap();
    pool.receive("zones/r-disk0", &stream).unwrap();
    pool.read("zones/r-disk0", 0, &mut got).unwrap();
    assert!(got == text);
}

/// The user properties of all datasets together are bounded
/// (`set_user_props_limit`: they live in the MOS, in the caller's memory):
/// a `set_user_prop` past the bound is refused as out of space, naming
/// the figures; replacing a value counts only the difference; what is
/// there stays, commits and survives an import.
#[test]
fn user_properties_stop_at_the_pools_bound() {
    let mut pool = Pool::create("zones", vec![MemDisk::new(32 << 20)], 7).unwrap();
    pool.set_user_props_limit(Some(4096));
    for i in 0..3 {
        pool.create_volume(&format!("zones/vm{i}-vm"), 1 << 20, 8192).unwrap();
    }
    let v = "x".repeat(1000);
    pool.set_user_prop("zones/vm0-vm", "alcove:vmadm", &v).unwrap();
    pool.set_user_prop("zones/vm1-vm", "alcove:vmadm", &v).unwrap();
    pool.set_user_prop("zones/vm2-vm", "alcove:vmadm", &v).unwrap();
    assert_eq!(pool.user_props_bytes(), 3 * (12 + 1000));
    // 3036 bytes: 2000 more would pass 4096.
    let e = pool.set_user_prop("zones/vm0-vm", "alcove:other", &"y".repeat(2000)).unwrap_err();
    assert!(matches!(&e, Error::Space(why) if why.contains("5048 bytes") && why.contains("4096")), "{e}");
    // Replacing a value counts the difference alone: 1000 -> 2000 fits.
    pool.set_user_prop("zones/vm0-vm", "alcove:vmadm", &"z".repeat(2000)).unwrap();
    pool.sync().unwrap();
    let pool = reimport(pool);
    assert_eq!(pool.user_props_bytes(), 2 * (12 + 1000) + 12 + 2000);
}
