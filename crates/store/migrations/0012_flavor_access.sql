-- Projects that may use a private flavor (Nova's os-flavor-access).
CREATE TABLE flavor_access (
    flavor_id  TEXT NOT NULL REFERENCES flavors (id) ON DELETE CASCADE,
    project_id TEXT NOT NULL,
    PRIMARY KEY (flavor_id, project_id)
);
