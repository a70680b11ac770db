//! Capabilities a request brings to a server (on Alcove only): the mirror
//! of [`crate::reply_caps`].
//!
//! A server that accepts one capability with a request (storaged takes the
//! caller's process capability with `storage.open`, to watch it) offers an
//! empty slot with [`offer`]; the serve loop ([`crate::kernel::serve`])
//! names it in the IPC buffer's `recv_slots` before each receive, so a
//! caller's capability lands there. The handler [`take`]s it (and offers
//! another slot for later requests); one it leaves is deleted once the
//! request is answered, so a caller cannot fill the server's table and
//! the offered slot is empty again for the next request. Servers are
//! single-threaded (see [`crate::sys`]): one process-wide state.

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use abi::CapSlot;

use crate::kernel::NO_SLOT;
use crate::sys;

static OFFERED: AtomicU64 = AtomicU64::new(NO_SLOT);
static ARRIVED: AtomicBool = AtomicBool::new(false);

/// Offers the empty slot `slot` for a capability the next request may bring.
pub fn offer(slot: CapSlot) {
    OFFERED.store(u64::from(slot), Ordering::Relaxed);
    ARRIVED.store(false, Ordering::Relaxed);
}

/// The capability the request being handled brought: its slot, now the
/// handler's (nothing more is offered until the next [`offer`]).
pub fn take() -> Option<CapSlot> {
    if !ARRIVED.swap(false, Ordering::Relaxed) {
        return None;
    }
    let slot = OFFERED.swap(NO_SLOT, Ordering::Relaxed);
    CapSlot::try_from(slot).ok()
}

/// The `recv_slots` the serve loop names before receiving.
pub(crate) fn recv_slots() -> [u64; abi::MSG_MAX_CAPS] {
    let mut s = [NO_SLOT; abi::MSG_MAX_CAPS];
    s[0] = OFFERED.load(Ordering::Relaxed);
    s
}

/// The serve loop received a message that brought `count` capabilities.
pub(crate) fn received(count: u64) {
    let offered = OFFERED.load(Ordering::Relaxed) != NO_SLOT;
    ARRIVED.store(offered && count > 0, Ordering::Relaxed);
}

/// The request is answered: a capability the handler did not take goes.
pub(crate) fn finish() {
    if ARRIVED.swap(false, Ordering::Relaxed)
        && let Ok(slot) = CapSlot::try_from(OFFERED.load(Ordering::Relaxed))
    {
        let _ = sys::cap_delete(slot);
    }
}
