//! UTC civil time for the audit log, without a date crate.
//!
//! The writer formats one timestamp per record on its hot path, and every
//! record uses the same fixed-width form (`2024-05-01T12:00:00.123456Z`), so
//! readers can compare timestamps as plain strings. Days ↔ civil dates use
//! Howard Hinnant's proleptic Gregorian algorithms.

use std::time::{SystemTime, UNIX_EPOCH};

/// Length of a formatted record timestamp.
pub(crate) const TS_LEN: usize = 27;

pub(crate) const MICROS_PER_SEC: i64 = 1_000_000;
pub(crate) const MICROS_PER_DAY: i64 = 86_400 * MICROS_PER_SEC;

/// 9999-12-31T23:59:59.999999Z: the widest instant the fixed format holds.
const MAX_MICROS: i64 = 253_402_300_799_999_999;

/// Microseconds since the Unix epoch; times before it clamp to 0 (a log
/// record cannot predate 1970 unless the clock is broken).
pub(crate) fn micros_of(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
        Err(_) => 0,
    }
}

pub(crate) fn now_micros() -> i64 {
    micros_of(SystemTime::now())
}

pub(crate) fn day_of(micros: i64) -> i64 {
    micros.div_euclid(MICROS_PER_DAY)
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

struct Parts {
    y: i64,
    mo: u32,
    d: u32,
    h: i64,
    mi: i64,
    s: i64,
    us: i64,
}

fn parts(micros: i64) -> Parts {
    let micros = micros.clamp(0, MAX_MICROS);
    let (y, mo, d) = civil_from_days(micros.div_euclid(MICROS_PER_DAY));
    let rem = micros.rem_euclid(MICROS_PER_DAY);
    let secs = rem / MICROS_PER_SEC;
    Parts {
        y,
        mo,
        d,
        h: secs / 3600,
        mi: secs / 60 % 60,
        s: secs % 60,
        us: rem % MICROS_PER_SEC,
    }
}

fn put(buf: &mut [u8], at: usize, width: usize, mut v: i64) {
    for i in (0..width).rev() {
        buf[at + i] = b'0' + (v % 10) as u8;
        v /= 10;
    }
}

/// A formatted timestamp on the stack (the writer makes one per record).
#[derive(Clone, Copy)]
pub(crate) struct Ts([u8; TS_LEN]);

impl Ts {
    pub(crate) fn as_str(&self) -> &str {
        // Only ASCII digits and separators are ever stored.
        std::str::from_utf8(&self.0).unwrap_or("")
    }
}

/// `YYYY-MM-DDTHH:MM:SS.ffffffZ`, UTC.
pub(crate) fn format_ts(micros: i64) -> Ts {
    let p = parts(micros);
    let mut b = *b"0000-00-00T00:00:00.000000Z";
    put(&mut b, 0, 4, p.y);
    put(&mut b, 5, 2, i64::from(p.mo));
    put(&mut b, 8, 2, i64::from(p.d));
    put(&mut b, 11, 2, p.h);
    put(&mut b, 14, 2, p.mi);
    put(&mut b, 17, 2, p.s);
    put(&mut b, 20, 6, p.us);
    Ts(b)
}

/// `YYYYMMDD-HHMMSS`, UTC, for file names.
pub(crate) fn format_stamp(micros: i64) -> String {
    let p = parts(micros);
    let mut b = *b"00000000-000000";
    put(&mut b, 0, 4, p.y);
    put(&mut b, 4, 2, i64::from(p.mo));
    put(&mut b, 6, 2, i64::from(p.d));
    put(&mut b, 9, 2, p.h);
    put(&mut b, 11, 2, p.mi);
    put(&mut b, 13, 2, p.s);
    String::from_utf8_lossy(&b).into_owned()
}

fn digits(b: &[u8], from: usize, n: usize) -> Option<i64> {
    let s = b.get(from..from + n)?;
    let mut v = 0i64;
    for &c in s {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v * 10 + i64::from(c - b'0');
    }
    Some(v)
}

/// Parses RFC 3339 (`2024-05-01T12:00:00Z`, `…T14:00:00.5+02:00`, seconds
/// optional) or a bare date (`2024-05-01`, midnight UTC) into microseconds
/// since the epoch. A time without an offset is refused rather than guessed:
/// an auditor's local time and the log's UTC differ by hours.
pub(crate) fn parse_rfc3339(s: &str) -> Result<i64, String> {
    let bad = || format!("{s:?} is not an RFC 3339 time (e.g. 2024-05-01T12:00:00Z)");
    let b = s.trim().as_bytes();
    let y = digits(b, 0, 4).ok_or_else(bad)?;
    if b.get(4) != Some(&b'-') || b.get(7) != Some(&b'-') {
        return Err(bad());
    }
    let mo = digits(b, 5, 2).ok_or_else(bad)? as u32;
    let d = digits(b, 8, 2).ok_or_else(bad)? as u32;
    if !(1..=12).contains(&mo) || d == 0 || d > days_in_month(y, mo) {
        return Err(bad());
    }
    let days = days_from_civil(y, mo, d);
    if b.len() == 10 {
        return Ok(days * MICROS_PER_DAY);
    }
    if !matches!(b.get(10), Some(b'T' | b't' | b' ')) || b.get(13) != Some(&b':') {
        return Err(bad());
    }
    let h = digits(b, 11, 2).ok_or_else(bad)?;
    let mi = digits(b, 14, 2).ok_or_else(bad)?;
    let mut i = 16;
    let mut sec = 0;
    let mut us = 0;
    if b.get(i) == Some(&b':') {
        sec = digits(b, 17, 2).ok_or_else(bad)?;
        i = 19;
        if b.get(i) == Some(&b'.') {
            i += 1;
            let start = i;
            let mut scale = 100_000;
            while let Some(c) = b.get(i).filter(|c| c.is_ascii_digit()) {
                us += i64::from(c - b'0') * scale;
                scale /= 10;
                i += 1;
            }
            if i == start {
                return Err(bad());
            }
        }
    }
    if h > 23 || mi > 59 || sec > 60 {
        return Err(bad());
    }
    // A leap second sorts with the last ordinary second of its minute.
    let sec = sec.min(59);
    let offset = match b.get(i) {
        Some(b'Z' | b'z') if b.len() == i + 1 => 0,
        Some(&sign @ (b'+' | b'-')) if b.len() == i + 6 && b[i + 3] == b':' => {
            let oh = digits(b, i + 1, 2).ok_or_else(bad)?;
            let om = digits(b, i + 4, 2).ok_or_else(bad)?;
            if oh > 23 || om > 59 {
                return Err(bad());
            }
            let o = (oh * 60 + om) * 60 * MICROS_PER_SEC;
            if sign == b'+' { o } else { -o }
        }
        _ => {
            return Err(format!(
                "{s:?}: missing or malformed UTC offset (add Z or ±HH:MM)"
            ));
        }
    };
    Ok(days * MICROS_PER_DAY + ((h * 60 + mi) * 60 + sec) * MICROS_PER_SEC + us - offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_known_instants() {
        assert_eq!(format_ts(0).as_str(), "1970-01-01T00:00:00.000000Z");
        // 2024-02-29T23:59:59.123456Z (leap day)
        let t = 1_709_251_199_123_456;
        assert_eq!(format_ts(t).as_str(), "2024-02-29T23:59:59.123456Z");
        assert_eq!(format_stamp(t), "20240229-235959");
        assert_eq!(format_ts(-5).as_str(), "1970-01-01T00:00:00.000000Z");
    }

    #[test]
    fn parse_round_trips_and_offsets() {
        let t = 1_709_251_199_123_456;
        assert_eq!(parse_rfc3339("2024-02-29T23:59:59.123456Z"), Ok(t));
        assert_eq!(parse_rfc3339("2024-03-01T01:59:59.123456+02:00"), Ok(t));
        assert_eq!(parse_rfc3339("2024-02-29T18:59:59.1234569-05:00"), Ok(t));
        assert_eq!(parse_rfc3339("2024-03-01"), Ok(1_709_251_200_000_000));
        assert_eq!(
            parse_rfc3339("2024-03-01T00:00Z"),
            Ok(1_709_251_200_000_000)
        );
        for bad in [
            "2024-02-30",
            "2024-13-01",
            "2024-03-01T00:00:00",
            "2024-03-01T25:00:00Z",
            "yesterday",
            "2024-03-01T00:00:00.Z",
            "",
        ] {
            assert!(parse_rfc3339(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn civil_round_trip_over_centuries() {
        for days in (-800_000..2_900_000).step_by(997) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }
}
