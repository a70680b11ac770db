//! The MOS (FORMAT.md "MOS"): the dataset directory and space map import
//! decodes from the newest uberblock's block. The fuzzer's bytes are either
//! a whole MOS (the pool guid and txg in its header set to the image's,
//! unless the first byte says otherwise) or byte edits to a real one (a
//! pool with volumes, a snapshot, a clone, a user property and a scan
//! record). They are decoded directly (`alcove_pool::fuzzing::decode_mos`),
//! then written as the MOS of that pool's image, checksummed and named by
//! its newest uberblock (a forger who can write the disk), and imported.
//!
//! Asserted: never a panic; what decodes keeps the space map whole and its
//! dataset ids under `next_id`; import takes the newest group exactly when
//! the decoder accepts its MOS (else an older group, or an error), and
//! lists the datasets it decoded (less hidden receives); reads, verify, a
//! write and a commit give errors or right answers, and what commits
//! imports again with the same datasets (the MOS round-trips).
#![no_main]

use std::sync::OnceLock;

use alcove_pool::format::{BLOCK, BlockPtr, LABELS, UB_SLOT, UB_SLOTS, Uberblock, asize_of, checksum_with, data_region, label_offset};
use alcove_pool::fuzzing::{MosSummary, decode_mos};
use alcove_pool::pool::RECV_SUFFIX;
use alcove_pool::{MemDisk, Pool};
use libfuzzer_sys::fuzz_target;

const DISK: usize = 2 << 20;
/// Largest MOS a run writes (the template's is a few hundred bytes).
const MAX_MOS: usize = 64 * 1024;

struct Template {
    img: Vec<u8>,
    asize: u64,
    guid: u64,
    ub: Uberblock,
    mos: Vec<u8>,
}

fn newest_ub(img: &[u8], asize: u64) -> Uberblock {
    let mut best: Option<Uberblock> = None;
    for l in 0..LABELS {
        let base = label_offset(asize, l) + BLOCK;
        for s in 0..UB_SLOTS {
            let at = (base + s * UB_SLOT) as usize;
            if let Ok(u) = Uberblock::decode(&img[at..at + UB_SLOT as usize])
                && best.is_none_or(|b| b.txg < u.txg)
            {
                best = Some(u);
            }
        }
    }
    best.expect("the template has an uberblock")
}

fn template() -> &'static Template {
    static T: OnceLock<Template> = OnceLock::new();
    T.get_or_init(|| {
        let mut p = Pool::create("f", vec![MemDisk::new(DISK)], 99).unwrap();
        p.create_volume("f/v", 512 * 1024, 4096).unwrap();
        p.create_volume("f/z", 64 * 1024, 8192).unwrap();
        p.set_prop("f/z", "compression", "lz4").unwrap();
        p.set_prop("f/v", "alcove:json", "{\"a\":1}").unwrap();
        for i in 0..6u64 {
            p.write("f/v", i * 40960, &[i as u8 + 1; 8192]).unwrap();
        }
        p.write("f/z", 0, &[7; 16384]).unwrap();
        p.sync().unwrap();
        p.snapshot("f/v@s").unwrap();
        p.write("f/v", 4096, &[9; 4096]).unwrap();
        p.clone_snapshot("f/v@s", "f/c").unwrap();
        p.sync().unwrap();
        p.scrub().unwrap();
        let guid = p.guid();
        let img = p.into_disks().remove(0).bytes;
        let asize = asize_of(DISK as u64);
        let ub = newest_ub(&img, asize);
        let mos = img[ub.mos.offset as usize..][..ub.mos.lsize as usize].to_vec();
        Template { img, asize, guid, ub, mos }
    })
}

/// `mos` as the newest group's MOS of a copy of the template's image: put
/// near the end of the data region (free in the template), checksummed, and
/// named by the newest uberblock resealed in every label.
fn forge(t: &Template, mos: &[u8]) -> Vec<u8> {
    let mut img = t.img.clone();
    let psize = mos.len().next_multiple_of(BLOCK as usize);
    let (_, end) = data_region(t.asize);
    let at = end as usize - MAX_MOS - BLOCK as usize;
    let mut block = mos.to_vec();
    block.resize(psize, 0);
    img[at..at + psize].copy_from_slice(&block);
    let bp = BlockPtr {
        offset: at as u64,
        psize: psize as u32,
        lsize: mos.len() as u32,
        checksum: checksum_with(t.ub.mos.cksum, &block),
        ..t.ub.mos
    };
    let enc = Uberblock { mos: bp, ..t.ub }.encode();
    for l in 0..LABELS {
        let at = Uberblock::slot_offset(label_offset(t.asize, l), t.ub.txg) as usize;
        img[at..at + enc.len()].copy_from_slice(&enc);
    }
    img
}

fn names(p: &Pool<MemDisk>) -> Vec<String> {
    p.list().into_iter().map(|d| d.name).collect()
}

/// What a decoded MOS must keep: the space map covers the data region, ids
/// are unique and under `next_id`, names unique.
fn check_summary(t: &Template, s: &MosSummary) {
    let (start, end) = data_region(t.asize);
    assert_eq!(s.allocated_bytes + s.free_bytes, end - start, "space map of {s:?}");
    let mut ids: Vec<u64> = s.datasets.iter().map(|d| d.0).collect();
    let mut ns: Vec<&String> = s.datasets.iter().map(|d| &d.1).collect();
    ids.sort();
    ids.dedup();
    ns.sort();
    ns.dedup();
    assert_eq!(ids.len(), s.datasets.len(), "dataset ids repeated");
    assert_eq!(ns.len(), s.datasets.len(), "dataset names repeated");
    assert!(s.datasets.iter().all(|d| d.0 != 0 && d.0 < s.next_id), "ids past next_id: {s:?}");
}

fuzz_target!(|data: &[u8]| {
    if data.is_empty() || data.len() > MAX_MOS {
        return;
    }
    let t = template();
    let mut mos;
    if data[0] & 1 == 0 {
        mos = data[1..].to_vec();
        if data[0] & 2 == 0 && mos.len() >= 28 {
            mos[12..20].copy_from_slice(&t.guid.to_le_bytes());
            mos[20..28].copy_from_slice(&t.ub.txg.to_le_bytes());
        }
    } else {
        // Edits to the real MOS: (offset u16, value) pairs, then a cut.
        mos = t.mos.clone();
        let edits = &data[1..];
        for e in edits.chunks_exact(3) {
            let at = usize::from(u16::from_le_bytes([e[0], e[1]])) % mos.len();
            mos[at] = e[2];
        }
        if data[0] & 2 != 0 && !edits.len().is_multiple_of(3) {
            let keep = mos.len() * usize::from(edits[edits.len() - 1]) / 256;
            mos.truncate(keep);
        }
    }
    let direct = decode_mos(&mos, t.guid, t.ub.txg, t.asize);
    if let Ok(s) = &direct {
        check_summary(t, s);
    }
    if mos.is_empty() {
        assert!(direct.is_err(), "an empty MOS decoded");
        return;
    }
    let Ok(mut p) = Pool::import(vec![MemDisk { bytes: forge(t, &mos) }]) else {
        return;
    };
    match &direct {
        Ok(s) => {
            assert_eq!(p.txg(), t.ub.txg, "the decoder took the MOS, import did not");
            let decoded: Vec<&String> = s.datasets.iter().map(|d| &d.1).collect();
            let listed = names(&p);
            assert!(listed.iter().all(|n| decoded.contains(&n)), "import lists {listed:?}, the MOS holds {decoded:?}");
            if !decoded.iter().any(|n| n.split('@').next().unwrap_or("").ends_with(RECV_SUFFIX)) {
                let mut visible: Vec<&String> = decoded;
                visible.sort();
                let mut l: Vec<&String> = listed.iter().collect();
                l.sort();
                assert_eq!(l, visible, "import lost datasets of a MOS with no partial receive");
            }
        }
        Err(e) => assert!(p.txg() < t.ub.txg, "import took a MOS the decoder refused ({e:?})"),
    }
    // What a hostile (but decodable) MOS leads to: errors, never a panic.
    let listed = p.list();
    for d in listed.iter().take(16) {
        let mut buf = vec![0u8; d.volsize.min(64 * 1024) as usize];
        let _ = p.read(&d.name, 0, &mut buf);
    }
    let _ = p.verify(false);
    for d in listed.iter().take(16) {
        if !d.snapshot && d.volsize >= 8192 && p.write(&d.name, 0, &[0x5a; 8192]).is_ok() {
            let mut b = vec![0u8; 8192];
            if p.read(&d.name, 0, &mut b).is_ok() {
                assert!(b.iter().all(|&x| x == 0x5a), "{}: a dirty write did not read back", d.name);
            }
        }
    }
    if p.sync().is_ok() {
        let before = p.list();
        let txg = p.txg();
        let q = Pool::import(p.into_disks()).expect("a pool that committed imports");
        assert_eq!(q.txg(), txg, "import did not take the group just committed");
        assert_eq!(q.list(), before, "datasets changed through a commit and an import");
    }
});
