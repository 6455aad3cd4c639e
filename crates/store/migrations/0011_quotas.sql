-- Quota limits set by an admin: for a project (os-quota-sets) or for a
-- quota class (os-quota-class-sets; 'default' is the one used). A resource
-- without a project row takes the class row, else the built-in default.
CREATE TABLE quota_limits (
    scope      TEXT NOT NULL,  -- 'project:<id>' or 'class:<name>'
    service    TEXT NOT NULL,  -- 'compute' or 'volume'
    resource   TEXT NOT NULL,
    hard_limit INTEGER NOT NULL,
    PRIMARY KEY (scope, service, resource)
);

-- What requests claimed between their quota check and the row they create
-- (usage is counted from the resources' own rows, plus these). Each is
-- taken in one write transaction with the count, so two requests racing
-- for the last unit cannot both get it. Stale ones expire.
CREATE TABLE quota_reservations (
    id         TEXT PRIMARY KEY,
    project_id TEXT NOT NULL,
    service    TEXT NOT NULL,
    deltas     TEXT NOT NULL,  -- JSON {resource: amount}
    expires_at TEXT NOT NULL
);
CREATE INDEX quota_reservations_project ON quota_reservations (project_id, service);
