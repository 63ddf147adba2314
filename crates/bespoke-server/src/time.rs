//! RFC 3339 timestamps and short durations: the API needs only UTC instants with millisecond
//! precision. The calendar is `jiff`'s; the parser in front of it is ours, so that an error can
//! name the part and the position that are wrong.

use bespoke_store::Millis;
use jiff::Span;
use jiff::civil::Date;

const MS_PER_DAY: i64 = 86_400_000;
const EPOCH: Date = jiff::civil::date(1970, 1, 1);

/// Days from 1970-01-01 to `d` (proleptic Gregorian).
fn days_since_epoch(d: Date) -> i64 {
    // Between two dates of jiff's range, counted in days, `since` cannot fail.
    d.since(EPOCH).map_or(0, |span| i64::from(span.get_days()))
}

/// The date `days` after 1970-01-01, held to jiff's range (years -9999 to 9999).
fn date_from_days(days: i64) -> Date {
    let (min, max) = (days_since_epoch(Date::MIN), days_since_epoch(Date::MAX));
    let days = days.clamp(min, max);
    Span::new()
        .try_days(days)
        .and_then(|span| EPOCH.checked_add(span))
        .unwrap_or(if days < 0 { Date::MIN } else { Date::MAX })
}

/// Why a text is not an RFC 3339 time. Each message continues a subject (`timestamp has no time
/// zone ...`), so that callers can put the name of what they parsed in front; positions count
/// bytes from 1, as an editor's column does for ASCII.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TimeError {
    /// The text ends before `part`.
    #[error("ends before the {part} (an RFC 3339 time looks like 2024-05-01T12:00:00Z)")]
    TooShort {
        /// The missing part: `year`, `month`, ..., `offset minutes`.
        part: &'static str,
    },
    /// A part that must be digits holds something else.
    #[error("has a non-digit in the {part} at position {position}")]
    NotADigit {
        /// The part: `year`, `month`, ..., `offset minutes`.
        part: &'static str,
        /// Position of the first non-digit.
        position: usize,
    },
    /// A separator (`-`, `T`, `:`) is missing or another character stands in its place.
    #[error("must look like 2024-05-01T12:00:00Z (expected {expected:?} at position {position})")]
    Separator {
        /// The separator expected.
        expected: &'static str,
        /// Where.
        position: usize,
    },
    /// A `.` is not followed by fraction digits.
    #[error("has a '.' without fraction digits at position {position}")]
    EmptyFraction {
        /// Position of the `.`.
        position: usize,
    },
    /// The text ends without `Z` or an offset: a local time names no instant.
    #[error("has no time zone: end it with Z or an offset such as +02:00")]
    NoTimeZone,
    /// Something other than a zone follows the time, or follows the zone.
    #[error("has unexpected characters from position {position}")]
    Trailing {
        /// Position of the first unexpected character.
        position: usize,
    },
    /// The offset's hours exceed 23 or its minutes 59.
    #[error("has an offset out of range ({hours:02}:{minutes:02}; the largest is 23:59)")]
    OffsetOutOfRange {
        /// Hours of the offset.
        hours: i64,
        /// Minutes of the offset.
        minutes: i64,
    },
    /// The date does not exist (month 13, February 30th, ...).
    #[error("is not a valid calendar date ({year:04}-{month:02}-{day:02} does not exist)")]
    Date {
        /// Year as written.
        year: i64,
        /// Month as written.
        month: u32,
        /// Day as written.
        day: u32,
    },
    /// The time of day does not exist (hour 24, minute 60, ...; second 60 is a leap second).
    #[error("is not a valid time of day ({hour:02}:{minute:02}:{second:02} does not exist)")]
    TimeOfDay {
        /// Hour as written.
        hour: i64,
        /// Minute as written.
        minute: i64,
        /// Second as written.
        second: i64,
    },
}

/// Parses an RFC 3339 date-time (`2024-05-01T12:00:00Z`, `2024-05-01T12:00:00.250+02:00`) to
/// Unix milliseconds. A time zone (`Z` or an offset) is required; fractions beyond milliseconds
/// are truncated. The error says what is wrong and where.
pub fn parse_rfc3339(s: &str) -> Result<Millis, TimeError> {
    let b = s.as_bytes();
    let digits = |range: std::ops::Range<usize>, part: &'static str| -> Result<i64, TimeError> {
        let digits = b.get(range.clone()).ok_or(TimeError::TooShort { part })?;
        if let Some(k) = digits.iter().position(|d| !d.is_ascii_digit()) {
            return Err(TimeError::NotADigit {
                part,
                position: range.start + k + 1,
            });
        }
        Ok(digits
            .iter()
            .fold(0i64, |acc, d| acc * 10 + (d - b'0') as i64))
    };
    // `accepted` may hold more than the one separator shown (`T` also allows `t` and a space).
    let expect = |i: usize, expected: &'static str, accepted: &[u8]| -> Result<(), TimeError> {
        match b.get(i) {
            Some(c) if accepted.contains(c) => Ok(()),
            _ => Err(TimeError::Separator {
                expected,
                position: i + 1,
            }),
        }
    };
    let year = digits(0..4, "year")?;
    expect(4, "-", b"-")?;
    let month = digits(5..7, "month")? as u32;
    expect(7, "-", b"-")?;
    let day = digits(8..10, "day")? as u32;
    expect(10, "T", b"Tt ")?;
    let hour = digits(11..13, "hour")?;
    expect(13, ":", b":")?;
    let minute = digits(14..16, "minute")?;
    expect(16, ":", b":")?;
    let second = digits(17..19, "second")?;
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
            return Err(TimeError::EmptyFraction { position: start });
        }
        for _ in (i - start)..3 {
            millis *= 10;
        }
    }
    let offset_min = match b.get(i) {
        Some(b'Z' | b'z') if i + 1 == b.len() => 0,
        Some(&sign @ (b'+' | b'-')) if i + 6 == b.len() => {
            let oh = digits(i + 1..i + 3, "offset hours")?;
            expect(i + 3, ":", b":")?;
            let om = digits(i + 4..i + 6, "offset minutes")?;
            if oh > 23 || om > 59 {
                return Err(TimeError::OffsetOutOfRange {
                    hours: oh,
                    minutes: om,
                });
            }
            let off = oh * 60 + om;
            if sign == b'-' { -off } else { off }
        }
        None => return Err(TimeError::NoTimeZone),
        // After a `Z`, the junk starts one further on.
        Some(b'Z' | b'z') => return Err(TimeError::Trailing { position: i + 2 }),
        _ => return Err(TimeError::Trailing { position: i + 1 }),
    };
    // Two and four digits always fit; jiff says whether the date exists.
    let date = Date::new(year as i16, month as i8, day as i8).map_err(|_| TimeError::Date {
        year,
        month,
        day,
    })?;
    if hour > 23 || minute > 59 || second > 60 {
        return Err(TimeError::TimeOfDay {
            hour,
            minute,
            second,
        });
    }
    // A leap second is folded into the next second's first instant.
    let secs =
        days_since_epoch(date) * 86_400 + hour * 3600 + minute * 60 + second - offset_min * 60;
    Ok(secs * 1000 + millis)
}

/// Formats Unix milliseconds as RFC 3339 in UTC with milliseconds (`2024-05-01T12:00:00.000Z`).
/// Instants beyond the years -9999 to 9999 are held to that range.
pub fn format_rfc3339(ms: Millis) -> String {
    let date = date_from_days(ms.div_euclid(MS_PER_DAY));
    let rem = ms.rem_euclid(MS_PER_DAY);
    let (y, m, d) = (date.year(), date.month(), date.day());
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3_600_000,
        rem / 60_000 % 60,
        rem / 1000 % 60,
        rem % 1000
    )
}

/// Why a text is not a duration. Like [`TimeError`], each message continues a subject
/// (`window must be positive`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// No digits before the unit, or too many to count.
    #[error("must be a number followed by s, m, h, d or w, such as 7d")]
    NotANumber,
    /// The unit is missing or is not one of `s`, `m`, `h`, `d`, `w`.
    #[error("must end with a unit: s, m, h, d or w (such as 7d)")]
    UnknownUnit,
    /// The duration is zero.
    #[error("must be positive")]
    NotPositive,
    /// The duration overflows 64-bit milliseconds.
    #[error("is too long")]
    TooLong,
}

/// Parses a duration such as `90s`, `30m`, `24h`, `7d` or `2w` to milliseconds.
pub fn parse_duration(s: &str) -> Result<Millis, DurationError> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: i64 = num.parse().map_err(|_| DurationError::NotANumber)?;
    let unit_ms = match unit {
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => MS_PER_DAY,
        "w" => 7 * MS_PER_DAY,
        _ => return Err(DurationError::UnknownUnit),
    };
    match n.checked_mul(unit_ms) {
        Some(ms) if ms > 0 => Ok(ms),
        Some(_) => Err(DurationError::NotPositive),
        None => Err(DurationError::TooLong),
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
                .to_string()
                .contains("time zone")
        );
        assert!(
            parse_rfc3339("2023-02-29T00:00:00Z")
                .unwrap_err()
                .to_string()
                .contains("calendar")
        );
        assert!(parse_rfc3339("2024-05-01").is_err());
        assert!(parse_rfc3339("2024-05-01T25:00:00Z").is_err());
        assert!(parse_rfc3339("2024-05-01T12:00:00Zjunk").is_err());
        assert!(parse_rfc3339("２０２４-05-01T12:00:00Z").is_err());
    }

    /// Issue 14: each error names the part at fault and where it is, not just "invalid".
    #[test]
    fn bad_times_name_the_part_and_position() {
        use TimeError as E;
        let cases = [
            ("", E::TooShort { part: "year" }),
            ("2024-05-", E::TooShort { part: "day" }),
            (
                "yesterday",
                E::NotADigit {
                    part: "year",
                    position: 1,
                },
            ),
            (
                "2024-0x-01T12:00:00Z",
                E::NotADigit {
                    part: "month",
                    position: 7,
                },
            ),
            (
                "2024-05-01",
                E::Separator {
                    expected: "T",
                    position: 11,
                },
            ),
            (
                "2024-05-01T12.00:00Z",
                E::Separator {
                    expected: ":",
                    position: 14,
                },
            ),
            ("2024-05-01T12:00:00.Z", E::EmptyFraction { position: 20 }),
            ("2024-05-01T12:00:00.250", E::NoTimeZone),
            ("2024-05-01T12:00:00Zjunk", E::Trailing { position: 21 }),
            ("2024-05-01T12:00:00 UTC", E::Trailing { position: 20 }),
            (
                "2024-05-01T12:00:00+2x:00",
                E::NotADigit {
                    part: "offset hours",
                    position: 22,
                },
            ),
            (
                "2024-05-01T12:00:00+24:00",
                E::OffsetOutOfRange {
                    hours: 24,
                    minutes: 0,
                },
            ),
            (
                "2024-13-01T12:00:00Z",
                E::Date {
                    year: 2024,
                    month: 13,
                    day: 1,
                },
            ),
            (
                "2024-05-01T12:60:00Z",
                E::TimeOfDay {
                    hour: 12,
                    minute: 60,
                    second: 0,
                },
            ),
        ];
        for (text, want) in cases {
            assert_eq!(parse_rfc3339(text), Err(want), "{text:?}");
        }
        // Messages read after the name of what was parsed, and keep the details.
        assert_eq!(
            parse_rfc3339("2024-0x-01T12:00:00Z")
                .unwrap_err()
                .to_string(),
            "has a non-digit in the month at position 7"
        );
        assert_eq!(
            parse_rfc3339("2023-02-29T00:00:00Z")
                .unwrap_err()
                .to_string(),
            "is not a valid calendar date (2023-02-29 does not exist)"
        );
        // A leap second is a valid time of day.
        assert!(parse_rfc3339("2016-12-31T23:59:60Z").is_ok());
    }

    #[test]
    fn instants_beyond_the_calendar_are_held_to_it() {
        assert!(format_rfc3339(i64::MAX).starts_with("9999-12-31T"));
        assert!(format_rfc3339(i64::MIN).starts_with("-9999-01-01T"));
        assert_eq!(format_rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_rfc3339(-1), "1969-12-31T23:59:59.999Z");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("7d"), Ok(7 * MS_PER_DAY));
        assert_eq!(parse_duration("90s"), Ok(90_000));
        assert_eq!(parse_duration("0h"), Err(DurationError::NotPositive));
        assert_eq!(parse_duration("h"), Err(DurationError::NotANumber));
        assert_eq!(parse_duration("5y"), Err(DurationError::UnknownUnit));
        assert_eq!(parse_duration("5"), Err(DurationError::UnknownUnit));
        assert_eq!(
            parse_duration("99999999999999999w"),
            Err(DurationError::TooLong)
        );
    }

    proptest! {
        #[test]
        fn format_then_parse_round_trips(ms in -62_135_596_800_000i64..253_402_300_799_999) {
            prop_assert_eq!(parse_rfc3339(&format_rfc3339(ms)), Ok(ms));
        }
    }
}
