//! Power cut at every write of a group (its data, written as the volume is,
//! and its commit): the disks keep any subset of the
//! writes since their last flush, in any order, the cut one torn at a
//! sector. The pool must import to the last committed group, or to the one
//! being committed if its uberblock landed, with exactly that group's data:
//! nothing a completed sync acknowledged is lost, nothing half-written shows.

use std::rc::Rc;

use alcove_pool::Pool;
use alcove_pool::fault::{CrashDisk, Power, Rng};

const MIB: usize = 1024 * 1024;
const VOL: &str = "zones/c-disk0";
const VOLSIZE: usize = 1 << 20;

fn disks(images: &[Vec<u8>], power: &Rc<Power>, seed: u64) -> Vec<CrashDisk> {
    images.iter().enumerate().map(|(i, im)| CrashDisk::new(im.clone(), power.clone(), seed ^ ((i as u64 + 1) * 7919))).collect()
}

fn contents(pool: &mut Pool<CrashDisk>, name: &str) -> Vec<u8> {
    let mut v = vec![0u8; VOLSIZE];
    pool.read(name, 0, &mut v).expect("read after import");
    v
}

/// One step of the scenario: a change made then committed by the pool.
type Step = fn(&mut Pool<CrashDisk>, &mut [u8], &mut Rng);

fn write_and_sync(pool: &mut Pool<CrashDisk>, model: &mut [u8], rng: &mut Rng) {
    for _ in 0..6 {
        let blocks = 1 + rng.below(8) as usize;
        let at = rng.below((VOLSIZE / 512 - blocks * 8) as u64) as usize * 512;
        let data: Vec<u8> = (0..blocks * 4096).map(|_| rng.next() as u8).collect();
        // Data goes to disk as it is written (to space no committed group
        // uses): a cut can land here too, and the pool then stops.
        if pool.write(VOL, at as u64, &data).is_err() {
            return;
        }
        model[at..at + data.len()].copy_from_slice(&data);
    }
}

fn run(children: usize, step: Step, snapshot_first: bool) {
    // A pool with committed data.
    let power = Rc::new(Power::default());
    let mut rng = Rng(99);
    let ims: Vec<Vec<u8>> = vec![vec![0u8; 4 * MIB]; children];
    let mut pool = Pool::create("zones", disks(&ims, &power, 1), 77).unwrap();
    pool.create_volume(VOL, VOLSIZE as u64, 4096).unwrap();
    let mut before = vec![0u8; VOLSIZE];
    write_and_sync(&mut pool, &mut before, &mut rng);
    pool.sync().unwrap();
    if snapshot_first {
        pool.snapshot(&format!("{VOL}@keep")).unwrap();
    }
    let txg0 = pool.txg();
    let base: Vec<Vec<u8>> = pool.into_disks().into_iter().map(CrashDisk::after_power_cut).collect();

    // How many writes the step makes without a cut.
    let count = |cut: Option<u64>, seed: u64| {
        let power = Rc::new(Power::default());
        let mut pool = Pool::import(disks(&base, &power, seed)).unwrap();
        power.cut_at.set(cut.map(|c| power.writes.get() + c));
        let mut model = before.clone();
        let mut rng = Rng(5);
        step(&mut pool, &mut model, &mut rng);
        let ok = pool.sync().is_ok();
        let n = power.writes.get();
        (ok, n, model, pool.into_disks().into_iter().map(CrashDisk::after_power_cut).collect::<Vec<_>>())
    };
    let (ok, writes, after, _) = count(None, 0);
    assert!(ok && writes > 3, "the step wrote {writes} times");
    let mut landed = [0u32; 2];
    for cut in 1..=writes + 1 {
        for seed in 0..3u64 {
            let (ok, _, _, images) = count(Some(cut), seed * 1000 + cut);
            let power = Rc::new(Power::default());
            let mut pool = Pool::import(disks(&images, &power, 3))
                .unwrap_or_else(|e| panic!("cut at write {cut} seed {seed}: import failed: {e}"));
            let txg = pool.txg();
            let got = contents(&mut pool, VOL);
            if txg == txg0 {
                assert!(!ok, "cut at write {cut}: the sync returned Ok but the pool came back at txg {txg0}");
                assert!(got == before, "cut at write {cut} seed {seed}: txg {txg} with other data");
                landed[0] += 1;
            } else {
                assert!(txg > txg0, "cut at write {cut}: txg went back to {txg}");
                assert!(got == after, "cut at write {cut} seed {seed}: txg {txg} with other data");
                landed[1] += 1;
            }
            if snapshot_first {
                assert!(contents(&mut pool, &format!("{VOL}@keep")) == before, "the snapshot changed");
            }
            pool.verify(false).unwrap_or_else(|e| panic!("cut at write {cut} seed {seed}: verify: {e}"));
            // The pool goes on: a new commit on top imports again.
            pool.write(VOL, 0, &[0x5a; 4096]).unwrap();
            pool.sync().unwrap();
            let mut pool = Pool::import(pool.into_disks()).unwrap();
            pool.verify(false).unwrap();
        }
    }
    assert!(landed[0] > 0 && landed[1] > 0, "cuts landed before and after the commit point: {landed:?}");
}

#[test]
fn power_cut_at_every_write_of_a_commit_single_disk() {
    run(1, write_and_sync, false);
}

#[test]
fn power_cut_at_every_write_of_a_commit_mirror() {
    run(2, write_and_sync, false);
}

#[test]
fn power_cut_at_every_write_of_a_commit_with_a_snapshot_holding_blocks() {
    run(1, write_and_sync, true);
}
