//! Disks that fail the way real ones do, for the crash and ztest-style
//! tests: a volatile write cache that a power cut loses in part (any subset
//! of the unflushed writes, in any order, the last one torn at a sector),
//! bit flips, and a dead child.

use alloc::rc::Rc;
use alloc::vec::Vec;
use core::cell::Cell;

use crate::disk::{Disk, DiskError};
use crate::format::SECTOR;

/// The machine's power, shared by every disk of a pool: it goes off at the
/// `cut_at`-th write counted over all of them.
#[derive(Debug, Default)]
pub struct Power {
    pub writes: Cell<u64>,
    pub cut_at: Cell<Option<u64>>,
    pub off: Cell<bool>,
}

/// A tiny deterministic generator (xorshift64*), so a seed reproduces a run.
#[derive(Debug, Clone)]
pub struct Rng(pub u64);

impl Rng {
    // Not an Iterator: it never ends, and tests call it as a plain function.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> u64 {
        let mut x = self.0.max(1);
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
}

/// A disk with a volatile write cache.
pub struct CrashDisk {
    /// What survives a power cut.
    pub durable: Vec<u8>,
    /// Writes not yet flushed, in order.
    cache: Vec<(u64, Vec<u8>)>,
    power: Rc<Power>,
    rng: Rng,
}

impl CrashDisk {
    pub fn new(image: Vec<u8>, power: Rc<Power>, seed: u64) -> Self {
        CrashDisk { durable: image, cache: Vec::new(), power, rng: Rng(seed) }
    }

    /// The power went off: a random subset of the cached writes reaches the
    /// platter, in random order, each possibly torn after some sectors.
    fn lose_cache(&mut self) {
        let mut cache = core::mem::take(&mut self.cache);
        while !cache.is_empty() {
            let i = self.rng.below(cache.len() as u64) as usize;
            let (off, data) = cache.swap_remove(i);
            match self.rng.below(3) {
                0 => {}
                1 => self.apply(off, &data),
                _ => {
                    let sectors = data.len() as u64 / SECTOR;
                    let keep = self.rng.below(sectors + 1) as usize * SECTOR as usize;
                    self.apply(off, &data[..keep]);
                }
            }
        }
    }

    fn apply(&mut self, off: u64, data: &[u8]) {
        let o = off as usize;
        self.durable[o..o + data.len()].copy_from_slice(data);
    }

    fn check_power(&mut self) -> Result<(), DiskError> {
        if self.power.off.get() {
            if !self.cache.is_empty() {
                self.lose_cache();
            }
            return Err(DiskError);
        }
        Ok(())
    }
}

impl Disk for CrashDisk {
    fn size(&self) -> u64 {
        self.durable.len() as u64
    }
    fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), DiskError> {
        self.check_power()?;
        let o = offset as usize;
        if o.checked_add(buf.len()).is_none_or(|e| e > self.durable.len()) {
            return Err(DiskError);
        }
        buf.copy_from_slice(&self.durable[o..o + buf.len()]);
        for (off, data) in &self.cache {
            let (a, b) = (*off as usize, *off as usize + data.len());
            let (lo, hi) = (a.max(o), b.min(o + buf.len()));
            if lo < hi {
                buf[lo - o..hi - o].copy_from_slice(&data[lo - a..hi - a]);
            }
        }
        Ok(())
    }
    fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), DiskError> {
        self.check_power()?;
        if (offset as usize).checked_add(data.len()).is_none_or(|e| e > self.durable.len()) {
            return Err(DiskError);
        }
        let n = self.power.writes.get() + 1;
        self.power.writes.set(n);
        self.cache.push((offset, data.to_vec()));
        if self.power.cut_at.get() == Some(n) {
            self.power.off.set(true);
            self.lose_cache();
            return Err(DiskError);
        }
        Ok(())
    }
    fn flush(&mut self) -> Result<(), DiskError> {
        self.check_power()?;
        for (off, data) in core::mem::take(&mut self.cache) {
            self.apply(off, &data);
        }
        Ok(())
    }
}

impl CrashDisk {
    /// After the cut: what the disk holds when the machine comes back.
    pub fn after_power_cut(mut self) -> Vec<u8> {
        self.lose_cache();
        self.durable
    }
}
