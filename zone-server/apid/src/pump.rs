//! Moving bytes between netd's TCP sockets and the sans-IO HTTP server:
//! one listener, and for each connection the server accepted, what
//! arrived goes in (as far as the server has room) and what it answered
//! goes out (as far as netd takes it). Past the server's `max_connections`
//! a connection gets 503; past twice that it is closed without a word; and
//! the pump takes no connection that would bring it to netd's per-client
//! socket limit (the listener counts its backlog there, and the rest wait
//! in that backlog or are refused by netd). A listener netd no longer
//! knows (netd was restarted: its sockets are gone) is made again.

use alcove_api::{Backend, ConnId, Server};
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use libipc::interfaces::{SOCKET_INLINE_MAX, SocketError, SocketState, socket};

/// netd's sockets, as the pump uses them.
pub trait Sockets {
    fn listen(&mut self, port: u16) -> Result<u32, String>;
    fn accept(&mut self, listener: u32) -> Result<Option<u32>, String>;
    /// Up to `max` bytes; `Ok(None)` once the peer has closed and
    /// everything it sent was read.
    fn recv(&mut self, socket: u32, max: u32) -> Result<Option<Vec<u8>>, String>;
    /// The bytes of `data` netd took.
    fn send(&mut self, socket: u32, data: &[u8]) -> Result<usize, String>;
    fn close(&mut self, socket: u32);
}

/// Unwraps a call's two layers of error.
fn flat<T>(r: Result<Result<T, SocketError>, libipc::IpcError>) -> Result<T, String> {
    match r {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

impl<T: libipc::Transport> Sockets for socket::Client<T> {
    fn listen(&mut self, port: u16) -> Result<u32, String> {
        flat(socket::Client::listen(self, port))
    }
    fn accept(&mut self, listener: u32) -> Result<Option<u32>, String> {
        flat(socket::Client::accept(self, listener))
    }
    fn recv(&mut self, s: u32, max: u32) -> Result<Option<Vec<u8>>, String> {
        let data = flat(socket::Client::recv(self, s, max))?;
        if !data.is_empty() {
            return Ok(Some(data));
        }
        match flat(socket::Client::state(self, s))? {
            SocketState::PeerClosed | SocketState::Closed => Ok(None),
            _ => Ok(Some(data)),
        }
    }
    fn send(&mut self, s: u32, data: &[u8]) -> Result<usize, String> {
        flat(socket::Client::send(self, s, data.to_vec())).map(|n| n as usize)
    }
    fn close(&mut self, s: u32) {
        let _ = socket::Client::close(self, s);
    }
}

/// Most connections taken from netd per step.
const ACCEPTS_PER_STEP: usize = 16;

/// The listener and the connections being served.
pub struct Pump {
    pub port: u16,
    /// The sockets netd lets this client hold (its `PER_CLIENT_SOCKETS`):
    /// the listener (its backlog, [`crate::NETD_LISTEN_BACKLOG`]) and the
    /// connections stay below it, so an `accept` is never refused for want
    /// of a handle.
    pub socket_limit: usize,
    listener: Option<u32>,
    /// The server's connection and netd's socket for it.
    conns: Vec<(ConnId, u32)>,
    /// Connections closed at once because the server was full.
    pub refused: u64,
    /// Times the listener was lost and made again.
    pub relistens: u64,
}

impl Pump {
    pub fn new(port: u16, socket_limit: usize) -> Self {
        Self { port, socket_limit, listener: None, conns: Vec::new(), refused: 0, relistens: 0 }
    }

    /// netd's socket for the listener, once it listens.
    pub fn listener(&self) -> Option<u32> {
        self.listener
    }

    /// Connections being served.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// One round over every socket at time `now_ms`; whether anything
    /// moved (the caller sleeps a little when nothing did). An error only
    /// when the listener cannot be made.
    pub fn step<B: Backend>(&mut self, server: &mut Server<B>, net: &mut impl Sockets, now_ms: u64) -> Result<bool, String> {
        let listener = match self.listener {
            Some(l) => l,
            None => {
                let l = net.listen(self.port)?;
                self.listener = Some(l);
                l
            }
        };
        let mut moved = false;
        for _ in 0..ACCEPTS_PER_STEP {
            // The listener, the connections, and the one accept would add.
            if self.conns.len() + crate::NETD_LISTEN_BACKLOG + 1 > self.socket_limit {
                break;
            }
            let s = match net.accept(listener) {
                Ok(Some(s)) => s,
                Ok(None) => break,
                Err(_) => {
                    // netd lost it (restarted) or refuses it: listen anew
                    // on the next step (the old one closed, if it lives).
                    net.close(listener);
                    self.listener = None;
                    self.relistens += 1;
                    moved = true;
                    break;
                }
            };
            moved = true;
            match server.accept(now_ms) {
                Some(id) => self.conns.push((id, s)),
                None => {
                    self.refused += 1;
                    net.close(s);
                }
            }
        }
        // Requests a guest is waited for (a graceful stop): answered here
        // once over, between serving the other connections.
        moved |= server.poll(now_ms);
        let mut done = Vec::new();
        for &(id, s) in &self.conns {
            let out = server.output(id);
            if !out.is_empty() {
                let n = out.len().min(SOCKET_INLINE_MAX as usize);
                match net.send(s, &out[..n]) {
                    Ok(0) => {}
                    Ok(sent) => {
                        server.sent(id, sent, now_ms);
                        moved = true;
                    }
                    Err(_) => {
                        done.push((id, s));
                        continue;
                    }
                }
            }
            let room = server.room(id);
            if room > 0 && !server.wants_close(id) {
                let max = room.min(SOCKET_INLINE_MAX as usize) as u32;
                match net.recv(s, max) {
                    Ok(Some(data)) if !data.is_empty() => {
                        server.receive(id, &data, now_ms);
                        moved = true;
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => server.peer_closed(id, now_ms),
                    Err(_) => {
                        done.push((id, s));
                        continue;
                    }
                }
            }
            if server.wants_close(id) && server.output(id).is_empty() {
                done.push((id, s));
            }
        }
        let expired = server.expire(now_ms);
        for &(id, s) in &self.conns {
            if expired.contains(&id) && !done.contains(&(id, s)) {
                done.push((id, s));
            }
        }
        for (id, s) in &done {
            net.close(*s);
            server.close(*id);
            moved = true;
        }
        self.conns.retain(|c| !done.contains(c));
        Ok(moved)
    }
}
