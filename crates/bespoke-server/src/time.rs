//! RFC 3339 timestamps and short durations, without a date-time dependency: the API needs only
//! UTC instants with millisecond precision.

use bespoke_store::Millis;

const MS_PER_DAY: i64 = 86_400_000;

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

/// Parses an RFC 3339 date-time (`2024-05-01T12:00:00Z`, `2024-05-01T12:00:00.250+02:00`) to
/// Unix milliseconds. A time zone (`Z` or an offset) is required; fractions beyond milliseconds
/// are truncated. The error says what is wrong.
pub fn parse_rfc3339(s: &str) -> Result<Millis, String> {
    let b = s.as_bytes();
    let digits = |range: std::ops::Range<usize>| -> Result<i64, String> {
        let part = b
            .get(range.clone())
            .ok_or("is too short for an RFC 3339 time")?;
        if !part.iter().all(u8::is_ascii_digit) {
            return Err(format!("has a non-digit at position {}", range.start + 1));
        }
        Ok(part
            .iter()
            .fold(0i64, |acc, d| acc * 10 + (d - b'0') as i64))
    };
    let expect = |i: usize, what: &[u8]| -> Result<(), String> {
        match b.get(i) {
            Some(c) if what.contains(c) => Ok(()),
            _ => Err(format!(
                "must look like 2024-05-01T12:00:00Z (expected {:?} at position {})",
                what.iter().map(|&c| c as char).collect::<String>(),
                i + 1
            )),
        }
    };
    let year = digits(0..4)?;
    expect(4, b"-")?;
    let month = digits(5..7)? as u32;
    expect(7, b"-")?;
    let day = digits(8..10)? as u32;
    expect(10, b"Tt ")?;
    let hour = digits(11..13)?;
    expect(13, b":")?;
    let minute = digits(14..16)?;
    expect(16, b":")?;
    let second = digits(17..19)?;
    let mut i = 19;
    let mut millis = 0i64;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            if i - start < 3 {
                millis = millis * 10 + (b[i] - b'0') as i64;
            }
            i += 1;
        }
        if i == start {
            return Err("has a '.' without fraction digits".into());
        }
        for _ in (i - start)..3 {
            millis *= 10;
        }
    }
    let offset_min = match b.get(i) {
        Some(b'Z' | b'z') if i + 1 == b.len() => 0,
        Some(&sign @ (b'+' | b'-')) if i + 6 == b.len() => {
            let oh = digits(i + 1..i + 3)?;
            expect(i + 3, b":")?;
            let om = digits(i + 4..i + 6)?;
            if oh > 23 || om > 59 {
                return Err("has an offset out of range".into());
            }
            let off = oh * 60 + om;
            if sign == b'-' { -off } else { off }
        }
        None => return Err("has no time zone: end it with Z or an offset such as +02:00".into()),
        _ => return Err(format!("has unexpected characters from position {}", i + 1)),
    };
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return Err("is not a valid calendar date".into());
    }
    if hour > 23 || minute > 59 || second > 60 {
        return Err("is not a valid time of day".into());
    }
    // A leap second is folded into the next second's first instant.
    let secs = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second
        - offset_min * 60;
    Ok(secs * 1000 + millis)
}

/// Formats Unix milliseconds as RFC 3339 in UTC with milliseconds (`2024-05-01T12:00:00.000Z`).
pub fn format_rfc3339(ms: Millis) -> String {
    let days = ms.div_euclid(MS_PER_DAY);
    let rem = ms.rem_euclid(MS_PER_DAY);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3_600_000,
        rem / 60_000 % 60,
        rem / 1000 % 60,
        rem % 1000
    )
}

/// Parses a duration such as `90s`, `30m`, `24h`, `7d` or `2w` to milliseconds.
pub fn parse_duration(s: &str) -> Result<Millis, String> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: i64 = num
        .parse()
        .map_err(|_| "must be a number followed by s, m, h, d or w, such as 7d".to_owned())?;
    let unit_ms = match unit {
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => MS_PER_DAY,
        "w" => 7 * MS_PER_DAY,
        _ => return Err("must end with a unit: s, m, h, d or w (such as 7d)".into()),
    };
    match n.checked_mul(unit_ms) {
        Some(ms) if ms > 0 => Ok(ms),
        Some(_) => Err("must be positive".into()),
        None => Err("is too long".into()),
    }
}

/// The current time in Unix milliseconds.
pub fn now_ms() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as Millis)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_instants() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(parse_rfc3339("2000-03-01T00:00:00.5Z"), Ok(951_868_800_500));
        assert_eq!(
            parse_rfc3339("2000-03-01T02:00:00+02:00"),
            Ok(951_868_800_000)
        );
        assert_eq!(parse_rfc3339("1969-12-31T23:59:59.999Z"), Ok(-1));
        assert_eq!(format_rfc3339(951_868_800_500), "2000-03-01T00:00:00.500Z");
        assert_eq!(format_rfc3339(-1), "1969-12-31T23:59:59.999Z");
    }

    #[test]
    fn bad_times_say_why() {
        assert!(
            parse_rfc3339("2024-05-01T12:00:00")
                .unwrap_err()
                .contains("time zone")
        );
        assert!(
            parse_rfc3339("2023-02-29T00:00:00Z")
                .unwrap_err()
                .contains("calendar")
        );
        assert!(parse_rfc3339("2024-05-01").is_err());
        assert!(parse_rfc3339("2024-05-01T25:00:00Z").is_err());
        assert!(parse_rfc3339("2024-05-01T12:00:00Zjunk").is_err());
        assert!(parse_rfc3339("２０２４-05-01T12:00:00Z").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("7d"), Ok(7 * MS_PER_DAY));
        assert_eq!(parse_duration("90s"), Ok(90_000));
        assert!(parse_duration("0h").is_err());
        assert!(parse_duration("h").is_err());
        assert!(parse_duration("5y").is_err());
        assert!(parse_duration("99999999999999999w").is_err());
    }

    proptest! {
        #[test]
        fn format_then_parse_round_trips(ms in -62_135_596_800_000i64..253_402_300_799_999) {
            prop_assert_eq!(parse_rfc3339(&format_rfc3339(ms)), Ok(ms));
        }
    }
}
