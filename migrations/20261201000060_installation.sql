-- The identity of this installation, also written into the bucket: a control database and a
-- bucket that name different installations must not reconcile one against the other.
CREATE TABLE installation (
    only_one boolean PRIMARY KEY DEFAULT true CHECK (only_one),
    id uuid NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
