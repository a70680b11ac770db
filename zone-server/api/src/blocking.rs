//! The host's blocking client of the API, over `std::net::TcpStream`: one
//! request per connection, the token as a bearer token. Configured from
//! the environment by [`Client::from_env`]:
//!
//! * `ALCOVE_URL`: the API's base address (default [`DEFAULT_URL`]);
//! * `ALCOVE_TOKEN`: the token, or else `ALCOVE_TOKEN_FILE`: a file
//!   holding it (surrounding white space is dropped).

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::string::{String, ToString};
use std::time::Duration;
use std::{env, format, fs, io};

use serde_json::Value;

use crate::client::{BufferedResponse, DecodeError, Request, Url};
use crate::server::Token;

/// Where the API is when `ALCOVE_URL` is not set: [`crate::DEFAULT_PORT`]
/// on this host (where a port forward to Alcove's admin address goes).
pub const DEFAULT_URL: &str = "http://127.0.0.1:8080";
/// The largest response body taken (a `GET /vms` of many VMs).
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

/// Why a call failed, worded for the CLI's user.
#[derive(Debug)]
pub enum ClientError {
    /// The environment or arguments do not make a client.
    Config(String),
    /// No connection could be made.
    Connect { url: String, source: io::Error },
    /// The connection failed mid-way.
    Io(io::Error),
    /// The answer is not HTTP or not the JSON expected.
    Protocol(String),
    /// 401: no token, or not a bearer one.
    Unauthorized(String),
    /// 403: the token was refused.
    Forbidden(String),
    /// Another error status, with the body's `code` and `message`.
    Api { status: u16, code: String, message: String, body: Value },
}

impl core::fmt::Display for ClientError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ClientError::Config(m) => f.write_str(m),
            ClientError::Connect { url, source } if source.kind() == io::ErrorKind::ConnectionRefused => {
                write!(f, "cannot connect to {url}: connection refused (is Alcove's API up there? ALCOVE_URL sets the address)")
            }
            ClientError::Connect { url, source } => write!(f, "cannot connect to {url}: {source}"),
            ClientError::Io(e) => write!(f, "the connection to the API failed: {e}"),
            ClientError::Protocol(m) => write!(f, "the API's answer makes no sense: {m}"),
            ClientError::Unauthorized(m) => {
                write!(f, "the API wants a token (set ALCOVE_TOKEN, or ALCOVE_TOKEN_FILE to a file holding it): {m}")
            }
            ClientError::Forbidden(m) => write!(f, "the API refused the token (check ALCOVE_TOKEN): {m}"),
            ClientError::Api { status, code, message, .. } => write!(f, "{message} ({status} {code})"),
        }
    }
}

impl std::error::Error for ClientError {}

/// A client of the API; see the module's description.
#[derive(Clone, Debug)]
pub struct Client {
    url: Url,
    token: Option<String>,
    timeout: Duration,
}

impl Client {
    /// A client of the API at `url`, presenting `token`.
    pub fn new(url: &str, token: Option<&str>) -> Result<Self, ClientError> {
        let url = Url::parse(url).map_err(|e| ClientError::Config(format!("API address: {e}")))?;
        let token = match token {
            Some(t) => {
                let t = t.trim();
                Token::new(t).map_err(|e| ClientError::Config(e.to_string()))?;
                Some(t.to_string())
            }
            None => None,
        };
        Ok(Self { url, token, timeout: Duration::from_secs(600) })
    }

    /// A client configured from `ALCOVE_URL`, `ALCOVE_TOKEN` and
    /// `ALCOVE_TOKEN_FILE`.
    pub fn from_env() -> Result<Self, ClientError> {
        let url = env::var("ALCOVE_URL").unwrap_or_else(|_| DEFAULT_URL.to_string());
        let token = match (env::var("ALCOVE_TOKEN"), env::var("ALCOVE_TOKEN_FILE")) {
            (Ok(t), _) => Some(t),
            (Err(_), Ok(path)) => Some(
                fs::read_to_string(&path).map_err(|e| ClientError::Config(format!("ALCOVE_TOKEN_FILE {path}: {e}")))?,
            ),
            _ => None,
        };
        Self::new(&url, token.as_deref())
    }

    /// How long one call may wait for the API (10 minutes by default: an
    /// image import takes a while).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The API's base address.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// Sends `request` (with the token) and reads the whole response.
    pub fn send(&self, request: Request) -> Result<crate::client::Response, ClientError> {
        let request = match &self.token {
            Some(t) => request.bearer(t),
            None => request,
        };
        let shown = self.url.to_string();
        let addrs = self
            .url
            .socket_addr()
            .to_socket_addrs()
            .map_err(|e| ClientError::Connect { url: shown.clone(), source: e })?;
        let mut last = io::Error::new(io::ErrorKind::NotFound, "the host name has no address");
        let mut stream = None;
        for a in addrs {
            match TcpStream::connect_timeout(&a, Duration::from_secs(10)) {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last = e,
            }
        }
        let mut stream = stream.ok_or(ClientError::Connect { url: shown, source: last })?;
        stream.set_read_timeout(Some(self.timeout)).map_err(ClientError::Io)?;
        stream.set_write_timeout(Some(self.timeout)).map_err(ClientError::Io)?;
        stream.write_all(&request.encode(&self.url, true)).map_err(ClientError::Io)?;
        let mut response = BufferedResponse::new(MAX_RESPONSE_BYTES);
        let mut buf = [0u8; 16 * 1024];
        loop {
            if let Some(r) = response.poll().map_err(decode_error)? {
                return Ok(r);
            }
            match stream.read(&mut buf) {
                Ok(0) => response.finish(),
                Ok(n) => response.push(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(ClientError::Io(e)),
            }
        }
    }

    /// Calls `method target` with `body` as JSON: the answer's JSON on a
    /// 2xx (`null` for none), else the error the API gave.
    pub fn call(&self, method: &str, target: &str, body: Option<&Value>) -> Result<Value, ClientError> {
        let mut req = Request::new(method, target).header("Accept", "application/json");
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = self.send(req)?;
        let json = resp.json();
        let status = resp.head.status;
        if (200..300).contains(&status) {
            return json.map_err(|e| ClientError::Protocol(format!("a {status} whose body is not JSON: {e}")));
        }
        let body = json.unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&resp.body).into_owned()));
        let field = |k: &str| body.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        let (code, mut message) = (field("code"), field("message"));
        if message.is_empty() {
            message = format!("the API answered {status}");
        }
        Err(match status {
            401 => ClientError::Unauthorized(message),
            403 => ClientError::Forbidden(message),
            _ => ClientError::Api { status, code, message, body },
        })
    }
}

fn decode_error(e: DecodeError) -> ClientError {
    ClientError::Protocol(e.to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_default_url_is_on_the_default_port() {
        let u = crate::client::Url::parse(super::DEFAULT_URL).unwrap();
        assert_eq!(u.port, crate::DEFAULT_PORT);
    }
}
