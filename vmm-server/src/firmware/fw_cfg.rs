//! QEMU's firmware configuration device (fw_cfg) on its x86 I/O ports: the
//! interface SeaBIOS and OVMF read the VM's shape through (RAM map, vCPU
//! count, boot order, ACPI tables). Spec: QEMU `docs/specs/fw_cfg.rst`.
//!
//! * 0x510 selector (16-bit write): picks an item, data offset to 0. Bit 14
//!   (write) and bit 15 (architecture-specific) are part of the key.
//! * 0x511 data (8-bit read): the next byte of the item (0 past its end or
//!   for an unknown key). Writes through the data port are ignored (as
//!   QEMU 2.4 to 2.8 did): writing is through DMA only.
//! * 0x514 / 0x518 DMA address, high and low 32 bits, each written
//!   big-endian; the write of the low half starts the transfer. Reading
//!   0x514..0x51B gives the signature "QEMU CFG".
//!
//! A DMA transfer reads a [`DMA_ACCESS_LEN`]-byte descriptor (`be32
//! control, be32 length, be64 address`) from guest RAM, does what its
//! control bits ask (select, then read, write or skip `length` bytes) and
//! writes the control word back as 0 or [`DMA_CTL_ERROR`]. Everything in
//! it comes from the guest: a descriptor or buffer outside RAM, a write to
//! an item that is not writable or past its end, are errors the guest sees
//! in the control word, never a panic. A read past an item's end fills the
//! rest with zeros (as QEMU), a page at a time.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use crate::virtio::GuestMemory;

pub const SELECTOR_PORT: u16 = 0x510;
pub const DATA_PORT: u16 = 0x511;
/// The DMA address register: high half at 0x514, low half at 0x518.
pub const DMA_PORT: u16 = 0x514;
const DMA_LOW_PORT: u16 = 0x518;
/// The last port this device decodes.
const LAST_PORT: u16 = 0x51B;

// Well-known keys (fw_cfg.rst "Selector Register / Well-known items").
pub const KEY_SIGNATURE: u16 = 0x0000;
pub const KEY_ID: u16 = 0x0001;
pub const KEY_UUID: u16 = 0x0002;
pub const KEY_RAM_SIZE: u16 = 0x0003;
pub const KEY_NOGRAPHIC: u16 = 0x0004;
pub const KEY_NB_CPUS: u16 = 0x0005;
pub const KEY_MAX_CPUS: u16 = 0x000F;
pub const KEY_FILE_DIR: u16 = 0x0019;
/// The first key given to a named file.
pub const KEY_FILE_FIRST: u16 = 0x0020;
/// Keys are 14 bits; above go bit 14 (write) and bit 15 (arch). The
/// write bit does not change the item; the arch bit picks QEMU's second,
/// architecture-local table (x86: 0x8000 ACPI tables, 0x8001 SMBIOS,
/// 0x8003 the legacy e820 table), where this device has no items, so
/// those keys read as zeros as in QEMU (`fw_cfg.c`: `entries[arch]`).
const KEY_INDEX_MASK: u16 = 0xBFFF;
/// The most named files (QEMU's default `x-file-slots`).
pub const MAX_FILES: usize = 0x20;
/// A file name's room in the directory, NUL included.
pub const FILE_NAME_LEN: usize = 56;

/// `FW_CFG_ID` bits: the traditional interface and DMA.
pub const ID_TRADITIONAL: u32 = 1 << 0;
pub const ID_DMA: u32 = 1 << 1;

// DMA control bits (fw_cfg.rst "DMA interface").
pub const DMA_CTL_ERROR: u32 = 0x01;
pub const DMA_CTL_READ: u32 = 0x02;
pub const DMA_CTL_SKIP: u32 = 0x04;
pub const DMA_CTL_SELECT: u32 = 0x08;
pub const DMA_CTL_WRITE: u32 = 0x10;
pub const DMA_ACCESS_LEN: usize = 16;
/// "QEMU CFG", what the DMA address register reads as.
pub const DMA_SIGNATURE: [u8; 8] = *b"QEMU CFG";

/// Transfers move through a buffer of this many bytes at a time.
const CHUNK: usize = 4096;

/// Why a file could not be added (a VMM mistake, not a guest's).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FwCfgError {
    NameTooLong { name: String },
    Duplicate { name: String },
    TooManyFiles,
    TooLarge { name: String, len: usize },
}

impl fmt::Display for FwCfgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NameTooLong { name } => {
                write!(f, "fw_cfg: file name {name:?} is longer than {} bytes", FILE_NAME_LEN - 1)
            }
            Self::Duplicate { name } => write!(f, "fw_cfg: file {name:?} added twice"),
            Self::TooManyFiles => write!(f, "fw_cfg: more than {MAX_FILES} files"),
            Self::TooLarge { name, len } => write!(f, "fw_cfg: file {name:?} of {len} bytes is over 4 GiB"),
        }
    }
}

#[derive(Clone, Debug)]
struct Item {
    data: Vec<u8>,
    /// DMA writes may change it (in place, within its length).
    writable: bool,
}

/// How the last DMA transfers went (for the VMM's log and the tests).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DmaStats {
    pub done: u64,
    /// Transfers that ended with [`DMA_CTL_ERROR`].
    pub errors: u64,
    /// Descriptors that could not be read (or written back) at all.
    pub bad_descriptors: u64,
}

/// Rows of [`FwCfg::dma_by_key`]; keys past them are not tallied.
pub const DMA_KEY_ROWS: usize = 16;

/// The fw_cfg device with its items.
#[derive(Clone, Debug)]
pub struct FwCfg {
    /// Items by key index (fixed keys and files).
    items: alloc::collections::BTreeMap<u16, Item>,
    /// Files: name and key, in the order added.
    files: Vec<(String, u16)>,
    selector: u16,
    offset: u32,
    dma_high: u32,
    pub stats: DmaStats,
    /// Transfers by the item selected when each ran: (key, transfers,
    /// bytes), in the order first seen (which item a firmware reads how).
    pub dma_by_key: Vec<(u16, u64, u64)>,
}

impl FwCfg {
    /// A device that announces DMA, with the signature, ID, the RAM size,
    /// the vCPU count and an empty file directory.
    pub fn new(ram_bytes: u64, vcpus: u16) -> Self {
        let mut s = Self {
            items: Default::default(),
            files: Vec::new(),
            selector: 0,
            offset: 0,
            dma_high: 0,
            stats: DmaStats::default(),
            dma_by_key: Vec::new(),
        };
        s.set(KEY_SIGNATURE, b"QEMU".to_vec());
        s.set(KEY_ID, (ID_TRADITIONAL | ID_DMA).to_le_bytes().to_vec());
        s.set(KEY_UUID, alloc::vec![0; 16]);
        s.set(KEY_RAM_SIZE, ram_bytes.to_le_bytes().to_vec());
        s.set(KEY_NOGRAPHIC, 1u16.to_le_bytes().to_vec());
        s.set(KEY_NB_CPUS, vcpus.to_le_bytes().to_vec());
        s.set(KEY_MAX_CPUS, vcpus.to_le_bytes().to_vec());
        s.rebuild_dir();
        s
    }

    fn set(&mut self, key: u16, data: Vec<u8>) {
        self.items.insert(key, Item { data, writable: false });
    }

    /// Adds a named file; returns its key.
    pub fn add_file(&mut self, name: &str, data: Vec<u8>, writable: bool) -> Result<u16, FwCfgError> {
        if name.len() >= FILE_NAME_LEN || name.is_empty() {
            return Err(FwCfgError::NameTooLong { name: name.into() });
        }
        if self.files.iter().any(|(n, _)| n == name) {
            return Err(FwCfgError::Duplicate { name: name.into() });
        }
        if self.files.len() >= MAX_FILES {
            return Err(FwCfgError::TooManyFiles);
        }
        if u32::try_from(data.len()).is_err() {
            return Err(FwCfgError::TooLarge { name: name.into(), len: data.len() });
        }
        let key = KEY_FILE_FIRST + self.files.len() as u16;
        self.items.insert(key, Item { data, writable });
        self.files.push((name.into(), key));
        self.rebuild_dir();
        Ok(key)
    }

    /// A file's current contents (after the guest's DMA writes).
    pub fn file(&self, name: &str) -> Option<&[u8]> {
        let (_, key) = self.files.iter().find(|(n, _)| n == name)?;
        self.items.get(key).map(|i| &i.data[..])
    }

    /// The directory (fw_cfg.rst "File Directory"): be32 count, then per
    /// file be32 size, be16 select, be16 reserved, name[56], by name.
    fn rebuild_dir(&mut self) {
        let mut files: Vec<&(String, u16)> = self.files.iter().collect();
        files.sort();
        let mut dir = Vec::with_capacity(4 + 64 * files.len());
        dir.extend_from_slice(&(files.len() as u32).to_be_bytes());
        for (name, key) in files {
            let len = self.items.get(key).map_or(0, |i| i.data.len() as u32);
            dir.extend_from_slice(&len.to_be_bytes());
            dir.extend_from_slice(&key.to_be_bytes());
            dir.extend_from_slice(&[0, 0]);
            let mut n = [0u8; FILE_NAME_LEN];
            n[..name.len()].copy_from_slice(name.as_bytes());
            dir.extend_from_slice(&n);
        }
        self.set(KEY_FILE_DIR, dir);
    }

    /// Whether `port` is one of the device's.
    pub fn claims(port: u16) -> bool {
        (SELECTOR_PORT..=LAST_PORT).contains(&port)
    }

    fn select(&mut self, key: u16) {
        self.selector = key;
        self.offset = 0;
    }

    fn current(&self) -> Option<&Item> {
        self.items.get(&(self.selector & KEY_INDEX_MASK))
    }

    /// An `in` of `size` bytes.
    pub fn io_read(&mut self, port: u16, size: u8) -> u32 {
        let size = usize::from(size.clamp(1, 4));
        let mut bytes = [0u8; 4];
        match port {
            DATA_PORT => {
                // The data register is one byte wide; a wider read takes
                // the next bytes in turn.
                for b in bytes.iter_mut().take(size) {
                    let off = self.offset as usize;
                    *b = self.current().and_then(|i| i.data.get(off).copied()).unwrap_or(0);
                    self.offset = self.offset.saturating_add(1);
                }
            }
            DMA_PORT..=LAST_PORT => {
                let start = usize::from(port - DMA_PORT);
                for (i, b) in bytes.iter_mut().take(size).enumerate() {
                    *b = DMA_SIGNATURE.get(start + i).copied().unwrap_or(0);
                }
            }
            _ => return u32::MAX >> (32 - 8 * size as u32),
        }
        u32::from_le_bytes(bytes)
    }

    /// An `out`; a write of the DMA address's low half runs the transfer
    /// against `mem`.
    pub fn io_write(&mut self, port: u16, size: u8, value: u32, mem: &mut dyn GuestMemory) {
        match (port, size) {
            (SELECTOR_PORT, 2) => self.select(value as u16),
            (DMA_PORT, 4) => self.dma_high = value.swap_bytes(),
            (DMA_LOW_PORT, 4) => {
                let addr = (u64::from(self.dma_high) << 32) | u64::from(value.swap_bytes());
                self.dma_high = 0;
                self.dma(addr, mem);
            }
            _ => {}
        }
    }

    /// Runs the DMA transfer whose descriptor is at guest-physical `desc`.
    pub fn dma(&mut self, desc: u64, mem: &mut dyn GuestMemory) {
        let mut d = [0u8; DMA_ACCESS_LEN];
        if mem.read(desc, &mut d).is_err() {
            self.stats.bad_descriptors += 1;
            return;
        }
        let control = u32::from_be_bytes([d[0], d[1], d[2], d[3]]);
        let length = u32::from_be_bytes([d[4], d[5], d[6], d[7]]);
        let address = u64::from_be_bytes([d[8], d[9], d[10], d[11], d[12], d[13], d[14], d[15]]);
        if control & DMA_CTL_SELECT != 0 {
            self.select((control >> 16) as u16);
        }
        let ok = if control & DMA_CTL_READ != 0 {
            self.dma_read(address, length, mem)
        } else if control & DMA_CTL_WRITE != 0 {
            self.dma_write(address, length, mem)
        } else if control & DMA_CTL_SKIP != 0 {
            self.offset = self.offset.saturating_add(length);
            true
        } else {
            true
        };
        let status = if ok { 0 } else { DMA_CTL_ERROR };
        let key = self.selector & KEY_INDEX_MASK;
        match self.dma_by_key.iter().position(|r| r.0 == key) {
            Some(i) => {
                self.dma_by_key[i].1 += 1;
                self.dma_by_key[i].2 += u64::from(length);
            }
            None if self.dma_by_key.len() < DMA_KEY_ROWS => self.dma_by_key.push((key, 1, u64::from(length))),
            None => {}
        }
        self.stats.done += 1;
        if !ok {
            self.stats.errors += 1;
        }
        if mem.write(desc, &status.to_be_bytes()).is_err() {
            self.stats.bad_descriptors += 1;
        }
    }

    /// "key 0x19 3 transfers 1234 bytes (etc/…), …": the items DMA
    /// transfers went to, busiest first, with their file names.
    pub fn dma_summary(&self) -> String {
        let mut rows = self.dma_by_key.clone();
        rows.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let parts: Vec<String> = rows
            .iter()
            .map(|&(key, n, bytes)| {
                let name = self.files.iter().find(|f| f.1 == key).map(|f| alloc::format!(" ({})", f.0)).unwrap_or_default();
                alloc::format!("key {key:#x}{name} {n} transfers {bytes} bytes")
            })
            .collect();
        if parts.is_empty() { "none".into() } else { parts.join(", ") }
    }

    /// Item bytes from the offset to `address`, zeros past the item's end.
    fn dma_read(&mut self, address: u64, length: u32, mem: &mut dyn GuestMemory) -> bool {
        if mem.check_range(address, u64::from(length)).is_err() {
            return false;
        }
        let mut done = 0u32;
        let mut buf = [0u8; CHUNK];
        while done < length {
            let n = (length - done).min(CHUNK as u32) as usize;
            let off = self.offset as usize;
            let chunk = &mut buf[..n];
            chunk.fill(0);
            if let Some(item) = self.current()
                && let Some(src) = item.data.get(off..)
            {
                let k = src.len().min(n);
                chunk[..k].copy_from_slice(&src[..k]);
            }
            if mem.write(address + u64::from(done), chunk).is_err() {
                return false;
            }
            self.offset = self.offset.saturating_add(n as u32);
            done += n as u32;
        }
        true
    }

    /// Guest bytes into a writable item, all within its length.
    fn dma_write(&mut self, address: u64, length: u32, mem: &mut dyn GuestMemory) -> bool {
        let off = self.offset as usize;
        let key = self.selector & KEY_INDEX_MASK;
        let Some(item) = self.items.get_mut(&key) else { return false };
        let end = off.checked_add(length as usize);
        if !item.writable || end.is_none_or(|e| e > item.data.len()) {
            return false;
        }
        let Some(dst) = item.data.get_mut(off..off + length as usize) else { return false };
        if mem.read(address, dst).is_err() {
            return false;
        }
        self.offset = self.offset.saturating_add(length);
        true
    }
}

#[cfg(test)]
mod tests;
