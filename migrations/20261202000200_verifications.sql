-- Verification by restore.
--
-- `table_counts`: the rows of every table of the source, counted while dumping (PostgreSQL:
-- in the dump's own snapshot, so they are exactly what the dump holds), as
-- {"schema.table": rows}. NULL when they could not be counted; a verification then compares
-- what was restored with nothing recorded and says so.
-- `verification`: the outcome of the last verification of the backup (status, when, duration,
-- tables, rows, mismatches), NULL until one has ended.
ALTER TABLE backups ADD COLUMN table_counts jsonb;
ALTER TABLE backups ADD COLUMN verification jsonb;

-- The newest verified backup of a planet is looked up by retention and for metrics.
CREATE INDEX backups_verified ON backups (planet_id, ((verification->>'at')))
    WHERE verification->>'status' = 'verified';

-- The verification policy of a planet's schedule: verify every Nth backup of the planet.
ALTER TABLE schedules ADD COLUMN verify_every integer
    CHECK (verify_every IS NULL OR verify_every BETWEEN 1 AND 1000);
