//! The bearer-token extractor and the authorization checks every handler uses.

use std::future::{Ready, ready};
use std::sync::Arc;

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{FromRequest, HttpRequest, web};
use svalbard_core::auth::{Caller, Role};
use svalbard_core::ids::TenantId;
use svalbard_core::repo::audit;

use crate::error::ApiError;
use crate::state::AppState;

/// The verified caller of a request, and the address it came from (for the audit log).
pub struct Auth(pub Caller, pub Option<String>);

impl FromRequest for Auth {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        // The connection's peer, not a forwarded-for header a client could write itself.
        let client = req.peer_addr().map(|a| a.ip().to_string());
        ready(authenticate(req).map(|caller| Auth(caller, client)))
    }
}

fn authenticate(req: &HttpRequest) -> Result<Caller, ApiError> {
    let state = req
        .app_data::<web::Data<Arc<AppState>>>()
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("application state missing")))?;
    let value = req
        .headers()
        .get(header::AUTHORIZATION)
        .ok_or_else(|| ApiError::Unauthorized("an `Authorization: Bearer <token>` header is required".into()))?;
    let value = value
        .to_str()
        .map_err(|_| ApiError::Unauthorized("the Authorization header is not valid text".into()))?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiError::Unauthorized("the Authorization header must use the Bearer scheme".into()))?;
    verify(state, token)
}

fn verify(state: &AppState, token: &str) -> Result<Caller, ApiError> {
    let caller = state.verifier.verify(token).map_err(|e| ApiError::Unauthorized(e.0))?;
    let span = tracing::Span::current();
    span.record("subject", caller.subject.as_str());
    Ok(caller)
}

/// A Bearer token, or HTTP Basic whose password is a Svalbard token (the user name is not
/// looked at). Only the Connectware-style profile takes it, because that API's documented
/// calls authenticate with `curl -u`; everything else takes Bearer alone.
pub struct BasicOrBearer(pub Auth);

impl FromRequest for BasicOrBearer {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let client = req.peer_addr().map(|a| a.ip().to_string());
        let basic = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Basic ").or_else(|| v.strip_prefix("basic ")))
            .map(str::trim);
        let caller = match basic {
            None => authenticate(req),
            Some(encoded) => basic_token(encoded).and_then(|token| {
                let state = req
                    .app_data::<web::Data<Arc<AppState>>>()
                    .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("application state missing")))?;
                verify(state, &token)
            }),
        };
        ready(caller.map(|caller| Self(Auth(caller, client))))
    }
}

/// The password of `user:password`, base64-encoded as RFC 7617 sends it.
fn basic_token(encoded: &str) -> Result<String, ApiError> {
    use base64::Engine as _;
    let bad = || ApiError::Unauthorized("the Basic credentials must be base64 of `user:token`".into());
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|_| bad())?;
    let text = String::from_utf8(decoded).map_err(|_| bad())?;
    let (_, token) = text.split_once(':').ok_or_else(bad)?;
    let token = token.trim();
    if token.is_empty() {
        return Err(ApiError::Unauthorized(
            "the Basic password must be a Svalbard token".into(),
        ));
    }
    Ok(token.to_owned())
}

impl Auth {
    /// The tenant of the path, if this caller reaches it; another tenant's is "not found".
    pub fn tenant(&self, tenant: TenantId) -> Result<TenantId, ApiError> {
        if self.0.reaches(tenant) {
            tracing::Span::current().record("tenant_id", tracing::field::display(tenant));
            Ok(tenant)
        } else {
            Err(ApiError::NotFound("tenant"))
        }
    }

    /// Requires at least `role`.
    pub fn require(&self, role: Role) -> Result<(), ApiError> {
        if self.0.role >= role {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "this call needs the `{}` role; the token has `{}`",
                role_name(role),
                role_name(self.0.role)
            )))
        }
    }

    /// Reaches `tenant` and has at least `role`.
    pub fn tenant_with(&self, tenant: TenantId, role: Role) -> Result<TenantId, ApiError> {
        let t = self.tenant(tenant)?;
        self.require(role)?;
        Ok(t)
    }

    /// Platform-wide calls (managing tenants).
    pub fn platform(&self, role: Role) -> Result<(), ApiError> {
        if !self.0.is_platform() {
            return Err(ApiError::Forbidden(
                "this call is for platform administrators (tenant `*`)".into(),
            ));
        }
        self.require(role)
    }
}

impl Auth {
    /// An audit record of `action` on a `resource_type` of `tenant` by this caller.
    #[must_use]
    pub fn audit(&self, tenant: TenantId, action: &'static str, resource_type: &'static str) -> audit::Entry {
        audit::Entry {
            tenant,
            actor: self.0.subject.clone(),
            role: self.0.role,
            platform: self.0.is_platform(),
            client_address: self.1.clone(),
            action,
            resource_type,
            outcome: audit::Outcome::Success,
        }
    }

    /// Reaches `tenant` and has at least `role`, for an audited action: a refusal for want of
    /// the role is recorded as `denied` (another tenant's resource stays "not found", unrecorded).
    /// Returns the tenant and the record to write with the action.
    pub async fn authorize(
        &self,
        pool: &sqlx::PgPool,
        tenant: TenantId,
        role: Role,
        action: &'static str,
        resource: (&'static str, Option<uuid::Uuid>),
    ) -> Result<(TenantId, audit::Entry), ApiError> {
        let tenant = self.tenant(tenant)?;
        let entry = self.audit(tenant, action, resource.0);
        if let Err(refused) = self.require(role) {
            entry.denied(pool, resource.1).await;
            return Err(refused);
        }
        Ok((tenant, entry))
    }
}

fn role_name(r: Role) -> &'static str {
    match r {
        Role::Viewer => "viewer",
        Role::Operator => "operator",
        Role::Admin => "admin",
    }
}
