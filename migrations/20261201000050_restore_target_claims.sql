-- When a restore created the target database it loads. A later attempt of the same
-- restore that finds the target filled knows the rows are its own earlier attempt's (committed
-- just before that attempt died), not somebody else's data.
ALTER TABLE restores ADD COLUMN target_claimed_at timestamptz;
