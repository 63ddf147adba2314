//! What the hybrid model reads from an item or a user: their content as a [`Bag`] of named
//! features (see `bespoke_algo::content` for how bags are weighted and mapped to factors).
//!
//! Feature names say where they come from, so that reasons can quote them: `category:<c>`,
//! `word:<token>` (any text field), `attr:<name>=<value>` (string, boolean, small integer or a
//! list of those: tags), `numeric:<name>~<log2 bucket>`, and embeddings by name.

use std::collections::BTreeMap;

use bespoke_algo::Bag;
use bespoke_algo::content::tokenize;
use serde_json::{Map, Value};

/// The content of an item.
pub fn item_bag(
    categories: &[String],
    text: &BTreeMap<String, String>,
    numeric: &BTreeMap<String, f64>,
    attributes: &Map<String, Value>,
    embeddings: &BTreeMap<String, Vec<f32>>,
) -> Bag {
    let mut sparse: Vec<(String, f32)> = categories
        .iter()
        .map(|c| (format!("category:{c}"), 1.0))
        .collect();
    for t in text.values() {
        tokenize(t, &mut sparse);
    }
    for (name, &v) in numeric {
        // Orders of magnitude: a price of 12 and one of 15 look alike, 12 and 1,200 do not.
        if v.is_finite() && v > 0.0 {
            sparse.push((format!("numeric:{name}~{}", v.log2().floor() as i64), 1.0));
        }
    }
    attribute_features(attributes, &mut sparse);
    Bag {
        sparse,
        dense: embeddings
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }
}

/// The content of a user (their attributes) or of a request (its context).
pub fn attribute_bag(attributes: &Map<String, Value>) -> Bag {
    let mut sparse = Vec::new();
    attribute_features(attributes, &mut sparse);
    Bag {
        sparse,
        dense: Vec::new(),
    }
}

fn attribute_features(attributes: &Map<String, Value>, out: &mut Vec<(String, f32)>) {
    for (name, v) in attributes {
        let mut push = |v: &Value| match v {
            Value::String(s) if !s.is_empty() && s.len() <= 100 => {
                out.push((format!("attr:{name}={s}"), 1.0));
            }
            Value::Bool(true) => out.push((format!("attr:{name}"), 1.0)),
            Value::Number(n) => {
                // Small integers are codes (a level, a region); other numbers carry no category.
                if let Some(i) = n.as_i64().filter(|i| i.abs() < 1000) {
                    out.push((format!("attr:{name}={i}"), 1.0));
                }
            }
            _ => {}
        };
        match v {
            Value::Array(xs) => xs.iter().for_each(&mut push),
            v => push(v),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn item_features_are_named_by_origin() {
        let attributes = json!({"tags": ["cozy", "retro"], "new": true, "brand": "acme", "rating": 4.5, "level": 3})
            .as_object()
            .cloned()
            .unwrap();
        let bag = item_bag(
            &["jackets".into()],
            &BTreeMap::from([("title".into(), "Warm Wool Jacket".into())]),
            &BTreeMap::from([("price".into(), 100.0)]),
            &attributes,
            &BTreeMap::from([("clip".into(), vec![0.5, 0.5])]),
        );
        let names: Vec<&str> = bag.sparse.iter().map(|s| s.0.as_str()).collect();
        assert_eq!(
            names,
            [
                "category:jackets",
                "word:warm",
                "word:wool",
                "word:jacket",
                "numeric:price~6",
                "attr:brand=acme",
                "attr:level=3",
                "attr:new",
                "attr:tags=cozy",
                "attr:tags=retro",
            ]
        );
        assert_eq!(bag.dense, vec![("clip".to_owned(), vec![0.5, 0.5])]);
    }
}
