//! The intent log (FORMAT.md "Intent log"): a FLUSH writes a log block and
//! one flush barrier instead of committing the group, and import replays
//! it. Power is cut at every write of a sequence of writes and FLUSHes
//! (the disks keep any subset of their unflushed writes, in any order, the
//! cut one torn): after import every block holds what the last completed
//! FLUSH before it acknowledged, or something written after that, never
//! anything else; the pool verifies after a commit and imports again the
//! same. Torn log blocks, log blocks of an older generation and pools whose
//! uberblock names no log are covered on their own.

use std::rc::Rc;

use alcove_pool::fault::{CrashDisk, Power, Rng};
use alcove_pool::format::{
    CKSUM_FLETCHER4, CKSUM_SHA256, LOG_BLOCK, LOG_MAGIC, LOG_VERSION, LogBlock, UB_SLOT, UB_SLOTS, Uberblock,
    checksum_with, label_offset,
};
use alcove_pool::{MemDisk, Pool};

const MIB: usize = 1024 * 1024;
const VOL: &str = "zones/l-disk0";
const VOLSIZE: usize = 512 * 1024;
const BS: usize = 4096;

fn disks(images: &[Vec<u8>], power: &Rc<Power>, seed: u64) -> Vec<CrashDisk> {
    images
        .iter()
        .enumerate()
        .map(|(i, im)| CrashDisk::new(im.clone(), power.clone(), seed ^ ((i as u64 + 1) * 7919)))
        .collect()
}

fn contents<D: alcove_pool::Disk>(pool: &mut Pool<D>) -> Vec<u8> {
    let mut v = vec![0u8; VOLSIZE];
    pool.read(VOL, 0, &mut v).expect("read after import");
    v
}

/// A committed pool with data, as images.
fn base(children: usize) -> (Vec<Vec<u8>>, Vec<u8>) {
    let power = Rc::new(Power::default());
    let mut pool = Pool::create(
        "zones",
        disks(&vec![vec![0u8; 4 * MIB]; children], &power, 1),
        41,
    )
    .unwrap();
    pool.create_volume(VOL, VOLSIZE as u64, BS as u32).unwrap();
    let data: Vec<u8> = (0..VOLSIZE).map(|i| (i * 7 % 251) as u8).collect();
    pool.write(VOL, 0, &data).unwrap();
    pool.sync().unwrap();
    (
        pool.into_disks()
            .into_iter()
            .map(CrashDisk::after_power_cut)
            .collect(),
        data,
    )
}

/// Per 4 KiB block: every value written since the last FLUSH that completed
/// (the first is the acknowledged one).
struct Model {
    blocks: Vec<Vec<Vec<u8>>>,
}

impl Model {
    fn new(data: &[u8]) -> Self {
        Model {
            blocks: data.chunks(BS).map(|c| vec![c.to_vec()]).collect(),
        }
    }
    fn wrote(&mut self, at: usize, data: &[u8]) {
        for (i, c) in data.chunks(BS).enumerate() {
            self.blocks[at / BS + i].push(c.to_vec());
        }
    }
    fn flushed(&mut self) {
        for b in &mut self.blocks {
            let last = b.pop().unwrap_or_default();
            b.clear();
            b.push(last);
        }
    }
    fn check(&self, got: &[u8], what: &str) {
        for (i, c) in got.chunks(BS).enumerate() {
            assert!(
                self.blocks[i].iter().any(|v| v == c),
                "{what}: block {i} holds data that was neither acknowledged nor written later"
            );
        }
    }
}

/// Writes and FLUSHes (whole blocks, some zeros, some rewritten in the same
/// group); stops at the first error (the power went off).
fn step(pool: &mut Pool<CrashDisk>, model: &mut Model, rng: &mut Rng) {
    for round in 0..4 {
        for _ in 0..3 + rng.below(4) {
            let n = 1 + rng.below(6) as usize;
            let at = rng.below((VOLSIZE / BS - n) as u64) as usize * BS;
            let data: Vec<u8> = if rng.below(6) == 0 {
                vec![0; n * BS]
            } else {
                (0..n * BS).map(|_| rng.next() as u8).collect()
            };
            if pool.write(VOL, at as u64, &data).is_err() {
                return;
            }
            model.wrote(at, &data);
        }
        if pool.flush().is_err() {
            return;
        }
        model.flushed();
        // A round's writes that stay unflushed before the next one.
        if round == 3 {
            let data = vec![0xa5u8; 2 * BS];
            if pool.write(VOL, 0, &data).is_ok() {
                model.wrote(0, &data);
            }
        }
    }
}

fn cut_everywhere(children: usize) {
    let (base, data) = base(children);
    let run = |cut: Option<u64>, seed: u64| {
        let power = Rc::new(Power::default());
        let mut pool = Pool::import(disks(&base, &power, seed)).unwrap();
        let txg = pool.txg();
        power.cut_at.set(cut.map(|c| power.writes.get() + c));
        let mut model = Model::new(&data);
        step(&mut pool, &mut model, &mut Rng(17));
        let meter = pool.meter();
        let writes = power.writes.get();
        (
            txg,
            pool.txg(),
            meter,
            writes,
            model,
            pool.into_disks()
                .into_iter()
                .map(CrashDisk::after_power_cut)
                .collect::<Vec<_>>(),
        )
    };
    let (txg0, txg1, meter, writes, _, _) = run(None, 0);
    // The first FLUSH after an import commits (the log of an imported
    // generation is never extended); the others only write the log.
    assert_eq!(txg1, txg0 + 1, "one commit: the first FLUSH after import");
    assert_eq!(meter.log_flushes, 3, "three FLUSHes answered by the log");
    let mut replays = 0;
    for cut in 1..=writes + 1 {
        for seed in 0..2u64 {
            let (_, _, _, _, model, images) = run(Some(cut), seed * 1000 + cut);
            let power = Rc::new(Power::default());
            let mut pool = Pool::import(disks(&images, &power, 3))
                .unwrap_or_else(|e| panic!("cut at write {cut} seed {seed}: import: {e}"));
            if pool.log_replayed() > 0 {
                replays += 1;
            }
            let what = format!("cut at write {cut} seed {seed}");
            model.check(&contents(&mut pool), &what);
            let got = contents(&mut pool);
            pool.sync()
                .unwrap_or_else(|e| panic!("{what}: commit after replay: {e}"));
            pool.verify(false)
                .unwrap_or_else(|e| panic!("{what}: verify: {e}"));
            let mut again = Pool::import(pool.into_disks()).unwrap();
            assert!(
                contents(&mut again) == got,
                "{what}: the replayed data did not stay after a commit and import"
            );
            again.verify(false).unwrap();
        }
    }
    assert!(replays > 0, "some cuts landed after a log write");
}

#[test]
fn power_cut_at_every_write_of_writes_and_flushes_single_disk() {
    cut_everywhere(1);
}

#[test]
fn power_cut_at_every_write_of_writes_and_flushes_mirror() {
    cut_everywhere(2);
}

/// Imports `images`, then writes and FLUSHes once: that FLUSH commits,
/// and the new group's log takes the next ones.
fn open(images: Vec<MemDisk>) -> Pool<MemDisk> {
    let mut p = Pool::import(images).unwrap();
    p.write(VOL, 0, &[1u8; BS]).unwrap();
    p.flush().unwrap();
    p
}

fn mem_base() -> Vec<MemDisk> {
    let mut pool = Pool::create("zones", vec![MemDisk::new(4 * MIB)], 43).unwrap();
    pool.create_volume(VOL, VOLSIZE as u64, BS as u32).unwrap();
    pool.into_disks()
}

/// A FLUSH is one log write between two flush barriers (the data it names
/// durable first, then the log block): no commit, no uberblock.
#[test]
fn a_flush_writes_one_log_block_between_two_barriers() {
    let mut pool = open(mem_base());
    let txg = pool.txg();
    pool.write(VOL, 64 * 1024, &[9u8; 16 * BS]).unwrap();
    let m0 = pool.meter();
    pool.flush().unwrap();
    let m1 = pool.meter();
    assert_eq!(pool.txg(), txg, "no commit");
    assert_eq!(
        (
            m1.commits - m0.commits,
            m1.disk_writes - m0.disk_writes,
            m1.flushes - m0.flushes
        ),
        (0, 1, 2)
    );
    assert_eq!(m1.log_blocks - m0.log_blocks, 1);
    // Nothing new: nothing to write.
    pool.flush().unwrap();
    assert_eq!(pool.meter().disk_writes, m1.disk_writes);
    // The power goes: the FLUSHed blocks come back from the log.
    let mut back = Pool::import(pool.into_disks()).unwrap();
    assert_eq!(
        back.log_replayed(),
        16,
        "the 16 blocks (open()'s FLUSH committed)"
    );
    let mut b = vec![0u8; 16 * BS];
    back.read(VOL, 64 * 1024, &mut b).unwrap();
    assert!(b.iter().all(|&x| x == 9));
}

/// The log blocks of an image, by their magic (4 KiB aligned).
fn log_blocks_in(img: &[u8]) -> Vec<(usize, LogBlock)> {
    (0..img.len() / 4096)
        .map(|i| i * 4096)
        .filter(|&o| img[o..o + 8] == LOG_MAGIC.to_le_bytes())
        .filter_map(|o| {
            LogBlock::decode(&img[o..(o + LOG_BLOCK as usize).min(img.len())])
                .ok()
                .map(|lb| (o, lb))
        })
        .collect()
}

/// Log blocks are version 3, sealed with fletcher4; a version 2 block
/// (fletcher4, before session 19) and a version 1 block (SHA-256, before
/// session 18) are still replayed; a block whose seal is not its
/// version's, or of an unknown version, is not.
#[test]
fn a_version_1_log_block_sealed_with_sha256_is_still_replayed() {
    let mut pool = open(mem_base());
    pool.write(VOL, 8 * BS as u64, &[5u8; 3 * BS]).unwrap();
    pool.flush().unwrap();
    let txg = pool.txg();
    let img = pool.into_disks().remove(0).bytes;
    let logs: Vec<(usize, LogBlock)> = log_blocks_in(&img).into_iter().filter(|(_, lb)| lb.txg == txg).collect();
    assert_eq!(logs.len(), 1, "one log block");
    let at = logs[0].0;
    let len = u32::from_le_bytes(img[at + 12..at + 16].try_into().unwrap()) as usize;
    assert_eq!(u32::from_le_bytes(img[at + 8..at + 12].try_into().unwrap()), LOG_VERSION);
    assert_eq!(LOG_VERSION, 3);
    assert_eq!(img[at + len - 32..at + len], checksum_with(CKSUM_FLETCHER4, &img[at..at + len - 32]), "fletcher4 seal");
    // As its version and seal are, as the other's, and both swapped.
    let resealed = |version: u32, algo: u8| {
        let mut img = img.clone();
        img[at + 8..at + 12].copy_from_slice(&version.to_le_bytes());
        let sum = checksum_with(algo, &img[at..at + len - 32]);
        img[at + len - 32..at + len].copy_from_slice(&sum);
        img
    };
    for (version, algo, replayed) in [
        (3, CKSUM_FLETCHER4, 3),
        (2, CKSUM_FLETCHER4, 3),
        (1, CKSUM_SHA256, 3),
        (1, CKSUM_FLETCHER4, 0),
        (2, CKSUM_SHA256, 0),
        (3, CKSUM_SHA256, 0),
        (4, CKSUM_FLETCHER4, 0),
    ] {
        let mut back = Pool::import(vec![MemDisk { bytes: resealed(version, algo) }]).unwrap();
        assert_eq!(back.log_replayed(), replayed, "version {version}, seal {algo}");
        let mut b = vec![0u8; 3 * BS];
        back.read(VOL, 8 * BS as u64, &mut b).unwrap();
        assert!(b.iter().all(|&x| x == if replayed > 0 { 5 } else { 0 }), "version {version}, seal {algo}");
        back.sync().unwrap();
        back.verify(false).unwrap();
    }
}

/// A data block a version 3 log names, damaged on the disk after its FLUSH
/// was acknowledged (the log block was written only once the block was
/// durable): the replay takes its record all the same (its read is an I/O
/// error, never the data from before the write) and goes on, so the FLUSHes
/// after it are not lost. The same damage under a version 2 log block (no
/// such barrier: the block may have been torn) ends the log there, as
/// before.
#[test]
fn a_damaged_block_a_version_3_log_names_fails_its_read_and_later_flushes_stay() {
    let mut pool = open(mem_base());
    pool.write(VOL, 8 * BS as u64, &[2u8; BS]).unwrap();
    pool.flush().unwrap();
    pool.write(VOL, 9 * BS as u64, &[3u8; BS]).unwrap();
    pool.flush().unwrap();
    let txg = pool.txg();
    let img = pool.into_disks().remove(0).bytes;
    let mut logs: Vec<(usize, LogBlock)> = log_blocks_in(&img).into_iter().filter(|(_, lb)| lb.txg == txg).collect();
    logs.sort_by_key(|(_, lb)| lb.seq);
    assert_eq!(logs.len(), 2, "a log block per FLUSH");
    assert!(logs.iter().all(|(_, lb)| lb.version == LOG_VERSION));
    let first = logs[0].1.records.iter().find(|r| r.block == 8).expect("block 8 logged").bp;
    let mut damaged = img.clone();
    damaged[first.offset as usize + 100] ^= 0x40;
    let mut back = Pool::import(vec![MemDisk { bytes: damaged.clone() }]).unwrap();
    assert_eq!(back.log_replayed(), 2, "both FLUSHes replayed");
    assert_eq!(back.log_replayed_damaged(), 1);
    let mut b = vec![0u8; BS];
    assert!(back.read(VOL, 8 * BS as u64, &mut b).is_err(), "the damaged block reads as an error, not as zeros");
    back.read(VOL, 9 * BS as u64, &mut b).unwrap();
    assert!(b.iter().all(|&x| x == 3), "the later FLUSH's block is there");
    // A version 2 log (no barrier before it): the damage may be a torn
    // write, so the log ends before it and neither FLUSH is replayed.
    for (at, _) in &logs {
        let len = u32::from_le_bytes(damaged[at + 12..at + 16].try_into().unwrap()) as usize;
        damaged[at + 8..at + 12].copy_from_slice(&2u32.to_le_bytes());
        let sum = checksum_with(CKSUM_FLETCHER4, &damaged[*at..at + len - 32]);
        damaged[at + len - 32..at + len].copy_from_slice(&sum);
    }
    let mut old = Pool::import(vec![MemDisk { bytes: damaged }]).unwrap();
    assert_eq!((old.log_replayed(), old.log_replayed_damaged()), (0, 0));
    old.read(VOL, 8 * BS as u64, &mut b).unwrap();
    assert!(b.iter().all(|&x| x == 0));
}

/// The last log block torn (its last sectors never written): the FLUSH it
/// answered never completed, so the replay stops before it and keeps the
/// earlier FLUSHes.
#[test]
fn a_torn_log_block_ends_the_replay_and_keeps_what_came_before() {
    let mut pool = open(mem_base());
    pool.write(VOL, 8 * BS as u64, &[2u8; BS]).unwrap();
    pool.flush().unwrap();
    pool.write(VOL, 9 * BS as u64, &[3u8; BS]).unwrap();
    pool.flush().unwrap();
    let txg = pool.txg();
    let mut img = pool.into_disks().remove(0).bytes;
    let logs: Vec<(usize, LogBlock)> = log_blocks_in(&img)
        .into_iter()
        .filter(|(_, lb)| lb.txg == txg)
        .collect();
    let (at, last) = logs.iter().max_by_key(|(_, lb)| lb.seq).unwrap();
    assert_eq!(last.seq, 1, "two log blocks in this group");
    img[at + 512..at + 4096].fill(0);
    let mut back = Pool::import(vec![MemDisk { bytes: img }]).unwrap();
    assert_eq!(back.log_replayed(), 1, "the first FLUSH's record");
    let mut b = vec![0u8; 2 * BS];
    back.read(VOL, 8 * BS as u64, &mut b).unwrap();
    assert!(
        b[..BS].iter().all(|&x| x == 2),
        "the second FLUSH's block is there"
    );
    assert!(
        b[BS..].iter().all(|&x| x == 0),
        "the torn FLUSH's block is not"
    );
    back.sync().unwrap();
    back.verify(false).unwrap();
}

/// A log block of an older generation where the new group's log starts (the
/// space was free and reused) is not replayed: here it names a block a
/// rollback has since undone, and replaying it would bring the data back.
#[test]
fn a_log_block_of_an_older_generation_is_not_replayed() {
    let mut pool = open(mem_base());
    pool.sync().unwrap();
    pool.snapshot(&format!("{VOL}@before")).unwrap();
    pool.write(VOL, 0, &[7u8; 4 * BS]).unwrap();
    pool.write(VOL, 5 * BS as u64, &[8u8; 2 * BS]).unwrap();
    pool.flush().unwrap();
    let gen_ = pool.txg();
    let img = pool.disks_mut()[0].bytes.clone();
    let (_, old) = log_blocks_in(&img)
        .into_iter()
        .find(|(_, lb)| lb.txg == gen_ && !lb.records.is_empty())
        .unwrap();
    let old_bytes = old.encode();
    // The rollback commits: the flushed blocks are undone and freed.
    pool.rollback(&format!("{VOL}@before")).unwrap();
    let head = pool.log_head() as usize;
    assert_ne!(head, 0);
    let mut disks = pool.into_disks();
    disks[0].bytes[head..head + old_bytes.len()].copy_from_slice(&old_bytes);
    let mut back = Pool::import(disks).unwrap();
    assert_eq!(
        back.log_replayed(),
        0,
        "an older generation's log block is ignored"
    );
    let mut b = vec![0u8; 8 * BS];
    back.read(VOL, 0, &mut b).unwrap();
    assert!(
        b[..BS].iter().all(|&x| x == 1) && b[BS..].iter().all(|&x| x == 0),
        "the rolled-back data stays gone"
    );
    back.verify(false).unwrap();
}

/// An uberblock that names no log (every pool before the log existed reads
/// so: the field was sealed padding) imports and reads as before; its first
/// FLUSH commits and starts a log.
#[test]
fn a_pool_whose_uberblock_names_no_log_reads_unchanged() {
    let mut pool = Pool::create("zones", vec![MemDisk::new(4 * MIB)], 44).unwrap();
    pool.create_volume(VOL, VOLSIZE as u64, BS as u32).unwrap();
    pool.write(VOL, 0, &[5u8; 3 * BS]).unwrap();
    pool.sync().unwrap();
    let asize = pool.size_bytes() + 4 * 128 * 1024;
    let mut disks = pool.into_disks();
    let img = &mut disks[0].bytes;
    let mut rewritten = 0;
    for l in 0..4 {
        for s in 0..UB_SLOTS {
            let at = (label_offset(asize, l) + 4096 + s * UB_SLOT) as usize;
            if let Ok(ub) = Uberblock::decode(&img[at..at + UB_SLOT as usize]) {
                let enc = Uberblock { log: 0, ..ub }.encode();
                img[at..at + enc.len()].copy_from_slice(&enc);
                rewritten += 1;
            }
        }
    }
    assert!(rewritten > 0);
    let mut back = Pool::import(disks).unwrap();
    assert_eq!((back.log_head(), back.log_replayed()), (0, 0));
    let mut b = vec![0u8; 3 * BS];
    back.read(VOL, 0, &mut b).unwrap();
    assert!(b.iter().all(|&x| x == 5));
    let txg = back.txg();
    back.write(VOL, 0, &[6u8; BS]).unwrap();
    back.flush().unwrap();
    assert_eq!(back.txg(), txg + 1, "without a log a FLUSH commits");
    assert_ne!(back.log_head(), 0, "and the new group has a log");
}
