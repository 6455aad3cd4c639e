-- Cinder volume types: the default type `__DEFAULT__` (as Cinder makes it
-- at installation), admin-made types with extra specs, access lists of
-- private types, and the type of each volume. Deleting a type removes its
-- row (a type in use cannot be deleted).
CREATE TABLE volume_types (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    description TEXT,
    is_public   INTEGER NOT NULL DEFAULT 1,
    extra_specs TEXT NOT NULL DEFAULT '{}',
    encryption  TEXT,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);

CREATE TABLE volume_type_access (
    type_id    TEXT NOT NULL REFERENCES volume_types (id) ON DELETE CASCADE,
    project_id TEXT NOT NULL,
    PRIMARY KEY (type_id, project_id)
);

INSERT INTO volume_types (id, name, description, is_public, extra_specs, created_at, updated_at)
VALUES ('5ad01bd4-5d8f-4c6b-8a6f-2b5d3a2f0001', '__DEFAULT__', 'Default Volume Type', 1, '{}',
        '2026-01-01T00:00:00.000000Z', '2026-01-01T00:00:00.000000Z');

ALTER TABLE volumes ADD COLUMN volume_type_id TEXT NOT NULL DEFAULT '5ad01bd4-5d8f-4c6b-8a6f-2b5d3a2f0001';
-- Cinder's admin metadata `readonly` (NULL: never set).
ALTER TABLE volumes ADD COLUMN readonly INTEGER;
-- A snapshot's progress as `os-update_snapshot_status` gave it.
ALTER TABLE volume_snapshots ADD COLUMN progress TEXT;
CREATE INDEX volumes_type ON volumes (volume_type_id);
