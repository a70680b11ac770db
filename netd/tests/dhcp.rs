//! The host stack's DHCP client against a small DHCP server on the same
//! link (a second stack with a UDP socket on port 67, answering with
//! smoltcp's DHCP message encoder): the host takes the address and route
//! it is given, uses them, and drops them when the lease runs out.

use std::net::Ipv4Addr;

use netd::stack::{AddressConfig, HostStack, TcpState};
use smoltcp::wire::{DhcpMessageType, DhcpPacket, DhcpRepr};

const HOST_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
const SERVER_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0xfe];
const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
const OFFERED: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 15);

/// Answers DISCOVER with OFFER and REQUEST with ACK; counts what it sent.
fn answer(server: &mut HostStack, sock: netd::stack::SocketId, lease_s: u32, sent: &mut Vec<DhcpMessageType>) {
    while let Some((bytes, _, _)) = server.recv_from(sock, 2048).unwrap() {
        let packet = DhcpPacket::new_checked(&bytes[..]).unwrap();
        let req = DhcpRepr::parse(&packet).unwrap();
        let kind = match req.message_type {
            DhcpMessageType::Discover => DhcpMessageType::Offer,
            DhcpMessageType::Request => DhcpMessageType::Ack,
            _ => continue,
        };
        let reply = DhcpRepr {
            message_type: kind,
            transaction_id: req.transaction_id,
            secs: 0,
            client_hardware_address: req.client_hardware_address,
            client_ip: Ipv4Addr::UNSPECIFIED,
            your_ip: OFFERED,
            server_ip: SERVER_IP,
            router: Some(SERVER_IP),
            subnet_mask: Some(Ipv4Addr::new(255, 255, 255, 0)),
            relay_agent_ip: Ipv4Addr::UNSPECIFIED,
            broadcast: false,
            requested_ip: None,
            client_identifier: None,
            server_identifier: Some(SERVER_IP),
            parameter_request_list: None,
            dns_servers: None,
            max_size: None,
            lease_duration: Some(lease_s),
            renew_duration: None,
            rebind_duration: None,
            additional_options: &[],
        };
        let mut out = vec![0u8; reply.buffer_len()];
        reply.emit(&mut DhcpPacket::new_unchecked(&mut out[..])).unwrap();
        assert!(server.send_to(sock, Ipv4Addr::BROADCAST, 68, &out).unwrap());
        sent.push(kind);
    }
}

/// One round on the link at `now` ns.
fn exchange(host: &mut HostStack, server: &mut HostStack, now: u64) {
    host.poll(now);
    for f in host.take_tx() {
        server.push_rx(&f);
    }
    server.poll(now);
    for f in server.take_tx() {
        host.push_rx(&f);
    }
    host.poll(now);
}

#[test]
fn the_host_takes_its_address_from_dhcp_uses_it_and_drops_it_when_the_lease_ends() {
    let mut host = HostStack::new(HOST_MAC, AddressConfig::Dhcp, 5, 0).unwrap();
    let mut server =
        HostStack::new(SERVER_MAC, AddressConfig::Static { ip: SERVER_IP, prefix: 24, gateway: None }, 6, 0).unwrap();
    let (sock, _) = server.udp_bind(67).unwrap();
    assert_eq!(host.address(), None, "no address before DHCP");
    let mut sent = vec![];
    let mut now = 0;
    for _ in 0..100 {
        now += 10_000_000;
        exchange(&mut host, &mut server, now);
        answer(&mut server, sock, 120, &mut sent);
        if host.address().is_some() {
            break;
        }
    }
    assert_eq!(sent, [DhcpMessageType::Offer, DhcpMessageType::Ack]);
    assert_eq!(host.address(), Some((OFFERED, 24)));

    // The address works: the server end connects to a listener on the host.
    let l = host.listen(80).unwrap();
    let c = server.connect(OFFERED, 80).unwrap();
    let mut conn = None;
    for _ in 0..20 {
        now += 1_000_000;
        exchange(&mut host, &mut server, now);
        conn = conn.or(host.accept(l).unwrap());
    }
    assert!(conn.is_some(), "accepted on the DHCP address");
    assert_eq!(server.tcp_state(c), Ok(TcpState::Established));

    // The server goes quiet: the lease (120 s) runs out and the host has
    // no address any more.
    server.close(sock).unwrap();
    for _ in 0..300 {
        now += 1_000_000_000;
        exchange(&mut host, &mut server, now);
    }
    assert_eq!(host.address(), None, "the lease ended");
}

#[test]
fn bad_static_addresses_are_refused() {
    use netd::stack::StackError;
    let bad = |ip, prefix| HostStack::new(HOST_MAC, AddressConfig::Static { ip, prefix, gateway: None }, 1, 0).err();
    assert_eq!(bad(Ipv4Addr::UNSPECIFIED, 24), Some(StackError::BadAddress));
    assert_eq!(bad(Ipv4Addr::BROADCAST, 24), Some(StackError::BadAddress));
    assert_eq!(bad(Ipv4Addr::new(224, 0, 0, 1), 24), Some(StackError::BadAddress));
    assert_eq!(bad(OFFERED, 0), Some(StackError::BadAddress));
    assert_eq!(bad(OFFERED, 33), Some(StackError::BadAddress));
}
