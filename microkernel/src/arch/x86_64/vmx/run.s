/* vmx_vcpu_run(gprs: rdi, launched: rsi) -> rax: 0 after a VM exit, 1 if
 * VMLAUNCH/VMRESUME failed (the VM-instruction error field says why).
 *
 * Loads the guest's general-purpose registers from `gprs` (RAX, RCX, RDX,
 * RBX, RSP, RBP, RSI, RDI, R8..R15; RSP lives in the VMCS and is skipped),
 * enters the guest with the current VMCS, and on the VM exit (HOST_RIP =
 * vmx_exit, HOST_RSP = our stack) writes them back. SDM Vol. 3C §28-§29. */

.section .text
.global vmx_vcpu_run
vmx_vcpu_run:
    push rbp
    push rbx
    push r12
    push r13
    push r14
    push r15
    push rsi                    /* [rsp+8]: launched */
    push rdi                    /* [rsp]: gprs */
    mov rax, 0x6c14             /* HOST_RSP */
    vmwrite rax, rsp
    lea rdx, [rip + vmx_exit]
    mov rax, 0x6c16             /* HOST_RIP */
    vmwrite rax, rdx
    mov rax, rdi
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
    cmp qword ptr [rsp + 8], 0
    mov rax, [rax]
    jne 1f
    vmlaunch
    jmp 2f
1:  vmresume
2:  /* VM entry failed: nothing of the guest ran; restore and report. */
    add rsp, 16
    pop r15
    pop r14
    pop r13
    pop r12
    pop rbx
    pop rbp
    mov eax, 1
    ret

.global vmx_exit
vmx_exit:
    xchg rax, [rsp]             /* rax = gprs, [rsp] = guest RAX */
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
    pop qword ptr [rax]
    add rsp, 8
    pop r15
    pop r14
    pop r13
    pop r12
    pop rbx
    pop rbp
    xor eax, eax
    ret
