//! The client side of HTTP/1.1, sans-IO: [`Url`] for a base address,
//! [`Request`] to build the bytes of a request, [`ResponseDecoder`] to turn
//! a response's bytes into its head and body pieces (framed by
//! `Content-Length`, chunked, or running to the end of the connection:
//! RFC 9112 §6.3), [`BufferedResponse`] to collect a bounded one whole; and
//! [`imgapi`], the requests for an IMGAPI image source. The host's blocking
//! client ([`crate::blocking`]) and zone-server's image import (over netd's
//! sockets) share them.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use serde_json::Value;

/// A base address: `http://host[:port][/prefix]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Url {
    /// A name, an IPv4 address, or an IPv6 address in brackets.
    pub host: String,
    /// 80 unless given.
    pub port: u16,
    /// A path every request's goes under (`""` or `/prefix`, no trailing `/`).
    pub prefix: String,
}

/// Why an address was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UrlError {
    /// Not `http://` (TLS is not spoken here).
    Scheme(String),
    /// No host.
    NoHost,
    /// The port is not a number from 1 to 65535.
    Port(String),
    /// `user@host`, a query or a fragment.
    Unsupported(String),
}

impl core::fmt::Display for UrlError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            UrlError::Scheme(u) => write!(f, "{u}: only http:// addresses are taken (no TLS here)"),
            UrlError::NoHost => f.write_str("the address names no host"),
            UrlError::Port(p) => write!(f, "port {p:?}: must be a number from 1 to 65535"),
            UrlError::Unsupported(u) => write!(f, "{u}: a user, query or fragment is not taken in a base address"),
        }
    }
}

impl core::error::Error for UrlError {}

impl Url {
    /// Parses `http://host[:port][/prefix]`.
    pub fn parse(s: &str) -> Result<Self, UrlError> {
        let s = s.trim();
        let Some(rest) = s.strip_prefix("http://") else { return Err(UrlError::Scheme(s.to_string())) };
        if rest.contains(['@', '?', '#']) || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(UrlError::Unsupported(s.to_string()));
        }
        let (authority, path) = rest.find('/').map_or((rest, ""), |i| (&rest[..i], &rest[i..]));
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let Some((h, after)) = v6.split_once(']') else { return Err(UrlError::NoHost) };
            (format!("[{h}]"), after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (authority.to_string(), None),
            }
        };
        if host.is_empty() || host == "[]" {
            return Err(UrlError::NoHost);
        }
        let port = match port {
            None => 80,
            Some(p) => p.parse::<u16>().ok().filter(|&n| n != 0).ok_or_else(|| UrlError::Port(p.to_string()))?,
        };
        Ok(Url { host, port, prefix: path.trim_end_matches('/').to_string() })
    }

    /// `host:port`, to connect to.
    pub fn socket_addr(&self) -> String {
        format!("{}:{}", self.host.trim_start_matches('[').trim_end_matches(']'), self.port)
    }

    /// The `Host` header's value.
    pub fn authority(&self) -> String {
        if self.port == 80 { self.host.clone() } else { format!("{}:{}", self.host, self.port) }
    }
}

impl core::fmt::Display for Url {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "http://{}{}", self.authority(), self.prefix)
    }
}

/// A request to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The path and query, under the base address's prefix (`/vms?state=running`).
    pub target: String,
    /// Header fields besides `Host`, `Content-Length` and `Connection`.
    pub headers: Vec<(String, String)>,
    /// The body (none for an empty one).
    pub body: Vec<u8>,
}

impl Request {
    /// A `method` request for `target` with no body.
    pub fn new(method: &str, target: impl Into<String>) -> Self {
        Self { method: method.to_string(), target: target.into(), headers: Vec::new(), body: Vec::new() }
    }

    /// Adds a header field.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// Adds `Authorization: Bearer <token>`.
    pub fn bearer(self, token: &str) -> Self {
        self.header("Authorization", &format!("Bearer {token}"))
    }

    /// Makes `v` the body, as JSON.
    pub fn json(mut self, v: &Value) -> Self {
        self.body = v.to_string().into_bytes();
        self.header("Content-Type", "application/json")
    }

    /// The bytes to send to `url`'s server. A header field whose name or
    /// value holds a line break or NUL is left out (it could forge
    /// another field); `close` asks the server to close after answering.
    pub fn encode(&self, url: &Url, close: bool) -> Vec<u8> {
        let bad = |s: &str| s.contains(['\r', '\n', '\0']);
        let target = if self.target.starts_with('/') { self.target.clone() } else { format!("/{}", self.target) };
        let mut out = format!("{} {}{} HTTP/1.1\r\nHost: {}\r\n", self.method, url.prefix, target, url.authority());
        for (k, v) in self.headers.iter().filter(|(k, v)| !bad(k) && !bad(v) && !k.is_empty()) {
            out.push_str(&format!("{k}: {v}\r\n"));
        }
        if !self.body.is_empty() || matches!(self.method.as_str(), "POST" | "PUT" | "PATCH") {
            out.push_str(&format!("Content-Length: {}\r\n", self.body.len()));
        }
        if close {
            out.push_str("Connection: close\r\n");
        }
        out.push_str("\r\n");
        let mut bytes = out.into_bytes();
        bytes.extend_from_slice(&self.body);
        bytes
    }
}

/// A response's status line and header fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResponseHead {
    /// The status code.
    pub status: u16,
    /// Header fields as sent (names in their case).
    pub headers: Vec<(String, String)>,
}

impl ResponseHead {
    /// The first field named `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// What [`ResponseDecoder::next_event`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The head (interim `1xx` responses are skipped).
    Head(ResponseHead),
    /// A piece of the body.
    Data(Vec<u8>),
    /// The response is complete.
    End,
}

/// Why a response could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// Not an HTTP/1.x response.
    Malformed(String),
    /// The status line and header fields run past this many bytes.
    HeadTooLarge(usize),
    /// The connection ended before the response did.
    Truncated,
    /// The body is longer than the caller takes.
    BodyTooLarge(usize),
}

impl core::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            DecodeError::Malformed(m) => write!(f, "malformed response: {m}"),
            DecodeError::HeadTooLarge(n) => write!(f, "the response's header runs past {n} bytes"),
            DecodeError::Truncated => f.write_str("the connection ended in the middle of the response"),
            DecodeError::BodyTooLarge(n) => write!(f, "the response's body runs past {n} bytes"),
        }
    }
}

impl core::error::Error for DecodeError {}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Head,
    Length(u64),
    ChunkSize,
    ChunkData(u64),
    ChunkEnd,
    Trailer,
    ToEnd,
    End,
    Done,
}

/// Decodes one response; see the module's description.
#[derive(Debug)]
pub struct ResponseDecoder {
    buf: Vec<u8>,
    state: State,
    eof: bool,
    no_body: bool,
    max_head: usize,
}

/// The largest response head taken by default.
pub const MAX_RESPONSE_HEAD: usize = 64 * 1024;
const MAX_CHUNK_LINE: usize = 4096;

impl Default for ResponseDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl ResponseDecoder {
    /// A decoder for the response to a request other than `HEAD`.
    pub fn new() -> Self {
        Self { buf: Vec::new(), state: State::Head, eof: false, no_body: false, max_head: MAX_RESPONSE_HEAD }
    }

    /// A decoder for the response to a `HEAD` request (no body follows).
    pub fn for_head_request() -> Self {
        Self { no_body: true, ..Self::new() }
    }

    /// Bytes received.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The connection ended.
    pub fn finish(&mut self) {
        self.eof = true;
    }

    /// The response is complete ([`Event::End`] was returned).
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Bytes received past the end of the response (a pipelined next one).
    pub fn leftover(&self) -> &[u8] {
        if self.state == State::Done { &self.buf } else { &[] }
    }

    /// The next thing the bytes so far make, or `None` until more come.
    pub fn next_event(&mut self) -> Result<Option<Event>, DecodeError> {
        loop {
            match self.state {
                State::Head => {
                    let mut headers = [httparse::EMPTY_HEADER; 64];
                    let mut resp = httparse::Response::new(&mut headers);
                    let n = match resp.parse(&self.buf) {
                        // Whole or not, a head past the bound is refused
                        // (it may come in one piece larger than the bound).
                        Ok(httparse::Status::Complete(n)) if n > self.max_head => {
                            return Err(DecodeError::HeadTooLarge(self.max_head));
                        }
                        Ok(httparse::Status::Complete(n)) => n,
                        Ok(httparse::Status::Partial) => {
                            if self.buf.len() > self.max_head {
                                return Err(DecodeError::HeadTooLarge(self.max_head));
                            }
                            return if self.eof { Err(DecodeError::Truncated) } else { Ok(None) };
                        }
                        Err(e) => return Err(DecodeError::Malformed(format!("{e}"))),
                    };
                    let status = resp.code.unwrap_or(0);
                    let head = ResponseHead {
                        status,
                        headers: resp.headers.iter().map(|h| (h.name.to_string(), String::from_utf8_lossy(h.value).into_owned())).collect(),
                    };
                    self.buf.drain(..n);
                    if (100..200).contains(&status) {
                        continue;
                    }
                    let chunked = head
                        .headers
                        .iter()
                        .filter(|(k, _)| k.eq_ignore_ascii_case("transfer-encoding"))
                        .any(|(_, v)| v.rsplit(',').next().is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked")));
                    let length = head.header("content-length").map(|v| v.trim().parse::<u64>());
                    self.state = if self.no_body || status == 204 || status == 304 {
                        State::End
                    } else if chunked {
                        State::ChunkSize
                    } else {
                        match length {
                            Some(Ok(n)) => State::Length(n),
                            Some(Err(_)) => return Err(DecodeError::Malformed("a Content-Length that is not a number".to_string())),
                            None => State::ToEnd,
                        }
                    };
                    return Ok(Some(Event::Head(head)));
                }
                State::Length(0) => self.state = State::End,
                State::Length(rem) | State::ChunkData(rem) => {
                    if self.buf.is_empty() {
                        return if self.eof { Err(DecodeError::Truncated) } else { Ok(None) };
                    }
                    let take = (rem.min(self.buf.len() as u64)) as usize;
                    let data: Vec<u8> = self.buf.drain(..take).collect();
                    let left = rem - take as u64;
                    self.state = match self.state {
                        State::Length(_) => State::Length(left),
                        _ if left == 0 => State::ChunkEnd,
                        _ => State::ChunkData(left),
                    };
                    return Ok(Some(Event::Data(data)));
                }
                State::ChunkSize => {
                    let Some(line) = self.line()? else { return Ok(None) };
                    let size = line.split(';').next().unwrap_or("").trim();
                    let n = u64::from_str_radix(size, 16)
                        .map_err(|_| DecodeError::Malformed(format!("chunk size {size:?} is not hexadecimal")))?;
                    self.state = if n == 0 { State::Trailer } else { State::ChunkData(n) };
                }
                State::ChunkEnd => {
                    let Some(line) = self.line()? else { return Ok(None) };
                    if !line.is_empty() {
                        return Err(DecodeError::Malformed("a chunk runs past its size".to_string()));
                    }
                    self.state = State::ChunkSize;
                }
                State::Trailer => {
                    let Some(line) = self.line()? else { return Ok(None) };
                    if line.is_empty() {
                        self.state = State::End;
                    }
                }
                State::ToEnd => {
                    if !self.buf.is_empty() {
                        return Ok(Some(Event::Data(core::mem::take(&mut self.buf))));
                    }
                    if !self.eof {
                        return Ok(None);
                    }
                    self.state = State::End;
                }
                State::End => {
                    self.state = State::Done;
                    return Ok(Some(Event::End));
                }
                State::Done => return Ok(None),
            }
        }
    }

    /// One line of chunked framing, without its line end.
    fn line(&mut self) -> Result<Option<String>, DecodeError> {
        match self.buf.iter().position(|&c| c == b'\n') {
            Some(i) if i <= MAX_CHUNK_LINE => {
                let raw: Vec<u8> = self.buf.drain(..=i).collect();
                let text = String::from_utf8_lossy(&raw[..i]);
                Ok(Some(text.trim_end_matches('\r').to_string()))
            }
            Some(_) => Err(DecodeError::Malformed("a chunk line runs too long".to_string())),
            None if self.buf.len() > MAX_CHUNK_LINE => Err(DecodeError::Malformed("a chunk line runs too long".to_string())),
            None if self.eof => Err(DecodeError::Truncated),
            None => Ok(None),
        }
    }
}

/// A whole response with its body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// The status and header fields.
    pub head: ResponseHead,
    /// The body (decoded from its framing).
    pub body: Vec<u8>,
}

impl Response {
    /// The body as JSON (`null` for an empty one).
    pub fn json(&self) -> Result<Value, serde_json::Error> {
        if self.body.iter().all(u8::is_ascii_whitespace) { Ok(Value::Null) } else { serde_json::from_slice(&self.body) }
    }
}

/// Collects one response whole, its body at most `max_body` bytes.
#[derive(Debug)]
pub struct BufferedResponse {
    decoder: ResponseDecoder,
    head: Option<ResponseHead>,
    body: Vec<u8>,
    max_body: usize,
}

impl BufferedResponse {
    /// Collects the response to a request other than `HEAD`.
    pub fn new(max_body: usize) -> Self {
        Self { decoder: ResponseDecoder::new(), head: None, body: Vec::new(), max_body }
    }

    /// Bytes received.
    pub fn push(&mut self, bytes: &[u8]) {
        self.decoder.push(bytes);
    }

    /// The connection ended.
    pub fn finish(&mut self) {
        self.decoder.finish();
    }

    /// The response, once complete.
    pub fn poll(&mut self) -> Result<Option<Response>, DecodeError> {
        while let Some(ev) = self.decoder.next_event()? {
            match ev {
                Event::Head(h) => self.head = Some(h),
                Event::Data(d) => {
                    if self.body.len() + d.len() > self.max_body {
                        return Err(DecodeError::BodyTooLarge(self.max_body));
                    }
                    self.body.extend_from_slice(&d);
                }
                Event::End => {
                    let head = self.head.take().ok_or(DecodeError::Truncated)?;
                    return Ok(Some(Response { head, body: core::mem::take(&mut self.body) }));
                }
            }
        }
        Ok(None)
    }
}

/// The requests zone-server sends to an IMGAPI image source (IMGAPI's
/// `ListImages`, `GetImage`, `GetImageFile`, `Ping`) and the checks on
/// their answers. What a manifest says is alcove-images' to judge; here it
/// is only JSON of the right shape. The file comes as a stream:
/// [`ResponseDecoder`] hands it out piece by piece.
pub mod imgapi {
    use super::{Request, Response, ResponseHead};
    use crate::query::encode_pairs;
    use crate::uuid::Uuid;
    use alloc::format;
    use alloc::string::{String, ToString};
    use alloc::vec::Vec;
    use serde_json::Value;

    /// The largest manifest list taken (a source offers thousands).
    pub const MAX_LIST_BYTES: usize = 32 * 1024 * 1024;

    /// Why an image source's answer was refused.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub enum ImgapiError {
        /// An error status, with the source's `code` and `message` where
        /// its body had them.
        Status { status: u16, code: String, message: String },
        /// The body is not JSON.
        NotJson(String),
        /// JSON of the wrong shape.
        Shape(&'static str),
    }

    impl core::fmt::Display for ImgapiError {
        fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
            match self {
                ImgapiError::Status { status, code, message } if code.is_empty() => {
                    write!(f, "the image source answered {status}{}{message}", if message.is_empty() { "" } else { ": " })
                }
                ImgapiError::Status { status, code, message } => write!(f, "the image source answered {status} {code}: {message}"),
                ImgapiError::NotJson(e) => write!(f, "the image source's answer is not JSON: {e}"),
                ImgapiError::Shape(what) => write!(f, "the image source's answer is not {what}"),
            }
        }
    }

    impl core::error::Error for ImgapiError {}

    fn get(target: String) -> Request {
        Request::new("GET", target).header("Accept", "application/json")
    }

    /// `GET /ping`.
    pub fn ping() -> Request {
        get("/ping".to_string())
    }

    /// `GET /images?k=v...` (IMGAPI's `ListImages`; e.g. `os=linux`,
    /// `type=zvol`).
    pub fn list_images(filters: &[(&str, &str)]) -> Request {
        get(format!("/images{}", encode_pairs(filters)))
    }

    /// `GET /images/:uuid` (the manifest).
    pub fn get_image(uuid: Uuid) -> Request {
        get(format!("/images/{uuid}"))
    }

    /// `GET /images/:uuid/file` (the image file, streamed).
    pub fn get_image_file(uuid: Uuid) -> Request {
        Request::new("GET", format!("/images/{uuid}/file"))
    }

    /// An error status as an [`ImgapiError`] (with the body's `code` and
    /// `message` where it is Triton's error JSON), or `Ok` for a 2xx.
    pub fn check_status(head: &ResponseHead, body: &[u8]) -> Result<(), ImgapiError> {
        if (200..300).contains(&head.status) {
            return Ok(());
        }
        let v: Option<Value> = serde_json::from_slice(body).ok();
        let field = |k: &str| v.as_ref().and_then(|v| v.get(k)).and_then(Value::as_str).unwrap_or("").to_string();
        let mut message = field("message");
        if message.is_empty() && v.is_none() {
            message = String::from_utf8_lossy(&body[..body.len().min(200)]).trim().to_string();
        }
        Err(ImgapiError::Status { status: head.status, code: field("code"), message })
    }

    fn json(resp: &Response) -> Result<Value, ImgapiError> {
        check_status(&resp.head, &resp.body)?;
        serde_json::from_slice(&resp.body).map_err(|e| ImgapiError::NotJson(format!("{e}")))
    }

    /// The manifests of a `ListImages` answer (each a JSON object).
    pub fn manifests(resp: &Response) -> Result<Vec<Value>, ImgapiError> {
        match json(resp)? {
            Value::Array(items) if items.iter().all(Value::is_object) => Ok(items),
            Value::Array(_) => Err(ImgapiError::Shape("an array of manifest objects")),
            _ => Err(ImgapiError::Shape("an array of manifests")),
        }
    }

    /// The manifest of a `GetImage` answer.
    pub fn manifest(resp: &Response) -> Result<Value, ImgapiError> {
        match json(resp)? {
            v @ Value::Object(_) => Ok(v),
            _ => Err(ImgapiError::Shape("a manifest object")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A response head longer than the bound is refused however it
    /// arrives: grown piece by piece, or whole in one piece (a receive of
    /// 16 KiB or more brought one of 70 000 bytes in two and it was taken).
    #[test]
    fn a_head_past_the_bound_is_refused_in_any_pieces() {
        let head = alloc::format!("HTTP/1.1 200 OK\r\nX-Pad: {}\r\nContent-Length: 2\r\n\r\n[]", "p".repeat(70_000));
        for piece in [1024, 65_536, head.len()] {
            let mut d = ResponseDecoder::new();
            let mut got = Ok(None);
            for chunk in head.as_bytes().chunks(piece) {
                d.push(chunk);
                got = d.next_event();
                if got.is_err() {
                    break;
                }
            }
            assert!(matches!(got, Err(DecodeError::HeadTooLarge(MAX_RESPONSE_HEAD))), "pieces of {piece}: {got:?}");
        }
        // One at the bound is taken.
        let pad = MAX_RESPONSE_HEAD - "HTTP/1.1 200 OK\r\nX-Pad: \r\n\r\n".len();
        let mut d = ResponseDecoder::new();
        d.push(alloc::format!("HTTP/1.1 200 OK\r\nX-Pad: {}\r\n\r\n", "p".repeat(pad)).as_bytes());
        assert!(matches!(d.next_event(), Ok(Some(_))));
    }
}
