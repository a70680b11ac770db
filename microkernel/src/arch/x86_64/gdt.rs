//! The GDT and TSS. Layout (selectors) is fixed by SYSCALL/SYSRET (SDM Vol. 2B
//! SYSRET: user SS = STAR[63:48] + 8, user CS = STAR[63:48] + 16):
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
//! #MC, so those run on a known-good stack whatever state the CPU was in.

use core::arch::asm;
use core::mem::size_of;
use x86::bits64::task::TaskStateSegment;

pub const KERNEL_CS: u16 = 0x08;
pub const KERNEL_DS: u16 = 0x10;
#[allow(dead_code)] // for the syscall path (SYSRET) and user threads
pub const USER_DS: u16 = 0x1b;
#[allow(dead_code)]
pub const USER_CS: u16 = 0x23;
pub const TSS_SEL: u16 = 0x28;

pub const IST_DOUBLE_FAULT: u8 = 1;
pub const IST_NMI: u8 = 2;
pub const IST_MACHINE_CHECK: u8 = 3;

const IST_STACK_SIZE: usize = 16 * 1024;

#[repr(C, align(16))]
struct Stack([u8; IST_STACK_SIZE]);

#[repr(C, align(16))]
struct CpuTables {
    gdt: [u64; 7],
    tss: TaskStateSegment,
    ist: [Stack; 3],
}

static mut BSP: CpuTables = CpuTables {
    gdt: [0; 7],
    tss: TaskStateSegment::new(),
    ist: [const { Stack([0; IST_STACK_SIZE]) }; 3],
};

const fn segment(access: u64, flags: u64) -> u64 {
    // limit 0xfffff, base 0; only the access byte and flags matter in long mode.
    0xffff | (0xf << 48) | (access << 40) | (flags << 52)
}

/// Loads the bootstrap CPU's GDT and TSS and reloads every segment register.
pub fn init_bsp() {
    // SAFETY: runs once, on the bootstrap CPU, before any other CPU or
    // interrupt exists, so nothing else can reach `BSP` while it is written;
    // afterwards the CPU alone reads it through GDTR/TR.
    unsafe {
        let t = &mut *(&raw mut BSP);
        for (i, stack) in t.ist.iter().enumerate() {
            let top = stack.0.as_ptr() as u64 + IST_STACK_SIZE as u64;
            t.tss.ist[i] = top;
        }
        t.tss.iomap_base = size_of::<TaskStateSegment>() as u16; // no I/O bitmap yet
        let tss_base = &raw const t.tss as u64;
        let tss_limit = size_of::<TaskStateSegment>() as u64 - 1;
        t.gdt = [
            0,
            segment(0x9a, 0xa), // kernel code: present, DPL0, code, L=1, G
            segment(0x92, 0xc), // kernel data
            segment(0xf2, 0xc), // user data: DPL3
            segment(0xfa, 0xa), // user code: DPL3, L=1
            (tss_limit & 0xffff)
                | ((tss_base & 0xff_ffff) << 16)
                | (0x89 << 40) // present, available 64-bit TSS
                | (((tss_limit >> 16) & 0xf) << 48)
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
