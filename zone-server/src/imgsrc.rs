//! imgadm's image sources: `imgadm sources` (kept on the pool),
//! `imgadm avail` (`GET /images` of each source) and `imgadm import UUID`
//! (`GET /images/UUID`, then `GET /images/UUID/file` streamed into
//! [`alcove_images::store::Install`], which checks size and
//! `files[0].sha1` and decompresses gzip or xz; nothing is installed if
//! anything fails).
//!
//! The HTTP/1.1 client is alcove-api's sans-IO one
//! ([`alcove_api::client`]: requests encoded, responses decoded with
//! httparse, `Content-Length`, chunked or to the end, the head bounded);
//! here it is driven over a [`Net`]: netd's TCP sockets on Alcove, a
//! scripted server in the host tests. Bounds: the response head
//! ([`alcove_api::client::MAX_RESPONSE_HEAD`]), a manifest
//! ([`MANIFEST_BODY_MAX`]), a list ([`LIST_BODY_MAX`]), the image file
//! (`files[0].size`), and a server silent for [`IDLE_TIMEOUT_MS`].
//!
//! Sources are `http://` URLs whose host is an IPv4 address (Alcove has no
//! DNS resolver and no TLS yet); they are kept, one per line, in the user
//! property [`SOURCES_PROP`] of the small volume [`SOURCES_VOLUME`], so
//! they survive a zone-server restart and a machine reboot (as SmartOS
//! keeps them in `/var/imgadm/imgadm.conf`).

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use alcove_api::client::{self, Event, Request, ResponseDecoder, ResponseHead, Url};
use alcove_images::cli::Output;
use alcove_images::output::{self, ListOptions};
use alcove_images::store::FileReader;
use alcove_images::{Error, Manifest, imgapi};

use crate::host::Machine;

/// TCP connections to image sources, as netd's `socket` interface offers
/// them, and a way to wait between looks.
pub trait Net {
    /// Opens a connection to `ip:port` (it may still be pending).
    fn connect(&mut self, ip: [u8; 4], port: u16) -> Result<u32, String>;
    /// Queues what it can of `data`: the bytes taken (0 while pending or full).
    fn send(&mut self, socket: u32, data: &[u8]) -> Result<usize, String>;
    /// Up to `max` bytes received: empty when none arrived yet, `None`
    /// once the peer closed and everything it sent was read.
    fn recv(&mut self, socket: u32, max: usize) -> Result<Option<Vec<u8>>, String>;
    /// Closes the connection.
    fn close(&mut self, socket: u32);
    /// Waits about `ms` milliseconds.
    fn sleep_ms(&mut self, ms: u64);
}

/// The volume whose user property holds the sources.
pub const SOURCES_VOLUME: &str = "zones/imgadm";
/// The user property holding the sources, one URL a line.
pub const SOURCES_PROP: &str = "alcove:imgadm-sources";
/// The two slots the list is kept in, in turns ([`crate::host::save_slotted`]);
/// [`SOURCES_PROP`] is an earlier build's, still read.
pub const SOURCES_SLOTS: [&str; 2] = ["alcove:imgadm-sources.a", "alcove:imgadm-sources.b"];
/// Sources kept at most.
pub const SOURCES_MAX: usize = 16;
/// Bytes of a source's URL at most.
pub const SOURCE_URL_MAX: usize = 512;
/// A source that sends nothing (and takes nothing) this long is given up.
pub const IDLE_TIMEOUT_MS: u64 = 30_000;
/// How long to wait between looks at a quiet connection.
pub const POLL_MS: u64 = 5;
/// Bytes asked of the connection at a time (through the buffer shared
/// with netd, 16 KiB; an inline `recv` carries 2 KiB of them).
pub const RECV_BYTES: usize = 16 * 1024;
/// The largest manifest taken (`GET /images/UUID`).
pub const MANIFEST_BODY_MAX: usize = alcove_images::manifest::MAX_MANIFEST;
/// The largest image list taken (`GET /images`); zone-server's heap is small.
pub const LIST_BODY_MAX: usize = 512 * 1024;
/// Bytes of an error status's body read for its message.
const ERROR_BODY_MAX: usize = 4096;
/// Bytes of the image file read at a time.
const FILE_READ_BYTES: usize = 16 * 1024;

fn download(what: &str, why: impl core::fmt::Display) -> Error {
    Error::Download(format!("{what}: {why}"))
}

/// A source's URL checked: `http://IPV4[:PORT][/PATH]`.
pub fn parse_source(url: &str) -> Result<(Url, [u8; 4]), Error> {
    let bad = |why: &str| Error::Invalid(format!("image source {url:?}: {why}"));
    if url.len() > SOURCE_URL_MAX {
        return Err(bad(&format!("longer than {SOURCE_URL_MAX} bytes")));
    }
    imgapi::Source::new(url)?;
    if url.starts_with("https://") {
        return Err(bad("https is not spoken here yet (no TLS on Alcove): use an http:// source"));
    }
    let u = Url::parse(url).map_err(|e| bad(&e.to_string()))?;
    let ip = parse_ipv4(&u.host)
        .ok_or_else(|| bad("the host must be an IPv4 address (Alcove has no DNS resolver yet)"))?;
    Ok((u, ip))
}

fn parse_ipv4(s: &str) -> Option<[u8; 4]> {
    let mut out = [0u8; 4];
    let mut parts = s.split('.');
    for o in &mut out {
        let p = parts.next()?;
        if p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        *o = p.parse().ok()?;
    }
    parts.next().is_none().then_some(out)
}

/// One response being read: its head, then its body through
/// [`FileReader::read`] (0 at its end). The connection closes when it is
/// dropped.
pub struct Body<'n, N: Net> {
    net: &'n mut N,
    dl: Download,
}

impl<N: Net> Drop for Body<'_, N> {
    fn drop(&mut self) {
        self.net.close(self.dl.socket);
    }
}

impl<'n, N: Net> Body<'n, N> {
    /// Sends `req` to the source at `url` (`ip`) and reads the response's head.
    pub fn open(net: &'n mut N, url: &Url, ip: [u8; 4], req: &Request) -> Result<(ResponseHead, Self), Error> {
        let (head, dl) = Download::open(net, url, ip, req)?;
        Ok((head, Body { net, dl }))
    }

    /// `GET URL`, for errors.
    pub fn what(&self) -> &str {
        &self.dl.what
    }

    /// The whole body, at most `max` bytes.
    pub fn read_all(&mut self, max: usize) -> Result<Vec<u8>, Error> {
        self.dl.read_all(self.net, max)
    }
}

impl<N: Net> FileReader for Body<'_, N> {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Error> {
        self.dl.read(self.net, buf)
    }
}

/// A response being read that holds no borrow of the [`Net`] (each call
/// is handed it): what [`Body`] wraps, and what a stepped import keeps
/// between requests. Its connection must be given back with
/// [`Download::close`].
pub struct Download {
    socket: u32,
    decoder: ResponseDecoder,
    /// Body bytes decoded but not yet read.
    pending: Vec<u8>,
    at: usize,
    ended: bool,
    peer_closed: bool,
    /// `GET URL`, for errors.
    pub what: String,
}

impl Download {
    /// Sends `req` to the source at `url` (`ip`) and reads the response's
    /// head. A failure closes the connection.
    pub fn open<N: Net>(net: &mut N, url: &Url, ip: [u8; 4], req: &Request) -> Result<(ResponseHead, Self), Error> {
        let what = format!("GET {url}{}", req.target);
        let socket = net.connect(ip, url.port).map_err(|e| download(&what, format!("cannot connect: {e}")))?;
        let mut dl =
            Download { socket, decoder: ResponseDecoder::new(), pending: Vec::new(), at: 0, ended: false, peer_closed: false, what };
        match dl.send_and_head(net, url, req) {
            Ok(h) => Ok((h, dl)),
            Err(e) => {
                dl.close(net);
                Err(e)
            }
        }
    }

    fn send_and_head<N: Net>(&mut self, net: &mut N, url: &Url, req: &Request) -> Result<ResponseHead, Error> {
        let bytes = req.encode(url, true);
        let mut sent = 0;
        let mut idle = 0;
        while sent < bytes.len() {
            let n = net.send(self.socket, &bytes[sent..]).map_err(|e| download(&self.what, e))?;
            sent += n;
            if n == 0 {
                self.idle(net, &mut idle)?;
            } else {
                idle = 0;
            }
        }
        match self.next_event(net)? {
            Event::Head(h) => Ok(h),
            // The decoder gives the head first.
            _ => Err(download(&self.what, "the response has no head")),
        }
    }

    /// Closes the connection.
    pub fn close<N: Net>(self, net: &mut N) {
        net.close(self.socket);
    }

    fn idle<N: Net>(&mut self, net: &mut N, idle: &mut u64) -> Result<(), Error> {
        if *idle >= IDLE_TIMEOUT_MS {
            return Err(download(&self.what, format!("the image source sent nothing for {} s", IDLE_TIMEOUT_MS / 1000)));
        }
        net.sleep_ms(POLL_MS);
        *idle += POLL_MS;
        Ok(())
    }

    /// The decoder's next event, receiving as needed.
    fn next_event<N: Net>(&mut self, net: &mut N) -> Result<Event, Error> {
        let mut idle = 0;
        loop {
            if let Some(ev) = self.decoder.next_event().map_err(|e| download(&self.what, e))? {
                return Ok(ev);
            }
            if self.peer_closed {
                return Err(download(&self.what, client::DecodeError::Truncated));
            }
            match net.recv(self.socket, RECV_BYTES).map_err(|e| download(&self.what, e))? {
                None => {
                    self.peer_closed = true;
                    self.decoder.finish();
                }
                Some(d) if d.is_empty() => self.idle(net, &mut idle)?,
                Some(d) => {
                    idle = 0;
                    self.decoder.push(&d);
                }
            }
        }
    }

    /// The whole body, at most `max` bytes.
    pub fn read_all<N: Net>(&mut self, net: &mut N, max: usize) -> Result<Vec<u8>, Error> {
        let mut out = Vec::new();
        let mut buf = [0u8; 1024];
        loop {
            let n = self.read(net, &mut buf)?;
            if n == 0 {
                return Ok(out);
            }
            if out.len() + n > max {
                return Err(download(&self.what, format!("the answer runs past {max} bytes")));
            }
            out.extend_from_slice(&buf[..n]);
        }
    }

    /// Fills the front of `buf` with the body's next bytes; 0 at its end.
    pub fn read<N: Net>(&mut self, net: &mut N, buf: &mut [u8]) -> Result<usize, Error> {
        while self.at == self.pending.len() && !self.ended {
            match self.next_event(net)? {
                Event::Data(d) => {
                    self.pending = d;
                    self.at = 0;
                }
                Event::End => self.ended = true,
                Event::Head(_) => return Err(download(&self.what, "a second response head")),
            }
        }
        let n = buf.len().min(self.pending.len() - self.at);
        buf[..n].copy_from_slice(&self.pending[self.at..self.at + n]);
        self.at += n;
        if self.at == self.pending.len() {
            self.pending = Vec::new();
            self.at = 0;
        }
        Ok(n)
    }
}

/// `GET` with a body of at most `max` bytes: a 2xx answer's body, or the
/// source's error.
pub fn get<N: Net>(net: &mut N, source: &str, req: &Request, max: usize) -> Result<Vec<u8>, Error> {
    let (url, ip) = parse_source(source)?;
    let (head, mut body) = Body::open(net, &url, ip, req)?;
    let ok = (200..300).contains(&head.status);
    let bytes = body.read_all(if ok { max } else { ERROR_BODY_MAX })?;
    client::imgapi::check_status(&head, &bytes).map_err(|e| download(body.what(), e))?;
    Ok(bytes)
}

/// The configured sources, in order.
pub fn sources<M: Machine>(m: &mut M) -> Result<Vec<String>, Error> {
    let names = m.list_volumes().map_err(|e| Error::Invalid(format!("imgadm sources: {e}")))?;
    if !names.iter().any(|n| n == SOURCES_VOLUME) {
        return Ok(Vec::new());
    }
    let text = crate::host::load_slotted(m, SOURCES_VOLUME, SOURCES_SLOTS, SOURCES_PROP)
        .map_err(|e| Error::Invalid(format!("imgadm sources: {e}")))?
        .map(|(t, _)| t)
        .unwrap_or_default();
    Ok(text.lines().filter(|l| !l.is_empty()).map(ToString::to_string).collect())
}

fn save_sources<M: Machine>(m: &mut M, list: &[String]) -> Result<(), Error> {
    let fail = |e: String| Error::Invalid(format!("imgadm sources: keeping the sources on the pool: {e}"));
    let names = m.list_volumes().map_err(fail)?;
    if !names.iter().any(|n| n == SOURCES_VOLUME) {
        m.create_volume(SOURCES_VOLUME, crate::host::RECORD_VOLSIZE).map_err(fail)?;
    }
    let text: String = list.iter().map(|s| format!("{s}\n")).collect();
    // In two slots in turns, as a VM's record: a power cut mid-way leaves
    // the list before.
    let was = crate::host::load_slotted(m, SOURCES_VOLUME, SOURCES_SLOTS, SOURCES_PROP).map_err(fail)?.map(|(_, s)| s).unwrap_or_default();
    crate::host::save_slotted(m, SOURCES_VOLUME, SOURCES_SLOTS, SOURCES_PROP, &text, was).map_err(fail)?;
    Ok(())
}

/// `imgadm sources [-j] | -a URL | -d URL`.
pub fn sources_cmd<M: Machine>(m: &mut M, args: &[&str]) -> Result<String, Error> {
    let mut list = sources(m)?;
    match args {
        [] => Ok(list.iter().map(|s| format!("{s}\n")).collect()),
        ["-j"] => {
            let v: Vec<serde_json::Value> =
                list.iter().map(|s| serde_json::json!({"type": "imgapi", "url": s})).collect();
            let mut out = serde_json::to_string_pretty(&v).unwrap_or_default();
            out.push('\n');
            Ok(out)
        }
        ["-a", url] => {
            let (u, _) = parse_source(url)?;
            let url = u.to_string();
            if list.contains(&url) {
                return Ok(format!("Already have image source \"{url}\", no change\n"));
            }
            if list.len() >= SOURCES_MAX {
                return Err(Error::Invalid(format!("imgadm sources -a: {SOURCES_MAX} sources at most")));
            }
            list.push(url.clone());
            save_sources(m, &list)?;
            Ok(format!("Added image source \"{url}\"\n"))
        }
        ["-d", url] => {
            let url = Url::parse(url).map(|u| u.to_string()).unwrap_or_else(|_| url.to_string());
            let Some(at) = list.iter().position(|s| *s == url) else {
                return Ok(format!("Do not have image source \"{url}\", no change\n"));
            };
            list.remove(at);
            save_sources(m, &list)?;
            Ok(format!("Deleted image source \"{url}\"\n"))
        }
        _ => Err(Error::Invalid(String::from("imgadm sources: usage: imgadm sources [-j] | -a URL | -d URL"))),
    }
}

/// `imgadm avail [-H] [-j] [-o F,...] [-s F,...] [F=V ...]`: the images
/// every source offers (a source that fails is named on stderr, and the
/// exit status is 1).
pub fn avail<M: Machine>(m: &mut M, args: &[&str]) -> Output {
    let r = (|| {
        let opts = ListOptions::parse(args)?;
        let list = sources(m)?;
        if list.is_empty() {
            return Err(Error::Invalid(String::from("imgadm avail: no image sources (add one: imgadm sources -a URL)")));
        }
        Ok((opts, list))
    })();
    let (opts, list) = match r {
        Ok(x) => x,
        Err(e) => return alcove_images::cli::output(Err(e)),
    };
    let mut stderr = String::new();
    let mut all = imgapi::Listing::default();
    let mut pairs: Vec<(Manifest, String)> = Vec::new();
    let (net, _) = m.net_and_images();
    for s in &list {
        let listing = get(net, s, &client::imgapi::list_images(&[]), LIST_BODY_MAX).and_then(|b| imgapi::parse_list(&b));
        match listing {
            Ok(l) => {
                for img in l.images {
                    if !pairs.iter().any(|(p, _)| p.uuid == img.uuid) {
                        pairs.push((img.clone(), s.clone()));
                        all.images.push(img);
                    }
                }
                all.skipped.extend(l.skipped);
            }
            Err(e) => stderr.push_str(&format!("imgadm: error ({}): source \"{s}\": {e}\n", e.code())),
        }
    }
    let stdout = if opts.json { output::avail_json(&pairs, &opts) } else { output::avail_table(&all, &opts) };
    let status = if stderr.is_empty() { 0 } else { 1 };
    Output { stdout, stderr, status }
}

/// `imgadm import [-q] UUID [-S URL]`, from start to end: imgadm's
/// `Importing ...` line, the last progress line (a terminal shows the last
/// one: the others were drawn over it) and `Imported image ...`. The
/// operator shell steps the same import itself ([`import_begin`],
/// [`ImportJob::step`]) to draw each progress line as it comes.
pub fn import<M: Machine>(m: &mut M, args: &[&str]) -> Output {
    let (mut job, mut stdout) = match import_begin(m, args) {
        Ok(x) => x,
        Err(out) => return out,
    };
    loop {
        match job.step(m) {
            Stepped::Running(j) => job = *j,
            Stepped::Done { mut out, last_line } => {
                if let Some(line) = last_line.filter(|_| out.status == 0) {
                    stdout.push_str(&line);
                    stdout.push('\n');
                }
                stdout.push_str(&out.stdout);
                out.stdout = stdout;
                return out;
            }
        }
    }
}

/// Bytes of the image file one [`ImportJob::step`] reads at most (it
/// stops sooner when the progress line's percentage changes).
pub const STEP_BYTES: usize = 1024 * 1024;

/// An `imgadm import` under way: the file's response being read and the
/// install it feeds, kept between steps (it borrows nothing). Dropping it
/// without [`ImportJob::cancel`] leaves its connection open and its
/// partial volume behind (the next install of the image removes that).
pub struct ImportJob {
    uuid: String,
    quiet: bool,
    dl: Download,
    inst: alcove_images::store::Installing,
    meter: imgapi::Progress,
    line: Option<String>,
    done: String,
}

/// What a step left: the import going on, or its end (installed, or
/// refused with nothing installed).
pub enum Stepped {
    /// The job, boxed: it is large and moves at every step.
    Running(alloc::boxed::Box<ImportJob>),
    Done {
        /// imgadm's last lines (`Imported image ...`) or its error.
        out: Output,
        /// The last progress line drawn (none with `-q`).
        last_line: Option<String>,
    },
}

impl ImportJob {
    /// The image being imported.
    pub fn uuid(&self) -> &str {
        &self.uuid
    }

    /// Bytes of the file received so far, and in all (`files[0].size`).
    pub fn progress(&self) -> (u64, u64) {
        (self.inst.received(), self.inst.manifest().file.size)
    }

    /// The progress line as it stands (none with `-q`, or before the
    /// first bytes).
    pub fn line(&self) -> Option<&str> {
        if self.quiet { None } else { self.line.as_deref() }
    }

    /// Reads and installs the file's next bytes: up to [`STEP_BYTES`],
    /// fewer when the percentage changes first (each new line is drawn);
    /// at the file's end the install is checked and finished. A failure
    /// installs nothing and closes the connection.
    pub fn step<M: Machine>(mut self, m: &mut M) -> Stepped {
        let mut buf = alloc::vec![0u8; FILE_READ_BYTES];
        let mut taken = 0;
        let (net, pool) = m.net_and_images();
        loop {
            // Whole buffers: the store writes the pool in large pieces.
            let mut n = 0;
            let read = loop {
                match self.dl.read(net, &mut buf[n..]) {
                    Ok(0) => break Ok(true),
                    Ok(got) => n += got,
                    Err(e) => break Err(e),
                }
                if n == buf.len() {
                    break Ok(false);
                }
            };
            let ended = match read {
                Ok(ended) => ended,
                Err(e) => return self.fail(net, pool, e),
            };
            if n > 0 {
                // `write` takes back what it made when it fails.
                if let Err(e) = self.inst.write(pool, &buf[..n]) {
                    let last_line = self.line.take().filter(|_| !self.quiet);
                    self.dl.close(net);
                    return Stepped::Done { out: alcove_images::cli::output(Err(e)), last_line };
                }
                taken += n;
                if let Some(line) = self.meter.advance(n as u64) {
                    self.line = Some(line);
                    if !ended {
                        return Stepped::Running(alloc::boxed::Box::new(self));
                    }
                }
            }
            if ended {
                break;
            }
            if taken >= STEP_BYTES {
                return Stepped::Running(alloc::boxed::Box::new(self));
            }
        }
        self.dl.close(net);
        let last_line = self.line.take().filter(|_| !self.quiet);
        let out = alcove_images::cli::output(self.inst.finish(pool).map(|_| self.done));
        Stepped::Done { out, last_line }
    }

    fn fail<N: Net, P: alcove_images::PoolOps>(self, net: &mut N, pool: &mut P, e: Error) -> Stepped {
        let last_line = if self.quiet { None } else { self.line.clone() };
        self.dl.close(net);
        self.inst.cancel(pool);
        Stepped::Done { out: alcove_images::cli::output(Err(e)), last_line }
    }

    /// Gives the import up: the connection closed, nothing installed.
    pub fn cancel<M: Machine>(self, m: &mut M) {
        let (net, pool) = m.net_and_images();
        self.dl.close(net);
        self.inst.cancel(pool);
    }
}

/// Starts `imgadm import [-q] UUID [-S URL]`: the image's manifest from
/// the first source that has it, then the file's response head (its
/// status and `Content-Length` checked) and the install begun. `Ok` is
/// the job and what to print before its progress (imgadm's `Importing
/// ...` line); `Err` an import that ended already: refused (usage, a bad
/// uuid, no source, not found, a bad answer: nothing installed) or
/// needless (already installed, exit 0).
pub fn import_begin<M: Machine>(m: &mut M, args: &[&str]) -> Result<(ImportJob, String), Output> {
    let mut uuid = None;
    let mut only = None;
    let mut quiet = false;
    let mut it = args.iter();
    let usage = || alcove_images::cli::output(Err(Error::Invalid(String::from("imgadm import: usage: imgadm import [-q] UUID [-S SOURCE_URL]"))));
    while let Some(&a) = it.next() {
        match a {
            "-q" => quiet = true,
            "-S" => match it.next() {
                Some(u) => only = Some(u.to_string()),
                None => return Err(usage()),
            },
            u if !u.starts_with('-') && uuid.is_none() => uuid = Some(u.to_string()),
            _ => return Err(usage()),
        }
    }
    let Some(uuid) = uuid else { return Err(usage()) };
    if !alcove_images::manifest::is_uuid(&uuid) {
        return Err(alcove_images::cli::output(Err(Error::Invalid(format!("imgadm import: {uuid:?} is not an image UUID")))));
    }
    if let Ok(r) = alcove_images::store::get(m.images(), &uuid) {
        let m = &r.manifest;
        return Err(alcove_images::cli::output(Ok(format!("Image {uuid} ({}@{}) is already installed, skipping\n", m.name, m.version))));
    }
    let list = match only {
        Some(s) => match parse_source(&s) {
            Ok((u, _)) => alloc::vec![u.to_string()],
            Err(e) => return Err(alcove_images::cli::output(Err(e))),
        },
        None => match sources(m) {
            Ok(l) if l.is_empty() => {
                return Err(alcove_images::cli::output(Err(Error::Invalid(String::from(
                    "imgadm import: no image sources (add one: imgadm sources -a URL, or give -S URL)",
                )))));
            }
            Ok(l) => l,
            Err(e) => return Err(alcove_images::cli::output(Err(e))),
        },
    };
    let mut out = String::new();
    match begin_from(m, &uuid, &list, quiet, &mut out) {
        Ok(job) => Ok((job, out)),
        Err(e) => {
            let mut o = alcove_images::cli::output(Err(e));
            o.stdout.insert_str(0, &out);
            Err(o)
        }
    }
}

fn begin_from<M: Machine>(m: &mut M, uuid: &str, list: &[String], quiet: bool, out: &mut String) -> Result<ImportJob, Error> {
    let auuid = alcove_api::Uuid::parse(uuid).ok_or_else(|| Error::Invalid(format!("imgadm import: {uuid:?} is not an image UUID")))?;
    let (net, pool) = m.net_and_images();
    // The first source that has the image.
    let mut misses = Vec::new();
    let mut found = None;
    for s in list {
        match get(net, s, &client::imgapi::get_image(auuid), MANIFEST_BODY_MAX) {
            Ok(body) => {
                found = Some((s.clone(), imgapi::parse_image(&body, uuid)?));
                break;
            }
            // Not there (404) or not reachable: the next source.
            Err(Error::Download(why)) => misses.push(why),
            Err(e) => return Err(e),
        }
    }
    let Some((source, manifest)) = found else {
        return Err(Error::Download(format!("image {uuid} was not found in any image source: {}", misses.join("; "))));
    };
    let src = imgapi::Source::new(&source)?;
    out.push_str(&imgapi::import_line(&manifest, &src));
    out.push('\n');
    let (url, ip) = parse_source(&source)?;
    let (head, mut dl) = Download::open(net, &url, ip, &client::imgapi::get_image_file(auuid))?;
    let checked = (|| {
        if !(200..300).contains(&head.status) {
            let bytes = dl.read_all(net, ERROR_BODY_MAX)?;
            client::imgapi::check_status(&head, &bytes).map_err(|e| download(&dl.what, e))?;
        }
        if let Some(len) = head.header("content-length").and_then(|v| v.trim().parse::<u64>().ok())
            && len != manifest.file.size
        {
            return Err(download(
                &dl.what,
                format!("the file is {len} bytes (Content-Length), files[0].size says {}", manifest.file.size),
            ));
        }
        Ok(())
    })();
    if let Err(e) = checked {
        dl.close(net);
        return Err(e);
    }
    let done = format!("Imported image {uuid} ({}@{})\n", manifest.name, manifest.version);
    let meter = imgapi::Progress::new(&manifest);
    let mut inst = match alcove_images::store::Installing::begin(pool, manifest, Some(&source)) {
        Ok(i) => i,
        Err(e) => {
            dl.close(net);
            return Err(e);
        }
    };
    inst.grow_heap_with(crate::grow_heap);
    Ok(ImportJob { uuid: uuid.to_string(), quiet, dl, inst, meter, line: None, done })
}
