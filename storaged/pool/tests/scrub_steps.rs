//! A scrub in steps (`zpool scrub` running in the background): writes,
//! snapshots, destroys and rollbacks between its steps are neither lost nor
//! reported as errors, a second scrub is refused, `zpool scrub -s` cancels
//! it, and a power cut in the middle loses nothing (the scrub resumes at
//! import: tests/scrub_resume.rs).

use std::rc::Rc;

use alcove_pool::fault::{CrashDisk, Power, Rng};
use alcove_pool::{Disk, Error, MemDisk, Pool, ScrubEnd};

const MIB: usize = 1024 * 1024;
const VBS: usize = 4096;
/// Bytes a step walks: small, so that much happens between steps.
const STEP: u64 = 32 * 1024;

fn random(rng: &mut Rng, len: usize) -> Vec<u8> {
    (0..len).map(|_| rng.next() as u8 | 1).collect()
}

fn contents<D: Disk>(pool: &mut Pool<D>, name: &str, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    pool.read(name, 0, &mut v).unwrap_or_else(|e| panic!("read {name}: {e}"));
    v
}

/// Random writes of 1 to 8 blocks to `name` (and its model), some synced.
fn scribble<D: Disk>(pool: &mut Pool<D>, name: &str, model: &mut [u8], rng: &mut Rng, writes: usize) {
    for _ in 0..writes {
        let blocks = 1 + rng.below(8) as usize;
        let at = rng.below((model.len() / VBS - blocks) as u64) as usize * VBS;
        let data = random(rng, blocks * VBS);
        pool.write(name, at as u64, &data).unwrap_or_else(|e| panic!("write to {name} during a scrub: {e}"));
        model[at..at + data.len()].copy_from_slice(&data);
        if rng.below(3) == 0 {
            pool.sync().unwrap();
        }
    }
}

/// Two volumes of 2 MiB, written and committed.
fn pool_on<D: Disk>(disks: Vec<D>, rng: &mut Rng) -> (Pool<D>, Vec<Vec<u8>>) {
    let mut pool = Pool::create("zones", disks, 9).unwrap();
    let mut models = Vec::new();
    for v in ["zones/a-disk0", "zones/b-disk0"] {
        pool.create_volume(v, 2 * MIB as u64, VBS as u32).unwrap();
        let data = random(rng, 2 * MIB);
        pool.write(v, 0, &data).unwrap();
        models.push(data);
    }
    pool.sync().unwrap();
    (pool, models)
}

#[test]
fn writes_between_the_steps_of_a_scrub_are_kept_and_not_reported() {
    let mut rng = Rng(11);
    let (mut pool, mut models) = pool_on(vec![MemDisk::new(48 * MIB), MemDisk::new(48 * MIB)], &mut rng);
    let before = pool.scrub().unwrap();
    assert!(before.errors.is_empty());
    pool.scrub_start().unwrap();
    let first = pool.scrub_progress().expect("a scrub under way");
    assert_eq!((first.bytes, first.txg), (0, pool.txg()));
    assert_eq!(first.total, pool.size_bytes() - pool.free_bytes());
    let (mut steps, mut last, mut held) = (0, 0, 0);
    let report = loop {
        // The volumes are rewritten many times over while the scrub walks
        // the blocks they had: without the hold, space the walk has yet to
        // read would be handed out again and read as checksum errors.
        scribble(&mut pool, "zones/a-disk0", &mut models[0], &mut rng, 2);
        scribble(&mut pool, "zones/b-disk0", &mut models[1], &mut rng, 2);
        if let Some(p) = pool.scrub_progress() {
            assert!(p.bytes >= last && p.bytes <= p.total, "{p:?}");
            last = p.bytes;
            held = held.max(p.held);
        }
        assert!(pool.scrub_canceled().is_none(), "{:?}", pool.scrub_canceled());
        let e = pool.scrub_start().expect_err("a second scrub while one runs");
        assert!(matches!(&e, Error::Busy(s) if s.contains("scrub is in progress")), "{e}");
        steps += 1;
        if let Some(r) = pool.scrub_step(STEP).unwrap() {
            break r;
        }
    };
    assert!(steps > 20, "the scrub took {steps} steps of {STEP} bytes");
    assert!(held > 0, "frees of the groups committed during the scrub were held");
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert!(report.space_checked);
    // It walked the group it started from: every block of it (all that is
    // allocated but the intent log's head, which no pointer checksums).
    assert_eq!(report.txg, first.txg);
    assert!(report.bytes <= first.total && report.bytes + 64 * 1024 > first.total, "{} of {}", report.bytes, first.total);
    let stats = pool.child_stats();
    assert!(stats.iter().all(|s| s.checksum_errors == 0 && s.read_errors == 0 && s.repaired_bytes == 0), "{stats:?}");
    assert!(pool.scrub_progress().is_none());
    let rec = pool.last_scrub().unwrap();
    assert_eq!((rec.txg, rec.bytes, rec.errors_total), (first.txg, report.bytes, 0));
    // The held space is free again: the space map matches the trees.
    pool.sync().unwrap();
    pool.verify(false).unwrap();
    for (v, m) in ["zones/a-disk0", "zones/b-disk0"].iter().zip(&models) {
        assert!(contents(&mut pool, v, 2 * MIB) == *m, "{v} after the scrub");
    }
    let mut pool = Pool::import(pool.into_disks()).unwrap();
    pool.verify(false).unwrap();
    for (v, m) in ["zones/a-disk0", "zones/b-disk0"].iter().zip(&models) {
        assert!(contents(&mut pool, v, 2 * MIB) == *m, "{v} after an import");
    }
    assert!(pool.scrub().unwrap().errors.is_empty());
}

#[test]
fn snapshots_destroys_and_rollbacks_during_a_scrub() {
    let mut rng = Rng(12);
    let (mut pool, mut models) = pool_on(vec![MemDisk::new(24 * MIB)], &mut rng);
    pool.snapshot("zones/a-disk0@old").unwrap();
    let old = models[0].clone();
    scribble(&mut pool, "zones/a-disk0", &mut models[0], &mut rng, 20);
    pool.sync().unwrap();
    pool.scrub_start().unwrap();
    let mut n = 0;
    let report = loop {
        match n {
            2 => pool.destroy("zones/b-disk0", true).unwrap(),
            4 => pool.snapshot("zones/a-disk0@new").unwrap(),
            6 => scribble(&mut pool, "zones/a-disk0", &mut models[0], &mut rng, 10),
            8 => {
                pool.rollback("zones/a-disk0@new").unwrap();
            }
            10 => pool.destroy("zones/a-disk0@old", false).unwrap(),
            12 => {
                pool.create_volume("zones/c-disk0", MIB as u64, VBS as u32).unwrap();
                pool.write("zones/c-disk0", 0, &models[1][..MIB]).unwrap();
            }
            _ => {}
        }
        n += 1;
        if let Some(r) = pool.scrub_step(STEP).unwrap() {
            break r;
        }
    };
    assert!(n > 12, "every change came before the scrub ended ({n} steps)");
    assert!(report.errors.is_empty() && report.space_checked, "{report:?}");
    assert_eq!(report.datasets, 3, "the scrub walked the datasets it started with (a, a@old, b)");
    assert!(pool.child_stats().iter().all(|s| s.checksum_errors == 0));
    let a = contents(&mut pool, "zones/a-disk0", 2 * MIB);
    assert!(a != old && a == contents(&mut pool, "zones/a-disk0@new", 2 * MIB), "rolled back to @new");
    assert!(pool.get("zones/b-disk0").is_err() && pool.get("zones/a-disk0@old").is_err());
    pool.sync().unwrap();
    pool.verify(false).unwrap();
    let mut pool = Pool::import(pool.into_disks()).unwrap();
    pool.verify(false).unwrap();
    assert!(contents(&mut pool, "zones/c-disk0", MIB) == models[1][..MIB]);
    let again = pool.scrub().unwrap();
    assert!(again.errors.is_empty() && again.datasets == 3, "{again:?}");
}

#[test]
fn a_scrub_can_be_cancelled_and_started_again() {
    let mut rng = Rng(13);
    let (mut pool, mut models) = pool_on(vec![MemDisk::new(24 * MIB)], &mut rng);
    let done = pool.scrub().unwrap();
    let rec = pool.last_scrub().cloned().unwrap();
    assert!(!pool.scrub_cancel(), "no scrub to cancel");
    let free = pool.free_bytes();
    pool.scrub_start().unwrap();
    pool.scrub_step(STEP).unwrap();
    scribble(&mut pool, "zones/a-disk0", &mut models[0], &mut rng, 8);
    pool.sync().unwrap();
    let walked = pool.scrub_progress().unwrap().bytes;
    assert!(walked > 0 && walked < done.bytes);
    assert!(pool.scrub_cancel());
    assert!(pool.scrub_progress().is_none());
    let c = pool.scrub_canceled().expect("the cancel is told");
    assert_eq!((c.bytes, c.why), (walked, ScrubEnd::Canceled));
    assert_eq!(pool.last_scrub(), Some(&rec), "the last finished scrub's record stays");
    let e = pool.scrub_step(STEP).expect_err("no scrub to step");
    assert!(e.to_string().contains("no scrub is in progress"), "{e}");
    // Nothing stays held: the pool's free space is what its blocks leave.
    pool.sync().unwrap();
    pool.verify(false).unwrap();
    assert!(pool.free_bytes() + 64 * 1024 >= free, "{} free, {free} before", pool.free_bytes());
    let r = pool.scrub().unwrap();
    assert!(r.errors.is_empty() && pool.scrub_canceled().is_none());
    assert!(contents(&mut pool, "zones/a-disk0", 2 * MIB) == models[0]);
}

#[test]
fn a_write_that_needs_the_held_space_cancels_the_scrub() {
    let mut rng = Rng(14);
    // A small pool: rewriting a volume twice over needs space the scrub holds.
    let mut pool = Pool::create("zones", vec![MemDisk::new(16 * MIB)], 10).unwrap();
    let mut model = random(&mut rng, 3 * MIB);
    pool.create_volume("zones/a-disk0", model.len() as u64, VBS as u32).unwrap();
    pool.write("zones/a-disk0", 0, &model).unwrap();
    pool.sync().unwrap();
    pool.scrub_start().unwrap();
    pool.scrub_step(STEP).unwrap();
    for _ in 0..4 {
        let data = random(&mut rng, model.len());
        pool.write("zones/a-disk0", 0, &data).expect("the write gets the space the scrub held");
        pool.sync().unwrap();
        model = data;
    }
    assert!(pool.scrub_progress().is_none(), "the scrub gave its space up");
    assert_eq!(pool.scrub_canceled().map(|c| c.why), Some(ScrubEnd::CanceledForSpace));
    pool.verify(false).unwrap();
    assert!(contents(&mut pool, "zones/a-disk0", model.len()) == model);
}

#[test]
fn a_power_cut_in_the_middle_of_a_scrub_loses_nothing_and_the_scrub_resumes() {
    for seed in 0..6u64 {
        let mut rng = Rng(100 + seed);
        let power = Rc::new(Power::default());
        let disks = (0..2).map(|i| CrashDisk::new(vec![0u8; 24 * MIB], power.clone(), seed * 31 + i)).collect();
        let (mut pool, mut models) = pool_on(disks, &mut rng);
        let rec = {
            pool.scrub().unwrap();
            pool.last_scrub().cloned().unwrap()
        };
        pool.scrub_start().unwrap();
        let mut synced = models.clone();
        for _ in 0..3 + seed {
            pool.scrub_step(STEP).unwrap();
            scribble(&mut pool, "zones/a-disk0", &mut models[0], &mut rng, 4);
            pool.sync().unwrap();
            synced.clone_from(&models);
        }
        assert!(pool.scrub_progress().unwrap().held > 0, "seed {seed}: the scrub holds frees");
        // The power goes off a few writes into more of the same.
        power.cut_at.set(Some(power.writes.get() + 1 + rng.below(6)));
        for _ in 0..4 {
            if pool.scrub_step(STEP).is_err() {
                break;
            }
            let at = rng.below((2 * MIB / VBS) as u64 - 4) as usize * VBS;
            let data = random(&mut rng, 4 * VBS);
            if pool.write("zones/a-disk0", at as u64, &data).is_err() {
                break;
            }
            models[0][at..at + data.len()].copy_from_slice(&data);
            if pool.sync().is_err() {
                break;
            }
            synced.clone_from(&models);
        }
        assert!(power.off.get(), "seed {seed}: the power went off");
        let images: Vec<Vec<u8>> = pool.into_disks().into_iter().map(CrashDisk::after_power_cut).collect();
        let power = Rc::new(Power::default());
        let disks = images.into_iter().enumerate().map(|(i, im)| CrashDisk::new(im, power.clone(), i as u64)).collect();
        let mut pool = Pool::import(disks).unwrap_or_else(|e| panic!("seed {seed}: import: {e}"));
        pool.verify(false).unwrap_or_else(|e| panic!("seed {seed}: verify after the cut: {e}"));
        // Each commit recorded the scrub: the import resumes it.
        assert!(pool.scrub_progress().is_some_and(|p| p.bytes > 0), "seed {seed}: the scrub resumed at import");
        assert_eq!(pool.last_scrub(), Some(&rec), "seed {seed}: the last finished scrub's record");
        // Every synced write is there (volume b was not written after).
        assert!(contents(&mut pool, "zones/b-disk0", 2 * MIB) == synced[1], "seed {seed}");
        // The group being committed at the cut is there if its uberblock landed.
        let a = contents(&mut pool, "zones/a-disk0", 2 * MIB);
        assert!(a == synced[0] || a == models[0], "seed {seed}: volume a is neither the last synced state nor the next");
        let r = loop {
            if let Some(r) = pool.scrub_step(STEP).unwrap() {
                break r;
            }
        };
        assert!(r.errors.is_empty(), "seed {seed}: {:?}", r.errors);
        assert!(pool.last_scrub().is_some_and(|s| s.resumed), "seed {seed}");
        let r = pool.scrub().unwrap();
        assert!(r.errors.is_empty() && r.space_checked, "seed {seed}: {:?}", r.errors);
    }
}

#[test]
fn a_scrub_holding_more_extents_than_its_bound_is_cancelled_at_a_commit() {
    let mut rng = Rng(15);
    let (mut pool, mut models) = pool_on(vec![MemDisk::new(24 * MIB)], &mut rng);
    pool.set_scrub_hold_limit(Some(8));
    pool.scrub_start().unwrap();
    pool.scrub_step(STEP).unwrap();
    let mut commits = 0;
    while pool.scrub_progress().is_some() {
        assert!(pool.scrub_progress().unwrap().held > 0 || commits == 0);
        scribble(&mut pool, "zones/a-disk0", &mut models[0], &mut rng, 3);
        pool.sync().unwrap();
        commits += 1;
        assert!(commits < 50, "the scrub was never cancelled");
    }
    assert_eq!(pool.scrub_canceled().map(|c| c.why), Some(ScrubEnd::CanceledForMemory));
    pool.verify(false).unwrap();
    assert!(contents(&mut pool, "zones/a-disk0", 2 * MIB) == models[0]);
    // Unbounded again, a scrub beside the same writes ends.
    pool.set_scrub_hold_limit(None);
    pool.scrub_start().unwrap();
    loop {
        scribble(&mut pool, "zones/a-disk0", &mut models[0], &mut rng, 1);
        if let Some(r) = pool.scrub_step(256 * 1024).unwrap() {
            assert!(r.errors.is_empty());
            break;
        }
    }
}
