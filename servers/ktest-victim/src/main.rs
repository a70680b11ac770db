//! ktest-victim: a server of the test manifest that answers `status` and
//! panics or faults when asked (`fault_injection`), so ktest-user can check
//! that init restarts a server that dies either way and that it answers
//! again.
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

    pub fn main(start: alcove_rt::Start) -> u64 {
        let info = start.server("ktest-victim");
        let Some(slot) = info.serves("victim") else {
            log::error!("no \"victim\" endpoint was granted");
            return 1;
        };
        alcove_rt::serve_forever(slot, Victim(Service::new("victim", 1)))
    }
}

#[cfg(target_os = "none")]
alcove_rt::entry!(victim::main);

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("ktest-victim runs only on Alcove (build it for x86_64-unknown-none)");
}
