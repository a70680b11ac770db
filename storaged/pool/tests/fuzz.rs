//! Hostile disk images and streams: every on-disk parser must give an error,
//! never panic, and never return wrong data.
//!
//! Cases come from a fixed seed set; `POOL_FUZZ_SEED=N cargo test -p
//! alcove-pool --test fuzz` replays one seed, `POOL_FUZZ_RUNS=N` runs more.
//! Each case prints its seed before it runs, so a failure names it.
//!
//! * parsers fed random bytes and mutated valid encodings (labels,
//!   uberblocks, block pointers, space maps);
//! * images with bytes flipped or blocks replaced anywhere (labels,
//!   uberblock rings, MOS, indirect and data blocks): import fails, or the
//!   pool is one of the committed groups and every read is that group's data
//!   or an error;
//! * forged metadata whose checksums are recomputed (a mutated MOS resealed
//!   into the uberblock; a hostile indirect block hung under a volume's
//!   root): no panic, and datasets whose entries were not touched still read
//!   right or fail;
//! * send streams mutated, with and without their pieces' tags recomputed.

use std::collections::BTreeMap;

use alcove_pool::fault::Rng;
use alcove_pool::format::*;
use alcove_pool::space::SpaceMap;
use alcove_pool::pool::{STREAM_VERSION, piece_tag};
use alcove_pool::{MemDisk, Pool};

const MIB: usize = 1024 * 1024;
const DISK: usize = 4 * MIB;

fn seeds(base: u64, default_runs: u64) -> Vec<u64> {
    if let Ok(s) = std::env::var("POOL_FUZZ_SEED") {
        return vec![s.parse().expect("POOL_FUZZ_SEED: a number")];
    }
    let runs = std::env::var("POOL_FUZZ_RUNS").ok().and_then(|s| s.parse().ok()).unwrap_or(default_runs);
    (0..runs).map(|i| base + i).collect()
}

/// Every dataset's bytes after the committed txgs: a txg not in the map
/// committed nothing new (the one a snapshot makes before it freezes the
/// tree) and has the state of the one before it.
type Models = BTreeMap<u64, BTreeMap<String, Vec<u8>>>;

fn snapshot_model(p: &mut Pool<MemDisk>, m: &mut Models) {
    let mut all = BTreeMap::new();
    for d in p.list() {
        let mut b = vec![0u8; d.volsize as usize];
        p.read(&d.name, 0, &mut b).unwrap();
        all.insert(d.name, b);
    }
    m.insert(p.txg(), all);
}

fn bytes(rng: &mut Rng, n: usize, compressible: bool) -> Vec<u8> {
    (0..n).map(|i| if compressible { b"alcove pool "[i % 12] } else { rng.next() as u8 }).collect()
}

/// A small pool with an indirect level, a compressed volume, a snapshot and
/// a clone; the model of every txg that committed.
fn base() -> (Vec<u8>, Models) {
    let mut rng = Rng(7);
    let mut p = Pool::create("f", vec![MemDisk::new(DISK)], 99).unwrap();
    let mut m = Models::new();
    snapshot_model(&mut p, &mut m);
    p.create_volume("f/v", 512 * 1024, 4096).unwrap();
    snapshot_model(&mut p, &mut m);
    p.create_volume("f/z", 256 * 1024, 8192).unwrap();
    snapshot_model(&mut p, &mut m);
    p.set_prop("f/z", "compression", "lz4").unwrap();
    for i in 0..6u64 {
        p.write("f/v", i * 40960, &bytes(&mut rng, 8192, false)).unwrap();
    }
    p.write("f/z", 0, &bytes(&mut rng, 65536, true)).unwrap();
    p.sync().unwrap();
    snapshot_model(&mut p, &mut m);
    p.snapshot("f/v@s1").unwrap();
    snapshot_model(&mut p, &mut m);
    p.write("f/v", 4096, &bytes(&mut rng, 12288, false)).unwrap();
    p.sync().unwrap();
    snapshot_model(&mut p, &mut m);
    p.clone_snapshot("f/v@s1", "f/c").unwrap();
    snapshot_model(&mut p, &mut m);
    p.write("f/c", 300 * 1024, &bytes(&mut rng, 4096, false)).unwrap();
    p.sync().unwrap();
    snapshot_model(&mut p, &mut m);
    // The MOS ends with a scan record (the forged MOSes mutate it too).
    p.scrub().unwrap();
    snapshot_model(&mut p, &mut m);
    let img = p.into_disks().remove(0).bytes;
    (img, m)
}

/// Import, then read everything: an error anywhere is fine; data is the
/// committed group's or an error. `trusted`: the datasets whose contents
/// must be right if read at all (None: all of them, and the dataset list
/// must be a committed group's). Then writes, a commit and a verify must
/// not panic either.
fn check(img: Vec<u8>, m: &Models, trusted: Option<&[&str]>) {
    let Ok(mut p) = Pool::import(vec![MemDisk { bytes: img }]) else { return };
    let names: Vec<(String, u64)> = p.list().into_iter().map(|d| (d.name, d.volsize)).collect();
    let model = m.range(..=p.txg()).next_back().map(|(_, v)| v);
    if trusted.is_none() {
        let model = model.unwrap_or_else(|| panic!("imported txg {} that never committed", p.txg()));
        let mut got: Vec<&String> = names.iter().map(|n| &n.0).collect();
        got.sort();
        assert_eq!(got, model.keys().collect::<Vec<_>>(), "datasets of txg {}", p.txg());
    }
    for (name, volsize) in &names {
        // Bounded reads: a forged volsize may be huge.
        let n = (*volsize).min(1 << 20) as usize;
        let mut buf = vec![0u8; n];
        if p.read(name, 0, &mut buf).is_err() {
            continue;
        }
        let must = trusted.is_none_or(|t| t.contains(&name.as_str()));
        if must && let Some(want) = model.and_then(|mm| mm.get(name)) {
            assert!(buf == want[..n.min(want.len())], "{name}: wrong data returned at txg {}", p.txg());
        }
    }
    let _ = p.verify(false);
    for (name, volsize) in &names {
        if *volsize >= 8192 && p.write(name, 0, &[0x5a; 8192]).is_ok() {
            let mut b = vec![0u8; 8192];
            if p.read(name, 0, &mut b).is_ok() {
                assert!(b.iter().all(|&x| x == 0x5a), "{name}: a dirty write did not read back");
            }
        }
    }
    if p.sync().is_ok() {
        let _ = p.verify(false);
        if let Ok(mut q) = Pool::import(p.into_disks()) {
            let _ = q.verify(false);
        }
    }
}

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

/// Writes `mos` (logical bytes) at the old MOS's place with a fresh
/// checksum and reseals the newest uberblock around it in every label.
fn forge_mos(img: &mut [u8], mut mos: Vec<u8>) {
    let ub = latest_ub(img);
    mos.truncate(ub.mos.psize as usize);
    let lsize = mos.len().max(1) as u32;
    mos.resize(ub.mos.psize as usize, 0);
    let at = ub.mos.offset as usize;
    img[at..at + mos.len()].copy_from_slice(&mos);
    let bp = BlockPtr { lsize, checksum: checksum_with(ub.mos.cksum, &mos), ..ub.mos };
    let enc = Uberblock { mos: bp, ..ub }.encode();
    for l in 0..LABELS {
        let at = Uberblock::slot_offset(label_offset(asize(), l), ub.txg) as usize;
        img[at..at + enc.len()].copy_from_slice(&enc);
    }
}

fn read_mos(img: &[u8]) -> Vec<u8> {
    let ub = latest_ub(img);
    img[ub.mos.offset as usize..][..ub.mos.lsize as usize].to_vec()
}

/// The MOS byte offsets of each dataset's name and root block pointer
/// (parsed as FORMAT.md lays it out).
fn mos_roots(mos: &[u8]) -> Vec<(String, usize)> {
    let mut r = Reader::new(mos);
    let mut out = Vec::new();
    r.u64().unwrap();
    r.u32().unwrap();
    for _ in 0..3 {
        r.u64().unwrap();
    }
    let n = r.u64().unwrap();
    for _ in 0..n * 2 {
        r.u64().unwrap();
    }
    let n = r.u64().unwrap();
    for _ in 0..n {
        r.u64().unwrap();
        r.u64().unwrap();
        let name = r.str().unwrap();
        r.u8().unwrap();
        r.u64().unwrap();
        r.u64().unwrap();
        r.u32().unwrap();
        out.push((name, mos.len() - r.remaining()));
        r.bp().unwrap();
        for _ in 0..3 {
            r.u64().unwrap();
        }
        let nd = r.u64().unwrap();
        r.bytes(nd as usize * 20).unwrap();
        let np = r.u64().unwrap();
        for _ in 0..np * 2 {
            r.str().unwrap();
        }
        // creation (MOS version 2).
        r.u64().unwrap();
    }
    out
}

fn mutate(rng: &mut Rng, b: &mut [u8]) {
    if b.is_empty() {
        return;
    }
    let n = b.len() as u64;
    match rng.below(6) {
        0 => {
            for _ in 0..1 + rng.below(4) {
                let i = rng.below(n) as usize;
                b[i] ^= 1 << rng.below(8);
            }
        }
        1 => {
            let i = rng.below(n) as usize;
            b[i] = rng.next() as u8;
        }
        2 => {
            // An integer field set to a boundary value.
            let i = (rng.below(n) as usize) & !7;
            let v: u64 = [0, 1, u64::MAX, u64::MAX / 2, 1 << 40, 4096, 0x7fff_ffff][rng.below(7) as usize];
            let end = (i + 8).min(b.len());
            b[i..end].copy_from_slice(&v.to_le_bytes()[..end - i]);
        }
        3 => {
            // A run copied from elsewhere (splices fields and pointers).
            let len = 1 + rng.below(64) as usize;
            let from = rng.below(n) as usize;
            let to = rng.below(n) as usize;
            let len = len.min(b.len() - from).min(b.len() - to);
            b.copy_within(from..from + len, to);
        }
        4 => {
            let i = rng.below(n) as usize;
            let len = (1 + rng.below(256) as usize).min(b.len() - i);
            b[i..i + len].fill(0);
        }
        _ => {
            let i = rng.below(n) as usize;
            let len = (1 + rng.below(64) as usize).min(b.len() - i);
            for x in &mut b[i..i + len] {
                *x = rng.next() as u8;
            }
        }
    }
}

#[test]
fn parsers_take_random_and_mutated_bytes() {
    let h = LabelHeader { pool_guid: 1, pool_name: "f".into(), vdev_guid: 2, child: 0, children: vec![2, 3], asize: 1 << 30 };
    let label = h.encode(0);
    let ub = Uberblock { txg: 5, pool_guid: 1, mos: BlockPtr { offset: 1 << 20, psize: 4096, lsize: 100, birth: 5, kind: 3, comp: 0, level: 0, cksum: 0, checksum: [7; 32] }, log: 1 << 21 }.encode();
    let mut bp = [0u8; BP_SIZE];
    BlockPtr { offset: 1 << 20, psize: 8192, lsize: 8192, birth: 3, kind: 1, comp: 1, level: 0, cksum: 0, checksum: [1; 32] }.encode(&mut bp);
    let data_bp = BlockPtr {
        offset: 1 << 20,
        psize: 8192,
        lsize: 8192,
        birth: 6,
        kind: 1,
        comp: 0,
        level: 0,
        cksum: 1,
        checksum: [3; 32],
    };
    let records = (0..40)
        .map(|i| LogRecord {
            volume: 1 + i % 3,
            block: i * 7,
            bp: if i % 5 == 0 { BlockPtr::HOLE } else { data_bp },
        })
        .collect();
    let log = LogBlock {
        pool_guid: 1,
        txg: 5,
        seq: 2,
        next: 3 << 20,
        records,
        version: alcove_pool::format::LOG_VERSION,
    }
    .encode();
    assert_eq!(LogBlock::decode(&log).unwrap().records.len(), 40);
    for seed in seeds(1000, 300) {
        println!("fuzz seed {seed}");
        let mut rng = Rng(seed);
        // A log block mutated and sealed again (so the field checks, not
        // only the seal, see it): an error, or bytes that re-encode the same.
        let mut b = log.clone();
        for _ in 0..1 + rng.below(3) {
            mutate(&mut rng, &mut b);
        }
        let _ = LogBlock::decode(&b);
        b.resize(log.len(), 0);
        let n = log.len();
        // Version 2's seal (fletcher4); a block mutated to version 1 is
        // then refused by its seal.
        let sum = checksum_with(CKSUM_FLETCHER4, &b[..n - 32]);
        b[n - 32..].copy_from_slice(&sum);
        if let Ok(lb) = LogBlock::decode(&b) {
            let e = lb.encode();
            assert_eq!(
                &e[..],
                &b[..e.len()],
                "log block parsed from bytes it does not encode to"
            );
        }
        let rnd: Vec<u8> = (0..rng.below(40000)).map(|_| rng.next() as u8).collect();
        let _ = LogBlock::decode(&rnd);
        for orig in [&label[..], &ub[..], &bp[..]] {
            let mut b = orig.to_vec();
            for _ in 0..1 + rng.below(3) {
                mutate(&mut rng, &mut b);
            }
            let _ = LabelHeader::decode(&b);
            let _ = Uberblock::decode(&b);
            let r = BlockPtr::decode(&b);
            if let Ok(p) = r {
                // What parses re-encodes to the same bytes (nothing ignored).
                let mut e = [0u8; BP_SIZE];
                p.encode(&mut e);
                assert_eq!(&e[..], &b[..BP_SIZE], "block pointer parsed from bytes it does not encode to");
            }
            let rnd: Vec<u8> = (0..rng.below(5000)).map(|_| rng.next() as u8).collect();
            let _ = LabelHeader::decode(&rnd);
            let _ = Uberblock::decode(&rnd);
            let _ = BlockPtr::decode(&rnd);
        }
        // A space map from hostile extents: refused, or consistent.
        let (start, end) = (1u64 << 18, 1u64 << 24);
        let ext: Vec<(u64, u64)> = (0..rng.below(20))
            .map(|_| match rng.below(3) {
                0 => (rng.next(), rng.next()),
                1 => (start + rng.below(end - start) / 4096 * 4096, rng.below(1 << 20) / 4096 * 4096),
                _ => (start + rng.below(end), u64::MAX - rng.below(10)),
            })
            .collect();
        if let Some(mut sm) = SpaceMap::from_allocated(start, end, &ext) {
            let used: u64 = sm.allocated().iter().map(|e| e.1).sum();
            assert_eq!(used + sm.free_bytes(), end - start, "space map from {ext:?}");
            while let Some(o) = sm.alloc(4096 * (1 + rng.below(8))) {
                assert!(o >= start && o < end);
            }
        }
    }
}

#[test]
fn damaged_images_give_errors_or_a_committed_group() {
    let (img, m) = base();
    let (ds, de) = data_region(asize());
    for seed in seeds(2000, 120) {
        println!("fuzz seed {seed}");
        let mut rng = Rng(seed);
        let mut b = img.clone();
        for _ in 0..1 + rng.below(4) {
            match rng.below(4) {
                // Anywhere.
                0 => mutate(&mut rng, &mut b),
                // A label: header or uberblock ring.
                1 => {
                    let l = label_offset(asize(), rng.below(LABELS as u64) as usize) as usize;
                    mutate(&mut rng, &mut b[l..l + LABEL_SIZE as usize]);
                }
                // A block of the data region (MOS, indirect, data).
                2 => {
                    let at = (ds + rng.below((de - ds) / BLOCK) * BLOCK) as usize;
                    mutate(&mut rng, &mut b[at..at + BLOCK as usize]);
                }
                // A block replaced by another one (valid but misplaced).
                _ => {
                    let from = (ds + rng.below((de - ds) / BLOCK) * BLOCK) as usize;
                    let to = (ds + rng.below((de - ds) / BLOCK) * BLOCK) as usize;
                    b.copy_within(from..from + BLOCK as usize, to);
                }
            }
        }
        check(b, &m, None);
    }
}

#[test]
fn forged_mos_never_panics() {
    let (img, m) = base();
    let mos = read_mos(&img);
    let roots = mos_roots(&mos);
    for seed in seeds(3000, 200) {
        println!("fuzz seed {seed}");
        let mut rng = Rng(seed);
        let mut x = mos.clone();
        for _ in 0..1 + rng.below(3) {
            mutate(&mut rng, &mut x);
        }
        if rng.below(4) == 0 {
            x.truncate(rng.below(x.len() as u64) as usize);
        }
        let mut b = img.clone();
        forge_mos(&mut b, x.clone());
        // Datasets whose name and root block pointer bytes are unchanged
        // still point at the right blocks.
        let same: Vec<&str> = roots
            .iter()
            .filter(|(n, at)| x.len() >= at + BP_SIZE && x[..at + BP_SIZE] == mos[..at + BP_SIZE] && !n.is_empty())
            .map(|(n, _)| n.as_str())
            .collect();
        // Volsize lives before the root: equal prefixes keep it too.
        check(b, &m, Some(&same));
    }
}

/// A block pointer whose `cksum` byte names no function (3..=255) is
/// refused as corrupt, never trusted, even when every checksum around it
/// is right: in an indirect block (the blocks below it give an error, the
/// rest of the volume and the other datasets read right), and as a
/// volume's root in the MOS (the MOS does not parse: import falls back to
/// an earlier group or fails).
#[test]
fn block_pointers_naming_no_checksum_function_are_refused() {
    let (img, m) = base();
    let mos = read_mos(&img);
    let roots = mos_roots(&mos);
    let newest = latest_ub(&img).txg;
    let (_, at) = roots.iter().find(|(n, _)| n == "f/v").unwrap();
    let root = BlockPtr::decode(&mos[*at..*at + BP_SIZE]).unwrap();
    // f/v: 512 KiB of 4 KiB blocks, two levels; each of the root's two
    // children holds 256 KiB.
    assert_eq!(root.level, 2);
    let blk = img[root.offset as usize..][..BLOCK as usize].to_vec();
    let (_, de) = data_region(asize());
    let evil_at = de - 16 * BLOCK;
    let want = &m.range(..=newest).next_back().unwrap().1["f/v"];
    let child = BlockPtr::decode(&blk[..BP_SIZE]).unwrap();
    let child_bytes = &img[child.offset as usize..][..child.psize as usize];
    for v in [3u8, 4, 0x7f, 0x80, 0xfe, 0xff] {
        let mut x = blk.clone();
        // The child's checksum recomputed with SHA-256, what a reader
        // that computed an unknown function as its fallback would accept.
        BlockPtr { checksum: checksum(child_bytes), ..child }.encode(&mut x[..BP_SIZE]);
        x[27] = v;
        let mut b = img.clone();
        b[evil_at as usize..][..BLOCK as usize].copy_from_slice(&x);
        let evil = BlockPtr { offset: evil_at, checksum: checksum_with(root.cksum, &x), ..root };
        let mut y = mos.clone();
        evil.encode(&mut y[*at..*at + BP_SIZE]);
        forge_mos(&mut b, y);
        let mut p = Pool::import(vec![MemDisk { bytes: b }]).unwrap();
        assert_eq!(p.txg(), newest);
        let mut buf = vec![0u8; 256 * 1024];
        assert!(p.read("f/v", 0, &mut buf[..4096]).is_err(), "cksum {v}: a block below the pointer was read");
        p.read("f/v", 256 * 1024, &mut buf).unwrap();
        assert!(buf[..] == want[256 * 1024..], "cksum {v}: the other half of f/v");
        for name in ["f/z", "f/c"] {
            let want = &m.range(..=newest).next_back().unwrap().1[name];
            let mut got = vec![0u8; want.len()];
            p.read(name, 0, &mut got).unwrap();
            assert!(got == *want, "cksum {v}: {name}");
        }
        assert!(p.verify(false).is_err(), "cksum {v}: verify passed");
        if let Ok(r) = p.scrub() {
            assert!(!r.errors.is_empty() || !r.space_checked, "cksum {v}: scrub clean: {r:?}");
        }
        // The MOS's own pointer to the volume's root.
        let mut y = mos.clone();
        y[*at + 27] = v;
        let mut b = img.clone();
        forge_mos(&mut b, y);
        if let Ok(p) = Pool::import(vec![MemDisk { bytes: b }]) {
            assert!(p.txg() < newest, "cksum {v}: the MOS naming it was taken");
        }
    }
}

#[test]
fn forged_indirect_blocks_never_panic() {
    let (img, m) = base();
    let mos = read_mos(&img);
    let roots = mos_roots(&mos);
    let (_, de) = data_region(asize());
    // Free space for the hostile block: the end of the data region.
    let evil_at = de - 16 * BLOCK;
    for seed in seeds(4000, 200) {
        println!("fuzz seed {seed}");
        let mut rng = Rng(seed);
        let (name, at) = &roots[rng.below(roots.len() as u64) as usize];
        let root = BlockPtr::decode(&mos[*at..*at + BP_SIZE]).unwrap();
        if root.is_hole() || root.level == 0 {
            continue;
        }
        let mut blk = img[root.offset as usize..][..BLOCK as usize].to_vec();
        for _ in 0..1 + rng.below(4) {
            match rng.below(3) {
                0 => mutate(&mut rng, &mut blk),
                // A child slot gets some other valid pointer, fields altered.
                1 => {
                    let src = &roots[rng.below(roots.len() as u64) as usize];
                    let mut p = BlockPtr::decode(&mos[src.1..src.1 + BP_SIZE]).unwrap();
                    match rng.below(4) {
                        0 => p.level = rng.below(4) as u8,
                        1 => p.kind = rng.below(4) as u8,
                        2 => p.lsize = [0, 1, 4096, 1 << 17, u32::MAX][rng.below(5) as usize],
                        _ => p.comp = rng.below(3) as u8,
                    }
                    let slot = rng.below(BP_PER_INDIRECT) as usize * BP_SIZE;
                    p.encode(&mut blk[slot..slot + BP_SIZE]);
                }
                _ => {
                    let slot = rng.below(BP_PER_INDIRECT) as usize * BP_SIZE;
                    let ub = latest_ub(&img);
                    let mut p = ub.mos;
                    p.level = root.level - 1;
                    p.kind = if p.level == 0 { 1 } else { 2 };
                    p.encode(&mut blk[slot..slot + BP_SIZE]);
                }
            }
        }
        let mut b = img.clone();
        b[evil_at as usize..][..BLOCK as usize].copy_from_slice(&blk);
        let evil = BlockPtr { offset: evil_at, checksum: checksum_with(root.cksum, &blk), ..root };
        let mut x = mos.clone();
        evil.encode(&mut x[*at..*at + BP_SIZE]);
        forge_mos(&mut b, x);
        let others: Vec<&str> = roots.iter().map(|r| r.0.as_str()).filter(|n| n != name).collect();
        check(b, &m, Some(&others));
    }
}

/// The payloads' byte ranges of a send stream's pieces (FORMAT.md "Send
/// stream"): after the 12-byte prefix, each piece is a length u32, the
/// payload, a 32-byte tag.
fn piece_spans(s: &[u8]) -> Vec<(usize, usize)> {
    let mut at = 12;
    let mut out = Vec::new();
    while at + 4 <= s.len() {
        let len = u32::from_le_bytes(s[at..at + 4].try_into().unwrap()) as usize;
        out.push((at + 4, at + 4 + len));
        at += 4 + len + 32;
    }
    out
}

/// Recomputes every piece's tag (the chain), as a forger would.
fn reseal(s: &mut [u8]) {
    let mut prev = [0u8; 32];
    for (lo, hi) in piece_spans(s) {
        let tag = piece_tag(&prev, &s[lo..hi]);
        s[hi..hi + 32].copy_from_slice(&tag);
        prev = tag;
    }
}

/// `payloads` framed as a stream's pieces, after the prefix.
fn framed(payloads: &[Vec<u8>]) -> Vec<u8> {
    let mut s = Vec::new();
    s.extend_from_slice(b"ALCVSEND");
    s.extend_from_slice(&STREAM_VERSION.to_le_bytes());
    let mut prev = [0u8; 32];
    for p in payloads {
        let tag = piece_tag(&prev, p);
        s.extend_from_slice(&(p.len() as u32).to_le_bytes());
        s.extend_from_slice(p);
        s.extend_from_slice(&tag);
        prev = tag;
    }
    s
}

#[test]
fn mutated_send_streams_are_refused_or_received_whole() {
    let mut p = Pool::create("s", vec![MemDisk::new(DISK)], 5).unwrap();
    let mut rng = Rng(3);
    p.create_volume("s/v", 256 * 1024, 4096).unwrap();
    p.write("s/v", 8192, &bytes(&mut rng, 16384, false)).unwrap();
    p.write("s/v", 128 * 1024, &bytes(&mut rng, 4096, false)).unwrap();
    p.snapshot("s/v@a").unwrap();
    p.write("s/v", 8192, &[0u8; 8192]).unwrap();
    p.write("s/v", 200 * 1024, &bytes(&mut rng, 4096, false)).unwrap();
    p.snapshot("s/v@b").unwrap();
    let mut full = Vec::new();
    p.send("s/v@a", None, &mut |b| full.extend_from_slice(b)).unwrap();
    let mut inc = Vec::new();
    p.send("s/v@b", Some("s/v@a"), &mut |b| inc.extend_from_slice(b)).unwrap();
    let img = p.into_disks();
    for seed in seeds(5000, 150) {
        println!("fuzz seed {seed}");
        let mut rng = Rng(seed);
        let incremental = rng.below(2) == 1;
        let orig = if incremental { &inc } else { &full };
        let mut s = orig.clone();
        // Payloads mutated (lengths kept), and with half the seeds every
        // piece's tag recomputed: then the records themselves are checked.
        let spans = piece_spans(&s);
        for _ in 0..1 + rng.below(3) {
            let (lo, hi) = spans[rng.below(spans.len() as u64) as usize];
            mutate(&mut rng, &mut s[lo..hi]);
        }
        let resealed = rng.below(2) == 1;
        if resealed {
            reseal(&mut s);
        }
        if rng.below(5) == 0 {
            s.truncate(rng.below(s.len() as u64) as usize);
        }
        let mut q = Pool::import(img.clone()).unwrap();
        let target = if incremental { "s/v" } else { "s/new" };
        if incremental {
            q.rollback("s/v@a").unwrap_or(());
        }
        let r = q.receive(target, &s);
        if s[..] == orig[..] {
            continue;
        }
        if !resealed && s.len() == orig.len() {
            assert!(r.is_err(), "an altered stream without a matching checksum was received");
        }
        // Whatever happened, the pool is consistent.
        if !q.state().eq("FAULTED") {
            q.verify(false).unwrap();
        }
    }
}

/// Regression: a forged stream FREEing a huge sparse range made receive
/// write zeros block by block over all of it (2^41 blocks here): it now
/// zeros only the blocks that hold data.
#[test]
fn huge_free_record_costs_what_it_frees() {
    let mut h = Writer::default();
    let volsize: u64 = 1 << 50;
    h.u32(0);
    h.u64(volsize);
    h.u32(512);
    h.u64(77);
    h.str("x");
    h.u64(0);
    let mut w = Writer::default();
    w.u8(1);
    w.u64(3);
    w.buf.extend_from_slice(&[9u8; 512]);
    w.u8(2);
    w.u64(0);
    w.u64(volsize / 512);
    w.u8(0);
    let mut p = Pool::create("s", vec![MemDisk::new(DISK)], 5).unwrap();
    p.receive("s/big", &framed(&[h.buf, w.buf])).unwrap();
    let mut b = vec![1u8; 4096];
    p.read("s/big@x", 0, &mut b).unwrap();
    assert!(b.iter().all(|&x| x == 0), "the FREE after the WRITE zeroed block 3");
    p.verify(false).unwrap();
}
