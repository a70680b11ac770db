//! The VM runtime on Alcove: guest memory, vCPU threads, the exit loop and
//! the timer thread, wired to the platform in `vmm_server::vm`.
//!
//! Threads: one per vCPU (each calls `VcpuRun` on its own vCPU, so an exit
//! never switches threads) and one timer thread that sleeps until the next
//! PIT/RTC event and also flushes the guest's console. The main thread sets
//! the VM up, waits for every thread to finish, frees everything and checks
//! the kernel-memory budget is what it was before. Device state is one
//! `Platform` behind a spin lock. The threads share the process's IPC
//! buffer (libipc's is per process) and make IPC calls (storaged's
//! doorbell, the console's input) only while they hold that lock.
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

use abi::{CapSlot, ObjectType, PAGE_SIZE, Rights, VcpuRun};
use alcove_rt::start::{SLOT_CONSOLE, SLOT_FREE, SLOT_SELF, StartInfo};
use alcove_rt::{SharedMemory, println};
use libipc::cap::Cap;
use libipc::kernel::KernelTransport;
use libipc::sys;
use vmm_server::boot::{layout, linux};
use vmm_server::config::VmConfig;
use vmm_server::pci::PciSlot;
use vmm_server::virtio::block::Block;
use vmm_server::virtio::console::{self, Console};
use vmm_server::virtio::pci::VirtioPci;
use vmm_server::virtio::rng::Rng;
use vmm_server::vm::cpuid;
use vmm_server::vm::loader::{self, BootSource};
use vmm_server::vm::memory::{GuestRam, RamMap};
use vmm_server::vm::platform::{Platform, PowerEvent};
use vmm_server::vm::pvclock::KvmClock;
use vmm_server::vm::sizing::{self, KernelMemory, VMM_RAM_VA};

use disks::{CpuRng, open_disk};
use exits::vcpu_loop;

mod disks;
mod exits;

const RW: Rights = Rights(Rights::READ.0 | Rights::WRITE.0);
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
    /// The kernel memory this VM needs (checked against the budget before
    /// anything is created).
    pub kernel_memory: KernelMemory,
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
        let boot_files: Vec<u64> = info.files.iter().map(|(_, _, len)| *len as u64).collect();
        let kernel_memory =
            KernelMemory::for_vm(config.ram_bytes(), config.vcpus, config.disks.len() as u32, &boot_files);
        Ok(Some(VmSpec {
            kernel_memory,
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
        sys::create(ty, slot, arg).map_err(|e| failed(what, e))?;
        self.next += 1;
        self.slots.push(slot);
        Ok(slot)
    }

    fn create_from(&mut self, ty: ObjectType, arg: u64, src: CapSlot, what: &str) -> Result<CapSlot, String> {
        let slot = self.next;
        sys::create_from(ty, slot, arg, src).map_err(|e| failed(what, e))?;
        self.next += 1;
        self.slots.push(slot);
        Ok(slot)
    }

    fn map_self(&mut self, frame: CapSlot, va: u64, pages: u64, what: &str) -> Result<(), String> {
        sys::map(SLOT_SELF, frame, va, RW).map_err(|e| failed(&format!("{what}: map"), e))?;
        self.mappings.push((va, pages));
        Ok(())
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
        // Newest first: the threads (deleting a thread's last capability
        // ends it), then vCPUs and notifications, frames and the guest.
        for &slot in self.slots.iter().rev() {
            let _ = sys::cap_delete(slot);
        }
        for &(va, pages) in &self.mappings {
            // Every thread that used these mappings has ended (above) and
            // no reference points into them. A frame at a time: guest RAM
            // is one entry per block, and the kernel collects an unmap's
            // frames before it frees them.
            let mut done = 0;
            while done < pages {
                let n = (pages - done).min(FRAME_PAGES);
                let _ = alcove_rt::unmap_own(va + done * PAGE_SIZE, n);
                done += n;
            }
        }
    }
}

/// Guest RAM as the device models reach it: each block of
/// [`layout::ram_blocks`] at its guest-physical address.
pub type GuestMemory = RamMap<SharedMemory>;

/// State every thread of one boot shares.
struct Shared {
    platform: spin::Mutex<Platform>,
    ram: GuestMemory,
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

    /// Hands raised interrupts to the vCPUs, writes finished console lines
    /// (all output when `flush_all`), and acts on a power request.
    fn deliver(&self, flush_all: bool) {
        let (interrupts, output, power) = {
            let mut p = self.platform.lock();
            let mut output = p.take_console_output();
            let mut mem = GuestRam::physical(&self.ram);
            let mut kicked = false;
            if let Some(c) = p.pci().device_mut::<VirtioPci<Console>>(self.console_slot) {
                let more = c.device_mut().take_output();
                if !more.is_empty() {
                    output.extend_from_slice(&more);
                    // Room again: let stalled transmit buffers through.
                    c.kick(console::TRANSMITQ, &mut mem);
                    kicked = true;
                }
            }
            if kicked {
                // Pass on the interrupt the kick may have raised.
                p.tick(self.now());
            }
            (p.take_interrupts(), output, p.power_event())
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

/// One boot of the VM, from empty to ended and freed.
fn boot(spec: &VmSpec) -> Result<Ending, String> {
    let mut res = Resources::new();
    let ram_bytes = spec.ram_mib << 20;
    // Before anything is created: a budget too small for this VM is named
    // as such, with what it needs, not met halfway through.
    if let Ok(b) = sys::budget_info() {
        sizing::check_budget(spec.kernel_memory, b.limit_bytes).map_err(|e| e.to_string())?;
    }
    let guest = res.create(ObjectType::Guest, 0, "create the guest")?;
    // Guest RAM: frames mapped into the guest at each block's
    // guest-physical addresses (below the PCI hole, then from 4 GiB) and
    // into this process one block after the other from VMM_RAM_VA. The
    // mappings keep the frames; their capabilities go at once (a large
    // guest has more frames than the process has capability slots).
    let blocks = layout::ram_blocks(ram_bytes);
    let mut views = Vec::new();
    let mut offset = 0;
    for block in &blocks {
        let mut done = 0;
        while done < block.len {
            let pages = ((block.len - done) / PAGE_SIZE).min(FRAME_PAGES);
            let gpa = block.gpa + done;
            let frame = res.create(ObjectType::Frame, pages, "guest RAM")?;
            let mapped = sys::map(guest, frame, gpa, RWX)
                .map_err(|e| failed(&format!("map guest RAM at {gpa:#x}"), e))
                .and_then(|()| {
                    sys::map(SLOT_SELF, frame, VMM_RAM_VA + offset + done, RW).map_err(|e| failed("guest RAM: map", e))
                });
            // The mappings hold the frame now (or nothing does).
            let _ = sys::cap_delete(frame);
            res.slots.pop();
            res.next -= 1;
            if let Err(e) = mapped {
                // What this block mapped into the process so far goes in Drop.
                res.mappings.push((VMM_RAM_VA + offset, done / PAGE_SIZE));
                return Err(e);
            }
            done += pages * PAGE_SIZE;
        }
        res.mappings.push((VMM_RAM_VA + offset, block.len / PAGE_SIZE));
        views.push((block.gpa, SharedMemory::new(VMM_RAM_VA + offset, block.len)));
        offset += block.len;
    }
    let ram = RamMap::new(views).ok_or("guest RAM blocks overlap")?;
    let entry = {
        // Nothing runs in the guest yet: this thread has its RAM to itself.
        let low = alcove_rt::user_bytes_mut(VMM_RAM_VA, blocks[0].len as usize);
        let source = BootSource { kernel: spec.kernel, initrd: spec.initrd, cmdline: &spec.cmdline, vcpus: spec.vcpus };
        loader::load_linux_in(low, ram_bytes, &source).map_err(|e| e.to_string())?
    };

    let mut vcpus = Vec::new();
    for index in 0..u64::from(spec.vcpus) {
        let run_frame = res.create(ObjectType::Frame, 1, "run page")?;
        res.map_self(run_frame, RUN_VA + index * PAGE_SIZE, 1, "run page")?;
        let vcpu = res.create_from(ObjectType::Vcpu, u64::from(guest), run_frame, "create vCPU")?;
        let run = run_page(index as usize);
        *run = VcpuRun::ZERO;
        let table = cpuid::guest_cpuid(cpuid::host, index as u32, spec.vcpus, run.cpuid.len());
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
    // The guest's clocks start at the host's wall-clock time (1970 if the
    // machine has none): the RTC, and kvmclock's wall clock at system time
    // 0, which is this TSC.
    let unix_now = sys::unix_seconds().unwrap_or(0);
    let mut platform = Platform::new(unix_now as i64, 0);
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
        // Guests see the host's TSC: system time 0 now.
        clock: KvmClock { tsc_base: alcove_rt::rdtsc(), tsc_khz: sys::tsc_khz().unwrap_or(1_000_000), unix_seconds: unix_now },
        name: spec.name.clone(),
    });
    *CURRENT.lock() = Some(shared.clone());

    // Threads: vCPUs 0..n, then the timer.
    let threads = spec.vcpus as u64 + 1;
    STOPPED.store(0, Ordering::Release);
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
                if let Ok(bytes) = client.read(64)
                    && !bytes.is_empty()
                {
                    p.push_console_input(&bytes, now);
                }
            }
        }
        sh.deliver(woke_for_output && next.is_none());
    }
}
