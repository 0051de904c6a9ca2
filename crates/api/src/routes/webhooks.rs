//! A tenant's webhook endpoints (admin) and what was delivered to them.

use actix_web::{HttpResponse, delete, get, post, web};
use serde::{Deserialize, Serialize};
use svalbard_core::FieldError;
use svalbard_core::auth::Role;
use svalbard_core::domain::check;
use svalbard_core::ids::{TenantId, WebhookId};
use svalbard_core::page::Page;
use svalbard_core::repo::webhooks;
use svalbard_core::webhook::{CreatedWebhook, Delivery, DeliveryStatus, EventType, Webhook, WebhookUrl};
use utoipa::{IntoParams, ToSchema};
use utoipa_actix_web::service_config::ServiceConfig;

use super::{Paging, TenantPath, location};
use crate::auth::Auth;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json, ListQuery};
use crate::state::State;

pub fn configure(cfg: &mut ServiceConfig) {
    cfg.service(create_webhook)
        .service(list_webhooks)
        .service(get_webhook)
        .service(delete_webhook)
        .service(list_deliveries);
}

/// Path of a webhook endpoint.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct WebhookPath {
    /// The tenant.
    #[serde(rename = "tenantId")]
    #[param(rename = "tenantId")]
    pub tenant: TenantId,
    /// The webhook endpoint.
    #[serde(rename = "webhookId")]
    #[param(rename = "webhookId")]
    pub webhook: WebhookId,
}

/// Status filter of delivery lists (documentation; parsed by `ListQuery`).
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeliveryStatusFilter {
    /// Only deliveries in this state, spelled exactly as listed.
    pub status: Option<DeliveryStatus>,
}

/// A new webhook endpoint.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateWebhook {
    /// An `http` or `https` URL without credentials, up to 2048 characters. It must pass the
    /// tenant's target policy, as a planet's host does, now and before every delivery.
    #[schema(example = "https://hooks.example.com/svalbard", min_length = 1, max_length = 2048)]
    pub url: String,
    /// The events to send, at least one.
    #[schema(min_items = 1)]
    pub event_types: Vec<EventType>,
}

fn webhook_path(t: TenantId, id: WebhookId) -> String {
    format!("/tenants/{t}/webhooks/{id}")
}

/// Registers a webhook endpoint (admin). The answer carries the signing secret, shown this once.
///
/// Each delivery is a POST of `{type, timestamp, data}` signed by the Standard Webhooks scheme:
/// `webhook-id` (the delivery's id, the same on retries), `webhook-timestamp` (seconds since the
/// epoch) and `webhook-signature` (`v1,` and the base64 HMAC-SHA256 of `{id}.{timestamp}.{body}`
/// keyed with the secret's base64-decoded part after `whsec_`). An answer other than 2xx within
/// the timeout is retried with exponential backoff for up to a day; redirects are not followed.
#[utoipa::path(
    tag = "webhooks",
    request_body = CreateWebhook,
    params(
        TenantPath,
    ),
    responses(
        (status = 201, description = "The endpoint and its secret", body = CreatedWebhook, headers(("Location" = String))),
    ),
)]
#[post("/tenants/{tenantId}/webhooks")]
async fn create_webhook(
    state: State,
    auth: Auth,
    path: web::Path<TenantPath>,
    Json(body): Json<CreateWebhook>,
) -> ApiResult<HttpResponse> {
    let (tenant, audit) = auth
        .authorize(
            &state.pool,
            path.into_inner().tenant,
            Role::Admin,
            "webhook.create",
            ("webhook", None),
        )
        .await?;
    let mut errors = Vec::new();
    let url = WebhookUrl::parse("url", &body.url).map_err(|e| errors.push(e)).ok();
    if body.event_types.is_empty() {
        errors.push(FieldError::new("eventTypes", "must name at least one event type"));
    }
    check(errors)?;
    let url = url.ok_or_else(|| ApiError::invalid("url", "is invalid"))?;
    let mut events = body.event_types.clone();
    events.sort_by_key(|e| e.as_str());
    events.dedup();
    let lists = svalbard_core::repo::tenants::target_policy(&state.pool, tenant).await?;
    state
        .targets
        .check(lists.as_ref(), &url.host(), url.port(), None)
        .await
        .map_err(|refusal| ApiError::invalid("url", refusal.0))?;
    let created = webhooks::create(&state.pool, &state.keys, tenant, &url, &events, &audit).await?;
    Ok(HttpResponse::Created()
        .insert_header((
            actix_web::http::header::LOCATION,
            location(&state, &webhook_path(tenant, created.webhook.id)),
        ))
        .json(created))
}

/// Lists the tenant's webhook endpoints, newest first (admin).
#[utoipa::path(
    tag = "webhooks",
    params(
        TenantPath,
        Paging,
    ),
    responses((status = 200, description = "A page of webhook endpoints", body = Page<Webhook>)),
)]
#[get("/tenants/{tenantId}/webhooks")]
async fn list_webhooks(state: State, auth: Auth, path: web::Path<TenantPath>, q: ListQuery) -> ApiResult<HttpResponse> {
    let tenant = auth.tenant_with(path.into_inner().tenant, Role::Admin)?;
    Ok(HttpResponse::Ok().json(webhooks::list(&state.pool, tenant, q.page).await?))
}

/// Reads a webhook endpoint (admin); its secret is not shown.
#[utoipa::path(
    tag = "webhooks",
    params(
        WebhookPath,
    ),
    responses((status = 200, description = "The webhook endpoint", body = Webhook)),
)]
#[get("/tenants/{tenantId}/webhooks/{webhookId}")]
async fn get_webhook(state: State, auth: Auth, path: web::Path<WebhookPath>) -> ApiResult<HttpResponse> {
    let WebhookPath { tenant, webhook } = path.into_inner();
    let tenant = auth.tenant_with(tenant, Role::Admin)?;
    Ok(HttpResponse::Ok().json(webhooks::get(&state.pool, tenant, webhook).await?))
}

/// Deletes a webhook endpoint and its deliveries (admin); nothing more is sent to it.
#[utoipa::path(
    tag = "webhooks",
    params(
        WebhookPath,
    ),
    responses((status = 204, description = "Deleted")),
)]
#[delete("/tenants/{tenantId}/webhooks/{webhookId}")]
async fn delete_webhook(state: State, auth: Auth, path: web::Path<WebhookPath>) -> ApiResult<HttpResponse> {
    let WebhookPath { tenant, webhook } = path.into_inner();
    let (tenant, audit) = auth
        .authorize(
            &state.pool,
            tenant,
            Role::Admin,
            "webhook.delete",
            ("webhook", Some(webhook.0)),
        )
        .await?;
    webhooks::delete(&state.pool, tenant, webhook, &audit).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Lists an endpoint's deliveries with their attempts, newest first (admin).
#[utoipa::path(
    tag = "webhooks",
    params(
        WebhookPath,
        Paging,
        DeliveryStatusFilter,
    ),
    responses((status = 200, description = "A page of deliveries", body = Page<Delivery>)),
)]
#[get("/tenants/{tenantId}/webhooks/{webhookId}/deliveries")]
async fn list_deliveries(
    state: State,
    auth: Auth,
    path: web::Path<WebhookPath>,
    q: ListQuery,
) -> ApiResult<HttpResponse> {
    let WebhookPath { tenant, webhook } = path.into_inner();
    let tenant = auth.tenant_with(tenant, Role::Admin)?;
    let status =
        match q.status.as_deref() {
            None => None,
            Some(s) => Some(s.parse::<DeliveryStatus>().map_err(|_| {
                ApiError::invalid("status", format!("must be one of: {}", DeliveryStatus::ALL.join(", ")))
            })?),
        };
    Ok(HttpResponse::Ok().json(webhooks::deliveries(&state.pool, tenant, webhook, status, q.page).await?))
}
