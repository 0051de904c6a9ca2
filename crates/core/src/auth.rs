//! Bearer tokens: JWT claims, roles, verification with a pinned algorithm, and minting.

use std::collections::HashMap;
use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};

use crate::config::{AuthConfig, JwtAlgorithm};
use crate::ids::TenantId;

/// What a token may do. Ordered: `viewer < operator < admin`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads everything of its tenant.
    Viewer,
    /// Also creates backups and restores.
    Operator,
    /// Also manages projects, planets, schedules, and deletes backups.
    Admin,
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "viewer" => Ok(Self::Viewer),
            "operator" => Ok(Self::Operator),
            "admin" => Ok(Self::Admin),
            other => Err(format!("unknown role `{other}` (viewer, operator, admin)")),
        }
    }
}

/// Which tenants a token reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TenantScope {
    /// `tenant: "*"`: a platform operator, every tenant.
    Platform,
    /// One tenant.
    Tenant(TenantId),
}

/// The claims Svalbard reads from a token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    /// A tenant id, or `*` for platform admins.
    pub tenant: String,
    pub role: Role,
    pub iss: String,
    pub aud: String,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
}

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub subject: String,
    pub scope: TenantScope,
    pub role: Role,
}

impl Caller {
    /// True when this caller may see `tenant` at all; a `false` must answer as "not found".
    #[must_use]
    pub fn reaches(&self, tenant: TenantId) -> bool {
        match self.scope {
            TenantScope::Platform => true,
            TenantScope::Tenant(own) => own == tenant,
        }
    }

    #[must_use]
    pub fn is_platform(&self) -> bool {
        self.scope == TenantScope::Platform
    }

    /// A stable name of the caller's scope, used to key idempotency records.
    #[must_use]
    pub fn scope_key(&self) -> String {
        match self.scope {
            TenantScope::Platform => format!("*:{}", self.subject),
            TenantScope::Tenant(t) => format!("{t}:{}", self.subject),
        }
    }
}

/// Why a token was refused. The message is safe to show the caller.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TokenError(pub String);

/// Verifies tokens with exactly the configured algorithm and keys.
pub struct TokenVerifier {
    algorithm: Algorithm,
    validation: Validation,
    /// HS256: one key under "". RS256/EdDSA: keys by `kid`.
    keys: HashMap<String, DecodingKey>,
}

fn algorithm(a: JwtAlgorithm) -> Algorithm {
    match a {
        JwtAlgorithm::HS256 => Algorithm::HS256,
        JwtAlgorithm::RS256 => Algorithm::RS256,
        JwtAlgorithm::EdDSA => Algorithm::EdDSA,
    }
}

impl TokenVerifier {
    pub fn new(cfg: &AuthConfig) -> anyhow::Result<Self> {
        let alg = algorithm(cfg.algorithm);
        let mut keys = HashMap::new();
        match cfg.algorithm {
            JwtAlgorithm::HS256 => {
                let secret = cfg
                    .hs256_secret
                    .as_ref()
                    .ok_or_else(|| anyhow::anyhow!("auth.hs256_secret is required for HS256"))?;
                anyhow::ensure!(
                    secret.expose_secret().len() >= 32,
                    "auth.hs256_secret must be at least 32 bytes"
                );
                keys.insert(
                    String::new(),
                    DecodingKey::from_secret(secret.expose_secret().as_bytes()),
                );
            }
            JwtAlgorithm::RS256 | JwtAlgorithm::EdDSA => {
                anyhow::ensure!(!cfg.public_keys.is_empty(), "auth.public_keys is required for {alg:?}");
                for k in &cfg.public_keys {
                    let key = if alg == Algorithm::RS256 {
                        DecodingKey::from_rsa_pem(k.pem.as_bytes())
                    } else {
                        DecodingKey::from_ed_pem(k.pem.as_bytes())
                    }
                    .map_err(|e| anyhow::anyhow!("auth.public_keys[{}]: {e}", k.kid))?;
                    keys.insert(k.kid.clone(), key);
                }
            }
        }
        let mut validation = Validation::new(alg);
        validation.set_issuer(&[cfg.issuer.as_str()]);
        validation.set_audience(&[cfg.audience.as_str()]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = cfg.leeway_secs;
        Ok(Self {
            algorithm: alg,
            validation,
            keys,
        })
    }

    pub fn verify(&self, token: &str) -> Result<Caller, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError("the token is malformed".into()))?;
        if header.alg != self.algorithm {
            return Err(TokenError(format!(
                "tokens must be signed with {:?}, this one says {:?}",
                self.algorithm, header.alg
            )));
        }
        let key = if self.algorithm == Algorithm::HS256 {
            self.keys.get("")
        } else {
            header.kid.as_deref().and_then(|kid| self.keys.get(kid))
        }
        .ok_or_else(|| TokenError("the token's key id is unknown".into()))?;
        let data = jsonwebtoken::decode::<Claims>(token, key, &self.validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            TokenError(
                match e.kind() {
                    ErrorKind::ExpiredSignature => "the token has expired",
                    ErrorKind::ImmatureSignature => "the token is not valid yet",
                    ErrorKind::InvalidAudience => "the token is for another audience",
                    ErrorKind::InvalidIssuer => "the token is from another issuer",
                    ErrorKind::InvalidSignature => "the token's signature does not verify",
                    ErrorKind::MissingRequiredClaim(_) => "the token lacks a required claim",
                    _ => "the token is malformed",
                }
                .into(),
            )
        })?;
        let c = data.claims;
        let scope = if c.tenant == "*" {
            TenantScope::Platform
        } else {
            TenantScope::Tenant(
                c.tenant
                    .parse()
                    .map_err(|_| TokenError("the token's tenant claim is not a tenant id".into()))?,
            )
        };
        Ok(Caller {
            subject: c.sub,
            scope,
            role: c.role,
        })
    }
}

/// Mints an HS256 token with the configured secret (for `svalbard token`, `dev` and tests).
pub fn mint_hs256(cfg: &AuthConfig, subject: &str, tenant: &str, role: Role, ttl: Duration) -> anyhow::Result<String> {
    let secret = cfg
        .hs256_secret
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("auth.hs256_secret is not configured"))?;
    let now = jsonwebtoken::get_current_timestamp();
    let claims = Claims {
        sub: subject.into(),
        tenant: tenant.into(),
        role,
        iss: cfg.issuer.clone(),
        aud: cfg.audience.clone(),
        iat: Some(now),
        nbf: Some(now),
        exp: now + ttl.as_secs(),
    };
    Ok(jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.expose_secret().as_bytes()),
    )?)
}
