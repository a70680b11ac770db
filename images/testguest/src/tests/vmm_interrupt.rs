//! Test 12: interrupts injected by the VMM. The guest enables its local
//! APIC, asks for an interrupt through a port write, and halts with
//! interrupts on until the handler for the IPI vector has run; three rounds.
use core::sync::atomic::Ordering;

use testguest::protocol::vmm_interrupt::{REQUEST_PORT, ROUNDS};

use super::{Outcome, Run};
use crate::apic::{self, SVR};
use crate::cpu;
use crate::trap::IPIS;

pub fn run(r: &mut Run) -> Outcome {
    apic::enable();
    r.expect_eq("SVR: enabled", (apic::read(SVR) & 0x100).into(), 0x100)?;
    for round in 0..ROUNDS {
        let before = IPIS.load(Ordering::SeqCst);
        cpu::outb(REQUEST_PORT, round as u8);
        while IPIS.load(Ordering::SeqCst) == before {
            cpu::wait_for_interrupt();
        }
        r.expect_eq("an injected interrupt arrived", (IPIS.load(Ordering::SeqCst) - before).into(), 1)?;
    }
    Ok(())
}
