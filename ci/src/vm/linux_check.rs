//! Judging a Linux test guest's serial log (`images/linux/init`): every
//! line the guest promises, each boot's serial lines in the order the
//! guest printed them, every guest line before the VMM's line that ends
//! that boot (`vm NAME: guest reboot` or `vm NAME: ended: ...`).
//!
//! The serial port (ttyS0) and the virtio console (hvc0) are separate
//! streams inside the guest: their relative order is the guest's own
//! business (the tty sends on interrupts, hvc0 writes synchronously), so
//! the hvc0 line is asked for anywhere within its boot.

use super::{VmEnding, VmLog};

/// One line the guest must print.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Want {
    /// Exactly this line.
    Exact(String),
    /// A line starting with this (the rest varies: kernel release, module
    /// list).
    Prefix(&'static str),
    /// `alcove-guest: hwrng <name> <16 hex digits>` from a virtio-rng.
    Hwrng,
}

/// The hwrng line's value for 32 zero bytes (the first 16 hex digits of
/// their SHA-256): what a source that returns nothing would give.
const ZERO_BYTES_HASH16: &str = "66687aadf862bd77";

impl Want {
    fn exact(s: impl Into<String>) -> Self {
        Want::Exact(s.into())
    }

    fn matches(&self, line: &str) -> bool {
        match self {
            Want::Exact(s) => line == s,
            Want::Prefix(p) => line.starts_with(p),
            Want::Hwrng => line.starts_with("alcove-guest: hwrng "),
        }
    }

    /// The start a line of this kind has whatever its value (for naming
    /// what came instead).
    fn kind(&self) -> Option<&str> {
        match self {
            Want::Exact(s) => ["alcove-guest: nproc=", "alcove-guest: vda-sha256 ", "alcove-guest: typed "]
                .into_iter()
                .find(|p| s.starts_with(p)),
            Want::Prefix(p) => Some(p),
            Want::Hwrng => Some("alcove-guest: hwrng "),
        }
    }

    fn show(&self) -> String {
        match self {
            Want::Exact(s) => format!("{s:?}"),
            Want::Prefix(p) => format!("{:?}", format!("{p}...")),
            Want::Hwrng => "\"alcove-guest: hwrng virtio_rng.N <16 hex digits>\"".into(),
        }
    }
}

/// What one boot of the guest prints: `serial` in this order on ttyS0,
/// `hvc0` anywhere within the boot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Boot {
    pub serial: Vec<Want>,
    pub hvc0: Vec<Want>,
}

/// The boots of a run of the test guest, given the vCPUs, the host's hash
/// of its disk (`None`: no disk) and whether it reboots once
/// (`alcove.reboot-once`, with a disk only).
/// `typed`: the first boot asks for a typed line (`alcove.console-echo`),
/// chosen apart from the reboot: a machine the harness cannot type at
/// (Bochs) still reboots once.
pub fn expected_boots(nproc: u32, disk_sha256: Option<&str>, reboot: bool, typed: bool) -> Vec<Boot> {
    let start = || {
        vec![
            Want::exact("alcove-guest: init started"),
            Want::Prefix("alcove-guest: kernel "),
            Want::Prefix("alcove-guest: modules loaded"),
            Want::Exact(format!("alcove-guest: nproc={nproc}")),
            Want::Hwrng,
        ]
    };
    let hvc0 = vec![Want::exact("alcove-guest: hvc0 says hello")];
    let mut first = start();
    if typed {
        first.push(Want::exact("alcove-guest: type a line"));
        first.push(Want::Exact(format!("alcove-guest: typed {}", crate::linux::TYPED)));
    }
    if let Some(h) = disk_sha256 {
        first.push(Want::Exact(format!("alcove-guest: vda-sha256 {h}  /dev/vda")));
        first.push(Want::exact("alcove-guest: vda-marker written"));
    }
    let reboot = reboot && disk_sha256.is_some();
    if !reboot {
        first.push(Want::exact("alcove-guest: poweroff"));
        return vec![Boot { serial: first, hvc0 }];
    }
    first.push(Want::exact("alcove-guest: reboot"));
    let mut second = start();
    second.push(Want::exact("alcove-guest: marker found: second boot"));
    second.push(Want::exact("alcove-guest: poweroff"));
    vec![Boot { serial: first, hvc0: hvc0.clone() }, Boot { serial: second, hvc0 }]
}

/// One boot's lines: from its `vm NAME: started` line to the `guest
/// reboot` or `ended:` line that closes it (or the end of the log), and
/// the lines after that close up to the next start.
#[derive(Default)]
struct BootLines<'a> {
    lines: Vec<&'a str>,
    late: Vec<&'a str>,
}

fn boots<'a>(lines: &[&'a str], vm_name: &str) -> Vec<BootLines<'a>> {
    let started = format!("vm {vm_name}: started: ");
    let rebooted = format!("vm {vm_name}: guest reboot");
    let ended = format!("vm {vm_name}: ended: ");
    let mut out: Vec<BootLines<'a>> = Vec::new();
    let mut open = false;
    for &l in lines {
        if l.starts_with(&started) {
            out.push(BootLines::default());
            open = true;
        } else if l == rebooted || l.starts_with(&ended) {
            open = false;
        } else if let Some(b) = out.last_mut() {
            if open { b.lines.push(l) } else { b.late.push(l) }
        }
    }
    out
}

/// Checks one boot's lines; `n` names the boot in messages (1-based).
fn check_boot(lines: &[&str], want: &Boot, n: usize, total: usize, after: &[&str], problems: &mut Vec<String>) -> Option<String> {
    let which = if total > 1 { format!("boot {n}: ") } else { String::new() };
    let mut at = 0;
    let mut hwrng = None;
    for w in &want.serial {
        match lines[at..].iter().position(|l| w.matches(l)) {
            Some(i) => {
                let line = lines[at + i];
                if *w == Want::Hwrng {
                    match hwrng_value(line) {
                        Ok(v) => hwrng = Some(v.to_string()),
                        Err(e) => problems.push(format!("{which}{e}: {line:?}")),
                    }
                }
                at += i + 1;
            }
            None => {
                let earlier = lines[..at].iter().find(|l| w.matches(l));
                let late = after.iter().find(|l| w.matches(l));
                let instead = w.kind().and_then(|k| {
                    lines.iter().find(|l| l.starts_with(k) || (k.ends_with("typed ") && l.starts_with("alcove-guest: nothing typed")))
                });
                problems.push(match (earlier, late, instead) {
                    (Some(_), _, _) => format!("{which}{} came out of order (before the line it follows)", w.show()),
                    (_, Some(_), _) => format!("{which}{} came after the VM's line that ended the boot", w.show()),
                    (_, _, Some(got)) => format!("{which}expected {}, the guest printed {got:?}", w.show()),
                    _ => format!("{which}no line {}", w.show()),
                });
            }
        }
    }
    for w in &want.hvc0 {
        if !lines.iter().any(|l| w.matches(l)) {
            problems.push(format!("{which}no line {} (virtio-console)", w.show()));
        }
    }
    hwrng
}

/// The 16 hex digits of an hwrng line, checked.
fn hwrng_value(line: &str) -> Result<&str, String> {
    let rest = line.strip_prefix("alcove-guest: hwrng ").unwrap_or("");
    let (name, value) = rest.split_once(' ').unwrap_or((rest, ""));
    if !name.starts_with("virtio_rng") {
        return Err(format!("the hardware RNG is {name:?}, not virtio_rng"));
    }
    if value.len() != 16 || !value.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("the hwrng value is not 16 hex digits".into());
    }
    if value == ZERO_BYTES_HASH16 {
        return Err("/dev/hwrng gave zero bytes".into());
    }
    Ok(value)
}

/// Checks a Linux test guest's run under Alcove: the VM lines, each boot's
/// guest lines in order (a missing one named with what came instead), and
/// the ending. Empty = pass.
pub fn check_linux_run(serial: &str, vm_name: &str, nproc: u32, disk_sha256: Option<&str>, reboot: bool) -> Vec<String> {
    check_linux_run_typed(serial, vm_name, nproc, disk_sha256, reboot, reboot)
}

/// As [`check_linux_run`], with the typed line chosen apart from the reboot
/// (see [`expected_boots`]).
pub fn check_linux_run_typed(serial: &str, vm_name: &str, nproc: u32, disk_sha256: Option<&str>, reboot: bool, typed: bool) -> Vec<String> {
    let lines: Vec<&str> = serial.lines().map(|l| l.trim_end_matches('\r').trim_end()).collect();
    let log = VmLog::read(lines.iter().copied(), vm_name);
    let mut problems = log.problems.clone();
    if log.started.is_none() {
        problems.push(format!("no \"vm {vm_name}: started: ...\" line: the VM never started"));
    }
    let want = expected_boots(nproc, disk_sha256, reboot, typed);
    if log.reboots + 1 != want.len() {
        problems.push(format!("{} guest reboot(s) reported, expected {}", log.reboots, want.len() - 1));
    }
    if log.budget_returned != want.len() {
        problems.push(format!(
            "the VMM reported every frame and capability returned {} time(s), expected once per boot ({})",
            log.budget_returned,
            want.len()
        ));
    }
    let got = boots(&lines, vm_name);
    let mut values = Vec::new();
    let none = BootLines::default();
    for (i, w) in want.iter().enumerate() {
        let b = got.get(i).unwrap_or(&none);
        if let Some(v) = check_boot(&b.lines, w, i + 1, want.len(), &b.late, &mut problems) {
            values.push(v);
        }
    }
    if values.len() == 2 && values[0] == values[1] {
        problems.push(format!("both boots read the same bytes from /dev/hwrng ({})", values[0]));
    }
    if let Some(l) = lines.iter().find(|l| l.starts_with("alcove-guest: insmod ")) {
        problems.push(format!("a guest module failed to load: {l:?}"));
    }
    match log.endings.as_slice() {
        [VmEnding::PowerOff] => {}
        [] => problems.push(format!("no \"vm {vm_name}: ended: ...\" line")),
        [e] => problems.push(format!("the VM ended with {e}, expected poweroff")),
        many => problems.push(format!("{} ending lines (expected one): {many:?}", many.len())),
    }
    problems
}

/// Checks a run of the reset stress (`alcove.reset-stress=ROUNDS`): the VM
/// rebooted `rounds` times and powered off; in every round, each line the
/// writer confirmed on hvc0 (`alcove-guest: c K I`) before the reset came
/// out on the serial console (`alcove-guest: s K I`, through the kernel
/// log) before the VMM's `guest reboot` line, complete, with every earlier
/// one. Returns the problems and the lines confirmed, per round.
pub fn check_stress_run(serial: &str, vm_name: &str, rounds: u32) -> (Vec<String>, Vec<u64>) {
    let lines: Vec<&str> = serial.lines().map(|l| l.trim_end_matches('\r').trim_end()).collect();
    let log = VmLog::read(lines.iter().copied(), vm_name);
    let mut problems = log.problems.clone();
    if log.reboots != rounds as usize {
        problems.push(format!("{} guest reboot(s) reported, expected {rounds}", log.reboots));
    }
    if log.budget_returned != rounds as usize + 1 {
        problems.push(format!(
            "the VMM reported every frame and capability returned {} time(s), expected once per boot ({})",
            log.budget_returned,
            rounds + 1
        ));
    }
    let got = boots(&lines, vm_name);
    let mut confirmed = Vec::new();
    for (k, b) in got.iter().enumerate() {
        let b = &b.lines;
        let round = format!("alcove-guest: stress round {k}");
        if !b.iter().any(|l| *l == round) {
            problems.push(format!("boot {}: no line {round:?}", k + 1));
            continue;
        }
        if k as u32 == rounds {
            if !b.contains(&"alcove-guest: stress done") {
                problems.push(format!("boot {}: no line \"alcove-guest: stress done\"", k + 1));
            }
            continue;
        }
        if let Some(l) = b.iter().find(|l| l.starts_with("alcove-guest: stress: ")) {
            problems.push(format!("boot {}: {l:?}", k + 1));
        }
        // The confirmations, and the serial lines (the kernel log prefixes
        // them with a time stamp).
        let c_prefix = format!("alcove-guest: c {k} ");
        let s_marker = format!("] alcove-guest: s {k} ");
        // (A confirmation cut short by the reset reads as a smaller number
        // or none: it only asks for less.)
        let last = b.iter().filter_map(|l| l.strip_prefix(&c_prefix)).filter_map(|i| i.parse::<u64>().ok()).max();
        let seen: std::collections::BTreeSet<u64> = b
            .iter()
            .filter_map(|l| l.split_once(&s_marker).map(|(_, i)| i))
            .filter_map(|i| i.parse::<u64>().ok())
            .collect();
        match last {
            None => problems.push(format!("boot {}: the writer confirmed no line before the reset", k + 1)),
            Some(n) => {
                if let Some(missing) = (0..=n).find(|i| !seen.contains(i)) {
                    problems.push(format!(
                        "boot {}: line \"alcove-guest: s {k} {missing}\" was confirmed (the writer went up to {n}) \
                         but never reached the console before the reset",
                        k + 1
                    ));
                }
                confirmed.push(n + 1);
            }
        }
    }
    if got.len() != rounds as usize + 1 {
        problems.push(format!("{} boot(s) seen, expected {}", got.len(), rounds + 1));
    }
    match log.endings.as_slice() {
        [VmEnding::PowerOff] => {}
        [] => problems.push(format!("no \"vm {vm_name}: ended: ...\" line")),
        [e] => problems.push(format!("the VM ended with {e}, expected poweroff")),
        many => problems.push(format!("{} ending lines (expected one): {many:?}", many.len())),
    }
    (problems, confirmed)
}
