/* A BIOS boot sector that starts the test guest on plain QEMU the way the
 * Alcove VMM does: it loads the flat image (sectors 1..) to 0x8000, masks
 * the 8259s the BIOS left running (the PIT would raise vector 8), and
 * enters 0000:8000 in real mode with interrupts off, SP = 0x7000,
 * BX = TEST and ECX = RAM_BYTES (both given with --defsym). GNU as:
 *   as --32 --defsym TEST=4 --defsym SECTORS=n --defsym RAM_BYTES=m
 *   ld -m elf_i386 -Ttext=0x7c00 --oformat binary */
.intel_syntax noprefix
.code16
.global _start
_start:
    cli
    cld
    xor ax, ax
    mov ds, ax
    mov es, ax
    mov ss, ax
    mov sp, 0x7c00
    mov [drive], dl
    mov al, 0xff
    out 0xa1, al
    out 0x21, al

    mov cx, SECTORS             /* sectors left, 64 (32 KiB) per read */
1:  mov ax, cx
    cmp ax, 64
    jbe 2f
    mov ax, 64
2:  mov [dap_count], ax
    push cx
    push ax
    mov si, offset dap
    mov dl, [drive]
    mov ah, 0x42                /* INT 13h extended read */
    int 0x13
    jc fail
    pop ax
    pop cx
    sub cx, ax
    mov bx, ax
    shl bx, 5                   /* sectors * 512 / 16 */
    add [dap_segment], bx
    add [dap_lba], ax
    test cx, cx
    jnz 1b

    cli
    mov bx, TEST
    mov ecx, RAM_BYTES
    mov sp, 0x7000
    .byte 0xea                  /* ljmp 0000:8000 */
    .word 0x8000, 0

fail:
    mov al, 'E'
    out 0xe9, al
3:  hlt
    jmp 3b

.balign 4
dap:         .byte 0x10, 0
dap_count:   .word 0
dap_offset:  .word 0
dap_segment: .word 0x0800
dap_lba:     .quad 1
drive:       .byte 0

.org 510
.word 0xaa55
