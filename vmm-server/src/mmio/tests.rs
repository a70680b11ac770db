//! Host tests of the MMIO instruction emulator: hand-assembled instructions
//! in every mode against a Vec-backed guest RAM and a recording device, and
//! a fuzz loop over random bytes and registers that must never panic.
extern crate std;

use std::vec;
use std::vec::Vec;

use abi::{Segment, VcpuRun};

use super::*;

/// The device page (all tests that do not say otherwise).
const DEV: u64 = 0xd000_0000;
/// Guest RAM: linear = physical, [RAM, RAM + RAM_BYTES).
const RAM: u64 = 0x10_0000;
const RAM_BYTES: usize = 0x4000;

struct Ram {
    bytes: Vec<u8>,
    /// Answer `translate` (identity) instead of "unknown".
    translates: bool,
    /// Pages (linear) the guest's paging refuses, with the error code.
    refused: Vec<(u64, u32)>,
}

impl Ram {
    fn new() -> Ram {
        Ram { bytes: vec![0; RAM_BYTES], translates: false, refused: Vec::new() }
    }

    /// Linear = physical, every page allowed but the `refused` ones.
    fn allowed(&self, gva: u64, len: usize) -> Result<(), MemFault> {
        let last = gva.wrapping_add(len.max(1) as u64 - 1);
        for &(page, error_code) in &self.refused {
            if gva >> 12 == page >> 12 {
                return Err(MemFault { gva, kind: FaultKind::Page { error_code } });
            }
            if last >> 12 == page >> 12 {
                return Err(MemFault { gva: page, kind: FaultKind::Page { error_code } });
            }
        }
        Ok(())
    }

    fn range(&self, gva: u64, len: usize) -> Result<core::ops::Range<usize>, MemFault> {
        self.allowed(gva, len)?;
        let start = gva.checked_sub(RAM).filter(|&o| o as usize + len <= self.bytes.len());
        start.map(|o| o as usize..o as usize + len).ok_or(MemFault { gva, kind: FaultKind::NotRam { gpa: gva } })
    }
}

impl GuestMemory for Ram {
    fn read(&mut self, gva: u64, buf: &mut [u8]) -> Result<(), MemFault> {
        let r = self.range(gva, buf.len())?;
        buf.copy_from_slice(&self.bytes[r]);
        Ok(())
    }
    fn write(&mut self, gva: u64, data: &[u8]) -> Result<(), MemFault> {
        let r = self.range(gva, data.len())?;
        self.bytes[r].copy_from_slice(data);
        Ok(())
    }
    fn fetch(&mut self, gva: u64, buf: &mut [u8]) -> Result<(), MemFault> {
        self.read(gva, buf)
    }
    fn check(&mut self, gva: u64, _kind: AccessKind) -> Result<u64, MemFault> {
        self.allowed(gva, 1).map(|()| gva)
    }
    fn translate(&mut self, gva: u64) -> Option<u64> {
        self.translates.then_some(gva)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    R,
    W,
}

/// A RAM-like page at `base` that records every access; all ones elsewhere.
struct Bus {
    base: u64,
    page: [u8; 4096],
    log: Vec<(Op, u64, u8, u64)>,
}

impl Bus {
    fn new() -> Bus {
        Bus::at(DEV)
    }
    fn at(base: u64) -> Bus {
        Bus { base, page: [0; 4096], log: Vec::new() }
    }
    fn poke(&mut self, gpa: u64, size: u8, value: u64) {
        let o = (gpa - self.base) as usize;
        self.page[o..o + size as usize].copy_from_slice(&value.to_le_bytes()[..size as usize]);
    }
    fn peek(&self, gpa: u64, size: u8) -> u64 {
        let o = (gpa - self.base) as usize;
        let mut b = [0u8; 8];
        b[..size as usize].copy_from_slice(&self.page[o..o + size as usize]);
        u64::from_le_bytes(b)
    }
}

impl MmioBus for Bus {
    fn read(&mut self, gpa: u64, size: u8) -> u64 {
        assert!(matches!(size, 1 | 2 | 4 | 8), "size {size}");
        let mut b = [0xffu8; 8];
        for (i, byte) in b.iter_mut().enumerate().take(size as usize) {
            let o = gpa.wrapping_add(i as u64).wrapping_sub(self.base);
            if o < 4096 {
                *byte = self.page[o as usize];
            }
        }
        let v = u64::from_le_bytes(b) & mask(size);
        self.log.push((Op::R, gpa, size, v));
        v
    }
    fn write(&mut self, gpa: u64, size: u8, value: u64) {
        assert!(matches!(size, 1 | 2 | 4 | 8), "size {size}");
        assert_eq!(value & !mask(size), 0, "value {value:#x} wider than {size} bytes");
        for (i, byte) in value.to_le_bytes().iter().enumerate().take(size as usize) {
            let o = gpa.wrapping_add(i as u64).wrapping_sub(self.base);
            if o < 4096 {
                self.page[o as usize] = *byte;
            }
        }
        self.log.push((Op::W, gpa, size, value));
    }
}

fn blank() -> VcpuRun {
    VcpuRun {
        rip: 0x1000,
        rflags: 2,
        segments: [Segment { selector: 0, attrib: 0x93, limit: 0xffff, base: 0 }; 8],
        ..VcpuRun::ZERO
    }
}

fn vcpu(mode: CpuMode) -> VcpuRun {
    let mut run = blank();
    let (cr0, efer, cs) = match mode {
        CpuMode::Real16 => (0x10, 0, 0x9b),
        CpuMode::Protected16 => (0x11, 0, 0x9b),
        CpuMode::Protected32 => (0x11, 0, 0x9b | 1 << 10),
        CpuMode::Long64 => (0x8000_0011, 0x500, 0x9b | 1 << 9),
    };
    run.cr0 = cr0;
    run.efer = efer;
    run.segments[1].attrib = cs;
    run
}

/// Emulates `bytes` in `run` for a fault at `gpa`.
fn go(bytes: &[u8], run: &mut VcpuRun, gpa: u64, ram: &mut Ram, bus: &mut Bus) -> Result<Done, EmulateError> {
    emulate(bytes, run, gpa, ram, bus)
}

/// Runs `bytes` in 64-bit mode with `regs` (index, value) set, faulting at
/// `gpa`; the device page is preloaded with `dev` (offset, size, value).
fn run64(bytes: &[u8], regs: &[(usize, u64)], gpa: u64, dev: &[(u64, u8, u64)]) -> (VcpuRun, Bus, Done) {
    let mut run = vcpu(CpuMode::Long64);
    for &(r, v) in regs {
        run.gprs[r] = v;
    }
    let mut bus = Bus::new();
    for &(off, size, v) in dev {
        bus.poke(DEV + off, size, v);
    }
    let rip = run.rip;
    let done = go(bytes, &mut run, gpa, &mut Ram::new(), &mut bus).unwrap_or_else(|e| panic!("{e}"));
    if done.finished {
        assert_eq!(run.rip, rip + bytes.len() as u64, "rip after {bytes:02x?}");
    }
    (run, bus, done)
}

const RCX: usize = super::RCX;
const RDX: usize = 2;
const RBX: usize = 3;

#[test]
fn cpu_modes() {
    assert_eq!(cpu_mode(&vcpu(CpuMode::Real16)), CpuMode::Real16);
    assert_eq!(cpu_mode(&vcpu(CpuMode::Protected16)), CpuMode::Protected16);
    assert_eq!(cpu_mode(&vcpu(CpuMode::Protected32)), CpuMode::Protected32);
    assert_eq!(cpu_mode(&vcpu(CpuMode::Long64)), CpuMode::Long64);
    // Compatibility mode: LMA without CS.L decodes as protected mode.
    let mut compat = vcpu(CpuMode::Long64);
    compat.segments[1].attrib = 0x9b | 1 << 10;
    assert_eq!(cpu_mode(&compat), CpuMode::Protected32);
    // Virtual-8086 mode.
    let mut v86 = vcpu(CpuMode::Protected32);
    v86.rflags |= 1 << 17;
    assert_eq!(cpu_mode(&v86), CpuMode::Real16);
}

#[test]
fn mov_store_register() {
    // mov [rax], ecx
    let (run, bus, done) = run64(&[0x89, 0x08], &[(RAX, DEV), (RCX, 0xdead_beef_1122_3344)], DEV, &[]);
    assert_eq!(bus.log, [(Op::W, DEV, 4, 0x1122_3344)]);
    assert_eq!(done, Done { mnemonic: Mnemonic::Mov, access: Access::Write, gpa: DEV, size: 4, count: 1, finished: true });
    assert_eq!(run.gprs[RCX], 0xdead_beef_1122_3344);
    // mov [rax], cl / cx / rcx
    let regs = [(RAX, DEV + 0x10), (RCX, 0x8877_6655_4433_2211)];
    assert_eq!(run64(&[0x88, 0x08], &regs, DEV + 0x10, &[]).1.log, [(Op::W, DEV + 0x10, 1, 0x11)]);
    assert_eq!(run64(&[0x66, 0x89, 0x08], &regs, DEV + 0x10, &[]).1.log, [(Op::W, DEV + 0x10, 2, 0x2211)]);
    assert_eq!(run64(&[0x48, 0x89, 0x08], &regs, DEV + 0x10, &[]).1.log, [(Op::W, DEV + 0x10, 8, 0x8877_6655_4433_2211)]);
    // mov [rax], ch (no REX: the high byte)
    assert_eq!(run64(&[0x88, 0x28], &regs, DEV + 0x10, &[]).1.log, [(Op::W, DEV + 0x10, 1, 0x22)]);
    // mov [rax], bpl (REX: the low byte of RBP)
    let bp = [(RAX, DEV), (5, 0x1234)];
    assert_eq!(run64(&[0x40, 0x88, 0x28], &bp, DEV, &[]).1.log, [(Op::W, DEV, 1, 0x34)]);
    // mov [r9+r10*4+0x10], r11d
    let regs = [(9, DEV), (10, 2), (11, 0xcafe)];
    assert_eq!(run64(&[0x47, 0x89, 0x5c, 0x91, 0x10], &regs, DEV + 0x18, &[]).1.log, [(Op::W, DEV + 0x18, 4, 0xcafe)]);
}

#[test]
fn mov_load_register() {
    // mov eax, [rbx+8]: a 32-bit load zero-extends into RAX
    let (run, bus, done) =
        run64(&[0x8b, 0x43, 0x08], &[(RAX, u64::MAX), (RBX, DEV)], DEV + 8, &[(8, 4, 0x89ab_cdef)]);
    assert_eq!(run.gprs[RAX], 0x89ab_cdef);
    assert_eq!(bus.log, [(Op::R, DEV + 8, 4, 0x89ab_cdef)]);
    assert_eq!(done.access, Access::Read);
    let dev = [(0, 8, 0x0102_0304_0506_0708)];
    let regs = [(RAX, 0xffff_ffff_ffff_ffff), (RBX, DEV)];
    // mov al, [rbx]; mov ah, [rbx]; mov ax, [rbx]; mov rax, [rbx]
    assert_eq!(run64(&[0x8a, 0x03], &regs, DEV, &dev).0.gprs[RAX], 0xffff_ffff_ffff_ff08);
    assert_eq!(run64(&[0x8a, 0x23], &regs, DEV, &dev).0.gprs[RAX], 0xffff_ffff_ffff_08ff);
    assert_eq!(run64(&[0x66, 0x8b, 0x03], &regs, DEV, &dev).0.gprs[RAX], 0xffff_ffff_ffff_0708);
    assert_eq!(run64(&[0x48, 0x8b, 0x03], &regs, DEV, &dev).0.gprs[RAX], 0x0102_0304_0506_0708);
    // mov sil, [rbx] (REX: SIL, not DH)
    let (run, _, _) = run64(&[0x40, 0x8a, 0x33], &[(RBX, DEV), (6, 0xaaaa), (RDX, 0xbbbb)], DEV, &dev);
    assert_eq!((run.gprs[6], run.gprs[RDX]), (0xaa08, 0xbbbb));
    // mov r15, [rbx]
    assert_eq!(run64(&[0x4c, 0x8b, 0x3b], &regs, DEV, &dev).0.gprs[15], 0x0102_0304_0506_0708);
}

#[test]
fn mov_immediate_and_moffs() {
    // mov dword [rdx], 0x12345678
    let (_, bus, _) = run64(&[0xc7, 0x02, 0x78, 0x56, 0x34, 0x12], &[(RDX, DEV)], DEV, &[]);
    assert_eq!(bus.log, [(Op::W, DEV, 4, 0x1234_5678)]);
    // mov byte [rax], 0x7e
    assert_eq!(run64(&[0xc6, 0x00, 0x7e], &[(RAX, DEV)], DEV, &[]).1.log, [(Op::W, DEV, 1, 0x7e)]);
    // mov word [rax], 0xbeef
    assert_eq!(run64(&[0x66, 0xc7, 0x00, 0xef, 0xbe], &[(RAX, DEV)], DEV, &[]).1.log, [(Op::W, DEV, 2, 0xbeef)]);
    // mov qword [rax], -1 (imm32 sign-extended)
    let (_, bus, _) = run64(&[0x48, 0xc7, 0x00, 0xff, 0xff, 0xff, 0xff], &[(RAX, DEV)], DEV, &[]);
    assert_eq!(bus.log, [(Op::W, DEV, 8, u64::MAX)]);
    // mov [moffs64], eax; mov eax, [moffs64]
    let mut b = vec![0xa3];
    b.extend_from_slice(&(DEV + 4).to_le_bytes());
    assert_eq!(run64(&b, &[(RAX, 0x55)], DEV + 4, &[]).1.log, [(Op::W, DEV + 4, 4, 0x55)]);
    b[0] = 0xa1;
    assert_eq!(run64(&b, &[], DEV + 4, &[(4, 4, 0x66)]).0.gprs[RAX], 0x66);
    // mov eax, [rip+0x100]: relative to the next instruction
    let rip = 0x1000u64;
    let target = rip + 6 + 0x100;
    let mut run = vcpu(CpuMode::Long64);
    let mut bus = Bus::at(target & !0xfff);
    bus.poke(target, 4, 0x77);
    go(&[0x8b, 0x05, 0x00, 0x01, 0x00, 0x00], &mut run, target, &mut Ram::new(), &mut bus).unwrap();
    assert_eq!((run.gprs[RAX], run.rip), (0x77, rip + 6));
}

#[test]
fn movzx_movsx_movsxd() {
    let dev = [(0, 4, 0x8000_80f0)];
    let regs = [(RAX, u64::MAX), (RBX, DEV), (7, DEV)];
    // movzx eax, byte [rdi]
    assert_eq!(run64(&[0x0f, 0xb6, 0x07], &regs, DEV, &dev).0.gprs[RAX], 0xf0);
    // movzx eax, word [rbx]
    assert_eq!(run64(&[0x0f, 0xb7, 0x03], &regs, DEV, &dev).0.gprs[RAX], 0x80f0);
    // movzx ax, byte [rbx]: a 16-bit destination keeps the rest
    assert_eq!(run64(&[0x66, 0x0f, 0xb6, 0x03], &regs, DEV, &dev).0.gprs[RAX], 0xffff_ffff_ffff_00f0);
    // movsx eax, byte [rbx]
    assert_eq!(run64(&[0x0f, 0xbe, 0x03], &regs, DEV, &dev).0.gprs[RAX], 0xffff_fff0);
    // movsx rax, word [rbx]
    assert_eq!(run64(&[0x48, 0x0f, 0xbf, 0x03], &regs, DEV, &dev).0.gprs[RAX], 0xffff_ffff_ffff_80f0);
    // movsxd rax, dword [rbx]
    assert_eq!(run64(&[0x48, 0x63, 0x03], &regs, DEV, &dev).0.gprs[RAX], 0xffff_ffff_8000_80f0);
    assert_eq!(run64(&[0x48, 0x63, 0x03], &regs, DEV, &[(0, 4, 0x7fff_ffff)]).0.gprs[RAX], 0x7fff_ffff);
}

fn flags(run: &VcpuRun) -> u64 {
    run.rflags & STATUS_FLAGS
}

#[test]
fn logic_with_memory_destination() {
    // or dword [rax], 0x10, with CF and OF set beforehand (cleared by or)
    let mut run = vcpu(CpuMode::Long64);
    run.gprs[RAX] = DEV;
    run.rflags |= CF | OF | AF;
    let mut bus = Bus::new();
    bus.poke(DEV, 4, 0x8000_0001);
    let done = go(&[0x83, 0x08, 0x10], &mut run, DEV, &mut Ram::new(), &mut bus).unwrap();
    assert_eq!(bus.log, [(Op::R, DEV, 4, 0x8000_0001), (Op::W, DEV, 4, 0x8000_0011)]);
    assert_eq!(flags(&run), SF | PF); // 0x11: two bits, even parity
    assert_eq!(done.access, Access::ReadWrite);
    // lock or dword [rax], 1
    let (run, bus, _) = run64(&[0xf0, 0x83, 0x08, 0x01], &[(RAX, DEV)], DEV, &[(0, 4, 2)]);
    assert_eq!((bus.peek(DEV, 4), flags(&run)), (3, PF));
    // and [rax], ecx -> 0: ZF, PF
    let (run, bus, _) = run64(&[0x21, 0x08], &[(RAX, DEV), (RCX, 0xf0)], DEV, &[(0, 4, 0x0f)]);
    assert_eq!((bus.peek(DEV, 4), flags(&run)), (0, ZF | PF));
    // xor [rax], cl
    let (run, bus, _) = run64(&[0x30, 0x08], &[(RAX, DEV), (RCX, 0x81)], DEV, &[(0, 1, 0x01)]);
    assert_eq!((bus.peek(DEV, 1), flags(&run)), (0x80, SF));
    // and qword [rax], -2 (imm8 sign-extended to 64)
    let (_, bus, _) = run64(&[0x48, 0x83, 0x20, 0xfe], &[(RAX, DEV)], DEV, &[(0, 8, u64::MAX)]);
    assert_eq!(bus.log[1], (Op::W, DEV, 8, u64::MAX - 1));
    // or word [rax], 0x8000
    let (run, bus, _) = run64(&[0x66, 0x81, 0x08, 0x00, 0x80], &[(RAX, DEV)], DEV, &[(0, 2, 1)]);
    assert_eq!((bus.log[1], flags(&run)), ((Op::W, DEV, 2, 0x8001), SF));
}

#[test]
fn arithmetic_flags() {
    // add [rax], ecx: 0xffffffff + 1 = 0: CF ZF PF AF
    let (run, bus, _) = run64(&[0x01, 0x08], &[(RAX, DEV), (RCX, 1)], DEV, &[(0, 4, 0xffff_ffff)]);
    assert_eq!((bus.peek(DEV, 4), flags(&run)), (0, CF | ZF | PF | AF));
    // add byte [rax], 1: 0x7f + 1 = 0x80: OF SF AF
    let (run, bus, _) = run64(&[0x80, 0x00, 0x01], &[(RAX, DEV)], DEV, &[(0, 1, 0x7f)]);
    assert_eq!((bus.peek(DEV, 1), flags(&run)), (0x80, OF | SF | AF));
    // sub [rax], ecx: 0x80000000 - 1 = 0x7fffffff: OF AF PF
    let (run, bus, _) = run64(&[0x29, 0x08], &[(RAX, DEV), (RCX, 1)], DEV, &[(0, 4, 0x8000_0000)]);
    assert_eq!((bus.peek(DEV, 4), flags(&run)), (0x7fff_ffff, OF | AF | PF));
    // cmp dword [rax], 5 with 3: borrow, negative; memory unchanged
    let (run, bus, done) = run64(&[0x83, 0x38, 0x05], &[(RAX, DEV)], DEV, &[(0, 4, 3)]);
    assert_eq!(bus.log, [(Op::R, DEV, 4, 3)]);
    assert_eq!(flags(&run), CF | SF | AF); // 0xfffffffe: 7 ones in the low byte
    assert_eq!(done.access, Access::Read);
    // cmp ecx, [rax] (memory source): 5 - 5
    let (run, _, _) = run64(&[0x3b, 0x08], &[(RAX, DEV), (RCX, 5)], DEV, &[(0, 4, 5)]);
    assert_eq!((flags(&run), run.gprs[RCX]), (ZF | PF, 5));
    // add ecx, [rax] (memory source): the register changes, not the device
    let (run, bus, _) = run64(&[0x03, 0x08], &[(RAX, DEV), (RCX, 0xffff_ffff_0000_0002)], DEV, &[(0, 4, 3)]);
    assert_eq!((run.gprs[RCX], bus.log.len()), (5, 1));
    // or cl, [rax]
    let (run, _, _) = run64(&[0x0a, 0x08], &[(RAX, DEV), (RCX, 0x1100)], DEV, &[(0, 1, 0x80)]);
    assert_eq!((run.gprs[RCX], flags(&run)), (0x1180, SF));
    // adc [rax], ecx with CF set: 1 + 1 + 1
    let mut run = vcpu(CpuMode::Long64);
    run.gprs[RAX] = DEV;
    run.gprs[RCX] = 1;
    run.rflags |= CF;
    let mut bus = Bus::new();
    bus.poke(DEV, 4, 1);
    go(&[0x11, 0x08], &mut run, DEV, &mut Ram::new(), &mut bus).unwrap();
    assert_eq!((bus.peek(DEV, 4), flags(&run)), (3, PF));
    // sbb dword [rax], 0 with CF set: 0 - 0 - 1
    bus.poke(DEV, 4, 0);
    run.rflags |= CF;
    go(&[0x83, 0x18, 0x00], &mut run, DEV, &mut Ram::new(), &mut bus).unwrap();
    assert_eq!((bus.peek(DEV, 4), flags(&run)), (0xffff_ffff, CF | SF | PF | AF));
}

#[test]
fn test_instruction() {
    // test dword [rax], 4 / 1 on 0x3c
    let (run, bus, _) = run64(&[0xf7, 0x00, 0x04, 0x00, 0x00, 0x00], &[(RAX, DEV)], DEV, &[(0, 4, 0x3c)]);
    assert_eq!((flags(&run) & ZF, bus.log.len()), (0, 1));
    let (run, _, _) = run64(&[0xf7, 0x00, 0x01, 0x00, 0x00, 0x00], &[(RAX, DEV)], DEV, &[(0, 4, 0x3c)]);
    assert_eq!(flags(&run) & ZF, ZF);
    // test [rax], ecx
    let (run, _, _) = run64(&[0x85, 0x08], &[(RAX, DEV), (RCX, 0x8000_0000)], DEV, &[(0, 4, 0x8000_0000)]);
    assert_eq!(flags(&run), SF | PF);
    // test byte [rax], 0x80
    let (run, _, _) = run64(&[0xf6, 0x00, 0x80], &[(RAX, DEV)], DEV, &[(0, 1, 0x80)]);
    assert_eq!(flags(&run), SF);
}

#[test]
fn xchg_and_unary() {
    // xchg [rcx], eax
    let (run, bus, done) = run64(&[0x87, 0x01], &[(RCX, DEV), (RAX, 0xffff_ffff_3333_4444)], DEV, &[(0, 4, 0x1111_2222)]);
    assert_eq!(run.gprs[RAX], 0x1111_2222);
    assert_eq!(bus.log, [(Op::R, DEV, 4, 0x1111_2222), (Op::W, DEV, 4, 0x3333_4444)]);
    assert_eq!(done.access, Access::ReadWrite);
    // lock xchg [rcx], al
    let (run, bus, _) = run64(&[0xf0, 0x86, 0x01], &[(RCX, DEV), (RAX, 0x1234)], DEV, &[(0, 1, 0x99)]);
    assert_eq!((run.gprs[RAX], bus.peek(DEV, 1)), (0x1299, 0x34));
    // inc dword [rax]: CF kept
    let mut run = vcpu(CpuMode::Long64);
    run.gprs[RAX] = DEV;
    run.rflags |= CF;
    let mut bus = Bus::new();
    bus.poke(DEV, 4, 0xffff_ffff);
    go(&[0xff, 0x00], &mut run, DEV, &mut Ram::new(), &mut bus).unwrap();
    assert_eq!((bus.peek(DEV, 4), flags(&run)), (0, CF | ZF | PF | AF));
    // dec byte [rax]
    let (run, bus, _) = run64(&[0xfe, 0x08], &[(RAX, DEV)], DEV, &[(0, 1, 0x80)]);
    assert_eq!((bus.peek(DEV, 1), flags(&run)), (0x7f, OF | AF));
    // neg dword [rax]
    let (run, bus, _) = run64(&[0xf7, 0x18], &[(RAX, DEV)], DEV, &[(0, 4, 1)]);
    assert_eq!((bus.peek(DEV, 4), flags(&run)), (0xffff_ffff, CF | SF | PF | AF));
    // not word [rax]: no flags
    let (run, bus, _) = run64(&[0x66, 0xf7, 0x10], &[(RAX, DEV)], DEV, &[(0, 4, 0x1234_00ff)]);
    assert_eq!((bus.peek(DEV, 4), flags(&run)), (0x1234_ff00, 0));
}

#[test]
fn bit_tests() {
    // bt dword [rax], 3
    let (run, bus, done) = run64(&[0x0f, 0xba, 0x20, 0x03], &[(RAX, DEV)], DEV, &[(0, 4, 8)]);
    assert_eq!((flags(&run) & CF, bus.log.len(), done.access), (CF, 1, Access::Read));
    // bts [rax], ecx with ecx = 35: the dword at +4, bit 3
    let (run, bus, _) = run64(&[0x0f, 0xab, 0x08], &[(RAX, DEV), (RCX, 35)], DEV + 4, &[]);
    assert_eq!((flags(&run) & CF, bus.peek(DEV + 4, 4)), (0, 8));
    // btr [rax], ecx with ecx = -1: the dword at -4, bit 31
    let (run, bus, _) = run64(&[0x0f, 0xb3, 0x08], &[(RAX, DEV + 8), (RCX, 0xffff_ffff)], DEV + 4, &[(4, 4, u64::MAX)]);
    assert_eq!((flags(&run) & CF, bus.peek(DEV + 4, 4)), (CF, 0x7fff_ffff));
    // btc qword [rax], 63
    let (_, bus, _) = run64(&[0x48, 0x0f, 0xba, 0x38, 0x3f], &[(RAX, DEV)], DEV, &[]);
    assert_eq!(bus.peek(DEV, 8), 1 << 63);
}

#[test]
fn rep_stos() {
    // rep stosd, count 3
    let (run, bus, done) = run64(&[0xf3, 0xab], &[(7, DEV), (RCX, 3), (RAX, 0xffff_ffff_a5a5_a5a5)], DEV, &[]);
    let w = |o| (Op::W, DEV + o, 4, 0xa5a5_a5a5);
    assert_eq!(bus.log, [w(0), w(4), w(8)]);
    assert_eq!((run.gprs[RCX], run.gprs[7]), (0, DEV + 12));
    assert_eq!((done.count, done.access, done.finished), (3, Access::Write, true));
    // stosq without rep ignores RCX
    let (run, bus, _) = run64(&[0x48, 0xab], &[(7, DEV), (RCX, 3), (RAX, 7)], DEV, &[]);
    assert_eq!((bus.log.len(), run.gprs[RCX], run.gprs[7]), (1, 3, DEV + 8));
    // rep stosb with RCX = 0 only advances RIP
    let (run, bus, done) = run64(&[0xf3, 0xaa], &[(7, DEV)], DEV, &[]);
    assert_eq!((bus.log.len(), run.gprs[7], done.count), (0, DEV, 0));
    // rep stosw downwards (DF set)
    let mut run = vcpu(CpuMode::Long64);
    run.rflags |= DF;
    run.gprs[7] = DEV + 4;
    run.gprs[RCX] = 3;
    run.gprs[RAX] = 0xbeef;
    let mut bus = Bus::new();
    go(&[0xf3, 0x66, 0xab], &mut run, DEV + 4, &mut Ram::new(), &mut bus).unwrap();
    let offsets: Vec<u64> = bus.log.iter().map(|l| l.1 - DEV).collect();
    assert_eq!(offsets, [4, 2, 0]);
    assert_eq!((run.gprs[7], run.gprs[RCX]), (DEV - 2, 0));
}

#[test]
fn rep_is_capped_and_stops_at_the_page_end() {
    // 10000 bytes from the page start: the page (4096) is done, the rest
    // is left for the guest to re-execute.
    let (run, bus, done) = run64(&[0xf3, 0xaa], &[(7, DEV), (RCX, 10_000)], DEV, &[]);
    assert_eq!((bus.log.len(), done.count, done.finished), (4096, 4096, false));
    assert_eq!((run.rip, run.gprs[RCX], run.gprs[7]), (0x1000, 10_000 - 4096, DEV + 4096));
    // 100 dwords from 0xff0: 4 fit in the page.
    let (run, bus, _) = run64(&[0xf3, 0xab], &[(7, DEV + 0xff0), (RCX, 100)], DEV + 0xff0, &[]);
    assert_eq!((bus.log.len(), run.gprs[RCX], run.rip), (4, 96, 0x1000));
    // A dword that straddles the page end into RAM is done (split) when
    // it is the first, and alone.
    let mut run = vcpu(CpuMode::Long64);
    let (mut ram, mut bus) = (Ram::new(), Bus::at(RAM - 0x1000));
    run.gprs[7] = RAM - 2;
    run.gprs[RCX] = 2;
    run.gprs[RAX] = 0x4433_2211;
    go(&[0xf3, 0xab], &mut run, RAM - 2, &mut ram, &mut bus).unwrap();
    assert_eq!(bus.log, [(Op::W, RAM - 2, 2, 0x2211)]);
    assert_eq!((&ram.bytes[..2], run.gprs[RCX], run.gprs[7]), (&[0x33, 0x44][..], 1, RAM + 2));
    // Qwords: the page holds 512 of them.
    let (run, _, done) = run64(&[0xf3, 0x48, 0xab], &[(7, DEV), (RCX, 5000)], DEV, &[]);
    assert_eq!((done.count, run.gprs[RCX]), (512, 5000 - 512));
}

#[test]
fn rep_movs_between_ram_and_device() {
    // rep movsb from RAM to the device
    let mut run = vcpu(CpuMode::Long64);
    let mut ram = Ram::new();
    ram.bytes[0x100..0x104].copy_from_slice(b"ALCV");
    run.gprs[6] = RAM + 0x100;
    run.gprs[7] = DEV;
    run.gprs[RCX] = 4;
    let mut bus = Bus::new();
    let done = go(&[0xf3, 0xa4], &mut run, DEV, &mut ram, &mut bus).unwrap();
    assert_eq!(bus.peek(DEV, 4), u64::from(u32::from_le_bytes(*b"ALCV")));
    assert_eq!(bus.log.len(), 4);
    assert_eq!((run.gprs[6], run.gprs[7], run.gprs[RCX], run.rip), (RAM + 0x104, DEV + 4, 0, 0x1002));
    assert_eq!((done.access, done.count), (Access::Write, 4));
    // rep movsd from the device to RAM
    let mut run = vcpu(CpuMode::Long64);
    run.gprs[6] = DEV + 8;
    run.gprs[7] = RAM + 0x200;
    run.gprs[RCX] = 2;
    bus.poke(DEV + 8, 8, 0x1111_2222_3333_4444);
    let done = go(&[0xf3, 0xa5], &mut run, DEV + 8, &mut ram, &mut bus).unwrap();
    assert_eq!(&ram.bytes[0x200..0x208], &0x1111_2222_3333_4444u64.to_le_bytes());
    assert_eq!((done.access, done.gpa), (Access::Read, DEV + 8));
    // movsq with an FS override on the source (64-bit mode honours FS).
    let mut run = vcpu(CpuMode::Long64);
    run.segments[4].base = DEV - 0x40;
    run.gprs[6] = 0x40;
    run.gprs[7] = RAM;
    bus.poke(DEV, 8, 0xabcd);
    go(&[0x64, 0x48, 0xa5], &mut run, DEV, &mut ram, &mut bus).unwrap();
    assert_eq!(&ram.bytes[0..8], &0xabcdu64.to_le_bytes());
    // Both sides at the same page offset: the RAM probe decides...
    let mut run = vcpu(CpuMode::Long64);
    run.gprs[6] = RAM + 0x10;
    run.gprs[7] = DEV + 0x10;
    ram.bytes[0x10] = 0x5a;
    go(&[0xa4], &mut run, DEV + 0x10, &mut ram, &mut bus).unwrap();
    assert_eq!(bus.peek(DEV + 0x10, 1), 0x5a);
    // ... or the guest's page tables, when the memory can translate.
    ram.translates = true;
    let mut run = vcpu(CpuMode::Long64);
    run.gprs[6] = DEV + 0x10;
    run.gprs[7] = RAM + 0x10;
    bus.poke(DEV + 0x10, 1, 0x6b);
    go(&[0xa4], &mut run, DEV + 0x10, &mut ram, &mut bus).unwrap();
    assert_eq!(ram.bytes[0x10], 0x6b);
    // A RAM side that faults on the first iteration is an error.
    let mut run = vcpu(CpuMode::Long64);
    run.gprs[6] = 0x10; // not RAM
    run.gprs[7] = DEV;
    let e = go(&[0xa4], &mut run, DEV, &mut ram, &mut bus).unwrap_err();
    assert_eq!(e, EmulateError::Fault { rip: 0x1000, fault: MemFault { gva: 0x10, kind: FaultKind::NotRam { gpa: 0x10 } } });
    assert_eq!(run.rip, 0x1000);
    // ... and ends the rep (RIP stays) on a later one.
    let mut run = vcpu(CpuMode::Long64);
    run.gprs[6] = RAM + RAM_BYTES as u64 - 2;
    run.gprs[7] = DEV;
    run.gprs[RCX] = 4;
    let done = go(&[0xf3, 0xa4], &mut run, DEV, &mut ram, &mut bus).unwrap();
    assert_eq!((done.count, run.gprs[RCX], run.rip), (2, 2, 0x1000));
}

#[test]
fn protected_mode_32() {
    let mut ram = Ram::new();
    // mov [eax], ecx; in 32-bit code the upper halves are kept
    let mut run = vcpu(CpuMode::Protected32);
    run.gprs[RAX] = DEV;
    run.gprs[RCX] = 0x42;
    let mut bus = Bus::new();
    go(&[0x89, 0x08], &mut run, DEV, &mut ram, &mut bus).unwrap();
    assert_eq!(bus.log, [(Op::W, DEV, 4, 0x42)]);
    // mov ax, [ebx] (66 prefix) and mov eax, [ebx+4]
    bus.poke(DEV, 8, 0x5555_6666_7777_8888);
    run.gprs[RBX] = DEV;
    run.gprs[RAX] = 0xffff_ffff_0000_0000;
    go(&[0x66, 0x8b, 0x03], &mut run, DEV, &mut ram, &mut bus).unwrap();
    assert_eq!(run.gprs[RAX], 0xffff_ffff_0000_8888);
    go(&[0x8b, 0x43, 0x04], &mut run, DEV + 4, &mut ram, &mut bus).unwrap();
    assert_eq!(run.gprs[RAX], 0xffff_ffff_5555_6666);
    assert_eq!(run.rip, 0x1000 + 2 + 3 + 3);
    // Segment bases count outside 64-bit mode: DS.base + EBX wraps at 4 GiB.
    let mut run = vcpu(CpuMode::Protected32);
    run.segments[3].base = 0xf000_0000;
    run.gprs[RBX] = DEV.wrapping_add(0x1000_0000) & 0xffff_ffff;
    go(&[0x8b, 0x03], &mut run, DEV, &mut ram, &mut bus).unwrap();
    assert_eq!(run.gprs[RAX], 0x7777_8888);
    // rep stosd with ES:EDI
    let mut run = vcpu(CpuMode::Protected32);
    run.segments[0].base = DEV - 0x100;
    run.gprs[7] = 0x100;
    run.gprs[RCX] = 2;
    run.gprs[RAX] = 0x600d;
    let mut bus = Bus::new();
    go(&[0xf3, 0xab], &mut run, DEV, &mut ram, &mut bus).unwrap();
    assert_eq!(bus.log, [(Op::W, DEV, 4, 0x600d), (Op::W, DEV + 4, 4, 0x600d)]);
    assert_eq!(run.gprs[7], 0x108);
    // 16-bit addressing in 32-bit code (67 prefix): mov [bx+si], al
    let mut run = vcpu(CpuMode::Protected32);
    run.gprs[RBX] = 0xffff_0000 | 0x10;
    run.gprs[6] = 0x20;
    run.segments[3].base = DEV;
    let mut bus = Bus::new();
    go(&[0x67, 0x88, 0x00], &mut run, DEV + 0x30, &mut ram, &mut bus).unwrap();
    assert_eq!(bus.log, [(Op::W, DEV + 0x30, 1, 0)]);
}

#[test]
fn real_and_16_bit_modes() {
    let vga = 0xa_0000;
    let mut ram = Ram::new();
    for mode in [CpuMode::Real16, CpuMode::Protected16] {
        // mov [bx], ax with DS = 0xA000
        let mut run = vcpu(mode);
        run.segments[3] = Segment { selector: 0xa000, attrib: 0x93, limit: 0xffff, base: vga };
        run.gprs[RBX] = 0x10;
        run.gprs[RAX] = 0xffff_1234;
        let mut bus = Bus::at(vga);
        go(&[0x89, 0x07], &mut run, vga + 0x10, &mut ram, &mut bus).unwrap();
        assert_eq!(bus.log, [(Op::W, vga + 0x10, 2, 0x1234)]);
        // mov [bx], eax (66): 4 bytes
        go(&[0x66, 0x89, 0x07], &mut run, vga + 0x10, &mut ram, &mut bus).unwrap();
        assert_eq!(bus.log[1], (Op::W, vga + 0x10, 4, 0xffff_1234));
        // mov al, es:[di+2] with ES = DS
        run.segments[0] = run.segments[3];
        run.gprs[7] = 0x0e;
        go(&[0x26, 0x8a, 0x45, 0x02], &mut run, vga + 0x10, &mut ram, &mut bus).unwrap();
        assert_eq!(run.gprs[RAX], 0xffff_1234);
        // Offsets wrap at 64 KiB: [bx+di] with BX + DI = 0x10010.
        run.gprs[RBX] = 0xffff;
        run.gprs[7] = 0x11;
        go(&[0xc6, 0x01, 0x99], &mut run, vga + 0x10, &mut ram, &mut bus).unwrap();
        assert_eq!(bus.log.last(), Some(&(Op::W, vga + 0x10, 1, 0x99)));
        // rep stosb with CX = 2 (ES:DI); the upper bits of ECX/EDI stay
        run.gprs[7] = 0x1234_0020;
        run.gprs[RCX] = 0x5678_0002;
        go(&[0xf3, 0xaa], &mut run, vga + 0x20, &mut ram, &mut bus).unwrap();
        assert_eq!((run.gprs[7], run.gprs[RCX]), (0x1234_0022, 0x5678_0000));
        assert_eq!(run.rip, 0x1000 + 2 + 3 + 4 + 3 + 2);
    }
    // IP wraps at 64 KiB.
    let mut run = vcpu(CpuMode::Real16);
    run.rip = 0xfffe;
    run.gprs[RBX] = 0x10;
    run.segments[3].base = vga;
    let mut bus = Bus::at(vga);
    go(&[0x8b, 0x47, 0x00], &mut run, vga + 0x10, &mut ram, &mut bus).unwrap();
    assert_eq!(run.rip, 0x1);
}

#[test]
fn unsupported_and_mismatched_instructions() {
    let cases: [&[u8]; 9] = [
        &[0xff, 0x30],       // push qword [rax]
        &[0x90],             // nop
        &[0x0f, 0x0b],       // ud2
        &[0x8d, 0x00],       // lea eax, [rax]
        &[0xa6],             // cmpsb
        &[0x0f, 0xb1, 0x08], // cmpxchg [rax], ecx
        &[0x8c, 0x00],       // mov [rax], es
        &[0x0f, 0x10, 0x00], // movups xmm0, [rax]
        &[0x48],             // a lone REX prefix: truncated
    ];
    for bytes in cases {
        let mut run = vcpu(CpuMode::Long64);
        run.gprs[RAX] = DEV;
        run.gprs[6] = DEV;
        run.gprs[7] = DEV;
        let before = run;
        let mut bus = Bus::new();
        let e = go(bytes, &mut run, DEV, &mut Ram::new(), &mut bus).unwrap_err();
        let EmulateError::Unsupported { rip, bytes: got, len } = e else { panic!("{bytes:02x?}: {e:?}") };
        assert_eq!((rip, &got[..len]), (0x1000, bytes), "{bytes:02x?}");
        assert_eq!((run.gprs, run.rip, run.rflags), (before.gprs, before.rip, before.rflags));
        assert!(bus.log.is_empty());
    }
    // The operand does not touch the faulting address.
    let mut run = vcpu(CpuMode::Long64);
    run.gprs[RAX] = DEV + 0x100;
    let e = go(&[0x89, 0x08], &mut run, DEV, &mut Ram::new(), &mut Bus::new()).unwrap_err();
    assert!(matches!(e, EmulateError::NotMmio { gpa: DEV, len: 2, .. }), "{e:?}");
    let text = std::format!("{}", EmulateError::Unsupported { rip: 0x10, bytes: [0x0f, 0x0b, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], len: 2 });
    assert_eq!(text, "cannot emulate the instruction at rip 0x10: 0f 0b");
}

#[test]
fn fetch_reads_cs_rip_and_stops_at_a_fault() {
    let mut ram = Ram::new();
    for (i, b) in ram.bytes.iter_mut().enumerate() {
        *b = i as u8;
    }
    let mut run = vcpu(CpuMode::Long64);
    run.rip = RAM + 0x10;
    let (bytes, n) = fetch(&mut ram, &run).unwrap();
    assert_eq!((n, bytes[0], bytes[14]), (15, 0x10, 0x1e));
    // The last 5 bytes of RAM: the rest faults.
    run.rip = RAM + RAM_BYTES as u64 - 5;
    let (bytes, n) = fetch(&mut ram, &run).unwrap();
    assert_eq!((n, bytes[0]), (5, 0xfb));
    run.rip = 0x10;
    assert_eq!(fetch(&mut ram, &run), Err(MemFault { gva: 0x10, kind: FaultKind::NotRam { gpa: 0x10 } }));
    // Real mode: CS.base + IP.
    let mut run = vcpu(CpuMode::Real16);
    run.segments[1].base = RAM;
    run.rip = 0x1_0020; // only IP counts
    assert_eq!(fetch(&mut ram, &run).unwrap().0[0], 0x20);
}

/// xorshift64: deterministic, no dependencies.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Where the first memory operand of `bytes` points with `run`'s registers
/// (computed independently of the emulator's own path), so the fuzz loop
/// can aim the fault at it.
fn first_memory_operand(bytes: &[u8], run: &VcpuRun) -> Option<u64> {
    let mode = cpu_mode(run);
    let instr = Decoder::with_ip(mode.bitness(), bytes, run.rip & mode.ip_mask(), DecoderOptions::NONE).decode();
    let op = (0..instr.op_count()).find(|&i| {
        matches!(
            instr.op_kind(i),
            OpKind::Memory
                | OpKind::MemorySegSI
                | OpKind::MemorySegESI
                | OpKind::MemorySegRSI
                | OpKind::MemoryESDI
                | OpKind::MemoryESEDI
                | OpKind::MemoryESRDI
        )
    })?;
    let va = instr.virtual_address(op, 0, |reg, _, _| {
        let seg = [Register::ES, Register::CS, Register::SS, Register::DS, Register::FS, Register::GS];
        if let Some(i) = seg.iter().position(|&s| s == reg) {
            return Some(if mode == CpuMode::Long64 && i < 4 { 0 } else { run.segments[i].base });
        }
        Gpr::from_iced(reg).map(|g| g.get(run))
    })?;
    Some(va & mode.linear_mask())
}

#[test]
fn fuzz_never_panics() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    // Opcodes and prefixes that reach the supported forms (and neighbours).
    const OPCODES: [u8; 28] = [
        0x88, 0x89, 0x8a, 0x8b, 0xc6, 0xc7, 0x80, 0x81, 0x83, 0x85, 0x87, 0xf6, 0xf7, 0xfe, 0xff, 0xa4, 0xa5,
        0xaa, 0xab, 0xa6, 0xa0, 0xa3, 0x01, 0x0b, 0x31, 0x39, 0x63, 0x0f,
    ];
    const PREFIXES: [u8; 10] = [0x66, 0x67, 0xf3, 0xf2, 0xf0, 0x26, 0x64, 0x65, 0x48, 0x41];
    const TWO_BYTE: [u8; 8] = [0xb6, 0xb7, 0xbe, 0xbf, 0xa3, 0xab, 0xba, 0xb1];
    let modes = [CpuMode::Real16, CpuMode::Protected16, CpuMode::Protected32, CpuMode::Long64];
    let (mut ok, mut aimed) = (0, 0);
    for i in 0..200_000u32 {
        let mode = modes[(i % 4) as usize];
        let mut run = vcpu(mode);
        let mut bytes = [0u8; 15];
        for b in bytes.iter_mut() {
            *b = rng.next() as u8;
        }
        if !rng.next().is_multiple_of(4) {
            // Structured: prefixes, an opcode, then random ModRM and tail.
            let mut at = 0;
            while at < 3 && rng.next() & 1 == 0 {
                bytes[at] = PREFIXES[rng.next() as usize % PREFIXES.len()];
                at += 1;
            }
            bytes[at] = OPCODES[rng.next() as usize % OPCODES.len()];
            if bytes[at] == 0x0f {
                bytes[at + 1] = TWO_BYTE[rng.next() as usize % TWO_BYTE.len()];
            }
        }
        // Registers near the device page, in RAM, small, or wild.
        for g in run.gprs.iter_mut() {
            let r = rng.next();
            *g = match r & 3 {
                0 => r,
                1 => DEV + (r >> 52),
                2 => RAM + (r >> 50),
                _ => (r >> 32) & 0xff,
            };
        }
        run.rflags = 2 | (rng.next() & (STATUS_FLAGS | DF));
        for s in run.segments.iter_mut().take(6) {
            s.base = if rng.next() & 1 == 0 { 0 } else { rng.next() & 0xffff_ffff };
        }
        if rng.next() & 1 == 0 {
            run.gprs[RCX] = rng.next() & 0x3fff;
        }
        let len = if rng.next().is_multiple_of(8) { 1 + rng.next() as usize % 15 } else { 15 };
        let mut gpa = if rng.next() & 1 == 0 { DEV + (rng.next() & 0xfff) } else { rng.next() };
        if !rng.next().is_multiple_of(4)
            && let Some(va) = first_memory_operand(&bytes[..len], &run)
        {
            gpa = DEV | ((va + (rng.next() & 1)) & 0xfff);
            aimed += 1;
        }
        let before = run;
        let mut ram = Ram::new();
        ram.translates = rng.next() & 1 == 0;
        let mut bus = Bus::at(gpa & !0xfff);
        match emulate(&bytes[..len], &mut run, gpa, &mut ram, &mut bus) {
            Ok(done) => {
                ok += 1;
                assert!(matches!(done.size, 1 | 2 | 4 | 8));
                assert!(done.count <= REP_LIMIT);
                if done.finished {
                    assert_ne!(run.rip, before.rip);
                } else {
                    assert_eq!(run.rip, before.rip);
                }
            }
            Err(EmulateError::Unsupported { len, .. } | EmulateError::NotMmio { len, .. }) => {
                assert!(len <= 15);
                assert_eq!((run.gprs, run.rip, run.rflags), (before.gprs, before.rip, before.rflags));
                assert!(bus.log.is_empty());
            }
            Err(EmulateError::Fault { .. } | EmulateError::Straddle { .. }) => {
                assert_eq!(run.rip, before.rip);
            }
            Err(e @ EmulateError::NotPortIo { .. }) => panic!("{e} from emulate"),
        }
    }
    // The loop must reach the emulation paths, not only the error ones.
    assert!(ok > 20_000, "only {ok} of 200000 emulated ({aimed} aimed)");
}

/// A port that answers 1, 2, 3 … and records what it is given.
#[derive(Default)]
struct Port {
    next: u32,
    reads: u32,
    writes: Vec<(u16, u8, u32)>,
}

impl PortBus for Port {
    fn read(&mut self, _port: u16, size: u8) -> u32 {
        self.reads += 1;
        self.next += 1;
        self.next & mask(size) as u32
    }
    fn write(&mut self, port: u16, size: u8, value: u32) {
        self.writes.push((port, size, value));
    }
}

const INSB: PortExit = PortExit { port: 0x1f0, size: 1, write: false, rep: true };

/// Issue finding 22: a `rep ins` longer than one batch leaves RIP on the
/// instruction (the guest re-executes it), so every element arrives.
#[test]
fn finding22_rep_ins_keeps_rip_until_the_count_is_done() {
    let mut run = vcpu(CpuMode::Long64);
    let (mut ram, mut port) = (Ram::new(), Port::default());
    let n = REP_LIMIT + 100;
    run.gprs[7] = RAM;
    run.gprs[RCX] = n;
    let done = string_io(&[0xf3, 0x6c], &mut run, INSB, &mut ram, &mut port).unwrap();
    assert_eq!(done, PortDone { count: REP_LIMIT, finished: false });
    assert_eq!((run.rip, run.gprs[RCX], run.gprs[7]), (0x1000, 100, RAM + REP_LIMIT));
    // The guest re-executes: the rest arrives, then RIP moves on.
    let done = string_io(&[0xf3, 0x6c], &mut run, INSB, &mut ram, &mut port).unwrap();
    assert_eq!(done, PortDone { count: 100, finished: true });
    assert_eq!((run.rip, run.gprs[RCX], run.gprs[7]), (0x1002, 0, RAM + n));
    assert!(ram.bytes[..n as usize].iter().enumerate().all(|(i, &b)| b == (i as u32 + 1) as u8));
    // outsw downwards (DF), no rep: one element, RSI steps back.
    let mut run = vcpu(CpuMode::Long64);
    run.rflags |= DF;
    run.gprs[6] = RAM + 0x10;
    ram.bytes[0x10..0x12].copy_from_slice(&[0x34, 0x12]);
    let out = PortExit { port: 0x60, size: 2, write: true, rep: false };
    assert_eq!(string_io(&[0x66, 0x6f], &mut run, out, &mut ram, &mut port).unwrap(), PortDone { count: 1, finished: true });
    assert_eq!((port.writes.as_slice(), run.gprs[6], run.rip), (&[(0x60, 2, 0x1234)][..], RAM + 0xe, 0x1002));
}

/// Issue finding 22: a fault on the guest buffer is the guest's #PF, with
/// the registers counting the elements done; `ins` does not read the port
/// for an element it cannot store.
#[test]
fn finding22_string_io_fault_is_a_page_fault_for_the_guest() {
    let mut run = vcpu(CpuMode::Long64);
    let mut ram = Ram::new();
    ram.refused.push((RAM + 0x1000, 0x6));
    let mut port = Port::default();
    run.gprs[7] = RAM + 0xffd;
    run.gprs[RCX] = 10;
    let e = string_io(&[0xf3, 0x6c], &mut run, INSB, &mut ram, &mut port).unwrap_err();
    let fault = MemFault { gva: RAM + 0x1000, kind: FaultKind::Page { error_code: 0x6 } };
    assert_eq!(e, EmulateError::Fault { rip: 0x1000, fault });
    assert_eq!((port.reads, run.gprs[RCX], run.gprs[7], run.rip), (3, 7, RAM + 0x1000, 0x1000));
    // #PF, error code valid, the code in bits 32-63; CR2 is the address.
    assert_eq!(fault.exception(), Some(((0x6 << 32) | (1 << 31) | (3 << 8) | (1 << 11) | 14, Some(RAM + 0x1000))));
    // outs from a refused page: the port sees nothing.
    let mut run = vcpu(CpuMode::Long64);
    run.gprs[6] = RAM + 0x1000;
    let out = PortExit { port: 0x80, size: 1, write: true, rep: false };
    let e = string_io(&[0x6e], &mut run, out, &mut ram, &mut port).unwrap_err();
    assert!(matches!(e, EmulateError::Fault { fault: MemFault { kind: FaultKind::Page { .. }, .. }, .. }));
    assert!(port.writes.is_empty());
    assert_eq!((run.rip, run.gprs[6]), (0x1000, RAM + 0x1000));
}

/// Issue finding 22: RCX/RSI/RDI are as wide as the instruction's address
/// size, and in 64-bit mode the DS/ES bases do not apply (FS/GS do).
#[test]
fn finding22_string_io_honours_address_size_and_segments() {
    let mut ram = Ram { bytes: vec![0; 0x1_0000], ..Ram::new() };
    let mut port = Port::default();
    // 32-bit code, `a16 rep insb`: CX counts, DI wraps at 64 KiB, the
    // upper halves stay.
    let mut run = vcpu(CpuMode::Protected32);
    run.segments[0].base = RAM;
    run.gprs[7] = 0xabcd_ffff;
    run.gprs[RCX] = 0x1234_0002;
    string_io(&[0x67, 0xf3, 0x6c], &mut run, INSB, &mut ram, &mut port).unwrap();
    assert_eq!((ram.bytes[0xffff], ram.bytes[0]), (1, 2));
    assert_eq!((run.gprs[7], run.gprs[RCX], run.rip), (0xabcd_0001, 0x1234_0000, 0x1003));
    // 64-bit mode, `a32 rep insb`: ECX counts, EDI and ECX writes clear
    // the upper halves; ES's base is ignored.
    let mut run = vcpu(CpuMode::Long64);
    run.segments[0].base = 0x5000_0000;
    run.gprs[7] = 0xffff_ffff_0000_0000 | (RAM + 0x100);
    run.gprs[RCX] = 0x1_0000_0003;
    string_io(&[0x67, 0xf3, 0x6c], &mut run, INSB, &mut ram, &mut port).unwrap();
    assert_eq!(&ram.bytes[0x100..0x103], &[3, 4, 5]);
    assert_eq!((run.gprs[7], run.gprs[RCX]), (RAM + 0x103, 0));
    // 64-bit `outsb` with DS's base set (ignored) and with an FS override
    // (applied).
    let mut run = vcpu(CpuMode::Long64);
    run.segments[3].base = 0x7000_0000;
    run.gprs[6] = RAM + 0x100;
    let out = PortExit { port: 0x80, size: 1, write: true, rep: false };
    string_io(&[0x6e], &mut run, out, &mut ram, &mut port).unwrap();
    let mut run = vcpu(CpuMode::Long64);
    run.segments[4].base = RAM;
    run.gprs[6] = 0x101;
    string_io(&[0x64, 0x6e], &mut run, out, &mut ram, &mut port).unwrap();
    assert_eq!(port.writes, [(0x80, 1, 3), (0x80, 1, 4)]);
}

#[test]
fn string_io_refuses_an_instruction_that_is_not_the_exit() {
    let mut ram = Ram::new();
    let mut port = Port::default();
    for (bytes, exit) in [
        (&[0x90][..], INSB),                                          // nop
        (&[0x6c][..], INSB),                                          // no rep
        (&[0xf3, 0x6d][..], INSB),                                    // insd
        (&[0xf3, 0x6e][..], INSB),                                    // outsb
        (&[0xf3][..], INSB),                                          // truncated
    ] {
        let mut run = vcpu(CpuMode::Long64);
        run.gprs[7] = RAM;
        run.gprs[RCX] = 4;
        let before = run;
        let e = string_io(bytes, &mut run, exit, &mut ram, &mut port).unwrap_err();
        assert!(matches!(e, EmulateError::NotPortIo { port: 0x1f0, .. }), "{bytes:02x?}: {e}");
        assert_eq!((run.gprs, run.rip), (before.gprs, before.rip));
    }
    assert_eq!(port.reads, 0);
}

/// Issue finding 24: an access that straddles the device page and the
/// page next to it goes to each page separately (here linear = physical,
/// so the device part must be at the device page's start, never before).
#[test]
fn finding24_straddling_access_is_split_at_the_page_boundary() {
    // mov [rax], ecx with RAM's last 2 bytes, then the device page.
    let dev = RAM + RAM_BYTES as u64;
    let mut run = vcpu(CpuMode::Long64);
    let (mut ram, mut bus) = (Ram::new(), Bus::at(dev));
    run.gprs[RAX] = dev - 2;
    run.gprs[RCX] = 0x4433_2211;
    go(&[0x89, 0x08], &mut run, dev, &mut ram, &mut bus).unwrap();
    assert_eq!(bus.log, [(Op::W, dev, 2, 0x4433)]);
    assert_eq!(&ram.bytes[RAM_BYTES - 2..], &[0x11, 0x22]);
    // mov rax, [rbx]: 3 bytes on the device page's end, 5 in RAM after it.
    let mut bus = Bus::at(RAM - 0x1000);
    bus.poke(RAM - 3, 2, 0xbbaa);
    bus.poke(RAM - 1, 1, 0xcc);
    ram.bytes[..5].copy_from_slice(&[1, 2, 3, 4, 5]);
    let mut run = vcpu(CpuMode::Long64);
    run.gprs[RBX] = RAM - 3;
    go(&[0x48, 0x8b, 0x03], &mut run, RAM - 3, &mut ram, &mut bus).unwrap();
    assert_eq!(run.gprs[RAX], 0x0504_0302_01cc_bbaa);
    assert_eq!(bus.log, [(Op::R, RAM - 3, 1, 0xaa), (Op::R, RAM - 2, 2, 0xccbb)]);
    // The other page refused by the guest's paging: its #PF, nothing done.
    ram.refused.push((RAM, 0x7));
    let mut bus = Bus::at(RAM - 0x1000);
    let mut run = vcpu(CpuMode::Long64);
    run.gprs[RBX] = RAM - 3;
    let e = go(&[0x48, 0x89, 0x03], &mut run, RAM - 3, &mut ram, &mut bus).unwrap_err();
    assert_eq!(e, EmulateError::Fault { rip: 0x1000, fault: MemFault { gva: RAM, kind: FaultKind::Page { error_code: 0x7 } } });
    assert!(bus.log.is_empty());
    // A device on both sides: refused, the device untouched.
    let mut bus = Bus::at(DEV);
    let mut run = vcpu(CpuMode::Long64);
    run.gprs[RAX] = DEV + 0xffe;
    let e = go(&[0x89, 0x08], &mut run, DEV + 0xffe, &mut ram, &mut bus).unwrap_err();
    assert!(matches!(e, EmulateError::Fault { fault: MemFault { kind: FaultKind::NotRam { .. }, .. }, .. }), "{e}");
    assert!(bus.log.is_empty());
    assert_eq!(run.rip, 0x1000);
}
