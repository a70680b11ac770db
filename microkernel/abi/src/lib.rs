//! The system-call ABI of the Alcove microkernel, defined once and shared by
//! the kernel (which decodes it) and `libipc` (which encodes it).
//!
//! # Calling convention
//!
//! `syscall` with the number in `rax` and arguments in `rdi, rsi, rdx, r10,
//! r8, r9` (`rcx` and `r11` are clobbered by the instruction). On return `rax`
//! holds `0` or an [`Error`] code, and results come back in `rdi, rsi, rdx,
//! r10, r8, r9` in that order.
//!
//! IPC uses the same registers as *message registers*: `rdi` = capability
//! slot (in) / badge (out), `rsi` = [`MsgInfo`], `rdx, r10, r8, r9` = message
//! words 0..3. Words 4 and up, and capability transfers, go through the
//! calling thread's IPC buffer ([`IpcBuffer`]), a page the thread registered
//! with [`Sys::ThreadConfigure`].
//!
//! # Capabilities
//!
//! A process names kernel objects by slot numbers ([`CapSlot`]) in its own
//! flat capability table of [`CSPACE_SLOTS`] slots. Every syscall checks that
//! the slot holds a capability of the right [`ObjectType`] with the needed
//! [`Rights`]; nothing a process passes can crash the kernel.
#![no_std]
#![forbid(unsafe_code)]

/// A slot in the calling process's capability table.
pub type CapSlot = u32;

/// Slots per process.
pub const CSPACE_SLOTS: u32 = 1024;

/// Message words that travel in registers.
pub const MSG_REG_WORDS: usize = 4;
/// Largest message, in 64-bit words (registers + IPC buffer): 4 KiB - header.
pub const MSG_MAX_WORDS: usize = 480;
/// Capabilities one message can carry.
pub const MSG_MAX_CAPS: usize = 4;

/// The page size of mappings made through the ABI.
pub const PAGE_SIZE: u64 = 4096;
/// Lowest and highest (exclusive) user virtual addresses a process may map.
pub const USER_MIN: u64 = 0x1000;
pub const USER_MAX: u64 = 0x0000_7fff_ffff_f000;

/// System-call numbers.
#[repr(u64)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sys {
    /// `(console, ptr, len)`: writes bytes to the kernel console.
    DebugWrite = 0,
    /// Gives up the rest of the time slice.
    Yield = 1,
    /// `(endpoint, info, w0..w3)` → `(badge, info, w0..w3)`: send and wait
    /// for the reply.
    Call = 2,
    /// `(endpoint, info, w0..w3)`: send, blocking until a receiver takes it.
    Send = 3,
    /// `(endpoint|notification, timeout_ns)` → `(badge, info, w0..w3)`. A
    /// timeout of `u64::MAX` waits forever, `0` polls. When the thread has a
    /// bound notification and it is signalled, returns with
    /// [`MsgInfo::NOTIFICATION_LABEL`] and the bits in w0.
    Recv = 4,
    /// `(endpoint, info, w0..w3)`: replies to the last caller, then receives.
    /// The reply carries `info.caps` capabilities from `send_caps` into the
    /// caller's `recv_slots` (copies, with the server's rights).
    ReplyRecv = 5,
    /// `(notification, bits)`: ORs bits into the word, wakes a waiter.
    Signal = 6,
    /// `(notification, timeout_ns)` → `(bits)`: waits until a bit is set,
    /// takes and clears all bits.
    Wait = 7,
    /// `(notification)` → `(bits)`: takes and clears the bits, never blocks.
    Poll = 8,
    /// `(src, dst, rights, badge)`: copies a capability with equal or fewer
    /// rights; a non-zero badge mints a badged endpoint/notification
    /// capability from an unbadged one.
    CapCopy = 9,
    /// `(slot)`: deletes one capability.
    CapDelete = 10,
    /// `(slot)`: deletes every capability derived from this one (in any
    /// process), keeping this one.
    CapRevoke = 11,
    /// `(slot)` → `(object type, rights, badge)`.
    CapIdentify = 12,
    /// `(process, src_in_caller, dst_in_process, rights)`: gives a copy of a
    /// capability to a process the caller controls.
    CapGrant = 13,
    /// `(object type, dst, arg, src)`: creates an object charged to the
    /// caller's budget. `arg`: pages for `Frame`, budget bytes for `Process`
    /// (with `src` = capability slots, 0 for 256), a process slot for
    /// `Thread`, `first | count << 16` for `IoPorts` (a sub-range of the
    /// I/O-port capability in slot `src`), the physical address for
    /// `DeviceMemory` (with `src` = the device-memory capability it comes
    /// from and a fifth argument = pages; the result is a frame capability
    /// over that MMIO range, mapped uncached; RAM is refused), and `arg` = 1
    /// for `Irq`: a message-signalled interrupt vector (with `src` = an IRQ
    /// capability, the authority to allocate one).
    Create = 14,
    /// `(process, frame, vaddr, rights)`: maps a frame into a process.
    Map = 15,
    /// `(process, vaddr, pages)`: unmaps.
    Unmap = 16,
    /// `(thread, entry, stack, ipc_buffer_vaddr, arg0, arg1)`: the thread
    /// starts at `entry` with `rdi` = IPC buffer, `rsi` = arg0, `rdx` = arg1.
    /// Only a thread not yet resumed or suspended since (`BadState` for one
    /// that runs, is ready, waits in a system call or for its CPU budget;
    /// also, briefly, for one just suspended that another CPU has not let go
    /// of yet: try again).
    ThreadConfigure = 17,
    /// `(thread, priority, cpu)`: `cpu = u64::MAX` lets the kernel choose.
    /// Only a thread not yet resumed or suspended since (`BadState` as for
    /// `ThreadConfigure`).
    ThreadSetPriority = 18,
    /// `(thread)`: makes a configured thread runnable.
    ThreadResume = 19,
    /// `(thread)`: stops a thread. When it returns the thread runs nowhere
    /// (on another CPU it has left ring 3) and does nothing more: a system
    /// call it had entered but the kernel had not begun is made when it is
    /// resumed.
    ThreadSuspend = 20,
    /// `(thread, notification)`: binds a notification so that `Recv` on an
    /// endpoint also returns when it is signalled.
    ThreadBindNotification = 21,
    /// `(code)`: ends the calling process (every thread).
    Exit = 22,
    /// `(irq, notification, bits)`: delivers the interrupt as a signal.
    IrqBind = 23,
    /// `(irq)`: unmasks the line after the driver handled it.
    IrqAck = 24,
    /// `(ioports)`: lets the calling process use `in`/`out` on the range.
    IoPortEnable = 25,
    /// `(frame)` → `(physical address, pages)`: for DMA.
    FrameInfo = 26,
    /// `()` → `(used bytes, limit bytes)` of the caller's budget.
    BudgetInfo = 27,
    /// `()` → `(nanoseconds since boot, TSC frequency in kHz, Unix time in
    /// seconds or 0 if the machine has no clock)` (the TSC runs at a
    /// constant rate; guests see the host's TSC unchanged).
    Clock = 28,
    /// `(process)` → `(state, exit code)`: see [`ProcessState`].
    ProcessInfo = 29,
    /// `(process, notification, bits)`: signal `bits` when the process ends.
    ProcessWatch = 30,
    /// `(console, status)`: leaves the machine (system tests; needs the
    /// console capability): status 0 = pass, anything else = fail. Under
    /// QEMU and Bochs this ends the emulator; on hardware it halts.
    MachineExit = 31,
    /// `(thread, budget_ns, period_ns)`: the thread may run at most
    /// `budget_ns` in every `period_ns` (the mechanism behind a zone's
    /// `cpu_cap`); `budget_ns = 0` removes the limit.
    ThreadSetBudget = 32,
    /// `(vcpu)` → `(exit reason)`: runs the guest on the calling thread until
    /// an exit the VMM must handle; details are in the vCPU's run page.
    /// Exits the kernel can finish (CPUID, plain-state MSRs) never return.
    VcpuRun = 33,
    /// `(vcpu)`: makes the vCPU's `VcpuRun` return (`Interrupted`) soon:
    /// at once if it runs or sleeps in a HLT, else on its next entry.
    VcpuKick = 34,
    /// `(irq)` → `(address, data)`: what to program into a PCI device's
    /// MSI capability so that its messages reach this (MSI) IRQ capability.
    IrqMsiInfo = 35,
    /// `(vcpu, vector | flags)`: delivers a fixed interrupt to the vCPU's
    /// local APIC (what a device model's IOAPIC or MSI would), waking it
    /// from HLT or making a running vCPU take it. With
    /// [`VCPU_INTERRUPT_LEVEL`] it is level-triggered: the guest's EOI of it
    /// ends a run with [`VcpuExit::Eoi`] (the EOI broadcast to the VMM's
    /// I/O APIC).
    VcpuInterrupt = 36,
    /// `()` → `()`: does nothing and succeeds (arguments ignored). The
    /// cheapest real system call: what the `null_syscall` benchmark times.
    Nop = 37,
    /// `(console, op)` → `(ticks, calls, fallbacks)`: the benchmark's per-phase count
    /// of fast-path system calls (needs the console capability). `op` 0
    /// clears the counts and starts counting, 1 stops, `2 + i` reads phase
    /// `i` (lock, decode, cap, switch, exit) on the caller's CPU as `(ticks,
    /// calls completed, calls the fast path left to the general path only
    /// because the CPU had scheduling work pending)`; `op` 100 reads the
    /// turns all CPUs spun waiting for the big kernel lock while counting
    /// was on, as `(turns, 0, 0)`.
    BenchPhases = 38,
    /// `(console, op, point, ns)` → `(point, phase)`: the test kernel's
    /// fault injection ([`FaultPoint`]; system tests only). Exists only
    /// when the kernel was booted with `alcove.inject=on` (otherwise
    /// `Error::NoSyscall`, as for a number that is not a call) and needs
    /// the console capability with `Rights::MANAGE`. `op`:
    /// [`FAULT_ARM`] `point` (a pause lasts at most `ns`, up to
    /// [`FAULT_MAX_PAUSE_NS`]), [`FAULT_STATUS`], [`FAULT_RELEASE`] (ends a
    /// pause), [`FAULT_DISARM`]; each answers the armed point (0: none)
    /// and its [`FaultPhase`] as a number.
    FaultInject = 39,
}

/// Where the kernel's fault injection ([`Sys::FaultInject`]) widens a race
/// window, as KCSAN's delay injection does: each stands for one finding of
/// the security review whose window is otherwise too narrow for a test to
/// hit under an emulator. A point fires once per arming, on whichever CPU
/// reaches it first.
#[repr(u64)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultPoint {
    /// Reschedule on the return from a successful `IoPortEnable` (as a
    /// timer tick landing during the call would): the CPU goes to the next
    /// ready thread of the same priority, perhaps another process's
    /// (finding 3).
    IoPortEnableReturn = 1,
    /// Pause a vCPU's thread between a run's HLT exit (one the kernel
    /// sleeps through) and its retaking the kernel lock, so that another
    /// CPU can delete the vCPU's last capability there (finding 7).
    HaltExit = 2,
    /// Pause a walk of a guest's nested page tables outside the guest
    /// (instruction fetch for an MMIO exit, the APIC page, `read_guest`)
    /// between the translation and the read of the page it found, so that
    /// another CPU can unmap that page (finding 13). A pause ends early
    /// 5 ms after the guest's tables change. While this point is armed
    /// every page the kernel frees is filled with [`FAULT_POISON`], so a
    /// read of a freed page shows.
    GuestWalk = 3,
}

impl FaultPoint {
    pub const fn from_u64(n: u64) -> Option<Self> {
        match n {
            1 => Some(FaultPoint::IoPortEnableReturn),
            2 => Some(FaultPoint::HaltExit),
            3 => Some(FaultPoint::GuestWalk),
            _ => None,
        }
    }
}

/// Where an armed [`FaultPoint`] stands.
#[repr(u64)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultPhase {
    /// Nothing armed.
    Idle = 0,
    /// Armed; no CPU has reached the point yet.
    Armed = 1,
    /// A CPU waits at the point (a pause).
    Paused = 2,
    /// Released while paused; the CPU is about to go on.
    Released = 3,
    /// The point fired and the CPU went on.
    Done = 4,
}

impl FaultPhase {
    pub const fn from_u64(n: u64) -> Option<Self> {
        match n {
            0 => Some(FaultPhase::Idle),
            1 => Some(FaultPhase::Armed),
            2 => Some(FaultPhase::Paused),
            3 => Some(FaultPhase::Released),
            4 => Some(FaultPhase::Done),
            _ => None,
        }
    }
}

/// [`Sys::FaultInject`] operations.
pub const FAULT_ARM: u64 = 0;
pub const FAULT_STATUS: u64 = 1;
pub const FAULT_RELEASE: u64 = 2;
pub const FAULT_DISARM: u64 = 3;
/// The longest pause a point may be armed with.
pub const FAULT_MAX_PAUSE_NS: u64 = 5_000_000_000;
/// The byte freed pages are filled with while [`FaultPoint::GuestWalk`] is
/// armed (Linux's slab poison).
pub const FAULT_POISON: u8 = 0x6b;

impl Sys {
    pub const fn from_u64(n: u64) -> Option<Self> {
        use Sys::*;
        const ALL: [Sys; 40] = [
            DebugWrite, Yield, Call, Send, Recv, ReplyRecv, Signal, Wait, Poll, CapCopy, CapDelete, CapRevoke,
            CapIdentify, CapGrant, Create, Map, Unmap, ThreadConfigure, ThreadSetPriority, ThreadResume,
            ThreadSuspend, ThreadBindNotification, Exit, IrqBind, IrqAck, IoPortEnable, FrameInfo, BudgetInfo,
            Clock, ProcessInfo, ProcessWatch, MachineExit, ThreadSetBudget, VcpuRun, VcpuKick,
            IrqMsiInfo, VcpuInterrupt, Nop, BenchPhases, FaultInject,
        ];
        if (n as usize) < ALL.len() { Some(ALL[n as usize]) } else { None }
    }
}

/// Errors a syscall returns in `rax`.
#[repr(u64)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// No such system call.
    NoSyscall = 1,
    /// The slot number is outside the capability table.
    InvalidSlot = 2,
    /// The slot is empty (or its capability was revoked).
    EmptySlot = 3,
    /// The destination slot is already in use.
    SlotInUse = 4,
    /// The capability is of another object type.
    WrongType = 5,
    /// The capability lacks a right the operation needs.
    NoRights = 6,
    /// An argument is out of range or malformed.
    InvalidArgument = 7,
    /// A user pointer does not point at mapped, accessible user memory.
    BadAddress = 8,
    /// The budget cannot cover the kernel memory the operation needs.
    OutOfBudget = 9,
    /// The address is already mapped.
    AlreadyMapped = 10,
    /// The address is not mapped.
    NotMapped = 11,
    /// A timeout elapsed.
    Timeout = 12,
    /// The operation would block and the caller asked not to.
    WouldBlock = 13,
    /// The object is gone (peer process died, endpoint deleted).
    Gone = 14,
    /// The object is in the wrong state for this (e.g. thread not configured).
    BadState = 15,
    /// The system has no physical memory left.
    OutOfMemory = 16,
}

impl Error {
    pub const fn from_u64(n: u64) -> Option<Self> {
        use Error::*;
        const ALL: [Error; 16] = [
            NoSyscall, InvalidSlot, EmptySlot, SlotInUse, WrongType, NoRights, InvalidArgument, BadAddress,
            OutOfBudget, AlreadyMapped, NotMapped, Timeout, WouldBlock, Gone, BadState, OutOfMemory,
        ];
        if n >= 1 && (n as usize) <= ALL.len() { Some(ALL[n as usize - 1]) } else { None }
    }
}

impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let s = match self {
            Error::NoSyscall => "no such system call",
            Error::InvalidSlot => "capability slot out of range",
            Error::EmptySlot => "empty capability slot",
            Error::SlotInUse => "capability slot in use",
            Error::WrongType => "capability of the wrong type",
            Error::NoRights => "capability lacks the right",
            Error::InvalidArgument => "invalid argument",
            Error::BadAddress => "bad user address",
            Error::OutOfBudget => "kernel-memory budget exhausted",
            Error::AlreadyMapped => "address already mapped",
            Error::NotMapped => "address not mapped",
            Error::Timeout => "timed out",
            Error::WouldBlock => "would block",
            Error::Gone => "object gone",
            Error::BadState => "object in the wrong state",
            Error::OutOfMemory => "out of physical memory",
        };
        f.write_str(s)
    }
}

/// Kernel object types.
#[repr(u64)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ObjectType {
    /// Physical pages (one or more, contiguous).
    Frame = 1,
    /// A process: capability table, address space, budget, threads.
    Process = 2,
    Thread = 3,
    Endpoint = 4,
    Notification = 5,
    /// An interrupt line.
    Irq = 6,
    /// A range of I/O ports.
    IoPorts = 7,
    /// Device memory (MMIO) at a fixed physical address.
    DeviceMemory = 8,
    /// The kernel console (debug output).
    Console = 9,
    /// A guest-physical address space (NPT/EPT) that frames are mapped into.
    Guest = 10,
    /// A virtual CPU of a guest, with its run page (see [`VcpuRun`]).
    Vcpu = 11,
}

impl ObjectType {
    pub const fn from_u64(n: u64) -> Option<Self> {
        Some(match n {
            1 => Self::Frame,
            2 => Self::Process,
            3 => Self::Thread,
            4 => Self::Endpoint,
            5 => Self::Notification,
            6 => Self::Irq,
            7 => Self::IoPorts,
            8 => Self::DeviceMemory,
            9 => Self::Console,
            10 => Self::Guest,
            11 => Self::Vcpu,
            _ => return None,
        })
    }
}

/// Rights a capability carries. Copies may only drop rights.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Rights(pub u32);

impl Rights {
    pub const NONE: Rights = Rights(0);
    /// Frames: map readable. Notifications: wait/poll.
    pub const READ: Rights = Rights(1 << 0);
    /// Frames: map writable. Notifications: signal.
    pub const WRITE: Rights = Rights(1 << 1);
    /// Frames: map executable.
    pub const EXECUTE: Rights = Rights(1 << 2);
    /// Endpoints: send and call.
    pub const SEND: Rights = Rights(1 << 3);
    /// Endpoints: receive.
    pub const RECV: Rights = Rights(1 << 4);
    /// Endpoints: capabilities may travel in messages.
    pub const GRANT: Rights = Rights(1 << 5);
    /// Processes, threads, IRQs: control the object (map, configure, bind).
    pub const MANAGE: Rights = Rights(1 << 6);
    pub const ALL: Rights = Rights(0x7f);

    pub const fn contains(self, other: Rights) -> bool {
        self.0 & other.0 == other.0
    }
    pub const fn union(self, other: Rights) -> Rights {
        Rights(self.0 | other.0)
    }
    pub const fn intersection(self, other: Rights) -> Rights {
        Rights(self.0 & other.0)
    }
    pub const fn is_valid(self) -> bool {
        self.0 & !Self::ALL.0 == 0
    }
}

impl core::ops::BitOr for Rights {
    type Output = Rights;
    fn bitor(self, rhs: Rights) -> Rights {
        self.union(rhs)
    }
}

/// The message header in `rsi`: label (32 bits), length in words (bits
/// 32..41), capabilities carried (bits 41..44). Other bits must be zero.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MsgInfo {
    pub label: u32,
    pub words: u16,
    pub caps: u8,
}

impl MsgInfo {
    /// The label `Recv` reports when a bound notification woke it.
    pub const NOTIFICATION_LABEL: u32 = 0xffff_fffe;

    pub const fn new(label: u32, words: u16, caps: u8) -> Self {
        Self { label, words, caps }
    }

    pub const fn encode(self) -> u64 {
        self.label as u64 | ((self.words as u64) << 32) | ((self.caps as u64) << 41)
    }

    /// Decodes and validates a header from userspace.
    pub const fn decode(raw: u64) -> Option<Self> {
        let words = ((raw >> 32) & 0x1ff) as u16;
        let caps = ((raw >> 41) & 0x7) as u8;
        if raw >> 44 != 0 || words as usize > MSG_MAX_WORDS || caps as usize > MSG_MAX_CAPS {
            return None;
        }
        Some(Self { label: raw as u32, words, caps })
    }
}

/// The per-thread IPC buffer: one page in the thread's address space.
/// Words 0..3 of a message travel in registers; `words[i]` holds message word
/// `i` for `i >= 4` (the first four entries are unused).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct IpcBuffer {
    pub words: [u64; MSG_MAX_WORDS],
    /// Sending: the slots of the capabilities to transfer.
    pub send_caps: [u64; MSG_MAX_CAPS],
    /// Receiving: the empty slots where transferred capabilities go.
    pub recv_slots: [u64; MSG_MAX_CAPS],
    /// Receiving: how many capabilities arrived (set by the kernel).
    pub recv_caps: u64,
}

const _: () = assert!(core::mem::size_of::<IpcBuffer>() <= PAGE_SIZE as usize);

/// A guest segment register, in AMD's VMCB layout (APM Vol. 2 §15.5.1):
/// `attrib` packs type (bits 0-3), S (4), DPL (5-6), P (7), AVL (8), L (9),
/// D/B (10), G (11). VMX's access rights convert to and from it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Segment {
    pub selector: u16,
    pub attrib: u16,
    pub limit: u32,
    pub base: u64,
}

/// One CPUID answer the kernel gives the guest (`Sys::VcpuRun` answers CPUID
/// exits from the run page's table without leaving the kernel).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuidEntry {
    pub leaf: u32,
    /// `u32::MAX`: any sub-leaf.
    pub subleaf: u32,
    pub eax: u32,
    pub ebx: u32,
    pub ecx: u32,
    pub edx: u32,
}

/// Why `Sys::VcpuRun` returned.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VcpuExit {
    /// Port I/O: `port`, `size`, `write`, `data` (for writes); for reads the
    /// VMM puts the value in `data` and the kernel loads it into RAX (or,
    /// for string I/O, the VMM emulates and sets the registers itself).
    Io = 1,
    /// An access to guest-physical `gpa` that is not RAM (MMIO or a hole):
    /// `write` tells the direction when the hardware says; the VMM decodes the
    /// instruction at RIP (through guest memory it maps) and sets `rip`.
    Mmio = 2,
    /// RDMSR/WRMSR of an MSR the kernel does not handle: `msr`, `write`,
    /// `data`; for reads the VMM sets `data` (the kernel loads EDX:EAX) or
    /// asks for #GP by injecting it.
    Msr = 3,
    /// The guest triple-faulted (shutdown).
    Shutdown = 4,
    /// The hardware refused the guest state.
    InvalidState = 5,
    /// A host interrupt or a reschedule ended the run; just run again.
    Interrupted = 6,
    /// HLT with interrupts off (RIP is past it): the vCPU is stopped until
    /// an NMI or INIT, and `VcpuRun::data` is 1 when every vCPU of the
    /// guest is stopped so (or waits for a start-up IPI), i.e. nothing can
    /// wake the guest any more, else 0. Running the vCPU again sleeps in
    /// the kernel until another vCPU's NMI or INIT (or a kick) arrives.
    Hlt = 7,
    /// An exit the kernel does not know (`hw_code`, `info1`, `info2`).
    Unhandled = 8,
    /// The guest ended a level-triggered interrupt: `data` is the vector
    /// (the EOI the local APIC broadcasts to I/O APICs). Just run again
    /// after telling the VMM's I/O APIC.
    Eoi = 9,
}

/// `Sys::VcpuInterrupt` flag: the interrupt is level-triggered.
pub const VCPU_INTERRUPT_LEVEL: u64 = 1 << 8;

impl VcpuExit {
    pub const fn from_u32(n: u32) -> Option<Self> {
        Some(match n {
            1 => Self::Io,
            2 => Self::Mmio,
            3 => Self::Msr,
            4 => Self::Shutdown,
            5 => Self::InvalidState,
            6 => Self::Interrupted,
            7 => Self::Hlt,
            8 => Self::Unhandled,
            9 => Self::Eoi,
            _ => return None,
        })
    }
}

/// The run page: one 4 KiB frame per vCPU, mapped by the VMM and read and
/// written by the kernel around each run (as KVM's `kvm_run`). The kernel
/// writes the whole guest state and the exit record on every return; it
/// loads the state back before the next entry when `load_state` says so.
///
/// Other VMM threads may write the page at any time, also during a run:
/// at each entry the kernel reads what it needs exactly once into its own
/// copy (the state `load_state` names, the FPU image with [`LOAD_FPU`],
/// `inject`, `fpu_request`, the coalescing rules and ring indices; CPUID
/// entries when the guest asks) and checks and uses only that copy, so a
/// racing write can change what the guest gets but never what the kernel
/// checked.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct VcpuRun {
    /// RAX, RCX, RDX, RBX, RSP, RBP, RSI, RDI, R8..R15 (the x86 register
    /// numbering, as instruction decoders use).
    pub gprs: [u64; 16],
    pub rip: u64,
    pub rflags: u64,
    pub cr0: u64,
    pub cr2: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub efer: u64,
    /// ES, CS, SS, DS, FS, GS, LDTR, TR.
    pub segments: [Segment; 8],
    pub gdtr: Segment,
    pub idtr: Segment,
    /// VMM → kernel, cleared by the kernel: bit 0 = load `gprs`, `rip`,
    /// `rflags`; bit 1 = load control registers, EFER, segments, tables.
    pub load_state: u64,
    /// VMM → kernel, cleared when injected: bit 31 valid, bits 0-7 vector,
    /// bits 8-10 type (0 external interrupt, 2 NMI, 3 exception), bit 11
    /// error code valid, bits 32-63 the error code.
    pub inject: u64,
    // ---- the exit record (kernel → VMM) ----
    pub exit_reason: u32,
    pub size: u8,
    pub write: u8,
    /// Port I/O: string (`ins`/`outs`) and `rep` flags (bits 0 and 1).
    pub io_flags: u8,
    pub _pad: u8,
    pub port: u16,
    pub _pad2: [u16; 3],
    pub data: u64,
    pub gpa: u64,
    pub msr: u32,
    pub _pad3: u32,
    /// The instruction after the exiting one, when the hardware says.
    pub next_rip: u64,
    /// MMIO exits: the bytes at the guest's RIP (fetched through its page
    /// tables; fewer than 15 at the end of its memory, 0 if unreadable).
    pub insn: [u8; 15],
    pub insn_len: u8,
    pub hw_code: u64,
    pub info1: u64,
    pub info2: u64,
    // ---- CPUID table (VMM → kernel) ----
    pub cpuid_count: u32,
    pub _pad4: u32,
    pub cpuid: [CpuidEntry; 64],
    // ---- FPU/SSE state (both ways, on request) ----
    /// VMM → kernel: bit 0 = write the guest's FPU state into `fpu` when the
    /// run ends.
    pub fpu_request: u64,
    /// The guest's FXSAVE image (SDM Vol. 1 §10.5.1), for `LOAD_FPU` and
    /// `fpu_request`.
    pub fpu: [u8; 512],
    // ---- coalesced port I/O (VMM → kernel rules, kernel → VMM ring) ----
    /// Byte-sized OUTs to these ports (0: unused) are not exits: the kernel
    /// appends them to `pio_ring` and the guest goes on (KVM's coalesced
    /// PIO). The VMM must replay the ring, in order, before it handles any
    /// exit; a full ring ends the run with the OUT that did not fit, and a
    /// HLT with entries waiting ends it as `Interrupted` (HLT not yet
    /// executed), so buffered output never waits on an idle guest.
    pub pio_buffered_ports: [u16; PIO_RULES],
    /// Byte-sized INs from these ports (0: unused) read the matching
    /// `pio_constant_values` byte without an exit (a status register the
    /// VMM keeps current while it offers the rule).
    pub pio_constant_ports: [u16; PIO_RULES],
    pub pio_constant_values: [u8; PIO_RULES],
    /// Ring indices (free-running, modulo [`PIO_RING_LEN`]): the kernel
    /// writes at `pio_ring_tail`, the VMM consumes from `pio_ring_head`.
    pub pio_ring_head: u32,
    pub pio_ring_tail: u32,
    pub pio_ring: [PioWrite; PIO_RING_LEN],
    /// A port whose 4-byte INs the kernel answers with a free-running
    /// counter of `pio_clock_hz` (the ACPI PM timer, which firmware polls
    /// for every delay): `(now - pio_clock_epoch_ns) * pio_clock_hz / 10^9`
    /// truncated to 32 bits, `now` being the kernel's monotonic clock
    /// (`Sys::Clock`'s nanoseconds since boot). 0: none. Other sizes and
    /// OUTs exit as usual.
    pub pio_clock_port: u16,
    pub _pad6: u16,
    pub pio_clock_hz: u32,
    pub pio_clock_epoch_ns: u64,
    // ---- diagnosis (kernel → VMM) ----
    /// The event the hardware was delivering when the last exit happened
    /// (SVM EXITINTINFO, VMX IDT-vectoring information, in `inject`'s
    /// format; bit 31 clear: none). The kernel delivers it again itself.
    pub exit_int_info: u64,
    /// The last hardware exits of this vCPU, those the kernel finished
    /// itself included: the newest is at `exit_trace_next - 1` (modulo
    /// [`EXIT_TRACE_LEN`]). What an operator reads after a triple fault.
    /// Written as a ring, as `pio_ring`: each run's end writes only the
    /// entries added during the run (the whole trace is written when the
    /// vCPU is made), so bytes a VMM writes here stay until an exit lands
    /// in their slot.
    pub exit_trace: [ExitTrace; EXIT_TRACE_LEN],
    /// Free-running count of the exits traced.
    pub exit_trace_next: u32,
    pub _pad5: u32,
    /// Written by the kernel at a shutdown exit (a triple fault) only: the
    /// nested translation under the guest's walk of RIP as the kernel finds
    /// it right after the exit (`steps` 0: not written).
    pub nested: NestedWalk,
}

/// The guest's walk of its RIP through its own page tables, each table
/// read through the nested tables (NPT/EPT) the kernel made for the
/// guest, right after a shutdown exit: what the VMM compares with the
/// guest RAM it mapped. An entry that differs from what the VMM reads at
/// the same guest-physical address, or a hardware root that is not the
/// guest's, means the guest's walk went through another frame.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NestedWalk {
    /// The nested root the hardware ran the guest with (SVM N_CR3, the
    /// address in VMX's EPT pointer), from the VMCB/VMCS after the exit.
    pub hw_root: u64,
    /// The nested root the kernel made for the guest.
    pub root: u64,
    /// Per step of the walk, top-level table first: the raw nested leaf
    /// mapping the page of the guest's table (its A/D bits included;
    /// 0: nothing maps it, and the walk stops there)...
    pub leaves: [u64; 4],
    /// ...and the guest's entry the kernel read through that leaf (0 when
    /// the leaf maps no RAM).
    pub entries: [u64; 4],
    /// How many steps are filled (0: not written, or paging is off).
    pub steps: u32,
    /// SVM: the ASID of the last entry; VMX: the VPID.
    pub asid: u32,
}

/// Entries in [`VcpuRun::exit_trace`].
pub const EXIT_TRACE_LEN: usize = 16;

/// One hardware exit as the kernel saw it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExitTrace {
    /// The guest's RIP at the exit.
    pub rip: u64,
    /// The hardware's exit code (SVM EXITCODE, VMX basic exit reason;
    /// `u32::MAX` for SVM's VMEXIT_INVALID).
    pub code: u32,
    /// The event the entry before it injected (`inject`'s low half; bit 31
    /// clear: none).
    pub injected: u32,
    /// The event being delivered when it exited (EXITINTINFO, IDT-vectoring
    /// information: low half).
    pub int_info: u32,
    /// The first exit information (SVM EXITINFO1 / VMX qualification), low half.
    pub info: u32,
}

/// How many coalescing rules of each kind a run page holds.
pub const PIO_RULES: usize = 4;
/// Entries in the coalesced-write ring.
pub const PIO_RING_LEN: usize = 256;

/// One buffered OUT.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PioWrite {
    pub port: u16,
    pub value: u8,
    pub _pad: u8,
}

const _: () = assert!(core::mem::size_of::<VcpuRun>() <= PAGE_SIZE as usize);

impl VcpuRun {
    /// Real mode with flat 64 KiB segments at 0, at `rip`, interrupts off,
    /// general registers zero, paging and long mode off: the state a test
    /// VMM loads (with `load_state` = 3) to start a guest at a known place.
    pub fn set_real_mode_at(&mut self, rip: u64) {
        let data = Segment { selector: 0, attrib: 0x93, limit: 0xffff, base: 0 };
        self.segments = [data; 8];
        self.segments[1] = Segment { selector: 0, attrib: 0x9b, limit: 0xffff, base: 0 };
        self.segments[6] = Segment { selector: 0, attrib: 0x82, limit: 0xffff, base: 0 };
        self.segments[7] = Segment { selector: 0, attrib: 0x8b, limit: 0xffff, base: 0 };
        self.gdtr = Segment { selector: 0, attrib: 0, limit: 0xffff, base: 0 };
        self.idtr = self.gdtr;
        self.cr0 = 0x10;
        self.cr3 = 0;
        self.cr4 = 0;
        self.efer = 0;
        self.gprs = [0; 16];
        self.rip = rip;
        self.rflags = 2;
    }

    /// Every field zero: a starting point for a run page built by hand
    /// (`VcpuRun { rip, ..VcpuRun::ZERO }`).
    pub const ZERO: VcpuRun = {
        let seg = Segment { selector: 0, attrib: 0, limit: 0, base: 0 };
        VcpuRun {
            gprs: [0; 16],
            rip: 0,
            rflags: 0,
            cr0: 0,
            cr2: 0,
            cr3: 0,
            cr4: 0,
            efer: 0,
            segments: [seg; 8],
            gdtr: seg,
            idtr: seg,
            load_state: 0,
            inject: 0,
            exit_reason: 0,
            size: 0,
            write: 0,
            io_flags: 0,
            _pad: 0,
            port: 0,
            _pad2: [0; 3],
            data: 0,
            gpa: 0,
            msr: 0,
            _pad3: 0,
            next_rip: 0,
            insn: [0; 15],
            insn_len: 0,
            hw_code: 0,
            info1: 0,
            info2: 0,
            cpuid_count: 0,
            _pad4: 0,
            cpuid: [CpuidEntry { leaf: 0, subleaf: 0, eax: 0, ebx: 0, ecx: 0, edx: 0 }; 64],
            fpu_request: 0,
            fpu: [0; 512],
            pio_buffered_ports: [0; PIO_RULES],
            pio_constant_ports: [0; PIO_RULES],
            pio_constant_values: [0; PIO_RULES],
            pio_ring_head: 0,
            pio_ring_tail: 0,
            pio_ring: [PioWrite { port: 0, value: 0, _pad: 0 }; PIO_RING_LEN],
            pio_clock_port: 0,
            _pad6: 0,
            pio_clock_hz: 0,
            pio_clock_epoch_ns: 0,
            exit_int_info: 0,
            exit_trace: [ExitTrace { rip: 0, code: 0, injected: 0, int_info: 0, info: 0 }; EXIT_TRACE_LEN],
            exit_trace_next: 0,
            _pad5: 0,
            nested: NestedWalk { hw_root: 0, root: 0, leaves: [0; 4], entries: [0; 4], steps: 0, asid: 0 },
        }
    };

    /// Records one hardware exit in the trace (the oldest entry goes).
    pub fn trace_exit(&mut self, entry: ExitTrace) {
        self.exit_trace[self.exit_trace_next as usize % EXIT_TRACE_LEN] = entry;
        self.exit_trace_next = self.exit_trace_next.wrapping_add(1);
    }

    /// The traced exits, oldest first (at most [`EXIT_TRACE_LEN`]; the VMM
    /// may have written the index: any value gives a bounded answer).
    pub fn recent_exits(&self) -> impl Iterator<Item = ExitTrace> + '_ {
        let n = self.exit_trace_next;
        let count = n.min(EXIT_TRACE_LEN as u32);
        (0..count).map(move |i| self.exit_trace[n.wrapping_sub(count).wrapping_add(i) as usize % EXIT_TRACE_LEN])
    }

    /// Entries waiting in the coalesced-write ring (never more than
    /// [`PIO_RING_LEN`], whatever the VMM wrote to the head).
    pub fn pio_pending(&self) -> u32 {
        self.pio_ring_tail.wrapping_sub(self.pio_ring_head).min(PIO_RING_LEN as u32)
    }

    /// The counter value a 4-byte IN of the clock port reads at `now_ns`
    /// (see [`VcpuRun::pio_clock_port`]); a clock that has not reached the
    /// epoch reads 0.
    pub fn pio_clock_at(&self, now_ns: u64) -> u32 {
        let elapsed = now_ns.saturating_sub(self.pio_clock_epoch_ns);
        (u128::from(elapsed) * u128::from(self.pio_clock_hz) / 1_000_000_000) as u32
    }

    /// Port I/O the kernel finishes itself: the clock port's 4-byte IN
    /// (`now_ns` is asked only then), else [`VcpuRun::coalesce_pio`].
    /// `Some(None)` for a buffered OUT, `Some(Some(v))` for an IN answered
    /// with `v` (put into RAX with [`merge_in`]), `None` when it must exit.
    /// Inline: the kernel asks it at every port exit.
    #[inline]
    pub fn kernel_pio(&mut self, port: u16, size: u8, write: bool, value: u8, now_ns: impl FnOnce() -> u64) -> Option<Option<u32>> {
        if !write && size == 4 && port != 0 && port == self.pio_clock_port {
            return Some(Some(self.pio_clock_at(now_ns())));
        }
        self.coalesce_pio(port, size, write, value).map(|r| r.map(u32::from))
    }

    /// The kernel's side of coalesced port I/O for a non-string access of
    /// `size` bytes: `Some(None)` for an OUT it buffered, `Some(Some(v))`
    /// for an IN it answered with `v`, `None` when the access must exit.
    /// Rules and indices are the VMM's to write at any time; every value
    /// is checked here, so a bad one only makes accesses exit.
    #[inline]
    pub fn coalesce_pio(&mut self, port: u16, size: u8, write: bool, value: u8) -> Option<Option<u8>> {
        if size != 1 || port == 0 {
            return None;
        }
        if write {
            if !self.pio_buffered_ports.contains(&port) {
                return None;
            }
            let used = self.pio_ring_tail.wrapping_sub(self.pio_ring_head);
            if used >= PIO_RING_LEN as u32 {
                return None;
            }
            let slot = self.pio_ring_tail as usize % PIO_RING_LEN;
            self.pio_ring[slot] = PioWrite { port, value, _pad: 0 };
            self.pio_ring_tail = self.pio_ring_tail.wrapping_add(1);
            Some(None)
        } else {
            let i = self.pio_constant_ports.iter().position(|&p| p == port)?;
            Some(Some(self.pio_constant_values[i]))
        }
    }
}

/// RAX after an IN of `size` bytes (1, 2 or 4) read `value`: a byte or
/// word IN keeps the rest of RAX, a doubleword IN zero-extends into it (as
/// every 32-bit register write does in 64-bit mode).
pub fn merge_in(rax: u64, size: u8, value: u32) -> u64 {
    match size {
        1 => (rax & !0xff) | u64::from(value & 0xff),
        2 => (rax & !0xffff) | u64::from(value & 0xffff),
        _ => u64::from(value),
    }
}

/// `VcpuRun::load_state` bits.
pub const LOAD_GPRS: u64 = 1;
pub const LOAD_SYSTEM: u64 = 2;
/// Load the guest's FPU/SSE state from `VcpuRun::fpu` (its MXCSR must not
/// set reserved bits, or FXRSTOR would fault: the kernel refuses it).
pub const LOAD_FPU: u64 = 4;
/// Load only RIP and RAX (`gprs[0]`): what a VMM changes after it emulated
/// a port or MMIO access (the next RIP, an IN's result), without the other
/// 15 registers and RFLAGS going in and out. Ignored when `LOAD_GPRS` (which
/// loads them too) is set.
pub const LOAD_RIP: u64 = 8;

/// States `ProcessInfo` reports.
#[repr(u64)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProcessState {
    Running = 0,
    /// Exited with the code given.
    Exited = 1,
    /// Killed by the kernel after a fault; the code is the vector.
    Faulted = 2,
}

/// Where the kernel puts init (the root task): its IPC buffer, the top of its
/// stack, and the boot archive (read-only). Init starts with `rdi` = IPC
/// buffer, `rsi` = archive address, `rdx` = archive length in bytes.
pub const INIT_IPC_BUFFER: u64 = 0x0000_7fff_fff0_0000;
pub const INIT_STACK_TOP: u64 = 0x0000_7fff_ffe0_0000;
pub const INIT_STACK_PAGES: u64 = 16;
pub const INIT_ARCHIVE_BASE: u64 = 0x0000_4000_0000_0000;

/// The capabilities init starts with, by slot. IRQ line `n` is at
/// `INIT_SLOT_IRQ_BASE + n`.
pub const INIT_SLOT_SELF: CapSlot = 0;
pub const INIT_SLOT_CONSOLE: CapSlot = 1;
pub const INIT_SLOT_THREAD: CapSlot = 2;
pub const INIT_SLOT_ARCHIVE: CapSlot = 3;
pub const INIT_SLOT_IOPORTS: CapSlot = 4;
/// All device memory (physical addresses that are not RAM): init derives
/// frame capabilities over MMIO ranges from it for drivers.
pub const INIT_SLOT_DEVICE_MEMORY: CapSlot = 5;
pub const INIT_SLOT_IRQ_BASE: CapSlot = 8;
/// The first slot init's own code may use freely.
pub const INIT_SLOT_FREE: CapSlot = 64;

/// Priorities: 0 (lowest, idle) to `MAX_PRIORITY` (highest).
pub const MAX_PRIORITY: u8 = 255;

/// Timeout meaning "wait forever".
pub const FOREVER: u64 = u64::MAX;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_trace_keeps_the_newest_in_order() {
        let mut run = VcpuRun::ZERO;
        assert_eq!(run.recent_exits().count(), 0);
        for i in 0..20u64 {
            run.trace_exit(ExitTrace { rip: i, code: i as u32, ..ExitTrace::default() });
        }
        assert!(run.recent_exits().map(|e| e.rip).eq(4..20));
        // A wrapped or hostile index still gives a bounded, in-range answer.
        run.exit_trace_next = u32::MAX;
        assert_eq!(run.recent_exits().count(), EXIT_TRACE_LEN);
    }

    #[test]
    fn the_clock_port_answers_4_byte_ins_from_the_kernel_clock() {
        let mut run = VcpuRun::ZERO;
        let never = || -> u64 { panic!("the clock is read only for the clock port") };
        assert_eq!(run.kernel_pio(0x608, 4, false, 0, never), None, "no rule: exit");
        run.pio_clock_port = 0x608;
        run.pio_clock_hz = 3_579_545;
        run.pio_clock_epoch_ns = 1_000_000_000;
        // One second after the epoch: the counter's rate in ticks.
        assert_eq!(run.kernel_pio(0x608, 4, false, 0, || 2_000_000_000), Some(Some(3_579_545)));
        // Before the epoch: 0, never a wrapped value.
        assert_eq!(run.kernel_pio(0x608, 4, false, 0, || 5), Some(Some(0)));
        // 32 bits, wrapping as the guest expects (a 32-bit PM timer).
        let wrap_ns = (1u128 << 32) * 1_000_000_000 / 3_579_545;
        let v = run.kernel_pio(0x608, 4, false, 0, || 1_000_000_000 + wrap_ns as u64 + 1_000_000_000).unwrap().unwrap();
        assert!(v.abs_diff(3_579_545) <= 1, "{v}");
        // Other sizes, OUTs and other ports go on to the usual rules (and exit).
        assert_eq!(run.kernel_pio(0x608, 2, false, 0, never), None);
        assert_eq!(run.kernel_pio(0x608, 4, true, 0, never), None);
        assert_eq!(run.kernel_pio(0x60c, 4, false, 0, never), None);
        run.pio_constant_ports[0] = 0x3fd;
        run.pio_constant_values[0] = 0x60;
        assert_eq!(run.kernel_pio(0x3fd, 1, false, 0, never), Some(Some(0x60)));
        run.pio_clock_port = 0;
        assert_eq!(run.kernel_pio(0, 4, false, 0, never), None, "port 0 is no rule");
    }

    #[test]
    fn merge_in_keeps_or_clears_the_rest_of_rax_as_the_hardware() {
        let rax = 0x1122_3344_5566_7788;
        assert_eq!(merge_in(rax, 1, 0xabcd), 0x1122_3344_5566_77cd);
        assert_eq!(merge_in(rax, 2, 0xabcd_ef01), 0x1122_3344_5566_ef01);
        assert_eq!(merge_in(rax, 4, 0xabcd_ef01), 0xabcd_ef01);
    }

    #[test]
    fn coalesced_pio_buffers_answers_and_exits_when_full_or_unlisted() {
        let mut run = VcpuRun::ZERO;
        assert_eq!(run.coalesce_pio(0x3f8, 1, true, b'a'), None, "no rule: exit");
        run.pio_buffered_ports[1] = 0x3f8;
        run.pio_constant_ports[2] = 0x3fd;
        run.pio_constant_values[2] = 0x60;
        assert_eq!(run.coalesce_pio(0x3f8, 1, true, b'a'), Some(None));
        assert_eq!(run.coalesce_pio(0x3f8, 2, true, 0), None, "only bytes");
        assert_eq!(run.coalesce_pio(0x3fd, 1, false, 0), Some(Some(0x60)));
        assert_eq!(run.coalesce_pio(0x3fd, 1, true, 0), None, "a constant port's OUT exits");
        assert_eq!(run.coalesce_pio(0x3f9, 1, false, 0), None);
        assert_eq!(run.coalesce_pio(0, 1, false, 0), None, "port 0 is no rule");
        assert_eq!(run.pio_pending(), 1);
        assert_eq!(run.pio_ring[0], PioWrite { port: 0x3f8, value: b'a', _pad: 0 });
        for i in 1..PIO_RING_LEN {
            assert_eq!(run.coalesce_pio(0x3f8, 1, true, i as u8), Some(None));
        }
        assert_eq!(run.coalesce_pio(0x3f8, 1, true, 0), None, "full: exit");
        run.pio_ring_head = run.pio_ring_tail.wrapping_sub(1);
        assert_eq!(run.coalesce_pio(0x3f8, 1, true, 7), Some(None));
        assert_eq!(run.pio_ring[0].value, 7, "wrapped");
        // A head the VMM scribbled on cannot make the kernel overrun.
        run.pio_ring_head = run.pio_ring_tail.wrapping_add(5);
        assert_eq!(run.pio_pending(), PIO_RING_LEN as u32);
        assert_eq!(run.coalesce_pio(0x3f8, 1, true, 0), None);
        run.pio_ring_tail = u32::MAX;
        run.pio_ring_head = u32::MAX;
        assert_eq!(run.coalesce_pio(0x3f8, 1, true, 9), Some(None));
        assert_eq!(run.pio_ring_tail, 0);
        assert_eq!(run.pio_ring[u32::MAX as usize % PIO_RING_LEN].value, 9);
    }

    #[test]
    fn numbers_round_trip() {
        for n in 0..64 {
            if let Some(s) = Sys::from_u64(n) {
                assert_eq!(s as u64, n);
            }
            if let Some(e) = Error::from_u64(n) {
                assert_eq!(e as u64, n);
            }
            if let Some(t) = ObjectType::from_u64(n) {
                assert_eq!(t as u64, n);
            }
        }
        assert_eq!(Sys::from_u64(36), Some(Sys::VcpuInterrupt));
        assert_eq!(Sys::from_u64(37), Some(Sys::Nop));
        assert_eq!(Sys::from_u64(38), Some(Sys::BenchPhases));
        assert_eq!(Sys::from_u64(39), Some(Sys::FaultInject));
        assert_eq!(Sys::from_u64(40), None);
        for n in 0..8 {
            if let Some(p) = FaultPoint::from_u64(n) {
                assert_eq!(p as u64, n);
            }
            if let Some(p) = FaultPhase::from_u64(n) {
                assert_eq!(p as u64, n);
            }
        }
        assert_eq!(Error::from_u64(0), None);
        assert_eq!(Error::from_u64(16), Some(Error::OutOfMemory));
    }

    #[test]
    fn msg_info_validates() {
        let m = MsgInfo::new(0xdead_beef, 480, 4);
        assert_eq!(MsgInfo::decode(m.encode()), Some(m));
        assert_eq!(MsgInfo::decode(MsgInfo::new(1, 481, 0).encode()), None);
        assert_eq!(MsgInfo::decode(MsgInfo::new(1, 0, 5).encode()), None);
        assert_eq!(MsgInfo::decode(1 << 50), None);
    }

    #[test]
    fn rights_only_shrink_by_intersection() {
        let rw = Rights::READ | Rights::WRITE;
        assert!(rw.contains(Rights::READ));
        assert!(!Rights::READ.contains(rw));
        assert_eq!(rw.intersection(Rights::READ | Rights::EXECUTE), Rights::READ);
        assert!(!Rights(1 << 9).is_valid());
    }
}
