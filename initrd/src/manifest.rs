//! The system manifest: which servers the system runs and what each may touch.
//!
//! As Hubris's `app.toml`, one manifest describes a whole system, and an
//! appliance is another manifest. People write TOML (`initrd/manifests/*.toml`);
//! the host checks it ([`Manifest::from_toml`], feature `std`) and packs it
//! as `manifest.bin` (postcard, [`Manifest::encode`]) next to the servers in the
//! boot archive. On Alcove, init decodes it ([`Manifest::decode`]) and starts
//! each server with exactly the capabilities listed here: the endpoints it
//! serves and may call, its IRQ lines, I/O ports and device memory, a kernel
//! memory budget, a priority and a restart policy.
//!
//! `manifest.bin` comes from the boot medium, so decoding checks everything
//! the host checked again ([`Manifest::validate`]) and never panics: a
//! manifest init holds is always a valid one.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

#[cfg(feature = "std")]
mod text;

/// The first bytes of `manifest.bin`: the format and its version.
pub const MAGIC: [u8; 8] = *b"ALCMAN01";

/// Most servers one manifest lists (besides init).
pub const MAX_SERVERS: usize = 64;
/// Most entries in each per-server list (`serves`, `calls`, `irqs`, …).
pub const MAX_LIST: usize = 32;
/// Longest name (server, binary, endpoint, system), in bytes.
pub const MAX_NAME_LEN: usize = 32;
/// Longest system description, in bytes.
pub const MAX_DESCRIPTION_LEN: usize = 256;
/// Priorities servers may have: 0 is the idle thread's, 255 init's.
pub const PRIORITIES: core::ops::RangeInclusive<u8> = 1..=254;
/// Largest kernel-memory budget one server may hold: the field's range
/// (4 TiB). What the machine really has is init's to check when it carves
/// the budget out of its own (an error naming both figures); a VMM's
/// budget is its guest's RAM and more, so no smaller cap fits.
pub const MAX_BUDGET_KIB: u32 = u32::MAX;
/// IOAPIC input lines (the ISA IRQs 0..=15 and PCI INTx lines up to 23).
pub const IOAPIC_LINES: core::ops::RangeInclusive<u8> = 0..=23;
/// Physical addresses end here (MAXPHYADDR is at most 52 bits; SDM Vol. 3A §4.1.4).
pub const PHYS_ADDR_LIMIT: u64 = 1 << 52;
/// Most restarts a finite restart policy may allow.
pub const MAX_RESTARTS: u32 = 1000;
/// CPU indices a server may be pinned to.
pub const MAX_CPU: u32 = 255;
/// The name reserved for the root task, which no manifest lists.
pub const INIT: &str = "init";
/// The endpoint init itself serves (`libipc::interfaces::proc`): servers
/// that list it in `calls` reach it, and those that also name templates in
/// `spawns` may start instances of them at run time. No server serves it.
pub const PROC_ENDPOINT: &str = "proc";

const PAGE_SIZE: u64 = abi::PAGE_SIZE;

/// A whole system.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub system: System,
    /// The servers in start order; init is implicit and not listed.
    #[serde(deserialize_with = "bounded::vec::<MAX_SERVERS, _, _>")]
    pub servers: Vec<Server>,
}

/// The `[system]` table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct System {
    pub name: String,
    pub description: String,
}

/// One `[[server]]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Server {
    pub name: String,
    /// The executable: `bin/<binary>` in the boot archive. Several servers may
    /// run one binary.
    pub binary: String,
    /// In [`PRIORITIES`]; higher runs first.
    pub priority: u8,
    /// Kernel memory this server's objects may use, in KiB.
    pub budget_kib: u32,
    /// Endpoints it receives on; each endpoint has exactly one server.
    #[serde(deserialize_with = "bounded::vec::<MAX_LIST, _, _>")]
    pub serves: Vec<String>,
    /// Endpoints it may call; each is served by some server.
    #[serde(deserialize_with = "bounded::vec::<MAX_LIST, _, _>")]
    pub calls: Vec<String>,
    /// I/O-port ranges it may use; no two servers share a port.
    #[serde(deserialize_with = "bounded::vec::<MAX_LIST, _, _>")]
    pub ioports: Vec<IoPorts>,
    /// IOAPIC lines delivered to it; no two servers share a line.
    #[serde(deserialize_with = "bounded::vec::<MAX_LIST, _, _>")]
    pub irqs: Vec<u8>,
    /// Device memory (MMIO) it may map; page-aligned, not shared.
    #[serde(deserialize_with = "bounded::vec::<MAX_LIST, _, _>")]
    pub device_memory: Vec<DeviceMemory>,
    /// What init does when the server ends.
    pub restart: Restart,
    /// The CPU its first thread runs on; `None` lets the kernel choose.
    pub cpu: Option<u32>,
    /// May end the machine (`MachineExit`): only system-test processes.
    pub machine_exit: bool,
    /// Gets the device-memory capability itself (any MMIO that is not RAM),
    /// to map the BARs of the PCI devices it finds at run time wherever the
    /// firmware put them: for a driver server such as storaged.
    pub pci_bars: bool,
    /// Data files from the boot archive (`files/<name>`) handed to the
    /// server read-only (e.g. a guest image for a VMM).
    #[serde(deserialize_with = "bounded::vec::<MAX_LIST, _, _>")]
    pub files: Vec<String>,
    /// Free-form arguments for the server (at most 32, each at most 256
    /// bytes).
    #[serde(deserialize_with = "bounded::vec::<MAX_LIST, _, _>")]
    pub args: Vec<String>,
    /// Servers of this manifest it may start more instances of at run time
    /// through init's `proc` endpoint (which it must call): zone-server
    /// starts one `vmm-server` per VM.
    #[serde(deserialize_with = "bounded::vec::<MAX_LIST, _, _>")]
    pub spawns: Vec<String>,
    /// Kernel memory, in KiB, the instances it starts may hold in all (each
    /// instance's budget comes out of it and goes back when it ends).
    pub spawn_budget_kib: u32,
    /// Not started at boot: only a template for instances started through
    /// `proc`.
    pub on_demand: bool,
    /// Pool volumes for a VMM (`libipc::provision::VolumeSpec` text:
    /// `NAME`, `NAME volsize=BYTES` or `NAME origin=VOLUME@SNAP`; at most
    /// [`MAX_VOLUMES`]). init makes them ready in storaged's pool and
    /// hands the server a grant for exactly these, in order, as its
    /// `storaged` endpoint instead of the machine's disks.
    #[serde(deserialize_with = "bounded::vec::<MAX_LIST, _, _>")]
    pub volumes: Vec<String>,
}

/// Volumes one server may be granted (storaged's `POOL_GRANT_MAX`).
pub const MAX_VOLUMES: usize = 8;

/// PCI configuration mechanism #1 (0xCF8..0xCFF), the one range several
/// servers may hold (exactly this range; anything overlapping it otherwise
/// is refused as any other clash).
pub const PCI_CONFIG_PORTS: IoPorts = IoPorts { first: 0xcf8, count: 8 };

/// A range of I/O ports: `[first, count]` in TOML.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IoPorts {
    pub first: u16,
    pub count: u16,
}

impl IoPorts {
    /// One past the last port (up to 0x10000).
    pub const fn end(&self) -> u32 {
        self.first as u32 + self.count as u32
    }
}

/// A range of device memory: `[phys_base, bytes]` in TOML.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceMemory {
    pub phys_base: u64,
    pub bytes: u64,
}

impl DeviceMemory {
    /// One past the last byte (saturating, for ranges not yet validated).
    pub const fn end(&self) -> u64 {
        self.phys_base.saturating_add(self.bytes)
    }
}

/// What init does when a server exits or faults. TOML: `restart = 3` (up to
/// three restarts; `0` is never), `"never"` or `"always"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Restart {
    Never,
    /// Restart at most this many times (1..=[`MAX_RESTARTS`]), then give up.
    Times(u32),
    Always,
}

impl Restart {
    /// The policy when the manifest does not say.
    pub const DEFAULT: Restart = Restart::Times(3);

    /// Whether init restarts a server that has already been restarted
    /// `restarts` times.
    pub const fn allows(self, restarts: u32) -> bool {
        match self {
            Restart::Never => false,
            Restart::Times(n) => restarts < n,
            Restart::Always => true,
        }
    }
}

/// Why a manifest was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ManifestError {
    /// `manifest.bin` is not a manifest of this format (or is damaged).
    Decode(&'static str),
    /// The TOML does not parse, or has an unknown key or a value of the
    /// wrong type (host only; the text says where).
    Syntax(String),
    /// A property has a value the system cannot run with.
    Invalid {
        /// The server it is about; `None` for the `[system]` table.
        server: Option<String>,
        /// The property, as spelt in the TOML.
        property: &'static str,
        problem: String,
    },
}

impl ManifestError {
    fn invalid(server: Option<&str>, property: &'static str, problem: impl Into<String>) -> Self {
        ManifestError::Invalid { server: server.map(String::from), property, problem: problem.into() }
    }
}

impl core::fmt::Display for ManifestError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ManifestError::Decode(why) => write!(f, "manifest.bin: {why}"),
            ManifestError::Syntax(why) => write!(f, "manifest: {}", why.trim_end()),
            ManifestError::Invalid { server: Some(server), property, problem } => {
                write!(f, "manifest: server \"{server}\": property \"{property}\": {problem}")
            }
            ManifestError::Invalid { server: None, property, problem } => {
                write!(f, "manifest: property \"{property}\": {problem}")
            }
        }
    }
}

impl core::error::Error for ManifestError {}

impl Manifest {
    /// Decodes and validates `manifest.bin`. Any bytes give a manifest or
    /// an error, never a panic, and allocation stays within a small multiple
    /// of the input's size.
    pub fn decode(bytes: &[u8]) -> Result<Manifest, ManifestError> {
        let body = bytes
            .strip_prefix(&MAGIC[..])
            .ok_or(ManifestError::Decode("not an Alcove manifest of format 1 (bad magic)"))?;
        let (manifest, rest) = postcard::take_from_bytes::<Manifest>(body)
            .map_err(|_| ManifestError::Decode("damaged or of another format version"))?;
        if !rest.is_empty() {
            return Err(ManifestError::Decode("trailing bytes after the manifest"));
        }
        manifest.validate()?;
        Ok(manifest)
    }

    /// Validates and encodes as `manifest.bin`.
    pub fn encode(&self) -> Result<Vec<u8>, ManifestError> {
        self.validate()?;
        let mut out = Vec::from(MAGIC);
        let body = postcard::to_allocvec(self).map_err(|_| ManifestError::Decode("cannot be encoded"))?;
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// The server called `name`.
    pub fn server(&self, name: &str) -> Option<&Server> {
        self.servers.iter().find(|s| s.name == name)
    }

    /// The server that serves `endpoint`.
    pub fn server_serving(&self, endpoint: &str) -> Option<&Server> {
        self.servers.iter().find(|s| s.serves.iter().any(|e| e == endpoint))
    }

    /// Every endpoint, with the server that serves it, in manifest order.
    pub fn endpoints(&self) -> impl Iterator<Item = (&str, &Server)> {
        self.servers.iter().flat_map(|s| s.serves.iter().map(move |e| (e.as_str(), s)))
    }

    /// The binaries the servers run, each once, in manifest order (without
    /// init's).
    /// Every data file some server is given, once each.
    pub fn files(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for s in &self.servers {
            for f in &s.files {
                if !out.contains(&f.as_str()) {
                    out.push(f);
                }
            }
        }
        out
    }

    pub fn binaries(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for s in &self.servers {
            if !out.contains(&s.binary.as_str()) {
                out.push(&s.binary);
            }
        }
        out
    }

    /// Checks every rule a runnable system obeys; the error names the server
    /// and the property.
    pub fn validate(&self) -> Result<(), ManifestError> {
        check_name(None, "system.name", &self.system.name)?;
        if self.system.description.len() > MAX_DESCRIPTION_LEN {
            return Err(ManifestError::invalid(
                None,
                "system.description",
                format!("longer than {MAX_DESCRIPTION_LEN} bytes"),
            ));
        }
        if self.servers.len() > MAX_SERVERS {
            return Err(ManifestError::invalid(
                None,
                "server",
                format!("{} servers, at most {MAX_SERVERS} allowed", self.servers.len()),
            ));
        }
        for (i, s) in self.servers.iter().enumerate() {
            let earlier = &self.servers[..i];
            s.validate_own()?;
            let who = Some(s.name.as_str());
            if earlier.iter().any(|e| e.name == s.name) {
                return Err(ManifestError::invalid(who, "name", "another server has this name"));
            }
            for e in &s.serves {
                if let Some(other) = earlier.iter().find(|o| o.serves.contains(e)) {
                    return Err(ManifestError::invalid(
                        who,
                        "serves",
                        format!("endpoint \"{e}\" is already served by server \"{}\"", other.name),
                    ));
                }
            }
            for p in &s.ioports {
                // The PCI configuration ports are the one range driver
                // servers share (storaged, netd): each uses them only while
                // it starts, and netd waits for storaged to serve first.
                let shared = |q: &IoPorts| *p == PCI_CONFIG_PORTS && *q == PCI_CONFIG_PORTS;
                let clash = earlier
                    .iter()
                    .find_map(|o| o.ioports.iter().find(|q| overlaps_ports(p, q) && !shared(q)).map(|q| (o, q)));
                if let Some((o, q)) = clash {
                    return Err(ManifestError::invalid(
                        who,
                        "ioports",
                        format!("{} overlaps {} of server \"{}\"", ports(p), ports(q), o.name),
                    ));
                }
            }
            for irq in &s.irqs {
                if let Some(o) = earlier.iter().find(|o| o.irqs.contains(irq)) {
                    return Err(ManifestError::invalid(
                        who,
                        "irqs",
                        format!("line {irq} is already delivered to server \"{}\"", o.name),
                    ));
                }
            }
            for m in &s.device_memory {
                let clash =
                    earlier.iter().find_map(|o| o.device_memory.iter().find(|q| overlaps_mem(m, q)).map(|q| (o, q)));
                if let Some((o, q)) = clash {
                    return Err(ManifestError::invalid(
                        who,
                        "device_memory",
                        format!("{} overlaps {} of server \"{}\"", mem(m), mem(q), o.name),
                    ));
                }
            }
        }
        for s in &self.servers {
            for t in &s.spawns {
                if self.server(t).is_none() {
                    return Err(ManifestError::invalid(Some(&s.name), "spawns", format!("no server is named \"{t}\"")));
                }
            }
            if !s.spawns.is_empty() && !s.calls.iter().any(|c| c == PROC_ENDPOINT) {
                return Err(ManifestError::invalid(
                    Some(&s.name),
                    "spawns",
                    format!("starting instances needs init's endpoint: add \"{PROC_ENDPOINT}\" to calls"),
                ));
            }
            for e in &s.calls {
                if e == PROC_ENDPOINT {
                    continue;
                }
                if self.server_serving(e).is_none() {
                    return Err(ManifestError::invalid(
                        Some(&s.name),
                        "calls",
                        format!("no server serves endpoint \"{e}\""),
                    ));
                }
            }
        }
        Ok(())
    }
}

impl Server {
    /// The rules about one server alone.
    fn validate_own(&self) -> Result<(), ManifestError> {
        let who = Some(self.name.as_str());
        check_name(who, "name", &self.name)?;
        if self.name == INIT {
            return Err(ManifestError::invalid(who, "name", "init is implicit and must not be listed"));
        }
        check_name(who, "binary", &self.binary)?;
        if self.binary == INIT {
            return Err(ManifestError::invalid(who, "binary", "bin/init is the root task's"));
        }
        if !PRIORITIES.contains(&self.priority) {
            return Err(ManifestError::invalid(
                who,
                "priority",
                format!(
                    "{} is outside {}..={} (0 is idle, 255 is init's)",
                    self.priority,
                    PRIORITIES.start(),
                    PRIORITIES.end()
                ),
            ));
        }
        if self.budget_kib == 0 {
            return Err(ManifestError::invalid(
                who,
                "budget_kib",
                format!("{} is outside 1..={MAX_BUDGET_KIB} (KiB)", self.budget_kib),
            ));
        }
        match self.restart {
            Restart::Times(n) if n == 0 || n > MAX_RESTARTS => {
                return Err(ManifestError::invalid(
                    who,
                    "restart",
                    format!("{n} restarts is outside 1..={MAX_RESTARTS}; say \"never\" or \"always\""),
                ));
            }
            _ => {}
        }
        if let Some(a) = self.args.iter().find(|a| a.len() > 256) {
            return Err(ManifestError::invalid(who, "args", format!("an argument of {} bytes (at most 256)", a.len())));
        }
        if !self.volumes.is_empty() && !self.calls.iter().any(|c| c == "storaged") {
            return Err(ManifestError::invalid(who, "volumes", "a server granted volumes must call \"storaged\""));
        }
        if self.volumes.len() > MAX_VOLUMES {
            return Err(ManifestError::invalid(who, "volumes", format!("{} volumes (at most {MAX_VOLUMES})", self.volumes.len())));
        }
        if let Some(v) = self.volumes.iter().find(|v| v.is_empty() || v.len() > 256) {
            return Err(ManifestError::invalid(who, "volumes", format!("a volume spec of {} bytes (1 to 256)", v.len())));
        }
        for f in &self.files {
            if f.is_empty() || f.len() > MAX_NAME_LEN || !f.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.') {
                return Err(ManifestError::invalid(who, "files", format!("{f:?} is not a file name")));
            }
        }
        if let Some(cpu) = self.cpu
            && cpu > MAX_CPU
        {
            return Err(ManifestError::invalid(who, "cpu", format!("{cpu} is beyond CPU {MAX_CPU}")));
        }
        if self.serves.iter().any(|e| e == PROC_ENDPOINT) {
            return Err(ManifestError::invalid(who, "serves", format!("\"{PROC_ENDPOINT}\" is init's endpoint")));
        }
        for (property, list) in [("serves", &self.serves), ("calls", &self.calls), ("spawns", &self.spawns)] {
            check_len(who, property, list.len())?;
            for (i, e) in list.iter().enumerate() {
                check_name(who, property, e)?;
                if list[..i].contains(e) {
                    return Err(ManifestError::invalid(who, property, format!("endpoint \"{e}\" is listed twice")));
                }
            }
        }
        check_len(who, "ioports", self.ioports.len())?;
        for (i, p) in self.ioports.iter().enumerate() {
            if p.count == 0 || p.end() > 0x1_0000 {
                return Err(ManifestError::invalid(who, "ioports", format!("{} is not a range of ports", ports(p))));
            }
            if let Some(q) = self.ioports[..i].iter().find(|q| overlaps_ports(p, q)) {
                return Err(ManifestError::invalid(who, "ioports", format!("{} overlaps {}", ports(p), ports(q))));
            }
        }
        check_len(who, "irqs", self.irqs.len())?;
        for (i, irq) in self.irqs.iter().enumerate() {
            if !IOAPIC_LINES.contains(irq) {
                return Err(ManifestError::invalid(
                    who,
                    "irqs",
                    format!("{irq} is not an IOAPIC line ({}..={})", IOAPIC_LINES.start(), IOAPIC_LINES.end()),
                ));
            }
            if self.irqs[..i].contains(irq) {
                return Err(ManifestError::invalid(who, "irqs", format!("line {irq} is listed twice")));
            }
        }
        check_len(who, "device_memory", self.device_memory.len())?;
        for (i, m) in self.device_memory.iter().enumerate() {
            if !m.phys_base.is_multiple_of(PAGE_SIZE) || !m.bytes.is_multiple_of(PAGE_SIZE) {
                return Err(ManifestError::invalid(
                    who,
                    "device_memory",
                    format!("{} is not page-aligned ({PAGE_SIZE:#x})", mem(m)),
                ));
            }
            if m.bytes == 0 || m.phys_base.checked_add(m.bytes).is_none_or(|end| end > PHYS_ADDR_LIMIT) {
                return Err(ManifestError::invalid(
                    who,
                    "device_memory",
                    format!("{} is not a range of physical memory below {PHYS_ADDR_LIMIT:#x}", mem(m)),
                ));
            }
            if let Some(q) = self.device_memory[..i].iter().find(|q| overlaps_mem(m, q)) {
                return Err(ManifestError::invalid(who, "device_memory", format!("{} overlaps {}", mem(m), mem(q))));
            }
        }
        Ok(())
    }
}

/// Names: 1..=32 bytes of `a-z`, `0-9`, `-`, `_`, starting with a letter.
/// They become archive paths (`bin/<binary>`) and log prefixes, so nothing
/// else is allowed.
fn check_name(server: Option<&str>, property: &'static str, name: &str) -> Result<(), ManifestError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name.as_bytes()[0].is_ascii_lowercase()
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(ManifestError::invalid(
            server,
            property,
            format!("{name:?} is not a name (1..={MAX_NAME_LEN} of a-z 0-9 - _, starting with a letter)"),
        ))
    }
}

fn check_len(server: Option<&str>, property: &'static str, len: usize) -> Result<(), ManifestError> {
    if len > MAX_LIST {
        return Err(ManifestError::invalid(server, property, format!("{len} entries, at most {MAX_LIST} allowed")));
    }
    Ok(())
}

fn overlaps_ports(a: &IoPorts, b: &IoPorts) -> bool {
    (a.first as u32) < b.end() && (b.first as u32) < a.end()
}

fn overlaps_mem(a: &DeviceMemory, b: &DeviceMemory) -> bool {
    a.phys_base < b.end() && b.phys_base < a.end()
}

fn ports(p: &IoPorts) -> String {
    format!("[{:#x}, {}]", p.first, p.count)
}

fn mem(m: &DeviceMemory) -> String {
    format!("[{:#x}, {:#x}]", m.phys_base, m.bytes)
}

/// Deserializing lists from hostile bytes: refuse more than `MAX` entries
/// before allocating for them (serde would reserve up to 1 MiB on a claimed
/// length alone).
mod bounded {
    use super::*;
    use core::marker::PhantomData;
    use serde::de::{Deserializer, Error, SeqAccess, Visitor};

    pub fn vec<'de, const MAX: usize, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Vec<T>, D::Error> {
        struct Bounded<T, const MAX: usize>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>, const MAX: usize> Visitor<'de> for Bounded<T, MAX> {
            type Value = Vec<T>;
            fn expecting(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                write!(f, "a list of at most {MAX} entries")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
                let hint = seq.size_hint().unwrap_or(0);
                if hint > MAX {
                    return Err(A::Error::invalid_length(hint, &self));
                }
                let mut out = Vec::with_capacity(hint);
                while let Some(x) = seq.next_element()? {
                    if out.len() == MAX {
                        return Err(A::Error::invalid_length(MAX + 1, &self));
                    }
                    out.push(x);
                }
                Ok(out)
            }
        }
        d.deserialize_seq(Bounded::<T, MAX>(PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use alloc::vec;

    fn server(name: &str) -> Server {
        Server {
            name: name.to_string(),
            binary: name.to_string(),
            priority: 100,
            budget_kib: 256,
            serves: vec![name.to_string()],
            calls: vec![],
            ioports: vec![],
            irqs: vec![],
            device_memory: vec![],
            restart: Restart::DEFAULT,
            cpu: None,
            machine_exit: false,
            pci_bars: false,
            files: vec![],
            args: vec![],
            spawns: vec![],
            spawn_budget_kib: 0,
            on_demand: false,
            volumes: vec![],
        }
    }

    /// `spawns` names servers of the manifest and needs init's `proc`
    /// endpoint in `calls`; nobody serves `proc` but init.
    #[test]
    fn spawning_needs_init_s_endpoint_and_a_known_template() {
        let mut m = sample();
        m.servers[1].spawns = vec!["console".to_string()];
        assert_eq!(
            err(&m),
            r#"manifest: server "netd": property "spawns": starting instances needs init's endpoint: add "proc" to calls"#
        );
        m.servers[1].calls.push(PROC_ENDPOINT.to_string());
        assert_eq!(m.validate(), Ok(()));
        m.servers[1].spawns = vec!["vmm".to_string()];
        assert_eq!(err(&m), r#"manifest: server "netd": property "spawns": no server is named "vmm""#);
        let mut m = sample();
        m.servers[1].serves.push(PROC_ENDPOINT.to_string());
        assert_eq!(err(&m), r#"manifest: server "netd": property "serves": "proc" is init's endpoint"#);
        // Calling `proc` alone is allowed (init refuses it what it may not start).
        let mut m = sample();
        m.servers[1].calls.push(PROC_ENDPOINT.to_string());
        m.servers[1].on_demand = true;
        let bytes = m.encode().unwrap();
        assert_eq!(Manifest::decode(&bytes), Ok(m));
    }

    fn sample() -> Manifest {
        let mut console = server("console");
        console.ioports = vec![IoPorts { first: 0x3f8, count: 8 }];
        console.irqs = vec![4];
        let mut netd = server("netd");
        netd.calls = vec!["console".to_string()];
        netd.device_memory = vec![DeviceMemory { phys_base: 0xfebf_0000, bytes: 0x1000 }];
        netd.cpu = Some(1);
        netd.restart = Restart::Always;
        Manifest {
            system: System { name: "demo".to_string(), description: "a demo".to_string() },
            servers: vec![console, netd],
        }
    }

    fn err(m: &Manifest) -> String {
        m.validate().unwrap_err().to_string()
    }

    #[test]
    fn round_trip() {
        let m = sample();
        let bytes = m.encode().unwrap();
        assert!(bytes.starts_with(&MAGIC));
        assert_eq!(Manifest::decode(&bytes), Ok(m.clone()));
        assert_eq!(m.server("netd").unwrap().calls, ["console"]);
        assert!(m.server("init").is_none());
        assert_eq!(m.server_serving("console").unwrap().name, "console");
        assert_eq!(m.endpoints().map(|(e, _)| e).collect::<Vec<_>>(), ["console", "netd"]);
        assert_eq!(m.binaries(), ["console", "netd"]);
    }

    #[test]
    fn errors_name_the_server_and_property() {
        let mut m = sample();
        m.servers[1].irqs = vec![99];
        assert_eq!(err(&m), r#"manifest: server "netd": property "irqs": 99 is not an IOAPIC line (0..=23)"#);

        let mut m = sample();
        m.servers[1].calls.push("storaged".to_string());
        assert_eq!(err(&m), r#"manifest: server "netd": property "calls": no server serves endpoint "storaged""#);

        let mut m = sample();
        m.servers[1].ioports = vec![IoPorts { first: 0x3f0, count: 0x10 }];
        assert_eq!(
            err(&m),
            r#"manifest: server "netd": property "ioports": [0x3f0, 16] overlaps [0x3f8, 8] of server "console""#
        );

        // The PCI configuration ports, exactly, may be shared; a range
        // overlapping them may not.
        let mut m = sample();
        m.servers[0].ioports = vec![PCI_CONFIG_PORTS];
        m.servers[1].ioports = vec![PCI_CONFIG_PORTS];
        assert!(m.validate().is_ok(), "{:?}", m.validate());
        m.servers[1].ioports = vec![IoPorts { first: 0xcf8, count: 4 }];
        assert_eq!(
            err(&m),
            r#"manifest: server "netd": property "ioports": [0xcf8, 4] overlaps [0xcf8, 8] of server "console""#
        );

        let mut m = sample();
        m.system.name = "Demo!".to_string();
        assert!(err(&m).starts_with(r#"manifest: property "system.name": "Demo!" is not a name"#));
    }

    #[test]
    fn every_rule_is_enforced() {
        type Edit = fn(&mut Manifest);
        let cases: &[(Edit, &str, &str)] = &[
            (|m| m.servers[1].name = "console".into(), "name", "another server has this name"),
            (|m| m.servers[1].name = "init".into(), "name", "init is implicit"),
            (|m| m.servers[1].name = String::new(), "name", "is not a name"),
            (|m| m.servers[1].binary = "../etc".into(), "binary", "is not a name"),
            (|m| m.servers[1].binary = "init".into(), "binary", "root task"),
            (|m| m.servers[1].priority = 0, "priority", "0 is outside 1..=254"),
            (|m| m.servers[1].priority = 255, "priority", "255 is outside"),
            (|m| m.servers[1].budget_kib = 0, "budget_kib", "0 is outside"),
            (|m| m.servers[1].restart = Restart::Times(0), "restart", "0 restarts"),
            (|m| m.servers[1].cpu = Some(256), "cpu", "256 is beyond"),
            (|m| m.servers[1].serves = vec!["console".into()], "serves", "already served by server \"console\""),
            (|m| m.servers[1].serves.push("netd".into()), "serves", "listed twice"),
            (|m| m.servers[1].calls = vec!["x".into(), "x".into()], "calls", "listed twice"),
            (|m| m.servers[1].ioports = vec![IoPorts { first: 0xfff0, count: 0x20 }], "ioports", "not a range"),
            (|m| m.servers[1].ioports = vec![IoPorts { first: 0x60, count: 0 }], "ioports", "not a range"),
            (
                |m| m.servers[1].ioports = vec![IoPorts { first: 0x60, count: 4 }, IoPorts { first: 0x63, count: 1 }],
                "ioports",
                "overlaps",
            ),
            (|m| m.servers[1].irqs = vec![4], "irqs", "already delivered to server \"console\""),
            (|m| m.servers[1].irqs = vec![5, 5], "irqs", "listed twice"),
            (|m| m.servers[1].device_memory[0].phys_base += 8, "device_memory", "not page-aligned"),
            (|m| m.servers[1].device_memory[0].bytes = 0x800, "device_memory", "not page-aligned"),
            (|m| m.servers[1].device_memory[0].bytes = 0, "device_memory", "not a range"),
            (|m| m.servers[1].device_memory[0].phys_base = PHYS_ADDR_LIMIT, "device_memory", "not a range"),
            (|m| m.servers[1].device_memory[0].bytes = !0xfff, "device_memory", "not a range"),
            (
                |m| {
                    m.servers[0].device_memory = vec![DeviceMemory { phys_base: 0xfebe_0000, bytes: 0x20000 }];
                },
                "device_memory",
                "of server \"console\"",
            ),
            (|m| m.servers[1].calls = vec!["c".into(); MAX_LIST + 1], "calls", "at most 32"),
        ];
        for (edit, property, needle) in cases {
            let mut m = sample();
            edit(&mut m);
            match m.validate() {
                Err(ManifestError::Invalid { property: p, problem, .. }) => {
                    assert_eq!((p, problem.contains(needle)), (*property, true), "{problem}");
                }
                other => panic!("expected {property}: {needle}, got {other:?}"),
            }
            assert!(m.encode().is_err(), "an invalid manifest was encoded");
        }
        let mut m = sample();
        m.servers = (0..=MAX_SERVERS).map(|i| server(&format!("s{i}"))).collect();
        assert!(err(&m).contains("at most 64"));
    }

    #[test]
    fn decode_rejects_damage_without_panicking() {
        let bytes = sample().encode().unwrap();
        for cut in 0..bytes.len() {
            assert!(Manifest::decode(&bytes[..cut]).is_err(), "cut at {cut} decoded");
        }
        let mut long = bytes.clone();
        long.push(0);
        assert_eq!(Manifest::decode(&long), Err(ManifestError::Decode("trailing bytes after the manifest")));
        assert!(matches!(Manifest::decode(b"ELF\x7f"), Err(ManifestError::Decode(_))));
        // Decoding re-validates: a well-formed encoding of a bad manifest fails.
        let mut bad = sample();
        bad.servers[1].irqs = vec![99];
        let mut raw = Vec::from(MAGIC);
        raw.extend(postcard::to_allocvec(&bad).unwrap());
        assert!(matches!(Manifest::decode(&raw), Err(ManifestError::Invalid { property: "irqs", .. })));
        // A claimed length of 2^32 entries is refused before allocating.
        let mut huge = Vec::from(MAGIC);
        huge.extend([4, b'd', b'e', b'm', b'o', 0, 0xff, 0xff, 0xff, 0xff, 0x0f]);
        assert!(matches!(Manifest::decode(&huge), Err(ManifestError::Decode(_))));

        let mut state = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..20_000 {
            let mut b = bytes.clone();
            for _ in 0..1 + state % 3 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let at = state as usize % b.len();
                b[at] = (state >> 40) as u8;
            }
            if let Ok(m) = Manifest::decode(&b) {
                assert!(m.validate().is_ok());
            }
        }
    }

    #[test]
    fn restart_policy() {
        assert!(!Restart::Never.allows(0));
        assert!(Restart::Times(2).allows(1));
        assert!(!Restart::Times(2).allows(2));
        assert!(Restart::Always.allows(u32::MAX));
    }
}
