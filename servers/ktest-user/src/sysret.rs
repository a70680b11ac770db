//! The way back to ring 3 (`return_to_user`, microkernel/src/arch/x86_64/
//! entry.s) takes SYSRET when it restores what IRETQ would, IRETQ
//! otherwise. These processes try the edges of that choice; each must end
//! as a program would expect (exit with its code, or fault in user mode),
//! never with the kernel stopped:
//!
//! - a SYSCALL from the last two bytes below `USER_MAX`: the way back is
//!   the first address past user space (canonical, never mapped), so the
//!   process faults there with #PF; by the null call's own SYSRET, the
//!   general path, and an error return;
//! - user flags that SYSRET and IRETQ must both give back (CF, NT, AC, ID);
//! - TF set for the SYSCALL itself (SYSRET would raise #DB at once, so the
//!   kernel must take IRETQ): a #DB in user mode ends it;
//! - RCX and R11 that a timer interrupt found in the middle of a loop: a
//!   frame saved by an interrupt must come back by IRETQ with them intact
//!   (SYSRET would overwrite them with RIP and RFLAGS);
//! - no address that would make SYSRET fault in ring 0 is reachable: the
//!   last page of user space cannot be mapped and a thread's entry cannot
//!   be non-canonical or in the kernel half.

use abi::{CapSlot, Error, ObjectType, ProcessState, Rights, Sys, USER_MAX};
use alcove_rt::start::SLOT_SELF;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use libipc::sys;

use crate::tests::Env;

const RW: Rights = Rights(Rights::READ.0 | Rights::WRITE.0);
const RX: Rights = Rights(Rights::READ.0 | Rights::EXECUTE.0);
const CODE_VA: u64 = 0x40_0000;
const STACK_VA: u64 = 0x80_0000;
/// The highest page a process may map; its last two bytes hold a SYSCALL.
const TOP_PAGE: u64 = USER_MAX - 0x1000;
/// The flags the second case sets before its calls: CF, NT, AC, ID.
const FLAGS: u32 = 0x24_4001;

struct Asm(Vec<u8>);

impl Asm {
    fn new() -> Self {
        Asm(Vec::new())
    }
    fn b(mut self, bytes: &[u8]) -> Self {
        self.0.extend_from_slice(bytes);
        self
    }
    fn imm32(self, v: u32) -> Self {
        self.b(&v.to_le_bytes())
    }
    fn imm64(self, v: u64) -> Self {
        self.b(&v.to_le_bytes())
    }
    /// `mov eax, n`
    fn eax(self, n: u32) -> Self {
        self.b(&[0xb8]).imm32(n)
    }
    fn syscall(self) -> Self {
        self.b(&[0x0f, 0x05])
    }
    /// `mov edi, code; mov eax, Exit; syscall; jmp $`
    fn exit(self, code: u32) -> Self {
        self.b(&[0xbf]).imm32(code).eax(Sys::Exit as u32).syscall().b(&[0xeb, 0xfe])
    }
    /// `jne` over `exit(code)` (14 bytes): exit with `code` when equal.
    fn exit_if_equal_else_skip(self, code: u32) -> Self {
        self.b(&[0x75, 14]).exit(code)
    }
    /// `jne` to `exit(code)`, else jump past it.
    fn exit_unless_equal(self, code: u32) -> Self {
        // je +14 (over the exit); exit(code)
        self.b(&[0x74, 14]).exit(code)
    }
}

/// Runs `code` at `CODE_VA` in a new process (with `top`, if given, in the
/// last bytes of `TOP_PAGE`) and says how it ended within `ns`.
fn run(env: &mut Env, code: &Asm, top: Option<&[u8]>, ns: u64) -> Result<(ProcessState, u64), String> {
    let proc = env.slot();
    sys::create(ObjectType::Process, proc, 256 * 1024).map_err(|e| format!("create process: {e}"))?;
    let mut frames: Vec<(CapSlot, u64)> = Vec::new();
    let result = (|| -> Result<(ProcessState, u64), String> {
        let mut page = |bytes: &[u8], offset: usize, at: u64, rights: Rights| -> Result<(), String> {
            let (f, va) = env.frame(1, RW)?;
            frames.push((f, va));
            // SAFETY: `env.frame` just mapped a new page at `va` for this alone.
            unsafe { alcove_rt::poke(va + offset as u64, bytes) };
            sys::map(proc, f, at, rights).map_err(|e| format!("map {at:#x} into the child: {e}"))
        };
        page(&code.0, 0, CODE_VA, RX)?;
        page(&[], 0, STACK_VA, RW)?;
        if let Some(top) = top {
            page(top, 0x1000 - top.len(), TOP_PAGE, RX)?;
        }
        let t = env.slot();
        sys::create(ObjectType::Thread, t, u64::from(proc)).map_err(|e| format!("thread: {e}"))?;
        // SAFETY: the entry and stack are mapped in the child, not in us.
        unsafe { sys::thread_configure(t, CODE_VA, STACK_VA + 0x1000 - 8, 0, 0, 0) }.map_err(|e| format!("configure: {e}"))?;
        let n = env.slot();
        sys::create(ObjectType::Notification, n, 0).map_err(|e| format!("{e}"))?;
        let watched = sys::process_watch(proc, n, 1).map_err(|e| format!("watch: {e}"));
        let resumed = watched.and_then(|_| sys::thread_resume(t).map_err(|e| format!("resume: {e}")));
        let ended = resumed.and_then(|_| match sys::wait(n, ns) {
            Ok(_) | Err(Error::Timeout) => Ok(()),
            Err(e) => Err(format!("waiting: {e}")),
        });
        let info = ended.and_then(|_| sys::process_info(proc).map_err(|e| format!("process info: {e}")));
        let _ = sys::cap_delete(t);
        let _ = sys::cap_delete(n);
        info.map(|i| (i.state, i.code))
    })();
    // Deleting the last capability ends the process if it still runs.
    let _ = sys::cap_delete(proc);
    for (f, va) in frames {
        // SAFETY: only this child's setup used the mapping.
        let _ = unsafe { sys::unmap(SLOT_SELF, va, 1) };
        let _ = sys::cap_delete(f);
    }
    result
}

pub fn the_way_back_to_user_mode_restores_what_was_saved(env: &mut Env) -> Result<(), String> {
    // 1. SYSCALL in the last two bytes of user space returns to USER_MAX.
    for (what, n) in [("the null call", Sys::Nop as u32), ("yield", Sys::Yield as u32), ("an invalid call", 9999)] {
        let code = Asm::new().b(&[0x48, 0xbb]).imm64(USER_MAX - 2).eax(n).b(&[0xff, 0xe3]); // movabs rbx; mov eax; jmp rbx
        let got = run(env, &code, Some(&[0x0f, 0x05]), 2_000_000_000)?;
        if got != (ProcessState::Faulted, 14) {
            return Err(format!(
                "a process that made {what} from {:#x} (returning to {USER_MAX:#x}, past user space) ended {got:?}, expected a page fault there (Faulted 14)",
                USER_MAX - 2
            ));
        }
    }
    // 2. Flags the user may set come back through both ways out.
    for (what, n) in [("the null call", Sys::Nop as u32), ("yield", Sys::Yield as u32), ("an invalid call", 9999)] {
        let code = Asm::new()
            .b(&[0x9c, 0x48, 0x81, 0x0c, 0x24]).imm32(FLAGS).b(&[0x9d]) // pushfq; or qword [rsp], FLAGS; popfq
            .eax(n)
            .syscall()
            .b(&[0x9c, 0x5b, 0x81, 0xe3]).imm32(FLAGS) // pushfq; pop rbx; and ebx, FLAGS
            .b(&[0x81, 0xfb]).imm32(FLAGS) // cmp ebx, FLAGS
            .exit_if_equal_else_skip(0)
            .exit(1);
        let got = run(env, &code, None, 2_000_000_000)?;
        if got != (ProcessState::Exited, 0) {
            return Err(format!(
                "a process that set CF, NT, AC and ID and made {what} ended {got:?}, expected to exit 0 (1: a flag was lost on the way back)"
            ));
        }
    }
    // 3. TF set for the SYSCALL itself: #DB in user mode, after the call.
    for (what, n) in [("the null call", Sys::Nop as u32), ("yield", Sys::Yield as u32)] {
        let code = Asm::new()
            .eax(n)
            .b(&[0x9c, 0x48, 0x81, 0x0c, 0x24]).imm32(0x100).b(&[0x9d]) // pushfq; or qword [rsp], TF; popfq
            .syscall()
            .b(&[0x90, 0x90])
            .exit(0);
        let got = run(env, &code, None, 2_000_000_000)?;
        if got != (ProcessState::Faulted, 1) {
            return Err(format!("a process that made {what} with TF set ended {got:?}, expected #DB in user mode (Faulted 1)"));
        }
    }
    // 4. RCX and R11 survive the timer interrupts of a loop that spans
    //    several time slices (10 ms each): about 2^27 TSC ticks.
    const M1: u64 = 0x1234_5678_9abc_def0;
    const M2: u64 = 0x0fed_cba9_8765_4321;
    let tsc_now = [0x0f, 0x31, 0x48, 0xc1, 0xe2, 0x20, 0x48, 0x09, 0xc2]; // rdtsc; shl rdx, 32; or rdx, rax
    let code = Asm::new()
        .b(&[0x48, 0xb9]).imm64(M1) // movabs rcx, M1
        .b(&[0x49, 0xbb]).imm64(M2) // movabs r11, M2
        .b(&tsc_now)
        .b(&[0x49, 0x89, 0xd0]) // mov r8, rdx
        .b(&tsc_now) // loop:
        .b(&[0x4c, 0x29, 0xc2]) // sub rdx, r8
        .b(&[0x48, 0x81, 0xfa]).imm32(1 << 27) // cmp rdx, 2^27
        .b(&[0x72, 0xeb]) // jb loop (-21)
        .b(&[0x48, 0xb8]).imm64(M1).b(&[0x48, 0x39, 0xc1]) // movabs rax, M1; cmp rcx, rax
        .exit_unless_equal(1)
        .b(&[0x48, 0xb8]).imm64(M2).b(&[0x49, 0x39, 0xc3]) // movabs rax, M2; cmp r11, rax
        .exit_unless_equal(2)
        .exit(0);
    let got = run(env, &code, None, 30_000_000_000)?;
    if got != (ProcessState::Exited, 0) {
        return Err(format!(
            "a process that held RCX and R11 through a loop of several time slices ended {got:?}, expected to exit 0 (1: RCX changed, 2: R11 changed)"
        ));
    }
    // 5. Nothing can make SYSRET's RCX non-canonical.
    let proc = env.slot();
    sys::create(ObjectType::Process, proc, 64 * 1024).map_err(|e| format!("create process: {e}"))?;
    let (f, va) = env.frame(1, RW)?;
    let last = sys::map(proc, f, USER_MAX, RX);
    let t = env.slot();
    let made = sys::create(ObjectType::Thread, t, u64::from(proc));
    let entries = [USER_MAX, 0x0000_8000_0000_0000, 0xffff_8000_0000_0000, u64::MAX - 1];
    // SAFETY: none of these entries is accepted (checked below); the thread never runs.
    let configured: Vec<_> = entries.iter().map(|&e| (e, unsafe { sys::thread_configure(t, e, STACK_VA + 0x1000 - 8, 0, 0, 0) })).collect();
    let _ = sys::cap_delete(t);
    let _ = sys::cap_delete(proc);
    // SAFETY: nothing refers to this test's mapping any more.
    let _ = unsafe { sys::unmap(SLOT_SELF, va, 1) };
    let _ = sys::cap_delete(f);
    if last.is_ok() {
        return Err(format!("a frame was mapped at {USER_MAX:#x}, the first page past user space"));
    }
    made.map_err(|e| format!("thread: {e}"))?;
    for (e, r) in configured {
        if r != Err(Error::InvalidArgument) {
            return Err(format!("a thread's entry set to {e:#x} gave {r:?}, expected InvalidArgument"));
        }
    }
    Ok(())
}
