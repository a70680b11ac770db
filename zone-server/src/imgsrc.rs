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
use alcove_images::store::{FileReader, Install};
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
/// Sources kept at most.
pub const SOURCES_MAX: usize = 16;
/// Bytes of a source's URL at most.
pub const SOURCE_URL_MAX: usize = 512;
/// A source that sends nothing (and takes nothing) this long is given up.
pub const IDLE_TIMEOUT_MS: u64 = 30_000;
/// How long to wait between looks at a quiet connection.
pub const POLL_MS: u64 = 5;
/// Bytes asked of the connection at a time (netd's inline `recv` carries
/// 2 KiB).
pub const RECV_BYTES: usize = libipc::interfaces::SOCKET_INLINE_MAX as usize;
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

impl<N: Net> Drop for Body<'_, N> {
    fn drop(&mut self) {
        self.net.close(self.socket);
    }
}

impl<'n, N: Net> Body<'n, N> {
    /// Sends `req` to the source at `url` (`ip`) and reads the response's head.
    pub fn open(net: &'n mut N, url: &Url, ip: [u8; 4], req: &Request) -> Result<(ResponseHead, Self), Error> {
        let what = format!("GET {url}{}", req.target);
        let socket = net.connect(ip, url.port).map_err(|e| download(&what, format!("cannot connect: {e}")))?;
        let mut body = Body {
            net,
            socket,
            decoder: ResponseDecoder::new(),
            pending: Vec::new(),
            at: 0,
            ended: false,
            peer_closed: false,
            what,
        };
        let bytes = req.encode(url, true);
        let mut sent = 0;
        let mut idle = 0;
        while sent < bytes.len() {
            let n = body.net.send(socket, &bytes[sent..]).map_err(|e| download(&body.what, e))?;
            sent += n;
            if n == 0 {
                body.idle(&mut idle)?;
            } else {
                idle = 0;
            }
        }
        match body.next_event()? {
            Event::Head(h) => Ok((h, body)),
            // The decoder gives the head first.
            _ => Err(download(&body.what, "the response has no head")),
        }
    }

    fn idle(&mut self, idle: &mut u64) -> Result<(), Error> {
        if *idle >= IDLE_TIMEOUT_MS {
            return Err(download(&self.what, format!("the image source sent nothing for {} s", IDLE_TIMEOUT_MS / 1000)));
        }
        self.net.sleep_ms(POLL_MS);
        *idle += POLL_MS;
        Ok(())
    }

    /// The decoder's next event, receiving as needed.
    fn next_event(&mut self) -> Result<Event, Error> {
        let mut idle = 0;
        loop {
            if let Some(ev) = self.decoder.next_event().map_err(|e| download(&self.what, e))? {
                return Ok(ev);
            }
            if self.peer_closed {
                return Err(download(&self.what, client::DecodeError::Truncated));
            }
            match self.net.recv(self.socket, RECV_BYTES).map_err(|e| download(&self.what, e))? {
                None => {
                    self.peer_closed = true;
                    self.decoder.finish();
                }
                Some(d) if d.is_empty() => self.idle(&mut idle)?,
                Some(d) => {
                    idle = 0;
                    self.decoder.push(&d);
                }
            }
        }
    }

    /// The whole body, at most `max` bytes.
    pub fn read_all(&mut self, max: usize) -> Result<Vec<u8>, Error> {
        let mut out = Vec::new();
        let mut buf = [0u8; 1024];
        loop {
            let n = self.read(&mut buf)?;
            if n == 0 {
                return Ok(out);
            }
            if out.len() + n > max {
                return Err(download(&self.what, format!("the answer runs past {max} bytes")));
            }
            out.extend_from_slice(&buf[..n]);
        }
    }
}

impl<N: Net> FileReader for Body<'_, N> {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Error> {
        while self.at == self.pending.len() && !self.ended {
            match self.next_event()? {
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
    client::imgapi::check_status(&head, &bytes).map_err(|e| download(&body.what, e))?;
    Ok(bytes)
}

/// The configured sources, in order.
pub fn sources<M: Machine>(m: &mut M) -> Result<Vec<String>, Error> {
    let names = m.list_volumes().map_err(|e| Error::Invalid(format!("imgadm sources: {e}")))?;
    if !names.iter().any(|n| n == SOURCES_VOLUME) {
        return Ok(Vec::new());
    }
    let text = m
        .get_property(SOURCES_VOLUME, SOURCES_PROP)
        .map_err(|e| Error::Invalid(format!("imgadm sources: {e}")))?
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
    // One property value carries a chunk; the rest is appended.
    let mut rest = text.as_str();
    let mut first = true;
    while first || !rest.is_empty() {
        let end = rest.len().min(crate::host::RECORD_CHUNK);
        m.set_property(SOURCES_VOLUME, SOURCES_PROP, &rest[..end], !first).map_err(fail)?;
        rest = &rest[end..];
        first = false;
    }
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

/// `imgadm import [-q] UUID [-S URL]`.
pub fn import<M: Machine>(m: &mut M, args: &[&str]) -> Output {
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
                None => return usage(),
            },
            u if !u.starts_with('-') && uuid.is_none() => uuid = Some(u.to_string()),
            _ => return usage(),
        }
    }
    let Some(uuid) = uuid else { return usage() };
    if !alcove_images::manifest::is_uuid(&uuid) {
        return alcove_images::cli::output(Err(Error::Invalid(format!("imgadm import: {uuid:?} is not an image UUID"))));
    }
    if let Ok(r) = alcove_images::store::get(m.images(), &uuid) {
        let m = &r.manifest;
        return alcove_images::cli::output(Ok(format!("Image {uuid} ({}@{}) is already installed, skipping\n", m.name, m.version)));
    }
    let list = match only {
        Some(s) => match parse_source(&s) {
            Ok((u, _)) => alloc::vec![u.to_string()],
            Err(e) => return alcove_images::cli::output(Err(e)),
        },
        None => match sources(m) {
            Ok(l) if l.is_empty() => {
                return alcove_images::cli::output(Err(Error::Invalid(String::from(
                    "imgadm import: no image sources (add one: imgadm sources -a URL, or give -S URL)",
                ))));
            }
            Ok(l) => l,
            Err(e) => return alcove_images::cli::output(Err(e)),
        },
    };
    let mut out = String::new();
    let r = import_from(m, &uuid, &list, quiet, &mut out);
    let mut o = alcove_images::cli::output(r);
    o.stdout.insert_str(0, &out);
    o
}

fn import_from<M: Machine>(m: &mut M, uuid: &str, list: &[String], quiet: bool, out: &mut String) -> Result<String, Error> {
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
    let (head, mut body) = Body::open(net, &url, ip, &client::imgapi::get_image_file(auuid))?;
    if !(200..300).contains(&head.status) {
        let bytes = body.read_all(ERROR_BODY_MAX)?;
        client::imgapi::check_status(&head, &bytes).map_err(|e| download(&body.what, e))?;
    }
    if let Some(len) = head.header("content-length").and_then(|v| v.trim().parse::<u64>().ok())
        && len != manifest.file.size
    {
        return Err(download(
            &body.what,
            format!("the file is {len} bytes (Content-Length), files[0].size says {}", manifest.file.size),
        ));
    }
    let done = format!("Imported image {uuid} ({}@{})\n", manifest.name, manifest.version);
    let mut meter = imgapi::Progress::new(&manifest);
    let mut inst = Install::begin(pool, manifest, Some(&source))?;
    inst.grow_heap_with(crate::grow_heap);
    let mut buf = alloc::vec![0u8; FILE_READ_BYTES];
    let mut last = None;
    loop {
        // Whole buffers: the store writes the pool in large pieces.
        let mut n = 0;
        let ended = loop {
            match body.read(&mut buf[n..]) {
                Ok(0) => break true,
                Ok(got) => n += got,
                Err(e) => {
                    inst.cancel();
                    return Err(e);
                }
            }
            if n == buf.len() {
                break false;
            }
        };
        if n == 0 {
            break;
        }
        // `write` takes back what it made when it fails.
        inst.write(&buf[..n])?;
        if let Some(line) = meter.advance(n as u64) {
            last = Some(line);
        }
        if ended {
            break;
        }
    }
    drop(body);
    inst.finish()?;
    if !quiet && let Some(line) = last {
        // A terminal shows the last progress line (the others were drawn over).
        out.push_str(&line);
        out.push('\n');
    }
    Ok(done)
}
