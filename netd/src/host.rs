//! netd as the process serves it: the VNIC server ([`crate::vnics`]) and,
//! when the boot configuration has a `host` line, the host's own TCP/IP
//! ([`crate::stack`], smoltcp) on a VNIC of that switch with the `socket`
//! interface ([`crate::sockets`]) over it.
//!
//! ```text
//!  guest ─ VMM ─ ring ─▶ switch (admin) ─▶ host VNIC ring ─▶ RingPort ─▶ HostStack ◀─ socket calls (badged)
//!                                                                          ▲
//!                                                        echo (diagnostic, netd's own client)
//! ```
//!
//! The host's VNIC region is one netd makes and keeps (no VMM maps it);
//! the stack reaches it through a [`RingPort`], the same ring discipline
//! a VMM follows, so to the switch the host is one more VNIC, with link
//! protection for its static address. Frames move in [`Netd::pump`], run
//! after every request (a VMM's `kick`, a socket call) and on the
//! process's timer ([`Netd::tick`]: the stack's retransmits and ARP, and
//! VNICs waiting for their bandwidth bucket); [`Netd::wake_at_ns`] says
//! when the timer is next needed.
//!
//! `socket` calls without a host address get
//! [`RemoteError::WrongInterface`] (the interface is not served). netd's
//! own services (the `echo` diagnostic) are clients of the same socket
//! server under [`OWN_BADGE`], held to the same per-client limits.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::net::Ipv4Addr;

use libipc::framering::RingRegion;
use libipc::interfaces::{SOCKET_INLINE_MAX, SocketState, socket};
use libipc::{Dispatch, RemoteError};
use netd_switch::VnicId;
use socket::Server as _;

use crate::sockets::{SocketServer, Wire};
use crate::stack::{HostStack, RingPort};
use crate::vnics::{HostSpec, NetConfig, VnicPlatform, VnicServer};

/// The badge netd's own socket clients act under (init badges clients
/// with small indices, so no client has it).
pub const OWN_BADGE: u64 = u64::MAX;

/// Rounds of [`Netd::pump`] at most per call (each: the host's frames
/// both ways, netd's services, one pass of the switch).
pub const PUMP_ROUNDS: usize = 16;

/// The socket server's wire when [`Netd`] moves the frames itself.
pub struct Quiet;

impl Wire for Quiet {
    fn pump(&mut self, _: &mut HostStack) {}
}

/// A TCP echo service: what a connection sends comes back.
struct Echo {
    listener: u32,
    /// Connections and the bytes not yet queued back.
    conns: Vec<(u32, Vec<u8>)>,
}

impl Echo {
    /// One round; whether anything moved.
    fn serve<B: RingRegion>(&mut self, server: &mut SocketServer<B, Quiet>) -> bool {
        let s = server.act_as(OWN_BADGE);
        let mut moved = false;
        while let Ok(Some(c)) = s.accept(self.listener) {
            self.conns.push((c, Vec::new()));
            moved = true;
        }
        self.conns.retain_mut(|(c, pending)| {
            let mut open = true;
            if pending.is_empty() {
                match s.recv(*c, SOCKET_INLINE_MAX) {
                    Ok(d) if !d.is_empty() => {
                        moved = true;
                        *pending = d;
                    }
                    Ok(_) => {}
                    Err(_) => open = false,
                }
            }
            if open && !pending.is_empty() {
                match s.send(*c, pending.clone()) {
                    Ok(n) => {
                        moved |= n > 0;
                        pending.drain(..(n as usize).min(pending.len()));
                    }
                    Err(_) => open = false,
                }
            }
            // The peer is done and everything went back: close our side.
            if open && pending.is_empty() && !moved {
                open = !matches!(s.state(*c), Ok(SocketState::PeerClosed | SocketState::Closed) | Err(_));
            }
            if !open {
                let _ = s.close(*c);
            }
            open
        });
        moved
    }
}

struct Host<B: RingRegion> {
    switch: usize,
    id: VnicId,
    port: RingPort,
    sockets: SocketServer<B, Quiet>,
    echo: Option<Echo>,
    /// The test tripwire's listener ([`Netd::set_tripwire`]).
    tripwire: Option<u32>,
    /// The ring was refused (netd's own region: a bug, logged once).
    broken: bool,
}

/// netd's server; see the module's description.
pub struct Netd<P: VnicPlatform> {
    vnics: VnicServer<P>,
    host: Option<Host<P::Region>>,
    wake_at_ns: Option<u64>,
}

impl<P: VnicPlatform> Netd<P> {
    /// The switches and VNICs of `config`, and its host stack (`seed`
    /// seeds its sequence numbers). A host line that cannot be set up is
    /// logged and left out; the switches run anyway.
    pub fn new(config: &NetConfig, platform: P, seed: u64) -> Self {
        let mut vnics = VnicServer::new(config, platform);
        let host = config.host.as_ref().and_then(|spec| match Self::host(&mut vnics, spec, seed) {
            Ok(h) => Some(h),
            Err(e) => {
                log::error!("netd: {e}");
                None
            }
        });
        let mut n = Self { vnics, host, wake_at_ns: None };
        n.pump();
        n
    }

    fn host(vnics: &mut VnicServer<P>, spec: &HostSpec, seed: u64) -> Result<Host<P::Region>, String> {
        let (switch, id) = vnics.attach_host(spec)?;
        let region = vnics.host_region(switch, id).ok_or_else(|| String::from("host: the region is gone"))?;
        let port = RingPort::new(region).map_err(|e| format!("host: {e}"))?;
        let stack = HostStack::new(spec.mac.0, spec.addr, seed, vnics.now_ns()).map_err(|e| format!("host: {e}"))?;
        let mut sockets = SocketServer::new(stack, Quiet);
        let echo = match spec.echo_port {
            None => None,
            Some(p) => {
                let listener = sockets.act_as(OWN_BADGE).listen(p).map_err(|e| format!("host: echo on port {p}: {e}"))?;
                Some(Echo { listener, conns: Vec::new() })
            }
        };
        Ok(Host { switch, id, port, sockets, echo, tripwire: None, broken: false })
    }

    /// The VNIC server (its switches and VMMs' VNICs).
    pub fn vnics(&mut self) -> &mut VnicServer<P> {
        &mut self.vnics
    }

    /// The host's address and prefix length, if it has one.
    pub fn host_address(&self) -> Option<(Ipv4Addr, u8)> {
        self.host.as_ref().and_then(|h| h.sockets.stack().address())
    }

    /// Test manifests only (`test-exit-on-connect=PORT`): netd listens on
    /// `port` of its host address (as its own client, [`OWN_BADGE`]), and
    /// [`Netd::tripped`] says when a connection arrived there, for the
    /// process to exit as if killed. Refused without a host stack.
    pub fn set_tripwire(&mut self, port: u16) -> Result<(), String> {
        let h = self.host.as_mut().ok_or_else(|| String::from("no host line: nothing to listen with"))?;
        let l = h.sockets.act_as(OWN_BADGE).listen(port).map_err(|e| format!("port {port}: {e}"))?;
        h.tripwire = Some(l);
        Ok(())
    }

    /// Whether a connection arrived on the tripwire's port (it is taken
    /// and closed: each connection trips it once).
    pub fn tripped(&mut self) -> bool {
        let Some(h) = self.host.as_mut() else { return false };
        let Some(l) = h.tripwire else { return false };
        let s = h.sockets.act_as(OWN_BADGE);
        match s.accept(l) {
            Ok(Some(c)) => {
                let _ = s.close(c);
                true
            }
            _ => false,
        }
    }

    /// Connections the echo service holds open.
    pub fn echo_connections(&self) -> usize {
        self.host.as_ref().and_then(|h| h.echo.as_ref()).map_or(0, |e| e.conns.len())
    }

    /// When [`Netd::tick`] is next needed (the stack's timers, a VNIC
    /// waiting for its bucket), as of the last pump.
    pub fn wake_at_ns(&self) -> Option<u64> {
        // The host stack's time, and a VNIC's bucket (a kick that
        // throttled its sender), whichever comes first.
        [self.wake_at_ns, self.vnics.throttle_wake()].into_iter().flatten().min()
    }

    /// The process's timer: throttled VNICs go on, the stack's timers run.
    pub fn tick(&mut self) {
        // The VNICs' next time is kept by the VNIC server (this poll's,
        // or a later kick's), not merged here: a time that passed is not
        // asked for again.
        self.vnics.poll();
        self.pump();
    }

    /// Moves the host's frames both ways through its switch, and runs
    /// netd's own services, until nothing moves (at most [`PUMP_ROUNDS`]
    /// rounds). Returns when to run again ([`Netd::wake_at_ns`]).
    pub fn pump(&mut self) -> Option<u64> {
        let h = self.host.as_mut()?;
        if h.broken {
            return None;
        }
        let mut switch_wake = None;
        let mut busy = true;
        for _ in 0..PUMP_ROUNDS {
            let now = self.vnics.now_ns();
            let Some(region) = self.vnics.host_region(h.switch, h.id) else { break };
            let sent = match h.port.pump(region, h.sockets.stack_mut(), now) {
                Ok(sent) => sent,
                Err(e) => {
                    log::error!("netd: the host's ring: {e}");
                    h.broken = true;
                    break;
                }
            };
            let served = h.echo.as_mut().is_some_and(|e| e.serve(&mut h.sockets));
            let (got, wake) = self.vnics.poll_switch(h.switch, h.id);
            switch_wake = wake;
            if !sent && !served && !got {
                busy = false;
                break;
            }
        }
        // Frames the ring had no room for, or traffic still moving after
        // the last round, go on at the next tick.
        let soon = (busy || h.port.waiting() > 0).then(|| self.vnics.now_ns().saturating_add(1_000_000));
        self.wake_at_ns = [h.port.next_poll_ns(), switch_wake, soon].into_iter().flatten().min();
        self.wake_at_ns
    }

    /// Frames from the machine's NICs ([`VnicPlatform::receive`]) into
    /// their nic_tags' switches, at most `budget` of them; then the host
    /// stack answers what it got. Returns how many were taken (a caller
    /// that got `budget` runs it again, after other requests).
    pub fn nic_input(&mut self, budget: usize) -> usize {
        let mut n = 0;
        while n < budget {
            let Some((tag, frame)) = self.vnics.platform().receive() else { break };
            self.vnics.from_uplink(&tag, &frame);
            n += 1;
        }
        if n > 0 {
            self.pump();
        }
        n
    }

    /// What an operator reads: the host's address and sockets, then each
    /// switch and VNIC.
    pub fn status_text(&self) -> String {
        let mut out = match &self.host {
            None => String::from("host: no address (no host line in netd.conf)\n"),
            Some(h) => {
                let s = h.sockets.stack();
                let addr = s.address().map_or(String::from("none yet"), |(ip, p)| format!("{ip}/{p}"));
                format!(
                    "host: address {addr} on vnic {}, {} sockets open, {} frames dropped (queue full){}\n",
                    h.id.0,
                    s.sockets_open(),
                    s.rx_dropped,
                    if h.broken { ", ring refused" } else { "" }
                )
            }
        };
        out.push_str(&self.vnics.status_text());
        out
    }
}

impl<P: VnicPlatform> Dispatch for Netd<P> {
    fn dispatch(&mut self, interface: u32, request: &[u8]) -> Result<Vec<u8>, RemoteError> {
        self.dispatch_from(0, interface, request)
    }

    fn dispatch_from(&mut self, badge: u64, interface: u32, request: &[u8]) -> Result<Vec<u8>, RemoteError> {
        let reply = if interface == socket::ID {
            // What arrived before the call is visible to it.
            self.pump();
            let brought = self.vnics.platform().take_buffer();
            match self.host.as_mut() {
                Some(h) if badge != OWN_BADGE => {
                    if let Some(b) = brought {
                        h.sockets.bring(b);
                    }
                    let reply = h.sockets.dispatch_from(badge, interface, request);
                    for b in h.sockets.take_released() {
                        self.vnics.platform().destroy(b);
                    }
                    reply
                }
                _ => {
                    if let Some(Ok(b)) = brought {
                        self.vnics.platform().destroy(b);
                    }
                    Err(RemoteError::WrongInterface)
                }
            }
        } else {
            self.vnics.dispatch_from(badge, interface, request)
        };
        self.pump();
        reply
    }

    fn notified(&mut self, _bits: u64) {
        self.tick();
    }
}
