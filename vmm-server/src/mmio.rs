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
//! Every guest memory operand that is not the faulting device access (the
//! RAM half of `movs`, the other page of an access that straddles a page
//! boundary, the buffer of `ins`/`outs` in [`string_io`]) goes through
//! [`GuestMemory`] with the vCPU's paging checks; a refusal comes back as
//! [`EmulateError::Fault`] carrying the exception the guest takes
//! ([`MemFault::exception`]: #PF with its error code and CR2, or #GP).
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

/// How an instruction uses a linear address: decides the paging checks
/// (SDM Vol. 3A §4.6, AMD APM Vol. 2 §5.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessKind {
    Read,
    Write,
    /// An instruction fetch.
    Fetch,
}

/// Why a guest-virtual access failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// The guest's paging refuses the access: the vCPU takes a page fault
    /// (#PF) with this error code and CR2 = the address (SDM Vol. 3A §4.7).
    Page { error_code: u32 },
    /// A non-canonical address: #GP(0) (SDM Vol. 3A §3.3.7.1).
    General,
    /// The guest may access it, but it lands on guest-physical memory that
    /// is not RAM (another device: the VMM refuses, it does not guess).
    NotRam { gpa: u64 },
}

/// A guest-virtual access that does not reach guest RAM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemFault {
    /// The first guest-virtual (linear) address that failed.
    pub gva: u64,
    pub kind: FaultKind,
}

impl MemFault {
    /// What the vCPU takes for this fault, in the run page's `inject`
    /// encoding, and the CR2 that goes with it; `None` for a fault the
    /// guest cannot be told about (not RAM).
    pub fn exception(&self) -> Option<(u64, Option<u64>)> {
        const VALID: u64 = 1 << 31;
        const EXCEPTION: u64 = 3 << 8;
        const ERROR_VALID: u64 = 1 << 11;
        match self.kind {
            FaultKind::Page { error_code } => {
                Some((VALID | EXCEPTION | ERROR_VALID | 14 | u64::from(error_code) << 32, Some(self.gva)))
            }
            FaultKind::General => Some((VALID | EXCEPTION | ERROR_VALID | 13, None)),
            FaultKind::NotRam { .. } => None,
        }
    }
}

/// Guest RAM as the vCPU sees it: linear addresses, translated through the
/// guest's page tables by the implementation with the vCPU's permission
/// checks (CPL, U/S, R/W with CR0.WP, NX, SMEP, SMAP).
pub trait GuestMemory {
    /// A data read at `gva`: as [`GuestMemory::check`] with
    /// [`AccessKind::Read`] for every page it touches, then the copy.
    fn read(&mut self, gva: u64, buf: &mut [u8]) -> Result<(), MemFault>;
    /// A data write: every page is checked before any byte is written.
    fn write(&mut self, gva: u64, data: &[u8]) -> Result<(), MemFault>;
    /// An instruction fetch (execute permission).
    fn fetch(&mut self, gva: u64, buf: &mut [u8]) -> Result<(), MemFault>;
    /// Whether the vCPU may make an access of `kind` at `gva`, and the
    /// guest-physical address it reaches (RAM or not).
    fn check(&mut self, gva: u64, kind: AccessKind) -> Result<u64, MemFault>;
    /// The guest-physical address of `gva`, if the implementation can tell,
    /// whatever the permissions. Only used to decide which side of a `movs`
    /// is the MMIO one when the page offsets alone cannot (both sides at the
    /// same offset); `None` means "unknown".
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
        if mem.fetch(at, &mut bytes[got..got + n]).is_err() {
            // The implementation may fault at a finer grain: go byte-wise.
            let mut byte = [0u8];
            if let Err(fault) = mem.fetch(at, &mut byte) {
                if got == 0 {
                    return Err(fault);
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
    /// The guest memory side of the instruction (the RAM half of `movs`,
    /// `ins`/`outs`'s buffer, the other page of a split access) faulted:
    /// the VMM injects the exception [`MemFault::exception`] names, or, for
    /// memory that is not RAM, refuses.
    Fault { rip: u64, fault: MemFault },
    /// A port I/O exit whose instruction at RIP is not the `ins`/`outs`
    /// the hardware reported (the code changed under us).
    NotPortIo { rip: u64, port: u16, bytes: [u8; MAX_INSN_LEN], len: usize },
    /// An access that straddles a page boundary with a device on both
    /// sides (not emulated: which device gets which bytes is not defined).
    Straddle { rip: u64, gva: u64, gpa: u64 },
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
            EmulateError::Fault { rip, fault } => match fault.kind {
                FaultKind::NotRam { gpa } => write!(
                    f,
                    "the instruction at rip {rip:#x} reaches {:#x} (guest-physical {gpa:#x}), which is not RAM",
                    fault.gva
                ),
                FaultKind::Page { error_code } => {
                    write!(f, "the instruction at rip {rip:#x} page-faults at {:#x} (error code {error_code:#x})", fault.gva)
                }
                FaultKind::General => {
                    write!(f, "the instruction at rip {rip:#x} uses the non-canonical address {:#x}", fault.gva)
                }
            },
            EmulateError::NotPortIo { rip, port, ref bytes, len } => write!(
                f,
                "the instruction at rip {rip:#x} ({}) is not the string I/O to port {port:#x} that exited",
                Hex(&bytes[..len.min(MAX_INSN_LEN)])
            ),
            EmulateError::Straddle { rip, gva, gpa } => write!(
                f,
                "the instruction at rip {rip:#x} straddles a page boundary into {gva:#x} (guest-physical {gpa:#x}), another device page"
            ),
        }
    }
}

/// Decodes the instruction at the vCPU's RIP from `bytes` (at most
/// `MAX_INSN_LEN` of them) in its current mode, with what an error report
/// shows of it.
fn decode(bytes: &[u8], run: &VcpuRun, gpa: u64) -> Cx {
    let mode = cpu_mode(run);
    let bytes = &bytes[..bytes.len().min(MAX_INSN_LEN)];
    let mut decoder = Decoder::with_ip(mode.bitness(), bytes, run.rip & mode.ip_mask(), DecoderOptions::NONE);
    let instr = decoder.decode();
    let mut shown = [0u8; MAX_INSN_LEN];
    let len = if instr.is_invalid() { bytes.len() } else { instr.len() };
    shown[..len].copy_from_slice(&bytes[..len]);
    Cx { mode, instr, gpa, rip: run.rip, bytes: shown, len }
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
    let cx = decode(bytes, run, gpa);
    let instr = cx.instr;
    if instr.is_invalid() {
        return Err(cx.unsupported());
    }
    match instr.op_kind(0) {
        OpKind::MemoryESDI | OpKind::MemoryESEDI | OpKind::MemoryESRDI => cx.string(run, mem, bus),
        _ => cx.single(run, mem, bus),
    }
}

/// The I/O-port side of `ins`/`outs`: accesses of 1, 2 or 4 bytes.
pub trait PortBus {
    fn read(&mut self, port: u16, size: u8) -> u32;
    fn write(&mut self, port: u16, size: u8, value: u32);
}

/// A string port I/O exit as the hardware reported it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortExit {
    pub port: u16,
    /// 1, 2 or 4.
    pub size: u8,
    /// `outs` (memory to port); `ins` otherwise.
    pub write: bool,
    pub rep: bool,
}

/// What [`string_io`] carried out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortDone {
    /// Elements transferred.
    pub count: u64,
    /// RIP moved past the instruction (false: a `rep` with iterations
    /// left; the guest re-executes it and exits again, as under KVM).
    pub finished: bool,
}

/// Emulates the `ins`/`outs` in `bytes` (from [`fetch`]) at `run.rip` for
/// the port I/O exit `exit`: at most [`REP_LIMIT`] elements, each between
/// the port and guest memory at ES:rDI (`ins`) or seg:rSI (`outs`, with
/// its segment override). Addresses and counts are as wide as the
/// instruction's address size (16, 32 or 64 bits: RCX/RSI/RDI wrap there
/// and their upper bits stay, or clear for 32 bits in 64-bit mode); in
/// 64-bit mode only FS and GS bases apply (SDM Vol. 3A §3.4.4). RIP moves
/// on only when the count reaches 0 (SDM Vol. 2B "REP"). A guest memory
/// fault ends the instruction where it happened, as the hardware does:
/// the registers count the elements done and the error names the fault
/// for the VMM to inject (#PF with its error code and CR2); for `ins` the
/// buffer is checked before the port is read, so no input is lost.
pub fn string_io(
    bytes: &[u8],
    run: &mut VcpuRun,
    exit: PortExit,
    mem: &mut impl GuestMemory,
    ports: &mut impl PortBus,
) -> Result<PortDone, EmulateError> {
    let cx = decode(bytes, run, 0);
    let (mode, instr, shown, len) = (cx.mode, cx.instr, cx.bytes, cx.len);
    let mismatch = || EmulateError::NotPortIo { rip: run.rip, port: exit.port, bytes: shown, len };
    let (write, size) = match instr.mnemonic() {
        Mnemonic::Insb => (false, 1),
        Mnemonic::Insw => (false, 2),
        Mnemonic::Insd => (false, 4),
        Mnemonic::Outsb => (true, 1),
        Mnemonic::Outsw => (true, 2),
        Mnemonic::Outsd => (true, 4),
        _ => return Err(mismatch()),
    };
    let rep = instr.has_rep_prefix() || instr.has_repne_prefix();
    if instr.is_invalid() || write != exit.write || size != exit.size || rep != exit.rep {
        return Err(mismatch());
    }
    let (op, reg) = if write { (1, RSI) } else { (0, RDI) };
    let addr_size: u8 = match instr.op_kind(op) {
        OpKind::MemoryESDI | OpKind::MemorySegSI => 2,
        OpKind::MemoryESEDI | OpKind::MemorySegESI => 4,
        OpKind::MemoryESRDI | OpKind::MemorySegRSI => 8,
        _ => return Err(mismatch()),
    };
    let total = if rep { run.gprs[RCX] & mask(addr_size) } else { 1 };
    let step = if run.rflags & DF != 0 { u64::from(size).wrapping_neg() } else { u64::from(size) };
    let mut count = 0;
    let mut fault = None;
    while count < total.min(REP_LIMIT) {
        let va = cx.linear(run, op).ok_or_else(|| cx.unsupported())?;
        let mut buf = [0u8; 4];
        let b = &mut buf[..usize::from(size)];
        let r = if write {
            mem.read(va, b).map(|()| ports.write(exit.port, size, u32::from_le_bytes(buf)))
        } else {
            check_range(mem, va, size, AccessKind::Write, mode).and_then(|()| {
                b.copy_from_slice(&ports.read(exit.port, size).to_le_bytes()[..usize::from(size)]);
                mem.write(va, b)
            })
        };
        if let Err(f) = r {
            fault = Some(f);
            break;
        }
        let next = run.gprs[reg].wrapping_add(step);
        run.gprs[reg] = merge(run.gprs[reg], next, addr_size, mode);
        count += 1;
    }
    let left = total - count;
    if rep {
        run.gprs[RCX] = merge(run.gprs[RCX], left, addr_size, mode);
    }
    if let Some(fault) = fault {
        return Err(EmulateError::Fault { rip: run.rip, fault });
    }
    let finished = left == 0;
    if finished {
        run.rip = cx.next_rip();
    }
    Ok(PortDone { count, finished })
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

/// Whether the vCPU may make an access of `kind` to all `len` bytes at
/// `gva` (both pages where they straddle a boundary).
fn check_range(mem: &mut impl GuestMemory, gva: u64, len: u8, kind: AccessKind, mode: CpuMode) -> Result<(), MemFault> {
    mem.check(gva, kind)?;
    let last = gva.wrapping_add(u64::from(len.max(1)) - 1) & mode.linear_mask();
    if !same_page(gva, last) {
        mem.check(last & !PAGE_OFFSET_MASK, kind)?;
    }
    Ok(())
}

fn same_page(a: u64, b: u64) -> bool {
    a >> PAGE_SHIFT == b >> PAGE_SHIFT
}

/// A memory operand's bytes: `dev_len` of them from byte `dev_at` on the
/// device at `dev_gpa`, the rest (`ram`: linear address, offset in the
/// operand, length) in guest RAM on the next or previous page.
#[derive(Clone, Copy)]
struct Target {
    dev_gpa: u64,
    dev_at: u8,
    dev_len: u8,
    ram: Option<(u64, u8, u8)>,
}

impl Target {
    /// Reads the operand: the RAM part first, so a refusal leaves the
    /// device untouched.
    fn read(&self, bus: &mut impl MmioBus, mem: &mut impl GuestMemory) -> Result<u64, MemFault> {
        let mut bytes = [0u8; 8];
        if let Some((gva, at, len)) = self.ram {
            mem.read(gva, &mut bytes[usize::from(at)..usize::from(at + len)])?;
        }
        let d = bus_read(bus, self.dev_gpa, self.dev_len).to_le_bytes();
        let at = usize::from(self.dev_at);
        bytes[at..at + usize::from(self.dev_len)].copy_from_slice(&d[..usize::from(self.dev_len)]);
        Ok(u64::from_le_bytes(bytes))
    }

    /// Writes the operand (the low bytes of `value`), RAM part first.
    fn write(&self, bus: &mut impl MmioBus, mem: &mut impl GuestMemory, value: u64) -> Result<(), MemFault> {
        let bytes = value.to_le_bytes();
        if let Some((gva, at, len)) = self.ram {
            mem.write(gva, &bytes[usize::from(at)..usize::from(at + len)])?;
        }
        let at = usize::from(self.dev_at);
        let mut d = [0u8; 8];
        d[..usize::from(self.dev_len)].copy_from_slice(&bytes[at..at + usize::from(self.dev_len)]);
        bus_write(bus, self.dev_gpa, self.dev_len, u64::from_le_bytes(d));
        Ok(())
    }
}

/// The device accesses for `len` (1 to 8) bytes at `gpa`: one of 1, 2, 4 or
/// 8 bytes where `len` is one of those, otherwise the largest naturally
/// aligned pieces that fit (the part of a split access on one page).
fn bus_pieces(gpa: u64, len: u8, mut f: impl FnMut(u64, u8, u32)) {
    if matches!(len, 1 | 2 | 4 | 8) {
        return f(gpa, len, 0);
    }
    let mut done = 0u8;
    while done < len {
        let at = gpa.wrapping_add(u64::from(done));
        let n = [8u8, 4, 2, 1].into_iter().find(|&n| n <= len - done && at % u64::from(n) == 0).unwrap_or(1);
        f(at, n, 8 * u32::from(done));
        done += n;
    }
}

fn bus_read(bus: &mut impl MmioBus, gpa: u64, len: u8) -> u64 {
    let mut v = 0;
    bus_pieces(gpa, len, |at, n, shift| v |= (bus.read(at, n) & mask(n)) << shift);
    v
}

fn bus_write(bus: &mut impl MmioBus, gpa: u64, len: u8, value: u64) {
    bus_pieces(gpa, len, |at, n, shift| bus.write(at, n, (value >> shift) & mask(n)));
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

    /// Where the `size` bytes at `linear` go, the access having exited at
    /// `self.gpa`: all on the device page, or (an access that straddles a
    /// page boundary) split between the device and the other page, which
    /// is translated on its own with the vCPU's checks for `kind` (a
    /// refusal is the guest's page fault) and must be RAM: a device on both
    /// sides is refused, never guessed at.
    fn locate(&self, linear: u64, size: u8, kind: AccessKind, mem: &mut impl GuestMemory) -> Result<Target, EmulateError> {
        // `gpa` is byte `k` of the access (page offsets agree between
        // linear and physical addresses).
        let k = (self.gpa & PAGE_OFFSET_MASK).wrapping_sub(linear & PAGE_OFFSET_MASK) & PAGE_OFFSET_MASK;
        if k >= u64::from(size) {
            return Err(self.not_mmio());
        }
        let first_len = (PAGE_OFFSET_MASK + 1 - (linear & PAGE_OFFSET_MASK)).min(u64::from(size)) as u8;
        if first_len == size {
            return Ok(Target { dev_gpa: self.gpa - k, dev_at: 0, dev_len: size, ram: None });
        }
        let second = linear.wrapping_add(u64::from(first_len)) & self.mode.linear_mask();
        let (dev_gpa, dev_at, dev_len, other) = if k < u64::from(first_len) {
            (self.gpa - k, 0, first_len, (second, first_len, size - first_len))
        } else {
            (self.gpa - (k - u64::from(first_len)), first_len, size - first_len, (linear, 0, first_len))
        };
        let other_gpa = mem.check(other.0, kind).map_err(|fault| EmulateError::Fault { rip: self.rip, fault })?;
        if same_page(other_gpa, dev_gpa) {
            return Err(EmulateError::Straddle { rip: self.rip, gva: other.0, gpa: other_gpa });
        }
        Ok(Target { dev_gpa, dev_at, dev_len, ram: Some(other) })
    }

    /// Instructions with one explicit memory operand.
    fn single(&self, run: &mut VcpuRun, mem: &mut impl GuestMemory, bus: &mut impl MmioBus) -> Result<Done, EmulateError> {
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
        // Whether the instruction writes its memory operand (for the
        // paging checks of a part that is not on the device page).
        let writes = match (mnemonic, ops) {
            (Mnemonic::Mov, [Operand::Mem, _]) => true,
            (Mnemonic::Bts | Mnemonic::Btr | Mnemonic::Btc | Mnemonic::Xchg, _) => true,
            (Mnemonic::Inc | Mnemonic::Dec | Mnemonic::Neg | Mnemonic::Not, _) => true,
            (_, [Operand::Mem, _]) => Alu::from_mnemonic(mnemonic).is_some_and(Alu::writes),
            _ => false,
        };
        let kind = if writes { AccessKind::Write } else { AccessKind::Read };
        let t = self.locate(linear, size, kind, mem)?;
        let at = t.dev_gpa;
        let fault = |fault| EmulateError::Fault { rip: self.rip, fault };
        let rd = |bus: &mut _, mem: &mut _| t.read(bus, mem).map_err(fault);
        let wr = |bus: &mut _, mem: &mut _, v| t.write(bus, mem, v).map_err(fault);
        let value = |op: Operand, run: &VcpuRun| match op {
            Operand::Reg(r) => r.get(run),
            Operand::Imm(i) => i & mask(size),
            Operand::Mem => 0,
        };
        let done = |access| Done { mnemonic, access, gpa: at, size, count: 1, finished: true };

        let access = match (mnemonic, ops) {
            (Mnemonic::Mov, [Operand::Mem, src]) => {
                wr(bus, mem, value(*src, run))?;
                Access::Write
            }
            (Mnemonic::Mov, [Operand::Reg(dst), Operand::Mem]) if dst.size == size => {
                let v = rd(bus, mem)?;
                dst.set(run, self.mode, v);
                Access::Read
            }
            (Mnemonic::Movzx | Mnemonic::Movsx | Mnemonic::Movsxd, [Operand::Reg(dst), Operand::Mem]) => {
                let v = rd(bus, mem)? & mask(size);
                let v = if mnemonic == Mnemonic::Movzx { v } else { sign_extend(v, size) };
                dst.set(run, self.mode, v);
                Access::Read
            }
            (Mnemonic::Xchg, [Operand::Mem, Operand::Reg(r)] | [Operand::Reg(r), Operand::Mem]) if r.size == size => {
                let old = rd(bus, mem)?;
                wr(bus, mem, r.get(run))?;
                r.set(run, self.mode, old);
                Access::ReadWrite
            }
            (Mnemonic::Inc | Mnemonic::Dec, [Operand::Mem]) => {
                let old = rd(bus, mem)?;
                // Like add/sub of 1, but CF is kept.
                let (r, f) = if mnemonic == Mnemonic::Inc {
                    add_flags(old & mask(size), 1, 0, size, run.rflags)
                } else {
                    sub_flags(old & mask(size), 1, 0, size, run.rflags)
                };
                wr(bus, mem, r)?;
                run.rflags = (f & !CF) | (run.rflags & CF);
                Access::ReadWrite
            }
            (Mnemonic::Neg, [Operand::Mem]) => {
                let old = rd(bus, mem)?;
                let (r, f) = sub_flags(0, old & mask(size), 0, size, run.rflags);
                wr(bus, mem, r)?;
                run.rflags = f;
                Access::ReadWrite
            }
            (Mnemonic::Not, [Operand::Mem]) => {
                let old = rd(bus, mem)?;
                wr(bus, mem, !old & mask(size))?;
                Access::ReadWrite
            }
            (Mnemonic::Bt | Mnemonic::Bts | Mnemonic::Btr | Mnemonic::Btc, _) => {
                let old = rd(bus, mem)?;
                let set = old >> bit & 1 != 0;
                let new = match mnemonic {
                    Mnemonic::Bts => Some(old | 1 << bit),
                    Mnemonic::Btr => Some(old & !(1 << bit)),
                    Mnemonic::Btc => Some(old ^ 1 << bit),
                    _ => None,
                };
                let access = match new {
                    Some(new) => {
                        wr(bus, mem, new & mask(size))?;
                        Access::ReadWrite
                    }
                    None => Access::Read,
                };
                run.rflags = (run.rflags & !CF) | u64::from(set);
                access
            }
            (_, [a, b]) if Alu::from_mnemonic(mnemonic).is_some() => {
                let alu = Alu::from_mnemonic(mnemonic).ok_or_else(|| self.unsupported())?;
                if let [Operand::Reg(r), _] | [_, Operand::Reg(r)] = ops
                    && r.size != size
                {
                    return Err(self.unsupported());
                }
                let m = rd(bus, mem)?;
                let fetch = |op: Operand, run: &VcpuRun| if let Operand::Mem = op { m } else { value(op, run) };
                let (result, flags) = alu.apply(fetch(*a, run), fetch(*b, run), size, run.rflags);
                let access = match (alu.writes(), a) {
                    (false, _) => Access::Read,
                    (true, Operand::Mem) => {
                        wr(bus, mem, result)?;
                        Access::ReadWrite
                    }
                    (true, Operand::Reg(r)) => {
                        r.set(run, self.mode, result);
                        Access::Read
                    }
                    (true, Operand::Imm(_)) => return Err(self.unsupported()),
                };
                run.rflags = flags;
                access
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
        let kind = if mmio_is_dst { AccessKind::Write } else { AccessKind::Read };
        // The first element is where the exit was; it may straddle a page
        // boundary (then it is the only one done here).
        let t0 = self.locate(first, size, kind, mem)?;
        let phys0 = t0.dev_gpa;
        done.gpa = phys0;
        done.access = if mmio_is_dst { Access::Write } else { Access::Read };

        let step = if run.rflags & DF != 0 { (size as u64).wrapping_neg() } else { u64::from(size) };
        let advance = |run: &mut VcpuRun, reg: usize| {
            let next = run.gprs[reg].wrapping_add(step);
            run.gprs[reg] = merge(run.gprs[reg], next, addr_size, self.mode);
        };
        let limit = if t0.ram.is_some() { 1 } else { total.min(REP_LIMIT) };
        while done.count < limit {
            let (d, s) = (dst(run)?, if stos { 0 } else { src(run)? });
            let linear = if mmio_is_dst { d } else { s };
            let t = if done.count == 0 {
                t0
            } else {
                let at = phys0.wrapping_add(linear.wrapping_sub(first));
                let last = at.wrapping_add(u64::from(size) - 1);
                if !(same_page(at, phys0) && same_page(last, phys0)) {
                    // Past the device page: the guest re-executes the rest
                    // itself (it exits again if that is MMIO too).
                    break;
                }
                Target { dev_gpa: at, dev_at: 0, dev_len: size, ram: None }
            };
            // A fault on the RAM side: on the first element it is the
            // guest's (RIP stays, the registers count the elements done);
            // later, the guest re-executes and faults there itself.
            let fault = |fault| EmulateError::Fault { rip: self.rip, fault };
            let r = if stos {
                t.write(bus, mem, run.gprs[RAX] & mask(size))
            } else if mmio_is_dst {
                let mut buf = [0u8; 8];
                mem.read(s, &mut buf[..size as usize]).and_then(|()| t.write(bus, mem, u64::from_le_bytes(buf)))
            } else {
                // May the guest write the destination? Asked before the
                // device is read, so a refusal loses nothing.
                check_range(mem, d, size, AccessKind::Write, self.mode)
                    .and_then(|()| t.read(bus, mem))
                    .and_then(|v| mem.write(d, &v.to_le_bytes()[..size as usize]))
            };
            if let Err(f) = r {
                if done.count == 0 {
                    return Err(fault(f));
                }
                break;
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
            let (src_t, dst_t) = (mem.translate(src), mem.translate(dst));
            src_ok = on_page(src_t);
            dst_ok = on_page(dst_t);
            // A side known to map to the page beats one that is unknown.
            if src_ok && dst_ok && src_t.is_some() != dst_t.is_some() {
                src_ok = src_t.is_some();
                dst_ok = dst_t.is_some();
            }
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
