/* System-call entry and the one way back to ring 3.
 *
 * SYSCALL leaves RSP as the user's; we swap to the kernel's GS (PerCpu, see
 * percpu.rs for the offsets), park the user RSP, and build the same
 * `TrapFrame` an interrupt would, directly in the running thread's
 * saved-context area (PerCpu.context_top points just past it). Vector 0x100
 * marks a system call. Then we switch to this CPU's kernel stack and call
 * `syscall_from_user`. The kernel never blocks on a kernel stack: a thread
 * that must wait is simply not current when we return, and `return_to_user`
 * restores whichever thread is current then (by SYSRET when that restores
 * what IRETQ would, see below). SAVE_GPRS and RESTORE_GPRS are trap.s's
 * macros: mod.rs assembles trap.s and this file as one block. */

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
    /* TF in R11: SYSRET would raise #DB before the first user instruction,
     * the full path's IRETQ after it; take the full path (same fault). */
    test r11d, 0x100
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
    SAVE_GPRS
    /* No CLD: SYSCALL cleared DF (SFMASK has bit 10, cpu.rs). No argument:
     * the Rust side finds the frame through the current thread. */
    mov rsp, gs:[PERCPU_KSTACK]
    call syscall_from_user      /* preserve_none: it never returns (kernel/mod.rs) */
    /* fall through */

/* The way back to ring 3 for whichever thread is current. SYSRET when it
 * restores exactly what IRETQ would, else IRETQ:
 *  - RCX == RIP and R11 == RFLAGS in the frame (SYSRET takes RIP from RCX
 *    and RFLAGS from R11). A frame saved by SYSCALL has them equal unless
 *    the kernel changed one since (VcpuRun's restart moves RIP back); an
 *    interrupted thread's RCX/R11 are its own values and must come back.
 *  - RIP in the lower half: SYSRET to a non-canonical RCX raises #GP in
 *    ring 0 with the user's RSP on Intel CPUs (CVE-2012-0217).
 *  - RFLAGS with no bit outside SYSRET_RFLAGS: SYSRET clears RF and VM
 *    and the reserved bits (R11 & 0x3C7FD7 | 2), and a TF that SYSRET
 *    restores raises #DB at once, before the first user instruction
 *    (IRETQ's only after it).
 * SYSRET loads the user CS/SS that STAR names (cpu.rs: 0x23/0x1b); a
 * thread's frame always holds those (set when it is made or configured,
 * saved by the CPU on each entry from ring 3), which IRETQ relies on too.
 * Interrupts are off on every way here (SFMASK, interrupt gates, the
 * kernel runs with IF clear); the CLI makes sure of it, because between
 * loading the user's RSP and SYSRET an interrupt would push its frame at
 * whatever address the user's RSP holds, in ring 0. NMI and #MC use IST
 * stacks (gdt.rs), so they never run on that RSP. */
.set F_RCX, 2 * 8
.set F_R11, 10 * 8
.set F_RIP, 17 * 8
.set F_RFLAGS, 19 * 8
.set SYSRET_RFLAGS, 0x3C7ED7        /* 0x3C7FD7 without TF (bit 8) */

.global return_to_user
return_to_user:
    mov rsp, gs:[PERCPU_CTX_TOP]
    sub rsp, FRAME_SIZE
    mov rcx, [rsp + F_RIP]
    cmp rcx, [rsp + F_RCX]
    jne 2f
    mov r11, [rsp + F_RFLAGS]
    cmp r11, [rsp + F_R11]
    jne 2f
    test r11, ~SYSRET_RFLAGS
    jnz 2f
    mov rax, rcx
    shr rax, 47
    jnz 2f
    cli
    RESTORE_GPRS
    swapgs
    mov rsp, [rsp + 5 * 8]      /* past vector, error code, rip, cs, rflags: the user's rsp */
    sysretq
2:
    RESTORE_GPRS
    add rsp, 16
    swapgs
    iretq

/* The IPC fast path's way back, to the peer it switched to: a thread that
 * entered the kernel by SYSCALL and has waited since (Receiving or
 * AwaitingReply: states only its own system call enters, and
 * ThreadConfigure refuses a thread in them), whose frame the fast path
 * wrote only the message registers of. So RCX == RIP and R11 == RFLAGS as
 * SYSCALL saved them, and RIP is the address after a SYSCALL that ran in
 * user space (lower half): of return_to_user's checks only RFLAGS is left
 * (a TF, RF, VM or reserved bit goes back by IRETQ there). */
.global return_to_user_after_syscall
return_to_user_after_syscall:
    mov rsp, gs:[PERCPU_CTX_TOP]
    sub rsp, FRAME_SIZE
    test qword ptr [rsp + F_RFLAGS], ~SYSRET_RFLAGS
    jnz return_to_user
    cli
    RESTORE_GPRS
    swapgs
    mov rsp, [rsp + 5 * 8]
    sysretq
