//! The heap grows on request (`alcove_rt::grow_heap`): new frames charged
//! to this process's budget, mapped in the heap window, usable by `Vec`;
//! a growth the budget cannot pay for, or one of nothing or of absurd
//! size, is refused and leaves the heap, the budget, the address space and
//! the capability table as they were. The heap never shrinks, so these
//! tests run last but one (what they grow stays, 8 MiB and some pages; the
//! manifest gives ktest-user 12 MiB of budget for it).

use crate::tests::Env;
use abi::{CapSlot, Error, ObjectType, Rights, PAGE_SIZE};
use alcove_rt::start::{SLOT_HEAP, SLOT_SELF};
use alcove_rt::{grow_heap, heap_grown_bytes, heap_grown_used, HEAP_WINDOW_BASE, HEAP_WINDOW_BYTES};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use libipc::sys;

const MIB: usize = 1 << 20;

fn check(cond: bool, why: impl FnOnce() -> String) -> Result<(), String> {
    if cond { Ok(()) } else { Err(why()) }
}

fn used() -> Result<u64, String> {
    sys::budget_info().map(|b| b.used_bytes).map_err(|e| format!("budget info: {e}"))
}

/// The slots of the capability table that hold a frame.
fn frame_slots() -> Vec<CapSlot> {
    (0..abi::CSPACE_SLOTS).filter(|&s| sys::cap_identify(s).is_ok_and(|id| id.object_type == ObjectType::Frame)).collect()
}

/// Whether the page at `va` is free: a page of a new frame maps there.
fn page_is_free(env: &mut Env, va: u64) -> Result<bool, String> {
    let f = env.slot();
    sys::create(ObjectType::Frame, f, 1).map_err(|e| format!("probe frame: {e}"))?;
    let r = sys::map(SLOT_SELF, f, va, Rights::READ);
    if r.is_ok() {
        // SAFETY: the probe page was mapped just now and nothing refers to it.
        let _ = unsafe { sys::unmap(SLOT_SELF, va, 1) };
    }
    let _ = sys::cap_delete(f);
    match r {
        Ok(()) => Ok(true),
        Err(Error::AlreadyMapped) => Ok(false),
        Err(e) => Err(format!("probe map at {va:#x}: {e}")),
    }
}

/// The growth leaves no capability behind: the runtime's slot is empty and
/// no slot holds a frame that was not there before.
fn no_capability_left(frames_before: &[CapSlot]) -> Result<(), String> {
    check(sys::cap_identify(SLOT_HEAP) == Err(Error::EmptySlot), || {
        format!("the heap's slot {SLOT_HEAP} holds {:?}", sys::cap_identify(SLOT_HEAP))
    })?;
    let now = frame_slots();
    check(now == frames_before, || format!("frame slots {frames_before:?} before, {now:?} after"))
}

/// Grows by 8 MiB (zone-server's xz dictionary at `xz -6`): charged to the
/// budget, mapped after what the window held, and a `Vec` of all 8 MiB,
/// more than the arena holds, is written and read back.
pub fn the_heap_grows_by_8_mib_and_all_of_it_is_used(_env: &mut Env) -> Result<(), String> {
    const GROWTH: usize = 8 * MIB;
    let (before, grown_before, frames_before) = (used()?, heap_grown_bytes(), frame_slots());
    let refused = Vec::<u8>::new().try_reserve_exact(GROWTH).is_err();
    check(refused, || "an 8 MiB block fitted before the heap grew".into())?;
    grow_heap(GROWTH).map_err(|e| format!("grow by 8 MiB: {e}"))?;
    let after = used()?;
    check(heap_grown_bytes() == grown_before + GROWTH as u64, || {
        format!("grown {grown_before} -> {} bytes", heap_grown_bytes())
    })?;
    check(after >= before + GROWTH as u64, || format!("kernel memory {before} -> {after}: the frames were not charged"))?;
    no_capability_left(&frames_before)?;

    let mut v: Vec<u8> = Vec::new();
    v.try_reserve_exact(GROWTH).map_err(|e| format!("an 8 MiB Vec after growing by 8 MiB: {e}"))?;
    let at = v.as_ptr() as u64;
    let window = HEAP_WINDOW_BASE..HEAP_WINDOW_BASE + heap_grown_bytes();
    check(window.contains(&at) && window.contains(&(at + GROWTH as u64 - 1)), || {
        format!("the Vec at {at:#x} is not in the grown heap {window:#x?}")
    })?;
    check(heap_grown_used() >= GROWTH, || format!("{} bytes of the grown heap in use", heap_grown_used()))?;
    let byte = |i: usize| (i ^ (i >> 8) ^ (i >> 16)) as u8;
    v.extend((0..GROWTH).map(byte));
    let wrong = v.iter().enumerate().filter(|&(i, &b)| b != byte(i)).count();
    check(wrong == 0, || format!("{wrong} of {GROWTH} bytes read back wrong"))?;
    drop(v);
    check(heap_grown_used() == 0, || format!("{} bytes of the grown heap in use after the drop", heap_grown_used()))?;
    log::info!("heap: grew by 8 MiB, {} bytes charged", after - before);
    Ok(())
}

/// A growth the budget cannot pay for is refused with `OutOfBudget` after
/// some of its frames were made and mapped: they go again, with their
/// charge, and nothing stays mapped; the heap grows on afterwards, right
/// where it ended.
pub fn a_growth_past_the_budget_is_refused_and_undone(env: &mut Env) -> Result<(), String> {
    let b = sys::budget_info().map_err(|e| format!("budget info: {e}"))?;
    let left = b.limit_bytes - b.used_bytes;
    // More than is left, by 4 MiB: the first frames (1 MiB each) are made
    // and mapped, a later one is refused.
    let ask = left as usize + 4 * MIB;
    check(left >= 2 * MIB as u64, || format!("only {left} bytes of budget left: no two frames would be made"))?;
    let (grown, frames_before) = (heap_grown_bytes(), frame_slots());
    let end = HEAP_WINDOW_BASE + grown;
    let r = grow_heap(ask);
    check(r == Err(Error::OutOfBudget), || format!("growing by {ask} bytes with {left} left gave {r:?}"))?;
    let after = used()?;
    check(after == b.used_bytes, || format!("kernel memory {} -> {after} bytes after the refused growth", b.used_bytes))?;
    check(heap_grown_bytes() == grown, || format!("grown {grown} -> {} bytes after a refusal", heap_grown_bytes()))?;
    no_capability_left(&frames_before)?;
    for va in [end, end + MIB as u64 - PAGE_SIZE, end + MIB as u64] {
        check(page_is_free(env, va)?, || format!("{va:#x}, in the refused growth, stayed mapped"))?;
    }
    // The heap still works: it allocates, and grows from where it ended.
    let v: Vec<u64> = (0..4096).collect();
    check(v.iter().sum::<u64>() == 4095 * 4096 / 2, || "a Vec after the refusal holds wrong values".into())?;
    grow_heap(64 * 1024).map_err(|e| format!("grow by 64 KiB after the refusal: {e}"))?;
    check(heap_grown_bytes() == grown + 64 * 1024, || format!("grown {grown} -> {}", heap_grown_bytes()))?;
    check(!page_is_free(env, end)?, || format!("{end:#x}, the next growth's first page, is not mapped"))?;
    log::info!("heap: a growth of {ask} bytes with {left} left refused and undone");
    Ok(())
}

/// Nothing, more than can be addressed, more than the window and more than
/// is left of it: each refused, and nothing charged or grown.
pub fn nothing_and_absurd_growths_are_refused(_env: &mut Env) -> Result<(), String> {
    let (before, grown, frames_before) = (used()?, heap_grown_bytes(), frame_slots());
    let left = HEAP_WINDOW_BYTES - grown;
    check(grown > 0, || "the heap has not grown yet: the window-left case needs it".into())?;
    let cases = [
        ("nothing", 0, Error::InvalidArgument),
        ("usize::MAX", usize::MAX, Error::InvalidArgument),
        ("a page short of usize::MAX", usize::MAX - 4095, Error::InvalidArgument),
        ("the window and a byte", HEAP_WINDOW_BYTES as usize + 1, Error::InvalidArgument),
        ("the window", HEAP_WINDOW_BYTES as usize, Error::OutOfMemory),
        ("what is left of the window and a byte", left as usize + 1, Error::OutOfMemory),
    ];
    for (what, bytes, want) in cases {
        let r = grow_heap(bytes);
        check(r == Err(want), || format!("growing by {what} ({bytes:#x}) gave {r:?}, not {want:?}"))?;
    }
    let after = used()?;
    check(after == before, || format!("kernel memory {before} -> {after} bytes after refusals"))?;
    check(heap_grown_bytes() == grown, || format!("grown {grown} -> {} bytes after refusals", heap_grown_bytes()))?;
    no_capability_left(&frames_before)
}

/// Many growths of a page make one heap: after them one block as large as
/// everything grown (less a page) fits, so the window's heap is one range
/// across all growths, with every earlier block given back.
pub fn repeated_growths_make_one_heap(_env: &mut Env) -> Result<(), String> {
    const GROWTHS: u64 = 64;
    let frames_before = frame_slots();
    let start = heap_grown_bytes();
    for i in 0..GROWTHS {
        grow_heap(1).map_err(|e| format!("growth {i} of a page: {e}"))?;
        check(heap_grown_bytes() == start + (i + 1) * PAGE_SIZE, || format!("growth {i}: grown {}", heap_grown_bytes()))?;
    }
    no_capability_left(&frames_before)?;
    let whole = heap_grown_bytes() as usize - PAGE_SIZE as usize;
    let mut v: Vec<u8> = Vec::new();
    v.try_reserve_exact(whole).map_err(|e| format!("a block of {whole} bytes after {GROWTHS} growths: {e}"))?;
    v.resize(whole, 0xa5);
    let last = v[whole - 1];
    check(last == 0xa5, || format!("the last byte reads {last:#x}"))?;
    log::info!("heap: {GROWTHS} growths of a page; one block of {whole} bytes across them");
    Ok(())
}
