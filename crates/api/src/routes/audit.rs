use std::collections::HashMap;

use actix_web::{HttpRequest, HttpResponse, get, web};
use chrono::{DateTime, Utc};
use svalbard_core::FieldError;
use svalbard_core::auth::Role;
use svalbard_core::domain::check;
use svalbard_core::page::Page;
use svalbard_core::repo::audit::{self, AuditEvent, Filter};
use utoipa::IntoParams;
use utoipa_actix_web::service_config::ServiceConfig;

use super::{Paging, TenantPath};
use crate::auth::Auth;
use crate::error::{ApiError, ApiResult};
use crate::extract::ListQuery;
use crate::state::State;

pub fn configure(cfg: &mut ServiceConfig) {
    cfg.service(list_audit_events);
}

/// Filters of the audit log (documentation; parsed by the handler).
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditFilter {
    /// Only events of this action, e.g. `backup.download`.
    pub action: Option<String>,
    /// Only events of this token subject.
    pub actor: Option<String>,
    /// Only events at or after this time (RFC 3339).
    pub since: Option<DateTime<Utc>>,
    /// Only events before this time (RFC 3339).
    pub until: Option<DateTime<Utc>>,
}

fn time(errors: &mut Vec<FieldError>, q: &HashMap<String, String>, field: &str) -> Option<DateTime<Utc>> {
    // Present but empty is no time either: the document says date-time, and so does the 400.
    let v = q.get(field)?;
    match DateTime::parse_from_rfc3339(v) {
        Ok(t) => Some(t.with_timezone(&Utc)),
        Err(_) => {
            errors.push(FieldError::new(
                field,
                "must be an RFC 3339 time, e.g. 2026-01-31T12:00:00Z",
            ));
            None
        }
    }
}

/// The tenant's audit log, newest first (tenant admins; platform administrators for any tenant):
/// archive downloads, restores, backup deletes and pins, schedule and planet changes, tenant
/// changes, and calls refused for want of a role.
#[utoipa::path(
    tag = "audit",
    params(TenantPath, AuditFilter, Paging),
    responses((status = 200, description = "A page of audit events", body = Page<AuditEvent>)),
)]
#[get("/tenants/{tenantId}/audit-events")]
async fn list_audit_events(
    state: State,
    auth: Auth,
    req: HttpRequest,
    path: web::Path<TenantPath>,
    list: ListQuery,
) -> ApiResult<HttpResponse> {
    let tenant = auth.tenant_with(path.into_inner().tenant, Role::Admin)?;
    let q = web::Query::<HashMap<String, String>>::from_query(req.query_string())
        .map_err(|e| ApiError::BadRequest(format!("the query string is malformed: {e}")))?;
    let mut errors = Vec::new();
    let text = |field: &str| q.get(field).filter(|v| !v.is_empty()).cloned();
    let filter = Filter {
        action: text("action"),
        actor: text("actor"),
        since: time(&mut errors, &q, "since"),
        until: time(&mut errors, &q, "until"),
    };
    check(errors)?;
    Ok(HttpResponse::Ok().json(audit::list(&state.pool, tenant, &filter, list.page).await?))
}
