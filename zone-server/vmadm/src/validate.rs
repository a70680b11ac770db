//! Payload validation, as `vmadm validate create|update`: every property
//! checked against the table in [`crate::properties`] with vmadm's
//! coercions, its deprecated NIC forms folded into the current ones, and
//! every failure named in SmartOS's three lists (`bad_values`,
//! `bad_properties`, `missing_properties`) plus a sentence saying why.
//!
//! [`check_create`] and [`check_update`] never fill in generated values
//! (uuids, MACs); [`create_defaults`] does that for `vmadm create`, from a
//! caller-given random source.

use alloc::borrow::ToOwned;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;
use core::net::{Ipv4Addr, Ipv6Addr};

use serde_json::{Map, Value};

use crate::coerce;
use crate::properties::{self, Default, Item, Kind, Prop, Support, Update};
use crate::uuid::Uuid;

/// What a payload is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Create,
    Update,
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Update => "update",
        }
    }
}

/// Why a payload was refused: SmartOS's lists, and one sentence per
/// problem naming the property.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Problems {
    /// Properties whose value is unacceptable.
    pub bad_values: Vec<String>,
    /// Properties that are not valid for the action (unknown, read-only,
    /// create-only in an update).
    pub bad_properties: Vec<String>,
    /// Required properties that are absent.
    pub missing_properties: Vec<String>,
    /// The reason for each, `vmadm: property "ram": ...`.
    pub reasons: Vec<String>,
}

fn push_once(list: &mut Vec<String>, name: &str) {
    if !list.iter().any(|n| n == name) {
        list.push(name.to_owned());
    }
}

impl Problems {
    pub fn bad_value(&mut self, property: &str, why: impl AsRef<str>) {
        push_once(&mut self.bad_values, property);
        self.reasons.push(format!("vmadm: property \"{property}\": {}", why.as_ref()));
    }
    pub fn bad_property(&mut self, property: &str, why: impl AsRef<str>) {
        push_once(&mut self.bad_properties, property);
        self.reasons.push(format!("vmadm: property \"{property}\": {}", why.as_ref()));
    }
    pub fn missing(&mut self, property: &str, why: impl AsRef<str>) {
        push_once(&mut self.missing_properties, property);
        self.reasons.push(format!("vmadm: property \"{property}\": required ({})", why.as_ref()));
    }
    /// Nothing wrong at all (what `validate` needs).
    pub fn is_empty(&self) -> bool {
        self.bad_values.is_empty() && self.bad_properties.is_empty() && self.missing_properties.is_empty()
    }
    /// Nothing but unknown or misplaced properties (what `create` only
    /// warns about).
    pub fn only_bad_properties(&self) -> bool {
        self.bad_values.is_empty() && self.missing_properties.is_empty()
    }
    /// vmadm's failure object: `{"bad_values":[..],"bad_properties":[..],"missing_properties":[..]}`.
    pub fn json(&self) -> String {
        let list = |v: &Vec<String>| Value::Array(v.iter().map(|s| Value::String(s.clone())).collect());
        let mut m = Map::new();
        m.insert("bad_values".into(), list(&self.bad_values));
        m.insert("bad_properties".into(), list(&self.bad_properties));
        m.insert("missing_properties".into(), list(&self.missing_properties));
        // serde_json's Map is sorted; vmadm's member order is the order
        // above, so the object is written by hand.
        format!(
            "{{\"bad_values\":{},\"bad_properties\":{},\"missing_properties\":{}}}",
            m["bad_values"], m["bad_properties"], m["missing_properties"]
        )
    }
}

/// A checked payload: coerced and normalized (deprecated forms folded in),
/// without the properties that were refused. Usable when
/// `problems.only_bad_properties()`.
#[derive(Clone, Debug, PartialEq)]
pub struct Checked {
    /// `bhyve` or `kvm`.
    pub brand: String,
    pub payload: Map<String, Value>,
    pub problems: Problems,
}

/// Parses a payload's text with the size and nesting limits; a failure is
/// the one-line message vmadm prints.
pub fn parse(text: &str) -> Result<Map<String, Value>, String> {
    if text.len() > properties::MAX_PAYLOAD {
        return Err(format!(
            "vmadm: payload is {} bytes; at most {} are accepted",
            text.len(),
            properties::MAX_PAYLOAD
        ));
    }
    let value: Value = serde_json::from_str(text).map_err(|e| format!("vmadm: invalid JSON payload: {e}"))?;
    if depth(&value) > properties::MAX_DEPTH {
        return Err(format!("vmadm: payload nests deeper than {} levels", properties::MAX_DEPTH));
    }
    match value {
        Value::Object(m) => Ok(m),
        _ => Err("vmadm: the payload must be a JSON object".into()),
    }
}

fn depth(v: &Value) -> usize {
    match v {
        Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        Value::Object(m) => 1 + m.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

fn describe(v: &Value) -> String {
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
fn clean_text(s: &str) -> bool {
    !s.chars().any(char::is_control)
}

fn check_str(path: &str, v: &Value, max: usize, out: &mut Problems) -> Option<String> {
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

fn hostname_ok(s: &str) -> bool {
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

fn parse_mac(s: &str) -> Option<[u8; 6]> {
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

fn mac_text(m: [u8; 6]) -> String {
    format!("{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2], m[3], m[4], m[5])
}

fn pow2_in(s: &str, min: u64, max: u64) -> bool {
    s.len() <= 7
        && s.bytes().all(|b| b.is_ascii_digit())
        && s.parse::<u64>().is_ok_and(|n| n.is_power_of_two() && (min..=max).contains(&n))
}

/// An address with a prefix length (`10.0.0.5/24`, `fd00::5/64`).
fn ip_prefix(s: &str) -> bool {
    let Some((addr, len)) = s.split_once('/') else { return false };
    let Ok(len) = len.parse::<u8>() else { return false };
    (addr.parse::<Ipv4Addr>().is_ok() && len <= 32) || (addr.parse::<Ipv6Addr>().is_ok() && len <= 128)
}

fn check_item(path: &str, item: Item, v: &Value, out: &mut Problems) -> Option<Value> {
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

fn check_map(path: &str, v: &Value, tags: bool, out: &mut Problems) -> Option<Value> {
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

/// The brand of a create payload: `bhyve`, or `kvm` (run as bhyve).
fn check_brand(m: &Map<String, Value>, out: &mut Problems) -> Option<String> {
    match m.get("brand") {
        None => {
            out.missing("brand", "\"bhyve\" or \"kvm\"");
            None
        }
        Some(Value::String(b)) => match b.as_str() {
            "bhyve" | "kvm" => Some(b.clone()),
            "joyent" | "joyent-minimal" | "lx" | "builder" => {
                out.bad_value("brand", format!("\"{b}\": OS VMs (zones) are not supported yet; use \"bhyve\""));
                None
            }
            _ => {
                out.bad_value(
                    "brand",
                    format!("must be \"bhyve\" or \"kvm\", got {}", describe(&Value::String(b.clone()))),
                );
                None
            }
        },
        Some(other) => {
            out.bad_value("brand", format!("must be \"bhyve\" or \"kvm\", got {}", describe(other)));
            None
        }
    }
}

/// Checks a `vmadm create` payload.
pub fn check_create(m: &Map<String, Value>) -> Checked {
    let mut out = Problems::default();
    let brand = check_brand(m, &mut out);
    let mut payload = Map::new();
    for (k, v) in m {
        if k == "brand" {
            continue;
        }
        let Some(prop) = properties::top(k) else {
            out.bad_property(k, "not a bhyve property");
            continue;
        };
        if !prop.create {
            out.bad_property(k, "set by the system; a create payload cannot give it");
            continue;
        }
        let checked = match prop.kind {
            Kind::Disks => {
                check_list(k, v, properties::MAX_DISKS, &mut out, |p, d, o| check_disk(p, d, Action::Create, o))
            }
            Kind::Nics => {
                check_list(k, v, properties::MAX_NICS, &mut out, |p, n, o| check_nic(p, n, Action::Create, o))
            }
            _ => check_value(k, prop, v, &mut out),
        };
        if let Some(v) = checked {
            payload.insert(k.clone(), v);
        }
    }
    if let Some(b) = &brand {
        payload.insert("brand".into(), Value::String(b.clone()));
    }
    // Rules between properties only once each property is fine on its
    // own (a refused disk would read as "no boot disk").
    let disks_ok = !out.bad_values.iter().chain(&out.missing_properties).any(|p| p.starts_with("disks"));
    if brand.is_some() {
        cross_checks(&mut payload, disks_ok, &mut out);
    }
    Checked { brand: brand.unwrap_or_default(), payload, problems: out }
}

fn check_list(
    path: &str,
    v: &Value,
    max: usize,
    out: &mut Problems,
    each: impl Fn(&str, &Value, &mut Problems) -> Option<Value>,
) -> Option<Value> {
    let Some(a) = v.as_array() else {
        out.bad_value(path, format!("must be an array of objects, got {}", describe(v)));
        return None;
    };
    if a.len() > max {
        out.bad_value(path, format!("must have at most {max} entries, got {}", a.len()));
        return None;
    }
    let items: Vec<Option<Value>> = a.iter().enumerate().map(|(i, x)| each(&format!("{path}.{i}"), x, out)).collect();
    items.into_iter().collect::<Option<Vec<_>>>().map(Value::Array)
}

/// Checks the sub-properties of one disk or NIC object.
fn check_object(
    path: &str,
    v: &Value,
    table: fn(&str) -> Option<&'static Prop>,
    action: Action,
    key: &str,
    out: &mut Problems,
) -> Option<Map<String, Value>> {
    let Some(m) = v.as_object() else {
        out.bad_value(path, format!("must be an object, got {}", describe(v)));
        return None;
    };
    let mut good = true;
    let mut res = Map::new();
    for (k, val) in m {
        let sp = format!("{path}.{k}");
        let Some(prop) = table(k) else {
            out.bad_property(&sp, "not a property of this object");
            continue;
        };
        let allowed = match action {
            Action::Create => prop.create,
            Action::Update => k == key || !matches!(prop.update, Update::No),
        };
        if !allowed {
            let why = if prop.read_only() { "set by the system" } else { "cannot be updated" };
            out.bad_property(&sp, why);
            continue;
        }
        match check_value(&sp, prop, val, out) {
            Some(x) => {
                res.insert(k.clone(), x);
            }
            None => good = false,
        }
    }
    good.then_some(res)
}

/// One `disks[]` entry (or an `add_disks` entry, `Action::Create`; an
/// `update_disks` entry, `Action::Update`, keyed by `path`).
pub fn check_disk(path: &str, v: &Value, action: Action, out: &mut Problems) -> Option<Value> {
    let d = check_object(path, v, properties::disk, action, "path", out)?;
    if action == Action::Update {
        if !d.contains_key("path") {
            out.missing(&format!("{path}.path"), "update_disks entries name the disk by its path");
            return None;
        }
        return Some(Value::Object(d));
    }
    if let Some(p) = d.get("path").and_then(Value::as_str)
        && (p.is_empty() || p.split('/').any(|c| c == ".." || c == "."))
    {
        out.bad_value(&format!("{path}.path"), format!("must not contain \".\" or \"..\" components, got \"{p}\""));
        return None;
    }
    let image = d.contains_key("image_uuid");
    let media_disk = d.get("media").and_then(Value::as_str).unwrap_or("disk") == "disk";
    let existing = d.get("nocreate") == Some(&Value::Bool(true)) || d.contains_key("path");
    if image && d.contains_key("size") {
        out.bad_value(&format!("{path}.size"), "not allowed with \"image_uuid\" (the disk is a clone of the image)");
        return None;
    }
    if image && d.contains_key("block_size") {
        out.bad_value(&format!("{path}.block_size"), "not allowed with \"image_uuid\" (the image has its block size)");
        return None;
    }
    if !image && media_disk && !existing && !d.contains_key("size") {
        out.missing(&format!("{path}.size"), "a new disk needs a size in MiB unless it has an \"image_uuid\"");
        return None;
    }
    Some(Value::Object(d))
}

/// The prefix length of a contiguous netmask.
fn prefix_of(mask: &str) -> Option<u32> {
    let m = u32::from(mask.parse::<Ipv4Addr>().ok()?);
    (m.leading_ones() + m.trailing_zeros() == 32).then_some(m.leading_ones())
}

fn netmask_of(prefix: u32) -> String {
    let bits = if prefix == 0 { 0 } else { u32::MAX << (32 - prefix) };
    Ipv4Addr::from(bits).to_string()
}

/// One `nics[]` entry (or `add_nics`, `Action::Create`; `update_nics`,
/// `Action::Update`, keyed by `mac`). Folds the deprecated `ip`/`netmask`/
/// `gateway` into `ips`/`gateways` and back, so both forms are kept
/// consistent as vmadm keeps them.
pub fn check_nic(path: &str, v: &Value, action: Action, out: &mut Problems) -> Option<Value> {
    let mut n = check_object(path, v, properties::nic, action, "mac", out)?;
    if action == Action::Update && !n.contains_key("mac") {
        out.missing(&format!("{path}.mac"), "update_nics entries name the NIC by its MAC address");
        return None;
    }
    if action == Action::Create && !n.contains_key("nic_tag") {
        out.missing(&format!("{path}.nic_tag"), "the network (nic tag or etherstub) the NIC is on");
        return None;
    }
    if let Some(tag) = n.get("nic_tag").and_then(Value::as_str)
        && (tag.is_empty() || !tag.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
    {
        out.bad_value(
            &format!("{path}.nic_tag"),
            format!("must be a link name (letters, digits, \"_\"), got \"{tag}\""),
        );
        return None;
    }
    if n.get("primary") == Some(&Value::Bool(false)) {
        n.remove("primary");
    }
    // ip (deprecated) <-> ips.
    if let Some(ip) = n.get("ip").and_then(Value::as_str).map(str::to_owned) {
        let ipp = format!("{path}.ip");
        let entry = if ip == "dhcp" || ip == "addrconf" {
            ip.clone()
        } else if ip.parse::<Ipv4Addr>().is_ok() {
            let Some(mask) = n.get("netmask").and_then(Value::as_str) else {
                out.missing(&format!("{path}.netmask"), "a static \"ip\" needs one");
                return None;
            };
            format!("{ip}/{}", prefix_of(mask).unwrap_or(32))
        } else {
            out.bad_value(&ipp, format!("must be an IPv4 address, \"dhcp\" or \"addrconf\", got \"{ip}\""));
            return None;
        };
        match n.get("ips").and_then(Value::as_array) {
            None => {
                n.insert("ips".into(), Value::Array(vec![Value::String(entry)]));
            }
            Some(ips) => {
                if !ips.iter().any(|x| x.as_str() == Some(entry.as_str())) {
                    out.bad_value(&ipp, format!("\"{ip}\" disagrees with \"ips\" (give one of them)"));
                    return None;
                }
            }
        }
    } else if let Some(first) = n.get("ips").and_then(Value::as_array).and_then(|ips| {
        ips.iter()
            .filter_map(Value::as_str)
            .find(|s| *s == "dhcp" || s.split('/').next().is_some_and(|a| a.parse::<Ipv4Addr>().is_ok()))
    }) {
        let first = first.to_owned();
        if first == "dhcp" {
            n.insert("ip".into(), Value::String(first));
        } else if let Some((addr, len)) = first.split_once('/') {
            let len: u32 = len.parse().unwrap_or(32);
            n.insert("ip".into(), Value::String(addr.to_owned()));
            n.insert("netmask".into(), Value::String(netmask_of(len)));
        }
    }
    // gateway (deprecated) <-> gateways.
    if let Some(gw) = n.get("gateway").and_then(Value::as_str).map(str::to_owned) {
        match n.get("gateways").and_then(Value::as_array) {
            None => {
                n.insert("gateways".into(), Value::Array(vec![Value::String(gw)]));
            }
            Some(gws) => {
                if gws.first().and_then(Value::as_str) != Some(gw.as_str()) {
                    out.bad_value(
                        &format!("{path}.gateway"),
                        format!("\"{gw}\" disagrees with \"gateways\" (give one of them)"),
                    );
                    return None;
                }
            }
        }
    } else if let Some(gw) = n.get("gateways").and_then(Value::as_array).and_then(|g| g.first()).cloned() {
        n.insert("gateway".into(), gw);
    }
    Some(Value::Object(n))
}

/// Rules between properties of a create payload.
fn cross_checks(p: &mut Map<String, Value>, disks_ok: bool, out: &mut Problems) {
    let ram = p.get("ram").and_then(Value::as_i64).unwrap_or(256);
    if let Some(mpm) = p.get("max_physical_memory").and_then(Value::as_i64)
        && mpm < ram
    {
        out.bad_value("max_physical_memory", format!("must be at least \"ram\" ({ram}), got {mpm}"));
        p.remove("max_physical_memory");
    }
    if let (Some(mlm), Some(mpm)) =
        (p.get("max_locked_memory").and_then(Value::as_i64), p.get("max_physical_memory").and_then(Value::as_i64))
        && mlm > mpm
    {
        out.bad_value("max_locked_memory", format!("must be at most \"max_physical_memory\" ({mpm}), got {mlm}"));
    }
    if p.contains_key("kernel") && p.contains_key("bootrom") {
        out.bad_value("kernel", "give \"kernel\" (direct boot) or \"bootrom\" (firmware), not both");
    }
    if !p.contains_key("kernel") {
        for k in ["initrd", "cmdline"] {
            if p.contains_key(k) {
                out.bad_value(k, "only with \"kernel\" (direct boot); a firmware boot's loader has its own");
            }
        }
    }
    if disks_ok {
        check_disk_set(p.get("disks"), !p.contains_key("kernel"), "disks", out);
    }
    check_nic_set(p.get("nics"), "nics", out);
}

/// Rules across the disks of one instance.
pub fn check_disk_set(disks: Option<&Value>, firmware: bool, path: &str, out: &mut Problems) {
    let disks = disks.and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[]);
    let boots = disks.iter().filter(|d| d.get("boot") == Some(&Value::Bool(true))).count();
    if boots > 1 {
        out.bad_value(path, format!("at most one disk may have \"boot\": true, got {boots}"));
    }
    if firmware && boots == 0 {
        out.bad_value(
            path,
            "a VM that boots through its bootrom needs one disk with \"boot\": true (or give \"kernel\" to boot directly)",
        );
    }
    for key in ["uuid", "path"] {
        let mut seen: Vec<&str> = Vec::new();
        for (i, d) in disks.iter().enumerate() {
            if let Some(u) = d.get(key).and_then(Value::as_str) {
                if seen.contains(&u) {
                    out.bad_value(&format!("{path}.{i}.{key}"), format!("\"{u}\" is used by another disk"));
                }
                seen.push(u);
            }
        }
    }
}

/// Rules across the NICs of one instance.
pub fn check_nic_set(nics: Option<&Value>, path: &str, out: &mut Problems) {
    let nics = nics.and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[]);
    let primaries = nics.iter().filter(|n| n.get("primary") == Some(&Value::Bool(true))).count();
    if primaries > 1 {
        out.bad_value(path, format!("at most one NIC may have \"primary\": true, got {primaries}"));
    }
    let mut seen: Vec<&str> = Vec::new();
    for (i, n) in nics.iter().enumerate() {
        if let Some(m) = n.get("mac").and_then(Value::as_str) {
            if seen.contains(&m) {
                out.bad_value(&format!("{path}.{i}.mac"), format!("\"{m}\" is used by another NIC"));
            }
            seen.push(m);
        }
    }
}

/// The special members of an update payload: `set_X`/`remove_X` for the
/// key/value properties, `add_X`/`remove_X`/`update_X` for disks and NICs.
const MAPS: &[&str] = &["customer_metadata", "internal_metadata", "tags"];

/// Checks a `vmadm update` payload for an instance of `brand`.
pub fn check_update(brand: &str, m: &Map<String, Value>) -> Checked {
    let mut out = Problems::default();
    let mut payload = Map::new();
    for (k, v) in m {
        let special = k
            .strip_prefix("set_")
            .map(|r| ("set", r))
            .or_else(|| k.strip_prefix("remove_").map(|r| ("remove", r)))
            .or_else(|| k.strip_prefix("add_").map(|r| ("add", r)))
            .or_else(|| k.strip_prefix("update_").map(|r| ("update", r)));
        let checked = match special {
            Some(("set", name)) if MAPS.contains(&name) => check_map(k, v, name == "tags", &mut out),
            Some(("remove", name)) if MAPS.contains(&name) => check_value(k, &KEY_LIST, v, &mut out),
            Some(("add", "disks")) => {
                check_list(k, v, properties::MAX_DISKS, &mut out, |p, d, o| check_disk(p, d, Action::Create, o))
            }
            Some(("add", "nics")) => {
                check_list(k, v, properties::MAX_NICS, &mut out, |p, d, o| check_nic(p, d, Action::Create, o))
            }
            Some(("update", "disks")) => {
                check_list(k, v, properties::MAX_DISKS, &mut out, |p, d, o| check_disk(p, d, Action::Update, o))
            }
            Some(("update", "nics")) => {
                check_list(k, v, properties::MAX_NICS, &mut out, |p, d, o| check_nic(p, d, Action::Update, o))
            }
            Some(("remove", "disks")) => check_value(k, &PATH_LIST, v, &mut out),
            Some(("remove", "nics")) => check_value(k, &MAC_LIST, v, &mut out).map(|v| {
                let macs = v.as_array().map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .filter_map(parse_mac)
                        .map(|m| Value::String(mac_text(m)))
                        .collect()
                });
                Value::Array(macs.unwrap_or_default())
            }),
            _ => match properties::top(k) {
                None => {
                    out.bad_property(k, "not a bhyve property");
                    None
                }
                Some(p) if matches!(p.update, Update::No) => {
                    let why =
                        if p.read_only() { "set by the system" } else { "cannot be updated (only given at create)" };
                    out.bad_property(k, why);
                    None
                }
                Some(p) if matches!(p.kind, Kind::Disks | Kind::Nics) => {
                    out.bad_property(k, format!("update with add_{k}, remove_{k} or update_{k}"));
                    None
                }
                // `null` clears a property that has no default (as vmadm).
                Some(p) if v.is_null() && p.default.is_none() => Some(Value::Null),
                Some(p) => check_value(k, p, v, &mut out),
            },
        };
        if let Some(v) = checked {
            payload.insert(k.clone(), v);
        }
    }
    Checked { brand: brand.into(), payload, problems: out }
}

const KEY_LIST: Prop = Prop {
    name: "remove_",
    kind: Kind::List { item: Item::Str { max: properties::MAX_META_KEY }, max: properties::MAX_META_KEYS },
    create: false,
    update: Update::Stored,
    listable: false,
    default: None,
    support: Support::Kept,
};
const PATH_LIST: Prop = Prop {
    kind: Kind::List { item: Item::Str { max: properties::MAX_STRING }, max: properties::MAX_DISKS },
    ..KEY_LIST
};
const MAC_LIST: Prop = Prop { kind: Kind::List { item: Item::Str { max: 32 }, max: properties::MAX_NICS }, ..KEY_LIST };

/// Fills in what `vmadm create` adds to a checked payload: the table's
/// defaults, the computed ones (`max_physical_memory` = `ram` + 1024,
/// `max_locked_memory`, `max_swap`, `bootrom` for a VM without `kernel`,
/// disk and NIC models from `disk_driver`/`nic_driver`), a primary NIC, NIC
/// interface names, and generated values (the VM's uuid, disk uuids and
/// paths, NIC MACs in 90:b8:d0:xx:xx:xx) from the caller's random source.
pub fn create_defaults(p: &mut Map<String, Value>, random: &mut dyn FnMut(&mut [u8])) {
    for prop in properties::TOP {
        if p.contains_key(prop.name) {
            continue;
        }
        if let Some(v) = plain_default(prop) {
            p.insert(prop.name.into(), v);
        }
    }
    if !p.contains_key("uuid") {
        p.insert("uuid".into(), Value::String(Uuid::new_v4(random).text()));
    }
    p.entry("autoboot").or_insert(Value::Bool(true));
    let ram = p.get("ram").and_then(Value::as_i64).unwrap_or(256);
    let mpm = p.entry("max_physical_memory").or_insert(Value::from(ram + 1024)).clone();
    let mpm = mpm.as_i64().unwrap_or(ram + 1024);
    p.entry("max_locked_memory").or_insert(Value::from(mpm));
    p.entry("max_swap").or_insert(Value::from(mpm.max(256)));
    if !p.contains_key("kernel") {
        p.entry("bootrom").or_insert(Value::String("bios".into()));
    }
    let uuid = p["uuid"].as_str().unwrap_or_default().to_owned();
    let disk_model = p.get("disk_driver").cloned().unwrap_or(Value::String("virtio".into()));
    let nic_model = p.get("nic_driver").cloned().unwrap_or(Value::String("virtio".into()));
    if let Some(Value::Array(disks)) = p.get_mut("disks") {
        fill_disks(disks, 0, &uuid, &disk_model, random);
    }
    if let Some(Value::Array(nics)) = p.get_mut("nics") {
        fill_nics(nics, 0, &nic_model, random);
    }
}

fn plain_default(prop: &Prop) -> Option<Value> {
    match prop.default? {
        Default::Bool(b) => Some(Value::Bool(b)),
        Default::Int(n) => Some(Value::from(n)),
        Default::Str(s) => Some(Value::String(s.into())),
        Default::EmptyMap => Some(Value::Object(Map::new())),
        Default::Computed => None,
    }
}

/// Defaults of new disks (at create, or `add_disks`): `first` is the
/// index of the first new one among the instance's disks.
pub fn fill_disks(disks: &mut [Value], first: usize, vm_uuid: &str, model: &Value, random: &mut dyn FnMut(&mut [u8])) {
    for (i, d) in disks.iter_mut().enumerate() {
        let Value::Object(d) = d else { continue };
        for prop in properties::DISK {
            if !d.contains_key(prop.name)
                && let Some(v) = plain_default(prop)
            {
                d.insert(prop.name.into(), v);
            }
        }
        d.entry("model").or_insert(model.clone());
        d.entry("uuid").or_insert_with(|| Value::String(Uuid::new_v4(random).text()));
        d.entry("path").or_insert_with(|| Value::String(format!("/dev/zvol/rdsk/zones/{vm_uuid}/disk{}", first + i)));
    }
}

/// Defaults of new NICs (at create, or `add_nics`).
pub fn fill_nics(nics: &mut [Value], first: usize, model: &Value, random: &mut dyn FnMut(&mut [u8])) {
    let has_primary = nics.iter().any(|n| n.get("primary") == Some(&Value::Bool(true)));
    for (i, n) in nics.iter_mut().enumerate() {
        let Value::Object(n) = n else { continue };
        for prop in properties::NIC {
            if !n.contains_key(prop.name)
                && let Some(v) = plain_default(prop)
            {
                n.insert(prop.name.into(), v);
            }
        }
        n.entry("model").or_insert(model.clone());
        n.entry("interface").or_insert_with(|| Value::String(format!("net{}", first + i)));
        n.entry("mac").or_insert_with(|| {
            let mut b = [0u8; 3];
            random(&mut b);
            Value::String(mac_text([0x90, 0xb8, 0xd0, b[0], b[1], b[2]]))
        });
        if first == 0 && i == 0 && !has_primary {
            n.insert("primary".into(), Value::Bool(true));
        }
    }
}
