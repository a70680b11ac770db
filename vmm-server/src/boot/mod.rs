//! Booting a guest: what the VMM writes into guest memory and the vCPU
//! before the first instruction runs, and the firmware-like devices the
//! guest then talks to for power off and reset.
//!
//! The flow for a Linux guest: [`linux::BzImage::parse`] checks the kernel
//! file and says where it goes; [`e820::E820`] lays out RAM around the
//! holes of the [`layout`] and produces the memory map;
//! [`acpi::AcpiTables::build`] generates RSDP, XSDT, FADT, FACS, MADT, MCFG
//! and a DSDT (AML from [`aml`]); [`long_mode`] builds identity page tables
//! and the boot GDT; [`linux::BzImage::zero_page`] fills `struct
//! boot_params`; [`linux::set_boot_vcpu`] puts the boot vCPU at the 64-bit
//! entry. At run time [`acpi::AcpiPm`] answers the PM1a and reset ports and
//! turns the guest's `SLP_EN` or reset write into a request to the VMM.
//!
//! Everything here is pure logic over byte slices: no guest memory access,
//! no I/O, and every input (above all the kernel image) is treated as
//! hostile.

pub mod acpi;
pub mod aml;
pub mod e820;
pub mod layout;
pub mod linux;
pub mod long_mode;

/// Little-endian field access for the byte layouts built and parsed here.
/// Reads are bounds-checked (`None` past the end); writes are only used on
/// buffers this module sized itself, and still never panic: a write past
/// the end is dropped.
mod le {
    pub fn u8_at(b: &[u8], off: usize) -> Option<u8> {
        b.get(off).copied()
    }
    pub fn u16_at(b: &[u8], off: usize) -> Option<u16> {
        Some(u16::from_le_bytes(b.get(off..off.checked_add(2)?)?.try_into().ok()?))
    }
    pub fn u32_at(b: &[u8], off: usize) -> Option<u32> {
        Some(u32::from_le_bytes(b.get(off..off.checked_add(4)?)?.try_into().ok()?))
    }
    pub fn u64_at(b: &[u8], off: usize) -> Option<u64> {
        Some(u64::from_le_bytes(b.get(off..off.checked_add(8)?)?.try_into().ok()?))
    }
    pub fn put(b: &mut [u8], off: usize, bytes: &[u8]) {
        if let Some(dst) = off.checked_add(bytes.len()).and_then(|end| b.get_mut(off..end)) {
            dst.copy_from_slice(bytes);
        }
    }
    pub fn put_u8(b: &mut [u8], off: usize, v: u8) {
        put(b, off, &[v]);
    }
    pub fn put_u16(b: &mut [u8], off: usize, v: u16) {
        put(b, off, &v.to_le_bytes());
    }
    pub fn put_u32(b: &mut [u8], off: usize, v: u32) {
        put(b, off, &v.to_le_bytes());
    }
    pub fn put_u64(b: &mut [u8], off: usize, v: u64) {
        put(b, off, &v.to_le_bytes());
    }
}
