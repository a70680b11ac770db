//! New memory reads as zeros, whoever had it before: the kernel zeroes
//! free frames ahead of need on an idle CPU and skips those at allocation,
//! so a frame handed out must never carry what its last owner wrote,
//! whether it was zeroed ahead (this test sleeps to let the idle CPU work)
//! or at the allocation (taken again at once).

use crate::tests::Env;
use abi::{ObjectType, Rights, PAGE_SIZE};
use alcove_rt::start::SLOT_SELF;
use alloc::format;
use alloc::string::String;
use libipc::sys;

/// Frames written with a pattern and freed, then new frames of the same
/// sizes (the allocator's first fit hands back the same memory), at once
/// and after a pause: every byte of every new frame reads 0.
pub fn new_frames_never_show_what_freed_ones_held(env: &mut Env) -> Result<(), String> {
    let pause = env.slot();
    sys::create(ObjectType::Notification, pause, 0).map_err(|e| format!("notification: {e}"))?;
    let r = (|| {
        for round in 0..8u64 {
            // 1 page, then up to 2 MiB: single frames and contiguous runs.
            let pages = [1, 3, 64, 512][round as usize % 4];
            let (f, va) = env.frame(pages, Rights::READ | Rights::WRITE)?;
            let bytes = (pages * PAGE_SIZE) as usize;
            let words = bytes / 8;
            let p = va as *mut u64;
            for i in 0..words {
                // SAFETY: `va` maps `pages` pages of the frame just made,
                // writable, and nothing else refers to them.
                unsafe { p.add(i).write_volatile(0xA5A5_A5A5_0000_0000 | i as u64) };
            }
            // SAFETY: the test is done with the mapping.
            let _ = unsafe { sys::unmap(SLOT_SELF, va, pages) };
            sys::cap_delete(f).map_err(|e| format!("delete frame: {e}"))?;
            if round % 2 == 1 {
                // Time for an idle CPU to zero what was freed.
                let _ = sys::wait(pause, 30_000_000);
            }
            let (g, vb) = env.frame(pages, Rights::READ)?;
            let q = vb as *const u64;
            let dirty = (0..bytes / 8).find(|&i| {
                // SAFETY: `vb` maps `pages` readable pages of the new frame.
                unsafe { q.add(i).read_volatile() != 0 }
            });
            // SAFETY: as above.
            let _ = unsafe { sys::unmap(SLOT_SELF, vb, pages) };
            let _ = sys::cap_delete(g);
            if let Some(i) = dirty {
                return Err(format!(
                    "round {round}: a new {pages}-page frame holds a nonzero word at byte {} (the freed frame's memory)",
                    i * 8
                ));
            }
        }
        Ok(())
    })();
    let _ = sys::cap_delete(pause);
    r
}
