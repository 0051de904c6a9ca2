//! A planet's backup schedule and what its retention policy would delete now.

use actix_web::{HttpResponse, delete, get, put, web};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use svalbard_core::FieldError;
use svalbard_core::auth::Role;
use svalbard_core::backup::Mechanism;
use svalbard_core::domain::check;
use svalbard_core::repo::retention::{self, Preview};
use svalbard_core::repo::schedules;
use svalbard_core::schedule::{NewSchedule, RetentionPolicy, Schedule, Spec, VerifyOn};
use utoipa::ToSchema;
use utoipa_actix_web::service_config::ServiceConfig;

use super::PlanetPath;
use crate::auth::Auth;
use crate::error::ApiResult;
use crate::extract::Json;
use crate::state::State;

pub fn configure(cfg: &mut ServiceConfig) {
    cfg.service(put_schedule)
        .service(get_schedule)
        .service(delete_schedule)
        .service(preview_retention);
}

/// A planet's backup schedule.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PutSchedule {
    /// Five fields: minute hour day-of-month month day-of-week (`30 2 * * *`: 02:30 every day).
    #[schema(example = "30 2 * * *")]
    pub cron: String,
    /// IANA time zone the expression is read in; default `UTC`.
    #[schema(example = "Europe/Berlin")]
    pub timezone: Option<String>,
    /// Default `true`.
    pub enabled: Option<bool>,
    /// Default `logical`.
    pub mechanism: Option<Mechanism>,
    /// Retention of the planet's backups; default: each backup's own retention period.
    pub retention: Option<RetentionPolicy>,
    /// Verification policy: verify every Nth backup of the planet (1: every backup) by
    /// restoring it into a scratch database of the platform, 1–1000; absent: only on demand.
    #[schema(minimum = 1, maximum = 1000)]
    pub verify_every: Option<i32>,
    /// Verification on a cron: five fields, read in `timezone`; each time it comes due, the
    /// planet's newest succeeded backup is verified by restore. May be combined with
    /// `verifyEvery`; absent: no verification on a cron. It may not run more often than the
    /// platform allows (`verification.min_cron_interval_secs`, an hour by default).
    #[schema(example = "0 6 * * 1")]
    pub verify_cron: Option<String>,
    /// Where verifications restore; default `platform`. `source` restores into a scratch
    /// database on the planet's own server, whose user must be allowed to create databases.
    pub verify_on: Option<VerifyOn>,
}

/// Creates or replaces a planet's schedule (admin). Backups it takes have `method: periodic`.
/// Runs missed while no worker was up are coalesced into one backup; a run due while a backup
/// of the planet is in progress is skipped and counted.
#[utoipa::path(
    tag = "schedules",
    request_body = PutSchedule,
    params(PlanetPath),
    responses(
        (status = 200, description = "The schedule, replaced", body = Schedule),
        (status = 201, description = "The schedule, created", body = Schedule),
    ),
)]
#[put("/tenants/{tenantId}/projects/{projectId}/planets/{planetId}/schedule")]
async fn put_schedule(
    state: State,
    auth: Auth,
    path: web::Path<PlanetPath>,
    Json(body): Json<PutSchedule>,
) -> ApiResult<HttpResponse> {
    let PlanetPath {
        tenant,
        project,
        planet,
    } = path.into_inner();
    let (tenant, audit) = auth
        .authorize(
            &state.pool,
            tenant,
            Role::Admin,
            "schedule.put",
            ("schedule", Some(planet.0)),
        )
        .await?;
    let timezone = body.timezone.clone().unwrap_or_else(|| "UTC".into());
    let cron = body.cron.trim().to_owned();
    let mut errors = Vec::new();
    let spec = Spec::parse(&cron, &timezone).map_err(|e| errors.extend(e)).ok();
    if body.mechanism == Some(Mechanism::Physical) {
        errors.push(FieldError::new(
            "mechanism",
            "physical backups are not supported yet; use `logical`",
        ));
    }
    let retention = body.retention.clone().unwrap_or_default();
    errors.extend(retention.validate("retention."));
    if body.verify_every.is_some_and(|n| !(1..=1000).contains(&n)) {
        errors.push(FieldError::new("verifyEvery", "must be between 1 and 1000"));
    }
    let verify_cron = match body.verify_cron.as_deref().map(str::trim) {
        None => None,
        Some(text) => match Spec::parse(text, &timezone) {
            Ok(spec) => {
                let floor = state.config.verification.min_cron_interval_secs;
                let shortest = spec.shortest_gap(Utc::now(), 200);
                if shortest.is_some_and(|g| g.num_seconds() < i64::try_from(floor).unwrap_or(i64::MAX)) {
                    errors.push(FieldError::new(
                        "verifyCron",
                        format!("runs more often than the platform allows: at most once every {floor} seconds"),
                    ));
                }
                Some((text.to_owned(), spec))
            }
            Err(e) => {
                // The time zone is the schedule's, and reported once, for `timezone`.
                errors.extend(
                    e.into_iter()
                        .filter(|f| f.field == "cron")
                        .map(|f| FieldError::new("verifyCron", f.message)),
                );
                None
            }
        },
    };
    check(errors)?;
    let Some(spec) = spec else {
        return Err(crate::error::ApiError::invalid("cron", "is invalid"));
    };
    let new = NewSchedule {
        cron,
        timezone,
        spec,
        enabled: body.enabled.unwrap_or(true),
        mechanism: Mechanism::Logical,
        retention,
        verify_every: body.verify_every,
        verify_cron,
        verify_on: body.verify_on.unwrap_or(VerifyOn::Platform),
    };
    let (schedule, created) = schedules::put(&state.pool, tenant, project, planet, &new, Utc::now(), &audit).await?;
    Ok(if created {
        // A 201 names what it created, here the address the PUT went to.
        let at = super::location(
            &state,
            &format!("/tenants/{tenant}/projects/{project}/planets/{planet}/schedule"),
        );
        HttpResponse::Created()
            .insert_header((actix_web::http::header::LOCATION, at))
            .json(schedule)
    } else {
        HttpResponse::Ok().json(schedule)
    })
}

/// Reads a planet's schedule, with its next run and what became of the last one.
#[utoipa::path(
    tag = "schedules",
    params(PlanetPath),
    responses((status = 200, description = "The schedule", body = Schedule)),
)]
#[get("/tenants/{tenantId}/projects/{projectId}/planets/{planetId}/schedule")]
async fn get_schedule(state: State, auth: Auth, path: web::Path<PlanetPath>) -> ApiResult<HttpResponse> {
    let PlanetPath {
        tenant,
        project,
        planet,
    } = path.into_inner();
    let tenant = auth.tenant(tenant)?;
    Ok(HttpResponse::Ok().json(schedules::get(&state.pool, tenant, project, planet).await?))
}

/// Removes a planet's schedule (admin). Its backups stay, under their own retention periods.
#[utoipa::path(
    tag = "schedules",
    params(PlanetPath),
    responses((status = 204, description = "Removed")),
)]
#[delete("/tenants/{tenantId}/projects/{projectId}/planets/{planetId}/schedule")]
async fn delete_schedule(state: State, auth: Auth, path: web::Path<PlanetPath>) -> ApiResult<HttpResponse> {
    let PlanetPath {
        tenant,
        project,
        planet,
    } = path.into_inner();
    let (tenant, audit) = auth
        .authorize(
            &state.pool,
            tenant,
            Role::Admin,
            "schedule.delete",
            ("schedule", Some(planet.0)),
        )
        .await?;
    schedules::delete(&state.pool, tenant, project, planet, &audit).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// What the planet's retention policy would expire now, and why; nothing is changed.
#[utoipa::path(
    tag = "schedules",
    params(PlanetPath),
    responses((status = 200, description = "The verdicts", body = Preview)),
)]
#[get("/tenants/{tenantId}/projects/{projectId}/planets/{planetId}/retention/preview")]
async fn preview_retention(state: State, auth: Auth, path: web::Path<PlanetPath>) -> ApiResult<HttpResponse> {
    let PlanetPath {
        tenant,
        project,
        planet,
    } = path.into_inner();
    let tenant = auth.tenant(tenant)?;
    Ok(HttpResponse::Ok().json(retention::preview(&state.pool, tenant, project, planet, Utc::now()).await?))
}
