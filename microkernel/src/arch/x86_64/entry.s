/* System-call entry and the one way back to ring 3.
 *
 * SYSCALL leaves RSP as the user's; we swap to the kernel's GS (PerCpu, see
 * percpu.rs for the offsets), park the user RSP, and build the same
 * `TrapFrame` an interrupt would, directly in the running thread's
 * saved-context area (PerCpu.context_top points just past it). Vector 0x100
 * marks a system call. Then we switch to this CPU's kernel stack and call
 * `syscall_from_user`. The kernel never blocks on a kernel stack: a thread
 * that must wait is simply not current when we return, and `return_to_user`
 * restores whichever thread is current then. */

.set PERCPU_USER_RSP, 8
.set PERCPU_KSTACK, 16
.set PERCPU_CTX_TOP, 24
.set PERCPU_NEED_RESCHED, 44
.set PERCPU_ANY_PENDING, 80
.set FRAME_SIZE, 22 * 8
.set SYS_NOP, 37

.section .text
.balign 16
.global syscall_entry
syscall_entry:
    swapgs
    /* The null system call (Sys::Nop) returns at once: nothing saved, no
     * lock, SYSRET. It takes the full path when this CPU has kernel work
     * that a kernel entry would do (a reschedule asked for, interrupts to
     * deliver) or the fast paths are off (alcove.fastpath=off). Interrupts
     * are masked here (SFMASK), so one that arrives meanwhile is taken right
     * after SYSRET, as it would be after the full path's IRETQ. */
    cmp rax, SYS_NOP
    jne 1f
    cmp byte ptr gs:[PERCPU_NEED_RESCHED], 0
    jne 1f
    cmp byte ptr gs:[PERCPU_ANY_PENDING], 0
    jne 1f
    cmp byte ptr [rip + FASTPATH_OFF], 0
    jne 1f
    /* SYSRET to a non-canonical RIP faults in ring 0 on Intel CPUs with the
     * user's RSP (CVE-2012-0217): only a lower-half RCX returns this way
     * (Nop ignores its arguments, so RDI may be used). */
    mov rdi, rcx
    shr rdi, 47
    jnz 1f
    xor eax, eax
    xor esi, esi
    xor edx, edx
    swapgs
    sysretq
1:
    mov gs:[PERCPU_USER_RSP], rsp
    mov rsp, gs:[PERCPU_CTX_TOP]
    push 0x1b                   /* ss: user data */
    push qword ptr gs:[PERCPU_USER_RSP]
    push r11                    /* rflags */
    push 0x23                   /* cs: user code */
    push rcx                    /* rip */
    push 0                      /* error code */
    push 0x100                  /* "vector": system call */
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
    /* No CLD: SYSCALL cleared DF (SFMASK has bit 10, cpu.rs). No argument:
     * the Rust side finds the frame through the current thread. */
    mov rsp, gs:[PERCPU_KSTACK]
    call syscall_from_user
    /* fall through */

.global return_to_user
return_to_user:
    mov rsp, gs:[PERCPU_CTX_TOP]
    sub rsp, FRAME_SIZE
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
    add rsp, 16
    swapgs
    iretq
