//! What the xz reader takes from the heap (its own test binary: a global
//! allocator that counts the bytes live and their peak, and can refuse
//! large allocations as zone-server's small heap does): the dictionary the
//! stream names and little else; a dictionary over the limit costs
//! nothing; a dictionary the heap cannot give is an error, not an abort,
//! unless the heap can grow ([`alcove_images::xz::GrowHeap`]).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use alcove_images::xz::{OUT_CHUNK, XzReader};
use alcove_images::{Error, store};
use alcove_pool::{MemDisk, Pool};
use serde_json::json;
use sha1::{Digest, Sha1};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
/// Allocations larger than this fail (null), as a heap without the room.
static REFUSE_ABOVE: AtomicUsize = AtomicUsize::new(usize::MAX);

// SAFETY: every call goes to the system allocator unchanged, or fails with
// null (which GlobalAlloc allows); the counters only observe sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() > REFUSE_ABOVE.load(Ordering::Relaxed) {
            return std::ptr::null_mut();
        }
        // SAFETY: the caller's contract, passed on.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract, passed on.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// One test at a time uses the counters and the switch.
static ONE: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

/// Decodes `file` in 16 KiB pieces, output dropped; returns the result and
/// the peak heap above what was live before.
fn peak_of(file: &[u8], limit: u64) -> (Result<u64, Error>, usize) {
    peak_with(file, limit, None)
}

fn peak_with(file: &[u8], limit: u64, grow: Option<alcove_images::xz::GrowHeap>) -> (Result<u64, Error>, usize) {
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let r = (|| {
        let mut x = XzReader::new(limit);
        if let Some(g) = grow {
            x.set_grow_heap(g);
        }
        for p in file.chunks(16 << 10) {
            x.feed(p, &mut |_| Ok(()))?;
        }
        x.finish()?;
        Ok(x.total_out())
    })();
    (r, PEAK.load(Ordering::Relaxed) - base)
}

#[test]
fn the_heap_holds_the_dictionary_and_little_else() {
    let _one = ONE.lock().unwrap();
    let file = fixture("plain-6-crc64.xz");
    // xz -6: an 8 MiB dictionary, a 64 KiB output piece, the decoder's
    // state (about 30 KiB) and the headers gathered.
    let (r, peak) = peak_of(&file, 1 << 20);
    assert!(r.is_ok(), "{r:?}");
    assert!((8 << 20..(8 << 20) + OUT_CHUNK + (64 << 10)).contains(&peak), "peak {peak}");
    eprintln!("xz -6 file: peak heap {peak} bytes");

    // A header naming 1.5 GiB: refused with nothing allocated for it.
    let mut bad = file.clone();
    let size = (usize::from(bad[12]) + 1) * 4;
    bad[16] = 37;
    let crc = crc32fast::hash(&bad[12..12 + size - 4]);
    bad[12 + size - 4..12 + size].copy_from_slice(&crc.to_le_bytes());
    let (r, peak) = peak_of(&bad, 1 << 20);
    assert!(matches!(&r, Err(Error::Xz(s)) if s.contains("limit of 64 MiB")), "{r:?}");
    assert!(peak < OUT_CHUNK + (64 << 10), "peak {peak}");

    // A heap that cannot give 8 MiB (zone-server's is 512 KiB): an error
    // naming the dictionary, no abort; a small dictionary still decodes.
    REFUSE_ABOVE.store(1 << 20, Ordering::Relaxed);
    let (r, _) = peak_of(&file, 1 << 20);
    REFUSE_ABOVE.store(usize::MAX, Ordering::Relaxed);
    assert!(matches!(&r, Err(Error::Xz(s)) if s == "no memory for a dictionary of 8388608 bytes"), "{r:?}");
    REFUSE_ABOVE.store(1 << 20, Ordering::Relaxed);
    let (r, peak) = peak_of(&fixture("plain-0-none.xz"), 1 << 20);
    REFUSE_ABOVE.store(usize::MAX, Ordering::Relaxed);
    assert!(r.is_ok(), "{r:?}");
    assert!(peak < (256 << 10) + OUT_CHUNK + (64 << 10), "xz -0's 256 KiB dictionary: peak {peak}");
}

/// What the heap was asked to grow by.
static GROWN: AtomicUsize = AtomicUsize::new(0);

/// A heap that grows: large allocations succeed from now on.
fn grows(bytes: usize) -> Result<(), String> {
    GROWN.store(bytes, Ordering::Relaxed);
    REFUSE_ABOVE.store(usize::MAX, Ordering::Relaxed);
    Ok(())
}

/// A heap whose budget is spent.
fn cannot_grow(bytes: usize) -> Result<(), String> {
    GROWN.store(bytes, Ordering::Relaxed);
    Err("out of budget".into())
}

#[test]
fn a_heap_that_can_grow_is_asked_once_for_the_dictionary() {
    let _one = ONE.lock().unwrap();
    let file = fixture("plain-6-crc64.xz");
    REFUSE_ABOVE.store(1 << 20, Ordering::Relaxed);
    let (r, _) = peak_with(&file, 1 << 20, Some(grows));
    REFUSE_ABOVE.store(usize::MAX, Ordering::Relaxed);
    assert!(r.is_ok(), "{r:?}");
    assert_eq!(GROWN.load(Ordering::Relaxed), (8 << 20) + 64 * 1024);

    REFUSE_ABOVE.store(1 << 20, Ordering::Relaxed);
    let (r, _) = peak_with(&file, 1 << 20, Some(cannot_grow));
    REFUSE_ABOVE.store(usize::MAX, Ordering::Relaxed);
    assert_eq!(r, Err(Error::Xz("no memory for a dictionary of 8388608 bytes: the heap cannot grow: out of budget".into())));

    // Through an install (imgadm's path): the grower reaches the reader.
    let sha1: String = Sha1::digest(&file).iter().map(|b| format!("{b:02x}")).collect();
    let m = alcove_images::Manifest::from_json(json!({
        "uuid": "0b7b3b7e-8d6c-4c8e-9d3a-2f1e5a6b7c8d", "name": "x", "version": "1", "type": "zvol", "os": "linux",
        "image_size": 1, "files": [{"sha1": sha1, "size": file.len(), "compression": "xz"}]
    }))
    .unwrap();
    let mut pool = Pool::create("zones", vec![MemDisk::new(16 << 20)], 1).unwrap();
    GROWN.store(0, Ordering::Relaxed);
    REFUSE_ABOVE.store(1 << 20, Ordering::Relaxed);
    let r = store::Install::begin(&mut pool, m, None).and_then(|mut inst| {
        inst.grow_heap_with(grows);
        file.chunks(4096).try_for_each(|c| inst.write(c))?;
        inst.finish()
    });
    REFUSE_ABOVE.store(usize::MAX, Ordering::Relaxed);
    assert!(r.is_ok(), "{r:?}");
    assert_eq!(GROWN.load(Ordering::Relaxed), (8 << 20) + 64 * 1024);
}
