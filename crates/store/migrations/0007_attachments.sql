-- Volumes attached to servers (Nova's block device mappings of volumes,
-- Cinder's attachments). A volume has at most one attachment; in a server a
-- device and a disk id (the QEMU node name) are used once. A row lives from
-- the attach request to the end of the detach.
CREATE TABLE volume_attachments (
    id                    TEXT PRIMARY KEY,
    volume_id             TEXT NOT NULL REFERENCES volumes (id),
    server_id             TEXT NOT NULL REFERENCES servers (id),
    device                TEXT NOT NULL,
    disk_id               TEXT NOT NULL,
    boot_index            INTEGER,
    delete_on_termination INTEGER NOT NULL DEFAULT 0,
    created_at            TEXT NOT NULL
);
CREATE UNIQUE INDEX volume_attachments_volume ON volume_attachments (volume_id);
CREATE UNIQUE INDEX volume_attachments_device ON volume_attachments (server_id, device);
CREATE UNIQUE INDEX volume_attachments_disk ON volume_attachments (server_id, disk_id);
