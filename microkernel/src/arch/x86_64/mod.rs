//! x86-64 glue: boot entry, descriptor tables, traps, the serial port and the
//! few privileged instructions the portable kernel needs. All of the kernel's
//! `unsafe` hardware access lives under this folder.

pub mod acpi;
pub mod apic;
pub mod cpu;
pub mod gdt;
pub mod paging;
pub mod percpu;
#[macro_use]
pub mod serial;
pub mod smp;
pub mod svm;
pub mod time;
pub mod vmx;
pub mod trap;

core::arch::global_asm!(include_str!("boot.s"));
// One block: entry.s uses trap.s's SAVE_GPRS/RESTORE_GPRS macros.
core::arch::global_asm!(concat!(include_str!("trap.s"), include_str!("entry.s")));

/// CPUs the kernel can manage.
pub const MAX_CPUS: usize = 32;

/// Where the boot page tables map all of the first 4 GiB of physical memory.
pub const PHYS_OFFSET: u64 = 0xffff_8000_0000_0000;
/// Where the kernel image runs (physical address + this).
pub const KERNEL_VMA: u64 = 0xffff_ffff_8000_0000;
/// How much physical memory the boot direct map covers.
pub const DIRECT_MAP_LIMIT: u64 = 4 << 30;

/// The direct-map virtual address of a physical address, if the boot direct
/// map covers `[phys, phys + len)`.
pub fn phys_to_virt(phys: u64, len: u64) -> Option<u64> {
    let end = phys.checked_add(len)?;
    (end <= DIRECT_MAP_LIMIT).then_some(phys + PHYS_OFFSET)
}

unsafe extern "C" {
    static __kernel_phys_start: u8;
    static __kernel_phys_end: u8;
}

/// The physical range the kernel image (code, data, bss, boot tables) occupies.
pub fn kernel_phys_range() -> (u64, u64) {
    // Only the addresses of the linker symbols are used, never their contents.
    let start = &raw const __kernel_phys_start as u64;
    let end = &raw const __kernel_phys_end as u64;
    (start, end)
}

/// Brings up this (the bootstrap) CPU: descriptor tables, per-CPU data, trap
/// handling, the legacy PIC masked so that only the APIC delivers interrupts.
pub fn init_bsp() {
    gdt::init_cpu(0);
    percpu::init(0);
    percpu::guard_kernel_stacks();
    trap::init();
    cpu::mask_legacy_pic();
}

/// Per-CPU set-up shared by every CPU once the local APIC address is known:
/// the APIC, system-call MSRs, protection bits in CR4.
pub fn init_cpu_late(lapic_phys: u64) {
    let id = apic::init_local(lapic_phys);
    let me = percpu::this();
    me.apic_id.store(id, core::sync::atomic::Ordering::Relaxed);
    me.cr3.store(cpu::read_cr3(), core::sync::atomic::Ordering::Relaxed);
    cpu::enable_syscall_and_protection();
    me.cr0_at_start.store(cpu::read_cr0(), core::sync::atomic::Ordering::Relaxed);
    me.online.store(true, core::sync::atomic::Ordering::Release);
}

/// Leaves for ring 3 with the current thread's saved context.
pub fn enter_user() -> ! {
    percpu::this().in_user.store(true, core::sync::atomic::Ordering::Release);
    enter_user_flagged()
}

/// [`enter_user`] for a caller that has already set `PerCpu.in_user` (the
/// IPC fast path, which must set it before it lets go of the lock).
#[inline(always)]
pub fn enter_user_flagged() -> ! {
    unsafe extern "C" {
        fn return_to_user() -> !;
    }
    // SAFETY: PerCpu.context_top points just past a saved TrapFrame of a
    // ring-3 thread whose address space is loaded (kernel::switch_to); the
    // frame's CS/SS are user selectors and RIP/RFLAGS were validated when set.
    unsafe { return_to_user() }
}

/// [`enter_user_flagged`] for the IPC fast path's peer: a thread whose
/// frame its own SYSCALL saved and the kernel wrote only message registers
/// of since (RCX == RIP, R11 == RFLAGS, RIP in the lower half), so the way
/// back checks RFLAGS alone before SYSRET (entry.s).
#[inline(always)]
pub fn enter_user_after_syscall() -> ! {
    unsafe extern "C" {
        fn return_to_user_after_syscall() -> !;
    }
    // SAFETY: as `enter_user_flagged`, and the frame is one SYSCALL saved
    // (the fast path checks the peer's state; kernel::fastpath).
    unsafe { return_to_user_after_syscall() }
}

/// How a run ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    Pass,
    Fail,
}

/// Leaves the machine: QEMU's isa-debug-exit, then Bochs's shutdown port, then
/// halts forever (on real hardware neither port exists).
pub fn exit(how: Exit) -> ! {
    use kcore::testproto::*;
    let code = match how {
        Exit::Pass => EXIT_PASS,
        Exit::Fail => EXIT_FAIL,
    };
    serial::flush();
    cpu::outb(DEBUG_EXIT_PORT, code);
    for b in b"Shutdown" {
        cpu::outb(BOCHS_SHUTDOWN_PORT, *b);
    }
    cpu::halt_forever()
}
