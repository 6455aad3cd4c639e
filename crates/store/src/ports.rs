//! Ports with their fixed IPs (one row per address in `ip_allocations`, whose key makes
//! an address belong to one port at most) and security groups.

use std::collections::HashMap;

use domain::network::{FixedIp, Port, PortStatus};
use domain::{Error, NetworkId, PortId, Result};
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, Sqlite, Transaction};

use crate::networks::{json_column, to_json};
use crate::{db_error, parse_id, parse_ts, ts, Store};

fn port_from_row(row: &SqliteRow) -> Result<Port> {
    Ok(Port {
        id: parse_id(row.get::<&str, _>("id"))?,
        network_id: parse_id(row.get::<&str, _>("network_id"))?,
        project_id: parse_id(row.get::<&str, _>("project_id"))?,
        name: row.get("name"),
        description: row.get("description"),
        mac_address: row.get("mac_address"),
        fixed_ips: vec![],
        device_id: row.get("device_id"),
        device_owner: row.get("device_owner"),
        admin_state_up: row.get("admin_state_up"),
        status: PortStatus::parse(row.get("status")),
        port_security_enabled: row.get("port_security_enabled"),
        security_groups: vec![],
        allowed_address_pairs: json_column(row, "allowed_address_pairs")?,
        host_id: row.get("host_id"),
        delete_with_device: row.get("delete_with_device"),
        revision_number: row.get("revision_number"),
        created_at: parse_ts(row.get("created_at"))?,
        updated_at: parse_ts(row.get("updated_at"))?,
    })
}

/// What an address already taken looks like to the user (Neutron's 409).
fn address_taken(e: sqlx::Error, port: &Port) -> Error {
    match &e {
        sqlx::Error::Database(d)
            if d.is_unique_violation() && d.message().contains("mac_address") =>
        {
            Error::conflict(format!(
                "Unable to complete operation for network {}. The mac address {} is in use.",
                port.network_id, port.mac_address
            ))
        }
        sqlx::Error::Database(d) if d.is_unique_violation() => Error::conflict(format!(
            "IP address {} already allocated in subnet {}",
            port.ips()
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            port.fixed_ips
                .first()
                .map(|f| f.subnet_id.to_string())
                .unwrap_or_default()
        )),
        _ => db_error("Cannot store a port")(e),
    }
}

async fn write_children(
    tx: &mut Transaction<'_, Sqlite>,
    port: &Port,
) -> std::result::Result<(), sqlx::Error> {
    for (position, ip) in port.fixed_ips.iter().enumerate() {
        sqlx::query("INSERT INTO ip_allocations (subnet_id, ip_address, port_id, position) VALUES (?, ?, ?, ?)")
            .bind(ip.subnet_id.to_string())
            .bind(ip.ip_address.to_string())
            .bind(port.id.to_string())
            .bind(position as i64)
            .execute(&mut **tx)
            .await?;
    }
    for group in &port.security_groups {
        sqlx::query("INSERT INTO port_security_groups (port_id, security_group_id) VALUES (?, ?)")
            .bind(port.id.to_string())
            .bind(group.to_string())
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

impl Store {
    /// Stores a new port with its addresses and groups, all or nothing: an address or MAC
    /// already in use is a `Conflict` naming it.
    pub async fn insert_port(&self, p: &Port) -> Result<()> {
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(db_error("Cannot store a port"))?;
        sqlx::query(
            "INSERT INTO ports (id, network_id, project_id, name, description, mac_address, device_id, \
             device_owner, admin_state_up, status, port_security_enabled, allowed_address_pairs, host_id, \
             delete_with_device, revision_number, created_at, updated_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(p.id.to_string())
        .bind(p.network_id.to_string())
        .bind(p.project_id.to_string())
        .bind(&p.name)
        .bind(&p.description)
        .bind(&p.mac_address)
        .bind(&p.device_id)
        .bind(&p.device_owner)
        .bind(p.admin_state_up)
        .bind(p.status.as_str())
        .bind(p.port_security_enabled)
        .bind(to_json(&p.allowed_address_pairs))
        .bind(&p.host_id)
        .bind(p.delete_with_device)
        .bind(p.revision_number)
        .bind(ts(p.created_at))
        .bind(ts(p.updated_at))
        .execute(&mut *tx)
        .await
        .map_err(|e| address_taken(e, p))?;
        write_children(&mut tx, p)
            .await
            .map_err(|e| address_taken(e, p))?;
        tx.commit().await.map_err(db_error("Cannot store a port"))?;
        Ok(())
    }

    /// Writes `next` over the port (addresses and groups included) if it is still at
    /// `prev`'s revision; the revision goes up by one.
    pub async fn update_port(&self, prev: &Port, next: &Port) -> Result<Port> {
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(db_error("Cannot update a port"))?;
        let done = sqlx::query(
            "UPDATE ports SET name = ?, description = ?, mac_address = ?, device_id = ?, device_owner = ?, \
             admin_state_up = ?, status = ?, port_security_enabled = ?, allowed_address_pairs = ?, \
             host_id = ?, delete_with_device = ?, revision_number = revision_number + 1, updated_at = ? \
             WHERE id = ? AND revision_number = ?",
        )
        .bind(&next.name)
        .bind(&next.description)
        .bind(&next.mac_address)
        .bind(&next.device_id)
        .bind(&next.device_owner)
        .bind(next.admin_state_up)
        .bind(next.status.as_str())
        .bind(next.port_security_enabled)
        .bind(to_json(&next.allowed_address_pairs))
        .bind(&next.host_id)
        .bind(next.delete_with_device)
        .bind(ts(next.updated_at))
        .bind(prev.id.to_string())
        .bind(prev.revision_number)
        .execute(&mut *tx)
        .await
        .map_err(|e| address_taken(e, next))?;
        if done.rows_affected() == 0 {
            return Err(Error::conflict(format!(
                "Port {} changed during the update; retry.",
                prev.id
            )));
        }
        for table in ["ip_allocations", "port_security_groups"] {
            sqlx::query(&format!("DELETE FROM {table} WHERE port_id = ?"))
                .bind(prev.id.to_string())
                .execute(&mut *tx)
                .await
                .map_err(db_error("Cannot update a port"))?;
        }
        write_children(&mut tx, next)
            .await
            .map_err(|e| address_taken(e, next))?;
        tx.commit()
            .await
            .map_err(db_error("Cannot update a port"))?;
        self.port(prev.id).await
    }

    pub async fn port(&self, id: PortId) -> Result<Port> {
        let row = sqlx::query("SELECT * FROM ports WHERE id = ?")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error("Cannot read a port"))?
            .ok_or_else(|| Error::not_found("Port", id))?;
        let mut port = port_from_row(&row)?;
        self.fill_ports(std::slice::from_mut(&mut port)).await?;
        Ok(port)
    }

    /// Every port, oldest first.
    pub async fn ports(&self) -> Result<Vec<Port>> {
        let rows = sqlx::query("SELECT * FROM ports ORDER BY created_at, id")
            .fetch_all(&self.pool)
            .await
            .map_err(db_error("Cannot list ports"))?;
        let mut ports = rows.iter().map(port_from_row).collect::<Result<Vec<_>>>()?;
        self.fill_ports(&mut ports).await?;
        Ok(ports)
    }

    /// The ports of one network.
    pub async fn network_ports(&self, network: NetworkId) -> Result<Vec<Port>> {
        Ok(self
            .ports()
            .await?
            .into_iter()
            .filter(|p| p.network_id == network)
            .collect())
    }

    async fn fill_ports(&self, ports: &mut [Port]) -> Result<()> {
        let mut ips: HashMap<String, Vec<(i64, FixedIp)>> = HashMap::new();
        let rows = sqlx::query("SELECT * FROM ip_allocations")
            .fetch_all(&self.pool)
            .await
            .map_err(db_error("Cannot list IP allocations"))?;
        for row in rows {
            let fixed = FixedIp {
                subnet_id: parse_id(row.get::<&str, _>("subnet_id"))?,
                ip_address: row
                    .get::<&str, _>("ip_address")
                    .parse()
                    .map_err(|_| Error::internal("Corrupt ip_address in the database."))?,
            };
            ips.entry(row.get("port_id"))
                .or_default()
                .push((row.get("position"), fixed));
        }
        let mut groups: HashMap<String, Vec<String>> = HashMap::new();
        let rows = sqlx::query("SELECT * FROM port_security_groups ORDER BY security_group_id")
            .fetch_all(&self.pool)
            .await
            .map_err(db_error("Cannot list port security groups"))?;
        for row in rows {
            groups
                .entry(row.get("port_id"))
                .or_default()
                .push(row.get("security_group_id"));
        }
        for port in ports {
            let key = port.id.to_string();
            let mut mine = ips.remove(&key).unwrap_or_default();
            mine.sort_by_key(|(position, _)| *position);
            port.fixed_ips = mine.into_iter().map(|(_, f)| f).collect();
            port.security_groups = groups
                .remove(&key)
                .unwrap_or_default()
                .iter()
                .map(|g| parse_id(g))
                .collect::<Result<_>>()?;
        }
        Ok(())
    }

    /// Deletes a port and its allocations.
    pub async fn delete_port(&self, id: PortId) -> Result<()> {
        let done = sqlx::query("DELETE FROM ports WHERE id = ?")
            .bind(id.to_string())
            .execute(&self.pool)
            .await
            .map_err(db_error("Cannot delete a port"))?;
        if done.rows_affected() == 0 {
            return Err(Error::not_found("Port", id));
        }
        Ok(())
    }
}
