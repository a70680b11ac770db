/* Alcove boot path: Multiboot2 header, 32-bit entry, long mode, higher half.
 *
 * GRUB (BIOS or UEFI) enters `_start32` in 32-bit protected mode with paging
 * off, EAX = 0x36d76289 and EBX = the physical address of the Multiboot2
 * information (Multiboot2 spec 1.0 §3.3). We build boot page tables that map
 * the first 4 GiB three ways, each with 2 MiB pages:
 *   identity           (only until we run in the higher half)
 *   0xffff800000000000  the kernel's direct map of physical memory
 *   0xffffffff80000000  the kernel image (first 2 GiB)
 * then enable PAE, long mode and paging, and jump to `_start64` high up. */

.set MB2_MAGIC,   0xe85250d6
.set MB2_ARCH,    0
.set KERNEL_VMA,  0xffffffff80000000

.section .multiboot2, "a"
.balign 8
mb2_header:
    .long MB2_MAGIC
    .long MB2_ARCH
    .long mb2_header_end - mb2_header
    .long 0x100000000 - (MB2_MAGIC + MB2_ARCH + (mb2_header_end - mb2_header))
    /* end tag */
    .balign 8
    .short 0
    .short 0
    .long 8
mb2_header_end:

.section .boot.text, "ax"
.code32
.global _start32
_start32:
    cli
    cld
    mov esp, offset boot_stack_top
    mov edi, eax                /* Multiboot2 magic, passed on to kmain */
    mov esi, ebx                /* Multiboot2 info (physical) */

    /* Long mode is required: CPUID 0x80000001 EDX bit 29. */
    mov eax, 0x80000000
    cpuid
    cmp eax, 0x80000001
    jb no_long_mode
    mov eax, 0x80000001
    cpuid
    test edx, (1 << 29)
    jz no_long_mode
    mov ebp, edx                /* keep: bit 20 = NX */

    /* PD entries: 2048 x 2 MiB = first 4 GiB, present|writable|huge. */
    mov ebx, offset boot_pd
    xor ecx, ecx
1:  mov eax, ecx
    shl eax, 21
    or eax, 0x83
    mov [ebx + ecx * 8], eax
    mov eax, ecx
    shr eax, 11                 /* high dword: (ecx * 2 MiB) >> 32 */
    mov [ebx + ecx * 8 + 4], eax
    inc ecx
    cmp ecx, 2048
    jne 1b

    /* PDPT for the identity and direct maps: four PDs. */
    mov eax, offset boot_pd
    or eax, 3
    mov [boot_pdpt_low], eax
    add eax, 4096
    mov [boot_pdpt_low + 8], eax
    add eax, 4096
    mov [boot_pdpt_low + 16], eax
    add eax, 4096
    mov [boot_pdpt_low + 24], eax

    /* PDPT for the kernel image: entries 510 and 511 -> first 2 GiB. */
    mov eax, offset boot_pd
    or eax, 3
    mov [boot_pdpt_high + 510 * 8], eax
    add eax, 4096
    mov [boot_pdpt_high + 511 * 8], eax

    /* PML4: 0 (identity), 256 (direct map), 511 (kernel image). */
    mov eax, offset boot_pdpt_low
    or eax, 3
    mov [boot_pml4], eax
    mov [boot_pml4 + 256 * 8], eax
    mov eax, offset boot_pdpt_high
    or eax, 3
    mov [boot_pml4 + 511 * 8], eax

    mov eax, offset boot_pml4
    mov cr3, eax

    mov eax, cr4
    or eax, (1 << 5)            /* PAE */
    mov cr4, eax

    mov ecx, 0xc0000080         /* EFER */
    rdmsr
    or eax, (1 << 8)            /* LME */
    test ebp, (1 << 20)
    jz 2f
    or eax, (1 << 11)           /* NXE, when the CPU has NX */
2:  wrmsr

    mov eax, cr0
    or eax, (1 << 31) | (1 << 16) | 1   /* PG | WP | PE */
    mov cr0, eax

    lgdt [boot_gdt_ptr]
    /* Far jump through the stack: push CS, then EIP (push imm32), retf. */
    push 0x08
    .byte 0x68
    .long long_mode_low
    retf

no_long_mode:
    mov esi, offset no_lm_msg
3:  lodsb
    test al, al
    jz 5f
    mov dx, 0x3fd
4:  in al, dx
    test al, 0x20
    jz 4b
    mov al, [esi - 1]
    mov dx, 0x3f8
    out dx, al
    jmp 3b
5:  hlt
    jmp 5b

.code64
long_mode_low:
    mov ax, 0x10
    mov ds, ax
    mov es, ax
    mov ss, ax
    xor ax, ax
    mov fs, ax
    mov gs, ax
    movabs rax, offset _start64
    jmp rax

.section .boot.data, "a"
.balign 16
boot_gdt:
    .quad 0
    .quad 0x00af9a000000ffff    /* 0x08: 64-bit code */
    .quad 0x00cf92000000ffff    /* 0x10: data */
boot_gdt_ptr:
    .short boot_gdt_ptr - boot_gdt - 1
    .long boot_gdt
no_lm_msg:
    .asciz "Alcove: this CPU has no long mode (x86-64); halting.\r\n"

.section .boot.bss, "aw", @nobits
.balign 4096
.global boot_pml4
boot_pml4:      .skip 4096
boot_pdpt_low:  .skip 4096
boot_pdpt_high: .skip 4096
boot_pd:        .skip 4096 * 4
boot_stack:     .skip 4096
boot_stack_top:

/* 64-bit, higher half. */
.section .text
.global _start64
_start64:
    lea rsp, [rip + kernel_stack_top]
    xor ebp, ebp
    /* rdi = magic, rsi = info (physical): the arguments of kmain. */
    call kmain
6:  cli
    hlt
    jmp 6b

.section .bss
.balign 16
.global kernel_stack_bottom
kernel_stack_bottom:
    .skip 64 * 1024
.global kernel_stack_top
kernel_stack_top:
