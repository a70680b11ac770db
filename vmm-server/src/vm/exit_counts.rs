//! Hardware exits the kernel finished itself, counted from the run page's
//! exit trace: the kernel keeps a free-running count of every hardware
//! exit (`exit_trace_next`) and the last [`abi::EXIT_TRACE_LEN`] of them.
//! After each return to the VMM a vCPU thread hands its run page to
//! [`KernelExits::absorb`], which adds the whole count and tallies the
//! traced entries it has not seen by exit code (and port, for port I/O)
//! and by guest RIP. When more exits happened in one run than the trace
//! holds, only the newest are tallied: the total is exact, the breakdown
//! is a sample (biased towards the exits just before a return to the VMM)
//! and says how many it covers.
//!
//! What it answered: where a firmware boot's time goes when the VMM's own
//! exit counts are small (SeaBIOS and GRUB).

use abi::{EXIT_TRACE_LEN, ExitTrace, VcpuRun};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

/// SVM's IOIO exit code and VMX's I/O-instruction basic exit reason: the
/// port is bits 31:16 of the first exit information on both.
const SVM_IOIO: u32 = 0x7b;
const VMX_IO: u32 = 30;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelExits {
    /// `exit_trace_next` as last seen.
    seen: u32,
    /// Every hardware exit since counting began.
    pub total: u64,
    /// The exits tallied below (≤ `total`).
    pub traced: u64,
    /// (exit code, port or `NO_PORT`, count), in the order first seen.
    by_reason: Vec<(u32, u32, u64)>,
    /// (guest RIP, count), in the order first seen.
    by_rip: Vec<(u64, u64)>,
}

/// The port field of an exit that is not port I/O.
const NO_PORT: u32 = u32::MAX;
/// Rows kept per table; the rest go to the "other" figure of the summary.
const ROWS: usize = 64;

impl KernelExits {
    /// Counting starts at the run page's current trace index.
    pub fn new(run: &VcpuRun) -> Self {
        Self { seen: run.exit_trace_next, total: 0, traced: 0, by_reason: Vec::new(), by_rip: Vec::new() }
    }

    /// Adds the exits the run page shows since the last call. Any value
    /// in the page (the guest's VMM owns it) gives a bounded answer.
    pub fn absorb(&mut self, run: &VcpuRun) {
        let next = run.exit_trace_next;
        let new = next.wrapping_sub(self.seen);
        self.seen = next;
        self.total += u64::from(new);
        let n = new.min(EXIT_TRACE_LEN as u32);
        for i in 0..n {
            let at = next.wrapping_sub(n).wrapping_add(i) as usize % EXIT_TRACE_LEN;
            self.tally(&run.exit_trace[at]);
        }
    }

    fn tally(&mut self, e: &ExitTrace) {
        self.traced += 1;
        let port = if e.code == SVM_IOIO || e.code == VMX_IO { e.info >> 16 } else { NO_PORT };
        self.add_reason(e.code, port, 1);
        self.add_rip(e.rip, 1);
    }

    fn add_reason(&mut self, code: u32, port: u32, c: u64) {
        match self.by_reason.iter().position(|r| r.0 == code && r.1 == port) {
            Some(i) => self.by_reason[i].2 += c,
            None if self.by_reason.len() < ROWS => self.by_reason.push((code, port, c)),
            None => {}
        }
    }

    fn add_rip(&mut self, rip: u64, c: u64) {
        match self.by_rip.iter().position(|r| r.0 == rip) {
            Some(i) => self.by_rip[i].1 += c,
            None if self.by_rip.len() < ROWS => self.by_rip.push((rip, c)),
            None => {}
        }
    }

    /// Adds another vCPU's counts.
    pub fn merge(&mut self, other: &KernelExits) {
        self.total += other.total;
        self.traced += other.traced;
        for &(code, port, c) in &other.by_reason {
            self.add_reason(code, port, c);
        }
        for &(rip, c) in &other.by_rip {
            self.add_rip(rip, c);
        }
    }

    /// "1234567 hardware exits, 20000 traced: code 0x7b port 0x61 9000,
    /// code 0x78 3000, …; at rip 0xf1234 5000, …": the `n` commonest
    /// reasons and RIPs of the traced exits.
    pub fn summary(&self, n: usize) -> String {
        let mut reasons = self.by_reason.clone();
        reasons.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(&b.0)).then(a.1.cmp(&b.1)));
        let mut rips = self.by_rip.clone();
        rips.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let r: Vec<String> = reasons
            .iter()
            .take(n)
            .map(|&(code, port, c)| match port {
                NO_PORT => format!("code {code:#x} {c}"),
                p => format!("code {code:#x} port {p:#x} {c}"),
            })
            .collect();
        let ips: Vec<String> = rips.iter().take(n).map(|&(rip, c)| format!("rip {rip:#x} {c}")).collect();
        format!(
            "{} hardware exits, {} traced: {}; at {}",
            self.total,
            self.traced,
            if r.is_empty() { "none".into() } else { r.join(", ") },
            if ips.is_empty() { "none".into() } else { ips.join(", ") }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exit(run: &mut VcpuRun, rip: u64, code: u32, info: u32) {
        run.trace_exit(ExitTrace { rip, code, info, ..Default::default() });
    }

    #[test]
    fn counts_every_exit_and_tallies_the_traced_ones_by_reason_port_and_rip() {
        let mut run = VcpuRun::ZERO;
        exit(&mut run, 1, 0x78, 0); // before counting began: not counted
        let mut k = KernelExits::new(&run);
        exit(&mut run, 0x7c00, SVM_IOIO, 0x61 << 16);
        exit(&mut run, 0x7c00, SVM_IOIO, 0x61 << 16);
        exit(&mut run, 0x7c10, 0x78, 0);
        k.absorb(&run);
        assert_eq!((k.total, k.traced), (3, 3));
        assert_eq!(k.summary(4), "3 hardware exits, 3 traced: code 0x7b port 0x61 2, code 0x78 1; at rip 0x7c00 2, rip 0x7c10 1");
        // Nothing new: nothing added.
        k.absorb(&run);
        assert_eq!(k.total, 3);
    }

    #[test]
    fn more_exits_than_the_trace_holds_count_fully_and_tally_the_newest() {
        let mut run = VcpuRun::ZERO;
        let mut k = KernelExits::new(&run);
        for i in 0..(EXIT_TRACE_LEN as u64 + 10) {
            exit(&mut run, i, 0x78, 0);
        }
        k.absorb(&run);
        assert_eq!((k.total, k.traced), (EXIT_TRACE_LEN as u64 + 10, EXIT_TRACE_LEN as u64));
        // The oldest traced is the 11th exit (rip 10).
        assert!(k.by_rip.iter().all(|r| r.0 >= 10), "{:?}", k.by_rip);
        let mut other = KernelExits::new(&VcpuRun::ZERO);
        other.merge(&k);
        other.merge(&k);
        assert_eq!(other.total, 2 * k.total);
        assert_eq!(other.by_reason, [(0x78, NO_PORT, 2 * EXIT_TRACE_LEN as u64)]);
    }

    #[test]
    fn a_scribbled_trace_index_gives_a_bounded_answer() {
        let mut run = VcpuRun::ZERO;
        let mut k = KernelExits::new(&run);
        run.exit_trace_next = u32::MAX;
        k.absorb(&run);
        assert_eq!((k.total, k.traced), (u64::from(u32::MAX), EXIT_TRACE_LEN as u64));
        run.exit_trace_next = 3; // wraps forward by 4
        k.absorb(&run);
        assert_eq!(k.total, u64::from(u32::MAX) + 4);
        // Many distinct RIPs: the table stops growing, the total does not.
        for i in 0..1000u64 {
            exit(&mut run, i, 0x78 + (i as u32 % 3), (i as u32) << 16);
            k.absorb(&run);
        }
        assert!(k.by_rip.len() <= ROWS && k.by_reason.len() <= ROWS);
        assert_eq!(k.total, u64::from(u32::MAX) + 4 + 1000);
    }
}
