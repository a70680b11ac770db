//! A guest driver made of fuzzer bytes, for the `virtqueue` fuzz target and
//! the host test that runs it on generated inputs (issue 10: the target must
//! reach the device models, not stop at the ring checks).
//!
//! The input is a script. Its first bytes choose the device (virtio-blk,
//! virtio-net, virtio-console, virtio-rng), the features the driver accepts
//! and the queue size; the rest is a list of operations a driver (or a
//! hostile guest) performs: publish a well-formed request chain (a block
//! request with its header, data buffers and status byte; a frame to send;
//! receive buffers), publish it through an indirect table, flip a byte of
//! the rings, descriptors or data, move `avail.idx` anywhere, write the
//! configuration space, reset the device, or let the device run (queue,
//! execute, complete). Most chains are valid, so the device models' own
//! paths run; the corruptions make the rest adversarial. Nothing may
//! panic, loop without end, or touch memory outside guest RAM.

use alloc::vec;

use super::block::{
    Block, MemBackend, VIRTIO_BLK_T_DISCARD, VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN,
    VIRTIO_BLK_T_OUT, VIRTIO_BLK_T_WRITE_ZEROES,
};
use super::console::Console;
use super::mock::{Buf, MockQueue};
use super::net::Net;
use super::queue::VecMemory;
use super::rng::{EntropySource, Rng};
use super::{GuestMemory, VirtioDevice, feature, prepare_queues, VIRTIO_F_VERSION_1};

/// Guest RAM of one run.
pub const RAM: usize = 256 * 1024;
/// Where the queues' areas start (the rest of RAM holds buffers).
const QUEUES_AT: u64 = 0;
/// Where buffers go: past every queue area of the largest size.
const DATA_AT: u64 = 128 * 1024;
/// Operations one input may perform.
const MAX_OPS: usize = 256;

/// An entropy source that counts (the bytes do not matter here).
struct Counter(u8);

impl EntropySource for Counter {
    fn fill(&mut self, buf: &mut [u8]) {
        for b in buf {
            self.0 = self.0.wrapping_add(1);
            *b = self.0;
        }
    }
}

/// The fuzzer's bytes, read front to back; zeros when they run out.
struct Script<'a> {
    data: &'a [u8],
    at: usize,
}

impl Script<'_> {
    fn done(&self) -> bool {
        self.at >= self.data.len()
    }
    fn u8(&mut self) -> u8 {
        let b = self.data.get(self.at).copied().unwrap_or(0);
        self.at += 1;
        b
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
    fn u64(&mut self) -> u64 {
        u64::from(self.u32()) | (u64::from(self.u32()) << 32)
    }
}

/// Bump allocation of buffers in the data area (wrapping, so a long script
/// reuses it; overlapping buffers are one more thing a guest may do).
struct Buffers {
    next: u64,
}

impl Buffers {
    fn take(&mut self, len: u32) -> u64 {
        let len = u64::from(len.min(16 * 1024));
        if self.next + len > RAM as u64 {
            self.next = DATA_AT;
        }
        let at = self.next;
        self.next = (self.next + len + 15) & !15;
        at
    }
}

/// What one script did: operations run, and chains the device handed back
/// (used-ring entries, summed over its queues and resets).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    pub ops: usize,
    pub used: usize,
}

/// Runs one script against one device.
pub fn run(data: &[u8]) -> Outcome {
    let mut s = Script { data, at: 0 };
    let pick = s.u8();
    let accepted = s.u64();
    let size: u16 = 1 << (1 + s.u8() % 8); // 2..=256
    match pick % 4 {
        0 => drive(&mut s, Block::new(MemBackend::new(64, b"fuzz-disk")), accepted, size, Kind::Block),
        1 => drive(&mut s, Net::new([0x02, 0, 0, 0, 0, 1]), accepted, size, Kind::Net),
        2 => drive(&mut s, Console::new(), accepted, size, Kind::Console),
        _ => drive(&mut s, Rng::new(Counter(0)), accepted, size, Kind::Rng),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Block,
    Net,
    Console,
    Rng,
}

fn drive<D: VirtioDevice + Pump>(s: &mut Script, mut dev: D, accepted: u64, size: u16, kind: Kind) -> Outcome {
    let mut mem = VecMemory::new(0, RAM);
    // The driver accepts a subset of what is offered (as the PCI transport
    // passes only offered bits), always VERSION_1 unless the script says
    // otherwise, so legacy refusal is reached too.
    let mut features = dev.features() & accepted;
    if accepted & 1 == 0 {
        features |= feature(VIRTIO_F_VERSION_1);
    }
    dev.ack_features(features);
    let nq = dev.queue_sizes().len();
    let mut mocks = vec![];
    let mut queues = vec![];
    let mut base = QUEUES_AT;
    for &max in dev.queue_sizes() {
        let n = size.min(max).max(1);
        let m = MockQueue::new(&mut mem, base, n);
        base = (m.used_ring + 6 + 8 * u64::from(n) + 15) & !15;
        queues.push(m.device_queue());
        mocks.push(m);
    }
    debug_assert!(base <= DATA_AT);
    if prepare_queues(&mut queues, dev.acked_features(), &mem).is_err() || dev.activate(&queues).is_err() {
        return Outcome::default();
    }
    let mut bufs = Buffers { next: DATA_AT };
    let mut ops = 0;
    let mut used = 0;
    while !s.done() && ops < MAX_OPS {
        ops += 1;
        let op = s.u8();
        let q = usize::from(s.u8()) % nq;
        match op % 16 {
            // A well-formed chain for this device and queue (most ops).
            0..=6 => {
                let chain = chain_for(s, kind, q, &mut bufs, &mut mem);
                if !chain.is_empty() && chain.len() <= usize::from(mocks[q].size) {
                    mocks[q].add_chain(&mut mem, &chain);
                }
            }
            // The same through an indirect table.
            7 => {
                let chain = chain_for(s, kind, q, &mut bufs, &mut mem);
                if !chain.is_empty() && chain.len() <= 64 {
                    let table = bufs.take(16 * chain.len() as u32);
                    mocks[q].add_indirect_chain(&mut mem, table, &chain);
                }
            }
            // The device runs: queue, execute, complete.
            8..=10 => {
                let _ = dev.process_queue(q, &mut queues, &mut mem);
                dev.pump(&mut mem, s.u8());
                let _ = dev.complete_queue(q, &mut queues, &mut mem);
            }
            // A byte of the rings or tables flipped.
            11 => {
                let at = u64::from(s.u32()) % base.max(1);
                let mut b = [0u8];
                let _ = mem.read(at, &mut b);
                let _ = mem.write(at, &[b[0] ^ s.u8().max(1)]);
            }
            // A byte anywhere in RAM (buffers, status bytes).
            12 => {
                let at = u64::from(s.u32()) % RAM as u64;
                let _ = mem.write(at, &[s.u8()]);
            }
            // avail.idx moved: ahead by up to the size and beyond, or back.
            13 => {
                let idx = mocks[q].avail_idx.wrapping_add(s.u16() % (2 * mocks[q].size + 2));
                mocks[q].set_avail_idx(&mut mem, idx);
            }
            // The configuration space written and read.
            14 => {
                let off = u64::from(s.u8());
                let len = usize::from(s.u8() % 9);
                let bytes = [s.u8(); 8];
                dev.write_config(off, &bytes[..len]);
                let mut back = [0u8; 8];
                dev.read_config(off, &mut back[..len]);
            }
            // Device reset, then the driver sets up again.
            _ => {
                used += mocks.iter().map(|m| usize::from(m.used_idx(&mem))).sum::<usize>();
                dev.reset();
                dev.ack_features(features);
                for (m, dq) in mocks.iter_mut().zip(queues.iter_mut()) {
                    *m = MockQueue::new(&mut mem, m.desc_table, m.size);
                    *dq = m.device_queue();
                }
                if prepare_queues(&mut queues, dev.acked_features(), &mem).is_err() || dev.activate(&queues).is_err() {
                    return Outcome { ops, used };
                }
            }
        }
    }
    // Whatever was left runs once more.
    for q in 0..nq {
        let _ = dev.process_queue(q, &mut queues, &mut mem);
        dev.pump(&mut mem, 0xff);
        let _ = dev.complete_queue(q, &mut queues, &mut mem);
    }
    used += mocks.iter().map(|m| usize::from(m.used_idx(&mem))).sum::<usize>();
    Outcome { ops, used }
}

/// What the VMM does between a device's queue and complete steps.
trait Pump {
    fn pump(&mut self, mem: &mut dyn GuestMemory, arg: u8);
}

impl Pump for Block<MemBackend> {
    fn pump(&mut self, mem: &mut dyn GuestMemory, arg: u8) {
        self.disk().execute_at_most(mem, usize::from(arg % 8) + 1);
    }
}

impl Pump for Net {
    fn pump(&mut self, _mem: &mut dyn GuestMemory, arg: u8) {
        // Frames out are taken; frames in of a chosen size (up to a jumbo
        // one, which must be refused) arrive.
        let _ = self.take_tx();
        let len = usize::from(arg) * 64;
        if arg & 1 == 1 {
            let _ = self.push_rx(&vec![arg; len]);
        }
    }
}

impl Pump for Console {
    fn pump(&mut self, _mem: &mut dyn GuestMemory, arg: u8) {
        let _ = self.take_output();
        if arg & 1 == 1 {
            let _ = self.push_input(&vec![b'x'; usize::from(arg)]);
        }
    }
}

impl<E: EntropySource> Pump for Rng<E> {
    fn pump(&mut self, _mem: &mut dyn GuestMemory, _arg: u8) {}
}

/// A chain a driver of this device would publish on queue `q`, with the
/// script choosing its sizes and contents (and now and then a wrong one).
fn chain_for(s: &mut Script, kind: Kind, q: usize, bufs: &mut Buffers, mem: &mut VecMemory) -> vec::Vec<Buf> {
    let mut chain = vec![];
    let mut buf = |len: u32, writable: bool, chain: &mut vec::Vec<Buf>| {
        let at = bufs.take(len);
        chain.push((at, len, writable));
        at
    };
    match kind {
        Kind::Block => {
            let t = match s.u8() % 8 {
                0 | 1 => VIRTIO_BLK_T_IN,
                2 | 3 => VIRTIO_BLK_T_OUT,
                4 => VIRTIO_BLK_T_FLUSH,
                5 => VIRTIO_BLK_T_GET_ID,
                6 => {
                    if s.u8() & 1 == 0 {
                        VIRTIO_BLK_T_DISCARD
                    } else {
                        VIRTIO_BLK_T_WRITE_ZEROES
                    }
                }
                _ => s.u32(),
            };
            let sector = if s.u8() & 7 == 0 { s.u64() } else { u64::from(s.u8() % 80) };
            let hdr_len = if s.u8() & 15 == 0 { u32::from(s.u8() % 32) } else { 16 };
            let h = buf(hdr_len, false, &mut chain);
            let mut hdr = [0u8; 16];
            hdr[..4].copy_from_slice(&t.to_le_bytes());
            hdr[8..].copy_from_slice(&sector.to_le_bytes());
            let _ = mem.write(h, &hdr[..(hdr_len as usize).min(16)]);
            let segments = s.u8() % 4;
            for _ in 0..segments {
                let len = if s.u8() & 7 == 0 { s.u32() % (20 * 1024) } else { 512 * (1 + u32::from(s.u8() % 8)) };
                let writable = (t == VIRTIO_BLK_T_IN || t == VIRTIO_BLK_T_GET_ID) ^ (s.u8() & 15 == 0);
                let at = buf(len, writable, &mut chain);
                if t == VIRTIO_BLK_T_DISCARD || t == VIRTIO_BLK_T_WRITE_ZEROES {
                    // One discard segment: sector, sectors, flags.
                    let mut seg = [0u8; 16];
                    seg[..8].copy_from_slice(&u64::from(s.u8() % 80).to_le_bytes());
                    seg[8..12].copy_from_slice(&u32::from(s.u8() % 16).to_le_bytes());
                    seg[12..].copy_from_slice(&u32::from(s.u8() % 4).to_le_bytes());
                    let _ = mem.write(at, &seg[..(len as usize).min(16)]);
                }
            }
            let status_len = if s.u8() & 15 == 0 { u32::from(s.u8() % 4) } else { 1 };
            buf(status_len, s.u8() & 31 != 0, &mut chain);
        }
        Kind::Net | Kind::Console => {
            // Queue 0 (and console's control receive queues) are the device
            // writing; odd queues are the driver sending.
            let sending = q % 2 == 1;
            let pieces = 1 + s.u8() % 3;
            for _ in 0..pieces {
                let len = if s.u8() & 7 == 0 { s.u32() % (70 * 1024) } else { u32::from(s.u16() % 2048) };
                let at = buf(len, !sending ^ (s.u8() & 31 == 0), &mut chain);
                if sending && kind == Kind::Net {
                    // A virtio-net header, then a frame of the script's bytes.
                    let fill = [s.u8(); 64];
                    let _ = mem.write(at, &fill[..(len as usize).min(64)]);
                }
            }
        }
        Kind::Rng => {
            let len = if s.u8() & 7 == 0 { s.u32() } else { u32::from(s.u16() % 4096) };
            buf(len, s.u8() & 31 != 0, &mut chain);
        }
    }
    chain
}

#[cfg(test)]
mod tests {
    use super::*;

    /// xorshift64*, so the inputs are the same on every run.
    fn bytes(seed: u64, n: usize) -> vec::Vec<u8> {
        let mut x = seed | 1;
        (0..n)
            .map(|_| {
                x ^= x >> 12;
                x ^= x << 25;
                x ^= x >> 27;
                (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8
            })
            .collect()
    }

    #[test]
    fn generated_scripts_reach_every_device_and_never_panic() {
        let mut ran = [Outcome::default(); 4];
        for seed in 0..2000u64 {
            let mut input = bytes(seed, 64 + (seed as usize % 1500));
            input[0] = (seed % 4) as u8;
            let out = run(&input);
            let r = &mut ran[(seed % 4) as usize];
            r.ops += out.ops;
            r.used += out.used;
        }
        // Each device model ran operations and handed chains back: the
        // scripts get past set-up and the ring checks into the devices.
        for (i, r) in ran.iter().enumerate() {
            assert!(r.ops > 1000 && r.used > 100, "device {i}: {r:?}");
        }
    }
}
