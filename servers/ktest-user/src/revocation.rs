//! Security issue finding 12 (revocation misses derived state) and the
//! I/O-port leak of finding 3 in the case that showed it.
//!
//! The derived roots: objects a process makes
//! from a capability it holds (a sub-range of I/O ports, an MSI vector from
//! an interrupt right) hang under that capability in the derivation tree,
//! so whoever revokes it takes them back too. They used to be installed as
//! new roots that `CapRevoke` of the source never reached: a driver whose
//! port range was revoked kept every sub-range it had cut from it. And an
//! MSI vector is freed with its last capability.

use crate::tests::Env;
use abi::{CapSlot, Error, MsgInfo, ObjectType, Rights, Sys, PAGE_SIZE};
use alcove_rt::start::SLOT_SELF;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use libipc::sys;

/// Cuts a sub-range from an I/O-port capability and an MSI vector from an
/// IRQ capability, revokes each source, and finds both results gone, while
/// the sources themselves stay.
pub fn revocation_reaches_objects_created_from_a_capability(env: &mut Env) -> Result<(), String> {
    let &(first, _, ports) = env.info().ioports.first().ok_or_else(|| String::from("no I/O ports granted"))?;
    let &(_, irq) = env.info().irqs.first().ok_or_else(|| String::from("no IRQ granted"))?;
    let sub = env.slot();
    sys::create_from(ObjectType::IoPorts, sub, u64::from(first) | 1 << 16, ports).map_err(|e| format!("io ports: {e}"))?;
    let msi = env.slot();
    sys::create_from(ObjectType::Irq, msi, 1, irq).map_err(|e| format!("allocate an MSI vector: {e}"))?;
    sys::cap_revoke(ports).map_err(|e| format!("revoke the ports: {e}"))?;
    sys::cap_revoke(irq).map_err(|e| format!("revoke the IRQ: {e}"))?;
    let sub_left = sys::cap_identify(sub).map(|c| c.object_type);
    let msi_left = sys::cap_identify(msi).map(|c| c.object_type);
    // Whatever survived is deleted, so no later test trips on it.
    let _ = sys::cap_delete(sub);
    let _ = sys::cap_delete(msi);
    if sub_left != Err(Error::EmptySlot) {
        return Err(format!("a port sub-range survived the revocation of its source: {sub_left:?}"));
    }
    if msi_left != Err(Error::EmptySlot) {
        return Err(format!("an MSI vector survived the revocation of its IRQ capability: {msi_left:?}"));
    }
    for (what, slot) in [("ports", ports), ("IRQ", irq)] {
        sys::cap_identify(slot).map_err(|e| format!("the revoked {what} capability itself is gone: {e}"))?;
    }
    Ok(())
}

/// Allocates and deletes an MSI vector more times than the machine has
/// vectors (160): each is free again once its last capability goes. They
/// used to stay allocated forever, so a driver that restarted often ran
/// the machine out of them.
pub fn msi_vectors_are_freed_with_their_last_capability(env: &mut Env) -> Result<(), String> {
    let &(_, irq) = env.info().irqs.first().ok_or_else(|| String::from("no IRQ granted"))?;
    let msi = env.slot();
    for round in 0..400 {
        sys::create_from(ObjectType::Irq, msi, 1, irq).map_err(|e| format!("allocation {round} of an MSI vector: {e}"))?;
        sys::cap_delete(msi).map_err(|e| format!("delete MSI {round}: {e}"))?;
    }
    Ok(())
}

// ---- finding 12, what revocation left standing -------------------------------

const RW: Rights = Rights(Rights::READ.0 | Rights::WRITE.0);

/// Machine code for the small processes below, one instruction at a time.
pub(crate) struct Code(Vec<u8>);

impl Code {
    pub(crate) fn new() -> Self {
        Code(Vec::new())
    }
    fn bytes(mut self, b: &[u8]) -> Self {
        self.0.extend_from_slice(b);
        self
    }
    /// `mov r32, imm32` for eax (0xb8), esi (0xbe), edi (0xbf).
    fn mov(self, opcode: u8, v: u32) -> Self {
        let [a, b, c, d] = v.to_le_bytes();
        self.bytes(&[opcode, a, b, c, d])
    }
    /// `syscall` number `n` with rdi = `a0`, rsi = `a1`.
    pub(crate) fn sys(self, n: Sys, a0: u32, a1: u32) -> Self {
        self.mov(0xbf, a0).mov(0xbe, a1).mov(0xb8, n as u32).bytes(&[0x0f, 0x05])
    }
    /// `mov rsi, -1` (FOREVER), then `syscall` number `n` with rdi = `a0`.
    pub(crate) fn sys_forever(self, n: Sys, a0: u32) -> Self {
        self.mov(0xbf, a0).bytes(&[0x48, 0xc7, 0xc6, 0xff, 0xff, 0xff, 0xff]).mov(0xb8, n as u32).bytes(&[0x0f, 0x05])
    }
    /// If the last system call failed, `exit(100 + error)`.
    pub(crate) fn or_exit(self) -> Self {
        // test rax, rax; jz +13; lea rdi, [rax + 100]; mov eax, Exit; syscall; jmp $
        self.bytes(&[0x48, 0x85, 0xc0, 0x74, 0x0d, 0x48, 0x8d, 0x78, 0x64]).mov(0xb8, Sys::Exit as u32).bytes(&[0x0f, 0x05, 0xeb, 0xfe])
    }
    /// `mov dx, 0xcf8; in eax, dx`, once or forever.
    pub(crate) fn read_cf8(self, forever: bool) -> Self {
        let c = self.bytes(&[0x66, 0xba, 0xf8, 0x0c, 0xed]);
        if forever { c.bytes(&[0xeb, 0xfd]) } else { c }
    }
    pub(crate) fn exit(self, code: u32) -> Self {
        self.sys(Sys::Exit, code, 0).bytes(&[0xeb, 0xfe])
    }
}

/// A process running `code` (not yet resumed), watched through its own
/// notification. Capabilities go in with [`Child::grant`].
pub(crate) struct Child {
    pub(crate) process: CapSlot,
    thread: CapSlot,
    ended: CapSlot,
    frames: [(CapSlot, u64); 2],
}

impl Child {
    pub(crate) fn new(env: &mut Env, code: &Code, cpu: u32) -> Result<Child, String> {
        let process = env.slot();
        sys::create(ObjectType::Process, process, 256 * 1024).map_err(|e| format!("create process: {e}"))?;
        let mut frames = [(0, 0); 2];
        for (i, (rights, at)) in [(Rights::READ | Rights::EXECUTE, 0x40_0000), (RW, 0x80_0000)].into_iter().enumerate() {
            let f = env.slot();
            sys::create(ObjectType::Frame, f, 1).map_err(|e| format!("frame: {e}"))?;
            let va = env.reserve_va(1);
            sys::map(SLOT_SELF, f, va, RW).map_err(|e| format!("map: {e}"))?;
            if i == 0 {
                // SAFETY: a new page of ours, mapped just above for this alone.
                unsafe { alcove_rt::poke(va, &code.0) };
            }
            sys::map(process, f, at, rights).map_err(|e| format!("map into the child: {e}"))?;
            frames[i] = (f, va);
        }
        let thread = env.slot();
        sys::create(ObjectType::Thread, thread, u64::from(process)).map_err(|e| format!("thread: {e}"))?;
        // SAFETY: the entry and stack are mapped in the child, not in us.
        unsafe { sys::thread_configure(thread, 0x40_0000, 0x80_1000 - 8, 0, 0, 0) }.map_err(|e| format!("configure: {e}"))?;
        sys::thread_set_priority(thread, 50, Some(cpu)).map_err(|e| format!("pin to CPU {cpu}: {e}"))?;
        let ended = env.slot();
        sys::create(ObjectType::Notification, ended, 0).map_err(|e| format!("notification: {e}"))?;
        sys::process_watch(process, ended, 1).map_err(|e| format!("watch: {e}"))?;
        Ok(Child { process, thread, ended, frames })
    }

    pub(crate) fn grant(&self, ours: CapSlot, theirs: CapSlot, rights: Rights) -> Result<(), String> {
        sys::cap_grant(self.process, ours, theirs, rights).map_err(|e| format!("grant into slot {theirs}: {e}"))
    }

    pub(crate) fn start(&self) -> Result<(), String> {
        sys::thread_resume(self.thread).map_err(|e| format!("resume: {e}"))
    }

    /// How it ended within `ns` (Running if it did not).
    pub(crate) fn outcome(&self, ns: u64) -> Result<(abi::ProcessState, u64), String> {
        match sys::wait(self.ended, ns) {
            Ok(_) | Err(Error::Timeout) => {}
            Err(e) => return Err(format!("waiting for the child: {e}")),
        }
        let info = sys::process_info(self.process).map_err(|e| format!("process info: {e}"))?;
        Ok((info.state, info.code))
    }

    /// Ends it (if it still runs) and frees what it used.
    pub(crate) fn remove(self) {
        let _ = sys::cap_delete(self.thread);
        let _ = sys::cap_delete(self.process);
        let _ = sys::cap_delete(self.ended);
        for (f, va) in self.frames {
            // SAFETY: only this child's setup used the mapping.
            let _ = unsafe { sys::unmap(SLOT_SELF, va, 1) };
            let _ = sys::cap_delete(f);
        }
    }
}

/// Our capability for I/O ports covering 0xCF8..0xD00.
pub(crate) fn cf8_ports(env: &Env) -> Result<CapSlot, String> {
    env.info()
        .ioports
        .iter()
        .find(|&&(f, n, _)| f <= 0xcf8 && 0xd00 <= u32::from(f) + u32::from(n))
        .map(|&(_, _, s)| s)
        .ok_or_else(|| String::from("no I/O-port capability covers 0xCF8"))
}

/// Maps a frame through copies of its capability, in this process and in
/// another, hands one mapping up a chain by deleting the copy it was made
/// through, and revokes the frame capability: every mapping made through
/// a copy must be gone (they used to survive, so a server that revoked a
/// client's frame capability left the memory mapped in the client), and
/// the one made through the capability itself stays.
pub fn revocation_unmaps_frames_mapped_through_the_capability(env: &mut Env) -> Result<(), String> {
    let frame = env.slot();
    sys::create(ObjectType::Frame, frame, 1).map_err(|e| format!("frame: {e}"))?;
    let (copy, deep, deeper) = (env.slot(), env.slot(), env.slot());
    sys::cap_copy(frame, copy, RW, 0).map_err(|e| format!("copy: {e}"))?;
    sys::cap_copy(copy, deep, RW, 0).map_err(|e| format!("copy of the copy: {e}"))?;
    sys::cap_copy(deep, deeper, RW, 0).map_err(|e| format!("copy of that: {e}"))?;
    let [own, through_copy, through_deleted] = [env.reserve_va(1), env.reserve_va(1), env.reserve_va(1)];
    sys::map(SLOT_SELF, frame, own, RW).map_err(|e| format!("map: {e}"))?;
    sys::map(SLOT_SELF, copy, through_copy, RW).map_err(|e| format!("map the copy: {e}"))?;
    sys::map(SLOT_SELF, deeper, through_deleted, Rights::READ).map_err(|e| format!("map the deepest copy: {e}"))?;
    // The mapping made through `deeper` passes to `deep`, then to `copy`.
    sys::cap_delete(deeper).map_err(|e| format!("delete: {e}"))?;
    sys::cap_delete(deep).map_err(|e| format!("delete: {e}"))?;
    let other = env.slot();
    sys::create(ObjectType::Process, other, 128 * 1024).map_err(|e| format!("process: {e}"))?;
    let theirs = env.slot();
    sys::cap_copy(copy, theirs, RW, 0).map_err(|e| format!("copy: {e}"))?;
    sys::map(other, theirs, 0x40_0000, RW).map_err(|e| format!("map into another process: {e}"))?;
    // SAFETY: `own` maps the frame created above, for this test alone.
    unsafe { (own as *mut u64).write_volatile(0x5eed) };

    sys::cap_revoke(frame).map_err(|e| format!("revoke: {e}"))?;
    // Unmap answers NotMapped where nothing is mapped; whatever is still
    // mapped goes now, so later tests see a clean address space.
    // SAFETY: these addresses map only this test's frame.
    let left = unsafe {
        [
            ("through a copy", sys::unmap(SLOT_SELF, through_copy, 1)),
            ("through deleted copies of a copy", sys::unmap(SLOT_SELF, through_deleted, 1)),
            ("in another process through a copy", sys::unmap(other, 0x40_0000, 1)),
        ]
    };
    // SAFETY: as above.
    let seen = unsafe { (own as *const u64).read_volatile() };
    // SAFETY: as above.
    let own_left = unsafe { sys::unmap(SLOT_SELF, own, 1) };
    let _ = sys::cap_delete(other);
    let _ = sys::cap_delete(frame);
    for (what, r) in left {
        if r != Err(Error::NotMapped) {
            return Err(format!("a mapping made {what} survived the revocation of the frame capability ({r:?})"));
        }
    }
    if own_left.is_err() || seen != 0x5eed {
        return Err(format!("the mapping made through the revoked capability itself went ({own_left:?}, read {seen:#x})"));
    }
    Ok(())
}

/// As above, for a guest: a frame mapped into a guest's memory through a
/// copy of its capability (directly, or through a copy deleted since) must
/// leave the guest when the frame capability is revoked, and the one
/// mapped through the capability itself stays. Guest mappings used to
/// record no capability at all, so a VMM whose frame capability was
/// revoked kept the memory in its guest (`cargo xtask fuzz-syscalls --seed
/// 0x5e55104 --first 2096 --batches 1 --smp 1` found it).
pub fn revocation_unmaps_frames_mapped_into_a_guest(env: &mut Env) -> Result<(), String> {
    let frame = env.slot();
    sys::create(ObjectType::Frame, frame, 1).map_err(|e| format!("frame: {e}"))?;
    let (copy, deep) = (env.slot(), env.slot());
    sys::cap_copy(frame, copy, RW, 0).map_err(|e| format!("copy: {e}"))?;
    sys::cap_copy(copy, deep, RW, 0).map_err(|e| format!("copy of the copy: {e}"))?;
    let guest = env.slot();
    sys::create(ObjectType::Guest, guest, 0).map_err(|e| format!("guest: {e}"))?;
    let (own, through_copy, through_deleted) = (0x2000u64, 0x0u64, 0x1000u64);
    sys::map(guest, frame, own, RW).map_err(|e| format!("map into the guest: {e}"))?;
    sys::map(guest, copy, through_copy, RW).map_err(|e| format!("map the copy into the guest: {e}"))?;
    sys::map(guest, deep, through_deleted, Rights::READ).map_err(|e| format!("map the copy's copy into the guest: {e}"))?;
    // The mapping made through `deep` passes to `copy`.
    sys::cap_delete(deep).map_err(|e| format!("delete: {e}"))?;

    sys::cap_revoke(frame).map_err(|e| format!("revoke: {e}"))?;
    // SAFETY: guest memory, not ours; these addresses map only this
    // test's frame.
    let left = unsafe { [("through a copy", sys::unmap(guest, through_copy, 1)), ("through a deleted copy", sys::unmap(guest, through_deleted, 1))] };
    // SAFETY: as above.
    let own_left = unsafe { sys::unmap(guest, own, 1) };
    let _ = sys::cap_delete(guest);
    let _ = sys::cap_delete(frame);
    for (what, r) in left {
        if r != Err(Error::NotMapped) {
            return Err(format!("a guest mapping made {what} survived the revocation of the frame capability ({r:?})"));
        }
    }
    if own_left.is_err() {
        return Err(format!("the guest mapping made through the revoked capability itself went ({own_left:?})"));
    }
    Ok(())
}

/// A process enables I/O ports through a capability we granted it, tells
/// us, and reads 0xCF8 in a loop (on another CPU when there is one); we
/// revoke the capability: its next read must fault (#GP). Its I/O bitmap,
/// and the TSS of the CPU running it, used to keep the ports.
pub fn revoked_io_ports_leave_the_bitmap(env: &mut Env) -> Result<(), String> {
    const PORTS: CapSlot = 5;
    const READY: CapSlot = 6;
    let src = cf8_ports(env)?;
    let cpu = if env.cpus() > 1 { 1 } else { 0 };
    let code = Code::new().sys(Sys::IoPortEnable, PORTS, 0).or_exit().sys(Sys::Signal, READY, 1).or_exit().read_cf8(true);
    let child = Child::new(env, &code, cpu)?;
    let (sub, ready) = (env.slot(), env.slot());
    let setup = (|| -> Result<_, String> {
        sys::create_from(ObjectType::IoPorts, sub, 0xcf8 | 8 << 16, src).map_err(|e| format!("io ports: {e}"))?;
        sys::create(ObjectType::Notification, ready, 0).map_err(|e| format!("notification: {e}"))?;
        child.grant(sub, PORTS, Rights::MANAGE)?;
        child.grant(ready, READY, Rights::WRITE)?;
        child.start()?;
        sys::wait(ready, 2_000_000_000).map_err(|e| format!("the child did not enable its ports: {e}"))?;
        sys::cap_revoke(sub).map_err(|e| format!("revoke: {e}"))?;
        // A fixed kernel faults it at once; a broken one lets it spin (kept
        // short: under -icount on 4 CPUs 200 ms is many seconds).
        child.outcome(200_000_000)
    })();
    child.remove();
    let _ = sys::cap_delete(sub);
    let _ = sys::cap_delete(ready);
    let got = setup?;
    if got != (abi::ProcessState::Faulted, 13) {
        return Err(format!(
            "a process whose I/O-port capability was revoked while it read 0xCF8 on CPU {cpu} ended {got:?}, expected #GP (Faulted 13)"
        ));
    }
    Ok(())
}

/// A thread of ours sends through a badged copy of an endpoint capability
/// and waits in the endpoint's queue (nobody receives yet); we revoke the
/// copy, then receive: nothing may arrive (it used to be delivered with
/// the badge and GRANT right captured when it was queued), and the send
/// fails with Gone.
pub fn revoked_sender_capability_leaves_the_queue(env: &mut Env) -> Result<(), String> {
    let ep = env.slot();
    sys::create(ObjectType::Endpoint, ep, 0).map_err(|e| format!("endpoint: {e}"))?;
    let badged = env.slot();
    sys::cap_copy(ep, badged, Rights::SEND | Rights::GRANT, 0xbad).map_err(|e| format!("mint: {e}"))?;
    let page = env.slot();
    sys::create(ObjectType::Frame, page, 1).map_err(|e| format!("frame: {e}"))?;
    let pva = env.reserve_va(1);
    sys::map(SLOT_SELF, page, pva, RW).map_err(|e| format!("map: {e}"))?;
    let (stack, sva) = (env.slot(), env.reserve_va(1));
    sys::create(ObjectType::Frame, stack, 1).map_err(|e| format!("stack: {e}"))?;
    sys::map(SLOT_SELF, stack, sva, RW).map_err(|e| format!("map stack: {e}"))?;
    let (t, idle) = (env.slot(), env.slot());
    let run = (|| -> Result<_, String> {
        sys::create(ObjectType::Notification, idle, 0).map_err(|e| format!("notification: {e}"))?;
        sys::create(ObjectType::Thread, t, u64::from(SLOT_SELF)).map_err(|e| format!("thread: {e}"))?;
        // SAFETY: the stack is a fresh mapping for this thread alone; it
        // sends a short message only (no IPC buffer).
        unsafe { sys::thread_configure(t, send_once as *const () as u64, sva + PAGE_SIZE - 8, 0, pva, u64::from(badged)) }
            .map_err(|e| format!("configure: {e}"))?;
        sys::thread_set_priority(t, 50, Some(0)).map_err(|e| format!("priority: {e}"))?;
        sys::thread_resume(t).map_err(|e| format!("resume: {e}"))?;
        // Until it is queued: it marks word 0 just before sending, and
        // runs only while we wait (it is below us on our CPU).
        for _ in 0..100 {
            let _ = sys::wait(idle, 2_000_000);
            if word(pva, 0) != 0 {
                break;
            }
        }
        let _ = sys::wait(idle, 20_000_000);
        if word(pva, 0) == 0 {
            return Err(String::from("the sending thread never ran"));
        }
        sys::cap_revoke(ep).map_err(|e| format!("revoke: {e}"))?;
        let got = sys::recv(ep, 50_000_000);
        for _ in 0..100 {
            if word(pva, 1) != 0 {
                break;
            }
            let _ = sys::wait(idle, 2_000_000);
        }
        Ok((got.map(|m| m.badge), word(pva, 1)))
    })();
    let _ = sys::cap_delete(t);
    let _ = sys::cap_delete(idle);
    let _ = sys::cap_delete(badged);
    let _ = sys::cap_delete(ep);
    for (f, va) in [(page, pva), (stack, sva)] {
        // SAFETY: this test's own mappings, unused now (the thread is gone).
        let _ = unsafe { sys::unmap(SLOT_SELF, va, 1) };
        let _ = sys::cap_delete(f);
    }
    let (got, result) = run?;
    if let Ok(badge) = got {
        return Err(format!("a send queued through a revoked capability was delivered (badge {badge:#x})"));
    }
    if result != 100 + Error::Gone as u64 {
        return Err(format!("the queued send ended with code {result} (got {got:?} receiving), expected Gone (100 + {})", Error::Gone as u64));
    }
    Ok(())
}

fn word(page: u64, i: u64) -> u64 {
    // SAFETY: `page` is a page this test mapped for the thread and itself.
    unsafe { ((page + 8 * i) as *const u64).read_volatile() }
}

fn set_word(page: u64, i: u64, v: u64) {
    // SAFETY: as in `word`.
    unsafe { ((page + 8 * i) as *mut u64).write_volatile(v) }
}

/// Marks word 0, sends once through `ep`, records the result in word 1
/// (1 delivered, 100 + error), then waits to be ended.
extern "C" fn send_once(_ipc: u64, page: u64, ep: u64) -> ! {
    set_word(page, 0, 1);
    let r = sys::send(ep as CapSlot, MsgInfo::new(1, 1, 0), [7, 0, 0, 0]);
    set_word(page, 1, match r {
        Ok(()) => 1,
        Err(e) => 100 + e as u64,
    });
    loop {
        let _ = sys::yield_now();
    }
}

/// Finding 3, the IPC case: a process enables ports and blocks in a call
/// that switches this CPU straight to the receiver, an unprivileged
/// process, with nothing scheduled between; the receiver must fault on
/// 0xCF8. This does NOT show the finding-3 leak by itself (it passes with
/// `IoPortEnable`'s owner update reverted): the return from
/// `IoPortEnable` to the driver already passes through `switch_to`, which
/// records the driver as the TSS's owner once it has a bitmap. The leak
/// needs that very return to switch to another process (an interrupt
/// taken while waiting for the kernel lock, a remote suspend, a timeout
/// expiring in that exit), which a test cannot force; this test keeps the
/// direct-switch paths (fast and slow IPC) honest.
pub fn io_ports_stay_with_their_process_through_a_direct_switch(env: &mut Env) -> Result<(), String> {
    const PORTS: CapSlot = 5;
    const EP: CapSlot = 6;
    let src = cf8_ports(env)?;
    let prober_code = Code::new().sys_forever(Sys::Recv, EP).or_exit().read_cf8(false).exit(0);
    let driver_code = Code::new().sys(Sys::IoPortEnable, PORTS, 0).or_exit().sys(Sys::Call, EP, 0).or_exit().exit(0);
    // Both on our CPU (the manifest pins us to CPU 0).
    let prober = Child::new(env, &prober_code, 0)?;
    let driver = match Child::new(env, &driver_code, 0) {
        Ok(d) => d,
        Err(e) => {
            prober.remove();
            return Err(e);
        }
    };
    let (sub, ep, idle) = (env.slot(), env.slot(), env.slot());
    let run = (|| -> Result<_, String> {
        sys::create_from(ObjectType::IoPorts, sub, 0xcf8 | 8 << 16, src).map_err(|e| format!("io ports: {e}"))?;
        sys::create(ObjectType::Endpoint, ep, 0).map_err(|e| format!("endpoint: {e}"))?;
        sys::create(ObjectType::Notification, idle, 0).map_err(|e| format!("notification: {e}"))?;
        driver.grant(sub, PORTS, Rights::MANAGE)?;
        driver.grant(ep, EP, Rights::SEND)?;
        prober.grant(ep, EP, Rights::RECV)?;
        prober.start()?;
        // It runs when we wait, and blocks in its receive.
        let _ = sys::wait(idle, 20_000_000);
        driver.start()?;
        let p = prober.outcome(2_000_000_000)?;
        let d = sys::process_info(driver.process).map_err(|e| format!("process info: {e}"))?;
        Ok((p, (d.state, d.code)))
    })();
    prober.remove();
    driver.remove();
    for s in [sub, ep, idle] {
        let _ = sys::cap_delete(s);
    }
    let (p, d) = run?;
    if d.0 != abi::ProcessState::Running {
        return Err(format!("the driver ended {d:?} instead of waiting for its reply"));
    }
    if p != (abi::ProcessState::Faulted, 13) {
        return Err(format!(
            "a process without ports that a caller with 0xCF8 switched to directly ended {p:?}, expected #GP (Faulted 13)"
        ));
    }
    Ok(())
}
