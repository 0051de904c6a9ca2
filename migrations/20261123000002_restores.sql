-- Restores: into a planet, from a stored backup or an uploaded archive.
CREATE TABLE restores (
    id                  uuid PRIMARY KEY,
    tenant_id           uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    project_id          uuid NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    planet_id           uuid NOT NULL REFERENCES planets (id) ON DELETE CASCADE,
    source_backup_id    uuid REFERENCES backups (id) ON DELETE SET NULL,
    source_upload_key   text,
    source_upload_name  text,
    source_upload_size  bigint,
    target_database     text NOT NULL,
    replace_target      boolean NOT NULL DEFAULT false,
    force               boolean NOT NULL DEFAULT false,
    status              text NOT NULL CHECK (status IN ('scheduled', 'running', 'succeeded', 'failed', 'incompatible')),
    error_message       text,
    phase               text,
    bytes_processed     bigint NOT NULL DEFAULT 0,
    verification        jsonb,
    created_at          timestamptz NOT NULL DEFAULT now(),
    started_at          timestamptz,
    completed_at        timestamptz
);
CREATE INDEX restores_planet ON restores (tenant_id, planet_id, id DESC);
CREATE INDEX restores_project ON restores (tenant_id, project_id, id DESC);
CREATE UNIQUE INDEX restores_one_active ON restores (planet_id) WHERE status IN ('scheduled', 'running');
