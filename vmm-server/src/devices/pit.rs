//! The 8254 programmable interval timer (ports 0x40-0x43) and the timer
//! bits of port 0x61 (system control port B).
//!
//! Behaviour follows the Intel 8254 datasheet (order no. 231164): the
//! control word (Figure 8), read/write formats (lobyte, hibyte, lobyte then
//! hibyte), the counter latch command, the read-back command (Figures 11-13)
//! and the counting modes 0-5 ("Mode Definitions"), including the one-clock
//! delay between writing a count and the counting element loading it. Port
//! 0x61 follows the IBM PC/AT wiring as kept by the Intel PIIX4 (datasheet
//! §4.1.9, NMI status and control): bit 0 gates channel 2, bit 1 enables
//! the speaker, bit 4 toggles with every refresh cycle, bit 5 is channel 2's
//! OUT. Linux calibrates the TSC on that bit (`pit_calibrate_tsc`) and by
//! reading channel 2's count (`quick_pit_calibrate`).
//!
//! The counters run on a 1.193182 MHz clock derived from the `now_ns` the
//! VMM passes in: tick `t` is `floor(now_ns * 1193182 / 10^9)`, so nothing
//! drifts however the calls are spaced. Channel 0's OUT drives ISA IRQ 0:
//! the VMM asks [`Pit::next_event`] when its next rising edge is due and
//! [`Pit::irq_edges`] how many rising edges happened (each one an edge to
//! send to the PIC's and I/O APIC's timer input). Channels 0 and 1 have
//! their gate tied high, as on a PC.
//!
//! One simplification: a new count written in modes 2 and 3 takes effect
//! at the next clock instead of the end of the current period (as in QEMU).

use super::{PortIoDevice, PortRange, read_bytewise, write_bytewise};

/// The input clock, in Hz.
pub const PIT_HZ: u64 = 1_193_182;
pub const PIT_PORTS: PortRange = PortRange::new(0x40, 4);
pub const PORT_B: PortRange = PortRange::new(0x61, 1);
pub const PIT_IRQ: u8 = 0;

const NS_PER_S: u64 = 1_000_000_000;
/// Port 0x61 bit 4 toggles every refresh request, every 15.085 µs: 18 PIT
/// clocks (channel 1's count for DRAM refresh on the PC/AT).
const REFRESH_TICKS: u64 = 18;

fn ns_to_ticks(ns: u64) -> u64 {
    (u128::from(ns) * u128::from(PIT_HZ) / u128::from(NS_PER_S)) as u64
}

/// The first nanosecond at which `ns_to_ticks` reaches `ticks`.
/// The shortest interval between two timer events of a periodic channel 0
/// (KVM's `min_timer_period_us` default).
pub const MIN_PERIOD_NS: u64 = 200_000;

fn ticks_to_ns(ticks: u64) -> u64 {
    let ns = (u128::from(ticks) * u128::from(NS_PER_S)).div_ceil(u128::from(PIT_HZ));
    u64::try_from(ns).unwrap_or(u64::MAX)
}

fn to_bcd(value: u32) -> u16 {
    let v = value % 10_000;
    ((v / 1000) << 12 | (v / 100 % 10) << 8 | (v / 10 % 10) << 4 | (v % 10)) as u16
}

fn from_bcd(raw: u16) -> u32 {
    // Nibbles above 9 are not BCD; they count for their value.
    (0..4).fold(0, |acc, i| acc * 10 + u32::from((raw >> (12 - 4 * i)) & 0xF))
}

/// Read/write format (control word bits 5:4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Access {
    Lsb = 1,
    Msb = 2,
    Word = 3,
}

#[derive(Clone, Copy, Debug)]
struct Latched {
    value: u16,
    msb_next: bool,
}

#[derive(Clone, Debug)]
struct Channel {
    /// Counting mode 0-5 (6 and 7 are 2 and 3).
    mode: u8,
    /// Mode bits as written, for the status byte.
    mode_bits: u8,
    access: Access,
    bcd: bool,
    gate: bool,
    /// The count register as last written (0 means the largest count).
    count_register: u16,
    /// The initial count of the current run: 1..=0x10000 (10000 in BCD).
    count: u64,
    /// A whole count has been written since the control word.
    count_written: bool,
    /// Tick at which the counting element was loaded (`None`: not armed,
    /// or waiting for a gate trigger).
    loaded_at: Option<u64>,
    /// Modes 0 and 4 with the gate low: the elapsed count when it stopped.
    frozen: Option<u64>,
    write_msb_next: bool,
    write_lsb: u8,
    read_msb_next: bool,
    latched: Option<Latched>,
    status: Option<u8>,
}

impl Channel {
    /// What the BIOS leaves behind (and QEMU resets to): mode 3, count
    /// 0x10000, lobyte/hibyte, running from tick 0 if the gate is high.
    fn new(gate: bool) -> Self {
        Self {
            mode: 3,
            mode_bits: 3,
            access: Access::Word,
            bcd: false,
            gate,
            count_register: 0,
            count: 0x10000,
            count_written: true,
            loaded_at: gate.then_some(1),
            frozen: None,
            write_msb_next: false,
            write_lsb: 0,
            read_msb_next: false,
            latched: None,
            status: None,
        }
    }

    fn initial_count(&self, raw: u16) -> u64 {
        match (raw, self.bcd) {
            (0, false) => 0x10000,
            (0, true) => 10_000,
            (raw, false) => u64::from(raw),
            (raw, true) => u64::from(from_bcd(raw)),
        }
    }

    /// Clocks counted since the counting element was loaded.
    fn elapsed(&self, t: u64) -> Option<u64> {
        let loaded = self.loaded_at?;
        if t < loaded {
            return None;
        }
        Some(self.frozen.unwrap_or(t - loaded))
    }

    /// The counting element's value at `t`, as the chip presents it.
    fn counter(&self, t: u64) -> u16 {
        let n = self.count;
        let value = match self.elapsed(t) {
            None => n,
            Some(e) => match self.mode {
                // Count down through zero and wrap (modes 0, 1, 4, 5).
                0 | 1 | 4 | 5 => {
                    let modulus = if self.bcd { 10_000 } else { 0x10000 };
                    (n + modulus - e % modulus) % modulus
                }
                // N, N-1, ..., 1, reload.
                2 => n - e % n,
                // Decrements by two, reloading every half period.
                _ => n - (e % n) * 2 % n,
            },
        };
        if self.bcd { to_bcd(value as u32) } else { value as u16 }
    }

    /// The OUT pin at `t`.
    fn out(&self, t: u64) -> bool {
        let n = self.count;
        match (self.mode, self.elapsed(t)) {
            // Mode 0: low from the control word until terminal count.
            (0, None) => false,
            (0 | 1, Some(e)) => e >= n,
            // Mode 2: low for the one clock when the count is 1.
            (2, Some(e)) => e % n != n - 1,
            // Mode 3: high for the first half (rounded up) of each period.
            (3, Some(e)) => e % n < n.div_ceil(2),
            // Modes 4 and 5: a one-clock low strobe at terminal count.
            (4 | 5, Some(e)) => e != n,
            _ => true,
        }
    }

    /// Where (in elapsed clocks) OUT rises: once, or every `n` clocks.
    fn rising_edge(&self) -> Option<(u64, bool)> {
        let n = self.count;
        match self.mode {
            0 | 1 => Some((n, false)),
            4 | 5 => Some((n + 1, false)),
            // A count of 1 is illegal in modes 2 and 3: OUT never toggles.
            _ if n >= 2 => Some((n, true)),
            _ => None,
        }
    }

    /// Rising edges of OUT in the clock interval `(from, to]`.
    fn rising_edges(&self, from: u64, to: u64) -> u64 {
        let (Some((at, periodic)), Some(b)) = (self.rising_edge(), self.elapsed(to)) else { return 0 };
        let a = self.elapsed(from).unwrap_or(0);
        if periodic { (b / at).saturating_sub(a / at) } else { u64::from(a < at && at <= b) }
    }

    /// The clock of the next rising edge of OUT after `t`, if one is coming.
    fn next_rising_edge(&self, t: u64) -> Option<u64> {
        let loaded = self.loaded_at?;
        if self.frozen.is_some() {
            return None;
        }
        let (at, periodic) = self.rising_edge()?;
        let edge = match self.elapsed(t) {
            None => at,
            Some(e) if periodic => (e / at + 1) * at,
            Some(e) if e < at => at,
            Some(_) => return None,
        };
        loaded.checked_add(edge)
    }

    fn control_word(&mut self, access: Access, mode_bits: u8, bcd: bool) {
        // "When a Control Word is written to a Counter, all Control Logic is
        // immediately reset" and counting waits for a new count.
        *self = Self {
            mode: if mode_bits >= 6 { mode_bits - 4 } else { mode_bits },
            mode_bits,
            access,
            bcd,
            gate: self.gate,
            count_register: self.count_register,
            count: self.count,
            count_written: false,
            loaded_at: None,
            frozen: None,
            write_msb_next: false,
            write_lsb: 0,
            read_msb_next: false,
            latched: None,
            status: None,
        };
    }

    fn latch_count(&mut self, t: u64) {
        // A second latch before the first is read is ignored.
        if self.latched.is_none() {
            self.latched = Some(Latched { value: self.counter(t), msb_next: false });
        }
    }

    fn latch_status(&mut self, t: u64) {
        if self.status.is_none() {
            let null_count = !self.count_written || self.elapsed(t).is_none();
            self.status = Some(
                u8::from(self.out(t)) << 7
                    | u8::from(null_count) << 6
                    | (self.access as u8) << 4
                    | self.mode_bits << 1
                    | u8::from(self.bcd),
            );
        }
    }

    /// A whole new count arrived at clock `t`.
    fn load_count(&mut self, raw: u16, t: u64) {
        self.count_register = raw;
        self.count_written = true;
        match self.mode {
            // Loaded on the next clock; counting needs the gate.
            0 | 4 => {
                self.count = self.initial_count(raw);
                self.loaded_at = Some(t + 1);
                self.frozen = (!self.gate).then_some(0);
            }
            // Hardware-triggered: waits for a rising edge of the gate.
            1 | 5 => {}
            _ => {
                self.count = self.initial_count(raw);
                self.loaded_at = self.gate.then_some(t + 1);
            }
        }
    }

    fn set_gate(&mut self, gate: bool, t: u64) {
        if gate == self.gate {
            return;
        }
        self.gate = gate;
        match self.mode {
            // Gate enables counting.
            0 | 4 => {
                if !gate {
                    if self.frozen.is_none() {
                        self.frozen = Some(self.elapsed(t).unwrap_or(0));
                    }
                } else if let Some(frozen) = self.frozen.take() {
                    // Resume where it stopped (frozen <= t - loaded); if
                    // the count is not loaded yet, it starts from scratch.
                    if self.loaded_at.is_some_and(|l| t >= l) {
                        self.loaded_at = Some(t - frozen);
                    }
                }
            }
            // A rising edge triggers (or retriggers) the count.
            1 | 5 => {
                if gate && self.count_written {
                    self.count = self.initial_count(self.count_register);
                    self.loaded_at = Some(t + 1);
                }
            }
            // Low stops counting with OUT high; the rising edge reloads.
            _ => {
                self.loaded_at = if gate && self.count_written { Some(t + 1) } else { None };
            }
        }
    }

    fn read(&mut self, t: u64) -> u8 {
        if let Some(status) = self.status.take() {
            return status;
        }
        if let Some(latched) = self.latched.as_mut() {
            let [lsb, msb] = latched.value.to_le_bytes();
            return match self.access {
                Access::Lsb => {
                    self.latched = None;
                    lsb
                }
                Access::Msb => {
                    self.latched = None;
                    msb
                }
                Access::Word if !latched.msb_next => {
                    latched.msb_next = true;
                    lsb
                }
                Access::Word => {
                    self.latched = None;
                    msb
                }
            };
        }
        let [lsb, msb] = self.counter(t).to_le_bytes();
        match self.access {
            Access::Lsb => lsb,
            Access::Msb => msb,
            Access::Word => {
                self.read_msb_next = !self.read_msb_next;
                if self.read_msb_next { lsb } else { msb }
            }
        }
    }

    fn write(&mut self, value: u8, t: u64) {
        match self.access {
            Access::Lsb => self.load_count(u16::from(value), t),
            Access::Msb => self.load_count(u16::from(value) << 8, t),
            Access::Word if !self.write_msb_next => {
                self.write_lsb = value;
                self.write_msb_next = true;
            }
            Access::Word => {
                self.write_msb_next = false;
                self.load_count(u16::from_le_bytes([self.write_lsb, value]), t);
            }
        }
    }
}

/// The 8254 with its three channels and port 0x61.
#[derive(Clone, Debug)]
pub struct Pit {
    channels: [Channel; 3],
    /// Port 0x61 bit 1: speaker data enable.
    speaker_data: bool,
    /// Port 0x61 bits 3:2 (parity and I/O channel check enables), kept for
    /// reading back.
    port_b_enables: u8,
    /// The latest clock seen: time never runs backwards here.
    now: u64,
    /// Channel 0's rising edges are counted up to this clock ...
    edges_counted_to: u64,
    /// ... and these are waiting for [`Pit::irq_edges`].
    pending_edges: u64,
}

impl Default for Pit {
    fn default() -> Self {
        Self::new()
    }
}

impl Pit {
    /// The PIT as firmware leaves it at `now_ns = 0` (the VM's clock starts
    /// with the VM): every channel in mode 3 with count 0x10000, channel 0
    /// running (IRQ 0 at 18.2 Hz), channel 2's gate low.
    pub fn new() -> Self {
        Self {
            channels: [Channel::new(true), Channel::new(true), Channel::new(false)],
            speaker_data: false,
            port_b_enables: 0,
            now: 0,
            edges_counted_to: 0,
            pending_edges: 0,
        }
    }

    fn clock(&mut self, now_ns: u64) -> u64 {
        self.now = self.now.max(ns_to_ticks(now_ns));
        self.now
    }

    /// When channel 0's OUT next rises (the VMM should call
    /// [`Self::irq_edges`] then); `now_ns` itself if edges are waiting;
    /// `None` if channel 0 will not fire as programmed.
    pub fn next_event(&self, now_ns: u64) -> Option<u64> {
        if self.pending_edges > 0 {
            return Some(now_ns);
        }
        let t = self.now.max(ns_to_ticks(now_ns));
        let next = ticks_to_ns(self.channels[0].next_rising_edge(t)?);
        // A periodic rate faster than MIN_PERIOD_NS wakes the VMM no more
        // often than that; the edges in between arrive together (as KVM
        // clamps the PIT to `min_timer_period_us`, 200 µs). Mode 2 with a
        // count of 2 would otherwise ask for 600,000 wake-ups a second.
        match self.channels[0].rising_edge() {
            Some((period, true)) if ticks_to_ns(period) < MIN_PERIOD_NS => Some(next.max(now_ns.saturating_add(MIN_PERIOD_NS))),
            _ => Some(next),
        }
    }

    /// The rising edges of channel 0's OUT (IRQ 0) since the last call, up
    /// to `now_ns`.
    pub fn irq_edges(&mut self, now_ns: u64) -> u32 {
        let t = self.clock(now_ns);
        self.count_edges(t);
        let edges = core::mem::take(&mut self.pending_edges);
        u32::try_from(edges).unwrap_or(u32::MAX)
    }

    /// The OUT pin of `channel` (0-2) at `now_ns`.
    pub fn out(&mut self, channel: usize, now_ns: u64) -> bool {
        let t = self.clock(now_ns);
        self.channels.get(channel).is_some_and(|c| c.out(t))
    }

    /// Whether the speaker sounds: gate and data enable set (channel 2's
    /// OUT then drives it).
    pub fn speaker_enabled(&self) -> bool {
        self.speaker_data && self.channels[2].gate
    }

    fn count_edges(&mut self, t: u64) {
        self.pending_edges += self.channels[0].rising_edges(self.edges_counted_to, t);
        self.edges_counted_to = t;
    }

    /// Changes channel `index` at clock `t`, keeping IRQ 0's edge count
    /// right across the change (a change can itself raise OUT).
    fn change(&mut self, index: usize, t: u64, f: impl FnOnce(&mut Channel, u64)) {
        if index != 0 {
            f(&mut self.channels[index], t);
            return;
        }
        self.count_edges(t);
        let before = self.channels[0].out(t);
        f(&mut self.channels[0], t);
        if !before && self.channels[0].out(t) {
            self.pending_edges += 1;
        }
    }

    fn control_word(&mut self, value: u8, t: u64) {
        let select = usize::from(value >> 6);
        if select == 3 {
            // Read-back (datasheet Figure 11): bits 3:1 pick the counters,
            // bit 5 clear latches counts, bit 4 clear latches statuses.
            for (i, channel) in self.channels.iter_mut().enumerate() {
                if value & (2 << i) != 0 {
                    if value & 0x20 == 0 {
                        channel.latch_count(t);
                    }
                    if value & 0x10 == 0 {
                        channel.latch_status(t);
                    }
                }
            }
            return;
        }
        let access = match (value >> 4) & 3 {
            0 => {
                self.channels[select].latch_count(t);
                return;
            }
            1 => Access::Lsb,
            2 => Access::Msb,
            _ => Access::Word,
        };
        let mode_bits = (value >> 1) & 7;
        self.change(select, t, |c, _| c.control_word(access, mode_bits, value & 1 != 0));
    }

    fn read_byte(&mut self, port: u16, t: u64) -> u8 {
        match port {
            0x40..=0x42 => self.channels[usize::from(port - 0x40)].read(t),
            0x61 => {
                let ch2 = &self.channels[2];
                u8::from(ch2.gate)
                    | u8::from(self.speaker_data) << 1
                    | self.port_b_enables
                    | (((t / REFRESH_TICKS) & 1) as u8) << 4
                    | u8::from(ch2.out(t)) << 5
            }
            // The control word register is write-only; 0x43 floats.
            _ => 0xFF,
        }
    }

    fn write_byte(&mut self, port: u16, value: u8, t: u64) {
        match port {
            0x40..=0x42 => self.change(usize::from(port - 0x40), t, |c, t| c.write(value, t)),
            0x43 => self.control_word(value, t),
            0x61 => {
                self.channels[2].set_gate(value & 1 != 0, t);
                self.speaker_data = value & 2 != 0;
                self.port_b_enables = value & 0x0C;
            }
            _ => {}
        }
    }
}

impl PortIoDevice for Pit {
    fn read(&mut self, port: u16, size: u8, now_ns: u64) -> u32 {
        let t = self.clock(now_ns);
        read_bytewise(port, size, |p| self.read_byte(p, t))
    }

    fn write(&mut self, port: u16, size: u8, value: u32, now_ns: u64) {
        let t = self.clock(now_ns);
        write_bytewise(port, size, value, |p, v| self.write_byte(p, v, t));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::XorShift;
    use alloc::vec::Vec;

    fn outb(p: &mut Pit, port: u16, v: u8, now_ns: u64) {
        p.write(port, 1, u32::from(v), now_ns);
    }

    fn inb(p: &mut Pit, port: u16, now_ns: u64) -> u8 {
        p.read(port, 1, now_ns) as u8
    }

    /// The first nanosecond of clock `tick`.
    fn at(tick: u64) -> u64 {
        ticks_to_ns(tick)
    }

    #[test]
    fn clock_conversion_round_trips() {
        for tick in [0, 1, 2, 1193, 1_193_182, 1 << 40] {
            assert_eq!(ns_to_ticks(at(tick)), tick);
            if tick > 0 {
                assert_eq!(ns_to_ticks(at(tick) - 1), tick - 1);
            }
        }
        assert_eq!(ns_to_ticks(NS_PER_S), PIT_HZ);
        assert_eq!(ticks_to_ns(u64::MAX), u64::MAX);
    }

    #[test]
    fn mode2_periodic_edges_over_simulated_time() {
        let mut p = Pit::new();
        p.irq_edges(0);
        // Linux: outb_p(0x34, PIT_MODE); LATCH for HZ=1000.
        let latch: u16 = ((PIT_HZ + 500) / 1000) as u16;
        outb(&mut p, 0x43, 0x34, 0);
        outb(&mut p, 0x40, latch as u8, 0);
        outb(&mut p, 0x40, (latch >> 8) as u8, 0);
        assert_eq!(p.irq_edges(0), 0);

        // Follow next_event for one second.
        let mut now = 0;
        let mut edges = 0;
        let mut wakeups = 0;
        while let Some(next) = p.next_event(now) {
            if next > NS_PER_S {
                break;
            }
            assert!(next > now);
            now = next;
            let n = p.irq_edges(now);
            assert_eq!(n, 1, "exactly one edge at each event");
            edges += n;
            wakeups += 1;
        }
        let expected = (PIT_HZ - 1) / u64::from(latch); // load at tick 1
        assert_eq!(u64::from(edges), expected);
        assert_eq!(wakeups, edges);
        // Irregular polling counts the same edges.
        let mut q = Pit::new();
        outb(&mut q, 0x43, 0x34, 0);
        outb(&mut q, 0x40, latch as u8, 0);
        outb(&mut q, 0x40, (latch >> 8) as u8, 0);
        let mut rng = XorShift(7);
        let mut t = 0;
        let mut total = 0;
        while t < NS_PER_S {
            t = (t + rng.below(3_000_000)).min(NS_PER_S);
            total += q.irq_edges(t);
        }
        assert_eq!(total, edges);
        // The first edge is N clocks after the load clock (N = 300: a
        // period above the clamp of `a_very_fast_periodic_rate_is_clamped`).
        let mut r = Pit::new();
        outb(&mut r, 0x43, 0x34, 0);
        outb(&mut r, 0x40, (300 & 0xff) as u8, 0);
        outb(&mut r, 0x40, (300 >> 8) as u8, 0);
        r.irq_edges(0);
        assert_eq!(r.next_event(0), Some(at(301)));
        assert_eq!(r.irq_edges(at(301) - 1), 0);
        assert_eq!(r.irq_edges(at(301)), 1);
        assert_eq!(r.irq_edges(at(301 + 300 * 50)), 50);
    }

    #[test]
    fn reset_state_fires_at_18_hz() {
        let mut p = Pit::new();
        assert_eq!(p.next_event(0), Some(at(1 + 0x10000)));
        assert_eq!(p.irq_edges(NS_PER_S), 18);
        assert!(p.out(2, 0), "channel 2: gate low in mode 3 holds OUT high");
        assert!(!p.out(3, 0), "no channel 3");
    }

    #[test]
    fn channel2_one_shot_visible_at_port_61() {
        // arch/x86/kernel/tsc.c: pit_calibrate_tsc(latch = 1193182 / 20, ...).
        let mut p = Pit::new();
        let t0 = 5_000_000;
        let v = inb(&mut p, 0x61, t0);
        outb(&mut p, 0x61, (v & !0x02) | 0x01, t0);
        outb(&mut p, 0x43, 0xB0, t0);
        let latch: u16 = (PIT_HZ / 20) as u16;
        outb(&mut p, 0x42, latch as u8, t0);
        outb(&mut p, 0x42, (latch >> 8) as u8, t0);
        let start = ns_to_ticks(t0);
        // OUT goes high N + 1 clocks after the count is written.
        let high = start + 1 + u64::from(latch);
        assert_eq!(inb(&mut p, 0x61, t0) & 0x20, 0);
        assert_eq!(inb(&mut p, 0x61, at(high) - 1) & 0x20, 0);
        assert_eq!(inb(&mut p, 0x61, at(high)) & 0x23, 0x21, "OUT2 high, gate still set, speaker off");
        assert_eq!(inb(&mut p, 0x61, at(high) + 40_000_000) & 0x20, 0x20, "stays high");
        let elapsed_ns = at(high) - t0;
        assert!(elapsed_ns.abs_diff(50_000_000) < 2_000, "{elapsed_ns} ns for 50 ms");
        assert!(!p.speaker_enabled());
        // Only channel 0 (still in its reset mode 3) makes IRQ 0 edges.
        let t = at(high) + 1;
        assert_eq!(u64::from(p.irq_edges(t)), (ns_to_ticks(t) - 1) / 0x10000);
    }

    #[test]
    fn quick_pit_calibrate_reads_the_msb_counting_down() {
        // arch/x86/kernel/tsc.c: quick_pit_calibrate.
        let mut p = Pit::new();
        outb(&mut p, 0x61, 0x01, 0);
        outb(&mut p, 0x43, 0xB0, 0);
        outb(&mut p, 0x42, 0xFF, 0);
        outb(&mut p, 0x42, 0xFF, 0);
        let read = |p: &mut Pit, t: u64| {
            let _lsb = inb(p, 0x42, t);
            inb(p, 0x42, t)
        };
        // Loaded at clock 1 with 0xFFFF; the MSB leaves 0xFF after 256 clocks.
        assert_eq!(read(&mut p, at(1)), 0xFF);
        assert_eq!(read(&mut p, at(256)), 0xFF);
        assert_eq!(read(&mut p, at(257)), 0xFE);
        assert_eq!(inb(&mut p, 0x42, at(1 + 0x1234)), 0xCB, "LSB of 0xFFFF - 0x1234");
        assert_eq!(inb(&mut p, 0x42, at(1 + 0x1234)), 0xED, "then the MSB");
        assert_eq!(read(&mut p, at(1 + 0xFFFF - 0x1000)), 0x10);
    }

    #[test]
    fn latch_command_and_read_back() {
        let mut p = Pit::new();
        outb(&mut p, 0x43, 0x34, 0);
        outb(&mut p, 0x40, 0xE8, 0);
        outb(&mut p, 0x40, 0x03, 0); // 1000
        // Linux's i8253 clocksource: latch, then LSB, MSB.
        outb(&mut p, 0x43, 0x00, at(1 + 300));
        outb(&mut p, 0x43, 0x00, at(1 + 500)); // ignored: already latched
        let lsb = inb(&mut p, 0x40, at(1 + 900));
        let msb = inb(&mut p, 0x40, at(1 + 900));
        assert_eq!(u16::from_le_bytes([lsb, msb]), 700);
        // Read-back of count and status for channel 0: status first.
        outb(&mut p, 0x43, 0b1100_0010, at(1 + 999));
        let status = inb(&mut p, 0x40, at(2000));
        assert_eq!(status, 0b0011_0100, "OUT low (count 1), counting, lobyte/hibyte, mode 2, binary");
        assert_eq!(inb(&mut p, 0x40, at(2000)), 1);
        assert_eq!(inb(&mut p, 0x40, at(2000)), 0);
        // Status right after a control word: null count, OUT high.
        outb(&mut p, 0x43, 0xB6, at(3000));
        outb(&mut p, 0x43, 0b1110_1000, at(3000)); // status of channel 2 only
        assert_eq!(inb(&mut p, 0x42, at(3000)), 0b1111_0110);
        // Control word register reads float.
        assert_eq!(inb(&mut p, 0x43, 0), 0xFF);
    }

    #[test]
    fn mode3_square_wave_on_channel2() {
        let mut p = Pit::new();
        outb(&mut p, 0x61, 0x03, 0);
        assert!(p.speaker_enabled());
        outb(&mut p, 0x43, 0xB6, 0);
        outb(&mut p, 0x42, 10, 0);
        outb(&mut p, 0x42, 0, 0);
        let outs: Vec<bool> = (1..=21).map(|t| inb(&mut p, 0x61, at(t)) & 0x20 != 0).collect();
        let expect: Vec<bool> = (0..21).map(|e| e % 10 < 5).collect();
        assert_eq!(outs, expect);
        // Counter decrements by two.
        outb(&mut p, 0x43, 0x80, at(1 + 24));
        assert_eq!(inb(&mut p, 0x42, at(30)), 2, "10 - 2 * (24 % 10)");
        // Odd count: high for (N + 1) / 2.
        outb(&mut p, 0x42, 7, at(100));
        outb(&mut p, 0x42, 0, at(100));
        let outs: Vec<bool> = (101..115).map(|t| inb(&mut p, 0x61, at(t)) & 0x20 != 0).collect();
        let expect: Vec<bool> = (0..14).map(|e| e % 7 < 4).collect();
        assert_eq!(outs, expect);
        // Gate low forces OUT high and stops; the rising edge restarts.
        outb(&mut p, 0x61, 0x00, at(120));
        assert_eq!(inb(&mut p, 0x61, at(125)) & 0x20, 0x20);
        outb(&mut p, 0x61, 0x01, at(200));
        assert_eq!(inb(&mut p, 0x61, at(201 + 4)) & 0x20, 0, "new period from the gate edge");
    }

    #[test]
    fn mode0_gate_pauses_counting() {
        let mut p = Pit::new();
        outb(&mut p, 0x43, 0xB0, 0);
        outb(&mut p, 0x42, 100, 0);
        outb(&mut p, 0x42, 0, 0);
        // Gate low since reset: loaded but not counting.
        assert_eq!(inb(&mut p, 0x42, at(50)), 100);
        inb(&mut p, 0x42, at(50));
        outb(&mut p, 0x61, 0x01, at(60));
        assert_eq!(inb(&mut p, 0x42, at(90)), 70);
        inb(&mut p, 0x42, at(90));
        outb(&mut p, 0x61, 0x00, at(90));
        assert_eq!(inb(&mut p, 0x42, at(500)), 70);
        inb(&mut p, 0x42, at(500));
        outb(&mut p, 0x61, 0x01, at(500));
        assert_eq!(inb(&mut p, 0x61, at(569)) & 0x20, 0);
        assert_eq!(inb(&mut p, 0x61, at(570)) & 0x20, 0x20);
        // Wraps after terminal count.
        assert_eq!(inb(&mut p, 0x42, at(571)), 0xFF);
        assert_eq!(inb(&mut p, 0x42, at(571)), 0xFF);
    }

    #[test]
    fn mode4_one_shot_on_channel0() {
        let mut p = Pit::new();
        p.irq_edges(0);
        // Linux's PIT oneshot clockevent: outb_p(0x38, PIT_MODE).
        outb(&mut p, 0x43, 0x38, at(10));
        assert_eq!(p.irq_edges(at(10)), 0, "mode 4 keeps OUT high");
        outb(&mut p, 0x40, 50, at(10));
        outb(&mut p, 0x40, 0, at(10));
        assert_eq!(p.next_event(at(10)), Some(at(10 + 1 + 51)));
        assert!(p.out(0, at(60)));
        assert!(!p.out(0, at(61)), "strobe at terminal count");
        assert!(p.out(0, at(62)));
        assert_eq!(p.irq_edges(at(100)), 1);
        assert_eq!(p.next_event(at(100)), None);
        assert_eq!(p.irq_edges(at(100_000)), 0);
        // Mode 0 then: OUT goes low at the control word, rises at terminal count.
        outb(&mut p, 0x43, 0x30, at(200_000));
        outb(&mut p, 0x40, 10, at(200_000));
        outb(&mut p, 0x40, 0, at(200_000));
        assert_eq!(p.irq_edges(at(200_011)), 1);
        // Switching from mode 0 (OUT low) to mode 2 raises OUT: an edge.
        outb(&mut p, 0x43, 0x30, at(300_000));
        assert_eq!(p.irq_edges(at(300_000)), 0);
        outb(&mut p, 0x43, 0x34, at(300_001));
        assert_eq!(p.irq_edges(at(300_001)), 1);
    }

    #[test]
    fn mode1_and_5_wait_for_the_gate() {
        let mut p = Pit::new();
        outb(&mut p, 0x43, 0x92, 0); // channel 2, lobyte, mode 1
        outb(&mut p, 0x42, 20, 0);
        assert!(p.out(2, at(100)), "high until triggered");
        outb(&mut p, 0x61, 0x01, at(100));
        assert!(!p.out(2, at(101)));
        assert!(!p.out(2, at(120)));
        assert!(p.out(2, at(121)));
        outb(&mut p, 0x61, 0x00, at(130));
        outb(&mut p, 0x61, 0x01, at(130));
        assert!(!p.out(2, at(140)), "retriggered");
        outb(&mut p, 0x43, 0x9A, at(200)); // mode 5
        outb(&mut p, 0x42, 5, at(200));
        outb(&mut p, 0x61, 0x00, at(200));
        outb(&mut p, 0x61, 0x01, at(201));
        assert!(p.out(2, at(206)));
        assert!(!p.out(2, at(207)), "strobe");
        assert!(p.out(2, at(208)));
    }

    #[test]
    fn bcd_and_byte_formats() {
        let mut p = Pit::new();
        outb(&mut p, 0x43, 0x71, 0); // channel 1, word, mode 0, BCD
        outb(&mut p, 0x41, 0x00, 0);
        outb(&mut p, 0x41, 0x10, 0); // 1000 BCD
        assert_eq!(inb(&mut p, 0x41, at(1 + 1)), 0x99);
        assert_eq!(inb(&mut p, 0x41, at(1 + 1)), 0x09, "0999");
        assert_eq!(inb(&mut p, 0x41, at(1 + 1001)), 0x99);
        assert_eq!(inb(&mut p, 0x41, at(1 + 1001)), 0x99, "wrapped to 9999");
        outb(&mut p, 0x43, 0x60, at(2000)); // channel 1, MSB only, mode 0
        outb(&mut p, 0x41, 0x02, at(2000)); // count 0x200
        assert_eq!(inb(&mut p, 0x41, at(2001 + 0x100)), 0x01);
        outb(&mut p, 0x43, 0x50, at(3000)); // LSB only
        outb(&mut p, 0x41, 0x30, at(3000));
        assert_eq!(inb(&mut p, 0x41, at(3001 + 0x10)), 0x20);
        assert_eq!(to_bcd(1234), 0x1234);
        assert_eq!(from_bcd(0x1234), 1234);
    }

    #[test]
    fn refresh_bit_toggles() {
        let mut p = Pit::new();
        let a = inb(&mut p, 0x61, at(0)) & 0x10;
        let b = inb(&mut p, 0x61, at(REFRESH_TICKS)) & 0x10;
        assert_ne!(a, b);
        outb(&mut p, 0x61, 0xFC, 0);
        assert_eq!(inb(&mut p, 0x61, at(0)) & 0xCF, 0x0C, "enables kept, NMI sources clear");
    }

    #[test]
    fn time_going_backwards_stands_still() {
        let mut p = Pit::new();
        assert_eq!(p.irq_edges(NS_PER_S), 18);
        assert_eq!(p.irq_edges(0), 0);
        outb(&mut p, 0x43, 0x34, 10);
        outb(&mut p, 0x40, 10, 10);
        outb(&mut p, 0x40, 0, 10);
        assert_eq!(p.irq_edges(5), 0);
        assert!(p.next_event(0).unwrap() > NS_PER_S);
    }

    #[test]
    fn fuzz_never_panics() {
        let mut rng = XorShift(0x8254_0061);
        let mut p = Pit::new();
        let ports = [0x40u16, 0x41, 0x42, 0x43, 0x61, 0x44, 0x60];
        let mut now: u64 = 0;
        for i in 0..200_000 {
            now = match rng.below(20) {
                0 => rng.next(),
                1 => u64::MAX - rng.below(1000),
                2 => now / 2,
                _ => now.saturating_add(rng.below(100_000)),
            };
            if i % 10_000 == 0 {
                now = 0;
                p = Pit::new();
            }
            let port = ports[rng.below(ports.len() as u64) as usize];
            match rng.below(6) {
                0 | 1 => {
                    p.read(port, rng.size(), now);
                }
                2 | 3 => {
                    let v = if port == 0x43 && rng.below(2) == 0 {
                        rng.below(4) << 6 | 0x30 | rng.below(16)
                    } else {
                        rng.next()
                    };
                    p.write(port, rng.size(), v as u32, now);
                }
                4 => {
                    if let Some(next) = p.next_event(now) {
                        assert!(next >= now.min(ticks_to_ns(p.now)));
                    }
                }
                _ => {
                    p.irq_edges(now);
                }
            }
        }
    }

    #[test]
    fn a_very_fast_periodic_rate_is_clamped() {
        let mut p = Pit::new();
        // Channel 0, mode 2, lobyte/hibyte, count 2: 596,591 Hz asked for.
        p.write(0x43, 1, 0x34, 0);
        p.write(0x40, 1, 2, 0);
        p.write(0x40, 1, 0, 0);
        let mut now = 1_000_000;
        let mut wakeups = 0;
        let mut edges = 0u64;
        while now < 101_000_000 {
            let next = p.next_event(now).expect("running");
            assert!(next >= now + MIN_PERIOD_NS || next == now, "woke {} ns after {now}", next - now);
            now = next.max(now + 1);
            edges += u64::from(p.irq_edges(now));
            wakeups += 1;
        }
        // 100 ms: at most 500 wake-ups, and the interrupts still come.
        assert!(wakeups <= 1 + 100_000_000 / MIN_PERIOD_NS, "{wakeups} wake-ups");
        assert!(edges > 0);
        // An ordinary rate (1 kHz) is untouched.
        let mut p = Pit::new();
        p.write(0x43, 1, 0x34, 0);
        p.write(0x40, 1, (1193 & 0xff) as u32, 0);
        p.write(0x40, 1, (1193 >> 8) as u32, 0);
        let next = p.next_event(0).unwrap();
        assert!((900_000..1_100_000).contains(&next), "{next}");
    }
}
