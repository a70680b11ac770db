//! vmm-server: the per-VM monitor: guest memory, vCPUs and device models.
//!
//! This is the server's logic as a library (host-testable, embeddable in
//! appliance builds with the in-process transport); `src/bin/vmm-server.rs` is
//! the thin process that wires it to its capabilities. For now it answers
//! the `status` interface; its real work arrives with later issues.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod mmio;

use alcove_rt::Service;
use libipc::interfaces::{status, ServerStatus};

pub const VERSION: u32 = 1;

pub struct VmmServer {
    service: Service,
}

impl VmmServer {
    pub fn new() -> Self {
        Self { service: Service::new("vmm-server", VERSION) }
    }
}

impl Default for VmmServer {
    fn default() -> Self {
        Self::new()
    }
}

impl status::Server for VmmServer {
    fn status(&mut self) -> ServerStatus {
        self.service.status()
    }
    fn echo(&mut self, value: u64) -> u64 {
        self.service.echo(value)
    }
}

libipc::impl_dispatch!(VmmServer: status);

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use libipc::in_process;

    #[test]
    fn answers_status_over_the_in_process_transport() {
        let (client, mut server_end) = in_process::channel(4);
        let t = std::thread::spawn(move || {
            let mut s = VmmServer::new();
            server_end.serve_until_closed(&mut s)
        });
        let c = status::Client::new(client);
        let st = c.status().unwrap();
        assert_eq!(st.name, "vmm-server");
        assert_eq!(st.version, VERSION);
        assert_eq!(c.echo(42).unwrap(), 42);
        assert_eq!(c.status().unwrap().requests_served, 3);
        drop(c);
        assert_eq!(t.join().unwrap(), 3);
    }
}
