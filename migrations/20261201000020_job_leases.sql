-- Each claim of a job gets a token of its own: every write of the attempt (heartbeat, outcome,
-- the subject's progress) is fenced by it, so an attempt that lost its lease is refused even
-- when the same worker process claimed the job again.
ALTER TABLE jobs ADD COLUMN lease_token uuid;
-- Retries are bounded by how long ago the first attempt started, not only by their number.
ALTER TABLE jobs ADD COLUMN first_claimed_at timestamptz;
-- Finished jobs are pruned by age.
CREATE INDEX jobs_finished ON jobs (finished_at) WHERE finished_at IS NOT NULL;
-- The sweep that repairs subjects looks jobs up by subject and state.
CREATE INDEX jobs_live_subject ON jobs (subject_id) WHERE state IN ('queued', 'running');
