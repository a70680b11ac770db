//! The API server, sans-IO: [`Server`] (or [`Http`], where the caller
//! keeps the backend) is fed the bytes each connection receives and hands
//! back the bytes to send; the caller owns the sockets and the clock (zone-server over netd's `socket` interface on Alcove, a
//! thread per `TcpStream` on the host: [`crate::std_server`]).
//!
//! HTTP/1.1 (RFC 9112) with persistent connections and pipelining; bodies
//! framed by `Content-Length` only (a chunked body gets 411, another
//! transfer coding 501). Each connection holds at most one request's worth
//! of input ([`Limits::max_header_bytes`] + [`Limits::max_body_bytes`]) and
//! one response: while a response waits to be sent, the next request is
//! not read ([`Server::room`] is what the caller may read into it), so a
//! client that sends without reading stalls only itself. A request that
//! takes longer than [`Limits::request_timeout_ms`] to arrive gets 408, and
//! a connection that moves no byte for [`Limits::idle_timeout_ms`] is
//! dropped ([`Server::expire`]); at most [`Limits::max_connections`] are
//! served at once (beyond, a 503).
//!
//! Every request but `GET /ping` needs `Authorization: Bearer <token>` with
//! the token configured at boot ([`Token`], compared in constant time): 401
//! without one, 403 with another.
//!
//! Over netd's `socket` interface (`libipc::interfaces::socket`) the loop
//! is: `listen(port)` once (8080, [`crate::DEFAULT_PORT`]); each round,
//! `accept(listener)` until `None`, each new socket to [`Http::accept`]
//! (on `None`, `close` it at once); for each connection, `send` what
//! [`Http::output`] holds and report [`Http::sent`], `recv` at most
//! [`Http::room`] bytes (and `SOCKET_INLINE_MAX`) into [`Http::receive`],
//! [`Http::peer_closed`] once `state` says `PeerClosed`, and `close` the
//! socket when [`Http::wants_close`]; [`Http::expire`] with the clock.
//! netd gives a client 16 sockets: the listener, 8 connections
//! ([`Limits::max_connections`]) and the image source's client sockets fit.

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use serde_json::Value;

use crate::backend::{Answer, Backend, KNOWN_METHODS, Route, allow_header, dispatch};
use crate::error::{ApiError, ErrorCode, quote};
use crate::query::Query;

/// Header fields a request may carry at most.
pub const MAX_HEADERS: usize = 32;

/// The bounds every connection is held to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The request line and header fields, in bytes (beyond: 431).
    pub max_header_bytes: usize,
    /// A request's body, in bytes (beyond: 413).
    pub max_body_bytes: usize,
    /// Connections served at once; the next ones get 503.
    pub max_connections: usize,
    /// A connection that moves no byte this long is dropped.
    pub idle_timeout_ms: u64,
    /// A request must arrive in full this long after its first byte (else 408).
    pub request_timeout_ms: u64,
}

impl Default for Limits {
    /// 8 KiB of header, 1 MiB of body (a payload with a large
    /// `user-script`), 8 connections (netd gives a client 16 sockets),
    /// 60 s idle, 30 s per request.
    fn default() -> Self {
        Self { max_header_bytes: 8 * 1024, max_body_bytes: 1024 * 1024, max_connections: 8, idle_timeout_ms: 60_000, request_timeout_ms: 30_000 }
    }
}

/// The bearer token the API takes, configured at boot.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(Vec<u8>);

/// The shortest token taken: 16 characters.
pub const MIN_TOKEN_LEN: usize = 16;
/// The longest token taken.
pub const MAX_TOKEN_LEN: usize = 512;

/// Why a token was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenError {
    /// Fewer than [`MIN_TOKEN_LEN`] or more than [`MAX_TOKEN_LEN`] characters.
    Length(usize),
    /// A character a bearer token cannot hold (RFC 6750 §2.1's `b64token`).
    Character(char),
}

impl core::fmt::Display for TokenError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            TokenError::Length(n) => write!(f, "the API token has {n} characters; it needs {MIN_TOKEN_LEN} to {MAX_TOKEN_LEN}"),
            TokenError::Character(c) => {
                write!(f, "the API token holds {c:?}: only letters, digits and - . _ ~ + / (and = at the end) are taken")
            }
        }
    }
}

impl core::error::Error for TokenError {}

impl Token {
    /// Checks `s` is a bearer token (RFC 6750 §2.1) of a sensible length.
    pub fn new(s: &str) -> Result<Self, TokenError> {
        let n = s.chars().count();
        if !(MIN_TOKEN_LEN..=MAX_TOKEN_LEN).contains(&n) {
            return Err(TokenError::Length(n));
        }
        let body = s.trim_end_matches('=');
        if body.is_empty() {
            return Err(TokenError::Character('='));
        }
        if let Some(c) = body.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~' | '+' | '/'))) {
            return Err(TokenError::Character(c));
        }
        Ok(Token(s.as_bytes().to_vec()))
    }

    /// Whether `presented` is this token, in time that depends only on
    /// this token's length, not on where the two first differ.
    pub fn matches(&self, presented: &[u8]) -> bool {
        let mut diff = (presented.len() != self.0.len()) as u8;
        for (i, &want) in self.0.iter().enumerate() {
            let got = presented.get(i).copied().unwrap_or(!want);
            diff |= got ^ want;
        }
        core::hint::black_box(diff) == 0
    }
}

impl core::fmt::Debug for Token {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Token(..)")
    }
}

/// What the server is started with.
#[derive(Clone, Debug)]
pub struct Config {
    /// The bearer token every request but `GET /ping` must present.
    pub token: Token,
    /// The bounds of each connection.
    pub limits: Limits,
}

/// A connection of the server; never reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnId(pub u64);

#[derive(Debug)]
struct Connection {
    /// Received and not yet answered.
    input: Vec<u8>,
    /// Bytes of the answers not yet taken by the caller.
    output: Vec<u8>,
    /// No more requests: close once `output` is out.
    closing: bool,
    /// The peer sent its FIN: nothing more will come.
    peer_closed: bool,
    /// `100 Continue` went out for the request at the head of `input`.
    continued: bool,
    /// When the first byte of the request at the head of `input` came.
    request_started_ms: Option<u64>,
    /// When a byte last moved either way.
    last_progress_ms: u64,
    /// The request at the head of `input` the backend is answering
    /// ([`PENDING_POLL_MS`]); nothing behind it is read meanwhile.
    waiting: Option<Waiting>,
    /// The length of the request at the head of `input`, once its head
    /// has been parsed and passed: its body is awaited without parsing
    /// the head again for every byte (a body sent a byte at a time would
    /// otherwise cost a parse of up to 8 KiB per byte).
    need: Option<usize>,
    /// How much of `input` was searched for the end of the head, found
    /// nowhere: the head is parsed only once it may be complete.
    scanned: usize,
}

/// Whether `input` may hold a whole request head (an empty line, CRLF or
/// bare LF, past `scanned`, where the last search stopped).
fn head_may_be_complete(input: &[u8], scanned: &mut usize) -> bool {
    let from = scanned.saturating_sub(3).min(input.len());
    *scanned = input.len();
    let rest = &input[from..];
    rest.windows(2).any(|w| w == b"\n\n") || rest.windows(3).any(|w| w == b"\n\r\n")
}

/// The connections and their HTTP, apart from the backend: for a caller
/// whose backend is its whole state, reached by other ways too (IPC, the
/// console shell), and lent to each call that may answer a request.
pub struct Http {
    config: Config,
    connections: BTreeMap<ConnId, Connection>,
    next: u64,
    /// Tickets of pending requests whose connection went away, for
    /// [`Backend::vm_action_forget`] at the next [`Http::poll`].
    forgotten: Vec<u64>,
}

/// [`Http`] with the backend it serves: the usual way to run the API.
pub struct Server<B> {
    backend: B,
    http: Http,
}

enum Step {
    /// More bytes are needed; send `100 Continue` first if asked. `total`:
    /// the request's length in bytes, once its head is in and passed.
    Incomplete { send_continue: bool, total: Option<usize> },
    /// One answer; `consumed` bytes of input are done with; `close` ends
    /// the connection once it is sent.
    Respond { reply: Reply, consumed: usize, close: bool },
    /// The backend began an action whose answer is to come (its ticket);
    /// the request stays at the head of the input until it is over.
    Pending { waiting: Waiting },
}

/// A request whose answer the backend owes ([`crate::Begun::Pending`]).
#[derive(Clone, Copy, Debug)]
struct Waiting {
    ticket: u64,
    consumed: usize,
    close: bool,
    keep_alive_10: bool,
    /// When the backend was last asked.
    polled_ms: u64,
}

/// How often a pending action's backend is asked whether it is over.
pub const PENDING_POLL_MS: u64 = 100;

/// A response before it is written out.
#[derive(Debug)]
struct Reply {
    status: u16,
    body: Option<Value>,
    /// A plain-text body instead (`text/plain; charset=utf-8`).
    text: Option<String>,
    headers: Vec<(&'static str, String)>,
    /// HTTP/1.0 keep-alive: say so.
    keep_alive_10: bool,
}

impl Reply {
    fn error(e: &ApiError) -> Self {
        let mut headers = Vec::new();
        if e.code == ErrorCode::Unauthorized {
            headers.push(("WWW-Authenticate", "Bearer realm=\"alcove\"".to_string()));
        }
        Reply { status: e.status(), body: Some(e.body()), text: None, headers, keep_alive_10: false }
    }

    fn answer(a: Answer) -> Self {
        let mut headers = a.headers;
        if let Some(l) = a.location {
            headers.push(("Location", l));
        }
        Reply { status: a.status, body: a.body, text: a.text, headers, keep_alive_10: false }
    }

    fn write(&self, close: bool, out: &mut Vec<u8>) {
        let json = self.body.as_ref().map(|b| b.to_string());
        let kind = if json.is_some() { "application/json" } else { "text/plain; charset=utf-8" };
        let body = json.or_else(|| self.text.clone());
        out.extend_from_slice(format!("HTTP/1.1 {} {}\r\n", self.status, reason(self.status)).as_bytes());
        out.extend_from_slice(b"Server: alcove\r\n");
        if let Some(b) = &body {
            out.extend_from_slice(format!("Content-Type: {kind}\r\nContent-Length: {}\r\n", b.len()).as_bytes());
        } else if self.status != 204 {
            out.extend_from_slice(b"Content-Length: 0\r\n");
        }
        for (k, v) in &self.headers {
            out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
        }
        if close {
            out.extend_from_slice(b"Connection: close\r\n");
        } else if self.keep_alive_10 {
            out.extend_from_slice(b"Connection: keep-alive\r\n");
        }
        out.extend_from_slice(b"\r\n");
        if let Some(b) = body {
            out.extend_from_slice(b.as_bytes());
        }
    }
}

/// The reason phrase of the statuses this server sends.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        417 => "Expectation Failed",
        422 => "Unprocessable Content",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

/// An error that ends the connection: what came after it cannot be framed.
fn fatal(e: ApiError, input: &[u8]) -> Step {
    Step::Respond { reply: Reply::error(&e), consumed: input.len(), close: true }
}

fn trim(v: &[u8]) -> &[u8] {
    let start = v.iter().position(|c| !c.is_ascii_whitespace()).unwrap_or(v.len());
    let end = v.iter().rposition(|c| !c.is_ascii_whitespace()).map_or(start, |e| e + 1);
    &v[start..end]
}

fn shown(v: &[u8]) -> String {
    quote(&String::from_utf8_lossy(v))
}

/// Checks the bearer token of a request.
fn authorize(auth: Option<&[u8]>, token: &Token) -> Result<(), ApiError> {
    let Some(value) = auth else {
        return Err(ApiError::new(ErrorCode::Unauthorized, "this API needs a token: send \"Authorization: Bearer <token>\""));
    };
    let value = trim(value);
    let (scheme, rest) = match value.iter().position(|&c| c == b' ') {
        Some(i) => (&value[..i], trim(&value[i..])),
        None => (value, &[][..]),
    };
    if !scheme.eq_ignore_ascii_case(b"Bearer") {
        return Err(ApiError::new(ErrorCode::Unauthorized, format!("authorization scheme {}: only Bearer tokens are taken", shown(scheme))));
    }
    if !token.matches(rest) {
        return Err(ApiError::new(ErrorCode::Forbidden, "the bearer token is not this API's"));
    }
    Ok(())
}

/// The path and raw query of a request target (origin- or absolute-form).
fn split_target(target: &str) -> (&str, &str) {
    let target = match target.strip_prefix("http://").or_else(|| target.strip_prefix("https://")) {
        Some(rest) => rest.find('/').map_or("/", |i| &rest[i..]),
        None => target,
    };
    let target = target.split('#').next().unwrap_or("");
    target.split_once('?').unwrap_or((target, ""))
}

/// The route and query of a request whose head passed the framing checks,
/// or the error it gets, checked in this order: token, path, method, query.
fn check_head(method: &str, target: &str, auth: Option<&[u8]>, token: &Token) -> Result<(Route, Query), Reply> {
    let (path, raw_query) = split_target(target);
    let route = Route::resolve(path);
    if !matches!(route, Ok(r) if r.public()) {
        authorize(auth, token).map_err(|e| Reply::error(&e))?;
    }
    let route = route.map_err(|e| Reply::error(&e))?;
    if !KNOWN_METHODS.contains(&method) {
        return Err(Reply::error(&ApiError::not_implemented(format!("method {}: not implemented", quote(method)))));
    }
    if !route.allowed().contains(&method) {
        // The path is a resource's (checked above), so short and plain.
        let e = ApiError::new(ErrorCode::MethodNotAllowed, format!("{method} {path}: this resource takes {}", allow_header(route)));
        let mut r = Reply::error(&e);
        r.headers.push(("Allow", allow_header(route)));
        return Err(r);
    }
    let query = Query::parse(raw_query).map_err(|e| Reply::error(&e))?;
    Ok((route, query))
}

/// Looks at the request at the head of `input`.
fn step<B: Backend + ?Sized>(input: &[u8], continued: bool, config: &Config, backend: &mut B) -> Step {
    let limits = &config.limits;
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(input) {
        Ok(httparse::Status::Partial) if input.len() > limits.max_header_bytes => {
            let e = ApiError::new(
                ErrorCode::RequestHeaderFieldsTooLarge,
                format!("the request line and header fields run past {} bytes", limits.max_header_bytes),
            );
            return fatal(e, input);
        }
        Ok(httparse::Status::Partial) => return Step::Incomplete { send_continue: false, total: None },
        Ok(httparse::Status::Complete(n)) => n,
        Err(httparse::Error::TooManyHeaders) => {
            let e = ApiError::new(ErrorCode::RequestHeaderFieldsTooLarge, format!("more than {MAX_HEADERS} header fields"));
            return fatal(e, input);
        }
        Err(httparse::Error::Version) => {
            return fatal(ApiError::new(ErrorCode::HttpVersionNotSupported, "only HTTP/1.1 and HTTP/1.0 are spoken here"), input);
        }
        Err(e) => return fatal(ApiError::new(ErrorCode::BadRequest, format!("malformed request: {e}")), input),
    };
    if head_len > limits.max_header_bytes {
        let e = ApiError::new(
            ErrorCode::RequestHeaderFieldsTooLarge,
            format!("the request line and header fields take {head_len} bytes; at most {} are taken", limits.max_header_bytes),
        );
        return fatal(e, input);
    }
    let method = req.method.unwrap_or("");
    let target = req.path.unwrap_or("");
    let http10 = req.version == Some(0);

    let mut content_length: Option<u64> = None;
    let mut transfer_encoding: Option<&[u8]> = None;
    let mut hosts = 0;
    let mut auth: Option<&[u8]> = None;
    let mut auths = 0;
    let (mut close, mut keep_alive) = (false, false);
    let mut expect: Option<&[u8]> = None;
    for h in req.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            let v = trim(h.value);
            let n = core::str::from_utf8(v).ok().filter(|s| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit())).and_then(|s| s.parse::<u64>().ok());
            let Some(n) = n else {
                return fatal(ApiError::new(ErrorCode::BadRequest, format!("Content-Length {} is not a length", shown(v))), input);
            };
            if content_length.is_some_and(|have| have != n) {
                return fatal(ApiError::new(ErrorCode::BadRequest, "two Content-Length header fields that disagree"), input);
            }
            content_length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            transfer_encoding = Some(trim(h.value));
        } else if name.eq_ignore_ascii_case("host") {
            hosts += 1;
        } else if name.eq_ignore_ascii_case("authorization") {
            auths += 1;
            auth = Some(h.value);
        } else if name.eq_ignore_ascii_case("connection") {
            for t in h.value.split(|&c| c == b',').map(trim) {
                close |= t.eq_ignore_ascii_case(b"close");
                keep_alive |= t.eq_ignore_ascii_case(b"keep-alive");
            }
        } else if name.eq_ignore_ascii_case("expect") {
            expect = Some(trim(h.value));
        }
    }

    // RFC 9112 §6.1: a transfer coding we do not do leaves the body
    // unframed, so the connection ends after the answer.
    if let Some(te) = transfer_encoding {
        let e = if te.eq_ignore_ascii_case(b"chunked") {
            ApiError::new(ErrorCode::LengthRequired, "chunked request bodies are not taken: send the body with Content-Length")
        } else {
            ApiError::not_implemented(format!("Transfer-Encoding {}: not implemented; send the body with Content-Length", shown(te)))
        };
        return fatal(e, input);
    }
    let body_len = content_length.unwrap_or(0);
    if body_len > limits.max_body_bytes as u64 {
        let e = ApiError::new(
            ErrorCode::RequestEntityTooLarge,
            format!("the body is {body_len} bytes; this API takes at most {} bytes", limits.max_body_bytes),
        );
        return fatal(e, input);
    }
    // RFC 9112 §3.2: exactly one Host in HTTP/1.1.
    if !http10 && hosts != 1 {
        let msg = if hosts == 0 { "an HTTP/1.1 request needs a Host header field" } else { "more than one Host header field" };
        return fatal(ApiError::new(ErrorCode::BadRequest, msg), input);
    }
    if auths > 1 {
        return fatal(ApiError::new(ErrorCode::BadRequest, "more than one Authorization header field"), input);
    }
    let expect_continue = match expect {
        None => false,
        Some(v) if v.eq_ignore_ascii_case(b"100-continue") => true,
        Some(v) => {
            let e = ApiError::new(ErrorCode::ExpectationFailed, format!("Expect {}: only 100-continue is understood", shown(v)));
            return fatal(e, input);
        }
    };
    let persistent = if http10 { keep_alive && !close } else { !close };
    let total = head_len + body_len as usize;
    let complete = input.len() >= total;

    let (route, query) = match check_head(method, target, auth, &config.token) {
        Ok(r) => r,
        Err(mut reply) => {
            // Refused before its body: a body already here is skipped, one
            // still to come ends the connection (its bytes would be taken
            // for the next request).
            reply.keep_alive_10 = http10 && persistent;
            return if complete {
                Step::Respond { reply, consumed: total, close: !persistent }
            } else {
                Step::Respond { reply, consumed: input.len(), close: true }
            };
        }
    };
    if !complete {
        return Step::Incomplete { send_continue: expect_continue && !continued, total: Some(total) };
    }
    let body = &input[head_len..total];
    let mut reply = match dispatch(backend, route, method, &query, body) {
        Ok(Answer { pending: Some(ticket), .. }) => {
            let keep_alive_10 = http10 && persistent;
            let waiting = Waiting { ticket, consumed: total, close: !persistent, keep_alive_10, polled_ms: 0 };
            return Step::Pending { waiting };
        }
        Ok(a) => Reply::answer(a),
        Err(e) => Reply::error(&e),
    };
    reply.keep_alive_10 = http10 && persistent;
    Step::Respond { reply, consumed: total, close: !persistent }
}

impl Connection {
    fn new(now_ms: u64) -> Self {
        Self {
            input: Vec::new(),
            output: Vec::new(),
            closing: false,
            peer_closed: false,
            continued: false,
            request_started_ms: None,
            last_progress_ms: now_ms,
            need: None,
            scanned: 0,
            waiting: None,
        }
    }

    /// Answers what complete requests `input` holds, one response at a time.
    fn process<B: Backend + ?Sized>(&mut self, config: &Config, backend: &mut B, now_ms: u64) {
        while !self.closing && self.output.is_empty() && self.waiting.is_none() && !self.input.is_empty() {
            match self.need {
                Some(total) if self.input.len() < total => break,
                Some(_) => {}
                None if self.input.len() > config.limits.max_header_bytes => {}
                None if !head_may_be_complete(&self.input, &mut self.scanned) => break,
                None => {}
            }
            match step(&self.input, self.continued, config, backend) {
                Step::Incomplete { send_continue, total } => {
                    self.need = total;
                    if send_continue {
                        self.output.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
                        self.continued = true;
                    }
                    break;
                }
                Step::Respond { reply, consumed, close } => self.respond(&reply, consumed, close, now_ms),
                Step::Pending { mut waiting } => {
                    waiting.polled_ms = now_ms;
                    self.waiting = Some(waiting);
                }
            }
        }
        if self.peer_closed && self.output.is_empty() && self.waiting.is_none() {
            // What is left can never be completed.
            self.closing = true;
        }
    }
}

impl Connection {
    /// Writes `reply` for the request of `consumed` bytes at the head of `input`.
    fn respond(&mut self, reply: &Reply, consumed: usize, close: bool, now_ms: u64) {
        reply.write(close, &mut self.output);
        self.input.drain(..consumed.min(self.input.len()));
        self.continued = false;
        self.need = None;
        self.scanned = 0;
        self.request_started_ms = (!self.input.is_empty()).then_some(now_ms);
        if close {
            self.closing = true;
            self.input.clear();
        }
    }

    /// Asks the backend whether the pending request is answered (at most
    /// every [`PENDING_POLL_MS`]); if so, writes it and goes on with the
    /// requests behind it. Whether an answer came.
    fn poll<B: Backend + ?Sized>(&mut self, config: &Config, backend: &mut B, now_ms: u64) -> bool {
        let Some(w) = self.waiting.as_mut() else { return false };
        if now_ms.saturating_sub(w.polled_ms) < PENDING_POLL_MS {
            return false;
        }
        w.polled_ms = now_ms;
        let w = *w;
        let Some(answer) = backend.vm_action_poll(w.ticket) else { return false };
        self.waiting = None;
        let mut reply = match answer {
            Ok(v) => Reply::answer(crate::backend::Answer {
                status: 200,
                body: Some(v),
                location: None,
                text: None,
                headers: Vec::new(),
                pending: None,
            }),
            Err(e) => Reply::error(&e),
        };
        reply.keep_alive_10 = w.keep_alive_10;
        self.last_progress_ms = now_ms;
        self.respond(&reply, w.consumed, w.close, now_ms);
        self.process(config, backend, now_ms);
        true
    }
}

impl Http {
    /// No connection yet.
    pub fn new(config: Config) -> Self {
        Self { config, connections: BTreeMap::new(), next: 1, forgotten: Vec::new() }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Connections open.
    pub fn connections(&self) -> usize {
        self.connections.len()
    }

    /// A new connection arrived. Past [`Limits::max_connections`] it gets
    /// a 503 and is closed once that is sent; past twice that, `None`: the
    /// caller closes the socket without a word.
    pub fn accept(&mut self, now_ms: u64) -> Option<ConnId> {
        let max = self.config.limits.max_connections;
        if self.connections.len() >= max.saturating_mul(2) {
            return None;
        }
        let id = ConnId(self.next);
        self.next += 1;
        let mut c = Connection::new(now_ms);
        if self.connections.len() >= max {
            let e = ApiError::new(ErrorCode::ServiceUnavailable, format!("all {max} connections of this API are in use; try again"));
            Reply::error(&e).write(true, &mut c.output);
            c.closing = true;
        }
        self.connections.insert(id, c);
        Some(id)
    }

    /// How many bytes connection `id` takes now (0 while it has a response
    /// to send, is closing, or is not a connection).
    pub fn room(&self, id: ConnId) -> usize {
        let cap = self.config.limits.max_header_bytes + self.config.limits.max_body_bytes;
        match self.connections.get(&id) {
            Some(c) if !c.closing && !c.peer_closed => cap.saturating_sub(c.input.len()),
            _ => 0,
        }
    }

    /// Connection `id` received `bytes`: takes what [`Server::room`] allows
    /// and answers what requests are complete. Returns how many bytes it
    /// took; the rest is the caller's to offer again later (or to leave in
    /// the socket).
    pub fn receive<B: Backend + ?Sized>(&mut self, backend: &mut B, id: ConnId, bytes: &[u8], now_ms: u64) -> usize {
        let take = bytes.len().min(self.room(id));
        let Some(c) = self.connections.get_mut(&id) else { return 0 };
        if take > 0 {
            if c.input.is_empty() {
                c.request_started_ms = Some(now_ms);
            }
            c.input.extend_from_slice(&bytes[..take]);
            c.last_progress_ms = now_ms;
        }
        c.process(&self.config, backend, now_ms);
        take
    }

    /// The bytes connection `id` has to send.
    pub fn output(&self, id: ConnId) -> &[u8] {
        self.connections.get(&id).map_or(&[], |c| &c.output)
    }

    /// The caller sent the first `n` bytes of [`Server::output`]; the
    /// requests waiting behind the response are answered now.
    pub fn sent<B: Backend + ?Sized>(&mut self, backend: &mut B, id: ConnId, n: usize, now_ms: u64) {
        let Some(c) = self.connections.get_mut(&id) else { return };
        let n = n.min(c.output.len());
        c.output.drain(..n);
        if n > 0 {
            c.last_progress_ms = now_ms;
        }
        c.process(&self.config, backend, now_ms);
    }

    /// The peer closed its side: complete requests are still answered,
    /// then the connection wants closing.
    pub fn peer_closed<B: Backend + ?Sized>(&mut self, backend: &mut B, id: ConnId, now_ms: u64) {
        let Some(c) = self.connections.get_mut(&id) else { return };
        c.peer_closed = true;
        c.process(&self.config, backend, now_ms);
    }

    /// Whether connection `id` is done: its output is sent and nothing
    /// more will be answered. The caller closes the socket and calls
    /// [`Server::close`]. An unknown id is done.
    pub fn wants_close(&self, id: ConnId) -> bool {
        self.connections.get(&id).is_none_or(|c| c.closing && c.output.is_empty())
    }

    /// Forgets connection `id` (its socket is closed); a request of it
    /// the backend was answering is forgotten at the next [`Http::poll`].
    pub fn close(&mut self, id: ConnId) {
        if let Some(w) = self.connections.remove(&id).and_then(|c| c.waiting) {
            self.forgotten.push(w.ticket);
        }
    }

    /// Pending requests ([`crate::Begun::Pending`]) at `now_ms`: asks
    /// the backend about each (at most every [`PENDING_POLL_MS`]), writes
    /// the answers that came and answers the requests behind them; tells
    /// the backend of those whose connection went away. Whether an answer
    /// came (output to send).
    pub fn poll<B: Backend + ?Sized>(&mut self, backend: &mut B, now_ms: u64) -> bool {
        for ticket in self.forgotten.drain(..) {
            backend.vm_action_forget(ticket);
        }
        let mut answered = false;
        for c in self.connections.values_mut() {
            answered |= c.poll(&self.config, backend, now_ms);
        }
        answered
    }

    /// Requests whose answer the backend owes.
    pub fn pending(&self) -> usize {
        self.connections.values().filter(|c| c.waiting.is_some()).count()
    }

    /// Applies the timeouts at `now_ms`: a request slower than
    /// [`Limits::request_timeout_ms`] gets 408 and the connection closes
    /// after it; connections idle for [`Limits::idle_timeout_ms`] are
    /// forgotten and returned, for the caller to close their sockets.
    pub fn expire(&mut self, now_ms: u64) -> Vec<ConnId> {
        let limits = self.config.limits;
        let mut dropped = Vec::new();
        for (&id, c) in self.connections.iter_mut() {
            if c.waiting.is_some() {
                // The backend is answering: its action has a deadline of
                // its own (a stop's -t), and no byte is owed meanwhile.
                continue;
            }
            if now_ms.saturating_sub(c.last_progress_ms) >= limits.idle_timeout_ms {
                dropped.push(id);
                continue;
            }
            let slow = c.request_started_ms.is_some_and(|t| now_ms.saturating_sub(t) >= limits.request_timeout_ms);
            if slow && !c.closing && c.output.is_empty() && !c.input.is_empty() {
                let e = ApiError::new(
                    ErrorCode::RequestTimeout,
                    format!("the request did not arrive in full within {} ms", limits.request_timeout_ms),
                );
                Reply::error(&e).write(true, &mut c.output);
                c.closing = true;
                c.input.clear();
                c.request_started_ms = None;
            }
        }
        for id in &dropped {
            self.connections.remove(id);
        }
        dropped
    }
}

impl<B: Backend> Server<B> {
    /// A server over `backend` with no connection yet.
    pub fn new(backend: B, config: Config) -> Self {
        Self { backend, http: Http::new(config) }
    }

    /// The backend.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// The backend, to change.
    pub fn backend_mut(&mut self) -> &mut B {
        &mut self.backend
    }

    /// The connections, apart from the backend.
    pub fn http(&self) -> &Http {
        &self.http
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        self.http.config()
    }

    /// See [`Http::connections`].
    pub fn connections(&self) -> usize {
        self.http.connections()
    }

    /// See [`Http::accept`].
    pub fn accept(&mut self, now_ms: u64) -> Option<ConnId> {
        self.http.accept(now_ms)
    }

    /// See [`Http::room`].
    pub fn room(&self, id: ConnId) -> usize {
        self.http.room(id)
    }

    /// See [`Http::receive`].
    pub fn receive(&mut self, id: ConnId, bytes: &[u8], now_ms: u64) -> usize {
        self.http.receive(&mut self.backend, id, bytes, now_ms)
    }

    /// See [`Http::output`].
    pub fn output(&self, id: ConnId) -> &[u8] {
        self.http.output(id)
    }

    /// See [`Http::sent`].
    pub fn sent(&mut self, id: ConnId, n: usize, now_ms: u64) {
        self.http.sent(&mut self.backend, id, n, now_ms)
    }

    /// See [`Http::peer_closed`].
    pub fn peer_closed(&mut self, id: ConnId, now_ms: u64) {
        self.http.peer_closed(&mut self.backend, id, now_ms)
    }

    /// See [`Http::wants_close`].
    pub fn wants_close(&self, id: ConnId) -> bool {
        self.http.wants_close(id)
    }

    /// See [`Http::close`].
    pub fn close(&mut self, id: ConnId) {
        self.http.close(id)
    }

    /// See [`Http::poll`].
    pub fn poll(&mut self, now_ms: u64) -> bool {
        self.http.poll(&mut self.backend, now_ms)
    }

    /// See [`Http::pending`].
    pub fn pending(&self) -> usize {
        self.http.pending()
    }

    /// See [`Http::expire`].
    pub fn expire(&mut self, now_ms: u64) -> Vec<ConnId> {
        self.http.expire(now_ms)
    }
}
