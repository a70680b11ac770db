//! The host stack within its share of netd's heap. netd's heap is a fixed
//! arena (`alcove_rt::HEAP_BYTES`, 512 KiB): when the stack had 64 sockets
//! of 32 KiB of buffers each, 40 connections opened at once through the
//! machine's NIC (the api case) ran netd out of memory ("memory allocation
//! of 16384 bytes failed"), and netd restarted with every VM's network.
//! Here the stack is filled to its limits (every socket a connection with
//! full buffers both ways, frames arriving faster than it takes them) and
//! the heap it takes at its peak is held to [`STACK_HEAP_BYTES`].
//!
//! Its own test binary: the allocator counts only while the host stack
//! runs (the peer machine's stack is another smoltcp stack in the same
//! process, not counted).

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use netd::stack::{AddressConfig, HostStack, LISTEN_BACKLOG, MAX_FRAME, MAX_SOCKETS, RX_QUEUE, STACK_HEAP_BYTES, TcpState};

struct Counting;

static ON: AtomicBool = AtomicBool::new(false);
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call goes to the system allocator unchanged; the counters
// only observe sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract, passed on.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() && ON.load(Ordering::Relaxed) {
            let now = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if ON.load(Ordering::Relaxed) {
            // What the stack frees it allocated while counted (frames it
            // hands out are dropped under `host` too, below).
            let _ = LIVE.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |l| Some(l.saturating_sub(layout.size())));
        }
        // SAFETY: the caller's contract, passed on.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Runs `f` with the allocator counting (the host stack's work).
fn host<T>(f: impl FnOnce() -> T) -> T {
    ON.store(true, Ordering::Relaxed);
    let r = f();
    ON.store(false, Ordering::Relaxed);
    r
}

const HOST: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const PEER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

struct Net {
    host: HostStack,
    peer: HostStack,
    now: u64,
}

impl Net {
    fn step(&mut self) {
        self.now += 1_000_000;
        let now = self.now;
        let out = host(|| {
            self.host.poll(now);
            self.host.take_tx()
        });
        for f in &out {
            self.peer.push_rx(f);
        }
        host(|| drop(out));
        self.peer.poll(now);
        for f in self.peer.take_tx() {
            host(|| self.host.push_rx(&f));
        }
    }
}

#[test]
fn a_full_stack_stays_within_its_share_of_netds_heap() {
    let h = host(|| HostStack::new([2, 0, 0, 0, 0, 1], AddressConfig::Static { ip: HOST, prefix: 24, gateway: None }, 1, 0).unwrap());
    let peer = HostStack::new([2, 0, 0, 0, 0, 2], AddressConfig::Static { ip: PEER, prefix: 24, gateway: None }, 2, 0).unwrap();
    let mut net = Net { host: h, peer, now: 0 };
    let l = host(|| net.host.listen(80).unwrap());
    // Connections until the stack is full (LISTEN_BACKLOG at a time; the
    // last ones take the backlog's own sockets, which the full stack
    // cannot replace).
    let mut conns = Vec::new();
    let mut pcs = Vec::new();
    while conns.len() < MAX_SOCKETS {
        let before = conns.len();
        for _ in 0..LISTEN_BACKLOG {
            pcs.push(net.peer.connect(HOST, 80).unwrap());
        }
        for _ in 0..20 {
            net.step();
        }
        while let Some(c) = host(|| net.host.accept(l).unwrap()) {
            conns.push(c);
        }
        assert!(conns.len() > before, "connections keep coming until the stack is full");
        // The peer's refused ones go (its own stack has MAX_SOCKETS too).
        pcs.retain(|&pc| net.peer.tcp_state(pc) != Ok(TcpState::Closed) || net.peer.close(pc).is_err());
    }
    assert_eq!(net.host.sockets_held(), MAX_SOCKETS);
    // Every buffer full: the host sends to a peer that does not read, the
    // peer sends to a host that does not read.
    let chunk = vec![0x5a; 64 * 1024];
    for _ in 0..200 {
        for &c in &conns {
            host(|| {
                if net.host.tcp_state(c) == Ok(TcpState::Established) {
                    let _ = net.host.send(c, &chunk);
                }
            });
        }
        for &pc in &pcs {
            if net.peer.tcp_state(pc) == Ok(TcpState::Established) {
                let _ = net.peer.send(pc, &chunk);
            }
        }
        net.step();
    }
    // Frames arriving faster than the stack takes them.
    let frame = vec![0xffu8; MAX_FRAME];
    host(|| {
        for _ in 0..RX_QUEUE * 4 {
            net.host.push_rx(&frame);
        }
    });
    assert!(net.host.rx_dropped >= (RX_QUEUE * 3) as u64);
    net.step();
    let peak = PEAK.load(Ordering::Relaxed);
    println!("bench netd_stack_heap_peak {} KiB", peak / 1024);
    assert!(
        peak <= STACK_HEAP_BYTES,
        "the full stack took {peak} bytes at its peak, more than its {STACK_HEAP_BYTES} of netd's {} byte heap",
        alcove_rt::HEAP_BYTES
    );
}
