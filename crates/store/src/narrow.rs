//! Narrow compare-and-swap updates: a row is written only in the columns
//! in which the new value differs from what the caller read, guarded by
//! what it read, so two requests changing different fields of one row both
//! keep their change, and one writing over a field another moved since its
//! read gets `Conflict` instead of writing a stale value back.

use sqlx::sqlite::SqliteArguments;
use sqlx::Sqlite;

use crate::{db_error, Store};
use domain::Result;

/// One column's value, as bound.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Column {
    Text(Option<String>),
    Int(Option<i64>),
}

impl Column {
    pub(crate) fn text(v: impl Into<String>) -> Column {
        Column::Text(Some(v.into()))
    }

    pub(crate) fn int(v: i64) -> Column {
        Column::Int(Some(v))
    }

    fn bind<'q>(
        &self,
        query: sqlx::query::Query<'q, Sqlite, SqliteArguments<'q>>,
    ) -> sqlx::query::Query<'q, Sqlite, SqliteArguments<'q>> {
        match self {
            Column::Text(t) => query.bind(t.clone()),
            Column::Int(i) => query.bind(*i),
        }
    }
}

/// What a narrow update of one row writes and checks.
pub(crate) struct Update<'a> {
    pub table: &'static str,
    pub id: String,
    /// The row's columns as read and as wanted, in the same order.
    pub prev: Vec<(&'static str, Column)>,
    pub next: Vec<(&'static str, Column)>,
    /// Guarded even when unchanged (a status), unless `descriptive` says
    /// the change needs no such guard.
    pub always_guarded: &'a [&'static str],
    /// Changed columns that are not guarded (observations, last writer wins).
    pub unguarded: &'a [&'static str],
    /// Columns whose change alone needs no `always_guarded` guard.
    pub descriptive: &'a [&'static str],
    pub updated_at: String,
}

/// The outcome of a narrow update.
pub(crate) enum Written {
    /// Nothing differed.
    Nothing,
    /// The row was written.
    Done,
    /// A guard failed (another request changed the row); the guarded
    /// columns' names.
    Conflict(Vec<&'static str>),
}

impl Store {
    pub(crate) async fn update_narrowly(&self, u: Update<'_>) -> Result<Written> {
        let changed: Vec<(&str, &Column, &Column)> = u
            .prev
            .iter()
            .zip(&u.next)
            .filter(|((_, old), (_, new))| old != new)
            .map(|((name, old), (_, new))| (*name, old, new))
            .collect();
        if changed.is_empty() {
            return Ok(Written::Nothing);
        }
        let mut guards: Vec<(&'static str, &Column)> = changed
            .iter()
            .filter(|(name, _, _)| !u.unguarded.contains(name))
            .map(|(name, old, _)| (*name, *old))
            .collect();
        let descriptive = changed.iter().all(|(n, _, _)| u.descriptive.contains(n));
        if !descriptive {
            for (name, value) in &u.prev {
                if u.always_guarded.contains(name) && !guards.iter().any(|(n, _)| n == name) {
                    guards.push((name, value));
                }
            }
        }
        let sets: Vec<String> = changed
            .iter()
            .map(|(name, _, _)| format!("{name} = ?"))
            .chain(std::iter::once("updated_at = ?".to_string()))
            .collect();
        let wheres: String = guards
            .iter()
            .map(|(name, _)| format!(" AND {name} IS ?"))
            .collect();
        let sql = format!(
            "UPDATE {} SET {} WHERE id = ?{wheres}",
            u.table,
            sets.join(", ")
        );
        let mut query = sqlx::query(&sql);
        for (_, _, new) in &changed {
            query = new.bind(query);
        }
        query = query.bind(u.updated_at.clone()).bind(u.id.clone());
        for (_, old) in &guards {
            query = old.bind(query);
        }
        let done = query
            .execute(&self.pool)
            .await
            .map_err(db_error(&format!("Cannot update {} {}", u.table, u.id)))?;
        Ok(if done.rows_affected() == 0 {
            Written::Conflict(guards.iter().map(|(n, _)| *n).collect())
        } else {
            Written::Done
        })
    }
}
