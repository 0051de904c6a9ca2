//! End-to-end tests: the API in-process, workers in-process or as real `svalbard work`
//! processes, a real S3 server and real PostgreSQL databases.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod backups;
mod chaos;
mod client;
mod encryption;
mod garage;
mod harness;
mod hostile;
mod keys;
mod mysql;
mod observability;
mod profiles;
mod recovery;
mod restores;
mod retention;
mod storage;
mod targets;
mod uploads;
mod verify;
mod webhooks;
