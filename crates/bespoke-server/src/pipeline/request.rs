//! The validated request every ranking route parses into: GET query strings and POST bodies
//! go through the same checks, so a bad `n` or `model` is the same 400 on every route.

use serde::Deserialize;
use serde_json::{Map, Value};

use super::Explain;
use crate::error::ApiError;
use crate::rules::spec::{BoostSpec, PromoteSpec};
use crate::settings::{ModelChoice, PopularityMethod, Settings};

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
    /// Keep only items this rule expression matches (`docs/rules.md`).
    pub filter: Option<String>,
    /// Boosts, applied in order.
    pub boost: Vec<BoostSpec>,
    /// Reserved positions.
    pub promote: Vec<PromoteSpec>,
    /// At most this many items of one category.
    pub max_per_category: Option<usize>,
    /// The no-repeat policy's `max_impressions`; `rules.max_impressions` when `None`.
    pub max_impressions: Option<u32>,
    /// Its window in milliseconds; `rules.impression_window` when `None`.
    pub impression_window: Option<i64>,
    /// Drop what was in the user's last this many lists; `rules.no_repeat_lists` when `None`.
    pub no_repeat_lists: Option<u32>,
    /// How far items resembling a hidden one move down; `rules.hide_similar` when `None`.
    pub hide_similar: Option<f32>,
    /// Whose hidden items and impressions apply, on routes without a user of their own
    /// (similar, popular, sessions).
    pub user: Option<String>,
    /// Saved rules not to apply (`*`: none of them).
    pub skip_rules: Vec<String>,
    /// The fairness re-rankers asked for (each `None` takes the `fairness.*` default).
    pub fairness: FairnessRequest,
    /// The user's key is already the store's (pseudonymized) key: the fairness report ranks
    /// users it knows only by that.
    pub stored_key: bool,
}

/// A request's fairness re-rankers (`docs/fairness.md`); `None` takes the setting's default.
#[derive(Debug, Clone, Default)]
pub struct FairnessRequest {
    /// Calibration's λ in `[0, 1]`.
    pub calibration: Option<f32>,
    /// Popularity debiasing's weight in `[0, 1]`.
    pub popularity: Option<f32>,
    /// Its method.
    pub popularity_method: Option<PopularityMethod>,
    /// The protected item group, a rule expression; empty turns a default off.
    pub protected: Option<String>,
    /// FA*IR's minimum share p in `(0, 1)`.
    pub protected_share: Option<f64>,
    /// FA*IR's significance α in `(0, 1)`.
    pub protected_alpha: Option<f64>,
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
            ..RankRequest::default()
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

/// The business-rule fields every ranking route takes (`docs/rules.md`), as sent.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct RulesIn {
    pub(crate) filter: Option<String>,
    pub(crate) boost: Option<Vec<BoostSpec>>,
    pub(crate) promote: Option<Vec<PromoteSpec>>,
    pub(crate) max_per_category: Option<i64>,
    pub(crate) max_impressions: Option<i64>,
    pub(crate) impression_window: Option<String>,
    pub(crate) no_repeat_lists: Option<i64>,
    pub(crate) hide_similar: Option<f64>,
    pub(crate) user: Option<String>,
    pub(crate) skip_rules: Option<Vec<String>>,
    pub(crate) calibration: Option<f64>,
    pub(crate) popularity: Option<f64>,
    pub(crate) popularity_method: Option<String>,
    pub(crate) protected: Option<String>,
    pub(crate) protected_share: Option<f64>,
    pub(crate) protected_alpha: Option<f64>,
}

/// The query-string names of [`RulesIn`], for the routes' allowed parameters.
pub(crate) const RULE_PARAMS: [&str; 15] = [
    "calibration",
    "popularity",
    "popularity_method",
    "protected",
    "protected_share",
    "protected_alpha",
    "filter",
    "boost",
    "promote",
    "max_per_category",
    "max_impressions",
    "impression_window",
    "no_repeat_lists",
    "hide_similar",
    "skip_rules",
];

impl RulesIn {
    /// Checks the fields' shapes and sets them on `req`; the expressions themselves are checked
    /// against the catalog by `Serving::check_rules`.
    pub(crate) fn apply(self, req: &mut RankRequest, settings: &Settings) -> Result<(), ApiError> {
        let count = |field: &str, v: Option<i64>, max: i64| -> Result<Option<i64>, ApiError> {
            match v {
                None => Ok(None),
                Some(v) if (0..=max).contains(&v) => Ok(Some(v)),
                Some(v) => Err(ApiError::invalid(
                    field,
                    format!("{field} must be an integer from 0 to {max}, got {v}"),
                )),
            }
        };
        req.filter = self.filter;
        req.boost = self.boost.unwrap_or_default();
        req.promote = self.promote.unwrap_or_default();
        req.max_per_category = match count("max_per_category", self.max_per_category, 1_000_000)? {
            Some(0) => {
                return Err(ApiError::invalid(
                    "max_per_category",
                    "max_per_category must be at least 1",
                ));
            }
            v => v.map(|v| v as usize),
        };
        req.max_impressions =
            count("max_impressions", self.max_impressions, 1_000_000)?.map(|v| v as u32);
        req.no_repeat_lists =
            count("no_repeat_lists", self.no_repeat_lists, 1_000_000)?.map(|v| v as u32);
        req.impression_window = match self.impression_window {
            None => None,
            Some(w) => Some(crate::time::parse_duration(&w).map_err(|why| {
                ApiError::invalid(
                    "impression_window",
                    format!("impression_window {why} (90m, 24h, 7d, ...)"),
                )
            })?),
        };
        req.hide_similar = match self.hide_similar {
            None => None,
            Some(v) if (0.0..=1.0).contains(&v) => Some(v as f32),
            Some(v) => {
                return Err(ApiError::invalid(
                    "hide_similar",
                    format!("hide_similar must be a number from 0 to 1, got {v}"),
                ));
            }
        };
        if let Some(u) = &self.user {
            crate::validate::validate_key("user", u, settings.limits.max_key_bytes)?;
        }
        req.user = self.user;
        req.skip_rules = self.skip_rules.unwrap_or_default();
        let unit = |field: &str, v: Option<f64>| -> Result<Option<f32>, ApiError> {
            match v {
                None => Ok(None),
                Some(v) if (0.0..=1.0).contains(&v) => Ok(Some(v as f32)),
                Some(v) => Err(ApiError::invalid(
                    field,
                    format!("{field} must be a number from 0 to 1, got {v}"),
                )),
            }
        };
        let open = |field: &str, v: Option<f64>| -> Result<Option<f64>, ApiError> {
            match v {
                None => Ok(None),
                Some(v) if v > 0.0 && v < 1.0 => Ok(Some(v)),
                Some(v) => Err(ApiError::invalid(
                    field,
                    format!("{field} must be a number between 0 and 1 (exclusive), got {v}"),
                )),
            }
        };
        req.fairness = FairnessRequest {
            calibration: unit("calibration", self.calibration)?,
            popularity: unit("popularity", self.popularity)?,
            popularity_method: match self.popularity_method.as_deref() {
                None => None,
                Some(m) => Some(PopularityMethod::from_name(m).ok_or_else(|| {
                    ApiError::invalid(
                        "popularity_method",
                        format!("popularity_method must be xquad or inverse, got {m:?}"),
                    )
                })?),
            },
            protected: self.protected,
            protected_share: open("protected_share", self.protected_share)?,
            protected_alpha: open("protected_alpha", self.protected_alpha)?,
        };
        Ok(())
    }
}
