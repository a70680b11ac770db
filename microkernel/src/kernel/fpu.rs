//! Processes' FPU/SSE registers, switched lazily. A thread's first x87,
//! MMX or SSE instruction after it got the CPU faults (#NM: CR0.TS is set),
//! and [`claim`] loads its registers from its thread object and clears TS;
//! the next switch away from it ([`park`]: another thread, the idle loop,
//! a guest's registers) saves them there and sets TS again. A thread that
//! never uses the FPU costs a switch one compare, and one that does pays a
//! save and a fault only for the runs in which it used it. A new thread
//! starts from the state after FNINIT with SSE's defaults (MXCSR 0x1F80, all
//! exceptions masked), never from another thread's registers.
//!
//! The invariant: outside a guest's run, CR0.TS is clear on a CPU exactly
//! while `Kernel::fpu_owner[cpu]` names the thread whose registers that CPU
//! holds, and that thread is (or was, until this pass through the kernel)
//! the CPU's current one. Every way to ring 3 with another thread, and the
//! idle loop, parks first (`switch_to`, `exit_kernel`, the IPC fast path),
//! so a thread's registers are never live on one CPU while it runs on
//! another, and a thread freed while its registers were live leaves only an
//! owner that no longer resolves (TS is set without a save).
//!
//! Only the legacy FXSAVE state exists (x87, MMX, XMM0-15, MXCSR): CR4's
//! OSXSAVE stays off, so AVX is unavailable to processes as to guests.

use super::vm::{CLEAN_FPU, FxArea};
use super::{Kernel, Thread, ThreadState};
use crate::arch;
use alloc::boxed::Box;
use kcore::slab::{Id, Slab};

/// A thread's FPU/SSE registers while it is not using the CPU's.
pub struct ThreadFpu {
    /// The FXSAVE image (meaningful once `used`).
    pub area: FxArea,
    /// Whether the thread ever used the FPU: until then its state is
    /// [`CLEAN_FPU`] and nothing is copied at its creation.
    pub used: bool,
}

impl ThreadFpu {
    pub const fn new() -> Self {
        ThreadFpu { area: FxArea([0; 512]), used: false }
    }
}

/// Saves the registers of the thread whose FPU state this CPU holds, if any
/// (and if it still exists), and sets CR0.TS. Called with the big lock
/// held, before this CPU runs another thread, idles or loads a guest's
/// registers.
#[inline(always)]
pub fn park(owner: &mut Option<Id>, threads: &mut Slab<Box<Thread>>) {
    if let Some(o) = owner.take() {
        park_slow(o, threads);
    }
}

#[inline(never)]
fn park_slow(o: Id, threads: &mut Slab<Box<Thread>>) {
    match threads.get_mut(o) {
        Some(th) => arch::cpu::fpu_save(&mut th.fpu.area.0),
        None => arch::cpu::fpu_disable(),
    }
}

/// #NM from ring 3: the current thread of `cpu` used the FPU with CR0.TS
/// set. Loads its registers (the clean state at its first use) and makes
/// it the owner; the faulting instruction runs again when it returns. A
/// thread that is no longer running here (suspended from another CPU as it
/// faulted) gets nothing now: it faults again when it next runs.
pub fn claim(k: &mut Kernel, cpu: usize) {
    let Some(t) = k.current[cpu] else { return };
    let Kernel { threads, fpu_owner, .. } = k;
    if fpu_owner[cpu] == Some(t) {
        // Already loaded (TS clear): nothing here set TS since, so this
        // fault did not come from TS. Cannot happen; changing nothing is
        // the safe answer (the instruction faults again if it persists).
        return;
    }
    park(&mut fpu_owner[cpu], threads);
    let Some(th) = threads.get_mut(t) else { return };
    if th.state != ThreadState::Running {
        return;
    }
    if th.fpu.used {
        arch::cpu::fpu_load(&th.fpu.area.0);
    } else {
        arch::cpu::fpu_load(&CLEAN_FPU.0);
        th.fpu.used = true;
    }
    fpu_owner[cpu] = Some(t);
}
