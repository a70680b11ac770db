//! Link protection: what a VNIC's guest may send, after illumos's
//! `protection` link property that SmartOS's `allow_*` NIC properties map
//! to (dladm(8): `mac-nospoof`, `ip-nospoof`, `dhcp-nospoof`,
//! `restricted`). Every check is on frames *from* the guest; frames to it
//! are not filtered. SmartOS's default for each `allow_*` is false, so a
//! VNIC is fully protected unless its description says otherwise.
//!
//! * `allow_mac_spoofing` false: the source MAC, and an ARP packet's sender
//!   hardware address, must be the VNIC's MAC.
//! * `allow_ip_spoofing` false: an IPv4 source, and an ARP sender protocol
//!   address, must be `ip` or inside one of `allowed_ips`; 0.0.0.0 is
//!   allowed for ARP probes (RFC 5227) and DHCP clients (UDP to port 67).
//!   An IPv6 source must be in `ip`/`allowed_ips`, the link-local address
//!   formed from the VNIC's MAC, or :: (duplicate address detection).
//! * `allow_dhcp_spoofing` false: no DHCP or DHCPv6 server messages (UDP
//!   from port 67 or 547); a DHCP client's `chaddr` must be the VNIC's MAC
//!   and its client identifier (option 61), if any, `01` + that MAC or one
//!   of `allowed_dhcp_cids`.
//! * `allow_restricted_traffic` false: only IPv4, IPv6 and ARP.
//!
//! Packets the checks must look into but cannot parse are dropped as
//! malformed (only when a check needs them: without protection the switch
//! carries any Ethernet payload).

use alloc::vec::Vec;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::frame::{ETHERTYPE_ARP, ETHERTYPE_IPV4, ETHERTYPE_IPV6, Ethernet, MacAddr};
use crate::DropReason;

/// An address or a CIDR prefix (`allowed_ips` takes both).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpNet {
    /// The address.
    pub addr: IpAddr,
    /// Prefix length (32 or 128 for one address).
    pub prefix: u8,
}

impl IpNet {
    /// One address.
    pub const fn host(addr: IpAddr) -> Self {
        Self { addr, prefix: if addr.is_ipv4() { 32 } else { 128 } }
    }

    /// Whether `ip` lies inside.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let p = u32::from(self.prefix.min(32));
                let mask = if p == 0 { 0 } else { u32::MAX << (32 - p) };
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let p = u32::from(self.prefix.min(128));
                let mask = if p == 0 { 0 } else { u128::MAX << (128 - p) };
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

impl core::str::FromStr for IpNet {
    type Err = ();
    /// `10.0.0.5`, `10.0.0.0/24`, `fd00::1`, `fd00::/64`.
    fn from_str(s: &str) -> Result<Self, ()> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a.parse().map_err(|_| ())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            Some(p) => p.parse::<u8>().map_err(|_| ())?,
            None => max,
        };
        if prefix > max {
            return Err(());
        }
        Ok(Self { addr, prefix })
    }
}

/// One VNIC's protection settings (SmartOS names; all false by default).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Protection {
    /// `allow_mac_spoofing`.
    pub allow_mac_spoofing: bool,
    /// `allow_ip_spoofing`.
    pub allow_ip_spoofing: bool,
    /// `allow_dhcp_spoofing`.
    pub allow_dhcp_spoofing: bool,
    /// `allow_restricted_traffic`.
    pub allow_restricted_traffic: bool,
    /// `ip` (None for `dhcp` or none).
    pub ip: Option<IpAddr>,
    /// `allowed_ips`.
    pub allowed_ips: Vec<IpNet>,
    /// `allowed_dhcp_cids`: client identifiers (option 61's value) a DHCP
    /// client may use besides `01` + the VNIC's MAC.
    pub allowed_dhcp_cids: Vec<Vec<u8>>,
}

const UDP: u8 = 17;
const DHCP_SERVER: u16 = 67;
const DHCP6_CLIENT: u16 = 546;
const DHCP6_SERVER: u16 = 547;

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// A UDP header's ports and payload, checked against the bytes there.
fn udp(b: &[u8]) -> Option<(u16, u16, &[u8])> {
    let len = usize::from(be16(b, 4)?);
    if len < 8 || len > b.len() {
        return None;
    }
    Some((be16(b, 0)?, be16(b, 2)?, &b[8..len]))
}

impl Protection {
    /// Whether the guest behind `mac` may send `eth`; `Err` names why not.
    pub fn check(&self, mac: MacAddr, eth: &Ethernet<'_>) -> Result<(), DropReason> {
        if !self.allow_mac_spoofing && eth.src != mac {
            return Err(DropReason::MacSpoof);
        }
        match eth.ethertype {
            ETHERTYPE_ARP => self.check_arp(mac, eth.payload),
            ETHERTYPE_IPV4 => self.check_ipv4(mac, eth.payload),
            ETHERTYPE_IPV6 => self.check_ipv6(mac, eth.payload),
            _ if self.allow_restricted_traffic => Ok(()),
            _ => Err(DropReason::Restricted),
        }
    }

    fn ip_allowed(&self, mac: MacAddr, ip: IpAddr) -> bool {
        if self.ip == Some(ip) || self.allowed_ips.iter().any(|n| n.contains(ip)) {
            return true;
        }
        matches!(ip, IpAddr::V6(a) if a == mac.ipv6_link_local())
    }

    /// RFC 826: hardware type 1, protocol IPv4, 6- and 4-byte addresses.
    fn check_arp(&self, mac: MacAddr, p: &[u8]) -> Result<(), DropReason> {
        if self.allow_mac_spoofing && self.allow_ip_spoofing {
            return Ok(());
        }
        if p.len() < 28 || be16(p, 0) != Some(1) || be16(p, 2) != Some(ETHERTYPE_IPV4) || p[4] != 6 || p[5] != 4 {
            return Err(DropReason::Malformed);
        }
        let mut sha = [0u8; 6];
        sha.copy_from_slice(&p[8..14]);
        if !self.allow_mac_spoofing && MacAddr(sha) != mac {
            return Err(DropReason::MacSpoof);
        }
        let spa = Ipv4Addr::new(p[14], p[15], p[16], p[17]);
        if !self.allow_ip_spoofing && !spa.is_unspecified() && !self.ip_allowed(mac, IpAddr::V4(spa)) {
            return Err(DropReason::IpSpoof);
        }
        Ok(())
    }

    fn check_ipv4(&self, mac: MacAddr, p: &[u8]) -> Result<(), DropReason> {
        if self.allow_ip_spoofing && self.allow_dhcp_spoofing {
            return Ok(());
        }
        // RFC 791: version 4, header of at least 5 words, inside the frame.
        let ihl = usize::from(p.first().map_or(0, |b| b & 0x0f)) * 4;
        if p.len() < 20 || p[0] >> 4 != 4 || ihl < 20 {
            return Err(DropReason::Malformed);
        }
        let total = usize::from(be16(p, 2).unwrap_or(0));
        if total < ihl || total > p.len() {
            return Err(DropReason::Malformed);
        }
        let src = Ipv4Addr::new(p[12], p[13], p[14], p[15]);
        let first_fragment = be16(p, 6).unwrap_or(0) & 0x1fff == 0;
        let l4 = if p[9] == UDP && first_fragment { Some(udp(&p[ihl..total]).ok_or(DropReason::Malformed)?) } else { None };
        if !self.allow_ip_spoofing && !self.ip_allowed(mac, IpAddr::V4(src)) {
            let dhcp_client = src.is_unspecified() && matches!(l4, Some((_, DHCP_SERVER, _)));
            if !dhcp_client {
                return Err(DropReason::IpSpoof);
            }
        }
        if !self.allow_dhcp_spoofing {
            match l4 {
                Some((DHCP_SERVER, _, _)) => return Err(DropReason::DhcpSpoof),
                Some((_, DHCP_SERVER, msg)) => self.check_dhcp_client(mac, msg)?,
                _ => {}
            }
        }
        Ok(())
    }

    /// A DHCP client message (RFC 2131 §2): `chaddr` and option 61.
    fn check_dhcp_client(&self, mac: MacAddr, msg: &[u8]) -> Result<(), DropReason> {
        // op, htype, hlen … chaddr at 28, the magic cookie at 236.
        if msg.len() < 240 {
            return Err(DropReason::Malformed);
        }
        // Ethernet's hardware type and length, and this VNIC's address.
        if msg[1] != 1 || msg[2] != 6 || msg[28..34] != mac.0 {
            return Err(DropReason::DhcpSpoof);
        }
        if msg[236..240] != [99, 130, 83, 99] {
            return Ok(());
        }
        let mut opts = &msg[240..];
        while let Some((&code, rest)) = opts.split_first() {
            match code {
                0 => opts = rest,
                255 => break,
                _ => {
                    let len = usize::from(*rest.first().ok_or(DropReason::Malformed)?);
                    let value = rest.get(1..1 + len).ok_or(DropReason::Malformed)?;
                    if code == 61 {
                        let own = value.len() == 7 && value[0] == 1 && value[1..] == mac.0;
                        if !own && !self.allowed_dhcp_cids.iter().any(|c| c.as_slice() == value) {
                            return Err(DropReason::DhcpSpoof);
                        }
                    }
                    opts = &rest[1 + len..];
                }
            }
        }
        Ok(())
    }

    fn check_ipv6(&self, mac: MacAddr, p: &[u8]) -> Result<(), DropReason> {
        if self.allow_ip_spoofing && self.allow_dhcp_spoofing {
            return Ok(());
        }
        // RFC 8200 §3: version 6, a 40-byte header, the payload inside the frame.
        if p.len() < 40 || p[0] >> 4 != 6 {
            return Err(DropReason::Malformed);
        }
        let payload_len = usize::from(be16(p, 4).unwrap_or(0));
        if 40 + payload_len > p.len() {
            return Err(DropReason::Malformed);
        }
        let mut src = [0u8; 16];
        src.copy_from_slice(&p[8..24]);
        let src = Ipv6Addr::from(src);
        if !self.allow_ip_spoofing && !src.is_unspecified() && !self.ip_allowed(mac, IpAddr::V6(src)) {
            return Err(DropReason::IpSpoof);
        }
        if self.allow_dhcp_spoofing {
            return Ok(());
        }
        // Walk the extension headers that may stand before UDP (§4):
        // hop-by-hop (0), routing (43), destination options (60), fragment (44).
        let body = &p[40..40 + payload_len];
        let (mut next, mut at) = (p[6], 0usize);
        for _ in 0..8 {
            match next {
                0 | 43 | 60 => {
                    let len = (usize::from(*body.get(at + 1).ok_or(DropReason::Malformed)?) + 1) * 8;
                    next = body[at];
                    at += len;
                }
                44 => {
                    let h = body.get(at..at + 8).ok_or(DropReason::Malformed)?;
                    if be16(h, 2).unwrap_or(0) & 0xfff8 != 0 {
                        return Ok(()); // not the first fragment: no UDP header here
                    }
                    next = h[0];
                    at += 8;
                }
                _ => break,
            }
        }
        if next == UDP {
            let (sport, dport, _) = udp(body.get(at..).ok_or(DropReason::Malformed)?).ok_or(DropReason::Malformed)?;
            if sport == DHCP6_SERVER || (sport != DHCP6_CLIENT && dport == DHCP6_CLIENT) {
                return Err(DropReason::DhcpSpoof);
            }
        } else if matches!(next, 0 | 43 | 60 | 44) {
            return Err(DropReason::Malformed); // more than eight extension headers
        }
        Ok(())
    }
}
