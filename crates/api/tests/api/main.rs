//! Black-box tests of the HTTP API: each test spawns the application on a free port against
//! its own control database.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod audit;
mod auth;
mod backups;
mod contract;
mod isolation;
mod openapi;
mod ops;
mod profiles;
mod resources;
mod schedules;
mod secrets;
mod target_policy;
mod validation;
mod webhooks;
