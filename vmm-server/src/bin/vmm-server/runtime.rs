//! The VM runtime on Alcove: guest memory, vCPU threads, the exit loop and
//! the timer thread, wired to the platform in `vmm_server::vm`.
//!
//! Threads: one per vCPU (each calls `VcpuRun` on its own vCPU, so an exit
//! never switches threads) and one timer thread that sleeps until the next
//! PIT/RTC event and also flushes the guest's console. The main thread sets
//! the VM up, waits for every thread to finish, frees everything and checks
//! the kernel-memory budget is what it was before. Device state is one
//! `Platform` behind a spin lock; vCPU threads make no IPC calls (libipc's
//! IPC buffer is per process), only register-only system calls.
//!
//! A VM ends when the guest powers off (ACPI S5), triple-faults, halts its
//! boot vCPU with interrupts off, or an exit cannot be handled (reported
//! with the guest's registers). A guest reboot (0xCF9, the 8042) tears the
//! VM down and boots it again from the same boot source.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use abi::{CapSlot, ObjectType, PAGE_SIZE, Rights, VcpuExit, VcpuRun};
use alcove_rt::start::{SLOT_CONSOLE, SLOT_FREE, SLOT_SELF, StartInfo};
use alcove_rt::{SharedMemory, println};
use libipc::sys;
use vmm_server::boot::linux;
use vmm_server::mmio::{self, MmioBus};
use vmm_server::vm::cpuid;
use vmm_server::vm::loader::{self, BootSource};
use vmm_server::vm::memory::GuestRam;
use vmm_server::config::VmConfig;
use vmm_server::virtio::block::{BackendError, Block, BlockBackend, ID_BYTES};
use vmm_server::pci::PciSlot;
use vmm_server::virtio::console::{self, Console};
use vmm_server::virtio::pci::VirtioPci;
use vmm_server::virtio::rng::{EntropySource, Rng};
use vmm_server::vm::platform::{Platform, PowerEvent};
use vmm_server::vm::pvclock::{self, KvmClock};
use libipc::blkring::{RingClient, StorageDoorbell};
use libipc::cap::{Cap, Endpoint};
use libipc::interfaces::storage;
use libipc::kernel::{CapTransport, KernelTransport};

const RW: Rights = Rights(Rights::READ.0 | Rights::WRITE.0);
const RWX: Rights = Rights(Rights::READ.0 | Rights::WRITE.0 | Rights::EXECUTE.0);

/// Where things live in this process's address space.
const RAM_VA: u64 = 0x10_0000_0000;
const RUN_VA: u64 = 0x20_0000_0000;
const STACK_VA: u64 = 0x21_0000_0000;
const STACK_STRIDE: u64 = 0x10_0000;
const STACK_PAGES: u64 = 16;
const FILE_VA: u64 = 0x30_0000_0000;
const FILE_STRIDE: u64 = 0x1_0000_0000;
/// Guest RAM comes in frames of at most this many pages (the kernel's
/// largest frame object).
const FRAME_PAGES: u64 = 1024;

/// What the VM boots and how big it is.
pub struct VmSpec {
    pub name: String,
    pub ram_mib: u64,
    pub vcpus: u32,
    pub kernel: &'static [u8],
    pub initrd: Option<&'static [u8]>,
    pub cmdline: String,
    /// How many disks: disk i is storaged's disk i (for now a whole machine
    /// disk per VM disk).
    pub disks: usize,
    /// The storaged endpoint, if granted.
    pub storaged: Option<CapSlot>,
    /// The console server, whose typed input goes to the guest's serial
    /// port.
    pub console: Option<CapSlot>,
    /// End the whole machine (QEMU) with the VM: `cargo xtask run --vm`.
    pub exit_machine: bool,
}

impl VmSpec {
    /// The VM this instance runs, from its start-up files: `None` if it has
    /// no `vm.json` (the idle instance), an error naming the property that
    /// is wrong otherwise.
    pub fn from_start(info: &StartInfo) -> Result<Option<VmSpec>, String> {
        let Some(json) = file(info, "vm.json")? else { return Ok(None) };
        let text = core::str::from_utf8(json).map_err(|_| String::from("vm.json: not UTF-8"))?;
        let config = VmConfig::from_json(text).map_err(|e| e.to_string())?;
        config.check_supported().map_err(|e| e.to_string())?;
        let by_name = |property: &str, path: &str| -> Result<&'static [u8], String> {
            let base = path.rsplit('/').next().unwrap_or(path);
            file(info, base)?
                .ok_or_else(|| format!("vmadm: property \"{property}\": {path:?} is not among this VM's boot files"))
        };
        let kernel = by_name("kernel", &config.kernel)?;
        let initrd = match &config.initrd {
            Some(p) => Some(by_name("initrd", p)?),
            None => None,
        };
        let name = match (&config.alias, &config.uuid) {
            (Some(a), _) => a.clone(),
            (None, Some(u)) => u.to_string(),
            (None, None) => info.name.clone(),
        };
        Ok(Some(VmSpec {
            name,
            ram_mib: config.ram_mib,
            vcpus: config.vcpus,
            kernel,
            initrd,
            cmdline: config.cmdline.clone(),
            disks: config.disks.len(),
            storaged: info.calls("storaged"),
            console: info.calls("console"),
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
    fn machine_status(&self) -> u64 {
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
pub fn run(spec: &VmSpec) -> u64 {
    let before = sys::budget_info().map(|b| b.used_bytes).unwrap_or(0);
    let ending = loop {
        let ending = match boot(spec) {
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

/// Capability slots and mappings of one boot, released in `Drop`.
struct Resources {
    next: CapSlot,
    slots: Vec<CapSlot>,
    /// (address, pages) mapped into this process.
    mappings: Vec<(u64, u64)>,
}

impl Resources {
    fn new() -> Self {
        Self { next: SLOT_FREE, slots: Vec::new(), mappings: Vec::new() }
    }

    fn create(&mut self, ty: ObjectType, arg: u64, what: &str) -> Result<CapSlot, String> {
        let slot = self.next;
        sys::create(ty, slot, arg).map_err(|e| format!("{what}: {e}"))?;
        self.next += 1;
        self.slots.push(slot);
        Ok(slot)
    }

    fn create_from(&mut self, ty: ObjectType, arg: u64, src: CapSlot, what: &str) -> Result<CapSlot, String> {
        let slot = self.next;
        sys::create_from(ty, slot, arg, src).map_err(|e| format!("{what}: {e}"))?;
        self.next += 1;
        self.slots.push(slot);
        Ok(slot)
    }

    fn map_self(&mut self, frame: CapSlot, va: u64, pages: u64, what: &str) -> Result<(), String> {
        sys::map(SLOT_SELF, frame, va, RW).map_err(|e| format!("{what}: map: {e}"))?;
        self.mappings.push((va, pages));
        Ok(())
    }
}

impl Drop for Resources {
    fn drop(&mut self) {
        // Newest first: the threads (deleting a thread's last capability
        // ends it), then vCPUs and notifications, frames and the guest.
        for &slot in self.slots.iter().rev() {
            let _ = sys::cap_delete(slot);
        }
        for &(va, pages) in &self.mappings {
            // Every thread that used these mappings has ended (above) and
            // no reference points into them.
            let _ = alcove_rt::unmap_own(va, pages);
        }
    }
}

/// State every thread of one boot shares.
struct Shared {
    platform: spin::Mutex<Platform>,
    ram: SharedMemory,
    vcpus: Vec<CapSlot>,
    ending: spin::Mutex<Option<Ending>>,
    stopping: AtomicBool,
    /// Wakes the timer thread (bit 0).
    timer: CapSlot,
    /// Each thread signals bit `index` here when it has stopped.
    done: CapSlot,
    /// Where each thread parks for good.
    park: CapSlot,
    /// VM time 0 on the kernel clock.
    epoch_ns: u64,
    console: spin::Mutex<Vec<u8>>,
    /// The virtio-console's place on the PCI bus.
    console_slot: PciSlot,
    /// The console server (operator input for the serial port).
    console_server: Option<CapSlot>,
    /// The guest's paravirtual clock (kvmclock).
    clock: KvmClock,
    /// Exits that reached the VMM, by kind: port I/O, of it the serial
    /// port's, MMIO, MSR, interrupted runs.
    exits: [AtomicU64; 5],
    name: String,
}

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

    /// Hands raised interrupts to the vCPUs, writes finished console lines
    /// (all output when `flush_all`), and acts on a power request.
    fn deliver(&self, flush_all: bool) {
        let (interrupts, output, power) = {
            let mut p = self.platform.lock();
            let mut output = p.take_console_output();
            let mut mem = GuestRam::physical(&self.ram);
            if let Some(c) = p.pci().device_mut::<VirtioPci<Console>>(self.console_slot) {
                let more = c.device_mut().take_output();
                if !more.is_empty() {
                    output.extend_from_slice(&more);
                    // Room again: let stalled transmit buffers through.
                    c.kick(console::TRANSMITQ, &mut mem);
                }
            }
            p.tick(self.now());
            (p.take_interrupts(), output, p.power_event())
        };
        let n = self.vcpus.len() as u32;
        for i in interrupts {
            for (index, &vcpu) in self.vcpus.iter().enumerate() {
                if i.target.names(index as u32, n) {
                    let _ = sys::vcpu_interrupt(vcpu, i.vector);
                }
            }
        }
        if !output.is_empty() || flush_all {
            let mut c = self.console.lock();
            c.extend_from_slice(&output);
            let cut = if flush_all { c.len() } else { c.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1) };
            if cut > 0 {
                for chunk in c[..cut].chunks(2048) {
                    let _ = sys::debug_write(SLOT_CONSOLE, chunk);
                }
                c.drain(..cut);
            }
        }
        match power {
            Some(PowerEvent::PowerOff) => self.end(Ending::PowerOff),
            Some(PowerEvent::Reboot) => self.end(Ending::Reboot),
            None => {}
        }
    }
}

fn host_cpuid(leaf: u32, sub: u32) -> [u32; 4] {
    let r = core::arch::x86_64::__cpuid_count(leaf, sub);
    [r.eax, r.ebx, r.ecx, r.edx]
}

/// One boot of the VM, from empty to ended and freed.
fn boot(spec: &VmSpec) -> Result<Ending, String> {
    let mut res = Resources::new();
    let ram_bytes = spec.ram_mib << 20;
    let guest = res.create(ObjectType::Guest, 0, "create the guest")?;
    // Guest RAM: frames mapped at the same offsets into the guest (from
    // guest-physical 0) and into this process (from RAM_VA).
    let mut gpa = 0;
    while gpa < ram_bytes {
        let pages = ((ram_bytes - gpa) / PAGE_SIZE).min(FRAME_PAGES);
        let frame = res.create(ObjectType::Frame, pages, "guest RAM")?;
        sys::map(guest, frame, gpa, RWX).map_err(|e| format!("map guest RAM at {gpa:#x}: {e}"))?;
        res.map_self(frame, RAM_VA + gpa, pages, "guest RAM")?;
        gpa += pages * PAGE_SIZE;
    }
    let ram = SharedMemory::new(RAM_VA, ram_bytes);
    let entry = {
        // Nothing runs in the guest yet: this thread has its RAM to itself.
        let bytes = alcove_rt::user_bytes_mut(RAM_VA, ram_bytes as usize);
        let source = BootSource { kernel: spec.kernel, initrd: spec.initrd, cmdline: &spec.cmdline, vcpus: spec.vcpus };
        loader::load_linux(bytes, &source).map_err(|e| e.to_string())?
    };

    let mut vcpus = Vec::new();
    for index in 0..u64::from(spec.vcpus) {
        let run_frame = res.create(ObjectType::Frame, 1, "run page")?;
        res.map_self(run_frame, RUN_VA + index * PAGE_SIZE, 1, "run page")?;
        let vcpu = res.create_from(ObjectType::Vcpu, u64::from(guest), run_frame, "create vCPU")?;
        let run = run_page(index as usize);
        *run = VcpuRun::ZERO;
        let table = cpuid::guest_cpuid(host_cpuid, index as u32, spec.vcpus, run.cpuid.len());
        run.cpuid[..table.len()].copy_from_slice(&table);
        run.cpuid_count = table.len() as u32;
        if index == 0 {
            linux::set_boot_vcpu(run, &entry);
        }
        vcpus.push(vcpu);
    }
    let timer = res.create(ObjectType::Notification, 0, "timer notification")?;
    let done = res.create(ObjectType::Notification, 0, "done notification")?;
    let park = res.create(ObjectType::Notification, 0, "park notification")?;
    let epoch_ns = alcove_rt::clock_ns();
    let mut platform = Platform::new(0, 0);
    for index in 0..spec.disks {
        let backend = open_disk(&mut res, spec, index)?;
        let device = VirtioPci::new(Block::new(backend)).map_err(|e| format!("disks[{index}]: {e}"))?;
        platform.pci().add(alloc::boxed::Box::new(device)).map_err(|e| format!("disks[{index}]: {e}"))?;
    }
    // An entropy device when the host CPU has a hardware RNG, and a virtio
    // console (hvc0) next to the serial one.
    if alcove_rt::rdrand_u64().is_some() {
        let rng = VirtioPci::new(Rng::new(CpuRng)).map_err(|e| format!("virtio-rng: {e}"))?;
        platform.pci().add(alloc::boxed::Box::new(rng)).map_err(|e| format!("virtio-rng: {e}"))?;
    } else {
        log::info!("vm {}: no virtio-rng (the host CPU has no RDRAND)", spec.name);
    }
    let console = VirtioPci::new(Console::new()).map_err(|e| format!("virtio-console: {e}"))?;
    let console_slot =
        platform.pci().add(alloc::boxed::Box::new(console)).map_err(|e| format!("virtio-console: {e}"))?;
    let shared = Arc::new(Shared {
        platform: spin::Mutex::new(platform),
        ram,
        vcpus,
        ending: spin::Mutex::new(None),
        stopping: AtomicBool::new(false),
        timer,
        done,
        park,
        epoch_ns,
        console: spin::Mutex::new(Vec::new()),
        console_slot,
        console_server: spec.console,
        exits: Default::default(),
        // Guests see the host's TSC: system time 0 at TSC 0.
        clock: KvmClock { tsc_base: 0, tsc_khz: sys::tsc_khz().unwrap_or(1_000_000) },
        name: spec.name.clone(),
    });
    *CURRENT.lock() = Some(shared.clone());

    // Threads: vCPUs 0..n, then the timer.
    let threads = spec.vcpus as u64 + 1;
    let mut started = 0;
    let mut failure = None;
    for index in 0..threads {
        match start_thread(&mut res, index, index == threads - 1) {
            Ok(()) => started += 1,
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    if let Some(e) = &failure {
        shared.end(Ending::Error(e.clone()));
    } else {
        println!("vm {}: started: {} vCPUs, {} MiB", spec.name, spec.vcpus, spec.ram_mib);
        report_overhead(ram_bytes);
    }
    // Wait for every started thread to stop.
    let all = if started >= 64 { u64::MAX } else { (1u64 << started) - 1 };
    let mut seen = 0u64;
    while seen & all != all {
        match sys::wait(done, abi::FOREVER) {
            Ok(bits) => seen |= bits,
            Err(e) => {
                log::error!("waiting for the VM's threads: {e}");
                break;
            }
        }
    }
    shared.deliver(true);
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
    *CURRENT.lock() = None;
    let ending = shared.ending.lock().clone().unwrap_or(Ending::Error("stopped without a reason".into()));
    drop(shared);
    drop(res);
    Ok(ending)
}

/// Where disk rings are mapped (one slot of 1 MiB each).
const RING_VA: u64 = 0x22_0000_0000;
const RING_STRIDE: u64 = 0x10_0000;

/// A VM disk served by storaged through a block ring: the guest's
/// virtio-blk requests become ring requests, and each batch one `kick`
/// IPC (made under the platform lock, so the process's one IPC buffer is
/// never used by two threads at once).
struct RingBackend {
    ring: RingClient<&'static mut [u8], StorageDoorbell<KernelTransport>>,
    id: [u8; ID_BYTES],
    handle: u32,
}

impl Drop for RingBackend {
    fn drop(&mut self) {
        // The VM is over (the main thread drops the devices): give the ring
        // back to storaged.
        let _ = self.ring.doorbell().client().close(self.handle);
    }
}

impl BlockBackend for RingBackend {
    fn read(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), BackendError> {
        self.ring.read(sector, buf).map_err(|_| BackendError::Io)
    }
    fn write(&mut self, sector: u64, data: &[u8]) -> Result<(), BackendError> {
        self.ring.write(sector, data).map_err(|_| BackendError::Io)
    }
    fn flush(&mut self) -> Result<(), BackendError> {
        self.ring.flush().map_err(|_| BackendError::Io)
    }
    fn capacity_sectors(&self) -> u64 {
        self.ring.capacity_sectors()
    }
    fn id(&self) -> [u8; ID_BYTES] {
        self.id
    }
    fn read_only(&self) -> bool {
        self.ring.read_only()
    }
}

/// The guest's entropy: the host CPU's RDRAND, 8 bytes at a time.
struct CpuRng;

impl EntropySource for CpuRng {
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            // The device exists only when RDRAND works; should it fail
            // later, wait a little and try again rather than hand out
            // predictable bytes.
            let v = loop {
                match alcove_rt::rdrand_u64() {
                    Some(v) => break v,
                    None => {
                        let _ = sys::yield_now();
                    }
                }
            };
            chunk.copy_from_slice(&v.to_le_bytes()[..chunk.len()]);
        }
    }
}

/// Opens storaged's disk `index` for the VM's `disks[index]`.
fn open_disk(res: &mut Resources, spec: &VmSpec, index: usize) -> Result<RingBackend, String> {
    let what = |e: &dyn core::fmt::Display| format!("vmadm: property \"disks[{index}]\": {e}");
    let ep = spec.storaged.ok_or_else(|| what(&"no storaged endpoint was granted to this VM"))?;
    let slot = res.next;
    let transport = CapTransport::new(Cap::<Endpoint>::from_slot(ep), &[slot]);
    let opened = storage::Client::new(&transport)
        .open(index as u32)
        .map_err(|e| what(&e))?
        .map_err(|e| what(&e))?;
    if transport.received() != 1 {
        return Err(what(&"storaged sent no ring"));
    }
    res.next += 1;
    res.slots.push(slot);
    let pages = u64::from(opened.ring_pages);
    if pages * PAGE_SIZE > RING_STRIDE {
        return Err(what(&format!("ring of {pages} pages is too large")));
    }
    let va = RING_VA + index as u64 * RING_STRIDE;
    res.map_self(slot, va, pages, "disk ring")?;
    let region = alcove_rt::user_bytes_mut(va, (pages * PAGE_SIZE) as usize);
    let bell = StorageDoorbell::new(KernelTransport::new(Cap::from_slot(ep)), opened.handle);
    let ring = RingClient::new(region, bell).map_err(|e| what(&e))?;
    let mut id = [0u8; ID_BYTES];
    let serial = opened.info.serial.as_bytes();
    let n = serial.len().min(ID_BYTES);
    id[..n].copy_from_slice(&serial[..n]);
    log::info!("disks[{index}]: storaged disk {} ({} sectors)", opened.info.name, ring.capacity_sectors());
    Ok(RingBackend { ring, id, handle: opened.handle })
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

fn run_page(index: usize) -> &'static mut VcpuRun {
    alcove_rt::user_mut::<VcpuRun>(RUN_VA + index as u64 * PAGE_SIZE)
}

/// Creates and starts thread `index`: vCPU `index`, or the timer thread.
fn start_thread(res: &mut Resources, index: u64, timer: bool) -> Result<(), String> {
    let stack = res.create(ObjectType::Frame, STACK_PAGES, "thread stack")?;
    let va = STACK_VA + index * STACK_STRIDE;
    res.map_self(stack, va, STACK_PAGES, "thread stack")?;
    let t = res.create(ObjectType::Thread, u64::from(SLOT_SELF), "thread")?;
    let top = va + STACK_PAGES * PAGE_SIZE - 8;
    // The stack is this thread's alone. The threads share the process's
    // IPC buffer: their only IPC (storaged's doorbell, the console's
    // input) happens under the platform lock, one at a time.
    alcove_rt::start_thread(t, thread_main as *const () as u64, top, true, index, u64::from(timer))
        .map_err(|e| format!("start thread {index}: {e}"))?;
    if !timer {
        // vCPU threads run above the servers' default, below init.
        let _ = sys::thread_set_priority(t, 150, None);
    }
    Ok(())
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
        } else {
            vcpu_loop(&s, index as usize);
        }
    }
    let _ = sys::signal(done, 1 << index);
    // A thread cannot end itself: park until the main thread deletes it.
    loop {
        let _ = sys::wait(park, abi::FOREVER);
    }
}

fn timer_loop(sh: &Shared) {
    while !sh.stopping.load(Ordering::Acquire) {
        let now = sh.now();
        let next = sh.platform.lock().next_event(now);
        // Wake at the next device event, and at least every 20 ms to flush
        // partial console lines.
        let timeout = next.map_or(20_000_000, |t| t.saturating_sub(now)).min(20_000_000);
        let woke_for_output = if timeout > 0 { sys::wait(sh.timer, timeout).is_err() } else { false };
        let now = sh.now();
        {
            let mut p = sh.platform.lock();
            p.tick(now);
            if let Some(ep) = sh.console_server {
                // Operator input, polled: the console server keeps what was
                // typed until someone reads it.
                let client = libipc::interfaces::console::Client::new(KernelTransport::new(Cap::from_slot(ep)));
                if let Ok(bytes) = client.read(64) {
                    if !bytes.is_empty() {
                        p.push_console_input(&bytes, now);
                    }
                }
            }
        }
        sh.deliver(woke_for_output && next.is_none());
    }
}

fn mask(size: u8) -> u64 {
    if size >= 8 { u64::MAX } else { (1u64 << (8 * u32::from(size))) - 1 }
}

/// #GP(0), as hardware raises for a bad MSR.
const INJECT_GP0: u64 = (1 << 31) | (3 << 8) | 13 | (1 << 11);

fn vcpu_loop(sh: &Shared, index: usize) {
    let run = run_page(index);
    let vcpu = sh.vcpus[index];
    let mut unknown_msrs = 0u32;
    // This vCPU's kvmclock MSRs (wall clock, system time), as last written.
    let mut kvm_msrs = [0u64; 2];
    while !sh.stopping.load(Ordering::Acquire) {
        let exit = match sys::vcpu_run(vcpu) {
            Ok(r) => VcpuExit::from_u32(r as u32),
            Err(e) => {
                sh.end(Ending::Error(format!("vCPU {index}: VcpuRun failed: {e}")));
                break;
            }
        };
        // Buffered OUTs happened before this exit: carry them out first.
        replay_pio_ring(sh, run);
        let kind = match exit {
            Some(VcpuExit::Io) if (0x3f8..0x400).contains(&run.port) => Some(1),
            Some(VcpuExit::Io) => Some(0),
            Some(VcpuExit::Mmio) => Some(2),
            Some(VcpuExit::Msr) => Some(3),
            Some(VcpuExit::Interrupted) => Some(4),
            _ => None,
        };
        if let Some(k) = kind {
            sh.exits[k].fetch_add(1, Ordering::Relaxed);
        }
        match exit {
            Some(VcpuExit::Io) => io_exit(sh, run),
            Some(VcpuExit::Mmio) => {
                if let Err(e) = mmio_exit(sh, run) {
                    sh.end(Ending::Error(format!("vCPU {index}: {e}")));
                }
            }
            Some(VcpuExit::Msr) => msr_exit(sh, run, index, &mut kvm_msrs, &mut unknown_msrs),
            Some(VcpuExit::Interrupted) => {}
            Some(VcpuExit::Hlt) => {
                // HLT with interrupts off: only a reset ends it. The boot
                // vCPU doing so ends the VM; another waits for the end.
                if index == 0 {
                    sh.end(Ending::Halted);
                } else {
                    while !sh.stopping.load(Ordering::Acquire) {
                        let _ = sys::wait(sh.park, 10_000_000);
                    }
                }
            }
            Some(VcpuExit::Shutdown) => sh.end(Ending::TripleFault),
            other => sh.end(Ending::Error(format!(
                "vCPU {index}: exit {other:?} (hardware code {:#x}, info {:#x} {:#x}) at rip {:#x}, cr0 {:#x} cr3 {:#x} cr4 {:#x} efer {:#x}",
                run.hw_code, run.info1, run.info2, run.rip, run.cr0, run.cr3, run.cr4, run.efer
            ))),
        }
        sh.deliver(false);
        update_pio_rules(sh, run);
    }
}

/// Carries out the OUTs the kernel buffered for this vCPU (coalesced port
/// I/O), in order.
fn replay_pio_ring(sh: &Shared, run: &mut VcpuRun) {
    let n = run.pio_pending();
    if n == 0 {
        return;
    }
    let now = sh.now();
    let mut mem = GuestRam::physical(&sh.ram);
    let mut p = sh.platform.lock();
    for i in 0..n {
        let e = run.pio_ring[run.pio_ring_head.wrapping_add(i) as usize % abi::PIO_RING_LEN];
        p.io_write(e.port, 1, u32::from(e.value), now, &mut mem);
    }
    run.pio_ring_head = run.pio_ring_head.wrapping_add(n);
}

/// Tells the kernel which port accesses it may finish itself: while the
/// serial port is a plain polled output (how Linux's console writes the
/// boot log), its THR writes are buffered and its LSR reads answered, two
/// exits per character fewer. Rechecked after every exit of this vCPU;
/// every access that could change the UART's state still exits.
fn update_pio_rules(sh: &Shared, run: &mut VcpuRun) {
    let rule = sh.platform.lock().serial_coalescing();
    match rule {
        Some((thr, lsr_port, lsr)) => {
            run.pio_buffered_ports[0] = thr;
            run.pio_constant_ports[0] = lsr_port;
            run.pio_constant_values[0] = lsr;
        }
        None => {
            run.pio_buffered_ports[0] = 0;
            run.pio_constant_ports[0] = 0;
        }
    }
}

fn io_exit(sh: &Shared, run: &mut VcpuRun) {
    let now = sh.now();
    let (port, size) = (run.port, run.size);
    if run.io_flags & 1 != 0 {
        string_io(sh, run, now);
    } else if run.write != 0 {
        let mut mem = GuestRam::physical(&sh.ram);
        sh.platform.lock().io_write(port, size, (run.data & mask(size)) as u32, now, &mut mem);
        if Platform::reprograms_timers(port) {
            let _ = sys::signal(sh.timer, 1);
        }
    } else {
        let v = u64::from(sh.platform.lock().io_read(port, size, now));
        let m = mask(size);
        run.gprs[0] = (run.gprs[0] & !m) | (v & m);
    }
    run.rip = run.next_rip;
    run.load_state = abi::LOAD_GPRS;
}

/// `ins`/`outs` (with or without `rep`): element by element through the
/// guest's page tables, DS:RSI for `outs` and ES:RDI for `ins` (segment
/// overrides are not decoded; 64-bit guests have flat segments anyway).
fn string_io(sh: &Shared, run: &mut VcpuRun, now: u64) {
    let rep = run.io_flags & 2 != 0;
    let size = u64::from(run.size);
    let count = if rep { run.gprs[1].min(4096) } else { 1 };
    let down = run.rflags & (1 << 10) != 0;
    let write = run.write != 0;
    let (reg, seg) = if write { (6, 3) } else { (7, 0) };
    let mem = GuestRam::for_vcpu(&sh.ram, run);
    let mut p = sh.platform.lock();
    let mut done = 0;
    while done < count {
        let va = run.segments[seg].base.wrapping_add(run.gprs[reg]);
        let mut buf = [0u8; 4];
        let b = &mut buf[..size as usize];
        let ok = if write {
            mmio::GuestMemory::read(&mut GuestRam::for_vcpu(mem.mem, run), va, b).is_ok()
                && {
                    p.io_write(run.port, run.size, u32::from_le_bytes(buf), now, &mut GuestRam::physical(mem.mem));
                    true
                }
        } else {
            let v = p.io_read(run.port, run.size, now).to_le_bytes();
            b.copy_from_slice(&v[..size as usize]);
            mmio::GuestMemory::write(&mut GuestRam::for_vcpu(mem.mem, run), va, b).is_ok()
        };
        if !ok {
            break;
        }
        run.gprs[reg] = if down { run.gprs[reg].wrapping_sub(size) } else { run.gprs[reg].wrapping_add(size) };
        done += 1;
    }
    if rep {
        run.gprs[1] -= done;
    }
}

/// The guest-physical bus of an MMIO exit.
struct Bus<'a> {
    platform: spin::MutexGuard<'a, Platform>,
    ram: &'a SharedMemory,
}

impl MmioBus for Bus<'_> {
    fn read(&mut self, gpa: u64, size: u8) -> u64 {
        self.platform.mmio_read(gpa, size)
    }
    fn write(&mut self, gpa: u64, size: u8, value: u64) {
        self.platform.mmio_write(gpa, size, value, &mut GuestRam::physical(self.ram))
    }
}

fn mmio_exit(sh: &Shared, run: &mut VcpuRun) -> Result<(), String> {
    let gpa = run.gpa;
    let mut mem = GuestRam::for_vcpu(&sh.ram, run);
    let (bytes, len) = if run.insn_len > 0 {
        let mut b = [0u8; mmio::MAX_INSN_LEN];
        let n = usize::from(run.insn_len).min(b.len());
        b[..n].copy_from_slice(&run.insn[..n]);
        (b, n)
    } else {
        mmio::fetch(&mut mem, run)
            .map_err(|f| format!("MMIO at {gpa:#x}: cannot fetch the instruction at rip {:#x} ({:#x} unmapped)", run.rip, f.gva))?
    };
    let mut bus = Bus { platform: sh.platform.lock(), ram: &sh.ram };
    mmio::emulate(&bytes[..len], run, gpa, &mut mem, &mut bus)
        .map_err(|e| format!("MMIO at {gpa:#x}, rip {:#x}: {e}", run.rip))?;
    run.load_state = abi::LOAD_GPRS;
    Ok(())
}

/// MSRs a Linux guest reads or writes on AMD and Intel CPUs that carry no
/// state here: reads give 0, writes are dropped (as KVM does for them).
/// Patch level, HWCR, SYSCFG, NB_CFG, TSEG, MMIO_CONF_BASE, LS_CFG,
/// DE_CFG, BU_CFG2, the microcode update trigger and signature,
/// PLATFORM_ID, FEATURE_CONTROL.
const QUIET_MSRS: &[u32] = &[
    0x8b, 0xc001_0015, 0xc001_0010, 0xc001_001f, 0xc001_0112, 0xc001_0058, 0xc001_1020, 0xc001_1029, 0xc001_102a,
    0x79, 0x17, 0x3a,
];

fn msr_exit(sh: &Shared, run: &mut VcpuRun, index: usize, kvm: &mut [u64; 2], unknown: &mut u32) {
    let done = |run: &mut VcpuRun, read: Option<u64>| {
        if let Some(v) = read {
            run.gprs[0] = v & 0xffff_ffff;
            run.gprs[2] = v >> 32;
        }
        run.rip = run.next_rip;
        run.load_state = abi::LOAD_GPRS;
    };
    let write = run.write != 0;
    let kvm_index = match run.msr {
        pvclock::MSR_KVM_WALL_CLOCK_NEW => Some(0),
        pvclock::MSR_KVM_SYSTEM_TIME_NEW => Some(1),
        _ => None,
    };
    if let Some(i) = kvm_index {
        if !write {
            return done(run, Some(kvm[i]));
        }
        let value = run.data;
        kvm[i] = value;
        // A structure that would not lie in guest RAM is not written (as
        // KVM does); the guest's clock then reads zeros.
        if i == 0 {
            let _ = sh.ram.write(value, &sh.clock.wall_clock(0));
        } else if value & 1 != 0 {
            let _ = sh.ram.write(value & !1, &sh.clock.time_info());
        }
        return done(run, None);
    }
    if QUIET_MSRS.contains(&run.msr) {
        return done(run, (!write).then_some(0));
    }
    if *unknown < 16 {
        *unknown += 1;
        // Linux probes optional MSRs with rdmsr_safe; a #GP is the answer
        // it expects from hardware without them.
        log::debug!(
            "vCPU {index}: {} of MSR {:#x} at rip {:#x}: #GP",
            if write { "write" } else { "read" },
            run.msr,
            run.rip
        );
    }
    run.inject = INJECT_GP0;
}
