//! The zone-server process: takes its start-up information from init and serves
//! its endpoint: `status` to everyone, `vmadm` to the clients its argument
//! `vmadm-clients=NAME,...` names. It calls storaged's `pool` (it is the
//! pool's admin), init's `proc` (manifest `spawns = ["vmm-server"]`) and,
//! for VMs with `nics[]`, netd's `vnic` (it is netd's `vnic-admin`), and
//! netd's `socket` to reach image sources (`imgadm avail|import`).
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
extern crate alloc;

#[cfg(target_os = "none")]
mod images;

#[cfg(target_os = "none")]
mod machine {
    use abi::CapSlot;
    use alloc::format;
    use alloc::string::{String, ToString};
    use alloc::vec::Vec;
    use libipc::cap::Cap;
    use libipc::interfaces::{ProcState, SOCKET_INLINE_MAX, SocketState, pool, proc, socket, vnic};
    use libipc::kernel::{CapTransport, KernelTransport};
    use libipc::provision::VolumeSpec;
    use libipc::sys;
    use zone_server::Machine;
    use zone_server::host::VMM_TEMPLATE;

    // Every fixed slot is in zone_server::slots' table, checked there.
    use zone_server::slots::{
        CONTROLS as CONTROL_SLOTS, GRANT as GRANT_SLOT, NET_BUFFER as NET_BUFFER_SLOT, SLEEP as SLEEP_SLOT, VNIC_GRANT as VNIC_GRANT_SLOT,
    };

    /// storaged's pool and init's proc over the kernel.
    pub struct KernelMachine {
        pub storaged: Option<CapSlot>,
        pub proc: Option<CapSlot>,
        pub rng: u64,
        pub images: crate::images::IpcPool,
        /// Each running VMM's control notification (instance → slot).
        pub controls: alloc::collections::BTreeMap<u32, CapSlot>,
        /// netd's endpoint (manifest `calls`), for VMs with NICs.
        pub netd: Option<CapSlot>,
        /// The VNIC grant whose endpoint sits in [`VNIC_GRANT_SLOT`] for
        /// the next start.
        pub vnics_staged: Option<u64>,
        /// netd's sockets, to image sources (`imgadm import`).
        pub net: NetdSockets,
    }

    /// Waits about `ms` milliseconds: a wait with a timeout on a
    /// notification nobody signals.
    fn sleep(ms: u64) {
        if sys::cap_identify(SLEEP_SLOT).map(|c| c.object_type) != Ok(abi::ObjectType::Notification) {
            let _ = sys::cap_delete(SLEEP_SLOT);
            let _ = sys::create(abi::ObjectType::Notification, SLEEP_SLOT, 0);
        }
        let _ = sys::wait(SLEEP_SLOT, ms.saturating_mul(1_000_000));
    }

    /// TCP connections through netd's `socket` interface (its host
    /// address). Downloads come through a buffer shared with netd
    /// (`socket.share_buffer`, then `recv_buffered`): [`NET_BUFFER_BYTES`]
    /// a call instead of a message's 2 KiB. Without one (netd refused it,
    /// no memory) they come inline.
    pub struct NetdSockets {
        pub netd: Option<CapSlot>,
        /// The buffer netd holds too, once shared.
        pub buffer: Option<alcove_rt::SharedMemory>,
        /// Sharing failed: not tried again (inline receives only).
        pub inline_only: bool,
    }

    /// The shared buffer's size and where zone-server maps it.
    const NET_BUFFER_BYTES: u64 = 16 * 1024;
    const NET_BUFFER_VA: u64 = 0x48_0000_0000;

    impl NetdSockets {
        pub fn new(netd: Option<CapSlot>) -> Self {
            Self { netd, buffer: None, inline_only: false }
        }

        fn client(&self) -> Result<socket::Client<KernelTransport>, String> {
            let ep = self.netd.ok_or("zone-server: no netd endpoint was granted (manifest: calls \"netd\")")?;
            Ok(socket::Client::new(KernelTransport::new(Cap::from_slot(ep))))
        }

        /// The buffer shared with netd, made and shared on first use
        /// (its frame charged to zone-server); `None`: receive inline.
        fn shared(&mut self) -> Option<alcove_rt::SharedMemory> {
            if self.inline_only {
                return None;
            }
            if let Some(b) = &self.buffer {
                return Some(b.clone());
            }
            let ep = self.netd?;
            let made = sys::create(abi::ObjectType::Frame, NET_BUFFER_SLOT, NET_BUFFER_BYTES / abi::PAGE_SIZE)
                .map_err(|e| format!("a frame: {e}"))
                .and_then(|()| {
                    alcove_rt::SharedMemory::map_frame(NET_BUFFER_SLOT, NET_BUFFER_VA, NET_BUFFER_BYTES / abi::PAGE_SIZE)
                        .map_err(|e| format!("mapping it: {e}"))
                })
                .and_then(|mem| {
                    let t = CapTransport::new(Cap::from_slot(ep), &[]).sending(&[NET_BUFFER_SLOT]);
                    match socket::Client::new(&t).share_buffer() {
                        Ok(Ok(n)) if u64::from(n) == NET_BUFFER_BYTES => Ok(mem),
                        Ok(Ok(n)) => Err(format!("netd took {n} bytes of it")),
                        Ok(Err(e)) => Err(e.to_string()),
                        Err(e) => Err(e.to_string()),
                    }
                });
            match made {
                Ok(mem) => {
                    self.buffer = Some(mem.clone());
                    Some(mem)
                }
                Err(e) => {
                    log::warn!("zone-server: no buffer shared with netd ({e}): downloads come 2 KiB a call");
                    let _ = sys::cap_delete(NET_BUFFER_SLOT);
                    self.inline_only = true;
                    None
                }
            }
        }

        /// Lets go of the shared buffer (netd no longer holds it: it was
        /// restarted); the next receive shares a new one.
        fn drop_buffer(&mut self) {
            if self.buffer.take().is_some() {
                let _ = sys::cap_delete(NET_BUFFER_SLOT);
            }
        }
    }

    impl zone_server::imgsrc::Net for NetdSockets {
        fn connect(&mut self, ip: [u8; 4], port: u16) -> Result<u32, String> {
            self.client()?.connect(ip, port).map_err(|e| e.to_string())?.map_err(|e| e.to_string())
        }

        fn send(&mut self, s: u32, data: &[u8]) -> Result<usize, String> {
            let c = self.client()?;
            match c.state(s).map_err(|e| e.to_string())?.map_err(|e| e.to_string())? {
                SocketState::Pending => return Ok(0),
                SocketState::Established => {}
                SocketState::PeerClosed | SocketState::Closed => return Err("the image source closed the connection".into()),
            }
            let n = data.len().min(SOCKET_INLINE_MAX as usize);
            c.send(s, data[..n].to_vec()).map_err(|e| e.to_string())?.map(|n| n as usize).map_err(|e| e.to_string())
        }

        fn recv(&mut self, s: u32, max: usize) -> Result<Option<Vec<u8>>, String> {
            let c = self.client()?;
            let state = c.state(s).map_err(|e| e.to_string())?.map_err(|e| e.to_string())?;
            if state == SocketState::Pending {
                return Ok(Some(Vec::new()));
            }
            if let Some(mem) = self.shared() {
                let max = max.min(mem.len() as usize) as u32;
                match c.recv_buffered(s, 0, max).map_err(|e| e.to_string())? {
                    Ok(n) if n > 0 => {
                        let mut d = alloc::vec![0u8; (n as usize).min(max as usize)];
                        mem.read(0, &mut d);
                        return Ok(Some(d));
                    }
                    Ok(_) if state == SocketState::Established => return Ok(Some(Vec::new())),
                    Ok(_) | Err(libipc::interfaces::SocketError::NotConnected { .. }) => return Ok(None),
                    // A restarted netd has no buffer of ours: share again.
                    Err(libipc::interfaces::SocketError::NoBuffer) => self.drop_buffer(),
                    Err(e) => return Err(e.to_string()),
                }
            }
            let max = max.min(SOCKET_INLINE_MAX as usize) as u32;
            match c.recv(s, max).map_err(|e| e.to_string())? {
                Ok(d) if !d.is_empty() => Ok(Some(d)),
                Ok(_) if state == SocketState::Established => Ok(Some(Vec::new())),
                // Closed by the peer and all it sent read.
                Ok(_) | Err(libipc::interfaces::SocketError::NotConnected { .. }) => Ok(None),
                Err(e) => Err(e.to_string()),
            }
        }

        fn close(&mut self, s: u32) {
            if let Ok(c) = self.client() {
                let _ = c.close(s);
            }
        }

        fn sleep_ms(&mut self, ms: u64) {
            sleep(ms);
        }
    }

    impl KernelMachine {
        fn pool(&self) -> Result<pool::Client<KernelTransport>, String> {
            let ep = self.storaged.ok_or("zone-server: no storaged endpoint was granted")?;
            Ok(pool::Client::new(KernelTransport::new(Cap::from_slot(ep))))
        }

        fn proc(&self) -> Result<proc::Client<KernelTransport>, String> {
            let ep = self.proc.ok_or("zone-server: no proc endpoint was granted (manifest: calls \"proc\")")?;
            Ok(proc::Client::new(KernelTransport::new(Cap::from_slot(ep))))
        }

        /// Stages a `vm.json` longer than one message with init
        /// ([`zone_server::host::stage_start_data`], right before the
        /// `start` that takes it): what that `start` carries itself.
        fn stage(&self, vm_json: &str) -> Result<Vec<u8>, String> {
            zone_server::host::stage_start_data(&self.proc()?, vm_json.as_bytes())
        }

        /// [`Machine::start_vmm`] with `control` given as the VMM's
        /// `control` capability.
        fn start_vmm_with(
            &mut self,
            volumes: &[VolumeSpec],
            vm_json: &str,
            budget_kib: u32,
            control: CapSlot,
        ) -> Result<(u32, u64), String> {
            let storaged = self.storaged.ok_or("zone-server: no storaged endpoint was granted")?;
            let procs = self.proc.ok_or("zone-server: no proc endpoint was granted (manifest: calls \"proc\")")?;
            // Its control notification first: init keeps it for the start.
            let t = CapTransport::new(Cap::from_slot(procs), &[]).sending(&[control]);
            proc::Client::new(&t).give("control".into()).map_err(|e| e.to_string())?.map_err(|e| e.to_string())?;
            // Its VNICs' grant: the VMM's `netd` reaches only them.
            if self.vnics_staged.take().is_some() {
                let t = CapTransport::new(Cap::from_slot(procs), &[]).sending(&[VNIC_GRANT_SLOT]);
                let given = proc::Client::new(&t).give("netd".into());
                // init keeps its own copy for the start.
                let _ = sys::cap_delete(VNIC_GRANT_SLOT);
                given.map_err(|e| e.to_string())?.map_err(|e| e.to_string())?;
            }
            if volumes.is_empty() {
                // No disks: the VMM gets no storaged endpoint at all.
                let last = self.stage(vm_json)?;
                let t = CapTransport::new(Cap::from_slot(procs), &[]);
                let id = proc::Client::new(&t)
                    .start(VMM_TEMPLATE.into(), last, budget_kib)
                    .map_err(|e| e.to_string())?
                    .map_err(|e| e.to_string())?;
                return Ok((id, 0));
            }
            let t = CapTransport::new(Cap::from_slot(storaged), &[GRANT_SLOT]);
            let granted = libipc::provision::provision(&pool::Client::new(&t), volumes).map_err(|e| e.to_string())?.granted;
            if t.received() != 1 {
                let _ = self.revoke(granted.badge);
                return Err("pool: the grant came without its capability".into());
            }
            let last = match self.stage(vm_json) {
                Ok(last) => last,
                Err(e) => {
                    let _ = sys::cap_delete(GRANT_SLOT);
                    let _ = self.revoke(granted.badge);
                    return Err(e);
                }
            };
            let t = CapTransport::new(Cap::from_slot(procs), &[]).sending(&[GRANT_SLOT]);
            let started = proc::Client::new(&t).start(VMM_TEMPLATE.into(), last, budget_kib);
            // The VMM holds its own copy.
            let _ = sys::cap_delete(GRANT_SLOT);
            match started.map_err(|e| e.to_string()).and_then(|r| r.map_err(|e| e.to_string())) {
                Ok(instance) => Ok((instance, granted.badge)),
                Err(e) => {
                    let _ = self.revoke(granted.badge);
                    Err(e)
                }
            }
        }
    }

    impl KernelMachine {
        /// The control notification of the VMM `instance`: the one we
        /// made when we started it or, for a VMM an earlier life of
        /// zone-server started, the copy init kept (`proc.control`, which
        /// answers only the VMM's starter).
        fn control(&mut self, instance: u32) -> Result<CapSlot, String> {
            if let Some(&c) = self.controls.get(&instance) {
                return Ok(c);
            }
            let procs = self.proc.ok_or("zone-server: no proc endpoint was granted (manifest: calls \"proc\")")?;
            let slot = CONTROL_SLOTS
                .clone()
                .find(|s| !self.controls.values().any(|c| c == s))
                .ok_or("zone-server: every control slot is in use")?;
            let _ = sys::cap_delete(slot);
            let t = CapTransport::new(Cap::from_slot(procs), &[slot]);
            let got = proc::Client::new(&t).control(instance);
            let got = got.map_err(|e| e.to_string()).and_then(|r| r.map_err(|e| format!("its control notification: {e}")));
            if let Err(e) = got {
                let _ = sys::cap_delete(slot);
                return Err(e);
            }
            if t.received() != 1 {
                let _ = sys::cap_delete(slot);
                return Err("proc.control: the answer came without its capability".into());
            }
            log::info!("instance {instance}: its control notification got back from init");
            self.controls.insert(instance, slot);
            Ok(slot)
        }
    }

    impl Machine for KernelMachine {
        type Images = crate::images::IpcPool;
        type File = crate::images::VolumeFile;

        fn images(&mut self) -> &mut Self::Images {
            &mut self.images
        }

        type Net = NetdSockets;
        fn net_and_images(&mut self) -> (&mut NetdSockets, &mut Self::Images) {
            (&mut self.net, &mut self.images)
        }

        fn open_file(&mut self, volume: &str, bytes: u64) -> Result<Self::File, String> {
            let ep = self.storaged.ok_or("zone-server: no storaged endpoint was granted")?;
            crate::images::VolumeFile::open(ep, volume, bytes)
        }

        fn unix_seconds(&mut self) -> u64 {
            sys::unix_seconds().unwrap_or(0)
        }

        fn random(&mut self, buf: &mut [u8]) {
            for chunk in buf.chunks_mut(8) {
                let r = alcove_rt::rdrand_u64().unwrap_or_else(|| {
                    // xorshift over the clock when the CPU has no RDRAND.
                    self.rng ^= alcove_rt::rdtsc();
                    self.rng ^= self.rng << 13;
                    self.rng ^= self.rng >> 7;
                    self.rng ^= self.rng << 17;
                    self.rng
                });
                chunk.copy_from_slice(&r.to_le_bytes()[..chunk.len()]);
            }
        }

        fn create_volume(&mut self, name: &str, bytes: u64) -> Result<(), String> {
            self.pool()?.create(name.into(), bytes, 0).map_err(|e| e.to_string())?.map_err(|e| e.to_string())
        }

        fn destroy_volume(&mut self, name: &str) -> Result<(), String> {
            self.pool()?.destroy(name.into(), true).map_err(|e| e.to_string())?.map_err(|e| e.to_string())
        }

        fn snapshot_volume(&mut self, snapshot: &str) -> Result<(), String> {
            self.pool()?.snapshot(snapshot.into()).map_err(|e| e.to_string())?.map_err(|e| e.to_string())
        }

        fn rollback_volume(&mut self, snapshot: &str) -> Result<(), String> {
            self.pool()?.rollback(snapshot.into()).map_err(|e| e.to_string())?.map_err(|e| e.to_string())
        }

        fn prepare_volumes(&mut self, specs: &[VolumeSpec]) -> Result<Vec<String>, String> {
            libipc::provision::prepare(&self.pool()?, specs).map_err(|e| e.to_string())
        }

        fn set_property(&mut self, name: &str, key: &str, value: &str, append: bool) -> Result<(), String> {
            self.pool()?
                .set(name.into(), key.into(), value.into(), append)
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())
        }

        fn start_vmm(&mut self, volumes: &[VolumeSpec], vm_json: &str, budget_kib: u32) -> Result<(u32, u64), String> {
            // The VMM's control notification: it waits on it, we signal.
            let control = CONTROL_SLOTS
                .clone()
                .find(|s| !self.controls.values().any(|c| c == s))
                .ok_or("zone-server: every control slot is in use")?;
            let _ = sys::cap_delete(control);
            sys::create(abi::ObjectType::Notification, control, 0).map_err(|e| format!("control notification: {e}"))?;
            let started = self.start_vmm_with(volumes, vm_json, budget_kib, control);
            match &started {
                Ok((instance, _)) => {
                    self.controls.insert(*instance, control);
                }
                Err(_) => {
                    let _ = sys::cap_delete(control);
                }
            }
            started
        }

        fn power_button(&mut self, instance: u32) -> Result<(), String> {
            let control = self.control(instance)?;
            sys::signal(control, libipc::interfaces::VMM_CONTROL_POWER_BUTTON).map_err(|e| format!("power button: {e}"))
        }

        fn vmm_running(&mut self, instance: u32) -> Result<bool, String> {
            let s = self.proc()?.state(instance).map_err(|e| e.to_string())?.map_err(|e| e.to_string())?;
            Ok(s == ProcState::Running)
        }

        fn stop_vmm(&mut self, instance: u32) -> Result<(), String> {
            if let Some(control) = self.controls.remove(&instance) {
                let _ = sys::cap_delete(control);
            }
            self.proc()?.stop(instance).map_err(|e| e.to_string())?.map(|_| ()).map_err(|e| e.to_string())
        }


        fn revoke(&mut self, grant: u64) -> Result<(), String> {
            if grant == 0 {
                return Ok(()); // a VM without disks holds no grant
            }
            self.pool()?.revoke(grant).map_err(|e| e.to_string())?.map(|_| ()).map_err(|e| format!("{e}"))
        }

        fn grant_vnics(&mut self, lines: &[String]) -> Result<u64, String> {
            let ep = self.netd.ok_or("zone-server: no netd endpoint was granted (manifest: calls \"netd\")")?;
            if let Some(old) = self.vnics_staged.take() {
                let _ = sys::cap_delete(VNIC_GRANT_SLOT);
                let _ = self.revoke_vnics(old);
            }
            let t = CapTransport::new(Cap::from_slot(ep), &[VNIC_GRANT_SLOT]);
            let granted = vnic::Client::new(&t).grant(lines.to_vec()).map_err(|e| e.to_string())?.map_err(|e| e.to_string())?;
            if t.received() != 1 {
                let _ = self.revoke_vnics(granted.badge);
                return Err("netd: the grant came without its capability".into());
            }
            self.vnics_staged = Some(granted.badge);
            Ok(granted.badge)
        }

        fn revoke_vnics(&mut self, badge: u64) -> Result<(), String> {
            if self.vnics_staged == Some(badge) {
                self.vnics_staged = None;
                let _ = sys::cap_delete(VNIC_GRANT_SLOT);
            }
            let ep = self.netd.ok_or("zone-server: no netd endpoint was granted")?;
            vnic::Client::new(KernelTransport::new(Cap::from_slot(ep)))
                .revoke(badge)
                .map_err(|e| e.to_string())?
                .map(|_| ())
                .map_err(|e| e.to_string())
        }

        fn regrant_vnics(&mut self, badge: u64, lines: &[String]) -> Result<bool, String> {
            let ep = self.netd.ok_or("zone-server: no netd endpoint was granted")?;
            match vnic::Client::new(KernelTransport::new(Cap::from_slot(ep))).regrant(badge, lines.to_vec()) {
                Ok(Ok(_)) => Ok(true),
                Ok(Err(libipc::interfaces::VnicError::GrantLive { .. })) => Ok(false),
                Ok(Err(e)) => Err(e.to_string()),
                Err(e) => Err(e.to_string()),
            }
        }

        fn netd_restarted(&mut self, instance: u32) -> Result<(), String> {
            let control = self.control(instance)?;
            sys::signal(control, libipc::interfaces::VMM_CONTROL_NETD_RESTARTED).map_err(|e| format!("control: {e}"))
        }

        fn metadata_changed(&mut self, instance: u32) -> Result<(), String> {
            let control = self.control(instance)?;
            sys::signal(control, libipc::interfaces::VMM_CONTROL_METADATA).map_err(|e| format!("control: {e}"))
        }

        fn list_volumes(&mut self) -> Result<Vec<String>, String> {
            let c = self.pool()?;
            let mut names = Vec::new();
            let mut after = String::new();
            // Each page holds at least one name, so this ends.
            loop {
                let page = c.list(after).map_err(|e| e.to_string())?.map_err(|e| e.to_string())?;
                names.extend(page.datasets.into_iter().map(|d| d.name));
                match page.next {
                    Some(n) => after = n,
                    None => return Ok(names),
                }
            }
        }

        fn get_property(&mut self, name: &str, key: &str) -> Result<Option<String>, String> {
            let c = self.pool()?;
            let mut bytes = Vec::new();
            loop {
                let offset = u32::try_from(bytes.len()).map_err(|_| "property too long")?;
                match c.get_prop(name.into(), key.into(), offset).map_err(|e| e.to_string())? {
                    Ok(chunk) => {
                        let done = chunk.bytes.is_empty() || bytes.len() + chunk.bytes.len() >= chunk.total_bytes as usize;
                        bytes.extend(chunk.bytes);
                        if done {
                            break;
                        }
                    }
                    Err(libipc::interfaces::PoolError::NotFound { .. }) => return Ok(None),
                    Err(e) => return Err(e.to_string()),
                }
            }
            String::from_utf8(bytes).map(Some).map_err(|_| format!("{name} {key}: not UTF-8"))
        }

        fn vmm_instances(&mut self) -> Result<u32, String> {
            Ok(self.proc()?.usage().map_err(|e| e.to_string())?.instances)
        }
        /// Signals the thread's bound notification (alcove-rt's serve loop
        /// binds it; bit 0 is the lifecycle's): the loop, after sending the
        /// reply it is preparing, receives it and calls `notified`.
        fn wake_after_reply(&mut self) -> bool {
            sys::signal(alcove_rt::start::SLOT_NOTIFY, zone_server::WAKE_RESTORE).is_ok()
        }

        fn wake_at(&mut self, unix_ms: Option<u64>) {
            // The timer counts on the kernel's clock (ns since boot).
            let at = unix_ms.map(|at| {
                let now_ms = self.unix_seconds().saturating_mul(1000);
                alcove_rt::clock_ns().saturating_add(at.saturating_sub(now_ms).saturating_mul(1_000_000))
            });
            crate::timer::set(at);
        }
    }

    /// The badges of the clients `vmadm-clients=` names.
    pub fn vmadm_badges(info: &alcove_rt::StartInfo) -> Vec<u64> {
        let names: Vec<&str> =
            info.args.iter().filter_map(|a| a.strip_prefix("vmadm-clients=")).flat_map(|l| l.split(',')).collect();
        info.clients
            .iter()
            .filter(|(ep, name, _)| ep == "zone-server" && names.contains(&name.as_str()))
            .map(|(_, _, badge)| *badge)
            .collect()
    }
}

#[cfg(target_os = "none")]
mod timer {
    //! zone-server's timer thread: it sleeps until the time the server
    //! last asked for ([`set`]; a stopping VM's next look or deadline) and
    //! then signals [`zone_server::WAKE_TIMER`] on the serving thread's
    //! bound notification, so a stop ends with nobody asking (as netd's
    //! timer drives its host stack).
    use core::sync::atomic::{AtomicU64, Ordering};
    use libipc::sys;

    /// When the server wants its tick (ns on `clock_ns`; MAX: never).
    static WAKE_AT: AtomicU64 = AtomicU64::new(u64::MAX);
    /// The timer's own notification (it waits on it; `set` wakes it).
    use zone_server::slots::TIMER_TICK as TICK_SLOT;
    /// Its thread, stack and IPC buffer frames.
    const SLOTS: alcove_rt::ThreadSlots = alcove_rt::ThreadSlots {
        thread: zone_server::slots::TIMER_THREAD,
        stack: zone_server::slots::TIMER_STACK,
        ipc: zone_server::slots::TIMER_IPC,
    };
    const STACK_VA: u64 = 0x50_0000_0000;
    const STACK_PAGES: u64 = 4;
    /// The shortest sleep, so a deadline that is due keeps no CPU busy.
    const MIN_SLEEP_NS: u64 = 1_000_000;

    /// Starts the thread; `main` is the serving thread's bound notification.
    pub fn start(main: abi::CapSlot) -> Result<(), abi::Error> {
        sys::create(abi::ObjectType::Notification, TICK_SLOT, 0)?;
        let t = alcove_rt::Thread::spawn(SLOTS, STACK_VA, STACK_PAGES, run, u64::from(main), 0)?;
        // It runs as long as the process.
        core::mem::forget(t);
        Ok(())
    }

    /// Publishes the server's next wake-up (`None`: nothing waits) and
    /// wakes the timer if that is earlier than what it sleeps towards.
    pub fn set(at: Option<u64>) {
        let at = at.map_or(u64::MAX, |a| a.max(alcove_rt::clock_ns().saturating_add(MIN_SLEEP_NS)));
        if at < WAKE_AT.swap(at, Ordering::AcqRel) {
            let _ = sys::signal(TICK_SLOT, 1);
        }
    }

    extern "C" fn run(_ipc: u64, main: u64, _: u64) -> ! {
        let main = main as abi::CapSlot;
        loop {
            let at = WAKE_AT.load(Ordering::Acquire);
            let now = alcove_rt::clock_ns();
            if at != u64::MAX && at <= now {
                // Taken: the server publishes its next time after the tick.
                if WAKE_AT.compare_exchange(at, u64::MAX, Ordering::AcqRel, Ordering::Acquire).is_ok() {
                    let _ = sys::signal(main, zone_server::WAKE_TIMER);
                }
                continue;
            }
            let sleep = if at == u64::MAX { abi::FOREVER } else { at - now };
            let _ = sys::wait(TICK_SLOT, sleep);
        }
    }
}

#[cfg(target_os = "none")]
fn main(start: alcove_rt::Start) -> u64 {
    let info = start.server("zone-server");
    // Room for the instances' records beside the fixed arena (a hundred
    // VMs and `vmadm lookup -j` of them exhausted it: zone-server died);
    // an xz import grows the heap further when it needs to.
    if let Err(e) = alcove_rt::grow_heap(zone_server::HEAP_GROWTH_BYTES) {
        log::warn!("cannot grow the heap by {} KiB ({e}): fewer instances fit", zone_server::HEAP_GROWTH_BYTES / 1024);
    }
    let Some(slot) = info.serves("zone-server") else {
        log::error!("no \"zone-server\" endpoint was granted");
        return 1;
    };
    let m = machine::KernelMachine {
        storaged: info.calls("storaged"),
        proc: info.calls("proc"),
        rng: alcove_rt::rdtsc() | 1,
        images: images::IpcPool::new(info.calls("storaged")),
        controls: Default::default(),
        netd: info.calls("netd"),
        vnics_staged: None,
        net: machine::NetdSockets::new(info.calls("netd")),
    };
    let badges = machine::vmadm_badges(&info);
    if !badges.is_empty() {
        log::info!("vmadm: {} client(s); pool {}, proc {}", badges.len(), m.storaged.is_some(), m.proc.is_some());
    }
    let mut server = zone_server::ZoneServer::new(m, badges);
    if info.calls("storaged").is_some() && info.calls("proc").is_some() {
        server.restore_before_first_request();
    }
    alcove_rt::serve_forever_with(slot, server, |main| {
        if let Err(e) = timer::start(main) {
            log::error!("no timer thread (a stop's deadline waits for the next request): {e}");
        }
    })
}

#[cfg(target_os = "none")]
alcove_rt::entry!(main);

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("zone-server runs only on Alcove (build it for x86_64-unknown-none)");
}
