//! Quotas (Nova's and Cinder's, with their defaults and answers).
//!
//! Limits come from, in order: the project's own (`os-quota-sets`), the
//! `default` quota class (`os-quota-class-sets`), the built-in defaults
//! below. A negative limit is unlimited. Usage is counted from the
//! resources themselves; a create first takes a [`QuotaClaim`] (a
//! reservation counted in the same write transaction as the usage, see
//! `store::quotas`), inserts its row, then releases the claim.
//!
//! Exceeding answers as the services do: Nova 403 "Quota exceeded for
//! cores: Requested 2, but already used 3 of 4 cores"; Cinder 413.

use std::collections::BTreeMap;

use chrono::Utc;
use domain::identity::{Caller, Role};
use domain::{Error, ErrorKind, ProjectId, Result};
use store::{Amounts, QuotaScope, QuotaService, Reservation, Store};

use crate::Cloud;

pub use store::QuotaService as Service;

/// Nova's defaults (`[quota]` in nova.conf).
pub const COMPUTE_DEFAULTS: &[(&str, i64)] = &[
    ("instances", 10),
    ("cores", 20),
    ("ram", 51200),
    ("metadata_items", 128),
    ("key_pairs", 100),
    ("server_groups", 10),
    ("server_group_members", 10),
    ("injected_files", 5),
    ("injected_file_content_bytes", 10240),
    ("injected_file_path_bytes", 255),
    ("fixed_ips", -1),
    ("floating_ips", -1),
    ("security_groups", -1),
    ("security_group_rules", -1),
];

/// Cinder's defaults (`quota_*` in cinder.conf).
pub const VOLUME_DEFAULTS: &[(&str, i64)] = &[
    ("volumes", 10),
    ("snapshots", 10),
    ("gigabytes", 1000),
    ("backups", 10),
    ("backup_gigabytes", 1000),
    ("per_volume_gigabytes", -1),
    ("groups", 10),
];

/// Glance's per-project limits (`image_count_total`, `image_size_total`
/// and `image_stage_total` in MiB); negative: unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageQuota {
    pub count_total: i64,
    pub size_total_mib: i64,
    /// Bytes of uploads under way (in the staging area) at once.
    pub stage_total_mib: i64,
}

impl Default for ImageQuota {
    fn default() -> Self {
        ImageQuota {
            count_total: -1,
            size_total_mib: -1,
            stage_total_mib: -1,
        }
    }
}

fn glance_over_limit(resource: &str, limit: i64, usage: i64, delta: i64) -> Error {
    Error::new(
        ErrorKind::TooLarge,
        format!("Resource {resource} is over limit of {limit} due to current usage {usage} and delta {delta}"),
    )
}

/// How long a claim holds if its request never releases it (a crash).
const CLAIM_TTL: chrono::Duration = chrono::Duration::minutes(10);

fn defaults(service: QuotaService) -> Amounts {
    let table = match service {
        QuotaService::Compute => COMPUTE_DEFAULTS,
        QuotaService::Volume => VOLUME_DEFAULTS,
    };
    table.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

/// One resource's limit and usage (`os-quota-sets/{id}/detail`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaDetail {
    pub limit: i64,
    pub in_use: i64,
    pub reserved: i64,
}

/// A reservation a create holds until its row exists. Dropping it
/// releases it in the background; [`QuotaClaim::release`] does it now.
#[derive(Debug)]
pub struct QuotaClaim {
    store: Store,
    id: Option<String>,
}

impl QuotaClaim {
    pub async fn release(mut self) {
        if let Some(id) = self.id.take() {
            if let Err(e) = self.store.release_quota(&id).await {
                tracing::warn!(error = %e, "quota reservation not released; it expires");
            }
        }
    }
}

impl Drop for QuotaClaim {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            let store = self.store.clone();
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(async move {
                    let _ = store.release_quota(&id).await;
                });
            }
        }
    }
}

fn nova_exceeded(resource: &str, limit: i64, in_use: i64, requested: i64) -> Error {
    Error::forbidden(format!(
        "Quota exceeded for {resource}: Requested {requested}, but already used {in_use} of {limit} {resource}"
    ))
}

fn cinder_exceeded(resource: &str, limit: i64, in_use: i64, requested: i64) -> Error {
    let message = match resource {
        "gigabytes" | "backup_gigabytes" => format!(
            "VolumeSizeExceedsAvailableQuota: Requested volume or snapshot exceeds allowed {resource} quota. Requested {requested}G, quota is {limit}G and {in_use}G has been consumed."
        ),
        "snapshots" => format!(
            "SnapshotLimitExceeded: Maximum number of snapshots allowed ({limit}) exceeded"
        ),
        _ => format!(
            "VolumeLimitExceeded: Maximum number of volumes allowed ({limit}) exceeded for quota '{resource}'."
        ),
    };
    Error::new(ErrorKind::TooLarge, message)
}

impl Cloud {
    /// Which project a quota request is about; a non-admin may only ask
    /// about its own (`PROJECT_READER_OR_ADMIN`).
    fn quota_project(&self, caller: &Caller, project: &str) -> Result<ProjectId> {
        let pid: ProjectId = project
            .parse()
            .map_err(|_| Error::invalid(format!("'{project}' is not a project id.")))?;
        if caller.is_admin() || caller.project_id == Some(pid) {
            Ok(pid)
        } else {
            Err(Error::forbidden(format!(
                "Policy doesn't allow quotas of project {project} to be shown."
            )))
        }
    }

    async fn effective_limits(&self, service: QuotaService, scope: QuotaScope) -> Result<Amounts> {
        let mut limits = defaults(service);
        limits.extend(
            self.store
                .quota_limits(&QuotaScope::Class("default".into()), service)
                .await?,
        );
        if let QuotaScope::Project(_) = scope {
            limits.extend(self.store.quota_limits(&scope, service).await?);
        }
        Ok(limits)
    }

    /// A project's limits.
    pub async fn quota_limits(
        &self,
        caller: &Caller,
        service: QuotaService,
        project: &str,
    ) -> Result<Amounts> {
        let pid = self.quota_project(caller, project)?;
        self.effective_limits(service, QuotaScope::Project(pid))
            .await
    }

    /// A project's limits with what is in use and reserved.
    pub async fn quota_details(
        &self,
        caller: &Caller,
        service: QuotaService,
        project: &str,
    ) -> Result<BTreeMap<String, QuotaDetail>> {
        let pid = self.quota_project(caller, project)?;
        let limits = self
            .effective_limits(service, QuotaScope::Project(pid))
            .await?;
        let (used, held) = self.store.quota_usage(pid, service).await?;
        Ok(limits
            .into_iter()
            .map(|(k, limit)| {
                let detail = QuotaDetail {
                    limit,
                    in_use: used.get(&k).copied().unwrap_or(0),
                    reserved: held.get(&k).copied().unwrap_or(0),
                };
                (k, detail)
            })
            .collect())
    }

    /// The limits of a quota class (`default`: what projects get).
    pub async fn quota_class(
        &self,
        caller: &Caller,
        service: QuotaService,
        class: &str,
    ) -> Result<Amounts> {
        caller.require(Role::Reader, "show quota classes")?;
        let mut limits = defaults(service);
        limits.extend(
            self.store
                .quota_limits(&QuotaScope::Class(class.into()), service)
                .await?,
        );
        Ok(limits)
    }

    fn check_quota_changes(service: QuotaService, changes: &Amounts) -> Result<()> {
        let known = defaults(service);
        for (resource, limit) in changes {
            if !known.contains_key(resource) {
                return Err(Error::invalid(format!(
                    "Bad key(s) {resource} in quota_set"
                )));
            }
            if *limit < -1 {
                return Err(Error::invalid(format!(
                    "Invalid input for field/attribute {resource}. Value: {limit}. {limit} is less than the minimum of -1"
                )));
            }
        }
        Ok(())
    }

    /// A limit below what the project already uses and has reserved is
    /// refused (400) unless `force` (Nova's `os-quota-sets` update).
    async fn check_limits_cover_usage(
        &self,
        project: ProjectId,
        service: QuotaService,
        changes: &Amounts,
    ) -> Result<()> {
        let (used, reserved) = self.store.quota_usage(project, service).await?;
        for (resource, limit) in changes {
            let minimum = used.get(resource).copied().unwrap_or(0)
                + reserved.get(resource).copied().unwrap_or(0);
            if *limit >= 0 && *limit < minimum {
                return Err(Error::invalid(format!(
                    "Quota limit {limit} for {resource} must be greater than or equal to already used and reserved {minimum}."
                )));
            }
        }
        Ok(())
    }

    /// Sets a project's limits (admin); returns them all. Unless `force`,
    /// a compute limit may not go below what is in use (Nova); Cinder's
    /// limits are set as given.
    pub async fn update_quotas(
        &self,
        caller: &Caller,
        service: QuotaService,
        project: &str,
        changes: Amounts,
        force: bool,
    ) -> Result<Amounts> {
        caller.require(Role::Admin, "update quotas")?;
        let pid = self.quota_project(caller, project)?;
        Self::check_quota_changes(service, &changes)?;
        if service == QuotaService::Compute && !force {
            self.check_limits_cover_usage(pid, service, &changes)
                .await?;
        }
        self.store
            .set_quota_limits(&QuotaScope::Project(pid), service, &changes)
            .await?;
        self.effective_limits(service, QuotaScope::Project(pid))
            .await
    }

    /// Puts a project back on the default limits (admin).
    pub async fn reset_quotas(
        &self,
        caller: &Caller,
        service: QuotaService,
        project: &str,
    ) -> Result<()> {
        caller.require(Role::Admin, "delete quotas")?;
        let pid = self.quota_project(caller, project)?;
        self.store
            .delete_quota_limits(&QuotaScope::Project(pid), service)
            .await
    }

    /// Sets a quota class's limits (admin); returns them all.
    pub async fn update_quota_class(
        &self,
        caller: &Caller,
        service: QuotaService,
        class: &str,
        changes: Amounts,
    ) -> Result<Amounts> {
        caller.require(Role::Admin, "update quota classes")?;
        Self::check_quota_changes(service, &changes)?;
        self.store
            .set_quota_limits(&QuotaScope::Class(class.into()), service, &changes)
            .await?;
        self.quota_class(caller, service, class).await
    }

    async fn claim(
        &self,
        project: ProjectId,
        service: QuotaService,
        deltas: Amounts,
    ) -> Result<QuotaClaim> {
        let outcome = self
            .store
            .reserve_quota(
                project,
                service,
                &deltas,
                &defaults(service),
                Utc::now() + CLAIM_TTL,
            )
            .await?;
        match outcome {
            Reservation::Taken(id) => Ok(QuotaClaim {
                store: self.store.clone(),
                id: Some(id),
            }),
            Reservation::Exceeded {
                resource,
                limit,
                in_use,
                requested,
            } => Err(match service {
                QuotaService::Compute => nova_exceeded(&resource, limit, in_use, requested),
                QuotaService::Volume => cinder_exceeded(&resource, limit, in_use, requested),
            }),
        }
    }

    /// Nova's `key_pairs` (per user, the limit of the caller's project):
    /// 403 when `count` key pairs would be more than it allows.
    pub(crate) async fn check_keypair_quota(&self, project: ProjectId, count: i64) -> Result<()> {
        let limits = self
            .effective_limits(QuotaService::Compute, QuotaScope::Project(project))
            .await?;
        let limit = limits.get("key_pairs").copied().unwrap_or(-1);
        if limit >= 0 && count > limit {
            return Err(Error::forbidden("Quota exceeded, too many key pairs."));
        }
        Ok(())
    }

    /// Glance's image_count_total: 413 when the project has its limit.
    pub(crate) async fn check_image_count(&self, owner: ProjectId) -> Result<()> {
        let limit = self.config.image_quota.count_total;
        if limit < 0 {
            return Ok(());
        }
        let (count, _) = self.store.image_usage(owner).await?;
        if count + 1 > limit {
            return Err(glance_over_limit("image_count_total", limit, count, 1));
        }
        Ok(())
    }

    /// Bytes an upload to `owner` may still bring (image_size_total);
    /// 413 when none is left.
    pub(crate) async fn image_bytes_left(&self, owner: ProjectId) -> Result<Option<u64>> {
        let limit = self.config.image_quota.size_total_mib;
        if limit < 0 {
            return Ok(None);
        }
        let (_, bytes) = self.store.image_usage(owner).await?;
        let limit_bytes = limit.saturating_mul(1 << 20);
        if bytes >= limit_bytes {
            return Err(glance_over_limit("image_size_total", limit, bytes >> 20, 1));
        }
        Ok(Some((limit_bytes - bytes) as u64))
    }

    /// Claims one server of `vcpus` and `ram` MiB for `project` (403 past
    /// a limit), and checks its metadata items.
    pub(crate) async fn claim_server_quota(
        &self,
        project: ProjectId,
        flavor: &domain::server::Flavor,
        metadata_items: usize,
    ) -> Result<QuotaClaim> {
        self.check_metadata_quota(project, metadata_items).await?;
        let deltas = Amounts::from([
            ("instances".to_string(), 1),
            ("cores".to_string(), i64::from(flavor.vcpus)),
            ("ram".to_string(), flavor.ram as i64),
        ]);
        self.claim(project, QuotaService::Compute, deltas).await
    }

    /// Nova's `metadata_items`: 403 when a server would have more.
    pub(crate) async fn check_metadata_quota(
        &self,
        project: ProjectId,
        items: usize,
    ) -> Result<()> {
        let limits = self
            .effective_limits(QuotaService::Compute, QuotaScope::Project(project))
            .await?;
        let limit = limits.get("metadata_items").copied().unwrap_or(-1);
        if limit >= 0 && items as i64 > limit {
            return Err(Error::forbidden(format!(
                "Quota exceeded for metadata_items: Requested {items}, but already used 0 of {limit} metadata_items"
            )));
        }
        Ok(())
    }

    /// Claims one volume of `size` GiB (413 past a limit, or past
    /// `per_volume_gigabytes`).
    pub async fn claim_volume_quota(&self, project: ProjectId, size: u64) -> Result<QuotaClaim> {
        self.check_per_volume_size(project, size).await?;
        let deltas = Amounts::from([
            ("volumes".to_string(), 1),
            ("gigabytes".to_string(), size as i64),
        ]);
        self.claim(project, QuotaService::Volume, deltas).await
    }

    /// Claims `added` GiB for a volume growing to `new_size` GiB (extend).
    pub async fn claim_volume_growth_quota(
        &self,
        project: ProjectId,
        new_size: u64,
        added: u64,
    ) -> Result<QuotaClaim> {
        self.check_per_volume_size(project, new_size).await?;
        let deltas = Amounts::from([("gigabytes".to_string(), added as i64)]);
        self.claim(project, QuotaService::Volume, deltas).await
    }

    /// Claims one volume snapshot of `size` GiB (413 past a limit).
    pub async fn claim_snapshot_quota(&self, project: ProjectId, size: u64) -> Result<QuotaClaim> {
        let deltas = Amounts::from([
            ("snapshots".to_string(), 1),
            ("gigabytes".to_string(), size as i64),
        ]);
        self.claim(project, QuotaService::Volume, deltas).await
    }

    async fn check_per_volume_size(&self, project: ProjectId, size: u64) -> Result<()> {
        let limits = self
            .effective_limits(QuotaService::Volume, QuotaScope::Project(project))
            .await?;
        let limit = limits.get("per_volume_gigabytes").copied().unwrap_or(-1);
        if limit >= 0 && size as i64 > limit {
            return Err(Error::new(
                ErrorKind::TooLarge,
                format!(
                    "VolumeSizeExceedsLimit: Requested volume size {size}G is larger than maximum allowed limit {limit}G."
                ),
            ));
        }
        Ok(())
    }
}
