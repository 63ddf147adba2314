use std::collections::BTreeMap;

use bespoke_store::{Item, ItemIdx};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

use super::*;

const DAY: i64 = 86_400_000;
/// 2026-01-01T00:00:00Z.
const NOW: i64 = 1_767_225_600_000;

fn item(idx: u32, key: &str) -> Item {
    Item {
        idx: ItemIdx(idx),
        key: key.to_owned(),
        categories: Vec::new(),
        text: BTreeMap::new(),
        numeric: BTreeMap::new(),
        attributes: Map::new(),
        embeddings: BTreeMap::new(),
        available: true,
        created_at: NOW - 10 * DAY,
        updated_at: NOW - DAY,
    }
}

/// Three items: a cheap organic kitchen pan, an expensive garden hose, and one without a price.
fn catalog() -> (Columns, Vec<Item>) {
    let mut a = item(0, "pan");
    a.categories = vec!["Kitchen".into()];
    a.numeric.insert("price".into(), 30.0);
    a.text.insert("brand".into(), "Acme Steel".into());
    a.attributes
        .insert("tags".into(), json!(["organic", "steel"]));
    a.attributes.insert("on_sale".into(), json!(true));
    a.attributes.insert("release".into(), json!("2025-12-20"));
    let mut b = item(1, "hose");
    b.categories = vec!["Garden".into(), "Tools".into()];
    b.numeric.insert("price".into(), 80.0);
    b.text.insert("brand".into(), "GreenCo".into());
    b.attributes.insert("tags".into(), json!([]));
    b.attributes.insert("on_sale".into(), json!(false));
    b.attributes
        .insert("release".into(), json!("2024-01-01T10:00:00Z"));
    b.available = false;
    b.created_at = NOW - 100 * DAY;
    let mut c = item(2, "mystery");
    c.categories = vec!["Kitchen".into()];
    c.attributes.insert("release".into(), json!("soon"));
    let mut cols = Columns::new();
    for it in [&a, &b, &c] {
        cols.set_item(it.idx.0, it);
    }
    (cols, vec![a, b, c])
}

/// Keys of the items that `src` keeps, checked against the interpreter on the way.
fn keep(src: &str) -> Vec<String> {
    keep_with(src, None)
}

fn keep_with(src: &str, ctx: Option<&Map<String, Value>>) -> Vec<String> {
    let (cols, items) = catalog();
    let expr = parse(src, &Limits::default()).unwrap_or_else(|e| panic!("{src}: {e}"));
    let bound = compile(&expr, &cols)
        .unwrap_or_else(|e| panic!("{src}: {e}"))
        .bind(NOW, ctx)
        .unwrap_or_else(|e| panic!("{src}: {e}"));
    items
        .iter()
        .filter(|it| {
            let fast = bound.eval(&cols, it.idx.0);
            assert_eq!(fast, interpret(&expr, it, NOW, ctx), "{src} on {}", it.key);
            fast
        })
        .map(|it| it.key.clone())
        .collect()
}

fn parse_err(src: &str) -> ExprError {
    parse(src, &Limits::default()).expect_err(src)
}

fn compile_err(src: &str) -> ExprError {
    let (cols, _) = catalog();
    let expr = parse(src, &Limits::default()).unwrap_or_else(|e| panic!("{src}: {e}"));
    compile(&expr, &cols).expect_err(src)
}

#[test]
fn number_comparisons() {
    assert_eq!(keep("price < 50"), ["pan"]);
    assert_eq!(keep("price <= 30"), ["pan"]);
    assert_eq!(keep("price > 30"), ["hose"]);
    assert_eq!(keep("price >= 30"), ["pan", "hose"]);
    assert_eq!(keep("price = 80"), ["hose"]);
    assert_eq!(keep("price == 80"), ["hose"]);
    assert_eq!(keep("price != 80"), ["pan"]);
    assert_eq!(keep("price > -1.5e1"), ["pan", "hose"]);
}

#[test]
fn string_and_bool_comparisons() {
    assert_eq!(keep(r#"brand = "GreenCo""#), ["hose"]);
    assert_eq!(keep(r#"brand != "GreenCo""#), ["pan"]);
    assert_eq!(keep(r#"item = "mystery""#), ["mystery"]);
    assert_eq!(keep("available = false"), ["hose"]);
    assert_eq!(keep("available != false"), ["pan", "mystery"]);
    assert_eq!(keep("on_sale = true"), ["pan"]);
    // A string no item has: `=` matches nothing, `!=` everything that has a brand.
    assert_eq!(keep(r#"brand = "Nobody""#), Vec::<String>::new());
    assert_eq!(keep(r#"brand != "Nobody""#), ["pan", "hose"]);
}

#[test]
fn timestamps() {
    assert_eq!(keep("created_at > now - 30d"), ["pan", "mystery"]);
    assert_eq!(keep("created_at < now - 4w"), ["hose"]);
    assert_eq!(keep("updated_at >= now - 24h"), ["pan", "hose", "mystery"]);
    assert_eq!(keep("updated_at > now + 1s"), Vec::<String>::new());
    // `release` strings that are dates are timestamps as well; "soon" is not.
    assert_eq!(keep("release > now - 30d"), ["pan"]);
    assert_eq!(keep(r#"release < date("2025-01-01")"#), ["hose"]);
    assert_eq!(
        keep(r#"release = date("2024-01-01T11:00:00+01:00")"#),
        ["hose"]
    );
    assert_eq!(keep(r#"release = "soon""#), ["mystery"]);
}

#[test]
fn membership() {
    assert_eq!(
        keep(r#"category in ["Kitchen", "Garden"]"#),
        ["pan", "hose", "mystery"]
    );
    assert_eq!(keep(r#"categories in ["Tools"]"#), ["hose"]);
    assert_eq!(keep(r#"category contains "Kitchen""#), ["pan", "mystery"]);
    assert_eq!(keep(r#"tags contains "organic""#), ["pan"]);
    assert_eq!(keep(r#"brand contains "Steel""#), ["pan"]);
    assert_eq!(keep(r#"brand in ["GreenCo", "Other"]"#), ["hose"]);
    assert_eq!(keep("price in [30, 31]"), ["pan"]);
    assert_eq!(keep("price in []"), Vec::<String>::new());
    assert_eq!(keep("on_sale in [true, false]"), ["pan", "hose"]);
}

#[test]
fn logic_and_precedence() {
    // not > and > or.
    assert_eq!(
        parse("a = 1 or b = 2 and not c = 3", &Limits::default())
            .unwrap()
            .to_string(),
        "a = 1 or b = 2 and not c = 3"
    );
    let e = parse("a = 1 or b = 2 and c = 3", &Limits::default()).unwrap();
    assert!(matches!(&e, Expr::Or(xs) if matches!(xs[1], Expr::And(_))));
    let e = parse("not a = 1 and b = 2", &Limits::default()).unwrap();
    assert!(matches!(&e, Expr::And(xs) if matches!(xs[0], Expr::Not(_))));
    assert_eq!(
        keep("price < 50 or available = false and price > 1000"),
        ["pan"]
    );
    assert_eq!(
        keep("(price < 50 or available = false) and price > 10"),
        ["pan", "hose"]
    );
    assert_eq!(keep("not price < 50 and not price > 50"), ["mystery"]);
    assert_eq!(keep("not not price < 50"), ["pan"]);
}

#[test]
fn missing_attributes_are_false_and_not_negates_them() {
    assert_eq!(keep("price < 50"), ["pan"]);
    assert_eq!(keep("not (price < 50)"), ["hose", "mystery"]);
    assert_eq!(keep("price != 30"), ["hose"]);
    assert_eq!(keep("exists(price)"), ["pan", "hose"]);
    assert_eq!(keep("not has(price)"), ["mystery"]);
    assert_eq!(keep("exists(tags)"), ["pan", "hose"]);
    assert_eq!(keep("exists(category)"), ["pan", "hose", "mystery"]);
}

#[test]
fn cleared_and_unknown_items_have_nothing() {
    let (mut cols, _) = catalog();
    let e = parse("exists(item) or price < 50", &Limits::default()).unwrap();
    let b = compile(&e, &cols).unwrap().bind(NOW, None).unwrap();
    assert!(b.eval(&cols, 0));
    assert!(!b.eval(&cols, 7));
    assert!(!b.eval(&cols, u32::MAX));
    cols.clear_item(0);
    assert!(!b.eval(&cols, 0));
    let not = compile(&parse("not price < 50", &Limits::default()).unwrap(), &cols)
        .unwrap()
        .bind(NOW, None)
        .unwrap();
    assert!(not.eval(&cols, 0));
}

#[test]
fn set_item_replaces_every_value() {
    let (mut cols, mut items) = catalog();
    items[0].numeric.clear();
    items[0].attributes.clear();
    cols.set_item(0, &items[0]);
    let e = parse(
        "exists(price) or exists(tags) or exists(on_sale)",
        &Limits::default(),
    )
    .unwrap();
    let b = compile(&e, &cols).unwrap().bind(NOW, None).unwrap();
    assert!(!b.eval(&cols, 0));
    assert!(b.eval(&cols, 1));
}

#[test]
fn context_binding() {
    let ctx = json!({
        "max": 50, "brand": "GreenCo", "cats": ["Garden"], "since": "2025-12-01",
        "flag": true, "nothing": null
    });
    let ctx = ctx.as_object().unwrap();
    assert_eq!(keep_with("price < context.max", Some(ctx)), ["pan"]);
    assert_eq!(keep_with("brand = context.brand", Some(ctx)), ["hose"]);
    assert_eq!(keep_with("brand != context.brand", Some(ctx)), ["pan"]);
    assert_eq!(keep_with("category in context.cats", Some(ctx)), ["hose"]);
    assert_eq!(
        keep_with("created_at > context.since", Some(ctx)),
        ["pan", "mystery"]
    );
    assert_eq!(
        keep_with("available = context.flag", Some(ctx)),
        ["pan", "mystery"]
    );
    // Absent or null: missing, so false, and `not` makes it true.
    assert_eq!(
        keep_with("price < context.absent", Some(ctx)),
        Vec::<String>::new()
    );
    assert_eq!(
        keep_with("price < context.nothing", Some(ctx)),
        Vec::<String>::new()
    );
    assert_eq!(
        keep_with("not price < context.absent", None),
        ["pan", "hose", "mystery"]
    );

    let (cols, _) = catalog();
    let bind = |src: &str| {
        let e = parse(src, &Limits::default()).unwrap();
        compile(&e, &cols).unwrap().bind(NOW, Some(ctx))
    };
    let err = bind("price < context.brand").unwrap_err();
    assert_eq!(err.position, 8);
    assert!(err.message.contains("context field `brand`"), "{err}");
    assert!(err.message.contains("`price` is a number"), "{err}");
    let err = bind("category in context.max").unwrap_err();
    assert!(
        err.message.contains("context field `max` must be a list"),
        "{err}"
    );
    let err = bind("created_at > context.brand").unwrap_err();
    assert!(err.message.contains("timestamp"), "{err}");
}

#[test]
fn parse_errors_name_position_and_expectation() {
    let e = parse_err("price < ");
    assert_eq!(e.position, 8);
    assert!(e.expected.starts_with("a number, a string"), "{e}");
    let e = parse_err(r#"category in ["a" "b"]"#);
    assert_eq!((e.position, e.expected.as_str()), (17, "`,` or `]`"));
    let e = parse_err("price <> 5");
    assert_eq!(e.position, 7);
    let e = parse_err("price 5");
    assert_eq!(e.position, 6);
    assert!(e.expected.contains("`in` or `contains`"), "{e}");
    let e = parse_err(r#"brand = "open"#);
    assert_eq!(e.position, 13);
    assert_eq!(e.expected, "a closing `\"`");
    let e = parse_err("(price < 5");
    assert_eq!(
        (e.position, e.expected.as_str()),
        (10, "`and`, `or` or `)`")
    );
    let e = parse_err("price < 5 price > 1");
    assert_eq!(e.position, 10);
    let e = parse_err("brand = Acme");
    assert!(e.message.contains("double quotes"), "{e}");
    let e = parse_err("created_at > now - 30x");
    assert_eq!(e.position, 21);
    let e = parse_err(r#"x > date("2026-13-01")"#);
    assert_eq!(e.position, 9);
    assert!(e.message.contains("2026-13-01"), "{e}");
    let e = parse_err("and = 1");
    assert!(e.message.contains("reserved"), "{e}");
    let e = parse_err("");
    assert_eq!(e.position, 0);
    let e = parse_err("context.x = 1");
    assert!(e.message.contains("right side"), "{e}");
    assert_eq!(
        parse_err("price < ").to_string(),
        "at position 8: expected a number, a string, `true`, `false`, `now`, `date(...)` or \
         `context.<name>`"
    );
}

#[test]
fn positions_count_characters() {
    let e = parse_err(r#"brand = "héllo" and ?"#);
    assert_eq!(e.position, 20);
    let e = compile_err(r#"brand = "héllo" and prix > 1"#);
    assert_eq!(e.position, 20);
}

#[test]
fn compile_errors_name_the_part() {
    let e = compile_err("pric < 50");
    assert_eq!(e.position, 0);
    assert!(
        e.message
            .starts_with("unknown attribute `pric` (known: price, "),
        "{e}"
    );
    let e = compile_err(r#"price > "abc""#);
    assert_eq!(e.position, 8);
    assert!(
        e.message
            .contains("`price` is a number, but \"abc\" is a string"),
        "{e}"
    );
    assert!(
        e.to_string()
            .starts_with("at position 8: expected a number — "),
        "{e}"
    );
    let e = compile_err(r#"brand < "x""#);
    assert!(e.message.contains("not strings"), "{e}");
    let e = compile_err("available > true");
    assert!(e.message.contains("not booleans"), "{e}");
    let e = compile_err(r#"category = "Kitchen""#);
    assert!(e.message.contains("use `contains` or `in`"), "{e}");
    let e = compile_err(r#"price in [1, "a"]"#);
    assert!(e.message.contains("mixes a number and a string"), "{e}");
    let e = compile_err("price contains \"a\"");
    assert!(e.message.contains("`contains` needs"), "{e}");
    let e = compile_err("brand > now");
    assert!(e.message.contains("no item has had a date"), "{e}");
    let e = compile_err(r#"release > "2026-01-01""#);
    assert!(e.message.contains("not strings"), "{e}");
}

#[test]
fn limits_fail_without_overflowing() {
    let limits = Limits::default();
    let long = format!("price < 1{}", " ".repeat(100_000));
    let e = parse(&long, &limits).unwrap_err();
    assert_eq!(e.position, 4096);
    assert!(e.message.contains("longer than 4096 bytes"), "{e}");

    let big = Limits {
        max_len: 1 << 20,
        ..limits
    };
    let deep = format!("{}price < 1{}", "(".repeat(1000), ")".repeat(1000));
    let e = parse(&deep, &big).unwrap_err();
    assert_eq!(e.position, 32);
    assert!(e.message.contains("deeper than 32"), "{e}");
    let nots = format!("{}price < 1", "not ".repeat(1000));
    let e = parse(&nots, &big).unwrap_err();
    assert_eq!(e.position, 128);
    let mixed = format!("{}price < 1", "not (".repeat(1000));
    assert!(parse(&mixed, &big).is_err());
    // 100k characters of nesting with the default limits: refused on length.
    let e = parse(&"(".repeat(100_000), &limits).unwrap_err();
    assert_eq!(e.position, 4096);

    // Whatever the limit asks, nesting stops at the cap that bounds the stack, and the deepest
    // accepted tree (an `and` and an `or` in every parenthesis) compiles and evaluates.
    let huge = Limits {
        max_len: 1 << 20,
        max_depth: 1_000_000,
        ..limits
    };
    let e = parse(&"(".repeat(50_000), &huge).unwrap_err();
    assert_eq!(e.position, MAX_DEPTH_CAP);
    let mut src = "price < 1".to_string();
    for _ in 0..MAX_DEPTH_CAP {
        src = format!("price > 2 and (price < 3 or {src})");
    }
    let expr = parse(
        &src,
        &Limits {
            max_clauses: 1000,
            ..huge
        },
    )
    .unwrap();
    let (cols, _) = catalog();
    let b = compile(&expr, &cols).unwrap().bind(NOW, None).unwrap();
    assert!(!b.eval(&cols, 0));

    let at_depth = format!("{}price < 1{}", "(".repeat(32), ")".repeat(32));
    assert!(parse(&at_depth, &limits).is_ok());

    let clauses = vec!["price < 1"; 65].join(" and ");
    let e = parse(&clauses, &limits).unwrap_err();
    assert!(e.message.contains("more than 64 clauses"), "{e}");
    assert_eq!(e.position, 64 * "price < 1 and ".len());
    assert!(parse(&vec!["price < 1"; 64].join(" or "), &limits).is_ok());

    let list = format!("price in [{}]", vec!["1"; 257].join(","));
    let e = parse(&list, &limits).unwrap_err();
    assert!(e.message.contains("longer than 256"), "{e}");
    let list = format!("price in [{}]", vec!["1"; 256].join(","));
    assert!(parse(&list, &limits).is_ok());
}

#[test]
fn strings_escape_and_print_back() {
    let e = parse(r#"brand = "a\"b\\c\nd\te\u00e9""#, &Limits::default()).unwrap();
    let Expr::Compare {
        rhs: Operand::Literal(Literal::String(s), _),
        ..
    } = &e
    else {
        panic!("{e:?}")
    };
    assert_eq!(s, "a\"b\\c\nd\te\u{e9}");
    assert_eq!(parse(&e.to_string(), &Limits::default()).unwrap(), e);
    assert!(
        parse_err(r#"brand = "\x""#)
            .expected
            .starts_with("an escape")
    );
    assert!(
        parse_err(r#"brand = "\ud800""#)
            .message
            .contains("invalid `\\u`")
    );
}

#[test]
fn printing_round_trips() {
    for src in [
        "(a = 1 or b = 2) and not (c = 3 and d = 4)",
        "a = 1 or (b = 2 or c = 3)",
        "x > now - 30d and y < now + 2h and z = now",
        r#"x = date("2026-01-01T10:00:00.000Z")"#,
        r#"category in ["A", "B"] and tags contains "x" and exists(p) and v in context.list"#,
        "not not a != -0.5",
    ] {
        let e = parse(src, &Limits::default()).unwrap();
        assert_eq!(
            parse(&e.to_string(), &Limits::default()).unwrap(),
            e,
            "{src}"
        );
    }
    assert_eq!(
        parse("a = 1 or (b = 2 or c = 3)", &Limits::default())
            .unwrap()
            .to_string(),
        "a = 1 or (b = 2 or c = 3)"
    );
}

#[test]
fn cache_reuses_and_recompiles() {
    let (mut cols, mut items) = catalog();
    let cache = Cache::new(2);
    let limits = Limits::default();
    let a = cache.get("price < 50", &cols, &limits).unwrap();
    let b = cache.get("price < 50", &cols, &limits).unwrap();
    assert!(std::sync::Arc::ptr_eq(&a, &b));
    assert!(cache.get("pric < 50", &cols, &limits).is_err());
    assert_eq!(cache.len(), 1);

    // A new attribute bumps the generation: the entry is compiled again.
    let g = cols.generation();
    items[2].numeric.insert("weight".into(), 1.0);
    cols.set_item(2, &items[2]);
    assert!(cols.generation() > g);
    let c = cache.get("price < 50", &cols, &limits).unwrap();
    assert!(!std::sync::Arc::ptr_eq(&a, &c));

    // A literal nobody had matches once an item has it.
    let unseen = r#"brand = "Newco""#;
    let before = cache.get(unseen, &cols, &limits).unwrap();
    assert!(!before.bind(NOW, None).unwrap().eval(&cols, 2));
    items[2].text.insert("brand".into(), "Newco".into());
    cols.set_item(2, &items[2]);
    let after = cache.get(unseen, &cols, &limits).unwrap();
    assert!(after.bind(NOW, None).unwrap().eval(&cols, 2));

    // Bounded: the least recently used goes.
    cache.get("price > 1", &cols, &limits).unwrap();
    assert_eq!(cache.len(), 2);
}

#[test]
fn cache_evicts_the_least_recently_used() {
    let (cols, _) = catalog();
    let limits = Limits::default();
    let cache = Cache::new(2);
    let a = cache.get("price < 1", &cols, &limits).unwrap();
    let b = cache.get("price < 2", &cols, &limits).unwrap();
    // Touch `a`, so that `b` is the oldest when a third comes.
    cache.get("price < 1", &cols, &limits).unwrap();
    cache.get("price < 3", &cols, &limits).unwrap();
    assert_eq!(cache.len(), 2);
    assert!(std::sync::Arc::ptr_eq(
        &a,
        &cache.get("price < 1", &cols, &limits).unwrap()
    ));
    assert!(!std::sync::Arc::ptr_eq(
        &b,
        &cache.get("price < 2", &cols, &limits).unwrap()
    ));
}

#[test]
fn foreign_columns_do_not_panic() {
    let (cols, _) = catalog();
    let e = parse(
        r#"price < 50 or brand = "GreenCo" or tags contains "organic" or exists(release)"#,
        &Limits::default(),
    )
    .unwrap();
    let b = compile(&e, &cols).unwrap().bind(NOW, None).unwrap();
    // Evaluated against columns it was not compiled for: everything is missing.
    let empty = Columns::new();
    assert!(!b.eval(&empty, 0));
    assert!(!b.eval(&empty, u32::MAX));
}

#[test]
fn shared_types_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Cache>();
    check::<Compiled>();
    check::<Bound>();
    check::<Columns>();
    check::<ExprError>();
}

#[test]
fn ignored_attribute_values_are_absent() {
    let mut cols = Columns::new();
    let mut it = item(0, "x");
    it.attributes.insert("obj".into(), json!({"a": 1}));
    it.attributes.insert("nums".into(), json!([1, 2]));
    it.attributes.insert("nothing".into(), Value::Null);
    it.attributes.insert("n".into(), json!(1));
    cols.set_item(0, &it);
    for src in ["exists(obj)", "exists(nums)", "exists(nothing)"] {
        let e = parse(src, &Limits::default()).unwrap();
        assert!(
            compile(&e, &cols)
                .unwrap_err()
                .message
                .contains("unknown attribute")
        );
        assert!(!interpret(&e, &it, NOW, None));
    }
}

// ---- Property tests: the compiled predicate against the interpreter. ----

const NAMES: &[&str] = &[
    "price",
    "brand",
    "tags",
    "flag",
    "release",
    "mixed",
    "item",
    "category",
    "available",
    "created_at",
];
const STRINGS: &[&str] = &["a", "b", "Kitchen", "organic", "2026-01-01", "é\"x"];
const NUMBERS: &[f64] = &[-1.0, 0.0, 10.0, 25.5, 50.0];
const DATES: &[&str] = &["2025-12-01", "2026-01-01", "2025-12-31T23:00:00Z"];
const FIELDS: &[&str] = &["c_num", "c_str", "c_list", "c_time", "c_bool", "c_absent"];

fn time_lit() -> impl Strategy<Value = Time> {
    prop_oneof![
        (-40i64..40).prop_map(|d| Time::Now(d * DAY)),
        (-40i64..40).prop_map(|h| Time::Now(h * 3_600_000)),
        (0..DATES.len()).prop_map(|i| Time::At(parse::parse_time(DATES[i]).unwrap())),
    ]
}

fn scalar_lit() -> impl Strategy<Value = Literal> {
    prop_oneof![
        (0..NUMBERS.len()).prop_map(|i| Literal::Number(NUMBERS[i])),
        (0..STRINGS.len()).prop_map(|i| Literal::String(STRINGS[i].into())),
        any::<bool>().prop_map(Literal::Bool),
        time_lit().prop_map(Literal::Time),
    ]
}

fn list_lit() -> impl Strategy<Value = Literal> {
    prop_oneof![
        prop::collection::vec(
            (0..NUMBERS.len()).prop_map(|i| Literal::Number(NUMBERS[i])),
            0..3
        ),
        prop::collection::vec(
            (0..STRINGS.len()).prop_map(|i| Literal::String(STRINGS[i].into())),
            0..3
        ),
        prop::collection::vec(any::<bool>().prop_map(Literal::Bool), 1..3),
        prop::collection::vec(time_lit().prop_map(Literal::Time), 1..3),
    ]
    .prop_map(Literal::List)
}

fn attr_of(i: usize) -> Attr {
    Attr {
        name: NAMES[i].into(),
        pos: Pos(0),
    }
}

fn operand(lit: impl Strategy<Value = Literal>) -> impl Strategy<Value = Operand> {
    prop_oneof![
        4 => lit.prop_map(|l| Operand::Literal(l, Pos(0))),
        1 => (0..FIELDS.len()).prop_map(|i| Operand::Context(FIELDS[i].into(), Pos(0))),
    ]
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

fn clause() -> impl Strategy<Value = Expr> {
    let a = 0..NAMES.len();
    prop_oneof![
        4 => (a.clone(), op(), operand(scalar_lit()))
            .prop_map(|(a, op, rhs)| Expr::Compare { attr: attr_of(a), op, rhs }),
        2 => (a.clone(), operand(list_lit())).prop_map(|(a, rhs)| Expr::In { attr: attr_of(a), rhs }),
        1 => (a.clone(), operand((0..STRINGS.len()).prop_map(|i| Literal::String(STRINGS[i].into()))))
            .prop_map(|(a, rhs)| Expr::Contains { attr: attr_of(a), rhs }),
        1 => a.prop_map(|a| Expr::Exists(attr_of(a))),
    ]
}

fn expr() -> impl Strategy<Value = Expr> {
    clause().prop_recursive(4, 24, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 2..4).prop_map(Expr::And),
            prop::collection::vec(inner.clone(), 2..4).prop_map(Expr::Or),
            inner.prop_map(|x| Expr::Not(Box::new(x))),
        ]
    })
}

/// A random JSON value of any type the columns keep, or one they ignore.
fn json_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        (0..NUMBERS.len()).prop_map(|i| json!(NUMBERS[i])),
        (0..STRINGS.len()).prop_map(|i| json!(STRINGS[i])),
        (0..DATES.len()).prop_map(|i| json!(DATES[i])),
        any::<bool>().prop_map(|b| json!(b)),
        prop::collection::vec((0..STRINGS.len()).prop_map(|i| json!(STRINGS[i])), 0..3)
            .prop_map(Value::Array),
        Just(json!({"nested": 1})),
        Just(json!([1, 2])),
        Just(Value::Null),
    ]
}

fn random_item() -> impl Strategy<Value = Item> {
    (
        prop::collection::btree_map(
            (0..NAMES.len()).prop_map(|i| NAMES[i].to_string()),
            json_value(),
            0..6,
        ),
        prop::collection::btree_map(
            (0..3usize).prop_map(|i| ["price", "mixed", "created_at"][i].to_string()),
            prop_oneof![(0..NUMBERS.len()).prop_map(|i| NUMBERS[i]), Just(f64::NAN)],
            0..2,
        ),
        prop::collection::btree_map(
            (0..3usize).prop_map(|i| ["brand", "release", "item"][i].to_string()),
            (0..STRINGS.len() + DATES.len()).prop_map(|i| {
                STRINGS
                    .get(i)
                    .copied()
                    .unwrap_or_else(|| DATES[i - STRINGS.len()])
                    .to_string()
            }),
            0..2,
        ),
        prop::collection::vec(
            (0..STRINGS.len()).prop_map(|i| STRINGS[i].to_string()),
            0..3,
        ),
        any::<bool>(),
        -60i64..5,
    )
        .prop_map(|(attrs, numeric, text, categories, available, created)| {
            let mut it = item(0, "k");
            it.attributes = attrs.into_iter().collect();
            it.numeric = numeric;
            it.text = text;
            it.categories = categories;
            it.available = available;
            it.created_at = NOW + created * DAY;
            it
        })
}

/// An item holding every name with every type, so that most random expressions compile.
fn schema_items() -> Vec<Item> {
    let mut a = item(0, "schema");
    a.numeric.insert("price".into(), 10.0);
    a.numeric.insert("mixed".into(), 0.0);
    a.text.insert("brand".into(), "a".into());
    a.attributes.insert("tags".into(), json!(["a"]));
    a.attributes.insert("flag".into(), json!(true));
    a.attributes.insert("release".into(), json!("2026-01-01"));
    let mut b = item(1, "schema2");
    for n in NAMES.iter().filter(|n| !columns::BUILTINS.contains(*n)) {
        b.attributes
            .insert((*n).into(), json!("2025-12-31T23:00:00Z"));
    }
    let mut c = item(2, "schema3");
    for n in NAMES.iter().filter(|n| !columns::BUILTINS.contains(*n)) {
        c.attributes.insert((*n).into(), json!(["b"]));
        c.numeric.insert((*n).into(), 25.5);
    }
    let mut d = item(3, "schema4");
    for n in NAMES.iter().filter(|n| !columns::BUILTINS.contains(*n)) {
        d.attributes.insert((*n).into(), json!(false));
    }
    vec![a, b, c, d]
}

fn context() -> impl Strategy<Value = Map<String, Value>> {
    (json_value(), json_value(), json_value()).prop_map(|(a, b, c)| {
        let mut m = Map::new();
        m.insert("c_num".into(), json!(25.5));
        m.insert("c_str".into(), json!("a"));
        m.insert("c_list".into(), json!(["a", "Kitchen"]));
        m.insert("c_time".into(), json!("2025-12-20"));
        m.insert("c_bool".into(), a);
        m.insert("c_str".into(), b);
        m.insert("c_list".into(), c);
        m
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn any_text_parses_or_errors_within_it(src in "[ a-z_0-9()\\[\\],.\"=<>!+é\\\\-]{0,60}") {
        // Never a panic; an error points inside the text or just past its end.
        if let Err(e) = parse(&src, &Limits::default()) {
            prop_assert!(e.position <= src.chars().count(), "{:?}: {}", src, e);
        }
    }

    #[test]
    fn truncated_expressions_error_within_them(e in expr(), cut in 0usize..1000) {
        let src = e.to_string();
        let chars: Vec<char> = src.chars().collect();
        let cut: String = chars[..cut % (chars.len() + 1)].iter().collect();
        if let Err(err) = parse(&cut, &Limits::default()) {
            prop_assert!(err.position <= cut.chars().count(), "{:?}: {}", cut, err);
        }
    }

    #[test]
    fn printed_expressions_parse_back(e in expr()) {
        let src = e.to_string();
        let parsed = parse(&src, &Limits::default());
        prop_assert_eq!(parsed.as_ref().ok(), Some(&e), "{} -> {:?}", src, parsed);
    }

    #[test]
    fn compiled_matches_interpreter(
        e in expr(),
        items in prop::collection::vec(random_item(), 1..12),
        ctx in context(),
        reset in prop::collection::vec(any::<bool>(), 12),
    ) {
        let mut all = schema_items();
        let base = all.len() as u32;
        let mut cols = Columns::new();
        for it in &all {
            cols.set_item(it.idx.0, it);
        }
        for (k, mut it) in items.into_iter().enumerate() {
            it.idx = ItemIdx(base + k as u32);
            it.key = format!("k{k}");
            // Some items get stale values first, to check that `set_item` replaces them all.
            if reset[k] {
                cols.set_item(it.idx.0, &all[k % 4]);
            }
            cols.set_item(it.idx.0, &it);
            all.push(it);
        }
        let src = e.to_string();
        let Ok(compiled) = compile(&e, &cols) else { return Ok(()) };
        let Ok(bound) = compiled.bind(NOW, Some(&ctx)) else { return Ok(()) };
        for it in &all {
            prop_assert_eq!(
                bound.eval(&cols, it.idx.0),
                interpret(&e, it, NOW, Some(&ctx)),
                "{} on {:?}", src, it
            );
        }
    }

    /// A saved rule's expression kept evaluated per item stays equal to evaluating it afresh
    /// while items are set, replaced and cleared, new attributes and types appear, and strings
    /// unknown when it was compiled turn up.
    #[test]
    fn precomputed_matches_a_fresh_evaluation(
        e in expr(),
        items in prop::collection::vec(random_item(), 1..12),
        ops in prop::collection::vec((0u32..16, 0u8..3), 0..24),
    ) {
        let schema = schema_items();
        let mut cols = Columns::new();
        for it in &schema[..2] {
            cols.set_item(it.idx.0, it);
        }
        let src = e.to_string();
        cols.precompute([src.as_str()], &Limits::default());
        let mut current: BTreeMap<u32, Item> = schema[..2].iter().map(|it| (it.idx.0, it.clone())).collect();
        let mut pool: Vec<Item> = schema[2..].to_vec();
        pool.extend(items);
        // What a kept evaluation answers, and the id that names those answers.
        let answers = |cols: &Columns| {
            cols.precomputed(&src).map(|p| {
                let id = p.evaluated().map(|e| e.id());
                (id, (0..20u32).map(|i| p.eval(cols, i)).collect::<Vec<_>>())
            })
        };
        for (k, (idx, what)) in ops.into_iter().enumerate() {
            let before = answers(&cols);
            if what == 0 {
                cols.clear_item(idx);
                current.remove(&idx);
            } else {
                let mut it = pool[k % pool.len()].clone();
                it.idx = ItemIdx(idx);
                it.key = format!("k{idx}");
                cols.set_item(idx, &it);
                current.insert(idx, it);
            }
            // Whatever is built from an evaluation is kept by its id: new answers, new id.
            if let (Some((id0, a0)), Some((id1, a1))) = (before, answers(&cols))
                && a0 != a1
            {
                prop_assert_ne!(id0, id1, "{} changed its answers under the same id", src);
            }
        }
        let Some(kept) = cols.precomputed(&src) else { return Ok(()) };
        let fresh = compile(&e, &cols).unwrap().bind(NOW, None).unwrap();
        for i in 0..20u32 {
            prop_assert_eq!(kept.eval(&cols, i), fresh.eval(&cols, i), "{} on item {}", src, i);
            if let Some(it) = current.get(&i) {
                prop_assert_eq!(kept.eval(&cols, i), interpret(&e, it, NOW, None), "{} on {:?}", src, it);
            }
        }
    }
}
