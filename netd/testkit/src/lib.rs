//! netd's servers in one host process, for the tests of netd and of its
//! clients (apid's HTTP API, vmm-server's NICs): one copy of what each of
//! them built for itself before.
//!
//! * [`Shared`] — a region both sides reach (on Alcove, a frame netd makes
//!   and the VMM maps, or a client's buffer netd maps).
//! * [`Platform`] — netd's [`VnicPlatform`] that records what it was asked
//!   to do in a [`Seen`] the test keeps.
//! * [`ToPeer`] and [`SocketRig`] — netd's socket server on its own thread
//!   over the host stack ([`HOST_IP`]), wired straight to a peer machine's
//!   stack ([`PEER_IP`], "the remote end"), with clients told apart by
//!   their badges.
//! * [`ether`] — an Ethernet frame as a wire carries it.

use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::thread;

use libipc::blkring::RingRegion;
use libipc::in_process::{ClientEnd, channel};
use libipc::interfaces::SocketError;
use netd::sockets::{SocketServer, Wire};
use netd::stack::{AddressConfig, HostStack};
use netd::vnics::VnicPlatform;

/// A region both sides reach.
#[derive(Clone, Debug)]
pub struct Shared(pub Arc<Mutex<Vec<u8>>>);

impl Shared {
    /// `bytes` bytes of `fill`.
    pub fn filled(bytes: usize, fill: u8) -> Self {
        Self(Arc::new(Mutex::new(vec![fill; bytes])))
    }

    /// `bytes` zero bytes.
    pub fn zeroed(bytes: usize) -> Self {
        Self::filled(bytes, 0)
    }
}

impl RingRegion for Shared {
    fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }
    fn read(&self, offset: usize, buf: &mut [u8]) {
        buf.copy_from_slice(&self.0.lock().unwrap()[offset..offset + buf.len()]);
    }
    fn write(&mut self, offset: usize, data: &[u8]) {
        self.0.lock().unwrap()[offset..offset + data.len()].copy_from_slice(data);
    }
}

/// A region of no bytes, for a socket server whose clients share no
/// buffer.
#[derive(Clone, Copy, Debug)]
pub struct NoBuffer;

impl RingRegion for NoBuffer {
    fn len(&self) -> usize {
        0
    }
    fn read(&self, _: usize, _: &mut [u8]) {}
    fn write(&mut self, _: usize, _: &[u8]) {}
}

/// What netd asked its platform to do, shared with the test.
#[derive(Debug)]
pub struct Seen {
    /// Regions made, in order (the "frame capability" a VMM receives).
    pub regions: Vec<Shared>,
    /// Regions given back.
    pub destroyed: usize,
    /// VMMs told their VNIC's ring moved (client, VNIC).
    pub signals: Vec<(u64, u32)>,
    /// Frames sent out of an uplink.
    pub uplink: Vec<Vec<u8>>,
    /// Refuse region sizes above this many pages.
    pub max_pages: usize,
    /// What a new region holds before netd writes it.
    pub fill: u8,
    /// Doorbells taken with an attach, and given back at a detach.
    pub doorbells: Vec<(u64, u32)>,
    pub doorbells_gone: Vec<(u64, u32)>,
    /// What the next request "brings" (a client's frame), once.
    pub bring: Option<Result<Shared, SocketError>>,
    /// The time netd reads next, and how far it moves each time netd
    /// reads it.
    pub now_ns: u64,
    pub tick_ns: u64,
    /// The time-stamp counter netd reads next, and how far it moves each
    /// time netd reads it (0: the counter stands still).
    pub tsc: u64,
    pub tsc_step: u64,
    /// netd's own doorbell, offered with every attach reply (a slot
    /// number: the in-process transport carries no capabilities), and how
    /// many attach replies asked for it.
    pub netd_doorbell: Option<u32>,
    pub netd_doorbell_offered: usize,
    /// Badged endpoints made for VNIC grants, and how many were revoked.
    pub minted: Vec<u64>,
    pub unminted: usize,
}

impl Default for Seen {
    /// Regions of any size, filled with 0xa5 (so nothing passes for a
    /// ring netd did not set up); time stands still.
    fn default() -> Self {
        Self {
            regions: Vec::new(),
            destroyed: 0,
            signals: Vec::new(),
            uplink: Vec::new(),
            max_pages: usize::MAX,
            fill: 0xa5,
            doorbells: Vec::new(),
            doorbells_gone: Vec::new(),
            bring: None,
            now_ns: 0,
            tick_ns: 0,
            tsc: 0,
            tsc_step: 0,
            netd_doorbell: None,
            netd_doorbell_offered: 0,
            minted: Vec::new(),
            unminted: 0,
        }
    }
}

/// netd's platform, recording into [`Seen`]; a region's capability slot
/// is 100 plus its number.
#[derive(Clone, Debug)]
pub struct Platform(pub Arc<Mutex<Seen>>);

impl Platform {
    /// A platform and the record the test keeps.
    pub fn new(seen: Seen) -> (Self, Arc<Mutex<Seen>>) {
        let seen = Arc::new(Mutex::new(seen));
        (Self(seen.clone()), seen)
    }
}

impl VnicPlatform for Platform {
    type Region = Shared;
    fn create(&mut self, pages: usize) -> Result<(Shared, u32), String> {
        let mut s = self.0.lock().unwrap();
        if pages > s.max_pages {
            return Err(format!("no frame of {pages} pages"));
        }
        let r = Shared::filled(pages * 4096, s.fill);
        s.regions.push(r.clone());
        Ok((r, 100 + s.regions.len() as u32))
    }
    fn destroy(&mut self, _region: Shared) {
        self.0.lock().unwrap().destroyed += 1;
    }
    fn take_buffer(&mut self) -> Option<Result<Shared, SocketError>> {
        self.0.lock().unwrap().bring.take()
    }
    fn signal(&mut self, client: u64, vnic: u32) {
        self.0.lock().unwrap().signals.push((client, vnic));
    }
    fn uplink(&mut self, _switch: &str, frame: &[u8]) {
        self.0.lock().unwrap().uplink.push(frame.to_vec());
    }
    fn doorbell(&mut self, client: u64, vnic: u32) {
        self.0.lock().unwrap().doorbells.push((client, vnic));
    }
    fn detached(&mut self, client: u64, vnic: u32) {
        self.0.lock().unwrap().doorbells_gone.push((client, vnic));
    }
    fn netd_doorbell(&mut self) -> Option<u32> {
        let mut s = self.0.lock().unwrap();
        s.netd_doorbell_offered += 1;
        s.netd_doorbell
    }
    fn now_ns(&self) -> u64 {
        let mut s = self.0.lock().unwrap();
        let now = s.now_ns;
        s.now_ns += s.tick_ns;
        now
    }
    fn ticks(&self) -> u64 {
        let mut s = self.0.lock().unwrap();
        let t = s.tsc;
        s.tsc += s.tsc_step;
        t
    }
    /// A grant's endpoint: slot 900 plus the number of grants made.
    fn mint(&mut self, badge: u64) -> Result<u32, String> {
        let mut s = self.0.lock().unwrap();
        s.minted.push(badge);
        Ok(900 + s.minted.len() as u32)
    }
    fn unmint(&mut self, _slot: u32) {
        self.0.lock().unwrap().unminted += 1;
    }
}

/// The host stack's address (netd's side).
pub const HOST_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
/// The peer machine's address.
pub const PEER_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
pub const HOST_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
pub const PEER_MAC: [u8; 6] = [2, 0, 0, 0, 0, 2];

/// A wire straight to the peer's stack; time moves 1 ms per pump.
pub struct ToPeer {
    pub peer: Arc<Mutex<HostStack>>,
    pub now: u64,
}

impl Wire for ToPeer {
    fn pump(&mut self, stack: &mut HostStack) {
        let mut peer = self.peer.lock().unwrap();
        for _ in 0..4 {
            self.now += 1_000_000;
            stack.poll(self.now);
            for f in stack.take_tx() {
                peer.push_rx(&f);
            }
            peer.poll(self.now);
            for f in peer.take_tx() {
                stack.push_rx(&f);
            }
        }
        stack.poll(self.now);
    }
}

/// netd's socket server on its own thread, on [`HOST_IP`], wired to the
/// peer's stack on [`PEER_IP`]; clients are `rig.client.badged(n)`.
pub struct SocketRig<R: RingRegion + Send + 'static> {
    pub peer: Arc<Mutex<HostStack>>,
    pub client: ClientEnd,
    server: thread::JoinHandle<SocketServer<R, ToPeer>>,
}

impl<R: RingRegion + Send + 'static> SocketRig<R> {
    /// The server, given `buffers` (badge, region) before it starts.
    pub fn start(buffers: &[(u64, R)]) -> Self
    where
        R: Clone,
    {
        let peer = HostStack::new(PEER_MAC, AddressConfig::Static { ip: PEER_IP, prefix: 24, gateway: None }, 7, 0).unwrap();
        let peer = Arc::new(Mutex::new(peer));
        let host = HostStack::new(HOST_MAC, AddressConfig::Static { ip: HOST_IP, prefix: 24, gateway: None }, 8, 0).unwrap();
        let mut server = SocketServer::new(host, ToPeer { peer: peer.clone(), now: 0 });
        for (badge, b) in buffers {
            server.give_buffer(*badge, b.clone());
        }
        let (client, mut end) = channel(4);
        let server = thread::spawn(move || {
            end.serve_until_closed(&mut server);
            server
        });
        Self { peer, client, server }
    }

    /// Closes the clients' channel and hands back the server as it ended.
    pub fn finish(self) -> SocketServer<R, ToPeer> {
        drop(self.client);
        self.server.join().unwrap()
    }
}

/// An Ethernet frame: `dst`, `src`, `ethertype`, `payload`, padded to the
/// 60 bytes of a minimal frame (without its FCS).
pub fn ether(dst: [u8; 6], src: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = dst.to_vec();
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f.resize(f.len().max(60), 0);
    f
}
