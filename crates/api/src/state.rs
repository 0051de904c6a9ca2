use std::sync::Arc;

use sqlx::PgPool;
use svalbard_core::auth::TokenVerifier;
use svalbard_core::config::Config;
use svalbard_core::crypto::KeyRing;
use svalbard_core::netpolicy::Guard;
use svalbard_core::storage::Storage;

/// What every handler can reach.
pub struct AppState {
    pub pool: PgPool,
    pub config: Config,
    pub verifier: TokenVerifier,
    pub keys: KeyRing,
    pub storage: Storage,
    /// The target network policy planets are checked against.
    pub targets: Guard,
    /// Key of the idempotency fingerprints (derived from the key ring).
    pub fingerprint_key: [u8; 32],
}

pub type State = actix_web::web::Data<Arc<AppState>>;
