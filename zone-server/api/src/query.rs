//! The query string of a request target (`?action=stop&force=true`),
//! decoded as a form (`%XX` escapes, `+` for a space) into checked pairs;
//! and the encoding the clients use to build one.

use alloc::string::String;
use alloc::vec::Vec;

use crate::error::{ApiError, ErrorCode, quote};

/// Query parameters a request may carry at most.
pub const MAX_QUERY_PAIRS: usize = 32;

/// A request's query parameters, in the order given; each key at most once.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Query {
    pairs: Vec<(String, String)>,
}

impl Query {
    /// Decodes `raw` (what follows the `?`, without it).
    pub fn parse(raw: &str) -> Result<Self, ApiError> {
        let mut pairs: Vec<(String, String)> = Vec::new();
        for part in raw.split('&').filter(|p| !p.is_empty()) {
            if pairs.len() == MAX_QUERY_PAIRS {
                return Err(ApiError::new(ErrorCode::InvalidArgument, alloc::format!("more than {MAX_QUERY_PAIRS} query parameters")));
            }
            let (k, v) = part.split_once('=').unwrap_or((part, ""));
            let k = decode(k)?;
            let v = decode(v)?;
            if k.is_empty() {
                return Err(ApiError::invalid_argument("a query parameter has an empty name"));
            }
            if pairs.iter().any(|(have, _)| *have == k) {
                return Err(ApiError::invalid_argument(alloc::format!("query parameter {} is given twice", quote(&k))));
            }
            pairs.push((k, v));
        }
        Ok(Self { pairs })
    }

    /// The value of `key`, if given.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// Every pair, in the order given.
    pub fn pairs(&self) -> &[(String, String)] {
        &self.pairs
    }

    /// No parameters.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// The pairs except those named in `skip` (e.g. the filters of a list,
    /// without `action`).
    pub fn without(&self, skip: &[&str]) -> Vec<(String, String)> {
        self.pairs.iter().filter(|(k, _)| !skip.contains(&k.as_str())).cloned().collect()
    }
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Decodes one form-encoded component.
fn decode(s: &str) -> Result<String, ApiError> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let (Some(h), Some(l)) = (b.get(i + 1).copied().and_then(hex), b.get(i + 2).copied().and_then(hex)) else {
                    return Err(ApiError::invalid_argument(alloc::format!("bad %-escape in query {}", quote(s))));
                };
                out.push(h << 4 | l);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| ApiError::invalid_argument(alloc::format!("query {} is not UTF-8 once decoded", quote(s))))
}

/// Encodes one component for a query string: unreserved characters stay,
/// everything else becomes `%XX`.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &c in s.as_bytes() {
        if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~') {
            out.push(c as char);
        } else {
            out.push_str(&alloc::format!("%{c:02X}"));
        }
    }
    out
}

/// `?k=v&...` for `pairs` (empty when there are none).
pub fn encode_pairs<K: AsRef<str>, V: AsRef<str>>(pairs: &[(K, V)]) -> String {
    let mut out = String::new();
    for (i, (k, v)) in pairs.iter().enumerate() {
        out.push(if i == 0 { '?' } else { '&' });
        out.push_str(&encode(k.as_ref()));
        out.push('=');
        out.push_str(&encode(v.as_ref()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_forms() {
        let q = Query::parse("action=stop&force&alias=web+01&x=%2F%41").unwrap();
        assert_eq!(q.get("action"), Some("stop"));
        assert_eq!(q.get("force"), Some(""));
        assert_eq!(q.get("alias"), Some("web 01"));
        assert_eq!(q.get("x"), Some("/A"));
        assert_eq!(q.get("nope"), None);
    }

    #[test]
    fn refuses_bad_forms() {
        for raw in ["a=%4", "a=%zz", "=x", "a=1&a=2", "a=%ff"] {
            let e = Query::parse(raw).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidArgument, "{raw}");
        }
        let many: Vec<String> = (0..=MAX_QUERY_PAIRS).map(|i| alloc::format!("k{i}=v")).collect();
        assert!(Query::parse(&many.join("&")).unwrap_err().message.contains("more than 32"));
    }

    #[test]
    fn encoding_round_trips() {
        let s = "a b/c?d&e=f%ü";
        let q = Query::parse(&encode_pairs(&[("k", s)])[1..]).unwrap();
        assert_eq!(q.get("k"), Some(s));
    }
}
