//! Routers and floating IPs (see [`domain::network::Router`]).

use domain::network::{FloatingIp, Router, RouterGateway};
use domain::{Error, FloatingIpId, Result, RouterId};
use sqlx::sqlite::SqliteRow;
use sqlx::Row;

use crate::networks::{json_column, to_json};
use crate::{db_error, parse_id, parse_ts, ts, Store};

fn router_from_row(row: &SqliteRow) -> Result<Router> {
    let gateway = match (
        row.get::<Option<&str>, _>("gateway_network_id"),
        row.get::<Option<&str>, _>("gateway_port_id"),
    ) {
        (Some(network), Some(port)) => Some(RouterGateway {
            network_id: parse_id(network)?,
            port_id: parse_id(port)?,
            enable_snat: row.get("enable_snat"),
        }),
        _ => None,
    };
    Ok(Router {
        id: parse_id(row.get::<&str, _>("id"))?,
        project_id: parse_id(row.get::<&str, _>("project_id"))?,
        name: row.get("name"),
        description: row.get("description"),
        admin_state_up: row.get("admin_state_up"),
        gateway,
        routes: json_column(row, "routes")?,
        revision_number: row.get("revision_number"),
        created_at: parse_ts(row.get("created_at"))?,
        updated_at: parse_ts(row.get("updated_at"))?,
    })
}

fn floating_from_row(row: &SqliteRow) -> Result<FloatingIp> {
    let ip = |col: &str| -> Result<Option<std::net::Ipv4Addr>> {
        row.get::<Option<&str>, _>(col)
            .map(|t| {
                t.parse()
                    .map_err(|_| Error::internal(format!("Corrupt {col} in the database.")))
            })
            .transpose()
    };
    Ok(FloatingIp {
        id: parse_id(row.get::<&str, _>("id"))?,
        project_id: parse_id(row.get::<&str, _>("project_id"))?,
        description: row.get("description"),
        floating_network_id: parse_id(row.get::<&str, _>("floating_network_id"))?,
        floating_ip_address: ip("floating_ip_address")?
            .ok_or_else(|| Error::internal("Corrupt floating_ip_address in the database."))?,
        floating_port_id: parse_id(row.get::<&str, _>("floating_port_id"))?,
        port_id: row
            .get::<Option<&str>, _>("port_id")
            .map(parse_id)
            .transpose()?,
        fixed_ip_address: ip("fixed_ip_address")?,
        router_id: row
            .get::<Option<&str>, _>("router_id")
            .map(parse_id)
            .transpose()?,
        revision_number: row.get("revision_number"),
        created_at: parse_ts(row.get("created_at"))?,
        updated_at: parse_ts(row.get("updated_at"))?,
    })
}

impl Store {
    pub async fn insert_router(&self, r: &Router) -> Result<()> {
        sqlx::query(
            "INSERT INTO routers (id, project_id, name, description, admin_state_up, gateway_network_id, \
             gateway_port_id, enable_snat, routes, revision_number, created_at, updated_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(r.id.to_string())
        .bind(r.project_id.to_string())
        .bind(&r.name)
        .bind(&r.description)
        .bind(r.admin_state_up)
        .bind(r.gateway.map(|g| g.network_id.to_string()))
        .bind(r.gateway.map(|g| g.port_id.to_string()))
        .bind(r.gateway.is_none_or(|g| g.enable_snat))
        .bind(to_json(&r.routes))
        .bind(r.revision_number)
        .bind(ts(r.created_at))
        .bind(ts(r.updated_at))
        .execute(&self.pool)
        .await
        .map_err(db_error("Cannot store a router"))?;
        Ok(())
    }

    pub async fn router(&self, id: RouterId) -> Result<Router> {
        let row = sqlx::query("SELECT * FROM routers WHERE id = ?")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error("Cannot read a router"))?
            .ok_or_else(|| Error::not_found("Router", id))?;
        router_from_row(&row)
    }

    pub async fn routers(&self) -> Result<Vec<Router>> {
        let rows = sqlx::query("SELECT * FROM routers ORDER BY created_at, id")
            .fetch_all(&self.pool)
            .await
            .map_err(db_error("Cannot list routers"))?;
        rows.iter().map(router_from_row).collect()
    }

    /// Writes `next` over the router if it is still at `prev`'s revision.
    pub async fn update_router(&self, prev: &Router, next: &Router) -> Result<Router> {
        let done = sqlx::query(
            "UPDATE routers SET name = ?, description = ?, admin_state_up = ?, gateway_network_id = ?, \
             gateway_port_id = ?, enable_snat = ?, routes = ?, revision_number = revision_number + 1, \
             updated_at = ? WHERE id = ? AND revision_number = ?",
        )
        .bind(&next.name)
        .bind(&next.description)
        .bind(next.admin_state_up)
        .bind(next.gateway.map(|g| g.network_id.to_string()))
        .bind(next.gateway.map(|g| g.port_id.to_string()))
        .bind(next.gateway.is_none_or(|g| g.enable_snat))
        .bind(to_json(&next.routes))
        .bind(ts(next.updated_at))
        .bind(prev.id.to_string())
        .bind(prev.revision_number)
        .execute(&self.pool)
        .await
        .map_err(db_error("Cannot update a router"))?;
        if done.rows_affected() == 0 {
            return Err(Error::conflict(format!(
                "Router {} changed during the update; retry.",
                prev.id
            )));
        }
        self.router(prev.id).await
    }

    pub async fn delete_router(&self, id: RouterId) -> Result<()> {
        let done = sqlx::query("DELETE FROM routers WHERE id = ?")
            .bind(id.to_string())
            .execute(&self.pool)
            .await
            .map_err(db_error("Cannot delete a router"))?;
        if done.rows_affected() == 0 {
            return Err(Error::not_found("Router", id));
        }
        Ok(())
    }

    pub async fn insert_floating_ip(&self, f: &FloatingIp) -> Result<()> {
        sqlx::query(
            "INSERT INTO floating_ips (id, project_id, description, floating_network_id, floating_ip_address, \
             floating_port_id, port_id, fixed_ip_address, router_id, revision_number, created_at, updated_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(f.id.to_string())
        .bind(f.project_id.to_string())
        .bind(&f.description)
        .bind(f.floating_network_id.to_string())
        .bind(f.floating_ip_address.to_string())
        .bind(f.floating_port_id.to_string())
        .bind(f.port_id.map(|p| p.to_string()))
        .bind(f.fixed_ip_address.map(|i| i.to_string()))
        .bind(f.router_id.map(|r| r.to_string()))
        .bind(f.revision_number)
        .bind(ts(f.created_at))
        .bind(ts(f.updated_at))
        .execute(&self.pool)
        .await
        .map_err(db_error("Floating IP for that fixed address"))?;
        Ok(())
    }

    pub async fn floating_ip(&self, id: FloatingIpId) -> Result<FloatingIp> {
        let row = sqlx::query("SELECT * FROM floating_ips WHERE id = ?")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error("Cannot read a floating IP"))?
            .ok_or_else(|| Error::not_found("Floating IP", id))?;
        floating_from_row(&row)
    }

    pub async fn floating_ips(&self) -> Result<Vec<FloatingIp>> {
        let rows = sqlx::query("SELECT * FROM floating_ips ORDER BY created_at, id")
            .fetch_all(&self.pool)
            .await
            .map_err(db_error("Cannot list floating IPs"))?;
        rows.iter().map(floating_from_row).collect()
    }

    /// Writes `next`'s association and description if it is still at `prev`'s revision;
    /// a fixed address that already has a floating IP is a `Conflict`.
    pub async fn update_floating_ip(
        &self,
        prev: &FloatingIp,
        next: &FloatingIp,
    ) -> Result<FloatingIp> {
        let done = sqlx::query(
            "UPDATE floating_ips SET description = ?, port_id = ?, fixed_ip_address = ?, router_id = ?, \
             revision_number = revision_number + 1, updated_at = ? WHERE id = ? AND revision_number = ?",
        )
        .bind(&next.description)
        .bind(next.port_id.map(|p| p.to_string()))
        .bind(next.fixed_ip_address.map(|i| i.to_string()))
        .bind(next.router_id.map(|r| r.to_string()))
        .bind(ts(next.updated_at))
        .bind(prev.id.to_string())
        .bind(prev.revision_number)
        .execute(&self.pool)
        .await
        .map_err(db_error("Floating IP for that fixed address"))?;
        if done.rows_affected() == 0 {
            return Err(Error::conflict(format!(
                "Floating IP {} changed during the update; retry.",
                prev.id
            )));
        }
        self.floating_ip(prev.id).await
    }

    pub async fn delete_floating_ip(&self, id: FloatingIpId) -> Result<()> {
        let done = sqlx::query("DELETE FROM floating_ips WHERE id = ?")
            .bind(id.to_string())
            .execute(&self.pool)
            .await
            .map_err(db_error("Cannot delete a floating IP"))?;
        if done.rows_affected() == 0 {
            return Err(Error::not_found("Floating IP", id));
        }
        Ok(())
    }
}
