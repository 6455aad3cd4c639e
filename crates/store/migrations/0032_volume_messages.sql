-- Cinder user messages: why an asynchronous volume operation failed
-- ("no valid backend"), kept for the project to read until deleted or
-- expired (`expires_at`, Cinder's `guaranteed_until`).
CREATE TABLE volume_messages (
    id            TEXT PRIMARY KEY,
    project_id    TEXT NOT NULL,
    resource_type TEXT NOT NULL,
    resource_uuid TEXT,
    event_id      TEXT NOT NULL,
    message_level TEXT NOT NULL,
    user_message  TEXT NOT NULL,
    request_id    TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    expires_at    TEXT NOT NULL
);
CREATE INDEX volume_messages_project ON volume_messages (project_id, created_at);
