//! Judging benchmark runs: which `bench <name> <value> <unit>` lines a run
//! may print. A figure is printed only from a run that passed and that
//! printed every figure it is expected to: a run that failed (a test failed,
//! the machine faulted or timed out, a figure is missing or garbled) prints
//! no figures, and `cargo xtask bench` then exits non-zero. Pure logic, so
//! `cargo test -p xtask` checks it.

use std::fmt;

/// One measurement.
#[derive(Clone, Debug, PartialEq)]
pub struct Figure {
    pub name: String,
    /// As printed (an integer count or a decimal).
    pub value: String,
    pub unit: String,
}

impl Figure {
    pub fn new(name: &str, value: impl fmt::Display, unit: &str) -> Self {
        Self { name: name.into(), value: value.to_string(), unit: unit.into() }
    }

    pub fn number(&self) -> f64 {
        // `parse_serial` admits only values that parse.
        self.value.parse().unwrap_or(f64::NAN)
    }
}

impl fmt::Display for Figure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bench {} {} {}", self.name, self.value, self.unit)
    }
}

/// The prefix of a figure line in a serial log.
pub const SERIAL_PREFIX: &str = "ALCOVE-BENCH ";

/// The `ALCOVE-BENCH <name> <value> <unit>` lines of a serial log, and one
/// problem for each such line that is not of that shape.
pub fn parse_serial(serial: &str) -> (Vec<Figure>, Vec<String>) {
    let (mut figures, mut problems) = (vec![], vec![]);
    for line in serial.lines() {
        let line = line.trim_end_matches('\r');
        let Some(rest) = line.strip_prefix(SERIAL_PREFIX) else { continue };
        match rest.split_whitespace().collect::<Vec<_>>()[..] {
            [name, value, unit] if value.parse::<f64>().is_ok_and(f64::is_finite) => {
                figures.push(Figure::new(name, value, unit));
            }
            _ => problems.push(format!("malformed figure line {line:?}")),
        }
    }
    (figures, problems)
}

/// Why a bench run yields no figures.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failed {
    pub case: String,
    pub problems: Vec<String>,
}

impl fmt::Display for Failed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: no figures: {}", self.case, self.problems.join("; "))
    }
}

/// What the run `case` yields: its `figures` without the names in `skip`,
/// if the run had no `problems` and every name in `expect` is among the
/// figures; otherwise no figures and every reason.
pub fn judge(
    case: &str,
    problems: &[String],
    figures: Vec<Figure>,
    expect: &[&str],
    skip: &[&str],
) -> Result<Vec<Figure>, Failed> {
    let mut why: Vec<String> = problems.to_vec();
    for name in expect {
        match figures.iter().filter(|f| f.name == *name).count() {
            1 => {}
            0 => why.push(format!("no {name} figure")),
            n => why.push(format!("{n} {name} figures")),
        }
    }
    if why.is_empty() {
        Ok(figures.into_iter().filter(|f| !skip.contains(&f.name.as_str())).collect())
    } else {
        Err(Failed { case: case.into(), problems: why })
    }
}

/// The figure called `name` (in a list [`judge`] passed).
pub fn find<'a>(figures: &'a [Figure], name: &str) -> Option<&'a Figure> {
    figures.iter().find(|f| f.name == name)
}

/// What `cargo xtask bench` printed and which runs failed.
#[derive(Default)]
pub struct Outcome {
    pub failed: Vec<Failed>,
}

impl Outcome {
    /// Prints a run's figures, or records its failure; returns the figures
    /// (none for a failed run) for figures derived from them.
    pub fn take(&mut self, judged: Result<Vec<Figure>, Failed>) -> Vec<Figure> {
        match judged {
            Ok(figures) => {
                for f in &figures {
                    println!("{f}");
                }
                figures
            }
            Err(failed) => {
                println!("  FAIL {failed}");
                self.failed.push(failed);
                vec![]
            }
        }
    }

    /// The bench command succeeds only if no run failed.
    pub fn ok(&self) -> bool {
        self.failed.is_empty()
    }
}

/// Non-blank, non-comment lines of one source file, tests excluded: the
/// file is counted up to its `#[cfg(test)]` module, which by convention
/// comes last.
pub fn source_lines(text: &str) -> usize {
    let mut n = 0;
    let mut in_block_comment = false;
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with("#[cfg(test)]") {
            break;
        }
        if in_block_comment {
            in_block_comment = !t.contains("*/");
            continue;
        }
        if t.starts_with("/*") {
            in_block_comment = !t.contains("*/");
            continue;
        }
        if t.is_empty() || t.starts_with("//") {
            continue;
        }
        n += 1;
    }
    n
}

/// The items a source names through `krate::` (`krate::a::b` gives `a`,
/// `krate::{a, b::c}` gives `a` and `b`).
fn named_items<'a>(source: &'a str, krate: &str) -> Vec<&'a str> {
    let ident = |s: &'a str| -> &'a str {
        let end = s.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(s.len());
        &s[..end]
    };
    let mut out = vec![];
    let needle = format!("{krate}::");
    for (i, _) in source.match_indices(&needle) {
        // Only the crate itself, not a path that merely ends in its name.
        let before = source[..i].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        let rest = &source[i + needle.len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let group = &group[..group.find('}').unwrap_or(group.len())];
            out.extend(group.split(',').map(|p| ident(p.trim())).filter(|p| !p.is_empty()));
        } else {
            out.push(ident(rest));
        }
    }
    out
}

/// The modules of a library crate (given its `lib.rs` and a reader for
/// `src/<module>.rs`) that the code in `users` reaches: those it names
/// through `krate::`, directly (`krate::elf::…`) or through a re-export in
/// `lib.rs` (`pub use cpio::{Archive, …}` makes `krate::Archive` reach
/// `cpio`), and the modules those name through `crate::`. Sorted.
pub fn reached_modules(users: &[String], krate: &str, lib: &str, module: &dyn Fn(&str) -> Option<String>) -> Vec<String> {
    // lib.rs's modules and what each re-exports.
    let mut modules: Vec<(&str, Vec<&str>)> = vec![];
    for line in lib.lines().map(str::trim) {
        let decl = line.strip_prefix("pub ").unwrap_or(line);
        if let Some(name) = decl.strip_prefix("mod ").and_then(|d| d.strip_suffix(';')) {
            modules.push((name.trim(), vec![]));
        }
    }
    for line in lib.lines().map(str::trim) {
        let Some(path) = line.strip_prefix("pub use ") else { continue };
        let Some((m, items)) = path.trim_end_matches(';').split_once("::") else { continue };
        let items: Vec<&str> = items.trim_matches(['{', '}']).split(',').map(|i| i.trim()).collect();
        if let Some((_, exports)) = modules.iter_mut().find(|(name, _)| *name == m) {
            exports.extend(items);
        }
    }
    let owner = |item: &str| -> Option<String> {
        modules.iter().find(|(name, exports)| *name == item || exports.contains(&item)).map(|(name, _)| name.to_string())
    };
    let mut reached: Vec<String> = vec![];
    let mut todo: Vec<String> = users.iter().flat_map(|u| named_items(u, krate)).filter_map(owner).collect();
    while let Some(m) = todo.pop() {
        if reached.contains(&m) {
            continue;
        }
        if let Some(text) = module(&m) {
            todo.extend(named_items(&text, "crate").into_iter().filter_map(owner));
        }
        reached.push(m);
    }
    reached.sort();
    reached
}

#[cfg(test)]
mod tests {
    use super::*;

    const USER_LOG: &str = "[INFO ] init started\r\nALCOVE-TEST suite user 2\r\n\
        ALCOVE-BENCH boot_to_ready 1234 ns\r\nALCOVE-BENCH ipc_roundtrip_same_core 900 instructions\r\n\
        ALCOVE-BENCH null_syscall 150 instructions\r\nALCOVE-TEST end 2 0\r\n";

    #[test]
    fn a_passing_run_yields_its_figures() {
        let (figures, bad) = parse_serial(USER_LOG);
        assert!(bad.is_empty(), "{bad:?}");
        let got = judge("bench/user", &[], figures, &["null_syscall", "boot_to_ready"], &["boot_to_ready"]).unwrap();
        let lines: Vec<String> = got.iter().map(ToString::to_string).collect();
        assert_eq!(lines, ["bench ipc_roundtrip_same_core 900 instructions", "bench null_syscall 150 instructions"]);
        assert_eq!(find(&got, "null_syscall").map(Figure::number), Some(150.0));
    }

    #[test]
    fn a_failed_run_yields_no_figures_and_an_error() {
        let (figures, _) = parse_serial(USER_LOG);
        assert_eq!(figures.len(), 3);
        let problems = vec!["test msi_from_a_pci_device failed: no MSI".to_string()];
        let err = judge("bench/user", &problems, figures, &["null_syscall"], &[]).unwrap_err();
        assert_eq!(err.case, "bench/user");
        assert_eq!(err.problems, problems);
        assert!(err.to_string().contains("no figures") && err.to_string().contains("no MSI"), "{err}");

        let mut out = Outcome::default();
        let printed = out.take(Err(err));
        assert!(printed.is_empty());
        assert!(!out.ok());
        // A later run that passes does not make the command pass.
        let (figures, _) = parse_serial(USER_LOG);
        assert_eq!(out.take(judge("bench/other", &[], figures, &[], &[])).len(), 3);
        assert!(!out.ok());
    }

    #[test]
    fn a_missing_or_repeated_figure_fails_the_run() {
        let (figures, _) = parse_serial(USER_LOG);
        let err = judge("bench/user", &[], figures, &["ipc_roundtrip_cross_core"], &[]).unwrap_err();
        assert_eq!(err.problems, ["no ipc_roundtrip_cross_core figure"]);
        let twice = format!("{USER_LOG}{USER_LOG}");
        let (figures, _) = parse_serial(&twice);
        let err = judge("bench/user", &[], figures, &["null_syscall"], &[]).unwrap_err();
        assert_eq!(err.problems, ["2 null_syscall figures"]);
    }

    #[test]
    fn lines_are_counted_without_comments_blanks_and_tests() {
        let text = "//! doc\nuse a;\n\n/* block\n still */\nfn f() {\n    // note\n    g();\n}\n#[cfg(test)]\nmod tests { fn t() {} }\n";
        assert_eq!(source_lines(text), 4);
    }

    #[test]
    fn the_library_modules_a_user_reaches_are_found() {
        let lib = "mod cpio;\npub mod elf;\npub mod manifest;\n#[cfg(feature = \"std\")]\nmod system;\n\
            pub use cpio::{Archive, Entry};\n#[cfg(feature = \"std\")]\npub use system::{pack_system};\npub const INIT: &str = \"x\";\n";
        let module = |m: &str| -> Option<String> {
            match m {
                "elf" => Some("use crate::cpio::Entry;\nfn f() {}".into()),
                "manifest" => Some("use crate::elf;".into()),
                _ => Some(String::new()),
            }
        };
        let users = vec![
            "let a = initrd::Archive::new(b);\nlet i = initrd::INIT;\nmy_initrd::manifest::x();".to_string(),
            "let p = initrd::elf::load_plan(e);".to_string(),
        ];
        // Archive is cpio's, elf reaches cpio; a constant of lib.rs reaches
        // no module, and `my_initrd::` is another crate.
        assert_eq!(reached_modules(&users, "initrd", lib, &module), ["cpio", "elf"]);
        let users = vec!["use initrd::{manifest, Entry};".to_string()];
        assert_eq!(reached_modules(&users, "initrd", lib, &module), ["cpio", "elf", "manifest"]);
        assert!(reached_modules(&["nothing".to_string()], "initrd", lib, &module).is_empty());
    }

    #[test]
    fn garbled_figure_lines_are_problems() {
        let (figures, bad) =
            parse_serial("ALCOVE-BENCH null_syscall 12x instructions\nALCOVE-BENCH trap\nALCOVE-BENCH a 1 b c\nALCOVE-BENCH ok 7 ns\n");
        assert_eq!(figures, [Figure::new("ok", 7, "ns")]);
        assert_eq!(bad.len(), 3, "{bad:?}");
        assert!(judge("bench/x", &bad, figures, &[], &[]).is_err());
    }
}
