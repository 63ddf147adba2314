use std::collections::BTreeMap;

use bespoke_store::{Item, ItemIdx};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

use super::*;
use crate::rules::{self, Attr, CmpOp, Expr, Limits, Literal, Operand, Pos, Time};

const DAY: i64 = 86_400_000;
const HOUR: i64 = 3_600_000;
/// 2026-01-01T00:00:00Z.
const NOW: i64 = 1_767_225_600_000;

fn item(idx: u32, key: &str, categories: &[&str], price: Option<f64>) -> Item {
    Item {
        idx: ItemIdx(idx),
        key: key.to_owned(),
        categories: categories.iter().map(|c| c.to_string()).collect(),
        text: BTreeMap::new(),
        numeric: price
            .map(|p| [("price".to_string(), p)].into())
            .unwrap_or_default(),
        attributes: Map::new(),
        embeddings: BTreeMap::new(),
        available: true,
        created_at: NOW - 10 * DAY,
        updated_at: NOW - DAY,
    }
}

/// A kitchen pan (30, brand Acme), a garden hose (80, brand GreenCo), garden seeds (5, no
/// brand, unavailable).
fn catalog() -> Vec<Item> {
    let mut pan = item(0, "pan", &["Kitchen"], Some(30.0));
    pan.text.insert("brand".into(), "Acme".into());
    pan.attributes.insert("tags".into(), json!(["steel"]));
    pan.attributes.insert("release".into(), json!("2025-12-20"));
    let mut hose = item(1, "hose", &["Garden", "Tools"], Some(80.0));
    hose.text.insert("brand".into(), "GreenCo".into());
    hose.attributes
        .insert("release".into(), json!("2024-01-01T10:00:00Z"));
    let mut seeds = item(2, "seeds", &["Garden"], Some(5.0));
    seeds.available = false;
    vec![pan, hose, seeds]
}

fn attributes() -> Map<String, Value> {
    json!({
        "country": "DE",
        "age": 34,
        "plan": "pro",
        "tags": ["vip", "beta"],
        "newsletter": true,
        "signup": "2025-12-20",
        "bio": "loves garden tools",
        "score": null,
        "prefs": {"a": 1},
        "mixed": ["a", 1],
    })
    .as_object()
    .expect("an object")
    .clone()
}

fn ev<'a>(kind: &'a str, ago: i64, value: Option<f64>, item: Option<&'a Item>) -> FactEvent<'a> {
    FactEvent {
        kind,
        timestamp: NOW - ago,
        value,
        item,
    }
}

/// Eight events, latest 1 day ago, earliest 100 days ago; see each line.
fn history(items: &[Item]) -> Vec<FactEvent<'_>> {
    let (pan, hose, seeds) = (&items[0], &items[1], &items[2]);
    vec![
        ev("view", DAY, None, Some(pan)),
        ev("view", 2 * DAY, None, Some(hose)),
        ev("view", 40 * DAY, None, Some(hose)),
        ev("click", 2 * DAY, None, Some(hose)),
        ev("purchase", 3 * DAY, Some(80.0), Some(hose)),
        ev("purchase", 45 * DAY, Some(5.0), Some(seeds)),
        // A gift card: no item.
        ev("purchase", 10 * DAY, Some(20.0), None),
        // A value that is not a number counts 0.
        ev("purchase", 100 * DAY, Some(f64::NAN), Some(pan)),
    ]
}

fn seg(src: &str) -> UserExpr {
    parse(src, &Limits::default()).unwrap_or_else(|e| panic!("{src}: {e}"))
}

/// Whether the fixture user (attributes and history) is in `src`.
fn holds(src: &str) -> bool {
    let items = catalog();
    let events = history(&items);
    let attrs = attributes();
    seg(src).eval(
        &UserFacts {
            attributes: &attrs,
            events: &events,
        },
        NOW,
    )
}

/// Whether a user with these attributes and no events is in `src`.
fn holds_for(src: &str, attrs: Value) -> bool {
    let attrs = attrs.as_object().expect("an object").clone();
    seg(src).eval(
        &UserFacts {
            attributes: &attrs,
            events: &[],
        },
        NOW,
    )
}

/// Limits no random expression reaches, for the properties.
fn roomy() -> Limits {
    Limits {
        max_len: 1 << 20,
        max_clauses: 1 << 20,
        ..Limits::default()
    }
}

fn err(src: &str) -> SegmentExprError {
    err_with(src, &Limits::default())
}

fn err_with(src: &str, limits: &Limits) -> SegmentExprError {
    match parse(src, limits) {
        Ok(e) => panic!("{src} parsed as {e}"),
        Err(e) => e,
    }
}

#[test]
fn attribute_clauses() {
    for (src, want) in [
        (r#"country = "DE""#, true),
        (r#"country == "DE""#, true),
        (r#"country != "FR""#, true),
        (r#"country = "de""#, false),
        ("age >= 30", true),
        ("age > 34", false),
        ("age = 34 and age <= 34.0", true),
        (r#"plan in ["pro", "team"]"#, true),
        (r#"plan in ["free"]"#, false),
        ("plan in []", false),
        ("age in [1, 34]", true),
        (r#"tags contains "vip""#, true),
        (r#"tags contains "vi""#, false),
        (r#"tags in ["beta", "x"]"#, true),
        // `=` on a list of strings is membership, as `category = "Garden"` is on items.
        (r#"tags = "vip""#, true),
        (r#"tags != "vip""#, false),
        (r#"tags != "basic""#, true),
        (r#"bio contains "garden""#, true),
        ("newsletter = true", true),
        ("newsletter != true", false),
        ("newsletter in [false]", false),
        ("exists(age)", true),
        ("has(country)", true),
        ("exists(nickname)", false),
        // A date string is a timestamp with a timestamp literal, and a string with a string.
        ("signup > now - 30d", true),
        ("signup > now - 7d", false),
        (r#"signup >= date("2025-12-20")"#, true),
        (r#"signup in [date("2025-12-20"), now]"#, true),
        (r#"signup = "2025-12-20""#, true),
        (r#"bio > now - 7d"#, false),
        (
            r#"not country = "FR" and (plan = "free" or age > 30)"#,
            true,
        ),
    ] {
        assert_eq!(holds(src), want, "{src}");
    }
}

#[test]
fn missing_attributes_are_false_and_not_makes_them_true() {
    // The table of docs/segments.md: a user with age 30, with age 80, without age, and with an
    // age of another type.
    let users = [
        json!({"age": 30}),
        json!({"age": 80}),
        json!({}),
        json!({"age": "old"}),
    ];
    for (src, want) in [
        ("age < 50", [true, false, false, false]),
        ("age != 30", [false, true, false, false]),
        ("not (age < 50)", [false, true, true, true]),
        ("exists(age)", [true, true, false, true]),
        (r#"age contains "ol""#, [false, false, false, true]),
        ("not age in [30]", [false, true, true, true]),
    ] {
        for (user, want) in users.iter().zip(want) {
            assert_eq!(holds_for(src, user.clone()), want, "{src} on {user}");
        }
    }
    // `null`, objects and arrays of other things than strings are as if absent.
    for name in ["score", "prefs", "mixed"] {
        assert!(!holds(&format!("exists({name})")), "{name}");
        assert!(!holds(&format!(r#"{name} contains "a""#)), "{name}");
        assert!(!holds(&format!(r#"{name} != "a""#)), "{name}");
    }
}

#[test]
fn last_and_first_seen() {
    for (src, want) in [
        ("last_seen > now - 2d", true),
        ("last_seen > now - 1d", false),
        ("last_seen >= now - 1d", true),
        ("last_seen < now - 14d", false),
        ("first_seen < now - 90d", true),
        ("first_seen = now - 100d", true),
        (r#"first_seen >= date("2025-09-01")"#, true),
        ("exists(last_seen) and has(first_seen)", true),
    ] {
        assert_eq!(holds(src), want, "{src}");
    }
    // Without events both are missing: every comparison is false, `not` of one true.
    for src in [
        "last_seen < now - 14d",
        "last_seen >= now - 14d",
        "first_seen != now",
        "exists(last_seen)",
    ] {
        assert!(!holds_for(src, json!({})), "{src}");
        assert!(holds_for(&format!("not ({src})"), json!({})), "{src}");
    }
    // A user attribute of that name is shadowed by the built-in.
    assert!(!holds_for(
        "last_seen > now - 1d",
        json!({"last_seen": "2026-01-01"})
    ));
}

#[test]
fn events_count_what_their_filters_match() {
    for (src, n) in [
        ("events()", 8),
        (r#"events(type = "view")"#, 3),
        (r#"events(type = "view", within = 30d)"#, 2),
        (r#"events(type != "view")"#, 5),
        (r#"events(type in ["view", "click"])"#, 4),
        (r#"events(type in [])"#, 0),
        // The window includes its start: the purchase 3 days ago is in a 3-day window.
        (r#"events(type = "purchase", within = 3d)"#, 1),
        (r#"events(type = "purchase", within = 71h)"#, 0),
        // Item conditions: events without an item never match them.
        (r#"events(category = "Garden")"#, 5),
        (r#"events(category != "Garden")"#, 2),
        (r#"events(category contains "Tools")"#, 4),
        (r#"events(categories in ["Kitchen", "Tools"])"#, 6),
        ("events(price > 20)", 6),
        ("events(price > 20, price < 50)", 2),
        ("events(exists(brand))", 6),
        (r#"events(brand = "GreenCo", type = "view")"#, 2),
        (r#"events(item = "seeds")"#, 1),
        ("events(available = false)", 1),
        (r#"events(release > now - 30d)"#, 2),
        ("events(nothing > 0)", 0),
    ] {
        for (op, k, want) in [("=", n, true), (">=", n + 1, false), ("<", n + 1, true)] {
            let src = format!("{src} {op} {k}");
            assert_eq!(holds(&src), want, "{src}");
        }
    }
}

#[test]
fn value_sums_event_values() {
    for (src, sum) in [
        // 80 + 5 + 20 + NaN (as 0).
        (r#"value(type = "purchase")"#, 105.0),
        (r#"value(type = "purchase", within = 30d)"#, 100.0),
        // The gift card has no item, so no price.
        (r#"value(type = "purchase", price > 20)"#, 80.0),
        // Views have no value: they add 0.
        (r#"value(type = "view")"#, 0.0),
        ("value(within = 1h)", 0.0),
    ] {
        for (op, x, want) in [
            ("=", sum, true),
            (">", sum, false),
            (">=", sum - 0.5, true),
            ("<", sum + 0.5, true),
        ] {
            let src = format!("{src} {op} {x}");
            assert_eq!(holds(&src), want, "{src}");
        }
    }
    // No events at all: the sum is 0, not missing.
    assert!(holds_for(r#"value(type = "purchase") < 100"#, json!({})));
    assert!(holds_for("value() > -1.5", json!({})));
}

#[test]
fn shorthands_are_events_at_least_once() {
    for (short, long) in [
        ("purchased()", r#"events(type = "purchase") >= 1"#),
        ("viewed()", r#"events(type = "view") >= 1"#),
        ("clicked ( )", r#"events(type = "click") >= 1"#),
        (
            r#"purchased(category = "Garden", within = 30d)"#,
            r#"events(type = "purchase", within = 30d, category = "Garden") >= 1"#,
        ),
        (
            r#"viewed(price > 20) >= 3"#,
            r#"events(price > 20, type = "view") >= 3"#,
        ),
        ("purchased() = 0", r#"events(type = "purchase") = 0"#),
        ("exists(last_seen)", "events() >= 1"),
    ] {
        assert_eq!(seg(short), seg(long), "{short}");
        // Printed in full, which parses back to the same tree.
        assert_eq!(seg(short).to_string(), seg(long).to_string());
        assert_eq!(seg(&seg(short).to_string()), seg(short));
    }
    for (src, want) in [
        (r#"purchased(category = "Garden", within = 30d)"#, true),
        (r#"purchased(category = "Kitchen", within = 30d)"#, false),
        (r#"purchased(category = "Kitchen")"#, true),
        ("viewed() >= 3", true),
        ("viewed() > 3", false),
        ("clicked(within = 1d)", false),
    ] {
        assert_eq!(holds(src), want, "{src}");
    }
}

#[test]
fn the_issue_examples() {
    // "purchased(category = "Garden", within = 30d)", "events(type = "view") >= 5",
    // "last_seen < now - 14d".
    let src = r#"purchased(category = "Garden", within = 30d) and not events(type = "view") >= 5
        and not last_seen < now - 14d"#;
    assert!(holds(src));
    let lapsed = r#"purchased(category = "Garden") and last_seen < now - 14d"#;
    assert!(!holds(lapsed));
    let items = catalog();
    let events = history(&items);
    let attrs = attributes();
    let facts = UserFacts {
        attributes: &attrs,
        events: &events,
    };
    // Fifteen days on, the same user has lapsed.
    assert!(seg(lapsed).eval(&facts, NOW + 15 * DAY));
    assert!(!seg(src).eval(&facts, NOW + 15 * DAY));
}

#[test]
fn item_conditions_mean_what_they_mean_in_rules() {
    let items = catalog();
    // Every clause the rules language compiles evaluates as its interpreter says.
    for clause in [
        "price > 20",
        "price in [5, 80]",
        r#"brand = "Acme""#,
        r#"brand contains "Co""#,
        r#"item != "pan""#,
        "available = true",
        "created_at > now - 30d",
        "release > now - 30d",
        r#"category contains "Garden""#,
        r#"category in ["Tools"]"#,
        r#"tags contains "steel""#,
        "exists(brand)",
    ] {
        let rule = rules::parse(clause, &Limits::default()).expect("a rule");
        let expr = seg(&format!("events({clause}) >= 1"));
        for it in &items {
            let events = [ev("view", DAY, None, Some(it))];
            let facts = UserFacts {
                attributes: &Map::new(),
                events: &events,
            };
            assert_eq!(
                expr.eval(&facts, NOW),
                rules::interpret(&rule, it, NOW, None),
                "{clause} on {}",
                it.key
            );
        }
    }
    // Where rules refuse `=` on a list (`category = "Garden"` does not compile, and its
    // interpreter says false), segments test membership.
    let rule = rules::parse(r#"category = "Garden""#, &Limits::default()).expect("a rule");
    assert!(!rules::interpret(&rule, &items[1], NOW, None));
    assert!(holds(r#"events(item = "hose", category = "Garden") >= 1"#));
    assert!(holds(r#"events(item = "hose", tags != "steel") = 0"#));
    assert!(holds(r#"events(item = "pan", tags != "copper") = 2"#));
}

#[test]
fn attribute_clauses_parse_as_in_rules() {
    for src in [
        "a = 1",
        "a == -2.5e3",
        r#"a != "x\"y\u00e9\n""#,
        "a = true",
        "a > now - 30d",
        "a <= now + 2h",
        r#"a >= date("2026-01-01")"#,
        r#"a < date("2026-01-01T10:00:00+02:00")"#,
        "a in [1, 2]",
        "a in []",
        r#"a in ["x", "y"]"#,
        r#"a contains "x""#,
        "exists(a)",
        "has ( a )",
    ] {
        let rule = rules::parse(src, &Limits::default()).expect("a rule");
        assert_eq!(seg(src), UserExpr::Attribute(rule), "{src}");
    }
    let src = r#"not a = 1 and (b = "x" or c in [true]) or exists(d)"#;
    let rule = rules::parse(src, &Limits::default()).expect("a rule");
    assert_eq!(seg(src).to_string(), rule.to_string());
    assert_eq!(
        seg(src).to_string(),
        r#"not a = 1 and (b = "x" or c in [true]) or exists(d)"#
    );
}

#[test]
fn errors_name_the_position_and_what_was_expected() {
    for (src, pos, text) in [
        (r#"events(type = "view")"#, 21, "expected a comparison"),
        (
            r#"events(type = "view") >= 2.5"#,
            25,
            "a count has no fraction",
        ),
        ("events() >= -1", 12, "a count is never negative"),
        ("events() >= many", 12, "`many` is not a count"),
        (
            r#"purchased(type = "view")"#,
            10,
            r#"`purchased(...)` counts events of type "purchase" already"#,
        ),
        (
            "events(within = 30d, within = 7d) >= 1",
            21,
            "`within` is given twice",
        ),
        (
            r#"events(type = "a", type = "b") >= 1"#,
            19,
            "`type` is given twice",
        ),
        (
            "events(within = 30x) >= 1",
            18,
            "expected a unit: s, m, h, d or w",
        ),
        ("events(within = 0d) >= 1", 16, "`within` must be positive"),
        ("events(within > 1d) >= 1", 14, "expected `=`"),
        (
            r#"events(type = "view" within = 30d) >= 1"#,
            21,
            "expected `,` or `)`",
        ),
        (r#"events(type > "view") >= 1"#, 12, "event types take"),
        ("events(type = view) >= 1", 14, "expected an event type"),
        ("events(price >) >= 1", 14, "expected a number, a string"),
        ("events(,) >= 1", 7, "expected `type`, `within`"),
        (
            "events(type = \"a\",) >= 1",
            18,
            "expected `type`, `within`",
        ),
        (
            "last_seen < 5",
            12,
            "`last_seen` is a timestamp, but 5 is a number",
        ),
        ("last_seen in [now]", 10, "expected a comparison"),
        (
            r#"plan < "pro""#,
            7,
            "`<` orders numbers and timestamps, not strings",
        ),
        (
            "tags contains 5",
            14,
            "`contains` takes a string, not a number",
        ),
        (r#"plan in ["a", 1]"#, 8, "list mixes a string and a number"),
        ("plan = [1]", 7, "a list goes with `in`"),
        ("country = DE", 10, "`DE` is not a value"),
        (
            r#"value(type = "purchase") > "a lot""#,
            27,
            "`value(...)` is a sum",
        ),
        ("value() >", 9, "expected a number"),
        (
            "budget <= context.max",
            10,
            "a segment has no request context",
        ),
        ("events = 3", 0, "`events` is a reserved word"),
        ("(age > 1", 8, "expected `and`, `or` or `)`"),
        ("age > 1 age", 8, "expected `and`, `or` or the end"),
        ("", 0, "expected an attribute name"),
        (
            "42 = age",
            0,
            "the left side of a clause is an attribute name",
        ),
        ("age >", 5, "expected a number, a string"),
        ("last_seen > now - 14", 20, "expected a unit"),
        (
            r#"signup > date("2026-13-01")"#,
            14,
            "is not a valid calendar date",
        ),
        (r#"country = "DE"#, 13, "the string is not closed"),
        // Positions count characters: `é` is one, though two bytes.
        (r#"name = "é" and x"#, 16, "expected a comparison"),
    ] {
        let e = err(src);
        assert_eq!(e.pos, pos, "{src}: {e}");
        assert!(e.to_string().contains(text), "{src}: {e}");
        assert!(e.to_string().starts_with(&format!("at position {pos}: ")));
    }
    assert_eq!(
        err("last_seen < 5").to_string(),
        "at position 12: expected a timestamp: `now`, `now - 14d` or `date(\"2026-01-01\")` — \
         `last_seen` is a timestamp, but 5 is a number"
    );
    assert_eq!(
        err("events(type = \"view\" within = 30d) >= 1").to_string(),
        "at position 21: expected `,` or `)`"
    );
    let e: Box<dyn std::error::Error> = Box::new(err("age >"));
    assert!(e.to_string().starts_with("at position 5"));
}

#[test]
fn limits_are_enforced_at_their_position() {
    let small = Limits {
        max_len: 4096,
        max_depth: 3,
        max_list: 2,
        max_clauses: 3,
    };
    let short = Limits {
        max_len: 40,
        ..Limits::default()
    };
    let e = err_with(r#"country = "DE" and plan = "pro" and age > 1"#, &short);
    assert_eq!(e.pos, 40);
    assert!(e.message.contains("longer than 40 bytes (43 bytes)"), "{e}");

    let e = err_with("not not not not a = 1", &small);
    assert_eq!(
        (e.pos, e.message.as_str()),
        (12, "nested deeper than 3 levels (parentheses and `not`)")
    );
    let e = err_with("(((( a = 1 ))))", &small);
    assert_eq!(e.pos, 3);
    assert!(parse("not ((a = 1))", &small).is_ok());

    let e = err_with(r#"plan in ["a", "b", "c"]"#, &small);
    assert_eq!(
        (e.pos, e.message.as_str()),
        (19, "list longer than 2 elements")
    );
    let e = err_with(r#"events(type in ["a", "b", "c"]) >= 1"#, &small);
    assert_eq!(e.pos, 26);

    // A behaviour predicate counts one clause, and each of its filters one more.
    let e = err_with(
        r#"events(type = "view", within = 1d, price > 1) >= 1"#,
        &small,
    );
    assert_eq!((e.pos, e.message.as_str()), (35, "more than 3 clauses"));
    assert!(parse(r#"events(type = "view", within = 1d) >= 1"#, &small).is_ok());
    let e = err_with("a = 1 and b = 1 and c = 1 and d = 1", &small);
    assert_eq!(e.pos, 30);

    // Hostile input is refused quickly, never overflowing the stack, whatever the settings.
    let long = "a = 1 and ".repeat(10_000);
    assert!(err(&long).message.contains("longer than 4096 bytes"));
    let deep = format!("{}a = 1{}", "(".repeat(1000), ")".repeat(1000));
    let e = err_with(
        &deep,
        &Limits {
            max_len: usize::MAX,
            max_depth: usize::MAX,
            ..Limits::default()
        },
    );
    assert_eq!(e.pos, rules::MAX_DEPTH_CAP);
}

#[test]
fn what_evaluation_needs_from_the_history() {
    for (src, needs, window) in [
        (r#"country = "DE" and not exists(age)"#, false, Some(0)),
        ("events(within = 30d) >= 1", true, Some(30 * DAY)),
        (
            "events(within = 30d) >= 1 and value(within = 7d) > 1",
            true,
            Some(30 * DAY),
        ),
        (
            r#"purchased(within = 2w) or country = "DE""#,
            true,
            Some(14 * DAY),
        ),
        ("events() >= 1", true, None),
        ("events(within = 1d) >= 1 or purchased()", true, None),
        ("last_seen > now - 7d", true, Some(7 * DAY)),
        ("not last_seen >= now - 36h", true, Some(36 * HOUR)),
        ("last_seen = now - 1d", true, Some(DAY)),
        ("last_seen > now + 1d", true, Some(0)),
        ("last_seen < now - 14d", true, None),
        ("last_seen != now", true, None),
        (r#"last_seen > date("2025-12-01")"#, true, None),
        ("first_seen > now - 7d", true, None),
    ] {
        let e = seg(src);
        assert_eq!((e.needs_events(), e.max_window()), (needs, window), "{src}");
    }
}

#[test]
fn printing_parses_back() {
    for src in [
        r#"country = "DE" and (plan in ["pro", "team"] or tags contains "vip")"#,
        r#"events(type = "view", within = 90m, price > 20.5, exists(brand)) >= 5"#,
        r#"value(type != "refund", category in ["Garden"]) <= -3.25"#,
        r#"events(type in ["view", "click"], within = 2w) = 0"#,
        r#"not (last_seen < now - 13d or first_seen > date("2025-01-01T10:00:00.250Z"))"#,
        "(a = 1 or b = 2) and not (c = 3 and d = 4)",
    ] {
        let e = seg(src);
        assert_eq!(e.to_string(), src);
        assert_eq!(seg(&e.to_string()), e);
    }
}

// Random expressions and facts for the properties.

const USER_NAMES: &[&str] = &["country", "age", "plan", "tags", "signup", "flag"];
const ITEM_NAMES: &[&str] = &["category", "price", "brand", "tags", "item", "release"];
const STRINGS: &[&str] = &[
    "DE",
    "pro",
    "vip",
    "Garden",
    "Acme",
    "pan",
    "",
    "2025-12-20",
];
const NUMBERS: &[f64] = &[-1.5, 0.0, 5.0, 20.0, 30.0, 34.0, 80.0];
const KINDS: &[&str] = &["view", "click", "purchase", "cart"];

fn string() -> impl Strategy<Value = String> {
    (0..STRINGS.len()).prop_map(|i| STRINGS[i].to_string())
}

fn op() -> impl Strategy<Value = CmpOp> {
    prop_oneof![
        Just(CmpOp::Eq),
        Just(CmpOp::Ne),
        Just(CmpOp::Lt),
        Just(CmpOp::Le),
        Just(CmpOp::Gt),
        Just(CmpOp::Ge),
    ]
}

fn time() -> impl Strategy<Value = Time> {
    prop_oneof![
        (-60i64..3).prop_map(|d| Time::Now(d * DAY)),
        (-1000i64..10).prop_map(|h| Time::Now(h * HOUR)),
        (-60i64..3).prop_map(|d| Time::At(NOW + d * DAY)),
    ]
}

/// A scalar literal and whether ordering operators take it.
fn scalar() -> impl Strategy<Value = Literal> {
    prop_oneof![
        (0..NUMBERS.len()).prop_map(|i| Literal::Number(NUMBERS[i])),
        string().prop_map(Literal::String),
        any::<bool>().prop_map(Literal::Bool),
        time().prop_map(Literal::Time),
    ]
}

/// A clause as the parser makes them: ordering only on numbers and timestamps, lists of one
/// type, `contains` with a string.
fn clause(names: &'static [&'static str]) -> impl Strategy<Value = Expr> {
    let attr = (0..names.len()).prop_map(move |i| Attr {
        name: names[i].to_string(),
        pos: Pos(0),
    });
    prop_oneof![
        (attr.clone(), op(), scalar()).prop_map(|(attr, op, lit)| {
            let op = match lit {
                Literal::String(_) | Literal::Bool(_) if op.is_ordering() => CmpOp::Eq,
                _ => op,
            };
            Expr::Compare {
                attr,
                op,
                rhs: Operand::Literal(lit, Pos(0)),
            }
        }),
        (attr.clone(), prop::collection::vec(string(), 0..3)).prop_map(|(attr, xs)| Expr::In {
            attr,
            rhs: Operand::Literal(
                Literal::List(xs.into_iter().map(Literal::String).collect()),
                Pos(0)
            ),
        }),
        (attr.clone(), prop::collection::vec(0..NUMBERS.len(), 1..3)).prop_map(|(attr, xs)| {
            Expr::In {
                attr,
                rhs: Operand::Literal(
                    Literal::List(
                        xs.into_iter()
                            .map(|i| Literal::Number(NUMBERS[i]))
                            .collect(),
                    ),
                    Pos(0),
                ),
            }
        }),
        (attr.clone(), string()).prop_map(|(attr, s)| Expr::Contains {
            attr,
            rhs: Operand::Literal(Literal::String(s), Pos(0)),
        }),
        attr.prop_map(Expr::Exists),
    ]
}

fn event_filter() -> impl Strategy<Value = EventFilter> {
    let kind = prop_oneof![
        Just(None),
        prop::collection::vec((0..KINDS.len()).prop_map(|i| KINDS[i].to_string()), 0..3)
            .prop_map(|ks| Some(KindFilter::In(ks))),
        (0..KINDS.len()).prop_map(|i| Some(KindFilter::Not(KINDS[i].to_string()))),
    ];
    let within = prop_oneof![
        Just(None),
        (1i64..60).prop_map(|d| Some(d * DAY)),
        (1i64..100).prop_map(|h| Some(h * HOUR)),
    ];
    (
        kind,
        within,
        prop::collection::vec(clause(ITEM_NAMES), 0..3),
    )
        .prop_map(|(kind, within, item)| EventFilter { kind, within, item })
}

fn term() -> impl Strategy<Value = UserExpr> {
    prop_oneof![
        clause(USER_NAMES).prop_map(UserExpr::Attribute),
        (any::<bool>(), op(), time()).prop_map(|(last, op, at)| UserExpr::Seen {
            end: if last { Seen::Last } else { Seen::First },
            op,
            at,
            pos: Pos(0),
        }),
        (event_filter(), op(), 0u64..6).prop_map(|(filter, op, count)| UserExpr::Events {
            filter,
            op,
            count,
            pos: Pos(0),
        }),
        (event_filter(), op(), (0..NUMBERS.len())).prop_map(|(filter, op, i)| {
            UserExpr::Value {
                filter,
                op,
                total: NUMBERS[i] * 3.0,
                pos: Pos(0),
            }
        }),
    ]
}

fn user_expr() -> impl Strategy<Value = UserExpr> {
    term().prop_recursive(4, 24, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 2..4).prop_map(UserExpr::And),
            prop::collection::vec(inner.clone(), 2..4).prop_map(UserExpr::Or),
            inner.prop_map(|x| UserExpr::Not(Box::new(x))),
        ]
    })
}

fn json_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        (0..NUMBERS.len()).prop_map(|i| json!(NUMBERS[i])),
        string().prop_map(Value::String),
        (-60i64..3).prop_map(|d| json!(crate::time::format_rfc3339(NOW + d * DAY))),
        any::<bool>().prop_map(Value::Bool),
        prop::collection::vec(string().prop_map(Value::String), 0..3).prop_map(Value::Array),
        Just(json!([1, "a"])),
        Just(json!({"a": 1})),
        Just(Value::Null),
    ]
}

/// A random item pool, for events to point into.
fn random_items() -> impl Strategy<Value = Vec<Item>> {
    prop::collection::vec(
        (
            prop::collection::vec(string(), 0..3),
            prop::option::of((0..NUMBERS.len()).prop_map(|i| NUMBERS[i])),
            prop::collection::btree_map(
                (0..ITEM_NAMES.len()).prop_map(|i| ITEM_NAMES[i].to_string()),
                json_value(),
                0..3,
            ),
        ),
        1..4,
    )
    .prop_map(|specs| {
        specs
            .into_iter()
            .enumerate()
            .map(|(i, (cats, price, attrs))| {
                let cats: Vec<&str> = cats.iter().map(String::as_str).collect();
                let mut it = item(i as u32, STRINGS[i % STRINGS.len()], &cats, price);
                it.attributes = attrs.into_iter().collect();
                it
            })
            .collect()
    })
}

/// Raw events: (type, hours before `NOW` (negative: after), value, index into the item pool).
type RawEvent = (usize, i64, Option<f64>, Option<usize>);

fn raw_events() -> impl Strategy<Value = Vec<RawEvent>> {
    prop::collection::vec(
        (
            0..KINDS.len(),
            -24i64..(70 * 24),
            prop::option::of(prop_oneof![
                (0..NUMBERS.len()).prop_map(|i| NUMBERS[i]),
                Just(f64::NAN)
            ]),
            prop::option::of(0usize..4),
        ),
        0..10,
    )
}

fn facts_of<'a>(raw: &[RawEvent], items: &'a [Item]) -> Vec<FactEvent<'a>> {
    raw.iter()
        .map(|&(k, hours, value, it)| FactEvent {
            kind: KINDS[k],
            timestamp: NOW - hours * HOUR,
            value,
            item: it.and_then(|i| items.get(i)),
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn any_text_parses_or_errors_within_it(src in any::<String>()) {
        if let Err(e) = parse(&src, &Limits::default()) {
            prop_assert!(e.pos <= src.chars().count(), "{:?}: {}", src, e);
        }
    }

    #[test]
    fn near_grammatical_text_parses_or_errors_within_it(
        src in "[ a-z_0-9()\\[\\],.\"=<>!+é\\\\-]{0,60}|((events|value|purchased|type|within|last_seen|now|30d|[(),=<>\" ]|and|not|-|[a-c]|1)){0,16}"
    ) {
        if let Err(e) = parse(&src, &Limits::default()) {
            prop_assert!(e.pos <= src.chars().count(), "{:?}: {}", src, e);
        }
    }

    #[test]
    fn printed_expressions_parse_back(e in user_expr()) {
        let src = e.to_string();
        let parsed = parse(&src, &roomy());
        prop_assert_eq!(parsed.as_ref().ok(), Some(&e), "{} -> {:?}", src, parsed);
    }

    #[test]
    fn truncated_expressions_error_within_them(e in user_expr(), cut in 0usize..1000) {
        let src = e.to_string();
        let chars: Vec<char> = src.chars().collect();
        let cut: String = chars[..cut % (chars.len() + 1)].iter().collect();
        if let Err(err) = parse(&cut, &roomy()) {
            prop_assert!(err.pos <= cut.chars().count(), "{:?}: {}", cut, err);
        }
    }

    #[test]
    fn not_is_negation(
        e in user_expr(),
        attrs in prop::collection::btree_map(
            (0..USER_NAMES.len()).prop_map(|i| USER_NAMES[i].to_string()),
            json_value(),
            0..6,
        ),
        items in random_items(),
        raw in raw_events(),
    ) {
        let attrs: Map<String, Value> = attrs.into_iter().collect();
        let events = facts_of(&raw, &items);
        let facts = UserFacts { attributes: &attrs, events: &events };
        let negated = parse(&format!("not ({e})"), &roomy()).expect("parses");
        prop_assert_eq!(negated.eval(&facts, NOW), !e.eval(&facts, NOW), "{}", e);
    }

    #[test]
    fn the_window_bounds_the_history_needed(
        // Single terms too: in a larger tree, some term usually has no window.
        e in prop_oneof![term(), user_expr()],
        attrs in prop::collection::btree_map(
            (0..USER_NAMES.len()).prop_map(|i| USER_NAMES[i].to_string()),
            json_value(),
            0..6,
        ),
        items in random_items(),
        raw in raw_events(),
    ) {
        let attrs: Map<String, Value> = attrs.into_iter().collect();
        let events = facts_of(&raw, &items);
        let full = e.eval(&UserFacts { attributes: &attrs, events: &events }, NOW);
        if let Some(w) = e.max_window() {
            let recent: Vec<FactEvent<'_>> =
                events.iter().copied().filter(|ev| ev.timestamp >= NOW - w).collect();
            let bounded = e.eval(&UserFacts { attributes: &attrs, events: &recent }, NOW);
            prop_assert_eq!(full, bounded, "{} with window {}", e, w);
        }
        if !e.needs_events() {
            let none = e.eval(&UserFacts { attributes: &attrs, events: &[] }, NOW);
            prop_assert_eq!(full, none, "{}", e);
        }
    }

    #[test]
    fn shared_syntax_parses_as_in_rules(
        tail in "( |a|b|1|-|2\\.5|1e3|\"x\"|\"2026-01-01\"|now|date|\\(|\\)|\\[|\\]|,|\\+|30d|7x|and|or|not|true|false|=|!=|exists|has|\\\\|\"|é){0,12}"
    ) {
        // Behind `a = ` only what both languages share can follow, so both parsers must agree:
        // on the tree, or on where the text goes wrong.
        let src = format!("a = {tail}");
        match (rules::parse(&src, &Limits::default()), parse(&src, &Limits::default())) {
            (Ok(r), Ok(s)) => prop_assert_eq!(r.to_string(), s.to_string()),
            (Err(r), Err(s)) => prop_assert_eq!(r.position, s.pos, "{:?}: {} / {}", src, r, s),
            (r, s) => prop_assert!(false, "{:?}: rules {:?}, segments {:?}", src, r, s),
        }
    }
}

#[test]
fn documented_error_messages() {
    // The table in docs/segments.md, "Errors", word for word.
    for (src, message) in [
        (
            r#"events(type = "view")"#,
            "at position 21: expected a comparison (`=`, `!=`, `<`, `<=`, `>`, `>=`) and a \
             count, such as `>= 5`",
        ),
        (
            r#"events(type = "view") >= 2.5"#,
            "at position 25: expected a whole number of events — a count has no fraction or \
             exponent",
        ),
        (
            r#"events(type = "view" within = 30d) >= 1"#,
            "at position 21: expected `,` or `)`",
        ),
        (
            "events(within = 30d, within = 7d) >= 1",
            "at position 21: `within` is given twice",
        ),
        (
            "events(within = 30x) >= 1",
            "at position 18: expected a unit: s, m, h, d or w",
        ),
        (
            r#"purchased(type = "view")"#,
            r#"at position 10: `purchased(...)` counts events of type "purchase" already"#,
        ),
        (
            "last_seen < 5",
            "at position 12: expected a timestamp: `now`, `now - 14d` or \
             `date(\"2026-01-01\")` — `last_seen` is a timestamp, but 5 is a number",
        ),
        (
            r#"plan < "pro""#,
            "at position 7: `<` orders numbers and timestamps, not strings (use = or !=)",
        ),
    ] {
        assert_eq!(err(src).to_string(), message, "{src}");
    }
}
