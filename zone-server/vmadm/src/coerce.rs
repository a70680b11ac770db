//! vmadm's coercions: what a payload (or `update UUID prop=value`) may
//! write for a number or a boolean. vmadm accepts numbers given as strings
//! (`"ram": "1024"`) and booleans as `true`/`false`, `"true"`/`"false"`,
//! `1`/`0` and `"1"`/`"0"`; everything else is a bad value.

use serde_json::Value;

/// A boolean, as vmadm reads one.
pub fn boolean(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::Number(n) => match n.as_u64() {
            Some(1) => Some(true),
            Some(0) => Some(false),
            _ => None,
        },
        Value::String(s) => match s.as_str() {
            "true" | "1" => Some(true),
            "false" | "0" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

/// A whole number, as vmadm reads one: a JSON integer, or a string of
/// decimal digits with an optional leading `-` (no spaces, no fraction, no
/// exponent, at most 19 digits so it fits an `i64`).
pub fn integer(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => {
            let digits = s.strip_prefix('-').unwrap_or(s);
            if digits.is_empty() || digits.len() > 18 || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            s.parse().ok()
        }
        _ => None,
    }
}

/// The value of a command-line `prop=value` (vmadm update's second form):
/// kept as a string; the property's type coerces it. `vmadm update UUID
/// prop=null` does not clear a property (as on SmartOS): it is the string.
pub fn from_cli(s: &str) -> Value {
    Value::String(s.into())
}
