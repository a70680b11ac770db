//! The virtual switch of netd: one per nic_tag (with the machine's NIC as
//! its uplink) and one per etherstub (no uplink), after illumos Crossbow,
//! which SmartOS uses. Pure logic: frames in, forwarding decisions out,
//! time passed in by the caller; netd's process wires it to the frame rings
//! of the VMMs and to its NIC driver.
//!
//! What a frame meets, from a VNIC (a guest's virtio-net):
//! 1. [`frame::Ethernet::parse`]: runts (shorter than the MAC header),
//!    frames over the MTU, and any 802.1Q/802.1ad tag are dropped (a VNIC
//!    is an access port: its VLAN is the switch's business, the guest sends
//!    untagged frames).
//! 2. A group or zero source MAC is dropped; then link protection
//!    ([`protect::Protection`], SmartOS's `allow_*` properties).
//! 3. The VNIC's transmit bucket (`maxbw`): if empty, the frame is
//!    *throttled*, not dropped: the caller keeps it (leaves it in the
//!    guest's queue) and offers it again at the time returned, so a
//!    capped guest sees back-pressure, as with Firecracker's rate limiter.
//! 4. MAC learning and forwarding within the VNIC's VLAN: a known unicast
//!    destination gets the frame alone; broadcast, multicast and unknown
//!    unicast are flooded to every other port on the VLAN. The uplink
//!    carries the frame tagged with the VLAN ID (untagged for VLAN 0).
//! 5. Each receiving VNIC's receive bucket: a frame over its cap is dropped
//!    there and counted (a switch cannot hold traffic back from a sender).
//!
//! From the uplink, a frame's tag picks the VLAN (untagged or priority
//! tagged: VLAN 0), and a stacked tag, an 802.1ad S-tag or VLAN 4095 drops
//! it. Every drop is counted on the port it concerns by [`DropReason`].
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

extern crate alloc;
#[cfg(test)]
extern crate std;

pub mod bucket;
pub mod fdb;
pub mod frame;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod protect;
#[cfg(test)]
mod tests;

use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::fmt;

use bucket::TokenBucket;
use fdb::{Fdb, Learned};
use frame::{Ethernet, FrameError, MAX_VLAN_ID, MacAddr};
pub use protect::{IpNet, Protection};

/// A VNIC's number on its switch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VnicId(pub u32);

/// A port of a switch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Port {
    /// A VNIC.
    Vnic(VnicId),
    /// The machine's NIC (switches of a nic_tag only).
    Uplink,
}

/// Why a frame was dropped (counted per VNIC and direction).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DropReason {
    /// Shorter than its headers.
    Runt,
    /// Longer than the MTU allows.
    Oversized,
    /// A guest sent a VLAN tag (its VNIC's VLAN is set by the switch).
    GuestVlanTag,
    /// Stacked tags or an 802.1ad S-tag from the wire, or VLAN 4095.
    BadVlanTag,
    /// A group or all-zero source MAC.
    BadSourceMac,
    /// `allow_mac_spoofing` false and the source (or ARP sender) MAC is not the VNIC's.
    MacSpoof,
    /// `allow_ip_spoofing` false and the source (or ARP sender) IP is not allowed.
    IpSpoof,
    /// `allow_dhcp_spoofing` false and a DHCP server message, or a client
    /// message naming another client.
    DhcpSpoof,
    /// `allow_restricted_traffic` false and neither IPv4, IPv6 nor ARP.
    Restricted,
    /// A packet link protection must inspect is cut short or inconsistent.
    Malformed,
    /// Over the receiving VNIC's `maxbw`.
    RateLimited,
}

impl DropReason {
    /// Every reason, in counter order.
    pub const ALL: [DropReason; 11] = [
        DropReason::Runt,
        DropReason::Oversized,
        DropReason::GuestVlanTag,
        DropReason::BadVlanTag,
        DropReason::BadSourceMac,
        DropReason::MacSpoof,
        DropReason::IpSpoof,
        DropReason::DhcpSpoof,
        DropReason::Restricted,
        DropReason::Malformed,
        DropReason::RateLimited,
    ];

    /// The name an operator reads in netd's status.
    pub const fn name(self) -> &'static str {
        match self {
            DropReason::Runt => "runt",
            DropReason::Oversized => "oversized",
            DropReason::GuestVlanTag => "guest_vlan_tag",
            DropReason::BadVlanTag => "bad_vlan_tag",
            DropReason::BadSourceMac => "bad_source_mac",
            DropReason::MacSpoof => "mac_spoof",
            DropReason::IpSpoof => "ip_spoof",
            DropReason::DhcpSpoof => "dhcp_spoof",
            DropReason::Restricted => "restricted",
            DropReason::Malformed => "malformed",
            DropReason::RateLimited => "rate_limited",
        }
    }

    const fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Drops by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Drops([u64; DropReason::ALL.len()]);

impl Drops {
    /// Frames dropped for `reason`.
    pub const fn get(&self, reason: DropReason) -> u64 {
        self.0[reason.index()]
    }

    /// All drops.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    fn count(&mut self, reason: DropReason) {
        self.0[reason.index()] += 1;
    }

    /// `(reason, count)` for every reason with a count.
    pub fn nonzero(&self) -> impl Iterator<Item = (DropReason, u64)> + '_ {
        DropReason::ALL.iter().map(|r| (*r, self.get(*r))).filter(|(_, n)| *n > 0)
    }
}

/// Counters of one port.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortStats {
    /// Frames (and their bytes) the port sent into the switch and the switch took.
    pub in_frames: u64,
    /// Bytes of `in_frames`.
    pub in_bytes: u64,
    /// Frames the switch delivered to the port.
    pub out_frames: u64,
    /// Bytes of `out_frames`.
    pub out_bytes: u64,
    /// Frames from the port the switch dropped.
    pub in_drops: Drops,
    /// Frames for the port the switch dropped.
    pub out_drops: Drops,
    /// Times a frame from the port waited for its transmit bucket.
    pub throttled: u64,
}

/// A VNIC as the control plane describes it (SmartOS's `nics[]` names).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VnicConfig {
    /// `mac`: unicast, not zero.
    pub mac: MacAddr,
    /// `vlan_id`: 0 (untagged) to 4094.
    pub vlan_id: u16,
    /// The `allow_*` properties with `ip` and `allowed_ips`.
    pub protection: Protection,
    /// `maxbw` in Mbit/s, both directions; `None` for no cap.
    pub maxbw_mbit: Option<u32>,
}

impl VnicConfig {
    /// A VNIC with `mac`, untagged, fully protected, uncapped.
    pub fn new(mac: MacAddr) -> Self {
        Self { mac, vlan_id: 0, protection: Protection::default(), maxbw_mbit: None }
    }
}

/// How a switch is set up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SwitchConfig {
    /// Payload bytes of an untagged frame (1500: Ethernet's).
    pub mtu: usize,
    /// Most entries of the forwarding table.
    pub fdb_entries: usize,
    /// When a learned address is forgotten.
    pub ageing_ns: u64,
    /// Most VNICs.
    pub max_vnics: usize,
    /// Whether the switch has an uplink (a nic_tag) or not (an etherstub).
    pub uplink: bool,
}

impl Default for SwitchConfig {
    fn default() -> Self {
        Self { mtu: 1500, fdb_entries: 4096, ageing_ns: 300_000_000_000, max_vnics: 256, uplink: false }
    }
}

/// Why a VNIC cannot be added or found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SwitchError {
    /// `mac` is a group or zero address.
    BadMac(MacAddr),
    /// `vlan_id` above 4094.
    BadVlan(u16),
    /// `maxbw` of 0.
    BadMaxbw,
    /// Another VNIC on the VLAN has the MAC.
    DuplicateMac(MacAddr),
    /// The switch has `max_vnics` VNICs.
    Full,
    /// No such VNIC.
    NoVnic(VnicId),
}

impl fmt::Display for SwitchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SwitchError::BadMac(m) => write!(f, "property \"mac\": {m} is not a unicast station address"),
            SwitchError::BadVlan(v) => write!(f, "property \"vlan_id\": must be 0 to 4094, got {v}"),
            SwitchError::BadMaxbw => f.write_str("property \"maxbw\": must be at least 1 (Mbit/s), got 0"),
            SwitchError::DuplicateMac(m) => write!(f, "property \"mac\": {m} is already on this switch and VLAN"),
            SwitchError::Full => f.write_str("the switch has no room for another VNIC"),
            SwitchError::NoVnic(id) => write!(f, "no VNIC {} on this switch", id.0),
        }
    }
}

impl core::error::Error for SwitchError {}

struct Vnic {
    config: VnicConfig,
    tx: Option<TokenBucket>,
    rx: Option<TokenBucket>,
    stats: PortStats,
}

/// Where a frame goes: `frame` untagged, to each VNIC in `vnics`, and
/// (tagged with `vlan` when not 0) to the uplink if `uplink`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Forward {
    /// The VLAN the frame travels on.
    pub vlan: u16,
    /// The frame without a tag.
    pub frame: Vec<u8>,
    /// VNICs that receive it.
    pub vnics: Vec<VnicId>,
    /// Whether the machine's NIC sends it.
    pub uplink: bool,
}

impl Forward {
    /// The frame as the uplink sends it (tagged for a VLAN other than 0).
    pub fn wire_frame(&self) -> Vec<u8> {
        frame::tag(&self.frame, self.vlan)
    }
}

/// What became of a frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Forwarded (possibly to nobody: a unicast to the port it came from, or
    /// a VLAN with no other port).
    Forward(Forward),
    /// Dropped and counted on the port it came from.
    Dropped(DropReason),
    /// The sender's bucket is empty: offer the frame again at `retry_at_ns`.
    Throttled {
        /// When the bucket will hold the frame.
        retry_at_ns: u64,
    },
}

/// What became of a frame from a VNIC, its receivers listed apart
/// ([`Switch::route_from_vnic`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// Forwarded on `vlan` to the VNICs listed (possibly none), and to the
    /// uplink if `uplink`.
    Forward {
        /// The VLAN the frame travels on.
        vlan: u16,
        /// Whether the machine's NIC sends it (tagged for a VLAN other than 0).
        uplink: bool,
    },
    /// Dropped and counted on the port it came from.
    Dropped(DropReason),
    /// The sender's bucket is empty: offer the frame again at `retry_at_ns`.
    Throttled {
        /// When the bucket will hold the frame.
        retry_at_ns: u64,
    },
}

/// Counters of the switch itself.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SwitchStats {
    /// Addresses not learned because the table was full.
    pub fdb_full: u64,
    /// Frames whose source was another port's fixed address (not learned).
    pub fixed_moves_refused: u64,
}

/// One virtual switch.
pub struct Switch {
    config: SwitchConfig,
    vnics: BTreeMap<VnicId, Vnic>,
    next_id: u32,
    fdb: Fdb,
    uplink: PortStats,
    stats: SwitchStats,
}

impl Switch {
    /// An empty switch.
    pub fn new(config: SwitchConfig) -> Self {
        Self {
            fdb: Fdb::new(config.fdb_entries, config.ageing_ns),
            config,
            vnics: BTreeMap::new(),
            next_id: 0,
            uplink: PortStats::default(),
            stats: SwitchStats::default(),
        }
    }

    /// The switch's set-up.
    pub const fn config(&self) -> &SwitchConfig {
        &self.config
    }

    /// Largest untagged frame a port may send.
    pub const fn max_frame(&self) -> usize {
        frame::ETH_HEADER + self.config.mtu
    }

    /// Adds a VNIC; its MAC becomes a fixed entry on its VLAN.
    pub fn add_vnic(&mut self, config: VnicConfig, now_ns: u64) -> Result<VnicId, SwitchError> {
        if !config.mac.is_station() {
            return Err(SwitchError::BadMac(config.mac));
        }
        if config.vlan_id > MAX_VLAN_ID {
            return Err(SwitchError::BadVlan(config.vlan_id));
        }
        if config.maxbw_mbit == Some(0) {
            return Err(SwitchError::BadMaxbw);
        }
        if self.vnics.values().any(|v| v.config.mac == config.mac && v.config.vlan_id == config.vlan_id) {
            return Err(SwitchError::DuplicateMac(config.mac));
        }
        if self.vnics.len() >= self.config.max_vnics {
            return Err(SwitchError::Full);
        }
        let id = VnicId(self.next_id);
        self.next_id += 1;
        let bucket = |mbit| TokenBucket::for_mbit(mbit, self.max_frame(), now_ns);
        let (tx, rx) = (config.maxbw_mbit.map(bucket), config.maxbw_mbit.map(bucket));
        // A learned entry for the address (from a spoofing port) gives way.
        self.fdb.fix(config.vlan_id, config.mac, Port::Vnic(id));
        self.vnics.insert(id, Vnic { config, tx, rx, stats: PortStats::default() });
        Ok(id)
    }

    /// Removes a VNIC and everything learned on it.
    pub fn remove_vnic(&mut self, id: VnicId) -> Result<VnicConfig, SwitchError> {
        let vnic = self.vnics.remove(&id).ok_or(SwitchError::NoVnic(id))?;
        self.fdb.remove_port(Port::Vnic(id));
        Ok(vnic.config)
    }

    /// A VNIC's description.
    pub fn vnic(&self, id: VnicId) -> Option<&VnicConfig> {
        self.vnics.get(&id).map(|v| &v.config)
    }

    /// The VNICs, in order.
    pub fn vnic_ids(&self) -> impl Iterator<Item = VnicId> + '_ {
        self.vnics.keys().copied()
    }

    /// A port's counters.
    pub fn port_stats(&self, port: Port) -> Option<&PortStats> {
        match port {
            Port::Vnic(id) => self.vnics.get(&id).map(|v| &v.stats),
            Port::Uplink => self.config.uplink.then_some(&self.uplink),
        }
    }

    /// The switch's own counters.
    pub const fn stats(&self) -> &SwitchStats {
        &self.stats
    }

    /// Forgets learned addresses older than the ageing time.
    pub fn age(&mut self, now_ns: u64) {
        self.fdb.age(now_ns);
    }

    /// Entries in the forwarding table (fixed and learned).
    pub fn fdb_len(&self) -> usize {
        self.fdb.len()
    }

    /// A frame from VNIC `id`'s guest at `now_ns`.
    pub fn from_vnic(&mut self, id: VnicId, bytes: &[u8], now_ns: u64) -> Result<Outcome, SwitchError> {
        let mut vnics = Vec::new();
        Ok(match self.route_from_vnic(id, bytes, now_ns, &mut vnics)? {
            // A frame from a VNIC that got this far has no tag: it goes on
            // as it came.
            Route::Forward { vlan, uplink } => Outcome::Forward(Forward { vlan, frame: bytes.to_vec(), vnics, uplink }),
            Route::Dropped(reason) => Outcome::Dropped(reason),
            Route::Throttled { retry_at_ns } => Outcome::Throttled { retry_at_ns },
        })
    }

    /// As [`Switch::from_vnic`], the frame not copied: the VNICs that
    /// receive it (unchanged: a frame from a VNIC is untagged) go into
    /// `to`, cleared first, so a caller that moves frames in batches keeps
    /// one list for all of them. Every check and counter is
    /// [`Switch::from_vnic`]'s.
    pub fn route_from_vnic(&mut self, id: VnicId, bytes: &[u8], now_ns: u64, to: &mut Vec<VnicId>) -> Result<Route, SwitchError> {
        to.clear();
        let mtu = self.config.mtu;
        let vnic = self.vnics.get_mut(&id).ok_or(SwitchError::NoVnic(id))?;
        let checked = Ethernet::parse(bytes, mtu)
            .map_err(|e| match e {
                FrameError::Runt => DropReason::Runt,
                FrameError::Oversized => DropReason::Oversized,
                FrameError::StackedVlan | FrameError::ReservedVlan => DropReason::GuestVlanTag,
            })
            .and_then(|eth| if eth.vlan.is_some() { Err(DropReason::GuestVlanTag) } else { Ok(eth) })
            .and_then(|eth| if eth.src.is_station() { Ok(eth) } else { Err(DropReason::BadSourceMac) })
            .and_then(|eth| vnic.config.protection.check(vnic.config.mac, &eth).map(|()| eth));
        let eth = match checked {
            Ok(eth) => eth,
            Err(reason) => {
                vnic.stats.in_drops.count(reason);
                return Ok(Route::Dropped(reason));
            }
        };
        if let Some(tx) = &mut vnic.tx
            && let Err(retry_at_ns) = tx.take(bytes.len(), now_ns)
        {
            vnic.stats.throttled += 1;
            return Ok(Route::Throttled { retry_at_ns });
        }
        vnic.stats.in_frames += 1;
        vnic.stats.in_bytes += bytes.len() as u64;
        let vlan = vnic.config.vlan_id;
        let uplink = self.route(Port::Vnic(id), vlan, &eth, bytes.len(), now_ns, to);
        Ok(Route::Forward { vlan, uplink })
    }

    /// A frame from the machine's NIC at `now_ns`. A switch without an
    /// uplink drops it as if nobody listened.
    pub fn from_uplink(&mut self, bytes: &[u8], now_ns: u64) -> Outcome {
        let checked = Ethernet::parse(bytes, self.config.mtu)
            .map_err(|e| match e {
                FrameError::Runt => DropReason::Runt,
                FrameError::Oversized => DropReason::Oversized,
                FrameError::StackedVlan | FrameError::ReservedVlan => DropReason::BadVlanTag,
            })
            .and_then(|eth| if eth.src.is_station() { Ok(eth) } else { Err(DropReason::BadSourceMac) });
        let eth = match checked {
            Ok(eth) => eth,
            Err(reason) => {
                self.uplink.in_drops.count(reason);
                return Outcome::Dropped(reason);
            }
        };
        if !self.config.uplink {
            return Outcome::Forward(Forward { vlan: 0, frame: Vec::new(), vnics: Vec::new(), uplink: false });
        }
        self.uplink.in_frames += 1;
        self.uplink.in_bytes += bytes.len() as u64;
        let vlan = eth.vlan.unwrap_or(0);
        let frame = eth.untagged();
        let mut vnics = Vec::new();
        let uplink = self.route(Port::Uplink, vlan, &eth, frame.len(), now_ns, &mut vnics);
        Outcome::Forward(Forward { vlan, frame, vnics, uplink })
    }

    /// Learning and the forwarding decision for a checked frame of `len`
    /// bytes untagged: the VNICs that receive it are pushed onto `to`;
    /// returns whether the uplink sends it.
    fn route(&mut self, from: Port, vlan: u16, eth: &Ethernet<'_>, len: usize, now_ns: u64, to: &mut Vec<VnicId>) -> bool {
        match self.fdb.learn(vlan, eth.src, from, now_ns) {
            Learned::Yes => {}
            Learned::Fixed => self.stats.fixed_moves_refused += 1,
            Learned::Full => self.stats.fdb_full += 1,
        }
        let known = if eth.dst.is_multicast() { None } else { self.fdb.lookup(vlan, eth.dst, now_ns) };
        let bytes = len as u64;
        // A VNIC's receive bucket and counters, then the list.
        let mut to_vnic = |id: VnicId, v: &mut Vnic| {
            if let Some(rx) = &mut v.rx
                && rx.take(len, now_ns).is_err()
            {
                v.stats.out_drops.count(DropReason::RateLimited);
                return;
            }
            v.stats.out_frames += 1;
            v.stats.out_bytes += bytes;
            to.push(id);
        };
        let mut uplink = false;
        match known {
            Some(port) if port == from => {}
            Some(Port::Vnic(id)) => {
                if let Some(v) = self.vnics.get_mut(&id) {
                    to_vnic(id, v);
                }
            }
            Some(Port::Uplink) => uplink = true,
            None => {
                for (id, v) in self.vnics.iter_mut() {
                    if v.config.vlan_id == vlan && Port::Vnic(*id) != from {
                        to_vnic(*id, v);
                    }
                }
                uplink = self.config.uplink && from != Port::Uplink;
            }
        }
        if uplink {
            self.uplink.out_frames += 1;
            self.uplink.out_bytes += bytes + if vlan != 0 { frame::VLAN_TAG as u64 } else { 0 };
        }
        uplink
    }
}
