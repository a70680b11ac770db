//! Test 16: #DB and INVD, which the kernel intercepts (a guest must not be
//! able to loop the CPU through endless #DB deliveries, nor invalidate the
//! host's caches): the guest sees single-step #DBs exactly as on bare
//! metal, and `invd` just returns.
use core::arch::asm;
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use testguest::protocol::debug::SINGLE_STEPS;

use super::{Outcome, Run};
use crate::trap::TrapFrame;

static ARMED: AtomicBool = AtomicBool::new(false);
static TAKEN: AtomicU32 = AtomicU32::new(0);
/// #DBs whose DR6 had BS (bit 14, single step) set.
static WITH_BS: AtomicU32 = AtomicU32::new(0);

/// The #DB handler while armed: counts, checks DR6.BS, clears DR6 (its
/// status bits are sticky) and stops single-stepping after the last.
pub fn catch_db(frame: &mut TrapFrame) -> bool {
    if !ARMED.load(Ordering::Relaxed) {
        return false;
    }
    let dr6: u64;
    // SAFETY: reading and resetting DR6 in ring 0 has no memory effects.
    unsafe {
        asm!("mov {}, dr6", out(reg) dr6, options(nomem, nostack, preserves_flags));
        asm!("mov dr6, {}", in(reg) 0xffff_0ff0u64, options(nomem, nostack, preserves_flags));
    }
    if dr6 & (1 << 14) != 0 {
        WITH_BS.fetch_add(1, Ordering::Relaxed);
    }
    if TAKEN.fetch_add(1, Ordering::Relaxed) + 1 >= SINGLE_STEPS {
        frame.rflags &= !(1 << 8);
    }
    true
}

pub fn run(r: &mut Run) -> Outcome {
    ARMED.store(true, Ordering::Relaxed);
    // SAFETY: sets TF; the #DB handler (armed) takes each step and clears
    // TF after the last; the nops have no effects.
    unsafe {
        asm!(
            "pushfq", "or qword ptr [rsp], 0x100", "popfq",
            "nop", "nop", "nop", "nop", "nop", "nop", "nop", "nop", "nop", "nop",
            options(nomem)
        )
    };
    ARMED.store(false, Ordering::Relaxed);
    let taken = TAKEN.load(Ordering::Relaxed);
    r.expect_eq("single-step #DBs taken", u64::from(taken), u64::from(SINGLE_STEPS))?;
    let bs = WITH_BS.load(Ordering::Relaxed);
    r.expect_eq("#DBs with DR6.BS set", u64::from(bs), u64::from(SINGLE_STEPS))?;
    // SAFETY: INVD in this guest, whose memory the hypervisor keeps
    // coherent (it must not reach the host's caches).
    unsafe { asm!("invd", options(nomem, nostack, preserves_flags)) };
    r.expect("invd returned", true, format_args!("the guest goes on"))
}
