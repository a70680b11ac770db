//! Booting a VM through real firmware (SmartOS's `bootrom`): the pieces of
//! QEMU's platform that Debian's SeaBIOS (and later OVMF) need, as
//! host-testable models the runtime wires in.
//!
//! * [`fw_cfg`]: the firmware configuration device (I/O ports and DMA)
//!   with the files the firmware reads: `etc/e820`, `bootorder`, the ACPI
//!   tables and their loader script ([`table_loader`]), and the knobs
//!   ([`fw_cfg_for_vm`]).
//! * [`chipset`]: the MCH registers firmware programs (PAM, PCIEXBAR) and
//!   the CMOS memory-size bytes.
//! * [`rom`]: the image at the top of 4 GiB and its low alias, and the
//!   vCPU's reset state.
//!
//! * [`lpc`]: the ICH9 LPC bridge at 00:1f.0, where OVMF reads the PM
//!   base (firmware-booted VMs only).
//!
//! Direct kernel boot uses none of this.

use alloc::string::String;
use alloc::vec::Vec;

use crate::boot::e820::E820;
use crate::pci::PciSlot;

pub mod chipset;
pub mod fw_cfg;
pub mod lpc;
pub mod rom;
pub mod table_loader;

/// The boot file a `"bootrom": "bios"` VM carries: Debian's SeaBIOS
/// (`/usr/share/seabios/bios-256k.bin` of package `seabios`).
pub const SEABIOS_FILE: &str = "bios-256k.bin";

/// The boot file a `"bootrom": "uefi"` VM carries: Debian's OVMF
/// (`/usr/share/ovmf/OVMF.fd` of package `ovmf`: the 2 MiB image with the
/// code and the initial variable store in one). It is mapped as a ROM, so
/// OVMF's flash probe finds no writable flash and it keeps its variables
/// in RAM (a volatile store: variables set at run time last until the VM
/// stops; what Debian ships in the image is the starting content).
pub const OVMF_FILE: &str = "OVMF.fd";

/// The boot file of `bootrom`.
pub fn image_file(bootrom: crate::config::Bootrom) -> &'static str {
    match bootrom {
        crate::config::Bootrom::Bios => SEABIOS_FILE,
        crate::config::Bootrom::Uefi => OVMF_FILE,
    }
}

/// `opt/ovmf/X-PciMmio64Mb`: OVMF's 64-bit PCI aperture in MiB. 0: none,
/// so OVMF places every BAR (virtio's 64-bit ones too) in the 32-bit
/// window below the I/O APIC, as SeaBIOS does and as the bus placed them.
pub const OVMF_MMIO64_FILE: &str = "opt/ovmf/X-PciMmio64Mb";

/// Port 0x402: QEMU's debug console (`-debugcon`), where SeaBIOS writes
/// its log (banner included). Reads return [`DEBUGCON_READBACK`], which is
/// how SeaBIOS knows the port is there.
pub const DEBUGCON_PORT: u16 = 0x402;
pub const DEBUGCON_READBACK: u8 = 0xE9;

/// The fw_cfg device of a firmware-booted VM of `ram_bytes` and `vcpus`
/// whose boot disk is the PCI function at `boot_disk`.
///
/// Files: `etc/e820` (RAM and the reserved ranges of [`E820::pc`] without
/// the holes below 1 MiB, which the firmware manages itself), `bootorder`
/// (the boot disk's OpenFirmware path, as QEMU writes it, then `HALT`),
/// `etc/show-boot-menu` 0 (no "Press ESC" pause), OVMF's 64-bit aperture
/// off ([`OVMF_MMIO64_FILE`]), the ACPI tables with
/// `etc/table-loader` ([`table_loader`]).
pub fn fw_cfg_for_vm(ram_bytes: u64, vcpus: u32, boot_disk: Option<PciSlot>) -> Result<fw_cfg::FwCfg, String> {
    let mut f = fw_cfg::FwCfg::new(ram_bytes, vcpus.min(u32::from(u16::MAX)) as u16);
    // What the RAM blocks back outside the holes below 1 MiB (as the
    // direct-boot loader lists it).
    let listed = ram_bytes.saturating_sub(crate::boot::layout::BELOW_1M_HOLES);
    let map = E820::pc(listed).build().map_err(|e| alloc::format!("{e}"))?;
    let mut e820 = Vec::new();
    for e in map.entries() {
        // Below 1 MiB only the RAM from 0: the firmware manages the rest
        // of the first MiB itself (its own code, the EBDA, option ROMs).
        if e.addr < crate::boot::layout::HIGH_MEMORY_START && e.addr != 0 {
            continue;
        }
        e820.extend_from_slice(&e.to_bytes());
    }
    let err = |e: fw_cfg::FwCfgError| alloc::format!("{e}");
    f.add_file("etc/e820", e820, false).map_err(err)?;
    let mut order = String::new();
    if let Some(slot) = boot_disk {
        order.push_str(&openfirmware_path(slot));
        order.push('\n');
    }
    order.push_str("HALT");
    // NUL-terminated, as QEMU writes it: OVMF refuses a file whose last
    // byte is not NUL (and then keeps its own order, the first disk first).
    let mut order = order.into_bytes();
    order.push(0);
    f.add_file("bootorder", order, false).map_err(err)?;
    f.add_file("etc/show-boot-menu", 0u16.to_le_bytes().to_vec(), false).map_err(err)?;
    f.add_file(OVMF_MMIO64_FILE, b"0".to_vec(), false).map_err(err)?;
    let acpi = table_loader::acpi_files(vcpus).map_err(|e| alloc::format!("{e}"))?;
    f.add_file(table_loader::TABLES_FILE, acpi.tables, false).map_err(err)?;
    f.add_file(table_loader::RSDP_FILE, acpi.rsdp, false).map_err(err)?;
    f.add_file(table_loader::LOADER_FILE, acpi.loader, false).map_err(err)?;
    Ok(f)
}

/// A virtio-blk disk's path as QEMU writes it in `bootorder`
/// (`/pci@i0cf8/scsi@DEV/disk@0,0`: the PCI class name of a virtio-blk
/// function, mass storage/SCSI, then the disk). SeaBIOS matches it with its
/// glob `/pci@i0cf8/*@DEV`; OVMF's QemuBootOrderLib translates it to
/// `PciRoot(0x0)/Pci(0xDEV,0x0)/HD(` and boots the option it prefixes first.
pub fn openfirmware_path(slot: PciSlot) -> String {
    // Every device here is function 0 of its slot.
    alloc::format!("/pci@i0cf8/scsi@{:x}/disk@0,0", slot.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::VecMemory;

    fn read_file(f: &mut fw_cfg::FwCfg, name: &str) -> Option<Vec<u8>> {
        f.file(name).map(<[u8]>::to_vec)
    }

    #[test]
    fn the_vm_files_describe_ram_the_boot_disk_and_acpi() {
        let slot = PciSlot(3);
        let mut f = fw_cfg_for_vm(256 << 20, 2, Some(slot)).unwrap();
        let e820 = read_file(&mut f, "etc/e820").unwrap();
        assert_eq!(e820.len() % 20, 0);
        let entries: Vec<(u64, u64, u32)> = e820
            .chunks(20)
            .map(|c| {
                (
                    u64::from_le_bytes(c[0..8].try_into().unwrap()),
                    u64::from_le_bytes(c[8..16].try_into().unwrap()),
                    u32::from_le_bytes(c[16..20].try_into().unwrap()),
                )
            })
            .collect();
        // RAM from 0 and from 1 MiB to the end of the 256 MiB; nothing
        // else between 0 and 1 MiB.
        let ram: u64 = entries.iter().filter(|e| e.2 == 1).map(|e| e.1).sum();
        assert!(entries.iter().any(|e| e.0 == 0 && e.2 == 1), "{entries:x?}");
        assert!(entries.iter().any(|e| e.0 == 0x10_0000 && e.0 + e.1 == 256 << 20 && e.2 == 1), "{entries:x?}");
        assert!(ram <= 256 << 20);
        assert!(!entries.iter().any(|e| e.0 > 0 && e.0 < 0x10_0000));
        assert_eq!(read_file(&mut f, "bootorder").unwrap(), b"/pci@i0cf8/scsi@3/disk@0,0\nHALT\0");
        assert!(read_file(&mut f, "etc/table-loader").is_some_and(|l| l.len() % 128 == 0));
        assert_eq!(read_file(&mut f, "etc/acpi/rsdp").unwrap()[..8], *b"RSD PTR ");
        // What the guest reads through DMA is the same.
        let mut m = VecMemory::new(0, 0x10000);
        f.io_write(fw_cfg::SELECTOR_PORT, 2, u32::from(fw_cfg::KEY_NB_CPUS), &mut m);
        assert_eq!(f.io_read(fw_cfg::DATA_PORT, 2), 2);
    }

    #[test]
    fn openfirmware_paths_name_the_device_in_hex() {
        assert_eq!(openfirmware_path(PciSlot(0x1f)), "/pci@i0cf8/scsi@1f/disk@0,0");
        assert_eq!(openfirmware_path(PciSlot(4)), "/pci@i0cf8/scsi@4/disk@0,0");
    }
}
