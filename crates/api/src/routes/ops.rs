//! Health and readiness: unauthenticated, for load balancers. They say whether each component
//! is ready, never why not (the reason goes to the log): the answer is public.

use actix_web::{HttpResponse, get};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_actix_web::service_config::ServiceConfig;

use crate::error::{ApiError, ApiResult};
use crate::state::State;

pub fn configure(cfg: &mut ServiceConfig) {
    cfg.service(healthz).service(readyz);
}

/// Health of the process.
#[derive(Serialize, ToSchema)]
pub struct Health {
    #[schema(example = "ok")]
    pub status: &'static str,
}

/// Alive: answers as long as the process serves requests.
#[utoipa::path(tag = "operations", security(()), responses((status = 200, description = "Alive", body = Health)))]
#[get("/healthz")]
async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(Health { status: "ok" })
}

/// Ready: the control database answers.
#[utoipa::path(
    tag = "operations",
    security(()),
    responses(
        (status = 200, description = "Ready", body = Health),
        (status = 503, description = "The control database is not ready", body = crate::error::Problem, content_type = "application/problem+json"),
    ),
)]
#[get("/readyz")]
async fn readyz(state: State) -> ApiResult<HttpResponse> {
    let ping = tokio::time::timeout(
        std::time::Duration::from_secs(2),
        sqlx::query("SELECT 1").execute(&state.pool),
    )
    .await;
    match ping {
        Ok(Ok(_)) => Ok(HttpResponse::Ok().json(Health { status: "ok" })),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness: the control database is unreachable");
            Err(ApiError::Unavailable("the control database is not ready".into()))
        }
        Err(_) => {
            tracing::warn!("readiness: the control database did not answer within 2 s");
            Err(ApiError::Unavailable("the control database is not ready".into()))
        }
    }
}

/// Prometheus metrics in the text exposition format (served on `http.metrics_listen` only): the
/// process's own counters and the catalog gauges.
pub async fn metrics(
    pool: actix_web::web::Data<sqlx::PgPool>,
    config: actix_web::web::Data<svalbard_core::config::MetricsConfig>,
) -> HttpResponse {
    let mut body = crate::telemetry::prometheus().render();
    body.push_str(&crate::fleet_metrics::text(&pool, &config).await);
    HttpResponse::Ok().content_type("text/plain; version=0.0.4").body(body)
}
