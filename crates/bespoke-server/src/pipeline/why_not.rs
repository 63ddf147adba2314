//! "Why not?": where an item would rank for a user, its score and the terms of it, and which
//! stage of the pipeline removed or demoted it (`GET /v1/users/{key}/explain?item=`).
//!
//! It runs the same pipeline as recommendations, once as asked and again with stages turned
//! off one group at a time, so that every verdict is what the pipeline does, not a second
//! implementation of it.

use bespoke_algo::{ItemIdx, UserIdx};
use serde::Serialize;
use serde_json::{Map, Value};

use super::{Contribution, Explain, NeedsAttributes, RankRequest, Reason, Recommendations, Source};
use crate::pipeline::request::FairnessRequest;
use crate::state::Serving;

/// One stage's verdict on the item.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[schema(as = WhyNotStage)]
pub struct Stage {
    /// `consent`, `availability`, `exclude`, `category`, `already_seen`, `rule`, `ranking`,
    /// `rules`, `hide_similar`, `diversity` or `fairness`.
    pub stage: &'static str,
    /// `removed`, `demoted`, `passed`, `applied` (consent) or `shown`.
    #[schema(inline, value_type = StageOutcome)]
    pub outcome: &'static str,
    /// A sentence for people.
    pub message: String,
    /// The rule that removed it (`hidden`, `no_repeat`, a saved rule's name, `request.filter`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
}

/// What a stage did to the item.
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)] // Named by the OpenAPI description only.
enum StageOutcome {
    Removed,
    Demoted,
    Passed,
    Applied,
    Shown,
}

/// The answer of "why not?".
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct WhyNot {
    /// The user's key.
    pub user: String,
    /// The item's key.
    pub item: String,
    /// The length of the list asked about.
    pub n: usize,
    /// Its position in that list (from 1), or null when it is not in it.
    pub position: Option<usize>,
    /// One sentence: where it is, or what kept it out.
    pub verdict: String,
    /// The model's score for it, if the model can score it.
    pub score: Option<f32>,
    /// The model that scored it.
    pub model: &'static str,
    /// Its position by the model alone among the items the request allows before rules and
    /// re-rankers (from 1), when within `limits.max_n`.
    pub model_rank: Option<usize>,
    /// Its position after filters, boosts and the category cap, before re-rankers.
    pub rank_after_rules: Option<usize>,
    /// Why the model scores it as it does.
    pub reasons: Vec<Reason>,
    /// The terms of its score, summing to it.
    pub contributions: Vec<Contribution>,
    /// Every stage's verdict, in pipeline order, up to the one that removed it.
    pub stages: Vec<Stage>,
}

fn stage(stage: &'static str, outcome: &'static str, message: impl Into<String>) -> Stage {
    Stage {
        stage,
        outcome,
        message: message.into(),
        rule: None,
    }
}

fn position(out: &Recommendations, item: &str) -> Option<usize> {
    out.items.iter().position(|r| r.item == item).map(|p| p + 1)
}

impl Serving {
    /// Explains where `item` is for `user_key` under `req`. `Ok(None)` when the item does not
    /// exist; `Err` when the user's stored attributes are needed (as for recommendations).
    pub fn why_not(
        &self,
        user_key: &str,
        item: &str,
        req: &RankRequest,
        attributes: Option<&Map<String, Value>>,
    ) -> Result<Option<WhyNot>, NeedsAttributes> {
        let source = Source::User {
            key: user_key,
            attributes,
        };
        let (idx, user, personalized, seen) = {
            let s = self.state.read();
            let Some(idx) = s.items.get(item).map(ItemIdx) else {
                return Ok(None);
            };
            let user = s.users.get(&self.user_keys.to_store(user_key)).map(UserIdx);
            let personalized =
                user.is_none_or(|u| s.personalization.get(u.0 as usize).copied().unwrap_or(true));
            let seen = user.is_some_and(|u| s.live.has_seen(u, idx));
            (idx, user, personalized, seen)
        };
        let answer = self.rank(source, req)?.unwrap_or_default_answer();
        let at = position(&answer, item);
        // The item's own score and terms, without rules or re-rankers.
        let plain = RankRequest {
            n: 1,
            explain: Explain::Full,
            model: req.model,
            context: req.context.clone(),
            skip_rules: vec!["*".into()],
            ..RankRequest::default()
        };
        let own = self.rank_supplied(user_key, &[item.to_owned()], &[], &plain, attributes)?;
        let own = own.items.into_iter().next();
        let (score, reasons, contributions) = own.map_or((None, Vec::new(), Vec::new()), |r| {
            (r.score, r.reasons, r.contributions)
        });
        let mut out = WhyNot {
            user: user_key.to_owned(),
            item: item.to_owned(),
            n: req.n,
            position: at,
            verdict: String::new(),
            score,
            model: answer.model,
            model_rank: None,
            rank_after_rules: None,
            reasons,
            contributions,
            stages: Vec::new(),
        };
        if !personalized {
            out.stages.push(stage(
                "consent",
                "applied",
                "the user has not consented to personalization: ranked by popularity",
            ));
        }
        // The filters, in the pipeline's order.
        let removed = {
            let s = self.state.read();
            let plan = self.plan(&s, source.route(), req, user);
            if !s.servable(idx) {
                Some(stage(
                    "availability",
                    "removed",
                    "the item is unavailable (available = false) or deleted",
                ))
            } else if req.exclude.iter().any(|k| k == item) {
                Some(stage("exclude", "removed", "the request excludes it"))
            } else if !s.in_categories(idx, &s.category_ids(&req.categories)) {
                Some(stage(
                    "category",
                    "removed",
                    "it is in none of the categories the request asks for",
                ))
            } else if let Some((rule, message)) = plan.why_filtered(&s, idx) {
                Some(Stage {
                    stage: "rule",
                    outcome: "removed",
                    message,
                    rule: Some(rule),
                })
            } else if seen && !req.include_seen {
                Some(stage(
                    "already_seen",
                    "removed",
                    "the user already interacted with it (include_seen=true shows it)",
                ))
            } else {
                None
            }
        };
        if let Some(st) = removed {
            out.verdict = format!("not shown: {}", st.message);
            out.stages.push(st);
            return Ok(Some(out));
        }
        out.stages
            .push(stage("filters", "passed", "no filter removes it"));
        let wide = self.limits_n();
        // Without rules and re-rankers: the model's order among the allowed items.
        let bare = RankRequest {
            n: wide,
            explain: Explain::Reasons,
            diversity: 0.0,
            hide_similar: Some(0.0),
            skip_rules: vec!["*".into()],
            filter: None,
            boost: Vec::new(),
            promote: Vec::new(),
            max_per_category: None,
            fairness: off(),
            ..req.clone()
        };
        out.model_rank = position(&self.rank(source, &bare)?.unwrap_or_default_answer(), item);
        // With the rules, without re-rankers.
        let ruled = RankRequest {
            n: wide,
            explain: Explain::Reasons,
            diversity: 0.0,
            hide_similar: Some(0.0),
            promote: Vec::new(),
            fairness: off(),
            ..req.clone()
        };
        out.rank_after_rules =
            position(&self.rank(source, &ruled)?.unwrap_or_default_answer(), item);
        let n = req.n;
        match (out.model_rank, out.rank_after_rules) {
            (Some(m), Some(r)) if r > m => out.stages.push(stage(
                "rules",
                "demoted",
                format!("boosts or the category cap moved it from {m} to {r}"),
            )),
            (Some(m), None) => out.stages.push(stage(
                "rules",
                "demoted",
                format!(
                    "ranked {m} by the model; boosts or the category cap moved it below {wide}"
                ),
            )),
            _ => {}
        }
        if let Some(p) = at {
            out.verdict = format!("shown at position {p} of {n}");
            out.stages
                .push(stage("ranking", "shown", out.verdict.clone()));
            return Ok(Some(out));
        }
        match out.rank_after_rules {
            None => {
                out.verdict = format!(
                    "not shown: it ranks below the first {wide} allowed items for this user"
                );
                out.stages
                    .push(stage("ranking", "demoted", out.verdict.clone()));
            }
            Some(r) if r > n => {
                out.verdict = format!(
                    "not shown: it ranks {r}, and the list holds {n}; {} allowed items score higher",
                    r - 1
                );
                out.stages
                    .push(stage("ranking", "demoted", out.verdict.clone()));
            }
            Some(r) => {
                // In the top n before re-rankers: find the one that moved it out, stage by
                // stage, without the request's promotions (a saved rule's promotions stay: they
                // cannot be turned off alone); if every stage keeps it, promotions took its place.
                let steps: [(&'static str, RankRequest); 3] = [
                    (
                        "hide_similar",
                        RankRequest {
                            diversity: 0.0,
                            fairness: off(),
                            promote: Vec::new(),
                            ..req.clone()
                        },
                    ),
                    (
                        "diversity",
                        RankRequest {
                            fairness: off(),
                            promote: Vec::new(),
                            ..req.clone()
                        },
                    ),
                    (
                        "fairness",
                        RankRequest {
                            promote: Vec::new(),
                            ..req.clone()
                        },
                    ),
                ];
                let mut culprit = "promotions";
                for (name, step) in steps {
                    let o = self.rank(source, &step)?.unwrap_or_default_answer();
                    if position(&o, item).is_none() {
                        culprit = name;
                        break;
                    }
                }
                out.verdict = match culprit {
                    "hide_similar" => format!(
                        "not shown: ranked {r}, then moved down because it resembles an item the user hid"
                    ),
                    "diversity" => format!(
                        "not shown: ranked {r}, then moved down by the diversity re-ranker (it resembles items above it)"
                    ),
                    "fairness" => format!(
                        "not shown: ranked {r}, then moved down by a fairness re-ranker (calibration, popularity debiasing or the protected group's share)"
                    ),
                    _ => format!(
                        "not shown: ranked {r}, then promoted items took the remaining places"
                    ),
                };
                out.stages
                    .push(stage(culprit, "demoted", out.verdict.clone()));
            }
        }
        Ok(Some(out))
    }

    fn limits_n(&self) -> usize {
        self.settings.limits.max_n
    }
}

/// Every fairness re-ranker off, whatever the defaults.
fn off() -> FairnessRequest {
    FairnessRequest {
        calibration: Some(0.0),
        popularity: Some(0.0),
        protected: Some(String::new()),
        ..FairnessRequest::default()
    }
}

trait OrEmpty {
    fn unwrap_or_default_answer(self) -> Recommendations;
}

impl OrEmpty for Option<Recommendations> {
    fn unwrap_or_default_answer(self) -> Recommendations {
        self.unwrap_or(Recommendations {
            items: Vec::new(),
            personalized: false,
            model: "popular",
            model_version: None,
            rules: Vec::new(),
            filtered: Vec::new(),
        })
    }
}
