//! storaged: disks, the copy-on-write pool, datasets and volumes.
//!
//! This is the server's logic as a library (host-testable, embeddable in
//! appliance builds with the in-process transport); `src/bin/storaged.rs` is
//! the thin process that finds the machine's disks and wires them and its
//! capabilities to this library.
//!
//! For now storaged serves each machine disk whole: a VMM calls
//! `storage.open(index)` ([`libipc::interfaces::storage`]) and gets a block
//! ring ([`libipc::blkring`]) whose frame comes with the reply; it posts
//! requests in the ring and calls `storage.kick(handle)`, and storaged
//! carries them out on the disk before it replies (synchronous doorbell).
//! The copy-on-write pool comes with a later issue; the ring stays.
//!
//! What the process provides is behind two traits: the disks
//! ([`libipc::blkring::BlockDevice`]: virtio-blk on Alcove, memory disks in
//! tests) and the rest of the platform ([`RingFactory`]): ring memory
//! (frames reached by volatile copies on Alcove, vectors in tests), the
//! private bounce buffer the disks' data goes through, and a watch on each
//! client (the process capability its `open` brings), so that the rings of
//! a client that ended are closed ([`Storaged::reclaim`]).
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod volume;

use alloc::string::String;
use alloc::vec::Vec;

use abi::CapSlot;
use libipc::blkring::{BlockDevice, DEFAULT_RING_PAGES, RingRegion, RingServer};
use libipc::cap::{Cap, Frame};
use libipc::interfaces::{DiskInfo, OpenedDisk, ServerStatus, StorageError, status, storage};
use libipc::{RemoteError, reply_caps};

pub const VERSION: u32 = 2;

/// Rings open at once, over all disks: bounds the memory a misbehaving
/// client can make storaged spend (each ring is [`DEFAULT_RING_PAGES`]).
pub const MAX_RINGS: usize = 8;

/// What storaged needs from the process it runs in: ring memory, a
/// private buffer for the disks' data, and a watch on each client.
pub trait RingFactory {
    /// A ring's memory as storaged reaches it: by copies, never by a
    /// reference (the client writes it whenever it likes).
    type Ring: RingRegion;
    /// A client storaged watches: it learns when the client ends.
    type Client;
    /// A new region of `pages` pages that the client can map: the region and
    /// the slot of the frame capability to hand over. `Err` says why not.
    fn create(&mut self, pages: usize) -> Result<(Self::Ring, CapSlot), String>;
    /// Gives a region back (storaged's mapping and capability go; the
    /// client's copy keeps the frame alive until it deletes it).
    fn destroy(&mut self, ring: Self::Ring);
    /// storaged's own buffer that the disks' data goes through (the DMA
    /// target; no client can map it): at least a sector, best the size of
    /// a ring's data area.
    fn bounce(&mut self) -> &mut [u8];
    /// The client that sent the request being answered, from now on
    /// watched (storaged hears of its end through
    /// [`libipc::Dispatch::notified`] with [`CLIENT_ENDED`]); `Err` says why
    /// not (on Alcove: the request brought no process capability).
    fn watch_caller(&mut self) -> Result<Self::Client, String>;
    /// Whether the client has ended.
    fn has_ended(&self, client: &Self::Client) -> bool;
    /// Stops watching a client (its rings are closed).
    fn release(&mut self, client: Self::Client);
}

/// The bit of storaged's notification that says a watched client ended
/// (bit 0 is the lifecycle's, see `alcove_rt::serve_forever_with`).
pub const CLIENT_ENDED: u64 = 1 << 1;

/// A disk storaged serves.
pub struct Disk<D> {
    info: DiskInfo,
    device: D,
}

impl<D: BlockDevice> Disk<D> {
    /// `device`, listed as `name`; asks the device for its serial.
    pub fn new(name: &str, mut device: D) -> Self {
        let serial = match device.id() {
            Ok(id) => String::from_utf8_lossy(&id).trim_end_matches('\0').trim().into(),
            Err(e) => {
                log::warn!("{name}: no serial ({e})");
                String::new()
            }
        };
        let info = DiskInfo {
            name: name.into(),
            serial,
            capacity_sectors: device.capacity_sectors(),
            read_only: device.read_only(),
        };
        Self { info, device }
    }

    /// What `storage.disks` reports about it.
    pub fn info(&self) -> &DiskInfo {
        &self.info
    }
}

struct OpenRing<R, C> {
    handle: u32,
    /// The badge of the client that opened it: only that client may kick
    /// or close it (handles are small numbers anyone can guess).
    owner: u64,
    disk: usize,
    server: RingServer,
    memory: R,
    client: C,
}

/// The server: its disks, its open rings, its `status`.
pub struct Storaged<D: BlockDevice, F: RingFactory> {
    service: alcove_rt::Service,
    disks: Vec<Disk<D>>,
    factory: F,
    rings: Vec<OpenRing<F::Ring, F::Client>>,
    next_handle: u32,
    /// The badge of the request being answered ([`Storaged::set_caller`]).
    caller: u64,
}

impl<D: BlockDevice, F: RingFactory> Storaged<D, F> {
    /// Serves `disks` (index order as given), with rings from `factory`.
    pub fn new(disks: Vec<Disk<D>>, factory: F) -> Self {
        Self {
            service: alcove_rt::Service::new("storaged", VERSION),
            disks,
            factory,
            rings: Vec::new(),
            next_handle: 1,
            caller: 0,
        }
    }

    /// The disks.
    pub fn disks(&self) -> &[Disk<D>] {
        &self.disks
    }

    /// Rings open now.
    pub fn open_rings(&self) -> usize {
        self.rings.len()
    }

    /// The requests that follow come from the client whose endpoint
    /// capability carries `badge` ([`libipc::Dispatch::dispatch_from`]
    /// sets it for each request; host tests that call the `storage` methods
    /// directly set it here). A ring is its opener's: another client's
    /// `kick` or `close` of it is refused as `NoSuchHandle`.
    pub fn set_caller(&mut self, badge: u64) {
        self.caller = badge;
    }

    /// The disk behind disk index `index` (tests look at what landed).
    pub fn device(&self, index: usize) -> Option<&D> {
        self.disks.get(index).map(|d| &d.device)
    }

    /// Ring `handle`'s memory as storaged sees it: for an in-process client
    /// (host tests, appliance builds) whose doorbell copies its view in and
    /// out around a kick.
    pub fn ring_memory(&mut self, handle: u32) -> Option<&mut F::Ring> {
        let i = self.rings.iter().position(|r| r.handle == handle)?;
        Some(&mut self.rings[i].memory)
    }

    /// Closes every ring whose client has ended and returns how many: a
    /// client that dies (a VMM's panic path runs no destructors) leaves no
    /// ring behind.
    pub fn reclaim(&mut self) -> usize {
        let mut closed = 0;
        let mut i = 0;
        while i < self.rings.len() {
            if self.factory.has_ended(&self.rings[i].client) {
                let ring = self.rings.swap_remove(i);
                let (done, failed) = ring.server.counts();
                log::info!("ring {} closed: its client ended ({done} requests done, {failed} failed)", ring.handle);
                self.drop_ring(ring);
                closed += 1;
            } else {
                i += 1;
            }
        }
        closed
    }

    fn drop_ring(&mut self, ring: OpenRing<F::Ring, F::Client>) {
        self.factory.destroy(ring.memory);
        self.factory.release(ring.client);
    }

    /// The caller's ring `handle`: a ring another client opened is, to
    /// this caller, not open (no hint that the handle exists).
    fn ring(&mut self, handle: u32) -> Result<usize, StorageError> {
        let caller = self.caller;
        self.rings
            .iter()
            .position(|r| r.handle == handle && r.owner == caller)
            .ok_or(StorageError::NoSuchHandle { handle })
    }
}

impl<D: BlockDevice, F: RingFactory> status::Server for Storaged<D, F> {
    fn status(&mut self) -> ServerStatus {
        self.service.status()
    }

    fn echo(&mut self, value: u64) -> u64 {
        self.service.echo(value)
    }
}

impl<D: BlockDevice, F: RingFactory> storage::Server for Storaged<D, F> {
    fn disks(&mut self) -> Vec<DiskInfo> {
        self.service.requests += 1;
        self.disks.iter().map(|d| d.info.clone()).collect()
    }

    fn open(&mut self, index: u32) -> Result<OpenedDisk, StorageError> {
        self.service.requests += 1;
        let disks = self.disks.len() as u32;
        let disk = self.disks.get(index as usize).ok_or(StorageError::NoSuchDisk { index, disks })?;
        let info = disk.info.clone();
        if self.rings.len() >= MAX_RINGS && self.reclaim() == 0 {
            return Err(StorageError::TooManyRings { limit: MAX_RINGS as u32 });
        }
        let client = self.factory.watch_caller().map_err(|why| StorageError::NoClientWatch { why })?;
        let (mut memory, slot) = match self.factory.create(DEFAULT_RING_PAGES) {
            Ok(made) => made,
            Err(why) => {
                log::warn!("open disk {index}: no ring: {why}");
                self.factory.release(client);
                return Err(StorageError::RingSetup { why });
            }
        };
        let fail = |this: &mut Self, memory, client, e: StorageError| {
            this.factory.destroy(memory);
            this.factory.release(client);
            Err(e)
        };
        let server = match RingServer::format(&mut memory, info.capacity_sectors, info.read_only) {
            Ok(s) => s,
            Err(e) => return fail(self, memory, client, e.into()),
        };
        if let Err(e) = reply_caps::attach(Cap::<Frame>::from_slot(slot)) {
            return fail(self, memory, client, StorageError::RingSetup { why: alloc::format!("{e}") });
        }
        let handle = self.next_handle;
        self.next_handle = self.next_handle.wrapping_add(1).max(1);
        self.rings.push(OpenRing { handle, owner: self.caller, disk: index as usize, server, memory, client });
        log::info!("{}: ring {handle} open ({} sectors)", info.name, info.capacity_sectors);
        Ok(OpenedDisk { handle, info, ring_pages: DEFAULT_RING_PAGES as u32 })
    }

    fn kick(&mut self, handle: u32) -> Result<u32, StorageError> {
        self.service.requests += 1;
        let i = self.ring(handle)?;
        let ring = &mut self.rings[i];
        let disk = &mut self.disks[ring.disk];
        ring.server.serve(&mut ring.memory, &mut disk.device, self.factory.bounce()).map_err(|e| {
            log::warn!("{}: ring {handle}: {e}", disk.info.name);
            e.into()
        })
    }

    fn close(&mut self, handle: u32) -> Result<(), StorageError> {
        self.service.requests += 1;
        let i = self.ring(handle)?;
        let ring = self.rings.swap_remove(i);
        let (done, failed) = ring.server.counts();
        log::info!("ring {handle} closed ({done} requests done, {failed} failed)");
        self.drop_ring(ring);
        Ok(())
    }
}

impl<D: BlockDevice, F: RingFactory> libipc::Dispatch for Storaged<D, F> {
    fn dispatch(&mut self, interface: u32, request: &[u8]) -> Result<Vec<u8>, RemoteError> {
        self.dispatch_from(0, interface, request)
    }

    fn dispatch_from(&mut self, badge: u64, interface: u32, request: &[u8]) -> Result<Vec<u8>, RemoteError> {
        self.set_caller(badge);
        match interface {
            status::ID => status::dispatch(self, interface, request),
            storage::ID => storage::dispatch(self, interface, request),
            _ => Err(RemoteError::WrongInterface),
        }
    }

    fn notified(&mut self, bits: u64) {
        if bits & CLIENT_ENDED != 0 {
            self.reclaim();
        }
    }
}

#[cfg(test)]
mod tests;
