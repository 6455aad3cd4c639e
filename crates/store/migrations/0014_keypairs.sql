-- Nova keypairs: per user, unique by name; a server keeps the name of the
-- keypair it was created with (as Nova does).
CREATE TABLE keypairs (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id     TEXT NOT NULL,
    name        TEXT NOT NULL,
    key_type    TEXT NOT NULL,
    public_key  TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    UNIQUE (user_id, name)
);

ALTER TABLE servers ADD COLUMN key_name TEXT;

-- Nova's accessIPv4/accessIPv6 (given by the user, shown as given) and lock.
ALTER TABLE servers ADD COLUMN access_ipv4 TEXT;
ALTER TABLE servers ADD COLUMN access_ipv6 TEXT;
ALTER TABLE servers ADD COLUMN locked INTEGER NOT NULL DEFAULT 0;
