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

/// What [`console::Server::put`] did with the bytes it was given.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Put {
    /// How many of the bytes (from the start) went to the console; the
    /// caller keeps the rest and offers it again.
    pub taken: u32,
    /// When the caller may offer the rest: nanoseconds from now until its
    /// allowance covers the next line (0 when everything was taken).
    pub retry_ns: u64,
}

crate::interface! {
    /// The system console: text from servers to the operator. Each caller
    /// (told apart by its endpoint's badge) has its own allowance, a token
    /// bucket: one client writing without pause (a guest flooding its
    /// UART) gets its rate and no more, and the others' lines still go out.
    pub interface console = 2 {
        /// Writes `text` to the console as it is (no newline added), as far
        /// as the caller's allowance goes; the rest is dropped, counted,
        /// and the console says how much.
        fn write(text: String);
        /// Takes up to `max` bytes the operator typed since the last read
        /// (empty when none). Whoever reads first gets them.
        fn read(max: u32) -> alloc::vec::Vec<u8>;
        /// Writes what the caller's allowance covers of `bytes` (any bytes:
        /// a guest's output), whole lines where it can, and says how much
        /// it took: the caller keeps the rest and waits (backpressure, so
        /// nothing is lost; a VMM holds its guest's UART back meanwhile).
        fn put(bytes: alloc::vec::Vec<u8>) -> Put;
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

/// A disk storaged serves, as [`storage::Server::disks`] lists it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskInfo {
    /// Where the disk is, e.g. `"virtio-blk 00:04.0"`.
    pub name: String,
    /// The device's serial (virtio-blk GET_ID, NULs trimmed; may be empty).
    pub serial: String,
    /// Size in 512-byte sectors.
    pub capacity_sectors: u64,
    /// Writes are refused.
    pub read_only: bool,
}

/// What [`storage::Server::open`] returns; the reply also carries the ring's
/// frame capability (see [`crate::blkring`] for the layout, and
/// [`crate::kernel::CapTransport`] for receiving it).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenedDisk {
    /// Names the ring in `kick` and `close`.
    pub handle: u32,
    /// The disk behind the ring.
    pub info: DiskInfo,
    /// Size of the ring's frame, in 4 KiB pages (map all of it).
    pub ring_pages: u32,
}

/// Why storaged refused a `storage` request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StorageError {
    /// `open(index)` of a disk that does not exist (there are `disks`).
    #[allow(missing_docs)]
    NoSuchDisk { index: u32, disks: u32 },
    /// `kick` or `close` of a handle that is not open.
    #[allow(missing_docs)]
    NoSuchHandle { handle: u32 },
    /// Every ring is in use (`limit` rings at most).
    #[allow(missing_docs)]
    TooManyRings { limit: u32 },
    /// storaged could not make the ring (`why`, e.g. what the kernel said).
    #[allow(missing_docs)]
    RingSetup { why: String },
    /// The client posted `pending` requests; the ring has `slots` slots.
    #[allow(missing_docs)]
    RingOverrun { pending: u32, slots: u32 },
    /// `open` without a process capability storaged can watch (`why`):
    /// storaged closes a client's rings when the client ends, so it must
    /// be able to tell.
    #[allow(missing_docs)]
    NoClientWatch { why: String },
}

impl core::fmt::Display for StorageError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            StorageError::NoSuchDisk { index, disks } => write!(f, "storage: no disk {index} ({disks} disks)"),
            StorageError::NoSuchHandle { handle } => write!(f, "storage: ring handle {handle} is not open"),
            StorageError::TooManyRings { limit } => write!(f, "storage: all {limit} rings are in use"),
            StorageError::RingSetup { why } => write!(f, "storage: cannot set up a ring: {why}"),
            StorageError::RingOverrun { pending, slots } => {
                write!(f, "storage: ring overrun: {pending} requests posted, the ring has {slots} slots")
            }
            StorageError::NoClientWatch { why } => {
                write!(f, "storage: open needs the caller's process capability (its rings close when it ends): {why}")
            }
        }
    }
}

impl core::error::Error for StorageError {}

crate::interface! {
    /// storaged's block service: VMMs open a machine disk and move its data
    /// through a shared-memory ring ([`crate::blkring`]); IPC carries only
    /// the doorbell (`kick`) and these control messages.
    pub interface storage = 5 {
        /// The disks storaged serves, in index order.
        fn disks() -> alloc::vec::Vec<DiskInfo>;
        /// Opens disk `index`: a new ring, whose frame capability comes with
        /// the reply. The request carries a capability to the process the
        /// ring is for (the caller's own, no rights needed: see
        /// [`crate::kernel::CapTransport::sending`]); storaged watches it and
        /// closes the process's rings when it ends.
        fn open(index: u32) -> Result<OpenedDisk, StorageError>;
        /// Carries out the requests posted on the ring (up to
        /// [`crate::blkring::KICK_BUDGET_BYTES`] of data), then replies with
        /// how many were carried out.
        fn kick(handle: u32) -> Result<u32, StorageError>;
        /// Closes the ring (storaged drops its mapping; the frame lives on
        /// until the client deletes its capability too).
        fn close(handle: u32) -> Result<(), StorageError>;
    }
}
