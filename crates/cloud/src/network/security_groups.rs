//! Security groups and rules; each project's `default` group, made on first use.

use chrono::Utc;
use domain::identity::{Caller, Role};
use domain::network::{
    default_group_rules, new_group_rules, validate_text, Direction, Ethertype, RuleProtocol,
    SecurityGroup, SecurityGroupRule,
};
use domain::{Error, ErrorKind, ProjectId, Result, SecurityGroupId, SecurityGroupRuleId};
use ipnet::IpNet;

use super::networks::owner_project;
use crate::Cloud;

/// What `POST /v2.0/security-groups` asks for.
#[derive(Debug, Clone, Default)]
pub struct NewSecurityGroup {
    pub name: String,
    pub description: String,
    pub stateful: Option<bool>,
    pub project_id: Option<String>,
}

/// What `POST /v2.0/security-group-rules` asks for.
#[derive(Debug, Clone, Default)]
pub struct NewSecurityGroupRule {
    pub security_group_id: String,
    pub direction: String,
    pub ethertype: Option<String>,
    pub protocol: Option<String>,
    pub port_range_min: Option<u16>,
    pub port_range_max: Option<u16>,
    pub remote_ip_prefix: Option<String>,
    pub remote_group_id: Option<String>,
    pub description: String,
    pub project_id: Option<String>,
}

impl Cloud {
    /// The project's `default` group, made (with Neutron's rules) if it has none yet.
    pub(crate) async fn default_security_group(&self, project: ProjectId) -> Result<SecurityGroup> {
        if let Some(group) = self.store.default_security_group(project).await? {
            return Ok(group);
        }
        let now = Utc::now();
        let group = SecurityGroup {
            id: SecurityGroupId::new(),
            project_id: project,
            name: "default".into(),
            description: "Default security group".into(),
            stateful: true,
            is_default: true,
            revision_number: 1,
            created_at: now,
            updated_at: now,
        };
        match self
            .store
            .insert_security_group(&group, &default_group_rules(&group))
            .await
        {
            Ok(()) => Ok(group),
            // Another request made it first.
            Err(e) if e.kind() == ErrorKind::Conflict => {
                self.store.default_security_group(project).await?.ok_or(e)
            }
            Err(e) => Err(e),
        }
    }

    /// A group the caller may see (by id, or by name within its project), or 404.
    pub async fn security_group(&self, caller: &Caller, id_or_name: &str) -> Result<SecurityGroup> {
        let not_found = || Error::not_found("Security group", id_or_name);
        if let Ok(id) = id_or_name.parse::<SecurityGroupId>() {
            let group = self
                .store
                .security_group(id)
                .await
                .map_err(|_| not_found())?;
            return if caller.can_see_project(group.project_id) {
                Ok(group)
            } else {
                Err(not_found())
            };
        }
        let project = caller.project()?;
        if id_or_name == "default" {
            return self.default_security_group(project).await;
        }
        let mut named: Vec<SecurityGroup> = self
            .store
            .security_groups()
            .await?
            .into_iter()
            .filter(|g| g.project_id == project && g.name == id_or_name)
            .collect();
        match named.len() {
            1 => Ok(named.remove(0)),
            0 => Err(not_found()),
            _ => Err(Error::conflict(format!(
                "Multiple security_group matches found for name '{id_or_name}', use an ID to be more specific."
            ))),
        }
    }

    /// The caller's groups (every project's for admins); its default group is made
    /// first if missing, as Neutron does on a project's first list.
    pub async fn security_groups(&self, caller: &Caller) -> Result<Vec<SecurityGroup>> {
        caller.require(Role::Reader, "list security groups")?;
        if let Some(project) = caller.project_id {
            self.default_security_group(project).await?;
        }
        Ok(self
            .store
            .security_groups()
            .await?
            .into_iter()
            .filter(|g| caller.can_see_project(g.project_id))
            .collect())
    }

    pub async fn create_security_group(
        &self,
        caller: &Caller,
        new: NewSecurityGroup,
    ) -> Result<SecurityGroup> {
        caller.require(Role::Member, "create security groups")?;
        validate_text("name", &new.name)?;
        validate_text("description", &new.description)?;
        if new.name == "default" {
            return Err(Error::conflict("Default security group already exists."));
        }
        let project_id = owner_project(caller, new.project_id.as_deref())?;
        self.default_security_group(project_id).await?;
        self.check_network_quota(project_id, "security_group")
            .await?;
        let now = Utc::now();
        let group = SecurityGroup {
            id: SecurityGroupId::new(),
            project_id,
            name: new.name,
            description: new.description,
            stateful: new.stateful.unwrap_or(true),
            is_default: false,
            revision_number: 1,
            created_at: now,
            updated_at: now,
        };
        self.store
            .insert_security_group(&group, &new_group_rules(&group))
            .await?;
        Ok(group)
    }

    pub async fn update_security_group(
        &self,
        caller: &Caller,
        id: &str,
        name: Option<String>,
        description: Option<String>,
    ) -> Result<SecurityGroup> {
        caller.require(Role::Member, "update security groups")?;
        let prev = self.security_group(caller, id).await?;
        let mut next = prev.clone();
        if let Some(name) = name {
            validate_text("name", &name)?;
            if prev.is_default && name != "default" {
                return Err(Error::conflict(
                    "Insufficient rights for removing default security group.",
                ));
            }
            next.name = name;
        }
        if let Some(description) = description {
            validate_text("description", &description)?;
            next.description = description;
        }
        next.updated_at = Utc::now();
        self.store.update_security_group(&prev, &next).await
    }

    pub async fn delete_security_group(&self, caller: &Caller, id: &str) -> Result<()> {
        caller.require(Role::Member, "delete security groups")?;
        let group = self.security_group(caller, id).await?;
        if group.is_default && !caller.is_admin() {
            return Err(Error::conflict(
                "Insufficient rights for removing default security group.",
            ));
        }
        self.store.delete_security_group(group.id).await?;
        self.sync_network().await;
        Ok(())
    }

    /// Rules of the groups the caller may see.
    pub async fn security_group_rules(&self, caller: &Caller) -> Result<Vec<SecurityGroupRule>> {
        caller.require(Role::Reader, "list security group rules")?;
        if let Some(project) = caller.project_id {
            self.default_security_group(project).await?;
        }
        Ok(self
            .store
            .security_group_rules()
            .await?
            .into_iter()
            .filter(|r| caller.can_see_project(r.project_id))
            .collect())
    }

    pub async fn security_group_rule(
        &self,
        caller: &Caller,
        id: &str,
    ) -> Result<SecurityGroupRule> {
        let not_found = || Error::not_found("Security group rule", id);
        let rid: SecurityGroupRuleId = id.parse().map_err(|_| not_found())?;
        let rule = self
            .store
            .security_group_rule(rid)
            .await
            .map_err(|_| not_found())?;
        if !caller.can_see_project(rule.project_id) {
            return Err(not_found());
        }
        Ok(rule)
    }

    pub async fn create_security_group_rule(
        &self,
        caller: &Caller,
        new: NewSecurityGroupRule,
    ) -> Result<SecurityGroupRule> {
        caller.require(Role::Member, "create security group rules")?;
        let group = self.security_group(caller, &new.security_group_id).await?;
        if let Some(p) = new.project_id.as_deref() {
            if p != group.project_id.to_string() && !caller.is_admin() {
                return Err(Error::forbidden(
                    "(rule:create_security_group_rule) is disallowed by policy",
                ));
            }
        }
        let ethertype = Ethertype::parse(new.ethertype.as_deref().unwrap_or("IPv4"))?;
        let remote_ip_prefix = match new.remote_ip_prefix.as_deref() {
            None => None,
            Some(text) => Some(parse_prefix(text)?),
        };
        let remote_group_id = match new.remote_group_id.as_deref() {
            None => None,
            Some(id) => Some(self.security_group(caller, id).await?.id),
        };
        let now = Utc::now();
        let rule = SecurityGroupRule {
            id: SecurityGroupRuleId::new(),
            security_group_id: group.id,
            project_id: group.project_id,
            direction: Direction::parse(&new.direction)?,
            ethertype,
            protocol: match new.protocol.as_deref() {
                Some(p) => RuleProtocol::parse(p)?,
                None => None,
            },
            port_range_min: new.port_range_min,
            port_range_max: new.port_range_max,
            remote_ip_prefix,
            remote_group_id,
            description: new.description,
            revision_number: 0,
            created_at: now,
            updated_at: now,
        };
        rule.validate()?;
        let existing = self.store.security_group_rules().await?;
        if let Some(same) = existing.iter().find(|r| r.same_as(&rule)) {
            return Err(Error::conflict(format!(
                "Security group rule already exists. Rule id is {}.",
                same.id
            )));
        }
        self.check_network_quota(group.project_id, "security_group_rule")
            .await?;
        self.store.insert_security_group_rule(&rule).await?;
        self.sync_network().await;
        Ok(rule)
    }

    pub async fn delete_security_group_rule(&self, caller: &Caller, id: &str) -> Result<()> {
        caller.require(Role::Member, "delete security group rules")?;
        let rule = self.security_group_rule(caller, id).await?;
        self.store.delete_security_group_rule(&rule).await?;
        self.sync_network().await;
        Ok(())
    }
}

/// A remote prefix as Neutron takes it: host bits are cleared (`10.0.0.1/24` means
/// `10.0.0.0/24`), a bare address is a /32 (/128).
fn parse_prefix(text: &str) -> Result<IpNet> {
    let parsed: Option<IpNet> = text
        .parse::<IpNet>()
        .ok()
        .or_else(|| text.parse::<std::net::IpAddr>().ok().map(IpNet::from));
    parsed.map(|p| p.trunc()).ok_or_else(|| {
        Error::invalid(format!(
            "Invalid input for remote_ip_prefix. Reason: '{text}' is not a valid IP prefix."
        ))
    })
}
