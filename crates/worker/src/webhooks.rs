//! Sends the queued webhook deliveries: claimed under a lease, a bounded number at once (one per
//! endpoint, a few per tenant), each attempt recorded, failures retried with backoff until the
//! retry horizon (a day by default) is spent.
//!
//! A delivery's URL is checked against the tenant's target policy again right before each
//! attempt, and the request goes to the address that was checked (no second lookup). Redirects
//! are not followed, proxies from the environment are not used, and only a short sanitised
//! excerpt of an answer's body is kept.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use secrecy::ExposeSecret as _;
use sqlx::PgPool;
use svalbard_core::config::WebhooksConfig;
use svalbard_core::crypto::KeyRing;
use svalbard_core::netpolicy::Guard;
use svalbard_core::repo::tenants;
use svalbard_core::repo::webhooks::{self, Claimed, Next};
use svalbard_core::webhook::{Attempt, WebhookUrl, excerpt};
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;

/// Bytes of an answer's body read at most (only an excerpt of them is kept).
const BODY_READ: usize = 1024;

/// How often old deliveries are deleted.
const PRUNE_EVERY: Duration = Duration::from_secs(600);

pub struct Deliverer {
    pub pool: PgPool,
    pub keys: Arc<KeyRing>,
    pub targets: Arc<Guard>,
    pub config: WebhooksConfig,
}

/// What one attempt came to, before it is written.
struct Sent {
    http_status: Option<u16>,
    error: Option<String>,
    response: Option<String>,
}

impl Deliverer {
    fn timeout(&self) -> Duration {
        Duration::from_secs(self.config.timeout_secs.max(1))
    }

    /// Runs until `stop` fires; attempts under way then finish (each is bounded by the timeout).
    pub async fn run(self, stop: CancellationToken) {
        if !self.config.enabled {
            return;
        }
        let this = Arc::new(self);
        let slots = Arc::new(Semaphore::new(this.config.concurrency.max(1)));
        let freed = Arc::new(Notify::new());
        let tracker = tokio_util::task::TaskTracker::new();
        let poll = Duration::from_millis(this.config.poll_millis.max(50));
        // Longer than any attempt, so a live attempt's lease never runs out under it.
        let lease = this.timeout() * 2 + Duration::from_secs(30);
        let mut pruned_at: Option<Instant> = None;
        while !stop.is_cancelled() {
            if pruned_at.is_none_or(|t| t.elapsed() >= PRUNE_EVERY) {
                pruned_at = Some(Instant::now());
                let age = Duration::from_secs(this.config.retention_days.saturating_mul(86_400));
                match webhooks::prune(&this.pool, age, 1000).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(deleted = n, "old webhook deliveries deleted"),
                    Err(e) => tracing::debug!(error = %e, "pruning webhook deliveries failed"),
                }
            }
            let free = slots.available_permits();
            if free > 0 {
                match webhooks::claim(&this.pool, free, this.config.per_tenant, lease).await {
                    Ok(batch) => {
                        for delivery in batch {
                            let Ok(permit) = slots.clone().try_acquire_owned() else {
                                break;
                            };
                            let me = this.clone();
                            let freed = freed.clone();
                            tracker.spawn(async move {
                                me.deliver(delivery).await;
                                drop(permit);
                                freed.notify_one();
                            });
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "claiming webhook deliveries failed"),
                }
            }
            tokio::select! {
                () = stop.cancelled() => {}
                () = freed.notified() => {}
                () = tokio::time::sleep(poll) => {}
            }
        }
        tracker.close();
        tracker.wait().await;
    }

    #[tracing::instrument(skip_all, fields(tenant_id = %d.tenant_id, webhook_id = %d.endpoint_id, delivery_id = %d.id))]
    async fn deliver(&self, d: Claimed) {
        let at = Utc::now();
        let started = Instant::now();
        let sent = self.attempt(&d).await;
        let attempt = Attempt {
            at,
            duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            http_status: sent.http_status,
            error: sent.error,
            response: sent.response,
        };
        let delivered = attempt.http_status.is_some_and(|s| (200..300).contains(&s));
        let next = if delivered {
            Next::Delivered
        } else {
            let now = Utc::now();
            self.config
                .retry_policy()
                .next(
                    d.attempt_count.saturating_add(1),
                    self.config.max_attempts,
                    Some(d.created_at),
                    now,
                )
                .and_then(|delay| chrono::Duration::from_std(delay).ok())
                .map_or(Next::GiveUp, |delay| Next::RetryAt(now + delay))
        };
        match webhooks::record(&self.pool, &d, &attempt, next).await {
            Ok(true) => tracing::info!(
                status = ?attempt.http_status,
                error = attempt.error.as_deref().unwrap_or(""),
                duration_ms = attempt.duration_ms,
                next = ?next,
                "webhook attempt"
            ),
            Ok(false) => tracing::debug!("webhook delivery taken over or its endpoint deleted; attempt not recorded"),
            Err(e) => tracing::warn!(error = %e, "recording a webhook attempt failed; its lease will expire"),
        }
    }

    async fn attempt(&self, d: &Claimed) -> Sent {
        match self.send(d).await {
            Ok(sent) => sent,
            Err(error) => Sent {
                http_status: None,
                error: Some(error),
                response: None,
            },
        }
    }

    async fn send(&self, d: &Claimed) -> Result<Sent, String> {
        let url = WebhookUrl::parse("url", &d.url).map_err(|e| format!("the URL {}", e.message))?;
        let host = url.host();
        let port = url.port();
        let lists = tenants::target_policy(&self.pool, d.tenant_id)
            .await
            .map_err(|_| "the tenant's target policy cannot be read now".to_owned())?;
        let addrs = self
            .targets
            .check(lists.as_ref(), &host, port, None)
            .await
            .map_err(|refusal| refusal.0)?;
        let addr = addrs
            .first()
            .copied()
            .ok_or_else(|| format!("host {host} resolves to no address"))?;
        let secret = d
            .secret(&self.keys)
            .map_err(|_| "the endpoint's secret cannot be opened by this worker".to_owned())?;
        let body = serde_json::to_vec(&d.payload).map_err(|_| "the event cannot be encoded".to_owned())?;
        let msg_id = d.id.to_string();
        let timestamp = Utc::now().timestamp();
        let signature = standardwebhooks::Webhook::new(secret.expose_secret())
            .and_then(|w| w.sign(&msg_id, timestamp, &body))
            .map_err(|_| "the endpoint's secret is unusable".to_owned())?;
        let mut client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(self.timeout())
            .connect_timeout(self.timeout())
            .user_agent(concat!("Svalbard-Webhooks/", env!("CARGO_PKG_VERSION")));
        if matches!(url.url().host(), Some(url::Host::Domain(_))) {
            // The name goes to the checked address, never to a second lookup.
            client = client.resolve(&host, SocketAddr::new(addr, port));
        }
        let client = client.build().map_err(|_| "no HTTP client could be built".to_owned())?;
        let result = client
            .post(url.url().clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("webhook-id", &msg_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body)
            .send()
            .await;
        let mut res = result.map_err(|e| self.describe(&e, &host, port))?;
        let status = res.status().as_u16();
        let mut head = Vec::new();
        // Only the start of the body, and only while the attempt's time lasts.
        while head.len() < BODY_READ {
            match res.chunk().await {
                Ok(Some(chunk)) => head.extend_from_slice(&chunk[..chunk.len().min(BODY_READ - head.len())]),
                Ok(None) | Err(_) => break,
            }
        }
        Ok(Sent {
            http_status: Some(status),
            error: None,
            response: excerpt(&head),
        })
    }

    /// One of Svalbard's own sentences, not the HTTP stack's.
    fn describe(&self, e: &reqwest::Error, host: &str, port: u16) -> String {
        if e.is_timeout() {
            format!("no answer within {} s", self.timeout().as_secs())
        } else if e.is_connect() {
            format!("cannot connect to {host} port {port}")
        } else {
            format!("the connection to {host} port {port} ended before an answer")
        }
    }
}
