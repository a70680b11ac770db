//! vmm-server: the per-VM monitor: guest memory, vCPUs and device models.
//!
//! This is the server's logic as a library (host-testable, embeddable in
//! appliance builds with the in-process transport); `src/bin/vmm-server.rs` is
//! the thin process that wires it to its capabilities. For now it answers
//! the `status` interface; its real work arrives with later issues.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod boot;
pub mod config;
pub mod devices;
pub mod firmware;
pub mod virtio;

pub mod mmio;
pub mod pci;
pub mod vm;

pub const VERSION: u32 = 1;

alcove_rt::status_server!(
    /// The server's state (its own interfaces come with later issues).
    VmmServer,
    "vmm-server",
    VERSION
);
