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
        /// Typed input for another client (`vmadm console`: the operator
        /// shell hands what is typed to the VMM whose capability carries
        /// `target`, which takes it with its own `read`s). Only the
        /// console's input readers (`input=`) may feed; it takes what fits
        /// in `target`'s queue ([`CONSOLE_FEED_LIMIT`]) and says how much,
        /// and the feeder keeps the rest (flow control, as `put`).
        fn feed(target: u64, bytes: alloc::vec::Vec<u8>) -> Result<u32, ConsoleRefusal>;
        /// What the client whose capability carries `target` (a VM's VMM,
        /// [`proc_instance_badge`]) `put` lately, from byte `from` of all it
        /// ever put: the console keeps the last [`CONSOLE_TAIL_BYTES`] of
        /// each such client. At most [`CONSOLE_TAIL_CHUNK`] bytes an answer
        /// (ask again from its `next`). Only the clients the console's
        /// manifest names (`tail=`) may ask; anyone else gets
        /// [`ConsoleRefusal::NotTailer`].
        fn tail(target: u64, from: u64) -> Result<ConsoleTail, ConsoleRefusal>;
    }
}

/// The last bytes of each VMM's output the console keeps (`console.tail`).
pub const CONSOLE_TAIL_BYTES: usize = 16 * 1024;

/// The most bytes one `console.tail` answer carries.
pub const CONSOLE_TAIL_CHUNK: usize = 2048;

/// What [`console::Server::tail`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsoleTail {
    /// The offset of `bytes[0]` in all the target ever put: the asked
    /// `from`, or the oldest byte kept when `from` was forgotten (or lies
    /// past `end`: the console restarted and counts from 0 again).
    pub start: u64,
    /// Bytes between the asked `from` and `start` that are forgotten.
    pub lost: u64,
    /// Where to ask next: `start + bytes.len()`.
    pub next: u64,
    /// All the target has put so far (`next < end`: more is kept).
    pub end: u64,
    #[allow(missing_docs)]
    pub bytes: alloc::vec::Vec<u8>,
}

/// Bytes fed to one client that wait for its `read`s at most.
pub const CONSOLE_FEED_LIMIT: usize = 4096;

/// Clients that may have fed input waiting at once; feeding one more
/// forgets the queue fed longest ago (its VMM most likely ended).
pub const CONSOLE_FEED_TARGETS: usize = 16;

/// Why [`console::Server::feed`] took nothing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConsoleRefusal {
    /// The caller is not one of the console's input readers (nor one its
    /// `feed=` names).
    NotReader,
    /// The target is unbadged or an input reader (the caller itself).
    BadTarget,
    /// The caller is not one the console's manifest names (`tail=`): it
    /// may not read another client's output.
    NotTailer,
}

impl core::fmt::Display for ConsoleRefusal {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ConsoleRefusal::NotReader => {
                write!(f, "only the console's input reader (input=) or a client its feed= names may feed another client")
            }
            ConsoleRefusal::BadTarget => {
                write!(f, "no such target (unbadged, or an input reader)")
            }
            ConsoleRefusal::NotTailer => write!(f, "only the clients the console's tail= names may read a VM's console output"),
        }
    }
}

crate::interface! {
    /// Service management, as SmartOS's svcadm: init and operators stop a
    /// server, and init's restart policy brings it back.
    pub interface lifecycle = 3 {
        /// Replies, then ends the server with exit code `code`. Only init
        /// (badge 0) and the callers the manifest names in the server's
        /// `lifecycle-stop` argument may: anyone else gets `Err` saying so
        /// and the server goes on.
        fn stop(code: u32) -> Result<(), String>;
        /// Additive, init only (a caller with another badge changes
        /// nothing): init restarted server `server`, one this server
        /// `calls` in the manifest, so what this server had made there
        /// (netd's VNIC grants, storaged's pool grants) may be gone and is
        /// to be made again. init makes this call on its worker thread,
        /// never on the thread that serves `proc`.
        fn restarted(server: String);
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
    /// The pool volume a grant names is gone (or storaged has no pool).
    #[allow(missing_docs)]
    NoSuchVolume { name: String },
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
            StorageError::NoSuchVolume { name } => write!(f, "storage: no pool volume {name}"),
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

/// Bytes `send` and `recv` carry inside the message; more goes through
/// the caller's shared buffer (`send_buffered`, `recv_buffered`).
pub const SOCKET_INLINE_MAX: u32 = 2048;

/// A TCP socket's state as [`socket::Server::state`] reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SocketState {
    /// A listener, or a connection not yet answered.
    Pending,
    /// Data flows both ways.
    Established,
    /// The peer closed its side; what it sent can still be read.
    PeerClosed,
    /// Closed or reset by the peer.
    Closed,
}

/// A datagram [`socket::Server::recv_from`] took, with its sender.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Datagram {
    /// Its payload (cut to the `max` asked for).
    pub data: alloc::vec::Vec<u8>,
    /// The sender's IPv4 address.
    pub ip: [u8; 4],
    /// The sender's port.
    pub port: u16,
}

/// Why netd refused a `socket` request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SocketError {
    /// The handle names no socket of the caller's (closed, never opened,
    /// or another client's: they look the same).
    #[allow(missing_docs)]
    NoSuchSocket { socket: u32 },
    /// The caller holds `limit` sockets already (each client's share).
    #[allow(missing_docs)]
    TooManySockets { limit: u32 },
    /// The host stack has no socket left for anyone (`limit` in all).
    #[allow(missing_docs)]
    StackFull { limit: u32 },
    /// The call does not apply to this socket (e.g. `send` on a listener).
    #[allow(missing_docs)]
    WrongKind { socket: u32 },
    /// Another socket has the port.
    #[allow(missing_docs)]
    PortInUse { port: u16 },
    /// Port 0, an unspecified, broadcast or multicast peer.
    BadAddress,
    /// The connection is not (or no longer) open for this call.
    #[allow(missing_docs)]
    NotConnected { socket: u32 },
    /// More bytes than the call carries (`max` at most).
    #[allow(missing_docs)]
    TooLarge { bytes: u64, max: u32 },
    /// The caller has no shared buffer (see [`socket::Server::buffer`]).
    NoBuffer,
    /// `offset + len` runs past the caller's shared buffer of `size` bytes.
    #[allow(missing_docs)]
    OutsideBuffer { offset: u32, len: u32, size: u32 },
}

impl core::fmt::Display for SocketError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            SocketError::NoSuchSocket { socket } => write!(f, "socket: no socket {socket}"),
            SocketError::TooManySockets { limit } => write!(f, "socket: this client holds its {limit} sockets already"),
            SocketError::StackFull { limit } => write!(f, "socket: all {limit} sockets of the host stack are in use"),
            SocketError::WrongKind { socket } => write!(f, "socket: socket {socket} does not do that"),
            SocketError::PortInUse { port } => write!(f, "socket: port {port} is in use"),
            SocketError::BadAddress => f.write_str("socket: bad address (port 0, or an unspecified, broadcast or multicast peer)"),
            SocketError::NotConnected { socket } => write!(f, "socket: socket {socket} is not connected"),
            SocketError::TooLarge { bytes, max } => write!(f, "socket: {bytes} bytes asked for, {max} at most"),
            SocketError::NoBuffer => f.write_str("socket: the caller has no shared buffer"),
            SocketError::OutsideBuffer { offset, len, size } => {
                write!(f, "socket: {len} bytes at {offset} run past the shared buffer of {size} bytes")
            }
        }
    }
}

impl core::error::Error for SocketError {}

crate::interface! {
    /// netd's host TCP/IP for other servers (the control plane's HTTP API
    /// listens here): TCP listeners and connections, UDP. Sockets are
    /// named by handles that belong to the client that opened them (told
    /// apart by its endpoint's badge) and are never reused; each client
    /// holds a bounded number of them. Small data travels in the message
    /// (up to [`SOCKET_INLINE_MAX`] bytes); bulk data through the client's
    /// shared buffer, a memory region the client and netd both map.
    pub interface socket = 6 {
        /// Listens for TCP connections on `port` (the host's addresses).
        fn listen(port: u16) -> Result<u32, SocketError>;
        /// A connection that arrived on `listener` (a new socket), or none yet.
        fn accept(listener: u32) -> Result<Option<u32>, SocketError>;
        /// Opens a TCP connection to `ip:port`; `Pending` until answered.
        fn connect(ip: [u8; 4], port: u16) -> Result<u32, SocketError>;
        /// A TCP socket's state.
        fn state(socket: u32) -> Result<SocketState, SocketError>;
        /// Queues what fits of `data` on a connection: the bytes taken.
        fn send(socket: u32, data: alloc::vec::Vec<u8>) -> Result<u32, SocketError>;
        /// Up to `max` received bytes (empty when none arrived yet).
        fn recv(socket: u32, max: u32) -> Result<alloc::vec::Vec<u8>, SocketError>;
        /// The size of the caller's shared buffer, in bytes.
        fn buffer() -> Result<u32, SocketError>;
        /// As `send`, the data being `len` bytes at `offset` of the buffer.
        fn send_buffered(socket: u32, offset: u32, len: u32) -> Result<u32, SocketError>;
        /// As `recv`, into the buffer at `offset`: the bytes written there.
        fn recv_buffered(socket: u32, offset: u32, max: u32) -> Result<u32, SocketError>;
        /// A UDP socket on `port` (0: any free port): its handle and port.
        fn udp_bind(port: u16) -> Result<(u32, u16), SocketError>;
        /// Sends one datagram; `false` when the socket has no room now.
        fn send_to(socket: u32, ip: [u8; 4], port: u16, data: alloc::vec::Vec<u8>) -> Result<bool, SocketError>;
        /// The next datagram (at most `max` bytes) and its sender, if any.
        fn recv_from(socket: u32, max: u32) -> Result<Option<Datagram>, SocketError>;
        /// Closes the socket (a connection sends what is queued, then FIN);
        /// the handle is no longer valid.
        fn close(socket: u32) -> Result<(), SocketError>;
        /// The frame capability this request brings (on Alcove) becomes
        /// the caller's shared buffer, replacing an earlier one: its size
        /// in bytes. `NoBuffer` when the request brought no frame,
        /// `TooLarge` when the frame is over netd's limit for a buffer.
        fn share_buffer() -> Result<u32, SocketError>;
    }
}

/// Bytes of stream data one `send_chunk` reply or `receive_chunk` request
/// carries (a send or receive stream moves in many such messages).
pub const POOL_CHUNK_BYTES: u32 = 2048;

/// Bytes of names a `list` or `props` page holds at most (at least one
/// entry always goes in): a page always fits in one message.
pub const POOL_PAGE_BYTES: u32 = 2048;

/// Volumes one `grant` names at most.
pub const POOL_GRANT_MAX: u32 = 8;

/// Disks a `status` reply reports by name at most (more are counted).
pub const POOL_REPORTS_MAX: u32 = 8;

/// Bytes of a reason in a [`PoolError`] or a report at most (longer ones are
/// cut, with `…`).
pub const POOL_TEXT_MAX: u32 = 400;

/// One disk of the pool as `pool.status` reports it, `zpool status`'s line.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolChild {
    /// The machine disk, e.g. `"virtio-blk 00:04.0"`.
    pub disk: String,
    /// `ONLINE`, `DEGRADED` (errors counted) or `FAULTED` (out of service:
    /// a write or a flush failed on it).
    pub state: String,
    #[allow(missing_docs)]
    pub read_errors: u64,
    #[allow(missing_docs)]
    pub write_errors: u64,
    #[allow(missing_docs)]
    pub checksum_errors: u64,
    /// Bytes rewritten on it from a good copy (self-healing, scrub).
    pub repaired_bytes: u64,
}

/// A machine disk storaged found at boot and did not put in the pool, and
/// why (data it does not recognise, another pool's member, …): left
/// untouched.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskReport {
    /// The machine disk.
    pub disk: String,
    /// What storaged found on it and did.
    pub what: String,
}

/// `pool.status`: the pool, its disks, and the disks left out.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolStatus {
    /// The pool's name (`zones`).
    pub name: String,
    #[allow(missing_docs)]
    pub guid: u64,
    /// `ONLINE`, `DEGRADED` or `FAULTED` (a commit failed: suspended).
    pub state: String,
    /// The last committed transaction group.
    pub txg: u64,
    /// `disk` or `mirror`.
    pub vdev: String,
    /// The disks present, in the labels' order.
    pub children: alloc::vec::Vec<PoolChild>,
    /// Disks the labels name (present or not).
    pub children_total: u32,
    /// Bytes of the data region, and of it free.
    pub size_bytes: u64,
    #[allow(missing_docs)]
    pub free_bytes: u64,
    /// Disks left out at boot (at most [`POOL_REPORTS_MAX`]) …
    pub reports: alloc::vec::Vec<DiskReport>,
    /// … and how many there were in all.
    pub reports_total: u32,
    /// Grants live (VMM capabilities naming volumes).
    pub grants: u32,
    /// The last scrub, kept in the pool (`zpool status`'s `scan:` line).
    pub scan: Option<PoolScan>,
}

/// The last scrub as `pool.status` reports it, or the one under way
/// (`running`), or the last one cancelled (`canceled`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolScan {
    /// Start and end, seconds since 1970 (0: the pool had no clock then;
    /// end 0 while it runs).
    pub start: u64,
    #[allow(missing_docs)]
    pub end: u64,
    /// Bytes verified (so far) and bytes rewritten from a good copy.
    pub bytes: u64,
    #[allow(missing_docs)]
    pub repaired: u64,
    /// Permanent errors found (blocks no copy of which was good).
    pub errors: u64,
    /// A scrub under way (`scrub_start`): `bytes` of `total` walked.
    pub running: bool,
    /// Bytes the scrub under way walks in all (what the pool had allocated
    /// when it started); 0 otherwise.
    pub total: u64,
    /// The last scrub was cancelled (`scrub_stop`, or a write needed the
    /// space it held) after `bytes`, at `end`.
    pub canceled: bool,
}

/// A dataset in a `list` page.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatasetEntry {
    /// `zones/NAME` or `zones/NAME@SNAP`.
    pub name: String,
    #[allow(missing_docs)]
    pub snapshot: bool,
    /// Bytes.
    pub volsize: u64,
}

/// A page of `list` (names in order); `next` is the `after` that gets the
/// next page (`None`: that was the last).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatasetPage {
    #[allow(missing_docs)]
    pub datasets: alloc::vec::Vec<DatasetEntry>,
    #[allow(missing_docs)]
    pub next: Option<String>,
}

/// `pool.get`: a volume's or snapshot's native properties (as `zfs get`).
/// User properties are read with `props` and `get_prop`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeInfo {
    #[allow(missing_docs)]
    pub name: String,
    #[allow(missing_docs)]
    pub guid: u64,
    #[allow(missing_docs)]
    pub snapshot: bool,
    #[allow(missing_docs)]
    pub volsize: u64,
    #[allow(missing_docs)]
    pub volblocksize: u32,
    /// The transaction group that made it.
    pub creation_txg: u64,
    /// When it was made, seconds since 1970 (0: unknown).
    pub creation: u64,
    /// A clone's snapshot.
    pub origin: Option<String>,
    /// `off` or `lz4`.
    pub compression: String,
    /// Bytes, ZFS's meaning (volumes; 0 for a snapshot).
    pub used: u64,
    #[allow(missing_docs)]
    pub available: u64,
    #[allow(missing_docs)]
    pub referenced: u64,
    /// Hundredths: 100 is 1.00x.
    pub compressratio_x100: u64,
    /// Bytes, 0 for none.
    pub quota: u64,
    #[allow(missing_docs)]
    pub reservation: u64,
    #[allow(missing_docs)]
    pub refreservation: u64,
    /// How many user properties (`module:key`) it has.
    pub user_props: u32,
    /// The function of its new data blocks: `on` (fletcher4, the default),
    /// `fletcher4`, `blake3` or `sha256`.
    pub checksum: String,
}

/// A page of user-property keys; `next` as in [`DatasetPage`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PropPage {
    #[allow(missing_docs)]
    pub keys: alloc::vec::Vec<String>,
    #[allow(missing_docs)]
    pub next: Option<String>,
}

/// A piece of a property's value (UTF-8 bytes; a piece may end inside a
/// character: join the pieces, then decode).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PropChunk {
    /// At most [`POOL_CHUNK_BYTES`] bytes from the offset asked for.
    pub bytes: alloc::vec::Vec<u8>,
    /// The value's whole length.
    pub total_bytes: u32,
}

/// A send stream storaged made ready: read it with `send_chunk`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamOpened {
    /// Names the stream in `send_chunk` and `close_stream`.
    pub stream: u32,
    /// Its length if known up front; `u64::MAX` when the stream is made in
    /// pieces as it is read (storaged's: read until an empty chunk).
    pub bytes: u64,
}

/// What `pool.scrub` found, as `zpool status` after a scrub.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScrubReport {
    /// The transaction group scrubbed.
    pub txg: u64,
    #[allow(missing_docs)]
    pub datasets: u32,
    /// Blocks and bytes verified.
    pub blocks: u64,
    #[allow(missing_docs)]
    pub bytes: u64,
    /// Over all disks, since import.
    pub checksum_errors: u64,
    #[allow(missing_docs)]
    pub repaired_bytes: u64,
    /// The pool's state afterwards.
    pub state: String,
    /// Blocks no copy of which was good (permanent errors), once per
    /// volume or snapshot holding each.
    pub data_error_count: u64,
    /// The first [`POOL_REPORTS_MAX`] of them as `zpool status -v` names
    /// them (`zones/x-disk0 bytes 8192..16384 (data block at 0x56000)`;
    /// a dataset name cut at 200 bytes, the line at [`POOL_TEXT_MAX`]).
    pub data_errors: alloc::vec::Vec<String>,
}

/// What `pool.grant` made: the reply carries an endpoint capability for
/// storaged with this badge; a VMM holding it reaches exactly the granted
/// volumes (`storage.disks` lists them, `storage.open(i)` opens the i-th).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Granted {
    /// Names the grant in `revoke`.
    pub badge: u64,
}

/// Why storaged refused a `pool` request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PoolError {
    /// The caller may not use the pool interface (the control plane and
    /// init only; a VMM reaches its volumes through `storage`).
    NotPermitted,
    /// storaged has no pool (none found on the disks, none configured).
    NoPool,
    /// No dataset, grant or property of that name.
    #[allow(missing_docs)]
    NotFound { name: String },
    /// A dataset of that name exists.
    #[allow(missing_docs)]
    Exists { name: String },
    /// Refused while something depends on it or uses it (`why` says what).
    #[allow(missing_docs)]
    Busy { why: String },
    /// The request is not valid (`why`).
    #[allow(missing_docs)]
    Invalid { why: String },
    /// The pool is out of space.
    NoSpace,
    /// A quota would be passed (`why`, with the figures).
    #[allow(missing_docs)]
    Quota { why: String },
    /// Not enough unreserved space (`why`, with the figures).
    #[allow(missing_docs)]
    Space { why: String },
    /// A disk failed, or the pool is suspended after a failed commit.
    #[allow(missing_docs)]
    Io { why: String },
    /// A block had no copy matching its checksum.
    #[allow(missing_docs)]
    Checksum { offset: u64 },
    /// The on-disk state is inconsistent, or a stream is damaged (`why`).
    #[allow(missing_docs)]
    Corrupt { why: String },
    /// `what` is larger than storaged takes (`max` bytes or items).
    #[allow(missing_docs)]
    TooLarge { what: String, max: u64 },
    /// No stream of the caller's with that number.
    #[allow(missing_docs)]
    NoSuchStream { stream: u32 },
    /// Every stream slot is in use (`limit`).
    #[allow(missing_docs)]
    TooManyStreams { limit: u32 },
    /// storaged could not make the capability a grant hands over (`why`).
    #[allow(missing_docs)]
    GrantSetup { why: String },
}

impl core::fmt::Display for PoolError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            PoolError::NotPermitted => f.write_str("pool: this client may not use the pool interface (control plane and init only)"),
            PoolError::NoPool => f.write_str("pool: storaged has no pool"),
            PoolError::NotFound { name } => write!(f, "pool: {name}: not found"),
            PoolError::Exists { name } => write!(f, "pool: {name}: already exists"),
            PoolError::Busy { why } => write!(f, "pool: busy: {why}"),
            PoolError::Invalid { why } => write!(f, "pool: {why}"),
            PoolError::NoSpace => f.write_str("pool: out of space"),
            PoolError::Quota { why } => write!(f, "pool: disk quota exceeded: {why}"),
            PoolError::Space { why } => write!(f, "pool: out of space: {why}"),
            PoolError::Io { why } => write!(f, "pool: I/O error: {why}"),
            PoolError::Checksum { offset } => write!(f, "pool: checksum error: no good copy of the block at {offset:#x}"),
            PoolError::Corrupt { why } => write!(f, "pool: corrupt: {why}"),
            PoolError::TooLarge { what, max } => write!(f, "pool: {what}: more than {max}"),
            PoolError::NoSuchStream { stream } => write!(f, "pool: no stream {stream}"),
            PoolError::TooManyStreams { limit } => write!(f, "pool: all {limit} stream slots are in use"),
            PoolError::GrantSetup { why } => write!(f, "pool: cannot make the grant's capability: {why}"),
        }
    }
}

impl core::error::Error for PoolError {}

crate::interface! {
    /// storaged's pool, for the control plane and init (other callers get
    /// [`PoolError::NotPermitted`]): volumes (`zones/<uuid>-disk<N>`) and
    /// their snapshots, clones, properties, send and receive streams, scrub,
    /// status, and grants, the capabilities that let a VMM open exactly its
    /// volumes as block rings. Every reply fits in one message: lists come
    /// in pages, streams and long values in chunks of [`POOL_CHUNK_BYTES`].
    pub interface pool = 7 {
        /// The pool, its disks, the disks left out at boot.
        fn status() -> Result<PoolStatus, PoolError>;
        /// Datasets whose names sort after `after` ("" for the first page).
        fn list(after: String) -> Result<DatasetPage, PoolError>;
        /// A new sparse volume (`volblocksize` 0: 8 KiB), committed.
        fn create(name: String, volsize: u64, volblocksize: u32) -> Result<(), PoolError>;
        /// Destroys a volume (with its snapshots if `recursive`) or a
        /// snapshot; refused while clones, grants or open rings use it.
        fn destroy(name: String, recursive: bool) -> Result<(), PoolError>;
        /// A dataset's native properties.
        fn get(name: String) -> Result<VolumeInfo, PoolError>;
        /// Its user-property keys after `after`, a page.
        fn props(name: String, after: String) -> Result<PropPage, PoolError>;
        /// A piece of property `key`'s value from byte `offset`.
        fn get_prop(name: String, key: String, offset: u32) -> Result<PropChunk, PoolError>;
        /// Sets `compression`, `quota`, `reservation`, `refreservation` or a
        /// user property `module:key` (with `append`, adds `value` to the
        /// end of the current one: a long value in several messages),
        /// committed before the reply.
        fn set(name: String, key: String, value: String, append: bool) -> Result<(), PoolError>;
        /// `VOLUME@SNAP`, committed.
        fn snapshot(name: String) -> Result<(), PoolError>;
        /// A writable volume `name` sharing `snapshot`'s blocks.
        fn clone_snapshot(snapshot: String, name: String) -> Result<(), PoolError>;
        /// Returns the volume to its latest snapshot; refused while a ring
        /// is open on it.
        fn rollback(snapshot: String) -> Result<(), PoolError>;
        /// Makes the stream of `snapshot` (incremental from `from`) ready
        /// to be read with `send_chunk`.
        fn send(snapshot: String, from: Option<String>) -> Result<StreamOpened, PoolError>;
        /// Up to [`POOL_CHUNK_BYTES`] of send stream `stream` from `offset`
        /// (empty at the end). Offsets go forward: within the piece being
        /// read, or just past it (the next piece); others are refused.
        fn send_chunk(stream: u32, offset: u64) -> Result<alloc::vec::Vec<u8>, PoolError>;
        /// Starts receiving a stream into volume `target`: the stream's
        /// number for `receive_chunk` and `receive_end`.
        fn receive(target: String) -> Result<u32, PoolError>;
        /// Appends up to [`POOL_CHUNK_BYTES`] to receive stream `stream`:
        /// the stream's bytes taken so far. Each piece is checked and applied
        /// as it completes; a bad one ends the receive (and the stream).
        fn receive_chunk(stream: u32, bytes: alloc::vec::Vec<u8>) -> Result<u64, PoolError>;
        /// Ends the stream: the snapshot it made. A stream cut short or
        /// altered is refused and nothing of it is left.
        fn receive_end(stream: u32) -> Result<String, PoolError>;
        /// Drops a send or receive stream of the caller's.
        fn close_stream(stream: u32) -> Result<(), PoolError>;
        /// Reads every copy of every block, repairs bad copies, and replies
        /// when done; storaged serves no one else meanwhile (`scrub_start`
        /// does not stop them). Refused while a `scrub_start` scrub runs.
        fn scrub() -> Result<ScrubReport, PoolError>;
        /// A capability (with the reply) for a VMM that reaches exactly
        /// `volumes` (at most [`POOL_GRANT_MAX`]), in that order.
        fn grant(volumes: alloc::vec::Vec<String>) -> Result<Granted, PoolError>;
        /// Ends grant `badge`: its rings close, its capability opens
        /// nothing more. Returns how many rings were closed.
        fn revoke(badge: u64) -> Result<u32, PoolError>;
        /// Renames a volume (with its snapshots) or a snapshot within its
        /// volume (`zfs rename`), committed; refused while a grant or ring
        /// uses the volume. (The image store installs into
        /// `zones/<uuid>-partial` and renames it once the file checked out.)
        fn rename(from: String, to: String) -> Result<(), PoolError>;
        /// Starts a scrub (`zpool scrub`) that storaged runs in bounded
        /// steps between other requests, so VM disks and `status` go on;
        /// `status`'s `scan` tells its progress, then its result. Refused
        /// ([`PoolError::Busy`]) while one runs.
        fn scrub_start() -> Result<(), PoolError>;
        /// Cancels the scrub under way (`zpool scrub -s`); refused
        /// ([`PoolError::Invalid`]) when none is.
        fn scrub_stop() -> Result<(), PoolError>;
    }
}

/// One of the caller's VNICs, as [`vnic::Server::vnics`] lists it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VnicInfo {
    /// netd's number for the VNIC (what `attach` takes).
    pub vnic: u32,
    /// Its MAC (the guest's NIC shows it).
    pub mac: [u8; 6],
    /// 0 (untagged) to 4094.
    pub vlan_id: u16,
    /// The switch it is on: a nic_tag or an etherstub.
    pub switch: String,
    /// Whether a ring is attached now.
    pub attached: bool,
}

/// What [`vnic::Server::attach`] returns; the reply also carries the frame
/// capability of the ring region ([`crate::framering`]; netd formatted it).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachedVnic {
    /// Names the attachment in `kick` and `detach`; never reused.
    pub handle: u32,
    /// The VNIC's MAC.
    pub mac: [u8; 6],
    /// The switch's MTU.
    pub mtu: u16,
    /// Size of the region, in 4 KiB pages (map all of it).
    pub ring_pages: u32,
}

/// Why netd refused a `vnic` request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum VnicError {
    /// The VNIC is not one of the caller's (another client's, or none:
    /// they look the same).
    #[allow(missing_docs)]
    NoSuchVnic { vnic: u32 },
    /// `kick` or `detach` of a handle the caller does not hold (detached,
    /// never given, or another client's).
    #[allow(missing_docs)]
    NoSuchHandle { handle: u32 },
    /// Ring slots asked for: 0 (netd's default) to `max`.
    #[allow(missing_docs)]
    TooLarge { slots: u32, max: u32 },
    /// netd could not make the ring or put the VNIC on its switch (`why`).
    #[allow(missing_docs)]
    Setup { why: String },
    /// `grant` and `revoke` answer netd's admins only (init and the
    /// control plane).
    NotPermitted,
    /// A `grant` that names a bad VNIC (`why` names the entry and
    /// property), or a `revoke` of no grant.
    #[allow(missing_docs)]
    Invalid { why: String },
    /// A `regrant` of a grant this netd holds already (made or regranted
    /// in this netd's life): nothing was made again.
    #[allow(missing_docs)]
    GrantLive { badge: u64 },
    /// Appended: a link (etherstub, VNIC, nic_tag) named `name` exists.
    #[allow(missing_docs)]
    Exists { name: String },
    /// Appended: no etherstub or VNIC (or link to put one over) `name`.
    #[allow(missing_docs)]
    NotFound { name: String },
    /// Appended: `name` is in use (`why`: a VNIC on an etherstub, a VM's
    /// VNIC): nothing was deleted.
    #[allow(missing_docs)]
    Busy { name: String, why: String },
    /// Appended: `name` is not a valid illumos link name (`why`), or is
    /// one netd keeps for its own (`vnicN`, `vioifN`).
    #[allow(missing_docs)]
    BadName { name: String, why: String },
    /// Appended: netd holds `limit` of these (`what`) at most.
    #[allow(missing_docs)]
    TooMany { what: String, limit: u32 },
}

/// VNICs one [`vnic::Server::grant`] makes at most (a VM's `nics[]`).
pub const VNIC_GRANT_MAX: u32 = 8;

/// VNICs one [`vnic::Server::show`] lists at most.
pub const VNIC_SHOW_MAX: usize = 48;

/// A switch of netd's as [`vnic::Server::switches`] lists it (`dladm
/// show-link`, `show-etherstub`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwitchInfo {
    /// The nic_tag or etherstub name (netd.conf's).
    pub name: String,
    /// An etherstub (a switch of its own); else a nic_tag.
    pub etherstub: bool,
    /// The largest frame payload it carries.
    pub mtu: u32,
    /// A nic_tag's uplink: the machine NIC's link name (`vioif0` for NIC
    /// 0, as illumos names virtio-net links), when netd drives one.
    pub uplink: Option<String>,
}

/// One VNIC's counters as [`vnic::Server::stats`] gives them (`dlstat`),
/// from the VNIC's side: what it received is what the switch delivered to
/// it (its guest's receive), what it sent is what its guest sent that the
/// switch took. An attachment's counters start at 0 when it attaches.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VnicStats {
    /// netd's number for the VNIC (as [`VnicInfo::vnic`]).
    pub vnic: u32,
    /// Whether a ring is attached now (counters are 0 when not).
    pub attached: bool,
    /// Frames the switch delivered to the VNIC, and their bytes.
    pub received_frames: u64,
    #[allow(missing_docs)]
    pub received_bytes: u64,
    /// Frames the VNIC sent that the switch took, and their bytes.
    pub sent_frames: u64,
    #[allow(missing_docs)]
    pub sent_bytes: u64,
    /// Frames for the VNIC that were dropped, by reason (the switch's
    /// names: `rate_limited`, ...), plus `ring_full` for frames its ring
    /// had no room for; reasons with a count only.
    pub received_drops: alloc::vec::Vec<(String, u64)>,
    /// Frames from the VNIC that were dropped, by reason (`mac_spoof`,
    /// `ip_spoof`, `dhcp_spoof`, `restricted`, ...); reasons with a count
    /// only.
    pub sent_drops: alloc::vec::Vec<(String, u64)>,
    /// Times a frame it sent waited for its `maxbw` bucket.
    pub throttled: u64,
}

/// VNICs one [`vnic::Server::stats`] answers at most (a page stays well
/// inside one message with every drop reason counted).
pub const VNIC_STATS_MAX: usize = 6;

/// What [`vnic::Server::grant`] returns; the reply also carries the
/// badged netd endpoint that reaches exactly these VNICs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VnicGranted {
    /// Names the grant in `revoke` (the holder's badge).
    pub badge: u64,
    /// The VNICs made, in the order asked (what the holder's `vnics` lists).
    pub vnics: alloc::vec::Vec<u32>,
}

impl core::fmt::Display for VnicError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            VnicError::NoSuchVnic { vnic } => write!(f, "vnic: no VNIC {vnic} of this client"),
            VnicError::NoSuchHandle { handle } => write!(f, "vnic: handle {handle} is not attached"),
            VnicError::TooLarge { slots, max } => write!(f, "vnic: {slots} ring slots asked for, 0 to {max}"),
            VnicError::Setup { why } => write!(f, "vnic: cannot attach: {why}"),
            VnicError::NotPermitted => f.write_str("vnic: this client may not grant or revoke VNICs (control plane and init only)"),
            VnicError::Invalid { why } => write!(f, "vnic: {why}"),
            VnicError::GrantLive { badge } => write!(f, "vnic: grant {badge:#x} is live in this netd (nothing made again)"),
            VnicError::Exists { name } => write!(f, "vnic: a link named {name} exists"),
            VnicError::NotFound { name } => write!(f, "vnic: no link {name}"),
            VnicError::Busy { name, why } => write!(f, "vnic: {name} is in use: {why}"),
            VnicError::BadName { name, why } => write!(f, "vnic: {name:?} is not a link name: {why}"),
            VnicError::TooMany { what, limit } => write!(f, "vnic: netd holds {limit} {what} at most"),
        }
    }
}

impl core::error::Error for VnicError {}

crate::interface! {
    /// netd's VNICs for VMMs: a VMM attaches to a VNIC it was given (the
    /// boot configuration, later the control plane, names each VNIC's
    /// client by its endpoint's badge) and gets a frame-ring region
    /// ([`crate::framering`]) whose frame capability comes with the reply;
    /// frames move through it, IPC carries only the `kick` doorbell. Every
    /// call is checked against the caller's badge: another client's VNIC
    /// or handle looks as if it did not exist.
    pub interface vnic = 8 {
        /// The caller's VNICs, in netd's order.
        fn vnics() -> alloc::vec::Vec<VnicInfo>;
        /// Attaches VNIC `vnic` with rings of `slots` slots (0: netd's
        /// default): the VNIC joins its switch. Attaching a VNIC the caller
        /// attached before replaces that attachment (its handle goes stale).
        /// On Alcove the request may bring the caller's doorbell, a
        /// notification netd may signal (the signal right is enough):
        /// netd signals it when the ring has frames or room, and deletes
        /// its copy at detach; anything else brought is dropped.
        fn attach(vnic: u32, slots: u32) -> Result<AttachedVnic, VnicError>;
        /// The doorbell: netd moves what the caller's guest sent through
        /// the switch, then replies with how many frames it took.
        fn kick(handle: u32) -> Result<u32, VnicError>;
        /// Takes the VNIC off its switch; the handle is no longer valid.
        fn detach(handle: u32) -> Result<(), VnicError>;
        /// Admins only: makes one VNIC per line (a `netd.conf` `vnic` line
        /// without `client`: `switch=… mac=… [vlan_id=…] [ip=…] …`, at
        /// most [`VNIC_GRANT_MAX`]) for a new client, and returns (with the
        /// reply) a netd endpoint badged for it: its holder (a VMM) lists
        /// and attaches exactly these VNICs. Nothing is made if a line is
        /// bad, its switch unknown or its MAC taken on that switch and VLAN.
        fn grant(vnics: alloc::vec::Vec<String>) -> Result<VnicGranted, VnicError>;
        /// Admins only: ends grant `badge`: its VNICs are detached and
        /// deleted, its endpoint reaches nothing more. Returns how many
        /// VNICs went.
        fn revoke(badge: u64) -> Result<u32, VnicError>;
        /// Admins only (`dladm show-vnic`): every VNIC from number `from`
        /// on, at most [`VNIC_SHOW_MAX`] a call, with whether it is attached.
        fn show(from: u32) -> Result<alloc::vec::Vec<VnicInfo>, VnicError>;
        /// Additive, admins only: makes grant `badge` of an earlier netd
        /// (one init restarted) again, with the VNICs `vnics` (as
        /// [`vnic::Server::grant`]'s lines). No endpoint is minted: the
        /// holder's capability, badged `badge` by the earlier netd, still
        /// reaches netd's endpoint. A badge below the grant badges, one
        /// this netd made or holds ([`VnicError::GrantLive`]), or lines
        /// `grant` would refuse make nothing.
        fn regrant(badge: u64, vnics: alloc::vec::Vec<String>) -> Result<VnicGranted, VnicError>;
        /// Additive, admins only (`dladm show-link`, `show-etherstub`):
        /// netd's switches, in netd.conf's order (at most
        /// [`VNIC_SHOW_MAX`]).
        fn switches() -> Result<alloc::vec::Vec<SwitchInfo>, VnicError>;
        /// Additive, admins only (`dladm create-etherstub NAME`): a new
        /// etherstub (an internal switch) named `name`, a valid illumos
        /// link name no other link has; at most [`ETHERSTUBS_MAX`] made
        /// this way.
        fn create_etherstub(name: String) -> Result<(), VnicError>;
        /// Additive, admins only (`dladm delete-etherstub NAME`): refused
        /// ([`VnicError::Busy`]) while a VNIC is on it; a nic_tag is not an
        /// etherstub ([`VnicError::NotFound`]).
        fn delete_etherstub(name: String) -> Result<(), VnicError>;
        /// Additive, admins only (`dladm create-vnic -l LINK NAME`): a VNIC
        /// named `name` (a valid illumos link name, not `vnicN` or
        /// `vioifN`) from `line` (a `grant` line: `switch=… mac=…
        /// [vlan_id=…]`), attached by no one: an operator's link. At most
        /// [`OPERATOR_VNICS_MAX`]. Returns its number.
        fn create_vnic(name: String, line: String) -> Result<u32, VnicError>;
        /// Additive, admins only (`dladm delete-vnic NAME`): deletes an
        /// operator's VNIC; a VM's (`vnicN`, made by a grant) is refused
        /// ([`VnicError::Busy`]) while its grant lives.
        fn delete_vnic(name: String) -> Result<(), VnicError>;
        /// Additive, admins only: the operator-named VNICs from number
        /// `from` on (number, name), at most [`VNIC_SHOW_MAX`] a call.
        fn vnic_names(from: u32) -> Result<alloc::vec::Vec<(u32, String)>, VnicError>;
        /// Additive, admins only (`dlstat`): the counters of every VNIC
        /// from number `from` on (as [`vnic::Server::show`] lists them), at
        /// most [`VNIC_STATS_MAX`] a call.
        fn stats(from: u32) -> Result<alloc::vec::Vec<VnicStats>, VnicError>;
    }
}

/// Etherstubs [`vnic::Server::create_etherstub`] makes at most (besides
/// netd.conf's).
pub const ETHERSTUBS_MAX: u32 = 8;

/// VNICs [`vnic::Server::create_vnic`] makes at most.
pub const OPERATOR_VNICS_MAX: u32 = 32;

/// Bytes of start-up data (an instance's `vm.json`) one `proc.start` or
/// `proc.append_start_data` message carries at most.
pub const PROC_START_DATA_MAX: u32 = 2048;

/// Bytes of start-up data one instance starts with at most, in all: what
/// its starter staged with `proc.append_start_data` and `start`'s own.
/// init holds up to this much for each caller that may start instances
/// (its manifest entry has `spawns`), out of its fixed 512 KiB heap. 64 KiB
/// takes a cloud-init user-data as large as Azure's custom data (64 KiB;
/// EC2's user-data is 16 KiB) in a VM's `customer_metadata`; vmadm
/// refuses a VM whose `vm.json` would be larger when it is created.
pub const PROC_START_DATA_TOTAL_MAX: u32 = 64 * 1024;

/// Instances init runs for its `proc` callers at most, in all.
pub const PROC_INSTANCES_MAX: u32 = 32;

/// An instance's state as [`proc::Server::state`] reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProcState {
    /// Its threads run (or wait).
    Running,
    /// It ended with this exit code.
    #[allow(missing_docs)]
    Exited { code: u64 },
    /// It faulted (the CPU exception's vector).
    #[allow(missing_docs)]
    Faulted { vector: u64 },
}

/// What [`proc::Server::usage`] reports about the caller's instances.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcUsage {
    /// The caller's instances that exist (running or ended, not yet reaped
    /// by `stop`).
    pub instances: u32,
    /// Kernel memory their budgets take from the caller's `spawn_budget_kib`.
    pub budget_used_kib: u32,
    /// The caller's `spawn_budget_kib` (the manifest's).
    pub budget_limit_kib: u32,
    /// Kernel memory init itself holds now, in KiB (instances' processes
    /// are carved from it: it comes back when they are gone).
    pub init_used_kib: u64,
    /// init's ready round is over: every server was asked for its status
    /// and the servers on pool volumes have started (until then init may
    /// still make their grants and start them, and `init_used_kib` move).
    pub init_ready: bool,
}

/// Why init refused a `proc` request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProcError {
    /// The caller may not start instances of `template` (the manifest's
    /// `spawns` does not name it for this caller).
    #[allow(missing_docs)]
    NotPermitted { template: String },
    /// No server of the manifest is named `template`.
    #[allow(missing_docs)]
    UnknownTemplate { template: String },
    /// `what` is larger than init takes (`max`).
    #[allow(missing_docs)]
    TooLarge { what: String, max: u64 },
    /// The instance's budget does not fit in what is left of the caller's
    /// `spawn_budget_kib`.
    #[allow(missing_docs)]
    OutOfBudget { asked_kib: u32, left_kib: u32 },
    /// No instance of the caller's with that number (never started, or
    /// stopped already; another caller's look the same).
    #[allow(missing_docs)]
    NoSuchInstance { instance: u32 },
    /// Every instance slot is in use (`limit`).
    #[allow(missing_docs)]
    TooMany { limit: u32 },
    /// Building the process failed (`why`: what the kernel or the boot
    /// archive said).
    #[allow(missing_docs)]
    Start { why: String },
    /// `give` refused the capability for `name` (`why`: not a name an
    /// instance takes, no capability sent, or not of the kind it needs).
    #[allow(missing_docs)]
    BadCapability { name: String, why: String },
    /// `pci_claim` refused `function` (`why`: not a driver holding the
    /// configuration ports, no such function, another driver's, or more
    /// than [`PCI_CLAIMS_MAX`]).
    #[allow(missing_docs)]
    PciClaim { function: PciFunction, why: String },
    /// `append_start_data` refused the chunk (`why`: the caller starts no
    /// instances, its `offset` is not the bytes init holds, or init has no
    /// memory left for them); what the caller had staged is dropped.
    #[allow(missing_docs)]
    StartData { why: String },
}

/// A PCI function's address (bus, device < 32, function < 8).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct PciFunction {
    pub bus: u8,
    pub device: u8,
    pub function: u8,
}

impl core::fmt::Display for PciFunction {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{:02x}:{:02x}.{}", self.bus, self.device, self.function)
    }
}

/// PCI functions one driver may register through `proc.pci_claim` at most.
pub const PCI_CLAIMS_MAX: usize = 16;

/// The names [`proc::Server::give`] takes, and the kind of object each
/// must be: `netd` (an endpoint, a per-VM grant of netd's) and `control`
/// (a notification the instance waits on; zone-server keeps a copy to
/// signal it, bit [`VMM_CONTROL_POWER_BUTTON`]).
pub const PROC_GIVE_NAMES: [(&str, abi::ObjectType); 2] =
    [("netd", abi::ObjectType::Endpoint), ("control", abi::ObjectType::Notification)];

/// The badge of the endpoints init gives instance `id` of a `proc`
/// template (the servers of the manifest carry their index + 1, always
/// below this): each instance is a client of its own, so the console can
/// tell one VM's VMM from another's (`vmadm console`).
pub const fn proc_instance_badge(id: u32) -> u64 {
    (1 << 32) | id as u64
}

/// The bit of a VMM's `control` notification that presses its guest's ACPI
/// power button.
pub const VMM_CONTROL_POWER_BUTTON: u64 = 1;

/// The bit of a VMM's `control` notification that says netd was restarted
/// and the VMM's VNIC grant made again there (`vnic.regrant`): the VMM
/// attaches every NIC again (a guest that sends nothing would otherwise
/// never find out, as no `kick` of its fails).
pub const VMM_CONTROL_NETD_RESTARTED: u64 = 2;

/// The bit of a VMM's `control` notification that says the VM's metadata
/// changed at zone-server (`vmadm update` of `customer_metadata`,
/// `internal_metadata`, `tags` ... of the running VM): the VMM reads its
/// description again (`mdata.config`) and its metadata service answers
/// the new values, as SmartOS's does.
pub const VMM_CONTROL_METADATA: u64 = 4;

impl core::fmt::Display for ProcError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ProcError::NotPermitted { template } => write!(f, "proc: this client may not start \"{template}\" (manifest: spawns)"),
            ProcError::UnknownTemplate { template } => write!(f, "proc: no server \"{template}\" in the manifest"),
            ProcError::TooLarge { what, max } => write!(f, "proc: {what}: more than {max}"),
            ProcError::OutOfBudget { asked_kib, left_kib } => {
                write!(f, "proc: a budget of {asked_kib} KiB is more than the {left_kib} KiB left of spawn_budget_kib")
            }
            ProcError::NoSuchInstance { instance } => write!(f, "proc: no instance {instance} of this client"),
            ProcError::TooMany { limit } => write!(f, "proc: all {limit} instance slots are in use"),
            ProcError::Start { why } => write!(f, "proc: cannot start the instance: {why}"),
            ProcError::BadCapability { name, why } => write!(f, "proc: give \"{name}\": {why}"),
            ProcError::PciClaim { function, why } => write!(f, "proc: pci_claim {function}: {why}"),
            ProcError::StartData { why } => write!(f, "proc: append_start_data: {why}"),
        }
    }
}

impl core::error::Error for ProcError {}

crate::interface! {
    /// init's process service for the control plane: start another instance
    /// of a server the manifest declares (zone-server starts one
    /// `vmm-server` per VM), watch it, stop it. Only callers whose manifest
    /// entry names the template in `spawns` may start it; each instance's
    /// kernel memory comes out of the caller's `spawn_budget_kib`, and
    /// instances are the caller's alone (another caller's numbers look
    /// unknown).
    pub interface proc = 9 {
        /// Starts an instance of server `template` with the template's
        /// capabilities (its `calls`, badged as the template's, and its
        /// `files`; it serves nothing) plus, as the boot file `vm.json`,
        /// what the caller staged with `append_start_data` followed by
        /// `start_data` (at most [`PROC_START_DATA_MAX`] bytes; with the
        /// staged, at most [`PROC_START_DATA_TOTAL_MAX`]), and a budget of
        /// `budget_kib`. The staged bytes are used or, when the start
        /// fails, dropped, as `give`'s capabilities are. A capability sent with the request (an endpoint:
        /// a pool grant's) is its `storaged` endpoint; the template's own
        /// never is (without one it has no `storaged`).
        /// Returns the instance's number, never reused.
        fn start(template: String, start_data: alloc::vec::Vec<u8>, budget_kib: u32) -> Result<u32, ProcError>;
        /// The instance's state.
        fn state(instance: u32) -> Result<ProcState, ProcError>;
        /// Ends the instance (if it still runs) and frees it: its kernel
        /// memory comes back and its number is no longer valid. Returns
        /// its state before.
        fn stop(instance: u32) -> Result<ProcState, ProcError>;
        /// The caller's instances and budget.
        fn usage() -> ProcUsage;
        /// Keeps the capability sent with the request as the `name`
        /// capability of the caller's next `start` (one of
        /// [`PROC_GIVE_NAMES`], of the kind it names; giving a name again
        /// replaces the earlier one). `start` takes every one given, or,
        /// when it fails, drops them; an instance never gets the
        /// template's own endpoint for one of these names.
        fn give(name: String) -> Result<(), ProcError>;
        /// A driver registers `function`, whose bus mastering it turned
        /// on: when the driver ends, init clears that function's Bus
        /// Master Enable before restarting it (no IOMMU: a dead driver's
        /// device would go on writing into freed memory). Only a server
        /// holding the configuration ports may claim; a function is one
        /// driver's; at most [`PCI_CLAIMS_MAX`] per driver.
        fn pci_claim(function: PciFunction) -> Result<(), ProcError>;
        /// A copy of the `control` notification the caller gave for its
        /// instance `instance` (attached to the reply, with the right to
        /// signal it only): a restarted starter (zone-server) gets back
        /// what its earlier life held, to press the guest's power button.
        /// Another caller's instance is [`ProcError::NoSuchInstance`]; an
        /// instance started without one, or ended, is
        /// [`ProcError::BadCapability`].
        fn control(instance: u32) -> Result<(), ProcError>;
        /// Stages `chunk` (at most [`PROC_START_DATA_MAX`] bytes) for the
        /// caller's next `start`, after the bytes it staged before: a
        /// `vm.json` longer than one message crosses in pieces, the last
        /// one as `start`'s own `start_data`. `offset` is the bytes staged
        /// before this chunk as the caller counts them: 0 begins afresh
        /// (whatever an unfinished earlier staging left is dropped), any
        /// other value must be what init holds ([`ProcError::StartData`]
        /// otherwise). Returns the bytes staged. A chunk over
        /// [`PROC_START_DATA_MAX`], or a total over
        /// [`PROC_START_DATA_TOTAL_MAX`], is [`ProcError::TooLarge`]. The
        /// staging is the caller's alone (another caller's `start` never
        /// sees it); a refused chunk drops it, as does the caller's end,
        /// so init holds at most [`PROC_START_DATA_TOTAL_MAX`] for each
        /// caller whose manifest entry has `spawns` (only those may stage).
        fn append_start_data(offset: u32, chunk: alloc::vec::Vec<u8>) -> Result<u32, ProcError>;
    }
}

/// What a `vmadm` command printed and its exit code, as SmartOS's vmadm
/// would have (`stdout`, `stderr`, `code`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmadmOutput {
    #[allow(missing_docs)]
    pub stdout: String,
    #[allow(missing_docs)]
    pub stderr: String,
    /// 0 success, 1 failure, 2 usage.
    pub code: i32,
}

/// Bytes of arguments plus payload one `vmadm.run` takes at most.
pub const VMADM_REQUEST_MAX: u32 = 3072;

/// Bytes of one piece `vmadm.stage_stdin` takes at most.
pub const VMADM_STAGE_PIECE_MAX: u32 = 2048;

/// Bytes of payload (`stdin`) one command takes at most, staged in pieces
/// with `vmadm.stage_stdin` ([`vmadm_run_whole`] does it): a SmartOS
/// payload with a `user-script` of some KiB. The HTTP API takes bodies of
/// this size, and a VM's `vm.json` is bounded alike (vmadm refuses a
/// payload that would pass [`PROC_START_DATA_TOTAL_MAX`]).
pub const VMADM_STDIN_MAX: u32 = 64 * 1024;

/// Bytes of stdout plus stderr one `vmadm.run` or `vmadm.imgadm` reply
/// carries at most; a longer output is read with `vmadm.start` and
/// `vmadm.read` ([`vmadm_run_whole`]).
pub const VMADM_REPLY_MAX: u32 = 3584;

/// Bytes one `vmadm.read` reply carries at most.
pub const VMADM_CHUNK_BYTES: u32 = 3072;

/// What `vmadm.start` ran: its exit code and the length of its output,
/// kept for the caller to read with `vmadm.read` until its next `start`
/// or `run`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmadmStarted {
    #[allow(missing_docs)]
    pub stdout_bytes: u32,
    #[allow(missing_docs)]
    pub stderr_bytes: u32,
    /// 0 success, 1 failure, 2 usage.
    pub code: i32,
}

/// Which of a command's outputs `vmadm.read` reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum VmadmStream {
    #[allow(missing_docs)]
    Stdout,
    #[allow(missing_docs)]
    Stderr,
}

crate::interface! {
    /// zone-server's control plane: SmartOS's `vmadm` (create, validate,
    /// list, get, start, stop, delete, ...) with its arguments, output and
    /// exit codes; `stdin` is the payload `-f` would read (a payload goes
    /// in the message: at most [`VMADM_REQUEST_MAX`] bytes in all). Only the
    /// clients zone-server's arguments name (`vmadm-clients=`) may call it.
    pub interface vmadm = 10 {
        /// Runs `vmadm ARGS...`.
        fn run(args: alloc::vec::Vec<String>, stdin: String) -> VmadmOutput;
        /// Runs `imgadm ARGS...` (`list`, `show`, `get`, `delete`,
        /// `install -m - -f zones/VOLUME`): for `install`, `stdin` is the
        /// manifest's JSON and `-f` names a pool volume holding the image
        /// file (its first `files[0].size` bytes), which zone-server reads
        /// through a block ring, never through IPC messages.
        fn imgadm(args: alloc::vec::Vec<String>, stdin: String) -> VmadmOutput;
        /// Runs `program` (`"vmadm"` or `"imgadm"`) with `args` and
        /// `stdin` as `run` and `imgadm` do, and keeps its output for the
        /// caller, however long: its code and lengths.
        fn start(program: String, args: alloc::vec::Vec<String>, stdin: String) -> VmadmStarted;
        /// Up to [`VMADM_CHUNK_BYTES`] of the caller's last output from
        /// byte `offset` (empty past the end).
        fn read(stream: VmadmStream, offset: u32) -> alloc::vec::Vec<u8>;
        /// `vmadm console UUID` from the operator shell: checks the VM as
        /// vmadm does (unknown, not running: vmadm's message and exit
        /// code) and answers where its serial console's input goes (the
        /// badge its VMM's console capability carries, for `console.feed`).
        fn console(uuid: String) -> VmadmConsole;
        /// Starts `imgadm import [-q] UUID [-S URL]` (`args` is that argv,
        /// `import` first) for the caller, who
        /// then calls `import_step` until it is no longer `running`, to
        /// draw the download's progress as it goes (as imgadm draws its
        /// progress line on a terminal). One import at a time on the
        /// machine: while another client's is under way (stepped in the
        /// last [`IMPORT_STALE_SECS`]) this, `imgadm import` and `imgadm
        /// install` are refused (exit 1, saying so); the caller's own
        /// earlier import, or one left unstepped that long, is given up
        /// first (nothing of it installed).
        fn import_begin(args: alloc::vec::Vec<String>) -> VmadmImport;
        /// Reads and installs the next part of the caller's import (up to
        /// 1 MiB, less once the percentage changes): its progress, or its
        /// end. With no import of the caller's under way: exit 1, saying so.
        fn import_step() -> VmadmImport;
        /// Runs `program` with `args` and `stdin` as `start` does, except
        /// that a command that waits for a guest (`vmadm stop` without
        /// `-F`, `vmadm reboot`: the ACPI power button pressed, the VM
        /// `stopping`) only begins and answers `pending`: the caller then
        /// calls `step` until it is not, and reads the output with `read`.
        /// zone-server serves everyone else meanwhile; it ends the command
        /// itself (the guest powered off, or halted at `-t`'s deadline)
        /// whether or not anyone steps. A caller's earlier pending command
        /// is no longer its to wait for (the stop goes on).
        fn begin(program: String, args: alloc::vec::Vec<String>, stdin: String) -> VmadmStep;
        /// The caller's pending command: still `pending`, or its end (its
        /// output kept for `read`). Never waits. With none of the
        /// caller's under way: exit 1, saying so.
        fn step() -> VmadmStep;
        /// Stages `piece` (at most [`VMADM_STAGE_PIECE_MAX`] bytes) as the
        /// next part of the payload of the caller's next command (`run`,
        /// `imgadm`, `start` or `begin`), which reads the staged pieces
        /// followed by its own `stdin`: a payload larger than one message.
        /// `first` drops whatever the caller staged before (a client that
        /// restarted in the middle of a payload). Answers the bytes staged,
        /// or why not: a piece too large, or more than
        /// [`VMADM_STDIN_MAX`] in all; then the caller's staging is
        /// dropped. The next command takes it all, whatever it is.
        fn stage_stdin(piece: String, first: bool) -> Result<u32, String>;
    }
}

/// Where a command begun with `vmadm.begin` stands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmadmStep {
    /// It waits for the guest: call `vmadm.step` again (a little later).
    pub pending: bool,
    /// Once it is over: its exit code and the lengths of its output.
    pub stdout_bytes: u32,
    #[allow(missing_docs)]
    pub stderr_bytes: u32,
    /// 0 success, 1 failure, 2 usage.
    pub code: i32,
}

/// How long a client of `vmadm.begin` waits between two `vmadm.step`s.
pub const VMADM_STEP_PAUSE_MS: u64 = 100;

/// An import left unstepped this long is given up by the next client that
/// begins one.
pub const IMPORT_STALE_SECS: u64 = 60;

/// Where an import stepped with `vmadm.import_begin` and
/// `vmadm.import_step` stands.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmadmImport {
    /// The import goes on: call `import_step` again.
    pub running: bool,
    /// Bytes of the image file received so far.
    pub done_bytes: u64,
    /// Bytes of the image file in all (`files[0].size`).
    pub total_bytes: u64,
    /// imgadm's progress line as it stands (`Downloading image 1a9e0000
    /// [====>    ]  25%  ...`); empty with `-q` or before the first bytes.
    pub line: String,
    /// What to print: at `import_begin`, imgadm's `Importing ...` line;
    /// at the end, the rest of imgadm's output (`Imported image ...`).
    pub stdout: String,
    /// imgadm's error, at the end.
    pub stderr: String,
    /// imgadm's exit code at the end (0 while running).
    pub code: i32,
}

/// What `vmadm.console` found.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmadmConsole {
    /// 0 attached, 1 failure, 2 usage (`stderr` says why).
    pub code: i32,
    #[allow(missing_docs)]
    pub stderr: String,
    /// The VMM's console badge ([`proc_instance_badge`]); 0 on failure.
    pub target: u64,
    /// The VM's alias (empty when it has none).
    pub alias: String,
}

/// Runs `program ARGS` through `vmadm.begin` (and `vmadm.step`, calling
/// `pause` between two steps, while the command waits for a guest) and
/// reads its whole output with `vmadm.read`: what `run` answers, without
/// its length limit and for commands that wait as well.
///
/// A payload too large for one message with its arguments is staged first
/// (`vmadm.stage_stdin`, in pieces cut at character boundaries); one
/// zone-server refuses to stage is answered as vmadm's failure (exit 1,
/// zone-server's reason), nothing run.
pub fn vmadm_run_whole<T: crate::Transport>(
    client: &vmadm::Client<T>,
    program: &str,
    args: alloc::vec::Vec<String>,
    stdin: String,
    mut pause: impl FnMut(),
) -> Result<VmadmOutput, crate::IpcError> {
    // Room for the arguments, the program's name and the encoding.
    let room = (VMADM_REQUEST_MAX as usize).saturating_sub(args.iter().map(|a| a.len() + 8).sum::<usize>() + 64);
    let stdin = if stdin.len() > room {
        let mut first = true;
        let mut rest = stdin.as_str();
        while !rest.is_empty() {
            let mut cut = rest.len().min(VMADM_STAGE_PIECE_MAX as usize);
            while !rest.is_char_boundary(cut) {
                cut -= 1;
            }
            if let Err(why) = client.stage_stdin(rest[..cut].into(), first)? {
                return Ok(VmadmOutput { stdout: String::new(), stderr: alloc::format!("{program}: {why}\n"), code: 1 });
            }
            first = false;
            rest = &rest[cut..];
        }
        String::new()
    } else {
        stdin
    };
    let mut step = client.begin(program.into(), args, stdin)?;
    while step.pending {
        pause();
        step = client.step()?;
    }
    vmadm_read_whole(client, step)
}

/// The whole output of the command `step` (not pending) says is over,
/// through `vmadm.read`.
pub fn vmadm_read_whole<T: crate::Transport>(client: &vmadm::Client<T>, step: VmadmStep) -> Result<VmadmOutput, crate::IpcError> {
    let whole = |stream, len: u32| -> Result<String, crate::IpcError> {
        let mut bytes = alloc::vec::Vec::new();
        while bytes.len() < len as usize {
            let piece = client.read(stream, bytes.len() as u32)?;
            if piece.is_empty() {
                break; // another start replaced it: what there is
            }
            bytes.extend(piece);
        }
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    };
    let stdout = whole(VmadmStream::Stdout, step.stdout_bytes)?;
    let stderr = whole(VmadmStream::Stderr, step.stderr_bytes)?;
    Ok(VmadmOutput { stdout, stderr, code: step.code })
}

/// A manifest server's state as init sees it (`svcs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SvcState {
    /// Its process runs.
    Online,
    /// It ended and its restart policy allows no more restarts (or it
    /// could not be started).
    Maintenance,
    /// A template (`on_demand`): not started at boot, only through `proc`.
    OnDemand,
    /// Stopped by `svc.disable` (svcadm disable) and kept stopped until
    /// `svc.enable`.
    Disabled,
}

/// One manifest server, for [`svc::Client::services`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SvcInfo {
    /// The manifest's name.
    pub name: String,
    /// Running, ended for good, or a template.
    pub state: SvcState,
    /// Times init restarted it.
    pub restarts: u32,
    /// Its instances started through `proc` that are still held.
    pub instances: u32,
    /// When its running process was started, nanoseconds of the kernel's
    /// clock since boot (0: not running).
    pub started_ns: u64,
}

/// What init can tell of the machine (`sysinfo`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineInfo {
    /// CPUs online (the kernel accepts them as thread affinities).
    pub cpus: u32,
    /// Memory the kernel handed to init at boot: all that is free once
    /// the kernel and the boot archive are in place.
    pub memory_kib: u64,
    /// Servers in the manifest.
    pub servers: u32,
}

/// Why init refused a `svc` request of svcadm's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SvcError {
    /// No server of the manifest has that name (init itself is none).
    #[allow(missing_docs)]
    NoSuchService { name: String },
    /// The caller is not named in the server's `lifecycle-stop=` argument
    /// (the manifest's list of who may stop it).
    #[allow(missing_docs)]
    NotPermitted { name: String },
    /// The server cannot be stopped this way (`why`: a template, or the
    /// caller itself).
    #[allow(missing_docs)]
    Refused { name: String, why: String },
    /// init could not start it again (`why`: what the kernel or the boot
    /// archive said); it stays down.
    #[allow(missing_docs)]
    Start { name: String, why: String },
}

impl core::fmt::Display for SvcError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            SvcError::NoSuchService { name } => write!(f, "svc: no server \"{name}\" in the manifest"),
            SvcError::NotPermitted { name } => {
                write!(f, "svc: this client may not stop \"{name}\" (manifest: its lifecycle-stop=)")
            }
            SvcError::Refused { name, why } => write!(f, "svc: \"{name}\": {why}"),
            SvcError::Start { name, why } => write!(f, "svc: cannot start \"{name}\": {why}"),
        }
    }
}

impl core::error::Error for SvcError {}

crate::interface! {
    /// init's service view for operators (the console shell's `svcs` and
    /// `sysinfo`), served on init's `proc` endpoint to every caller of it:
    /// read-only; and, additive, svcadm's `restart`, `disable` and
    /// `enable`, for the callers a server's manifest entry names in its
    /// `lifecycle-stop=` argument (anyone else gets
    /// [`SvcError::NotPermitted`] and nothing changes).
    pub interface svc = 11 {
        /// The manifest's servers, in manifest order.
        fn services() -> alloc::vec::Vec<SvcInfo>;
        /// CPUs and memory.
        fn machine() -> MachineInfo;
        /// Ends server `name`'s process and starts it again (a disabled or
        /// spent one too); its restart policy is not charged.
        fn restart(name: String) -> Result<(), SvcError>;
        /// Ends server `name`'s process and keeps it down (`svcs`:
        /// disabled) until `enable`; nothing when it is disabled already.
        fn disable(name: String) -> Result<(), SvcError>;
        /// Starts a disabled (or spent: maintenance) server again; nothing
        /// when it runs.
        fn enable(name: String) -> Result<(), SvcError>;
    }
}

/// Bytes of a value one `mdata.change` carries at most; a longer one
/// comes in pieces (`continues`).
pub const MDATA_PIECE_MAX: u32 = 2048;

crate::interface! {
    /// zone-server's side of a VM's metadata service, for the VMMs it
    /// started (each calls with its instance's badge,
    /// [`proc_instance_badge`], so a VMM reaches its own VM's record and no
    /// other): what the guest changed with the metadata protocol's `PUT`
    /// and `DELETE` (`mdata-put`, `mdata-delete`), written back to the
    /// instance as `vmadm update` would (`customer_metadata`, or
    /// `internal_metadata` for `*_pw` keys and `operator-script`), so
    /// `vmadm get` shows it and the VM's next start has it. Anyone else
    /// finds no such interface.
    pub interface mdata = 12 {
        /// Sets `key` to `value` (removes it for `None`) in the VM's
        /// `internal_metadata` (`internal`) or `customer_metadata`. A value
        /// longer than [`MDATA_PIECE_MAX`] comes in pieces: each but the
        /// last with `continues`, the change made with the last. Refused,
        /// saying why (and the pieces so far dropped), when vmadm would
        /// refuse it: a key or value too long, too many keys, or a VM
        /// description past what a VMM is started with. Answers the bytes
        /// of the value taken so far.
        fn change(internal: bool, key: String, value: Option<String>, continues: bool) -> Result<u32, String>;
        /// The VM's description for its VMM (`vm.json`) as zone-server
        /// holds it now, [`MDATA_PIECE_MAX`] bytes from `offset` (empty
        /// at its end), read after [`VMM_CONTROL_METADATA`].
        fn config(offset: u32) -> Result<alloc::vec::Vec<u8>, String>;
    }
}
