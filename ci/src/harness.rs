//! Judging a system-test run from what came out of the serial port and how
//! the emulator ended. Pure logic: `cargo test -p xtask` checks it against
//! recorded logs, including the ways a run can go wrong.

use kcore::testproto::{Line, parse_line, qemu_status, EXIT_FAIL, EXIT_PASS};

/// How the emulator process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// QEMU exited with this status.
    Qemu(i32),
    /// Bochs exited; `shutdown` tells whether it was through the shutdown
    /// port (its log says so), i.e. the kernel chose to leave.
    Bochs { shutdown: bool },
    /// The host killed it after this many seconds.
    Timeout(u64),
}

/// The verdict on one run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    pub suite: Option<String>,
    pub passed: Vec<String>,
    pub failed: Vec<(String, String)>,
    /// Everything that makes the run a failure, one line each. Empty = pass.
    pub problems: Vec<String>,
    /// The fault or panic report, verbatim, if the kernel printed one.
    pub fatal: Vec<String>,
}

impl Verdict {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Judges a run of `suite`.
pub fn judge(log: &str, ending: Ending, suite: &str) -> Verdict {
    let mut v = Verdict::default();
    let mut running: Option<String> = None;
    let mut declared: Option<u32> = None;
    let mut end: Option<(u32, u32)> = None;
    let mut in_fatal = false;
    for raw in log.lines() {
        let line = raw.trim_end_matches('\r');
        if in_fatal && line.starts_with("  ") {
            v.fatal.push(line.to_string());
            continue;
        }
        in_fatal = false;
        let Some(parsed) = parse_line(line) else { continue };
        if end.is_some() && !matches!(parsed, Line::Fatal { .. }) {
            v.problems.push(format!("protocol line after the end: {line:?}"));
            continue;
        }
        match parsed {
            Line::Suite { name, count } => {
                if v.suite.is_some() {
                    v.problems.push("more than one suite line (did the machine reboot?)".into());
                }
                if name != suite {
                    v.problems.push(format!("ran suite {name:?}, expected {suite:?}"));
                }
                v.suite = Some(name.to_string());
                declared = Some(count);
            }
            Line::Run { name } => {
                if v.suite.is_none() {
                    v.problems.push(format!("test {name} ran before the suite line"));
                }
                if let Some(prev) = running.replace(name.to_string()) {
                    v.problems.push(format!("test {prev} started but never finished"));
                }
            }
            Line::Ok { name } | Line::Fail { name, .. } => {
                if running.as_deref() != Some(name) {
                    v.problems.push(format!("result for {name}, which was not running"));
                }
                running = None;
                match parsed {
                    Line::Fail { reason, .. } => {
                        v.problems.push(format!("test {name} failed: {reason}"));
                        v.failed.push((name.to_string(), reason.to_string()));
                    }
                    _ => v.passed.push(name.to_string()),
                }
            }
            Line::End { passed, failed } => {
                end = Some((passed, failed));
            }
            Line::Fatal { what } => {
                v.problems.push(format!("kernel fatal: {what}"));
                v.fatal.push(line.to_string());
                in_fatal = true;
            }
            Line::Malformed => v.problems.push(format!("malformed protocol line: {line:?}")),
        }
    }
    if let Some(name) = running {
        v.problems.push(format!("test {name} started but never finished"));
    }
    match (v.suite.as_ref(), declared, end) {
        (None, _, _) => v.problems.push(format!("suite {suite:?} never started (no suite line)")),
        (Some(_), _, None) => v.problems.push("no end line: the run stopped early".into()),
        (Some(_), Some(count), Some((p, f))) => {
            let seen = (v.passed.len() as u32, v.failed.len() as u32);
            if (p, f) != seen {
                v.problems.push(format!("end line says {p} passed {f} failed; the log shows {} and {}", seen.0, seen.1));
            }
            if p + f != count {
                v.problems.push(format!("suite declared {count} tests, {} ran", p + f));
            }
            if count == 0 {
                v.problems.push("the suite ran no tests".into());
            }
        }
        (Some(_), None, Some(_)) => {}
    }
    let clean = v.problems.is_empty();
    match ending {
        Ending::Qemu(s) if s == qemu_status(EXIT_PASS) => {
            if !clean {
                v.problems.push("the machine exited with the pass code despite the problems above".into());
            }
        }
        Ending::Qemu(s) if s == qemu_status(EXIT_FAIL) => {
            if clean {
                v.problems.push("the machine exited with the failure code".into());
            }
        }
        Ending::Qemu(s) => v.problems.push(format!("QEMU exited with status {s} (not Alcove's pass 33 or fail 35)")),
        Ending::Bochs { shutdown: true } => {}
        Ending::Bochs { shutdown: false } => v.problems.push("Bochs ended without the shutdown port being used".into()),
        Ending::Timeout(secs) => v.problems.push(format!("timed out after {secs} s")),
    }
    v
}

/// What a scripted case (the operator shell, the HTTP API) found: each
/// check it made, and what failed.
pub struct Checks {
    pub case: &'static str,
    pub problems: Vec<String>,
    pub checks: usize,
    pub elapsed: std::time::Duration,
    pub log: std::path::PathBuf,
}

impl Checks {
    pub fn new(case: &'static str, elapsed: std::time::Duration, log: std::path::PathBuf) -> Self {
        Self { case, problems: vec![], checks: 0, elapsed, log }
    }

    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }

    pub fn report(&self) {
        let secs = self.elapsed.as_secs_f64();
        if self.ok() {
            println!("  ok   {}: {} checks passed in {secs:.1} s", self.case, self.checks);
        } else {
            println!("  FAIL {} ({secs:.1} s; log {}):", self.case, self.log.display());
            for p in &self.problems {
                println!("         {p}");
            }
            crate::tiers::remember_failure(self.case, self.problems.clone());
        }
    }

    /// Counts a check; `what` says what went wrong when it did.
    pub fn check(&mut self, ok: bool, what: impl FnOnce() -> String) {
        self.checks += 1;
        if !ok {
            self.problems.push(what());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "\x1b[2J  Booting `Alcove'\r\n[INFO ] hello\r\nAlcove 0.1.0: 2 CPUs\r\n\
        ALCOVE-TEST suite boot 2\r\nALCOVE-TEST run a\r\nALCOVE-TEST ok a\r\n\
        ALCOVE-TEST run b\r\n[INFO ] noise\r\nALCOVE-TEST ok b\r\nALCOVE-TEST end 2 0\r\n";

    #[test]
    fn a_clean_run_passes() {
        let v = judge(GOOD, Ending::Qemu(33), "boot");
        assert!(v.ok(), "{:?}", v.problems);
        assert_eq!(v.passed, ["a", "b"]);
        assert!(judge(GOOD, Ending::Bochs { shutdown: true }, "boot").ok());
    }

    #[test]
    fn wrong_exits_fail() {
        assert!(!judge(GOOD, Ending::Qemu(35), "boot").ok());
        assert!(!judge(GOOD, Ending::Qemu(1), "boot").ok());
        assert!(!judge(GOOD, Ending::Qemu(0), "boot").ok());
        assert!(!judge(GOOD, Ending::Timeout(30), "boot").ok());
        assert!(!judge(GOOD, Ending::Bochs { shutdown: false }, "boot").ok());
        assert!(!judge(GOOD, Ending::Qemu(33), "other").ok());
    }

    #[test]
    fn a_fault_fails_and_is_shown() {
        let log = "ALCOVE-TEST suite fault 1\nALCOVE-TEST run x\n\
            ALCOVE-FATAL exception #PF page fault (vector 14) error=0x2 rip=0x1 cr2=0x2\n\
            \x20 page fault: non-present page on write in kernel mode\n\x20 rax=0x0\nafter\n";
        let v = judge(log, Ending::Qemu(35), "fault");
        assert!(!v.ok());
        assert_eq!(v.fatal.len(), 3);
        assert!(v.fatal[0].contains("#PF"));
        assert!(v.problems.iter().any(|p| p.contains("never finished")));
        assert!(v.problems.iter().any(|p| p.contains("no end line")));
    }

    #[test]
    fn missing_and_inconsistent_results_fail() {
        // A test vanished: the suite declared 3.
        let log = GOOD.replace("suite boot 2", "suite boot 3");
        assert!(!judge(&log, Ending::Qemu(33), "boot").ok());
        // The end line lies.
        let log = GOOD.replace("end 2 0", "end 3 0");
        assert!(!judge(&log, Ending::Qemu(33), "boot").ok());
        // A failure, even with the pass exit code.
        let log = GOOD.replace("ok b", "fail b it broke").replace("end 2 0", "end 1 1");
        let v = judge(&log, Ending::Qemu(33), "boot");
        assert!(!v.ok());
        assert_eq!(v.failed, [("b".to_string(), "it broke".to_string())]);
        // No output at all.
        assert!(!judge("", Ending::Qemu(33), "boot").ok());
        // Garbled protocol.
        let log = GOOD.replace("ALCOVE-TEST run b", "ALCOVE-TEST rnu b");
        assert!(!judge(&log, Ending::Qemu(33), "boot").ok());
        // A reboot replays the suite.
        let log = format!("{GOOD}{GOOD}");
        assert!(!judge(&log, Ending::Qemu(33), "boot").ok());
        // Zero tests is not a pass.
        let log = "ALCOVE-TEST suite boot 0\nALCOVE-TEST end 0 0\n";
        assert!(!judge(log, Ending::Qemu(33), "boot").ok());
    }
}
