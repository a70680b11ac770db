//! A small AML encoder: just the terms the VMM's DSDT needs (ACPI 6.5
//! §20.2 "AML Grammar Definition", resource descriptors from §6.4).
//!
//! Every builder returns the encoded bytes; objects nest by passing one's
//! bytes into another's body. Names are 4-byte segments given as byte
//! strings (`b"_S5_"`), short names padded with `_` as the grammar wants.

use alloc::vec;
use alloc::vec::Vec;

// Opcodes (§20.2.5 ff.).
const ZERO_OP: u8 = 0x00;
const ONE_OP: u8 = 0x01;
const NAME_OP: u8 = 0x08;
const BYTE_PREFIX: u8 = 0x0a;
const WORD_PREFIX: u8 = 0x0b;
const DWORD_PREFIX: u8 = 0x0c;
const STRING_PREFIX: u8 = 0x0d;
const QWORD_PREFIX: u8 = 0x0e;
const SCOPE_OP: u8 = 0x10;
const BUFFER_OP: u8 = 0x11;
const PACKAGE_OP: u8 = 0x12;
const EXT_OP_PREFIX: u8 = 0x5b;
const DEVICE_OP: u8 = 0x82;
const ROOT_CHAR: u8 = b'\\';
const DUAL_NAME_PREFIX: u8 = 0x2e;
const MULTI_NAME_PREFIX: u8 = 0x2f;

/// The longest object a PkgLength can describe (28 bits).
pub const MAX_PKG_LENGTH: usize = (1 << 28) - 1;

/// The PkgLength of an object whose contents (after the PkgLength) are
/// `content` bytes long. The encoded value counts the PkgLength's own bytes
/// (§20.2.4): one byte up to 63, else a lead byte holding the count of
/// following bytes in bits 7-6 and the low nibble in bits 3-0.
/// Lengths past [`MAX_PKG_LENGTH`] cannot be encoded; they are clamped (the
/// tables built here are a few KiB).
pub fn pkg_length(content: usize) -> Vec<u8> {
    if content < 63 {
        return vec![(content + 1) as u8];
    }
    for extra in 1..=3usize {
        let total = content + 1 + extra;
        if total < 1 << (4 + 8 * extra) {
            let mut out = vec![((extra as u8) << 6) | (total & 0xf) as u8];
            out.extend((0..extra).map(|i| (total >> (4 + 8 * i)) as u8));
            return out;
        }
    }
    vec![0xcf, 0xff, 0xff, 0xff]
}

/// An Integer as the smallest constant that holds it: `ZeroOp`, `OneOp`,
/// or a Byte/Word/DWord/QWord constant.
pub fn integer(v: u64) -> Vec<u8> {
    match v {
        0 => vec![ZERO_OP],
        1 => vec![ONE_OP],
        2..=0xff => vec![BYTE_PREFIX, v as u8],
        0x100..=0xffff => [&[WORD_PREFIX][..], &(v as u16).to_le_bytes()].concat(),
        0x1_0000..=0xffff_ffff => [&[DWORD_PREFIX][..], &(v as u32).to_le_bytes()].concat(),
        _ => [&[QWORD_PREFIX][..], &v.to_le_bytes()].concat(),
    }
}

/// A String constant (ASCII, NUL-terminated; an embedded NUL ends it).
pub fn string(s: &str) -> Vec<u8> {
    let mut out = vec![STRING_PREFIX];
    out.extend(s.bytes().take_while(|&b| b != 0));
    out.push(0);
    out
}

/// The compressed EISA ID of a PNP ID such as `"PNP0A08"` (three letters,
/// four hex digits; §19.6.35 `EISAID`), as a DWord constant. `None` for a
/// malformed ID.
pub fn eisa_id(id: &str) -> Option<Vec<u8>> {
    let b = id.as_bytes();
    if b.len() != 7 || !b[..3].iter().all(u8::is_ascii_uppercase) {
        return None;
    }
    let letters = b[..3].iter().fold(0u32, |acc, &c| (acc << 5) | u32::from(c - 0x40));
    let product = u32::from_str_radix(id.get(3..)?, 16).ok()?;
    // Big-endian: the letters' 15 bits, then the product number.
    let v = (letters << 16) | product;
    Some([&[DWORD_PREFIX][..], &v.to_be_bytes()].concat())
}

/// A name path: `root` makes it absolute (`\`), then one or more segments.
pub fn name_string(root: bool, segs: &[&[u8; 4]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + 4 * segs.len());
    if root {
        out.push(ROOT_CHAR);
    }
    match segs.len() {
        0 => out.push(0),
        1 => {}
        2 => out.push(DUAL_NAME_PREFIX),
        n => {
            out.push(MULTI_NAME_PREFIX);
            out.push(n as u8);
        }
    }
    for s in segs {
        out.extend_from_slice(&s[..]);
    }
    out
}

/// `Name(seg, value)`: `value` is an encoded data object.
pub fn name(seg: &[u8; 4], value: &[u8]) -> Vec<u8> {
    [&[NAME_OP][..], &seg[..], value].concat()
}

/// `Package() { elements }` (at most 255 elements: NumElements is a byte).
pub fn package(elements: &[Vec<u8>]) -> Vec<u8> {
    let mut body = vec![elements.len() as u8];
    for e in elements {
        body.extend_from_slice(e);
    }
    wrap(&[PACKAGE_OP], &body)
}

/// `Scope(path) { body }`.
pub fn scope(path: &[u8], body: &[u8]) -> Vec<u8> {
    wrap(&[SCOPE_OP], &[path, body].concat())
}

/// `Device(seg) { body }`.
pub fn device(seg: &[u8; 4], body: &[u8]) -> Vec<u8> {
    wrap(&[EXT_OP_PREFIX, DEVICE_OP], &[&seg[..], body].concat())
}

/// `Buffer() { bytes }`.
pub fn buffer(bytes: &[u8]) -> Vec<u8> {
    wrap(&[BUFFER_OP], &[&integer(bytes.len() as u64)[..], bytes].concat())
}

/// `ResourceTemplate() { descriptors }`: a buffer of the descriptors and the
/// End Tag (checksum 0, "treated as if the checksum operation succeeded").
pub fn resource_template(descriptors: &[Vec<u8>]) -> Vec<u8> {
    let mut bytes: Vec<u8> = descriptors.concat();
    bytes.extend_from_slice(&[0x79, 0x00]);
    buffer(&bytes)
}

fn wrap(op: &[u8], body: &[u8]) -> Vec<u8> {
    [op, &pkg_length(body.len())[..], body].concat()
}

/// Resource descriptors (ACPI 6.5 §6.4.2, §6.4.3).
pub mod resource {
    use alloc::vec::Vec;

    /// Address space descriptors: general flags for a bridge's window, as
    /// ASL's `ResourceProducer, MinFixed, MaxFixed, PosDecode`.
    const PRODUCER_FIXED: u8 = 0b1100;
    const TYPE_MEMORY: u8 = 0;
    const TYPE_IO: u8 = 1;
    const TYPE_BUS: u8 = 2;
    /// I/O type-specific flags: `EntireRange`.
    const IO_ENTIRE_RANGE: u8 = 0b11;
    /// Memory type-specific flags: read/write, non-cacheable.
    const MEM_RW_NONCACHEABLE: u8 = 0b1;

    fn word_space(kind: u8, type_flags: u8, min: u16, max: u16) -> Vec<u8> {
        let len = u32::from(max).saturating_sub(u32::from(min)) + 1;
        let mut d = Vec::with_capacity(16);
        d.extend_from_slice(&[0x88, 13, 0, kind, PRODUCER_FIXED, type_flags]);
        for v in [0u16, min, max, 0, len as u16] {
            d.extend_from_slice(&v.to_le_bytes());
        }
        d
    }

    /// `WordBusNumber(ResourceProducer, MinFixed, MaxFixed, PosDecode, 0,
    /// first, last, 0, count)` (Word Address Space Descriptor, §6.4.3.5.3).
    pub fn word_bus_number(first: u8, last: u8) -> Vec<u8> {
        word_space(TYPE_BUS, 0, u16::from(first), u16::from(last))
    }

    /// `WordIO(ResourceProducer, MinFixed, MaxFixed, PosDecode, EntireRange,
    /// 0, min, max, 0, max - min + 1)`.
    pub fn word_io(min: u16, max: u16) -> Vec<u8> {
        word_space(TYPE_IO, IO_ENTIRE_RANGE, min, max)
    }

    /// `IO(Decode16, port, port, 1, len)` (I/O Port Descriptor, §6.4.2.5).
    pub fn io(port: u16, len: u8) -> Vec<u8> {
        let p = port.to_le_bytes();
        alloc::vec![0x47, 0x01, p[0], p[1], p[0], p[1], 0x01, len]
    }

    /// `DWordMemory(ResourceProducer, PosDecode, MinFixed, MaxFixed,
    /// NonCacheable, ReadWrite, 0, base, base + size - 1, 0, size)`
    /// (§6.4.3.5.2).
    pub fn dword_memory(base: u32, size: u32) -> Vec<u8> {
        let mut d = Vec::with_capacity(26);
        d.extend_from_slice(&[0x87, 23, 0, TYPE_MEMORY, PRODUCER_FIXED, MEM_RW_NONCACHEABLE]);
        let max = base.saturating_add(size.saturating_sub(1));
        for v in [0u32, base, max, 0, size] {
            d.extend_from_slice(&v.to_le_bytes());
        }
        d
    }

    /// `QWordMemory(...)` as [`dword_memory`], 64-bit (§6.4.3.5.1).
    pub fn qword_memory(base: u64, size: u64) -> Vec<u8> {
        let mut d = Vec::with_capacity(46);
        d.extend_from_slice(&[0x8a, 43, 0, TYPE_MEMORY, PRODUCER_FIXED, MEM_RW_NONCACHEABLE]);
        let max = base.saturating_add(size.saturating_sub(1));
        for v in [0u64, base, max, 0, size] {
            d.extend_from_slice(&v.to_le_bytes());
        }
        d
    }

    /// `Memory32Fixed(ReadWrite, base, size)` (§6.4.3.4).
    pub fn memory32_fixed(base: u32, size: u32) -> Vec<u8> {
        let mut d = alloc::vec![0x86, 9, 0, 0x01];
        d.extend_from_slice(&base.to_le_bytes());
        d.extend_from_slice(&size.to_le_bytes());
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkg_length_forms() {
        assert_eq!(pkg_length(0), [1]);
        assert_eq!(pkg_length(62), [63]);
        // 63 content bytes + 2 length bytes = 65 = 0x41.
        assert_eq!(pkg_length(63), [0x41, 0x04]);
        // 4093 + 2 = 4095: the largest two-byte form.
        assert_eq!(pkg_length(4093), [0x4f, 0xff]);
        // 4094 + 3 = 4097 = 0x1001.
        assert_eq!(pkg_length(4094), [0x81, 0x00, 0x01]);
        // (1 << 20) - 4 + 3 = 0xfffff, then 4 bytes.
        assert_eq!(pkg_length((1 << 20) - 4), [0x8f, 0xff, 0xff]);
        assert_eq!(pkg_length((1 << 20) - 3), [0xc1, 0x00, 0x00, 0x01]);
    }

    #[test]
    fn integers_use_the_smallest_form() {
        assert_eq!(integer(0), [0x00]);
        assert_eq!(integer(1), [0x01]);
        assert_eq!(integer(5), [0x0a, 5]);
        assert_eq!(integer(0x1234), [0x0b, 0x34, 0x12]);
        assert_eq!(integer(0xb000_0000), [0x0c, 0, 0, 0, 0xb0]);
        assert_eq!(integer(1 << 32), [0x0e, 0, 0, 0, 0, 1, 0, 0, 0]);
    }

    #[test]
    fn eisa_ids_compress() {
        // PNP0A03 is the well-known 0x030AD041 as a little-endian DWord.
        assert_eq!(eisa_id("PNP0A03").unwrap(), [0x0c, 0x41, 0xd0, 0x0a, 0x03]);
        assert_eq!(eisa_id("PNP0A08").unwrap(), [0x0c, 0x41, 0xd0, 0x0a, 0x08]);
        assert_eq!(eisa_id("PNP0C02").unwrap(), [0x0c, 0x41, 0xd0, 0x0c, 0x02]);
        assert_eq!(eisa_id("pnp0a03"), None);
        assert_eq!(eisa_id("PNP0A0"), None);
        assert_eq!(eisa_id("PNP0A0G"), None);
    }

    #[test]
    fn names_packages_devices_and_strings() {
        assert_eq!(name_string(true, &[b"_SB_"]), b"\\_SB_");
        assert_eq!(name_string(false, &[b"_SB_", b"PCI0"]), b"\x2e_SB_PCI0");
        assert_eq!(name_string(true, &[b"_SB_", b"PCI0", b"RES0"]), b"\\\x2f\x03_SB_PCI0RES0");
        assert_eq!(package(&[integer(1), integer(2)]), [0x12, 0x05, 0x02, 0x01, 0x0a, 0x02]);
        assert_eq!(device(b"DEV0", &[]), [0x5b, 0x82, 0x05, b'D', b'E', b'V', b'0']);
        assert_eq!(string("ab"), [0x0d, b'a', b'b', 0]);
        assert_eq!(resource_template(&[]), [0x11, 0x05, 0x0a, 0x02, 0x79, 0x00]);
    }

    #[test]
    fn resource_descriptors_have_their_declared_lengths() {
        for (d, len) in [
            (resource::word_bus_number(0, 0), 16),
            (resource::word_io(0, 0xcf7), 16),
            (resource::dword_memory(0xc000_0000, 0x3ec0_0000), 26),
            (resource::qword_memory(1 << 40, 1 << 30), 46),
            (resource::memory32_fixed(0xb000_0000, 1 << 20), 12),
        ] {
            assert_eq!(d.len(), len);
            assert_eq!(usize::from(u16::from_le_bytes([d[1], d[2]])) + 3, len);
        }
        let io = resource::word_io(0x0d00, 0xffff);
        assert_eq!(&io[14..16], &0xf300u16.to_le_bytes());
        let m = resource::dword_memory(0xc000_0000, 0x3ec0_0000);
        assert_eq!(&m[14..18], &0xfebf_ffffu32.to_le_bytes());
    }
}
