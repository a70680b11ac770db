//! The console server: servers send it text over the `console` interface and
//! it writes whole lines to the operator's console, so output from different
//! processes never interleaves mid-line. The sink is a closure, so the host
//! tests (and an appliance build) can capture what is written.
//!
//! Each client (told apart by the badge of the endpoint capability it calls
//! through) has a token bucket ([`rate`]) of [`CLIENT_RATE`]: a VMM whose
//! guest floods its UART `put`s the guest's lines and gets back how much
//! went out; the rest waits in the VMM and then in the guest's UART, which
//! holds the guest back (nothing is lost, the guest is slowed). `write`
//! (servers' own text) drops what is over the allowance and says so on the
//! console. Either way one client cannot starve the others' lines.
//!
//! Typed input has one reader, as a terminal has one foreground process:
//! the clients the manifest names (`input=shell`), else the first client
//! that reads and is not a VM's VMM. Before, every client that polled `read` took a share, and a
//! running VM's VMM (which polls for its guest's UART) took bytes out of
//! the middle of what the operator typed at the shell. Input is
//! flow-controlled: the console takes bytes from the UART only while it
//! has room for them ([`INPUT_LIMIT`]); the rest waits in the UART and,
//! behind it, in whatever feeds the serial line, so a long paste arrives
//! whole instead of losing its oldest bytes.
//!
//! `vmadm console`: the reader (the operator shell) may `feed` what the
//! operator types to another client, a VM's VMM, which takes it with its
//! own `read`s and gives it to its guest's UART. Each such client has a
//! queue of [`CONSOLE_FEED_LIMIT`] bytes; `feed` takes what fits and the
//! shell keeps the rest, so flow control reaches back to the UART here too.
//!
//! A VM's console over HTTP (`GET /vms/:uuid/console`): the console keeps
//! the last [`CONSOLE_TAIL_BYTES`] that each VMM (a client whose badge is a
//! `proc` instance's, [`libipc::interfaces::proc_instance_badge`]) `put`,
//! with a running byte offset, for at most [`TAIL_RINGS`] VMMs (the one
//! that put longest ago is forgotten for a new one): a chatty guest only
//! overwrites its own ring, and the server's memory for them is bounded
//! (128 KiB). `tail` reads a ring from an offset; only the clients the
//! manifest names (`tail=apid`) may. Writing to a VM's console over HTTP
//! (`POST /vms/:uuid/console`) is a `feed` from apid, which the manifest
//! allows with `feed=apid` (a feeder that is not the input's reader).
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod rate;

use alcove_rt::Service;
use alloc::boxed::Box;
use alloc::collections::{BTreeMap, VecDeque};
use alloc::string::String;
use alloc::vec::Vec;
use libipc::interfaces::{
    CONSOLE_FEED_LIMIT, CONSOLE_FEED_TARGETS, CONSOLE_TAIL_BYTES, CONSOLE_TAIL_CHUNK, ConsoleRefusal, ConsoleTail, Put, ServerStatus,
    console, status,
};
use rate::{Bucket, Rate};

pub const VERSION: u32 = 1;
/// Typed input held for the reader; the UART holds the rest (flow control).
pub const INPUT_LIMIT: usize = 4096;
/// Most bytes one `read` returns (a reply fits the IPC buffer).
pub const MAX_READ: usize = 2048;

/// Longest text written from one request (a request carries at most
/// `libipc::wire::MAX_PAYLOAD_BYTES`); longer text is cut, marked.
pub const MAX_WRITE: usize = 3072;

/// Each client's allowance: 16 KiB a second, 32 KiB at once (a quiet
/// guest's boot messages go out at once; a flooding one gets 16 KiB/s).
pub const CLIENT_RATE: Rate = Rate { bytes_per_s: 16 * 1024, burst: 32 * 1024 };

/// Clients whose buckets are kept; past it, the one quiet longest is
/// forgotten (a forgotten client's bucket starts full again, as it would be
/// after being quiet for long). Badges name processes the manifest or
/// zone-server made, so the number of clients is small.
pub const MAX_CLIENTS: usize = 64;

/// VMMs whose output is kept for `tail` at most ([`CONSOLE_TAIL_BYTES`]
/// each); past it, the ring put to longest ago is forgotten.
pub const TAIL_RINGS: usize = 8;

/// The last [`CONSOLE_TAIL_BYTES`] one VMM put, and how much it put in all.
#[derive(Default)]
struct Ring {
    kept: VecDeque<u8>,
    /// Bytes put in all: the offset just past `kept`'s last byte.
    end: u64,
    /// When it was last put to (a count of puts).
    when: u64,
}

impl Ring {
    fn push(&mut self, bytes: &[u8]) {
        let bytes = &bytes[bytes.len().saturating_sub(CONSOLE_TAIL_BYTES)..];
        let over = (self.kept.len() + bytes.len()).saturating_sub(CONSOLE_TAIL_BYTES);
        self.kept.drain(..over);
        self.kept.extend(bytes);
        self.end += bytes.len() as u64;
    }

    /// The offset of `kept[0]`.
    fn oldest(&self) -> u64 {
        self.end - self.kept.len() as u64
    }
}

/// Whether `badge` is a `proc` instance's (a VMM zone-server started).
fn is_instance(badge: u64) -> bool {
    badge >> 32 == libipc::interfaces::proc_instance_badge(0) >> 32
}

/// Reads what was typed: at most `room` bytes, each handed to the closure
/// it is given. Returns true when it stopped for want of room with bytes
/// still waiting (the source then leaves the UART's interrupt unacknowledged
/// and is called again once a `read` has made room); false when the UART
/// was emptied and its interrupt acknowledged.
pub type InputSource = Box<dyn FnMut(usize, &mut dyn FnMut(u8)) -> bool>;

/// Where the console's bytes go (the kernel console on Alcove).
pub type Sink = Box<dyn FnMut(&[u8])>;

/// The time in nanoseconds (monotonic).
pub type Clock = Box<dyn FnMut() -> u64>;

pub struct Console {
    service: Service,
    sink: Sink,
    clock: Clock,
    rate: Rate,
    buckets: BTreeMap<u64, Bucket>,
    /// The badge of the request being answered.
    caller: u64,
    pub bytes_written: u64,
    /// Bytes `write` dropped because their client was over its allowance.
    pub bytes_dropped: u64,
    input: VecDeque<u8>,
    /// Input bytes dropped (only by `push_input` past the limit: a source
    /// is never asked for more than there is room for).
    pub input_dropped: u64,
    /// The badges whose `read`s get typed input (empty: the first reader's
    /// becomes the one).
    readers: Vec<u64>,
    /// `read`s refused because their client is not the input's reader
    /// and was fed nothing.
    pub reads_refused: u64,
    /// Input the reader fed to other clients (`feed`), by their badge,
    /// with when each was last fed (a count of feeds).
    fed: BTreeMap<u64, (u64, VecDeque<u8>)>,
    feeds: u64,
    /// Bytes dropped with a queue forgotten to make room for another.
    pub fed_dropped: u64,
    /// The source stopped for want of room: pull again after a `read`.
    source_held: bool,
    /// Where typed input comes from (the serial port's receiver on Alcove):
    /// called when the server is notified of new input.
    source: Option<InputSource>,
    /// Each VMM's latest output, by its badge.
    rings: BTreeMap<u64, Ring>,
    puts: u64,
    /// The badges that may `tail` (the manifest's `tail=` names).
    tailers: Vec<u64>,
    /// The badges that may `feed` besides the readers (`feed=`).
    feeders: Vec<u64>,
    /// `tail`s refused: the caller was not one of `tailers`.
    pub tails_refused: u64,
}

impl Console {
    /// A console writing to `sink`, timed by `alcove_rt::clock_ns`.
    pub fn new(sink: Sink) -> Self {
        Self {
            service: Service::new("console", VERSION),
            sink,
            clock: Box::new(alcove_rt::clock_ns),
            rate: CLIENT_RATE,
            buckets: BTreeMap::new(),
            caller: 0,
            bytes_written: 0,
            bytes_dropped: 0,
            input: VecDeque::new(),
            input_dropped: 0,
            readers: Vec::new(),
            reads_refused: 0,
            fed: BTreeMap::new(),
            feeds: 0,
            fed_dropped: 0,
            source_held: false,
            source: None,
            rings: BTreeMap::new(),
            puts: 0,
            tailers: Vec::new(),
            tails_refused: 0,
            feeders: Vec::new(),
        }
    }

    /// `feed` takes input for a VMM from the clients whose capabilities
    /// carry `badges` (the manifest's `feed=` names) too, not only from
    /// the input's readers.
    pub fn with_feeders(mut self, badges: &[u64]) -> Self {
        self.feeders = badges.to_vec();
        self
    }

    /// `tail` answers the clients whose capabilities carry `badges` (the
    /// manifest's `tail=` names) and refuses everyone else.
    pub fn with_tailers(mut self, badges: &[u64]) -> Self {
        self.tailers = badges.to_vec();
        self
    }

    /// Keeps what a VMM put for `tail`.
    fn keep(&mut self, bytes: &[u8]) {
        if !is_instance(self.caller) || bytes.is_empty() {
            return;
        }
        if !self.rings.contains_key(&self.caller) && self.rings.len() >= TAIL_RINGS {
            let oldest = self.rings.iter().min_by_key(|(_, r)| r.when).map(|(&k, _)| k);
            if let Some(k) = oldest {
                self.rings.remove(&k);
            }
        }
        self.puts += 1;
        let when = self.puts;
        let ring = self.rings.entry(self.caller).or_default();
        ring.when = when;
        ring.push(bytes);
    }

    /// Bytes kept for `tail` in all (at most `TAIL_RINGS` ×
    /// `CONSOLE_TAIL_BYTES`).
    pub fn tail_bytes_kept(&self) -> usize {
        self.rings.values().map(|r| r.kept.len()).sum()
    }

    /// Times the clients' allowances by `clock`, at `rate` each.
    pub fn with_rate(mut self, clock: Clock, rate: Rate) -> Self {
        self.clock = clock;
        self.rate = rate;
        self.buckets.clear();
        self
    }

    /// The requests that follow come from the client whose capability
    /// carries `badge` (the serve loop says so through `dispatch_from`).
    pub fn set_caller(&mut self, badge: u64) {
        self.caller = badge;
    }

    /// The caller's bucket, made full if it has none.
    fn bucket(&mut self, now: u64) -> &mut Bucket {
        let rate = self.rate;
        if !self.buckets.contains_key(&self.caller) && self.buckets.len() >= MAX_CLIENTS {
            let quietest = self.buckets.iter().min_by_key(|(_, b)| b.last_ns()).map(|(&k, _)| k);
            if let Some(k) = quietest {
                self.buckets.remove(&k);
            }
        }
        self.buckets.entry(self.caller).or_insert_with(|| Bucket::new(rate, now))
    }

    /// Reads typed input from `source` whenever the server is notified.
    pub fn with_input(mut self, source: InputSource) -> Self {
        self.source = Some(source);
        self
    }

    /// Typed input goes only to `read`s through capabilities badged
    /// `badges` (the manifest's `input=` names); with none, to the first
    /// client that reads.
    pub fn with_input_readers(mut self, badges: &[u64]) -> Self {
        self.readers = badges.to_vec();
        self
    }

    /// Takes what the source has, as far as there is room.
    fn pull(&mut self) {
        if let Some(mut source) = self.source.take() {
            let room = INPUT_LIMIT.saturating_sub(self.input.len());
            let mut got = Vec::new();
            self.source_held = source(room, &mut |b| got.push(b));
            self.push_input(&got);
            self.source = Some(source);
        }
    }

    /// Keeps typed bytes for the next `read`.
    pub fn push_input(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if self.input.len() == INPUT_LIMIT {
                self.input.pop_front();
                self.input_dropped += 1;
            }
            self.input.push_back(b);
        }
    }
}

impl status::Server for Console {
    fn status(&mut self) -> ServerStatus {
        self.service.status()
    }
    fn echo(&mut self, value: u64) -> u64 {
        self.service.echo(value)
    }
}

impl console::Server for Console {
    fn write(&mut self, text: String) {
        self.service.requests += 1;
        let mut end = text.len().min(MAX_WRITE);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let cut = end < text.len();
        let (now, rate) = ((self.clock)(), self.rate);
        let bucket = self.bucket(now);
        let available = bucket.available(rate, now);
        let mut allowed = end.min(usize::try_from(available).unwrap_or(usize::MAX));
        while !text.is_char_boundary(allowed) {
            allowed -= 1;
        }
        bucket.take(rate, now, allowed as u64);
        (self.sink)(&text.as_bytes()[..allowed]);
        self.bytes_written += allowed as u64;
        if allowed < end {
            let dropped = text.len() - allowed;
            self.bytes_dropped += dropped as u64;
            let note = alloc::format!("…[console: {dropped} bytes from client {} over its rate dropped]\n", self.caller);
            (self.sink)(note.as_bytes());
        } else if cut {
            (self.sink)("…[cut]\n".as_bytes());
        }
    }

    fn put(&mut self, bytes: Vec<u8>) -> Put {
        self.service.requests += 1;
        let (now, rate) = ((self.clock)(), self.rate);
        let bucket = self.bucket(now);
        let n = rate::portion(&bytes, bucket.available(rate, now), rate.burst).min(MAX_WRITE);
        bucket.take(rate, now, n as u64);
        let rest = &bytes[n..];
        let retry_ns = if rest.is_empty() {
            0
        } else {
            // Until the next line (or a full bucket) fits.
            let line = rest.iter().position(|&b| b == b'\n').map_or(rest.len(), |i| i + 1);
            bucket.wait_ns(rate, now, line as u64).max(1)
        };
        if n > 0 {
            (self.sink)(&bytes[..n]);
            self.bytes_written += n as u64;
            self.keep(&bytes[..n]);
        }
        Put { taken: n as u32, retry_ns }
    }

    fn read(&mut self, max: u32) -> Vec<u8> {
        self.service.requests += 1;
        // A VM's VMM (a `proc` instance) never becomes the reader: it
        // polls `read` for its guest's UART from boot on, and would take
        // the operator's typing (and could never be fed: a reader is no
        // feed target).
        if self.readers.is_empty() && !is_instance(self.caller) {
            self.readers.push(self.caller);
        }
        if !self.readers.contains(&self.caller) {
            // A VM's VMM: what the reader fed it (`vmadm console`).
            if let Some((_, q)) = self.fed.get_mut(&self.caller) {
                let n = q.len().min(max as usize).min(MAX_READ);
                let out: Vec<u8> = q.drain(..n).collect();
                if q.is_empty() {
                    self.fed.remove(&self.caller);
                }
                return out;
            }
            self.reads_refused += 1;
            return Vec::new();
        }
        let n = self.input.len().min(max as usize).min(MAX_READ);
        let out: Vec<u8> = self.input.drain(..n).collect();
        if self.source_held && n > 0 {
            self.pull();
        }
        out
    }

    fn feed(&mut self, target: u64, bytes: Vec<u8>) -> Result<u32, ConsoleRefusal> {
        self.service.requests += 1;
        if !self.readers.contains(&self.caller) && !self.feeders.contains(&self.caller) {
            return Err(ConsoleRefusal::NotReader);
        }
        if target == 0 || self.readers.contains(&target) || self.feeders.contains(&target) {
            return Err(ConsoleRefusal::BadTarget);
        }
        if !self.fed.contains_key(&target) && self.fed.len() >= CONSOLE_FEED_TARGETS {
            // The queue fed longest ago goes (its VMM most likely ended
            // with input still waiting: nobody reads it any more).
            let oldest = self.fed.iter().min_by_key(|(_, (t, _))| *t).map(|(&k, _)| k);
            if let Some((_, q)) = oldest.and_then(|k| self.fed.remove(&k)) {
                self.fed_dropped += q.len() as u64;
            }
        }
        self.feeds += 1;
        let (when, q) = self.fed.entry(target).or_default();
        *when = self.feeds;
        let n = bytes.len().min(CONSOLE_FEED_LIMIT.saturating_sub(q.len()));
        q.extend(&bytes[..n]);
        if q.is_empty() {
            self.fed.remove(&target);
        }
        Ok(n as u32)
    }

    fn tail(&mut self, target: u64, from: u64) -> Result<ConsoleTail, ConsoleRefusal> {
        self.service.requests += 1;
        if !self.tailers.contains(&self.caller) {
            self.tails_refused += 1;
            return Err(ConsoleRefusal::NotTailer);
        }
        let Some(ring) = self.rings.get(&target) else {
            // Nothing put (or forgotten): nothing kept, and `from` is
            // either what a restarted console counts from again or a
            // client's guess past the end.
            return Ok(ConsoleTail { start: 0, lost: 0, next: 0, end: 0, bytes: Vec::new() });
        };
        let (oldest, end) = (ring.oldest(), ring.end);
        // Past the end: the console restarted since the caller's last
        // answer (its offsets count from 0 again), so what it keeps.
        let start = if from > end { oldest } else { from.max(oldest) };
        let lost = if from > end { 0 } else { start - from };
        let skip = (start - oldest) as usize;
        let n = ring.kept.len().saturating_sub(skip).min(CONSOLE_TAIL_CHUNK);
        let bytes: Vec<u8> = ring.kept.range(skip..skip + n).copied().collect();
        Ok(ConsoleTail { start, lost, next: start + n as u64, end, bytes })
    }
}

impl Console {
    /// Bytes fed to `target` that wait for its `read`s.
    pub fn fed_waiting(&self, target: u64) -> usize {
        self.fed.get(&target).map_or(0, |(_, q)| q.len())
    }
}

impl libipc::Dispatch for Console {
    fn dispatch(&mut self, interface: u32, request: &[u8]) -> Result<Vec<u8>, libipc::RemoteError> {
        self.dispatch_from(0, interface, request)
    }

    fn dispatch_from(&mut self, badge: u64, interface: u32, request: &[u8]) -> Result<Vec<u8>, libipc::RemoteError> {
        self.set_caller(badge);
        match interface {
            status::ID => status::dispatch(self, interface, request),
            _ => console::dispatch(self, interface, request),
        }
    }

    fn notified(&mut self, _bits: u64) {
        self.pull();
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use core::sync::atomic::{AtomicU64, Ordering};
    use libipc::in_process;
    use std::sync::{Arc, Mutex};

    #[test]
    fn writes_reach_the_sink_and_status_counts_them() {
        let out = Arc::new(Mutex::new(String::new()));
        let sink_out = out.clone();
        let (client, mut server_end) = in_process::channel(4);
        let status_client_end = client.clone();
        let t = std::thread::spawn(move || {
            let mut c =
                Console::new(Box::new(move |s| sink_out.lock().unwrap().push_str(core::str::from_utf8(s).unwrap())));
            server_end.serve_until_closed(&mut c);
        });
        let con = console::Client::new(client);
        con.write("hello\n".into()).unwrap();
        con.write("x".repeat(MAX_WRITE + 10)).unwrap();
        let st = status::Client::new(status_client_end).status().unwrap();
        assert_eq!(st.name, "console");
        assert_eq!(st.requests_served, 3);
        drop(con);
        t.join().unwrap();
        let text = out.lock().unwrap().clone();
        assert!(text.starts_with("hello\n"));
        assert!(text.ends_with("…[cut]\n"));
        assert_eq!(text.len(), 6 + MAX_WRITE + "…[cut]\n".len());
    }

    /// What the sink received.
    type Output = Arc<Mutex<std::vec::Vec<u8>>>;
    /// The server thread, which gives back (bytes written, bytes dropped).
    type Counters = std::thread::JoinHandle<(u64, u64)>;

    /// A console on a server thread, timed by a clock the test moves; the
    /// sink records what is written.
    fn console_on_a_thread(rate: Rate) -> (in_process::ClientEnd, Arc<AtomicU64>, Output, Counters) {
        let out = Arc::new(Mutex::new(std::vec::Vec::new()));
        let clock = Arc::new(AtomicU64::new(1_000_000_000));
        let (client, mut server_end) = in_process::channel(4);
        let (sink_out, c2) = (out.clone(), clock.clone());
        let t = std::thread::spawn(move || {
            let mut c = Console::new(Box::new(move |s| sink_out.lock().unwrap().extend_from_slice(s)))
                .with_rate(Box::new(move || c2.load(Ordering::SeqCst)), rate);
            server_end.serve_until_closed(&mut c);
            (c.bytes_written, c.bytes_dropped)
        });
        (client, clock, out, t)
    }

    /// Finding 16 of the security issue: a guest that floods its UART (its
    /// VMM `put`s line after line) gets its client's rate and no more, while
    /// another VM's lines go out whole and at once; the flooder loses
    /// nothing: what was refused goes out, in order, when the rate allows.
    #[test]
    fn a_flooding_guest_cannot_starve_another_vms_lines() {
        let rate = Rate { bytes_per_s: 4096, burst: 8192 };
        let (plain, clock, out, t) = console_on_a_thread(rate);
        let flooder = console::Client::new(plain.badged(1));
        let quiet = console::Client::new(plain.badged(2));
        let flood_line = |i: usize| std::format!("flood {i:05} {}\n", "x".repeat(100));
        let mut next_flood = 0;
        let mut pending: std::vec::Vec<u8> = std::vec::Vec::new();
        let mut flooder_taken = 0u64;
        let mut refused = 0;
        // 5 simulated seconds in 10 ms steps: each step the flooder offers
        // what it holds plus more lines until the console refuses, and the
        // quiet VM writes one line every 100 ms.
        for step in 0..500u64 {
            // At most 64 offers (128 KiB) a step: a console that never
            // refused would show in the total below.
            for _ in 0..64 {
                while pending.len() < 2048 {
                    pending.extend_from_slice(flood_line(next_flood).as_bytes());
                    next_flood += 1;
                }
                // As the VMM offers it: up to 2 KiB, whole lines.
                let end = pending[..2048].iter().rposition(|&b| b == b'\n').unwrap() + 1;
                let put = flooder.put(pending[..end].to_vec()).unwrap();
                pending.drain(..put.taken as usize);
                flooder_taken += u64::from(put.taken);
                if (put.taken as usize) < end {
                    assert!(put.retry_ns > 0, "a refusal says when to come back");
                    refused += 1;
                    break;
                }
            }
            if step % 10 == 0 {
                let line = std::format!("quiet vm line {}\n", step / 10);
                let put = quiet.put(line.clone().into_bytes()).unwrap();
                assert_eq!((put.taken as usize, put.retry_ns), (line.len(), 0), "the quiet VM's line went out at once");
            }
            clock.fetch_add(10_000_000, Ordering::SeqCst);
        }
        // At most a burst plus 5 s at the rate (and, as it kept up, close).
        let most = rate.burst + 5 * rate.bytes_per_s;
        assert!(flooder_taken <= most, "the flooder got {flooder_taken} bytes, more than {most}");
        assert!(flooder_taken >= most - 2048, "the flooder got only {flooder_taken} of {most} bytes");
        assert!(refused > 450, "refused only {refused} times");
        drop((flooder, quiet, plain));
        let (written, _) = t.join().unwrap();
        let text = std::string::String::from_utf8(out.lock().unwrap().clone()).unwrap();
        // Every quiet line whole, on a line of its own; every flood line
        // whole and in order, none lost or repeated.
        let quiet_lines: std::vec::Vec<&str> = text.lines().filter(|l| l.starts_with("quiet")).collect();
        assert_eq!(quiet_lines.len(), 50);
        for (i, l) in quiet_lines.iter().enumerate() {
            assert_eq!(*l, std::format!("quiet vm line {i}"));
        }
        let floods: std::vec::Vec<&str> = text.lines().filter(|l| !l.starts_with("quiet")).collect();
        for (i, l) in floods.iter().enumerate() {
            assert_eq!(*l, flood_line(i).trim_end());
        }
        assert_eq!(written as usize, text.len());
    }

    /// `write` (servers' own text) over the allowance is dropped, counted and
    /// reported; the client's next write after a pause goes out.
    #[test]
    fn writes_over_the_rate_are_dropped_and_reported() {
        let rate = Rate { bytes_per_s: 1000, burst: 100 };
        let (plain, clock, out, t) = console_on_a_thread(rate);
        let noisy = console::Client::new(plain.badged(5));
        noisy.write("a".repeat(80)).unwrap();
        noisy.write("b".repeat(80)).unwrap();
        console::Client::new(plain.badged(6)).write("other\n".into()).unwrap();
        clock.fetch_add(1_000_000_000, Ordering::SeqCst);
        noisy.write("later\n".into()).unwrap();
        drop((noisy, plain));
        let (_, dropped) = t.join().unwrap();
        let text = std::string::String::from_utf8(out.lock().unwrap().clone()).unwrap();
        let expect = std::format!(
            "{}{}…[console: 60 bytes from client 5 over its rate dropped]\nother\nlater\n",
            "a".repeat(80),
            "b".repeat(20)
        );
        assert_eq!(text, expect);
        assert_eq!(dropped, 60);
    }

    #[test]
    fn typed_input_is_read_once_and_bounded() {
        use libipc::Dispatch;
        let mut typed: std::vec::Vec<u8> = b"ls\n".to_vec();
        let mut c = Console::new(Box::new(|_| {})).with_input(Box::new(move |_room, put| {
            for b in typed.drain(..) {
                put(b);
            }
            false
        }));
        c.notified(4);
        assert_eq!(console::Server::read(&mut c, 2), b"ls");
        assert_eq!(console::Server::read(&mut c, 100), b"\n");
        assert!(console::Server::read(&mut c, 100).is_empty());
        c.push_input(&[7u8; INPUT_LIMIT + 5]);
        assert_eq!(c.input_dropped, 5);
        assert_eq!(console::Server::read(&mut c, u32::MAX).len(), MAX_READ);
    }

    /// `vmadm console`: the reader feeds a VMM's queue, which that VMM
    /// alone reads; another VMM gets nothing of it; a non-reader may not
    /// feed; a full queue takes only what fits (the shell keeps the rest);
    /// bad targets and too many targets are refused.
    #[test]
    fn the_reader_feeds_one_vmm_and_nobody_else_may() {
        let (shell, vmm, other) = (5u64, libipc::interfaces::proc_instance_badge(3), libipc::interfaces::proc_instance_badge(4));
        let mut c = Console::new(Box::new(|_| {})).with_input_readers(&[shell]);
        c.set_caller(shell);
        assert_eq!(console::Server::feed(&mut c, vmm, b"echo hi\r".to_vec()), Ok(8));
        c.set_caller(other);
        assert!(console::Server::read(&mut c, 64).is_empty(), "another VMM got the input");
        assert_eq!(console::Server::feed(&mut c, other, b"x".to_vec()), Err(ConsoleRefusal::NotReader));
        c.set_caller(vmm);
        assert_eq!(console::Server::feed(&mut c, vmm, b"x".to_vec()), Err(ConsoleRefusal::NotReader));
        assert_eq!(console::Server::read(&mut c, 3), b"ech");
        assert_eq!(console::Server::read(&mut c, 64), b"o hi\r");
        assert!(console::Server::read(&mut c, 64).is_empty());
        // A long paste: the queue takes its limit, the rest is the feeder's.
        c.set_caller(shell);
        let long = std::vec![b'q'; CONSOLE_FEED_LIMIT + 100];
        assert_eq!(console::Server::feed(&mut c, vmm, long.clone()), Ok(CONSOLE_FEED_LIMIT as u32));
        assert_eq!(console::Server::feed(&mut c, vmm, long[..100].to_vec()), Ok(0));
        assert_eq!(c.fed_waiting(vmm), CONSOLE_FEED_LIMIT);
        c.set_caller(vmm);
        assert_eq!(console::Server::read(&mut c, u32::MAX).len(), MAX_READ);
        c.set_caller(shell);
        assert_eq!(console::Server::feed(&mut c, vmm, long[..100].to_vec()), Ok(100));
        // Unbadged, itself: refused; the shell's own typed input is untouched.
        assert_eq!(console::Server::feed(&mut c, 0, b"x".to_vec()), Err(ConsoleRefusal::BadTarget));
        assert_eq!(console::Server::feed(&mut c, shell, b"x".to_vec()), Err(ConsoleRefusal::BadTarget));
        c.push_input(b"ls\r");
        assert_eq!(console::Server::read(&mut c, 64), b"ls\r");
        // At most CONSOLE_FEED_TARGETS queues wait at once: past that the
        // one fed longest ago (the VMM's, above: what it had not read) is
        // forgotten.
        for i in 0..CONSOLE_FEED_TARGETS as u32 - 1 {
            assert_eq!(console::Server::feed(&mut c, 1000 + u64::from(i), b"a".to_vec()), Ok(1));
        }
        let unread = CONSOLE_FEED_LIMIT - MAX_READ + 100;
        assert_eq!(c.fed_waiting(vmm), unread);
        assert_eq!(console::Server::feed(&mut c, 5000, b"ab".to_vec()), Ok(2));
        assert_eq!((c.fed_waiting(vmm), c.fed_dropped), (0, unread as u64));
        assert_eq!(c.fed_waiting(5000), 2);
        c.set_caller(vmm);
        assert!(console::Server::read(&mut c, 64).is_empty());
        // With no reader named and nobody read yet, nobody may feed.
        let mut fresh = Console::new(Box::new(|_| {}));
        fresh.set_caller(shell);
        assert_eq!(console::Server::feed(&mut fresh, vmm, b"x".to_vec()), Err(ConsoleRefusal::NotReader));
    }

    /// A console whose allowance never runs out (the tail tests are about
    /// what is kept, not the rate).
    fn unlimited() -> Console {
        let rate = Rate { bytes_per_s: u64::MAX / 4, burst: u64::MAX / 4 };
        Console::new(Box::new(|_| {})).with_rate(Box::new(|| 1_000_000_000), rate)
    }

    /// Everything `tail` answers from `from` on, chunk by chunk.
    fn tail_all(c: &mut Console, target: u64, from: u64) -> (std::vec::Vec<u8>, u64, u64) {
        let first = console::Server::tail(c, target, from).unwrap();
        let (lost, mut next, mut got) = (first.lost, first.next, first.bytes);
        assert!(got.len() <= CONSOLE_TAIL_CHUNK);
        loop {
            let t = console::Server::tail(c, target, next).unwrap();
            assert_eq!((t.start, t.lost), (next, 0));
            if t.bytes.is_empty() {
                assert_eq!(t.next, t.end);
                return (got, lost, next);
            }
            next = t.next;
            got.extend(t.bytes);
        }
    }

    /// A VMM's output comes back through `tail` from any offset; past the
    /// ring's size the oldest bytes are forgotten and `tail` says how many
    /// of those asked for are lost.
    #[test]
    fn tail_gives_back_what_a_vmm_put_and_counts_what_the_ring_forgot() {
        use libipc::interfaces::proc_instance_badge;
        let (apid, vmm) = (7u64, proc_instance_badge(3));
        let mut c = unlimited().with_tailers(&[apid]);
        c.set_caller(vmm);
        assert_eq!(console::Server::put(&mut c, b"boot line\r\n".to_vec()).taken, 11);
        c.set_caller(apid);
        let t = console::Server::tail(&mut c, vmm, 0).unwrap();
        assert_eq!(t, ConsoleTail { start: 0, lost: 0, next: 11, end: 11, bytes: b"boot line\r\n".to_vec() });
        let t = console::Server::tail(&mut c, vmm, 5).unwrap();
        assert_eq!((t.start, t.next, t.bytes.as_slice()), (5, 11, &b"line\r\n"[..]));
        // Wrap around: 40 KiB more, in puts of odd sizes.
        let stream: std::vec::Vec<u8> = (0..40_000u32).map(|i| (i % 251) as u8).collect();
        c.set_caller(vmm);
        for piece in stream.chunks(1000 + 7) {
            assert_eq!(console::Server::put(&mut c, piece.to_vec()).taken as usize, piece.len());
        }
        let end = 11 + stream.len() as u64;
        c.set_caller(apid);
        let (got, lost, next) = tail_all(&mut c, vmm, 0);
        assert_eq!(next, end);
        assert_eq!(lost, end - CONSOLE_TAIL_BYTES as u64);
        assert_eq!(got.len(), CONSOLE_TAIL_BYTES);
        assert!(got[..] == stream[stream.len() - CONSOLE_TAIL_BYTES..], "the ring kept the wrong bytes");
        // From an offset still kept: exactly the bytes from there.
        let (got, lost, _) = tail_all(&mut c, vmm, end - 100);
        assert_eq!((lost, &got[..]), (0, &stream[stream.len() - 100..]));
        // At the end: nothing, and the same offset to ask from again.
        let t = console::Server::tail(&mut c, vmm, end).unwrap();
        assert_eq!((t.start, t.lost, t.next, t.end, t.bytes.len()), (end, 0, end, end, 0));
        // One put larger than the ring keeps its last bytes.
        c.set_caller(vmm);
        let big: std::vec::Vec<u8> = (0..CONSOLE_TAIL_BYTES as u32 + 500).map(|i| (i % 13) as u8).collect();
        for piece in big.chunks(MAX_WRITE) {
            console::Server::put(&mut c, piece.to_vec());
        }
        c.set_caller(apid);
        let (got, _, next) = tail_all(&mut c, vmm, 0);
        assert_eq!(next, end + big.len() as u64);
        assert!(got[..] == big[500..]);
    }

    /// Offsets past the end (the console restarted, or a made-up number,
    /// u64::MAX included) get what is kept from its oldest byte, saying
    /// where that is; a badge that never put gets nothing, at 0; nothing
    /// panics.
    #[test]
    fn tail_takes_offsets_past_the_end_and_badges_that_never_put() {
        use libipc::interfaces::proc_instance_badge;
        let (apid, vmm) = (7u64, proc_instance_badge(9));
        let mut c = unlimited().with_tailers(&[apid]);
        c.set_caller(apid);
        for from in [0, 1, 4096, u64::MAX] {
            let t = console::Server::tail(&mut c, vmm, from).unwrap();
            assert_eq!(t, ConsoleTail::default(), "from {from}");
            assert_eq!(console::Server::tail(&mut c, 0, from).unwrap(), ConsoleTail::default());
            assert_eq!(console::Server::tail(&mut c, u64::MAX, from).unwrap(), ConsoleTail::default());
        }
        c.set_caller(vmm);
        console::Server::put(&mut c, b"hello\n".to_vec());
        c.set_caller(apid);
        for from in [7, 100, u64::MAX - 1, u64::MAX] {
            let t = console::Server::tail(&mut c, vmm, from).unwrap();
            assert_eq!((t.start, t.lost, t.next, t.end, &t.bytes[..]), (0, 0, 6, 6, &b"hello\n"[..]), "from {from}");
        }
    }

    /// Only the manifest's `tail=` clients may read a VMM's output: any
    /// other (another VMM, the shell, an unbadged caller) is refused and
    /// learns nothing, and the console goes on serving. Output of clients
    /// that are not VMMs is not kept.
    #[test]
    fn tail_refuses_every_client_but_the_named_ones() {
        use libipc::interfaces::proc_instance_badge;
        let (apid, shell, vmm, other) = (7u64, 5u64, proc_instance_badge(1), proc_instance_badge(2));
        let mut c = unlimited().with_tailers(&[apid]).with_input_readers(&[shell]);
        c.set_caller(vmm);
        console::Server::put(&mut c, b"secret\n".to_vec());
        for caller in [shell, other, vmm, 0, u64::MAX] {
            c.set_caller(caller);
            assert_eq!(console::Server::tail(&mut c, vmm, 0), Err(ConsoleRefusal::NotTailer), "caller {caller}");
        }
        assert_eq!(c.tails_refused, 5);
        // No tail= at all: nobody may.
        let mut none = unlimited();
        none.set_caller(apid);
        assert_eq!(console::Server::tail(&mut none, vmm, 0), Err(ConsoleRefusal::NotTailer));
        // The shell's and other servers' puts are not kept.
        c.set_caller(shell);
        console::Server::put(&mut c, b"shell prompt\n".to_vec());
        c.set_caller(apid);
        assert_eq!(console::Server::tail(&mut c, shell, 0).unwrap(), ConsoleTail::default());
        assert_eq!(c.tail_bytes_kept(), 7);
        // The server went on: the VMM's line is still there for apid.
        assert_eq!(console::Server::tail(&mut c, vmm, 0).unwrap().bytes, b"secret\n");
    }

    /// At most TAIL_RINGS VMMs' output is kept: a new one forgets the one
    /// put to longest ago, so many chatty guests cannot grow the server.
    #[test]
    fn tail_keeps_a_bounded_number_of_rings() {
        use libipc::interfaces::proc_instance_badge;
        let apid = 7u64;
        let mut c = unlimited().with_tailers(&[apid]);
        let chunk = std::vec![b'z'; MAX_WRITE];
        for i in 0..TAIL_RINGS as u32 * 3 {
            c.set_caller(proc_instance_badge(i));
            for _ in 0..(CONSOLE_TAIL_BYTES / MAX_WRITE + 2) {
                console::Server::put(&mut c, chunk.clone());
            }
            assert!(c.tail_bytes_kept() <= TAIL_RINGS * CONSOLE_TAIL_BYTES);
        }
        assert_eq!(c.tail_bytes_kept(), TAIL_RINGS * CONSOLE_TAIL_BYTES);
        c.set_caller(apid);
        let first = console::Server::tail(&mut c, proc_instance_badge(0), 0).unwrap();
        assert_eq!(first, ConsoleTail::default(), "the ring put to longest ago was kept");
        let last = console::Server::tail(&mut c, proc_instance_badge(TAIL_RINGS as u32 * 3 - 1), 0).unwrap();
        assert_eq!(last.bytes.len(), CONSOLE_TAIL_CHUNK);
    }

    /// `feed=`: apid feeds a VMM (`POST /vms/:uuid/console`) without being
    /// the input's reader: the shell keeps typed input; apid may not feed
    /// the shell or itself; a client not named may not feed at all.
    #[test]
    fn a_feed_client_feeds_a_vmm_but_reads_no_typed_input() {
        use libipc::interfaces::proc_instance_badge;
        let (apid, shell, vmm, other) = (7u64, 5u64, proc_instance_badge(1), 8u64);
        let mut c = unlimited().with_input_readers(&[shell]).with_feeders(&[apid]);
        c.set_caller(apid);
        assert_eq!(console::Server::feed(&mut c, vmm, b"uname\r".to_vec()), Ok(6));
        assert_eq!(console::Server::feed(&mut c, shell, b"x".to_vec()), Err(ConsoleRefusal::BadTarget));
        assert_eq!(console::Server::feed(&mut c, apid, b"x".to_vec()), Err(ConsoleRefusal::BadTarget));
        c.push_input(b"ls\r");
        assert!(console::Server::read(&mut c, 64).is_empty(), "apid read typed input");
        c.set_caller(other);
        assert_eq!(console::Server::feed(&mut c, vmm, b"x".to_vec()), Err(ConsoleRefusal::NotReader));
        c.set_caller(vmm);
        assert_eq!(console::Server::read(&mut c, 64), b"uname\r");
        c.set_caller(shell);
        assert_eq!(console::Server::read(&mut c, 64), b"ls\r");
    }

    /// Without `input=` (api.toml: no shell), a VMM polling `read` does not
    /// become the input's reader: it stays a target apid may feed, and the
    /// first other client that reads gets typed input.
    #[test]
    fn a_vmm_never_becomes_the_reader_without_input_names() {
        use libipc::interfaces::proc_instance_badge;
        let (apid, vmm, server) = (7u64, proc_instance_badge(2), 9u64);
        let mut c = unlimited().with_feeders(&[apid]);
        c.push_input(b"typed");
        c.set_caller(vmm);
        assert!(console::Server::read(&mut c, 64).is_empty(), "the VMM took typed input");
        c.set_caller(apid);
        assert_eq!(console::Server::feed(&mut c, vmm, b"x\r".to_vec()), Ok(2));
        c.set_caller(vmm);
        assert_eq!(console::Server::read(&mut c, 64), b"x\r");
        c.set_caller(server);
        assert_eq!(console::Server::read(&mut c, 64), b"typed");
        c.set_caller(vmm);
        assert!(console::Server::read(&mut c, 64).is_empty());
    }

    /// Through IPC: a full chunk fits one reply, and a client that is not
    /// named gets the refusal as an answer.
    #[test]
    fn tail_over_ipc_fits_a_reply_and_refuses_by_badge() {
        use libipc::interfaces::proc_instance_badge;
        let (plain, mut server_end) = in_process::channel(4);
        let (apid, vmm) = (7u64, proc_instance_badge(4));
        let t = std::thread::spawn(move || {
            let mut c = unlimited().with_tailers(&[apid]);
            server_end.serve_until_closed(&mut c);
        });
        let v = console::Client::new(plain.badged(vmm));
        let noise: std::vec::Vec<u8> = (0..3000u32).map(|i| (i * 7 % 256) as u8).collect();
        assert_eq!(v.put(noise.clone()).unwrap().taken, 3000);
        let a = console::Client::new(plain.badged(apid));
        let got = a.tail(vmm, 0).unwrap().unwrap();
        assert_eq!((got.next, got.end), (CONSOLE_TAIL_CHUNK as u64, 3000));
        assert!(got.bytes[..] == noise[..CONSOLE_TAIL_CHUNK]);
        assert_eq!(v.tail(vmm, 0).unwrap(), Err(ConsoleRefusal::NotTailer));
        assert_eq!(a.tail(vmm, got.next).unwrap().unwrap().bytes[..], noise[CONSOLE_TAIL_CHUNK..]);
        drop((v, a, plain));
        t.join().unwrap();
    }

    /// A UART that holds `pending` bytes: hands out at most `room` a call,
    /// as the console's hardware glue does.
    fn uart(pending: std::sync::Arc<Mutex<VecDeque<u8>>>) -> InputSource {
        Box::new(move |room, put| {
            let mut p = pending.lock().unwrap();
            for _ in 0..room {
                match p.pop_front() {
                    Some(b) => put(b),
                    None => return false,
                }
            }
            !p.is_empty()
        })
    }

    /// The lead's shell-case failure beside a CPU hog: with a VM running,
    /// its VMM (polling `read` for its guest's UART every 20 ms) took part
    /// of a line typed at the shell, which then waited for ever for the
    /// rest. Input now goes to one reader: the manifest's `input=` clients,
    /// else the first that reads.
    #[test]
    fn typed_input_goes_to_its_one_reader_and_never_to_a_vmm() {
        use libipc::Dispatch;
        let (shell, vmm) = (5u64, 9u64);
        let line = b"vmadm delete 5e11c0de-0000-4000-8000-0000000000a1\r".to_vec();
        for named in [true, false] {
            let pending = Arc::new(Mutex::new(VecDeque::new()));
            let mut c = Console::new(Box::new(|_| {})).with_input(uart(pending.clone()));
            if named {
                c = c.with_input_readers(&[shell]);
            } else {
                // The shell reads first (at boot, before any VM runs).
                c.set_caller(shell);
                assert!(console::Server::read(&mut c, 64).is_empty());
            }
            let mut got = std::vec::Vec::new();
            // The line arrives 14 bytes (the FIFO's trigger level) at a
            // time; the VMM and the shell poll in turns between arrivals.
            for chunk in line.chunks(14) {
                pending.lock().unwrap().extend(chunk);
                c.notified(4);
                c.set_caller(vmm);
                assert!(console::Server::read(&mut c, 64).is_empty(), "the VMM got typed input");
                c.set_caller(shell);
                got.extend(console::Server::read(&mut c, 64));
            }
            assert_eq!(got, line, "named readers: {named}");
            assert_eq!(c.reads_refused, 4);
        }
    }

    /// A paste longer than the console's buffer arrives whole: the console
    /// takes from the UART only what it has room for and takes the rest as
    /// reads make room (it used to drop the oldest bytes past 4 KiB).
    #[test]
    fn a_paste_past_the_buffer_arrives_whole_and_in_order() {
        let paste: std::vec::Vec<u8> = (0..65_542u32).map(|i| b'a' + (i % 26) as u8).collect();
        let pending = Arc::new(Mutex::new(paste.iter().copied().collect::<VecDeque<u8>>()));
        let mut c = Console::new(Box::new(|_| {})).with_input(uart(pending.clone()));
        use libipc::Dispatch;
        c.notified(4);
        assert_eq!(pending.lock().unwrap().len(), paste.len() - INPUT_LIMIT, "took more than it has room for");
        let mut got = std::vec::Vec::new();
        loop {
            let r = console::Server::read(&mut c, 2048);
            if r.is_empty() {
                break;
            }
            got.extend(r);
        }
        assert_eq!(c.input_dropped, 0);
        assert_eq!(got.len(), paste.len());
        assert!(got == paste, "bytes lost or reordered");
        // Once the UART is empty, new typing comes in through the
        // interrupt again.
        pending.lock().unwrap().extend(b"ls\r");
        c.notified(4);
        assert_eq!(console::Server::read(&mut c, 64), b"ls\r");
    }
}
