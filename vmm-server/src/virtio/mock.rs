//! The driver side of a split virtqueue, for tests (as rust-vmm's
//! `MockSplitQueue`): lays out the descriptor table and the rings in a
//! [`VecMemory`], writes descriptors and publishes chains as a guest's
//! driver would, and reads back what the device returned.

use super::queue::{DESCRIPTOR_SIZE, Queue, VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE, VecMemory};
use super::{COMMON_FEATURES, GuestMemory};

/// One buffer as a test describes it: address, length, device-writable.
pub type Buf = (u64, u32, bool);

pub struct MockQueue {
    pub size: u16,
    pub desc_table: u64,
    pub avail_ring: u64,
    pub used_ring: u64,
    /// The driver's avail.idx.
    pub avail_idx: u16,
    /// The next table entry `add_chain` hands out.
    next_free: u16,
}

fn put_u16(mem: &mut VecMemory, gpa: u64, v: u16) {
    mem.write(gpa, &v.to_le_bytes()).unwrap();
}

fn get_u16(mem: &VecMemory, gpa: u64) -> u16 {
    let mut b = [0; 2];
    mem.read(gpa, &mut b).unwrap();
    u16::from_le_bytes(b)
}

fn get_u32(mem: &VecMemory, gpa: u64) -> u32 {
    let mut b = [0; 4];
    mem.read(gpa, &mut b).unwrap();
    u32::from_le_bytes(b)
}

impl MockQueue {
    /// A queue of `size` entries with its areas packed from `base`.
    pub fn new(mem: &mut VecMemory, base: u64, size: u16) -> Self {
        let n = u64::from(size);
        let desc_table = base;
        let avail_ring = desc_table + DESCRIPTOR_SIZE * n;
        let used_ring = (avail_ring + 6 + 2 * n + 3) & !3;
        let end = used_ring + 6 + 8 * n;
        mem.write(base, &alloc::vec![0; (end - base) as usize]).unwrap();
        Self { size, desc_table, avail_ring, used_ring, avail_idx: 0, next_free: 0 }
    }

    /// The device's view, ready and with every ring feature negotiated.
    pub fn device_queue(&self) -> Queue {
        let mut q = Queue::new(self.size);
        q.desc_table = self.desc_table;
        q.avail_ring = self.avail_ring;
        q.used_ring = self.used_ring;
        q.ready = true;
        q.set_features(COMMON_FEATURES);
        q
    }

    /// Writes entry `index` of the descriptor table at `table`.
    pub fn write_desc_at(mem: &mut VecMemory, table: u64, index: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&addr.to_le_bytes());
        b[8..12].copy_from_slice(&len.to_le_bytes());
        b[12..14].copy_from_slice(&flags.to_le_bytes());
        b[14..].copy_from_slice(&next.to_le_bytes());
        mem.write(table + DESCRIPTOR_SIZE * u64::from(index), &b).unwrap();
    }

    /// Writes entry `index` of the queue's descriptor table.
    pub fn set_desc(&self, mem: &mut VecMemory, index: u16, addr: u64, len: u32, flags: u16, next: u16) {
        Self::write_desc_at(mem, self.desc_table, index, addr, len, flags, next);
    }

    /// Writes `bufs` as a chain at entries `first..` of a table, linked in
    /// order.
    fn write_chain(mem: &mut VecMemory, table: u64, first: u16, bufs: &[Buf]) {
        for (i, &(addr, len, writable)) in bufs.iter().enumerate() {
            let index = first + i as u16;
            let mut flags = if writable { VIRTQ_DESC_F_WRITE } else { 0 };
            if i + 1 < bufs.len() {
                flags |= VIRTQ_DESC_F_NEXT;
            }
            Self::write_desc_at(mem, table, index, addr, len, flags, index + 1);
        }
    }

    /// Puts `bufs` in free table entries as one chain and makes it
    /// available; returns its head.
    pub fn add_chain(&mut self, mem: &mut VecMemory, bufs: &[Buf]) -> u16 {
        let head = self.next_free;
        Self::write_chain(mem, self.desc_table, head, bufs);
        self.next_free = (head + bufs.len() as u16) % self.size;
        self.publish(mem, head);
        head
    }

    /// Puts `bufs` in an indirect table at `table` and makes available a
    /// one-descriptor chain that refers to it; returns its head.
    pub fn add_indirect_chain(&mut self, mem: &mut VecMemory, table: u64, bufs: &[Buf]) -> u16 {
        Self::write_chain(mem, table, 0, bufs);
        let head = self.next_free;
        let len = (bufs.len() as u64 * DESCRIPTOR_SIZE) as u32;
        self.set_desc(mem, head, table, len, VIRTQ_DESC_F_INDIRECT, 0);
        self.next_free = (head + 1) % self.size;
        self.publish(mem, head);
        head
    }

    /// Makes the chain at `head` available and moves avail.idx past it.
    pub fn publish(&mut self, mem: &mut VecMemory, head: u16) {
        let slot = u64::from(self.avail_idx % self.size);
        put_u16(mem, self.avail_ring + 4 + 2 * slot, head);
        self.avail_idx = self.avail_idx.wrapping_add(1);
        put_u16(mem, self.avail_ring + 2, self.avail_idx);
    }

    /// Sets avail.idx without writing ring entries.
    pub fn set_avail_idx(&mut self, mem: &mut VecMemory, idx: u16) {
        self.avail_idx = idx;
        put_u16(mem, self.avail_ring + 2, idx);
    }

    pub fn set_avail_flags(&self, mem: &mut VecMemory, flags: u16) {
        put_u16(mem, self.avail_ring, flags);
    }

    pub fn set_used_event(&self, mem: &mut VecMemory, event: u16) {
        put_u16(mem, self.avail_ring + 4 + 2 * u64::from(self.size), event);
    }

    pub fn avail_event(&self, mem: &VecMemory) -> u16 {
        get_u16(mem, self.used_ring + 4 + 8 * u64::from(self.size))
    }

    pub fn used_idx(&self, mem: &VecMemory) -> u16 {
        get_u16(mem, self.used_ring + 2)
    }

    /// Used element `i` (ring position, taken modulo the size): (id, len).
    pub fn used_elem(&self, mem: &VecMemory, i: u16) -> (u32, u32) {
        let at = self.used_ring + 4 + 8 * u64::from(i % self.size);
        (get_u32(mem, at), get_u32(mem, at + 4))
    }
}
