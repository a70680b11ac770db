//! Typed IPC for Alcove servers: the one userspace crate that talks to the
//! microkernel directly.
//!
//! The layers, bottom up:
//!
//! * [`sys`] (on Alcove only): one wrapper per system call of [`abi::Sys`],
//!   following the calling convention in `abi` exactly, and the registration
//!   of the thread's IPC buffer.
//! * [`cap`]: typed capability handles, `Cap<Endpoint>`, `Cap<Frame>` …, so a
//!   handle of the wrong kind does not compile; on Alcove they carry the typed
//!   operations (`Cap<Notification>::signal`, `Cap<Console>::write` …).
//! * [`wire`]: how a request travels: postcard bytes, packed into message
//!   words (length first) for the kernel; pure functions, tested on the host.
//! * [`interface!`]: each interface is defined once; the macro derives the
//!   request/reply enums, the server trait, the dispatch function and the
//!   client stub.
//! * [`Transport`] and [`Dispatch`]: a client stub calls through a transport,
//!   a server answers through dispatch. Transports: [`kernel::KernelTransport`]
//!   (endpoints, on Alcove) and [`in_process`] (crossbeam queues, anywhere), so
//!   the same server library runs as a process on Alcove or inside one host
//!   process for tests and appliance builds.
//! * [`interfaces`]: the shared interface definitions (`status`, `console`,
//!   `storage` …); [`reply_caps`]: capabilities a handler sends with its reply.
//! * [`blkring`]: the shared-memory block ring between a VMM and storaged
//!   (pure logic, no `unsafe`); [`framering`]: the shared-memory frame
//!   rings between a VMM's virtio-net and netd; [`pio`] (on Alcove): port I/O for drivers.
//!
//! All `unsafe` in Alcove's userspace lives here (the `syscall` instruction,
//! the IPC buffer and port I/O); every other userspace crate forbids it.
#![no_std]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]
#![warn(missing_docs)]

extern crate alloc;
#[cfg(any(feature = "std", test))]
extern crate std;

// Lets `interface!` name this crate as `libipc::…` inside string paths (serde's
// `crate = "…"` attribute cannot take `$crate`), also when expanded in here.
extern crate self as libipc;

pub mod cap;
mod error;
pub mod in_process;
mod interface;
pub mod blkring;
pub mod framering;
pub mod interfaces;
pub mod provision;
#[cfg(target_os = "none")]
pub mod kernel;
#[cfg(target_os = "none")]
pub mod pio;
pub mod reply_caps;
#[cfg(target_os = "none")]
pub mod request_caps;
#[cfg(target_os = "none")]
pub mod sys;
pub mod time;
mod transport;
pub mod wire;

pub use cap::Cap;
pub use error::{IpcError, RemoteError};
pub use transport::{Dispatch, Transport};

/// What the macros expand to; not part of the API.
#[doc(hidden)]
pub mod __private {
    pub use abi;
    pub use alloc::vec::Vec;
    pub use core::result::Result;
    pub use serde;
}
