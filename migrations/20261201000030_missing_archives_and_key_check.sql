-- A backup whose archive the reaper cannot find is first suspected (`missing_since`); only a
-- listing on a later sweep makes it `missing`. That state goes back to `succeeded` when the
-- archive is found again, and the reaper never deletes the objects of such a backup.
ALTER TABLE backups ADD COLUMN missing_since timestamptz;
ALTER TABLE backups DROP CONSTRAINT backups_status_check;
ALTER TABLE backups ADD CONSTRAINT backups_status_check CHECK (status IN
    ('scheduled', 'running', 'succeeded', 'failed', 'incomplete', 'missing',
     'expired', 'deleting', 'deleted'));
CREATE INDEX backups_missing ON backups (checked_at NULLS FIRST) WHERE status = 'missing';

-- A value sealed with the key ring on the first start: a process whose key ring cannot open it
-- belongs to another installation and must not take this database's jobs.
CREATE TABLE key_check (
    id          boolean PRIMARY KEY DEFAULT true CHECK (id),
    key_id      text NOT NULL,
    sealed      bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
