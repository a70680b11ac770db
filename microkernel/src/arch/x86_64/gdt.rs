//! Per-CPU GDT and TSS. Layout (selectors) is fixed by SYSCALL/SYSRET (SDM Vol.
//! 2B SYSRET: user SS = STAR[63:48] + 8, user CS = STAR[63:48] + 16):
//!
//! | index | selector | segment            |
//! |-------|----------|--------------------|
//! | 1     | 0x08     | kernel code        |
//! | 2     | 0x10     | kernel data        |
//! | 3     | 0x1b     | user data (RPL 3)  |
//! | 4     | 0x23     | user code (RPL 3)  |
//! | 5-6   | 0x28     | TSS (16 bytes)     |
//!
//! The TSS holds the interrupt stacks: IST1 for #DF, IST2 for NMI, IST3 for
//! #MC, so those run on a known-good stack whatever state the CPU was in; RSP0
//! points into the running thread's saved context (see entry.s), and the I/O
//! permission bitmap follows the TSS so drivers granted I/O ports can use
//! `in`/`out` directly (SDM Vol. 1 §19.5.2).
// clippy's deref_addrof fix for `*(&raw mut STATIC)` names the `static mut` itself, which `static_mut_refs` forbids.
#![allow(clippy::deref_addrof)]

use super::MAX_CPUS;
use core::arch::asm;
use core::mem::size_of;

pub const KERNEL_CS: u16 = 0x08;
pub const KERNEL_DS: u16 = 0x10;
pub const USER_DS: u16 = 0x1b;
pub const USER_CS: u16 = 0x23;
pub const TSS_SEL: u16 = 0x28;

pub const IST_DOUBLE_FAULT: u8 = 1;
pub const IST_NMI: u8 = 2;
pub const IST_MACHINE_CHECK: u8 = 3;

const IST_STACK_SIZE: usize = 8 * 1024;
/// Bytes of I/O bitmap: one bit per port, plus the terminating 0xff byte.
pub const IOMAP_BYTES: usize = 8192;

/// The 64-bit TSS (SDM Vol. 3A §8.7) followed by its I/O permission bitmap.
#[repr(C, packed(4))]
pub struct Tss {
    _reserved0: u32,
    pub rsp: [u64; 3],
    _reserved1: u64,
    pub ist: [u64; 7],
    _reserved2: u64,
    _reserved3: u16,
    pub iomap_base: u16,
    pub iomap: [u8; IOMAP_BYTES],
    iomap_end: u8,
}

#[repr(C, align(16))]
struct Stack([u8; IST_STACK_SIZE]);

#[repr(C, align(4096))]
struct CpuTables {
    gdt: [u64; 7],
    tss: Tss,
    ist: [Stack; 3],
}

const TSS_LIMIT: u64 = (size_of::<Tss>() - 1) as u64;

static mut CPUS: [CpuTables; MAX_CPUS] = [const {
    CpuTables {
        gdt: [0; 7],
        tss: Tss {
            _reserved0: 0,
            rsp: [0; 3],
            _reserved1: 0,
            ist: [0; 7],
            _reserved2: 0,
            _reserved3: 0,
            iomap_base: 0,
            iomap: [0xff; IOMAP_BYTES],
            iomap_end: 0xff,
        },
        ist: [const { Stack([0; IST_STACK_SIZE]) }; 3],
    }
}; MAX_CPUS];

const fn segment(access: u64, flags: u64) -> u64 {
    // limit 0xfffff, base 0; only the access byte and flags matter in long mode.
    0xffff | (0xf << 48) | (access << 40) | (flags << 52)
}

/// Loads CPU `cpu`'s GDT and TSS and reloads every segment register.
pub fn init_cpu(cpu: usize) {
    assert!(cpu < MAX_CPUS, "CPU index {cpu} beyond MAX_CPUS");
    // SAFETY: each CPU initialises only its own entry of CPUS, once, before
    // it takes interrupts; afterwards the CPU alone reads it through GDTR/TR,
    // and `tss_mut` hands out its TSS only to that CPU.
    unsafe {
        let t = &mut (*(&raw mut CPUS))[cpu];
        for i in 0..3 {
            let top = t.ist[i].0.as_ptr() as u64 + IST_STACK_SIZE as u64;
            t.tss.ist[i] = top;
        }
        t.tss.iomap_base = core::mem::offset_of!(Tss, iomap) as u16;
        let tss_base = &raw const t.tss as u64;
        t.gdt = [
            0,
            segment(0x9a, 0xa), // kernel code: present, DPL0, code, L=1, G
            segment(0x92, 0xc), // kernel data
            segment(0xf2, 0xc), // user data: DPL3
            segment(0xfa, 0xa), // user code: DPL3, L=1
            (TSS_LIMIT & 0xffff)
                | ((tss_base & 0xff_ffff) << 16)
                | (0x89 << 40) // present, available 64-bit TSS
                | (((TSS_LIMIT >> 16) & 0xf) << 48)
                | (((tss_base >> 24) & 0xff) << 56),
            tss_base >> 32,
        ];
        let ptr = x86::dtables::DescriptorTablePointer::new(&t.gdt);
        x86::dtables::lgdt(&ptr);
        asm!(
            "push {cs}",
            "lea {tmp}, [rip + 2f]",
            "push {tmp}",
            "retfq",
            "2:",
            "mov ds, {ds:x}",
            "mov es, {ds:x}",
            "mov ss, {ds:x}",
            cs = const KERNEL_CS as u64,
            ds = in(reg) KERNEL_DS,
            tmp = out(reg) _,
        );
        x86::task::load_tr(x86::segmentation::SegmentSelector::from_raw(TSS_SEL));
    }
}

/// The address of CPU `cpu`'s TSS.RSP0 (for `percpu`, which writes it on
/// each thread switch without indexing this table again).
pub fn rsp0_address(cpu: usize) -> u64 {
    // SAFETY: only the address is taken (no reference to the packed field).
    unsafe { (&raw mut (*(&raw mut CPUS))[cpu].tss.rsp).cast::<u64>() as u64 }
}

/// Installs an I/O permission bitmap (a clear bit allows the port) on `cpu`.
/// Called under the big kernel lock, for this CPU or (when a revocation
/// withdraws ports) for another one that may be running the bitmap's
/// process in ring 3: that CPU reads the bitmap from memory at each port
/// access (SDM Vol. 1 §19.5.2), so the ports are denied once this returns.
pub fn set_io_bitmap(cpu: usize, bitmap: Option<&[u8; IOMAP_BYTES]>) {
    // SAFETY: every writer of any TSS's I/O bitmap holds the big kernel
    // lock, so writes never race each other; the CPUs themselves only read
    // the bitmap (port accesses in ring 3), and a byte seen before or after
    // its update is either the old or the new permission, never undefined.
    unsafe {
        let tss = &mut (*(&raw mut CPUS))[cpu].tss;
        match bitmap {
            Some(b) => tss.iomap.copy_from_slice(b),
            None => tss.iomap.fill(0xff),
        }
    }
}

/// The linear address of CPU `cpu`'s TSS (for VMX host state).
pub fn tss_base(cpu: usize) -> u64 {
    // Only the address is taken.
    // SAFETY: no access, just the field's address inside the static.
    unsafe { &raw const (*(&raw const CPUS))[cpu].tss as u64 }
}

/// The linear address of CPU `cpu`'s GDT.
pub fn gdt_base(cpu: usize) -> u64 {
    // SAFETY: as tss_base.
    unsafe { &raw const (*(&raw const CPUS))[cpu].gdt as u64 }
}

/// Reloads GDTR on CPU `cpu` with its GDT's real limit: a VMX exit sets
/// the limit to 0xFFFF (SDM Vol. 3C §28.5.2), which would let selectors
/// past the table's end reach whatever memory follows it.
pub fn reload_gdt(cpu: usize) {
    // SAFETY: CPU `cpu` is the caller; the GDT is this CPU's own static
    // table, already loaded with this base: only the limit changes back.
    unsafe {
        let ptr = x86::dtables::DescriptorTablePointer::new(&(*(&raw const CPUS))[cpu].gdt);
        x86::dtables::lgdt(&ptr);
    }
}

/// Reloads TR on CPU `cpu` (after a VM exit left its limit short): the
/// descriptor's busy bit is cleared first, as LTR requires.
pub fn reload_tr(cpu: usize) {
    // SAFETY: CPU `cpu` is the caller; it rewrites only its own GDT's TSS
    // descriptor type (busy 0xb back to available 0x9) and loads TR from it.
    unsafe {
        let gdt = &mut (*(&raw mut CPUS))[cpu].gdt;
        gdt[5] &= !(0x2 << 40);
        x86::task::load_tr(x86::segmentation::SegmentSelector::from_raw(TSS_SEL));
    }
}
