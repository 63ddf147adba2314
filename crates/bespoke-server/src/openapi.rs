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

fn key_param() -> Value {
    json!({ "name": "key", "in": "path", "required": true, "description": "External key: 1 to limits.max_key_bytes bytes of UTF-8, no control or invisible characters", "schema": { "type": "string" } })
}

/// `POST /v1/users/{key}/rank`.
fn rank_path() -> Value {
    json!({ "post": {
        "summary": "Rank supplied candidates for a user: every item back, best first, with scores and reasons",
        "description": "Up to 1,000 item keys, each once. Items are scored by one model (model, default serving.default_model; a tuned blend ranks by its first model, as sessions do) from the user's history; a user never seen, or one without history, is ranked by `history` (a session, oldest first), else by their attributes and `context` through the content model. Items the model has no row for are scored by the content model when the catalog has their content (items without events); the rest come last, in the order given, with `\"unknown\": true`, `score: null` and a `cold_start` reason. Without consent to personalization, without a trained model or with model=popular, items are ranked by popularity. The same pipeline as recommendations: `explain=full` and `diversity` work here too.",
        "operationId": "rankItems",
        "parameters": [key_param()],
        "requestBody": { "required": true, "content": { "application/json": {
            "schema": { "$ref": "#/components/schemas/RankIn" },
            "example": { "items": ["sku-1", "sku-2", "sku-3", "sku-new"], "history": ["sku-9"], "context": { "device": "mobile" }, "explain": "full" } } } },
        "responses": with_errors(json!({ "200": { "description": "Every supplied item, best first", "content": { "application/json": {
            "schema": { "$ref": "#/components/schemas/Ranked" },
            "example": { "user": "u1", "personalized": true, "model": "als", "model_version": 3, "items": [
                { "item": "sku-2", "score": 0.82, "reasons": [{ "kind": "als", "message": "because of sku-9 in this history", "item": "sku-9", "weight": 0.8 }],
                  "contributions": [{ "term": "history_item", "item": "sku-9", "value": 0.8 }, { "term": "history_item", "item": "sku-4", "value": 0.02 }] },
                { "item": "sku-1", "score": 0.31, "reasons": [{ "kind": "als", "message": "because of sku-9 in this history", "item": "sku-9", "weight": 0.31 }],
                  "contributions": [{ "term": "history_item", "item": "sku-9", "value": 0.31 }] },
                { "item": "sku-new", "score": null, "unknown": true, "reasons": [{ "kind": "cold_start", "message": "not in the catalog: ranked last" }] } ] } } } } }), &[400, 413, 415]) } })
}

/// Paths of the decision loops and the Personalizer-compatible routes.
fn loop_paths() -> Value {
    json!({
            "/v1/loops": { "get": { "summary": "Every decision loop with its configuration and counts", "operationId": "listLoops",
                "responses": with_errors(json!({ "200": ok("The loops", "LoopList") }), &[]) } },
            "/v1/loops/{key}": {
                "parameters": [loop_param()],
                "get": { "summary": "A decision loop: configuration, learner state, log counts and apprentice agreement", "operationId": "getLoop",
                    "responses": with_errors(json!({ "200": ok("The loop", "Loop") }), &[400, 404]) },
                "put": { "summary": "Create or reconfigure a loop; a change of bits, learning_rate or interactions rebuilds the learner from the whole log", "operationId": "putLoop",
                    "requestBody": json_body("LoopConfig"),
                    "responses": with_errors(json!({ "200": ok("The loop", "Loop") }), &[400, 409, 413, 415, 507]) } },
            "/v1/loops/{key}/decisions": { "post": {
                "summary": "Choose a ranking (a slate of `slots` actions) under a context, with probabilities and an explanation",
                "description": "The loop is created with the default configuration if it does not exist (audited as loop.create; 409 too_many_loops past decisions.max_loops; 404 unknown_loop when decisions.auto_create_loops is off). The decision is logged before the answer; reward it within the loop's reward_wait_seconds.",
                "operationId": "decide", "parameters": [loop_param()], "requestBody": json_body("DecisionIn"),
                "responses": with_errors(json!({ "201": ok("The decision", "Decision") }), &[400, 404, 409, 413, 415, 507]) } },
            "/v1/loops/{key}/evaluation": { "get": {
                "summary": "Off-policy evaluation of the loop's logs: IPS, SNIPS and DR with 95% intervals for the online policy, uniform random, the baseline and candidate configurations; drop-one feature importance",
                "operationId": "evaluateLoop",
                "parameters": [loop_param(), { "name": "max_decisions", "in": "query", "description": "Most recent settled decisions to use, 1 to decisions.evaluation_max_decisions", "schema": { "type": "integer", "minimum": 1 } }],
                "responses": with_errors(json!({ "200": ok("The evaluation", "Evaluation") }), &[400, 404]) } },
            "/v1/loops/{key}/evaluation/apply": { "post": {
                "summary": "Apply a candidate configuration listed by the evaluation (by its name)", "operationId": "applyCandidate",
                "parameters": [loop_param()],
                "requestBody": { "required": true, "content": { "application/json": { "schema": { "type": "object", "required": ["candidate"], "properties": { "candidate": { "type": "string" } } } } } },
                "responses": with_errors(json!({ "200": ok("The loop", "Loop") }), &[400, 404, 413, 415, 507]) } },
            "/v1/decisions/{key}/reward": { "post": {
                "summary": "Reward one slot of a decision; the learner learns from it at once", "operationId": "rewardDecision",
                "parameters": [decision_param()],
                "requestBody": { "required": true, "content": { "application/json": { "schema": { "type": "object", "required": ["value"], "properties": { "value": { "type": "number" }, "slot": { "type": "integer", "minimum": 0, "default": 0 } } } } } },
                "responses": with_errors(json!({ "200": ok("Recorded", "RewardAck") }), &[400, 404, 409, 410, 413, 415, 507]) } },
            "/v1/decisions/{key}/activate": { "post": {
                "summary": "Activate a decision made with defer_activation: its rewards count from now on", "operationId": "activateDecision",
                "parameters": [decision_param()],
                "responses": with_errors(json!({ "200": { "description": "Activated" } }), &[400, 404, 410, 507]) } },
            "/personalizer/v1.0/rank": { "post": {
                "summary": "Azure Personalizer v1.0 Rank, mapped onto the loop decisions.personalizer_loop (key also accepted in Ocp-Apim-Subscription-Key)",
                "operationId": "personalizerRank",
                "requestBody": { "required": true, "content": { "application/json": { "schema": { "type": "object", "required": ["actions"], "properties": {
                    "contextFeatures": { "type": "array", "items": { "type": "object" } },
                    "actions": { "type": "array", "items": { "type": "object", "required": ["id"], "properties": { "id": { "type": "string" }, "features": { "type": "array", "items": { "type": "object" } } } } },
                    "excludedActions": { "type": "array", "items": { "type": "string" } },
                    "eventId": { "type": "string" }, "deferActivation": { "type": "boolean" } } } } } },
                "responses": with_errors(json!({ "201": { "description": "Ranking, eventId and rewardActionId", "content": { "application/json": { "schema": { "type": "object", "properties": {
                    "ranking": { "type": "array", "items": { "type": "object", "properties": { "id": { "type": "string" }, "probability": { "type": "number" } } } },
                    "eventId": { "type": "string" }, "rewardActionId": { "type": "string" } } } } } } }), &[400, 409, 413, 415, 507]) } },
            "/personalizer/v1.0/events/{key}/reward": { "post": {
                "summary": "Azure Personalizer v1.0 Reward", "operationId": "personalizerReward", "parameters": [decision_param()],
                "requestBody": { "required": true, "content": { "application/json": { "schema": { "type": "object", "required": ["value"], "properties": { "value": { "type": "number" } } } } } },
                "responses": with_errors(json!({ "204": { "description": "Recorded" } }), &[400, 404, 409, 410, 413, 415, 507]) } },
            "/personalizer/v1.0/events/{key}/activate": { "post": {
                "summary": "Azure Personalizer v1.0 Activate", "operationId": "personalizerActivate", "parameters": [decision_param()],
                "responses": with_errors(json!({ "204": { "description": "Activated" } }), &[400, 404, 410, 507]) } }
    })
}

/// Azure Personalizer's multi-slot routes under `prefix`.
fn multislot_paths(prefix: &str, tag: &str) -> serde_json::Map<String, Value> {
    let mut m = serde_json::Map::new();
    m.insert(format!("{prefix}/multislot/rank"), json!({ "post": {
        "summary": "Azure Personalizer multi-slot Rank: one action per slot; slot features join the context for that slot, each slot has its own excludedActions and baselineAction",
        "operationId": format!("personalizerMultiSlotRank{tag}"),
        "requestBody": { "required": true, "content": { "application/json": { "schema": { "type": "object", "required": ["actions", "slots"], "properties": {
            "contextFeatures": { "type": "array", "items": { "type": "object" } },
            "actions": { "type": "array", "items": { "type": "object" } },
            "slots": { "type": "array", "items": { "type": "object", "required": ["id"], "properties": {
                "id": { "type": "string" }, "features": { "type": "array", "items": { "type": "object" } },
                "excludedActions": { "type": "array", "items": { "type": "string" } }, "baselineAction": { "type": "string" } } } },
            "eventId": { "type": "string" }, "deferActivation": { "type": "boolean" } } } } } },
        "responses": with_errors(json!({ "201": { "description": "slots [{id, rewardActionId}] and eventId" } }), &[400, 409, 413, 415, 507]) } }));
    m.insert(format!("{prefix}/multislot/events/{{key}}/reward"), json!({ "post": {
        "summary": "Azure Personalizer multi-slot Reward: {reward: [{slotId, value}]}",
        "operationId": format!("personalizerMultiSlotReward{tag}"), "parameters": [decision_param()],
        "requestBody": { "required": true, "content": { "application/json": { "schema": { "type": "object", "required": ["reward"] } } } },
        "responses": with_errors(json!({ "204": { "description": "Recorded" } }), &[400, 404, 409, 410, 413, 415, 507]) } }));
    m.insert(format!("{prefix}/multislot/events/{{key}}/activate"), json!({ "post": {
        "summary": "Azure Personalizer multi-slot Activate",
        "operationId": format!("personalizerMultiSlotActivate{tag}"), "parameters": [decision_param()],
        "responses": with_errors(json!({ "204": { "description": "Activated" } }), &[400, 404, 410, 507]) } }));
    m
}

fn loop_param() -> Value {
    json!({ "name": "key", "in": "path", "required": true, "description": "Loop name, 1 to 128 bytes", "schema": { "type": "string" } })
}

fn decision_param() -> Value {
    json!({ "name": "key", "in": "path", "required": true, "description": "Decision id (Personalizer's eventId), 1 to 256 bytes", "schema": { "type": "string" } })
}

fn n_param() -> Value {
    json!({ "name": "n", "in": "query", "description": "Number of results, 1 to limits.max_n (1000 by default); default serving.default_n", "schema": { "type": "integer", "minimum": 1 } })
}

fn explain_param() -> Value {
    json!({ "name": "explain", "in": "query", "description": "`reasons` (default) or `full`: each result also carries `contributions`, the terms of its score, which sum to it (see the Contribution schema for each model's terms)", "schema": { "type": "string", "enum": ["reasons", "full"] } })
}

fn diversity_param() -> Value {
    json!({ "name": "diversity", "in": "query", "description": "λ of the diversity re-ranker, 0 to 1 (maximal marginal relevance over the candidates: (1 − λ)·relevance − λ·similarity to the items above, similarity the cosine of iALS item factors, else shared categories). 0 (default) leaves the ranking as scored; scores never change, and an item moved down gets a `diversity` reason", "schema": { "type": "number", "minimum": 0, "maximum": 1, "default": 0 } })
}

fn category_param() -> Value {
    json!({ "name": "category", "in": "query", "description": "Only items in any of these categories (comma-separated or repeated)", "schema": { "type": "string" } })
}

fn exclude_param() -> Value {
    json!({ "name": "exclude", "in": "query", "description": "Item keys never to return (comma-separated or repeated), at most limits.max_exclude", "schema": { "type": "string" } })
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
    if let (Some(all), Value::Object(more)) = (doc["paths"].as_object_mut(), loop_paths()) {
        all.extend(more);
    }
    if let Some(all) = doc["paths"].as_object_mut() {
        all.insert("/v1/recommendations".to_owned(), json!({ "post": {
            "summary": "Recommendations for an anonymous session from its recent items (folded into the model on the fly)",
            "description": "items: oldest first, each a key or {item, weight}; with serving.session_half_life_items, older items count less. Session items are not recommended back unless include_seen. Unknown items are ignored. Without a known item, the context (if any) places the visitor through the content model; otherwise popular items fill in, and the reasons say so.",
            "operationId": "recommendSession",
            "requestBody": { "required": true, "content": { "application/json": { "schema": { "type": "object", "additionalProperties": false, "properties": {
                "context": { "type": "object", "description": "Attributes of the visitor or the request (country, device, ...), named like user attributes: when no session item is known, the content model places the visitor by them" },
                "items": { "type": "array", "items": { "oneOf": [ { "type": "string" }, { "type": "object", "required": ["item"], "properties": { "item": { "type": "string" }, "weight": { "type": "number" } } } ] } },
                "n": { "type": "integer", "minimum": 1 },
                "model": { "type": "string", "enum": ["auto", "als", "knn", "ease", "bpr", "popular"] },
                "categories": { "type": "array", "items": { "type": "string" } },
                "exclude": { "type": "array", "items": { "type": "string" } },
                "include_seen": { "type": "boolean", "default": false },
                "explain": { "type": "string", "enum": ["reasons", "full"], "default": "reasons" },
                "diversity": { "type": "number", "minimum": 0, "maximum": 1, "default": 0 } } } } } },
            "responses": with_errors(json!({ "200": ok("Recommendations, best first", "Recommendations") }), &[400, 413, 415]) } }));
        all.insert("/v1/users/{key}/rank".to_owned(), rank_path());
        all.extend(multislot_paths("/personalizer", ""));
    }
    for more in [loop_schemas(), pipeline_schemas()] {
        if let (Some(all), Value::Object(more)) =
            (doc["components"]["schemas"].as_object_mut(), more)
        {
            all.extend(more);
        }
    }
    add_rules(&mut doc);
    add_fairness(&mut doc);
    add_audiences(&mut doc);
    add_experiments(&mut doc);
    add_segments(&mut doc);
    doc
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
            "/healthz": { "get": { "summary": "Liveness and counts", "operationId": "healthz",
                "responses": { "200": ok("Serving", "Health") } } },
            "/metrics": { "get": { "summary": "Prometheus metrics (OpenMetrics text format)", "operationId": "metrics",
                "responses": { "200": { "description": "Metrics", "content": { "application/openmetrics-text": { "schema": { "type": "string" } } } } } } },
            "/openapi.json": { "get": { "summary": "This document", "operationId": "openapi",
                "responses": { "200": { "description": "OpenAPI 3.1", "content": { "application/json": { "schema": { "type": "object" } } } } } } },
            "/v1/users/{key}": {
                "parameters": [key_param()],
                "delete": { "summary": "Erase a user: profile, events, derived serving state at once; stored model rows at once; the model itself at the next training (or now, with retrain=true)",
                    "description": "Answers with an erasure receipt, also available later from GET /v1/erasures/{id}.",
                    "operationId": "deleteUser",
                    "parameters": [{ "name": "retrain", "in": "query", "description": "Train a model without the user now and answer when it is active", "schema": { "type": "boolean", "default": false } }],
                    "responses": with_errors(json!({ "200": ok("Erased", "ErasureReceipt") }), &[400, 404, 409, 507]) } },
            "/v1/users/{key}/export": { "get": {
                "summary": "Everything held about a user: profile, consent, every event, and what was derived (history, user vector); `bespoke import` takes it back",
                "operationId": "exportUser", "parameters": [key_param()],
                "responses": with_errors(json!({ "200": ok("The export", "UserExport") }), &[400, 404]) } },
            "/v1/users/{key}/recommendations": { "get": {
                "summary": "Recommendations for a user",
                "description": "Unknown users and users without personalization consent get popular items; the reasons say so.",
                "operationId": "getRecommendations",
                "parameters": [key_param(), n_param(),
                    { "name": "model", "in": "query", "description": "auto (what the last tuning chose: a model or a blend), als, knn, ease (catalogs up to training.ease_max_items), bpr (with training.bpr) or popular; default serving.default_model", "schema": { "type": "string", "enum": ["auto", "als", "knn", "ease", "bpr", "popular"] } },
                    category_param(), exclude_param(),
                    { "name": "include_seen", "in": "query", "description": "Also return items the user interacted with", "schema": { "type": "boolean", "default": false } },
                    explain_param(), diversity_param()],
                "responses": with_errors(json!({ "200": ok("Recommendations, best first", "Recommendations") }), &[400]) } },
            "/v1/items/{key}/similar": { "get": {
                "summary": "Items related to an item (co-occurrence; popular items of its category when there is too little data)",
                "operationId": "getSimilar",
                "parameters": [key_param(), n_param(),
                    { "name": "model", "in": "query", "description": "knn (item neighbours), als (cosine of item factors) or cooccurrence; default serving.default_similar_model", "schema": { "type": "string", "enum": ["knn", "als", "cooccurrence"] } },
                    category_param(), exclude_param(), explain_param(), diversity_param()],
                "responses": with_errors(json!({ "200": ok("Related items, best first", "Similar") }), &[400, 404]) } },
            "/v1/models": { "get": {
                "summary": "Model versions, the active one, their metrics, and the trainer's status", "operationId": "listModels",
                "responses": { "200": ok("Models", "Models") } } },
            "/v1/models/train": { "post": {
                "summary": "Train new models from everything stored",
                "description": "Without wait, starts training in the background and answers 202; with wait=true, answers when the new version is saved (and activated, with training.auto_activate).",
                "operationId": "trainModels",
                "parameters": [{ "name": "wait", "in": "query", "schema": { "type": "boolean", "default": false } }],
                "responses": with_errors(json!({ "200": ok("Trained", "TrainOutcome"), "202": { "description": "Started" } }), &[400, 409]) } },
            "/v1/models/tune": { "post": {
                "summary": "Tune model types and hyperparameters on the stored data, then train with the result",
                "description": "Random search with successive halving over iALS, EASE (catalogs up to training.ease_max_items), cosine and BM25 item-kNN and the recency weighting of the data, validated on the latest 20% of each user's positive interactions; blends of two model types are kept when they validate better. The new version's meta.tuning records the result; later trainings reuse it, and model=auto serves what it chose. Without wait, answers 202 and runs in the background.",
                "operationId": "tuneModels",
                "parameters": [{ "name": "wait", "in": "query", "schema": { "type": "boolean", "default": false } },
                               { "name": "budget", "in": "query", "description": "Configurations to train and validate; default training.tune_budget", "schema": { "type": "integer", "minimum": 1, "maximum": 1000 } }],
                "responses": with_errors(json!({ "200": ok("Tuned and trained", "TrainOutcome"), "202": { "description": "Started" } }), &[400, 409]) } },
            "/v1/models/{version}/activate": { "post": {
                "summary": "Serve a stored model version", "operationId": "activateModel",
                "parameters": [{ "name": "version", "in": "path", "required": true, "schema": { "type": "integer", "minimum": 1 } }],
                "responses": with_errors(json!({ "200": { "description": "Active", "content": { "application/json": { "schema": { "type": "object", "properties": { "active": { "type": "integer" } } } } } } }), &[400, 404]) } },
            "/v1/erasures/{key}": { "get": { "summary": "An erasure receipt", "operationId": "getErasure",
                "parameters": [{ "name": "key", "in": "path", "required": true, "description": "The receipt's erasure_id", "schema": { "type": "string" } }],
                "responses": with_errors(json!({ "200": ok("The receipt", "ErasureReceipt") }), &[400, 404]) } },
            "/v1/audit": { "get": { "summary": "The audit log, newest first: key changes, exports, erasures, consent changes, retrains", "operationId": "getAudit",
                "parameters": [{ "name": "limit", "in": "query", "schema": { "type": "integer", "minimum": 1 } }, { "name": "cursor", "in": "query", "schema": { "type": "string" } }],
                "responses": with_errors(json!({ "200": ok("A page", "AuditPage") }), &[400]) } },
            "/v1/popular": { "get": {
                "summary": "Popular items: all-time, within a window, or trending (time-decayed)",
                "operationId": "getPopular",
                "parameters": [n_param(),
                    { "name": "category", "in": "query", "description": "Only items in any of these categories", "schema": { "type": "string" } },
                    { "name": "window", "in": "query", "description": "Count only events of the last 90s, 30m, 24h, 7d, 2w…; `all` (default) for all time", "schema": { "type": "string" } },
                    { "name": "sort", "in": "query", "description": "`count` (default) or `trending`", "schema": { "type": "string", "enum": ["count", "trending"] } },
                    exclude_param(), explain_param(), diversity_param()],
                "responses": with_errors(json!({ "200": ok("Popular items, best first", "Popular") }), &[400]) } }
        },
        "components": {
          "securitySchemes": {
            "apiKey": { "type": "http", "scheme": "bearer", "description": "An API key (bsk_...) from `bespoke keys create` or POST /v1/keys; also accepted as X-Api-Key. Each operation's x-scope names the scope it needs; a scope includes the weaker ones (write grants read, admin grants all). HEAD is served wherever GET is, under the same scope." }
          },
          "schemas": schemas()
        }
    })
}

/// Schemas of the ranking pipeline: reasons, contributions, the rank route.
fn pipeline_schemas() -> Value {
    json!({
            "RankIn": { "type": "object", "required": ["items"], "additionalProperties": false, "properties": {
                "items": { "type": "array", "minItems": 1, "maxItems": 1000, "uniqueItems": true, "items": { "type": "string" }, "description": "Candidate item keys, each once" },
                "context": { "type": "object", "description": "Attributes of the request, named like user attributes: place a user without history through the content model" },
                "history": { "type": "array", "description": "A session's items, oldest first (a key or {item, weight}); ranks a user never seen or one without history. At most serving.max_session_items", "items": { "oneOf": [ { "type": "string" }, { "type": "object", "required": ["item"], "properties": { "item": { "type": "string" }, "weight": { "type": "number" } } } ] } },
                "model": { "type": "string", "enum": ["auto", "als", "knn", "ease", "bpr", "popular"] },
                "explain": { "type": "string", "enum": ["reasons", "full"], "default": "reasons" },
                "diversity": { "type": "number", "minimum": 0, "maximum": 1, "default": 0 } } },
            "RankedItem": { "type": "object", "required": ["item", "score", "reasons"], "properties": {
                "item": { "type": "string" }, "score": { "type": ["number", "null"], "description": "Higher is better; null for an unknown item" },
                "unknown": { "type": "boolean", "description": "Present (true) when nothing scores the item: not in the catalog, or no events and no content" },
                "reasons": { "type": "array", "minItems": 1, "items": { "$ref": "#/components/schemas/Reason" } },
                "contributions": { "type": "array", "items": { "$ref": "#/components/schemas/Contribution" } } } },
            "Ranked": { "type": "object", "properties": { "user": { "type": "string" }, "personalized": { "type": "boolean" },
                "model": { "type": "string", "enum": ["als", "knn", "ease", "bpr", "content", "popular"] }, "model_version": { "type": "integer" },
                "items": { "type": "array", "items": { "$ref": "#/components/schemas/RankedItem" } } } }
    })
}

/// Schemas of the decision loops.
fn loop_schemas() -> Value {
    json!({
            "LoopConfig": { "type": "object", "additionalProperties": false, "properties": {
                "learner": { "type": "object", "additionalProperties": false, "properties": {
                    "bits": { "type": "integer", "minimum": 8, "maximum": 24, "default": 18 },
                    "learning_rate": { "type": "number", "default": 1.0 },
                    "interactions": { "type": "array", "items": { "type": "array", "items": { "type": "string" }, "minItems": 2, "maxItems": 2 }, "description": "Pairs of \"context\", \"action\" or namespace names; default [[\"context\", \"action\"]]" },
                    "exploration": { "type": "object", "required": ["policy"], "description": "{policy: greedy} | {policy: epsilon_greedy, epsilon} | {policy: softmax, lambda} | {policy: square_cb, gamma_scale, gamma_exponent} | {policy: thompson, scale, draws}", "properties": { "policy": { "type": "string", "enum": ["greedy", "epsilon_greedy", "softmax", "square_cb", "thompson"] } } } } },
                "mode": { "type": "string", "enum": ["online", "apprentice"], "default": "online" },
                "reward_wait_seconds": { "type": "number", "default": 600 },
                "default_reward": { "type": "number", "default": 0, "description": "Within reward_range" },
                "reward_range": { "type": "array", "items": { "type": "number" }, "minItems": 2, "maxItems": 2, "default": [-1, 1], "description": "[low, high] of accepted rewards, each within ±1e6; a reward outside is a 400 naming value" },
                "max_actions": { "type": "integer", "default": 1000 },
                "explanation_terms": { "type": "integer", "default": 5 } } },
            "Loop": { "type": "object", "properties": { "name": { "type": "string" }, "config": { "$ref": "#/components/schemas/LoopConfig" },
                "model_updates": { "type": "integer" }, "learned_through": { "type": "integer" },
                "stats": { "type": "object", "description": "decisions, rewards, default_rewards, mean_reward, apprentice {decisions, agreements, agreement_rate}" } } },
            "LoopList": { "type": "object", "properties": { "loops": { "type": "array", "items": { "$ref": "#/components/schemas/Loop" } } } },
            "DecisionIn": { "type": "object", "required": ["actions"], "additionalProperties": false, "properties": {
                "decision_id": { "type": "string", "description": "Your id for the decision; issued when absent" },
                "user": { "type": "string", "description": "The user: their consent applies (no personalization: the context is not used; no training: rewards are not learned from)" },
                "context": { "type": "object", "description": "Features: the top-level key is the namespace; strings are categorical, numbers numeric, arrays of numbers dense vectors, nested objects extend the name" },
                "actions": { "type": "array", "items": { "type": "object", "required": ["id"], "additionalProperties": false, "properties": { "id": { "type": "string" }, "features": { "type": "object" } } } },
                "slots": { "type": "integer", "minimum": 1, "default": 1 },
                "baseline": { "type": "string", "description": "Your own choice: apprentice mode serves it; evaluation compares with it" },
                "exclude": { "type": "array", "items": { "type": "string" } },
                "defer_activation": { "type": "boolean", "default": false } } },
            "Decision": { "type": "object", "properties": {
                "decision_id": { "type": "string" }, "loop": { "type": "string" }, "slots": { "type": "integer" }, "activated": { "type": "boolean" }, "reward_deadline": { "type": "string" },
                "ranking": { "type": "array", "items": { "type": "object", "properties": { "action": { "type": "string" }, "probability": { "type": "number" }, "score": { "type": "number" } } } },
                "explanation": { "type": "object", "description": "mode, policy, model_updates, personalized, learned_choice (apprentice), actions [{action, predicted, exploration, contributions [{feature, contribution}], reasons [Reason: context, exploration]}]: contributions + exploration = score" } } },
            "RewardAck": { "type": "object", "properties": { "decision_id": { "type": "string" }, "slot": { "type": "integer" }, "action": { "type": "string" }, "value": { "type": "number" }, "learned": { "type": "boolean" } } },
            "Evaluation": { "type": "object", "description": "decisions, observed_reward, policies [{policy, config?, decisions, ips, snips, dr ({value, std_error, ci95}), effective_sample_size}], best, significant, feature_importance [{namespace, loss_increase, relative}], reward_model_mse" }
    })
}

fn schemas() -> Value {
    json!({
            "Error": { "type": "object", "required": ["error"], "properties": { "error": { "type": "object", "required": ["code", "message"], "properties": {
                "code": { "type": "string", "description": "Stable machine-readable code, e.g. invalid_field, invalid_json, not_found, event_conflict" },
                "message": { "type": "string" },
                "field": { "type": "string", "description": "JSON path, query parameter or header at fault" } } } } },
            "Health": { "type": "object", "properties": { "status": { "type": "string" } } },
            "UserExport": { "type": "object", "properties": {
                "format": { "type": "string", "const": "bespoke.user-export.v1" }, "exported_at": { "type": "string", "format": "date-time" },
                "user": { "$ref": "#/components/schemas/User" },
                "events": { "type": "array", "items": { "$ref": "#/components/schemas/StoredEvent" } },
                "derived": { "type": "object", "properties": { "history": { "type": "array", "items": { "type": "object" } },
                    "personalization_applied": { "type": "boolean" }, "shared_statistics": { "type": "boolean" },
                    "model_version": { "type": ["integer", "null"] }, "user_vector": { "type": ["array", "null"], "items": { "type": "number" } } } } } },
            "ErasureReceipt": { "type": "object", "properties": {
                "erasure_id": { "type": "string" }, "user_ref": { "type": "string", "description": "Keyed hash of the user key, as in the audit log" },
                "key": { "type": "string", "description": "Only in the DELETE answer; the stored receipt holds no key" },
                "requested_by": { "type": "string" }, "requested_at": { "type": "string", "format": "date-time" }, "requested_at_ms": { "type": "integer" },
                "removed": { "type": "object", "properties": { "profile": { "type": "boolean" }, "events": { "type": "integer" }, "serving_state": { "type": "array", "items": { "type": "string" } } } },
                "models_containing_user": { "type": "array", "items": { "type": "integer" }, "description": "Stored model versions trained with the user's data" },
                "model_rows_scrubbed": { "type": "array", "items": { "type": "integer" } },
                "model_versions_deleted": { "type": "array", "items": { "type": "integer" } },
                "retrain_requested": { "type": "boolean" },
                "first_model_without_user": { "type": ["object", "null"], "properties": { "version": { "type": "integer" }, "activated_at": { "type": "string", "format": "date-time" } } },
                "status": { "type": "string", "enum": ["complete", "awaiting_retrain"] } } },
            "AuditPage": { "type": "object", "properties": { "entries": { "type": "array", "items": { "type": "object", "properties": {
                "seq": { "type": "integer" }, "at": { "type": "string", "format": "date-time" }, "actor": { "type": "string", "description": "Key prefix, cli, or anonymous" },
                "action": { "type": "string" }, "target": { "type": ["string", "null"] }, "detail": {} } } }, "next_cursor": { "type": ["string", "null"] } } },
            "StoredEvent": { "type": "object", "properties": { "event_id": { "type": "string" }, "user": { "type": "string" }, "item": { "type": "string" }, "type": { "type": "string" }, "value": { "type": "number" }, "timestamp": { "type": "string", "format": "date-time" }, "context": { "type": "object" } } },
            "Recommendation": { "type": "object", "required": ["item", "score", "reasons"], "properties": {
                "item": { "type": "string" }, "score": { "type": "number", "description": "Higher is better; comparable within one response" },
                "reasons": { "type": "array", "minItems": 1, "items": { "$ref": "#/components/schemas/Reason" } },
                "contributions": { "type": "array", "description": "With explain=full: the terms of the score, summing to it", "items": { "$ref": "#/components/schemas/Contribution" } } } },
            "Recommendations": { "type": "object", "properties": { "user": { "type": "string" }, "personalized": { "type": "boolean" },
                "model": { "type": "string", "enum": ["als", "knn", "ease", "bpr", "blend", "content", "popular"] }, "model_version": { "type": "integer" }, "items": { "type": "array", "items": { "$ref": "#/components/schemas/Recommendation" } },
                "experiments": { "type": "array", "description": "The experiment variants this list was served with (docs/experiments.md); echo them in POST /v1/impressions", "items": { "$ref": "#/components/schemas/ServedVariant" } } } },
            "Similar": { "type": "object", "properties": { "item": { "type": "string" }, "items": { "type": "array", "items": { "$ref": "#/components/schemas/Recommendation" } } } },
            "Models": { "type": "object", "properties": { "active": { "type": ["integer", "null"] }, "training": { "type": "object" },
                "cluster": { "type": "object", "description": "This node on a shared store (docs/deploy.md): shared_store, leader (holds the scheduler leadership), applied_seq (the last event applied to its memory)",
                    "properties": { "shared_store": { "type": "boolean" }, "leader": { "type": "boolean" }, "applied_seq": { "type": "integer" } } },
                "models": { "type": "array", "items": { "type": "object", "properties": { "version": { "type": "integer" }, "active": { "type": "boolean" }, "bytes": { "type": "integer" }, "meta": { "type": "object" } } } } } },
            "TrainOutcome": { "type": "object", "properties": { "version": { "type": "integer" }, "activated": { "type": "boolean" }, "meta": { "type": "object" } } },
            "Popular": { "type": "object", "properties": { "items": { "type": "array", "items": { "$ref": "#/components/schemas/Recommendation" } } } }
    })
}

/// The business-rule parameters of the ranking GETs (`docs/rules.md`).
fn rule_params() -> Vec<Value> {
    vec![
        json!({ "name": "filter", "in": "query", "description": "Keep only items this rule expression matches (docs/rules.md): comparisons on item attributes, `in`, `contains`, `and`/`or`/`not`, `now - 30d`, `context.<name>`", "schema": { "type": "string" }, "examples": { "stock": { "value": "stock > 0 and price < 50" }, "categories": { "value": "category in [\"Kitchen\", \"Garden\"] and created_at > now - 30d" } } }),
        json!({ "name": "boost", "in": "query", "description": "JSON array of boosts, applied in order: where `if` holds the score is multiplied by `by` (a negative score divided, so by > 1 always raises) or `add` is added; results are re-sorted", "schema": { "type": "string" }, "example": "[{\"if\": \"tags contains \\\"organic\\\"\", \"by\": 1.5}]" }),
        json!({ "name": "promote", "in": "query", "description": "JSON array of promotions: position `slot` (1 = first, at most n) holds the best-ranked item `if` matches", "schema": { "type": "string" }, "example": "[{\"slot\": 3, \"if\": \"campaign = \\\"winter\\\"\"}]" }),
        json!({ "name": "max_per_category", "in": "query", "description": "At most this many results per category", "schema": { "type": "integer", "minimum": 1 } }),
        json!({ "name": "max_impressions", "in": "query", "description": "No-repeat: drop items shown to the user at least this many times within impression_window without an interaction since; 0 off; default rules.max_impressions", "schema": { "type": "integer", "minimum": 0 } }),
        json!({ "name": "impression_window", "in": "query", "description": "The window of max_impressions (90m, 24h, 7d); default rules.impression_window", "schema": { "type": "string" } }),
        json!({ "name": "no_repeat_lists", "in": "query", "description": "Drop what was in the user's last this many lists; 0 off; default rules.no_repeat_lists", "schema": { "type": "integer", "minimum": 0 } }),
        json!({ "name": "hide_similar", "in": "query", "description": "0 to 1: how far items resembling one the user hid move down; default rules.hide_similar", "schema": { "type": "number", "minimum": 0, "maximum": 1 } }),
        json!({ "name": "skip_rules", "in": "query", "description": "Saved rules not to apply (comma-separated or repeated); * for all", "schema": { "type": "string" } }),
        json!({ "name": "calibration", "in": "query", "description": "Calibration re-ranker's λ, 0 to 1 (Steck 2018, greedy): the list's categories follow the user's history; 0 off; default fairness.calibration (docs/fairness.md)", "schema": { "type": "number", "minimum": 0, "maximum": 1 } }),
        json!({ "name": "popularity", "in": "query", "description": "Popularity debiasing's weight, 0 to 1: lifts long-tail items; 0 off; default fairness.popularity", "schema": { "type": "number", "minimum": 0, "maximum": 1 } }),
        json!({ "name": "popularity_method", "in": "query", "description": "xquad (smooth xQuAD over head and tail, Abdollahpouri 2019) or inverse (relevance / popularity^weight); default fairness.popularity_method", "schema": { "type": "string", "enum": ["xquad", "inverse"] } }),
        json!({ "name": "protected", "in": "query", "description": "A rule expression naming the protected item group: every prefix of the list holds at least FA*IR's minimum of them (Zehlike 2017); empty turns the default off; default fairness.protected. A group with no item is a 400", "schema": { "type": "string" }, "example": "maker = \"indie\"" }),
        json!({ "name": "protected_share", "in": "query", "description": "FA*IR's minimum share p, between 0 and 1; default fairness.protected_share", "schema": { "type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1 } }),
        json!({ "name": "protected_alpha", "in": "query", "description": "FA*IR's significance α, between 0 and 1 (adjusted for testing every prefix); default fairness.protected_alpha", "schema": { "type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1 } }),
    ]
}

/// The rule fields of the ranking POST bodies.
fn rule_body_properties() -> Value {
    json!({
        "filter": { "type": "string", "description": "A rule expression (docs/rules.md)", "example": "stock > 0 and price < 50" },
        "boost": { "type": "array", "items": { "$ref": "#/components/schemas/Boost" } },
        "promote": { "type": "array", "items": { "$ref": "#/components/schemas/Promotion" } },
        "max_per_category": { "type": "integer", "minimum": 1 },
        "max_impressions": { "type": "integer", "minimum": 0 },
        "impression_window": { "type": "string" },
        "no_repeat_lists": { "type": "integer", "minimum": 0 },
        "hide_similar": { "type": "number", "minimum": 0, "maximum": 1 },
        "skip_rules": { "type": "array", "items": { "type": "string" } },
        "calibration": { "type": "number", "minimum": 0, "maximum": 1 },
        "popularity": { "type": "number", "minimum": 0, "maximum": 1 },
        "popularity_method": { "type": "string", "enum": ["xquad", "inverse"] },
        "protected": { "type": "string", "description": "A rule expression naming the protected item group (FA*IR)" },
        "protected_share": { "type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1 },
        "protected_alpha": { "type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1 }
    })
}

/// The routes of saved rules, impressions and hidden items.
fn rule_paths() -> Value {
    json!({
        "/v1/users/{key}/hidden": { "get": {
            "summary": "Items the user hid (block list and hiding events such as not_interested), newest first",
            "operationId": "getHidden", "parameters": [key_param()],
            "responses": with_errors(json!({ "200": { "description": "Hidden items", "content": { "application/json": { "schema": { "type": "object", "properties": { "user": { "type": "string" }, "items": { "type": "array", "items": { "type": "object", "properties": { "item": { "type": "string" }, "since": { "type": "string", "format": "date-time" }, "by": { "type": "string", "enum": ["block", "event"] } } } } } } } } } }), &[400, 404]) } },
        "/v1/users/{key}/hidden/{item}": {
            "parameters": [key_param(), { "name": "item", "in": "path", "required": true, "schema": { "type": "string" } }],
            "put": { "summary": "Hide an item from the user on every ranking route", "operationId": "hideItem",
                "responses": with_errors(json!({ "200": { "description": "Hidden" } }), &[400, 404, 507]) },
            "delete": { "summary": "Show an item again (undoes a block or a hiding event)", "operationId": "unhideItem",
                "responses": with_errors(json!({ "200": { "description": "Shown again" } }), &[400, 404, 507]) } }
    })
}

/// Schemas of rules.
fn rule_schemas() -> Value {
    json!({
        "Filtered": { "type": "object", "properties": { "item": { "type": "string" }, "rule": { "type": "string", "description": "A saved rule's name, request.filter, request.max_per_category, hidden or no_repeat" }, "message": { "type": "string" } } }
    })
}

/// Adds the rule routes, parameters, body fields and answer fields to `doc`.
fn add_rules(doc: &mut Value) {
    if let (Some(all), Value::Object(more)) = (doc["paths"].as_object_mut(), rule_paths()) {
        all.extend(more);
    }
    if let (Some(all), Value::Object(more)) =
        (doc["components"]["schemas"].as_object_mut(), rule_schemas())
    {
        all.extend(more);
    }
    let user = json!({ "name": "user", "in": "query", "description": "Whose hidden items and impressions apply", "schema": { "type": "string" } });
    for (path, with_user) in [
        ("/v1/users/{key}/recommendations", false),
        ("/v1/items/{key}/similar", true),
        ("/v1/popular", true),
    ] {
        if let Some(params) = doc["paths"][path]["get"]["parameters"].as_array_mut() {
            params.extend(rule_params());
            if with_user {
                params.push(user.clone());
            }
        }
    }
    let session = &mut doc["paths"]["/v1/recommendations"]["post"]["requestBody"]["content"]["application/json"]
        ["schema"]["properties"];
    if let (Some(props), Value::Object(more)) = (session.as_object_mut(), rule_body_properties()) {
        props.extend(more);
        props.insert(
            "user".into(),
            json!({ "type": "string", "description": "Whose hidden items and impressions apply" }),
        );
    }
    if let (Some(props), Value::Object(more)) = (
        doc["components"]["schemas"]["RankIn"]["properties"].as_object_mut(),
        rule_body_properties(),
    ) {
        props.extend(more);
    }
    for schema in ["Recommendations", "Similar", "Popular", "Ranked"] {
        if let Some(props) = doc["components"]["schemas"][schema]["properties"].as_object_mut() {
            props.insert("rules".into(), json!({ "type": "array", "items": { "type": "string" }, "description": "The business rules that applied: saved ones by name, the request's own as request.filter, request.boost[0], ...; hidden and no_repeat when they removed anything" }));
            props.insert("filtered".into(), json!({ "type": "array", "items": { "$ref": "#/components/schemas/Filtered" }, "description": "Items the rules kept out (explain=full; always on the rank route)" }));
        }
    }
}

/// Audiences: users for items (docs/audiences.md).
fn add_audiences(doc: &mut Value) {
    if let Some(paths) = doc["paths"].as_object_mut() {
        paths.insert("/v1/audiences/query".into(), json!({ "post": {
            "summary": "The users most likely to respond to items, a category or an item expression",
            "description": "The query's items (listed, every item of a category, or every item a rule expression matches) become one vector, the mean of their iALS factors, scored against every trained user vector. Users who objected to marketing (consent.marketing = false), turned personalization off or withheld their data from training are left out and counted. Keys are the stored ones (pseudonymous with privacy.pseudonymize). 409 without a trained model.",
            "operationId": "queryAudience",
            "requestBody": json_body("AudienceIn"),
            "responses": with_errors(json!({ "200": ok("The audience, best first", "Audience") }), &[400, 409, 413, 415]) } }));
    }
    if let Some(schemas) = doc["components"]["schemas"].as_object_mut() {
        schemas.insert("AudienceIn".into(), json!({ "type": "object", "additionalProperties": false,
            "description": "At least one of items, category and filter; their items are merged.",
            "properties": {
                "items": { "type": "array", "maxItems": 500, "items": { "type": "string" } },
                "category": { "type": "string" },
                "filter": { "type": "string", "description": "An item rule expression (docs/rules.md)" },
                "n": { "type": "integer", "minimum": 1, "maximum": 10000, "default": 100 },
                "threshold": { "type": "number", "description": "Also count the users scoring at least this (the audience's size)" },
                "format": { "type": "string", "enum": ["json", "csv", "jsonl"], "default": "json", "description": "csv (user,score) or jsonl (user, score, reason per line) answer with the users above threshold as text/csv or application/x-ndjson" } } }));
        schemas.insert("Audience".into(), json!({ "type": "object",
            "required": ["users", "items_matched", "scored_users", "excluded", "model_version"],
            "properties": {
                "users": { "type": "array", "items": { "type": "object", "properties": {
                    "user": { "type": "string" }, "score": { "type": "number" },
                    "reasons": { "type": "array", "items": { "$ref": "#/components/schemas/Reason" } } } } },
                "size": { "type": "object", "properties": { "threshold": { "type": "number" }, "users": { "type": "integer" } } },
                "items_matched": { "type": "integer" }, "scored_users": { "type": "integer" },
                "excluded": { "type": "object", "properties": { "marketing": { "type": "integer" }, "personalization": { "type": "integer" }, "training": { "type": "integer" } } },
                "model_version": { "type": "integer" } } }));
    }
}

/// Experiments (docs/experiments.md).
fn add_experiments(doc: &mut Value) {
    let name = json!({ "name": "key", "in": "path", "required": true, "description": "The experiment's name", "schema": { "type": "string", "maxLength": 64 } });
    if let Some(paths) = doc["paths"].as_object_mut() {
        paths.insert("/v1/experiments".into(), json!({ "get": {
            "summary": "Every experiment, by name", "operationId": "listExperiments",
            "responses": with_errors(json!({ "200": ok("The experiments", "Experiments") }), &[]) } }));
        paths.insert("/v1/experiments/{key}".into(), json!({
            "get": { "summary": "One experiment", "operationId": "getExperiment", "parameters": [name],
                "responses": with_errors(json!({ "200": ok("The experiment", "Experiment") }), &[404]) },
            "put": { "summary": "Create a draft experiment, or replace a draft's definition (audited)",
                "description": "Variants are checked like ranking requests (a bad filter is a 400 naming variants[i].config.filter); metrics must name configured event types (or impression). Only a draft changes: 409 for a running or stopped one.",
                "operationId": "putExperiment", "parameters": [name], "requestBody": json_body("ExperimentIn"),
                "responses": with_errors(json!({ "200": ok("Replaced", "Experiment"), "201": ok("Created", "Experiment") }), &[400, 409, 413, 415]) },
            "delete": { "summary": "Delete an experiment and its exposures (audited)", "operationId": "deleteExperiment", "parameters": [name],
                "responses": with_errors(json!({ "200": { "description": "Deleted", "content": { "application/json": { "schema": { "type": "object", "properties": { "deleted": { "type": "string" } } } } } } }), &[404]) } }));
        paths.insert("/v1/experiments/{key}/start".into(), json!({ "post": {
            "summary": "Start a draft: its route serves the variants from now on (audited)",
            "description": "409 (field layer) while another running experiment on the same route shares its layer or either has none.",
            "operationId": "startExperiment", "parameters": [name],
            "responses": with_errors(json!({ "200": ok("Started", "Experiment") }), &[400, 404, 409]) } }));
        paths.insert("/v1/experiments/{key}/stop".into(), json!({ "post": {
            "summary": "Stop a running experiment (audited)", "operationId": "stopExperiment", "parameters": [name],
            "responses": with_errors(json!({ "200": ok("Stopped", "Experiment") }), &[404, 409]) } }));
        paths.insert("/v1/experiments/{key}/report".into(), json!({ "get": {
            "summary": "Results: per variant users and metric means; per treatment and metric the effect, Welch's interval and p-value, Holm-adjusted p-value, CUPED's variance reduction, the always-valid (mSPRT) p-value and confidence sequence; the sample-ratio-mismatch check",
            "operationId": "experimentReport", "parameters": [name],
            "responses": with_errors(json!({ "200": ok("The report", "ExperimentReport") }), &[404, 409]) } }));
    }
    if let Some(schemas) = doc["components"]["schemas"].as_object_mut() {
        schemas.insert("VariantConfig".into(), json!({ "type": "object", "additionalProperties": false,
            "description": "Ranking-request fields the variant sets, checked as on the ranking routes. filter is combined with the request's (both hold); boost, promote and skip_rules add to the request's; the rest replace its value.",
            "properties": {
                "model": { "type": "string" }, "diversity": { "type": "number" }, "filter": { "type": "string" },
                "boost": { "type": "array", "items": { "type": "object" } }, "promote": { "type": "array", "items": { "type": "object" } },
                "max_per_category": { "type": "integer" }, "skip_rules": { "type": "array", "items": { "type": "string" } },
                "calibration": { "type": "number" }, "popularity": { "type": "number" }, "popularity_method": { "type": "string", "enum": ["xquad", "inverse"] },
                "protected": { "type": "string" }, "protected_share": { "type": "number" }, "protected_alpha": { "type": "number" } } }));
        schemas.insert("Metric".into(), json!({ "type": "object", "required": ["kind", "name"],
            "description": "conversion: share of users with an event of the type; count: events per user; revenue: sum of event values per user; ratio: numerator events per denominator event (delta method).",
            "properties": { "kind": { "type": "string", "enum": ["conversion", "count", "revenue", "ratio"] }, "name": { "type": "string" },
                "event": { "type": "string" }, "numerator": { "type": "string" }, "denominator": { "type": "string" } } }));
        schemas.insert("ExperimentIn".into(), json!({ "type": "object", "additionalProperties": false, "required": ["variants"],
            "properties": {
                "description": { "type": "string" },
                "route": { "type": "string", "enum": ["recommendations", "similar", "popular", "rank"], "default": "recommendations", "description": "similar and popular take part only with the `user` parameter" },
                "layer": { "type": "string", "description": "Experiments on one route run at once only in different layers" },
                "variants": { "type": "array", "minItems": 2, "maxItems": 20, "description": "The first is the control", "items": { "type": "object", "additionalProperties": false, "required": ["name"],
                    "properties": { "name": { "type": "string" }, "weight": { "type": "number", "minimum": 0, "default": 1 }, "config": { "$ref": "#/components/schemas/VariantConfig" } } } },
                "holdout": { "type": "number", "minimum": 0, "exclusiveMaximum": 1, "default": 0 },
                "salt": { "type": "string", "description": "The assignment hash's salt; the name by default" },
                "metrics": { "type": "array", "maxItems": 20, "items": { "$ref": "#/components/schemas/Metric" }, "description": "Default: a conversion metric per configured event type" },
                "alpha": { "type": "number", "default": 0.05 },
                "pre_period": { "type": "string", "default": "14d", "description": "CUPED's pre-period before the start" },
                "mde": { "type": "number", "default": 0.05, "description": "Relative effect the sequential test is tuned to" } } }));
        schemas.insert("Experiment".into(), json!({ "allOf": [ { "$ref": "#/components/schemas/ExperimentIn" }, { "type": "object", "properties": {
            "name": { "type": "string" }, "status": { "type": "string", "enum": ["draft", "running", "stopped"] },
            "started_at": { "type": "string", "format": "date-time" }, "stopped_at": { "type": "string", "format": "date-time" } } } ] }));
        schemas.insert("Experiments".into(), json!({ "type": "object", "properties": { "experiments": { "type": "array", "items": { "$ref": "#/components/schemas/Experiment" } } } }));
        schemas.insert("ExperimentReport".into(), json!({ "type": "object", "properties": {
            "experiment": { "type": "string" }, "status": { "type": "string" }, "users": { "type": "integer" }, "alpha": { "type": "number" },
            "srm": { "type": ["object", "null"], "properties": { "chi2": { "type": "number" }, "df": { "type": "integer" }, "p_value": { "type": "number" }, "alarm": { "type": "boolean" } } },
            "variants": { "type": "array", "items": { "type": "object" } },
            "comparisons": { "type": "array", "items": { "type": "object", "properties": { "control": { "type": "string" }, "treatment": { "type": "string" },
                "metrics": { "type": "array", "items": { "type": "object", "properties": {
                    "metric": { "type": "string" }, "effect": { "type": ["number", "null"] }, "ci_low": { "type": ["number", "null"] }, "ci_high": { "type": ["number", "null"] },
                    "p_value": { "type": ["number", "null"] }, "p_value_holm": { "type": ["number", "null"] }, "significant": { "type": "boolean" },
                    "cuped_variance_reduction": { "type": ["number", "null"] }, "sequential": { "type": ["object", "null"] } } } } } } },
            "notes": { "type": "array", "items": { "type": "string" } } } }));
    }
}

/// Segments (docs/segments.md).
fn add_segments(doc: &mut Value) {
    let name = json!({ "name": "key", "in": "path", "required": true, "description": "The segment's name: 1 to 64 ASCII letters, digits, '-', '_' or '.'", "schema": { "type": "string", "maxLength": 64 } });
    let cluster = json!({ "name": "cluster", "in": "query", "description": "Learned segments: only this cluster (from 0)", "schema": { "type": "integer", "minimum": 0 } });
    let deleted = json!({ "200": { "description": "Deleted", "content": { "application/json": { "schema": { "type": "object", "properties": { "deleted": { "type": "string" } } } } } } });
    if let Some(paths) = doc["paths"].as_object_mut() {
        paths.insert("/v1/segments".into(), json!({ "get": {
            "summary": "Every segment, by name, with its last refresh and export", "operationId": "listSegments",
            "responses": with_errors(json!({ "200": ok("The segments", "Segments") }), &[]) } }));
        paths.insert("/v1/segments/{key}".into(), json!({
            "get": { "summary": "One segment: its definition, last refresh (with cluster descriptions), last export, next scheduled refresh", "operationId": "getSegment", "parameters": [name],
                "responses": with_errors(json!({ "200": ok("The segment", "Segment") }), &[404]) },
            "put": { "summary": "Create a segment or replace its definition (audited)",
                "description": "A rule segment's expression is checked (a 400 names `expression` and the position); a learned segment's k is 2 to 64. `refresh` (at least 5m) schedules recomputation; `export` (needs `refresh`) sends the members to a plain http:// webhook after each scheduled refresh, signed with the segment's secret, which the response that creates the segment returns once as `webhook_secret`. The kind cannot change (409). A replaced definition keeps the members until the next refresh.",
                "operationId": "putSegment", "parameters": [name], "requestBody": json_body("SegmentIn"),
                "responses": with_errors(json!({ "200": ok("Replaced", "SegmentPut"), "201": ok("Created; webhook_secret is shown this once", "SegmentPut") }), &[400, 409, 413, 415]) },
            "delete": { "summary": "Delete a segment, its members, size history and webhook secret (audited)", "operationId": "deleteSegment", "parameters": [name],
                "responses": with_errors(deleted, &[404]) } }));
        paths.insert("/v1/segments/{key}/refresh".into(), json!({ "post": {
            "summary": "Compute the members now and store them (a new point of the size history; audited)",
            "description": "Rule: every user's attributes and their events within the expression's window. Learned: k-means on the served model's user vectors, each cluster described by the categories of its members' items and their attribute values. Users who objected to marketing are left out and counted (and, as the docs say, users without personalization or training consent where the segment reads behaviour or vectors). 409 no_model for a learned segment without a trained model, segment_conflict when k exceeds the users, segment_busy while another refresh of it runs.",
            "operationId": "refreshSegment", "parameters": [name],
            "responses": with_errors(json!({ "200": ok("What was computed", "SegmentRefresh") }), &[400, 404, 409]) } }));
        paths.insert("/v1/segments/{key}/members".into(), json!({ "get": {
            "summary": "The members: a JSON page in user order, or every member streamed as CSV or JSONL",
            "description": "Keys are the stored ones (pseudonymous with privacy.pseudonymize). Without format, a page of at most `limit` members after `cursor` (the previous page's next_cursor, opaque; null on the last page). With format=csv (`user,score`, `user,cluster,score` for a learned segment, with a header) or format=jsonl, every member, streamed; cursor and limit are refused then.",
            "operationId": "segmentMembers",
            "parameters": [name, cluster,
                { "name": "cursor", "in": "query", "description": "The next_cursor of the previous page", "schema": { "type": "string" } },
                { "name": "limit", "in": "query", "schema": { "type": "integer", "minimum": 1, "maximum": 10000, "default": 100 } },
                { "name": "format", "in": "query", "schema": { "type": "string", "enum": ["json", "csv", "jsonl"], "default": "json" } }],
            "responses": with_errors(json!({ "200": { "description": "A page, or the stream",
                "content": {
                    "application/json": { "schema": { "$ref": "#/components/schemas/SegmentMembers" } },
                    "text/csv": { "schema": { "type": "string" } },
                    "application/x-ndjson": { "schema": { "type": "string" } } } } }), &[400, 404]) } }));
        paths.insert("/v1/segments/{key}/sizes".into(), json!({ "get": {
            "summary": "The size after each refresh, oldest first (per cluster too for a learned segment)", "operationId": "segmentSizes", "parameters": [name],
            "responses": with_errors(json!({ "200": ok("The size history", "SegmentSizes") }), &[404]) } }));
        paths.insert("/v1/users/{key}/segments".into(), json!({ "get": {
            "summary": "The segments a user belongs to (stored memberships, as of each segment's last refresh)", "operationId": "userSegments", "parameters": [key_param()],
            "responses": with_errors(json!({ "200": ok("The user's segments", "UserSegments") }), &[400, 404]) } }));
    }
    if let Some(schemas) = doc["components"]["schemas"].as_object_mut() {
        schemas.insert("SegmentIn".into(), json!({ "type": "object", "additionalProperties": false, "required": ["kind"],
            "properties": {
                "kind": { "type": "string", "enum": ["rule", "learned"] },
                "expression": { "type": "string", "description": "rule: a user expression (docs/segments.md)" },
                "k": { "type": "integer", "minimum": 2, "maximum": 64, "default": 8, "description": "learned: clusters, stored as member sets <name>/0 .. <name>/k-1" },
                "seed": { "type": "integer", "minimum": 0, "default": 0, "description": "learned: the k-means++ seed" },
                "description": { "type": "string", "maxLength": 1024 },
                "refresh": { "type": "string", "description": "How often the scheduler recomputes it (5m at least: 30m, 6h, 1d); on demand only when absent" },
                "export": { "type": "object", "additionalProperties": false, "required": ["url"], "properties": {
                    "url": { "type": "string", "description": "A plain http:// webhook (docs/webhooks.md)" },
                    "format": { "type": "string", "enum": ["jsonl", "csv"], "default": "jsonl" } } } } }));
        let lift = |what: &str| json!({ "type": "object", "properties": { what: { "type": "string" }, "members": { "type": "integer" }, "share": { "type": "number" }, "lift": { "type": "number" } } });
        let mut attribute = lift("attribute");
        attribute["properties"]["value"] = json!({ "type": ["string", "boolean"] });
        schemas.insert("SegmentRefresh".into(), json!({ "type": "object",
            "required": ["kind", "computed_at", "size", "evaluated_users", "excluded", "elapsed_ms"],
            "properties": {
                "kind": { "type": "string", "enum": ["rule", "learned"] },
                "computed_at": { "type": "string", "format": "date-time" },
                "size": { "type": "integer" }, "evaluated_users": { "type": "integer" }, "elapsed_ms": { "type": "integer" },
                "excluded": { "type": "object", "properties": { "marketing": { "type": "integer" }, "personalization": { "type": "integer" }, "training": { "type": "integer" } } },
                "model_version": { "type": "integer" },
                "clusters": { "type": "array", "items": { "type": "object", "properties": {
                    "cluster": { "type": "integer" }, "name": { "type": "string" }, "size": { "type": "integer" },
                    "categories": { "type": "array", "items": lift("category") },
                    "attributes": { "type": "array", "items": attribute } } } } } }));
        schemas.insert("Segment".into(), json!({ "allOf": [ { "$ref": "#/components/schemas/SegmentIn" }, { "type": "object", "properties": {
            "name": { "type": "string" },
            "created_at": { "type": "string", "format": "date-time" }, "updated_at": { "type": "string", "format": "date-time" },
            "next_refresh": { "type": "string", "format": "date-time" },
            "last_refresh": { "$ref": "#/components/schemas/SegmentRefresh" },
            "last_failure": { "type": "object", "properties": { "at": { "type": "string", "format": "date-time" }, "message": { "type": "string" } } },
            "last_export": { "type": "object", "properties": {
                "at": { "type": "string", "format": "date-time" }, "ok": { "type": "boolean" }, "status": { "type": "integer" }, "attempts": { "type": "integer" },
                "delivery": { "type": "string" }, "members": { "type": "integer" }, "bytes": { "type": "integer" }, "error": { "type": "string" } } } } } ] }));
        schemas.insert("SegmentPut".into(), json!({ "allOf": [ { "$ref": "#/components/schemas/Segment" }, { "type": "object", "properties": {
            "webhook_secret": { "type": "string", "description": "Only in the response that created the segment: whsec_ and 64 hex digits, the HMAC key (as ASCII bytes) of its webhook deliveries" } } } ] }));
        schemas.insert("Segments".into(), json!({ "type": "object", "properties": { "segments": { "type": "array", "items": { "$ref": "#/components/schemas/Segment" } } } }));
        schemas.insert("SegmentMembers".into(), json!({ "type": "object", "properties": {
            "segment": { "type": "string" },
            "members": { "type": "array", "items": { "type": "object", "properties": { "user": { "type": "string" }, "cluster": { "type": "integer" }, "score": { "type": "number" } } } },
            "next_cursor": { "type": ["string", "null"] } } }));
        schemas.insert("SegmentSizes".into(), json!({ "type": "object", "properties": {
            "segment": { "type": "string" },
            "sizes": { "type": "array", "items": { "type": "object", "properties": { "at": { "type": "string", "format": "date-time" }, "size": { "type": "integer" }, "clusters": { "type": "array", "items": { "type": "integer" } } } } } } }));
        schemas.insert("UserSegments".into(), json!({ "type": "object", "properties": {
            "user": { "type": "string" },
            "segments": { "type": "array", "items": { "type": "object", "properties": { "segment": { "type": "string" }, "cluster": { "type": "integer" }, "score": { "type": "number" }, "computed_at": { "type": "string", "format": "date-time" } } } } } }));
    }
}

/// "Why not?" and the fairness report (docs/fairness.md).
fn add_fairness(doc: &mut Value) {
    let mut why_params = vec![
        key_param(),
        json!({ "name": "item", "in": "query", "required": true, "description": "The item to explain", "schema": { "type": "string" } }),
        n_param(),
        json!({ "name": "model", "in": "query", "description": "As for recommendations", "schema": { "type": "string", "enum": ["auto", "als", "knn", "ease", "bpr", "popular"] } }),
        category_param(),
        exclude_param(),
        json!({ "name": "include_seen", "in": "query", "schema": { "type": "boolean", "default": false } }),
        diversity_param(),
    ];
    why_params.extend(rule_params());
    let mut report_params = vec![
        json!({ "name": "k", "in": "query", "description": "List length measured; default fairness.report_k", "schema": { "type": "integer", "minimum": 1 } }),
        json!({ "name": "users", "in": "query", "description": "Rank a seeded sample of at most this many users (all by default)", "schema": { "type": "integer", "minimum": 1 } }),
        json!({ "name": "seed", "in": "query", "description": "Seed of the sample and of the bootstrap", "schema": { "type": "integer", "minimum": 0 } }),
        json!({ "name": "user_attribute", "in": "query", "description": "A user attribute to group by (repeatable); one nobody has is a 400", "schema": { "type": "string" } }),
        json!({ "name": "item_attribute", "in": "query", "description": "An item attribute whose groups' exposure is compared with their catalog share (repeatable; `category` for the first category); one no item has is a 400", "schema": { "type": "string" } }),
        json!({ "name": "model", "in": "query", "schema": { "type": "string", "enum": ["auto", "als", "knn", "ease", "bpr", "popular"] } }),
        category_param(),
        diversity_param(),
    ];
    report_params.extend(rule_params());
    if let Some(paths) = doc["paths"].as_object_mut() {
        paths.insert("/v1/users/{key}/explain".into(), json!({ "get": {
            "summary": "Why not? Where an item would rank for a user and which stage removed or demoted it",
            "description": "Runs the recommendation pipeline with the same parameters, once as asked and again with stages turned off, and reports the item's score and its terms, its rank by the model alone and after the rules, and each stage's verdict in pipeline order: consent, availability, exclude, category, rule (hidden, no_repeat, a filter), already_seen, rules (boosts, category cap), ranking (below the cut), hide_similar, diversity, fairness.",
            "operationId": "whyNot", "parameters": why_params,
            "responses": with_errors(json!({ "200": ok("The explanation", "WhyNot") }), &[400, 404]) } }));
        paths.insert("/v1/reports/fairness".into(), json!({ "get": {
            "summary": "Fairness and bias report on the live model",
            "description": "Ranks every user with a history through the pipeline (with the re-rankers asked for) and measures the lists: catalog coverage@k, Gini of exposure, long-tail shares, popularity lift (Abdollahpouri 2019), miscalibration (Steck 2018, α = 0.01), exposure by item group against catalog share. Accuracy by user group needs held-out data: `bespoke fairness` on a split. Values that are undefined are null, with notes.",
            "operationId": "fairnessReport", "parameters": report_params,
            "responses": with_errors(json!({ "200": ok("The report", "FairnessReport") }), &[400]) } }));
    }
    if let Some(schemas) = doc["components"]["schemas"].as_object_mut() {
        schemas.insert("WhyNot".into(), json!({ "type": "object",
            "required": ["user", "item", "n", "position", "verdict", "model", "reasons", "contributions", "stages"],
            "properties": {
                "user": { "type": "string" }, "item": { "type": "string" }, "n": { "type": "integer" },
                "position": { "type": ["integer", "null"], "description": "Its position in the list (from 1), null when not in it" },
                "verdict": { "type": "string" },
                "score": { "type": ["number", "null"] }, "model": { "type": "string" },
                "model_rank": { "type": ["integer", "null"], "description": "Its rank by the model among the allowed items before rules and re-rankers (within limits.max_n)" },
                "rank_after_rules": { "type": ["integer", "null"] },
                "reasons": { "type": "array", "items": { "$ref": "#/components/schemas/Reason" } },
                "contributions": { "type": "array", "items": { "$ref": "#/components/schemas/Contribution" } },
                "stages": { "type": "array", "items": { "type": "object", "required": ["stage", "outcome", "message"], "properties": {
                    "stage": { "type": "string" }, "outcome": { "type": "string", "enum": ["removed", "demoted", "passed", "applied", "shown"] },
                    "message": { "type": "string" }, "rule": { "type": "string" } } } } } }));
        let estimate = json!({ "type": "object", "properties": { "mean": { "type": ["number", "null"] }, "ci_low": { "type": ["number", "null"] }, "ci_high": { "type": ["number", "null"] } } });
        schemas.insert("FairnessReport".into(), json!({ "type": "object",
            "required": ["users", "k", "catalog_items", "long_tail", "popularity_lift", "miscalibration", "exposure", "notes"],
            "properties": {
                "model_version": { "type": ["integer", "null"] },
                "users": { "type": "integer" }, "k": { "type": "integer" }, "catalog_items": { "type": "integer" },
                "coverage": { "type": ["number", "null"], "description": "Share of catalog items in at least one top-k list" },
                "gini": { "type": ["number", "null"], "description": "Gini coefficient of exposure over the catalog" },
                "long_tail": { "type": "object", "properties": { "head_share": { "type": "number" }, "head_items": { "type": "integer" }, "catalog_tail_share": { "type": ["number", "null"] }, "list_tail_share": { "type": ["number", "null"] }, "profile_tail_share": { "type": ["number", "null"] } } },
                "popularity_lift": { "type": "object", "properties": { "users_measured": { "type": "integer" }, "gap_profile": { "type": ["number", "null"] }, "gap_list": { "type": ["number", "null"] }, "lift": { "type": ["number", "null"], "description": "(GAP_list − GAP_profile) / GAP_profile" } } },
                "miscalibration": { "type": "object", "properties": { "alpha": { "type": "number" }, "mean": { "type": ["number", "null"] }, "users_measured": { "type": "integer" } } },
                "accuracy": { "type": ["object", "null"], "properties": { "users": { "type": "integer" }, "ndcg10": estimate.clone(), "recall10": estimate.clone(), "groupings": { "type": "array" } } },
                "exposure": { "type": "array", "items": { "type": "object", "properties": { "attribute": { "type": "string" }, "groups": { "type": "array", "items": { "type": "object", "properties": {
                    "group": { "type": "string" }, "items": { "type": "integer" }, "catalog_share": { "type": ["number", "null"] }, "exposure_share": { "type": ["number", "null"] }, "relevant_share": { "type": ["number", "null"] }, "ratio_to_catalog": { "type": ["number", "null"] } } } } } } },
                "notes": { "type": "array", "items": { "type": "string" } } } }));
    }
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
            "array" => json!([sample(doc, &schema["items"])]),
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
