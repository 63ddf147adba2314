//! Fuzzing of request parsing with arbitrary input (property tests; `cargo fuzz` needs a nightly
//! toolchain). Raise `PROPTEST_CASES` for a longer run (docs/security.md records one).
//!
//! The property: whatever the bytes, parsing and validating a `POST /v1/events` body (and user
//! and item bodies) returns either events that pass every check or an error with a 4xx status,
//! a message and, for validation errors, the field; it never panics.

use proptest::prelude::*;
use serde_json::{Value, json};

use super::catalog::UserIn;
use super::decisions::DecisionIn;
use super::events::{PostEvents, validate_event};
use super::extract::parse_json;
use crate::settings::Settings;
use crate::weights::Weights;
use crate::wire::ItemJson;

fn check_events(bytes: &[u8]) -> Result<usize, String> {
    let settings = Settings::default();
    let weights = Weights::new(&settings);
    let now = crate::time::now_ms();
    let body: PostEvents = match parse_json(bytes) {
        Ok(b) => b,
        Err(e) => {
            assert!(e.status.is_client_error(), "{e:?}");
            assert!(!e.message.is_empty());
            return Err(e.message);
        }
    };
    let mut ok = 0;
    for (i, e) in body.events.into_iter().enumerate() {
        match validate_event(&settings, &weights, e, &format!("events[{i}]"), now) {
            Ok(ev) => {
                // What passes really is within the limits.
                assert!(!ev.user.is_empty() && ev.user.len() <= settings.limits.max_key_bytes);
                assert!(!ev.item.is_empty() && ev.item.len() <= settings.limits.max_key_bytes);
                assert!(ev.value.is_none_or(f64::is_finite));
                ok += 1;
            }
            Err(e) => {
                assert!(e.status.is_client_error(), "{e:?}");
                assert!(
                    e.field
                        .as_deref()
                        .is_some_and(|f| f.starts_with(&format!("events[{i}]"))),
                    "{e:?}"
                );
            }
        }
    }
    Ok(ok)
}

/// Arbitrary JSON values with hostile strings and extreme numbers, nested up to 3 deep.
fn hostile_value() -> impl Strategy<Value = Value> {
    let strings = prop_oneof![
        Just(String::new()),
        "\\PC{0,12}",
        "[a-z]{1,8}",
        Just("\u{202e}\u{0}\r\n".to_owned()),
        Just("k".repeat(300)),
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        strings.prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 5, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map("[a-z]{0,3}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Decision bodies: known fields with arbitrary values, and hostile feature values.
fn decisionish() -> impl Strategy<Value = Value> {
    let action = (hostile_value(), hostile_value(), any::<bool>()).prop_map(|(id, f, named)| {
        if named {
            json!({ "id": id.as_str().unwrap_or("a").to_owned(), "features": f })
        } else {
            json!({ "id": id, "features": f })
        }
    });
    (
        hostile_value(),
        proptest::collection::vec(action, 0..6),
        hostile_value(),
        hostile_value(),
        hostile_value(),
    )
        .prop_map(|(context, actions, slots, exclude, baseline)| {
            json!({ "context": context, "actions": actions, "slots": slots,
                    "exclude": exclude, "baseline": baseline })
        })
}

/// Parses and runs a decision body on a fresh loop: a decision, or a 4xx naming a field.
fn check_decision(bytes: &[u8], loops: &crate::decisions::Loops) {
    let body: DecisionIn = match parse_json(bytes) {
        Ok(b) => b,
        Err(e) => {
            assert!(e.status.is_client_error(), "{e:?}");
            return;
        }
    };
    let consent = crate::decisions::DecisionConsent {
        personalization: true,
        training: true,
    };
    match loops.decide("fuzz", body.into_input(), None, consent, 0) {
        Ok(d) => {
            let total: f64 = d.ranking.iter().map(|r| r.probability).sum();
            assert!((total - 1.0).abs() < 1e-6 || d.slots > 1, "{d:?}");
        }
        Err(crate::decisions::DecisionError::Invalid { field, message }) => {
            assert!(!field.is_empty() && !message.is_empty());
        }
        Err(e) => panic!("not a client error: {e}"),
    }
}

/// JSON values biased towards the shapes of events: known field names, hostile strings,
/// extreme numbers.
fn eventish() -> impl Strategy<Value = Value> {
    let strings = prop_oneof![
        Just(String::new()),
        "\\PC{0,12}",
        "[a-z]{1,8}",
        Just("view".to_owned()),
        Just("rating".to_owned()),
        Just("2024-01-01T00:00:00Z".to_owned()),
        Just("2024-01-01T00:00:00".to_owned()),
        Just("\u{202e}\u{0}\r\n".to_owned()),
        Just("k".repeat(300)),
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        strings.clone().prop_map(Value::String),
    ];
    let value = leaf.prop_recursive(3, 24, 5, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map("[a-z]{1,3}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    });
    let field = prop_oneof![
        Just("event_id"),
        Just("user"),
        Just("item"),
        Just("type"),
        Just("value"),
        Just("timestamp"),
        Just("context"),
        Just("colour"),
    ];
    let event = proptest::collection::btree_map(field, value, 0..8)
        .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()));
    proptest::collection::vec(event, 0..5).prop_map(|events| json!({ "events": events }))
}

proptest! {
    #[test]
    fn fuzz_arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = check_events(&bytes);
        let _ = parse_json::<UserIn>(&bytes);
        let _ = parse_json::<ItemJson>(&bytes);
    }

    #[test]
    fn fuzz_event_shaped_json_is_accepted_or_refused_with_a_field(body in eventish()) {
        let text = body.to_string();
        let _ = check_events(text.as_bytes());
    }

    /// Decision requests with hostile features, ids, slots and exclusions: a decision whose
    /// probabilities sum to 1, or a 400 naming the field; never a panic or a 500.
    #[test]
    fn fuzz_decision_requests(body in decisionish(), bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let dir = tempfile::tempdir().unwrap();
        let store: std::sync::Arc<dyn bespoke_store::Store> = std::sync::Arc::new(
            bespoke_store::SqliteStore::open(dir.path(), bespoke_store::StoreOptions::default()).unwrap(),
        );
        let loops = crate::decisions::Loops::open(store, 1000).unwrap();
        check_decision(body.to_string().as_bytes(), &loops);
        check_decision(&bytes, &loops);
    }

    /// Valid bodies cut short or with one byte changed: never a panic.
    #[test]
    fn fuzz_mutated_valid_bodies_never_panic(cut in 0usize..200, pos in 0usize..200, byte in any::<u8>()) {
        let valid = json!({ "events": [
            { "event_id": "e1", "user": "u1", "item": "i1", "type": "rating", "value": 4.5,
              "timestamp": "2024-01-01T00:00:00Z", "context": { "device": "phone", "n": [1, 2] } },
            { "user": "u2", "item": "i2", "type": "view" }
        ] }).to_string().into_bytes();
        prop_assert!(check_events(&valid).is_ok_and(|n| n == 2));
        let mut m = valid.clone();
        let p = pos % m.len();
        m[p] = byte;
        let _ = check_events(&m);
        let _ = check_events(&valid[..cut.min(valid.len())]);
    }
}
