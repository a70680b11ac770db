//! The Alcove microkernel: entry from the boot path (arch/x86_64/boot.s) to a
//! running system.
//!
//! `kmain` brings up the bootstrap CPU, reads what the bootloader handed over,
//! discovers the platform through ACPI, prints the banner, and then either runs
//! the system-test suite named on the command line (`alcove.test=NAME`) or
//! idles.
#![no_std]
#![no_main]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

extern crate alloc;

#[macro_use]
mod arch;
mod bootinfo;
mod heap;
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
}

#[unsafe(no_mangle)]
extern "C" fn kmain(magic: u32, info_phys: u64) -> ! {
    arch::time::mark_entry();
    arch::serial::init();
    klog::init();
    arch::init_bsp();
    let tsc_khz = arch::time::calibrate();

    let boot = match bootinfo::read(magic, info_phys) {
        Ok(b) => b,
        Err(e) => panic!("boot: {e}"),
    };
    heap::init();

    let cmdline = CmdLine::new(boot.cmdline);
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
    let system = System { boot, free, platform, features, tsc_khz };
    banner(&system);
    let init_ticks = arch::time::ticks_since_entry() - arch::time::calibration_ticks();

    match cmdline.get("alcove.test") {
        Some(suite) => {
            let ok = ktest::run(suite, &system, init_ticks);
            arch::exit(if ok { Exit::Pass } else { Exit::Fail })
        }
        None => {
            log::info!("ready; nothing more to do yet, halting (in QEMU: Ctrl-A X leaves)");
            arch::cpu::halt_forever()
        }
    }
}

fn banner(s: &System) {
    let f = &s.features;
    let virt = match (f.vmx, f.svm) {
        (true, true) => "VMX+SVM",
        (true, false) => "VMX",
        (false, true) => "SVM",
        (false, false) => "none",
    };
    let (cpus, ioapics) = s.platform.map_or((1, 0), |p| (p.cpus, p.ioapics));
    kprintln!(
        "Alcove {VERSION}: {cpus} CPU{}, {} MiB memory, {ioapics} IOAPIC{}, {} CPU at {} MHz, virtualization: {virt}",
        if cpus == 1 { "" } else { "s" },
        s.free.total_bytes() >> 20,
        if ioapics == 1 { "" } else { "s" },
        core::str::from_utf8(&f.vendor).unwrap_or("?"),
        s.tsc_khz / 1000,
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
