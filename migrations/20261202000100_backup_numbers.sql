-- Client-chosen numeric ids of backups (the Camunda-style profile): one number names at most one
-- backup of a planet. A number whose backup is gone (expired, being deleted, deleted) may be
-- taken again; the row then points at the new backup.
CREATE TABLE backup_numbers (
    tenant_id   uuid   NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    planet_id   uuid   NOT NULL REFERENCES planets (id) ON DELETE CASCADE,
    number      bigint NOT NULL CHECK (number >= 0),
    backup_id   uuid   NOT NULL UNIQUE REFERENCES backups (id) ON DELETE CASCADE,
    PRIMARY KEY (planet_id, number)
);
CREATE INDEX backup_numbers_tenant ON backup_numbers (tenant_id);
