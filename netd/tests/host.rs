//! netd as its process serves it (`netd::host::Netd`): the host's TCP/IP
//! on a VNIC of the `admin` switch, reached by a guest through a VMM's
//! ring (the VMM's side of the region, with a smoltcp stack as the guest's
//! OS), and the `socket` interface served on the same endpoint as `vnic`,
//! over the in-process transport with badged clients.

use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::thread;

use libipc::IpcError;
use libipc::blkring::RingRegion;
use libipc::framering::{Consumer, Direction, Geometry, Producer};
use libipc::in_process::{ClientEnd, channel};
use libipc::interfaces::{SocketError, SocketState, socket, vnic};
use netd::host::Netd;
use netd::stack::{AddressConfig, HostStack, RingPort, TcpState};
use netd::vnics::NetConfig;
use netd_testkit::{Platform, Seen, Shared, ether};

const VMM: u64 = 3;
const HTTP: u64 = 5;
const OTHER: u64 = 6;
const GUEST_MAC: [u8; 6] = [0x02, 0x08, 0x20, 0, 0, 1];
const HOST_MAC: [u8; 6] = [0x02, 0x08, 0x20, 0xff, 0, 1];
const GUEST_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 20);
const HOST_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 15);

const CONF: &str = "\
nic_tag admin
vnic client=3 switch=admin mac=02:08:20:00:00:01 ip=10.0.2.20
host switch=admin mac=02:08:20:ff:00:01 ip=10.0.2.15/24 gateway=10.0.2.2 echo=7
";

/// netd on its thread: regions made in order, time moving 1 ms each
/// time netd looks, what the next request "brings" (a client's frame) in
/// `seen.bring`.
struct Rig {
    seen: Arc<Mutex<Seen>>,
    unbadged: ClientEnd,
    server: thread::JoinHandle<String>,
}

fn rig(conf: &str) -> Rig {
    let config = NetConfig::parse(conf).unwrap();
    let (platform, seen) = Platform::new(Seen { tick_ns: 1_000_000, ..Seen::default() });
    let (unbadged, mut end) = channel(8);
    let server = thread::spawn(move || {
        let mut n = Netd::new(&config, platform, 1);
        end.serve_until_closed(&mut n);
        n.status_text()
    });
    Rig { seen, unbadged, server }
}

/// The guest: its VMM's vnic client, the VMM's side of the ring, and a
/// smoltcp stack as its OS.
struct Guest {
    vnic: vnic::Client<ClientEnd>,
    handle: u32,
    region: Shared,
    port: RingPort,
    os: HostStack,
    seen: Arc<Mutex<Seen>>,
}

impl Guest {
    fn attach(r: &Rig) -> Self {
        let vnic = vnic::Client::new(r.unbadged.badged(VMM));
        let a = vnic.attach(0, 0).unwrap().unwrap();
        let region = r.seen.lock().unwrap().regions.last().unwrap().clone();
        let port = RingPort::new(&region).unwrap();
        let os = HostStack::new(GUEST_MAC, AddressConfig::Static { ip: GUEST_IP, prefix: 24, gateway: None }, 2, 0).unwrap();
        Self { vnic, handle: a.handle, region, port, os, seen: r.seen.clone() }
    }

    /// The guest's OS runs; its frames go to netd with a kick.
    fn step(&mut self) {
        let now = self.seen.lock().unwrap().now_ns;
        self.port.pump(&mut self.region, &mut self.os, now).unwrap();
        self.vnic.kick(self.handle).unwrap().unwrap();
        self.port.pump(&mut self.region, &mut self.os, now).unwrap();
    }
}

fn checksum(bytes: &[u8]) -> u16 {
    let mut sum = 0u32;
    for c in bytes.chunks(2) {
        sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[test]
fn a_guest_on_the_admin_switch_resolves_and_pings_the_host() {
    let r = rig(CONF);
    let vnic = vnic::Client::new(r.unbadged.badged(VMM));
    let a = vnic.attach(0, 0).unwrap().unwrap();
    let mut region = r.seen.lock().unwrap().regions.last().unwrap().clone();
    let g = Geometry::from_header(&region).unwrap();
    let (mut tx, mut rx) = (Producer::new(g, Direction::ToNetd), Consumer::new(g, Direction::ToVmm));
    let mut exchange = |frame: &[u8]| {
        assert!(tx.push(&mut region, frame).unwrap());
        vnic.kick(a.handle).unwrap().unwrap();
        let mut got = Vec::new();
        let mut buf = vec![0; 2048];
        rx.pop_all(&mut region, &mut buf, 64, |f| got.push(f.to_vec())).unwrap();
        got
    };
    // ARP: who has 10.0.2.15?
    let mut arp = vec![0, 1, 8, 0, 6, 4, 0, 1];
    arp.extend_from_slice(&GUEST_MAC);
    arp.extend_from_slice(&GUEST_IP.octets());
    arp.extend_from_slice(&[0; 6]);
    arp.extend_from_slice(&HOST_IP.octets());
    let got = exchange(&ether([0xff; 6], GUEST_MAC, 0x0806, &arp));
    assert_eq!(got.len(), 1, "one ARP reply: {got:?}");
    assert_eq!(&got[0][20..22], &[0, 2], "an ARP reply");
    assert_eq!((&got[0][22..28], &got[0][28..32]), (&HOST_MAC[..], &HOST_IP.octets()[..]));
    // ICMP echo with 56 bytes of data.
    let data: Vec<u8> = (0..56u8).collect();
    let mut icmp = vec![8, 0, 0, 0, 0x12, 0x34, 0, 1];
    icmp.extend_from_slice(&data);
    let c = checksum(&icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 1, 0, 0];
    ip[2..4].copy_from_slice(&((20 + icmp.len()) as u16).to_be_bytes());
    ip.extend_from_slice(&GUEST_IP.octets());
    ip.extend_from_slice(&HOST_IP.octets());
    let c = checksum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    ip.extend_from_slice(&icmp);
    let got = exchange(&ether(HOST_MAC, GUEST_MAC, 0x0800, &ip));
    assert_eq!(got.len(), 1, "one echo reply: {got:?}");
    let reply = &got[0];
    assert_eq!((&reply[..6], &reply[6..12]), (&GUEST_MAC[..], &HOST_MAC[..]));
    assert_eq!((&reply[26..30], &reply[30..34]), (&HOST_IP.octets()[..], &GUEST_IP.octets()[..]));
    assert_eq!(reply[34], 0, "an echo reply");
    assert_eq!(&reply[38..42], &[0x12, 0x34, 0, 1], "identifier and sequence");
    assert_eq!(&reply[42..42 + data.len()], &data[..]);
    drop(vnic);
    drop(r.unbadged);
    let status = r.server.join().unwrap();
    assert!(status.starts_with("host: address 10.0.2.15/24"), "{status}");
}

#[test]
fn the_echo_service_sends_back_what_a_guest_sends() {
    let r = rig(CONF);
    let mut guest = Guest::attach(&r);
    let conn = guest.os.connect(HOST_IP, 7).unwrap();
    let up: Vec<u8> = (0..60_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
    let (mut sent, mut got) = (0, Vec::new());
    for _ in 0..5_000 {
        guest.step();
        if guest.os.tcp_state(conn).unwrap() == TcpState::Established && sent < up.len() {
            sent += guest.os.send(conn, &up[sent..]).unwrap();
        }
        got.extend(guest.os.recv(conn, 65536).unwrap_or_default());
        if got.len() == up.len() {
            break;
        }
    }
    assert!(got == up, "{} of {} bytes came back, the same", got.len(), up.len());
    // The guest closes; the echo service closes its side too.
    guest.os.close(conn).unwrap();
    for _ in 0..50 {
        guest.step();
    }
    drop(guest);
    drop(r.unbadged);
    let status = r.server.join().unwrap();
    // Only the echo listener is left (its backlog's sockets).
    let open = format!(", {} sockets open", netd::stack::LISTEN_BACKLOG);
    assert!(status.contains(&open), "{status}");
}

#[test]
fn a_server_listens_through_the_socket_interface_and_others_cannot_touch_its_sockets() {
    let r = rig(CONF);
    let mut guest = Guest::attach(&r);
    let http = socket::Client::new(r.unbadged.badged(HTTP));
    let other = socket::Client::new(r.unbadged.badged(OTHER));
    let l = http.listen(8080).unwrap().unwrap();
    assert_eq!(other.listen(8080).unwrap(), Err(SocketError::PortInUse { port: 8080 }));
    assert_eq!(http.listen(7).unwrap(), Err(SocketError::PortInUse { port: 7 }), "the echo service holds 7");
    // The echo service's listener (socket 1) is nobody else's.
    assert_eq!(http.state(1).unwrap(), Err(SocketError::NoSuchSocket { socket: 1 }));
    assert_eq!(other.accept(l).unwrap(), Err(SocketError::NoSuchSocket { socket: l }));
    let conn = guest.os.connect(HOST_IP, 8080).unwrap();
    let mut accepted = None;
    for _ in 0..200 {
        guest.step();
        accepted = http.accept(l).unwrap().unwrap();
        if accepted.is_some() {
            break;
        }
    }
    let c = accepted.expect("the guest's connection was accepted");
    assert_eq!(other.recv(c, 100).unwrap(), Err(SocketError::NoSuchSocket { socket: c }));
    assert_eq!(other.close(c).unwrap(), Err(SocketError::NoSuchSocket { socket: c }));
    assert_eq!(http.recv(c, 1 << 20).unwrap(), Err(SocketError::TooLarge { bytes: 1 << 20, max: 2048 }));
    assert_eq!(http.send_buffered(c, 0, 10).unwrap(), Err(SocketError::NoBuffer));
    let request = b"GET / HTTP/1.0\r\n\r\n";
    let mut sent = 0;
    let mut got = Vec::new();
    for _ in 0..200 {
        if sent < request.len() {
            sent += guest.os.send(conn, &request[sent..]).unwrap();
        }
        guest.step();
        got.extend(http.recv(c, 2048).unwrap().unwrap());
        if got.len() == request.len() {
            break;
        }
    }
    assert_eq!(got, request);
    assert_eq!(http.send(c, b"HTTP/1.0 200 OK\r\n\r\nhello".to_vec()).unwrap(), Ok(24));
    http.close(c).unwrap().unwrap();
    assert_eq!(http.close(c).unwrap(), Err(SocketError::NoSuchSocket { socket: c }), "a closed handle is stale");
    let mut reply = Vec::new();
    for _ in 0..200 {
        guest.step();
        reply.extend(guest.os.recv(conn, 4096).unwrap_or_default());
        if guest.os.tcp_state(conn).unwrap() != TcpState::Established && reply.len() == 24 {
            break;
        }
    }
    assert_eq!(reply, b"HTTP/1.0 200 OK\r\n\r\nhello");
    assert_eq!(guest.os.tcp_state(conn).unwrap(), TcpState::PeerClosed, "the server's FIN arrived");
    assert_eq!(http.state(l).unwrap(), Ok(SocketState::Pending), "the listener listens again");
}

#[test]
fn without_a_host_line_the_socket_interface_is_not_served() {
    let r = rig("nic_tag admin\n");
    let s = socket::Client::new(r.unbadged.badged(HTTP));
    assert_eq!(s.listen(80), Err(IpcError::WrongInterface));
    drop(s);
    drop(r.unbadged);
    let status = r.server.join().unwrap();
    assert!(status.starts_with("host: no address"), "{status}");
}

#[test]
fn a_wrong_host_line_is_named() {
    let err = |conf: &str| NetConfig::parse(conf).unwrap_err().to_string();
    assert_eq!(
        err("nic_tag admin\nhost switch=admin mac=02:08:20:ff:00:01 ip=10.0.2.15\n"),
        "netd.conf line 2: property \"ip\": expected an IPv4 address with its prefix length (10.0.2.15/24), or dhcp, got \"10.0.2.15\""
    );
    assert_eq!(
        err("nic_tag admin\nhost switch=stub mac=02:08:20:ff:00:01 ip=dhcp\n"),
        "netd.conf line 2: property \"switch\": \"stub\" is no etherstub or nic_tag defined"
    );
    assert_eq!(
        err("nic_tag admin\nhost switch=admin ip=dhcp\nhost switch=admin ip=dhcp\n"),
        "netd.conf line 2: property \"mac\" is missing"
    );
    assert_eq!(
        err("nic_tag admin\nhost switch=admin mac=02:08:20:ff:00:01 ip=dhcp\nhost switch=admin mac=02:08:20:ff:00:02 ip=dhcp\n"),
        "netd.conf line 3: a second \"host\" line (the host has one address)"
    );
    assert_eq!(
        err("nic_tag admin\nvnic client=3 switch=admin mac=02:08:20:00:00:01\nhost switch=admin mac=02:08:20:00:00:01 ip=dhcp\n"),
        "netd.conf line 3: property \"mac\": 02:08:20:00:00:01 is already a VNIC's on switch \"admin\""
    );
    assert_eq!(
        err("nic_tag admin\nhost switch=admin mac=02:08:20:ff:00:01 ip=dhcp echo=0\n"),
        "netd.conf line 2: property \"echo\": expected a TCP port, 1 to 65535, got \"0\""
    );
    let ok = NetConfig::parse("nic_tag admin\nhost switch=admin mac=02:08:20:ff:00:01 ip=dhcp\n").unwrap();
    assert_eq!(ok.host.unwrap().addr, AddressConfig::Dhcp);
}

#[test]
fn a_client_shares_a_buffer_and_moves_bulk_data_through_it() {
    let r = rig(CONF);
    let mut guest = Guest::attach(&r);
    let http = socket::Client::new(r.unbadged.badged(HTTP));
    let bring = |b: Result<Shared, SocketError>| r.seen.lock().unwrap().bring = Some(b);
    let destroyed = || r.seen.lock().unwrap().destroyed;
    // Nothing brought, or something that is no buffer: refused.
    assert_eq!(http.share_buffer().unwrap(), Err(SocketError::NoBuffer));
    bring(Err(SocketError::TooLarge { bytes: 4 << 20, max: 1 << 20 }));
    assert_eq!(http.share_buffer().unwrap(), Err(SocketError::TooLarge { bytes: 4 << 20, max: 1 << 20 }));
    // A buffer brought with another call is not kept.
    bring(Ok(Shared::zeroed(4096)));
    let before = destroyed();
    assert_eq!(http.buffer().unwrap(), Err(SocketError::NoBuffer));
    assert_eq!(destroyed(), before + 1, "the unclaimed buffer was given back");
    // A first buffer, replaced by a second: the first is given back.
    bring(Ok(Shared::zeroed(4096)));
    assert_eq!(http.share_buffer().unwrap(), Ok(4096));
    let buf = Shared::zeroed(64 * 1024);
    bring(Ok(buf.clone()));
    assert_eq!(http.share_buffer().unwrap(), Ok(64 * 1024));
    assert_eq!(destroyed(), before + 2, "the replaced buffer was given back");
    assert_eq!(http.buffer().unwrap(), Ok(64 * 1024));

    let l = http.listen(8080).unwrap().unwrap();
    let conn = guest.os.connect(HOST_IP, 8080).unwrap();
    let c = (0..200)
        .find_map(|_| {
            guest.step();
            http.accept(l).unwrap().unwrap()
        })
        .expect("accepted");
    assert_eq!(
        http.recv_buffered(c, 60 * 1024, 8 * 1024).unwrap(),
        Err(SocketError::OutsideBuffer { offset: 60 * 1024, len: 8 * 1024, size: 64 * 1024 })
    );
    assert_eq!(
        http.send_buffered(c, u32::MAX, 2).unwrap(),
        Err(SocketError::OutsideBuffer { offset: u32::MAX, len: 2, size: 64 * 1024 })
    );
    // Guest to server, 100 KB, read through the buffer.
    let up: Vec<u8> = (0..100_000u32).map(|i| (i * 31 + i / 977) as u8).collect();
    let (mut sent, mut got) = (0, Vec::new());
    for _ in 0..5_000 {
        if sent < up.len() {
            sent += guest.os.send(conn, &up[sent..]).unwrap();
        }
        guest.step();
        let n = http.recv_buffered(c, 1000, 32 * 1024).unwrap().unwrap() as usize;
        let mut chunk = vec![0; n];
        buf.read(1000, &mut chunk);
        got.extend(chunk);
        if got.len() == up.len() {
            break;
        }
    }
    assert!(got == up, "guest to server: {} of {} bytes, the same", got.len(), up.len());
    // Server to guest, 50 KB, written into the buffer and sent from there.
    let down: Vec<u8> = (0..50_000u32).map(|i| (i * 17 + 3) as u8).collect();
    let mut w = buf.clone();
    w.write(0, &down);
    let (mut sent, mut got) = (0, Vec::new());
    for _ in 0..5_000 {
        if sent < down.len() {
            sent += http.send_buffered(c, sent as u32, (down.len() - sent) as u32).unwrap().unwrap() as usize;
        }
        guest.step();
        got.extend(guest.os.recv(conn, 65536).unwrap_or_default());
        if got.len() == down.len() {
            break;
        }
    }
    assert!(got == down, "server to guest: {} of {} bytes, the same", got.len(), down.len());
}

/// netd with the test tripwire (`test-exit-on-connect=`), counting the
/// connections that tripped it between requests, as the process does.
struct Tripwire {
    netd: Netd<Platform>,
    trips: usize,
}

impl libipc::Dispatch for Tripwire {
    fn dispatch(&mut self, interface: u32, request: &[u8]) -> Result<Vec<u8>, libipc::RemoteError> {
        self.dispatch_from(0, interface, request)
    }
    fn dispatch_from(&mut self, badge: u64, interface: u32, request: &[u8]) -> Result<Vec<u8>, libipc::RemoteError> {
        let r = self.netd.dispatch_from(badge, interface, request);
        self.trips += usize::from(self.netd.tripped());
        r
    }
}

#[test]
fn the_test_tripwire_goes_off_once_per_connection_to_its_port() {
    // Without a host stack there is nothing to listen with.
    let (platform, _) = Platform::new(Seen::default());
    let mut bare = Netd::new(&NetConfig::parse("nic_tag admin\n").unwrap(), platform, 1);
    assert!(bare.set_tripwire(9).unwrap_err().contains("no host line"));
    assert!(!bare.tripped());

    let config = NetConfig::parse(CONF).unwrap();
    let (platform, seen) = Platform::new(Seen { tick_ns: 1_000_000, ..Seen::default() });
    let (unbadged, mut end) = channel(8);
    let server = thread::spawn(move || {
        let mut netd = Netd::new(&config, platform, 1);
        assert!(netd.set_tripwire(0).is_err(), "port 0");
        assert!(netd.set_tripwire(7).unwrap_err().contains("port 7"), "the echo service's port");
        netd.set_tripwire(9).unwrap();
        assert!(!netd.tripped(), "nobody came yet");
        let mut t = Tripwire { netd, trips: 0 };
        end.serve_until_closed(&mut t);
        t.trips
    });
    let r = Rig { seen, unbadged, server: thread::spawn(String::new) };
    let mut guest = Guest::attach(&r);
    // Another port does not trip it; port 9 does, once per connection,
    // and the connection is closed.
    let echo = guest.os.connect(HOST_IP, 7).unwrap();
    for _ in 0..50 {
        guest.step();
    }
    assert_eq!(guest.os.tcp_state(echo), Ok(TcpState::Established));
    for _ in 0..2 {
        let c = guest.os.connect(HOST_IP, 9).unwrap();
        for _ in 0..50 {
            guest.step();
        }
        assert_eq!(guest.os.tcp_state(c), Ok(TcpState::PeerClosed), "netd closed it");
        guest.os.close(c).unwrap();
    }
    drop(guest);
    drop(r.unbadged);
    let _ = r.server.join();
    assert_eq!(server.join().unwrap(), 2);
}
