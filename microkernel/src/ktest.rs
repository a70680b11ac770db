//! In-kernel system tests, selected with `alcove.test=SUITE` on the command
//! line and reported in the `kcore::testproto` format over serial.
//!
//! Suites:
//! * `boot`  — what the boot path promises: higher half, traps, memory map,
//!   heap, boot archive, ACPI/MADT, TSC.
//! * `fault` — deliberately touches unmapped memory; the harness's own test
//!   uses it to prove a faulting kernel fails the run.
//! * `panic` — deliberately panics, for the same reason.
//! * `hang` — never finishes, for the harness's timeout.
//! * `bench` — path lengths for `cargo xtask bench`, printed as
//!   `ALCOVE-BENCH <name> <value> <unit>`; meaningful under QEMU's
//!   `-icount shift=0`, where a TSC delta counts instructions.

use crate::System;
use crate::arch;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write;
use core::sync::atomic::{AtomicU64, Ordering};
use kcore::cmdline::CmdLine;
use kcore::testproto::PREFIX;

type TestFn = fn(&System) -> Result<(), String>;

const BOOT: &[(&str, TestFn)] = &[
    ("higher_half", higher_half),
    ("trap_returns", trap_returns),
    ("memory_map", memory_map),
    ("heap", heap),
    ("boot_archive", boot_archive),
    ("acpi_madt", acpi_madt),
    ("smp_online", smp_online),
    ("caches_on_every_cpu", caches_on_every_cpu),
    ("tsc", tsc),
    ("nmi_on_user_gs", nmi_on_user_gs),
];

const BENCH: &[(&str, TestFn)] = &[("kernel_init", bench_kernel_init), ("trap_roundtrip", bench_trap_roundtrip)];

static INIT_TICKS: AtomicU64 = AtomicU64::new(0);

/// Runs a suite; true when every test passed.
pub fn run(suite: &str, system: &System, init_ticks: u64) -> bool {
    INIT_TICKS.store(init_ticks, Ordering::Relaxed);
    let tests: &[(&str, TestFn)] = match suite {
        "boot" => BOOT,
        "bench" => BENCH,
        "fault" => &[("deliberate_page_fault", deliberate_page_fault)],
        "panic" => &[("deliberate_panic", deliberate_panic)],
        "hang" => &[("deliberate_hang", deliberate_hang)],
        other => {
            kprintln!("{PREFIX} suite {other} 0");
            kprintln!("{PREFIX} fail no_such_suite there is no test suite named \"{other}\"");
            kprintln!("{PREFIX} end 0 1");
            return false;
        }
    };
    kprintln!("{PREFIX} suite {suite} {}", tests.len());
    let (mut passed, mut failed) = (0, 0);
    for (name, test) in tests {
        kprintln!("{PREFIX} run {name}");
        match test(system) {
            Ok(()) => {
                passed += 1;
                kprintln!("{PREFIX} ok {name}");
            }
            Err(why) => {
                failed += 1;
                kprintln!("{PREFIX} fail {name} {why}");
            }
        }
    }
    kprintln!("{PREFIX} end {passed} {failed}");
    failed == 0
}

fn check(cond: bool, why: impl FnOnce() -> String) -> Result<(), String> {
    if cond { Ok(()) } else { Err(why()) }
}

fn higher_half(_: &System) -> Result<(), String> {
    let code = higher_half as *const () as u64;
    let local = 0u64;
    let stack = &local as *const u64 as u64;
    check(code >= arch::KERNEL_VMA, || alloc::format!("code runs at {code:#x}, below the higher half"))?;
    check(stack >= arch::KERNEL_VMA, || alloc::format!("stack at {stack:#x}, below the higher half"))
}

fn trap_returns(_: &System) -> Result<(), String> {
    let before = arch::trap::BREAKPOINTS.load(Ordering::Relaxed);
    arch::cpu::breakpoint();
    arch::cpu::breakpoint();
    let after = arch::trap::BREAKPOINTS.load(Ordering::Relaxed);
    check(after == before + 2, || alloc::format!("2 breakpoints, {} trapped", after - before))
}

fn memory_map(s: &System) -> Result<(), String> {
    let total = s.free.total_bytes();
    check(total >= 16 << 20, || alloc::format!("only {total} bytes free"))?;
    let (ks, ke) = arch::kernel_phys_range();
    for &(start, end) in s.free.ranges() {
        check(end <= ks || start >= ke, || alloc::format!("free range {start:#x}..{end:#x} overlaps the kernel"))?;
        for m in &s.boot.modules {
            check(end <= m.start || start >= m.end, || {
                alloc::format!("free range {start:#x}..{end:#x} overlaps module {}", m.name)
            })?;
        }
        check(start % 4096 == 0 && end % 4096 == 0, || alloc::format!("{start:#x}..{end:#x} not page-aligned"))?;
    }
    // If the harness says how much memory the machine has (`-m`), the free map
    // plus what the kernel image and the boot modules hold must come within
    // 16 MiB below it (the firmware's own reservations take the rest), so
    // memory the map loses shows, however large the boot archive grows.
    if let Some(mib) = CmdLine::new(s.boot.cmdline).get("alcove.expect_mem_mib").and_then(|v| v.parse::<u64>().ok()) {
        let free_mib = total >> 20;
        let held = (ke - ks) + s.boot.modules.iter().map(|m| m.end - m.start).sum::<u64>();
        let held_mib = held.div_ceil(1 << 20);
        check(free_mib <= mib && free_mib + held_mib + 16 >= mib, || {
            alloc::format!("{free_mib} MiB free, {held_mib} MiB held by the kernel and boot modules, on a {mib} MiB machine")
        })?;
    }
    Ok(())
}

fn heap(_: &System) -> Result<(), String> {
    let before = crate::heap::used();
    {
        let v: Vec<u64> = (0..128 * 1024).map(|i| i * 7).collect();
        check(v.iter().enumerate().all(|(i, &x)| x == i as u64 * 7), || "heap memory did not hold".into())?;
        check(crate::heap::used() >= before + v.len() * 8, || "allocation not accounted".into())?;
    }
    let after = crate::heap::used();
    check(after == before, || alloc::format!("{} bytes leaked", after - before))
}

fn boot_archive(s: &System) -> Result<(), String> {
    let m = s.boot.modules.first().ok_or_else(|| String::from("no boot module"))?;
    let va = arch::phys_to_virt(m.start, m.end - m.start).ok_or_else(|| String::from("module above 4 GiB"))?;
    // SAFETY: the module lies in the direct map and is excluded from the free
    // map, so nothing else writes it.
    let bytes = unsafe { core::slice::from_raw_parts(va as *const u8, (m.end - m.start) as usize) };
    let archive = initrd::Archive::new(bytes);
    let n = archive.validate().map_err(|e| alloc::format!("boot archive: {e}"))?;
    let manifest = archive
        .find("manifest.toml")
        .map_err(|e| alloc::format!("{e}"))?
        .ok_or_else(|| String::from("boot archive has no manifest.toml"))?;
    let text = core::str::from_utf8(manifest.data).map_err(|_| String::from("manifest is not UTF-8"))?;
    check(text.contains("[system]"), || "manifest has no [system] table".into())?;
    log::info!("boot archive: {n} files, manifest {} bytes", manifest.data.len());
    Ok(())
}

fn acpi_madt(s: &System) -> Result<(), String> {
    let p = s.platform.as_ref().ok_or_else(|| String::from("no ACPI platform information"))?;
    check(p.cpus >= 1, || "MADT lists no CPU".into())?;
    check(p.ioapics >= 1, || "MADT lists no IOAPIC".into())?;
    check(p.local_apic_address != 0, || "no local APIC address".into())?;
    if let Some(want) = CmdLine::new(s.boot.cmdline).get("alcove.expect_cpus") {
        let mut got = String::new();
        let _ = write!(got, "{}", p.cpus);
        check(got == want, || alloc::format!("MADT lists {got} CPUs, the machine has {want}"))?;
    }
    Ok(())
}

fn tsc(s: &System) -> Result<(), String> {
    check(s.tsc_khz >= 10_000, || alloc::format!("TSC at {} kHz is implausible", s.tsc_khz))?;
    let a = arch::time::nanos_since_boot();
    arch::time::spin_us(100);
    let b = arch::time::nanos_since_boot();
    check(b >= a + 100_000, || alloc::format!("100 us spin took {} ns", b - a))
}

fn deliberate_page_fault(_: &System) -> Result<(), String> {
    // PML4 slot 128 is never mapped.
    let p = 0x0000_4000_0000_1000u64 as *mut u64;
    // SAFETY: this is meant to fault; the fault handler stops the machine.
    unsafe { p.write_volatile(0xdead) };
    Err("writing unmapped memory did not fault".into())
}

fn deliberate_panic(_: &System) -> Result<(), String> {
    let v: Vec<u32> = Vec::new();
    let i = core::hint::black_box(3);
    Err(alloc::format!("indexing past the end did not panic: {}", v[i]))
}

fn bench_kernel_init(_: &System) -> Result<(), String> {
    let ticks = INIT_TICKS.load(Ordering::Relaxed);
    check(ticks > 0, || "no kernel-init figure".into())?;
    kprintln!("ALCOVE-BENCH kernel_entry_to_banner {ticks} instructions");
    Ok(())
}

fn bench_trap_roundtrip(_: &System) -> Result<(), String> {
    const N: u64 = 1000;
    let before = arch::trap::BREAKPOINTS.load(Ordering::Relaxed);
    let t0 = arch::cpu::rdtsc();
    for _ in 0..N {
        arch::cpu::breakpoint();
    }
    let t1 = arch::cpu::rdtsc();
    let taken = arch::trap::BREAKPOINTS.load(Ordering::Relaxed) - before;
    check(taken == N, || alloc::format!("{N} breakpoints, {taken} trapped"))?;
    kprintln!("ALCOVE-BENCH trap_roundtrip {} instructions", (t1 - t0) / N);
    Ok(())
}

/// An NMI that arrives in ring 0 while the user's GS base is loaded (the
/// first instructions of a system call, the last of a return to ring 3) is
/// handled with the kernel's GS: the handler counts it in its per-CPU data
/// and the CPU goes on. trap.s used to choose by the interrupted CS, which
/// says ring 0 there, and ran the handler on the user's GS base.
fn nmi_on_user_gs(_: &System) -> Result<(), String> {
    use arch::trap::{NMIS, NMIS_ON_USER_GS};
    let mine = || arch::percpu::this().nmis.load(Ordering::SeqCst);
    let (all, on_user, here) = (NMIS.load(Ordering::SeqCst), NMIS_ON_USER_GS.load(Ordering::SeqCst), mine());
    let arrived = arch::trap::nmi_with_user_gs(arch::apic::id());
    check(arrived, || "the NMI sent to this CPU never reached the handler".into())?;
    check(NMIS.load(Ordering::SeqCst) == all + 1, || alloc::format!("{} NMIs counted, 1 sent", NMIS.load(Ordering::SeqCst) - all))?;
    check(mine() == here + 1, || "the NMI was not counted in this CPU's data".into())?;
    check(NMIS_ON_USER_GS.load(Ordering::SeqCst) == on_user + 1, || "the handler did not see the user's GS base live".into())?;
    // And the kernel's GS is back: per-CPU data reads as this CPU's.
    check(arch::percpu::this().apic_id.load(Ordering::SeqCst) == arch::apic::id(), || "GS does not point at this CPU's data after the NMI".into())
}

fn smp_online(s: &System) -> Result<(), String> {
    let p = s.platform.as_ref().ok_or_else(|| String::from("no ACPI platform information"))?;
    check(s.cpus_online == p.cpus as usize, || {
        alloc::format!("{} of the {} CPUs in the MADT came online", s.cpus_online, p.cpus)
    })
}

/// Every online CPU runs with caching on (CR0.CD and NW clear): an AP
/// leaves INIT with both set, and on hardware that CPU would run uncached.
fn caches_on_every_cpu(s: &System) -> Result<(), String> {
    const CD_NW: u64 = (1 << 30) | (1 << 29);
    let mut bad = Vec::new();
    for cpu in 0..s.cpus_online {
        let cr0 = arch::percpu::of(cpu).cr0_at_start.load(Ordering::Relaxed);
        if cr0 & CD_NW != 0 || cr0 & 1 == 0 {
            bad.push(alloc::format!("CPU {cpu}: CR0 {cr0:#x}"));
        }
    }
    check(bad.is_empty(), || alloc::format!("caching off (CR0.CD or NW set) or CR0 never recorded: {}", bad.join(", ")))
}

fn deliberate_hang(_: &System) -> Result<(), String> {
    arch::cpu::halt_forever()
}
