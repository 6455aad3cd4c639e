-- Failed password logins, for Keystone's lockout_failure_attempts /
-- lockout_duration. A user created without a password has an empty
-- password_hash and cannot use password authentication.
ALTER TABLE users ADD COLUMN failed_auth_count INTEGER NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN failed_auth_at TEXT;
CREATE INDEX tokens_user ON tokens (user_id);
CREATE INDEX tokens_project ON tokens (project_id);
