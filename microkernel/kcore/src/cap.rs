//! Capability spaces and the derivation tree that makes revocation work.
//!
//! Every process names kernel objects through its own flat table of slots
//! (its CSpace). Each capability also has a node in one derivation tree that
//! spans all spaces: an object's first capability is a root, and every copy
//! (`CapCopy`, `CapGrant`, a capability carried in an IPC message) becomes a
//! child of its source. `CapRevoke` then takes back everything handed out
//! from a capability, wherever it travelled, as seL4's mapping database does.
//!
//! The syscall layer decodes user arguments and calls [`CapSystem`]; every
//! slot number and id is checked here and bad ones come back as
//! [`CapError`], never as a panic. Nothing here recurses: revocation walks the
//! tree through its links, so a 100 000-deep chain costs no kernel stack.
//! Budgets are charged by the caller, using [`SLOT_BYTES`], [`NODE_BYTES`]
//! and [`SPACE_BYTES`].

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::mem::size_of;

use abi::{CSPACE_SLOTS, CapSlot, Rights};

/// Kernel memory one slot costs whether used or not (charge `slots *
/// SLOT_BYTES` when creating a space). Fixed rather than derived from the
/// object type so budgets do not change when the kernel's object enum does;
/// [`CapSystem::new`] refuses to compile for an object handle that would not
/// fit.
pub const SLOT_BYTES: u64 = 64;

/// Kernel memory one derivation node costs (charge it for every
/// `insert_original` and `copy`, refund it for every [`Removed`]).
pub const NODE_BYTES: u64 = 32;

/// Kernel memory a space's bookkeeping costs beyond its slots.
pub const SPACE_BYTES: u64 = 32;

/// Marks "no node" in the tree links, so a link costs 4 bytes, not 8.
const NIL: u32 = u32::MAX;

/// Names a CSpace. The generation makes an id stale once its space is
/// destroyed, even if the index is reused for a new space.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SpaceId {
    index: u32,
    generation: u32,
}

/// Names one capability's place in the derivation tree; stays valid while the
/// capability exists and is detected as stale after, so the kernel can keep
/// NodeIds in objects (e.g. "the cap this page was mapped through").
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId {
    index: u32,
    generation: u32,
}

/// A capability: what it designates and what its holder may do with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cap<O> {
    /// Shared by every copy, so revoking copies never touches the object.
    pub object: O,
    /// Never more than the rights of the capability it was copied from.
    pub rights: Rights,
    /// Tells a server which client sent a message; 0 means unbadged.
    pub badge: u64,
    /// Where this capability sits in the derivation tree.
    pub node: NodeId,
}

/// A capability that was deleted, revoked or destroyed with its space: the
/// kernel needs its object and rights to undo what was done through it
/// (unmap pages, drop the last reference to an endpoint) and its node to
/// refund [`NODE_BYTES`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Removed<O> {
    /// Where it was: the slot is empty now and may be reused.
    pub space: SpaceId,
    pub slot: CapSlot,
    /// Stale from now on; matches ids the kernel stored elsewhere.
    pub node: NodeId,
    /// The handle, handed back so the last reference drops in the kernel's
    /// time, not inside this module.
    pub object: O,
    /// What the holder could do, to undo it (e.g. writable mappings).
    pub rights: Rights,
    pub badge: u64,
    /// The capability it was copied or derived from, as it was when this
    /// one went (`None` for a root). After a `delete` the parent lives on
    /// and inherits what was done through the deleted capability (a
    /// mapping, say), as its children do, so deleting the middle of a
    /// chain shields nothing from revocation; after a `revoke` it is
    /// either revoked too or the capability revoked from.
    pub parent: Option<NodeId>,
}

/// Why a capability operation was refused; maps onto [`abi::Error`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CapError {
    /// The slot number is outside the space.
    InvalidSlot,
    /// The source slot holds no capability.
    EmptySlot,
    /// The destination slot already holds a capability.
    SlotInUse,
    /// A copy asked for rights its source does not have.
    NoRights,
    /// Bad rights bits, re-badging a badged capability, or a bad space size.
    InvalidArgument,
    /// The space was destroyed (its process is gone) or never existed.
    NoSuchSpace,
}

impl From<CapError> for abi::Error {
    fn from(e: CapError) -> Self {
        match e {
            CapError::InvalidSlot => abi::Error::InvalidSlot,
            CapError::EmptySlot => abi::Error::EmptySlot,
            CapError::SlotInUse => abi::Error::SlotInUse,
            CapError::NoRights => abi::Error::NoRights,
            CapError::InvalidArgument => abi::Error::InvalidArgument,
            CapError::NoSuchSpace => abi::Error::Gone,
        }
    }
}

impl core::fmt::Display for CapError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        core::fmt::Display::fmt(&abi::Error::from(*self), f)
    }
}

/// One CSpace; `slots` is `None` once destroyed (the entry waits for reuse).
struct Space<O> {
    generation: u32,
    slots: Option<Box<[Option<Cap<O>>]>>,
    used: u32,
}

/// A derivation-tree node. Children form a doubly linked sibling list so a
/// node can be unlinked in O(1). A free node has `space == NIL` and uses
/// `next` as the free-list link.
#[derive(Clone, Copy)]
struct Node {
    generation: u32,
    space: u32,
    slot: CapSlot,
    parent: u32,
    first_child: u32,
    prev: u32,
    next: u32,
}

const _: () = assert!(size_of::<Node>() as u64 <= NODE_BYTES);
const _: () = assert!(size_of::<Space<()>>() as u64 <= SPACE_BYTES);

/// Every CSpace in the system and the derivation tree across them. `O` is the
/// kernel's object handle (an enum of `Arc`s); copying a capability clones it.
pub struct CapSystem<O> {
    spaces: Vec<Space<O>>,
    free_spaces: Vec<u32>,
    nodes: Vec<Node>,
    free_nodes: u32,
    live_nodes: usize,
}

impl<O: Clone> Default for CapSystem<O> {
    fn default() -> Self {
        Self::new()
    }
}

impl<O: Clone> CapSystem<O> {
    /// An empty system; allocates nothing until the first space.
    pub const fn new() -> Self {
        const { assert!(size_of::<Option<Cap<O>>>() as u64 <= SLOT_BYTES, "object handle too large for SLOT_BYTES") };
        Self { spaces: Vec::new(), free_spaces: Vec::new(), nodes: Vec::new(), free_nodes: NIL, live_nodes: 0 }
    }

    /// Creates a space of `slots` empty slots (1..=[`CSPACE_SLOTS`]); the
    /// caller charges `slots * SLOT_BYTES + SPACE_BYTES` first.
    pub fn create_space(&mut self, slots: u32) -> Result<SpaceId, CapError> {
        if slots == 0 || slots > CSPACE_SLOTS {
            return Err(CapError::InvalidArgument);
        }
        let table: Box<[Option<Cap<O>>]> = (0..slots).map(|_| None).collect();
        if let Some(index) = self.free_spaces.pop()
            && let Some(space) = self.spaces.get_mut(index as usize)
        {
            space.slots = Some(table);
            space.used = 0;
            return Ok(SpaceId { index, generation: space.generation });
        }
        let index = u32::try_from(self.spaces.len()).map_err(|_| CapError::InvalidArgument)?;
        self.spaces.push(Space { generation: 0, slots: Some(table), used: 0 });
        Ok(SpaceId { index, generation: 0 })
    }

    /// Deletes every capability in the space (as [`CapSystem::delete`] would,
    /// so copies made from them elsewhere stay reachable by revoking their
    /// ancestors) and retires the id. Returns what was removed, in slot order.
    pub fn destroy_space(&mut self, id: SpaceId) -> Result<Vec<Removed<O>>, CapError> {
        let count = self.space_ref(id)?.slots.as_deref().map_or(0, <[_]>::len);
        let mut removed = Vec::new();
        for slot in 0..count as CapSlot {
            if let Ok(cap) = self.slot_ref(id, slot) {
                let node = cap.node.index;
                self.reparent_children(node);
                removed.extend(self.remove_leaf(node));
            }
        }
        if let Some(space) = self.spaces.get_mut(id.index as usize) {
            space.slots = None;
            space.used = 0;
            // Retire the entry rather than let its generation wrap and make
            // an ancient id valid again.
            if let Some(generation) = space.generation.checked_add(1) {
                space.generation = generation;
                self.free_spaces.push(id.index);
            }
        }
        Ok(removed)
    }

    /// Places a freshly created object's first capability: a root of the
    /// derivation tree, which only deletion removes (nothing can revoke it).
    pub fn insert_original(
        &mut self,
        space: SpaceId,
        slot: CapSlot,
        object: O,
        rights: Rights,
        badge: u64,
    ) -> Result<NodeId, CapError> {
        self.check_empty(space, slot)?;
        if !rights.is_valid() {
            return Err(CapError::InvalidArgument);
        }
        let node = self.alloc_node(space.index, slot, NIL)?;
        self.place(space, slot, Cap { object, rights, badge, node });
        Ok(node)
    }

    /// The first capability to a new object made from another capability
    /// (a sub-range of I/O ports, a frame over part of a device-memory
    /// range, an MSI vector from an interrupt right), placed as a child of
    /// that source so revoking the source takes it back too (security
    /// issue finding 12; an original would be a root nothing reaches).
    #[allow(clippy::too_many_arguments)]
    pub fn insert_derived(
        &mut self,
        src_space: SpaceId,
        src_slot: CapSlot,
        space: SpaceId,
        slot: CapSlot,
        object: O,
        rights: Rights,
        badge: u64,
    ) -> Result<NodeId, CapError> {
        let parent = self.slot_ref(src_space, src_slot)?.node.index;
        self.check_empty(space, slot)?;
        if !rights.is_valid() {
            return Err(CapError::InvalidArgument);
        }
        let node = self.alloc_node(space.index, slot, parent)?;
        self.place(space, slot, Cap { object, rights, badge, node });
        Ok(node)
    }

    /// Copies a capability, within a space or across spaces, as a child of
    /// the source so revoking the source takes the copy back. `rights` must
    /// be a subset of the source's (never silently narrowed or widened); a
    /// `badge` may only be given to an unbadged source (minting), since
    /// re-badging would let a client impersonate another. `None` keeps the
    /// source's badge.
    pub fn copy(
        &mut self,
        src_space: SpaceId,
        src_slot: CapSlot,
        dst_space: SpaceId,
        dst_slot: CapSlot,
        rights: Rights,
        badge: Option<u64>,
    ) -> Result<NodeId, CapError> {
        let src = self.slot_ref(src_space, src_slot)?;
        self.check_empty(dst_space, dst_slot)?;
        if !src.rights.contains(rights) {
            return Err(CapError::NoRights);
        }
        let badge = match badge {
            None => src.badge,
            Some(b) if src.badge == 0 => b,
            Some(_) => return Err(CapError::InvalidArgument),
        };
        let parent = src.node.index;
        let object = src.object.clone();
        let node = self.alloc_node(dst_space.index, dst_slot, parent)?;
        self.place(dst_space, dst_slot, Cap { object, rights, badge, node });
        Ok(node)
    }

    /// The capability in a slot, for the syscall layer to check its type and
    /// rights.
    pub fn lookup(&self, space: SpaceId, slot: CapSlot) -> Result<&Cap<O>, CapError> {
        self.slot_ref(space, slot)
    }

    /// Removes one capability. Its children move up to its parent, so a
    /// holder cannot shield copies from revocation by deleting the middle of
    /// a chain.
    pub fn delete(&mut self, space: SpaceId, slot: CapSlot) -> Result<Removed<O>, CapError> {
        let node = self.slot_ref(space, slot)?.node.index;
        self.reparent_children(node);
        self.remove_leaf(node).ok_or(CapError::EmptySlot)
    }

    /// Removes every descendant of a capability, in any space, and keeps the
    /// capability itself. Children come out before their parents.
    pub fn revoke(&mut self, space: SpaceId, slot: CapSlot) -> Result<Vec<Removed<O>>, CapError> {
        let root = self.slot_ref(space, slot)?.node.index;
        let mut removed = Vec::new();
        // Post-order walk through the links instead of recursion: descend to
        // a leaf, remove it, resume from its parent. Each edge is descended
        // once, so the walk is O(descendants) with O(1) extra memory.
        let mut cur = self.link(root, |n| n.first_child);
        while cur != NIL {
            loop {
                let child = self.link(cur, |n| n.first_child);
                if child == NIL {
                    break;
                }
                cur = child;
            }
            let parent = self.link(cur, |n| n.parent);
            removed.extend(self.remove_leaf(cur));
            cur = if parent == root || parent == NIL { self.link(root, |n| n.first_child) } else { parent };
        }
        Ok(removed)
    }

    /// An empty slot to receive a capability (IPC transfer into a process
    /// that named no slot, `Create` on the caller's behalf). `None` when the
    /// space is full or gone.
    pub fn find_free_slot(&self, space: SpaceId) -> Option<CapSlot> {
        let slots = self.space_ref(space).ok()?.slots.as_deref()?;
        slots.iter().position(Option::is_none).and_then(|i| CapSlot::try_from(i).ok())
    }

    /// The space's size, to refund `slots * SLOT_BYTES` when it is destroyed.
    pub fn slot_count(&self, space: SpaceId) -> Option<u32> {
        let slots = self.space_ref(space).ok()?.slots.as_deref()?;
        u32::try_from(slots.len()).ok()
    }

    /// How many slots of the space hold a capability.
    pub fn cap_count(&self, space: SpaceId) -> Option<u32> {
        self.space_ref(space).ok().map(|s| s.used)
    }

    /// The capabilities a space holds, by slot; empty if the space is gone.
    pub fn caps_in(&self, space: SpaceId) -> impl Iterator<Item = (CapSlot, &Cap<O>)> + '_ {
        let slots = self.space_ref(space).ok().and_then(|s| s.slots.as_deref()).unwrap_or(&[]);
        (0..).zip(slots).filter_map(|(i, c)| c.as_ref().map(|c| (i, c)))
    }

    /// Where a capability lives now; `None` once it has been removed.
    pub fn node_location(&self, node: NodeId) -> Option<(SpaceId, CapSlot)> {
        let n = self.nodes.get(node.index as usize)?;
        if n.generation != node.generation || n.space == NIL {
            return None;
        }
        let space = self.spaces.get(n.space as usize)?;
        Some((SpaceId { index: n.space, generation: space.generation }, n.slot))
    }

    /// Capabilities alive across all spaces (each holds one node).
    pub fn node_count(&self) -> usize {
        self.live_nodes
    }

    fn space_ref(&self, id: SpaceId) -> Result<&Space<O>, CapError> {
        match self.spaces.get(id.index as usize) {
            Some(s) if s.generation == id.generation && s.slots.is_some() => Ok(s),
            _ => Err(CapError::NoSuchSpace),
        }
    }

    fn slot_ref(&self, space: SpaceId, slot: CapSlot) -> Result<&Cap<O>, CapError> {
        let slots = self.space_ref(space)?.slots.as_deref().unwrap_or(&[]);
        slots.get(slot as usize).ok_or(CapError::InvalidSlot)?.as_ref().ok_or(CapError::EmptySlot)
    }

    fn check_empty(&self, space: SpaceId, slot: CapSlot) -> Result<(), CapError> {
        let slots = self.space_ref(space)?.slots.as_deref().unwrap_or(&[]);
        match slots.get(slot as usize) {
            None => Err(CapError::InvalidSlot),
            Some(Some(_)) => Err(CapError::SlotInUse),
            Some(None) => Ok(()),
        }
    }

    /// Fills a slot `check_empty` accepted.
    fn place(&mut self, space: SpaceId, slot: CapSlot, cap: Cap<O>) {
        if let Some(s) = self.spaces.get_mut(space.index as usize)
            && let Some(entry) = s.slots.as_deref_mut().and_then(|t| t.get_mut(slot as usize))
        {
            debug_assert!(entry.is_none());
            *entry = Some(cap);
            s.used += 1;
        }
    }

    /// One link of a live node; NIL for NIL (ends walks instead of panicking).
    fn link(&self, index: u32, f: impl Fn(&Node) -> u32) -> u32 {
        self.nodes.get(index as usize).map_or(NIL, f)
    }

    fn node_mut(&mut self, index: u32) -> Option<&mut Node> {
        self.nodes.get_mut(index as usize)
    }

    fn alloc_node(&mut self, space: u32, slot: CapSlot, parent: u32) -> Result<NodeId, CapError> {
        let sibling = self.link(parent, |n| n.first_child);
        let fresh = Node { generation: 0, space, slot, parent, first_child: NIL, prev: NIL, next: sibling };
        let index = if self.free_nodes != NIL {
            let index = self.free_nodes;
            let Some(n) = self.node_mut(index) else { return Err(CapError::InvalidArgument) };
            let next_free = n.next;
            *n = Node { generation: n.generation, ..fresh };
            self.free_nodes = next_free;
            index
        } else {
            // NIL is not a usable index; the budget runs out long before.
            let index = u32::try_from(self.nodes.len()).ok().filter(|&i| i != NIL).ok_or(CapError::InvalidArgument)?;
            self.nodes.push(fresh);
            index
        };
        if let Some(s) = self.node_mut(sibling) {
            s.prev = index;
        }
        if let Some(p) = self.node_mut(parent) {
            p.first_child = index;
        }
        self.live_nodes += 1;
        let generation = self.nodes.get(index as usize).map_or(0, |n| n.generation);
        Ok(NodeId { index, generation })
    }

    /// Moves a node's children to its parent (or makes them roots). O(children).
    fn reparent_children(&mut self, index: u32) {
        let Some(&node) = self.nodes.get(index as usize) else { return };
        let first = node.first_child;
        if first == NIL {
            return;
        }
        let mut last = first;
        let mut cur = first;
        while cur != NIL {
            last = cur;
            let Some(c) = self.node_mut(cur) else { break };
            c.parent = node.parent;
            let next = c.next;
            if node.parent == NIL {
                // Roots keep no sibling list.
                c.prev = NIL;
                c.next = NIL;
            }
            cur = next;
        }
        if node.parent != NIL {
            // Splice the whole child list in front of the parent's children.
            let old_first = self.link(node.parent, |n| n.first_child);
            if let Some(l) = self.node_mut(last) {
                l.next = old_first;
            }
            if let Some(o) = self.node_mut(old_first) {
                o.prev = last;
            }
            if let Some(p) = self.node_mut(node.parent) {
                p.first_child = first;
            }
        }
        if let Some(n) = self.node_mut(index) {
            n.first_child = NIL;
        }
    }

    /// Unlinks a childless node, empties its slot and frees it.
    fn remove_leaf(&mut self, index: u32) -> Option<Removed<O>> {
        let node = *self.nodes.get(index as usize)?;
        debug_assert!(node.first_child == NIL && node.space != NIL);
        let parent = self.nodes.get(node.parent as usize).map(|p| NodeId { index: node.parent, generation: p.generation });
        if node.prev != NIL {
            if let Some(p) = self.node_mut(node.prev) {
                p.next = node.next;
            }
        } else if let Some(p) = self.node_mut(node.parent) {
            p.first_child = node.next;
        }
        if let Some(n) = self.node_mut(node.next) {
            n.prev = node.prev;
        }

        // Retire the node for good if its generation would wrap.
        let next_generation = node.generation.checked_add(1);
        let free_head = self.free_nodes;
        if let Some(n) = self.node_mut(index) {
            *n = Node {
                generation: next_generation.unwrap_or(u32::MAX),
                space: NIL,
                slot: 0,
                parent: NIL,
                first_child: NIL,
                prev: NIL,
                next: if next_generation.is_some() { free_head } else { NIL },
            };
            if next_generation.is_some() {
                self.free_nodes = index;
            }
        }
        self.live_nodes -= 1;

        let space = self.spaces.get_mut(node.space as usize)?;
        let cap = space.slots.as_deref_mut()?.get_mut(node.slot as usize)?.take()?;
        space.used -= 1;
        Some(Removed {
            space: SpaceId { index: node.space, generation: space.generation },
            slot: node.slot,
            node: cap.node,
            object: cap.object,
            rights: cap.rights,
            badge: cap.badge,
            parent,
        })
    }

    /// Test-only: the parent of a live node.
    #[cfg(test)]
    fn parent_of(&self, node: NodeId) -> Option<NodeId> {
        self.node_location(node)?;
        let p = self.link(node.index, |n| n.parent);
        let generation = self.nodes.get(p as usize)?.generation;
        Some(NodeId { index: p, generation })
    }

    /// Test-only: checks every structural invariant, panicking on the first
    /// broken one.
    #[cfg(test)]
    fn check_invariants(&self) {
        let mut live = 0;
        for (si, space) in self.spaces.iter().enumerate() {
            let Some(slots) = space.slots.as_deref() else {
                assert_eq!(space.used, 0);
                continue;
            };
            let mut used = 0;
            for (slot, cap) in slots.iter().enumerate() {
                let Some(cap) = cap else { continue };
                used += 1;
                let n = self.nodes[cap.node.index as usize];
                assert_eq!(n.generation, cap.node.generation);
                assert_eq!((n.space as usize, n.slot as usize), (si, slot));
                if n.parent == NIL {
                    assert_eq!((n.prev, n.next), (NIL, NIL), "roots have no siblings");
                } else {
                    let p = self.nodes[n.parent as usize];
                    assert_ne!(p.space, NIL, "parent is live");
                    let pcap = self.lookup(
                        SpaceId { index: p.space, generation: self.spaces[p.space as usize].generation },
                        p.slot,
                    );
                    assert!(pcap.unwrap().rights.contains(cap.rights), "rights only shrink");
                }
                if n.prev == NIL {
                    if n.parent != NIL {
                        assert_eq!(self.nodes[n.parent as usize].first_child, cap.node.index);
                    }
                } else {
                    let p = self.nodes[n.prev as usize];
                    assert_eq!(p.next, cap.node.index);
                    assert_eq!(p.parent, n.parent);
                }
                if n.next != NIL {
                    let s = self.nodes[n.next as usize];
                    assert_eq!(s.prev, cap.node.index);
                    assert_eq!(s.parent, n.parent);
                }
                let mut c = n.first_child;
                while c != NIL {
                    assert_eq!(self.nodes[c as usize].parent, cap.node.index);
                    c = self.nodes[c as usize].next;
                }
            }
            assert_eq!(space.used, used);
            live += used as usize;
        }
        assert_eq!(live, self.live_nodes);
        let mut free = alloc::collections::BTreeSet::new();
        let mut f = self.free_nodes;
        while f != NIL {
            assert_eq!(self.nodes[f as usize].space, NIL);
            assert!(free.insert(f), "free list has no cycle");
            f = self.nodes[f as usize].next;
        }
        for (i, n) in self.nodes.iter().enumerate() {
            if n.space == NIL && !free.contains(&(i as u32)) {
                assert_eq!(n.generation, u32::MAX, "only retired nodes leave the free list");
            }
        }
        assert!(live + free.len() <= self.nodes.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::collections::{BTreeMap, BTreeSet};
    use alloc::vec;

    const RW: Rights = Rights(Rights::READ.0 | Rights::WRITE.0);

    fn system() -> CapSystem<u32> {
        CapSystem::new()
    }

    #[test]
    fn insert_and_lookup() {
        let mut cs = system();
        let s = cs.create_space(16).unwrap();
        let n = cs.insert_original(s, 3, 7, RW, 0).unwrap();
        let cap = cs.lookup(s, 3).unwrap();
        assert_eq!((cap.object, cap.rights, cap.badge, cap.node), (7, RW, 0, n));
        assert_eq!(cs.node_location(n), Some((s, 3)));
        assert_eq!(cs.slot_count(s), Some(16));
        assert_eq!(cs.cap_count(s), Some(1));
        assert_eq!(cs.find_free_slot(s), Some(0));
        assert_eq!(cs.caps_in(s).map(|(i, c)| (i, c.object)).collect::<Vec<_>>(), vec![(3, 7)]);
        cs.check_invariants();
    }

    /// What was done through a removed capability (a mapping, a queued
    /// send) must be handed to the capability it came from (finding 12):
    /// `Removed` names that parent, live after a delete.
    #[test]
    fn removed_capabilities_name_their_parent() {
        let mut cs = system();
        let s = cs.create_space(8).unwrap();
        let root = cs.insert_original(s, 0, 1, RW, 0).unwrap();
        let mid = cs.copy(s, 0, s, 1, RW, None).unwrap();
        cs.copy(s, 1, s, 2, RW, None).unwrap();
        let gone = cs.delete(s, 1).unwrap();
        assert_eq!(gone.parent, Some(root));
        assert_eq!(gone.node, mid);
        let revoked = cs.revoke(s, 0).unwrap();
        assert_eq!(revoked.len(), 1);
        assert_eq!(revoked[0].parent, Some(root), "the leaf moved up to the root when its parent was deleted");
        assert_eq!(cs.delete(s, 0).unwrap().parent, None, "a root has no parent");
        cs.check_invariants();
    }

    #[test]
    fn space_sizes_are_checked() {
        let mut cs = system();
        assert_eq!(cs.create_space(0).err(), Some(CapError::InvalidArgument));
        assert_eq!(cs.create_space(CSPACE_SLOTS + 1).err(), Some(CapError::InvalidArgument));
        assert_eq!(cs.create_space(u32::MAX).err(), Some(CapError::InvalidArgument));
        let s = cs.create_space(CSPACE_SLOTS).unwrap();
        assert_eq!(cs.slot_count(s), Some(CSPACE_SLOTS));
    }

    #[test]
    fn slot_errors() {
        let mut cs = system();
        let s = cs.create_space(4).unwrap();
        assert_eq!(cs.insert_original(s, 4, 1, RW, 0), Err(CapError::InvalidSlot));
        assert_eq!(cs.insert_original(s, u32::MAX, 1, RW, 0), Err(CapError::InvalidSlot));
        assert_eq!(cs.lookup(s, 4).err(), Some(CapError::InvalidSlot));
        assert_eq!(cs.lookup(s, 0).err(), Some(CapError::EmptySlot));
        assert_eq!(cs.delete(s, 0).err(), Some(CapError::EmptySlot));
        assert_eq!(cs.revoke(s, 0).err(), Some(CapError::EmptySlot));
        assert_eq!(cs.delete(s, 9).err(), Some(CapError::InvalidSlot));
        assert_eq!(cs.revoke(s, u32::MAX).err(), Some(CapError::InvalidSlot));
        cs.insert_original(s, 0, 1, RW, 0).unwrap();
        assert_eq!(cs.insert_original(s, 0, 2, RW, 0), Err(CapError::SlotInUse));
        assert_eq!(cs.copy(s, 1, s, 2, RW, None), Err(CapError::EmptySlot));
        assert_eq!(cs.copy(s, 0, s, 4, RW, None), Err(CapError::InvalidSlot));
        assert_eq!(cs.copy(s, 4, s, 1, RW, None), Err(CapError::InvalidSlot));
        // Copying a slot onto itself: the destination is in use.
        assert_eq!(cs.copy(s, 0, s, 0, RW, None), Err(CapError::SlotInUse));
        assert_eq!(cs.insert_original(s, 1, 1, Rights(1 << 12), 0), Err(CapError::InvalidArgument));
        assert_eq!(cs.lookup(s, 0).unwrap().object, 1);
        assert_eq!(cs.node_count(), 1);
        cs.check_invariants();
    }

    #[test]
    fn copy_may_drop_rights_but_never_add() {
        let mut cs = system();
        let s = cs.create_space(8).unwrap();
        cs.insert_original(s, 0, 1, RW, 0).unwrap();
        let n = cs.copy(s, 0, s, 1, Rights::READ, None).unwrap();
        assert_eq!(cs.lookup(s, 1).unwrap().rights, Rights::READ);
        assert_eq!(cs.lookup(s, 1).unwrap().object, 1);
        assert_eq!(cs.parent_of(n), Some(cs.lookup(s, 0).unwrap().node));
        cs.copy(s, 0, s, 2, RW, None).unwrap();
        cs.copy(s, 0, s, 3, Rights::NONE, None).unwrap();
        // READ → READ|WRITE, and rights the source never had, are refused.
        assert_eq!(cs.copy(s, 1, s, 4, RW, None), Err(CapError::NoRights));
        assert_eq!(cs.copy(s, 0, s, 4, Rights::READ | Rights::EXECUTE, None), Err(CapError::NoRights));
        assert_eq!(cs.copy(s, 0, s, 4, Rights(1 << 20), None), Err(CapError::NoRights));
        assert_eq!(cs.lookup(s, 4).err(), Some(CapError::EmptySlot));
        cs.check_invariants();
    }

    #[test]
    fn badges_are_minted_once() {
        let mut cs = system();
        let s = cs.create_space(8).unwrap();
        cs.insert_original(s, 0, 1, Rights::SEND, 0).unwrap();
        cs.copy(s, 0, s, 1, Rights::SEND, Some(42)).unwrap();
        assert_eq!(cs.lookup(s, 1).unwrap().badge, 42);
        // A badged capability keeps its badge through copies…
        cs.copy(s, 1, s, 2, Rights::SEND, None).unwrap();
        assert_eq!(cs.lookup(s, 2).unwrap().badge, 42);
        // …and cannot be re-badged or un-badged.
        assert_eq!(cs.copy(s, 1, s, 3, Rights::SEND, Some(43)), Err(CapError::InvalidArgument));
        assert_eq!(cs.copy(s, 1, s, 3, Rights::SEND, Some(42)), Err(CapError::InvalidArgument));
        assert_eq!(cs.copy(s, 2, s, 3, Rights::SEND, Some(0)), Err(CapError::InvalidArgument));
        // Unbadged stays unbadged with None or Some(0).
        cs.copy(s, 0, s, 3, Rights::SEND, Some(0)).unwrap();
        cs.copy(s, 0, s, 4, Rights::SEND, None).unwrap();
        assert_eq!((cs.lookup(s, 3).unwrap().badge, cs.lookup(s, 4).unwrap().badge), (0, 0));
        // An original may be created badged, and then cannot be minted.
        cs.insert_original(s, 5, 2, Rights::SEND, 9).unwrap();
        assert_eq!(cs.copy(s, 5, s, 6, Rights::SEND, Some(1)), Err(CapError::InvalidArgument));
        cs.check_invariants();
    }

    /// Finding 12: an object created from another capability (I/O ports
    /// from I/O ports, a device frame from device memory, an MSI from an
    /// IRQ) is taken back by revoking that capability, wherever its
    /// capability went since.
    #[test]
    fn revocation_reaches_objects_created_from_a_capability() {
        let mut cs = system();
        let (a, b) = (cs.create_space(8).unwrap(), cs.create_space(8).unwrap());
        cs.insert_original(a, 0, 1, Rights::ALL, 0).unwrap(); // the root range
        cs.copy(a, 0, b, 0, Rights::ALL, None).unwrap(); //   handed to b
        cs.insert_derived(b, 0, b, 1, 2, Rights::ALL, 0).unwrap(); // b's sub-range
        cs.copy(b, 1, a, 5, Rights::ALL, None).unwrap(); //   passed on
        let gone: BTreeSet<_> = cs.revoke(a, 0).unwrap().into_iter().map(|r| (r.space, r.slot, r.object)).collect();
        assert_eq!(gone, BTreeSet::from([(b, 0, 1), (b, 1, 2), (a, 5, 2)]));
        assert_eq!(cs.node_count(), 1);
        // A bad source or a taken slot is refused, and nothing is left over.
        assert_eq!(cs.insert_derived(b, 0, b, 2, 3, Rights::ALL, 0), Err(CapError::EmptySlot));
        assert_eq!(cs.insert_derived(a, 0, a, 0, 3, Rights::ALL, 0), Err(CapError::SlotInUse));
        assert_eq!(cs.node_count(), 1);
        cs.check_invariants();
    }

    #[test]
    fn revoke_reaches_three_spaces_and_keeps_the_root() {
        let mut cs = system();
        let (a, b, c) = (cs.create_space(8).unwrap(), cs.create_space(8).unwrap(), cs.create_space(8).unwrap());
        cs.insert_original(a, 0, 1, Rights::ALL, 0).unwrap();
        cs.insert_original(a, 7, 2, Rights::ALL, 0).unwrap(); // unrelated object
        cs.copy(a, 0, b, 0, RW, None).unwrap(); //      a0 → b0
        cs.copy(b, 0, c, 0, Rights::READ, None).unwrap(); // b0 → c0
        cs.copy(c, 0, a, 1, Rights::READ, None).unwrap(); // c0 → a1
        cs.copy(a, 0, c, 1, Rights::SEND, Some(5)).unwrap(); // a0 → c1
        cs.copy(b, 0, b, 1, RW, None).unwrap(); //      b0 → b1
        cs.copy(a, 7, b, 2, Rights::ALL, None).unwrap(); // other tree

        // Revoking the middle takes its subtree only.
        let gone: BTreeSet<_> = cs.revoke(b, 0).unwrap().into_iter().map(|r| (r.space, r.slot)).collect();
        assert_eq!(gone, BTreeSet::from([(c, 0), (a, 1), (b, 1)]));
        assert!(cs.lookup(b, 0).is_ok());
        assert!(cs.lookup(c, 1).is_ok());
        cs.check_invariants();

        let removed = cs.revoke(a, 0).unwrap();
        assert_eq!(removed.len(), 2);
        for r in &removed {
            assert_eq!(r.object, 1);
            assert!(cs.node_location(r.node).is_none());
        }
        let c1 = removed.iter().find(|r| r.space == c).unwrap();
        assert_eq!((c1.slot, c1.rights, c1.badge), (1, Rights::SEND, 5));
        assert_eq!(cs.lookup(a, 0).unwrap().object, 1);
        assert_eq!(cs.caps_in(b).map(|(i, _)| i).collect::<Vec<_>>(), vec![2]);
        assert_eq!(cs.cap_count(c), Some(0));
        assert_eq!(cs.node_count(), 3);
        // Revoking a leaf is a no-op, not an error.
        assert_eq!(cs.revoke(a, 0).unwrap(), vec![]);
        cs.check_invariants();
    }

    #[test]
    fn revoke_removes_children_before_parents() {
        let mut cs = system();
        let s = cs.create_space(8).unwrap();
        cs.insert_original(s, 0, 1, Rights::ALL, 0).unwrap();
        cs.copy(s, 0, s, 1, Rights::ALL, None).unwrap();
        cs.copy(s, 1, s, 2, Rights::ALL, None).unwrap();
        cs.copy(s, 2, s, 3, Rights::ALL, None).unwrap();
        cs.copy(s, 1, s, 4, Rights::ALL, None).unwrap();
        let order: Vec<_> = cs.revoke(s, 0).unwrap().iter().map(|r| r.slot).collect();
        let pos = |slot| order.iter().position(|&x| x == slot).unwrap();
        assert!(pos(3) < pos(2) && pos(2) < pos(1) && pos(4) < pos(1));
    }

    #[test]
    fn delete_reparents_so_revoke_still_reaches_grandchildren() {
        let mut cs = system();
        let (a, b, c) = (cs.create_space(4).unwrap(), cs.create_space(4).unwrap(), cs.create_space(4).unwrap());
        let root = cs.insert_original(a, 0, 1, Rights::ALL, 0).unwrap();
        cs.copy(a, 0, b, 0, Rights::ALL, None).unwrap();
        let g1 = cs.copy(b, 0, c, 0, Rights::ALL, None).unwrap();
        let g2 = cs.copy(b, 0, c, 1, Rights::READ, None).unwrap();
        let sibling = cs.copy(a, 0, a, 1, Rights::READ, None).unwrap();
        let removed = cs.delete(b, 0).unwrap();
        assert_eq!((removed.space, removed.slot, removed.object), (b, 0, 1));
        assert_eq!(cs.parent_of(g1), Some(root));
        assert_eq!(cs.parent_of(g2), Some(root));
        assert_eq!(cs.parent_of(sibling), Some(root));
        cs.check_invariants();
        let gone: BTreeSet<_> = cs.revoke(a, 0).unwrap().into_iter().map(|r| r.node).collect();
        assert_eq!(gone, BTreeSet::from([g1, g2, sibling]));
        assert_eq!(cs.node_count(), 1);
        cs.check_invariants();
    }

    #[test]
    fn deleting_a_root_makes_its_children_roots() {
        let mut cs = system();
        let s = cs.create_space(4).unwrap();
        cs.insert_original(s, 0, 1, Rights::ALL, 0).unwrap();
        let c1 = cs.copy(s, 0, s, 1, Rights::ALL, None).unwrap();
        let c2 = cs.copy(s, 0, s, 2, Rights::ALL, None).unwrap();
        cs.copy(s, 1, s, 3, Rights::ALL, None).unwrap();
        cs.delete(s, 0).unwrap();
        cs.check_invariants();
        assert_eq!(cs.parent_of(c1), None);
        assert_eq!(cs.parent_of(c2), None);
        assert_eq!(cs.revoke(s, 1).unwrap().len(), 1);
        assert_eq!(cs.revoke(s, 2).unwrap().len(), 0);
        cs.check_invariants();
    }

    #[test]
    fn destroy_space_removes_its_caps_and_keeps_copies_revocable() {
        let mut cs = system();
        let (a, b, c) = (cs.create_space(8).unwrap(), cs.create_space(8).unwrap(), cs.create_space(8).unwrap());
        let root = cs.insert_original(a, 0, 1, Rights::ALL, 0).unwrap();
        cs.copy(a, 0, b, 0, Rights::ALL, None).unwrap();
        cs.copy(b, 0, b, 1, Rights::ALL, None).unwrap();
        let far = cs.copy(b, 1, c, 5, Rights::READ, None).unwrap();
        cs.insert_original(b, 7, 2, Rights::ALL, 0).unwrap();
        let kept = cs.copy(b, 7, c, 6, Rights::ALL, None).unwrap();

        let removed = cs.destroy_space(b).unwrap();
        assert_eq!(removed.iter().map(|r| (r.slot, r.object)).collect::<Vec<_>>(), vec![(0, 1), (1, 1), (7, 2)]);
        cs.check_invariants();
        assert_eq!(cs.parent_of(far), Some(root));
        assert_eq!(cs.parent_of(kept), None);
        assert_eq!(cs.revoke(a, 0).unwrap().iter().map(|r| r.node).collect::<Vec<_>>(), vec![far]);
        assert_eq!(cs.lookup(c, 6).unwrap().object, 2);
        cs.check_invariants();
    }

    #[test]
    fn stale_ids_are_refused() {
        let mut cs = system();
        let a = cs.create_space(4).unwrap();
        let other = cs.create_space(4).unwrap();
        cs.insert_original(other, 0, 1, Rights::ALL, 0).unwrap();
        let n = cs.insert_original(a, 0, 9, Rights::ALL, 0).unwrap();
        cs.destroy_space(a).unwrap();
        assert_eq!(cs.node_location(n), None);

        // The index is reused; the old id must not reach the new space.
        let a2 = cs.create_space(4).unwrap();
        assert_ne!(a, a2);
        let n2 = cs.insert_original(a2, 0, 10, Rights::ALL, 0).unwrap();
        assert_ne!(n, n2);
        assert_eq!(cs.node_location(n), None);
        assert_eq!(cs.node_location(n2), Some((a2, 0)));
        assert_eq!(cs.lookup(a, 0).err(), Some(CapError::NoSuchSpace));
        assert_eq!(cs.insert_original(a, 1, 1, Rights::ALL, 0), Err(CapError::NoSuchSpace));
        assert_eq!(cs.copy(other, 0, a, 1, Rights::ALL, None), Err(CapError::NoSuchSpace));
        assert_eq!(cs.copy(a, 0, other, 1, Rights::ALL, None), Err(CapError::NoSuchSpace));
        assert_eq!(cs.delete(a, 0).err(), Some(CapError::NoSuchSpace));
        assert_eq!(cs.revoke(a, 0).err(), Some(CapError::NoSuchSpace));
        assert_eq!(cs.destroy_space(a).err(), Some(CapError::NoSuchSpace));
        assert_eq!(cs.find_free_slot(a), None);
        assert_eq!(cs.slot_count(a), None);
        assert_eq!(cs.cap_count(a), None);
        assert_eq!(cs.caps_in(a).count(), 0);
        // Ids that never existed.
        let bogus = SpaceId { index: 77, generation: 0 };
        assert_eq!(cs.lookup(bogus, 0).err(), Some(CapError::NoSuchSpace));
        assert_eq!(cs.node_location(NodeId { index: 1000, generation: 0 }), None);
        assert_eq!(cs.lookup(a2, 0).unwrap().object, 10);
        cs.check_invariants();

        // A deleted node's id goes stale too, even when its index is reused.
        let d = cs.copy(other, 0, other, 1, Rights::READ, None).unwrap();
        cs.delete(other, 1).unwrap();
        let d2 = cs.copy(other, 0, other, 1, Rights::READ, None).unwrap();
        assert_eq!(d.index, d2.index);
        assert_eq!(cs.node_location(d), None);
        assert_eq!(cs.node_location(d2), Some((other, 1)));
    }

    #[test]
    fn retired_generations_are_never_reused() {
        let mut cs = system();
        let s = cs.create_space(1).unwrap();
        cs.spaces[0].generation = u32::MAX;
        let s_max = SpaceId { index: 0, generation: u32::MAX };
        cs.destroy_space(s).unwrap_err();
        cs.destroy_space(s_max).unwrap();
        let fresh = cs.create_space(1).unwrap();
        assert_ne!(fresh.index, 0);
        assert_eq!(cs.lookup(s_max, 0).err(), Some(CapError::NoSuchSpace));

        let n = cs.insert_original(fresh, 0, 1, Rights::ALL, 0).unwrap();
        cs.nodes[n.index as usize].generation = u32::MAX;
        cs.spaces[fresh.index as usize].slots.as_deref_mut().unwrap()[0].as_mut().unwrap().node.generation = u32::MAX;
        cs.delete(fresh, 0).unwrap();
        let n2 = cs.insert_original(fresh, 0, 1, Rights::ALL, 0).unwrap();
        assert_ne!(n2.index, n.index);
        cs.check_invariants();
    }

    #[test]
    fn free_slots_fill_up() {
        let mut cs = system();
        let s = cs.create_space(3).unwrap();
        for i in 0..3 {
            let slot = cs.find_free_slot(s).unwrap();
            assert_eq!(slot, i);
            cs.insert_original(s, slot, i, Rights::ALL, 0).unwrap();
        }
        assert_eq!(cs.find_free_slot(s), None);
        cs.delete(s, 1).unwrap();
        assert_eq!(cs.find_free_slot(s), Some(1));
        assert_eq!(cs.cap_count(s), Some(2));
    }

    /// Spaces enough for `caps` capabilities, filled in slot order.
    fn spaces_for(cs: &mut CapSystem<u32>, caps: u32) -> Vec<SpaceId> {
        (0..caps.div_ceil(CSPACE_SLOTS)).map(|_| cs.create_space(CSPACE_SLOTS).unwrap()).collect()
    }

    fn at(spaces: &[SpaceId], i: u32) -> (SpaceId, CapSlot) {
        (spaces[(i / CSPACE_SLOTS) as usize], i % CSPACE_SLOTS)
    }

    #[test]
    fn deep_chain_revokes_without_recursion() {
        const DEPTH: u32 = 100_000;
        let mut cs = system();
        let spaces = spaces_for(&mut cs, DEPTH);
        let (s0, i0) = at(&spaces, 0);
        cs.insert_original(s0, i0, 1, Rights::ALL, 0).unwrap();
        for i in 1..DEPTH {
            let (ps, pi) = at(&spaces, i - 1);
            let (s, si) = at(&spaces, i);
            cs.copy(ps, pi, s, si, Rights::ALL, None).unwrap();
        }
        // Deleting from the middle re-parents a 50 000-deep subtree.
        let (ms, mi) = at(&spaces, DEPTH / 2);
        cs.delete(ms, mi).unwrap();
        let removed = cs.revoke(s0, i0).unwrap();
        assert_eq!(removed.len() as u32, DEPTH - 2);
        assert_eq!(removed[0].slot, at(&spaces, DEPTH - 1).1, "deepest first");
        assert_eq!(cs.node_count(), 1);
        cs.check_invariants();

        // Destroying spaces holding a deep chain is iterative too.
        for i in 1..DEPTH {
            let (ps, pi) = at(&spaces, i - 1);
            let (s, si) = at(&spaces, i);
            cs.copy(ps, pi, s, si, Rights::ALL, None).unwrap();
        }
        for s in &spaces {
            cs.destroy_space(*s).unwrap();
        }
        assert_eq!(cs.node_count(), 0);
        cs.check_invariants();
    }

    #[test]
    fn wide_tree_revokes() {
        const WIDTH: u32 = 50_000;
        let mut cs = system();
        let spaces = spaces_for(&mut cs, WIDTH + 1);
        let (s0, i0) = at(&spaces, 0);
        cs.insert_original(s0, i0, 1, Rights::ALL, 0).unwrap();
        for i in 1..=WIDTH {
            let (s, si) = at(&spaces, i);
            cs.copy(s0, i0, s, si, Rights::READ, None).unwrap();
        }
        assert_eq!(cs.revoke(s0, i0).unwrap().len() as u32, WIDTH);
        assert_eq!(cs.node_count(), 1);
        cs.check_invariants();
    }

    #[test]
    fn errors_map_to_abi() {
        assert_eq!(abi::Error::from(CapError::NoSuchSpace), abi::Error::Gone);
        assert_eq!(abi::Error::from(CapError::InvalidSlot), abi::Error::InvalidSlot);
        assert_eq!(abi::Error::from(CapError::EmptySlot), abi::Error::EmptySlot);
        assert_eq!(abi::Error::from(CapError::SlotInUse), abi::Error::SlotInUse);
        assert_eq!(abi::Error::from(CapError::NoRights), abi::Error::NoRights);
        assert_eq!(abi::Error::from(CapError::InvalidArgument), abi::Error::InvalidArgument);
    }

    #[test]
    fn handles_up_to_slot_bytes_fit() {
        // The kernel's handle: an enum of Arcs (tag + pointer).
        #[allow(dead_code)]
        #[derive(Clone)]
        enum Obj {
            A(alloc::sync::Arc<u64>),
            B(alloc::sync::Arc<[u8; 64]>),
        }
        assert!(size_of::<Option<Cap<Obj>>>() as u64 <= SLOT_BYTES);
        let mut cs: CapSystem<Obj> = CapSystem::new();
        let s = cs.create_space(2).unwrap();
        cs.insert_original(s, 0, Obj::A(alloc::sync::Arc::new(5)), Rights::ALL, 0).unwrap();
        cs.copy(s, 0, s, 1, Rights::READ, None).unwrap();
        match &cs.lookup(s, 1).unwrap().object {
            Obj::A(a) => assert_eq!(alloc::sync::Arc::strong_count(a), 2),
            Obj::B(_) => unreachable!(),
        }
    }

    // ---- randomized comparison against a naive model ----

    struct XorShift(u64);
    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    struct MCap {
        parent: Option<(SpaceId, CapSlot)>,
        object: u32,
        rights: Rights,
        badge: u64,
    }

    /// The obvious implementation: caps keyed by location, parent by location.
    #[derive(Default)]
    struct Model {
        spaces: BTreeMap<SpaceId, u32>,
        caps: BTreeMap<(SpaceId, CapSlot), MCap>,
    }

    impl Model {
        fn check(&self, space: SpaceId, slot: CapSlot) -> Result<Option<MCap>, CapError> {
            let &n = self.spaces.get(&space).ok_or(CapError::NoSuchSpace)?;
            if slot >= n {
                return Err(CapError::InvalidSlot);
            }
            Ok(self.caps.get(&(space, slot)).copied())
        }
        fn full(&self, space: SpaceId, slot: CapSlot) -> Result<MCap, CapError> {
            self.check(space, slot)?.ok_or(CapError::EmptySlot)
        }
        fn empty(&self, space: SpaceId, slot: CapSlot) -> Result<(), CapError> {
            match self.check(space, slot)? {
                Some(_) => Err(CapError::SlotInUse),
                None => Ok(()),
            }
        }
        fn delete(&mut self, loc: (SpaceId, CapSlot)) {
            let gone = self.caps.remove(&loc).unwrap();
            for c in self.caps.values_mut() {
                if c.parent == Some(loc) {
                    c.parent = gone.parent;
                }
            }
        }
        fn descendants(&self, loc: (SpaceId, CapSlot)) -> BTreeSet<(SpaceId, CapSlot)> {
            let mut out = BTreeSet::new();
            let mut grew = true;
            while grew {
                grew = false;
                for (k, c) in &self.caps {
                    if let Some(p) = c.parent
                        && (p == loc || out.contains(&p))
                        && out.insert(*k)
                    {
                        grew = true;
                    }
                }
            }
            out
        }
    }

    fn compare(cs: &CapSystem<u32>, m: &Model) {
        cs.check_invariants();
        assert_eq!(cs.node_count(), m.caps.len());
        for (&space, &n) in &m.spaces {
            assert_eq!(cs.slot_count(space), Some(n));
            let in_model = m.caps.range((space, 0)..=(space, u32::MAX)).count();
            assert_eq!(cs.caps_in(space).count(), in_model);
        }
        for (&(space, slot), mc) in &m.caps {
            let cap = cs.lookup(space, slot).unwrap();
            assert_eq!((cap.object, cap.rights, cap.badge), (mc.object, mc.rights, mc.badge));
            assert_eq!(cs.node_location(cap.node), Some((space, slot)));
            let parent = cs.parent_of(cap.node).and_then(|p| cs.node_location(p));
            assert_eq!(parent, mc.parent, "parent of {space:?}/{slot}");
        }
    }

    fn random_ops(seed: u64, ops: usize) {
        let mut rng = XorShift(seed);
        let mut cs = system();
        let mut m = Model::default();
        let mut dead: Vec<SpaceId> = Vec::new();
        let mut next_object = 0;
        // The last copy made: copying from it again builds deep chains.
        let mut last_copy: Option<(SpaceId, CapSlot)> = None;

        for step in 0..ops {
            let pick_space = |rng: &mut XorShift, m: &Model| -> SpaceId {
                if !dead.is_empty() && rng.below(10) == 0 {
                    return dead[rng.below(dead.len() as u64) as usize];
                }
                match m.spaces.keys().nth(rng.below(m.spaces.len().max(1) as u64) as usize) {
                    Some(&s) => s,
                    None => SpaceId { index: rng.below(4) as u32, generation: 99 },
                }
            };
            let pick_slot = |rng: &mut XorShift, m: &Model, s: SpaceId| -> CapSlot {
                let n = m.spaces.get(&s).copied().unwrap_or(8);
                if rng.below(50) == 0 { u32::MAX - rng.below(2) as u32 } else { rng.below(u64::from(n) + 2) as u32 }
            };
            // Prefer locations that hold a cap, so trees grow deep.
            let pick_full = |rng: &mut XorShift, m: &Model| -> Option<(SpaceId, CapSlot)> {
                if m.caps.is_empty() || rng.below(8) == 0 {
                    return None;
                }
                m.caps.keys().nth(rng.below(m.caps.len() as u64) as usize).copied()
            };

            match rng.below(100) {
                0..4 => {
                    let slots = match rng.below(20) {
                        0 => 0,
                        1 => CSPACE_SLOTS + 1 + rng.below(5) as u32,
                        _ => 1 + rng.below(24) as u32,
                    };
                    match cs.create_space(slots) {
                        Ok(s) => {
                            assert!((1..=CSPACE_SLOTS).contains(&slots));
                            assert!(!m.spaces.contains_key(&s) && !dead.contains(&s));
                            m.spaces.insert(s, slots);
                        }
                        Err(e) => assert_eq!(e, CapError::InvalidArgument),
                    }
                }
                4..6 => {
                    let s = pick_space(&mut rng, &m);
                    let got = cs.destroy_space(s);
                    if m.spaces.remove(&s).is_some() {
                        let locs: Vec<_> = m.caps.range((s, 0)..=(s, u32::MAX)).map(|(k, _)| *k).collect();
                        for &loc in &locs {
                            m.delete(loc);
                        }
                        let got: Vec<_> = got.unwrap().into_iter().map(|r| (r.space, r.slot)).collect();
                        assert_eq!(got, locs);
                        dead.push(s);
                    } else {
                        assert_eq!(got.err(), Some(CapError::NoSuchSpace));
                    }
                }
                6..20 => {
                    let s = pick_space(&mut rng, &m);
                    let slot = pick_slot(&mut rng, &m, s);
                    let rights = Rights(rng.below(0x100) as u32);
                    let badge = if rng.below(3) == 0 { rng.next() } else { 0 };
                    let want = m
                        .empty(s, slot)
                        .and_then(|()| if rights.is_valid() { Ok(()) } else { Err(CapError::InvalidArgument) });
                    let got = cs.insert_original(s, slot, next_object, rights, badge);
                    assert_eq!(got.map(|_| ()), want, "step {step}: insert");
                    if got.is_ok() {
                        m.caps.insert((s, slot), MCap { parent: None, object: next_object, rights, badge });
                        next_object += 1;
                    }
                }
                20..60 => {
                    let chain = last_copy.filter(|l| m.caps.contains_key(l) && rng.below(2) == 0);
                    let (ss, sslot) = chain.or_else(|| pick_full(&mut rng, &m)).unwrap_or_else(|| {
                        let s = pick_space(&mut rng, &m);
                        (s, pick_slot(&mut rng, &m, s))
                    });
                    let ds = pick_space(&mut rng, &m);
                    let dslot = if rng.below(10) == 0 { sslot } else { pick_slot(&mut rng, &m, ds) };
                    let rights = match m.caps.get(&(ss, sslot)) {
                        Some(c) if rng.below(4) != 0 => Rights(c.rights.0 & rng.next() as u32),
                        _ => Rights(rng.below(0x100) as u32),
                    };
                    let badge = match rng.below(4) {
                        0 => Some(0),
                        1 => Some(1 + rng.below(1000)),
                        _ => None,
                    };
                    let want = m.full(ss, sslot).and_then(|src| {
                        m.empty(ds, dslot)?;
                        if !src.rights.contains(rights) {
                            return Err(CapError::NoRights);
                        }
                        let badge = match badge {
                            None => src.badge,
                            Some(b) if src.badge == 0 => b,
                            Some(_) => return Err(CapError::InvalidArgument),
                        };
                        Ok(MCap { parent: Some((ss, sslot)), object: src.object, rights, badge })
                    });
                    let got = cs.copy(ss, sslot, ds, dslot, rights, badge);
                    assert_eq!(got.map(|_| ()), want.map(|_| ()), "step {step}: copy");
                    if let Ok(c) = want {
                        m.caps.insert((ds, dslot), c);
                        last_copy = Some((ds, dslot));
                    }
                }
                60..80 => {
                    let (s, slot) = pick_full(&mut rng, &m).unwrap_or_else(|| {
                        let s = pick_space(&mut rng, &m);
                        (s, pick_slot(&mut rng, &m, s))
                    });
                    let want = m.full(s, slot);
                    let got = cs.delete(s, slot);
                    match (got, want) {
                        (Ok(r), Ok(c)) => {
                            assert_eq!(
                                (r.space, r.slot, r.object, r.rights, r.badge),
                                (s, slot, c.object, c.rights, c.badge)
                            );
                            let parent = r.parent.and_then(|p| cs.node_location(p));
                            assert_eq!(parent, c.parent, "step {step}: the parent a delete reports");
                            m.delete((s, slot));
                        }
                        (got, want) => assert_eq!(got.err(), want.err(), "step {step}: delete"),
                    }
                }
                80..90 => {
                    let (s, slot) = pick_full(&mut rng, &m).unwrap_or_else(|| {
                        let s = pick_space(&mut rng, &m);
                        (s, pick_slot(&mut rng, &m, s))
                    });
                    let want = m.full(s, slot);
                    let got = cs.revoke(s, slot);
                    match (got, want) {
                        (Ok(removed), Ok(_)) => {
                            let desc = m.descendants((s, slot));
                            let got: BTreeSet<_> = removed.iter().map(|r| (r.space, r.slot)).collect();
                            assert_eq!(got.len(), removed.len(), "no duplicates");
                            assert_eq!(got, desc, "step {step}: revoke removes exactly the descendants");
                            for r in &removed {
                                let c = m.caps.remove(&(r.space, r.slot)).unwrap();
                                assert_eq!((r.object, r.rights, r.badge), (c.object, c.rights, c.badge));
                            }
                            assert!(cs.lookup(s, slot).is_ok());
                        }
                        (got, want) => assert_eq!(got.err(), want.err(), "step {step}: revoke"),
                    }
                }
                _ => {
                    let s = pick_space(&mut rng, &m);
                    let slot = pick_slot(&mut rng, &m, s);
                    let got = cs.lookup(s, slot).map(|c| (c.object, c.rights, c.badge));
                    let want = m.full(s, slot).map(|c| (c.object, c.rights, c.badge));
                    assert_eq!(got, want, "step {step}: lookup");
                    let free = m.spaces.get(&s).and_then(|&n| (0..n).find(|i| !m.caps.contains_key(&(s, *i))));
                    assert_eq!(cs.find_free_slot(s), free);
                }
            }
            if step % 16 == 0 {
                compare(&cs, &m);
            }
        }
        compare(&cs, &m);
    }

    #[test]
    fn random_ops_match_model() {
        for seed in 1..=16u64 {
            random_ops(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15), 5000);
        }
    }
}
