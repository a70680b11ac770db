//! A Linux VM whose disk is a pool volume (issue 12), end to end.
//!
//! `linux/pool-volume` (the `linux` tier): the QEMU machine's one drive is
//! a blank pool file, where storaged creates the pool `zones` at the first
//! boot. The VM's description has a disk without a path and with a `size`:
//! at boot init creates the volume `zones/<uuid>-disk0` and hands the VMM a
//! grant for exactly it. The guest writes random data to the volume
//! (`alcove.disk-write`, see `images/linux/init`: fsync, sync) and powers
//! off. The Alcove machine is then started again on the same pool file and
//! a second boot of the guest reads the data back (`alcove.disk-read`): the
//! same hash. Last, the host imports the pool file with the pool library
//! (as `alcove-pool` does), scrubs it (no errors) and hashes the volume
//! itself.
//!
//! `bench/linux-disk` (`cargo xtask bench`): the guest's sequential write
//! and read throughput on a pool volume and on a whole machine disk, in
//! the same run, timed on the host between the guest's start and result
//! lines (their arrival on the serial port); rounds of a pool boot and a
//! disk boot back to back, medians reported (the machine is shared: one
//! pair alone swung 5x between runs).

use crate::Result;
use crate::bench::Figure;
use crate::emu::{TimedRun, capture_timed_answering};
use crate::guest_images::Images;
use crate::harness::Ending;
use crate::image;
use crate::vm::{VmEnding, VmLog, VmPlan};
use kcore::testproto::{EXIT_PASS, qemu_status};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

pub const CASE: &str = "linux/pool-volume";
/// The VM's uuid: its volume is `zones/<UUID>-disk0`.
pub const UUID: &str = "5e1f0c2a-7b3d-4e9f-a1c2-3d4e5f6a7b8c";
/// The volume's size (`disks[0].size`).
pub const VOLUME_MIB: u64 = 32;
/// Random data the guest writes and reads back.
pub const DATA_MIB: u64 = 8;
/// The pool file (sparse).
pub const POOL_MIB: u64 = 256;
const MIB: u64 = 1 << 20;

/// The volume the test VM's disk is.
pub fn volume() -> String {
    format!("zones/{UUID}-disk0")
}

fn json_string(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

/// The VM description: `disk` is the `disks[0]` object, `words` go on the
/// guest's command line.
pub fn vm_json(images: &Images, alias: &str, disk: &str, words: &str) -> String {
    format!(
        "{{\n  \"uuid\": \"{UUID}\",\n  \"alias\": \"{alias}\",\n  \"brand\": \"bhyve\",\n  \"ram\": {},\n  \
         \"vcpus\": {},\n  \"disks\": [{disk}],\n  \"kernel\": {},\n  \"initrd\": {},\n  \
         \"cmdline\": \"console=ttyS0 panic=-1 {words}\"\n}}\n",
        crate::linux::RAM_MIB,
        crate::linux::VCPUS,
        json_string(&images.vmlinuz.display().to_string()),
        json_string(&images.initramfs.display().to_string()),
    )
}

/// One boot of the Alcove machine with the VM, and what went wrong.
pub struct Boot {
    pub timed: TimedRun,
    pub plan: VmPlan,
    pub problems: Vec<String>,
}

impl Boot {
    fn serial(&self) -> &str {
        &self.timed.run.serial
    }

    /// The hash on the guest's `alcove-guest: disk-<what> <MiB> <hash>`.
    pub fn hash(&self, what: &str) -> Option<String> {
        let prefix = format!("alcove-guest: disk-{what} {DATA_MIB} ");
        self.serial().lines().find_map(|l| {
            let h = l.trim_end().strip_prefix(&prefix)?;
            (h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit())).then(|| h.to_string())
        })
    }

    /// Seconds from the guest's `disk-<what> start` line to its result.
    pub fn seconds(&self, what: &str) -> Option<f64> {
        let start = self.timed.time_of(&format!("alcove-guest: disk-{what} start"))?;
        let done = self.timed.time_of(&format!("alcove-guest: disk-{what} {DATA_MIB} "))?;
        Some(done.checked_sub(start)?.as_secs_f64())
    }

    /// Nanoseconds the guest's own clock gave its `disk-<what>`.
    pub fn guest_ns(&self, what: &str) -> Option<u64> {
        guest_ns(self.serial(), what)
    }

    /// Seconds of `disk-<what>` by `clock`.
    fn seconds_by(&self, clock: BenchClock, what: &str) -> Option<f64> {
        match clock {
            BenchClock::Wall => self.seconds(what),
            BenchClock::Icount => self.guest_ns(what).filter(|&ns| ns > 0).map(|ns| ns as f64 / 1e9),
        }
    }
}

/// The nanoseconds on the guest's `alcove-guest: disk-<what> guest-ns <ns>`
/// line (`images/linux/init`: its CLOCK_MONOTONIC around the dd).
pub fn guest_ns(serial: &str, what: &str) -> Option<u64> {
    let prefix = format!("alcove-guest: disk-{what} guest-ns ");
    serial.lines().find_map(|l| l.trim_end().strip_prefix(&prefix)?.parse().ok())
}

/// The guest's idle time around its `disk-<what>` (`images/linux/init`'s
/// `alcove-guest: disk-<what> guest-idle-ns <span> <idle cpu0> ...`): the
/// span between its two snapshots of `/proc/timer_list` (just outside the
/// dd's clock) and each CPU's idle nanoseconds in it. None without such a
/// line, a number, or a CPU, or with a CPU idle longer than the span.
pub fn guest_idle(serial: &str, what: &str) -> Option<(u64, Vec<u64>)> {
    let prefix = format!("alcove-guest: disk-{what} guest-idle-ns ");
    let line = serial.lines().find_map(|l| l.trim_end().strip_prefix(&prefix).map(str::to_string))?;
    let mut n = line.split_whitespace().map(|w| w.parse::<u64>().ok());
    let span = n.next()??;
    let idle = n.collect::<Option<Vec<u64>>>()?;
    (!idle.is_empty() && idle.iter().all(|&i| i <= span)).then_some((span, idle))
}

/// The guest's busy nanoseconds around its `disk-<what>`: every CPU's
/// share of [`guest_idle`]'s span that it was not idle (under icount,
/// instructions of the whole machine while a guest CPU ran, VM exits
/// included).
pub fn guest_busy_ns(serial: &str, what: &str) -> Option<u64> {
    let (span, idle) = guest_idle(serial, what)?;
    Some(idle.iter().map(|i| span - i).sum())
}

/// storaged's serving time of a ring, by its close line (`ring N closed
/// (... ; K kicks served in T us)`): (kicks, microseconds). The first such
/// line counts; None without one.
pub fn storaged_served(serial: &str) -> Option<(u64, u64)> {
    serial.lines().find_map(|l| {
        let rest = l.split_once("kicks served in ")?;
        let us = rest.1.trim_end().strip_suffix(" us)")?.parse().ok()?;
        let kicks = rest.0.trim_end().rsplit([' ', ';', '(']).next()?.parse().ok()?;
        Some((kicks, us))
    })
}

/// The plan and the QEMU command (serial on its stdout) for the VM
/// `json` describes, its disks host files in `dir` or pool volumes on
/// `pool`.
fn machine(kernel: &Path, dir: &Path, log_name: &str, json: &str, pool: &[PathBuf]) -> Result<(VmPlan, Command)> {
    machine_on(kernel, dir, log_name, json, pool, &[])
}

/// As [`machine`], with `qemu_args` added to QEMU's command line.
fn machine_on(
    kernel: &Path,
    dir: &Path,
    log_name: &str,
    json: &str,
    pool: &[PathBuf],
    qemu_args: &[&str],
) -> Result<(VmPlan, Command)> {
    std::fs::create_dir_all(dir)?;
    let json_path = dir.join(format!("{log_name}.json"));
    std::fs::write(&json_path, json)?;
    let mut plan = VmPlan::load(&json_path)?;
    if plan.has_volumes() {
        plan = plan.with_pool(pool, POOL_MIB)?;
    }
    let system = plan.write_boot_files(&dir.join(format!("boot-{log_name}")))?;
    let iso = image::iso_of(kernel, &format!("test-{log_name}"), "", &system)?;
    let mut qemu = plan.qemu();
    qemu.extra.extend(qemu_args.iter().map(|a| a.to_string()));
    let mut c = qemu.command(&iso);
    c.args(["-monitor", "none", "-serial", "stdio"]);
    Ok((plan, c))
}

/// Boots Alcove with the VM `json` describes (its disks host files in
/// `dir`, or pool volumes on `pool`) and checks that it powered off.
pub fn boot(kernel: &Path, dir: &Path, log_name: &str, json: &str, pool: &[PathBuf], timeout: Duration) -> Result<Boot> {
    boot_on(kernel, dir, log_name, json, pool, timeout, &[])
}

/// As [`boot`], with `qemu_args` added to QEMU's command line.
fn boot_on(
    kernel: &Path,
    dir: &Path,
    log_name: &str,
    json: &str,
    pool: &[PathBuf],
    timeout: Duration,
    qemu_args: &[&str],
) -> Result<Boot> {
    let (plan, c) = machine_on(kernel, dir, log_name, json, pool, qemu_args)?;
    let timed = capture_timed_answering(c, log_name, Some(timeout), false, None)?;
    let mut problems = Vec::new();
    let run = &timed.run;
    let log = VmLog::read(run.serial.lines(), &plan.name);
    problems.extend(log.problems.iter().cloned());
    match log.ending() {
        Some(VmEnding::PowerOff) => {}
        Some(e) => problems.push(format!("the VM ended with {e:?}, expected poweroff")),
        None => problems.push("the VM reported no ending".into()),
    }
    if let Some(l) = run.serial.lines().find(|l| l.starts_with("ALCOVE-FATAL")) {
        problems.push(format!("the kernel reported a fatal error: {}", l.trim_end()));
    }
    match run.ending {
        Ending::Qemu(s) if s == qemu_status(EXIT_PASS) => {}
        Ending::Timeout(s) => problems.push(format!("timed out after {s} s")),
        ref e => problems.push(format!("the machine ended with {e:?} (a powered-off VM ends QEMU with 33)")),
    }
    Ok(Boot { timed, plan, problems })
}

/// init's line for the VMM's grant: `server "NAME": volumes ... granted`.
fn grant_line<'a>(serial: &'a str, server: &str) -> Option<&'a str> {
    let needle = format!("server \"{server}\": volumes ");
    serial.lines().find(|l| l.contains(&needle) && l.contains(" granted ("))
}

/// The pool file as the host sees it after the runs: imports, scrubs
/// clean, and the volume's first [`DATA_MIB`] MiB hash to `expected`.
pub fn check_pool_file(files: &[PathBuf], expected: &str) -> std::result::Result<String, String> {
    use alcove_pool::Pool;
    use alcove_pool::disk::FileDisk;
    let disks = files
        .iter()
        .map(|f| FileDisk::open(f).map_err(|e| format!("{}: {e}", f.display())))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let mut pool = Pool::import(disks).map_err(|e| format!("the pool does not import: {e}"))?;
    let report = pool.scrub().map_err(|e| format!("scrub: {e}"))?;
    let errors: u64 = pool.child_stats().iter().map(|s| s.read_errors + s.write_errors + s.checksum_errors).sum();
    let repaired: u64 = pool.child_stats().iter().map(|s| s.repaired_bytes).sum();
    if errors != 0 || !report.errors.is_empty() || repaired != 0 || pool.state() != "ONLINE" {
        return Err(format!("scrub found {errors} errors, repaired {repaired} bytes, pool {}", pool.state()));
    }
    let vol = volume();
    let info = pool.get(&vol).map_err(|e| format!("{vol}: {e}"))?;
    if info.volsize != VOLUME_MIB * MIB {
        return Err(format!("{vol}: volsize {} bytes, expected {} MiB", info.volsize, VOLUME_MIB));
    }
    let mut data = vec![0u8; (DATA_MIB * MIB) as usize];
    pool.read(&vol, 0, &mut data).map_err(|e| format!("{vol}: read: {e}"))?;
    let hash: String = Sha256::digest(&data).iter().map(|b| format!("{b:02x}")).collect();
    if hash != expected {
        return Err(format!("{vol} read on the host hashes to {hash}, the guest wrote {expected}"));
    }
    Ok(format!("scrub of txg {}: {} blocks, no errors", report.txg, report.blocks))
}

/// `linux/pool-volume`: write on one boot, read back after the machine
/// is started again on the same pool file, check the file on the host.
pub fn run(kernel: &Path, images: &Images, name: &str, timeout: Duration) -> Result<crate::linux::Outcome> {
    let dir = crate::out_dir().join("linux-e2e").join(name.replace('/', "-"));
    std::fs::create_dir_all(&dir)?;
    let pool = vec![dir.join("pool.img")];
    let _ = std::fs::remove_file(&pool[0]);
    let log = name.replace('/', "-");
    let disk = format!("{{\"size\": {VOLUME_MIB}, \"model\": \"virtio\"}}");
    let write = vm_json(images, "linux-pool", &disk, &format!("alcove.disk-write={DATA_MIB}"));
    let first = boot(kernel, &dir, &format!("{log}-write"), &write, &pool, timeout)?;
    let mut total = first.timed.run.elapsed;
    let mut problems: Vec<String> = first.problems.iter().map(|p| format!("boot 1: {p}")).collect();
    let vol = volume();
    match grant_line(first.serial(), &first.plan.server) {
        Some(l) if l.contains(&format!("created {vol}")) => {}
        other => problems.push(format!("boot 1: init did not report creating and granting {vol}: {other:?}")),
    }
    let written = first.hash("write");
    if written.is_none() {
        problems.push("boot 1: the guest reported no disk-write hash".into());
    }
    let mut second = None;
    if problems.is_empty() {
        let read = vm_json(images, "linux-pool", &disk, &format!("alcove.disk-read={DATA_MIB}"));
        let b = boot(kernel, &dir, &format!("{log}-read"), &read, &pool, timeout)?;
        total += b.timed.run.elapsed;
        problems.extend(b.problems.iter().map(|p| format!("boot 2: {p}")));
        match grant_line(b.serial(), &b.plan.server) {
            Some(l) if !l.contains("created") => {}
            other => problems.push(format!("boot 2: init did not grant the existing {vol} alone: {other:?}")),
        }
        match (b.hash("read"), &written) {
            (Some(r), Some(w)) if &r == w => {}
            (r, w) => problems.push(format!("boot 2: the guest read {r:?}, it had written {w:?}")),
        }
        second = Some(b);
    }
    // A VM naming a volume the pool lacks (and nothing to make it from):
    // init says why, the VMM ends with an error naming its disk, nothing
    // panics, and the pool is left as it was.
    if problems.is_empty() {
        let missing = vm_json(images, "linux-pool", "{\"path\": \"zones/absent-disk0\"}", "");
        let b = boot(kernel, &dir, &format!("{log}-absent"), &missing, &pool, timeout)?;
        total += b.timed.run.elapsed;
        let serial = b.serial();
        let why = "volume zones/absent-disk0: no such volume in the pool, and no size or image to create it from";
        if !serial.lines().any(|l| l.contains("init: server \"vm-linux-pool\": ") && l.contains(why)) {
            problems.push(format!("absent volume: init did not say {why:?}"));
        }
        match VmLog::read(serial.lines(), &b.plan.name).ending() {
            Some(VmEnding::Error(e)) if e.contains("disks[0]") && e.contains("no storaged endpoint") => {}
            other => problems.push(format!("absent volume: the VM ended with {other:?}, expected an error naming disks[0]")),
        }
        if serial.contains("panic in ") || serial.contains("ALCOVE-FATAL") {
            problems.push("absent volume: something panicked".into());
        }
    }
    let mut summary = None;
    if problems.is_empty() {
        let written = written.clone().unwrap_or_default();
        match check_pool_file(&pool, &written) {
            Ok(scrub) => {
                summary = Some(format!(
                    "{DATA_MIB} MiB of random data written to {vol} (created at boot 1, {VOLUME_MIB} MiB), read back \
                     with the same sha256 after the machine restarted on the same pool file; a VM naming an absent \
                     volume ended with an error naming its disk; on the host the pool imports, {scrub}, the volume \
                     hashes the same"
                ))
            }
            Err(e) => problems.push(format!("{}: {e}", pool[0].display())),
        }
    }
    Ok(outcome(name, second.unwrap_or(first), total, problems, summary))
}

/// A case's outcome from its last boot; the reported time is the whole
/// case's (every boot's).
fn outcome(name: &str, last: Boot, total: Duration, problems: Vec<String>, summary: Option<String>) -> crate::linux::Outcome {
    let mut run = last.timed.run.clone();
    run.elapsed = total;
    crate::linux::Outcome {
        name: name.into(),
        run,
        timed: Some(last.timed),
        vm_name: last.plan.name,
        problems,
        disk_checked: true,
        vcpus: crate::linux::VCPUS,
        summary,
    }
}

/// How a `bench/linux-disk*` run times the guest's write and read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BenchClock {
    /// `bench/linux-disk`: host wall time between the arrival of the
    /// guest's start and result lines on the serial port.
    Wall,
    /// `bench/linux-disk-icount`: QEMU runs with [`ICOUNT_ARGS`], and the
    /// guest's own clock around its dd is read (its `guest-ns` line): a
    /// virtual nanosecond is one instruction executed by the whole machine
    /// (the guest, Alcove's kernel, vmm-server, storaged), host load
    /// and host I/O latency left out.
    Icount,
}

/// QEMU's `-icount` for [`BenchClock::Icount`]: `shift=0` makes one
/// instruction one virtual nanosecond; `sleep=off` makes the virtual clock
/// jump to the next timer deadline when every vCPU is idle instead of
/// following the host's clock meanwhile (QEMU's `icount_start_warp_timer`),
/// so that the time the host takes (its load, QEMU's own file I/O) does
/// not enter the guest's clock.
pub const ICOUNT_ARGS: [&str; 2] = ["-icount", "shift=0,sleep=off"];

/// `bench/linux-disk` (`clock` [`BenchClock::Wall`]) and
/// `bench/linux-disk-icount` ([`BenchClock::Icount`]): boots writing then
/// reading [`DATA_MIB`] MiB on a pool volume and on a whole machine disk,
/// in [`bench_rounds`] rounds of one pool boot and one disk boot back to
/// back (A/B interleaved, so both sides of a round see about the same load
/// on a shared machine). The figures are medians: MB/s of each side (under
/// icount MB per virtual second, `MB/vs`: per 10^9 instructions), and the
/// ratio of each round's pair; `_min`/`_max` give the spread of the
/// ratios. Under icount the figures' names carry `_icount`, and the
/// medians of the guest's own nanoseconds are given too. Returns the
/// figures and the problems.
pub fn bench(kernel: &Path, images: &Images, timeout: Duration, clock: BenchClock) -> Result<(Vec<Figure>, Vec<String>)> {
    let (name, qemu_args, unit, tag): (&str, &[&str], &str, &str) = match clock {
        BenchClock::Wall => ("bench-linux-disk", &[], "MB/s", ""),
        BenchClock::Icount => ("bench-linux-disk-icount", &ICOUNT_ARGS, "MB/vs", "_icount"),
    };
    let dir = crate::out_dir().join("linux-e2e").join(name);
    std::fs::create_dir_all(&dir)?;
    let pool = vec![dir.join("pool.img")];
    let raw = dir.join("raw.img");
    // With `ALCOVE_DISK_BENCH_CPU=N` the dd runs on the guest's CPU N in
    // every boot (`alcove.disk-cpu`): where the guest's scheduler puts it
    // varies between boots, and with it the instructions around it
    // (session 19: a pool read 2.8 M dearer with the dd on CPU 0 than on
    // CPU 1 in the same run, by the guest-idle lines).
    let pin = match std::env::var("ALCOVE_DISK_BENCH_CPU").ok().and_then(|v| v.parse::<u32>().ok()) {
        Some(cpu) if cpu < crate::linux::VCPUS => format!(" alcove.disk-cpu={cpu}"),
        _ => String::new(),
    };
    let words = format!("alcove.disk-write={DATA_MIB} alcove.disk-read={DATA_MIB}{pin}");
    let on_pool = vm_json(images, "disk-bench", &format!("{{\"size\": {VOLUME_MIB}}}"), &words);
    let on_raw = vm_json(images, "disk-bench", "{\"path\": \"raw.img\"}", &words);
    let mut figures = Vec::new();
    let mut problems = Vec::new();
    let rounds = bench_rounds();
    // Per side: write and read MB/s of each round; per round: the ratios.
    let mut rates: [Vec<(f64, f64)>; 2] = [Vec::new(), Vec::new()];
    let mut ratios: Vec<(f64, f64)> = Vec::new();
    // Per round: the ratios, or None for a round that gave none.
    let mut by_round: Vec<Option<(f64, f64)>> = Vec::new();
    // Per side, under icount: the guest's nanoseconds of each round.
    let mut guest: [Vec<(u64, u64)>; 2] = [Vec::new(), Vec::new()];
    // storaged's checksum time per byte (its meter line), each pool boot.
    let mut checksum: Vec<f64> = Vec::new();
    // Per side and direction: the guest's busy nanoseconds each round; per
    // side: storaged's serving microseconds each round.
    let mut busy_ns: [[Vec<f64>; 2]; 2] = Default::default();
    let mut served_us: [Vec<f64>; 2] = Default::default();
    for round in 0..rounds {
        // A fresh pool and disk each round: every round does the same work.
        let _ = std::fs::remove_file(&pool[0]);
        let _ = std::fs::remove_file(&raw);
        std::fs::File::create(&raw)?.set_len(VOLUME_MIB * MIB)?;
        let mut pair = Vec::new();
        for (side, (what, json)) in [("pool", &on_pool), ("disk", &on_raw)].into_iter().enumerate() {
            let log_name = format!("{name}-{what}-{round}");
            let b = boot_on(kernel, &dir, &log_name, json, &pool, timeout, qemu_args)?;
            problems.extend(b.problems.iter().map(|p| format!("{what} (round {round}): {p}")));
            if b.hash("write").is_none() || b.hash("write") != b.hash("read") {
                problems.push(format!("{what} (round {round}): the guest read back {:?}, wrote {:?}", b.hash("read"), b.hash("write")));
            }
            if clock == BenchClock::Icount
                && let (Some(w), Some(r)) = (b.guest_ns("write"), b.guest_ns("read"))
            {
                println!("round {round} {what}: guest clock write {w} ns, read {r} ns");
                guest[side].push((w, r));
            }
            // Where the time went: the guest's CPUs busy (under icount the
            // machine's instructions while a guest CPU ran), and storaged
            // serving the ring's kicks.
            for dir_name in ["write", "read"] {
                if let (Some((span, idle)), Some(busy)) = (guest_idle(b.serial(), dir_name), guest_busy_ns(b.serial(), dir_name)) {
                    println!("round {round} {what}: {dir_name} span {span} ns, guest CPUs busy {busy} ns (idle {idle:?} ns)");
                    busy_ns[side][if dir_name == "write" { 0 } else { 1 }].push(busy as f64);
                }
            }
            if let Some((kicks, us)) = storaged_served(b.serial()) {
                println!("round {round} {what}: storaged served {kicks} kicks in {us} us (the whole boot)");
                served_us[side].push(us as f64);
            }
            let mb = (DATA_MIB * MIB) as f64 / 1e6;
            match (b.seconds_by(clock, "write").map(|s| mb / s), b.seconds_by(clock, "read").map(|s| mb / s)) {
                (Some(w), Some(r)) => {
                    println!("round {round} {what}: write {w:.2} {unit}, read {r:.2} {unit}");
                    rates[side].push((w, r));
                    pair.push((w, r));
                }
                _ => problems.push(format!("{what} (round {round}): no write or read timing ({clock:?} clock)")),
            }
            if let Some(l) = b.serial().lines().find(|l| l.contains("pool meter: ")) {
                println!("round {round} {what}: {}", l.trim_end());
                if let Some(ns) = checksum_ns_per_byte(l) {
                    checksum.push(ns);
                }
            }
        }
        if let [(pw, pr), (dw, dr)] = pair[..] {
            println!("round {round}: pool/disk write {:.3}, read {:.3}", pw / dw, pr / dr);
            ratios.push((pw / dw, pr / dr));
            by_round.push(Some((pw / dw, pr / dr)));
        } else {
            by_round.push(None);
        }
    }
    // Every round, the failed ones too (their problems say why): the
    // medians below are of the rounds that have figures.
    for (i, dir_name) in [(0, "write"), (1, "read")] {
        let list: Vec<String> =
            by_round.iter().map(|r| r.map_or("failed".to_string(), |r| format!("{:.3}", if i == 0 { r.0 } else { r.1 }))).collect();
        println!("pool/disk {dir_name} by round: {}", list.join(" "));
    }
    for (side, what) in [(0, "pool"), (1, "disk")] {
        if let (Some(w), Some(r)) = (median(rates[side].iter().map(|x| x.0)), median(rates[side].iter().map(|x| x.1))) {
            figures.push(Figure::new(&format!("linux_{what}_write{tag}"), format!("{w:.2}"), unit));
            figures.push(Figure::new(&format!("linux_{what}_read{tag}"), format!("{r:.2}"), unit));
        }
        let ns = |f: fn(&(u64, u64)) -> u64| median(guest[side].iter().map(|x| f(x) as f64));
        if let (Some(w), Some(r)) = (ns(|x| x.0), ns(|x| x.1)) {
            figures.push(Figure::new(&format!("linux_{what}_write{tag}_guest_ns"), format!("{w:.0}"), "ns"));
            figures.push(Figure::new(&format!("linux_{what}_read{tag}_guest_ns"), format!("{r:.0}"), "ns"));
        }
        for (d, dir_name) in [(0, "write"), (1, "read")] {
            if let Some(b) = median(busy_ns[side][d].iter().copied()) {
                figures.push(Figure::new(&format!("linux_{what}_{dir_name}{tag}_guest_busy_ns"), format!("{b:.0}"), "ns"));
            }
        }
        if let Some(us) = median(served_us[side].iter().copied()) {
            figures.push(Figure::new(&format!("linux_{what}_storaged_serve{tag}"), format!("{us:.0}"), "us"));
        }
    }
    if let Some(ns) = median(checksum.into_iter()) {
        figures.push(Figure::new(&format!("linux_pool_checksum{tag}"), format!("{ns:.2}"), "ns/B"));
    }
    for (i, dir_name) in [(0, "write"), (1, "read")] {
        let of = |r: &(f64, f64)| if i == 0 { r.0 } else { r.1 };
        if let Some(m) = median(ratios.iter().map(of)) {
            let lo = ratios.iter().map(of).fold(f64::INFINITY, f64::min);
            let hi = ratios.iter().map(of).fold(0.0, f64::max);
            let base = format!("linux_pool_over_disk_{dir_name}{tag}");
            figures.push(Figure::new(&base, format!("{m:.3}"), "ratio"));
            figures.push(Figure::new(&format!("{base}_min"), format!("{lo:.3}"), "ratio"));
            figures.push(Figure::new(&format!("{base}_max"), format!("{hi:.3}"), "ratio"));
            figures.push(Figure::new(&format!("{base}_rounds"), format!("{}", ratios.len()), "rounds"));
        }
    }
    Ok((figures, problems))
}

/// Nanoseconds per byte storaged's checksums took by its meter line
/// (`pool meter: ... checksums <KiB> KiB in <ms> ms; ...`; under icount a
/// nanosecond is an instruction); None without such a line, a time or
/// bytes.
pub fn checksum_ns_per_byte(meter: &str) -> Option<f64> {
    let rest = meter.split_once("checksums ")?.1;
    let (kib, rest) = rest.split_once(" KiB in ")?;
    let ms = rest.split(';').next()?.trim().strip_suffix(" ms")?;
    let (kib, ms): (u64, u64) = (kib.trim().parse().ok()?, ms.trim().parse().ok()?);
    (kib > 0 && ms > 0).then(|| ms as f64 * 1e6 / (kib as f64 * 1024.0))
}

/// Rounds of `bench/linux-disk` (`ALCOVE_DISK_BENCH_ROUNDS`, 1 to 15;
/// default 3).
pub fn bench_rounds() -> usize {
    std::env::var("ALCOVE_DISK_BENCH_ROUNDS").ok().and_then(|v| v.parse().ok()).filter(|n| (1..=15).contains(n)).unwrap_or(3)
}

/// The median (the mean of the middle two for an even count); None for
/// no values.
fn median(values: impl Iterator<Item = f64>) -> Option<f64> {
    let mut v: Vec<f64> = values.filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 })
}

#[cfg(test)]
mod bench_tests {
    use super::median;

    #[test]
    fn the_guest_clock_line_is_read_per_direction() {
        let serial = "alcove-guest: disk-write 8 ab\r\nalcove-guest: disk-write guest-ns 123456789\r\n\
                      alcove-guest: disk-read guest-ns 42\r\nalcove-guest: disk-read guest-ns 7\r\n";
        assert_eq!(super::guest_ns(serial, "write"), Some(123_456_789));
        assert_eq!(super::guest_ns(serial, "read"), Some(42), "the first line counts");
        assert_eq!(super::guest_ns("alcove-guest: disk-write guest-ns \r\n", "write"), None, "no number");
        assert_eq!(super::guest_ns("alcove-guest: disk-write guest-ns -5\n", "write"), None, "no negative time");
        assert_eq!(super::guest_ns("", "read"), None);
    }

    #[test]
    fn the_meter_line_gives_the_checksum_time_per_byte() {
        let line = "[INFO ] storaged: pool meter: 4 commits in 3 ms; checksums 16492 KiB in 270 ms; compression 0 ms; \
                    disk reads 129 (8192 KiB) in 0 ms";
        let ns = super::checksum_ns_per_byte(line).unwrap();
        assert!((ns - 270e6 / (16492.0 * 1024.0)).abs() < 1e-9, "{ns}");
        assert_eq!(super::checksum_ns_per_byte("pool meter: checksums 0 KiB in 0 ms;"), None, "nothing checksummed");
        assert_eq!(super::checksum_ns_per_byte("pool meter: checksums 10 KiB in 5 ticks;"), None, "no clock rate");
        assert_eq!(super::checksum_ns_per_byte("ring 1 closed"), None);
    }

    #[test]
    fn the_guest_idle_line_gives_busy_time() {
        let serial = "alcove-guest: disk-write guest-idle-ns 1000 300 900\r\nalcove-guest: disk-read guest-idle-ns 50 0 0\n";
        assert_eq!(super::guest_idle(serial, "write"), Some((1000, vec![300, 900])));
        assert_eq!(super::guest_busy_ns(serial, "write"), Some(700 + 100));
        assert_eq!(super::guest_busy_ns(serial, "read"), Some(100), "two CPUs busy throughout");
        assert_eq!(super::guest_idle("alcove-guest: disk-write guest-idle-ns 1000\n", "write"), None, "no CPU");
        assert_eq!(super::guest_idle("alcove-guest: disk-write guest-idle-ns 10 20\n", "write"), None, "idle past the span");
        assert_eq!(super::guest_idle("alcove-guest: disk-write guest-idle-ns 10 x\n", "write"), None, "not a number");
        assert_eq!(super::guest_idle(serial, "trim"), None);
    }

    #[test]
    fn the_ring_close_line_gives_storaged_serving_time() {
        let serial = "[INFO ] storaged: ring 1 closed (40 requests done, 0 failed; 17 kicks served in 2345 us)\n\
                      [INFO ] storaged: ring 2 closed (1 requests done, 0 failed; 1 kicks served in 9 us)\n";
        assert_eq!(super::storaged_served(serial), Some((17, 2345)));
        assert_eq!(super::storaged_served("ring 1 closed: its client ended (4 requests done, 0 failed; 3 kicks served in 7 us)"), Some((3, 7)));
        assert_eq!(super::storaged_served("ring 1 closed (4 requests done, 0 failed; 3 kicks)"), None, "no clock");
        assert_eq!(super::storaged_served(""), None);
    }

    #[test]
    fn median_of_odd_even_and_none() {
        assert_eq!(median([3.0, 1.0, 2.0].into_iter()), Some(2.0));
        assert_eq!(median([4.0, 1.0, 3.0, 2.0].into_iter()), Some(2.5));
        assert_eq!(median([f64::NAN, 5.0].into_iter()), Some(5.0));
        assert_eq!(median(core::iter::empty()), None);
    }
}

pub const MIRROR_CASE: &str = "linux/pool-mirror-heal";
/// Blocks flipped on one side before the guest reads, and after.
const FLIP_READ: usize = 6;
const FLIP_SCRUB: usize = 5;
/// The volume's block size (the pool's default `volblocksize`).
const VOLBLOCK: usize = 8192;

/// Where on the pool file `file` the volume's first [`DATA_MIB`] MiB lie:
/// (offset in the file, index of the volume block) for each data block,
/// found by content (the guest's data is random, compression is off, the
/// pool allocates in 4 KiB units). Read-only.
fn data_block_offsets(files: &[PathBuf], file: &Path) -> std::result::Result<Vec<(u64, usize)>, String> {
    use alcove_pool::Pool;
    use alcove_pool::disk::FileDisk;
    use std::collections::HashMap;
    let disks = files.iter().map(|f| FileDisk::open(f).map_err(|e| format!("{}: {e}", f.display()))).collect::<std::result::Result<Vec<_>, _>>()?;
    let mut pool = Pool::import(disks).map_err(|e| format!("import: {e}"))?;
    let mut data = vec![0u8; (DATA_MIB * MIB) as usize];
    pool.read(&volume(), 0, &mut data).map_err(|e| format!("read: {e}"))?;
    drop(pool);
    let blocks: HashMap<&[u8], usize> = data.chunks(VOLBLOCK).enumerate().map(|(i, b)| (&b[..32], i)).collect();
    let bytes = std::fs::read(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let mut found = Vec::new();
    let mut at = 0usize;
    while at + VOLBLOCK <= bytes.len() {
        if let Some(&i) = blocks.get(&bytes[at..at + 32])
            && bytes[at..at + VOLBLOCK] == data[i * VOLBLOCK..(i + 1) * VOLBLOCK]
        {
            found.push((at as u64, i));
        }
        at += 4096;
    }
    Ok(found)
}

/// `files` in the pool's child order (their labels'), as the pool's
/// per-side counts are.
fn by_child(files: &[PathBuf]) -> std::result::Result<Vec<PathBuf>, String> {
    use alcove_pool::disk::FileDisk;
    let mut order = Vec::new();
    for f in files {
        let mut d = FileDisk::open(f).map_err(|e| format!("{}: {e}", f.display()))?;
        let h = alcove_pool::pool::read_label(&mut d).ok_or_else(|| format!("{}: no pool label", f.display()))?;
        order.push((h.child, f.clone()));
    }
    order.sort();
    Ok(order.into_iter().map(|(_, f)| f).collect())
}

/// Flips one byte in each of `blocks` (file offsets) of `file`.
fn flip(file: &Path, blocks: &[(u64, usize)]) -> std::io::Result<()> {
    use std::io::{Read, Seek, SeekFrom, Write};
    let mut f = std::fs::OpenOptions::new().read(true).write(true).open(file)?;
    for &(off, _) in blocks {
        let at = off + 1000;
        let mut b = [0u8; 1];
        f.seek(SeekFrom::Start(at))?;
        f.read_exact(&mut b)?;
        f.seek(SeekFrom::Start(at))?;
        f.write_all(&[!b[0]])?;
    }
    f.sync_all()
}

/// Host scrub: (checksum errors, repaired bytes) per side.
fn scrub(files: &[PathBuf]) -> std::result::Result<Vec<(u64, u64)>, String> {
    use alcove_pool::Pool;
    use alcove_pool::disk::FileDisk;
    let disks = files.iter().map(|f| FileDisk::open(f).map_err(|e| format!("{}: {e}", f.display()))).collect::<std::result::Result<Vec<_>, _>>()?;
    let mut pool = Pool::import(disks).map_err(|e| format!("import: {e}"))?;
    pool.scrub().map_err(|e| format!("scrub: {e}"))?;
    Ok(pool.child_stats().iter().map(|s| (s.checksum_errors, s.repaired_bytes)).collect())
}

/// `linux/pool-mirror-heal`: the VM's volume on a two-way mirror. After
/// the guest wrote its data, one byte in each of [`FLIP_READ`] of the
/// volume's blocks is flipped on the side the pool reads first; the
/// guest's next boot reads the right data (from the other side, repairing
/// the bad copies: self-healing on read) and a host scrub then finds
/// nothing to repair. [`FLIP_SCRUB`] other blocks flipped on the second
/// side after that are what the scrub reports and repairs, exactly, on
/// that side alone.
pub fn run_mirror(kernel: &Path, images: &Images, name: &str, timeout: Duration) -> Result<crate::linux::Outcome> {
    let dir = crate::out_dir().join("linux-e2e").join(name.replace('/', "-"));
    std::fs::create_dir_all(&dir)?;
    let pool = vec![dir.join("pool-a.img"), dir.join("pool-b.img")];
    for f in &pool {
        let _ = std::fs::remove_file(f);
    }
    let log = name.replace('/', "-");
    let disk = format!("{{\"size\": {VOLUME_MIB}}}");
    let first = boot(kernel, &dir, &format!("{log}-write"), &vm_json(images, "linux-pool", &disk, &format!("alcove.disk-write={DATA_MIB}")), &pool, timeout)?;
    let mut total = first.timed.run.elapsed;
    let mut problems: Vec<String> = first.problems.iter().map(|p| format!("boot 1: {p}")).collect();
    let written = first.hash("write");
    let mut last = first;
    let mut summary = None;
    if problems.is_empty() {
        // Side 0 is read first: damage there makes the guest's reads fall
        // back to side 1 and repair side 0.
        let pool = by_child(&pool)?;
        let blocks = data_block_offsets(&pool, &pool[1]).map_err(|e| format!("{}: {e}", pool[1].display()))?;
        if blocks.len() < FLIP_READ + FLIP_SCRUB {
            problems.push(format!("found {} of the volume's blocks on {}", blocks.len(), pool[1].display()));
        } else {
            // Spread over the data: every k-th block.
            let step = blocks.len() / (FLIP_READ + FLIP_SCRUB);
            let chosen: Vec<(u64, usize)> = (0..FLIP_READ + FLIP_SCRUB).map(|i| blocks[i * step]).collect();
            flip(&pool[0], &chosen[..FLIP_READ])?;
            let b = boot(kernel, &dir, &format!("{log}-read"), &vm_json(images, "linux-pool", &disk, &format!("alcove.disk-read={DATA_MIB}")), &pool, timeout)?;
            total += b.timed.run.elapsed;
            problems.extend(b.problems.iter().map(|p| format!("boot 2: {p}")));
            match (b.hash("read"), &written) {
                (Some(r), Some(w)) if &r == w => {}
                (r, w) => problems.push(format!("boot 2: with {FLIP_READ} blocks flipped on one side the guest read {r:?}, it had written {w:?}")),
            }
            last = b;
            match scrub(&pool) {
                Ok(s) if s.iter().all(|&(e, r)| e == 0 && r == 0) => {}
                Ok(s) => problems.push(format!("after the guest's read, scrub still found (checksum errors, repaired bytes) per side {s:?}")),
                Err(e) => problems.push(e),
            }
            flip(&pool[1], &chosen[FLIP_READ..])?;
            let want = (FLIP_SCRUB as u64, (FLIP_SCRUB * VOLBLOCK) as u64);
            match scrub(&pool) {
                Ok(s) if s.len() == 2 && s[0] == (0, 0) && s[1] == want => {
                    summary = Some(format!(
                        "{DATA_MIB} MiB written on a two-way mirror; {FLIP_READ} blocks flipped on the side read \
                         first: the guest read the right data and its reads repaired them (scrub clean); \
                         {FLIP_SCRUB} flipped on the other side: scrub found and repaired exactly those ({} bytes)",
                        want.1
                    ))
                }
                Ok(s) => problems.push(format!("scrub after {FLIP_SCRUB} flips found (checksum errors, repaired bytes) per side {s:?}, expected [(0, 0), {want:?}]")),
                Err(e) => problems.push(e),
            }
            match scrub(&pool) {
                Ok(s) if s.iter().all(|&(e, r)| e == 0 && r == 0) => {}
                Ok(s) => problems.push(format!("a second scrub found {s:?}: the repairs did not hold")),
                Err(e) => problems.push(e),
            }
        }
    }
    Ok(outcome(name, last, total, problems, summary))
}

pub const SIGKILL_CASE: &str = "linux/pool-sigkill";
/// 1 MiB chunks the guest writes (`alcove.disk-chunks`), each fsync'd.
const CHUNKS: usize = 16;
/// QEMU is killed once this many chunks were acknowledged.
const KILL_AFTER: usize = 4;

/// The guest's acknowledged chunks in `lines`: (k, sha256) from each
/// `alcove-guest: chunk <k> <sha256>`, in order.
pub fn acknowledged_chunks<'a>(lines: impl IntoIterator<Item = &'a str>) -> Vec<(u64, String)> {
    chunk_hashes("alcove-guest: chunk ", lines)
}

/// The chunks a guest read back (`alcove-guest: chunk-read <k> <sha256>`).
pub fn chunks_read<'a>(lines: impl IntoIterator<Item = &'a str>) -> Vec<(u64, String)> {
    chunk_hashes("alcove-guest: chunk-read ", lines)
}

/// (k, sha256) from each line `<prefix><k> <sha256>`, in order.
fn chunk_hashes<'a>(prefix: &str, lines: impl IntoIterator<Item = &'a str>) -> Vec<(u64, String)> {
    lines
        .into_iter()
        .filter_map(|l| {
            let rest = l.trim_end().strip_prefix(prefix)?;
            let (k, h) = rest.split_once(' ')?;
            let k = k.parse().ok()?;
            (h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit())).then(|| (k, h.to_string()))
        })
        .collect()
}

/// Runs `c` (serial on its stdout, logged to `logs/NAME.log`) and kills
/// it with SIGKILL as soon as `kill_on` says so of a serial line, or at
/// `timeout`. Returns the run (ending `Qemu(-1)` when the kill ended it)
/// and whether `kill_on` brought the kill.
fn capture_killing(
    mut c: Command,
    name: &str,
    timeout: Duration,
    mut kill_on: impl FnMut(&str) -> bool + Send + 'static,
) -> Result<(TimedRun, bool)> {
    use std::io::{Read, Write};
    use std::process::Stdio;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let logs = crate::out_dir().join("logs");
    std::fs::create_dir_all(&logs)?;
    let log = logs.join(format!("{}.log", name.replace('/', "-")));
    let mut file = std::fs::File::create(&log)?;
    c.stdout(Stdio::piped()).stdin(Stdio::null()).stderr(std::fs::File::create(log.with_extension("stderr"))?);
    let start = Instant::now();
    let mut child = c.spawn().map_err(|e| format!("starting qemu-system-x86_64: {e}"))?;
    let mut out = child.stdout.take().ok_or("no stdout pipe")?;
    let kill = Arc::new(AtomicBool::new(false));
    let seen = kill.clone();
    let reader = std::thread::spawn(move || {
        let (mut all, mut lines, mut line) = (Vec::new(), Vec::new(), Vec::new());
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = out.read(&mut buf) {
            let now = start.elapsed();
            let _ = file.write_all(&buf[..n]);
            all.extend_from_slice(&buf[..n]);
            for &b in &buf[..n] {
                if b != b'\n' {
                    line.push(b);
                    continue;
                }
                let text = String::from_utf8_lossy(&line).trim_end_matches('\r').to_string();
                if kill_on(&text) {
                    seen.store(true, Ordering::SeqCst);
                }
                lines.push((now, text));
                line.clear();
            }
        }
        (all, lines)
    });
    let deadline = start + timeout;
    let (status, by_count) = loop {
        if let Some(s) = child.try_wait()? {
            crate::emu::note_exit(&s);
            break (Some(s), false);
        }
        let by_count = kill.load(Ordering::SeqCst);
        if by_count || Instant::now() >= deadline {
            // Child::kill is SIGKILL: QEMU gets no chance to flush or
            // finish anything.
            let _ = child.kill();
            let s = child.wait()?;
            break (by_count.then_some(s), by_count);
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let elapsed = start.elapsed();
    let (all, lines) = reader.join().map_err(|_| "the serial reader thread panicked")?;
    let ending = match status {
        Some(s) => Ending::Qemu(s.code().unwrap_or(-1)),
        None => Ending::Timeout(timeout.as_secs()),
    };
    let run = crate::emu::Run { ending, serial: String::from_utf8_lossy(&all).into_owned(), log, elapsed };
    Ok((TimedRun { run, lines }, by_count))
}

/// The pool file after the kill, as the host tool sees it: imports,
/// scrubs clean, and every chunk in `acked` reads back with its hash.
fn check_chunks(files: &[PathBuf], acked: &[(u64, String)]) -> std::result::Result<String, String> {
    use alcove_pool::Pool;
    use alcove_pool::disk::FileDisk;
    let disks = files.iter().map(|f| FileDisk::open(f).map_err(|e| format!("{}: {e}", f.display()))).collect::<std::result::Result<Vec<_>, _>>()?;
    let mut pool = Pool::import(disks).map_err(|e| format!("the pool does not import after the kill: {e}"))?;
    let report = pool.scrub().map_err(|e| format!("scrub: {e}"))?;
    let errors: u64 = pool.child_stats().iter().map(|s| s.read_errors + s.write_errors + s.checksum_errors).sum();
    if errors != 0 || !report.errors.is_empty() || pool.state() != "ONLINE" {
        return Err(format!("scrub after the kill found {errors} errors, pool {}", pool.state()));
    }
    let vol = volume();
    let mut lost = Vec::new();
    let mut chunk = vec![0u8; MIB as usize];
    for (k, want) in acked {
        pool.read(&vol, k * MIB, &mut chunk).map_err(|e| format!("{vol}: chunk {k}: {e}"))?;
        let got: String = Sha256::digest(&chunk).iter().map(|b| format!("{b:02x}")).collect();
        if &got != want {
            lost.push(format!("chunk {k} hashes to {got}, acknowledged {want}"));
        }
    }
    if !lost.is_empty() {
        return Err(format!("acknowledged writes lost: {}", lost.join("; ")));
    }
    Ok(format!("scrub of txg {}: {} blocks, no errors", report.txg, report.blocks))
}

/// `linux/pool-sigkill`: the guest writes fsync'd 1 MiB chunks to its pool
/// volume, printing each one's hash once the disk acknowledged it; QEMU is
/// killed with SIGKILL after [`KILL_AFTER`] of them, while the guest goes
/// on writing. Alcove then boots again on the pool file (storaged imports
/// it, replaying its intent log) and the guest reads each chunk back
/// (`alcove.disk-chunks-read`): every one acknowledged before the kill has
/// its hash. Last, on the host the pool file imports, scrubs clean, and
/// every acknowledged chunk reads back with its hash there too.
pub fn run_sigkill(kernel: &Path, images: &Images, name: &str, timeout: Duration) -> Result<crate::linux::Outcome> {
    let dir = crate::out_dir().join("linux-e2e").join(name.replace('/', "-"));
    std::fs::create_dir_all(&dir)?;
    let pool = vec![dir.join("pool.img")];
    let _ = std::fs::remove_file(&pool[0]);
    let log = name.replace('/', "-");
    let disk = format!("{{\"size\": {VOLUME_MIB}}}");
    let json = vm_json(images, "linux-pool", &disk, &format!("alcove.disk-chunks={CHUNKS}"));
    let (plan, c) = machine(kernel, &dir, &log, &json, &pool)?;
    let mut acked = 0;
    let count = move |line: &str| {
        acked += acknowledged_chunks([line]).len();
        acked >= KILL_AFTER
    };
    let (timed, killed) = capture_killing(c, &log, timeout, count)?;
    let mut problems = Vec::new();
    let serial = &timed.run.serial;
    let acked = acknowledged_chunks(serial.lines());
    if !killed {
        problems.push(format!("QEMU was not killed: {} chunks acknowledged, ending {:?}", acked.len(), timed.run.ending));
    }
    if serial.contains("alcove-guest: chunks done") {
        problems.push("the guest finished every chunk before the kill: it did not land during the writes".into());
    }
    if let Some(l) = serial.lines().find(|l| l.contains("alcove-guest: chunk ") && l.trim_end().ends_with(" failed")) {
        problems.push(format!("the guest's write failed: {}", l.trim_end()));
    }
    if serial.contains("panic in ") || serial.contains("ALCOVE-FATAL") {
        problems.push("something panicked before the kill".into());
    }
    // Alcove again on the killed pool: storaged imports it (replaying its
    // intent log) and the guest reads every chunk back.
    let mut total = timed.run.elapsed;
    let mut last = Boot { timed, plan, problems: Vec::new() };
    if problems.is_empty() {
        let upto = acked.iter().map(|(k, _)| k + 1).max().unwrap_or(0);
        let read = vm_json(images, "linux-pool", &disk, &format!("alcove.disk-chunks-read={upto}"));
        let b = boot(kernel, &dir, &format!("{log}-read"), &read, &pool, timeout)?;
        total += b.timed.run.elapsed;
        problems.extend(b.problems.iter().map(|p| format!("boot after the kill: {p}")));
        match grant_line(b.serial(), &b.plan.server) {
            Some(l) if !l.contains("created") => {}
            other => problems.push(format!("boot after the kill: init did not grant the existing {} alone: {other:?}", volume())),
        }
        let read_back = chunks_read(b.serial().lines());
        if !b.serial().contains("alcove-guest: chunks-read done") {
            problems.push(format!("boot after the kill: the guest did not finish reading ({} chunks read)", read_back.len()));
        }
        for (k, want) in &acked {
            match read_back.iter().find(|(r, _)| r == k) {
                Some((_, got)) if got == want => {}
                other => problems.push(format!("boot after the kill: chunk {k} read back as {other:?}, acknowledged {want}")),
            }
        }
        last = b;
    }
    let mut summary = None;
    if problems.is_empty() {
        match check_chunks(&pool, &acked) {
            Ok(scrub) => {
                summary = Some(format!(
                    "QEMU killed (SIGKILL) after the guest's {} acknowledged 1 MiB chunks while it wrote more; Alcove \
                     booted again on the pool and the guest read every acknowledged chunk back with its hash; on \
                     the host the pool imports, {scrub}, every acknowledged chunk reads back with its hash",
                    acked.len()
                ))
            }
            Err(e) => problems.push(format!("{}: {e}", pool[0].display())),
        }
    }
    Ok(outcome(name, last, total, problems, summary))
}

pub const CLONE_CASE: &str = "linux/pool-clone";
/// The image whose volume, `zones/<IMAGE_UUID>`, the clone test's VM is
/// cloned from (its snapshot `@final`, as SmartOS's `image_uuid`).
pub const IMAGE_UUID: &str = "7c0a1d2e-3f40-4a5b-8c6d-7e8f90a1b2c3";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A new single-disk pool `zones` in `file` made on the host with the
/// pool library (as `alcove-pool create`, `import-raw` and `snapshot`
/// do): the image volume `zones/<IMAGE_UUID>` holds [`DATA_MIB`] MiB of
/// random data, snapshotted as `@final`. Returns the data's sha256.
fn make_image_pool(file: &Path) -> std::result::Result<String, String> {
    use alcove_pool::Pool;
    use alcove_pool::disk::FileDisk;
    let io = |e: std::io::Error| format!("{}: {e}", file.display());
    std::fs::File::create(file).and_then(|f| f.set_len(POOL_MIB * MIB)).map_err(io)?;
    let disk = FileDisk::open(file).map_err(io)?;
    let mut pool = Pool::create("zones", vec![disk], 0x5eed_c10e).map_err(|e| format!("create: {e}"))?;
    let vol = format!("zones/{IMAGE_UUID}");
    pool.create_volume(&vol, VOLUME_MIB * MIB, alcove_pool::pool::DEFAULT_VOLBLOCKSIZE).map_err(|e| format!("{vol}: {e}"))?;
    let data = crate::vm::random_bytes((DATA_MIB * MIB) as usize);
    pool.write(&vol, 0, &data).map_err(|e| format!("{vol}: write: {e}"))?;
    pool.sync().map_err(|e| format!("sync: {e}"))?;
    pool.snapshot(&format!("{vol}@final")).map_err(|e| format!("{vol}@final: {e}"))?;
    Ok(hex(&Sha256::digest(&data)))
}

/// The pool after the clone's boot: scrub clean, the image volume and its
/// snapshot still hash to `image`, the clone (origin the snapshot) to what
/// the guest wrote.
fn check_clone(files: &[PathBuf], image: &str, written: &str) -> std::result::Result<String, String> {
    use alcove_pool::Pool;
    use alcove_pool::disk::FileDisk;
    let disks = files.iter().map(|f| FileDisk::open(f).map_err(|e| format!("{}: {e}", f.display()))).collect::<std::result::Result<Vec<_>, _>>()?;
    let mut pool = Pool::import(disks).map_err(|e| format!("the pool does not import: {e}"))?;
    let report = pool.scrub().map_err(|e| format!("scrub: {e}"))?;
    let errors: u64 = pool.child_stats().iter().map(|s| s.read_errors + s.write_errors + s.checksum_errors).sum();
    if errors != 0 || !report.errors.is_empty() || pool.state() != "ONLINE" {
        return Err(format!("scrub found {errors} errors, pool {}", pool.state()));
    }
    let mut data = vec![0u8; (DATA_MIB * MIB) as usize];
    let origin = format!("zones/{IMAGE_UUID}");
    let snap = format!("{origin}@final");
    for (name, want) in [(origin.as_str(), image), (snap.as_str(), image), (volume().as_str(), written)] {
        pool.read(name, 0, &mut data).map_err(|e| format!("{name}: read: {e}"))?;
        let got = hex(&Sha256::digest(&data));
        if got != want {
            return Err(format!("{name} hashes to {got} on the host, expected {want}"));
        }
    }
    let info = pool.get(&volume()).map_err(|e| format!("{}: {e}", volume()))?;
    if info.origin.as_deref() != Some(snap.as_str()) {
        return Err(format!("{}: origin {:?}, expected {snap}", volume(), info.origin));
    }
    Ok(format!("scrub of txg {}: {} blocks, no errors", report.txg, report.blocks))
}

/// `linux/pool-clone`: an image volume with data and its snapshot
/// `@final` are made on the host; the VM's disk names the image
/// (`image_uuid`), so at boot init clones `zones/<uuid>-disk0` from the
/// snapshot and grants it. The guest reads the clone (the image's data:
/// the clone shares its blocks), then overwrites it with new random data
/// and powers off. On the host the origin and its snapshot still hash as
/// before, the clone to what the guest wrote, and scrub is clean.
pub fn run_clone(kernel: &Path, images: &Images, name: &str, timeout: Duration) -> Result<crate::linux::Outcome> {
    let dir = crate::out_dir().join("linux-e2e").join(name.replace('/', "-"));
    std::fs::create_dir_all(&dir)?;
    let pool = vec![dir.join("pool.img")];
    let image = make_image_pool(&pool[0])?;
    let log = name.replace('/', "-");
    let disk = format!("{{\"image_uuid\": \"{IMAGE_UUID}\"}}");
    let words = format!("alcove.disk-read-first alcove.disk-read={DATA_MIB} alcove.disk-write={DATA_MIB}");
    let b = boot(kernel, &dir, &log, &vm_json(images, "linux-clone", &disk, &words), &pool, timeout)?;
    let mut problems = b.problems.clone();
    let vol = volume();
    match grant_line(b.serial(), &b.plan.server) {
        Some(l) if l.contains(&format!("created {vol}")) => {}
        other => problems.push(format!("init did not report cloning and granting {vol}: {other:?}")),
    }
    match b.hash("read") {
        Some(h) if h == image => {}
        h => problems.push(format!("the guest read {h:?} from the new clone, the image holds {image}")),
    }
    let written = b.hash("write");
    match &written {
        Some(w) if *w != image => {}
        w => problems.push(format!("the guest reported writing {w:?}")),
    }
    let mut summary = None;
    if problems.is_empty() {
        match check_clone(&pool, &image, written.as_deref().unwrap_or_default()) {
            Ok(scrub) => {
                summary = Some(format!(
                    "{vol} cloned at boot from zones/{IMAGE_UUID}@final: the guest read the image's {DATA_MIB} MiB \
                     from it, then overwrote them; on the host the origin and its snapshot hash as before, the \
                     clone as the guest wrote, {scrub}"
                ))
            }
            Err(e) => problems.push(format!("{}: {e}", pool[0].display())),
        }
    }
    let total = b.timed.run.elapsed;
    Ok(outcome(name, b, total, problems, summary))
}

pub const DAMAGED_CASE: &str = "linux/pool-damaged";

/// The guest's `disk-read error after <bytes> bytes <sha256>` line.
pub fn read_error(serial: &str) -> Option<(u64, String)> {
    serial.lines().find_map(|l| {
        let rest = l.trim_end().strip_prefix("alcove-guest: disk-read error after ")?;
        let (n, h) = rest.split_once(" bytes ")?;
        Some((n.parse().ok()?, h.to_string()))
    })
}

/// `linux/pool-damaged`: a single-disk pool (no other copy). After the
/// guest wrote its data, one byte of one of the volume's blocks is
/// flipped in the pool file; the guest's next boot reads the volume and
/// must get an I/O error at that block, never wrong data: everything it
/// read before the error is what it wrote. A host scrub then walks the
/// whole pool and names the volume and the block's bytes as its one
/// permanent error (one checksum error, nothing repaired).
pub fn run_damaged(kernel: &Path, images: &Images, name: &str, timeout: Duration) -> Result<crate::linux::Outcome> {
    use alcove_pool::Pool;
    use alcove_pool::disk::FileDisk;
    let dir = crate::out_dir().join("linux-e2e").join(name.replace('/', "-"));
    std::fs::create_dir_all(&dir)?;
    let pool = vec![dir.join("pool.img")];
    let _ = std::fs::remove_file(&pool[0]);
    let log = name.replace('/', "-");
    let disk = format!("{{\"size\": {VOLUME_MIB}}}");
    let first = boot(kernel, &dir, &format!("{log}-write"), &vm_json(images, "linux-pool", &disk, &format!("alcove.disk-write={DATA_MIB}")), &pool, timeout)?;
    let mut total = first.timed.run.elapsed;
    let mut problems: Vec<String> = first.problems.iter().map(|p| format!("boot 1: {p}")).collect();
    if first.hash("write").is_none() {
        problems.push("boot 1: the guest reported no disk-write hash".into());
    }
    let mut last = first;
    let mut summary = None;
    if problems.is_empty() {
        let mut data = vec![0u8; (DATA_MIB * MIB) as usize];
        {
            let disks = vec![FileDisk::open(&pool[0]).map_err(|e| format!("{}: {e}", pool[0].display()))?];
            let mut p = Pool::import(disks).map_err(|e| format!("import: {e}"))?;
            p.read(&volume(), 0, &mut data).map_err(|e| format!("read: {e}"))?;
        }
        let blocks = data_block_offsets(&pool, &pool[0]).map_err(|e| format!("{}: {e}", pool[0].display()))?;
        let Some(&(at, index)) = blocks.get(blocks.len() / 2) else {
            return Err(format!("none of the volume's blocks found in {}", pool[0].display()).into());
        };
        flip(&pool[0], &[(at, index)])?;
        let b = boot(kernel, &dir, &format!("{log}-read"), &vm_json(images, "linux-pool", &disk, &format!("alcove.disk-read={DATA_MIB}")), &pool, timeout)?;
        total += b.timed.run.elapsed;
        problems.extend(b.problems.iter().map(|p| format!("boot 2: {p}")));
        let bad_at = (index * VOLBLOCK) as u64;
        match read_error(b.serial()) {
            Some((n, h)) if n <= bad_at && h == hex(&Sha256::digest(&data[..n as usize])) => {
                summary = Some(format!(
                    "one byte flipped in volume block {index} on a single-disk pool: the guest's read failed with \
                     an I/O error after {n} bytes (the block starts at {bad_at}), every byte before it as written"
                ));
            }
            Some((n, h)) => problems.push(format!(
                "boot 2: the read failed after {n} bytes hashing to {h}; the damaged block starts at {bad_at}, \
                 and the written data's first {n} bytes hash to {}",
                hex(&Sha256::digest(&data[..(n as usize).min(data.len())]))
            )),
            None => problems.push(format!(
                "boot 2: the guest reported no read error with block {index} damaged (read {:?})",
                b.hash("read")
            )),
        }
        if !b.serial().lines().any(|l| l.contains("I/O error") && l.contains("vda")) {
            problems.push("boot 2: the guest's kernel logged no I/O error on vda".into());
        }
        last = b;
        // With no good copy, scrub walks on to the end and names the
        // volume and the bytes of the block (`zpool status -v`'s permanent
        // errors), as the guest's read failed there; it counts one
        // checksum error and repairs nothing.
        let disks = vec![FileDisk::open(&pool[0]).map_err(|e| format!("{}: {e}", pool[0].display()))?];
        let mut p = Pool::import(disks).map_err(|e| format!("import: {e}"))?;
        let scrubbed = p.scrub();
        let counts: Vec<(u64, u64)> = p.child_stats().iter().map(|s| (s.checksum_errors, s.repaired_bytes)).collect();
        let want = format!("{} bytes {bad_at}..{} (data block at {at:#x})", volume(), bad_at + VOLBLOCK as u64);
        match scrubbed {
            Ok(r) if r.errors.iter().map(|e| e.to_string()).collect::<Vec<_>>() == [want.clone()] && counts == [(1, 0)] => {
                if let Some(s) = summary.as_mut() {
                    s.push_str(&format!("; the host scrub walked all {} blocks and named `{want}`", r.blocks));
                }
            }
            r => problems.push(format!(
                "scrub of the damaged pool: {:?}, (checksum errors, repaired bytes) {counts:?}; expected the one \
                 permanent error `{want}` and [(1, 0)]",
                r.map(|r| r.errors.iter().map(|e| e.to_string()).collect::<Vec<_>>())
            )),
        }
    }
    if !problems.is_empty() {
        summary = None;
    }
    Ok(outcome(name, last, total, problems, summary))
}

pub const GRANTS_CASE: &str = "linux/pool-grants";
/// Times init restarts the VMM (its manifest's `restart`).
const GRANT_RESTARTS: usize = 3;

/// storaged's `pool: grant 0x..: VOLUMES (N live)` and
/// `pool: grant 0x.. revoked (.. rings closed, N live)` lines: for each,
/// whether it made (true) or revoked (false) a grant, and the live count
/// after it.
pub fn grant_events<'a>(lines: impl IntoIterator<Item = &'a str>) -> Vec<(bool, u64)> {
    lines
        .into_iter()
        .filter_map(|l| {
            let rest = &l[l.find("pool: grant 0x")?..];
            let live = rest.trim_end().strip_suffix(" live)")?;
            let n = live[live.rfind(['(', ' '])? + 1..].parse().ok()?;
            Some((!rest.contains(" revoked ("), n))
        })
        .collect()
}

/// `linux/pool-grants`: a VMM on a pool volume, in a manifest that
/// restarts it [`GRANT_RESTARTS`] times and does not end the machine with
/// it, whose VM cannot start (its kernel is not a bzImage), so each run
/// ends at once. Each start gets a new grant from init; each end must give
/// it back: storaged's count of live grants is 1 after every grant and 0
/// after every revoke, never growing with the starts.
pub fn run_grants(kernel: &Path, name: &str, timeout: Duration) -> Result<crate::linux::Outcome> {
    let dir = crate::out_dir().join("linux-e2e").join(name.replace('/', "-"));
    std::fs::create_dir_all(&dir)?;
    let pool = vec![dir.join("pool.img")];
    let _ = std::fs::remove_file(&pool[0]);
    let log = name.replace('/', "-");
    std::fs::write(dir.join("not-a-kernel.bin"), vec![0u8; 64 << 10])?;
    let json = format!(
        "{{\"uuid\": \"{UUID}\", \"alias\": \"grants\", \"brand\": \"bhyve\", \"ram\": 64, \"vcpus\": 1, \
         \"disks\": [{{\"size\": 16}}], \"kernel\": \"not-a-kernel.bin\", \"cmdline\": \"console=ttyS0\"}}"
    );
    let json_path = dir.join(format!("{log}.json"));
    std::fs::write(&json_path, &json)?;
    let plan = VmPlan::load(&json_path)?.with_pool(&pool, POOL_MIB)?;
    let mut system = plan.write_boot_files(&dir.join(format!("boot-{log}")))?;
    // The VMM restarts and leaves the machine running when it ends.
    let mut toml = system.toml.clone();
    for (from, to) in [
        ("args = [\"exit-machine\"]\n", String::new()),
        ("machine_exit = true\n", String::new()),
        ("restart = \"never\"\n", format!("restart = {GRANT_RESTARTS}\n")),
    ] {
        if toml.matches(from).count() != 1 {
            return Err(format!("the generated manifest has no single {from:?}").into());
        }
        toml = toml.replace(from, &to);
    }
    system.toml = toml;
    let iso = image::iso_of(kernel, &format!("test-{log}"), "", &system)?;
    let mut c = plan.qemu().command(&iso);
    c.args(["-monitor", "none", "-serial", "stdio"]);
    // init revokes a dead VMM's grant on its worker thread, so its line
    // saying it will not restart the VMM can come before the last revoke:
    // the run ends when both were seen (every revoke is reported by init,
    // done or failed).
    let (last, runs) = (format!("server \"{}\" ", plan.server), GRANT_RESTARTS + 1);
    let (mut stopped, mut revokes) = (false, 0);
    let (timed, ended) = capture_killing(c, &log, timeout, move |l| {
        if l.contains(&last) {
            stopped |= l.contains("not restarting");
            revokes += usize::from(l.contains(" ended: ") && l.contains("revok"));
        }
        stopped && revokes >= runs
    })?;
    let serial = &timed.run.serial;
    let mut problems = Vec::new();
    if !ended {
        problems.push(format!(
            "init never both said it would not restart the VMM and reported {runs} revokes (ending {:?})",
            timed.run.ending
        ));
    }
    let events = grant_events(serial.lines());
    let made = events.iter().filter(|(m, _)| *m).count();
    let revoked = events.len() - made;
    if made != runs || revoked != runs {
        problems.push(format!("{runs} starts of the VMM made {made} grants and revoked {revoked}; expected {runs} of each"));
    }
    if let Some((m, n)) = events.iter().find(|&&(m, n)| n != u64::from(m)) {
        let what = if *m { "a grant" } else { "a revoke" };
        problems.push(format!("after {what} storaged held {n} live grants (events {events:?})"));
    }
    if serial.contains("panic in ") || serial.contains("ALCOVE-FATAL") {
        problems.push("something panicked".into());
    }
    let summary = problems.is_empty().then(|| {
        format!("the VMM started {runs} times on its pool volume, each start granted and each end revoked: storaged held one live grant at most (events {events:?})")
    });
    let total = timed.run.elapsed;
    Ok(outcome(name, Boot { timed, plan, problems: Vec::new() }, total, problems, summary))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only whole `chunk <k> <sha256>` lines count as acknowledged: a
    /// failed chunk, a cut-off line (the kill can land mid-line) or
    /// another line does not.
    #[test]
    fn only_whole_chunk_lines_are_acknowledged() {
        let h = "ab".repeat(32);
        let serial = format!(
            "alcove-guest: chunk 0 {h}\r\nalcove-guest: chunk 1 failed\nvm x: chunk 2 {h}\nalcove-guest: chunk 3 {h}\nalcove-guest: chunk 4 {}",
            &h[..20]
        );
        assert_eq!(acknowledged_chunks(serial.lines()), [(0, h.clone()), (3, h.clone())]);
        // The read-back boot's lines are not acknowledgements, nor these
        // read-back ones.
        let read = format!("alcove-guest: chunk-read 0 {h}\nalcove-guest: chunk 1 {h}\nalcove-guest: chunk-read 2 {}\nalcove-guest: chunks-read done", &h[..9]);
        assert_eq!(chunks_read(read.lines()), [(0, h.clone())]);
        assert_eq!(acknowledged_chunks(read.lines()), [(1, h)]);
    }

    #[test]
    fn a_read_error_line_gives_its_length_and_hash() {
        let serial = "alcove-guest: disk-read start 8\nalcove-guest: disk-read error after 4194304 bytes abc\r\n";
        assert_eq!(read_error(serial), Some((4194304, "abc".to_string())));
        assert_eq!(read_error("alcove-guest: disk-read 8 abc\n"), None);
    }

    #[test]
    fn grant_events_read_storageds_lines() {
        let serial = "[INFO ] storaged: pool: grant 0x10000: zones/a-disk0, zones/b (1 live)
                      [INFO ] storaged: pool: grant 0x10000 revoked (1 rings closed, 0 live)
                      [INFO ] storaged: pool: grant 0x10001: zones/a-disk0 (2 live)
                      [INFO ] storaged: pool: grant 0x10001 revoked (0 rings closed)
";
        assert_eq!(grant_events(serial.lines()), [(true, 1), (false, 0), (true, 2)]);
    }
}
