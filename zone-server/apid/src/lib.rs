//! apid: the control plane's HTTP JSON API on the host's admin address.
//!
//! alcove-api's sans-IO [`Server`](alcove_api::Server) (routing, bearer
//! token, limits, `{"code","message"}` errors) runs over netd's `socket`
//! interface ([`pump`]); every request becomes a `vmadm` or `imgadm`
//! command at zone-server ([`backend::VmadmBackend`]), the same commands
//! the console shell sends, so one implementation (alcove-vmadm's verbs in
//! zone-server) is behind the shell, the API and the host CLI.
//!
//! Boot configuration (the manifest's `args`): `token=SECRET` (required:
//! without it apid serves nothing), `port=N` (default 8080).
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod backend;
pub mod pump;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod console_tests;
#[cfg(test)]
mod pending_tests;

use alcove_api::{Config, Limits, Token};
use alloc::format;
use alloc::string::String;

/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 7;
/// The sockets netd gives one client (`netd::sockets::PER_CLIENT_SOCKETS`).
pub const NETD_SOCKETS: usize = 16;
/// What a listener counts in that share (`netd::stack::LISTEN_BACKLOG`).
pub const NETD_LISTEN_BACKLOG: usize = 4;

/// What the manifest's arguments configure.
pub struct Settings {
    pub config: Config,
    pub port: u16,
}

/// Bytes apid adds to its heap at start for request bodies
/// (`alcove_rt::grow_heap`, charged to its budget: the manifests give
/// apid 3 MiB).
pub const HEAP_GROWTH_BYTES: usize = 2 << 20;

/// The largest body apid takes when it could not grow its heap at start
/// ([`degraded`]): seven of them, with their headers, parse in the
/// fixed arena (`alcove_rt::HEAP_BYTES`) beside everything else.
pub const DEGRADED_BODY_BYTES: usize = 4 * 1024;

/// The limits apid serves with when its heap could not grow at start
/// (its budget too small for [`HEAP_GROWTH_BYTES`]): bodies of at most
/// [`DEGRADED_BODY_BYTES`] (larger ones get 413 and a reason), the rest
/// as configured. Serving small requests beats not serving at all.
pub fn degraded(limits: Limits) -> Limits {
    Limits { max_body_bytes: limits.max_body_bytes.min(DEGRADED_BODY_BYTES), ..limits }
}

/// Reads `token=` and `port=` from the server's arguments.
pub fn settings(args: &[String]) -> Result<Settings, String> {
    let arg = |k: &str| args.iter().find_map(|a| a.strip_prefix(k));
    let token = arg("token=").ok_or("no token= argument: the API would take anyone's requests, so it serves none")?;
    let token = Token::new(token).map_err(|e| format!("token=: {e}"))?;
    let port = match arg("port=") {
        None => alcove_api::DEFAULT_PORT,
        Some(p) => p.parse().ok().filter(|&p| p != 0).ok_or_else(|| format!("port={p}: not a TCP port"))?,
    };
    // A body is a payload for zone-server's `vmadm`, which takes at most
    // VMADM_STDIN_MAX bytes (staged in pieces, `vmadm_run_whole`): a
    // larger one is refused here, with 413, before it is read. Seven
    // bodies that large at once fit the heap apid grows at start
    // (HEAP_GROWTH_BYTES).
    // At most 7 connections served and up to 4 more being told 503: with
    // the listener's 4, 15 sockets, under the 16 netd gives a client (the
    // rest wait in netd's backlog or are refused there).
    let limits = Limits {
        max_body_bytes: libipc::interfaces::VMADM_STDIN_MAX as usize,
        max_connections: MAX_CONNECTIONS,
        ..Limits::default()
    };
    Ok(Settings { config: Config { token, limits }, port })
}
