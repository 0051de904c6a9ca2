//! Webhooks delivered for real: a local HTTP receiver records what the worker sends after real
//! backups, checks the signature with the secret the API gave, and answers as each test needs
//! (a 500 first, or slowly).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use svalbard_core::auth::Role;
use svalbard_testkit::source;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

use crate::harness::{Env, fast_worker};

const MINUTE: Duration = Duration::from_secs(60);

/// One request as the receiver saw it.
#[derive(Clone)]
struct Received {
    at: Instant,
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
    /// When the answer went out.
    answered: Option<Instant>,
}

/// A small HTTP/1.1 server: `answer(n)` gives the status and delay of the n-th request.
struct Receiver {
    addr: SocketAddr,
    got: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    async fn start(answer: impl Fn(usize) -> (u16, Duration) + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let got: Arc<Mutex<Vec<Received>>> = Arc::default();
        let answer = Arc::new(answer);
        let g = got.clone();
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let (got, answer) = (g.clone(), answer.clone());
                tokio::spawn(async move { serve(conn, &got, &*answer).await });
            }
        });
        Self { addr, got }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn received(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    async fn wait_for(&self, n: usize, limit: Duration) -> Vec<Received> {
        let start = Instant::now();
        loop {
            let got = self.received();
            if got.len() >= n {
                return got;
            }
            assert!(start.elapsed() < limit, "only {} of {n} requests arrived", got.len());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn serve(mut conn: TcpStream, got: &Mutex<Vec<Received>>, answer: &(dyn Fn(usize) -> (u16, Duration) + Sync)) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let Ok(n) = conn.read(&mut chunk).await else { return };
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut headers = reqwest::header::HeaderMap::new();
    for line in head.lines().skip(1).filter(|l| !l.is_empty()) {
        let (k, v) = line.split_once(':').unwrap();
        headers.append(
            reqwest::header::HeaderName::from_bytes(k.trim().as_bytes()).unwrap(),
            v.trim().parse().unwrap(),
        );
    }
    let len: usize = headers
        .get("content-length")
        .map_or(0, |v| v.to_str().unwrap().parse().unwrap());
    while buf.len() < head_end + len {
        let Ok(n) = conn.read(&mut chunk).await else { return };
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let index = {
        let mut got = got.lock().unwrap();
        got.push(Received {
            at: Instant::now(),
            headers,
            body: buf[head_end..head_end + len].to_vec(),
            answered: None,
        });
        got.len() - 1
    };
    let (status, delay) = answer(index);
    tokio::time::sleep(delay).await;
    let text = format!("answer {index}\r\nX-Injected: 1");
    let reply = format!(
        "HTTP/1.1 {status} Whatever\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
        text.len()
    );
    let _ = conn.write_all(reply.as_bytes()).await;
    let _ = conn.shutdown().await;
    got.lock().unwrap()[index].answered = Some(Instant::now());
}

/// Webhook settings quick enough to watch: retries after about a second.
fn overrides() -> Value {
    let mut o = fast_worker();
    o["webhooks"] = json!({ "backoff_base_secs": 1, "poll_millis": 200, "timeout_secs": 20 });
    o
}

/// Registers an endpoint of `tenant` for `events`; returns its id and secret.
async fn webhook(env: &Env, tenant: &str, url: &str, events: &[&str]) -> (String, String) {
    let r = env
        .app
        .post(
            &format!("/api/v1/tenants/{tenant}/webhooks"),
            &env.app.token(tenant, Role::Admin),
            json!({ "url": url, "eventTypes": events }),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let v = r.json();
    (
        v["id"].as_str().unwrap().to_owned(),
        v["secret"].as_str().unwrap().to_owned(),
    )
}

/// The endpoint's deliveries once none is pending any more.
async fn settled(env: &Env, tenant: &str, hook: &str, limit: Duration) -> Vec<Value> {
    let start = Instant::now();
    let admin = env.app.token(tenant, Role::Admin);
    loop {
        let r = env
            .app
            .get(&format!("/api/v1/tenants/{tenant}/webhooks/{hook}/deliveries"), &admin)
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        let items = r.json()["items"].as_array().unwrap().clone();
        if !items.is_empty() && items.iter().all(|d| d["status"] != "pending") {
            return items;
        }
        assert!(start.elapsed() < limit, "deliveries still pending: {items:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn verify(secret: &str, r: &Received) {
    standardwebhooks::Webhook::new(secret)
        .unwrap()
        .verify(&r.body, &r.headers)
        .unwrap_or_else(|e| panic!("signature does not verify: {e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_backup_is_delivered_signed() {
    let env = Env::with_overrides(overrides()).await;
    let receiver = Receiver::start(|_| (200, Duration::ZERO)).await;
    let (hook, secret) = webhook(
        &env,
        &env.tenant,
        &receiver.url("/svalbard"),
        &["backup.succeeded", "restore.succeeded", "restore.failed"],
    )
    .await;
    let src = source::create("hook", &source::sample_schema(100)).await.unwrap();
    let planet = env.planet("orders", &src, "postgres", None).await;
    let (stop, worker) = env.worker();
    let backup = env.start_backup(&planet).await;
    let id = backup["id"].as_str().unwrap();
    env.wait_status(id, "succeeded", MINUTE).await;
    let got = receiver.wait_for(1, Duration::from_secs(20)).await;
    let r = &got[0];
    eprintln!("delivered webhook, as received:");
    for (k, v) in &r.headers {
        eprintln!("  {k}: {}", v.to_str().unwrap());
    }
    eprintln!("  body: {}", String::from_utf8_lossy(&r.body));
    verify(&secret, r);
    // Another secret does not verify it.
    let other = svalbard_core::webhook::generate_secret();
    use secrecy::ExposeSecret as _;
    assert!(
        standardwebhooks::Webhook::new(other.expose_secret())
            .unwrap()
            .verify(&r.body, &r.headers)
            .is_err()
    );
    assert_eq!(r.headers["content-type"], "application/json");
    let sig = r.headers["webhook-signature"].to_str().unwrap();
    assert!(sig.starts_with("v1,"), "{sig}");
    let body: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(body["type"], "backup.succeeded");
    assert!(body["timestamp"].as_str().is_some());
    let data = &body["data"];
    assert_eq!(data["backupId"], id);
    assert_eq!(data["planetId"], planet.as_str());
    assert_eq!(data["projectId"], env.project.as_str());
    assert_eq!(data["tenantId"], env.tenant.as_str());
    assert_eq!(data["status"], "succeeded");

    let deliveries = settled(&env, &env.tenant, &hook, Duration::from_secs(10)).await;
    assert_eq!(deliveries.len(), 1, "{deliveries:?}");
    let d = &deliveries[0];
    assert_eq!(d["status"], "delivered", "{d}");
    assert_eq!(d["eventType"], "backup.succeeded");
    assert_eq!(d["id"], r.headers["webhook-id"].to_str().unwrap());
    assert_eq!(d["data"], *data);
    let attempts = d["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 1, "{d}");
    assert_eq!(attempts[0]["httpStatus"], 200);
    // Only a sanitised excerpt of the answer is kept.
    assert_eq!(attempts[0]["response"], "answer 0  X-Injected: 1", "{d}");

    // Restoring it is told too, in a delivery of its own.
    let target = format!("{src}_copy");
    let r = env.restore(id, &env.token, json!({ "targetDatabase": target })).await;
    assert_eq!(r.status, 202, "{}", r.text);
    let restore = env.restore_outcome(&r.header("location").unwrap()).await;
    assert_eq!(restore["status"], "succeeded", "{restore}");
    let got = receiver.wait_for(2, Duration::from_secs(20)).await;
    verify(&secret, &got[1]);
    let body: Value = serde_json::from_slice(&got[1].body).unwrap();
    assert_eq!(body["type"], "restore.succeeded", "{body}");
    assert_eq!(body["data"]["restoreId"], restore["id"], "{body}");
    assert_eq!(body["data"]["sourceBackupId"], id, "{body}");
    assert_eq!(body["data"]["status"], "succeeded", "{body}");
    assert_ne!(got[0].headers["webhook-id"], got[1].headers["webhook-id"]);
    let deliveries = settled(&env, &env.tenant, &hook, Duration::from_secs(10)).await;
    let events: Vec<&Value> = deliveries.iter().map(|d| &d["eventType"]).collect();
    assert_eq!(
        events,
        [&json!("restore.succeeded"), &json!("backup.succeeded")],
        "newest first"
    );
    stop.cancel();
    worker.await.unwrap();
    source::drop(&target).await.unwrap();
    source::drop(&src).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_500_is_retried_with_the_same_id_until_delivered() {
    let env = Env::with_overrides(overrides()).await;
    let receiver = Receiver::start(|n| (if n == 0 { 500 } else { 204 }, Duration::ZERO)).await;
    let (hook, secret) = webhook(&env, &env.tenant, &receiver.url("/h?x=1"), &["backup.failed"]).await;
    // A database that does not exist: the backup fails.
    let planet = env.planet("ghost", "svalbard_no_such_database", "postgres", None).await;
    let (stop, worker) = env.worker();
    let backup = env.start_backup(&planet).await;
    let id = backup["id"].as_str().unwrap();
    let failed = env.wait_status(id, "failed", MINUTE).await;
    let got = receiver.wait_for(2, Duration::from_secs(30)).await;
    assert_eq!(got.len(), 2, "delivered once more after it succeeded");
    for r in &got {
        verify(&secret, r);
    }
    assert_eq!(got[0].headers["webhook-id"], got[1].headers["webhook-id"]);
    let gap = got[1].at - got[0].at;
    assert!(
        gap >= Duration::from_millis(700),
        "retried after {gap:?}, without backoff"
    );
    let body: Value = serde_json::from_slice(&got[1].body).unwrap();
    assert_eq!(body["type"], "backup.failed");
    assert_eq!(body["data"]["status"], "failed");
    assert_eq!(body["data"]["errorMessage"], failed["errorMessage"]);

    let deliveries = settled(&env, &env.tenant, &hook, Duration::from_secs(10)).await;
    let d = &deliveries[0];
    assert_eq!(d["status"], "delivered", "{d}");
    let attempts = d["attempts"].as_array().unwrap();
    let statuses: Vec<&Value> = attempts.iter().map(|a| &a["httpStatus"]).collect();
    assert_eq!(statuses, [&json!(500), &json!(204)], "{d}");
    assert!(d["completedAt"].as_str().is_some());
    assert!(d["nextAttemptAt"].is_null());
    // The receiver saw nothing more.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(receiver.received().len(), 2);
    stop.cancel();
    worker.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_receiver_delays_no_other_tenant() {
    let env = Env::with_overrides(overrides()).await;
    let slow_for = Duration::from_secs(12);
    let slow = Receiver::start(move |_| (200, slow_for)).await;
    let fast = Receiver::start(|_| (200, Duration::ZERO)).await;
    // Tenant A's endpoint sleeps before it answers; tenant B's answers at once.
    let (slow_hook, _) = webhook(&env, &env.tenant, &slow.url("/slow"), &["backup.succeeded"]).await;
    let other = env.app.tenant("other").await;
    let other_project = env.app.project(&other, "shop").await;
    let (fast_hook, fast_secret) = webhook(&env, &other, &fast.url("/fast"), &["backup.succeeded"]).await;

    let src = source::create("slowhook", &source::sample_schema(100)).await.unwrap();
    let planet_a = env.planet("a", &src, "postgres", None).await;
    let r = env
        .app
        .post(
            &format!("/api/v1/tenants/{other}/projects/{other_project}/planets"),
            &env.app.platform(),
            json!({ "name": "b", "engine": "postgresql", "connection": {
                "host": "127.0.0.1", "port": 5432, "database": src, "user": "postgres", "sslmode": "disable" } }),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let planet_b = r.json()["id"].as_str().unwrap().to_owned();
    let (stop, worker) = env.worker();

    // A's first delivery holds A's endpoint...
    let b = env.start_backup(&planet_a).await;
    env.wait_status(b["id"].as_str().unwrap(), "succeeded", MINUTE).await;
    let held = slow.wait_for(1, Duration::from_secs(20)).await[0].clone();
    // ...A's second waits behind it, and B's must not wait for A's receiver at all.
    let second = env.start_backup(&planet_a).await;
    let r = env
        .app
        .post(
            &format!("/api/v1/tenants/{other}/projects/{other_project}/planets/{planet_b}/backups"),
            &env.app.platform(),
            json!({}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let b_got = fast.wait_for(1, Duration::from_secs(30)).await;
    env.wait_status(second["id"].as_str().unwrap(), "succeeded", MINUTE)
        .await;
    let a_state = slow.received();
    assert!(
        a_state[0].answered.is_none(),
        "A's receiver answered before B's delivery arrived: the test proves nothing"
    );
    assert!(
        b_got[0].at - held.at < slow_for,
        "B's delivery waited {:?} behind A's slow receiver",
        b_got[0].at - held.at
    );
    verify(&fast_secret, &b_got[0]);
    eprintln!(
        "tenant B delivered {:?} after tenant A's receiver began holding its request",
        b_got[0].at - held.at
    );

    // A's deliveries arrive in the end, one at a time at its endpoint.
    let a_deliveries = settled(&env, &env.tenant, &slow_hook, MINUTE).await;
    assert_eq!(a_deliveries.len(), 2, "{a_deliveries:?}");
    for d in &a_deliveries {
        assert_eq!(d["status"], "delivered", "{d}");
        assert!(d["attempts"][0]["durationMs"].as_u64().unwrap() >= 11_900, "{d}");
    }
    let a_got = slow.received();
    assert!(
        a_got[1].at >= a_got[0].answered.unwrap(),
        "two deliveries at once at one endpoint"
    );
    let b_deliveries = settled(&env, &other, &fast_hook, Duration::from_secs(10)).await;
    assert_eq!(b_deliveries[0]["status"], "delivered");
    stop.cancel();
    worker.await.unwrap();
    source::drop(&src).await.unwrap();
}
