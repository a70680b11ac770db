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
use crate::format::{BlockPtr, checksum};

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
}

impl<D: Disk> Vdev<D> {
    pub fn new(children: Vec<D>, asize: u64) -> Self {
        let stats = vec![ChildStats::default(); children.len()];
        Vdev { children, stats, asize }
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
            match self.children[c].read(bp.offset, &mut buf) {
                Err(_) => {
                    self.stats[c].read_errors += 1;
                    bad.push(c);
                }
                Ok(()) if checksum(&buf) != bp.checksum => {
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
            if self.children[c].write(bp.offset, &buf).is_ok() {
                self.stats[c].repaired_bytes += len as u64;
            } else {
                self.stats[c].write_errors += 1;
            }
        }
        Ok(buf)
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
            match self.children[c].read(bp.offset, &mut buf) {
                Err(_) => {
                    self.stats[c].read_errors += 1;
                    bad.push(c);
                }
                Ok(()) if checksum(&buf) != bp.checksum => {
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
            if self.children[c].write(bp.offset, &good).is_ok() {
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
            if self.children[c].write(offset, data).is_err() {
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
            if self.children[c].flush().is_err() {
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
