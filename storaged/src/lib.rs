//! storaged: disks, the copy-on-write pool, datasets and volumes.
//!
//! This is the server's logic as a library (host-testable, embeddable in
//! appliance builds with the in-process transport); `src/bin/storaged.rs` is
//! the thin process that wires it to its capabilities. For now it answers
//! the `status` interface; its real work arrives with later issues.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

use alcove_rt::Service;
use libipc::interfaces::{status, ServerStatus};

pub const VERSION: u32 = 1;

pub struct Storaged {
    service: Service,
}

impl Storaged {
    pub fn new() -> Self {
        Self { service: Service::new("storaged", VERSION) }
    }
}

impl Default for Storaged {
    fn default() -> Self {
        Self::new()
    }
}

impl status::Server for Storaged {
    fn status(&mut self) -> ServerStatus {
        self.service.status()
    }
    fn echo(&mut self, value: u64) -> u64 {
        self.service.echo(value)
    }
}

libipc::impl_dispatch!(Storaged: status);

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use libipc::in_process;

    #[test]
    fn answers_status_over_the_in_process_transport() {
        let (client, mut server_end) = in_process::channel(4);
        let t = std::thread::spawn(move || {
            let mut s = Storaged::new();
            server_end.serve_until_closed(&mut s)
        });
        let c = status::Client::new(client);
        let st = c.status().unwrap();
        assert_eq!(st.name, "storaged");
        assert_eq!(st.version, VERSION);
        assert_eq!(c.echo(42).unwrap(), 42);
        assert_eq!(c.status().unwrap().requests_served, 3);
        drop(c);
        assert_eq!(t.join().unwrap(), 3);
    }
}
