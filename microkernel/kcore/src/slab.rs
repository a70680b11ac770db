//! A slab of kernel objects addressed by generation-checked ids, so an id
//! kept after its object died (in a wait queue, a timeout, a reply link)
//! is detected instead of reaching the slot's next occupant.

use alloc::vec::Vec;
use core::num::NonZeroU32;

/// An index plus the generation of the object it named. Generations start
/// at 1 and skip 0 when they wrap, so `Option<Id>` is one word (the
/// kernel's `current`, `reply_to` and wait-list links compare as one).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Id {
    pub index: u32,
    pub generation: NonZeroU32,
}

impl Id {
    /// Packs into one word (for messages and logs).
    pub const fn raw(self) -> u64 {
        ((self.generation.get() as u64) << 32) | self.index as u64
    }

    /// The id of slot `index` in its first generation (tests name slots
    /// that were never filled with it).
    pub const fn first(index: u32) -> Self {
        Self { index, generation: NonZeroU32::MIN }
    }
}

// The fast paths rely on it: `Option<Id>` compares and stores as one word.
const _: () = assert!(core::mem::size_of::<Option<Id>>() == 8);

enum Entry<T> {
    Used { generation: NonZeroU32, value: T },
    Free { generation: NonZeroU32, next_free: Option<u32> },
}

pub struct Slab<T> {
    entries: Vec<Entry<T>>,
    free_head: Option<u32>,
    len: usize,
}

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Slab<T> {
    pub const fn new() -> Self {
        Self { entries: Vec::new(), free_head: None, len: 0 }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn insert(&mut self, value: T) -> Id {
        self.len += 1;
        if let Some(index) = self.free_head {
            let slot = &mut self.entries[index as usize];
            let (generation, next) = match slot {
                Entry::Free { generation, next_free } => {
                    (NonZeroU32::new(generation.get().wrapping_add(1)).unwrap_or(NonZeroU32::MIN), *next_free)
                }
                Entry::Used { .. } => unreachable!("free list points at a used slot"),
            };
            self.free_head = next;
            *slot = Entry::Used { generation, value };
            Id { index, generation }
        } else {
            let index = self.entries.len() as u32;
            self.entries.push(Entry::Used { generation: NonZeroU32::MIN, value });
            Id::first(index)
        }
    }

    pub fn get(&self, id: Id) -> Option<&T> {
        match self.entries.get(id.index as usize) {
            Some(Entry::Used { generation, value }) if *generation == id.generation => Some(value),
            _ => None,
        }
    }

    pub fn get_mut(&mut self, id: Id) -> Option<&mut T> {
        match self.entries.get_mut(id.index as usize) {
            Some(Entry::Used { generation, value }) if *generation == id.generation => Some(value),
            _ => None,
        }
    }

    /// Two distinct live objects at once (the IPC fast path writes the
    /// caller and its peer); `None` if either is gone or both are one.
    /// Inline: the fast path calls it once per message.
    #[inline(always)]
    pub fn get2_mut(&mut self, a: Id, b: Id) -> Option<(&mut T, &mut T)> {
        // One bounds check each and one for the two being one entry: no
        // ordering of the two indices (a split would need one).
        let [ea, eb] = self.entries.get_disjoint_mut([a.index as usize, b.index as usize]).ok()?;
        match (ea, eb) {
            (Entry::Used { generation: ga, value: va }, Entry::Used { generation: gb, value: vb })
                if *ga == a.generation && *gb == b.generation =>
            {
                Some((va, vb))
            }
            _ => None,
        }
    }

    /// [`get`](Self::get) for an id its holder knows to be live (the
    /// current thread, an object a capability holds a reference to, a thread
    /// linked in a wait list its owner unlinks before freeing): the index is
    /// still checked (and that the slot is in use), the generation only in
    /// debug builds. An id that was stale after all would reach the slot's
    /// next occupant: each caller says why its id cannot be.
    #[inline(always)]
    pub fn get_live(&self, id: Id) -> Option<&T> {
        match self.entries.get(id.index as usize) {
            Some(Entry::Used { generation, value }) => {
                debug_assert_eq!(*generation, id.generation, "a live id was stale");
                Some(value)
            }
            _ => None,
        }
    }

    /// [`get_mut`](Self::get_mut) for a live id (see [`get_live`](Self::get_live)).
    #[inline(always)]
    pub fn get_live_mut(&mut self, id: Id) -> Option<&mut T> {
        match self.entries.get_mut(id.index as usize) {
            Some(Entry::Used { generation, value }) => {
                debug_assert_eq!(*generation, id.generation, "a live id was stale");
                Some(value)
            }
            _ => None,
        }
    }

    /// [`get2_mut`](Self::get2_mut) for two live ids (see [`get_live`](Self::get_live)).
    #[inline(always)]
    pub fn get2_live_mut(&mut self, a: Id, b: Id) -> Option<(&mut T, &mut T)> {
        let [ea, eb] = self.entries.get_disjoint_mut([a.index as usize, b.index as usize]).ok()?;
        match (ea, eb) {
            (Entry::Used { generation: ga, value: va }, Entry::Used { generation: gb, value: vb }) => {
                debug_assert!(*ga == a.generation && *gb == b.generation, "a live id was stale");
                Some((va, vb))
            }
            _ => None,
        }
    }

    pub fn contains(&self, id: Id) -> bool {
        self.get(id).is_some()
    }

    pub fn remove(&mut self, id: Id) -> Option<T> {
        let slot = self.entries.get_mut(id.index as usize)?;
        match slot {
            Entry::Used { generation, .. } if *generation == id.generation => {
                let generation = *generation;
                let old = core::mem::replace(slot, Entry::Free { generation, next_free: self.free_head });
                self.free_head = Some(id.index);
                self.len -= 1;
                match old {
                    Entry::Used { value, .. } => Some(value),
                    Entry::Free { .. } => None,
                }
            }
            _ => None,
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (Id, &T)> {
        self.entries.iter().enumerate().filter_map(|(i, e)| match e {
            Entry::Used { generation, value } => Some((Id { index: i as u32, generation: *generation }, value)),
            Entry::Free { .. } => None,
        })
    }

    pub fn ids(&self) -> impl Iterator<Item = Id> + '_ {
        self.iter().map(|(id, _)| id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_ids_are_detected() {
        let mut s = Slab::new();
        let a = s.insert("a");
        let b = s.insert("b");
        assert_eq!(s.get(a), Some(&"a"));
        assert_eq!(s.remove(a), Some("a"));
        assert_eq!(s.get(a), None);
        assert_eq!(s.remove(a), None);
        let c = s.insert("c");
        assert_eq!(c.index, a.index);
        assert_ne!(c, a);
        assert_eq!(s.get(a), None);
        assert_eq!(s.get(c), Some(&"c"));
        assert_eq!(s.len(), 2);
        assert_eq!(s.ids().collect::<alloc::vec::Vec<_>>(), [c, b]);
        assert_eq!(s.get(Id::first(99)), None);
    }

    #[test]
    fn live_lookups_check_index_and_use() {
        let mut s = Slab::new();
        let a = s.insert(1);
        let b = s.insert(2);
        assert_eq!(s.get_live(a), Some(&1));
        *s.get_live_mut(b).unwrap() += 1;
        assert_eq!(s.get(b), Some(&3));
        let (x, y) = s.get2_live_mut(b, a).unwrap();
        assert_eq!((*x, *y), (3, 1));
        // Past the end, a free slot, one object twice: refused in any build.
        let far = Id::first(9);
        assert!(s.get_live(far).is_none() && s.get_live_mut(far).is_none());
        assert!(s.get2_live_mut(a, far).is_none());
        assert!(s.get2_live_mut(a, a).is_none());
        s.remove(b);
        assert!(s.get_live(b).is_none() && s.get_live_mut(b).is_none());
        assert!(s.get2_live_mut(a, b).is_none());
    }

    /// A stale id whose slot is reused is the caller's bug: debug builds
    /// (these tests) catch it.
    #[test]
    #[should_panic(expected = "a live id was stale")]
    fn a_stale_live_id_is_caught_in_debug_builds() {
        let mut s = Slab::new();
        let a = s.insert(1);
        s.remove(a);
        let _b = s.insert(2);
        let _ = s.get_live(a);
    }

    #[test]
    fn two_at_once() {
        let mut s = Slab::new();
        let a = s.insert(1);
        let b = s.insert(2);
        let (x, y) = s.get2_mut(a, b).expect("both live");
        (*x, *y) = (*x + 10, *y + 20);
        let (y, x) = s.get2_mut(b, a).expect("either order");
        assert_eq!((*x, *y), (11, 22));
        assert!(s.get2_mut(a, a).is_none(), "one object twice");
        assert!(s.get2_mut(a, Id::first(7)).is_none(), "past the end");
        assert_eq!(s.remove(b), Some(22));
        assert!(s.get2_mut(a, b).is_none(), "a stale id");
        let c = s.insert(3);
        assert_eq!(c.index, b.index);
        assert!(s.get2_mut(b, a).is_none(), "a stale id whose slot is reused");
        assert!(s.get2_mut(c, a).is_some());
    }
}
