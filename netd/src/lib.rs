//! netd: NICs, the virtual switch, VNICs and TCP/IP.
//!
//! This is the server's logic as a library (host-testable, embeddable in
//! appliance builds with the in-process transport); `src/bin/netd/main.rs` is
//! the thin process that wires it to its capabilities. The process
//! serves `status` and `vnic` ([`vnics`]: the VNICs of its boot
//! configuration, attached by the VMMs they belong to, over [`fabric`]: a
//! switch from `netd-switch` and its VNICs' frame rings), and `socket`
//! ([`host`]: the host's TCP/IP, [`stack`], smoltcp on a VNIC of the
//! switch `netd.conf`'s `host` line names, with the socket server
//! [`sockets`] over it).
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod fabric;
pub mod host;
pub mod sockets;
pub mod stack;
pub mod vnics;

pub const VERSION: u32 = 1;

alcove_rt::status_server!(
    /// The server's state (its own interfaces come with later issues).
    Netd,
    "netd",
    VERSION
);
