//! UUIDs in vmadm's text form, and new ones from a caller-given random
//! source (so tests choose the bytes).

use alloc::string::String;
use core::fmt;

/// A UUID (RFC 9562 text form: 8-4-4-4-12 hex digits).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Uuid(pub [u8; 16]);

impl Uuid {
    /// The nil UUID, vmadm's default `owner_uuid` and `billing_id`.
    pub const NIL: Uuid = Uuid([0; 16]);

    /// Parses the 36-character hyphenated form, either case.
    pub fn parse(s: &str) -> Option<Self> {
        let b = s.as_bytes();
        if b.len() != 36 {
            return None;
        }
        let mut out = [0u8; 16];
        let mut n = 0;
        let mut i = 0;
        while i < 36 {
            if matches!(i, 8 | 13 | 18 | 23) {
                if b[i] != b'-' {
                    return None;
                }
                i += 1;
                continue;
            }
            let hi = (b[i] as char).to_digit(16)?;
            let lo = (b[i + 1] as char).to_digit(16)?;
            out[n] = (hi << 4 | lo) as u8;
            n += 1;
            i += 2;
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
