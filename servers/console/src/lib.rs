//! The console server: servers send it text over the `console` interface and
//! it writes whole lines to the operator's console, so output from different
//! processes never interleaves mid-line. The sink is a closure, so the host
//! tests (and an appliance build) can capture what is written.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

use alcove_rt::Service;
use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::string::String;
use alloc::vec::Vec;
use libipc::interfaces::{console, status, ServerStatus};

pub const VERSION: u32 = 1;
/// Typed input held for readers; older bytes go when it is full.
pub const INPUT_LIMIT: usize = 4096;
/// Most bytes one `read` returns (a reply fits the IPC buffer).
pub const MAX_READ: usize = 2048;

/// Longest text written from one request (a request carries at most
/// `libipc::wire::MAX_PAYLOAD_BYTES`); longer text is cut, marked.
pub const MAX_WRITE: usize = 3072;

/// Reads what was typed, handing each byte to the closure it is given.
pub type InputSource = Box<dyn FnMut(&mut dyn FnMut(u8))>;

pub struct Console {
    service: Service,
    sink: Box<dyn FnMut(&str)>,
    pub bytes_written: u64,
    input: VecDeque<u8>,
    /// Input bytes dropped because nobody read them in time.
    pub input_dropped: u64,
    /// Where typed input comes from (the serial port's receiver on Alcove):
    /// called when the server is notified of new input.
    source: Option<InputSource>,
}

impl Console {
    pub fn new(sink: Box<dyn FnMut(&str)>) -> Self {
        Self {
            service: Service::new("console", VERSION),
            sink,
            bytes_written: 0,
            input: VecDeque::new(),
            input_dropped: 0,
            source: None,
        }
    }

    /// Reads typed input from `source` whenever the server is notified.
    pub fn with_input(mut self, source: InputSource) -> Self {
        self.source = Some(source);
        self
    }

    /// Keeps typed bytes for the next `read`.
    pub fn push_input(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if self.input.len() == INPUT_LIMIT {
                self.input.pop_front();
                self.input_dropped += 1;
            }
            self.input.push_back(b);
        }
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

    fn read(&mut self, max: u32) -> Vec<u8> {
        self.service.requests += 1;
        let n = self.input.len().min(max as usize).min(MAX_READ);
        self.input.drain(..n).collect()
    }
}

impl libipc::Dispatch for Console {
    fn dispatch(&mut self, interface: u32, request: &[u8]) -> Result<Vec<u8>, libipc::RemoteError> {
        match interface {
            status::ID => status::dispatch(self, interface, request),
            _ => console::dispatch(self, interface, request),
        }
    }

    fn notified(&mut self, _bits: u64) {
        if let Some(mut source) = self.source.take() {
            let mut got = Vec::new();
            source(&mut |b| got.push(b));
            self.push_input(&got);
            self.source = Some(source);
        }
    }
}

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

    #[test]
    fn typed_input_is_read_once_and_bounded() {
        use libipc::Dispatch;
        let mut typed: std::vec::Vec<u8> = b"ls\n".to_vec();
        let mut c = Console::new(Box::new(|_| {})).with_input(Box::new(move |put| {
            for b in typed.drain(..) {
                put(b);
            }
        }));
        c.notified(4);
        assert_eq!(console::Server::read(&mut c, 2), b"ls");
        assert_eq!(console::Server::read(&mut c, 100), b"\n");
        assert!(console::Server::read(&mut c, 100).is_empty());
        c.push_input(&[7u8; INPUT_LIMIT + 5]);
        assert_eq!(c.input_dropped, 5);
        assert_eq!(console::Server::read(&mut c, u32::MAX).len(), MAX_READ);
    }
}
