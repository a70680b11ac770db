//! storaged's heap is a fixed arena (`alcove_rt::HEAP_BYTES`, 512 KiB).
//! A guest writing sequentially without flushing makes the pool's open
//! transaction group grow to storaged's dirty bounds
//! ([`storaged::DIRTY_LIMIT_BYTES`], [`storaged::DIRTY_LIMIT_BLOCKS`])
//! before it is committed: what the group holds then (a block pointer per
//! block: the data is on disk already), the metadata cache and a commit's
//! own buffers must fit with room to spare (for fragmentation of the
//! target's linked-list allocator, rings, grants and logs), whatever the
//! volume's block size. When the group held its data in memory, at a bound
//! of 1 MiB a Linux guest writing 8 MiB to a pool volume ran storaged out
//! of memory ("memory allocation of 8192 bytes failed"), storaged restarted
//! and the guest's writes were lost with the grant.
//!
//! Its own test binary: the counting allocator sees this test alone.

use std::cell::RefCell;
use std::rc::Rc;

use alcove_pool::Pool;
use libipc::blkring::{BlockDevice, MemDisk};
use storaged::volume::{MachineDisk, PoolVolume};

#[path = "../pool/tests/common/counting.rs"]
mod counting;

const MIB: u64 = 1 << 20;

#[test]
fn a_guests_sequential_writes_fit_in_storageds_heap() {
    // The default block size, and the smallest (the most blocks per byte).
    for volblocksize in [8192, 512] {
        sequential_writes(volblocksize);
    }
}

fn sequential_writes(volblocksize: u32) {
    let disk = MachineDisk(MemDisk::new((256 * MIB / 512) as usize, "pool"));
    let mut pool = Pool::create("zones", vec![disk], 7).unwrap();
    storaged::configure(&mut pool);
    pool.create_volume("zones/vm-disk0", 32 * MIB, volblocksize).unwrap();
    let pool = Rc::new(RefCell::new(pool));
    let mut vol = PoolVolume::open(pool.clone(), "zones/vm-disk0").unwrap();
    // One ring request at most: the ring's data pages (64 KiB); the data
    // comes from the ring's shared pages, not storaged's heap.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let chunk: Vec<u8> = (0..64 * 1024)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let base = counting::start();
    for i in 0..(8 * MIB / chunk.len() as u64) {
        vol.write(i * (chunk.len() as u64 / 512), &chunk).unwrap();
    }
    vol.flush().unwrap();
    let peak = counting::peak_since(base);
    let heap = alcove_rt::HEAP_BYTES;
    println!("peak heap use over 8 MiB of sequential writes in {volblocksize}-byte blocks: {} KiB (heap {} KiB)", peak / 1024, heap / 1024);
    assert!(
        peak <= heap * 3 / 4,
        "writing 8 MiB in {volblocksize}-byte blocks held up to {} KiB in storaged's heap at once; the heap is {} KiB",
        peak / 1024,
        heap / 1024
    );
    let mut back = vec![0u8; chunk.len()];
    vol.read(127 * 128, &mut back).unwrap();
    assert_eq!(back, chunk);
    // The last FLUSH went to the intent log: commit before the full verify.
    pool.borrow_mut().sync().unwrap();
    pool.borrow_mut().verify(false).unwrap();
}
