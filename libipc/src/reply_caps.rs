//! Capabilities a server attaches to the reply it is about to send.
//!
//! `interface!` handlers return plain values; a handler that hands out a
//! capability (storaged's `open` gives the caller its ring frame) calls
//! [`attach`] before returning, and the serve loop that sends the reply
//! ([`crate::kernel::serve`]) takes the set with [`take`] and puts the slots
//! in the IPC buffer's `send_caps`. The kernel copies them, with the rights
//! the server holds, into the empty slots the caller named
//! ([`crate::kernel::CapTransport`]); a caller that named none gets none.
//!
//! The set is process-wide: servers are single-threaded (see [`crate::sys`]).
//! It is emptied after every request, so caps attached by a handler that
//! then fails (the reply is an error) are never sent. The in-process
//! transport has no capabilities: it discards the set after each request, so
//! a server library runs unchanged in host tests, minus the transfer.

use core::cell::Cell;

use abi::{CapSlot, MSG_MAX_CAPS};

use crate::cap::{Cap, CapType};

/// The attached slots and how many; `Copy`, so it lives in a `Cell`.
#[derive(Clone, Copy, Default)]
struct Set {
    slots: [CapSlot; MSG_MAX_CAPS],
    count: usize,
}

// On Alcove one static (one IPC thread per process). On the host, where
// in-process servers and parallel tests share a process, one set per thread:
// the handler and the loop that replies run on the same thread.
#[cfg(not(any(test, feature = "std")))]
mod store {
    use super::{Cell, Set};
    use abi::MSG_MAX_CAPS;
    use core::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

    static SLOTS: [AtomicU32; MSG_MAX_CAPS] = [const { AtomicU32::new(0) }; MSG_MAX_CAPS];
    static COUNT: AtomicUsize = AtomicUsize::new(0);

    /// Runs `f` on a copy of the set and stores it back (one IPC thread per
    /// process, so nothing changes it in between).
    pub fn with<R>(f: impl FnOnce(&Cell<Set>) -> R) -> R {
        let mut s = Set { count: COUNT.load(Ordering::Acquire).min(MSG_MAX_CAPS), ..Set::default() };
        for (d, a) in s.slots.iter_mut().zip(&SLOTS) {
            *d = a.load(Ordering::Relaxed);
        }
        let cell = Cell::new(s);
        let r = f(&cell);
        let s = cell.get();
        for (a, d) in SLOTS.iter().zip(s.slots) {
            a.store(d, Ordering::Relaxed);
        }
        COUNT.store(s.count, Ordering::Release);
        r
    }
}

#[cfg(any(test, feature = "std"))]
mod store {
    use super::{Cell, Set};

    std::thread_local! {
        static SET: Cell<Set> = Cell::new(Set::default());
    }

    pub fn with<R>(f: impl FnOnce(&Cell<Set>) -> R) -> R {
        SET.with(f)
    }
}

/// Why [`attach`] refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TooManyCaps;

impl core::fmt::Display for TooManyCaps {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "a reply carries at most {MSG_MAX_CAPS} capabilities")
    }
}

impl core::error::Error for TooManyCaps {}

/// Attaches `cap` to the reply of the request being handled (at most
/// [`MSG_MAX_CAPS`]); the caller receives a copy, the server keeps its own.
pub fn attach<T: CapType>(cap: Cap<T>) -> Result<(), TooManyCaps> {
    store::with(|cell| {
        let mut s = cell.get();
        if s.count >= MSG_MAX_CAPS {
            return Err(TooManyCaps);
        }
        s.slots[s.count] = cap.slot();
        s.count += 1;
        cell.set(s);
        Ok(())
    })
}

/// Takes the attached set, leaving it empty: the slots and how many.
pub fn take() -> ([CapSlot; MSG_MAX_CAPS], usize) {
    let s = store::with(|cell| cell.replace(Set::default()));
    (s.slots, s.count)
}

/// Drops the attached set (a transport without capabilities, or an error reply).
pub fn discard() {
    store::with(|cell| cell.set(Set::default()));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cap::Frame;

    #[test]
    fn attach_take_and_overflow() {
        discard();
        for slot in 10..14 {
            attach(Cap::<Frame>::from_slot(slot)).unwrap();
        }
        assert_eq!(attach(Cap::<Frame>::from_slot(99)), Err(TooManyCaps));
        assert_eq!(take(), ([10, 11, 12, 13], 4));
        assert_eq!(take().1, 0);
        attach(Cap::<Frame>::from_slot(7)).unwrap();
        discard();
        assert_eq!(take().1, 0);
    }
}
