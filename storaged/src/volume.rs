//! Pool volumes as block devices, and machine disks as pool disks: the
//! wiring that lets storaged serve a VM disk that is a volume of the
//! copy-on-write pool (`zones/<uuid>-disk<N>`, [`alcove_pool`]) over the same
//! block ring as a whole machine disk. The ring server does not change: a
//! [`PoolVolume`] is one more [`BlockDevice`].
//!
//! A guest's FLUSH is [`alcove_pool::Pool::flush`]: it completes only once
//! everything written before it is durable. The data is on disk already;
//! the FLUSH writes the open group's new block pointers to the pool's
//! intent log and flushes once (import replays the log after a power cut),
//! or commits the group when the log cannot take them. A
//! write that finds the open group at its bound
//! ([`alcove_pool::Pool::set_dirty_limit`], [`crate::DIRTY_LIMIT_BYTES`] in
//! storaged) commits the group first, so unflushed writes never pile up in
//! storaged's memory.

use alloc::format;
use alloc::rc::Rc;
use alloc::string::String;
use core::cell::RefCell;

use alcove_pool::{Error as PoolError, Pool};
use libipc::blkring::{BlockDevice, DiskError, ID_BYTES, SECTOR_BYTES};

/// A machine disk (sector-addressed) as a disk of the pool (byte-addressed).
pub struct MachineDisk<D: BlockDevice>(pub D);

impl<D: BlockDevice> alcove_pool::Disk for MachineDisk<D> {
    fn size(&self) -> u64 {
        self.0.capacity_sectors() * SECTOR_BYTES as u64
    }
    fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), alcove_pool::disk::DiskError> {
        if !offset.is_multiple_of(SECTOR_BYTES as u64) {
            return Err(alcove_pool::disk::DiskError);
        }
        self.0.read(offset / SECTOR_BYTES as u64, buf).map_err(|_| alcove_pool::disk::DiskError)
    }
    fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), alcove_pool::disk::DiskError> {
        if !offset.is_multiple_of(SECTOR_BYTES as u64) {
            return Err(alcove_pool::disk::DiskError);
        }
        self.0.write(offset / SECTOR_BYTES as u64, data).map_err(|_| alcove_pool::disk::DiskError)
    }
    fn flush(&mut self) -> Result<(), alcove_pool::disk::DiskError> {
        self.0.flush().map_err(|_| alcove_pool::disk::DiskError)
    }
}

/// One volume (or snapshot, read-only) of a pool shared by every device
/// storaged serves from it.
pub struct PoolVolume<P: alcove_pool::Disk> {
    pool: Rc<RefCell<Pool<P>>>,
    name: String,
    sectors: u64,
    read_only: bool,
    guid: u64,
}

impl<P: alcove_pool::Disk> PoolVolume<P> {
    /// The volume `name` of `pool`; `Err` if there is none.
    pub fn open(pool: Rc<RefCell<Pool<P>>>, name: &str) -> Result<Self, PoolError> {
        let info = pool.borrow().get(name)?;
        Ok(Self {
            pool,
            name: name.into(),
            sectors: info.volsize / SECTOR_BYTES as u64,
            read_only: info.snapshot,
            guid: info.guid,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

/// The guest sees an I/O error; storaged's log says which and why.
fn io(volume: &str, what: &'static str, e: PoolError) -> DiskError {
    log::warn!("{volume}: {what}: {e}");
    match e {
        PoolError::NoSpace => DiskError { what: "pool volume write (out of space)" },
        PoolError::Checksum { .. } => DiskError { what: "pool volume read (checksum error, no good copy)" },
        _ => DiskError { what },
    }
}

impl<P: alcove_pool::Disk> BlockDevice for PoolVolume<P> {
    fn capacity_sectors(&self) -> u64 {
        self.sectors
    }
    fn read_only(&self) -> bool {
        self.read_only
    }
    fn read(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), DiskError> {
        let at = sector.checked_mul(SECTOR_BYTES as u64).ok_or(DiskError { what: "pool volume read" })?;
        self.pool.borrow_mut().read(&self.name, at, buf).map_err(|e| io(&self.name, "pool volume read", e))
    }
    fn write(&mut self, sector: u64, data: &[u8]) -> Result<(), DiskError> {
        let at = sector.checked_mul(SECTOR_BYTES as u64).ok_or(DiskError { what: "pool volume write" })?;
        let mut pool = self.pool.borrow_mut();
        match pool.write(&self.name, at, data) {
            // The open group holds its bound: commit it, then write.
            Err(PoolError::DirtyFull { .. }) => {
                pool.sync().map_err(|e| io(&self.name, "pool commit (dirty bound)", e))?;
                pool.write(&self.name, at, data)
            }
            // No room while the open group holds writes: the blocks they
            // replace come free when it commits (copy-on-write), so commit
            // it and try once more; out of space only if still so.
            Err(PoolError::NoSpace) if pool.dirty_bytes() > 0 => {
                pool.sync().map_err(|e| io(&self.name, "pool commit (to free replaced blocks)", e))?;
                pool.write(&self.name, at, data)
            }
            other => other,
        }
        .map_err(|e| io(&self.name, "pool volume write", e))
    }
    fn flush(&mut self) -> Result<(), DiskError> {
        self.pool.borrow_mut().flush().map_err(|e| io(&self.name, "pool flush (intent log or commit)", e))
    }
    fn id(&mut self) -> Result<[u8; ID_BYTES], DiskError> {
        // The volume's guid: stable across imports, unique in the pool.
        let mut id = [0u8; ID_BYTES];
        let s = format!("zvol-{:015x}", self.guid >> 4);
        id[..s.len().min(ID_BYTES)].copy_from_slice(&s.as_bytes()[..s.len().min(ID_BYTES)]);
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use alloc::vec;
    use alloc::vec::Vec;

    use libipc::blkring::{Doorbell, KickError, MemDisk, PAGE_BYTES, RingClient, RingRegion};
    use libipc::interfaces::{StorageError, storage};

    use super::*;
    use crate::{Disk, RingFactory, Storaged};

    #[derive(Default)]
    struct Rings {
        bounce: Vec<u8>,
    }

    impl RingFactory for Rings {
        type Ring = Vec<u8>;
        type Client = ();
        fn create(&mut self, pages: usize) -> Result<(Vec<u8>, abi::CapSlot), String> {
            Ok((vec![0; pages * PAGE_BYTES], 400))
        }
        fn destroy(&mut self, _ring: Vec<u8>) {}
        fn bounce(&mut self) -> &mut [u8] {
            if self.bounce.is_empty() {
                self.bounce = vec![0; 16 * PAGE_BYTES];
            }
            &mut self.bounce
        }
        fn watch_caller(&mut self) -> Result<(), String> {
            Ok(())
        }
        fn has_ended(&self, _client: &()) -> bool {
            false
        }
        fn release(&mut self, _client: ()) {}
    }

    type Server = Storaged<PoolVolume<MachineDisk<MemDisk>>, Rings>;

    struct Bell {
        storaged: Rc<RefCell<Server>>,
        handle: u32,
    }

    impl Doorbell for Bell {
        fn kick(&mut self, region: &mut dyn RingRegion) -> Result<(), KickError> {
            let mut s = self.storaged.borrow_mut();
            let theirs = s.ring_memory(self.handle).ok_or(KickError::Refused(StorageError::NoSuchHandle { handle: self.handle }))?;
            region.read(0, &mut theirs[..]);
            storage::Server::kick(&mut *s, self.handle).map_err(KickError::Refused)?;
            region.write(0, s.ring_memory(self.handle).expect("still open"));
            Ok(())
        }
    }

    fn serve(pool: &Rc<RefCell<Pool<MachineDisk<MemDisk>>>>, names: &[&str]) -> Rc<RefCell<Server>> {
        let disks = names.iter().map(|n| Disk::new(n, PoolVolume::open(pool.clone(), n).unwrap())).collect();
        Rc::new(RefCell::new(Storaged::new(disks, Rings::default())))
    }

    fn ring(s: &Rc<RefCell<Server>>, index: u32) -> RingClient<Vec<u8>, Bell> {
        let opened = storage::Server::open(&mut *s.borrow_mut(), index).unwrap();
        let region = s.borrow_mut().ring_memory(opened.handle).unwrap().clone();
        RingClient::new(region, Bell { storaged: s.clone(), handle: opened.handle }).unwrap()
    }

    /// A VM disk that is a pool volume, over the block ring: what a FLUSH
    /// acknowledged survives a power cut (the pool dropped unsynced and
    /// imported again from its machine disk); what was written after it
    /// does not; a clone of a snapshot serves a second VM and its writes
    /// leave the origin alone.
    #[test]
    fn a_volume_is_a_vm_disk_over_the_block_ring() {
        let machine = MachineDisk(MemDisk::new(32 * 2048, "pool-disk"));
        let pool = Pool::create("zones", vec![machine], 9).unwrap();
        let pool = Rc::new(RefCell::new(pool));
        let vol = alcove_pool::pool::volume_name("zones", "0f0e4a3c-1111-4222-8333-944455556666", 0);
        pool.borrow_mut().create_volume(&vol, 8 << 20, 8192).unwrap();
        let s = serve(&pool, &[&vol]);
        let mut c = ring(&s, 0);
        assert_eq!(c.capacity_sectors(), (8 << 20) / 512);
        assert_eq!(&c.get_id().unwrap()[..5], b"zvol-");
        let flushed: Vec<u8> = (0..64 * 512).map(|i| (i * 13 + 1) as u8).collect();
        c.write(100, &flushed).unwrap();
        c.flush().unwrap();
        c.write(5000, &[7u8; 4096]).unwrap();
        let mut back = vec![0u8; 4096];
        c.read(5000, &mut back).unwrap();
        assert_eq!(back, [7u8; 4096], "reads see unflushed writes");
        // Power cut: the pool goes without a commit; import from the disk.
        drop(c);
        drop(s);
        let disk = Rc::try_unwrap(pool).ok().unwrap().into_inner().into_disks().pop().unwrap();
        let pool = Rc::new(RefCell::new(Pool::import(vec![disk]).unwrap()));
        pool.borrow_mut().snapshot(&format!("{vol}@golden")).unwrap();
        pool.borrow_mut().clone_snapshot(&format!("{vol}@golden"), "zones/second-disk0").unwrap();
        let s = serve(&pool, &[&vol, "zones/second-disk0"]);
        let mut c = ring(&s, 0);
        let mut got = vec![0u8; flushed.len()];
        c.read(100, &mut got).unwrap();
        assert_eq!(got, flushed, "flushed data survived");
        c.read(5000, &mut back).unwrap();
        assert_eq!(back, [0u8; 4096], "unflushed data did not");
        let mut clone = ring(&s, 1);
        clone.write(100, &[9u8; 512]).unwrap();
        clone.flush().unwrap();
        c.read(100, &mut got).unwrap();
        assert_eq!(got, flushed, "the clone's writes leave the origin alone");
        clone.read(100, &mut got[..512]).unwrap();
        assert_eq!(&got[..512], &[9u8; 512]);
        // The FLUSH went to the intent log: commit before the full verify.
        pool.borrow_mut().sync().unwrap();
        pool.borrow_mut().verify(false).unwrap();
    }

    /// A guest that writes and never flushes: the open group reaches the
    /// pool's dirty bound, and the write commits it instead of failing or
    /// holding ever more in storaged's memory.
    #[test]
    fn writes_past_the_dirty_bound_commit_the_group() {
        let pool = Pool::create("zones", vec![MachineDisk(MemDisk::new(16 * 2048, "d"))], 11).unwrap();
        let pool = Rc::new(RefCell::new(pool));
        pool.borrow_mut().create_volume("zones/v", 4 << 20, 4096).unwrap();
        pool.borrow_mut().set_dirty_limit(Some(64 * 1024));
        let txg = pool.borrow().txg();
        let s = serve(&pool, &["zones/v"]);
        let mut c = ring(&s, 0);
        let chunk: Vec<u8> = (0..32 * 1024).map(|i| (i % 253) as u8 | 1).collect();
        for i in 0..32u64 {
            c.write(i * 64, &chunk).unwrap();
            assert!(pool.borrow().dirty_bytes() <= 64 * 1024 + chunk.len() as u64);
        }
        assert!(pool.borrow().txg() > txg, "the bound made commits");
        let mut back = vec![0u8; chunk.len()];
        c.read(31 * 64, &mut back).unwrap();
        assert_eq!(back, chunk);
    }

    /// A guest that writes without flushing: the open group's worst-case
    /// commit (its indirect blocks, the MOS) grows with it, and copy-on-
    /// write overwrites need new room while the blocks they replace come
    /// free only when their group commits. A write the pool refuses for
    /// room while the open group holds writes commits the group and tries
    /// again: "out of space" only when the pool is out of it. (Before, a
    /// 4 MiB pool took 13 chunks of 64 KiB unflushed, and refused an
    /// overwrite of data it held with half the pool free.)
    #[test]
    fn unflushed_writes_commit_for_room_before_the_pool_says_full() {
        let chunk = |seed: u64| -> Vec<u8> { (0..64 * 1024u64).map(|i| ((i + seed) % 251) as u8 | 1).collect() };
        let new_pool = || {
            let pool = Pool::create("zones", vec![MachineDisk(MemDisk::new(4 * 2048, "small"))], 12).unwrap();
            let pool = Rc::new(RefCell::new(pool));
            pool.borrow_mut().create_volume("zones/v-disk0", 64 << 20, 4096).unwrap();
            pool
        };
        // New data, never flushed, until the pool refuses: most of it.
        let pool = new_pool();
        let s = serve(&pool, &["zones/v-disk0"]);
        let mut c = ring(&s, 0);
        let mut filled = 0;
        while filled < 100 && c.write(filled * 128, &chunk(filled)).is_ok() {
            filled += 1;
        }
        assert!((40..64).contains(&filled), "{filled} chunks of 64 KiB in a 4 MiB pool");
        c.flush().unwrap();
        let mut back = vec![0u8; 64 * 1024];
        c.read((filled - 1) * 128, &mut back).unwrap();
        assert!(back == chunk(filled - 1));
        // Data it holds (1.5 MiB, committed), overwritten twice over
        // without a flush.
        let pool = new_pool();
        let s = serve(&pool, &["zones/v-disk0"]);
        let mut c = ring(&s, 0);
        for i in 0..24 {
            c.write(i * 128, &chunk(i)).unwrap();
        }
        c.flush().unwrap();
        for round in 0..2u64 {
            for i in 0..24 {
                c.write(i * 128, &chunk(1000 * (round + 1) + i)).unwrap_or_else(|e| panic!("round {round} chunk {i}: {e}"));
            }
        }
        for i in 0..24 {
            c.read(i * 128, &mut back).unwrap();
            assert!(back == chunk(2000 + i), "chunk {i}");
        }
    }

    #[test]
    fn a_full_pool_is_an_io_error_and_the_ring_goes_on() {
        let pool = Pool::create("zones", vec![MachineDisk(MemDisk::new(4 * 2048, "small"))], 10).unwrap();
        let pool = Rc::new(RefCell::new(pool));
        pool.borrow_mut().create_volume("zones/big-disk0", 64 << 20, 4096).unwrap();
        let s = serve(&pool, &["zones/big-disk0"]);
        let mut c = ring(&s, 0);
        let chunk: Vec<u8> = (0..64 * 1024).map(|i| (i % 251) as u8 | 1).collect();
        let mut failed = false;
        for i in 0..100u64 {
            if c.write(i * 128, &chunk).is_err() {
                failed = true;
                break;
            }
        }
        assert!(failed, "a 4 MiB pool cannot take 6 MiB");
        c.flush().unwrap();
        let mut back = vec![0u8; chunk.len()];
        c.read(0, &mut back).unwrap();
        assert_eq!(back, chunk);
    }
}
