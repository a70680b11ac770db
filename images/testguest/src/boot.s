/* testguest boot path: real mode -> protected mode -> long mode.
 *
 * The VMM starts vCPU 0 here in real mode (CS:IP = 0000:8000, BX = test
 * number, ECX = RAM bytes); an AP started by the guest's INIT-SIPI-SIPI
 * (vector 0x08) arrives here too, at 0800:0000 (SDM Vol. 3A §9.4.4). The
 * BSP sets AP_BOOT (a Rust static) before sending the SIPI, which is how
 * this code tells the two apart. Only the BSP zeroes .bss and builds the
 * page tables: identity map of the first 4 GiB with 2 MiB pages, the top
 * GiB (LAPIC, MMIO test page) uncached. Then each CPU takes a stack and
 * calls guest_main(test, is_ap, ram_bytes).
 *
 * No code here uses the stack before long mode (an AP has no valid SP).
 * The image is linked at its load address, so absolute addresses are
 * plain; far jumps and lgdt in 16-bit code are hand-encoded because LLVM's
 * assembler does not take them in that form. */

.set CODE32, 0x08
.set DATA,   0x10
.set CODE64, 0x18
.set MAX_APS, 3
.set AP_STACK_BYTES, 0x4000
.set BSP_STACK_BYTES, 0x8000

.section .text.boot, "awx"
.code16
.global _start16
_start16:
    cli
    cld
    /* ljmp 0000:rm_start, so BSP and AP both run with CS = 0 (ea imm16 imm16) */
    .byte 0xea
    .word rm_start
    .word 0
rm_start:
    xor ax, ax
    mov ds, ax
    mov es, ax
    mov ss, ax
    movzx esi, bx               /* test number (meaningful on the BSP only) */
    mov ebp, ecx                /* RAM bytes (likewise) */
    .byte 0x66, 0x0f, 0x01, 0x16 /* lgdt [gdt_ptr], 32-bit base (o32, disp16) */
    .word gdt_ptr
    mov eax, cr0
    or eax, 1                   /* PE */
    mov cr0, eax
    .byte 0x66, 0xea            /* ljmp CODE32:pm_start (o32 ea imm32 imm16) */
    .long pm_start
    .word CODE32

.code32
pm_start:
    mov ax, DATA
    mov ds, ax
    mov es, ax
    mov ss, ax
    mov fs, ax
    mov gs, ax
    cmp dword ptr [AP_BOOT], 0
    jne enable_long_mode        /* an AP: the BSP's page tables are ready */

    /* BSP: zero .bss (page tables, stacks, Rust statics). */
    mov edi, offset __bss_start
    mov ecx, offset __bss_end
    sub ecx, edi
    xor eax, eax
    rep stosb

    /* PML4[0] -> PDPT; PDPT[0..4] -> four PDs; present|writable. */
    mov dword ptr [boot_pml4], offset boot_pdpt + 3
    mov dword ptr [boot_pdpt], offset boot_pd + 0x0003
    mov dword ptr [boot_pdpt + 8], offset boot_pd + 0x1003
    mov dword ptr [boot_pdpt + 16], offset boot_pd + 0x2003
    mov dword ptr [boot_pdpt + 24], offset boot_pd + 0x3003
    /* PD entries 0..2048: 2 MiB pages, present|writable|PS; entries from
     * 1536 (3 GiB) up also PCD|PWT (uncached). High dwords stay 0. */
    xor ecx, ecx
1:  mov eax, ecx
    shl eax, 21
    or eax, 0x83
    cmp ecx, 1536
    jb 2f
    or eax, 0x18
2:  mov dword ptr [boot_pd + ecx * 8], eax
    inc ecx
    cmp ecx, 2048
    jb 1b

enable_long_mode:
    mov eax, cr4
    or eax, (1 << 5)            /* PAE */
    mov cr4, eax
    mov eax, offset boot_pml4
    mov cr3, eax
    mov ecx, 0xc0000080         /* EFER.LME */
    rdmsr
    or eax, (1 << 8)
    wrmsr
    mov eax, cr0
    or eax, (1 << 31)           /* PG */
    mov cr0, eax
    .byte 0xea                  /* ljmp CODE64:lm_start (ea imm32 imm16) */
    .long lm_start
    .word CODE64

.code64
lm_start:
    mov ax, DATA
    mov ds, ax
    mov es, ax
    mov ss, ax
    mov fs, ax
    mov gs, ax
    cmp dword ptr [rip + AP_BOOT], 0
    jne ap_start
    lea rsp, [rip + bsp_stack_top]
    mov edi, esi                /* test */
    xor esi, esi                /* is_ap = false */
    mov edx, ebp                /* ram_bytes */
    call guest_main
    jmp halt_forever

ap_start:
    /* Each AP takes the next stack; any beyond MAX_APS parks. */
    mov eax, 1
    lock xadd dword ptr [rip + AP_COUNT], eax
    cmp eax, MAX_APS
    jae halt_forever
    inc eax
    imul eax, eax, AP_STACK_BYTES
    lea rsp, [rip + ap_stacks]
    add rsp, rax
    xor edi, edi                /* test: unused on an AP */
    mov esi, 1                  /* is_ap = true */
    xor edx, edx
    call guest_main

halt_forever:
    cli
    hlt
    jmp halt_forever

.balign 8
gdt:
    .quad 0
    .quad 0x00cf9a000000ffff    /* 0x08: 32-bit code */
    .quad 0x00cf92000000ffff    /* 0x10: data */
    .quad 0x00af9a000000ffff    /* 0x18: 64-bit code */
gdt_ptr:
    .word gdt_ptr - gdt - 1
    .long gdt

/* Interrupt and exception entry: 256 stubs of 16 bytes (the IDT points at
 * trap_stubs + 16 * vector), then a common path that saves every
 * general-purpose register into a `TrapFrame` (trap.rs, same order) and
 * calls trap_dispatch, which may change the frame (the #GP catcher moves
 * RIP). The CPU pushes an error code for vectors 8, 10-14, 17, 21, 29 and
 * 30 (SDM Vol. 3A §6.13); the other stubs push 0 so every frame has one
 * shape. Everything runs in ring 0 on the interrupted stack; 64-bit
 * delivery aligns RSP to 16, and the frame is 22 qwords + the return
 * address, so trap_dispatch is entered with the ABI's alignment. */
.section .text
.balign 16
.global trap_stubs
trap_stubs:
.set vec, 0
.rept 256
    .balign 16
    .if (vec == 8) || ((vec >= 10) && (vec <= 14)) || (vec == 17) || (vec == 21) || (vec == 29) || (vec == 30)
    .else
    .byte 0x6a, 0x00            /* push 0 (no error code) */
    .endif
    .byte 0x68                  /* push imm32: the vector */
    .long vec
    jmp trap_common
    .set vec, vec + 1
.endr

.balign 16
trap_common:
    push r15
    push r14
    push r13
    push r12
    push r11
    push r10
    push r9
    push r8
    push rbp
    push rdi
    push rsi
    push rdx
    push rcx
    push rbx
    push rax
    cld
    mov rdi, rsp
    call trap_dispatch
    pop rax
    pop rbx
    pop rcx
    pop rdx
    pop rsi
    pop rdi
    pop rbp
    pop r8
    pop r9
    pop r10
    pop r11
    pop r12
    pop r13
    pop r14
    pop r15
    add rsp, 16                 /* vector and error code */
    iretq

.section .bss.boot, "aw", @nobits
.balign 4096
boot_pml4:  .skip 4096
boot_pdpt:  .skip 4096
boot_pd:    .skip 4 * 4096
.balign 16
bsp_stack:  .skip BSP_STACK_BYTES
bsp_stack_top:
.global ap_stacks
ap_stacks:  .skip MAX_APS * AP_STACK_BYTES
.global ap_stacks_end
ap_stacks_end:
