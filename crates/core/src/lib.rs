//! Domain types, configuration, repositories, job queue, object storage and archive format
//! shared by the Svalbard API and worker. Nothing in here knows about HTTP.

pub mod archive;
pub mod auth;
pub mod backup;
pub mod config;
pub mod crypto;
pub mod db;
pub mod domain;
pub mod dumpinfo;
pub mod envelope;
pub mod error;
pub mod ids;
pub mod jobs;
pub mod netpolicy;
pub mod page;
pub mod repo;
pub mod restore;
pub mod retention;
pub mod schedule;
pub mod storage;
pub mod verification;
pub mod webhook;

pub use error::{Error, FieldError, Result};
