//! A scrub cut by a power cut (or an export) resumes at the next import
//! from where the last commit recorded it, as ZFS's does (MOS version 3,
//! FORMAT.md "Scrub in progress"): it finishes with the totals of a scrub
//! that was never cut, repairs what the cut one had yet to, survives
//! writes, snapshots and clones made around the cut, and `zpool scrub -s`
//! clears it. A damaged or forged record is a clear import error.

use std::rc::Rc;

use alcove_pool::fault::{CrashDisk, Power, Rng};
use alcove_pool::format::*;
use alcove_pool::{DataError, Disk, MemDisk, Pool};

const MIB: usize = 1024 * 1024;
const VBS: usize = 4096;
const DISK: usize = 16 * MIB;
/// Bytes a step walks.
const STEP: u64 = 32 * 1024;

fn random(rng: &mut Rng, len: usize) -> Vec<u8> {
    (0..len).map(|_| rng.next() as u8 | 1).collect()
}

fn contents<D: Disk>(pool: &mut Pool<D>, name: &str, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    pool.read(name, 0, &mut v).unwrap_or_else(|e| panic!("read {name}: {e}"));
    v
}

fn clock_a() -> u64 {
    1_800_000_000
}
fn clock_b() -> u64 {
    1_800_000_777
}

/// Where the block holding `data` (a volume block's first bytes) lies in a
/// disk image: data blocks start on a sector.
fn find(img: &[u8], data: &[u8]) -> usize {
    (0..img.len() - 512).step_by(512).find(|&o| img[o..o + 64] == data[..64]).expect("block on disk")
}

/// A mirror of two images: volume a (2 MiB) with a snapshot, then partly
/// rewritten, a clone of the snapshot written in places, volume b. One
/// side of a's, the snapshot's and the clone's blocks flipped here and
/// there (a scrub repairs them), both sides of three blocks of b (the
/// scrub names them). Returns the images and the models (a, c, b).
fn damaged_mirror(seed: u64) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let mut rng = Rng(seed);
    let mut pool = Pool::create("zones", vec![MemDisk::new(DISK), MemDisk::new(DISK)], 21 + seed).unwrap();
    pool.create_volume("zones/a-disk0", 2 * MIB as u64, VBS as u32).unwrap();
    let mut a = random(&mut rng, 2 * MIB);
    pool.write("zones/a-disk0", 0, &a).unwrap();
    pool.snapshot("zones/a-disk0@s").unwrap();
    let snap = a.clone();
    for _ in 0..6 {
        let at = rng.below((2 * MIB / VBS - 16) as u64) as usize * VBS;
        let d = random(&mut rng, 16 * VBS);
        pool.write("zones/a-disk0", at as u64, &d).unwrap();
        a[at..at + d.len()].copy_from_slice(&d);
    }
    pool.clone_snapshot("zones/a-disk0@s", "zones/c-disk0").unwrap();
    let mut c = snap.clone();
    let d = random(&mut rng, 64 * VBS);
    pool.write("zones/c-disk0", 256 * VBS as u64, &d).unwrap();
    c[256 * VBS..256 * VBS + d.len()].copy_from_slice(&d);
    pool.create_volume("zones/b-disk0", MIB as u64, VBS as u32).unwrap();
    let b = random(&mut rng, MIB);
    pool.write("zones/b-disk0", 0, &b).unwrap();
    pool.sync().unwrap();
    let mut imgs: Vec<Vec<u8>> = pool.into_disks().into_iter().map(|d| d.bytes).collect();
    for (model, n) in [(&a, 6), (&snap, 4), (&c, 4)] {
        for _ in 0..n {
            let blk = rng.below((model.len() / VBS) as u64) as usize * VBS;
            let at = find(&imgs[1], &model[blk..]);
            imgs[1][at + 100] ^= 0x40;
        }
    }
    for k in [3usize, 100, 200] {
        for img in imgs.iter_mut() {
            let at = find(img, &b[k * VBS..]);
            img[at + 7] ^= 1;
        }
    }
    (imgs, vec![a, c, b])
}

fn crash_disks(imgs: &[Vec<u8>], power: &Rc<Power>, seed: u64) -> Vec<CrashDisk> {
    imgs.iter().enumerate().map(|(i, im)| CrashDisk::new(im.clone(), power.clone(), seed * 7 + i as u64)).collect()
}

fn sorted(mut e: Vec<DataError>) -> Vec<DataError> {
    e.sort_by_key(|e| (e.dataset.clone(), e.offset, e.block));
    e
}

#[test]
fn a_scrub_cut_by_a_power_cut_resumes_at_import_with_the_same_totals() {
    let mut resumed_runs = 0;
    for seed in 0..8u64 {
        println!("seed {seed}");
        let (imgs, models) = damaged_mirror(seed);
        // The scrub nobody cut.
        let mut whole = Pool::import(imgs.iter().map(|b| MemDisk { bytes: b.clone() }).collect()).unwrap();
        whole.set_wall_clock(clock_a);
        let r = whole.scrub().unwrap();
        let want = whole.last_scrub().cloned().unwrap();
        assert_eq!(want.errors_total, 3, "seed {seed}: b's three blocks, in b only");
        assert!(want.repaired > 0 && !want.resumed && want.space_checked, "seed {seed}: {want:?}");
        drop(r);

        let mut rng = Rng(500 + seed);
        let power = Rc::new(Power::default());
        let mut pool = Pool::import(crash_disks(&imgs, &power, seed)).unwrap();
        pool.set_wall_clock(clock_a);
        pool.set_scrub_record_every(STEP * (1 + rng.below(4)));
        pool.scrub_start().unwrap();
        let t = pool.scrub_progress().unwrap().txg;
        assert_eq!(t, want.txg, "seed {seed}: the same group walked");
        // Steps until a point chosen by the seed, then the power goes off
        // in the middle of more steps (and of their record commits).
        let total = pool.scrub_progress().unwrap().total;
        let stop = rng.below(total * 9 / 10);
        while pool.scrub_progress().unwrap().bytes < stop {
            assert!(pool.scrub_step(STEP).unwrap().is_none(), "seed {seed}: the scrub ended early");
        }
        power.cut_at.set(Some(power.writes.get() + 1 + rng.below(12)));
        for _ in 0..6 {
            if pool.scrub_step(STEP).is_err() || power.off.get() {
                break;
            }
        }
        let recorded = pool.txg() > t;
        let walked_at_cut = pool.scrub_progress().map_or(total, |p| p.bytes);
        let cut: Vec<Vec<u8>> = pool.into_disks().into_iter().map(CrashDisk::after_power_cut).collect();

        let mut pool = Pool::import(cut.into_iter().map(|bytes| MemDisk { bytes }).collect())
            .unwrap_or_else(|e| panic!("seed {seed}: import after the cut: {e}"));
        pool.set_wall_clock(clock_b);
        let Some(p) = pool.scrub_progress() else {
            // No commit recorded it: nothing to resume, the pool is fine.
            assert!(!recorded || pool.txg() == t, "seed {seed}: a recorded scrub was not resumed");
            assert_eq!(pool.last_scrub(), None);
            continue;
        };
        resumed_runs += 1;
        assert_eq!((p.txg, p.start), (t, clock_a()), "seed {seed}: the scrub resumed is the one started");
        assert!(p.bytes > 0 && p.bytes <= walked_at_cut, "seed {seed}: resumed at {} of {} walked at the cut", p.bytes, walked_at_cut);
        let fin = loop {
            if let Some(r) = pool.scrub_step(STEP).unwrap() {
                break r;
            }
        };
        let got = pool.last_scrub().cloned().unwrap();
        assert!(got.resumed && !got.space_checked, "seed {seed}");
        assert_eq!(
            (got.start, got.end, got.txg, got.blocks, got.bytes, got.errors_total),
            (clock_a(), clock_b(), want.txg, want.blocks, want.bytes, want.errors_total),
            "seed {seed}: the totals of the scrub nobody cut"
        );
        assert_eq!(sorted(got.errors.clone()), sorted(want.errors.clone()), "seed {seed}: the same blocks named");
        assert_eq!(fin.bytes, want.bytes);
        // Repairs the cut lost were made again after it: all of them are
        // done, and none counted twice.
        assert!(got.repaired <= want.repaired, "seed {seed}: repaired {} > {}", got.repaired, want.repaired);
        let again = pool.scrub().unwrap();
        assert_eq!(pool.last_scrub().unwrap().repaired, 0, "seed {seed}: a block the resumed scrub missed was repaired later");
        assert_eq!(again.errors.len(), 3);
        for (name, m) in [("zones/a-disk0", &models[0]), ("zones/c-disk0", &models[1])] {
            assert!(contents(&mut pool, name, m.len()) == *m, "seed {seed}: {name}");
        }
    }
    assert!(resumed_runs >= 5, "only {resumed_runs} of 8 cuts resumed a scrub");
}

#[test]
fn a_resumed_scrub_walks_what_writes_snapshots_and_clones_around_the_cut_left() {
    for seed in 0..6u64 {
        println!("seed {seed}");
        let (imgs, mut models) = damaged_mirror(40 + seed);
        let mut rng = Rng(900 + seed);
        let power = Rc::new(Power::default());
        let mut pool = Pool::import(crash_disks(&imgs, &power, seed)).unwrap();
        pool.set_scrub_record_every(0);
        pool.scrub_start().unwrap();
        let total = pool.scrub_progress().unwrap().total;
        // Before the cut: steps, rewrites of a, a snapshot of a taken
        // mid-scrub (it then holds what a held), a clone of it; all
        // committed (each commit records the scrub).
        let mut n = 0;
        while pool.scrub_progress().unwrap().bytes < total / 2 + rng.below(total / 3) {
            pool.scrub_step(STEP).unwrap();
            n += 1;
            if n == 3 {
                pool.snapshot(&format!("zones/a-disk0@mid{seed}")).unwrap();
                pool.clone_snapshot(&format!("zones/a-disk0@mid{seed}"), "zones/m-disk0").unwrap();
            }
            let at = rng.below((2 * MIB / VBS - 8) as u64) as usize * VBS;
            let d = random(&mut rng, 8 * VBS);
            pool.write("zones/a-disk0", at as u64, &d).unwrap();
            models[0][at..at + d.len()].copy_from_slice(&d);
            pool.sync().unwrap();
        }
        let synced_a = models[0].clone();
        power.cut_at.set(Some(power.writes.get() + 1 + rng.below(8)));
        let _ = pool.scrub_step(STEP);
        let _ = pool.write("zones/a-disk0", 0, &[9; VBS]);
        let _ = pool.sync();
        assert!(power.off.get(), "seed {seed}");
        let cut: Vec<Vec<u8>> = pool.into_disks().into_iter().map(CrashDisk::after_power_cut).collect();
        let mut pool = Pool::import(cut.into_iter().map(|bytes| MemDisk { bytes }).collect()).unwrap();
        assert!(pool.scrub_progress().is_some(), "seed {seed}: the scrub resumed");
        let a = contents(&mut pool, "zones/a-disk0", 2 * MIB);
        let mut after_cut = synced_a.clone();
        after_cut[..VBS].copy_from_slice(&[9; VBS]);
        assert!(a == synced_a || a == after_cut, "seed {seed}: a is its last synced state or the next");
        models[0] = a;
        // After it: more rewrites, a snapshot, the mid-scrub clone destroyed.
        let mut k = 0;
        let fin = loop {
            if let Some(r) = pool.scrub_step(STEP).unwrap() {
                break r;
            }
            k += 1;
            let at = rng.below((2 * MIB / VBS - 4) as u64) as usize * VBS;
            let d = random(&mut rng, 4 * VBS);
            pool.write("zones/a-disk0", at as u64, &d).unwrap();
            models[0][at..at + d.len()].copy_from_slice(&d);
            if k == 2 {
                pool.snapshot("zones/a-disk0@late").unwrap();
                pool.destroy("zones/m-disk0", false).unwrap();
            }
            pool.sync().unwrap();
        };
        assert_eq!(fin.errors.len(), 3, "seed {seed}: b's lost blocks, and nothing else: {:?}", fin.errors);
        // Nothing damaged was missed: a scrub after it (which checks the
        // space map too; b's lost blocks keep a verify from passing) has
        // nothing to repair.
        assert_eq!(pool.scrub().unwrap().errors.len(), 3);
        let last = pool.last_scrub().unwrap();
        assert!(last.space_checked && !last.resumed, "seed {seed}");
        assert_eq!(last.repaired, 0, "seed {seed}: the resumed scrub missed a damaged block");
        assert!(contents(&mut pool, "zones/a-disk0", 2 * MIB) == models[0], "seed {seed}");
        assert!(contents(&mut pool, "zones/c-disk0", 2 * MIB) == models[1], "seed {seed}");
        let pool = Pool::import(pool.into_disks()).unwrap();
        assert!(pool.scrub_progress().is_none(), "seed {seed}: a finished scrub is not resumed");
    }
}

#[test]
fn a_cancelled_scrub_is_not_resumed_and_an_export_resumes_one() {
    let (imgs, _) = damaged_mirror(77);
    let mut pool = Pool::import(imgs.iter().map(|b| MemDisk { bytes: b.clone() }).collect()).unwrap();
    pool.scrub_start().unwrap();
    for _ in 0..4 {
        pool.scrub_step(STEP).unwrap();
    }
    pool.sync().unwrap();
    let at = pool.scrub_progress().unwrap().bytes;
    // An export (the disks handed back) and an import: resumed.
    let mut pool = Pool::import(pool.into_disks()).unwrap();
    assert_eq!(pool.scrub_progress().map(|p| p.bytes), Some(at));
    // `zpool scrub -s`: cancelled, and the next commit records no scrub.
    assert!(pool.scrub_cancel());
    pool.sync().unwrap();
    let pool = Pool::import(pool.into_disks()).unwrap();
    assert!(pool.scrub_progress().is_none());
    assert_eq!(pool.last_scrub(), None);
}

// --- The record on disk: version 2 pools, damaged and forged records. ---

fn asize() -> u64 {
    asize_of(DISK as u64)
}

/// The newest valid uberblock of an image.
fn latest_ub(img: &[u8]) -> Uberblock {
    let mut best: Option<Uberblock> = None;
    for l in 0..LABELS {
        let base = label_offset(asize(), l) + BLOCK;
        for s in 0..UB_SLOTS {
            let at = (base + s * UB_SLOT) as usize;
            if let Ok(u) = Uberblock::decode(&img[at..at + UB_SLOT as usize])
                && best.is_none_or(|b| b.txg < u.txg)
            {
                best = Some(u);
            }
        }
    }
    best.expect("an uberblock")
}

/// Writes `mos` at the newest MOS's place with a fresh checksum, reseals
/// the newest uberblock around it, and wipes every older uberblock (so an
/// import sees this MOS or nothing).
fn forge_mos(img: &mut [u8], mut mos: Vec<u8>) {
    let ub = latest_ub(img);
    assert!(mos.len() <= ub.mos.psize as usize);
    let lsize = mos.len() as u32;
    mos.resize(ub.mos.psize as usize, 0);
    let at = ub.mos.offset as usize;
    img[at..at + mos.len()].copy_from_slice(&mos);
    let bp = BlockPtr { lsize, checksum: checksum_with(ub.mos.cksum, &mos), ..ub.mos };
    let enc = Uberblock { mos: bp, ..ub }.encode();
    for l in 0..LABELS {
        let base = label_offset(asize(), l) + BLOCK;
        for s in 0..UB_SLOTS {
            let at = (base + s * UB_SLOT) as usize;
            img[at..at + UB_SLOT as usize].fill(0);
        }
        let at = Uberblock::slot_offset(label_offset(asize(), l), ub.txg) as usize;
        img[at..at + enc.len()].copy_from_slice(&enc);
    }
}

fn read_mos(img: &[u8]) -> Vec<u8> {
    let ub = latest_ub(img);
    img[ub.mos.offset as usize..][..ub.mos.lsize as usize].to_vec()
}

/// A single-disk pool with a scrub under way recorded in its newest MOS.
fn recorded_image() -> Vec<u8> {
    let mut rng = Rng(3);
    let mut pool = Pool::create("zones", vec![MemDisk::new(DISK)], 5).unwrap();
    pool.create_volume("zones/a-disk0", MIB as u64, VBS as u32).unwrap();
    pool.write("zones/a-disk0", 0, &random(&mut rng, MIB)).unwrap();
    pool.scrub_start().unwrap();
    pool.scrub_step(3 * STEP).unwrap();
    pool.sync().unwrap();
    pool.into_disks().remove(0).bytes
}

/// The record's length with no errors listed: kind, 6 counts, mos_done,
/// slot (phase, txg, id), depth, position, error count.
const RECORD: usize = 1 + 6 * 8 + 1 + 1 + 8 + 8 + 1 + 8 + 8;

fn import(img: Vec<u8>) -> Result<Pool<MemDisk>, alcove_pool::Error> {
    Pool::import(vec![MemDisk { bytes: img }])
}

#[test]
fn a_version_2_pool_still_imports() {
    let mut rng = Rng(4);
    let mut pool = Pool::create("zones", vec![MemDisk::new(DISK)], 6).unwrap();
    pool.create_volume("zones/a-disk0", MIB as u64, VBS as u32).unwrap();
    let data = random(&mut rng, MIB);
    pool.write("zones/a-disk0", 0, &data).unwrap();
    pool.scrub().unwrap();
    let mut img = pool.into_disks().remove(0).bytes;
    // A version 2 MOS: the same bytes without the last (no scrub in progress).
    let mut mos = read_mos(&img);
    assert_eq!(u32::from_le_bytes(mos[8..12].try_into().unwrap()), 3);
    assert_eq!(mos.pop(), Some(0));
    mos[8..12].copy_from_slice(&2u32.to_le_bytes());
    let mut v2 = img.clone();
    forge_mos(&mut v2, mos.clone());
    let mut p = import(v2).expect("a version 2 pool imports");
    assert!(p.scrub_progress().is_none());
    assert!(p.last_scrub().is_some_and(|s| s.space_checked && !s.resumed));
    assert!(contents(&mut p, "zones/a-disk0", MIB) == data);
    p.verify(false).unwrap();
    // Version 2 knows no resumed scrub (space_checked 2), nor version 4.
    let sc = mos.len() - 9;
    assert_eq!(mos[sc], 1, "space_checked");
    let mut m = mos.clone();
    m[sc] = 2;
    let mut bad = img.clone();
    forge_mos(&mut bad, m);
    let e = import(bad).err().expect("refused").to_string();
    assert!(e.contains("space_checked"), "{e}");
    mos.push(0);
    mos[8..12].copy_from_slice(&4u32.to_le_bytes());
    forge_mos(&mut img, mos);
    let e = import(img).err().expect("refused").to_string();
    assert!(e.contains("version 4 (this pool reads 1 to 3)"), "{e}");
}

#[test]
fn a_damaged_or_forged_record_is_a_clear_error() {
    let img = recorded_image();
    let mos = read_mos(&img);
    let r = mos.len() - RECORD;
    assert_eq!(mos[r], 1, "the record's kind");
    let txg = u64::from_le_bytes(mos[20..28].try_into().unwrap());
    let put = |at: usize, v: &[u8]| {
        let mut m = mos.clone();
        m[r + at..r + at + v.len()].copy_from_slice(v);
        m
    };
    let mut short = mos.clone();
    short.truncate(mos.len() - 5);
    let mut long = mos.clone();
    long.push(0);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("kind 7", put(0, &[7]), "scrub in progress record: kind 7"),
        ("txg 0", put(9, &0u64.to_le_bytes()), "scrub in progress record: txg 0"),
        ("txg past the MOS", put(9, &(txg + 1).to_le_bytes()), "out of range"),
        ("blocks past bytes", put(17, &u64::MAX.to_le_bytes()), "counts out of range"),
        ("mos_done 5", put(49, &[5]), "mos_done 5"),
        ("phase 3", put(50, &[3]), "phase 3"),
        ("depth 200", put(67, &[200]), "depth 200"),
        ("errors listed past the count", put(76, &1u64.to_le_bytes()), "scrub in progress record"),
        ("cut short", short, "scrub in progress record"),
        ("a byte after it", long, "trailing bytes"),
    ];
    for (what, m, want) in cases {
        let mut b = img.clone();
        forge_mos(&mut b, m);
        match import(b) {
            Ok(_) => panic!("{what}: imported"),
            Err(e) => assert!(e.to_string().contains(want), "{what}: {e}"),
        }
    }
    // The record itself resealed: imports and resumes.
    let mut b = img.clone();
    forge_mos(&mut b, mos.clone());
    let mut p = import(b).unwrap();
    assert!(p.scrub_progress().is_some());
    while p.scrub_step(STEP).unwrap().is_none() {}
    // Random bytes over the record: an error, or a scrub that ends (an
    // error or a report), never a panic or a walk without end.
    for seed in 0..150u64 {
        let mut rng = Rng(seed);
        let mut m = mos.clone();
        for _ in 0..1 + rng.below(4) {
            let at = r + 1 + rng.below((RECORD - 1) as u64) as usize;
            m[at] = rng.next() as u8;
        }
        let mut b = img.clone();
        forge_mos(&mut b, m);
        let Ok(mut p) = import(b) else { continue };
        for _ in 0..10_000 {
            match p.scrub_step(STEP) {
                Ok(None) => {}
                Ok(Some(_)) | Err(_) => break,
            }
        }
        assert!(p.scrub_progress().is_none(), "seed {seed}: the resumed scrub never ended");
        p.verify(false).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
    }
}
