-- Master keys that a rotation moved away from: a process whose ring puts one of them first again
-- (a stale configuration) would seal everything back to it, so it is refused at start.
ALTER TABLE key_check ADD COLUMN retired_key_ids text[] NOT NULL DEFAULT '{}';
