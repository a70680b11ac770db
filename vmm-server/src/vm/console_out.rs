//! The guest's console output on its way to the system console: one line
//! buffer per source (the serial port, the virtio console), so a line from
//! one is never cut into a line from the other.
//!
//! A finished line goes out at once. A partial line (a prompt, output that
//! stops without a newline) goes out once its first byte has waited
//! [`PARTIAL_LINE_NS`] of elapsed time, whatever else the VM is doing (a
//! running PIT used to hold partial lines back for ever). A source that
//! holds [`LINE_LIMIT`] bytes without a newline sends them as they are, so
//! the buffer is bounded whatever the guest writes. At the VM's end,
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
}

const SOURCES: usize = 2;

/// How long a partial line waits for the rest of it (20 ms).
pub const PARTIAL_LINE_NS: u64 = 20_000_000;
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
}

impl ConsoleOut {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds what `source` wrote at `now_ns` and returns what is ready to
    /// go out: every finished line, and any bytes beyond [`LINE_LIMIT`]
    /// of an unfinished one.
    pub fn push(&mut self, source: Source, bytes: &[u8], now_ns: u64) -> Vec<u8> {
        let mut out = Vec::new();
        if bytes.is_empty() {
            return out;
        }
        let p = &mut self.pending[source as usize];
        if p.bytes.is_empty() {
            p.since_ns = now_ns;
        }
        p.bytes.extend_from_slice(bytes);
        if let Some(i) = p.bytes.iter().rposition(|&b| b == b'\n') {
            out.extend(p.bytes.drain(..=i));
            // What is left arrived with the bytes just pushed.
            p.since_ns = now_ns;
        }
        if p.bytes.len() >= LINE_LIMIT {
            out.append(&mut p.bytes);
        }
        out
    }

    /// Partial lines whose first byte has waited [`PARTIAL_LINE_NS`] by
    /// `now_ns`.
    pub fn take_aged(&mut self, now_ns: u64) -> Vec<u8> {
        let mut out = Vec::new();
        for p in &mut self.pending {
            if !p.bytes.is_empty() && now_ns.saturating_sub(p.since_ns) >= PARTIAL_LINE_NS {
                out.append(&mut p.bytes);
            }
        }
        out
    }

    /// When the oldest partial line is due (VM time), if any waits.
    pub fn next_due(&self) -> Option<u64> {
        self.pending.iter().filter(|p| !p.bytes.is_empty()).map(|p| p.since_ns.saturating_add(PARTIAL_LINE_NS)).min()
    }

    /// Everything still held, serial first: the VM has ended. A partial
    /// line is ended with a newline, so what the VMM prints next (how the
    /// VM ended) starts a line of its own.
    pub fn take_all(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        for p in &mut self.pending {
            if !p.bytes.is_empty() {
                out.append(&mut p.bytes);
                out.push(b'\n');
            }
        }
        out
    }

    /// Bytes held, all sources.
    pub fn held(&self) -> usize {
        self.pending.iter().map(|p| p.bytes.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
