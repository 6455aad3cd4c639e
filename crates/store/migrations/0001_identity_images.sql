-- Identity: projects, users, roles, assignments, tokens.
CREATE TABLE projects (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL DEFAULT '',
    enabled     INTEGER NOT NULL DEFAULT 1
);

CREATE TABLE users (
    id                 TEXT PRIMARY KEY,
    name               TEXT NOT NULL UNIQUE,
    email              TEXT,
    description        TEXT NOT NULL DEFAULT '',
    enabled            INTEGER NOT NULL DEFAULT 1,
    default_project_id TEXT,
    password_hash      TEXT NOT NULL
);

CREATE TABLE roles (
    id   TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE
);

CREATE TABLE role_assignments (
    user_id    TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    project_id TEXT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    role_id    TEXT NOT NULL REFERENCES roles(id) ON DELETE CASCADE,
    PRIMARY KEY (user_id, project_id, role_id)
);

-- Tokens are random; only their SHA-256 is stored.
CREATE TABLE tokens (
    token_hash TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    project_id TEXT,
    audit_id   TEXT NOT NULL,
    issued_at  TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    revoked    INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX tokens_expires ON tokens (expires_at);

-- Glance images. Properties and tags are JSON.
CREATE TABLE images (
    id               TEXT PRIMARY KEY,
    name             TEXT,
    owner            TEXT NOT NULL,
    status           TEXT NOT NULL,
    visibility       TEXT NOT NULL,
    protected        INTEGER NOT NULL DEFAULT 0,
    os_hidden        INTEGER NOT NULL DEFAULT 0,
    disk_format      TEXT,
    container_format TEXT,
    size             INTEGER,
    virtual_size     INTEGER,
    checksum         TEXT,
    os_hash_algo     TEXT,
    os_hash_value    TEXT,
    min_disk         INTEGER NOT NULL DEFAULT 0,
    min_ram          INTEGER NOT NULL DEFAULT 0,
    tags             TEXT NOT NULL DEFAULT '[]',
    properties       TEXT NOT NULL DEFAULT '{}',
    location         TEXT,
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL
);
CREATE INDEX images_listing ON images (status, created_at, id);
CREATE INDEX images_owner ON images (owner);

CREATE TABLE image_members (
    image_id   TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    member     TEXT NOT NULL,
    status     TEXT NOT NULL DEFAULT 'pending',
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (image_id, member)
);
