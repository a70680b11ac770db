//! `testguest`: a small guest kernel of our own that exercises Alcove's
//! hardware virtualization (AMD SVM with NPT, Intel VMX with EPT). This lib
//! holds only [`protocol`], the constants both sides use; the guest itself
//! is the bin (`src/main.rs`, built for `x86_64-unknown-none`).
//!
//! # Guest contract
//!
//! The VMM implements one side, the guest (this crate's bin) the other.
//!
//! **Loading.** Guest RAM starts at guest-physical 0 and is at least
//! [`MIN_RAM_BYTES`](protocol::MIN_RAM_BYTES) (2 MiB). The ELF has one
//! RWX `PT_LOAD` segment linked with VMA = LMA, starting at
//! [`ENTRY_GPA`](protocol::ENTRY_GPA) (0x8000) with the 16-bit entry
//! `_start16` at exactly 0x8000. The VMM copies each `PT_LOAD` to its
//! physical address and zeroes the rest of RAM (the guest zeroes its `.bss`
//! again anyway). The image ends below 0x9F000.
//!
//! **Start.** vCPU 0 starts in real mode: CS.selector = 0, CS.base = 0,
//! IP = 0x8000, SP = 0x7000, EFLAGS = 2 (interrupts off), **BX = the test
//! number** ([`Test`](protocol::Test)) and **ECX = the guest RAM size in
//! bytes** (used by the scribble test; values above 3 GiB are clamped).
//! Other vCPUs wait for INIT-SIPI-SIPI: the guest starts them itself through
//! its local APIC with SIPI vector [`SIPI_VECTOR`](protocol::SIPI_VECTOR)
//! (0x08), so they too begin at 0x8000 in real mode (CS = 0x0800, IP = 0).
//! Only the IPI test starts an AP; the VMM creates
//! [`Test::vcpus`](protocol::Test::vcpus) vCPUs for each test.
//!
//! **Boot.** Real mode → protected mode → long mode with the guest's own
//! GDT (0x08 code32, 0x10 data, 0x18 code64), page tables (identity map of
//! the first 4 GiB with 2 MiB pages; the top GiB, holding the LAPIC at
//! 0xFEE0_0000 and the MMIO test page, is mapped uncached) and IDT, then
//! Rust `guest_main(test, is_ap, ram_bytes)`. The guest needs an xAPIC at
//! 0xFEE0_0000 for tests 4-6 and the x2APIC MSRs for test 5 if CPUID offers
//! them. It uses no SSE/x87.
//!
//! **Reporting.** Bytes written to port [`CONSOLE_PORT`](protocol::CONSOLE_PORT)
//! (0xE9) are the guest's console: ASCII lines, one per check. The result is
//! a single 32-bit `out` to [`RESULT_PORT`](protocol::RESULT_PORT) (0xF4):
//! [`RESULT_PASS`](protocol::RESULT_PASS) (0), or a failure code
//! `test << 16 | check` ([`FailureCode`](protocol::FailureCode)), written
//! after a console line that explains it. Then the vCPU executes `cli; hlt`
//! forever. APs never write 0xF4. An unknown test number prints
//! `unknown test N` and reports [`UNKNOWN_TEST`](protocol::UNKNOWN_TEST)
//! (0xFFFF).
//!
//! **Tests** (BX):
//! 1. `cpuid` — CPUID.1:ECX[31] (hypervisor) set; leaf 0x4000_0000 returns
//!    EAX >= 0x4000_0010 and "AlcoveAlcove" in EBX, ECX, EDX; leaf
//!    0x4000_0010 EAX = TSC frequency in kHz, nonzero.
//! 2. `pio` — `out` to 0x510 of 0x11 (1 byte), 0x2233 (2), 0x4455_6677 (4),
//!    in that order (the VMM records and checks them); `in` from 0x511 in
//!    sizes 1, 2, 4, answered 0xA5, 0xA5A5, 0xA5A5_A5A5; `rep outsb` of
//!    "ALCOVE!\n" to 0xE9; `rep insb` of 4 bytes from 0x511 (0xA5 each).
//! 3. `mmio` — the page at 0xD000_0000 is not RAM: every access exits and
//!    the VMM emulates [`mmio::TestDevice`](protocol::mmio::TestDevice)
//!    (8 RAM-like scratch bytes at +0, whose low 4 are "the 32-bit register";
//!    a read-only 0x1234_5678_9ABC_DEF0 at +8; all ones elsewhere). The guest
//!    uses `mov` 1/2/4/8-byte loads and stores, `movzx`, `mov` from an
//!    immediate, `or`/`and`/`test` with a memory operand, `xchg`,
//!    `rep stosd` (count 2) and `rep movsb` from RAM (count 4).
//! 4. `hlt_timer` — xAPIC timer (vector 0x40, spurious 0xFF, divide by 1):
//!    one-shot via `sti; hlt`, then periodic (3 interrupts, then masked),
//!    then TSC-deadline (MSR 0x6E0) if CPUID.1:ECX[24] offers it. EOI by
//!    writing 0 to 0xFEE0_00B0.
//! 5. `x2apic_timer` — if CPUID.1:ECX[21] offers x2APIC: enable it through
//!    IA32_APIC_BASE (0x1B, bits 10 and 11) and repeat the one-shot timer
//!    through MSRs 0x80F, 0x832, 0x838, 0x839, 0x83E, EOI via 0x80B.
//! 6. `ipi` — 2 vCPUs. The BSP sends INIT-SIPI-SIPI (to all but itself);
//!    the AP enters long mode, publishes its APIC id, and halts with
//!    interrupts on; the BSP sends it a fixed IPI, vector 0x41, and waits
//!    (bounded) for the AP's handler to count it.
//! 7. `msr` — write and read back STAR, LSTAR, CSTAR, SFMASK,
//!    KERNEL_GS_BASE, SYSENTER_CS/ESP/EIP, PAT, TSC_AUX (if RDTSCP is
//!    offered); `rdmsr` 0x4B56_4D00 must return 0xA1C0_0E00 and `wrmsr` of
//!    0x1234 to it must not fault (the VMM records it); `rdmsr` 0x1234_5678
//!    must raise #GP in the guest.
//! 8. `npt_fault` — 8-byte and 1-byte reads of guest-physical 0x3000_0000
//!    (neither RAM nor a device) return all ones; then a 4-byte write of
//!    0x0BAD_F00D there (the VMM records and ignores it).
//! 9. `triple_fault` — loads an IDT with limit 0 and executes `int3`: the
//!    vCPU triple-faults and the VMM must see a shutdown. No result write.
//! 10. `scribble` — robustness: fills RAM from 2 MiB to ECX with
//!     [`scribble::pattern`](protocol::scribble::pattern), writes a 0 byte to
//!     every port except 0xE9 and 0xF4-0xF7, `rdmsr`s each of
//!     [`scribble::msr_numbers`](protocol::scribble::msr_numbers) and
//!     `wrmsr`s back what it read (0 if the read faulted), catching and
//!     counting #GP, then loads an empty IDT and jumps into a page of 0xFF
//!     bytes at 0x1F_F000: it triple-faults. It never reports a result; the
//!     host checks that it is still fine afterwards.
//! 11. `bench` — VM-exit path lengths, measured with RDTSC (under QEMU's
//!     `-icount shift=0` a TSC delta is the number of instructions executed,
//!     host and guest together). Four loops, each one asm block of one
//!     instruction plus `dec`/`jnz`, run [`bench::WARMUP`](protocol::bench::WARMUP)
//!     (50) times and then [`bench::ITERATIONS`](protocol::bench::ITERATIONS)
//!     (1000) times between two RDTSCs; figure = delta / 1000, floored:
//!     `vmexit_cpuid` (CPUID leaf 0 with EAX, ECX zeroed in the loop: 2
//!     more instructions per iteration), `vmexit_pio_user` (1-byte `out` to
//!     [`bench::PIO_PORT`](protocol::bench::PIO_PORT), 0x512, which the VMM
//!     ignores), `vmexit_mmio_user` (a 4-byte `mov` load from 0xD000_0000,
//!     the MMIO device's scratch register) and `vmexit_none` (a `nop`: the
//!     loop's own cost). The guest prints one line per figure, in that order
//!     ([`bench::NAMES`](protocol::bench::NAMES)), exactly
//!     `bench <name> <value> instructions` (parsed by
//!     [`bench::parse_line`](protocol::bench::parse_line)), then checks
//!     that each delta is nonzero and reports pass.
//! 12. `vmm_interrupt` — see [`vmm_interrupt`](protocol::vmm_interrupt).
//! 13. `fpu` — the FPU/SSE state through the run page, both ways (the
//!     guest sets CR4.OSFXSR and reads its state with FXSAVE); see
//!     [`fpu`](protocol::fpu) for 13 to 15.
//! 14. `fpu_fresh` — a new guest starts from the clean FPU state.
//! 15. `fpu_race` — a VMM thread races the kernel's read of the FPU image.
//! 16. `debug_exceptions` — single-stepping with TF: the guest's #DB handler
//!     takes [`debug::SINGLE_STEPS`](protocol::debug::SINGLE_STEPS) #DBs,
//!     each with DR6.BS, then clears TF; `invd` returns normally.
//! 17. `spin_timer` — the xAPIC timer reaching a vCPU that never halts: the
//!     one-shot timer, then the TSC-deadline timer if offered, each waited
//!     for with interrupts on in a loop of plain loads (no HLT, no PAUSE, no
//!     exit of the guest's own); one interrupt each. How far past its
//!     deadline the TSC-deadline interrupt came is printed (TSC cycles), not
//!     checked.
//! 18. `ap_while_bsp_exits` — 2 vCPUs, fairness between two vCPU threads
//!     sharing a host CPU: the BSP starts the AP as `ipi` does, then waits
//!     for it only with CPUID (an exit the kernel finishes itself, so the
//!     BSP's thread never returns to its VMM for it) while the AP, in long
//!     mode, counts [`AP_WORK`](protocol::AP_WORK) `pause` iterations
//!     (several time slices under Bochs) and sets a flag. The BSP's wait is
//!     bounded by [`BSP_CPUID_BOUND`](protocol::BSP_CPUID_BOUND) CPUIDs; how
//!     many it made is printed.
#![no_std]
#![forbid(unsafe_code)]

pub mod protocol;
