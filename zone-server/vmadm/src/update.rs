//! `vmadm update`: applies a checked update payload to an instance.
//!
//! Which properties may change and when they take effect come from the
//! table ([`crate::properties::Update`]): `Live` ones change the running VM
//! at once (`cpu_cap`, `quota`, metadata...), `NextStart` ones when it next
//! starts (`ram`, `vcpus`, disks, NICs...), `Stored` ones are kept. The
//! special members: `set_X`/`remove_X` for `customer_metadata`,
//! `internal_metadata` and `tags`; `add_X`/`remove_X`/`update_X` for
//! `disks` (keyed by `path`) and `nics` (keyed by `mac`).

use alloc::borrow::ToOwned;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use serde_json::{Map, Value};

use crate::properties::{self, Update};
use crate::validate::{self, Problems};

/// What an update changed, by when it takes effect.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// Changed on the running VM now.
    pub live: Vec<String>,
    /// Takes effect when the VM next starts.
    pub next_start: Vec<String>,
    /// Kept; does not change the VM.
    pub stored: Vec<String>,
}

impl Applied {
    fn note(&mut self, name: &str, when: Update) {
        let list = match when {
            Update::Live => &mut self.live,
            Update::NextStart => &mut self.next_start,
            Update::Stored | Update::No => &mut self.stored,
        };
        if !list.iter().any(|n| n == name) {
            list.push(name.to_owned());
        }
    }
}

fn map_mut<'a>(props: &'a mut Map<String, Value>, name: &str) -> &'a mut Map<String, Value> {
    let v = props.entry(name).or_insert_with(|| Value::Object(Map::new()));
    if !v.is_object() {
        *v = Value::Object(Map::new());
    }
    v.as_object_mut().expect("just made an object")
}

fn list_mut<'a>(props: &'a mut Map<String, Value>, name: &str) -> &'a mut Vec<Value> {
    let v = props.entry(name).or_insert_with(|| Value::Array(Vec::new()));
    if !v.is_array() {
        *v = Value::Array(Vec::new());
    }
    v.as_array_mut().expect("just made an array")
}

/// Applies `update` (from [`validate::check_update`], without problems)
/// to `props`, the instance's properties; on success `props` holds the new
/// record. New disks and NICs get their defaults (`random` makes their
/// uuids and MACs). Nothing changes on failure.
pub fn apply(
    props: &mut Map<String, Value>,
    update: &Map<String, Value>,
    random: &mut dyn FnMut(&mut [u8]),
) -> Result<Applied, Problems> {
    let mut new = props.clone();
    let mut out = Problems::default();
    let mut done = Applied::default();
    let uuid = new.get("uuid").and_then(Value::as_str).unwrap_or_default().to_owned();
    for (k, v) in update {
        if let Some(name) = k.strip_prefix("set_") {
            let m = map_mut(&mut new, name);
            for (key, val) in v.as_object().into_iter().flatten() {
                m.insert(key.clone(), val.clone());
            }
            if m.len() > properties::MAX_META_KEYS {
                out.bad_value(k, format!("{name} would have more than {} keys", properties::MAX_META_KEYS));
            }
            done.note(name, properties::top(name).map_or(Update::Stored, |p| p.update));
        } else if k == "remove_disks" {
            let disks = list_mut(&mut new, "disks");
            for path in v.as_array().into_iter().flatten().filter_map(Value::as_str) {
                match disks.iter().position(|d| d.get("path").and_then(Value::as_str) == Some(path)) {
                    Some(i) => {
                        disks.remove(i);
                    }
                    None => out.bad_value(k, format!("no disk has path \"{path}\"")),
                }
            }
            done.note("disks", Update::NextStart);
        } else if k == "remove_nics" {
            let nics = list_mut(&mut new, "nics");
            for mac in v.as_array().into_iter().flatten().filter_map(Value::as_str) {
                match nics.iter().position(|n| n.get("mac").and_then(Value::as_str) == Some(mac)) {
                    Some(i) => {
                        nics.remove(i);
                    }
                    None => out.bad_value(k, format!("no NIC has MAC address {mac}")),
                }
            }
            done.note("nics", Update::NextStart);
        } else if let Some(name) = k.strip_prefix("remove_") {
            let m = map_mut(&mut new, name);
            for key in v.as_array().into_iter().flatten().filter_map(Value::as_str) {
                m.remove(key);
            }
            done.note(name, properties::top(name).map_or(Update::Stored, |p| p.update));
        } else if k == "add_disks" {
            let model = new.get("disk_driver").cloned().unwrap_or(Value::String("virtio".into()));
            let disks = list_mut(&mut new, "disks");
            let first = disks.len();
            let mut added: Vec<Value> = v.as_array().cloned().unwrap_or_default();
            // New disks are numbered after the highest existing diskN.
            let next = disks
                .iter()
                .filter_map(|d| d.get("path").and_then(Value::as_str))
                .filter_map(|p| p.rsplit_once("/disk").and_then(|(_, n)| n.parse::<usize>().ok()))
                .map(|n| n + 1)
                .max()
                .unwrap_or(0)
                .max(first);
            validate::fill_disks(&mut added, next, &uuid, &model, random);
            disks.extend(added);
            if disks.len() > properties::MAX_DISKS {
                out.bad_value(k, format!("an instance has at most {} disks", properties::MAX_DISKS));
            }
            done.note("disks", Update::NextStart);
        } else if k == "add_nics" {
            let model = new.get("nic_driver").cloned().unwrap_or(Value::String("virtio".into()));
            let nics = list_mut(&mut new, "nics");
            let first = nics.len();
            let mut added: Vec<Value> = v.as_array().cloned().unwrap_or_default();
            validate::fill_nics(&mut added, first, &model, random);
            if added.iter().any(|n| n.get("primary") == Some(&Value::Bool(true))) {
                for n in nics.iter_mut().filter_map(Value::as_object_mut) {
                    n.remove("primary");
                }
            }
            nics.extend(added);
            if nics.len() > properties::MAX_NICS {
                out.bad_value(k, format!("an instance has at most {} NICs", properties::MAX_NICS));
            }
            done.note("nics", Update::NextStart);
        } else if k == "update_disks" || k == "update_nics" {
            let (list, key) = if k == "update_disks" { ("disks", "path") } else { ("nics", "mac") };
            let entries = list_mut(&mut new, list);
            let mut new_primary = None;
            for (i, change) in v.as_array().into_iter().flatten().enumerate() {
                let Some(change) = change.as_object() else { continue };
                let id = change.get(key).and_then(Value::as_str).unwrap_or_default();
                let Some(target) = entries
                    .iter_mut()
                    .filter_map(Value::as_object_mut)
                    .find(|e| e.get(key).and_then(Value::as_str) == Some(id))
                else {
                    out.bad_value(&format!("{k}.{i}.{key}"), format!("no entry of \"{list}\" has {key} \"{id}\""));
                    continue;
                };
                if let (Some(old), Some(new_size)) =
                    (target.get("size").and_then(Value::as_i64), change.get("size").and_then(Value::as_i64))
                    && new_size < old
                {
                    out.bad_value(
                        &format!("{k}.{i}.size"),
                        format!("shrinking a disk ({old} to {new_size} MiB) loses data; refused"),
                    );
                    continue;
                }
                if list == "nics" {
                    // The form the change gives replaces both forms of the old value.
                    for (deprecated, current, also) in [("ip", "ips", "netmask"), ("gateway", "gateways", "")] {
                        if change.contains_key(deprecated) && !change.contains_key(current) {
                            target.remove(current);
                        }
                        if change.contains_key(current) && !change.contains_key(deprecated) {
                            target.remove(deprecated);
                            if !also.is_empty() && !change.contains_key(also) {
                                target.remove(also);
                            }
                        }
                    }
                    if change.contains_key("netmask") && !change.contains_key("ips") {
                        target.remove("ips");
                    }
                }
                for (ck, cv) in change {
                    target.insert(ck.clone(), cv.clone());
                }
                if list == "nics" {
                    validate::fold_nic(target, &format!("{k}.{i}"), &mut out);
                    if change.get("primary") == Some(&Value::Bool(true)) {
                        new_primary = Some(id.to_owned());
                    }
                }
            }
            if let Some(me) = new_primary {
                for n in entries.iter_mut().filter_map(Value::as_object_mut) {
                    if n.get("mac").and_then(Value::as_str) != Some(me.as_str()) {
                        n.remove("primary");
                    }
                }
            }
            done.note(list, Update::NextStart);
        } else if let Some(p) = properties::top(k) {
            if v.is_null() {
                new.remove(k);
            } else {
                new.insert(k.clone(), v.clone());
            }
            done.note(k, p.update);
        }
    }
    // Rules between properties, on the result.
    let ram = new.get("ram").and_then(Value::as_i64).unwrap_or(256);
    if update.contains_key("ram") && !update.contains_key("max_physical_memory") {
        let mpm = new.get("max_physical_memory").and_then(Value::as_i64).unwrap_or(0);
        if mpm < ram + 1024 {
            new.insert("max_physical_memory".into(), Value::from(ram + 1024));
            new.insert("max_locked_memory".into(), Value::from(ram + 1024));
            new.insert("max_swap".into(), Value::from((ram + 1024).max(256)));
        }
    }
    if let Some(mpm) = new.get("max_physical_memory").and_then(Value::as_i64)
        && mpm < ram
    {
        out.bad_value("max_physical_memory", format!("must be at least \"ram\" ({ram}), got {mpm}"));
    }
    if new.contains_key("kernel") && new.contains_key("bootrom") && update.contains_key("kernel") {
        out.bad_value("kernel", "give \"kernel\" (direct boot) or \"bootrom\" (firmware), not both");
    }
    if let Some(Value::Array(nics)) = new.get_mut("nics")
        && !nics.is_empty()
        && !nics.iter().any(|n| n.get("primary") == Some(&Value::Bool(true)))
        && let Some(first) = nics[0].as_object_mut()
    {
        first.insert("primary".into(), Value::Bool(true));
    }
    validate::check_disk_set(new.get("disks"), !new.contains_key("kernel"), "disks", &mut out);
    validate::check_nic_set(new.get("nics"), "nics", &mut out);
    if !out.is_empty() {
        return Err(out);
    }
    *props = new;
    Ok(done)
}
