//! Security findings 3, 7 and 13, whose fixes close race windows a few
//! instructions wide: under QEMU's TCG no test hits them at will, so the
//! tests written with the fixes passed without them too. Here the kernel's
//! fault injection (`Sys::FaultInject`, present only with `alcove.inject=on`
//! on the kernel command line, which the harness passes to this suite;
//! `microkernel/src/kernel/inject.rs`) holds each window open at exactly
//! the racy point, and each test checks what a user of the kernel would
//! see: ports reachable by another process, a VM's kernel memory never
//! returned, a stale page read by the kernel on the VMM's behalf.
//!
//! Each test disarms the point on every way out: while `GuestWalk` is
//! armed, every page the kernel frees is poisoned.

use crate::revocation::{cf8_ports, Child, Code};
use crate::tests::Env;
use abi::{
    CapSlot, Error, FaultPhase, FaultPoint, ObjectType, Rights, Sys, VcpuExit, VcpuRun, FAULT_ARM, FAULT_DISARM,
    FAULT_POISON, FAULT_RELEASE, FAULT_STATUS, LOAD_GPRS, LOAD_SYSTEM, PAGE_SIZE,
};
use alcove_rt::start::{SLOT_CONSOLE, SLOT_SELF};
use alloc::format;
use alloc::string::String;
use libipc::sys;

const RW: Rights = Rights(Rights::READ.0 | Rights::WRITE.0);
const RWX: Rights = Rights(Rights::READ.0 | Rights::WRITE.0 | Rights::EXECUTE.0);

fn check(cond: bool, why: impl FnOnce() -> String) -> Result<(), String> {
    if cond { Ok(()) } else { Err(why()) }
}

fn fault(op: u64, point: u64, ns: u64) -> Result<(u64, FaultPhase), String> {
    sys::fault_inject(SLOT_CONSOLE, op, point, ns).map_err(|e| match e {
        Error::NoSyscall => {
            String::from("the kernel has no fault injection: boot it with alcove.inject=on (the harness does for this suite)")
        }
        e => format!("fault injection (op {op}): {e}"),
    })
}

fn arm(p: FaultPoint, pause_ns: u64) -> Result<(), String> {
    let (point, phase) = fault(FAULT_ARM, p as u64, pause_ns)?;
    check(point == p as u64 && phase == FaultPhase::Armed, || format!("armed {p:?}, the kernel says point {point}, {phase:?}"))
}

fn phase() -> Result<FaultPhase, String> {
    fault(FAULT_STATUS, 0, 0).map(|(_, phase)| phase)
}

fn disarm() {
    let _ = sys::fault_inject(SLOT_CONSOLE, FAULT_DISARM, 0, 0);
}

/// Polls until the armed point is reached (its phase leaves `Armed`), the
/// vCPU thread's run ends first (its `done` notification, `1 << exit`),
/// or `ns` pass; returns the phase then, or why the run ended.
fn wait_until_reached(done: CapSlot, ns: u64) -> Result<FaultPhase, String> {
    let start = sys::clock_ns().map_err(|e| format!("clock: {e}"))?;
    loop {
        let p = phase()?;
        if p != FaultPhase::Armed {
            return Ok(p);
        }
        // Sleeps between looks: a tight loop of system calls would keep
        // the kernel lock from the vCPU's CPU.
        match sys::wait(done, 1_000_000) {
            Ok(bits) => {
                return Err(format!("the vCPU's run ended (signal {bits:#x}: {}) before the armed point was reached", exit_name(bits)));
            }
            Err(Error::Timeout) => {}
            Err(e) => return Err(format!("wait for the vCPU thread: {e}")),
        }
        let now = sys::clock_ns().map_err(|e| format!("clock: {e}"))?;
        if now.saturating_sub(start) > ns {
            return Ok(p);
        }
    }
}

/// What `run_to_exit`'s signal says.
fn exit_name(bits: u64) -> String {
    if bits & 1 << 30 != 0 {
        return String::from("VcpuRun failed");
    }
    match VcpuExit::from_u32(bits.trailing_zeros()) {
        Some(e) => format!("{e:?} exit"),
        None => format!("exit {}", bits.trailing_zeros()),
    }
}

/// Only a holder of the console capability with MANAGE (the right to end
/// the machine) reaches the fault injection: a copy with WRITE only is
/// refused, and so is a process holding nothing; neither arms anything.
pub fn fault_injection_needs_the_right_to_end_the_machine(env: &mut Env) -> Result<(), String> {
    let weak = env.slot();
    sys::cap_copy(SLOT_CONSOLE, weak, Rights::WRITE, 0).map_err(|e| format!("copy the console capability: {e}"))?;
    let r = sys::fault_inject(weak, FAULT_ARM, FaultPoint::IoPortEnableReturn as u64, 0);
    let _ = sys::cap_delete(weak);
    check(r == Err(Error::NoRights), || format!("arming through a console capability without MANAGE gave {r:?}"))?;
    // A process with nothing: its slot 5 is empty, then holds the weak copy.
    const SLOT: CapSlot = 5;
    let code = Code::new().sys(Sys::FaultInject, SLOT, abi::FAULT_ARM as u32).or_exit().exit(0);
    for granted in [false, true] {
        let child = Child::new(env, &code, 0)?;
        let got = (|| -> Result<_, String> {
            if granted {
                let w = env.slot();
                sys::cap_copy(SLOT_CONSOLE, w, Rights::WRITE, 0).map_err(|e| format!("copy: {e}"))?;
                let g = child.grant(w, SLOT, Rights::WRITE);
                let _ = sys::cap_delete(w);
                g?;
            }
            child.start()?;
            child.outcome(2_000_000_000)
        })();
        child.remove();
        let refusal = if granted { Error::NoRights } else { Error::EmptySlot };
        let want = 100 + refusal as u64;
        let got = got?;
        check(got == (abi::ProcessState::Exited, want), || {
            format!("a process {} asked to arm the fault injection and ended {got:?}, expected to exit {want} (refused)", if granted { "with a WRITE-only console capability" } else { "with no capabilities" })
        })?;
    }
    let p = phase()?;
    check(p == FaultPhase::Idle, || format!("after the refused attempts the injection stands {p:?}"))
}

/// Finding 3: `IoPortEnable` wrote the TSS's I/O bitmap without recording
/// whose it was, so a switch from that very return to a process without
/// ports (a timer tick or a wake-up during the call) left them open to
/// it: 0xCF8/0xCFC, PCI configuration, DMA. A driver wakes a prober that
/// then waits behind it on our CPU, and enables 0xCF8; the injected
/// reschedule on the return hands the CPU to the prober, which reads
/// 0xCF8: it must die of #GP.
pub fn io_port_permissions_leak_to_the_next_process(env: &mut Env) -> Result<(), String> {
    const PORTS: CapSlot = 5;
    const GO: CapSlot = 6;
    let src = cf8_ports(env)?;
    let prober_code = Code::new().sys_forever(Sys::Wait, GO).or_exit().read_cf8(false).exit(0);
    let driver_code = Code::new().sys(Sys::Signal, GO, 1).or_exit().sys(Sys::IoPortEnable, PORTS, 0).or_exit().exit(0);
    // Both on our CPU (the manifest pins us to CPU 0), below our priority.
    let prober = Child::new(env, &prober_code, 0)?;
    let driver = match Child::new(env, &driver_code, 0) {
        Ok(d) => d,
        Err(e) => {
            prober.remove();
            return Err(e);
        }
    };
    let (sub, go, idle) = (env.slot(), env.slot(), env.slot());
    let run = (|| -> Result<_, String> {
        sys::create_from(ObjectType::IoPorts, sub, 0xcf8 | 8 << 16, src).map_err(|e| format!("io ports: {e}"))?;
        sys::create(ObjectType::Notification, go, 0).map_err(|e| format!("notification: {e}"))?;
        sys::create(ObjectType::Notification, idle, 0).map_err(|e| format!("notification: {e}"))?;
        driver.grant(sub, PORTS, Rights::MANAGE)?;
        driver.grant(go, GO, RW)?;
        prober.grant(go, GO, RW)?;
        prober.start()?;
        // It runs when we wait, and blocks in its own wait.
        let _ = sys::wait(idle, 20_000_000);
        arm(FaultPoint::IoPortEnableReturn, 0)?;
        driver.start()?;
        let p = prober.outcome(2_000_000_000)?;
        let d = driver.outcome(2_000_000_000)?;
        Ok((p, d, phase()?))
    })();
    disarm();
    prober.remove();
    driver.remove();
    for s in [sub, go, idle] {
        let _ = sys::cap_delete(s);
    }
    let (p, d, fired) = run?;
    check(fired == FaultPhase::Done, || format!("the reschedule on IoPortEnable's return was never injected ({fired:?})"))?;
    check(d == (abi::ProcessState::Exited, 0), || format!("the driver given 0xCF8 ended {d:?}, expected to enable its ports and exit 0"))?;
    check(p == (abi::ProcessState::Faulted, 13), || {
        format!(
            "a process without ports that got the CPU on the return from another's IoPortEnable ended {p:?}, expected #GP (Faulted 13): it read 0xCF8 through the other's I/O bitmap"
        )
    })
}

// ---- a one-vCPU VM for findings 7 and 13 ----------------------------------

/// Runs `vcpu` until an exit other than `Interrupted`, signals `done` (the
/// low half of `done_me`) with `1 << exit reason` (`1 << 30` if the run
/// failed), and suspends itself (the high half is its own thread's slot)
/// until it is ended. It does not spin in `Yield`: under `-icount`, QEMU
/// runs the CPUs in turn, and a CPU looping on system calls mostly holds
/// the kernel lock whenever the others get their turn, starving them.
extern "C" fn run_to_exit(_ipc: u64, vcpu: u64, done_me: u64) -> ! {
    let (done, me) = (done_me as u32 as u64, done_me >> 32);
    let bits = loop {
        // SAFETY: the run page is this thread's alone while it runs; the
        // test's main thread reads it only after `done` is signalled.
        match unsafe { sys::vcpu_run(vcpu as CapSlot) } {
            Ok(exit) if exit == VcpuExit::Interrupted as u64 => continue,
            Ok(exit) => break 1u64 << (exit & 31),
            Err(_) => break 1 << 30,
        }
    };
    let _ = sys::signal(done as CapSlot, bits);
    loop {
        let _ = sys::thread_suspend(me as CapSlot);
    }
}

/// A guest with one page of code at `gpa`, one vCPU starting there (real
/// mode), and a thread on CPU 1 to run it (not yet resumed).
struct TinyVm {
    guest: CapSlot,
    /// The code page's capability, until a test lets the guest mapping
    /// hold its last reference.
    ram: Option<CapSlot>,
    run_frame: CapSlot,
    run_va: u64,
    vcpu: Option<CapSlot>,
    thread: CapSlot,
    done: CapSlot,
    stack: (CapSlot, u64),
}

const STACK_PAGES: u64 = 2;

impl TinyVm {
    fn new(env: &mut Env, code: &[u8], gpa: u64, stack: (CapSlot, u64)) -> Result<TinyVm, String> {
        let mut vm = TinyVm {
            guest: env.slot(),
            ram: Some(env.slot()),
            run_frame: env.slot(),
            run_va: env.reserve_va(1),
            vcpu: Some(env.slot()),
            thread: env.slot(),
            done: env.slot(),
            stack,
        };
        if let Err(e) = vm.build(env, code, gpa) {
            vm.remove();
            return Err(e);
        }
        Ok(vm)
    }

    fn build(&mut self, env: &mut Env, code: &[u8], gpa: u64) -> Result<(), String> {
        let ram = self.ram.expect("new");
        let vcpu = self.vcpu.expect("new");
        sys::create(ObjectType::Guest, self.guest, 0).map_err(|e| format!("guest: {e}"))?;
        sys::create(ObjectType::Frame, ram, 1).map_err(|e| format!("guest RAM: {e}"))?;
        let va = env.reserve_va(1);
        sys::map(SLOT_SELF, ram, va, RW).map_err(|e| format!("map guest RAM: {e}"))?;
        // SAFETY: a new page of ours, mapped just above for this alone.
        unsafe { alcove_rt::poke(va, code) };
        // SAFETY: nothing refers to this mapping any more.
        unsafe { sys::unmap(SLOT_SELF, va, 1) }.map_err(|e| format!("unmap guest RAM: {e}"))?;
        sys::map(self.guest, ram, gpa, RWX).map_err(|e| format!("map RAM into the guest: {e}"))?;
        sys::create(ObjectType::Frame, self.run_frame, 1).map_err(|e| format!("run page: {e}"))?;
        sys::map(SLOT_SELF, self.run_frame, self.run_va, RW).map_err(|e| format!("map run page: {e}"))?;
        sys::create_from(ObjectType::Vcpu, vcpu, u64::from(self.guest), self.run_frame).map_err(|e| format!("vcpu: {e}"))?;
        {
            // SAFETY: the run page just mapped; its vCPU has not run yet.
            let run = unsafe { alcove_rt::user_mut::<VcpuRun>(self.run_va) };
            run.set_real_mode_at(gpa);
            run.load_state = LOAD_GPRS | LOAD_SYSTEM;
        }
        sys::create(ObjectType::Notification, self.done, 0).map_err(|e| format!("notification: {e}"))?;
        sys::create(ObjectType::Thread, self.thread, u64::from(SLOT_SELF)).map_err(|e| format!("thread: {e}"))?;
        let top = self.stack.1 + STACK_PAGES * PAGE_SIZE - 8;
        // SAFETY: the stack is this thread's alone; it makes only
        // register-only system calls (no IPC buffer).
        unsafe { sys::thread_configure(self.thread, run_to_exit as *const () as u64, top, 0, u64::from(vcpu), u64::from(self.done) | u64::from(self.thread) << 32) }
            .map_err(|e| format!("configure: {e}"))?;
        sys::thread_set_priority(self.thread, 50, Some(1)).map_err(|e| format!("pin to CPU 1: {e}"))
    }

    /// The exit record of the run (after `done`).
    fn exit_record(&self) -> (u32, u64, [u8; 15], u8) {
        // SAFETY: the vCPU thread has signalled `done` and runs no more
        // (or has been ended): nothing writes the run page now.
        let run = unsafe { alcove_rt::user_mut::<VcpuRun>(self.run_va) };
        (run.exit_reason, run.gpa, run.insn, run.insn_len)
    }

    /// Ends the thread, then frees the VM (not its stack).
    fn remove(self) {
        let _ = sys::cap_delete(self.thread);
        if let Some(v) = self.vcpu {
            let _ = sys::cap_delete(v);
        }
        // SAFETY: the vCPU thread is gone; nothing uses the run page.
        let _ = unsafe { sys::unmap(SLOT_SELF, self.run_va, 1) };
        let _ = sys::cap_delete(self.run_frame);
        if let Some(r) = self.ram {
            let _ = sys::cap_delete(r);
        }
        let _ = sys::cap_delete(self.guest);
        let _ = sys::cap_delete(self.done);
    }
}

/// Finding 7: a vCPU whose last capability went while it ran, in a run
/// that ended in a HLT the kernel sleeps through, was never freed (the
/// `doomed` check was skipped on that return): its memory and the guest's
/// pinned for good. The vCPU's thread is held between the HLT exit and
/// the kernel lock while we delete the vCPU's capability; once everything
/// of the VM is deleted, our kernel memory must be back where it was.
pub fn vcpu_leaked_when_deleted_during_a_run_ending_in_hlt(env: &mut Env) -> Result<(), String> {
    // Real mode at 0x1000: `sti; hlt; jmp hlt` (the HLT sleeps: interrupts on).
    const CODE: [u8; 4] = [0xfb, 0xf4, 0xeb, 0xfd];
    let stack = env.frame(STACK_PAGES, RW)?;
    let before = sys::budget_info().map_err(|e| format!("budget: {e}"))?.used_bytes;
    let mut vm = match TinyVm::new(env, &CODE, 0x1000, stack) {
        Ok(vm) => vm,
        Err(e) => {
            drop_stack(stack);
            return Err(e);
        }
    };
    let run = (|| -> Result<_, String> {
        arm(FaultPoint::HaltExit, 3_000_000_000)?;
        sys::thread_resume(vm.thread).map_err(|e| format!("resume: {e}"))?;
        let reached = wait_until_reached(vm.done, 3_000_000_000)?;
        check(reached == FaultPhase::Paused, || format!("the vCPU never came back from its guest's HLT ({reached:?})"))?;
        // Its last capability goes while its thread is between the HLT
        // exit and the kernel lock.
        sys::cap_delete(vm.vcpu.take().expect("new")).map_err(|e| format!("delete the vcpu: {e}"))?;
        fault(FAULT_RELEASE, 0, 0)?;
        Ok(sys::wait(vm.done, 1_000_000_000))
    })();
    disarm();
    vm.remove();
    // Measured with the stack still there, as `before` was.
    let after = sys::budget_info().map_err(|e| format!("budget: {e}"));
    drop_stack(stack);
    let returned = run?;
    let after = after?.used_bytes;
    check(after == before, || {
        format!(
            "{} bytes of kernel memory still held after the VM was deleted: the vCPU whose last capability went while its run ended in a HLT was never freed (its thread's run {})",
            after as i64 - before as i64,
            match returned {
                Ok(bits) => format!("returned, signal {bits:#x}"),
                Err(Error::Timeout) => String::from("never returned: it slept through the HLT"),
                Err(e) => format!("could not be waited for: {e}"),
            }
        )
    })
}

fn drop_stack((slot, va): (CapSlot, u64)) {
    // SAFETY: the thread that used the stack has been ended.
    let _ = unsafe { sys::unmap(SLOT_SELF, va, STACK_PAGES) };
    let _ = sys::cap_delete(slot);
}

/// Finding 13: the kernel walked a guest's nested page tables outside the
/// guest (the instruction bytes of an MMIO exit, the APIC page) without
/// announcing it, so `guest_unmap` on another CPU did not wait for the
/// walk and freed the pages under it. The guest's only code page is held
/// by its guest mapping alone; its `mov [0x5000], al` faults to the VMM,
/// and while the kernel's fetch of those bytes is held between the
/// nested translation and the read we unmap the page (which frees it;
/// freed pages are poisoned meanwhile). The exit record must carry the
/// instruction the guest ran, never bytes of a freed page.
pub fn nested_table_walks_race_guest_unmap(env: &mut Env) -> Result<(), String> {
    // Real mode at 0x1000: `mov [0x5000], al` (0x5000 is not mapped: MMIO); `jmp $`.
    const CODE: [u8; 5] = [0xa2, 0x00, 0x50, 0xeb, 0xfe];
    let stack = env.frame(STACK_PAGES, RW)?;
    let mut vm = match TinyVm::new(env, &CODE, 0x1000, stack) {
        Ok(vm) => vm,
        Err(e) => {
            drop_stack(stack);
            return Err(e);
        }
    };
    let run = (|| -> Result<_, String> {
        // The guest mapping holds the code page's last reference.
        sys::cap_delete(vm.ram.take().expect("new")).map_err(|e| format!("delete the RAM capability: {e}"))?;
        arm(FaultPoint::GuestWalk, 3_000_000_000)?;
        sys::thread_resume(vm.thread).map_err(|e| format!("resume: {e}"))?;
        let reached = wait_until_reached(vm.done, 3_000_000_000)?;
        check(reached == FaultPhase::Paused, || format!("the kernel never fetched the guest's MMIO instruction ({reached:?})"))?;
        // SAFETY: guest memory, not ours.
        unsafe { sys::unmap(vm.guest, 0x1000, 1) }.map_err(|e| format!("unmap the guest's code page: {e}"))?;
        fault(FAULT_RELEASE, 0, 0)?;
        let bits = sys::wait(vm.done, 2_000_000_000).map_err(|e| format!("the vCPU's run did not end: {e}"))?;
        Ok((bits, vm.exit_record()))
    })();
    disarm();
    vm.remove();
    drop_stack(stack);
    let (bits, (reason, gpa, insn, len)) = run?;
    check(bits == 1 << VcpuExit::Mmio as u64 && reason == VcpuExit::Mmio as u32 && gpa == 0x5000, || {
        format!("the run ended with signal {bits:#x}, exit {reason} at {gpa:#x}; expected an MMIO exit at 0x5000")
    })?;
    let shown = &insn[..usize::from(len.min(15))];
    check(len >= 3 && insn[..3] == CODE[..3], || {
        let poisoned = shown.iter().filter(|&&b| b == FAULT_POISON).count();
        format!(
            "the MMIO exit carried instruction bytes {shown:02x?}, not the guest's a2 00 50: the kernel read the code page after guest_unmap freed it{}",
            if poisoned > 0 { format!(" ({poisoned} poison bytes {FAULT_POISON:#x}: a freed page)") } else { String::new() }
        )
    })
}
