//! `bespoke demo`: a realistic synthetic shop, loaded into a store and served.
//!
//! The shop has named items in categories with descriptions and prices, users with latent tastes
//! (favourite categories plus a taste vector), and a purchase funnel over 90 days: views, clicks,
//! add-to-carts, purchases, likes, ratings, and negative feedback (dislikes, skips) on items that
//! do not suit the user. Popularity is Zipf-like within each category, and a few recently
//! launched items sell fast, so "trending" differs from "popular of all time".
//!
//! Everything is drawn from one seeded generator: for a given seed and anchor time the data set
//! is identical, event for event.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use bespoke_algo::{ModelKind, Rng};
use bespoke_server::auth::Scope;
use bespoke_server::engine::{PopularQuery, PopularSort};
use bespoke_server::{Engine, Settings};
use bespoke_store::{Consent, ConsentUpdate, EventBatch, ItemUpsert, NewEvent, Store, UserUpsert};
use clap::Args;
use serde_json::{Map, Value, json};

/// Dimension of the latent taste vectors.
const DIM: usize = 8;
const DAY_MS: i64 = 86_400_000;
/// Days of history.
const HISTORY_DAYS: i64 = 90;

#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// Random seed; the same seed gives the same shop.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Number of users.
    #[arg(long, default_value_t = 10_000)]
    users: usize,
    /// Number of items.
    #[arg(long, default_value_t = 5_000)]
    items: usize,
    /// Number of events.
    #[arg(long, default_value_t = 500_000)]
    events: usize,
    /// End of the generated history, RFC 3339; the start of the current hour when absent.
    #[arg(long)]
    anchor: Option<String>,
    /// Address to serve on (overrides server.bind).
    #[arg(long)]
    bind: Option<std::net::SocketAddr>,
    /// Replace the data in a --data-dir that already holds some (the default demo directory,
    /// ./bespoke-demo, is always replaced).
    #[arg(long)]
    reset: bool,
    /// Load the data and exit without serving.
    #[arg(long)]
    no_serve: bool,
    /// Do not train models (recommendations then fall back to popularity).
    #[arg(long)]
    no_train: bool,
}

struct Category {
    name: &'static str,
    nouns: Vec<&'static str>,
    adjectives: Vec<&'static str>,
    features: Vec<&'static str>,
    base_price: f64,
}

/// The vocabulary of the generated catalog, kept as data rather than code.
const CATALOG: &str = include_str!("demo_catalog.txt");

fn categories() -> Vec<Category> {
    CATALOG
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|line| {
            let f: Vec<&str> = line.split('|').map(str::trim).collect();
            let list = |i: usize| f[i].split(';').map(str::trim).collect::<Vec<_>>();
            Category {
                name: f[0],
                base_price: f[1].parse().expect("demo_catalog.txt: a price"),
                nouns: list(2),
                adjectives: list(3),
                features: list(4),
            }
        })
        .collect()
}

const BRANDS: &[&str] = &[
    "Northwind",
    "Aurora",
    "Kestrel",
    "Blue Fern",
    "Cobalt",
    "Juniper",
    "Halcyon",
    "Lumen",
    "Maple & Co",
    "Orbit",
    "Pebble",
    "Quill",
    "Riverstone",
    "Solace",
    "Tundra",
    "Umbra",
    "Verity",
    "Willow",
    "Zephyr",
    "Atlas",
    "Brightside",
    "Cinder",
    "Driftwood",
    "Ember",
    "Fable",
    "Granite",
    "Harbor",
    "Ironbark",
    "Jasper",
    "Kinfolk",
];

const COUNTRIES: &[&str] = &["DE", "FR", "GB", "ES", "IT", "NL", "SE", "PL", "US", "CA"];
const AGE_BANDS: &[&str] = &["18-24", "25-34", "35-44", "45-54", "55-64", "65+"];

fn pick<'a>(rng: &mut Rng, xs: &'a [&'a str]) -> &'a str {
    xs[rng.below(xs.len() as u64) as usize]
}

fn cumulative(weights: impl Iterator<Item = f64>) -> Vec<f64> {
    let mut acc = 0.0;
    weights
        .map(|w| {
            acc += w;
            acc
        })
        .collect()
}

struct ShopItem {
    vector: [f32; DIM],
    /// Before this time the item did not exist.
    launch: i64,
}

struct ShopUser {
    taste: Vec<f64>,
    vector: [f32; DIM],
    budget: usize,
}

/// The generated shop.
pub(crate) struct Shop {
    pub(crate) items: Vec<ItemUpsert>,
    pub(crate) users: Vec<UserUpsert>,
    pub(crate) events: Vec<NewEvent>,
}

fn item_key(i: usize) -> String {
    format!("sku-{i:05}")
}

fn user_key(u: usize) -> String {
    format!("user-{u:05}")
}

fn unit_vector(rng: &mut Rng) -> [f32; DIM] {
    let mut v = [0f32; DIM];
    for x in &mut v {
        *x = rng.normal() as f32;
    }
    v
}

/// Generates the shop. `anchor` is the end of the history (Unix ms).
pub(crate) fn generate(
    seed: u64,
    n_users: usize,
    n_items: usize,
    n_events: usize,
    anchor: i64,
) -> Shop {
    let mut rng = Rng::seed_from_u64(seed);
    let start = anchor - HISTORY_DAYS * DAY_MS;

    // Items: spread over the categories, a Zipf popularity within each, a few recent launches.
    let mut shop_items = Vec::with_capacity(n_items);
    let mut items = Vec::with_capacity(n_items);
    let catalog = categories();
    let mut by_category: Vec<Vec<usize>> = vec![Vec::new(); catalog.len()];
    for i in 0..n_items {
        let c = i % catalog.len();
        let cat = &catalog[c];
        let brand = pick(&mut rng, BRANDS);
        let adjective = pick(&mut rng, &cat.adjectives);
        let noun = pick(&mut rng, &cat.nouns);
        let series = format!(
            "{}-{}",
            (b'A' + rng.below(26) as u8) as char,
            100 + rng.below(900)
        );
        let title = format!("{brand} {adjective} {noun} {series}");
        let feature = pick(&mut rng, &cat.features);
        let other = pick(&mut rng, &cat.adjectives).to_lowercase();
        let description = format!(
            "The {title} is a {other} {} by {brand}, with {feature}. Part of our {} range.",
            noun.to_lowercase(),
            cat.name.to_lowercase()
        );
        let price = (cat.base_price * (0.45 * rng.normal()).exp() * 100.0).round() / 100.0;
        let recent = rng.f64() < 0.05;
        let launch = if recent {
            anchor - (rng.f64() * 14.0 * DAY_MS as f64) as i64
        } else {
            start - DAY_MS
        };
        let mut text = std::collections::BTreeMap::new();
        text.insert("title".to_owned(), title);
        text.insert("description".to_owned(), description);
        let mut numeric = std::collections::BTreeMap::new();
        numeric.insert("price".to_owned(), price);
        let mut attributes = Map::new();
        attributes.insert("brand".into(), Value::from(brand));
        if recent {
            attributes.insert("new_arrival".into(), Value::from(true));
        }
        items.push(ItemUpsert {
            key: item_key(i),
            categories: vec![cat.name.to_owned()],
            text,
            numeric,
            attributes,
            embeddings: Default::default(),
            available: rng.f64() > 0.01,
        });
        shop_items.push(ShopItem {
            vector: unit_vector(&mut rng),
            launch,
        });
        by_category[c].push(i);
    }
    // Popularity within a category: Zipf over a random order; new arrivals get a boost.
    let category_cdf: Vec<Vec<f64>> = by_category
        .iter_mut()
        .map(|members| {
            for k in (1..members.len()).rev() {
                members.swap(k, rng.below(k as u64 + 1) as usize);
            }
            cumulative(members.iter().enumerate().map(|(rank, &i)| {
                let boost = if shop_items[i].launch > start {
                    8.0
                } else {
                    1.0
                };
                boost / (rank as f64 + 2.0).powf(0.9)
            }))
        })
        .collect();
    // Category appeal overall, also skewed.
    let category_weight: Vec<f64> = (0..catalog.len())
        .map(|c| 1.0 / (c as f64 + 3.0).powf(0.6))
        .collect();

    // Users: three favourite categories, a taste vector, a long-tailed activity level.
    let mut activity = Vec::with_capacity(n_users);
    let mut shop_users = Vec::with_capacity(n_users);
    let mut users = Vec::with_capacity(n_users);
    for u in 0..n_users {
        let mut taste = category_weight
            .iter()
            .map(|w| 0.08 * w)
            .collect::<Vec<f64>>();
        for share in [0.5, 0.3, 0.15] {
            let c = rng.weighted(&cumulative(category_weight.iter().copied()));
            taste[c] += share;
        }
        activity.push((1.1 * rng.normal()).exp());
        shop_users.push(ShopUser {
            taste: cumulative(taste.into_iter()),
            vector: unit_vector(&mut rng),
            budget: 0,
        });
        let mut attributes = Map::new();
        attributes.insert("country".into(), json!(pick(&mut rng, COUNTRIES)));
        attributes.insert("age_band".into(), json!(pick(&mut rng, AGE_BANDS)));
        attributes.insert("member_since".into(), json!(2015 + rng.below(11)));
        users.push(UserUpsert {
            key: user_key(u),
            attributes,
            consent: ConsentUpdate {
                personalization: Some(rng.f64() > 0.02),
                training: None,
                // One in twenty objects to marketing (no draw: the shop stays as it was).
                marketing: Some(u % 20 != 7),
            },
            default_consent: Consent::ALL,
            restore_times: None,
        });
    }
    // Each user's share of the events, exactly n_events in total.
    let total: f64 = activity.iter().sum();
    let mut assigned = 0;
    for (u, a) in activity.iter().enumerate() {
        let b = ((n_events as f64 * a / total).floor() as usize).max(1);
        shop_users[u].budget = b;
        assigned += b;
    }
    let mut u = 0;
    while assigned < n_events {
        shop_users[u % n_users].budget += 1;
        assigned += 1;
        u += 1;
    }
    while assigned > n_events {
        let i = u % n_users;
        if shop_users[i].budget > 1 {
            shop_users[i].budget -= 1;
            assigned -= 1;
        }
        u += 1;
    }

    let mut events = Vec::with_capacity(n_events);
    let scale = 1.0 / (DIM as f32).sqrt();
    for (u, user) in shop_users.iter().enumerate() {
        let key = user_key(u);
        let mut produced = Vec::with_capacity(user.budget + 8);
        while produced.len() < user.budget {
            // A session: one category, a handful of items, minutes apart.
            let c = rng.weighted(&user.taste);
            let mut t = start + (rng.f64() * (anchor - start - 3_600_000) as f64) as i64;
            let touches = 1 + rng.below(6) as usize;
            for _ in 0..touches {
                let mut weights = [0f64; 6];
                let mut candidates = [0usize; 6];
                let mut k = 0;
                for _ in 0..12 {
                    let i = by_category[c][rng.weighted(&category_cdf[c])];
                    if shop_items[i].launch <= t && !candidates[..k].contains(&i) {
                        candidates[k] = i;
                        k += 1;
                        if k == candidates.len() {
                            break;
                        }
                    }
                }
                if k == 0 {
                    continue;
                }
                for j in 0..k {
                    let v = &shop_items[candidates[j]].vector;
                    let affinity: f32 =
                        v.iter().zip(&user.vector).map(|(a, b)| a * b).sum::<f32>() * scale;
                    weights[j] =
                        (2.0 * affinity as f64).exp() + if j > 0 { weights[j - 1] } else { 0.0 };
                }
                let chosen = candidates[rng.weighted(&weights[..k])];
                let v = &shop_items[chosen].vector;
                let affinity = v.iter().zip(&user.vector).map(|(a, b)| a * b).sum::<f32>() * scale;
                let ik = item_key(chosen);
                let mut push = |kind: &str, value: Option<f64>, at: i64| {
                    produced.push(NewEvent {
                        event_id: None,
                        user: key.clone(),
                        item: ik.clone(),
                        kind: kind.to_owned(),
                        value,
                        timestamp: Some(at.min(anchor)),
                        context: None,
                    });
                };
                push("view", None, t);
                let keen = 1.0 / (1.0 + (-2.5 * affinity as f64).exp());
                if affinity < -0.6 && rng.f64() < 0.25 {
                    push(
                        if rng.f64() < 0.5 { "dislike" } else { "skip" },
                        None,
                        t + 4_000,
                    );
                } else if rng.f64() < 0.2 + 0.4 * keen {
                    push("click", None, t + 9_000);
                    if rng.f64() < 0.15 + 0.35 * keen {
                        push("add_to_cart", None, t + 40_000);
                        if rng.f64() < 0.55 {
                            push("purchase", None, t + 120_000);
                            if rng.f64() < 0.15 {
                                let stars = (3.0 + 2.5 * affinity as f64 + 0.7 * rng.normal())
                                    .round()
                                    .clamp(1.0, 5.0);
                                push("rating", Some(stars), t + 3 * DAY_MS);
                            }
                        }
                    }
                    if rng.f64() < 0.06 * keen {
                        push("like", None, t + 15_000);
                    }
                }
                t += 30_000 + rng.below(240_000) as i64;
            }
        }
        produced.truncate(user.budget);
        events.extend(produced);
    }
    Shop {
        items,
        users,
        events,
    }
}

fn start_of_hour(ms: i64) -> i64 {
    ms - ms.rem_euclid(3_600_000)
}

pub(crate) fn run(
    mut settings: Settings,
    args: &DemoArgs,
    data_dir_given: bool,
) -> anyhow::Result<()> {
    if args.users == 0 || args.items == 0 {
        bail!("--users and --items must be at least 1");
    }
    if !data_dir_given {
        settings.store.data_dir = PathBuf::from("./bespoke-demo");
    }
    if let Some(bind) = args.bind {
        settings.server.bind = bind;
    }
    let anchor = match &args.anchor {
        Some(a) => bespoke_server::time::parse_rfc3339(a)
            .map_err(|why| anyhow::anyhow!("--anchor {why}"))?,
        None => start_of_hour(bespoke_server::engine::now_ms()),
    };
    let dir = settings.store.data_dir.clone();
    let db = dir.join("bespoke.db");
    if db.exists() {
        if data_dir_given && !args.reset {
            bail!(
                "{} already holds a store; pass --reset to replace it with the demo shop",
                dir.display()
            );
        }
        for suffix in ["", "-wal", "-shm"] {
            let mut p = db.clone().into_os_string();
            p.push(suffix);
            match std::fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(e)
                        .with_context(|| format!("removing {}", PathBuf::from(p).display()));
                }
            }
        }
    }

    let started = Instant::now();
    let shop = generate(args.seed, args.users, args.items, args.events, anchor);
    let generated = started.elapsed();
    let store = bespoke_server::open_store(&settings)
        .with_context(|| format!("opening the store in {}", dir.display()))?;
    load(&*store, shop)?;
    let engine = Arc::new(Engine::open(store, Arc::new(settings.clone()))?);
    let counts = engine.counts();
    eprintln!(
        "demo shop: {} users, {} items in {} categories, {} events (seed {}); generated in {:.1} s, stored and indexed in {:.1} s, in {}",
        counts.users,
        counts.items,
        categories().len(),
        counts.events,
        args.seed,
        generated.as_secs_f64(),
        (started.elapsed() - generated).as_secs_f64(),
        dir.display()
    );
    if !args.no_train {
        train(&engine)?;
    }
    let sample_user = user_key(42.min(args.users - 1));
    let sample = engine.recommend(
        &sample_user,
        &bespoke_server::engine::RecommendQuery {
            n: 3,
            ..Default::default()
        },
    );
    eprintln!("\n{sample_user} ({}), for example:", sample.model);
    for r in &sample.items {
        let why = r.reasons.first().map_or("", |x| x.message());
        eprintln!("  {:<10} {:>8.3}  {why}", r.item, r.score);
    }
    // The business rules (docs/rules.md) on the same user: a filter, then a promotion.
    let show = |title: &str, q: bespoke_server::engine::RecommendQuery| {
        if let Err(p) = engine.check_rules(&q) {
            eprintln!("  ({title}: {}: {})", p.field, p.message);
            return;
        }
        let recs = engine.recommend(&sample_user, &q);
        eprintln!("\n{sample_user}, {title}:");
        for r in &recs.items {
            let why = (r.reasons.iter().rev())
                .find(|x| x.kind() == "rule")
                .or(r.reasons.first())
                .map_or("", |x| x.message());
            eprintln!("  {:<10} {:>8.3}  {why}", r.item, r.score);
        }
    };
    show(
        "filtered with price < 30",
        bespoke_server::engine::RecommendQuery {
            n: 3,
            filter: Some("price < 30".into()),
            ..Default::default()
        },
    );
    show(
        "with slot 2 promoted to a new arrival",
        bespoke_server::engine::RecommendQuery {
            n: 3,
            promote: vec![bespoke_server::rules::spec::PromoteSpec {
                slot: 2,
                when: "new_arrival = true".into(),
            }],
            ..Default::default()
        },
    );
    // An audience (docs/audiences.md): the users most drawn to the sample's first item.
    if let Some(first) = sample.items.first() {
        let q = bespoke_server::engine::AudienceQuery {
            items: vec![first.item.clone()],
            n: 3,
            ..Default::default()
        };
        match engine.audience(&q) {
            Ok(a) => {
                eprintln!(
                    "
the audience for {} ({} users scored, {} objected to marketing):",
                    first.item, a.scored_users, a.excluded.marketing
                );
                for u in &a.users {
                    eprintln!("  {:<10} {:>8.3}", u.user, u.score);
                }
            }
            Err(e) => eprintln!(
                "
(no audience: {e})"
            ),
        }
    }
    if let Err(e) = demo_experiment(&engine, args.users, args.seed) {
        eprintln!("\n(no experiment: {e})");
    }
    if args.no_serve {
        return Ok(());
    }
    let top = engine.popular(&PopularQuery {
        n: 1,
        categories: Vec::new(),
        window: None,
        sort: PopularSort::Count,
    });
    let item = top.first().map_or_else(|| item_key(0), |r| r.item.clone());
    let category = engine
        .get_item(&item)?
        .and_then(|i| i.categories.first().cloned())
        .unwrap_or_else(|| categories()[0].name.to_owned());
    // A fresh admin key for each demo run, so that the curls below work as printed.
    let (key, _) = engine
        .access()
        .create_key("cli", "demo", &[Scope::Admin], None)?;
    let runtime = crate::runtime()?;
    runtime.block_on(async move {
        let server = bespoke_server::start_with_engine(engine).await?;
        let base = format!("http://{}", server.addr());
        let cat = category.replace(' ', "%20").replace('\'', "%27");
        println!("\nBespoke is serving the demo shop on {base}.");
        println!("Demo API key (admin scope): {key}");
        println!("Dashboard: {base}/dashboard (log in with the key above)\nTry:\n");
        let auth = format!("-H 'Authorization: Bearer {key}'");
        println!("  curl -s {auth} '{base}/v1/users/{sample_user}/recommendations?n=5'");
        println!("  curl -s {auth} '{base}/v1/items/{item}/similar?n=5'");
        println!("  curl -s {auth} '{base}/v1/popular?n=5&category={cat}&window=7d'");
        println!(
            "  curl -s {auth} -H 'Content-Type: application/json' '{base}/v1/audiences/query' -d '{{\"items\": [\"{item}\"], \"n\": 5}}'"
        );
        println!("  curl -s {auth} '{base}/v1/reports/fairness?k=10'");
        println!("  curl -s {auth} '{base}/v1/experiments/{DEMO_EXPERIMENT}/report'");
        println!(
            "  curl -s -G {auth} '{base}/v1/users/{sample_user}/recommendations' --data-urlencode 'filter=price < 30' --data-urlencode 'promote=[{{\"slot\": 2, \"if\": \"new_arrival = true\"}}]'"
        );
        println!(
            "  curl -s {auth} -H 'Content-Type: application/json' '{base}/v1/loops/home-banner/decisions' \\\n      -d '{{\"context\": {{\"device\": \"mobile\"}}, \"actions\": [{{\"id\": \"sale\", \"features\": {{\"kind\": \"discount\"}}}}, {{\"id\": \"new-in\", \"features\": {{\"kind\": \"novelty\"}}}}]}}'"
        );
        println!("  BESPOKE_URL={base} BESPOKE_KEY={key} python3 examples/tone.py   # decisions: learning a message's tone");
        println!("\nPress Ctrl-C to stop.");
        crate::serve_until_signal(server).await
    })
}

/// The experiment the demo leaves running.
const DEMO_EXPERIMENT: &str = "home-diversity";

/// Starts an experiment (the diversity re-ranker against the plain ranking on the home
/// page's recommendations), serves a simulated hour of visits through it, and prints the
/// report. The visitors are simulated: a user clicks a shown item with probability 0.3 when
/// it is in a category they bought or viewed before and 0.05 otherwise, and buys a clicked
/// one with probability 0.2. The experiment keeps running on the server.
fn demo_experiment(engine: &Engine, users: usize, seed: u64) -> anyhow::Result<()> {
    use bespoke_server::engine::{ExperimentRoute, ExperimentSpec, RecommendQuery};
    let spec: ExperimentSpec = serde_json::from_value(json!({
        "description": "Diversity (λ = 0.3) against the plain ranking on the home page",
        "variants": [
            { "name": "control" },
            { "name": "diverse", "config": { "diversity": 0.3 } }
        ],
        "metrics": [
            { "kind": "conversion", "name": "buyers", "event": "purchase" },
            { "kind": "count", "name": "clicks", "event": "click" },
            { "kind": "ratio", "name": "ctr", "numerator": "click", "denominator": "impression" }
        ]
    }))?;
    engine.put_experiment(DEMO_EXPERIMENT, spec)?;
    engine.start_experiment(DEMO_EXPERIMENT)?;
    let mut item_categories = std::collections::HashMap::new();
    let mut after = None;
    loop {
        let page = engine.store().scan_items(after, 10_000)?;
        let Some(last) = page.last() else { break };
        after = Some(last.idx);
        for it in page {
            item_categories.insert(it.key, it.categories);
        }
    }
    let mut rng = Rng::seed_from_u64(seed ^ 0x5eed_e4be);
    let visitors = users.min(3_000);
    let mut events = Vec::new();
    for u in 0..visitors {
        let key = user_key(u);
        let liked: std::collections::HashSet<&String> = engine
            .user_events(&key, None, 100)?
            .map(|p| p.items)
            .unwrap_or_default()
            .iter()
            .filter_map(|e| item_categories.get(&e.item))
            .flatten()
            .collect::<Vec<_>>()
            .into_iter()
            .collect();
        let mut q = RecommendQuery {
            n: 10,
            ..Default::default()
        };
        engine.assign_experiments(ExperimentRoute::Recommendations, &key, &mut q);
        let recs = engine.recommend(&key, &q);
        // After the exposure the assignment recorded: the report counts events from there.
        let now = bespoke_server::engine::now_ms() + 1;
        for (pos, r) in recs.items.iter().enumerate() {
            let at = now + pos as i64;
            let mut event = |kind: &str| {
                let mut e = NewEvent::new(&key, &r.item, kind);
                e.timestamp = Some(at);
                events.push(e);
            };
            event("impression");
            let taste = item_categories
                .get(&r.item)
                .is_some_and(|cs| cs.iter().any(|c| liked.contains(c)));
            if rng.f64() < if taste { 0.3 } else { 0.05 } {
                event("click");
                if rng.f64() < 0.2 {
                    event("purchase");
                }
            }
        }
    }
    engine.ingest(events)?;
    let report = engine.experiment_report(DEMO_EXPERIMENT)?;
    eprintln!(
        "\nexperiment {DEMO_EXPERIMENT:?} (running; an hour of {visitors} simulated visits):"
    );
    for line in crate::experiment::table(&report).lines() {
        eprintln!("  {line}");
    }
    Ok(())
}

/// Trains iALS and item-kNN on the shop with a progress bar, and prints the held-out metrics.
fn train(engine: &Engine) -> anyhow::Result<()> {
    let bar = indicatif::ProgressBar::new(0).with_style(
        indicatif::ProgressStyle::with_template("{msg:40} {bar:30} {pos}/{len}")
            .expect("valid template"),
    );
    let outcome = engine.train(|p| match p {
        bespoke_server::models::Progress::Stage(stage) => {
            bar.set_length(0);
            bar.set_message(stage.to_owned());
        }
        bespoke_server::models::Progress::Iteration { fit, report, total } => {
            bar.set_length(total as u64);
            bar.set_position(report.iteration as u64);
            bar.set_message(format!("training iALS ({fit})"));
        }
    })?;
    bar.finish_and_clear();
    let m = &outcome.meta["metrics"];
    eprintln!(
        "trained model version {} in {:.1} s; held-out NDCG@10: iALS {}, item-kNN {}, popularity {}",
        outcome.version,
        outcome.meta["training_seconds"]["total"]
            .as_f64()
            .unwrap_or(0.0),
        m[ModelKind::Als.name()]["ndcg@10"],
        m[ModelKind::Knn.name()]["ndcg@10"],
        m[ModelKind::Popular.name()]["ndcg@10"]
    );
    Ok(())
}

/// Writes the shop into the store: items, users, then events in large batches.
pub(crate) fn load(store: &dyn Store, shop: Shop) -> anyhow::Result<()> {
    store.put_items(shop.items).context("storing items")?;
    store.put_users(shop.users).context("storing users")?;
    let mut events = shop.events;
    while !events.is_empty() {
        let rest = events.split_off(events.len().min(100_000));
        store
            .append_events(EventBatch::new(events))
            .context("storing events")?;
        events = rest;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashSet};

    use super::*;

    const ANCHOR: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

    #[test]
    fn same_seed_same_shop_and_exact_sizes() {
        let a = generate(7, 300, 250, 12_000, ANCHOR);
        let b = generate(7, 300, 250, 12_000, ANCHOR);
        assert_eq!(a.events, b.events);
        assert_eq!(a.items, b.items);
        assert_eq!(a.users, b.users);
        assert_eq!(a.events.len(), 12_000);
        assert_eq!((a.users.len(), a.items.len()), (300, 250));
        let c = generate(8, 300, 250, 12_000, ANCHOR);
        assert_ne!(a.events, c.events);
    }

    #[test]
    fn the_shop_looks_like_a_shop() {
        let shop = generate(42, 1000, 1200, 40_000, ANCHOR);
        let titles: HashSet<&String> = shop.items.iter().map(|i| &i.text["title"]).collect();
        assert!(
            titles.len() > 1150,
            "titles should be nearly unique: {}",
            titles.len()
        );
        let categories: HashSet<&String> = shop.items.iter().flat_map(|i| &i.categories).collect();
        assert!(categories.len() >= 20);
        assert!(
            shop.items
                .iter()
                .all(|i| i.text["description"].len() > 40 && i.numeric["price"] > 0.0)
        );
        let mut by_kind: BTreeMap<&str, usize> = BTreeMap::new();
        for e in &shop.events {
            *by_kind.entry(e.kind.as_str()).or_default() += 1;
            let ts = e.timestamp.expect("timestamped");
            assert!((ANCHOR - (HISTORY_DAYS + 1) * DAY_MS..=ANCHOR).contains(&ts));
        }
        // The funnel narrows: views > clicks > carts > purchases, and negative feedback exists.
        assert!(by_kind["view"] > by_kind["click"] && by_kind["click"] > by_kind["add_to_cart"]);
        assert!(by_kind["add_to_cart"] > by_kind["purchase"]);
        for kind in ["like", "rating", "dislike", "skip"] {
            assert!(
                by_kind.get(kind).copied().unwrap_or(0) > 0,
                "no {kind} events: {by_kind:?}"
            );
        }
        // Popularity is skewed: the top 5% of items draw far more than 5% of the views.
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for e in shop.events.iter().filter(|e| e.kind == "view") {
            *counts.entry(e.item.as_str()).or_default() += 1;
        }
        let mut sorted: Vec<usize> = counts.into_values().collect();
        sorted.sort_unstable_by(|a, b| b.cmp(a));
        let top: usize = sorted.iter().take(60).sum();
        let all: usize = sorted.iter().sum();
        assert!(top as f64 > 0.2 * all as f64, "top 5% hold {top} of {all}");
    }
}
