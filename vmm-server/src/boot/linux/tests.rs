extern crate std;

use super::*;
use crate::boot::e820::{E820, E820Type};
use crate::boot::layout;
use abi::Segment;

const MIB: u64 = 1 << 20;

/// A synthetic bzImage: boot sector + `setup_sects` setup sectors, then
/// `kernel_len` bytes of protected-mode kernel (a recognisable pattern).
fn image_with(setup_sects: u8, kernel_len: usize) -> Vec<u8> {
    let sects = if setup_sects == 0 { 4 } else { usize::from(setup_sects) };
    let mut img = vec![0u8; (sects + 1) * 512 + kernel_len];
    img[0x1f1] = setup_sects;
    img[0x1f4..0x1f8].copy_from_slice(&((kernel_len / 16) as u32).to_le_bytes());
    img[0x1fe..0x200].copy_from_slice(&0xaa55u16.to_le_bytes());
    // jmp short to 0x26c: the header of protocol 2.15.
    img[0x200] = 0xeb;
    img[0x201] = 0x6a;
    img[0x202..0x206].copy_from_slice(b"HdrS");
    img[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
    img[0x211] = LOADED_HIGH;
    img[0x22c..0x230].copy_from_slice(&0x7fff_ffffu32.to_le_bytes());
    img[0x230..0x234].copy_from_slice(&0x20_0000u32.to_le_bytes());
    img[0x234] = 1;
    img[0x235] = 21;
    img[0x236..0x238].copy_from_slice(&(XLF_KERNEL_64 | XLF_CAN_BE_LOADED_ABOVE_4G).to_le_bytes());
    img[0x238..0x23c].copy_from_slice(&2047u32.to_le_bytes());
    img[0x258..0x260].copy_from_slice(&0x100_0000u64.to_le_bytes());
    img[0x260..0x264].copy_from_slice(&0x0200_0000u32.to_le_bytes());
    let start = (sects + 1) * 512;
    for (i, b) in img[start..].iter_mut().enumerate() {
        *b = (i % 251) as u8;
    }
    img
}

fn image() -> Vec<u8> {
    image_with(27, 0x4000)
}

fn put16(img: &mut [u8], off: usize, v: u16) {
    img[off..off + 2].copy_from_slice(&v.to_le_bytes());
}
fn put32(img: &mut [u8], off: usize, v: u32) {
    img[off..off + 4].copy_from_slice(&v.to_le_bytes());
}
fn put64(img: &mut [u8], off: usize, v: u64) {
    img[off..off + 8].copy_from_slice(&v.to_le_bytes());
}
fn rd16(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes(b[off..off + 2].try_into().unwrap())
}
fn rd32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
}
fn rd64(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
}

#[test]
fn parses_a_good_image() {
    let img = image();
    let k = BzImage::parse(&img).unwrap();
    assert_eq!(k.protocol_version(), 0x020f);
    assert_eq!(k.kernel_file_range(), 28 * 512..28 * 512 + 0x4000);
    assert_eq!(k.kernel(), &img[28 * 512..]);
    assert_eq!(k.load_addr(), 16 * MIB);
    assert_eq!(k.entry_64(), 16 * MIB + 0x200);
    assert_eq!(k.init_size(), 0x0200_0000);
    assert_eq!(k.memory_needed(), 16 * MIB..16 * MIB + 0x0200_0000);
    assert_eq!(k.kernel_alignment(), 0x20_0000);
    assert!(k.relocatable());
    assert!(k.can_load_above_4g());
    assert_eq!(k.cmdline_max(), 2047);
}

#[test]
fn setup_sects_zero_means_four() {
    let img = image_with(0, 0x1000);
    let k = BzImage::parse(&img).unwrap();
    assert_eq!(k.kernel_file_range().start, 5 * 512);
}

#[test]
fn init_size_is_at_least_the_kernel() {
    let mut img = image();
    put32(&mut img, 0x260, 0x100);
    assert_eq!(BzImage::parse(&img).unwrap().init_size(), 0x4000);
}

#[test]
fn load_address_falls_back_to_16_mib_aligned() {
    // pref_address misaligned → 16 MiB rounded up to the alignment.
    let mut img = image();
    put64(&mut img, 0x258, 0x123_4567);
    put32(&mut img, 0x230, 0x0400_0000);
    assert_eq!(BzImage::parse(&img).unwrap().load_addr(), 0x0400_0000);
    // pref_address below 1 MiB → 16 MiB.
    let mut img = image();
    put64(&mut img, 0x258, 0x1000);
    assert_eq!(BzImage::parse(&img).unwrap().load_addr(), 16 * MIB);
    // A kernel that is not relocatable loads at pref_address, aligned or not.
    let mut img = image();
    img[0x234] = 0;
    put32(&mut img, 0x230, 0);
    put64(&mut img, 0x258, 0x123_4000);
    let k = BzImage::parse(&img).unwrap();
    assert_eq!(k.load_addr(), 0x123_4000);
    assert_eq!(k.with_load_addr(32 * MIB).unwrap_err(), LinuxError::BadLoadAddress { addr: 32 * MIB });
}

#[test]
fn relocation_checks_alignment_and_range() {
    let img = image();
    let k = BzImage::parse(&img).unwrap();
    let moved = k.with_load_addr(64 * MIB).unwrap();
    assert_eq!(moved.load_addr(), 64 * MIB);
    assert_eq!(moved.entry_64(), 64 * MIB + 0x200);
    assert_eq!(
        k.with_load_addr(64 * MIB + 0x1000).unwrap_err(),
        LinuxError::BadLoadAddress { addr: 64 * MIB + 0x1000 }
    );
    assert_eq!(k.with_load_addr(0).unwrap_err(), LinuxError::BadLoadAddress { addr: 0 });
    let top = 0xffff_ffff_ffc0_0000;
    assert_eq!(k.with_load_addr(top).unwrap_err(), LinuxError::SizeOverflow);
}

#[test]
fn rejects_every_bad_header() {
    type Case = (&'static str, fn(&mut Vec<u8>), LinuxError);
    let cases: &[Case] = &[
        ("bad magic", |i| i[0x202] = b'X', LinuxError::BadMagic { found: u32::from_le_bytes(*b"XdrS") }),
        ("bad boot flag", |i| put16(i, 0x1fe, 0x1234), LinuxError::BadBootFlag { found: 0x1234 }),
        ("protocol 2.11", |i| put16(i, 0x206, 0x020b), LinuxError::ProtocolTooOld { version: 0x020b }),
        ("protocol 1.0", |i| put16(i, 0x206, 0x0100), LinuxError::ProtocolTooOld { version: 0x0100 }),
        ("short header", |i| i[0x201] = 0x20, LinuxError::HeaderTooShort { end: 0x222 }),
        ("zImage", |i| i[0x211] = 0, LinuxError::NotLoadedHigh),
        ("not 64-bit", |i| put16(i, 0x236, XLF_CAN_BE_LOADED_ABOVE_4G), LinuxError::Not64Bit),
        ("setup_sects 65", |i| i[0x1f1] = 65, LinuxError::SetupSectsOutOfRange { setup_sects: 65 }),
        ("setup_sects 255", |i| i[0x1f1] = 255, LinuxError::SetupSectsOutOfRange { setup_sects: 255 }),
        // 64 setup sectors is allowed but runs past this 18 KiB file.
        ("setup past end", |i| i[0x1f1] = 64, LinuxError::Truncated { needed: 65 * 512, len: 28 * 512 + 0x4000 }),
        ("syssize 0", |i| put32(i, 0x1f4, 0), LinuxError::KernelTooSmall { bytes: 0 }),
        ("entry outside kernel", |i| put32(i, 0x1f4, 0x20), LinuxError::KernelTooSmall { bytes: 0x200 }),
        (
            "syssize a whole paragraph past the end",
            |i| put32(i, 0x1f4, 0x401),
            LinuxError::Truncated { needed: 28 * 512 + 0x4001, len: 28 * 512 + 0x4000 },
        ),
        (
            "syssize huge",
            |i| put32(i, 0x1f4, u32::MAX),
            LinuxError::Truncated { needed: 28 * 512 + u64::from(u32::MAX) * 16 - 15, len: 28 * 512 + 0x4000 },
        ),
        ("alignment 0", |i| put32(i, 0x230, 0), LinuxError::BadKernelAlignment { alignment: 0 }),
        ("alignment 3 MiB", |i| put32(i, 0x230, 0x30_0000), LinuxError::BadKernelAlignment { alignment: 0x30_0000 }),
        (
            "fixed kernel below 1 MiB",
            |i| {
                i[0x234] = 0;
                put64(i, 0x258, 0x8000);
            },
            LinuxError::BadLoadAddress { addr: 0x8000 },
        ),
        (
            "load + init_size overflows",
            |i| {
                i[0x234] = 0;
                put64(i, 0x258, u64::MAX - 0x1000);
            },
            LinuxError::SizeOverflow,
        ),
        ("aligned pref + init_size overflows", |i| put64(i, 0x258, u64::MAX - 0x1f_ffff), LinuxError::SizeOverflow),
        (
            "2 GiB alignment, pref near the top",
            |i| {
                put32(i, 0x230, 0x8000_0000);
                put64(i, 0x258, u64::MAX - 0x7fff_ffff);
                put32(i, 0x260, u32::MAX);
            },
            LinuxError::SizeOverflow,
        ),
    ];
    for (what, corrupt, want) in cases {
        let mut img = image();
        corrupt(&mut img);
        assert_eq!(BzImage::parse(&img).unwrap_err(), *want, "{what}");
    }
}

#[test]
fn truncated_files_are_refused_at_every_length() {
    // syssize (0x400 paragraphs) says the kernel is 0x3ff1..=0x4000 bytes:
    // a file that ends before the last paragraph has lost bytes.
    let img = image();
    for len in 0..img.len() - 15 {
        let err = BzImage::parse(&img[..len]).unwrap_err();
        assert!(matches!(err, LinuxError::Truncated { .. }), "len {len}: {err:?}");
    }
    assert!(BzImage::parse(&img).is_ok());
}

#[test]
fn syssize_rounded_up_past_the_end_of_the_file_is_accepted() {
    // syssize counts 16-byte paragraphs rounded up, so the file may end up
    // to 15 bytes before syssize × 16 (memtest86+'s image ends 8 bytes
    // before); QEMU's -kernel and GRUB's linux load it. The kernel is then
    // everything after the setup sectors.
    let full = image();
    for short in 1..16 {
        let img = &full[..full.len() - short];
        let k = BzImage::parse(img).unwrap_or_else(|e| panic!("{short} bytes short: {e}"));
        assert_eq!(k.kernel_file_range(), 28 * 512..img.len(), "{short} bytes short");
        assert_eq!(k.kernel(), &img[28 * 512..]);
        assert_eq!(k.init_size(), 0x0200_0000);
    }
    // 16 bytes short: the whole last paragraph is missing.
    let img = &full[..full.len() - 16];
    assert_eq!(
        BzImage::parse(img).unwrap_err(),
        LinuxError::Truncated { needed: 28 * 512 + 0x4000 - 15, len: img.len() }
    );
}

#[test]
fn bytes_after_syssize_are_loaded_as_qemu_and_grub_do() {
    // A signed kernel carries its signature after the syssize bytes; the
    // loaders copy the rest of the file whole.
    let mut img = image();
    img.extend_from_slice(&[0x5a; 100]);
    let k = BzImage::parse(&img).unwrap();
    assert_eq!(k.kernel_file_range(), 28 * 512..img.len());
    assert_eq!(k.kernel().len(), 0x4000 + 100);
    // init_size covers at least what is loaded.
    put32(&mut img, 0x260, 0x100);
    assert_eq!(BzImage::parse(&img).unwrap().init_size(), 0x4000 + 100);
}

/// The header of Debian's memtest86+ 6.10 `memtest86+x64.bin` (an
/// independent boot-protocol image): protocol 2.12, 2 setup sectors, a
/// kernel fixed at 1 MiB, `syssize` 0x22dc for a file that ends 8 bytes
/// before 0x22dc paragraphs.
#[test]
fn a_memtest86plus_shaped_header_loads_at_one_mib() {
    let mut img = image_with(2, 0x22dc * 16);
    img.truncate(img.len() - 8);
    put16(&mut img, 0x206, 0x020c);
    img[0x201] = 0x66; // header ends at 0x268
    img[0x234] = 0; // not relocatable
    put32(&mut img, 0x230, 0x1000);
    put64(&mut img, 0x258, 0x10_0000);
    put32(&mut img, 0x260, 0x6acf8);
    put32(&mut img, 0x238, 255);
    put16(&mut img, 0x236, XLF_KERNEL_64 | (1 << 3));
    assert_eq!(img.len(), 144_312);
    let k = BzImage::parse(&img).unwrap();
    assert_eq!(k.protocol_version(), 0x020c);
    assert_eq!(k.kernel_file_range(), 3 * 512..144_312);
    assert_eq!(k.load_addr(), 0x10_0000);
    assert_eq!(k.entry_64(), 0x10_0200);
    assert_eq!(k.memory_needed(), 0x10_0000..0x10_0000 + 0x6acf8);
    assert!(!k.relocatable());
    assert!(!k.can_load_above_4g());
    assert_eq!(k.cmdline_max(), 255);
}

#[test]
fn corrupted_headers_never_panic() {
    // xorshift: a fixed sequence, no dependency.
    let mut s = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    let base = image();
    for _ in 0..20_000 {
        let mut img = base.clone();
        for _ in 0..(next() % 8 + 1) {
            let off = 0x1f0 + (next() % 0x80) as usize;
            img[off] = next() as u8;
        }
        let cut = if next() % 4 == 0 { (next() % img.len() as u64) as usize } else { img.len() };
        if let Ok(k) = BzImage::parse(&img[..cut]) {
            assert!(k.kernel().len() as u64 > ENTRY_64_OFFSET);
            assert!(k.memory_needed().end > k.load_addr());
            let _ = k.zero_page(&BootParams::default()).unwrap();
        }
    }
}

#[test]
fn zero_page_fields_sit_at_the_boot_protocol_offsets() {
    let img = image();
    let k = BzImage::parse(&img).unwrap();
    let map = E820::pc(512 * MIB).build().unwrap();
    let params = BootParams {
        cmdline: Some(GuestRange { gpa: 0x1_2345_6000, len: 100 }),
        initrd: Some(GuestRange { gpa: 0x2_0000_0000, len: 0x1_0000_1000 }),
        e820: map.entries(),
        acpi_rsdp: Some(0xe0000),
    };
    let zp = k.zero_page(&params).unwrap();
    assert_eq!(zp.len(), 4096);
    // The setup header is copied from 0x1f1 to its end at 0x26c.
    assert_eq!(&zp[0x1f1..0x210], &img[0x1f1..0x210]);
    assert_eq!(&zp[0x202..0x206], b"HdrS");
    assert_eq!(&zp[0x230..0x26c], &img[0x230..0x26c]);
    assert!(zp[0x26c..0x290].iter().all(|&b| b == 0));
    // Loader fields.
    assert_eq!(zp[0x210], 0xff, "type_of_loader");
    assert_eq!(zp[0x211], 0x81, "loadflags: LOADED_HIGH | CAN_USE_HEAP");
    assert_eq!(rd16(&zp, 0x224), 0xfe00, "heap_end_ptr");
    assert_eq!(rd32(&zp, 0x228), 0x2345_6000, "cmd_line_ptr");
    assert_eq!(rd32(&zp, 0x0c8), 0x1, "ext_cmd_line_ptr");
    assert_eq!(rd32(&zp, 0x218), 0, "ramdisk_image");
    assert_eq!(rd32(&zp, 0x0c0), 2, "ext_ramdisk_image");
    assert_eq!(rd32(&zp, 0x21c), 0x1000, "ramdisk_size");
    assert_eq!(rd32(&zp, 0x0c4), 1, "ext_ramdisk_size");
    assert_eq!(rd64(&zp, 0x070), 0xe0000, "acpi_rsdp_addr");
    assert_eq!(rd32(&zp, 0x238), 2047, "cmdline_size stays the kernel's");
    // The e820 table.
    let n = map.entries().len();
    assert_eq!(zp[0x1e8] as usize, n, "e820_entries");
    for (i, e) in map.entries().iter().enumerate() {
        let off = 0x2d0 + 20 * i;
        assert_eq!(rd64(&zp, off), e.addr);
        assert_eq!(rd64(&zp, off + 8), e.size);
        assert_eq!(rd32(&zp, off + 16), e.kind as u32);
    }
    assert_eq!(rd32(&zp, 0x2d0 + 16), E820Type::Ram as u32);
    assert!(zp[0x2d0 + 20 * n..0x2d0 + 20 * 128].iter().all(|&b| b == 0));
    // Everything else a loader does not own stays 0 (sentinel included).
    assert_eq!(zp[0x1ef], 0);
    assert!(zp[0xcd0..].iter().all(|&b| b == 0));
}

#[test]
fn offsets_module_matches_boot_rst() {
    use offsets as o;
    let pairs = [
        (o::ACPI_RSDP_ADDR, 0x070),
        (o::EXT_RAMDISK_IMAGE, 0x0c0),
        (o::EXT_RAMDISK_SIZE, 0x0c4),
        (o::EXT_CMD_LINE_PTR, 0x0c8),
        (o::E820_ENTRIES, 0x1e8),
        (o::SETUP_SECTS, 0x1f1),
        (o::TYPE_OF_LOADER, 0x210),
        (o::LOADFLAGS, 0x211),
        (o::RAMDISK_IMAGE, 0x218),
        (o::RAMDISK_SIZE, 0x21c),
        (o::HEAP_END_PTR, 0x224),
        (o::CMD_LINE_PTR, 0x228),
        (o::E820_TABLE, 0x2d0),
    ];
    for (got, want) in pairs {
        assert_eq!(got, want);
    }
}

#[test]
fn zero_page_without_optional_parts() {
    let img = image();
    let zp = BzImage::parse(&img).unwrap().zero_page(&BootParams::default()).unwrap();
    assert_eq!(rd32(&zp, 0x228), 0);
    assert_eq!(rd32(&zp, 0x218), 0);
    assert_eq!(rd32(&zp, 0x21c), 0);
    assert_eq!(zp[0x1e8], 0);
    assert_eq!(rd64(&zp, 0x070), 0);
}

#[test]
fn zero_page_rejects_bad_parameters() {
    let mut img = image();
    // A kernel that must stay below 4 GiB.
    put16(&mut img, 0x236, XLF_KERNEL_64);
    let k = BzImage::parse(&img).unwrap();
    let with = |cmdline, initrd| BootParams { cmdline, initrd, ..BootParams::default() };
    assert_eq!(
        k.zero_page(&with(Some(GuestRange { gpa: 0x2_0000, len: 2048 }), None)).unwrap_err(),
        LinuxError::CmdlineTooLong { len: 2048, max: 2047 }
    );
    assert!(k.zero_page(&with(Some(GuestRange { gpa: 0x2_0000, len: 2047 }), None)).is_ok());
    assert_eq!(
        k.zero_page(&with(Some(GuestRange { gpa: 0xffff_fff0, len: 16 }), None)).unwrap_err(),
        LinuxError::RangeTooHigh { what: "command line", addr: 0xffff_fff0, len: 17 }
    );
    assert_eq!(
        k.zero_page(&with(None, Some(GuestRange { gpa: 0x7fff_f000, len: 0x2000 }))).unwrap_err(),
        LinuxError::InitrdTooHigh { last_byte: 0x8000_0fff, max: 0x7fff_ffff }
    );
    assert!(k.zero_page(&with(None, Some(GuestRange { gpa: 0x7fff_e000, len: 0x2000 }))).is_ok());
    assert_eq!(
        k.zero_page(&with(None, Some(GuestRange { gpa: u64::MAX - 10, len: 0x2000 }))).unwrap_err(),
        LinuxError::RangeTooHigh { what: "initrd", addr: u64::MAX - 10, len: 0x2000 }
    );
    let many = vec![E820Entry { addr: 0, size: 1, kind: E820Type::Ram }; 129];
    assert_eq!(
        k.zero_page(&BootParams { e820: &many, ..BootParams::default() }).unwrap_err(),
        LinuxError::TooManyE820Entries { count: 129 }
    );
    let mut small = [0u8; 4095];
    assert_eq!(
        k.write_zero_page(&BootParams::default(), &mut small).unwrap_err(),
        LinuxError::ZeroPageBufferTooSmall { len: 4095 }
    );
}

fn blank_run() -> VcpuRun {
    VcpuRun {
        gprs: [0xdead; 16],
        rip: 0xfff0,
        rflags: 0x202,
        cr0: 0x10,
        cr2: 5,
        idtr: Segment { selector: 0, attrib: 0, limit: 0x3ff, base: 0 },
        inject: (1 << 31) | 32,
        ..VcpuRun::ZERO
    }
}

#[test]
fn boot_vcpu_is_in_64_bit_mode_at_the_entry() {
    let img = image();
    let k = BzImage::parse(&img).unwrap();
    let mut run = blank_run();
    let entry = LinuxEntry {
        entry_64: k.entry_64(),
        zero_page: layout::ZERO_PAGE,
        cr3: layout::PAGE_TABLES,
        gdt_base: layout::BOOT_GDT,
    };
    set_boot_vcpu(&mut run, &entry);
    assert_eq!(run.rip, 0x100_0200);
    assert_eq!(run.gprs[6], layout::ZERO_PAGE, "RSI = zero page");
    assert!(run.gprs.iter().enumerate().all(|(i, &r)| i == 6 || r == 0));
    assert_eq!(run.rflags, 0x2, "interrupts off");
    assert_eq!(run.inject, 0);
    assert_eq!(run.cr0, 0x8000_0031);
    assert_eq!(run.cr3, layout::PAGE_TABLES);
    assert_eq!(run.cr4, 0x20);
    assert_eq!(run.efer, 0x500);
    let cs = run.segments[1];
    assert_eq!((cs.selector, cs.attrib, cs.base, cs.limit), (0x10, 0xa9b, 0, 0xffff_ffff));
    for i in [0, 2, 3, 4, 5] {
        let s = run.segments[i];
        assert_eq!((s.selector, s.attrib, s.base, s.limit), (0x18, 0xc93, 0, 0xffff_ffff), "segment {i}");
    }
    assert_eq!(run.segments[7].attrib & 0xf, 0xb, "busy 64-bit TSS");
    assert_eq!((run.gdtr.base, run.gdtr.limit), (layout::BOOT_GDT, 31));
    assert_eq!((run.idtr.base, run.idtr.limit), (0, 0));
    assert_eq!(run.load_state, abi::LOAD_GPRS | abi::LOAD_SYSTEM);
}

#[test]
fn a_whole_boot_plan_fits_the_pc_layout() {
    use crate::boot::long_mode;
    let img = image();
    let k = BzImage::parse(&img).unwrap();
    let map = E820::pc(1 << 30).build().unwrap();
    // The kernel's memory is RAM and inside the 4 GiB identity map.
    let need = k.memory_needed();
    assert!(map.ram().iter().any(|r| r.start <= need.start && need.end <= r.end));
    let tables = long_mode::identity_map_bytes(4).unwrap() as u64;
    assert_eq!(tables, layout::PAGE_TABLES_SIZE);
    assert!(u64::from(k.cmdline_max()) < layout::CMDLINE_MAX);
}
