//! UTC dates as QLM writes them, without a date crate: seconds since the Unix epoch to and from
//! `yyyy-MM-dd HH:mm:ss` (and the shorter forms QLM's replies use).

use std::time::{SystemTime, UNIX_EPOCH};

pub const DAY: i64 = 86_400;

/// Seconds since the Unix epoch, now.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day number (inverse of [`days_from_civil`]).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// The parts of an instant: (year, month, day, hour, minute, second).
fn parts(secs: i64) -> (i64, u32, u32, i64, i64, i64) {
    let (y, m, d) = civil_from_days(secs.div_euclid(DAY));
    let s = secs.rem_euclid(DAY);
    (y, m, d, s / 3600, s % 3600 / 60, s % 60)
}

/// `yyyy-MM-dd HH:mm:ss` (the strict-auth timestamp, `creationDateUtc`, `is_expdate`).
pub fn datetime(secs: i64) -> String {
    let (y, m, d, hh, mm, ss) = parts(secs);
    format!("{y:04}-{m:02}-{d:02} {hh:02}:{mm:02}:{ss:02}")
}

/// `yyyy-MM-dd HH:mm` (ValidateLicenseHttp's `expiryDate`, `serverDate`).
pub fn minutes(secs: i64) -> String {
    let (y, m, d, hh, mm, _) = parts(secs);
    format!("{y:04}-{m:02}-{d:02} {hh:02}:{mm:02}")
}

/// `yyyy-MM-ddTHH:mm:ssZ` (PingHttp's dates).
pub fn iso(secs: i64) -> String {
    let (y, m, d, hh, mm, ss) = parts(secs);
    format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}Z")
}

/// `M/d/yyyy` (the date inside ValidateLicenseHttp's `result` sentence).
pub fn us_date(secs: i64) -> String {
    let (y, m, d, ..) = parts(secs);
    format!("{m}/{d}/{y}")
}

fn number(s: &str, digits: usize) -> Option<u32> {
    (s.len() == digits && s.bytes().all(|b| b.is_ascii_digit()))
        .then(|| s.parse().ok())
        .flatten()
}

/// `yyyy-MM-dd HH:mm:ss` exactly, as the strict-auth timestamp must be written.
pub fn parse_datetime(s: &str) -> Option<i64> {
    let (date, time) = s.split_once(' ')?;
    let mut t = time.split(':');
    let (hh, mm, ss) = (t.next()?, t.next()?, t.next()?);
    if t.next().is_some() {
        return None;
    }
    let (hh, mm, ss) = (number(hh, 2)?, number(mm, 2)?, number(ss, 2)?);
    if hh > 23 || mm > 59 || ss > 59 {
        return None;
    }
    Some(parse_date(date)? + i64::from(hh * 3600 + mm * 60 + ss))
}

/// `yyyy-MM-dd`: midnight of that day.
pub fn parse_date(s: &str) -> Option<i64> {
    let mut p = s.split('-');
    let (y, m, d) = (p.next()?, p.next()?, p.next()?);
    if p.next().is_some() {
        return None;
    }
    let (y, m, d) = (number(y, 4)?, number(m, 2)?, number(d, 2)?);
    let days = days_from_civil(i64::from(y), m, d);
    // Rejects 2027-02-30 and friends: the day must come back as written.
    (civil_from_days(days) == (i64::from(y), m, d)).then_some(days * DAY)
}

/// An expiry date as `is_expdate` carries it: `yyyy-MM-dd HH:mm:ss`, `yyyy-MM-dd HH:mm`, or
/// `yyyy-MM-dd` (the `dateFormat` default), which means the end of that day (23:59:59).
pub fn parse_expiry(s: &str) -> Option<i64> {
    let s = s.trim();
    if let Some(t) = parse_datetime(s) {
        return Some(t);
    }
    if s.len() == 16 {
        return parse_datetime(&format!("{s}:00"));
    }
    parse_date(s).map(end_of_day)
}

/// 23:59:59 of the day `secs` falls on.
pub fn end_of_day(secs: i64) -> i64 {
    secs.div_euclid(DAY) * DAY + DAY - 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_formats() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        let t = parse_datetime("2027-03-31 23:59:00").unwrap();
        assert_eq!(datetime(t), "2027-03-31 23:59:00");
        assert_eq!(minutes(t), "2027-03-31 23:59");
        assert_eq!(us_date(t), "3/31/2027");
        assert_eq!(iso(t), "2027-03-31T23:59:00Z");
        assert_eq!(
            datetime(parse_date("2024-02-29").unwrap()),
            "2024-02-29 00:00:00"
        );
        assert_eq!(
            civil_from_days(days_from_civil(2000, 12, 31)),
            (2000, 12, 31)
        );
    }

    #[test]
    fn rejects_malformed_dates() {
        for s in [
            "2027-02-30 00:00:00",
            "2027-3-31 00:00:00",
            "2027-03-31T00:00:00",
            "2027-03-31 24:00:00",
            "2027-03-31 00:00",
            "",
        ] {
            assert_eq!(parse_datetime(s), None, "{s}");
        }
        assert_eq!(
            parse_expiry("2027-03-31").map(datetime).as_deref(),
            Some("2027-03-31 23:59:59")
        );
        assert_eq!(
            parse_expiry("2027-03-31 12:30").map(datetime).as_deref(),
            Some("2027-03-31 12:30:00")
        );
        assert_eq!(parse_expiry("31/03/2027"), None);
    }
}
