//! The test VMM (see main.rs).

mod halt_teardown;

use abi::{CapSlot, CpuidEntry, ObjectType, Rights, VcpuExit, VcpuRun, PAGE_SIZE};
use alcove_rt::start::{SLOT_CONSOLE, SLOT_SELF};
use alcove_rt::{println, Start};
use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use kcore::testproto::PREFIX;
use libipc::sys;
use testguest::protocol::{self as p, Test};
use vmm_server::mmio::{self, AccessKind, FaultKind, GuestMemory, MemFault, MmioBus};

const RW: Rights = Rights(Rights::READ.0 | Rights::WRITE.0);
const RAM_PAGES: u64 = 1024; // 4 MiB of guest RAM
const RAM_VA: u64 = 0x2000_0000;
const RUN_VA: u64 = 0x3000_0000;
const FILE_VA: u64 = 0x4000_0000;
const EXIT_LIMIT: u32 = 200_000;
/// How long one guest test may run (wall time) before it counts as hung.
const GUEST_WALL_LIMIT_NS: u64 = 60_000_000_000;
/// The second vCPU's run page and its thread's stack.
const AP_RUN_VA: u64 = 0x3000_2000;
const AP_STACK_VA: u64 = 0x3001_0000;
const AP_STACK_PAGES: u64 = 4;
/// The FPU race's writer threads' stacks, one window per writer.
const WRITER_STACK_VA: u64 = 0x3002_0000;
const WRITER_STACK_PAGES: u64 = 2;
/// At most this many writers (one per CPU the kernel accepts).
const MAX_WRITERS: u32 = 4;

/// How long a thread of this VMM waits for another before calling it hung
/// (a bound for a hang, not a timing: a loaded host may leave one CPU's
/// emulator thread unscheduled for seconds).
const HANG_BOUND_NS: u64 = 20_000_000_000;
/// Tells the AP thread to stop running its vCPU.
static AP_STOP: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);
/// What the AP thread saw, for a failure's message: its runs that ended
/// (`VcpuRun` returns), by exit reason (index = reason, the last slot
/// for errors and unknown reasons).
static AP_LAST_AT: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);
static AP_EXITS: [core::sync::atomic::AtomicU32; 16] = [const { core::sync::atomic::AtomicU32::new(0) }; 16];
/// Tells the FPU race's writer threads to stop.
static WRITER_STOP: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);
/// Flips of the run page the writers made (for the log).
static WRITER_FLIPS: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);
/// Entries whose taking of `LOAD_FPU` a writer saw and aimed a flip at.
static WRITER_AIMED: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

struct Env {
    next_slot: CapSlot,
    image: &'static [u8],
    ap_stack: bool,
    /// How many of the writer stacks are mapped.
    writer_stacks: u32,
    /// Deliver the VMM's interrupt level-triggered (its EOI must come back
    /// as `VcpuExit::Eoi`).
    level: bool,
    /// `vm_phases`: the benchmark guest's port exits are counted by the
    /// kernel's phase stamps (`Sys::BenchPhases`), and the per-phase
    /// figures printed (a run of its own: the stamps cost instructions).
    phases: bool,
}

impl Env {
    fn slot(&mut self) -> CapSlot {
        let s = self.next_slot;
        self.next_slot += 1;
        s
    }
}

pub fn main(start: Start) -> u64 {
    let info = start.server("ktest-vmm");
    let Some(&(_, file, len)) = info.files.iter().find(|(n, _, _)| n == "testguest") else {
        println!("{PREFIX} suite vm 0");
        println!("{PREFIX} fail setup no testguest file was granted");
        println!("{PREFIX} end 0 1");
        let _ = sys::machine_exit(SLOT_CONSOLE, 1);
        return 1;
    };
    if let Err(e) = sys::map(SLOT_SELF, file, FILE_VA, Rights::READ) {
        log::error!("cannot map the guest image: {e}");
        return 1;
    }
    let image = alcove_rt::user_bytes(FILE_VA, len as usize);
    let mut env = Env { next_slot: 300, image, ap_stack: false, writer_stacks: 0, level: false, phases: info.args.iter().any(|a| a == "vm_phases") };
    let tests: &[(&str, Test)] = &[
        ("guest_cpuid", Test::Cpuid),
        ("guest_pio", Test::Pio),
        ("guest_msr", Test::Msr),
        ("guest_hlt_timer", Test::HltTimer),
        ("guest_x2apic_timer", Test::X2apicTimer),
        ("guest_timer_while_spinning", Test::SpinTimer),
        ("guest_ipi", Test::Ipi),
        // Two vCPU threads of one process on one host CPU (vm/qemu64-svm-smp1,
        // Bochs): the BSP's thread never returns here while it waits, the
        // AP's must still get turns (issue 14).
        ("guest_ap_runs_while_bsp_exits", Test::ApWhileBspExits),
        ("guest_mmio", Test::Mmio),
        ("guest_npt_fault", Test::NptFault),
        ("guest_exit_costs", Test::Bench),
        ("guest_vmm_interrupt", Test::VmmInterrupt),
        ("guest_vmm_level_interrupt", Test::VmmInterrupt),
        ("guest_triple_fault", Test::TripleFault),
        ("guest_scribble", Test::Scribble),
        ("guest_cpuid_after_scribble", Test::Cpuid),
        ("guest_fpu_state_round_trip", Test::Fpu),
        ("guest_fpu_clean_in_the_next_guest", Test::FpuFresh),
        ("guest_fpu_load_races_a_writer", Test::FpuRace),
        ("guest_debug_exceptions", Test::DebugExceptions),
    ];
    // `skip=NAME` arguments leave tests out where the platform cannot run
    // them (see the manifests).
    let skipped: Vec<&str> = info.args.iter().filter_map(|a| a.strip_prefix("skip=")).collect();
    let tests: Vec<(&str, Test)> = tests.iter().copied().filter(|(n, _)| !skipped.contains(n)).collect();
    for s in &skipped {
        log::info!("skipping {s} on this platform (manifest)");
    }
    // Needs a second CPU: the vCPU must be in its guest there while this
    // thread deletes its capability.
    let halt_test = "vcpu_deleted_during_a_run_is_freed";
    let run_halt_test = !skipped.contains(&halt_test) && halt_teardown::second_cpu(&mut env);
    // The host's GDT limit as this process sees it before any guest ran.
    let gdt_limit = host_gdt_limit();
    println!("{PREFIX} suite vm {}", tests.len() + 1 + usize::from(run_halt_test));
    let (mut passed, mut failed) = (0, 0);
    for &(name, test) in &tests {
        println!("{PREFIX} run {name}");
        env.level = name == "guest_vmm_level_interrupt";
        match run_test(&mut env, test) {
            Ok(()) => {
                passed += 1;
                println!("{PREFIX} ok {name}");
            }
            Err(why) => {
                failed += 1;
                println!("{PREFIX} fail {name} {why}");
            }
        }
    }
    if run_halt_test {
        println!("{PREFIX} run {halt_test}");
        match halt_teardown::vcpu_deleted_during_a_run_is_freed(&mut env) {
            Ok(()) => {
                passed += 1;
                println!("{PREFIX} ok {halt_test}");
            }
            Err(why) => {
                failed += 1;
                println!("{PREFIX} fail {halt_test} {why}");
            }
        }
    }
    // After thousands of VM exits: a VMX exit sets GDTR's limit to 0xFFFF
    // (SDM Vol. 3C §28.5.2); the kernel must have put the real one back.
    let name = "host_gdt_limit_after_vm_exits";
    println!("{PREFIX} run {name}");
    let now = host_gdt_limit();
    if now == gdt_limit {
        passed += 1;
        println!("{PREFIX} ok {name}");
    } else {
        failed += 1;
        println!("{PREFIX} fail {name} the GDT limit was {gdt_limit:#x} before the guests ran and is {now:#x} after");
    }
    println!("{PREFIX} end {passed} {failed}");
    let _ = sys::machine_exit(SLOT_CONSOLE, if failed == 0 { 0 } else { 1 });
    0
}

/// What a guest run produced.
#[derive(Default)]
struct Outcome {
    console: String,
    result: Option<u32>,
    shutdown: bool,
    pio_writes: Vec<(u8, u32)>,
    msr_writes: Vec<(u32, u64)>,
    /// The MMIO test's device ([`p::mmio::BASE`]).
    device: p::mmio::TestDevice,
    /// (gpa, size, value) of writes to guest-physical addresses that are
    /// neither RAM nor the device.
    unmapped_writes: Vec<(u64, u8, u64)>,
    exits: u32,
    /// Vectors whose EOI ended a run (level-triggered interrupts).
    eois: Vec<u8>,
    /// The FPU state in the run page at each exit on [`p::fpu::SWAP_PORT`].
    fpu_at_swap: Vec<p::fpu::State>,
    /// The FPU state in the run page after the last exit.
    fpu_end: p::fpu::State,
    /// At a shutdown exit: the newest exit of the kernel's trace and the
    /// RIP the run page reported (what the VMM prints after a triple fault).
    shutdown_trace: Option<(abi::ExitTrace, u64)>,
    /// The run page's `exit_int_info` at the shutdown exit.
    shutdown_int_info: u64,
    /// At a shutdown exit: the kernel's nested walk of RIP and the RIP
    /// (CS base added) and CR3 the run page reported.
    shutdown_nested: Option<(abi::NestedWalk, u64, u64)>,
    /// The kernel's trace of the last exits when the guest reported its
    /// result (said with a failure: which exits and injections led to it).
    final_trace: String,
    /// guest_pio: where the round trip of the system state stands.
    state_check: StateCheck,
    /// The newest entry of the exit trace at the last exit checked, with
    /// its index (`check_trace`).
    last_traced: Option<(u32, abi::ExitTrace)>,
}

fn run_test(env: &mut Env, test: Test) -> Result<(), String> {
    let e = |what: &'static str| move |err: abi::Error| format!("{what}: {err}");
    let guest = env.slot();
    sys::create(ObjectType::Guest, guest, 0).map_err(e("create guest"))?;
    let ram = env.slot();
    sys::create(ObjectType::Frame, ram, RAM_PAGES).map_err(e("guest RAM"))?;
    let rwx = Rights(RW.0 | Rights::EXECUTE.0);
    sys::map(guest, ram, 0, rwx).map_err(e("map RAM into the guest"))?;
    sys::map(SLOT_SELF, ram, RAM_VA, RW).map_err(e("map RAM into the VMM"))?;
    let cleanup = |env: &Env| {
        // SAFETY: nothing refers to these mappings once the run is over.
        let _ = unsafe { sys::unmap(SLOT_SELF, RAM_VA, RAM_PAGES) };
        let _ = unsafe { sys::unmap(SLOT_SELF, RUN_VA, 1) };
        let _ = env;
    };
    let r = (|| {
        load_image(env.image)?;
        let run_frame = env.slot();
        sys::create(ObjectType::Frame, run_frame, 1).map_err(e("run page"))?;
        sys::map(SLOT_SELF, run_frame, RUN_VA, RW).map_err(e("map run page"))?;
        let vcpu = env.slot();
        sys::create_from(ObjectType::Vcpu, vcpu, u64::from(guest), run_frame).map_err(e("create vcpu"))?;
        let run = run_page();
        boot_state(run, test);
        fill_cpuid(run);
        // Tests with an AP: its vCPU runs on a second thread, waiting in the
        // kernel for the guest's INIT-SIPI-SIPI.
        let ap = if test.vcpus() > 1 { Some(start_ap(env, guest)?) } else { None };
        // The FPU tests: the guest's image both ways (see protocol::fpu).
        match test {
            Test::Fpu => {
                run.fpu = p::fpu::VMM_FIRST.to_fxsave();
                run.load_state |= abi::LOAD_FPU;
            }
            Test::FpuRace => {
                run.fpu = p::fpu::State { mxcsr: p::fpu::RACE_MXCSR, ..p::fpu::VMM_FIRST }.to_fxsave();
                run.load_state |= abi::LOAD_FPU;
            }
            _ => {}
        }
        run.fpu_request = u64::from(matches!(test, Test::Fpu | Test::FpuFresh));
        let writers = if test == Test::FpuRace { Some(start_writers(env)?) } else { None };
        let mut out = drive(vcpu, run, test, env.level, env.phases && test == Test::Bench);
        if let Some(w) = writers {
            stop_writers(&w)?;
        }
        if let Ok(o) = out.as_mut() {
            o.fpu_end = p::fpu::State::from_fxsave(&run.fpu);
        }
        if let Some((ap_vcpu, done)) = ap {
            AP_STOP.store(true, core::sync::atomic::Ordering::Release);
            let _ = sys::vcpu_kick(ap_vcpu);
            // A bound for a hang, not a timing: a loaded host may leave
            // the emulator's other CPU unscheduled for seconds.
            let stopped = sys::wait(done, HANG_BOUND_NS);
            if stopped.is_err() {
                return Err(format!("the AP thread did not stop: {stopped:?}"));
            }
            let _ = sys::cap_delete(ap_vcpu);
            // SAFETY: the AP thread has stopped using its run page.
            let _ = unsafe { sys::unmap(SLOT_SELF, AP_RUN_VA, 1) };
        }
        // A failed test with an AP says what the AP's thread saw: its
        // runs by exit reason and where its vCPU was at its last exit.
        let out = out.map_err(|why| match ap {
            Some(_) => {
                let runs: Vec<String> = AP_EXITS
                    .iter()
                    .enumerate()
                    .filter_map(|(i, c)| {
                        let n = c.load(core::sync::atomic::Ordering::Relaxed);
                        (n != 0).then(|| format!("{:?}: {n}", VcpuExit::from_u32(i as u32)))
                    })
                    .collect();
                let at = AP_LAST_AT.load(core::sync::atomic::Ordering::Relaxed);
                format!("{why}; the AP thread's runs by exit: [{}], its last exit at linear rip {at:#x}", runs.join(", "))
            }
            None => why,
        })?;
        // Only a level-triggered interrupt's EOI comes back to the VMM: one
        // per round of the VMM-interrupt test.
        let rounds = if env.level { p::vmm_interrupt::ROUNDS as usize } else { 0 };
        let want = alloc::vec![p::apic::IPI_VECTOR; rounds];
        if out.eois != want {
            return Err(format!("EOI exits for vectors {:#x?}, expected {want:#x?}", out.eois));
        }
        if let Some((nested, rip, cr3)) = out.shutdown_nested {
            let ram_phys = sys::frame_info(ram).map_err(e("frame info of guest RAM"))?.phys_addr;
            check_nested(&nested, rip, cr3, ram_phys)?;
        }
        let _ = sys::cap_delete(vcpu);
        let _ = sys::cap_delete(run_frame);
        check(test, &out)
    })();
    cleanup(env);
    let _ = sys::cap_delete(ram);
    let _ = sys::cap_delete(guest);
    r
}

/// The BSP's run page. This test VMM predates `alcove_rt::RunPage` and
/// keeps the reference across `vcpu_run`, when the kernel writes the page
/// (see `run_vcpu` below): it relies on the system call being an opaque memory
/// clobber. vmm-server uses `RunPage`, which rules that out.
fn run_page() -> &'static mut VcpuRun {
    // SAFETY: a writable page mapped at RUN_VA for this run page only,
    // plain integers; used from this thread alone (the caveat above).
    unsafe { alcove_rt::user_mut::<VcpuRun>(RUN_VA) }
}

/// Guest RAM. The guest writes it while it runs (inside `vcpu_run`): the
/// same caveat as [`run_page`].
fn ram() -> &'static mut [u8] {
    // SAFETY: mapped readable and writable at RAM_VA for the test guest's
    // RAM only, which this thread alone touches outside `vcpu_run`.
    unsafe { alcove_rt::user_bytes_mut(RAM_VA, (RAM_PAGES * PAGE_SIZE) as usize) }
}

/// `VcpuRun`, for this test VMM (the caveat of [`run_page`]).
fn run_vcpu(vcpu: CapSlot) -> Result<u64, abi::Error> {
    // SAFETY: the test VMM's caveat above; no other thread uses the page.
    unsafe { sys::vcpu_run(vcpu) }
}

/// Copies the guest's PT_LOAD segments to their physical addresses.
fn load_image(image: &[u8]) -> Result<(), String> {
    let file = elf::ElfBytes::<elf::endian::LittleEndian>::minimal_parse(image).map_err(|e| format!("guest image: {e}"))?;
    let phdrs = file.segments().ok_or_else(|| String::from("guest image: no program headers"))?;
    let ram = ram();
    for ph in phdrs.iter().filter(|ph| ph.p_type == elf::abi::PT_LOAD) {
        let (pa, off, filesz, memsz) = (ph.p_paddr, ph.p_offset, ph.p_filesz, ph.p_memsz);
        let end = pa.checked_add(memsz).ok_or("segment overflows")?;
        if end > ram.len() as u64 || filesz > memsz {
            return Err(format!("guest segment at {pa:#x}+{memsz:#x} does not fit guest RAM"));
        }
        let src = image.get(off as usize..(off + filesz) as usize).ok_or("segment outside the image")?;
        ram[pa as usize..(pa + filesz) as usize].copy_from_slice(src);
    }
    Ok(())
}

/// Real mode at 0000:8000 with the test number in BX and the RAM size in ECX.
fn boot_state(run: &mut VcpuRun, test: Test) {
    run.set_real_mode_at(p::ENTRY_GPA);
    run.gprs[3] = u64::from(test.number());
    run.gprs[1] = RAM_PAGES * PAGE_SIZE;
    run.gprs[4] = u64::from(p::INITIAL_SP);
    run.load_state = abi::LOAD_GPRS | abi::LOAD_SYSTEM;
}

/// The guest's CPUID: the host's basic leaves without the virtualization
/// extensions (no nesting offered), and the hypervisor leaves.
fn fill_cpuid(run: &mut VcpuRun) {
    let mut n = 0;
    let mut add = |leaf: u32, r: [u32; 4]| {
        if n < run.cpuid.len() {
            run.cpuid[n] = CpuidEntry { leaf, subleaf: u32::MAX, eax: r[0], ebx: r[1], ecx: r[2], edx: r[3] };
            n += 1;
        }
    };
    let max = vmm_server::vm::cpuid::host(0, 0)[0].min(0xd);
    for leaf in 0..=max {
        let mut r = vmm_server::vm::cpuid::host(leaf, 0);
        if leaf == 1 {
            r[2] &= !(1 << 5); // no VMX
            // The kernel's emulated APIC offers x2APIC and TSC-deadline.
            r[2] |= (1 << 21) | (1 << 24);
        }
        add(leaf, r);
    }
    let xmax = vmm_server::vm::cpuid::host(0x8000_0000, 0)[0].min(0x8000_0008);
    for leaf in 0x8000_0000..=xmax {
        let mut r = vmm_server::vm::cpuid::host(leaf, 0);
        if leaf == 0x8000_0001 {
            r[2] &= !(1 << 2); // no SVM
        }
        add(leaf, r);
    }
    let sig = p::cpuid::signature_regs();
    add(p::cpuid::BASE_LEAF, [p::cpuid::MIN_MAX_LEAF, sig[0], sig[1], sig[2]]);
    add(p::cpuid::TSC_FREQ_LEAF, [0, 0, 0, 0]); // the kernel fills the frequency
    run.cpuid_count = n as u32;
}

fn mask(size: u8) -> u64 {
    if size >= 8 { u64::MAX } else { (1u64 << (8 * u32::from(size))) - 1 }
}

/// Runs the vCPU until the guest reports, shuts down or misbehaves.
fn drive(vcpu: CapSlot, run: &mut VcpuRun, test: Test, level: bool, phases: bool) -> Result<Outcome, String> {
    let mut out = Outcome::default();
    let mut counting = PhaseCount::Before;
    let state_check = test == Test::Pio;
    // A guest that stops making progress is caught by EXIT_LIMIT or by
    // this bound, which is generous: on a loaded host each exit can take
    // far longer than on an idle one (the scribble test makes 65,000 port
    // exits), and the harness has its own timeout for a hung machine.
    // The clock is read every CLOCK_EVERY exits: a `Sys::Clock` per exit
    // was a quarter of the instructions of each exit the VMM answers (the
    // `vmexit_pio_user` figure), and a stuck guest still comes back every
    // time slice (`Interrupted`), so the bound still holds.
    const CLOCK_EVERY: u32 = 64;
    let deadline = alcove_rt::clock_ns() + GUEST_WALL_LIMIT_NS;
    while out.exits < EXIT_LIMIT {
        out.exits += 1;
        if out.exits % CLOCK_EVERY == 0 && alcove_rt::clock_ns() > deadline {
            return Err(format!("guest ran {} s without finishing (console: {:?})", GUEST_WALL_LIMIT_NS / 1_000_000_000, out.console));
        }
        let reason = run_vcpu(vcpu).map_err(|e| format!("vcpu_run: {e}"))?;
        if phases {
            counting = count_phases(counting, run, VcpuExit::from_u32(reason as u32))?;
        }
        // Not in the benchmark's loop: its figure is the exit path's.
        if test != Test::Bench
            && matches!(VcpuExit::from_u32(reason as u32), Some(VcpuExit::Io | VcpuExit::Mmio | VcpuExit::Msr))
        {
            check_trace(run, &mut out.last_traced)?;
        }
        match VcpuExit::from_u32(reason as u32) {
            Some(VcpuExit::Io) => {
                if run.write != 0 && run.port == p::vmm_interrupt::REQUEST_PORT {
                    let sent = if level {
                        sys::vcpu_interrupt_level(vcpu, p::apic::IPI_VECTOR)
                    } else {
                        sys::vcpu_interrupt(vcpu, p::apic::IPI_VECTOR)
                    };
                    sent.map_err(|e| format!("vcpu_interrupt: {e}"))?;
                }
                let port = (run.write != 0).then_some(run.port);
                if port == Some(p::fpu::SWAP_PORT) {
                    out.fpu_at_swap.push(p::fpu::State::from_fxsave(&run.fpu));
                }
                io(run, &mut out)?;
                if port == Some(p::fpu::SWAP_PORT) {
                    run.fpu = p::fpu::VMM_SECOND.to_fxsave();
                    run.load_state |= abi::LOAD_FPU;
                } else if port == Some(p::fpu::RACE_PORT) && test == Test::FpuRace {
                    // The writers flip the image's MXCSR meanwhile.
                    run.load_state |= abi::LOAD_FPU;
                }
            }
            Some(VcpuExit::Msr) => msr(run, &mut out),
            Some(VcpuExit::Interrupted) => {}
            Some(VcpuExit::Eoi) => out.eois.push(run.data as u8),
            Some(VcpuExit::Hlt) => {
                if out.result.is_some() {
                    let trace: Vec<String> = run
                        .recent_exits()
                        .map(|t| format!("{:#x}@{:#x} inj {:#x} int_info {:#x} info {:#x}", t.code, t.rip, t.injected, t.int_info, t.info))
                        .collect();
                    out.final_trace = trace.join("; ");
                    return Ok(out);
                }
            }
            Some(VcpuExit::Shutdown) => {
                out.shutdown = true;
                out.shutdown_trace = run.recent_exits().last().map(|e| (e, run.rip));
                out.shutdown_int_info = run.exit_int_info;
                out.shutdown_nested = Some((run.nested, run.segments[1].base.wrapping_add(run.rip), run.cr3));
                return Ok(out);
            }
            Some(VcpuExit::Mmio) => emulate_mmio(run, &mut out)?,
            other => {
                return Err(format!(
                    "exit {other:?} (code {:#x}, info {:#x} {:#x}) at rip {:#x}; console: {:?}",
                    run.hw_code, run.info1, run.info2, run.rip, out.console
                ))
            }
        }
        // After the exit's own handling (`io` sets `load_state`).
        if state_check {
            let state = core::mem::take(&mut out.state_check);
            out.state_check = check_state_round_trip(state, run, VcpuExit::from_u32(reason as u32))?;
        }
    }
    Err(format!("{EXIT_LIMIT} exits without an ending; console: {:?}", out.console))
}

/// The guest's system state as the run page shows it (or as the VMM loads
/// it with `LOAD_SYSTEM`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct SystemState {
    cr0: u64,
    cr2: u64,
    cr3: u64,
    cr4: u64,
    efer: u64,
    segments: [abi::Segment; 8],
    gdtr: abi::Segment,
    idtr: abi::Segment,
}

impl SystemState {
    fn of(run: &VcpuRun) -> Self {
        Self {
            cr0: run.cr0,
            cr2: run.cr2,
            cr3: run.cr3,
            cr4: run.cr4,
            efer: run.efer,
            segments: run.segments,
            gdtr: run.gdtr,
            idtr: run.idtr,
        }
    }

    fn load(&self, run: &mut VcpuRun) {
        (run.cr0, run.cr2, run.cr3, run.cr4, run.efer) = (self.cr0, self.cr2, self.cr3, self.cr4, self.efer);
        (run.segments, run.gdtr, run.idtr) = (self.segments, self.gdtr, self.idtr);
        run.load_state |= abi::LOAD_SYSTEM;
    }
}

/// Where guest_pio's round trip of the system state stands.
#[derive(Debug, Default)]
enum StateCheck {
    #[default]
    Before,
    /// The VMM loaded the second state in place of the guest's own, the
    /// first.
    Loaded(Box<(SystemState, SystemState)>),
    Done,
}

/// guest_pio: the run page shows the guest's system state as the vCPU
/// holds it, every field in its place. At the guest's first write to
/// [`p::pio::WRITE_PORT`] (long mode, interrupts off) the VMM loads a state
/// with a value of its own in each field the guest's code does not use
/// until its next exit: the bases of ES, SS, DS, FS and GS (ignored
/// in 64-bit mode), the LDT (the guest has none), TR's base and limit (read
/// only by an interrupt or a task switch) and the IDT's (interrupts are
/// off; any exception would triple-fault the guest and fail the test), all
/// different from each other; CR0, CR2, CR3, CR4, EFER, CS and GDTR stay
/// the guest's. At the next exit the page must show exactly that state;
/// then the guest's own goes back. (CR2 is not given a value of its own:
/// Bochs's SVM model shows 0 at the exit after a VMRUN that loaded
/// another, with the kernel before and after the lean exit path alike.)
fn check_state_round_trip(state: StateCheck, run: &mut VcpuRun, exit: Option<VcpuExit>) -> Result<StateCheck, String> {
    match state {
        StateCheck::Before if exit == Some(VcpuExit::Io) && run.write != 0 && run.port == p::pio::WRITE_PORT => {
            let own = SystemState::of(run);
            // The guest's contract: long mode (EFER.LMA), CS its 64-bit
            // code selector 0x18 with L set, a GDT.
            if own.efer & (1 << 10) == 0 || own.segments[1].selector != 0x18 || own.segments[1].attrib & (1 << 9) == 0 {
                return Err(format!("at the first port write the guest is not in its long mode: {own:x?}"));
            }
            let mut loaded = own;
            for (i, base) in [(0, 0x1100_0000), (2, 0x2200_0000), (3, 0x3300_0000), (4, 0x0000_4400_0000_1000), (5, 0x0000_5500_0000_2000)] {
                loaded.segments[i].base = base;
            }
            loaded.segments[6] = abi::Segment { selector: 0, attrib: 0x82, limit: 0x7ff, base: 0x0000_6600_0000_3000 };
            loaded.segments[7].base = 0x0000_7700_0000_4000;
            loaded.segments[7].limit = 0x67 + 0x1000;
            loaded.idtr = abi::Segment { selector: 0, attrib: 0, limit: 0x1ff, base: 0x0000_0880_0000_5000 };
            loaded.load(run);
            Ok(StateCheck::Loaded(Box::new((own, loaded))))
        }
        StateCheck::Loaded(states) => {
            let (own, loaded) = *states;
            let shown = SystemState::of(run);
            if shown != loaded {
                return Err(format!("after an exit the run page shows the system state {shown:x?}, the vCPU holds {loaded:x?}"));
            }
            own.load(run);
            Ok(StateCheck::Done)
        }
        s => Ok(s),
    }
}

/// Where the phase count of the benchmark guest's port exits stands.
#[derive(Clone, Copy, PartialEq, Eq)]
enum PhaseCount {
    Before,
    On,
    Done,
}

/// The kernel's phase stamps over the benchmark guest's port loop: on at
/// its first exit on [`p::bench::PIO_PORT`] (a warm-up one), read and off
/// at the first MMIO exit (the next loop's), each phase printed per exit
/// as `vmexit_phase_NAME` (`kernel::phases`). What they leave of
/// `vmexit_pio_user` is the VMM's code and the system call's assembly.
fn count_phases(state: PhaseCount, run: &VcpuRun, exit: Option<VcpuExit>) -> Result<PhaseCount, String> {
    const NAMES: [&str; 5] = ["lock", "entry", "guest", "exit", "return"];
    match (state, exit) {
        (PhaseCount::Before, Some(VcpuExit::Io)) if run.port == p::bench::PIO_PORT => {
            sys::bench_phases(SLOT_CONSOLE, 0).map_err(|e| format!("phase counting: {e}"))?;
            Ok(PhaseCount::On)
        }
        (PhaseCount::On, Some(VcpuExit::Mmio)) => {
            let mut sums = [0u64; 5];
            let mut calls = 0;
            for (i, s) in sums.iter_mut().enumerate() {
                (*s, calls) = sys::bench_phases(SLOT_CONSOLE, 2 + i as u64).map_err(|e| format!("phase {i}: {e}"))?;
            }
            sys::bench_phases(SLOT_CONSOLE, 1).map_err(|e| format!("phase counting off: {e}"))?;
            // Every port exit of the loop returned the lean way.
            let want = p::bench::ITERATIONS;
            if calls < want {
                return Err(format!("only {calls} of the {want} port exits were counted by phase"));
            }
            for (name, s) in NAMES.iter().zip(sums) {
                println!("ALCOVE-BENCH vmexit_phase_{name} {} instructions", s / calls);
            }
            Ok(PhaseCount::Done)
        }
        (s, _) => Ok(s),
    }
}

/// The kernel's exit trace after an exit the hardware made in this run
/// (the page is written as a ring, only the entries each run added): the
/// newest entry is this exit (its code and RIP), and the entry that was
/// newest at the last exit checked is still in its slot unless a whole
/// trace's worth of exits came since.
fn check_trace(run: &VcpuRun, last: &mut Option<(u32, abi::ExitTrace)>) -> Result<(), String> {
    let len = abi::EXIT_TRACE_LEN as u32;
    let next = run.exit_trace_next;
    let newest_at = next.wrapping_sub(1);
    let newest = run.exit_trace[(newest_at % len) as usize];
    if u64::from(newest.code) != run.hw_code & 0xffff_ffff || newest.rip != run.rip {
        return Err(format!(
            "exit trace: newest entry {newest:x?} (index {newest_at}) is not this exit (code {:#x}, rip {:#x})",
            run.hw_code, run.rip
        ));
    }
    if let Some((at, entry)) = *last
        && next.wrapping_sub(at) <= len
        && run.exit_trace[(at % len) as usize] != entry
    {
        return Err(format!(
            "exit trace: entry {at} was {entry:x?}, now {:x?} after {} exits",
            run.exit_trace[(at % len) as usize],
            next.wrapping_sub(at) - 1
        ));
    }
    *last = Some((newest_at, newest));
    Ok(())
}

/// An access to guest-physical memory that is not RAM: decode the
/// instruction at RIP and carry it out against the test devices.
fn emulate_mmio(run: &mut VcpuRun, out: &mut Outcome) -> Result<(), String> {
    let gpa = run.gpa;
    let mut ram = GuestRam { cr0: run.cr0, cr3: run.cr3 };
    let (bytes, len) = mmio::fetch(&mut ram, run).map_err(|f| {
        format!("MMIO at {gpa:#x}: cannot fetch the instruction at rip {:#x} (no RAM at {:#x})", run.rip, f.gva)
    })?;
    // The kernel fetched them too, through the guest's page tables: the
    // exit record must agree with what the VMM reads itself.
    let k = usize::from(run.insn_len).min(len);
    if k == 0 || run.insn[..k] != bytes[..k] {
        return Err(format!(
            "MMIO at {gpa:#x}: the exit's instruction bytes {:02x?} differ from guest memory {:02x?}",
            &run.insn[..usize::from(run.insn_len).min(15)],
            &bytes[..len]
        ));
    }
    mmio::emulate(&bytes[..len], run, gpa, &mut ram, &mut TestBus(out)).map_err(|e| format!("MMIO at {gpa:#x}: {e}"))?;
    run.load_state = abi::LOAD_GPRS;
    Ok(())
}

/// Guest RAM by linear address, through the page tables that the vCPU's
/// CR0 and CR3 (copied at the exit) name.
struct GuestRam {
    cr0: u64,
    cr3: u64,
}

impl GuestRam {
    /// Runs `f` on each page-sized piece of `len` bytes at `gva` with its
    /// range in [`ram`] and its offset in the access.
    fn pieces(&self, gva: u64, len: usize, mut f: impl FnMut(usize, core::ops::Range<usize>)) -> Result<(), MemFault> {
        let mut done = 0;
        while done < len {
            let va = gva.wrapping_add(done as u64);
            let n = ((PAGE_SIZE - va % PAGE_SIZE) as usize).min(len - done);
            let pa = translate_with(self.cr0, self.cr3, va)
                .ok_or(MemFault { gva: va, kind: FaultKind::Page { error_code: 0 } })? as usize;
            let not_ram = MemFault { gva: va, kind: FaultKind::NotRam { gpa: pa as u64 } };
            let end = pa.checked_add(n).filter(|&end| end <= ram().len()).ok_or(not_ram)?;
            f(done, pa..end);
            done += n;
        }
        Ok(())
    }
}

impl GuestMemory for GuestRam {
    fn read(&mut self, gva: u64, buf: &mut [u8]) -> Result<(), MemFault> {
        let len = buf.len();
        self.pieces(gva, len, |at, r| buf[at..at + r.len()].copy_from_slice(&ram()[r]))
    }
    fn write(&mut self, gva: u64, data: &[u8]) -> Result<(), MemFault> {
        self.pieces(gva, data.len(), |at, r| ram()[r.clone()].copy_from_slice(&data[at..at + r.len()]))
    }
    fn fetch(&mut self, gva: u64, buf: &mut [u8]) -> Result<(), MemFault> {
        self.read(gva, buf)
    }
    /// The test guest runs everything at CPL 0 on tables that grant all
    /// rights: only presence is checked.
    fn check(&mut self, gva: u64, _kind: AccessKind) -> Result<u64, MemFault> {
        translate_with(self.cr0, self.cr3, gva).ok_or(MemFault { gva, kind: FaultKind::Page { error_code: 0 } })
    }
    fn translate(&mut self, gva: u64) -> Option<u64> {
        translate_with(self.cr0, self.cr3, gva)
    }
}

/// The guest-physical bus: the MMIO test's device page, and nothing
/// elsewhere (reads all ones, writes recorded), as `protocol` describes.
struct TestBus<'a>(&'a mut Outcome);

impl MmioBus for TestBus<'_> {
    fn read(&mut self, gpa: u64, size: u8) -> u64 {
        let mut data = [0u8; 8];
        let data = &mut data[..usize::from(size.min(8))];
        match gpa.checked_sub(p::mmio::BASE).filter(|&off| off < p::mmio::PAGE_BYTES) {
            Some(off) => self.0.device.read(off, data),
            None => data.fill(p::unmapped::READ_BYTE),
        }
        let mut le = [0u8; 8];
        le[..data.len()].copy_from_slice(data);
        u64::from_le_bytes(le)
    }
    fn write(&mut self, gpa: u64, size: u8, value: u64) {
        match gpa.checked_sub(p::mmio::BASE).filter(|&off| off < p::mmio::PAGE_BYTES) {
            Some(off) => self.0.device.write(off, &value.to_le_bytes()[..usize::from(size.min(8))]),
            None => self.0.unmapped_writes.push((gpa, size, value)),
        }
    }
}

/// The kernel's nested walk at a shutdown exit (`abi::NestedWalk`, which
/// the VMM's triple-fault report prints): under the guest's own nested
/// root, the guest's walk of RIP through its 4-level tables as they are in
/// its RAM, each table's page mapped by a present nested leaf to the frame
/// given to the guest there (`ram_phys`: guest RAM is one frame at gpa 0).
fn check_nested(n: &abi::NestedWalk, rip: u64, cr3: u64, ram_phys: u64) -> Result<(), String> {
    const ADDR: u64 = 0x000f_ffff_ffff_f000;
    if n.root == 0 || n.hw_root != n.root {
        return Err(format!("nested walk: hardware root {:#x}, the guest's {:#x}", n.hw_root, n.root));
    }
    let ram = ram();
    let mut want = Vec::new();
    let mut table = cr3 & ADDR;
    for level in (1..=4u32).rev() {
        let at = table + ((rip >> (12 + 9 * (level - 1))) & 0x1ff) * 8;
        // A table outside RAM: no nested leaf maps it, the walk ends.
        let e = ram.get(at as usize..at as usize + 8).map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])));
        want.push((at, e));
        let Some(e) = e else { break };
        if e & 1 == 0 || level == 1 || (level < 4 && e & 0x80 != 0) {
            break;
        }
        table = e & ADDR;
    }
    if n.steps as usize != want.len() {
        return Err(format!("nested walk of rip {rip:#x}: {} steps, the guest's tables take {}: {n:x?}", n.steps, want.len()));
    }
    for (i, &(at, e)) in want.iter().enumerate() {
        let (leaf, entry) = (n.leaves[i], n.entries[i]);
        let good = match e {
            Some(e) => entry == e && leaf & 1 != 0 && leaf & ADDR == ram_phys + (at & ADDR),
            None => leaf == 0 && entry == 0,
        };
        if !good {
            return Err(format!(
                "nested walk of rip {rip:#x}, step {i} (gpa {at:#x}, RAM frame at {ram_phys:#x}): leaf {leaf:#x} entry {entry:#x}, guest RAM holds {e:x?}"
            ));
        }
    }
    Ok(())
}

/// Guest-physical address of a guest-virtual one, through the guest's own
/// page tables (4-level paging; identity when paging is off).
fn translate(run: &VcpuRun, va: u64) -> Option<u64> {
    translate_with(run.cr0, run.cr3, va)
}

fn translate_with(cr0: u64, cr3: u64, va: u64) -> Option<u64> {
    if cr0 & (1 << 31) == 0 {
        return Some(va);
    }
    let ram = ram();
    let read = |pa: u64| -> Option<u64> {
        let b = ram.get(pa as usize..pa as usize + 8)?;
        Some(u64::from_le_bytes(b.try_into().ok()?))
    };
    let mut table = cr3 & 0x000f_ffff_ffff_f000;
    for level in (1..=4).rev() {
        let idx = (va >> (12 + 9 * (level - 1))) & 0x1ff;
        let e = read(table + idx * 8)?;
        if e & 1 == 0 {
            return None;
        }
        let addr = e & 0x000f_ffff_ffff_f000;
        if level > 1 && e & 0x80 != 0 {
            let size = 1u64 << (12 + 9 * (level - 1));
            return Some((addr & !(size - 1)) | (va & (size - 1)));
        }
        if level == 1 {
            return Some(addr | (va & 0xfff));
        }
        table = addr;
    }
    None
}

fn io(run: &mut VcpuRun, out: &mut Outcome) -> Result<(), String> {
    let (port, size, write) = (run.port, run.size, run.write != 0);
    if run.io_flags & 1 != 0 {
        return string_io(run, out);
    }
    if write {
        let v = run.data & mask(size);
        match port {
            p::CONSOLE_PORT => out.console.push(v as u8 as char),
            p::RESULT_PORT => out.result = Some(v as u32),
            p::pio::WRITE_PORT => out.pio_writes.push((size, v as u32)),
            _ => {}
        }
    } else {
        let v = match port {
            p::pio::READ_PORT => u64::from(p::pio::read_answer(size)),
            _ => mask(size),
        };
        let m = mask(size);
        run.gprs[0] = (run.gprs[0] & !m) | (v & m);
    }
    // Only RIP and RAX changed: the lean request (`LOAD_RIP`).
    run.rip = run.next_rip;
    run.load_state = abi::LOAD_RIP;
    Ok(())
}

/// `ins`/`outs`, with or without `rep`, byte-sized (what the tests use).
fn string_io(run: &mut VcpuRun, out: &mut Outcome) -> Result<(), String> {
    let rep = run.io_flags & 2 != 0;
    let count = if rep { run.gprs[1] } else { 1 };
    if count > 4096 || run.size != 1 {
        return Err(format!("string I/O of {count} x {} bytes not supported", run.size));
    }
    let down = run.rflags & (1 << 10) != 0;
    let write = run.write != 0;
    for _ in 0..count {
        let (reg, seg) = if write { (6, 3) } else { (7, 0) }; // RSI with DS, RDI with ES
        let va = run.segments[seg].base.wrapping_add(run.gprs[reg]);
        let pa = translate(run, va).ok_or_else(|| format!("string I/O at unmapped {va:#x}"))?;
        let cell = ram().get_mut(pa as usize).ok_or_else(|| format!("string I/O outside RAM at {pa:#x}"))?;
        if write {
            let b = *cell;
            match run.port {
                p::CONSOLE_PORT => out.console.push(b as char),
                p::pio::WRITE_PORT => out.pio_writes.push((1, u32::from(b))),
                _ => {}
            }
        } else {
            *cell = if run.port == p::pio::READ_PORT { p::pio::READ_BYTE } else { 0xff };
        }
        run.gprs[reg] = if down { run.gprs[reg].wrapping_sub(1) } else { run.gprs[reg].wrapping_add(1) };
    }
    if rep {
        run.gprs[1] = 0;
    }
    run.rip = run.next_rip;
    run.load_state = abi::LOAD_GPRS;
    Ok(())
}

fn msr(run: &mut VcpuRun, out: &mut Outcome) {
    if run.msr == p::msr::VMM_MSR {
        if run.write != 0 {
            out.msr_writes.push((run.msr, run.data));
        } else {
            run.gprs[0] = p::msr::VMM_MSR_READ_VALUE & 0xffff_ffff;
            run.gprs[2] = p::msr::VMM_MSR_READ_VALUE >> 32;
        }
        run.rip = run.next_rip;
        run.load_state = abi::LOAD_GPRS;
    } else {
        // Unknown MSR: #GP(0), as hardware would.
        run.inject = (1 << 31) | (3 << 8) | 13 | (1 << 11);
    }
}

fn check(test: Test, out: &Outcome) -> Result<(), String> {
    let console = out.console.trim_end();
    match test.ending() {
        p::Ending::Shutdown => {
            if !out.shutdown {
                return Err(format!("expected a shutdown exit; result {:?}, console {console:?}", out.result));
            }
            // The kernel's exit trace ends with the shutdown itself (SVM
            // exit code 0x7f, VMX basic reason 2) at the RIP the run page
            // says: what an operator reads after a guest's triple fault.
            match out.shutdown_trace {
                Some((e, rip)) if (e.code == 0x7f || e.code & 0xffff == 2) && e.rip == rip => {}
                other => return Err(format!("the exit trace does not end with the shutdown: {other:x?}")),
            }
            // The run page says which event the shutdown interrupted, as
            // the trace does (the VMM's triple-fault report prints it).
            if let Some((e, _)) = out.shutdown_trace
                && out.shutdown_int_info as u32 != e.int_info
            {
                return Err(format!(
                    "the run page's exit_int_info {:#x} is not the trace's event being delivered {:#x}",
                    out.shutdown_int_info, e.int_info
                ));
            }
        }
        p::Ending::Result if test == Test::Scribble => {
            // The robustness guest reports no verdict of its own: this run
            // must end in the exits the VMM expects (drive() failed on any
            // other), and the tests after it show the host still works.
        }
        p::Ending::Result => match out.result {
            Some(p::RESULT_PASS) => {}
            Some(code) => {
                return Err(format!("guest reported failure {code:#x}; console {console:?}; last exits (code@rip): {}", out.final_trace));
            }
            None => return Err(format!("no result; shutdown {}; console {console:?}", out.shutdown)),
        },
    }
    match test {
        Test::Pio => {
            let want: Vec<(u8, u32)> = p::pio::WRITES.to_vec();
            if out.pio_writes != want {
                return Err(format!("port writes {:?}, expected {want:?}", out.pio_writes));
            }
            if !out.console.contains(core::str::from_utf8(p::pio::OUTSB_STRING).unwrap_or("?").trim_end()) {
                return Err(format!("rep outsb string missing from the console {console:?}"));
            }
            if !matches!(out.state_check, StateCheck::Done) {
                return Err(format!("the system state's round trip did not finish: {:x?}", out.state_check));
            }
        }
        Test::Msr => {
            if out.msr_writes != [(p::msr::VMM_MSR, p::msr::VMM_MSR_WRITE_VALUE)] {
                return Err(format!("MSR writes {:?}", out.msr_writes));
            }
        }
        Test::Mmio => {
            if !out.unmapped_writes.is_empty() {
                return Err(format!("writes outside the device page: {:x?}", out.unmapped_writes));
            }
        }
        // Guest -> VMM: what the guest loaded itself, at the swap and at the
        // end (VMM -> guest the guest checked); a new guest: clean.
        Test::Fpu => {
            let want = [p::fpu::GUEST];
            if out.fpu_at_swap != want {
                return Err(format!("at the swap exit the run page held {:x?}, expected {want:x?}", out.fpu_at_swap));
            }
            if out.fpu_end != p::fpu::GUEST {
                return Err(format!("at the end the run page held {:x?}, expected {:x?}", out.fpu_end, p::fpu::GUEST));
            }
        }
        Test::FpuFresh if out.fpu_end != p::fpu::CLEAN => {
            return Err(format!("a new guest's state came back as {:x?}, expected {:x?}", out.fpu_end, p::fpu::CLEAN));
        }
        Test::NptFault => {
            let want = [(p::unmapped::GPA, 4, u64::from(p::unmapped::WRITE_VALUE))];
            if out.unmapped_writes != want {
                return Err(format!("writes to unmapped memory {:x?}, expected {want:x?}", out.unmapped_writes));
            }
        }
        _ => {}
    }
    if test == Test::Bench {
        let mut reported = Vec::new();
        for line in out.console.lines() {
            if let Some((name, value)) = p::bench::parse_line(line) {
                println!("ALCOVE-BENCH {name} {value} instructions");
                reported.push(name);
            }
        }
        if reported != p::bench::NAMES {
            return Err(format!("the guest reported figures {reported:?}, expected {:?}", p::bench::NAMES));
        }
    }
    // The spinning guest's note of how late its TSC-deadline interrupt
    // came (not checked: a figure for the log).
    for line in console.lines().filter(|l| test == Test::SpinTimer && l.contains("after the deadline")) {
        log::info!("{line}");
    }
    // How long the BSP waited for the AP, in CPUID exits (a figure).
    for line in console.lines().filter(|l| test == Test::ApWhileBspExits && l.contains("CPUID exits")) {
        log::info!("{line}");
    }
    log::info!("{}: {} exits; {}", test.name(), out.exits, console.lines().last().unwrap_or(""));
    Ok(())
}

/// Creates vCPU 1 and a thread that runs it until `AP_STOP`; returns the
/// vCPU and the notification the thread signals when it stopped.
fn start_ap(env: &mut Env, guest: CapSlot) -> Result<(CapSlot, CapSlot), String> {
    let e = |what: &'static str| move |err: abi::Error| format!("{what}: {err}");
    AP_STOP.store(false, core::sync::atomic::Ordering::Release);
    for c in &AP_EXITS {
        c.store(0, core::sync::atomic::Ordering::Relaxed);
    }
    let run_frame = env.slot();
    sys::create(ObjectType::Frame, run_frame, 1).map_err(e("AP run page"))?;
    sys::map(SLOT_SELF, run_frame, AP_RUN_VA, RW).map_err(e("map AP run page"))?;
    let vcpu = env.slot();
    sys::create_from(ObjectType::Vcpu, vcpu, u64::from(guest), run_frame).map_err(e("create AP vcpu"))?;
    let _ = sys::cap_delete(run_frame);
    // SAFETY: the AP's run page, just mapped; its vCPU has not run yet.
    fill_cpuid(unsafe { alcove_rt::user_mut::<VcpuRun>(AP_RUN_VA) });
    let (done, park) = (env.slot(), env.slot());
    sys::create(ObjectType::Notification, done, 0).map_err(e("notification"))?;
    sys::create(ObjectType::Notification, park, 0).map_err(e("notification"))?;
    if !env.ap_stack {
        let stack = env.slot();
        sys::create(ObjectType::Frame, stack, AP_STACK_PAGES).map_err(e("AP stack"))?;
        sys::map(SLOT_SELF, stack, AP_STACK_VA, RW).map_err(e("map AP stack"))?;
        env.ap_stack = true;
    }
    let t = env.slot();
    sys::create(ObjectType::Thread, t, u64::from(SLOT_SELF)).map_err(e("AP thread"))?;
    let top = AP_STACK_VA + AP_STACK_PAGES * PAGE_SIZE - 8;
    // SAFETY: the stack is mapped for this thread alone; it makes only
    // register-only system calls, so it needs no IPC buffer.
    let slots = u64::from(done) | u64::from(park) << 32;
    unsafe { sys::thread_configure(t, ap_thread as *const () as u64, top, 0, u64::from(vcpu), slots) }
        .map_err(e("configure AP thread"))?;
    sys::thread_resume(t).map_err(e("resume AP thread"))?;
    Ok((vcpu, done))
}

/// Runs the AP's vCPU: port writes are ignored and reads give all ones,
/// other exits just run again, until the main thread sets `AP_STOP`.
extern "C" fn ap_thread(_ipc: u64, vcpu: u64, slots: u64) -> ! {
    let vcpu = vcpu as CapSlot;
    let (done, park) = (slots as u32 as CapSlot, (slots >> 32) as CapSlot);
    // SAFETY: the AP's run page, used by this thread alone (the caveat of
    // `run_page`).
    let run = unsafe { alcove_rt::user_mut::<VcpuRun>(AP_RUN_VA) };
    while !AP_STOP.load(core::sync::atomic::Ordering::Acquire) {
        let r = run_vcpu(vcpu);
        let slot = r.as_ref().map_or(AP_EXITS.len() - 1, |&x| (x as usize).min(AP_EXITS.len() - 1));
        AP_EXITS[slot].fetch_add(1, core::sync::atomic::Ordering::Relaxed);
        AP_LAST_AT.store(run.segments[1].base.wrapping_add(run.rip), core::sync::atomic::Ordering::Relaxed);
        match r.ok().and_then(|r| VcpuExit::from_u32(r as u32)) {
            Some(VcpuExit::Io) => {
                if run.write == 0 {
                    run.gprs[0] |= mask(run.size);
                }
                run.rip = run.next_rip;
                run.load_state = abi::LOAD_GPRS;
            }
            Some(VcpuExit::Msr) => run.inject = (1 << 31) | (3 << 8) | 13 | (1 << 11),
            Some(VcpuExit::Shutdown | VcpuExit::InvalidState | VcpuExit::Unhandled) | None => break,
            _ => {}
        }
    }
    let _ = sys::signal(done, 1);
    // A thread cannot end on its own; park it on a notification nobody
    // signals (waiting on `done` took back its own signal whenever it
    // stopped before the main thread waited: "the AP thread did not stop").
    loop {
        let _ = sys::wait(park, abi::FOREVER);
    }
}

/// The FPU race's writer threads.
struct Writers {
    threads: Vec<CapSlot>,
    /// Each writer signals its bit here when it stopped.
    done: CapSlot,
    /// Where stopped writers wait until their capability is deleted.
    park: CapSlot,
}

/// Starts the FPU race's writers, one per CPU the kernel accepts (up to
/// [`MAX_WRITERS`]), at a priority below ours: the one that shares our CPU
/// barely runs, the others run truly alongside the vCPU thread.
fn start_writers(env: &mut Env) -> Result<Writers, String> {
    let e = |what: &'static str| move |err: abi::Error| format!("{what}: {err}");
    WRITER_STOP.store(false, core::sync::atomic::Ordering::Release);
    WRITER_FLIPS.store(0, core::sync::atomic::Ordering::Relaxed);
    WRITER_AIMED.store(0, core::sync::atomic::Ordering::Relaxed);
    let (done, park) = (env.slot(), env.slot());
    sys::create(ObjectType::Notification, done, 0).map_err(e("notification"))?;
    sys::create(ObjectType::Notification, park, 0).map_err(e("notification"))?;
    let mut w = Writers { threads: Vec::new(), done, park };
    if let Err(why) = start_each_writer(env, &mut w) {
        let _ = stop_writers(&w);
        return Err(why);
    }
    log::info!("fpu race: {} writer thread(s)", w.threads.len());
    Ok(w)
}

fn start_each_writer(env: &mut Env, w: &mut Writers) -> Result<(), String> {
    let e = |what: &'static str| move |err: abi::Error| format!("{what}: {err}");
    for cpu in 0..MAX_WRITERS {
        let t = env.slot();
        sys::create(ObjectType::Thread, t, u64::from(SLOT_SELF)).map_err(e("writer thread"))?;
        if sys::thread_set_priority(t, 10, Some(cpu)).is_err() {
            let _ = sys::cap_delete(t);
            break; // no such CPU
        }
        let stack = WRITER_STACK_VA + u64::from(cpu) * (WRITER_STACK_PAGES + 1) * PAGE_SIZE;
        if env.writer_stacks <= cpu {
            let f = env.slot();
            sys::create(ObjectType::Frame, f, WRITER_STACK_PAGES).map_err(e("writer stack"))?;
            sys::map(SLOT_SELF, f, stack, RW).map_err(e("map writer stack"))?;
            env.writer_stacks = cpu + 1;
        }
        let top = stack + WRITER_STACK_PAGES * PAGE_SIZE - 8;
        // SAFETY: the stack window is this writer's alone; it makes only
        // register-only system calls, so it needs no IPC buffer.
        let slots = u64::from(w.done) | u64::from(w.park) << 32;
        unsafe { sys::thread_configure(t, writer_thread as *const () as u64, top, 0, slots, 1 << cpu) }
            .map_err(e("configure writer"))?;
        sys::thread_resume(t).map_err(e("resume writer"))?;
        w.threads.push(t);
    }
    Ok(())
}

/// Stops the writers and waits until each has (so the run page may go).
fn stop_writers(w: &Writers) -> Result<(), String> {
    WRITER_STOP.store(true, core::sync::atomic::Ordering::Release);
    let all = (1u64 << w.threads.len()) - 1;
    let mut seen = 0;
    while seen != all {
        match sys::wait(w.done, HANG_BOUND_NS) {
            Ok(bits) => seen |= bits,
            Err(e) => return Err(format!("the writer threads did not stop ({seen:#b} of {all:#b}): {e}")),
        }
    }
    for &t in &w.threads {
        let _ = sys::cap_delete(t); // ends the parked thread
    }
    let _ = sys::cap_delete(w.done);
    let _ = sys::cap_delete(w.park);
    let (flips, aimed) = (WRITER_FLIPS.load(core::sync::atomic::Ordering::Relaxed), WRITER_AIMED.load(core::sync::atomic::Ordering::Relaxed));
    // On one CPU the writer (below our priority) hardly runs: the race
    // needs a second CPU (vm/epyc-svm).
    log::info!("fpu race: {flips} flips of the run page, {aimed} aimed at an entry's FPU load");
    Ok(())
}

/// `n` iterations of a loop the compiler keeps.
fn busy(n: u32) {
    for i in 0..n {
        core::hint::black_box(i);
    }
}

/// Flips what the kernel validates in the run page while the vCPU thread
/// enters the guest: the FPU image's MXCSR between the valid `RACE_MXCSR`
/// and one with reserved bits (FXRSTOR of it is a #GP), and the CPUID
/// table's count between the real one and `u32::MAX`.
///
/// The kernel's check-then-copy window is a few instructions, so the MXCSR
/// flips aim at it instead of hoping: the writer waits until the VMM asked
/// for `LOAD_FPU`, then until the kernel took the request (it clears
/// `load_state` just before it reads the image), then waits `delay` spins
/// (0..48 loop iterations, one more each round, so some rounds land between the kernel's
/// check and its copy) and makes MXCSR bad for a moment.
extern "C" fn writer_thread(_ipc: u64, slots: u64, bit: u64) -> ! {
    use core::sync::atomic::Ordering;
    let (done, park) = (slots as u32 as CapSlot, (slots >> 32) as CapSlot);
    let field = |offset: usize| (RUN_VA + offset as u64) as *mut u32;
    let mxcsr = field(core::mem::offset_of!(VcpuRun, fpu) + 24);
    let count = field(core::mem::offset_of!(VcpuRun, cpuid_count));
    let load = field(core::mem::offset_of!(VcpuRun, load_state)) as *const u64;
    let (good, bad) = (p::fpu::RACE_MXCSR, p::fpu::RACE_MXCSR | p::fpu::RACE_RESERVED_BITS);
    // SAFETY (every access below): the run page is mapped at RUN_VA for the
    // whole race (the main thread stops the writers before unmapping it);
    // the fields are aligned integers, accessed with volatile loads and
    // stores because the kernel and the vCPU thread use the page at the
    // same time.
    let valid_count = unsafe { count.read_volatile() };
    let stop = || WRITER_STOP.load(Ordering::Acquire);
    let mut flips = 0u64;
    let mut toggle = false;
    // Spins until `cond` (flipping the CPUID count meanwhile) or stop.
    let mut spin_until = |cond: &dyn Fn(u64) -> bool, flips: &mut u64| {
        // SAFETY: as above.
        while !cond(unsafe { load.read_volatile() }) && !stop() {
            toggle = !toggle;
            unsafe { count.write_volatile(if toggle { u32::MAX } else { valid_count }) };
            *flips += 1;
        }
    };
    let mut delay = 0u32;
    while !stop() {
        spin_until(&|l| l & abi::LOAD_FPU != 0, &mut flips);
        spin_until(&|l| l & abi::LOAD_FPU == 0, &mut flips);
        if stop() {
            break;
        }
        WRITER_AIMED.fetch_add(1, Ordering::Relaxed);
        // Busy loops, not PAUSE: QEMU's TCG leaves its execution loop on a
        // PAUSE, which takes far longer than the window.
        busy(delay);
        // SAFETY: as above.
        unsafe {
            mxcsr.write_volatile(bad);
            busy(4);
            mxcsr.write_volatile(good);
        }
        flips += 1;
        delay = (delay + 1) % 48;
    }
    // SAFETY: as above.
    unsafe { count.write_volatile(valid_count) };
    WRITER_FLIPS.fetch_add(flips, Ordering::Relaxed);
    let _ = sys::signal(done, bit);
    // A thread cannot end on its own; park it until its capability goes.
    loop {
        let _ = sys::wait(park, abi::FOREVER);
    }
}

/// GDTR's limit (SGDT works in ring 3: the kernel does not set CR4.UMIP).
fn host_gdt_limit() -> u16 {
    let mut gdtr = [0u8; 10];
    // SAFETY: SGDT stores 10 bytes (limit, base) into the local buffer.
    unsafe { core::arch::asm!("sgdt [{}]", in(reg) gdtr.as_mut_ptr(), options(nostack, preserves_flags)) };
    u16::from_le_bytes([gdtr[0], gdtr[1]])
}
