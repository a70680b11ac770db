//! Where the firmware image sits in the guest, as on a PC and in QEMU: the
//! whole image ends at 4 GiB (the reset vector, 0xFFFF_FFF0, is its last
//! 16 bytes) and its last 128 KiB also appear at 0xE0000-0xFFFFF (the
//! "low alias" that real-mode code at F000:xxxx runs from).
//!
//! The high copy is mapped into the guest read-only and executable; a
//! write there is an MMIO exit the platform ignores, as writes to a ROM.
//! The low alias is guest RAM the VMM fills with those 128 KiB before the
//! first instruction: what SeaBIOS's own shadowing (PAM to RAM, copy from
//! the high alias) produces anyway (see [`super::chipset`]).

use core::fmt;

use crate::boot::layout;

/// The low alias: the image's last 128 KiB at 0xE0000.
pub const LOW_ALIAS_BASE: u64 = 0xE_0000;
pub const LOW_ALIAS_SIZE: u64 = 0x2_0000;
/// The reset vector, CS base 0xFFFF_0000 with IP 0xFFF0 (SDM Vol. 3A
/// §9.1.4 "First Instruction Executed").
pub const RESET_CS_BASE: u64 = 0xFFFF_0000;
pub const RESET_IP: u64 = 0xFFF0;
/// The largest image: 16 MiB (below it the I/O APIC and local APIC pages
/// at 0xFEC0_0000 and 0xFEE0_0000 stay clear, as in QEMU).
pub const MAX_IMAGE_BYTES: u64 = 16 << 20;
/// Images are a whole number of 64 KiB blocks (flash sectors).
pub const IMAGE_ALIGN: u64 = 0x1_0000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RomError {
    /// Empty, not a multiple of 64 KiB, or larger than [`MAX_IMAGE_BYTES`].
    BadSize { bytes: u64 },
}

impl fmt::Display for RomError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadSize { bytes } => write!(
                f,
                "firmware image: {bytes} bytes; must be a non-zero multiple of 64 KiB up to {} MiB",
                MAX_IMAGE_BYTES >> 20
            ),
        }
    }
}

/// A checked firmware image and where its pieces go.
#[derive(Clone, Copy, Debug)]
pub struct FirmwareImage<'a> {
    bytes: &'a [u8],
}

impl<'a> FirmwareImage<'a> {
    pub fn new(bytes: &'a [u8]) -> Result<Self, RomError> {
        let n = bytes.len() as u64;
        if n == 0 || !n.is_multiple_of(IMAGE_ALIGN) || n > MAX_IMAGE_BYTES {
            return Err(RomError::BadSize { bytes: n });
        }
        Ok(Self { bytes })
    }

    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Guest-physical address of the image's first byte (it ends at 4 GiB).
    pub fn high_base(&self) -> u64 {
        layout::FOUR_GIB - self.bytes.len() as u64
    }

    /// What goes into RAM at 0xE0000 and where: the image's last 128 KiB
    /// (all of a smaller image, ending at 1 MiB).
    pub fn low_alias(&self) -> (u64, &'a [u8]) {
        let n = (self.bytes.len() as u64).min(LOW_ALIAS_SIZE) as usize;
        let tail = &self.bytes[self.bytes.len() - n..];
        (layout::HIGH_MEMORY_START - n as u64, tail)
    }
}

/// The vCPU state at reset (SDM Vol. 3A §9.1.1, Table 9-1; AMD APM Vol. 2
/// §14.1.3): real mode, CS selector 0xF000 with base 0xFFFF_0000, IP
/// 0xFFF0, the other segments 0 with 64 KiB limits, CR0 = 0x6000_0010
/// (CD, NW, ET), EFLAGS bit 1, EDX the processor signature.
pub fn set_reset_state(run: &mut abi::VcpuRun, edx_signature: u32) {
    use abi::Segment;
    // Present, read/write data (3) or execute/read code (0xB), S = 1.
    let data = Segment { selector: 0, attrib: 0x93, limit: 0xFFFF, base: 0 };
    let code = Segment { selector: 0xF000, attrib: 0x9B, limit: 0xFFFF, base: RESET_CS_BASE };
    run.gprs = [0; 16];
    run.gprs[2] = u64::from(edx_signature);
    run.rip = RESET_IP;
    run.rflags = 0x2;
    run.cr0 = 0x6000_0010;
    run.cr2 = 0;
    run.cr3 = 0;
    run.cr4 = 0;
    run.efer = 0;
    // ES, CS, SS, DS, FS, GS, LDTR, TR.
    run.segments = [data, code, data, data, data, data, data, data];
    run.segments[6] = Segment { selector: 0, attrib: 0x82, limit: 0xFFFF, base: 0 };
    run.segments[7] = Segment { selector: 0, attrib: 0x8B, limit: 0xFFFF, base: 0 };
    run.gdtr = Segment { selector: 0, attrib: 0, limit: 0xFFFF, base: 0 };
    run.idtr = Segment { selector: 0, attrib: 0, limit: 0xFFFF, base: 0 };
    run.inject = 0;
    run.load_state = abi::LOAD_GPRS | abi::LOAD_SYSTEM;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_256k_bios_ends_at_4_gib_and_its_tail_is_the_low_alias() {
        let mut img = alloc::vec![0u8; 256 * 1024];
        img[256 * 1024 - 16] = 0xEA; // the far jump at the reset vector
        img[128 * 1024] = 0x55; // the first byte of the last 128 KiB
        let f = FirmwareImage::new(&img).unwrap();
        assert_eq!(f.high_base(), 0xFFFC_0000);
        // The reset vector's linear address is the image's last 16 bytes.
        let reset = RESET_CS_BASE + RESET_IP;
        assert_eq!(f.bytes()[(reset - f.high_base()) as usize], 0xEA);
        let (at, tail) = f.low_alias();
        assert_eq!((at, tail.len()), (0xE_0000, 128 * 1024));
        assert_eq!(tail[0], 0x55);
        // F000:FFF0 in the low alias is the same byte.
        assert_eq!(tail[(0xF_FFF0 - at) as usize], 0xEA);
    }

    #[test]
    fn small_images_alias_below_1_mib_and_bad_sizes_are_refused() {
        let img = alloc::vec![0u8; 64 * 1024];
        let (at, tail) = FirmwareImage::new(&img).unwrap().low_alias();
        assert_eq!((at, tail.len()), (0xF_0000, 64 * 1024));
        for n in [0, 1, 64 * 1024 + 1, (MAX_IMAGE_BYTES + IMAGE_ALIGN) as usize] {
            let img = alloc::vec![0u8; n];
            assert_eq!(FirmwareImage::new(&img).unwrap_err(), RomError::BadSize { bytes: n as u64 });
        }
        let big = alloc::vec![0u8; MAX_IMAGE_BYTES as usize];
        let f = FirmwareImage::new(&big).unwrap();
        assert!(f.high_base() >= layout::LAPIC_BASE + layout::APIC_PAGE_SIZE);
    }

    #[test]
    fn the_reset_state_is_real_mode_at_the_reset_vector() {
        let mut run = abi::VcpuRun::ZERO;
        run.gprs[0] = 7;
        set_reset_state(&mut run, 0x600);
        assert_eq!(run.segments[1].base + run.rip, 0xFFFF_FFF0);
        assert_eq!(run.cr0 & 1, 0, "real mode");
        assert_eq!((run.gprs[0], run.gprs[2]), (0, 0x600));
        assert_eq!(run.load_state, abi::LOAD_GPRS | abi::LOAD_SYSTEM);
    }
}
