//! The SmartOS metadata service on the VM's second serial port (COM2):
//! what the guest writes there goes to an `alcove_mdata::MetadataServer`
//! made from the VM's description (`uuid`, `alias`, `hostname`,
//! `customer_metadata`, `resolvers`, and what only the metadata service
//! reads: `tags`, `routes`, `owner_uuid`, `server_uuid`,
//! `create_timestamp`, the guest-readable part of
//! `internal_metadata`, ... (`VmConfig::metadata`), as zone-server passes
//! them in `vm.json`, and `nics` as vmadm shows them, made from the VM's NICs:
//! `sdc:nics` and `sdc:resolvers` are what cloud-init's SmartOS
//! datasource configures the guest's network from), and its
//! answers go back into COM2's receive FIFO. `mdata-get sdc:hostname` in the
//! guest is then `echo "GET sdc:hostname" > /dev/ttyS1` and a read of the
//! answer (v1), or the v2 framed form; malformed requests get the
//! protocol's error answers or are dropped, never a crash.
//!
//! Bounds: the server keeps at most `alcove_mdata::MAX_LINE` bytes of a
//! request line and answers wait here while COM2's input is full (the
//! guest reads them at its pace); a guest that writes without reading
//! stops getting answers queued past [`PENDING_LIMIT`] bytes.

use alloc::collections::VecDeque;
use alloc::string::String;
use alloc::vec::Vec;

use serde_json::{Map, Value};

use crate::config::VmConfig;
use crate::vm::platform::Platform;

/// Answer bytes kept for a guest that does not read them, at most.
pub const PENDING_LIMIT: usize = 64 * 1024;

/// NIC `i` as `vmadm get` shows it (what `sdc:nics` answers): its
/// interface, MAC (the given or generated one), nic_tag, VLAN, primary,
/// model and MTU, and its address as both forms (`ip`/`netmask`/`gateway`
/// and `ips`/`gateways`).
fn nic_json(config: &VmConfig, i: usize) -> Value {
    use crate::config::{NicIp, NicModel};
    let nic = &config.nics[i];
    let mut o = Map::new();
    o.insert("interface".into(), Value::String(alloc::format!("net{i}")));
    o.insert("mac".into(), Value::String(alloc::format!("{}", crate::config::MacAddr(crate::vm::nics::nic_mac(config, i)))));
    o.insert("nic_tag".into(), Value::String(nic.nic_tag.clone()));
    o.insert("vlan_id".into(), Value::from(nic.vlan_id));
    // vmadm marks the first NIC primary when none is.
    let primary = nic.primary || (i == 0 && !config.nics.iter().any(|n| n.primary));
    o.insert("primary".into(), Value::Bool(primary));
    let model = match nic.model {
        NicModel::Virtio => "virtio",
        NicModel::E1000 => "e1000",
        NicModel::Rtl8139 => "rtl8139",
    };
    o.insert("model".into(), Value::String(model.into()));
    o.insert("mtu".into(), Value::from(nic.mtu.unwrap_or(1500)));
    match nic.ip {
        Some(NicIp::Static(ip)) => {
            let prefix = nic.netmask.map_or(32, |m| u32::from(m).leading_ones());
            o.insert("ip".into(), Value::String(alloc::format!("{ip}")));
            if let Some(m) = nic.netmask {
                o.insert("netmask".into(), Value::String(alloc::format!("{m}")));
            }
            o.insert("ips".into(), Value::Array(alloc::vec![Value::String(alloc::format!("{ip}/{prefix}"))]));
        }
        Some(NicIp::Dhcp) => {
            o.insert("ip".into(), Value::String("dhcp".into()));
            o.insert("ips".into(), Value::Array(alloc::vec![Value::String("dhcp".into())]));
        }
        Some(NicIp::Addrconf) => {
            o.insert("ips".into(), Value::Array(alloc::vec![Value::String("addrconf".into())]));
        }
        None => {}
    }
    if let Some(g) = nic.gateway {
        o.insert("gateway".into(), Value::String(alloc::format!("{g}")));
        o.insert("gateways".into(), Value::Array(alloc::vec![Value::String(alloc::format!("{g}"))]));
    }
    Value::Object(o)
}

/// COM2's metadata service for one VM.
pub struct MetadataPort {
    server: alcove_mdata::MetadataServer,
    /// Answers COM2's input had no room for yet.
    pending: Vec<u8>,
    /// Answer bytes dropped because the guest did not read them.
    pub dropped: u64,
    /// The guest's `PUT`s and `DELETE`s waiting to be written back to the
    /// VM's record (only when the VMM has somewhere to write them:
    /// [`MetadataPort::writing_back`]), oldest first, at most
    /// [`OUTBOX_LIMIT`].
    outbox: VecDeque<alcove_mdata::Update>,
    write_back: bool,
    /// Changes dropped from a full outbox.
    pub dropped_updates: u64,
}

/// The guest's changes waiting for the write-back at most: a guest that
/// changes faster than zone-server takes them loses the oldest (its own
/// copy keeps every change; the record gets the later ones).
pub const OUTBOX_LIMIT: usize = 64;

impl MetadataPort {
    /// What the service answers for the VM `config` describes.
    fn instance(config: &VmConfig) -> Map<String, Value> {
        // The metadata service's own properties first; what the VMM knows
        // as its own (below) is never taken from them.
        let mut vm = config.metadata.clone();
        if let Some(u) = &config.uuid {
            vm.insert("uuid".into(), Value::String(alloc::format!("{u}")));
            // A bhyve instance's zone is named by its uuid (SmartOS's).
            vm.insert("zonename".into(), Value::String(alloc::format!("{u}")));
        }
        // The guest asks while it runs (SmartOS's agent answers the
        // zone's state, which is then always this).
        vm.insert("state".into(), Value::String("running".into()));
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
        vm.insert("resolvers".into(), Value::Array(config.resolvers.iter().map(|r| Value::String(r.clone())).collect()));
        vm.insert("nics".into(), Value::Array((0..config.nics.len()).map(|i| nic_json(config, i)).collect()));
        vm
    }

    /// The service for the VM `config` describes.
    pub fn new(config: &VmConfig) -> Self {
        let vm = Self::instance(config);
        Self {
            server: alcove_mdata::MetadataServer::new(Value::Object(vm)),
            pending: Vec::new(),
            dropped: 0,
            outbox: VecDeque::new(),
            write_back: false,
            dropped_updates: 0,
        }
    }

    /// The VM's metadata changed at zone-server (`vmadm update` of the
    /// running VM): the service answers from `config` from now on, with
    /// the guest's own changes not yet written back laid over it (they
    /// reach the record after).
    pub fn refresh(&mut self, config: &VmConfig) {
        let mut vm = Self::instance(config);
        for u in &self.outbox {
            let store = vm.entry(u.store.property()).or_insert_with(|| Value::Object(Map::new()));
            if let Some(map) = store.as_object_mut() {
                match &u.value {
                    Some(v) => {
                        map.insert(u.key.clone(), Value::String(v.clone()));
                    }
                    None => {
                        map.remove(&u.key);
                    }
                }
            }
        }
        self.server.set_instance(Value::Object(vm));
    }

    /// Keeps the guest's changes for [`MetadataPort::take_update`] (the
    /// VMM writes them back to the VM's record at zone-server).
    pub fn writing_back(mut self) -> Self {
        self.write_back = true;
        self
    }

    /// The oldest of the guest's changes not yet written back (the latest
    /// change of its key).
    pub fn take_update(&mut self) -> Option<alcove_mdata::Update> {
        self.outbox.pop_front()
    }

    /// Whether changes wait to be written back.
    pub fn has_updates(&self) -> bool {
        !self.outbox.is_empty()
    }

    /// Takes what the guest wrote to COM2, answers it, and hands COM2 as
    /// much of the answers as it has room for. Returns whether anything moved.
    pub fn pump(&mut self, platform: &mut Platform, now_ns: u64) -> bool {
        let asked = platform.take_metadata_output();
        if !asked.is_empty() {
            let answer = self.server.feed(&asked);
            for u in self.server.take_updates() {
                if !self.write_back {
                    continue;
                }
                // A key changed again before the last change went back:
                // only the latest goes (a guest repeating PUTs costs the
                // record one write per key, not one per PUT).
                self.outbox.retain(|o| !(o.store == u.store && o.key == u.key));
                if self.outbox.len() == OUTBOX_LIMIT {
                    self.outbox.pop_front();
                    self.dropped_updates += 1;
                }
                self.outbox.push_back(u);
            }
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

    /// `sdc:nics` and `sdc:resolvers`, what cloud-init's SmartOS
    /// datasource reads to set the guest's network up: each NIC as vmadm
    /// shows it (its generated MAC when none was given), one path into
    /// them, and a VM without NICs or resolvers answering empty lists.
    #[test]
    fn a_guest_reads_its_nics_and_resolvers() {
        let c = VmConfig::from_json(
            r#"{"brand": "bhyve", "uuid": "8a7f3c2e-5b1d-4e6f-9a0b-1c2d3e4f5a6b", "ram": 64, "kernel": "/k",
                "resolvers": ["10.0.0.53", "8.8.8.8"],
                "nics": [{"nic_tag": "admin", "mac": "02:08:20:aa:bb:cc", "ip": "10.0.0.5", "netmask": "255.255.255.0",
                          "gateway": "10.0.0.1", "vlan_id": 7},
                         {"nic_tag": "stub0", "ip": "dhcp", "primary": true}]}"#,
        )
        .unwrap();
        let mut p = Platform::new(0, 0);
        let mut md = MetadataPort::new(&c);
        let answer = ask(&mut p, &mut md, b"GET sdc:nics\n");
        let text = core::str::from_utf8(&answer).unwrap();
        let json = text.strip_prefix("SUCCESS\n").and_then(|t| t.strip_suffix("\n.\n")).unwrap_or_else(|| panic!("{text}"));
        let nics: Value = serde_json::from_str(json).unwrap();
        assert_eq!(nics[0]["mac"], "02:08:20:aa:bb:cc");
        assert_eq!((nics[0]["ip"].as_str(), nics[0]["netmask"].as_str()), (Some("10.0.0.5"), Some("255.255.255.0")));
        assert_eq!(nics[0]["ips"], serde_json::json!(["10.0.0.5/24"]));
        assert_eq!((nics[0]["gateways"].clone(), nics[0]["vlan_id"].as_u64()), (serde_json::json!(["10.0.0.1"]), Some(7)));
        assert_eq!((nics[0]["interface"].as_str(), nics[0]["primary"].as_bool()), (Some("net0"), Some(false)));
        assert_eq!((nics[1]["ip"].as_str(), nics[1]["primary"].as_bool(), nics[1]["nic_tag"].as_str()), (Some("dhcp"), Some(true), Some("stub0")));
        let generated = alloc::format!("{}", crate::config::MacAddr(crate::vm::nics::nic_mac(&c, 1)));
        assert_eq!(nics[1]["mac"].as_str(), Some(generated.as_str()));
        assert_eq!(ask(&mut p, &mut md, b"GET sdc:resolvers\n"), b"SUCCESS\n[\"10.0.0.53\",\"8.8.8.8\"]\n.\n");
        assert_eq!(ask(&mut p, &mut md, b"GET sdc:nics.0.nic_tag\n"), b"SUCCESS\nadmin\n.\n");
        let mut bare = MetadataPort::new(&config());
        assert_eq!(ask(&mut p, &mut bare, b"GET sdc:nics\n"), b"SUCCESS\n[]\n.\n");
        assert_eq!(ask(&mut p, &mut bare, b"GET sdc:resolvers\n"), b"SUCCESS\n[]\n.\n");
        // Resolvers are checked: too many, or not addresses.
        let json = |r: &str| alloc::format!(r#"{{"brand": "bhyve", "ram": 64, "kernel": "/k", "resolvers": {r}}}"#);
        for bad in [r#"["dns.example"]"#, r#""8.8.8.8""#, r#"[1]"#, &alloc::format!("[{}]", alloc::vec!["\"8.8.8.8\""; 17].join(","))] {
            let e = alloc::format!("{:?}", VmConfig::from_json(&json(bad)).unwrap_err());
            assert!(e.contains("resolvers"), "{bad}: {e}");
        }
    }

    /// The `sdc:` keys and internal metadata the description carries for
    /// the metadata service alone: `sdc:tags.NAME`, `sdc:owner_uuid`,
    /// `sdc:routes`, a key of a listed internal namespace and a `_pw`
    /// key; neither is in `KEYS` (customer metadata only), and the VM's
    /// own `uuid` is never another's.
    #[test]
    fn a_guest_reads_its_tags_owner_routes_and_internal_metadata() {
        let c = VmConfig::from_json(
            r#"{"brand": "bhyve", "uuid": "8a7f3c2e-5b1d-4e6f-9a0b-1c2d3e4f5a6b", "ram": 64, "kernel": "/k",
                "owner_uuid": "930896af-bf8c-48d4-885c-6573a94b1853", "tags": {"role": "db", "tier": 2},
                "server_uuid": "44454c4c-3800-1036-8051-b7c04f4e5331", "create_timestamp": "2026-12-06T05:59:59.999Z",
                "routes": {"10.2.0.0/16": "10.0.0.1"}, "internal_metadata_namespaces": ["ops"],
                "internal_metadata": {"ops:level": "7", "root_pw": "s3cret"}, "customer_metadata": {"a": "b"}}"#,
        )
        .unwrap();
        let mut p = Platform::new(0, 0);
        let mut md = MetadataPort::new(&c);
        assert_eq!(ask(&mut p, &mut md, b"GET sdc:owner_uuid\n"), b"SUCCESS\n930896af-bf8c-48d4-885c-6573a94b1853\n.\n");
        assert_eq!(ask(&mut p, &mut md, b"GET sdc:tags.role\n"), b"SUCCESS\ndb\n.\n");
        assert_eq!(ask(&mut p, &mut md, b"GET sdc:tags.tier\n"), b"SUCCESS\n2\n.\n");
        assert_eq!(ask(&mut p, &mut md, b"GET sdc:routes\n"), b"SUCCESS\n[{\"dst\":\"10.2.0.0/16\",\"gateway\":\"10.0.0.1\",\"linklocal\":false}]\n.\n");
        assert_eq!(ask(&mut p, &mut md, b"GET ops:level\n"), b"SUCCESS\n7\n.\n");
        assert_eq!(ask(&mut p, &mut md, b"GET root_pw\n"), b"SUCCESS\ns3cret\n.\n");
        // KEYS: the customer keys and the internal ones the guest may read.
        assert_eq!(ask(&mut p, &mut md, b"KEYS\n"), b"SUCCESS\na\nops:level\nroot_pw\n.\n");
        assert_eq!(ask(&mut p, &mut md, b"GET sdc:uuid\n"), b"SUCCESS\n8a7f3c2e-5b1d-4e6f-9a0b-1c2d3e4f5a6b\n.\n");
        assert_eq!(ask(&mut p, &mut md, b"GET sdc:zonename\n"), b"SUCCESS\n8a7f3c2e-5b1d-4e6f-9a0b-1c2d3e4f5a6b\n.\n");
        assert_eq!(ask(&mut p, &mut md, b"GET sdc:state\n"), b"SUCCESS\nrunning\n.\n");
        assert_eq!(ask(&mut p, &mut md, b"GET sdc:server_uuid\n"), b"SUCCESS\n44454c4c-3800-1036-8051-b7c04f4e5331\n.\n");
        assert_eq!(ask(&mut p, &mut md, b"GET sdc:create_timestamp\n"), b"SUCCESS\n2026-12-06T05:59:59.999Z\n.\n");
        // Bad shapes are refused naming the property.
        let json = |k: &str, v: &str| alloc::format!(r#"{{"brand": "bhyve", "ram": 64, "kernel": "/k", "{k}": {v}}}"#);
        for (k, v, named) in [
            ("tags", r#"{"a": [1]}"#, "tags.a"),
            ("tags", r#""web""#, "tags"),
            ("routes", r#"{"10.2.0.0/16": 5}"#, "routes.10.2.0.0/16"),
            ("internal_metadata", r#"{"k": {"x": 1}}"#, "internal_metadata.k"),
            ("internal_metadata_namespaces", r#"["a:b"]"#, "internal_metadata_namespaces[0]"),
            ("owner_uuid", "7", "owner_uuid"),
            ("do_not_inventory", r#""yes""#, "do_not_inventory"),
        ] {
            let e = alloc::format!("{}", VmConfig::from_json(&json(k, v)).unwrap_err());
            assert!(e.contains(&alloc::format!("\"{named}\"")), "{k}: {v}: {e}");
        }
    }

    /// The guest's changes wait for the write-back, each key's latest
    /// alone (a guest repeating PUTs is one change per key), oldest first,
    /// at most OUTBOX_LIMIT; a VMM with nowhere to write them keeps none.
    #[test]
    fn a_guests_changes_wait_for_the_write_back_once_per_key() {
        use base64::Engine as _;
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let put = |id: u32, k: &str, v: &str| {
            let body = alloc::format!("{id:08x} PUT {}", b64(&alloc::format!("{} {}", b64(k), b64(v))));
            alloc::format!("V2 {} {} {body}\n", body.len(), alcove_mdata::crc32_hex(body.as_bytes())).into_bytes()
        };
        let mut p = Platform::new(0, 0);
        let mut md = MetadataPort::new(&config()).writing_back();
        for (i, (k, v)) in [("a", "1"), ("b", "2"), ("a", "3")].iter().enumerate() {
            let answer = ask(&mut p, &mut md, &put(i as u32, k, v));
            assert!(String::from_utf8_lossy(&answer).contains("SUCCESS"), "{answer:?}");
        }
        let taken: Vec<(String, Option<String>)> = core::iter::from_fn(|| md.take_update()).map(|u| (u.key, u.value)).collect();
        assert_eq!(taken, [("b".into(), Some("2".into())), ("a".into(), Some("3".into()))]);
        for i in 0..OUTBOX_LIMIT + 5 {
            ask(&mut p, &mut md, &put(i as u32, &alloc::format!("k{i}"), "v"));
        }
        assert_eq!(md.dropped_updates, 5);
        assert_eq!(md.take_update().map(|u| u.key).as_deref(), Some("k5"));
        // No write-back: the guest's copy changes, nothing waits.
        let mut quiet = MetadataPort::new(&config());
        ask(&mut p, &mut quiet, &put(9, "a", "1"));
        assert!(!quiet.has_updates());
        assert_eq!(ask(&mut p, &mut quiet, b"GET a\n"), b"SUCCESS\n1\n.\n");
    }

    /// `vmadm update` of the running VM's metadata: the service answers
    /// the new values at once; a change of the guest's own not yet
    /// written back stays over them (it reaches the record after).
    #[test]
    fn a_refresh_answers_the_new_metadata_and_keeps_the_guests_pending_changes() {
        use base64::Engine as _;
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let body = alloc::format!("{:08x} PUT {}", 7, b64(&alloc::format!("{} {}", b64("mine"), b64("guest"))));
        let put = alloc::format!("V2 {} {} {body}\n", body.len(), alcove_mdata::crc32_hex(body.as_bytes())).into_bytes();
        let mut p = Platform::new(0, 0);
        let mut md = MetadataPort::new(&config()).writing_back();
        assert!(String::from_utf8_lossy(&ask(&mut p, &mut md, &put)).contains("SUCCESS"));
        let updated = VmConfig::from_json(
            r#"{"brand": "bhyve", "uuid": "8a7f3c2e-5b1d-4e6f-9a0b-1c2d3e4f5a6b", "alias": "md0", "hostname": "md-host",
                "ram": 64, "kernel": "/k", "customer_metadata": {"role": "db", "new": "yes"}, "tags": {"tier": "gold"}}"#,
        )
        .unwrap();
        md.refresh(&updated);
        assert_eq!(ask(&mut p, &mut md, b"GET new\n"), b"SUCCESS\nyes\n.\n");
        assert_eq!(ask(&mut p, &mut md, b"GET role\n"), b"SUCCESS\ndb\n.\n");
        assert_eq!(ask(&mut p, &mut md, b"GET sdc:tags.tier\n"), b"SUCCESS\ngold\n.\n");
        assert_eq!(ask(&mut p, &mut md, b"GET mine\n"), b"SUCCESS\nguest\n.\n");
        assert!(md.has_updates(), "the guest's change still goes back");
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
