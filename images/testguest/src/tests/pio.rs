//! Test 2: port I/O exits in every size, and the string forms.
use core::arch::asm;

use testguest::protocol::CONSOLE_PORT;
use testguest::protocol::pio::{INSB_COUNT, OUTSB_STRING, READ_BYTE, READ_PORT, WRITE_PORT, WRITES, read_answer};

use super::{Outcome, Run};
use crate::cpu;

pub fn run(r: &mut Run) -> Outcome {
    for (size, value) in WRITES {
        match size {
            1 => cpu::outb(WRITE_PORT, value as u8),
            2 => cpu::outw(WRITE_PORT, value as u16),
            _ => cpu::outl(WRITE_PORT, value),
        }
        r.note(format_args!("out{} {value:#x} to {WRITE_PORT:#x} (the VMM checks it)", size * 8));
    }

    r.expect_eq("in8 from 0x511", cpu::inb(READ_PORT).into(), read_answer(1).into())?;
    r.expect_eq("in16 from 0x511", cpu::inw(READ_PORT).into(), read_answer(2).into())?;
    r.expect_eq("in32 from 0x511", cpu::inl(READ_PORT).into(), read_answer(4).into())?;

    // The string appears on the console as its own line.
    let (left, end): (u64, u64);
    // SAFETY: reads OUTSB_STRING's 8 bytes; DF is clear (Rust ABI).
    unsafe {
        asm!("rep outsb", in("dx") CONSOLE_PORT, inout("rsi") OUTSB_STRING.as_ptr() => end,
             inout("rcx") OUTSB_STRING.len() as u64 => left, options(nostack, readonly))
    }
    r.expect(
        "rep outsb of \"ALCOVE!\\n\" to 0xE9",
        left == 0 && end == OUTSB_STRING.as_ptr() as u64 + 8,
        format_args!("rcx {left}, rsi advanced {}", end.wrapping_sub(OUTSB_STRING.as_ptr() as u64)),
    )?;

    let mut buf = [0u8; INSB_COUNT];
    let (left, end): (u64, u64);
    // SAFETY: writes INSB_COUNT bytes into `buf`; DF is clear.
    unsafe {
        asm!("rep insb", in("dx") READ_PORT, inout("rdi") buf.as_mut_ptr() => end,
             inout("rcx") INSB_COUNT as u64 => left, options(nostack))
    }
    r.expect(
        "rep insb of 4 bytes from 0x511",
        left == 0 && end == buf.as_ptr() as u64 + INSB_COUNT as u64 && buf.iter().all(|&b| b == READ_BYTE),
        format_args!("{buf:02x?}, rcx {left}"),
    )
}
