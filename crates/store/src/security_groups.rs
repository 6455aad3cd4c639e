//! Security groups and their rules.

use domain::network::{Direction, Ethertype, RuleProtocol, SecurityGroup, SecurityGroupRule};
use domain::{Error, ProjectId, Result, SecurityGroupId, SecurityGroupRuleId};
use sqlx::sqlite::SqliteRow;
use sqlx::Row;

use crate::{db_error, parse_id, parse_ts, ts, Store};

fn group_from_row(row: &SqliteRow) -> Result<SecurityGroup> {
    Ok(SecurityGroup {
        id: parse_id(row.get::<&str, _>("id"))?,
        project_id: parse_id(row.get::<&str, _>("project_id"))?,
        name: row.get("name"),
        description: row.get("description"),
        stateful: row.get("stateful"),
        is_default: row.get("is_default"),
        revision_number: row.get("revision_number"),
        created_at: parse_ts(row.get("created_at"))?,
        updated_at: parse_ts(row.get("updated_at"))?,
    })
}

fn rule_from_row(row: &SqliteRow) -> Result<SecurityGroupRule> {
    let corrupt = |what: &str| Error::internal(format!("Corrupt {what} in the database."));
    Ok(SecurityGroupRule {
        id: parse_id(row.get::<&str, _>("id"))?,
        security_group_id: parse_id(row.get::<&str, _>("security_group_id"))?,
        project_id: parse_id(row.get::<&str, _>("project_id"))?,
        direction: Direction::parse(row.get("direction"))?,
        ethertype: Ethertype::parse(row.get("ethertype"))?,
        protocol: match row.get::<Option<&str>, _>("protocol") {
            Some(p) => RuleProtocol::parse(p)?,
            None => None,
        },
        port_range_min: row
            .get::<Option<i64>, _>("port_range_min")
            .map(|v| v as u16),
        port_range_max: row
            .get::<Option<i64>, _>("port_range_max")
            .map(|v| v as u16),
        remote_ip_prefix: row
            .get::<Option<&str>, _>("remote_ip_prefix")
            .map(|p| p.parse().map_err(|_| corrupt("remote_ip_prefix")))
            .transpose()?,
        remote_group_id: row
            .get::<Option<&str>, _>("remote_group_id")
            .map(parse_id)
            .transpose()?,
        description: row.get("description"),
        revision_number: row.get("revision_number"),
        created_at: parse_ts(row.get("created_at"))?,
        updated_at: parse_ts(row.get("updated_at"))?,
    })
}

impl Store {
    /// Stores a group with its first rules. A second default group of one project is a
    /// `Conflict` (two first requests raced; the caller reads the winner's).
    pub async fn insert_security_group(
        &self,
        g: &SecurityGroup,
        rules: &[SecurityGroupRule],
    ) -> Result<()> {
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(db_error("Cannot store a security group"))?;
        sqlx::query(
            "INSERT INTO security_groups (id, project_id, name, description, stateful, is_default, \
             revision_number, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(g.id.to_string())
        .bind(g.project_id.to_string())
        .bind(&g.name)
        .bind(&g.description)
        .bind(g.stateful)
        .bind(g.is_default)
        .bind(g.revision_number)
        .bind(ts(g.created_at))
        .bind(ts(g.updated_at))
        .execute(&mut *tx)
        .await
        .map_err(db_error("Security group"))?;
        for rule in rules {
            insert_rule(&mut tx, rule).await?;
        }
        tx.commit()
            .await
            .map_err(db_error("Cannot store a security group"))?;
        Ok(())
    }

    pub async fn security_group(&self, id: SecurityGroupId) -> Result<SecurityGroup> {
        let row = sqlx::query("SELECT * FROM security_groups WHERE id = ?")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error("Cannot read a security group"))?
            .ok_or_else(|| Error::not_found("Security group", id))?;
        group_from_row(&row)
    }

    pub async fn default_security_group(
        &self,
        project: ProjectId,
    ) -> Result<Option<SecurityGroup>> {
        let row =
            sqlx::query("SELECT * FROM security_groups WHERE project_id = ? AND is_default = 1")
                .bind(project.to_string())
                .fetch_optional(&self.pool)
                .await
                .map_err(db_error("Cannot read a security group"))?;
        row.as_ref().map(group_from_row).transpose()
    }

    /// Every group, oldest first.
    pub async fn security_groups(&self) -> Result<Vec<SecurityGroup>> {
        let rows = sqlx::query("SELECT * FROM security_groups ORDER BY created_at, id")
            .fetch_all(&self.pool)
            .await
            .map_err(db_error("Cannot list security groups"))?;
        rows.iter().map(group_from_row).collect()
    }

    pub async fn update_security_group(
        &self,
        prev: &SecurityGroup,
        next: &SecurityGroup,
    ) -> Result<SecurityGroup> {
        let done = sqlx::query(
            "UPDATE security_groups SET name = ?, description = ?, stateful = ?, \
             revision_number = revision_number + 1, updated_at = ? WHERE id = ? AND revision_number = ?",
        )
        .bind(&next.name)
        .bind(&next.description)
        .bind(next.stateful)
        .bind(ts(next.updated_at))
        .bind(prev.id.to_string())
        .bind(prev.revision_number)
        .execute(&self.pool)
        .await
        .map_err(db_error("Cannot update a security group"))?;
        if done.rows_affected() == 0 {
            return Err(Error::conflict(format!(
                "Security group {} changed during the update; retry.",
                prev.id
            )));
        }
        self.security_group(prev.id).await
    }

    /// Deletes a group and its rules, unless a port or another group's rule uses it
    /// (`Conflict`, Neutron's SecurityGroupInUse).
    pub async fn delete_security_group(&self, id: SecurityGroupId) -> Result<()> {
        let done = sqlx::query(
            "DELETE FROM security_groups WHERE id = ? \
             AND NOT EXISTS (SELECT 1 FROM port_security_groups WHERE security_group_id = security_groups.id) \
             AND NOT EXISTS (SELECT 1 FROM security_group_rules r WHERE r.remote_group_id = security_groups.id \
                             AND r.security_group_id != security_groups.id)",
        )
        .bind(id.to_string())
        .execute(&self.pool)
        .await
        .map_err(db_error("Cannot delete a security group"))?;
        if done.rows_affected() == 0 {
            self.security_group(id).await?;
            return Err(Error::conflict(format!("Security Group {id} in use.")));
        }
        Ok(())
    }

    pub async fn insert_security_group_rule(&self, rule: &SecurityGroupRule) -> Result<()> {
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(db_error("Cannot store a rule"))?;
        insert_rule(&mut tx, rule).await?;
        sqlx::query(
            "UPDATE security_groups SET revision_number = revision_number + 1 WHERE id = ?",
        )
        .bind(rule.security_group_id.to_string())
        .execute(&mut *tx)
        .await
        .map_err(db_error("Cannot store a rule"))?;
        tx.commit().await.map_err(db_error("Cannot store a rule"))?;
        Ok(())
    }

    pub async fn security_group_rule(&self, id: SecurityGroupRuleId) -> Result<SecurityGroupRule> {
        let row = sqlx::query("SELECT * FROM security_group_rules WHERE id = ?")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error("Cannot read a rule"))?
            .ok_or_else(|| Error::not_found("Security group rule", id))?;
        rule_from_row(&row)
    }

    /// Every rule, oldest first.
    pub async fn security_group_rules(&self) -> Result<Vec<SecurityGroupRule>> {
        let rows = sqlx::query("SELECT * FROM security_group_rules ORDER BY created_at, id")
            .fetch_all(&self.pool)
            .await
            .map_err(db_error("Cannot list rules"))?;
        rows.iter().map(rule_from_row).collect()
    }

    pub async fn delete_security_group_rule(&self, rule: &SecurityGroupRule) -> Result<()> {
        let done = sqlx::query("DELETE FROM security_group_rules WHERE id = ?")
            .bind(rule.id.to_string())
            .execute(&self.pool)
            .await
            .map_err(db_error("Cannot delete a rule"))?;
        if done.rows_affected() == 0 {
            return Err(Error::not_found("Security group rule", rule.id));
        }
        sqlx::query(
            "UPDATE security_groups SET revision_number = revision_number + 1 WHERE id = ?",
        )
        .bind(rule.security_group_id.to_string())
        .execute(&self.pool)
        .await
        .map_err(db_error("Cannot delete a rule"))?;
        Ok(())
    }
}

async fn insert_rule(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    r: &SecurityGroupRule,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO security_group_rules (id, security_group_id, project_id, direction, ethertype, \
         protocol, port_range_min, port_range_max, remote_ip_prefix, remote_group_id, description, \
         revision_number, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(r.id.to_string())
    .bind(r.security_group_id.to_string())
    .bind(r.project_id.to_string())
    .bind(r.direction.as_str())
    .bind(r.ethertype.as_str())
    .bind(r.protocol.map(|p| p.as_string()))
    .bind(r.port_range_min.map(i64::from))
    .bind(r.port_range_max.map(i64::from))
    .bind(r.remote_ip_prefix.map(|p| p.to_string()))
    .bind(r.remote_group_id.map(|g| g.to_string()))
    .bind(&r.description)
    .bind(r.revision_number)
    .bind(ts(r.created_at))
    .bind(ts(r.updated_at))
    .execute(&mut **tx)
    .await
    .map_err(db_error("Cannot store a rule"))?;
    Ok(())
}
