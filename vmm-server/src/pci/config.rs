//! A type-0 PCI configuration space: the 256-byte header and capability
//! area of one function, with the write masks that make each bit read-only,
//! writable or write-one-to-clear, and the base address registers with the
//! sizing protocol.
//!
//! References: PCI Local Bus Specification 3.0, §6.1 (organization of the
//! configuration space), §6.2.2 (Command), §6.2.3 (Status), §6.2.4
//! (miscellaneous registers), §6.2.5.1 (base addresses and how software
//! sizes them), §6.7 (capabilities list). The space past 0x100 (PCIe's
//! extended configuration space, reached only through ECAM) reads as zero:
//! an extended capability header of 0 says there are none (PCIe 6.0
//! §7.6.3).
//!
//! A device model owns one [`ConfigSpace`]; the guest's accesses go through
//! [`ConfigSpace::read`] and [`ConfigSpace::write`], which honour the masks,
//! and the device sets its own read-only state (status bits, capability
//! contents) with the `set_*` methods, which do not.

use core::fmt;

/// Size of the conventional configuration space.
pub const CONFIG_SPACE_SIZE: usize = 256;
/// Size of a function's configuration space as ECAM reaches it (PCIe).
pub const EXT_CONFIG_SPACE_SIZE: usize = 4096;

// Type-0 header offsets (§6.1, figure 6-1).
pub const VENDOR_ID: usize = 0x00;
pub const DEVICE_ID: usize = 0x02;
pub const COMMAND: usize = 0x04;
pub const STATUS: usize = 0x06;
pub const REVISION_ID: usize = 0x08;
pub const CLASS_CODE: usize = 0x09;
pub const CACHE_LINE_SIZE: usize = 0x0C;
pub const LATENCY_TIMER: usize = 0x0D;
pub const HEADER_TYPE: usize = 0x0E;
pub const BAR0: usize = 0x10;
pub const SUBSYSTEM_VENDOR_ID: usize = 0x2C;
pub const SUBSYSTEM_ID: usize = 0x2E;
pub const EXPANSION_ROM: usize = 0x30;
pub const CAPABILITIES_POINTER: usize = 0x34;
pub const INTERRUPT_LINE: usize = 0x3C;
pub const INTERRUPT_PIN: usize = 0x3D;
/// Capabilities start after the header (§6.7: in the device-specific area).
pub const FIRST_CAPABILITY: usize = 0x40;
pub const BAR_COUNT: usize = 6;

// Command register bits (§6.2.2).
pub const COMMAND_IO: u16 = 1 << 0;
pub const COMMAND_MEMORY: u16 = 1 << 1;
pub const COMMAND_BUS_MASTER: u16 = 1 << 2;
pub const COMMAND_PARITY_ERROR_RESPONSE: u16 = 1 << 6;
pub const COMMAND_SERR: u16 = 1 << 8;
pub const COMMAND_INTX_DISABLE: u16 = 1 << 10;
/// The command bits a function here implements; the rest are hardwired 0.
pub const COMMAND_WRITABLE: u16 = COMMAND_IO
    | COMMAND_MEMORY
    | COMMAND_BUS_MASTER
    | COMMAND_PARITY_ERROR_RESPONSE
    | COMMAND_SERR
    | COMMAND_INTX_DISABLE;

// Status register bits (§6.2.3).
pub const STATUS_INTERRUPT: u16 = 1 << 3;
pub const STATUS_CAPABILITIES: u16 = 1 << 4;
/// Error bits: master data parity error, signaled target abort, received
/// target/master abort, signaled system error, detected parity error. The
/// guest clears them by writing 1.
pub const STATUS_W1C: u16 = (1 << 8) | (1 << 11) | (1 << 12) | (1 << 13) | (1 << 14) | (1 << 15);

// BAR low bits (§6.2.5.1).
const BAR_IO: u32 = 1;
const BAR_MEM_TYPE_64: u32 = 0b10 << 1;
const BAR_MEM_PREFETCHABLE: u32 = 1 << 3;
const BAR_MEM_ADDR_MASK: u32 = !0xF;
/// x86 ports are 16 bits: the upper half of an I/O BAR is hardwired to 0.
const BAR_IO_ADDR_MASK: u32 = 0xFFFC;

/// The smallest memory BAR: one page, so the VMM can map BARs page by page
/// (§6.2.5.1 allows 16 bytes; QEMU and Cloud Hypervisor also round up).
pub const MIN_MEMORY_BAR: u64 = 0x1000;
/// I/O BARs are 4 to 256 bytes (§6.2.5.1).
pub const MIN_IO_BAR: u64 = 4;
pub const MAX_IO_BAR: u64 = 256;

/// The identity of a function (§6.2.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PciIds {
    pub vendor_id: u16,
    pub device_id: u16,
    pub revision_id: u8,
    /// Base class, sub-class, programming interface: `0x06_00_00` is a
    /// host bridge.
    pub class_code: u32,
    pub subsystem_vendor_id: u16,
    pub subsystem_id: u16,
}

/// What a BAR maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BarKind {
    /// Memory anywhere below 4 GiB.
    Memory32 { prefetchable: bool },
    /// Memory anywhere in the 64-bit space; takes this BAR and the next.
    Memory64 { prefetchable: bool },
    /// I/O ports.
    Io,
}

impl BarKind {
    pub fn is_memory(self) -> bool {
        !matches!(self, BarKind::Io)
    }
}

/// A BAR as the device declares it: a power-of-two `size` in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BarSpec {
    pub kind: BarKind,
    pub size: u64,
}

/// A BAR as it is programmed now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BarRegion {
    pub kind: BarKind,
    pub address: u64,
    pub size: u64,
}

impl BarRegion {
    /// The offset of `address` in this region, if it lies inside it.
    pub fn offset_of(&self, address: u64) -> Option<u64> {
        let offset = address.checked_sub(self.address)?;
        (offset < self.size).then_some(offset)
    }
}

/// Why a device's configuration space could not be laid out (a bug in the
/// device model, never the guest's doing).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// BAR index past 5, or a 64-bit BAR at index 5.
    BarIndex(usize),
    /// The BAR (or the upper half of a 64-bit one) is already declared.
    BarInUse(usize),
    /// Not a power of two, or outside the limits for its kind.
    BarSize { index: usize, size: u64 },
    /// The capability does not fit below 0x100 (or is empty or too long).
    NoCapabilitySpace { len: usize },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ConfigError::BarIndex(i) => write!(f, "pci: BAR {i} does not exist"),
            ConfigError::BarInUse(i) => write!(f, "pci: BAR {i} is already declared"),
            ConfigError::BarSize { index, size } => {
                write!(f, "pci: BAR {index}: invalid size {size:#x}")
            }
            ConfigError::NoCapabilitySpace { len } => {
                write!(f, "pci: no room for a capability of {len} bytes")
            }
        }
    }
}

/// Per-byte behaviour of a configuration register.
#[derive(Clone)]
struct Masks {
    /// Bits the guest may write.
    writable: [u8; CONFIG_SPACE_SIZE],
    /// Bits the guest clears by writing 1.
    w1c: [u8; CONFIG_SPACE_SIZE],
}

/// One function's type-0 configuration space.
#[derive(Clone)]
pub struct ConfigSpace {
    bytes: [u8; CONFIG_SPACE_SIZE],
    masks: Masks,
    bars: [Option<BarSpec>; BAR_COUNT],
    /// The upper halves of 64-bit BARs.
    upper_half: [bool; BAR_COUNT],
    /// Where the last capability sits (its next pointer is patched by the
    /// following one), and where the next may start.
    last_capability: Option<usize>,
    next_capability: usize,
}

impl fmt::Debug for ConfigSpace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConfigSpace")
            .field("vendor_id", &self.get_u16(VENDOR_ID))
            .field("device_id", &self.get_u16(DEVICE_ID))
            .field("command", &self.command())
            .field("bars", &self.bars)
            .finish()
    }
}

impl ConfigSpace {
    /// A function with `ids`, no BARs and no capabilities, interrupt pin
    /// `interrupt_pin` (0 none, 1-4 INTA#-INTD#), single-function.
    pub fn new(ids: PciIds, interrupt_pin: u8) -> Self {
        let mut c = Self {
            bytes: [0; CONFIG_SPACE_SIZE],
            masks: Masks { writable: [0; CONFIG_SPACE_SIZE], w1c: [0; CONFIG_SPACE_SIZE] },
            bars: [None; BAR_COUNT],
            upper_half: [false; BAR_COUNT],
            last_capability: None,
            next_capability: FIRST_CAPABILITY,
        };
        c.set_u16(VENDOR_ID, ids.vendor_id);
        c.set_u16(DEVICE_ID, ids.device_id);
        c.set_u8(REVISION_ID, ids.revision_id);
        c.set_u8(CLASS_CODE, ids.class_code as u8);
        c.set_u16(CLASS_CODE + 1, (ids.class_code >> 8) as u16);
        c.set_u16(SUBSYSTEM_VENDOR_ID, ids.subsystem_vendor_id);
        c.set_u16(SUBSYSTEM_ID, ids.subsystem_id);
        c.set_u8(INTERRUPT_PIN, interrupt_pin.min(4));
        c.set_writable(COMMAND, &COMMAND_WRITABLE.to_le_bytes());
        c.masks.w1c[STATUS..STATUS + 2].copy_from_slice(&STATUS_W1C.to_le_bytes());
        // Cache line size and latency timer are plain storage for software
        // (§6.2.4); the interrupt line register too.
        c.set_writable(CACHE_LINE_SIZE, &[0xFF, 0xFF]);
        c.set_writable(INTERRUPT_LINE, &[0xFF]);
        c
    }

    /// Declares BAR `index`. A 64-bit memory BAR also takes `index + 1`.
    /// The address starts at 0; the bus assigns one
    /// ([`ConfigSpace::set_bar_address`]).
    pub fn add_bar(&mut self, index: usize, spec: BarSpec) -> Result<(), ConfigError> {
        let wide = matches!(spec.kind, BarKind::Memory64 { .. });
        if index >= BAR_COUNT || (wide && index + 1 >= BAR_COUNT) {
            return Err(ConfigError::BarIndex(index));
        }
        let taken = |i: usize| self.bars[i].is_some() || self.upper_half[i];
        if taken(index) {
            return Err(ConfigError::BarInUse(index));
        }
        if wide && taken(index + 1) {
            return Err(ConfigError::BarInUse(index + 1));
        }
        let size = spec.size;
        let size_ok = size.is_power_of_two()
            && match spec.kind {
                BarKind::Io => (MIN_IO_BAR..=MAX_IO_BAR).contains(&size),
                BarKind::Memory32 { .. } => (MIN_MEMORY_BAR..=1 << 31).contains(&size),
                BarKind::Memory64 { .. } => (MIN_MEMORY_BAR..=1 << 62).contains(&size),
            };
        if !size_ok {
            return Err(ConfigError::BarSize { index, size });
        }
        let at = BAR0 + 4 * index;
        let address_mask = !(size - 1);
        let (low_bits, low_mask) = match spec.kind {
            BarKind::Io => (BAR_IO, address_mask as u32 & BAR_IO_ADDR_MASK),
            BarKind::Memory32 { prefetchable } => {
                (if prefetchable { BAR_MEM_PREFETCHABLE } else { 0 }, address_mask as u32 & BAR_MEM_ADDR_MASK)
            }
            BarKind::Memory64 { prefetchable } => (
                BAR_MEM_TYPE_64 | if prefetchable { BAR_MEM_PREFETCHABLE } else { 0 },
                address_mask as u32 & BAR_MEM_ADDR_MASK,
            ),
        };
        self.set_u32(at, low_bits);
        self.set_writable(at, &low_mask.to_le_bytes());
        if wide {
            self.set_u32(at + 4, 0);
            self.set_writable(at + 4, &((address_mask >> 32) as u32).to_le_bytes());
            self.upper_half[index + 1] = true;
        }
        self.bars[index] = Some(spec);
        Ok(())
    }

    /// The BARs as declared, by index (`None` also for upper halves).
    pub fn bar_specs(&self) -> [Option<BarSpec>; BAR_COUNT] {
        self.bars
    }

    /// BAR `index` as programmed now, or `None` if it is not declared.
    pub fn bar(&self, index: usize) -> Option<BarRegion> {
        let spec = (*self.bars.get(index)?)?;
        let at = BAR0 + 4 * index;
        let low = self.get_u32(at);
        let address = match spec.kind {
            BarKind::Io => u64::from(low & BAR_IO_ADDR_MASK),
            BarKind::Memory32 { .. } => u64::from(low & BAR_MEM_ADDR_MASK),
            BarKind::Memory64 { .. } => u64::from(low & BAR_MEM_ADDR_MASK) | u64::from(self.get_u32(at + 4)) << 32,
        };
        Some(BarRegion { kind: spec.kind, address, size: spec.size })
    }

    /// Programs BAR `index` as firmware would (the address is masked to the
    /// BAR's alignment). Does nothing for an undeclared BAR.
    pub fn set_bar_address(&mut self, index: usize, address: u64) {
        let Some(Some(spec)) = self.bars.get(index).copied() else {
            return;
        };
        let at = BAR0 + 4 * index;
        let address = address & !(spec.size - 1);
        let low = self.get_u32(at) & 0xF;
        match spec.kind {
            BarKind::Io => self.set_u32(at, (address as u32 & BAR_IO_ADDR_MASK) | BAR_IO),
            BarKind::Memory32 { .. } => self.set_u32(at, (address as u32 & BAR_MEM_ADDR_MASK) | low),
            BarKind::Memory64 { .. } => {
                self.set_u32(at, (address as u32 & BAR_MEM_ADDR_MASK) | low);
                self.set_u32(at + 4, (address >> 32) as u32);
            }
        }
    }

    /// Appends a capability with ID `id`: `body` is what follows the ID and
    /// next-pointer bytes, `writable` its per-byte guest write masks (shorter
    /// than `body` means the rest is read-only). Returns the capability's
    /// offset (§6.7: dword-aligned, linked from the capabilities pointer).
    pub fn add_capability(&mut self, id: u8, body: &[u8], writable: &[u8]) -> Result<usize, ConfigError> {
        let len = body.len() + 2;
        let at = self.next_capability;
        if at + len > CONFIG_SPACE_SIZE || writable.len() > body.len() {
            return Err(ConfigError::NoCapabilitySpace { len });
        }
        self.bytes[at] = id;
        self.bytes[at + 1] = 0;
        self.bytes[at + 2..at + len].copy_from_slice(body);
        self.set_writable(at + 2, writable);
        match self.last_capability {
            Some(prev) => self.bytes[prev + 1] = at as u8,
            None => self.bytes[CAPABILITIES_POINTER] = at as u8,
        }
        self.last_capability = Some(at);
        self.next_capability = (at + len + 3) & !3;
        let status = self.get_u16(STATUS) | STATUS_CAPABILITIES;
        self.set_u16(STATUS, status);
        Ok(at)
    }

    /// A guest's read of `size` (1, 2 or 4) bytes at `offset` (below 4096);
    /// past the conventional space it reads 0. Other sizes, and accesses
    /// that cross a dword, read all ones.
    pub fn read(&self, offset: u16, size: u8) -> u32 {
        let offset = usize::from(offset);
        if !valid_access(offset, size) {
            return crate::devices::all_ones(size);
        }
        (0..usize::from(size))
            .fold(0u32, |acc, i| acc | u32::from(self.bytes.get(offset + i).copied().unwrap_or(0)) << (8 * i))
    }

    /// A guest's write of `size` bytes at `offset`: writable bits take the
    /// value, write-one-to-clear bits clear where it has ones, the rest stay.
    /// Invalid accesses (as for [`ConfigSpace::read`]) are ignored.
    pub fn write(&mut self, offset: u16, size: u8, value: u32) {
        let offset = usize::from(offset);
        if !valid_access(offset, size) {
            return;
        }
        for i in 0..usize::from(size) {
            let at = offset + i;
            if at >= CONFIG_SPACE_SIZE {
                break;
            }
            let v = (value >> (8 * i)) as u8;
            let (w, c) = (self.masks.writable[at], self.masks.w1c[at]);
            self.bytes[at] = ((self.bytes[at] & !w) | (v & w)) & !(v & c);
        }
    }

    /// Marks bits of `bytes.len()` bytes from `offset` as guest-writable.
    pub fn set_writable(&mut self, offset: usize, mask: &[u8]) {
        if let Some(m) = self.masks.writable.get_mut(offset..offset + mask.len()) {
            m.copy_from_slice(mask);
        }
    }

    // The device's own access, bypassing the masks. Out-of-range offsets
    // read 0 and are not written (the device's layout is fixed, so such a
    // call is a device bug that must not become a panic on guest input).

    pub fn get_u8(&self, offset: usize) -> u8 {
        self.bytes.get(offset).copied().unwrap_or(0)
    }

    pub fn get_u16(&self, offset: usize) -> u16 {
        u16::from_le_bytes([self.get_u8(offset), self.get_u8(offset + 1)])
    }

    pub fn get_u32(&self, offset: usize) -> u32 {
        u32::from(self.get_u16(offset)) | u32::from(self.get_u16(offset + 2)) << 16
    }

    pub fn set_u8(&mut self, offset: usize, v: u8) {
        if let Some(b) = self.bytes.get_mut(offset) {
            *b = v;
        }
    }

    pub fn set_u16(&mut self, offset: usize, v: u16) {
        self.set_bytes(offset, &v.to_le_bytes());
    }

    pub fn set_u32(&mut self, offset: usize, v: u32) {
        self.set_bytes(offset, &v.to_le_bytes());
    }

    pub fn set_bytes(&mut self, offset: usize, data: &[u8]) {
        if let Some(b) = self.bytes.get_mut(offset..offset.saturating_add(data.len())) {
            b.copy_from_slice(data);
        }
    }

    pub fn command(&self) -> u16 {
        self.get_u16(COMMAND)
    }

    /// Firmware's setting of the command register (not masked).
    pub fn set_command(&mut self, command: u16) {
        self.set_u16(COMMAND, command & COMMAND_WRITABLE);
    }

    pub fn memory_enabled(&self) -> bool {
        self.command() & COMMAND_MEMORY != 0
    }

    pub fn io_enabled(&self) -> bool {
        self.command() & COMMAND_IO != 0
    }

    pub fn bus_master(&self) -> bool {
        self.command() & COMMAND_BUS_MASTER != 0
    }

    pub fn intx_disabled(&self) -> bool {
        self.command() & COMMAND_INTX_DISABLE != 0
    }

    pub fn interrupt_pin(&self) -> u8 {
        self.get_u8(INTERRUPT_PIN)
    }

    /// The device's INTx state, which the status register shows whatever
    /// the command register's Interrupt Disable says (§6.2.3 bit 3).
    pub fn set_interrupt_status(&mut self, pending: bool) {
        let s = self.get_u16(STATUS);
        self.set_u16(STATUS, if pending { s | STATUS_INTERRUPT } else { s & !STATUS_INTERRUPT });
    }
}

/// A configuration access of 1, 2 or 4 bytes inside one dword of the 4 KiB
/// function space (PCIe 6.0 §7.2.2.2: others are unsupported requests).
pub fn valid_access(offset: usize, size: u8) -> bool {
    matches!(size, 1 | 2 | 4) && offset < EXT_CONFIG_SPACE_SIZE && (offset & 3) + usize::from(size) <= 4
}
