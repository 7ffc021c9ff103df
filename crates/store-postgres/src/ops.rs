//! Every operation of the store, as SQL on the tables of `migrations/`.

use tokio_postgres::Row;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;

use afallon_store::retention::{Admission, admit};
use afallon_store::{
    Claimed, Completion, LookUp, NewOrder, OrderCounts, OrderResult, OrderStatus, ReceiptCreate,
    ReceiptCreation, ReceiptFilter, ReceiptUpdate, SealedBlob, StoreError, StoredReceipt,
    SubmitOutcome, WorkerFilter, WorkerRecord,
};

use crate::QUEUE_DEPTH_SQL;
use crate::db::{
    CHANNEL, Conn, End, Fail, Inner, count, execute, millis, notify, payload, query, read,
    to_bigint, transact, with_client,
};

/// The advisory lock class under which [`Inner::complete`] and [`Inner::create_receipt`] lock
/// an order's id (by its hash), so that one of the two always sees the other: a receipt created
/// while its order finishes awaits the worker's update either way.
const RECEIPT_LOCK: i32 = 0x4146_4c01;

/// The advisory lock class under which completions that store a workload's state lock its key
/// (by its hash): they take turns, so that the version check and the write are one step.
const STATE_LOCK: i32 = 0x4146_4c02;

/// The most finished orders one submission purges: more than one only when concurrent
/// submissions made the store overshoot `max_orders`, which each later one then repairs a bit.
const MAX_PURGE: u64 = 16;

// The stored and finished counts: a submission or completion adds to one of 16 counter rows,
// chosen by its connection's backend pid (`shard = pg_backend_pid() % 16`, see the migration):
// connections of several processes share rows, and a counter update then waits for the commit
// of the transaction holding its row. Every transaction updates its row in its last statement,
// so that no transaction waits for a counter row while holding one.

// The statements of a submission and of a completion are few, since each costs the database
// more CPU than most of them take to run: the split deployment's database spends about 2 ms of
// CPU per order (docs/performance.md).

fn corrupt(what: &'static str) -> Fail {
    Fail::Store(StoreError::Corrupt { what })
}

/// The only row of a query that returns one.
async fn query_one(
    conn: &impl Conn,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Row, Fail> {
    query(conn, sql, params).await?.into_iter().next().ok_or_else(|| corrupt("a query's result"))
}

fn decode_json<T: serde::de::DeserializeOwned>(json: &str, what: &'static str) -> Result<T, Fail> {
    serde_json::from_str(json).map_err(|_| corrupt(what))
}

fn encode_json(value: &impl serde::Serialize) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(StoreError::backend)
}

/// A look-up's SQL: `select` filtered by `column = value` for each filter given, then one page
/// in id order, which an index on (column, id) serves.
struct Page<'a> {
    sql: String,
    params: Vec<&'a (dyn ToSql + Sync)>,
}

impl<'a> Page<'a> {
    fn new(select: &str) -> Self {
        Self { sql: format!("{select} WHERE true"), params: Vec::new() }
    }

    fn filter(&mut self, column: &str, value: Option<&'a (dyn ToSql + Sync)>) {
        if let Some(value) = value {
            self.params.push(value);
            self.sql.push_str(&format!(" AND {column} = ${}", self.params.len()));
        }
    }

    fn page(mut self, id: &str, after: Option<&'a String>, limit: &'a i64) -> Self {
        if let Some(after) = after {
            self.params.push(after);
            self.sql.push_str(&format!(" AND {id} > ${}", self.params.len()));
        }
        self.params.push(limit);
        self.sql.push_str(&format!(" ORDER BY {id} LIMIT ${}", self.params.len()));
        self
    }

    async fn ids(&self, conn: &impl Conn) -> Result<Vec<String>, Fail> {
        let rows = query(conn, &self.sql, &self.params).await?;
        rows.iter().map(|row| Ok(row.try_get(0)?)).collect()
    }
}

fn limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// The smallest string above every string that starts with `prefix` (in byte order, which is
/// code point order for UTF-8), if there is one.
fn prefix_end(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let next = match u32::from(last) + 1 {
            0xD800 => Some('\u{E000}'),
            next => char::from_u32(next),
        };
        if let Some(next) = next {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

impl Inner {
    pub(crate) async fn put_worker(
        &self,
        id: &str,
        record: &WorkerRecord,
    ) -> Result<(), StoreError> {
        let json = encode_json(record)?;
        let sql = "INSERT INTO workers \
             (id, record, worker_type, organization_id, application_type_id) \
             VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (id) DO UPDATE SET record = EXCLUDED.record, \
             worker_type = EXCLUDED.worker_type, organization_id = EXCLUDED.organization_id, \
             application_type_id = EXCLUDED.application_type_id";
        let params: [&(dyn ToSql + Sync); 5] =
            [&id, &json, &record.worker_type, &record.organization_id, &record.application_type_id];
        let outcome = with_client!(self, |client| execute(client, sql, &params).await);
        self.written(outcome, |_| true).map(drop)
    }

    pub(crate) async fn worker(&self, id: &str) -> Result<Option<WorkerRecord>, StoreError> {
        read!(self, |client| {
            let rows = query(client, "SELECT record FROM workers WHERE id = $1", &[&id]).await?;
            let Some(row) = rows.first() else { return Ok(None) };
            Ok(Some(decode_json(row.try_get(0)?, "worker record")?))
        })
    }

    pub(crate) async fn look_up_workers(
        &self,
        filter: &WorkerFilter,
        look_up: &LookUp,
    ) -> Result<Vec<String>, StoreError> {
        let limit = limit(look_up.limit);
        let mut page = Page::new("SELECT id FROM workers");
        page.filter("worker_type", filter.worker_type.as_ref().map(|v| v as _));
        page.filter("organization_id", filter.organization_id.as_ref().map(|v| v as _));
        page.filter("application_type_id", filter.application_type_id.as_ref().map(|v| v as _));
        let page = page.page("id", look_up.after.as_ref(), &limit);
        read!(self, |client| page.ids(client).await)
    }

    /// Submission: capacity first (making room by purging the oldest finished orders), then
    /// duplicates, as the embedded store orders its checks; a refusal rolls everything back.
    pub(crate) async fn submit(&self, order: &NewOrder) -> Result<SubmitOutcome, StoreError> {
        let queued = payload('q', self.schema, &order.worker_id);
        // The admission and, when there is room, the insert, in one statement.
        let admit_and_insert = "WITH admission AS ( \
                 SELECT EXISTS (SELECT 1 FROM workers WHERE id = $2) AS known, \
                     coalesce(sum(stored), 0)::bigint AS stored, \
                     coalesce(sum(finished), 0)::bigint AS finished \
                 FROM order_counts \
             ), inserted AS ( \
                 INSERT INTO work_orders (id, worker_id, request, tenant) \
                 SELECT $1, $2, $3, (SELECT requester_id FROM tenants \
                     WHERE worker_id = $2 AND requester_id = $5) \
                 FROM admission WHERE known AND stored < $4 \
                 ON CONFLICT (id) DO NOTHING RETURNING 1 \
             ) SELECT known, stored, finished, (SELECT count(*) FROM inserted) FROM admission";
        let insert = "INSERT INTO work_orders (id, worker_id, request, tenant) \
             VALUES ($1, $2, $3, (SELECT requester_id FROM tenants \
                 WHERE worker_id = $2 AND requester_id = $4)) \
             ON CONFLICT (id) DO NOTHING";
        // After the insert, in a statement of its own (an insert that waited for a concurrent
        // purge of the same id to commit sees its record here), with the counters (last) and
        // the wake-up (sent only if the transaction commits).
        let settle = "WITH counted AS ( \
                 UPDATE order_counts SET stored = stored + $2, finished = finished + $3 \
                 WHERE shard = pg_backend_pid() % 16 \
             ) SELECT EXISTS (SELECT 1 FROM purged_orders WHERE id_key = purged_key($1)), \
                 pg_notify($4, $5) IS NULL";
        let max_orders = i64::try_from(self.max_orders).unwrap_or(i64::MAX);
        transact!(self, |tx| {
            let params: [&(dyn ToSql + Sync); 5] = [
                &order.work_order_id,
                &order.worker_id,
                &order.request,
                &max_orders,
                &order.requester_id,
            ];
            let row = query_one(tx, admit_and_insert, &params).await?;
            if !row.try_get::<_, bool>(0)? {
                return Ok(End::Rollback(SubmitOutcome::NoSuchWorker));
            }
            let stored = count(row.try_get::<_, i64>(1)?);
            let finished = count(row.try_get::<_, i64>(2)?);
            let inserted = row.try_get::<_, i64>(3)? == 1;
            let mut purged = 0_i64;
            if !inserted {
                match admit(stored, finished, self.max_orders) {
                    // There was room: the id is taken.
                    Admission::Room => return Ok(End::Rollback(SubmitOutcome::Duplicate)),
                    Admission::Busy => return Ok(End::Rollback(SubmitOutcome::Busy)),
                    Admission::PurgeOldest => {
                        let wanted =
                            (stored + 1).saturating_sub(self.max_orders).clamp(1, MAX_PURGE);
                        purged = purge(tx, wanted).await?;
                        if purged == 0 {
                            // Every finished order is being purged by another submission.
                            return Ok(End::Rollback(SubmitOutcome::Busy));
                        }
                    }
                }
                let params: [&(dyn ToSql + Sync); 4] =
                    [&order.work_order_id, &order.worker_id, &order.request, &order.requester_id];
                if execute(tx, insert, &params).await? == 0 {
                    return Ok(End::Rollback(SubmitOutcome::Duplicate));
                }
            }
            let (added, removed) = (1 - purged, -purged);
            let params: [&(dyn ToSql + Sync); 5] =
                [&order.work_order_id, &added, &removed, &CHANNEL, &queued];
            if query_one(tx, settle, &params).await?.try_get(0)? {
                return Ok(End::Rollback(SubmitOutcome::Duplicate));
            }
            Ok(End::Commit(SubmitOutcome::Accepted))
        })
    }

    pub(crate) async fn status(&self, id: &str) -> Result<OrderStatus, StoreError> {
        read!(self, |client| {
            let sql = "SELECT response, failed FROM work_orders WHERE id = $1";
            if let Some(row) = query(client, sql, &[&id]).await?.first() {
                let response: Option<String> = row.try_get(0)?;
                let failed: Option<bool> = row.try_get(1)?;
                return Ok(match response {
                    Some(response) => OrderStatus::Done(OrderResult {
                        response,
                        failed: failed.ok_or_else(|| corrupt("work order"))?,
                    }),
                    None => OrderStatus::Pending,
                });
            }
            let sql = "SELECT EXISTS (SELECT 1 FROM purged_orders WHERE id_key = purged_key($1))";
            Ok(if query_one(client, sql, &[&id]).await?.try_get(0)? {
                OrderStatus::Purged
            } else {
                OrderStatus::Unknown
            })
        })
    }

    pub(crate) async fn request(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        read!(self, |client| {
            let sql = "SELECT request FROM work_orders WHERE id = $1";
            let Some(row) = query(client, sql, &[&id]).await?.into_iter().next() else {
                return Ok(None);
            };
            Ok(Some(row.try_get(0)?))
        })
    }

    pub(crate) async fn put_tenant(&self, worker: &str, requester: &str) -> Result<(), StoreError> {
        let sql = "INSERT INTO tenants (worker_id, requester_id) VALUES ($1, $2) \
             ON CONFLICT DO NOTHING";
        let outcome =
            with_client!(self, |client| execute(client, sql, &[&worker, &requester]).await);
        self.written(outcome, |_| true).map(drop)
    }

    pub(crate) async fn claim(
        &self,
        worker_id: &str,
        tenant: Option<&str>,
        holder: &str,
        expires: u64,
    ) -> Result<Option<Claimed>, StoreError> {
        // FOR NO KEY UPDATE (not FOR UPDATE): the key-share locks of foreign-key checks (a
        // receipt being created for the order) do not make a claim skip the order. One statement
        // per kind of queue, so that each reads the queued index's (worker, tenant) prefix.
        let shared = "UPDATE work_orders SET holder = $2, lease_expires = $3 \
             WHERE id = ( \
                 SELECT id FROM work_orders \
                 WHERE worker_id = $1 AND tenant IS NULL AND response IS NULL AND holder IS NULL \
                 ORDER BY seq LIMIT 1 FOR NO KEY UPDATE SKIP LOCKED \
             ) AND response IS NULL AND holder IS NULL \
             RETURNING id, request";
        let tenants = "UPDATE work_orders SET holder = $2, lease_expires = $3 \
             WHERE id = ( \
                 SELECT id FROM work_orders \
                 WHERE worker_id = $1 AND tenant = $4 AND response IS NULL AND holder IS NULL \
                 ORDER BY seq LIMIT 1 FOR NO KEY UPDATE SKIP LOCKED \
             ) AND response IS NULL AND holder IS NULL \
             RETURNING id, request";
        let expires = millis(expires);
        let outcome = with_client!(self, |client| {
            let rows = match tenant {
                None => query(client, shared, &[&worker_id, &holder, &expires]).await?,
                Some(tenant) => {
                    query(client, tenants, &[&worker_id, &holder, &expires, &tenant]).await?
                }
            };
            let Some(row) = rows.first() else { return Ok(None) };
            Ok(Some(Claimed { work_order_id: row.try_get(0)?, request: row.try_get(1)? }))
        });
        self.written(outcome, Option::is_some)
    }

    pub(crate) async fn renew(
        &self,
        id: &str,
        holder: &str,
        expires: u64,
    ) -> Result<bool, StoreError> {
        let sql = "UPDATE work_orders SET lease_expires = GREATEST(lease_expires, $3) \
             WHERE id = $1 AND holder = $2 AND response IS NULL";
        let expires = millis(expires);
        let outcome = with_client!(self, |client| {
            Ok(execute(client, sql, &[&id, &holder, &expires]).await? == 1)
        });
        self.written(outcome, |renewed| *renewed)
    }

    pub(crate) async fn complete(
        &self,
        id: &str,
        holder: &str,
        result: &OrderResult,
        sealed: Option<&SealedBlob>,
    ) -> Result<Completion, StoreError> {
        let based_on = match sealed.and_then(|s| Some((&s.key, s.based_on?))) {
            Some((key, based_on)) => Some((key, to_bigint(based_on, "sealed version")?)),
            None => None,
        };
        let sealed = sealed
            .map(|s| {
                Ok::<_, StoreError>((&s.key, to_bigint(s.version, "sealed version")?, &s.blob))
            })
            .transpose()?;
        let finished = payload('f', self.schema, id);
        // A state computed from a version older than the stored one lost to another process's
        // change: the order goes back to its queue, to run again on the newer state. Completions
        // with state for one key take turns (an advisory lock on the key), so that two first
        // versions cannot both be stored.
        // Two statements: a statement reads the snapshot taken as it starts, so the version is
        // read by one that starts once the lock is held.
        let lock_state = "SELECT pg_advisory_xact_lock($2, hashtext($1))";
        let stored_version = "SELECT version FROM sealed WHERE key = $1";
        let requeue = "UPDATE work_orders SET holder = NULL, lease_expires = NULL \
             WHERE id = $1 AND holder = $2 AND response IS NULL RETURNING worker_id";
        // The lock (see RECEIPT_LOCK) is taken by the statement that finishes the order, before
        // the receipt is looked at.
        let finish = "UPDATE work_orders SET response = $3, failed = $4, \
             finish_seq = nextval('work_order_finish_seq'), holder = NULL, lease_expires = NULL \
             WHERE id = $1 AND holder = $2 AND response IS NULL \
             RETURNING worker_id, pg_advisory_xact_lock($5, hashtext(id)) IS NULL";
        // After the finishing statement (see RECEIPT_LOCK), with the counters and the wake-ups.
        let await_update = "WITH awaiting AS ( \
                 UPDATE receipts SET awaiting_since = nextval('receipt_awaiting_seq') \
                 WHERE work_order_id = $1 AND update_count = 0 RETURNING 1 \
             ), counted AS ( \
                 UPDATE order_counts SET finished = finished + 1 \
                 WHERE shard = pg_backend_pid() % 16 \
             ) SELECT pg_notify($2, $3) IS NULL, (SELECT pg_notify($2, $4) FROM awaiting) IS NULL";
        let state = "SELECT response IS NOT NULL FROM work_orders WHERE id = $1";
        transact!(self, |tx| {
            if let Some((key, based_on)) = &based_on {
                query(tx, lock_state, &[key, &STATE_LOCK]).await?;
                let stored: Option<i64> = match query(tx, stored_version, &[key]).await?.first() {
                    Some(row) => row.try_get(0)?,
                    None => None,
                };
                if stored.unwrap_or(0) > *based_on
                    && let Some(row) = query(tx, requeue, &[&id, &holder]).await?.first()
                {
                    let worker: &str = row.try_get(0)?;
                    notify(tx, &payload('q', self.schema, worker)).await?;
                    return Ok(End::Commit(Completion::StateConflict));
                }
            }
            let params: [&(dyn ToSql + Sync); 5] =
                [&id, &holder, &result.response, &result.failed, &RECEIPT_LOCK];
            let rows = query(tx, finish, &params).await?;
            let Some(row) = rows.first() else {
                let completion = match query(tx, state, &[&id]).await?.first() {
                    None => Completion::Unknown,
                    Some(row) if row.try_get(0)? => Completion::AlreadyDone,
                    Some(_) => Completion::LeaseLost,
                };
                return Ok(End::Rollback(completion));
            };
            let worker: String = row.try_get(0)?;
            let awaiting = payload('r', self.schema, &worker);
            let put_sealed = async {
                match &sealed {
                    Some((key, version, blob)) => {
                        put_sealed(tx, key, version, blob).await.map(drop)
                    }
                    None => Ok(()),
                }
            };
            let params: [&(dyn ToSql + Sync); 4] = [&id, &CHANNEL, &finished, &awaiting];
            // Pipelined on the connection; the counters (in the second) come last.
            tokio::try_join!(put_sealed, query(tx, await_update, &params))?;
            Ok(End::Commit(Completion::Stored))
        })
    }

    pub(crate) async fn requeue_expired(&self, now_ms: u64) -> Result<u64, StoreError> {
        let sql = "UPDATE work_orders SET holder = NULL, lease_expires = NULL \
             WHERE response IS NULL AND holder IS NOT NULL AND lease_expires < $1 \
             RETURNING worker_id";
        let notify_all = "SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p";
        let now = millis(now_ms);
        transact!(self, |tx| {
            let rows = query(tx, sql, &[&now]).await?;
            if rows.is_empty() {
                return Ok(End::Rollback(0));
            }
            let mut workers =
                rows.iter().map(|row| row.try_get(0)).collect::<Result<Vec<&str>, _>>()?;
            workers.sort_unstable();
            workers.dedup();
            let payloads: Vec<String> =
                workers.iter().map(|worker| payload('q', self.schema, worker)).collect();
            query(tx, notify_all, &[&CHANNEL, &payloads]).await?;
            Ok(End::Commit(rows.len() as u64))
        })
    }

    pub(crate) async fn counts(&self) -> Result<OrderCounts, StoreError> {
        // Through the partial indexes of queued and leased orders, and the counters: no scan of
        // every order (metrics and readiness ask often).
        let sql = "SELECT \
             (SELECT count(*) FROM work_orders WHERE response IS NULL AND holder IS NULL), \
             (SELECT count(*) FROM work_orders WHERE response IS NULL AND holder IS NOT NULL), \
             (SELECT sum(finished)::bigint FROM order_counts)";
        read!(self, |client| {
            let row = query_one(client, sql, &[]).await?;
            Ok(OrderCounts {
                queued: count(row.try_get(0)?),
                processing: count(row.try_get(1)?),
                finished: count(row.try_get::<_, Option<i64>>(2)?.unwrap_or(0)),
            })
        })
    }

    pub(crate) async fn queue_depth(&self) -> Result<u64, StoreError> {
        read!(self, |client| Ok(count(query_one(client, QUEUE_DEPTH_SQL, &[]).await?.try_get(0)?)))
    }

    pub(crate) async fn put_sealed(&self, sealed: &SealedBlob) -> Result<(), StoreError> {
        let version = to_bigint(sealed.version, "sealed version")?;
        let outcome = with_client!(self, |client| {
            put_sealed(client, &sealed.key, &version, &sealed.blob).await
        });
        self.written(outcome, |changed| *changed > 0).map(drop)
    }

    pub(crate) async fn sealed(&self, prefix: &str) -> Result<Vec<SealedBlob>, StoreError> {
        let end = prefix_end(prefix);
        read!(self, |client| {
            let rows = match &end {
                Some(end) => {
                    let sql = "SELECT key, version, blob FROM sealed \
                         WHERE key >= $1 AND key < $2 ORDER BY key";
                    query(client, sql, &[&prefix, end]).await?
                }
                None => {
                    let sql = "SELECT key, version, blob FROM sealed WHERE key >= $1 ORDER BY key";
                    query(client, sql, &[&prefix]).await?
                }
            };
            let mut blobs = Vec::with_capacity(rows.len());
            for row in rows {
                let key: String = row.try_get(0)?;
                if !key.starts_with(prefix) {
                    continue;
                }
                let version: i64 = row.try_get(1)?;
                let version = u64::try_from(version).map_err(|_| corrupt("sealed version"))?;
                blobs.push(SealedBlob { key, version, based_on: None, blob: row.try_get(2)? });
            }
            Ok(blobs)
        })
    }

    pub(crate) async fn create_receipt(
        &self,
        id: &str,
        create: &ReceiptCreate,
    ) -> Result<ReceiptCreation, StoreError> {
        let json = encode_json(create)?;
        let status = afallon_store::current_status(create, None);
        let lock = "SELECT pg_advisory_xact_lock($1, hashtext($2)) IS NULL";
        let order = "SELECT worker_id, response IS NOT NULL FROM work_orders WHERE id = $1";
        let insert = "INSERT INTO receipts (work_order_id, order_worker_id, worker_service_id, \
             worker_id, requester_id, create_status, current_status, receipt, awaiting_since) \
             VALUES ($1, $2, $3, $4, $5, $6, $6, $7, \
                 CASE WHEN $8 THEN nextval('receipt_awaiting_seq') END) \
             ON CONFLICT (work_order_id) DO NOTHING";
        transact!(self, |tx| {
            // See RECEIPT_LOCK: taken before the order is read.
            query(tx, lock, &[&RECEIPT_LOCK, &id]).await?;
            let Some(row) = query(tx, order, &[&id]).await?.into_iter().next() else {
                return Ok(End::Rollback(ReceiptCreation::NoSuchOrder));
            };
            let worker: String = row.try_get(0)?;
            let finished: bool = row.try_get(1)?;
            let params: [&(dyn ToSql + Sync); 8] = [
                &id,
                &worker,
                &create.worker_service_id,
                &create.worker_id,
                &create.requester_id,
                &status,
                &json,
                &finished,
            ];
            let inserted = match execute(tx, insert, &params).await {
                // Purged since it was read.
                Err(Fail::Pg(error)) if error.code() == Some(&SqlState::FOREIGN_KEY_VIOLATION) => {
                    return Ok(End::Rollback(ReceiptCreation::NoSuchOrder));
                }
                inserted => inserted?,
            };
            if inserted == 0 {
                return Ok(End::Rollback(ReceiptCreation::Exists));
            }
            if finished {
                notify(tx, &payload('r', self.schema, &worker)).await?;
            }
            Ok(End::Commit(ReceiptCreation::Created))
        })
    }

    /// Appends `update` to a receipt (only to one awaiting its worker's update when
    /// `worker_only`); returns the number of updates, or `None` if nothing was appended.
    pub(crate) async fn add_receipt_update(
        &self,
        id: &str,
        update: &ReceiptUpdate,
        worker_only: bool,
    ) -> Result<Option<u64>, StoreError> {
        let json = encode_json(update)?;
        let sql = if worker_only {
            "WITH receipt AS ( \
                 UPDATE receipts SET update_count = update_count + 1, \
                 current_status = COALESCE($2, create_status), awaiting_since = NULL \
                 WHERE work_order_id = $1 AND awaiting_since IS NOT NULL AND update_count = 0 \
                 RETURNING update_count \
             ) INSERT INTO receipt_updates (work_order_id, idx, body) \
             SELECT $1, update_count - 1, $3 FROM receipt RETURNING idx + 1"
        } else {
            "WITH receipt AS ( \
                 UPDATE receipts SET update_count = update_count + 1, \
                 current_status = COALESCE($2, create_status), awaiting_since = NULL \
                 WHERE work_order_id = $1 RETURNING update_count \
             ) INSERT INTO receipt_updates (work_order_id, idx, body) \
             SELECT $1, update_count - 1, $3 FROM receipt RETURNING idx + 1"
        };
        let outcome = with_client!(self, |client| {
            let rows = query(client, sql, &[&id, &update.update_type, &json]).await?;
            let Some(row) = rows.first() else { return Ok(None) };
            Ok(Some(count(row.try_get(0)?)))
        });
        self.written(outcome, Option::is_some)
    }

    pub(crate) async fn receipts_awaiting_update(
        &self,
        worker_id: &str,
        limit: usize,
    ) -> Result<Vec<(String, OrderResult)>, StoreError> {
        let sql = "SELECT r.work_order_id, o.response, o.failed \
             FROM receipts r JOIN work_orders o ON o.id = r.work_order_id \
             WHERE r.order_worker_id = $1 AND r.awaiting_since IS NOT NULL \
             ORDER BY r.awaiting_since LIMIT $2";
        let limit = self::limit(limit);
        read!(self, |client| {
            let rows = query(client, sql, &[&worker_id, &limit]).await?;
            rows.iter()
                .map(|row| {
                    let response: Option<String> = row.try_get(1)?;
                    let failed: Option<bool> = row.try_get(2)?;
                    let (Some(response), Some(failed)) = (response, failed) else {
                        return Err(corrupt("receipt awaiting an update"));
                    };
                    Ok((row.try_get(0)?, OrderResult { response, failed }))
                })
                .collect()
        })
    }

    pub(crate) async fn receipt(&self, id: &str) -> Result<Option<StoredReceipt>, StoreError> {
        let sql = "SELECT r.receipt, u.body FROM receipts r \
             LEFT JOIN receipt_updates u ON u.work_order_id = r.work_order_id \
             WHERE r.work_order_id = $1 ORDER BY u.idx";
        read!(self, |client| {
            let rows = query(client, sql, &[&id]).await?;
            let Some(first) = rows.first() else { return Ok(None) };
            let create: ReceiptCreate = decode_json(first.try_get(0)?, "receipt")?;
            let mut updates = Vec::with_capacity(rows.len());
            for row in &rows {
                if let Some(body) = row.try_get::<_, Option<&str>>(1)? {
                    updates.push(decode_json(body, "receipt update")?);
                }
            }
            Ok(Some(StoredReceipt { create, updates }))
        })
    }

    pub(crate) async fn look_up_receipts(
        &self,
        filter: &ReceiptFilter,
        look_up: &LookUp,
    ) -> Result<Vec<String>, StoreError> {
        let limit = limit(look_up.limit);
        let mut page = Page::new("SELECT work_order_id FROM receipts");
        page.filter("worker_service_id", filter.worker_service_id.as_ref().map(|v| v as _));
        page.filter("worker_id", filter.worker_id.as_ref().map(|v| v as _));
        page.filter("requester_id", filter.requester_id.as_ref().map(|v| v as _));
        page.filter("current_status", filter.status.as_ref().map(|v| v as _));
        let page = page.page("work_order_id", look_up.after.as_ref(), &limit);
        read!(self, |client| page.ids(client).await)
    }
}

/// Purges up to `wanted` of the oldest finished orders that no other transaction is purging,
/// with their receipts (by cascade), recording their ids; returns how many.
async fn purge(tx: &impl Conn, wanted: u64) -> Result<i64, Fail> {
    let purge = "WITH victims AS ( \
             SELECT id FROM work_orders WHERE response IS NOT NULL \
             ORDER BY finish_seq LIMIT $1 FOR UPDATE SKIP LOCKED \
         ), gone AS ( \
             DELETE FROM work_orders o USING victims v WHERE o.id = v.id RETURNING o.id \
         ), recorded AS ( \
             INSERT INTO purged_orders (id_key) SELECT purged_key(id) FROM gone \
             ON CONFLICT DO NOTHING \
         ) SELECT count(*) FROM gone";
    let wanted = i64::try_from(wanted).unwrap_or(1);
    Ok(query_one(tx, purge, &[&wanted]).await?.try_get(0)?)
}

/// Stores a sealed blob unless the same or a newer version is stored under its key.
async fn put_sealed(conn: &impl Conn, key: &str, version: &i64, blob: &[u8]) -> Result<u64, Fail> {
    let sql = "INSERT INTO sealed (key, version, blob) VALUES ($1, $2, $3) \
         ON CONFLICT (key) DO UPDATE SET version = EXCLUDED.version, blob = EXCLUDED.blob \
         WHERE sealed.version < EXCLUDED.version";
    execute(conn, sql, &[&key, version, &blob]).await
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn a_prefix_ends_before_the_first_string_without_it() {
        assert_eq!(prefix_end("worker/a/"), Some("worker/a0".into()));
        assert_eq!(prefix_end(""), None);
        assert_eq!(prefix_end("a\u{10FFFF}"), Some("b".into()));
        assert_eq!(prefix_end("\u{D7FF}"), Some("\u{E000}".into()));
        assert_eq!(prefix_end("\u{10FFFF}"), None);
    }
}
