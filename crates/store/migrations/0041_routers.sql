-- Neutron routers and floating IPs (issue 15). A router's interfaces are its
-- ports (device_owner network:router_interface); its gateway is a port too.
CREATE TABLE routers (
    id                  TEXT PRIMARY KEY,
    project_id          TEXT NOT NULL,
    name                TEXT NOT NULL,
    description         TEXT NOT NULL,
    admin_state_up      INTEGER NOT NULL,
    gateway_network_id  TEXT REFERENCES networks (id),
    gateway_port_id     TEXT,
    enable_snat         INTEGER NOT NULL,
    routes              TEXT NOT NULL,  -- JSON [{destination, nexthop}]
    revision_number     INTEGER NOT NULL,
    created_at          TEXT NOT NULL,
    updated_at          TEXT NOT NULL
);

CREATE TABLE floating_ips (
    id                  TEXT PRIMARY KEY,
    project_id          TEXT NOT NULL,
    description         TEXT NOT NULL,
    floating_network_id TEXT NOT NULL REFERENCES networks (id),
    floating_ip_address TEXT NOT NULL,
    floating_port_id    TEXT NOT NULL,
    port_id             TEXT,
    fixed_ip_address    TEXT,
    router_id           TEXT,
    revision_number     INTEGER NOT NULL,
    created_at          TEXT NOT NULL,
    updated_at          TEXT NOT NULL
);
-- One floating IP per fixed address.
CREATE UNIQUE INDEX floating_ips_fixed ON floating_ips (port_id, fixed_ip_address) WHERE port_id IS NOT NULL;
