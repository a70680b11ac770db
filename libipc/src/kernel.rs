//! Interfaces over kernel endpoints, on Alcove only: [`KernelTransport`] for
//! clients and [`serve`] for servers. The framing is [`crate::wire`]'s:
//! interface id in the label, length word then bytes, words 0..3 in
//! registers and the rest in the IPC buffer.
//!
//! Messages of up to four words (20 bytes of payload) need no IPC buffer;
//! longer ones need the buffer registered with [`sys::set_ipc_buffer`] and
//! fail with `Kernel(BadState)` (client) or `ReplyTooLong` (server) without it.
//!
//! Capabilities: a handler attaches them to its reply with
//! [`crate::reply_caps::attach`] and [`serve`] sends them; a client that
//! expects some calls through a [`CapTransport`], which names the empty
//! slots where they land and reports how many arrived. The other way, a
//! [`CapTransport`] [`sending`](CapTransport::sending) capabilities puts them
//! in the request, and a server takes one with [`crate::request_caps`].

use alloc::vec::Vec;
use core::cell::Cell;
use core::convert::Infallible;

use abi::{CapSlot, Error, FOREVER, MSG_MAX_CAPS, MSG_REG_WORDS, MsgInfo};

use crate::cap::{Cap, Endpoint};
use crate::sys;
use crate::wire::{self, Message};
use crate::{Dispatch, IpcError, RemoteError, Transport};

/// Calls an interface through an endpoint capability (needs `Rights::SEND`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelTransport {
    /// The endpoint the server receives on.
    pub endpoint: Cap<Endpoint>,
}

impl KernelTransport {
    /// A transport calling through `endpoint`.
    pub const fn new(endpoint: Cap<Endpoint>) -> Self {
        Self { endpoint }
    }
}

impl Transport for KernelTransport {
    fn call(&self, interface: u32, request: &[u8]) -> Result<Vec<u8>, IpcError> {
        let (words, regs) = load(request)?;
        let info = MsgInfo::new(interface, words, 0);
        let reply = sys::call(self.endpoint.slot(), info, regs)?;
        read(&reply, |words| wire::reply_bytes(reply.info.label, words))?
    }
}

/// A [`KernelTransport`] that also receives capabilities from replies: the
/// kernel copies the ones a server attached (see [`crate::reply_caps`]) into
/// `slots`, which must be empty, in order. After each call,
/// [`CapTransport::received`] says how many arrived (0 for a reply without
/// any, or one that failed). Put it behind a typed client as any transport:
///
/// ```ignore
/// let t = CapTransport::new(endpoint, &[ring_slot]);
/// let opened = storage::Client::new(&t).open(0)?;
/// assert_eq!(t.received(), 1); // ring_slot now holds the ring's frame
/// ```
#[derive(Debug)]
pub struct CapTransport {
    endpoint: Cap<Endpoint>,
    slots: [u64; MSG_MAX_CAPS],
    send: [u64; MSG_MAX_CAPS],
    send_count: u8,
    received: Cell<usize>,
}

impl CapTransport {
    /// Calls through `endpoint`; capabilities in replies go to `slots` (at
    /// most [`MSG_MAX_CAPS`]; extra slots are ignored).
    pub fn new(endpoint: Cap<Endpoint>, slots: &[CapSlot]) -> Self {
        let mut s = [NO_SLOT; MSG_MAX_CAPS];
        for (d, &slot) in s.iter_mut().zip(slots) {
            *d = u64::from(slot);
        }
        Self { endpoint, slots: s, send: [NO_SLOT; MSG_MAX_CAPS], send_count: 0, received: Cell::new(0) }
    }

    /// Also sends copies of the capabilities in `slots` with each request
    /// (at most [`MSG_MAX_CAPS`]; the endpoint capability needs
    /// `Rights::GRANT`), e.g. the caller's own process capability for
    /// `storage.open`.
    pub fn sending(mut self, slots: &[CapSlot]) -> Self {
        let n = slots.len().min(MSG_MAX_CAPS);
        for (d, &slot) in self.send.iter_mut().zip(&slots[..n]) {
            *d = u64::from(slot);
        }
        // At most MSG_MAX_CAPS (4).
        self.send_count = n as u8;
        self
    }

    /// How many capabilities the last reply brought (into the first slots given).
    pub fn received(&self) -> usize {
        self.received.get()
    }
}

impl Transport for CapTransport {
    fn call(&self, interface: u32, request: &[u8]) -> Result<Vec<u8>, IpcError> {
        self.received.set(0);
        let (words, regs) = load(request)?;
        sys::with_ipc_buffer(|b| {
            b.recv_slots = self.slots;
            b.send_caps = self.send;
        })?;
        let info = MsgInfo::new(interface, words, self.send_count);
        let reply = sys::call(self.endpoint.slot(), info, regs);
        // Disarm at once, so a later call that expects nothing gets nothing.
        let arrived = sys::with_ipc_buffer(|b| {
            b.recv_slots = [NO_SLOT; MSG_MAX_CAPS];
            core::mem::take(&mut b.recv_caps)
        })?;
        let reply = reply?;
        self.received.set(usize::from(reply.info.caps).min(arrived as usize));
        read(&reply, |words| wire::reply_bytes(reply.info.label, words))?
    }
}

/// A `recv_slots` entry naming no slot: the kernel skips it.
pub const NO_SLOT: u64 = u64::MAX;

/// Packs `bytes` into a message: the word count and the register words (the
/// rest written to the IPC buffer).
fn load(bytes: &[u8]) -> Result<(u16, [u64; MSG_REG_WORDS]), IpcError> {
    let mut regs = [0; MSG_REG_WORDS];
    let words = if wire::words_for(bytes.len()) <= MSG_REG_WORDS {
        wire::pack(bytes, &mut regs)?
    } else {
        sys::with_ipc_buffer(|buffer| {
            let words = wire::pack(bytes, &mut buffer.words)?;
            regs.copy_from_slice(&buffer.words[..MSG_REG_WORDS]);
            Ok::<_, IpcError>(words)
        })??
    };
    // `pack` bounds `words` by `abi::MSG_MAX_WORDS`, which fits the header.
    Ok((words as u16, regs))
}

/// Runs `f` on the words of a received message, gathered from registers and,
/// beyond four words, the IPC buffer.
fn read<R>(message: &Message, f: impl FnOnce(&[u64]) -> R) -> Result<R, Error> {
    let words = usize::from(message.info.words);
    if words <= MSG_REG_WORDS {
        Ok(f(&message.words[..words]))
    } else {
        sys::with_ipc_buffer(|buffer| {
            buffer.words[..MSG_REG_WORDS].copy_from_slice(&message.words);
            f(&buffer.words[..words])
        })
    }
}

/// The server loop: receives on `endpoint`, dispatches, replies and receives
/// again, for ever. Capabilities the handler attached
/// ([`crate::reply_caps::attach`]) go with a successful reply and are dropped
/// with an error reply. A malformed message, an unknown interface or a failing
/// handler gets an error reply, a caller that vanished before its reply is
/// skipped; a bound notification is handed to [`Dispatch::notified`]. Returns
/// only when receiving on `endpoint` itself fails (wrong or deleted
/// capability: the process's wiring is broken).
pub fn serve<D: Dispatch + ?Sized>(endpoint: Cap<Endpoint>, server: &mut D) -> Result<Infallible, Error> {
    // Names the slot the server offers for a request's capability
    // (`crate::request_caps`) before each receive.
    let arm = || {
        let _ = sys::with_ipc_buffer(|b| {
            b.recv_caps = 0;
            b.recv_slots = crate::request_caps::recv_slots();
        });
    };
    arm();
    let mut message = sys::recv(endpoint.slot(), FOREVER)?;
    loop {
        if message.info.label == MsgInfo::NOTIFICATION_LABEL {
            server.notified(message.words[0]);
            arm();
            message = next_between_steps(endpoint, server, arm)?;
            continue;
        }
        let brought = sys::with_ipc_buffer(|b| core::mem::take(&mut b.recv_caps)).unwrap_or(0);
        crate::request_caps::received(if message.info.caps > 0 { brought } else { 0 });
        // The IPC buffer is released while the handler runs, so that the
        // handler can make calls of its own.
        let request = read(&message, wire::request_bytes).unwrap_or(Err(RemoteError::BadMessage));
        crate::reply_caps::discard();
        let result = request.and_then(|bytes| server.dispatch_from(message.badge, message.info.label, &bytes));
        crate::request_caps::finish();
        let (mut info, regs) = reply_message(&result);
        let (caps, count) = crate::reply_caps::take();
        if count > 0 && info.label == wire::REPLY_OK {
            let put = sys::with_ipc_buffer(|b| {
                for (d, s) in b.send_caps.iter_mut().zip(caps).take(count) {
                    *d = u64::from(s);
                }
            });
            if put.is_ok() {
                // `count` is at most MSG_MAX_CAPS (4), which fits the header.
                info = MsgInfo::new(info.label, info.words, count as u8);
            }
        }
        arm();
        message = match sys::reply_recv(endpoint.slot(), info, regs) {
            Ok(next) => next,
            // The reply could not be delivered (the caller died): receive anew.
            Err(_) => sys::recv(endpoint.slot(), FOREVER)?,
        };
    }
}

/// The next message after a notification: while the server has work of
/// its own ([`Dispatch::background`]), the endpoint is looked at (waiting
/// the pause the last step asked for) before each step of it, so a waiting
/// request is served first; then it blocks.
fn next_between_steps<D: Dispatch + ?Sized>(
    endpoint: Cap<Endpoint>,
    server: &mut D,
    arm: impl Fn(),
) -> Result<Message, Error> {
    let mut pause = 0;
    loop {
        match sys::recv(endpoint.slot(), pause) {
            Err(Error::WouldBlock | Error::Timeout) => {}
            received => return received,
        }
        let next = server.background();
        arm();
        match next {
            Some(p) => pause = p,
            None => return sys::recv(endpoint.slot(), FOREVER),
        }
    }
}

/// The reply message for a dispatch result.
fn reply_message(result: &Result<Vec<u8>, RemoteError>) -> (MsgInfo, [u64; MSG_REG_WORDS]) {
    let reply = match result {
        Ok(bytes) => load(bytes).map_err(|_| RemoteError::ReplyTooLong),
        Err(e) => Err(*e),
    };
    match reply {
        Ok((words, regs)) => (MsgInfo::new(wire::REPLY_OK, words, 0), regs),
        Err(e) => (MsgInfo::new(e.code(), 0, 0), [0; MSG_REG_WORDS]),
    }
}
