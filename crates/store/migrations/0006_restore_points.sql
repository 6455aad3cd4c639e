-- Restore points (libvirt-style snapshots of whole servers), a tree per
-- server. `disks` is a JSON list of {"disk_id", "layer"} (pool locations of
-- the frozen layers); `state_file` is the memory state of points with memory.
CREATE TABLE restore_points (
    id             TEXT PRIMARY KEY,
    server_id      TEXT NOT NULL,
    project_id     TEXT NOT NULL,
    name           TEXT NOT NULL,
    parent_id      TEXT,
    method         TEXT NOT NULL,
    memory         INTEGER NOT NULL,
    quiesced       INTEGER NOT NULL,
    status         TEXT NOT NULL,
    disks          TEXT NOT NULL DEFAULT '[]',
    state_file     TEXT,
    vm_state       TEXT NOT NULL,
    guest_pause_us INTEGER,
    created_at     TEXT NOT NULL,
    updated_at     TEXT NOT NULL
);
CREATE INDEX restore_points_server ON restore_points (server_id);

-- The point a server's current state descends from (the last one taken or
-- reverted to): new points are its children.
CREATE TABLE restore_point_current (
    server_id TEXT PRIMARY KEY,
    point_id  TEXT NOT NULL
);
