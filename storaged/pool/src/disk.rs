//! The disks a pool lives on: byte-addressed, sector-aligned reads and
//! writes, and a flush that makes completed writes durable.

use alloc::vec;
use alloc::vec::Vec;

/// A disk failed the request (the pool counts it against the vdev child).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskError;

/// One disk. Offsets and lengths are multiples of [`crate::format::SECTOR`].
pub trait Disk {
    /// Size in bytes.
    fn size(&self) -> u64;
    fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), DiskError>;
    fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), DiskError>;
    /// Returns once every write completed before it is durable.
    fn flush(&mut self) -> Result<(), DiskError>;
}

/// A disk in memory (tests, and the host tool's scratch pools).
#[derive(Clone, Debug)]
pub struct MemDisk {
    pub bytes: Vec<u8>,
}

impl MemDisk {
    pub fn new(size: usize) -> Self {
        MemDisk { bytes: vec![0; size] }
    }
}

fn range(len: usize, offset: u64, n: usize) -> Result<core::ops::Range<usize>, DiskError> {
    let start = usize::try_from(offset).map_err(|_| DiskError)?;
    let end = start.checked_add(n).ok_or(DiskError)?;
    if end > len {
        return Err(DiskError);
    }
    Ok(start..end)
}

impl Disk for MemDisk {
    fn size(&self) -> u64 {
        self.bytes.len() as u64
    }
    fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), DiskError> {
        let r = range(self.bytes.len(), offset, buf.len())?;
        buf.copy_from_slice(&self.bytes[r]);
        Ok(())
    }
    fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), DiskError> {
        let r = range(self.bytes.len(), offset, data.len())?;
        self.bytes[r].copy_from_slice(data);
        Ok(())
    }
    fn flush(&mut self) -> Result<(), DiskError> {
        Ok(())
    }
}

impl<D: Disk + ?Sized> Disk for &mut D {
    fn size(&self) -> u64 {
        (**self).size()
    }
    fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), DiskError> {
        (**self).read(offset, buf)
    }
    fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), DiskError> {
        (**self).write(offset, data)
    }
    fn flush(&mut self) -> Result<(), DiskError> {
        (**self).flush()
    }
}

/// A disk in a host file (the host tool).
#[cfg(feature = "std")]
pub struct FileDisk {
    file: std::fs::File,
    size: u64,
}

#[cfg(feature = "std")]
impl FileDisk {
    pub fn open(path: &std::path::Path) -> std::io::Result<Self> {
        let file = std::fs::OpenOptions::new().read(true).write(true).open(path)?;
        let size = file.metadata()?.len();
        Ok(FileDisk { file, size })
    }
}

#[cfg(feature = "std")]
impl Disk for FileDisk {
    fn size(&self) -> u64 {
        self.size
    }
    fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), DiskError> {
        use std::os::unix::fs::FileExt;
        self.file.read_exact_at(buf, offset).map_err(|_| DiskError)
    }
    fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), DiskError> {
        use std::os::unix::fs::FileExt;
        if offset.checked_add(data.len() as u64).is_none_or(|e| e > self.size) {
            return Err(DiskError);
        }
        self.file.write_all_at(data, offset).map_err(|_| DiskError)
    }
    fn flush(&mut self) -> Result<(), DiskError> {
        self.file.sync_data().map_err(|_| DiskError)
    }
}
