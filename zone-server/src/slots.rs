//! zone-server's fixed capability slots, in one table.
//!
//! Every slot the zone-server binary puts a capability in by number is
//! named here, and [`TABLE`] lists them all. The table is checked when
//! the crate compiles (a `const` assertion): no two uses share a slot, and
//! none lies below alcove-rt's [`SLOT_FREE`] (its start-up capabilities).
//! Until session 18 the VNIC grant (201) and the image writer's ring grant
//! (201) were two constants in two files: a `vmadm start` of a VM with NICs
//! while an `imgadm import` was between two steps found the slot taken, and
//! netd's grant came back without its capability.

use abi::CapSlot;
use core::ops::Range;

pub use alcove_rt::start::SLOT_FREE;

/// A volume grant's endpoint between `pool.grant` and `proc.start` (a VM's disks).
pub const GRANT: CapSlot = 200;
/// A VNIC grant's endpoint between `vnic.grant` and `proc.give("netd")`.
pub const VNIC_GRANT: CapSlot = 201;

/// The capabilities of one block ring zone-server opens for itself.
#[derive(Clone, Copy, Debug)]
pub struct RingSlots {
    /// The volume's grant (storaged's endpoint for it).
    pub grant: CapSlot,
    /// The ring's frame.
    pub frame: CapSlot,
    /// A copy of zone-server's process capability, sent to storaged.
    pub token: CapSlot,
}

/// The image volume an import or install is writing (held across steps).
pub const WRITE_RING: RingSlots = RingSlots { grant: 210, frame: 211, token: 212 };
/// The image file `imgadm install -f zones/NAME` reads.
pub const READ_RING: RingSlots = RingSlots { grant: 213, frame: 214, token: 215 };

/// The frame of zone-server's shared buffer with netd's sockets (bulk
/// receives of image downloads: `socket.share_buffer`).
pub const NET_BUFFER: CapSlot = 216;
/// The timer thread's own notification.
pub const TIMER_TICK: CapSlot = 289;
/// The timer thread's thread, stack and IPC buffer frames.
pub const TIMER_THREAD: CapSlot = 290;
pub const TIMER_STACK: CapSlot = 291;
pub const TIMER_IPC: CapSlot = 292;
/// A notification nobody signals (zone-server's sleeps).
pub const SLEEP: CapSlot = 299;
/// The VMMs' control notifications: one per instance init may run for us.
pub const CONTROLS: Range<CapSlot> = 300..300 + libipc::interfaces::PROC_INSTANCES_MAX;

const fn one(s: CapSlot) -> Range<CapSlot> {
    s..s + 1
}

/// Every fixed slot or range, by use.
pub const TABLE: &[(&str, Range<CapSlot>)] = &[
    ("volume grant", one(GRANT)),
    ("VNIC grant", one(VNIC_GRANT)),
    ("image writer's grant", one(WRITE_RING.grant)),
    ("image writer's frame", one(WRITE_RING.frame)),
    ("image writer's token", one(WRITE_RING.token)),
    ("image reader's grant", one(READ_RING.grant)),
    ("image reader's frame", one(READ_RING.frame)),
    ("image reader's token", one(READ_RING.token)),
    ("socket buffer", one(NET_BUFFER)),
    ("timer notification", one(TIMER_TICK)),
    ("timer thread", one(TIMER_THREAD)),
    ("timer stack", one(TIMER_STACK)),
    ("timer IPC buffer", one(TIMER_IPC)),
    ("sleep notification", one(SLEEP)),
    ("VMM controls", CONTROLS),
];

/// The first two entries of `table` that share a slot, or one that is
/// empty or below [`SLOT_FREE`] (given twice), as indices.
pub const fn first_clash(table: &[(&str, Range<CapSlot>)]) -> Option<(usize, usize)> {
    let mut i = 0;
    while i < table.len() {
        let a = &table[i].1;
        if a.start >= a.end || a.start < SLOT_FREE {
            return Some((i, i));
        }
        let mut j = i + 1;
        while j < table.len() {
            let b = &table[j].1;
            if a.start < b.end && b.start < a.end {
                return Some((i, j));
            }
            j += 1;
        }
        i += 1;
    }
    None
}

const _: () = assert!(first_clash(TABLE).is_none(), "two of zone-server's fixed capability slots overlap");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zone_servers_fixed_slots_are_distinct_and_above_the_start_up_ones() {
        assert_eq!(first_clash(TABLE), None);
        // The ring slots the binary uses are the table's (each named once).
        for s in [WRITE_RING.grant, WRITE_RING.frame, WRITE_RING.token, READ_RING.grant, READ_RING.frame, READ_RING.token] {
            assert_eq!(TABLE.iter().filter(|(_, r)| r.contains(&s)).count(), 1, "slot {s}");
        }
        for s in [GRANT, VNIC_GRANT, TIMER_TICK, TIMER_THREAD, TIMER_STACK, TIMER_IPC, SLEEP, CONTROLS.start, CONTROLS.end - 1] {
            assert_eq!(TABLE.iter().filter(|(_, r)| r.contains(&s)).count(), 1, "slot {s}");
        }
    }

    #[test]
    fn the_check_finds_the_vnic_grant_and_the_image_writer_sharing_201() {
        // The numbering before session 18's zone18b.
        let old: &[(&str, Range<CapSlot>)] = &[
            ("volume grant", 200..201),
            ("VNIC grant", 201..202),
            ("image writer's grant", 201..202),
            ("image writer's frame", 202..203),
        ];
        assert_eq!(first_clash(old), Some((1, 2)));
    }

    #[test]
    fn the_check_finds_overlapping_ranges_empty_ones_and_start_up_slots() {
        assert_eq!(first_clash(&[("a", 300..332), ("b", 331..332)]), Some((0, 1)));
        assert_eq!(first_clash(&[("a", 300..332), ("b", 290..301)]), Some((0, 1)));
        assert_eq!(first_clash(&[("a", 300..332), ("b", 332..333), ("c", 299..300)]), None);
        assert_eq!(first_clash(&[("a", 300..300)]), Some((0, 0)));
        assert_eq!(first_clash(&[("a", 300..301), ("console", SLOT_FREE - 1..SLOT_FREE)]), Some((1, 1)));
    }
}
