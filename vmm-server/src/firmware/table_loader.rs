//! The ACPI tables of a firmware-booted VM, handed over as QEMU does: the
//! blobs `etc/acpi/tables` and `etc/acpi/rsdp` in fw_cfg and the linker
//! script `etc/table-loader` that tells the firmware where to put them,
//! which pointers to relocate and which checksums to fix (QEMU
//! `hw/acpi/bios-linker-loader.c`; SeaBIOS `src/fw/romfile_loader.c`, OVMF
//! `OvmfPkg/AcpiPlatformDxe/QemuFwCfgAcpi.c` run it).
//!
//! Why the loader and not the firmware's own tables: the guest then sees
//! the very tables of direct kernel boot ([`crate::boot::acpi`]: the same
//! MADT, MCFG and DSDT with our PM block and reset register) under both
//! firmwares, and OVMF has no tables of its own for this platform.
//!
//! The tables are built at base 0, so every pointer in them is an offset
//! into the blob; the script relocates each pointer by where the firmware
//! placed the blob, then fixes every checksum. The checksum bytes are
//! handed over as 0, as QEMU does: SeaBIOS subtracts the sum of the range
//! from the checksum byte, but OVMF *sets* it to minus the sum of the
//! range (its own byte included), which is right only when the byte
//! starts at 0; with our build-time checksums left in, OVMF found every
//! table's sum wrong and installed none of them.

use alloc::vec::Vec;

use crate::boot::acpi::{AcpiError, AcpiLayout, AcpiTables, HEADER_LEN, RSDP_LEN, fadt_offsets};

pub const TABLES_FILE: &str = "etc/acpi/tables";
pub const RSDP_FILE: &str = "etc/acpi/rsdp";
pub const LOADER_FILE: &str = "etc/table-loader";
/// Each loader command is 128 bytes.
pub const COMMAND_LEN: usize = 128;
const NAME_LEN: usize = 56;

pub const CMD_ALLOCATE: u32 = 1;
pub const CMD_ADD_POINTER: u32 = 2;
pub const CMD_ADD_CHECKSUM: u32 = 3;
/// ALLOCATE zones: anywhere below 4 GiB, or the F segment (0xF0000).
pub const ZONE_HIGH: u8 = 1;
pub const ZONE_FSEG: u8 = 2;

/// The three fw_cfg files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcpiFiles {
    pub tables: Vec<u8>,
    pub rsdp: Vec<u8>,
    pub loader: Vec<u8>,
}

fn name(field: &mut [u8], s: &str) {
    let n = s.len().min(NAME_LEN - 1);
    field[..n].copy_from_slice(&s.as_bytes()[..n]);
}

fn allocate(file: &str, align: u32, zone: u8) -> [u8; COMMAND_LEN] {
    let mut c = [0u8; COMMAND_LEN];
    c[0..4].copy_from_slice(&CMD_ALLOCATE.to_le_bytes());
    name(&mut c[4..4 + NAME_LEN], file);
    c[60..64].copy_from_slice(&align.to_le_bytes());
    c[64] = zone;
    c
}

fn add_pointer(dest: &str, src: &str, offset: u32, size: u8) -> [u8; COMMAND_LEN] {
    let mut c = [0u8; COMMAND_LEN];
    c[0..4].copy_from_slice(&CMD_ADD_POINTER.to_le_bytes());
    name(&mut c[4..60], dest);
    name(&mut c[60..116], src);
    c[116..120].copy_from_slice(&offset.to_le_bytes());
    c[120] = size;
    c
}

fn add_checksum(file: &str, offset: u32, start: u32, len: u32) -> [u8; COMMAND_LEN] {
    let mut c = [0u8; COMMAND_LEN];
    c[0..4].copy_from_slice(&CMD_ADD_CHECKSUM.to_le_bytes());
    name(&mut c[4..60], file);
    c[60..64].copy_from_slice(&offset.to_le_bytes());
    c[64..68].copy_from_slice(&start.to_le_bytes());
    c[68..72].copy_from_slice(&len.to_le_bytes());
    c
}

fn get(b: &[u8], off: usize, size: usize) -> u64 {
    let mut v = [0u8; 8];
    if let Some(s) = b.get(off..off + size) {
        v[..size].copy_from_slice(s);
    }
    u64::from_le_bytes(v)
}

/// The tables of [`AcpiTables::build`] for `vcpus` vCPUs on the PC layout,
/// as loader files.
pub fn acpi_files(vcpus: u32) -> Result<AcpiFiles, AcpiError> {
    let layout = AcpiLayout { base: 0, ..AcpiLayout::pc() };
    let built = AcpiTables::build(vcpus, &layout)?;
    let blob = built.bytes;
    let r = built.rsdp_offset;
    let rsdp = blob.get(r..r + RSDP_LEN).unwrap_or(&[]).to_vec();
    // The RSDP goes to its own file (the F segment, where a guest scans
    // for it); its bytes in the tables blob are left as they are, unused.
    let mut cmds: Vec<[u8; COMMAND_LEN]> = alloc::vec![
        allocate(TABLES_FILE, 64, ZONE_HIGH),
        allocate(RSDP_FILE, 16, ZONE_FSEG),
        add_pointer(RSDP_FILE, TABLES_FILE, 24, 8),
    ];
    let mut sums = alloc::vec![add_checksum(RSDP_FILE, 8, 0, 20), add_checksum(RSDP_FILE, 32, 0, RSDP_LEN as u32)];
    // Walk the XSDT and every table it names; the FADT also points at the
    // FACS and the DSDT.
    let xsdt = get(&rsdp, 24, 8) as usize;
    let xsdt_len = get(&blob, xsdt + 4, 4) as usize;
    let mut tables = alloc::vec![xsdt];
    for i in 0..xsdt_len.saturating_sub(HEADER_LEN) / 8 {
        let at = xsdt + HEADER_LEN + 8 * i;
        cmds.push(add_pointer(TABLES_FILE, TABLES_FILE, at as u32, 8));
        let t = get(&blob, at, 8) as usize;
        tables.push(t);
        if blob.get(t..t + 4) == Some(b"FACP") {
            use fadt_offsets as o;
            for (field, size) in [(o::FIRMWARE_CTRL, 4), (o::DSDT, 4), (o::X_FIRMWARE_CTRL, 8), (o::X_DSDT, 8)] {
                let v = get(&blob, t + field, size) as usize;
                if v != 0 {
                    cmds.push(add_pointer(TABLES_FILE, TABLES_FILE, (t + field) as u32, size as u8));
                    if field == o::DSDT {
                        tables.push(v);
                    }
                }
            }
        }
    }
    let mut blob = blob;
    for t in tables {
        let len = get(&blob, t + 4, 4) as u32;
        sums.push(add_checksum(TABLES_FILE, t as u32 + 9, t as u32, len));
        if let Some(c) = blob.get_mut(t + 9) {
            *c = 0;
        }
    }
    let mut rsdp = rsdp;
    for at in [8, 32] {
        if let Some(c) = rsdp.get_mut(at) {
            *c = 0;
        }
    }
    cmds.extend(sums);
    Ok(AcpiFiles { tables: blob, rsdp, loader: cmds.concat() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boot::acpi::checksum;

    fn file(f: &[u8]) -> &str {
        let n = f.iter().position(|&b| b == 0).unwrap();
        core::str::from_utf8(&f[..n]).unwrap()
    }

    /// How a firmware computes a checksum byte.
    #[derive(Clone, Copy, Debug)]
    enum Checksum {
        /// SeaBIOS `romfile_loader_add_checksum`: byte -= sum(range).
        Subtract,
        /// OVMF `ProcessCmdAddChecksum`: byte = -sum(range), the byte's
        /// old value included in the range.
        Set,
    }

    /// Runs the script as a firmware would, placing the tables at
    /// `tables_at` and the RSDP at `rsdp_at`; returns the relocated files.
    fn run(files: &AcpiFiles, tables_at: u64, rsdp_at: u64, how: Checksum) -> (Vec<u8>, Vec<u8>) {
        let (mut t, mut r) = (files.tables.clone(), files.rsdp.clone());
        for c in files.loader.chunks(COMMAND_LEN) {
            let cmd = u32::from_le_bytes(c[0..4].try_into().unwrap());
            match cmd {
                CMD_ALLOCATE => {}
                CMD_ADD_POINTER => {
                    let src_base = if file(&c[60..116]) == TABLES_FILE { tables_at } else { rsdp_at };
                    let off = u32::from_le_bytes(c[116..120].try_into().unwrap()) as usize;
                    let size = c[120] as usize;
                    let dest = if file(&c[4..60]) == TABLES_FILE { &mut t } else { &mut r };
                    let v = get(dest, off, size) + src_base;
                    dest[off..off + size].copy_from_slice(&v.to_le_bytes()[..size]);
                }
                CMD_ADD_CHECKSUM => {
                    let dest = if file(&c[4..60]) == TABLES_FILE { &mut t } else { &mut r };
                    let off = u32::from_le_bytes(c[60..64].try_into().unwrap()) as usize;
                    let start = u32::from_le_bytes(c[64..68].try_into().unwrap()) as usize;
                    let len = u32::from_le_bytes(c[68..72].try_into().unwrap()) as usize;
                    let sum = 0u8.wrapping_sub(checksum(&dest[start..start + len]));
                    dest[off] = match how {
                        Checksum::Subtract => dest[off].wrapping_sub(sum),
                        Checksum::Set => 0u8.wrapping_sub(sum),
                    };
                }
                other => panic!("unknown command {other}"),
            }
        }
        (t, r)
    }

    #[test]
    fn relocated_tables_equal_the_direct_boot_tables_built_there() {
        for (vcpus, how) in [1, 2, 32].into_iter().flat_map(|n| [(n, Checksum::Subtract), (n, Checksum::Set)]) {
            let files = acpi_files(vcpus).unwrap();
            assert_eq!(files.loader.len() % COMMAND_LEN, 0);
            let at = 0x7FFE_0000;
            let (tables, rsdp) = run(&files, at, 0xF_5000, how);
            let direct = AcpiTables::build(vcpus, &AcpiLayout { base: at, ..AcpiLayout::pc() }).unwrap();
            // Everything but the RSDP's copy at the start of the blob.
            assert_eq!(tables[64..], direct.bytes[64..], "vcpus={vcpus} {how:?}");
            assert_eq!(rsdp, direct.bytes[..RSDP_LEN]);
            assert_eq!(checksum(&rsdp[..20]), 0);
            assert_eq!(checksum(&rsdp), 0);
        }
    }

    #[test]
    fn every_command_names_a_known_file() {
        let files = acpi_files(4).unwrap();
        for c in files.loader.chunks(COMMAND_LEN) {
            let n = c[4..60].iter().position(|&b| b == 0).unwrap();
            assert!([TABLES_FILE, RSDP_FILE].contains(&core::str::from_utf8(&c[4..4 + n]).unwrap()));
        }
    }
}
