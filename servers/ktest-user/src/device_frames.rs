//! Security issue finding 14: the kernel reads user memory through its
//! direct map of RAM, so a device frame (a BAR, the HPET) mapped into a
//! process is never read that way: above 4 GiB the direct map has no page
//! there (a fault in ring 0), below it the access would be cached. The
//! kernel refuses such an address as it refuses an unmapped one.

use crate::tests::Env;
use abi::{Error, Rights};
use alcove_rt::start::{SLOT_CONSOLE, SLOT_SELF};
use alloc::format;
use alloc::string::String;
use libipc::sys;

/// `DebugWrite` from a mapped device page is refused with `BadAddress`
/// (it used to read the HPET's registers through the cached direct map
/// and print them), while the same call from RAM still works.
pub fn device_frames_not_read_through_the_direct_map(env: &mut Env) -> Result<(), String> {
    let &(_, _, slot) = env.info().device_memory.first().ok_or_else(|| String::from("no device memory granted"))?;
    let va = env.reserve_va(1);
    sys::map(SLOT_SELF, slot, va, Rights::READ).map_err(|e| format!("map: {e}"))?;
    // SAFETY: `va` is the mapping just made, in memory this test reserved.
    let bytes = unsafe { core::slice::from_raw_parts(va as *const u8, 8) };
    let r = sys::debug_write(SLOT_CONSOLE, bytes);
    // SAFETY: nothing refers to the mapping any more (`bytes` is not used).
    let _ = unsafe { sys::unmap(SLOT_SELF, va, 1) };
    if r != Err(Error::BadAddress) {
        return Err(format!("DebugWrite from a device page gave {r:?}, not BadAddress"));
    }
    // The refusal is about the device page, not DebugWrite: from RAM it works.
    let ok = sys::debug_write(SLOT_CONSOLE, b"ktest: DebugWrite from RAM after the device page was refused\n");
    if ok.is_err() {
        return Err(format!("DebugWrite from RAM gave {ok:?}"));
    }
    Ok(())
}
