//! fw_cfg as a guest drives it, all of it from the fuzzer: 64 KiB of guest
//! RAM (DMA descriptors, buffers) and a sequence of port accesses
//! (selector, data, the DMA address halves that start transfers, with
//! descriptor addresses inside, across the end of and outside RAM).
//! Nothing may panic, write outside RAM, or change a read-only item.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmm_server::firmware::fw_cfg::{DMA_PORT, FwCfg, SELECTOR_PORT};
use vmm_server::virtio::VecMemory;

const RAM: usize = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 {
        return;
    }
    let split = (usize::from(data[0]) << 8 | usize::from(data[1])) % data.len();
    let (ops, ram_bytes) = data[2..].split_at(split.saturating_sub(2).min(data.len() - 2));
    let mut mem = VecMemory::new(0, RAM);
    let n = ram_bytes.len().min(RAM);
    mem.as_mut_slice()[..n].copy_from_slice(&ram_bytes[..n]);
    let mut f = FwCfg::new(128 << 20, 2);
    f.add_file("etc/e820", vec![0x11; 40], false).unwrap();
    f.add_file("etc/scratch", vec![0; 64], true).unwrap();
    // Each op: kind, then a 32-bit value.
    for op in ops.chunks(5) {
        let v = op.get(1..5).map_or(0, |b| u32::from_le_bytes([b[0], b[1], b.get(2).copied().unwrap_or(0), b.get(3).copied().unwrap_or(0)]));
        match op[0] % 6 {
            0 => f.io_write(SELECTOR_PORT, 2, v, &mut mem),
            1 => {
                let _ = f.io_read(SELECTOR_PORT + 1, 1);
            }
            2 => f.io_write(DMA_PORT, 4, v, &mut mem),
            3 => f.io_write(DMA_PORT + 4, 4, v, &mut mem),
            4 => f.dma(u64::from(v) % (RAM as u64 + 64), &mut mem),
            _ => f.io_write(SELECTOR_PORT.wrapping_add((v % 16) as u16), (v >> 8) as u8 % 5, v >> 16, &mut mem),
        }
    }
    assert_eq!(f.file("etc/e820"), Some(&[0x11; 40][..]), "a read-only file changed");
});
