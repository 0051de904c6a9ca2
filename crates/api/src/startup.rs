//! Builds the HTTP application: `Application::build(config, pool)` then `run_until_stopped()`.

use std::net::TcpListener;
use std::sync::Arc;

use actix_web::dev::Server;
use actix_web::http::Method;
use actix_web::middleware::from_fn;
use actix_web::{App, HttpRequest, HttpServer, web};
use sqlx::PgPool;
use svalbard_core::auth::TokenVerifier;
use svalbard_core::config::Config;
use svalbard_core::crypto::KeyRing;
use svalbard_core::storage::Storage;
use tracing_actix_web::TracingLogger;
use utoipa::openapi::OpenApi as Doc;
use utoipa::{Modify as _, OpenApi as _};
use utoipa_actix_web::AppExt as _;
use utoipa_actix_web::service_config::ServiceConfig;
use utoipa_swagger_ui::SwaggerUi;

use crate::error::ApiError;
use crate::openapi::{ApiDoc, Shared};
use crate::state::AppState;
use crate::{extract, routes, telemetry};

fn api_v1(cfg: &mut ServiceConfig) {
    cfg.configure(routes::tenants::configure)
        .configure(routes::projects::configure)
        .configure(routes::planets::configure)
        .configure(routes::backups::configure)
        .configure(routes::restores::configure)
        .configure(routes::schedules::configure)
        .configure(routes::audit::configure)
        .configure(routes::profiles::guidewire::configure)
        .configure(routes::webhooks::configure)
        .configure(routes::keys::configure);
}

/// The drop-in profiles that live outside `/api/v1`, each under a prefix of its own.
fn profiles<T>(app: utoipa_actix_web::UtoipaApp<T>) -> utoipa_actix_web::UtoipaApp<T>
where
    T: actix_web::dev::ServiceFactory<
            actix_web::dev::ServiceRequest,
            Config = (),
            Error = actix_web::Error,
            InitError = (),
        >,
{
    app.service(utoipa_actix_web::scope("/profiles/connectware").configure(routes::profiles::connectware::configure))
        .service(utoipa_actix_web::scope("/profiles/dbaas").configure(routes::profiles::dbaas::configure))
        .service(utoipa_actix_web::scope("/profiles/camunda").configure(routes::profiles::camunda::configure))
}

/// The OpenAPI document of every route, built the same way the server registers them.
pub(crate) fn routes_and_doc() -> ((), Doc) {
    let app = App::new()
        .into_utoipa_app()
        .openapi(ApiDoc::openapi())
        .service(utoipa_actix_web::scope("/api/v1").configure(api_v1));
    let (_, mut doc) = profiles(app).configure(routes::ops::configure).split_for_parts();
    Shared.modify(&mut doc);
    ((), doc)
}

/// Path templates and their methods, to tell 405 from 404 for requests no route took.
struct RouteTable(Vec<(Vec<String>, Vec<Method>)>);

impl RouteTable {
    fn from_doc(doc: &Doc) -> Self {
        let routes = doc
            .paths
            .paths
            .iter()
            .map(|(path, item)| {
                let segments = path.split('/').map(str::to_owned).collect();
                let mut methods = Vec::new();
                for (m, op) in [
                    (Method::GET, &item.get),
                    (Method::POST, &item.post),
                    (Method::PUT, &item.put),
                    (Method::PATCH, &item.patch),
                    (Method::DELETE, &item.delete),
                ] {
                    if op.is_some() {
                        methods.push(m);
                    }
                }
                (segments, methods)
            })
            .collect();
        Self(routes)
    }

    fn allowed(&self, path: &str) -> Option<Vec<Method>> {
        let parts: Vec<&str> = path.split('/').collect();
        self.0.iter().find_map(|(segments, methods)| {
            let fits =
                segments.len() == parts.len() && segments.iter().zip(&parts).all(|(s, p)| s.starts_with('{') || s == p);
            fits.then(|| methods.clone())
        })
    }
}

async fn fallback(req: HttpRequest, table: web::Data<RouteTable>) -> actix_web::HttpResponse {
    use actix_web::ResponseError as _;
    let err = match table.allowed(req.path()) {
        Some(methods) if !methods.is_empty() => {
            let allow = methods.iter().map(Method::as_str).collect::<Vec<_>>().join(", ");
            ApiError::MethodNotAllowed {
                detail: format!("{} is not allowed on {}; allowed: {allow}", req.method(), req.path()),
                allow,
            }
        }
        _ => ApiError::NotFound("route"),
    };
    err.error_response()
}

pub struct Application {
    port: u16,
    server: Server,
    metrics: Option<(u16, Server)>,
}

/// Prometheus metrics on their own listener: request counts by route and job activity are for
/// the platform's scraper, not for whoever reaches the public API.
fn metrics_server(
    listen: &str,
    pool: PgPool,
    config: svalbard_core::config::MetricsConfig,
) -> anyhow::Result<(u16, Server)> {
    let listener = TcpListener::bind(listen)
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen} (http.metrics_listen): {e}"))?;
    let port = listener.local_addr()?.port();
    let pool = web::Data::new(pool);
    let config = web::Data::new(config);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(pool.clone())
            .app_data(config.clone())
            .route("/metrics", web::get().to(routes::ops::metrics))
    })
    .workers(1)
    .listen(listener)?
    .disable_signals()
    .shutdown_timeout(1)
    .run();
    Ok((port, server))
}

impl Application {
    /// Binds `config.http.listen` (port 0 picks a free port) and prepares the server.
    pub fn build(config: Config, pool: PgPool) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(&config.http.listen)
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.http.listen))?;
        let port = listener.local_addr()?.port();
        let verifier = TokenVerifier::new(&config.auth)?;
        let keys = KeyRing::parse(
            config
                .crypto
                .keys
                .as_ref()
                .ok_or_else(|| anyhow::anyhow!("crypto.keys is required (SVALBARD_CRYPTO__KEYS)"))?,
        )?;
        let storage = Storage::new(&config.s3);
        let targets = svalbard_core::netpolicy::Guard::new(
            &config.targets.lists(),
            config.database_url.as_ref().map(secrecy::ExposeSecret::expose_secret),
        )?;
        let fingerprint_key = keys.derive_key("idempotency fingerprints");
        let metrics = if config.http.metrics_listen.trim().is_empty() {
            None
        } else {
            Some(metrics_server(
                config.http.metrics_listen.trim(),
                pool.clone(),
                config.metrics.clone(),
            )?)
        };
        let state = web::Data::new(Arc::new(AppState {
            pool,
            config,
            verifier,
            keys,
            storage,
            targets,
            fingerprint_key,
        }));
        let (_, doc) = routes_and_doc();
        let table = web::Data::new(RouteTable::from_doc(&doc));
        telemetry::prometheus();
        let server = HttpServer::new(move || {
            let app = App::new()
                .into_utoipa_app()
                .openapi(ApiDoc::openapi())
                .service(utoipa_actix_web::scope("/api/v1").configure(api_v1));
            let (app, _) = profiles(app).configure(routes::ops::configure).split_for_parts();
            app.app_data(state.clone())
                .app_data(table.clone())
                .app_data(extract::path_config())
                // The reference lives at `/docs/`; people type `/docs`.
                .service(web::redirect("/docs", "/docs/").permanent())
                .service(SwaggerUi::new("/docs/{_:.*}").url("/openapi.json", doc.clone()))
                .default_service(web::to(fallback))
                .wrap(from_fn(telemetry::observe))
                .wrap(TracingLogger::<telemetry::RootSpan>::new())
        })
        .listen(listener)?
        .disable_signals()
        .shutdown_timeout(10)
        .run();
        Ok(Self { port, server, metrics })
    }

    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Port of the metrics listener, if it is enabled.
    #[must_use]
    pub fn metrics_port(&self) -> Option<u16> {
        self.metrics.as_ref().map(|(p, _)| *p)
    }

    /// A handle to stop the server gracefully.
    #[must_use]
    pub fn handle(&self) -> actix_web::dev::ServerHandle {
        self.server.handle()
    }

    /// Serves until the API server is stopped; the metrics listener stops with it.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let metrics = self.metrics.map(|(_, server)| {
            let handle = server.handle();
            tokio::spawn(server);
            handle
        });
        let result = self.server.await;
        if let Some(handle) = metrics {
            handle.stop(true).await;
        }
        result
    }
}
