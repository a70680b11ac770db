//! The system-test protocol: how code running inside Alcove reports test
//! results over the serial port, and how the machine leaves.
//!
//! One line per event, each starting with [`PREFIX`], so the host harness can
//! pick them out of firmware and bootloader noise:
//!
//! ```text
//! ALCOVE-TEST suite boot 6        the suite and how many tests it will run
//! ALCOVE-TEST run heap            a test starts
//! ALCOVE-TEST ok heap             … and passed
//! ALCOVE-TEST fail acpi no MADT   … or failed, with the reason
//! ALCOVE-TEST end 5 1             passed and failed counts
//! ALCOVE-FATAL exception #PF …    a fault or panic; details follow
//! ```
//!
//! The machine then leaves through QEMU's `isa-debug-exit` (port
//! [`DEBUG_EXIT_PORT`]) with [`EXIT_PASS`] or [`EXIT_FAIL`]; QEMU turns a
//! written value `v` into the exit status `(v << 1) | 1`, so a pass is 33 and
//! a failure 35, neither of which QEMU uses for its own errors.

pub const PREFIX: &str = "ALCOVE-TEST";
pub const FATAL: &str = "ALCOVE-FATAL";

/// The I/O port of QEMU's `isa-debug-exit` device (`-device
/// isa-debug-exit,iobase=0xf4,iosize=0x04`).
pub const DEBUG_EXIT_PORT: u16 = 0xf4;
pub const EXIT_PASS: u8 = 0x10;
pub const EXIT_FAIL: u8 = 0x11;

/// The process exit status QEMU gives for a value written to the port.
pub const fn qemu_status(code: u8) -> i32 {
    ((code as i32) << 1) | 1
}

/// Bochs leaves when the string `Shutdown` is written, byte by byte, to this
/// port (Bochs's unmapped-port handler).
pub const BOCHS_SHUTDOWN_PORT: u16 = 0x8900;

/// One protocol line, parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Line<'a> {
    Suite { name: &'a str, count: u32 },
    Run { name: &'a str },
    Ok { name: &'a str },
    Fail { name: &'a str, reason: &'a str },
    End { passed: u32, failed: u32 },
    Fatal { what: &'a str },
    /// Starts with the prefix but does not parse: a harness treats it as a
    /// failure (the reporter and the harness disagree).
    Malformed,
}

/// Parses one serial line; `None` for lines that are not part of the protocol.
/// Tolerates a trailing `\r` and leading noise (ANSI escapes from firmware).
pub fn parse_line(line: &str) -> Option<Line<'_>> {
    let line = line.trim_end_matches(['\r', '\n']);
    if let Some(at) = line.find(FATAL) {
        let what = line[at + FATAL.len()..].trim();
        return Some(Line::Fatal { what });
    }
    let at = line.find(PREFIX)?;
    let rest = line[at + PREFIX.len()..].trim_start();
    let (verb, args) = rest.split_once(' ').unwrap_or((rest, ""));
    let args = args.trim();
    let name_ok = |n: &str| !n.is_empty() && !n.contains(char::is_whitespace);
    let parsed = match verb {
        "suite" => {
            let (name, count) = args.split_once(' ').unwrap_or((args, ""));
            count.trim().parse().ok().filter(|_| name_ok(name)).map(|count| Line::Suite { name, count })
        }
        "run" if name_ok(args) => Some(Line::Run { name: args }),
        "ok" if name_ok(args) => Some(Line::Ok { name: args }),
        "fail" => {
            let (name, reason) = args.split_once(' ').unwrap_or((args, ""));
            name_ok(name).then_some(Line::Fail { name, reason: reason.trim() })
        }
        "end" => {
            let mut it = args.split(' ');
            match (it.next().map(str::parse), it.next().map(str::parse), it.next()) {
                (Some(Ok(passed)), Some(Ok(failed)), None) => Some(Line::End { passed, failed }),
                _ => None,
            }
        }
        _ => None,
    };
    Some(parsed.unwrap_or(Line::Malformed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_line_kind() {
        assert_eq!(parse_line("ALCOVE-TEST suite boot 6\r"), Some(Line::Suite { name: "boot", count: 6 }));
        assert_eq!(parse_line("\x1b[0mALCOVE-TEST run heap"), Some(Line::Run { name: "heap" }));
        assert_eq!(parse_line("ALCOVE-TEST ok heap"), Some(Line::Ok { name: "heap" }));
        assert_eq!(
            parse_line("ALCOVE-TEST fail acpi no MADT found"),
            Some(Line::Fail { name: "acpi", reason: "no MADT found" })
        );
        assert_eq!(parse_line("ALCOVE-TEST end 5 1"), Some(Line::End { passed: 5, failed: 1 }));
        assert_eq!(
            parse_line("ALCOVE-FATAL exception #PF at 0x10"),
            Some(Line::Fatal { what: "exception #PF at 0x10" })
        );
        assert_eq!(parse_line("GRUB loading."), None);
    }

    #[test]
    fn malformed_lines_are_reported_not_ignored() {
        for bad in [
            "ALCOVE-TEST suite boot",
            "ALCOVE-TEST end 5",
            "ALCOVE-TEST end 5 1 2",
            "ALCOVE-TEST ok",
            "ALCOVE-TEST ok two words",
            "ALCOVE-TEST frobnicate",
        ] {
            assert_eq!(parse_line(bad), Some(Line::Malformed), "{bad}");
        }
    }

    #[test]
    fn exit_statuses_are_distinct_from_qemu_errors() {
        assert_eq!(qemu_status(EXIT_PASS), 33);
        assert_eq!(qemu_status(EXIT_FAIL), 35);
    }
}
