//! Test 8: an access to guest-physical memory that is neither RAM nor a
//! device. The nested page tables have nothing there, so the access exits;
//! the VMM answers reads with all ones and drops writes, as a PC bus does.
use testguest::protocol::unmapped::{GPA, READ_BYTE, WRITE_VALUE};

use super::{Outcome, Run};

pub fn run(r: &mut Run) -> Outcome {
    // SAFETY: GPA is identity-mapped by boot.s and backed by no RAM, so the
    // accesses here reach only the VMM, never memory Rust knows of.
    let wide = unsafe { core::ptr::read_volatile(GPA as *const u64) };
    r.expect_eq("8-byte read of 0x30000000", wide, u64::from_le_bytes([READ_BYTE; 8]))?;
    // SAFETY: see above.
    let byte = unsafe { core::ptr::read_volatile(GPA as *const u8) };
    r.expect_eq("1-byte read of 0x30000000", byte.into(), READ_BYTE.into())?;
    // SAFETY: see above.
    unsafe { core::ptr::write_volatile(GPA as *mut u32, WRITE_VALUE) };
    r.note(format_args!("wrote {WRITE_VALUE:#x} to {GPA:#x} (the VMM records it)"));
    Ok(())
}
