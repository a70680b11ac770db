//! Test 10: a hostile guest, for robustness of the host. It fills its RAM
//! above 2 MiB, writes every I/O port, reads and writes a few hundred MSRs,
//! then jumps into garbage with no IDT and triple-faults. It never reports
//! a result; the host test checks that the host is fine afterwards.
use core::arch::asm;

use testguest::protocol::scribble::{
    GARBAGE_GPA, PORT_VALUE, RAM_LIMIT, RAM_START, msr_numbers, pattern, port_is_skipped,
};

use super::{Outcome, Run};
use crate::{cpu, trap};

const PAGE_BYTES: u64 = 4096;

pub fn run(r: &mut Run, ram_bytes: u64) -> Outcome {
    let end = ram_bytes.min(RAM_LIMIT) & !(PAGE_BYTES - 1);
    let mut page = RAM_START;
    while page < end {
        // SAFETY: [RAM_START, end) is identity-mapped guest RAM above this
        // guest's image, stacks and page tables (all below 0x9F000), so no
        // Rust object lives there. DF is clear.
        unsafe {
            asm!("rep stosq", inout("rdi") page => _, inout("rcx") PAGE_BYTES / 8 => _, in("rax") pattern(page),
                 options(nostack))
        }
        page += PAGE_BYTES;
    }
    r.note(format_args!("filled RAM {RAM_START:#x}..{end:#x} with the pattern"));

    let mut ports = 0u32;
    for port in 0..=u16::MAX {
        if !port_is_skipped(port) {
            cpu::outb(port, PORT_VALUE);
            ports += 1;
        }
    }
    r.note(format_args!("wrote {PORT_VALUE:#x} to {ports} ports"));

    let (mut msrs, mut read_faults, mut write_faults) = (0u32, 0u32, 0u32);
    for msr in msr_numbers() {
        let value = cpu::rdmsr(msr).unwrap_or_else(|_| {
            read_faults += 1;
            0
        });
        // SAFETY: a value just read is written back unchanged; where the read
        // faulted, 0 goes to an MSR that holds no state this guest uses. The
        // guest dies right after anyway.
        if unsafe { cpu::wrmsr(msr, value) }.is_err() {
            write_faults += 1;
        }
        msrs += 1;
    }
    r.note(format_args!("{msrs} MSRs: {read_faults} rdmsr and {write_faults} wrmsr raised #GP (caught)"));

    r.note(format_args!("jumping to 0xFF bytes at {GARBAGE_GPA:#x} with an empty IDT"));
    // SAFETY: the garbage page is RAM below 2 MiB above the image (linker.ld).
    unsafe { core::ptr::write_bytes(GARBAGE_GPA as *mut u8, 0xFF, PAGE_BYTES as usize) };
    trap::load_empty_idt();
    // SAFETY: the point of the test: the vCPU executes garbage and shuts down.
    unsafe { asm!("jmp {}", in(reg) GARBAGE_GPA, options(noreturn)) }
}
