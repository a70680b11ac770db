//! Alcove's control-plane HTTP API: the transport that exposes zone-server's
//! `vmadm`/`imgadm` over the network, as Triton's VMAPI and IMGAPI do.
//!
//! * [`server`]: a sans-IO HTTP/1.1 server: fed each connection's bytes,
//!   it hands back the bytes to send. zone-server runs it over netd's TCP
//!   sockets on Alcove; [`std_server`] runs it over `std::net` on the host.
//!   Requests are authenticated with a bearer token, routed
//!   (`/vms`, `/vms/:uuid`, `/images`, ...; see [`backend`]) and handed to a
//!   [`Backend`] as JSON; its [`ApiError`]s become statuses and
//!   `{"code", "message"}` bodies.
//! * [`client`]: the client side, sans-IO: building requests and decoding
//!   responses (`Content-Length`, chunked or to the end), and
//!   [`client::imgapi`], the requests zone-server sends to an IMGAPI image
//!   source and the parsing of their answers.
//! * With the `std` feature (the default on the host): [`blocking`], a
//!   small blocking client over `TcpStream` configured from `ALCOVE_URL`
//!   and `ALCOVE_TOKEN`; [`cli`], the argument plumbing of the host's
//!   `vmadm` and `imgadm` binaries.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

pub mod backend;
pub mod client;
pub mod error;
pub mod query;
pub mod server;
pub mod uuid;

#[cfg(feature = "std")]
pub mod blocking;
#[cfg(feature = "std")]
pub mod cli;
#[cfg(feature = "std")]
pub mod std_server;

/// The TCP port the API listens on unless configured otherwise.
pub const DEFAULT_PORT: u16 = 8080;

pub use backend::{Backend, Begun, VmAction};
pub use error::{ApiError, ErrorCode};
pub use server::{Config, ConnId, Http, Limits, Server, Token};
pub use uuid::Uuid;
