//! The bridge to the VMM: from an instance's properties to the JSON a
//! `vmm-server` is started from (`VmConfig::from_json` in
//! vmm-server/src/config.rs). Only the properties that change what the VM
//! is, and those its metadata service answers to the guest (`sdc:tags`,
//! `sdc:owner_uuid`, `sdc:create_timestamp`, `sdc:server_uuid`, ...),
//! cross over, in the names and
//! forms that parser accepts; the rest of the record stays with
//! zone-server.
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
//! model (the VMM's defaults) stay out; of `internal_metadata` only the
//! keys a guest may read cross (`*_pw`, and those in a namespace of
//! `internal_metadata_namespaces`: SmartOS's rule).
//!
//! Size: `vm.json` is the VMM's start data. Up to 2 KiB it crosses in
//! `proc.start`'s own message (a VM without `customer_metadata` does, even
//! with the most NICs: hence the defaults left out); a longer one, as
//! `customer_metadata` makes it (a cloud-init user-data of several KiB),
//! crosses in pieces (`proc.append_start_data`, zone-server's
//! `host::stage_start_data`), up to 64 KiB in all
//! ([`crate::properties::MAX_VM_JSON`]); a VM whose `vm.json` would be
//! longer is refused when it is validated, created or updated
//! ([`crate::validate::check_vm_json`]).

use alloc::string::String;
use alloc::vec::Vec;

use serde_json::{Map, Value};

const TOP: &[&str] = &[
    "alias",
    "autoboot",
    "billing_id",
    "bootrom",
    "brand",
    "cmdline",
    "create_timestamp",
    "customer_metadata",
    "do_not_inventory",
    "hostname",
    "image_uuid",
    "initrd",
    "internal_metadata_namespaces",
    "kernel",
    "maintain_resolvers",
    "max_physical_memory",
    "owner_uuid",
    "package_name",
    "package_version",
    "ram",
    "resolvers",
    "tags",
    "uuid",
    "vcpus",
];

/// The keys of `internal_metadata` a guest may read over the metadata
/// port (SmartOS's rule, as `alcove_mdata` applies it): those ending in
/// `_pw` and those whose namespace (before the first `:`) is one of
/// `internal_metadata_namespaces`. Only these cross to the VMM.
fn guest_readable_internal(props: &Map<String, Value>) -> Option<Value> {
    let internal = props.get("internal_metadata")?.as_object()?;
    let namespaces: Vec<&str> =
        props.get("internal_metadata_namespaces").and_then(Value::as_array).map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
    let readable: Map<String, Value> = internal
        .iter()
        .filter(|(k, _)| k.ends_with("_pw") || k.split_once(':').is_some_and(|(ns, _)| namespaces.contains(&ns)))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    (!readable.is_empty()).then_some(Value::Object(readable))
}
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
    // What is the VMM's default anyway stays out (a `vm.json` of 2 KiB
    // or less crosses in one message): the link protections that are on
    // (`allow_*` false), the virtio model, `primary` false and VLAN 0.
    out.retain(|k, v| {
        !((k.starts_with("allow_") || k == "primary") && *v == Value::Bool(false))
            && !(k == "model" && v == "virtio")
            && !(k == "vlan_id" && v.as_u64() == Some(0))
    });
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

/// The vmm-server description of an instance (its `props`) on the machine
/// `server_uuid` (what `sdc:server_uuid` answers the guest; left out when
/// empty).
pub fn vm_config(props: &Map<String, Value>, server_uuid: &str) -> Map<String, Value> {
    let mut out = Map::new();
    copy(props, &mut out, TOP);
    // Empty metadata maps are the VMM's default.
    out.retain(|_, v| v.as_object().is_none_or(|m| !m.is_empty()));
    if !server_uuid.is_empty() {
        out.insert("server_uuid".into(), Value::String(server_uuid.into()));
    }
    if let Some(internal) = guest_readable_internal(props) {
        out.insert("internal_metadata".into(), internal);
    }
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
            // The VMM's defaults stay out (as a NIC's).
            o.retain(|k, v| !(k == "model" && v == "virtio") && !(k == "media" && v == "disk"));
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
pub fn vm_config_json(props: &Map<String, Value>, server_uuid: &str) -> String {
    Value::Object(vm_config(props, server_uuid)).to_string()
}
