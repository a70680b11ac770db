//! The guest's console output on its way to the system console: one line
//! buffer per source (the serial port, the virtio console), so a line from
//! one is never cut into a line from the other.
//!
//! A finished line goes out at once. A partial line (a prompt, output that
//! stops without a newline, a line the guest's tty sends 16 bytes per
//! interrupt) goes out once its first byte has waited [`PARTIAL_LINE_NS`]
//! of elapsed time, whatever else the VM is doing (a running PIT used to
//! hold partial lines back for ever). While the system console is in the
//! middle of one source's line, the other sources' lines wait for it to
//! end, up to [`HOLD_NS`] after that source last wrote; then the line is
//! ended on the console (a newline) and the others go out. A source that
//! holds [`LINE_LIMIT`] bytes without a newline sends them as they are, so
//! the buffers are bounded whatever the guest writes. At the VM's end,
//! [`ConsoleOut::take_all`] hands out everything, complete or not, before
//! the VMM says how the VM ended (a partial line ended with a newline).

use alloc::vec::Vec;

/// Where a byte came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The 16550 UART (ttyS0).
    Serial = 0,
    /// The virtio console (hvc0).
    Virtio = 1,
    /// The firmware's debug console (port 0x402, `bootrom` VMs).
    Firmware = 2,
}

const SOURCES: usize = 3;
const ALL: [Source; SOURCES] = [Source::Serial, Source::Virtio, Source::Firmware];

/// How long a partial line waits for the rest of it (20 ms).
pub const PARTIAL_LINE_NS: u64 = 20_000_000;
/// How long the other sources wait for a line the console is in the
/// middle of (500 ms after its source last wrote).
pub const HOLD_NS: u64 = 500_000_000;
/// The most a source holds without a newline (4 KiB).
pub const LINE_LIMIT: usize = 4096;

#[derive(Default)]
struct Pending {
    bytes: Vec<u8>,
    /// When the oldest byte in `bytes` arrived (VM time, ns).
    since_ns: u64,
}

/// The per-source line buffers. Pure logic: the VMM feeds it and writes
/// what it hands back.
#[derive(Default)]
pub struct ConsoleOut {
    pending: [Pending; SOURCES],
    /// The source whose line the console is in the middle of, and when it
    /// last wrote.
    mid_line: Option<(Source, u64)>,
}

impl ConsoleOut {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds what `source` wrote at `now_ns` and returns what is ready to
    /// go out.
    pub fn push(&mut self, source: Source, bytes: &[u8], now_ns: u64) -> Vec<u8> {
        if !bytes.is_empty() {
            let p = &mut self.pending[source as usize];
            if p.bytes.is_empty() {
                p.since_ns = now_ns;
            }
            p.bytes.extend_from_slice(bytes);
        }
        self.collect(now_ns)
    }

    /// What is ready by `now_ns` without new bytes: partial lines that
    /// waited [`PARTIAL_LINE_NS`], lines held for another source's line
    /// that ended or waited [`HOLD_NS`].
    pub fn take_aged(&mut self, now_ns: u64) -> Vec<u8> {
        self.collect(now_ns)
    }

    /// Everything still held, serial first: the VM has ended. A partial
    /// line is ended with a newline, so what the VMM prints next (how the
    /// VM ended) starts a line of its own.
    pub fn take_all(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        // The line the console is in the middle of first, ended.
        if let Some((open, _)) = self.mid_line.take() {
            out.append(&mut self.pending[open as usize].bytes);
            out.push(b'\n');
        }
        for p in &mut self.pending {
            if !p.bytes.is_empty() {
                out.append(&mut p.bytes);
                out.push(b'\n');
            }
        }
        out
    }

    /// When the timer must look again (VM time), if anything waits.
    pub fn next_due(&self) -> Option<u64> {
        let mut due = None::<u64>;
        for s in ALL {
            let p = &self.pending[s as usize];
            if p.bytes.is_empty() {
                continue;
            }
            let ready = if p.bytes.contains(&b'\n') { p.since_ns } else { p.since_ns.saturating_add(PARTIAL_LINE_NS) };
            let t = match self.mid_line {
                Some((o, last)) if o != s => ready.max(last.saturating_add(HOLD_NS)),
                _ => ready,
            };
            due = Some(due.map_or(t, |d| d.min(t)));
        }
        due
    }

    /// Bytes held, all sources.
    pub fn held(&self) -> usize {
        self.pending.iter().map(|p| p.bytes.len()).sum()
    }

    /// Moves what is ready to the output, the source the console is in the
    /// middle of first.
    fn collect(&mut self, now_ns: u64) -> Vec<u8> {
        let mut out = Vec::new();
        let first = self.mid_line.map_or(Source::Serial, |(s, _)| s);
        let order = core::iter::once(first).chain(ALL.into_iter().filter(|&s| s != first));
        for s in order {
            let p = &mut self.pending[s as usize];
            if p.bytes.is_empty() {
                continue;
            }
            let complete = p.bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
            let aged = now_ns.saturating_sub(p.since_ns) >= PARTIAL_LINE_NS || p.bytes.len() >= LINE_LIMIT;
            let n = if aged { p.bytes.len() } else { complete };
            if n == 0 {
                continue;
            }
            if let Some((o, last)) = self.mid_line
                && o != s
            {
                if now_ns.saturating_sub(last) < HOLD_NS {
                    // Wait for the other source's line to end.
                    continue;
                }
                out.push(b'\n');
                self.mid_line = None;
            }
            out.extend(p.bytes.drain(..n));
            // What is left arrived with the latest bytes.
            p.since_ns = now_ns;
            self.mid_line = if out.ends_with(b"\n") { None } else { Some((s, now_ns)) };
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn firmware_debug_lines_do_not_interleave_with_the_serial_console() {
        let mut c = ConsoleOut::new();
        let mut out = Vec::new();
        for (i, (a, b)) in b"SeaBIOS\n".iter().zip(b"SeaBIOS\n").enumerate() {
            out.extend(c.push(Source::Firmware, &[*a], i as u64));
            out.extend(c.push(Source::Serial, &[*b], i as u64));
        }
        out.extend(c.take_all());
        assert_eq!(out, b"SeaBIOS\nSeaBIOS\n");
    }

    #[test]
    fn finished_lines_go_out_at_once_and_partial_ones_wait() {
        let mut c = ConsoleOut::new();
        assert_eq!(c.push(Source::Serial, b"one\ntw", 0), b"one\n");
        assert_eq!(c.held(), 2);
        assert_eq!(c.push(Source::Serial, b"o\nthr", 5), b"two\n");
        assert_eq!(c.take_all(), b"thr\n", "a partial line is ended at the VM's end");
        assert!(c.take_all().is_empty());
        assert_eq!(c.held(), 0);
    }

    #[test]
    fn sources_never_interleave_inside_a_line() {
        let mut c = ConsoleOut::new();
        assert!(c.push(Source::Serial, b"alcove-guest: np", 0).is_empty());
        assert_eq!(c.push(Source::Virtio, b"alcove-guest: hvc0 says hello\n", 1), b"alcove-guest: hvc0 says hello\n");
        assert_eq!(c.push(Source::Serial, b"roc=2\n", 2), b"alcove-guest: nproc=2\n");
    }

    /// A serial line the guest's tty sends in pieces, slower than the
    /// partial-line wait (a loaded host): the piece that went out keeps the
    /// console in that line, and a virtio-console line waits for its end.
    #[test]
    fn a_line_cut_by_time_is_not_cut_into_by_another_source() {
        let mut c = ConsoleOut::new();
        let ms = 1_000_000;
        assert!(c.push(Source::Serial, b"alcove-guest: hwrng ", 0).is_empty());
        assert_eq!(c.take_aged(30 * ms), b"alcove-guest: hwrng ", "partial, by time");
        assert!(c.push(Source::Virtio, b"alcove-guest: hvc0 says hello\n", 31 * ms).is_empty(), "held");
        assert!(c.next_due().is_some_and(|t| t <= 30 * ms + HOLD_NS));
        assert_eq!(c.push(Source::Serial, b"virtio_rng.0 4eb40e\n", 60 * ms), b"virtio_rng.0 4eb40e\nalcove-guest: hvc0 says hello\n");
        assert!(c.take_all().is_empty());
        // At the end, the open line is ended before another source's bytes.
        c.push(Source::Virtio, b"partial", 0);
        assert_eq!(c.take_aged(PARTIAL_LINE_NS), b"partial");
        c.push(Source::Serial, b"tail", PARTIAL_LINE_NS + 1);
        assert_eq!(c.take_all(), b"\ntail\n");
    }

    /// A source that never ends its line holds the others at most
    /// `HOLD_NS`; then its line is ended on the console.
    #[test]
    fn a_held_line_goes_out_after_the_hold() {
        let mut c = ConsoleOut::new();
        let ms = 1_000_000;
        c.push(Source::Serial, b"login: ", 0);
        assert_eq!(c.take_aged(20 * ms), b"login: ");
        assert!(c.push(Source::Virtio, b"hvc line\n", 21 * ms).is_empty());
        assert!(c.take_aged(20 * ms + HOLD_NS - 1).is_empty());
        assert_eq!(c.take_aged(20 * ms + HOLD_NS), b"\nhvc line\n");
        // The serial line goes on on a line of its own.
        assert!(c.push(Source::Serial, b"root\n", 20 * ms + HOLD_NS + 1) == b"root\n");
    }

    #[test]
    fn a_partial_line_goes_out_by_elapsed_time() {
        let mut c = ConsoleOut::new();
        c.push(Source::Serial, b"login: ", 1_000);
        assert_eq!(c.next_due(), Some(1_000 + PARTIAL_LINE_NS));
        assert!(c.take_aged(1_000 + PARTIAL_LINE_NS - 1).is_empty(), "not yet");
        // More bytes of the same line do not push the deadline back.
        c.push(Source::Serial, b"x", 1_000 + PARTIAL_LINE_NS - 1);
        assert_eq!(c.take_aged(1_000 + PARTIAL_LINE_NS), b"login: x");
        assert_eq!(c.next_due(), None);
    }

    #[test]
    fn the_rest_after_a_newline_starts_its_own_wait() {
        let mut c = ConsoleOut::new();
        c.push(Source::Virtio, b"a", 0);
        assert_eq!(c.push(Source::Virtio, b"\nb", PARTIAL_LINE_NS - 1), b"a\n");
        assert!(c.take_aged(PARTIAL_LINE_NS).is_empty(), "b arrived just now");
        assert_eq!(c.take_aged(2 * PARTIAL_LINE_NS), b"b");
    }

    #[test]
    fn output_without_newlines_is_bounded() {
        let mut c = ConsoleOut::new();
        let mut sent = 0;
        for i in 0..10_000u64 {
            sent += c.push(Source::Serial, &[b'x'; 7], i).len();
            assert!(c.held() < LINE_LIMIT, "held {} bytes", c.held());
        }
        let rest = c.take_all();
        sent += rest.len() - 1;
        assert_eq!(sent, 70_000, "nothing lost");
    }
}
