//! netd's VNICs and the VMMs that attach to them: the `vnic` interface
//! ([`libipc::interfaces::vnic`]) over one [`Fabric`] per switch.
//!
//! ```text
//!  netd.conf ──▶ NetConfig ──▶ VnicServer: switches (nic_tags, etherstubs), VNICs with their client
//!  VMM ── vnic.attach(vnic) ──▶ checks the caller's badge ─▶ region + Fabric::attach ─▶ frame cap in the reply
//!  VMM ── vnic.kick(handle) ──▶ Fabric::poll ─▶ signal the VMMs whose rings got frames
//! ```
//!
//! Which client may attach which VNIC comes from the boot configuration
//! (the control plane will create VNICs at run time): each VNIC names its
//! client by the badge of the client's netd endpoint (init badges a
//! caller's endpoints with its identity, see `servers/init`). Every call is
//! checked against the caller's badge: another client's VNIC or handle
//! answers as if it did not exist, a handle that was detached is never
//! valid again (handles are not reused). A client's second `attach` of a
//! VNIC replaces its first (a VMM restarted by init finds its VNIC
//! attached by its dead self: the ring starts afresh, the old handle goes
//! stale); `client_gone` detaches everything of a client that ended.
//!
//! What the process provides is behind [`VnicPlatform`]: ring memory (a
//! frame the VMM maps; a vector in host tests), the signal to a VMM, the
//! machine's NIC for frames to a nic_tag's uplink, and the clock.

use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::net::{IpAddr, Ipv4Addr};
use core::str::FromStr;

use abi::CapSlot;
use libipc::cap::{Cap, Frame};
use libipc::framering::{Geometry, MAX_SLOTS, RingRegion, SLOTS};
use libipc::interfaces::{AttachedVnic, ServerStatus, VnicError, VnicInfo, status, vnic};
use libipc::{RemoteError, reply_caps};
use netd_switch::frame::MacAddr;
use netd_switch::protect::IpNet;
use netd_switch::{Protection, SwitchConfig, VnicConfig, VnicId};

use crate::fabric::{AttachError, Fabric, Work};
use crate::stack::AddressConfig;

/// Most switches in a configuration.
pub const MAX_SWITCHES: usize = 64;
/// Most VNICs in a configuration.
pub const MAX_VNICS: usize = 1024;
/// The first badge of a `vnic.grant`'s endpoint (init badges its clients
/// with small identities, below this).
pub const GRANT_BADGE_BASE: u64 = 1 << 48;
/// Most polls of a switch one `kick` makes (a round per
/// [`crate::fabric::POLL_BUDGET`] frames a ring: 8 cover the largest ring).
pub const KICK_ROUNDS: usize = 8;
/// What an entry whose grant was revoked holds as its client: nobody's
/// (the slot is reused by a later grant).
const NO_CLIENT: u64 = u64::MAX;
/// The client of an operator's VNIC (`dladm create-vnic`): nobody
/// attaches it (init badges clients with small numbers, grants start at
/// [`GRANT_BADGE_BASE`] and stay below 2^49).
const OPERATOR: u64 = u64::MAX - 1;

/// Whether `name` is a valid illumos link name (`dladm_valid_linkname`,
/// `dlpi_parselink`): 1 to 31 characters of letters, digits, `_` and `.`,
/// starting with a letter and ending in a number (the PPA) without
/// leading zeros. `Err` says why not.
pub fn check_link_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 31 {
        return Err(alloc::format!("{} characters (1 to 31)", name.chars().count()));
    }
    if let Some(c) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '.')) {
        return Err(alloc::format!("{c:?} (letters, digits, '_' and '.' only)"));
    }
    if !name.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return Err(String::from("it must start with a letter"));
    }
    let ppa = &name[name.trim_end_matches(|c: char| c.is_ascii_digit()).len()..];
    if ppa.is_empty() {
        return Err(String::from("it must end in a number (vnic0, stub1)"));
    }
    if ppa.len() > 1 && ppa.starts_with('0') {
        return Err(String::from("its number has a leading zero"));
    }
    if ppa.parse::<u32>().is_err() {
        return Err(String::from("its number is too large"));
    }
    Ok(())
}

/// A switch of the configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SwitchSpec {
    /// The nic_tag or etherstub name.
    pub name: String,
    /// A nic_tag (frames for unknown stations go to the machine's NIC)
    /// or an etherstub (a switch of its own).
    pub uplink: bool,
}

/// A VNIC of the configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VnicSpec {
    /// The badge of the one client that may attach it.
    pub client: u64,
    /// The switch it is on (a [`SwitchSpec::name`]).
    pub switch: String,
    /// MAC, VLAN, link protection, cap.
    pub config: VnicConfig,
}

/// The host's own TCP/IP on a VNIC of a switch (the `host` line).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostSpec {
    /// The switch its VNIC is on (`admin` by default in generated files).
    pub switch: String,
    /// Its VNIC's MAC.
    pub mac: MacAddr,
    /// Its address: static or DHCP.
    pub addr: AddressConfig,
    /// A TCP port where netd echoes what it is sent (a diagnostic, off
    /// unless given).
    pub echo_port: Option<u16>,
}

/// A machine NIC and the nic_tag whose uplink it is (the `nic` line).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NicSpec {
    /// The NIC's number: the machine's virtio-net functions in PCI order
    /// (bus 0, device, function), from 0.
    pub index: u32,
    /// The nic_tag (a `nic_tag` switch) it is the uplink of.
    pub nic_tag: String,
}

/// The nic_tag the machine's first NIC serves when no `nic` line says.
pub const DEFAULT_NIC_TAG: &str = "admin";

/// netd's boot configuration: its switches and VNICs, the machine's NICs
/// and the host's TCP/IP.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetConfig {
    pub switches: Vec<SwitchSpec>,
    pub vnics: Vec<VnicSpec>,
    pub host: Option<HostSpec>,
    /// `nic` lines; none: NIC 0 is the uplink of [`DEFAULT_NIC_TAG`] if
    /// that nic_tag is defined ([`NetConfig::uplink_of`]).
    pub nics: Vec<NicSpec>,
}

/// A line of the configuration that is wrong, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// 1-based.
    pub line: usize,
    pub why: String,
}

impl core::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "netd.conf line {}: {}", self.line, self.why)
    }
}

impl NetConfig {
    /// Parses `netd.conf`: one item per line, `#` starts a comment.
    ///
    /// ```text
    /// etherstub stub0
    /// nic_tag admin
    /// vnic client=3 switch=stub0 mac=02:08:20:00:00:01 vlan_id=0 ip=10.0.0.1 allowed_ips=10.0.1.0/24,10.0.2.7
    ///      allow_ip_spoofing=false allow_mac_spoofing=false allow_dhcp_spoofing=false
    ///      allow_restricted_traffic=false maxbw=20 allowed_dhcp_cids=0x0102ab
    /// ```
    ///
    /// (a `vnic` is one line; `client`, `switch` and `mac` are required,
    /// the rest take SmartOS's defaults). At most one `host` line gives
    /// the host's own TCP/IP a VNIC and an address:
    ///
    /// ```text
    /// host switch=admin mac=02:08:20:ff:00:01 ip=10.0.2.15/24 gateway=10.0.2.2 echo=7
    /// host switch=admin mac=02:08:20:ff:00:01 ip=dhcp
    /// ```
    ///
    /// A `nic` line makes machine NIC N (its virtio-net functions in PCI
    /// order, from 0) the uplink of a nic_tag; without one, NIC 0 is the
    /// uplink of `admin` when that nic_tag is defined:
    ///
    /// ```text
    /// nic 0 nic_tag=admin
    /// ```
    ///
    /// A MAC twice on one switch, an unknown switch or property is an
    /// error naming the line and property.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let mut config = NetConfig::default();
        let mut host_line = 0;
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let err = |why: String| ConfigError { line, why };
            let content = raw.split('#').next().unwrap_or("").trim();
            let mut words = content.split_whitespace();
            let Some(kind) = words.next() else { continue };
            match kind {
                "etherstub" | "nic_tag" => {
                    let name = words.next().ok_or_else(|| err(alloc::format!("{kind}: a name is missing")))?;
                    if let Some(extra) = words.next() {
                        return Err(err(alloc::format!("{kind} {name}: unexpected {extra:?}")));
                    }
                    if config.switches.iter().any(|s| s.name == name) {
                        return Err(err(alloc::format!("switch {name:?} is defined twice")));
                    }
                    if config.switches.len() >= MAX_SWITCHES {
                        return Err(err(alloc::format!("more than {MAX_SWITCHES} switches")));
                    }
                    config.switches.push(SwitchSpec { name: name.into(), uplink: kind == "nic_tag" });
                }
                "vnic" => {
                    if config.vnics.len() >= MAX_VNICS {
                        return Err(err(alloc::format!("more than {MAX_VNICS} VNICs")));
                    }
                    let spec = parse_vnic(words).map_err(err)?;
                    if !config.switches.iter().any(|s| s.name == spec.switch) {
                        return Err(err(alloc::format!(
                            "property \"switch\": {:?} is no etherstub or nic_tag defined above",
                            spec.switch
                        )));
                    }
                    if config.vnics.iter().any(|v| {
                        v.switch == spec.switch && v.config.mac == spec.config.mac && v.config.vlan_id == spec.config.vlan_id
                    }) {
                        return Err(err(alloc::format!(
                            "property \"mac\": {} is already on switch {:?}, VLAN {}",
                            spec.config.mac, spec.switch, spec.config.vlan_id
                        )));
                    }
                    config.vnics.push(spec);
                }
                "host" => {
                    if config.host.is_some() {
                        return Err(err(String::from("a second \"host\" line (the host has one address)")));
                    }
                    config.host = Some(parse_host(words).map_err(err)?);
                    host_line = line;
                }
                "nic" => {
                    let nic = parse_nic(words).map_err(err)?;
                    match config.switches.iter().find(|s| s.name == nic.nic_tag) {
                        Some(s) if s.uplink => {}
                        Some(_) => {
                            return Err(err(alloc::format!(
                                "property \"nic_tag\": {:?} is an etherstub (it has no uplink)",
                                nic.nic_tag
                            )));
                        }
                        None => {
                            return Err(err(alloc::format!(
                                "property \"nic_tag\": {:?} is no nic_tag defined above",
                                nic.nic_tag
                            )));
                        }
                    }
                    if let Some(o) = config.nics.iter().find(|n| n.index == nic.index || n.nic_tag == nic.nic_tag) {
                        return Err(err(alloc::format!(
                            "NIC {} is already the uplink of {:?} (one NIC a nic_tag, one nic_tag a NIC)",
                            o.index, o.nic_tag
                        )));
                    }
                    config.nics.push(nic);
                }
                other => return Err(err(alloc::format!("{other:?} is not etherstub, nic_tag, vnic, nic or host"))),
            }
        }
        if let Some(h) = &config.host {
            let err = |why: String| ConfigError { line: host_line, why };
            if !config.switches.iter().any(|s| s.name == h.switch) {
                return Err(err(alloc::format!("property \"switch\": {:?} is no etherstub or nic_tag defined", h.switch)));
            }
            if config.vnics.iter().any(|v| v.switch == h.switch && v.config.mac == h.mac && v.config.vlan_id == 0) {
                return Err(err(alloc::format!("property \"mac\": {} is already a VNIC's on switch {:?}", h.mac, h.switch)));
            }
        }
        Ok(config)
    }
}

impl NetConfig {
    /// The nic_tag machine NIC `index` is the uplink of, if any (see
    /// [`NetConfig::parse`]).
    pub fn uplink_of(&self, index: u32) -> Option<&str> {
        if self.nics.is_empty() {
            let default = self.switches.iter().any(|s| s.uplink && s.name == DEFAULT_NIC_TAG);
            return (index == 0 && default).then_some(DEFAULT_NIC_TAG);
        }
        self.nics.iter().find(|n| n.index == index).map(|n| n.nic_tag.as_str())
    }
}

fn parse_nic<'a>(mut words: impl Iterator<Item = &'a str>) -> Result<NicSpec, String> {
    let index = words.next().ok_or_else(|| String::from("nic: the NIC's number is missing (nic 0 nic_tag=admin)"))?;
    let index = index
        .parse::<u32>()
        .ok()
        .filter(|i| *i < 64)
        .ok_or_else(|| alloc::format!("nic: expected the NIC's number (0 to 63), got {index:?}"))?;
    let mut nic_tag = None;
    for w in words {
        let (key, value) = w.split_once('=').ok_or_else(|| alloc::format!("{w:?} is not property=value"))?;
        match key {
            "nic_tag" => nic_tag = Some(String::from(value)),
            _ => return Err(alloc::format!("property {key:?} is not a NIC property")),
        }
    }
    Ok(NicSpec { index, nic_tag: nic_tag.ok_or_else(|| String::from("property \"nic_tag\" is missing"))? })
}

fn parse_host<'a>(words: impl Iterator<Item = &'a str>) -> Result<HostSpec, String> {
    let (mut switch, mut mac, mut addr, mut gateway, mut echo_port) = (None, None, None, None, None);
    for w in words {
        let (key, value) = w.split_once('=').ok_or_else(|| alloc::format!("{w:?} is not property=value"))?;
        let bad = |expected: &str| alloc::format!("property {key:?}: expected {expected}, got {value:?}");
        match key {
            "switch" => switch = Some(String::from(value)),
            "mac" => {
                let m = MacAddr::from_str(value).map_err(|_| bad("a MAC address like 02:08:20:ff:00:01"))?;
                if !m.is_station() {
                    return Err(bad("a unicast MAC address"));
                }
                mac = Some(m);
            }
            "ip" if value == "dhcp" => addr = Some(None),
            "ip" => {
                let expected = "an IPv4 address with its prefix length (10.0.2.15/24), or dhcp";
                let (ip, prefix) = value.split_once('/').ok_or_else(|| bad(expected))?;
                let ip = ip.parse::<Ipv4Addr>().map_err(|_| bad(expected))?;
                let prefix = prefix.parse::<u8>().ok().filter(|p| (1..=32).contains(p)).ok_or_else(|| bad(expected))?;
                if ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() {
                    return Err(bad("a unicast IPv4 address"));
                }
                addr = Some(Some((ip, prefix)));
            }
            "gateway" => gateway = Some(value.parse::<Ipv4Addr>().map_err(|_| bad("an IPv4 address"))?),
            "echo" => echo_port = Some(value.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| bad("a TCP port, 1 to 65535"))?),
            _ => return Err(alloc::format!("property {key:?} is not a host property")),
        }
    }
    let missing = |p: &str| alloc::format!("property {p:?} is missing");
    let addr = match addr.ok_or_else(|| missing("ip"))? {
        Some((ip, prefix)) => AddressConfig::Static { ip, prefix, gateway },
        None if gateway.is_some() => return Err(String::from("property \"gateway\": DHCP gives the gateway")),
        None => AddressConfig::Dhcp,
    };
    Ok(HostSpec { switch: switch.ok_or_else(|| missing("switch"))?, mac: mac.ok_or_else(|| missing("mac"))?, addr, echo_port })
}

fn parse_vnic<'a>(words: impl Iterator<Item = &'a str>) -> Result<VnicSpec, String> {
    let (mut client, mut switch, mut mac) = (None, None, None);
    let mut vlan_id = 0u16;
    let mut protection = Protection::default();
    let mut maxbw = None;
    for w in words {
        let (key, value) = w.split_once('=').ok_or_else(|| alloc::format!("{w:?} is not property=value"))?;
        let bad = |expected: &str| alloc::format!("property {key:?}: expected {expected}, got {value:?}");
        let boolean = || match value {
            "true" => Ok(true),
            "false" => Ok(false),
            _ => Err(bad("true or false")),
        };
        match key {
            "client" => client = Some(value.parse::<u64>().map_err(|_| bad("a client's badge (a number)"))?),
            "switch" => switch = Some(String::from(value)),
            "mac" => {
                let m = MacAddr::from_str(value).map_err(|_| bad("a MAC address like 02:08:20:00:00:01"))?;
                if !m.is_station() {
                    return Err(bad("a unicast MAC address"));
                }
                mac = Some(m);
            }
            "vlan_id" => {
                vlan_id = value.parse::<u16>().ok().filter(|v| *v <= netd_switch::frame::MAX_VLAN_ID).ok_or_else(|| bad("0 to 4094"))?;
            }
            "ip" => protection.ip = Some(value.parse::<IpAddr>().map_err(|_| bad("an IP address"))?),
            "allowed_ips" => {
                for a in value.split(',') {
                    protection.allowed_ips.push(IpNet::from_str(a).map_err(|_| bad("addresses or prefixes, comma-separated"))?);
                }
            }
            "allowed_dhcp_cids" => {
                for c in value.split(',') {
                    let hex = c.strip_prefix("0x").unwrap_or("");
                    let bytes: Option<Vec<u8>> = (hex.len() >= 2 && hex.len() % 2 == 0)
                        .then(|| (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok()).collect())
                        .flatten();
                    protection.allowed_dhcp_cids.push(bytes.ok_or_else(|| bad("client identifiers (0x and hex digits), comma-separated"))?);
                }
            }
            "allow_ip_spoofing" => protection.allow_ip_spoofing = boolean()?,
            "allow_mac_spoofing" => protection.allow_mac_spoofing = boolean()?,
            "allow_dhcp_spoofing" => protection.allow_dhcp_spoofing = boolean()?,
            "allow_restricted_traffic" => protection.allow_restricted_traffic = boolean()?,
            "maxbw" => maxbw = Some(value.parse::<u32>().ok().filter(|m| *m > 0).ok_or_else(|| bad("Mbit/s, at least 1"))?),
            _ => return Err(alloc::format!("property {key:?} is not a VNIC property")),
        }
    }
    let missing = |p: &str| alloc::format!("property {p:?} is missing");
    let config = VnicConfig { mac: mac.ok_or_else(|| missing("mac"))?, vlan_id, protection, maxbw_mbit: maxbw };
    Ok(VnicSpec { client: client.ok_or_else(|| missing("client"))?, switch: switch.ok_or_else(|| missing("switch"))?, config })
}

/// What netd needs from the process it runs in.
pub trait VnicPlatform {
    /// A ring region as netd reaches it: by copies (the VMM writes it
    /// whenever it likes).
    type Region: RingRegion;
    /// A new region of `pages` pages a client can map: the region and the
    /// slot of the frame capability to hand over. `Err` says why not.
    fn create(&mut self, pages: usize) -> Result<(Self::Region, CapSlot), String>;
    /// Gives a region back (netd's mapping and capability go).
    fn destroy(&mut self, region: Self::Region);
    /// Tells the client `client` that the ring of its VNIC `vnic` has
    /// frames for it or room again (through its doorbell, if it gave one).
    fn signal(&mut self, client: u64, vnic: u32);
    /// `client` just attached its VNIC `vnic`: the doorbell its `attach`
    /// brought (on Alcove, a notification capability with the request),
    /// if any, is the one [`VnicPlatform::signal`] rings from now on. A
    /// platform without doorbells ignores it.
    fn doorbell(&mut self, client: u64, vnic: u32) {
        let _ = (client, vnic);
    }
    /// The frame capability the request being answered brought, mapped
    /// as a region (for `socket.share_buffer`), or why it cannot be one;
    /// `None` when it brought none. The region goes back with
    /// [`VnicPlatform::destroy`].
    fn take_buffer(&mut self) -> Option<Result<Self::Region, libipc::interfaces::SocketError>> {
        None
    }
    /// The capability every attaching VMM gets with its ring: netd's own
    /// doorbell, a notification it may only signal, rung after it put
    /// frames into its rings (netd then polls every ring: [`VnicServer::poll`]).
    /// Unlike a `kick` call, ringing it never blocks the VMM's thread, so a
    /// vCPU thread keeps its CPU instead of handing it to another thread of
    /// its priority until that one's time slice ends. `None`: no such
    /// doorbell (the VMM then kicks).
    fn netd_doorbell(&mut self) -> Option<CapSlot> {
        None
    }
    /// `client`'s VNIC `vnic` was detached: its doorbell goes (netd must
    /// not keep a VMM's kernel object alive after the VMM let it go).
    fn detached(&mut self, client: u64, vnic: u32) {
        let _ = (client, vnic);
    }
    /// Sends `frame` (as it goes on the wire) out of the machine's NIC of
    /// nic_tag `switch`.
    fn uplink(&mut self, switch: &str, frame: &[u8]);
    /// The next frame a machine NIC received, as it came off the wire,
    /// with the nic_tag it is the uplink of; `None` when none waits.
    /// netd's serving loop drains this ([`crate::host::Netd::nic_input`]).
    fn receive(&mut self) -> Option<(String, Vec<u8>)> {
        None
    }
    /// One line per machine NIC for netd's status (empty: none).
    fn nic_status(&self) -> String {
        String::new()
    }
    /// Nanoseconds on a clock that does not go back.
    fn now_ns(&self) -> u64;
    /// The processor's time-stamp counter (on Alcove, RDTSC; under QEMU's
    /// `-icount shift=0` a delta is the instructions executed), for
    /// [`KickPath`]. A platform without one gives 0 and the path's ticks
    /// stay 0.
    fn ticks(&self) -> u64 {
        0
    }
    /// A copy of netd's endpoint badged `badge` for a `vnic.grant`'s
    /// holder: the slot of the capability to hand over (netd keeps it to
    /// revoke the holder's copy). A platform that cannot grant says why.
    fn mint(&mut self, badge: u64) -> Result<CapSlot, String> {
        let _ = badge;
        Err(String::from("this netd cannot grant endpoints"))
    }
    /// Revokes and deletes a capability [`VnicPlatform::mint`] made (the
    /// holder's copy goes with it).
    fn unmint(&mut self, slot: CapSlot) {
        let _ = slot;
    }
}

/// What the `kick` path cost so far: from the VMM's doorbell (the call)
/// through the switch into the receiving VNICs' rings and their VMMs'
/// signals, in time-stamp-counter ticks ([`VnicPlatform::ticks`]) around
/// each kick's pass. Always counted (two counter reads a kick); in netd's
/// status and, with netd's `log-kick-path=N` argument, logged. A poll
/// that put frames into rings ([`VnicServer::poll`]: a VMM rang netd's
/// doorbell, or netd's timer) counts as a kick: vCPU threads ring the
/// doorbell instead of calling `kick`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KickPath {
    /// Kicks of attached VNICs (refused ones not counted).
    pub kicks: u64,
    /// Frames those kicks put into the VNICs' rings (a flooded frame once
    /// per ring).
    pub frames: u64,
    /// Ticks those kicks took, all of them (those that moved nothing too).
    pub ticks: u64,
    /// The fewest ticks of a kick that put exactly one frame into a ring
    /// (`None`: none yet): the path without the time other work (an
    /// interrupt, under `-icount` another CPU's turn) added to some kicks.
    pub one_frame_min: Option<u64>,
}

impl KickPath {
    /// Ticks a frame, over all kicks (0 without frames).
    pub fn per_frame(&self) -> u64 {
        self.ticks.checked_div(self.frames).unwrap_or(0)
    }
}

impl core::fmt::Display for KickPath {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "kick path: {} kicks, {} frames into rings, {} ticks ({} a frame", self.kicks, self.frames, self.ticks, self.per_frame())?;
        match self.one_frame_min {
            Some(m) => write!(f, ", one-frame kick at least {m})"),
            None => write!(f, ")"),
        }
    }
}

struct Attachment {
    handle: u32,
    id: VnicId,
}

struct Entry {
    /// An operator's VNIC's name (`dladm create-vnic`); others are
    /// `vnicN` by number.
    name: Option<String>,
    spec: VnicSpec,
    switch: usize,
    attached: Option<Attachment>,
}

impl Entry {
    /// What `vnics` and `show` say of VNIC number `i`.
    fn info(&self, i: usize) -> VnicInfo {
        VnicInfo {
            vnic: i as u32,
            mac: self.spec.config.mac.0,
            vlan_id: self.spec.config.vlan_id,
            switch: self.spec.switch.clone(),
            attached: self.attached.is_some(),
        }
    }
}

/// A `vnic.grant`: its holder's badge and netd's copy of its endpoint
/// (`None` for a grant of an earlier netd made again with `regrant`: the
/// holder's copy came from the earlier netd's, which went with it, so
/// `revoke` deletes the VNICs and the badge reaches nothing from then on).
struct Grant {
    badge: u64,
    slot: Option<CapSlot>,
}

/// The server: its switches, its VNICs and who may attach them.
pub struct VnicServer<P: VnicPlatform> {
    service: alcove_rt::Service,
    platform: P,
    switches: Vec<(String, Fabric<P::Region>)>,
    vnics: Vec<Entry>,
    next_handle: u32,
    /// The first handle this netd gave ([`VnicServer::set_first_handle`]):
    /// handles below it, or not given yet, are an earlier netd's.
    first_handle: u32,
    /// `kick`s and `detach`es of handles this netd never gave (a VMM that
    /// attached to an earlier netd, before it attaches again).
    stale_handles: u64,
    /// Badges that may `grant` and `revoke` besides init's (0).
    admins: Vec<u64>,
    grants: Vec<Grant>,
    next_grant: u64,
    /// The first grant badge this netd gave ([`VnicServer::set_first_grant`]):
    /// `first_grant..next_grant` are this life's, never an earlier netd's
    /// to `regrant`.
    first_grant: u64,
    /// Badges of regranted grants revoked in this life: never made again.
    retired: Vec<u64>,
    /// The badge of the request being answered ([`VnicServer::set_caller`]).
    caller: u64,
    kick_path: KickPath,
    /// The earliest time a VNIC the switches hold back (its `maxbw`
    /// bucket) may go on, as the last poll or kick found it.
    throttle_wake: Option<u64>,
    /// Each nic_tag's machine NIC link (`vioif0`): (nic_tag, link).
    uplinks: Vec<(String, String)>,
    /// Etherstubs `create_etherstub` made that live (their names).
    made_etherstubs: Vec<String>,
    /// The switch the host stack's VNIC is on.
    host_switch: Option<usize>,
}

impl<P: VnicPlatform> VnicServer<P> {
    /// The switches and VNICs of `config`, nothing attached yet.
    pub fn new(config: &NetConfig, platform: P) -> Self {
        let switches = config
            .switches
            .iter()
            .filter_map(|s| {
                let sc = SwitchConfig { uplink: s.uplink, ..SwitchConfig::default() };
                // SLOTS is inside 1..=MAX_SLOTS: this does not fail.
                match Fabric::new(sc, SLOTS) {
                    Ok(fabric) => Some((s.name.clone(), fabric)),
                    Err(e) => {
                        log::error!("netd: switch {}: {e}", s.name);
                        None
                    }
                }
            })
            .collect::<Vec<_>>();
        let vnics = config
            .vnics
            .iter()
            .filter_map(|v| {
                let switch = switches.iter().position(|(n, _)| *n == v.switch)?;
                Some(Entry { name: None, spec: v.clone(), switch, attached: None })
            })
            .collect();
        Self {
            service: alcove_rt::Service::new("netd", crate::VERSION),
            platform,
            switches,
            vnics,
            next_handle: 1,
            first_handle: 1,
            stale_handles: 0,
            admins: Vec::new(),
            grants: Vec::new(),
            next_grant: GRANT_BADGE_BASE,
            first_grant: GRANT_BADGE_BASE,
            retired: Vec::new(),
            caller: 0,
            kick_path: KickPath::default(),
            throttle_wake: None,
            uplinks: Vec::new(),
            made_etherstubs: Vec::new(),
            host_switch: None,
        }
    }

    /// The machine NICs netd drives, as (NIC number, nic_tag): each is
    /// the nic_tag's link `vioif<N>` in `switches` (`dladm show-link`).
    pub fn set_uplinks(&mut self, nics: &[(u32, String)]) {
        self.uplinks = nics.iter().map(|(i, tag)| (tag.clone(), alloc::format!("vioif{i}"))).collect();
    }

    /// The badges (besides init's, 0) that may `grant` and `revoke`: the
    /// control plane's (netd's `vnic-admin=` argument names them).
    pub fn set_admins(&mut self, badges: &[u64]) {
        self.admins = badges.to_vec();
    }

    /// Handles start at `first` (at least 1; the process gives a random
    /// one), so a handle a VMM kept from an earlier netd (restarted by
    /// init) is not one this netd gave: its `kick` is `NoSuchHandle`,
    /// and the VMM attaches again. Before any `attach` only.
    pub fn set_first_handle(&mut self, first: u32) {
        if self.next_handle == self.first_handle {
            self.first_handle = first.max(1);
            self.next_handle = self.first_handle;
        }
    }

    /// Grant badges start at `GRANT_BADGE_BASE + offset` (the process
    /// gives a random offset below 2^40), so a restarted netd's new grants
    /// do not take the badges an earlier netd gave, which their holders
    /// still carry and `regrant` brings back. Before any `grant` only.
    pub fn set_first_grant(&mut self, offset: u64) {
        if self.next_grant == self.first_grant {
            self.first_grant = GRANT_BADGE_BASE + (offset & ((1 << 40) - 1));
            self.next_grant = self.first_grant;
        }
    }

    /// Whether `badge` is one this netd's `grant` gave.
    fn granted_here(&self, badge: u64) -> bool {
        (self.first_grant..self.next_grant).contains(&badge)
    }

    /// `kick`s and `detach`es that named a handle this netd never gave:
    /// more than 0 means a client knew an earlier netd.
    pub fn stale_handles(&self) -> u64 {
        self.stale_handles
    }

    /// Frames the switches took from the attached VNICs' rings so far
    /// (a detached VNIC's no longer count).
    pub fn frames_taken(&self) -> u64 {
        self.vnics
            .iter()
            .filter_map(|e| e.attached.as_ref().and_then(|a| self.switches[e.switch].1.taken(a.id)))
            .sum()
    }

    /// What the `kick` path cost so far ([`KickPath`]).
    pub fn kick_path(&self) -> KickPath {
        self.kick_path
    }

    /// Whether `handle` is one this netd gave (attached or not now).
    fn given(&self, handle: u32) -> bool {
        if self.first_handle <= self.next_handle {
            (self.first_handle..self.next_handle).contains(&handle)
        } else {
            // Wrapped past u32::MAX.
            handle >= self.first_handle || (1..self.next_handle).contains(&handle)
        }
    }

    /// Counts a refused handle that no netd of this life gave.
    fn note_stale(&mut self, r: &Result<usize, VnicError>, handle: u32) {
        if r.is_err() && !self.given(handle) {
            self.stale_handles += 1;
        }
    }

    fn is_admin(&self) -> bool {
        self.caller == 0 || self.admins.contains(&self.caller)
    }

    /// Grants live now.
    pub fn grants(&self) -> usize {
        self.grants.len()
    }

    /// The specs of a grant's lines for client `badge`, checked against
    /// the switches and the VNICs that exist (and each other).
    fn grant_specs(&self, lines: &[String], badge: u64) -> Result<Vec<VnicSpec>, VnicError> {
        let max = libipc::interfaces::VNIC_GRANT_MAX as usize;
        if lines.is_empty() || lines.len() > max {
            return Err(VnicError::Invalid { why: alloc::format!("a grant makes 1 to {max} VNICs, got {}", lines.len()) });
        }
        let client = alloc::format!("client={badge}");
        let mut specs: Vec<VnicSpec> = Vec::new();
        for (i, line) in lines.iter().enumerate() {
            let bad = |why: String| VnicError::Invalid { why: alloc::format!("VNIC {i}: {why}") };
            if line.split_whitespace().any(|w| w.starts_with("client=")) {
                return Err(bad(String::from("property \"client\": netd names the grant's client itself")));
            }
            let spec = parse_vnic(core::iter::once(client.as_str()).chain(line.split_whitespace())).map_err(bad)?;
            if self.switch_index(&spec.switch).is_none() {
                return Err(bad(alloc::format!("property \"switch\": {:?} is no etherstub or nic_tag of netd", spec.switch)));
            }
            let taken = |v: &VnicSpec| {
                v.client != NO_CLIENT
                    && v.switch == spec.switch
                    && v.config.mac == spec.config.mac
                    && v.config.vlan_id == spec.config.vlan_id
            };
            if self.vnics.iter().any(|e| taken(&e.spec)) || specs.iter().any(taken) {
                return Err(bad(alloc::format!(
                    "property \"mac\": {} is already on switch {:?}, VLAN {}",
                    spec.config.mac, spec.switch, spec.config.vlan_id
                )));
            }
            specs.push(spec);
        }
        Ok(specs)
    }

    /// The switch named `name` (a deleted etherstub's slot has no name).
    fn switch_index(&self, name: &str) -> Option<usize> {
        if name.is_empty() {
            return None;
        }
        self.switches.iter().position(|(n, _)| n == name)
    }

    /// Whether a link (switch, operator's VNIC, `vnicN`, `vioifN`) is
    /// named `name`, or `name` is one netd keeps for its own links.
    fn name_taken(&self, name: &str) -> Result<(), VnicError> {
        check_link_name(name).map_err(|why| VnicError::BadName { name: name.into(), why })?;
        for own in ["vnic", "vioif"] {
            if name.strip_prefix(own).is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit())) {
                return Err(VnicError::BadName { name: name.into(), why: alloc::format!("{own}N names are netd's own") });
            }
        }
        let live = |e: &&Entry| e.spec.client != NO_CLIENT;
        if self.switch_index(name).is_some() || self.vnics.iter().filter(live).any(|e| e.name.as_deref() == Some(name)) {
            return Err(VnicError::Exists { name: name.into() });
        }
        Ok(())
    }

    /// The live VNIC named `name`: an operator's by its name, others as
    /// `vnicN`.
    fn vnic_named(&self, name: &str) -> Option<usize> {
        let live = |e: &Entry| e.spec.client != NO_CLIENT;
        if let Some(i) = self.vnics.iter().position(|e| live(e) && e.name.as_deref() == Some(name)) {
            return Some(i);
        }
        let n: usize = name.strip_prefix("vnic")?.parse().ok()?;
        self.vnics.get(n).filter(|e| live(e) && e.name.is_none()).map(|_| n)
    }

    /// Makes the VNICs of checked `specs` (reusing the slots of revoked
    /// grants): their numbers.
    fn make(&mut self, specs: Vec<VnicSpec>) -> Vec<u32> {
        let mut made = Vec::with_capacity(specs.len());
        for spec in specs {
            // The switch exists: grant_specs checked it.
            let switch = self.switch_index(&spec.switch).unwrap_or(0);
            let entry = Entry { name: None, spec, switch, attached: None };
            match self.vnics.iter().position(|e| e.spec.client == NO_CLIENT) {
                Some(i) => {
                    self.vnics[i] = entry;
                    made.push(i as u32);
                }
                None => {
                    self.vnics.push(entry);
                    made.push((self.vnics.len() - 1) as u32);
                }
            }
        }
        made
    }

    /// The requests that follow come from the client whose endpoint
    /// capability carries `badge` (set by [`libipc::Dispatch::dispatch_from`]).
    pub fn set_caller(&mut self, badge: u64) {
        self.caller = badge;
    }

    /// The platform (tests look at what it was asked to do).
    pub fn platform(&mut self) -> &mut P {
        &mut self.platform
    }

    /// VNICs attached now.
    pub fn attached(&self) -> usize {
        self.vnics.iter().filter(|e| e.attached.is_some()).count()
    }

    /// Moves what every attached guest sent (the process calls this on its
    /// timer: a throttled VNIC goes on when its bucket allows). Returns
    /// when to poll again, if a VNIC waits for its bucket.
    ///
    /// It is also what a VMM's ring of netd's doorbell runs, which does
    /// not say who rang: each switch gets as many rounds as a kick, and a
    /// VMM whose frames were taken is told only if its ring was full (it
    /// may hold frames that found no room); telling every sender would
    /// wake its VMM for each frame it sent.
    pub fn poll(&mut self) -> Option<u64> {
        let t0 = self.platform.ticks();
        let now = self.platform.now_ns();
        let mut wake: Option<u64> = None;
        let mut frames = 0;
        for s in 0..self.switches.len() {
            let delivered = self.switches[s].1.delivered();
            let fabric = &self.switches[s].1;
            let before: Vec<(VnicId, u64)> = self
                .vnics
                .iter()
                .filter(|e| e.switch == s)
                .filter_map(|e| e.attached.as_ref().map(|a| (a.id, fabric.taken(a.id).unwrap_or(0))))
                .collect();
            let mut work = self.poll_rounds(s, now);
            let fabric = &self.switches[s].1;
            work.room.retain(|id| {
                let taken = fabric.taken(*id).unwrap_or(0);
                let was = before.iter().find(|(v, _)| v == id).map_or(0, |&(_, t)| t);
                fabric.slots(*id).is_some_and(|n| taken.saturating_sub(was) >= u64::from(n))
            });
            if let Some(w) = work.wake_at_ns {
                wake = Some(wake.map_or(w, |x| x.min(w)));
            }
            self.finish(s, work, None);
            frames += self.switches[s].1.delivered().wrapping_sub(delivered);
        }
        if frames > 0 {
            let ticks = self.platform.ticks().wrapping_sub(t0);
            let p = &mut self.kick_path;
            p.kicks += 1;
            p.frames += frames;
            p.ticks = p.ticks.wrapping_add(ticks);
            if frames == 1 {
                p.one_frame_min = Some(p.one_frame_min.map_or(ticks, |m| m.min(ticks)));
            }
        }
        // Every switch was polled: this is the whole picture.
        self.throttle_wake = wake;
        wake
    }

    /// When a VNIC that its `maxbw` bucket holds back may go on (the
    /// process's timer then runs [`VnicServer::poll`]), as the last poll
    /// or `kick` found it: a kick that throttled its sender sets it, so
    /// the held frames do not wait for the next kick.
    pub fn throttle_wake(&self) -> Option<u64> {
        self.throttle_wake
    }

    /// A frame from the machine's NIC of nic_tag `switch`: whether a
    /// switch took it (frames for no nic_tag are dropped here; runts,
    /// oversized frames and bad tags are dropped and counted on the
    /// switch's uplink port).
    pub fn from_uplink(&mut self, switch: &str, frame: &[u8]) -> bool {
        let now = self.platform.now_ns();
        let Some(s) = self.switches.iter().position(|(n, f)| n == switch && f.switch().config().uplink) else {
            return false;
        };
        let work = self.switches[s].1.from_uplink(frame, now);
        self.finish(s, work, None);
        true
    }

    /// Detaches every VNIC of a client that ended; returns how many.
    pub fn client_gone(&mut self, client: u64) -> usize {
        let handles: Vec<u32> = self
            .vnics
            .iter()
            .filter(|e| e.spec.client == client)
            .filter_map(|e| e.attached.as_ref().map(|a| a.handle))
            .collect();
        for &h in &handles {
            let _ = self.detach_handle(client, h);
        }
        handles.len()
    }

    /// What an operator reads: each switch with its attached VNICs
    /// ([`Fabric::status`]), then each VNIC not attached.
    pub fn status_text(&self) -> String {
        use core::fmt::Write;
        let mut out = self.platform.nic_status();
        if self.stale_handles > 0 {
            let _ = writeln!(out, "{} kicks or detaches named a handle of an earlier netd (its VMMs attach again)", self.stale_handles);
        }
        for (name, fabric) in self.switches.iter().filter(|(n, _)| !n.is_empty()) {
            out.push_str(&fabric.status(name));
        }
        if self.kick_path.kicks > 0 {
            let _ = writeln!(out, "{} (TSC ticks)", self.kick_path);
        }
        for (i, e) in self.vnics.iter().enumerate() {
            if e.attached.is_none() && e.spec.client != NO_CLIENT {
                let _ = writeln!(
                    out,
                    "vnic {i} mac {} vlan {} on {}: not attached (client {})",
                    e.spec.config.mac, e.spec.config.vlan_id, e.spec.switch, e.spec.client
                );
            }
        }
        out
    }

    /// Nanoseconds on the platform's clock.
    pub(crate) fn now_ns(&self) -> u64 {
        self.platform.now_ns()
    }

    /// Attaches the host stack's VNIC (`spec`) to its switch, over a
    /// region of netd's own: the switch and the VNIC's id.
    pub(crate) fn attach_host(&mut self, spec: &HostSpec) -> Result<(usize, VnicId), String> {
        let s = self
            .switches
            .iter()
            .position(|(n, _)| *n == spec.switch)
            .ok_or_else(|| alloc::format!("host: no switch {:?}", spec.switch))?;
        self.host_switch = Some(s);
        let geometry = self.switches[s].1.geometry();
        // The capability is not handed to anyone: the region stays netd's.
        let (region, _slot) = self.platform.create(geometry.region_pages())?;
        let mut config = VnicConfig::new(spec.mac);
        if let AddressConfig::Static { ip, .. } = spec.addr {
            config.protection.ip = Some(IpAddr::V4(ip));
        }
        let now = self.platform.now_ns();
        match self.switches[s].1.attach_with(config, region, geometry, now) {
            Ok(id) => Ok((s, id)),
            Err((e, region)) => {
                self.platform.destroy(region);
                Err(alloc::format!("host: {e}"))
            }
        }
    }

    /// The host VNIC's region.
    pub(crate) fn host_region(&mut self, switch: usize, id: VnicId) -> Option<&mut P::Region> {
        self.switches.get_mut(switch)?.1.region_mut(id)
    }

    /// Rounds of switch `switch` until no ring has more than a budget
    /// waiting (each round fair between the VNICs), so frames past one
    /// budget do not wait for the next kick or doorbell; the signals of all
    /// rounds go out once.
    fn poll_rounds(&mut self, switch: usize, now: u64) -> Work {
        let mut work = self.switches[switch].1.poll(now);
        for _ in 1..KICK_ROUNDS {
            if !work.more {
                break;
            }
            let next = self.switches[switch].1.poll(now);
            for id in next.signal {
                if !work.signal.contains(&id) {
                    work.signal.push(id);
                }
            }
            for id in next.room {
                if !work.room.contains(&id) {
                    work.room.push(id);
                }
            }
            work.uplink.extend(next.uplink);
            work.wake_at_ns = match (work.wake_at_ns, next.wake_at_ns) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            work.more = next.more;
        }
        work
    }

    /// Runs switch `switch` once (frames the host or guests queued):
    /// whether VNIC `host` got frames, and when to run again if a VNIC
    /// waits for its bucket.
    pub(crate) fn poll_switch(&mut self, switch: usize, host: VnicId) -> (bool, Option<u64>) {
        let now = self.platform.now_ns();
        let work = self.switches[switch].1.poll(now);
        let got = work.signal.contains(&host);
        let wake = work.wake_at_ns;
        self.finish(switch, work, None);
        (got, wake)
    }

    /// The caller's VNIC `vnic`.
    fn own_vnic(&self, vnic: u32) -> Result<usize, VnicError> {
        let i = vnic as usize;
        match self.vnics.get(i) {
            Some(e) if e.spec.client == self.caller && e.spec.client != NO_CLIENT => Ok(i),
            _ => Err(VnicError::NoSuchVnic { vnic }),
        }
    }

    /// The caller's attachment `handle`: its VNIC's index.
    fn own_handle(&self, client: u64, handle: u32) -> Result<usize, VnicError> {
        self.vnics
            .iter()
            .position(|e| e.spec.client == client && e.attached.as_ref().is_some_and(|a| a.handle == handle))
            .ok_or(VnicError::NoSuchHandle { handle })
    }

    fn detach_handle(&mut self, client: u64, handle: u32) -> Result<(), VnicError> {
        let own = self.own_handle(client, handle);
        self.note_stale(&own, handle);
        let i = own?;
        let e = &mut self.vnics[i];
        let Some(a) = e.attached.take() else { return Err(VnicError::NoSuchHandle { handle }) };
        let fabric = &mut self.switches[e.switch].1;
        let taken = fabric.taken(a.id).unwrap_or(0);
        match fabric.detach(a.id) {
            Ok(region) => self.platform.destroy(region),
            Err(e) => log::warn!("netd: vnic {i}: detach: {e}"),
        }
        self.platform.detached(client, i as u32);
        log::info!("netd: vnic {i} detached (handle {handle}, {taken} frames taken)");
        Ok(())
    }

    /// Signals the clients of the VNICs in `work` (each once: frames
    /// arrived, or room freed in its ring; not `kicker`, whose `kick`
    /// reply says what was taken) and sends its uplink frames.
    fn finish(&mut self, switch: usize, work: Work, kicker: Option<VnicId>) {
        let room = work.room.iter().filter(|id| Some(**id) != kicker && !work.signal.contains(id));
        for &id in work.signal.iter().chain(room) {
            if let Some((i, e)) = self
                .vnics
                .iter()
                .enumerate()
                .find(|(_, e)| e.switch == switch && e.attached.as_ref().is_some_and(|a| a.id == id))
            {
                self.platform.signal(e.spec.client, i as u32);
            }
        }
        let name = &self.switches[switch].0;
        for frame in &work.uplink {
            self.platform.uplink(name, frame);
        }
    }
}

impl<P: VnicPlatform> status::Server for VnicServer<P> {
    fn status(&mut self) -> ServerStatus {
        self.service.status()
    }

    fn echo(&mut self, value: u64) -> u64 {
        self.service.echo(value)
    }
}

impl<P: VnicPlatform> vnic::Server for VnicServer<P> {
    fn vnics(&mut self) -> Vec<VnicInfo> {
        self.service.requests += 1;
        let caller = self.caller;
        self.vnics
            .iter()
            .enumerate()
            .filter(|(_, e)| e.spec.client == caller)
            .map(|(i, e)| e.info(i))
            .collect()
    }

    fn attach(&mut self, vnic: u32, slots: u32) -> Result<AttachedVnic, VnicError> {
        self.service.requests += 1;
        let i = self.own_vnic(vnic)?;
        if slots > MAX_SLOTS {
            return Err(VnicError::TooLarge { slots, max: MAX_SLOTS });
        }
        // The client's new attach replaces its earlier one (a VMM that was
        // restarted, or rebooted its guest without detaching): the old
        // handle is stale from here on.
        if let Some(old) = self.vnics[i].attached.as_ref().map(|a| a.handle) {
            log::info!("netd: vnic {vnic}: attached again by its client; handle {old} dropped");
            self.detach_handle(self.caller, old)?;
        }
        let geometry = Geometry::new(if slots == 0 { SLOTS } else { slots })
            .map_err(|e| VnicError::Setup { why: e.to_string() })?;
        let (region, slot) = self.platform.create(geometry.region_pages()).map_err(|why| {
            log::warn!("netd: vnic {vnic}: no ring: {why}");
            VnicError::Setup { why }
        })?;
        let now = self.platform.now_ns();
        let e = &mut self.vnics[i];
        let fabric = &mut self.switches[e.switch].1;
        let id = match fabric.attach_with(e.spec.config.clone(), region, geometry, now) {
            Ok(id) => id,
            Err((err, region)) => {
                self.platform.destroy(region);
                let why = match err {
                    AttachError::Switch(s) => s.to_string(),
                    AttachError::Ring(r) => r.to_string(),
                };
                return Err(VnicError::Setup { why });
            }
        };
        // The ring, then netd's doorbell (if the platform has one).
        let bell = self.platform.netd_doorbell();
        let attached = reply_caps::attach(Cap::<Frame>::from_slot(slot))
            .and_then(|()| bell.map_or(Ok(()), |b| reply_caps::attach(Cap::<libipc::cap::Notification>::from_slot(b))));
        if let Err(err) = attached {
            let fabric = &mut self.switches[self.vnics[i].switch].1;
            if let Ok(region) = fabric.detach(id) {
                self.platform.destroy(region);
            }
            return Err(VnicError::Setup { why: err.to_string() });
        }
        let handle = self.next_handle;
        self.next_handle = self.next_handle.wrapping_add(1).max(1);
        let mtu = fabric.switch().config().mtu.min(usize::from(u16::MAX)) as u16;
        e.attached = Some(Attachment { handle, id });
        self.platform.doorbell(self.caller, vnic);
        log::info!("netd: vnic {vnic} ({}) attached on {} as handle {handle}", e.spec.config.mac, e.spec.switch);
        Ok(AttachedVnic { handle, mac: e.spec.config.mac.0, mtu, ring_pages: geometry.region_pages() as u32 })
    }

    fn kick(&mut self, handle: u32) -> Result<u32, VnicError> {
        self.service.requests += 1;
        let own = self.own_handle(self.caller, handle);
        self.note_stale(&own, handle);
        let i = own?;
        let (switch, id) = match &self.vnics[i].attached {
            Some(a) => (self.vnics[i].switch, a.id),
            None => return Err(VnicError::NoSuchHandle { handle }),
        };
        let t0 = self.platform.ticks();
        let delivered = self.switches[switch].1.delivered();
        let before = self.switches[switch].1.taken(id).unwrap_or(0);
        let now = self.platform.now_ns();
        let work = self.poll_rounds(switch, now);
        if let Some(w) = work.wake_at_ns {
            self.throttle_wake = Some(self.throttle_wake.map_or(w, |x| x.min(w)));
        }
        let after = self.switches[switch].1.taken(id).unwrap_or(0);
        let frames = self.switches[switch].1.delivered().wrapping_sub(delivered);
        // The kicker learns what was taken from the reply; but a kick that
        // emptied a full ring is signalled too: its VMM may hold frames
        // that found no room, and its next look may be a timer away.
        let full = self.switches[switch].1.slots(id).is_some_and(|n| after.saturating_sub(before) >= u64::from(n));
        self.finish(switch, work, (!full).then_some(id));
        let ticks = self.platform.ticks().wrapping_sub(t0);
        let p = &mut self.kick_path;
        p.kicks += 1;
        p.frames += frames;
        p.ticks = p.ticks.wrapping_add(ticks);
        if frames == 1 {
            p.one_frame_min = Some(p.one_frame_min.map_or(ticks, |m| m.min(ticks)));
        }
        Ok(after.saturating_sub(before).min(u64::from(u32::MAX)) as u32)
    }

    fn detach(&mut self, handle: u32) -> Result<(), VnicError> {
        self.service.requests += 1;
        self.detach_handle(self.caller, handle)
    }

    fn grant(&mut self, lines: Vec<String>) -> Result<libipc::interfaces::VnicGranted, VnicError> {
        self.service.requests += 1;
        if !self.is_admin() {
            log::warn!("netd: vnic.grant from badge {:#x} refused: not an admin", self.caller);
            return Err(VnicError::NotPermitted);
        }
        // A badge an earlier netd gave and `regrant` brought back is not
        // given again.
        while self.grants.iter().any(|g| g.badge == self.next_grant) {
            self.next_grant += 1;
        }
        let badge = self.next_grant;
        let specs = self.grant_specs(&lines, badge)?;
        let free = self.vnics.iter().filter(|e| e.spec.client == NO_CLIENT).count();
        if self.vnics.len() - free + specs.len() > MAX_VNICS {
            return Err(VnicError::Invalid { why: alloc::format!("netd holds {MAX_VNICS} VNICs at most") });
        }
        let slot = self.platform.mint(badge).map_err(|why| VnicError::Setup { why })?;
        if let Err(e) = reply_caps::attach(Cap::<libipc::cap::Endpoint>::from_slot(slot)) {
            self.platform.unmint(slot);
            return Err(VnicError::Setup { why: e.to_string() });
        }
        self.next_grant += 1;
        let made = self.make(specs);
        log::info!("netd: grant {badge:#x}: VNICs {made:?} ({} grants live)", self.grants.len() + 1);
        self.grants.push(Grant { badge, slot: Some(slot) });
        Ok(libipc::interfaces::VnicGranted { badge, vnics: made })
    }

    fn switches(&mut self) -> Result<Vec<libipc::interfaces::SwitchInfo>, VnicError> {
        self.service.requests += 1;
        if !self.is_admin() {
            return Err(VnicError::NotPermitted);
        }
        Ok(self
            .switches
            .iter()
            .filter(|(name, _)| !name.is_empty())
            .take(libipc::interfaces::VNIC_SHOW_MAX)
            .map(|(name, fabric)| {
                let c = fabric.switch().config();
                libipc::interfaces::SwitchInfo {
                    name: name.clone(),
                    etherstub: !c.uplink,
                    mtu: u32::try_from(c.mtu).unwrap_or(u32::MAX),
                    uplink: self.uplinks.iter().find(|(t, _)| t == name).map(|(_, l)| l.clone()),
                }
            })
            .collect())
    }

    fn regrant(&mut self, badge: u64, lines: Vec<String>) -> Result<libipc::interfaces::VnicGranted, VnicError> {
        self.service.requests += 1;
        if !self.is_admin() {
            log::warn!("netd: vnic.regrant from badge {:#x} refused: not an admin", self.caller);
            return Err(VnicError::NotPermitted);
        }
        if badge < GRANT_BADGE_BASE {
            return Err(VnicError::Invalid { why: alloc::format!("{badge:#x} is no grant's badge (a client's of init)") });
        }
        if self.grants.iter().any(|g| g.badge == badge) {
            return Err(VnicError::GrantLive { badge });
        }
        if self.granted_here(badge) || self.retired.contains(&badge) {
            // Revoked in this life: what it had is not made again.
            return Err(VnicError::Invalid { why: alloc::format!("grant {badge:#x} was revoked by this netd") });
        }
        let specs = self.grant_specs(&lines, badge)?;
        let free = self.vnics.iter().filter(|e| e.spec.client == NO_CLIENT).count();
        if self.vnics.len() - free + specs.len() > MAX_VNICS {
            return Err(VnicError::Invalid { why: alloc::format!("netd holds {MAX_VNICS} VNICs at most") });
        }
        let made = self.make(specs);
        log::info!("netd: grant {badge:#x} of an earlier netd made again: VNICs {made:?} ({} grants live)", self.grants.len() + 1);
        self.grants.push(Grant { badge, slot: None });
        Ok(libipc::interfaces::VnicGranted { badge, vnics: made })
    }

    fn show(&mut self, from: u32) -> Result<Vec<VnicInfo>, VnicError> {
        self.service.requests += 1;
        if !self.is_admin() {
            return Err(VnicError::NotPermitted);
        }
        Ok(self
            .vnics
            .iter()
            .enumerate()
            .skip(from as usize)
            .filter(|(_, e)| e.spec.client != NO_CLIENT)
            .take(libipc::interfaces::VNIC_SHOW_MAX)
            .map(|(i, e)| e.info(i))
            .collect())
    }

    fn revoke(&mut self, badge: u64) -> Result<u32, VnicError> {
        self.service.requests += 1;
        if !self.is_admin() {
            log::warn!("netd: vnic.revoke from badge {:#x} refused: not an admin", self.caller);
            return Err(VnicError::NotPermitted);
        }
        let i = self
            .grants
            .iter()
            .position(|g| g.badge == badge)
            .ok_or_else(|| VnicError::Invalid { why: alloc::format!("no grant {badge:#x}") })?;
        let grant = self.grants.swap_remove(i);
        match grant.slot {
            Some(slot) => self.platform.unmint(slot),
            None => self.retired.push(badge),
        }
        self.client_gone(badge);
        let mut gone = 0;
        for e in self.vnics.iter_mut().filter(|e| e.spec.client == badge) {
            e.spec.client = NO_CLIENT;
            gone += 1;
        }
        log::info!("netd: grant {badge:#x} revoked: {gone} VNIC(s) deleted ({} grants live)", self.grants.len());
        Ok(gone)
    }

    fn create_etherstub(&mut self, name: String) -> Result<(), VnicError> {
        self.service.requests += 1;
        if !self.is_admin() {
            log::warn!("netd: vnic.create_etherstub from badge {:#x} refused: not an admin", self.caller);
            return Err(VnicError::NotPermitted);
        }
        self.name_taken(&name)?;
        let limit = libipc::interfaces::ETHERSTUBS_MAX;
        if self.made_etherstubs.len() >= limit as usize {
            return Err(VnicError::TooMany { what: "etherstubs made at run time".into(), limit });
        }
        let free = self.switches.iter().position(|(n, _)| n.is_empty());
        if free.is_none() && self.switches.len() >= MAX_SWITCHES {
            return Err(VnicError::TooMany { what: "switches".into(), limit: MAX_SWITCHES as u32 });
        }
        let sc = SwitchConfig { uplink: false, ..SwitchConfig::default() };
        let fabric = Fabric::new(sc, SLOTS).map_err(|e| VnicError::Setup { why: e.to_string() })?;
        match free {
            Some(i) => self.switches[i] = (name.clone(), fabric),
            None => self.switches.push((name.clone(), fabric)),
        }
        self.made_etherstubs.push(name.clone());
        log::info!("netd: etherstub {name} created");
        Ok(())
    }

    fn delete_etherstub(&mut self, name: String) -> Result<(), VnicError> {
        self.service.requests += 1;
        if !self.is_admin() {
            log::warn!("netd: vnic.delete_etherstub from badge {:#x} refused: not an admin", self.caller);
            return Err(VnicError::NotPermitted);
        }
        let i = self
            .switch_index(&name)
            .filter(|&i| !self.switches[i].1.switch().config().uplink)
            .ok_or_else(|| VnicError::NotFound { name: name.clone() })?;
        let on = self.vnics.iter().filter(|e| e.spec.client != NO_CLIENT && e.switch == i).count();
        if on > 0 || self.host_switch == Some(i) {
            let why = if on > 0 { alloc::format!("{on} VNIC(s) on it") } else { String::from("netd's host address is on it") };
            return Err(VnicError::Busy { name, why });
        }
        // The slot stays (VNICs name switches by position); a later
        // etherstub takes it.
        self.switches[i].0 = String::new();
        self.switches[i].1 = Fabric::new(SwitchConfig { uplink: false, ..SwitchConfig::default() }, SLOTS).map_err(|e| VnicError::Setup { why: e.to_string() })?;
        self.made_etherstubs.retain(|n| *n != name);
        log::info!("netd: etherstub {name} deleted");
        Ok(())
    }

    fn create_vnic(&mut self, name: String, line: String) -> Result<u32, VnicError> {
        self.service.requests += 1;
        if !self.is_admin() {
            log::warn!("netd: vnic.create_vnic from badge {:#x} refused: not an admin", self.caller);
            return Err(VnicError::NotPermitted);
        }
        self.name_taken(&name)?;
        let limit = libipc::interfaces::OPERATOR_VNICS_MAX;
        if self.vnics.iter().filter(|e| e.spec.client == OPERATOR).count() >= limit as usize {
            return Err(VnicError::TooMany { what: "VNICs made with create_vnic".into(), limit });
        }
        let spec = self.grant_specs(&[line], OPERATOR)?;
        let free = self.vnics.iter().filter(|e| e.spec.client == NO_CLIENT).count();
        if self.vnics.len() - free + 1 > MAX_VNICS {
            return Err(VnicError::TooMany { what: "VNICs".into(), limit: MAX_VNICS as u32 });
        }
        let n = self.make(spec)[0];
        self.vnics[n as usize].name = Some(name.clone());
        log::info!("netd: VNIC {name} created (number {n})");
        Ok(n)
    }

    fn delete_vnic(&mut self, name: String) -> Result<(), VnicError> {
        self.service.requests += 1;
        if !self.is_admin() {
            log::warn!("netd: vnic.delete_vnic from badge {:#x} refused: not an admin", self.caller);
            return Err(VnicError::NotPermitted);
        }
        let i = self.vnic_named(&name).ok_or_else(|| VnicError::NotFound { name: name.clone() })?;
        let e = &mut self.vnics[i];
        if e.spec.client != OPERATOR {
            let why = if e.attached.is_some() { "a VM's VNIC, attached" } else { "a VM's VNIC (vmadm deletes it with the VM)" };
            return Err(VnicError::Busy { name, why: why.into() });
        }
        e.spec.client = NO_CLIENT;
        e.name = None;
        log::info!("netd: VNIC {name} deleted");
        Ok(())
    }

    fn vnic_names(&mut self, from: u32) -> Result<Vec<(u32, String)>, VnicError> {
        self.service.requests += 1;
        if !self.is_admin() {
            return Err(VnicError::NotPermitted);
        }
        Ok(self
            .vnics
            .iter()
            .enumerate()
            .skip(from as usize)
            .filter(|(_, e)| e.spec.client != NO_CLIENT)
            .filter_map(|(i, e)| e.name.clone().map(|n| (i as u32, n)))
            .take(libipc::interfaces::VNIC_SHOW_MAX)
            .collect())
    }

    fn stats(&mut self, from: u32) -> Result<Vec<libipc::interfaces::VnicStats>, VnicError> {
        self.service.requests += 1;
        if !self.is_admin() {
            return Err(VnicError::NotPermitted);
        }
        let reasons = |d: &netd_switch::Drops| d.nonzero().map(|(r, n)| (String::from(r.name()), n)).collect::<Vec<_>>();
        Ok(self
            .vnics
            .iter()
            .enumerate()
            .skip(from as usize)
            .filter(|(_, e)| e.spec.client != NO_CLIENT)
            .take(libipc::interfaces::VNIC_STATS_MAX)
            .map(|(i, e)| {
                let mut st = libipc::interfaces::VnicStats { vnic: i as u32, ..Default::default() };
                let fabric = &self.switches[e.switch].1;
                if let Some((a, port)) = e.attached.as_ref().and_then(|a| fabric.stats(a.id).map(|p| (a, p))) {
                    st.attached = true;
                    st.received_frames = port.out_frames;
                    st.received_bytes = port.out_bytes;
                    st.sent_frames = port.in_frames;
                    st.sent_bytes = port.in_bytes;
                    st.received_drops = reasons(&port.out_drops);
                    st.sent_drops = reasons(&port.in_drops);
                    st.throttled = port.throttled;
                    if let Some((full, _)) = fabric.ring_state(a.id).filter(|(n, _)| *n > 0) {
                        st.received_drops.push((String::from("ring_full"), full));
                    }
                }
                st
            })
            .collect())
    }
}

impl<P: VnicPlatform> libipc::Dispatch for VnicServer<P> {
    fn dispatch(&mut self, interface: u32, request: &[u8]) -> Result<Vec<u8>, RemoteError> {
        self.dispatch_from(0, interface, request)
    }

    fn dispatch_from(&mut self, badge: u64, interface: u32, request: &[u8]) -> Result<Vec<u8>, RemoteError> {
        self.set_caller(badge);
        match interface {
            status::ID => status::dispatch(self, interface, request),
            vnic::ID => vnic::dispatch(self, interface, request),
            _ => Err(RemoteError::WrongInterface),
        }
    }
}
