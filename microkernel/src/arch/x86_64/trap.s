/* Interrupt and exception entry: 256 stubs of 16 bytes each, then a common
 * path that saves every general-purpose register into a `TrapFrame` (see
 * trap.rs, same field order).
 *
 * The CPU pushes an error code for vectors 8, 10-14, 17, 21, 29 and 30
 * (SDM Vol. 3A §6.13); every other stub pushes a zero in its place so the
 * frame has one shape.
 *
 * From ring 3, the CPU switched to TSS.RSP0, which points just past the
 * running thread's saved-context area, so the frame lands in the thread
 * object itself (as in seL4); the common path then switches to this CPU's
 * kernel stack and calls `trap_from_user`, and leaves through
 * `return_to_user` (entry.s), which restores whichever thread is current by
 * then. From ring 0 (the idle loop, or a kernel bug), the frame is on the
 * current kernel stack and `trap_from_kernel` runs in place.
 *
 * NMI, #DF and #MC run on IST stacks (gdt.rs) and always take the in-place
 * path (`trap_on_ist`), swapping GS first if the user's GS base is live,
 * which they find out from the GS base itself (see trap_ist). */

.set FRAME_CS, 18 * 8

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
    .if (vec == 2) || (vec == 8) || (vec == 18)
    jmp trap_ist
    .else
    jmp trap_common
    .endif
    .set vec, vec + 1
.endr

.macro SAVE_GPRS
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
.endm

.macro RESTORE_GPRS
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
.endm

.balign 16
trap_common:
    SAVE_GPRS
    cld
    test qword ptr [rsp + FRAME_CS], 3
    jz 1f
    /* From ring 3: the frame is the thread's saved context. */
    swapgs
    mov rdi, rsp
    mov rsp, gs:[16]            /* PerCpu.kernel_stack_top */
    call trap_from_user
    jmp return_to_user
1:  /* From ring 0: handle in place. */
    mov rdi, rsp
    call trap_from_kernel
    RESTORE_GPRS
    add rsp, 16                 /* vector and error code */
    iretq

.balign 16
trap_ist:
    SAVE_GPRS
    cld
    /* Which GS base is live cannot be told from the interrupted CS: an NMI
     * or #MC can arrive in ring 0 with the user's GS still loaded (in
     * syscall_entry before its SWAPGS, in return_to_user after its SWAPGS).
     * So ask the CPU, as Linux's paranoid entry does: the kernel's GS base
     * (PerCpu) is an upper-half address, the user's is always 0 (nothing
     * lets a thread set it, and CR4.FSGSBASE stays off; anything that ever
     * lets it must refuse upper-half values). RBX remembers the swap across
     * the call (callee-saved) and is the handler's second argument. */
    mov ecx, 0xc0000101         /* IA32_GS_BASE */
    rdmsr
    xor ebx, ebx
    test edx, edx
    js 2f
    swapgs
    mov ebx, 1
2:  mov rdi, rsp
    mov rsi, rbx
    call trap_on_ist
    test ebx, ebx
    jz 3f
    swapgs
3:  RESTORE_GPRS
    add rsp, 16
    iretq
