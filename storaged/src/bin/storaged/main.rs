//! The storaged process: maps the PCI windows and enables the configuration
//! ports init granted, finds the machine's virtio-blk disks, and serves
//! `status` and `storage` on its endpoint (the logic is the library's),
//! brings the pool up on them (`storaged::lifecycle`) and serves `pool`.
#![cfg_attr(target_os = "none", no_std, no_main)]
#![forbid(unsafe_code)]

#[cfg(target_os = "none")]
extern crate alloc;

#[cfg(target_os = "none")]
mod disks;
#[cfg(target_os = "none")]
use alcove_hal::dma;

#[cfg(target_os = "none")]
mod rings {
    //! Rings in frames the client maps too (reached by opaque copies),
    //! the disks' data through one private DMA frame, and clients watched
    //! through the process capability each `open` brings.
    use abi::{CapSlot, ProcessState};
    use alloc::format;
    use alloc::string::String;
    use libipc::blkring::RingRegion;
    use libipc::{request_caps, sys};

    use crate::dma::{self, SharedFrame};

    pub struct DmaRings {
        /// The bounce buffer: a ring's data area (16 pages), storaged's own.
        bounce: &'static mut [u8],
        /// The notification that hears of clients' ends.
        notify: CapSlot,
        /// storaged's endpoint, which grants' capabilities are minted from.
        endpoint: CapSlot,
    }

    impl DmaRings {
        /// Rings whose clients' ends signal [`storaged::CLIENT_ENDED`] on
        /// `notify`; offers the first slot for a client's capability.
        pub fn new(notify: CapSlot, endpoint: CapSlot) -> Result<Self, String> {
            let pages = libipc::blkring::DEFAULT_RING_PAGES - 1;
            let bounce = dma::alloc_private(pages).map_err(|e| format!("bounce frame of {pages} pages: {e}"))?;
            request_caps::offer(dma::take_slot());
            Ok(Self { bounce, notify, endpoint })
        }
    }

    pub struct DmaRing(SharedFrame);

    impl RingRegion for DmaRing {
        fn len(&self) -> usize {
            self.0.len()
        }
        fn read(&self, offset: usize, buf: &mut [u8]) {
            self.0.read(offset, buf)
        }
        fn write(&mut self, offset: usize, data: &[u8]) {
            self.0.write(offset, data)
        }
    }

    /// A client: the process capability its `open` brought.
    pub struct Client(CapSlot);

    impl storaged::RingFactory for DmaRings {
        type Ring = DmaRing;
        type Client = Client;

        fn create(&mut self, pages: usize) -> Result<(DmaRing, CapSlot), String> {
            let frame = dma::alloc_shared(pages).map_err(|e| format!("frame of {pages} pages: {e}"))?;
            let slot = frame.slot();
            Ok((DmaRing(frame), slot))
        }

        fn destroy(&mut self, ring: DmaRing) {
            dma::free_shared(ring.0);
        }

        fn bounce(&mut self) -> &mut [u8] {
            self.bounce
        }

        fn watch_caller(&mut self) -> Result<Client, String> {
            let slot = request_caps::take().ok_or_else(|| String::from("the request brought no capability"))?;
            // Offer another slot for the next request's capability.
            request_caps::offer(dma::take_slot());
            match sys::process_watch(slot, self.notify, storaged::CLIENT_ENDED) {
                Ok(()) => Ok(Client(slot)),
                Err(e) => {
                    let _ = sys::cap_delete(slot);
                    dma::give_slot(slot);
                    Err(format!("cannot watch the capability it brought: {e}"))
                }
            }
        }

        fn has_ended(&self, client: &Client) -> bool {
            !matches!(sys::process_info(client.0), Ok(info) if info.state == ProcessState::Running)
        }

        fn release(&mut self, client: Client) {
            let _ = sys::cap_delete(client.0);
            dma::give_slot(client.0);
        }

        fn mint(&mut self, badge: u64) -> Result<CapSlot, String> {
            let slot = dma::take_slot();
            match sys::cap_copy(self.endpoint, slot, abi::Rights::SEND | abi::Rights::GRANT, badge) {
                Ok(()) => Ok(slot),
                Err(e) => {
                    dma::give_slot(slot);
                    Err(format!("badged copy of storaged's endpoint: {e}"))
                }
            }
        }

        fn wake(&mut self) {
            let _ = sys::signal(self.notify, storaged::BACKGROUND);
        }

        fn unmint(&mut self, slot: CapSlot) {
            // The holder's copy came from this one: revoke takes it too.
            let _ = sys::cap_revoke(slot);
            let _ = sys::cap_delete(slot);
            dma::give_slot(slot);
        }
    }
}

#[cfg(target_os = "none")]
fn main(start: alcove_rt::Start) -> u64 {
    let info = start.server("storaged");
    // Room for the pool's user properties (the control plane's instance
    // records) in the MOS, beside the fixed arena; without it the pool
    // holds fewer (`storaged::USER_PROPS_LIMIT_ARENA`).
    match alcove_rt::grow_heap(storaged::HEAP_GROWTH_BYTES) {
        Ok(()) => storaged::USER_PROPS_BOUND.store(storaged::USER_PROPS_LIMIT, core::sync::atomic::Ordering::Relaxed),
        Err(e) => log::warn!(
            "cannot grow the heap by {} KiB ({e}): the pool holds {} KiB of user properties",
            storaged::HEAP_GROWTH_BYTES / 1024,
            storaged::USER_PROPS_LIMIT_ARENA / 1024
        ),
    }
    let Some(slot) = info.serves("storaged") else {
        log::error!("no \"storaged\" endpoint was granted");
        return 1;
    };
    let pci_ports = info.ioports.iter().find(|&&(first, count, _)| first <= 0xcf8 && u32::from(first) + u32::from(count) >= 0xd00);
    let mut found = alloc::vec::Vec::new();
    match pci_ports {
        None => log::info!("no PCI configuration ports (0xcf8..0xcff) granted: serving no disks"),
        Some(&(_, _, ports)) => {
            match libipc::sys::io_port_enable(ports) {
                Ok(()) => found = disks::find(&info.device_memory, info.device_memory_root, info.calls("proc")),
                Err(e) => log::error!("PCI configuration ports: cannot enable: {e}"),
            }
        }
    }
    let mut disks: alloc::vec::Vec<_> =
        found.into_iter().map(|(name, disk)| storaged::Disk::new(&name, disks::MachineBlk::Virtio(alloc::boxed::Box::new(disk)))).collect();
    // RAM disks over boot files (`ramdisk=NAME`): after the machine's own.
    match storaged::ramdisk::RamDiskPlan::parse(&info.args) {
        Ok(None) => {}
        Ok(Some(plan)) => {
            for (name, disk) in disks::ram_disks(&info.files, &plan) {
                disks.push(storaged::Disk::new(&name, disks::MachineBlk::Ram(disk)));
            }
        }
        Err(e) => log::error!("RAM disk configuration: {e}; serving no RAM disk"),
    }
    // The pool: imported from the disks' labels, or created as the
    // arguments say on blank disks; every other disk reported.
    let plan = storaged::lifecycle::parse_args(&info.args).unwrap_or_else(|e| {
        log::error!("pool configuration: {e}; creating no pool");
        None
    });
    let guid = alcove_rt::rdtsc() ^ alcove_rt::clock_ns().rotate_left(32) ^ 0xa1c0_7e00_0000_0000;
    let booted = storaged::lifecycle::bring_up(disks, plan.as_ref(), guid);
    // Test manifests only (storage.toml): the driver dies once, with its
    // disks' bus mastering on, right after it created its pool; restarted,
    // it imports the pool and serves. The storage case checks that init
    // cleared the dead driver's bus mastering and the restarted one works.
    if booted.created && info.args.iter().any(|a| a == "test-exit-after-create") {
        log::warn!("test-exit-after-create: exiting with the pool created and the disks enabled");
        return 3;
    }
    // The notification `serve_forever_with` binds (bit 0 its lifecycle's)
    // also hears of clients' ends.
    let notify = alcove_rt::start::SLOT_NOTIFY;
    let rings = match rings::DmaRings::new(notify, slot) {
        Ok(r) => r,
        Err(e) => {
            log::error!("{e}");
            return 1;
        }
    };
    let mut server = storaged::Storaged::from_boot(booted, rings);
    // The pool meter reads the TSC: its rate turns ticks into milliseconds.
    server.set_ticks_per_ms(libipc::sys::tsc_khz().unwrap_or(0));
    server.set_clock(Some(alcove_rt::rdtsc));
    // The open group commits by time even when no request comes (ZFS's
    // txg timeout): a thread wakes the serving thread when it is due.
    match commit_timer::start(notify) {
        Ok(()) => server.set_commit_waker(Some(commit_timer::set)),
        Err(e) => log::error!("commit timer: {e}; the open group commits by time only at requests"),
    }
    let admins = storaged::lifecycle::admin_names(&info.args);
    let badges: alloc::vec::Vec<u64> = info
        .clients
        .iter()
        .filter(|(ep, name, _)| ep == "storaged" && admins.contains(name))
        .map(|&(_, _, badge)| badge)
        .collect();
    server.set_admins(&badges);
    log::info!(
        "serving {} disk(s) whole; pool {}; {} pool admin(s) besides init",
        server.disks().len(),
        if server.pool().is_some() { "up" } else { "none" },
        badges.len()
    );
    alcove_rt::serve_forever(slot, server)
}

#[cfg(target_os = "none")]
mod commit_timer {
    //! A thread that signals [`storaged::COMMIT_TICK`] on the serving
    //! thread's notification when the pool's open group is due for its
    //! commit by time (`Storaged::set_commit_waker`), so an idle pool
    //! commits its last writes within the timeout, as ZFS's txg sync does.
    use abi::CapSlot;
    use core::sync::atomic::{AtomicU64, Ordering};
    use libipc::sys;

    /// When the group is due (ns on `clock_ns`; MAX: nothing due).
    static DUE_AT: AtomicU64 = AtomicU64::new(u64::MAX);
    /// The thread's own notification (its slot; MAX before `start`).
    static TICK: AtomicU64 = AtomicU64::new(u64::MAX);
    const STACK_VA: u64 = 0x50_0000_0000;
    const STACK_PAGES: u64 = 2;

    /// Starts the thread; `main` is the serving thread's bound
    /// notification. Its slots come from the DMA slot pool.
    pub fn start(main: CapSlot) -> Result<(), abi::Error> {
        let tick = crate::dma::take_slot();
        sys::create(abi::ObjectType::Notification, tick, 0)?;
        let slots = alcove_rt::ThreadSlots {
            thread: crate::dma::take_slot(),
            stack: crate::dma::take_slot(),
            ipc: crate::dma::take_slot(),
        };
        let t = alcove_rt::Thread::spawn(slots, STACK_VA, STACK_PAGES, run, u64::from(tick), u64::from(main))?;
        // It runs as long as the process.
        core::mem::forget(t);
        TICK.store(u64::from(tick), Ordering::Release);
        Ok(())
    }

    /// The commit waker: the group is due in `due_in_ms` (None: nothing
    /// is); told once when a group gets its first blocks and once when it
    /// commits. Wakes the thread when that is earlier than what it sleeps
    /// towards.
    pub fn set(due_in_ms: Option<u64>) {
        let at = due_in_ms.map_or(u64::MAX, |ms| alcove_rt::clock_ns().saturating_add(ms.saturating_add(1).saturating_mul(1_000_000)));
        let old = DUE_AT.swap(at, Ordering::AcqRel);
        let tick = TICK.load(Ordering::Acquire);
        if at < old && tick != u64::MAX {
            let _ = sys::signal(tick as CapSlot, 1);
        }
    }

    extern "C" fn run(_ipc: u64, tick: u64, main: u64) -> ! {
        let (tick, main) = (tick as CapSlot, main as CapSlot);
        loop {
            let at = DUE_AT.load(Ordering::Acquire);
            let now = alcove_rt::clock_ns();
            if at != u64::MAX && at <= now {
                // Taken: the server tells the next deadline after the tick.
                if DUE_AT.compare_exchange(at, u64::MAX, Ordering::AcqRel, Ordering::Acquire).is_ok() {
                    let _ = sys::signal(main, storaged::COMMIT_TICK);
                }
                continue;
            }
            let sleep = if at == u64::MAX { abi::FOREVER } else { at - now };
            let _ = sys::wait(tick, sleep);
        }
    }
}

#[cfg(target_os = "none")]
alcove_rt::entry!(main);

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("storaged runs only on Alcove (build it for x86_64-unknown-none)");
}
