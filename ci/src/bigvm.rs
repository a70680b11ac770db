//! Large VMs end to end: Debian's cloud kernel with the busybox initramfs
//! (`cargo xtask images`) boots to its init on Alcove nested in QEMU TCG
//! as a VM with many vCPUs, and as one whose RAM does not fit below the
//! PCI hole. Both go the way `cargo xtask run --vm` goes (a generated
//! `vm.json`, the manifest and budget `ci/src/vm.rs` derives from it, a
//! QEMU machine with the guest's RAM and room for Alcove), without a disk.
//!
//! The checks are what a user would look for: the VM starts, the guest
//! counts the vCPUs it was given (`alcove-guest: nproc=N`), its kernel
//! reports the RAM it was given (`Memory: .../NK available`: the VM's RAM
//! less the 384 KiB of holes below 1 MiB and the page 0 Linux keeps for
//! the BIOS; the e820 map adds up to the same plus that page) and, past
//! the PCI hole, a usable e820 range from 4 GiB holding the rest; it
//! powers off and the VMM returns every frame and capability.
//!
//! `linux/qemu-epyc-svm-32-vcpus` (256 MiB) runs in the `slow` tier for
//! now (about 40 s here; an intermittent triple fault is open); `linux/qemu-epyc-svm-4-gib` (2 vCPUs) in the `slow`
//! tier: QEMU needs about 5 GiB of host memory and the boot takes about
//! 70 s, most of it Alcove zeroing and mapping 4 GiB nested in TCG.

use crate::Result;
use crate::emu::capture_timed_answering;
use crate::guest_images::Images;
use crate::harness::Ending;
use crate::image;
use crate::vm::{self, VmPlan};
use kcore::testproto::{EXIT_PASS, qemu_status};
use std::path::Path;
use std::time::Duration;
use vmm_server::boot::layout::{FOUR_GIB, LOW_RAM_END};

/// One large-VM case.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Case {
    pub name: &'static str,
    /// The tier it runs in.
    pub tier: &'static str,
    pub vcpus: u32,
    pub ram_mib: u64,
    pub timeout: Duration,
}

/// The cases, in the order the tiers run them.
pub const CASES: [Case; 2] = [
    Case {
        name: "linux/qemu-epyc-svm-32-vcpus",
        // In the slow tier until an intermittent triple fault is found: one
        // fresh-clone run in about six ended "triple-fault" right after
        // "PCI: Using ACPI for IRQ routing" (32 vCPUs on 2 host CPUs).
        tier: "slow",
        vcpus: 32,
        ram_mib: 256,
        timeout: Duration::from_secs(400),
    },
    Case {
        name: "linux/qemu-epyc-svm-4-gib",
        tier: "slow",
        vcpus: 2,
        ram_mib: 4096,
        timeout: Duration::from_secs(900),
    },
];

pub const ALIAS: &str = "linux-big";

/// The case's VM description.
pub fn vm_json(images: &Images, case: &Case) -> String {
    serde_json::json!({
        "alias": ALIAS,
        "brand": "bhyve",
        "ram": case.ram_mib,
        "vcpus": case.vcpus,
        "kernel": images.vmlinuz.display().to_string(),
        "initrd": images.initramfs.display().to_string(),
        "cmdline": "console=ttyS0 panic=-1",
    })
    .to_string()
}

/// What the guest kernel's log says about its memory: the total of its
/// `Memory: X/YK available` line (KiB) and its usable e820 ranges.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct GuestMemory {
    pub total_kib: Option<u64>,
    /// (first, last) byte of each `BIOS-e820: [mem A-B] usable` line.
    pub usable: Vec<(u64, u64)>,
}

impl GuestMemory {
    pub fn read(serial: &str) -> Self {
        let mut g = GuestMemory::default();
        for line in serial.lines() {
            if let Some(rest) = line.split("Memory: ").nth(1)
                && let Some((_, total)) = rest.split_once('/')
            {
                g.total_kib = total.split('K').next().and_then(|n| n.parse().ok());
            }
            if let Some(rest) = line.split("BIOS-e820: [mem ").nth(1)
                && let Some((range, kind)) = rest.split_once(']')
                && kind.trim() == "usable"
                && let Some((a, b)) = range.split_once('-')
                && let (Ok(a), Ok(b)) =
                    (u64::from_str_radix(a.trim_start_matches("0x"), 16), u64::from_str_radix(b.trim_start_matches("0x"), 16))
            {
                g.usable.push((a, b));
            }
        }
        g
    }
}

/// Checks the guest's memory against the VM's `ram_mib`. Empty = as given.
pub fn check_memory(serial: &str, ram_mib: u64) -> Vec<String> {
    let g = GuestMemory::read(serial);
    let ram = ram_mib << 20;
    let mut problems = Vec::new();
    // Everything the e820 map lists as RAM: the VM's RAM less the holes
    // below 1 MiB (384 KiB). Linux counts 4 KiB less: it keeps page 0
    // for the BIOS (trim_bios_range).
    let want_kib = (ram - vmm_server::boot::layout::BELOW_1M_HOLES) / 1024;
    match g.total_kib {
        Some(k) if k == want_kib - 4 => {}
        Some(k) => problems.push(format!(
            "the guest counts {k} KiB of RAM, expected {} KiB ({ram_mib} MiB less 384 KiB of holes and page 0)",
            want_kib - 4
        )),
        None => problems.push("no \"Memory: .../NK available\" line from the guest kernel".into()),
    }
    let listed: u64 = g.usable.iter().map(|(a, b)| b + 1 - a).sum();
    if listed != want_kib * 1024 {
        problems.push(format!("the guest's usable e820 ranges add up to {listed} bytes, expected {}", want_kib * 1024));
    }
    if ram > LOW_RAM_END {
        let high = (FOUR_GIB, FOUR_GIB + ram - LOW_RAM_END - 1);
        if !g.usable.contains(&high) {
            problems.push(format!(
                "no usable e820 range {:#x}-{:#x} (the RAM above the PCI hole); the guest saw {:x?}",
                high.0, high.1, g.usable
            ));
        }
    }
    if let Some(r) = g.usable.iter().find(|(a, b)| *b >= LOW_RAM_END && *a < FOUR_GIB) {
        problems.push(format!("usable RAM {:#x}-{:#x} inside the PCI hole", r.0, r.1));
    }
    problems
}

/// One run: what `cargo xtask test` prints and whether it passed.
pub struct Outcome {
    pub problems: Vec<String>,
    pub seconds: f64,
    pub log: std::path::PathBuf,
    pub tail: Vec<String>,
}

/// Boots the case's VM on Alcove under QEMU and checks it.
/// `round` (from 1) names the log of a repeated run (`ALCOVE_TEST_REPEAT`).
pub fn run(kernel: &Path, images: &Images, case: &Case, round: u32) -> Result<Outcome> {
    let dir = crate::out_dir().join("linux-e2e").join(case.name.replace('/', "-"));
    std::fs::create_dir_all(&dir)?;
    let json_path = dir.join("vm.json");
    std::fs::write(&json_path, vm_json(images, case))?;
    let plan = VmPlan::load(&json_path)?;
    let system = plan.write_boot_files(&dir.join("boot"))?;
    let iso = image::iso_of(kernel, &format!("test-{}", case.name.replace('/', "-")), "", &system)?;
    let mut c = plan.qemu().command(&iso);
    c.args(["-monitor", "none", "-serial", "stdio"]);
    let log_name = match round {
        1 => case.name.replace('/', "-"),
        n => format!("{}-{n}", case.name.replace('/', "-")),
    };
    let t = capture_timed_answering(c, &log_name, Some(case.timeout), false, None)?;
    let run = t.run;
    let mut problems = vm::check_linux_run(&run.serial, &plan.name, case.vcpus, None, false);
    problems.extend(check_memory(&run.serial, case.ram_mib));
    if let Some(l) = run.serial.lines().find(|l| l.starts_with("ALCOVE-FATAL")) {
        problems.push(format!("the kernel reported a fatal error: {}", l.trim_end()));
    }
    match run.ending {
        Ending::Qemu(s) if s == qemu_status(EXIT_PASS) => {}
        Ending::Qemu(s) => problems.push(format!("QEMU exited with status {s} (a powered-off VM ends it with 33)")),
        Ending::Timeout(s) => problems.push(format!("timed out after {s} s")),
        other => problems.push(format!("unexpected ending {other:?}")),
    }
    let lines: Vec<&str> = run.serial.lines().collect();
    // The last lines, or from the VMM's triple-fault report on (where
    // the guest was and its last exits) if there is one.
    let from = lines
        .iter()
        .position(|l| l.contains(": triple fault at rip"))
        .map_or(lines.len().saturating_sub(12), |i| i.min(lines.len().saturating_sub(12)));
    let tail = lines[from..].iter().map(|l| l.trim_end_matches('\r').to_string()).collect();
    Ok(Outcome { problems, seconds: run.elapsed.as_secs_f64(), log: run.log.clone(), tail })
}

/// Runs the cases of the chosen tiers (`only` filters by name as
/// `--case` does); each failure's name goes into `failures`.
pub fn run_tiers(
    kernel: &Path,
    chosen: &[&str],
    only: Option<&str>,
    failures: &mut Vec<String>,
    runs: &mut usize,
) -> Result<()> {
    for case in CASES.iter().filter(|c| chosen.contains(&c.tier) && only.is_none_or(|o| c.name.contains(o))) {
        println!(
            "== {}: a large VM on Alcove ({} vCPUs, {} MiB, no disk)",
            case.tier, case.vcpus, case.ram_mib
        );
        *runs += 1;
        let images = match crate::guest_images::ensure() {
            Ok(i) => i,
            Err(e) => {
                println!("  FAIL {}: the guest images (cargo xtask images): {e}", case.name);
                crate::tiers::remember_failure(case.name, vec![format!("the guest images: {e}")]);
                failures.push(case.name.into());
                continue;
            }
        };
        for round in 1..=crate::tiers::repeat_count() {
            if round > 1 {
                *runs += 1;
                println!("   (round {round} of {})", crate::tiers::repeat_count());
            }
            let out = run(kernel, &images, case, round)?;
            if out.problems.is_empty() {
                println!(
                    "  ok   {}: nproc={}, {} MiB seen by the guest{}, powered off, everything returned; {:.1} s",
                    case.name,
                    case.vcpus,
                    case.ram_mib,
                    if case.ram_mib << 20 > LOW_RAM_END { " (from 4 GiB above the PCI hole)" } else { "" },
                    out.seconds
                );
            } else {
                println!("  FAIL {} ({:.1} s):", case.name, out.seconds);
                for p in &out.problems {
                    println!("         {p}");
                }
                for l in &out.tail {
                    println!("         | {l}");
                }
                println!("       log: {}", out.log.display());
                let tail = out.tail.iter().map(|l| format!("| {l}"));
                crate::tiers::remember_failure(case.name, out.problems.iter().cloned().chain(tail).collect());
                failures.push(case.name.into());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    const LOG_4G: &str = "\
[    0.000000] BIOS-e820: [mem 0x0000000000000000-0x000000000009ffff] usable
[    0.000000] BIOS-e820: [mem 0x00000000000e0000-0x00000000000fffff] reserved
[    0.000000] BIOS-e820: [mem 0x0000000000100000-0x00000000afffffff] usable
[    0.000000] BIOS-e820: [mem 0x00000000b0000000-0x00000000b00fffff] reserved
[    0.000000] BIOS-e820: [mem 0x0000000100000000-0x000000014fffffff] usable
[    0.688001] Memory: 2945528K/4193916K available (14343K kernel code, 2327K rwdata)
";

    #[test]
    fn the_guests_memory_lines_are_read() {
        let g = GuestMemory::read(LOG_4G);
        assert_eq!(g.total_kib, Some(4_193_916));
        assert_eq!(g.usable, [(0, 0x9ffff), (0x10_0000, 0xafff_ffff), (0x1_0000_0000, 0x1_4fff_ffff)]);
        assert_eq!(check_memory(LOG_4G, 4096), Vec::<String>::new());
    }

    /// Each way the guest can see other memory than it was given fails.
    #[test]
    fn other_memory_fails_with_the_figures() {
        let p = check_memory(LOG_4G, 2048);
        assert!(p.iter().any(|p| p.contains("counts 4193916 KiB") && p.contains("expected 2096764")), "{p:?}");
        // RAM above 4 GiB missing (as when the VMM capped RAM below the hole).
        let low_only = LOG_4G.replace("0x0000000100000000-0x000000014fffffff] usable", "0x0000000100000000-0x000000014fffffff] reserved");
        let p = check_memory(&low_only, 4096);
        assert!(p.iter().any(|p| p.contains("no usable e820 range 0x100000000-0x14fffffff")), "{p:?}");
        assert!(p.iter().any(|p| p.contains("usable e820 ranges add up")), "{p:?}");
        let in_hole = LOG_4G.replace("0x00000000b0000000-0x00000000b00fffff] reserved", "0x00000000b0000000-0x00000000b00fffff] usable");
        assert!(check_memory(&in_hole, 4096).iter().any(|p| p.contains("inside the PCI hole")));
        assert!(check_memory("", 256).iter().any(|p| p.contains("no \"Memory:")));
    }

    #[test]
    fn the_descriptions_are_valid_and_large() {
        let images = Images {
            vmlinuz: PathBuf::from("/t/vmlinuz"),
            initramfs: PathBuf::from("/t/initramfs.cpio"),
            modules: PathBuf::from("/t/modules"),
            release: "6.1".into(),
            kernel_package: "linux-image 6.1".into(),
        };
        for case in &CASES {
            let c = vmm_server::config::VmConfig::from_json(&vm_json(&images, case)).unwrap();
            assert_eq!((c.vcpus, c.ram_mib), (case.vcpus, case.ram_mib));
            assert!(c.disks.is_empty());
        }
        assert!(CASES.iter().any(|c| c.vcpus >= 32));
        assert!(CASES.iter().any(|c| c.ram_mib << 20 > LOW_RAM_END && c.ram_mib >= 4096));
    }
}
