//! A RAM-backed disk over a read-only source: a boot-archive file that
//! storaged maps read-only (the `ramdisk=NAME` argument) and serves as a
//! machine disk through the same block ring as any disk. Reads come from
//! the source; writes are kept in memory, copy-on-write per
//! [`COW_BLOCK_BYTES`] block, in chunks of [`CHUNK_BYTES`] that storaged
//! takes from its budget as they are needed, up to a configured limit
//! (`ramdisk-mem-kib=N`). A write that would need more fails as an I/O
//! error and changes nothing; nothing written ever reaches the source.
//!
//! This is how a machine without a disk storaged can drive (Bochs, which
//! has no virtio-blk) still gives a VM its boot disk.

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use libipc::blkring::{BlockDevice, DiskError, ID_BYTES, SECTOR_BYTES};

/// The copy-on-write unit: a write to any sector of a block copies the
/// whole block from the source first.
pub const COW_BLOCK_BYTES: usize = 4096;
/// Memory for written blocks is taken in chunks of this many bytes.
pub const CHUNK_BYTES: usize = 64 * 1024;
/// The largest source served (an archive file larger than this is an
/// error in the description, not a disk).
pub const MAX_SOURCE_BYTES: u64 = 4 << 30;
/// The largest memory limit for written blocks.
pub const MAX_MEM_BYTES: u64 = 1 << 30;
/// The memory limit when the arguments give none.
pub const DEFAULT_MEM_KIB: u64 = 16 * 1024;

const BLOCKS_PER_CHUNK: usize = CHUNK_BYTES / COW_BLOCK_BYTES;

/// What the process provides: a new zeroed chunk of `bytes` bytes,
/// charged to its budget, or why not.
pub type ChunkAlloc<M> = Box<dyn FnMut(usize) -> Result<M, String>>;

/// The RAM disks storaged's arguments ask for: `ramdisk=NAME` (a boot
/// file; each one a disk, after the machine's own disks, in the order
/// given) and `ramdisk-mem-kib=N`, the memory each may use for written
/// blocks (a multiple of 64, at most 1 GiB; [`DEFAULT_MEM_KIB`] without).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RamDiskPlan {
    pub files: Vec<String>,
    pub mem_bytes: u64,
}

impl RamDiskPlan {
    /// The plan from storaged's arguments (`None`: no `ramdisk=`).
    pub fn parse(args: &[String]) -> Result<Option<Self>, String> {
        let mut files = Vec::new();
        let mut mem_kib = None;
        for a in args {
            if let Some(name) = a.strip_prefix("ramdisk=") {
                if name.is_empty() {
                    return Err(String::from("ramdisk=: no file name"));
                }
                files.push(String::from(name));
            } else if let Some(n) = a.strip_prefix("ramdisk-mem-kib=") {
                let kib: u64 = n.parse().map_err(|_| format!("ramdisk-mem-kib={n}: not a number of KiB"))?;
                if kib == 0 || !kib.is_multiple_of(CHUNK_BYTES as u64 / 1024) || kib > MAX_MEM_BYTES / 1024 {
                    return Err(format!(
                        "ramdisk-mem-kib={n}: must be a non-zero multiple of {} KiB, at most {} KiB",
                        CHUNK_BYTES / 1024,
                        MAX_MEM_BYTES / 1024
                    ));
                }
                mem_kib = Some(kib);
            }
        }
        if files.is_empty() {
            return match mem_kib {
                Some(_) => Err(String::from("ramdisk-mem-kib= without a ramdisk=NAME")),
                None => Ok(None),
            };
        }
        Ok(Some(Self { files, mem_bytes: mem_kib.unwrap_or(DEFAULT_MEM_KIB) * 1024 }))
    }
}

/// Whether a source of `len` bytes can be a RAM disk: whole sectors,
/// not empty, at most [`MAX_SOURCE_BYTES`].
pub fn check_size(len: u64) -> Result<(), String> {
    if len == 0 || !len.is_multiple_of(SECTOR_BYTES as u64) {
        return Err(format!("{len} bytes, not a non-zero multiple of the {SECTOR_BYTES}-byte sector"));
    }
    if len > MAX_SOURCE_BYTES {
        return Err(format!("{len} bytes, more than a RAM disk serves ({MAX_SOURCE_BYTES} bytes)"));
    }
    Ok(())
}

/// The disk: `source` read-only, written blocks in chunks `M`.
pub struct RamDisk<S, M> {
    source: S,
    id: [u8; ID_BYTES],
    /// Written blocks: block number to its place in `chunks`.
    written: BTreeMap<u64, usize>,
    chunks: Vec<M>,
    /// Places in `chunks` handed out so far.
    used: usize,
    limit_chunks: usize,
    alloc: ChunkAlloc<M>,
}

impl<S: AsRef<[u8]>, M: AsRef<[u8]> + AsMut<[u8]>> RamDisk<S, M> {
    /// A disk over `source` with serial `serial` that keeps at most
    /// `mem_bytes` of written blocks (rounded down to whole chunks).
    /// Refused: an empty source, one that is not a whole number of
    /// sectors, one over [`MAX_SOURCE_BYTES`], a limit under one chunk or
    /// over [`MAX_MEM_BYTES`].
    pub fn new(source: S, serial: &str, mem_bytes: u64, alloc: ChunkAlloc<M>) -> Result<Self, String> {
        check_size(source.as_ref().len() as u64)?;
        if mem_bytes < CHUNK_BYTES as u64 || mem_bytes > MAX_MEM_BYTES {
            return Err(format!("a memory limit of {mem_bytes} bytes: must be {CHUNK_BYTES}..={MAX_MEM_BYTES} bytes"));
        }
        let mut id = [0; ID_BYTES];
        let n = serial.len().min(ID_BYTES);
        id[..n].copy_from_slice(&serial.as_bytes()[..n]);
        Ok(Self {
            source,
            id,
            written: BTreeMap::new(),
            chunks: Vec::new(),
            used: 0,
            limit_chunks: (mem_bytes / CHUNK_BYTES as u64) as usize,
            alloc,
        })
    }

    /// Bytes of memory taken for written blocks (whole chunks).
    pub fn mem_bytes(&self) -> usize {
        self.chunks.len() * CHUNK_BYTES
    }

    /// Blocks written (each kept in memory).
    pub fn written_blocks(&self) -> usize {
        self.written.len()
    }

    fn len(&self) -> u64 {
        self.source.as_ref().len() as u64
    }

    /// The byte range `sector`.. of `bytes` bytes, if it lies on the disk
    /// and is whole sectors.
    fn range(&self, sector: u64, bytes: usize) -> Result<(u64, u64), DiskError> {
        let outside = DiskError { what: "RAM disk: range outside the disk" };
        if !bytes.is_multiple_of(SECTOR_BYTES) {
            return Err(DiskError { what: "RAM disk: not a whole number of sectors" });
        }
        let start = sector.checked_mul(SECTOR_BYTES as u64).ok_or(outside)?;
        let end = start.checked_add(bytes as u64).ok_or(outside)?;
        if end > self.len() {
            return Err(outside);
        }
        Ok((start, end))
    }

    /// The bytes of the block `block` as the disk holds them: `(slice of
    /// the written copy or the source)`.
    fn block_bytes(&self, block: u64) -> &[u8] {
        let start = block as usize * COW_BLOCK_BYTES;
        let end = (start + COW_BLOCK_BYTES).min(self.len() as usize);
        match self.written.get(&block) {
            Some(&place) => {
                let at = (place % BLOCKS_PER_CHUNK) * COW_BLOCK_BYTES;
                &self.chunks[place / BLOCKS_PER_CHUNK].as_ref()[at..at + (end - start)]
            }
            None => &self.source.as_ref()[start..end],
        }
    }

    /// A place for block `block`, its bytes copied from the source.
    fn copy_block(&mut self, block: u64) -> Result<usize, DiskError> {
        let place = self.used;
        if place / BLOCKS_PER_CHUNK >= self.chunks.len() {
            let chunk = (self.alloc)(CHUNK_BYTES).map_err(|e| {
                log::warn!("RAM disk: no memory for written blocks: {e}");
                DiskError { what: "RAM disk: no memory for written blocks" }
            })?;
            if chunk.as_ref().len() < CHUNK_BYTES {
                return Err(DiskError { what: "RAM disk: a memory chunk came short" });
            }
            self.chunks.push(chunk);
        }
        let start = block as usize * COW_BLOCK_BYTES;
        let end = (start + COW_BLOCK_BYTES).min(self.len() as usize);
        let at = (place % BLOCKS_PER_CHUNK) * COW_BLOCK_BYTES;
        let (source, chunks) = (&self.source, &mut self.chunks);
        chunks[place / BLOCKS_PER_CHUNK].as_mut()[at..at + (end - start)].copy_from_slice(&source.as_ref()[start..end]);
        self.used += 1;
        self.written.insert(block, place);
        Ok(place)
    }
}

impl<S: AsRef<[u8]>, M: AsRef<[u8]> + AsMut<[u8]>> BlockDevice for RamDisk<S, M> {
    fn capacity_sectors(&self) -> u64 {
        self.len() / SECTOR_BYTES as u64
    }

    fn read_only(&self) -> bool {
        false
    }

    fn read(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), DiskError> {
        let (start, end) = self.range(sector, buf.len())?;
        let mut at = start;
        while at < end {
            let block = at / COW_BLOCK_BYTES as u64;
            let off = (at % COW_BLOCK_BYTES as u64) as usize;
            let bytes = self.block_bytes(block);
            let n = (bytes.len() - off).min((end - at) as usize);
            let into = (at - start) as usize;
            buf[into..into + n].copy_from_slice(&bytes[off..off + n]);
            at += n as u64;
        }
        Ok(())
    }

    fn write(&mut self, sector: u64, data: &[u8]) -> Result<(), DiskError> {
        let (start, end) = self.range(sector, data.len())?;
        if start == end {
            return Ok(());
        }
        // All or nothing: the blocks not written before must fit under the
        // limit before any byte changes.
        let (first, last) = (start / COW_BLOCK_BYTES as u64, (end - 1) / COW_BLOCK_BYTES as u64);
        let new = (first..=last).filter(|b| !self.written.contains_key(b)).count();
        if self.used + new > self.limit_chunks * BLOCKS_PER_CHUNK {
            log::warn!(
                "RAM disk: a write of {} bytes at sector {sector} needs {new} more blocks in memory; the limit is {} KiB",
                data.len(),
                self.limit_chunks * CHUNK_BYTES / 1024
            );
            return Err(DiskError { what: "RAM disk: write over the memory limit" });
        }
        // Memory first (copies of the source: a failure here leaves the
        // disk's contents as they were), then the data.
        for block in first..=last {
            if !self.written.contains_key(&block) {
                self.copy_block(block)?;
            }
        }
        let mut at = start;
        while at < end {
            let block = at / COW_BLOCK_BYTES as u64;
            let off = (at % COW_BLOCK_BYTES as u64) as usize;
            let Some(&place) = self.written.get(&block) else {
                return Err(DiskError { what: "RAM disk: a copied block went missing" });
            };
            let block_len = ((block as usize + 1) * COW_BLOCK_BYTES).min(self.len() as usize) - block as usize * COW_BLOCK_BYTES;
            let n = (block_len - off).min((end - at) as usize);
            let from = (at - start) as usize;
            let base = (place % BLOCKS_PER_CHUNK) * COW_BLOCK_BYTES + off;
            self.chunks[place / BLOCKS_PER_CHUNK].as_mut()[base..base + n].copy_from_slice(&data[from..from + n]);
            at += n as u64;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), DiskError> {
        // Memory is as durable as this disk gets.
        Ok(())
    }

    fn id(&mut self) -> Result<[u8; ID_BYTES], DiskError> {
        Ok(self.id)
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use alloc::rc::Rc;
    use alloc::string::ToString;
    use alloc::vec;
    use core::cell::Cell;

    use super::*;

    /// A source whose every byte tells where it is.
    fn source(sectors: usize) -> Vec<u8> {
        (0..sectors * SECTOR_BYTES).map(|i| (i * 13 + i / 4096) as u8).collect()
    }

    /// Chunks from the heap, counted; `fail_after` refuses more.
    fn counted(fail_after: usize) -> (ChunkAlloc<Vec<u8>>, Rc<Cell<usize>>) {
        let n = Rc::new(Cell::new(0));
        let seen = n.clone();
        let alloc: ChunkAlloc<Vec<u8>> = Box::new(move |bytes| {
            if seen.get() >= fail_after {
                return Err("out of budget".to_string());
            }
            seen.set(seen.get() + 1);
            Ok(vec![0; bytes])
        });
        (alloc, n)
    }

    type HeapDisk = RamDisk<Vec<u8>, Vec<u8>>;

    fn disk(sectors: usize, mem: u64) -> (HeapDisk, Rc<Cell<usize>>) {
        let (alloc, n) = counted(usize::MAX);
        (RamDisk::new(source(sectors), "boot-disk", mem, alloc).unwrap(), n)
    }

    #[test]
    fn reads_come_from_the_source() {
        let (mut d, n) = disk(100, 1 << 20);
        assert_eq!(d.capacity_sectors(), 100);
        assert!(!d.read_only());
        let mut buf = vec![0; 37 * SECTOR_BYTES];
        d.read(11, &mut buf).unwrap();
        assert_eq!(buf, source(100)[11 * SECTOR_BYTES..48 * SECTOR_BYTES]);
        assert_eq!(&d.id().unwrap()[..9], b"boot-disk");
        assert_eq!((n.get(), d.mem_bytes()), (0, 0), "reading takes no memory");
    }

    #[test]
    fn writes_are_copy_on_write_per_block_and_the_source_is_untouched() {
        let src = source(100);
        let (alloc, n) = counted(usize::MAX);
        let mut d = RamDisk::new(&src[..], "d", 1 << 20, alloc).unwrap();
        // Sectors 7..10 straddle blocks 0 and 1 (8 sectors a block).
        let data = vec![0xee; 3 * SECTOR_BYTES];
        d.write(7, &data).unwrap();
        assert_eq!((d.written_blocks(), n.get(), d.mem_bytes()), (2, 1, CHUNK_BYTES));
        let mut all = vec![0; 100 * SECTOR_BYTES];
        d.read(0, &mut all).unwrap();
        let mut want = src.clone();
        want[7 * SECTOR_BYTES..10 * SECTOR_BYTES].fill(0xee);
        assert_eq!(all, want, "the written sectors changed, the rest of their blocks kept the source's bytes");
        // Writing the same block again takes no more memory.
        d.write(0, &vec![1; SECTOR_BYTES]).unwrap();
        assert_eq!(d.written_blocks(), 2);
        d.flush().unwrap();
        assert_eq!(src, source(100), "the source never changes");
    }

    #[test]
    fn the_last_short_block_is_served_whole() {
        // 13 sectors: blocks of 8 and 5 sectors.
        let (mut d, _) = disk(13, 1 << 20);
        d.write(12, &vec![9; SECTOR_BYTES]).unwrap();
        let mut buf = vec![0; 13 * SECTOR_BYTES];
        d.read(0, &mut buf).unwrap();
        let mut want = source(13);
        want[12 * SECTOR_BYTES..].fill(9);
        assert_eq!(buf, want);
    }

    #[test]
    fn a_write_over_the_memory_limit_fails_and_changes_nothing() {
        // One chunk: 16 blocks of 4 KiB.
        let (mut d, n) = disk(1024, CHUNK_BYTES as u64);
        d.write(0, &vec![1; 15 * COW_BLOCK_BYTES]).unwrap();
        // Two new blocks where one is left: refused whole.
        let e = d.write(15 * 8, &vec![2; 2 * COW_BLOCK_BYTES]).unwrap_err();
        assert_eq!(e.what, "RAM disk: write over the memory limit");
        let mut buf = vec![0; 2 * COW_BLOCK_BYTES];
        d.read(15 * 8, &mut buf).unwrap();
        assert_eq!(buf, source(1024)[15 * COW_BLOCK_BYTES..17 * COW_BLOCK_BYTES]);
        // Blocks already in memory can still be written, and the last one fits.
        d.write(0, &vec![3; 15 * COW_BLOCK_BYTES]).unwrap();
        d.write(15 * 8, &vec![4; COW_BLOCK_BYTES]).unwrap();
        assert!(d.write(16 * 8, &vec![5; SECTOR_BYTES]).is_err());
        assert_eq!((n.get(), d.mem_bytes(), d.written_blocks()), (1, CHUNK_BYTES, 16));
    }

    #[test]
    fn a_process_out_of_budget_fails_the_write_cleanly() {
        let (alloc, _) = counted(1);
        let mut d = RamDisk::new(source(1024), "d", 4 * CHUNK_BYTES as u64, alloc).unwrap();
        d.write(0, &vec![1; CHUNK_BYTES]).unwrap();
        let e = d.write(128, &vec![2; COW_BLOCK_BYTES]).unwrap_err();
        assert_eq!(e.what, "RAM disk: no memory for written blocks");
        let mut buf = vec![0; COW_BLOCK_BYTES];
        d.read(128, &mut buf).unwrap();
        assert_eq!(buf, source(1024)[128 * SECTOR_BYTES..136 * SECTOR_BYTES]);
        d.read(0, &mut buf).unwrap();
        assert_eq!(buf, vec![1; COW_BLOCK_BYTES]);
    }

    #[test]
    fn bad_sources_and_limits_are_refused() {
        let alloc = || counted(usize::MAX).0;
        let e = RamDisk::new(vec![0u8; 1000], "d", 1 << 20, alloc()).err().unwrap();
        assert_eq!(e, "1000 bytes, not a non-zero multiple of the 512-byte sector");
        assert!(RamDisk::new(Vec::new(), "d", 1 << 20, alloc()).err().unwrap().starts_with("0 bytes"));
        assert!(RamDisk::new(vec![0u8; 512], "d", 4096, alloc()).err().unwrap().contains("memory limit"));
        assert!(RamDisk::new(vec![0u8; 512], "d", MAX_MEM_BYTES + 1, alloc()).err().unwrap().contains("memory limit"));
        // An absurd size (checked on the length alone: no such source is built here).
        let big = MAX_SOURCE_BYTES + SECTOR_BYTES as u64;
        let e = check_size(big).unwrap_err();
        assert!(e.contains("more than a RAM disk serves"), "{e}");
    }

    #[test]
    fn out_of_range_and_huge_requests_fail_without_a_panic() {
        let (mut d, n) = disk(64, 1 << 20);
        let mut buf = vec![0; SECTOR_BYTES];
        for sector in [64, 65, u64::MAX / 512, u64::MAX / 512 + 1, u64::MAX] {
            assert_eq!(d.read(sector, &mut buf).unwrap_err().what, "RAM disk: range outside the disk", "sector {sector}");
            assert_eq!(d.write(sector, &buf).unwrap_err().what, "RAM disk: range outside the disk", "sector {sector}");
        }
        // A request running past the end, and one larger than the disk.
        let mut two = vec![0; 2 * SECTOR_BYTES];
        assert!(d.read(63, &mut two).is_err());
        assert!(d.write(63, &two).is_err());
        let mut huge = vec![0; 65 * SECTOR_BYTES];
        assert!(d.read(0, &mut huge).is_err());
        assert!(d.write(0, &huge).is_err());
        // Not whole sectors.
        assert!(d.read(0, &mut [0; 100]).is_err());
        assert!(d.write(0, &[0; 513]).is_err());
        assert_eq!((n.get(), d.written_blocks()), (0, 0), "nothing failed half-way");
        d.read(63, &mut buf).unwrap();
        assert_eq!(buf, source(64)[63 * SECTOR_BYTES..]);
    }

    #[test]
    fn arguments_name_the_files_and_the_limit() {
        let args = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(RamDiskPlan::parse(&args(&["pool=zones"])), Ok(None));
        assert_eq!(
            RamDiskPlan::parse(&args(&["ramdisk=boot-disk.img", "ramdisk=b.img", "ramdisk-mem-kib=128"])),
            Ok(Some(RamDiskPlan { files: vec!["boot-disk.img".into(), "b.img".into()], mem_bytes: 128 * 1024 }))
        );
        assert_eq!(
            RamDiskPlan::parse(&args(&["ramdisk=a"])).unwrap().unwrap().mem_bytes,
            DEFAULT_MEM_KIB * 1024
        );
        for bad in [&["ramdisk="][..], &["ramdisk=a", "ramdisk-mem-kib=100"], &["ramdisk=a", "ramdisk-mem-kib=0"],
            &["ramdisk=a", "ramdisk-mem-kib=x"], &["ramdisk=a", "ramdisk-mem-kib=99999999999"], &["ramdisk-mem-kib=64"]]
        {
            assert!(RamDiskPlan::parse(&args(bad)).is_err(), "{bad:?}");
        }
    }
}
