//! The one explanation schema: why an item was ranked where it is ([`Reason`]), and with
//! `explain=full` the per-term parts of its score ([`Contribution`]).
//!
//! Every ranking route (recommendations, sessions, similar, popular, rank) and the decision
//! loops answer with these types, so a client reads one shape everywhere. The JSON of a reason
//! is an object tagged by `kind`, with a `message` for people and the fields of its kind.

use serde::Serialize;

/// How much explanation a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Explain {
    /// Reasons only (the default).
    #[default]
    Reasons,
    /// Reasons and every term of the score (`contributions`), summing to it.
    Full,
}

impl Explain {
    /// Parses `reasons` or `full`.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "reasons" => Some(Self::Reasons),
            "full" => Some(Self::Full),
            _ => None,
        }
    }

    /// Whether contributions are wanted.
    pub fn full(self) -> bool {
        self == Self::Full
    }
}

/// A history item (or, without `item`, the history as a whole) behind a model's score.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[schema(as = ReasonHistory)]
pub struct History {
    /// A sentence for people.
    pub message: String,
    /// The history item that contributed, when one is named.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub item: Option<String>,
    /// How much it added to the score.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight: Option<f32>,
}

/// A content feature behind a score: the item's own (`content`) or the user's (`profile`).
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[schema(as = ReasonFeature)]
pub struct Feature {
    /// A sentence for people.
    pub message: String,
    /// The item this one was placed next to (similar items of a new item).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub item: Option<String>,
    /// The feature: `category:…`, `word:…`, `attr:<name>=<value>`, `numeric:<name>~<bucket>`,
    /// or an embedding's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub feature: Option<String>,
    /// Its share of the score, or a similarity.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight: Option<f32>,
}

/// How popular an item is.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[schema(as = ReasonPopularity)]
pub struct Popularity {
    /// A sentence for people.
    pub message: String,
    /// The item's first category, named in the message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// Its event count (all-time; absent for a window).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
}

/// Why an item was ranked where it is. Every ranked item carries at least one.
///
/// The `kind` strings of the model reasons (`als`, `knn`, `ease`, `bpr`) name the model whose
/// score the history item contributed to.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(tag = "kind")]
pub enum Reason {
    /// iALS: a history item's Hu–Koren–Volinsky contribution, or the latent factors as a whole.
    #[serde(rename = "als")]
    Als(History),
    /// Item-kNN: a history item whose neighbour this is, and its weighted similarity.
    #[serde(rename = "knn")]
    Knn(History),
    /// EASE: a history item's item–item weight.
    #[serde(rename = "ease")]
    Ease(History),
    /// BPR: a history item close in BPR's factors.
    #[serde(rename = "bpr")]
    Bpr(History),
    /// A blend of two models where neither named a history item.
    #[serde(rename = "blend")]
    Blend {
        /// A sentence for people.
        message: String,
    },
    /// Content and attribute match: a new item placed by its content, or an item next to one.
    #[serde(rename = "content")]
    Content(Feature),
    /// A user without history (or a visitor) placed by their attributes or the context.
    #[serde(rename = "profile")]
    Profile(Feature),
    /// Popular: all-time or within a window.
    #[serde(rename = "popular")]
    Popular(Popularity),
    /// Trending: time-decayed popularity.
    #[serde(rename = "trending")]
    Trending(Popularity),
    /// Users who interacted with `item` also interacted with this one.
    #[serde(rename = "co_occurrence")]
    CoOccurrence {
        /// A sentence for people.
        message: String,
        /// The item it co-occurs with.
        item: String,
        /// How many users interacted with both.
        count: u64,
    },
    /// The user has not interacted with the item yet (popularity asked for).
    #[serde(rename = "unseen")]
    Unseen {
        /// A sentence for people.
        message: String,
    },
    /// A context feature of a decision and its contribution to the action's score.
    #[serde(rename = "context")]
    Context {
        /// A sentence for people.
        message: String,
        /// The feature (`namespace=value`, `namespace*action`, ...).
        feature: String,
        /// Its contribution to the score.
        weight: f32,
    },
    /// A business rule moved the item (a boost, a promotion, a category cap, or a hidden
    /// item it resembles).
    #[serde(rename = "rule")]
    Rule {
        /// A sentence for people.
        message: String,
        /// The rule's name: a saved rule's, or `request.filter`, `request.boost[0]`, ... for the
        /// request's own.
        rule: String,
        /// `boost`, `promote`, `cap` or `hide_similar`.
        effect: &'static str,
    },
    /// Exploration moved the item's score (a decision's Thompson-sampling draw).
    #[serde(rename = "exploration")]
    Exploration {
        /// A sentence for people.
        message: String,
        /// The exploration term's part of the score.
        weight: f32,
    },
    /// Nothing is known of the item: no events, no content to place it by.
    #[serde(rename = "cold_start")]
    ColdStart {
        /// A sentence for people.
        message: String,
    },
    /// The diversity re-ranker moved the item down because it resembles items above it.
    #[serde(rename = "diversity")]
    Diversity {
        /// A sentence for people.
        message: String,
        /// The item above it that it resembles most.
        item: String,
        /// That similarity (cosine of factors, or shared categories).
        similarity: f32,
    },
    /// A fairness re-ranker (calibration, popularity debiasing, a protected group's share)
    /// moved the item.
    #[serde(rename = "fairness")]
    Fairness {
        /// A sentence for people.
        message: String,
        /// `calibration`, `popularity` or `protected_share`.
        stage: &'static str,
        /// Its position before the stage (from 1).
        from: usize,
        /// Its position after it (from 1).
        to: usize,
    },
    /// What was asked for could not be answered, and this is what took its place.
    #[serde(rename = "fallback")]
    Fallback {
        /// A sentence for people.
        message: String,
        /// The item the request was about (similar items).
        #[serde(skip_serializing_if = "Option::is_none")]
        item: Option<String>,
    },
}

impl Reason {
    /// A `fallback` reason.
    pub fn fallback(message: impl Into<String>) -> Self {
        Self::Fallback {
            message: message.into(),
            item: None,
        }
    }

    /// A history reason without a named item (the history as a whole).
    pub fn history(message: impl Into<String>) -> History {
        History {
            message: message.into(),
            item: None,
            weight: None,
        }
    }

    /// A feature reason without a named feature.
    pub fn feature(message: impl Into<String>) -> Feature {
        Feature {
            message: message.into(),
            item: None,
            feature: None,
            weight: None,
        }
    }

    /// The `kind` it serializes with.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Als(_) => "als",
            Self::Knn(_) => "knn",
            Self::Ease(_) => "ease",
            Self::Bpr(_) => "bpr",
            Self::Blend { .. } => "blend",
            Self::Content(_) => "content",
            Self::Profile(_) => "profile",
            Self::Popular(_) => "popular",
            Self::Trending(_) => "trending",
            Self::CoOccurrence { .. } => "co_occurrence",
            Self::Unseen { .. } => "unseen",
            Self::Context { .. } => "context",
            Self::Rule { .. } => "rule",
            Self::Exploration { .. } => "exploration",
            Self::ColdStart { .. } => "cold_start",
            Self::Diversity { .. } => "diversity",
            Self::Fairness { .. } => "fairness",
            Self::Fallback { .. } => "fallback",
        }
    }

    /// The message for people.
    pub fn message(&self) -> &str {
        match self {
            Self::Als(h) | Self::Knn(h) | Self::Ease(h) | Self::Bpr(h) => &h.message,
            Self::Content(f) | Self::Profile(f) => &f.message,
            Self::Popular(p) | Self::Trending(p) => &p.message,
            Self::Blend { message }
            | Self::CoOccurrence { message, .. }
            | Self::Unseen { message }
            | Self::Context { message, .. }
            | Self::Rule { message, .. }
            | Self::Exploration { message, .. }
            | Self::ColdStart { message }
            | Self::Diversity { message, .. }
            | Self::Fairness { message, .. }
            | Self::Fallback { message, .. } => message,
        }
    }

    /// The other item the reason names, if any.
    pub fn item(&self) -> Option<&str> {
        match self {
            Self::Als(h) | Self::Knn(h) | Self::Ease(h) | Self::Bpr(h) => h.item.as_deref(),
            Self::Content(f) | Self::Profile(f) => f.item.as_deref(),
            Self::CoOccurrence { item, .. } | Self::Diversity { item, .. } => Some(item),
            Self::Fallback { item, .. } => item.as_deref(),
            _ => None,
        }
    }
}

/// One term of an item's score (`explain=full`): the terms of one item sum to its score
/// (within float rounding, 1e-5 relative).
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Contribution {
    /// What the term is: `history_item` (iALS, Hu–Koren–Volinsky `c·yᵀWy_i`), `neighbour`
    /// (item-kNN `w·sim`), `item_weight` (EASE `w·B_ij`), `factor` and `item_bias` (BPR),
    /// `feature` and `bias` (content), `session_content` (iALS: session items placed by their
    /// content), `popularity`, `similarity`, `co_occurrence`, `offset` (a shift that places a
    /// top-up below the results above it), `boost` (what a business rule's boost changed, the
    /// rule as `feature`). Blends prefix each term with its model
    /// (`als.history_item`) and scale it by the blend weight.
    pub term: String,
    /// The history item behind the term.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub item: Option<String>,
    /// The content feature behind the term.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub feature: Option<String>,
    /// The latent factor (BPR).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub factor: Option<u32>,
    /// Its value; the values of an item sum to its score.
    pub value: f32,
}

impl Contribution {
    /// A term with only a name and a value.
    pub fn new(term: impl Into<String>, value: f32) -> Self {
        Self {
            term: term.into(),
            item: None,
            feature: None,
            factor: None,
            value,
        }
    }

    /// A term about a history item.
    pub fn of_item(term: impl Into<String>, item: String, value: f32) -> Self {
        Self {
            item: Some(item),
            ..Self::new(term, value)
        }
    }

    /// A term about a content feature.
    pub fn of_feature(term: impl Into<String>, feature: String, value: f32) -> Self {
        Self {
            feature: Some(feature),
            ..Self::new(term, value)
        }
    }
}

/// Scales every term by `by` (a blend weight over a normalisation) and prefixes it with `model`.
pub fn scaled(parts: Vec<Contribution>, model: &str, by: f32) -> Vec<Contribution> {
    parts
        .into_iter()
        .map(|c| Contribution {
            term: format!("{model}.{}", c.term),
            value: c.value * by,
            ..c
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The JSON of the reasons that existed before the enum is unchanged.
    #[test]
    fn reasons_keep_their_json() {
        let r = Reason::Als(History {
            message: "because you interacted with a".into(),
            item: Some("a".into()),
            weight: Some(0.5),
        });
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            serde_json::json!({"kind": "als", "message": "because you interacted with a", "item": "a", "weight": 0.5})
        );
        let p = Reason::Popular(Popularity {
            message: "popular in A".into(),
            category: Some("A".into()),
            count: Some(3),
        });
        assert_eq!(
            serde_json::to_value(&p).unwrap(),
            serde_json::json!({"kind": "popular", "message": "popular in A", "category": "A", "count": 3})
        );
        assert_eq!(
            serde_json::to_value(Reason::fallback("x")).unwrap(),
            serde_json::json!({"kind": "fallback", "message": "x"})
        );
        assert_eq!(p.kind(), "popular");
        assert_eq!(r.item(), Some("a"));
    }
}
