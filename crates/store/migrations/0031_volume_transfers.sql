-- Cinder volume transfers: a volume offered to another project, accepted
-- with the transfer's id and auth key (only a salted SHA-256 of the key is
-- kept). The row goes when the transfer is accepted or deleted.
CREATE TABLE volume_transfers (
    id           TEXT PRIMARY KEY,
    volume_id    TEXT NOT NULL REFERENCES volumes (id),
    project_id   TEXT NOT NULL,
    name         TEXT,
    salt         TEXT NOT NULL,
    key_hash     TEXT NOT NULL,
    no_snapshots INTEGER NOT NULL DEFAULT 0,
    created_at   TEXT NOT NULL
);
CREATE INDEX volume_transfers_project ON volume_transfers (project_id, created_at);
CREATE UNIQUE INDEX volume_transfers_volume ON volume_transfers (volume_id);
