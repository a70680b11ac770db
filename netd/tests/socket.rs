//! The `socket` interface through libipc's in-process transport: netd's
//! socket server on its own thread over the host stack, wired to a peer
//! machine's stack (another smoltcp stack, the "remote end"), with clients
//! told apart by their badges.

use std::sync::{Arc, Mutex};

use libipc::blkring::RingRegion;
use libipc::interfaces::{Datagram, SOCKET_INLINE_MAX, SocketError, SocketState, socket};
use netd::sockets::{PER_CLIENT_SOCKETS, SocketServer};
use netd::stack::{LISTEN_BACKLOG, MAX_SOCKETS, TcpState};
use netd_testkit::{HOST_IP, PEER_IP, Shared as Buffer, SocketRig, ToPeer};

type Server = SocketServer<Buffer, ToPeer>;
type Rig = SocketRig<Buffer>;

/// The server on its thread; clients are `rig.client.badged(n)`. The
/// buffers are given before it starts: `buffers` (badge, bytes).
fn rig(buffers: &[(u64, Buffer)]) -> Rig {
    SocketRig::start(buffers)
}

fn finish(rig: Rig) -> Server {
    rig.finish()
}

#[test]
fn a_client_accepts_a_connection_and_moves_bulk_data_through_its_buffer() {
    let buf = Buffer(Arc::new(Mutex::new(vec![0; 64 * 1024])));
    let r = rig(&[(1, buf.clone())]);
    let a = socket::Client::new(r.client.badged(1));
    assert_eq!(a.buffer().unwrap(), Ok(64 * 1024));
    let l = a.listen(80).unwrap().unwrap();
    assert_eq!(a.accept(l).unwrap(), Ok(None), "nobody connected yet");
    let pc = r.peer.lock().unwrap().connect(HOST_IP, 80).unwrap();
    let conn = (0..50).find_map(|_| a.accept(l).unwrap().unwrap()).expect("accepted");
    assert_eq!(a.state(conn).unwrap(), Ok(SocketState::Established));
    assert_eq!(r.peer.lock().unwrap().tcp_state(pc), Ok(TcpState::Established));

    // Peer to client: 200 KB, read through the shared buffer.
    let up: Vec<u8> = (0..200_000u32).map(|i| (i * 31 + i / 977) as u8).collect();
    let (mut sent, mut got) = (0, Vec::new());
    for _ in 0..10_000 {
        if sent < up.len() {
            sent += r.peer.lock().unwrap().send(pc, &up[sent..]).unwrap();
        }
        let n = a.recv_buffered(conn, 1000, 32 * 1024).unwrap().unwrap() as usize;
        let mut chunk = vec![0; n];
        buf.read(1000, &mut chunk);
        got.extend(chunk);
        if got.len() == up.len() {
            break;
        }
    }
    assert!(got == up, "peer to client: {} of {} bytes, the same", got.len(), up.len());

    // Client to peer: 150 KB written into the buffer, sent from there.
    let down: Vec<u8> = (0..150_000u32).map(|i| (i * 17 + 3) as u8).collect();
    let (mut sent, mut got) = (0, Vec::new());
    for _ in 0..10_000 {
        if sent < down.len() {
            let chunk = &down[sent..down.len().min(sent + 60_000)];
            let mut w = buf.clone();
            w.write(0, chunk);
            sent += a.send_buffered(conn, 0, chunk.len() as u32).unwrap().unwrap() as usize;
        } else {
            assert_eq!(a.state(conn).unwrap(), Ok(SocketState::Established));
        }
        got.extend(r.peer.lock().unwrap().recv(pc, 65536).unwrap());
        if got.len() == down.len() {
            break;
        }
    }
    assert!(got == down, "client to peer: {} of {} bytes, the same", got.len(), down.len());

    // Small data inline, both ways; then the client closes.
    assert_eq!(a.send(conn, b"hello".to_vec()).unwrap(), Ok(5));
    r.peer.lock().unwrap().send(pc, b"world").unwrap();
    let mut inline = Vec::new();
    for _ in 0..20 {
        inline.extend(a.recv(conn, 100).unwrap().unwrap());
        if inline.len() == 5 {
            break;
        }
    }
    assert_eq!(inline, b"world");
    assert_eq!(r.peer.lock().unwrap().recv(pc, 100).unwrap(), b"hello");
    a.close(conn).unwrap().unwrap();
    assert_eq!(a.state(conn).unwrap(), Err(SocketError::NoSuchSocket { socket: conn }), "a closed handle is stale");
    let _ = a.state(l).unwrap();
    assert_eq!(r.peer.lock().unwrap().tcp_state(pc), Ok(TcpState::PeerClosed), "the FIN reached the peer");
    drop(a);
    let server = finish(r);
    assert_eq!(server.sockets_of(1), LISTEN_BACKLOG, "the listener (its backlog) is still the client's");
}

#[test]
fn a_client_connects_out_and_uses_udp() {
    let r = rig(&[]);
    let c = socket::Client::new(r.client.badged(3));
    let pl = r.peer.lock().unwrap().listen(7000).unwrap();
    let conn = c.connect(PEER_IP.octets(), 7000).unwrap().unwrap();
    let pc = (0..50)
        .find_map(|_| {
            let _ = c.state(conn).unwrap();
            r.peer.lock().unwrap().accept(pl).unwrap()
        })
        .expect("the peer accepted");
    assert_eq!(c.state(conn).unwrap(), Ok(SocketState::Established));
    assert_eq!(c.send(conn, vec![9; SOCKET_INLINE_MAX as usize]).unwrap(), Ok(SOCKET_INLINE_MAX));
    let _ = c.state(conn).unwrap();
    assert_eq!(r.peer.lock().unwrap().recv(pc, 4096).unwrap(), vec![9; SOCKET_INLINE_MAX as usize]);

    // UDP both ways.
    let (u, port) = c.udp_bind(0).unwrap().unwrap();
    assert!(port >= 49152);
    let (pu, _) = r.peer.lock().unwrap().udp_bind(5353).unwrap();
    assert_eq!(c.send_to(u, PEER_IP.octets(), 5353, b"query".to_vec()).unwrap(), Ok(true));
    let _ = c.state(conn).unwrap();
    let (d, from, from_port) = r.peer.lock().unwrap().recv_from(pu, 100).unwrap().expect("a datagram");
    assert_eq!((d.as_slice(), from, from_port), (&b"query"[..], HOST_IP, port));
    r.peer.lock().unwrap().send_to(pu, HOST_IP, port, b"answer").unwrap();
    let got = (0..10).find_map(|_| c.recv_from(u, 100).unwrap().unwrap());
    assert_eq!(got, Some(Datagram { data: b"answer".to_vec(), ip: PEER_IP.octets(), port: 5353 }));
    drop(c);
    finish(r);
}

#[test]
fn abuse_gets_clear_errors_and_one_client_cannot_starve_the_others() {
    let small = Buffer(Arc::new(Mutex::new(vec![0; 4096])));
    let r = rig(&[(1, small)]);
    let a = socket::Client::new(r.client.badged(1));
    let b = socket::Client::new(r.client.badged(2));
    let l = a.listen(80).unwrap().unwrap();
    let (u, _) = a.udp_bind(0).unwrap().unwrap();

    // Another client's handles are not its own, nor are made-up ones.
    assert_eq!(b.state(l).unwrap(), Err(SocketError::NoSuchSocket { socket: l }));
    assert_eq!(b.close(l).unwrap(), Err(SocketError::NoSuchSocket { socket: l }));
    assert_eq!(b.recv_from(u, 10).unwrap(), Err(SocketError::NoSuchSocket { socket: u }));
    assert_eq!(b.send(u32::MAX, vec![1]).unwrap(), Err(SocketError::NoSuchSocket { socket: u32::MAX }));
    assert_eq!(a.state(l).unwrap(), Ok(SocketState::Pending), "still the owner's");
    // The wrong kind of socket.
    assert_eq!(a.send(l, vec![1]).unwrap(), Err(SocketError::WrongKind { socket: l }));
    assert_eq!(a.accept(u).unwrap(), Err(SocketError::WrongKind { socket: u }));
    assert_eq!(a.state(u).unwrap(), Err(SocketError::WrongKind { socket: u }));
    // Ports and addresses.
    assert_eq!(b.listen(80).unwrap(), Err(SocketError::PortInUse { port: 80 }));
    assert_eq!(b.listen(0).unwrap(), Err(SocketError::BadAddress));
    assert_eq!(b.connect([0, 0, 0, 0], 80).unwrap(), Err(SocketError::BadAddress));
    assert_eq!(b.connect([255; 4], 80).unwrap(), Err(SocketError::BadAddress));
    assert_eq!(b.connect(PEER_IP.octets(), 0).unwrap(), Err(SocketError::BadAddress));
    // Huge sizes.
    let max = SOCKET_INLINE_MAX;
    assert_eq!(a.recv_from(u, u32::MAX).unwrap(), Err(SocketError::TooLarge { bytes: u64::from(u32::MAX), max }));
    let conn_less = a.send_to(u, PEER_IP.octets(), 9, vec![0; max as usize + 1]).unwrap();
    assert_eq!(conn_less, Err(SocketError::TooLarge { bytes: u64::from(max) + 1, max }));
    assert_eq!(b.buffer().unwrap(), Err(SocketError::NoBuffer));
    assert_eq!(a.buffer().unwrap(), Ok(4096));
    let pl = r.peer.lock().unwrap().listen(7000).unwrap();
    let conn = a.connect(PEER_IP.octets(), 7000).unwrap().unwrap();
    assert_eq!(a.recv(conn, u32::MAX).unwrap(), Err(SocketError::TooLarge { bytes: u64::from(u32::MAX), max }));
    let outside = |offset, len, size| Err(SocketError::OutsideBuffer { offset, len, size });
    assert_eq!(a.send_buffered(conn, 0, 4097).unwrap(), outside(0, 4097, 4096));
    assert_eq!(a.send_buffered(conn, u32::MAX, u32::MAX).unwrap(), outside(u32::MAX, u32::MAX, 4096));
    assert_eq!(a.recv_buffered(conn, 4000, 97).unwrap(), outside(4000, 97, 4096));
    assert_eq!(a.recv_buffered(conn, 4000, 96).unwrap(), Ok(0), "the last bytes of the buffer are fine");
    let pc = (0..50).find_map(|_| r.peer.lock().unwrap().accept(pl).unwrap());
    assert!(pc.is_some());
    // Malformed request bytes are refused, not a crash.
    use libipc::Transport;
    assert!(r.client.badged(2).call(socket::ID, &[0xff; 9]).is_err());

    // Too many sockets: a client's share ends at PER_CLIENT_SOCKETS (the
    // listener counts its backlog)...
    for i in 0..PER_CLIENT_SOCKETS - 2 - LISTEN_BACKLOG {
        a.udp_bind(6000 + i as u16).unwrap().unwrap();
    }
    let limit = PER_CLIENT_SOCKETS as u32;
    assert_eq!(a.udp_bind(0).unwrap(), Err(SocketError::TooManySockets { limit }));
    assert_eq!(a.listen(81).unwrap(), Err(SocketError::TooManySockets { limit }));
    assert_eq!(a.connect(PEER_IP.octets(), 7000).unwrap(), Err(SocketError::TooManySockets { limit }));
    // ...and the others still get theirs.
    assert!(b.udp_bind(0).unwrap().is_ok());
    // Closing one makes room again.
    a.close(u).unwrap().unwrap();
    assert!(a.udp_bind(0).unwrap().is_ok());
    // The stack's own limit, reached by many clients, is a clear error too.
    let mut clients = vec![];
    let mut refused = None;
    for badge in 10..20 {
        let c = socket::Client::new(r.client.badged(badge));
        for _ in 0..PER_CLIENT_SOCKETS {
            if let Err(e) = c.udp_bind(0).unwrap() {
                refused = Some(e);
                break;
            }
        }
        clients.push(c);
        if refused.is_some() {
            break;
        }
    }
    assert_eq!(refused, Some(SocketError::StackFull { limit: MAX_SOCKETS as u32 }));
    drop((a, b, clients));
    let mut server = finish(r);
    // A client that ends loses its sockets; the stack gets them back.
    assert_eq!(server.sockets_of(1), PER_CLIENT_SOCKETS);
    let before = server.stack().sockets_open();
    assert_eq!(server.client_gone(1), PER_CLIENT_SOCKETS);
    assert_eq!(server.sockets_of(1), 0);
    assert_eq!(server.stack().sockets_open(), before - PER_CLIENT_SOCKETS);
}
