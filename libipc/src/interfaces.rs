//! The interfaces shared across Alcove, each defined once with
//! [`interface!`](crate::interface!). Servers implement `<iface>::Server`,
//! callers use `<iface>::Client`; see the macro for what each module holds.
//!
//! Interface ids are assigned here, one per interface, never reused.

use alloc::string::String;
use serde::{Deserialize, Serialize};

/// What a server reports about itself through [`status::Server::status`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerStatus {
    /// The server's name, e.g. `"console"`.
    pub name: String,
    /// The server's own version number.
    pub version: u32,
    /// Time since the server started.
    pub uptime_ns: u64,
    /// Requests answered since the server started.
    pub requests_served: u64,
}

crate::interface! {
    /// What every server answers: liveness and identity, for init and the
    /// operators' tools.
    pub interface status = 1 {
        /// Name, version and uptime of the server.
        fn status() -> ServerStatus;
        /// Returns `value` unchanged: a round-trip probe.
        fn echo(value: u64) -> u64;
    }
}

crate::interface! {
    /// The system console: text from servers to the operator.
    pub interface console = 2 {
        /// Writes `text` to the console as it is (no newline added).
        fn write(text: String);
    }
}

crate::interface! {
    /// Service management, as SmartOS's svcadm: init and operators stop a
    /// server, and init's restart policy brings it back.
    pub interface lifecycle = 3 {
        /// Replies, then ends the server with exit code `code`.
        fn stop(code: u32);
    }
}

crate::interface! {
    /// Fault injection for system tests: only test servers implement it, so
    /// the restart path can be exercised with a real panic and a real fault.
    pub interface fault_injection = 4 {
        /// Panics inside the request (the caller gets no reply).
        fn panic_now();
        /// Writes to an unmapped address (the caller gets no reply).
        fn fault_now();
    }
}
