//! The VM description: what a vmm-server is started from.
//!
//! JSON with SmartOS's `vmadm` property names (`uuid`, `alias`, `brand`,
//! `ram`, `vcpus`, `disks[]`, `nics[]`, ...) plus a Firecracker-style boot
//! source (`kernel`, `initrd`, `cmdline`), parsed by [`VmConfig::from_json`]
//! into checked, typed values. Everything here comes from a user: every rule
//! failure is a [`ConfigError`] whose message names the property, as
//! `vmadm: property "ram": must be at least 64 (MiB), got 16`; properties
//! this VMM does not know are an error naming them (as `vmadm create`
//! rejects unknown properties).
//!
//! Accepted top-level properties: `alias`, `autoboot`, `brand`, `cmdline`,
//! `cpu_cap`, `cpu_shares`, `customer_metadata`, `disks`, `hostname`,
//! `initrd`, `kernel`, `max_physical_memory`, `nics`, `quota`, `ram`,
//! `resolvers`, `uuid`, `vcpus`; what only the metadata service answers
//! (`sdc:` keys): `billing_id`, `create_timestamp`, `datacenter_name`,
//! `dns_domain`, `do_not_inventory`, `image_uuid`, `internal_metadata`
//! (its keys in `internal_metadata_namespaces` and `*_pw` are the guest's
//! to read), `internal_metadata_namespaces`, `maintain_resolvers`,
//! `owner_uuid`, `package_name`, `package_version`, `routes`,
//! `server_uuid`, `tags`;
//! and SmartOS's `bootrom` (`"bios"` | `"uefi"`): a VM with `bootrom` and
//! no `kernel` boots through that firmware from the disk marked
//! `"boot": true` (see [`crate::firmware`]); with `kernel` it boots that
//! kernel directly (the fast path), as before.
//! Defaults follow SmartOS for HVM brands: `ram` 256 MiB, `vcpus` 1.
//! Things that parse but this VMM cannot do yet (NICs) are reported by
//! [`VmConfig::check_supported`], so a SmartOS payload validates and the
//! runtime says what is missing.

use alloc::borrow::ToOwned;
use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;
use core::net::Ipv4Addr;

use libipc::provision::{IfAbsent, VolumeSpec};
use serde_json::{Map, Value};

use crate::boot::acpi::MAX_VCPUS;

/// The smallest guest: Linux with a busybox initramfs needs about this.
pub const MIN_RAM_MIB: u64 = 64;
/// The largest guest: 1 TiB.
pub const MAX_RAM_MIB: u64 = 1024 * 1024;
/// SmartOS's default `ram` for HVM brands.
pub const DEFAULT_RAM_MIB: u64 = 256;
/// The most disks. Each is a PCI function on bus 0 (which also holds the
/// host bridge and the other devices), one of storaged's block rings, and
/// up to 64 KiB of the VMM's 512 KiB heap for data in flight: four keep the
/// monitor's heap safely inside its arena.
pub const MAX_DISKS: usize = 4;
/// The most NICs (as for disks).
pub const MAX_NICS: usize = 8;
/// Linux's COMMAND_LINE_SIZE on x86 (including the NUL).
pub const MAX_CMDLINE_BYTES: usize = 2047;
/// Properties that are strings of at most this many bytes (paths, alias).
pub const MAX_STRING_BYTES: usize = 4096;

const TOP_LEVEL: &[&str] = &[
    "alias",
    "autoboot",
    "billing_id",
    "bootrom",
    "brand",
    "cmdline",
    "cpu_cap",
    "cpu_shares",
    "create_timestamp",
    "customer_metadata",
    "datacenter_name",
    "disks",
    "dns_domain",
    "do_not_inventory",
    "hostname",
    "image_uuid",
    "initrd",
    "internal_metadata",
    "internal_metadata_namespaces",
    "kernel",
    "maintain_resolvers",
    "max_physical_memory",
    "nics",
    "owner_uuid",
    "package_name",
    "package_version",
    "quota",
    "ram",
    "resolvers",
    "routes",
    "server_uuid",
    "tags",
    "uuid",
    "vcpus",
];

/// Properties that only the metadata service reads (its `sdc:` keys and
/// the guest-readable `internal_metadata`), kept whole in
/// [`VmConfig::metadata`] once their shape is checked: strings, booleans,
/// objects of strings (`tags`: of strings, numbers and booleans) and a
/// list of strings.
const METADATA_STRINGS: &[&str] =
    &["billing_id", "create_timestamp", "datacenter_name", "dns_domain", "image_uuid", "owner_uuid", "package_name", "package_version", "server_uuid"];
const METADATA_BOOLEANS: &[&str] = &["do_not_inventory", "maintain_resolvers"];
const METADATA_MAPS: &[&str] = &["internal_metadata", "routes", "tags"];
/// Keys of one of [`METADATA_MAPS`] or entries of
/// `internal_metadata_namespaces` at most (vmadm's limit on a metadata map).
pub const MAX_METADATA_KEYS: usize = 256;
const DISK_PROPERTIES: &[&str] = &["block_size", "boot", "image_uuid", "media", "model", "path", "size"];
const NIC_PROPERTIES: &[&str] = &[
    "allow_dhcp_spoofing",
    "allow_ip_spoofing",
    "allow_mac_spoofing",
    "allow_restricted_traffic",
    "allowed_dhcp_cids",
    "allowed_ips",
    "gateway",
    "ip",
    "mac",
    "maxbw",
    "model",
    "mtu",
    "netmask",
    "nic_tag",
    "primary",
    "vlan_id",
];

/// Why a VM description was refused. Each names the property (a path such
/// as `disks[0].model` inside arrays).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// Not JSON at all (serde_json's message, with line and column).
    Json(String),
    /// The document is not a JSON object.
    NotAnObject,
    /// Properties this VMM does not know, sorted.
    UnknownProperties(Vec<String>),
    Missing {
        property: String,
        why: &'static str,
    },
    WrongType {
        property: String,
        expected: &'static str,
    },
    TooSmall {
        property: String,
        min: u64,
        got: u64,
        unit: &'static str,
    },
    TooLarge {
        property: String,
        max: u64,
        got: u64,
        unit: &'static str,
    },
    /// A value outside the property's set or format.
    Invalid {
        property: String,
        expected: String,
        got: String,
    },
    /// Valid, but this VMM cannot do it (yet).
    NotSupported {
        property: String,
        what: String,
    },
}

impl ConfigError {
    /// The property the error is about, if it is about one.
    pub fn property(&self) -> Option<&str> {
        match self {
            ConfigError::Json(_) | ConfigError::NotAnObject | ConfigError::UnknownProperties(_) => None,
            ConfigError::Missing { property, .. }
            | ConfigError::WrongType { property, .. }
            | ConfigError::TooSmall { property, .. }
            | ConfigError::TooLarge { property, .. }
            | ConfigError::Invalid { property, .. }
            | ConfigError::NotSupported { property, .. } => Some(property),
        }
    }
}

fn unit_suffix(unit: &str) -> String {
    if unit.is_empty() { String::new() } else { format!(" ({unit})") }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Json(e) => write!(f, "vmadm: invalid JSON: {e}"),
            ConfigError::NotAnObject => write!(f, "vmadm: the VM description must be a JSON object"),
            ConfigError::UnknownProperties(names) => {
                let quoted: Vec<String> = names.iter().map(|n| format!("\"{n}\"")).collect();
                let s = if names.len() == 1 { "property" } else { "properties" };
                write!(f, "vmadm: unknown {s} {}", quoted.join(", "))
            }
            ConfigError::Missing { property, why } => write!(f, "vmadm: property \"{property}\": required ({why})"),
            ConfigError::WrongType { property, expected } => {
                write!(f, "vmadm: property \"{property}\": must be {expected}")
            }
            ConfigError::TooSmall { property, min, got, unit } => {
                write!(f, "vmadm: property \"{property}\": must be at least {min}{}, got {got}", unit_suffix(unit))
            }
            ConfigError::TooLarge { property, max, got, unit } => {
                write!(f, "vmadm: property \"{property}\": must be at most {max}{}, got {got}", unit_suffix(unit))
            }
            ConfigError::Invalid { property, expected, got } => {
                write!(f, "vmadm: property \"{property}\": must be {expected}, got {got}")
            }
            ConfigError::NotSupported { property, what } => {
                write!(f, "vmadm: property \"{property}\": {what} not supported yet")
            }
        }
    }
}

/// The UUID of the VM description (one type for every interface).
pub use alcove_uuid::Uuid;

/// A MAC address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// `aa:bb:cc:dd:ee:ff` (either case, one or two digits a byte as
    /// SmartOS prints them).
    pub fn parse(s: &str) -> Option<Self> {
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for b in &mut out {
            let p = parts.next()?;
            if p.is_empty() || p.len() > 2 {
                return None;
            }
            *b = u8::from_str_radix(p, 16).ok()?;
        }
        parts.next().is_none().then_some(Self(out))
    }

    /// A group (multicast or broadcast) address, which no NIC may have.
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 1 != 0
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(f, "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2], m[3], m[4], m[5])
    }
}

/// The HVM brands (`joyent` zones are not VMs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Brand {
    Bhyve,
    Kvm,
}

/// SmartOS's `bootrom`: the firmware a VM without `kernel` boots through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bootrom {
    /// SeaBIOS (Debian's `seabios`, `bios-256k.bin`).
    Bios,
    /// OVMF (Debian's `ovmf`, `OVMF.fd`).
    Uefi,
}

/// How a disk is presented. Only virtio is implemented.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiskModel {
    Virtio,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiskMedia {
    Disk,
}

/// The pool whose volumes a disk's `path` names: `zones/<name>`.
pub const POOL: &str = "zones";
/// The snapshot of an image's volume (`zones/<image_uuid>`) that a disk
/// with `image_uuid` is cloned from.
pub const IMAGE_SNAPSHOT: &str = "final";

/// Pool volumes among the disks: a `path` of `zones/<name>` names a volume
/// in the machine's pool; a disk without `path` (with `size` or
/// `image_uuid`) is `zones/<uuid>-disk<N>`, which needs the VM's `uuid`.
/// Either every disk is a pool volume or none is (a VMM reaches storaged
/// through one endpoint: a grant of volumes, or the machine's disks).
fn check_pool_disks(disks: &mut [DiskConfig], uuid: Option<Uuid>) -> Result<(), ConfigError> {
    for (i, d) in disks.iter_mut().enumerate() {
        if d.path.is_empty() {
            let Some(uuid) = uuid else {
                return Err(ConfigError::Missing {
                    property: format!("disks[{i}].path"),
                    why: "a volume name (zones/<name>), or the VM's \"uuid\" to name a new volume zones/<uuid>-disk<N>",
                });
            };
            d.path = format!("{POOL}/{uuid}-disk{i}");
        }
        if d.path.starts_with(POOL) && d.path[POOL.len()..].starts_with('/') {
            libipc::provision::check_name(&d.path, false).map_err(|why| ConfigError::Invalid {
                property: format!("disks[{i}].path"),
                expected: "a pool volume zones/<name> (letters, digits, - _ . :, at most 200)".into(),
                got: why,
            })?;
        }
    }
    let volumes = disks.iter().filter(|d| d.volume().is_some()).count();
    if volumes != 0 && volumes != disks.len() {
        return Err(ConfigError::Invalid {
            property: "disks".into(),
            expected: "every disk a pool volume (zones/...) or none".into(),
            got: format!("{volumes} of {}", disks.len()),
        });
    }
    Ok(())
}

/// One entry of `disks[]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskConfig {
    /// The backing image: a machine disk or host file, or a pool volume
    /// `zones/<name>` ([`DiskConfig::volume`]).
    pub path: String,
    pub model: DiskModel,
    pub media: DiskMedia,
    /// The boot disk (at most one).
    pub boot: bool,
    /// Size in MiB, for a disk to be created.
    pub size_mib: Option<u64>,
    /// The image the disk is cloned from.
    pub image_uuid: Option<Uuid>,
    /// Logical block size in bytes (512 to 128 KiB, a power of two).
    pub block_size: Option<u32>,
}

impl DiskConfig {
    /// The pool volume this disk is (`zones/<name>`), or `None` for a
    /// machine disk or host file.
    pub fn volume(&self) -> Option<&str> {
        self.path.strip_prefix(POOL).filter(|r| r.starts_with('/')).map(|_| self.path.as_str())
    }

    /// What to provision for it: the volume, and what to make it from
    /// when the pool lacks it (a clone of `zones/<image_uuid>@final`, or an
    /// empty volume of `size` MiB; otherwise it must exist).
    pub fn volume_spec(&self) -> Option<VolumeSpec> {
        let name = self.volume()?.to_string();
        let if_absent = match (self.image_uuid, self.size_mib) {
            (Some(image), _) => IfAbsent::Clone { origin: format!("{POOL}/{image}@{IMAGE_SNAPSHOT}") },
            (None, Some(mib)) => IfAbsent::Create { volsize: mib << 20 },
            (None, None) => IfAbsent::Fail,
        };
        Some(VolumeSpec { name, if_absent })
    }
}

/// How a NIC gets its IPv4 address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NicIp {
    Static(Ipv4Addr),
    Dhcp,
    /// IPv6 autoconfiguration only.
    Addrconf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NicModel {
    Virtio,
    E1000,
    Rtl8139,
}

/// One entry of `nics[]`: a virtio-net device on the VNIC netd holds for
/// this VM (`vm::nics`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NicConfig {
    pub nic_tag: String,
    pub mac: Option<MacAddr>,
    pub ip: Option<NicIp>,
    pub netmask: Option<Ipv4Addr>,
    pub gateway: Option<Ipv4Addr>,
    /// 0 (untagged) to 4094.
    pub vlan_id: u16,
    pub model: NicModel,
    pub primary: bool,
    pub allow_ip_spoofing: bool,
    pub allow_mac_spoofing: bool,
    /// `allow_dhcp_spoofing`: the guest may act as a DHCP server (and use
    /// other client identifiers).
    pub allow_dhcp_spoofing: bool,
    /// `allow_restricted_traffic`: frames other than IPv4, IPv6 and ARP.
    pub allow_restricted_traffic: bool,
    /// `allowed_ips`: addresses or prefixes (`10.0.1.0/24`, `fd00::7`) the
    /// guest may send from besides `ip`, in their canonical text.
    pub allowed_ips: Vec<String>,
    /// `allowed_dhcp_cids`: DHCP client identifiers (`0x` and hex digits,
    /// lower case) the guest may use besides its MAC's.
    pub allowed_dhcp_cids: Vec<String>,
    pub mtu: Option<u16>,
    /// `maxbw`: a cap in Mbit/s on both directions (Crossbow's link
    /// property; vmadm has none), enforced by netd's switch.
    pub maxbw_mbit: Option<u32>,
}

/// A checked VM description.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmConfig {
    pub uuid: Option<Uuid>,
    pub alias: Option<String>,
    pub brand: Brand,
    pub ram_mib: u64,
    pub vcpus: u32,
    /// Memory cap of the instance in MiB (at least `ram_mib`).
    pub max_physical_memory_mib: Option<u64>,
    /// CPU cap in percent of one CPU.
    pub cpu_cap: Option<u32>,
    pub cpu_shares: Option<u32>,
    /// Disk quota in GiB.
    pub quota_gib: Option<u64>,
    pub autoboot: Option<bool>,
    pub customer_metadata: BTreeMap<String, String>,
    /// The properties only the metadata service reads (`tags`, `routes`,
    /// `owner_uuid`, `internal_metadata` and its namespaces, ...: see
    /// `METADATA_STRINGS`, `METADATA_BOOLEANS`, `METADATA_MAPS`), as
    /// given, their shapes checked.
    pub metadata: Map<String, Value>,
    /// What the metadata service answers for `hostname`/`sdc:hostname`.
    pub hostname: Option<String>,
    /// DNS resolvers (IPv4 addresses) the metadata service answers for
    /// `sdc:resolvers`; at most [`MAX_RESOLVERS`].
    pub resolvers: Vec<String>,
    pub disks: Vec<DiskConfig>,
    pub nics: Vec<NicConfig>,
    /// The kernel image to boot directly (bzImage); empty when the VM
    /// boots through `bootrom` instead.
    pub kernel: String,
    /// The firmware of a VM without `kernel`.
    pub bootrom: Option<Bootrom>,
    pub initrd: Option<String>,
    pub cmdline: String,
}

/// A property path below `parent`.
fn child(parent: &str, name: &str) -> String {
    if parent.is_empty() { name.to_owned() } else { format!("{parent}.{name}") }
}

/// Reads the properties of one JSON object, each at most once, and
/// reports the ones nobody asked for.
struct Props<'a> {
    map: &'a Map<String, Value>,
    path: String,
}

impl<'a> Props<'a> {
    fn new(value: &'a Value, path: String, known: &[&str]) -> Result<Self, ConfigError> {
        let map = value.as_object().ok_or_else(|| {
            if path.is_empty() {
                ConfigError::NotAnObject
            } else {
                ConfigError::WrongType { property: path.clone(), expected: "an object" }
            }
        })?;
        let mut unknown: Vec<String> =
            map.keys().filter(|k| !known.contains(&k.as_str())).map(|k| child(&path, k)).collect();
        if !unknown.is_empty() {
            unknown.sort();
            return Err(ConfigError::UnknownProperties(unknown));
        }
        Ok(Self { map, path })
    }

    fn name(&self, key: &str) -> String {
        child(&self.path, key)
    }

    fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key)
    }

    fn wrong(&self, key: &str, expected: &'static str) -> ConfigError {
        ConfigError::WrongType { property: self.name(key), expected }
    }

    fn string(&self, key: &str) -> Result<Option<&'a str>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => {
                let s = v.as_str().ok_or_else(|| self.wrong(key, "a string"))?;
                if s.len() > MAX_STRING_BYTES {
                    return Err(ConfigError::TooLarge {
                        property: self.name(key),
                        max: MAX_STRING_BYTES as u64,
                        got: s.len() as u64,
                        unit: "bytes",
                    });
                }
                Ok(Some(s))
            }
        }
    }

    /// A non-empty string.
    fn text(&self, key: &str) -> Result<Option<&'a str>, ConfigError> {
        match self.string(key)? {
            Some("") => Err(self.wrong(key, "a non-empty string")),
            other => Ok(other),
        }
    }

    fn boolean(&self, key: &str) -> Result<Option<bool>, ConfigError> {
        self.get(key).map(|v| v.as_bool().ok_or_else(|| self.wrong(key, "true or false"))).transpose()
    }

    /// A whole number in `min..=max`.
    fn integer(&self, key: &str, min: u64, max: u64, unit: &'static str) -> Result<Option<u64>, ConfigError> {
        let Some(v) = self.get(key) else { return Ok(None) };
        let n = v.as_u64().ok_or_else(|| self.wrong(key, "a whole number"))?;
        if n < min {
            return Err(ConfigError::TooSmall { property: self.name(key), min, got: n, unit });
        }
        if n > max {
            return Err(ConfigError::TooLarge { property: self.name(key), max, got: n, unit });
        }
        Ok(Some(n))
    }

    fn invalid(&self, key: &str, expected: &str, got: &str) -> ConfigError {
        ConfigError::Invalid { property: self.name(key), expected: expected.to_owned(), got: format!("\"{got}\"") }
    }

    fn uuid(&self, key: &str) -> Result<Option<Uuid>, ConfigError> {
        self.string(key)?
            .map(|s| {
                Uuid::parse(s).ok_or_else(|| self.invalid(key, "a UUID like 01234567-89ab-cdef-0123-456789abcdef", s))
            })
            .transpose()
    }

    fn ipv4(&self, key: &str) -> Result<Option<Ipv4Addr>, ConfigError> {
        self.string(key)?
            .map(|s| s.parse::<Ipv4Addr>().map_err(|_| self.invalid(key, "an IPv4 address", s)))
            .transpose()
    }

    /// An array of at most `max` strings, each checked (and put in its
    /// canonical form) by `check`.
    fn list(&self, key: &str, max: usize, expected: &'static str, check: fn(&str) -> Option<String>) -> Result<Vec<String>, ConfigError> {
        let items = self.array(key)?;
        if items.len() > max {
            return Err(ConfigError::TooLarge { property: self.name(key), max: max as u64, got: items.len() as u64, unit: "entries" });
        }
        items
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let item = format!("{key}[{i}]");
                let s = v.as_str().ok_or_else(|| self.wrong(&item, expected))?;
                check(s).ok_or_else(|| self.invalid(&item, expected, &s.chars().take(64).collect::<String>()))
            })
            .collect()
    }

    /// The metadata service's own properties, their shapes checked.
    fn metadata(&self) -> Result<Map<String, Value>, ConfigError> {
        let mut out = Map::new();
        for key in METADATA_STRINGS {
            if let Some(s) = self.string(key)? {
                out.insert((*key).into(), Value::String(s.to_owned()));
            }
        }
        for key in METADATA_BOOLEANS {
            if let Some(b) = self.boolean(key)? {
                out.insert((*key).into(), Value::Bool(b));
            }
        }
        for key in METADATA_MAPS {
            let Some(v) = self.get(key) else { continue };
            let map = v.as_object().ok_or_else(|| self.wrong(key, "an object"))?;
            if map.len() > MAX_METADATA_KEYS {
                return Err(ConfigError::TooLarge { property: self.name(key), max: MAX_METADATA_KEYS as u64, got: map.len() as u64, unit: "keys" });
            }
            for (k, v) in map {
                let fits = match v {
                    Value::String(_) => true,
                    Value::Number(_) | Value::Bool(_) => *key == "tags",
                    _ => false,
                };
                if !fits {
                    let expected = if *key == "tags" { "a string, number or boolean" } else { "a string" };
                    return Err(ConfigError::WrongType { property: child(&self.name(key), k), expected });
                }
            }
            out.insert((*key).into(), v.clone());
        }
        let namespaces = self.list("internal_metadata_namespaces", MAX_METADATA_KEYS, "a namespace name", |s| {
            (!s.is_empty() && s.len() <= 256 && !s.contains(':')).then(|| s.to_owned())
        })?;
        if self.get("internal_metadata_namespaces").is_some() {
            out.insert("internal_metadata_namespaces".into(), Value::Array(namespaces.into_iter().map(Value::String).collect()));
        }
        Ok(out)
    }

    fn array(&self, key: &str) -> Result<&'a [Value], ConfigError> {
        match self.get(key) {
            None => Ok(&[]),
            Some(v) => v.as_array().map(Vec::as_slice).ok_or_else(|| self.wrong(key, "an array")),
        }
    }
}

impl VmConfig {
    /// Parses and checks a VM description.
    pub fn from_json(json: &str) -> Result<Self, ConfigError> {
        let value: Value = serde_json::from_str(json).map_err(|e| ConfigError::Json(e.to_string()))?;
        Self::from_value(&value)
    }

    /// Checks an already parsed description.
    pub fn from_value(value: &Value) -> Result<Self, ConfigError> {
        let p = Props::new(value, String::new(), TOP_LEVEL)?;
        let brand = match p.get("brand") {
            None => return Err(ConfigError::Missing { property: "brand".into(), why: "\"bhyve\" or \"kvm\"" }),
            Some(v) => match v.as_str() {
                Some("bhyve") => Brand::Bhyve,
                Some("kvm") => Brand::Kvm,
                Some(other) => return Err(p.invalid("brand", "\"bhyve\" or \"kvm\"", other)),
                None => return Err(p.wrong("brand", "\"bhyve\" or \"kvm\"")),
            },
        };
        let uuid = p.uuid("uuid")?;
        let alias = p.text("alias")?.map(str::to_owned);
        let ram_mib = p.integer("ram", MIN_RAM_MIB, MAX_RAM_MIB, "MiB")?.unwrap_or(DEFAULT_RAM_MIB);
        let vcpus = p.integer("vcpus", 1, u64::from(MAX_VCPUS), "")?.unwrap_or(1) as u32;
        let max_physical_memory_mib = p.integer("max_physical_memory", ram_mib, u64::MAX, "MiB")?;
        let cpu_cap = p.integer("cpu_cap", 1, u64::from(u32::MAX), "percent")?.map(|n| n as u32);
        let cpu_shares = p.integer("cpu_shares", 1, u64::from(u32::MAX), "")?.map(|n| n as u32);
        let quota_gib = p.integer("quota", 0, u64::MAX, "GiB")?;
        let autoboot = p.boolean("autoboot")?;
        let hostname = p.text("hostname")?.map(str::to_owned);
        let resolvers = p.list("resolvers", MAX_RESOLVERS, "an IPv4 address like 8.8.8.8", |s| {
            s.parse::<Ipv4Addr>().ok().map(|a| a.to_string())
        })?;
        let customer_metadata = match p.get("customer_metadata") {
            None => BTreeMap::new(),
            Some(v) => {
                let map = v.as_object().ok_or_else(|| p.wrong("customer_metadata", "an object of strings"))?;
                let mut out = BTreeMap::new();
                for (k, v) in map {
                    let s = v.as_str().ok_or_else(|| ConfigError::WrongType {
                        property: format!("customer_metadata.{k}"),
                        expected: "a string",
                    })?;
                    out.insert(k.clone(), s.to_owned());
                }
                out
            }
        };
        let metadata = p.metadata()?;
        let bootrom = match p.string("bootrom")? {
            None => None,
            Some("bios") => Some(Bootrom::Bios),
            Some("uefi") => Some(Bootrom::Uefi),
            Some(other) => return Err(p.invalid("bootrom", "\"bios\" or \"uefi\"", other)),
        };
        let kernel = match (p.text("kernel")?, bootrom) {
            (Some(k), None) => k.to_owned(),
            (None, Some(_)) => String::new(),
            (None, None) => {
                return Err(ConfigError::Missing {
                    property: "kernel".into(),
                    why: "a kernel to boot directly, or \"bootrom\" and a disk with \"boot\": true",
                });
            }
            (Some(_), Some(_)) => {
                return Err(ConfigError::Invalid {
                    property: "kernel".into(),
                    expected: "absent when \"bootrom\" is given (the firmware boots the boot disk)".into(),
                    got: "a kernel".into(),
                });
            }
        };
        if bootrom.is_some() {
            for property in ["initrd", "cmdline"] {
                if p.get(property).is_some() {
                    return Err(ConfigError::Invalid {
                        property: property.into(),
                        expected: "absent when \"bootrom\" is given (the boot disk's loader has its own)".into(),
                        got: "a value".into(),
                    });
                }
            }
        }
        let initrd = p.text("initrd")?.map(str::to_owned);
        let cmdline = p.string("cmdline")?.unwrap_or("").to_owned();
        if cmdline.len() > MAX_CMDLINE_BYTES {
            return Err(ConfigError::TooLarge {
                property: "cmdline".into(),
                max: MAX_CMDLINE_BYTES as u64,
                got: cmdline.len() as u64,
                unit: "bytes",
            });
        }
        if cmdline.bytes().any(|b| b == 0) {
            return Err(p.wrong("cmdline", "a string without NUL bytes"));
        }

        let disk_values = p.array("disks")?;
        if disk_values.len() > MAX_DISKS {
            return Err(ConfigError::TooLarge {
                property: "disks".into(),
                max: MAX_DISKS as u64,
                got: disk_values.len() as u64,
                unit: "disks",
            });
        }
        let disks = disk_values
            .iter()
            .enumerate()
            .map(|(i, v)| parse_disk(v, format!("disks[{i}]")))
            .collect::<Result<Vec<_>, _>>()?;
        let mut disks = disks;
        check_pool_disks(&mut disks, uuid)?;
        if disks.iter().filter(|d| d.boot).count() > 1 {
            return Err(ConfigError::Invalid {
                property: "disks".into(),
                expected: "at most one disk with \"boot\": true".into(),
                got: format!("{}", disks.iter().filter(|d| d.boot).count()),
            });
        }

        if bootrom.is_some() && !disks.iter().any(|d| d.boot) {
            return Err(ConfigError::Missing {
                property: "disks".into(),
                why: "with \"bootrom\", one disk with \"boot\": true to boot from",
            });
        }

        let nic_values = p.array("nics")?;
        if nic_values.len() > MAX_NICS {
            return Err(ConfigError::TooLarge {
                property: "nics".into(),
                max: MAX_NICS as u64,
                got: nic_values.len() as u64,
                unit: "NICs",
            });
        }
        let nics = nic_values
            .iter()
            .enumerate()
            .map(|(i, v)| parse_nic(v, format!("nics[{i}]")))
            .collect::<Result<Vec<_>, _>>()?;
        if nics.iter().filter(|n| n.primary).count() > 1 {
            return Err(ConfigError::Invalid {
                property: "nics".into(),
                expected: "at most one NIC with \"primary\": true".into(),
                got: format!("{}", nics.iter().filter(|n| n.primary).count()),
            });
        }

        Ok(Self {
            uuid,
            alias,
            brand,
            ram_mib,
            vcpus,
            max_physical_memory_mib,
            cpu_cap,
            cpu_shares,
            quota_gib,
            autoboot,
            customer_metadata,
            metadata,
            hostname,
            resolvers,
            disks,
            nics,
            kernel,
            bootrom,
            initrd,
            cmdline,
        })
    }

    /// What this VMM cannot run yet, as the error the runtime reports:
    /// NICs of another model than `virtio` (`vmadm: property
    /// "nics[0].model": "e1000" NICs are not supported yet`) or with an
    /// MTU other than 1500.
    pub fn check_supported(&self) -> Result<(), ConfigError> {
        for (i, nic) in self.nics.iter().enumerate() {
            let name = match nic.model {
                NicModel::Virtio => None,
                NicModel::E1000 => Some("e1000"),
                NicModel::Rtl8139 => Some("rtl8139"),
            };
            if let Some(m) = name {
                return Err(ConfigError::NotSupported { property: format!("nics[{i}].model"), what: format!("\"{m}\" NICs are") });
            }
            if let Some(mtu) = nic.mtu.filter(|&m| m != 1500) {
                return Err(ConfigError::NotSupported {
                    property: format!("nics[{i}].mtu"),
                    what: format!("MTUs other than 1500 ({mtu}) are"),
                });
            }
        }
        Ok(())
    }

    /// The pool volumes the VM's disks are, in `disks` order (empty when
    /// its disks are machine disks or host files): what init (at boot) or
    /// the control plane provisions and grants before starting its VMM.
    pub fn volume_specs(&self) -> Vec<VolumeSpec> {
        self.disks.iter().filter_map(DiskConfig::volume_spec).collect()
    }

    /// The index in `disks` of the boot disk, if one is marked.
    pub fn boot_disk(&self) -> Option<usize> {
        self.disks.iter().position(|d| d.boot)
    }

    /// Guest RAM in bytes.
    pub fn ram_bytes(&self) -> u64 {
        self.ram_mib << 20
    }
}

fn parse_disk(value: &Value, path: String) -> Result<DiskConfig, ConfigError> {
    let p = Props::new(value, path, DISK_PROPERTIES)?;
    let size_mib = p.integer("size", 1, u64::MAX >> 20, "MiB")?;
    // Without a path, a disk with a size (or an image) is a new pool volume
    // named after the VM ([`VmConfig::from_json`] fills the name in).
    let disk_path = match p.text("path")? {
        Some(path) => path.to_owned(),
        None if size_mib.is_some() || p.uuid("image_uuid")?.is_some() => String::new(),
        None => {
            return Err(ConfigError::Missing {
                property: p.name("path"),
                why: "the disk's image, or \"size\" (MiB) for a new pool volume",
            });
        }
    };
    let model = match p.string("model")? {
        None | Some("virtio") => DiskModel::Virtio,
        Some(m @ ("ide" | "scsi" | "ahci" | "nvme")) => {
            return Err(ConfigError::NotSupported { property: p.name("model"), what: format!("\"{m}\" disks are") });
        }
        Some(other) => return Err(p.invalid("model", "\"virtio\"", other)),
    };
    let media = match p.string("media")? {
        None | Some("disk") => DiskMedia::Disk,
        Some("cdrom") => {
            return Err(ConfigError::NotSupported { property: p.name("media"), what: "CD-ROMs are".into() });
        }
        Some(other) => return Err(p.invalid("media", "\"disk\"", other)),
    };
    let block_size = match p.integer("block_size", 512, 128 * 1024, "bytes")? {
        Some(n) if !n.is_power_of_two() => {
            return Err(ConfigError::Invalid {
                property: p.name("block_size"),
                expected: "a power of two".into(),
                got: n.to_string(),
            });
        }
        other => other.map(|n| n as u32),
    };
    Ok(DiskConfig {
        path: disk_path,
        model,
        media,
        boot: p.boolean("boot")?.unwrap_or(false),
        size_mib,
        image_uuid: p.uuid("image_uuid")?,
        block_size,
    })
}

/// Entries of `resolvers` at most (vmadm's limit).
pub const MAX_RESOLVERS: usize = 16;

/// Entries of `allowed_ips` and `allowed_dhcp_cids` at most (vmadm's
/// limit).
const MAX_ALLOWED: usize = 20;

/// An address or prefix (`10.0.1.0/24`, `fd00::7`), canonical; a prefix
/// longer than its family's address is refused.
fn ip_or_prefix(s: &str) -> Option<String> {
    let (addr, len) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (s, None),
    };
    let ip: core::net::IpAddr = addr.parse().ok()?;
    let bits = if ip.is_ipv4() { 32 } else { 128 };
    match len {
        None => Some(ip.to_string()),
        Some(l) if !l.is_empty() && l.len() <= 3 && l.bytes().all(|b| b.is_ascii_digit()) => {
            let n: u32 = l.parse().ok()?;
            (n <= bits).then(|| format!("{ip}/{n}"))
        }
        Some(_) => None,
    }
}

/// A DHCP client identifier as vmadm takes it: `0x` and 2 to 510 hex
/// digits, an even number; lower case.
fn dhcp_cid(s: &str) -> Option<String> {
    let hex = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X"))?;
    (hex.len() >= 2 && hex.len() <= 510 && hex.len() % 2 == 0 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| format!("0x{}", hex.to_ascii_lowercase()))
}

fn parse_nic(value: &Value, path: String) -> Result<NicConfig, ConfigError> {
    let p = Props::new(value, path, NIC_PROPERTIES)?;
    let nic_tag = p
        .text("nic_tag")?
        .ok_or_else(|| ConfigError::Missing { property: p.name("nic_tag"), why: "the network the NIC is on" })?
        .to_owned();
    let mac = match p.string("mac")? {
        None => None,
        Some(s) => match MacAddr::parse(s) {
            Some(m) if m.is_multicast() => return Err(p.invalid("mac", "a unicast MAC address", s)),
            Some(m) => Some(m),
            None => return Err(p.invalid("mac", "a MAC address like 90:b8:d0:c0:ff:ee", s)),
        },
    };
    let ip = match p.string("ip")? {
        None => None,
        Some("dhcp") => Some(NicIp::Dhcp),
        Some("addrconf") => Some(NicIp::Addrconf),
        Some(s) => {
            Some(NicIp::Static(s.parse().map_err(|_| p.invalid("ip", "an IPv4 address, \"dhcp\" or \"addrconf\"", s))?))
        }
    };
    let netmask = p.ipv4("netmask")?;
    if let Some(m) = netmask {
        let bits = u32::from(m);
        if bits.leading_ones() + bits.trailing_zeros() != 32 {
            return Err(p.invalid("netmask", "a contiguous netmask like 255.255.255.0", &m.to_string()));
        }
    }
    if matches!(ip, Some(NicIp::Static(_))) && netmask.is_none() {
        return Err(ConfigError::Missing { property: p.name("netmask"), why: "a static \"ip\" needs one" });
    }
    let model = match p.string("model")? {
        None | Some("virtio") => NicModel::Virtio,
        Some("e1000") => NicModel::E1000,
        Some("rtl8139") => NicModel::Rtl8139,
        Some(other) => return Err(p.invalid("model", "\"virtio\", \"e1000\" or \"rtl8139\"", other)),
    };
    Ok(NicConfig {
        nic_tag,
        mac,
        ip,
        netmask,
        gateway: p.ipv4("gateway")?,
        vlan_id: p.integer("vlan_id", 0, 4094, "")?.unwrap_or(0) as u16,
        model,
        primary: p.boolean("primary")?.unwrap_or(false),
        allow_ip_spoofing: p.boolean("allow_ip_spoofing")?.unwrap_or(false),
        allow_mac_spoofing: p.boolean("allow_mac_spoofing")?.unwrap_or(false),
        allow_dhcp_spoofing: p.boolean("allow_dhcp_spoofing")?.unwrap_or(false),
        allow_restricted_traffic: p.boolean("allow_restricted_traffic")?.unwrap_or(false),
        allowed_ips: p.list("allowed_ips", MAX_ALLOWED, "an IPv4 or IPv6 address or prefix like 10.0.1.0/24", ip_or_prefix)?,
        allowed_dhcp_cids: p.list("allowed_dhcp_cids", MAX_ALLOWED, "0x and an even number of hex digits (2 to 510)", dhcp_cid)?,
        mtu: p.integer("mtu", 576, 9000, "bytes")?.map(|n| n as u16),
        maxbw_mbit: p.integer("maxbw", 1, 100_000, "Mbit/s")?.map(|n| n as u32),
    })
}

#[cfg(test)]
mod tests;
