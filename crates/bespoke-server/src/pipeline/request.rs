//! The validated request every ranking route parses into: GET query strings and POST bodies
//! go through the same checks, so a bad `n` or `model` is the same 400 on every route.

use serde::Deserialize;
use serde_json::{Map, Value};

use super::Explain;
use crate::error::ApiError;
use crate::settings::{ModelChoice, Settings};

/// Where a request's fields came from, for the field names errors quote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Form {
    /// A GET query string.
    Query,
    /// A JSON body.
    Body,
}

/// What a ranking request asks for, whatever its source of candidates.
#[derive(Debug, Clone, Default)]
pub struct RankRequest {
    /// How many results (the rank route returns every supplied item instead).
    pub n: usize,
    /// Keep only items in any of these categories (all items when empty).
    pub categories: Vec<String>,
    /// Item keys never to return.
    pub exclude: Vec<String>,
    /// Also return items the user already interacted with.
    pub include_seen: bool,
    /// The model to use; the configured default when `None`.
    pub model: Option<ModelChoice>,
    /// Attributes of the request (device, country, ...), named like user attributes: for a
    /// user without history they place the user through the content model, with theirs.
    pub context: Option<Map<String, Value>>,
    /// Reasons only, or every term of the score too.
    pub explain: Explain,
    /// The diversity re-ranker's λ in `[0, 1]`: 0 (the default) leaves the ranking as scored.
    pub diversity: f32,
}

/// The fields ranking routes share, as sent (a POST body flattens them beside its own).
#[derive(Debug, Default, Deserialize)]
pub(crate) struct CommonIn {
    pub(crate) n: Option<i64>,
    pub(crate) model: Option<String>,
    #[serde(default)]
    pub(crate) categories: Vec<String>,
    #[serde(default)]
    pub(crate) exclude: Vec<String>,
    #[serde(default)]
    pub(crate) include_seen: bool,
    pub(crate) explain: Option<String>,
    pub(crate) diversity: Option<f64>,
}

impl CommonIn {
    /// Checks every field against the settings and builds the request.
    pub(crate) fn validate(
        self,
        from: Form,
        settings: &Settings,
        context: Option<Map<String, Value>>,
    ) -> Result<RankRequest, ApiError> {
        let limits = &settings.limits;
        let n = match self.n {
            None => settings.serving.default_n,
            Some(n) if n >= 1 && (n as u64) <= limits.max_n as u64 => n as usize,
            Some(n) => {
                return Err(ApiError::invalid(
                    "n",
                    format!(
                        "n must be from 1 to {} (limits.max_n), got {n}",
                        limits.max_n
                    ),
                ));
            }
        };
        for (i, c) in self.categories.iter().enumerate() {
            // A query string repeats `category`; a body has a `categories` array.
            let field = match from {
                Form::Query => "category".to_owned(),
                Form::Body => format!("categories[{i}]"),
            };
            crate::validate::validate_key(&field, c, limits.max_key_bytes)?;
        }
        if self.exclude.len() > limits.max_exclude {
            return Err(ApiError::invalid(
                "exclude",
                format!(
                    "at most {} excluded items (limits.max_exclude)",
                    limits.max_exclude
                ),
            ));
        }
        Ok(RankRequest {
            n,
            categories: self.categories,
            exclude: self.exclude,
            include_seen: self.include_seen,
            model: model_param(self.model.as_deref())?,
            context,
            explain: explain_param(self.explain.as_deref())?,
            diversity: diversity_param(self.diversity)?,
        })
    }
}

/// The `model` of a ranking request.
pub(crate) fn model_param(name: Option<&str>) -> Result<Option<ModelChoice>, ApiError> {
    let Some(name) = name else {
        return Ok(None);
    };
    ModelChoice::from_name(name).map(Some).ok_or_else(|| {
        ApiError::invalid(
            "model",
            format!("model must be auto, als, knn, ease, bpr or popular, got {name:?}"),
        )
    })
}

/// `explain`: `reasons` (default) or `full`.
pub(crate) fn explain_param(name: Option<&str>) -> Result<Explain, ApiError> {
    match name {
        None => Ok(Explain::Reasons),
        Some(name) => Explain::from_name(name).ok_or_else(|| {
            ApiError::invalid(
                "explain",
                format!("explain must be reasons or full, got {name:?}"),
            )
        }),
    }
}

/// `diversity`: λ from 0 to 1.
pub(crate) fn diversity_param(v: Option<f64>) -> Result<f32, ApiError> {
    match v {
        None => Ok(0.0),
        Some(v) if (0.0..=1.0).contains(&v) => Ok(v as f32),
        Some(v) => Err(ApiError::invalid(
            "diversity",
            format!("diversity must be a number from 0 to 1, got {v}"),
        )),
    }
}
