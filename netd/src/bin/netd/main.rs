//! The netd process: reads its boot configuration (`netd.conf`, the
//! switches, VNICs and host address: `netd::vnics::NetConfig`), then
//! serves `status`, `vnic` and `socket` on its endpoint (the logic is the
//! library's `netd::host::Netd`). Each VNIC's ring region is a frame netd
//! makes and maps, whose capability goes to the VMM with the `attach`
//! reply. A `socket.share_buffer` request brings a frame of the
//! client's, which netd maps in the same places (1 MiB at most) as the
//! client's shared buffer. A VMM's `attach` brings its doorbell, a notification netd may
//! only signal: netd rings it when the VNIC's ring got frames or room
//! (the VMM still polls its rings on its timer as well).
//!
//! The machine's NICs ([`nic`]: virtio-net on PCI bus 0, with `dma` the
//! memory they reach) are found at start when netd.conf makes one a
//! nic_tag's uplink (`nic` lines; NIC 0 serves `admin` by default). The
//! PCI configuration ports are storaged's too: netd asks storaged for its
//! status first, which storaged answers only after its own look at the
//! bus. A NIC's receive interrupt (MSI-X) sets bit 2 of the serving
//! thread's notification; netd then drains the NIC into its switch
//! ([`netd::host::Netd::nic_input`]). A NIC whose receive interrupt
//! cannot be had (no MSI-X capability, as QEMU's `vectors=0`; no IRQ
//! capability in the manifest; a device refusing the vector) is used all
//! the same and polled on netd's timer instead ([`NicPoll`]: every 1 ms
//! while frames come, backing off to every 50 ms when idle). Frames for a
//! nic_tag with no NIC are counted and dropped.
//!
//! netd's own doorbell, the other way: a notification ([`doorbell`]) of
//! which every VMM gets a copy it may only signal with its `attach` reply,
//! rung when it put frames into a ring. A thread of netd's waits on it and
//! passes each ring on as bit 16 of the serving thread's notification,
//! whatever bits the VMM set (a VMM cannot set the serving thread's other
//! bits); netd then polls every ring (`Netd::tick`). Unlike a `kick` call
//! it never blocks the VMM's thread (see `VnicPlatform::netd_doorbell`).
//!
//! A second thread is netd's timer: it sleeps until the time the server
//! last asked for (`Netd::wake_at_ns`: the host stack's retransmits and
//! ARP, a VNIC waiting for its bandwidth bucket), or for ever when nothing
//! waits, then signals bit 1 of the serving thread's notification, which
//! runs `Netd::tick`.
#![cfg_attr(target_os = "none", no_std, no_main)]
#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

#[cfg(target_os = "none")]
extern crate alloc;

#[cfg(target_os = "none")]
use alcove_hal::dma;
#[cfg(target_os = "none")]
mod nic;

#[cfg(target_os = "none")]
mod frames {
    //! Ring regions: frames netd creates, maps at a slot of its own
    //! address space and reaches by volatile copies.
    use abi::{CapSlot, ObjectType, Rights};
    use alloc::collections::BTreeMap;
    use alloc::format;
    use alloc::string::String;
    use alloc::vec::Vec;
    use alcove_rt::SharedMemory;
    use libipc::blkring::RingRegion;
    use libipc::interfaces::SocketError;
    use libipc::sys;

    /// Where regions are mapped, one slot of 1 MiB each (the largest
    /// region, 224 slots a ring, is 900 KiB).
    const REGION_VA: u64 = 0x40_0000_0000;
    const REGION_STRIDE: u64 = 0x10_0000;
    const MAX_REGIONS: u64 = 1024;
    /// The bit netd sets on a VMM's doorbell.
    const DOORBELL_BIT: u64 = 2;

    pub struct Region {
        mem: SharedMemory,
        slot: CapSlot,
        index: u64,
    }

    impl RingRegion for Region {
        fn len(&self) -> usize {
            RingRegion::len(&self.mem)
        }
        fn read(&self, offset: usize, buf: &mut [u8]) {
            RingRegion::read(&self.mem, offset, buf)
        }
        fn write(&mut self, offset: usize, data: &[u8]) {
            RingRegion::write(&mut self.mem, offset, data)
        }
    }

    pub struct Frames {
        free_places: Vec<u64>,
        next_place: u64,
        /// Frames for a nic_tag with no NIC, dropped.
        pub uplink_dropped: u64,
        /// The machine's NICs, each a nic_tag's uplink.
        pub nics: Vec<crate::nic::Nic>,
        /// The NIC [`netd::vnics::VnicPlatform::receive`] looks at first.
        next_nic: usize,
        /// Each attached VNIC's doorbell: a notification of its VMM's
        /// (signal right only), brought with `attach`.
        doorbells: BTreeMap<(u64, u32), CapSlot>,
        /// netd's endpoint, which `vnic.grant`'s badged copies are made from.
        pub endpoint: Option<CapSlot>,
        /// netd's doorbell with the signal right only, a copy of which goes
        /// with every `attach` reply (see [`crate::doorbell`]).
        pub doorbell: Option<CapSlot>,
    }

    impl Frames {
        pub const fn new() -> Self {
            Self {
                free_places: Vec::new(),
                next_place: 0,
                uplink_dropped: 0,
                nics: Vec::new(),
                next_nic: 0,
                doorbells: BTreeMap::new(),
                endpoint: None,
                doorbell: None,
            }
        }

        /// A free place to map a region at, if any is left.
        fn place(&mut self) -> Option<u64> {
            match self.free_places.pop() {
                Some(i) => Some(i),
                None if self.next_place < MAX_REGIONS => {
                    self.next_place += 1;
                    Some(self.next_place - 1)
                }
                None => None,
            }
        }

        /// Offers a slot for the capability the next request may bring
        /// (a VMM's doorbell with `attach`).
        pub fn offer_slot(&mut self) {
            libipc::request_caps::offer(crate::dma::take_slot());
        }

        /// A capability slot nothing uses (for the timer thread's objects).
        pub fn fresh_slot(&mut self) -> CapSlot {
            crate::dma::take_slot()
        }

        fn free_slot(&mut self, slot: CapSlot) {
            crate::dma::give_slot(slot);
        }
    }

    impl netd::vnics::VnicPlatform for Frames {
        type Region = Region;

        fn create(&mut self, pages: usize) -> Result<(Region, CapSlot), String> {
            if pages as u64 * 4096 > REGION_STRIDE {
                return Err(format!("a region of {pages} pages does not fit its place"));
            }
            let index = self.place().ok_or_else(|| format!("all {MAX_REGIONS} region places are in use"))?;
            let slot = crate::dma::take_slot();
            let made = sys::create(ObjectType::Frame, slot, pages as u64)
                .map_err(|e| format!("frame of {pages} pages: {e}"))
                .and_then(|()| {
                    SharedMemory::map_frame(slot, REGION_VA + index * REGION_STRIDE, pages as u64).map_err(|e| {
                        let _ = sys::cap_delete(slot);
                        format!("map a frame of {pages} pages: {e}")
                    })
                });
            match made {
                Ok(mem) => Ok((Region { mem, slot, index }, slot)),
                Err(e) => {
                    self.free_slot(slot);
                    self.free_places.push(index);
                    Err(e)
                }
            }
        }

        fn destroy(&mut self, region: Region) {
            let Region { mem, slot, index } = region;
            // Unmapped first (the last handle's drop), then the capability
            // goes; the VMM's copy keeps the frame alive until it deletes it.
            drop(mem);
            let _ = sys::cap_delete(slot);
            self.free_slot(slot);
            self.free_places.push(index);
        }

        fn mint(&mut self, badge: u64) -> Result<CapSlot, String> {
            let endpoint = self.endpoint.ok_or_else(|| String::from("netd serves no endpoint to copy"))?;
            let slot = crate::dma::take_slot();
            match sys::cap_copy(endpoint, slot, Rights::SEND | Rights::GRANT, badge) {
                Ok(()) => Ok(slot),
                Err(e) => {
                    self.free_slot(slot);
                    Err(format!("badged copy of netd's endpoint: {e}"))
                }
            }
        }

        fn unmint(&mut self, slot: CapSlot) {
            // The holder's copy came from this one: revoke takes it too.
            let _ = sys::cap_revoke(slot);
            let _ = sys::cap_delete(slot);
            self.free_slot(slot);
        }

        fn signal(&mut self, client: u64, vnic: u32) {
            if let Some(&slot) = self.doorbells.get(&(client, vnic)) {
                let _ = sys::signal(slot, DOORBELL_BIT);
            }
        }

        fn doorbell(&mut self, client: u64, vnic: u32) {
            let Some(slot) = libipc::request_caps::take() else { return };
            self.offer_slot();
            // Only a notification this VMM may signal is kept; anything
            // else it sent is dropped (the VMM then polls, as before).
            let ok = sys::cap_identify(slot)
                .is_ok_and(|i| i.object_type == ObjectType::Notification && i.rights.contains(Rights::WRITE));
            if !ok {
                log::warn!("netd: vnic {vnic}: the doorbell client {client} sent is no notification it may signal; ignored");
                let _ = sys::cap_delete(slot);
                self.free_slot(slot);
                return;
            }
            if let Some(old) = self.doorbells.insert((client, vnic), slot) {
                let _ = sys::cap_delete(old);
                self.free_slot(old);
            }
        }

        fn take_buffer(&mut self) -> Option<Result<Region, SocketError>> {
            let slot = libipc::request_caps::take()?;
            self.offer_slot();
            let refuse = |frames: &mut Self, e: SocketError| {
                let _ = sys::cap_delete(slot);
                frames.free_slot(slot);
                Some(Err(e))
            };
            let pages = match sys::cap_identify(slot) {
                Ok(i) if i.object_type == ObjectType::Frame => match sys::frame_info(slot) {
                    Ok(f) => f.pages,
                    Err(_) => return refuse(self, SocketError::NoBuffer),
                },
                _ => return refuse(self, SocketError::NoBuffer),
            };
            if pages.saturating_mul(4096) > REGION_STRIDE {
                let bytes = pages.saturating_mul(4096);
                return refuse(self, SocketError::TooLarge { bytes, max: REGION_STRIDE as u32 });
            }
            let Some(index) = self.place() else { return refuse(self, SocketError::NoBuffer) };
            match SharedMemory::map_frame(slot, REGION_VA + index * REGION_STRIDE, pages) {
                Ok(mem) => Some(Ok(Region { mem, slot, index })),
                Err(e) => {
                    log::warn!("netd: a client's shared buffer ({pages} pages): cannot map it: {e}");
                    self.free_places.push(index);
                    refuse(self, SocketError::NoBuffer)
                }
            }
        }

        fn netd_doorbell(&mut self) -> Option<CapSlot> {
            self.doorbell
        }

        fn detached(&mut self, client: u64, vnic: u32) {
            if let Some(old) = self.doorbells.remove(&(client, vnic)) {
                let _ = sys::cap_delete(old);
                self.free_slot(old);
            }
        }

        fn uplink(&mut self, switch: &str, frame: &[u8]) {
            match self.nics.iter_mut().find(|n| n.tag == switch) {
                Some(nic) => nic.send(frame),
                None => self.uplink_dropped += 1,
            }
        }

        fn receive(&mut self) -> Option<(String, Vec<u8>)> {
            // Round robin: one busy NIC does not starve the others.
            for _ in 0..self.nics.len() {
                let i = self.next_nic % self.nics.len();
                self.next_nic = i + 1;
                let nic = &mut self.nics[i];
                if let Some(frame) = nic.receive() {
                    return Some((nic.tag.clone(), frame));
                }
            }
            None
        }

        fn nic_status(&self) -> String {
            let mut out: String = self.nics.iter().enumerate().map(|(i, n)| n.status(i)).collect();
            if self.uplink_dropped > 0 {
                out.push_str(&format!("{} frames for a nic_tag with no NIC dropped\n", self.uplink_dropped));
            }
            out
        }

        fn now_ns(&self) -> u64 {
            alcove_rt::clock_ns()
        }

        fn ticks(&self) -> u64 {
            alcove_rt::rdtsc()
        }
    }
}

#[cfg(target_os = "none")]
mod timer {
    //! netd's timer thread (see the module's description).
    use core::sync::atomic::{AtomicU64, Ordering};
    use libipc::sys;

    /// When the server wants its tick (ns on `clock_ns`; MAX: never).
    static WAKE_AT: AtomicU64 = AtomicU64::new(u64::MAX);
    /// The shortest sleep: a stack that keeps asking for "now" does not
    /// spin the CPU.
    const MIN_SLEEP_NS: u64 = 1_000_000;
    /// The bit the timer signals on the serving thread's notification.
    pub const TICK_BIT: u64 = 2;
    const STACK_VA: u64 = 0x50_0000_0000;
    const STACK_PAGES: u64 = 4;

    /// Starts the thread; `tick` is its own notification (created here),
    /// `main` the serving thread's bound notification.
    pub fn start(slots: alcove_rt::ThreadSlots, tick: abi::CapSlot, main: abi::CapSlot) -> Result<(), abi::Error> {
        sys::create(abi::ObjectType::Notification, tick, 0)?;
        let t = alcove_rt::Thread::spawn(slots, STACK_VA, STACK_PAGES, run, u64::from(tick), u64::from(main))?;
        // It runs as long as the process.
        core::mem::forget(t);
        Ok(())
    }

    /// Publishes the server's next wake-up (`None`: nothing waits) and
    /// wakes the timer if that is earlier than what it sleeps towards.
    pub fn set(at: Option<u64>, tick: abi::CapSlot) {
        let at = at.map_or(u64::MAX, |a| a.max(alcove_rt::clock_ns().saturating_add(MIN_SLEEP_NS)));
        if at < WAKE_AT.swap(at, Ordering::AcqRel) {
            let _ = sys::signal(tick, 1);
        }
    }

    extern "C" fn run(_ipc: u64, tick: u64, main: u64) -> ! {
        let (tick, main) = (tick as abi::CapSlot, main as abi::CapSlot);
        loop {
            let at = WAKE_AT.load(Ordering::Acquire);
            let now = alcove_rt::clock_ns();
            if at != u64::MAX && at <= now {
                // Taken: the server publishes its next time after the tick.
                if WAKE_AT.compare_exchange(at, u64::MAX, Ordering::AcqRel, Ordering::Acquire).is_ok() {
                    let _ = sys::signal(main, TICK_BIT);
                }
                continue;
            }
            let sleep = if at == u64::MAX { abi::FOREVER } else { at - now };
            let _ = sys::wait(tick, sleep);
        }
    }
}

#[cfg(target_os = "none")]
mod doorbell {
    //! netd's doorbell for the VMMs (see the module's description): a
    //! notification the VMMs may signal and a thread that waits on it and
    //! signals [`BIT`] on the serving thread's notification.
    use abi::{CapSlot, ObjectType, Rights};
    use libipc::sys;

    /// The bit a VMM's ring sets on the serving thread's notification.
    pub const BIT: u64 = 16;
    const STACK_VA: u64 = 0x51_0000_0000;
    const STACK_PAGES: u64 = 2;

    /// Creates the doorbell in `bell` and its signal-only copy for the
    /// VMMs in `give`.
    pub fn create(bell: CapSlot, give: CapSlot) -> Result<(), abi::Error> {
        sys::create(ObjectType::Notification, bell, 0)?;
        sys::cap_copy(bell, give, Rights::WRITE, 0).inspect_err(|_| {
            let _ = sys::cap_delete(bell);
        })
    }

    /// Starts the thread that passes `bell` on to `main`.
    pub fn start(slots: alcove_rt::ThreadSlots, bell: CapSlot, main: CapSlot) -> Result<(), abi::Error> {
        let arg = u64::from(bell) | u64::from(slots.thread) << 32;
        let t = alcove_rt::Thread::spawn(slots, STACK_VA, STACK_PAGES, run, arg, u64::from(main))?;
        // It runs as long as the process.
        core::mem::forget(t);
        Ok(())
    }

    extern "C" fn run(_ipc: u64, arg: u64, main: u64) -> ! {
        let (bell, me, main) = (arg as u32 as CapSlot, (arg >> 32) as CapSlot, main as CapSlot);
        loop {
            match sys::wait(bell, abi::FOREVER) {
                Ok(_) => {
                    let _ = sys::signal(main, BIT);
                }
                Err(e) => {
                    // Never expected (netd keeps the doorbell): stop rather
                    // than spin; the VMMs' timers still kick.
                    log::error!("netd: the VMMs' doorbell: {e}; no longer heard");
                    let _ = sys::thread_suspend(me);
                }
            }
        }
    }
}

/// The server, publishing its next wake-up to the timer after each
/// request and tick.
#[cfg(target_os = "none")]
struct Timed {
    netd: netd::host::Netd<frames::Frames>,
    tick: abi::CapSlot,
    /// Test manifests only (`test-exit-after-frames=N`): netd exits once
    /// its switches took N frames from the VNICs' rings, unless a client
    /// already named an earlier netd's handle (this netd is the restarted
    /// one). Checked after each request and notification; the exit happens
    /// between requests (no VMM's call is in flight).
    exit_after: Option<u64>,
    /// Test manifests only (`test-exit-on-connect=PORT`): netd exits (code
    /// 3, as `exit_after`) when a TCP connection arrives on PORT of its
    /// host address: a test reaching the machine through its NIC ends
    /// netd at a time it chooses. Every netd arms it again.
    tripwire: bool,
    /// The tripwire went off: the exit is asked for.
    tripped: bool,
    /// `log-kick-path=N` (benchmarks): the kick path's counters are
    /// logged each time N more frames went through it; with the frames
    /// logged last.
    log_kick_path: Option<(u64, u64)>,
    /// Polling the machine's NICs that have no receive interrupt (no
    /// MSI-X): `None` when every NIC has one.
    nic_poll: Option<NicPoll>,
}

/// When netd next looks at its polled NICs, and how often: every
/// [`NicPoll::FAST_NS`] while frames come, the interval doubling with
/// each empty look up to [`NicPoll::IDLE_NS`], so an idle machine is
/// woken 20 times a second for it, not spun.
#[cfg(target_os = "none")]
#[derive(Clone, Copy)]
struct NicPoll {
    every_ns: u64,
    next_ns: u64,
}

#[cfg(target_os = "none")]
impl NicPoll {
    const FAST_NS: u64 = 1_000_000;
    const IDLE_NS: u64 = 50_000_000;

    fn new(now: u64) -> Self {
        Self { every_ns: Self::FAST_NS, next_ns: now }
    }

    fn due(&self, now: u64) -> bool {
        now >= self.next_ns
    }

    /// After a look that took `frames` frames at `now`.
    fn looked(&mut self, frames: usize, now: u64) {
        self.every_ns = if frames > 0 { Self::FAST_NS } else { (self.every_ns * 2).min(Self::IDLE_NS) };
        self.next_ns = now.saturating_add(self.every_ns);
    }
}

#[cfg(target_os = "none")]
impl Timed {
    /// Tells the timer thread when to tick next: what the server waits
    /// for, or the polled NICs' next look if that comes first.
    fn arm(&self) {
        let poll = self.nic_poll.map(|p| p.next_ns);
        let at = match (self.netd.wake_at_ns(), poll) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        timer::set(at, self.tick);
    }

    /// On a tick: the polled NICs' look, if it is due (frames beyond a
    /// budget wait for the next one, 1 ms later).
    fn poll_nics(&mut self) {
        let now = alcove_rt::clock_ns();
        let Some(p) = self.nic_poll.as_mut().filter(|p| p.due(now)) else { return };
        let frames = self.netd.nic_input(NIC_BUDGET);
        p.looked(frames, now);
    }

    /// Asks for the test exit when its time came (see `exit_after`).
    fn check_exit(&mut self) {
        self.check_tripwire();
        let Some(n) = self.exit_after else { return };
        let v = self.netd.vnics();
        if v.stale_handles() > 0 {
            log::info!("test-exit-after-frames: this netd was restarted (a VMM kicked an earlier netd's handle); not exiting again");
            self.exit_after = None;
        } else if v.frames_taken() >= n {
            self.exit_after = None;
            let _ = libipc::sys::signal(alcove_rt::start::SLOT_NOTIFY, EXIT_BIT);
        }
    }

    /// Asks for the exit once a connection came to the tripwire's port
    /// (see `tripwire`).
    fn check_tripwire(&mut self) {
        if self.tripwire && !self.tripped && self.netd.tripped() {
            self.tripped = true;
            log::warn!("test-exit-on-connect: a connection came; exiting");
            let _ = libipc::sys::signal(alcove_rt::start::SLOT_NOTIFY, EXIT_BIT);
        }
    }

    /// Logs the kick path's counters once `log-kick-path=N` more frames
    /// went through it (after the request: not inside what it measures).
    fn log_kick_path(&mut self) {
        let Some((every, last)) = self.log_kick_path else { return };
        let path = self.netd.vnics().kick_path();
        if path.frames >= last.saturating_add(every) {
            log::info!("{path} (TSC ticks)");
            self.log_kick_path = Some((every, path.frames));
        }
    }
}

#[cfg(target_os = "none")]
impl libipc::Dispatch for Timed {
    fn dispatch(&mut self, interface: u32, request: &[u8]) -> Result<alloc::vec::Vec<u8>, libipc::RemoteError> {
        self.dispatch_from(0, interface, request)
    }

    fn dispatch_from(&mut self, badge: u64, interface: u32, request: &[u8]) -> Result<alloc::vec::Vec<u8>, libipc::RemoteError> {
        let r = self.netd.dispatch_from(badge, interface, request);
        self.arm();
        self.check_exit();
        self.log_kick_path();
        r
    }

    fn notified(&mut self, bits: u64) {
        if bits & EXIT_BIT != 0 {
            if !self.tripped {
                let taken = self.netd.vnics().frames_taken();
                log::warn!("test-exit-after-frames: exiting with {taken} frames taken from the VNICs and the VMs' rings attached");
            }
            libipc::sys::exit(3);
        }
        if bits & NIC_BIT != 0 {
            // A NIC that has more than a budget's worth waiting goes on
            // after the requests queued meanwhile.
            if self.netd.nic_input(NIC_BUDGET) == NIC_BUDGET {
                let _ = libipc::sys::signal(alcove_rt::start::SLOT_NOTIFY, NIC_BIT);
            }
            self.arm();
        }
        if bits & (timer::TICK_BIT | doorbell::BIT) != 0 {
            // A VMM rang: every ring is polled (as on the timer's tick).
            self.netd.notified(bits);
            if bits & timer::TICK_BIT != 0 {
                self.poll_nics();
            }
            self.arm();
        }
        // Frames from the NIC may have brought the tripwire's connection,
        // and a doorbell's or tick's poll may have moved the frames
        // `test-exit-after-frames` waits for: since the doorbell, frames
        // can cross with no request for a long while (net-restart once
        // saw netd's exit only at a VM's detach, after the transfer).
        self.check_exit();
    }
}

/// The bit a NIC's receive interrupt sets on the serving thread's
/// notification.
#[cfg(target_os = "none")]
const NIC_BIT: u64 = 4;
/// The bit `test-exit-after-frames` sets on the serving thread's
/// notification: netd exits there, between requests.
#[cfg(target_os = "none")]
const EXIT_BIT: u64 = 8;
/// Frames taken from the NICs per notification.
#[cfg(target_os = "none")]
const NIC_BUDGET: usize = 64;

/// The machine's NICs that netd.conf makes uplinks. The PCI configuration
/// ports are shared with storaged, which uses them only before it serves:
/// netd waits for storaged's answer first.
#[cfg(target_os = "none")]
fn find_nics(info: &alcove_rt::start::StartInfo, config: &netd::vnics::NetConfig) -> alloc::vec::Vec<nic::Nic> {
    use alloc::string::ToString;
    if config.uplink_of(0).is_none() && config.nics.is_empty() {
        return alloc::vec::Vec::new();
    }
    let pci = info.ioports.iter().find(|&&(first, count, _)| first <= 0xcf8 && u32::from(first) + u32::from(count) >= 0xd00);
    let (Some(&(_, _, ports)), Some(root)) = (pci, info.device_memory_root) else {
        log::error!("netd.conf names a NIC, but netd holds no PCI configuration ports or pci_bars (manifest); no NIC used");
        return alloc::vec::Vec::new();
    };
    if let Some(ep) = info.calls("storaged") {
        let storaged = libipc::interfaces::status::Client::new(libipc::kernel::KernelTransport::new(libipc::cap::Cap::from_slot(ep)));
        if let Err(e) = storaged.status() {
            log::warn!("storaged did not answer ({e}); looking at the PCI bus anyway");
        }
    }
    if let Err(e) = libipc::sys::io_port_enable(ports) {
        log::error!("the PCI configuration ports: {e}; no NIC used");
        return alloc::vec::Vec::new();
    }
    let irq = info.irqs.first().map(|&(_, slot)| slot);
    nic::find(|i| config.uplink_of(i).map(ToString::to_string), root, irq, info.calls("proc"))
}

#[cfg(target_os = "none")]
fn main(start: alcove_rt::Start) -> u64 {
    use abi::Rights;
    use alcove_rt::start::SLOT_SELF;

    let info = start.server("netd");
    let Some(slot) = info.serves("netd") else {
        log::error!("no \"netd\" endpoint was granted");
        return 1;
    };
    // The boot configuration, if init gave one: otherwise no switches.
    let config = match info.files.iter().find(|(n, _, _)| n == "netd.conf") {
        None => netd::vnics::NetConfig::default(),
        Some((_, file, len)) => {
            const CONF_VA: u64 = 0x30_0000_0000;
            if let Err(e) = libipc::sys::map(SLOT_SELF, *file, CONF_VA, Rights::READ) {
                log::error!("netd.conf: cannot map the boot file: {e}");
                return 1;
            }
            let bytes = alcove_rt::user_bytes(CONF_VA, *len as usize);
            let Ok(text) = core::str::from_utf8(bytes) else {
                log::error!("netd.conf: not UTF-8");
                return 1;
            };
            match netd::vnics::NetConfig::parse(text) {
                Ok(c) => c,
                Err(e) => {
                    log::error!("{e}");
                    return 1;
                }
            }
        }
    };
    let mut frames = frames::Frames::new();
    frames.endpoint = Some(slot);
    frames.nics = find_nics(&info, &config);
    let tick = frames.fresh_slot();
    let thread = alcove_rt::ThreadSlots { thread: frames.fresh_slot(), stack: frames.fresh_slot(), ipc: frames.fresh_slot() };
    let (bell, bell_give) = (frames.fresh_slot(), frames.fresh_slot());
    let bell_thread = alcove_rt::ThreadSlots { thread: frames.fresh_slot(), stack: frames.fresh_slot(), ipc: frames.fresh_slot() };
    let bell_made = match doorbell::create(bell, bell_give) {
        Ok(()) => {
            frames.doorbell = Some(bell_give);
            true
        }
        Err(e) => {
            log::error!("no doorbell for the VMMs (they kick instead): {e}");
            false
        }
    };
    frames.offer_slot();
    let seed = alcove_rt::rdrand_u64().unwrap_or_else(alcove_rt::rdtsc);
    let mut netd = netd::host::Netd::new(&config, frames, seed);
    // Who may grant VNICs to VMMs: the control plane (`vnic-admin=NAME,…`,
    // zone-server by default), besides init.
    let admins: alloc::vec::Vec<&str> = info
        .args
        .iter()
        .find_map(|a| a.strip_prefix("vnic-admin="))
        .map_or_else(|| alloc::vec!["zone-server"], |v| v.split(',').collect());
    let badges: alloc::vec::Vec<u64> = info
        .clients
        .iter()
        .filter(|(ep, name, _)| ep == "netd" && admins.contains(&name.as_str()))
        .map(|&(_, _, badge)| badge)
        .collect();
    netd.vnics().set_admins(&badges);
    let uplinks: alloc::vec::Vec<(u32, alloc::string::String)> =
        netd.vnics().platform().nics.iter().enumerate().map(|(i, n)| (i as u32, n.tag.clone())).collect();
    netd.vnics().set_uplinks(&uplinks);
    log::info!("{} switch(es), {} VNIC(s)", config.switches.len(), config.vnics.len());
    if let Some(h) = &config.host {
        match netd.host_address() {
            Some((ip, prefix)) => log::info!("host address {ip}/{prefix} on {} ({})", h.switch, h.mac),
            None => log::info!("host on {} ({}): no address yet", h.switch, h.mac),
        }
        if let Some(p) = h.echo_port {
            log::info!("echo service on TCP port {p}");
        }
    }
    let msis: alloc::vec::Vec<(alloc::string::String, abi::CapSlot)> =
        netd.vnics().platform().nics.iter().filter_map(|n| n.msi().map(|m| (n.name.clone(), m))).collect();
    // Handles from a random start: a VMM's handle from an earlier netd
    // (init restarted this one) is not one of ours, so its kick fails and
    // the VMM attaches again.
    netd.vnics().set_first_handle(((seed >> 32) as u32 & 0x3fff_ffff).max(1));
    // Grant badges too: an earlier netd's grants, which zone-server makes
    // again (`vnic.regrant`) under the badges their VMMs still hold, do
    // not collide with this netd's new ones.
    netd.vnics().set_first_grant(alcove_rt::rdrand_u64().unwrap_or(seed.rotate_left(17) ^ alcove_rt::rdtsc()));
    let exit_after = info.args.iter().find_map(|a| a.strip_prefix("test-exit-after-frames=")).and_then(|n| match n.parse::<u64>() {
        Ok(n) => Some(n),
        Err(_) => {
            log::error!("test-exit-after-frames={n}: not a number; ignored");
            None
        }
    });
    let log_kick_path = info.args.iter().find_map(|a| a.strip_prefix("log-kick-path=")).and_then(|n| match n.parse::<u64>() {
        Ok(n) if n > 0 => Some((n, 0)),
        _ => {
            log::error!("log-kick-path={n}: not a number of frames over 0; ignored");
            None
        }
    });
    let tripwire = match info.args.iter().find_map(|a| a.strip_prefix("test-exit-on-connect=")) {
        None => false,
        Some(p) => match p.parse::<u16>().ok().filter(|&p| p != 0).ok_or_else(|| alloc::string::String::from("not a TCP port")).and_then(|p| netd.set_tripwire(p)) {
            Ok(()) => {
                log::info!("test-exit-on-connect: netd exits when a connection comes to port {p}");
                true
            }
            Err(e) => {
                log::error!("test-exit-on-connect={p}: {e}; ignored");
                false
            }
        },
    };
    let polled = netd.vnics().platform().nics.iter().filter(|n| n.polled()).count();
    let nic_poll = (polled > 0).then(|| NicPoll::new(alcove_rt::clock_ns()));
    let server = Timed { netd, tick, exit_after, tripwire, tripped: false, log_kick_path, nic_poll };
    alcove_rt::serve_forever_with(slot, server, |main| {
        if let Err(e) = timer::start(thread, tick, main) {
            log::error!("no timer thread (the host stack's retransmits wait for requests): {e}");
        }
        // The polled NICs' first look.
        if polled > 0 {
            let _ = libipc::sys::signal(main, timer::TICK_BIT);
        }
        if bell_made && let Err(e) = doorbell::start(bell_thread, bell, main) {
            // The VMMs' copies ring a doorbell nobody hears: their timers'
            // kicks (at least every 20 ms) still move their frames.
            log::error!("no thread for the VMMs' doorbell: {e}");
        }
        for (name, msi) in &msis {
            if let Err(e) = libipc::sys::irq_bind(*msi, main, NIC_BIT) {
                log::error!("{name}: its receive interrupt cannot be bound: {e}; it will not be heard");
            }
        }
        // Frames that came before the binding: one look now (after it,
        // each new frame interrupts).
        if !msis.is_empty() {
            let _ = libipc::sys::signal(main, NIC_BIT);
        }
    })
}

#[cfg(target_os = "none")]
alcove_rt::entry!(main);

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("netd runs only on Alcove (build it for x86_64-unknown-none)");
}
