//! A third-party guest end to end: Debian's memtest86+ (an independent
//! program that speaks the Linux boot protocol, not Linux) boots as a VM on
//! Alcove nested in QEMU TCG, through the same `vm.json` path as `cargo
//! xtask run --vm`, with its screen on the serial port
//! (`console=ttyS0,115200`). The test reads that screen the way a user
//! would: memtest's banner, the memory size and the CPU count it found
//! (what the VM was given), every CPU testing in parallel, no errors, and
//! the tests advancing; then it stops the machine (memtest runs for ever).
//!
//! memtest parks its CPUs at barriers with `cli; hlt` and wakes them with
//! NMI IPIs, and counts cores from AMD's topology leaf: this is what the
//! guest checks in Alcove besides the loader (a `syssize` that rounds past
//! the end of the file).

use crate::Result;
use crate::harness::Ending;
use crate::image;
use crate::vm::{VmLog, VmPlan};
use std::io::{Read, Write};
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const ALIAS: &str = "memtest";
pub const RAM_MIB: u64 = 256;
pub const VCPUS: u32 = 4;
/// The last test number that must have started: the first pass runs #0
/// on one CPU, then #3, #4… on all of them, each start after a barrier
/// where the CPUs halt and are woken by NMIs.
pub const REACH_TEST: u32 = 4;

/// The test's VM description.
pub fn vm_json(kernel: &Path) -> String {
    let kernel = serde_json::Value::String(kernel.display().to_string());
    format!(
        "{{\n  \"alias\": \"{ALIAS}\",\n  \"brand\": \"bhyve\",\n  \"ram\": {RAM_MIB},\n  \"vcpus\": {VCPUS},\n  \
         \"kernel\": {kernel},\n  \"cmdline\": \"console=ttyS0,115200\"\n}}\n"
    )
}

/// What memtest's screen said, read from its serial output (VT100: text
/// placed with cursor moves; the moves are dropped, the text is kept).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Screen {
    pub banner: Option<String>,
    /// "Memory  :  256MB".
    pub memory_mb: Option<u64>,
    /// "CPU: 2 Cores 2 Threads".
    pub cores: Option<u32>,
    pub threads: Option<u32>,
    /// "SMP: 2T (PAR)": the CPUs memtest started and tests with.
    pub smp_threads: Option<u32>,
    /// "Using: All Cores" was shown (a test ran on every CPU at once).
    pub all_cores: bool,
    /// The highest "#N  [name]" test number shown.
    pub highest_test: Option<u32>,
    /// The largest "Errors: N" shown.
    pub errors: Option<u64>,
}

/// Drops VT100 escape sequences (`ESC [ params letter`), each replaced by a
/// `|` so text from two screen places does not run together.
pub fn strip_escapes(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\x1b' {
            out.push(c);
            continue;
        }
        if chars.peek() == Some(&'[') {
            chars.next();
            while let Some(&p) = chars.peek() {
                chars.next();
                if p.is_ascii_alphabetic() {
                    break;
                }
            }
        }
        out.push('|');
    }
    out
}

/// The number right after `key` (spaces skipped), for every occurrence.
fn numbers_after<'a>(text: &'a str, key: &'a str) -> impl Iterator<Item = u64> + 'a {
    text.match_indices(key).filter_map(move |(i, _)| {
        let rest = text[i + key.len()..].trim_start_matches(' ');
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    })
}

impl Screen {
    pub fn read(serial: &str) -> Self {
        let t = strip_escapes(serial);
        let last = |key: &str| numbers_after(&t, key).last();
        let banner = t.find("Memtest86+ v").map(|i| {
            t[i..].chars().take_while(|c| *c != '|' && *c != '\n').collect::<String>().trim_end().to_string()
        });
        let (mut cores, mut threads) = (None, None);
        if let Some(i) = t.rfind("CPU: ") {
            let words: Vec<&str> = t[i + 5..].split_whitespace().take(4).collect();
            if let [c, "Cores", n, "Threads"] = words.as_slice() {
                cores = c.parse().ok();
                threads = n.parse().ok();
            }
        }
        let memory_mb = t.find("Memory  :").and_then(|i| {
            let rest = t[i + "Memory  :".len()..].trim_start();
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            rest[digits.len()..].starts_with("MB").then(|| digits.parse().ok()).flatten()
        });
        let highest_test = t
            .match_indices('#')
            .filter_map(|(i, _)| {
                let rest = &t[i + 1..];
                let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                rest[digits.len()..].starts_with("  [").then(|| digits.parse::<u32>().ok()).flatten()
            })
            .max();
        Screen {
            banner,
            memory_mb,
            cores,
            threads,
            smp_threads: last("SMP: ").map(|n| n as u32),
            all_cores: t.contains("Using: All Cores"),
            highest_test,
            errors: numbers_after(&t, "Errors:").max(),
        }
    }

    /// What is still missing for a run of `vcpus` CPUs and `ram_mib` MiB
    /// (empty: memtest really ran on what it was given). memtest counts a
    /// little reserved memory out, so up to 4 MiB less than `ram_mib` is
    /// right; more is not.
    pub fn missing(&self, ram_mib: u64, vcpus: u32) -> Vec<String> {
        let mut m = Vec::new();
        if self.banner.is_none() {
            m.push("no \"Memtest86+ v...\" banner".to_string());
        }
        match self.memory_mb {
            Some(mb) if mb <= ram_mib && mb + 4 >= ram_mib => {}
            Some(mb) => m.push(format!("memtest found {mb} MB of memory, the VM has {ram_mib} MiB")),
            None => m.push("no \"Memory  : N MB\" line".into()),
        }
        match (self.cores, self.threads) {
            (Some(c), Some(t)) if c == vcpus && t == vcpus => {}
            (Some(c), Some(t)) => m.push(format!("memtest counted {c} cores, {t} threads; the VM has {vcpus} vCPUs")),
            _ => m.push("no \"CPU: N Cores N Threads\" line".into()),
        }
        match self.smp_threads {
            Some(n) if n == vcpus => {}
            Some(n) => m.push(format!("memtest started {n} CPUs (\"SMP: {n}T\"), the VM has {vcpus}")),
            None => m.push("no \"SMP: NT\" line".into()),
        }
        if !self.all_cores {
            m.push("no test ran on all cores (\"Using: All Cores\")".into());
        }
        match self.highest_test {
            Some(n) if n >= REACH_TEST => {}
            Some(n) => m.push(format!("the tests got as far as #{n}, not #{REACH_TEST}")),
            None => m.push("no test started (\"#N  [name]\")".into()),
        }
        m
    }

    /// Errors memtest reported (a broken VMM can show up as bad memory).
    pub fn error_count(&self) -> u64 {
        self.errors.unwrap_or(0)
    }
}

/// One run's outcome.
pub struct Outcome {
    pub name: String,
    pub screen: Screen,
    pub problems: Vec<String>,
    pub elapsed: Duration,
    pub log: std::path::PathBuf,
    pub serial: String,
}

impl Outcome {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }

    pub fn report(&self) {
        let secs = self.elapsed.as_secs_f64();
        let s = &self.screen;
        if self.ok() {
            println!(
                "  ok   {}: {} found {} MB and {} cores / {} threads, tests on all cores up to #{}, 0 errors; {secs:.1} s",
                self.name,
                s.banner.as_deref().unwrap_or("?"),
                s.memory_mb.unwrap_or(0),
                s.cores.unwrap_or(0),
                s.threads.unwrap_or(0),
                s.highest_test.unwrap_or(0)
            );
        } else {
            println!("  FAIL {} ({secs:.1} s):", self.name);
            for p in &self.problems {
                println!("         {p}");
            }
            let text = strip_escapes(&self.serial);
            let tail: String = text.chars().rev().take(600).collect::<Vec<_>>().into_iter().rev().collect();
            println!("         | ...{}", tail.replace('\n', "\n         | "));
            let mut again = self.problems.clone();
            again.extend(tail.lines().map(|l| format!("| {l}")));
            crate::tiers::remember_failure(&self.name, again);
            println!("       log: {}", self.log.display());
        }
    }
}

/// Boots memtest86+ (`bin`) as a VM on Alcove under QEMU (`EPYC,+svm,+npt`)
/// and watches its screen until it shows everything [`Screen::missing`]
/// asks for, or `timeout`; then stops QEMU.
pub fn run(kernel: &Path, bin: &Path, name: &str, timeout: Duration) -> Result<Outcome> {
    let dir = crate::out_dir().join("memtest-e2e");
    std::fs::create_dir_all(&dir)?;
    let json_path = dir.join("vm.json");
    std::fs::write(&json_path, vm_json(bin))?;
    let plan = VmPlan::load(&json_path)?;
    let system = plan.write_boot_files(&dir.join("boot"))?;
    let iso = image::iso_of(kernel, &format!("test-{}", name.replace('/', "-")), "", &system)?;
    let logs = crate::out_dir().join("logs");
    std::fs::create_dir_all(&logs)?;
    let log = logs.join(format!("{}.log", name.replace('/', "-")));

    let mut c = plan.qemu().command(&iso);
    c.args(["-monitor", "none", "-serial", "stdio"]);
    c.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(std::fs::File::create(log.with_extension("stderr"))?);
    let start = Instant::now();
    let mut child = c.spawn().map_err(|e| format!("starting QEMU: {e}"))?;
    let mut out = child.stdout.take().ok_or("no stdout pipe")?;
    let serial = Arc::new(Mutex::new(Vec::<u8>::new()));
    let reader = {
        let serial = serial.clone();
        let mut file = std::fs::File::create(&log)?;
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = out.read(&mut buf) {
                let _ = file.write_all(&buf[..n]);
                serial.lock().map(|mut s| s.extend_from_slice(&buf[..n])).ok();
            }
        })
    };
    // Watch the screen: done when nothing is missing, or when the machine
    // stopped, or at the timeout.
    let mut exited = None;
    loop {
        std::thread::sleep(Duration::from_millis(250));
        let text = String::from_utf8_lossy(&serial.lock().map(|s| s.clone()).unwrap_or_default()).into_owned();
        let screen = Screen::read(&text);
        if screen.missing(RAM_MIB, VCPUS).is_empty() || screen.error_count() > 0 {
            break;
        }
        if let Some(status) = child.try_wait()? {
            crate::emu::note_exit(&status);
            exited = Some(status.code().unwrap_or(-1));
            break;
        }
        if start.elapsed() >= timeout {
            break;
        }
    }
    let elapsed = start.elapsed();
    if exited.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let _ = reader.join();
    let serial = String::from_utf8_lossy(&serial.lock().map(|s| s.clone()).unwrap_or_default()).into_owned();
    let ending = match exited {
        Some(code) => Ending::Qemu(code),
        None => Ending::Timeout(timeout.as_secs()),
    };
    let screen = Screen::read(&serial);
    let problems = judge(&serial, &screen, &plan.name, ending, elapsed >= timeout);
    Ok(Outcome { name: name.into(), screen, problems, elapsed, log, serial })
}

/// Everything that fails the run. `timed_out`: the screen was still not
/// complete at the timeout.
pub fn judge(serial: &str, screen: &Screen, vm_name: &str, ending: Ending, timed_out: bool) -> Vec<String> {
    let mut problems = Vec::new();
    let lines: Vec<&str> = serial.lines().map(|l| l.trim_end_matches('\r')).collect();
    let log = VmLog::read(lines.iter().copied(), vm_name);
    problems.extend(log.problems);
    if log.started.is_none() {
        problems.push(format!("no \"vm {vm_name}: started: ...\" line: the VM never started"));
    }
    // memtest runs until it is stopped: any ending is a failure.
    for e in &log.endings {
        problems.push(format!("the VM ended ({e}) while memtest should still be testing"));
    }
    if let Some(l) = lines.iter().find(|l| l.contains("ALCOVE-FATAL")) {
        problems.push(format!("the kernel reported a fatal error: {l}"));
    }
    if let Ending::Qemu(code) = ending {
        problems.push(format!("QEMU exited with status {code} before memtest got far enough"));
    }
    if screen.error_count() > 0 {
        problems.push(format!("memtest reported {} memory errors", screen.error_count()));
    }
    let missing = screen.missing(RAM_MIB, VCPUS);
    if !missing.is_empty() {
        if timed_out {
            problems.push("timed out before memtest's screen showed everything".into());
        }
        problems.extend(missing);
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A piece of memtest86+ 6.10's serial screen as it came from a VM of
    /// 2 vCPUs and 256 MiB on Alcove (cursor moves between the fields).
    const SCREEN: &str = "\x1b[2J\x1b[?25l\x1b[1;1H\x1b[7m      Memtest86+ v6.10      \x1b[0m| AMD EPYC Processor   \
        \x1b[2;1HCLK/Temp: 2462MHz           | Pass   %   \x1b[6;1HMemory  :  256MB   382 MB/s | Pattern:    \
        \x1b[8;1HCPU: 2 Cores 2 Threads    SMP: 2T (PAR)   | Time:           Status: Testing  -  \
        \x1b[9;1HUsing:                                    | Pass:  0        Errors: 0           \
        \x1b[4;35H #0  [Address test, walking ones, no cache]   \x1b[9;1HUsing: Core #0      | Pass:  0        Errors: 0  \
        \x1b[4;35H #3  [Moving inversions, 1s & 0s]             \x1b[9;1HUsing: All Cores    | Pass:  0        Errors: 0  \
        \x1b[4;35H #4  [Moving inversions, 8 bit pattern]       \x1b[9;1HUsing: All Cores    | Pass:  0        Errors: 0  ";

    #[test]
    fn reads_memtests_screen() {
        let s = Screen::read(SCREEN);
        assert_eq!(s.banner.as_deref(), Some("Memtest86+ v6.10"));
        assert_eq!(s.memory_mb, Some(256));
        assert_eq!((s.cores, s.threads, s.smp_threads), (Some(2), Some(2), Some(2)));
        assert!(s.all_cores);
        assert_eq!(s.highest_test, Some(4));
        assert_eq!(s.errors, Some(0));
        assert!(s.missing(256, 2).is_empty(), "{:?}", s.missing(256, 2));
    }

    #[test]
    fn names_what_differs_from_the_vm() {
        let s = Screen::read(SCREEN);
        // Another VM shape: the same screen is wrong for it.
        let m = s.missing(512, 4);
        assert!(m.iter().any(|p| p.contains("found 256 MB") && p.contains("512 MiB")), "{m:?}");
        assert!(m.iter().any(|p| p.contains("2 cores, 2 threads")), "{m:?}");
        assert!(m.iter().any(|p| p.contains("started 2 CPUs")), "{m:?}");
        // What Alcove showed before its CPUID had AMD's topology leaf.
        let smt = Screen::read(&SCREEN.replace("CPU: 2 Cores", "CPU: 1 Cores"));
        assert_eq!(smt.missing(256, 2), ["memtest counted 1 cores, 2 threads; the VM has 2 vCPUs"]);
        // Memory a few MiB short is memtest's own reservation; 8 is not.
        assert!(Screen::read(&SCREEN.replace("256MB", "255MB")).missing(256, 2).is_empty());
        assert_eq!(Screen::read(&SCREEN.replace("256MB", "248MB")).missing(256, 2).len(), 1);
    }

    #[test]
    fn a_screen_that_stopped_early_is_incomplete() {
        // What Alcove showed before NMIs reached guests: the screen cleared,
        // then the VM ended as halted at memtest's first barrier.
        let s = Screen::read("\x1b[2J\x1b[?25l");
        let m = s.missing(256, 2);
        assert_eq!(m.len(), 6, "{m:?}");
        // Only test #0 on one CPU: not far enough.
        let cut = &SCREEN[..SCREEN.find(" #3").unwrap()];
        let m = Screen::read(cut).missing(256, 2);
        assert!(m.contains(&"no test ran on all cores (\"Using: All Cores\")".to_string()), "{m:?}");
        assert!(m.contains(&format!("the tests got as far as #0, not #{REACH_TEST}")), "{m:?}");
    }

    /// [`SCREEN`] as memtest shows it on the case's VM of [`VCPUS`].
    fn case_screen() -> String {
        SCREEN
            .replace("CPU: 2 Cores 2 Threads", &format!("CPU: {VCPUS} Cores {VCPUS} Threads"))
            .replace("SMP: 2T", &format!("SMP: {VCPUS}T"))
    }

    #[test]
    fn judging_fails_an_ended_vm_errors_and_a_timeout() {
        let started = format!("vm memtest: started: {VCPUS} vCPUs, 256 MiB\n");
        let good = format!("{started}{}", case_screen());
        // The 2-vCPU screen is wrong for the case's VM (unless it has 2).
        let two = format!("{started}{SCREEN}");
        assert_eq!(judge(&two, &Screen::read(&two), ALIAS, Ending::Timeout(60), false).is_empty(), VCPUS == 2);
        let s = Screen::read(&good);
        assert!(judge(&good, &s, ALIAS, Ending::Timeout(60), false).is_empty());
        let ended = format!("{good}\nvm memtest: ended: halted\n");
        let p = judge(&ended, &Screen::read(&ended), ALIAS, Ending::Qemu(33), false);
        assert!(p.iter().any(|p| p.contains("ended (halted)")), "{p:?}");
        assert!(p.iter().any(|p| p.contains("QEMU exited with status 33")), "{p:?}");
        let bad = good.replace("Errors: 0  \x1b[4;35H #4", "Errors: 3  \x1b[4;35H #4");
        let p = judge(&bad, &Screen::read(&bad), ALIAS, Ending::Timeout(60), false);
        assert_eq!(p, ["memtest reported 3 memory errors"]);
        let early = format!("{started}\x1b[2J");
        let p = judge(&early, &Screen::read(&early), ALIAS, Ending::Timeout(60), true);
        assert!(p[0].starts_with("timed out"), "{p:?}");
        let never = judge("", &Screen::default(), ALIAS, Ending::Timeout(60), true);
        assert!(never.iter().any(|p| p.contains("never started")), "{never:?}");
    }

    #[test]
    fn the_description_is_a_valid_vm() {
        let json = vm_json(Path::new("/t/images/memtest86-x64.bin"));
        let c = vmm_server::config::VmConfig::from_json(&json).unwrap();
        assert_eq!((c.alias.as_deref(), c.ram_mib, c.vcpus), (Some(ALIAS), RAM_MIB, VCPUS));
        assert_eq!(c.kernel, "/t/images/memtest86-x64.bin");
        assert_eq!(c.cmdline, "console=ttyS0,115200");
        assert!(c.initrd.is_none() && c.disks.is_empty());
    }
}
