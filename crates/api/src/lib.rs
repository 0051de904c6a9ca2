//! The Svalbard HTTP API.

pub mod auth;
pub mod error;
pub mod extract;
pub mod fleet_metrics;
pub mod idempotency;
pub mod openapi;
pub mod routes;
pub mod startup;
pub mod state;
pub mod telemetry;
pub mod worker_ops;

pub use startup::Application;
