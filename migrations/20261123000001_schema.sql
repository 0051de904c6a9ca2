-- Control database of Svalbard: resources, backups, the job queue and idempotency records.

CREATE TABLE tenants (
    id           uuid PRIMARY KEY,
    name         text NOT NULL UNIQUE,
    display_name text,
    created_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE projects (
    id          uuid PRIMARY KEY,
    tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name        text NOT NULL,
    description text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, name)
);
CREATE INDEX projects_tenant ON projects (tenant_id, id DESC);

CREATE TABLE planets (
    id                  uuid PRIMARY KEY,
    tenant_id           uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    project_id          uuid NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    name                text NOT NULL,
    engine              text NOT NULL CHECK (engine IN ('postgresql', 'mysql')),
    planet_class        text NOT NULL CHECK (planet_class IN ('dev', 'test', 'prod')),
    labels              jsonb NOT NULL DEFAULT '{}'::jsonb,
    host                text NOT NULL,
    port                integer NOT NULL CHECK (port BETWEEN 1 AND 65535),
    database_name       text NOT NULL,
    db_user             text NOT NULL,
    sslmode             text NOT NULL,
    -- nonce || ciphertext of the password, sealed under the key named by password_key_id
    password_sealed     bytea,
    password_key_id     text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    UNIQUE (project_id, name)
);
CREATE INDEX planets_project ON planets (tenant_id, project_id, id DESC);

CREATE TABLE backups (
    id                  uuid PRIMARY KEY,
    tenant_id           uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    project_id          uuid NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    planet_id           uuid NOT NULL REFERENCES planets (id) ON DELETE CASCADE,
    name                text NOT NULL,
    engine              text NOT NULL,
    mechanism           text NOT NULL DEFAULT 'logical',
    method              text NOT NULL CHECK (method IN ('manual', 'periodic')),
    temporary           boolean NOT NULL DEFAULT false,
    pinned              boolean NOT NULL DEFAULT false,
    status              text NOT NULL CHECK (status IN
                            ('scheduled', 'running', 'succeeded', 'failed', 'incomplete',
                             'expired', 'deleting', 'deleted')),
    error_message       text,
    phase               text,
    bytes_processed     bigint NOT NULL DEFAULT 0,
    size_bytes          bigint,
    checksum            text,
    compression         text NOT NULL DEFAULT 'zstd',
    encryption          text NOT NULL DEFAULT 'none',
    engine_version      text,
    tool_version        text,
    format_version      integer,
    -- folder of the backup's objects, and the archive inside it once stored
    storage_prefix      text NOT NULL,
    object_key          text,
    stage               text NOT NULL,
    retention_days      integer NOT NULL,
    metadata            jsonb NOT NULL DEFAULT '{}'::jsonb,
    parts               jsonb NOT NULL DEFAULT '[]'::jsonb,
    created_at          timestamptz NOT NULL DEFAULT now(),
    started_at          timestamptz,
    completed_at        timestamptz,
    expiration_date     timestamptz
);
CREATE INDEX backups_planet ON backups (tenant_id, planet_id, id DESC);
CREATE INDEX backups_project ON backups (tenant_id, project_id, id DESC);
-- At most one backup in flight per planet: the second create is a conflict, not a race.
CREATE UNIQUE INDEX backups_one_active ON backups (planet_id) WHERE status IN ('scheduled', 'running');

CREATE TABLE jobs (
    id           uuid PRIMARY KEY,
    tenant_id    uuid NOT NULL,
    kind         text NOT NULL,
    subject_id   uuid NOT NULL,
    payload      jsonb NOT NULL DEFAULT '{}'::jsonb,
    state        text NOT NULL DEFAULT 'queued' CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    attempts     integer NOT NULL DEFAULT 0,
    max_attempts integer NOT NULL DEFAULT 5,
    run_after    timestamptz NOT NULL DEFAULT now(),
    deadline     timestamptz,
    locked_by    text,
    lease_until  timestamptz,
    last_error   text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz
);
CREATE INDEX jobs_ready ON jobs (run_after) WHERE state = 'queued';
CREATE INDEX jobs_leased ON jobs (lease_until) WHERE state = 'running';
CREATE INDEX jobs_subject ON jobs (subject_id);

CREATE TABLE idempotency_keys (
    scope          text NOT NULL,
    key            text NOT NULL,
    request_hash   text NOT NULL,
    status         integer,
    location       text,
    body           jsonb,
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, key)
);
