//! Webhooks: what a tenant's endpoints are told, and how their addresses and secrets are made.
//!
//! A delivery is queued in the transaction that writes the state change it reports
//! ([`crate::repo::webhooks::notify`]), so no change is committed without its deliveries and no
//! delivery reports a change that was rolled back. The worker sends it following the Standard
//! Webhooks scheme: `webhook-id` (the delivery's id, the same on every retry),
//! `webhook-timestamp` (seconds since the epoch, of this attempt) and `webhook-signature`
//! (`v1,` and the base64 HMAC-SHA256 of `{id}.{timestamp}.{body}` under the endpoint's secret).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use rand::RngCore as _;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::domain::string_enum;
use crate::error::FieldError;
use crate::ids::{DeliveryId, TenantId, WebhookId};

string_enum!(
    /// An event a webhook endpoint can be told about.
    EventType {
        BackupSucceeded => "backup.succeeded",
        BackupFailed => "backup.failed",
        BackupExpired => "backup.expired",
        RestoreSucceeded => "restore.succeeded",
        RestoreFailed => "restore.failed",
        VerificationFailed => "verification.failed",
    }
);

string_enum!(
    /// `pending` while attempts remain, `delivered` once the endpoint answered 2xx, `failed`
    /// when the retries ran out.
    DeliveryStatus {
        Pending => "pending",
        Delivered => "delivered",
        Failed => "failed",
    }
);

/// Longest accepted endpoint URL.
pub const MAX_URL_LEN: usize = 2048;

/// Prefix of signing secrets, as the Standard Webhooks libraries expect it.
pub const SECRET_PREFIX: &str = "whsec_";

/// An endpoint URL: `http` or `https`, with a host, without credentials or a fragment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookUrl(url::Url);

impl WebhookUrl {
    pub fn parse(field: &str, raw: &str) -> Result<Self, FieldError> {
        let refuse = |why: &str| FieldError::new(field, why);
        if raw.len() > MAX_URL_LEN {
            return Err(refuse("must be at most 2048 characters"));
        }
        let url = url::Url::parse(raw).map_err(|e| refuse(&format!("is not a URL ({e})")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(refuse("must be an http or https URL"));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(refuse("must name a host"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(refuse(
                "must not carry credentials; the signature authenticates Svalbard to the receiver",
            ));
        }
        if url.fragment().is_some() {
            return Err(refuse("must not have a fragment"));
        }
        Ok(Self(url))
    }

    /// The host as the network policy checks it (IPv6 literals without brackets).
    #[must_use]
    pub fn host(&self) -> String {
        match self.0.host() {
            Some(url::Host::Ipv6(a)) => a.to_string(),
            Some(h) => h.to_string(),
            None => String::new(),
        }
    }

    #[must_use]
    pub fn port(&self) -> u16 {
        self.0.port_or_known_default().unwrap_or(80)
    }

    #[must_use]
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    #[must_use]
    pub fn url(&self) -> &url::Url {
        &self.0
    }
}

/// A fresh signing secret: `whsec_` and 32 random bytes in base64.
#[must_use]
pub fn generate_secret() -> SecretString {
    let mut key = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut key);
    SecretString::from(format!("{SECRET_PREFIX}{}", STANDARD.encode(key)))
}

/// A webhook endpoint of a tenant. Its secret is never shown again after its creation.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Webhook {
    pub id: WebhookId,
    pub tenant_id: TenantId,
    /// Where deliveries are sent (a POST of a JSON body).
    #[schema(example = "https://hooks.example.com/svalbard")]
    pub url: String,
    /// The events sent to it.
    pub event_types: Vec<EventType>,
    pub created_at: DateTime<Utc>,
}

/// A webhook endpoint just created, with its signing secret: shown in this answer only.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreatedWebhook {
    #[serde(flatten)]
    pub webhook: Webhook,
    /// The signing secret (`whsec_` and base64), for checking `webhook-signature`. Keep it: it
    /// is not shown again.
    #[schema(example = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")]
    pub secret: String,
}

/// One attempt of a delivery.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Attempt {
    pub at: DateTime<Utc>,
    /// From the connection to the end of the answer's headers (or the failure).
    pub duration_ms: u64,
    /// The endpoint's HTTP status, when it answered.
    pub http_status: Option<u16>,
    /// Why the attempt failed, when it did before or instead of an answer.
    pub error: Option<String>,
    /// The start of the answer's body, without control characters (at most 200 characters).
    pub response: Option<String>,
}

/// One event sent (or to be sent) to one endpoint, with its attempts.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    /// Also the `webhook-id` header of each attempt.
    pub id: DeliveryId,
    pub webhook_id: WebhookId,
    pub event_type: EventType,
    /// The event's `data`: the ids of what it is about, its status and error message.
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
    pub status: DeliveryStatus,
    /// Oldest first.
    pub attempts: Vec<Attempt>,
    pub created_at: DateTime<Utc>,
    /// When the next attempt is due, while `pending`.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// When it was delivered or given up.
    pub completed_at: Option<DateTime<Utc>>,
}

/// The body of a delivery: `{type, timestamp, data}`.
#[must_use]
pub fn body(event: EventType, at: DateTime<Utc>, data: serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "type": event.as_str(),
        "timestamp": at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "data": data,
    })
}

/// The part of an answer's body kept with an attempt: the first 200 characters, control
/// characters replaced, so nothing a receiver sends can forge lines of a log or a terminal.
#[must_use]
pub fn excerpt(raw: &[u8]) -> Option<String> {
    let text: String = String::from_utf8_lossy(raw)
        .chars()
        .take(200)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_http_with_a_host_and_no_credentials() {
        assert!(WebhookUrl::parse("url", "https://hooks.example.com/x?y=1").is_ok());
        let v6 = WebhookUrl::parse("url", "http://[::1]:8080/h").unwrap();
        assert_eq!((v6.host().as_str(), v6.port()), ("::1", 8080));
        assert_eq!(WebhookUrl::parse("url", "https://h.example").unwrap().port(), 443);
        for bad in [
            "ftp://h.example/",
            "file:///etc/passwd",
            "http://user:pw@h.example/",
            "http://h.example/#x",
            "not a url",
            "unix:/run/x.sock",
        ] {
            let e = WebhookUrl::parse("url", bad).unwrap_err();
            assert_eq!(e.field, "url", "{bad}");
        }
        assert!(WebhookUrl::parse("url", &format!("https://h.example/{}", "a".repeat(2100))).is_err());
    }

    #[test]
    fn secrets_are_fresh_and_prefixed() {
        use secrecy::ExposeSecret as _;
        let (a, b) = (generate_secret(), generate_secret());
        assert!(a.expose_secret().starts_with(SECRET_PREFIX));
        assert_ne!(a.expose_secret(), b.expose_secret());
        let raw = STANDARD.decode(&a.expose_secret()[SECRET_PREFIX.len()..]).unwrap();
        assert_eq!(raw.len(), 32);
    }

    #[test]
    fn excerpts_are_short_and_printable() {
        assert_eq!(excerpt(b"ok\r\nInjected: 1").as_deref(), Some("ok  Injected: 1"));
        assert_eq!(excerpt(b"  \n"), None);
        assert_eq!(excerpt("é".repeat(500).as_bytes()).unwrap().chars().count(), 200);
    }
}
