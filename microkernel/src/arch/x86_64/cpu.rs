//! Privileged instructions, each wrapped once with its safety argument.

use core::arch::asm;

/// Writes a byte to an I/O port.
///
/// Port writes cannot break memory safety by themselves; the kernel only
/// calls this for ports it owns (serial, PIC, PIT, exit ports).
pub fn outb(port: u16, value: u8) {
    // SAFETY: ring 0 may access every port; see the function's comment.
    unsafe { x86::io::outb(port, value) }
}

pub fn inb(port: u16) -> u8 {
    // SAFETY: as `outb`; reads of the kernel's own ports have no side effect
    // on memory.
    unsafe { x86::io::inb(port) }
}

pub fn outw(port: u16, value: u16) {
    // SAFETY: as `outb`.
    unsafe { x86::io::outw(port, value) }
}

pub fn inw(port: u16) -> u16 {
    // SAFETY: as `inb`.
    unsafe { x86::io::inw(port) }
}

pub fn outl(port: u16, value: u32) {
    // SAFETY: as `outb`.
    unsafe { x86::io::outl(port, value) }
}

pub fn inl(port: u16) -> u32 {
    // SAFETY: as `inb`.
    unsafe { x86::io::inl(port) }
}

pub fn read_cr2() -> u64 {
    // SAFETY: reading CR2 has no side effects.
    unsafe { x86::controlregs::cr2() as u64 }
}

/// Sets CR2 (a guest's, just before a VMX entry).
pub fn write_cr2(v: u64) {
    // SAFETY: CR2 only records the last page-fault address; the kernel reads
    // it only in its #PF handler, for a fault that happens after this.
    unsafe { x86::controlregs::cr2_write(v) }
}

pub fn read_cr0() -> u64 {
    // SAFETY: reading CR0 has no side effects.
    unsafe { x86::controlregs::cr0().bits() as u64 }
}

pub fn read_cr3() -> u64 {
    // SAFETY: reading CR3 has no side effects.
    unsafe { x86::controlregs::cr3() & 0x000f_ffff_ffff_f000 }
}

pub fn rdtsc() -> u64 {
    // SAFETY: RDTSC only reads the time-stamp counter.
    unsafe { core::arch::x86_64::_rdtsc() }
}

pub fn interrupts_off() {
    // SAFETY: masking interrupts cannot break memory safety.
    unsafe { asm!("cli", options(nomem, nostack)) }
}

pub fn halt_forever() -> ! {
    loop {
        // SAFETY: with interrupts masked, HLT parks the CPU for good.
        unsafe { asm!("cli; hlt", options(nomem, nostack)) }
    }
}

/// Remaps the 8259 PICs to vectors 0x20-0x2f (away from the exception
/// vectors) and masks every line: Alcove routes interrupts through the APIC.
pub fn mask_legacy_pic() {
    const ICW1: u8 = 0x11; // edge, cascade, ICW4 follows
    outb(0x20, ICW1);
    outb(0xa0, ICW1);
    outb(0x21, 0x20);
    outb(0xa1, 0x28);
    outb(0x21, 4);
    outb(0xa1, 2);
    outb(0x21, 1);
    outb(0xa1, 1);
    outb(0x21, 0xff);
    outb(0xa1, 0xff);
}

/// CPU features the kernel reports and later depends on.
#[derive(Clone, Copy, Debug, Default)]
pub struct Features {
    pub vendor: [u8; 12],
    pub nx: bool,
    pub pdpe1gb: bool,
    pub x2apic: bool,
    pub tsc_deadline: bool,
    pub vmx: bool,
    pub svm: bool,
    pub hypervisor: bool,
}

pub fn features() -> Features {
    let id = x86::cpuid::CpuId::new();
    let mut f = Features::default();
    if let Some(v) = id.get_vendor_info() {
        f.vendor.copy_from_slice(v.as_str().as_bytes().get(..12).unwrap_or(b"unknown     "));
    }
    if let Some(fi) = id.get_feature_info() {
        f.x2apic = fi.has_x2apic();
        f.tsc_deadline = fi.has_tsc_deadline();
        f.vmx = fi.has_vmx();
        f.hypervisor = fi.has_hypervisor();
    }
    if let Some(e) = id.get_extended_processor_and_feature_identifiers() {
        f.nx = e.has_execute_disable();
        f.pdpe1gb = e.has_1gib_pages();
        f.svm = e.has_svm();
    }
    f
}

/// Raises #BP (the handler counts it and returns).
pub fn breakpoint() {
    // SAFETY: the IDT handles vector 3 and returns to the next instruction.
    unsafe { asm!("int3", options(nomem, nostack)) }
}

pub fn interrupts_on() {
    // SAFETY: enabling interrupts is how the idle loop and the lock spin let
    // IPIs in; every handler is ready by then.
    unsafe { asm!("sti", options(nomem, nostack)) }
}

/// Halts until an interrupt arrives, with interrupts enabled only for the
/// halt (STI's one-instruction shadow makes `sti; hlt` race-free).
pub fn wait_for_interrupt() {
    // SAFETY: as `interrupts_on`.
    unsafe { asm!("sti; hlt; cli", options(nomem, nostack)) }
}

#[inline(always)]
pub fn write_cr3(pml4: u64) {
    super::percpu::this().cr3.store(pml4, core::sync::atomic::Ordering::Relaxed);
    // SAFETY: every address-space root the kernel loads maps the kernel half
    // identically (mem::new_pml4 copies it), so execution continues.
    unsafe { x86::controlregs::cr3_write(pml4) }
}

/// Drops this CPU's non-global translations.
pub fn flush_tlb() {
    // SAFETY: reloading CR3 with its own value only flushes the TLB.
    unsafe { x86::controlregs::cr3_write(x86::controlregs::cr3()) }
}

/// Flushes if `pml4` is the loaded address space.
pub fn flush_tlb_if(pml4: u64) {
    if read_cr3() == pml4 {
        flush_tlb();
    }
}

/// SYSCALL/SYSRET MSRs (entry at `syscall_entry`, IF/DF/TF/AC masked on
/// entry), and NX, SMEP, SMAP, global pages where the CPU has them.
pub fn enable_syscall_and_protection() {
    unsafe extern "C" {
        fn syscall_entry();
    }
    let id = x86::cpuid::CpuId::new();
    let ext = id.get_extended_feature_info();
    let smep = ext.as_ref().is_some_and(|e| e.has_smep());
    let smap = ext.as_ref().is_some_and(|e| e.has_smap());
    // SAFETY: these MSRs and CR4 bits exist on every x86-64 CPU that reports
    // them (checked above); syscall_entry is the kernel's entry stub; the
    // selectors match gdt.rs's layout.
    unsafe {
        const EFER: u32 = 0xc000_0080;
        let efer = x86::msr::rdmsr(EFER);
        let nx = if features().nx { 1 << 11 } else { 0 };
        x86::msr::wrmsr(EFER, efer | 1 | nx); // SCE
        // STAR[47:32] = kernel CS; STAR[63:48] + 8/16 = user SS/CS.
        x86::msr::wrmsr(0xc000_0081, (0x10u64 << 48) | (0x08u64 << 32));
        x86::msr::wrmsr(0xc000_0082, syscall_entry as *const () as u64);
        // IF, TF, DF, AC, NT cleared on entry.
        x86::msr::wrmsr(0xc000_0084, (1 << 9) | (1 << 8) | (1 << 10) | (1 << 18) | (1 << 14));
        // OSFXSR (FXSAVE, SSE) and OSXMMEXCPT (an unmasked SIMD
        // floating-point exception is #XM, not #UD).
        let mut cr4 = x86::controlregs::cr4()
            | x86::controlregs::Cr4::CR4_ENABLE_SSE
            | x86::controlregs::Cr4::CR4_UNMASKED_SSE;
        // A process thread's FPU/SSE registers are loaded at its first use
        // (CR0.TS makes it fault, kernel::fpu); guests get theirs, saved per
        // vCPU (kernel::vm). MP: WAIT faults under TS too; NE: x87 errors
        // are #MF, not the legacy FERR# line. Caching on: an AP comes out
        // of INIT with CR0.CD and NW set (SDM Vol. 3A §9.1.1) and the
        // trampoline keeps them, which on hardware makes every memory
        // access of that CPU uncached; no flush is needed to turn it on.
        use x86::controlregs::Cr0;
        let cr0 = (x86::controlregs::cr0() | Cr0::CR0_TASK_SWITCHED | Cr0::CR0_MONITOR_COPROCESSOR | Cr0::CR0_NUMERIC_ERROR)
            - (Cr0::CR0_CACHE_DISABLE | Cr0::CR0_NOT_WRITE_THROUGH);
        x86::controlregs::cr0_write(cr0);
        if smep {
            cr4 |= x86::controlregs::Cr4::CR4_ENABLE_SMEP;
        }
        if smap {
            cr4 |= x86::controlregs::Cr4::CR4_ENABLE_SMAP;
        }
        x86::controlregs::cr4_write(cr4);
    }
}

/// Loads a guest's or a process thread's FPU/SSE state (FXRSTOR; CR0.TS
/// cleared for it).
pub fn fpu_load(area: &[u8; 512]) {
    // SAFETY: CR4.OSFXSR is set at boot; `area` is 512 bytes, 16-byte
    // aligned (FxArea is align(64)) and holds an image FXSAVE wrote or the
    // clean state; CLTS only allows FPU use in ring 0 here.
    unsafe { asm!("clts", "fxrstor64 [{}]", in(reg) area.as_ptr(), options(nostack)) }
}

/// This CPU's MXCSR_MASK (SDM Vol. 1 §11.6.6): the MXCSR bits FXRSTOR and
/// LDMXCSR accept; 0 in the FXSAVE image means the default 0xFFBF.
pub fn mxcsr_mask() -> u32 {
    #[repr(C, align(16))]
    struct Area([u8; 512]);
    let mut area = Area([0; 512]);
    // SAFETY: CR4.OSFXSR is set at boot; FXSAVE writes 512 bytes into a
    // 16-byte aligned local; CR0.TS is set again afterwards (processes have
    // no FPU) and nothing else used the FPU in between.
    unsafe { asm!("clts", "fxsave64 [{}]", in(reg) area.0.as_mut_ptr(), options(nostack)) };
    fpu_disable();
    match u32::from_le_bytes([area.0[28], area.0[29], area.0[30], area.0[31]]) {
        0 => 0xffbf,
        m => m,
    }
}

/// Saves the guest's FPU/SSE state and loads the clean state, so nothing a
/// guest left in the registers reaches the host or another guest; sets
/// CR0.TS again (processes have no FPU).
pub fn fpu_save_and_clean(area: &mut [u8; 512], clean: &[u8; 512]) {
    // SAFETY: as fpu_load; FXSAVE writes exactly 512 bytes into `area`.
    unsafe {
        asm!("clts", "fxsave64 [{}]", "fxrstor64 [{}]", in(reg) area.as_mut_ptr(), in(reg) clean.as_ptr(), options(nostack));
    }
    fpu_disable();
}

/// Saves a process thread's FPU/SSE state and sets CR0.TS again, so the
/// next thread's first use faults (#NM) and loads its own (kernel::fpu).
pub fn fpu_save(area: &mut [u8; 512]) {
    // SAFETY: as fpu_load; FXSAVE writes exactly 512 bytes into `area`
    // (16-byte aligned: FxArea is align(64)). The registers it reads are
    // left as they are, behind CR0.TS.
    unsafe { asm!("clts", "fxsave64 [{}]", in(reg) area.as_mut_ptr(), options(nostack)) };
    fpu_disable();
}

/// Sets CR0.TS without saving anything: the registers' owner is gone, and
/// the next thread's first use loads its own over every one of them.
pub fn fpu_disable() {
    // SAFETY: setting CR0.TS only makes FPU/SSE instructions fault (#NM);
    // the kernel uses none (soft-float target).
    unsafe { x86::controlregs::cr0_write(x86::controlregs::cr0() | x86::controlregs::Cr0::CR0_TASK_SWITCHED) }
}

/// Lets a pending host interrupt in (its handler only records it).
pub fn open_interrupt_window() {
    // SAFETY: the kernel's interrupt handlers are ready; the window is one
    // instruction wide and interrupts are off again after it.
    unsafe { asm!("sti", "nop", "cli", options(nomem, nostack)) }
}

/// The current stack pointer (for the kernel's own stack-depth checks).
pub fn stack_pointer() -> u64 {
    let sp: u64;
    // SAFETY: reading RSP has no side effects.
    unsafe { asm!("mov {}, rsp", out(reg) sp, options(nomem, nostack, preserves_flags)) };
    sp
}
