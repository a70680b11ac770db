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
    pub extra: Vec<String>,
}

impl Default for Qemu {
    fn default() -> Self {
        Self { smp: 2, mem_mib: 512, uefi: false, cpu: "qemu64,+svm,+npt".into(), icount: false, one_thread: false, extra: vec![] }
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
        c.args(["-display", "none", "-no-reboot"])
            .args(["-cpu", &self.cpu])
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
        let ending = match wait(child, timeout, diag_of(&c).as_deref(), &log)? {
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
        let ending = match wait(child, timeout, None, &log)? {
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
        Some(t) => wait(child, t, diag_of(&c).as_deref(), &log)?,
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

/// Waits for the child up to `timeout`; kills it and returns `None` if it is
/// still running then, after saving what its diagnostic monitor (`diag`,
/// see [`Qemu::command`]) says of the machine beside `log`.
fn wait(mut child: Child, timeout: Duration, diag: Option<&Path>, log: &Path) -> Result<Option<std::process::ExitStatus>> {
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            note_exit(&status);
            break Some(status);
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
    eprintln!("  machine state at the timeout: {}", out.display());
    for l in text.lines().filter(|l| l.starts_with("RIP=") || l.starts_with("CPU#") || l.contains(" HLT=")) {
        eprintln!("    {}", l.trim_end());
    }
}
