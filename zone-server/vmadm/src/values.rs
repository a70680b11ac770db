//! One value against its property's type and bounds ([`check_value`]),
//! with vmadm's coercions; every refusal names the property and says why.

use alloc::borrow::ToOwned;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::net::{Ipv4Addr, Ipv6Addr};

use serde_json::{Map, Value};

use crate::coerce;
use crate::properties::{self, Item, Kind, Prop, Support};
use crate::uuid::Uuid;
use crate::validate::Problems;

pub(crate) fn describe(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 64 {
        let mut cut = 60;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        format!("{}...", &s[..cut])
    } else {
        s
    }
}

/// Text without NUL or other control characters.
pub(crate) fn clean_text(s: &str) -> bool {
    !s.chars().any(char::is_control)
}

pub(crate) fn check_str(path: &str, v: &Value, max: usize, out: &mut Problems) -> Option<String> {
    let Some(s) = v.as_str() else {
        out.bad_value(path, format!("must be a string, got {}", describe(v)));
        return None;
    };
    if s.len() > max {
        out.bad_value(path, format!("must be at most {max} bytes, got {}", s.len()));
        return None;
    }
    if !clean_text(s) {
        out.bad_value(path, "must not contain NUL or other control characters");
        return None;
    }
    Some(s.to_owned())
}

pub(crate) fn hostname_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= properties::MAX_HOSTNAME
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

pub(crate) fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut out {
        let p = parts.next()?;
        if p.is_empty() || p.len() > 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

pub(crate) fn mac_text(m: [u8; 6]) -> String {
    format!("{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2], m[3], m[4], m[5])
}

pub(crate) fn pow2_in(s: &str, min: u64, max: u64) -> bool {
    s.len() <= 7
        && s.bytes().all(|b| b.is_ascii_digit())
        && s.parse::<u64>().is_ok_and(|n| n.is_power_of_two() && (min..=max).contains(&n))
}

/// An address with a prefix length (`10.0.0.5/24`, `fd00::5/64`).
pub(crate) fn ip_prefix(s: &str) -> bool {
    let Some((addr, len)) = s.split_once('/') else { return false };
    let Ok(len) = len.parse::<u8>() else { return false };
    (addr.parse::<Ipv4Addr>().is_ok() && len <= 32) || (addr.parse::<Ipv6Addr>().is_ok() && len <= 128)
}

pub(crate) fn check_item(path: &str, item: Item, v: &Value, out: &mut Problems) -> Option<Value> {
    let text = |out: &mut Problems| check_str(path, v, properties::MAX_STRING, out);
    match item {
        Item::Str { max } => check_str(path, v, max, out).map(Value::String),
        Item::Ipv4 => {
            let s = text(out)?;
            if s.parse::<Ipv4Addr>().is_err() {
                out.bad_value(path, format!("must be an IPv4 address, got \"{s}\""));
                return None;
            }
            Some(Value::String(s))
        }
        Item::IpPrefix => {
            let s = text(out)?;
            if s != "dhcp" && s != "addrconf" && !ip_prefix(&s) {
                out.bad_value(
                    path,
                    format!("must be an address with its prefix (10.0.0.5/24), \"dhcp\" or \"addrconf\", got \"{s}\""),
                );
                return None;
            }
            Some(Value::String(s))
        }
        Item::IpOrCidr => {
            let s = text(out)?;
            if !ip_prefix(&s) && s.parse::<Ipv4Addr>().is_err() && s.parse::<Ipv6Addr>().is_err() {
                out.bad_value(path, format!("must be an IP address or a CIDR range, got \"{s}\""));
                return None;
            }
            Some(Value::String(s))
        }
        Item::Port => match coerce::integer(v) {
            Some(n @ 0..=65535) => Some(Value::from(n)),
            _ => {
                out.bad_value(path, format!("must be a port number (0 to 65535), got {}", describe(v)));
                None
            }
        },
        Item::DhcpCid => {
            let s = text(out)?;
            let hex = s.strip_prefix("0x").unwrap_or("");
            if hex.is_empty() || hex.len() % 2 != 0 || hex.len() > 510 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                out.bad_value(path, format!("must be \"0x\" and an even number of hex digits, got \"{s}\""));
                return None;
            }
            Some(Value::String(s))
        }
    }
}

pub(crate) fn check_map(path: &str, v: &Value, tags: bool, out: &mut Problems) -> Option<Value> {
    let Some(m) = v.as_object() else {
        out.bad_value(path, format!("must be an object of key/value pairs, got {}", describe(v)));
        return None;
    };
    if m.len() > properties::MAX_META_KEYS {
        out.bad_value(path, format!("must have at most {} keys, got {}", properties::MAX_META_KEYS, m.len()));
        return None;
    }
    let mut ok = Map::new();
    let mut good = true;
    for (k, val) in m {
        let kp = format!("{path}.{k}");
        if k.is_empty() || k.len() > properties::MAX_META_KEY || !clean_text(k) {
            out.bad_value(
                path,
                format!("keys must be 1 to {} bytes without control characters", properties::MAX_META_KEY),
            );
            good = false;
            continue;
        }
        let fine = match val {
            Value::String(s) => {
                if s.len() > properties::MAX_META_VALUE {
                    out.bad_value(
                        &kp,
                        format!("must be at most {} bytes, got {}", properties::MAX_META_VALUE, s.len()),
                    );
                    false
                } else if s.contains('\0') {
                    out.bad_value(&kp, "must not contain NUL bytes");
                    false
                } else {
                    true
                }
            }
            Value::Number(_) | Value::Bool(_) if tags => true,
            other => {
                let want = if tags { "a string, number or boolean" } else { "a string" };
                out.bad_value(&kp, format!("must be {want} (values do not nest), got {}", describe(other)));
                false
            }
        };
        if fine {
            ok.insert(k.clone(), val.clone());
        } else {
            good = false;
        }
    }
    good.then_some(Value::Object(ok))
}

/// Checks one value against its property; returns the coerced value.
/// Does not handle `disks`/`nics` (see [`check_disk`], [`check_nic`]).
pub fn check_value(path: &str, prop: &Prop, v: &Value, out: &mut Problems) -> Option<Value> {
    let value = match prop.kind {
        Kind::Str { max } => check_str(path, v, max, out).map(Value::String),
        Kind::Path => {
            let s = check_str(path, v, properties::MAX_STRING, out)?;
            if s.is_empty() || s.split('/').any(|c| c == "." || c == "..") {
                out.bad_value(path, format!("must be a path without \".\" or \"..\" components, got \"{s}\""));
                return None;
            }
            Some(Value::String(s))
        }
        Kind::Alias => {
            let s = check_str(path, v, properties::MAX_ALIAS, out)?;
            if s.is_empty() || s == "." || s == ".." || s.contains('/') {
                out.bad_value(path, format!("must be a name without \"/\" (and not \".\" or \"..\"), got \"{s}\""));
                return None;
            }
            Some(Value::String(s))
        }
        Kind::Hostname => {
            let s = check_str(path, v, properties::MAX_HOSTNAME, out)?;
            if !hostname_ok(&s) {
                out.bad_value(path, format!("must be a hostname (letters, digits, \"-\" and \".\"), got \"{s}\""));
                return None;
            }
            Some(Value::String(s))
        }
        Kind::Uuid => {
            let s = check_str(path, v, 64, out)?;
            match Uuid::parse(&s) {
                Some(u) => Some(Value::String(u.text())),
                None => {
                    out.bad_value(
                        path,
                        format!("must be a UUID like 01234567-89ab-cdef-0123-456789abcdef, got \"{s}\""),
                    );
                    None
                }
            }
        }
        Kind::Bool => match coerce::boolean(v) {
            Some(b) => Some(Value::Bool(b)),
            None => {
                out.bad_value(path, format!("must be true or false, got {}", describe(v)));
                None
            }
        },
        Kind::Int { min, max } => match coerce::integer(v) {
            Some(n) if n < min => {
                out.bad_value(path, format!("must be at least {min}, got {n}"));
                None
            }
            Some(n) if n > max => {
                out.bad_value(path, format!("must be at most {max}, got {n}"));
                None
            }
            Some(n) => Some(Value::from(n)),
            None => {
                out.bad_value(path, format!("must be a whole number, got {}", describe(v)));
                None
            }
        },
        Kind::Pow2 { min, max } => match coerce::integer(v) {
            Some(n) if n >= min && n <= max && (n as u64).is_power_of_two() => Some(Value::from(n)),
            _ => {
                out.bad_value(path, format!("must be a power of two from {min} to {max}, got {}", describe(v)));
                None
            }
        },
        Kind::Enum(values) => match v.as_str() {
            Some(s) if values.contains(&s) => Some(Value::String(s.to_owned())),
            _ => {
                let quoted: Vec<String> = values.iter().map(|s| format!("\"{s}\"")).collect();
                out.bad_value(path, format!("must be one of {}, got {}", quoted.join(", "), describe(v)));
                None
            }
        },
        Kind::Ipv4 => check_item(path, Item::Ipv4, v, out),
        Kind::Netmask => {
            let s = check_str(path, v, 64, out)?;
            match s.parse::<Ipv4Addr>() {
                Ok(m) if { u32::from(m).leading_ones() + u32::from(m).trailing_zeros() == 32 } => {
                    Some(Value::String(s))
                }
                _ => {
                    out.bad_value(path, format!("must be a contiguous netmask like 255.255.255.0, got \"{s}\""));
                    None
                }
            }
        }
        Kind::Mac => {
            let s = check_str(path, v, 64, out)?;
            match parse_mac(&s) {
                Some(m) if m[0] & 1 == 0 && m != [0; 6] => Some(Value::String(mac_text(m))),
                _ => {
                    out.bad_value(path, format!("must be a unicast MAC address like 90:b8:d0:c0:ff:ee, got \"{s}\""));
                    None
                }
            }
        }
        Kind::GuestBlockSize => {
            let s = check_str(path, v, 32, out)?;
            let ok = match s.split_once('/') {
                Some((l, p)) => pow2_in(l, 512, 65536) && pow2_in(p, 512, 65536),
                None => pow2_in(&s, 512, 65536),
            };
            if !ok {
                out.bad_value(path, format!("must be \"NNN\" or \"NNN/NNN\", powers of two, got \"{s}\""));
                return None;
            }
            Some(Value::String(s))
        }
        Kind::PciSlot => {
            let s = check_str(path, v, 32, out)?;
            let parts: Vec<&str> = s.split(':').collect();
            let limits: &[u32] = match parts.len() {
                1 => &[31],
                2 => &[31, 7],
                3 => &[255, 31, 7],
                _ => &[],
            };
            let ok = !limits.is_empty()
                && parts.iter().zip(limits).all(|(p, max)| {
                    p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()) && p.parse::<u32>().is_ok_and(|n| n <= *max)
                });
            if !ok {
                out.bad_value(
                    path,
                    format!("must be <bus>:<device>:<function>, <device>:<function> or <device>, got \"{s}\""),
                );
                return None;
            }
            Some(Value::String(s))
        }
        Kind::StrMap => check_map(path, v, false, out),
        Kind::TagMap => check_map(path, v, true, out),
        Kind::List { item, max } => {
            let Some(a) = v.as_array() else {
                out.bad_value(path, format!("must be an array, got {}", describe(v)));
                return None;
            };
            if a.len() > max {
                out.bad_value(path, format!("must have at most {max} entries, got {}", a.len()));
                return None;
            }
            let items: Vec<Option<Value>> =
                a.iter().enumerate().map(|(i, x)| check_item(&format!("{path}.{i}"), item, x, out)).collect();
            items.into_iter().collect::<Option<Vec<_>>>().map(Value::Array)
        }
        Kind::Timestamp | Kind::Any | Kind::Disks | Kind::Nics => Some(v.clone()),
    }?;
    match prop.support {
        Support::NotYet(why) => {
            out.bad_value(path, format!("{why} not supported yet"));
            None
        }
        Support::Only { ok, what } => match value.as_str() {
            Some(s) if !ok.contains(&s) => {
                out.bad_value(path, format!("\"{s}\" {what} not supported yet"));
                None
            }
            _ => Some(value),
        },
        Support::Honoured | Support::Kept => Some(value),
    }
}
