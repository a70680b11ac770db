//! Instruction wrappers: port I/O, CPUID, MSRs with a #GP catcher, TSC,
//! halting. Port I/O is safe here: in this guest no port has a memory
//! effect (there is no DMA), whatever the VMM puts behind it.
use core::arch::asm;
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use crate::trap::TrapFrame;

pub fn outb(port: u16, value: u8) {
    // SAFETY: port I/O has no effect on this guest's memory (module doc).
    unsafe { asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack, preserves_flags)) }
}

pub fn outw(port: u16, value: u16) {
    // SAFETY: as in outb.
    unsafe { asm!("out dx, ax", in("dx") port, in("ax") value, options(nomem, nostack, preserves_flags)) }
}

pub fn outl(port: u16, value: u32) {
    // SAFETY: as in outb.
    unsafe { asm!("out dx, eax", in("dx") port, in("eax") value, options(nomem, nostack, preserves_flags)) }
}

pub fn inb(port: u16) -> u8 {
    let value: u8;
    // SAFETY: as in outb.
    unsafe { asm!("in al, dx", in("dx") port, out("al") value, options(nomem, nostack, preserves_flags)) }
    value
}

pub fn inw(port: u16) -> u16 {
    let value: u16;
    // SAFETY: as in outb.
    unsafe { asm!("in ax, dx", in("dx") port, out("ax") value, options(nomem, nostack, preserves_flags)) }
    value
}

pub fn inl(port: u16) -> u32 {
    let value: u32;
    // SAFETY: as in outb.
    unsafe { asm!("in eax, dx", in("dx") port, out("eax") value, options(nomem, nostack, preserves_flags)) }
    value
}

/// CPUID leaf `leaf`, subleaf 0: [EAX, EBX, ECX, EDX].
pub fn cpuid(leaf: u32) -> [u32; 4] {
    let r = core::arch::x86_64::__cpuid_count(leaf, 0);
    [r.eax, r.ebx, r.ecx, r.edx]
}

/// CPUID.1:ECX bit `bit`.
pub fn has_leaf1_ecx(bit: u32) -> bool {
    cpuid(1)[2] & (1 << bit) != 0
}

pub fn rdtsc() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: rdtsc only reads the time-stamp counter.
    unsafe { asm!("rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags)) }
    u64::from(hi) << 32 | u64::from(lo)
}

/// Enables interrupts, halts until one arrives and has been handled, and
/// disables them again. `sti`'s one-instruction shadow makes `sti; hlt`
/// atomic: an interrupt already pending wakes the `hlt` (SDM Vol. 2B STI).
pub fn wait_for_interrupt() {
    // SAFETY: the IDT handles every vector; handlers preserve all registers.
    unsafe { asm!("sti", "hlt", "cli", options(nomem, nostack)) }
}

pub fn halt_forever() -> ! {
    loop {
        // SAFETY: stops this vCPU; nothing to preserve.
        unsafe { asm!("cli", "hlt", options(nomem, nostack)) }
    }
}

/// Armed around a guarded `rdmsr`/`wrmsr`; the #GP handler then skips the
/// instruction instead of dying.
static GP_ARMED: AtomicBool = AtomicBool::new(false);
/// #GP faults caught so far.
static GP_CAUGHT: AtomicU32 = AtomicU32::new(0);

/// The MSR access raised #GP (caught and skipped).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GpFault;

const RDMSR: [u8; 2] = [0x0f, 0x32];
const WRMSR: [u8; 2] = [0x0f, 0x30];

/// Called for vector 13: if a guarded MSR access faulted, step over it
/// (both encodings are 2 bytes) and return true.
pub fn catch_gp(frame: &mut TrapFrame) -> bool {
    if !GP_ARMED.load(Ordering::Relaxed) {
        return false;
    }
    // SAFETY: RIP is the faulting instruction in this guest's identity-mapped
    // image (the fault came from ring 0 code), so 2 bytes there are readable.
    let insn = unsafe { core::ptr::read_unaligned(frame.rip as *const [u8; 2]) };
    if insn != RDMSR && insn != WRMSR {
        return false;
    }
    frame.rip += 2;
    GP_CAUGHT.fetch_add(1, Ordering::Relaxed);
    true
}

/// `rdmsr` of `msr`, with #GP caught.
pub fn rdmsr(msr: u32) -> Result<u64, GpFault> {
    let before = GP_CAUGHT.load(Ordering::Relaxed);
    GP_ARMED.store(true, Ordering::Relaxed);
    let (lo, hi): (u32, u32);
    // SAFETY: rdmsr has no memory effects; a #GP is caught and skipped by
    // catch_gp (no `nomem`: the handler writes GP_CAUGHT meanwhile).
    unsafe { asm!("xor eax, eax", "xor edx, edx", "rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi, options(nostack)) }
    GP_ARMED.store(false, Ordering::Relaxed);
    if GP_CAUGHT.load(Ordering::Relaxed) != before {
        return Err(GpFault);
    }
    Ok(u64::from(hi) << 32 | u64::from(lo))
}

/// `wrmsr` of `value` to `msr`, with #GP caught.
///
/// # Safety
/// The write must not change how this guest's memory or code behaves
/// (EFER, PAT of the pages in use, the APIC base...) in ways Rust does not
/// expect.
pub unsafe fn wrmsr(msr: u32, value: u64) -> Result<(), GpFault> {
    let before = GP_CAUGHT.load(Ordering::Relaxed);
    GP_ARMED.store(true, Ordering::Relaxed);
    // SAFETY: the caller vouches for the write; a #GP is caught by catch_gp.
    unsafe {
        asm!("wrmsr", in("ecx") msr, in("eax") value as u32, in("edx") (value >> 32) as u32, options(nostack))
    }
    GP_ARMED.store(false, Ordering::Relaxed);
    if GP_CAUGHT.load(Ordering::Relaxed) != before {
        return Err(GpFault);
    }
    Ok(())
}
