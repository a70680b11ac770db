extern crate std;

use super::*;
use std::collections::BTreeMap;

fn rd16(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes(b[off..off + 2].try_into().unwrap())
}
fn rd32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
}
fn rd64(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
}
fn sum(b: &[u8]) -> u8 {
    b.iter().fold(0u8, |a, &x| a.wrapping_add(x))
}

/// A table found by following a pointer: resolves `gpa` inside the blob,
/// checks the length field fits and the checksum is right.
fn table_at(t: &AcpiTables, gpa: u64) -> &[u8] {
    assert!(gpa >= t.base, "pointer {gpa:#x} below the blob");
    let off = (gpa - t.base) as usize;
    assert!(off + HEADER_LEN <= t.bytes.len(), "pointer {gpa:#x} past the blob");
    let len = rd32(&t.bytes, off + 4) as usize;
    assert!(len >= HEADER_LEN && off + len <= t.bytes.len(), "table at {gpa:#x} of {len} bytes runs past the blob");
    let table = &t.bytes[off..off + len];
    assert_eq!(sum(table), 0, "checksum of {}", std::str::from_utf8(&table[..4]).unwrap());
    assert_eq!(&table[10..16], b"ALCOVE");
    table
}

/// Follows RSDP → XSDT → tables; returns them by signature.
fn walk(t: &AcpiTables) -> BTreeMap<[u8; 4], &[u8]> {
    let rsdp = &t.bytes[t.rsdp_offset..t.rsdp_offset + RSDP_LEN];
    assert_eq!(&rsdp[..8], b"RSD PTR ");
    assert_eq!(sum(&rsdp[..20]), 0, "RSDP checksum");
    assert_eq!(sum(rsdp), 0, "RSDP extended checksum");
    assert_eq!(rsdp[15], 2, "RSDP revision");
    assert_eq!(rd32(rsdp, 16), 0, "no RSDT");
    assert_eq!(rd32(rsdp, 20), 36, "RSDP length");
    assert_eq!(t.rsdp_gpa() % 16, 0);
    let xsdt = table_at(t, rd64(rsdp, 24));
    assert_eq!(&xsdt[..4], b"XSDT");
    assert_eq!((xsdt.len() - HEADER_LEN) % 8, 0);
    let mut found = BTreeMap::new();
    for i in 0..(xsdt.len() - HEADER_LEN) / 8 {
        let table = table_at(t, rd64(xsdt, HEADER_LEN + 8 * i));
        found.insert(table[..4].try_into().unwrap(), table);
    }
    found
}

fn fadt_of(t: &AcpiTables) -> &[u8] {
    walk(t)[b"FACP"]
}

fn dsdt_of(t: &AcpiTables) -> &[u8] {
    let fadt = fadt_of(t);
    let dsdt = table_at(t, rd64(fadt, fadt_offsets::X_DSDT));
    assert_eq!(&dsdt[..4], b"DSDT");
    dsdt
}

#[test]
fn every_pointer_resolves_and_every_checksum_is_right() {
    for vcpus in [1, 2, 7, 64, 255] {
        let t = AcpiTables::build(vcpus, &AcpiLayout::pc()).unwrap();
        assert_eq!(t.base, 0xe0000);
        assert!(t.bytes.len() as u64 <= crate::boot::layout::ACPI_TABLES_SIZE);
        let tables = walk(&t);
        let sigs: Vec<_> = tables.keys().copied().collect();
        assert_eq!(sigs, vec![*b"APIC", *b"FACP", *b"MCFG"]);
        let fadt = tables[b"FACP"];
        let dsdt_gpa = rd64(fadt, fadt_offsets::X_DSDT);
        assert_eq!(u64::from(rd32(fadt, fadt_offsets::DSDT)), dsdt_gpa);
        assert_eq!(&table_at(&t, dsdt_gpa)[..4], b"DSDT");
        let facs_gpa = u64::from(rd32(fadt, fadt_offsets::FIRMWARE_CTRL));
        assert_eq!(rd64(fadt, fadt_offsets::X_FIRMWARE_CTRL), 0, "only one FACS pointer");
        assert_eq!(facs_gpa % 64, 0, "FACS alignment");
        let facs = &t.bytes[(facs_gpa - t.base) as usize..][..64];
        assert_eq!(&facs[..4], b"FACS");
        assert_eq!(rd32(facs, 4), 64);
    }
}

#[test]
fn fadt_describes_full_acpi_hardware() {
    let t = AcpiTables::build(2, &AcpiLayout::pc()).unwrap();
    let f = fadt_of(&t);
    assert_eq!(f.len(), 276);
    assert_eq!((f[8], f[131]), (6, 5), "FADT 6.5");
    let flags = rd32(f, 112);
    assert_eq!(flags & FADT_HW_REDUCED_ACPI, 0);
    for bit in [FADT_WBINVD, FADT_PROC_C1, FADT_SLP_BUTTON, FADT_RESET_REG_SUP, FADT_TMR_VAL_EXT] {
        assert_ne!(flags & bit, 0, "{bit:#x}");
    }
    assert_eq!(flags & FADT_PWR_BUTTON, 0, "fixed-feature power button");
    assert_eq!(rd16(f, 46), 9, "SCI_INT");
    assert_eq!(rd32(f, 48), 0, "SMI_CMD");
    assert_eq!(rd32(f, 56), 0x600, "PM1a_EVT_BLK");
    assert_eq!(rd32(f, 64), 0x604, "PM1a_CNT_BLK");
    assert_eq!(rd32(f, 76), 0x608, "PM_TMR_BLK");
    assert_eq!((f[88], f[89], f[91]), (4, 2, 4), "block lengths");
    assert_ne!(rd16(f, 109) & BOOT_ARCH_8042, 0, "8042 present");
    // RESET_REG: system I/O, 8 bits, byte access, port 0xCF9; value 6.
    assert_eq!(&f[116..128], &[1, 8, 0, 1, 0xf9, 0x0c, 0, 0, 0, 0, 0, 0]);
    assert_eq!(f[128], 0x06);
    // The X_ blocks agree with the 32-bit ones.
    assert_eq!(&f[148..160], &[1, 32, 0, 2, 0x00, 0x06, 0, 0, 0, 0, 0, 0]);
    assert_eq!(&f[172..184], &[1, 16, 0, 2, 0x04, 0x06, 0, 0, 0, 0, 0, 0]);
    assert_eq!(&f[208..220], &[1, 32, 0, 3, 0x08, 0x06, 0, 0, 0, 0, 0, 0]);
}

#[test]
fn madt_has_one_lapic_per_vcpu_an_ioapic_overrides_and_nmi() {
    for vcpus in [1u32, 4, 255] {
        let t = AcpiTables::build(vcpus, &AcpiLayout { ioapic_id: 9, ..AcpiLayout::pc() }).unwrap();
        let m = walk(&t)[b"APIC"];
        assert_eq!(m[8], 6, "MADT revision (ACPI 6.5)");
        assert_eq!(rd32(m, 36), 0xfee0_0000);
        assert_eq!(rd32(m, 40), MADT_PCAT_COMPAT);
        let mut entries = Vec::new();
        let mut off = 44;
        while off < m.len() {
            let len = m[off + 1] as usize;
            assert!(len >= 2 && off + len <= m.len());
            entries.push(&m[off..off + len]);
            off += len;
        }
        assert_eq!(off, m.len());
        // vCPUs + I/O APIC + 2 overrides + LINT1 NMI.
        assert_eq!(entries.len() as u32, vcpus + 1 + 2 + 1);
        for (i, e) in entries.iter().take(vcpus as usize).enumerate() {
            assert_eq!(e, &[0, 8, i as u8, i as u8, 1, 0, 0, 0]);
        }
        let rest = &entries[vcpus as usize..];
        assert_eq!(rest[0], &[1, 12, 9, 0, 0, 0, 0xc0, 0xfe, 0, 0, 0, 0]);
        assert_eq!(rest[1], &[2, 10, 0, 0, 2, 0, 0, 0, 0x05, 0x00], "IRQ0 → GSI2 edge/high");
        assert_eq!(rest[2], &[2, 10, 0, 9, 9, 0, 0, 0, 0x0d, 0x00], "IRQ9 → GSI9 level/high");
        assert_eq!(rest[3], &[4, 6, 0xff, 0, 0, 1], "LINT1 NMI");
    }
}

#[test]
fn mcfg_describes_the_ecam_window() {
    let t = AcpiTables::build(1, &AcpiLayout::pc()).unwrap();
    let m = walk(&t)[b"MCFG"];
    assert_eq!(m.len(), 60);
    assert_eq!(rd64(m, 44), 0xb000_0000);
    assert_eq!(rd16(m, 52), 0, "segment");
    assert_eq!((m[54], m[55]), (0, 0), "buses 0-0");
}

#[test]
fn dsdt_holds_s5_exactly() {
    // Name(_S5_, Package(4) { 5, 5, 0, 0 }): NameOp, "_S5_", PackageOp,
    // PkgLength 8 (itself, NumElements and 6 bytes of elements), 4 elements,
    // BytePrefix 5, BytePrefix 5, ZeroOp, ZeroOp.
    let want = [0x08, b'_', b'S', b'5', b'_', 0x12, 0x08, 0x04, 0x0a, 0x05, 0x0a, 0x05, 0x00, 0x00];
    assert_eq!(s5_aml(), want);
    let no_pci = AcpiLayout { pci: None, ..AcpiLayout::pc() };
    let t = AcpiTables::build(1, &no_pci).unwrap();
    let d = dsdt_of(&t);
    assert_eq!((d[8], &d[HEADER_LEN..]), (2, &want[..]), "DSDT revision 2 and only _S5_");
    // Without PCI: no MCFG.
    let sigs: Vec<_> = walk(&t).keys().copied().collect();
    assert_eq!(sigs, vec![*b"APIC", *b"FACP"]);
}

#[test]
fn dsdt_with_pci_has_the_host_bridge() {
    let t = AcpiTables::build(1, &AcpiLayout::pc()).unwrap();
    let d = dsdt_of(&t);
    let aml = &d[HEADER_LEN..];
    assert_eq!(&aml[..14], &s5_aml()[..]);
    let rest = &aml[14..];
    // Scope(\_SB_) with a PkgLength that spans exactly the rest.
    assert_eq!(rest[0], 0x10);
    let (len, len_bytes) = match rest[1] >> 6 {
        0 => (usize::from(rest[1]), 1),
        1 => (usize::from(rest[1] & 0xf) | usize::from(rest[2]) << 4, 2),
        n => panic!("unexpected PkgLength form {n}"),
    };
    assert_eq!(1 + len, rest.len(), "scope PkgLength");
    assert_eq!(&rest[1 + len_bytes..1 + len_bytes + 5], b"\\_SB_");
    let find = |needle: &[u8]| rest.windows(needle.len()).any(|w| w == needle);
    assert!(find(&[0x5b, 0x82]) && find(b"PCI0") && find(b"MRES"));
    assert!(find(&[0x08, b'_', b'H', b'I', b'D', 0x0c, 0x41, 0xd0, 0x0a, 0x08]), "_HID PNP0A08");
    assert!(find(&[0x08, b'_', b'H', b'I', b'D', 0x0c, 0x41, 0xd0, 0x0c, 0x02]), "_HID PNP0C02");
    assert!(find(&aml::resource::memory32_fixed(0xb000_0000, 1 << 20)), "ECAM reserved");
    assert!(find(&aml::resource::dword_memory(0xc000_0000, 0xfec0_0000 - 0xc000_0000)), "MMIO window");
    assert!(find(&aml::resource::word_bus_number(0, 0)));
}

#[test]
fn tables_above_4g_use_only_64_bit_pointers() {
    let layout = AcpiLayout { base: 0x1_0000_0000, ..AcpiLayout::pc() };
    let t = AcpiTables::build(2, &layout).unwrap();
    let f = fadt_of(&t);
    assert_eq!(rd32(f, fadt_offsets::FIRMWARE_CTRL), 0);
    assert_eq!(rd32(f, fadt_offsets::DSDT), 0);
    let facs = rd64(f, fadt_offsets::X_FIRMWARE_CTRL);
    assert_eq!(&t.bytes[(facs - t.base) as usize..][..4], b"FACS");
    dsdt_of(&t);
}

#[test]
fn bad_layouts_are_refused() {
    let pc = AcpiLayout::pc();
    assert_eq!(AcpiTables::build(0, &pc).unwrap_err(), AcpiError::BadVcpuCount { vcpus: 0 });
    assert_eq!(AcpiTables::build(256, &pc).unwrap_err(), AcpiError::BadVcpuCount { vcpus: 256 });
    let misaligned = AcpiLayout { base: 0xe0010, ..pc };
    assert_eq!(AcpiTables::build(1, &misaligned).unwrap_err(), AcpiError::Misaligned { base: 0xe0010 });
    let top = AcpiLayout { base: u64::MAX - 63, ..pc };
    assert_eq!(AcpiTables::build(1, &top).unwrap_err(), AcpiError::AddressOverflow { base: u64::MAX - 63 });
    let host = pc.pci.unwrap();
    for bad in [
        PciHost { ecam_base: 0xb000_1000, ..host },
        PciHost { ecam_base: 0xfff0_0000, last_bus: 1, ..host },
        PciHost { mmio32_size: 0, ..host },
        PciHost { mmio32_base: 0xf000_0000, mmio32_size: 0x2000_0000, ..host },
        PciHost { mmio64: Some((u64::MAX, 2)), ..host },
        PciHost { mmio64: Some((1 << 40, 0)), ..host },
    ] {
        let layout = AcpiLayout { pci: Some(bad), ..pc };
        assert!(matches!(AcpiTables::build(1, &layout), Err(AcpiError::BadPciHost { .. })), "{bad:?}");
    }
    let with64 = AcpiLayout { pci: Some(PciHost { mmio64: Some((1 << 40, 1 << 36)), ..host }), ..pc };
    let t = AcpiTables::build(1, &with64).unwrap();
    let aml = &dsdt_of(&t)[HEADER_LEN..];
    let q = aml::resource::qword_memory(1 << 40, 1 << 36);
    assert!(aml.windows(q.len()).any(|w| w == &q[..]));
}

#[test]
fn s5_from_the_dsdt_written_with_slp_en_powers_off() {
    // What Linux does: read SLP_TYPa from \_S5_, write it, then with SLP_EN.
    let slp_typ = u16::from(s5_aml()[9]);
    let mut pm = AcpiPm::new();
    let typ = slp_typ << PM1_CNT_SLP_TYP_SHIFT;
    assert_eq!(pm.write(PM1A_CNT_BLK, 2, u32::from(typ | PM1_CNT_SCI_EN)), None);
    assert_eq!(pm.write(PM1A_CNT_BLK, 2, u32::from(typ | PM1_CNT_SLP_EN | PM1_CNT_SCI_EN)), Some(Requested::PowerOff));
    // The word 0x3401 exactly, and byte by byte (low then high).
    let mut pm = AcpiPm::new();
    assert_eq!(pm.write(0x604, 2, 0x3401), Some(Requested::PowerOff));
    let mut pm = AcpiPm::new();
    assert_eq!(pm.write(0x604, 1, 0x01), None);
    assert_eq!(pm.write(0x605, 1, 0x34), Some(Requested::PowerOff));
    // A 32-bit write covering the block works too.
    let mut pm = AcpiPm::new();
    assert_eq!(pm.write(0x604, 4, 0x3401), Some(Requested::PowerOff));
}

#[test]
fn pm1_control_reads_and_other_sleep_types() {
    let mut pm = AcpiPm::new();
    assert_eq!(pm.read(0x604, 2, 0), 0x0001, "SCI_EN on from power-on");
    // Another sleep type with SLP_EN: not a state of this platform.
    assert_eq!(pm.write(0x604, 2, (3 << 10) | (1 << 13)), None);
    // SLP_TYP reads back, SLP_EN never does, SCI_EN cannot be cleared.
    assert_eq!(pm.read(0x604, 2, 0), (3 << 10) | 1);
    assert_eq!(pm.write(0x604, 2, 0), None);
    assert_eq!(pm.read(0x604, 2, 0), 1);
}

#[test]
fn reset_register() {
    let mut pm = AcpiPm::new();
    assert!(AcpiPm::claims(0xcf9));
    assert!(!AcpiPm::claims(0xcf8));
    assert_eq!(pm.write(0xcf9, 1, 0x02), None, "SYS_RST alone selects, does not reset");
    assert_eq!(pm.read(0xcf9, 1, 0), 0x02);
    assert_eq!(pm.write(0xcf9, 1, u32::from(RESET_VALUE)), Some(Requested::Reboot));
    assert_eq!(pm.write(0xcf9, 1, 0x04), Some(Requested::Reboot));
}

#[test]
fn power_button_raises_sci_when_enabled_and_status_clears_by_writing_one() {
    let mut pm = AcpiPm::new();
    pm.press_power_button();
    assert!(!pm.sci_level(), "not enabled yet");
    assert_eq!(pm.read(0x600, 2, 0), u32::from(PM1_PWRBTN));
    assert_eq!(pm.write(0x602, 2, u32::from(PM1_PWRBTN)), None);
    assert!(pm.sci_level());
    assert_eq!(pm.read(0x600, 4, 0), u32::from(PM1_PWRBTN) | (u32::from(PM1_PWRBTN) << 16));
    // Writing 0 leaves it, writing the bit clears it.
    pm.write(0x600, 2, 0);
    assert!(pm.sci_level());
    pm.write(0x600, 2, u32::from(PM1_PWRBTN));
    assert!(!pm.sci_level());
    assert_eq!(pm.read(0x600, 2, 0), 0);
    // Reserved enable bits do not stick.
    pm.write(0x602, 2, 0xffff);
    assert_eq!(pm.read(0x602, 2, 0), 0x0721);
}

#[test]
fn pm_timer_counts_at_3_579545_mhz_in_32_bits() {
    let pm = AcpiPm::new();
    assert_eq!(pm.read(0x608, 4, 0), 0);
    assert_eq!(pm.read(0x608, 4, 1_000_000_000), 3_579_545);
    // 2000 s: 7_159_090_000 ticks, wrapped at 32 bits.
    assert_eq!(pm.read(0x608, 4, 2_000_000_000_000), (7_159_090_000u64 - (1 << 32)) as u32);
    // Byte reads see the same clock.
    let word = pm.read(0x608, 4, 123_456_789);
    let bytes: u32 = (0..4).map(|i| pm.read(0x608 + i, 1, 123_456_789) << (8 * i)).sum();
    assert_eq!(word, bytes);
}

#[test]
fn unknown_ports_and_sizes() {
    let mut pm = AcpiPm::new();
    assert!(AcpiPm::claims(0x600) && AcpiPm::claims(0x605) && AcpiPm::claims(0x60b));
    assert!(!AcpiPm::claims(0x606) && !AcpiPm::claims(0x60c) && !AcpiPm::claims(0x5ff));
    assert_eq!(pm.read(0x606, 2, 0), 0xffff);
    assert_eq!(pm.read(0x604, 3, 0), u32::MAX);
    assert_eq!(pm.write(0x604, 3, 0x3401), None);
    assert_eq!(pm.read(0xffff, 4, 0), u32::MAX);
    assert_eq!(pm.write(0xffff, 4, u32::MAX), None);
}

#[test]
fn checksum_makes_bytes_sum_to_zero() {
    for data in [&b""[..], b"\x01", b"RSD PTR \xff\xfe"] {
        let mut v = data.to_vec();
        v.push(checksum(data));
        assert_eq!(sum(&v), 0);
    }
}
