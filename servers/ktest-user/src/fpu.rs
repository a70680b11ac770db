//! Processes' FPU/SSE registers (`microkernel/src/kernel/fpu.rs`): each
//! thread has its own, loaded at its first use after it got the CPU and
//! saved when another thread gets it. Each case would fail if a switch
//! skipped the save or the load: two threads of one process trading the
//! CPU through IPC (the fast path, or the general path in the suite's
//! `fastpath=off` run) each find their registers as they left them; a
//! thread of another process that runs after one left a secret in its
//! registers finds the clean state; a thread suspended on one CPU with live
//! registers and resumed on another finds them there.

use abi::{CapSlot, MsgInfo, ObjectType, Sys, FOREVER};
use alloc::format;
use alloc::string::String;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use libipc::sys;

use crate::fastpath::{spawn, spawn_on};
use crate::tests::Env;

fn check(cond: bool, why: impl FnOnce() -> String) -> Result<(), String> {
    if cond { Ok(()) } else { Err(why()) }
}

/// XMM0-15 and MXCSR, as the test's assembly loads and stores them.
#[repr(C, align(16))]
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Xmm {
    x: [u128; 16],
    mxcsr: u32,
    pad: [u32; 3],
}

impl Xmm {
    const ZERO: Xmm = Xmm { x: [0; 16], mxcsr: 0, pad: [0; 3] };

    /// Registers no other seed gives: 256 bits from a xorshift per
    /// register pair, and MXCSR's defaults (all exceptions masked) with the
    /// rounding control and flush-to-zero bits (13-15) from the seed.
    fn pattern(seed: u64) -> Xmm {
        let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        let mut next = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        let mut x = [0u128; 16];
        for v in &mut x {
            *v = (u128::from(next()) << 64) | u128::from(next());
        }
        Xmm { x, mxcsr: 0x1f80 | (((seed as u32) & 7) << 13), pad: [0; 3] }
    }

    /// The first register that differs from `want`, for the message.
    fn diff(&self, want: &Xmm) -> String {
        match (0..16).find(|&i| self.x[i] != want.x[i]) {
            Some(i) => format!("xmm{i} {:#x}, expected {:#x}", self.x[i], want.x[i]),
            None => format!("MXCSR {:#x}, expected {:#x}", self.mxcsr, want.mxcsr),
        }
    }
}

/// Loads `regs` into XMM0-15 and MXCSR, makes system call `n` with `args`
/// (abi's registers), and stores XMM0-15 and MXCSR as they are after it
/// into `out`: nothing but the kernel runs between the load and the store.
///
/// # Safety
///
/// As `libipc::sys::raw`: the call may only touch memory the caller made
/// valid for it.
#[target_feature(enable = "sse2")]
unsafe fn xmm_syscall(regs: &Xmm, out: &mut Xmm, n: u64, args: [u64; 6]) -> (u64, [u64; 6]) {
    let [mut a0, mut a1, mut a2, mut a3, mut a4, mut a5] = args;
    let status: u64;
    // SAFETY: `regs` and `out` are 16-byte aligned (`Xmm` is align(16)) and
    // 272 bytes long; the XMM registers and MXCSR are not declared: this
    // program is built soft-float (x86_64-unknown-none), so its code never
    // holds a value there (LLVM cannot even allocate them as operands); the
    // system call's registers are abi's (rcx and r11 clobbered), its memory
    // the caller's obligation.
    unsafe {
        core::arch::asm!(
            "ldmxcsr [{i} + 256]",
            "movdqa xmm0, [{i} + 0]",
            "movdqa xmm1, [{i} + 16]",
            "movdqa xmm2, [{i} + 32]",
            "movdqa xmm3, [{i} + 48]",
            "movdqa xmm4, [{i} + 64]",
            "movdqa xmm5, [{i} + 80]",
            "movdqa xmm6, [{i} + 96]",
            "movdqa xmm7, [{i} + 112]",
            "movdqa xmm8, [{i} + 128]",
            "movdqa xmm9, [{i} + 144]",
            "movdqa xmm10, [{i} + 160]",
            "movdqa xmm11, [{i} + 176]",
            "movdqa xmm12, [{i} + 192]",
            "movdqa xmm13, [{i} + 208]",
            "movdqa xmm14, [{i} + 224]",
            "movdqa xmm15, [{i} + 240]",
            "syscall",
            "movdqa [{o} + 0], xmm0",
            "movdqa [{o} + 16], xmm1",
            "movdqa [{o} + 32], xmm2",
            "movdqa [{o} + 48], xmm3",
            "movdqa [{o} + 64], xmm4",
            "movdqa [{o} + 80], xmm5",
            "movdqa [{o} + 96], xmm6",
            "movdqa [{o} + 112], xmm7",
            "movdqa [{o} + 128], xmm8",
            "movdqa [{o} + 144], xmm9",
            "movdqa [{o} + 160], xmm10",
            "movdqa [{o} + 176], xmm11",
            "movdqa [{o} + 192], xmm12",
            "movdqa [{o} + 208], xmm13",
            "movdqa [{o} + 224], xmm14",
            "movdqa [{o} + 240], xmm15",
            "stmxcsr [{o} + 256]",
            i = in(reg) regs,
            o = in(reg) out,
            inlateout("rax") n => status,
            inout("rdi") a0,
            inout("rsi") a1,
            inout("rdx") a2,
            inout("r10") a3,
            inout("r8") a4,
            inout("r9") a5,
            // Not `lateout`: an input (`i`, `o`) must not be given either.
            out("rcx") _,
            out("r11") _,
            options(nostack),
        );
    }
    (status, [a0, a1, a2, a3, a4, a5])
}

/// Loads `regs` into XMM0-15 and MXCSR, signals notification `ready`
/// (a system call that does not give up the CPU), spins until `*go` is
/// set, and stores the registers into `out`: a thread with live registers
/// that can be suspended and moved meanwhile.
#[target_feature(enable = "sse2")]
unsafe fn xmm_hold(regs: &Xmm, out: &mut Xmm, ready: CapSlot, go: &AtomicBool) -> u64 {
    let status: u64;
    // SAFETY: as `xmm_syscall`'s; `go` is a live atomic, read one byte at a
    // time; Signal touches no memory.
    unsafe {
        core::arch::asm!(
            "ldmxcsr [{i} + 256]",
            "movdqa xmm0, [{i} + 0]",
            "movdqa xmm1, [{i} + 16]",
            "movdqa xmm2, [{i} + 32]",
            "movdqa xmm3, [{i} + 48]",
            "movdqa xmm4, [{i} + 64]",
            "movdqa xmm5, [{i} + 80]",
            "movdqa xmm6, [{i} + 96]",
            "movdqa xmm7, [{i} + 112]",
            "movdqa xmm8, [{i} + 128]",
            "movdqa xmm9, [{i} + 144]",
            "movdqa xmm10, [{i} + 160]",
            "movdqa xmm11, [{i} + 176]",
            "movdqa xmm12, [{i} + 192]",
            "movdqa xmm13, [{i} + 208]",
            "movdqa xmm14, [{i} + 224]",
            "movdqa xmm15, [{i} + 240]",
            "syscall",
            "2:",
            "pause",
            "cmp byte ptr [{g}], 0",
            "je 2b",
            "movdqa [{o} + 0], xmm0",
            "movdqa [{o} + 16], xmm1",
            "movdqa [{o} + 32], xmm2",
            "movdqa [{o} + 48], xmm3",
            "movdqa [{o} + 64], xmm4",
            "movdqa [{o} + 80], xmm5",
            "movdqa [{o} + 96], xmm6",
            "movdqa [{o} + 112], xmm7",
            "movdqa [{o} + 128], xmm8",
            "movdqa [{o} + 144], xmm9",
            "movdqa [{o} + 160], xmm10",
            "movdqa [{o} + 176], xmm11",
            "movdqa [{o} + 192], xmm12",
            "movdqa [{o} + 208], xmm13",
            "movdqa [{o} + 224], xmm14",
            "movdqa [{o} + 240], xmm15",
            "stmxcsr [{o} + 256]",
            i = in(reg) regs,
            o = in(reg) out,
            g = in(reg) go.as_ptr(),
            inlateout("rax") Sys::Signal as u64 => status,
            // Results come back in rdi, rsi, rdx, r10, r8 and r9.
            inout("rdi") u64::from(ready) => _,
            inout("rsi") 1u64 => _,
            out("rdx") _,
            out("r10") _,
            out("r8") _,
            out("r9") _,
            out("rcx") _,
            out("r11") _,
            options(nostack),
        );
    }
    status
}

/// Loads `regs` and returns: they stay in the registers (no code of this
/// soft-float program uses them) for what runs next.
#[target_feature(enable = "sse2")]
unsafe fn xmm_load(regs: &Xmm) {
    // SAFETY: as `xmm_syscall`'s.
    unsafe {
        core::arch::asm!(
            "ldmxcsr [{i} + 256]",
            "movdqa xmm0, [{i} + 0]",
            "movdqa xmm1, [{i} + 16]",
            "movdqa xmm2, [{i} + 32]",
            "movdqa xmm3, [{i} + 48]",
            "movdqa xmm4, [{i} + 64]",
            "movdqa xmm5, [{i} + 80]",
            "movdqa xmm6, [{i} + 96]",
            "movdqa xmm7, [{i} + 112]",
            "movdqa xmm8, [{i} + 128]",
            "movdqa xmm9, [{i} + 144]",
            "movdqa xmm10, [{i} + 160]",
            "movdqa xmm11, [{i} + 176]",
            "movdqa xmm12, [{i} + 192]",
            "movdqa xmm13, [{i} + 208]",
            "movdqa xmm14, [{i} + 224]",
            "movdqa xmm15, [{i} + 240]",
            i = in(reg) regs,
            options(nostack),
        );
    }
}

/// Stores XMM0-15 and MXCSR as they are into `out`.
#[target_feature(enable = "sse2")]
unsafe fn xmm_store(out: &mut Xmm) {
    // SAFETY: `out` is 16-byte aligned and 272 bytes long.
    unsafe {
        core::arch::asm!(
            "movdqa [{o} + 0], xmm0",
            "movdqa [{o} + 16], xmm1",
            "movdqa [{o} + 32], xmm2",
            "movdqa [{o} + 48], xmm3",
            "movdqa [{o} + 64], xmm4",
            "movdqa [{o} + 80], xmm5",
            "movdqa [{o} + 96], xmm6",
            "movdqa [{o} + 112], xmm7",
            "movdqa [{o} + 128], xmm8",
            "movdqa [{o} + 144], xmm9",
            "movdqa [{o} + 160], xmm10",
            "movdqa [{o} + 176], xmm11",
            "movdqa [{o} + 192], xmm12",
            "movdqa [{o} + 208], xmm13",
            "movdqa [{o} + 224], xmm14",
            "movdqa [{o} + 240], xmm15",
            "stmxcsr [{o} + 256]",
            o = in(reg) out,
            options(nostack),
        );
    }
}

const LABEL_FPU: u32 = 12;
/// Rounds of the IPC case.
const ROUNDS: u64 = 200;
/// The server's first wrong look at its registers (round + 1; 0: none).
static SERVER_BAD: AtomicU64 = AtomicU64::new(0);
/// What it saw there, for the message.
static SERVER_SAW: AtomicU64 = AtomicU64::new(0);

/// Receives on `endpoint` with its own registers loaded; each time it finds
/// them as it left them, loads the next pattern and replies word 0 + 1.
extern "C" fn fpu_server(_ipc: u64, endpoint: u64, _: u64) -> ! {
    let mut n = 0u64;
    let mut mine = Xmm::pattern(0x5e_0000);
    let mut out = Xmm::ZERO;
    // SAFETY: register-only messages: the kernel touches no memory.
    let (mut st, mut r) = unsafe { xmm_syscall(&mine, &mut out, Sys::Recv as u64, [endpoint, FOREVER, 0, 0, 0, 0]) };
    loop {
        if (st != 0 || out != mine) && SERVER_BAD.load(Ordering::SeqCst) == 0 {
            SERVER_SAW.store(if st != 0 { st } else { (out.x[0] as u64) ^ (mine.x[0] as u64) }, Ordering::SeqCst);
            SERVER_BAD.store(n + 1, Ordering::SeqCst);
        }
        n += 1;
        mine = Xmm::pattern(0x5e_0000 + n);
        let info = MsgInfo::new(LABEL_FPU, 1, 0).encode();
        // SAFETY: as above.
        (st, r) = unsafe { xmm_syscall(&mine, &mut out, Sys::ReplyRecv as u64, [endpoint, info, r[2] + 1, 0, 0, 0]) };
    }
}

pub fn fpu_registers_stay_with_their_thread(env: &mut Env) -> Result<(), String> {
    // 1. Two threads of this process on CPU 0 trade the CPU by Call and
    // ReplyRecv, each with its own registers loaded around every call.
    let ep = env.slot();
    sys::create(ObjectType::Endpoint, ep, 0).map_err(|e| format!("endpoint: {e}"))?;
    spawn(env, fpu_server, 100, u64::from(ep), 0)?;
    sys::yield_now().map_err(|e| format!("yield: {e}"))?;
    for round in 0..ROUNDS {
        let mine = Xmm::pattern(0xc1_0000 + round);
        let mut out = Xmm::ZERO;
        let info = MsgInfo::new(LABEL_FPU, 1, 0).encode();
        // SAFETY: a register-only message: the kernel touches no memory.
        let (st, r) = unsafe { xmm_syscall(&mine, &mut out, Sys::Call as u64, [u64::from(ep), info, round, 0, 0, 0]) };
        check(st == 0, || format!("round {round}: call failed with {st}"))?;
        check(r[2] == round + 1, || format!("round {round}: reply {}, expected {}", r[2], round + 1))?;
        check(out == mine, || format!("round {round}: the caller's registers after its call: {}", out.diff(&mine)))?;
        let bad = SERVER_BAD.load(Ordering::SeqCst);
        check(bad == 0, || {
            format!("the server's registers in its round {}: not its own (status or xmm0 xor {:#x})", bad - 1, SERVER_SAW.load(Ordering::SeqCst))
        })?;
    }

    // 2. Another process on this CPU after this thread left a secret in its
    // registers: it finds the clean state (xmm0 zero, MXCSR 0x1F80), and
    // this thread finds its secret again afterwards.
    let secret = Xmm::pattern(0x5ec2e7);
    // SAFETY: loads registers no code here uses.
    unsafe { xmm_load(&secret) };
    // movq rdi, xmm0; mov eax, Exit; syscall
    let exit = Sys::Exit as u8;
    let read_xmm0: &[u8] = &[0x66, 0x48, 0x0f, 0x7e, 0xc7, 0xb8, exit, 0, 0, 0, 0x0f, 0x05, 0xeb, 0xfe];
    let got = crate::tests::run_wild_on(env, read_xmm0, Some(0), None)?;
    check(got == (abi::ProcessState::Exited, 0), || format!("a new process read xmm0 after ours held a secret: ended {got:?}, expected to exit 0"))?;
    // stmxcsr [rsp]; mov edi, [rsp]; mov eax, Exit; syscall
    let read_mxcsr: &[u8] = &[0x0f, 0xae, 0x1c, 0x24, 0x8b, 0x3c, 0x24, 0xb8, exit, 0, 0, 0, 0x0f, 0x05, 0xeb, 0xfe];
    let got = crate::tests::run_wild_on(env, read_mxcsr, Some(0), None)?;
    check(got == (abi::ProcessState::Exited, 0x1f80), || format!("a new process read MXCSR after ours set {:#x}: ended {got:?}, expected to exit 0x1f80", secret.mxcsr))?;
    let mut out = Xmm::ZERO;
    // SAFETY: stores into a local.
    unsafe { xmm_store(&mut out) };
    check(out == secret, || format!("our registers after two other processes ran on our CPU: {}", out.diff(&secret)))?;

    // 3. A thread suspended on CPU 1 with its registers live there, moved
    // to CPU 0 and resumed: it finds them on CPU 0.
    if env.cpus() < 2 {
        return Ok(());
    }
    HOLD_GO.store(false, Ordering::SeqCst);
    HOLD_RESULT.store(0, Ordering::SeqCst);
    let (done, park) = (env.slot(), env.slot());
    for n in [done, park] {
        sys::create(ObjectType::Notification, n, 0).map_err(|e| format!("notification: {e}"))?;
    }
    let t = spawn_on(env, holder, 100, u64::from(done), u64::from(park), 1)?;
    sys::wait(done, 10_000_000_000).map_err(|e| format!("waiting for the thread on CPU 1 to load its registers: {e}"))?;
    sys::thread_suspend(t).map_err(|e| format!("suspend: {e}"))?;
    // CPU 1 lets go of it at its next pass through the scheduler (a wait,
    // not a polling loop: the lock stays free for it).
    let mut tries = 0;
    loop {
        match sys::thread_set_priority(t, 100, Some(0)) {
            Ok(()) => break,
            Err(abi::Error::BadState) if tries < 1000 => {
                tries += 1;
                let _ = sys::wait(park, 1_000_000);
            }
            Err(e) => return Err(format!("moving the suspended thread to CPU 0: {e}")),
        }
    }
    sys::thread_resume(t).map_err(|e| format!("resume: {e}"))?;
    HOLD_GO.store(true, Ordering::SeqCst);
    sys::wait(done, 10_000_000_000).map_err(|e| format!("waiting for the moved thread: {e}"))?;
    let r = HOLD_RESULT.load(Ordering::SeqCst);
    let _ = sys::cap_delete(t);
    check(r == 1, || format!("the thread moved from CPU 1 to CPU 0 found other registers (xmm0 xor {r:#x}, or 2: another)"))
}

static HOLD_GO: AtomicBool = AtomicBool::new(false);
/// 1: its registers were intact; otherwise xmm0's difference (or 2).
static HOLD_RESULT: AtomicU64 = AtomicU64::new(0);

/// Holds its registers live until told to go, reports what it found in
/// them, signals `done` and waits on `park` (never signalled) to be ended.
extern "C" fn holder(_ipc: u64, done: u64, park: u64) -> ! {
    let mine = Xmm::pattern(0x40_1d);
    let mut out = Xmm::ZERO;
    // SAFETY: locals and statics.
    let st = unsafe { xmm_hold(&mine, &mut out, done as CapSlot, &HOLD_GO) };
    let diff = (out.x[0] as u64) ^ (mine.x[0] as u64);
    HOLD_RESULT.store(if st != 0 { 3 } else if out == mine { 1 } else if diff != 0 { diff } else { 2 }, Ordering::SeqCst);
    let _ = sys::signal(done as CapSlot, 1);
    loop {
        let _ = sys::wait(park as CapSlot, FOREVER);
    }
}
