//! The MC146818 real-time clock and its CMOS RAM (ports 0x70/0x71, IRQ 8).
//!
//! Behaviour follows the Motorola MC146818A datasheet: the address map
//! (Figure 4: time, alarm, registers A-D, then user RAM), BCD or binary
//! data mode and 12/24-hour format (register B, Table 3), the update cycle
//! and its UIP bit (Figure 5: UIP rises 244 µs before each update), the
//! periodic rates of register A (Table 5), and the interrupt flags of
//! register C with their enables in register B. The index port's bit 7
//! masks NMI on a PC (IBM PC/AT Technical Reference, "CMOS RAM"); byte 0x32
//! holds the century (the IBM convention, named by ACPI's FADT CENTURY).
//!
//! The clock is the `unix_seconds` the VMM gives at construction plus the
//! `now_ns` elapsed since: the registers are computed when read, so the
//! model needs no tick. While SET (register B bit 7) is set the clock stands
//! still and the guest may write it; writes to the time registers move the
//! clock. Day of week is derived from the date (writes to it are ignored),
//! and the divider bits (DV) of register A are stored but do not stop the
//! clock: Linux only touches them with SET held.

use super::{PortIoDevice, PortRange, read_bytewise, write_bytewise};

pub const RTC_PORTS: PortRange = PortRange::new(0x70, 2);
pub const RTC_IRQ: u8 = 8;
/// Bytes of CMOS RAM, clock and status registers included.
pub const CMOS_SIZE: usize = 128;

const NS_PER_S: i128 = 1_000_000_000;
const SECONDS_PER_DAY: i64 = 86_400;
/// 0000-01-01 00:00:00 and 9999-12-31 23:59:59 UTC.
const FIRST_SECOND: i64 = -62_167_219_200;
const LAST_SECOND: i64 = 253_402_300_799;
/// UIP is set this long before each update: 8 cycles of the 32.768 kHz
/// time base (datasheet Figure 5, 244 µs).
const UIP_LEAD_NS: i128 = 244_141;

// Register indices (datasheet Figure 4).
const SECONDS: u8 = 0x00;
const SECONDS_ALARM: u8 = 0x01;
const MINUTES: u8 = 0x02;
const MINUTES_ALARM: u8 = 0x03;
const HOURS: u8 = 0x04;
const HOURS_ALARM: u8 = 0x05;
const DAY_OF_WEEK: u8 = 0x06;
const DAY_OF_MONTH: u8 = 0x07;
const MONTH: u8 = 0x08;
const YEAR: u8 = 0x09;
const REG_A: u8 = 0x0A;
const REG_B: u8 = 0x0B;
const REG_C: u8 = 0x0C;
const REG_D: u8 = 0x0D;
const CENTURY: u8 = 0x32;

const A_UIP: u8 = 0x80;
const B_SET: u8 = 0x80;
const B_PIE: u8 = 0x40;
const B_AIE: u8 = 0x20;
const B_UIE: u8 = 0x10;
const B_BINARY: u8 = 0x04;
const B_24H: u8 = 0x02;
const C_IRQF: u8 = 0x80;
const C_PF: u8 = 0x40;
const C_AF: u8 = 0x20;
const C_UF: u8 = 0x10;
const D_VRT: u8 = 0x80;

/// Days since 1970-01-01 of a proleptic Gregorian date (any month/day
/// overflow rolls over, as `mktime` normalises).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let month = i64::from(month.clamp(1, 12));
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

// The date of a day number from `days_from_civil` (the one calendar
// code every server shares).
use libipc::time::civil_from_days;

/// Broken-down time, binary, 24-hour.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct DateTime {
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
}

impl DateTime {
    fn from_unix(seconds: i64) -> Self {
        let (year, month, day) = civil_from_days(seconds.div_euclid(SECONDS_PER_DAY));
        let tod = seconds.rem_euclid(SECONDS_PER_DAY) as u32;
        Self { year, month, day, hour: tod / 3600, minute: tod / 60 % 60, second: tod % 60 }
    }

    fn to_unix(self) -> i64 {
        days_from_civil(self.year, self.month, self.day) * SECONDS_PER_DAY
            + i64::from(self.hour) * 3600
            + i64::from(self.minute) * 60
            + i64::from(self.second)
    }
}

/// The MC146818 with 128 bytes of CMOS RAM.
#[derive(Clone, Debug)]
pub struct Rtc {
    index: u8,
    nmi_disabled: bool,
    /// Alarm registers, A, B and the user RAM; the time registers and C/D
    /// are computed.
    cmos: [u8; CMOS_SIZE],
    /// The clock, in nanoseconds since the Unix epoch, at `base_now` ...
    base_clock: i128,
    base_now: u64,
    /// ... or, with SET held, the time registers as they stand (unnormalised:
    /// the guest writes them one by one, and 31 February may be on its way
    /// to 31 March) and the position within the second.
    frozen: Option<(DateTime, i128)>,
    /// The latest `now_ns` seen: time never runs backwards here.
    last_now: u64,
    /// Register C flags (PF, AF, UF) as of `checked_now`/`checked_clock`.
    flags: u8,
    checked_now: u64,
    checked_clock: i128,
}

impl Rtc {
    /// An RTC reading `unix_seconds` at `now_ns`, in BCD and 24-hour mode
    /// with the divider running (register A 0x26, B 0x02), as firmware
    /// leaves it. The time is clamped to the years 0000-9999 the century and
    /// year registers can show.
    pub fn new(unix_seconds: i64, now_ns: u64) -> Self {
        let unix_seconds = unix_seconds.clamp(FIRST_SECOND, LAST_SECOND);
        let mut cmos = [0; CMOS_SIZE];
        cmos[usize::from(REG_A)] = 0x26;
        cmos[usize::from(REG_B)] = B_24H;
        let base_clock = i128::from(unix_seconds) * NS_PER_S;
        Self {
            index: 0,
            nmi_disabled: false,
            cmos,
            base_clock,
            base_now: now_ns,
            frozen: None,
            last_now: now_ns,
            flags: 0,
            checked_now: now_ns,
            checked_clock: base_clock,
        }
    }

    /// Whether the guest masked NMI through port 0x70 bit 7.
    pub fn nmi_disabled(&self) -> bool {
        self.nmi_disabled
    }

    /// The clock as seconds since the Unix epoch (the guest may have set it).
    pub fn unix_seconds(&self, now_ns: u64) -> i64 {
        let clock = self.clock(self.last_now.max(now_ns));
        clock.div_euclid(NS_PER_S) as i64
    }

    /// The IRQ 8 line: IRQF of register C (an enabled flag is set). It stays
    /// up until the guest reads register C.
    pub fn irq_level(&mut self, now_ns: u64) -> bool {
        let now = self.advance(now_ns);
        self.update_flags(now);
        self.irqf()
    }

    /// When the IRQ line will next rise if nothing else happens (periodic,
    /// update-ended or alarm interrupt, whichever is enabled and first);
    /// `None` when none is enabled or the line is already up. Ask again after
    /// every access the guest makes.
    pub fn next_event(&self, now_ns: u64) -> Option<u64> {
        let now = self.last_now.max(now_ns);
        let b = self.reg_b();
        if self.irqf() {
            return None;
        }
        let mut next: Option<u64> = None;
        let mut consider = |at: Option<u64>| {
            if let Some(at) = at {
                next = Some(next.map_or(at, |n| n.min(at)));
            }
        };
        if b & B_PIE != 0 {
            consider(self.periodic_shift().and_then(|k| {
                let n = (Self::ticks_32k(now) >> k) + 1;
                let ns = (u128::from(n) << k) * 1_000_000_000u128;
                u64::try_from(ns.div_ceil(32_768)).ok()
            }));
        }
        if self.frozen.is_none() {
            let clock = self.clock(now);
            let to_clock_time = |second: i64| -> Option<u64> {
                let delta = i128::from(second) * NS_PER_S - clock;
                u64::try_from(delta).ok().and_then(|d| now.checked_add(d))
            };
            let second = clock.div_euclid(NS_PER_S) as i64;
            if b & B_UIE != 0 {
                consider(to_clock_time(second + 1));
            }
            if b & B_AIE != 0 {
                consider(self.next_alarm_after(second).and_then(to_clock_time));
            }
        }
        next
    }

    /// Sets a byte of CMOS RAM as firmware would (e.g. the memory-size
    /// bytes); `false` for the clock and status registers, which are not
    /// plain memory.
    pub fn set_nvram(&mut self, index: u8, value: u8) -> bool {
        if !Self::is_ram(index) {
            return false;
        }
        self.cmos[usize::from(index)] = value;
        true
    }

    /// A byte of CMOS RAM (`None` for the clock and status registers).
    pub fn nvram(&self, index: u8) -> Option<u8> {
        Self::is_ram(index).then(|| self.cmos[usize::from(index)])
    }

    fn is_ram(index: u8) -> bool {
        (0x0E..0x80).contains(&index) && index != CENTURY
    }

    fn advance(&mut self, now_ns: u64) -> u64 {
        self.last_now = self.last_now.max(now_ns);
        self.last_now
    }

    fn clock(&self, now: u64) -> i128 {
        match self.frozen {
            Some((time, within)) => i128::from(time.to_unix()) * NS_PER_S + within,
            None => self.base_clock + i128::from(now.saturating_sub(self.base_now)),
        }
    }

    fn reg_b(&self) -> u8 {
        self.cmos[usize::from(REG_B)]
    }

    fn binary(&self) -> bool {
        self.reg_b() & B_BINARY != 0
    }

    fn irqf(&self) -> bool {
        // PF/AF/UF in C line up with PIE/AIE/UIE in B (bits 6:4).
        self.flags & self.reg_b() & (B_PIE | B_AIE | B_UIE) != 0
    }

    fn encode(&self, value: u32) -> u8 {
        if self.binary() { value as u8 } else { (((value / 10 % 10) << 4) | (value % 10)) as u8 }
    }

    fn decode(&self, raw: u8) -> u32 {
        if self.binary() { u32::from(raw) } else { u32::from(raw >> 4) * 10 + u32::from(raw & 0x0F) }
    }

    fn encode_hour(&self, hour: u32) -> u8 {
        if self.reg_b() & B_24H != 0 {
            return self.encode(hour);
        }
        let h12 = if hour.is_multiple_of(12) { 12 } else { hour % 12 };
        self.encode(h12) | if hour >= 12 { 0x80 } else { 0 }
    }

    fn decode_hour(&self, raw: u8) -> u32 {
        if self.reg_b() & B_24H != 0 {
            return self.decode(raw);
        }
        self.decode(raw & 0x7F) % 12 + if raw & 0x80 != 0 { 12 } else { 0 }
    }

    /// The 32.768 kHz time base's cycles up to `now`.
    fn ticks_32k(now: u64) -> u64 {
        (u128::from(now) * 32_768 / 1_000_000_000) as u64
    }

    /// The periodic interrupt's period as a power of two of time-base
    /// cycles (datasheet Table 5): RS 3-15 give 2^(RS-1); RS 1 and 2 give
    /// the same rates as 8 and 9; RS 0 is off.
    fn periodic_shift(&self) -> Option<u32> {
        match u32::from(self.cmos[usize::from(REG_A)] & 0x0F) {
            0 => None,
            rs @ 1..=2 => Some(rs + 6),
            rs => Some(rs - 1),
        }
    }

    /// Sets register C's flags for whatever happened since they were last
    /// brought up to date.
    fn update_flags(&mut self, now: u64) {
        if let Some(k) = self.periodic_shift()
            && Self::ticks_32k(now) >> k > Self::ticks_32k(self.checked_now) >> k
        {
            self.flags |= C_PF;
        }
        let clock = self.clock(now);
        if self.frozen.is_none() {
            let from = self.checked_clock.div_euclid(NS_PER_S) as i64;
            let to = clock.div_euclid(NS_PER_S) as i64;
            if to > from {
                self.flags |= C_UF;
                if self.next_alarm_after(from).is_some_and(|at| at <= to) {
                    self.flags |= C_AF;
                }
            }
        }
        self.checked_now = now;
        self.checked_clock = clock;
    }

    /// An alarm byte as a match value: `None` is "don't care" (bits 7:6 set).
    fn alarm_field(&self, index: u8) -> Option<u32> {
        let raw = self.cmos[usize::from(index)];
        if raw & 0xC0 == 0xC0 {
            return None;
        }
        Some(if index == HOURS_ALARM { self.decode_hour(raw) } else { self.decode(raw) })
    }

    /// The first time of day at or after `from` (seconds into the day) that
    /// the alarm matches.
    fn next_alarm_tod(&self, from: u32) -> Option<u32> {
        let fields = [(HOURS_ALARM, 24), (MINUTES_ALARM, 60), (SECONDS_ALARM, 60)];
        let mut ranges = [(0u32, 0u32); 3];
        for (range, (index, limit)) in ranges.iter_mut().zip(fields) {
            *range = match self.alarm_field(index) {
                None => (0, limit - 1),
                Some(v) if v < limit => (v, v),
                Some(_) => return None, // never matches
            };
        }
        let (fh, fm) = (from / 3600, from / 60 % 60);
        for h in ranges[0].0.max(fh)..=ranges[0].1 {
            for m in ranges[1].0..=ranges[1].1 {
                if h == fh && m < fm {
                    continue;
                }
                for s in ranges[2].0..=ranges[2].1 {
                    let tod = h * 3600 + m * 60 + s;
                    if tod >= from {
                        return Some(tod);
                    }
                }
            }
        }
        None
    }

    /// The first clock second after `second` at which the alarm matches.
    fn next_alarm_after(&self, second: i64) -> Option<i64> {
        let day_start = second - second.rem_euclid(SECONDS_PER_DAY);
        let tod = (second - day_start) as u32;
        match self.next_alarm_tod(tod + 1) {
            Some(at) => Some(day_start + i64::from(at)),
            None => self.next_alarm_tod(0).map(|at| day_start + SECONDS_PER_DAY + i64::from(at)),
        }
    }

    fn now_datetime(&self, now: u64) -> DateTime {
        match self.frozen {
            Some((time, _)) => time,
            None => DateTime::from_unix(self.clock(now).div_euclid(NS_PER_S) as i64),
        }
    }

    fn read_register(&mut self, index: u8, now: u64) -> u8 {
        let t = self.now_datetime(now);
        match index {
            SECONDS => self.encode(t.second),
            MINUTES => self.encode(t.minute),
            HOURS => self.encode_hour(t.hour),
            DAY_OF_WEEK => {
                let dow = (days_from_civil(t.year, t.month, t.day) + 4).rem_euclid(7) as u32;
                self.encode(dow + 1) // 1 = Sunday
            }
            DAY_OF_MONTH => self.encode(t.day),
            MONTH => self.encode(t.month),
            YEAR => self.encode(t.year.rem_euclid(100) as u32),
            CENTURY => self.encode(t.year.div_euclid(100).rem_euclid(100) as u32),
            REG_A => {
                let uip = self.frozen.is_none() && self.clock(now).rem_euclid(NS_PER_S) >= NS_PER_S - UIP_LEAD_NS;
                self.cmos[usize::from(REG_A)] | if uip { A_UIP } else { 0 }
            }
            REG_C => {
                self.update_flags(now);
                let c = self.flags | if self.irqf() { C_IRQF } else { 0 };
                self.flags = 0;
                c
            }
            REG_D => D_VRT,
            _ => self.cmos[usize::from(index)],
        }
    }

    fn write_register(&mut self, index: u8, value: u8, now: u64) {
        match index {
            SECONDS | MINUTES | HOURS | DAY_OF_MONTH | MONTH | YEAR | CENTURY => self.write_time(index, value, now),
            DAY_OF_WEEK | REG_C | REG_D => {}
            REG_A => {
                self.update_flags(now);
                self.cmos[usize::from(REG_A)] = value & !A_UIP;
            }
            REG_B => {
                self.update_flags(now);
                let mut value = value;
                if value & B_SET != 0 {
                    // SET going high clears UIE (datasheet, register B).
                    value &= !B_UIE;
                    if self.frozen.is_none() {
                        let clock = self.clock(now);
                        let time = DateTime::from_unix(clock.div_euclid(NS_PER_S) as i64);
                        self.frozen = Some((time, clock.rem_euclid(NS_PER_S)));
                    }
                } else if self.frozen.is_some() {
                    // Released: the clock runs from the registers as set.
                    let clock = self.clock(now);
                    self.frozen = None;
                    self.base_clock = clock;
                    self.base_now = now;
                    self.checked_clock = clock;
                }
                self.cmos[usize::from(REG_B)] = value;
            }
            _ => self.cmos[usize::from(index)] = value,
        }
    }

    fn write_time(&mut self, index: u8, value: u8, now: u64) {
        self.update_flags(now);
        let mut t = self.now_datetime(now);
        let v = self.decode(value);
        match index {
            SECONDS => t.second = v,
            MINUTES => t.minute = v,
            HOURS => t.hour = self.decode_hour(value),
            DAY_OF_MONTH => t.day = v,
            MONTH => t.month = v,
            YEAR => t.year = t.year.div_euclid(100) * 100 + i64::from(v),
            _ => t.year = t.year.rem_euclid(100) + i64::from(v) * 100,
        }
        match self.frozen {
            // Normalised when SET is released, all fields at once.
            Some(_) => self.frozen = Some((t, 0)),
            None => {
                // Keep the position within the second.
                let within = self.clock(now).rem_euclid(NS_PER_S);
                self.base_clock = i128::from(t.to_unix()) * NS_PER_S + within;
                self.base_now = now;
            }
        }
        self.checked_clock = self.clock(now);
    }
}

impl PortIoDevice for Rtc {
    fn read(&mut self, port: u16, size: u8, now_ns: u64) -> u32 {
        let now = self.advance(now_ns);
        read_bytewise(port, size, |p| match p {
            0x71 => self.read_register(self.index, now),
            // The index register is write-only.
            _ => 0xFF,
        })
    }

    fn write(&mut self, port: u16, size: u8, value: u32, now_ns: u64) {
        let now = self.advance(now_ns);
        write_bytewise(port, size, value, |p, v| match p {
            0x70 => {
                self.nmi_disabled = v & 0x80 != 0;
                self.index = v & 0x7F;
            }
            0x71 => self.write_register(self.index, v, now),
            _ => {}
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::XorShift;

    /// 2024-02-29 23:59:58 UTC, a Thursday.
    const LEAP_EVE: i64 = 1_709_251_198;
    const S: u64 = 1_000_000_000;

    fn cmos_read(r: &mut Rtc, index: u8, now: u64) -> u8 {
        r.write(0x70, 1, u32::from(index), now);
        r.read(0x71, 1, now) as u8
    }

    fn cmos_write(r: &mut Rtc, index: u8, value: u8, now: u64) {
        r.write(0x70, 1, u32::from(index), now);
        r.write(0x71, 1, u32::from(value), now);
    }

    fn time(r: &mut Rtc, now: u64) -> [u8; 8] {
        [SECONDS, MINUTES, HOURS, DAY_OF_WEEK, DAY_OF_MONTH, MONTH, YEAR, CENTURY].map(|i| cmos_read(r, i, now))
    }

    #[test]
    fn calendar_round_trips() {
        for days in [-800_000, -1, 0, 1, 11_016, 19_782, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(DateTime::from_unix(LEAP_EVE).to_unix(), LEAP_EVE);
        assert_eq!(
            DateTime::from_unix(FIRST_SECOND),
            DateTime { year: 0, month: 1, day: 1, hour: 0, minute: 0, second: 0 }
        );
        assert_eq!(DateTime::from_unix(LAST_SECOND).year, 9999);
        assert_eq!(Rtc::new(i64::MAX, 0).unix_seconds(0), LAST_SECOND);
    }

    #[test]
    fn bcd_time_rolls_over_a_leap_day() {
        let mut r = Rtc::new(LEAP_EVE, 0);
        assert_eq!(time(&mut r, 0), [0x58, 0x59, 0x23, 0x05, 0x29, 0x02, 0x24, 0x20]);
        assert_eq!(time(&mut r, 2 * S), [0x00, 0x00, 0x00, 0x06, 0x01, 0x03, 0x24, 0x20]);
        assert_eq!(r.unix_seconds(2 * S), LEAP_EVE + 2);
        assert_eq!(cmos_read(&mut r, REG_D, 0), 0x80);
        assert_eq!(cmos_read(&mut r, REG_A, 2 * S) & 0x7F, 0x26);
    }

    #[test]
    fn binary_and_12_hour_modes() {
        let mut r = Rtc::new(LEAP_EVE, 0);
        cmos_write(&mut r, REG_B, B_BINARY | B_24H, 0);
        assert_eq!(time(&mut r, 0), [58, 59, 23, 5, 29, 2, 24, 20]);
        cmos_write(&mut r, REG_B, B_BINARY, 0);
        assert_eq!(cmos_read(&mut r, HOURS, 0), 0x80 | 11, "11 PM");
        assert_eq!(cmos_read(&mut r, HOURS, 3 * S), 12, "12 AM");
        cmos_write(&mut r, REG_B, 0, 3 * S);
        assert_eq!(cmos_read(&mut r, HOURS, 3 * S), 0x12);
        // Setting 1 PM in 12-hour BCD.
        cmos_write(&mut r, HOURS, 0x81, 3 * S);
        cmos_write(&mut r, REG_B, B_24H, 3 * S);
        assert_eq!(cmos_read(&mut r, HOURS, 3 * S), 0x13);
    }

    #[test]
    fn uip_rises_244us_before_each_update() {
        let mut r = Rtc::new(LEAP_EVE, 0);
        let uip = |r: &mut Rtc, t: u64| cmos_read(r, REG_A, t) & A_UIP != 0;
        assert!(!uip(&mut r, 0));
        assert!(!uip(&mut r, S - 245_000));
        assert!(uip(&mut r, S - 244_000));
        assert_eq!(cmos_read(&mut r, SECONDS, S - 1), 0x58, "not updated yet");
        assert!(!uip(&mut r, S));
        assert_eq!(cmos_read(&mut r, SECONDS, S), 0x59);
        // Linux's mc146818_avoid_UIP loop: wait for UIP clear, read, check.
        let mut t = S + S - 200_000;
        let mut polls = 0;
        while uip(&mut r, t) {
            t += 100_000;
            polls += 1;
        }
        assert_eq!(polls, 2);
        assert_eq!(cmos_read(&mut r, SECONDS, t), 0x00);
        // SET stops updates: no UIP.
        cmos_write(&mut r, REG_B, B_SET | B_24H, t);
        assert!(!uip(&mut r, 3 * S - 1000));
    }

    #[test]
    fn set_bit_freezes_and_writes_set_the_clock() {
        let mut r = Rtc::new(LEAP_EVE, 0);
        // Linux's mc146818_set_time: SET, write fields, clear SET.
        cmos_write(&mut r, REG_B, B_SET | B_24H | B_UIE, S / 2);
        assert_eq!(cmos_read(&mut r, REG_B, S / 2), B_SET | B_24H, "SET clears UIE");
        // In Linux's order: year, month, day (31 February on the way), ...
        for (index, value) in [
            (YEAR, 0x99),
            (CENTURY, 0x19),
            (MONTH, 0x12),
            (DAY_OF_MONTH, 0x31),
            (HOURS, 0x08),
            (MINUTES, 0x15),
            (SECONDS, 0x30),
        ] {
            cmos_write(&mut r, index, value, S);
        }
        assert_eq!(cmos_read(&mut r, SECONDS, 100 * S), 0x30, "frozen");
        cmos_write(&mut r, REG_B, B_24H, 100 * S);
        assert_eq!(time(&mut r, 100 * S + S - 1), [0x30, 0x15, 0x08, 0x06, 0x31, 0x12, 0x99, 0x19]);
        assert_eq!(time(&mut r, 131 * S), [0x01, 0x16, 0x08, 0x06, 0x31, 0x12, 0x99, 0x19]);
        assert_eq!(r.unix_seconds(131 * S), 946_628_161);
        // Without SET, a write moves the clock and keeps counting.
        cmos_write(&mut r, YEAR, 0x00, 131 * S);
        cmos_write(&mut r, CENTURY, 0x21, 131 * S);
        assert_eq!(cmos_read(&mut r, YEAR, 132 * S), 0x00);
        assert_eq!(cmos_read(&mut r, CENTURY, 132 * S), 0x21);
        assert_eq!(cmos_read(&mut r, SECONDS, 132 * S), 0x02);
        cmos_write(&mut r, DAY_OF_WEEK, 0x01, 132 * S);
        assert_eq!(cmos_read(&mut r, DAY_OF_WEEK, 132 * S), 0x06, "derived from the date: 2100-12-31 is a Friday");
    }

    #[test]
    fn update_and_alarm_interrupts() {
        let mut r = Rtc::new(LEAP_EVE, 0);
        assert!(!r.irq_level(0));
        assert_eq!(r.next_event(0), None, "nothing enabled");
        cmos_read(&mut r, REG_C, 0);
        cmos_write(&mut r, REG_B, B_24H | B_UIE, 0);
        assert_eq!(r.next_event(S / 4), Some(S));
        assert!(!r.irq_level(S - 1));
        assert!(r.irq_level(S));
        assert_eq!(r.next_event(S), None, "line up until C is read");
        // PF is set too: the periodic rate runs (register A's RS = 6)
        // whether or not PIE lets it interrupt.
        assert_eq!(cmos_read(&mut r, REG_C, S), C_IRQF | C_PF | C_UF);
        assert_eq!(cmos_read(&mut r, REG_C, S), 0, "read clears");
        assert!(!r.irq_level(S));
        // Alarm at 00:00:05 (BCD), hours don't care.
        cmos_write(&mut r, HOURS_ALARM, 0xFF, S);
        cmos_write(&mut r, MINUTES_ALARM, 0x00, S);
        cmos_write(&mut r, SECONDS_ALARM, 0x05, S);
        cmos_write(&mut r, REG_B, B_24H | B_AIE, S);
        // Clock at S is 23:59:59; 00:00:05 is 6 s later.
        assert_eq!(r.next_event(S), Some(7 * S));
        assert!(!r.irq_level(7 * S - 1));
        assert!(r.irq_level(7 * S));
        assert_eq!(cmos_read(&mut r, REG_C, 7 * S), C_IRQF | C_PF | C_AF | C_UF);
        // Next match an hour later (hours don't care).
        assert_eq!(r.next_event(7 * S), Some(7 * S + 3600 * S));
        // A long gap still catches the match.
        assert_eq!(cmos_read(&mut r, REG_C, 7 * S + 7200 * S) & C_AF, C_AF);
        // An impossible alarm never fires.
        cmos_write(&mut r, SECONDS_ALARM, 0x61, 8000 * S);
        assert_eq!(r.next_event(8000 * S), None);
    }

    #[test]
    fn periodic_interrupt_rates() {
        let mut r = Rtc::new(0, 0);
        // RS = 6: 1024 Hz; Linux's rtc-cmos default.
        cmos_write(&mut r, REG_A, 0x26, 0);
        cmos_write(&mut r, REG_B, B_24H | B_PIE, 0);
        assert_eq!(r.next_event(0), Some((32 * S).div_ceil(32_768)));
        let mut fired = 0;
        let mut now = 0;
        while let Some(next) = r.next_event(now) {
            if next > S {
                break;
            }
            now = next;
            assert!(r.irq_level(now));
            assert_eq!(cmos_read(&mut r, REG_C, now) & (C_IRQF | C_PF), C_IRQF | C_PF);
            fired += 1;
        }
        assert_eq!(fired, 1024);
        // PF is set even when PIE is off, without raising the line.
        cmos_write(&mut r, REG_B, B_24H, now);
        assert!(!r.irq_level(now + S));
        assert_eq!(cmos_read(&mut r, REG_C, now + S) & (C_IRQF | C_PF), C_PF);
        // RS = 0 stops it; RS = 1 is 256 Hz.
        assert_eq!(cmos_read(&mut r, REG_C, 3 * S) & C_PF, C_PF);
        cmos_write(&mut r, REG_A, 0x20, 3 * S);
        assert_eq!(cmos_read(&mut r, REG_C, 4 * S) & C_PF, 0);
        cmos_write(&mut r, REG_A, 0x21, 4 * S);
        cmos_write(&mut r, REG_B, B_24H | B_PIE, 4 * S);
        assert_eq!(r.next_event(4 * S), Some(4 * S + S / 256));
    }

    #[test]
    fn nvram_index_and_nmi_bit() {
        let mut r = Rtc::new(0, 0);
        cmos_write(&mut r, 0x40, 0xAB, 0);
        assert_eq!(cmos_read(&mut r, 0x40, 0), 0xAB);
        assert_eq!(r.nvram(0x40), Some(0xAB));
        assert!(r.set_nvram(0x15, 0x80));
        assert!(!r.set_nvram(REG_A, 0));
        assert!(!r.set_nvram(CENTURY, 0));
        assert!(!r.set_nvram(0x80, 0));
        assert_eq!(r.nvram(0x00), None);
        assert_eq!(cmos_read(&mut r, 0x15, 0), 0x80);
        r.write(0x70, 1, 0x80 | 0x40, 0);
        assert!(r.nmi_disabled());
        assert_eq!(r.read(0x71, 1, 0), 0xAB);
        r.write(0x70, 1, 0x0D, 0);
        assert!(!r.nmi_disabled());
        assert_eq!(r.read(0x70, 1, 0), 0xFF);
        // A word read at 0x70 reads the (write-only) index and the data.
        assert_eq!(r.read(0x70, 2, 0), 0x80FF);
        cmos_write(&mut r, REG_C, 0xFF, 0);
        cmos_write(&mut r, REG_D, 0x00, 0);
        assert_eq!(cmos_read(&mut r, REG_D, 0), 0x80);
    }

    #[test]
    fn fuzz_never_panics() {
        let mut rng = XorShift(0x1468_1800);
        let starts = [0, -1, i64::MIN, i64::MAX, 4_102_444_800];
        for start in starts {
            let mut r = Rtc::new(start, 0);
            let mut now: u64 = 0;
            for _ in 0..40_000 {
                now = match rng.below(30) {
                    0 => rng.next(),
                    1 => now / 3,
                    _ => now.saturating_add(rng.below(2 * S)),
                };
                match rng.below(8) {
                    0 | 1 => r.write(0x70, rng.size(), rng.next() as u32, now),
                    2 | 3 => r.write(0x71, rng.size(), rng.next() as u32, now),
                    4 | 5 => {
                        r.read(0x70 + rng.below(3) as u16, rng.size(), now);
                    }
                    6 => {
                        r.irq_level(now);
                    }
                    _ => {
                        r.next_event(now);
                        r.unix_seconds(now);
                    }
                }
            }
        }
    }
}
