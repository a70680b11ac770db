//! ztest for alcove-pool: random sequences of writes (on volumes with and
//! without LZ4 compression), syncs, snapshots, clones, rollbacks, destroys,
//! renames and send/receive against a model, with injected faults (power
//! cuts during a commit, and during snapshot, clone, rollback, destroy and
//! rename, that lose any unflushed writes in any order, torn sectors, bit
//! flips on one side of a mirror), and after each cut and
//! at the end: import, a full verify (every checksum, the space map against
//! every referenced block) and every dataset compared byte for byte.
//!
//! Each run prints its seed; `ZTEST_SEED=N cargo test -p alcove-pool --test
//! ztest` replays one, `ZTEST_RUNS` and `ZTEST_OPS` make the search longer.

use std::collections::BTreeMap;
use std::rc::Rc;

use alcove_pool::Pool;
use alcove_pool::fault::{CrashDisk, Power, Rng};
use alcove_pool::format::data_region;
use alcove_pool::pool::Error;

const MIB: usize = 1024 * 1024;
const VOLSIZE: u64 = 256 * 1024;

#[derive(Clone, Default, PartialEq, Debug)]
struct Model {
    data: BTreeMap<String, Vec<u8>>,
    /// volume -> its snapshots, oldest first.
    snaps: BTreeMap<String, Vec<String>>,
    /// clone -> the snapshot it came from.
    origin: BTreeMap<String, String>,
}

impl Model {
    fn volumes(&self) -> Vec<String> {
        self.data.keys().filter(|k| !k.contains('@')).cloned().collect()
    }
    fn snapshots(&self) -> Vec<String> {
        self.data.keys().filter(|k| k.contains('@')).cloned().collect()
    }
    fn clones_of(&self, snap: &str) -> usize {
        self.origin.values().filter(|o| *o == snap).count()
    }
}

struct Run {
    seed: u64,
    rng: Rng,
    power: Rc<Power>,
    pool: Option<Pool<CrashDisk>>,
    model: Model,
    committed: Model,
    next_name: u32,
    mirror: bool,
    cuts: u32,
    /// Cuts during snapshot, clone, rollback, destroy or rename.
    op_cuts: u32,
    receives: u32,
    renames: u32,
    flips: u32,
}

impl Run {
    fn pool(&mut self) -> &mut Pool<CrashDisk> {
        self.pool.as_mut().expect("pool")
    }

    fn fail(&self, what: &str) -> ! {
        panic!("ztest seed {}: {what}\n  reproduce: ZTEST_SEED={} cargo test -p alcove-pool --test ztest", self.seed, self.seed)
    }

    fn pick<T: Clone>(&mut self, v: &[T]) -> Option<T> {
        if v.is_empty() { None } else { Some(v[self.rng.below(v.len() as u64) as usize].clone()) }
    }

    fn committed_op(&mut self, r: Result<(), Error>, what: &str) {
        if let Err(e) = r {
            self.fail(&format!("{what}: {e}"));
        }
        self.committed = self.model.clone();
    }

    fn step(&mut self) {
        let roll = self.rng.below(100);
        let vols = self.model.volumes();
        match roll {
            0..=44 => {
                let Some(v) = self.pick(&vols) else { return self.create() };
                let sectors = 1 + self.rng.below(40);
                let at = self.rng.below(VOLSIZE / 512 - sectors) * 512;
                let len = (sectors * 512) as usize;
                let data: Vec<u8> = match self.rng.below(6) {
                    0 => vec![0; len],
                    1 | 2 => {
                        let b = self.rng.next() as u8;
                        (0..len).map(|i| b.wrapping_add((i / 64) as u8)).collect()
                    }
                    _ => (0..len).map(|_| self.rng.next() as u8).collect(),
                };
                if let Err(e) = self.pool().write(&v, at, &data) {
                    self.fail(&format!("write {v} at {at}: {e}"));
                }
                self.model.data.get_mut(&v).unwrap()[at as usize..at as usize + len].copy_from_slice(&data);
            }
            45..=56 => {
                let r = self.pool().sync();
                self.committed_op(r, "sync");
            }
            57..=60 => self.create(),
            61..=68 if self.rng.below(4) == 0 => self.rename(),
            61..=68 => {
                let Some(v) = self.pick(&vols) else { return };
                self.next_name += 1;
                let s = format!("{v}@s{}", self.next_name);
                self.arm();
                let r = self.pool().snapshot(&s);
                let d = self.model.data[&v].clone();
                self.model.data.insert(s.clone(), d);
                self.model.snaps.entry(v).or_default().push(s);
                self.finish(r, "snapshot");
            }
            69..=74 if self.rng.below(2) == 0 => self.send_receive(),
            69..=74 => {
                let Some(s) = self.pick(&self.model.snapshots()) else { return };
                if vols.len() >= 6 {
                    return;
                }
                self.next_name += 1;
                let c = format!("zones/clone{}", self.next_name);
                self.arm();
                let r = self.pool().clone_snapshot(&s, &c);
                let d = self.model.data[&s].clone();
                self.model.data.insert(c.clone(), d);
                self.model.origin.insert(c, s);
                self.finish(r, "clone");
            }
            75..=79 => {
                let Some(v) = self.pick(&vols) else { return };
                let Some(latest) = self.model.snaps.get(&v).and_then(|s| s.last().cloned()) else { return };
                self.arm();
                let r = self.pool().rollback(&latest);
                let d = self.model.data[&latest].clone();
                self.model.data.insert(v, d);
                self.finish(r, "rollback");
            }
            80..=87 => self.destroy(),
            88..=93 => self.power_cut(),
            _ => {
                if self.mirror {
                    self.flip();
                } else {
                    self.power_cut();
                }
            }
        }
    }

    fn create(&mut self) {
        if self.model.volumes().len() >= 6 {
            return;
        }
        self.next_name += 1;
        let v = format!("zones/{:08x}-disk{}", self.seed as u32, self.next_name);
        let bs = 512u32 << self.rng.below(5);
        let lz4 = self.rng.below(2) == 0;
        let r = self.pool().create_volume(&v, VOLSIZE, bs).and_then(|()| if lz4 { self.pool().set_prop(&v, "compression", "lz4") } else { Ok(()) });
        self.model.data.insert(v, vec![0; VOLSIZE as usize]);
        self.committed_op(r, "create");
    }

    fn destroy(&mut self) {
        let names: Vec<String> = self.model.data.keys().cloned().collect();
        let Some(n) = self.pick(&names) else { return };
        let recursive = self.rng.below(2) == 0;
        let busy = if n.contains('@') {
            self.model.clones_of(&n) > 0
        } else {
            let snaps = self.model.snaps.get(&n).cloned().unwrap_or_default();
            (!snaps.is_empty() && !recursive) || snaps.iter().any(|s| self.model.clones_of(s) > 0)
        };
        self.arm();
        let r = self.pool().destroy(&n, recursive);
        if busy {
            self.power.cut_at.set(None);
            if !matches!(r, Err(Error::Busy(_))) {
                self.fail(&format!("destroy {n} (recursive {recursive}) should be refused, got {r:?}"));
            }
            return;
        }
        if n.contains('@') {
            let v = n.split('@').next().unwrap().to_string();
            self.model.snaps.get_mut(&v).unwrap().retain(|s| *s != n);
            self.model.data.remove(&n);
        } else {
            for s in self.model.snaps.remove(&n).unwrap_or_default() {
                self.model.data.remove(&s);
            }
            self.model.data.remove(&n);
            self.model.origin.remove(&n);
        }
        self.finish(r, "destroy");
    }

    /// Commits what is open (so a cut during the next operation leaves
    /// either the state before it or after it), then, one time in three,
    /// arms a power cut a few writes ahead.
    fn arm(&mut self) {
        if self.power.off.get() {
            return;
        }
        let r = self.pool().sync();
        self.committed_op(r, "sync before an operation");
        if self.rng.below(3) == 0 {
            let at = self.power.writes.get() + 1 + self.rng.below(30);
            self.power.cut_at.set(Some(at));
        }
    }

    /// After an armed operation: if the power went, reboot and accept the
    /// state before the operation or after it (the model already holds the
    /// one after); else the operation must have succeeded.
    fn finish(&mut self, r: Result<(), Error>, what: &str) {
        self.power.cut_at.set(None);
        if self.power.off.get() {
            self.cuts += 1;
            self.op_cuts += 1;
            let images: Vec<Vec<u8>> = self.pool.take().unwrap().into_disks().into_iter().map(CrashDisk::after_power_cut).collect();
            return self.reboot(images, false);
        }
        self.committed_op(r, what);
    }

    /// Renames a volume (its snapshots follow) or a snapshot.
    fn rename(&mut self) {
        let names: Vec<String> = self.model.data.keys().cloned().collect();
        let Some(from) = self.pick(&names) else { return };
        self.next_name += 1;
        let to = match from.split_once('@') {
            Some((v, _)) => format!("{v}@r{}", self.next_name),
            None => format!("zones/ren{}", self.next_name),
        };
        self.arm();
        let r = self.pool().rename(&from, &to);
        let m = &mut self.model;
        let mut moves = vec![(from.clone(), to.clone())];
        if !from.contains('@') {
            for s in m.snaps.remove(&from).unwrap_or_default() {
                let t = format!("{to}@{}", s.split_once('@').unwrap().1);
                moves.push((s, t));
            }
            m.snaps.insert(to.clone(), moves[1..].iter().map(|x| x.1.clone()).collect());
            if let Some(o) = m.origin.remove(&from) {
                m.origin.insert(to.clone(), o);
            }
        } else {
            let v = from.split_once('@').unwrap().0.to_string();
            for s in m.snaps.get_mut(&v).unwrap() {
                if *s == from {
                    s.clone_from(&to);
                }
            }
        }
        for (f, t) in &moves {
            let d = m.data.remove(f).unwrap();
            m.data.insert(t.clone(), d);
            for o in m.origin.values_mut() {
                if o == f {
                    o.clone_from(t);
                }
            }
        }
        self.renames += 1;
        self.finish(r, "rename");
    }

    /// A full send of a snapshot received as a new volume (and its
    /// snapshot), then an incremental one when the volume has a later
    /// snapshot; the copies must read as the originals.
    fn send_receive(&mut self) {
        let Some(s) = self.pick(&self.model.snapshots()) else { return };
        if self.model.volumes().len() >= 6 {
            return;
        }
        self.next_name += 1;
        let target = format!("zones/recv{}", self.next_name);
        let (vol, snap) = s.split_once('@').map(|(a, b)| (a.to_string(), b.to_string())).unwrap();
        let mut stream = Vec::new();
        if let Err(e) = self.pool().send(&s, None, &mut |b| stream.extend_from_slice(b)) {
            self.fail(&format!("send {s}: {e}"));
        }
        let r = self.pool().receive(&target, &stream).map(|_| ());
        let d = self.model.data[&s].clone();
        self.model.data.insert(target.clone(), d.clone());
        self.model.data.insert(format!("{target}@{snap}"), d);
        self.model.snaps.insert(target.clone(), vec![format!("{target}@{snap}")]);
        self.committed_op(r, "receive (full)");
        self.receives += 1;
        let later = self.model.snaps[&vol].iter().skip_while(|x| **x != s).nth(1).cloned();
        if let Some(later) = later {
            let mut stream = Vec::new();
            if let Err(e) = self.pool().send(&later, Some(&s), &mut |b| stream.extend_from_slice(b)) {
                self.fail(&format!("send {later} from {s}: {e}"));
            }
            let r = self.pool().receive(&target, &stream).map(|_| ());
            let name = format!("{target}@{}", later.split_once('@').unwrap().1);
            let d = self.model.data[&later].clone();
            self.model.data.insert(target.clone(), d.clone());
            self.model.data.insert(name.clone(), d);
            self.model.snaps.get_mut(&target).unwrap().push(name);
            self.committed_op(r, "receive (incremental)");
        }
    }

    /// Power off during a sync, then bring the machine back.
    fn power_cut(&mut self) {
        self.cuts += 1;
        let at = self.power.writes.get() + 1 + self.rng.below(40);
        self.power.cut_at.set(Some(at));
        let ok = self.pool().sync().is_ok();
        self.power.cut_at.set(None);
        if ok && !self.power.off.get() {
            self.committed = self.model.clone();
            return;
        }
        let images: Vec<Vec<u8>> = self.pool.take().unwrap().into_disks().into_iter().map(CrashDisk::after_power_cut).collect();
        self.reboot(images, ok);
    }

    fn reboot(&mut self, images: Vec<Vec<u8>>, acknowledged: bool) {
        self.power = Rc::new(Power::default());
        let disks: Vec<CrashDisk> =
            images.into_iter().enumerate().map(|(i, im)| CrashDisk::new(im, self.power.clone(), self.rng.next() ^ i as u64)).collect();
        let mut pool = Pool::import(disks).unwrap_or_else(|e| self.fail(&format!("import after a power cut: {e}")));
        let new_ok = read_all(&mut pool, &self.model).is_some();
        let old_ok = !new_ok && !acknowledged && read_all(&mut pool, &self.committed).is_some();
        self.pool = Some(pool);
        if new_ok {
            self.committed = self.model.clone();
        } else if old_ok {
            self.model = self.committed.clone();
        } else {
            self.fail("after a power cut the pool holds neither the last committed state nor the one being committed");
        }
        if let Err(e) = self.pool().verify(false) {
            self.fail(&format!("verify after a power cut: {e}"));
        }
    }

    /// Bit flips on one side of the mirror, then a scrub repairs them.
    fn flip(&mut self) {
        self.flips += 1;
        let side = self.rng.below(2) as usize;
        if let Err(e) = self.pool().sync() {
            self.fail(&format!("sync: {e}"));
        }
        self.committed = self.model.clone();
        let other_before = self.pool().child_stats()[1 - side].checksum_errors;
        let n = 1 + self.rng.below(8);
        let disk = &mut self.pool.as_mut().unwrap().disks_mut()[side];
        let (lo, hi) = data_region(disk.durable.len() as u64);
        let mut spots = Vec::new();
        for _ in 0..n {
            spots.push((lo + self.rng.below(hi - lo)) as usize);
        }
        let disk = &mut self.pool.as_mut().unwrap().disks_mut()[side];
        for s in spots {
            disk.durable[s] ^= 0x10;
        }
        match self.pool().scrub() {
            Err(e) => self.fail(&format!("scrub after flips on side {side}: {e}")),
            Ok(r) if !r.errors.is_empty() || !r.space_checked => {
                self.fail(&format!("scrub after flips on side {side} alone found permanent errors: {:?}", r.errors))
            }
            Ok(_) => {}
        }
        if self.pool().child_stats()[1 - side].checksum_errors != other_before {
            self.fail("checksum errors counted on the side that was not touched");
        }
    }

    fn full_check(&mut self) {
        if let Err(e) = self.pool().sync() {
            self.fail(&format!("sync: {e}"));
        }
        self.committed = self.model.clone();
        let images: Vec<Vec<u8>> = self.pool.take().unwrap().into_disks().into_iter().map(CrashDisk::after_power_cut).collect();
        self.reboot(images, true);
    }
}

/// Every dataset of `m` reads back as in `m`, and the pool has no others.
fn read_all(pool: &mut Pool<CrashDisk>, m: &Model) -> Option<()> {
    if pool.list().len() != m.data.len() {
        return None;
    }
    for (name, want) in &m.data {
        let mut got = vec![0u8; want.len()];
        pool.read(name, 0, &mut got).ok()?;
        if &got != want {
            return None;
        }
    }
    Some(())
}

fn run(seed: u64, ops: u32) {
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mirror = rng.below(2) == 0;
    eprintln!("ztest seed {seed}: {} ops on a {}", ops, if mirror { "2-way mirror" } else { "single disk" });
    let power = Rc::new(Power::default());
    let children = if mirror { 2 } else { 1 };
    let disks: Vec<CrashDisk> = (0..children).map(|i| CrashDisk::new(vec![0; 8 * MIB], power.clone(), seed + i)).collect();
    let pool = Pool::create("zones", disks, seed).unwrap();
    let mut run = Run {
        seed,
        rng,
        power,
        pool: Some(pool),
        model: Model::default(),
        committed: Model::default(),
        next_name: 0,
        mirror,
        cuts: 0,
        op_cuts: 0,
        receives: 0,
        renames: 0,
        flips: 0,
    };
    for i in 0..ops {
        run.step();
        if i % 100 == 99 {
            run.full_check();
        }
    }
    run.full_check();
    let txg = run.pool().txg();
    eprintln!(
        "ztest seed {seed}: ok ({} power cuts, {} of them during an operation, {} receives, {} renames, {} flip rounds, txg {txg})",
        run.cuts, run.op_cuts, run.receives, run.renames, run.flips
    );
}

fn env(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

#[test]
fn ztest() {
    let ops = env("ZTEST_OPS").unwrap_or(300) as u32;
    if let Some(seed) = env("ZTEST_SEED") {
        return run(seed, ops);
    }
    // A new seed each run (printed), besides the fixed ones.
    let fresh = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64 % 1_000_000);
    let runs = env("ZTEST_RUNS").unwrap_or(3);
    for seed in (1..=runs).chain([fresh]) {
        run(seed, ops);
    }
}
