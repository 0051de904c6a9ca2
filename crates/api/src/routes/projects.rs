use actix_web::{HttpResponse, delete, get, post, web};
use serde::{Deserialize, Serialize};
use svalbard_core::auth::Role;
use svalbard_core::domain::{Name, Project, check};
use svalbard_core::page::Page;
use svalbard_core::repo::projects;
use utoipa::ToSchema;
use utoipa_actix_web::service_config::ServiceConfig;

use super::{IdempotencyHeader, Paging, ProjectPath, TenantPath, location, optional_text};
use crate::auth::Auth;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json, ListQuery};
use crate::idempotency::{IdempotencyKey, Reply};
use crate::state::State;

pub fn configure(cfg: &mut ServiceConfig) {
    cfg.service(create_project)
        .service(list_projects)
        .service(get_project)
        .service(delete_project);
}

/// A new project.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateProject {
    /// Unique within the tenant: lowercase letters, digits and `-`, 1–63 characters.
    #[schema(example = "billing", pattern = "^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$")]
    pub name: String,
    /// Free text, up to 1000 characters.
    #[schema(pattern = "^\\s*[^\\x00-\\x1f\\x7f-\\x9f]{0,1000}\\s*$")]
    pub description: Option<String>,
}

/// Creates a project (admin).
#[utoipa::path(
    tag = "projects",
    request_body = CreateProject,
    params(
        TenantPath,
        IdempotencyHeader,
    ),
    responses(
        (status = 201, description = "The project", body = Project, headers(("Location" = String))),
        (status = 409, description = "A project with this name exists", body = crate::error::Problem, content_type = "application/problem+json"),
    ),
)]
#[post("/tenants/{tenantId}/projects")]
async fn create_project(
    state: State,
    auth: Auth,
    path: web::Path<TenantPath>,
    idem: IdempotencyKey,
    Json(body): Json<CreateProject>,
) -> ApiResult<HttpResponse> {
    let tenant = auth.tenant_with(path.into_inner().tenant, Role::Admin)?;
    let mut errors = Vec::new();
    let name = Name::parse("name", &body.name).map_err(|e| errors.push(e)).ok();
    let description = optional_text(&mut errors, "description", body.description.as_deref(), 1000);
    check(errors)?;
    let name = name.ok_or_else(|| ApiError::invalid("name", "is invalid"))?;
    idem.run(&state, &auth, &body, || async {
        let p = projects::create(&state.pool, tenant, &name, description.as_deref()).await?;
        Ok(Reply::created(
            location(&state, &format!("/tenants/{tenant}/projects/{}", p.id)),
            p,
        ))
    })
    .await
}

/// Lists the tenant's projects, newest first.
#[utoipa::path(
    tag = "projects",
    params(
        TenantPath,
        Paging,
    ),
    responses((status = 200, description = "A page of projects", body = Page<Project>)),
)]
#[get("/tenants/{tenantId}/projects")]
async fn list_projects(state: State, auth: Auth, path: web::Path<TenantPath>, q: ListQuery) -> ApiResult<HttpResponse> {
    let tenant = auth.tenant(path.into_inner().tenant)?;
    Ok(HttpResponse::Ok().json(projects::list(&state.pool, tenant, q.page).await?))
}

/// Reads a project.
#[utoipa::path(
    tag = "projects",
    params(
        ProjectPath,
    ),
    responses((status = 200, description = "The project", body = Project)),
)]
#[get("/tenants/{tenantId}/projects/{projectId}")]
async fn get_project(state: State, auth: Auth, path: web::Path<ProjectPath>) -> ApiResult<HttpResponse> {
    let ProjectPath { tenant, project } = path.into_inner();
    let tenant = auth.tenant(tenant)?;
    Ok(HttpResponse::Ok().json(projects::get(&state.pool, tenant, project).await?))
}

/// Deletes a project and its planets (admin); refused (409) while it has backups.
#[utoipa::path(
    tag = "projects",
    params(
        ProjectPath,
    ),
    responses(
        (status = 204, description = "Deleted"),
        (status = 409, description = "The project still has backups", body = crate::error::Problem, content_type = "application/problem+json"),
    ),
)]
#[delete("/tenants/{tenantId}/projects/{projectId}")]
async fn delete_project(state: State, auth: Auth, path: web::Path<ProjectPath>) -> ApiResult<HttpResponse> {
    let ProjectPath { tenant, project } = path.into_inner();
    let tenant = auth.tenant_with(tenant, Role::Admin)?;
    projects::delete(&state.pool, tenant, project).await?;
    Ok(HttpResponse::NoContent().finish())
}
