use actix_web::{HttpResponse, delete, get, patch, post, web};
use serde::{Deserialize, Serialize};
use svalbard_core::auth::Role;
use svalbard_core::domain::{Name, Tenant, TenantLimits, check};
use svalbard_core::netpolicy::PolicyLists;
use svalbard_core::page::Page;
use svalbard_core::repo::tenants::{self, NewTenant, TenantPatch};
use utoipa::ToSchema;
use utoipa_actix_web::service_config::ServiceConfig;

use super::{IdempotencyHeader, Paging, TenantPath, location, optional_text};
use crate::auth::Auth;
use crate::error::ApiResult;
use crate::extract::{Json, ListQuery};
use crate::idempotency::{IdempotencyKey, Reply};
use crate::state::State;

pub fn configure(cfg: &mut ServiceConfig) {
    cfg.service(create_tenant)
        .service(list_tenants)
        .service(get_tenant)
        .service(update_tenant)
        .service(delete_tenant);
}

/// A new tenant.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateTenant {
    /// Unique name: lowercase letters, digits and `-`, 1–63 characters.
    #[schema(example = "acme", pattern = "^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$")]
    pub name: String,
    /// Free text shown to people, up to 200 characters.
    #[schema(pattern = "^\\s*[^\\x00-\\x1f\\x7f-\\x9f]{0,200}\\s*$")]
    pub display_name: Option<String>,
    /// Limits of this tenant; absent ones are the service's defaults.
    pub limits: Option<TenantLimits>,
    /// Hosts this tenant's planets may name: `allow` replaces the platform's `targets.allow`,
    /// `deny` adds to the platform's `targets.deny`, which keeps applying; absent means the
    /// platform's lists. An allowed name does not re-admit the addresses it resolves to (only
    /// a network does); the control database and socket paths stay refused.
    pub target_policy: Option<PolicyLists>,
}

fn double_option<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

fn policy_errors(errors: &mut Vec<svalbard_core::FieldError>, policy: Option<&PolicyLists>) {
    for (field, message) in policy.map(PolicyLists::errors).unwrap_or_default() {
        errors.push(svalbard_core::FieldError::new(format!("targetPolicy.{field}"), message));
    }
}

/// Changes to a tenant; absent fields stay.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateTenant {
    #[schema(pattern = "^\\s*[^\\x00-\\x1f\\x7f-\\x9f]{0,200}\\s*$")]
    pub display_name: Option<String>,
    /// Replaces all of the tenant's limits; a limit left out returns to the default.
    pub limits: Option<TenantLimits>,
    /// Replaces the tenant's target policy; `null` returns it to the platform's.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<PolicyLists>)]
    pub target_policy: Option<Option<PolicyLists>>,
}

/// Creates a tenant (platform administrators).
#[utoipa::path(
    tag = "tenants",
    request_body = CreateTenant,
    params(IdempotencyHeader),
    responses(
        (status = 201, description = "The tenant", body = Tenant, headers(("Location" = String))),
        (status = 409, description = "A tenant with this name exists", body = crate::error::Problem, content_type = "application/problem+json"),
    ),
)]
#[post("/tenants")]
async fn create_tenant(
    state: State,
    auth: Auth,
    idem: IdempotencyKey,
    Json(body): Json<CreateTenant>,
) -> ApiResult<HttpResponse> {
    auth.platform(Role::Admin)?;
    let mut errors = Vec::new();
    let name = Name::parse("name", &body.name).map_err(|e| errors.push(e)).ok();
    let display = optional_text(&mut errors, "displayName", body.display_name.as_deref(), 200);
    let limits = body.limits.unwrap_or_default();
    errors.extend(limits.validate());
    policy_errors(&mut errors, body.target_policy.as_ref());
    check(errors)?;
    let name = name.ok_or_else(|| crate::error::ApiError::invalid("name", "is invalid"))?;
    // The tenant's id is set when it is created.
    let audit = auth.audit(
        svalbard_core::ids::TenantId(uuid::Uuid::nil()),
        "tenant.create",
        "tenant",
    );
    idem.run(&state, &auth, &body, || async {
        let new = NewTenant {
            display_name: display.as_deref(),
            limits,
            target_policy: body.target_policy.clone(),
        };
        let t = tenants::create(&state.pool, &name, new, &audit).await?;
        Ok(Reply::created(location(&state, &format!("/tenants/{}", t.id)), t))
    })
    .await
}

/// Lists tenants, newest first (platform operators).
#[utoipa::path(
    tag = "tenants",
    params(
        Paging,
    ),
    responses((status = 200, description = "A page of tenants", body = Page<Tenant>)),
)]
#[get("/tenants")]
async fn list_tenants(state: State, auth: Auth, q: ListQuery) -> ApiResult<HttpResponse> {
    auth.platform(Role::Viewer)?;
    Ok(HttpResponse::Ok().json(tenants::list(&state.pool, q.page).await?))
}

/// Reads a tenant.
#[utoipa::path(
    tag = "tenants",
    params(TenantPath),
    responses((status = 200, description = "The tenant", body = Tenant)),
)]
#[get("/tenants/{tenantId}")]
async fn get_tenant(state: State, auth: Auth, path: web::Path<TenantPath>) -> ApiResult<HttpResponse> {
    let tenant = auth.tenant(path.into_inner().tenant)?;
    Ok(HttpResponse::Ok().json(tenants::get(&state.pool, tenant).await?))
}

/// Changes a tenant's display name, limits or target policy (platform administrators).
#[utoipa::path(
    tag = "tenants",
    request_body(content = UpdateTenant, content_type = "application/merge-patch+json"),
    params(TenantPath),
    responses((status = 200, description = "The tenant", body = Tenant)),
)]
#[patch("/tenants/{tenantId}")]
async fn update_tenant(
    state: State,
    auth: Auth,
    path: web::Path<TenantPath>,
    Json(body): Json<UpdateTenant>,
) -> ApiResult<HttpResponse> {
    let tenant = auth.tenant(path.into_inner().tenant)?;
    if let Err(refused) = auth.platform(Role::Admin) {
        // Recorded: a tenant's own admin trying to widen its target policy is worth knowing.
        auth.audit(tenant, "tenant.update", "tenant")
            .denied(&state.pool, Some(tenant.0))
            .await;
        return Err(refused);
    }
    let mut errors = Vec::new();
    let display = optional_text(&mut errors, "displayName", body.display_name.as_deref(), 200);
    if let Some(l) = &body.limits {
        errors.extend(l.validate());
    }
    policy_errors(&mut errors, body.target_policy.as_ref().and_then(Option::as_ref));
    check(errors)?;
    let patch = TenantPatch {
        display_name: body.display_name.as_ref().map(|_| display.as_deref()),
        limits: body.limits,
        target_policy: body.target_policy.clone(),
    };
    let audit = auth.audit(tenant, "tenant.update", "tenant");
    Ok(HttpResponse::Ok().json(tenants::update(&state.pool, tenant, patch, &audit).await?))
}

/// Deletes a tenant with its projects and planets; refused (409) while it has backups.
#[utoipa::path(
    tag = "tenants",
    params(TenantPath),
    responses(
        (status = 204, description = "Deleted"),
        (status = 409, description = "The tenant still has backups", body = crate::error::Problem, content_type = "application/problem+json"),
    ),
)]
#[delete("/tenants/{tenantId}")]
async fn delete_tenant(state: State, auth: Auth, path: web::Path<TenantPath>) -> ApiResult<HttpResponse> {
    let tenant = auth.tenant(path.into_inner().tenant)?;
    auth.platform(Role::Admin)?;
    tenants::delete(&state.pool, tenant).await?;
    Ok(HttpResponse::NoContent().finish())
}
