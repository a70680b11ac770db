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

pub fn read_cr3() -> u64 {
    // SAFETY: reading CR3 has no side effects.
    unsafe { x86::controlregs::cr3() }
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
