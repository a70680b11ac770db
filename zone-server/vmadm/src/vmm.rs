//! The bridge to the VMM: from an instance's properties to the JSON a
//! `vmm-server` is started from (`VmConfig::from_json` in
//! vmm-server/src/config.rs). Only the properties that change what the VM
//! is cross over, in the names and forms that parser accepts; bookkeeping
//! (`tags`, `owner_uuid`, ...) stays with zone-server.
//!
//! Mapping notes: `cpu_cap`/`cpu_shares`/`quota` of 0 mean "none" to
//! vmadm and are left out (the VMM wants at least 1); a disk's `path` is
//! SmartOS's device path (`/dev/zvol/rdsk/zones/<uuid>/diskN`) crosses as
//! the pool volume zone-server has storaged make for it,
//! `zones/<uuid>-diskN`, when every disk has such a path (otherwise the
//! paths cross as they are); a NIC's address is its
//! first IPv4 `ips` entry (or `dhcp`/`addrconf`) as `ip`/`netmask`, and its
//! gateway the first of `gateways`, the addresses of `ips` past the first
//! join `allowed_ips`; a NIC's `allow_*` that are false and its `virtio`
//! model (the VMM's defaults) stay out, as `vm.json` must fit `proc.start`'s
//! 2 KiB of start data; `internal_metadata` is not the guest's customer
//! data and stays out.

use alloc::string::String;
use alloc::vec::Vec;

use serde_json::{Map, Value};

const TOP: &[&str] = &[
    "alias",
    "autoboot",
    "bootrom",
    "brand",
    "cmdline",
    "customer_metadata",
    "hostname",
    "initrd",
    "kernel",
    "max_physical_memory",
    "ram",
    "resolvers",
    "uuid",
    "vcpus",
];
const POSITIVE: &[&str] = &["cpu_cap", "cpu_shares", "quota"];
const DISK: &[&str] = &["block_size", "boot", "image_uuid", "media", "model", "path", "size"];
const NIC: &[&str] = &[
    "allow_dhcp_spoofing",
    "allow_ip_spoofing",
    "allow_mac_spoofing",
    "allow_restricted_traffic",
    "allowed_dhcp_cids",
    "mac",
    "model",
    "mtu",
    "nic_tag",
    "primary",
    "vlan_id",
];

fn copy(from: &Map<String, Value>, to: &mut Map<String, Value>, keys: &[&str]) {
    for k in keys {
        if let Some(v) = from.get(*k)
            && !v.is_null()
        {
            to.insert((*k).into(), v.clone());
        }
    }
}

fn nic(n: &Map<String, Value>) -> Value {
    let mut out = Map::new();
    copy(n, &mut out, NIC);
    // What is the VMM's default anyway stays out (`vm.json` crosses as
    // start data, 2 KiB at most): the link protections that are on
    // (`allow_*` false) and the virtio model.
    out.retain(|k, v| !(k.starts_with("allow_") && *v == Value::Bool(false)) && !(k == "model" && v == "virtio"));
    let ips: Vec<&str> = n
        .get("ips")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let v4 = ips.iter().find(|s| s.split('/').next().is_some_and(|a| a.parse::<core::net::Ipv4Addr>().is_ok()));
    if let Some(Some((addr, len))) = v4.map(|s| s.split_once('/')) {
        let len: u32 = len.parse().unwrap_or(32).min(32);
        let bits = if len == 0 { 0 } else { u32::MAX << (32 - len) };
        out.insert("ip".into(), Value::String(addr.into()));
        out.insert("netmask".into(), Value::String(core::net::Ipv4Addr::from(bits).to_string()));
    } else if let Some(dyn_) = ips.iter().find(|s| **s == "dhcp" || **s == "addrconf") {
        out.insert("ip".into(), Value::String((*dyn_).into()));
    }
    if let Some(gw) = n.get("gateways").and_then(Value::as_array).and_then(|g| g.first()) {
        out.insert("gateway".into(), gw.clone());
    }
    // ip-nospoof lets the guest send from every address of `ips` (as
    // SmartOS's), not only the one the VMM is given: the others, without
    // their prefix lengths, join `allowed_ips`.
    let mut allowed: Vec<Value> = n.get("allowed_ips").and_then(Value::as_array).cloned().unwrap_or_default();
    let first = v4.copied();
    for a in ips.iter().filter(|s| Some(**s) != first && **s != "dhcp" && **s != "addrconf") {
        let addr = Value::String(a.split('/').next().unwrap_or(a).into());
        if !allowed.contains(&addr) {
            allowed.push(addr);
        }
    }
    if !allowed.is_empty() {
        out.insert("allowed_ips".into(), Value::Array(allowed));
    }
    Value::Object(out)
}

use alloc::string::ToString;

/// The pool volume behind SmartOS's device path of a VM's disk:
/// `/dev/zvol/rdsk/zones/UUID/diskN` is volume `zones/UUID-diskN` (the
/// pool keeps volumes flat); other paths are not pool volumes.
fn pool_volume(path: &str) -> Option<String> {
    let rest = path.strip_prefix("/dev/zvol/rdsk/")?;
    let (pool, rest) = rest.split_once('/')?;
    let (vm, disk) = rest.split_once('/')?;
    let n = disk.strip_prefix("disk")?;
    let ok = |s: &str| !s.is_empty() && !s.contains('/');
    (ok(pool) && ok(vm) && !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())).then(|| alloc::format!("{pool}/{vm}-disk{n}"))
}

/// The vmm-server description of an instance (its `props`).
pub fn vm_config(props: &Map<String, Value>) -> Map<String, Value> {
    let mut out = Map::new();
    copy(props, &mut out, TOP);
    for k in POSITIVE {
        if let Some(v) = props.get(*k)
            && v.as_i64().is_some_and(|n| n > 0)
        {
            out.insert((*k).into(), v.clone());
        }
    }
    // A VM reaches either only pool volumes or none (vmm-server's rule):
    // device paths become volume names only when every disk has one.
    let all_zvols = props
        .get("disks")
        .and_then(Value::as_array)
        .is_some_and(|d| d.iter().all(|d| d.get("path").and_then(Value::as_str).and_then(pool_volume).is_some()));
    let disks: Vec<Value> = props
        .get("disks")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object)
        .map(|d| {
            let mut o = Map::new();
            copy(d, &mut o, DISK);
            if let Some(volume) = o.get("path").and_then(Value::as_str).and_then(pool_volume).filter(|_| all_zvols) {
                o.insert("path".into(), Value::String(volume));
            }
            Value::Object(o)
        })
        .collect();
    if !disks.is_empty() {
        out.insert("disks".into(), Value::Array(disks));
    }
    let nics: Vec<Value> = props
        .get("nics")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object)
        .map(nic)
        .collect();
    if !nics.is_empty() {
        out.insert("nics".into(), Value::Array(nics));
    }
    out
}

/// [`vm_config`] as JSON text.
pub fn vm_config_json(props: &Map<String, Value>) -> String {
    Value::Object(vm_config(props)).to_string()
}
