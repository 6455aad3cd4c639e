//! Networks and subnets (see [`domain::network`]).

use domain::network::{HostRoute, IpRange, Network, Subnet};
use domain::{Error, NetworkId, Result, SubnetId};
use sqlx::sqlite::SqliteRow;
use sqlx::Row;

use crate::{db_error, parse_id, parse_ts, ts, Store};

fn network_from_row(row: &SqliteRow) -> Result<Network> {
    Ok(Network {
        id: parse_id(row.get::<&str, _>("id"))?,
        project_id: parse_id(row.get::<&str, _>("project_id"))?,
        name: row.get("name"),
        description: row.get("description"),
        admin_state_up: row.get("admin_state_up"),
        shared: row.get("shared"),
        external: row.get("external"),
        mtu: row.get::<i64, _>("mtu") as u32,
        port_security_enabled: row.get("port_security_enabled"),
        revision_number: row.get("revision_number"),
        created_at: parse_ts(row.get("created_at"))?,
        updated_at: parse_ts(row.get("updated_at"))?,
    })
}

pub(crate) fn json_column<T: serde::de::DeserializeOwned>(row: &SqliteRow, col: &str) -> Result<T> {
    serde_json::from_str(row.get::<&str, _>(col))
        .map_err(|e| Error::internal(format!("Corrupt {col} in the database: {e}")))
}

pub(crate) fn to_json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("plain data serializes")
}

fn subnet_from_row(row: &SqliteRow) -> Result<Subnet> {
    let corrupt =
        |what: &str, e: String| Error::internal(format!("Corrupt {what} in the database: {e}"));
    Ok(Subnet {
        id: parse_id(row.get::<&str, _>("id"))?,
        network_id: parse_id(row.get::<&str, _>("network_id"))?,
        project_id: parse_id(row.get::<&str, _>("project_id"))?,
        name: row.get("name"),
        description: row.get("description"),
        cidr: row
            .get::<&str, _>("cidr")
            .parse()
            .map_err(|e: ipnet::AddrParseError| corrupt("cidr", e.to_string()))?,
        gateway_ip: row
            .get::<Option<&str>, _>("gateway_ip")
            .map(|g| {
                g.parse()
                    .map_err(|e: std::net::AddrParseError| corrupt("gateway_ip", e.to_string()))
            })
            .transpose()?,
        enable_dhcp: row.get("enable_dhcp"),
        allocation_pools: json_column::<Vec<IpRange>>(row, "allocation_pools")?,
        dns_nameservers: json_column(row, "dns_nameservers")?,
        host_routes: json_column::<Vec<HostRoute>>(row, "host_routes")?,
        revision_number: row.get("revision_number"),
        created_at: parse_ts(row.get("created_at"))?,
        updated_at: parse_ts(row.get("updated_at"))?,
    })
}

impl Store {
    pub async fn insert_network(&self, n: &Network) -> Result<()> {
        sqlx::query(
            "INSERT INTO networks (id, project_id, name, description, admin_state_up, shared, external, \
             mtu, port_security_enabled, revision_number, created_at, updated_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(n.id.to_string())
        .bind(n.project_id.to_string())
        .bind(&n.name)
        .bind(&n.description)
        .bind(n.admin_state_up)
        .bind(n.shared)
        .bind(n.external)
        .bind(i64::from(n.mtu))
        .bind(n.port_security_enabled)
        .bind(n.revision_number)
        .bind(ts(n.created_at))
        .bind(ts(n.updated_at))
        .execute(&self.pool)
        .await
        .map_err(db_error("Cannot store a network"))?;
        Ok(())
    }

    pub async fn network(&self, id: NetworkId) -> Result<Network> {
        let row = sqlx::query("SELECT * FROM networks WHERE id = ?")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error("Cannot read a network"))?
            .ok_or_else(|| Error::not_found("Network", id))?;
        network_from_row(&row)
    }

    /// Every network, oldest first.
    pub async fn networks(&self) -> Result<Vec<Network>> {
        let rows = sqlx::query("SELECT * FROM networks ORDER BY created_at, id")
            .fetch_all(&self.pool)
            .await
            .map_err(db_error("Cannot list networks"))?;
        rows.iter().map(network_from_row).collect()
    }

    /// Writes `next` over the network if it is still at `prev`'s revision
    /// (`Conflict` otherwise); the revision goes up by one.
    pub async fn update_network(&self, prev: &Network, next: &Network) -> Result<Network> {
        let done = sqlx::query(
            "UPDATE networks SET name = ?, description = ?, admin_state_up = ?, shared = ?, \
             external = ?, mtu = ?, port_security_enabled = ?, revision_number = revision_number + 1, \
             updated_at = ? WHERE id = ? AND revision_number = ?",
        )
        .bind(&next.name)
        .bind(&next.description)
        .bind(next.admin_state_up)
        .bind(next.shared)
        .bind(next.external)
        .bind(i64::from(next.mtu))
        .bind(next.port_security_enabled)
        .bind(ts(next.updated_at))
        .bind(prev.id.to_string())
        .bind(prev.revision_number)
        .execute(&self.pool)
        .await
        .map_err(db_error("Cannot update a network"))?;
        if done.rows_affected() == 0 {
            return Err(Error::conflict(format!(
                "Network {} changed during the update; retry.",
                prev.id
            )));
        }
        self.network(prev.id).await
    }

    /// Deletes a network and its subnets (the caller has checked that no port remains).
    pub async fn delete_network(&self, id: NetworkId) -> Result<()> {
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(db_error("Cannot delete a network"))?;
        sqlx::query("DELETE FROM subnets WHERE network_id = ?")
            .bind(id.to_string())
            .execute(&mut *tx)
            .await
            .map_err(db_error("Cannot delete a network's subnets"))?;
        let done = sqlx::query("DELETE FROM networks WHERE id = ?")
            .bind(id.to_string())
            .execute(&mut *tx)
            .await
            .map_err(db_error("Cannot delete a network (are there ports on it?)"))?;
        if done.rows_affected() == 0 {
            return Err(Error::not_found("Network", id));
        }
        tx.commit()
            .await
            .map_err(db_error("Cannot delete a network"))?;
        Ok(())
    }

    pub async fn insert_subnet(&self, s: &Subnet) -> Result<()> {
        sqlx::query(
            "INSERT INTO subnets (id, network_id, project_id, name, description, cidr, gateway_ip, \
             enable_dhcp, allocation_pools, dns_nameservers, host_routes, revision_number, created_at, \
             updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(s.id.to_string())
        .bind(s.network_id.to_string())
        .bind(s.project_id.to_string())
        .bind(&s.name)
        .bind(&s.description)
        .bind(s.cidr.to_string())
        .bind(s.gateway_ip.map(|g| g.to_string()))
        .bind(s.enable_dhcp)
        .bind(to_json(&s.allocation_pools))
        .bind(to_json(&s.dns_nameservers))
        .bind(to_json(&s.host_routes))
        .bind(s.revision_number)
        .bind(ts(s.created_at))
        .bind(ts(s.updated_at))
        .execute(&self.pool)
        .await
        .map_err(db_error("Cannot store a subnet"))?;
        Ok(())
    }

    pub async fn subnet(&self, id: SubnetId) -> Result<Subnet> {
        let row = sqlx::query("SELECT * FROM subnets WHERE id = ?")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error("Cannot read a subnet"))?
            .ok_or_else(|| Error::not_found("Subnet", id))?;
        subnet_from_row(&row)
    }

    /// Every subnet, oldest first.
    pub async fn subnets(&self) -> Result<Vec<Subnet>> {
        let rows = sqlx::query("SELECT * FROM subnets ORDER BY created_at, id")
            .fetch_all(&self.pool)
            .await
            .map_err(db_error("Cannot list subnets"))?;
        rows.iter().map(subnet_from_row).collect()
    }

    /// The subnets of one network, oldest first.
    pub async fn network_subnets(&self, network: NetworkId) -> Result<Vec<Subnet>> {
        let rows =
            sqlx::query("SELECT * FROM subnets WHERE network_id = ? ORDER BY created_at, id")
                .bind(network.to_string())
                .fetch_all(&self.pool)
                .await
                .map_err(db_error("Cannot list subnets"))?;
        rows.iter().map(subnet_from_row).collect()
    }

    /// Writes `next` over the subnet if it is still at `prev`'s revision.
    pub async fn update_subnet(&self, prev: &Subnet, next: &Subnet) -> Result<Subnet> {
        let done = sqlx::query(
            "UPDATE subnets SET name = ?, description = ?, gateway_ip = ?, enable_dhcp = ?, \
             allocation_pools = ?, dns_nameservers = ?, host_routes = ?, \
             revision_number = revision_number + 1, updated_at = ? WHERE id = ? AND revision_number = ?",
        )
        .bind(&next.name)
        .bind(&next.description)
        .bind(next.gateway_ip.map(|g| g.to_string()))
        .bind(next.enable_dhcp)
        .bind(to_json(&next.allocation_pools))
        .bind(to_json(&next.dns_nameservers))
        .bind(to_json(&next.host_routes))
        .bind(ts(next.updated_at))
        .bind(prev.id.to_string())
        .bind(prev.revision_number)
        .execute(&self.pool)
        .await
        .map_err(db_error("Cannot update a subnet"))?;
        if done.rows_affected() == 0 {
            return Err(Error::conflict(format!(
                "Subnet {} changed during the update; retry.",
                prev.id
            )));
        }
        self.subnet(prev.id).await
    }

    /// Deletes a subnet with no allocation left on it (`Conflict` otherwise).
    pub async fn delete_subnet(&self, id: SubnetId) -> Result<()> {
        let done = sqlx::query(
            "DELETE FROM subnets WHERE id = ? \
             AND NOT EXISTS (SELECT 1 FROM ip_allocations WHERE subnet_id = subnets.id)",
        )
        .bind(id.to_string())
        .execute(&self.pool)
        .await
        .map_err(db_error("Cannot delete a subnet"))?;
        if done.rows_affected() == 0 {
            self.subnet(id).await?;
            return Err(Error::conflict(format!(
                "Unable to complete operation on subnet {id}: One or more ports have an IP allocation from this subnet."
            )));
        }
        Ok(())
    }
}
