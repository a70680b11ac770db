//! An intrusive FIFO of waiting objects (the threads waiting to receive on
//! an endpoint), linked through the objects themselves as seL4 links TCBs:
//! no allocation to queue a thread, O(1) push, pop and removal from the
//! middle (a thread killed, suspended or timed out while it waits).
//!
//! Each object holds one `Option<Link>`: `None` while it is in no list. A
//! list only ever follows links of live objects (`Slab` ids are checked);
//! every way an object leaves a list (pop, remove, the list's end) clears its
//! link, so an object that dies unlinked leaves no dangling link behind. The
//! owner must take an object out of its list before freeing it.

use crate::slab::{Id, Slab};

/// Where an object sits in its list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Link {
    pub prev: Option<Id>,
    pub next: Option<Id>,
}

/// An object that can wait in a `WaitList`.
pub trait Node {
    fn link(&mut self) -> &mut Option<Link>;
}

impl<T: Node> Node for alloc::boxed::Box<T> {
    #[inline(always)]
    fn link(&mut self) -> &mut Option<Link> {
        (**self).link()
    }
}

/// Why an operation on a list was refused (the list is left unchanged).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListError {
    /// No live object has this id.
    Gone,
    /// `push_back` of an object already in a list.
    Linked,
    /// `remove` of an object that is not in this list.
    NotHere,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    Prev,
    Next,
}

/// The link of a neighbour still to be set after a `_held` operation: the
/// list is consistent again only once it is applied.
#[must_use = "the neighbour's link is right only once the fix-up is applied"]
#[derive(Debug)]
pub struct Fixup(Option<(Id, Side, Option<Id>)>);

impl Fixup {
    /// Nothing to do.
    pub const NONE: Fixup = Fixup(None);

    #[inline(always)]
    pub fn apply<T: Node>(self, nodes: &mut Slab<T>) {
        if let Some((n, side, to)) = self.0
            && let Some(l) = nodes.get_mut(n).and_then(|n| n.link().as_mut())
        {
            match side {
                Side::Prev => l.prev = to,
                Side::Next => l.next = to,
            }
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WaitList {
    head: Option<Id>,
    tail: Option<Id>,
}

impl WaitList {
    pub const fn new() -> Self {
        Self { head: None, tail: None }
    }

    #[inline(always)]
    pub fn is_empty(&self) -> bool {
        self.head.is_none()
    }

    /// The object that waited longest.
    #[inline(always)]
    pub fn front(&self) -> Option<Id> {
        self.head
    }

    /// Queues `id` last.
    #[inline(always)]
    pub fn push_back<T: Node>(&mut self, nodes: &mut Slab<T>, id: Id) -> Result<(), ListError> {
        let n = nodes.get_mut(id).ok_or(ListError::Gone)?;
        self.push_back_held(id, n)?.apply(nodes);
        Ok(())
    }

    /// [`push_back`](Self::push_back) of `id` whose object the caller holds
    /// already (`node`, which must be `id`'s: the IPC fast path has it
    /// borrowed): links it, and returns what is left to do on its new
    /// neighbour once the caller lets go of it.
    #[inline(always)]
    pub fn push_back_held<T: Node>(&mut self, id: Id, node: &mut T) -> Result<Fixup, ListError> {
        let link = node.link();
        if link.is_some() {
            return Err(ListError::Linked);
        }
        let tail = self.tail.replace(id);
        *link = Some(Link { prev: tail, next: None });
        match tail {
            Some(t) => Ok(Fixup(Some((t, Side::Next, Some(id))))),
            None => {
                self.head = Some(id);
                Ok(Fixup(None))
            }
        }
    }

    /// Takes the object that waited longest out of the list.
    #[inline(always)]
    pub fn pop_front<T: Node>(&mut self, nodes: &mut Slab<T>) -> Option<Id> {
        let h = self.head?;
        match nodes.get_mut(h) {
            Some(n) => self.pop_front_held(h, n).apply(nodes),
            // Only if the owner freed a linked object: then the list ends
            // here rather than following a link nobody holds.
            None => *self = Self::new(),
        }
        Some(h)
    }

    /// [`pop_front`](Self::pop_front) when the caller holds the head's
    /// object already (`head` is `id`'s, and `id` the list's `front`):
    /// unlinks it, and returns what is left to do on the new head. Changes
    /// nothing if `id` is not the head.
    #[inline(always)]
    pub fn pop_front_held<T: Node>(&mut self, id: Id, head: &mut T) -> Fixup {
        if self.head != Some(id) {
            return Fixup(None);
        }
        let next = head.link().take().and_then(|l| l.next);
        self.head = next;
        match next {
            Some(n) => Fixup(Some((n, Side::Prev, None))),
            None => {
                self.tail = None;
                Fixup(None)
            }
        }
    }

    /// Takes `id` out of this list, wherever it is. Refused, changing
    /// nothing, if `id` is in no list or (seen from its ends) in another.
    pub fn remove<T: Node>(&mut self, nodes: &mut Slab<T>, id: Id) -> Result<(), ListError> {
        let n = nodes.get_mut(id).ok_or(ListError::Gone)?;
        let Some(Link { prev, next }) = *n.link() else { return Err(ListError::NotHere) };
        // An object at an end of its list must be at that end of this one;
        // one in the middle has both neighbours in the same list as itself.
        if (prev.is_none() && self.head != Some(id)) || (next.is_none() && self.tail != Some(id)) {
            return Err(ListError::NotHere);
        }
        *n.link() = None;
        match prev {
            Some(p) => {
                if let Some(l) = nodes.get_mut(p).and_then(|p| p.link().as_mut()) {
                    l.next = next;
                }
            }
            None => self.head = next,
        }
        match next {
            Some(x) => {
                if let Some(l) = nodes.get_mut(x).and_then(|x| x.link().as_mut()) {
                    l.prev = prev;
                }
            }
            None => self.tail = prev,
        }
        Ok(())
    }

    /// Whether `id` is in this list (a walk: for checks and tests).
    pub fn contains<T: Node>(&self, nodes: &mut Slab<T>, id: Id) -> bool {
        let mut at = self.head;
        while let Some(x) = at {
            if x == id {
                return true;
            }
            at = nodes.get_mut(x).and_then(|n| *n.link()).and_then(|l| l.next);
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    struct T {
        link: Option<Link>,
    }

    impl Node for T {
        fn link(&mut self) -> &mut Option<Link> {
            &mut self.link
        }
    }

    fn slab(n: usize) -> (Slab<T>, Vec<Id>) {
        let mut s = Slab::new();
        let ids = (0..n).map(|_| s.insert(T { link: None })).collect();
        (s, ids)
    }

    /// Walks the list both ways and checks each link against its neighbours.
    fn items(l: &WaitList, s: &mut Slab<T>) -> Vec<Id> {
        let mut out = Vec::new();
        let mut prev = None;
        let mut at = l.head;
        while let Some(x) = at {
            let link = s.get_mut(x).expect("live").link.expect("linked");
            assert_eq!(link.prev, prev, "prev of {x:?}");
            out.push(x);
            assert!(out.len() <= s.len(), "a cycle");
            prev = Some(x);
            at = link.next;
        }
        assert_eq!(l.tail, prev, "tail");
        out
    }

    #[test]
    fn fifo_order_and_links_cleared() {
        let (mut s, ids) = slab(4);
        let mut l = WaitList::new();
        assert!(l.is_empty());
        assert_eq!(l.pop_front(&mut s), None);
        for &i in &ids[..3] {
            l.push_back(&mut s, i).unwrap();
        }
        assert_eq!(items(&l, &mut s), ids[..3]);
        assert_eq!(l.front(), Some(ids[0]));
        assert_eq!(l.pop_front(&mut s), Some(ids[0]));
        assert_eq!(s.get_mut(ids[0]).unwrap().link, None, "popped: unlinked");
        assert_eq!(items(&l, &mut s), ids[1..3]);
        l.push_back(&mut s, ids[0]).unwrap();
        assert_eq!(items(&l, &mut s), [ids[1], ids[2], ids[0]]);
        while l.pop_front(&mut s).is_some() {}
        assert!(l.is_empty());
        assert_eq!(items(&l, &mut s), []);
        assert!(ids.iter().all(|&i| s.get_mut(i).unwrap().link.is_none()));
    }

    #[test]
    fn remove_from_any_place() {
        for victim in 0..4 {
            let (mut s, ids) = slab(4);
            let mut l = WaitList::new();
            for &i in &ids {
                l.push_back(&mut s, i).unwrap();
            }
            l.remove(&mut s, ids[victim]).unwrap();
            let mut want = ids.clone();
            want.remove(victim);
            assert_eq!(items(&l, &mut s), want, "removing #{victim}");
            assert_eq!(s.get_mut(ids[victim]).unwrap().link, None);
            assert_eq!(l.remove(&mut s, ids[victim]), Err(ListError::NotHere), "twice");
            assert_eq!(items(&l, &mut s), want);
            assert!(!l.contains(&mut s, ids[victim]));
        }
        let (mut s, ids) = slab(1);
        let mut l = WaitList::new();
        l.push_back(&mut s, ids[0]).unwrap();
        l.remove(&mut s, ids[0]).unwrap();
        assert_eq!(l, WaitList::new(), "the only one: empty again");
    }

    #[test]
    fn abuse_is_refused_and_changes_nothing() {
        let (mut s, ids) = slab(6);
        let (mut a, mut b) = (WaitList::new(), WaitList::new());
        for &i in &ids[..3] {
            a.push_back(&mut s, i).unwrap();
        }
        for &i in &ids[3..5] {
            b.push_back(&mut s, i).unwrap();
        }
        // Queued twice, in the same list or another.
        assert_eq!(a.push_back(&mut s, ids[1]), Err(ListError::Linked));
        assert_eq!(b.push_back(&mut s, ids[0]), Err(ListError::Linked));
        // Removed through the wrong list: each end of a refused.
        assert_eq!(b.remove(&mut s, ids[0]), Err(ListError::NotHere));
        assert_eq!(b.remove(&mut s, ids[2]), Err(ListError::NotHere));
        // Never queued.
        assert_eq!(a.remove(&mut s, ids[5]), Err(ListError::NotHere));
        // A dead object, and a stale id whose slot is reused.
        s.remove(ids[5]);
        assert_eq!(a.push_back(&mut s, ids[5]), Err(ListError::Gone));
        assert_eq!(a.remove(&mut s, ids[5]), Err(ListError::Gone));
        let reused = s.insert(T { link: None });
        assert_eq!(reused.index, ids[5].index);
        assert_eq!(a.remove(&mut s, ids[5]), Err(ListError::Gone));
        assert_eq!(items(&a, &mut s), ids[..3]);
        assert_eq!(items(&b, &mut s), ids[3..5]);
        // The middle of another list is taken out of *that* list correctly
        // (its neighbours are linked there), leaving both consistent.
        assert_eq!(b.remove(&mut s, ids[1]), Ok(()));
        assert_eq!(items(&a, &mut s), [ids[0], ids[2]]);
        assert_eq!(items(&b, &mut s), ids[3..5]);
        assert!(a.contains(&mut s, ids[2]) && !b.contains(&mut s, ids[2]));
    }

    #[test]
    fn held_variants_match_the_plain_ones() {
        let (mut s, ids) = slab(3);
        let mut l = WaitList::new();
        for &i in &ids {
            let fix = l.push_back_held(i, s.get_mut(i).unwrap()).unwrap();
            fix.apply(&mut s);
        }
        assert_eq!(items(&l, &mut s), ids);
        // Not the head: refused, nothing changes.
        let fix = l.pop_front_held(ids[1], s.get_mut(ids[1]).unwrap());
        fix.apply(&mut s);
        assert_eq!(items(&l, &mut s), ids);
        assert_eq!(l.push_back_held(ids[1], s.get_mut(ids[1]).unwrap()).err(), Some(ListError::Linked));
        for k in 0..3 {
            let fix = l.pop_front_held(ids[k], s.get_mut(ids[k]).unwrap());
            fix.apply(&mut s);
            assert_eq!(items(&l, &mut s), ids[k + 1..]);
            assert_eq!(s.get_mut(ids[k]).unwrap().link, None);
        }
        assert_eq!(l, WaitList::new());
    }

    #[test]
    fn many_mixed_operations_match_a_model() {
        // A small deterministic generator; the model is a Vec.
        let (mut s, ids) = slab(16);
        let mut l = WaitList::new();
        let mut model: Vec<Id> = Vec::new();
        let mut x: u32 = 0x1234_5678;
        for _ in 0..5000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let id = ids[(x >> 8) as usize % ids.len()];
            match x % 5 {
                0 | 3 => {
                    let r = if x.is_multiple_of(5) {
                        l.push_back(&mut s, id)
                    } else {
                        l.push_back_held(id, s.get_mut(id).unwrap()).map(|f| f.apply(&mut s))
                    };
                    if model.contains(&id) {
                        assert_eq!(r, Err(ListError::Linked));
                    } else {
                        r.unwrap();
                        model.push(id);
                    }
                }
                1 => {
                    let want = (!model.is_empty()).then(|| model.remove(0));
                    assert_eq!(l.pop_front(&mut s), want);
                }
                4 => {
                    // Popping `id` held: only if it is the head.
                    if model.first() == Some(&id) {
                        model.remove(0);
                    }
                    let fix = l.pop_front_held(id, s.get_mut(id).unwrap());
                    fix.apply(&mut s);
                }
                _ => {
                    let r = l.remove(&mut s, id);
                    match model.iter().position(|&m| m == id) {
                        Some(p) => {
                            r.unwrap();
                            model.remove(p);
                        }
                        None => assert_eq!(r, Err(ListError::NotHere)),
                    }
                }
            }
            assert_eq!(items(&l, &mut s), model);
        }
    }
}
