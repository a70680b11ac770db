//! Kernel memory charging (security issue 10, findings 2 and 6): every
//! allocation the kernel makes on a process's behalf is charged to a budget
//! and refused with `OutOfBudget` when it is spent, and an object's charge
//! stays with it until the object dies. Each test loops an operation as an
//! unprivileged process would; before the fixes the loops either ran the
//! kernel's fixed heap out (a kernel panic) or made memory without limit.

use abi::{CapSlot, Error, ObjectType, Rights, Sys, PAGE_SIZE};
use alcove_rt::start::SLOT_SELF;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use libipc::sys;

use crate::tests::Env;

const RW: Rights = Rights(Rights::READ.0 | Rights::WRITE.0);
/// Where children run their code, and the slots they find things in.
const CHILD_CODE: u64 = 0x40_0000;
const CHILD_IOPORTS_SLOT: CapSlot = 5;
const CHILD_PARENT_SLOT: CapSlot = 6;
const CHILD_FRAME_SLOT: CapSlot = 10;

fn check(cond: bool, why: impl FnOnce() -> String) -> Result<(), String> {
    if cond { Ok(()) } else { Err(why()) }
}

fn used() -> Result<u64, String> {
    sys::budget_info().map(|b| b.used_bytes).map_err(|e| format!("budget info: {e}"))
}

/// Kernel memory charged to a running process we hold a capability to.
fn used_by(process: CapSlot) -> Result<u64, String> {
    // SAFETY: ProcessInfo reads no user memory; it answers in registers
    // (state, code, bytes charged to a running process).
    let (status, r) = unsafe { sys::raw(Sys::ProcessInfo as u64, [u64::from(process), 0, 0, 0, 0, 0]) };
    check(status == 0, || format!("process info: status {status}"))?;
    Ok(r[2])
}

fn unmap(va: u64, pages: u64) -> Result<(), String> {
    // SAFETY: the range holds only mappings this test made and no longer
    // touches.
    unsafe { sys::unmap(SLOT_SELF, va, pages) }.map_err(|e| format!("unmap: {e}"))
}

/// `len` bytes of address space nothing uses, aligned to `align`.
fn reserve_aligned(env: &mut Env, pages: u64, align: u64) -> u64 {
    let va = env.reserve_va(pages + align / PAGE_SIZE);
    va.next_multiple_of(align)
}

// ---- finding 2: range-map entries ------------------------------------------

/// Maps one page at a time (one frame at ever new addresses) until the
/// budget refuses: each `Map` adds an entry to the kernel's range map, and
/// those entries used to be free but for their page tables (8 bytes a
/// page), so the loop filled the 4 MiB kernel heap and panicked the kernel
/// long before the budget ran out.
pub fn range_map_entries_are_charged(env: &mut Env) -> Result<(), String> {
    const MAPS: u64 = 200_000;
    let before = used()?;
    let f = env.slot();
    sys::create(ObjectType::Frame, f, 1).map_err(|e| format!("frame: {e}"))?;
    let base = env.reserve_va(MAPS);
    let mut mapped = 0;
    let mut last = Ok(());
    while mapped < MAPS {
        last = sys::map(SLOT_SELF, f, base + mapped * PAGE_SIZE, Rights::READ);
        if last.is_err() {
            break;
        }
        mapped += 1;
    }
    let full = used()?;
    unmap(base, MAPS)?;
    sys::cap_delete(f).map_err(|e| format!("delete: {e}"))?;
    let after = used()?;
    log::info!("charging: {mapped} single-page maps fit, {} bytes charged", full - before);
    check(last == Err(Error::OutOfBudget), || format!("{mapped} maps of one page ended with {last:?}, not OutOfBudget"))?;
    check(after == before, || format!("kernel memory {before} -> {after} bytes after unmapping {mapped} maps"))
}

/// An unmap of no pages inside a mapping takes nothing out and splits
/// nothing: it used to cut the range-map entry in two each time, an
/// uncharged entry per call, and a loop of them over large mappings ran the
/// kernel heap out. Splits that do take pages out are charged, and all is
/// returned with the mapping.
pub fn empty_unmaps_split_no_entries(env: &mut Env) -> Result<(), String> {
    const PAGES: u64 = 256;
    const MAPS: u64 = 256;
    let before = used()?;
    let f = env.slot();
    sys::create(ObjectType::Frame, f, PAGES).map_err(|e| format!("frame: {e}"))?;
    let base = reserve_aligned(env, PAGES * MAPS, 2 << 20);
    let mut maps = 0;
    for m in 0..MAPS {
        let va = base + m * PAGES * PAGE_SIZE;
        match sys::map(SLOT_SELF, f, va, Rights::READ) {
            Ok(()) => maps += 1,
            Err(Error::OutOfBudget) => break,
            Err(e) => return Err(format!("map {m}: {e}")),
        }
        for p in 1..PAGES {
            unmap(va + p * PAGE_SIZE, 0)?;
        }
    }
    let mapped = used()?;
    // A real split in the middle of the first mapping, then everything.
    unmap(base + PAGE_SIZE, 1)?;
    let split = used()?;
    unmap(base, maps * PAGES)?;
    sys::cap_delete(f).map_err(|e| format!("delete: {e}"))?;
    let after = used()?;
    check(maps > 0, || "not one mapping fit".into())?;
    check(split > mapped, || format!("splitting a mapping in two cost nothing ({mapped} -> {split} bytes)"))?;
    check(after == before, || format!("kernel memory {before} -> {after} bytes after {maps} mappings went"))
}

// ---- finding 2: large unmaps -----------------------------------------------

/// Maps one 2 MiB frame at as many addresses as the budget allows (the
/// cheapest way to many mapped pages: one page table per 512 pages), then
/// unmaps all of them in one call. The kernel used to collect the frame of
/// every page in a vector first, 8 bytes a page (4.5 MiB here), and the
/// allocation failure panicked the kernel.
pub fn large_unmaps_build_no_unbounded_vector(env: &mut Env) -> Result<(), String> {
    const PAGES: u64 = 512;
    // No more than one unmap takes (1 << 20 pages): with a budget larger
    // than 8 MiB the maps used to go past it and the unmap was refused.
    const MAX_MAPS: u64 = (1 << 20) / PAGES;
    let before = used()?;
    let f = env.slot();
    sys::create(ObjectType::Frame, f, PAGES).map_err(|e| format!("frame: {e}"))?;
    let base = reserve_aligned(env, PAGES * MAX_MAPS, 2 << 20);
    let mut maps = 0;
    while maps < MAX_MAPS {
        match sys::map(SLOT_SELF, f, base + maps * PAGES * PAGE_SIZE, Rights::READ) {
            Ok(()) => maps += 1,
            Err(Error::OutOfBudget) => break,
            Err(e) => return Err(format!("map {maps}: {e}")),
        }
    }
    log::info!("charging: {} pages mapped, unmapped in one call", maps * PAGES);
    unmap(base, maps * PAGES)?;
    sys::cap_delete(f).map_err(|e| format!("delete: {e}"))?;
    let after = used()?;
    check(maps * PAGES >= 256 * 1024, || format!("only {} pages could be mapped", maps * PAGES))?;
    check(after == before, || format!("kernel memory {before} -> {after} bytes after the large unmap"))
}

// ---- finding 2: capability tables of child processes ------------------------

/// Creates processes with the largest capability space until the budget
/// refuses: each table is charged to the child's budget, carved from ours,
/// and the kernel heap holding the tables grows from memory the budgets
/// account for (a fixed 4 MiB heap used to run out first and panic).
pub fn child_capability_tables_are_charged(env: &mut Env) -> Result<(), String> {
    const MAX_CHILDREN: usize = 1000;
    let slots = u64::from(abi::CSPACE_SLOTS);
    let each = 4096 + 512 + slots * 96 + 4096;
    let before = used()?;
    let mut children = Vec::new();
    let mut last = Ok(());
    while children.len() < MAX_CHILDREN {
        let c = env.slot();
        last = sys::create_from(ObjectType::Process, c, each, slots as CapSlot);
        if last.is_err() {
            break;
        }
        children.push(c);
    }
    let full = used()?;
    for &c in &children {
        sys::cap_delete(c).map_err(|e| format!("delete: {e}"))?;
    }
    let after = used()?;
    log::info!("charging: {} processes of {slots} slots fit", children.len());
    check(last == Err(Error::OutOfBudget), || format!("{} processes made, then {last:?}, not OutOfBudget", children.len()))?;
    check(full - before >= children.len() as u64 * slots * 64, || {
        format!("{} capability tables of {slots} slots cost {} bytes", children.len(), full - before)
    })?;
    check(after == before, || format!("kernel memory {before} -> {after} bytes after the processes ended"))
}

// ---- finding 2: I/O bitmaps ------------------------------------------------

/// A child that enables an I/O port pays for its 8 KiB permission bitmap
/// (it used to come from the kernel heap for free), and gets it back when
/// it ends.
pub fn io_bitmaps_are_charged(env: &mut Env) -> Result<(), String> {
    // IoPortEnable(slot 5); on error exit(100 + error); spin.
    #[rustfmt::skip]
    let code: &[u8] = &[
        0xbf, CHILD_IOPORTS_SLOT as u8, 0, 0, 0, // mov edi, slot
        0xb8, Sys::IoPortEnable as u8, 0, 0, 0, // mov eax, IoPortEnable
        0x0f, 0x05, // syscall
        0x48, 0x85, 0xc0, // test rax, rax
        0x75, 0x04, // jnz fail
        0xf3, 0x90, 0xeb, 0xfc, // spin: pause; jmp spin
        0x48, 0x8d, 0x78, 0x64, // fail: lea rdi, [rax + 100]
        0xb8, Sys::Exit as u8, 0, 0, 0, 0x0f, 0x05, 0xeb, 0xfe, // exit(rdi)
    ];
    let before = used()?;
    let (first, count) = (0x61, 1);
    let &(_, _, src) = env
        .info()
        .ioports
        .iter()
        .find(|&&(f, n, _)| f <= first && first + count <= f + n)
        .ok_or("no I/O-port capability covers 0x61")?;
    let child = Children::new(env, code)?;
    child.make(256 * 1024).map_err(|e| format!("child: {e}"))?;
    let sub = env.slot();
    sys::create_from(ObjectType::IoPorts, sub, u64::from(first) | u64::from(count) << 16, src).map_err(|e| format!("io ports: {e}"))?;
    let granted = sys::cap_grant(child.process, sub, CHILD_IOPORTS_SLOT, Rights::MANAGE);
    let _ = sys::cap_delete(sub);
    granted.map_err(|e| format!("grant io ports: {e}"))?;
    let idle = used_by(child.process)?;
    // Below us on our CPU: it runs while we sleep.
    child.start(0, 0)?;
    let n = env.slot();
    sys::create(ObjectType::Notification, n, 0).map_err(|e| format!("{e}"))?;
    let _ = sys::wait(n, 20_000_000);
    let _ = sys::cap_delete(n);
    let info = sys::process_info(child.process).map_err(|e| format!("process info: {e}"))?;
    let enabled = used_by(child.process);
    child.close();
    let after = used()?;
    check(info.state == abi::ProcessState::Running, || format!("the child ended {:?} {}", info.state, info.code))?;
    let enabled = enabled?;
    check(enabled >= idle + 8192, || format!("enabling a port took the child's kernel memory from {idle} to {enabled} bytes"))?;
    check(after == before, || format!("kernel memory {before} -> {after} bytes after the child ended"))
}

// ---- finding 6: a child's objects outlive it --------------------------------

/// Each round, a child with its own budget makes a 64 KiB frame, maps it
/// into us (it holds a capability to us) and exits. The frame lives on in
/// our address space, charged to the dead child, so the child's budget must
/// not come back to us whole: it used to, and the loop mapped memory
/// without limit (rounds enough for more than our whole budget). Now the
/// rounds end with `OutOfBudget`, and unmapping the frames gives it all
/// back.
pub fn a_dead_childs_objects_keep_their_charge(env: &mut Env) -> Result<(), String> {
    const FRAME_PAGES: u8 = 16;
    // rbx = rsi (where to map); Create(Frame, 10, 16); Map(parent, 10,
    // rbx, READ); exit(0); on an error exit(100 + error).
    #[rustfmt::skip]
    let code: &[u8] = &[
        0x48, 0x89, 0xf3, // mov rbx, rsi
        0xb8, Sys::Create as u8, 0, 0, 0, // mov eax, Create
        0xbf, ObjectType::Frame as u8, 0, 0, 0, // mov edi, Frame
        0xbe, CHILD_FRAME_SLOT as u8, 0, 0, 0, // mov esi, slot
        0xba, FRAME_PAGES, 0, 0, 0, // mov edx, pages
        0x45, 0x31, 0xd2, // xor r10d, r10d
        0x0f, 0x05, // syscall
        0x48, 0x85, 0xc0, // test rax, rax
        0x75, 0x2a, // jnz fail
        0xb8, Sys::Map as u8, 0, 0, 0, // mov eax, Map
        0xbf, CHILD_PARENT_SLOT as u8, 0, 0, 0, // mov edi, parent
        0xbe, CHILD_FRAME_SLOT as u8, 0, 0, 0, // mov esi, frame
        0x48, 0x89, 0xda, // mov rdx, rbx
        0x41, 0xba, Rights::READ.0 as u8, 0, 0, 0, // mov r10d, READ
        0x0f, 0x05, // syscall
        0x48, 0x85, 0xc0, // test rax, rax
        0x75, 0x0b, // jnz fail
        0x31, 0xff, // xor edi, edi
        0xb8, Sys::Exit as u8, 0, 0, 0, 0x0f, 0x05, 0xeb, 0xfe, // exit(0)
        0x48, 0x8d, 0x78, 0x64, // fail: lea rdi, [rax + 100]
        0xb8, Sys::Exit as u8, 0, 0, 0, 0x0f, 0x05, 0xeb, 0xfe, // exit(rdi)
    ];
    let frame_bytes = u64::from(FRAME_PAGES) * PAGE_SIZE;
    // Frames for more than the whole budget (the manifest's, whatever it is).
    let limit = sys::budget_info().map_err(|e| format!("budget info: {e}"))?.limit_bytes;
    let rounds_max = limit / frame_bytes + 1;
    let before = used()?;
    let base = reserve_aligned(env, rounds_max * u64::from(FRAME_PAGES), 2 << 20);
    let children = Children::new(env, code)?;
    let me = env.slot();
    let mut rounds = 0;
    let mut refused = None;
    let result = (|| {
        while rounds < rounds_max {
            match children.make(128 * 1024) {
                Ok(()) => {}
                Err(Error::OutOfBudget) => {
                    refused = Some("a new child's budget");
                    return Ok(());
                }
                Err(e) => return Err(format!("round {rounds}: child: {e}")),
            }
            sys::cap_copy(SLOT_SELF, me, Rights::MANAGE, 0).map_err(|e| format!("copy self: {e}"))?;
            let granted = sys::cap_grant(children.process, me, CHILD_PARENT_SLOT, Rights::MANAGE);
            let _ = sys::cap_delete(me);
            granted.map_err(|e| format!("grant self: {e}"))?;
            children.start(50, base + rounds * frame_bytes)?;
            let ended = children.wait_end();
            children.end();
            let (state, code) = ended?;
            if (state, code) == (abi::ProcessState::Exited, 100 + Error::OutOfBudget as u64) {
                refused = Some("the child's frame or its mapping");
                return Ok(());
            }
            check(state == abi::ProcessState::Exited && code == 0, || format!("round {rounds}: the child ended {state:?} {code}"))?;
            rounds += 1;
            let now = used()?;
            check(now >= before + rounds * frame_bytes, || {
                format!(
                    "{rounds} dead children's frames ({} bytes) live in our address space, but our kernel memory went only {before} -> {now}",
                    rounds * frame_bytes
                )
            })?;
        }
        Ok(())
    })();
    children.close();
    unmap(base, rounds_max * u64::from(FRAME_PAGES))?;
    let after = used()?;
    result?;
    log::info!("charging: {rounds} dead children's frames fit, then {refused:?} was refused");
    check(refused.is_some(), || format!("{rounds} children each left {frame_bytes} bytes mapped here and none was refused"))?;
    check(after == before, || format!("kernel memory {before} -> {after} bytes after the frames were unmapped"))
}

/// Child processes running `code` (one page at [`CHILD_CODE`]) in one
/// thread each, one at a time: the slots and the code page are reused, so
/// a loop of children spends no more of our capability space than one.
struct Children {
    process: CapSlot,
    thread: CapSlot,
    watch: CapSlot,
    code_frame: CapSlot,
    code_va: u64,
}

impl Children {
    fn new(env: &mut Env, code: &[u8]) -> Result<Self, String> {
        let code_frame = env.slot();
        let code_va = env.reserve_va(1);
        sys::create(ObjectType::Frame, code_frame, 1).map_err(|e| format!("code frame: {e}"))?;
        sys::map(SLOT_SELF, code_frame, code_va, RW).map_err(|e| format!("map code: {e}"))?;
        // SAFETY: `code_va` was just mapped for this alone.
        unsafe { alcove_rt::poke(code_va, code) };
        Ok(Children { process: env.slot(), thread: env.slot(), watch: env.slot(), code_frame, code_va })
    }

    /// A new child with `budget`, not yet started.
    fn make(&self, budget: u64) -> Result<(), Error> {
        sys::create(ObjectType::Process, self.process, budget)?;
        let made = sys::map(self.process, self.code_frame, CHILD_CODE, Rights::READ | Rights::EXECUTE)
            .and_then(|()| sys::create(ObjectType::Thread, self.thread, u64::from(self.process)))
            .and_then(|()| sys::create(ObjectType::Notification, self.watch, 0))
            .and_then(|()| sys::process_watch(self.process, self.watch, 1));
        if made.is_err() {
            self.end();
        }
        made
    }

    /// Runs the child on our CPU (CPU 0) at `priority`, with `arg` in rsi.
    fn start(&self, priority: u8, arg: u64) -> Result<(), String> {
        // SAFETY: the entry is mapped in the child, not in us; the code
        // uses no stack and no IPC buffer.
        unsafe { sys::thread_configure(self.thread, CHILD_CODE, CHILD_CODE, 0, arg, 0) }.map_err(|e| format!("configure: {e}"))?;
        sys::thread_set_priority(self.thread, priority.max(1), Some(0)).map_err(|e| format!("priority: {e}"))?;
        sys::thread_resume(self.thread).map_err(|e| format!("resume: {e}"))
    }

    fn wait_end(&self) -> Result<(abi::ProcessState, u64), String> {
        sys::wait(self.watch, 2_000_000_000).map_err(|e| format!("waiting for the child: {e}"))?;
        let info = sys::process_info(self.process).map_err(|e| format!("process info: {e}"))?;
        Ok((info.state, info.code))
    }

    /// Deletes our capabilities to the child: it ends (if it still runs)
    /// and what it held goes.
    fn end(&self) {
        let _ = sys::cap_delete(self.thread);
        let _ = sys::cap_delete(self.process);
        let _ = sys::cap_delete(self.watch);
    }

    fn close(self) {
        self.end();
        let _ = unmap(self.code_va, 1);
        let _ = sys::cap_delete(self.code_frame);
    }
}
