//! A guest's virtqueue layout, all of it from the fuzzer: the queue's size and
//! addresses, the negotiated features and 64 KiB of guest RAM holding the
//! rings, descriptor tables and requests. A virtio-blk device processes
//! it; nothing may panic, loop without end or touch memory outside RAM.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmm_server::virtio::block::{Block, MemBackend};
use vmm_server::virtio::{Queue, VecMemory, VirtioDevice, prepare_queues};

const RAM: usize = 64 * 1024;

fn u64_at(data: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    for (i, x) in b.iter_mut().enumerate() {
        *x = data.get(at + i).copied().unwrap_or(0);
    }
    u64::from_le_bytes(b)
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 40 {
        return;
    }
    // Mostly a well-formed queue (a power-of-two size, aligned rings) so the
    // fuzzer spends its time in the chains; sometimes anything at all.
    let wild = data[0] & 0x80 != 0;
    let size = if wild { u64_at(data, 0) as u16 % 1024 } else { 1 << (data[0] % 9) };
    let features = u64_at(data, 8);
    let mut q = Queue::new(size.max(1));
    q.ready = true;
    let (d, a, u) = (u64_at(data, 16) % RAM as u64, u64_at(data, 24) % RAM as u64, u64_at(data, 32) % RAM as u64);
    (q.desc_table, q.avail_ring, q.used_ring) = if wild { (d, a, u) } else { (d & !15, a & !1, u & !3) };
    let mut mem = VecMemory::new(0, RAM);
    let body = &data[40..];
    let n = body.len().min(RAM);
    mem.as_mut_slice()[..n].copy_from_slice(&body[..n]);
    let mut disk = Block::new(MemBackend::new(64, b"fuzz"));
    disk.ack_features(features);
    let mut queues = [q];
    if prepare_queues(&mut queues, features | (1 << 32), &mem).is_err() {
        return;
    }
    // Twice: the second pass sees the used ring the first one wrote. Each
    // pass as the VMM runs it: queue, execute, complete.
    for _ in 0..2 {
        let _ = disk.process_queue(0, &mut queues, &mut mem);
        disk.disk().execute(&mut mem);
        let _ = disk.complete_queue(0, &mut queues, &mut mem);
    }
});
