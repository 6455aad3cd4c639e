-- Long operations, one row each; `step` is recorded before the step runs,
-- so that start-up reconciliation knows how far each one got.
CREATE TABLE sagas (
    id         TEXT PRIMARY KEY,
    kind       TEXT NOT NULL,
    step       TEXT NOT NULL,
    data       TEXT NOT NULL DEFAULT '{}',
    done       INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX sagas_open ON sagas (done);
