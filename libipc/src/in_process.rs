//! Interfaces inside one process: the transport for host tests and
//! appliance builds, where a server library runs on a thread of the same
//! process instead of as its own process on Alcove.
//!
//! [`channel`] gives a [`ClientEnd`] (a [`Transport`]; clone it for more
//! clients) and a [`ServerEnd`] that answers through [`Dispatch`]. Requests
//! travel on a bounded crossbeam `ArrayQueue`; each client end has its own
//! reply queue, and replies are matched to requests by sequence number. Waits
//! spin (`core::hint::spin_loop`), or yield to the OS with the `std` feature.
//!
//! Capabilities do not exist here: what a handler attaches to its reply
//! ([`crate::reply_caps`]) is discarded, and the reply goes out without it.
//!
//! The same limits as on the kernel transport apply (requests and replies of
//! at most [`MAX_PAYLOAD_BYTES`]), so what works here fits in a message there.
//! [`Loopback`] is the threadless variant: the call runs the server directly.

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::cell::{Cell, RefCell};
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crossbeam_queue::ArrayQueue;

use crate::wire::MAX_PAYLOAD_BYTES;
use crate::{Dispatch, IpcError, RemoteError, Transport};

/// A request in flight.
struct Request {
    seq: u64,
    /// The sending end's badge.
    badge: u64,
    interface: u32,
    bytes: Vec<u8>,
    reply_to: Arc<ArrayQueue<Reply>>,
}

/// A reply in flight.
struct Reply {
    seq: u64,
    result: Result<Vec<u8>, RemoteError>,
}

/// What both ends share.
struct Shared {
    requests: ArrayQueue<Request>,
    /// Client ends alive.
    clients: AtomicUsize,
    server_alive: AtomicBool,
}

/// A connected pair; the request queue holds up to `capacity` requests
/// (at least 1).
pub fn channel(capacity: usize) -> (ClientEnd, ServerEnd) {
    let shared = Arc::new(Shared {
        requests: ArrayQueue::new(capacity.max(1)),
        clients: AtomicUsize::new(1),
        server_alive: AtomicBool::new(true),
    });
    (ClientEnd::attach(shared.clone(), 0), ServerEnd { shared })
}

/// Waits a moment in a busy loop.
fn relax() {
    #[cfg(feature = "std")]
    std::thread::yield_now();
    #[cfg(not(feature = "std"))]
    core::hint::spin_loop();
}

/// The calling end. One call at a time per end (it is `Send` but not `Sync`):
/// clone it for each thread that calls. Its requests carry a badge (0 from
/// [`channel`], as an unbadged capability; [`ClientEnd::badged`] for
/// another), which the server sees in [`Dispatch::dispatch_from`], as a
/// kernel endpoint's badge.
pub struct ClientEnd {
    shared: Arc<Shared>,
    replies: Arc<ArrayQueue<Reply>>,
    next_seq: Cell<u64>,
    badge: u64,
}

impl ClientEnd {
    fn attach(shared: Arc<Shared>, badge: u64) -> Self {
        // One call is in flight at a time, so one reply slot is enough.
        Self { shared, replies: Arc::new(ArrayQueue::new(1)), next_seq: Cell::new(0), badge }
    }

    /// Another client of the same server whose requests carry `badge` (as
    /// a capability minted with that badge).
    pub fn badged(&self, badge: u64) -> Self {
        self.shared.clients.fetch_add(1, Ordering::AcqRel);
        Self::attach(self.shared.clone(), badge)
    }

    fn server_alive(&self) -> bool {
        self.shared.server_alive.load(Ordering::Acquire)
    }
}

impl Clone for ClientEnd {
    /// Another client of the same server, with its own reply queue (and
    /// the same badge).
    fn clone(&self) -> Self {
        self.badged(self.badge)
    }
}

impl Drop for ClientEnd {
    fn drop(&mut self) {
        self.shared.clients.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Transport for ClientEnd {
    fn call(&self, interface: u32, request: &[u8]) -> Result<Vec<u8>, IpcError> {
        if request.len() > MAX_PAYLOAD_BYTES {
            return Err(IpcError::MessageTooLong);
        }
        let seq = self.next_seq.get();
        self.next_seq.set(seq.wrapping_add(1));
        let mut pending =
            Request { seq, badge: self.badge, interface, bytes: request.to_vec(), reply_to: self.replies.clone() };
        loop {
            if !self.server_alive() {
                return Err(IpcError::Closed);
            }
            match self.shared.requests.push(pending) {
                Ok(()) => break,
                Err(back) => pending = back,
            }
            relax();
        }
        loop {
            if let Some(reply) = self.replies.pop() {
                if reply.seq == seq {
                    return reply.result.map_err(IpcError::from);
                }
                // A stale reply to an earlier call: not ours, drop it.
                continue;
            }
            if !self.server_alive() {
                // The server may have replied just before it went away.
                return match self.replies.pop() {
                    Some(reply) if reply.seq == seq => reply.result.map_err(IpcError::from),
                    _ => Err(IpcError::Closed),
                };
            }
            relax();
        }
    }
}

/// The answering end. Dropping it makes pending and later calls fail with
/// [`IpcError::Closed`].
pub struct ServerEnd {
    shared: Arc<Shared>,
}

impl ServerEnd {
    /// Answers one waiting request, if there is one; returns whether it did.
    pub fn serve_one<D: Dispatch + ?Sized>(&mut self, server: &mut D) -> bool {
        let Some(request) = self.shared.requests.pop() else {
            return false;
        };
        let result = match server.dispatch_from(request.badge, request.interface, &request.bytes) {
            Ok(bytes) if bytes.len() > MAX_PAYLOAD_BYTES => Err(RemoteError::ReplyTooLong),
            other => other,
        };
        crate::reply_caps::discard();
        // The client waits for exactly this reply, so its slot is free; should
        // a stale reply sit there, it is displaced.
        request.reply_to.force_push(Reply { seq: request.seq, result });
        true
    }

    /// Whether every client end is gone and no request waits.
    pub fn is_closed(&self) -> bool {
        self.shared.clients.load(Ordering::Acquire) == 0 && self.shared.requests.is_empty()
    }

    /// Answers requests until every client end is gone; returns how many.
    #[cfg(feature = "std")]
    pub fn serve_until_closed<D: Dispatch + ?Sized>(&mut self, server: &mut D) -> u64 {
        let mut served = 0;
        loop {
            if self.serve_one(server) {
                served += 1;
            } else if self.is_closed() {
                return served;
            } else if server.background().is_none() {
                relax();
            }
        }
    }
}

impl Drop for ServerEnd {
    fn drop(&mut self) {
        self.shared.server_alive.store(false, Ordering::Release);
    }
}

/// A transport that runs the server in the caller's thread: no queues, same
/// size limits. A call made from inside the server's own handler (re-entry)
/// fails with [`IpcError::Closed`].
pub struct Loopback<D: Dispatch> {
    server: RefCell<D>,
}

impl<D: Dispatch> Loopback<D> {
    /// Wraps `server`.
    pub const fn new(server: D) -> Self {
        Self { server: RefCell::new(server) }
    }

    /// Gives the server back.
    pub fn into_inner(self) -> D {
        self.server.into_inner()
    }
}

impl<D: Dispatch> Transport for Loopback<D> {
    fn call(&self, interface: u32, request: &[u8]) -> Result<Vec<u8>, IpcError> {
        if request.len() > MAX_PAYLOAD_BYTES {
            return Err(IpcError::MessageTooLong);
        }
        let mut server = self.server.try_borrow_mut().map_err(|_| IpcError::Closed)?;
        let result = server.dispatch(interface, request);
        crate::reply_caps::discard();
        match result {
            Ok(bytes) if bytes.len() > MAX_PAYLOAD_BYTES => Err(IpcError::ServerError(RemoteError::ReplyTooLong)),
            other => other.map_err(IpcError::from),
        }
    }
}
