//! The IDT and the Rust side of trap entry (the stubs are in trap.s).
//!
//! Exceptions raised by the kernel itself are bugs: the handler prints the
//! vector, error code, RIP, CR2 and every register over serial behind an
//! `ALCOVE-FATAL` line and stops the machine with a failure exit. `#BP` is the
//! one exception the kernel continues from (it counts it and logs it).
// clippy's deref_addrof fix for `*(&raw mut STATIC)` names the `static mut` itself, which `static_mut_refs` forbids.
#![allow(clippy::deref_addrof)]

use super::gdt::{IST_DOUBLE_FAULT, IST_MACHINE_CHECK, IST_NMI, KERNEL_CS};
use core::fmt::Write;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Registers as trap.s saves them; field order is the push order reversed.
/// 16-byte aligned (and 176 bytes long) so that the end of a thread's saved
/// context, which is TSS.RSP0, is 16-byte aligned: the CPU aligns RSP down to
/// 16 before pushing an interrupt frame (SDM Vol. 3A §6.14.2), which would
/// otherwise shift the frame.
#[repr(C, align(16))]
#[derive(Clone, Copy, Debug)]
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
    pub error_code: u64,
    // Pushed by the CPU.
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

const _: () = assert!(core::mem::size_of::<TrapFrame>() == 176);

impl TrapFrame {
    pub const fn zeroed() -> Self {
        Self {
            rax: 0, rbx: 0, rcx: 0, rdx: 0, rsi: 0, rdi: 0, rbp: 0, r8: 0, r9: 0, r10: 0, r11: 0, r12: 0,
            r13: 0, r14: 0, r15: 0, vector: 0, error_code: 0, rip: 0, cs: 0, rflags: 0, rsp: 0, ss: 0,
        }
    }
}

#[repr(C, align(16))]
struct Idt([u64; 512]);

static mut IDT: Idt = Idt([0; 512]);

unsafe extern "C" {
    static trap_stubs: u8;
}

/// Breakpoints taken so far (a system test checks that traps return).
pub static BREAKPOINTS: AtomicU64 = AtomicU64::new(0);

/// Fills the IDT with interrupt gates to the 256 stubs and loads it.
pub fn init() {
    let stubs = &raw const trap_stubs as u64;
    // SAFETY: runs on the bootstrap CPU before interrupts are enabled or other
    // CPUs started, so nothing reads IDT while it is written; later CPUs only
    // load it.
    unsafe {
        let idt = &mut *(&raw mut IDT);
        for v in 0..256u64 {
            let handler = stubs + 16 * v;
            let ist = match v {
                8 => IST_DOUBLE_FAULT,
                2 => IST_NMI,
                18 => IST_MACHINE_CHECK,
                _ => 0,
            } as u64;
            // Interrupt gate (type 0xe), present, DPL 0 (SDM Vol. 3A §6.14.1).
            idt.0[2 * v as usize] = (handler & 0xffff)
                | ((KERNEL_CS as u64) << 16)
                | (ist << 32)
                | (0x8e << 40)
                | (((handler >> 16) & 0xffff) << 48);
            idt.0[2 * v as usize + 1] = handler >> 32;
        }
    }
    load();
}

/// Loads the IDT on the calling CPU.
pub fn load() {
    // SAFETY: the IDT is a static that lives forever and is fully initialised
    // by `init` before any CPU loads it.
    unsafe {
        let ptr = x86::dtables::DescriptorTablePointer::new(&(*(&raw const IDT)).0);
        x86::dtables::lidt(&ptr);
    }
}

const NAMES: [&str; 32] = [
    "#DE divide error",
    "#DB debug",
    "NMI",
    "#BP breakpoint",
    "#OF overflow",
    "#BR bound range",
    "#UD invalid opcode",
    "#NM device not available",
    "#DF double fault",
    "coprocessor segment overrun",
    "#TS invalid TSS",
    "#NP segment not present",
    "#SS stack-segment fault",
    "#GP general protection",
    "#PF page fault",
    "reserved 15",
    "#MF x87 floating point",
    "#AC alignment check",
    "#MC machine check",
    "#XM SIMD floating point",
    "#VE virtualization",
    "#CP control protection",
    "reserved 22",
    "reserved 23",
    "reserved 24",
    "reserved 25",
    "reserved 26",
    "reserved 27",
    "#HV hypervisor injection",
    "#VC VMM communication",
    "#SX security",
    "reserved 31",
];

/// Called by trap.s for traps taken in ring 0 (other than NMI, #DF and #MC,
/// see `trap_on_ist`), with the saved state of the interrupted context.
#[unsafe(no_mangle)]
extern "C" fn trap_from_kernel(frame: &mut TrapFrame) {
    match frame.vector {
        3 => {
            BREAKPOINTS.fetch_add(1, Ordering::Relaxed);
            log::debug!("breakpoint at {:#x}", frame.rip);
        }
        0..=31 => fatal_exception(frame),
        v => crate::kernel::interrupt_in_kernel(v as u8),
    }
}

/// NMIs taken on any CPU.
pub static NMIS: AtomicU64 = AtomicU64::new(0);
/// Of those, the ones that arrived in ring 0 while the user's GS base was
/// live (the first instructions of a system call, the last of a return to
/// ring 3), so trap.s had to swap GS although CS said ring 0.
pub static NMIS_ON_USER_GS: AtomicU64 = AtomicU64::new(0);

/// Makes the window an NMI can find in `syscall_entry` and `return_to_user`
/// (ring 0 with the user's GS base loaded) and sends this CPU an NMI in it:
/// true when the handler ran (it reaches its per-CPU data through GS, so it
/// runs only if trap.s swapped the kernel's GS in). For the boot tests.
pub fn nmi_with_user_gs(my_apic_id: u32) -> bool {
    super::cpu::interrupts_off();
    let before = NMIS.load(Ordering::SeqCst);
    let mut arrived = false;
    NMI_EXPECTED.store(true, Ordering::SeqCst);
    // SAFETY: interrupts are off (the kernel runs with IF clear) and nothing
    // between the two SWAPGS uses GS: `send_nmi` goes through statics, the
    // wait reads a static. Only the NMI comes in meanwhile, which is what
    // is tested; both SWAPGS together leave GS as it was. Not `nomem`: the
    // compiler must not move a per-CPU read (`percpu::this`, `readonly`)
    // between the two.
    unsafe { core::arch::asm!("swapgs", options(nostack, preserves_flags)) };
    super::apic::send_nmi(my_apic_id);
    for _ in 0..50_000_000u64 {
        if NMIS.load(Ordering::SeqCst) != before {
            arrived = true;
            break;
        }
        core::hint::spin_loop();
    }
    // SAFETY: as above: puts the kernel's GS base back.
    unsafe { core::arch::asm!("swapgs", options(nostack, preserves_flags)) };
    NMI_EXPECTED.store(false, Ordering::SeqCst);
    arrived
}

/// Called by trap.s for NMI, #DF and #MC (IST stacks), from ring 0 or 3,
/// with the kernel's GS base loaded; `swapped_gs` is 1 when trap.s had to
/// swap it in (the user's was live).
///
/// An NMI can arrive anywhere, also while this CPU holds a lock, so its
/// handler takes none: it counts, and reports on the serial port only if
/// the port is free (a report it cannot print is still counted).
#[unsafe(no_mangle)]
extern "C" fn trap_on_ist(frame: &mut TrapFrame, swapped_gs: u64) {
    if frame.vector != 2 {
        fatal_exception(frame);
    }
    let cpu = super::percpu::this();
    let n = cpu.nmis.fetch_add(1, Ordering::Relaxed) + 1;
    NMIS.fetch_add(1, Ordering::Relaxed);
    if swapped_gs != 0 && frame.cs & 3 == 0 {
        NMIS_ON_USER_GS.fetch_add(1, Ordering::Relaxed);
    }
    super::serial::try_with_locked(|w| {
        let _ = writeln!(w, "[WARN ] NMI on CPU {} at {:#x} ({n} on this CPU)", cpu.index, frame.rip);
    });
    // Not the kernel's own (`nmi_with_user_gs`): someone asks what the
    // machine is doing.
    if !NMI_EXPECTED.load(Ordering::Acquire) {
        crate::kernel::dump::on_nmi();
    }
}

/// Set while `nmi_with_user_gs` waits for the NMI it sent itself.
static NMI_EXPECTED: AtomicBool = AtomicBool::new(false);

fn fatal_exception(f: &TrapFrame) -> ! {
    super::cpu::interrupts_off();
    let name = NAMES[f.vector as usize & 31];
    let cr2 = super::cpu::read_cr2();
    super::serial::with_forced(|w| {
        let _ = writeln!(
            w,
            "{} exception {} (vector {}) error={:#x} rip={:#018x} cr2={:#018x}",
            kcore::testproto::FATAL,
            name,
            f.vector,
            f.error_code,
            f.rip,
            cr2
        );
        if f.vector == 14 {
            let e = f.error_code;
            let _ = writeln!(
                w,
                "  page fault: {} {} in {} mode{}",
                if e & 1 != 0 { "protection violation on" } else { "non-present page on" },
                if e & 16 != 0 { "fetch" } else if e & 2 != 0 { "write" } else { "read" },
                if e & 4 != 0 { "user" } else { "kernel" },
                if e & 8 != 0 { ", reserved bit set" } else { "" },
            );
        }
        let _ = writeln!(w, "  cs={:#06x} ss={:#06x} rflags={:#018x} rsp={:#018x} cr3={:#018x}",
            f.cs, f.ss, f.rflags, f.rsp, super::cpu::read_cr3());
        let _ = writeln!(w, "  rax={:#018x} rbx={:#018x} rcx={:#018x} rdx={:#018x}", f.rax, f.rbx, f.rcx, f.rdx);
        let _ = writeln!(w, "  rsi={:#018x} rdi={:#018x} rbp={:#018x} r8 ={:#018x}", f.rsi, f.rdi, f.rbp, f.r8);
        let _ = writeln!(w, "  r9 ={:#018x} r10={:#018x} r11={:#018x} r12={:#018x}", f.r9, f.r10, f.r11, f.r12);
        let _ = writeln!(w, "  r13={:#018x} r14={:#018x} r15={:#018x}", f.r13, f.r14, f.r15);
    });
    super::exit(super::Exit::Fail)
}

/// The IDT's linear address (for VMX host state).
pub fn idt_base() -> u64 {
    (&raw const IDT) as u64
}
