//! Vdevs: one disk, or an n-way mirror of disks holding the same bytes at
//! the same offsets. Every read is verified against the block pointer's
//! checksum; a child that returns an error or bad bytes is counted, the next
//! child is tried, and once a good copy is found it is written back over the
//! bad ones (self-healing). With no good copy the caller gets an error,
//! never wrong data.
//!
//! A child that fails a write or a flush is **faulted**: it may lack data
//! the pool counts on, so it takes no more writes (reads may still try it:
//! checksums catch what it lacks) until the pool is imported again. A
//! write or a flush succeeds only when every child still in service did it,
//! and at least one is: a commit never claims durability on a copy that
//! did not get the data or did not flush it.

use alloc::vec;
use alloc::vec::Vec;

use crate::disk::Disk;
use crate::format::{BlockPtr, Checksum};

/// Where a pool's time goes, for `bench` and status lines: counts always,
/// time only with a clock ([`crate::Pool::set_clock`]: any monotonic tick
/// counter, the TSC on Alcove). Each `*_ticks` covers its own work only:
/// `commit_ticks` includes the commit's checksums and disk requests, which
/// are counted in their own fields too.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Meter {
    pub checksum_bytes: u64,
    pub checksum_ticks: u64,
    /// LZ4 compression and decompression.
    pub compress_ticks: u64,
    pub disk_reads: u64,
    pub disk_read_bytes: u64,
    pub disk_read_ticks: u64,
    pub disk_writes: u64,
    pub disk_write_bytes: u64,
    pub disk_write_ticks: u64,
    pub flushes: u64,
    pub flush_ticks: u64,
    /// Transaction groups committed, and the time in `sync` (all of it).
    pub commits: u64,
    pub commit_ticks: u64,
    /// Intent-log blocks written, and the FLUSHes they answered without a
    /// commit.
    pub log_blocks: u64,
    pub log_flushes: u64,
    /// Indirect blocks found in the metadata cache, and read from disk.
    pub meta_hits: u64,
    pub meta_misses: u64,
}

/// A [`Meter`] and the clock it reads.
#[derive(Debug, Clone, Copy, Default)]
pub struct Metered {
    pub meter: Meter,
    pub clock: Option<fn() -> u64>,
}

impl Metered {
    pub fn now(&self) -> u64 {
        self.clock.map_or(0, |c| c())
    }
    /// Ticks since `t0`.
    pub fn since(&self, t0: u64) -> u64 {
        self.now().saturating_sub(t0)
    }
    /// The checksum of `data` (`algo`: [`crate::format::CKSUM_SHA256`] or
    /// [`crate::format::CKSUM_BLAKE3`]), counted.
    pub fn checksum(&mut self, algo: u8, data: &[u8]) -> Checksum {
        let t0 = self.now();
        let c = crate::format::checksum_with(algo, data);
        self.meter.checksum_ticks += self.since(t0);
        self.meter.checksum_bytes += data.len() as u64;
        c
    }
}

/// Per-child error counters, as `zpool status` shows them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChildStats {
    pub read_errors: u64,
    pub write_errors: u64,
    pub checksum_errors: u64,
    /// Bytes rewritten on this child from a good copy.
    pub repaired_bytes: u64,
    /// Out of service: a write or a flush failed on it (until re-import).
    pub faulted: bool,
}

/// What went wrong reading a block: no child had a copy matching its checksum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadError {
    /// Every copy failed its checksum (or could not be read).
    NoGoodCopy,
}

/// Writing or flushing left no child in service that holds the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteError;

pub struct Vdev<D: Disk> {
    pub children: Vec<D>,
    pub stats: Vec<ChildStats>,
    /// Usable size of every child.
    pub asize: u64,
    pub metered: Metered,
}

impl<D: Disk> Vdev<D> {
    pub fn new(children: Vec<D>, asize: u64) -> Self {
        let stats = vec![ChildStats::default(); children.len()];
        Vdev { children, stats, asize, metered: Metered::default() }
    }

    fn child_read(&mut self, c: usize, offset: u64, buf: &mut [u8]) -> Result<(), crate::disk::DiskError> {
        let t0 = self.metered.now();
        let r = self.children[c].read(offset, buf);
        let m = &mut self.metered;
        m.meter.disk_read_ticks += m.since(t0);
        m.meter.disk_reads += 1;
        m.meter.disk_read_bytes += buf.len() as u64;
        r
    }

    fn child_write(&mut self, c: usize, offset: u64, data: &[u8]) -> Result<(), crate::disk::DiskError> {
        let t0 = self.metered.now();
        let r = self.children[c].write(offset, data);
        let m = &mut self.metered;
        m.meter.disk_write_ticks += m.since(t0);
        m.meter.disk_writes += 1;
        m.meter.disk_write_bytes += data.len() as u64;
        r
    }

    /// Whether the copy in `buf` matches `bp`'s checksum.
    fn verifies(&mut self, bp: &BlockPtr, buf: &[u8]) -> bool {
        self.metered.checksum(bp.cksum, buf) == bp.checksum
    }

    /// Reads `bps` (blocks laid end to end on disk from `bps[0].offset`,
    /// each uncompressed) into `buf` with one request to the first child in
    /// service, and verifies each: the fast path of a sequential read. A
    /// block whose copy does not verify (or a failed request) is read again
    /// through [`Vdev::read_block`], which tries every child and repairs.
    pub fn read_run(&mut self, bps: &[BlockPtr], buf: &mut [u8]) -> Result<(), ReadError> {
        let Some(first) = bps.first() else { return Ok(()) };
        let total: usize = bps.iter().map(|b| b.psize as usize).sum();
        if total != buf.len() || first.offset.checked_add(total as u64).is_none_or(|e| e > self.asize) {
            return Err(ReadError::NoGoodCopy);
        }
        let c = self.stats.iter().position(|s| !s.faulted).unwrap_or(0);
        let whole = self.child_read(c, first.offset, buf).is_ok();
        let mut at = 0usize;
        for bp in bps {
            let len = bp.psize as usize;
            if !whole || !self.verifies(bp, &buf[at..at + len]) {
                let good = self.read_block(bp)?;
                buf[at..at + len].copy_from_slice(&good);
            }
            at += len;
        }
        Ok(())
    }

    /// Reads the block `bp` points at from the first child whose copy
    /// matches its checksum, and repairs the children that did not.
    pub fn read_block(&mut self, bp: &BlockPtr) -> Result<Vec<u8>, ReadError> {
        let len = bp.psize as usize;
        if bp.offset.checked_add(len as u64).is_none_or(|e| e > self.asize) {
            return Err(ReadError::NoGoodCopy);
        }
        let mut buf = vec![0u8; len];
        let mut bad = Vec::new();
        let mut good = None;
        for c in 0..self.children.len() {
            match self.child_read(c, bp.offset, &mut buf) {
                Err(_) => {
                    self.stats[c].read_errors += 1;
                    bad.push(c);
                }
                Ok(()) if !self.verifies(bp, &buf) => {
                    self.stats[c].checksum_errors += 1;
                    bad.push(c);
                }
                Ok(()) => {
                    good = Some(c);
                    break;
                }
            }
        }
        if good.is_none() {
            return Err(ReadError::NoGoodCopy);
        }
        for c in bad {
            if self.stats[c].faulted {
                continue;
            }
            if self.child_write(c, bp.offset, &buf).is_ok() {
                self.stats[c].repaired_bytes += len as u64;
            } else {
                self.stats[c].write_errors += 1;
            }
        }
        Ok(buf)
    }

    /// The first child's copy of `len` bytes at `offset` that `accept`
    /// takes (an intent-log block: sealed, no block pointer names it).
    pub fn read_any<T>(
        &mut self,
        offset: u64,
        len: usize,
        accept: impl Fn(&[u8]) -> Option<T>,
    ) -> Option<T> {
        if offset
            .checked_add(len as u64)
            .is_none_or(|e| e > self.asize)
        {
            return None;
        }
        let mut buf = vec![0u8; len];
        for c in 0..self.children.len() {
            if self.child_read(c, offset, &mut buf).is_ok()
                && let Some(t) = accept(&buf)
            {
                return Some(t);
            }
        }
        None
    }

    /// Reads every child's copy and repairs the bad ones (scrub): unlike
    /// [`Vdev::read_block`] it does not stop at the first good copy.
    pub fn scrub_block(&mut self, bp: &BlockPtr) -> Result<(), ReadError> {
        let len = bp.psize as usize;
        if bp.offset.checked_add(len as u64).is_none_or(|e| e > self.asize) {
            return Err(ReadError::NoGoodCopy);
        }
        let mut good: Option<Vec<u8>> = None;
        let mut bad = Vec::new();
        let mut buf = vec![0u8; len];
        for c in 0..self.children.len() {
            match self.child_read(c, bp.offset, &mut buf) {
                Err(_) => {
                    self.stats[c].read_errors += 1;
                    bad.push(c);
                }
                Ok(()) if !self.verifies(bp, &buf) => {
                    self.stats[c].checksum_errors += 1;
                    bad.push(c);
                }
                Ok(()) => {
                    if good.is_none() {
                        good = Some(buf.clone());
                    }
                }
            }
        }
        let good = good.ok_or(ReadError::NoGoodCopy)?;
        for c in bad {
            if self.stats[c].faulted {
                continue;
            }
            if self.child_write(c, bp.offset, &good).is_ok() {
                self.stats[c].repaired_bytes += len as u64;
            } else {
                self.stats[c].write_errors += 1;
            }
        }
        Ok(())
    }

    /// Writes to every child in service; a child that fails is faulted.
    /// Succeeds if a child is still in service (each of them took it).
    pub fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), WriteError> {
        for c in 0..self.children.len() {
            if self.stats[c].faulted {
                continue;
            }
            if self.child_write(c, offset, data).is_err() {
                self.fault(c);
            }
        }
        self.any_in_service()
    }

    /// Flushes every child in service; a child that fails is faulted (what
    /// it took may not be durable). Succeeds only if a child is still in
    /// service: every one of them flushed.
    pub fn flush(&mut self) -> Result<(), WriteError> {
        for c in 0..self.children.len() {
            if self.stats[c].faulted {
                continue;
            }
            let t0 = self.metered.now();
            let r = self.children[c].flush();
            self.metered.meter.flush_ticks += self.metered.since(t0);
            self.metered.meter.flushes += 1;
            if r.is_err() {
                self.fault(c);
            }
        }
        self.any_in_service()
    }

    fn fault(&mut self, c: usize) {
        self.stats[c].write_errors += 1;
        self.stats[c].faulted = true;
    }

    fn any_in_service(&self) -> Result<(), WriteError> {
        if self.stats.iter().any(|s| !s.faulted) { Ok(()) } else { Err(WriteError) }
    }

    /// Children still in service.
    pub fn in_service(&self) -> usize {
        self.stats.iter().filter(|s| !s.faulted).count()
    }
}
