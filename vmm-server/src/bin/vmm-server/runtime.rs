//! The VM runtime on Alcove: guest memory, vCPU threads, the exit loop and
//! the timer thread, wired to the platform in `vmm_server::vm`.
//!
//! Threads: one per vCPU (each calls `VcpuRun` on its own vCPU, so an exit
//! never switches threads) and one timer thread that sleeps until the next
//! PIT/RTC event and also flushes the guest's console. The main thread sets
//! the VM up, waits for every thread to finish, frees everything and checks
//! the kernel-memory budget is what it was before. Device state is one
//! `Platform` behind a lock that is never held across an IPC call: a
//! disk request is queued under it, carried out (storaged's doorbell)
//! without it and completed under it again ([`disks::run_disks`]); the
//! console's input is read and its output written outside it. Each thread
//! has its own stack and IPC buffer (`alcove_rt::Thread`), so their IPC
//! calls are independent of each other. Guest RAM, run
//! pages and block rings are reached only through `alcove_rt`'s mapping
//! objects: volatile copies for memory the guest or storaged writes, a run
//! page only between two `VcpuRun` calls.
//! Exit handling is in [`exits`], the disks and the entropy source in
//! [`disks`].
//!
//! A VM ends when the guest powers off (ACPI S5), triple-faults, halts its
//! boot vCPU with interrupts off, or an exit cannot be handled (reported
//! with the guest's registers). A guest reboot (0xCF9, the 8042) tears the
//! VM down and boots it again from the same boot source.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use abi::{CapSlot, ObjectType, PAGE_SIZE, Rights};
use alcove_rt::start::{SLOT_CONSOLE, SLOT_FREE, SLOT_SELF, StartInfo};
use alcove_rt::{PrivateMapping, RunPage, SharedMemory, Thread, ThreadSlots, println};
use libipc::cap::Cap;
use libipc::kernel::KernelTransport;
use libipc::sys;
use vmm_server::boot::{layout, linux};
use vmm_server::config::VmConfig;
use vmm_server::firmware::{self, rom::FirmwareImage};
use vmm_server::pci::PciSlot;
use vmm_server::virtio::block::Block;
use vmm_server::virtio::console::{self, Console};
use vmm_server::virtio::pci::VirtioPci;
use vmm_server::virtio::rng::Rng;
use vmm_server::vm::console_out::{ConsoleOut, Source};
use vmm_server::vm::cpuid;
use vmm_server::vm::loader::{self, BootSource};
use vmm_server::vm::memory::{GuestRam, RamMap};
use vmm_server::vm::platform::{Platform, PowerEvent};
use vmm_server::vm::exit_counts::KernelExits;
use vmm_server::vm::port_counts::{AddrCounts, PortCounts};
use vmm_server::vm::pvclock::KvmClock;
use vmm_server::vm::sizing::{self, KernelMemory, VMM_RAM_VA};

use disks::{CpuRng, VmDisk, open_disk, run_disks};
use exits::vcpu_loop;

mod disks;
mod exits;
mod nics;

const RWX: Rights = Rights(Rights::READ.0 | Rights::WRITE.0 | Rights::EXECUTE.0);

/// Where things live in this process's address space (guest RAM at
/// [`VMM_RAM_VA`]).
const RUN_VA: u64 = 0x20_0000_0000;
const STACK_VA: u64 = 0x21_0000_0000;
const STACK_STRIDE: u64 = 0x10_0000;
const STACK_PAGES: u64 = sizing::THREAD_STACK_PAGES;
const FILE_VA: u64 = 0x30_0000_0000;
const FILE_STRIDE: u64 = 0x1_0000_0000;
/// Guest RAM comes in frames of this many pages (4 MiB): small enough to
/// find contiguous memory for after the host has run a while, few enough
/// to map quickly.
const FRAME_PAGES: u64 = 1024;

/// What the VM boots and how big it is.
pub struct VmSpec {
    pub name: String,
    pub ram_mib: u64,
    pub vcpus: u32,
    pub kernel: &'static [u8],
    pub initrd: Option<&'static [u8]>,
    /// `bootrom`: the firmware image (a boot file, mapped into the guest
    /// at the top of 4 GiB as it is) and its frame, instead of a kernel.
    pub firmware: Option<&'static [u8]>,
    /// The disk marked `"boot": true`.
    pub boot_disk: Option<usize>,
    pub cmdline: String,
    /// How many disks: disk i is storaged's disk i (a whole machine disk,
    /// or the i-th volume of the VMM's pool grant).
    pub disks: usize,
    /// The storaged endpoint, if granted.
    pub storaged: Option<CapSlot>,
    /// The netd endpoint, if granted (the VM's NICs attach there).
    pub netd: Option<CapSlot>,
    /// The VM's description (its `nics[]`).
    pub config: VmConfig,
    /// The console server, whose typed input goes to the guest's serial
    /// port.
    pub console: Option<CapSlot>,
    /// The notification its starter (zone-server) signals: bit
    /// `VMM_CONTROL_POWER_BUTTON` presses the guest's ACPI power button.
    pub control: Option<CapSlot>,
    /// zone-server's endpoint (a VMM it started: its instance's badge),
    /// where the guest's metadata changes are written back.
    pub zone: Option<CapSlot>,
    /// End the whole machine (QEMU) with the VM: `cargo xtask run --vm`.
    pub exit_machine: bool,
    /// The kernel memory this VM needs (checked against the budget before
    /// anything is created).
    pub kernel_memory: KernelMemory,
}

impl VmSpec {
    /// The VM this instance runs, from its start-up files: `None` if it has
    /// no `vm.json` (the idle instance), an error naming the property that
    /// is wrong otherwise.
    pub fn from_start(info: &StartInfo) -> Result<Option<VmSpec>, String> {
        // Several VMs in one boot archive each have their own description:
        // `config=NAME` names this one's (`cargo xtask run --vm A --vm B`).
        let name = info.args.iter().find_map(|a| a.strip_prefix("config=")).unwrap_or("vm.json");
        let Some(json) = file(info, name)? else {
            if name != "vm.json" {
                return Err(format!("config={name}: no such boot file among this server's files"));
            }
            return Ok(None);
        };
        let text = core::str::from_utf8(json).map_err(|_| format!("{name}: not UTF-8"))?;
        let config = VmConfig::from_json(text).map_err(|e| e.to_string())?;
        config.check_supported().map_err(|e| e.to_string())?;
        let by_name = |property: &str, path: &str| -> Result<&'static [u8], String> {
            let base = path.rsplit('/').next().unwrap_or(path);
            file(info, base)?
                .ok_or_else(|| format!("vmadm: property \"{property}\": {path:?} is not among this VM's boot files"))
        };
        let firmware = match config.bootrom {
            Some(bootrom) => {
                let name = firmware::image_file(bootrom);
                let bytes = file(info, name)?.ok_or_else(|| {
                    format!("vmadm: property \"bootrom\": the firmware {name:?} is not among this VM's boot files")
                })?;
                // A bad image (size) is refused before anything is made.
                FirmwareImage::new(bytes).map_err(|e| format!("vmadm: property \"bootrom\": {name}: {e}"))?;
                Some(bytes)
            }
            None => None,
        };
        let kernel = if firmware.is_some() { &[][..] } else { by_name("kernel", &config.kernel)? };
        let initrd = match &config.initrd {
            Some(p) => Some(by_name("initrd", p)?),
            None => None,
        };
        let name = match (&config.alias, &config.uuid) {
            (Some(a), _) => a.clone(),
            (None, Some(u)) => u.to_string(),
            (None, None) => info.name.clone(),
        };
        let boot_files: Vec<u64> = info.files.iter().map(|(_, _, len)| *len).collect();
        let mut kernel_memory =
            // A VNIC's frame ring is mapped as a disk's block ring is.
            KernelMemory::for_vm(config.ram_bytes(), config.vcpus, (config.disks.len() + config.nics.len()) as u32, &boot_files);
        if let Some(image) = firmware {
            kernel_memory = kernel_memory.with_firmware(image.len() as u64);
        }
        Ok(Some(VmSpec {
            kernel_memory,
            name,
            ram_mib: config.ram_mib,
            vcpus: config.vcpus,
            kernel,
            initrd,
            firmware,
            boot_disk: config.boot_disk(),
            cmdline: config.cmdline.clone(),
            disks: config.disks.len(),
            storaged: info.calls("storaged"),
            netd: info.calls("netd"),
            config: config.clone(),
            console: info.calls("console"),
            control: info.calls("control"),
            zone: info.calls("zone-server"),
            exit_machine: info.args.iter().any(|a| a == "exit-machine"),
        }))
    }
}

/// A boot file's bytes, mapped read-only on first use.
fn file(info: &StartInfo, name: &str) -> Result<Option<&'static [u8]>, String> {
    let Some(index) = info.files.iter().position(|(n, _, _)| n == name) else { return Ok(None) };
    let (_, slot, len) = &info.files[index];
    let va = FILE_VA + index as u64 * FILE_STRIDE;
    match sys::map(SLOT_SELF, *slot, va, Rights::READ) {
        Ok(()) | Err(abi::Error::AlreadyMapped) => {}
        Err(e) => return Err(format!("{name}: cannot map the boot file: {e}")),
    }
    Ok(Some(alcove_rt::user_bytes(va, *len as usize)))
}

/// How a VM ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ending {
    PowerOff,
    Reboot,
    TripleFault,
    /// The boot vCPU halted with interrupts off.
    Halted,
    Error(String),
}

impl Ending {
    fn word(&self) -> &str {
        match self {
            Ending::PowerOff => "poweroff",
            Ending::Reboot => "reboot",
            Ending::TripleFault => "triple-fault",
            Ending::Halted => "halted",
            Ending::Error(_) => "error",
        }
    }

    /// The machine's exit status under `cargo xtask run --vm`.
    pub fn machine_status(&self) -> u64 {
        match self {
            Ending::PowerOff => 0,
            Ending::Reboot => 1,
            Ending::Halted => 2,
            Ending::TripleFault => 3,
            Ending::Error(_) => 4,
        }
    }
}

/// The one line that says how a VM ended (the test driver reads it).
pub fn announce_end(name: &str, ending: &Ending) {
    match ending {
        Ending::Error(why) => println!("vm {name}: ended: error: {why}"),
        e => println!("vm {name}: ended: {}", e.word()),
    }
}

/// Runs the VM until it ends (rebooting it as often as the guest asks);
/// the process's exit code.
/// When each stage of this VMM's start ended (the kernel's clock), printed
/// as one line once its threads run, at the first boot only (`vm NAME:
/// create stages (PROCESS) NAME=NS ...`; init's `start stages` line names
/// the same process): `cargo xtask bench --case bench/vmadm-create` breaks
/// the time to the guest's first instruction down with it.
pub struct Stages {
    process: String,
    marks: Vec<(&'static str, u64)>,
}

impl Stages {
    pub fn new(process: &str, main_ns: u64) -> Self {
        Self { process: process.into(), marks: alloc::vec![("main", main_ns)] }
    }

    pub fn mark(&mut self, stage: &'static str) {
        self.marks.push((stage, alcove_rt::clock_ns()));
    }
}

/// Notes the end of `stage` unless the stages were printed already.
fn mark(stages: &mut Option<Stages>, stage: &'static str) {
    if let Some(s) = stages {
        s.mark(stage);
    }
}

pub fn run(spec: &VmSpec, stages: Stages) -> u64 {
    let before = sys::budget_info().map(|b| b.used_bytes).unwrap_or(0);
    let mut stages = Some(stages);
    let ending = loop {
        let ending = match boot(spec, &mut stages) {
            Ok(e) => e,
            Err(e) => Ending::Error(e),
        };
        let after = sys::budget_info().map(|b| b.used_bytes).unwrap_or(0);
        if after != before {
            log::error!("kernel memory not returned after the VM: {} bytes before, {} after", before, after);
        } else {
            log::info!("vm {}: every frame and capability returned ({} KiB in use, as before)", spec.name, after / 1024);
        }
        if ending == Ending::Reboot {
            println!("vm {}: guest reboot", spec.name);
            continue;
        }
        break ending;
    };
    announce_end(&spec.name, &ending);
    if spec.exit_machine {
        let _ = sys::machine_exit(SLOT_CONSOLE, ending.machine_status());
    }
    if matches!(ending, Ending::PowerOff) { 0 } else { 1 }
}

/// Capability slots of one boot, deleted in `Drop` (the mappings belong to
/// their mapping objects: guest RAM, run pages, rings, thread stacks).
struct Resources {
    next: CapSlot,
    slots: Vec<CapSlot>,
}

impl Resources {
    fn new() -> Self {
        Self { next: SLOT_FREE, slots: Vec::new() }
    }

    fn create(&mut self, ty: ObjectType, arg: u64, what: &str) -> Result<CapSlot, String> {
        let slot = self.next;
        sys::create(ty, slot, arg).map_err(|e| failed(what, e))?;
        self.next += 1;
        self.slots.push(slot);
        Ok(slot)
    }

    /// A fresh slot nobody has used in this boot, to be filled by a mapping
    /// object (recorded with [`Self::adopt`] if this boot frees it).
    fn fresh(&mut self) -> CapSlot {
        let slot = self.next;
        self.next += 1;
        slot
    }

    /// Slots a mapping object filled, to delete at the end of the boot.
    fn adopt(&mut self, slots: &[CapSlot]) {
        for &s in slots {
            self.next = self.next.max(s + 1);
            self.slots.push(s);
        }
    }
}

/// A failed system call's message: a budget shortfall says how much is
/// left of the budget (the kernel's `OutOfBudget`; `OutOfMemory` is the
/// machine's frame allocator running dry, which no budget can fix).
fn failed(what: &str, e: abi::Error) -> String {
    match (e, sys::budget_info()) {
        (abi::Error::OutOfBudget, Ok(b)) => format!(
            "{what}: {e}: {} KiB left of the {} KiB budget",
            b.limit_bytes.saturating_sub(b.used_bytes) / 1024,
            b.limit_bytes / 1024
        ),
        _ => format!("{what}: {e}"),
    }
}

impl Drop for Resources {
    fn drop(&mut self) {
        // Newest first: vCPUs before their run pages, notifications,
        // frames, then the guest. (Threads, run pages and RAM are gone by
        // now: their objects were dropped first.)
        for &slot in self.slots.iter().rev() {
            let _ = sys::cap_delete(slot);
        }
    }
}

/// Guest RAM as the device models reach it: each block of
/// [`layout::ram_blocks`] at its guest-physical address.
pub type GuestMemory = RamMap<SharedMemory>;

/// State every thread of one boot shares.
struct Shared {
    /// The devices. Held briefly by whichever thread handles an exit,
    /// never across an IPC call (storaged's doorbell rings from
    /// [`run_disks`], outside it); waiters yield to the holder instead of
    /// spinning through their time slices.
    platform: alcove_rt::sync::Mutex<Platform>,
    /// The disks' request sides, carried out without the platform lock.
    disks: Vec<VmDisk>,
    ram: GuestMemory,
    vcpus: Vec<CapSlot>,
    /// Each vCPU's run page, taken by its thread when it starts.
    run_pages: Vec<spin::Mutex<Option<RunPage>>>,
    ending: spin::Mutex<Option<Ending>>,
    /// What the vCPU that triple-faulted left (`vm::diagnose`), printed
    /// after the guest's last console output, before the ending line.
    fault_report: spin::Mutex<Option<Vec<String>>>,
    stopping: AtomicBool,
    /// Wakes the timer thread (bit 0).
    timer: CapSlot,
    /// Each thread signals bit `index` here when it has stopped.
    done: CapSlot,
    /// Where each thread parks for good.
    park: CapSlot,
    /// VM time 0 on the kernel clock.
    epoch_ns: u64,
    /// The guest's console output: line buffers and what is ready to go.
    console: spin::Mutex<ConsoleState>,
    /// Held by the one thread writing `console.ready` out.
    console_writer: spin::Mutex<()>,
    /// The virtio-console's place on the PCI bus.
    console_slot: PciSlot,
    /// The console server (operator input for the serial port).
    console_server: Option<CapSlot>,
    /// The starter's control notification (polled on each timer pass).
    control: Option<CapSlot>,
    /// The NICs' frame rings to netd; the lock nests inside the platform's.
    nics: spin::Mutex<nics::Nics>,
    /// The metadata service on COM2; the lock nests inside the platform's.
    metadata: spin::Mutex<vmm_server::vm::metadata::MetadataPort>,
    /// zone-server, where the guest's metadata changes go back.
    zone: Option<CapSlot>,
    /// The write-backs of this second: when it began (VM time, ns) and how
    /// many went.
    metadata_writes: spin::Mutex<(u64, u32)>,
    /// The guest's paravirtual clock (kvmclock).
    clock: KvmClock,
    /// Exits that reached the VMM, by kind: port I/O, of it the serial
    /// port's, MMIO, MSR, interrupted runs.
    exits: [AtomicU64; 5],
    /// The port-I/O exits by port, each vCPU's added as it stops.
    port_exits: spin::Mutex<PortCounts>,
    /// The MMIO exits by address and MSR exits by MSR, the same way.
    mmio_exits: spin::Mutex<AddrCounts>,
    msr_exits: spin::Mutex<AddrCounts>,
    /// TSC ticks the vCPU threads spent in the VMM on exits, by kind (those
    /// of `exits`, then other exits), and in `run_disks`.
    vmm_ticks: [AtomicU64; exits::VMM_TICK_KINDS],
    /// The hardware exits (the kernel's own included), each vCPU's added
    /// as it stops.
    kernel_exits: spin::Mutex<KernelExits>,
    name: String,
}

/// The guest's metadata changes written back to zone-server a second, at
/// most.
const METADATA_WRITES_PER_S: u32 = 16;

/// The guest's console output between the devices and the system console.
struct ConsoleState {
    lines: ConsoleOut,
    /// Bytes ready for the system console, in order.
    ready: Vec<u8>,
}

/// How much of `ready` to offer the console at once: at most `max` bytes,
/// ending at a line's end where one is in reach (the console server takes
/// whole lines, so VMs' lines do not interleave).
fn console_chunk(ready: &[u8], max: usize) -> usize {
    let n = ready.len().min(max);
    if n == ready.len() {
        return n;
    }
    ready[..n].iter().rposition(|&b| b == b'\n').map_or(n, |i| i + 1)
}

/// How much ready console output may wait before the devices' output is
/// left in them (the guest then waits on a full transmitter).
const CONSOLE_READY_LIMIT: usize = 64 * 1024;

/// Threads of the current boot that have stopped (reset before each boot's
/// threads start).
static STOPPED: AtomicUsize = AtomicUsize::new(0);

/// The boot the threads are running (one at a time).
static CURRENT: spin::Mutex<Option<Arc<Shared>>> = spin::Mutex::new(None);

impl Shared {
    fn now(&self) -> u64 {
        alcove_rt::clock_ns().saturating_sub(self.epoch_ns)
    }

    fn end(&self, ending: Ending) {
        {
            let mut e = self.ending.lock();
            if e.is_none() {
                if let Ending::Error(why) = &ending {
                    log::error!("vm {}: {why}", self.name);
                }
                *e = Some(ending);
            }
        }
        if !self.stopping.swap(true, Ordering::AcqRel) {
            for &v in &self.vcpus {
                let _ = sys::vcpu_kick(v);
            }
            let _ = sys::signal(self.timer, 1);
        }
    }

    /// Hands raised interrupts to the vCPUs, passes the guest's console
    /// output on (finished lines, and partial lines by age; everything
    /// when `final_flush`: the VM has ended) and acts on a power request.
    /// The output joins the console queue and is written to the system
    /// console (a synchronous IPC to the console server), which a vCPU
    /// thread leaves to the timer thread ([`Self::deliver_from_vcpu`]).
    fn deliver(&self, final_flush: bool) {
        self.deliver_and(final_flush, true);
    }

    /// [`Self::deliver`] on a vCPU thread: the queued console output is
    /// written by the timer thread, woken for it, so the guest runs on
    /// meanwhile (a firmware boot's console writes took the boot vCPU
    /// 1.6-2.7 s a boot, most of its port-I/O time in the VMM). The guest
    /// is held back as before once the queue is full.
    fn deliver_from_vcpu(&self) {
        // A writer at work writes on until the queue is empty.
        if self.deliver_and(false, false) && !self.console_writer.is_locked() {
            let _ = sys::signal(self.timer, 1);
        }
    }

    /// Whether console output waits in the queue.
    fn deliver_and(&self, final_flush: bool, write: bool) -> bool {
        let now = self.now();
        let (interrupts, power) = {
            let mut p = self.platform.lock();
            // Frames both ways between the NICs and netd's rings (netd's
            // doorbell is an IPC: made before the console's spin lock is
            // taken, which the console writer takes without this one).
            let nic_kicked = self.nics.lock().pump(p.pci(), &mut GuestRam::physical(&self.ram), !write);
            // The guest's metadata requests on COM2, answered.
            self.metadata.lock().pump(&mut p, now);
            // The console lock nests inside the platform lock: output taken
            // from the devices joins the queue in the order the devices
            // produced it, whichever thread takes it.
            let mut c = self.console.lock();
            // While the system console lags, output stays in the devices,
            // whose full FIFOs hold the guest back (nothing is dropped).
            let room = final_flush || c.ready.len() < CONSOLE_READY_LIMIT;
            let mut serial = Vec::new();
            if room {
                loop {
                    // Taking the output lets the UART's transmit FIFO move
                    // on: at the end, take until nothing is left.
                    let more = p.take_console_output();
                    if more.is_empty() {
                        break;
                    }
                    serial.extend_from_slice(&more);
                    if !final_flush {
                        break;
                    }
                }
            }
            let debug = if room { p.take_debug_output() } else { Vec::new() };
            let mut hvc = Vec::new();
            let mut kicked = false;
            if room {
                let mut mem = GuestRam::physical(&self.ram);
                if let Some(dev) = p.pci().device_mut::<VirtioPci<Console>>(self.console_slot) {
                    hvc = dev.device_mut().take_output();
                    if !hvc.is_empty() {
                        // Room again: let stalled transmit buffers through.
                        dev.kick(console::TRANSMITQ, &mut mem);
                        hvc.extend_from_slice(&dev.device_mut().take_output());
                        kicked = true;
                    }
                }
            }
            if kicked || nic_kicked {
                // Pass on the interrupt the kick may have raised.
                p.tick(now);
            }
            let ConsoleState { lines, ready } = &mut *c;
            ready.extend_from_slice(&lines.push(Source::Serial, &serial, now));
            ready.extend_from_slice(&lines.push(Source::Virtio, &hvc, now));
            ready.extend_from_slice(&lines.push(Source::Firmware, &debug, now));
            ready.extend_from_slice(&lines.take_aged(now));
            if final_flush {
                ready.extend_from_slice(&lines.take_all());
            }
            drop(c);
            (p.take_interrupts(), p.power_event())
        };
        let n = self.vcpus.len() as u32;
        for i in interrupts {
            for (index, &vcpu) in self.vcpus.iter().enumerate() {
                if i.target.names(index as u32, n) {
                    let _ = if i.level {
                        sys::vcpu_interrupt_level(vcpu, i.vector)
                    } else {
                        sys::vcpu_interrupt(vcpu, i.vector)
                    };
                }
            }
        }
        if write {
            self.write_console(final_flush);
            self.write_back_metadata();
        }
        match power {
            Some(PowerEvent::PowerOff) => self.end(Ending::PowerOff),
            Some(PowerEvent::Reboot) => self.end(Ending::Reboot),
            None => {}
        }
        !write && (!self.console.lock().ready.is_empty() || self.metadata.lock().has_updates())
    }

    /// The VM's metadata changed at zone-server (`VMM_CONTROL_METADATA`):
    /// the guest's own changes go back first, then the description is
    /// read again (`mdata.config`, in pieces, at most what a VMM is
    /// started with) and the metadata service answers from it. A failure
    /// is logged and the service answers as before.
    fn refresh_metadata(&self) {
        use libipc::interfaces::{PROC_START_DATA_TOTAL_MAX, mdata};
        let Some(zone) = self.zone else { return };
        self.write_back_metadata();
        let client = mdata::Client::new(KernelTransport::new(libipc::cap::Cap::from_slot(zone)));
        let mut json = Vec::new();
        let fetched = loop {
            match client.config(json.len() as u32) {
                Ok(Ok(piece)) if piece.is_empty() => break Ok(()),
                Ok(Ok(piece)) if json.len() + piece.len() <= PROC_START_DATA_TOTAL_MAX as usize => json.extend(piece),
                Ok(Ok(_)) => break Err(alloc::format!("longer than {PROC_START_DATA_TOTAL_MAX} bytes")),
                Ok(Err(why)) => break Err(why),
                Err(e) => break Err(alloc::format!("{e}")),
            }
        };
        let config = fetched.and_then(|()| {
            let text = core::str::from_utf8(&json).map_err(|_| String::from("not UTF-8"))?;
            vmm_server::config::VmConfig::from_json(text).map_err(|e| alloc::format!("{e}"))
        });
        match config {
            Ok(c) => {
                self.metadata.lock().refresh(&c);
                log::info!("vm {}: its metadata changed at zone-server: the metadata service answers the new values", self.name);
            }
            Err(why) => log::warn!("vm {}: its metadata changed, but its description could not be read again: {why}", self.name),
        }
    }

    /// Writes the guest's metadata changes back to the VM's record at
    /// zone-server (`mdata.change`, a value longer than one message in
    /// pieces), outside every lock of the VM's; one zone-server refuses
    /// (vmadm's limits) stays in the guest's copy alone, and is logged.
    fn write_back_metadata(&self) {
        use libipc::interfaces::{MDATA_PIECE_MAX, mdata};
        let Some(zone) = self.zone else { return };
        let client = mdata::Client::new(KernelTransport::new(libipc::cap::Cap::from_slot(zone)));
        loop {
            // At most METADATA_WRITES_PER_S a second: the rest waits (each
            // key's latest change alone), so a guest that PUTs without end
            // costs the control plane a bounded rate of record writes.
            let now = self.now();
            {
                let mut w = self.metadata_writes.lock();
                if now.saturating_sub(w.0) >= 1_000_000_000 {
                    *w = (now, 0);
                }
                if w.1 >= METADATA_WRITES_PER_S {
                    break;
                }
                w.1 += 1;
            }
            let Some(u) = self.metadata.lock().take_update() else { break };
            let internal = u.store == alcove_mdata::Store::Internal;
            let r = match &u.value {
                None => client.change(internal, u.key.clone(), None, false),
                Some(v) => {
                    let mut rest = v.as_str();
                    loop {
                        let mut cut = rest.len().min(MDATA_PIECE_MAX as usize);
                        while !rest.is_char_boundary(cut) {
                            cut -= 1;
                        }
                        let last = cut == rest.len();
                        let r = client.change(internal, u.key.clone(), Some(rest[..cut].into()), !last);
                        rest = &rest[cut..];
                        if last || !matches!(r, Ok(Ok(_))) {
                            break r;
                        }
                    }
                }
            };
            match r {
                Ok(Ok(_)) => {}
                Ok(Err(why)) => log::warn!("vm {}: the guest's metadata change of {:?} was not written back: {why}", self.name, u.key),
                Err(e) => {
                    log::warn!("vm {}: zone-server did not take the guest's metadata change of {:?}: {e}", self.name, u.key);
                    break;
                }
            }
        }
    }

    /// Writes the queued console output to the system console, in queue
    /// order, through the console server, which takes what this VM's
    /// allowance covers (finding 16: a guest flooding its UART gets its
    /// rate; the rest waits here, then in the devices, holding the guest
    /// back). One thread writes at a time; another that finds the writer
    /// busy leaves its bytes to it (or to the next delivery) unless `wait`:
    /// then everything goes out, waiting for the allowance as needed.
    fn write_console(&self, wait: bool) {
        let writer = if wait { Some(self.console_writer.lock()) } else { self.console_writer.try_lock() };
        let Some(_writer) = writer else { return };
        loop {
            let chunk: Vec<u8> = {
                let c = self.console.lock();
                c.ready[..console_chunk(&c.ready, 2048)].to_vec()
            };
            if chunk.is_empty() {
                break;
            }
            let (taken, retry_ns) = self.put_console(&chunk);
            self.console.lock().ready.drain(..taken);
            if taken < chunk.len() {
                if !wait {
                    // The timer thread's next pass (within 20 ms) offers
                    // the rest.
                    break;
                }
                // The final flush: every other thread has stopped, so `done`
                // stays quiet and this waits out the time.
                let _ = sys::wait(self.done, retry_ns.clamp(1_000_000, 100_000_000));
            }
        }
    }

    /// Offers `chunk` to the console server: how much it took, and when to
    /// offer the rest. Without a console server, or should it fail (it is
    /// being restarted), the bytes go to the kernel console, not lost.
    fn put_console(&self, chunk: &[u8]) -> (usize, u64) {
        if let Some(ep) = self.console_server {
            let client = libipc::interfaces::console::Client::new(KernelTransport::new(Cap::from_slot(ep)));
            if let Ok(put) = client.put(chunk.to_vec()) {
                return ((put.taken as usize).min(chunk.len()), put.retry_ns);
            }
        }
        let _ = sys::debug_write(SLOT_CONSOLE, chunk);
        (chunk.len(), 0)
    }

    /// When the timer thread must next pass on a partial console line.
    fn console_due(&self) -> Option<u64> {
        self.console.lock().lines.next_due()
    }
}

/// One boot of the VM, from empty to ended and freed.
fn boot(spec: &VmSpec, stages: &mut Option<Stages>) -> Result<Ending, String> {
    let mut res = Resources::new();
    let ram_bytes = spec.ram_mib << 20;
    // Before anything is created: a budget too small for this VM is named
    // as such, with what it needs, not met halfway through.
    if let Ok(b) = sys::budget_info() {
        sizing::check_budget(spec.kernel_memory, b.limit_bytes).map_err(|e| e.to_string())?;
    }
    let guest = res.create(ObjectType::Guest, 0, "create the guest")?;
    // Guest RAM, a block at a time (below the PCI hole, then from 4 GiB):
    // new frames mapped into this process alone, one block after the other
    // from VMM_RAM_VA; the boot source is loaded into the first while
    // nothing else can reach it; then each block is mapped into the guest
    // at its guest-physical address and from then on reached only through
    // volatile copies. The mappings keep the frames; their capabilities go
    // once mapped (a large guest has more frames than the process has
    // capability slots).
    let blocks = layout::ram_blocks(ram_bytes);
    let mut private = Vec::new();
    let mut offset = 0;
    for block in &blocks {
        let m = PrivateMapping::create(VMM_RAM_VA + offset, block.len, FRAME_PAGES, res.next..)
            .map_err(|e| failed(&format!("guest RAM ({} MiB)", block.len >> 20), e));
        match m {
            Ok(m) => {
                // Their slots are taken until the frames are mapped.
                res.next += m.frames().len() as CapSlot;
                private.push((block.gpa, m));
            }
            Err(e) => {
                release_frames(private);
                return Err(e);
            }
        }
        offset += block.len;
    }
    mark(stages, "ram_allocated");
    let loaded = if let Some(image) = spec.firmware {
        // Firmware boot: the image's low alias into RAM at 0xE0000; the
        // firmware finds everything else through fw_cfg.
        FirmwareImage::new(image).map_err(|e| e.to_string()).and_then(|f| {
            let (at, tail) = f.low_alias();
            let low = private[0].1.bytes_mut();
            let dst = low.get_mut(at as usize..at as usize + tail.len()).ok_or("guest RAM ends below 1 MiB")?;
            dst.copy_from_slice(tail);
            Ok(None)
        })
    } else {
        let source = BootSource { kernel: spec.kernel, initrd: spec.initrd, cmdline: &spec.cmdline, vcpus: spec.vcpus };
        loader::load_linux_in(private[0].1.bytes_mut(), ram_bytes, &source).map(Some).map_err(|e| e.to_string())
    };
    let entry = match loaded {
        Ok(entry) => entry,
        Err(e) => {
            release_frames(private);
            return Err(e);
        }
    };
    mark(stages, "loaded");
    let mut views = Vec::new();
    let mut mapped = Ok(());
    for (gpa, m) in private {
        let (view, frames) = m.share();
        for (i, &frame) in frames.iter().enumerate() {
            let at = gpa + i as u64 * FRAME_PAGES * PAGE_SIZE;
            if mapped.is_ok() {
                mapped = sys::map(guest, frame, at, RWX).map_err(|e| failed(&format!("map guest RAM at {at:#x}"), e));
            }
            // The mappings hold the frame now (or nothing does).
            let _ = sys::cap_delete(frame);
        }
        views.push((gpa, view));
    }
    mapped?;
    mark(stages, "ram_mapped");
    let ram = RamMap::new(views).ok_or("guest RAM blocks overlap")?;
    // The firmware image at the top of 4 GiB: a copy in frames of its own
    // (the boot file is read-only, not executable), mapped into the guest
    // read-only and executable (a ROM: a write there is an MMIO exit that
    // nothing claims). Its view here goes with the boot; the guest's
    // mapping holds the frames.
    let rom = match spec.firmware {
        Some(image) => Some(map_firmware(&mut res, guest, image)?),
        None => None,
    };

    let mut vcpus = Vec::new();
    let mut run_pages = Vec::new();
    for index in 0..u64::from(spec.vcpus) {
        let (frame_slot, vcpu_slot) = (res.fresh(), res.fresh());
        let mut page = RunPage::create(guest, frame_slot, vcpu_slot, RUN_VA + index * PAGE_SIZE)
            .map_err(|e| format!("create vCPU {index}: {e}"))?;
        res.adopt(&[frame_slot, vcpu_slot]);
        let run = page.state();
        let table = cpuid::guest_cpuid(cpuid::host, index as u32, spec.vcpus, run.cpuid.len());
        run.cpuid[..table.len()].copy_from_slice(&table);
        run.cpuid_count = table.len() as u32;
        match (&entry, index) {
            (Some(entry), 0) => linux::set_boot_vcpu(run, entry),
            // The reset state, EDX the processor signature (CPUID 1 EAX).
            (None, 0) => {
                let sig = table.iter().find(|e| e.leaf == 1).map_or(0x600, |e| e.eax);
                firmware::rom::set_reset_state(run, sig);
            }
            _ => {}
        }
        vcpus.push(page.vcpu());
        run_pages.push(spin::Mutex::new(Some(page)));
    }
    mark(stages, "vcpus");
    let timer = res.create(ObjectType::Notification, 0, "timer notification")?;
    let done = res.create(ObjectType::Notification, 0, "done notification")?;
    let park = res.create(ObjectType::Notification, 0, "park notification")?;
    let epoch_ns = alcove_rt::clock_ns();
    // The guest's clocks start at the host's wall-clock time (1970 if the
    // machine has none): the RTC, and kvmclock's wall clock at system time
    // 0, which is this TSC.
    let unix_now = sys::unix_seconds().unwrap_or(0);
    let mut platform = Platform::new(unix_now as i64, 0);
    let mut disk_slots = Vec::new();
    let mut disks = Vec::new();
    for index in 0..spec.disks {
        let backend = open_disk(&mut res, spec, index)?;
        let device = VirtioPci::new(Block::new(backend)).map_err(|e| format!("disks[{index}]: {e}"))?;
        let requests = device.device().disk().clone();
        let slot = platform.pci().add(alloc::boxed::Box::new(device)).map_err(|e| format!("disks[{index}]: {e}"))?;
        disk_slots.push(slot);
        disks.push(VmDisk { slot, requests });
    }
    let nic_set = nics::attach(&mut res, spec, platform.pci(), timer)?;
    // An entropy device when the host CPU has a hardware RNG, and a virtio
    // console (hvc0) next to the serial one.
    if alcove_rt::rdrand_u64().is_some() {
        let rng = VirtioPci::new(Rng::new(CpuRng)).map_err(|e| format!("virtio-rng: {e}"))?;
        platform.pci().add(alloc::boxed::Box::new(rng)).map_err(|e| format!("virtio-rng: {e}"))?;
    } else {
        log::info!("vm {}: no virtio-rng (the host CPU has no RDRAND)", spec.name);
    }
    if spec.firmware.is_some() {
        let boot_slot = spec.boot_disk.and_then(|i| disk_slots.get(i).copied());
        let fw = firmware::fw_cfg_for_vm(ram_bytes, spec.vcpus, boot_slot)?;
        platform.attach_firmware(fw, &firmware::chipset::cmos_bytes(ram_bytes, spec.vcpus));
        // The LPC bridge where OVMF reads the PM base (firmware VMs only).
        platform
            .pci()
            .add_at(firmware::lpc::LPC_SLOT, alloc::boxed::Box::new(firmware::lpc::Lpc::new()))
            .map_err(|e| format!("the LPC bridge: {e}"))?;
    }
    let console = VirtioPci::new(Console::new()).map_err(|e| format!("virtio-console: {e}"))?;
    let console_slot =
        platform.pci().add(alloc::boxed::Box::new(console)).map_err(|e| format!("virtio-console: {e}"))?;
    let shared = Arc::new(Shared {
        platform: alcove_rt::sync::Mutex::new(platform),
        disks,
        ram,
        vcpus,
        run_pages,
        ending: spin::Mutex::new(None),
        fault_report: spin::Mutex::new(None),
        stopping: AtomicBool::new(false),
        timer,
        done,
        park,
        epoch_ns,
        console: spin::Mutex::new(ConsoleState { lines: ConsoleOut::new(), ready: Vec::new() }),
        console_writer: spin::Mutex::new(()),
        console_slot,
        console_server: spec.console,
        control: spec.control,
        nics: spin::Mutex::new(nic_set),
        metadata: spin::Mutex::new({
            let port = vmm_server::vm::metadata::MetadataPort::new(&spec.config);
            if spec.zone.is_some() { port.writing_back() } else { port }
        }),
        zone: spec.zone,
        metadata_writes: spin::Mutex::new((0, 0)),
        exits: Default::default(),
        port_exits: spin::Mutex::new(PortCounts::new()),
        mmio_exits: spin::Mutex::new(AddrCounts::named("addresses")),
        msr_exits: spin::Mutex::new(AddrCounts::named("MSRs")),
        vmm_ticks: Default::default(),
        kernel_exits: spin::Mutex::new(KernelExits::new(&abi::VcpuRun::ZERO)),
        // Guests see the host's TSC: system time 0 now.
        clock: KvmClock { tsc_base: alcove_rt::rdtsc(), tsc_khz: sys::tsc_khz().unwrap_or(1_000_000), unix_seconds: unix_now },
        name: spec.name.clone(),
    });
    *CURRENT.lock() = Some(shared.clone());
    mark(stages, "devices");

    // Threads: vCPUs 0..n, then the timer.
    let count = spec.vcpus as u64 + 1;
    STOPPED.store(0, Ordering::Release);
    let mut threads = Vec::new();
    let mut failure = None;
    for index in 0..count {
        match start_thread(&mut res, index, index == count - 1) {
            Ok(t) => threads.push(t),
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    let started = threads.len();
    if let Some(e) = &failure {
        shared.end(Ending::Error(e.clone()));
    } else {
        println!("vm {}: started: {} vCPUs, {} MiB", spec.name, spec.vcpus, spec.ram_mib);
        report_overhead(ram_bytes);
        if let Some(s) = stages.take() {
            let mut line = format!("vm {}: create stages ({})", spec.name, s.process);
            for (stage, ns) in &s.marks {
                line.push_str(&format!(" {stage}={ns}"));
            }
            println!("{line}");
        }
    }
    // Wait for every started thread to stop.
    // Each thread counts itself out in STOPPED and signals `done` (a VM
    // may have more threads than a notification has bits).
    while STOPPED.load(Ordering::Acquire) < started {
        match sys::wait(done, abi::FOREVER) {
            Ok(_) => {}
            Err(e) => {
                log::error!("waiting for the VM's threads: {e}");
                break;
            }
        }
    }
    shared.deliver(true);
    if let Some(report) = shared.fault_report.lock().take() {
        for line in report {
            println!("vm {}: {line}", spec.name);
        }
    }
    let n = |k: usize| shared.exits[k].load(Ordering::Relaxed);
    log::info!(
        "vm {}: ran {} ms; exits to the VMM: port I/O {} (serial port {}), MMIO {}, MSR {}, interrupted {}",
        spec.name,
        shared.now() / 1_000_000,
        n(0) + n(1),
        n(1),
        n(2),
        n(3),
        n(4)
    );
    // Each key's time in the VMM, in ms, after its counts.
    let per_ms = shared.clock.tsc_khz.max(1);
    log::info!("vm {}: port I/O exits by port: {}", spec.name, shared.port_exits.lock().summary_timed(10, per_ms));
    log::info!("vm {}: MMIO exits by address: {}", spec.name, shared.mmio_exits.lock().summary_timed(10, per_ms));
    log::info!("vm {}: MSR exits by MSR: {}", spec.name, shared.msr_exits.lock().summary_timed(10, per_ms));
    let ms = |k: usize| shared.vmm_ticks[k].load(Ordering::Relaxed) / shared.clock.tsc_khz.max(1);
    log::info!(
        "vm {}: vCPU threads' time in the VMM: port I/O {} ms, MMIO {} ms, MSR {} ms, interrupted {} ms, other exits {} ms, \
         disk requests {} ms",
        spec.name,
        ms(0) + ms(1),
        ms(2),
        ms(3),
        ms(4),
        ms(5),
        ms(6)
    );
    log::info!("vm {}: {}", spec.name, shared.kernel_exits.lock().summary(8));
    {
        let mut p = shared.platform.lock();
        if let Some(f) = p.fw_cfg() {
            log::info!("vm {}: fw_cfg DMA transfers by item: {}", spec.name, f.dma_summary());
        }
        shared.nics.lock().report(&spec.name, p.pci());
    }
    *CURRENT.lock() = None;
    let ending = shared.ending.lock().clone().unwrap_or(Ending::Error("stopped without a reason".into()));
    // The threads end first (each parked after signalling), then what they
    // used goes: run pages, guest RAM, rings with the platform, and last
    // the capabilities.
    drop(threads);
    drop(shared);
    drop(rom);
    drop(res);
    Ok(ending)
}

/// Where the VMM's own view of the firmware copy goes.
const ROM_VA: u64 = 0x28_0000_0000;

/// Copies `image` into new frames and maps them into `guest` where the
/// image belongs (ending at 4 GiB), read-only and executable.
fn map_firmware(res: &mut Resources, guest: CapSlot, image: &[u8]) -> Result<SharedMemory, String> {
    let at = FirmwareImage::new(image).map_err(|e| e.to_string())?.high_base();
    let mut m = PrivateMapping::create(ROM_VA, image.len() as u64, FRAME_PAGES, res.next..)
        .map_err(|e| failed("the firmware's frames", e))?;
    res.adopt(m.frames());
    m.bytes_mut()[..image.len()].copy_from_slice(image);
    let (view, frames) = m.share();
    let rx = Rights(Rights::READ.0 | Rights::EXECUTE.0);
    for (i, &frame) in frames.iter().enumerate() {
        let gpa = at + i as u64 * FRAME_PAGES * PAGE_SIZE;
        sys::map(guest, frame, gpa, rx).map_err(|e| failed(&format!("map the firmware at {gpa:#x}"), e))?;
    }
    Ok(view)
}

/// Unmaps guest RAM that never reached the guest and frees its frames.
fn release_frames(private: Vec<(u64, PrivateMapping)>) {
    for (_, m) in private {
        let (view, frames) = m.share();
        drop(view);
        for f in frames {
            let _ = sys::cap_delete(f);
        }
    }
}

/// Prints the figure `cargo xtask bench` reports as `vmm_overhead_kib`:
/// kernel memory this process is charged for beyond guest RAM (page
/// tables of both address spaces, vCPUs, run pages, thread stacks and
/// objects) plus its heap.
fn report_overhead(ram_bytes: u64) {
    if let Ok(b) = sys::budget_info() {
        let kib = (b.used_bytes.saturating_sub(ram_bytes) + alcove_rt::HEAP_BYTES as u64) / 1024;
        println!("ALCOVE-BENCH vmm_overhead_kib {kib} KiB");
    }
}

/// Creates and starts thread `index`: vCPU `index`, or the timer thread,
/// each on a stack and with an IPC buffer of its own.
fn start_thread(res: &mut Resources, index: u64, timer: bool) -> Result<Thread, String> {
    let slots = ThreadSlots { thread: res.fresh(), stack: res.fresh(), ipc: res.fresh() };
    let va = STACK_VA + index * STACK_STRIDE;
    // Every thread runs at the VMM's priority, below the servers a VM
    // depends on (storaged, netd, the console: the manifests put them
    // higher), so a guest spinning on every vCPU cannot starve those. Not
    // below this VMM's timer thread: the threads share spin locks (the
    // platform's, the NICs', the heap's), and a timer thread above a vCPU
    // thread that holds one on the same CPU would spin for ever (with the
    // vCPUs at 90, net-two's guests never printed a line). A priority set
    // here after `spawn` never took anyway: the kernel answers BadState
    // once a thread runs.
    Thread::spawn(slots, va, STACK_PAGES, thread_main, index, u64::from(timer))
        .map_err(|e| format!("start thread {index}: {e}"))
}

extern "C" fn thread_main(_ipc: u64, index: u64, timer: u64) -> ! {
    let shared = CURRENT.lock().clone();
    let (done, park) = match &shared {
        Some(s) => (s.done, s.park),
        None => loop {
            let _ = sys::yield_now();
        },
    };
    if let Some(s) = shared {
        if timer != 0 {
            timer_loop(&s);
        } else if let Some(mut page) = s.run_pages.get(index as usize).and_then(|p| p.lock().take()) {
            vcpu_loop(&s, index as usize, &mut page);
        }
    }
    STOPPED.fetch_add(1, Ordering::AcqRel);
    let _ = sys::signal(done, 1);
    // A thread cannot end itself: park until the main thread deletes it.
    loop {
        let _ = sys::wait(park, abi::FOREVER);
    }
}

fn timer_loop(sh: &Shared) {
    while !sh.stopping.load(Ordering::Acquire) {
        let now = sh.now();
        let next = sh.platform.lock().next_event(now);
        // Wake at the next device event, when a partial console line is
        // due, and at least every 20 ms (operator input is polled).
        let due = [next, sh.console_due()].into_iter().flatten().min();
        let timeout = due.map_or(20_000_000, |t| t.saturating_sub(now)).min(20_000_000);
        if timeout > 0 {
            let _ = sys::wait(sh.timer, timeout);
        }
        // Operator input, polled outside the platform lock: the console
        // server keeps what was typed until someone reads it, and this reads
        // no more than the guest's UART has room for (a guest that does not
        // read its serial port holds typed input back at the console, where
        // the operator's flow control sees it, instead of losing it here).
        let room = if sh.console_server.is_some() { sh.platform.lock().console_input_room() } else { 0 };
        let mut typed = sh.console_server.filter(|_| room > 0).and_then(|ep| {
            let client = libipc::interfaces::console::Client::new(KernelTransport::new(Cap::from_slot(ep)));
            client.read(room.min(64) as u32).ok().filter(|b| !b.is_empty())
        });
        let now = sh.now();
        let metadata_changed = {
            let mut p = sh.platform.lock();
            p.tick(now);
            // Queue passes that stopped at their bound (a driver that kept
            // adding buffers) go on here, a bounded pass at a time.
            if p.pci().poll(&mut GuestRam::physical(&sh.ram)) {
                p.tick(now);
            }
            if let Some(bytes) = typed.take() {
                p.push_console_input(&bytes, now);
            }
            // The starter's control bits, polled (at least every 20 ms).
            let control = sh.control.and_then(|c| sys::poll(c).ok()).unwrap_or(0);
            if control & libipc::interfaces::VMM_CONTROL_POWER_BUTTON != 0 {
                log::info!("vm: the ACPI power button was pressed");
                p.press_power_button(now);
            }
            if control & libipc::interfaces::VMM_CONTROL_NETD_RESTARTED != 0 {
                // The platform lock, then the NICs' (as the pump takes them).
                sh.nics.lock().netd_restarted();
            }
            control & libipc::interfaces::VMM_CONTROL_METADATA != 0
        };
        // What those passes queued for the disks, outside the lock.
        run_disks(sh);
        if metadata_changed {
            sh.refresh_metadata();
        }
        sh.deliver(false);
    }
}
