//! Test 3: instruction emulation on an MMIO page. Every access to the page
//! at 0xD000_0000 exits to the VMM, which must decode the instruction and
//! emulate `protocol::mmio::TestDevice`. Each access is written in asm so
//! the exact instruction form is the one named in its check.
use core::arch::asm;

use testguest::protocol::mmio::{BASE, ID_OFFSET, ID_VALUE, SCRATCH_OFFSET};

use super::{Outcome, Run};

/// The scratch bytes (low 4: "the 32-bit register") and the ID register.
const DATA: u64 = BASE + SCRATCH_OFFSET;
const ID: u64 = BASE + ID_OFFSET;

// SAFETY (for every asm block below): DATA and ID lie in the MMIO test
// page, identity-mapped uncached by boot.s and backed by no guest RAM, so
// the accesses reach only the VMM's device, never memory Rust knows of;
// other operands are registers or the local `src` buffer.

fn store8(v: u8) {
    // SAFETY: see above.
    unsafe { asm!("mov byte ptr [{a}], {v}", a = in(reg) DATA, v = in(reg_byte) v, options(nostack)) }
}
fn store16(v: u16) {
    // SAFETY: see above.
    unsafe { asm!("mov word ptr [{a}], {v:x}", a = in(reg) DATA, v = in(reg) v, options(nostack)) }
}
fn store32(v: u32) {
    // SAFETY: see above.
    unsafe { asm!("mov dword ptr [{a}], {v:e}", a = in(reg) DATA, v = in(reg) v, options(nostack)) }
}
fn store64(v: u64) {
    // SAFETY: see above.
    unsafe { asm!("mov qword ptr [{a}], {v}", a = in(reg) DATA, v = in(reg) v, options(nostack)) }
}
fn load8() -> u64 {
    let v: u8;
    // SAFETY: see above.
    unsafe { asm!("mov {v}, byte ptr [{a}]", a = in(reg) DATA, v = out(reg_byte) v, options(nostack)) }
    v.into()
}
fn load16() -> u64 {
    let v: u16;
    // SAFETY: see above.
    unsafe { asm!("mov {v:x}, word ptr [{a}]", a = in(reg) DATA, v = out(reg) v, options(nostack)) }
    v.into()
}
fn load32_at(addr: u64) -> u64 {
    let v: u32;
    // SAFETY: see above.
    unsafe { asm!("mov {v:e}, dword ptr [{a}]", a = in(reg) addr, v = out(reg) v, options(nostack)) }
    v.into()
}
fn load32() -> u64 {
    load32_at(DATA)
}
fn load64_at(addr: u64) -> u64 {
    let v: u64;
    // SAFETY: see above.
    unsafe { asm!("mov {v}, qword ptr [{a}]", a = in(reg) addr, v = out(reg) v, options(nostack)) }
    v
}

pub fn run(r: &mut Run) -> Outcome {
    store8(0x5A);
    r.expect_eq("mov byte store, mov byte load", load8(), 0x5A)?;
    store16(0xBEEF);
    r.expect_eq("mov word store, mov word load", load16(), 0xBEEF)?;
    store32(0xCAFE_F00D);
    r.expect_eq("mov dword store, mov dword load", load32(), 0xCAFE_F00D)?;
    store64(0x0123_4567_89AB_CDEF);
    r.expect_eq("mov qword store, mov qword load", load64_at(DATA), 0x0123_4567_89AB_CDEF)?;
    r.expect_eq("mov qword load of the ID register (+8)", load64_at(ID), ID_VALUE)?;
    r.expect_eq("mov dword load of the ID register's high half (+12)", load32_at(ID + 4), ID_VALUE >> 32)?;

    store32(0x8899_AABB);
    let (b, w): (u32, u32);
    // SAFETY: see above.
    unsafe {
        asm!("movzx {b:e}, byte ptr [{a}]", "movzx {w:e}, word ptr [{a}]",
             a = in(reg) DATA, b = out(reg) b, w = out(reg) w, options(nostack))
    }
    r.expect_eq("movzx byte load", b.into(), 0xBB)?;
    r.expect_eq("movzx word load", w.into(), 0xAABB)?;

    // SAFETY: see above.
    unsafe { asm!("mov dword ptr [{a}], 0x600DF00D", a = in(reg) DATA, options(nostack)) }
    r.expect_eq("mov dword store of an immediate", load32(), 0x600D_F00D)?;
    // SAFETY: see above.
    unsafe { asm!("mov byte ptr [{a}], 0x7E", a = in(reg) DATA, options(nostack)) }
    r.expect_eq("mov byte store of an immediate", load32(), 0x600D_F07E)?;

    store32(0x0F);
    // SAFETY: see above.
    unsafe { asm!("or dword ptr [{a}], 0xF0", a = in(reg) DATA, options(nostack)) }
    r.expect_eq("or dword [mem], imm", load32(), 0xFF)?;
    // SAFETY: see above.
    unsafe { asm!("and dword ptr [{a}], {m:e}", a = in(reg) DATA, m = in(reg) 0x3Cu32, options(nostack)) }
    r.expect_eq("and dword [mem], reg", load32(), 0x3C)?;

    let (set4, set1): (u8, u8);
    // SAFETY: see above.
    unsafe {
        asm!("test dword ptr [{a}], 0x4", "setnz {s4}", "test dword ptr [{a}], 0x1", "setnz {s1}",
             a = in(reg) DATA, s4 = out(reg_byte) set4, s1 = out(reg_byte) set1, options(nostack))
    }
    r.expect("test dword [mem], imm sets ZF from the device value", set4 == 1 && set1 == 0,
             format_args!("bit 2 set: {set4}, bit 0 set: {set1}"))?;

    store32(0x1111_2222);
    let old: u32;
    // SAFETY: see above.
    unsafe { asm!("xchg dword ptr [{a}], {v:e}", a = in(reg) DATA, v = inout(reg) 0x3333_4444u32 => old, options(nostack)) }
    r.expect_eq("xchg [mem], reg: register gets the old value", old.into(), 0x1111_2222)?;
    r.expect_eq("xchg [mem], reg: memory gets the register", load32(), 0x3333_4444)?;

    // SAFETY: see above; writes 2 dwords at DATA and DATA + 4 (both scratch).
    unsafe {
        asm!("rep stosd", inout("rdi") DATA => _, inout("rcx") 2u64 => _, in("eax") 0xDEAD_BEEFu32, options(nostack))
    }
    r.expect_eq("rep stosd, count 2", load64_at(DATA), 0xDEAD_BEEF_DEAD_BEEF)?;

    let src = *b"ALCV";
    // SAFETY: see above; reads the 4 bytes of `src`, writes scratch bytes 0-3.
    unsafe {
        asm!("rep movsb", inout("rsi") src.as_ptr() => _, inout("rdi") DATA => _, inout("rcx") 4u64 => _,
             options(nostack))
    }
    r.expect_eq("rep movsb from RAM, count 4", load32(), u32::from_le_bytes(src).into())
}
