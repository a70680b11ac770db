//! The SmartOS metadata service on the VM's second serial port (COM2):
//! what the guest writes there goes to an `alcove_mdata::MetadataServer`
//! made from the VM's description (`uuid`, `alias`, `hostname`,
//! `customer_metadata`, as zone-server passes them in `vm.json`), and its
//! answers go back into COM2's receive FIFO. `mdata-get sdc:hostname` in the
//! guest is then `echo "GET sdc:hostname" > /dev/ttyS1` and a read of the
//! answer (v1), or the v2 framed form; malformed requests get the
//! protocol's error answers or are dropped, never a crash.
//!
//! Bounds: the server keeps at most `alcove_mdata::MAX_LINE` bytes of a
//! request line and answers wait here while COM2's input is full (the
//! guest reads them at its pace); a guest that writes without reading
//! stops getting answers queued past [`PENDING_LIMIT`] bytes.

use alloc::string::String;
use alloc::vec::Vec;

use serde_json::{Map, Value};

use crate::config::VmConfig;
use crate::vm::platform::Platform;

/// Answer bytes kept for a guest that does not read them, at most.
pub const PENDING_LIMIT: usize = 64 * 1024;

/// COM2's metadata service for one VM.
pub struct MetadataPort {
    server: alcove_mdata::MetadataServer,
    /// Answers COM2's input had no room for yet.
    pending: Vec<u8>,
    /// Answer bytes dropped because the guest did not read them.
    pub dropped: u64,
}

impl MetadataPort {
    /// The service for the VM `config` describes.
    pub fn new(config: &VmConfig) -> Self {
        let mut vm = Map::new();
        if let Some(u) = &config.uuid {
            vm.insert("uuid".into(), Value::String(alloc::format!("{u}")));
        }
        if let Some(a) = &config.alias {
            vm.insert("alias".into(), Value::String(a.clone()));
        }
        if let Some(h) = &config.hostname {
            vm.insert("hostname".into(), Value::String(h.clone()));
        }
        vm.insert("brand".into(), Value::String("bhyve".into()));
        vm.insert("ram".into(), Value::from(config.ram_mib));
        vm.insert("vcpus".into(), Value::from(config.vcpus));
        let cm: Map<String, Value> =
            config.customer_metadata.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();
        vm.insert("customer_metadata".into(), Value::Object(cm));
        Self { server: alcove_mdata::MetadataServer::new(Value::Object(vm)), pending: Vec::new(), dropped: 0 }
    }

    /// Takes what the guest wrote to COM2, answers it, and hands COM2 as
    /// much of the answers as it has room for. Returns whether anything moved.
    pub fn pump(&mut self, platform: &mut Platform, now_ns: u64) -> bool {
        let asked = platform.take_metadata_output();
        if !asked.is_empty() {
            let answer = self.server.feed(&asked);
            let room = PENDING_LIMIT.saturating_sub(self.pending.len());
            let taken = answer.len().min(room);
            self.dropped += (answer.len() - taken) as u64;
            self.pending.extend_from_slice(&answer[..taken]);
        }
        let mut moved = !asked.is_empty();
        if !self.pending.is_empty() {
            let n = platform.push_metadata_input(&self.pending, now_ns);
            self.pending.drain(..n);
            moved |= n > 0;
        }
        moved
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::uart16550::COM2_BASE;
    use crate::virtio::queue::VecMemory;

    /// The guest's side: writes `line` to COM2's THR, lets the service
    /// answer, reads COM2's RBR while LSR says data is ready.
    fn ask(p: &mut Platform, md: &mut MetadataPort, line: &[u8]) -> Vec<u8> {
        for &b in line {
            p.io_write(COM2_BASE, 1, u32::from(b), 0, &mut VecMemory::new(0, 0x1000));
        }
        let mut got = Vec::new();
        for _ in 0..4 {
            md.pump(p, 0);
            while p.io_read(COM2_BASE + 5, 1, 0) & 1 != 0 {
                got.push(p.io_read(COM2_BASE, 1, 0) as u8);
            }
        }
        got
    }

    fn config() -> VmConfig {
        VmConfig::from_json(
            r##"{"brand": "bhyve", "uuid": "8a7f3c2e-5b1d-4e6f-9a0b-1c2d3e4f5a6b", "alias": "md0", "hostname": "md-host",
                "ram": 64, "kernel": "/k", "customer_metadata": {"role": "web", "user-script": "#!/bin/sh\n.dot\n"}}"##,
        )
        .unwrap()
    }

    #[test]
    fn a_guest_reads_its_hostname_and_customer_metadata_on_com2() {
        let mut p = Platform::new(0, 0);
        let mut md = MetadataPort::new(&config());
        assert_eq!(ask(&mut p, &mut md, b"GET sdc:hostname\n"), b"SUCCESS\nmd-host\n.\n");
        assert_eq!(ask(&mut p, &mut md, b"GET role\n"), b"SUCCESS\nweb\n.\n");
        assert_eq!(ask(&mut p, &mut md, b"GET sdc:uuid\n"), b"SUCCESS\n8a7f3c2e-5b1d-4e6f-9a0b-1c2d3e4f5a6b\n.\n");
        // A value line that begins with '.' is escaped.
        assert_eq!(ask(&mut p, &mut md, b"GET user-script\n"), b"SUCCESS\n#!/bin/sh\n..dot\n\n.\n");
        assert_eq!(ask(&mut p, &mut md, b"GET nosuch\n"), b"NOTFOUND\n");
        assert_eq!(ask(&mut p, &mut md, b"NEGOTIATE V2\n"), b"V2_OK\n");
        // Written in pieces, answered once whole.
        assert!(ask(&mut p, &mut md, b"GET ro").is_empty());
        assert_eq!(ask(&mut p, &mut md, b"le\n"), b"SUCCESS\nweb\n.\n");
    }

    #[test]
    fn malformed_requests_get_errors_and_the_port_goes_on() {
        let mut p = Platform::new(0, 0);
        let mut md = MetadataPort::new(&config());
        assert_eq!(ask(&mut p, &mut md, b"BOGUS\n"), b"FAILURE\n");
        assert_eq!(ask(&mut p, &mut md, b"\n"), b"invalid command\n");
        assert_eq!(ask(&mut p, &mut md, b"\xff\xfe\x00GET\n"), b"invalid command\n");
        // A v2 frame with a wrong CRC is dropped without an answer.
        assert!(ask(&mut p, &mut md, b"V2 21 00000000 dc8b3f6a GET aG9zdG5hbWU=\n").is_empty());
        // A very long line is dropped as it arrives; the next one works.
        let long = alloc::vec![b'x'; alcove_mdata::MAX_LINE + 10];
        ask(&mut p, &mut md, &long);
        ask(&mut p, &mut md, b"\n");
        assert_eq!(ask(&mut p, &mut md, b"GET sdc:hostname\n"), b"SUCCESS\nmd-host\n.\n");
    }

    #[test]
    fn answers_a_guest_does_not_read_are_bounded() {
        let mut p = Platform::new(0, 0);
        let mut md = MetadataPort::new(&config());
        for _ in 0..20_000 {
            for &b in b"GET sdc:hostname\n" {
                p.io_write(COM2_BASE, 1, u32::from(b), 0, &mut VecMemory::new(0, 0x1000));
            }
            md.pump(&mut p, 0);
        }
        assert!(md.pending.len() <= PENDING_LIMIT);
        assert!(md.dropped > 0);
    }
}
