//! Erasure on real data and through every model artifact.
//!
//! The acceptance test of erasure: MovieLens 100K with its catalog and user profiles, the
//! heaviest user erased with retraining through the API, every model kind trained (iALS,
//! item-kNN, EASE, BPR, content), against a store that never held the user: every tensor,
//! key file and served answer must be the same bit for bit.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use reqwest::StatusCode;
use safetensors::SafeTensors;
use serde_json::{Value, json};

use crate::common::{TestServer, start_with};
use crate::privacy::train;

/// MovieLens 100K's heaviest user (737 ratings).
const HEAVIEST: &str = "405";

fn shared_data(rel: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/data")
        .join(rel);
    assert!(
        p.exists(),
        "{} is missing: the tests need ../shared/data beside the checkout (see README)",
        p.display()
    );
    p
}

/// MovieLens 100K as API bodies: items (genres, title), user profiles, rating events.
struct MovieLens {
    items: Vec<(String, Value)>,
    users: Vec<(String, Value)>,
    events: Vec<Value>,
}

fn movielens() -> MovieLens {
    const GENRES: [&str; 19] = [
        "unknown",
        "action",
        "adventure",
        "animation",
        "children",
        "comedy",
        "crime",
        "documentary",
        "drama",
        "fantasy",
        "film-noir",
        "horror",
        "musical",
        "mystery",
        "romance",
        "sci-fi",
        "thriller",
        "war",
        "western",
    ];
    // u.item has a few Latin-1 titles.
    let raw = std::fs::read(shared_data("ml-100k/u.item")).unwrap();
    let text: String = raw.iter().map(|&b| b as char).collect();
    let items = text
        .lines()
        .map(|line| {
            let f: Vec<&str> = line.split('|').collect();
            let categories: Vec<&str> = f[5..]
                .iter()
                .zip(GENRES)
                .filter(|(flag, _)| **flag == "1")
                .map(|(_, g)| g)
                .collect();
            (
                f[0].to_owned(),
                json!({ "categories": categories, "text": { "title": f[1] } }),
            )
        })
        .collect();
    let users = std::fs::read_to_string(shared_data("ml-100k/u.user"))
        .unwrap()
        .lines()
        .map(|line| {
            let f: Vec<&str> = line.split('|').collect();
            (
                f[0].to_owned(),
                json!({ "attributes": { "age": f[1].parse::<u32>().unwrap(), "gender": f[2], "occupation": f[3] } }),
            )
        })
        .collect();
    let events = std::fs::read_to_string(shared_data("ml-100k/u.data"))
        .unwrap()
        .lines()
        .map(|line| {
            let f: Vec<&str> = line.split('\t').collect();
            let secs: i64 = f[3].parse().unwrap();
            json!({ "user": f[0], "item": f[1], "type": "rating",
                    "value": f[2].parse::<f64>().unwrap(),
                    "timestamp": bespoke_server::time::format_rfc3339(secs * 1000) })
        })
        .collect();
    MovieLens {
        items,
        users,
        events,
    }
}

/// Every model kind, deterministic and comparable across stores.
async fn server() -> TestServer {
    start_with(|s| {
        s.training.seed = 7;
        s.training.threads = 2;
        s.training.bpr = true;
        s.training.content = true;
    })
    .await
}

/// Loads the events, then the catalog and the profiles, leaving out `without`'s profile and
/// events. Events first, as an import would: store ids then follow first appearance in the
/// file, so they differ between a store with the user and one without.
async fn load(srv: &TestServer, ml: &MovieLens, without: Option<&str>) {
    let events: Vec<&Value> = ml
        .events
        .iter()
        .filter(|e| without.is_none_or(|w| e["user"] != w))
        .collect();
    for chunk in events.chunks(10_000) {
        let (status, out) = srv.post("/v1/events", json!({ "events": chunk })).await;
        assert_eq!(status, StatusCode::OK, "{out}");
    }
    // Half the catalog has content; the other half exists only through events, so an item
    // that only the erased user touched is left behind in the catalog as a bare key.
    for (key, body) in ml
        .items
        .iter()
        .filter(|(k, _)| k.parse::<u32>().unwrap() % 2 == 0)
    {
        let (status, out) = srv.put(&format!("/v1/items/{key}"), body.clone()).await;
        assert!(status.is_success(), "item {key}: {out}");
    }
    for (key, body) in ml.users.iter().filter(|(k, _)| Some(k.as_str()) != without) {
        let (status, out) = srv.put(&format!("/v1/users/{key}"), body.clone()).await;
        assert!(status.is_success(), "user {key}: {out}");
    }
}

fn version_dir(srv: &TestServer, version: u64) -> PathBuf {
    srv.dir.path().join("models").join(version.to_string())
}

/// The files of a model version, by name.
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().into_string().unwrap(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

type Tensor = (String, Vec<usize>, Vec<u8>);

/// A safetensors file's tensors (dtype, shape, raw bytes) and header metadata.
fn tensors(bytes: &[u8]) -> (BTreeMap<String, Tensor>, BTreeMap<String, String>) {
    let st = SafeTensors::deserialize(bytes).unwrap();
    let t = st
        .tensors()
        .into_iter()
        .map(|(name, t)| {
            (
                name,
                (
                    format!("{:?}", t.dtype()),
                    t.shape().to_vec(),
                    t.data().to_vec(),
                ),
            )
        })
        .collect();
    let (_, meta) = SafeTensors::read_metadata(bytes).unwrap();
    let meta = meta
        .metadata()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    (t, meta)
}

/// What a served answer says, without the version number (which differs between stores).
fn answer(mut body: Value) -> Value {
    if let Some(o) = body.as_object_mut() {
        o.remove("model_version");
    }
    body
}

#[tokio::test]
async fn erasure_with_retraining_equals_never_holding_the_heaviest_movielens_user() {
    let ml = movielens();
    let (a, b) = tokio::join!(server(), server());
    tokio::join!(load(&a, &ml, None), load(&b, &ml, Some(HEAVIEST)));
    let first = train(&a).await;
    assert_eq!(first["version"], 1);
    for kind in ["als", "knn", "ease", "bpr", "content"] {
        assert!(
            !first["meta"]["params"][kind].is_null(),
            "{kind} was not trained: {}",
            first["meta"]["params"]
        );
    }

    let (status, receipt) = a
        .delete(&format!("/v1/users/{HEAVIEST}?retrain=true"))
        .await;
    assert_eq!(status, StatusCode::OK, "{receipt}");
    assert_eq!(receipt["status"], "complete", "{receipt}");
    assert_eq!(receipt["removed"]["events"], 737);
    assert_eq!(receipt["first_model_without_user"]["version"], 2);
    train(&b).await;

    let (fa, fb) = (files(&version_dir(&a, 2)), files(&version_dir(&b, 1)));
    assert_eq!(
        fa.keys().collect::<Vec<_>>(),
        fb.keys().collect::<Vec<_>>(),
        "the two versions hold different files"
    );
    for (name, bytes) in &fa {
        let other = &fb[name];
        if name.ends_with(".safetensors") {
            let ((ta, ma), (tb, mb)) = (tensors(bytes), tensors(other));
            assert!(!ta.is_empty(), "{name} holds no tensor");
            for (t, value) in &ta {
                assert!(
                    tb.get(t) == Some(value),
                    "{name}: tensor {t} differs from the never-held model"
                );
            }
            assert_eq!(ta.len(), tb.len(), "{name}: tensor sets differ");
            assert_eq!(ma, mb, "{name}: header metadata differs");
        } else if name == "meta.json" {
            let (ja, jb): (Value, Value) = (
                serde_json::from_slice(bytes).unwrap(),
                serde_json::from_slice(other).unwrap(),
            );
            for part in ["params", "metrics", "serve", "tuning"] {
                assert_eq!(ja[part], jb[part], "meta.json: {part} differs");
            }
            for count in ["events", "users", "items", "pairs"] {
                assert_eq!(ja["data"][count], jb["data"][count], "meta.json: {count}");
            }
        } else {
            assert!(bytes == other, "{name} differs from the never-held model");
        }
    }
    // Version 1, trained with the user, is gone.
    assert!(!version_dir(&a, 1).exists());

    // Serving answers the same, score for score, for every model and the reasons behind it.
    let users: Vec<&String> = ml
        .users
        .iter()
        .map(|(k, _)| k)
        .filter(|k| k.as_str() != HEAVIEST)
        .step_by(18)
        .collect();
    assert!(users.len() >= 50);
    for model in ["als", "knn", "ease", "bpr", "auto"] {
        for user in &users {
            let path = format!("/v1/users/{user}/recommendations?n=20&model={model}");
            let ((sa, ra), (sb, rb)) = tokio::join!(a.get(&path), b.get(&path));
            assert_eq!((sa, sb), (StatusCode::OK, StatusCode::OK), "{ra} {rb}");
            same_answer(&path, answer(ra), answer(rb));
        }
    }
    for path in ["/v1/popular?n=1000", "/v1/popular?n=1000&sort=trending"] {
        let ((_, ra), (_, rb)) = tokio::join!(a.get(path), b.get(path));
        same_answer(path, answer(ra), answer(rb));
    }
    for item in ["1", "50", "181", "1682"] {
        let path = format!("/v1/items/{item}/similar?n=20");
        let ((_, ra), (_, rb)) = tokio::join!(a.get(&path), b.get(&path));
        same_answer(&path, answer(ra), answer(rb));
    }
}

/// Asserts two answers are equal, naming the first result that differs (answers are long).
fn same_answer(path: &str, a: Value, b: Value) {
    if a == b {
        return;
    }
    let (ia, ib) = (a["items"].as_array(), b["items"].as_array());
    if let (Some(ia), Some(ib)) = (ia, ib) {
        for (rank, (x, y)) in ia.iter().zip(ib).enumerate() {
            assert_eq!(x, y, "{path}: rank {} differs", rank + 1);
        }
    }
    assert_eq!(a, b, "{path}");
}

/// Erasure without retraining reaches every stored file at once: no version keeps the user's
/// key, and every tensor with one row per user (found by its shape, not by what the file
/// declares) has that row zeroed, in every model kind; nothing else changes.
#[tokio::test]
async fn erasure_zeroes_the_user_in_every_artifact_of_every_version() {
    let ml = movielens();
    let small = MovieLens {
        items: ml.items.clone(),
        users: ml.users[..120].to_vec(),
        events: ml
            .events
            .iter()
            .filter(|e| e["user"].as_str().unwrap().parse::<u32>().unwrap() <= 120)
            .cloned()
            .collect(),
    };
    let srv = server().await;
    load(&srv, &small, None).await;
    train(&srv).await;
    train(&srv).await;
    let victim = "13";
    let before: Vec<BTreeMap<String, Vec<u8>>> =
        [1, 2].map(|v| files(&version_dir(&srv, v))).to_vec();
    for f in &before {
        for kind in ["als", "knn", "ease", "bpr", "content"] {
            assert!(
                f.contains_key(&format!("{kind}.safetensors")),
                "{kind} missing"
            );
        }
    }
    let (status, receipt) = srv.delete(&format!("/v1/users/{victim}")).await;
    assert_eq!(status, StatusCode::OK, "{receipt}");
    assert_eq!(receipt["model_rows_scrubbed"], json!([1, 2]), "{receipt}");

    for (version, before) in [1, 2].into_iter().zip(before) {
        let after = files(&version_dir(&srv, version));
        let keys = |f: &BTreeMap<String, Vec<u8>>| -> Vec<String> {
            serde_json::from_slice(&f["users.json"]).unwrap()
        };
        let (users_before, users_after) = (keys(&before), keys(&after));
        let row = users_before.iter().position(|k| k == victim).unwrap();
        assert_eq!(
            users_after[row], "",
            "version {version} still names the user"
        );
        assert!(!users_after.contains(&victim.to_owned()));
        let n_items = serde_json::from_slice::<Vec<String>>(&after["items.json"])
            .unwrap()
            .len();
        assert_ne!(users_before.len(), n_items, "shapes must tell users apart");
        let mut user_tensors = Vec::new();
        for (name, bytes) in &after {
            if !name.ends_with(".safetensors") {
                continue;
            }
            let ((ta, _), (tb, _)) = (tensors(bytes), tensors(&before[name]));
            for (t, (dtype, shape, data)) in &ta {
                let old = &tb[t].2;
                if shape.first() == Some(&users_before.len()) {
                    user_tensors.push(format!("{name}:{t}"));
                    let width = data.len() / shape[0];
                    let range = row * width..(row + 1) * width;
                    assert!(
                        data[range.clone()].iter().all(|&b| b == 0),
                        "version {version} {name}:{t} ({dtype}) keeps the user's row"
                    );
                    assert!(old[range.clone()].iter().any(|&b| b != 0));
                    assert_eq!(data[..range.start], old[..range.start]);
                    assert_eq!(data[range.end..], old[range.end..]);
                } else {
                    assert!(data == old, "version {version} {name}:{t} changed");
                }
            }
        }
        assert_eq!(
            user_tensors,
            [
                "als.safetensors:user_factors",
                "bpr.safetensors:user_factors"
            ]
        );
    }
}
