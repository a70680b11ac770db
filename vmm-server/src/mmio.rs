//! Instruction emulation for MMIO exits.
//!
//! When a guest touches guest-physical memory that is not RAM the vCPU exits
//! with only the faulting guest-physical address (AMD SVM under QEMU has no
//! decode assists and no NRIP save), so the VMM fetches the instruction at
//! CS:RIP ([`fetch`]), decodes it with iced-x86 in the guest's current
//! bitness and carries it out against its device model ([`emulate`]): the
//! memory operand that faulted goes to an [`MmioBus`], any other memory side
//! (the RAM half of `movs`) through [`GuestMemory`], and registers, flags and
//! RIP are updated in the run page as the hardware would have.
//!
//! The instruction bytes are guest input: anything this module does not
//! recognise, or that does not touch the faulting address, comes back as an
//! error carrying the bytes, never a panic and never a silent skip.
//!
//! Supported forms (all the ones Linux uses for MMIO accessors and
//! `memcpy_{to,from}io`/`memset_io`), each with any legal prefix (`lock`,
//! segment override, operand and address size):
//! `mov` r/m←r, r←r/m, r/m←imm, moffs; `movzx`, `movsx`, `movsxd`;
//! `add`/`adc`/`sub`/`sbb`/`and`/`or`/`xor`/`cmp` with a memory destination
//! or source; `test` m,r / m,imm; `xchg` m,r; `inc`/`dec`/`neg`/`not` m;
//! `bt`/`bts`/`btr`/`btc` m,r / m,imm; `stos` and `movs` of every size, with
//! or without `rep`.

use core::fmt;

use abi::VcpuRun;
use iced_x86::{Decoder, DecoderOptions, Instruction, MemorySize, Mnemonic, OpKind, Register};

/// The longest x86 instruction (SDM Vol. 2A §2.3.11).
pub const MAX_INSN_LEN: usize = 15;
/// The most `rep` iterations one call carries out; the rest continue when
/// the guest re-executes the instruction (RIP stays on it, RCX counts down).
pub const REP_LIMIT: u64 = 4096;

const PAGE_SHIFT: u32 = 12;
const PAGE_OFFSET_MASK: u64 = (1 << PAGE_SHIFT) - 1;

// RFLAGS bits (SDM Vol. 1 §3.4.3).
const CF: u64 = 1 << 0;
const PF: u64 = 1 << 2;
const AF: u64 = 1 << 4;
const ZF: u64 = 1 << 6;
const SF: u64 = 1 << 7;
const DF: u64 = 1 << 10;
const OF: u64 = 1 << 11;
const VM: u64 = 1 << 17;
const STATUS_FLAGS: u64 = CF | PF | AF | ZF | SF | OF;

// `VcpuRun::gprs` indices.
const RAX: usize = 0;
const RCX: usize = 1;
const RSI: usize = 6;
const RDI: usize = 7;

/// The processor mode that decides how instructions decode and how
/// addresses form.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CpuMode {
    /// Real or virtual-8086 mode: 16-bit code, segment bases from the
    /// selectors.
    Real16,
    /// Protected (or compatibility) mode with a 16-bit code segment.
    Protected16,
    /// Protected (or compatibility) mode with a 32-bit code segment.
    Protected32,
    /// 64-bit mode (EFER.LMA and CS.L).
    Long64,
}

impl CpuMode {
    /// The decoder's bitness for this mode.
    pub fn bitness(self) -> u32 {
        match self {
            CpuMode::Real16 | CpuMode::Protected16 => 16,
            CpuMode::Protected32 => 32,
            CpuMode::Long64 => 64,
        }
    }

    /// Which bits of RIP are the instruction pointer.
    fn ip_mask(self) -> u64 {
        match self {
            CpuMode::Real16 | CpuMode::Protected16 => 0xffff,
            CpuMode::Protected32 => 0xffff_ffff,
            CpuMode::Long64 => u64::MAX,
        }
    }

    /// Linear addresses outside 64-bit mode wrap at 4 GiB.
    fn linear_mask(self) -> u64 {
        if self == CpuMode::Long64 { u64::MAX } else { 0xffff_ffff }
    }
}

/// The mode the vCPU in `run` executes in: EFER.LMA (bit 10) with CS.L
/// (attrib bit 9) is 64-bit mode; CR0.PE (bit 0) clear or RFLAGS.VM set is
/// real/virtual-8086 mode; otherwise CS.D/B (attrib bit 10) picks 32 or 16
/// bits (compatibility mode decodes as protected mode does).
pub fn cpu_mode(run: &VcpuRun) -> CpuMode {
    let cs = run.segments[1].attrib;
    if run.efer & (1 << 10) != 0 && cs & (1 << 9) != 0 {
        CpuMode::Long64
    } else if run.cr0 & 1 == 0 || run.rflags & VM != 0 {
        CpuMode::Real16
    } else if cs & (1 << 10) != 0 {
        CpuMode::Protected32
    } else {
        CpuMode::Protected16
    }
}

/// A guest-virtual access that does not reach guest RAM (not mapped by the
/// guest's page tables, or mapped to something that is not RAM).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemFault {
    /// The first guest-virtual (linear) address that failed.
    pub gva: u64,
}

/// Guest RAM as the vCPU sees it: linear addresses, translated through the
/// guest's page tables by the implementation.
pub trait GuestMemory {
    fn read(&mut self, gva: u64, buf: &mut [u8]) -> Result<(), MemFault>;
    fn write(&mut self, gva: u64, data: &[u8]) -> Result<(), MemFault>;
    /// The guest-physical address of `gva`, if the implementation can tell.
    /// Only used to decide which side of a `movs` is the MMIO one when the
    /// page offsets alone cannot (both sides at the same offset); `None`
    /// means "unknown".
    fn translate(&mut self, _gva: u64) -> Option<u64> {
        None
    }
}

/// The device side: guest-physical accesses of 1, 2, 4 or 8 bytes, values
/// little-endian in the low bytes.
pub trait MmioBus {
    fn read(&mut self, gpa: u64, size: u8) -> u64;
    fn write(&mut self, gpa: u64, size: u8, value: u64);
}

/// Reads the (up to) 15 instruction bytes at CS:RIP. Stops early at a fault
/// after the first byte (an instruction at the end of a mapped page); a
/// fault on the first byte is the error. Returns the bytes and how many are
/// valid.
pub fn fetch(mem: &mut impl GuestMemory, run: &VcpuRun) -> Result<([u8; MAX_INSN_LEN], usize), MemFault> {
    let mode = cpu_mode(run);
    let start = if mode == CpuMode::Long64 {
        run.rip
    } else {
        run.segments[1].base.wrapping_add(run.rip & mode.ip_mask()) & mode.linear_mask()
    };
    let mut bytes = [0u8; MAX_INSN_LEN];
    let mut got = 0;
    while got < MAX_INSN_LEN {
        let at = start.wrapping_add(got as u64);
        // Page by page, so a fault on the second page keeps the first.
        let in_page = (PAGE_OFFSET_MASK + 1 - (at & PAGE_OFFSET_MASK)) as usize;
        let n = in_page.min(MAX_INSN_LEN - got);
        if mem.read(at, &mut bytes[got..got + n]).is_err() {
            // The implementation may fault at a finer grain: go byte-wise.
            let mut byte = [0u8];
            if mem.read(at, &mut byte).is_err() {
                if got == 0 {
                    return Err(MemFault { gva: at });
                }
                break;
            }
            bytes[got] = byte[0];
            got += 1;
            continue;
        }
        got += n;
    }
    Ok((bytes, got))
}

/// Whether the emulated instruction read or wrote the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
    /// Read-modify-write (`xchg`, `or [mem], …`, `bts` …).
    ReadWrite,
}

/// What [`emulate`] carried out, for logging.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Done {
    pub mnemonic: Mnemonic,
    pub access: Access,
    /// Guest-physical address of the first device access.
    pub gpa: u64,
    /// Bytes per device access.
    pub size: u8,
    /// Device accesses made: 1, or the `rep` iterations done (0 when RCX
    /// was 0).
    pub count: u64,
    /// RIP moved past the instruction (false: a `rep` with iterations left).
    pub finished: bool,
}

/// Why an MMIO exit could not be emulated. The VMM reports these; the guest
/// is not resumed past an instruction that was not carried out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EmulateError {
    /// Not a form this emulator knows (or not a valid instruction at all).
    Unsupported { rip: u64, bytes: [u8; MAX_INSN_LEN], len: usize },
    /// The instruction decodes, but none of its memory operands reaches the
    /// faulting address (the code changed under us, or the exit was not a
    /// data access of this instruction).
    NotMmio { rip: u64, gpa: u64, bytes: [u8; MAX_INSN_LEN], len: usize },
    /// The RAM side of a `movs` faulted on the first iteration (the VMM
    /// should inject a page fault).
    Fault { rip: u64, fault: MemFault },
}

struct Hex<'a>(&'a [u8]);

impl fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Display for EmulateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            EmulateError::Unsupported { rip, ref bytes, len } => {
                write!(f, "cannot emulate the instruction at rip {rip:#x}: {}", Hex(&bytes[..len.min(MAX_INSN_LEN)]))
            }
            EmulateError::NotMmio { rip, gpa, ref bytes, len } => write!(
                f,
                "the instruction at rip {rip:#x} ({}) does not access the faulting address {gpa:#x}",
                Hex(&bytes[..len.min(MAX_INSN_LEN)])
            ),
            EmulateError::Fault { rip, fault } => {
                write!(f, "the instruction at rip {rip:#x} faulted on guest RAM at {:#x}", fault.gva)
            }
        }
    }
}

/// Emulates the instruction in `bytes` (from [`fetch`]) at `run.rip`, whose
/// access to guest-physical `gpa` exited. On success the registers, RFLAGS
/// and RIP in `run` are what the hardware would have left; the caller sets
/// `run.load_state`. On error `run` is untouched, except that a `rep`
/// instruction may have done some iterations (its registers then say so).
pub fn emulate(
    bytes: &[u8],
    run: &mut VcpuRun,
    gpa: u64,
    mem: &mut impl GuestMemory,
    bus: &mut impl MmioBus,
) -> Result<Done, EmulateError> {
    let mode = cpu_mode(run);
    let bytes = &bytes[..bytes.len().min(MAX_INSN_LEN)];
    let mut decoder = Decoder::with_ip(mode.bitness(), bytes, run.rip & mode.ip_mask(), DecoderOptions::NONE);
    let instr = decoder.decode();
    let mut shown = [0u8; MAX_INSN_LEN];
    let len = if instr.is_invalid() { bytes.len() } else { instr.len() };
    shown[..len].copy_from_slice(&bytes[..len]);
    let cx = Cx { mode, instr, gpa, rip: run.rip, bytes: shown, len };
    if instr.is_invalid() {
        return Err(cx.unsupported());
    }
    match instr.op_kind(0) {
        OpKind::MemoryESDI | OpKind::MemoryESEDI | OpKind::MemoryESRDI => cx.string(run, mem, bus),
        _ => cx.single(run, bus),
    }
}

/// One decoded instruction and where it came from.
struct Cx {
    mode: CpuMode,
    instr: Instruction,
    gpa: u64,
    rip: u64,
    bytes: [u8; MAX_INSN_LEN],
    len: usize,
}

/// A non-memory operand, or the (single) memory operand.
#[derive(Clone, Copy)]
enum Operand {
    Reg(Gpr),
    Imm(u64),
    Mem,
}

/// A general-purpose register as an instruction names it.
#[derive(Clone, Copy)]
struct Gpr {
    index: usize,
    /// 1, 2, 4 or 8.
    size: u8,
    /// AH, CH, DH, BH: bits 8-15 of registers 0-3.
    high: bool,
}

impl Gpr {
    fn from_iced(reg: Register) -> Option<Gpr> {
        let n = reg as u32;
        let (first, size) = match n {
            _ if (Register::AL as u32..=Register::R15L as u32).contains(&n) => (Register::AL, 1),
            _ if (Register::AX as u32..=Register::R15W as u32).contains(&n) => (Register::AX, 2),
            _ if (Register::EAX as u32..=Register::R15D as u32).contains(&n) => (Register::EAX, 4),
            _ if (Register::RAX as u32..=Register::R15 as u32).contains(&n) => (Register::RAX, 8),
            _ => return None,
        };
        let i = (n - first as u32) as usize;
        // The 8-bit block is AL CL DL BL AH CH DH BH SPL BPL SIL DIL R8L…R15L.
        Some(match (size, i) {
            (1, 4..=7) => Gpr { index: i - 4, size, high: true },
            (1, 8..) => Gpr { index: i - 4, size, high: false },
            _ => Gpr { index: i, size, high: false },
        })
    }

    fn get(self, run: &VcpuRun) -> u64 {
        let full = run.gprs[self.index];
        if self.high { (full >> 8) & 0xff } else { full & mask(self.size) }
    }

    /// Writes as the hardware does: 8/16-bit writes keep the other bits,
    /// 32-bit writes zero-extend in 64-bit mode.
    fn set(self, run: &mut VcpuRun, mode: CpuMode, value: u64) {
        let reg = &mut run.gprs[self.index];
        *reg = if self.high {
            (*reg & !0xff00) | ((value & 0xff) << 8)
        } else {
            merge(*reg, value, self.size, mode)
        };
    }
}

/// `old` with its low `size` bytes replaced by `value`; a 4-byte write in
/// 64-bit mode clears the upper half (SDM Vol. 1 §3.4.1.1).
fn merge(old: u64, value: u64, size: u8, mode: CpuMode) -> u64 {
    if size == 4 && mode == CpuMode::Long64 {
        value & 0xffff_ffff
    } else {
        let m = mask(size);
        (old & !m) | (value & m)
    }
}

fn mask(size: u8) -> u64 {
    if size >= 8 { u64::MAX } else { (1u64 << (8 * u32::from(size))) - 1 }
}

fn sign_extend(value: u64, size: u8) -> u64 {
    let shift = 64 - 8 * u32::from(size.clamp(1, 8));
    (((value << shift) as i64) >> shift) as u64
}

fn memory_size_bytes(size: MemorySize) -> Option<u8> {
    Some(match size {
        MemorySize::UInt8 | MemorySize::Int8 => 1,
        MemorySize::UInt16 | MemorySize::Int16 => 2,
        MemorySize::UInt32 | MemorySize::Int32 => 4,
        MemorySize::UInt64 | MemorySize::Int64 => 8,
        _ => return None,
    })
}

/// The guest-physical address of an access of `size` bytes at `linear`
/// that faulted at `gpa`: `gpa` is one of its bytes, and the page offsets of
/// linear and physical addresses agree, so the access starts `k` bytes
/// before `gpa` where `k` is `gpa`'s offset within it. `None` if `gpa` is
/// not within the access.
fn mmio_address(linear: u64, size: u8, gpa: u64) -> Option<u64> {
    let k = (gpa & PAGE_OFFSET_MASK).wrapping_sub(linear & PAGE_OFFSET_MASK) & PAGE_OFFSET_MASK;
    (k < u64::from(size)).then(|| gpa.wrapping_sub(k))
}

fn same_page(a: u64, b: u64) -> bool {
    a >> PAGE_SHIFT == b >> PAGE_SHIFT
}

/// The arithmetic and logic operations, with their flags per SDM Vol. 2.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Alu {
    Add,
    Adc,
    Sub,
    Sbb,
    Cmp,
    And,
    Or,
    Xor,
    Test,
}

impl Alu {
    fn from_mnemonic(m: Mnemonic) -> Option<Alu> {
        Some(match m {
            Mnemonic::Add => Alu::Add,
            Mnemonic::Adc => Alu::Adc,
            Mnemonic::Sub => Alu::Sub,
            Mnemonic::Sbb => Alu::Sbb,
            Mnemonic::Cmp => Alu::Cmp,
            Mnemonic::And => Alu::And,
            Mnemonic::Or => Alu::Or,
            Mnemonic::Xor => Alu::Xor,
            Mnemonic::Test => Alu::Test,
            _ => return None,
        })
    }

    /// Whether the result is written back (not for `cmp`, `test`).
    fn writes(self) -> bool {
        !matches!(self, Alu::Cmp | Alu::Test)
    }

    /// `a op b` on `size` bytes: the result and the new RFLAGS.
    fn apply(self, a: u64, b: u64, size: u8, rflags: u64) -> (u64, u64) {
        let m = mask(size);
        let (a, b) = (a & m, b & m);
        let carry = u64::from(rflags & CF != 0);
        match self {
            Alu::Add | Alu::Adc => {
                let c = if self == Alu::Adc { carry } else { 0 };
                add_flags(a, b, c, size, rflags)
            }
            Alu::Sub | Alu::Sbb | Alu::Cmp => {
                let c = if self == Alu::Sbb { carry } else { 0 };
                sub_flags(a, b, c, size, rflags)
            }
            Alu::And | Alu::Test => logic_flags(a & b, size, rflags),
            Alu::Or => logic_flags(a | b, size, rflags),
            Alu::Xor => logic_flags(a ^ b, size, rflags),
        }
    }
}

/// ZF, SF and PF of `r` (PF: even parity of the low byte).
fn result_flags(r: u64, size: u8) -> u64 {
    let sign = 1u64 << (8 * u32::from(size) - 1);
    let mut f = 0;
    if r & mask(size) == 0 {
        f |= ZF;
    }
    if r & sign != 0 {
        f |= SF;
    }
    if (r as u8).count_ones().is_multiple_of(2) {
        f |= PF;
    }
    f
}

fn add_flags(a: u64, b: u64, c: u64, size: u8, rflags: u64) -> (u64, u64) {
    let m = mask(size);
    let sign = 1u64 << (8 * u32::from(size) - 1);
    let wide = u128::from(a) + u128::from(b) + u128::from(c);
    let r = (wide as u64) & m;
    let mut f = result_flags(r, size);
    if wide > u128::from(m) {
        f |= CF;
    }
    if (a ^ r) & (b ^ r) & sign != 0 {
        f |= OF;
    }
    if (a ^ b ^ r) & 0x10 != 0 {
        f |= AF;
    }
    (r, (rflags & !STATUS_FLAGS) | f)
}

fn sub_flags(a: u64, b: u64, c: u64, size: u8, rflags: u64) -> (u64, u64) {
    let m = mask(size);
    let sign = 1u64 << (8 * u32::from(size) - 1);
    let r = a.wrapping_sub(b).wrapping_sub(c) & m;
    let mut f = result_flags(r, size);
    if u128::from(b) + u128::from(c) > u128::from(a) {
        f |= CF;
    }
    if (a ^ b) & (a ^ r) & sign != 0 {
        f |= OF;
    }
    if (a ^ b ^ r) & 0x10 != 0 {
        f |= AF;
    }
    (r, (rflags & !STATUS_FLAGS) | f)
}

/// `and`/`or`/`xor`/`test`: CF = OF = 0, AF undefined (cleared).
fn logic_flags(r: u64, size: u8, rflags: u64) -> (u64, u64) {
    let r = r & mask(size);
    (r, (rflags & !STATUS_FLAGS) | result_flags(r, size))
}

impl Cx {
    fn unsupported(&self) -> EmulateError {
        EmulateError::Unsupported { rip: self.rip, bytes: self.bytes, len: self.len }
    }

    fn not_mmio(&self) -> EmulateError {
        EmulateError::NotMmio { rip: self.rip, gpa: self.gpa, bytes: self.bytes, len: self.len }
    }

    /// RIP after the instruction.
    fn next_rip(&self) -> u64 {
        let ip = self.rip.wrapping_add(self.len as u64) & self.mode.ip_mask();
        (self.rip & !self.mode.ip_mask()) | ip
    }

    /// A segment's base as address formation uses it: 0 for ES, CS, SS, DS
    /// in 64-bit mode (SDM Vol. 3A §3.4.4).
    fn segment_base(&self, run: &VcpuRun, seg: Register) -> Option<u64> {
        let i = match seg {
            Register::ES => 0,
            Register::CS => 1,
            Register::SS => 2,
            Register::DS => 3,
            Register::FS => 4,
            Register::GS => 5,
            _ => return None,
        };
        Some(if self.mode == CpuMode::Long64 && i < 4 { 0 } else { run.segments[i].base })
    }

    /// The linear address of memory operand `op` with the registers in `run`.
    fn linear(&self, run: &VcpuRun, op: u32) -> Option<u64> {
        let va = self.instr.virtual_address(op, 0, |reg, _, _| match reg {
            Register::ES | Register::CS | Register::SS | Register::DS | Register::FS | Register::GS => {
                self.segment_base(run, reg)
            }
            _ => Gpr::from_iced(reg).map(|g| g.get(run)),
        })?;
        Some(va & self.mode.linear_mask())
    }

    /// Instructions with one explicit memory operand.
    fn single(&self, run: &mut VcpuRun, bus: &mut impl MmioBus) -> Result<Done, EmulateError> {
        let instr = &self.instr;
        let mnemonic = instr.mnemonic();
        let mut ops = [Operand::Mem; 2];
        let count = instr.op_count();
        if count == 0 || count > 2 {
            return Err(self.unsupported());
        }
        let mut mem_op = None;
        for i in 0..count {
            ops[i as usize] = match instr.op_kind(i) {
                OpKind::Register => Operand::Reg(Gpr::from_iced(instr.op_register(i)).ok_or_else(|| self.unsupported())?),
                OpKind::Memory if mem_op.is_none() => {
                    mem_op = Some(i);
                    Operand::Mem
                }
                OpKind::Immediate8
                | OpKind::Immediate16
                | OpKind::Immediate32
                | OpKind::Immediate64
                | OpKind::Immediate8to16
                | OpKind::Immediate8to32
                | OpKind::Immediate8to64
                | OpKind::Immediate32to64 => Operand::Imm(instr.immediate(i)),
                _ => return Err(self.unsupported()),
            };
        }
        let ops = &ops[..count as usize];
        let Some(mem_op) = mem_op else { return Err(self.unsupported()) };
        let size = memory_size_bytes(instr.memory_size()).ok_or_else(|| self.unsupported())?;
        let mut linear = self.linear(run, mem_op).ok_or_else(|| self.unsupported())?;

        // `bt* m, r`: the register is a signed bit offset into a bit string
        // starting at the operand (SDM Vol. 2A "BT").
        let bits = 8 * u64::from(size);
        let mut bit = 0;
        if matches!(mnemonic, Mnemonic::Bt | Mnemonic::Bts | Mnemonic::Btr | Mnemonic::Btc) {
            match ops {
                [Operand::Mem, Operand::Reg(r)] => {
                    let offset = sign_extend(r.get(run), r.size) as i64;
                    let unit = offset.div_euclid(bits as i64);
                    linear = linear.wrapping_add((unit * i64::from(size)) as u64) & self.mode.linear_mask();
                    bit = offset.rem_euclid(bits as i64) as u64;
                }
                [Operand::Mem, Operand::Imm(i)] => bit = i % bits,
                _ => return Err(self.unsupported()),
            }
        }
        let at = mmio_address(linear, size, self.gpa).ok_or_else(|| self.not_mmio())?;
        let value = |op: Operand, run: &VcpuRun| match op {
            Operand::Reg(r) => r.get(run),
            Operand::Imm(i) => i & mask(size),
            Operand::Mem => 0,
        };
        let done = |access| Done { mnemonic, access, gpa: at, size, count: 1, finished: true };

        let access = match (mnemonic, ops) {
            (Mnemonic::Mov, [Operand::Mem, src]) => {
                bus.write(at, size, value(*src, run));
                Access::Write
            }
            (Mnemonic::Mov, [Operand::Reg(dst), Operand::Mem]) if dst.size == size => {
                let v = bus.read(at, size);
                dst.set(run, self.mode, v);
                Access::Read
            }
            (Mnemonic::Movzx | Mnemonic::Movsx | Mnemonic::Movsxd, [Operand::Reg(dst), Operand::Mem]) => {
                let v = bus.read(at, size) & mask(size);
                let v = if mnemonic == Mnemonic::Movzx { v } else { sign_extend(v, size) };
                dst.set(run, self.mode, v);
                Access::Read
            }
            (Mnemonic::Xchg, [Operand::Mem, Operand::Reg(r)] | [Operand::Reg(r), Operand::Mem]) if r.size == size => {
                let old = bus.read(at, size);
                bus.write(at, size, r.get(run));
                r.set(run, self.mode, old);
                Access::ReadWrite
            }
            (Mnemonic::Inc | Mnemonic::Dec, [Operand::Mem]) => {
                let old = bus.read(at, size);
                // Like add/sub of 1, but CF is kept.
                let (r, f) = if mnemonic == Mnemonic::Inc {
                    add_flags(old & mask(size), 1, 0, size, run.rflags)
                } else {
                    sub_flags(old & mask(size), 1, 0, size, run.rflags)
                };
                bus.write(at, size, r);
                run.rflags = (f & !CF) | (run.rflags & CF);
                Access::ReadWrite
            }
            (Mnemonic::Neg, [Operand::Mem]) => {
                let old = bus.read(at, size);
                let (r, f) = sub_flags(0, old & mask(size), 0, size, run.rflags);
                bus.write(at, size, r);
                run.rflags = f;
                Access::ReadWrite
            }
            (Mnemonic::Not, [Operand::Mem]) => {
                let old = bus.read(at, size);
                bus.write(at, size, !old & mask(size));
                Access::ReadWrite
            }
            (Mnemonic::Bt | Mnemonic::Bts | Mnemonic::Btr | Mnemonic::Btc, _) => {
                let old = bus.read(at, size);
                let set = old >> bit & 1 != 0;
                run.rflags = (run.rflags & !CF) | u64::from(set);
                let new = match mnemonic {
                    Mnemonic::Bts => Some(old | 1 << bit),
                    Mnemonic::Btr => Some(old & !(1 << bit)),
                    Mnemonic::Btc => Some(old ^ 1 << bit),
                    _ => None,
                };
                match new {
                    Some(new) => {
                        bus.write(at, size, new & mask(size));
                        Access::ReadWrite
                    }
                    None => Access::Read,
                }
            }
            (_, [a, b]) if Alu::from_mnemonic(mnemonic).is_some() => {
                let alu = Alu::from_mnemonic(mnemonic).ok_or_else(|| self.unsupported())?;
                if let [Operand::Reg(r), _] | [_, Operand::Reg(r)] = ops
                    && r.size != size
                {
                    return Err(self.unsupported());
                }
                let mem = bus.read(at, size);
                let fetch = |op: Operand, run: &VcpuRun| if let Operand::Mem = op { mem } else { value(op, run) };
                let (result, flags) = alu.apply(fetch(*a, run), fetch(*b, run), size, run.rflags);
                run.rflags = flags;
                match (alu.writes(), a) {
                    (false, _) => Access::Read,
                    (true, Operand::Mem) => {
                        bus.write(at, size, result);
                        Access::ReadWrite
                    }
                    (true, Operand::Reg(r)) => {
                        r.set(run, self.mode, result);
                        Access::Read
                    }
                    (true, Operand::Imm(_)) => return Err(self.unsupported()),
                }
            }
            _ => return Err(self.unsupported()),
        };
        run.rip = self.next_rip();
        Ok(done(access))
    }

    /// `stos` and `movs`, with or without `rep` (SDM Vol. 2B "REP").
    fn string(&self, run: &mut VcpuRun, mem: &mut impl GuestMemory, bus: &mut impl MmioBus) -> Result<Done, EmulateError> {
        let instr = &self.instr;
        let mnemonic = instr.mnemonic();
        let stos = match mnemonic {
            Mnemonic::Stosb | Mnemonic::Stosw | Mnemonic::Stosd | Mnemonic::Stosq => true,
            Mnemonic::Movsb | Mnemonic::Movsw | Mnemonic::Movsd | Mnemonic::Movsq => false,
            _ => return Err(self.unsupported()),
        };
        let size = memory_size_bytes(instr.memory_size()).ok_or_else(|| self.unsupported())?;
        let addr_size: u8 = match instr.op_kind(0) {
            OpKind::MemoryESDI => 2,
            OpKind::MemoryESEDI => 4,
            _ => 8,
        };
        let amask = mask(addr_size);
        let rep = instr.has_rep_prefix() || instr.has_repne_prefix();
        let total = if rep { run.gprs[RCX] & amask } else { 1 };
        let mut done = Done {
            mnemonic,
            access: if stos { Access::Write } else { Access::Read },
            gpa: self.gpa,
            size,
            count: 0,
            finished: true,
        };
        if total == 0 {
            run.rip = self.next_rip();
            return Ok(done);
        }
        // Operand 0 is ES:rDI (the destination); for movs operand 1 is the
        // source, with its segment override.
        let dst = |run: &VcpuRun| self.linear(run, 0).ok_or_else(|| self.unsupported());
        let src = |run: &VcpuRun| self.linear(run, 1).ok_or_else(|| self.unsupported());
        let mmio_is_dst = stos || self.movs_destination_is_mmio(size, src(run)?, dst(run)?, mem)?;
        let first = if mmio_is_dst { dst(run)? } else { src(run)? };
        let phys0 = mmio_address(first, size, self.gpa).ok_or_else(|| self.not_mmio())?;
        done.gpa = phys0;
        done.access = if mmio_is_dst { Access::Write } else { Access::Read };

        let step = if run.rflags & DF != 0 { (size as u64).wrapping_neg() } else { u64::from(size) };
        let advance = |run: &mut VcpuRun, reg: usize| {
            let next = run.gprs[reg].wrapping_add(step);
            run.gprs[reg] = merge(run.gprs[reg], next, addr_size, self.mode);
        };
        let limit = total.min(REP_LIMIT);
        while done.count < limit {
            let (d, s) = (dst(run)?, if stos { 0 } else { src(run)? });
            let linear = if mmio_is_dst { d } else { s };
            let at = phys0.wrapping_add(linear.wrapping_sub(first));
            let last = at.wrapping_add(u64::from(size) - 1);
            if done.count > 0 && !(same_page(at, phys0) && same_page(last, phys0)) {
                // Past the device page: the guest re-executes the rest
                // itself (it exits again if that is MMIO too).
                break;
            }
            let fault = |fault| EmulateError::Fault { rip: self.rip, fault };
            if stos {
                bus.write(at, size, run.gprs[RAX] & mask(size));
            } else if mmio_is_dst {
                let mut buf = [0u8; 8];
                if let Err(f) = mem.read(s, &mut buf[..size as usize]) {
                    if done.count == 0 {
                        return Err(fault(f));
                    }
                    break;
                }
                bus.write(at, size, u64::from_le_bytes(buf));
            } else {
                let v = bus.read(at, size).to_le_bytes();
                if let Err(f) = mem.write(d, &v[..size as usize]) {
                    if done.count == 0 {
                        return Err(fault(f));
                    }
                    break;
                }
            }
            advance(run, RDI);
            if !stos {
                advance(run, RSI);
            }
            done.count += 1;
        }
        let left = total - done.count;
        if rep {
            run.gprs[RCX] = merge(run.gprs[RCX], left, addr_size, self.mode);
        }
        done.finished = left == 0;
        if done.finished {
            run.rip = self.next_rip();
        }
        Ok(done)
    }

    /// Which side of a `movs` the faulting address belongs to: the one whose
    /// page offset matches, then (both matching) the one the guest's page
    /// tables map to the faulting page, then the one that is not RAM.
    fn movs_destination_is_mmio(
        &self,
        size: u8,
        src: u64,
        dst: u64,
        mem: &mut impl GuestMemory,
    ) -> Result<bool, EmulateError> {
        let mut src_ok = mmio_address(src, size, self.gpa).is_some();
        let mut dst_ok = mmio_address(dst, size, self.gpa).is_some();
        if src_ok && dst_ok {
            let on_page = |p: Option<u64>| p.is_none_or(|p| same_page(p, self.gpa));
            src_ok = on_page(mem.translate(src));
            dst_ok = on_page(mem.translate(dst));
            if src_ok && dst_ok {
                // Still both: probe the source as RAM (reading RAM has no
                // side effects).
                let mut probe = [0u8; 8];
                src_ok = mem.read(src, &mut probe[..size as usize]).is_err();
                dst_ok = !src_ok;
            }
        }
        match (src_ok, dst_ok) {
            (false, true) => Ok(true),
            (true, false) => Ok(false),
            (false, false) => Err(self.not_mmio()),
            (true, true) => Err(self.unsupported()),
        }
    }
}

#[cfg(test)]
mod tests;
