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
use alloc::vec::Vec;

use serde_json::{Map, Value};

use crate::devices::check_list;
pub use crate::devices::{check_disk, check_disk_set, check_nic, check_nic_set, fill_disks, fill_nics, fold_nic};
use crate::properties::{self, Default, Item, Kind, Prop, Support, Update};
use crate::uuid::Uuid;
pub use crate::values::check_value;
use crate::values::{check_map, describe, mac_text, parse_mac};

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

/// The longest property name repeated in a message.
pub const MAX_NAME_SHOWN: usize = 128;

/// A property name as messages show it: control characters escaped (a
/// payload's key must not drive the terminal that prints the error) and
/// cut to [`MAX_NAME_SHOWN`] characters.
pub fn printable(name: &str) -> String {
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if i == MAX_NAME_SHOWN {
            out.push_str("...");
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// A reason cut to 256 characters (it may quote the value given).
fn short(why: &str) -> String {
    match why.char_indices().nth(256) {
        Some((i, _)) => format!("{}...", &why[..i]),
        None => why.to_owned(),
    }
}

impl Problems {
    pub fn bad_value(&mut self, property: &str, why: impl AsRef<str>) {
        let property = printable(property);
        push_once(&mut self.bad_values, &property);
        self.reasons.push(format!("vmadm: property \"{property}\": {}", short(why.as_ref())));
    }
    pub fn bad_property(&mut self, property: &str, why: impl AsRef<str>) {
        let property = printable(property);
        push_once(&mut self.bad_properties, &property);
        self.reasons.push(format!("vmadm: property \"{property}\": {}", short(why.as_ref())));
    }
    pub fn missing(&mut self, property: &str, why: impl AsRef<str>) {
        let property = printable(property);
        push_once(&mut self.missing_properties, &property);
        self.reasons.push(format!("vmadm: property \"{property}\": required ({})", short(why.as_ref())));
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
    /// The failure object as `vmadm validate` prints it: pretty JSON with
    /// a two-space indent, members in vmadm's order.
    pub fn json_pretty(&self) -> String {
        let list = |v: &Vec<String>| {
            if v.is_empty() {
                return "[]".to_owned();
            }
            let items: Vec<String> = v.iter().map(|s| format!("    {}", Value::String(s.clone()))).collect();
            format!("[\n{}\n  ]", items.join(",\n"))
        };
        format!(
            "{{\n  \"bad_values\": {},\n  \"bad_properties\": {},\n  \"missing_properties\": {}\n}}",
            list(&self.bad_values),
            list(&self.bad_properties),
            list(&self.missing_properties)
        )
    }

    /// The failure object on one line: `{"bad_values":[..],"bad_properties":[..],"missing_properties":[..]}`.
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
            "Invalid JSON payload: {} bytes; at most {} are accepted",
            text.len(),
            properties::MAX_PAYLOAD
        ));
    }
    let value: Value = serde_json::from_str(text).map_err(|e| format!("Invalid JSON payload: {e}"))?;
    if depth(&value) > properties::MAX_DEPTH {
        return Err(format!("Invalid JSON payload: nests deeper than {} levels", properties::MAX_DEPTH));
    }
    match value {
        Value::Object(m) => Ok(m),
        _ => Err("Invalid JSON payload: must be a JSON object".into()),
    }
}

fn depth(v: &Value) -> usize {
    match v {
        Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        Value::Object(m) => 1 + m.values().map(depth).max().unwrap_or(0),
        _ => 0,
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
        // The description as `create` will make it: generated values
        // (uuid, disk paths, MACs) have the same length whatever they are.
        let mut filled = payload.clone();
        create_defaults(&mut filled, &mut |b| b.fill(0));
        check_vm_json(&filled, &mut out);
    }
    Checked { brand: brand.unwrap_or_default(), payload, problems: out }
}

/// Refuses an instance (its full properties, defaults filled in) whose
/// description for its VMM ([`crate::vmm::vm_config_json`]) would be
/// longer than a VMM is started with ([`properties::MAX_VM_JSON`]),
/// naming the property that takes the most of it (`customer_metadata`,
/// as a rule): SmartOS's `bad_values` and a reason with the figures.
///
/// And one whose record (the properties, with what `vmadm get` computes)
/// would be longer than the pool keeps ([`properties::MAX_RECORD`]),
/// naming the largest property as well.
pub fn check_vm_json(props: &Map<String, Value>, out: &mut Problems) {
    let record = json_len(props) + properties::RECORD_OVERHEAD;
    if record > properties::MAX_RECORD {
        let (name, largest) = largest_property(props);
        out.bad_value(
            name,
            format!(
                "{largest} bytes: they make the VM's record about {record} bytes, more than the {} the pool keeps for it",
                properties::MAX_RECORD
            ),
        );
        return;
    }
    // A machine's uuid is as long as any other's: measured with a stand-in.
    let config = crate::vmm::vm_config(props, "00000000-0000-0000-0000-000000000000");
    let bytes = json_len(&config);
    if bytes <= properties::MAX_VM_JSON {
        return;
    }
    let (name, largest) = largest_property(&config);
    out.bad_value(
        name,
        format!(
            "{largest} bytes: they make the VM's description for its VMM (vm.json) {bytes} bytes, more than the {} a VMM is started with",
            properties::MAX_VM_JSON
        ),
    );
}

/// Bytes of `map` as JSON (serialized in place, not copied into a value).
fn json_len(map: &Map<String, Value>) -> usize {
    serde_json::to_string(map).map_or(0, |s| s.len())
}

/// The property of `map` whose JSON value is the longest, and its bytes
/// (`customer_metadata` for an empty map).
fn largest_property(map: &Map<String, Value>) -> (&str, usize) {
    map.iter().map(|(k, v)| (k.as_str(), v.to_string().len())).max_by_key(|(_, n)| *n).unwrap_or(("customer_metadata", 0))
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

pub(crate) fn plain_default(prop: &Prop) -> Option<Value> {
    match prop.default? {
        Default::Bool(b) => Some(Value::Bool(b)),
        Default::Int(n) => Some(Value::from(n)),
        Default::Str(s) => Some(Value::String(s.into())),
        Default::EmptyMap => Some(Value::Object(Map::new())),
        Default::Computed => None,
    }
}
