//! Just enough x86 instruction decoding for the kernel's own emulated MMIO:
//! the local APIC page, which guests touch only with 32-bit `mov` (SDM Vol.
//! 3A §12.4.1 requires aligned 32-bit accesses). Anything else is left to the
//! VMM's full decoder (iced-x86), which sees the exit with the bytes.
//! Also the guest page-table walk the kernel needs to fetch those bytes.

/// A decoded `mov` between a 32-bit register (or an immediate) and memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MovAccess {
    /// Store to memory (`89 /r`, `C7 /0`) or load from it (`8B /r`).
    pub write: bool,
    /// The register operand (0 = RAX … 15 = R15); `None` for an immediate.
    pub reg: Option<u8>,
    pub imm: u32,
    /// Instruction length in bytes.
    pub len: u8,
}

/// Decodes `mov r32, m32` / `mov m32, r32` / `mov m32, imm32` in 64-bit or
/// 32-bit code (no operand-size or address-size prefixes, optional REX).
pub fn decode_mov32(bytes: &[u8], long_mode: bool) -> Option<MovAccess> {
    let mut i = 0;
    let mut rex = 0u8;
    // Segment overrides are harmless for a flat APIC access; skip them.
    while let Some(&b) = bytes.get(i) {
        match b {
            0x26 | 0x2e | 0x36 | 0x3e | 0x64 | 0x65 => i += 1,
            _ => break,
        }
    }
    if long_mode
        && let Some(&b) = bytes.get(i)
            && b & 0xf0 == 0x40 {
                rex = b;
                i += 1;
            }
    if rex & 0x08 != 0 {
        return None; // REX.W: a 64-bit access, not an APIC register's
    }
    let op = *bytes.get(i)?;
    i += 1;
    let modrm = *bytes.get(i)?;
    i += 1;
    let mode = modrm >> 6;
    let reg = ((modrm >> 3) & 7) | ((rex & 4) << 1);
    let rm = modrm & 7;
    if mode == 3 {
        return None; // register to register: not a memory access
    }
    // SIB and displacement lengths (32/64-bit addressing).
    let mut disp = 0usize;
    if rm == 4 {
        let sib = *bytes.get(i)?;
        i += 1;
        if mode == 0 && sib & 7 == 5 {
            disp = 4;
        }
    } else if mode == 0 && rm == 5 {
        disp = 4; // RIP-relative (64-bit) or absolute disp32 (32-bit)
    }
    disp = match mode {
        1 => 1,
        2 => 4,
        _ => disp,
    };
    i += disp;
    if bytes.len() < i {
        return None;
    }
    let access = match op {
        0x89 => MovAccess { write: true, reg: Some(reg), imm: 0, len: 0 },
        0x8b => MovAccess { write: false, reg: Some(reg), imm: 0, len: 0 },
        0xc7 if (modrm >> 3) & 7 == 0 => {
            let imm = u32::from_le_bytes(bytes.get(i..i + 4)?.try_into().ok()?);
            i += 4;
            MovAccess { write: true, reg: None, imm, len: 0 }
        }
        _ => return None,
    };
    Some(MovAccess { len: i as u8, ..access })
}

/// A decoded `mov cr8, reg`: the source register (0 = RAX … 15 = R15) and
/// the instruction's length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MovToCr8 {
    pub reg: u8,
    pub len: u8,
}

/// Decodes a write of CR8: `REX.R 0F 22 /r` with ModRM.reg 0 (64-bit
/// code), or AMD's `F0 0F 22 /r` (LOCK MOV CR0 names CR8, any mode; APM
/// Vol. 3 "MOV CRn"). ModRM.mod is ignored (the operand is always a
/// register). Other prefixes or another control register: `None`.
pub fn decode_mov_to_cr8(bytes: &[u8], long_mode: bool) -> Option<MovToCr8> {
    let mut i = 0;
    let mut lock = false;
    // Operand-size and segment prefixes do not change MOV CRn; LOCK is
    // AMD's CR8 selector.
    while let Some(&b) = bytes.get(i) {
        match b {
            0xf0 => lock = true,
            0x66 | 0x26 | 0x2e | 0x36 | 0x3e | 0x64 | 0x65 => {}
            _ => break,
        }
        i += 1;
        if i >= 14 {
            return None;
        }
    }
    let mut rex = 0u8;
    if long_mode
        && let Some(&b) = bytes.get(i)
        && b & 0xf0 == 0x40
    {
        rex = b;
        i += 1;
    }
    if bytes.get(i..i + 2)? != [0x0f, 0x22] {
        return None;
    }
    let modrm = *bytes.get(i + 2)?;
    let cr = ((modrm >> 3) & 7) | ((rex & 4) << 1) | if lock { 8 } else { 0 };
    if cr != 8 || (lock && rex & 4 != 0) {
        return None;
    }
    let reg = (modrm & 7) | ((rex & 1) << 3);
    Some(MovToCr8 { reg, len: (i + 3) as u8 })
}

/// Walks a guest's 4-level page tables (long mode), or returns the address
/// unchanged when paging is off; `read_phys(gpa)` reads a table entry.
/// 32-bit paging modes (non-PAE, PAE) are walked too.
pub fn guest_translate(
    cr0: u64,
    cr3: u64,
    cr4: u64,
    efer: u64,
    va: u64,
    mut read_phys: impl FnMut(u64) -> Option<u64>,
) -> Option<u64> {
    const PG: u64 = 1 << 31;
    const PAE: u64 = 1 << 5;
    const LMA: u64 = 1 << 10;
    const PSE: u64 = 1 << 4;
    if cr0 & PG == 0 {
        return Some(va);
    }
    let addr_mask = 0x000f_ffff_ffff_f000;
    if efer & LMA != 0 || cr4 & PAE != 0 {
        let levels = if efer & LMA != 0 { 4 } else { 3 };
        let mut table = if levels == 4 { cr3 & addr_mask } else { cr3 & 0xffff_ffe0 };
        for level in (1..=levels).rev() {
            let idx = if levels == 3 && level == 3 { (va >> 30) & 3 } else { (va >> (12 + 9 * (level - 1))) & 0x1ff };
            let e = read_phys(table + idx * 8)?;
            if e & 1 == 0 {
                return None;
            }
            let addr = e & addr_mask;
            if level == 1 {
                return Some(addr | (va & 0xfff));
            }
            if (level == 2 || level == 3) && e & 0x80 != 0 && !(levels == 3 && level == 3) {
                let size = 1u64 << (12 + 9 * (level - 1));
                return Some((addr & !(size - 1)) | (va & (size - 1)));
            }
            table = addr;
        }
        None
    } else {
        // 32-bit paging: 4-byte entries.
        let va = va & 0xffff_ffff;
        let pde = read_phys((cr3 & 0xffff_f000) + ((va >> 22) & 0x3ff) * 4)? & 0xffff_ffff;
        if pde & 1 == 0 {
            return None;
        }
        if pde & 0x80 != 0 && cr4 & PSE != 0 {
            return Some((pde & 0xffc0_0000) | (va & 0x3f_ffff));
        }
        let pte = read_phys((pde & 0xffff_f000) + ((va >> 12) & 0x3ff) * 4)? & 0xffff_ffff;
        if pte & 1 == 0 {
            return None;
        }
        Some((pte & 0xffff_f000) | (va & 0xfff))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    extern crate std;
    use std::collections::BTreeMap;

    #[test]
    fn decodes_the_apic_access_forms() {
        // mov eax, [rbx+0x300]
        assert_eq!(
            decode_mov32(&[0x8b, 0x83, 0x00, 0x03, 0, 0], true),
            Some(MovAccess { write: false, reg: Some(0), imm: 0, len: 6 })
        );
        // mov [rdi+0xb0], r9d (REX.R)
        assert_eq!(
            decode_mov32(&[0x44, 0x89, 0x8f, 0xb0, 0, 0, 0], true),
            Some(MovAccess { write: true, reg: Some(9), imm: 0, len: 7 })
        );
        // mov dword [0xfee000b0], 0 (32-bit absolute)
        assert_eq!(
            decode_mov32(&[0xc7, 0x05, 0xb0, 0x00, 0xe0, 0xfe, 0, 0, 0, 0], false),
            Some(MovAccess { write: true, reg: None, imm: 0, len: 10 })
        );
        // mov ecx, [rax] ; mov [rsp+8], edx (SIB + disp8)
        assert_eq!(decode_mov32(&[0x8b, 0x08], true), Some(MovAccess { write: false, reg: Some(1), imm: 0, len: 2 }));
        assert_eq!(
            decode_mov32(&[0x89, 0x54, 0x24, 0x08], true),
            Some(MovAccess { write: true, reg: Some(2), imm: 0, len: 4 })
        );
        // Not handled: 64-bit, register forms, other opcodes, truncation.
        assert_eq!(decode_mov32(&[0x48, 0x8b, 0x00], true), None);
        assert_eq!(decode_mov32(&[0x89, 0xc0], true), None);
        assert_eq!(decode_mov32(&[0x0f, 0xb6, 0x00], true), None);
        assert_eq!(decode_mov32(&[0xc7, 0x00, 1, 2], true), None);
        assert_eq!(decode_mov32(&[], true), None);
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..100_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let b = x.to_le_bytes();
            let n = (x >> 60) as usize % 9;
            let _ = decode_mov32(&b[..n], x & 1 == 0);
        }
    }

    #[test]
    fn walks_long_mode_tables() {
        let mut mem = BTreeMap::new();
        // PML4 at 0x1000 -> PDPT 0x2000 -> PD 0x3000 (2 MiB page at 0x40_0000 for va 0x20_0000)
        mem.insert(0x1000, 0x2003u64);
        mem.insert(0x2000, 0x3003u64);
        mem.insert(0x3000 + 8, 0x40_0083u64);
        // and a 4 KiB mapping for va 0 through PT 0x4000
        mem.insert(0x3000, 0x4003u64);
        mem.insert(0x4000 + 8 * 5, 0x7000_0003u64);
        let read = |a: u64| mem.get(&a).copied().or(Some(0));
        let (cr0, cr4, efer) = (1 << 31 | 1, 1 << 5, 1 << 10 | 1 << 8);
        assert_eq!(guest_translate(cr0, 0x1000, cr4, efer, 0x20_1234, read), Some(0x40_1234));
        assert_eq!(guest_translate(cr0, 0x1000, cr4, efer, 0x5abc, read), Some(0x7000_0abc));
        assert_eq!(guest_translate(cr0, 0x1000, cr4, efer, 0x8000_0000, read), None);
        assert_eq!(guest_translate(0, 0x1000, 0, 0, 0x1234, read), Some(0x1234));
    }

    #[test]
    fn mov_to_cr8_is_decoded_in_both_encodings() {
        // mov cr8, rax / mov cr8, rcx / mov cr8, r9
        assert_eq!(decode_mov_to_cr8(&[0x44, 0x0f, 0x22, 0xc0], true), Some(MovToCr8 { reg: 0, len: 4 }));
        assert_eq!(decode_mov_to_cr8(&[0x44, 0x0f, 0x22, 0xc1, 0x90], true), Some(MovToCr8 { reg: 1, len: 4 }));
        assert_eq!(decode_mov_to_cr8(&[0x45, 0x0f, 0x22, 0xc1], true), Some(MovToCr8 { reg: 9, len: 4 }));
        // REX.W does not matter; ModRM.mod is ignored.
        assert_eq!(decode_mov_to_cr8(&[0x4c, 0x0f, 0x22, 0x02], true), Some(MovToCr8 { reg: 2, len: 4 }));
        // lock mov cr0, eax = mov cr8, eax (32-bit code too).
        assert_eq!(decode_mov_to_cr8(&[0xf0, 0x0f, 0x22, 0xc0], false), Some(MovToCr8 { reg: 0, len: 4 }));
        assert_eq!(decode_mov_to_cr8(&[0xf0, 0x41, 0x0f, 0x22, 0xc3], true), Some(MovToCr8 { reg: 11, len: 5 }));
        // Other control registers, a REX outside long mode, truncated bytes.
        assert_eq!(decode_mov_to_cr8(&[0x0f, 0x22, 0xc0], true), None, "cr0");
        assert_eq!(decode_mov_to_cr8(&[0x0f, 0x22, 0xd8], true), None, "cr3");
        assert_eq!(decode_mov_to_cr8(&[0x44, 0x0f, 0x22, 0xd8], true), None, "cr11");
        assert_eq!(decode_mov_to_cr8(&[0x44, 0x0f, 0x22, 0xc0], false), None, "inc esp; mov cr0");
        assert_eq!(decode_mov_to_cr8(&[0x44, 0x0f, 0x22], true), None);
        assert_eq!(decode_mov_to_cr8(&[0x44, 0x0f, 0x20, 0xc0], true), None, "a read");
        assert_eq!(decode_mov_to_cr8(&[0xf0; 15], true), None);
    }
}
