//! storaged: disks, the copy-on-write pool, datasets and volumes.
//!
//! This is the server's logic as a library (host-testable, embeddable in
//! appliance builds with the in-process transport); `src/bin/storaged.rs` is
//! the thin process that finds the machine's disks and wires them and its
//! capabilities to this library.
//!
//! A VMM calls `storage.open(index)` ([`libipc::interfaces::storage`]) and
//! gets a block ring ([`libipc::blkring`]) whose frame comes with the reply;
//! it posts requests in the ring and calls `storage.kick(handle)`, and
//! storaged carries them out before it replies (synchronous doorbell).
//!
//! What `index` names depends on who calls, told by the badge of the
//! caller's endpoint capability ([`libipc::Dispatch::dispatch_from`]):
//! * a **grant**'s holder (a VMM the control plane started with a
//!   capability from `pool.grant`, badges from [`GRANT_BADGE_BASE`]) sees
//!   exactly the pool volumes the grant names, in order, and nothing else;
//!   a revoked grant sees nothing;
//! * a client init started from the manifest sees the machine disks that
//!   are not in the pool (whole, as before the pool).
//!
//! The pool ([`lifecycle`] imports or creates it at boot) is managed over
//! the `pool` interface ([`libipc::interfaces::pool`], module `pool_api`),
//! which answers only the admins: init (badge 0, the unbadged endpoint) and
//! the badges [`Storaged::set_admins`] names (the control plane). A ring
//! answers only the client that opened it.
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

pub mod lifecycle;
mod pool_api;
pub mod ramdisk;
pub mod volume;

use alloc::rc::Rc;
use alloc::string::String;
use alloc::vec::Vec;
use core::cell::RefCell;

use abi::CapSlot;
use libipc::blkring::{BlockDevice, DEFAULT_RING_PAGES, RingRegion, RingServer};
use libipc::cap::{Cap, Frame};
use libipc::interfaces::{DiskInfo, DiskReport, OpenedDisk, ServerStatus, StorageError, pool, status, storage};
use libipc::{RemoteError, reply_caps};

use volume::{MachineDisk, PoolVolume};

pub const VERSION: u32 = 3;

/// The pool storaged keeps on machine disks.
pub type MachinePool<D> = alcove_pool::Pool<MachineDisk<D>>;

/// Badges storaged mints for grants start here (init's badges are small:
/// a server's place in the manifest, plus one), so they never collide.
pub const GRANT_BADGE_BASE: u64 = 1 << 48;

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
    /// A copy of storaged's own endpoint capability carrying `badge`, for
    /// a grant (the reply hands it over): its slot. `Err` says why not.
    fn mint(&mut self, badge: u64) -> Result<CapSlot, String> {
        let _ = badge;
        Err("this platform hands out no capabilities".into())
    }
    /// Takes back a capability [`RingFactory::mint`] made, and what was
    /// copied from it where the platform can (a revoked grant).
    fn unmint(&mut self, slot: CapSlot) {
        let _ = slot;
    }
    /// Has storaged's serve loop call [`libipc::Dispatch::background`]
    /// once the reply to the request being answered is sent (on Alcove:
    /// signals storaged's bound notification with [`BACKGROUND`]).
    fn wake(&mut self) {}
}

/// The bound on the pool's open transaction group: a write past it commits
/// the group first (a FLUSH only writes the intent log), so a guest that never flushes
/// gets its writes committed in groups of this size. The data itself is
/// not held in memory (the pool writes it to fresh space at once); the
/// group holds a block pointer per block, bounded by
/// [`DIRTY_LIMIT_BLOCKS`]. Larger groups mean fewer commits (each rewrites
/// the tree paths, the MOS, the uberblocks and flushes twice), but more
/// acknowledged data that only the intent log names until the next commit
/// (session 19 tried 8 MiB: `linux/pool-damaged` then failed, README).
pub const DIRTY_LIMIT_BYTES: u64 = 4 << 20;

/// The open group's blocks at most: its memory in storaged's heap
/// (`alcove_rt::HEAP_BYTES`, 512 KiB) is about 100 bytes a block, whatever
/// the volume's block size (`tests/heap_bound.rs`).
pub const DIRTY_LIMIT_BLOCKS: u64 = 1024;

/// Indirect blocks (4 KiB each) storaged's pool keeps cached: a
/// sequential reader or writer needs one path (the tree's height, 2 or 3
/// blocks); this many serve several VMs' disks at once.
pub const META_CACHE_BLOCKS: usize = 24;

/// Bytes of every dataset's user properties together storaged's pool
/// holds (`Pool::set_user_props_limit`): they live in the MOS, held in
/// storaged's heap and encoded whole at each commit, so a few times this
/// must fit there. Enough for the control plane's instance records (at
/// most 8 KiB each, about 1.5 KiB as a rule: some hundreds of VMs) in the
/// heap storaged grows at start ([`HEAP_GROWTH_BYTES`]).
pub const USER_PROPS_LIMIT: usize = 512 * 1024;
/// The same with the fixed arena alone (the growth refused: a manifest
/// with too small a budget): a few dozen records.
pub const USER_PROPS_LIMIT_ARENA: usize = 48 * 1024;
/// Bytes storaged adds to its heap at start for the MOS's user
/// properties (charged to its budget: the manifests give it 7 MiB).
pub const HEAP_GROWTH_BYTES: usize = 2 << 20;
/// The bound [`configure`] sets: [`USER_PROPS_LIMIT`] once the heap grew.
pub static USER_PROPS_BOUND: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(USER_PROPS_LIMIT_ARENA);

/// What storaged sets on the pool it serves: the bounds of its open group
/// and of its metadata cache (its heap), and the clock its [`alcove_pool::vdev::Meter`]
/// reads (the TSC), and its wall clock.
pub fn configure<D: alcove_pool::Disk>(pool: &mut alcove_pool::Pool<D>) {
    pool.set_dirty_limit(Some(DIRTY_LIMIT_BYTES));
    pool.set_dirty_block_limit(Some(DIRTY_LIMIT_BLOCKS));
    pool.set_user_props_limit(Some(USER_PROPS_BOUND.load(core::sync::atomic::Ordering::Relaxed)));
    pool.set_meta_cache_blocks(META_CACHE_BLOCKS);
    pool.set_scrub_hold_limit(Some(SCRUB_HOLD_EXTENTS));
    pool.set_clock(Some(alcove_rt::rdtsc));
    // `creation` and the scan times: the kernel's clock (the RTC at boot).
    #[cfg(target_os = "none")]
    pool.set_wall_clock(|| libipc::sys::unix_seconds().unwrap_or(0));
}

/// The pool's [`alcove_pool::vdev::Meter`] as one log line: where its time
/// went since boot (`ticks_per_ms`: the clock's rate; 0 prints ticks).
pub fn meter_line(m: &alcove_pool::vdev::Meter, ticks_per_ms: u64) -> String {
    let t = |ticks: u64| match ticks_per_ms {
        0 => alloc::format!("{ticks} ticks"),
        r => alloc::format!("{} ms", ticks / r),
    };
    alloc::format!(
        "pool meter: {} commits in {}; checksums {} KiB in {}; compression {}; disk reads {} ({} KiB) in {}; \
         disk writes {} ({} KiB) in {}; flushes {} in {}; intent log {} FLUSHes in {} blocks; metadata cache {} hits, {} misses",
        m.commits,
        t(m.commit_ticks),
        m.checksum_bytes / 1024,
        t(m.checksum_ticks),
        t(m.compress_ticks),
        m.disk_reads,
        m.disk_read_bytes / 1024,
        t(m.disk_read_ticks),
        m.disk_writes,
        m.disk_write_bytes / 1024,
        t(m.disk_write_ticks),
        m.flushes,
        t(m.flush_ticks),
        m.log_flushes,
        m.log_blocks,
        m.meta_hits,
        m.meta_misses,
    )
}

/// The bit of storaged's notification that says a watched client ended
/// (bit 0 is the lifecycle's, see `alcove_rt::serve_forever_with`).
pub const CLIENT_ENDED: u64 = 1 << 1;
/// The notification bit [`RingFactory::wake`] signals: storaged has work
/// of its own (a scrub) to do between requests.
pub const BACKGROUND: u64 = 1 << 2;
/// The commit timer's bit on the serving thread's notification: the open
/// group may be due for its commit by time (see [`Storaged::set_commit_waker`]).
pub const COMMIT_TICK: u64 = 1 << 3;

/// Bytes of a scrub storaged walks between two looks for requests: a VM's
/// request waits at most this much scrubbing (every copy of it read and
/// checksummed).
pub const SCRUB_STEP_BYTES: u64 = 256 * 1024;
/// Extents a scrub may hold from reuse in storaged (frees made while it
/// runs, adjacent ones merged; an entry in its heap each): past this a
/// commit cancels the scrub rather than let its memory grow.
pub const SCRUB_HOLD_EXTENTS: usize = 1024;
/// Requests storaged answers at most while a scrub runs before it runs a
/// step of the scrub anyway (before the reply): clients that keep it busy
/// slow the scrub down, they do not stop it.
pub const SCRUB_STEP_EVERY_REQUESTS: u32 = 4;
/// After a step, storaged waits for requests as long as the step took
/// (at most this long) before the next: the scrub takes about half of a
/// CPU, whatever storaged's priority, and leaves the rest to others.
pub const SCRUB_PAUSE_MAX_NS: u64 = 20_000_000;

/// A disk storaged serves.
pub struct Disk<D> {
    info: DiskInfo,
    device: D,
}

impl<D: BlockDevice> Disk<D> {
    /// `device`, listed as `name`; asks the device for its serial.
    pub fn new(name: &str, mut device: D) -> Self {
        let serial = match device.id() {
            // virtio 1.2 §5.2.6: the ID ends at its first NUL when shorter
            // than 20 bytes; what follows is not the device's.
            Ok(id) => {
                let end = id.iter().position(|&b| b == 0).unwrap_or(id.len());
                String::from_utf8_lossy(&id[..end]).trim().into()
            }
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

/// What a ring carries requests to.
enum Backend<D: BlockDevice> {
    /// A whole machine disk (index in `Storaged::disks`).
    Disk(usize),
    /// A pool volume (or a snapshot, read-only).
    Volume(PoolVolume<MachineDisk<D>>),
}

struct OpenRing<R, C, D: BlockDevice> {
    handle: u32,
    /// The badge of the client that opened it: only that client may kick
    /// or close it (handles are small numbers anyone can guess).
    owner: u64,
    backend: Backend<D>,
    server: RingServer,
    memory: R,
    client: C,
    /// Kicks served, and the clock's ticks storaged spent serving them
    /// (0 without a clock): logged when the ring closes.
    kicks: u64,
    serve_ticks: u64,
}

/// A grant: the volumes one badge reaches.
struct Grant {
    badge: u64,
    volumes: Vec<String>,
    /// storaged's copy of the minted capability (revoked with the grant).
    slot: Option<CapSlot>,
}

/// Who the caller is, for `storage`.
enum Caller<'a> {
    /// A grant's holder: these volumes.
    Grant(&'a [String]),
    /// A grant badge whose grant was revoked (or never made): nothing.
    Revoked,
    /// A client init started: the machine disks outside the pool.
    Manifest,
}

/// The server: its disks, its pool, its open rings, its `status`.
pub struct Storaged<D: BlockDevice, F: RingFactory> {
    service: alcove_rt::Service,
    /// Machine disks outside the pool, served whole.
    disks: Vec<Disk<D>>,
    factory: F,
    rings: Vec<OpenRing<F::Ring, F::Client, D>>,
    next_handle: u32,
    /// The badge of the request being answered ([`Storaged::set_caller`]).
    caller: u64,
    pool: Option<Rc<RefCell<MachinePool<D>>>>,
    /// The machine disks in the pool, in the labels' order.
    pool_disks: Vec<String>,
    /// Disks left out at boot, and why.
    reports: Vec<DiskReport>,
    /// Badges besides 0 (init) that may use the pool interface.
    admins: Vec<u64>,
    grants: Vec<Grant>,
    next_grant: u64,
    streams: Vec<pool_api::Stream>,
    next_stream: u32,
    /// The pool meter's clock ticks per millisecond (0: unknown).
    ticks_per_ms: u64,
    /// The clock commit-by-time reads (the meter's, `ticks_per_ms`), and
    /// the timer it drives ([`alcove_pool::pool::TXG_TIMEOUT_MS`]).
    clock: Option<fn() -> u64>,
    commit_timer: alcove_pool::pool::CommitTimer,
    /// Told, after each look at the commit timer, in how many milliseconds
    /// the open group is due (`None`: nothing to commit), so that a timer
    /// can wake storaged then with [`COMMIT_TICK`] when no request comes.
    commit_waker: Option<fn(Option<u64>)>,
    /// The due time (the commit timer's clock) the waker was last told of.
    commit_told: Option<u64>,
    /// Requests answered since the scrub's last step.
    requests_since_step: u32,
}

impl<D: BlockDevice, F: RingFactory> Storaged<D, F> {
    /// Serves `disks` whole (index order as given), with rings from
    /// `factory`, and no pool.
    pub fn new(disks: Vec<Disk<D>>, factory: F) -> Self {
        Self {
            service: alcove_rt::Service::new("storaged", VERSION),
            disks,
            factory,
            rings: Vec::new(),
            next_handle: 1,
            caller: 0,
            pool: None,
            pool_disks: Vec::new(),
            reports: Vec::new(),
            admins: Vec::new(),
            grants: Vec::new(),
            next_grant: GRANT_BADGE_BASE,
            streams: Vec::new(),
            next_stream: 1,
            ticks_per_ms: 0,
            clock: None,
            commit_timer: alcove_pool::pool::CommitTimer::new(alcove_pool::pool::TXG_TIMEOUT_MS),
            commit_waker: None,
            commit_told: None,
            requests_since_step: 0,
        }
    }

    /// Serves what the boot found ([`lifecycle::bring_up`]): its pool, and
    /// the disks left out of it whole.
    pub fn from_boot(boot: lifecycle::Booted<D>, factory: F) -> Self {
        let mut s = Self::new(boot.free, factory);
        s.reports = boot.reports;
        if let Some(mut pool) = boot.pool {
            configure(&mut pool);
            s.pool = Some(Rc::new(RefCell::new(pool)));
            s.pool_disks = boot.pool_disks;
        }
        s
    }

    /// The rate of the pool meter's clock ([`configure`]: the TSC), for
    /// the meter line logged when a volume's ring closes.
    pub fn set_ticks_per_ms(&mut self, ticks_per_ms: u64) {
        self.ticks_per_ms = ticks_per_ms;
    }

    /// The clock (ticks at [`Storaged::set_ticks_per_ms`]'s rate) that
    /// commit-by-time reads: the TSC on Alcove, a fake one in tests. None,
    /// or an unknown rate: no commit by time.
    pub fn set_clock(&mut self, clock: Option<fn() -> u64>) {
        self.clock = clock;
    }

    /// The timer that wakes storaged when the open group is due and no
    /// request came meanwhile (on Alcove a thread that signals
    /// [`COMMIT_TICK`]): called after every look at the commit timer with
    /// the milliseconds until the group is due, or `None` when nothing
    /// waits, each time that changes (a group's first blocks, its commit).
    /// Without one, the group commits by time only at a request or
    /// notification that comes after it is due, as ZFS's txg would not: an
    /// idle pool kept its last writes in the intent log only and its
    /// `used` behind them.
    pub fn set_commit_waker(&mut self, waker: Option<fn(Option<u64>)>) {
        self.commit_waker = waker;
    }

    /// Commits the pool's open group if it has held blocks for
    /// [`alcove_pool::pool::TXG_TIMEOUT_MS`] (checked at every request and
    /// notification storaged handles, the commit timer's among them), then
    /// tells the commit waker when the next one is due.
    fn commit_by_time(&mut self) {
        let (Some(clock), Some(pool)) = (self.clock, &self.pool) else { return };
        if self.ticks_per_ms == 0 {
            return;
        }
        let now = clock() / self.ticks_per_ms;
        match self.commit_timer.tick(&mut pool.borrow_mut(), now) {
            Ok(true) => log::debug!("pool: open group committed by time"),
            Ok(false) => {}
            Err(e) => log::error!("pool: commit by time failed: {e}"),
        }
        let due = self.commit_timer.due();
        if let Some(wake) = self.commit_waker
            && due != self.commit_told
        {
            self.commit_told = due;
            wake(due.map(|due| due.saturating_sub(now)));
        }
    }

    /// A closing ring's kicks and the time storaged spent serving them:
    /// `N kicks served in T us` (microseconds of the meter's clock; under
    /// QEMU `-icount shift=0` thousands of instructions), or `N kicks` when
    /// the clock or its rate is unknown.
    fn served(&self, ring: &OpenRing<F::Ring, F::Client, D>) -> String {
        match (self.clock, self.ticks_per_ms) {
            (Some(_), r) if r > 0 => alloc::format!("{} kicks served in {} us", ring.kicks, ring.serve_ticks.saturating_mul(1000) / r),
            _ => alloc::format!("{} kicks", ring.kicks),
        }
    }

    /// Logs where the pool's time went (after a volume's ring closed: a VM
    /// stopped using it).
    fn log_meter(&self, backend: &Backend<D>) {
        if let (Backend::Volume(_), Some(pool)) = (backend, &self.pool) {
            log::info!("{}", meter_line(&pool.borrow().meter(), self.ticks_per_ms));
        }
    }

    /// Badges (besides init's 0) that may use the pool interface: the
    /// control plane's.
    pub fn set_admins(&mut self, badges: &[u64]) {
        self.admins = badges.to_vec();
    }

    /// The pool, if there is one (tests look at it).
    pub fn pool(&self) -> Option<core::cell::RefMut<'_, MachinePool<D>>> {
        self.pool.as_ref().map(|p| p.borrow_mut())
    }

    /// Disks left out of the pool at boot, and why.
    pub fn reports(&self) -> &[DiskReport] {
        &self.reports
    }

    fn is_admin(&self) -> bool {
        self.caller == 0 || self.admins.contains(&self.caller)
    }

    fn caller_kind(&self) -> Caller<'_> {
        match self.grants.iter().find(|g| g.badge == self.caller) {
            Some(g) => Caller::Grant(&g.volumes),
            None if self.caller >= GRANT_BADGE_BASE => Caller::Revoked,
            None => Caller::Manifest,
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

    /// Ring `handle`'s kicks served so far and the clock's ticks spent
    /// serving them (logged when it closes); None for no such ring.
    pub fn ring_service(&self, handle: u32) -> Option<(u64, u64)> {
        self.rings.iter().find(|r| r.handle == handle).map(|r| (r.kicks, r.serve_ticks))
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
                log::info!("ring {} closed: its client ended ({done} requests done, {failed} failed; {})", ring.handle, self.served(&ring));
                self.log_meter(&ring.backend);
                self.drop_ring(ring);
                closed += 1;
            } else {
                i += 1;
            }
        }
        closed
    }

    fn drop_ring(&mut self, ring: OpenRing<F::Ring, F::Client, D>) {
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
        match self.caller_kind() {
            Caller::Grant(volumes) => {
                let volumes = volumes.to_vec();
                volumes.iter().filter_map(|v| self.volume(v).ok()).map(|d| d.info.clone()).collect()
            }
            Caller::Revoked => Vec::new(),
            Caller::Manifest => self.disks.iter().map(|d| d.info.clone()).collect(),
        }
    }

    fn open(&mut self, index: u32) -> Result<OpenedDisk, StorageError> {
        self.service.requests += 1;
        let (backend, info) = match self.caller_kind() {
            Caller::Grant(volumes) => {
                let disks = volumes.len() as u32;
                let name = volumes.get(index as usize).ok_or(StorageError::NoSuchDisk { index, disks })?.clone();
                let disk = self.volume(&name)?;
                let info = disk.info.clone();
                (Backend::Volume(disk.device), info)
            }
            Caller::Revoked => return Err(StorageError::NoSuchDisk { index, disks: 0 }),
            Caller::Manifest => {
                let disks = self.disks.len() as u32;
                let disk = self.disks.get(index as usize).ok_or(StorageError::NoSuchDisk { index, disks })?;
                (Backend::Disk(index as usize), disk.info.clone())
            }
        };
        if self.rings.len() >= MAX_RINGS && self.reclaim() == 0 {
            return Err(StorageError::TooManyRings { limit: MAX_RINGS as u32 });
        }
        let client = self.factory.watch_caller().map_err(|why| StorageError::NoClientWatch { why })?;
        let (mut memory, slot) = match self.factory.create(DEFAULT_RING_PAGES) {
            Ok(made) => made,
            Err(why) => {
                log::warn!("open {}: no ring: {why}", info.name);
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
        self.rings.push(OpenRing { handle, owner: self.caller, backend, server, memory, client, kicks: 0, serve_ticks: 0 });
        log::info!("{}: ring {handle} open ({} sectors)", info.name, info.capacity_sectors);
        Ok(OpenedDisk { handle, info, ring_pages: DEFAULT_RING_PAGES as u32 })
    }

    fn kick(&mut self, handle: u32) -> Result<u32, StorageError> {
        self.service.requests += 1;
        let i = self.ring(handle)?;
        let t0 = self.clock.map(|c| c());
        let ring = &mut self.rings[i];
        let bounce = self.factory.bounce();
        let (result, name) = match &mut ring.backend {
            Backend::Disk(d) => {
                let disk = &mut self.disks[*d];
                (ring.server.serve(&mut ring.memory, &mut disk.device, bounce), disk.info.name.as_str())
            }
            Backend::Volume(v) => (ring.server.serve(&mut ring.memory, v, bounce), v.name()),
        };
        let result = result.map_err(|e| {
            log::warn!("{name}: ring {handle}: {e}");
            e.into()
        });
        ring.kicks += 1;
        if let (Some(c), Some(t0)) = (self.clock, t0) {
            ring.serve_ticks += c().saturating_sub(t0);
        }
        self.commit_by_time();
        result
    }

    fn close(&mut self, handle: u32) -> Result<(), StorageError> {
        self.service.requests += 1;
        let i = self.ring(handle)?;
        let ring = self.rings.swap_remove(i);
        let (done, failed) = ring.server.counts();
        log::info!("ring {handle} closed ({done} requests done, {failed} failed; {})", self.served(&ring));
        self.log_meter(&ring.backend);
        self.drop_ring(ring);
        Ok(())
    }
}

impl<D: BlockDevice, F: RingFactory> Storaged<D, F> {
    /// Pool volume `name` as a disk a ring can serve.
    fn volume(&self, name: &str) -> Result<Disk<PoolVolume<MachineDisk<D>>>, StorageError> {
        let pool = self.pool.as_ref().ok_or_else(|| StorageError::NoSuchVolume { name: name.into() })?;
        let v = PoolVolume::open(pool.clone(), name).map_err(|_| StorageError::NoSuchVolume { name: name.into() })?;
        Ok(Disk::new(name, v))
    }

    /// Whether the pool has a scrub under way.
    fn scrubbing(&self) -> bool {
        self.pool.as_ref().is_some_and(|p| p.borrow().scrub_progress().is_some())
    }

    /// Whether a grant or an open ring uses dataset `name` (or, for a
    /// volume, one of its snapshots).
    fn in_use(&self, name: &str) -> Option<String> {
        let hit = |v: &str| v == name || v.strip_prefix(name).is_some_and(|r| r.starts_with('@'));
        if let Some(g) = self.grants.iter().find(|g| g.volumes.iter().any(|v| hit(v))) {
            return Some(alloc::format!("{name}: granted to a VMM (grant {:#x}); revoke it first", g.badge));
        }
        self.rings.iter().find_map(|r| match &r.backend {
            Backend::Volume(v) if hit(v.name()) => Some(alloc::format!("{name}: a ring is open on it (ring {})", r.handle)),
            _ => None,
        })
    }
}

impl<D: BlockDevice, F: RingFactory> libipc::Dispatch for Storaged<D, F> {
    fn dispatch(&mut self, interface: u32, request: &[u8]) -> Result<Vec<u8>, RemoteError> {
        self.dispatch_from(0, interface, request)
    }

    fn dispatch_from(&mut self, badge: u64, interface: u32, request: &[u8]) -> Result<Vec<u8>, RemoteError> {
        self.set_caller(badge);
        let r = match interface {
            status::ID => status::dispatch(self, interface, request),
            storage::ID => storage::dispatch(self, interface, request),
            pool::ID => pool::dispatch(self, interface, request),
            _ => Err(RemoteError::WrongInterface),
        };
        self.commit_by_time();
        if self.scrubbing() {
            self.requests_since_step += 1;
            if self.requests_since_step >= SCRUB_STEP_EVERY_REQUESTS {
                let _ = libipc::Dispatch::background(self);
            }
            // The scrub's next step runs after the reply, unless another
            // request waits.
            self.factory.wake();
        }
        r
    }

    fn notified(&mut self, bits: u64) {
        if bits & CLIENT_ENDED != 0 {
            self.reclaim();
        }
        self.commit_by_time();
    }

    /// One step of the scrub under way ([`SCRUB_STEP_BYTES`]); the pause
    /// after it is as long as it took ([`SCRUB_PAUSE_MAX_NS`] at most; 0
    /// without a clock).
    fn background(&mut self) -> Option<u64> {
        self.requests_since_step = 0;
        let pool = self.pool.as_ref()?;
        let mut p = pool.borrow_mut();
        p.scrub_progress()?;
        let t0 = self.clock.map(|c| c());
        match p.scrub_step(SCRUB_STEP_BYTES) {
            Ok(None) => {
                let took = match (self.clock, t0) {
                    (Some(c), Some(t0)) if self.ticks_per_ms > 0 => c().saturating_sub(t0).saturating_mul(1_000_000) / self.ticks_per_ms,
                    _ => 0,
                };
                Some(took.min(SCRUB_PAUSE_MAX_NS))
            }
            Ok(Some(r)) => {
                pool_api::log_scrub(&pool_api::scrub_report(&r, p.child_stats(), p.state()));
                None
            }
            Err(e) => {
                log::error!("pool: scrub ended: {e}");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod pool_tests;
