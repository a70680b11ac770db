//! The host stack's listeners against peers that misbehave, stack to stack
//! (no IPC): a peer that sends its SYN and vanishes (or whose host-side
//! client was killed in the middle of the handshake, as QEMU's user
//! network then leaves it), more connections at once than the backlog, and
//! a peer that vanishes while the host closes. Before the backlog, the
//! first left the listener's only socket half-open and every other
//! connection was reset until the handshake timed out.

use std::net::Ipv4Addr;

use netd::stack::{AddressConfig, CLOSING_TIMEOUT_MS, HALF_OPEN_TIMEOUT_MS, HostStack, LISTEN_BACKLOG, MAX_SOCKETS, SocketId, StackError, TcpState};

const HOST: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const PEER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const GHOST: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 3);

fn stack(last: u8, ip: Ipv4Addr) -> HostStack {
    HostStack::new([2, 0, 0, 0, 0, last], AddressConfig::Static { ip, prefix: 24, gateway: None }, u64::from(last), 0).unwrap()
}

/// Three machines on one segment; the ghost hears the others only while
/// `ghost_hears`. Time moves 1 ms a step.
struct Net {
    host: HostStack,
    peer: HostStack,
    ghost: HostStack,
    ghost_hears: bool,
    /// Whether what the ghost sends reaches the others.
    ghost_speaks: bool,
    now: u64,
    /// SYNs the ghost sent.
    ghost_syns: usize,
    /// The last SYN the peer sent.
    peer_syn: Option<Vec<u8>>,
}

fn is_syn(f: &[u8]) -> bool {
    f.len() > 14 + 20 + 13 && f[12..14] == [8, 0] && f[14 + 9] == 6 && f[14 + 20 + 13] & 0x12 == 0x02
}

impl Net {
    fn new() -> Self {
        Self { host: stack(1, HOST), peer: stack(2, PEER), ghost: stack(3, GHOST), ghost_hears: true, ghost_speaks: true, now: 0, ghost_syns: 0, peer_syn: None }
    }

    fn step(&mut self) {
        self.now += 1_000_000;
        self.host.poll(self.now);
        self.peer.poll(self.now);
        self.ghost.poll(self.now);
        for f in self.host.take_tx() {
            self.peer.push_rx(&f);
            if self.ghost_hears {
                self.ghost.push_rx(&f);
            }
        }
        for f in self.peer.take_tx() {
            if is_syn(&f) {
                self.peer_syn = Some(f.clone());
            }
            self.host.push_rx(&f);
            self.ghost.push_rx(&f);
        }
        for f in self.ghost.take_tx() {
            if !self.ghost_speaks {
                continue;
            }
            self.ghost_syns += usize::from(is_syn(&f));
            self.host.push_rx(&f);
            self.peer.push_rx(&f);
        }
    }

    fn steps(&mut self, n: usize) {
        for _ in 0..n {
            self.step();
        }
    }

    /// The ghost sends a SYN to `port` and is gone (it hears the host's
    /// answer to its first ARP request only, and nothing it sends after
    /// its SYN arrives: no retransmits).
    fn half_open(&mut self, port: u16) {
        self.ghost_hears = self.ghost_syns == 0;
        self.ghost_speaks = true;
        self.ghost.connect(HOST, port).unwrap();
        let before = self.ghost_syns;
        for _ in 0..100 {
            self.step();
            if self.ghost_syns > before {
                self.ghost_hears = false;
                self.ghost_speaks = false;
                return;
            }
        }
        panic!("the ghost sent no SYN");
    }

    fn peer_port(&mut self, pc: SocketId) -> u16 {
        self.peer.local_port(pc).unwrap()
    }

    /// Accepts on `l` until a connection comes (at most `n` steps).
    fn accept(&mut self, l: SocketId, n: usize) -> Option<SocketId> {
        for _ in 0..n {
            if let Some(c) = self.host.accept(l).unwrap() {
                return Some(c);
            }
            self.step();
        }
        None
    }
}

#[test]
fn a_peer_that_vanishes_in_the_handshake_does_not_block_the_listener() {
    let mut net = Net::new();
    let l = net.host.listen(80).unwrap();
    assert_eq!(net.host.sockets_open(), LISTEN_BACKLOG);
    net.half_open(80);
    // Several vanish: the backlog still has a socket listening.
    net.half_open(80);
    // New connections at once, one after the other, all served.
    for i in 0..5 {
        let pc = net.peer.connect(HOST, 80).unwrap();
        net.steps(20);
        assert_eq!(net.peer.tcp_state(pc), Ok(TcpState::Established), "connection {i} after the half-open ones");
        let c = net.accept(l, 5).expect("accepted");
        assert_eq!(net.host.remote(c), Ok(Some((PEER, net.peer_port(pc)))), "connection {i} is the peer's");
        net.peer.send(pc, b"ping").unwrap();
        let mut got = Vec::new();
        for _ in 0..50 {
            net.step();
            got.extend(net.host.recv(c, 100).unwrap());
        }
        assert_eq!(got, b"ping", "connection {i}: {:?} {:?}", net.host.tcp_state(c), net.peer.tcp_state(pc));
        net.host.close(c).unwrap();
        net.peer.close(pc).unwrap();
        net.steps(20);
    }
    // The half-open handshakes time out, and their sockets listen again:
    // the whole backlog takes connections at once.
    net.steps(HALF_OPEN_TIMEOUT_MS as usize + 1000);
    assert_eq!(net.host.sockets_held(), LISTEN_BACKLOG, "only the backlog is left");
    let pcs: Vec<_> = (0..LISTEN_BACKLOG).map(|_| net.peer.connect(HOST, 80).unwrap()).collect();
    net.steps(30);
    for pc in &pcs {
        assert_eq!(net.peer.tcp_state(*pc), Ok(TcpState::Established));
    }
    for _ in 0..LISTEN_BACKLOG {
        assert!(net.host.accept(l).unwrap().is_some());
    }
    assert_eq!(net.host.accept(l).unwrap(), None);
}

#[test]
fn more_connections_at_once_than_the_backlog_are_refused_then_served() {
    let mut net = Net::new();
    let l = net.host.listen(8080).unwrap();
    // 12 at once, nobody accepting: the backlog's handshakes finish, the
    // rest are reset (the peer sees them closed, none left pending).
    let pcs: Vec<_> = (0..12).map(|_| net.peer.connect(HOST, 8080).unwrap()).collect();
    net.steps(50);
    let states: Vec<_> = pcs.iter().map(|pc| net.peer.tcp_state(*pc).unwrap()).collect();
    let up = states.iter().filter(|s| **s == TcpState::Established).count();
    let refused = states.iter().filter(|s| **s == TcpState::Closed).count();
    assert_eq!((up, refused), (LISTEN_BACKLOG, 12 - LISTEN_BACKLOG), "{states:?}");
    assert!(net.host.sockets_held() <= MAX_SOCKETS);
    // The waiting ones are accepted and answered; the peer drops them all.
    let mut served = 0;
    while let Some(c) = net.host.accept(l).unwrap() {
        net.host.send(c, b"hello").unwrap();
        net.host.close(c).unwrap();
        served += 1;
    }
    assert_eq!(served, LISTEN_BACKLOG);
    net.steps(20);
    for pc in pcs {
        let _ = net.peer.recv(pc, 100);
        net.peer.close(pc).unwrap();
    }
    net.steps(100);
    assert_eq!(net.host.sockets_held(), LISTEN_BACKLOG, "every connection's socket came back");
    // Then new connections are served.
    for _ in 0..3 {
        let pc = net.peer.connect(HOST, 8080).unwrap();
        net.steps(20);
        assert_eq!(net.peer.tcp_state(pc), Ok(TcpState::Established));
        assert!(net.accept(l, 5).is_some());
    }
}

#[test]
fn a_connection_closed_after_its_peer_vanished_gives_its_socket_back() {
    let mut net = Net::new();
    let l = net.host.listen(80).unwrap();
    let gc = net.ghost.connect(HOST, 80).unwrap();
    net.ghost_hears = true;
    net.steps(20);
    assert_eq!(net.ghost.tcp_state(gc), Ok(TcpState::Established));
    let c = net.accept(l, 5).expect("accepted");
    // The ghost goes; the host's FIN is never acknowledged.
    net.ghost_hears = false;
    net.ghost_speaks = false;
    net.host.send(c, &[7; 3000]).unwrap();
    net.host.close(c).unwrap();
    net.steps(100);
    assert_eq!(net.host.sockets_held(), LISTEN_BACKLOG + 1, "still trying to finish");
    net.steps(CLOSING_TIMEOUT_MS as usize + 1000);
    assert_eq!(net.host.sockets_held(), LISTEN_BACKLOG, "dropped after the closing timeout");
}

#[test]
fn the_stack_refuses_sockets_past_its_limit_and_keeps_listeners_short_meanwhile() {
    let mut net = Net::new();
    let l = net.host.listen(80).unwrap();
    let mut udp = Vec::new();
    let refused = loop {
        match net.host.udp_bind(0) {
            Ok((u, _)) => udp.push(u),
            Err(e) => break e,
        }
        assert!(udp.len() <= MAX_SOCKETS);
    };
    assert_eq!(refused, StackError::TooManySockets { limit: MAX_SOCKETS });
    assert_eq!(net.host.sockets_held(), MAX_SOCKETS);
    assert_eq!(net.host.listen(81), Err(StackError::TooManySockets { limit: MAX_SOCKETS }));
    // A connection still arrives through the backlog, and is accepted
    // although the stack is full (its socket was there already); the
    // backlog is short by one until room comes back.
    let pc = net.peer.connect(HOST, 80).unwrap();
    net.steps(20);
    assert_eq!(net.peer.tcp_state(pc), Ok(TcpState::Established));
    let c = net.accept(l, 5).expect("accepted while full");
    assert_eq!(net.host.sockets_held(), MAX_SOCKETS);
    assert_eq!(net.host.sockets_open(), MAX_SOCKETS);
    net.host.close(udp.pop().unwrap()).unwrap();
    net.steps(2);
    assert_eq!(net.host.sockets_held(), MAX_SOCKETS, "the backlog took the freed slot");
    net.host.close(c).unwrap();
    net.peer.close(pc).unwrap();
    net.host.close(l).unwrap();
    net.steps(50);
    assert_eq!(net.host.sockets_held(), udp.len(), "the listener's backlog is gone with it");
}

/// A peer's SYN sent again (its retransmit, late behind the host's
/// SYN-ACK, as QEMU's user network sends one when the host answers slowly)
/// after the connection was accepted and a listening socket took a lower
/// slot than the connection's: the connection keeps its bytes. Before,
/// smoltcp gave the SYN to the first socket that takes it, the listening
/// one, which then took (and reset) every later segment of the connection.
#[test]
fn a_retransmitted_syn_does_not_take_an_accepted_connection() {
    let mut net = Net::new();
    let l = net.host.listen(7).unwrap();
    // A first connection, accepted, closed and gone: its slot is free.
    let pc = net.peer.connect(HOST, 7).unwrap();
    net.steps(20);
    let c = net.accept(l, 5).expect("first accepted");
    net.host.close(c).unwrap();
    net.peer.close(pc).unwrap();
    net.steps(CLOSING_TIMEOUT_MS as usize + 1000);
    assert_eq!(net.host.sockets_held(), LISTEN_BACKLOG);
    // The second arrives, then is accepted: the backlog's new socket
    // listens in the first connection's (lower) slot.
    let pc = net.peer.connect(HOST, 7).unwrap();
    net.steps(20);
    assert_eq!(net.peer.tcp_state(pc), Ok(TcpState::Established));
    let syn = net.peer_syn.clone().expect("the peer's SYN");
    let c = net.accept(l, 5).expect("second accepted");
    // Its SYN again, then data both ways.
    net.host.push_rx(&syn);
    net.steps(5);
    let up: Vec<u8> = (0..20_000u32).map(|i| (i * 7 + 3) as u8).collect();
    let (mut sent, mut got, mut back, mut pending) = (0, Vec::<u8>::new(), Vec::new(), Vec::<u8>::new());
    for _ in 0..5000 {
        if sent < up.len() {
            sent += net.peer.send(pc, &up[sent..]).unwrap_or(0);
        }
        net.step();
        if pending.is_empty() {
            pending = net.host.recv(c, 2048).unwrap_or_default();
            got.extend(&pending);
        }
        let n = net.host.send(c, &pending).unwrap_or(0);
        pending.drain(..n);
        back.extend(net.peer.recv(pc, 4096).unwrap_or_default());
        if back.len() == up.len() {
            break;
        }
    }
    assert_eq!(got.len(), up.len(), "the host got the peer's bytes: {:?} {:?}", net.host.tcp_state(c), net.peer.tcp_state(pc));
    assert_eq!(back, up, "the peer got them back");
    assert_eq!(net.host.tcp_state(c), Ok(TcpState::Established));
    assert_eq!(net.peer.tcp_state(pc), Ok(TcpState::Established));
}
