//! JSON features of decisions, flattened into namespaced [`RawFeature`]s.
//!
//! The top-level key is the namespace. Strings are categoricals (`device=mobile`, value 1),
//! numbers are numeric features, `true` is 1 (`false` and `null` are absent), arrays of numbers
//! are dense vectors (`embedding[0]`, `embedding[1]`, …), arrays of strings are sets of
//! categoricals, and nested objects extend the name with a dot. Personalizer's form, a list of
//! objects, is accepted too: each object's keys are namespaces.

use bespoke_algo::bandit::RawFeature;
use serde_json::Value;

/// Most features one context or action may have after flattening.
pub const MAX_FEATURES: usize = 4096;
/// Deepest nesting accepted inside a feature value.
pub const MAX_DEPTH: usize = 8;

/// Why features were refused: the path of the offending value and what was wrong.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureError {
    /// Path of the offending value, like `context.user.age`.
    pub field: String,
    /// What was wrong.
    pub message: String,
}

/// Flattens a feature object (or a list of objects) found at `path`.
pub fn flatten(path: &str, v: &Value) -> Result<Vec<RawFeature>, FeatureError> {
    let mut out = Vec::new();
    match v {
        Value::Null => {}
        Value::Object(map) => {
            for (k, v) in map {
                walk(k, k, v, &|| format!("{path}.{k}"), 0, &mut out)?;
            }
        }
        Value::Array(list) => {
            for (i, item) in list.iter().enumerate() {
                let Value::Object(map) = item else {
                    return Err(FeatureError {
                        field: format!("{path}[{i}]"),
                        message: "must be an object of features".into(),
                    });
                };
                for (k, v) in map {
                    walk(k, k, v, &|| format!("{path}[{i}].{k}"), 0, &mut out)?;
                }
            }
        }
        _ => {
            return Err(FeatureError {
                field: path.into(),
                message: "must be an object of features (or a list of such objects)".into(),
            });
        }
    }
    Ok(out)
}

/// Walks one value. `path` builds the value's JSON path, only when an error needs it: paths
/// are most of the allocations otherwise.
fn walk(
    ns: &str,
    name: &str,
    v: &Value,
    path: &dyn Fn() -> String,
    depth: usize,
    out: &mut Vec<RawFeature>,
) -> Result<(), FeatureError> {
    let err = |m: &str| FeatureError {
        field: path(),
        message: m.to_owned(),
    };
    if depth > MAX_DEPTH {
        return Err(err("features nest too deeply"));
    }
    if out.len() >= MAX_FEATURES {
        return Err(err(&format!("more than {MAX_FEATURES} features")));
    }
    if ns.is_empty() {
        return Err(err("feature names must not be empty"));
    }
    match v {
        Value::Null | Value::Bool(false) => {}
        Value::Bool(true) => out.push(RawFeature::new(ns, name, 1.0)),
        Value::String(s) => {
            let mut n = String::with_capacity(name.len() + 1 + s.len());
            n.push_str(name);
            n.push('=');
            n.push_str(s);
            out.push(RawFeature::new(ns, n, 1.0));
        }
        Value::Number(n) => {
            let x = n.as_f64().unwrap_or(f64::NAN) as f32;
            if !x.is_finite() {
                return Err(err(
                    "must be a finite number within the range of a 32-bit float",
                ));
            }
            out.push(RawFeature::new(ns, name, x));
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let p = || format!("{}[{i}]", path());
                match item {
                    Value::Number(_) => {
                        walk(ns, &format!("{name}[{i}]"), item, &p, depth + 1, out)?
                    }
                    _ => walk(ns, name, item, &p, depth + 1, out)?,
                }
            }
        }
        Value::Object(map) => {
            for (k, v) in map {
                walk(
                    ns,
                    &format!("{name}.{k}"),
                    v,
                    &|| format!("{}.{k}", path()),
                    depth + 1,
                    out,
                )?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn names(v: &[RawFeature]) -> Vec<(String, String, f32)> {
        v.iter()
            .map(|f| (f.namespace.clone(), f.name.clone(), f.value))
            .collect()
    }

    #[test]
    fn flattens_every_kind_of_value() {
        let f = flatten(
            "context",
            &json!({"device": "mobile", "hour": 13, "vip": true, "gone": false, "x": null,
                    "emb": [0.5, -1], "tags": ["a", "b"], "user": {"age": 30, "country": "DE"}}),
        )
        .unwrap();
        let mut got = names(&f);
        got.sort_by(|a, b| a.1.cmp(&b.1));
        assert_eq!(
            got,
            vec![
                ("device".into(), "device=mobile".into(), 1.0),
                ("emb".into(), "emb[0]".into(), 0.5),
                ("emb".into(), "emb[1]".into(), -1.0),
                ("hour".into(), "hour".into(), 13.0),
                ("tags".into(), "tags=a".into(), 1.0),
                ("tags".into(), "tags=b".into(), 1.0),
                ("user".into(), "user.age".into(), 30.0),
                ("user".into(), "user.country=DE".into(), 1.0),
                ("vip".into(), "vip".into(), 1.0),
            ]
        );
    }

    #[test]
    fn personalizer_lists_of_objects() {
        let f = flatten(
            "contextFeatures",
            &json!([{"time": "morning"}, {"os": {"name": "ios"}}]),
        )
        .unwrap();
        assert_eq!(
            names(&f),
            vec![
                ("time".into(), "time=morning".into(), 1.0),
                ("os".into(), "os.name=ios".into(), 1.0)
            ]
        );
    }

    #[test]
    fn errors_name_the_path() {
        let e = flatten("context", &json!({"a": {"b": 1e300}})).unwrap_err();
        assert_eq!(e.field, "context.a.b");
        let e = flatten("context", &json!(5)).unwrap_err();
        assert_eq!(e.field, "context");
        let e = flatten("context", &json!([1])).unwrap_err();
        assert_eq!(e.field, "context[0]");
        let deep = (0..20).fold(json!(1), |v, _| json!({ "k": v }));
        assert!(flatten("context", &json!({ "a": deep })).is_err());
    }
}
