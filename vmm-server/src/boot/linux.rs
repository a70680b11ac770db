//! The Linux/x86 boot protocol, 64-bit entry (Documentation/arch/x86/
//! boot.rst; the zero page layout is Documentation/arch/x86/zero-page.rst).
//!
//! [`BzImage::parse`] reads the setup header of a bzImage (the file the
//! guest's image supplies: hostile, so every field is checked) and says
//! which bytes are the protected-mode kernel, where they load and how much
//! memory from there the kernel needs before it reads its memory map.
//! [`BzImage::zero_page`] builds `struct boot_params` with the header
//! copied in and the loader's fields set: command line, initrd, E820 map,
//! RSDP. [`set_boot_vcpu`] loads the boot vCPU with the 64-bit entry state:
//! long mode on the VMM's identity map and boot GDT, RSI = zero page.
//!
//! Only boot protocol 2.12 and later with `XLF_KERNEL_64` is accepted: every
//! x86-64 kernel since Linux 3.8, and the one protocol that needs no
//! real-mode or 32-bit code run on the guest's behalf.

use alloc::vec;
use alloc::vec::Vec;
use core::fmt;
use core::ops::Range;

use abi::VcpuRun;

use super::e820::{E820_ENTRY_SIZE, E820Entry};
use super::le;
use super::long_mode;
use offsets as o;

/// Offsets in the bzImage file and in `struct boot_params`; the setup
/// header sits at the same offset in both (boot.rst §"The Real-Mode Kernel
/// Header", zero-page.rst).
pub mod offsets {
    pub const ACPI_RSDP_ADDR: usize = 0x070;
    pub const EXT_RAMDISK_IMAGE: usize = 0x0c0;
    pub const EXT_RAMDISK_SIZE: usize = 0x0c4;
    pub const EXT_CMD_LINE_PTR: usize = 0x0c8;
    pub const E820_ENTRIES: usize = 0x1e8;
    /// `struct setup_header` starts here.
    pub const SETUP_SECTS: usize = 0x1f1;
    pub const SYSSIZE: usize = 0x1f4;
    pub const BOOT_FLAG: usize = 0x1fe;
    pub const JUMP: usize = 0x200;
    pub const HEADER: usize = 0x202;
    pub const VERSION: usize = 0x206;
    pub const TYPE_OF_LOADER: usize = 0x210;
    pub const LOADFLAGS: usize = 0x211;
    pub const RAMDISK_IMAGE: usize = 0x218;
    pub const RAMDISK_SIZE: usize = 0x21c;
    pub const HEAP_END_PTR: usize = 0x224;
    pub const CMD_LINE_PTR: usize = 0x228;
    pub const INITRD_ADDR_MAX: usize = 0x22c;
    pub const KERNEL_ALIGNMENT: usize = 0x230;
    pub const RELOCATABLE_KERNEL: usize = 0x234;
    pub const XLOADFLAGS: usize = 0x236;
    pub const CMDLINE_SIZE: usize = 0x238;
    pub const PREF_ADDRESS: usize = 0x258;
    pub const INIT_SIZE: usize = 0x260;
    /// The first byte after the fields protocol 2.12 defines (`init_size`,
    /// `handover_offset`).
    pub const HEADER_2_12_END: usize = 0x268;
    /// `edd_mbr_sig_buffer`: the setup header cannot reach past this.
    pub const SETUP_HEADER_LIMIT: usize = 0x290;
    pub const E820_TABLE: usize = 0x2d0;
}

/// `"HdrS"` at 0x202.
pub const HEADER_MAGIC: u32 = u32::from_le_bytes(*b"HdrS");
/// The boot sector signature at 0x1FE.
pub const BOOT_FLAG_MAGIC: u16 = 0xaa55;
/// Boot protocol 2.12: `xloadflags` (`XLF_KERNEL_64`) first appears.
pub const MIN_PROTOCOL: u16 = 0x020c;
/// Linux's own build refuses more setup sectors than this
/// (arch/x86/boot/tools/build.c, `SETUP_SECT_MAX`).
pub const MAX_SETUP_SECTS: u8 = 64;
/// `loadflags` bits.
pub const LOADED_HIGH: u8 = 1 << 0;
pub const CAN_USE_HEAP: u8 = 1 << 7;
/// `xloadflags` bits.
pub const XLF_KERNEL_64: u16 = 1 << 0;
pub const XLF_CAN_BE_LOADED_ABOVE_4G: u16 = 1 << 1;
/// "Undefined" boot loader: no registered loader ID.
pub const TYPE_OF_LOADER_UNDEFINED: u8 = 0xff;
/// `heap_end_ptr`: the end of the (unused) real-mode heap, the usual
/// value for setup code at 0x90000 with the stack at 0x9FE00 … minus 0x200.
pub const HEAP_END: u16 = 0xfe00;
/// The 64-bit entry is this far into the protected-mode kernel.
pub const ENTRY_64_OFFSET: u64 = 0x200;
/// The size of `struct boot_params`.
pub const ZERO_PAGE_SIZE: usize = 4096;
/// `E820_MAX_ENTRIES_ZEROPAGE`.
pub const MAX_E820_ENTRIES: usize = 128;

const SECTOR: usize = 512;
/// `syssize`'s unit.
const PARAGRAPH: u64 = 16;
const ONE_MIB: u64 = 1 << 20;
/// Where a relocatable kernel goes when its `pref_address` is unusable
/// (x86-64's `LOAD_PHYSICAL_ADDR` default).
const DEFAULT_LOAD_ADDR: u64 = 16 << 20;
const FOUR_GIB: u64 = 1 << 32;

/// Why a kernel image or the boot parameters were refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinuxError {
    /// The file ends before byte `needed`.
    Truncated { needed: u64, len: usize },
    /// No `"HdrS"` at 0x202: not a bzImage (or protocol < 2.00).
    BadMagic { found: u32 },
    /// No 0xAA55 at 0x1FE.
    BadBootFlag { found: u16 },
    /// Boot protocol older than 2.12.
    ProtocolTooOld { version: u16 },
    /// The jump at 0x200 says the setup header ends before the 2.12 fields.
    HeaderTooShort { end: usize },
    /// `loadflags` lacks `LOADED_HIGH`: a zImage, loaded at 0x10000.
    NotLoadedHigh,
    /// `xloadflags` lacks `XLF_KERNEL_64`: no 64-bit entry point.
    Not64Bit,
    /// More setup sectors than any Linux build produces.
    SetupSectsOutOfRange { setup_sects: u8 },
    /// The protected-mode kernel (`syssize` × 16 bytes) does not reach
    /// past the 64-bit entry.
    KernelTooSmall { bytes: u64 },
    /// `kernel_alignment` is 0 or not a power of two.
    BadKernelAlignment { alignment: u32 },
    /// A load address below 1 MiB, misaligned, or (for a kernel that is
    /// not relocatable) other than `pref_address`.
    BadLoadAddress { addr: u64 },
    /// The load address plus the size the kernel needs passes 2^64.
    SizeOverflow,
    /// The command line is longer than the kernel's `cmdline_size`.
    CmdlineTooLong { len: u64, max: u32 },
    /// The initrd ends above the kernel's `initrd_addr_max`.
    InitrdTooHigh { last_byte: u64, max: u64 },
    /// A range passes 2^64 or (without `XLF_CAN_BE_LOADED_ABOVE_4G`) 4 GiB.
    RangeTooHigh { what: &'static str, addr: u64, len: u64 },
    /// More memory map entries than the zero page holds.
    TooManyE820Entries { count: usize },
    /// The output buffer is smaller than a zero page.
    ZeroPageBufferTooSmall { len: usize },
}

impl fmt::Display for LinuxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated { needed, len } => {
                write!(f, "bzImage: file of {len} bytes is truncated, needs at least {needed}")
            }
            Self::BadMagic { found } => write!(f, "bzImage: no \"HdrS\" at 0x202 (found {found:#010x}): not a bzImage"),
            Self::BadBootFlag { found } => write!(f, "bzImage: boot_flag must be 0xaa55, got {found:#06x}"),
            Self::ProtocolTooOld { version } => write!(
                f,
                "bzImage: boot protocol {}.{:02} is too old, need 2.12 or later",
                version >> 8,
                version & 0xff
            ),
            Self::HeaderTooShort { end } => {
                write!(f, "bzImage: setup header ends at {end:#x}, before the protocol 2.12 fields")
            }
            Self::NotLoadedHigh => write!(f, "bzImage: loadflags lacks LOADED_HIGH (a zImage?)"),
            Self::Not64Bit => write!(f, "bzImage: xloadflags lacks XLF_KERNEL_64: no 64-bit entry point"),
            Self::SetupSectsOutOfRange { setup_sects } => {
                write!(f, "bzImage: setup_sects must be at most {MAX_SETUP_SECTS}, got {setup_sects}")
            }
            Self::KernelTooSmall { bytes } => write!(f, "bzImage: protected-mode kernel of {bytes} bytes is too small"),
            Self::BadKernelAlignment { alignment } => {
                write!(f, "bzImage: kernel_alignment must be a power of two, got {alignment:#x}")
            }
            Self::BadLoadAddress { addr } => write!(f, "bzImage: cannot load the kernel at {addr:#x}"),
            Self::SizeOverflow => write!(f, "bzImage: load address plus init_size overflows"),
            Self::CmdlineTooLong { len, max } => {
                write!(f, "zero page: command line of {len} bytes, the kernel takes at most {max}")
            }
            Self::InitrdTooHigh { last_byte, max } => {
                write!(f, "zero page: initrd ends at {last_byte:#x}, above initrd_addr_max {max:#x}")
            }
            Self::RangeTooHigh { what, addr, len } => {
                write!(f, "zero page: {what} at {addr:#x} (+{len:#x}) is beyond what the kernel can reach")
            }
            Self::TooManyE820Entries { count } => {
                write!(f, "zero page: {count} e820 entries, at most {MAX_E820_ENTRIES}")
            }
            Self::ZeroPageBufferTooSmall { len } => {
                write!(f, "zero page: buffer of {len} bytes, need {ZERO_PAGE_SIZE}")
            }
        }
    }
}

/// A checked bzImage: the file and what its setup header says.
#[derive(Clone, Copy)]
pub struct BzImage<'a> {
    image: &'a [u8],
    header_end: usize,
    version: u16,
    kernel: (usize, usize),
    load_addr: u64,
    kernel_alignment: u64,
    relocatable: bool,
    init_size: u64,
    cmdline_size: u32,
    initrd_addr_max: u32,
    xloadflags: u16,
}

// By hand: the derived form would print the whole image.
impl fmt::Debug for BzImage<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BzImage")
            .field("image_len", &self.image.len())
            .field("version", &format_args!("{:#06x}", self.version))
            .field("kernel", &self.kernel_file_range())
            .field("load_addr", &format_args!("{:#x}", self.load_addr))
            .field("init_size", &format_args!("{:#x}", self.init_size))
            .field("kernel_alignment", &format_args!("{:#x}", self.kernel_alignment))
            .field("relocatable", &self.relocatable)
            .field("xloadflags", &format_args!("{:#x}", self.xloadflags))
            .finish_non_exhaustive()
    }
}

/// A range of guest memory the VMM has filled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestRange {
    pub gpa: u64,
    pub len: u64,
}

/// What the loader tells the kernel besides its own header.
#[derive(Clone, Copy, Debug, Default)]
pub struct BootParams<'m> {
    /// The command line, NUL-terminated in guest memory; `len` excludes the
    /// NUL.
    pub cmdline: Option<GuestRange>,
    pub initrd: Option<GuestRange>,
    pub e820: &'m [E820Entry],
    /// The guest-physical address of the ACPI RSDP (`acpi_rsdp_addr`).
    pub acpi_rsdp: Option<u64>,
}

fn need(image: &[u8], end: usize) -> Result<(), LinuxError> {
    if image.len() < end { Err(LinuxError::Truncated { needed: end as u64, len: image.len() }) } else { Ok(()) }
}

impl<'a> BzImage<'a> {
    /// Checks a bzImage and works out where its kernel goes.
    pub fn parse(image: &'a [u8]) -> Result<Self, LinuxError> {
        need(image, o::HEADER_2_12_END)?;
        let rd8 = |o| le::u8_at(image, o).unwrap_or(0);
        let rd16 = |o| le::u16_at(image, o).unwrap_or(0);
        let rd32 = |o| le::u32_at(image, o).unwrap_or(0);
        let rd64 = |o| le::u64_at(image, o).unwrap_or(0);

        let magic = rd32(o::HEADER);
        if magic != HEADER_MAGIC {
            return Err(LinuxError::BadMagic { found: magic });
        }
        let boot_flag = rd16(o::BOOT_FLAG);
        if boot_flag != BOOT_FLAG_MAGIC {
            return Err(LinuxError::BadBootFlag { found: boot_flag });
        }
        let version = rd16(o::VERSION);
        if version < MIN_PROTOCOL {
            return Err(LinuxError::ProtocolTooOld { version });
        }
        // The header ends where the short jump at 0x200 lands (boot.rst).
        let header_end = o::JUMP + 2 + usize::from(rd8(o::JUMP + 1));
        if header_end < o::HEADER_2_12_END {
            return Err(LinuxError::HeaderTooShort { end: header_end });
        }
        let header_end = header_end.min(o::SETUP_HEADER_LIMIT);
        let loadflags = rd8(o::LOADFLAGS);
        if loadflags & LOADED_HIGH == 0 {
            return Err(LinuxError::NotLoadedHigh);
        }
        let xloadflags = rd16(o::XLOADFLAGS);
        if xloadflags & XLF_KERNEL_64 == 0 {
            return Err(LinuxError::Not64Bit);
        }
        let setup_sects = match rd8(o::SETUP_SECTS) {
            0 => 4,
            n if n > MAX_SETUP_SECTS => return Err(LinuxError::SetupSectsOutOfRange { setup_sects: n }),
            n => n,
        };
        // The boot sector plus the setup sectors; always past the header.
        let kernel_start = (usize::from(setup_sects) + 1) * SECTOR;
        need(image, kernel_start)?;
        // `syssize` counts 16-byte paragraphs, rounded up (Linux's
        // arch/x86/boot/tools/build.c; memtest86+ rounds the same way), so
        // the file may end up to 15 bytes before `syssize` × 16. QEMU's
        // `-kernel` (x86_load_linux) and GRUB's `linux` load the whole rest
        // of the file after the setup sectors and never look at `syssize`;
        // so do we, but a file that ends before the last paragraph
        // `syssize` names has lost bytes and is refused.
        let syssize_bytes = u64::from(rd32(o::SYSSIZE)) * 16;
        if syssize_bytes <= ENTRY_64_OFFSET {
            return Err(LinuxError::KernelTooSmall { bytes: syssize_bytes });
        }
        let needed = kernel_start as u64 + syssize_bytes - (PARAGRAPH - 1);
        if needed > image.len() as u64 {
            return Err(LinuxError::Truncated { needed, len: image.len() });
        }
        let kernel_end = image.len();
        let kernel_len = (kernel_end - kernel_start) as u64;

        let relocatable = rd8(o::RELOCATABLE_KERNEL) != 0;
        let alignment = rd32(o::KERNEL_ALIGNMENT);
        if relocatable && !alignment.is_power_of_two() {
            return Err(LinuxError::BadKernelAlignment { alignment });
        }
        let kernel_alignment = u64::from(alignment.max(1));
        let pref = rd64(o::PREF_ADDRESS);
        // A fixed kernel goes at pref_address (checked below); a relocatable
        // one there if that is usable, else at 16 MiB.
        let pref_usable = !relocatable || (pref >= ONE_MIB && pref.is_multiple_of(kernel_alignment));
        let load_addr = if pref_usable {
            pref
        } else {
            DEFAULT_LOAD_ADDR.checked_next_multiple_of(kernel_alignment).ok_or(LinuxError::SizeOverflow)?
        };

        let image = Self {
            image,
            header_end,
            version,
            kernel: (kernel_start, kernel_end),
            load_addr,
            kernel_alignment,
            relocatable,
            init_size: u64::from(rd32(o::INIT_SIZE)).max(kernel_len),
            cmdline_size: rd32(o::CMDLINE_SIZE),
            initrd_addr_max: rd32(o::INITRD_ADDR_MAX),
            xloadflags,
        };
        image.check_load_addr(load_addr)?;
        Ok(image)
    }

    fn check_load_addr(&self, addr: u64) -> Result<(), LinuxError> {
        let placed = addr >= ONE_MIB
            && if self.relocatable { addr.is_multiple_of(self.kernel_alignment) } else { addr == self.load_addr };
        if !placed {
            return Err(LinuxError::BadLoadAddress { addr });
        }
        addr.checked_add(self.init_size).ok_or(LinuxError::SizeOverflow)?;
        Ok(())
    }

    /// The same image loaded at `addr` instead (a relocatable kernel, at
    /// an address aligned to `kernel_alignment`, at or above 1 MiB).
    pub fn with_load_addr(&self, addr: u64) -> Result<Self, LinuxError> {
        self.check_load_addr(addr)?;
        Ok(Self { load_addr: addr, ..*self })
    }

    /// The boot protocol version (0x020F is 2.15).
    pub fn protocol_version(&self) -> u16 {
        self.version
    }

    /// The protected-mode kernel: the bytes to copy to [`Self::load_addr`],
    /// everything in the file after the setup sectors (as QEMU and GRUB
    /// load it: `syssize` only bounds how short the file may be).
    pub fn kernel(&self) -> &'a [u8] {
        self.image.get(self.kernel.0..self.kernel.1).unwrap_or(&[])
    }

    /// Where [`Self::kernel`] is in the file.
    pub fn kernel_file_range(&self) -> Range<usize> {
        self.kernel.0..self.kernel.1
    }

    /// Guest-physical address to copy the kernel to.
    pub fn load_addr(&self) -> u64 {
        self.load_addr
    }

    /// The 64-bit entry point (load address + 0x200).
    pub fn entry_64(&self) -> u64 {
        self.load_addr + ENTRY_64_OFFSET
    }

    /// Bytes from the load address the kernel needs (its `init_size`, at
    /// least the loaded size): RAM, identity-mapped, free of the zero page,
    /// command line and initrd.
    pub fn init_size(&self) -> u64 {
        self.init_size
    }

    /// `[load_addr, load_addr + init_size)`.
    pub fn memory_needed(&self) -> Range<u64> {
        self.load_addr..self.load_addr + self.init_size
    }

    pub fn kernel_alignment(&self) -> u64 {
        self.kernel_alignment
    }

    pub fn relocatable(&self) -> bool {
        self.relocatable
    }

    /// The longest command line the kernel takes, without the NUL.
    pub fn cmdline_max(&self) -> u32 {
        self.cmdline_size
    }

    /// The highest address the initrd may occupy (`initrd_addr_max`).
    pub fn initrd_addr_max(&self) -> u64 {
        u64::from(self.initrd_addr_max)
    }

    /// Whether kernel, zero page, command line and initrd may be above 4 GiB.
    pub fn can_load_above_4g(&self) -> bool {
        self.xloadflags & XLF_CAN_BE_LOADED_ABOVE_4G != 0
    }

    /// The zero page for this kernel (4 KiB).
    pub fn zero_page(&self, params: &BootParams<'_>) -> Result<Vec<u8>, LinuxError> {
        let mut page = vec![0u8; ZERO_PAGE_SIZE];
        self.write_zero_page(params, &mut page)?;
        Ok(page)
    }

    /// Writes the zero page into the first 4 KiB of `out` (for example
    /// straight into guest memory).
    pub fn write_zero_page(&self, params: &BootParams<'_>, out: &mut [u8]) -> Result<(), LinuxError> {
        let len = out.len();
        let Some(zp) = out.get_mut(..ZERO_PAGE_SIZE) else {
            return Err(LinuxError::ZeroPageBufferTooSmall { len });
        };
        // Check everything before writing anything.
        if params.e820.len() > MAX_E820_ENTRIES {
            return Err(LinuxError::TooManyE820Entries { count: params.e820.len() });
        }
        if let Some(c) = params.cmdline {
            if c.len > u64::from(self.cmdline_size) {
                return Err(LinuxError::CmdlineTooLong { len: c.len, max: self.cmdline_size });
            }
            // The NUL follows the text.
            self.reachable("command line", c.gpa, c.len + 1)?;
        }
        let initrd = params.initrd.filter(|r| r.len > 0);
        if let Some(r) = initrd {
            let end = self.reachable("initrd", r.gpa, r.len)?;
            let max = u64::from(self.initrd_addr_max);
            if end - 1 > max && !self.can_load_above_4g() {
                return Err(LinuxError::InitrdTooHigh { last_byte: end - 1, max });
            }
        }

        zp.fill(0);
        let header = self.image.get(o::SETUP_SECTS..self.header_end).unwrap_or(&[]);
        le::put(zp, o::SETUP_SECTS, header);
        le::put_u8(zp, o::TYPE_OF_LOADER, TYPE_OF_LOADER_UNDEFINED);
        le::put_u8(zp, o::LOADFLAGS, LOADED_HIGH | CAN_USE_HEAP);
        le::put_u16(zp, o::HEAP_END_PTR, HEAP_END);
        if let Some(c) = params.cmdline {
            le::put_u32(zp, o::CMD_LINE_PTR, c.gpa as u32);
            le::put_u32(zp, o::EXT_CMD_LINE_PTR, (c.gpa >> 32) as u32);
        }
        if let Some(r) = initrd {
            le::put_u32(zp, o::RAMDISK_IMAGE, r.gpa as u32);
            le::put_u32(zp, o::EXT_RAMDISK_IMAGE, (r.gpa >> 32) as u32);
            le::put_u32(zp, o::RAMDISK_SIZE, r.len as u32);
            le::put_u32(zp, o::EXT_RAMDISK_SIZE, (r.len >> 32) as u32);
        }
        le::put_u8(zp, o::E820_ENTRIES, params.e820.len() as u8);
        for (i, e) in params.e820.iter().enumerate() {
            le::put(zp, o::E820_TABLE + i * E820_ENTRY_SIZE, &e.to_bytes());
        }
        if let Some(rsdp) = params.acpi_rsdp {
            le::put_u64(zp, o::ACPI_RSDP_ADDR, rsdp);
        }
        Ok(())
    }

    /// Checks `[addr, addr + len)` is addressable by this kernel; returns
    /// the end.
    fn reachable(&self, what: &'static str, addr: u64, len: u64) -> Result<u64, LinuxError> {
        let too_high = LinuxError::RangeTooHigh { what, addr, len };
        let end = addr.checked_add(len).ok_or(too_high)?;
        if end > FOUR_GIB && !self.can_load_above_4g() {
            return Err(too_high);
        }
        Ok(end)
    }
}

/// Where the boot vCPU starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinuxEntry {
    /// [`BzImage::entry_64`].
    pub entry_64: u64,
    /// Guest-physical address of the zero page.
    pub zero_page: u64,
    /// CR3 from [`long_mode::build_identity_map`]; the map must cover the
    /// kernel's [`BzImage::memory_needed`], the zero page and the command
    /// line.
    pub cr3: u64,
    /// Guest-physical address of [`long_mode::BOOT_GDT`].
    pub gdt_base: u64,
}

/// Loads the boot vCPU with the 64-bit boot protocol's entry state
/// (boot.rst §"64-bit Boot Protocol"): long mode with paging on the
/// identity map, the boot GDT loaded with CS = `__BOOT_CS` (0x10) and the
/// data segments `__BOOT_DS` (0x18), interrupts off (RFLAGS.IF = 0, nothing
/// to inject), RSI = the zero page, RIP = the 64-bit entry, all other
/// general registers 0.
pub fn set_boot_vcpu(run: &mut VcpuRun, entry: &LinuxEntry) {
    run.gprs = [0; 16];
    run.gprs[RSI] = entry.zero_page;
    run.rip = entry.entry_64;
    run.inject = 0;
    long_mode::set_flat_long_mode(run, entry.cr3, entry.gdt_base);
    run.load_state = abi::LOAD_GPRS | abi::LOAD_SYSTEM;
}

/// `VcpuRun::gprs` index of RSI.
const RSI: usize = 6;

#[cfg(test)]
mod tests;
