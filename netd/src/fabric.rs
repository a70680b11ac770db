//! One switch and the frame rings of its VNICs: the part of netd that moves
//! frames. Each VNIC a VMM attached to has a region ([`libipc::framering`])
//! netd formatted; [`Fabric::poll`] takes what the guests sent, runs each
//! frame through the switch ([`netd_switch::Switch`]) and copies it into
//! the receiving VNICs' rings, and says which rings to signal and which
//! frames the machine's NIC must send. Time comes from the caller.
//!
//! A frame the switch throttles (the sender's `maxbw`) stays here, with
//! the ones read after it, and the VNIC's ring is not read again until the
//! bucket allows: the ring fills, the VMM's device stops taking the
//! guest's chains, and the guest slows down; nothing is lost. A receiving
//! ring that is full drops the frame and counts it (`ring_full`), as a NIC
//! with no free receive buffer does. A ring whose VMM broke the protocol
//! (an index out of range) is not served again; it is counted and logged
//! by the caller.

use alloc::collections::{BTreeMap, VecDeque};
use alloc::vec;
use alloc::string::String;
use alloc::vec::Vec;

use libipc::framering::{Consumer, Direction, FrameRingError, Geometry, Producer, RingRegion};
use netd_switch::{Outcome, Port, Switch, SwitchConfig, SwitchError, VnicConfig, VnicId};

/// Frames read from one VNIC's ring per poll (fairness between VNICs).
pub const POLL_BUDGET: u32 = 32;

/// A VNIC's rings.
struct Attached<R: RingRegion> {
    region: R,
    geometry: Geometry,
    from_vmm: Consumer,
    to_vmm: Producer,
    /// Frames read from the ring, not yet through the switch (throttled).
    held: VecDeque<Vec<u8>>,
    retry_at_ns: u64,
    /// The VMM broke the ring protocol; nothing more is read.
    broken: Option<FrameRingError>,
    /// Frames for this VNIC dropped because its ring was full.
    ring_full: u64,
}

/// What a poll leaves the caller to do.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Work {
    /// VNICs whose VMM should be signalled (frames arrived, or room freed).
    pub signal: Vec<VnicId>,
    /// Frames for the machine's NIC, as they go on the wire.
    pub uplink: Vec<Vec<u8>>,
    /// The earliest time a throttled VNIC may go on, if any.
    pub wake_at_ns: Option<u64>,
}

/// A switch with its VNICs' rings.
pub struct Fabric<R: RingRegion> {
    switch: Switch,
    vnics: BTreeMap<VnicId, Attached<R>>,
    geometry: Geometry,
    /// Frames put into a receiving VNIC's ring so far (a flooded frame
    /// once per ring it went into).
    delivered: u64,
}

impl<R: RingRegion> Fabric<R> {
    /// A switch set up by `config`, whose VNICs get rings of `slots` slots.
    pub fn new(config: SwitchConfig, slots: u32) -> Result<Self, FrameRingError> {
        Ok(Self { switch: Switch::new(config), vnics: BTreeMap::new(), geometry: Geometry::new(slots)?, delivered: 0 })
    }

    /// The ring geometry a VNIC's region needs (its pages).
    pub const fn geometry(&self) -> Geometry {
        self.geometry
    }

    /// The switch (counters, VNIC descriptions).
    pub const fn switch(&self) -> &Switch {
        &self.switch
    }

    /// Adds a VNIC and formats `region` as its rings.
    pub fn attach(&mut self, config: VnicConfig, region: R, now_ns: u64) -> Result<VnicId, AttachError> {
        let g = self.geometry;
        self.attach_with(config, region, g, now_ns).map_err(|(e, _)| e)
    }

    /// As [`Fabric::attach`], with rings of geometry `g` instead of the
    /// fabric's own (a client that asked for another ring size). A region
    /// that could not be attached comes back with the error.
    pub fn attach_with(
        &mut self,
        config: VnicConfig,
        mut region: R,
        g: Geometry,
        now_ns: u64,
    ) -> Result<VnicId, (AttachError, R)> {
        if let Err(e) = g.format(&mut region) {
            return Err((AttachError::Ring(e), region));
        }
        let id = match self.switch.add_vnic(config, now_ns) {
            Ok(id) => id,
            Err(e) => return Err((AttachError::Switch(e), region)),
        };
        self.vnics.insert(
            id,
            Attached {
                region,
                geometry: g,
                from_vmm: Consumer::new(g, Direction::ToNetd),
                to_vmm: Producer::new(g, Direction::ToVmm),
                held: VecDeque::new(),
                retry_at_ns: 0,
                broken: None,
                ring_full: 0,
            },
        );
        Ok(id)
    }

    /// Removes a VNIC; its region comes back.
    pub fn detach(&mut self, id: VnicId) -> Result<R, SwitchError> {
        let a = self.vnics.remove(&id).ok_or(SwitchError::NoVnic(id))?;
        self.switch.remove_vnic(id)?;
        Ok(a.region)
    }

    /// The region of a VNIC (in one process, the VMM side reaches it here).
    pub fn region_mut(&mut self, id: VnicId) -> Option<&mut R> {
        self.vnics.get_mut(&id).map(|a| &mut a.region)
    }

    /// Frames taken from `id`'s ring so far (malformed slots not counted).
    pub fn taken(&self, id: VnicId) -> Option<u64> {
        self.vnics.get(&id).map(|a| a.from_vmm.frames)
    }

    /// Frames put into the VNICs' rings so far, all VNICs (attached now
    /// or not); a flooded frame counts once per ring it went into.
    pub const fn delivered(&self) -> u64 {
        self.delivered
    }

    /// Frames for `id` dropped because its ring was full, and whether (why)
    /// its ring is refused.
    pub fn ring_state(&self, id: VnicId) -> Option<(u64, Option<&FrameRingError>)> {
        self.vnics.get(&id).map(|a| (a.ring_full, a.broken.as_ref()))
    }

    /// Moves what the guests sent; see the module's description.
    pub fn poll(&mut self, now_ns: u64) -> Work {
        let mut work = Work::default();
        let ids: Vec<VnicId> = self.vnics.keys().copied().collect();
        let mut buf = vec![0u8; self.geometry.slot_bytes];
        for id in ids {
            let Some(a) = self.vnics.get_mut(&id) else { continue };
            if buf.len() < a.geometry.slot_bytes {
                buf.resize(a.geometry.slot_bytes, 0);
            }
            if a.broken.is_some() || (!a.held.is_empty() && now_ns < a.retry_at_ns) {
                if !a.held.is_empty() {
                    work.wake_at_ns = Some(work.wake_at_ns.map_or(a.retry_at_ns, |w| w.min(a.retry_at_ns)));
                }
                continue;
            }
            if a.held.is_empty() {
                let held = &mut a.held;
                match a.from_vmm.pop_all(&mut a.region, &mut buf, POLL_BUDGET, |f| held.push_back(f.to_vec())) {
                    Ok(_) => {}
                    Err(e) => {
                        log::warn!("netd: VNIC {}: ring refused: {e}", id.0);
                        a.broken = Some(e);
                        continue;
                    }
                }
                // Slots freed: the VMM may have frames waiting for room.
                if !a.held.is_empty() {
                    push_unique(&mut work.signal, id);
                }
            }
            while let Some(frame) = self.vnics.get_mut(&id).and_then(|a| a.held.pop_front()) {
                match self.switch.from_vnic(id, &frame, now_ns) {
                    Ok(Outcome::Forward(f)) => {
                        for to in &f.vnics {
                            self.deliver(*to, &f.frame, &mut work);
                        }
                        if f.uplink {
                            work.uplink.push(f.wire_frame());
                        }
                    }
                    Ok(Outcome::Dropped(_)) => {}
                    Ok(Outcome::Throttled { retry_at_ns }) => {
                        if let Some(a) = self.vnics.get_mut(&id) {
                            a.held.push_front(frame);
                            a.retry_at_ns = retry_at_ns;
                        }
                        work.wake_at_ns = Some(work.wake_at_ns.map_or(retry_at_ns, |w| w.min(retry_at_ns)));
                        break;
                    }
                    Err(_) => break,
                }
            }
        }
        work
    }

    /// A frame from the machine's NIC.
    pub fn from_uplink(&mut self, frame: &[u8], now_ns: u64) -> Work {
        let mut work = Work::default();
        if let Outcome::Forward(f) = self.switch.from_uplink(frame, now_ns) {
            for to in &f.vnics {
                self.deliver(*to, &f.frame, &mut work);
            }
        }
        work
    }

    fn deliver(&mut self, to: VnicId, frame: &[u8], work: &mut Work) {
        let Some(a) = self.vnics.get_mut(&to) else { return };
        if a.broken.is_some() {
            return;
        }
        match a.to_vmm.push(&mut a.region, frame) {
            Ok(true) => {
                self.delivered += 1;
                push_unique(&mut work.signal, to);
            }
            Ok(false) => a.ring_full += 1,
            Err(e) => {
                log::warn!("netd: VNIC {}: ring refused: {e}", to.0);
                a.broken = Some(e);
            }
        }
    }

    /// What an operator reads in netd's status for this switch, named
    /// `name` (a nic_tag or an etherstub): one line for the switch, one per
    /// VNIC with its MAC, VLAN, cap, counters and drops by reason.
    pub fn status(&self, name: &str) -> String {
        use core::fmt::Write;
        let sw = &self.switch;
        let c = sw.config();
        let mut out = String::new();
        let _ = writeln!(
            out,
            "switch {name}: {}, mtu {}, {} vnics, fdb {}/{} entries ({} not learned: table full)",
            if c.uplink { "uplink" } else { "etherstub" },
            c.mtu,
            self.vnics.len(),
            sw.fdb_len(),
            c.fdb_entries,
            sw.stats().fdb_full,
        );
        let drops = |d: &netd_switch::Drops| {
            let mut s = String::new();
            for (r, n) in d.nonzero() {
                let _ = write!(s, " {r}={n}");
            }
            if s.is_empty() { String::from(" none") } else { s }
        };
        if let Some(st) = sw.port_stats(Port::Uplink) {
            let _ = writeln!(
                out,
                "  uplink: in {} frames {} bytes, out {} frames {} bytes",
                st.in_frames, st.in_bytes, st.out_frames, st.out_bytes
            );
            let _ = writeln!(out, "    drops in:{}; out:{}", drops(&st.in_drops), drops(&st.out_drops));
        }
        for (id, a) in &self.vnics {
            let (Some(v), Some(st)) = (sw.vnic(*id), sw.port_stats(Port::Vnic(*id))) else { continue };
            let _ = writeln!(
                out,
                "  vnic {} mac {} vlan {} maxbw {}: in {} frames {} bytes, out {} frames {} bytes, throttled {}, ring full {}{}",
                id.0,
                v.mac,
                v.vlan_id,
                v.maxbw_mbit.map_or(String::from("none"), |m| alloc::format!("{m} Mbit/s")),
                st.in_frames,
                st.in_bytes,
                st.out_frames,
                st.out_bytes,
                st.throttled,
                a.ring_full,
                if a.broken.is_some() { ", ring refused" } else { "" },
            );
            let _ = writeln!(out, "    drops in:{}; out:{}", drops(&st.in_drops), drops(&st.out_drops));
        }
        out
    }

    /// The port counters of `id`.
    pub fn stats(&self, id: VnicId) -> Option<&netd_switch::PortStats> {
        self.switch.port_stats(Port::Vnic(id))
    }
}

fn push_unique(v: &mut Vec<VnicId>, id: VnicId) {
    if !v.contains(&id) {
        v.push(id);
    }
}

/// Why a VNIC could not be attached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AttachError {
    /// The VNIC's description.
    Switch(SwitchError),
    /// The region.
    Ring(FrameRingError),
}

impl core::fmt::Display for AttachError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            AttachError::Switch(e) => write!(f, "netd: {e}"),
            AttachError::Ring(e) => write!(f, "netd: {e}"),
        }
    }
}
