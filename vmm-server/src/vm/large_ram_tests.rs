//! Guests larger than the room below the PCI hole: the RAM blocks the VMM
//! backs, the e820 map the loader hands the guest and the ACPI tables'
//! windows must agree, and the loader must keep what it places (initrd)
//! where the kernel can reach it.

extern crate std;

use alloc::vec;
use alloc::vec::Vec;

use crate::boot::acpi::AcpiLayout;
use crate::boot::e820::{E820, E820Type};
use crate::boot::layout::{self, FOUR_GIB, LOW_RAM_END, RamBlock};
use crate::boot::linux::{XLF_CAN_BE_LOADED_ABOVE_4G, XLF_KERNEL_64};
use crate::vm::loader::{BootSource, LoadError, load_linux_in};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// The sizes a VM description can ask for that matter here: small, just
/// below, at and just above the low block's end, 4 GiB, large.
const SIZES: &[u64] = &[64 * MIB, 256 * MIB, LOW_RAM_END - MIB, LOW_RAM_END, LOW_RAM_END + MIB, 4 * GIB, 64 * GIB, 1 << 40];

fn map_of(ram_bytes: u64) -> crate::boot::e820::E820Map {
    E820::pc(ram_bytes - layout::BELOW_1M_HOLES).build().unwrap()
}

#[test]
fn ram_blocks_hold_all_the_ram_below_the_hole_and_from_4g() {
    for &ram in SIZES {
        let blocks = layout::ram_blocks(ram);
        assert_eq!(blocks.iter().map(|b| b.len).sum::<u64>(), ram, "{ram:#x}");
        assert_eq!(blocks[0], RamBlock { gpa: 0, len: ram.min(LOW_RAM_END) });
        if ram > LOW_RAM_END {
            assert_eq!(blocks[1], RamBlock { gpa: FOUR_GIB, len: ram - LOW_RAM_END });
        } else {
            assert_eq!(blocks.len(), 1);
        }
    }
}

/// What the e820 map calls RAM is backed, what is backed and not RAM is
/// only the first MiB's holes, and nothing RAM overlaps a window the ACPI
/// tables give the PCI host bridge (ECAM, the 32-bit MMIO window) or the
/// APICs.
#[test]
fn e820_blocks_and_acpi_agree_for_every_size() {
    let acpi = AcpiLayout::pc();
    let pci = acpi.pci.as_ref().expect("the PC layout has PCI");
    let windows: Vec<(u64, u64)> = vec![
        (pci.ecam_base, pci.ecam_base + ((u64::from(pci.last_bus) + 1) << 20)),
        (u64::from(pci.mmio32_base), u64::from(pci.mmio32_base) + u64::from(pci.mmio32_size)),
        (layout::IOAPIC_BASE, layout::IOAPIC_BASE + layout::APIC_PAGE_SIZE),
        (layout::LAPIC_BASE, layout::LAPIC_BASE + layout::APIC_PAGE_SIZE),
        (acpi.base, acpi.base + layout::ACPI_TABLES_SIZE),
    ];
    for &ram in SIZES {
        let map = map_of(ram);
        let blocks = layout::ram_blocks(ram);
        let ram_entries: Vec<_> = map.entries().iter().filter(|e| e.kind == E820Type::Ram).collect();
        let listed: u64 = ram_entries.iter().map(|e| e.size).sum();
        assert_eq!(listed, ram - layout::BELOW_1M_HOLES, "{ram:#x}");
        for e in &ram_entries {
            assert!(
                blocks.iter().any(|b| b.gpa <= e.addr && e.end() <= b.end()),
                "{ram:#x}: e820 RAM {:#x}..{:#x} is not backed by {blocks:?}",
                e.addr,
                e.end()
            );
            for &(s, end) in &windows {
                assert!(e.end() <= s || e.addr >= end, "{ram:#x}: RAM {:#x}..{:#x} overlaps {s:#x}..{end:#x}", e.addr, e.end());
            }
        }
        // Above 4 GiB exactly what did not fit below the hole.
        let high: u64 = ram_entries.iter().filter(|e| e.addr >= FOUR_GIB).map(|e| e.size).sum();
        assert_eq!(high, ram.saturating_sub(LOW_RAM_END), "{ram:#x}");
        assert!(ram_entries.iter().all(|e| e.addr >= FOUR_GIB || e.end() <= LOW_RAM_END));
        if ram > LOW_RAM_END {
            assert_eq!(map.ram_end(), FOUR_GIB + ram - LOW_RAM_END);
        }
    }
}

/// A synthetic bzImage (protocol 2.15, 64-bit, `initrd_addr_max`
/// 0x7fffffff as x86-64 kernels have it).
fn bzimage(xloadflags: u16) -> Vec<u8> {
    let sects = 4usize;
    let kernel_len = 0x4000usize;
    let mut img = vec![0u8; (sects + 1) * 512 + kernel_len];
    img[0x1f1] = sects as u8;
    img[0x1f4..0x1f8].copy_from_slice(&((kernel_len / 16) as u32).to_le_bytes());
    img[0x1fe..0x200].copy_from_slice(&0xaa55u16.to_le_bytes());
    img[0x200] = 0xeb;
    img[0x201] = 0x6a;
    img[0x202..0x206].copy_from_slice(b"HdrS");
    img[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
    img[0x211] = 1; // LOADED_HIGH
    img[0x22c..0x230].copy_from_slice(&0x7fff_ffffu32.to_le_bytes());
    img[0x230..0x234].copy_from_slice(&0x20_0000u32.to_le_bytes());
    img[0x234] = 1;
    img[0x236..0x238].copy_from_slice(&xloadflags.to_le_bytes());
    img[0x238..0x23c].copy_from_slice(&2047u32.to_le_bytes());
    img[0x258..0x260].copy_from_slice(&0x100_0000u64.to_le_bytes());
    img[0x260..0x264].copy_from_slice(&0x0200_0000u32.to_le_bytes());
    img
}

fn rd32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
}
fn rd64(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
}

/// A 4 GiB guest: the loader writes only the low block, hands the guest
/// an e820 map with RAM from 4 GiB, and keeps the initrd below the kernel's
/// `initrd_addr_max` (2 GiB), not at the top of the 2.75 GiB low block.
#[test]
fn a_4_gib_guest_is_loaded_into_the_low_block() {
    let ram_bytes = 4 * GIB;
    // Zero-filled and mostly untouched: the host maps it lazily.
    let mut low = vec![0u8; LOW_RAM_END as usize];
    let kernel = bzimage(XLF_KERNEL_64 | XLF_CAN_BE_LOADED_ABOVE_4G);
    let initrd = vec![0x5au8; 3 * MIB as usize + 123];
    let source = BootSource { kernel: &kernel, initrd: Some(&initrd), cmdline: "console=ttyS0", vcpus: 32 };
    load_linux_in(&mut low, ram_bytes, &source).unwrap();
    let zp = &low[layout::ZERO_PAGE as usize..layout::ZERO_PAGE as usize + 4096];
    // The e820 table (count at 0x1e8, entries of 20 bytes at 0x2d0).
    let n = usize::from(zp[0x1e8]);
    let entries: Vec<(u64, u64, u32)> = (0..n)
        .map(|i| {
            let e = &zp[0x2d0 + 20 * i..0x2d0 + 20 * (i + 1)];
            (rd64(e, 0), rd64(e, 8), rd32(e, 16))
        })
        .collect();
    let expected = map_of(ram_bytes);
    assert_eq!(entries.len(), expected.entries().len());
    assert_eq!(entries.last(), Some(&(FOUR_GIB, ram_bytes - LOW_RAM_END, 1)));
    assert_eq!(entries.iter().filter(|e| e.2 == 1).map(|e| e.1).sum::<u64>(), ram_bytes - layout::BELOW_1M_HOLES);
    // The initrd (ramdisk_image 0x218, ext_ramdisk_image 0xc0) ends below
    // 2 GiB and holds the bytes.
    let gpa = u64::from(rd32(zp, 0x218)) | u64::from(rd32(zp, 0xc0)) << 32;
    let len = u64::from(rd32(zp, 0x21c));
    assert_eq!(len, initrd.len() as u64);
    assert!(gpa + len <= 0x8000_0000 && gpa + len > 0x8000_0000 - 2 * 4096, "initrd at {gpa:#x}");
    assert_eq!(&low[gpa as usize..(gpa + len) as usize], &initrd[..]);
}

/// A guest that fits below the hole still gets its initrd at the top of
/// its RAM; a low block of the wrong size is refused, not written.
#[test]
fn the_low_block_must_be_what_the_layout_says() {
    let kernel = bzimage(XLF_KERNEL_64 | XLF_CAN_BE_LOADED_ABOVE_4G);
    let initrd = vec![1u8; 4096];
    let source = BootSource { kernel: &kernel, initrd: Some(&initrd), cmdline: "", vcpus: 1 };
    let mut ram = vec![0u8; 256 * MIB as usize];
    load_linux_in(&mut ram, 256 * MIB, &source).unwrap();
    let zp = &ram[layout::ZERO_PAGE as usize..];
    assert_eq!(u64::from(rd32(zp, 0x218)), 256 * MIB - 4096);
    let mut short = vec![0u8; 64 * MIB as usize];
    assert_eq!(
        load_linux_in(&mut short, 4 * GIB, &source).unwrap_err(),
        LoadError::LowBlock { len: 64 * MIB, expected: LOW_RAM_END }
    );
    assert!(short.iter().all(|&b| b == 0));
}
