-- Glance metadata definitions: namespaces, each with its properties,
-- objects, tags and resource type associations kept as one JSON document
-- (`doc`), changed as a whole under a compare-and-swap on `revision`.
CREATE TABLE metadef_namespaces (
    namespace    TEXT PRIMARY KEY,
    display_name TEXT,
    description  TEXT,
    visibility   TEXT NOT NULL,
    protected    INTEGER NOT NULL DEFAULT 0,
    owner        TEXT NOT NULL,
    doc          TEXT NOT NULL DEFAULT '{}',
    revision     INTEGER NOT NULL DEFAULT 0,
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL
);
