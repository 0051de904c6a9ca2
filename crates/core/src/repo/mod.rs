//! One module per table. Every function that reads or writes a tenant's rows takes the tenant
//! first, so no query can forget the scoping.

pub mod audit;
pub mod backup_numbers;
pub mod backups;
pub mod fleet;
pub mod idempotency;
pub mod keys;
pub mod limits;
pub mod planets;
pub mod projects;
pub mod restores;
pub mod retention;
pub mod schedules;
pub(crate) mod subject;
pub mod tenants;
pub mod webhooks;

/// Maps a foreign-key violation (the parent vanished or never existed) to "not found".
pub(crate) fn fk_to_not_found(err: sqlx::Error, what: &'static str) -> crate::Error {
    match &err {
        sqlx::Error::Database(db) if db.code().as_deref() == Some("23503") => crate::Error::NotFound(what),
        _ => crate::Error::Database(err),
    }
}
