//! The property table of `bhyve` instances, as vmadm(8) documents it (and
//! `kvm`, which Alcove runs as bhyve): each property's type, whether a
//! create payload may give it, how `vmadm update` treats it, whether `list`
//! and `lookup` can use it, its default, and what Alcove does with it.
//!
//! Facts from vmadm(8) ("PROPERTIES"); the limits (string lengths, array
//! sizes, ranges) are Alcove's, so a hostile payload gets a clear error.
//! Properties of OS VMs only (`dns_domain`, `limit_priv`, `routes`, ...)
//! are not in the table: a bhyve payload that gives them is told they are
//! not bhyve properties, as vmadm does.

/// The longest string property (paths, package names...), in bytes.
pub const MAX_STRING: usize = 4096;
/// The longest alias, in bytes.
pub const MAX_ALIAS: usize = 256;
/// The longest hostname (RFC 1123), in bytes.
pub const MAX_HOSTNAME: usize = 253;
/// Metadata maps (`customer_metadata`, `internal_metadata`, `tags`): at
/// most this many keys, each at most [`MAX_META_KEY`] bytes, each value
/// at most [`MAX_META_VALUE`] bytes.
pub const MAX_META_KEYS: usize = 256;
pub const MAX_META_KEY: usize = 256;
pub const MAX_META_VALUE: usize = 64 * 1024;
/// Guest RAM, MiB (vmm-server's own bounds).
pub const MIN_RAM: i64 = 64;
pub const MAX_RAM: i64 = 1024 * 1024;
/// vCPUs (vmm-server's MADT holds at most 255).
pub const MAX_VCPUS: i64 = 255;
/// Disks and NICs an instance may have (vmm-server's bounds).
pub const MAX_DISKS: usize = 4;
pub const MAX_NICS: usize = 8;
/// The largest disk, MiB (16 TiB).
pub const MAX_DISK_MIB: i64 = 16 * 1024 * 1024;
/// A whole payload, in bytes.
pub const MAX_PAYLOAD: usize = 1024 * 1024;
/// The VM's description for its VMM (`vm.json`, [`crate::vmm`]), in
/// bytes: what init starts one VMM with at most (libipc's
/// `PROC_START_DATA_TOTAL_MAX`; zone-server checks they agree). A VM
/// whose description would be larger (its `customer_metadata`, above all)
/// is refused at `validate`, `create` and `update` rather than at start.
pub const MAX_VM_JSON: usize = 64 * 1024;
/// The instance's record (what `vmadm get` prints), in bytes: zone-server
/// keeps it on the pool as a user property of its record volume, which
/// storaged holds at most this long (its MOS, in its memory, carries every
/// user property). A VM whose record would be longer is refused at
/// `validate`, `create`, `update` and a guest's metadata write-back,
/// naming the property that takes the most of it, rather than made and
/// then lost at the next restart. In practice this, not
/// [`MAX_VM_JSON`], bounds `customer_metadata`.
pub const MAX_RECORD: usize = 8 * 1024;
/// Instances one machine holds at most: zone-server keeps every record
/// in memory (and lists them whole): a `create` past this is refused.
pub const MAX_INSTANCES: usize = 128;
/// What the record adds to the properties: the computed ones
/// (`state`, `zonename`, `zonepath`, `server_uuid`, ...) and the
/// timestamps, with their names and JSON, at most; and the header
/// zone-server stores it under (sequence, length, checksum: 64 bytes at
/// most).
pub const RECORD_OVERHEAD: usize = 512 + 64;
/// How deeply a payload's JSON may nest (the deepest bhyve property,
/// `nics[0].ips[0]`, is 3 deep).
pub const MAX_DEPTH: usize = 8;

/// A property's type and bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Text: no NUL or other control characters, at most `max` bytes.
    Str {
        max: usize,
    },
    /// A path (kernel, initrd, a disk's volume): non-empty text without
    /// `.` or `..` components, at most [`MAX_STRING`] bytes.
    Path,
    /// An alias: text without `/`, not `.` or `..`, at most [`MAX_ALIAS`].
    Alias,
    /// An RFC 1123 hostname.
    Hostname,
    Uuid,
    Bool,
    Int {
        min: i64,
        max: i64,
    },
    /// A power of two in `min..=max` (block sizes).
    Pow2 {
        min: i64,
        max: i64,
    },
    /// One of these strings.
    Enum(&'static [&'static str]),
    Ipv4,
    /// An IPv4 netmask (contiguous ones).
    Netmask,
    Mac,
    /// `"NNN"` or `"NNN/NNN"`, powers of two (disks.*.guest_block_size).
    GuestBlockSize,
    /// `"B:D:F"`, `"D:F"` or `"D"` (disks.*.pci_slot).
    PciSlot,
    /// An ISO 8601 timestamp (read-only properties).
    Timestamp,
    /// A flat object of string values (metadata).
    StrMap,
    /// A flat object of string, number or boolean values (`tags`).
    TagMap,
    /// An array of at most `max` items.
    List {
        item: Item,
        max: usize,
    },
    /// `disks[]`, with [`DISK`] properties.
    Disks,
    /// `nics[]`, with [`NIC`] properties.
    Nics,
    /// Anything (read-only properties computed by the system).
    Any,
}

/// The items of a [`Kind::List`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Item {
    Str {
        max: usize,
    },
    Ipv4,
    /// `nics.*.ips`: an address with its prefix (`10.0.0.5/24`, IPv4 or
    /// IPv6), `dhcp` or `addrconf`.
    IpPrefix,
    /// `nics.*.allowed_ips`: an address or a CIDR range, IPv4 or IPv6.
    IpOrCidr,
    /// A TCP/UDP port.
    Port,
    /// `nics.*.allowed_dhcp_cids`: `0x` and an even number of hex digits.
    DhcpCid,
}

/// What `vmadm update` does with a property.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Update {
    /// Cannot be updated.
    No,
    /// Updated, and takes effect on the running VM at once.
    Live,
    /// Updated, and takes effect when the VM next starts.
    NextStart,
    /// Updated and kept; it does not change the running VM.
    Stored,
}

/// What Alcove does with a property.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Support {
    /// It changes what the VM is, and Alcove does it.
    Honoured,
    /// Accepted and kept (`vmadm get` returns it); it does not change the
    /// VM (bookkeeping, or information for the guest's own tools).
    Kept,
    /// Alcove cannot do what it asks (yet): any value is refused with
    /// this reason.
    NotYet(&'static str),
    /// Only these values can be honoured; others are refused with the
    /// reason (`"{value}" {what} not supported yet`).
    Only { ok: &'static [&'static str], what: &'static str },
}

/// A default, filled in at create when the payload does not give the
/// property.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Default {
    Bool(bool),
    Int(i64),
    Str(&'static str),
    EmptyMap,
    /// Computed from other properties (see validate.rs).
    Computed,
}

/// One property.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Prop {
    pub name: &'static str,
    pub kind: Kind,
    /// May a create payload give it.
    pub create: bool,
    pub update: Update,
    /// Usable in `list -o/-s` and as a filter.
    pub listable: bool,
    pub default: Option<Default>,
    pub support: Support,
}

const fn p(name: &'static str, kind: Kind, create: bool, update: Update, listable: bool) -> Prop {
    Prop { name, kind, create, update, listable, default: None, support: Support::Kept }
}

impl Prop {
    const fn honoured(mut self) -> Self {
        self.support = Support::Honoured;
        self
    }
    const fn not_yet(mut self, why: &'static str) -> Self {
        self.support = Support::NotYet(why);
        self
    }
    const fn only(mut self, ok: &'static [&'static str], what: &'static str) -> Self {
        self.support = Support::Only { ok, what };
        self
    }
    const fn default(mut self, d: Default) -> Self {
        self.default = Some(d);
        self
    }
    /// Read-only: computed by the system, never in a payload.
    pub const fn read_only(&self) -> bool {
        !self.create && matches!(self.update, Update::No)
    }
}

use Kind::*;
use Update::{Live, NextStart, No, Stored};

const S: Kind = Str { max: MAX_STRING };
const RO: bool = false;

/// The top-level properties of a bhyve (or kvm) instance, sorted by name.
pub const TOP: &[Prop] = &[
    p("alias", Alias, true, Stored, true),
    p("archive_on_delete", Bool, true, Stored, false).default(Default::Bool(false)),
    p("autoboot", Bool, true, Stored, true).honoured(),
    p("bhyve_extra_opts", S, true, Stored, false).not_yet("extra bhyve command-line options are"),
    p("billing_id", Uuid, true, Stored, true).default(Default::Str("00000000-0000-0000-0000-000000000000")),
    p("boot", S, true, Stored, false),
    p("boot_timestamp", Timestamp, RO, No, true),
    p("bootrom", Enum(&["bios", "uefi"]), true, NextStart, false).honoured().default(Default::Computed),
    p("brand", Enum(&["bhyve", "kvm"]), true, No, true).honoured(),
    // Alcove's direct-boot extension (vmm-server's boot source): a kernel
    // booted directly instead of `bootrom` firmware.
    p("cmdline", Str { max: 2047 }, true, NextStart, false).honoured(),
    p("cpu_cap", Int { min: 0, max: 100 * MAX_VCPUS }, true, Live, true).honoured(),
    p("cpu_shares", Int { min: 0, max: 1 << 31 }, true, Live, true).honoured().default(Default::Int(100)),
    p("cpu_type", Enum(&["qemu64", "host"]), true, Stored, true),
    p("create_timestamp", Timestamp, RO, No, true),
    p("customer_metadata", StrMap, true, Live, false).honoured().default(Default::EmptyMap),
    p("disk_driver", Enum(&["virtio", "ide", "scsi", "ahci", "nvme"]), true, NextStart, false)
        .only(&["virtio"], "disk drivers are"),
    p("disks", Disks, true, NextStart, true).honoured(),
    p("do_not_inventory", Bool, true, Stored, false),
    p("flexible_disk_size", Int { min: 0, max: MAX_DISK_MIB * MAX_DISKS as i64 }, true, Live, true),
    p("free_space", Int { min: 0, max: i64::MAX }, RO, No, false),
    p("hostname", Hostname, true, Stored, true),
    p("hvm", Bool, RO, No, true),
    p("image_uuid", Uuid, true, No, true),
    p("indestructible_delegated", Bool, true, Stored, true),
    p("indestructible_zoneroot", Bool, true, Stored, true),
    p("initrd", Path, true, NextStart, false).honoured(),
    p("internal_metadata", StrMap, true, Live, false).honoured().default(Default::EmptyMap),
    p("internal_metadata_namespaces", List { item: Item::Str { max: 256 }, max: 64 }, true, Stored, false),
    p("kernel", Path, true, NextStart, false).honoured(),
    p("last_modified", Timestamp, RO, No, true),
    p("max_locked_memory", Int { min: 0, max: MAX_RAM + 1024 }, true, Stored, true).default(Default::Computed),
    p("max_lwps", Int { min: 0, max: i64::MAX >> 1 }, true, Stored, true).default(Default::Int(2000)),
    p("max_physical_memory", Int { min: MIN_RAM, max: MAX_RAM + 1024 }, true, Live, true)
        .honoured()
        .default(Default::Computed),
    p("max_swap", Int { min: 256, max: i64::MAX >> 1 }, true, Stored, true).default(Default::Computed),
    p("nic_driver", Enum(&["virtio", "e1000", "rtl8139"]), true, NextStart, false).only(&["virtio"], "NIC drivers are"),
    p("nics", Nics, true, NextStart, true).honoured(),
    p("owner_uuid", Uuid, true, Stored, true).default(Default::Str("00000000-0000-0000-0000-000000000000")),
    p("package_name", S, true, Stored, true),
    p("package_version", S, true, Stored, true),
    p("pid", Int { min: 0, max: i64::MAX }, RO, No, true),
    p("qemu_extra_opts", S, true, Stored, false).not_yet("extra qemu command-line options are"),
    p("qemu_opts", S, true, Stored, false).not_yet("qemu command-line options are"),
    p("quota", Int { min: 0, max: 1 << 40 }, true, Live, true).honoured(),
    p("ram", Int { min: MIN_RAM, max: MAX_RAM }, true, NextStart, true).honoured().default(Default::Int(256)),
    p("resolvers", List { item: Item::Ipv4, max: 16 }, true, Stored, false),
    p("server_uuid", Uuid, RO, No, false),
    p("snapshots", Any, RO, No, false),
    p("spice_opts", S, true, Stored, false).not_yet("SPICE consoles are"),
    p("spice_password", Str { max: 8 }, true, Stored, false).not_yet("SPICE consoles are"),
    p("spice_port", Int { min: -1, max: 65535 }, true, Stored, false).not_yet("SPICE consoles are"),
    p("state", Any, RO, No, true),
    p("tags", TagMap, true, Live, false).default(Default::EmptyMap),
    p("transition_expire", Int { min: 0, max: i64::MAX }, RO, No, false),
    p("transition_to", Any, RO, No, false),
    p("type", Any, RO, No, true),
    p("uuid", Uuid, true, No, true).honoured(),
    p("v", Int { min: 1, max: 1 }, RO, No, false),
    p("vcpus", Int { min: 1, max: MAX_VCPUS }, true, NextStart, true).honoured().default(Default::Int(1)),
    p("vga", Enum(&["cirrus", "std", "vmware", "qxl", "xenfb"]), true, Stored, false).not_yet("VGA emulation is"),
    p("virtio09", Bool, true, Stored, true),
    p("virtio1", Bool, true, Stored, true),
    p("virtio_txburst", Int { min: 1, max: 65535 }, true, Stored, false),
    p("virtio_txtimer", Int { min: 1, max: i64::MAX >> 1 }, true, Stored, false),
    p("vnc_password", Str { max: 8 }, true, Stored, false).not_yet("VNC consoles are"),
    p("vnc_port", Int { min: -1, max: 65535 }, true, Stored, false).not_yet("VNC consoles are"),
    p("zfs_io_priority", Int { min: 0, max: 1 << 20 }, true, Live, true).default(Default::Int(100)),
    p("zlog_max_size", Int { min: 0, max: i64::MAX >> 1 }, true, Stored, false),
    p("zone_state", Any, RO, No, true),
    p("zonedid", Int { min: 0, max: i64::MAX }, RO, No, true),
    p("zoneid", Int { min: 0, max: i64::MAX }, RO, No, true),
    p("zonename", Any, RO, No, true),
    p("zonepath", Any, RO, No, false),
    p("zpool", Enum(&["zones"]), true, No, true).default(Default::Str("zones")),
];

/// The properties of one `disks[]` entry, sorted by name.
pub const DISK: &[Prop] = &[
    p("block_size", Pow2 { min: 512, max: 131072 }, true, No, false).honoured(),
    p("boot", Bool, true, NextStart, true).honoured().default(Default::Bool(false)),
    p(
        "compression",
        Enum(&[
            "on", "off", "gzip", "gzip-1", "gzip-2", "gzip-3", "gzip-4", "gzip-5", "gzip-6", "gzip-7", "gzip-8",
            "gzip-9", "lz4", "lzjb", "zle",
        ]),
        true,
        Stored,
        false,
    )
    .default(Default::Str("off")),
    p("guest_block_size", GuestBlockSize, true, NextStart, true).not_yet("a guest block size other than the disk's is"),
    p("image_name", S, true, Stored, true),
    p("image_size", Int { min: 1, max: MAX_DISK_MIB }, true, Stored, true),
    p("image_uuid", Uuid, true, No, true).honoured(),
    p("media", Enum(&["disk", "cdrom"]), true, NextStart, true)
        .default(Default::Str("disk"))
        .only(&["disk"], "media are"),
    p("model", Enum(&["virtio", "ahci", "nvme", "ide", "scsi"]), true, NextStart, true)
        .default(Default::Computed)
        .only(&["virtio"], "disk models are"),
    p("nocreate", Bool, true, No, false),
    p("notrim", Bool, true, NextStart, true),
    p("path", Path, true, No, true).honoured(),
    p("pci_slot", PciSlot, true, NextStart, true).not_yet("choosing a disk's PCI slot is"),
    p("refreservation", Int { min: 0, max: MAX_DISK_MIB }, true, Stored, false),
    p("size", Int { min: 1, max: MAX_DISK_MIB }, true, NextStart, true).honoured(),
    p("uuid", Uuid, true, Stored, true),
    p("zpool", Enum(&["zones"]), true, No, true).default(Default::Str("zones")),
];

/// The properties of one `nics[]` entry, sorted by name.
pub const NIC: &[Prop] = &[
    p("allow_dhcp_spoofing", Bool, true, Live, true).honoured().default(Default::Bool(false)),
    p("allow_ip_spoofing", Bool, true, Live, true).honoured().default(Default::Bool(false)),
    p("allow_mac_spoofing", Bool, true, Live, true).honoured().default(Default::Bool(false)),
    p("allow_restricted_traffic", Bool, true, Live, true).honoured().default(Default::Bool(false)),
    p("allow_unfiltered_promisc", Bool, true, Live, true).default(Default::Bool(false)),
    p("allowed_dhcp_cids", List { item: Item::DhcpCid, max: 20 }, true, Stored, true).honoured(),
    p("allowed_ips", List { item: Item::IpOrCidr, max: 20 }, true, Stored, true).honoured(),
    p("blocked_outgoing_ports", List { item: Item::Port, max: 64 }, true, Stored, true),
    p("dhcp_server", Bool, true, Live, true),
    p("gateway", Ipv4, true, Stored, true).honoured(),
    p("gateways", List { item: Item::Ipv4, max: 20 }, true, Stored, true).honoured(),
    p("interface", Any, RO, No, true),
    p("ip", S, true, Stored, true).honoured(),
    p("ips", List { item: Item::IpPrefix, max: 20 }, true, Stored, true).honoured(),
    p("mac", Mac, true, No, true).honoured(),
    p("model", Enum(&["virtio", "e1000", "rtl8139"]), true, NextStart, true)
        .default(Default::Computed)
        .only(&["virtio"], "NIC models are"),
    p("mtu", Int { min: 576, max: 9000 }, true, NextStart, false).honoured(),
    p("netmask", Netmask, true, Stored, true).honoured(),
    p("network_uuid", Uuid, true, Stored, true),
    p("nic_tag", Str { max: 31 }, true, NextStart, true).honoured(),
    p("primary", Bool, true, Stored, true).honoured(),
    p("vlan_id", Int { min: 0, max: 4094 }, true, NextStart, true).honoured().default(Default::Int(0)),
];

fn find(table: &'static [Prop], name: &str) -> Option<&'static Prop> {
    table.binary_search_by(|p| p.name.cmp(name)).ok().map(|i| &table[i])
}

/// A top-level property by name.
pub fn top(name: &str) -> Option<&'static Prop> {
    find(TOP, name)
}

/// A `disks[]` property by name.
pub fn disk(name: &str) -> Option<&'static Prop> {
    find(DISK, name)
}

/// A `nics[]` property by name.
pub fn nic(name: &str) -> Option<&'static Prop> {
    find(NIC, name)
}
