//! MSI-X (PCI Local Bus Specification 3.0 §6.8.2): a function's table of
//! message address/data pairs in one of its memory BARs, a pending-bit
//! array (PBA), and the capability in configuration space that enables the
//! whole and masks it.
//!
//! A device model keeps one [`Msix`] beside its [`ConfigSpace`], forwards
//! the guest's accesses to the table and PBA ranges of its BAR, calls
//! [`Msix::config_written`] after every configuration write, and raises a
//! vector with [`Msix::notify`]. Messages come out in a `Vec<MsiMessage>`
//! the caller passes in; the VMM writes each to the local APIC it names.
//!
//! Masking (§6.8.2.9): a vector whose entry is masked, or every vector while
//! the function mask is set, is not sent but remembered in the PBA, and sent
//! once it is unmasked.

use alloc::vec;
use alloc::vec::Vec;

use super::MsiMessage;
use super::config::{ConfigError, ConfigSpace};

/// The MSI-X capability ID (§6.8.2.1).
pub const CAP_ID_MSIX: u8 = 0x11;
/// The most vectors a table may hold (an 11-bit Table Size field).
pub const MAX_VECTORS: u16 = 2048;
/// One table entry: address low, address high, data, vector control.
pub const ENTRY_SIZE: u64 = 16;

// Message Control bits (§6.8.2.3).
const CONTROL: usize = 2;
const CONTROL_FUNCTION_MASK: u16 = 1 << 14;
const CONTROL_ENABLE: u16 = 1 << 15;
// Vector Control (§6.8.2.9): bit 0 masks the entry; the rest is reserved.
const VECTOR_MASKED: u32 = 1;

/// One function's MSI-X table and pending bits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Msix {
    /// The capability's offset in configuration space.
    cap: usize,
    /// Per entry: address low, address high, data, vector control.
    table: Vec<[u32; 4]>,
    pending: Vec<u64>,
}

impl Msix {
    /// Adds the capability for `vectors` vectors (1..=2048) to `config`,
    /// with the table at `table_offset` of BAR `table_bar` and the PBA at
    /// `pba_offset` of BAR `pba_bar` (both offsets 8-byte aligned, §6.8.2.4).
    /// Every entry starts masked (§6.8.2.9).
    pub fn new(
        config: &mut ConfigSpace,
        vectors: u16,
        table_bar: u8,
        table_offset: u32,
        pba_bar: u8,
        pba_offset: u32,
    ) -> Result<Self, ConfigError> {
        let vectors = vectors.clamp(1, MAX_VECTORS);
        let mut body = [0u8; 10];
        body[..2].copy_from_slice(&(vectors - 1).to_le_bytes());
        body[2..6].copy_from_slice(&((table_offset & !7) | u32::from(table_bar & 7)).to_le_bytes());
        body[6..10].copy_from_slice(&((pba_offset & !7) | u32::from(pba_bar & 7)).to_le_bytes());
        // Only Function Mask and MSI-X Enable are writable.
        let writable = (CONTROL_FUNCTION_MASK | CONTROL_ENABLE).to_le_bytes();
        let cap = config.add_capability(CAP_ID_MSIX, &body, &writable)?;
        let n = usize::from(vectors);
        Ok(Self { cap, table: vec![[0, 0, 0, VECTOR_MASKED]; n], pending: vec![0; n.div_ceil(64)] })
    }

    /// The capability's offset in configuration space.
    pub fn capability_offset(&self) -> usize {
        self.cap
    }

    pub fn vectors(&self) -> u16 {
        self.table.len() as u16
    }

    /// The table's size in bytes.
    pub fn table_len(&self) -> u64 {
        self.table.len() as u64 * ENTRY_SIZE
    }

    /// The PBA's size in bytes (whole qwords).
    pub fn pba_len(&self) -> u64 {
        self.pending.len() as u64 * 8
    }

    fn control(&self, config: &ConfigSpace) -> u16 {
        config.get_u16(self.cap + CONTROL)
    }

    /// MSI-X Enable: the function signals with the table, not INTx
    /// (§6.8.2.3).
    pub fn enabled(&self, config: &ConfigSpace) -> bool {
        self.control(config) & CONTROL_ENABLE != 0
    }

    pub fn function_masked(&self, config: &ConfigSpace) -> bool {
        self.control(config) & CONTROL_FUNCTION_MASK != 0
    }

    pub fn entry_masked(&self, vector: u16) -> bool {
        self.table.get(usize::from(vector)).is_none_or(|e| e[3] & VECTOR_MASKED != 0)
    }

    pub fn is_pending(&self, vector: u16) -> bool {
        let v = usize::from(vector);
        self.pending.get(v / 64).is_some_and(|w| w >> (v % 64) & 1 != 0)
    }

    /// The message of entry `vector` as the guest programmed it.
    pub fn message(&self, vector: u16) -> Option<MsiMessage> {
        let e = self.table.get(usize::from(vector))?;
        Some(MsiMessage { address: u64::from(e[0]) | u64::from(e[1]) << 32, data: e[2] })
    }

    fn set_pending(&mut self, v: usize, on: bool) {
        if let Some(w) = self.pending.get_mut(v / 64) {
            if on {
                *w |= 1 << (v % 64);
            } else {
                *w &= !(1 << (v % 64));
            }
        }
    }

    /// Raises `vector`. Returns `false` when MSI-X is disabled (the device
    /// then uses INTx); otherwise the message goes to `out`, or to the PBA
    /// while masked. A vector past the table is dropped (§6.8.2: the
    /// device must not use it).
    pub fn notify(&mut self, vector: u16, config: &ConfigSpace, out: &mut Vec<MsiMessage>) -> bool {
        if !self.enabled(config) {
            return false;
        }
        let v = usize::from(vector);
        if v >= self.table.len() {
            return true;
        }
        if self.function_masked(config) || self.entry_masked(vector) {
            self.set_pending(v, true);
        } else if let Some(m) = self.message(vector) {
            out.push(m);
        }
        true
    }

    /// Sends what became deliverable: pending vectors that are no longer
    /// masked, while MSI-X is enabled and the function unmasked. The device
    /// calls it after every guest configuration write (the function mask
    /// may have cleared); table writes call it themselves.
    pub fn config_written(&mut self, config: &ConfigSpace, out: &mut Vec<MsiMessage>) {
        if !self.enabled(config) || self.function_masked(config) {
            return;
        }
        for v in 0..self.table.len() {
            if self.is_pending(v as u16) && !self.entry_masked(v as u16) {
                self.set_pending(v, false);
                if let Some(m) = self.message(v as u16) {
                    out.push(m);
                }
            }
        }
    }

    /// A read of `size` bytes at `offset` of the table. §6.8.2 allows only
    /// aligned dword and qword accesses; anything else reads 0.
    pub fn read_table(&self, offset: u64, size: u8) -> u64 {
        match dword_index(offset, size, self.table_len()) {
            Some(i) => {
                let lo = self.table[i / 4][i % 4];
                let hi = if size == 8 { self.table[i / 4][i % 4 + 1] } else { 0 };
                u64::from(lo) | u64::from(hi) << 32
            }
            None => 0,
        }
    }

    /// A write to the table; other than aligned dword and qword writes are
    /// ignored. Unmasking an entry with its pending bit set sends it.
    pub fn write_table(&mut self, offset: u64, size: u8, value: u64, config: &ConfigSpace, out: &mut Vec<MsiMessage>) {
        let Some(i) = dword_index(offset, size, self.table_len()) else {
            return;
        };
        let dwords = if size == 8 { 2 } else { 1 };
        for k in 0..dwords {
            let field = i % 4 + k;
            let v = (value >> (32 * k)) as u32;
            let entry = &mut self.table[i / 4];
            entry[field] = match field {
                // The address is dword-aligned: bits 1:0 read 0 (§6.8.2.5).
                0 => v & !3,
                3 => v & VECTOR_MASKED,
                _ => v,
            };
        }
        self.config_written(config, out);
    }

    /// A read of the PBA (read-only; aligned dwords and qwords only).
    pub fn read_pba(&self, offset: u64, size: u8) -> u64 {
        match dword_index(offset, size, self.pba_len()) {
            Some(i) => {
                let q = self.pending[i / 2];
                if size == 8 { q } else { (q >> (32 * (i % 2))) & 0xFFFF_FFFF }
            }
            None => 0,
        }
    }

    /// Back to reset state: every entry masked, nothing pending (the
    /// capability's control bits are reset with the configuration space).
    pub fn reset(&mut self) {
        for e in &mut self.table {
            *e = [0, 0, 0, VECTOR_MASKED];
        }
        self.pending.fill(0);
    }
}

/// The dword index of an aligned 4- or 8-byte access inside `len` bytes.
fn dword_index(offset: u64, size: u8, len: u64) -> Option<usize> {
    let ok = match size {
        4 => offset.is_multiple_of(4),
        8 => offset.is_multiple_of(8),
        _ => false,
    };
    let end = offset.checked_add(u64::from(size))?;
    (ok && end <= len).then_some((offset / 4) as usize)
}
