//! `meta.json`, typed: what a model version was trained on and with.
//!
//! [`ModelMeta`] is written by [`super::save`] and read by [`super::ServingModel::load`] and
//! [`Tuned::from_meta`]. Its JSON keeps the shape versions have always had
//! (`data`, `params.<kind>`, `serve`, `tuning`, `training_seconds`, `metrics`), so tools that
//! read it (`bespoke inspect`, `GET /v1/models`) see the same keys.
//!
//! Versions: `meta_version` 1 is every file written before the field existed (it is absent);
//! [`ModelMeta::from_value`] migrates older layouts on read, and refuses a version newer than
//! this build. Version 2 has version 1's layout plus the field and `models`, the kinds the
//! version holds (version 1 said so by which `params` were objects). The layout is also an API
//! (`GET /v1/models`, `bespoke train --json`), so it changes only with a version and a
//! migration here.

use std::collections::BTreeMap;

use bespoke_algo::tune::Config;
use bespoke_algo::{
    AlsParams, BprParams, EaseParams, KnnParams, KnnSimilarity, ModelKind, Recency,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::settings::WeightSpec;

/// The `meta_version` this build writes.
pub const META_VERSION: u32 = 2;

/// The `format` every version has carried.
pub const FORMAT: &str = "bespoke.model.v1";

/// A `meta.json` that does not parse as one.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    /// It was written by a newer build.
    #[error("meta.json version {found} is newer than this build reads ({META_VERSION})")]
    TooNew {
        /// Its `meta_version`.
        found: u32,
    },
    /// A field has the wrong type.
    #[error("meta.json: {0}")]
    Malformed(#[from] serde_json::Error),
}

/// The metadata of a model version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelMeta {
    /// Layout version of this metadata (see the module docs).
    pub meta_version: u32,
    /// `bespoke.model.v1`.
    #[serde(default)]
    pub format: String,
    /// When it was trained (RFC 3339).
    #[serde(default)]
    pub created_at: String,
    /// The data it was trained on.
    #[serde(default)]
    pub data: DataMeta,
    /// The kinds it holds, each with its files (see `models::REGISTRY`).
    #[serde(default)]
    pub models: Vec<ModelKind>,
    /// The models trained and their hyperparameters.
    #[serde(default)]
    pub params: ParamsMeta,
    /// What `model=auto` serves.
    #[serde(default)]
    pub serve: Serve,
    /// The tuning run whose result it was trained with, if any.
    #[serde(default)]
    pub tuning: Option<Tuned>,
    /// Seconds each model took to train (by kind), and `total`.
    #[serde(default)]
    pub training_seconds: BTreeMap<String, f64>,
    /// Offline metrics on a held-out tail (`null` when training did not evaluate).
    #[serde(default)]
    pub metrics: Value,
}

/// What a version was trained on.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DataMeta {
    /// Sequence number of the newest event included.
    pub watermark_seq: u64,
    /// When the snapshot was read (Unix ms): erasures before it are covered.
    pub snapshot_at_ms: i64,
    /// Events read.
    pub events: u64,
    /// Users with data (rows of `users.json`).
    pub users: usize,
    /// Items with data (rows of `items.json`).
    pub items: usize,
    /// User–item pairs.
    pub pairs: usize,
}

/// A model's hyperparameters and the recency weighting of its training data (`null`: off).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KindParams<P> {
    /// Hyperparameters, flattened into the same object as in every version so far.
    #[serde(flatten)]
    pub params: P,
    /// The recency weighting of its training data.
    #[serde(default)]
    pub recency: Option<Recency>,
}

impl<P> KindParams<P> {
    /// `params` trained under `kind`'s weighting in `recency`.
    pub fn new(params: P, kind: ModelKind, recency: &Recencies) -> Self {
        Self {
            params,
            recency: recency.recorded(kind),
        }
    }
}

/// Item-kNN's parameters as `meta.json` has always held them: RP3beta's two under `rp3`, and
/// only when it is the similarity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KnnMeta {
    /// Neighbours per item.
    pub k: usize,
    /// The similarity.
    pub similarity: KnnSimilarity,
    /// The recency weighting of its training data.
    #[serde(default)]
    pub recency: Option<Recency>,
    /// RP3beta's parameters.
    #[serde(default)]
    pub rp3: Option<Rp3Meta>,
}

/// RP3beta's parameters in [`KnnMeta`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Rp3Meta {
    /// Exponent of the transition probabilities.
    pub alpha: f32,
    /// Popularity penalty.
    pub beta: f32,
}

impl KnnMeta {
    /// `p` trained under item-kNN's weighting in `recency`.
    pub fn new(p: &KnnParams, recency: &Recencies) -> Self {
        Self {
            k: p.k,
            similarity: p.similarity,
            recency: recency.recorded(ModelKind::Knn),
            rp3: (p.similarity == KnnSimilarity::Rp3).then_some(Rp3Meta {
                alpha: p.rp3_alpha,
                beta: p.rp3_beta,
            }),
        }
    }

    /// The parameters (RP3beta's defaults where they were not recorded: unused then).
    pub fn params(&self) -> KnnParams {
        let d = KnnParams::default();
        KnnParams {
            k: self.k,
            similarity: self.similarity,
            rp3_alpha: self.rp3.map_or(d.rp3_alpha, |r| r.alpha),
            rp3_beta: self.rp3.map_or(d.rp3_beta, |r| r.beta),
        }
    }
}

/// `training.propensity_weighting` as a version was trained with it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PropensityMeta {
    /// The power law's exponent η.
    pub eta: f64,
    /// The largest weight factor.
    pub max_factor: f64,
}

impl PropensityMeta {
    /// The weight factor of an item with `count` interactions when the most popular has
    /// `max_count`: `min(1 / p, max_factor)`, `p = (count / max_count)^η` floored as
    /// `debias::propensities_from_popularity` does.
    pub fn factor(&self, count: f64, max_count: f64) -> f32 {
        let p = if max_count > 0.0 {
            (count.max(0.0) / max_count)
                .powf(self.eta)
                .clamp(bespoke_algo::debias::PROPENSITY_FLOOR, 1.0)
        } else {
            1.0
        };
        (1.0 / p).min(self.max_factor.max(1.0)) as f32
    }
}

/// The models of a version, each present when it was trained.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ParamsMeta {
    /// iALS.
    pub als: Option<KindParams<AlsParams>>,
    /// Item-kNN.
    pub knn: Option<KnnMeta>,
    /// EASE (small catalogs only).
    pub ease: Option<KindParams<EaseParams>>,
    /// The content model's λ and what each side holds (see `ContentModel::describe`).
    pub content: Option<Value>,
    /// BPR (with `training.bpr`).
    pub bpr: Option<KindParams<BprParams>>,
    /// `training.half_life_days` of the run.
    pub half_life_days: f64,
    /// `[events.weights]` of the run.
    pub event_weights: BTreeMap<String, WeightSpec>,
    /// The propensity weighting iALS was trained with, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub propensity: Option<PropensityMeta>,
    /// The parameters of kinds added after these fields, by kind name: a new model records
    /// itself here without a field of its own.
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

impl ParamsMeta {
    /// The recency weighting each family was trained with.
    pub fn recencies(&self) -> Recencies {
        let mut r = Recencies::default();
        let entries = [
            (ModelKind::Als, self.als.as_ref().and_then(|f| f.recency)),
            (ModelKind::Knn, self.knn.as_ref().and_then(|f| f.recency)),
            (ModelKind::Ease, self.ease.as_ref().and_then(|f| f.recency)),
        ];
        for (kind, recency) in entries {
            if let Some(recency) = recency {
                r.set(kind, recency);
            }
        }
        r
    }
}

impl ModelMeta {
    /// Reads a `meta.json` of any version so far, migrating older layouts.
    pub fn from_value(mut value: Value) -> Result<Self, MetaError> {
        let version = value
            .get("meta_version")
            .and_then(Value::as_u64)
            .map_or(1, |v| v as u32);
        if version > META_VERSION {
            return Err(MetaError::TooNew { found: version });
        }
        if version < 2 {
            migrate_v1(&mut value);
        }
        Ok(serde_json::from_value(value)?)
    }

    /// The JSON that is saved (and that `GET /v1/models` and `bespoke train --json` show).
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).expect("metadata is plain data")
    }
}

/// Version 1 → 2: `models` lists the kinds whose `params` are objects (iALS and item-kNN
/// always were); what else version 1 left out takes the defaults the `#[serde(default)]`s
/// give (a missing `serve` is iALS, which versions before tuning served).
fn migrate_v1(value: &mut Value) {
    let params = &value["params"];
    let models: Vec<Value> = [
        ModelKind::Als,
        ModelKind::Knn,
        ModelKind::Ease,
        ModelKind::Bpr,
        ModelKind::Content,
    ]
    .into_iter()
    .filter(|k| params[k.name()].is_object())
    .map(|k| k.name().into())
    .collect();
    if let Some(o) = value.as_object_mut() {
        o.insert("meta_version".into(), 2.into());
        o.insert("models".into(), models.into());
    }
}

/// What tuning chose to serve.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Serve {
    /// One model: `als`, `ease` or `knn`.
    Single(ModelKind),
    /// Two models' scores, each divided by the user's top score, weighted `weight` and
    /// `1 - weight`.
    Blend {
        /// The two models (`als`, `ease`, `knn`).
        models: [ModelKind; 2],
        /// Weight of the first.
        weight: f32,
    },
}

impl Default for Serve {
    /// iALS, what every version served before tuning existed.
    fn default() -> Self {
        Serve::Single(ModelKind::Als)
    }
}

/// The recency weighting each model family was trained with (and that serving applies to a
/// user's history); a family without an entry is unweighted.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Recencies(BTreeMap<ModelKind, Recency>);

impl Recencies {
    /// The weighting of `kind`'s family ([`Recency::OFF`] when none was set).
    pub fn get(&self, kind: ModelKind) -> Recency {
        self.0.get(&kind.family()).copied().unwrap_or(Recency::OFF)
    }

    /// Sets the weighting of `kind`'s family.
    pub fn set(&mut self, kind: ModelKind, recency: Recency) {
        self.0.insert(kind.family(), recency);
    }

    /// The weighting of `kind`, or `None` when it is off (how `meta.json` records it).
    pub fn recorded(&self, kind: ModelKind) -> Option<Recency> {
        Some(self.get(kind)).filter(|r| r.is_on())
    }
}

/// A tuned model: its configuration and the recency weighting of its training data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TunedModel {
    /// Hyperparameters.
    pub config: Config,
    /// Recency weighting.
    pub recency: Recency,
    /// Its validation NDCG@10.
    pub validation_ndcg: f64,
}

/// The result of a tuning run, as `meta.json` records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tuned {
    /// Configurations sampled.
    pub budget: usize,
    /// When it ran (RFC 3339).
    pub tuned_at: String,
    /// The best configuration of each servable model type: `als`, `ease`, `knn` (pairs, as
    /// `meta.json` has always held them).
    pub models: Vec<(ModelKind, TunedModel)>,
    /// What `model=auto` serves.
    pub serve: Serve,
    /// Validation NDCG@10 of `serve`.
    pub validation_ndcg: f64,
    /// Every trial: model, rung, parameters, validation NDCG@10.
    pub trials: Vec<serde_json::Value>,
}

impl Tuned {
    /// The tuned entry of a served model type (`als`, `ease`, `knn`).
    pub fn model(&self, kind: ModelKind) -> Option<&TunedModel> {
        self.models.iter().find(|m| m.0 == kind).map(|m| &m.1)
    }

    /// The tuning a model version was trained with, from its metadata.
    pub fn from_meta(meta: &ModelMeta) -> Option<Self> {
        meta.tuning.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bespoke_algo::KnnSimilarity;

    /// A `meta.json` as the last build without `meta_version` wrote it (training.rs's `json!`
    /// of that build, values from a real run).
    const V1: &str = r#"{
      "format": "bespoke.model.v1",
      "created_at": "2026-12-01T10:00:00Z",
      "data": {"watermark_seq": 812, "snapshot_at_ms": 1764583200000, "events": 812,
               "users": 40, "items": 25, "pairs": 640},
      "params": {
        "als": {"factors": 8, "iterations": 5, "regularization": 0.05, "alpha": 1.0,
                "cg_steps": 3, "seed": 42, "recency": {"half_life": 5.0, "floor": 0.25}},
        "knn": {"k": 50, "similarity": "rp3", "recency": null, "rp3": {"alpha": 0.8, "beta": 0.3}},
        "ease": {"lambda": 250.0, "recency": null},
        "content": null,
        "bpr": {"factors": 16, "learning_rate": 0.05, "regularization": 0.01, "iterations": 30,
                "seed": 42, "recency": null},
        "half_life_days": 0.0,
        "event_weights": {"view": 1.0, "purchase": 3.0}
      },
      "serve": {"blend": {"models": ["als", "ease"], "weight": 0.7}},
      "tuning": null,
      "training_seconds": {"als": 0.1, "knn": 0.01, "ease": 0.02, "content": 0.0, "bpr": 0.3,
                           "total": 0.5},
      "metrics": {"eval_users": 12}
    }"#;

    #[test]
    fn a_version_1_meta_json_migrates_on_read() {
        let m = ModelMeta::from_value(serde_json::from_str(V1).unwrap()).unwrap();
        assert_eq!(m.meta_version, META_VERSION);
        assert_eq!(m.data.users, 40);
        assert_eq!(
            m.models,
            [
                ModelKind::Als,
                ModelKind::Knn,
                ModelKind::Ease,
                ModelKind::Bpr
            ]
        );
        let als = m.params.als.as_ref().unwrap();
        assert_eq!((als.params.factors, als.params.seed), (8, 42));
        assert_eq!(als.recency.map(|r| r.half_life), Some(5.0));
        let knn = m.params.knn.unwrap().params();
        assert_eq!(knn.similarity, KnnSimilarity::Rp3);
        assert_eq!((knn.k, knn.rp3_alpha, knn.rp3_beta), (50, 0.8, 0.3));
        assert_eq!(m.params.ease.unwrap().params.lambda, 250.0);
        assert_eq!(m.params.bpr.unwrap().params.iterations, 30);
        assert_eq!(
            m.serve,
            Serve::Blend {
                models: [ModelKind::Als, ModelKind::Ease],
                weight: 0.7
            }
        );
        assert_eq!(m.training_seconds["total"], 0.5);
    }

    #[test]
    fn version_1_without_rp3_and_very_old_files_take_defaults() {
        let mut v: Value = serde_json::from_str(V1).unwrap();
        v["params"]["knn"]["rp3"] = Value::Null;
        v["params"]["knn"]["similarity"] = "bm25".into();
        v.as_object_mut().unwrap().remove("serve");
        let m = ModelMeta::from_value(v).unwrap();
        assert_eq!(
            m.params.knn.unwrap().params().rp3_alpha,
            KnnParams::default().rp3_alpha
        );
        // Versions from before tuning served iALS.
        assert_eq!(m.serve, Serve::Single(ModelKind::Als));
    }

    #[test]
    fn the_current_version_round_trips_and_newer_ones_are_refused() {
        let m = ModelMeta::from_value(serde_json::from_str(V1).unwrap()).unwrap();
        let again = ModelMeta::from_value(m.to_value()).unwrap();
        assert_eq!(again, m);
        // The layout stays the one tools read.
        assert_eq!(
            m.to_value()["params"]["knn"]["rp3"]["alpha"],
            serde_json::json!(0.8f32)
        );
        assert_eq!(m.to_value()["meta_version"], META_VERSION);
        let mut newer = m.to_value();
        newer["meta_version"] = (META_VERSION + 1).into();
        assert!(matches!(
            ModelMeta::from_value(newer),
            Err(MetaError::TooNew { .. })
        ));
    }
}
