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
//! as free. A write that would fail for want of the held space cancels the
//! scrub instead ([`ScrubEnd::CanceledForSpace`]).
//!
//! Each commit while a scrub runs records where it is ([`ScrubResume`], the
//! MOS's "scrub in progress" record): after a power cut or an export the
//! import resumes it from there, as ZFS does. The resumed walk reads the
//! trees of the group imported, in the same order, from the recorded
//! position, and counts only the blocks born by the group the scrub
//! started from (the later ones were checksummed as they were written).

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
    /// Its place in the walk's order ([`Pool::scrub_roots`]): the slot
    /// (phase, creation txg, id) a bookmark names, then its place in it.
    slot: Slot,
    sub: u64,
    /// A resumed walk: (depth, position) inside it.
    resume: Option<(u8, u64)>,
}

/// A slot of the walk's order: phase (1: a snapshot, 2: a volume, with the
/// snapshots of it made after the scrub started), creation txg, id. Phase
/// 0: no dataset walked yet. Inside a slot, a dataset's `sub` orders it:
/// the snapshots made after the scrub started by their creation txg, then
/// the slot's own dataset ([`OWN`]); a resumed walk keeps only the first
/// (the others skip every block born by the txg walked).
pub(super) type Slot = (u8, u64, u64);

/// The `sub` of a slot's own dataset.
const OWN: u64 = u64::MAX;

/// The deepest tree a bookmark may name (a volume's height is at most 4).
const MAX_DEPTH: u8 = 8;

/// Where a scrub under way is, as the commits record it in the MOS (FORMAT.md
/// "Scrub in progress"): what [`Pool::import`] resumes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScrubResume {
    /// When it started (seconds since 1970), the txg it walks.
    pub start: u64,
    pub txg: u64,
    /// What it walked, repaired and found so far, and the first
    /// [`SCAN_ERRORS_KEPT`] errors found.
    pub blocks: u64,
    pub bytes: u64,
    pub repaired: u64,
    pub errors_total: u64,
    pub errors: Vec<DataError>,
    /// Whether the walk's first block, the MOS, was walked.
    pub mos_done: bool,
    /// The dataset slot being walked, and the position in it: the frames
    /// open (0: the slot is done) and the next level-0 index to walk.
    pub slot: Slot,
    pub depth: u8,
    pub pos: u64,
}

impl ScrubResume {
    pub(super) fn encode(&self, w: &mut Writer) {
        for v in [self.start, self.txg, self.blocks, self.bytes, self.repaired, self.errors_total] {
            w.u64(v);
        }
        w.u8(self.mos_done as u8);
        w.u8(self.slot.0);
        w.u64(self.slot.1);
        w.u64(self.slot.2);
        w.u8(self.depth);
        w.u64(self.pos);
        encode_errors(w, &self.errors);
    }

    /// The record after its kind byte; `txg`: the MOS's.
    pub(super) fn decode(r: &mut Reader, txg: u64) -> Result<Self, String> {
        let e = |e: FormatError| format!("scrub in progress record: {e:?}");
        let mut v = [0u64; 6];
        for x in &mut v {
            *x = r.u64().map_err(e)?;
        }
        let [start, scanned, blocks, bytes, repaired, errors_total] = v;
        let mos_done = match r.u8().map_err(e)? {
            0 => false,
            1 => true,
            k => return Err(format!("scrub in progress record: mos_done {k} is not 0 or 1")),
        };
        let phase = r.u8().map_err(e)?;
        let slot = (phase, r.u64().map_err(e)?, r.u64().map_err(e)?);
        let depth = r.u8().map_err(e)?;
        let pos = r.u64().map_err(e)?;
        if phase > 2 || depth > MAX_DEPTH || (phase == 0 && (depth != 0 || slot != (0, 0, 0))) {
            return Err(format!("scrub in progress record: position (phase {phase}, depth {depth}) out of range"));
        }
        if scanned == 0 || scanned > txg || bytes < blocks {
            return Err(format!("scrub in progress record: txg {scanned} or counts out of range (MOS txg {txg})"));
        }
        let errors = decode_errors(r, errors_total).map_err(|s| format!("scrub in progress record: {s}"))?;
        Ok(ScrubResume { start, txg: scanned, blocks, bytes, repaired, errors_total, errors, mos_done, slot, depth, pos })
    }
}

/// A record's first errors: count, then dataset str, offset, len, block
/// u64, level u8 each.
pub(super) fn encode_errors(w: &mut Writer, errors: &[DataError]) {
    w.u64(errors.len() as u64);
    for e in errors {
        w.str(e.dataset.as_deref().unwrap_or(""));
        for v in [e.offset, e.len, e.block] {
            w.u64(v);
        }
        w.u8(e.level);
    }
}

pub(super) fn decode_errors(r: &mut Reader, errors_total: u64) -> Result<Vec<DataError>, String> {
    let e = |e: FormatError| format!("{e:?}");
    let n = r.count(29).map_err(e)?;
    if n > SCAN_ERRORS_KEPT || n as u64 > errors_total {
        return Err(format!("{n} errors listed, {errors_total} counted (at most {SCAN_ERRORS_KEPT} kept)"));
    }
    let mut errors = Vec::with_capacity(n);
    for _ in 0..n {
        let dataset = r.str().map_err(e)?;
        let (offset, len, block) = (r.u64().map_err(e)?, r.u64().map_err(e)?, r.u64().map_err(e)?);
        let level = r.u8().map_err(e)?;
        errors.push(DataError { dataset: (!dataset.is_empty()).then_some(dataset), offset, len, block, level });
    }
    Ok(errors)
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
    /// Blocks born after this txg are not walked (a resumed scrub reads
    /// the trees of a later group): the txg walked.
    max_birth: u64,
    /// Resumed after an import: what was repaired before it, the errors
    /// counted before it whose details were not kept.
    resumed: bool,
    repaired_before: u64,
    errors_lost: u64,
    /// Bytes walked when a commit last recorded the scrub.
    recorded_at: u64,
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
        let roots = self.scrub_roots(None)?;
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
            max_birth: report.txg,
            report,
            resumed: false,
            repaired_before: 0,
            errors_lost: 0,
            recorded_at: 0,
        }));
        self.scrub_canceled = None;
        Ok(())
    }

    /// The datasets to walk, last first: snapshots oldest first, then the
    /// volumes (the dataset whose blocks one skips is walked before it).
    /// `resumed_from`: the txg a resumed scrub walks; a snapshot made after
    /// it takes its volume's slot, before the volume (it holds what the
    /// volume held then), as ZFS moves a scrub's bookmark to a new snapshot.
    fn scrub_roots(&self, resumed_from: Option<u64>) -> Result<Vec<Root>, Error> {
        let mut roots = Vec::new();
        for d in self.datasets.values() {
            let max_birth = if d.snapshot { d.creation_txg } else { self.txg };
            if d.root.is_hole() {
                continue;
            }
            if d.root.level != d.height() || d.root.birth > max_birth {
                return Err(Error::Corrupt(format!("{}: root level {} birth {}", d.name, d.root.level, d.root.birth)));
            }
            let (slot, sub) = match (d.snapshot, resumed_from) {
                (true, Some(t)) if d.creation_txg > t => {
                    let h = self.datasets.get(&d.head).ok_or_else(|| Error::Corrupt(format!("{}: no head", d.name)))?;
                    ((2, h.creation_txg, h.id), d.creation_txg)
                }
                (true, _) => ((1, d.creation_txg, d.id), OWN),
                (false, _) => ((2, d.creation_txg, d.id), OWN),
            };
            let (volblocksize, volsize) = (u64::from(d.volblocksize), d.volsize);
            let min_birth = self.walked_before(d);
            if resumed_from.is_some_and(|t| min_birth >= t) {
                // Every block it holds born by the txg walked is in the
                // dataset before it (a snapshot made since, its volume's
                // blocks of then): nothing here to count.
                continue;
            }
            roots.push(Root { name: d.name.clone(), bp: d.root, volblocksize, volsize, min_birth, slot, sub, resume: None });
        }
        roots.sort_by_key(|r| (r.slot, r.sub));
        roots.reverse();
        Ok(roots)
    }

    /// Resumes the scrub `rec` records (at import): the trees of the group
    /// imported are walked from the recorded position, counting the blocks
    /// born by the txg it started from. Its space check is not made (the
    /// space map it would check is gone).
    pub(super) fn scrub_resume(&mut self, rec: ScrubResume) -> Result<(), Error> {
        let mut roots = self.scrub_roots(Some(rec.txg))?;
        if rec.slot.0 != 0 {
            // Walked before: the slots before the one recorded, and it if
            // it was done. The slot's one dataset left (its first, below)
            // goes on from the position: it holds what of the slot's tree
            // of then remains (a snapshot made since holds the volume's).
            roots.retain(|r| r.slot >= rec.slot && !(r.slot == rec.slot && rec.depth == 0));
            for r in roots.iter_mut().filter(|r| r.slot == rec.slot) {
                r.resume = Some((rec.depth, rec.pos));
            }
        }
        let mut alloc = Extents::new(self.guid);
        for (o, l) in self.space.allocated() {
            alloc.add(o, l);
        }
        let report = VerifyReport {
            txg: rec.txg,
            datasets: self.datasets.len(),
            blocks: rec.blocks,
            bytes: rec.bytes,
            errors: rec.errors.clone(),
            space_checked: false,
        };
        self.space.hold();
        self.scrub_run = Some(alloc::boxed::Box::new(ScrubRun {
            start: rec.start,
            total: (self.space.size() - self.space.free_bytes()).max(rec.bytes),
            repaired0: self.vdev.stats.iter().map(|s| s.repaired_bytes).sum(),
            alloc,
            refd: Extents::new(self.guid),
            dead: Vec::new(),
            dead_found: Vec::new(),
            mos: None,
            roots,
            current: None,
            stack: Vec::new(),
            bad: BTreeMap::new(),
            max_birth: rec.txg,
            report,
            resumed: true,
            repaired_before: rec.repaired,
            errors_lost: rec.errors_total - rec.errors.len() as u64,
            recorded_at: rec.bytes,
        }));
        Ok(())
    }

    /// Where the scrub under way is, for the commit's record (None: none).
    pub(super) fn scrub_bookmark(&self) -> Option<ScrubResume> {
        let run = self.scrub_run.as_ref()?;
        let mut errors: Vec<DataError> = run.report.errors.clone();
        let mut errors_total = errors.len() as u64 + run.errors_lost;
        let (mut slot, mut depth, mut pos) = ((0, 0, 0), 0u8, 0u64);
        if let Some(root) = &run.current {
            slot = root.slot;
            // The bad blocks the open frames hold are the current
            // dataset's: recorded now, as its errors (a resumed walk
            // starts those frames again empty).
            let mut base = 0u64;
            for (i, f) in run.stack.iter().enumerate() {
                for b in &f.bad {
                    let rel = base.saturating_add(b.rel);
                    let offset = rel.saturating_mul(root.volblocksize).min(root.volsize);
                    let end = rel.saturating_add(span(b.level)).saturating_mul(root.volblocksize).min(root.volsize);
                    errors.push(DataError { dataset: Some(root.name.clone()), offset, len: end - offset, block: b.block, level: b.level });
                    errors_total += 1;
                }
                if i + 1 < run.stack.len() {
                    base = base.saturating_add((f.next.saturating_sub(1) as u64).saturating_mul(span(f.bp.level.saturating_sub(1))));
                }
            }
            // The position: the next child of the deepest frame that has
            // one (frames whose children are all walked are done: the
            // resumed walk does not enter them again).
            let mut open = run.stack.len();
            while open > 0 && run.stack[open - 1].next >= run.stack[open - 1].children.len() {
                open -= 1;
            }
            let mut base = 0u64;
            for (i, f) in run.stack[..open].iter().enumerate() {
                let below = span(f.bp.level.saturating_sub(1));
                if i + 1 == open {
                    pos = base.saturating_add((f.next as u64).saturating_mul(below));
                } else {
                    base = base.saturating_add((f.next.saturating_sub(1) as u64).saturating_mul(below));
                }
            }
            depth = open.min(usize::from(MAX_DEPTH)) as u8;
        }
        errors.truncate(SCAN_ERRORS_KEPT);
        let repaired = self.vdev.stats.iter().map(|s| s.repaired_bytes).sum::<u64>().saturating_sub(run.repaired0);
        Some(ScrubResume {
            start: run.start,
            txg: run.report.txg,
            blocks: run.report.blocks,
            bytes: run.report.bytes,
            repaired: repaired.saturating_add(run.repaired_before),
            errors_total,
            errors,
            mos_done: run.mos.is_none(),
            slot,
            depth,
            pos,
        })
    }

    /// Takes note that a commit recorded the scrub under way.
    pub(super) fn scrub_recorded(&mut self) {
        if let Some(run) = self.scrub_run.as_mut() {
            run.recorded_at = run.report.bytes;
        }
    }

    /// How many bytes a scrub walks at most between two records of it: a
    /// [`Pool::scrub_step`] past it commits (so a quiet pool's scrub is
    /// resumed near where it was); 0: only the caller's commits record it.
    pub fn set_scrub_record_every(&mut self, bytes: u64) {
        self.scrub_record_every = bytes;
    }

    /// Walks about `budget` bytes more of the scrub under way (at least one
    /// block). `Ok(None)`: more remains; `Ok(Some(report))`: it finished,
    /// its record is committed ([`Pool::last_scrub`]). An error ends it.
    pub fn scrub_step(&mut self, budget: u64) -> Result<Option<VerifyReport>, Error> {
        let mut run = self.scrub_run.take().ok_or_else(|| Error::Invalid("no scrub is in progress".into()))?;
        let walked = self.check_live().and_then(|()| self.scrub_walk(&mut run, budget));
        match walked {
            Ok(false) => {
                let due = self.scrub_record_every != 0 && run.report.bytes - run.recorded_at >= self.scrub_record_every;
                self.scrub_run = Some(run);
                if due {
                    // A quiet pool commits nothing: record the scrub anyway.
                    self.sync()?;
                }
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
            errors: run.report.errors.len() as u64 + run.errors_lost,
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
                let (bp, resume) = (root.bp, root.resume);
                run.current = Some(root);
                match resume {
                    Some((depth, pos)) => self.scrub_reenter(run, depth, pos)?,
                    None => self.scrub_enter(run, bp)?,
                }
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
        if bp.birth > run.max_birth {
            // Born after the group walked (a resumed scrub reads the trees
            // imported): checked when written, not counted; what is below
            // may be older.
            if bp.level > 0 {
                if self.vdev.scrub_block(&bp).is_err() {
                    Self::scrub_done(run, vec![Bad { rel: 0, level: bp.level, block: bp.offset }]);
                } else {
                    let children = self.read_indirect(&bp)?;
                    run.stack.push(Frame { bp, children, next: 0, bad: Vec::new() });
                }
            }
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

    /// A resumed walk enters the current dataset at a recorded position:
    /// the `depth` blocks on the path to level-0 index `pos` were walked
    /// (counted) before the import: they are read again, not counted, and
    /// the walk goes on from `pos`.
    fn scrub_reenter(&mut self, run: &mut ScrubRun, depth: u8, pos: u64) -> Result<(), Error> {
        let Some(root) = run.current.as_ref() else { return Ok(()) };
        let (mut bp, min_birth, mut base) = (root.bp, root.min_birth, 0u64);
        for i in 0..depth {
            if bp.is_hole() || bp.level == 0 || bp.birth <= min_birth {
                // Nothing below, or walked in the dataset before.
                return Ok(());
            }
            if self.vdev.scrub_block(&bp).is_err() {
                Self::scrub_done(run, vec![Bad { rel: 0, level: bp.level, block: bp.offset }]);
                return Ok(());
            }
            let children = self.read_indirect(&bp)?;
            let below = span(bp.level - 1);
            let idx = usize::try_from(pos.saturating_sub(base) / below).unwrap_or(usize::MAX).min(children.len());
            if i + 1 == depth || idx >= children.len() {
                run.stack.push(Frame { bp, children, next: idx, bad: Vec::new() });
                return Ok(());
            }
            let child = children[idx];
            run.stack.push(Frame { bp, children, next: idx + 1, bad: Vec::new() });
            base = base.saturating_add(idx as u64 * below);
            bp = child;
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
        let ScrubRun { start, repaired0, alloc, refd, dead, dead_found, report, resumed, repaired_before, errors_lost, .. } = run;
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
        let repaired = self.vdev.stats.iter().map(|s| s.repaired_bytes).sum::<u64>() - repaired0 + repaired_before;
        self.last_scrub = Some(ScanRecord {
            start,
            end: (self.wall_clock)().max(start),
            txg: report.txg,
            blocks: report.blocks,
            bytes: report.bytes,
            repaired,
            errors_total: report.errors.len() as u64 + errors_lost,
            errors: report.errors.iter().take(SCAN_ERRORS_KEPT).cloned().collect(),
            space_checked: report.space_checked,
            resumed,
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
