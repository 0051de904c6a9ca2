-- The rest of a planet's verification policy: verify its newest backup on a cron (read in the
-- schedule's time zone), and where verifications restore: the platform's verification server
-- (the default) or, when the tenant asks for it, the planet's own server.
ALTER TABLE schedules
    ADD COLUMN verify_cron text,
    ADD COLUMN next_verification_at timestamptz,
    ADD COLUMN verify_on text NOT NULL DEFAULT 'platform' CHECK (verify_on IN ('platform', 'source'));

CREATE INDEX schedules_verification_due ON schedules (next_verification_at) WHERE verify_cron IS NOT NULL;
