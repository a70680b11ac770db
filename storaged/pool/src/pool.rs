//! The pool: datasets (volumes and their snapshots) as copy-on-write block
//! trees, the transaction group that commits them, and import.
//!
//! A volume's data is `volsize / volblocksize` blocks addressed by a tree of
//! indirect blocks of [`BP_PER_INDIRECT`] block pointers; a hole reads as
//! zeros (volumes are sparse). Writes land in the open group's dirty map;
//! [`Pool::sync`] writes the new blocks (never over a live one), the tree
//! paths above them, the MOS, flushes, writes the uberblock into every
//! label's ring and flushes again. A block the open group stops using is
//! freed only once the group is durable, or not at all while a snapshot
//! still references it: then it goes on the dataset's deadlist (ZFS's
//! birth-time rule, see FORMAT.md "Frees and snapshots").

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

use crate::disk::Disk;
use crate::format::*;
use crate::space::SpaceMap;
use crate::vdev::{ChildStats, Meter, Vdev};

#[cfg(feature = "fuzzing")]
pub mod fuzzing;
mod scrub;
mod send;

pub use send::{PIECE_MAX, PIECE_TARGET, RECV_SUFFIX, Receiver, SEND_MAGIC, STREAM_VERSION, SendCursor, piece_tag};

pub use scrub::{ScrubCanceled, ScrubEnd, ScrubProgress, ScrubResume};

/// Volumes at most this large (bytes).
pub const MAX_VOLSIZE: u64 = 1 << 50;
pub const DEFAULT_VOLBLOCKSIZE: u32 = 8192;
/// The native property that selects compression: `off` or `lz4`.
pub const PROP_COMPRESSION: &str = "compression";
/// Native space properties (bytes, or absent = none), ZFS's semantics for
/// volumes: `quota` bounds `used` (the volume, its snapshots' own blocks);
/// `reservation` guarantees `used` up to it; `refreservation` guarantees the
/// volume's unique (not snapshot-shared) blocks up to it.
pub const PROP_QUOTA: &str = "quota";
pub const PROP_RESERVATION: &str = "reservation";
pub const PROP_REFRESERVATION: &str = "refreservation";
/// The native property that selects the checksum of a volume's new data
/// blocks: `fletcher4`, `blake3` or `sha256` (absent or `on`: fletcher4,
/// as ZFS's; `off` is refused). Indirect blocks: [`crate::format::indirect_cksum`].
pub const PROP_CHECKSUM: &str = "checksum";
/// Indirect blocks the metadata cache holds by default (4 KiB each).
pub const DEFAULT_META_CACHE_BLOCKS: usize = 64;
/// A FLUSH whose records need more log blocks than this commits instead.
pub const LOG_MAX_BLOCKS_PER_FLUSH: usize = 4;
/// A group's log chain at most this long: past it a FLUSH commits.
pub const LOG_MAX_CHAIN: usize = 256;
const SPACE_PROPS: [&str; 3] = [PROP_QUOTA, PROP_RESERVATION, PROP_REFRESERVATION];

/// How long the open group may hold blocks before it commits without a
/// FLUSH or a bound (ZFS's `zfs_txg_timeout`, 5 s), in milliseconds.
pub const TXG_TIMEOUT_MS: u64 = 5000;

/// Commit by time, for the pool's caller (the pool has no clock of its own):
/// the open group commits once it has held blocks for `timeout`, so writes
/// nobody FLUSHes do not stay uncommitted (and their block pointers in
/// memory) for ever. The caller calls [`CommitTimer::tick`] whenever it runs,
/// with its clock's time in the unit of `timeout`.
#[derive(Debug, Clone, Copy)]
pub struct CommitTimer {
    /// When the caller first saw the open group holding blocks.
    opened: Option<u64>,
    pub timeout: u64,
}

impl CommitTimer {
    pub fn new(timeout: u64) -> Self {
        CommitTimer { opened: None, timeout }
    }

    /// Commits `pool`'s open group if it has held blocks for `timeout` or
    /// more by `now`; true if it committed. A group that commits for
    /// another reason (FLUSH past the log, the bound) starts the clock
    /// again at its next write.
    pub fn tick<D: Disk>(&mut self, pool: &mut Pool<D>, now: u64) -> Result<bool, Error> {
        if pool.dirty_blocks() == 0 {
            self.opened = None;
            return Ok(false);
        }
        let since = *self.opened.get_or_insert(now);
        if now.saturating_sub(since) < self.timeout {
            return Ok(false);
        }
        self.opened = None;
        pool.sync()?;
        Ok(true)
    }

    /// When (on the clock `tick` reads) the open group is due for its
    /// commit by time: `None` while `tick` has not seen it hold blocks.
    pub fn due(&self) -> Option<u64> {
        self.opened.map(|o| o.saturating_add(self.timeout))
    }
}

/// `none`, a byte count, or a number with a K/M/G/T suffix (powers of 1024).
pub fn parse_size(v: &str) -> Option<u64> {
    if v == "none" {
        return Some(0);
    }
    let (num, shift) = match v.as_bytes().last()? {
        b'K' | b'k' => (&v[..v.len() - 1], 10),
        b'M' | b'm' => (&v[..v.len() - 1], 20),
        b'G' | b'g' => (&v[..v.len() - 1], 30),
        b'T' | b't' => (&v[..v.len() - 1], 40),
        _ => (v, 0),
    };
    if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    num.parse::<u64>().ok()?.checked_mul(1u64 << shift)
}

/// A volume's space accounting, as `zfs get used,usedbydataset,...`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// usedbydataset + usedbysnapshots + usedbyrefreservation.
    pub used: u64,
    /// The volume's blocks not shared with its origin (freed if it and its
    /// snapshots were destroyed).
    pub usedbydataset: u64,
    /// Blocks only its snapshots still hold (the deadlists).
    pub usedbysnapshots: u64,
    /// refreservation − unique, when positive.
    pub usedbyrefreservation: u64,
    /// What the volume may still write: the pool's unreserved free space
    /// (plus its own unused reservation), bounded by its quota.
    pub available: u64,
    pub quota: u64,
    pub reservation: u64,
    pub refreservation: u64,
}

/// Cached per-volume figures (not on disk; recomputed by a tree walk).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Acct {
    /// Tree blocks born after the origin's txg.
    tree: u64,
    /// Tree blocks born after `prev_snap_txg` (no snapshot shares them).
    unique: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// A disk request failed (named), or the pool was suspended by an
    /// earlier failed commit.
    Io(String),
    /// A block could not be read from any copy: its checksum never matched.
    Checksum { offset: u64 },
    Format(String),
    NoSpace,
    NotFound(String),
    Exists(String),
    /// Refused while something depends on it (named).
    Busy(String),
    Invalid(String),
    /// Verify found the on-disk state inconsistent.
    Corrupt(String),
    /// A volume's `quota` would be exceeded (EDQUOT): what, by how much.
    Quota(String),
    /// Not enough unreserved space for a reservation, refreservation or a
    /// snapshot of a volume with a refreservation (ENOSPC, with the figures).
    Space(String),
    /// The open group already holds the caller's dirty bound: commit
    /// ([`Pool::sync`]) first, then retry.
    DirtyFull { dirty: u64, limit: u64 },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io(s) => write!(f, "I/O error: {s}"),
            Error::Checksum { offset } => write!(f, "checksum error: no good copy of the block at {offset:#x}"),
            Error::Format(s) => write!(f, "bad on-disk structure: {s}"),
            Error::NoSpace => write!(f, "out of space"),
            Error::NotFound(s) => write!(f, "{s}: no such dataset"),
            Error::Exists(s) => write!(f, "{s}: dataset already exists"),
            Error::Busy(s) => write!(f, "{s}"),
            Error::Invalid(s) => write!(f, "{s}"),
            Error::Corrupt(s) => write!(f, "pool corrupt: {s}"),
            Error::Quota(s) => write!(f, "disk quota exceeded: {s}"),
            Error::Space(s) => write!(f, "out of space: {s}"),
            Error::DirtyFull { dirty, limit } => {
                write!(f, "open transaction group holds {dirty} dirty bytes (limit {limit}): commit first")
            }
        }
    }
}

impl From<FormatError> for Error {
    fn from(e: FormatError) -> Self {
        Error::Format(format!("{e:?}"))
    }
}

/// A block a snapshot still references that its successor stopped using.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Dead {
    offset: u64,
    psize: u32,
    birth: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Dataset {
    id: u64,
    /// Names this dataset across pools: a received snapshot keeps its
    /// source's, so an incremental stream finds its base by it.
    guid: u64,
    name: String,
    snapshot: bool,
    /// For a snapshot: the volume it belongs to. For a volume: itself.
    head: u64,
    volsize: u64,
    volblocksize: u32,
    root: BlockPtr,
    creation_txg: u64,
    /// When it was made, seconds since 1970 (0: unknown, a pool written
    /// without a clock or before MOS version 2).
    creation: u64,
    /// For a clone: the snapshot it was made from (0: none).
    origin: u64,
    /// Volumes: the txg of the newest snapshot whose blocks it shares (its
    /// latest snapshot, else its origin's, else 0). Blocks born after it are
    /// the volume's alone.
    prev_snap_txg: u64,
    deadlist: Vec<Dead>,
    props: BTreeMap<String, String>,
}

impl Dataset {
    fn nblocks(&self) -> u64 {
        self.volsize / u64::from(self.volblocksize)
    }
    fn height(&self) -> u8 {
        height(self.nblocks())
    }
}

/// Levels of indirect blocks above data for `nblocks` blocks.
fn height(nblocks: u64) -> u8 {
    let mut h = 0;
    let mut span = 1u64;
    while span < nblocks {
        span = span.saturating_mul(BP_PER_INDIRECT);
        h += 1;
    }
    h
}

fn span(level: u8) -> u64 {
    BP_PER_INDIRECT.saturating_pow(u32::from(level))
}

/// What [`Pool::list`] and [`Pool::get`] report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetInfo {
    pub name: String,
    pub guid: u64,
    pub snapshot: bool,
    pub volsize: u64,
    pub volblocksize: u32,
    pub creation_txg: u64,
    /// Seconds since 1970 (`zfs get -p creation`); 0: unknown.
    pub creation: u64,
    pub origin: Option<String>,
    pub props: BTreeMap<String, String>,
}

/// A dataset's space, as `zfs get referenced,logicalreferenced,compressratio`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpaceInfo {
    pub referenced: u64,
    pub logical: u64,
}

impl SpaceInfo {
    /// logical / referenced, in hundredths (`compressratio` 1.00x = 100).
    pub fn compressratio_x100(&self) -> u64 {
        (self.logical * 100).checked_div(self.referenced).unwrap_or(100)
    }
}

/// What a full verify or a scrub found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    pub txg: u64,
    pub datasets: usize,
    pub blocks: u64,
    pub bytes: u64,
    /// Scrub only: the permanent errors (`zpool status -v`), blocks no copy
    /// of which matched its checksum, once per dataset whose tree holds
    /// the block (a block shared by a snapshot and its volume is named for
    /// both). A verify stops at the first such block instead.
    pub errors: Vec<DataError>,
    /// Scrub only: false when an unreadable indirect block (or the MOS)
    /// hid the blocks below it, so the space map could not be checked
    /// against them (the other blocks were all walked).
    pub space_checked: bool,
}

/// How many bytes a scrub walks at most between two records of where it
/// is ([`Pool::set_scrub_record_every`]).
pub const SCRUB_RECORD_EVERY: u64 = 64 << 20;

/// How many of a scrub's permanent errors the MOS keeps (`errors_total`
/// counts them all), as ZFS's error log keeps a bounded list.
pub const SCAN_ERRORS_KEPT: usize = 32;

/// The last scrub, as the MOS keeps it (`zpool status`'s scan line).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanRecord {
    /// When it started and ended, seconds since 1970 (0: the pool had no
    /// clock).
    pub start: u64,
    pub end: u64,
    /// The committed txg it walked.
    pub txg: u64,
    pub blocks: u64,
    pub bytes: u64,
    /// Bytes rewritten from a good copy, all disks together.
    pub repaired: u64,
    /// Permanent errors found, and the first [`SCAN_ERRORS_KEPT`] of them.
    pub errors_total: u64,
    pub errors: Vec<DataError>,
    /// False when an unreadable indirect block hid blocks from the walk,
    /// or when the scrub was resumed after an import.
    pub space_checked: bool,
    /// It was resumed after an import (MOS version 3): its space check
    /// was not made (the space map of the group it walked was gone).
    pub resumed: bool,
}

/// A block no copy of which matched its checksum, and what it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataError {
    /// The volume or snapshot whose tree holds the block; `None`: the
    /// pool's own metadata (the MOS).
    pub dataset: Option<String>,
    /// The bytes of the volume the block holds (an indirect block: every
    /// block below it; those not readable through it), as `offset..offset+len`.
    pub offset: u64,
    pub len: u64,
    /// Where the block lies on the disks, and its level (0: data).
    pub block: u64,
    pub level: u8,
}

impl fmt::Display for DataError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.dataset {
            None => write!(f, "<metadata> (pool metadata block at {:#x})", self.block),
            Some(d) => {
                let what = if self.level == 0 { "data block" } else { "indirect block" };
                write!(f, "{d} bytes {}..{} ({what} at {:#x})", self.offset, self.offset + self.len, self.block)
            }
        }
    }
}

/// How often a scrub tells its progress: every 16 MiB walked.
const PROGRESS_EVERY: u64 = 16 << 20;

/// A verify's or a scrub's walk: what it has seen and found.
struct Scan<'a> {
    scrub: bool,
    /// Told (bytes walked, bytes allocated) every [`PROGRESS_EVERY`] bytes.
    progress: Option<&'a mut dyn FnMut(u64, u64)>,
    next_progress: u64,
    allocated: u64,
    /// Every block visited: offset, size.
    seen: BTreeMap<u64, u32>,
    /// Blocks at or above a block with no good copy: the bad ones below
    /// each ([`Bad`]), so that a dataset sharing the block names them too.
    bad: BTreeMap<u64, Vec<Bad>>,
    report: VerifyReport,
}

/// A block with no good copy, below (or at) the block a walk started
/// from: its first data block counted from there, its level, its offset.
#[derive(Clone, Copy)]
struct Bad {
    rel: u64,
    level: u8,
    block: u64,
}


/// `zones/<uuid>-disk<N>`: the name SmartOS gives an instance's disk.
pub fn volume_name(pool: &str, uuid: &str, disk: u32) -> String {
    format!("{pool}/{uuid}-disk{disk}")
}

fn valid_component(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_NAME && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
}

pub struct Pool<D: Disk> {
    vdev: Vdev<D>,
    name: String,
    guid: u64,
    /// The last committed transaction group.
    txg: u64,
    space: SpaceMap,
    datasets: BTreeMap<u64, Dataset>,
    /// Per volume: the open group's blocks, already written to fresh
    /// space (a hole for a block of zeros), not yet in the tree.
    dirty: BTreeMap<u64, BTreeMap<u64, BlockPtr>>,
    next_id: u64,
    mos: BlockPtr,
    /// A commit failed part way: nothing more is written until re-import.
    suspended: bool,
    /// Children the labels list (more than present: degraded).
    children_total: usize,
    /// Per volume: what its dirty blocks may add to its `used` (quota).
    dirty_charge: BTreeMap<u64, u64>,
    /// Per volume: [`Acct`], filled on demand, kept up to date by commits.
    acct: BTreeMap<u64, Acct>,
    /// The caller's bound on dirty bytes in the open group (None: no bound).
    dirty_limit: Option<u64>,
    /// The caller's bound on the open group's blocks (its memory: a block
    /// pointer each, whatever the block size).
    dirty_block_limit: Option<u64>,
    /// The caller's bound on the bytes of every dataset's user properties
    /// together (keys and values): they live in the MOS, which is held in
    /// memory and encoded whole at each commit.
    user_props_limit: Option<usize>,
    meta_cache: MetaCache,
    /// The intent log (FORMAT.md "Intent log"): the committed uberblock's
    /// log block (0: none).
    log_head: u64,
    /// Where this group's next log block goes (allocated already); 0: the
    /// log cannot take records this group, a FLUSH commits.
    log_next: u64,
    log_seq: u64,
    /// Every log block this group holds (the head, those written, the next
    /// one): freed once the group commits.
    log_blocks: Vec<u64>,
    /// The open group's blocks written since the last log write; the
    /// others' block pointers are in the log (replacing one defers its
    /// free to the commit: a replay reads it).
    unlogged: BTreeSet<(u64, u64)>,
    /// Records the import replayed from the log.
    replayed: u64,
    /// Of those, records whose data block failed its checksum at replay (a
    /// version 3 log: the block was durable before the log named it, so it
    /// was damaged since): replayed all the same, their reads fail.
    replayed_damaged: u64,
    /// The last scrub (`zpool status`'s scan line and errors), kept in the
    /// MOS: it survives an export and import.
    last_scrub: Option<ScanRecord>,
    /// The scrub under way ([`Pool::scrub_start`]), in memory only.
    scrub_run: Option<alloc::boxed::Box<scrub::ScrubRun>>,
    /// The last scrub that ended before its walk did (status only).
    scrub_canceled: Option<ScrubCanceled>,
    /// [`Pool::set_scrub_hold_limit`].
    scrub_hold_limit: Option<usize>,
    /// [`Pool::set_scrub_record_every`].
    scrub_record_every: u64,
    /// The receive [`Pool::receive_open`] keeps for a caller that cannot
    /// hold a [`Receiver`] (the image store's `PoolOps`).
    held_receive: Option<send::Receiver>,
    /// Seconds since 1970 for `creation` and the scan times (the host tool
    /// reads the system's clock, storaged the kernel's).
    wall_clock: fn() -> u64,
}

/// A clock for a pool that has none: every time reads 0 (unknown).
fn no_clock() -> u64 {
    0
}

/// Recently used indirect blocks, verified, keyed by where they are and
/// what they hash to: a block at the same offset with the same checksum
/// has the same bytes, so nothing needs invalidating when space is reused.
/// Reads and the commit's copy-on-write find a volume's tree path here
/// instead of reading (and hashing) it again for every block.
struct MetaCache {
    entries: Vec<CachedBlock>,
    capacity: usize,
    stamp: u64,
}

struct CachedBlock {
    offset: u64,
    checksum: Checksum,
    used: u64,
    bytes: Vec<u8>,
}

impl MetaCache {
    fn new(capacity: usize) -> Self {
        MetaCache { entries: Vec::new(), capacity, stamp: 0 }
    }

    fn get(&mut self, bp: &BlockPtr) -> Option<&[u8]> {
        self.stamp += 1;
        let stamp = self.stamp;
        let e = self.entries.iter_mut().find(|e| e.offset == bp.offset && e.checksum == bp.checksum)?;
        e.used = stamp;
        Some(&e.bytes)
    }

    fn put(&mut self, bp: &BlockPtr, bytes: &[u8]) {
        self.stamp += 1;
        if let Some(e) = self.entries.iter_mut().find(|e| e.offset == bp.offset) {
            e.checksum = bp.checksum;
            e.used = self.stamp;
            e.bytes.clear();
            e.bytes.extend_from_slice(bytes);
            return;
        }
        if self.entries.len() >= self.capacity {
            let lru = self.entries.iter().enumerate().min_by_key(|(_, e)| e.used).map_or(0, |(i, _)| i);
            self.entries.swap_remove(lru);
        }
        self.entries.push(CachedBlock { offset: bp.offset, checksum: bp.checksum, used: self.stamp, bytes: bytes.to_vec() });
    }

    fn resize(&mut self, capacity: usize) {
        self.capacity = capacity;
        while self.entries.len() > capacity {
            let lru = self.entries.iter().enumerate().min_by_key(|(_, e)| e.used).map_or(0, |(i, _)| i);
            self.entries.swap_remove(lru);
        }
    }
}

/// What the write and read paths need of a volume, without copying its
/// deadlist and properties for every request.
#[derive(Debug, Clone, Copy)]
struct View {
    id: u64,
    volsize: u64,
    volblocksize: u32,
    root: BlockPtr,
    snapshot: bool,
    prev_snap_txg: u64,
    quota: u64,
    compress: bool,
    cksum: u8,
}

impl View {
    fn height(&self) -> u8 {
        height(self.volsize / u64::from(self.volblocksize))
    }
}

impl<D: Disk> Pool<D> {
    /// Makes a new pool on blank `disks` (one disk, or an n-way mirror).
    /// `guid` names the pool (the caller's entropy: the tool uses the time).
    pub fn create(name: &str, mut disks: Vec<D>, guid: u64) -> Result<Self, Error> {
        if !valid_component(name) {
            return Err(Error::Invalid(format!("pool name {name:?}: use letters, digits and -_.:")));
        }
        if disks.is_empty() || disks.len() > MAX_CHILDREN {
            return Err(Error::Invalid(format!("a pool takes 1 to {MAX_CHILDREN} disks, got {}", disks.len())));
        }
        let asize = disks.iter().map(|d| asize_of(d.size())).min().unwrap_or(0);
        if asize < MIN_DISK {
            return Err(Error::Invalid(format!("disk too small: {asize} bytes, need {MIN_DISK}")));
        }
        let children: Vec<u64> = (0..disks.len() as u64).map(|i| mix(guid ^ mix(i + 1))).collect();
        for (i, d) in disks.iter_mut().enumerate() {
            let h = LabelHeader {
                pool_guid: guid,
                pool_name: name.to_string(),
                vdev_guid: children[i],
                child: i as u32,
                children: children.clone(),
                asize,
            };
            for l in 0..LABELS {
                d.write(label_offset(asize, l), &h.encode(l as u32)).map_err(|_| Error::Io(format!("disk {i}: label write")))?;
            }
            d.flush().map_err(|_| Error::Io(format!("disk {i}: flush")))?;
        }
        let (start, end) = data_region(asize);
        let mut pool = Pool {
            vdev: Vdev::new(disks, asize),
            name: name.to_string(),
            guid,
            txg: 0,
            space: SpaceMap::new(start, end),
            datasets: BTreeMap::new(),
            dirty: BTreeMap::new(),
            next_id: 1,
            mos: BlockPtr::HOLE,
            suspended: false,
            children_total: children.len(),
            dirty_charge: BTreeMap::new(),
            acct: BTreeMap::new(),
            dirty_limit: None,
            dirty_block_limit: None,
            user_props_limit: None,
            meta_cache: MetaCache::new(DEFAULT_META_CACHE_BLOCKS),
            log_head: 0,
            log_next: 0,
            log_seq: 0,
            log_blocks: Vec::new(),
            unlogged: BTreeSet::new(),
            replayed: 0,
            replayed_damaged: 0,
            last_scrub: None,
            scrub_run: None,
            scrub_canceled: None,
            scrub_hold_limit: None,
            scrub_record_every: SCRUB_RECORD_EVERY,
            held_receive: None,
            wall_clock: no_clock,
        };
        pool.sync()?;
        Ok(pool)
    }

    /// Imports the pool on `disks` (any order): labels say who is who, and
    /// the highest uberblock whose checksum and MOS verify wins.
    pub fn import(disks: Vec<D>) -> Result<Self, Error> {
        let mut found: Vec<(LabelHeader, D)> = Vec::new();
        for (i, mut d) in disks.into_iter().enumerate() {
            let h = read_label(&mut d).ok_or_else(|| Error::Invalid(format!("disk {i}: no pool label; left untouched")))?;
            if let Some((first, _)) = found.first()
                && (first.pool_guid != h.pool_guid || first.children != h.children)
            {
                return Err(Error::Invalid(format!("disk {i}: belongs to another pool ({})", h.pool_name)));
            }
            if found.iter().any(|(o, _)| o.child == h.child) {
                return Err(Error::Invalid(format!("disk {i}: given twice (child {})", h.child)));
            }
            found.push((h, d));
        }
        found.sort_by_key(|(h, _)| h.child);
        let Some((first, _)) = found.first() else { return Err(Error::Invalid("no disks".into())) };
        let (guid, name, asize) = (first.pool_guid, first.pool_name.clone(), first.asize);
        let children_total = first.children.len();
        if found.iter().any(|(h, d)| h.asize != asize || asize_of(d.size()) < asize) {
            return Err(Error::Invalid("disks disagree on the pool's size".into()));
        }
        let disks: Vec<D> = found.into_iter().map(|(_, d)| d).collect();
        let mut vdev = Vdev::new(disks, asize);
        let mut ubs: Vec<Uberblock> = Vec::new();
        let mut slot = vec![0u8; UB_SLOT as usize];
        for c in 0..vdev.children.len() {
            for l in 0..LABELS {
                let base = label_offset(asize, l);
                for s in 0..UB_SLOTS {
                    if vdev.children[c].read(base + BLOCK + s * UB_SLOT, &mut slot).is_err() {
                        continue;
                    }
                    if let Ok(ub) = Uberblock::decode(&slot)
                        && ub.pool_guid == guid
                        && !ubs.contains(&ub)
                    {
                        ubs.push(ub);
                    }
                }
            }
        }
        ubs.sort_by_key(|u| core::cmp::Reverse(u.txg));
        let mut last_err = Error::Corrupt("no valid uberblock".into());
        for ub in ubs {
            let mos = match vdev.read_block(&ub.mos) {
                Ok(b) => b,
                Err(_) => {
                    last_err = Error::Checksum { offset: ub.mos.offset };
                    continue;
                }
            };
            match decode_mos(&mos[..ub.mos.lsize as usize], guid, ub.txg, asize) {
                Ok(Mos { datasets, space, next_id, scan, scrub }) => {
                    let mut pool = Pool {
                        vdev,
                        name,
                        guid,
                        txg: ub.txg,
                        space,
                        datasets,
                        dirty: BTreeMap::new(),
                        next_id,
                        mos: ub.mos,
                        suspended: false,
                        children_total,
                        dirty_charge: BTreeMap::new(),
                        acct: BTreeMap::new(),
                        dirty_limit: None,
                        dirty_block_limit: None,
                        user_props_limit: None,
                        meta_cache: MetaCache::new(DEFAULT_META_CACHE_BLOCKS),
                        log_head: 0,
                        log_next: 0,
                        log_seq: 0,
                        log_blocks: Vec::new(),
                        unlogged: BTreeSet::new(),
                        replayed: 0,
                        replayed_damaged: 0,
                        last_scrub: scan,
                        scrub_run: None,
                        scrub_canceled: None,
                        scrub_hold_limit: None,
                        scrub_record_every: SCRUB_RECORD_EVERY,
                        held_receive: None,
                        wall_clock: no_clock,
                    };
                    if let Some(rec) = scrub {
                        // A scrub was under way at the last commit: it goes
                        // on from where that commit recorded it (before the
                        // log's writes, which it then holds from reuse).
                        pool.scrub_resume(rec)?;
                    }
                    pool.replay_log(ub.log);
                    pool.destroy_partial_receives();
                    return Ok(pool);
                }
                Err(e) => last_err = e,
            }
        }
        Err(last_err)
    }

    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn guid(&self) -> u64 {
        self.guid
    }
    /// The last committed transaction group.
    pub fn txg(&self) -> u64 {
        self.txg
    }
    /// `zpool status`'s state: ONLINE, DEGRADED (a mirror child missing or
    /// erroring), FAULTED (a commit failed: suspended).
    pub fn state(&self) -> &'static str {
        if self.suspended {
            "FAULTED"
        } else if self.vdev.children.len() < self.children_total
            || self.vdev.stats.iter().any(|s| s.read_errors + s.write_errors > 0)
        {
            "DEGRADED"
        } else {
            "ONLINE"
        }
    }
    /// Children the labels name (present or not).
    pub fn children_total(&self) -> usize {
        self.children_total
    }
    pub fn child_stats(&self) -> &[ChildStats] {
        &self.vdev.stats
    }
    /// Where the pool's time went so far (counts; ticks with a clock).
    pub fn meter(&self) -> Meter {
        self.vdev.metered.meter
    }
    /// The tick counter [`Pool::meter`]'s `*_ticks` read (none: 0).
    pub fn set_clock(&mut self, clock: Option<fn() -> u64>) {
        self.vdev.metered.clock = clock;
    }
    /// How many indirect blocks (4 KiB each) the metadata cache keeps
    /// ([`DEFAULT_META_CACHE_BLOCKS`] unless told; at least 1).
    pub fn set_meta_cache_blocks(&mut self, blocks: usize) {
        self.meta_cache.resize(blocks.max(1));
    }
    pub fn free_bytes(&self) -> u64 {
        self.space.free_bytes()
    }
    pub fn size_bytes(&self) -> u64 {
        self.space.size()
    }
    /// Intent-log records the import replayed (FLUSHed writes whose group
    /// had not committed): they sit in the open group until the next commit.
    pub fn log_replayed(&self) -> u64 {
        self.replayed
    }
    /// Replayed records whose data block failed its checksum (damaged after
    /// its FLUSH was acknowledged): the block reads as an I/O error, never as
    /// the data before the write, and the next scrub names it.
    pub fn log_replayed_damaged(&self) -> u64 {
        self.replayed_damaged
    }
    /// Where the committed group's intent log starts (0: none).
    pub fn log_head(&self) -> u64 {
        self.log_head
    }
    /// Gives the disks back (export).
    pub fn into_disks(self) -> Vec<D> {
        self.vdev.children
    }
    /// The disks, for fault injection in tests.
    pub fn disks_mut(&mut self) -> &mut [D] {
        &mut self.vdev.children
    }

    fn check_live(&self) -> Result<(), Error> {
        if self.suspended {
            return Err(Error::Io("pool suspended after a failed commit; import it again".into()));
        }
        Ok(())
    }

    fn new_guid(&self, id: u64) -> u64 {
        mix(self.guid ^ mix(id ^ (self.txg << 24)))
    }

    fn id_of(&self, name: &str) -> Result<u64, Error> {
        self.datasets.values().find(|d| d.name == name).map(|d| d.id).ok_or_else(|| Error::NotFound(name.to_string()))
    }

    fn ds(&self, id: u64) -> &Dataset {
        &self.datasets[&id]
    }

    fn view(&self, id: u64) -> View {
        let d = self.ds(id);
        View {
            id,
            volsize: d.volsize,
            volblocksize: d.volblocksize,
            root: d.root,
            snapshot: d.snapshot,
            prev_snap_txg: d.prev_snap_txg,
            quota: Self::space_prop(d, PROP_QUOTA),
            compress: d.props.get(PROP_COMPRESSION).is_some_and(|v| v == "lz4"),
            cksum: Self::cksum_of(d),
        }
    }

    /// The checksum function of `d`'s new data blocks.
    fn cksum_of(d: &Dataset) -> u8 {
        d.props.get(PROP_CHECKSUM).and_then(|v| cksum_from_name(v)).unwrap_or(CKSUM_FLETCHER4)
    }

    fn check_new_volume_name(&self, name: &str) -> Result<(), Error> {
        let comp = name.strip_prefix(&self.name).and_then(|r| r.strip_prefix('/'));
        if !comp.is_some_and(valid_component) {
            return Err(Error::Invalid(format!("volume name {name:?}: must be {}/NAME with letters, digits and -_.:", self.name)));
        }
        if self.datasets.values().any(|d| d.name == name) {
            return Err(Error::Exists(name.to_string()));
        }
        Ok(())
    }

    /// A new sparse volume, committed before it returns.
    pub fn create_volume(&mut self, name: &str, volsize: u64, volblocksize: u32) -> Result<(), Error> {
        self.check_live()?;
        self.check_new_volume_name(name)?;
        self.create_volume_named(name, volsize, volblocksize)
    }

    /// [`Pool::create_volume`] without the name's check (a receive's hidden
    /// volume).
    fn create_volume_named(&mut self, name: &str, volsize: u64, volblocksize: u32) -> Result<(), Error> {
        if self.datasets.values().any(|d| d.name == name) {
            return Err(Error::Exists(name.to_string()));
        }
        if !volblocksize.is_power_of_two() || !(512..=131072).contains(&volblocksize) {
            return Err(Error::Invalid(format!("volblocksize {volblocksize}: must be a power of two from 512 to 128K")));
        }
        if volsize == 0 || !volsize.is_multiple_of(u64::from(volblocksize)) || volsize > MAX_VOLSIZE {
            return Err(Error::Invalid(format!(
                "volsize {volsize}: must be a non-zero multiple of volblocksize ({volblocksize}) up to {MAX_VOLSIZE}"
            )));
        }
        let id = self.next_id;
        self.next_id += 1;
        self.datasets.insert(
            id,
            Dataset {
                id,
                guid: self.new_guid(id),
                name: name.to_string(),
                snapshot: false,
                head: id,
                volsize,
                volblocksize,
                root: BlockPtr::HOLE,
                creation_txg: self.txg + 1,
                creation: (self.wall_clock)(),
                origin: 0,
                prev_snap_txg: 0,
                deadlist: Vec::new(),
                props: BTreeMap::new(),
            },
        );
        self.sync()
    }

    /// Every dataset but the hidden volumes of receives under way.
    pub fn list(&self) -> Vec<DatasetInfo> {
        self.datasets.values().filter(|d| !d.name.split('@').next().unwrap_or("").ends_with(send::RECV_SUFFIX)).map(|d| self.info(d)).collect()
    }

    /// A dataset by name (not the hidden volume of a receive under way).
    pub fn get(&self, name: &str) -> Result<DatasetInfo, Error> {
        if name.split('@').next().unwrap_or("").ends_with(send::RECV_SUFFIX) {
            return Err(Error::NotFound(name.to_string()));
        }
        Ok(self.info(self.ds(self.id_of(name)?)))
    }

    fn info(&self, d: &Dataset) -> DatasetInfo {
        DatasetInfo {
            name: d.name.clone(),
            guid: d.guid,
            snapshot: d.snapshot,
            volsize: d.volsize,
            volblocksize: d.volblocksize,
            creation_txg: d.creation_txg,
            creation: d.creation,
            origin: self.datasets.get(&d.origin).map(|o| o.name.clone()),
            props: d.props.clone(),
        }
    }

    /// Sets `compression` (`off` | `lz4`), `checksum` (`on` | `fletcher4` |
    /// `blake3` | `sha256`; `off` is refused; both for blocks written from
    /// now on), a space property or
    /// a user property (`module:key`), committed with the next group.
    pub fn set_prop(&mut self, name: &str, key: &str, value: &str) -> Result<(), Error> {
        self.check_live()?;
        let id = self.id_of(name)?;
        if self.ds(id).snapshot {
            return Err(Error::Invalid(format!("{name}: snapshots are read-only")));
        }
        if key == PROP_COMPRESSION {
            if value != "off" && value != "lz4" {
                return Err(Error::Invalid(format!("property \"compression\": must be off or lz4, got {value:?}")));
            }
            if let Some(d) = self.datasets.get_mut(&id) {
                d.props.insert(key.to_string(), value.to_string());
            }
            return Ok(());
        }
        if key == PROP_CHECKSUM {
            if cksum_from_name(value).is_none() {
                return Err(Error::Invalid(cksum_refusal(value)));
            }
            if let Some(d) = self.datasets.get_mut(&id) {
                d.props.insert(key.to_string(), value.to_string());
            }
            return Ok(());
        }
        if SPACE_PROPS.contains(&key) {
            return self.set_space_prop(id, key, value);
        }
        self.set_user_prop(name, key, value)
    }

    fn set_space_prop(&mut self, id: u64, key: &str, value: &str) -> Result<(), Error> {
        let name = self.ds(id).name.clone();
        let v = parse_size(value)
            .ok_or_else(|| Error::Invalid(format!("property {key:?}: a size in bytes (or with K, M, G, T) or none, got {value:?}")))?;
        let u = self.usage_of(id)?;
        let (quota, res) = match key {
            PROP_QUOTA => (v, u.reservation),
            PROP_RESERVATION => (u.quota, v),
            _ => (u.quota, u.reservation),
        };
        if key == PROP_QUOTA && v != 0 && v < u.used - u.usedbyrefreservation {
            return Err(Error::Invalid(format!("{name}: quota {v} is less than the {} bytes already used", u.used)));
        }
        if quota != 0 && res > quota {
            return Err(Error::Invalid(format!("{name}: reservation {res} is larger than quota {quota}")));
        }
        if key != PROP_QUOTA {
            let a = self.acct(id)?;
            let data = u.usedbydataset + u.usedbysnapshots;
            let (r, rr) = if key == PROP_RESERVATION { (v, u.refreservation) } else { (u.reservation, v) };
            let new_held = held(r, rr, data, a.unique);
            let old_held = held(u.reservation, u.refreservation, data, a.unique);
            let spare = self.unreserved()?;
            if new_held > old_held && new_held - old_held > spare {
                return Err(Error::Space(format!(
                    "{name}: {key}={v} needs {} bytes more than the pool's {spare} unreserved bytes",
                    new_held - old_held - spare
                )));
            }
        }
        if let Some(d) = self.datasets.get_mut(&id) {
            if v == 0 {
                d.props.remove(key);
            } else {
                d.props.insert(key.to_string(), v.to_string());
            }
        }
        Ok(())
    }

    fn space_prop(d: &Dataset, key: &str) -> u64 {
        d.props.get(key).and_then(|v| parse_size(v)).unwrap_or(0)
    }

    /// The volume's [`Acct`], by a walk of its tree the first time.
    fn acct(&mut self, id: u64) -> Result<Acct, Error> {
        if let Some(a) = self.acct.get(&id) {
            return Ok(*a);
        }
        let d = self.ds(id).clone();
        let origin_txg = self.origin_txg(&d);
        let mut a = Acct::default();
        self.acct_walk(d.root, origin_txg, d.prev_snap_txg, &mut a)?;
        self.acct.insert(id, a);
        Ok(a)
    }

    fn acct_walk(&mut self, bp: BlockPtr, origin_txg: u64, prev_snap_txg: u64, a: &mut Acct) -> Result<(), Error> {
        if bp.is_hole() || bp.birth <= origin_txg {
            return Ok(());
        }
        a.tree += u64::from(bp.psize);
        if bp.birth > prev_snap_txg {
            a.unique += u64::from(bp.psize);
        }
        if bp.level > 0 {
            for c in self.read_indirect(&bp)? {
                self.acct_walk(c, origin_txg, prev_snap_txg, a)?;
            }
        }
        Ok(())
    }

    fn origin_txg(&self, d: &Dataset) -> u64 {
        self.datasets.get(&d.origin).map_or(0, |o| o.creation_txg)
    }

    /// usedbysnapshots: deadlist blocks of the volume and its snapshots
    /// born after its origin (older ones are the origin's).
    fn snap_used(&self, id: u64) -> u64 {
        let origin_txg = self.origin_txg(self.ds(id));
        let mut ids = self.snapshots_of(id);
        ids.push(id);
        ids.iter()
            .flat_map(|i| self.ds(*i).deadlist.iter())
            .filter(|x| x.birth > origin_txg)
            .map(|x| u64::from(x.psize))
            .sum()
    }

    fn usage_of(&mut self, id: u64) -> Result<Usage, Error> {
        let a = self.acct(id)?;
        let d = self.ds(id).clone();
        let snaps = self.snap_used(id);
        let (quota, reservation, refreservation) =
            (Self::space_prop(&d, PROP_QUOTA), Self::space_prop(&d, PROP_RESERVATION), Self::space_prop(&d, PROP_REFRESERVATION));
        let byref = refreservation.saturating_sub(a.unique);
        let data = a.tree + snaps;
        let own = held(reservation, refreservation, data, a.unique).saturating_sub(self.dirty_cost(id, 0));
        let mut available = self.unreserved()? + own;
        if quota != 0 {
            available = available.min(quota.saturating_sub(data + self.dirty_charge.get(&id).copied().unwrap_or(0)));
        }
        Ok(Usage {
            used: data + byref,
            usedbydataset: a.tree,
            usedbysnapshots: snaps,
            usedbyrefreservation: byref,
            available,
            quota,
            reservation,
            refreservation,
        })
    }

    /// `used`, `usedbydataset`, `usedbysnapshots`, `usedbyrefreservation`,
    /// `available` and the space properties of a volume (a snapshot: its
    /// volume's).
    pub fn usage(&mut self, name: &str) -> Result<Usage, Error> {
        let id = self.id_of(name)?;
        let head = self.ds(id).head;
        self.usage_of(head)
    }

    /// Worst-case commit cost of a volume's dirty blocks (and `extra` more).
    fn dirty_cost(&self, id: u64, extra: u64) -> u64 {
        let d = self.ds(id);
        let per_block = u64::from(d.volblocksize) + u64::from(d.height()) * INDIRECT_SIZE as u64;
        (self.dirty.get(&id).map_or(0, |m| m.len() as u64) + extra) * per_block
    }

    /// Space every volume's reservations hold back, less what their own
    /// dirty blocks will use of it (counted at their worst-case cost, as
    /// the commit check counts them), with `extra` new blocks of one.
    fn reserved(&mut self, extra: Option<(u64, u64)>) -> Result<u64, Error> {
        let ids: Vec<u64> = self
            .datasets
            .values()
            .filter(|d| !d.snapshot && (d.props.contains_key(PROP_RESERVATION) || d.props.contains_key(PROP_REFRESERVATION)))
            .map(|d| d.id)
            .collect();
        let mut total = 0u64;
        for id in ids {
            let a = self.acct(id)?;
            let d = self.ds(id);
            let h = held(Self::space_prop(d, PROP_RESERVATION), Self::space_prop(d, PROP_REFRESERVATION), a.tree + self.snap_used(id), a.unique);
            let more = extra.filter(|e| e.0 == id).map_or(0, |e| e.1);
            total += h.saturating_sub(self.dirty_cost(id, more));
        }
        Ok(total)
    }

    /// Free space neither reserved nor needed by the open group's commit.
    fn unreserved(&mut self) -> Result<u64, Error> {
        let need = self.commit_need(0, None);
        let reserved = self.reserved(None)?;
        Ok(self.space.free_bytes().saturating_sub(need + reserved))
    }

    /// Bytes of data the open group holds in memory.
    pub fn dirty_bytes(&self) -> u64 {
        self.dirty.iter().map(|(id, m)| m.len() as u64 * u64::from(self.ds(*id).volblocksize)).sum()
    }

    /// Bounds the open group's dirty bytes: a write that would pass `limit`
    /// is refused with [`Error::DirtyFull`] (nothing written) until the
    /// caller commits. A write into an empty group always goes in, so one
    /// request larger than the bound still makes progress. `None`: no bound.
    pub fn set_dirty_limit(&mut self, limit: Option<u64>) {
        self.dirty_limit = limit;
    }

    pub fn dirty_limit(&self) -> Option<u64> {
        self.dirty_limit
    }

    /// Blocks the open group holds (a block pointer each in memory).
    pub fn dirty_blocks(&self) -> u64 {
        self.dirty.values().map(|m| m.len() as u64).sum()
    }

    /// Bounds the open group's blocks as [`Pool::set_dirty_limit`] bounds
    /// its bytes (a write past it is refused with [`Error::DirtyFull`]):
    /// what the group costs in memory, whatever the volumes' block sizes.
    pub fn set_dirty_block_limit(&mut self, limit: Option<u64>) {
        self.dirty_block_limit = limit;
    }

    /// Bounds the bytes of all datasets' user properties together (keys
    /// and values; `None`: no bound). A `set_user_prop` past it is refused
    /// ([`Error::Space`]); what is there already stays.
    pub fn set_user_props_limit(&mut self, limit: Option<usize>) {
        self.user_props_limit = limit;
    }

    /// Bytes of all datasets' user properties (keys and values).
    pub fn user_props_bytes(&self) -> usize {
        self.datasets.values().flat_map(|d| d.props.iter()).filter(|(k, _)| k.contains(':')).map(|(k, v)| k.len() + v.len()).sum()
    }

    /// Sets a user property (`module:key`), committed with the next group.
    pub fn set_user_prop(&mut self, name: &str, key: &str, value: &str) -> Result<(), Error> {
        self.check_live()?;
        let id = self.id_of(name)?;
        if !key.contains(':') || !valid_component(key) || value.len() > 8 * 1024 {
            return Err(Error::Invalid(format!("property {key:?}: user properties are module:key, values up to 8 KiB")));
        }
        if let Some(limit) = self.user_props_limit {
            let old = self.datasets.get(&id).and_then(|d| d.props.get(key)).map_or(0, |v| key.len() + v.len());
            let total = self.user_props_bytes() - old + key.len() + value.len();
            if total > limit {
                return Err(Error::Space(format!(
                    "property {key:?}: the pool's user properties would take {total} bytes, more than the {limit} it holds"
                )));
            }
        }
        if let Some(d) = self.datasets.get_mut(&id) {
            d.props.insert(key.to_string(), value.to_string());
        }
        Ok(())
    }

    fn check_range(&self, v: &View, offset: u64, len: usize) -> Result<(), Error> {
        let end = offset.checked_add(len as u64);
        if !offset.is_multiple_of(SECTOR) || !(len as u64).is_multiple_of(SECTOR) || end.is_none_or(|e| e > v.volsize) {
            return Err(Error::Invalid(format!(
                "{}: request at {offset} of {len} bytes: must be 512-byte aligned within volsize {}",
                self.ds(v.id).name,
                v.volsize
            )));
        }
        Ok(())
    }

    /// The open group's block `blk` of volume `id`, if it wrote one.
    fn dirty_bp(&self, id: u64, blk: u64) -> Option<BlockPtr> {
        self.dirty.get(&id).and_then(|m| m.get(&blk)).copied()
    }

    /// Reads from a volume or a snapshot. Whole blocks that lie end to end
    /// on disk are read with one request and verified block by block.
    pub fn read(&mut self, name: &str, offset: u64, buf: &mut [u8]) -> Result<(), Error> {
        let id = self.id_of(name)?;
        let v = self.view(id);
        self.check_range(&v, offset, buf.len())?;
        let bs = u64::from(v.volblocksize);
        let direct = bs.is_multiple_of(BLOCK);
        // A run of whole, uncompressed blocks laid end to end: where it
        // starts in `buf`, and their block pointers.
        let mut run: Vec<BlockPtr> = Vec::new();
        let mut run_at = 0usize;
        let mut at = 0usize;
        while at < buf.len() {
            let pos = offset + at as u64;
            let blk = pos / bs;
            let within = (pos % bs) as usize;
            let n = (bs as usize - within).min(buf.len() - at);
            let bp = match self.dirty_bp(id, blk) {
                Some(bp) => bp,
                None => self.lookup(&v, blk)?,
            };
            if !bp.is_hole() && (bp.lsize != v.volblocksize || bp.kind != BlockKind::Data as u8) {
                return Err(Error::Corrupt(format!("{name}: block {blk} has size {} kind {}", bp.lsize, bp.kind)));
            }
            let whole = direct && n == bs as usize && !bp.is_hole() && bp.comp == COMP_OFF && u64::from(bp.psize) == bs;
            let extends = run.last().is_some_and(|l| l.offset + u64::from(l.psize) == bp.offset);
            if !run.is_empty() && !(whole && extends) {
                self.read_run(&run, &mut buf[run_at..at])?;
                run.clear();
            }
            if whole {
                if run.is_empty() {
                    run_at = at;
                }
                run.push(bp);
            } else if bp.is_hole() {
                buf[at..at + n].fill(0);
            } else {
                let block = self.read_data(&bp)?;
                buf[at..at + n].copy_from_slice(&block[within..within + n]);
            }
            at += n;
        }
        if !run.is_empty() {
            self.read_run(&run, &mut buf[run_at..])?;
        }
        Ok(())
    }

    fn read_run(&mut self, run: &[BlockPtr], buf: &mut [u8]) -> Result<(), Error> {
        self.vdev.read_run(run, buf).map_err(|_| Error::Checksum { offset: run[0].offset })
    }

    /// Writes to a volume; durable after the next [`Pool::sync`].
    ///
    /// The data goes to disk now, to freshly allocated space that no
    /// committed group references (a power cut before the commit leaves it
    /// unreferenced, free at import); the open group keeps only the new
    /// block pointers, and the commit writes the tree above them. Whole
    /// blocks of a request that lie end to end go out in one disk request.
    pub fn write(&mut self, name: &str, offset: u64, data: &[u8]) -> Result<(), Error> {
        self.check_live()?;
        let id = self.id_of(name)?;
        let v = self.view(id);
        if v.snapshot {
            return Err(Error::Invalid(format!("{name}: snapshots are read-only")));
        }
        self.check_range(&v, offset, data.len())?;
        let bs = u64::from(v.volblocksize);
        let new: Vec<u64> = {
            let dirty = self.dirty.get(&id);
            let first = offset / bs;
            let last = (offset + data.len() as u64).div_ceil(bs);
            (first..last).filter(|b| dirty.is_none_or(|m| !m.contains_key(b))).collect()
        };
        let new_blocks = new.len() as u64;
        if let Some(limit) = self.dirty_limit {
            let dirty = self.dirty_bytes();
            if dirty > 0 && dirty + new_blocks * bs > limit {
                return Err(Error::DirtyFull { dirty, limit });
            }
        }
        if let Some(limit) = self.dirty_block_limit {
            let blocks = self.dirty_blocks();
            if blocks > 0 && blocks + new_blocks > limit {
                return Err(Error::DirtyFull { dirty: self.dirty_bytes(), limit: limit * bs });
            }
        }
        // What the new dirty blocks may add to the volume's `used`: a block
        // only this volume holds is replaced, one a snapshot shares is not.
        let mut charge = 0u64;
        for &b in &new {
            let old = if v.quota != 0 { self.lookup(&v, b)? } else { BlockPtr::HOLE };
            let freed = if !old.is_hole() && old.birth > v.prev_snap_txg { u64::from(old.psize) } else { 0 };
            charge += bs.saturating_sub(freed);
        }
        if v.quota != 0 {
            let quota = v.quota;
            let a = self.acct(id)?;
            let used = a.tree + self.snap_used(id);
            let pending = self.dirty_charge.get(&id).copied().unwrap_or(0);
            if used + pending + charge > quota {
                return Err(Error::Quota(format!(
                    "{name}: quota {quota}, used {used}, {pending} bytes pending, this write needs {charge}"
                )));
            }
        }
        self.reserve(new_blocks, id)?;
        *self.dirty_charge.entry(id).or_default() += charge;
        let txg = self.txg + 1;
        // Whole, non-zero blocks written as they are (no compression) are
        // gathered into one run: [run_first, run_first + run_len) blocks.
        let runs = bs.is_multiple_of(BLOCK) && !v.compress;
        let (mut run_first, mut run_len, mut run_at) = (0u64, 0u64, 0usize);
        let mut at = 0usize;
        while at < data.len() {
            let pos = offset + at as u64;
            let blk = pos / bs;
            let within = (pos % bs) as usize;
            let n = (bs as usize - within).min(data.len() - at);
            let piece = &data[at..at + n];
            let whole = n == bs as usize;
            if runs && whole && !is_zero(piece) {
                if run_len == 0 {
                    (run_first, run_at) = (blk, at);
                }
                run_len += 1;
            } else {
                if run_len > 0 {
                    self.write_run(&v, run_first, &data[run_at..at], txg)?;
                    run_len = 0;
                }
                if whole {
                    self.put_block(&v, blk, piece, txg)?;
                } else {
                    let mut block = self.block_contents(&v, blk)?;
                    block[within..within + n].copy_from_slice(piece);
                    self.put_block(&v, blk, &block, txg)?;
                }
            }
            at += n;
        }
        if run_len > 0 {
            self.write_run(&v, run_first, &data[run_at..], txg)?;
        }
        Ok(())
    }

    /// The open group's new block `blk` of `v` (a hole when all zeros),
    /// written to fresh space; the one it replaces in the group is freed.
    fn put_block(&mut self, v: &View, blk: u64, contents: &[u8], txg: u64) -> Result<(), Error> {
        let bp = if is_zero(contents) { BlockPtr::HOLE } else { self.write_data(contents, v.compress, v.cksum, txg)? };
        self.set_dirty(v.id, blk, bp);
        Ok(())
    }

    /// Whole blocks `first..` of `v` (`data` is a multiple of the block
    /// size) in one extent and one disk request, each block checksummed on
    /// its own; block by block when no extent that large is free.
    fn write_run(&mut self, v: &View, first: u64, data: &[u8], txg: u64) -> Result<(), Error> {
        let bs = v.volblocksize as usize;
        let Some(offset) = self.space.alloc(data.len() as u64) else {
            for (i, block) in data.chunks(bs).enumerate() {
                self.put_block(v, first + i as u64, block, txg)?;
            }
            return Ok(());
        };
        let mut bps = Vec::with_capacity(data.len() / bs);
        for (i, block) in data.chunks(bs).enumerate() {
            let checksum = self.vdev.metered.checksum(v.cksum, block);
            bps.push(BlockPtr {
                offset: offset + (i * bs) as u64,
                psize: bs as u32,
                lsize: bs as u32,
                birth: txg,
                kind: BlockKind::Data as u8,
                comp: COMP_OFF,
                level: 0,
                cksum: v.cksum,
                checksum,
            });
        }
        self.disk_write(offset, data)?;
        for (i, bp) in bps.into_iter().enumerate() {
            self.set_dirty(v.id, first + i as u64, bp);
        }
        Ok(())
    }

    /// Records `bp` as block `blk` of volume `id` in the open group; the
    /// block it replaces there (never referenced by a committed group) is
    /// free at once, or at the commit if the intent log names it (a replay
    /// after a power cut reads it).
    fn set_dirty(&mut self, id: u64, blk: u64, bp: BlockPtr) {
        let logged = self.unlogged.insert((id, blk));
        if let Some(old) = self.dirty.entry(id).or_default().insert(blk, bp)
            && !old.is_hole()
        {
            self.release_dirty(old, logged);
        }
    }

    /// Frees a block the open group wrote and no longer uses: at once, or
    /// at the commit if the log names it.
    fn release_dirty(&mut self, bp: BlockPtr, logged: bool) {
        if !logged {
            self.space.free_now(bp.offset, u64::from(bp.psize));
        } else if !self.space.defer_free(bp.offset, u64::from(bp.psize)) {
            // Allocated when written and named once: cannot happen; if it
            // did, keeping the space leaks it until import, never shares it.
        }
    }

    /// Makes every write so far durable, as a guest's FLUSH asks: its
    /// blocks' pointers go into the intent log (one log write and one
    /// flush barrier: the data is on disk already), or, when the log cannot
    /// take them (no log this group, too many records, a long chain, no
    /// space), the group commits ([`Pool::sync`]).
    pub fn flush(&mut self) -> Result<(), Error> {
        self.check_live()?;
        if self.unlogged.is_empty() {
            return Ok(());
        }
        let nblocks = self.unlogged.len().div_ceil(LOG_RECORDS_PER_BLOCK);
        if self.log_next == 0
            || nblocks > LOG_MAX_BLOCKS_PER_FLUSH
            || self.log_blocks.len() + nblocks > LOG_MAX_CHAIN
        {
            return self.sync();
        }
        let mut places = vec![self.log_next];
        for _ in 0..nblocks {
            match self.space.alloc(LOG_BLOCK) {
                Some(o) => places.push(o),
                None => break,
            }
        }
        if places.len() != nblocks + 1 || self.space.free_bytes() < self.commit_need(0, None) {
            for &o in &places[1..] {
                self.space.free_now(o, LOG_BLOCK);
            }
            return self.sync();
        }
        self.log_blocks.extend_from_slice(&places[1..]);
        // The data first: a log block is written only once every block it
        // names is durable, so a replay that finds a sealed (version 3) log
        // block knows its data reached the disk and a block that then fails
        // its checksum was damaged, not torn (one more barrier a FLUSH).
        if self.vdev.flush().is_err() {
            self.suspended = true;
            return Err(Error::Io("flush before the intent log write".into()));
        }
        // One log block at a time (storaged's heap holds one, not all).
        let keys: Vec<(u64, u64)> = self.unlogged.iter().copied().collect();
        for (i, chunk) in keys.chunks(LOG_RECORDS_PER_BLOCK).enumerate() {
            let mut records = Vec::with_capacity(chunk.len());
            records.extend(chunk.iter().filter_map(|&(id, blk)| {
                self.dirty_bp(id, blk).map(|bp| LogRecord {
                    volume: id,
                    block: blk,
                    bp,
                })
            }));
            let lb = LogBlock {
                pool_guid: self.guid,
                txg: self.txg,
                seq: self.log_seq + i as u64,
                next: places[i + 1],
                records,
                version: crate::format::LOG_VERSION,
            };
            self.disk_write(places[i], &lb.encode())?;
        }
        if self.vdev.flush().is_err() {
            self.suspended = true;
            return Err(Error::Io("flush after the intent log write".into()));
        }
        self.log_next = places[nblocks];
        self.log_seq += nblocks as u64;
        self.unlogged.clear();
        self.vdev.metered.meter.log_blocks += nblocks as u64;
        self.vdev.metered.meter.log_flushes += 1;
        Ok(())
    }

    /// Replays the intent log that starts at `head` (the uberblock's) into
    /// the open group: block by block while each is sealed, names this
    /// pool, this txg and the next sequence number, and every block its
    /// records name reads back with its checksum from space the committed
    /// group holds free. The first that fails ends the log (a FLUSH was
    /// acknowledged only after its log block and data were flushed, so
    /// what follows was never acknowledged), except a data block of a
    /// version 3 log block that fails its checksum: it was durable before
    /// the log block was written, so it was damaged since; its record is
    /// replayed (its reads fail, never returning older data) and counted,
    /// and the replay goes on to the FLUSHes after it. The replayed blocks and the
    /// log's own stay allocated until the next commit; this session writes
    /// no log of this generation (its first FLUSH commits), so a chain
    /// never mixes two sessions' blocks.
    fn replay_log(&mut self, head: u64) {
        self.log_head = 0;
        if head == 0 || !self.space.is_allocated(head, LOG_BLOCK) {
            return;
        }
        self.log_head = head;
        self.log_blocks.push(head);
        let (guid, txg) = (self.guid, self.txg);
        let mut at = head;
        for seq in 0..LOG_MAX_CHAIN as u64 {
            let Some(lb) = self.vdev.read_any(at, LOG_BLOCK as usize, |b| {
                LogBlock::decode(b)
                    .ok()
                    .filter(|lb| lb.pool_guid == guid && lb.txg == txg && lb.seq == seq)
            }) else {
                break;
            };
            let mut space = self.space.clone();
            let mut ok = true;
            let mut damaged = 0;
            for r in &lb.records {
                let Some(d) = self.datasets.get(&r.volume) else {
                    ok = false;
                    break;
                };
                if d.snapshot || r.block >= d.nblocks() {
                    ok = false;
                    break;
                }
                if r.bp.is_hole() {
                    continue;
                }
                if r.bp.lsize != d.volblocksize
                    || r.bp.birth != txg + 1
                    || !space.claim(r.bp.offset, u64::from(r.bp.psize))
                {
                    ok = false;
                    break;
                }
                if self.vdev.read_block(&r.bp).is_err() {
                    if lb.version >= 3 {
                        damaged += 1;
                        continue;
                    }
                    ok = false;
                    break;
                }
            }
            if !ok || !space.claim(lb.next, LOG_BLOCK) {
                break;
            }
            self.space = space;
            self.replayed_damaged += damaged;
            for r in lb.records {
                let bs = u64::from(self.ds(r.volume).volblocksize);
                match self
                    .dirty
                    .entry(r.volume)
                    .or_default()
                    .insert(r.block, r.bp)
                {
                    Some(old) if !old.is_hole() => self.release_dirty(old, true),
                    Some(_) => {}
                    None => *self.dirty_charge.entry(r.volume).or_default() += bs,
                }
                self.replayed += 1;
            }
            self.log_blocks.push(lb.next);
            at = lb.next;
        }
    }

    /// Forgets volume `id`'s open-group blocks (rollback, destroy): their
    /// space was never committed, so it is free at once.
    fn drop_dirty(&mut self, id: u64) {
        for (blk, bp) in self.dirty.remove(&id).unwrap_or_default() {
            let logged = !self.unlogged.remove(&(id, blk));
            if !bp.is_hole() {
                self.release_dirty(bp, logged);
            }
        }
        self.dirty_charge.remove(&id);
    }

    /// One write to every child in service. A write that reached none
    /// (every copy failed) suspends the pool: nothing it holds can commit.
    fn disk_write(&mut self, offset: u64, data: &[u8]) -> Result<(), Error> {
        self.vdev.write(offset, data).map_err(|_| {
            self.suspended = true;
            Error::Io(format!("write at {offset:#x} reached no disk"))
        })
    }

    /// Refuses a write whose worst-case commit (the data, a new path of
    /// indirect blocks per block, the MOS) would not fit beside what other
    /// volumes' reservations hold back (its own reservation is its to use).
    fn reserve(&mut self, new_blocks: u64, id: u64) -> Result<(), Error> {
        let need = self.commit_need(new_blocks, Some(id));
        let reserved = self.reserved(Some((id, new_blocks)))?;
        if need + reserved > self.space.free_bytes() && self.space.held_bytes() > 0 {
            // The space a scrub holds is the writer's: the scrub ends.
            self.end_scrub(ScrubEnd::CanceledForSpace);
        }
        if need + reserved > self.space.free_bytes() { Err(Error::NoSpace) } else { Ok(()) }
    }

    /// Worst-case bytes the open group's commit still needs, with
    /// `new_blocks` more blocks of volume `id`: the indirect blocks above
    /// every dirty block (their data is already allocated), the data and
    /// indirect blocks of the new ones, and the MOS.
    fn commit_need(&self, new_blocks: u64, id: Option<u64>) -> u64 {
        let tree = |ds: &Dataset| u64::from(ds.height()) * INDIRECT_SIZE as u64;
        let mut need = id.map_or(0, |id| {
            let d = self.ds(id);
            new_blocks * (u64::from(d.volblocksize) + tree(d))
        });
        for (id, m) in &self.dirty {
            need += m.len() as u64 * tree(self.ds(*id));
        }
        need + self.mos_estimate() * 2
    }

    fn mos_estimate(&self) -> u64 {
        // Allocated extents lie between free ones: at most one more.
        let mut n = 4096 + (self.space.free_extents() as u64 + 1) * 16;
        for d in self.datasets.values() {
            n += 256 + d.name.len() as u64 + d.deadlist.len() as u64 * 20;
            n += d.props.iter().map(|(k, v)| 8 + k.len() + v.len()).sum::<usize>() as u64;
        }
        n.div_ceil(BLOCK) * BLOCK
    }

    /// One data block of `v`: the open group's, from its tree, or zeros
    /// for a hole.
    fn block_contents(&mut self, v: &View, blk: u64) -> Result<Vec<u8>, Error> {
        let bp = match self.dirty_bp(v.id, blk) {
            Some(bp) => bp,
            None => self.lookup(v, blk)?,
        };
        if bp.is_hole() {
            return Ok(vec![0; v.volblocksize as usize]);
        }
        if bp.lsize != v.volblocksize || bp.kind != BlockKind::Data as u8 {
            return Err(Error::Corrupt(format!("{}: block {blk} has size {} kind {}", self.ds(v.id).name, bp.lsize, bp.kind)));
        }
        self.read_data(&bp)
    }

    fn read_bp(&mut self, bp: &BlockPtr) -> Result<Vec<u8>, Error> {
        self.vdev.read_block(bp).map_err(|_| Error::Checksum { offset: bp.offset })
    }

    /// An indirect block's bytes, from the metadata cache or verified from
    /// disk (and then cached).
    fn indirect_bytes(&mut self, bp: &BlockPtr) -> Result<&[u8], Error> {
        if self.meta_cache.get(bp).is_some() {
            self.vdev.metered.meter.meta_hits += 1;
        } else {
            self.vdev.metered.meter.meta_misses += 1;
            let b = self.read_bp(bp)?;
            self.meta_cache.put(bp, &b);
        }
        self.meta_cache.get(bp).ok_or(Error::Checksum { offset: bp.offset })
    }

    /// Child `i` of indirect block `bp`, checked against its parent.
    fn indirect_child(&mut self, bp: &BlockPtr, i: usize) -> Result<BlockPtr, Error> {
        let b = self.indirect_bytes(bp)?;
        let c = BlockPtr::decode(&b[i * BP_SIZE..(i + 1) * BP_SIZE])?;
        if !c.is_hole() && (c.level + 1 != bp.level || c.birth > bp.birth) {
            return Err(Error::Corrupt(format!("indirect block at {:#x}: child {i} level/birth", bp.offset)));
        }
        Ok(c)
    }

    fn read_indirect(&mut self, bp: &BlockPtr) -> Result<Vec<BlockPtr>, Error> {
        let mut out = Vec::with_capacity(BP_PER_INDIRECT as usize);
        for i in 0..BP_PER_INDIRECT as usize {
            out.push(self.indirect_child(bp, i)?);
        }
        Ok(out)
    }

    fn lookup(&mut self, v: &View, blk: u64) -> Result<BlockPtr, Error> {
        let mut bp = v.root;
        if !bp.is_hole() && bp.level != v.height() {
            return Err(Error::Corrupt(format!("{}: root level {} for height {}", self.ds(v.id).name, bp.level, v.height())));
        }
        while !bp.is_hole() && bp.level > 0 {
            let idx = (blk / span(bp.level - 1)) % BP_PER_INDIRECT;
            bp = self.indirect_child(&bp, idx as usize)?;
        }
        Ok(bp)
    }

    fn write_new(&mut self, kind: BlockKind, level: u8, data: &[u8], cksum: u8, txg: u64) -> Result<BlockPtr, Error> {
        self.write_phys(kind, level, data, data.len() as u32, COMP_OFF, cksum, txg)
    }

    /// A data block, LZ4-compressed when that saves at least one [`BLOCK`].
    fn write_data(&mut self, data: &[u8], compress: bool, cksum: u8, txg: u64) -> Result<BlockPtr, Error> {
        if compress {
            let t0 = self.vdev.metered.now();
            let c = lz4_flex::block::compress(data);
            self.vdev.metered.meter.compress_ticks += self.vdev.metered.since(t0);
            let phys = (4u64 + c.len() as u64).div_ceil(BLOCK);
            if phys < (data.len() as u64).div_ceil(BLOCK) {
                let mut buf = Vec::with_capacity(4 + c.len());
                buf.extend_from_slice(&(c.len() as u32).to_le_bytes());
                buf.extend_from_slice(&c);
                return self.write_phys(BlockKind::Data, 0, &buf, data.len() as u32, COMP_LZ4, cksum, txg);
            }
        }
        self.write_new(BlockKind::Data, 0, data, cksum, txg)
    }

    #[allow(clippy::too_many_arguments)]
    fn write_phys(&mut self, kind: BlockKind, level: u8, phys: &[u8], lsize: u32, comp: u8, cksum: u8, txg: u64) -> Result<BlockPtr, Error> {
        let psize = (phys.len() as u64).div_ceil(BLOCK) * BLOCK;
        let offset = self.space.alloc(psize).ok_or(Error::NoSpace)?;
        let padded;
        let buf = if phys.len() as u64 == psize {
            phys
        } else {
            let mut b = phys.to_vec();
            b.resize(psize as usize, 0);
            padded = b;
            &padded[..]
        };
        let checksum = self.vdev.metered.checksum(cksum, buf);
        let bp = BlockPtr { offset, psize: psize as u32, lsize, birth: txg, kind: kind as u8, comp, level, cksum, checksum };
        if let Err(e) = self.disk_write(offset, buf) {
            self.space.free_now(offset, psize);
            return Err(e);
        }
        Ok(bp)
    }

    /// A data block's logical bytes (verified, decompressed).
    fn read_data(&mut self, bp: &BlockPtr) -> Result<Vec<u8>, Error> {
        let mut b = self.read_bp(bp)?;
        if bp.comp == COMP_OFF {
            b.truncate(bp.lsize as usize);
            return Ok(b);
        }
        let bad = || Error::Corrupt(format!("block at {:#x}: bad LZ4 data", bp.offset));
        let clen = u32::from_le_bytes(b[..4].try_into().map_err(|_| bad())?) as usize;
        let src = b.get(4..4usize.checked_add(clen).ok_or_else(bad)?).ok_or_else(bad)?;
        let mut out = vec![0u8; bp.lsize as usize];
        let t0 = self.vdev.metered.now();
        let r = lz4_flex::block::decompress_into(src, &mut out);
        self.vdev.metered.meter.compress_ticks += self.vdev.metered.since(t0);
        match r {
            Ok(n) if n == out.len() => Ok(out),
            _ => Err(bad()),
        }
    }

    /// `bp` leaves a volume's tree: freed once the group commits if only the
    /// volume had it, else kept for the snapshot on the volume's deadlist.
    fn kill(&mut self, bp: &BlockPtr, prev_snap_txg: u64, dead: &mut Vec<Dead>) -> Result<(), Error> {
        if bp.is_hole() {
            return Ok(());
        }
        if bp.birth > prev_snap_txg {
            self.free_block(bp.offset, bp.psize)?;
        } else {
            dead.push(Dead { offset: bp.offset, psize: bp.psize, birth: bp.birth });
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn sync_node(
        &mut self,
        old: BlockPtr,
        level: u8,
        first: u64,
        dirty: &BTreeMap<u64, BlockPtr>,
        prev_snap_txg: u64,
        dead: &mut Vec<Dead>,
        txg: u64,
        cksum: u8,
    ) -> Result<BlockPtr, Error> {
        if level == 0 {
            // The open group wrote this block already.
            self.kill(&old, prev_snap_txg, dead)?;
            return Ok(dirty[&first]);
        }
        let cs = span(level - 1);
        let mut children = if old.is_hole() { vec![BlockPtr::HOLE; BP_PER_INDIRECT as usize] } else { self.read_indirect(&old)? };
        for (i, child) in children.iter_mut().enumerate() {
            let lo = first.saturating_add(cs.saturating_mul(i as u64));
            let hi = lo.saturating_add(cs);
            if dirty.range(lo..hi).next().is_some() {
                *child = self.sync_node(*child, level - 1, lo, dirty, prev_snap_txg, dead, txg, cksum)?;
            }
        }
        self.kill(&old, prev_snap_txg, dead)?;
        if children.iter().all(BlockPtr::is_hole) {
            return Ok(BlockPtr::HOLE);
        }
        let mut buf = vec![0u8; INDIRECT_SIZE];
        for (i, c) in children.iter().enumerate() {
            c.encode(&mut buf[i * BP_SIZE..]);
        }
        let bp = self.write_new(BlockKind::Indirect, level, &buf, cksum, txg)?;
        self.meta_cache.put(&bp, &buf);
        Ok(bp)
    }

    /// Commits the open transaction group: the tree above every block the
    /// group wrote, the MOS, a flush, the uberblock in every label, a flush.
    /// Returns once the group is durable. A failure suspends the pool (the
    /// on-disk state stays the last committed group).
    pub fn sync(&mut self) -> Result<(), Error> {
        self.check_live()?;
        let t0 = self.vdev.metered.now();
        let r = self.sync_inner();
        self.vdev.metered.meter.commits += 1;
        self.vdev.metered.meter.commit_ticks += self.vdev.metered.since(t0);
        if r.is_err() {
            self.suspended = true;
        }
        r
    }

    fn sync_inner(&mut self) -> Result<(), Error> {
        let txg = self.txg + 1;
        let dirty = core::mem::take(&mut self.dirty);
        for (id, blocks) in &dirty {
            let d = self.ds(*id).clone();
            let mut dead = d.deadlist.clone();
            let cksum = indirect_cksum(Self::cksum_of(&d));
            let (free0, dead0) = (self.space.free_bytes(), dead.len());
            let freed0 = self.space.deferred_bytes();
            // The data blocks were allocated when written; the tree's
            // indirect blocks are allocated now.
            let data: u64 = blocks.values().map(|bp| u64::from(bp.psize)).sum();
            let root = self.sync_node(d.root, d.height(), 0, blocks, d.prev_snap_txg, &mut dead, txg, cksum)?;
            let written = free0 - self.space.free_bytes() + data;
            let freed = self.space.deferred_bytes() - freed0;
            let origin_txg = self.origin_txg(&d);
            let shared_killed: u64 = dead[dead0..].iter().filter(|x| x.birth > origin_txg).map(|x| u64::from(x.psize)).sum();
            if let Some(a) = self.acct.get_mut(id) {
                a.unique = (a.unique + written).saturating_sub(freed);
                a.tree = (a.tree + written).saturating_sub(freed + shared_killed);
            }
            let ds = self.datasets.get_mut(id).ok_or(Error::NotFound(d.name))?;
            ds.root = root;
            ds.deadlist = dead;
        }
        self.dirty_charge.clear();
        if !self.mos.is_hole() {
            self.free_block(self.mos.offset, self.mos.psize)?;
        }
        // This group's log is obsolete once it commits; the next group's
        // log starts in a block the new MOS holds as allocated.
        for off in core::mem::take(&mut self.log_blocks) {
            self.free_block(off, LOG_BLOCK as u32)?;
        }
        // The MOS records its own block in the space map: allocate first,
        // then encode; retry larger if the map grew past the estimate. The
        // next group's log block comes after it, in what room is left: the
        // room a write reserves for the commit (`commit_need`) does not
        // count it, and taken first it could leave the MOS none (the commit
        // failed, the pool suspended); without room the next group has no
        // log and its FLUSHes commit.
        let mut psize = self.mos_estimate();
        let (mos_off, log, bytes) = loop {
            let off = self.space.alloc(psize).ok_or(Error::NoSpace)?;
            let log = self.space.alloc(LOG_BLOCK).unwrap_or(0);
            let bytes = self.encode_mos(txg);
            if bytes.len() as u64 <= psize {
                break (off, log, bytes);
            }
            self.space.free_now(off, psize);
            if log != 0 {
                self.space.free_now(log, LOG_BLOCK);
            }
            psize = (bytes.len() as u64 + 4 * BLOCK).div_ceil(BLOCK) * BLOCK;
        };
        let mut buf = bytes.clone();
        buf.resize(psize as usize, 0);
        let mos = BlockPtr {
            offset: mos_off,
            psize: psize as u32,
            lsize: bytes.len() as u32,
            birth: txg,
            kind: BlockKind::Mos as u8,
            comp: 0,
            level: 0,
            cksum: MOS_CKSUM,
            checksum: self.vdev.metered.checksum(MOS_CKSUM, &buf),
        };
        let io = |what: &str| Error::Io(format!("txg {txg}: {what}"));
        self.vdev.write(mos_off, &buf).map_err(|_| io("MOS write"))?;
        self.vdev.flush().map_err(|_| io("flush before the uberblock"))?;
        let ub = Uberblock { txg, pool_guid: self.guid, mos, log }.encode();
        let asize = self.vdev.asize;
        for l in 0..LABELS {
            let at = Uberblock::slot_offset(label_offset(asize, l), txg);
            self.vdev.write(at, &ub).map_err(|_| io("uberblock write"))?;
        }
        self.vdev.flush().map_err(|_| io("flush after the uberblock"))?;
        self.txg = txg;
        self.mos = mos;
        self.space.release_deferred();
        self.scrub_recorded();
        if self.scrub_hold_limit.is_some_and(|l| self.space.held_extents() > l) {
            self.end_scrub(ScrubEnd::CanceledForMemory);
        }
        (self.log_head, self.log_next, self.log_seq) = (log, log, 0);
        if log != 0 {
            self.log_blocks.push(log);
        }
        self.unlogged.clear();
        Ok(())
    }

    fn encode_mos(&self, txg: u64) -> Vec<u8> {
        let mut w = Writer::default();
        w.u64(MOS_MAGIC);
        w.u32(MOS_VERSION);
        w.u64(self.guid);
        w.u64(txg);
        w.u64(self.next_id);
        // What the committed group uses: the frees it made are free in it.
        let mut after = self.space.clone();
        after.release_deferred();
        // What a scrub under way holds is free on disk (FORMAT.md "Scrub").
        after.unhold();
        let alloc = after.allocated();
        w.u64(alloc.len() as u64);
        for (o, l) in alloc {
            w.u64(o);
            w.u64(l);
        }
        w.u64(self.datasets.len() as u64);
        for d in self.datasets.values() {
            w.u64(d.id);
            w.u64(d.guid);
            w.str(&d.name);
            w.u8(d.snapshot as u8);
            w.u64(d.head);
            w.u64(d.volsize);
            w.u32(d.volblocksize);
            w.bp(&d.root);
            w.u64(d.creation_txg);
            w.u64(d.origin);
            w.u64(d.prev_snap_txg);
            w.u64(d.deadlist.len() as u64);
            for x in &d.deadlist {
                w.u64(x.offset);
                w.u32(x.psize);
                w.u64(x.birth);
            }
            w.u64(d.props.len() as u64);
            for (k, v) in &d.props {
                w.str(k);
                w.str(v);
            }
            w.u64(d.creation);
        }
        match &self.last_scrub {
            None => w.u8(0),
            Some(s) => {
                w.u8(1);
                for v in [s.start, s.end, s.txg, s.blocks, s.bytes, s.repaired, s.errors_total] {
                    w.u64(v);
                }
                // 2: not checked because it was resumed (version 3).
                w.u8(if s.resumed { 2 } else { s.space_checked as u8 });
                scrub::encode_errors(&mut w, &s.errors);
            }
        }
        // Version 3: the scrub under way (FORMAT.md "Scrub in progress").
        match self.scrub_bookmark() {
            None => w.u8(0),
            Some(b) => {
                w.u8(1);
                b.encode(&mut w);
            }
        }
        w.buf
    }

    fn snapshots_of(&self, head: u64) -> Vec<u64> {
        let mut v: Vec<&Dataset> = self.datasets.values().filter(|d| d.snapshot && d.head == head).collect();
        v.sort_by_key(|d| d.creation_txg);
        v.into_iter().map(|d| d.id).collect()
    }

    fn clones_of(&self, snap: u64) -> Vec<String> {
        self.datasets.values().filter(|d| !d.snapshot && d.origin == snap).map(|d| d.name.clone()).collect()
    }

    /// `VOLUME@SNAP`: instant and read-only; committed before it returns.
    pub fn snapshot(&mut self, full: &str) -> Result<(), Error> {
        self.snapshot_with_guid(full, None)
    }

    fn snapshot_with_guid(&mut self, full: &str, guid: Option<u64>) -> Result<(), Error> {
        self.check_live()?;
        let (vol, snap) = full.split_once('@').ok_or_else(|| Error::Invalid(format!("{full:?}: a snapshot is VOLUME@NAME")))?;
        if !valid_component(snap) {
            return Err(Error::Invalid(format!("snapshot name {snap:?}: use letters, digits and -_.:")));
        }
        let head = self.id_of(vol)?;
        if self.ds(head).snapshot {
            return Err(Error::Invalid(format!("{vol}: cannot snapshot a snapshot")));
        }
        if self.id_of(full).is_ok() {
            return Err(Error::Exists(full.to_string()));
        }
        self.sync()?;
        // A snapshot makes all the volume's blocks shared: its
        // refreservation must then be guaranteed in full (ZFS refuses too).
        let refres = Self::space_prop(self.ds(head), PROP_REFRESERVATION);
        if refres != 0 {
            let a = self.acct(head)?;
            let grow = a.unique.min(refres);
            let spare = self.unreserved()?;
            if grow > spare {
                return Err(Error::Space(format!(
                    "cannot snapshot {vol}: its refreservation {refres} needs {grow} bytes more, {spare} unreserved"
                )));
            }
        }
        if let Some(a) = self.acct.get_mut(&head) {
            a.unique = 0;
        }
        let t = self.txg;
        let id = self.next_id;
        self.next_id += 1;
        let guid = guid.unwrap_or_else(|| self.new_guid(id));
        let h = self.datasets.get_mut(&head).ok_or(Error::NotFound(vol.into()))?;
        let snapd = Dataset {
            id,
            guid,
            name: full.to_string(),
            snapshot: true,
            head,
            volsize: h.volsize,
            volblocksize: h.volblocksize,
            root: h.root,
            creation_txg: t,
            creation: (self.wall_clock)(),
            origin: 0,
            prev_snap_txg: t,
            deadlist: core::mem::take(&mut h.deadlist),
            props: h.props.clone(),
        };
        h.prev_snap_txg = t;
        self.datasets.insert(id, snapd);
        self.sync()
    }

    /// A writable volume sharing every block of `snap` until overwritten.
    pub fn clone_snapshot(&mut self, snap: &str, name: &str) -> Result<(), Error> {
        self.check_live()?;
        if !self.ds(self.id_of(snap)?).snapshot {
            return Err(Error::Invalid(format!("{snap}: clones are made from snapshots")));
        }
        self.check_new_volume_name(name)?;
        self.clone_named(snap, name)
    }

    /// [`Pool::clone_snapshot`] without the name's check (a receive's
    /// hidden volume).
    fn clone_named(&mut self, snap: &str, name: &str) -> Result<(), Error> {
        let sid = self.id_of(snap)?;
        let s = self.ds(sid).clone();
        if !s.snapshot {
            return Err(Error::Invalid(format!("{snap}: clones are made from snapshots")));
        }
        if self.datasets.values().any(|d| d.name == name) {
            return Err(Error::Exists(name.to_string()));
        }
        let id = self.next_id;
        self.next_id += 1;
        self.datasets.insert(
            id,
            Dataset {
                id,
                guid: self.new_guid(id),
                name: name.to_string(),
                snapshot: false,
                head: id,
                volsize: s.volsize,
                volblocksize: s.volblocksize,
                root: s.root,
                creation_txg: self.txg + 1,
                creation: (self.wall_clock)(),
                origin: sid,
                prev_snap_txg: s.creation_txg,
                deadlist: Vec::new(),
                props: s.props.iter().filter(|(k, _)| *k == PROP_COMPRESSION || *k == PROP_CHECKSUM).map(|(k, v)| (k.clone(), v.clone())).collect(),
            },
        );
        self.sync()
    }

    /// Frees the blocks of the tree at `bp` born after `min_birth` (older
    /// subtrees belong to a snapshot: copy-on-write never puts a younger
    /// block under an older one).
    fn free_tree(&mut self, bp: BlockPtr, min_birth: u64) -> Result<(), Error> {
        if bp.is_hole() || bp.birth <= min_birth {
            return Ok(());
        }
        if bp.level > 0 {
            for c in self.read_indirect(&bp)? {
                self.free_tree(c, min_birth)?;
            }
        }
        self.free_block(bp.offset, bp.psize)
    }

    /// Frees a block once the open group commits; a block the space map
    /// does not hold as allocated (a damaged or forged pool) is an error.
    fn free_block(&mut self, offset: u64, psize: u32) -> Result<(), Error> {
        if self.space.defer_free(offset, u64::from(psize)) {
            Ok(())
        } else {
            Err(Error::Corrupt(format!("block at {offset:#x} ({psize} bytes) freed but not allocated")))
        }
    }

    /// Returns `VOLUME` to its latest snapshot `VOLUME@SNAP`.
    pub fn rollback(&mut self, snap: &str) -> Result<(), Error> {
        self.check_live()?;
        let sid = self.id_of(snap)?;
        let s = self.ds(sid).clone();
        if !s.snapshot {
            return Err(Error::Invalid(format!("{snap}: not a snapshot")));
        }
        let snaps = self.snapshots_of(s.head);
        if snaps.last() != Some(&sid) {
            let later: Vec<String> = snaps.iter().skip_while(|&&x| x != sid).skip(1).map(|x| self.ds(*x).name.clone()).collect();
            return Err(Error::Busy(format!("{snap}: not the latest snapshot; destroy {} first", later.join(", "))));
        }
        self.drop_dirty(s.head);
        self.acct.clear();
        let root = self.ds(s.head).root;
        self.free_tree(root, s.creation_txg)?;
        let h = self.datasets.get_mut(&s.head).ok_or(Error::NotFound(snap.into()))?;
        h.root = s.root;
        h.deadlist.clear();
        self.sync()
    }

    /// Destroys a volume (with its snapshots if `recursive`) or a snapshot.
    /// Refused while a clone depends on it.
    pub fn destroy(&mut self, name: &str, recursive: bool) -> Result<(), Error> {
        self.check_live()?;
        let id = self.id_of(name)?;
        self.acct.clear();
        if self.ds(id).snapshot {
            self.destroy_snapshot(id)?;
            return self.sync();
        }
        let snaps = self.snapshots_of(id);
        if !snaps.is_empty() && !recursive {
            return Err(Error::Busy(format!("{name}: has snapshots ({}); destroy them or ask for recursive", snaps.len())));
        }
        for &s in &snaps {
            let clones = self.clones_of(s);
            if !clones.is_empty() {
                return Err(Error::Busy(format!("{}: clones depend on it: {}", self.ds(s).name, clones.join(", "))));
            }
        }
        for &s in snaps.iter().rev() {
            self.destroy_snapshot(s)?;
        }
        self.drop_dirty(id);
        let d = self.ds(id).clone();
        self.free_tree(d.root, d.prev_snap_txg)?;
        self.datasets.remove(&id);
        self.sync()
    }

    fn destroy_snapshot(&mut self, sid: u64) -> Result<(), Error> {
        let s = self.ds(sid).clone();
        let clones = self.clones_of(sid);
        if !clones.is_empty() {
            return Err(Error::Busy(format!("{}: clones depend on it: {}", s.name, clones.join(", "))));
        }
        let snaps = self.snapshots_of(s.head);
        let idx = snaps.iter().position(|&x| x == sid).unwrap_or(0);
        let head = self.ds(s.head).clone();
        let prev_txg = match idx {
            0 => self.datasets.get(&head.origin).map_or(0, |o| o.creation_txg),
            i => self.ds(snaps[i - 1]).creation_txg,
        };
        let next = snaps.get(idx + 1).copied().unwrap_or(s.head);
        let next_dead = core::mem::take(&mut self.datasets.get_mut(&next).ok_or(Error::NotFound(s.name.clone()))?.deadlist);
        let mut keep = Vec::new();
        for x in next_dead {
            if x.birth > prev_txg {
                self.free_block(x.offset, x.psize)?;
            } else {
                keep.push(x);
            }
        }
        keep.extend_from_slice(&s.deadlist);
        let n = self.datasets.get_mut(&next).ok_or(Error::NotFound(s.name.clone()))?;
        n.deadlist = keep;
        if next == s.head {
            n.prev_snap_txg = prev_txg;
        }
        self.datasets.remove(&sid);
        Ok(())
    }

    /// Renames a volume (its snapshots follow) or a snapshot.
    pub fn rename(&mut self, from: &str, to: &str) -> Result<(), Error> {
        self.check_live()?;
        let id = self.id_of(from)?;
        if self.ds(id).snapshot {
            let (vol, _) = from.split_once('@').unwrap_or((from, ""));
            let (tvol, tsnap) = to.split_once('@').ok_or_else(|| Error::Invalid(format!("{to:?}: a snapshot is VOLUME@NAME")))?;
            if tvol != vol || !valid_component(tsnap) {
                return Err(Error::Invalid(format!("{to:?}: a snapshot keeps its volume; new name must be {vol}@NAME")));
            }
            if self.id_of(to).is_ok() {
                return Err(Error::Exists(to.to_string()));
            }
            if let Some(d) = self.datasets.get_mut(&id) {
                d.name = to.to_string();
            }
        } else {
            self.check_new_volume_name(to)?;
            for s in self.snapshots_of(id) {
                let d = self.datasets.get_mut(&s).ok_or(Error::NotFound(from.into()))?;
                let snap = d.name.split_once('@').map(|(_, s)| s.to_string()).unwrap_or_default();
                d.name = format!("{to}@{snap}");
            }
            if let Some(d) = self.datasets.get_mut(&id) {
                d.name = to.to_string();
            }
        }
        self.sync()
    }

    /// Walks every block of every dataset once (shared blocks once), reading
    /// and verifying each; with `scrub`, every copy of each is read and the
    /// bad ones repaired, and a block no copy of which is good is listed in
    /// the report's `errors` (the walk goes on; without `scrub` it is an
    /// error). Then checks the space map against what is referenced:
    /// nothing leaked, nothing used twice, every deadlist entry still
    /// referenced. Call on a pool with no open writes.
    pub fn verify(&mut self, scrub: bool) -> Result<VerifyReport, Error> {
        self.verify_with(scrub, None)
    }

    fn verify_with(&mut self, scrub: bool, progress: Option<&mut dyn FnMut(u64, u64)>) -> Result<VerifyReport, Error> {
        if self.dirty.values().any(|m| !m.is_empty()) {
            return Err(Error::Invalid("verify needs a synced pool".into()));
        }
        let report = VerifyReport { txg: self.txg, datasets: self.datasets.len(), space_checked: true, ..Default::default() };
        let allocated = self.space.size() - self.space.free_bytes();
        let mut scan =
            Scan { scrub, progress, next_progress: PROGRESS_EVERY, allocated, seen: BTreeMap::new(), bad: BTreeMap::new(), report };
        let mos = self.mos;
        if !self.visit(&mos, &mut scan)? {
            scan.report.errors.push(DataError { dataset: None, offset: 0, len: 0, block: mos.offset, level: mos.level });
            scan.report.space_checked = false;
        }
        if self.log_head != 0 {
            // The log's first block: allocated, not checksummed by a pointer.
            scan.seen.insert(self.log_head, LOG_BLOCK as u32);
        }
        let roots: Vec<(String, BlockPtr, u8, u64, u64, u64)> = self
            .datasets
            .values()
            .map(|d| {
                let max_birth = if d.snapshot { d.creation_txg } else { self.txg };
                (d.name.clone(), d.root, d.height(), max_birth, u64::from(d.volblocksize), d.volsize)
            })
            .collect();
        for (name, root, h, max_birth, volblocksize, volsize) in roots {
            if root.is_hole() {
                continue;
            }
            if root.level != h || root.birth > max_birth {
                return Err(Error::Corrupt(format!("{name}: root level {} birth {}", root.level, root.birth)));
            }
            for b in self.walk(root, &mut scan)? {
                let offset = b.rel.saturating_mul(volblocksize).min(volsize);
                let end = b.rel.saturating_add(span(b.level)).saturating_mul(volblocksize).min(volsize);
                scan.report.errors.push(DataError {
                    dataset: Some(name.clone()),
                    offset,
                    len: end - offset,
                    block: b.block,
                    level: b.level,
                });
            }
        }
        if let Some(p) = scan.progress.as_mut() {
            p(scan.report.bytes, scan.allocated);
        }
        let Scan { seen, mut report, .. } = scan;
        if !report.space_checked {
            return Ok(report);
        }
        if !self.space.deferred().is_empty() {
            return Err(Error::Corrupt("frees not committed (verify needs a synced pool)".into()));
        }
        // A scrub under way holds blocks no group references any more.
        let mut space = self.space.clone();
        space.unhold();
        let dead = self.datasets.values().flat_map(|d| d.deadlist.iter().map(|x| (d.name.as_str(), x.offset, x.psize)));
        scrub::check_space(&seen, &space.allocated(), dead)?;
        report.space_checked = true;
        Ok(report)
    }

    /// Reads (verify) or scrubs one block and counts it: false when no
    /// copy is good and the walk is a scrub (a verify fails instead).
    fn visit(&mut self, bp: &BlockPtr, scan: &mut Scan<'_>) -> Result<bool, Error> {
        let good = if scan.scrub {
            self.vdev.scrub_block(bp).is_ok()
        } else {
            self.read_bp(bp)?;
            true
        };
        scan.seen.insert(bp.offset, bp.psize);
        scan.report.blocks += 1;
        scan.report.bytes += u64::from(bp.psize);
        if scan.report.bytes >= scan.next_progress
            && let Some(p) = scan.progress.as_mut()
        {
            p(scan.report.bytes, scan.allocated);
            scan.next_progress = scan.report.bytes + PROGRESS_EVERY;
        }
        Ok(good)
    }

    /// Walks the tree below `bp` (once: a block seen already is not read
    /// again); returns the blocks in it no copy of which is good (scrub).
    fn walk(&mut self, bp: BlockPtr, scan: &mut Scan<'_>) -> Result<Vec<Bad>, Error> {
        if bp.is_hole() {
            return Ok(Vec::new());
        }
        if let Some(&p) = scan.seen.get(&bp.offset) {
            if p != bp.psize {
                return Err(Error::Corrupt(format!("block {:#x} referenced with two sizes", bp.offset)));
            }
            // Shared, walked already: what it found, again.
            return Ok(scan.bad.get(&bp.offset).cloned().unwrap_or_default());
        }
        let mut bad = Vec::new();
        if !self.visit(&bp, scan)? {
            bad.push(Bad { rel: 0, level: bp.level, block: bp.offset });
            if bp.level > 0 {
                // What lies below is out of reach: not checked, not counted.
                scan.report.space_checked = false;
            }
        } else if bp.level > 0 {
            let below = span(bp.level - 1);
            for (i, c) in self.read_indirect(&bp)?.into_iter().enumerate() {
                for b in self.walk(c, scan)? {
                    let rel = b.rel.saturating_add((i as u64).saturating_mul(below));
                    bad.push(Bad { rel, ..b });
                }
            }
        }
        if !bad.is_empty() {
            scan.bad.insert(bp.offset, bad.clone());
        }
        Ok(bad)
    }

    /// `referenced` (bytes allocated for the dataset's blocks, shared or
    /// not), `logicalreferenced` (their bytes before compression) and
    /// `compressratio`, by walking its tree.
    pub fn space_of(&mut self, name: &str) -> Result<SpaceInfo, Error> {
        let d = self.ds(self.id_of(name)?).clone();
        let mut info = SpaceInfo::default();
        self.space_walk(d.root, &mut info)?;
        Ok(info)
    }

    fn space_walk(&mut self, bp: BlockPtr, info: &mut SpaceInfo) -> Result<(), Error> {
        if bp.is_hole() {
            return Ok(());
        }
        info.referenced += u64::from(bp.psize);
        info.logical += u64::from(bp.lsize);
        if bp.level > 0 {
            for c in self.read_indirect(&bp)? {
                self.space_walk(c, info)?;
            }
        }
        Ok(())
    }

    /// Reads every copy of every block and repairs bad copies from good
    /// ones, to the end even past blocks no copy of which is good: those
    /// are the report's `errors` (the datasets and bytes they hold, as
    /// `zpool status -v`). The per-child counters ([`Pool::child_stats`])
    /// say what was found on each disk; [`Pool::last_scrub`] keeps the
    /// report for status.
    pub fn scrub(&mut self) -> Result<VerifyReport, Error> {
        self.scrub_with_progress(None)
    }

    /// [`Pool::scrub`], telling `progress` (bytes walked, bytes allocated in
    /// the pool) every 16 MiB and at the end.
    pub fn scrub_with_progress(&mut self, mut progress: Option<&mut dyn FnMut(u64, u64)>) -> Result<VerifyReport, Error> {
        self.scrub_start()?;
        let total = self.scrub_progress().map_or(0, |s| s.total);
        loop {
            let r = self.scrub_step(PROGRESS_EVERY)?;
            if let (Some(p), Some(s)) = (progress.as_mut(), self.scrub_progress()) {
                p(s.bytes, s.total);
            }
            if let Some(report) = r {
                if let Some(p) = progress.as_mut() {
                    p(report.bytes, total);
                }
                return Ok(report);
            }
        }
    }

    /// The last scrub this pool ran, kept on disk (None: none ran, or the
    /// pool was written before MOS version 2).
    pub fn last_scrub(&self) -> Option<&ScanRecord> {
        self.last_scrub.as_ref()
    }

    /// Sets the clock `creation` and the scan times read (seconds since
    /// 1970); without one they read 0, shown as unknown.
    pub fn set_wall_clock(&mut self, clock: fn() -> u64) {
        self.wall_clock = clock;
    }
}

/// What a volume's reservations hold back from the pool: its
/// `refreservation` beyond its unique blocks, or its `reservation` beyond its
/// `used`, whichever is larger (ZFS: `used` includes `usedbyrefreservation`).
fn held(reservation: u64, refreservation: u64, used_data: u64, unique: u64) -> u64 {
    refreservation.saturating_sub(unique).max(reservation.saturating_sub(used_data))
}

/// splitmix64's finaliser: spreads a guid.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The first valid label header of a disk (front labels first, then the end
/// ones located from the front's size or, failing that, the disk's own).
pub fn read_label<D: Disk>(d: &mut D) -> Option<LabelHeader> {
    let mut buf = vec![0u8; BLOCK as usize];
    let own = asize_of(d.size());
    if own < MIN_DISK {
        return None;
    }
    for l in 0..LABELS {
        if d.read(label_offset(own, l), &mut buf).is_ok()
            && let Ok((h, _)) = LabelHeader::decode(&buf)
            && h.asize <= own
        {
            return Some(h);
        }
    }
    None
}

/// What a MOS holds besides its header.
struct Mos {
    datasets: BTreeMap<u64, Dataset>,
    space: SpaceMap,
    next_id: u64,
    scan: Option<ScanRecord>,
    scrub: Option<ScrubResume>,
}

fn decode_mos(b: &[u8], guid: u64, txg: u64, asize: u64) -> Result<Mos, Error> {
    let bad = |s: &str| Error::Corrupt(format!("MOS of txg {txg}: {s}"));
    let mut r = Reader::new(b);
    if r.u64()? != MOS_MAGIC {
        return Err(bad("magic"));
    }
    // Version 1 has no creation times and no scan record, version 2 no
    // scrub in progress record.
    let version = r.u32()?;
    if !(1..=MOS_VERSION).contains(&version) {
        return Err(bad(&format!("version {version} (this pool reads 1 to {MOS_VERSION})")));
    }
    if r.u64()? != guid || r.u64()? != txg {
        return Err(bad("pool guid or txg does not match the uberblock"));
    }
    let next_id = r.u64()?;
    let n = r.count(16)?;
    let mut alloc = Vec::with_capacity(n);
    for _ in 0..n {
        alloc.push((r.u64()?, r.u64()?));
    }
    let (start, end) = data_region(asize);
    let space = SpaceMap::from_allocated(start, end, &alloc).ok_or_else(|| bad("space map overlaps or leaves the disk"))?;
    let n = r.count(64)?;
    let mut datasets = BTreeMap::new();
    let mut names = BTreeSet::new();
    for _ in 0..n {
        let id = r.u64()?;
        let guid = r.u64()?;
        let name = r.str()?;
        let snapshot = r.u8()? != 0;
        let head = r.u64()?;
        let volsize = r.u64()?;
        let volblocksize = r.u32()?;
        let root = r.bp()?;
        let creation_txg = r.u64()?;
        let origin = r.u64()?;
        let prev_snap_txg = r.u64()?;
        let nd = r.count(20)?;
        let mut deadlist = Vec::with_capacity(nd);
        for _ in 0..nd {
            deadlist.push(Dead { offset: r.u64()?, psize: r.u32()?, birth: r.u64()? });
        }
        let np = r.count(8)?;
        let mut props = BTreeMap::new();
        for _ in 0..np {
            props.insert(r.str()?, r.str()?);
        }
        let creation = if version >= 2 { r.u64()? } else { 0 };
        if id == 0 || id >= next_id || datasets.contains_key(&id) || !names.insert(name.clone()) {
            return Err(bad("dataset id or name repeated"));
        }
        if !volblocksize.is_power_of_two()
            || !(512..=131072).contains(&volblocksize)
            || volsize == 0
            || volsize % u64::from(volblocksize) != 0
            || volsize > MAX_VOLSIZE
        {
            return Err(bad("volsize or volblocksize"));
        }
        let d = Dataset {
            id,
            guid,
            name,
            snapshot,
            head,
            volsize,
            volblocksize,
            root,
            creation_txg,
            creation,
            origin,
            prev_snap_txg,
            deadlist,
            props,
        };
        if !root.is_hole() && (root.level != d.height() || root.birth > txg) {
            return Err(bad("dataset root level or birth"));
        }
        if SPACE_PROPS.iter().any(|k| d.props.get(*k).is_some_and(|v| parse_size(v).is_none())) {
            return Err(bad("space property value"));
        }
        datasets.insert(id, d);
    }
    let scan = if version >= 2 { decode_scan(&mut r, txg, version).map_err(|e| bad(&e))? } else { None };
    let scrub = if version >= 3 { decode_scrub(&mut r, txg).map_err(|e| bad(&e))? } else { None };
    if !r.done() {
        return Err(bad("trailing bytes"));
    }
    for d in datasets.values() {
        let head_ok = if d.snapshot { datasets.get(&d.head).is_some_and(|h| !h.snapshot) } else { d.head == d.id };
        let origin_ok = d.origin == 0 || (!d.snapshot && datasets.get(&d.origin).is_some_and(|o| o.snapshot));
        if !head_ok || !origin_ok {
            return Err(bad("dataset head or origin"));
        }
    }
    Ok(Mos { datasets, space, next_id, scan, scrub })
}

/// The scrub in progress record at the end of a version 3 MOS.
fn decode_scrub(r: &mut Reader, txg: u64) -> Result<Option<ScrubResume>, String> {
    match r.u8().map_err(|e| format!("scrub in progress record: {e:?}"))? {
        0 => Ok(None),
        1 => ScrubResume::decode(r, txg).map(Some),
        k => Err(format!("scrub in progress record: kind {k} (0: none, 1: a scrub under way)")),
    }
}

/// The scan record at the end of a version 2 MOS (FORMAT.md "MOS").
fn decode_scan(r: &mut Reader, txg: u64, version: u32) -> Result<Option<ScanRecord>, String> {
    let e = |e: FormatError| format!("scan record: {e:?}");
    match r.u8().map_err(e)? {
        0 => return Ok(None),
        1 => {}
        k => return Err(format!("scan record: kind {k}")),
    }
    let mut v = [0u64; 7];
    for x in &mut v {
        *x = r.u64().map_err(e)?;
    }
    let [start, end, scanned, blocks, bytes, repaired, errors_total] = v;
    let (space_checked, resumed) = match r.u8().map_err(e)? {
        0 => (false, false),
        1 => (true, false),
        2 if version >= 3 => (false, true),
        _ => return Err("scan record: space_checked is not 0, 1 or (version 3) 2".into()),
    };
    if scanned > txg || end < start {
        return Err("scan record: errors, txg or times out of range".into());
    }
    let errors = scrub::decode_errors(r, errors_total).map_err(|s| format!("scan record: {s}"))?;
    Ok(Some(ScanRecord { start, end, txg: scanned, blocks, bytes, repaired, errors_total, space_checked, resumed, errors }))
}

/// Whether every byte is zero (such a block is written as a hole).
fn is_zero(b: &[u8]) -> bool {
    b.iter().all(|&x| x == 0)
}
