//! The host's own TCP/IP: `smoltcp` on a VNIC of a switch, as the design
//! puts it (the admin address, ARP and ping, TCP and UDP sockets for other
//! servers). [`HostStack`] is the stack with its frame queues; [`RingPort`]
//! connects it to a VNIC's frame rings ([`libipc::framering`]) from the
//! VMM's side of the region, so to the switch the host is one more VNIC.
//! Time comes from the caller, in nanoseconds.
//!
//! Addresses: static (`ip/prefix`, a gateway) or a DHCP client, which sets
//! the address and default route it is given and drops them when the lease
//! is lost. smoltcp answers ARP and ICMP echo itself.
//!
//! Sockets are named by [`SocketId`]s that are never reused, so a stale id
//! is an error, never another socket. A TCP listener holds a backlog of
//! [`LISTEN_BACKLOG`] listening sockets, so one half-open connection (a
//! peer that sent its SYN and vanished, or that the host side reset in the
//! middle of the handshake) does not make the port refuse everyone else:
//! when a peer connects, [`HostStack::accept`] hands the connection out
//! under a new id and a fresh socket takes its place in the backlog. A
//! handshake that does not finish within [`HALF_OPEN_TIMEOUT_MS`] is
//! dropped and its socket listens again; SYNs beyond the backlog are
//! answered with a reset (refused at once, not left waiting).
//!
//! Memory: netd's heap is a fixed arena ([`alcove_rt::HEAP_BYTES`],
//! 512 KiB), so every socket's buffers are bounded ([`TCP_BUFFER_BYTES`],
//! [`UDP_BUFFER_BYTES`]), there are at most [`MAX_SOCKETS`] sockets of
//! smoltcp's (listeners' backlogs and closed connections still finishing
//! included), and frames queue at most [`RX_QUEUE`] and [`TX_QUEUE`] deep:
//! the stack's worst case is [`STACK_HEAP_BYTES`] (`tests/heap_bound.rs`
//! holds it to that). A closed connection whose peer went silent is
//! dropped after [`CLOSING_TIMEOUT_MS`], so it cannot hold its slot for ever.

use alloc::collections::{BTreeMap, VecDeque};
use alloc::vec;
use alloc::vec::Vec;
use core::net::Ipv4Addr;

use libipc::framering::{Consumer, Direction, FrameRingError, Geometry, Producer, RingRegion};
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{Device, DeviceCapabilities, Medium};
use smoltcp::socket::{dhcpv4, tcp, udp};
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetAddress, IpAddress, IpCidr, IpEndpoint, IpListenEndpoint, Ipv4Cidr};

/// smoltcp sockets the stack holds at most: connections, UDP sockets,
/// each listener's backlog, closed connections still finishing.
pub const MAX_SOCKETS: usize = 32;
/// Listening sockets per listener: connections whose handshake is under
/// way or done and not yet accepted.
pub const LISTEN_BACKLOG: usize = 4;
/// A handshake not finished by then is dropped (its socket listens again).
pub const HALF_OPEN_TIMEOUT_MS: u64 = 5_000;
/// A closed connection whose peer does not acknowledge its FIN by then is
/// dropped (its slot freed).
pub const CLOSING_TIMEOUT_MS: u64 = 10_000;
/// Each TCP socket's receive and send buffer.
pub const TCP_BUFFER_BYTES: usize = 4 * 1024;
/// Each UDP socket's receive and send buffer (payload bytes), and datagrams.
pub const UDP_BUFFER_BYTES: usize = 4 * 1024;
const UDP_DATAGRAMS: usize = 8;
/// Frames waiting to go out before smoltcp is told to hold back.
pub const TX_QUEUE: usize = 32;
/// Frames received and not yet processed, beyond which more are dropped.
pub const RX_QUEUE: usize = 32;
/// The most the stack takes of netd's heap: every socket's buffers and
/// smoltcp's state for it, both frame queues full, with room for smoltcp's
/// own tables; the rest of the 512 KiB is the switch's and the VNICs'.
pub const STACK_HEAP_BYTES: usize = 352 * 1024;
/// The largest Ethernet frame (MTU 1500, no FCS).
pub const MAX_FRAME: usize = 1514;
const EPHEMERAL_FIRST: u16 = 49152;

/// How the host's address is set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddressConfig {
    /// A fixed address (the boot configuration's `ip`, `netmask` as a
    /// prefix length, `gateway`).
    Static { ip: Ipv4Addr, prefix: u8, gateway: Option<Ipv4Addr> },
    /// Asked for with DHCP.
    Dhcp,
}

/// A socket of the host stack. Ids are never reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct SocketId(pub u32);

/// Why the stack refused a socket call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StackError {
    /// No such socket (closed, or never opened).
    NoSocket(SocketId),
    /// Every one of the [`MAX_SOCKETS`] sockets is in use.
    TooManySockets { limit: usize },
    /// The call does not apply to this socket (e.g. `send` on a listener).
    WrongKind(SocketId),
    /// The port is taken by another listener or UDP socket.
    PortInUse(u16),
    /// Port 0, an unspecified or broadcast peer, or no address yet.
    BadAddress,
    /// The connection is not (or no longer) open for this call.
    NotConnected(SocketId),
}

impl core::fmt::Display for StackError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            StackError::NoSocket(s) => write!(f, "no socket {}", s.0),
            StackError::TooManySockets { limit } => write!(f, "all {limit} sockets are in use"),
            StackError::WrongKind(s) => write!(f, "socket {} does not do that", s.0),
            StackError::PortInUse(p) => write!(f, "port {p} is in use"),
            StackError::BadAddress => f.write_str("bad address"),
            StackError::NotConnected(s) => write!(f, "socket {} is not connected", s.0),
        }
    }
}

impl core::error::Error for StackError {}

/// The state of a TCP socket as a caller sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TcpState {
    /// Listening (a listener), or connecting.
    Pending,
    /// Data flows both ways.
    Established,
    /// The peer closed its side: what it sent can still be read.
    PeerClosed,
    /// Closed or reset.
    Closed,
}

enum Kind {
    /// The listening sockets of the backlog (at most [`LISTEN_BACKLOG`];
    /// fewer while the stack is full, topped up when room comes back).
    Listener { port: u16, backlog: Vec<SocketHandle> },
    Tcp(SocketHandle),
    Udp { port: u16, handle: SocketHandle },
}

/// The frames between smoltcp and the port.
struct Queues {
    rx: VecDeque<Vec<u8>>,
    tx: VecDeque<Vec<u8>>,
}

struct Rx(Vec<u8>);
struct Tx<'a>(&'a mut VecDeque<Vec<u8>>);

impl smoltcp::phy::RxToken for Rx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl smoltcp::phy::TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut frame = vec![0u8; len];
        let r = f(&mut frame);
        self.0.push_back(frame);
        r
    }
}

impl Device for Queues {
    type RxToken<'a> = Rx;
    type TxToken<'a> = Tx<'a>;

    fn receive(&mut self, _: Instant) -> Option<(Rx, Tx<'_>)> {
        let f = self.rx.pop_front()?;
        Some((Rx(f), Tx(&mut self.tx)))
    }

    fn transmit(&mut self, _: Instant) -> Option<Tx<'_>> {
        (self.tx.len() < TX_QUEUE).then_some(Tx(&mut self.tx))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = MAX_FRAME;
        caps
    }
}

/// The host's TCP/IP stack; see the module's description.
pub struct HostStack {
    iface: Interface,
    sockets: SocketSet<'static>,
    dev: Queues,
    dhcp: Option<SocketHandle>,
    table: BTreeMap<SocketId, Kind>,
    /// Closed connections still sending their FIN (they count against
    /// [`MAX_SOCKETS`] until they finish).
    orphans: Vec<SocketHandle>,
    next_id: u32,
    next_port: u16,
    /// Frames dropped because [`RX_QUEUE`] frames were waiting.
    pub rx_dropped: u64,
}

/// The connection a frame opens, if it is a TCP SYN without ACK: (our
/// port, the peer's address, the peer's port).
fn pure_syn(frame: &[u8]) -> Option<(u16, Ipv4Addr, u16)> {
    use smoltcp::wire::{EthernetFrame, EthernetProtocol, IpProtocol, Ipv4Packet, TcpPacket};
    let eth = EthernetFrame::new_checked(frame).ok()?;
    if eth.ethertype() != EthernetProtocol::Ipv4 {
        return None;
    }
    let ip = Ipv4Packet::new_checked(eth.payload()).ok()?;
    if ip.next_header() != IpProtocol::Tcp || ip.frag_offset() != 0 || ip.more_frags() {
        return None;
    }
    let tcp = TcpPacket::new_checked(ip.payload()).ok()?;
    (tcp.syn() && !tcp.ack()).then(|| (tcp.dst_port(), ip.src_addr(), tcp.src_port()))
}

fn now(ns: u64) -> Instant {
    Instant::from_micros((ns / 1000) as i64)
}

impl HostStack {
    /// A stack with MAC `mac` and its address set by `addr`; `seed` seeds
    /// smoltcp's choices (initial sequence numbers, DHCP transaction ids).
    pub fn new(mac: [u8; 6], addr: AddressConfig, seed: u64, now_ns: u64) -> Result<Self, StackError> {
        let mut dev = Queues { rx: VecDeque::new(), tx: VecDeque::new() };
        let mut config = Config::new(EthernetAddress(mac).into());
        config.random_seed = seed;
        let mut iface = Interface::new(config, &mut dev, now(now_ns));
        let mut sockets = SocketSet::new(Vec::new());
        let mut dhcp = None;
        match addr {
            AddressConfig::Static { ip, prefix, gateway } => {
                if prefix == 0 || prefix > 32 || ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() {
                    return Err(StackError::BadAddress);
                }
                iface.update_ip_addrs(|a| {
                    let _ = a.push(IpCidr::Ipv4(Ipv4Cidr::new(ip, prefix)));
                });
                if let Some(gw) = gateway {
                    iface.routes_mut().add_default_ipv4_route(gw).map_err(|_| StackError::BadAddress)?;
                }
            }
            AddressConfig::Dhcp => dhcp = Some(sockets.add(dhcpv4::Socket::new())),
        }
        Ok(Self {
            iface,
            sockets,
            dev,
            dhcp,
            table: BTreeMap::new(),
            orphans: Vec::new(),
            next_id: 1,
            next_port: EPHEMERAL_FIRST,
            rx_dropped: 0,
        })
    }

    /// The host's address and prefix length, once it has one.
    pub fn address(&self) -> Option<(Ipv4Addr, u8)> {
        self.iface.ip_addrs().iter().map(|c| match c {
            IpCidr::Ipv4(c) => (c.address(), c.prefix_len()),
        }).next()
    }

    /// A frame from the switch for this stack.
    pub fn push_rx(&mut self, frame: &[u8]) {
        if self.dev.rx.len() >= RX_QUEUE {
            self.rx_dropped += 1;
        } else {
            self.dev.rx.push_back(frame.to_vec());
        }
    }

    /// Hands what arrived to smoltcp, in order. smoltcp gives a segment to
    /// the first socket (by slot) that takes it, and a listening socket
    /// takes any SYN for its port: a peer's SYN sent again for a
    /// connection that has its socket already (a retransmit that crossed
    /// our SYN-ACK, as QEMU's user network sends when we answer slowly)
    /// would go to a listener in a lower slot, whose half-open socket
    /// then took every later segment of the connection and reset it. So
    /// frames go in batches that end before each SYN, and a SYN for a
    /// connection goes alone, its port's listeners closed meanwhile: the
    /// connection's own socket answers it (RFC 9293's ACK).
    fn ingress(&mut self, t: Instant) {
        let mut rx = core::mem::take(&mut self.dev.rx);
        while let Some(first) = rx.front() {
            let hidden = pure_syn(first).map_or_else(Vec::new, |syn| self.hide_listeners_for(syn));
            let batch = if hidden.is_empty() {
                1 + rx.iter().skip(1).position(|f| pure_syn(f).is_some()).unwrap_or(rx.len() - 1)
            } else {
                1
            };
            self.dev.rx.extend(rx.drain(..batch));
            if hidden.is_empty() && rx.is_empty() {
                // The last batch: `poll`'s own pass hands it over.
                return;
            }
            self.iface.poll(t, &mut self.dev, &mut self.sockets);
            for (h, port) in hidden {
                let _ = self.sockets.get_mut::<tcp::Socket>(h).listen(port);
            }
        }
    }

    /// When a socket other than a listener holds the connection `syn` is
    /// for, closes the listeners of its port (to listen again once the SYN
    /// went through) and names them; otherwise nothing.
    fn hide_listeners_for(&mut self, (port, ip, remote_port): (u16, Ipv4Addr, u16)) -> Vec<(SocketHandle, u16)> {
        let remote = IpEndpoint::new(IpAddress::Ipv4(ip), remote_port);
        let held = self.sockets.iter().any(|(_, s)| match s {
            smoltcp::socket::Socket::Tcp(s) => {
                !matches!(s.state(), tcp::State::Listen | tcp::State::Closed | tcp::State::TimeWait)
                    && s.local_endpoint().is_some_and(|e| e.port == port)
                    && s.remote_endpoint() == Some(remote)
            }
            _ => false,
        });
        if !held {
            return Vec::new();
        }
        let mut hidden = Vec::new();
        for k in self.table.values() {
            if let Kind::Listener { port: p, backlog } = k
                && *p == port
            {
                for h in backlog {
                    let s = self.sockets.get_mut::<tcp::Socket>(*h);
                    if s.state() == tcp::State::Listen {
                        s.abort();
                        hidden.push((*h, port));
                    }
                }
            }
        }
        hidden
    }

    /// Frames the stack sent, in order.
    pub fn take_tx(&mut self) -> VecDeque<Vec<u8>> {
        core::mem::take(&mut self.dev.tx)
    }

    /// Processes what arrived and what sockets want to send; runs the DHCP
    /// client. Returns when it wants to run again (nanoseconds, absolute),
    /// if it has a timer.
    pub fn poll(&mut self, now_ns: u64) -> Option<u64> {
        let t = now(now_ns);
        self.ingress(t);
        self.iface.poll(t, &mut self.dev, &mut self.sockets);
        if let Some(h) = self.dhcp {
            let event = self.sockets.get_mut::<dhcpv4::Socket>(h).poll();
            match event {
                Some(dhcpv4::Event::Configured(c)) => {
                    let (address, router) = (c.address, c.router);
                    self.iface.update_ip_addrs(|a| {
                        a.clear();
                        let _ = a.push(IpCidr::Ipv4(address));
                    });
                    self.iface.routes_mut().remove_default_ipv4_route();
                    if let Some(r) = router {
                        let _ = self.iface.routes_mut().add_default_ipv4_route(r);
                    }
                    log::info!("netd: host address {address} from DHCP");
                    // Sockets waiting for an address may go now.
                    self.iface.poll(t, &mut self.dev, &mut self.sockets);
                }
                Some(dhcpv4::Event::Deconfigured) => {
                    self.iface.update_ip_addrs(|a| a.clear());
                    self.iface.routes_mut().remove_default_ipv4_route();
                    log::info!("netd: DHCP lease lost; no host address");
                }
                None => {}
            }
        }
        self.reap();
        self.tend_listeners();
        self.iface.poll_delay(t, &self.sockets).map(|d| now_ns.saturating_add(d.total_micros().saturating_mul(1000)))
    }

    /// smoltcp sockets held: every kind's, and the orphans.
    fn in_use(&self) -> usize {
        self.orphans.len() + self.table.values().map(Kind::sockets).sum::<usize>()
    }

    /// Room for `n` more smoltcp sockets.
    fn room_for(&mut self, n: usize) -> Result<(), StackError> {
        self.reap();
        if self.in_use() + n > MAX_SOCKETS {
            return Err(StackError::TooManySockets { limit: MAX_SOCKETS });
        }
        Ok(())
    }

    fn new_id(&mut self, sockets: usize) -> Result<SocketId, StackError> {
        self.room_for(sockets)?;
        let id = SocketId(self.next_id);
        self.next_id = self.next_id.checked_add(1).ok_or(StackError::TooManySockets { limit: MAX_SOCKETS })?;
        Ok(id)
    }

    fn port_taken(&self, port: u16) -> bool {
        self.table.values().any(|k| match k {
            Kind::Listener { port: p, .. } | Kind::Udp { port: p, .. } => *p == port,
            Kind::Tcp(h) => self.sockets.get::<tcp::Socket>(*h).local_endpoint().is_some_and(|e| e.port == port),
        })
    }

    fn tcp_socket() -> tcp::Socket<'static> {
        tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; TCP_BUFFER_BYTES]),
            tcp::SocketBuffer::new(vec![0; TCP_BUFFER_BYTES]),
        )
    }

    /// A listening socket on `port`, its half-open handshakes timed out.
    fn listening_socket(port: u16) -> Result<tcp::Socket<'static>, StackError> {
        let mut s = Self::tcp_socket();
        s.listen(port).map_err(|_| StackError::BadAddress)?;
        s.set_timeout(Some(smoltcp::time::Duration::from_millis(HALF_OPEN_TIMEOUT_MS)));
        Ok(s)
    }

    /// Listens for TCP connections on `port` (all the host's addresses),
    /// with a backlog of [`LISTEN_BACKLOG`] (as much of it as the stack
    /// has room for; at least one).
    pub fn listen(&mut self, port: u16) -> Result<SocketId, StackError> {
        if port == 0 {
            return Err(StackError::BadAddress);
        }
        if self.port_taken(port) {
            return Err(StackError::PortInUse(port));
        }
        let id = self.new_id(1)?;
        let handle = self.sockets.add(Self::listening_socket(port)?);
        self.table.insert(id, Kind::Listener { port, backlog: vec![handle] });
        self.tend_listeners();
        Ok(id)
    }

    /// Every listener's backlog: sockets whose handshake failed or timed
    /// out (closed) listen again, and backlogs short of
    /// [`LISTEN_BACKLOG`] get new sockets while the stack has room.
    fn tend_listeners(&mut self) {
        let ports: Vec<(SocketId, u16)> = self
            .table
            .iter()
            .filter_map(|(id, k)| match k {
                Kind::Listener { port, .. } => Some((*id, *port)),
                _ => None,
            })
            .collect();
        for (id, port) in ports {
            if let Some(Kind::Listener { backlog, .. }) = self.table.get(&id) {
                for h in backlog {
                    let s = self.sockets.get_mut::<tcp::Socket>(*h);
                    if matches!(s.state(), tcp::State::Closed | tcp::State::TimeWait) {
                        s.abort();
                        let _ = s.listen(port);
                    }
                }
            }
            loop {
                let short = matches!(self.table.get(&id), Some(Kind::Listener { backlog, .. }) if backlog.len() < LISTEN_BACKLOG);
                if !short || self.in_use() >= MAX_SOCKETS {
                    break;
                }
                let Ok(s) = Self::listening_socket(port) else { break };
                let h = self.sockets.add(s);
                if let Some(Kind::Listener { backlog, .. }) = self.table.get_mut(&id) {
                    backlog.push(h);
                }
            }
        }
    }

    /// Whether a connection waits on `listener` for [`HostStack::accept`].
    pub fn waiting(&self, listener: SocketId) -> Result<bool, StackError> {
        match self.table.get(&listener) {
            Some(Kind::Listener { backlog, .. }) => Ok(backlog.iter().any(|h| Self::arrived(self.sockets.get::<tcp::Socket>(*h).state()))),
            Some(_) => Err(StackError::WrongKind(listener)),
            None => Err(StackError::NoSocket(listener)),
        }
    }

    /// A backlog socket in `state` holds a connection to hand out.
    fn arrived(state: tcp::State) -> bool {
        !matches!(state, tcp::State::Listen | tcp::State::SynReceived | tcp::State::Closed | tcp::State::TimeWait)
    }

    /// A connection that arrived on `listener`, if one did: it gets its own
    /// id (its socket leaves the backlog, which a fresh one tops up when
    /// the stack has room). A connection reset before it was accepted is
    /// not handed out; its socket listens again.
    pub fn accept(&mut self, listener: SocketId) -> Result<Option<SocketId>, StackError> {
        let backlog = match self.table.get(&listener) {
            Some(Kind::Listener { backlog, .. }) => backlog,
            Some(_) => return Err(StackError::WrongKind(listener)),
            None => return Err(StackError::NoSocket(listener)),
        };
        let arrived = backlog.iter().position(|h| Self::arrived(self.sockets.get::<tcp::Socket>(*h).state()));
        let Some(i) = arrived else {
            self.tend_listeners();
            return Ok(None);
        };
        // The connection's socket moves from the backlog to the table: no
        // new socket, so the id needs no room.
        let id = SocketId(self.next_id);
        self.next_id = self.next_id.checked_add(1).ok_or(StackError::TooManySockets { limit: MAX_SOCKETS })?;
        let Some(Kind::Listener { backlog, .. }) = self.table.get_mut(&listener) else {
            return Err(StackError::NoSocket(listener));
        };
        let handle = backlog.remove(i);
        // A connection lives as long as its owner keeps it.
        self.sockets.get_mut::<tcp::Socket>(handle).set_timeout(None);
        self.table.insert(id, Kind::Tcp(handle));
        self.tend_listeners();
        Ok(Some(id))
    }

    /// Opens a TCP connection to `ip:port` from an ephemeral port; it is
    /// [`TcpState::Pending`] until the peer answers.
    pub fn connect(&mut self, ip: Ipv4Addr, port: u16) -> Result<SocketId, StackError> {
        if port == 0 || ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() {
            return Err(StackError::BadAddress);
        }
        let id = self.new_id(1)?;
        let local = self.ephemeral_port()?;
        let mut s = Self::tcp_socket();
        s.connect(self.iface.context(), IpEndpoint::new(IpAddress::Ipv4(ip), port), local)
            .map_err(|_| StackError::BadAddress)?;
        let handle = self.sockets.add(s);
        self.table.insert(id, Kind::Tcp(handle));
        Ok(id)
    }

    fn ephemeral_port(&mut self) -> Result<u16, StackError> {
        for _ in 0..=(u16::MAX - EPHEMERAL_FIRST) {
            let p = self.next_port;
            self.next_port = if p == u16::MAX { EPHEMERAL_FIRST } else { p + 1 };
            if !self.port_taken(p) {
                return Ok(p);
            }
        }
        Err(StackError::TooManySockets { limit: MAX_SOCKETS })
    }

    /// Binds a UDP socket to `port` (0: an ephemeral port).
    pub fn udp_bind(&mut self, port: u16) -> Result<(SocketId, u16), StackError> {
        let port = if port == 0 { self.ephemeral_port()? } else { port };
        if self.port_taken(port) {
            return Err(StackError::PortInUse(port));
        }
        let id = self.new_id(1)?;
        let meta = || vec![udp::PacketMetadata::EMPTY; UDP_DATAGRAMS];
        let mut s = udp::Socket::new(
            udp::PacketBuffer::new(meta(), vec![0; UDP_BUFFER_BYTES]),
            udp::PacketBuffer::new(meta(), vec![0; UDP_BUFFER_BYTES]),
        );
        s.bind(IpListenEndpoint { addr: None, port }).map_err(|_| StackError::BadAddress)?;
        let handle = self.sockets.add(s);
        self.table.insert(id, Kind::Udp { port, handle });
        Ok((id, port))
    }

    fn tcp(&mut self, id: SocketId) -> Result<&mut tcp::Socket<'static>, StackError> {
        match self.table.get(&id) {
            Some(Kind::Tcp(h)) => Ok(self.sockets.get_mut::<tcp::Socket>(*h)),
            Some(_) => Err(StackError::WrongKind(id)),
            None => Err(StackError::NoSocket(id)),
        }
    }

    fn udp(&mut self, id: SocketId) -> Result<&mut udp::Socket<'static>, StackError> {
        match self.table.get(&id) {
            Some(Kind::Udp { handle, .. }) => Ok(self.sockets.get_mut::<udp::Socket>(*handle)),
            Some(_) => Err(StackError::WrongKind(id)),
            None => Err(StackError::NoSocket(id)),
        }
    }

    /// The state of a TCP connection or listener.
    pub fn tcp_state(&mut self, id: SocketId) -> Result<TcpState, StackError> {
        let s = match self.table.get(&id) {
            Some(Kind::Tcp(h)) => self.sockets.get::<tcp::Socket>(*h).state(),
            // A listener is listening (whatever its backlog's handshakes do).
            Some(Kind::Listener { .. }) => tcp::State::Listen,
            Some(Kind::Udp { .. }) => return Err(StackError::WrongKind(id)),
            None => return Err(StackError::NoSocket(id)),
        };
        Ok(match s {
            tcp::State::Listen | tcp::State::SynSent | tcp::State::SynReceived => TcpState::Pending,
            tcp::State::Established => TcpState::Established,
            tcp::State::CloseWait => TcpState::PeerClosed,
            _ => TcpState::Closed,
        })
    }

    /// The far end of a TCP connection, once it has one.
    pub fn remote(&mut self, id: SocketId) -> Result<Option<(Ipv4Addr, u16)>, StackError> {
        let e = self.tcp(id)?.remote_endpoint();
        Ok(e.map(|e| {
            let IpAddress::Ipv4(ip) = e.addr;
            (ip, e.port)
        }))
    }

    /// A TCP connection's own port, once it has one.
    pub fn local_port(&mut self, id: SocketId) -> Result<u16, StackError> {
        self.tcp(id)?.local_endpoint().map(|e| e.port).ok_or(StackError::NotConnected(id))
    }

    /// Queues what fits of `data` on a TCP connection: how many bytes it
    /// took (0 when its send buffer is full).
    pub fn send(&mut self, id: SocketId, data: &[u8]) -> Result<usize, StackError> {
        let s = self.tcp(id)?;
        if !s.may_send() {
            return Err(StackError::NotConnected(id));
        }
        s.send_slice(data).map_err(|_| StackError::NotConnected(id))
    }

    /// Takes up to `max` received bytes from a TCP connection (empty when
    /// none arrived yet). Once the peer closed and everything is read,
    /// [`StackError::NotConnected`].
    pub fn recv(&mut self, id: SocketId, max: usize) -> Result<Vec<u8>, StackError> {
        let s = self.tcp(id)?;
        if !s.can_recv() {
            return if s.may_recv() || matches!(s.state(), tcp::State::SynSent | tcp::State::SynReceived) {
                Ok(Vec::new())
            } else {
                Err(StackError::NotConnected(id))
            };
        }
        let mut buf = vec![0u8; max.min(TCP_BUFFER_BYTES)];
        let n = s.recv_slice(&mut buf).map_err(|_| StackError::NotConnected(id))?;
        buf.truncate(n);
        Ok(buf)
    }

    /// Sends one datagram from a UDP socket; `false` when its send buffer
    /// has no room now.
    pub fn send_to(&mut self, id: SocketId, ip: Ipv4Addr, port: u16, data: &[u8]) -> Result<bool, StackError> {
        if port == 0 || ip.is_unspecified() || data.len() > UDP_BUFFER_BYTES {
            return Err(StackError::BadAddress);
        }
        let s = self.udp(id)?;
        match s.send_slice(data, IpEndpoint::new(IpAddress::Ipv4(ip), port)) {
            Ok(()) => Ok(true),
            Err(udp::SendError::BufferFull) => Ok(false),
            Err(udp::SendError::Unaddressable) => Err(StackError::BadAddress),
        }
    }

    /// The next datagram a UDP socket received, with its sender (at most
    /// `max` bytes of it; the rest is cut off).
    pub fn recv_from(&mut self, id: SocketId, max: usize) -> Result<Option<(Vec<u8>, Ipv4Addr, u16)>, StackError> {
        let s = self.udp(id)?;
        match s.recv() {
            Ok((data, meta)) => {
                let IpAddress::Ipv4(ip) = meta.endpoint.addr;
                Ok(Some((data[..data.len().min(max)].to_vec(), ip, meta.endpoint.port)))
            }
            Err(_) => Ok(None),
        }
    }

    /// Closes a socket: a TCP connection sends FIN (what was queued goes
    /// first) and its slot is freed; the id is no longer valid.
    pub fn close(&mut self, id: SocketId) -> Result<(), StackError> {
        let kind = self.table.remove(&id).ok_or(StackError::NoSocket(id))?;
        match kind {
            Kind::Tcp(h) => {
                // The FIN goes out on the next poll; smoltcp keeps the
                // socket until then, we keep it as an orphan below.
                let s = self.sockets.get_mut::<tcp::Socket>(h);
                s.close();
                s.set_timeout(Some(smoltcp::time::Duration::from_millis(CLOSING_TIMEOUT_MS)));
                self.orphans_push(h);
            }
            Kind::Listener { backlog, .. } => {
                // Handshakes under way are reset.
                for h in backlog {
                    self.sockets.get_mut::<tcp::Socket>(h).abort();
                    self.orphans_push(h);
                }
            }
            Kind::Udp { handle, .. } => {
                self.sockets.remove(handle);
            }
        }
        Ok(())
    }

    fn orphans_push(&mut self, h: SocketHandle) {
        // A closed connection's socket lives until its FIN is acknowledged
        // or it times out; `reap` frees it then.
        self.orphans.push(h);
    }

    /// Frees closed connections' sockets whose close finished.
    fn reap(&mut self) {
        let sockets = &mut self.sockets;
        self.orphans.retain(|h| {
            let done = matches!(sockets.get::<tcp::Socket>(*h).state(), tcp::State::Closed | tcp::State::TimeWait);
            if done {
                sockets.remove(*h);
            }
            !done
        });
    }

    /// smoltcp sockets open (listeners' backlogs included; closed
    /// connections still finishing not counted).
    #[must_use]
    pub fn sockets_open(&self) -> usize {
        self.table.values().map(Kind::sockets).sum()
    }

    /// smoltcp sockets held in all (closed connections still finishing
    /// included): at most [`MAX_SOCKETS`].
    #[must_use]
    pub fn sockets_held(&self) -> usize {
        self.in_use()
    }
}

impl Kind {
    /// The smoltcp sockets it holds.
    fn sockets(&self) -> usize {
        match self {
            Kind::Listener { backlog, .. } => backlog.len(),
            Kind::Tcp(_) | Kind::Udp { .. } => 1,
        }
    }
}

/// The host stack's end of a VNIC's frame rings: the same role as a VMM's
/// `FrameLink` (frames to netd's switch on one ring, frames from it on the
/// other), over a region the switch's fabric formatted.
pub struct RingPort {
    to_netd: Producer,
    from_netd: Consumer,
    waiting: VecDeque<Vec<u8>>,
    buf: Vec<u8>,
    next_poll_ns: Option<u64>,
}

impl RingPort {
    /// The port over `region` (its header checked here).
    pub fn new(region: &dyn RingRegion) -> Result<Self, FrameRingError> {
        let g = Geometry::from_header(region)?;
        Ok(Self {
            to_netd: Producer::new(g, Direction::ToNetd),
            from_netd: Consumer::new(g, Direction::ToVmm),
            waiting: VecDeque::new(),
            buf: vec![0; g.slot_bytes],
            next_poll_ns: None,
        })
    }

    /// One round both ways: frames the stack sent into the ring, frames
    /// the switch delivered into the stack, then a poll of the stack.
    /// Returns whether the switch should be signalled (frames went in).
    pub fn pump(&mut self, region: &mut dyn RingRegion, stack: &mut HostStack, now_ns: u64) -> Result<bool, FrameRingError> {
        let got = self.from_netd.pop_all(region, &mut self.buf, RX_QUEUE as u32, |f| stack.push_rx(f))?;
        if got > 0 || self.waiting.is_empty() {
            self.next_poll_ns = stack.poll(now_ns);
        }
        self.waiting.extend(stack.take_tx());
        let n = self.to_netd.push_all(region, self.waiting.iter().map(|f| f.as_slice()))?;
        self.waiting.drain(..n);
        Ok(n > 0)
    }

    /// When the stack wants to be polled again (its timers: retransmits,
    /// ARP, DHCP), as of the last [`RingPort::pump`] that polled it.
    pub fn next_poll_ns(&self) -> Option<u64> {
        self.next_poll_ns
    }

    /// Frames the stack sent that the ring had no room for yet.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }
}
