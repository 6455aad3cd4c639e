-- Keystone role assignments on the system scope (`/v3/system/users/{u}/roles/{r}`).
-- Snapstack issues project-scoped tokens only; these are recorded and listed.
CREATE TABLE system_role_assignments (
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role_id TEXT NOT NULL REFERENCES roles (id) ON DELETE CASCADE,
    PRIMARY KEY (user_id, role_id)
);

-- A token scoped to the system carries the user's system roles.
ALTER TABLE tokens ADD COLUMN system_scope INTEGER NOT NULL DEFAULT 0;

-- Attributes of a user Keystone does not know, kept and shown as given (JSON object).
ALTER TABLE users ADD COLUMN extra TEXT NOT NULL DEFAULT '{}';
