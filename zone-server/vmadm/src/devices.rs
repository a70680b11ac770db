//! The HVM devices of a payload: `disks[]` and `nics[]` entries, the
//! rules across them (one boot disk, one primary NIC, unique uuids, paths
//! and MACs), vmadm's deprecated NIC forms, and the defaults new disks and
//! NICs get.

use alloc::borrow::ToOwned;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;
use core::net::Ipv4Addr;

use serde_json::{Map, Value};

use crate::properties::{self, Prop, Update};
use crate::uuid::Uuid;
use crate::validate::{Action, Problems, plain_default};
use crate::values::{check_value, describe, mac_text};

pub(crate) fn check_list(
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
pub(crate) fn check_object(
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
pub(crate) fn prefix_of(mask: &str) -> Option<u32> {
    let m = u32::from(mask.parse::<Ipv4Addr>().ok()?);
    (m.leading_ones() + m.trailing_zeros() == 32).then_some(m.leading_ones())
}

pub(crate) fn netmask_of(prefix: u32) -> String {
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
    // An update_nics entry is folded once merged into its NIC (update.rs).
    if action == Action::Update || fold_nic(&mut n, path, out) { Some(Value::Object(n)) } else { None }
}

/// Folds vmadm's deprecated `ip`/`netmask`/`gateway` into `ips`/`gateways`
/// and back, so a NIC holds both forms, consistent, as vmadm keeps them.
/// False (with the problem recorded) when they disagree.
pub fn fold_nic(n: &mut Map<String, Value>, path: &str, out: &mut Problems) -> bool {
    // ip (deprecated) <-> ips.
    if let Some(ip) = n.get("ip").and_then(Value::as_str).map(str::to_owned) {
        let ipp = format!("{path}.ip");
        let entry = if ip == "dhcp" || ip == "addrconf" {
            ip.clone()
        } else if ip.parse::<Ipv4Addr>().is_ok() {
            let Some(mask) = n.get("netmask").and_then(Value::as_str) else {
                out.missing(&format!("{path}.netmask"), "a static \"ip\" needs one");
                return false;
            };
            format!("{ip}/{}", prefix_of(mask).unwrap_or(32))
        } else {
            out.bad_value(&ipp, format!("must be an IPv4 address, \"dhcp\" or \"addrconf\", got \"{ip}\""));
            return false;
        };
        match n.get("ips").and_then(Value::as_array) {
            None => {
                n.insert("ips".into(), Value::Array(vec![Value::String(entry)]));
            }
            Some(ips) => {
                if !ips.iter().any(|x| x.as_str() == Some(entry.as_str())) {
                    out.bad_value(&ipp, format!("\"{ip}\" disagrees with \"ips\" (give one of them)"));
                    return false;
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
                    return false;
                }
            }
        }
    } else if let Some(gw) = n.get("gateways").and_then(Value::as_array).and_then(|g| g.first()).cloned() {
        n.insert("gateway".into(), gw);
    }
    true
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
