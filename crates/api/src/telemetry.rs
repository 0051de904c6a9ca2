//! Request spans (with request, tenant and subject ids) and Prometheus metrics.

use std::sync::OnceLock;
use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::{Error, HttpMessage as _};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing::Span;
use tracing_actix_web::{DefaultRootSpanBuilder, RequestId, RootSpanBuilder};

/// The process-wide Prometheus recorder (installed once, shared by API and worker).
pub fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        // Durations as histograms (not summaries), so dashboards can aggregate across replicas.
        let buckets = [
            0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 30.0, 120.0, 600.0, 3600.0,
        ];
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &buckets)
            .map_or_else(
                |_| PrometheusBuilder::new().build_recorder(),
                PrometheusBuilder::build_recorder,
            );
        let handle = recorder.handle();
        // Fails only if another recorder is installed already; the handle still renders ours.
        let _ = metrics::set_global_recorder(recorder);
        describe();
        // At zero from the start, so alerts on `increase()` see the first event.
        for operation in ["created", "rotated", "exported", "resealed", "reseal_failed"] {
            metrics::counter!("svalbard_tenant_key_operations_total", "operation" => operation).increment(0);
        }
        handle
    })
}

/// `# HELP` of every metric the processes record, each naming its unit.
fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "svalbard_http_requests_total",
        "API requests answered, by method, route pattern and status (requests)."
    );
    describe_histogram!(
        "svalbard_http_request_duration_seconds",
        "Time to answer an API request, by method and route pattern (seconds)."
    );
    describe_gauge!(
        "svalbard_jobs",
        "Jobs queued or running across all workers, by state (jobs)."
    );
    describe_counter!(
        "svalbard_jobs_total",
        "Job attempts ended, by kind and outcome: succeeded, retried, failed, abandoned (attempts)."
    );
    describe_histogram!(
        "svalbard_job_duration_seconds",
        "Run time of a job attempt, by kind (seconds)."
    );
    describe_counter!(
        "svalbard_backup_bytes_total",
        "Bytes of backups: `dumped` read from the dump tool, `stored` written to object storage (bytes)."
    );
    describe_counter!(
        "svalbard_schedule_runs_total",
        "Due schedule runs handled, by outcome: created, skipped, coalesced (runs)."
    );
    describe_counter!(
        "svalbard_backups_expired_total",
        "Backups expired by retention (backups)."
    );
    describe_counter!(
        "svalbard_reaper_actions_total",
        "What the reaper did, by action: abort_upload, delete_orphan, suspect_missing, mark_missing, found_again, spared_unknown, halted, installation_mismatch (actions)."
    );
    describe_counter!(
        "svalbard_verifications_total",
        "Verifications by restore ended, by outcome: verified or failed (verifications)."
    );
    describe_gauge!(
        "svalbard_seconds_since_last_verified_backup",
        "Age of the planet's newest verified backup, by tenant, project and planet id (seconds)."
    );
    describe_counter!(
        "svalbard_tenant_key_operations_total",
        "What happened to tenants' archive keys, by operation: created, rotated, exported, resealed, reseal_failed (keys)."
    );
    describe_counter!(
        "svalbard_storage_retries_total",
        "Object-storage requests sent again after a retryable failure (requests)."
    );
}

/// Root span of a request, with fields filled in once the caller is known.
pub struct RootSpan;

impl RootSpanBuilder for RootSpan {
    fn on_request_start(request: &ServiceRequest) -> Span {
        tracing_actix_web::root_span!(
            request,
            tenant_id = tracing::field::Empty,
            subject = tracing::field::Empty
        )
    }

    fn on_request_end<B: MessageBody>(span: Span, outcome: &Result<ServiceResponse<B>, Error>) {
        DefaultRootSpanBuilder::on_request_end(span, outcome);
    }
}

/// Echoes the request id in `x-request-id` and counts the request.
pub async fn observe(
    req: ServiceRequest,
    next: actix_web::middleware::Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody + 'static>, Error> {
    let started = Instant::now();
    let method = req.method().to_string();
    let route = req.match_pattern().unwrap_or_else(|| "unmatched".into());
    let request_id = req.extensions().get::<RequestId>().map(ToString::to_string);
    let mut res = next.call(req).await?;
    if let Some(id) = request_id.and_then(|id| HeaderValue::from_str(&id).ok()) {
        res.headers_mut().insert(HeaderName::from_static("x-request-id"), id);
    }
    let status = res.status().as_u16().to_string();
    metrics::counter!("svalbard_http_requests_total", "method" => method.clone(), "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("svalbard_http_request_duration_seconds", "method" => method, "route" => route)
        .record(started.elapsed().as_secs_f64());
    Ok(res)
}
