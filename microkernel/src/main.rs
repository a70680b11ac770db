//! The Alcove microkernel: entry from the boot path (arch/x86_64/boot.s) to a
//! running system.
//!
//! `kmain` brings up the bootstrap CPU, reads what the bootloader handed over,
//! discovers the platform through ACPI, prints the banner, and then either runs
//! the system-test suite named on the command line (`alcove.test=NAME`) or
//! idles.
#![no_std]
#![no_main]
// `extern "rust-preserve-none"` for the system-call entry (kernel::syscall_from_user).
#![feature(rust_preserve_none_cc)]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

extern crate alloc;

#[macro_use]
mod arch;
mod bootinfo;
mod heap;
mod kernel;
mod klog;
mod ktest;

use arch::Exit;
use kcore::cmdline::CmdLine;
use kcore::memmap::FreeMap;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// What boot found out, for the banner and the system tests.
pub struct System {
    pub boot: bootinfo::BootInfo,
    pub free: FreeMap<64>,
    pub platform: Option<arch::acpi::Platform>,
    pub features: arch::cpu::Features,
    pub tsc_khz: u64,
    pub cpus_online: usize,
}

static OVERRIDES: spin::Once<heapless::Vec<arch::acpi::IsaOverride, 16>> = spin::Once::new();

/// Trigger mode and polarity of IOAPIC line `gsi`: (level, active_low). ISA
/// lines are edge/high unless the MADT overrides them; PCI lines (16..)
/// are level/low (ACPI 6.5 §5.2.12.5, PCI 3.0 §2.2.6).
pub fn irq_polarity(gsi: u8) -> (bool, bool) {
    if let Some(o) = OVERRIDES.get().and_then(|v| v.iter().find(|o| o.gsi == u32::from(gsi))) {
        let polarity = o.flags & 3;
        let trigger = (o.flags >> 2) & 3;
        let level = if trigger == 0 { gsi >= 16 } else { trigger == 3 };
        let low = if polarity == 0 { gsi >= 16 } else { polarity == 3 };
        return (level, low);
    }
    (gsi >= 16, gsi >= 16)
}

/// Application processors start here (from smp.rs's trampoline), on their
/// own kernel stack.
extern "C" fn ap_entry(cpu: u64) -> ! {
    let cpu = cpu as usize;
    // Too late (the BSP gave up on this CPU): touch nothing of the index.
    if !arch::smp::pass_gate(cpu) {
        arch::cpu::halt_forever();
    }
    arch::gdt::init_cpu(cpu);
    arch::percpu::init(cpu);
    arch::trap::load();
    arch::init_cpu_late(LAPIC_PHYS.load(core::sync::atomic::Ordering::Relaxed));
    kernel::vm::init_cpu(cpu);
    arch::smp::signal_started();
    kernel::run_cpu()
}

static LAPIC_PHYS: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0xfee0_0000);

#[unsafe(no_mangle)]
extern "C" fn kmain(magic: u32, info_phys: u64) -> ! {
    arch::time::mark_entry();
    arch::serial::init();
    klog::init();
    arch::init_bsp();
    let tsc_khz = arch::time::calibrate();
    match arch::time::read_wall_clock() {
        Some(t) => log::info!("wall clock: {t} s since the Unix epoch at boot (CMOS)"),
        None => log::info!("wall clock: no CMOS clock; Unix time reads 0"),
    }

    let boot = match bootinfo::read(magic, info_phys) {
        Ok(b) => b,
        Err(e) => panic!("boot: {e}"),
    };
    heap::init();

    let cmdline = CmdLine::new(boot.cmdline);
    if cmdline.get("alcove.fastpath") == Some("off") {
        kernel::fastpath::FASTPATH_OFF.store(true, core::sync::atomic::Ordering::Relaxed);
    }
    // For the -icount path-length benchmarks only: an idle CPU zeroing
    // frames ahead adds its instructions to the virtual clock every CPU's
    // TSC reads.
    if cmdline.get("alcove.zero_ahead") == Some("off") {
        kernel::mem::ZERO_AHEAD_OFF.store(true, core::sync::atomic::Ordering::Relaxed);
    }
    // The system tests' fault injection (kernel/inject.rs): only when the
    // boot command line asks for it.
    if cmdline.get("alcove.inject") == Some("on") {
        kernel::inject::enable();
        log::warn!("fault injection is on (alcove.inject=on): for system tests only");
    }
    log::info!(
        "Alcove {VERSION} booted by {} ({}), cmdline \"{}\"",
        if boot.bootloader.is_empty() { "an unnamed loader" } else { boot.bootloader },
        if boot.uefi { "UEFI" } else { "BIOS" },
        boot.cmdline
    );

    let mut reserved: heapless::Vec<(u64, u64), 12> = heapless::Vec::new();
    let _ = reserved.push(arch::kernel_phys_range());
    let _ = reserved.push(boot.info_range);
    for m in &boot.modules {
        let _ = reserved.push((m.start, m.end));
    }
    let free = FreeMap::<64>::build(&boot.regions, &reserved);
    for m in &boot.modules {
        log::info!("boot module \"{}\" at {:#x}..{:#x} ({} KiB)", m.name, m.start, m.end, (m.end - m.start) / 1024);
    }

    let platform = match boot.acpi_root {
        Some(root) => match arch::acpi::discover(root) {
            Ok(p) => Some(p),
            Err(e) => {
                log::error!("acpi: {e}");
                None
            }
        },
        None => {
            log::error!("acpi: the bootloader found no RSDP");
            None
        }
    };
    let features = arch::cpu::features();
    kernel::RAM.call_once(|| {
        boot.regions
            .iter()
            .filter(|r| !matches!(r.kind, kcore::memmap::RegionKind::Reserved))
            .map(|r| (r.start, r.end()))
            .collect()
    });
    match kernel::mem::init(free.ranges()) {
        Ok((free_b, total)) => log::info!("memory: {} MiB free of {} MiB managed", free_b >> 20, total >> 20),
        Err(e) => panic!("memory: {e}"),
    }
    // Hardware virtualization, then interrupt controllers and the other CPUs.
    kernel::vm::init();
    kernel::vm::init_cpu(0);
    let mut cpus_online = 1;
    if let Some(p) = &platform {
        LAPIC_PHYS.store(p.local_apic_address, core::sync::atomic::Ordering::Relaxed);
        OVERRIDES.call_once(|| p.overrides.clone());
        arch::init_cpu_late(p.local_apic_address);
        arch::apic::calibrate_timer();
        if let Some(io) = p.ioapic.first() {
            arch::apic::init_ioapic(io.address, io.gsi_base);
        }
        kernel::init(p.apic_ids.len().max(1));
        cpus_online += arch::smp::start_aps(&p.apic_ids, ap_entry);
    } else {
        arch::init_cpu_late(0xfee0_0000);
        arch::apic::calibrate_timer();
        kernel::init(1);
    }
    let system = System { boot, free, platform, features, tsc_khz, cpus_online };
    banner(&system);
    let init_ticks = arch::time::ticks_since_entry() - arch::time::calibration_ticks();

    match cmdline.get("alcove.test") {
        // Userspace suites run as servers of the test manifests.
        Some("user" | "vm" | "storage" | "fuzz" | "zone") => {
            start_init(&system);
            kernel::run_cpu()
        }
        Some(suite) => {
            let ok = ktest::run(suite, &system, init_ticks);
            arch::exit(if ok { Exit::Pass } else { Exit::Fail })
        }
        None => {
            start_init(&system);
            kernel::run_cpu()
        }
    }
}

/// Finds `bin/init` in the boot archive and starts it with the whole
/// archive mapped, and most of memory as its budget.
fn start_init(s: &System) {
    let Some(m) = s.boot.modules.first() else { panic!("no boot archive: nothing to run") };
    let Some(va) = arch::phys_to_virt(m.start, m.end - m.start) else { panic!("boot archive above 4 GiB") };
    // SAFETY: the module lies in the direct map and is excluded from the free
    // map, so nothing else writes it; it lives as long as the kernel.
    let bytes: &'static [u8] = unsafe { core::slice::from_raw_parts(va as *const u8, (m.end - m.start) as usize) };
    let archive = initrd::Archive::new(bytes);
    let init = match archive.find(initrd::INIT_BINARY) {
        Ok(Some(e)) => e,
        Ok(None) => panic!("the boot archive has no {}", initrd::INIT_BINARY),
        Err(e) => panic!("the boot archive is damaged: {e}"),
    };
    let budget = kernel::mem::free_bytes() / 8 * 7;
    let mut k = kernel::lock();
    match kernel::process::start_init(&mut k, init.data, m.start, m.end - m.start, budget) {
        Ok(_) => log::info!("init started ({} KiB budget)", budget >> 10),
        Err(e) => panic!("cannot start init: {e}"),
    }
}

fn banner(s: &System) {
    let f = &s.features;
    let online = s.cpus_online;
    let virt = match (f.vmx, f.svm) {
        (true, true) => "VMX+SVM",
        (true, false) => "VMX",
        (false, true) => "SVM",
        (false, false) => "none",
    };
    let (cpus, ioapics) = s.platform.as_ref().map_or((1, 0), |p| (p.cpus, p.ioapics));
    kprintln!(
        "Alcove {VERSION}: {cpus} CPU{} ({online} online), {} MiB memory, {ioapics} IOAPIC{}, {} CPU at {} MHz, virtualization: {virt}",
        if cpus == 1 { "" } else { "s" },
        s.free.total_bytes() >> 20,
        if ioapics == 1 { "" } else { "s" },
        core::str::from_utf8(&f.vendor).unwrap_or("?"),
        s.tsc_khz / 1000,
    );
    log::info!(
        "local APIC in {} mode, timer {}, NX {}",
        if arch::apic::x2apic() { "x2APIC" } else { "xAPIC" },
        if arch::apic::tsc_deadline() { "TSC-deadline" } else { "one-shot" },
        if f.nx { "on" } else { "absent" }
    );
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    arch::cpu::interrupts_off();
    arch::serial::with_forced(|w| {
        use core::fmt::Write;
        let _ = writeln!(w, "{} kernel panic: {}", kcore::testproto::FATAL, info);
    });
    arch::exit(Exit::Fail)
}
