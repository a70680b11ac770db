//! Interfaces end to end on the host: the shared interfaces and one defined
//! here (as a downstream crate would), over the in-process transport with the
//! server on another thread, over `Loopback`, and through the kernel framing.

use std::thread;

use libipc::in_process::{self, ClientEnd, Loopback, ServerEnd};
use libipc::interfaces::{ServerStatus, console, status};
use libipc::wire::{self, MAX_PAYLOAD_BYTES};
use libipc::{Dispatch, IpcError, RemoteError, Transport};

/// A server implementing `status` and `console`.
#[derive(Default)]
struct TestServer {
    served: u64,
    console: String,
}

impl status::Server for TestServer {
    fn status(&mut self) -> ServerStatus {
        self.served += 1;
        ServerStatus { name: "test".into(), version: 3, uptime_ns: 42, requests_served: self.served }
    }

    fn echo(&mut self, value: u64) -> u64 {
        self.served += 1;
        value
    }
}

impl console::Server for TestServer {
    fn write(&mut self, text: String) {
        self.served += 1;
        self.console.push_str(&text);
    }
    fn read(&mut self, max: u32) -> Vec<u8> {
        self.served += 1;
        b"typed".iter().copied().take(max as usize).collect()
    }
    fn put(&mut self, bytes: Vec<u8>) -> libipc::interfaces::Put {
        self.served += 1;
        self.console.push_str(&String::from_utf8_lossy(&bytes));
        libipc::interfaces::Put { taken: bytes.len() as u32, retry_ns: 0 }
    }
    fn feed(&mut self, _target: u64, _bytes: Vec<u8>) -> Result<u32, libipc::interfaces::ConsoleRefusal> {
        self.served += 1;
        Err(libipc::interfaces::ConsoleRefusal::NotReader)
    }
    fn tail(&mut self, _target: u64, _from: u64) -> Result<libipc::interfaces::ConsoleTail, libipc::interfaces::ConsoleRefusal> {
        self.served += 1;
        Err(libipc::interfaces::ConsoleRefusal::NotTailer)
    }
}

libipc::impl_dispatch!(TestServer: status, console);

/// A server implementing only `status`.
struct StatusOnly;

impl status::Server for StatusOnly {
    fn status(&mut self) -> ServerStatus {
        ServerStatus::default()
    }

    fn echo(&mut self, value: u64) -> u64 {
        value.wrapping_add(1)
    }
}

libipc::impl_dispatch!(StatusOnly: libipc::interfaces::status);

libipc::interface! {
    /// An interface defined outside libipc, with the awkward cases.
    pub interface blobs = 77 {
        /// Several arguments, one named like the dispatch function's own.
        fn put(server: u32, request: Vec<u8>, interface: Option<String>) -> u64;
        /// No reply value.
        fn clear();
        /// A reply of `len` bytes (too long past one message).
        fn get(len: u32) -> Vec<u8>;
        fn write(text: String) -> Result<u32, String>;
    }
}

#[derive(Default)]
struct Blobs {
    stored: u64,
}

impl blobs::Server for Blobs {
    fn put(&mut self, server: u32, request: Vec<u8>, interface: Option<String>) -> u64 {
        self.stored += request.len() as u64;
        u64::from(server) + interface.map_or(0, |s| s.len() as u64)
    }

    fn clear(&mut self) {
        self.stored = 0;
    }

    fn get(&mut self, len: u32) -> Vec<u8> {
        vec![0xa5; len as usize]
    }

    fn write(&mut self, text: String) -> Result<u32, String> {
        if text.is_empty() { Err("empty".into()) } else { Ok(text.len() as u32) }
    }
}

libipc::impl_dispatch!(Blobs: blobs);

/// Runs `server` on a thread until every client end is gone; returns it.
fn spawn<D: Dispatch + Send + 'static>(mut server_end: ServerEnd, mut server: D) -> thread::JoinHandle<D> {
    thread::spawn(move || {
        // What `serve_until_closed` does, also without the `std` feature.
        while !server_end.is_closed() {
            if !server_end.serve_one(&mut server) {
                thread::yield_now();
            }
        }
        server
    })
}

#[test]
fn status_round_trip_with_server_on_a_thread() {
    let (client_end, server_end) = in_process::channel(4);
    let server = spawn(server_end, TestServer::default());

    let client = status::Client::new(client_end.clone());
    assert_eq!(client.echo(0xdead_beef).unwrap(), 0xdead_beef);
    let st = client.status().unwrap();
    assert_eq!((st.name.as_str(), st.version, st.uptime_ns, st.requests_served), ("test", 3, 42, 2));

    let console = console::Client::new(client_end);
    console.write("hello, ".into()).unwrap();
    console.write("world".into()).unwrap();
    drop((client, console));

    let server = server.join().unwrap();
    assert_eq!(server.console, "hello, world");
    assert_eq!(server.served, 4);
}

#[cfg(feature = "std")]
#[test]
fn serve_until_closed_counts_requests() {
    let (client_end, mut server_end) = in_process::channel(1);
    let server = thread::spawn(move || server_end.serve_until_closed(&mut TestServer::default()));
    let client = status::Client::new(client_end);
    for i in 0..10 {
        assert_eq!(client.echo(i).unwrap(), i);
    }
    drop(client);
    assert_eq!(server.join().unwrap(), 10);
}

#[test]
fn many_concurrent_clients() {
    const CLIENTS: u64 = 8;
    const CALLS: u64 = 100;
    let (client_end, server_end) = in_process::channel(2);
    let server = spawn(server_end, TestServer::default());

    let workers: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let client = status::Client::new(client_end.clone());
            thread::spawn(move || {
                for i in 0..CALLS {
                    let value = (c << 32) | i;
                    assert_eq!(client.echo(value).unwrap(), value, "client {c} call {i}");
                }
            })
        })
        .collect();
    drop(client_end);
    for worker in workers {
        worker.join().unwrap();
    }
    assert_eq!(server.join().unwrap().served, CLIENTS * CALLS);
}

#[test]
fn wrong_interface_is_rejected() {
    let (client_end, server_end) = in_process::channel(1);
    let server = spawn(server_end, StatusOnly);

    assert_eq!(client_end.call(999, &[]), Err(IpcError::WrongInterface));
    let console = console::Client::new(client_end.clone());
    assert_eq!(console.write("lost".into()), Err(IpcError::WrongInterface));
    // The server is still there.
    assert_eq!(status::Client::new(client_end).echo(1), Ok(2));
    drop(console);
    server.join().unwrap();

    // And straight at the generated dispatch.
    assert_eq!(status::dispatch(&mut StatusOnly, console::ID, &[]), Err(RemoteError::WrongInterface));
}

/// xorshift64: random bytes without a dependency.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn bytes(&mut self, max_len: u64) -> Vec<u8> {
        let len = self.next() % (max_len + 1);
        (0..len).map(|_| self.next() as u8).collect()
    }
}

#[test]
fn malformed_requests_get_error_replies_not_panics() {
    let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
    let mut server = TestServer::default();
    let mut decoded = 0;
    for round in 0..50_000 {
        let mut bytes = rng.bytes(24);
        // Half the time start with a real operation index so the argument
        // decoding is exercised too.
        if round % 2 == 0 && !bytes.is_empty() {
            bytes[0] %= 3;
        }
        let interface = if round % 2 == 0 { status::ID } else { console::ID };
        match server.dispatch(interface, &bytes) {
            Ok(reply) => {
                decoded += 1;
                assert!(!reply.is_empty());
            }
            Err(e) => assert_eq!(e, RemoteError::BadRequest),
        }
    }
    assert!(decoded > 0, "some random requests should be valid");

    // Through the transport, the caller sees the server's error.
    let (client_end, server_end) = in_process::channel(1);
    let server = spawn(server_end, Blobs::default());
    assert_eq!(client_end.call(blobs::ID, &[0xff, 0xff]), Err(IpcError::ServerError(RemoteError::BadRequest)));
    // Trailing bytes after a valid request are malformed too.
    let mut request = wire::encode(&blobs::Request::clear {}).unwrap();
    request.push(0);
    assert_eq!(client_end.call(blobs::ID, &request), Err(IpcError::ServerError(RemoteError::BadRequest)));
    drop(client_end);
    server.join().unwrap();
}

#[test]
fn interface_defined_downstream() {
    let (client_end, server_end) = in_process::channel(1);
    let server = spawn(server_end, Blobs::default());
    let client = blobs::Client::new(client_end);

    assert_eq!(client.put(5, vec![1, 2, 3], Some("ab".into())), Ok(7));
    assert_eq!(client.put(1, vec![9; 10], None), Ok(1));
    assert_eq!(client.clear(), Ok(()));
    assert_eq!(client.write(String::new()), Ok(Err("empty".into())));
    assert_eq!(client.write("abc".into()), Ok(Ok(3)));

    // Sizes: the largest reply that fits, one too many, a request too long.
    let overhead = wire::encode(&blobs::Reply::get(vec![0; 3820])).unwrap().len() - 3820;
    let max = (MAX_PAYLOAD_BYTES - overhead) as u32;
    assert_eq!(client.get(max).map(|v| v.len()), Ok(max as usize));
    assert_eq!(client.get(max + 1), Err(IpcError::ServerError(RemoteError::ReplyTooLong)));
    assert_eq!(client.put(0, vec![0; MAX_PAYLOAD_BYTES], None), Err(IpcError::MessageTooLong));

    drop(client);
    assert_eq!(server.join().unwrap().stored, 0);
}

#[test]
fn dropped_server_closes_the_channel() {
    let (client_end, server_end) = in_process::channel(1);
    drop(server_end);
    assert_eq!(status::Client::new(client_end).echo(1), Err(IpcError::Closed));
}

#[test]
fn loopback_runs_the_server_in_the_caller() {
    let client = status::Client::new(Loopback::new(TestServer::default()));
    assert_eq!(client.echo(7), Ok(7));
    assert_eq!(client.status().map(|s| s.requests_served), Ok(2));
    assert_eq!(client.transport().call(12345, &[]), Err(IpcError::WrongInterface));
    assert_eq!(client.into_transport().into_inner().served, 2);
}

/// A transport that frames like the kernel transport (message words, label)
/// and runs the server turn as the kernel serve loop does.
struct KernelFraming<D>(std::cell::RefCell<D>);

impl<D: Dispatch> Transport for KernelFraming<D> {
    fn call(&self, interface: u32, request: &[u8]) -> Result<Vec<u8>, IpcError> {
        let mut words = [0u64; abi::MSG_MAX_WORDS];
        let n = wire::pack(request, &mut words)?;
        let (label, reply_words) = wire::answer(&mut *self.0.borrow_mut(), interface, &mut words, n);
        wire::reply_bytes(label, &words[..reply_words])
    }
}

#[test]
fn kernel_framing_round_trip() {
    let client = blobs::Client::new(KernelFraming(Blobs::default().into()));
    assert_eq!(client.put(1, vec![7; 100], Some("x".into())), Ok(2));
    assert_eq!(client.get(3000).map(|v| v.len()), Ok(3000));
    assert_eq!(client.get(4000), Err(IpcError::ServerError(RemoteError::ReplyTooLong)));
    assert_eq!(client.transport().call(3, &[]), Err(IpcError::WrongInterface));

    // Malformed framing gets an error reply.
    let mut server = Blobs::default();
    let mut words = [0u64; abi::MSG_MAX_WORDS];
    words[0] = 100; // says 100 bytes, carries one word
    assert_eq!(wire::answer(&mut server, blobs::ID, &mut words, 2), (RemoteError::BadMessage.code(), 0));
    assert_eq!(wire::answer(&mut server, blobs::ID, &mut words, 0), (RemoteError::BadMessage.code(), 0));

    // Random words never panic the server turn.
    let mut rng = XorShift(77);
    for _ in 0..20_000 {
        let n = (rng.next() % 8) as usize;
        for w in &mut words[..n] {
            *w = rng.next();
        }
        if n > 0 {
            words[0] %= 64;
        }
        let (label, m) = wire::answer(&mut server, blobs::ID, &mut words, n);
        assert!(label == wire::REPLY_OK || RemoteError::from_code(label).is_some());
        assert!(m <= abi::MSG_MAX_WORDS);
    }
}

#[test]
fn client_ends_are_send_for_threads() {
    fn is_send<T: Send>() {}
    is_send::<ClientEnd>();
    is_send::<ServerEnd>();
    is_send::<status::Client<ClientEnd>>();
}

/// The badge of the client end a request came through reaches the server's
/// `dispatch_from`, as a kernel endpoint's badge does.
#[test]
fn each_client_ends_badge_reaches_the_server() {
    struct Badges(Vec<u64>);
    impl libipc::Dispatch for Badges {
        fn dispatch(&mut self, _interface: u32, _request: &[u8]) -> Result<Vec<u8>, libipc::RemoteError> {
            Err(libipc::RemoteError::WrongInterface)
        }
        fn dispatch_from(&mut self, badge: u64, interface: u32, request: &[u8]) -> Result<Vec<u8>, libipc::RemoteError> {
            self.0.push(badge);
            status::dispatch(&mut TestServer::default(), interface, request)
        }
    }
    let (plain, mut server_end) = in_process::channel(4);
    let seven = plain.badged(7);
    let t = std::thread::spawn(move || {
        let mut b = Badges(Vec::new());
        server_end.serve_until_closed(&mut b);
        b.0
    });
    status::Client::new(&plain).echo(1).unwrap();
    status::Client::new(&seven).echo(2).unwrap();
    status::Client::new(seven.clone()).echo(3).unwrap();
    drop((plain, seven));
    assert_eq!(t.join().unwrap(), vec![0, 7, 7]);
}
