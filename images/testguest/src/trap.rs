//! The IDT and the Rust side of interrupt entry. Every vector points at its
//! stub in boot.s (`trap_stubs + 16 * vector`), which saves a [`TrapFrame`]
//! and calls [`trap_dispatch`]. Handled here: the APIC timer and IPI
//! vectors (counted), the spurious vector, and #GP from a guarded MSR
//! access; anything else is fatal for the test.
use core::arch::asm;
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU32, Ordering};

use testguest::protocol::apic::{IPI_VECTOR, SPURIOUS_VECTOR, TIMER_VECTOR};

use crate::{apic, cpu};

/// Timer interrupts taken (any CPU).
pub static TIMER_TICKS: AtomicU32 = AtomicU32::new(0);
/// IPIs (vector 0x41) taken (any CPU).
pub static IPIS: AtomicU32 = AtomicU32::new(0);
/// Spurious interrupts taken.
pub static SPURIOUS: AtomicU32 = AtomicU32::new(0);

/// Saved by `trap_common` in boot.s; the first 15 fields in reverse push order.
#[repr(C)]
#[derive(Debug)]
pub struct TrapFrame {
    pub rax: u64,
    pub rbx: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub rbp: u64,
    pub r8: u64,
    pub r9: u64,
    pub r10: u64,
    pub r11: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
    pub vector: u64,
    pub error: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

/// A 64-bit interrupt gate (SDM Vol. 3A §6.14.1).
#[derive(Clone, Copy)]
#[repr(C)]
struct Gate {
    offset_low: u16,
    selector: u16,
    ist: u8,
    attributes: u8,
    offset_mid: u16,
    offset_high: u32,
    reserved: u32,
}

const CODE64: u16 = 0x18;
/// Present, DPL 0, 64-bit interrupt gate (IF cleared on entry).
const INTERRUPT_GATE: u8 = 0x8E;

#[repr(C, align(16))]
struct Idt(UnsafeCell<[Gate; 256]>);

// SAFETY: only the BSP writes the table, in init_idt before any AP exists
// and before interrupts are enabled; afterwards it is only read by the CPU.
unsafe impl Sync for Idt {}

static IDT: Idt = Idt(UnsafeCell::new(
    [Gate { offset_low: 0, selector: 0, ist: 0, attributes: 0, offset_mid: 0, offset_high: 0, reserved: 0 }; 256],
));

unsafe extern "C" {
    static trap_stubs: [[u8; 16]; 256];
    static ap_stacks: u8;
    static ap_stacks_end: u8;
}

#[repr(C, packed)]
struct DescriptorPointer {
    limit: u16,
    base: u64,
}

/// Fills the IDT and loads it (BSP, once).
pub fn init_idt() {
    // SAFETY: the BSP alone runs this, with interrupts off and no AP started
    // (see `impl Sync for Idt`).
    let gates = unsafe { &mut *IDT.0.get() };
    for (vector, gate) in gates.iter_mut().enumerate() {
        // SAFETY: taking the address of an extern static defined in boot.s.
        let stub = unsafe { core::ptr::addr_of!(trap_stubs[vector]) } as u64;
        *gate = Gate {
            offset_low: stub as u16,
            selector: CODE64,
            ist: 0,
            attributes: INTERRUPT_GATE,
            offset_mid: (stub >> 16) as u16,
            offset_high: (stub >> 32) as u32,
            reserved: 0,
        };
    }
    load_idt();
}

/// Loads the IDT init_idt filled (each CPU).
pub fn load_idt() {
    let ptr = DescriptorPointer { limit: (core::mem::size_of::<Idt>() - 1) as u16, base: IDT.0.get() as u64 };
    // SAFETY: the IDT is static and fully initialised by the BSP.
    unsafe { asm!("lidt [{}]", in(reg) &ptr, options(readonly, nostack, preserves_flags)) }
}

/// Loads an IDT with limit 0: the next exception cannot be delivered, nor
/// the #GP and #DF that follow, so the CPU shuts down (triple fault, SDM
/// Vol. 3A §6.15, "Interrupt 8").
pub fn load_empty_idt() {
    let ptr = DescriptorPointer { limit: 0, base: 0 };
    // SAFETY: this is the point: callers are about to die by triple fault.
    unsafe { asm!("lidt [{}]", in(reg) &ptr, options(readonly, nostack, preserves_flags)) }
}

/// Whether the current stack is one of the APs' stacks (boot.s).
pub fn on_ap_stack() -> bool {
    let here = 0u8;
    let rsp = core::ptr::addr_of!(here) as u64;
    let (start, end) = (&raw const ap_stacks as u64, &raw const ap_stacks_end as u64);
    (start..end).contains(&rsp)
}

#[unsafe(no_mangle)]
extern "C" fn trap_dispatch(frame: &mut TrapFrame) {
    let vector = frame.vector as u8;
    match vector {
        TIMER_VECTOR => {
            TIMER_TICKS.fetch_add(1, Ordering::SeqCst);
            apic::eoi();
        }
        IPI_VECTOR => {
            IPIS.fetch_add(1, Ordering::SeqCst);
            apic::eoi();
        }
        // No EOI for a spurious interrupt (SDM Vol. 3A §11.9).
        SPURIOUS_VECTOR => {
            SPURIOUS.fetch_add(1, Ordering::SeqCst);
        }
        13 if cpu::catch_gp(frame) => {}
        1 if crate::tests::debug::catch_db(frame) => {}
        _ => crate::die_from_trap(frame, on_ap_stack()),
    }
}

pub fn vector_name(vector: u8) -> &'static str {
    const NAMES: [&str; 32] = [
        "#DE", "#DB", "NMI", "#BP", "#OF", "#BR", "#UD", "#NM", "#DF", "vector 9", "#TS", "#NP", "#SS", "#GP",
        "#PF", "vector 15", "#MF", "#AC", "#MC", "#XM", "#VE", "#CP", "vector 22", "vector 23", "vector 24",
        "vector 25", "vector 26", "vector 27", "#HV", "#VC", "#SX", "vector 31",
    ];
    NAMES.get(usize::from(vector)).copied().unwrap_or("interrupt")
}
