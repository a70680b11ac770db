//! ktest-victim: a server of the test manifest that answers `status` and
//! panics or faults when asked (`fault_injection`), so ktest-user can check
//! that init restarts a server that dies either way and that it answers
//! again. With the manifest argument `storage-client` (the storage suite)
//! it first opens storaged's disk 0 until storaged refuses, and holds those
//! rings without ever closing them: when it panics, the storage suite checks
//! that storaged takes them back. With `proc-first` (the test manifest)
//! it calls init's `proc` endpoint before it serves `victim`, as
//! zone-server may while init's ready round waits for its status.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
mod victim {
    use alcove_rt::Service;
    use libipc::interfaces::{fault_injection, status, ServerStatus};

    pub struct Victim(pub Service);

    impl status::Server for Victim {
        fn status(&mut self) -> ServerStatus {
            self.0.status()
        }
        fn echo(&mut self, value: u64) -> u64 {
            self.0.echo(value)
        }
    }

    impl fault_injection::Server for Victim {
        fn panic_now(&mut self) {
            panic!("asked to panic");
        }
        fn fault_now(&mut self) {
            // SAFETY: deliberately not safe: the point is the page fault
            // (address 0x10 is never mapped), which the kernel turns into
            // the end of this process.
            unsafe { (0x10 as *mut u64).write_volatile(1) };
        }
    }

    libipc::impl_dispatch!(Victim: status, fault_injection);

    /// Opens disk 0 through `storaged` until it refuses (each ring's frame
    /// received in a fresh slot from `first_slot`, the process watched
    /// through a copy of its capability), and returns how many it opened.
    fn hold_rings(storaged: abi::CapSlot, first_slot: abi::CapSlot) -> u32 {
        use libipc::cap::Cap;
        use libipc::interfaces::storage;
        use libipc::kernel::CapTransport;
        use libipc::sys;
        let token = first_slot;
        if let Err(e) = sys::cap_copy(alcove_rt::start::SLOT_SELF, token, abi::Rights::NONE, 0) {
            log::error!("storage-client: copy of the process capability: {e}");
            return 0;
        }
        let mut held = 0;
        loop {
            let t = CapTransport::new(Cap::from_slot(storaged), &[first_slot + 1 + held]).sending(&[token]);
            match storage::Client::new(&t).open(0) {
                Ok(Ok(_)) if t.received() == 1 => held += 1,
                Ok(Ok(_)) => log::error!("storage-client: a ring came without its frame"),
                Ok(Err(e)) => {
                    log::info!("storage-client: holding {held} rings; storaged says: {e}");
                    return held;
                }
                Err(e) => {
                    log::error!("storage-client: open: {e}");
                    return held;
                }
            }
            if held > 64 {
                log::error!("storage-client: storaged never refuses");
                return held;
            }
        }
    }

    pub fn main(start: alcove_rt::Start) -> u64 {
        let info = start.server("ktest-victim");
        let Some(slot) = info.serves("victim") else {
            log::error!("no \"victim\" endpoint was granted");
            return 1;
        };
        if info.args.iter().any(|a| a == "storage-client") {
            match info.calls("storaged") {
                Some(storaged) => {
                    hold_rings(storaged, alcove_rt::start::SLOT_FREE + 64);
                }
                None => log::error!("storage-client: no \"storaged\" endpoint was granted"),
            }
        }
        if info.args.iter().any(|a| a == "proc-first") {
            match info.calls("proc") {
                Some(proc) => {
                    let svc = libipc::interfaces::svc::Client::new(libipc::kernel::KernelTransport::new(
                        libipc::cap::Cap::from_slot(proc),
                    ));
                    match svc.services() {
                        Ok(s) => log::info!("proc-first: init answered ({} services) before the victim serves", s.len()),
                        Err(e) => log::error!("proc-first: init's proc: {e}"),
                    }
                }
                None => log::error!("proc-first: no \"proc\" endpoint was granted"),
            }
        }
        alcove_rt::serve_forever(slot, Victim(Service::new("victim", 1)))
    }
}

#[cfg(target_os = "none")]
alcove_rt::entry!(victim::main);

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("ktest-victim runs only on Alcove (build it for x86_64-unknown-none)");
}
