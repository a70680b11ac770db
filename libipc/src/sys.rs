//! The system calls, one wrapper per [`abi::Sys`] entry, on Alcove only.
//!
//! Calling convention (see `abi`): number in `rax`, arguments in `rdi, rsi,
//! rdx, r10, r8, r9`; `syscall` clobbers `rcx` and `r11`; `rax` comes back
//! as 0 or an [`abi::Error`] code, results in `rdi, rsi, rdx, r10, r8, r9`.
//! An error code this build does not know (a kernel newer than libipc) reads
//! as [`Error::NoSyscall`]: the two disagree on the ABI.
//!
//! The wrappers take raw slot numbers; [`crate::cap::Cap`] is the typed layer
//! over them. They are safe except where the call can change memory the
//! program uses behind Rust's back ([`unmap`], [`thread_configure`]); as in
//! rust-sel4, mapping is safe because the kernel refuses to map over a
//! mapped page.
//!
//! # The IPC buffer
//!
//! Message words 4 and up, and capability transfers, go through the calling
//! thread's IPC buffer. Each thread has its own (the kernel learns it from
//! [`thread_configure`]): the main thread's is registered with
//! [`set_ipc_buffer`], and every other thread's with
//! [`register_thread_buffer`] together with the thread's stack, which is how
//! libipc tells the threads apart without thread-local storage (the calling
//! thread is the one whose stack holds the caller's stack pointer). Code
//! reaches the buffer only through [`with_ipc_buffer`], and the IPC calls
//! refuse to run (`Error::BadState`) while the calling thread's buffer is
//! borrowed, so the kernel never writes a buffer under a live reference.
//! A thread with no buffer of its own (started on the process's) shares
//! the main thread's, as before: such threads must not do IPC at the same
//! time.

use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};

use abi::{CapSlot, Error, IpcBuffer, MSG_REG_WORDS, MsgInfo, ObjectType, ProcessState, Rights, Sys};

use crate::wire::Message;

/// The raw `syscall`: number and six argument registers in, status and six
/// result registers out.
///
/// # Safety
///
/// The call must not make the kernel read or write memory other than what
/// the caller has made valid for it: a buffer passed by pointer and length
/// must be live for the call, and IPC calls need the IPC buffer contract of
/// [`set_ipc_buffer`] and no live borrow of the buffer.
#[inline(always)]
unsafe fn syscall(number: Sys, args: [u64; 6]) -> (u64, [u64; 6]) {
    // SAFETY: forwarded from this function's contract.
    unsafe { raw(number as u64, args) }
}

/// The raw `syscall` with any number: for system tests that hand the kernel
/// garbage on purpose.
///
/// # Safety
///
/// As the typed wrappers: whatever the call makes the kernel do to this
/// process's memory and capabilities is the caller's responsibility.
#[inline(always)]
pub unsafe fn raw(number: u64, args: [u64; 6]) -> (u64, [u64; 6]) {
    let [mut a0, mut a1, mut a2, mut a3, mut a4, mut a5] = args;
    let status: u64;
    // SAFETY:
    // 1. The register use is abi's calling convention: number in rax,
    //    arguments and results in rdi, rsi, rdx, r10, r8, r9, with rcx and r11
    //    (return rip and rflags) declared clobbered; the kernel preserves
    //    every other register and does not touch the user stack (`nostack`).
    // 2. Memory the kernel may touch is the caller's obligation (see # Safety);
    //    the asm is not `nomem`, so the compiler assumes memory may change.
    unsafe {
        core::arch::asm!(
            "syscall",
            inlateout("rax") number => status,
            inout("rdi") a0,
            inout("rsi") a1,
            inout("rdx") a2,
            inout("r10") a3,
            inout("r8") a4,
            inout("r9") a5,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    (status, [a0, a1, a2, a3, a4, a5])
}

/// Maps `rax` to a result.
#[inline]
fn check(status: u64) -> Result<(), Error> {
    match status {
        0 => Ok(()),
        code => Err(Error::from_u64(code).unwrap_or(Error::NoSyscall)),
    }
}

/// A call whose arguments are slots and integers only: the kernel reads and
/// writes no user memory and changes no mapping of the caller's. Every use
/// below is such a call.
fn plain(number: Sys, args: [u64; 6]) -> Result<[u64; 6], Error> {
    debug_assert!(!matches!(
        number,
        Sys::DebugWrite | Sys::Call | Sys::Send | Sys::Recv | Sys::ReplyRecv | Sys::Unmap | Sys::ThreadConfigure
    ));
    // SAFETY: as above, the kernel touches no user memory for these calls.
    let (status, out) = unsafe { syscall(number, args) };
    check(status).map(|()| out)
}

// ----------------------------------------------------------------------------
// The IPC buffer.

/// One IPC buffer and the stack of the thread it belongs to.
struct BufferSlot {
    buffer: AtomicPtr<IpcBuffer>,
    borrowed: AtomicBool,
    /// The owning thread's stack, `stack_lo..stack_hi` (0..0: the main
    /// thread's, or free).
    stack_lo: AtomicU64,
    stack_hi: AtomicU64,
}

impl BufferSlot {
    const fn new() -> Self {
        Self {
            buffer: AtomicPtr::new(core::ptr::null_mut()),
            borrowed: AtomicBool::new(false),
            stack_lo: AtomicU64::new(0),
            stack_hi: AtomicU64::new(0),
        }
    }
}

/// The main thread's buffer (and that of threads started on it).
static PROCESS_BUFFER: BufferSlot = BufferSlot::new();
/// How many threads of a process may have buffers of their own.
pub const MAX_THREAD_BUFFERS: usize = 256;
static THREAD_BUFFERS: [BufferSlot; MAX_THREAD_BUFFERS] = [const { BufferSlot::new() }; MAX_THREAD_BUFFERS];
/// How many entries of `THREAD_BUFFERS` have ever been used (the lookup
/// looks no further).
static THREAD_BUFFERS_USED: AtomicUsize = AtomicUsize::new(0);

/// How many buffers are borrowed right now (by `with_ipc_buffer`), in any
/// thread. An IPC call checks its own thread's buffer only when some buffer
/// is borrowed: nearly always none is, and one load then replaces the
/// search by stack pointer in `current`.
static BORROWED: AtomicUsize = AtomicUsize::new(0);

/// The calling thread's buffer slot: the one whose stack holds this
/// frame, else the process's.
fn current() -> &'static BufferSlot {
    let marker = 0u8;
    let sp = core::ptr::addr_of!(marker) as u64;
    let used = THREAD_BUFFERS_USED.load(Ordering::Acquire);
    for t in &THREAD_BUFFERS[..used] {
        let lo = t.stack_lo.load(Ordering::Acquire);
        if lo != 0 && lo <= sp && sp < t.stack_hi.load(Ordering::Acquire) {
            return t;
        }
    }
    &PROCESS_BUFFER
}

/// Registers the main thread's IPC buffer with libipc (the kernel learns it
/// from [`thread_configure`]). Called once by the runtime at startup.
///
/// # Safety
///
/// `buffer` must be valid for reads and writes of an `IpcBuffer`, aligned, the
/// buffer the kernel has registered for this thread, and used by nothing but
/// libipc and the kernel for the rest of the process's life. Threads
/// started on this buffer (not on one of their own) must not do IPC at the
/// same time as each other or the main thread.
pub unsafe fn set_ipc_buffer(buffer: *mut IpcBuffer) {
    PROCESS_BUFFER.buffer.store(buffer, Ordering::Release);
    // Receive no capabilities until a caller names slots for them
    // (`kernel::CapTransport`): a zeroed page would name slot 0.
    let _ = with_ipc_buffer(|b| b.recv_slots = [u64::MAX; abi::MSG_MAX_CAPS]);
}

/// A thread's own IPC buffer, registered with [`register_thread_buffer`].
#[derive(Debug)]
pub struct ThreadBuffer(usize);

/// Registers the IPC buffer of a thread about to start on the stack
/// `stack_lo..stack_hi`: IPC made on that stack uses `buffer`. Fails with
/// `Error::OutOfBudget` when [`MAX_THREAD_BUFFERS`] are registered.
///
/// # Safety
///
/// 1. `buffer` is valid for reads and writes of an `IpcBuffer`, aligned,
///    used by nothing but libipc and the kernel until
///    [`unregister_thread_buffer`], and is the buffer given to
///    [`thread_configure`] for the thread.
/// 2. `stack_lo..stack_hi` is that thread's stack alone, overlapping no
///    other registered stack and not the main thread's.
pub unsafe fn register_thread_buffer(stack_lo: u64, stack_hi: u64, buffer: *mut IpcBuffer) -> Result<ThreadBuffer, Error> {
    if stack_lo == 0 || stack_hi <= stack_lo || buffer.is_null() {
        return Err(Error::InvalidArgument);
    }
    for (i, t) in THREAD_BUFFERS.iter().enumerate() {
        // Claim a free entry by its buffer pointer first.
        if t.buffer.compare_exchange(core::ptr::null_mut(), buffer, Ordering::AcqRel, Ordering::Acquire).is_ok() {
            // SAFETY: the caller's contract 1: valid, aligned, unused by
            // anyone else yet (the thread has not started).
            unsafe { (*buffer).recv_slots = [u64::MAX; abi::MSG_MAX_CAPS] };
            t.borrowed.store(false, Ordering::Release);
            t.stack_hi.store(stack_hi, Ordering::Release);
            t.stack_lo.store(stack_lo, Ordering::Release);
            THREAD_BUFFERS_USED.fetch_max(i + 1, Ordering::AcqRel);
            return Ok(ThreadBuffer(i));
        }
    }
    Err(Error::OutOfBudget)
}

/// Forgets a thread's buffer.
///
/// # Safety
///
/// The thread has ended (its stack runs no code any more).
pub unsafe fn unregister_thread_buffer(t: ThreadBuffer) {
    let slot = &THREAD_BUFFERS[t.0];
    slot.stack_lo.store(0, Ordering::Release);
    slot.stack_hi.store(0, Ordering::Release);
    slot.buffer.store(core::ptr::null_mut(), Ordering::Release);
}

/// Runs `f` on the calling thread's IPC buffer. `Error::BadState` if none
/// is registered or it is already borrowed (a nested call).
pub fn with_ipc_buffer<R>(f: impl FnOnce(&mut IpcBuffer) -> R) -> Result<R, Error> {
    struct Borrow(&'static BufferSlot);
    impl Drop for Borrow {
        fn drop(&mut self) {
            self.0.borrowed.store(false, Ordering::Release);
            BORROWED.fetch_sub(1, Ordering::Release);
        }
    }

    let slot = current();
    let buffer = slot.buffer.load(Ordering::Acquire);
    if buffer.is_null() || slot.borrowed.swap(true, Ordering::Acquire) {
        return Err(Error::BadState);
    }
    // Counted before `f` runs: an IPC call made inside it sees the count
    // (this thread's own store, in program order) and checks the flag.
    BORROWED.fetch_add(1, Ordering::AcqRel);
    let _borrow = Borrow(slot);
    // SAFETY:
    // 1. `set_ipc_buffer`'s or `register_thread_buffer`'s contract makes
    //    `buffer` valid, aligned and reserved for libipc and the kernel.
    // 2. The flag makes this the only reference: nested calls fail above, and
    //    IPC system calls (the kernel's only accesses) refuse to run while it
    //    is set, so nothing else reads or writes the buffer during `f`. The
    //    buffer is this thread's (threads sharing the process's buffer
    //    promised not to do IPC at the same time).
    Ok(f(unsafe { &mut *buffer }))
}

/// An IPC system call: the kernel may read and write the IPC buffer.
#[inline]
fn ipc(number: Sys, args: [u64; 6]) -> Result<[u64; 6], Error> {
    // The calling thread's own borrow, if any, is counted in `BORROWED`
    // (its own earlier store): with none counted it has none.
    if BORROWED.load(Ordering::Acquire) != 0 && current().borrowed.load(Ordering::Acquire) {
        return Err(Error::BadState);
    }
    // SAFETY: the kernel touches only registers and the calling thread's
    // IPC buffer, which the registration contracts reserve for it and
    // which no reference points into right now (checked above).
    let (status, out) = unsafe { syscall(number, args) };
    check(status).map(|()| out)
}

/// An IPC call that receives a message.
#[inline]
fn ipc_receive(number: Sys, args: [u64; 6]) -> Result<Message, Error> {
    let out = ipc(number, args)?;
    let info = MsgInfo::decode(out[1]).ok_or(Error::NoSyscall)?;
    Ok(Message { badge: out[0], info, words: [out[2], out[3], out[4], out[5]] })
}

#[inline]
fn send_args(slot: CapSlot, info: MsgInfo, w: [u64; MSG_REG_WORDS]) -> [u64; 6] {
    [u64::from(slot), info.encode(), w[0], w[1], w[2], w[3]]
}

// ----------------------------------------------------------------------------
// One wrapper per `abi::Sys` entry, in its order.

/// [`Sys::DebugWrite`]: writes `bytes` to the kernel console.
pub fn debug_write(console: CapSlot, bytes: &[u8]) -> Result<(), Error> {
    // SAFETY: the kernel reads `bytes.len()` bytes at `bytes.as_ptr()`, which
    // the borrowed slice keeps valid for the call; it writes no user memory.
    let (status, _) = unsafe {
        syscall(Sys::DebugWrite, [u64::from(console), bytes.as_ptr() as u64, bytes.len() as u64, 0, 0, 0])
    };
    check(status)
}

/// [`Sys::Yield`]: gives up the rest of the time slice.
pub fn yield_now() -> Result<(), Error> {
    plain(Sys::Yield, [0; 6]).map(drop)
}

/// [`Sys::Nop`]: a system call that does nothing (the null-syscall cost).
pub fn nop() -> Result<(), Error> {
    plain(Sys::Nop, [0; 6]).map(drop)
}

/// [`Sys::BenchPhases`]: the kernel's per-phase counts of fast-path system
/// calls (benchmarks; needs the console capability).
pub fn bench_phases(console: CapSlot, op: u64) -> Result<(u64, u64), Error> {
    plain(Sys::BenchPhases, [u64::from(console), op, 0, 0, 0, 0]).map(|r| (r[0], r[1]))
}

/// [`Sys::BenchPhases`]' third answer to a read (`op` 2): how many calls on
/// the caller's CPU, since the counts were reset, the fast path would have
/// completed but left to the general path because the CPU had scheduling
/// work pending (a tick, a throttled thread, a higher-priority thread ready).
pub fn bench_fallbacks(console: CapSlot) -> Result<u64, Error> {
    plain(Sys::BenchPhases, [u64::from(console), 2, 0, 0, 0, 0]).map(|r| r[2])
}

/// [`Sys::FaultInject`]: the test kernel's fault injection (needs
/// `alcove.inject=on` on the kernel command line and the console
/// capability with MANAGE). `op` is one of `abi::FAULT_*`; returns the
/// armed point (0: none) and its phase.
pub fn fault_inject(console: CapSlot, op: u64, point: u64, ns: u64) -> Result<(u64, abi::FaultPhase), Error> {
    let r = plain(Sys::FaultInject, [u64::from(console), op, point, ns, 0, 0])?;
    Ok((r[0], abi::FaultPhase::from_u64(r[1]).unwrap_or(abi::FaultPhase::Idle)))
}

/// [`Sys::Call`]: sends and waits for the reply. Words 4.. of both messages
/// are in the IPC buffer.
#[inline]
pub fn call(endpoint: CapSlot, info: MsgInfo, words: [u64; MSG_REG_WORDS]) -> Result<Message, Error> {
    ipc_receive(Sys::Call, send_args(endpoint, info, words))
}

/// [`Sys::Send`]: sends, blocking until a receiver takes the message.
pub fn send(endpoint: CapSlot, info: MsgInfo, words: [u64; MSG_REG_WORDS]) -> Result<(), Error> {
    ipc(Sys::Send, send_args(endpoint, info, words)).map(drop)
}

/// [`Sys::Recv`]: waits up to `timeout_ns` (`abi::FOREVER`; 0 polls) for a
/// message on an endpoint or a signal on a notification.
#[inline]
pub fn recv(slot: CapSlot, timeout_ns: u64) -> Result<Message, Error> {
    ipc_receive(Sys::Recv, [u64::from(slot), timeout_ns, 0, 0, 0, 0])
}

/// [`Sys::ReplyRecv`]: replies to the last caller, then receives.
#[inline]
pub fn reply_recv(endpoint: CapSlot, info: MsgInfo, words: [u64; MSG_REG_WORDS]) -> Result<Message, Error> {
    ipc_receive(Sys::ReplyRecv, send_args(endpoint, info, words))
}

/// [`Sys::Signal`]: ORs `bits` into the notification, waking a waiter.
pub fn signal(notification: CapSlot, bits: u64) -> Result<(), Error> {
    plain(Sys::Signal, [u64::from(notification), bits, 0, 0, 0, 0]).map(drop)
}

/// [`Sys::Wait`]: waits up to `timeout_ns` for a bit; takes and clears all bits.
pub fn wait(notification: CapSlot, timeout_ns: u64) -> Result<u64, Error> {
    plain(Sys::Wait, [u64::from(notification), timeout_ns, 0, 0, 0, 0]).map(|r| r[0])
}

/// [`Sys::Poll`]: takes and clears the bits without blocking.
pub fn poll(notification: CapSlot) -> Result<u64, Error> {
    plain(Sys::Poll, [u64::from(notification), 0, 0, 0, 0, 0]).map(|r| r[0])
}

/// [`Sys::CapCopy`]: copies `src` into the empty `dst` with `rights` (no more
/// than it has); a non-zero `badge` mints a badged endpoint/notification.
pub fn cap_copy(src: CapSlot, dst: CapSlot, rights: Rights, badge: u64) -> Result<(), Error> {
    plain(Sys::CapCopy, [u64::from(src), u64::from(dst), u64::from(rights.0), badge, 0, 0]).map(drop)
}

/// [`Sys::CapDelete`]: deletes one capability.
pub fn cap_delete(slot: CapSlot) -> Result<(), Error> {
    plain(Sys::CapDelete, [u64::from(slot), 0, 0, 0, 0, 0]).map(drop)
}

/// [`Sys::CapRevoke`]: deletes every capability derived from `slot`.
pub fn cap_revoke(slot: CapSlot) -> Result<(), Error> {
    plain(Sys::CapRevoke, [u64::from(slot), 0, 0, 0, 0, 0]).map(drop)
}

/// What [`cap_identify`] reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CapInfo {
    /// The kind of object.
    pub object_type: ObjectType,
    /// The rights this capability carries.
    pub rights: Rights,
    /// Its badge (0: unbadged).
    pub badge: u64,
}

/// [`Sys::CapIdentify`]: the object type, rights and badge in `slot`.
pub fn cap_identify(slot: CapSlot) -> Result<CapInfo, Error> {
    let r = plain(Sys::CapIdentify, [u64::from(slot), 0, 0, 0, 0, 0])?;
    Ok(CapInfo {
        object_type: ObjectType::from_u64(r[0]).ok_or(Error::NoSyscall)?,
        rights: Rights(u32::try_from(r[1]).map_err(|_| Error::NoSyscall)?),
        badge: r[2],
    })
}

/// [`Sys::CapGrant`]: gives `process` a copy of the caller's `src` in its
/// slot `dst`, with `rights`.
pub fn cap_grant(process: CapSlot, src: CapSlot, dst: CapSlot, rights: Rights) -> Result<(), Error> {
    plain(Sys::CapGrant, [u64::from(process), u64::from(src), u64::from(dst), u64::from(rights.0), 0, 0]).map(drop)
}

/// [`Sys::Create`]: creates an object in the empty `dst`, charged to the
/// caller's budget. `arg`: pages for a frame, budget bytes for a process, a
/// process slot for a thread.
pub fn create(object_type: ObjectType, dst: CapSlot, arg: u64) -> Result<(), Error> {
    plain(Sys::Create, [object_type as u64, u64::from(dst), arg, 0, 0, 0]).map(drop)
}

/// [`Sys::Create`] of an object derived from one the caller holds in `src`
/// (an I/O-port sub-range: `arg = first | count << 16`).
pub fn create_from(object_type: ObjectType, dst: CapSlot, arg: u64, src: CapSlot) -> Result<(), Error> {
    plain(Sys::Create, [object_type as u64, u64::from(dst), arg, u64::from(src), 0, 0]).map(drop)
}

/// [`Sys::Create`] of a frame over MMIO: `pages` pages at `phys`, from the
/// device-memory capability in `src` (mapped uncached; RAM is refused).
pub fn create_device_frame(dst: CapSlot, phys: u64, pages: u64, src: CapSlot) -> Result<(), Error> {
    plain(Sys::Create, [ObjectType::DeviceMemory as u64, u64::from(dst), phys, u64::from(src), pages, 0]).map(drop)
}

/// [`Sys::VcpuRun`]: runs the vCPU until an exit for the VMM; returns the
/// exit reason (`abi::VcpuExit` as a number; details in the run page).
///
/// # Safety
///
/// The kernel reads and writes the vCPU's run page during the call: no
/// reference into that page may be alive (`alcove_rt::RunPage::run` is
/// the safe way).
pub unsafe fn vcpu_run(vcpu: CapSlot) -> Result<u64, Error> {
    // SAFETY: the kernel writes only the run page, which the caller's
    // contract leaves unreferenced.
    let (status, out) = unsafe { syscall(Sys::VcpuRun, [u64::from(vcpu), 0, 0, 0, 0, 0]) };
    check(status).map(|()| out[0])
}

/// [`Sys::VcpuKick`]: makes the vCPU's `vcpu_run` return soon.
pub fn vcpu_kick(vcpu: CapSlot) -> Result<(), Error> {
    plain(Sys::VcpuKick, [u64::from(vcpu), 0, 0, 0, 0, 0]).map(drop)
}

/// [`Sys::IrqMsiInfo`]: the (address, data) pair for a PCI MSI capability.
pub fn irq_msi_info(irq: CapSlot) -> Result<(u64, u64), Error> {
    plain(Sys::IrqMsiInfo, [u64::from(irq), 0, 0, 0, 0, 0]).map(|r| (r[0], r[1]))
}

/// [`Sys::VcpuInterrupt`]: a fixed, edge-triggered interrupt with `vector`
/// into the vCPU.
pub fn vcpu_interrupt(vcpu: CapSlot, vector: u8) -> Result<(), Error> {
    plain(Sys::VcpuInterrupt, [u64::from(vcpu), u64::from(vector), 0, 0, 0, 0]).map(drop)
}

/// [`Sys::VcpuInterrupt`] for a level-triggered interrupt: its EOI ends a
/// run with `VcpuExit::Eoi`.
pub fn vcpu_interrupt_level(vcpu: CapSlot, vector: u8) -> Result<(), Error> {
    let arg = u64::from(vector) | abi::VCPU_INTERRUPT_LEVEL;
    plain(Sys::VcpuInterrupt, [u64::from(vcpu), arg, 0, 0, 0, 0]).map(drop)
}

/// [`Sys::ThreadSetBudget`]: at most `budget_ns` of CPU time per
/// `period_ns` (`budget_ns = 0`: no limit).
pub fn thread_set_budget(thread: CapSlot, budget_ns: u64, period_ns: u64) -> Result<(), Error> {
    plain(Sys::ThreadSetBudget, [u64::from(thread), budget_ns, period_ns, 0, 0, 0]).map(drop)
}

/// [`Sys::MachineExit`]: ends the machine with a verdict (needs the console
/// capability with `Rights::MANAGE`; system tests only).
pub fn machine_exit(console: CapSlot, status: u64) -> Result<(), Error> {
    plain(Sys::MachineExit, [u64::from(console), status, 0, 0, 0, 0]).map(drop)
}

/// [`Sys::Map`]: maps `frame` (a frame or device memory) into `process` at
/// `vaddr`. The kernel refuses mapped addresses (`Error::AlreadyMapped`).
pub fn map(process: CapSlot, frame: CapSlot, vaddr: u64, rights: Rights) -> Result<(), Error> {
    plain(Sys::Map, [u64::from(process), u64::from(frame), vaddr, u64::from(rights.0), 0, 0]).map(drop)
}

/// [`Sys::Unmap`]: unmaps `pages` pages of `process` at `vaddr`.
///
/// # Safety
///
/// If `process` is the caller's own, nothing may use the range any more: no
/// reference, heap block or stack may live there, since a later mapping could
/// put other memory under it.
pub unsafe fn unmap(process: CapSlot, vaddr: u64, pages: u64) -> Result<(), Error> {
    // SAFETY: the kernel reads no user memory for this call; that the range is
    // no longer in use is the caller's obligation (see # Safety).
    let (status, _) = unsafe { syscall(Sys::Unmap, [u64::from(process), vaddr, pages, 0, 0, 0]) };
    check(status)
}

/// [`Sys::ThreadConfigure`]: where `thread` starts, its stack, its IPC buffer.
/// Only for a thread not resumed yet or suspended (else `BadState`).
///
/// # Safety
///
/// If the thread belongs to the caller's process, `entry` must be code that is
/// sound to run on `stack` (memory reserved for that thread), and
/// `ipc_buffer` a page reserved for that thread's IPC (the kernel writes it
/// on every receive); for the calling thread itself, the same buffer must be
/// given to [`set_ipc_buffer`].
pub unsafe fn thread_configure(
    thread: CapSlot,
    entry: u64,
    stack: u64,
    ipc_buffer: u64,
    arg0: u64,
    arg1: u64,
) -> Result<(), Error> {
    // SAFETY: the kernel reads no user memory for this call; what the thread
    // later runs and where the kernel later writes is the caller's obligation
    // (see # Safety).
    let (status, _) = unsafe { syscall(Sys::ThreadConfigure, [u64::from(thread), entry, stack, ipc_buffer, arg0, arg1]) };
    check(status)
}

/// [`Sys::ThreadSetPriority`]: `cpu: None` lets the kernel choose.
pub fn thread_set_priority(thread: CapSlot, priority: u8, cpu: Option<u32>) -> Result<(), Error> {
    let cpu = cpu.map_or(u64::MAX, u64::from);
    plain(Sys::ThreadSetPriority, [u64::from(thread), u64::from(priority), cpu, 0, 0, 0]).map(drop)
}

/// [`Sys::ThreadResume`]: makes a configured thread runnable.
pub fn thread_resume(thread: CapSlot) -> Result<(), Error> {
    plain(Sys::ThreadResume, [u64::from(thread), 0, 0, 0, 0, 0]).map(drop)
}

/// [`Sys::ThreadSuspend`]: stops a thread.
pub fn thread_suspend(thread: CapSlot) -> Result<(), Error> {
    plain(Sys::ThreadSuspend, [u64::from(thread), 0, 0, 0, 0, 0]).map(drop)
}

/// [`Sys::ThreadBindNotification`]: `Recv` on an endpoint also returns when
/// `notification` is signalled.
pub fn thread_bind_notification(thread: CapSlot, notification: CapSlot) -> Result<(), Error> {
    plain(Sys::ThreadBindNotification, [u64::from(thread), u64::from(notification), 0, 0, 0, 0]).map(drop)
}

/// [`Sys::Exit`]: ends the calling process (every thread).
pub fn exit(code: u64) -> ! {
    loop {
        // Exit does not return; should the kernel refuse, ask again rather
        // than run on.
        let _ = plain(Sys::Exit, [code, 0, 0, 0, 0, 0]);
    }
}

/// [`Sys::IrqBind`]: delivers the interrupt as `bits` on `notification`.
pub fn irq_bind(irq: CapSlot, notification: CapSlot, bits: u64) -> Result<(), Error> {
    plain(Sys::IrqBind, [u64::from(irq), u64::from(notification), bits, 0, 0, 0]).map(drop)
}

/// [`Sys::IrqAck`]: unmasks the line after the driver handled it.
pub fn irq_ack(irq: CapSlot) -> Result<(), Error> {
    plain(Sys::IrqAck, [u64::from(irq), 0, 0, 0, 0, 0]).map(drop)
}

/// [`Sys::IoPortEnable`]: lets the calling process use `in`/`out` on the range.
pub fn io_port_enable(ioports: CapSlot) -> Result<(), Error> {
    plain(Sys::IoPortEnable, [u64::from(ioports), 0, 0, 0, 0, 0]).map(drop)
}

/// What [`frame_info`] reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameInfo {
    /// Physical address of the first page.
    pub phys_addr: u64,
    /// Number of contiguous pages.
    pub pages: u64,
}

/// [`Sys::FrameInfo`]: physical address and size, for DMA.
pub fn frame_info(frame: CapSlot) -> Result<FrameInfo, Error> {
    let r = plain(Sys::FrameInfo, [u64::from(frame), 0, 0, 0, 0, 0])?;
    Ok(FrameInfo { phys_addr: r[0], pages: r[1] })
}

/// What [`budget_info`] reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BudgetInfo {
    /// Kernel memory charged to the caller.
    pub used_bytes: u64,
    /// The most it may be charged.
    pub limit_bytes: u64,
}

/// [`Sys::BudgetInfo`]: the caller's kernel-memory budget.
pub fn budget_info() -> Result<BudgetInfo, Error> {
    let r = plain(Sys::BudgetInfo, [0; 6])?;
    Ok(BudgetInfo { used_bytes: r[0], limit_bytes: r[1] })
}

/// [`Sys::Clock`]: nanoseconds since boot.
pub fn clock_ns() -> Result<u64, Error> {
    plain(Sys::Clock, [0; 6]).map(|r| r[0])
}

/// [`Sys::Clock`]'s third result: seconds since the Unix epoch (0 when the
/// machine has no clock).
pub fn unix_seconds() -> Result<u64, Error> {
    plain(Sys::Clock, [0; 6]).map(|r| r[2])
}

/// [`Sys::Clock`]'s second result: the TSC frequency in kHz.
pub fn tsc_khz() -> Result<u64, Error> {
    plain(Sys::Clock, [0; 6]).map(|r| r[1])
}

/// What [`process_info`] reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcessInfo {
    /// Running, exited or faulted.
    pub state: ProcessState,
    /// The exit code (exited) or fault vector (faulted).
    pub code: u64,
}

/// [`Sys::ProcessInfo`]: whether `process` runs, and how it ended.
pub fn process_info(process: CapSlot) -> Result<ProcessInfo, Error> {
    let r = plain(Sys::ProcessInfo, [u64::from(process), 0, 0, 0, 0, 0])?;
    let state = match r[0] {
        0 => ProcessState::Running,
        1 => ProcessState::Exited,
        2 => ProcessState::Faulted,
        _ => return Err(Error::NoSyscall),
    };
    Ok(ProcessInfo { state, code: r[1] })
}

/// [`Sys::ProcessWatch`]: signals `bits` on `notification` when `process` ends.
pub fn process_watch(process: CapSlot, notification: CapSlot, bits: u64) -> Result<(), Error> {
    plain(Sys::ProcessWatch, [u64::from(process), u64::from(notification), bits, 0, 0, 0]).map(drop)
}
