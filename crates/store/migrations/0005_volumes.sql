-- Cinder volumes and volume snapshots. `location` is where the data lives in
-- the storage pool (NULL until made); `source_*` says what a volume was made
-- from. Deleted rows are kept with status 'deleted' (as Cinder does).
CREATE TABLE volumes (
    id             TEXT PRIMARY KEY,
    project_id     TEXT NOT NULL,
    user_id        TEXT NOT NULL,
    name           TEXT,
    description    TEXT,
    size           INTEGER NOT NULL,
    status         TEXT NOT NULL,
    source_kind    TEXT NOT NULL,
    source_id      TEXT,
    location       TEXT,
    bootable       INTEGER NOT NULL DEFAULT 0,
    metadata       TEXT NOT NULL DEFAULT '{}',
    image_metadata TEXT NOT NULL DEFAULT '{}',
    created_at     TEXT NOT NULL,
    updated_at     TEXT NOT NULL
);
CREATE INDEX volumes_project ON volumes (project_id, created_at);
CREATE INDEX volumes_status ON volumes (status);

CREATE TABLE volume_snapshots (
    id          TEXT PRIMARY KEY,
    volume_id   TEXT NOT NULL REFERENCES volumes (id),
    project_id  TEXT NOT NULL,
    user_id     TEXT NOT NULL,
    name        TEXT,
    description TEXT,
    size        INTEGER NOT NULL,
    status      TEXT NOT NULL,
    location    TEXT,
    metadata    TEXT NOT NULL DEFAULT '{}',
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);
CREATE INDEX volume_snapshots_volume ON volume_snapshots (volume_id, status);
CREATE INDEX volume_snapshots_project ON volume_snapshots (project_id, created_at);
