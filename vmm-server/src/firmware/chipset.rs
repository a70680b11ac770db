//! The chipset registers firmware programs on this platform, which is
//! QEMU's `q35` (Intel MCH 82G33 host bridge 8086:29C0, ECAM at
//! 0xB000_0000, ACPI PM block at 0x600): the same machine direct kernel
//! boot presents, so both boot paths see one platform. (i440FX+PIIX would
//! need a second host bridge, a different ECAM story and PM base for the
//! firmware path alone.)
//!
//! * PAM0..PAM6 (MCH config 0x90-0x96): which of the BIOS areas below
//!   1 MiB read from RAM or ROM. Here the area is always RAM holding a
//!   copy of the firmware's last 128 KiB (the "low alias", see
//!   [`super::rom`]), which is what SeaBIOS makes it anyway when it
//!   shadows itself (it copies from the top-of-4-GiB alias into the same
//!   addresses with PAM set to RAM); so the registers are plain read/write
//!   storage and the guest reads back what it wrote.
//! * PCIEXBAR (MCH config 0x60, 64 bits): where the ECAM window sits.
//!   Firmware writes QEMU's value, [`layout::ECAM_BASE`] with the enable
//!   bit; the window does not move (the register reads back what was
//!   written, the ACPI MCFG table names the fixed window).
//! * Reset control (port 0xCF9) and the PM block are in
//!   [`crate::vm::platform`] and [`crate::boot::acpi`] already.
//! * CMOS memory-size and CPU-count bytes ([`cmos_bytes`]), as QEMU's
//!   `pc_cmos_init` sets them and SeaBIOS reads them when fw_cfg has no
//!   e820 table (and always for the CPU count, byte 0x5F).

use alloc::vec::Vec;

use crate::boot::layout;

/// MCH config offsets (Intel 3 Series Express Chipset datasheet §5.1).
pub const PCIEXBAR: usize = 0x60;
pub const PAM0: usize = 0x90;
pub const PAM_COUNT: usize = 7;

/// Marks the MCH registers firmware writes as writable in the host
/// bridge's config space.
pub fn make_firmware_registers_writable(config: &mut crate::pci::config::ConfigSpace) {
    config.set_writable(PCIEXBAR, &[0xFF; 8]);
    config.set_writable(PAM0, &[0xFF; PAM_COUNT]);
}

// CMOS RAM indices (QEMU hw/i386/pc.c, SeaBIOS src/hw/rtc.h).
pub const CMOS_BASE_MEM_LOW: u8 = 0x15;
pub const CMOS_EXT_MEM_LOW: u8 = 0x17;
pub const CMOS_EXT_MEM_LOW2: u8 = 0x30;
pub const CMOS_MEM_ABOVE_16M: u8 = 0x34;
pub const CMOS_MEM_ABOVE_4G: u8 = 0x5B;
pub const CMOS_SMP_COUNT: u8 = 0x5F;

/// The CMOS bytes (index, value) that describe `ram_bytes` of RAM laid
/// out as [`layout::ram_blocks`] and `vcpus` vCPUs: base memory 640 KiB,
/// extended memory above 1 MiB in KiB (at most 65535), memory from 16 MiB
/// to the PCI hole in 64 KiB units (at most 65535), memory above 4 GiB in
/// 64 KiB units (3 bytes), the vCPU count less one.
pub fn cmos_bytes(ram_bytes: u64, vcpus: u32) -> Vec<(u8, u8)> {
    let low = ram_bytes.min(layout::LOW_RAM_END);
    let high = ram_bytes.saturating_sub(layout::LOW_RAM_END);
    let base_kib: u16 = 640;
    let ext_kib = (low.saturating_sub(1 << 20) / 1024).min(0xFFFF) as u16;
    let above_16m = (low.saturating_sub(16 << 20) >> 16).min(0xFFFF) as u16;
    let above_4g = (high >> 16).min(0xFF_FFFF) as u32;
    let mut v = Vec::new();
    let mut put16 = |i: u8, x: u16| {
        v.push((i, x as u8));
        v.push((i + 1, (x >> 8) as u8));
    };
    put16(CMOS_BASE_MEM_LOW, base_kib);
    put16(CMOS_EXT_MEM_LOW, ext_kib);
    put16(CMOS_EXT_MEM_LOW2, ext_kib);
    put16(CMOS_MEM_ABOVE_16M, above_16m);
    v.push((CMOS_MEM_ABOVE_4G, above_4g as u8));
    v.push((CMOS_MEM_ABOVE_4G + 1, (above_4g >> 8) as u8));
    v.push((CMOS_MEM_ABOVE_4G + 2, (above_4g >> 16) as u8));
    v.push((CMOS_SMP_COUNT, vcpus.saturating_sub(1).min(0xFF) as u8));
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::rtc::Rtc;
    use crate::pci::host_bridge::HostBridge;
    use crate::pci::PciDevice;

    fn get(bytes: &[(u8, u8)], i: u8) -> u32 {
        bytes.iter().find(|(k, _)| *k == i).map(|(_, v)| u32::from(*v)).unwrap()
    }

    /// Reads memory sizes back as SeaBIOS's `qemu_preinit` does.
    fn seabios_ram_size(b: &[(u8, u8)]) -> (u64, u64) {
        let above_16m = get(b, 0x34) | get(b, 0x35) << 8;
        let low = (u64::from(above_16m) << 16) + (16 << 20);
        let high = u64::from(get(b, 0x5B) | get(b, 0x5C) << 8 | get(b, 0x5D) << 16) << 16;
        (low, high)
    }

    #[test]
    fn cmos_bytes_say_what_ram_and_cpus_the_vm_has() {
        let b = cmos_bytes(256 << 20, 2);
        assert_eq!(get(&b, 0x15) | get(&b, 0x16) << 8, 640);
        // Extended memory saturates at 65535 KiB, as on a PC.
        assert_eq!(get(&b, 0x17) | get(&b, 0x18) << 8, 0xFFFF);
        assert_eq!(get(&b, 0x30) | get(&b, 0x31) << 8, 0xFFFF);
        assert_eq!(seabios_ram_size(&b), (256 << 20, 0));
        assert_eq!(get(&b, 0x5F), 1);
        let small = cmos_bytes(64 << 20, 1);
        assert_eq!(get(&small, 0x17) | get(&small, 0x18) << 8, 63 * 1024);
        assert_eq!(get(&small, 0x5F), 0);
        // 4 GiB: 2.75 below the hole, 1.25 above 4 GiB.
        let b = cmos_bytes(4 << 30, 32);
        assert_eq!(get(&b, 0x17) | get(&b, 0x18) << 8, 0xFFFF);
        assert_eq!(seabios_ram_size(&b), (layout::LOW_RAM_END, (4 << 30) - layout::LOW_RAM_END));
        assert_eq!(get(&b, 0x5F), 31);
        // Every index is plain CMOS RAM the RTC model accepts.
        let mut rtc = Rtc::new(0, 0);
        for (i, v) in cmos_bytes(1 << 40, 255) {
            assert!(rtc.set_nvram(i, v), "{i:#x}");
        }
    }

    #[test]
    fn pam_and_pciexbar_read_back_what_firmware_wrote() {
        let mut hb = HostBridge::new();
        assert_eq!(hb.config().read(PAM0 as u16, 1), 0);
        // SeaBIOS's make_bios_writable_intel: all PAMs to 0x33.
        for i in 0..PAM_COUNT as u16 {
            hb.config_mut().write(PAM0 as u16 + i, 1, 0x33);
        }
        assert_eq!(hb.config().read(PAM0 as u16, 4), 0x3333_3333);
        assert_eq!(hb.config().read(PAM0 as u16 + 4, 4), 0x0033_3333, "0x97 is not a PAM");
        // mch_mem_addr_setup: upper half, then base | enable.
        hb.config_mut().write(PCIEXBAR as u16 + 4, 4, 0);
        hb.config_mut().write(PCIEXBAR as u16, 4, layout::ECAM_BASE as u32 | 1);
        assert_eq!(hb.config().read(PCIEXBAR as u16, 4), layout::ECAM_BASE as u32 | 1);
        // The IDs stay read-only.
        hb.config_mut().write(0, 4, 0);
        assert_eq!(hb.config().read(0, 4), 0x29C0_8086);
    }
}
