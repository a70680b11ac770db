//! Per-CPU data, reached through the GS base while in the kernel (SWAPGS on
//! every ring-3 entry and exit). entry.s and trap.s use the first fields by
//! offset, so their order is fixed.
// clippy's deref_addrof fix for `*(&raw mut STATIC)` names the `static mut` itself, which `static_mut_refs` forbids.
#![allow(clippy::deref_addrof)]

use super::MAX_CPUS;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64};

pub const KERNEL_STACK_SIZE: usize = 32 * 1024;

#[repr(C)]
pub struct PerCpu {
    /// 0: this structure's own address.
    pub self_ptr: u64,
    /// 8: the user RSP, parked during syscall entry.
    pub user_rsp: u64,
    /// 16: top of this CPU's kernel stack.
    pub kernel_stack_top: u64,
    /// 24: just past the current thread's saved context (also TSS.RSP0).
    pub context_top: u64,
    /// 32: index of this CPU (0 = bootstrap).
    pub index: u64,
    /// The local APIC id.
    pub apic_id: AtomicU32,
    /// Set by interrupt handlers, consumed by the scheduler.
    pub need_resched: AtomicBool,
    /// IOAPIC lines that fired while this CPU ran the kernel (bit per line).
    pub pending_irqs: AtomicU64,
    /// MSI vectors that fired (bit per vector from MSI_BASE_VECTOR).
    pub pending_msi: [AtomicU64; 3],
    /// Set whenever `pending_irqs` or `pending_msi` gains a bit: one load
    /// tells the system-call path there is nothing to deliver.
    pub any_pending: AtomicBool,
    /// Timer interrupts taken.
    pub ticks: AtomicU64,
    pub online: AtomicBool,
    /// True while this CPU runs ring-3 code (cleared on every kernel entry).
    pub in_user: AtomicBool,
    /// Incremented each time this CPU flushed its TLB on request.
    pub tlb_acks: AtomicU64,
    /// The address-space root this CPU has loaded.
    pub cr3: AtomicU64,
    /// Time stamps of the system-call phases (`kernel::phases`), written
    /// only by this CPU while phase counting is on.
    pub phase_stamps: [AtomicU64; PHASE_STAMPS],
    /// Instructions (TSC ticks) per phase over the fast-path system calls
    /// counted, and how many were counted.
    pub phase_sums: [AtomicU64; PHASE_STAMPS - 1],
    pub phase_ops: AtomicU64,
    /// Calls the fast path would have completed but left to the general
    /// path because this CPU had scheduling work pending (`phases::fallback`).
    pub phase_fallbacks: AtomicU64,
    /// Turns this CPU spun waiting for the big kernel lock while phase
    /// counting was on (`kernel::LockSpin`).
    pub lock_spins: AtomicU64,
    /// NMIs this CPU took.
    pub nmis: AtomicU64,
    /// CR0 as this CPU's bring-up left it (the boot suite checks that
    /// caching is on: CD and NW clear).
    pub cr0_at_start: AtomicU64,
    /// The address of this CPU's TSS.RSP0 (`set_context_top` writes it).
    pub tss_rsp0: u64,
}

/// Stamps of one system call: entry to Rust, lock taken, decoded,
/// capability looked up, switched, about to leave.
pub const PHASE_STAMPS: usize = 6;

// entry.s reads these two flags by offset (the null system call's check).
const _: () = assert!(core::mem::offset_of!(PerCpu, need_resched) == 44);
const _: () = assert!(core::mem::offset_of!(PerCpu, any_pending) == 80);

/// One CPU's kernel stack with a guard page below it, which
/// `guard_kernel_stacks` unmaps: an overflow faults (and the #DF handler,
/// on its own IST stack, reports it) instead of running into the next
/// CPU's stack or whatever lies below.
#[repr(C, align(4096))]
struct KernelStack {
    guard: [u8; GUARD_SIZE],
    stack: [u8; KERNEL_STACK_SIZE],
}

const GUARD_SIZE: usize = 4096;

static mut STACKS: [KernelStack; MAX_CPUS] =
    [const { KernelStack { guard: [0; GUARD_SIZE], stack: [0; KERNEL_STACK_SIZE] } }; MAX_CPUS];

/// Unmaps every CPU's guard page (once, on the bootstrap CPU before the
/// others start).
pub fn guard_kernel_stacks() {
    let base = (&raw const STACKS).cast::<KernelStack>() as u64;
    for cpu in 0..MAX_CPUS {
        let guard = base + (cpu * core::mem::size_of::<KernelStack>()) as u64;
        if let Err(e) = super::paging::unmap_kernel_page(guard) {
            log::warn!("kernel stack of CPU {cpu}: no guard page ({e:?})");
        }
    }
}

static mut PERCPU: [PerCpu; MAX_CPUS] = [const {
    PerCpu {
        self_ptr: 0,
        user_rsp: 0,
        kernel_stack_top: 0,
        context_top: 0,
        index: 0,
        apic_id: AtomicU32::new(0),
        need_resched: AtomicBool::new(false),
        pending_irqs: AtomicU64::new(0),
        pending_msi: [const { AtomicU64::new(0) }; 3],
        any_pending: AtomicBool::new(false),
        ticks: AtomicU64::new(0),
        online: AtomicBool::new(false),
        in_user: AtomicBool::new(false),
        tlb_acks: AtomicU64::new(0),
        cr3: AtomicU64::new(0),
        phase_stamps: [const { AtomicU64::new(0) }; PHASE_STAMPS],
        phase_sums: [const { AtomicU64::new(0) }; PHASE_STAMPS - 1],
        phase_ops: AtomicU64::new(0),
        phase_fallbacks: AtomicU64::new(0),
        lock_spins: AtomicU64::new(0),
        nmis: AtomicU64::new(0),
        cr0_at_start: AtomicU64::new(0),
        tss_rsp0: 0,
    }
}; MAX_CPUS];

/// Top of CPU `cpu`'s kernel stack (handed to an AP before it starts).
pub fn kernel_stack_top(cpu: usize) -> u64 {
    // Only the address is taken.
    let base = (&raw const STACKS).cast::<KernelStack>() as u64;
    base + ((cpu + 1) * core::mem::size_of::<KernelStack>()) as u64
}

/// Points GS at CPU `cpu`'s data; called once on each CPU at bring-up.
pub fn init(cpu: usize) {
    // SAFETY: each CPU initialises only its own entry, before anything reads
    // it through GS; the MSR writes set this CPU's GS bases (kernel GS now,
    // user GS zero until a thread sets its own).
    unsafe {
        let p = &mut (*(&raw mut PERCPU))[cpu];
        p.self_ptr = p as *mut PerCpu as u64;
        p.kernel_stack_top = kernel_stack_top(cpu);
        p.index = cpu as u64;
        p.tss_rsp0 = super::gdt::rsp0_address(cpu);
        x86::msr::wrmsr(x86::msr::IA32_GS_BASE, p.self_ptr);
        x86::msr::wrmsr(x86::msr::IA32_KERNEL_GSBASE, 0);
    }
}

/// This CPU's data.
pub fn this() -> &'static PerCpu {
    let ptr: u64;
    // SAFETY: in the kernel GS always holds this CPU's PerCpu address (set by
    // `init`, swapped in on every entry from ring 3).
    unsafe {
        // `pure`: the same value every time on this CPU (kernel code never
        // moves between CPUs), so repeated calls may be merged; `readonly`
        // keeps them on their side of anything that may write memory, such
        // as the SWAPGS pair of `trap::nmi_with_user_gs`.
        core::arch::asm!("mov {}, gs:[0]", out(reg) ptr, options(pure, readonly, nostack, preserves_flags));
        &*(ptr as *const PerCpu)
    }
}

/// Another CPU's data (for IPIs and remote wake-ups).
pub fn of(cpu: usize) -> &'static PerCpu {
    // SAFETY: PERCPU is a static; shared access goes only to atomic fields or
    // to fields written once at bring-up before `online` is set.
    unsafe { &(*(&raw const PERCPU))[cpu] }
}

/// This CPU's index: one GS-relative load.
#[inline(always)]
pub fn index() -> usize {
    let i: u64;
    // SAFETY: as `this`: GS holds this CPU's PerCpu, whose `index` `init`
    // set before GS pointed at it and nothing changes after.
    unsafe {
        core::arch::asm!(
            "mov {}, gs:[{index}]",
            out(reg) i,
            index = const core::mem::offset_of!(PerCpu, index),
            options(pure, readonly, nostack, preserves_flags),
        );
    }
    let i = i as usize;
    // SAFETY: `init` stored `index` from `cpu` after indexing `PERCPU`
    // (`[PerCpu; MAX_CPUS]`) with it, so it is below MAX_CPUS; telling the
    // compiler drops the bounds checks of every per-CPU array indexed by it
    // (the IPC fast path's `current[cpu]`, among others).
    unsafe { core::hint::assert_unchecked(i < MAX_CPUS) };
    i
}

/// `this().in_user.store(V, Release)` as one GS-relative store (the
/// system-call path sets it on the way in and out). Release: the asm may
/// write memory, so the compiler keeps every access before it before it,
/// and x86 stores are not reordered with earlier loads and stores.
#[inline(always)]
pub fn set_in_user<const V: bool>() {
    // SAFETY: GS holds this CPU's PerCpu (see `this`); `in_user` is an
    // `AtomicBool`, one byte, written here as a byte store is atomic.
    unsafe {
        core::arch::asm!(
            "mov byte ptr gs:[{off}], {v}",
            off = const core::mem::offset_of!(PerCpu, in_user),
            v = const V as u8,
            options(nostack, preserves_flags),
        );
    }
}

/// `this().need_resched.load(Relaxed)` as one GS-relative load.
#[inline(always)]
pub fn need_resched() -> bool {
    load_flag::<{ core::mem::offset_of!(PerCpu, need_resched) }>()
}

/// `this().any_pending.load(Relaxed)` as one GS-relative load.
#[inline(always)]
pub fn any_pending() -> bool {
    load_flag::<{ core::mem::offset_of!(PerCpu, any_pending) }>()
}

/// A Relaxed load of the `AtomicBool` at offset `OFF` of this CPU's PerCpu.
#[inline(always)]
fn load_flag<const OFF: usize>() -> bool {
    let v: u32;
    // SAFETY: GS holds this CPU's PerCpu (see `this`); the callers name an
    // `AtomicBool` field (0 or 1), read as a byte load is atomic. Not
    // `pure`: an interrupt handler or another CPU may change it.
    unsafe {
        core::arch::asm!(
            "movzx {v:e}, byte ptr gs:[{off}]",
            v = out(reg) v,
            off = const OFF,
            options(nostack, preserves_flags, readonly),
        );
    }
    v != 0
}

/// Sets where the next return to ring 3 restores from (the current thread's
/// context) and where an interrupt from ring 3 saves to (TSS.RSP0): three
/// GS-relative instructions on every thread switch, no indexing of the
/// per-CPU and TSS tables.
#[inline(always)]
pub fn set_context_top(top: u64) {
    // SAFETY: GS holds this CPU's PerCpu (see `this`), whose `tss_rsp0`
    // `init` set to this CPU's TSS.RSP0 before any thread ran. Only this
    // CPU writes its own `context_top` and RSP0, with interrupts off
    // (kernel code is not interruptible outside the idle loop); the CPU
    // reads RSP0 only on a privilege change, which cannot happen here.
    unsafe {
        core::arch::asm!(
            "mov gs:[{ctx}], {top}",
            "mov {tmp}, gs:[{rsp0}]",
            "mov [{tmp}], {top}",
            top = in(reg) top,
            tmp = out(reg) _,
            ctx = const core::mem::offset_of!(PerCpu, context_top),
            rsp0 = const core::mem::offset_of!(PerCpu, tss_rsp0),
            options(nostack, preserves_flags),
        );
    }
}
