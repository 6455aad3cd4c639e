-- Neutron's core resources (issue 15). Addresses are unique per subnet (the
-- primary key of ip_allocations makes two allocations of one address fail),
-- MACs per network.
CREATE TABLE networks (
    id                    TEXT PRIMARY KEY,
    project_id            TEXT NOT NULL,
    name                  TEXT NOT NULL,
    description           TEXT NOT NULL,
    admin_state_up        INTEGER NOT NULL,
    shared                INTEGER NOT NULL,
    external              INTEGER NOT NULL,
    mtu                   INTEGER NOT NULL,
    port_security_enabled INTEGER NOT NULL,
    revision_number       INTEGER NOT NULL,
    created_at            TEXT NOT NULL,
    updated_at            TEXT NOT NULL
);

CREATE TABLE subnets (
    id               TEXT PRIMARY KEY,
    network_id       TEXT NOT NULL REFERENCES networks (id),
    project_id       TEXT NOT NULL,
    name             TEXT NOT NULL,
    description      TEXT NOT NULL,
    cidr             TEXT NOT NULL,
    gateway_ip       TEXT,
    enable_dhcp      INTEGER NOT NULL,
    allocation_pools TEXT NOT NULL,  -- JSON [{start, end}]
    dns_nameservers  TEXT NOT NULL,  -- JSON [ip]
    host_routes      TEXT NOT NULL,  -- JSON [{destination, nexthop}]
    revision_number  INTEGER NOT NULL,
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL
);

CREATE TABLE ports (
    id                    TEXT PRIMARY KEY,
    network_id            TEXT NOT NULL REFERENCES networks (id),
    project_id            TEXT NOT NULL,
    name                  TEXT NOT NULL,
    description           TEXT NOT NULL,
    mac_address           TEXT NOT NULL,
    device_id             TEXT NOT NULL,
    device_owner          TEXT NOT NULL,
    admin_state_up        INTEGER NOT NULL,
    status                TEXT NOT NULL,
    port_security_enabled INTEGER NOT NULL,
    allowed_address_pairs TEXT NOT NULL,  -- JSON [[prefix, mac|null]]
    host_id               TEXT NOT NULL,
    delete_with_device    INTEGER NOT NULL,
    revision_number       INTEGER NOT NULL,
    created_at            TEXT NOT NULL,
    updated_at            TEXT NOT NULL,
    UNIQUE (network_id, mac_address)
);
CREATE INDEX ports_device ON ports (device_id);

CREATE TABLE ip_allocations (
    subnet_id  TEXT NOT NULL REFERENCES subnets (id),
    ip_address TEXT NOT NULL,
    port_id    TEXT NOT NULL REFERENCES ports (id) ON DELETE CASCADE,
    position   INTEGER NOT NULL,
    PRIMARY KEY (subnet_id, ip_address)
);
CREATE INDEX ip_allocations_port ON ip_allocations (port_id);

CREATE TABLE security_groups (
    id              TEXT PRIMARY KEY,
    project_id      TEXT NOT NULL,
    name            TEXT NOT NULL,
    description     TEXT NOT NULL,
    stateful        INTEGER NOT NULL,
    is_default      INTEGER NOT NULL,
    revision_number INTEGER NOT NULL,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL
);
-- One default group per project, even when two first requests race.
CREATE UNIQUE INDEX security_groups_default ON security_groups (project_id) WHERE is_default = 1;

CREATE TABLE security_group_rules (
    id                TEXT PRIMARY KEY,
    security_group_id TEXT NOT NULL REFERENCES security_groups (id) ON DELETE CASCADE,
    project_id        TEXT NOT NULL,
    direction         TEXT NOT NULL,
    ethertype         TEXT NOT NULL,
    protocol          TEXT,
    port_range_min    INTEGER,
    port_range_max    INTEGER,
    remote_ip_prefix  TEXT,
    remote_group_id   TEXT REFERENCES security_groups (id),
    description       TEXT NOT NULL,
    revision_number   INTEGER NOT NULL,
    created_at        TEXT NOT NULL,
    updated_at        TEXT NOT NULL
);

CREATE TABLE port_security_groups (
    port_id           TEXT NOT NULL REFERENCES ports (id) ON DELETE CASCADE,
    security_group_id TEXT NOT NULL REFERENCES security_groups (id),
    PRIMARY KEY (port_id, security_group_id)
);
CREATE INDEX port_security_groups_group ON port_security_groups (security_group_id);
