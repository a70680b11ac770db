use super::*;
use crate::virtio::VecMemory;

const RAM: usize = 0x10_0000;
const DESC: u64 = 0x1000;
const BUF: u64 = 0x2000;

fn mem() -> VecMemory {
    VecMemory::new(0, RAM)
}

fn dev() -> FwCfg {
    let mut f = FwCfg::new(256 << 20, 2);
    f.add_file("etc/e820", alloc::vec![1, 2, 3, 4, 5], false).unwrap();
    f.add_file("bootorder", b"/pci@i0cf8/*@3\n".to_vec(), false).unwrap();
    f.add_file("etc/scratch", alloc::vec![0; 8], true).unwrap();
    f
}

/// What a driver does for the traditional interface: select, read bytes.
fn read_pio(f: &mut FwCfg, key: u16, n: usize) -> Vec<u8> {
    f.io_write(SELECTOR_PORT, 2, u32::from(key), &mut mem());
    (0..n).map(|_| f.io_read(DATA_PORT, 1) as u8).collect()
}

/// Looks a file up in the directory as SeaBIOS does: (key, size).
fn find(f: &mut FwCfg, name: &str) -> Option<(u16, u32)> {
    let count = u32::from_be_bytes(read_pio(f, KEY_FILE_DIR, 4).try_into().unwrap());
    for _ in 0..count {
        let e: Vec<u8> = (0..64).map(|_| f.io_read(DATA_PORT, 1) as u8).collect();
        let len = u32::from_be_bytes(e[0..4].try_into().unwrap());
        let key = u16::from_be_bytes(e[4..6].try_into().unwrap());
        let n = e[8..].iter().position(|&b| b == 0).unwrap();
        if &e[8..8 + n] == name.as_bytes() {
            return Some((key, len));
        }
    }
    None
}

/// Writes a descriptor and starts it through the ports, big-endian as a
/// driver does (`outl(cpu_to_be32(...))`).
fn dma(f: &mut FwCfg, m: &mut VecMemory, desc: u64, control: u32, length: u32, address: u64) -> u32 {
    let mut d = [0u8; 16];
    d[0..4].copy_from_slice(&control.to_be_bytes());
    d[4..8].copy_from_slice(&length.to_be_bytes());
    d[8..16].copy_from_slice(&address.to_be_bytes());
    if m.write(desc, &d).is_ok() {
        // fine; a descriptor outside RAM is what some tests want
    }
    f.io_write(DMA_PORT, 4, ((desc >> 32) as u32).swap_bytes(), m);
    f.io_write(DMA_PORT + 4, 4, (desc as u32).swap_bytes(), m);
    let mut c = [0u8; 4];
    m.read(desc, &mut c).map(|_| u32::from_be_bytes(c)).unwrap_or(u32::MAX)
}

#[test]
fn signature_id_and_fixed_items_through_the_data_port() {
    let mut f = dev();
    assert_eq!(read_pio(&mut f, KEY_SIGNATURE, 4), b"QEMU");
    let id = u32::from_le_bytes(read_pio(&mut f, KEY_ID, 4).try_into().unwrap());
    assert_eq!(id, ID_TRADITIONAL | ID_DMA);
    assert_eq!(read_pio(&mut f, KEY_RAM_SIZE, 8), (256u64 << 20).to_le_bytes());
    assert_eq!(read_pio(&mut f, KEY_NB_CPUS, 2), [2, 0]);
    assert_eq!(read_pio(&mut f, KEY_MAX_CPUS, 2), [2, 0]);
    // Past the end, and unknown keys: zeros.
    assert_eq!(read_pio(&mut f, KEY_NB_CPUS, 4), [2, 0, 0, 0]);
    assert_eq!(read_pio(&mut f, 0x1234, 3), [0, 0, 0]);
    assert_eq!(read_pio(&mut f, 0xFFFF, 3), [0, 0, 0]);
    // A wide read of the data port takes consecutive bytes.
    f.io_write(SELECTOR_PORT, 2, u32::from(KEY_SIGNATURE), &mut mem());
    assert_eq!(f.io_read(DATA_PORT, 4), u32::from_le_bytes(*b"QEMU"));
}

#[test]
fn the_dma_register_reads_the_signature() {
    let mut f = dev();
    let sig: Vec<u8> = (0..8).map(|i| f.io_read(DMA_PORT + i, 1) as u8).collect();
    assert_eq!(sig, b"QEMU CFG");
    assert_eq!(f.io_read(DMA_PORT, 4), u32::from_le_bytes(*b"QEMU"));
}

#[test]
fn the_directory_lists_files_by_name_with_their_sizes() {
    let mut f = dev();
    assert_eq!(find(&mut f, "etc/e820"), Some((KEY_FILE_FIRST, 5)));
    assert_eq!(find(&mut f, "bootorder"), Some((KEY_FILE_FIRST + 1, 15)));
    assert_eq!(find(&mut f, "nothing"), None);
    let (key, len) = find(&mut f, "bootorder").unwrap();
    assert_eq!(read_pio(&mut f, key, len as usize), b"/pci@i0cf8/*@3\n");
    // The directory is sorted: bootorder before etc/...
    let dir = read_pio(&mut f, KEY_FILE_DIR, 4 + 64);
    assert_eq!(&dir[12..21], b"bootorder");
}

#[test]
fn adding_files_refuses_bad_names_duplicates_and_too_many() {
    let mut f = FwCfg::new(0, 1);
    assert!(matches!(f.add_file(&"x".repeat(56), Vec::new(), false), Err(FwCfgError::NameTooLong { .. })));
    assert!(matches!(f.add_file("", Vec::new(), false), Err(FwCfgError::NameTooLong { .. })));
    f.add_file(&"y".repeat(55), Vec::new(), false).unwrap();
    assert!(matches!(f.add_file(&"y".repeat(55), Vec::new(), false), Err(FwCfgError::Duplicate { .. })));
    for i in 1..MAX_FILES {
        f.add_file(&alloc::format!("f{i}"), Vec::new(), false).unwrap();
    }
    assert_eq!(f.add_file("one-more", Vec::new(), false), Err(FwCfgError::TooManyFiles));
}

#[test]
fn dma_select_and_read_a_file_with_zeros_past_its_end() {
    let mut f = dev();
    let mut m = mem();
    m.write(BUF, &[0xAA; 16]).unwrap();
    let control = (u32::from(KEY_FILE_FIRST) << 16) | DMA_CTL_SELECT | DMA_CTL_READ;
    assert_eq!(dma(&mut f, &mut m, DESC, control, 8, BUF), 0);
    let mut got = [0u8; 9];
    m.read(BUF, &mut got).unwrap();
    assert_eq!(got, [1, 2, 3, 4, 5, 0, 0, 0, 0xAA]);
    assert_eq!(f.stats, DmaStats { done: 1, errors: 0, bad_descriptors: 0 });
}

#[test]
fn dma_skip_then_read_continues_at_the_offset() {
    let mut f = dev();
    let mut m = mem();
    let control = (u32::from(KEY_FILE_FIRST + 1) << 16) | DMA_CTL_SELECT | DMA_CTL_SKIP;
    assert_eq!(dma(&mut f, &mut m, DESC, control, 5, 0), 0);
    assert_eq!(dma(&mut f, &mut m, DESC, DMA_CTL_READ, 5, BUF), 0);
    let mut got = [0u8; 5];
    m.read(BUF, &mut got).unwrap();
    assert_eq!(&got, b"i0cf8");
    // The traditional port goes on from the same offset.
    assert_eq!(f.io_read(DATA_PORT, 1), u32::from(b'/'));
}

#[test]
fn dma_writes_only_writable_files_within_their_length() {
    let mut f = dev();
    let mut m = mem();
    m.write(BUF, b"ABCDEFGHIJ").unwrap();
    let scratch = (u32::from(KEY_FILE_FIRST + 2) << 16) | DMA_CTL_SELECT | DMA_CTL_WRITE;
    assert_eq!(dma(&mut f, &mut m, DESC, scratch, 8, BUF), 0);
    assert_eq!(f.file("etc/scratch"), Some(&b"ABCDEFGH"[..]));
    // Past the end: refused, nothing changed.
    assert_eq!(dma(&mut f, &mut m, DESC, scratch, 9, BUF + 1), DMA_CTL_ERROR);
    assert_eq!(f.file("etc/scratch"), Some(&b"ABCDEFGH"[..]));
    // A read-only file, an unknown key: refused.
    let e820 = (u32::from(KEY_FILE_FIRST) << 16) | DMA_CTL_SELECT | DMA_CTL_WRITE;
    assert_eq!(dma(&mut f, &mut m, DESC, e820, 1, BUF), DMA_CTL_ERROR);
    assert_eq!(f.file("etc/e820"), Some(&[1, 2, 3, 4, 5][..]));
    assert_eq!(dma(&mut f, &mut m, DESC, (0x3333 << 16) | DMA_CTL_SELECT | DMA_CTL_WRITE, 1, BUF), DMA_CTL_ERROR);
    // The traditional data port never writes.
    f.io_write(SELECTOR_PORT, 2, u32::from(KEY_FILE_FIRST + 2) | 0x4000, &mut m);
    f.io_write(DATA_PORT, 1, 0x55, &mut m);
    assert_eq!(f.file("etc/scratch"), Some(&b"ABCDEFGH"[..]));
}

#[test]
fn dma_to_bad_guest_addresses_is_an_error_not_a_panic() {
    let mut f = dev();
    let mut m = mem();
    let read = (u32::from(KEY_FILE_FIRST) << 16) | DMA_CTL_SELECT | DMA_CTL_READ;
    // Buffer outside RAM, straddling its end, at the top of the address space.
    assert_eq!(dma(&mut f, &mut m, DESC, read, 4, RAM as u64), DMA_CTL_ERROR);
    assert_eq!(dma(&mut f, &mut m, DESC, read, 4, RAM as u64 - 2), DMA_CTL_ERROR);
    assert_eq!(dma(&mut f, &mut m, DESC, read, 4, u64::MAX - 1), DMA_CTL_ERROR);
    let mut tail = [0u8; 2];
    m.read(RAM as u64 - 2, &mut tail).unwrap();
    assert_eq!(tail, [0, 0], "nothing written when any of it is outside RAM");
    // A huge length: refused before anything is written.
    m.write(BUF, &[0xEE; 8]).unwrap();
    assert_eq!(dma(&mut f, &mut m, DESC, read, u32::MAX, BUF), DMA_CTL_ERROR);
    let mut head = [0u8; 8];
    m.read(BUF, &mut head).unwrap();
    assert_eq!(head, [0xEE; 8], "a refused transfer writes nothing");
    // A write from outside RAM.
    let write = (u32::from(KEY_FILE_FIRST + 2) << 16) | DMA_CTL_SELECT | DMA_CTL_WRITE;
    assert_eq!(dma(&mut f, &mut m, DESC, write, 4, 1 << 40), DMA_CTL_ERROR);
    assert_eq!(f.stats.errors, 5);
    // The descriptor itself outside RAM, or straddling its end.
    let before = f.stats;
    dma(&mut f, &mut m, 1 << 40, read, 4, BUF);
    dma(&mut f, &mut m, RAM as u64 - 8, read, 4, BUF);
    assert_eq!(f.stats.bad_descriptors, before.bad_descriptors + 2);
    assert_eq!(f.stats.done, before.done);
}

#[test]
fn a_large_read_within_ram_fills_it_in_chunks() {
    let mut f = dev();
    let mut m = mem();
    m.as_mut_slice()[BUF as usize..].fill(0xEE);
    let n = 3 * CHUNK as u32 + 7;
    let read = (u32::from(KEY_FILE_FIRST) << 16) | DMA_CTL_SELECT | DMA_CTL_READ;
    assert_eq!(dma(&mut f, &mut m, DESC, read, n, BUF), 0);
    let s = &m.as_slice()[BUF as usize..];
    assert_eq!(&s[..5], &[1, 2, 3, 4, 5]);
    assert!(s[5..n as usize].iter().all(|&b| b == 0));
    assert_eq!(s[n as usize], 0xEE);
}

#[test]
fn random_port_traffic_never_panics() {
    let mut f = dev();
    let mut m = mem();
    let mut rng = crate::devices::XorShift(0xF00D_CAFE);
    for _ in 0..50_000 {
        let port = SELECTOR_PORT - 2 + rng.below(16) as u16;
        let size = rng.size();
        if rng.below(3) == 0 {
            let _ = f.io_read(port, size);
        } else {
            // Descriptors at random places, some inside RAM with random
            // contents.
            let desc = if rng.below(2) == 0 { rng.below(RAM as u64) } else { rng.next() };
            if desc < RAM as u64 - 16 {
                let bytes = rng.next().to_le_bytes();
                let _ = m.write(desc, &bytes);
                let _ = m.write(desc + 8, &(rng.below(RAM as u64 * 2)).to_be_bytes());
            }
            if rng.below(4) == 0 {
                f.dma(desc, &mut m);
            } else {
                let value = if port == DMA_PORT + 4 { (desc as u32).swap_bytes() } else { rng.next() as u32 };
                f.io_write(port, size, value, &mut m);
            }
        }
    }
    assert_eq!(read_pio(&mut f, KEY_SIGNATURE, 4), b"QEMU");
}

#[test]
fn unaligned_descriptors_and_odd_control_bits_behave_as_qemu() {
    let mut f = dev();
    let mut m = mem();
    let key = u32::from(KEY_FILE_FIRST) << 16;
    // A descriptor at an odd address (the spec asks no alignment).
    assert_eq!(dma(&mut f, &mut m, DESC + 3, key | DMA_CTL_SELECT | DMA_CTL_READ, 5, BUF + 1), 0);
    assert_eq!(&m.as_slice()[BUF as usize + 1..BUF as usize + 6], &[1, 2, 3, 4, 5]);
    // READ, WRITE and SKIP together: READ wins (as QEMU's
    // fw_cfg_dma_transfer), so a read-only file is not written.
    m.write(BUF, &[0xAA; 5]).unwrap();
    let all = key | DMA_CTL_SELECT | DMA_CTL_READ | DMA_CTL_WRITE | DMA_CTL_SKIP;
    assert_eq!(dma(&mut f, &mut m, DESC, all, 5, BUF), 0);
    assert_eq!(&m.as_slice()[BUF as usize..BUF as usize + 5], &[1, 2, 3, 4, 5]);
    assert_eq!(f.file("etc/e820"), Some(&[1u8, 2, 3, 4, 5][..]));
    // Unknown control bits are ignored; the write bit (14) of a selector
    // names the same item (the arch bit 15 another table: below).
    let odd = (u32::from(KEY_FILE_FIRST | 0x4000) << 16) | 0xFFE0 | DMA_CTL_SELECT | DMA_CTL_READ;
    assert_eq!(dma(&mut f, &mut m, DESC, odd, 2, BUF), 0);
    assert_eq!(&m.as_slice()[BUF as usize..BUF as usize + 2], &[1, 2]);
    // ERROR set by the guest alone, no operation: done, status 0.
    assert_eq!(dma(&mut f, &mut m, DESC, DMA_CTL_ERROR, 4, 1 << 40), 0);
    // A write through DMA to a file that is not writable, and past the
    // end of a writable one: errors, the files unchanged.
    let w = (u32::from(KEY_FILE_FIRST) << 16) | DMA_CTL_SELECT | DMA_CTL_WRITE;
    assert_eq!(dma(&mut f, &mut m, DESC, w, 1, BUF), DMA_CTL_ERROR);
    let w = (u32::from(KEY_FILE_FIRST + 2) << 16) | DMA_CTL_SELECT | DMA_CTL_WRITE;
    assert_eq!(dma(&mut f, &mut m, DESC, w, 9, BUF), DMA_CTL_ERROR);
    assert_eq!(f.file("etc/scratch"), Some(&[0u8; 8][..]));
    // A skip that would pass 4 GiB saturates; the next read gives zeros.
    let skip = key | DMA_CTL_SELECT | DMA_CTL_SKIP;
    assert_eq!(dma(&mut f, &mut m, DESC, skip, u32::MAX, 0), 0);
    assert_eq!(dma(&mut f, &mut m, DESC, DMA_CTL_SKIP, u32::MAX, 0), 0);
    m.write(BUF, &[0xAA; 4]).unwrap();
    assert_eq!(dma(&mut f, &mut m, DESC, DMA_CTL_READ, 4, BUF), 0);
    assert_eq!(&m.as_slice()[BUF as usize..BUF as usize + 4], &[0; 4]);
}

#[test]
fn dma_transfers_are_tallied_by_the_item_they_went_to() {
    let mut f = dev();
    let mut m = mem();
    let read = |key: u16| (u32::from(key) << 16) | DMA_CTL_SELECT | DMA_CTL_READ;
    assert_eq!(dma(&mut f, &mut m, DESC, read(KEY_FILE_FIRST + 1), 4, BUF), 0);
    assert_eq!(dma(&mut f, &mut m, DESC, DMA_CTL_READ, 4, BUF), 0);
    assert_eq!(dma(&mut f, &mut m, DESC, read(KEY_NB_CPUS), 2, BUF), 0);
    assert_eq!(f.dma_summary(), "key 0x21 (bootorder) 2 transfers 8 bytes, key 0x5 1 transfers 2 bytes");
    // Many keys: the table stops at its rows, the transfers still run.
    for k in 0..100u16 {
        assert_eq!(dma(&mut f, &mut m, DESC, read(0x100 + k), 1, BUF), 0);
    }
    assert_eq!(f.dma_by_key.len(), DMA_KEY_ROWS);
    assert_eq!(f.stats.done, 103);
    assert_eq!(FwCfg::new(1 << 20, 1).dma_summary(), "none");
}

/// Bit 15 selects QEMU's architecture-local table (x86: 0x8000 ACPI
/// tables, 0x8001 SMBIOS entries, 0x8003 the legacy e820 table), where
/// this device has no items: they read as zeros, as a missing item does,
/// never as the generic item with the same low bits (0x8000 read as the
/// "QEMU" signature made SeaBIOS count 0x4551 legacy ACPI tables and read
/// each one's length: 17,747 DMA exits per boot).
#[test]
fn arch_local_keys_are_their_own_items_not_the_generic_ones() {
    let mut f = dev();
    for key in [0x8000, 0x8001, 0x8002, 0x8003, 0x8000 | KEY_FILE_DIR] {
        assert_eq!(read_pio(&mut f, key, 4), [0; 4], "key {key:#x} through the data port");
        let mut m = mem();
        m.write(BUF, &[0xAA; 4]).unwrap();
        let control = (u32::from(key) << 16) | DMA_CTL_SELECT | DMA_CTL_READ;
        assert_eq!(dma(&mut f, &mut m, DESC, control, 4, BUF), 0);
        let mut got = [0u8; 4];
        m.read(BUF, &mut got).unwrap();
        assert_eq!(got, [0; 4], "key {key:#x} through DMA");
    }
    // The write bit (14) is not part of the item: 0x4000 | key reads key.
    assert_eq!(read_pio(&mut f, 0x4000 | KEY_SIGNATURE, 4), b"QEMU");
    assert_eq!(read_pio(&mut f, KEY_SIGNATURE, 4), b"QEMU");
}
