//! On-device personalization: the signed bundle of the served iALS model that devices rank
//! with (`bespoke-client`, `clients/js`), and the key that signs it.
//!
//! The bundle carries everything the device needs to fold a history in exactly as the server
//! does (`pipeline::candidates::model_history` and `UserSolver::solve`): the item factors,
//! `YᵀY + λI`, α, the event weights, the recency and propensity weighting the model was
//! trained with and the recent boost. Items that are deleted or unavailable are left out:
//! they cannot be recommended, and (a documented difference) a device's events on them do not
//! count towards its vector, while the server's history of those events still does.

use std::sync::Arc;

use bespoke_client::{BundleParts, Encoding, EventWeight, Header, Recency};
use ed25519_dalek::SigningKey;

use super::Engine;
use crate::settings::WeightSpec;

/// The store secret holding the signing key's seed, shared by every node of a cluster.
const SIGNING_SECRET: &str = "device_bundle_signing_key";

/// A signed bundle and what identifies it.
#[derive(Debug, Clone)]
pub struct DeviceBundle {
    /// The bytes (format of `bespoke_client::bundle`).
    pub bytes: Vec<u8>,
    /// The model version it holds.
    pub model_version: u64,
    /// Items in it.
    pub items: usize,
}

impl Engine {
    /// The key bundles are signed with: created on first use and kept in the store, so that
    /// every node signs with the same key and a restart does not change it.
    pub fn device_signing_key(&self) -> bespoke_store::Result<SigningKey> {
        if let Some(k) = self.device_key.get() {
            return Ok(k.clone());
        }
        let seed = self
            .store
            .secret(SIGNING_SECRET, crate::auth::random_bytes()?)?;
        let key = SigningKey::from_bytes(&seed);
        Ok(self.device_key.get_or_init(|| key).clone())
    }

    /// The Ed25519 public key devices verify bundles with.
    pub fn device_public_key(&self) -> bespoke_store::Result<[u8; 32]> {
        Ok(self.device_signing_key()?.verifying_key().to_bytes())
    }

    /// The served iALS model as a signed bundle, `None` before the first training.
    pub fn device_bundle(
        &self,
        encoding: Encoding,
    ) -> bespoke_store::Result<Option<Arc<DeviceBundle>>> {
        let key = self.device_signing_key()?;
        let Some(model) = self.serving.model.load_full() else {
            return Ok(None);
        };
        let settings = &self.settings;
        let parts = {
            let s = self.serving.state.read();
            let solver = model.als.solver();
            let factors = solver.items();
            let d = factors.dim();
            let propensity = model.meta.params.propensity;
            let max_users = propensity.map_or(0.0, |_| self.serving.tail_cut(&s).max_users);
            let mut keys = Vec::new();
            let mut rows = Vec::new();
            let mut prop = Vec::new();
            let mut names: Vec<String> = Vec::new();
            let mut name_ids = std::collections::HashMap::new();
            let mut item_categories = Vec::new();
            for row in 0..model.n_items() as u32 {
                let Some(store_item) = model.store_item(row) else {
                    continue;
                };
                let idx = bespoke_algo::ItemIdx(store_item);
                if !s.servable(idx) {
                    continue;
                }
                keys.push(s.item_key(idx));
                rows.push(row);
                if let Some(p) = propensity {
                    prop.push(p.factor(s.live.item_users(idx).len() as f64, max_users));
                }
                let cats = s.meta(idx).map(|m| m.categories.as_slice()).unwrap_or(&[]);
                item_categories.push(
                    cats.iter()
                        .filter_map(|&c| s.categories.key(c))
                        .map(|name| {
                            *name_ids.entry(name.to_owned()).or_insert_with(|| {
                                names.push(name.to_owned());
                                names.len() as u32 - 1
                            })
                        })
                        .collect(),
                );
            }
            let mut item_factors = Vec::with_capacity(rows.len() * d);
            for &row in &rows {
                item_factors.extend_from_slice(factors.row(row as usize));
            }
            let recency = model.recency_of("als");
            BundleParts {
                header: Header {
                    format: bespoke_client::bundle::FORMAT,
                    model_version: model.version,
                    created_at: model.meta.created_at.clone(),
                    dim: d as u32,
                    encoding,
                    alpha: solver.alpha(),
                    event_weights: event_weights(settings),
                    max_weight: settings.events.max_weight,
                    recent_boost: settings.serving.recent_boost,
                    recent_half_life_ms: settings.serving.recent_half_life_hours * 3_600_000.0,
                    recency: Recency {
                        half_life: recency.half_life,
                        floor: recency.floor,
                    },
                    propensity: propensity.is_some(),
                    keys,
                    categories: names,
                    item_categories,
                },
                gram_reg: solver.gram_reg().to_vec(),
                factors: item_factors,
                propensity: prop,
            }
        };
        let items = parts.header.keys.len();
        Ok(Some(Arc::new(DeviceBundle {
            bytes: bespoke_client::encode(&parts, encoding, &key),
            model_version: model.version,
            items,
        })))
    }
}

/// The server's event weights as a bundle states them.
pub(super) fn event_weights(
    settings: &crate::settings::Settings,
) -> std::collections::BTreeMap<String, EventWeight> {
    settings
        .events
        .weights
        .iter()
        .map(|(k, w)| {
            let w = match w {
                WeightSpec::Fixed(v) => EventWeight::Fixed(*v),
                WeightSpec::Value(_) => {
                    EventWeight::Value(bespoke_client::bundle::ValueMarker::Value)
                }
            };
            (k.clone(), w)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    /// The client carries its own copy of the recency formula (it must not depend on
    /// `bespoke-algo`); the two must give the same `f32` for every setting and age.
    #[test]
    fn the_clients_recency_is_the_servers() {
        for half_life in [0.0f32, 0.5, 1.0, 4.0, 20.0, 33.3] {
            for floor in [0.0f32, 0.15, 0.3, 0.99, 1.0] {
                let server = bespoke_algo::Recency { half_life, floor };
                let client = bespoke_client::Recency { half_life, floor };
                assert_eq!(server.is_on(), client.is_on());
                for age in 0..200 {
                    assert_eq!(
                        server.factor(age).to_bits(),
                        client.factor(age).to_bits(),
                        "half_life {half_life}, floor {floor}, age {age}"
                    );
                }
            }
        }
    }
}
