-- Keystone application credentials: a secret (hashed) standing for a user
-- on one project with a subset of its roles, until it expires or is
-- deleted. Tokens remember the credential they came from.
CREATE TABLE application_credentials (
    id           TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    project_id   TEXT NOT NULL,
    name         TEXT NOT NULL,
    description  TEXT,
    secret_hash  TEXT NOT NULL,
    roles        TEXT NOT NULL,  -- JSON array of role names
    unrestricted INTEGER NOT NULL DEFAULT 0,
    expires_at   TEXT,
    created_at   TEXT NOT NULL,
    UNIQUE (user_id, name)
);
ALTER TABLE tokens ADD COLUMN app_cred_id TEXT;
CREATE INDEX tokens_app_cred ON tokens (app_cred_id);
