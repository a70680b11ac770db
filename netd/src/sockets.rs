//! The `socket` interface ([`libipc::interfaces::socket`]) over the host
//! stack ([`crate::stack::HostStack`]): what other servers call to listen,
//! accept, connect, send, receive and close.
//!
//! Each client is told apart by the badge of its endpoint capability
//! ([`libipc::Dispatch::dispatch_from`]). A socket handle belongs to the
//! client that opened (or accepted) it: another client's handle, a closed
//! one and one never issued all get `NoSuchSocket`. Each client holds at
//! most [`PER_CLIENT_SOCKETS`] of the stack's sockets (a listener counts
//! its backlog, [`LISTEN_BACKLOG`]), so one client cannot take the stack's
//! [`MAX_SOCKETS`] from the others; [`SocketServer::client_gone`]
//! closes everything a client held when it ends. Bulk data goes through
//! the client's shared buffer (a region both map: on Alcove a frame the
//! client sends with `share_buffer`, which the process maps and hands in
//! with [`SocketServer::bring`]; embedded in one process a shared
//! allocation given with [`SocketServer::give_buffer`]); every offset and
//! length is checked against it. Buffers the server lets go of come back
//! through [`SocketServer::take_released`] for the process to unmap.
//!
//! The server drives the stack's frames through its [`Wire`] before and
//! after each request (on Alcove: the host VNIC's rings, see
//! [`crate::stack::RingPort`]).

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::vec;
use alloc::vec::Vec;
use core::net::Ipv4Addr;

use libipc::blkring::RingRegion;
use libipc::interfaces::{Datagram, SOCKET_INLINE_MAX, SocketError, SocketState, socket};
use libipc::RemoteError;

use crate::stack::{HostStack, LISTEN_BACKLOG, MAX_SOCKETS, SocketId, StackError, TCP_BUFFER_BYTES, TcpState};

/// Sockets one client may hold at once.
pub const PER_CLIENT_SOCKETS: usize = 16;

/// Moves the stack's frames to and from its switch port, and keeps time.
pub trait Wire {
    /// One round: frames out, frames in, a poll of the stack.
    fn pump(&mut self, stack: &mut HostStack);
}

struct Client<B> {
    sockets: BTreeSet<u32>,
    /// Which of `sockets` are listeners.
    listeners: BTreeSet<u32>,
    buffer: Option<B>,
}

impl<B> Default for Client<B> {
    fn default() -> Self {
        Self { sockets: BTreeSet::new(), listeners: BTreeSet::new(), buffer: None }
    }
}

impl<B> Client<B> {
    /// Its share used: a socket each, a listener its whole backlog.
    fn used(&self) -> usize {
        self.sockets.len() + self.listeners.len() * (LISTEN_BACKLOG - 1)
    }
}

/// The socket server; see the module's description.
pub struct SocketServer<B: RingRegion, W: Wire> {
    stack: HostStack,
    wire: W,
    clients: BTreeMap<u64, Client<B>>,
    caller: u64,
    /// What the request being answered brought for `share_buffer`.
    brought: Option<Result<B, SocketError>>,
    /// Buffers let go of (replaced, unclaimed), for their owner to free.
    released: Vec<B>,
}

fn stack_error(e: StackError) -> SocketError {
    match e {
        StackError::NoSocket(s) => SocketError::NoSuchSocket { socket: s.0 },
        StackError::TooManySockets { limit } => SocketError::StackFull { limit: limit as u32 },
        StackError::WrongKind(s) => SocketError::WrongKind { socket: s.0 },
        StackError::PortInUse(port) => SocketError::PortInUse { port },
        StackError::BadAddress => SocketError::BadAddress,
        StackError::NotConnected(s) => SocketError::NotConnected { socket: s.0 },
    }
}

impl<B: RingRegion, W: Wire> SocketServer<B, W> {
    /// Serves `stack`, whose frames `wire` moves.
    pub fn new(stack: HostStack, wire: W) -> Self {
        Self { stack, wire, clients: BTreeMap::new(), caller: 0, brought: None, released: Vec::new() }
    }

    /// The request about to be dispatched brought `buffer` (or a
    /// capability that cannot be one: the error `share_buffer` answers).
    /// A `share_buffer` call claims it; otherwise it is released.
    pub fn bring(&mut self, buffer: Result<B, SocketError>) {
        if let Some(Ok(old)) = self.brought.replace(buffer) {
            self.released.push(old);
        }
    }

    /// Buffers the server let go of since the last call (replaced by a
    /// newer one, or brought by a request that was not `share_buffer`):
    /// the embedding process unmaps them and deletes their capabilities.
    pub fn take_released(&mut self) -> Vec<B> {
        if let Some(Ok(b)) = self.brought.take() {
            self.released.push(b);
        }
        core::mem::take(&mut self.released)
    }

    /// The stack (its address, the sockets open).
    pub fn stack(&self) -> &HostStack {
        &self.stack
    }

    /// The stack, to move its frames (a server that pumps it itself, with
    /// a [`Wire`] that does nothing: see [`crate::host`]).
    pub fn stack_mut(&mut self) -> &mut HostStack {
        &mut self.stack
    }

    /// The calls of [`socket::Server`] made directly (not dispatched) act
    /// for the client with `badge` (netd's own services use a badge of
    /// their own, [`crate::host::OWN_BADGE`]).
    pub fn act_as(&mut self, badge: u64) -> &mut Self {
        self.caller = badge;
        self
    }

    /// Makes `buffer` the shared buffer of the client with `badge` (a
    /// previous one is dropped).
    pub fn give_buffer(&mut self, badge: u64, buffer: B) {
        if let Some(old) = self.clients.entry(badge).or_default().buffer.replace(buffer) {
            self.released.push(old);
        }
    }

    /// The client with `badge` ended: its sockets are closed (connections
    /// send FIN) and its buffer dropped. Returns how many sockets it held.
    pub fn client_gone(&mut self, badge: u64) -> usize {
        let Some(mut c) = self.clients.remove(&badge) else { return 0 };
        if let Some(b) = c.buffer.take() {
            self.released.push(b);
        }
        for s in &c.sockets {
            let _ = self.stack.close(SocketId(*s));
        }
        self.wire.pump(&mut self.stack);
        c.used()
    }

    /// How much of its share the client with `badge` uses (a socket each,
    /// a listener [`LISTEN_BACKLOG`]).
    pub fn sockets_of(&self, badge: u64) -> usize {
        self.clients.get(&badge).map_or(0, Client::used)
    }

    fn client(&mut self) -> &mut Client<B> {
        self.clients.entry(self.caller).or_default()
    }

    fn own(&mut self, socket: u32) -> Result<SocketId, SocketError> {
        if self.clients.get(&self.caller).is_some_and(|c| c.sockets.contains(&socket)) {
            Ok(SocketId(socket))
        } else {
            Err(SocketError::NoSuchSocket { socket })
        }
    }

    fn room(&mut self, n: usize) -> Result<(), SocketError> {
        if self.client().used() + n > PER_CLIENT_SOCKETS {
            return Err(SocketError::TooManySockets { limit: PER_CLIENT_SOCKETS as u32 });
        }
        Ok(())
    }

    fn record(&mut self, id: SocketId) -> u32 {
        self.client().sockets.insert(id.0);
        id.0
    }

    /// The caller's buffer and its size, with `offset..offset + len` inside.
    fn window(&mut self, offset: u32, len: u32) -> Result<&mut B, SocketError> {
        let b = self.client().buffer.as_mut().ok_or(SocketError::NoBuffer)?;
        let size = b.len();
        if u64::from(offset) + u64::from(len) > size as u64 {
            return Err(SocketError::OutsideBuffer { offset, len, size: size.min(u32::MAX as usize) as u32 });
        }
        Ok(b)
    }
}

impl<B: RingRegion, W: Wire> socket::Server for SocketServer<B, W> {
    fn listen(&mut self, port: u16) -> Result<u32, SocketError> {
        self.room(LISTEN_BACKLOG)?;
        let id = self.stack.listen(port).map_err(stack_error)?;
        self.client().listeners.insert(id.0);
        Ok(self.record(id))
    }

    fn accept(&mut self, listener: u32) -> Result<Option<u32>, SocketError> {
        let l = self.own(listener)?;
        // A connection waiting needs room in the caller's share.
        if !self.stack.waiting(l).map_err(stack_error)? {
            return Ok(None);
        }
        self.room(1)?;
        Ok(self.stack.accept(l).map_err(stack_error)?.map(|id| self.record(id)))
    }

    fn connect(&mut self, ip: [u8; 4], port: u16) -> Result<u32, SocketError> {
        self.room(1)?;
        let id = self.stack.connect(Ipv4Addr::from(ip), port).map_err(stack_error)?;
        Ok(self.record(id))
    }

    fn state(&mut self, socket: u32) -> Result<SocketState, SocketError> {
        let s = self.own(socket)?;
        Ok(match self.stack.tcp_state(s).map_err(stack_error)? {
            TcpState::Pending => SocketState::Pending,
            TcpState::Established => SocketState::Established,
            TcpState::PeerClosed => SocketState::PeerClosed,
            TcpState::Closed => SocketState::Closed,
        })
    }

    fn send(&mut self, socket: u32, data: Vec<u8>) -> Result<u32, SocketError> {
        let s = self.own(socket)?;
        if data.len() > SOCKET_INLINE_MAX as usize {
            return Err(SocketError::TooLarge { bytes: data.len() as u64, max: SOCKET_INLINE_MAX });
        }
        Ok(self.stack.send(s, &data).map_err(stack_error)? as u32)
    }

    fn recv(&mut self, socket: u32, max: u32) -> Result<Vec<u8>, SocketError> {
        let s = self.own(socket)?;
        if max > SOCKET_INLINE_MAX {
            return Err(SocketError::TooLarge { bytes: u64::from(max), max: SOCKET_INLINE_MAX });
        }
        self.stack.recv(s, max as usize).map_err(stack_error)
    }

    fn buffer(&mut self) -> Result<u32, SocketError> {
        let b = self.client().buffer.as_ref().ok_or(SocketError::NoBuffer)?;
        Ok(b.len().min(u32::MAX as usize) as u32)
    }

    fn send_buffered(&mut self, socket: u32, offset: u32, len: u32) -> Result<u32, SocketError> {
        let s = self.own(socket)?;
        // At most a send buffer's worth is read out of the shared buffer.
        let take = (len as usize).min(TCP_BUFFER_BYTES);
        let b = self.window(offset, len)?;
        let mut data = vec![0u8; take];
        b.read(offset as usize, &mut data);
        Ok(self.stack.send(s, &data).map_err(stack_error)? as u32)
    }

    fn recv_buffered(&mut self, socket: u32, offset: u32, max: u32) -> Result<u32, SocketError> {
        let s = self.own(socket)?;
        self.window(offset, max)?;
        let data = self.stack.recv(s, max as usize).map_err(stack_error)?;
        let b = self.window(offset, max)?;
        b.write(offset as usize, &data);
        Ok(data.len() as u32)
    }

    fn udp_bind(&mut self, port: u16) -> Result<(u32, u16), SocketError> {
        self.room(1)?;
        let (id, port) = self.stack.udp_bind(port).map_err(stack_error)?;
        Ok((self.record(id), port))
    }

    fn send_to(&mut self, socket: u32, ip: [u8; 4], port: u16, data: Vec<u8>) -> Result<bool, SocketError> {
        let s = self.own(socket)?;
        if data.len() > SOCKET_INLINE_MAX as usize {
            return Err(SocketError::TooLarge { bytes: data.len() as u64, max: SOCKET_INLINE_MAX });
        }
        self.stack.send_to(s, Ipv4Addr::from(ip), port, &data).map_err(stack_error)
    }

    fn recv_from(&mut self, socket: u32, max: u32) -> Result<Option<Datagram>, SocketError> {
        let s = self.own(socket)?;
        if max > SOCKET_INLINE_MAX {
            return Err(SocketError::TooLarge { bytes: u64::from(max), max: SOCKET_INLINE_MAX });
        }
        Ok(self.stack.recv_from(s, max as usize).map_err(stack_error)?.map(|(data, ip, port)| Datagram { data, ip: ip.octets(), port }))
    }

    fn close(&mut self, socket: u32) -> Result<(), SocketError> {
        let s = self.own(socket)?;
        self.client().sockets.remove(&socket);
        self.client().listeners.remove(&socket);
        self.stack.close(s).map_err(stack_error)
    }

    fn share_buffer(&mut self) -> Result<u32, SocketError> {
        let b = self.brought.take().unwrap_or(Err(SocketError::NoBuffer))?;
        let size = b.len().min(u32::MAX as usize) as u32;
        self.give_buffer(self.caller, b);
        Ok(size)
    }
}

impl<B: RingRegion, W: Wire> libipc::Dispatch for SocketServer<B, W> {
    fn dispatch(&mut self, interface: u32, request: &[u8]) -> Result<Vec<u8>, RemoteError> {
        self.dispatch_from(0, interface, request)
    }

    fn dispatch_from(&mut self, badge: u64, interface: u32, request: &[u8]) -> Result<Vec<u8>, RemoteError> {
        self.caller = badge;
        self.wire.pump(&mut self.stack);
        let reply = socket::dispatch(self, interface, request);
        self.wire.pump(&mut self.stack);
        // What a request brought and did not claim goes.
        if let Some(Ok(b)) = self.brought.take() {
            self.released.push(b);
        }
        // A client that asked for nothing but failed holds no entry.
        if self.clients.get(&badge).is_some_and(|c| c.sockets.is_empty() && c.buffer.is_none()) {
            self.clients.remove(&badge);
        }
        reply
    }
}

// The limits fit together: the stack holds the full shares of two
// clients (apid and zone-server's image downloads), and a share holds a
// listener with its backlog and connections beside it.
const _: () = assert!(PER_CLIENT_SOCKETS * 2 <= MAX_SOCKETS);
const _: () = assert!(LISTEN_BACKLOG * 2 <= PER_CLIENT_SOCKETS);
