//! `vmadm list` and `vmadm lookup` output, as SmartOS prints them.
//!
//! `list`: default columns `uuid,type,ram,state,alias`, sorted by
//! `ram,uuid` (`-field` sorts descending), a header of the field names in
//! upper case, columns two spaces apart (UUID, TYPE, RAM and STATE at
//! least vmadm's widths of 36, 4, 7 and 16), `-` for a missing value;
//! `-p`: colon-separated, no header; `-H`: no header.

use alloc::borrow::ToOwned;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::cmp::Ordering;

use serde_json::{Map, Value};

use crate::properties;
use crate::registry::{Instance, text_of};

pub const DEFAULT_FIELDS: &[&str] = &["uuid", "type", "ram", "state", "alias"];
pub const DEFAULT_SORT: &[&str] = &["ram", "uuid"];

/// How `list` prints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListFormat {
    pub fields: Vec<String>,
    /// Sort keys; a leading `-` sorts that key descending.
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

/// Checks `-o`/`-s` fields: each must be listable.
pub fn check_fields(fields: &[String], sort: bool) -> Result<(), String> {
    for f in fields {
        let name = if sort { f.strip_prefix('-').unwrap_or(f) } else { f.as_str() };
        if !properties::listable(name) {
            let what = if sort { "sort" } else { "output" };
            return Err(alloc::format!("Invalid {what} field \"{name}\": not a listable property"));
        }
    }
    Ok(())
}

fn compare(a: Option<&Value>, b: Option<&Value>) -> Ordering {
    match (a, b) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
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
            None => (k.as_str(), false),
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

fn min_width(field: &str) -> usize {
    match field {
        "uuid" => 36,
        "type" => 4,
        "ram" => 7,
        "state" => 16,
        _ => 0,
    }
}

/// The text of `vmadm list` for these instances.
pub fn render(vms: Vec<&Instance>, server_uuid: &str, fmt: &ListFormat) -> String {
    let vms = sort(vms, &fmt.sort, server_uuid);
    let cell =
        |vm: &Instance, f: &str| vm.field(f, server_uuid).first().and_then(text_of).unwrap_or_else(|| "-".to_owned());
    let rows: Vec<Vec<String>> = vms.iter().map(|vm| fmt.fields.iter().map(|f| cell(vm, f)).collect()).collect();
    let mut out = String::new();
    if fmt.parsable {
        for r in rows {
            out.push_str(&r.join(":"));
            out.push('\n');
        }
        return out;
    }
    let headers: Vec<String> = fmt.fields.iter().map(|f| f.to_uppercase()).collect();
    let widths: Vec<usize> = fmt
        .fields
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let longest = rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0);
            min_width(f).max(headers[i].len()).max(longest)
        })
        .collect();
    let mut line = |cells: &[String]| {
        let mut l = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                l.push_str(c);
            } else {
                l.push_str(c);
                for _ in c.chars().count()..widths[i] + 2 {
                    l.push(' ');
                }
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    if fmt.header {
        line(&headers);
    }
    for r in &rows {
        line(r);
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
