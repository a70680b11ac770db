//! A scrub in steps: [`Pool::scrub_start`] fixes the committed group it
//! walks, [`Pool::scrub_step`] walks a bounded number of bytes of it and
//! returns, so that the caller serves other requests (and writes) between
//! steps, [`Pool::scrub_cancel`] stops it. ZFS's scrub runs in the
//! background the same way (`zpool scrub`, `zpool scrub -s`).
//!
//! Writes, snapshots, destroys and rollbacks go on while a scrub runs: the
//! walk reads the trees of the group it started from, and the space map
//! holds every block that group referenced ([`SpaceMap::hold`]): a block
//! freed by a later group is not handed out again until the scrub ends (or
//! is cancelled), so no block the walk still has to read is ever written
//! over. The hold lives in memory only: each commit writes the held blocks
//! as free, so a power cut or an export mid-scrub loses nothing but the
//! scrub (which is not resumed at import; the last finished scrub's record
//! stays). A write that would fail for want of the held space cancels the
//! scrub instead ([`ScrubEnd::CanceledForSpace`]).

use super::*;

/// The Mersenne prime 2^61 - 1: the field of [`Extents`]' fingerprint.
const FP_P: u64 = (1 << 61) - 1;

fn fp_mul(a: u64, b: u64) -> u64 {
    let x = u128::from(a) * u128::from(b);
    let r = (x as u64 & FP_P) + (x >> 61) as u64;
    let r = (r & FP_P) + (r >> 61);
    if r >= FP_P { r - FP_P } else { r }
}

fn fp_pow(mut r: u64, mut e: u64) -> u64 {
    let mut acc = 1u64;
    while e > 0 {
        if e & 1 == 1 {
            acc = fp_mul(acc, r);
        }
        r = fp_mul(r, r);
        e >>= 1;
    }
    acc
}

/// A set (multiset) of byte ranges in a few words, in place of a map of
/// every block: the bytes, the ranges, and sum of r^end - r^start mod
/// 2^61-1 over them, i.e. (r - 1) times the sum of r^x over every byte x
/// they cover. Two collections of ranges covering the same bytes the same
/// number of times have the same fingerprint however they are cut; ones that
/// differ (a byte leaked, a byte used twice, a block of another size) differ
/// in a polynomial in r of degree at most the pool's size (< 2^41), so for
/// an `r` the pool's contents did not choose they agree with probability
/// below 2^41 / 2^61 = 2^-20.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Extents {
    r: u64,
    sum: u64,
    bytes: u64,
}

impl Extents {
    pub(super) fn new(r: u64) -> Self {
        Extents { r: 2 + r % (FP_P - 3), sum: 0, bytes: 0 }
    }

    pub(super) fn add(&mut self, offset: u64, len: u64) {
        let hi = fp_pow(self.r, offset.saturating_add(len));
        let lo = fp_pow(self.r, offset);
        self.sum = (self.sum + hi + FP_P - lo) % FP_P;
        self.bytes = self.bytes.saturating_add(len);
    }
}

/// What a scrub under way has done so far (`zpool status`'s
/// `scrub in progress` lines).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScrubProgress {
    /// When it started, seconds since 1970 (0: the pool has no clock).
    pub start: u64,
    /// The committed txg it walks.
    pub txg: u64,
    /// Bytes walked, and bytes the group it walks has allocated.
    pub bytes: u64,
    pub total: u64,
    /// Bytes rewritten from a good copy so far, all disks together.
    pub repaired: u64,
    /// Permanent errors found so far.
    pub errors: u64,
    /// Bytes freed since it started that it keeps from reuse.
    pub held: u64,
}

/// Why a scrub that did not finish ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScrubEnd {
    /// [`Pool::scrub_cancel`] (`zpool scrub -s`).
    Canceled,
    /// A write needed the space the scrub held.
    CanceledForSpace,
    /// What it held grew past [`Pool::set_scrub_hold_limit`] extents (the
    /// caller's memory bound).
    CanceledForMemory,
}

/// A scrub that ended before its walk did (kept in memory for status).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScrubCanceled {
    pub start: u64,
    pub end: u64,
    pub bytes: u64,
    pub why: ScrubEnd,
}

/// An indirect block being walked: its children, the next one, and the
/// blocks with no good copy found below it so far.
struct Frame {
    bp: BlockPtr,
    children: Vec<BlockPtr>,
    next: usize,
    bad: Vec<Bad>,
}

/// A dataset's tree to walk: its name, root, block size and volsize, and
/// the birth at or below which its blocks were walked already (they belong
/// to the snapshot before it, walked first).
struct Root {
    name: String,
    bp: BlockPtr,
    volblocksize: u64,
    volsize: u64,
    min_birth: u64,
}

/// A scrub under way: where its walk is and what it found.
pub(super) struct ScrubRun {
    start: u64,
    total: u64,
    repaired0: u64,
    /// The fingerprint of the space map's allocated extents of the group
    /// walked, and of the blocks walked so far (each block once: a shared
    /// block is walked in the oldest dataset holding it, found by births,
    /// so no map of the blocks walked is kept): equal at the end.
    alloc: Extents,
    refd: Extents,
    /// Every deadlist entry of the group walked (offset, size, dataset),
    /// by offset, and whether the walk found it: each must be referenced.
    dead: Vec<(u64, u32, String)>,
    dead_found: Vec<bool>,
    mos: Option<BlockPtr>,
    /// Datasets not walked yet (the last first), the one being walked.
    roots: Vec<Root>,
    current: Option<Root>,
    stack: Vec<Frame>,
    /// The subtrees with blocks no copy of which is good, by offset (for
    /// the datasets sharing them): as many as the errors.
    bad: BTreeMap<u64, Vec<Bad>>,
    report: VerifyReport,
}

impl<D: Disk> Pool<D> {
    /// Starts a scrub of the pool as it is now (the open group is committed
    /// first); [`Pool::scrub_step`] walks it. A second scrub while one runs
    /// is refused ([`Error::Busy`]).
    pub fn scrub_start(&mut self) -> Result<(), Error> {
        self.check_live()?;
        if let Some(p) = self.scrub_progress() {
            return Err(Error::Busy(format!(
                "a scrub is in progress (txg {}, {} of {} bytes walked): wait for it or cancel it",
                p.txg, p.bytes, p.total
            )));
        }
        self.sync()?;
        let mut roots = Vec::new();
        for d in self.datasets.values() {
            let max_birth = if d.snapshot { d.creation_txg } else { self.txg };
            if d.root.is_hole() {
                continue;
            }
            if d.root.level != d.height() || d.root.birth > max_birth {
                return Err(Error::Corrupt(format!("{}: root level {} birth {}", d.name, d.root.level, d.root.birth)));
            }
            let (volblocksize, volsize) = (u64::from(d.volblocksize), d.volsize);
            let min_birth = self.walked_before(d);
            roots.push(Root { name: d.name.clone(), bp: d.root, volblocksize, volsize, min_birth });
        }
        // Snapshots oldest first, then the volumes: the dataset whose blocks
        // one skips is walked before it. Popped from the end.
        roots.sort_by_key(|r| {
            let d = self.datasets.values().find(|d| d.name == r.name);
            d.map_or((1, 0), |d| if d.snapshot { (0, d.creation_txg) } else { (1, d.creation_txg) })
        });
        roots.reverse();
        let mut dead: Vec<(u64, u32, String)> =
            self.datasets.values().flat_map(|d| d.deadlist.iter().map(|x| (x.offset, x.psize, d.name.clone()))).collect();
        dead.sort();
        let r = u64::from_le_bytes(checksum(&[self.guid.to_le_bytes(), self.txg.to_le_bytes(), (self.wall_clock)().to_le_bytes()].concat())[..8].try_into().unwrap_or([7; 8]));
        let mut alloc = Extents::new(r);
        for (o, l) in self.space.allocated() {
            alloc.add(o, l);
        }
        let mut refd = Extents::new(r);
        if self.log_head != 0 {
            // The log's first block: allocated, not checksummed by a pointer.
            refd.add(self.log_head, LOG_BLOCK);
        }
        let report = VerifyReport { txg: self.txg, datasets: self.datasets.len(), space_checked: true, ..Default::default() };
        self.space.hold();
        self.scrub_run = Some(alloc::boxed::Box::new(ScrubRun {
            start: (self.wall_clock)(),
            total: self.space.size() - self.space.free_bytes(),
            repaired0: self.vdev.stats.iter().map(|s| s.repaired_bytes).sum(),
            alloc,
            refd,
            dead_found: vec![false; dead.len()],
            dead,
            mos: Some(self.mos),
            roots,
            current: None,
            stack: Vec::new(),
            bad: BTreeMap::new(),
            report,
        }));
        self.scrub_canceled = None;
        Ok(())
    }

    /// Walks about `budget` bytes more of the scrub under way (at least one
    /// block). `Ok(None)`: more remains; `Ok(Some(report))`: it finished,
    /// its record is committed ([`Pool::last_scrub`]). An error ends it.
    pub fn scrub_step(&mut self, budget: u64) -> Result<Option<VerifyReport>, Error> {
        let mut run = self.scrub_run.take().ok_or_else(|| Error::Invalid("no scrub is in progress".into()))?;
        let walked = self.check_live().and_then(|()| self.scrub_walk(&mut run, budget));
        match walked {
            Ok(false) => {
                self.scrub_run = Some(run);
                Ok(None)
            }
            Ok(true) => {
                self.space.unhold();
                self.scrub_finish(*run).map(Some)
            }
            Err(e) => {
                self.space.unhold();
                Err(e)
            }
        }
    }

    /// Stops the scrub under way; false if none was. What it repaired
    /// stays repaired; the last finished scrub's record stays.
    pub fn scrub_cancel(&mut self) -> bool {
        self.end_scrub(ScrubEnd::Canceled)
    }

    pub(super) fn end_scrub(&mut self, why: ScrubEnd) -> bool {
        let Some(run) = self.scrub_run.take() else { return false };
        self.space.unhold();
        let end = (self.wall_clock)().max(run.start);
        self.scrub_canceled = Some(ScrubCanceled { start: run.start, end, bytes: run.report.bytes, why });
        true
    }

    /// Bounds the extents a scrub under way may hold from reuse (each is
    /// an entry in memory); past it, at a commit, the scrub is cancelled
    /// ([`ScrubEnd::CanceledForMemory`]). None: no bound.
    pub fn set_scrub_hold_limit(&mut self, extents: Option<usize>) {
        self.scrub_hold_limit = extents;
    }

    /// The scrub under way, if one is.
    pub fn scrub_progress(&self) -> Option<ScrubProgress> {
        let run = self.scrub_run.as_ref()?;
        let repaired = self.vdev.stats.iter().map(|s| s.repaired_bytes).sum::<u64>();
        Some(ScrubProgress {
            start: run.start,
            txg: run.report.txg,
            bytes: run.report.bytes,
            total: run.total,
            repaired: repaired.saturating_sub(run.repaired0),
            errors: run.report.errors.len() as u64,
            held: self.space.held_bytes(),
        })
    }

    /// The last scrub that ended before its walk did, since the pool was
    /// imported (None once a scrub finishes or starts).
    pub fn scrub_canceled(&self) -> Option<&ScrubCanceled> {
        self.scrub_canceled.as_ref()
    }

    /// Walks blocks until `budget` bytes are walked or the walk ends (true).
    fn scrub_walk(&mut self, run: &mut ScrubRun, budget: u64) -> Result<bool, Error> {
        let until = run.report.bytes.saturating_add(budget.max(1));
        while run.report.bytes < until {
            if let Some(mos) = run.mos.take() {
                if !self.scrub_visit(&mos, run)? {
                    run.report.errors.push(DataError { dataset: None, offset: 0, len: 0, block: mos.offset, level: mos.level });
                    run.report.space_checked = false;
                }
                continue;
            }
            let Some(top) = run.stack.last_mut() else {
                let Some(root) = run.roots.pop() else { return Ok(true) };
                let bp = root.bp;
                run.current = Some(root);
                self.scrub_enter(run, bp)?;
                continue;
            };
            if let Some(&c) = top.children.get(top.next) {
                top.next += 1;
                self.scrub_enter(run, c)?;
                continue;
            }
            let Some(f) = run.stack.pop() else { continue };
            if !f.bad.is_empty() {
                run.bad.insert(f.bp.offset, f.bad.clone());
            }
            Self::scrub_done(run, f.bad);
        }
        Ok(run.mos.is_none() && run.stack.is_empty() && run.roots.is_empty())
    }

    /// The birth at or below which `d`'s blocks belong to the dataset
    /// before it too (copy-on-write: a block born by then and still in `d`
    /// was in that dataset's tree): a volume's latest snapshot, a
    /// snapshot's previous one, a clone's origin; 0 for the first.
    fn walked_before(&self, d: &Dataset) -> u64 {
        if !d.snapshot {
            return d.prev_snap_txg;
        }
        let snaps = self.snapshots_of(d.head);
        match snaps.iter().position(|&s| s == d.id) {
            Some(i) if i > 0 => self.ds(snaps[i - 1]).creation_txg,
            _ => self.datasets.get(&d.head).and_then(|h| self.datasets.get(&h.origin)).map_or(0, |o| o.creation_txg),
        }
    }

    /// Visits `bp` (below the top frame, or a dataset's root): an indirect
    /// block whose copies are good becomes the top frame.
    fn scrub_enter(&mut self, run: &mut ScrubRun, bp: BlockPtr) -> Result<(), Error> {
        if bp.is_hole() {
            return Ok(());
        }
        if run.current.as_ref().is_some_and(|r| bp.birth <= r.min_birth) {
            // Shared with the dataset before, walked already (with all
            // below it: births only go down): what it found, again.
            let bad = run.bad.get(&bp.offset).cloned().unwrap_or_default();
            Self::scrub_done(run, bad);
            return Ok(());
        }
        if !self.scrub_visit(&bp, run)? {
            let bad = vec![Bad { rel: 0, level: bp.level, block: bp.offset }];
            if bp.level > 0 {
                // What lies below is out of reach: not checked, not counted.
                run.report.space_checked = false;
            }
            run.bad.insert(bp.offset, bad.clone());
            Self::scrub_done(run, bad);
        } else if bp.level > 0 {
            let children = self.read_indirect(&bp)?;
            run.stack.push(Frame { bp, children, next: 0, bad: Vec::new() });
        }
        Ok(())
    }

    /// A block (and all below it) is walked: its bad blocks go to the frame
    /// above, or, at a root, into the report as the dataset's errors.
    fn scrub_done(run: &mut ScrubRun, bad: Vec<Bad>) {
        if let Some(top) = run.stack.last_mut() {
            let i = top.next.saturating_sub(1) as u64;
            let below = span(top.bp.level.saturating_sub(1));
            for b in bad {
                let rel = b.rel.saturating_add(i.saturating_mul(below));
                top.bad.push(Bad { rel, ..b });
            }
            return;
        }
        let Some(root) = &run.current else { return };
        for b in bad {
            let offset = b.rel.saturating_mul(root.volblocksize).min(root.volsize);
            let end = b.rel.saturating_add(span(b.level)).saturating_mul(root.volblocksize).min(root.volsize);
            run.report.errors.push(DataError {
                dataset: Some(root.name.clone()),
                offset,
                len: end - offset,
                block: b.block,
                level: b.level,
            });
        }
    }

    /// Reads every copy of one block, repairs the bad ones; false when no
    /// copy is good.
    fn scrub_visit(&mut self, bp: &BlockPtr, run: &mut ScrubRun) -> Result<bool, Error> {
        if run.refd.bytes.saturating_add(u64::from(bp.psize)) > run.alloc.bytes {
            // A forged tree sharing blocks it should not: stop before the
            // walk goes past what is allocated.
            return Err(Error::Corrupt(format!("blocks referenced past the {} bytes allocated (at {:#x})", run.alloc.bytes, bp.offset)));
        }
        let good = self.vdev.scrub_block(bp).is_ok();
        run.refd.add(bp.offset, u64::from(bp.psize));
        if let Ok(i) = run.dead.binary_search_by(|(o, _, _)| o.cmp(&bp.offset)) {
            // Several entries at one offset: a forged deadlist; all marked,
            // the size checked.
            let mut j = i;
            while j > 0 && run.dead[j - 1].0 == bp.offset {
                j -= 1;
            }
            while j < run.dead.len() && run.dead[j].0 == bp.offset {
                if run.dead[j].1 == bp.psize {
                    run.dead_found[j] = true;
                }
                j += 1;
            }
        }
        run.report.blocks += 1;
        run.report.bytes += u64::from(bp.psize);
        Ok(good)
    }

    /// The walk is done: check the space map of the group walked against
    /// what it referenced, flush the repairs, commit the record.
    fn scrub_finish(&mut self, run: ScrubRun) -> Result<VerifyReport, Error> {
        let ScrubRun { start, repaired0, alloc, refd, dead, dead_found, report, .. } = run;
        if report.space_checked {
            if refd != alloc {
                return Err(Error::Corrupt(format!(
                    "space map disagrees with the blocks referenced ({} bytes allocated, {} referenced)",
                    alloc.bytes, refd.bytes
                )));
            }
            if let Some(((o, _, name), _)) = dead.iter().zip(&dead_found).find(|(_, f)| !**f) {
                return Err(Error::Corrupt(format!("{name}: deadlist block {o:#x} no longer referenced")));
            }
        }
        // The repairs are writes like any other: durable only once flushed.
        self.vdev.flush().map_err(|_| Error::Io("flush after scrub repairs".into()))?;
        let repaired = self.vdev.stats.iter().map(|s| s.repaired_bytes).sum::<u64>() - repaired0;
        self.last_scrub = Some(ScanRecord {
            start,
            end: (self.wall_clock)().max(start),
            txg: report.txg,
            blocks: report.blocks,
            bytes: report.bytes,
            repaired,
            errors_total: report.errors.len() as u64,
            errors: report.errors.iter().take(SCAN_ERRORS_KEPT).cloned().collect(),
            space_checked: report.space_checked,
        });
        // The record is the MOS's: a commit keeps it past an export.
        self.sync()?;
        Ok(report)
    }
}

/// Referenced extents (`seen`, coalesced) must be exactly the allocated
/// ones, and every deadlist entry must be referenced.
pub(super) fn check_space<'a>(
    seen: &BTreeMap<u64, u32>,
    alloc: &[(u64, u64)],
    dead: impl Iterator<Item = (&'a str, u64, u32)>,
) -> Result<(), Error> {
    let mut refd: Vec<(u64, u64)> = Vec::new();
    for (&o, &l) in seen {
        let l = u64::from(l);
        match refd.last_mut() {
            Some((po, pl)) if *po + *pl > o => return Err(Error::Corrupt(format!("blocks overlap at {o:#x}"))),
            Some((po, pl)) if *po + *pl == o => *pl += l,
            _ => refd.push((o, l)),
        }
    }
    if refd != alloc {
        let leaked: u64 = alloc.iter().map(|e| e.1).sum::<u64>().saturating_sub(refd.iter().map(|e| e.1).sum());
        return Err(Error::Corrupt(format!(
            "space map disagrees with the blocks referenced ({} allocated extents, {} referenced, {leaked} bytes leaked)",
            alloc.len(),
            refd.len()
        )));
    }
    for (name, offset, psize) in dead {
        if seen.get(&offset) != Some(&psize) {
            return Err(Error::Corrupt(format!("{name}: deadlist block {offset:#x} no longer referenced")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::Extents;

    fn fp(r: u64, ranges: &[(u64, u64)]) -> Extents {
        let mut e = Extents::new(r);
        for &(o, l) in ranges {
            e.add(o, l);
        }
        e
    }

    #[test]
    fn the_fingerprint_tells_the_bytes_covered_not_how_they_are_cut() {
        for r in [0, 1, 12345, u64::MAX] {
            let whole = fp(r, &[(4096, 65536), (1 << 40, 512)]);
            // The same bytes in other pieces, in another order: equal.
            assert_eq!(whole, fp(r, &[(1 << 40, 512), (4096 + 512, 65536 - 512), (4096, 512)]));
            // A byte range leaked, used twice, shifted, resized, or a leak
            // and a double use of the same size: all differ.
            for other in [
                &[(4096, 65536 - 512), (1 << 40, 512)][..],
                &[(4096, 65536), (1 << 40, 512), (8192, 512)],
                &[(4096 + 512, 65536), (1 << 40, 512)],
                &[(4096, 65536), (1 << 40, 1024)],
                &[(4096, 32768), (4096, 512), (4096 + 33280, 32256), (1 << 40, 512)],
            ] {
                assert_ne!(whole, fp(r, other), "r {r}: {other:?}");
            }
        }
    }
}
