-- Per-tenant target policy (set by platform administrators), the audit log, and an index that
-- lets expired idempotency records be pruned cheaply.

-- {"allow": [...], "deny": [...]}: when set, replaces the platform's `targets` lists for this
-- tenant. The default refusals and the control database's own refusal still apply.
ALTER TABLE tenants ADD COLUMN target_policy jsonb;

-- No foreign key: the record of what was done outlives the tenant it was done to.
CREATE TABLE audit_events (
    id            uuid PRIMARY KEY,
    tenant_id     uuid NOT NULL,
    occurred_at   timestamptz NOT NULL DEFAULT now(),
    -- the token's subject, its role, and whether it was a platform token (tenant `*`)
    actor         text NOT NULL,
    actor_role    text NOT NULL,
    actor_platform boolean NOT NULL,
    action        text NOT NULL,
    resource_type text NOT NULL,
    resource_id   uuid,
    client_address text,
    outcome       text NOT NULL CHECK (outcome IN ('success', 'denied'))
);
CREATE INDEX audit_events_tenant ON audit_events (tenant_id, id DESC);

CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);
