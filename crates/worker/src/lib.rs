//! The Svalbard worker: job loop, engine drivers, backup and restore pipelines.

pub mod backup;
pub mod engine;
pub mod maintenance;
pub mod mysql;
pub mod pg;
pub mod pipeline;
pub mod process;
pub mod reaper;
pub mod restore;
pub mod runner;
pub mod sqlcount;
pub mod target;
pub mod verify;
pub mod webhooks;

use std::sync::Arc;

use svalbard_core::config::Config;
use svalbard_core::crypto::KeyRing;
use svalbard_core::repo::backups::{BACKUP_JOB, DELETE_JOB, VERIFY_JOB};
use svalbard_core::repo::restores::RESTORE_JOB;
use svalbard_core::storage::Storage;

fn key_ring(config: &Config) -> anyhow::Result<KeyRing> {
    KeyRing::parse(
        config
            .crypto
            .keys
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("crypto.keys is required (SVALBARD_CRYPTO__KEYS)"))?,
    )
}

/// [`build`], once the key ring has proven it belongs to this control database: a worker with
/// another installation's keys would claim this database's jobs and fail every one of them.
pub async fn start(config: &Config, pool: sqlx::PgPool) -> anyhow::Result<runner::Worker> {
    let ring = key_ring(config)?;
    svalbard_core::crypto::verify_ring(&pool, &ring).await?;
    // After a master key rotation, tenant keys move to the new first key; archives stay as they are.
    if let Err(e) = svalbard_core::repo::keys::reseal(&pool, &ring).await {
        tracing::error!(error = %e, "sealing tenant keys again with the first master key failed; trying at the next start");
    }
    build(config, pool)
}

/// A worker with every job handler, without the key check of [`start`].
pub fn build(config: &Config, pool: sqlx::PgPool) -> anyhow::Result<runner::Worker> {
    let storage = Storage::new(&config.s3);
    let keys = Arc::new(key_ring(config)?);
    let targets = Arc::new(svalbard_core::netpolicy::Guard::new(
        &config.targets.lists(),
        config.database_url.as_ref().map(secrecy::ExposeSecret::expose_secret),
    )?);
    // The platform's storage is nobody's business but the platform's: its endpoint and bucket
    // are cut from what tenants read (the log keeps them).
    let authority = storage
        .endpoint
        .split_once("://")
        .map(|(_, rest)| rest.trim_end_matches('/').to_owned());
    let internal = [
        Some(storage.endpoint.clone()),
        authority,
        Some(format!("bucket {}", storage.bucket)),
    ];
    let worker = runner::Worker::new(pool.clone(), config.worker.clone())
        .with_internal_names(internal.into_iter().flatten())
        .with_handler(
            BACKUP_JOB,
            Arc::new(backup::BackupJob {
                storage: storage.clone(),
                keys: keys.clone(),
                encrypt: config.crypto.archives == svalbard_core::config::ArchiveEncryption::Age,
                config: config.worker.clone(),
                targets: targets.clone(),
            }),
        )
        .with_handler(
            RESTORE_JOB,
            Arc::new(restore::RestoreJob {
                storage: storage.clone(),
                keys: keys.clone(),
                config: config.worker.clone(),
                targets: targets.clone(),
            }),
        )
        .with_handler(
            VERIFY_JOB,
            Arc::new(verify::VerifyJob {
                archives: restore::RestoreJob {
                    storage: storage.clone(),
                    keys: keys.clone(),
                    config: config.worker.clone(),
                    targets: targets.clone(),
                },
                servers: config.verification.clone(),
            }),
        )
        .with_handler(
            DELETE_JOB,
            Arc::new(backup::DeleteJob {
                storage: storage.clone(),
            }),
        );
    let deliverer = webhooks::Deliverer {
        pool: pool.clone(),
        keys,
        targets,
        config: config.webhooks.clone(),
    };
    let maintenance = maintenance::Maintenance::new(config, pool, storage, worker.id().to_owned());
    Ok(worker.with_maintenance(maintenance).with_webhooks(deliverer))
}
