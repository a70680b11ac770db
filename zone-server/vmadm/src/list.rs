//! `vmadm list` and `vmadm lookup` output, as vmadm(8) prints them.
//!
//! `list`: default columns `uuid,type,ram,state,alias`, sorted by
//! `ram,uuid` (`-field` descending, `+field` ascending). Each column has
//! vmadm's fixed width ([`LIST_FIELDS`]; 20 for `nics.N.x`, `disks.N.x` and
//! `tags.x`-style fields), values are left-aligned and padded to it (a
//! longer value pushes the rest of the line right, as vmadm's `%-Ns`),
//! columns are two spaces apart and lines have no trailing blanks. A value
//! that is missing or false-like (vmadm tests JavaScript truthiness: `0`,
//! `false`, `""`) prints as `-`, and sorts after the others. `-p`:
//! colon-separated, no header, such values empty; `-H`: no header.

use alloc::borrow::ToOwned;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::cmp::Ordering;

use serde_json::{Map, Value};

use crate::registry::{Instance, text_of};

pub const DEFAULT_FIELDS: &[&str] = &["uuid", "type", "ram", "state", "alias"];
pub const DEFAULT_SORT: &[&str] = &["ram", "uuid"];

/// The fields `list -o/-s` and filters know by name, with vmadm's header
/// and column width (bhyve's; the OS-only ones are left out).
pub const LIST_FIELDS: &[(&str, &str, usize)] = &[
    ("alias", "ALIAS", 10),
    ("autoboot", "AUTOBOOT", 8),
    ("billing_id", "BILLING_ID", 36),
    ("boot_timestamp", "BOOT_TIMESTAMP", 24),
    ("brand", "BRAND", 14),
    ("cpu_cap", "CPU_CAP", 7),
    ("cpu_shares", "CPU_SHARE", 9),
    ("cpu_type", "CPU_TYPE", 8),
    ("create_timestamp", "CREATE_TIMESTAMP", 24),
    ("do_not_inventory", "DNI", 5),
    ("hostname", "HOSTNAME", 32),
    ("image_uuid", "IMAGE_UUID", 36),
    ("indestructible_delegated", "INDESTR_DATA", 12),
    ("indestructible_zoneroot", "INDESTR_ROOT", 12),
    ("max_locked_memory", "MAX_LOCKED", 10),
    ("max_lwps", "MAX_LWP", 7),
    ("max_physical_memory", "MAX_PHYS", 8),
    ("max_swap", "MAX_SWAP", 8),
    ("owner_uuid", "OWNER_UUID", 36),
    ("package_name", "PACKAGE_NAME", 32),
    ("package_version", "PACKAGE_VER", 11),
    ("pid", "PID", 6),
    ("quota", "QUOTA", 5),
    ("ram", "RAM", 7),
    ("state", "STATE", 16),
    ("type", "TYPE", 4),
    ("uuid", "UUID", 36),
    ("vcpus", "VCPUS", 5),
    ("zfs_io_priority", "IO_PRIORITY", 11),
    ("zone_state", "ZONE_STATE", 10),
    ("zoneid", "ZONEID", 6),
    ("zonename", "ZONENAME", 12),
    ("zonepath", "ZONEPATH", 40),
    ("zpool", "ZPOOL", 12),
];

/// The key/value properties whose keys are fields (`tags.role`).
const FLAT_MAPS: &[&str] = &["customer_metadata", "internal_metadata", "tags"];

/// A column: its header and width, or `None` when `field` cannot be a
/// column or a sort key (vmadm: "invalid order field").
pub fn column(field: &str) -> Option<(String, usize)> {
    if let Some((_, h, w)) = LIST_FIELDS.iter().find(|(n, _, _)| *n == field) {
        return Some(((*h).to_owned(), *w));
    }
    let parts: Vec<&str> = field.split('.').collect();
    let ok = match parts.as_slice() {
        ["disks" | "nics", idx, sub] => *idx != "*" && !idx.is_empty() && !sub.is_empty(),
        [map, key] => FLAT_MAPS.contains(map) && !key.is_empty(),
        _ => false,
    };
    ok.then(|| (field.to_uppercase(), 20))
}

/// Whether `field` may be a `list`/`lookup` filter (vmadm's
/// `validFilterKey`).
pub fn filter_key(field: &str) -> bool {
    const DISK: &[&str] = &["boot", "image_name", "image_size", "image_uuid", "size", "media", "model", "zpool"];
    const NIC: &[&str] =
        &["dhcp_server", "gateway", "interface", "ip", "mac", "model", "netmask", "nic_tag", "vlan_id"];
    if LIST_FIELDS.iter().any(|(n, _, _)| *n == field) {
        return true;
    }
    let idx_ok = |i: &str| i.bytes().all(|b| b == b'*' || b.is_ascii_digit());
    match field.split('.').collect::<Vec<_>>().as_slice() {
        ["disks", i, sub] => idx_ok(i) && DISK.contains(sub),
        ["nics", i, sub] => idx_ok(i) && NIC.contains(sub),
        [map, key, ..] => FLAT_MAPS.contains(map) && !key.is_empty(),
        _ => false,
    }
}

/// How `list` prints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListFormat {
    pub fields: Vec<String>,
    /// Sort keys; a leading `-` sorts that key descending, `+` ascending.
    pub sort: Vec<String>,
    /// `-p`.
    pub parsable: bool,
    /// Not `-H` (and not `-p`).
    pub header: bool,
}

impl Default for ListFormat {
    fn default() -> Self {
        Self {
            fields: DEFAULT_FIELDS.iter().map(|s| (*s).to_owned()).collect(),
            sort: DEFAULT_SORT.iter().map(|s| (*s).to_owned()).collect(),
            parsable: false,
            header: true,
        }
    }
}

/// Checks `-o` (`sort` false) or `-s` fields: vmadm's "invalid order
/// field: x" / "invalid sort field: x".
pub fn check_fields(fields: &[String], sort: bool) -> Result<(), String> {
    for f in fields {
        let name = if sort { f.strip_prefix(['-', '+']).unwrap_or(f) } else { f.as_str() };
        if column(name).is_none() {
            let what = if sort { "sort" } else { "order" };
            return Err(format!("invalid {what} field: {f}"));
        }
    }
    Ok(())
}

/// JavaScript's truthiness of a value, which vmadm's list tests.
fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
}

fn compare(a: Option<&Value>, b: Option<&Value>) -> Ordering {
    let a = a.filter(|v| truthy(v));
    let b = b.filter(|v| truthy(v));
    match (a, b) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Greater,
        (Some(_), None) => Ordering::Less,
        (Some(x), Some(y)) => match (x.as_f64(), y.as_f64()) {
            (Some(p), Some(q)) => p.partial_cmp(&q).unwrap_or(Ordering::Equal),
            _ => text_of(x).cmp(&text_of(y)),
        },
    }
}

/// Orders instances by `keys` (`-key` descending); each instance's keys
/// are looked up once.
pub fn sort<'a>(vms: Vec<&'a Instance>, keys: &[String], server_uuid: &str) -> Vec<&'a Instance> {
    let parsed: Vec<(&str, bool)> = keys
        .iter()
        .map(|k| match k.strip_prefix('-') {
            Some(n) => (n, true),
            None => (k.strip_prefix('+').unwrap_or(k), false),
        })
        .collect();
    let mut keyed: Vec<(Vec<Option<Value>>, &Instance)> = vms
        .into_iter()
        .map(|vm| (parsed.iter().map(|(name, _)| vm.field(name, server_uuid).into_iter().next()).collect(), vm))
        .collect();
    keyed.sort_by(|(a, _), (b, _)| {
        for (i, (_, desc)) in parsed.iter().enumerate() {
            let o = compare(a[i].as_ref(), b[i].as_ref());
            let o = if *desc { o.reverse() } else { o };
            if o != Ordering::Equal {
                return o;
            }
        }
        Ordering::Equal
    });
    keyed.into_iter().map(|(_, vm)| vm).collect()
}

/// The text of `vmadm list` for these instances.
pub fn render(vms: Vec<&Instance>, server_uuid: &str, fmt: &ListFormat) -> String {
    let vms = sort(vms, &fmt.sort, server_uuid);
    let columns: Vec<(String, usize)> =
        fmt.fields.iter().map(|f| column(f).unwrap_or_else(|| (f.to_uppercase(), 20))).collect();
    let mut out = String::new();
    let mut line = |cells: Vec<String>| {
        let mut l = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i > 0 {
                l.push_str(if fmt.parsable { ":" } else { "  " });
            }
            l.push_str(c);
            if !fmt.parsable {
                for _ in c.chars().count()..columns[i].1 {
                    l.push(' ');
                }
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    if fmt.header {
        line(columns.iter().map(|(h, _)| h.clone()).collect());
    }
    for vm in vms {
        line(
            fmt.fields
                .iter()
                .map(|f| match vm.field(f, server_uuid).into_iter().next().filter(truthy).and_then(|v| text_of(&v)) {
                    Some(t) => t,
                    None if fmt.parsable => String::new(),
                    None => "-".to_owned(),
                })
                .collect(),
        );
    }
    out
}

/// `lookup -j [-o fields]`: the objects as a JSON array (two-space
/// indent), each cut down to `fields` when given.
pub fn lookup_json(vms: &[Map<String, Value>], fields: Option<&[String]>) -> String {
    let arr: Vec<Value> = vms
        .iter()
        .map(|vm| match fields {
            None => Value::Object(vm.clone()),
            Some(fs) => {
                let mut m = Map::new();
                for f in fs {
                    if let Some(v) = vm.get(f.as_str()) {
                        m.insert(f.clone(), v.clone());
                    }
                }
                Value::Object(m)
            }
        })
        .collect();
    let mut s = serde_json::to_string_pretty(&Value::Array(arr)).unwrap_or_default();
    s.push('\n');
    s
}

/// Renders one `vmadm get` object.
pub fn get_json(vm: &Map<String, Value>) -> String {
    let mut s = serde_json::to_string_pretty(vm).unwrap_or_else(|e| e.to_string());
    s.push('\n');
    s
}
