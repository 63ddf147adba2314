//! Event-type weights: how much each kind of event says about a user's taste.
//!
//! A leaf module (it reads only the settings) because ingestion, validation, serving state,
//! retention and training all weigh events, and they must weigh them the same way.

use crate::settings::{Settings, WeightSpec};

/// Event-type weights, resolved once from the settings.
#[derive(Debug, Clone)]
pub struct Weights {
    specs: std::collections::HashMap<String, WeightSpec>,
    /// `events.max_weight`: no single event weighs more than this, either way.
    max_weight: f32,
}

impl Weights {
    /// The weights configured in `settings`.
    pub fn new(settings: &Settings) -> Self {
        Self {
            specs: settings.events.weights.clone().into_iter().collect(),
            max_weight: settings.events.max_weight as f32,
        }
    }

    /// The weight of an event, or `None` for an unknown type or a value-weighted type without
    /// a value (or with a NaN one). The weight is clipped to `±events.max_weight`: new events
    /// are validated within it already, but events stored earlier (or imported under wider
    /// limits) may not be, and one of them must not dominate popularity or training. Every
    /// consumer (serving state, retention, training) goes through here, so what is removed is
    /// always what was added.
    pub fn weight(&self, kind: &str, value: Option<f64>) -> Option<f32> {
        let w = match self.specs.get(kind)? {
            WeightSpec::Fixed(w) => *w as f32,
            WeightSpec::Value(_) => value.filter(|v| !v.is_nan())? as f32,
        };
        Some(w.clamp(-self.max_weight, self.max_weight))
    }

    /// Whether the type exists, and whether it needs a value.
    pub fn spec(&self, kind: &str) -> Option<&WeightSpec> {
        self.specs.get(kind)
    }

    /// The configured type names, sorted.
    pub fn kinds(&self) -> Vec<&str> {
        let mut k: Vec<&str> = self.specs.keys().map(String::as_str).collect();
        k.sort_unstable();
        k
    }
}
