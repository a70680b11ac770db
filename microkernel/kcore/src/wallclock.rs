//! The machine's wall-clock time from the MC146818 CMOS clock's registers,
//! read once at boot: Alcove's only source of real time until it has NTP.

/// The raw CMOS date registers: seconds, minutes, hours, day of month,
/// month, two-digit year, and status register B (bit 2: binary rather than
/// BCD; bit 1: 24-hour rather than 12-hour with bit 7 of hours = PM).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CmosDate {
    pub second: u8,
    pub minute: u8,
    pub hour: u8,
    pub day: u8,
    pub month: u8,
    pub year: u8,
    pub status_b: u8,
}

fn from_bcd(v: u8) -> Option<u8> {
    let (hi, lo) = (v >> 4, v & 0xF);
    (hi < 10 && lo < 10).then_some(hi * 10 + lo)
}

/// Days from 1970-01-01 to `y-m-d` (proleptic Gregorian).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

impl CmosDate {
    /// Seconds since the Unix epoch, taking the two-digit year as 20xx;
    /// `None` for registers that do not hold a date (a machine without a
    /// CMOS clock reads all ones).
    pub fn unix_seconds(&self) -> Option<i64> {
        let binary = self.status_b & 0x04 != 0;
        let h24 = self.status_b & 0x02 != 0;
        let pm = !h24 && self.hour & 0x80 != 0;
        let conv = |v: u8| if binary { Some(v) } else { from_bcd(v) };
        let (s, mi, d, mo, y) =
            (conv(self.second)?, conv(self.minute)?, conv(self.day)?, conv(self.month)?, conv(self.year)?);
        let mut h = conv(self.hour & 0x7F)?;
        if !h24 {
            if !(1..=12).contains(&h) {
                return None;
            }
            h = (h % 12) + if pm { 12 } else { 0 };
        }
        if s > 59 || mi > 59 || h > 23 || !(1..=31).contains(&d) || !(1..=12).contains(&mo) || y > 99 {
            return None;
        }
        let days = days_from_civil(2000 + i64::from(y), i64::from(mo), i64::from(d));
        Some(days * 86_400 + i64::from(h) * 3600 + i64::from(mi) * 60 + i64::from(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bcd_and_binary_dates_convert() {
        // 2026-11-22 05:30:40 UTC = 1795325440.
        let bcd = CmosDate { second: 0x40, minute: 0x30, hour: 0x05, day: 0x22, month: 0x11, year: 0x26, status_b: 0x02 };
        assert_eq!(bcd.unix_seconds(), Some(1_795_325_440));
        let bin = CmosDate { second: 40, minute: 30, hour: 5, day: 22, month: 11, year: 26, status_b: 0x06 };
        assert_eq!(bin.unix_seconds(), Some(1_795_325_440));
        // 12-hour: 5 PM.
        let pm = CmosDate { hour: 0x85, status_b: 0x00, ..bcd };
        assert_eq!(pm.unix_seconds(), Some(1_795_325_440 + 12 * 3600));
        let midnight = CmosDate { hour: 0x12, status_b: 0x00, ..bcd };
        assert_eq!(midnight.unix_seconds(), Some(1_795_325_440 - 5 * 3600));
        assert_eq!(CmosDate { second: 0, minute: 0, hour: 0, day: 1, month: 1, year: 0, status_b: 6 }.unix_seconds(), Some(946_684_800));
        assert_eq!(CmosDate { day: 0x29, month: 0x02, year: 0x24, ..bcd }.unix_seconds(), Some(1_709_184_640), "leap day");
        // No clock, or garbage.
        let ff = CmosDate { second: 0xFF, minute: 0xFF, hour: 0xFF, day: 0xFF, month: 0xFF, year: 0xFF, status_b: 0xFF };
        assert_eq!(ff.unix_seconds(), None);
        assert_eq!(CmosDate { month: 0x13, ..bcd }.unix_seconds(), None);
        assert_eq!(CmosDate { second: 0x5A, ..bcd }.unix_seconds(), None);
    }
}
