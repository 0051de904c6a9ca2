//! The Svalbard worker: job loop, engine drivers, backup and restore pipelines.

pub mod runner;
