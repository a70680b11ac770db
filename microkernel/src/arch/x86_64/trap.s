/* Interrupt and exception entry: 256 stubs of 16 bytes each, then one common
 * path that saves every general-purpose register into a `TrapFrame` (see
 * trap.rs, same field order) and calls `trap_dispatch(&mut TrapFrame)`.
 *
 * The CPU pushes an error code for vectors 8, 10-14, 17, 21, 29 and 30
 * (SDM Vol. 3A §6.13); every other stub pushes a zero in its place so the
 * frame has one shape. */

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
    mov rdi, rsp
    cld
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
