//! Security findings 3, 7 and 13, whose fixes close race windows a few
//! instructions wide: under QEMU's TCG no test hits them at will, so the
//! tests written with the fixes passed without them too. Only finding 3's
//! test is here so far: the kernel's points for 7 (`HaltExit`) and 13
//! (`GuestWalk`) exist, but their tests never reached the armed point on
//! 4 CPUs and were taken out until they do (branch `inject`, 3d72f3e). Here the kernel's
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
use abi::{CapSlot, Error, FaultPhase, FaultPoint, ObjectType, Rights, Sys, FAULT_ARM, FAULT_DISARM, FAULT_STATUS};
use alcove_rt::start::SLOT_CONSOLE;
use alloc::format;
use alloc::string::String;
use libipc::sys;

const RW: Rights = Rights(Rights::READ.0 | Rights::WRITE.0);

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
