//! What a rule asks for, as requests and saved rules spell it: filters, boosts, promotions and
//! a category cap, and the routes a saved rule applies to. The ranking pipeline compiles and
//! applies them (`pipeline::rules`); this module only describes and checks their shape. The
//! doc comments of these types and their fields are their description in `/openapi.json`.

use serde::{Deserialize, Serialize};

/// A ranking route, as a saved rule names the routes it applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Route {
    /// `GET /v1/users/{key}/recommendations`.
    Recommendations,
    /// `POST /v1/recommendations` (anonymous sessions).
    Session,
    /// `GET /v1/items/{key}/similar`.
    Similar,
    /// `GET /v1/popular`.
    Popular,
    /// `POST /v1/users/{key}/rank`.
    Rank,
}

impl Route {
    /// Every route.
    pub const ALL: [Route; 5] = [
        Self::Recommendations,
        Self::Session,
        Self::Similar,
        Self::Popular,
        Self::Rank,
    ];

    /// Its name in saved rules.
    pub fn name(self) -> &'static str {
        match self {
            Self::Recommendations => "recommendations",
            Self::Session => "session",
            Self::Similar => "similar",
            Self::Popular => "popular",
            Self::Rank => "rank",
        }
    }
}

/// A boost: where the expression holds, the score is multiplied by `by` (a positive score; a
/// negative one is divided by it, so that `by > 1` always raises) or `add` is added to it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = Boost)]
pub struct BoostSpec {
    /// A rule expression: the items it applies to.
    #[serde(rename = "if")]
    pub when: String,
    /// Multiply a positive score by this (divide a negative one); greater than 0, below 1
    /// lowers. Give by or add.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(exclusive_minimum = 0)]
    pub by: Option<f64>,
    /// Add this to the score.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub add: Option<f64>,
}

/// How a boost changes a score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum BoostOp {
    /// Multiplies a positive score (divides a negative one).
    Multiply(f32),
    /// Adds to the score.
    Add(f32),
}

impl BoostOp {
    /// The boosted score.
    pub fn apply(self, score: f32) -> f32 {
        match self {
            Self::Multiply(by) if score >= 0.0 => score * by,
            Self::Multiply(by) => score / by,
            Self::Add(add) => score + add,
        }
    }
}

impl BoostSpec {
    /// The operation, or what is wrong with `by` and `add`.
    pub fn op(&self) -> Result<BoostOp, String> {
        match (self.by, self.add) {
            (Some(by), None) if by.is_finite() && by > 0.0 && by <= 1e6 => {
                Ok(BoostOp::Multiply(by as f32))
            }
            (Some(by), None) => Err(format!(
                "by must be a number greater than 0 and at most 1000000, got {by}"
            )),
            (None, Some(add)) if add.is_finite() && add.abs() <= 1e6 => {
                Ok(BoostOp::Add(add as f32))
            }
            (None, Some(add)) => Err(format!(
                "add must be a number from -1000000 to 1000000, got {add}"
            )),
            (Some(_), Some(_)) => Err("give by or add, not both".into()),
            (None, None) => Err("give by (multiply) or add".into()),
        }
    }
}

/// A promotion: position `slot` (1 = first) holds the best-ranked item the expression matches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = Promotion)]
pub struct PromoteSpec {
    /// The position reserved (1 = first).
    #[schema(minimum = 1)]
    pub slot: usize,
    /// A rule expression: the items that may fill it, the best-ranked first.
    #[serde(rename = "if")]
    pub when: String,
}

fn yes() -> bool {
    true
}

/// A saved rule (`PUT /v1/rules/{name}`): what it does and where.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = RuleIn, example = json!({ "routes": ["recommendations"], "filter": "stock > 0",
    "promote": [{ "slot": 3, "if": "campaign = \"winter\"" }],
    "boost": [{ "if": "created_at > now - 30d", "by": 1.2 }] }))]
pub struct RuleSpec {
    /// For people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The routes it applies to by default; every ranking route when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    /// Off keeps the rule stored without applying it.
    #[serde(default = "yes")]
    #[schema(default = true)]
    pub enabled: bool,
    /// Keep only the items this rule expression matches (docs/rules.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    /// Boosts, applied in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub boost: Vec<BoostSpec>,
    /// Reserved positions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub promote: Vec<PromoteSpec>,
    /// At most this many items of one category.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1)]
    pub max_per_category: Option<usize>,
}

impl RuleSpec {
    /// Whether it applies to `route`.
    pub fn applies_to(&self, route: Route) -> bool {
        self.enabled && (self.routes.is_empty() || self.routes.contains(&route))
    }

    /// Whether it does anything at all.
    pub fn is_empty(&self) -> bool {
        self.filter.is_none()
            && self.boost.is_empty()
            && self.promote.is_empty()
            && self.max_per_category.is_none()
    }
}

/// A saved rule as serving holds it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[schema(as = Rule)]
pub struct SavedRule {
    /// Its name.
    pub name: String,
    /// What it does.
    #[serde(flatten)]
    pub spec: RuleSpec,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boosts_raise_negative_scores_too() {
        let up = BoostOp::Multiply(2.0);
        assert_eq!(up.apply(1.5), 3.0);
        assert_eq!(up.apply(-1.0), -0.5);
        assert!(up.apply(-1.0) > -1.0);
        assert_eq!(BoostOp::Add(0.5).apply(-1.0), -0.5);
    }

    #[test]
    fn a_boost_needs_exactly_one_operation() {
        let b = |by, add| BoostSpec {
            when: "x = 1".into(),
            by,
            add,
        };
        assert!(b(Some(1.5), None).op().is_ok());
        assert!(b(None, Some(-0.5)).op().is_ok());
        assert!(
            b(Some(0.0), None)
                .op()
                .unwrap_err()
                .contains("greater than 0")
        );
        assert!(
            b(Some(1.0), Some(1.0))
                .op()
                .unwrap_err()
                .contains("not both")
        );
        assert!(b(None, None).op().is_err());
        assert!(b(None, Some(f64::INFINITY)).op().is_err());
    }

    #[test]
    fn a_saved_rule_reads_and_applies_by_route() {
        let spec: RuleSpec = serde_json::from_str(
            r#"{"routes": ["similar"], "filter": "stock > 0", "boost": [{"if": "new = true", "by": 1.5}]}"#,
        )
        .unwrap();
        assert!(spec.applies_to(Route::Similar) && !spec.applies_to(Route::Popular));
        assert!(spec.enabled && !spec.is_empty());
        let err = serde_json::from_str::<RuleSpec>(r#"{"filtr": "x"}"#).unwrap_err();
        assert!(err.to_string().contains("filtr"));
    }
}
