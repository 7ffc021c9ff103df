//! Schema migrations: the SQL files of `migrations/`, applied in order when a store connects.

use afallon_store::StoreError;

use crate::db::Fail;

/// Every migration, in order: its version and its SQL.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../migrations/0001_initial.sql")),
    (2, include_str!("../migrations/0002_tenants.sql")),
];

/// The newest schema version this program knows: the last migration's.
pub(crate) const SCHEMA_VERSION: i64 = MIGRATIONS[MIGRATIONS.len() - 1].0;

/// The advisory lock class under which migrations run, per schema (by the hash of its name).
const MIGRATION_LOCK: i32 = 0x4146_4c00;

/// Brings the schema of the connection's search path up to [`SCHEMA_VERSION`], one migration
/// per transaction, each under an advisory lock so that processes starting at once apply each
/// migration once; returns the schema's oid.
///
/// # Errors
/// [`StoreError::SchemaTooNew`] if the schema was migrated by a newer program.
pub(crate) async fn migrate(client: &mut deadpool_postgres::Client) -> Result<u32, Fail> {
    loop {
        let tx = client.transaction().await?;
        match step(&tx).await {
            Ok(Step::Applied) => tx.commit().await?,
            Ok(Step::Current(oid)) => {
                tx.commit().await?;
                return Ok(oid);
            }
            Err(fail) => {
                // At once: the transaction holds the migration lock.
                let _ = tx.rollback().await;
                return Err(fail);
            }
        }
    }
}

/// What one migration transaction did.
enum Step {
    /// Applied the next migration.
    Applied,
    /// Found the schema up to date; its oid.
    Current(u32),
}

async fn step(tx: &deadpool_postgres::Transaction<'_>) -> Result<Step, Fail> {
    tx.execute(
        "SELECT pg_advisory_xact_lock($1, hashtext(coalesce(current_schema(), ''))) IS NULL",
        &[&MIGRATION_LOCK],
    )
    .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ( \
             version bigint PRIMARY KEY, \
             applied_at timestamptz NOT NULL DEFAULT now() \
         )",
    )
    .await?;
    let found: i64 = tx
        .query_one("SELECT coalesce(max(version), 0) FROM schema_migrations", &[])
        .await?
        .try_get(0)?;
    if found > SCHEMA_VERSION {
        return Err(Fail::Store(StoreError::SchemaTooNew { found, known: SCHEMA_VERSION }));
    }
    let Some((version, sql)) = MIGRATIONS.iter().find(|(version, _)| *version > found) else {
        let oid: u32 = tx
            .query_one("SELECT oid FROM pg_namespace WHERE nspname = current_schema()", &[])
            .await?
            .try_get(0)?;
        return Ok(Step::Current(oid));
    };
    tracing::info!(version, "migrating the store's schema");
    tx.batch_execute(sql).await?;
    tx.execute("INSERT INTO schema_migrations (version) VALUES ($1)", &[version]).await?;
    Ok(Step::Applied)
}

#[cfg(test)]
mod tests {
    use super::{MIGRATIONS, SCHEMA_VERSION};

    #[test]
    fn versions_count_up_from_one_to_the_schema_version() {
        for (index, (version, _)) in MIGRATIONS.iter().enumerate() {
            assert_eq!(usize::try_from(*version).ok(), Some(index + 1));
        }
        assert_eq!(MIGRATIONS.last().map(|m| m.0), Some(SCHEMA_VERSION));
    }
}
