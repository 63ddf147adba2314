//! The JavaScript client (`clients/js`) against this crate: bundles, histories and this crate's
//! own results are written to a temporary directory, and `node --test clients/js/test/` checks
//! that the JavaScript module verifies, refuses, weighs and ranks exactly as the Rust crate does.
//!
//! Needs Node.js 20 or later on `PATH`; without it this test fails (it never skips). Set
//! `BESPOKE_JS_KEEP_FIXTURES=1` to keep the fixture directory (its path is printed) and run
//! `BESPOKE_JS_FIXTURES=<dir> node --test clients/js/test/` by hand.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::{fs, io};

use bespoke_client::bundle::{FORMAT, ValueMarker};
use bespoke_client::{
    Bundle, BundleError, BundleParts, Encoding, EventWeight, Header, History, Query, Recency,
    encode,
};
use ed25519_dalek::{Signer, SigningKey};
use serde_json::{Value, json};

const NOW_MS: i64 = 1_765_000_000_000;
const HOUR_MS: i64 = 3_600_000;

/// The fixture directory, removed when dropped (unless `BESPOKE_JS_KEEP_FIXTURES` is set).
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir = std::env::temp_dir().join(format!(
            "bespoke-js-fixtures-{}-{nanos}",
            std::process::id()
        ));
        fs::create_dir_all(&dir).expect("create the fixture directory");
        Self(dir)
    }

    fn write(&self, name: &str, bytes: &[u8]) {
        fs::write(self.0.join(name), bytes).expect("write a fixture");
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os("BESPOKE_JS_KEEP_FIXTURES").is_some() {
            eprintln!("fixtures kept in {}", self.0.display());
        } else {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
}

/// A small deterministic generator (SplitMix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

const CATEGORIES: [&str; 6] = ["shoes", "hats", "bags", "sale", "new", "ünïcodé"];

/// A catalog of `n` items with `d` factors, recency, the recent boost and propensity on.
fn big_parts(n: usize, d: usize) -> BundleParts {
    let mut rng = Rng(2026);
    let factors: Vec<f32> = (0..n * d)
        .map(|_| ((rng.unit() - 0.5) * 0.9) as f32)
        .collect();
    let propensity: Vec<f32> = (0..n).map(|i| 1.0 + (i % 9) as f32 * 0.23).collect();
    BundleParts {
        header: Header {
            format: FORMAT,
            model_version: 42,
            created_at: "2026-12-07T12:00:00Z".into(),
            dim: d as u32,
            encoding: Encoding::F32,
            alpha: 1.7,
            event_weights: [
                ("view", EventWeight::Fixed(1.0)),
                ("impression", EventWeight::Fixed(0.3)),
                ("cart", EventWeight::Fixed(2.5)),
                ("purchase", EventWeight::Fixed(4.0)),
                ("dislike", EventWeight::Fixed(-2.0)),
                ("rating", EventWeight::Value(ValueMarker::Value)),
            ]
            .into_iter()
            .map(|(k, w)| (k.to_owned(), w))
            .collect(),
            max_weight: 5.0,
            recent_boost: 0.5,
            recent_half_life_ms: 24.0 * HOUR_MS as f64,
            recency: Recency {
                half_life: 4.0,
                floor: 0.15,
            },
            propensity: true,
            keys: (0..n)
                .map(|i| {
                    if i % 997 == 3 {
                        format!("produit-é-{i}")
                    } else {
                        format!("sku-{i:05}")
                    }
                })
                .collect(),
            categories: CATEGORIES.iter().map(|c| (*c).to_owned()).collect(),
            item_categories: (0..n)
                .map(|i| {
                    if i % 7 == 0 {
                        return Vec::new();
                    }
                    let mut c = vec![(i % 3) as u32];
                    if i % 5 == 0 {
                        c.push(3);
                    }
                    if i % 11 == 0 {
                        c.push(4);
                    }
                    if i % 13 == 0 {
                        c.push(5);
                    }
                    c
                })
                .collect(),
        },
        gram_reg: bespoke_client::gram_reg(&factors, d, 0.5),
        factors,
        propensity,
    }
}

/// The crate's `example_bundle` catalog (40 items, d = 6), for the JavaScript unit tests.
fn small_parts() -> BundleParts {
    bespoke_client::example_parts()
}

/// The histories the JavaScript client must weigh and rank as this crate does.
fn histories(keys: &[String]) -> Vec<(&'static str, History)> {
    let mut out = Vec::new();

    let mut h = History::default();
    h.push(&keys[17], "purchase", None, NOW_MS - 3 * HOUR_MS);
    h.push(&keys[250], "view", None, NOW_MS - 2 * HOUR_MS);
    h.push(&keys[1003], "cart", None, NOW_MS - HOUR_MS);
    out.push(("few", h));

    let mut rng = Rng(7);
    let pool: Vec<String> = (0..40)
        .map(|_| keys[rng.below(keys.len())].clone())
        .chain((0..5).map(|i| format!("gone-{i}")))
        .collect();
    let types = [
        "view",
        "impression",
        "cart",
        "purchase",
        "dislike",
        "rating",
        "wishlist",
    ];
    let mut h = History::default();
    for i in 0..90 {
        let item = &pool[rng.below(pool.len())];
        let kind = types[rng.below(types.len())];
        let value = (kind == "rating" && i % 6 != 0).then(|| 0.5 + rng.unit() * 9.0);
        let at = if i % 10 == 9 {
            NOW_MS + 5_000 // a clock ahead of `now`
        } else {
            NOW_MS - (rng.below(240) as i64) * HOUR_MS / 3
        };
        h.push(item, kind, value, at);
    }
    out.push(("long", h));

    let mut h = History::default();
    h.push("gone-1", "purchase", None, NOW_MS - 10);
    h.push(&keys[5], "wishlist", None, NOW_MS - 5);
    h.push(&keys[6], "rating", None, NOW_MS - 4);
    out.push(("unknown-only", h));

    let mut h = History::default();
    h.push(&keys[8], "dislike", None, NOW_MS - 50);
    h.push(&keys[9], "dislike", None, NOW_MS - 40);
    out.push(("negative-only", h));

    let mut h = History::default();
    h.push(&keys[30], "view", None, NOW_MS - 500);
    h.push(&keys[30], "dislike", None, NOW_MS - 400);
    h.push(&keys[30], "view", None, NOW_MS - 300);
    h.push(&keys[31], "purchase", None, NOW_MS - 200);
    out.push(("zero-sum", h));

    let mut h = History::default();
    let same = NOW_MS - 7 * HOUR_MS;
    for (i, item) in [
        keys[100].as_str(),
        "gone-3",
        keys[40].as_str(),
        "gone-2",
        keys[2999].as_str(),
        keys[40].as_str(),
        keys[7].as_str(),
    ]
    .into_iter()
    .enumerate()
    {
        h.push(item, if i % 2 == 0 { "view" } else { "cart" }, None, same);
    }
    h.push(&keys[100], "view", None, same - 1);
    out.push(("equal-times", h));

    let mut h = History::default();
    h.push(&keys[60], "rating", Some(9.0), NOW_MS - 9 * HOUR_MS);
    h.push(&keys[61], "rating", Some(20.0), NOW_MS - 8 * HOUR_MS);
    h.push(&keys[62], "rating", Some(0.1), NOW_MS - 7 * HOUR_MS);
    h.push(&keys[63], "rating", Some(-30.0), NOW_MS - 6 * HOUR_MS);
    h.push(&keys[60], "impression", None, NOW_MS - 5 * HOUR_MS);
    h.push(&keys[64], "impression", None, NOW_MS - 49 * HOUR_MS);
    out.push(("ratings", h));

    out.push(("empty", History::default()));
    out
}

fn queries(top: Option<&str>) -> Vec<Query> {
    let q = |n: usize| Query {
        n,
        categories: Vec::new(),
        exclude: Vec::new(),
        include_seen: false,
        now_ms: NOW_MS,
    };
    let names = |c: &[&str]| c.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let mut exclude = names(&["sku-00010", "sku-00011", "not-an-item"]);
    exclude.extend(top.map(str::to_owned));
    vec![
        q(50),
        Query {
            categories: names(&["hats"]),
            ..q(50)
        },
        Query {
            categories: names(&["sale", "ünïcodé"]),
            exclude,
            ..q(50)
        },
        Query {
            categories: names(&["no-such"]),
            ..q(50)
        },
        Query {
            categories: names(&["no-such", "new"]),
            ..q(50)
        },
        Query {
            include_seen: true,
            ..q(50)
        },
        q(0),
        q(100_000),
    ]
}

/// This crate's results for every history and query on one bundle.
fn results(bundle: &Bundle, histories: &[(&str, History)]) -> Vec<Value> {
    histories
        .iter()
        .map(|(name, h)| {
            let top = bundle.recommend(
                h,
                &Query {
                    n: 1,
                    ..queries(None)[0].clone()
                },
            );
            let queries: Vec<Value> = queries(top.first().map(|s| s.item.as_str()))
                .iter()
                .map(|q| {
                    let ranked: Vec<Value> = bundle
                        .recommend(h, q)
                        .into_iter()
                        .map(|s| json!({"item": s.item, "row": s.row, "score": s.score}))
                        .collect();
                    json!({
                        "n": q.n,
                        "categories": q.categories,
                        "exclude": q.exclude,
                        "include_seen": q.include_seen,
                        "now_ms": q.now_ms,
                        "top": ranked,
                    })
                })
                .collect();
            json!({
                "history": name,
                "weights": h.weights(bundle, NOW_MS),
                "user_vector": bundle.user_vector(h, NOW_MS),
                "queries": queries,
            })
        })
        .collect()
}

/// Splits an encoded bundle into its header JSON and its sections (signature dropped).
fn split(bytes: &[u8]) -> (Value, Vec<u8>) {
    let h = u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize;
    let header = serde_json::from_slice(&bytes[12..12 + h]).unwrap();
    let at = (12 + h).div_ceil(4) * 4;
    (header, bytes[at..bytes.len() - 64].to_vec())
}

/// Magic, header length, header bytes, zero padding and sections, signed.
fn assemble(json: &[u8], sections: &[u8], key: &SigningKey) -> Vec<u8> {
    let mut out = b"BSPKBNDL".to_vec();
    out.extend_from_slice(&(json.len() as u32).to_le_bytes());
    out.extend_from_slice(json);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
    out.extend_from_slice(sections);
    signed(out, key)
}

fn signed(mut body: Vec<u8>, key: &SigningKey) -> Vec<u8> {
    let signature = key.sign(&body);
    body.extend_from_slice(&signature.to_bytes());
    body
}

/// Bundles the JavaScript decoder must accept or refuse exactly as `Bundle::verify` does.
fn verdict_cases(key: &SigningKey) -> Vec<(String, Vec<u8>)> {
    let mut small = small_parts();
    small.header.keys.truncate(20);
    small.header.item_categories.truncate(20);
    small.factors.truncate(20 * 6);
    let mut with_propensity = small.clone();
    with_propensity.header.propensity = true;
    with_propensity.propensity = (0..20).map(|i| 1.0 + i as f32 / 10.0).collect();

    let f32_bytes = encode(&small, Encoding::F32, key);
    let int8_bytes = encode(&with_propensity, Encoding::Int8, key);
    let (header, sections) = split(&f32_bytes);
    let (header8, sections8) = split(&int8_bytes);
    let d = 6;
    let n = 20;

    let mut cases: Vec<(String, Vec<u8>)> = vec![
        ("valid-f32".into(), f32_bytes.clone()),
        ("valid-int8-propensity".into(), int8_bytes.clone()),
        ("empty".into(), Vec::new()),
        ("too-short".into(), f32_bytes[..40].to_vec()),
        (
            "signature-cut".into(),
            f32_bytes[..f32_bytes.len() - 1].to_vec(),
        ),
    ];
    for at in [0, 7, 9, 30, f32_bytes.len() / 2, f32_bytes.len() - 70] {
        let mut b = f32_bytes.clone();
        b[at] ^= 1;
        cases.push((format!("flipped-byte-{at}"), b));
    }
    let last = f32_bytes.len() - 1;
    let mut b = f32_bytes.clone();
    b[last] ^= 0x80;
    cases.push(("flipped-signature-bit".into(), b));

    // Header edits, re-signed.
    let edit = |f: &dyn Fn(&mut Value)| {
        let mut h = header.clone();
        f(&mut h);
        assemble(&serde_json::to_vec(&h).unwrap(), &sections, key)
    };
    let text = serde_json::to_string(&header).unwrap();
    let raw = |s: String| assemble(s.as_bytes(), &sections, key);
    let edits: Vec<(&str, Vec<u8>)> = vec![
        ("format-2", edit(&|h| h["format"] = 2.into())),
        (
            "format-missing",
            edit(&|h| {
                h.as_object_mut().unwrap().remove("format");
            }),
        ),
        ("format-string", edit(&|h| h["format"] = "1".into())),
        ("format-float", edit(&|h| h["format"] = 1.0.into())),
        (
            "format-wraps-to-1",
            edit(&|h| h["format"] = (u32::MAX as u64 + 2).into()),
        ),
        ("header-array", raw("[1]".into())),
        ("header-null", raw("null".into())),
        ("unknown-field", edit(&|h| h["extra"] = 1.into())),
        (
            "missing-field",
            edit(&|h| {
                h.as_object_mut().unwrap().remove("alpha");
            }),
        ),
        (
            "recency-unknown-field",
            edit(&|h| h["recency"]["extra"] = 1.into()),
        ),
        (
            "recency-missing-floor",
            edit(&|h| {
                h["recency"].as_object_mut().unwrap().remove("floor");
            }),
        ),
        ("bad-encoding", edit(&|h| h["encoding"] = "f16".into())),
        (
            "bad-event-weight",
            edit(&|h| h["event_weights"]["view"] = "values".into()),
        ),
        (
            "null-event-weight",
            edit(&|h| h["event_weights"]["view"] = Value::Null),
        ),
        (
            "integer-event-weight",
            edit(&|h| h["event_weights"]["view"] = 3.into()),
        ),
        ("dim-float", edit(&|h| h["dim"] = 6.0.into())),
        ("dim-negative", edit(&|h| h["dim"] = (-6).into())),
        ("dim-7", edit(&|h| h["dim"] = 7.into())),
        ("alpha-string", edit(&|h| h["alpha"] = "2".into())),
        ("alpha-integer", edit(&|h| h["alpha"] = 2.into())),
        ("alpha-beyond-f32", edit(&|h| h["alpha"] = 1e39.into())),
        (
            "model-version-negative",
            edit(&|h| h["model_version"] = (-1).into()),
        ),
        (
            "model-version-float",
            edit(&|h| h["model_version"] = 7.5.into()),
        ),
        ("propensity-number", edit(&|h| h["propensity"] = 1.into())),
        ("created-at-number", edit(&|h| h["created_at"] = 5.into())),
        ("key-number", edit(&|h| h["keys"][3] = 3.into())),
        (
            "duplicate-key",
            edit(&|h| h["keys"][1] = h["keys"][0].clone()),
        ),
        (
            "unknown-category",
            edit(&|h| h["item_categories"][3] = json!([2])),
        ),
        (
            "category-float",
            edit(&|h| h["item_categories"][3] = json!([1.0])),
        ),
        (
            "category-negative",
            edit(&|h| h["item_categories"][3] = json!([-1])),
        ),
        (
            "item-categories-short",
            edit(&|h| {
                h["item_categories"].as_array_mut().unwrap().pop();
            }),
        ),
        (
            "repeated-category-name",
            edit(&|h| h["categories"] = json!(["odd", "odd"])),
        ),
        (
            "max-weight-huge",
            raw(text.replace("\"max_weight\":10.0", "\"max_weight\":1e400")),
        ),
        (
            "max-weight-exponent",
            raw(text.replace("\"max_weight\":10.0", "\"max_weight\":1E1")),
        ),
        ("trailing-garbage", raw(format!("{text} x"))),
        ("trailing-whitespace", raw(format!("{text} \n\t"))),
        ("leading-whitespace", raw(format!("\r\n {text}"))),
        ("trailing-comma", raw(text.replacen('}', ",}", 1))),
        (
            "duplicate-field-last-wins",
            raw(text.replacen('{', "{\"dim\":99,", 1)),
        ),
        (
            "lone-surrogate",
            raw(text.replace("2026-12-07T00:00:00Z", "2026\\ud800")),
        ),
        (
            "surrogate-pair",
            raw(text.replace("2026-12-07T00:00:00Z", "2026\\ud83d\\ude00")),
        ),
        (
            "control-character",
            raw(text.replace("2026-12-07T00:00:00Z", "2026\u{1}")),
        ),
        (
            "leading-zero",
            raw(text.replace("\"model_version\":1", "\"model_version\":01")),
        ),
        (
            "deep-127",
            raw(format!("{}{}", "[".repeat(127), "]".repeat(127))),
        ),
        (
            "deep-128",
            raw(format!("{}{}", "[".repeat(128), "]".repeat(128))),
        ),
        (
            "deep-in-field",
            edit(&|h| {
                let mut v = json!(1);
                for _ in 0..130 {
                    v = json!([v]);
                }
                h["extra"] = v;
            }),
        ),
    ];
    cases.extend(edits.into_iter().map(|(k, v)| (k.to_owned(), v)));

    let json_bytes = serde_json::to_vec(&header).unwrap();
    let mut bom = vec![0xEF, 0xBB, 0xBF];
    bom.extend_from_slice(&json_bytes);
    cases.push(("bom".into(), assemble(&bom, &sections, key)));
    let mut not_utf8 = json_bytes.clone();
    let at = not_utf8
        .windows(4)
        .position(|w| w == b"2026")
        .expect("the date");
    not_utf8[at] = 0xFF;
    cases.push(("not-utf8".into(), assemble(&not_utf8, &sections, key)));

    // Sections.
    let mut short = sections.clone();
    short.truncate(short.len() - 4);
    cases.push(("section-short".into(), assemble(&json_bytes, &short, key)));
    let mut long = sections.clone();
    long.extend_from_slice(&[0; 4]);
    cases.push(("section-long".into(), assemble(&json_bytes, &long, key)));
    let mut nan = sections.clone();
    nan[0..4].copy_from_slice(&f32::NAN.to_le_bytes());
    cases.push(("nan-gram".into(), assemble(&json_bytes, &nan, key)));
    let mut inf = sections.clone();
    let at = 4 * d * d + 4 * 5;
    inf[at..at + 4].copy_from_slice(&f32::INFINITY.to_le_bytes());
    cases.push(("inf-factor".into(), assemble(&json_bytes, &inf, key)));
    let json8 = serde_json::to_vec(&header8).unwrap();
    let mut inf = sections8.clone();
    let at = 4 * d * d + 4 * 2;
    inf[at..at + 4].copy_from_slice(&f32::INFINITY.to_le_bytes());
    cases.push(("inf-scale".into(), assemble(&json8, &inf, key)));
    let mut inf = sections8.clone();
    let at = inf.len() - 4;
    inf[at..].copy_from_slice(&f32::NEG_INFINITY.to_le_bytes());
    cases.push(("inf-propensity".into(), assemble(&json8, &inf, key)));
    let mut zero_scale = sections8.clone();
    let at = 4 * d * d + 4 * 2;
    zero_scale[at..at + 4].copy_from_slice(&0f32.to_le_bytes());
    cases.push(("zero-scale".into(), assemble(&json8, &zero_scale, key)));
    assert_eq!(sections8.len(), 4 * d * d + 4 * n + n * d + 4 * n);

    // Framing.
    let mut magic = f32_bytes[..f32_bytes.len() - 64].to_vec();
    magic[0] = b'X';
    cases.push(("wrong-magic".into(), signed(magic, key)));
    let mut long_header = f32_bytes[..f32_bytes.len() - 64].to_vec();
    long_header[8..12].copy_from_slice(&1_000_000u32.to_le_bytes());
    cases.push(("header-too-long".into(), signed(long_header, key)));
    let mut padded = b"BSPKBNDL".to_vec();
    let mut j = json_bytes.clone();
    if (12 + j.len()).is_multiple_of(4) {
        j.push(b' ');
    }
    padded.extend_from_slice(&(j.len() as u32).to_le_bytes());
    padded.extend_from_slice(&j);
    while !padded.len().is_multiple_of(4) {
        padded.push(0xAB);
    }
    padded.extend_from_slice(&sections);
    cases.push(("nonzero-padding".into(), signed(padded, key)));
    cases
}

fn verdict(bytes: &[u8], public: &[u8; 32]) -> Value {
    match Bundle::verify(bytes, public) {
        Ok(b) => json!({"verdict": "ok", "items": b.len()}),
        Err(BundleError::Malformed(m)) => json!({"verdict": "malformed", "message": m}),
        Err(BundleError::Format(f)) => json!({"verdict": "format", "format": f}),
        Err(BundleError::Signature) => json!({"verdict": "signature"}),
    }
}

fn write_fixtures(dir: &TempDir) {
    let key = SigningKey::from_bytes(&[0x5A; 32]);
    let public = key.verifying_key().to_bytes();
    let foreign = SigningKey::from_bytes(&[9; 32]).verifying_key().to_bytes();

    let parts = big_parts(3000, 16);
    let histories = histories(&parts.header.keys);
    let mut bundles = Vec::new();
    for (name, encoding) in [("f32", Encoding::F32), ("int8", Encoding::Int8)] {
        let bytes = encode(&parts, encoding, &key);
        let file = format!("bundle-{name}.bin");
        dir.write(&file, &bytes);
        let bundle = Bundle::verify(&bytes, &public).expect("a bundle verifies");
        bundles.push(json!({
            "name": name,
            "file": file,
            "encoding": name,
            "items": bundle.len(),
            "dim": bundle.header().dim,
            "cases": results(&bundle, &histories),
        }));
    }

    // The crate's own example (its unit tests' bundle), and a variant with the weighting of
    // `history_weights_follow_the_servers_weighting`.
    let (example, example_key) = bespoke_client::example_bundle();
    dir.write("example.bin", &example);
    let small_key = SigningKey::from_bytes(&[7; 32]);
    assert_eq!(small_key.verifying_key().to_bytes(), example_key);
    let mut weighting = small_parts();
    weighting.header.recency = Recency {
        half_life: 1.0,
        floor: 0.0,
    };
    weighting.header.recent_boost = 1.0;
    weighting.header.recent_half_life_ms = 1000.0;
    weighting.header.propensity = true;
    weighting.propensity = vec![1.0; 40];
    weighting.propensity[4] = 3.0;
    dir.write(
        "weighting.bin",
        &encode(&weighting, Encoding::F32, &small_key),
    );

    let verdicts: Vec<Value> = verdict_cases(&small_key)
        .into_iter()
        .map(|(name, bytes)| {
            let file = format!("verdict-{name}.bin");
            dir.write(&file, &bytes);
            let mut v = verdict(&bytes, &example_key);
            v["name"] = name.into();
            v["file"] = file.into();
            v
        })
        .collect();

    let histories: Vec<Value> = histories
        .iter()
        .map(|(name, h)| json!({"name": name, "json": h.to_json()}))
        .collect();
    // `Recency::factor` (f32 arithmetic, libm's exp2f) over ages, half-lives and floors.
    let recency: Vec<Value> = [0.7f32, 1.0, 2.5, 4.0, 10.0, 33.3]
        .into_iter()
        .flat_map(|half_life| {
            [0.0f32, 0.15, 0.5, 0.99, -0.5, 1.0]
                .into_iter()
                .map(move |floor| (half_life, floor))
        })
        .map(|(half_life, floor)| {
            let r = Recency { half_life, floor };
            let factors: Vec<f32> = (0..=64).map(|age| r.factor(age)).collect();
            json!({"half_life": half_life, "floor": floor, "factors": factors})
        })
        .collect();
    let fixtures = json!({
        "recency": recency,
        "now_ms": NOW_MS,
        "public_key": hex(&public),
        "foreign_key": hex(&foreign),
        "example": {"file": "example.bin", "public_key": hex(&example_key)},
        "weighting": {"file": "weighting.bin", "public_key": hex(&example_key)},
        "histories": histories,
        "bundles": bundles,
        "verdicts": verdicts,
    });
    dir.write(
        "fixtures.json",
        serde_json::to_string_pretty(&fixtures).unwrap().as_bytes(),
    );
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the repository root")
}

fn node_major() -> u32 {
    let out = match Command::new("node").arg("--version").output() {
        Ok(out) => out,
        Err(e) if e.kind() == io::ErrorKind::NotFound => panic!(
            "Node.js 20+ is needed to test the JavaScript client (clients/js): `node` is not on PATH"
        ),
        Err(e) => panic!("Node.js 20+ is needed to test clients/js; running `node` failed: {e}"),
    };
    let version = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    version
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or_else(|| panic!("Node.js 20+ is needed; `node --version` said {version:?}"))
}

#[test]
fn the_javascript_client_agrees_with_the_rust_crate() {
    let major = node_major();
    assert!(
        major >= 20,
        "Node.js 20+ is needed to test clients/js (found major version {major})"
    );
    let dir = TempDir::new();
    write_fixtures(&dir);
    let root = repo_root();
    let out = Command::new("node")
        .args(["--test", "--test-reporter=spec", "clients/js/test/"])
        .env("BESPOKE_JS_FIXTURES", &dir.0)
        .current_dir(&root)
        .output()
        .expect("run node --test");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "node --test clients/js/test/ failed ({}):\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}",
        out.status
    );
    println!("{stdout}");
}
