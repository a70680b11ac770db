//! A UUID as it appears in a path (`/vms/:uuid`): parsed at the boundary,
//! so a path trick (`..`, `%2f`, a name) never reaches the backend.

use alloc::string::String;
use core::fmt;

/// A UUID in the canonical 8-4-4-4-12 hex form; printed in lower case.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Uuid(pub [u8; 16]);

/// Why a string is not a UUID.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NotAUuid;

impl Uuid {
    /// Parses `8-4-4-4-12` hex digits (either case).
    pub fn parse(s: &str) -> Result<Self, NotAUuid> {
        let b = s.as_bytes();
        if b.len() != 36 {
            return Err(NotAUuid);
        }
        let mut out = [0u8; 16];
        let mut nibbles = 0usize;
        for (i, &c) in b.iter().enumerate() {
            if matches!(i, 8 | 13 | 18 | 23) {
                if c != b'-' {
                    return Err(NotAUuid);
                }
                continue;
            }
            let v = match c {
                b'0'..=b'9' => c - b'0',
                b'a'..=b'f' => c - b'a' + 10,
                b'A'..=b'F' => c - b'A' + 10,
                _ => return Err(NotAUuid),
            };
            out[nibbles / 2] |= if nibbles.is_multiple_of(2) { v << 4 } else { v };
            nibbles += 1;
        }
        Ok(Uuid(out))
    }

    /// The canonical lower-case form.
    pub fn to_string_lower(&self) -> String {
        alloc::format!("{self}")
    }
}

impl fmt::Display for Uuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, byte) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_canonically() {
        let u = Uuid::parse("54F1CC77-68f1-42ab-acac-5c4f64f5d6e0").unwrap();
        assert_eq!(u.to_string_lower(), "54f1cc77-68f1-42ab-acac-5c4f64f5d6e0");
    }

    #[test]
    fn refuses_what_is_not_one() {
        for s in ["", "54f1cc77", "54f1cc77-68f1-42ab-acac-5c4f64f5d6e", "54f1cc77-68f1-42ab-acac-5c4f64f5d6e0a",
            "54f1cc77x68f1-42ab-acac-5c4f64f5d6e0", "54f1cc77-68f1-42ab-acac-5c4f64f5d6eg", "../../../../../../etc/passwd.."]
        {
            assert_eq!(Uuid::parse(s), Err(NotAUuid), "{s}");
        }
    }
}
