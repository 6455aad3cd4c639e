//! Persistence of the Snapstack domain.
//!
//! One [`Store`] over an SQL database: SQLite (embedded, the default) through
//! `sqlx`, which also speaks PostgreSQL for the many-host setup; the SQL here
//! is kept to what both accept. Migrations are versioned in `migrations/` and
//! run on open. Every state change is a compare-and-swap: an update names the
//! state it expects and fails with `Conflict` if another request moved first.

mod app_credentials;
mod attachments;
mod flavor_access;
mod identity;
mod image_snapshots;
mod images;
mod keypairs;
mod metadefs;
mod narrow;
mod networks;
mod point_quotas;
mod ports;
mod qos_specs;
mod quotas;
mod restore_points;
mod routers;
mod sagas;
mod security_groups;
mod servers;
mod system_roles;
mod tokens;
mod volume_messages;
mod volume_transfers;
mod volume_types;
mod volumes;

use std::str::FromStr;

use chrono::{DateTime, Utc};
use domain::{Error, Result};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::SqlitePool;

pub use app_credentials::AppCredentialRecord;
pub use images::{ImageFilter, ImageMember, ImagePage, MemberStatus, SortDir};
pub use metadefs::MetadefNamespaceRecord;
pub use quotas::{Amounts, QuotaScope, QuotaService, Reservation};
pub use sagas::{SagaPhase, SagaRecord};
pub use tokens::TokenRecord;

/// The database behind Snapstack.
#[derive(Clone, Debug)]
pub struct Store {
    pool: SqlitePool,
}

impl Store {
    /// Opens (creating if needed) the database at `url`
    /// (`sqlite:///path/to/file.db` or `sqlite::memory:`) and migrates it.
    pub async fn open(url: &str) -> Result<Store> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| Error::invalid(format!("Bad database URL {url}: {e}")))?
            .create_if_missing(true)
            .foreign_keys(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(std::time::Duration::from_secs(10));
        let in_memory = url.contains(":memory:");
        let pool = SqlitePoolOptions::new()
            // An in-memory database exists once per connection: keep exactly one.
            .max_connections(if in_memory { 1 } else { 8 })
            .connect_with(options)
            .await
            .map_err(|e| Error::unavailable(format!("Cannot open the database {url}: {e}")))?;
        sqlx::migrate!("./migrations")
            .run(&pool)
            .await
            .map_err(|e| Error::internal(format!("Database migration failed: {e}")))?;
        Ok(Store { pool })
    }

    /// A fresh private in-memory database, for tests.
    pub async fn in_memory() -> Result<Store> {
        Store::open("sqlite::memory:").await
    }
}

/// Maps a database failure to a domain error. Unique-key violations are
/// conflicts (a name already taken); anything else means the database failed.
fn db_error(what: &str) -> impl FnOnce(sqlx::Error) -> Error + '_ {
    move |e| {
        let error = match &e {
            sqlx::Error::Database(d) if d.is_unique_violation() => {
                Error::conflict(format!("{what}: it already exists."))
            }
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) => {
                Error::unavailable(format!("{what}: the database is unavailable ({e})."))
            }
            _ => Error::internal(format!("{what}: database error ({e}).")),
        };
        error.with_source(e)
    }
}

/// Timestamps are stored as fixed-width RFC 3339 strings so that they sort
/// as text in both SQLite and PostgreSQL.
fn ts(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

fn parse_ts(s: &str) -> Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| Error::internal(format!("Corrupt timestamp '{s}' in the database: {e}")))
}

fn parse_id<T: FromStr<Err = Error>>(s: &str) -> Result<T> {
    s.parse()
        .map_err(|_| Error::internal(format!("Corrupt id '{s}' in the database.")))
}
