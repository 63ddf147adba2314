//! The OpenAPI 3.1 description of the API, served at `/openapi.json`.
//!
//! Derived from the handlers and their types by `utoipa`: `#[utoipa::path]` on each handler,
//! `ToSchema` on the types it reads and answers, `IntoParams` on its query (doc-only structs
//! where a handler parses its query by hand, kept in step by tests), doc comments as summaries
//! and descriptions. Each handler module has its own `Api`, merged by `api::derived_openapi`.
//! [`document`] lays the derived part into a small written frame (version, info, the security
//! scheme and the `Error` schema), describes the routes that share a handler as copies
//! (`ALIASES`), and adds what the route table knows: each operation's scope and the answers
//! every authorized route can give (401, 403, 429, 408). Error answers are declared at the
//! handler by status only; their shared descriptions and body are filled in from
//! `error_responses`. `tests::document_matches_routes` fails when a route is added without
//! being described (or the other way round).

use serde_json::{Value, json};

use crate::auth::Access;

/// The derived part as JSON, error answers filled in.
fn derived(of: &utoipa::openapi::OpenApi) -> Value {
    let mut doc = serde_json::to_value(of).expect("the document serializes");
    if let Some(paths) = doc["paths"].as_object_mut() {
        for op in paths
            .values_mut()
            .filter_map(Value::as_object_mut)
            .flat_map(|p| p.values_mut())
        {
            let Some(responses) = op.get_mut("responses").and_then(Value::as_object_mut) else {
                continue;
            };
            let codes: Vec<u16> = responses
                .keys()
                .filter_map(|c| c.parse().ok())
                .filter(|&c| c >= 400)
                .collect();
            if let Value::Object(errors) = error_responses(&codes) {
                responses.extend(errors);
            }
        }
    }
    doc
}

/// Moves the derived operations and schemas into `doc`; the (path, method) pairs and schema
/// names that `doc` already had (none, when each has one source).
fn merge_derived(doc: &mut Value, of: &utoipa::openapi::OpenApi) -> Vec<String> {
    let derived = derived(of);
    let mut overlap = Vec::new();
    if let (Some(all), Some(paths)) = (doc["paths"].as_object_mut(), derived["paths"].as_object()) {
        for (path, item) in paths {
            let entry = all.entry(path.clone()).or_insert_with(|| json!({}));
            for (method, op) in item.as_object().into_iter().flatten() {
                if entry.get(method).is_some() {
                    overlap.push(format!("{method} {path}"));
                }
                entry[method] = op.clone();
            }
        }
    }
    if let (Some(all), Some(schemas)) = (
        doc["components"]["schemas"].as_object_mut(),
        derived["components"]["schemas"].as_object(),
    ) {
        for (name, schema) in schemas {
            if all.insert(name.clone(), schema.clone()).is_some() {
                overlap.push(format!("schema {name}"));
            }
        }
    }
    overlap
}

fn error_responses(codes: &[u16]) -> Value {
    let mut map = serde_json::Map::new();
    for code in codes {
        let description = match code {
            400 => "Invalid input; `error.field` names the offending value",
            404 => "Not found",
            409 => {
                "A conflict: an event_id reused for a different event, a training run already in progress, a decision id reused, a slot already rewarded, a decision not activated, or a limit on server state reached (too_many_loops, too_many_categories)"
            }
            401 => "Missing, invalid or revoked API key",
            403 => "The key lacks the scope this route needs (x-scope)",
            408 => {
                "The body stalled longer than server.body_timeout_secs, or (routes with a deadline) the request was not answered within server.request_timeout_secs"
            }
            413 => "Body larger than limits.max_body_bytes",
            415 => "Content-Type is not application/json",
            422 => "Valid JSON that cannot be applied (e.g. embedding dimension mismatch)",
            429 => {
                "The key is over its rate limit (rate_limited), or the caller's address failed authentication too often (auth_throttled); see the Retry-After header"
            }
            410 => "The decision's reward window has closed",
            503 => {
                "Shutting down, or the PostgreSQL store is unreachable (store_unavailable, with Retry-After)"
            }
            507 => "Storage full; nothing was stored",
            _ => "Error",
        };
        map.insert(
            code.to_string(),
            json!({ "description": description, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } }),
        );
    }
    Value::Object(map)
}

/// The OpenAPI document, with each operation's security and scope taken from `routes` (the
/// API's route table, [`crate::api::ROUTES`]: passed in, so that this module describes the
/// API without depending on it).
pub fn document(routes: &[(&str, &str, Access)], derived: &utoipa::openapi::OpenApi) -> Value {
    let mut doc = frame();
    merge_derived(&mut doc, derived);
    add_aliases(&mut doc);
    for (method, path, access) in routes {
        let Some(op) = doc["paths"][path]
            .get_mut(method.to_lowercase())
            .and_then(Value::as_object_mut)
        else {
            continue;
        };
        match access {
            Access::Public => {
                op.insert("security".into(), json!([]));
            }
            Access::Needs(scope) => {
                op.insert("x-scope".into(), json!(scope.as_str()));
                let codes = [401, 403, 429];
                if let (Some(r), Value::Object(e)) = (
                    op.get_mut("responses").and_then(Value::as_object_mut),
                    error_responses(&codes),
                ) {
                    r.extend(e);
                }
            }
        }
        // Any route can time out while its body arrives, or run past the request deadline.
        if let (Some(r), Value::Object(e)) = (
            op.get_mut("responses").and_then(Value::as_object_mut),
            error_responses(&[408]),
        ) {
            r.extend(e);
        }
    }
    doc
}

/// Routes served by the same handler as another route: `(alias, original, operationId suffix)`.
/// A handler's `#[utoipa::path]` names one path, so the alias is described as a copy.
const ALIASES: &[(&str, &str, &str)] = &[
    // Azure's newer clients put the API version in `?api-version=` instead of the path.
    (
        "/personalizer/rank",
        "/personalizer/v1.0/rank",
        "Unversioned",
    ),
    (
        "/personalizer/events/{key}/reward",
        "/personalizer/v1.0/events/{key}/reward",
        "Unversioned",
    ),
    (
        "/personalizer/events/{key}/activate",
        "/personalizer/v1.0/events/{key}/activate",
        "Unversioned",
    ),
    (
        "/personalizer/v1.1-preview.1/multislot/rank",
        "/personalizer/multislot/rank",
        "V11",
    ),
    (
        "/personalizer/v1.1-preview.1/multislot/events/{key}/reward",
        "/personalizer/multislot/events/{key}/reward",
        "V11",
    ),
    (
        "/personalizer/v1.1-preview.1/multislot/events/{key}/activate",
        "/personalizer/multislot/events/{key}/activate",
        "V11",
    ),
    // Gorse's clients ask with a trailing slash when no category is given.
    ("/api/recommend/{key}/", "/api/recommend/{key}", "Slash"),
];

/// Describes each of [`ALIASES`] as a copy of its original, operation ids suffixed.
fn add_aliases(doc: &mut Value) {
    let Some(all) = doc["paths"].as_object_mut() else {
        return;
    };
    for (alias, of, suffix) in ALIASES {
        let Some(mut item) = all.get(*of).cloned() else {
            continue;
        };
        for op in item
            .as_object_mut()
            .into_iter()
            .flat_map(|i| i.values_mut())
        {
            if let Some(id) = op["operationId"].as_str().map(|s| format!("{s}{suffix}")) {
                op["operationId"] = json!(id);
            }
        }
        all.insert((*alias).to_owned(), item);
    }
}

/// The document's frame, written here: version, info, security scheme and the `Error` schema
/// that every error answer refers to. Every operation and every other schema is derived.
fn frame() -> Value {
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Bespoke",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Self-hosted personalization engine. Every result carries `reasons` that say why it was chosen.",
            "license": { "name": "Apache-2.0", "identifier": "Apache-2.0" }
        },
        "security": [{ "apiKey": [] }],
        "paths": {},
        "components": {
          "securitySchemes": {
            "apiKey": { "type": "http", "scheme": "bearer", "description": "An API key (bsk_...) from `bespoke keys create` or POST /v1/keys; also accepted as X-Api-Key. Each operation's x-scope names the scope it needs; a scope includes the weaker ones (write grants read, admin grants all). HEAD is served wherever GET is, under the same scope." }
          },
          "schemas": {
            "Error": { "type": "object", "required": ["error"], "properties": { "error": { "type": "object", "required": ["code", "message"], "properties": {
                "code": { "type": "string", "description": "Stable machine-readable code, e.g. invalid_field, invalid_json, not_found, event_conflict" },
                "message": { "type": "string" },
                "field": { "type": "string", "description": "JSON path, query parameter or header at fault" } } } } }
          }
        }
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn document_matches_routes() {
        let doc = document(crate::api::ROUTES, &crate::api::derived_openapi());
        let mut documented = BTreeSet::new();
        for (path, ops) in doc["paths"].as_object().unwrap() {
            for method in ops.as_object().unwrap().keys() {
                if method != "parameters" {
                    documented.insert((method.to_uppercase(), path.clone()));
                }
            }
        }
        let routes: BTreeSet<(String, String)> = crate::api::ROUTES
            .iter()
            .map(|(m, p, _)| (m.to_string(), p.to_string()))
            .collect();
        assert_eq!(documented, routes);
    }

    #[test]
    fn every_route_documents_its_timeout() {
        let doc = document(crate::api::ROUTES, &crate::api::derived_openapi());
        for (method, path, _) in crate::api::ROUTES {
            let op = &doc["paths"][path][method.to_lowercase()];
            assert!(
                op["responses"]["408"]["description"].is_string(),
                "{method} {path} does not document 408"
            );
        }
    }

    /// The frame describes no operation and no schema but `Error`: everything else comes from
    /// the handlers, once.
    #[test]
    fn the_frame_adds_nothing_the_handlers_describe() {
        let mut doc = frame();
        assert_eq!(doc["paths"], json!({}));
        assert_eq!(
            merge_derived(&mut doc, &crate::api::derived_openapi()),
            Vec::<String>::new()
        );
    }

    /// A value `schema` describes, every property given (`$ref` followed).
    pub(crate) fn sample(doc: &Value, schema: &Value) -> Value {
        if let Some(r) = schema["$ref"].as_str() {
            let name = r.trim_start_matches("#/components/schemas/");
            return sample(doc, &doc["components"]["schemas"][name]);
        }
        if let Some(first) = schema["oneOf"].as_array().and_then(|a| a.first()) {
            return sample(doc, first);
        }
        if let Some(first) = schema["enum"].as_array().and_then(|a| a.first()) {
            return first.clone();
        }
        let kinds: Vec<&str> = match &schema["type"] {
            Value::String(t) => vec![t.as_str()],
            Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
            _ => vec!["object"],
        };
        match kinds
            .iter()
            .find(|k| **k != "null")
            .copied()
            .unwrap_or("null")
        {
            "string" if schema["format"] == "date-time" => json!("2026-01-02T03:04:05Z"),
            "string" => json!("s"),
            "integer" => json!(2),
            "number" => json!(1.5),
            "boolean" => json!(true),
            // As many items as the schema asks for (a pair is two), at least one.
            "array" => {
                let n = schema["minItems"].as_u64().unwrap_or(1).max(1) as usize;
                Value::Array(vec![sample(doc, &schema["items"]); n])
            }
            "object" => Value::Object(
                schema["properties"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| (k.clone(), sample(doc, v)))
                    .collect(),
            ),
            _ => Value::Null,
        }
    }

    /// Checks that the schema `name` in the served document says exactly what `T` reads
    /// (see [`derived_request_schemas_match_what_the_types_read`]); for each group's own tests.
    pub(crate) fn assert_request_schema<T: serde::de::DeserializeOwned>(name: &str) {
        check::<T>(
            &document(crate::api::ROUTES, &crate::api::derived_openapi()),
            name,
        );
    }

    fn check<T: serde::de::DeserializeOwned>(doc: &Value, name: &str) {
        let schema = &doc["components"]["schemas"][name];
        assert!(schema.is_object(), "no schema {name}");
        let full = sample(doc, schema);
        if let Err(e) = serde_json::from_value::<T>(full.clone()) {
            panic!("{name}: {full} is refused: {e}");
        }
        for required in schema["required"].as_array().into_iter().flatten() {
            let mut v = full.clone();
            v.as_object_mut()
                .unwrap()
                .remove(required.as_str().unwrap());
            assert!(
                serde_json::from_value::<T>(v).is_err(),
                "{name} reads a value without {required}"
            );
        }
        assert_eq!(schema["additionalProperties"], false, "{name}");
        let mut v = full;
        v.as_object_mut()
            .unwrap()
            .insert("undocumented".into(), json!(1));
        assert!(serde_json::from_value::<T>(v).is_err(), "{name}");
    }
    /// Each derived request body's schema says exactly what its type reads: a value with every
    /// property the schema lists is read, one without a required property or with a property
    /// the schema does not list is refused (the types deny unknown fields).
    #[test]
    fn derived_request_schemas_match_what_the_types_read() {
        let doc = document(crate::api::ROUTES, &crate::api::derived_openapi());
        check::<crate::wire::EventJson>(&doc, "Event");
        check::<crate::api::events::PostEvents>(&doc, "EventBatch");
        check::<crate::api::events::PostImpressions>(&doc, "Impressions");
        check::<crate::api::events::ImpressionJson>(&doc, "Impression");
        check::<crate::api::events::ServedVariant>(&doc, "ServedVariant");
        check::<crate::wire::ItemJson>(&doc, "Item");
        check::<crate::wire::UserJson>(&doc, "User");
        check::<crate::wire::ConsentJson>(&doc, "Consent");
        check::<crate::api::catalog::UserIn>(&doc, "UserIn");
        check::<crate::rules::spec::RuleSpec>(&doc, "RuleIn");
        check::<crate::rules::spec::BoostSpec>(&doc, "Boost");
        check::<crate::rules::spec::PromoteSpec>(&doc, "Promotion");
        // The operations reference them as the handlers read them.
        let body = |path: &str, method: &str| {
            doc["paths"][path][method]["requestBody"]["content"]["application/json"]["schema"]
                ["$ref"]
                .clone()
        };
        assert_eq!(
            body("/v1/events", "post"),
            "#/components/schemas/EventBatch"
        );
        assert_eq!(
            body("/v1/impressions", "post"),
            "#/components/schemas/Impressions"
        );
    }

    /// Derived answers' error codes carry the shared descriptions and the Error body.
    #[test]
    fn derived_error_answers_are_filled_in() {
        let doc = document(crate::api::ROUTES, &crate::api::derived_openapi());
        let op = &doc["paths"]["/v1/events"]["post"];
        for code in ["400", "409", "413", "507", "401", "408"] {
            let r = &op["responses"][code];
            assert!(
                r["description"].as_str().is_some_and(|d| d.len() > 8),
                "{code}: {r}"
            );
            assert_eq!(
                r["content"]["application/json"]["schema"]["$ref"], "#/components/schemas/Error",
                "{code}"
            );
        }
        assert_eq!(op["x-scope"], "write");
        assert_eq!(
            doc["paths"]["/v1/users/{key}/events"]["get"]["parameters"][0]["name"],
            "key"
        );
    }

    #[test]
    fn every_reference_resolves() {
        let doc = document(crate::api::ROUTES, &crate::api::derived_openapi());
        let text = doc.to_string();
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        for piece in text.split("#/components/schemas/").skip(1) {
            let name: String = piece.chars().take_while(|c| c.is_alphanumeric()).collect();
            assert!(schemas.contains_key(&name), "dangling $ref {name}");
        }
    }
}
