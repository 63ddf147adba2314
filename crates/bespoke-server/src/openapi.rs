//! The OpenAPI 3.1 description of the API, served at `/openapi.json`.
//!
//! Two sources, merged by [`document`]: operations derived from the handlers and their types
//! by `utoipa` (`api::Derived`: `#[utoipa::path]` on the handler, `ToSchema` on the types it
//! reads and answers, their doc comments as descriptions), and the rest, still written by hand
//! here and converted group by group. An operation or schema has exactly one source
//! (`tests::derived_and_hand_written_parts_do_not_overlap`); `tests::document_matches_routes`
//! fails when a route is added without being described (or the other way round). Error
//! answers are declared at the handler by status only; their shared descriptions and body are
//! filled in from `error_responses`.

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

fn ok(description: &str, schema: &str) -> Value {
    json!({ "description": description, "content": { "application/json": { "schema": { "$ref": format!("#/components/schemas/{schema}") } } } })
}

fn with_errors(mut responses: Value, codes: &[u16]) -> Value {
    if let (Some(r), Value::Object(e)) = (responses.as_object_mut(), error_responses(codes)) {
        r.extend(e);
    }
    responses
}

fn json_body(schema: &str) -> Value {
    json!({ "required": true, "content": { "application/json": { "schema": { "$ref": format!("#/components/schemas/{schema}") } } } })
}

/// The OpenAPI document, with each operation's security and scope taken from `routes` (the
/// API's route table, [`crate::api::ROUTES`]: passed in, so that this module describes the
/// API without depending on it).
pub fn document(routes: &[(&str, &str, Access)], derived: &utoipa::openapi::OpenApi) -> Value {
    let mut doc = hand_written();
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

/// The part still written by hand.
fn hand_written() -> Value {
    let mut doc = paths();
    if let Some(all) = doc["paths"].as_object_mut() {
        if let Value::Object(more) = gorse_paths() {
            all.extend(more);
        }
    }
    doc
}

/// The Gorse-compatible routes (`api::gorse`, docs/gorse.md), in Gorse's JSON shapes.
fn gorse_paths() -> Value {
    let tags = json!(["Gorse compatibility"]);
    let key =
        json!({ "name": "key", "in": "path", "required": true, "schema": { "type": "string" } });
    let paging = json!([
        { "name": "n", "in": "query", "schema": { "type": "integer", "minimum": 1, "default": 10 } },
        { "name": "offset", "in": "query", "schema": { "type": "integer", "minimum": 0, "default": 0 } }
    ]);
    let json_of = |description: &str, schema: Value| json!({ "description": description, "content": { "application/json": { "schema": schema } } });
    let feedback = json!({ "type": "object", "required": ["FeedbackType", "UserId", "ItemId"], "properties": {
        "FeedbackType": { "type": "string", "description": "A configured event type (events.weights)" },
        "UserId": { "type": "string" }, "ItemId": { "type": "string" },
        "Timestamp": { "type": "string", "description": "RFC 3339 or a date; now when empty" },
        "Value": { "type": "number" }, "Comment": { "type": "string" } } });
    let user = json!({ "type": "object", "required": ["UserId"], "properties": {
        "UserId": { "type": "string" }, "Labels": { "description": "An object (its fields become attributes) or a list (kept as the attribute labels)" },
        "Comment": { "type": "string" }, "Subscribe": { "type": "array", "items": { "type": "string" } } } });
    let item = json!({ "type": "object", "required": ["ItemId"], "properties": {
        "ItemId": { "type": "string" }, "IsHidden": { "type": "boolean", "description": "The opposite of available" },
        "Categories": { "type": "array", "items": { "type": "string" } }, "Timestamp": { "type": "string" },
        "Labels": { "description": "An object (its fields become attributes) or a list (kept as the attribute labels)" },
        "Comment": { "type": "string", "description": "Kept as the text field comment" } } });
    let affected = json_of(
        "Rows written",
        json!({ "type": "object", "properties": { "RowAffected": { "type": "integer" } } }),
    );
    let scores = json_of(
        "Items, best first",
        json!({ "type": "array", "items": { "type": "object", "properties": { "Id": { "type": "string" }, "Score": { "type": "number" } } } }),
    );
    let recommend = |category: bool| {
        let mut parameters = vec![key.clone()];
        if category {
            parameters.push(json!({ "name": "category", "in": "path", "required": true, "schema": { "type": "string" } }));
        }
        parameters.extend(paging.as_array().cloned().unwrap_or_default());
        parameters.push(json!({ "name": "X-API-Version", "in": "header", "description": "2: answer {Id, Score} objects instead of ids", "schema": { "type": "string" } }));
        json!({ "get": { "tags": tags, "summary": "Gorse: a user's recommendations (items they gave feedback on left out), through the ranking pipeline",
            "operationId": if category { "gorseRecommendCategory" } else { "gorseRecommend" }, "parameters": parameters,
            "responses": with_errors(json!({ "200": json_of("Item ids, or {Id, Score} with X-API-Version: 2", json!({ "type": "array" })) }), &[400]) } })
    };
    let user_feedback = |typed: bool| {
        let mut parameters = vec![key.clone()];
        if typed {
            parameters.push(json!({ "name": "type", "in": "path", "required": true, "schema": { "type": "string" } }));
        }
        json!({ "get": { "tags": tags, "summary": "Gorse: a user's feedback, newest first", "operationId": if typed { "gorseUserFeedbackOfType" } else { "gorseUserFeedback" },
            "parameters": parameters, "responses": with_errors(json!({ "200": json_of("Feedback", json!({ "type": "array", "items": feedback })) }), &[400, 404]) } })
    };
    let pair = |typed: bool| {
        let mut parameters = Vec::new();
        if typed {
            parameters.push(json!({ "name": "type", "in": "path", "required": true, "description": "A feedback type (not impression)", "schema": { "type": "string" } }));
        }
        parameters.push(json!({ "name": "user", "in": "path", "required": true, "schema": { "type": "string" } }));
        parameters.push(json!({ "name": "item", "in": "path", "required": true, "schema": { "type": "string" } }));
        let (get_id, delete_id) = if typed {
            ("gorsePairFeedbackOfType", "gorseDeletePairFeedbackOfType")
        } else {
            ("gorsePairFeedback", "gorseDeletePairFeedback")
        };
        json!({ "parameters": parameters,
            "get": { "tags": tags, "summary": "Gorse: a user's feedback on an item, newest first", "operationId": get_id,
                "responses": with_errors(json!({ "200": json_of("Feedback", json!({ "type": "array", "items": feedback })) }), &[400]) },
            "delete": { "tags": tags, "summary": "Gorse: delete a user's feedback on an item (as DELETE /v1/users/{key}/events?item=); RowAffected counts the events deleted", "operationId": delete_id,
                "responses": with_errors(json!({ "200": affected }), &[400, 507]) } })
    };
    let cursor_params = json!([
        { "name": "n", "in": "query", "description": "Page size (default 10, at most limits.max_page_size)", "schema": { "type": "integer", "minimum": 1 } },
        { "name": "cursor", "in": "query", "description": "Empty for the first page, then the previous answer's Cursor", "schema": { "type": "string" } }
    ]);
    let listing = |name: &str, row: &Value, what: &str, id: &str, typed: bool| {
        let mut parameters = cursor_params.as_array().cloned().unwrap_or_default();
        if typed {
            parameters.push(json!({ "name": "type", "in": "path", "required": true, "schema": { "type": "string" } }));
        }
        json!({ "tags": tags, "summary": format!("Gorse: {what}, a page at a time"), "operationId": id, "parameters": parameters,
            "responses": with_errors(json!({ "200": json_of("A page and the next page's cursor (empty after the last page)",
                json!({ "type": "object", "properties": { "Cursor": { "type": "string" }, name: { "type": "array", "items": row } } })) }), &[400]) })
    };
    let category = json!({ "name": "category", "in": "path", "required": true, "schema": { "type": "string" } });
    let patch = json!({ "type": "object", "additionalProperties": false, "properties": {
        "IsHidden": { "type": "boolean" }, "Categories": { "type": "array", "items": { "type": "string" } }, "Timestamp": { "type": "string" },
        "Labels": { "description": "Replaces the labels" }, "Comment": { "type": "string" } } });
    json!({
        "/api/feedback": { "post": { "tags": tags, "summary": "Gorse: insert feedback (stored as events of type FeedbackType)", "operationId": "gorseInsertFeedback",
            "requestBody": { "required": true, "content": { "application/json": { "schema": { "type": "array", "items": feedback } } } },
            "responses": with_errors(json!({ "200": affected }), &[400, 404, 409, 413, 415, 503, 507]) },
            "get": listing("Feedback", &feedback, "all feedback in the order stored", "gorseListFeedback", false) },
        "/api/feedback/{type}": { "get": listing("Feedback", &feedback, "the feedback of one type", "gorseListFeedbackOfType", true) },
        "/api/feedback/{user}/{item}": pair(false),
        "/api/feedback/{type}/{user}/{item}": pair(true),
        "/api/users": { "post": { "tags": tags, "summary": "Gorse: create or replace users", "operationId": "gorseInsertUsers",
            "requestBody": { "required": true, "content": { "application/json": { "schema": { "type": "array", "items": user } } } },
            "responses": with_errors(json!({ "200": affected }), &[400, 413, 415, 507]) },
            "get": listing("Users", &user, "all users", "gorseListUsers", false) },
        "/api/items": { "post": { "tags": tags, "summary": "Gorse: create or replace items", "operationId": "gorseInsertItems",
            "requestBody": { "required": true, "content": { "application/json": { "schema": { "type": "array", "items": item } } } },
            "responses": with_errors(json!({ "200": affected }), &[400, 409, 413, 415, 507]) },
            "get": listing("Items", &item, "all items", "gorseListItems", false) },
        "/api/item/{key}/category/{category}": { "parameters": [key, category],
            "put": { "tags": tags, "summary": "Gorse: add a category to an item", "operationId": "gorseAddItemCategory",
                "responses": with_errors(json!({ "200": affected }), &[400, 404, 409, 507]) },
            "delete": { "tags": tags, "summary": "Gorse: remove a category from an item", "operationId": "gorseRemoveItemCategory",
                "responses": with_errors(json!({ "200": affected }), &[400, 404, 507]) } },
        "/api/popular/{category}": { "get": { "tags": tags, "summary": "Gorse: popular items in a category", "operationId": "gorsePopularCategory",
            "parameters": [category, paging[0], paging[1]], "responses": with_errors(json!({ "200": scores }), &[400]) } },
        "/api/latest/{category}": { "get": { "tags": tags, "summary": "Gorse: trending items in a category", "operationId": "gorseLatestCategory",
            "parameters": [category, paging[0], paging[1]], "responses": with_errors(json!({ "200": scores }), &[400]) } },
        "/api/user/{key}/feedback": user_feedback(false),
        "/api/user/{key}/feedback/{type}": user_feedback(true),
        "/api/user": { "post": { "tags": tags, "summary": "Gorse: create or replace a user", "operationId": "gorseInsertUser",
            "requestBody": { "required": true, "content": { "application/json": { "schema": user } } },
            "responses": with_errors(json!({ "200": affected }), &[400, 413, 415, 507]) } },
        "/api/user/{key}": { "parameters": [key],
            "get": { "tags": tags, "summary": "Gorse: get a user", "operationId": "gorseGetUser",
                "responses": with_errors(json!({ "200": json_of("The user", user) }), &[400, 404]) },
            "delete": { "tags": tags, "summary": "Gorse: erase a user (as DELETE /v1/users/{key})", "operationId": "gorseDeleteUser",
                "responses": with_errors(json!({ "200": affected }), &[400, 404, 409, 507]) } },
        "/api/item": { "post": { "tags": tags, "summary": "Gorse: create or replace an item", "operationId": "gorseInsertItem",
            "requestBody": { "required": true, "content": { "application/json": { "schema": item } } },
            "responses": with_errors(json!({ "200": affected }), &[400, 409, 413, 415, 507]) } },
        "/api/item/{key}": { "parameters": [key],
            "get": { "tags": tags, "summary": "Gorse: get an item", "operationId": "gorseGetItem",
                "responses": with_errors(json!({ "200": json_of("The item", item) }), &[400, 404]) },
            "patch": { "tags": tags, "summary": "Gorse: change the fields given, keep the others", "operationId": "gorsePatchItem",
                "requestBody": { "required": true, "content": { "application/json": { "schema": patch } } },
                "responses": with_errors(json!({ "200": affected }), &[400, 404, 409, 413, 415, 507]) },
            "delete": { "tags": tags, "summary": "Gorse: delete an item and its events", "operationId": "gorseDeleteItem",
                "responses": with_errors(json!({ "200": affected }), &[400, 404, 507]) } },
        "/api/item/{key}/neighbors": { "get": { "tags": tags, "summary": "Gorse: similar items (the configured similar-items model)", "operationId": "gorseNeighbors",
            "parameters": [key, paging[0], paging[1]], "responses": with_errors(json!({ "200": scores }), &[400, 404]) } },
        "/api/recommend/{key}": recommend(false),
        "/api/recommend/{key}/{category}": recommend(true),
        "/api/popular": { "get": { "tags": tags, "summary": "Gorse: popular items by total event weight", "operationId": "gorsePopular",
            "parameters": paging, "responses": with_errors(json!({ "200": scores }), &[400]) } },
        "/api/latest": { "get": { "tags": tags, "summary": "Gorse: trending items (popularity decayed by event age); Bespoke keeps no index of items by time", "operationId": "gorseLatest",
            "parameters": paging, "responses": with_errors(json!({ "200": scores }), &[400]) } },
        "/api/session/recommend": { "post": { "tags": tags, "summary": "Gorse: recommendations for a session given as feedback (nothing is stored)", "operationId": "gorseSessionRecommend",
            "parameters": paging,
            "requestBody": { "required": true, "content": { "application/json": { "schema": { "type": "array", "items": feedback } } } },
            "responses": with_errors(json!({ "200": scores }), &[400, 413, 415]) } }
    })
}

fn paths() -> Value {
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Bespoke",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Self-hosted personalization engine. Every result carries `reasons` that say why it was chosen.",
            "license": { "name": "Apache-2.0", "identifier": "Apache-2.0" }
        },
        "security": [{ "apiKey": [] }],
        "paths": {
        },
        "components": {
          "securitySchemes": {
            "apiKey": { "type": "http", "scheme": "bearer", "description": "An API key (bsk_...) from `bespoke keys create` or POST /v1/keys; also accepted as X-Api-Key. Each operation's x-scope names the scope it needs; a scope includes the weaker ones (write grants read, admin grants all). HEAD is served wherever GET is, under the same scope." }
          },
          "schemas": schemas()
        }
    })
}

fn schemas() -> Value {
    json!({
            "Error": { "type": "object", "required": ["error"], "properties": { "error": { "type": "object", "required": ["code", "message"], "properties": {
                "code": { "type": "string", "description": "Stable machine-readable code, e.g. invalid_field, invalid_json, not_found, event_conflict" },
                "message": { "type": "string" },
                "field": { "type": "string", "description": "JSON path, query parameter or header at fault" } } } } }
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

    #[test]
    fn derived_and_hand_written_parts_do_not_overlap() {
        let mut doc = hand_written();
        assert_eq!(
            merge_derived(&mut doc, &crate::api::derived_openapi()),
            Vec::<String>::new()
        );
    }

    /// A value `schema` describes, every property given (`$ref` followed).
    fn sample(doc: &Value, schema: &Value) -> Value {
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
