//! The worker's own small HTTP listener: liveness, readiness (control database and object
//! storage) and metrics. The worker serves nothing else.

use actix_web::dev::Server;
use actix_web::{App, HttpResponse, HttpServer, web};
use serde_json::json;
use sqlx::PgPool;
use svalbard_core::storage::Storage;

struct Deps {
    pool: PgPool,
    storage: Storage,
}

async fn readyz(deps: web::Data<Deps>) -> HttpResponse {
    let db = tokio::time::timeout(
        std::time::Duration::from_secs(2),
        sqlx::query("SELECT 1").execute(&deps.pool),
    )
    .await
    .map_err(|_| "no answer within 2 s".to_owned())
    .and_then(|r| r.map(|_| ()).map_err(|e| e.to_string()));
    let storage = tokio::time::timeout(std::time::Duration::from_secs(5), deps.storage.ping())
        .await
        .map_err(|_| "no answer within 5 s".to_owned())
        .and_then(|r| r);
    let check = |r: &Result<(), String>| match r {
        Ok(()) => json!({ "status": "ok" }),
        Err(e) => json!({ "status": "failing", "detail": e }),
    };
    let body = json!({ "controlDatabase": check(&db), "objectStorage": check(&storage) });
    if db.is_ok() && storage.is_ok() {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

/// Binds `listen` and returns the port and the server to run.
pub fn server(listen: &str, pool: PgPool, storage: Storage) -> anyhow::Result<(u16, Server)> {
    let listener =
        std::net::TcpListener::bind(listen).map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
    let port = listener.local_addr()?.port();
    let deps = web::Data::new(Deps { pool, storage });
    crate::telemetry::prometheus();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(deps.clone())
            .route(
                "/healthz",
                web::get().to(|| async { HttpResponse::Ok().json(json!({ "status": "ok" })) }),
            )
            .route("/readyz", web::get().to(readyz))
            .route(
                "/metrics",
                web::get().to(|| async {
                    HttpResponse::Ok()
                        .content_type("text/plain; version=0.0.4")
                        .body(crate::telemetry::prometheus().render())
                }),
            )
    })
    .workers(1)
    .disable_signals()
    .listen(listener)?
    .run();
    Ok((port, server))
}
