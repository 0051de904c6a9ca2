-- Envelope encryption: each tenant has versions of an age identity, sealed by the master key
-- ring; each encrypted backup keeps its archive's data key wrapped by one of them.
CREATE TABLE tenant_keys (
    tenant_id     uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    version       integer NOT NULL CHECK (version > 0),
    recipient     text NOT NULL,
    master_key_id text NOT NULL,
    sealed        bytea NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    retired_at    timestamptz,
    PRIMARY KEY (tenant_id, version)
);

ALTER TABLE backups
    ADD COLUMN data_key bytea,
    ADD COLUMN data_key_version integer,
    ADD CONSTRAINT backups_data_key_whole CHECK ((data_key IS NULL) = (data_key_version IS NULL));
