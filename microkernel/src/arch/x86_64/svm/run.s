/* svm_vcpu_run(vmcb_pa: rdi, gprs: rsi, host_area_pa: rdx)
 *
 * Enters the guest described by the VMCB at physical `vmcb_pa` with its
 * general-purpose registers from `gprs` (RAX, RCX, RDX, RBX, RSP, RBP, RSI,
 * RDI, R8..R15; RAX and RSP live in the VMCB and are skipped), and returns
 * after the #VMEXIT with the guest's registers written back to `gprs`.
 * Host state VMRUN does not keep (FS/GS bases, TR, LDTR, the SYSCALL MSRs)
 * is saved to `host_area_pa` with VMSAVE before and reloaded after (APM
 * Vol. 2 §15.5.2). The caller has done CLGI and enabled interrupts, so a
 * physical interrupt in the guest causes an INTR #VMEXIT. */

.section .text
.global svm_vcpu_run
svm_vcpu_run:
    push rbp
    push rbx
    push r12
    push r13
    push r14
    push r15
    push rdx                    /* [rsp+16]: host area pa */
    push rsi                    /* [rsp+8]: gprs */
    push rdi                    /* [rsp]: vmcb pa */
    mov rax, rdx
    vmsave rax
    mov rax, rsi
    mov rcx, [rax + 8 * 1]
    mov rdx, [rax + 8 * 2]
    mov rbx, [rax + 8 * 3]
    mov rbp, [rax + 8 * 5]
    mov rsi, [rax + 8 * 6]
    mov rdi, [rax + 8 * 7]
    mov r8,  [rax + 8 * 8]
    mov r9,  [rax + 8 * 9]
    mov r10, [rax + 8 * 10]
    mov r11, [rax + 8 * 11]
    mov r12, [rax + 8 * 12]
    mov r13, [rax + 8 * 13]
    mov r14, [rax + 8 * 14]
    mov r15, [rax + 8 * 15]
    mov rax, [rsp]
    vmload rax
    vmrun rax
.global svm_vcpu_run_resume
svm_vcpu_run_resume:                /* where a #VMEXIT resumes the host */
    vmsave rax
    mov rax, [rsp + 8]
    mov [rax + 8 * 1], rcx
    mov [rax + 8 * 2], rdx
    mov [rax + 8 * 3], rbx
    mov [rax + 8 * 5], rbp
    mov [rax + 8 * 6], rsi
    mov [rax + 8 * 7], rdi
    mov [rax + 8 * 8], r8
    mov [rax + 8 * 9], r9
    mov [rax + 8 * 10], r10
    mov [rax + 8 * 11], r11
    mov [rax + 8 * 12], r12
    mov [rax + 8 * 13], r13
    mov [rax + 8 * 14], r14
    mov [rax + 8 * 15], r15
    mov rax, [rsp + 16]
    vmload rax
    add rsp, 24
    pop r15
    pop r14
    pop r13
    pop r12
    pop rbx
    pop rbp
    ret
