-- Volume snapshots an image owns: the snapshots a snapshot of a
-- volume-backed server took (its `block_device_mapping` names them).
-- Deleting the image deletes them (OpenStack leaks them).
CREATE TABLE image_volume_snapshots (
    image_id    TEXT NOT NULL,
    snapshot_id TEXT NOT NULL REFERENCES volume_snapshots (id),
    PRIMARY KEY (image_id, snapshot_id)
);
CREATE INDEX image_volume_snapshots_snapshot ON image_volume_snapshots (snapshot_id);
