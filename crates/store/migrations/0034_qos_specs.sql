-- Cinder QoS specs (recorded and shown; the file and rbd backends report
-- QoS_support false, so nothing enforces them) and the type each is
-- associated with.
CREATE TABLE qos_specs (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    consumer   TEXT NOT NULL,
    specs      TEXT NOT NULL DEFAULT '{}',
    created_at TEXT NOT NULL
);
ALTER TABLE volume_types ADD COLUMN qos_specs_id TEXT REFERENCES qos_specs (id);
