//! Running an ISO under QEMU or Bochs with the serial port captured to a file
//! under `target/alcove/logs/`, a host-side timeout, and the ending recorded
//! for the harness.

use crate::harness::Ending;
use crate::{Result, out_dir};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const OVMF: &str = "/usr/share/ovmf/OVMF.fd";

/// The signal that last ended an emulator without the harness sending it
/// (0: none since [`take_crash`]). QEMU 7.2's TCG (Debian 12's) segfaults
/// now and then: a memory-map change on one vCPU thread swaps the dispatch
/// table another vCPU is using for MMIO (`tcg_commit`, fixed in QEMU 8.2),
/// and QEMU dereferences a NULL `MemoryRegion` (dmesg: `segfault at a0 ...
/// in qemu-system-x86_64`). That is the emulator's crash, not a result of
/// the system under test; `tiers` runs such a case once more.
static CRASH: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

/// Records how an emulator ended when the harness did not end it: a signal
/// is its crash.
pub fn note_exit(status: &std::process::ExitStatus) {
    use std::os::unix::process::ExitStatusExt;
    if let Some(sig) = status.signal() {
        CRASH.store(sig, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Whether an emulator crashed (see [`note_exit`]) since the last call,
/// and of which signal; clears it.
pub fn take_crash() -> Option<i32> {
    match CRASH.swap(0, std::sync::atomic::Ordering::SeqCst) {
        0 => None,
        sig => Some(sig),
    }
}

/// Ends a machine the harness is done with: notes whether it had ended by
/// itself ([`note_exit`]), then kills it and reaps it.
pub fn stop(child: &mut Child) {
    if let Ok(Some(status)) = child.try_wait() {
        note_exit(&status);
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A command for an emulator that dies with this process (util-linux's
/// `setpriv --pdeathsig KILL`, which then execs it): a driver stopped by a
/// signal or a timeout leaves no machine running, not even Bochs, which
/// ignores SIGTERM.
pub fn emulator(program: &str) -> Command {
    let mut c = Command::new("setpriv");
    c.args(["--pdeathsig", "KILL", "--", program]);
    c
}

/// A QEMU machine.
#[derive(Clone, Debug)]
pub struct Qemu {
    pub smp: u32,
    pub mem_mib: u32,
    pub uefi: bool,
    pub cpu: String,
    /// `-icount shift=0`: one instruction per virtual nanosecond, so TSC
    /// deltas count instructions (benchmarks).
    pub icount: bool,
    /// `-accel tcg,thread=single`: every CPU emulated by one host thread,
    /// round robin, instead of one thread per CPU (QEMU's default). With a
    /// thread per CPU, QEMU 7.2's SVM emulation now and then left the CPU
    /// with the host's registers and the guest's paging (README, "QEMU's
    /// threads"); every machine that runs a nested guest on two CPUs runs
    /// this way (the vm suite, `VmPlan::qemu`, the zone, shell, API and demo
    /// machines). `ALCOVE_QEMU_TCG_THREAD=single|multi`
    /// overrides it for every QEMU run without `icount` (which is one
    /// thread anyway).
    pub one_thread: bool,
    /// Where QEMU logs each CPU's state before a CPU reset (`-d
    /// cpu_reset,guest_errors -D FILE`, with guest errors). The machine
    /// then resets instead of exiting (no `-no-reboot`), so QEMU writes
    /// down the state it reset from (RIP, CR0-CR4, GDT, IDT, EFER), and the
    /// harness ends it at once (see [`reset_dumps`]), reporting QEMU's exit
    /// status 0 as `-no-reboot` would have. Costs nothing while no CPU
    /// resets (a few dumps at power-on and at an AP's INIT).
    pub reset_log: Option<PathBuf>,
    pub extra: Vec<String>,
}

impl Default for Qemu {
    fn default() -> Self {
        Self {
            smp: 2,
            mem_mib: 512,
            uefi: false,
            cpu: "qemu64,+svm,+npt".into(),
            icount: false,
            one_thread: false,
            reset_log: None,
            extra: vec![],
        }
    }
}

impl Qemu {
    /// The command line, without where serial goes.
    pub fn command(&self, iso: &Path) -> Command {
        let mut c = emulator("qemu-system-x86_64");
        // A second monitor on a socket, read only when the harness times a
        // run out ([`diag_dump`]): the CPUs' state at the stall.
        let diag = diag_socket_path();
        c.arg("-chardev")
            .arg(format!("socket,id={DIAG_ID},path={},server=on,wait=off", diag.display()))
            .args(["-mon", &format!("chardev={DIAG_ID},mode=readline")]);
        c.args(["-display", "none"]);
        match &self.reset_log {
            Some(log) => {
                let _ = fs::remove_file(log);
                c.args(["-d", RESET_LOG_ITEMS, "-D"]).arg(log);
            }
            None => {
                c.arg("-no-reboot");
            }
        }
        c.args(["-cpu", &self.cpu])
            .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"])
            .arg("-cdrom")
            .arg(iso)
            .args(["-boot", "d"]);
        if !self.extra.iter().any(|a| a == "-smp") {
            c.args(["-smp", &self.smp.to_string()]);
        }
        if !self.extra.iter().any(|a| a == "-m") {
            c.args(["-m", &self.mem_mib.to_string()]);
        }
        if self.uefi {
            c.args(["-bios", OVMF]);
        }
        if self.icount {
            c.args(["-icount", "shift=0"]);
        }
        let one_thread = match std::env::var("ALCOVE_QEMU_TCG_THREAD").as_deref() {
            Ok("single") => true,
            Ok("multi") => false,
            _ => self.one_thread,
        };
        if one_thread && !self.icount {
            c.args(["-accel", "tcg,thread=single"]);
        }
        c.args(&self.extra);
        c
    }

    /// Runs headless with serial to `logs/NAME.log`; returns the ending, the
    /// serial output and how long it took.
    pub fn run_captured(&self, iso: &Path, name: &str, timeout: Duration) -> Result<Run> {
        let log = log_path(name)?;
        let _ = fs::remove_file(&log);
        let mut c = self.command(iso);
        c.args(["-monitor", "none", "-serial"]).arg(format!("file:{}", log.display()));
        let stderr = fs::File::create(log.with_extension("stderr"))?;
        c.stdin(Stdio::null()).stdout(Stdio::null()).stderr(stderr);
        let start = Instant::now();
        let child = c.spawn().map_err(|e| format!("starting qemu-system-x86_64: {e}"))?;
        let ending = match wait(child, timeout, self.reset_log.as_deref(), diag_of(&c).as_deref(), &log)? {
            Some(status) => Ending::Qemu(status.code().unwrap_or(-1)),
            None => Ending::Timeout(timeout.as_secs()),
        };
        let elapsed = start.elapsed();
        let serial = String::from_utf8_lossy(&fs::read(&log).unwrap_or_default()).into_owned();
        Ok(Run { ending, serial, log, elapsed })
    }
}

/// A Bochs machine (one CPU: Debian's Bochs is built without SMP).
#[derive(Clone, Debug)]
pub struct Bochs {
    pub cpu_model: String,
    pub mem_mib: u32,
}

impl Default for Bochs {
    fn default() -> Self {
        Self { cpu_model: "corei7_skylake_x".into(), mem_mib: 256 }
    }
}

impl Bochs {
    pub fn run_captured(&self, iso: &Path, name: &str, timeout: Duration) -> Result<Run> {
        let log = log_path(name)?;
        let rc = log.with_extension("bochsrc");
        let cmds = log.with_extension("bochscmds");
        let bochs_log = log.with_extension("bochs");
        let _ = fs::remove_file(&log);
        fs::write(
            &rc,
            format!(
                "megs: {mem}\n\
                 romimage: file=/usr/share/bochs/BIOS-bochs-latest\n\
                 vgaromimage: file=/usr/share/bochs/VGABIOS-lgpl-latest\n\
                 cpu: model={model}, count=1, ips=200000000, reset_on_triple_fault=0\n\
                 ata0-master: type=cdrom, path={iso}, status=inserted\n\
                 boot: cdrom\n\
                 com1: enabled=1, mode=file, dev={serial}\n\
                 display_library: term\n\
                 speaker: enabled=0\n\
                 sound: waveoutdrv=dummy, waveindrv=dummy, midioutdrv=dummy\n\
                 clock: sync=none, time0=local\n\
                 log: {blog}\n",
                mem = self.mem_mib,
                model = self.cpu_model,
                iso = iso.display(),
                serial = log.display(),
                blog = bochs_log.display(),
            ),
        )?;
        // Without a command file Bochs stops in its debugger; `c` continues.
        fs::write(&cmds, "c\n")?;
        let out = fs::File::create(log.with_extension("stdout"))?;
        let start = Instant::now();
        let child = emulator("bochs")
            .arg("-q")
            .arg("-f")
            .arg(&rc)
            .arg("-rc")
            .arg(&cmds)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .env("TERM", "dumb")
            .spawn()
            .map_err(|e| format!("starting bochs: {e}"))?;
        let ending = match wait(child, timeout, None, None, &log)? {
            Some(_) => {
                let blog = fs::read_to_string(&bochs_log).unwrap_or_default();
                Ending::Bochs { shutdown: blog.contains("Shutdown port: shutdown requested") }
            }
            None => Ending::Timeout(timeout.as_secs()),
        };
        let elapsed = start.elapsed();
        let serial = String::from_utf8_lossy(&fs::read(&log).unwrap_or_default()).into_owned();
        Ok(Run { ending, serial, log, elapsed })
    }
}

/// A run whose serial output came through a pipe: every line with the time
/// it arrived, counted from starting the emulator.
pub struct TimedRun {
    pub run: Run,
    pub lines: Vec<(Duration, String)>,
}

impl TimedRun {
    /// When the first line starting with `prefix` arrived.
    pub fn time_of(&self, prefix: &str) -> Option<Duration> {
        self.lines.iter().find(|(_, l)| l.starts_with(prefix)).map(|(t, _)| *t)
    }
}

/// Runs an emulator whose serial port is its stdout (`-serial stdio` or
/// `mon:stdio`): each byte goes to `logs/NAME.log` (and to this terminal
/// with `echo`, which also hands the emulator this terminal's stdin and
/// stderr), each line is stamped as it arrives, and the emulator is killed
/// after `timeout`.
pub fn capture_timed(c: Command, name: &str, timeout: Option<Duration>, echo: bool) -> Result<TimedRun> {
    capture_timed_answering(c, name, timeout, echo, None)
}

/// As [`capture_timed`]; with `answer = Some((prompt, text))` the first
/// output line that contains `prompt` gets `text` typed on the emulator's
/// standard input (its serial port with `-serial stdio`), once.
pub fn capture_timed_answering(
    c: Command,
    name: &str,
    timeout: Option<Duration>,
    echo: bool,
    answer: Option<(String, Vec<u8>)>,
) -> Result<TimedRun> {
    capture_timed_script(c, name, timeout, echo, answer.into_iter().collect())
}

/// As [`capture_timed`], typing a script: each `(prompt, text)` in turn
/// waits for an output line that contains `prompt` (after the previous
/// step's text was typed), then types `text` on the emulator's standard
/// input (its serial port with `-serial stdio`).
pub fn capture_timed_script(
    mut c: Command,
    name: &str,
    timeout: Option<Duration>,
    echo: bool,
    script: Vec<(String, Vec<u8>)>,
) -> Result<TimedRun> {
    use std::io::{Read, Write};
    let log = log_path(name)?;
    let mut file = fs::File::create(&log)?;
    c.stdout(Stdio::piped());
    if echo {
        c.stdin(Stdio::inherit()).stderr(Stdio::inherit());
    } else {
        let stdin = if script.is_empty() { Stdio::null() } else { Stdio::piped() };
        c.stdin(stdin).stderr(fs::File::create(log.with_extension("stderr"))?);
    }
    // The emulator's name, behind `setpriv ... --`.
    let args: Vec<String> = c.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
    let program = match args.iter().position(|a| a == "--") {
        Some(i) if c.get_program() == "setpriv" => args.get(i + 1).cloned().unwrap_or_default(),
        _ => c.get_program().to_string_lossy().into_owned(),
    };
    let reset_log = reset_log_of(&args);
    let start = Instant::now();
    let mut child = c.spawn().map_err(|e| format!("starting {program}: {e}"))?;
    let mut out = child.stdout.take().ok_or("no stdout pipe")?;
    let mut stdin = child.stdin.take();
    let mut script = script.into_iter().peekable();
    let reader = std::thread::spawn(move || -> (Vec<u8>, Vec<(Duration, String)>) {
        let (mut all, mut lines, mut line) = (Vec::new(), Vec::new(), Vec::new());
        let mut buf = [0u8; 4096];
        let mut term = std::io::stdout();
        while let Ok(n @ 1..) = out.read(&mut buf) {
            let now = start.elapsed();
            let chunk = &buf[..n];
            let _ = file.write_all(chunk);
            if echo {
                let _ = term.write_all(chunk);
                let _ = term.flush();
            }
            all.extend_from_slice(chunk);
            for &b in chunk {
                if b == b'\n' {
                    let text = String::from_utf8_lossy(&line).trim_end_matches('\r').to_string();
                    if let Some(input) = stdin.as_mut()
                        && script.peek().is_some_and(|(prompt, _)| text.contains(prompt.as_str()))
                        && let Some((_, typed)) = script.next()
                    {
                        // Kept open, as a terminal would be, until the
                        // emulator's output ends.
                        let _ = input.write_all(&typed);
                        let _ = input.flush();
                    }
                    lines.push((now, text));
                    line.clear();
                } else {
                    line.push(b);
                }
            }
        }
        if !line.is_empty() {
            lines.push((start.elapsed(), String::from_utf8_lossy(&line).into_owned()));
        }
        drop(stdin);
        (all, lines)
    });
    let status = match timeout {
        Some(t) => wait(child, t, reset_log.as_deref(), diag_of(&c).as_deref(), &log)?,
        None => {
            let status = child.wait()?;
            note_exit(&status);
            Some(status)
        }
    };
    let elapsed = start.elapsed();
    let (all, lines) = reader.join().map_err(|_| "the serial reader thread panicked")?;
    let ending = match status {
        Some(s) => Ending::Qemu(s.code().unwrap_or(-1)),
        None => Ending::Timeout(timeout.unwrap_or_default().as_secs()),
    };
    let serial = String::from_utf8_lossy(&all).into_owned();
    Ok(TimedRun { run: Run { ending, serial, log, elapsed }, lines })
}

/// What a captured run produced.
#[derive(Clone)]
pub struct Run {
    pub ending: Ending,
    pub serial: String,
    pub log: PathBuf,
    pub elapsed: Duration,
}

pub fn log_path(name: &str) -> Result<PathBuf> {
    let dir = out_dir().join("logs");
    fs::create_dir_all(&dir)?;
    Ok(dir.join(format!("{}.log", name.replace('/', "-"))))
}

/// QEMU's log items for [`Qemu::reset_log`].
const RESET_LOG_ITEMS: &str = "cpu_reset,guest_errors";

/// The file a QEMU command line logs CPU resets to ([`Qemu::reset_log`]).
fn reset_log_of(args: &[String]) -> Option<PathBuf> {
    let items = args.iter().position(|a| a == "-d").and_then(|i| args.get(i + 1))?;
    if !items.split(',').any(|i| i == "cpu_reset") {
        return None;
    }
    args.iter().position(|a| a == "-D").and_then(|i| args.get(i + 1)).map(PathBuf::from)
}

/// One CPU's state as QEMU logged it before a reset (`-d cpu_reset`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResetDump {
    pub cpu: u32,
    /// The dump's lines that say where the CPU was: RIP, CS, GDT, IDT,
    /// CR0-CR4 and EFER.
    pub lines: Vec<String>,
}

/// The CPU dumps of `log` (QEMU's `-d cpu_reset` output) taken from a
/// running system: with paging on (CR0.PG), which the dumps QEMU takes at
/// power-on and at an AP's INIT (a CPU in its reset state or waiting for
/// SIPI) never have. Non-empty means the machine reset while it ran.
pub fn reset_dumps(log: &str) -> Vec<ResetDump> {
    let mut dumps = Vec::new();
    let mut current: Option<ResetDump> = None;
    let mut paging = false;
    for line in log.lines() {
        if let Some(rest) = line.strip_prefix("CPU Reset (CPU ") {
            if let Some(d) = current.take().filter(|_| paging) {
                dumps.push(d);
            }
            paging = false;
            let cpu = rest.trim_end_matches(')').parse().unwrap_or(u32::MAX);
            current = Some(ResetDump { cpu, lines: Vec::new() });
            continue;
        }
        let Some(d) = current.as_mut() else { continue };
        let t = line.trim_start();
        if let Some(cr0) = t.strip_prefix("CR0=") {
            let hex = cr0.split_whitespace().next().unwrap_or("");
            paging = u64::from_str_radix(hex, 16).is_ok_and(|v| v & (1 << 31) != 0);
        }
        if ["RIP=", "EIP=", "CS =", "GDT=", "IDT=", "CR0=", "EFER="].iter().any(|p| t.starts_with(p)) {
            d.lines.push(line.trim_end().to_string());
        }
    }
    if let Some(d) = current.filter(|_| paging) {
        dumps.push(d);
    }
    dumps
}

/// What a QEMU reset log ([`Qemu::reset_log`]) says went wrong: whether
/// the machine triple-faulted (QEMU's `Triple fault` line; a reset without
/// it is a reset request, e.g. a write to port 0xcf9 or 0x64), each CPU's
/// state before the reset, and the guest errors QEMU logged. Empty when
/// the machine did not reset.
pub fn reset_report(log: &Path) -> Vec<String> {
    let text = fs::read_to_string(log).unwrap_or_default();
    let dumps = reset_dumps(&text);
    if dumps.is_empty() {
        return Vec::new();
    }
    let cause = if text.lines().any(|l| l.trim() == "Triple fault") { "a triple fault" } else { "a reset request (no triple fault)" };
    let mut report = vec![format!("the whole machine reset: {cause} (QEMU's log: {})", log.display())];
    for d in &dumps {
        report.push(format!("CPU {} before the reset: {}", d.cpu, d.lines.join(" | ")));
    }
    let errors: Vec<&str> = text.lines().filter(|l| !l.is_empty() && !is_dump_line(l)).take(8).collect();
    if !errors.is_empty() {
        report.push(format!("QEMU's other log lines: {}", errors.join(" | ")));
    }
    report
}

/// Whether a line of QEMU's log belongs to a CPU dump (`RAX=…`, `ES =…`,
/// `XMM00=…`) or names a reset.
fn is_dump_line(line: &str) -> bool {
    let t = line.trim_start();
    t.starts_with("CPU Reset (CPU ")
        || t == "Triple fault"
        || t.split_once('=').is_some_and(|(k, _)| {
            let k = k.trim_end();
            !k.is_empty() && k.len() <= 6 && k.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
        })
}

/// Waits for the child up to `timeout`; kills it and returns `None` if it is
/// still running then, after saving what its diagnostic monitor (`diag`,
/// see [`Qemu::command`]) says of the machine beside `log`. With
/// `reset_log` (a [`Qemu::reset_log`] machine, which resets instead of
/// exiting), a dump of a running CPU there ends the machine at once, with
/// the status 0 `-no-reboot` would have given.
fn wait(
    mut child: Child,
    timeout: Duration,
    reset_log: Option<&Path>,
    diag: Option<&Path>,
    log: &Path,
) -> Result<Option<std::process::ExitStatus>> {
    use std::os::unix::process::ExitStatusExt;
    let deadline = Instant::now() + timeout;
    let mut seen_len = 0;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            note_exit(&status);
            break Some(status);
        }
        if let Some(log) = reset_log
            && let Ok(meta) = fs::metadata(log)
            && meta.len() != seen_len
        {
            seen_len = meta.len();
            if !reset_dumps(&fs::read_to_string(log).unwrap_or_default()).is_empty() {
                // Let QEMU finish the other CPUs' dumps (it writes them
                // one after another while it resets the machine).
                std::thread::sleep(Duration::from_millis(200));
                let _ = child.kill();
                let _ = child.wait();
                break Some(std::process::ExitStatus::from_raw(0));
            }
        }
        if Instant::now() >= deadline {
            if let Some(sock) = diag {
                diag_dump(sock, &log.with_extension("monitor"));
            }
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    if let Some(sock) = diag {
        let _ = fs::remove_file(sock);
    }
    Ok(status)
}

/// The chardev id of the harness's diagnostic monitor.
const DIAG_ID: &str = "alcove-diag";

/// A socket path for one machine's diagnostic monitor (short: a Unix
/// socket's path has at most 107 bytes).
fn diag_socket_path() -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    std::env::temp_dir().join(format!("alcove-diag-{}-{n}.sock", std::process::id()))
}

/// The diagnostic monitor's socket named on `c`'s command line, if any.
fn diag_of(c: &Command) -> Option<PathBuf> {
    let prefix = format!("socket,id={DIAG_ID},path=");
    c.get_args().find_map(|a| {
        let rest = a.to_str()?.strip_prefix(&prefix)?;
        Some(PathBuf::from(rest.split(',').next()?))
    })
}

/// Asks a machine that stopped making progress for its CPUs' registers
/// and local APICs (QEMU shows a CPU in a nested guest with the guest's
/// registers) and writes the answer to `out`; says where on stderr, with
/// each CPU's RIP and halt state. Best effort: a monitor that does not
/// answer leaves a note in `out`.
fn diag_dump(sock: &Path, out: &Path) {
    use std::io::{Read, Write};
    let text = (|| -> std::io::Result<String> {
        let mut s = std::os::unix::net::UnixStream::connect(sock)?;
        s.set_read_timeout(Some(Duration::from_millis(1500)))?;
        s.write_all(b"info cpus\ninfo registers -a\ninfo lapic 0\ninfo lapic 1\ninfo pic\n")?;
        // Then an NMI: the kernel answers one it did not send by printing
        // its threads, timeouts and vCPUs on the serial port (`kernel::dump`).
        s.write_all(b"nmi\n")?;
        let (mut all, mut buf) = (Vec::new(), [0u8; 8192]);
        loop {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => all.extend_from_slice(&buf[..n]),
                Err(_) => break, // read timeout: the monitor said all it will
            }
        }
        // The readline monitor echoes each typed key with cursor moves:
        // those lines are dropped.
        let text = String::from_utf8_lossy(&all);
        Ok(text.lines().filter(|l| !l.contains('\u{1b}')).map(|l| format!("{l}\n")).collect())
    })()
    .unwrap_or_else(|e| format!("the diagnostic monitor did not answer: {e}\n"));
    let _ = fs::write(out, &text);
    eprintln!("  machine state at the timeout: {} (the kernel's own, after an NMI, in the serial log's [dump ] lines)", out.display());
    for l in text.lines().filter(|l| l.starts_with("RIP=") || l.starts_with("CPU#") || l.contains(" HLT=")) {
        eprintln!("    {}", l.trim_end());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// QEMU's dumps at power-on (real mode, no paging), an AP's INIT, then
    /// a running CPU's (long mode) at a triple fault, and a guest error.
    const LOG: &str = "CPU Reset (CPU 0)\n\
        EIP=0000fff0 EFL=00000002 [-------] CPL=0 II=0 A20=1 SMM=0 HLT=0\n\
        CR0=60000010 CR2=00000000 CR3=00000000 CR4=00000000\n\
        CPU Reset (CPU 1)\n\
        CPU Reset (CPU 1)\n\
        EIP=00000000 EFL=00000002 [-------] CPL=0 II=0 A20=1 SMM=0 HLT=1\n\
        CR0=60000010 CR2=00000000 CR3=00000000 CR4=00000000\n\
        Invalid write at addr 0x1234, size 4, region '(null)', reason: rejected\n\
        Triple fault\n\
        CPU Reset (CPU 0)\n\
        RAX=0000000000000000 RBX=0000000000000001 RCX=0000000000000002 RDX=0000000000000003\n\
        RIP=ffffffff80012345 RFL=00000046 [---Z-P-] CPL=0 II=0 A20=1 SMM=0 HLT=0\n\
        ES =0000 0000000000000000 00000000 00000000\n\
        CS =0008 0000000000000000 ffffffff 00af9b00 DPL=0 CS64 [-RA]\n\
        GDT=     ffffffff80100000 0000003f\n\
        IDT=     ffffffff80101000 00000fff\n\
        CR0=80050033 CR2=fffffe0000000080 CR3=0000000001000000 CR4=00000620\n\
        EFER=0000000000001d01\n\
        XMM00=0000000000000000 0000000000000000 XMM01=0000000000000000 0000000000000000\n\
        CPU Reset (CPU 1)\n\
        RIP=ffffffff80020000 RFL=00000202 [-------] CPL=0 II=0 A20=1 SMM=0 HLT=1\n\
        CR0=80050033 CR2=0000000000000000 CR3=0000000001000000 CR4=00000620\n";

    #[test]
    fn only_the_dumps_of_running_cpus_count_as_a_reset() {
        let dumps = reset_dumps(LOG);
        assert_eq!(dumps.iter().map(|d| d.cpu).collect::<Vec<_>>(), [0, 1]);
        assert!(dumps[0].lines[0].starts_with("RIP=ffffffff80012345"));
        assert!(dumps[0].lines.iter().any(|l| l.starts_with("CR0=80050033 CR2=fffffe0000000080")));
        assert!(dumps[0].lines.iter().any(|l| l.starts_with("IDT=")));
        assert!(!dumps[0].lines.iter().any(|l| l.starts_with("XMM00") || l.starts_with("RAX")));
        // Power-on and INIT dumps alone: no reset.
        let power_on = LOG.split("Triple fault").next().unwrap();
        assert!(reset_dumps(power_on).is_empty());
        assert!(reset_dumps("").is_empty());
        assert!(reset_dumps("CPU Reset (CPU x)\nCR0=zz\n").is_empty());
    }

    #[test]
    fn the_report_names_a_triple_fault_or_a_reset_request_and_keeps_guest_errors() {
        let dir = std::env::temp_dir().join(format!("alcove-emu-test-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let log = dir.join("reset.log");
        fs::write(&log, LOG).unwrap();
        let r = reset_report(&log);
        assert!(r[0].contains("a triple fault"), "{r:?}");
        assert!(r[1].starts_with("CPU 0 before the reset: RIP=ffffffff80012345"), "{r:?}");
        assert!(r[3].contains("Invalid write at addr 0x1234") && !r[3].contains("RAX="), "{r:?}");
        fs::write(&log, LOG.replace("Triple fault\n", "")).unwrap();
        assert!(reset_report(&log)[0].contains("a reset request"));
        let power_on = LOG.split("Triple fault").next().unwrap();
        fs::write(&log, power_on).unwrap();
        assert!(reset_report(&log).is_empty());
        assert!(reset_report(&dir.join("absent.log")).is_empty());
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_reset_log_is_found_only_with_cpu_reset_logging() {
        let args = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(reset_log_of(&args(&["-d", "cpu_reset,guest_errors", "-D", "/x.log"])), Some(PathBuf::from("/x.log")));
        assert_eq!(reset_log_of(&args(&["-d", "int", "-D", "/x.log"])), None);
        assert_eq!(reset_log_of(&args(&["-no-reboot"])), None);
        let q = Qemu { reset_log: Some(PathBuf::from("/tmp/r.log")), ..Qemu::default() };
        let c = q.command(Path::new("/x.iso"));
        let a: Vec<String> = c.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
        assert!(!a.iter().any(|a| a == "-no-reboot"), "{a:?}");
        assert_eq!(reset_log_of(&a), Some(PathBuf::from("/tmp/r.log")));
        let a: Vec<String> = Qemu::default().command(Path::new("/x.iso")).get_args().map(|a| a.to_string_lossy().into_owned()).collect();
        assert!(a.iter().any(|a| a == "-no-reboot") && reset_log_of(&a).is_none());
    }
}
