-- Schedules and retention policies of planets, per-tenant limits, and the bookkeeping of the
-- periodic maintenance (scheduler, retention, reaper) shared by every worker.

CREATE TABLE schedules (
    planet_id       uuid PRIMARY KEY REFERENCES planets (id) ON DELETE CASCADE,
    tenant_id       uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    project_id      uuid NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    cron            text NOT NULL,
    timezone        text NOT NULL,
    enabled         boolean NOT NULL DEFAULT true,
    mechanism       text NOT NULL DEFAULT 'logical',
    retention       jsonb NOT NULL DEFAULT '{}'::jsonb,
    -- the next due instant; NULL while disabled
    next_run_at     timestamptz,
    -- the last due instant handled, what became of it, and the backup it created
    last_run_at     timestamptz,
    last_outcome    text,
    last_backup_id  uuid,
    skipped_runs    bigint NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX schedules_due ON schedules (next_run_at) WHERE enabled;

-- When the reaper last found a backup's archive where the catalog says it is.
ALTER TABLE backups ADD COLUMN checked_at timestamptz;
CREATE INDEX backups_succeeded ON backups (checked_at NULLS FIRST) WHERE status = 'succeeded';

-- Per-tenant overrides of the configured limits; NULL means the configured default.
ALTER TABLE tenants ADD COLUMN max_concurrent_jobs integer CHECK (max_concurrent_jobs > 0);
ALTER TABLE tenants ADD COLUMN max_stored_bytes bigint CHECK (max_stored_bytes > 0);
ALTER TABLE tenants ADD COLUMN max_backups integer CHECK (max_backups > 0);

-- One row per periodic task; a worker runs a task when it wins the row's due time.
CREATE TABLE maintenance (
    task         text PRIMARY KEY,
    next_run_at  timestamptz NOT NULL DEFAULT now(),
    last_run_at  timestamptz,
    last_worker  text,
    last_report  jsonb
);
