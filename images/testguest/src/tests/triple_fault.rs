//! Test 9: a triple fault. With an empty IDT, `int3` cannot be delivered,
//! nor the #GP and #DF that follow: the vCPU shuts down and the VMM must see
//! a shutdown exit (SDM Vol. 3A §6.15, "Interrupt 8").
use core::arch::asm;

use super::{Outcome, Run};
use crate::trap;

pub fn run(r: &mut Run) -> Outcome {
    r.note(format_args!("loading an IDT with limit 0 and executing int3"));
    trap::load_empty_idt();
    // SAFETY: the vCPU is meant to shut down here.
    unsafe { asm!("int3", options(nomem, nostack)) }
    trap::init_idt();
    r.fail("still running after int3 with an empty IDT")
}
