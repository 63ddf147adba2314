//! `bespoke bench device`: ranking on the device (`bespoke-client`, and the JavaScript module
//! under Node side by side when Node.js is on the PATH) over a synthetic bundle: per-request
//! latency of `recommend` (weighting, the exact fold-in, scoring every item, top n) for
//! rotating histories, in the f32 and int8 encodings, and the bundle's verification time.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use bespoke_algo::Rng;
use bespoke_algo::ann::synthetic::{self, Shape};
use bespoke_client::{
    Bundle, BundleParts, Encoding, EventWeight, Header, History, Query, Recency, encode,
};
use clap::Args;
use serde_json::{Value, json};

/// Arguments of `bespoke bench device`.
#[derive(Debug, Args)]
pub(crate) struct DeviceArgs {
    /// Items in the bundle.
    #[arg(long, default_value_t = 20_000)]
    items: usize,
    /// Factor dimension.
    #[arg(long, default_value_t = 64)]
    dim: usize,
    /// Events in each history (over distinct items where possible).
    #[arg(long, default_value_t = 50)]
    history: usize,
    /// Requests per encoding, each with another history.
    #[arg(long, default_value_t = 1_000)]
    requests: usize,
    /// Items per answer.
    #[arg(long, default_value_t = 10)]
    n: usize,
    /// The JavaScript module to run under Node side by side.
    #[arg(long, default_value = "clients/js/bespoke-device.mjs")]
    js: PathBuf,
    /// Leave Node out.
    #[arg(long)]
    no_node: bool,
    /// Seed of the factors and the histories.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// The Node side: reads the files this benchmark writes and prints one JSON object.
const NODE_SCRIPT: &str = include_str!("bench_device.mjs");

pub(crate) fn run(args: &DeviceArgs) -> anyhow::Result<Value> {
    if args.items == 0 || args.dim == 0 || args.requests == 0 || args.n == 0 {
        bail!("--items, --dim, --requests and --n must be at least 1");
    }
    let key = ed25519_dalek::SigningKey::from_bytes(&[42u8; 32]);
    let public = key.verifying_key().to_bytes();
    let parts = parts(args);
    let now_ms = 1_800_000_000_000;
    let histories = histories(args, now_ms);
    let mut report = json!({
        "bench": "device",
        "items": args.items,
        "dim": args.dim,
        "history_events": args.history,
        "requests": args.requests,
        "n": args.n,
        "threads": 1,
    });
    let dir = tempfile::tempdir()?;
    for encoding in [Encoding::F32, Encoding::Int8] {
        let name = match encoding {
            Encoding::F32 => "f32",
            Encoding::Int8 => "int8",
        };
        let bytes = encode(&parts, encoding, &key);
        let t = Instant::now();
        let bundle = Bundle::verify(&bytes, &public)?;
        let verify_ms = t.elapsed().as_secs_f64() * 1e3;
        let mut times = Vec::with_capacity(args.requests);
        let mut checksum = 0.0;
        for h in &histories {
            let query = Query {
                n: args.n,
                now_ms,
                ..Query::default()
            };
            let t = Instant::now();
            let top = bundle.recommend(h, &query);
            times.push(t.elapsed().as_secs_f64() * 1e3);
            checksum += top.first().map_or(0.0, |s| s.score);
        }
        report[name] = json!({
            "bundle_bytes": bytes.len(),
            "verify_ms": verify_ms,
            "recommend_ms": crate::bench_ann::latency(&mut times),
            "checksum": checksum,
        });
        std::fs::write(dir.path().join(format!("{name}.bin")), &bytes)?;
    }
    report["node"] = if args.no_node {
        json!({ "skipped": "--no-node" })
    } else {
        node(args, dir.path(), &public, &histories, now_ms)?
    };
    for name in ["f32", "int8"] {
        let rust = report[name]["recommend_ms"]["p50"].as_f64();
        let js = report["node"][name]["recommend_ms"]["p50"].as_f64();
        if let (Some(r), Some(j)) = (rust, js) {
            report["node"][name]["p50_ratio_to_rust"] = json!(j / r);
        }
    }
    Ok(report)
}

/// The same histories and bundles through the JavaScript module under Node: its timings, and
/// whether its top-n equals the Rust crate's (checksums of the first scores).
fn node(
    args: &DeviceArgs,
    dir: &Path,
    public: &[u8; 32],
    histories: &[History],
    now_ms: i64,
) -> anyhow::Result<Value> {
    let module = std::fs::canonicalize(&args.js).with_context(|| {
        format!(
            "{}: the JavaScript module (run from the repository root, give --js, or --no-node)",
            args.js.display()
        )
    })?;
    let script = dir.join("bench.mjs");
    std::fs::write(&script, NODE_SCRIPT)?;
    let spec = json!({
        "module": module,
        "public_key": public.iter().map(|b| format!("{b:02x}")).collect::<String>(),
        "histories": histories.iter().map(History::to_json).collect::<Vec<_>>(),
        "n": args.n,
        "now_ms": now_ms,
    });
    std::fs::write(dir.join("spec.json"), serde_json::to_vec(&spec)?)?;
    let out = std::process::Command::new("node")
        .arg(&script)
        .arg(dir)
        .output()
        .context("running node (Node.js 20+ must be on the PATH, or pass --no-node)")?;
    if !out.status.success() {
        bail!(
            "node failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut got: Value = serde_json::from_slice(&out.stdout).context("node's JSON")?;
    if let Some(v) = std::process::Command::new("node")
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
    {
        got["version"] = json!(String::from_utf8_lossy(&v.stdout).trim());
    }
    Ok(got)
}

/// Trained-like factors with 20 categories, the iALS Gram matrix and recency and boost on.
fn parts(args: &DeviceArgs) -> BundleParts {
    let items = synthetic::items(Shape::Trained, args.items, args.dim, args.seed);
    let d = args.dim;
    let mut gram = items.gram();
    for k in 0..d {
        gram[k * d + k] += 0.1;
    }
    BundleParts {
        header: Header {
            format: bespoke_client::bundle::FORMAT,
            model_version: 1,
            created_at: "2026-12-07T00:00:00Z".into(),
            dim: d as u32,
            encoding: Encoding::F32,
            alpha: 10.0,
            event_weights: [
                ("view".to_owned(), EventWeight::Fixed(1.0)),
                ("purchase".to_owned(), EventWeight::Fixed(5.0)),
            ]
            .into_iter()
            .collect(),
            max_weight: 100.0,
            recent_boost: 0.5,
            recent_half_life_ms: 7.0 * 86_400_000.0,
            recency: Recency {
                half_life: 20.0,
                floor: 0.3,
            },
            propensity: false,
            keys: (0..args.items).map(|i| format!("item-{i}")).collect(),
            categories: (0..20).map(|c| format!("category-{c}")).collect(),
            item_categories: (0..args.items).map(|i| vec![(i % 20) as u32]).collect(),
        },
        gram_reg: gram,
        factors: items.as_slice().to_vec(),
        propensity: Vec::new(),
    }
}

fn histories(args: &DeviceArgs, now_ms: i64) -> Vec<History> {
    let mut rng = Rng::seed_from_u64(args.seed ^ 0x5eed);
    (0..args.requests)
        .map(|_| {
            let mut h = History::default();
            for e in 0..args.history {
                let item = rng.below(args.items as u64);
                let kind = if rng.below(5) == 0 {
                    "purchase"
                } else {
                    "view"
                };
                h.push(
                    &format!("item-{item}"),
                    kind,
                    None,
                    now_ms - (args.history - e) as i64 * 3_600_000,
                );
            }
            h
        })
        .collect()
}
