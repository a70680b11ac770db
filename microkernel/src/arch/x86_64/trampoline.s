/* Application-processor start-up code. The bootstrap CPU copies the bytes
 * between ap_trampoline_start and ap_trampoline_end to physical 0x8000 and
 * sends INIT-SIPI-SIPI with vector 0x08; the AP starts here in real mode at
 * 0x0800:0000 (SDM Vol. 3A §9.4.4). All addresses inside are computed for
 * the copy at TRAMP_BASE. The parameter block at the end is filled in by the
 * BSP for each AP in turn. */

.set TRAMP_BASE, 0x8000
/* Addresses in the copy are written as (label - ap_trampoline_start +
 * TRAMP_BASE) in data directives, the only place the assembler folds a
 * difference of two labels; instructions that need them are hand-encoded. */

.section .rodata.trampoline, "a"
.balign 16
.global ap_trampoline_start
ap_trampoline_start:
.code16
    cli
    cld
    xor ax, ax
    mov ds, ax
    .byte 0x0f, 0x01, 0x16      /* lgdt [disp16] */
    .word ap_gdt_ptr - ap_trampoline_start + TRAMP_BASE
    mov eax, cr0
    or eax, 1
    mov cr0, eax
    /* ljmp 0x08:ap_pm32 (66 ea imm32 imm16) */
    .byte 0x66, 0xea
    .long ap_pm32 - ap_trampoline_start + TRAMP_BASE
    .word 0x08
.code32
ap_pm32:
    mov ax, 0x10
    mov ds, ax
    mov es, ax
    mov ss, ax
    mov eax, cr4
    or eax, (1 << 5)            /* PAE */
    mov cr4, eax
    .byte 0xa1                  /* mov eax, [moffs32] */
    .long ap_param_cr3 - ap_trampoline_start + TRAMP_BASE
    mov cr3, eax
    mov ecx, 0xc0000080         /* EFER: LME, and NXE if the BSP has it */
    rdmsr
    or eax, (1 << 8)
    .byte 0x0b, 0x05            /* or eax, [disp32] */
    .long ap_param_efer_extra - ap_trampoline_start + TRAMP_BASE
    wrmsr
    mov eax, cr0
    or eax, (1 << 31) | (1 << 16)   /* PG | WP */
    mov cr0, eax
    .byte 0xea                  /* ljmp 0x18:ap_lm64 */
    .long ap_lm64 - ap_trampoline_start + TRAMP_BASE
    .word 0x18
.code64
ap_lm64:
    mov ax, 0x10
    mov ds, ax
    mov es, ax
    mov ss, ax
    mov rsp, [rip + ap_param_stack]
    mov rdi, [rip + ap_param_cpu]
    mov rax, [rip + ap_param_entry]
    jmp rax

.balign 8
ap_gdt:
    .quad 0
    .quad 0x00cf9a000000ffff    /* 0x08: 32-bit code */
    .quad 0x00cf92000000ffff    /* 0x10: data */
    .quad 0x00af9a000000ffff    /* 0x18: 64-bit code */
ap_gdt_ptr:
    .word ap_gdt_ptr - ap_gdt - 1
    .long ap_gdt - ap_trampoline_start + TRAMP_BASE

.balign 8
.global ap_param_cr3
ap_param_cr3:        .quad 0
.global ap_param_efer_extra
ap_param_efer_extra: .quad 0
.global ap_param_stack
ap_param_stack:      .quad 0
.global ap_param_cpu
ap_param_cpu:        .quad 0
.global ap_param_entry
ap_param_entry:      .quad 0
.global ap_trampoline_end
ap_trampoline_end:
