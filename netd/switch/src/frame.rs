//! Ethernet frames as the switch sees them: the MAC header, an optional
//! 802.1Q tag (IEEE 802.1Q-2018 §9.6), and the size rules. A frame is
//! parsed once at the port it came in on; everything after works on the
//! checked [`Ethernet`] view.

use alloc::vec::Vec;
use core::fmt;

/// Bytes of the MAC header: destination, source, EtherType.
pub const ETH_HEADER: usize = 14;
/// Bytes of one 802.1Q tag (TPID and TCI).
pub const VLAN_TAG: usize = 4;
/// The C-VLAN tag's TPID (802.1Q).
pub const TPID_8021Q: u16 = 0x8100;
/// The S-VLAN tag's TPID (802.1ad, "QinQ").
pub const TPID_8021AD: u16 = 0x88a8;
/// IPv4.
pub const ETHERTYPE_IPV4: u16 = 0x0800;
/// ARP.
pub const ETHERTYPE_ARP: u16 = 0x0806;
/// IPv6.
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
/// The highest VLAN ID a VNIC may have (4095 is reserved, 802.1Q Table 9-2).
pub const MAX_VLAN_ID: u16 = 4094;

/// A MAC address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// ff:ff:ff:ff:ff:ff.
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);

    /// Group address (the I/G bit): broadcast and multicast.
    pub const fn is_multicast(&self) -> bool {
        self.0[0] & 1 != 0
    }

    /// All zeros: no station has it.
    pub const fn is_zero(&self) -> bool {
        matches!(self.0, [0, 0, 0, 0, 0, 0])
    }

    /// A unicast address a station may own.
    pub const fn is_station(&self) -> bool {
        !self.is_multicast() && !self.is_zero()
    }

    /// The IPv6 link-local address formed from this MAC (modified EUI-64,
    /// RFC 4291 §2.5.1 and Appendix A).
    pub const fn ipv6_link_local(&self) -> core::net::Ipv6Addr {
        let m = self.0;
        core::net::Ipv6Addr::new(
            0xfe80,
            0,
            0,
            0,
            u16::from_be_bytes([m[0] ^ 0x02, m[1]]),
            u16::from_be_bytes([m[2], 0xff]),
            u16::from_be_bytes([0xfe, m[3]]),
            u16::from_be_bytes([m[4], m[5]]),
        )
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(f, "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2], m[3], m[4], m[5])
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl core::str::FromStr for MacAddr {
    type Err = ();
    /// `xx:xx:xx:xx:xx:xx` (hex, either case), as SmartOS writes `mac`.
    fn from_str(s: &str) -> Result<Self, ()> {
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for b in &mut out {
            let p = parts.next().ok_or(())?;
            if p.is_empty() || p.len() > 2 {
                return Err(());
            }
            *b = u8::from_str_radix(p, 16).map_err(|_| ())?;
        }
        if parts.next().is_some() {
            return Err(());
        }
        Ok(MacAddr(out))
    }
}

/// Why a frame is not an Ethernet frame the switch carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// Shorter than its headers.
    Runt,
    /// Longer than the MTU allows.
    Oversized,
    /// A tag inside a tag, or an 802.1ad S-tag.
    StackedVlan,
    /// VLAN ID 4095.
    ReservedVlan,
}

/// A parsed frame: the header fields and where the payload is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ethernet<'a> {
    /// Destination.
    pub dst: MacAddr,
    /// Source.
    pub src: MacAddr,
    /// The 802.1Q tag's VLAN ID; `None` when untagged. A priority tag
    /// (VID 0) reads as `Some(0)`.
    pub vlan: Option<u16>,
    /// The EtherType (or 802.3 length) after any tag.
    pub ethertype: u16,
    /// Everything after the EtherType.
    pub payload: &'a [u8],
}

impl<'a> Ethernet<'a> {
    /// Parses `frame` (no FCS, as virtio-net and virtio-drivers carry it),
    /// whose untagged form may hold at most `mtu` bytes of payload; a tagged
    /// frame may be [`VLAN_TAG`] longer. At most one tag.
    pub fn parse(frame: &'a [u8], mtu: usize) -> Result<Self, FrameError> {
        if frame.len() < ETH_HEADER {
            return Err(FrameError::Runt);
        }
        let mac = |at: usize| {
            let mut m = [0u8; 6];
            m.copy_from_slice(&frame[at..at + 6]);
            MacAddr(m)
        };
        let be16 = |at: usize| u16::from_be_bytes([frame[at], frame[at + 1]]);
        let (dst, src) = (mac(0), mac(6));
        let outer = be16(12);
        let (vlan, ethertype, payload_at) = match outer {
            TPID_8021AD => return Err(FrameError::StackedVlan),
            TPID_8021Q => {
                if frame.len() < ETH_HEADER + VLAN_TAG {
                    return Err(FrameError::Runt);
                }
                let vid = be16(14) & 0x0fff;
                let inner = be16(16);
                if inner == TPID_8021Q || inner == TPID_8021AD {
                    return Err(FrameError::StackedVlan);
                }
                if vid == 0x0fff {
                    return Err(FrameError::ReservedVlan);
                }
                (Some(vid), inner, ETH_HEADER + VLAN_TAG)
            }
            t => (None, t, ETH_HEADER),
        };
        let max = ETH_HEADER + mtu + if vlan.is_some() { VLAN_TAG } else { 0 };
        if frame.len() > max {
            return Err(FrameError::Oversized);
        }
        Ok(Self { dst, src, vlan, ethertype, payload: &frame[payload_at..] })
    }

    /// The frame without a tag.
    pub fn untagged(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(ETH_HEADER + self.payload.len());
        out.extend_from_slice(&self.dst.0);
        out.extend_from_slice(&self.src.0);
        out.extend_from_slice(&self.ethertype.to_be_bytes());
        out.extend_from_slice(self.payload);
        out
    }
}

/// `untagged` (a frame without a tag) with an 802.1Q tag for `vlan`
/// inserted; `vlan` 0 leaves it as it is.
pub fn tag(untagged: &[u8], vlan: u16) -> Vec<u8> {
    if vlan == 0 || untagged.len() < ETH_HEADER {
        return untagged.to_vec();
    }
    let mut out = Vec::with_capacity(untagged.len() + VLAN_TAG);
    out.extend_from_slice(&untagged[..12]);
    out.extend_from_slice(&TPID_8021Q.to_be_bytes());
    out.extend_from_slice(&(vlan & 0x0fff).to_be_bytes());
    out.extend_from_slice(&untagged[12..]);
    out
}
