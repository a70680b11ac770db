//! Judging a system-test run from what came out of the serial port and how
//! the emulator ended. Pure logic: `cargo test -p xtask` checks it against
//! recorded logs, including the ways a run can go wrong.
//!
//! The cases that type at the operator shell over the console find the
//! shell's answers here ([`Transcript`]): by what the answers say, never
//! by counting the echoes of what was typed, which other writers' lines
//! can swallow.

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

/// What the first line of a shell's answer looks like: how the answer is
/// found by its own content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum First {
    /// A table's header: these words, however spaced.
    Header(&'static [&'static str]),
    /// A line starting with this.
    Starts(String),
    /// This line, whole.
    Is(String),
    /// Any of these.
    AnyOf(Vec<First>),
}

impl First {
    pub fn starts(prefix: impl Into<String>) -> Self {
        First::Starts(prefix.into())
    }

    pub fn is(line: impl Into<String>) -> Self {
        First::Is(line.into())
    }

    pub fn accepts(&self, line: &str) -> bool {
        match self {
            First::Header(words) => line.split_whitespace().eq(words.iter().copied()),
            First::Starts(prefix) => line.starts_with(prefix.as_str()),
            First::Is(whole) => line == whole,
            First::AnyOf(all) => all.iter().any(|f| f.accepts(line)),
        }
    }
}

/// A shell's answer found in a [`Transcript`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Answer<'a> {
    /// The index of its first line (the one looked for) in the transcript
    /// (for a command that prints nothing, of where what came after the
    /// answer before begins).
    pub start: usize,
    /// What came before that line since the answer before it, prompt
    /// lines and the rests of echoes left out (only from
    /// [`Transcript::in_order`]): output nobody looked for, which a check
    /// on the answer's whole text sees.
    pub passed: Vec<&'a str>,
    /// Its lines from the one looked for up to the next prompt (or to
    /// where the next answer begins).
    pub lines: Vec<&'a str>,
}

impl<'a> Answer<'a> {
    /// Its text, each line ended by `\n`: what the shell printed after the
    /// command's echo.
    pub fn text(&self) -> String {
        self.passed.iter().chain(&self.lines).map(|l| format!("{l}\n")).collect()
    }

    /// Its lines after the one looked for (a table's rows).
    pub fn rows(&self) -> &[&'a str] {
        self.lines.get(1..).unwrap_or_default()
    }
}

/// What a shell typed at over a console shared with other writers (the
/// servers' logs, VMMs, guests) printed: the console's lines with the other
/// writers' lines taken out (each case knows its writers), and the shell's
/// prompt.
///
/// The shell echoes a typed line a byte at a time, so another writer's
/// line may land inside the echo; taking that line out takes the echo (and
/// the prompt before it) with it, or leaves the echo's rest on a line of
/// its own. So an answer is found here by its content (a header, or the
/// shape of its first line) after a point in the transcript, never by
/// counting the echoes of its command.
pub struct Transcript<'a> {
    lines: Vec<&'a str>,
    prompt: String,
    /// The lines typed, as echoed: an echo's rest is the end of one of
    /// them.
    typed: Vec<String>,
}

impl<'a> Transcript<'a> {
    pub fn new(lines: Vec<&'a str>, prompt: &str) -> Self {
        Self { lines, prompt: prompt.to_string(), typed: Vec::new() }
    }

    /// The lines typed at the shell as it echoes them (control characters
    /// left out), so that an echo whose prompt was lost, or the rest of an
    /// echo split by another writer's line, is not taken for output.
    pub fn with_typed(mut self, typed: impl IntoIterator<Item = String>) -> Self {
        self.typed = typed.into_iter().collect();
        self
    }

    /// The index just after the first line holding `text`.
    pub fn after_first(&self, text: &str) -> Option<usize> {
        self.lines.iter().position(|l| l.contains(text)).map(|i| i + 1)
    }

    /// The index just after the last line holding `text`.
    pub fn after_last(&self, text: &str) -> Option<usize> {
        self.lines.iter().rposition(|l| l.contains(text)).map(|i| i + 1)
    }

    fn is_prompt(&self, line: &str) -> bool {
        line.contains(&self.prompt)
    }

    /// Whether line `i` is the shell's, not an answer's: a prompt line
    /// (with its echo), or the echo of a typed line alone (its prompt lost
    /// in another writer's line).
    fn is_echo(&self, i: usize) -> bool {
        let line = self.lines[i];
        self.is_prompt(line) || self.typed.iter().any(|t| t == line)
    }

    /// The first line from `from` on, not the shell's, that `first`
    /// accepts.
    fn find(&self, from: usize, first: &First) -> Option<usize> {
        (from.min(self.lines.len())..self.lines.len()).find(|&i| !self.is_echo(i) && first.accepts(self.lines[i]))
    }

    /// The index of the next line of the shell's after `i` (or the end).
    fn echo_after(&self, i: usize) -> usize {
        (i + 1..self.lines.len()).find(|&j| self.is_echo(j)).unwrap_or(self.lines.len())
    }

    /// Whether line `i` is the rest of an echo: the line before it is a
    /// prompt line holding the start of a typed line but not all of it,
    /// and this line is that typed line's end.
    fn is_echo_rest(&self, i: usize) -> bool {
        let line = self.lines[i];
        let Some(before) = i.checked_sub(1).map(|j| self.lines[j]) else { return false };
        !line.is_empty()
            && self.is_prompt(before)
            && self.typed.iter().any(|t| {
                t.strip_suffix(line).is_some_and(|head| before.contains(head)) && !before.contains(t.as_str())
            })
    }

    /// Lines `from..to` less the shell's and the rests of echoes.
    fn passed(&self, from: usize, to: usize) -> Vec<&'a str> {
        (from..to.max(from)).filter(|&i| !self.is_echo(i) && !self.is_echo_rest(i)).map(|i| self.lines[i]).collect()
    }

    /// The answer whose first line is the first from line `from` on that
    /// `first` accepts: that line and those after it up to the next prompt
    /// (or echo).
    pub fn answer_after(&self, from: usize, first: &First) -> Option<Answer<'a>> {
        let start = self.find(from, first)?;
        Some(Answer { start, passed: Vec::new(), lines: self.lines[start..self.echo_after(start)].to_vec() })
    }

    /// The answers to the lines typed one after another from line `from`
    /// on, one for each of `steps` (what the answer's first line looks
    /// like; `None` for a command that prints nothing). Each is looked for
    /// after the first line of the one before, and ends at the next prompt
    /// or where the next one begins (a prompt lost with its echo does not
    /// join two answers). An answer's text also holds what came between
    /// it and the answer before (prompt lines and echoes' rests left out),
    /// as the text after a command's echo would: a command that printed
    /// what nobody looked for shows there. A command that prints nothing
    /// answers that alone: `Some` with no lines when nothing came. `None`:
    /// no line of the answer's shape.
    pub fn in_order(&self, from: usize, steps: &[Option<First>]) -> Vec<Option<Answer<'a>>> {
        let mut starts = Vec::with_capacity(steps.len());
        let mut at = from;
        for step in steps {
            let start = step.as_ref().and_then(|first| self.find(at, first));
            if let Some(s) = start {
                at = s + 1;
            }
            starts.push(start);
        }
        let len = self.lines.len();
        let mut answers = Vec::with_capacity(steps.len());
        let mut end_before = from.min(len);
        for (i, step) in steps.iter().enumerate() {
            let next_start = starts[i + 1..].iter().flatten().next().copied().unwrap_or(len);
            answers.push(match (step, starts[i]) {
                (None, _) => Some(Answer { start: end_before, passed: self.passed(end_before, next_start), lines: Vec::new() }),
                (Some(_), None) => None,
                (Some(_), Some(start)) => {
                    let end = self.echo_after(start).min(next_start);
                    let passed = self.passed(end_before, start);
                    end_before = end;
                    Some(Answer { start, passed, lines: self.lines[start..end].to_vec() })
                }
            });
        }
        answers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "\x1b[2J  Booting `Alcove'\r\n[INFO ] hello\r\nAlcove 0.1.0: 2 CPUs\r\n\
        ALCOVE-TEST suite boot 2\r\nALCOVE-TEST run a\r\nALCOVE-TEST ok a\r\n\
        ALCOVE-TEST run b\r\n[INFO ] noise\r\nALCOVE-TEST ok b\r\nALCOVE-TEST end 2 0\r\n";

    const P: &str = "[root@t ~]# ";

    fn lines(text: &str) -> Vec<&str> {
        text.lines().collect()
    }

    fn texts(answers: &[Option<Answer>]) -> Vec<Option<String>> {
        answers.iter().map(|a| a.as_ref().map(Answer::text)).collect()
    }

    /// A listing found by its header after a point: not an earlier one,
    /// and whether or not the echo of its command is there.
    #[test]
    fn an_answer_is_found_by_its_header_after_a_point() {
        let text = format!(
            "{P}vmadm list\nUUID TYPE RAM STATE ALIAS\nu1 BHYV 64 stopped a\n{P}guest: done\n\
             vm a: create stagesvmadm list\nUUID TYPE RAM STATE ALIAS\nu1 BHYV 64 running a\n{P}poweroff\n"
        );
        let t = Transcript::new(lines(&text), P);
        let header = First::Header(&["UUID", "TYPE", "RAM", "STATE", "ALIAS"]);
        let from = t.after_last("guest: done").unwrap();
        let a = t.answer_after(from, &header).unwrap();
        assert_eq!(a.text(), "UUID TYPE RAM STATE ALIAS\nu1 BHYV 64 running a\n");
        assert_eq!(a.rows(), ["u1 BHYV 64 running a"]);
        assert_eq!(t.answer_after(0, &header).unwrap().rows(), ["u1 BHYV 64 stopped a"]);
        assert_eq!(t.answer_after(t.after_last("running").unwrap(), &header), None);
    }

    fn steps() -> Vec<Option<First>> {
        let zfs_list = First::AnyOf(vec![First::Header(&["NAME", "USED"]), First::is("no datasets available")]);
        vec![
            Some(zfs_list.clone()),
            None,
            Some(zfs_list),
            Some(First::starts("cannot destroy")),
            None,
            Some(First::starts("a\t")),
        ]
    }

    fn typed() -> Vec<String> {
        ["zfs list", "zfs snapshot a@s", "zfs list -t snapshot", "zfs destroy a", "zfs set x=1 a", "zfs get -H x a"].map(String::from).to_vec()
    }

    const ANSWERS: [Option<&str>; 6] = [
        Some("no datasets available\n"),
        Some(""),
        Some("NAME USED\na@s 0\n"),
        Some("cannot destroy 'a': volume has children\n"),
        Some(""),
        Some("a\tx\t1\tlocal\n"),
    ];

    fn shell_text() -> String {
        format!(
            "{P}zfs list\nno datasets available\n{P}zfs snapshot a@s\n{P}zfs list -t snapshot\nNAME USED\na@s 0\n\
             {P}zfs destroy a\ncannot destroy 'a': volume has children\n{P}zfs set x=1 a\n{P}zfs get -H x a\na\tx\t1\tlocal\n{P}"
        )
    }

    fn judged(text: &str) -> Vec<Option<String>> {
        texts(&Transcript::new(lines(text), P).with_typed(typed()).in_order(0, &steps()))
    }

    /// Answers read in order: each command's, those that print nothing
    /// too, whether an echo (and its prompt) was lost in another writer's
    /// line or split by one.
    #[test]
    fn answers_in_order_do_not_need_the_echoes() {
        let good = shell_text();
        let want: Vec<Option<String>> = ANSWERS.iter().map(|a| a.map(String::from)).collect();
        assert_eq!(judged(&good), want);
        // Each prompt with its echo lost (the other writer's line taken
        // out with it): the same answers.
        for cmd in typed() {
            let lost = good.replacen(&format!("{P}{cmd}\n"), "", 1);
            assert_ne!(lost, good);
            assert_eq!(judged(&lost), want, "{cmd}'s echo lost");
        }
        // A prompt lost (with another writer's line), its echo on a line
        // of its own.
        let alone = good.replace(&format!("{P}zfs destroy a\n"), "zfs destroy a\n");
        assert_eq!(judged(&alone), want);
        // An echo split by another writer's line, its rest on a line of
        // its own.
        let split = good.replace(&format!("{P}zfs destroy a\n"), &format!("guest: runn{P}zfs destrning\noy a\n"));
        assert_eq!(judged(&split), want);
    }

    /// A wrong answer is still seen: output of a command that prints
    /// nothing, a row missing, an answer missing, a line before an answer.
    #[test]
    fn answers_in_order_show_what_is_wrong() {
        let good = shell_text();
        let loud = good.replace(&format!("{P}zfs snapshot a@s\n"), &format!("{P}zfs snapshot a@s\ncannot create snapshot\n"));
        let got = judged(&loud);
        assert_eq!(got[1].as_deref(), Some("cannot create snapshot\n"));
        assert_eq!(got[2].as_deref(), Some("cannot create snapshot\nNAME USED\na@s 0\n"));
        // The same with the next echo lost: the output is still the quiet
        // command's.
        let lost = loud.replace(&format!("{P}zfs list -t snapshot\n"), "");
        assert_eq!(judged(&lost)[1].as_deref(), Some("cannot create snapshot\n"));
        let no_row = good.replace("a@s 0\n", "");
        assert_eq!(judged(&no_row)[2].as_deref(), Some("NAME USED\n"));
        let kept = good.replace("cannot destroy 'a': volume has children\n", "");
        assert_eq!(judged(&kept)[3], None);
        // An answer nothing else looked for before one looked for.
        let extra = good.replace("cannot destroy 'a'", "warning: x\ncannot destroy 'a'");
        assert_eq!(judged(&extra)[3].as_deref(), Some("warning: x\ncannot destroy 'a': volume has children\n"));
        // A line that ends a typed line is the shell's output when the
        // echo before it is whole.
        let echoed = good.replace(&format!("{P}zfs set x=1 a\n"), &format!("{P}zfs set x=1 a\n1 a\n"));
        assert_eq!(judged(&echoed)[4].as_deref(), Some("1 a\n"));
    }

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
