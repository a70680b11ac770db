//! The VM's NICs between its description and netd: which MAC each
//! `nics[]` entry has (SmartOS generates a stable one when `mac` is
//! absent), the VNIC lines of netd's boot configuration for the VM
//! (`netd.conf`, see `netd::vnics::NetConfig`), which of the VNICs netd
//! gives this VMM is which NIC, and the pump that moves frames between a
//! virtio-net device on the PCI bus and its VNIC's frame ring
//! ([`FrameLink`]).
//!
//! ```text
//!  guest ─ transmitq ─▶ Net ─▶ NicPort::pump ─▶ frame ring ─ vnic.kick ─▶ netd's switch
//!  guest ◀ receiveq ─── Net ◀─ NicPort::pump ◀─ frame ring ◀──────────── netd's switch
//! ```

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use libipc::framering::{FrameRingError, RingRegion};
use libipc::interfaces::{VnicError, VnicInfo};

use crate::config::{NicIp, VmConfig};
use crate::pci::{PciBus, PciSlot};
use crate::virtio::GuestMemory;
use crate::virtio::net::{FrameLink, Net, RECEIVEQ, TRANSMITQ};
use crate::virtio::pci::VirtioPci;

/// The MAC of `nics[index]`: its `mac`, or one made from the VM's uuid
/// (its alias without one) and the index: the same every boot, locally
/// administered and unicast (`02:` … as SmartOS's generated MACs are
/// locally administered).
pub fn nic_mac(config: &VmConfig, index: usize) -> [u8; 6] {
    if let Some(m) = config.nics.get(index).and_then(|n| n.mac) {
        return m.0;
    }
    // FNV-1a over the VM's identity and the NIC's index.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    match (&config.uuid, &config.alias) {
        (Some(u), _) => eat(&u.0),
        (None, Some(a)) => eat(a.as_bytes()),
        (None, None) => eat(b"alcove-vm"),
    }
    eat(&(index as u64).to_le_bytes());
    let b = h.to_le_bytes();
    [0x02, b[0], b[1], b[2], b[3], b[4]]
}

/// The `vnic` lines of netd's boot configuration for this VM's NICs,
/// each for the client whose netd endpoint carries `client` (the VMM's
/// badge): MAC, VLAN, `ip` and the `allow_*` properties. The switch is the
/// NIC's `nic_tag` (an etherstub or nic_tag of the same name must be in
/// the configuration too).
pub fn netd_conf(config: &VmConfig, client: u64) -> String {
    let mut out = String::new();
    for (i, nic) in config.nics.iter().enumerate() {
        let m = nic_mac(config, i);
        out.push_str(&format!(
            "vnic client={client} switch={} mac={:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x} vlan_id={}",
            nic.nic_tag, m[0], m[1], m[2], m[3], m[4], m[5], nic.vlan_id
        ));
        if let Some(NicIp::Static(ip)) = nic.ip {
            out.push_str(&format!(" ip={ip}"));
        }
        if let Some(m) = nic.maxbw_mbit {
            out.push_str(&format!(" maxbw={m}"));
        }
        if !nic.allowed_ips.is_empty() {
            out.push_str(&format!(" allowed_ips={}", nic.allowed_ips.join(",")));
        }
        if !nic.allowed_dhcp_cids.is_empty() {
            out.push_str(&format!(" allowed_dhcp_cids={}", nic.allowed_dhcp_cids.join(",")));
        }
        out.push_str(&format!(
            " allow_ip_spoofing={} allow_mac_spoofing={} allow_dhcp_spoofing={} allow_restricted_traffic={}\n",
            nic.allow_ip_spoofing, nic.allow_mac_spoofing, nic.allow_dhcp_spoofing, nic.allow_restricted_traffic
        ));
    }
    out
}

/// Which of the VNICs netd lists for this VMM (`offered`) is each of
/// `config.nics`: the one on the NIC's `nic_tag` with its MAC and VLAN. A
/// NIC without one is an error naming it.
pub fn match_vnics(config: &VmConfig, offered: &[VnicInfo]) -> Result<Vec<u32>, String> {
    let mut picked: Vec<u32> = Vec::new();
    for (i, nic) in config.nics.iter().enumerate() {
        let mac = nic_mac(config, i);
        let found = offered
            .iter()
            .find(|v| v.mac == mac && v.switch == nic.nic_tag && v.vlan_id == nic.vlan_id && !picked.contains(&v.vnic))
            .ok_or_else(|| {
                format!(
                    "vmadm: property \"nics[{i}]\": netd holds no VNIC for this VM with mac {} on {:?}, VLAN {} ({} VNICs offered)",
                    crate::config::MacAddr(mac),
                    nic.nic_tag,
                    nic.vlan_id,
                    offered.len()
                )
            })?;
        picked.push(found.vnic);
    }
    Ok(picked)
}

/// The VMM's view of its attachments to netd: up, or lost and to be
/// attached again. init restarts a netd that died; the new one reads its
/// switches and VNICs from `netd.conf` again but knows none of the earlier
/// one's attachments: the VMM learns it when a `kick` fails (the call
/// itself fails when netd died while answering it; the new netd answers
/// `NoSuchHandle` to a handle it never gave) and then attaches every NIC
/// again with the same capability, the devices keeping their state. An
/// attach that fails (netd not serving the VNIC now) is tried again later,
/// after 10 ms doubled each time up to 1 s.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetdLink {
    lost: bool,
    retry_at_ns: u64,
    failures: u32,
    /// Times every NIC was attached again.
    pub relinks: u32,
}

/// What a failed `kick` means for the link ([`NetdLink::kicked`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KickOutcome {
    /// netd answered (frames taken, or an error that is not about the
    /// attachment): nothing to do.
    Fine,
    /// netd does not know the attachment (restarted) or died during the
    /// call: the link is lost, attach again.
    Lost(String),
    /// Another refusal: worth a warning, the link stays.
    Refused(String),
}

impl NetdLink {
    /// The first retry's delay and the longest one.
    pub const FIRST_RETRY_NS: u64 = 10_000_000;
    pub const MAX_RETRY_NS: u64 = 1_000_000_000;

    /// Whether the link is lost (no kicks until it is attached again).
    pub fn lost(&self) -> bool {
        self.lost
    }

    /// Takes a `kick`'s result (the outer error: the call failed).
    pub fn kicked<E: core::fmt::Display>(&mut self, r: &Result<Result<u32, VnicError>, E>, now_ns: u64) -> KickOutcome {
        let out = match r {
            Ok(Ok(_)) => KickOutcome::Fine,
            Ok(Err(e @ VnicError::NoSuchHandle { .. })) => KickOutcome::Lost(format!("{e} (netd restarted?)")),
            Ok(Err(e)) => KickOutcome::Refused(format!("{e}")),
            Err(e) => KickOutcome::Lost(format!("the call failed: {e}")),
        };
        if matches!(out, KickOutcome::Lost(_)) && !self.lost {
            self.lost = true;
            self.failures = 0;
            self.retry_at_ns = now_ns;
        }
        out
    }

    /// The VMM's starter says netd was restarted (and its VNICs made
    /// again): the link is lost, attach again now (if it was not lost
    /// already: then its retries go on as they were).
    pub fn restarted(&mut self, now_ns: u64) {
        if !self.lost {
            self.lost = true;
            self.failures = 0;
            self.retry_at_ns = now_ns;
        }
    }

    /// Whether to attach again now.
    pub fn due(&self, now_ns: u64) -> bool {
        self.lost && now_ns >= self.retry_at_ns
    }

    /// Every NIC is attached again.
    pub fn relinked(&mut self) {
        self.lost = false;
        self.failures = 0;
        self.relinks += 1;
    }

    /// Attaching again failed at `now_ns`: returns when to try next.
    pub fn failed(&mut self, now_ns: u64) -> u64 {
        let delay = Self::FIRST_RETRY_NS.saturating_mul(1u64 << self.failures.min(20)).min(Self::MAX_RETRY_NS);
        self.failures = self.failures.saturating_add(1);
        self.retry_at_ns = now_ns.saturating_add(delay);
        self.retry_at_ns
    }
}

/// What one [`NicPort::pump`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PumpResult {
    /// Frames went to netd, or wait in the ring: ring netd's doorbell.
    pub kick_netd: bool,
    /// The device was kicked (an interrupt may be raised: pass it on).
    pub kicked_device: bool,
    /// Frames wait in the ring that netd has not taken: a doorbell nobody
    /// heard (netd restarted), to be followed up by a `kick`.
    pub unconsumed: bool,
}

/// A virtio-net device on the PCI bus and its VNIC's frame ring.
pub struct NicPort<R: RingRegion> {
    /// The device's place on the bus.
    pub slot: PciSlot,
    /// netd's handle of the attachment (for `kick` and `detach`).
    pub handle: u32,
    link: FrameLink<R>,
}

impl<R: RingRegion> NicPort<R> {
    /// Puts a virtio-net device with `mac` on `bus`, fed by the frame ring
    /// in `region` (netd formatted it; its header is checked here).
    pub fn add(bus: &mut PciBus, mac: [u8; 6], region: R, handle: u32) -> Result<Self, String> {
        let link = FrameLink::new(region).map_err(|e| format!("{e}"))?;
        let dev = VirtioPci::new(Net::new(mac)).map_err(|e| format!("virtio-net: {e}"))?;
        let slot = bus.add(alloc::boxed::Box::new(dev)).map_err(|e| format!("virtio-net: {e}"))?;
        Ok(Self { slot, handle, link })
    }

    /// One round both ways: the guest's frames into the ring, netd's into
    /// the guest's buffers. An error means netd broke the ring protocol.
    pub fn pump(&mut self, bus: &mut PciBus, mem: &mut dyn GuestMemory) -> Result<PumpResult, FrameRingError> {
        let mut out = PumpResult::default();
        let Some(dev) = bus.device_mut::<VirtioPci<Net>>(self.slot) else { return Ok(out) };
        let p = self.link.pump(dev.device_mut())?;
        if p.kick_transmitq {
            dev.kick(TRANSMITQ, mem);
            out.kicked_device = true;
            // What the kick took goes out in this round too.
            let again = self.link.pump(dev.device_mut())?;
            out.kick_netd |= again.signal_netd;
        }
        if p.kick_receiveq || dev.device().pending_rx() > 0 {
            dev.kick(RECEIVEQ, mem);
            out.kicked_device = true;
        }
        out.kick_netd |= p.signal_netd || self.link.counts().1 > 0;
        out.unconsumed = self.link.unconsumed()? > 0;
        Ok(out)
    }

    /// Puts the device on a new ring of its VNIC, `handle` netd's new
    /// handle (netd was restarted and the VNIC attached again; see
    /// [`FrameLink::relink`]). The guest's device keeps its state. Returns
    /// the old region; a bad new one is handed back, nothing changed.
    pub fn relink(&mut self, region: R, handle: u32) -> Result<R, (R, String)> {
        let old = self.link.relink(region).map_err(|(r, e)| (r, format!("{e}")))?;
        self.handle = handle;
        Ok(old)
    }

    /// The device's counters.
    pub fn stats(&self, bus: &PciBus) -> Option<crate::virtio::net::NetStats> {
        bus.device::<VirtioPci<Net>>(self.slot).map(|d| *d.device().stats())
    }
}

#[cfg(test)]
mod tests;
