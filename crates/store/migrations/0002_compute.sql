-- Nova flavors and servers.
CREATE TABLE flavors (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    vcpus       INTEGER NOT NULL,
    ram         INTEGER NOT NULL,
    disk        INTEGER NOT NULL,
    ephemeral   INTEGER NOT NULL DEFAULT 0,
    swap        INTEGER NOT NULL DEFAULT 0,
    is_public   INTEGER NOT NULL DEFAULT 1,
    description TEXT,
    extra_specs TEXT NOT NULL DEFAULT '{}',
    deleted     INTEGER NOT NULL DEFAULT 0
);

-- A server keeps a copy of its flavor (as Nova does), so deleting a flavor
-- never changes a running server.
CREATE TABLE servers (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    project_id  TEXT NOT NULL,
    user_id     TEXT NOT NULL,
    image_id    TEXT,
    flavor      TEXT NOT NULL,
    vm_state    TEXT NOT NULL,
    task_state  TEXT,
    power_state INTEGER NOT NULL DEFAULT 0,
    progress    INTEGER NOT NULL DEFAULT 0,
    fault       TEXT,
    metadata    TEXT NOT NULL DEFAULT '{}',
    root_disk   TEXT,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    launched_at TEXT
);
CREATE INDEX servers_project ON servers (project_id, created_at);
CREATE INDEX servers_state ON servers (vm_state, task_state);
