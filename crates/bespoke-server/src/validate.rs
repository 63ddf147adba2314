//! Input rules shared by the HTTP API and the CLI importer, so that a line of a CSV file and a
//! JSON event are held to exactly the same standard.

use bespoke_store::{ItemUpsert, Millis, NewEvent};

use crate::settings::{Settings, WeightSpec};
use crate::time::{format_rfc3339, parse_rfc3339};
use crate::weights::Weights;

pub use crate::settings::IMPRESSION;

/// A rule broken by one field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    /// The field (`user`, `timestamp`, `embeddings.text[3]`, ...).
    pub field: String,
    /// What is wrong.
    pub message: String,
}

/// Unicode characters that are never valid in a key: they are invisible or reorder text, so two
/// keys that look the same could differ (bidirectional controls, zero-width characters, BOM).
fn is_deceptive(c: char) -> bool {
    matches!(c,
        '\u{061C}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2064}'
        | '\u{2066}'..='\u{2069}' | '\u{FEFF}')
}

/// A key that breaks the rules of [`check_key`]; the message starts with what the key is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} {problem}")]
pub struct KeyError {
    /// What the key is, as the caller named it (`user`, `categories[2]`, `loop`, ...).
    pub what: String,
    /// What is wrong with it.
    pub problem: KeyProblem,
}

/// What is wrong with a key; the message continues the key's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyProblem {
    /// The key is empty.
    #[error("must not be empty")]
    Empty,
    /// The key has more bytes than allowed.
    #[error("is {len} bytes long; the limit (limits.max_key_bytes) is {max}")]
    TooLong {
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The key holds a control character, or an invisible one that makes keys look alike.
    #[error("contains the control or invisible character U+{:04X}", *.0 as u32)]
    Character(char),
}

/// Checks a user, item, event or category key: 1 to `max_bytes` bytes, no control or invisible
/// characters. The message starts with `what`.
pub fn check_key(what: &str, key: &str, max_bytes: usize) -> Result<(), KeyError> {
    let problem = if key.is_empty() {
        KeyProblem::Empty
    } else if key.len() > max_bytes {
        KeyProblem::TooLong {
            len: key.len(),
            max: max_bytes,
        }
    } else if let Some(c) = key.chars().find(|&c| c.is_control() || is_deceptive(c)) {
        KeyProblem::Character(c)
    } else {
        return Ok(());
    };
    Err(KeyError {
        what: what.to_owned(),
        problem,
    })
}

/// Checks an event against the configured limits and event types; `now` bounds timestamps from
/// above (plus `limits.max_clock_skew_secs`).
///
/// Values: an event type whose weight is its value (`"value"`, such as ratings) takes values
/// within `events.value_range`; for the other types the value is optional, is not a weight, and
/// only has to be finite and of magnitude at most 1e12.
pub fn check_event(
    settings: &Settings,
    weights: &Weights,
    e: &NewEvent,
    now: Millis,
) -> Result<(), FieldError> {
    let limits = &settings.limits;
    let fail = |field: &str, message: String| FieldError {
        field: field.to_owned(),
        message,
    };
    check_key("user", &e.user, limits.max_key_bytes).map_err(|k| fail("user", k.to_string()))?;
    check_key("item", &e.item, limits.max_key_bytes).map_err(|k| fail("item", k.to_string()))?;
    if let Some(id) = &e.event_id {
        check_key("event_id", id, limits.max_key_bytes)
            .map_err(|k| fail("event_id", k.to_string()))?;
    }
    if e.kind == IMPRESSION {
        // Not feedback: no weight, so no value either.
        if e.value.is_some() {
            return Err(fail(
                "value",
                "impressions carry no value (they are not feedback)".into(),
            ));
        }
    }
    let spec = if e.kind == IMPRESSION {
        None
    } else {
        Some(weights.spec(&e.kind).ok_or_else(|| {
            fail(
                "type",
                format!(
                    "unknown event type {:?}; configured types: {}, and impression",
                    e.kind.chars().take(64).collect::<String>(),
                    weights.kinds().join(", ")
                ),
            )
        })?)
    };
    if let Some(v) = e.value
        && (!v.is_finite() || v.abs() > 1e12)
    {
        return Err(fail(
            "value",
            "value must be a finite number of magnitude at most 1e12".into(),
        ));
    }
    if matches!(spec, Some(WeightSpec::Value(_))) {
        let Some(v) = e.value else {
            return Err(fail(
                "value",
                format!("events of type {:?} need a value (their weight)", e.kind),
            ));
        };
        let [lo, hi] = settings.events.value_range;
        if !(lo..=hi).contains(&v) {
            return Err(fail(
                "value",
                format!(
                    "a {:?} event's value must be within {lo} .. {hi} (events.value_range), got {v}",
                    e.kind
                ),
            ));
        }
    }
    if let Some(ts) = e.timestamp {
        let mut min = parse_rfc3339(&limits.min_event_time).expect("validated at start-up");
        let max_age = settings.privacy.max_event_age_days;
        if max_age > 0.0 {
            // An hour's margin, so that retention never expires an event still being applied.
            let cutoff = now - (max_age * 86_400_000.0) as i64 + RETENTION_MARGIN_MS;
            if ts < cutoff {
                return Err(fail(
                    "timestamp",
                    format!(
                        "timestamp {} is older than privacy.max_event_age_days ({max_age} days)",
                        format_rfc3339(ts)
                    ),
                ));
            }
            min = min.max(cutoff);
        }
        let max = now + limits.max_clock_skew_secs as i64 * 1000;
        if ts < min || ts > max {
            return Err(fail(
                "timestamp",
                format!(
                    "timestamp {} is outside the accepted range {} .. {} (limits.min_event_time, limits.max_clock_skew_secs)",
                    format_rfc3339(ts),
                    limits.min_event_time,
                    format_rfc3339(max)
                ),
            ));
        }
    }
    Ok(())
}

/// How much younger than the retention cutoff a new event must be.
pub const RETENTION_MARGIN_MS: i64 = 3_600_000;

/// Most categories per item.
pub const MAX_CATEGORIES: usize = 100;
/// Longest embedding vector.
pub const MAX_EMBEDDING_DIM: usize = 4096;

/// Checks an item's key, categories, field names, numbers and embeddings.
pub fn check_item(item: &ItemUpsert, max_key: usize) -> Result<(), FieldError> {
    let fail = |field: String, message: String| FieldError { field, message };
    check_key("key", &item.key, max_key).map_err(|k| fail("key".into(), k.to_string()))?;
    if item.categories.len() > MAX_CATEGORIES {
        return Err(fail(
            "categories".into(),
            format!("at most {MAX_CATEGORIES} categories per item"),
        ));
    }
    for (i, c) in item.categories.iter().enumerate() {
        let field = format!("categories[{i}]");
        check_key(&field, c, max_key).map_err(|k| fail(field.clone(), k.to_string()))?;
    }
    let names = [
        ("text", item.text.keys().collect::<Vec<_>>()),
        ("numeric", item.numeric.keys().collect()),
        ("embeddings", item.embeddings.keys().collect()),
    ];
    for (section, keys) in names {
        for name in keys {
            check_key("a field name", name, max_key)
                .map_err(|k| fail(section.into(), k.to_string()))?;
        }
    }
    for (name, v) in &item.numeric {
        if !v.is_finite() {
            return Err(fail(
                format!("numeric.{name}"),
                "must be a finite number".into(),
            ));
        }
    }
    for (name, v) in &item.embeddings {
        let field = format!("embeddings.{name}");
        if v.is_empty() || v.len() > MAX_EMBEDDING_DIM {
            return Err(fail(
                field,
                format!(
                    "an embedding has 1 to {MAX_EMBEDDING_DIM} dimensions, got {}",
                    v.len()
                ),
            ));
        }
        if let Some(pos) = v.iter().position(|x| !x.is_finite()) {
            return Err(fail(
                format!("{field}[{pos}]"),
                "embedding values must be finite and within the range of a 32-bit float".into(),
            ));
        }
    }
    Ok(())
}

/// Checks a key, naming `field` in the error.
pub(crate) fn validate_key(
    field: &str,
    key: &str,
    max_bytes: usize,
) -> Result<(), crate::error::ApiError> {
    check_key(field, key, max_bytes)
        .map_err(|k| crate::error::ApiError::invalid(field, k.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_checked() {
        assert!(check_key("user", "alice", 256).is_ok());
        assert!(check_key("user", "ünïcødé 用户", 256).is_ok());
        for bad in [
            "",
            "a\0b",
            "line\r\nbreak",
            "rtl\u{202E}mark",
            "zero\u{200B}width",
            "\u{FEFF}bom",
        ] {
            assert!(
                check_key("user", bad, 256)
                    .unwrap_err()
                    .to_string()
                    .starts_with("user"),
                "{bad:?}"
            );
        }
        assert_eq!(
            check_key("categories[2]", "rtl\u{202E}mark", 256),
            Err(KeyError {
                what: "categories[2]".into(),
                problem: KeyProblem::Character('\u{202E}'),
            })
        );
        assert_eq!(
            check_key("user", "a\u{200B}", 256).unwrap_err().to_string(),
            "user contains the control or invisible character U+200B"
        );
        assert_eq!(
            check_key("user", &"x".repeat(257), 256).map_err(|k| k.problem),
            Err(KeyProblem::TooLong { len: 257, max: 256 })
        );
        assert!(check_key("user", &"é".repeat(128), 256).is_ok());
        assert!(check_key("user", &"é".repeat(129), 256).is_err());
    }

    /// Issue 23: events stored before `events.value_range` existed (a rating of 1e12) weigh at
    /// most `events.max_weight` wherever weights are read.
    #[test]
    fn issue_23_stored_weights_are_clipped_to_max_weight() {
        let weights = Weights::new(&Settings::default());
        assert_eq!(weights.weight("rating", Some(1e12)), Some(10.0));
        assert_eq!(weights.weight("rating", Some(-1e300)), Some(-10.0));
        assert_eq!(weights.weight("rating", Some(f64::INFINITY)), Some(10.0));
        assert_eq!(weights.weight("rating", Some(f64::NAN)), None);
        assert_eq!(weights.weight("rating", Some(4.5)), Some(4.5));
        assert_eq!(weights.weight("purchase", Some(1e12)), Some(8.0));
        assert_eq!(weights.weight("nope", None), None);
    }

    #[test]
    fn events_are_checked_field_by_field() {
        let settings = Settings::default();
        let weights = Weights::new(&settings);
        let now = parse_rfc3339("2025-01-01T00:00:00Z").unwrap();
        let ok = NewEvent::new("u", "i", "view");
        assert_eq!(check_event(&settings, &weights, &ok, now), Ok(()));
        let field = |e: NewEvent| check_event(&settings, &weights, &e, now).unwrap_err().field;
        assert_eq!(
            field(NewEvent {
                kind: "nope".into(),
                ..ok.clone()
            }),
            "type"
        );
        assert_eq!(
            field(NewEvent {
                kind: "rating".into(),
                ..ok.clone()
            }),
            "value"
        );
        assert_eq!(
            field(NewEvent {
                value: Some(f64::NAN),
                ..ok.clone()
            }),
            "value"
        );
        // Issue 23: one rating of 1e12 put its item first in popularity for everyone.
        for v in [1e12, 10.5, -11.0, 1e300] {
            assert_eq!(
                field(NewEvent {
                    kind: "rating".into(),
                    value: Some(v),
                    ..ok.clone()
                }),
                "value",
                "{v}"
            );
        }
        for v in [-10.0, 1.0, 5.0, 10.0] {
            let e = NewEvent {
                kind: "rating".into(),
                value: Some(v),
                ..ok.clone()
            };
            assert_eq!(check_event(&settings, &weights, &e, now), Ok(()), "{v}");
        }
        assert_eq!(
            field(NewEvent {
                timestamp: Some(0),
                ..ok.clone()
            }),
            "timestamp"
        );
        assert_eq!(
            field(NewEvent {
                timestamp: Some(now + 2 * 86_400_000),
                ..ok.clone()
            }),
            "timestamp"
        );
        assert_eq!(
            field(NewEvent {
                event_id: Some(String::new()),
                ..ok.clone()
            }),
            "event_id"
        );
        assert_eq!(
            field(NewEvent {
                item: "\u{7}".into(),
                ..ok
            }),
            "item"
        );
    }
}
