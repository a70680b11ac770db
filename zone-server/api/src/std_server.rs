//! The sans-IO [`Server`] over `std::net`, a thread per connection: what
//! the host-side end-to-end tests run, and what an appliance build that
//! embeds zone-server's logic in a host process would run. On Alcove,
//! zone-server drives the same [`Server`] over netd's sockets instead.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};
use std::vec::Vec;

use crate::backend::Backend;
use crate::server::{ConnId, Server};

/// A server shared by the connection threads.
pub type Shared<B> = Arc<Mutex<Server<B>>>;

fn lock<B>(s: &Mutex<Server<B>>) -> MutexGuard<'_, Server<B>> {
    // A backend that panicked leaves the server as it was between calls.
    s.lock().unwrap_or_else(|p| p.into_inner())
}

/// Accepts connections on `listener` for ever, each served on its own
/// thread. Returns only if accepting fails for good.
pub fn serve<B: Backend + Send + 'static>(listener: TcpListener, server: Shared<B>) -> io::Result<()> {
    let start = Instant::now();
    loop {
        let (stream, _) = match listener.accept() {
            Ok(s) => s,
            Err(e) if matches!(e.kind(), io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted) => continue,
            Err(e) => return Err(e),
        };
        let now = start.elapsed().as_millis() as u64;
        let Some(id) = lock(&server).accept(now) else {
            // Past every bound: closed without a word.
            continue;
        };
        let server = Arc::clone(&server);
        thread::spawn(move || serve_connection(stream, id, &server, start));
    }
}

/// Serves connection `id` on `stream` until it is done.
pub fn serve_connection<B: Backend>(mut stream: TcpStream, id: ConnId, server: &Mutex<Server<B>>, start: Instant) {
    let now = || start.elapsed().as_millis() as u64;
    // Wakes the thread now and then to apply the timeouts.
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let _ = stream.set_nodelay(true);
    let mut buf = [0u8; 16 * 1024];
    loop {
        let (out, done, room): (Vec<u8>, bool, usize) = {
            let s = lock(server);
            (s.output(id).to_vec(), s.wants_close(id), s.room(id))
        };
        if !out.is_empty() {
            match stream.write(&out) {
                Ok(n) => lock(server).sent(id, n, now()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
            continue;
        }
        if done || room == 0 {
            break;
        }
        let want = room.min(buf.len());
        match stream.read(&mut buf[..want]) {
            Ok(0) => lock(server).peer_closed(id, now()),
            Ok(n) => {
                lock(server).receive(id, &buf[..n], now());
            }
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                if lock(server).expire(now()).contains(&id) {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    lock(server).close(id);
    let _ = stream.shutdown(Shutdown::Both);
}
