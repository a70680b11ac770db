//! alcove-mdata: the SmartOS metadata service behind a VM's second serial
//! port (COM2), as a sans-IO state machine.
//!
//! Where it sits: the vmm-server hands the bytes a guest writes to COM2 to
//! zone-server (or to its own copy of the instance's metadata); they go into
//! [`MetadataServer::feed`], and the bytes it returns go back into COM2's
//! receive FIFO. Tools in the guest (`mdata-get`, `mdata-list`,
//! `mdata-put`, `mdata-delete`, cloud-init's SmartOS datasource) then read
//! their `customer_metadata`, `user-script`, `sdc:hostname`, `sdc:nics` …
//! as they do on SmartOS.
//!
//! The protocol (the Triton SmartOS Metadata Protocol Specification,
//! version 2, and the SmartOS metadata agent's behaviour where the spec is
//! silent):
//! * Requests are lines ending in `\n`; trailing white space is ignored.
//! * Version 1: `GET key` answers `SUCCESS\n` + the value (lines that begin
//!   with `.` get a second `.`) + `\n.\n`, or `NOTFOUND\n`, or `FAILURE\n`;
//!   `KEYS` lists the keys the same way; an empty or unknown line answers
//!   `invalid command\n`. `NEGOTIATE V2` answers `V2_OK\n`.
//! * Version 2 frames: `V2 <body length> <crc32 of body, 8 lower-case hex
//!   digits> <body>\n`, the body `<request id> <code>[ <base64 payload>]`.
//!   Requests `GET`, `KEYS`, `PUT` (payload: base64(key) SP base64(value)),
//!   `DELETE`; answers `SUCCESS`, `NOTFOUND`, `FAILURE` (payload: the
//!   reason) with the request's id. A frame whose length or CRC32 does not
//!   match is dropped without an answer (the client times out and retries),
//!   as the SmartOS agent does. CRC32 is the IEEE polynomial (0xEDB88320).
//! * Keys: `sdc:` keys come from the instance's own properties (`sdc:uuid`,
//!   `sdc:hostname`, `sdc:alias`, `sdc:nics` (JSON), `sdc:resolvers` (JSON),
//!   `sdc:routes` (JSON list of `{linklocal, dst, gateway}`),
//!   `sdc:operator-script`, `sdc:tags.NAME` …) and are read-only. Other keys
//!   come from `customer_metadata`, except keys ending in `_pw` and keys in a
//!   namespace listed in `internal_metadata_namespaces`, which come from
//!   `internal_metadata`; the latter are read-only too. `PUT` writes
//!   `customer_metadata` (`_pw` keys and `operator-script` go to
//!   `internal_metadata`, as SmartOS's `mdata-put` does); the caller takes
//!   the changes with [`MetadataServer::take_updates`] to persist them.
//!
//! Wiring: every VM's VMM has a second 16550 (COM2, ports
//! 0x2F8-0x2FF, IRQ 3) whose transmitted bytes go to a `MetadataServer`
//! made from its `vm.json` and whose receive FIFO gets the answers
//! (`vmm_server::vm::metadata`). The guest's `PUT`s change the VMM's copy
//! at once; the VMM sends [`MetadataServer::take_updates`] back to
//! zone-server (`libipc::interfaces::mdata`), which saves them in the VM's
//! record.
//!
//! Bounds: a line longer than [`MAX_LINE`] bytes is dropped as it arrives
//! (the buffer never grows past it); garbage, half lines and invalid UTF-8
//! get an answer or are dropped, never a panic.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

use alloc::borrow::ToOwned;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use base64::Engine as _;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::{DecodePaddingMode, general_purpose};
use serde_json::{Map, Value};

/// The longest request line kept (bytes, without its `\n`). A PUT of a
/// 128 KiB value is base64-encoded twice (×16/9) and still fits.
pub const MAX_LINE: usize = 256 * 1024;

/// The most metadata (keys and values of `customer_metadata` and
/// `internal_metadata`, bytes) a guest's `PUT`s may bring the instance to:
/// a guest cannot grow the control plane's memory without bound.
pub const MAX_METADATA: usize = 1 << 20;

/// Standard base64; decoding accepts a payload with or without padding, as
/// the SmartOS agent (Node's lenient decoder) does.
const B64_IN: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The instance properties an `sdc:` key may read (the SmartOS agent's
/// list, less the zone-only ones that have no meaning for an HVM instance).
const SDC_FIELDS: &[&str] = &[
    "alias",
    "billing_id",
    "brand",
    "cpu_cap",
    "cpu_shares",
    "create_timestamp",
    "server_uuid",
    "image_uuid",
    "datacenter_name",
    "do_not_inventory",
    "dns_domain",
    "hostname",
    "internal_metadata_namespaces",
    "last_modified",
    "maintain_resolvers",
    "max_physical_memory",
    "max_locked_memory",
    "max_lwps",
    "max_swap",
    "nics",
    "owner_uuid",
    "package_name",
    "package_version",
    "quota",
    "ram",
    "resolvers",
    "routes",
    "state",
    "tags",
    "uuid",
    "vcpus",
    "zonename",
];

/// Which of the instance's metadata maps a change goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Store {
    Customer,
    Internal,
}

impl Store {
    /// The instance property that holds it.
    pub fn property(self) -> &'static str {
        match self {
            Store::Customer => "customer_metadata",
            Store::Internal => "internal_metadata",
        }
    }
}

/// A change a guest made with `PUT` or `DELETE` (value `None`), already
/// applied to the server's copy; the caller persists it (as `vmadm update`
/// with `set_customer_metadata` / `remove_customer_metadata`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    pub store: Store,
    pub key: String,
    pub value: Option<String>,
}

/// What the server has seen (for the operator and the tests).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Requests answered.
    pub answered: u64,
    /// V2 frames dropped: bad length, bad CRC32, unparseable.
    pub bad_frames: u64,
    /// Lines dropped for being longer than [`MAX_LINE`].
    pub long_lines: u64,
}

/// One guest's metadata service.
pub struct MetadataServer {
    vm: Value,
    line: Vec<u8>,
    /// Dropping the rest of an over-long line until its `\n`.
    discarding: bool,
    updates: Vec<Update>,
    stats: Stats,
}

/// The answer to one request, before it is framed as v1 or v2.
enum Answer {
    Success(String),
    /// SUCCESS with no payload (PUT, DELETE).
    Done,
    NotFound,
    Failure(String),
}

impl MetadataServer {
    /// `vm` is the instance's JSON as `vmadm get` prints it (an object; any
    /// other value serves no keys).
    pub fn new(vm: Value) -> Self {
        MetadataServer { vm, line: Vec::new(), discarding: false, updates: Vec::new(), stats: Stats::default() }
    }

    /// Replaces the instance's JSON (after `vmadm update`).
    pub fn set_instance(&mut self, vm: Value) {
        self.vm = vm;
    }

    /// The instance's JSON with the guest's changes applied.
    pub fn instance(&self) -> &Value {
        &self.vm
    }

    /// The changes guests made since the last call.
    pub fn take_updates(&mut self) -> Vec<Update> {
        core::mem::take(&mut self.updates)
    }

    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Bytes of a line still waiting for its `\n`.
    pub fn pending(&self) -> usize {
        self.line.len()
    }

    /// Takes bytes the guest wrote; returns the bytes to send back.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut rest = bytes;
        while !rest.is_empty() {
            let (chunk, nl) = match rest.iter().position(|&b| b == b'\n') {
                Some(i) => (&rest[..i], true),
                None => (rest, false),
            };
            rest = if nl { &rest[chunk.len() + 1..] } else { &[] };
            if !self.discarding {
                if self.line.len() + chunk.len() > MAX_LINE {
                    self.line = Vec::new();
                    self.discarding = true;
                    self.stats.long_lines += 1;
                } else {
                    self.line.extend_from_slice(chunk);
                }
            }
            if nl {
                if self.discarding {
                    self.discarding = false;
                } else {
                    let line = core::mem::take(&mut self.line);
                    self.handle_line(&line, &mut out);
                }
            }
        }
        out
    }

    fn handle_line(&mut self, raw: &[u8], out: &mut Vec<u8>) {
        let Ok(text) = core::str::from_utf8(raw) else {
            out.extend_from_slice(b"invalid command\n");
            return;
        };
        let text = text.trim_end();
        let (cmd, arg) = match text.split_once(|c: char| c.is_ascii_whitespace()) {
            Some((c, a)) => (c, a),
            None => (text, ""),
        };
        if cmd.is_empty() || ((cmd == "NEGOTIATE" || cmd == "GET") && arg.trim().is_empty()) {
            out.extend_from_slice(b"invalid command\n");
            return;
        }
        if cmd == "V2" {
            match parse_v2(arg) {
                Some((reqid, code, payload)) => {
                    let answer = self.v2_request(code, payload);
                    frame_v2(reqid, &answer, out);
                    self.stats.answered += 1;
                }
                None => self.stats.bad_frames += 1,
            }
            return;
        }
        let answer = match cmd {
            "NEGOTIATE" => {
                out.extend_from_slice(if arg.trim() == "V2" { b"V2_OK\n" } else { b"FAILURE\n" });
                self.stats.answered += 1;
                return;
            }
            "GET" => self.get(arg.trim()),
            "KEYS" => self.keys(),
            _ => Answer::Failure(format!("Unknown command {cmd}")),
        };
        self.stats.answered += 1;
        match answer {
            Answer::Success(v) => {
                out.extend_from_slice(b"SUCCESS\n");
                for (i, l) in v.split('\n').enumerate() {
                    if i > 0 {
                        out.push(b'\n');
                    }
                    if l.starts_with('.') {
                        out.push(b'.');
                    }
                    out.extend_from_slice(l.as_bytes());
                }
                out.extend_from_slice(b"\n.\n");
            }
            Answer::Done => out.extend_from_slice(b"SUCCESS\n.\n"),
            Answer::NotFound => out.extend_from_slice(b"NOTFOUND\n"),
            Answer::Failure(_) => out.extend_from_slice(b"FAILURE\n"),
        }
    }

    fn v2_request(&mut self, code: &str, payload: Option<&str>) -> Answer {
        let decode = |p: Option<&str>| -> Option<String> {
            match p {
                None => Some(String::new()),
                Some(p) => B64_IN.decode(p).ok().and_then(|b| String::from_utf8(b).ok()),
            }
        };
        match code {
            "GET" => match decode(payload) {
                Some(k) if !k.trim().is_empty() => self.get(k.trim()),
                _ => Answer::Failure("Invalid GET Request".into()),
            },
            "KEYS" => self.keys(),
            "DELETE" => match decode(payload) {
                Some(k) if !k.trim().is_empty() => self.put(k.trim(), None),
                _ => Answer::Failure("Invalid DELETE Request".into()),
            },
            "PUT" => {
                let Some(inner) = decode(payload) else {
                    return Answer::Failure("Invalid PUT Request".into());
                };
                let terms: Vec<&str> = inner.trim().split(' ').collect();
                let [k, v] = terms[..] else {
                    return Answer::Failure("Invalid PUT Request".into());
                };
                match (decode(Some(k)), decode(Some(v))) {
                    (Some(k), Some(v)) if !k.trim().is_empty() => {
                        let value = if v.is_empty() { None } else { Some(v) };
                        self.put(k.trim(), value)
                    }
                    _ => Answer::Failure("Invalid PUT Request".into()),
                }
            }
            other => Answer::Failure(format!("Unknown command {other}")),
        }
    }

    /// The namespace of `key` if it is one of `internal_metadata_namespaces`.
    fn internal_namespace<'k>(&self, key: &'k str) -> Option<&'k str> {
        let (ns, _) = key.split_once(':')?;
        let list = self.vm.get("internal_metadata_namespaces")?.as_array()?;
        list.iter().any(|n| n.as_str() == Some(ns)).then_some(ns)
    }

    fn is_internal_key(&self, key: &str) -> bool {
        key.ends_with("_pw") || self.internal_namespace(key).is_some()
    }

    fn map(&self, store: Store) -> Option<&Map<String, Value>> {
        self.vm.get(store.property())?.as_object()
    }

    fn get(&self, key: &str) -> Answer {
        if let Some(field) = key.strip_prefix("sdc:") {
            return self.get_sdc(field);
        }
        let store = if self.is_internal_key(key) { Store::Internal } else { Store::Customer };
        match self.map(store).and_then(|m| m.get(key)) {
            None | Some(Value::Null) => Answer::NotFound,
            Some(v) => scalar(v),
        }
    }

    fn get_sdc(&self, field: &str) -> Answer {
        match field {
            "nics" | "resolvers" => match self.vm.get(field) {
                Some(v) if !v.is_null() => Answer::Success(v.to_string()),
                _ => Answer::NotFound,
            },
            "routes" => self.routes(),
            "operator-script" => match self.map(Store::Internal).and_then(|m| m.get("operator-script")) {
                None | Some(Value::Null) => Answer::NotFound,
                Some(v) => scalar(v),
            },
            _ => {
                let mut parts = field.split('.');
                let first = parts.next().unwrap_or("");
                if !SDC_FIELDS.contains(&first) {
                    return Answer::NotFound;
                }
                let mut v = self.vm.get(first);
                for p in parts {
                    v = match v {
                        Some(Value::Object(m)) => m.get(p),
                        Some(Value::Array(a)) => p.parse::<usize>().ok().and_then(|i| a.get(i)),
                        _ => None,
                    };
                }
                match v {
                    None | Some(Value::Null) => Answer::NotFound,
                    Some(v) => scalar(v),
                }
            }
        }
    }

    /// `sdc:routes`: the instance's `routes` object (`dst` → a gateway, or
    /// `nics[N]` for a link-local route through that NIC's address) as a
    /// JSON list of `{linklocal, dst, gateway}`.
    fn routes(&self) -> Answer {
        let Some(routes) = self.vm.get("routes").and_then(Value::as_object) else {
            return Answer::NotFound;
        };
        let mut list = Vec::new();
        for (dst, gw) in routes {
            let Some(gw) = gw.as_str() else { continue };
            let nic = gw.strip_prefix("nics[").and_then(|r| r.strip_suffix(']')).and_then(|n| n.parse::<usize>().ok());
            let (linklocal, gateway) = match nic {
                None => (false, gw.to_owned()),
                Some(i) => {
                    let ip = self.vm.get("nics").and_then(|n| n.get(i)).and_then(|n| n.get("ip")).and_then(Value::as_str);
                    match ip {
                        Some(ip) if ip != "dhcp" => (true, ip.to_owned()),
                        _ => continue,
                    }
                }
            };
            let mut r = Map::new();
            r.insert("linklocal".into(), Value::Bool(linklocal));
            r.insert("dst".into(), Value::String(dst.clone()));
            r.insert("gateway".into(), Value::String(gateway));
            list.push(Value::Object(r));
        }
        Answer::Success(Value::Array(list).to_string())
    }

    fn keys(&self) -> Answer {
        let mut keys: Vec<&str> = Vec::new();
        if let Some(m) = self.map(Store::Customer) {
            keys.extend(m.keys().map(String::as_str).filter(|k| !self.is_internal_key(k)));
        }
        if let Some(m) = self.map(Store::Internal) {
            keys.extend(m.keys().map(String::as_str).filter(|k| self.is_internal_key(k)));
        }
        Answer::Success(keys.join("\n"))
    }

    /// PUT (`Some`) or DELETE (`None`).
    fn put(&mut self, key: &str, value: Option<String>) -> Answer {
        if key.starts_with("sdc:") {
            return Answer::Failure("Cannot update the \"sdc\" Namespace.".into());
        }
        if let Some(ns) = self.internal_namespace(key) {
            return Answer::Failure(format!("Cannot update the \"{ns}\" Namespace."));
        }
        let store = if key.ends_with("_pw") || key == "operator-script" { Store::Internal } else { Store::Customer };
        if let Some(v) = &value {
            let size = |st: Store| -> usize {
                self.map(st).map_or(0, |m| {
                    m.iter()
                        .filter(|(k, _)| !(st == store && k.as_str() == key))
                        .map(|(k, v)| k.len() + v.as_str().map_or(0, str::len))
                        .sum()
                })
            };
            let total = size(Store::Customer) + size(Store::Internal) + key.len() + v.len();
            if total > MAX_METADATA {
                return Answer::Failure(format!("metadata would grow to {total} bytes, at most {MAX_METADATA}"));
            }
        }
        let Some(vm) = self.vm.as_object_mut() else {
            return Answer::Failure("instance has no metadata".into());
        };
        let map = vm.entry(store.property()).or_insert_with(|| Value::Object(Map::new()));
        if !map.is_object() {
            *map = Value::Object(Map::new());
        }
        if let Some(m) = map.as_object_mut() {
            match &value {
                Some(v) => {
                    m.insert(key.to_string(), Value::String(v.clone()));
                }
                None => {
                    m.remove(key);
                }
            }
        }
        self.updates.push(Update { store, key: key.to_string(), value });
        Answer::Done
    }
}

/// A value as the agent answers it: strings as they are, numbers and
/// booleans as text, anything else refused.
fn scalar(v: &Value) -> Answer {
    match v {
        Value::String(s) => Answer::Success(s.clone()),
        Value::Number(n) => Answer::Success(n.to_string()),
        Value::Bool(b) => Answer::Success(b.to_string()),
        _ => Answer::Failure("value is not a string".into()),
    }
}

/// CRC32 (IEEE, polynomial 0xEDB88320) as the protocol writes it.
pub fn crc32_hex(body: &[u8]) -> String {
    format!("{:08x}", crc32fast::hash(body))
}

fn is_lower_hex(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// `<len> <crc32> <reqid> <code>[ <payload>]` (the part after `V2 `):
/// the request id, code and payload of a frame whose length and checksum
/// match its body.
fn parse_v2(frame: &str) -> Option<(&str, &str, Option<&str>)> {
    let (len, rest) = frame.split_once(' ')?;
    let (crc, body) = rest.split_once(' ')?;
    if len.is_empty() || len.len() > 10 || !len.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if len.parse::<usize>().ok()? != body.len() || body.is_empty() {
        return None;
    }
    if crc.len() != 8 || !is_lower_hex(crc) || crc32_hex(body.as_bytes()) != crc {
        return None;
    }
    let (reqid, rest) = body.split_once(' ')?;
    if reqid.len() > 16 || !is_lower_hex(reqid) {
        return None;
    }
    let (code, payload) = match rest.split_once(' ') {
        Some((c, p)) => (c, Some(p)),
        None => (rest, None),
    };
    if code.is_empty() {
        return None;
    }
    Some((reqid, code, payload.filter(|p| !p.is_empty())))
}

fn frame_v2(reqid: &str, answer: &Answer, out: &mut Vec<u8>) {
    let (code, payload) = match answer {
        Answer::Success(v) if !v.is_empty() => ("SUCCESS", Some(v.as_str())),
        Answer::Success(_) | Answer::Done => ("SUCCESS", None),
        Answer::NotFound => ("NOTFOUND", None),
        Answer::Failure(m) => ("FAILURE", Some(m.as_str())),
    };
    let mut body = format!("{reqid} {code}");
    if let Some(p) = payload {
        body.push(' ');
        body.push_str(&general_purpose::STANDARD.encode(p));
    }
    out.extend_from_slice(format!("V2 {} {} {body}\n", body.len(), crc32_hex(body.as_bytes())).as_bytes());
}
