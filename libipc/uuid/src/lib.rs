//! The UUID of Alcove's interfaces (instances, images, owners): one type for
//! vmm-server's VM description, vmadm's instance model, the images library
//! and the HTTP API, so a UUID parsed at one boundary means the same at the
//! next.
//!
//! Only the hyphenated 36-character form is accepted, as vmadm's validator
//! accepts it (either case); braces, `urn:uuid:` and the 32-digit form are
//! refused. Printing is always lower case. New UUIDs take their randomness
//! from the caller, so tests choose the bytes and the kernel's source of
//! entropy stays the caller's business.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

use alloc::string::String;
use core::fmt;

/// A UUID (RFC 9562), kept as its 16 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Uuid(pub [u8; 16]);

impl Uuid {
    /// The nil UUID (vmadm's default `owner_uuid` and `billing_id`).
    pub const NIL: Uuid = Uuid([0; 16]);

    /// Parses the 36-character hyphenated form (8-4-4-4-12 hex digits,
    /// either case); anything else is `None`.
    pub fn parse(s: &str) -> Option<Self> {
        let b = s.as_bytes();
        if b.len() != 36 {
            return None;
        }
        let mut out = [0u8; 16];
        let mut nibbles = 0usize;
        for (i, &c) in b.iter().enumerate() {
            if matches!(i, 8 | 13 | 18 | 23) {
                if c != b'-' {
                    return None;
                }
                continue;
            }
            let v = match c {
                b'0'..=b'9' => c - b'0',
                b'a'..=b'f' => c - b'a' + 10,
                b'A'..=b'F' => c - b'A' + 10,
                _ => return None,
            };
            out[nibbles / 2] |= if nibbles.is_multiple_of(2) { v << 4 } else { v };
            nibbles += 1;
        }
        Some(Self(out))
    }

    /// A version 4 (random) UUID from 16 bytes of the caller's randomness.
    pub fn new_v4(random: &mut dyn FnMut(&mut [u8])) -> Self {
        let mut b = [0u8; 16];
        random(&mut b);
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        Self(b)
    }

    /// The lower-case text form.
    pub fn text(&self) -> String {
        alloc::format!("{self}")
    }
}

impl fmt::Display for Uuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_either_case_and_prints_lower_case() {
        let u = Uuid::parse("54F1CC77-68f1-42ab-acac-5c4f64f5d6e0").unwrap();
        assert_eq!(u.text(), "54f1cc77-68f1-42ab-acac-5c4f64f5d6e0");
        assert_eq!(u.0[0], 0x54);
        assert_eq!(u.0[15], 0xe0);
        assert_eq!(Uuid::NIL.text(), "00000000-0000-0000-0000-000000000000");
    }

    #[test]
    fn refuses_every_other_form() {
        for s in [
            "",
            "54f1cc77",
            "54f1cc77-68f1-42ab-acac-5c4f64f5d6e",
            "54f1cc77-68f1-42ab-acac-5c4f64f5d6e0a",
            "54f1cc77x68f1-42ab-acac-5c4f64f5d6e0",
            "54f1cc77-68f1-42ab-acac-5c4f64f5d6eg",
            "54f1cc7768f142abacac5c4f64f5d6e0",
            "{54f1cc77-68f1-42ab-acac-5c4f64f5d6e0}",
            "urn:uuid:54f1cc77-68f1-42ab-acac-5c4f64f5d6e0",
            "../../../../../../etc/passwd..",
            "54f1cc77-68f1-42ab-acac-5c4f64f5d6é",
            "+4f1cc77-68f1-42ab-acac-5c4f64f5d6e0",
        ] {
            assert_eq!(Uuid::parse(s), None, "{s}");
        }
    }

    #[test]
    fn a_random_uuid_is_version_4_variant_1() {
        let u = Uuid::new_v4(&mut |b| b.fill(0xff));
        assert_eq!(u.text(), "ffffffff-ffff-4fff-bfff-ffffffffffff");
        let z = Uuid::new_v4(&mut |b| b.fill(0));
        assert_eq!(z.text(), "00000000-0000-4000-8000-000000000000");
        assert_eq!(Uuid::parse(&u.text()), Some(u));
    }
}
