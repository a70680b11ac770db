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

use alloc::collections::VecDeque;
use alloc::string::String;
use alloc::vec::Vec;

use libipc::framering::{Consumer, Direction, FrameRingError, Geometry, Producer, RingRegion};
use netd_switch::{Outcome, Port, Route, Switch, SwitchConfig, SwitchError, VnicConfig, VnicId};

/// Frames read from one VNIC's ring per poll (fairness between VNICs).
pub const POLL_BUDGET: u32 = 32;

/// A VNIC's rings.
struct Attached<R: RingRegion> {
    id: VnicId,
    region: R,
    /// Slots of each of its rings.
    slots: u32,
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
    /// VNICs whose VMM should be signalled because frames arrived in
    /// their rings (each once, however many frames).
    pub signal: Vec<VnicId>,
    /// VNICs whose rings had frames taken (room freed: a VMM whose frames
    /// wait for room may go on), each once. A VMM that kicked learns it
    /// from the reply; the others want a signal.
    pub room: Vec<VnicId>,
    /// Frames for the machine's NIC, as they go on the wire.
    pub uplink: Vec<Vec<u8>>,
    /// The earliest time a throttled VNIC may go on, if any.
    pub wake_at_ns: Option<u64>,
    /// A ring had a whole [`POLL_BUDGET`] taken: more may wait there.
    pub more: bool,
}

impl Work {
    fn wake(&mut self, at: u64) {
        self.wake_at_ns = Some(self.wake_at_ns.map_or(at, |w| w.min(at)));
    }
}

/// A switch with its VNICs' rings.
///
/// A frame a guest sent is copied twice here: out of its VMM's ring into
/// a buffer of netd's (the switch must judge bytes its sender can no
/// longer change), and from there into each receiving ring. Nothing is
/// allocated per poll or per frame, but for a frame the sender's bucket
/// holds back (kept until the bucket allows) and for frames to the uplink.
pub struct Fabric<R: RingRegion> {
    switch: Switch,
    /// The attached VNICs, by id (ascending).
    vnics: Vec<Attached<R>>,
    geometry: Geometry,
    /// Frames put into a receiving VNIC's ring so far (a flooded frame
    /// once per ring it went into).
    delivered: u64,
    /// Where a frame is copied out of its sender's ring (a slot long; kept).
    scratch: Vec<u8>,
    /// The receivers of the frame being moved (kept).
    to: Vec<VnicId>,
}

impl<R: RingRegion> Fabric<R> {
    /// A switch set up by `config`, whose VNICs get rings of `slots` slots.
    pub fn new(config: SwitchConfig, slots: u32) -> Result<Self, FrameRingError> {
        let geometry = Geometry::new(slots)?;
        Ok(Self {
            switch: Switch::new(config),
            vnics: Vec::new(),
            geometry,
            delivered: 0,
            scratch: alloc::vec![0; geometry.slot_bytes],
            to: Vec::new(),
        })
    }

    /// The ring geometry a VNIC's region needs (its pages).
    pub const fn geometry(&self) -> Geometry {
        self.geometry
    }

    /// The switch (counters, VNIC descriptions).
    pub const fn switch(&self) -> &Switch {
        &self.switch
    }

    fn index(&self, id: VnicId) -> Option<usize> {
        self.vnics.binary_search_by_key(&id, |a| a.id).ok()
    }

    fn get(&self, id: VnicId) -> Option<&Attached<R>> {
        self.index(id).map(|i| &self.vnics[i])
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
        if self.scratch.len() < g.slot_bytes {
            self.scratch.resize(g.slot_bytes, 0);
        }
        let at = self.vnics.partition_point(|a| a.id < id);
        self.vnics.insert(
            at,
            Attached {
                id,
                region,
                slots: g.slots,
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
        let i = self.index(id).ok_or(SwitchError::NoVnic(id))?;
        let a = self.vnics.remove(i);
        self.switch.remove_vnic(id)?;
        Ok(a.region)
    }

    /// The region of a VNIC (in one process, the VMM side reaches it here).
    pub fn region_mut(&mut self, id: VnicId) -> Option<&mut R> {
        let i = self.index(id)?;
        Some(&mut self.vnics[i].region)
    }

    /// Frames taken from `id`'s ring so far (malformed slots not counted).
    pub fn taken(&self, id: VnicId) -> Option<u64> {
        self.get(id).map(|a| a.from_vmm.frames)
    }

    /// Frames put into the VNICs' rings so far, all VNICs (attached now
    /// or not); a flooded frame counts once per ring it went into.
    pub const fn delivered(&self) -> u64 {
        self.delivered
    }

    /// Frames for `id` dropped because its ring was full, and whether (why)
    /// its ring is refused.
    pub fn ring_state(&self, id: VnicId) -> Option<(u64, Option<&FrameRingError>)> {
        self.get(id).map(|a| (a.ring_full, a.broken.as_ref()))
    }

    /// Slots of each of `id`'s rings.
    pub fn slots(&self, id: VnicId) -> Option<u32> {
        self.get(id).map(|a| a.slots)
    }

    /// Frames read from `id`'s ring that wait for its transmit bucket.
    pub fn held(&self, id: VnicId) -> Option<usize> {
        self.get(id).map(|a| a.held.len())
    }

    /// Moves what the guests sent; see the module's description.
    pub fn poll(&mut self, now_ns: u64) -> Work {
        let mut work = Work::default();
        for i in 0..self.vnics.len() {
            self.poll_one(i, now_ns, &mut work);
        }
        work
    }

    /// The frames of the VNIC at `i`: those its bucket held back first,
    /// then its ring's, each through the switch into the receiving rings
    /// as it is read (no batch copy between).
    fn poll_one(&mut self, i: usize, now_ns: u64, work: &mut Work) {
        let Self { switch, vnics, delivered, scratch, to, .. } = self;
        let (before, rest) = vnics.split_at_mut(i);
        let Some((a, after)) = rest.split_first_mut() else { return };
        if a.broken.is_some() {
            return;
        }
        let mut mover = Mover { switch, before, after, delivered, to, work, now_ns, from: a.id };
        if !a.held.is_empty() {
            if now_ns < a.retry_at_ns {
                mover.work.wake(a.retry_at_ns);
                return;
            }
            while let Some(frame) = a.held.pop_front() {
                if let Some(at) = mover.frame(&frame) {
                    a.held.push_front(frame);
                    a.retry_at_ns = at;
                    mover.work.wake(at);
                    return;
                }
            }
        }
        let held = &mut a.held;
        let mut throttled: Option<u64> = None;
        let slots_before = a.from_vmm.frames + a.from_vmm.malformed;
        // A frame the bucket holds back stays, with every one read after
        // it: they go on, in order, when the bucket allows.
        let popped = a.from_vmm.pop_all(&mut a.region, scratch, POLL_BUDGET, |f| {
            if throttled.is_none() {
                throttled = mover.frame(f);
                if throttled.is_none() {
                    return;
                }
            }
            held.push_back(f.to_vec());
        });
        match popped {
            // Slots freed: the VMM may have frames waiting for room.
            Ok(n) if n > 0 => push_unique(&mut mover.work.room, a.id),
            Ok(_) => {}
            Err(e) => {
                log::warn!("netd: VNIC {}: ring refused: {e}", a.id.0);
                a.broken = Some(e);
            }
        }
        if let Some(at) = throttled {
            a.retry_at_ns = at;
            mover.work.wake(at);
        } else if a.from_vmm.frames + a.from_vmm.malformed - slots_before >= u64::from(POLL_BUDGET) {
            mover.work.more = true;
        }
    }

    /// A frame from the machine's NIC.
    pub fn from_uplink(&mut self, frame: &[u8], now_ns: u64) -> Work {
        let mut work = Work::default();
        if let Outcome::Forward(f) = self.switch.from_uplink(frame, now_ns) {
            for to in &f.vnics {
                let Some(i) = self.index(*to) else { continue };
                deliver(&mut self.vnics[i], &f.frame, &mut self.delivered, &mut work);
            }
        }
        work
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
        for a in &self.vnics {
            let id = &a.id;
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

/// One VNIC's frames on their way: the switch and every other VNIC's rings.
struct Mover<'a, R: RingRegion> {
    switch: &'a mut Switch,
    /// The VNICs before and after the sender (it never receives its own).
    before: &'a mut [Attached<R>],
    after: &'a mut [Attached<R>],
    delivered: &'a mut u64,
    to: &'a mut Vec<VnicId>,
    work: &'a mut Work,
    now_ns: u64,
    from: VnicId,
}

impl<R: RingRegion> Mover<'_, R> {
    /// One frame from the sender: through the switch and into each
    /// receiving ring. `Some(t)`: the sender's bucket holds it back until
    /// `t` (nothing happened; offer it again then).
    fn frame(&mut self, frame: &[u8]) -> Option<u64> {
        match self.switch.route_from_vnic(self.from, frame, self.now_ns, self.to) {
            Ok(Route::Forward { vlan, uplink }) => {
                for &id in self.to.iter() {
                    let found = match self.before.binary_search_by_key(&id, |a| a.id) {
                        Ok(i) => Some(&mut self.before[i]),
                        Err(_) => self.after.binary_search_by_key(&id, |a| a.id).ok().map(|i| &mut self.after[i]),
                    };
                    if let Some(a) = found {
                        deliver(a, frame, self.delivered, self.work);
                    }
                }
                if uplink {
                    self.work.uplink.push(netd_switch::frame::tag(frame, vlan));
                }
                None
            }
            Ok(Route::Throttled { retry_at_ns }) => Some(retry_at_ns),
            // Dropped (and counted by the switch), or a VNIC the switch
            // does not know (cannot be: attached VNICs are the switch's).
            Ok(Route::Dropped(_)) | Err(_) => None,
        }
    }
}

/// Puts `frame` into `a`'s ring: counted as delivered, or as `ring_full`
/// when the ring has no free slot (as a NIC without a receive buffer
/// drops), or the ring is refused from now on if its VMM broke it.
fn deliver<R: RingRegion>(a: &mut Attached<R>, frame: &[u8], delivered: &mut u64, work: &mut Work) {
    if a.broken.is_some() {
        return;
    }
    match a.to_vmm.push(&mut a.region, frame) {
        Ok(true) => {
            *delivered += 1;
            push_unique(&mut work.signal, a.id);
        }
        Ok(false) => a.ring_full += 1,
        Err(e) => {
            log::warn!("netd: VNIC {}: ring refused: {e}", a.id.0);
            a.broken = Some(e);
        }
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
