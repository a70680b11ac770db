//! The forwarding database: which port a (VLAN, MAC) was last seen on.
//! Learned entries age out after the switch's ageing time (300 s by
//! default, 802.1Q's recommended value); a VNIC's own MAC is a fixed entry
//! that learning never moves, so no other port can take its traffic. The
//! table is bounded: when full (after expired entries are purged) a new
//! address is not learned and its frames are flooded, as a full hardware
//! table does; existing entries stay.

use alloc::collections::BTreeMap;

use crate::frame::MacAddr;
use crate::Port;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    port: Port,
    seen_ns: u64,
    fixed: bool,
}

/// What [`Fdb::learn`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Learned {
    /// New entry, refreshed entry, or moved to this port.
    Yes,
    /// The address is a VNIC's own and stays there.
    Fixed,
    /// The table is full.
    Full,
}

/// The table of one switch.
#[derive(Clone, Debug)]
pub struct Fdb {
    entries: BTreeMap<(u16, MacAddr), Entry>,
    max_entries: usize,
    ageing_ns: u64,
}

impl Fdb {
    /// An empty table of at most `max_entries` learned and fixed entries.
    pub fn new(max_entries: usize, ageing_ns: u64) -> Self {
        Self { entries: BTreeMap::new(), max_entries, ageing_ns }
    }

    fn expired(&self, e: &Entry, now_ns: u64) -> bool {
        !e.fixed && now_ns.saturating_sub(e.seen_ns) >= self.ageing_ns
    }

    /// Pins `mac` on `vlan` to `port` (a VNIC's own address). Always fits:
    /// fixed entries are counted against the switch's VNIC limit instead.
    pub fn fix(&mut self, vlan: u16, mac: MacAddr, port: Port) {
        self.entries.insert((vlan, mac), Entry { port, seen_ns: 0, fixed: true });
    }

    /// `mac` was the source of a frame on `vlan` from `port` at `now_ns`.
    pub fn learn(&mut self, vlan: u16, mac: MacAddr, port: Port, now_ns: u64) -> Learned {
        if let Some(e) = self.entries.get_mut(&(vlan, mac)) {
            if e.fixed {
                return if e.port == port { Learned::Yes } else { Learned::Fixed };
            }
            *e = Entry { port, seen_ns: now_ns, fixed: false };
            return Learned::Yes;
        }
        if self.entries.len() >= self.max_entries {
            self.age(now_ns);
            if self.entries.len() >= self.max_entries {
                return Learned::Full;
            }
        }
        self.entries.insert((vlan, mac), Entry { port, seen_ns: now_ns, fixed: false });
        Learned::Yes
    }

    /// Where `mac` on `vlan` lives, if known and not expired.
    pub fn lookup(&self, vlan: u16, mac: MacAddr, now_ns: u64) -> Option<Port> {
        self.entries.get(&(vlan, mac)).filter(|e| !self.expired(e, now_ns)).map(|e| e.port)
    }

    /// Drops expired entries.
    pub fn age(&mut self, now_ns: u64) {
        let ageing = self.ageing_ns;
        self.entries.retain(|_, e| e.fixed || now_ns.saturating_sub(e.seen_ns) < ageing);
    }

    /// Forgets everything on `port` (a VNIC removed).
    pub fn remove_port(&mut self, port: Port) {
        self.entries.retain(|_, e| e.port != port);
    }

    /// Entries held (fixed and learned, expired ones not yet purged).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}
