//! The console server: servers send it text over the `console` interface and
//! it writes whole lines to the operator's console, so output from different
//! processes never interleaves mid-line. The sink is a closure, so the host
//! tests (and an appliance build) can capture what is written.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

use alcove_rt::Service;
use alloc::boxed::Box;
use alloc::string::String;
use libipc::interfaces::{console, status, ServerStatus};

pub const VERSION: u32 = 1;
/// Longest text written from one request (a request carries at most
/// `libipc::wire::MAX_PAYLOAD_BYTES`); longer text is cut, marked.
pub const MAX_WRITE: usize = 3072;

pub struct Console {
    service: Service,
    sink: Box<dyn FnMut(&str)>,
    pub bytes_written: u64,
}

impl Console {
    pub fn new(sink: Box<dyn FnMut(&str)>) -> Self {
        Self { service: Service::new("console", VERSION), sink, bytes_written: 0 }
    }
}

impl status::Server for Console {
    fn status(&mut self) -> ServerStatus {
        self.service.status()
    }
    fn echo(&mut self, value: u64) -> u64 {
        self.service.echo(value)
    }
}

impl console::Server for Console {
    fn write(&mut self, text: String) {
        self.service.requests += 1;
        let mut end = text.len().min(MAX_WRITE);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        (self.sink)(&text[..end]);
        if end < text.len() {
            (self.sink)("…[cut]\n");
        }
        self.bytes_written += end as u64;
    }
}

libipc::impl_dispatch!(Console: status, console);

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use libipc::in_process;
    use std::sync::{Arc, Mutex};

    #[test]
    fn writes_reach_the_sink_and_status_counts_them() {
        let out = Arc::new(Mutex::new(String::new()));
        let sink_out = out.clone();
        let (client, mut server_end) = in_process::channel(4);
        let status_client_end = client.clone();
        let t = std::thread::spawn(move || {
            let mut c = Console::new(Box::new(move |s| sink_out.lock().unwrap().push_str(s)));
            server_end.serve_until_closed(&mut c);
        });
        let con = console::Client::new(client);
        con.write("hello\n".into()).unwrap();
        con.write("x".repeat(MAX_WRITE + 10)).unwrap();
        let st = status::Client::new(status_client_end).status().unwrap();
        assert_eq!(st.name, "console");
        assert_eq!(st.requests_served, 3);
        drop(con);
        t.join().unwrap();
        let text = out.lock().unwrap().clone();
        assert!(text.starts_with("hello\n"));
        assert!(text.ends_with("…[cut]\n"));
        assert_eq!(text.len(), 6 + MAX_WRITE + "…[cut]\n".len());
    }
}
