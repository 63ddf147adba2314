//! Integration tests: each starts the real server on a loopback port over a fresh data directory
//! and talks HTTP to it. One binary, split into topic modules, for link time.

mod abuse_limits;
mod at_rest;
mod audiences;
mod auth;
mod bad_input;
mod common;
mod decisions;
mod device;
mod erasure;
mod events;
mod experiments;
mod fairness;
mod gorse;
mod http_hygiene;
mod models;
mod models_conformance;
mod module_graph;
mod ops;
mod pg_outage;
mod postgres;
mod privacy;
mod python_client;
mod ranking;
mod rules;
mod segments;
mod serving;
mod timeouts;
mod users_items;
