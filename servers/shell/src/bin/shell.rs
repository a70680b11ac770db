//! The shell process: reads what the operator types from the console
//! server (`console.read`), runs the lines through `shell::Shell`, and
//! writes the echo and output back (`console.write`). It calls
//! zone-server's `vmadm` (manifest: `calls` "zone-server", and zone-server's
//! `vmadm-clients=` names the shell), init's `svc` (`calls` "proc") and
//! storaged's `pool` (`calls` "storaged"; storaged's `pool-admin=` names
//! the shell) and netd's `vnic` (`calls` "netd"; netd's `vnic-admin=`
//! names the shell).
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
extern crate alloc;

#[cfg(target_os = "none")]
mod machine {
    use abi::CapSlot;
    use alloc::string::{String, ToString};
    use alloc::vec::Vec;
    use libipc::cap::Cap;
    use libipc::interfaces::{
        DatasetEntry, MachineInfo, PoolError, PoolStatus, SvcError, SvcInfo, SwitchInfo, VmadmConsole, VmadmImport, VmadmOutput,
        VnicError, VnicInfo, VolumeInfo, console, pool, svc, vmadm, vnic,
    };
    use shell::Answer;
    use libipc::kernel::KernelTransport;
    use libipc::sys;

    pub struct KernelSystem {
        /// The console server (typed input for an attached VM: `feed`).
        pub console: CapSlot,
        pub zone: Option<CapSlot>,
        pub init: Option<CapSlot>,
        pub storaged: Option<CapSlot>,
        pub netd: Option<CapSlot>,
    }

    impl KernelSystem {
        fn pool(&self) -> Result<pool::Client<KernelTransport>, String> {
            let ep = self.storaged.ok_or_else(|| missing("storaged"))?;
            Ok(pool::Client::new(KernelTransport::new(Cap::from_slot(ep))))
        }
    }

    /// Every page of a paged netd list (`vnic.show`, `vnic_names`,
    /// `stats`): pages from number `from` on, each non-empty until the
    /// last; numbers only grow, so this ends.
    fn all_pages<T>(
        mut page_from: impl FnMut(u32) -> Result<Result<Vec<T>, VnicError>, String>,
        number: impl Fn(&T) -> u32,
    ) -> Answer<Vec<T>, VnicError> {
        let mut all: Vec<T> = Vec::new();
        let mut from = 0u32;
        loop {
            let page = match page_from(from)? {
                Ok(p) => p,
                Err(e) => return Ok(Err(e)),
            };
            let Some(last) = page.last().map(&number) else { return Ok(Ok(all)) };
            all.extend(page);
            match last.checked_add(1) {
                Some(n) if n > from => from = n,
                _ => return Ok(Ok(all)),
            }
        }
    }

    fn missing(what: &str) -> String {
        alloc::format!("no {what} endpoint was granted (manifest: calls)")
    }

    impl shell::System for KernelSystem {
        fn vmadm(&mut self, program: &str, args: Vec<String>, stdin: String) -> Result<VmadmOutput, String> {
            let ep = self.zone.ok_or_else(|| missing("zone-server"))?;
            // `vmadm.begin` (+ `vmadm.step` while a stop waits for its
            // guest: zone-server serves others meanwhile) + `vmadm.read`:
            // the program's own method and no reply-size limit.
            let client = vmadm::Client::new(KernelTransport::new(Cap::from_slot(ep)));
            let pause = || {
                let _ = libipc::sys::wait(crate::IDLE_SLOT, libipc::interfaces::VMADM_STEP_PAUSE_MS * 1_000_000);
            };
            libipc::interfaces::vmadm_run_whole(&client, program, args, stdin, pause).map_err(|e| e.to_string())
        }

        fn import_begin(&mut self, args: Vec<String>) -> Result<VmadmImport, String> {
            let ep = self.zone.ok_or_else(|| missing("zone-server"))?;
            vmadm::Client::new(KernelTransport::new(Cap::from_slot(ep))).import_begin(args).map_err(|e| e.to_string())
        }

        fn import_step(&mut self) -> Result<VmadmImport, String> {
            let ep = self.zone.ok_or_else(|| missing("zone-server"))?;
            vmadm::Client::new(KernelTransport::new(Cap::from_slot(ep))).import_step().map_err(|e| e.to_string())
        }

        fn services(&mut self) -> Result<Vec<SvcInfo>, String> {
            let ep = self.init.ok_or_else(|| missing("proc (init's)"))?;
            svc::Client::new(KernelTransport::new(Cap::from_slot(ep))).services().map_err(|e| e.to_string())
        }

        fn machine(&mut self) -> Result<MachineInfo, String> {
            let ep = self.init.ok_or_else(|| missing("proc (init's)"))?;
            svc::Client::new(KernelTransport::new(Cap::from_slot(ep))).machine().map_err(|e| e.to_string())
        }

        fn pool_status(&mut self) -> Result<PoolStatus, String> {
            self.pool()?.status().map_err(|e| e.to_string())?.map_err(|e| e.to_string())
        }

        fn pool_scrub(&mut self, stop: bool) -> Result<(), String> {
            let c = self.pool()?;
            let r = if stop { c.scrub_stop() } else { c.scrub_start() };
            r.map_err(|e| e.to_string())?.map_err(|e| e.to_string())
        }

        fn datasets(&mut self) -> Result<Vec<DatasetEntry>, String> {
            let c = self.pool()?;
            let mut all = Vec::new();
            let mut after = String::new();
            // Each page holds at least one name, so this ends.
            loop {
                let page = c.list(after).map_err(|e| e.to_string())?.map_err(|e| e.to_string())?;
                all.extend(page.datasets);
                match page.next {
                    Some(n) => after = n,
                    None => return Ok(all),
                }
            }
        }

        fn pool_get(&mut self, name: &str) -> Answer<VolumeInfo, PoolError> {
            self.pool()?.get(name.into()).map_err(|e| e.to_string())
        }

        fn pool_user_props(&mut self, name: &str) -> Answer<Vec<(String, String)>, PoolError> {
            let c = self.pool()?;
            let mut keys = Vec::new();
            let mut after = String::new();
            // Each page holds at least one key, so this ends.
            loop {
                let page = match c.props(name.into(), after).map_err(|e| e.to_string())? {
                    Ok(p) => p,
                    Err(e) => return Ok(Err(e)),
                };
                keys.extend(page.keys);
                match page.next {
                    Some(n) => after = n,
                    None => break,
                }
            }
            let mut out = Vec::with_capacity(keys.len());
            for key in keys {
                let mut bytes = Vec::new();
                // A chunk is never empty before the end, so this ends.
                loop {
                    let chunk = match c.get_prop(name.into(), key.clone(), bytes.len() as u32).map_err(|e| e.to_string())? {
                        Ok(ch) => ch,
                        Err(e) => return Ok(Err(e)),
                    };
                    let done = chunk.bytes.is_empty();
                    bytes.extend(chunk.bytes);
                    if done || bytes.len() >= chunk.total_bytes as usize {
                        break;
                    }
                }
                out.push((key, String::from_utf8_lossy(&bytes).into_owned()));
            }
            Ok(Ok(out))
        }

        fn pool_set(&mut self, name: &str, key: &str, value: &str) -> Answer<(), PoolError> {
            let c = self.pool()?;
            // A long value goes in pieces (each under one message), the
            // first replacing the old value, the others appended.
            const PIECE: usize = 1024;
            let mut rest = value;
            let mut first = true;
            while first || !rest.is_empty() {
                let mut end = rest.len().min(PIECE);
                while !rest.is_char_boundary(end) {
                    end -= 1;
                }
                match c.set(name.into(), key.into(), rest[..end].into(), !first).map_err(|e| e.to_string())? {
                    Ok(()) => {}
                    Err(e) => return Ok(Err(e)),
                }
                rest = &rest[end..];
                first = false;
            }
            Ok(Ok(()))
        }

        fn pool_snapshot(&mut self, name: &str) -> Answer<(), PoolError> {
            self.pool()?.snapshot(name.into()).map_err(|e| e.to_string())
        }

        fn pool_clone(&mut self, snapshot: &str, name: &str) -> Answer<(), PoolError> {
            self.pool()?.clone_snapshot(snapshot.into(), name.into()).map_err(|e| e.to_string())
        }

        fn pool_rollback(&mut self, snapshot: &str) -> Answer<(), PoolError> {
            self.pool()?.rollback(snapshot.into()).map_err(|e| e.to_string())
        }

        fn pool_destroy(&mut self, name: &str, recursive: bool) -> Answer<(), PoolError> {
            self.pool()?.destroy(name.into(), recursive).map_err(|e| e.to_string())
        }

        fn pool_rename(&mut self, from: &str, to: &str) -> Answer<(), PoolError> {
            self.pool()?.rename(from.into(), to.into()).map_err(|e| e.to_string())
        }

        fn pool_send(&mut self, snapshot: &str, from: Option<&str>) -> Answer<u32, PoolError> {
            let r = self.pool()?.send(snapshot.into(), from.map(String::from)).map_err(|e| e.to_string())?;
            Ok(r.map(|o| o.stream))
        }

        fn pool_send_chunk(&mut self, stream: u32, offset: u64) -> Answer<Vec<u8>, PoolError> {
            self.pool()?.send_chunk(stream, offset).map_err(|e| e.to_string())
        }

        fn pool_receive(&mut self, target: &str) -> Answer<u32, PoolError> {
            self.pool()?.receive(target.into()).map_err(|e| e.to_string())
        }

        fn pool_receive_chunk(&mut self, stream: u32, bytes: &[u8]) -> Answer<u64, PoolError> {
            self.pool()?.receive_chunk(stream, bytes.to_vec()).map_err(|e| e.to_string())
        }

        fn pool_receive_end(&mut self, stream: u32) -> Answer<String, PoolError> {
            self.pool()?.receive_end(stream).map_err(|e| e.to_string())
        }

        fn pool_close_stream(&mut self, stream: u32) -> Answer<(), PoolError> {
            self.pool()?.close_stream(stream).map_err(|e| e.to_string())
        }

        fn svcadm(&mut self, verb: &str, name: &str) -> Answer<(), SvcError> {
            let ep = self.init.ok_or_else(|| missing("proc (init's)"))?;
            let c = svc::Client::new(KernelTransport::new(Cap::from_slot(ep)));
            let r = match verb {
                "restart" => c.restart(name.into()),
                "disable" => c.disable(name.into()),
                _ => c.enable(name.into()),
            };
            r.map_err(|e| e.to_string())
        }

        fn vnic_switches(&mut self) -> Answer<Vec<SwitchInfo>, VnicError> {
            let ep = self.netd.ok_or_else(|| missing("netd"))?;
            vnic::Client::new(KernelTransport::new(Cap::from_slot(ep))).switches().map_err(|e| e.to_string())
        }

        fn vnic_show(&mut self) -> Answer<Vec<VnicInfo>, VnicError> {
            let ep = self.netd.ok_or_else(|| missing("netd"))?;
            let c = vnic::Client::new(KernelTransport::new(Cap::from_slot(ep)));
            all_pages(|from| c.show(from).map_err(|e| e.to_string()), |v| v.vnic)
        }

        fn vnic_names(&mut self) -> Answer<Vec<(u32, String)>, VnicError> {
            let ep = self.netd.ok_or_else(|| missing("netd"))?;
            let c = vnic::Client::new(KernelTransport::new(Cap::from_slot(ep)));
            all_pages(|from| c.vnic_names(from).map_err(|e| e.to_string()), |v| v.0)
        }

        fn vnic_stats(&mut self) -> Answer<Vec<libipc::interfaces::VnicStats>, VnicError> {
            let ep = self.netd.ok_or_else(|| missing("netd"))?;
            let c = vnic::Client::new(KernelTransport::new(Cap::from_slot(ep)));
            all_pages(|from| c.stats(from).map_err(|e| e.to_string()), |v| v.vnic)
        }

        fn dladm(&mut self, op: shell::dladm::LinkOp) -> Answer<u32, VnicError> {
            use shell::dladm::LinkOp;
            let ep = self.netd.ok_or_else(|| missing("netd"))?;
            let c = vnic::Client::new(KernelTransport::new(Cap::from_slot(ep)));
            let r = match op {
                LinkOp::CreateEtherstub(n) => c.create_etherstub(n).map(|r| r.map(|()| 0)),
                LinkOp::DeleteEtherstub(n) => c.delete_etherstub(n).map(|r| r.map(|()| 0)),
                LinkOp::CreateVnic { name, line } => c.create_vnic(name, line),
                LinkOp::DeleteVnic(n) => c.delete_vnic(n).map(|r| r.map(|()| 0)),
            };
            r.map_err(|e| e.to_string())
        }

        fn clock(&mut self) -> (u64, u64) {
            (sys::unix_seconds().unwrap_or(0), sys::clock_ns().unwrap_or(0) / 1_000_000_000)
        }

        fn console_attach(&mut self, uuid: &str) -> Result<VmadmConsole, String> {
            let ep = self.zone.ok_or_else(|| missing("zone-server"))?;
            vmadm::Client::new(KernelTransport::new(Cap::from_slot(ep))).console(uuid.into()).map_err(|e| e.to_string())
        }

        fn console_feed(&mut self, target: u64, bytes: &[u8]) -> Result<usize, String> {
            // One request carries at most a read's worth; the rest is
            // offered again.
            let n = bytes.len().min(2048);
            let c = console::Client::new(KernelTransport::new(Cap::from_slot(self.console)));
            match c.feed(target, bytes[..n].to_vec()) {
                Ok(Ok(taken)) => Ok(taken as usize),
                Ok(Err(refused)) => Err(refused.to_string()),
                Err(e) => Err(e.to_string()),
            }
        }

        fn poweroff(&mut self) -> String {
            match sys::machine_exit(alcove_rt::start::SLOT_CONSOLE, 0) {
                Ok(()) => "the machine did not end".into(),
                Err(e) => alloc::format!("this shell may not end the machine (manifest: machine_exit): {e}"),
            }
        }
    }
}

/// Bytes of output per `console.write` (under the console's per-request
/// limit, cut at a character boundary).
#[cfg(target_os = "none")]
const WRITE_CHUNK: usize = 2048;
/// How long the shell sleeps when nothing was typed.
#[cfg(target_os = "none")]
const IDLE_NS: u64 = 20_000_000;
/// Most typed bytes taken per read (the console gives at most 2 KiB).
#[cfg(target_os = "none")]
const READ_MAX: u32 = 2048;
/// How often, while attached to a VM's console, zone-server is asked
/// whether the VM still runs (a stopped VM detaches the terminal).
#[cfg(target_os = "none")]
const CHECK_NS: u64 = 1_000_000_000;
/// The notification the shell sleeps on (nobody signals it).
#[cfg(target_os = "none")]
const IDLE_SLOT: abi::CapSlot = alcove_rt::start::SLOT_FREE;

#[cfg(target_os = "none")]
fn write(con: &libipc::interfaces::console::Client<libipc::kernel::KernelTransport>, bytes: &[u8]) {
    let text = alloc::string::String::from_utf8_lossy(bytes);
    let mut rest: &str = &text;
    while !rest.is_empty() {
        let mut end = rest.len().min(WRITE_CHUNK);
        while !rest.is_char_boundary(end) {
            end -= 1;
        }
        let _ = con.write(rest[..end].into());
        rest = &rest[end..];
    }
}

#[cfg(target_os = "none")]
fn main(start: alcove_rt::Start) -> u64 {
    use libipc::interfaces::console;
    let info = start.server("shell");
    let Some(console_ep) = info.calls("console") else {
        log::error!("no \"console\" endpoint was granted");
        return 1;
    };
    let con = console::Client::new(libipc::kernel::KernelTransport::new(libipc::cap::Cap::from_slot(console_ep)));
    if let Err(e) = libipc::sys::create(abi::ObjectType::Notification, IDLE_SLOT, 0) {
        log::error!("cannot create the idle notification: {e}");
        return 1;
    }
    let system = machine::KernelSystem {
        console: console_ep,
        zone: info.calls("zone-server"),
        init: info.calls("proc"),
        storaged: info.calls("storaged"),
        netd: info.calls("netd"),
    };
    let mut sh = shell::Shell::new(system, shell::Config::from_args(&info.args));
    // init answers on its endpoint only once every server is up: waiting
    // for it keeps the prompt below the start-up lines.
    let _ = shell::System::machine(&mut sh.system);
    let banner =
        alloc::format!("\nAlcove operator shell on {} (type help)\n{}", sh.config.hostname, sh.prompt());
    write(&con, banner.as_bytes());
    // While attached to a VM's console: when zone-server was last asked
    // whether the VM still runs.
    let mut checked_ns = 0u64;
    loop {
        if sh.attached.is_some() {
            let now = libipc::sys::clock_ns().unwrap_or(0);
            if now.saturating_sub(checked_ns) >= CHECK_NS {
                checked_ns = now;
                sh.check_attached(&mut |out| write(&con, out));
            }
        }
        if sh.holding() {
            // The VM's queue at the console is full: what was typed waits
            // there and in the UART until the VMM has read some of it.
            sh.pump_to(&mut |out| write(&con, out));
            if sh.holding() {
                let _ = libipc::sys::wait(IDLE_SLOT, IDLE_NS);
            }
            continue;
        }
        match con.read(READ_MAX) {
            Ok(bytes) if !bytes.is_empty() => {
                // The echo of a line goes out before its command runs.
                sh.input_to(&bytes, &mut |out| write(&con, out));
            }
            Ok(_) => {
                let _ = libipc::sys::wait(IDLE_SLOT, IDLE_NS);
            }
            Err(e) => {
                log::error!("console read failed: {e}");
                let _ = libipc::sys::wait(IDLE_SLOT, 1_000_000_000);
            }
        }
    }
}

#[cfg(target_os = "none")]
alcove_rt::entry!(main);

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("shell runs only on Alcove (build it for x86_64-unknown-none)");
}
