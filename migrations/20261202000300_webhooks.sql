-- Webhooks: a tenant's endpoints, and the deliveries queued for them in the transaction of the
-- state change that causes each one.
CREATE TABLE webhook_endpoints (
    id            uuid PRIMARY KEY,
    tenant_id     uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    url           text NOT NULL,
    event_types   text[] NOT NULL CHECK (cardinality(event_types) > 0),
    -- The signing secret, sealed under the key ring (the endpoint id is the context).
    secret_sealed bytea NOT NULL,
    secret_key_id text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_endpoints_tenant ON webhook_endpoints (tenant_id, id);

CREATE TABLE webhook_deliveries (
    -- Also the `webhook-id` of every attempt: receivers tell retries apart from new events by it.
    id              uuid PRIMARY KEY,
    tenant_id       uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    endpoint_id     uuid NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    event_type      text NOT NULL,
    -- The body sent, `{type, timestamp, data}`.
    payload         jsonb NOT NULL,
    status          text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
    -- `[{at, durationMs, httpStatus, error, response}]`, oldest first.
    attempts        jsonb NOT NULL DEFAULT '[]',
    attempt_count   integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    lease_token     uuid,
    lease_until     timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    completed_at    timestamptz
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries (endpoint_id, id);
