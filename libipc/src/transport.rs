//! The two sides every interface is written against: a client stub calls
//! through a [`Transport`], a server answers through [`Dispatch`]. Which
//! transport carries the bytes (kernel endpoints, in-process queues) is
//! decided where the process is wired up, not in the server's logic.

use alloc::vec::Vec;

use crate::{IpcError, RemoteError};

/// Carries one request to a server and brings back its reply.
///
/// `interface` is the interface id ([`crate::interface!`]'s `= N`), `request`
/// the encoded request; the result is the encoded reply, or why there is
/// none. Errors the server reports come back as [`IpcError::WrongInterface`]
/// or [`IpcError::ServerError`].
pub trait Transport {
    /// Sends `request` on `interface` and waits for the reply.
    fn call(&self, interface: u32, request: &[u8]) -> Result<Vec<u8>, IpcError>;
}

impl<T: Transport + ?Sized> Transport for &T {
    fn call(&self, interface: u32, request: &[u8]) -> Result<Vec<u8>, IpcError> {
        (**self).call(interface, request)
    }
}

/// A server: answers the encoded requests of the interfaces it implements.
///
/// Implemented with [`crate::impl_dispatch!`] for a type that implements
/// the server traits, or by hand (calling each interface's
/// `dispatch` function) when the server also wants [`Dispatch::notified`].
pub trait Dispatch {
    /// Answers one request: the encoded reply, or the error to send back.
    /// Must not panic on any `request` bytes.
    fn dispatch(&mut self, interface: u32, request: &[u8]) -> Result<Vec<u8>, RemoteError>;

    /// Answers one request from the caller whose capability carried `badge`
    /// (0: unbadged; init badges each server's endpoints with the caller's
    /// identity, so a badge names one client). The transports call this;
    /// a server that tells its clients apart (storaged: whose ring a handle
    /// is) overrides it, the others answer through [`Dispatch::dispatch`].
    fn dispatch_from(&mut self, badge: u64, interface: u32, request: &[u8]) -> Result<Vec<u8>, RemoteError> {
        let _ = badge;
        self.dispatch(interface, request)
    }

    /// Called by the kernel serve loop when the thread's bound notification
    /// was signalled while it waited for requests (`bits`: the bits taken).
    fn notified(&mut self, bits: u64) {
        let _ = bits;
    }

    /// Runs one bounded step of the server's own work (storaged: a scrub)
    /// when no request waits. `Some(pause)` while more remains: the caller
    /// waits up to `pause` nanoseconds for a request (0: only looks) before
    /// the next step, so the work leaves the CPU to others that long; `None`
    /// when there is nothing (more) to do. The transports call it only when
    /// they found no request (the kernel serve loop: after a notification,
    /// looking at the endpoint between steps), so requests come first; a
    /// server with such work signals its bound notification after a request
    /// to be called again.
    fn background(&mut self) -> Option<u64> {
        None
    }

    /// init restarted server `server`, one this server calls
    /// (`lifecycle.restarted`, from init only: alcove-rt's `Managed`
    /// checks the badge): make again what this server had made there.
    fn peer_restarted(&mut self, server: &str) {
        let _ = server;
    }
}

impl<D: Dispatch + ?Sized> Dispatch for &mut D {
    fn dispatch(&mut self, interface: u32, request: &[u8]) -> Result<Vec<u8>, RemoteError> {
        (**self).dispatch(interface, request)
    }

    fn dispatch_from(&mut self, badge: u64, interface: u32, request: &[u8]) -> Result<Vec<u8>, RemoteError> {
        (**self).dispatch_from(badge, interface, request)
    }

    fn notified(&mut self, bits: u64) {
        (**self).notified(bits)
    }

    fn background(&mut self) -> Option<u64> {
        (**self).background()
    }

    fn peer_restarted(&mut self, server: &str) {
        (**self).peer_restarted(server)
    }
}
