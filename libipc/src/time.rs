//! Calendar dates of Unix times, for what servers and tools print
//! (`creation`, a scrub's end, vmadm's timestamps): UTC, no time zones.

use alloc::format;
use alloc::string::String;

/// The date (year, month 1–12, day 1–31) of day `days` since 1970-01-01
/// (Howard Hinnant's `civil_from_days`, exact for every `i64` day that
/// fits a year in `i64`).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// ISO 8601 with milliseconds, as SmartOS's JSON gives times:
/// `2026-12-03T17:32:13.000Z`.
pub fn iso8601(secs: u64) -> String {
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.000Z", rem / 3600, rem / 60 % 60, rem % 60)
}

/// C's `ctime` without the newline, as `zpool status` and `zfs get
/// creation` print a time: `Fri Dec  4 14:50:41 2026`.
pub fn ctime(secs: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let days = secs / 86_400;
    let (y, m, d) = civil_from_days(days as i64);
    let rem = secs % 86_400;
    format!(
        "{} {} {d:>2} {:02}:{:02}:{:02} {y}",
        DAYS[(days % 7) as usize],
        MONTHS[(m - 1) as usize],
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_of_known_times() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        // 2000-02-29 (a leap day of a century year divisible by 400).
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(iso8601(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso8601(1_796_395_841), "2026-12-04T14:50:41.000Z");
        assert_eq!(ctime(0), "Thu Jan  1 00:00:00 1970");
        assert_eq!(ctime(1_796_395_841), "Fri Dec  4 14:50:41 2026");
        assert_eq!(ctime(951_782_400 + 86_399), "Tue Feb 29 23:59:59 2000");
        // The largest u64 still formats (a corrupt time must not panic).
        assert!(ctime(u64::MAX).ends_with(char::is_numeric));
    }
}
