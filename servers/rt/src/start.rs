//! What a process learns at start: init hands every server a `StartInfo`
//! (postcard, in a read-only page) naming the capabilities it was granted
//! and the slots they are in, as the manifest said.

use alloc::string::String;
use alloc::vec::Vec;
use abi::CapSlot;
use serde::{Deserialize, Serialize};

/// Where init maps a server's start-up information, IPC buffer and stack.
pub const START_INFO_ADDR: u64 = 0x0000_7fff_fff1_0000;
pub const IPC_BUFFER_ADDR: u64 = 0x0000_7fff_fff0_0000;
pub const STACK_TOP: u64 = 0x0000_7fff_ffe0_0000;
pub const STACK_PAGES: u64 = 16;

/// Capability slots init fills in every server.
pub const SLOT_CONSOLE: CapSlot = 1;
pub const SLOT_SELF: CapSlot = 2;
pub const SLOT_THREAD: CapSlot = 3;
pub const SLOT_IOPORTS: CapSlot = 4;
/// The notification the runtime binds to the main thread.
pub const SLOT_NOTIFY: CapSlot = 5;
/// The runtime's slot for a frame a heap growth is creating
/// ([`crate::grow_heap`]); empty between growths, so a server leaves it be.
pub const SLOT_HEAP: CapSlot = 6;
/// The first slot a server may use for its own objects.
pub const SLOT_FREE: CapSlot = 128;

/// A named capability slot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Named {
    pub name: String,
    pub slot: CapSlot,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartInfo {
    pub name: String,
    /// Endpoints this server receives on.
    pub serves: Vec<Named>,
    /// Endpoints it may call (badged with its own identity).
    pub calls: Vec<Named>,
    /// IRQ capabilities: (IOAPIC line, slot).
    pub irqs: Vec<(u8, CapSlot)>,
    /// I/O-port capabilities: (first port, count, slot).
    pub ioports: Vec<(u16, u16, CapSlot)>,
    /// Device-memory frame capabilities: (physical address, bytes, slot).
    pub device_memory: Vec<(u64, u64, CapSlot)>,
    /// Data files from the boot archive: (name, read-only frame slot, bytes).
    pub files: Vec<(String, CapSlot, u64)>,
    /// The device-memory capability (any MMIO that is not RAM) for drivers
    /// that find their devices' BARs at run time (manifest `pci_bars`).
    pub device_memory_root: Option<CapSlot>,
    /// Free-form arguments from the manifest.
    pub args: Vec<String>,
    /// Who calls the endpoints it serves: (endpoint, the caller's name,
    /// the badge the caller's requests carry).
    pub clients: Vec<(String, String, u64)>,
}

impl StartInfo {
    pub fn serves(&self, name: &str) -> Option<CapSlot> {
        self.serves.iter().find(|n| n.name == name).map(|n| n.slot)
    }
    pub fn calls(&self, name: &str) -> Option<CapSlot> {
        self.calls.iter().find(|n| n.name == name).map(|n| n.slot)
    }
}

static NAME: spin::Once<&'static str> = spin::Once::new();

impl StartInfo {
    /// The badges of the callers the manifest lets stop this server
    /// (`lifecycle-stop=NAME,...` in its args: each named caller's badge on
    /// any endpoint it serves). init (badge 0) may always.
    pub fn stop_badges(&self) -> Vec<u64> {
        let names: Vec<&str> =
            self.args.iter().filter_map(|a| a.strip_prefix("lifecycle-stop=")).flat_map(|l| l.split(',')).collect();
        self.clients.iter().filter(|(_, who, _)| names.contains(&who.as_str())).map(|&(_, _, badge)| badge).collect()
    }
}

/// The name logs use for this process.
pub fn process_name() -> &'static str {
    NAME.get().copied().unwrap_or("?")
}

/// What `_start` received.
pub struct Start {
    pub ipc_buffer: u64,
    pub info_addr: u64,
    pub info_len: u64,
}

impl Start {
    pub fn new(ipc_buffer: u64, info_addr: u64, info_len: u64) -> Self {
        Self { ipc_buffer, info_addr, info_len }
    }

    /// The bytes at `info_addr` (a server's StartInfo, or init's archive).
    pub fn info_bytes(&self) -> &'static [u8] {
        if self.info_addr == 0 || self.info_len == 0 || self.info_len > 1 << 30 {
            return &[];
        }
        crate::user_slice(self.info_addr, self.info_len as usize)
    }

    /// Decodes a server's StartInfo and sets up logging with its console.
    pub fn server(&self, default_name: &'static str) -> StartInfo {
        let info: StartInfo = postcard::from_bytes(self.info_bytes()).unwrap_or_else(|_| StartInfo {
            name: String::from(default_name),
            ..StartInfo::default()
        });
        set_name(&info.name);
        crate::set_console(SLOT_CONSOLE);
        crate::set_stoppers(info.stop_badges());
        info
    }
}

/// Names this process in logs and panics (once; later calls are ignored).
pub fn set_name(name: &str) {
    NAME.call_once(|| alloc::boxed::Box::leak(String::from(name).into_boxed_str()));
}
