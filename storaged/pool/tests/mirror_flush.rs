//! A mirror's commit counts only on copies that took every write and
//! flushed: a child whose flush (or write) fails is faulted and reported,
//! and a commit no child in service holds is refused, never acknowledged.

use std::cell::Cell;
use std::rc::Rc;

use alcove_pool::disk::DiskError;
use alcove_pool::{Disk, MemDisk, Pool};

const MIB: usize = 1024 * 1024;

/// What a test makes one disk do wrong, switched on and off from outside.
#[derive(Default)]
struct Faults {
    flush: Cell<bool>,
    write: Cell<bool>,
    /// Writes the disk took (failed ones not counted).
    writes: Cell<u64>,
}

struct Flaky {
    disk: MemDisk,
    faults: Rc<Faults>,
}

impl Disk for Flaky {
    fn size(&self) -> u64 {
        self.disk.size()
    }
    fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), DiskError> {
        self.disk.read(offset, buf)
    }
    fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), DiskError> {
        if self.faults.write.get() {
            return Err(DiskError);
        }
        self.faults.writes.set(self.faults.writes.get() + 1);
        self.disk.write(offset, data)
    }
    fn flush(&mut self) -> Result<(), DiskError> {
        if self.faults.flush.get() { Err(DiskError) } else { Ok(()) }
    }
}

fn mirror() -> (Pool<Flaky>, Rc<Faults>, Rc<Faults>) {
    let (a, b) = (Rc::new(Faults::default()), Rc::new(Faults::default()));
    let disks = vec![
        Flaky { disk: MemDisk::new(8 * MIB), faults: a.clone() },
        Flaky { disk: MemDisk::new(8 * MIB), faults: b.clone() },
    ];
    let mut pool = Pool::create("zones", disks, 77).unwrap();
    pool.create_volume("zones/v", 1 << 20, 4096).unwrap();
    (pool, a, b)
}

/// The side that failed its flush is faulted and reported; the other side
/// flushed, so the commit is durable there and is acknowledged; the
/// faulted side takes no more writes.
#[test]
fn a_child_that_fails_its_flush_is_faulted_and_the_rest_commit() {
    let (mut pool, _a, b) = mirror();
    pool.write("zones/v", 0, &[5u8; 4096]).unwrap();
    b.flush.set(true);
    pool.sync().expect("side 0 flushed: the group is durable there");
    assert!(pool.child_stats()[1].faulted, "side 1 failed its flush");
    assert!(!pool.child_stats()[0].faulted);
    assert_eq!(pool.state(), "DEGRADED");
    let before = b.writes.get();
    pool.write("zones/v", 4096, &[6u8; 4096]).unwrap();
    pool.sync().unwrap();
    assert_eq!(b.writes.get(), before, "a faulted side is out of service");
    // What was acknowledged is on side 0: it imports alone.
    let disks = pool.into_disks();
    let side0 = disks.into_iter().next().unwrap();
    let mut pool = Pool::import(vec![side0]).unwrap();
    let mut got = vec![0u8; 8192];
    pool.read("zones/v", 0, &mut got).unwrap();
    assert_eq!(&got[..4096], &[5u8; 4096]);
    assert_eq!(&got[4096..], &[6u8; 4096]);
}

/// Side 0 misses the group's writes and side 1, which took them, fails its
/// flush: no copy holds the group durably, so the commit must fail (the
/// pool suspends) instead of counting side 0's flush as enough.
#[test]
fn a_commit_no_child_holds_durably_is_refused() {
    let (mut pool, a, b) = mirror();
    pool.write("zones/v", 0, &[5u8; 4096]).unwrap();
    a.write.set(true);
    b.flush.set(true);
    assert!(pool.sync().is_err(), "no copy took the writes and flushed");
    assert_eq!(pool.state(), "FAULTED");
    assert!(pool.child_stats().iter().all(|s| s.faulted));
    assert!(pool.write("zones/v", 0, &[1u8; 512]).is_err(), "a suspended pool takes no writes");
}
