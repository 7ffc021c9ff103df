//! The embedded store's file: its tables, how an order is encoded in one record, the look-up
//! indexes, and the table-level steps every write is made of.

use redb::{ReadableTable, TableDefinition, WriteTransaction};

use afallon_proto::{ReceiptCreate, ReceiptUpdate, WorkerRecord};

use crate::records::current_status;
use crate::{ReceiptFilter, SealedBlob, StoreError, WorkerFilter};

/// Worker id → its record (JSON).
pub(super) const WORKERS: TableDefinition<'static, &str, &str> = TableDefinition::new("workers");
/// (field, value, worker id) for each look-up field of each worker ([`worker_index`]).
pub(super) const WORKER_INDEX: TableDefinition<'static, (u8, &str, &str), ()> =
    TableDefinition::new("worker_index");
/// Work-order id → the order and, once finished, its result, in one record (see
/// [`encode_order`]): one B-tree entry written per order in synchronous mode, and one removed when
/// it is purged.
pub(super) const ORDERS: TableDefinition<'static, &str, &[u8]> =
    TableDefinition::new("work_orders");
/// Work-order id → its receipt's create request (JSON).
pub(super) const RECEIPTS: TableDefinition<'static, &str, &str> = TableDefinition::new("receipts");
/// (work-order id, index) → a receipt update (JSON).
pub(super) const RECEIPT_UPDATES: TableDefinition<'static, (&str, u64), &str> =
    TableDefinition::new("receipt_updates");
/// (field, value, work-order id) for each look-up field of each receipt, its current status
/// included ([`receipt_index`]).
pub(super) const RECEIPT_INDEX: TableDefinition<'static, (u8, &str, &str), ()> =
    TableDefinition::new("receipt_index");
/// (worker id, work-order id) of every receipt whose order finished and which has no update
/// yet: what the worker still has to sign.
pub(super) const AWAITING: TableDefinition<'static, (&str, &str), ()> =
    TableDefinition::new("receipts_awaiting_update");
/// (worker id, requester id) of every tenant of a worker ([`Store::put_tenant`](crate::Store::put_tenant)).
pub(super) const TENANTS: TableDefinition<'static, (&str, &str), ()> =
    TableDefinition::new("tenants");
/// Sealed blob key → version (8 bytes BE) || blob.
pub(super) const SEALED: TableDefinition<'static, &str, &[u8]> = TableDefinition::new("sealed");
/// [`purged_key`] of every order ever purged → nothing: what keeps a purged id from being accepted
/// again, written in the transaction that purges the order. It only grows: 16 bytes of key per
/// purged order, 24 to 36 bytes of file with redb's B-tree (measured over a million purges in
/// batches of a thousand: 36 MB, 23 MB once compacted).
pub(super) const PURGED: TableDefinition<'static, [u8; PURGED_KEY_BYTES], ()> =
    TableDefinition::new("purged_orders");
/// The store's own records: under [`BATCH`], the number of the last batch committed, written by
/// every commit.
pub(super) const META: TableDefinition<'static, &str, u64> = TableDefinition::new("meta");
pub(super) const BATCH: &str = "batch";
/// Where a trial commit after a failure writes [`HEADROOM_BYTES`], removed by the next commit: the
/// store writes again only once it has that much room, and then has it inside its file.
pub(super) const HEADROOM: TableDefinition<'static, &str, &[u8]> = TableDefinition::new("headroom");
pub(super) const HEADROOM_BYTES: usize = 256 << 10;

/// Creates every table, so that readers never meet a missing one.
pub(super) fn create_all(txn: &WriteTransaction) -> Result<(), redb::Error> {
    txn.open_table(WORKERS)?;
    txn.open_table(WORKER_INDEX)?;
    txn.open_table(ORDERS)?;
    txn.open_table(RECEIPTS)?;
    txn.open_table(RECEIPT_UPDATES)?;
    txn.open_table(RECEIPT_INDEX)?;
    txn.open_table(AWAITING)?;
    txn.open_table(SEALED)?;
    txn.open_table(TENANTS)?;
    txn.open_table(PURGED)?;
    txn.open_table(META)?;
    txn.open_table(HEADROOM)?;
    Ok(())
}

/// The length of a [`purged_key`].
pub(super) const PURGED_KEY_BYTES: usize = 16;

/// A purged order's key in [`PURGED`]: the first 16 bytes of SHA-256 of its id, whatever the id's
/// length. Two ids share a key with probability about n²/2¹²⁹ after n purges (below 10⁻¹⁹ after
/// 10⁹), and a shared key only refuses the newer id as a duplicate.
pub(super) fn purged_key(id: &str) -> [u8; PURGED_KEY_BYTES] {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(id.as_bytes());
    let mut key = [0; PURGED_KEY_BYTES];
    key.copy_from_slice(&digest[..PURGED_KEY_BYTES]);
    key
}

/// Whether `id` is an order that was purged.
pub(super) fn was_purged(
    purged: &impl ReadableTable<[u8; PURGED_KEY_BYTES], ()>,
    id: &str,
) -> Result<bool, redb::Error> {
    Ok(purged.get(purged_key(id))?.is_some())
}

/// A stored order.
pub(super) struct OrderRecord<'a> {
    pub(super) seq: u64,
    pub(super) worker: &'a str,
    /// The tenant whose queue it is in, if any.
    pub(super) tenant: Option<&'a str>,
    pub(super) request: &'a [u8],
    /// The finish sequence (the purge order), whether it failed, and the worker's JSON-RPC
    /// response, once finished.
    pub(super) finished: Option<Finished<'a>>,
}

/// A finished order's part of its record.
#[derive(Clone, Copy)]
pub(super) struct Finished<'a> {
    pub(super) finish: u64,
    pub(super) failed: bool,
    pub(super) response: &'a str,
}

/// The longest worker or tenant id an order record holds (15 bits of length).
pub(super) const MAX_RECORD_ID: usize = 0x7fff;

/// The top bit of the worker id's length: a tenant's id follows the worker's.
const TENANT_FOLLOWS: u16 = 0x8000;

/// Submission sequence (8 bytes BE), worker id length (2 bytes BE, its top bit set if a tenant
/// follows), worker id, [tenant id length (2 bytes BE), tenant id], request length (4 bytes BE),
/// raw request, then, once the order is finished, the finish sequence (8 bytes BE), one byte (1 if
/// the response is an error, else 0) and the response (UTF-8). Records written before tenants
/// existed have no tenant (the top bit is clear); records written before the flag byte existed
/// have the response right after the finish sequence (its first byte is `{`), and are read as
/// failed if the response holds an `error`.
pub(super) fn encode_order(
    seq: u64,
    worker: &str,
    tenant: Option<&str>,
    request: &[u8],
    finished: Option<Finished<'_>>,
) -> Vec<u8> {
    let response = finished.map_or("", |f| f.response);
    let tenant_len = tenant.map_or(0, |t| 2 + t.len());
    let mut out =
        Vec::with_capacity(23 + worker.len() + tenant_len + request.len() + response.len());
    out.extend_from_slice(&seq.to_be_bytes());
    // Ids are at most MAX_RECORD_ID bytes and requests are capped far below 4 GiB; anything
    // longer was refused by the caller.
    debug_assert!(worker.len() <= MAX_RECORD_ID && tenant.is_none_or(|t| t.len() <= MAX_RECORD_ID));
    let id_len = |id: &str| u16::try_from(id.len().min(MAX_RECORD_ID)).unwrap_or(0);
    let flag = if tenant.is_some() { TENANT_FOLLOWS } else { 0 };
    out.extend_from_slice(&(id_len(worker) | flag).to_be_bytes());
    out.extend_from_slice(worker.as_bytes());
    if let Some(tenant) = tenant {
        out.extend_from_slice(&id_len(tenant).to_be_bytes());
        out.extend_from_slice(tenant.as_bytes());
    }
    out.extend_from_slice(&u32::try_from(request.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(request);
    if let Some(finished) = finished {
        out.extend_from_slice(&finished.finish.to_be_bytes());
        out.push(u8::from(finished.failed));
        out.extend_from_slice(finished.response.as_bytes());
    }
    out
}

pub(super) fn decode_order(bytes: &[u8]) -> Result<OrderRecord<'_>, redb::Error> {
    let corrupt = || redb::Error::Corrupted("order record".into());
    let (seq, rest) = bytes.split_first_chunk::<8>().ok_or_else(corrupt)?;
    // A length (its top bit masked off) and as many bytes of UTF-8.
    fn id(rest: &[u8]) -> Option<(u16, &str, &[u8])> {
        let (len, rest) = rest.split_first_chunk::<2>()?;
        let len = u16::from_be_bytes(*len);
        let (id, rest) = rest.split_at_checked(usize::from(len & !TENANT_FOLLOWS))?;
        Some((len, std::str::from_utf8(id).ok()?, rest))
    }
    let (len, worker, rest) = id(rest).ok_or_else(corrupt)?;
    let (tenant, rest) = if len & TENANT_FOLLOWS == 0 {
        (None, rest)
    } else {
        let (len, tenant, rest) = id(rest).ok_or_else(corrupt)?;
        if len & TENANT_FOLLOWS != 0 {
            return Err(corrupt());
        }
        (Some(tenant), rest)
    };
    let (len, rest) = rest.split_first_chunk::<4>().ok_or_else(corrupt)?;
    let len = usize::try_from(u32::from_be_bytes(*len)).map_err(|_| corrupt())?;
    let (request, rest) = rest.split_at_checked(len).ok_or_else(corrupt)?;
    let finished = match rest {
        [] => None,
        rest => {
            let (finish, rest) = rest.split_first_chunk::<8>().ok_or_else(corrupt)?;
            let (failed, response) = match rest.split_first() {
                Some((&flag @ (0 | 1), response)) => (Some(flag == 1), response),
                _ => (None, rest),
            };
            let response = std::str::from_utf8(response).map_err(|_| corrupt())?;
            let failed = failed.unwrap_or_else(|| legacy_failed(response));
            Some(Finished { finish: u64::from_be_bytes(*finish), failed, response })
        }
    };
    Ok(OrderRecord { seq: u64::from_be_bytes(*seq), worker, tenant, request, finished })
}

/// Whether a response stored without its flag is an error.
fn legacy_failed(response: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(response).map_or(true, |r| r.get("error").is_some())
}

/// The look-up fields of a worker record, as (field, value) pairs of [`WORKER_INDEX`].
pub(super) fn worker_index(record: &WorkerRecord) -> [(u8, String); 3] {
    [
        (0, record.worker_type.to_string()),
        (1, record.organization_id.clone()),
        (2, record.application_type_id.clone()),
    ]
}

/// The fields a worker look-up filters on, as (field, value) pairs of [`WORKER_INDEX`].
pub(super) fn worker_filter(filter: &WorkerFilter) -> Vec<(u8, String)> {
    let mut fields = Vec::new();
    if let Some(worker_type) = filter.worker_type {
        fields.push((0, worker_type.to_string()));
    }
    if let Some(organization) = &filter.organization_id {
        fields.push((1, organization.clone()));
    }
    if let Some(application) = &filter.application_type_id {
        fields.push((2, application.clone()));
    }
    fields
}

/// The status field of [`RECEIPT_INDEX`].
pub(super) const RECEIPT_STATUS_FIELD: u8 = 3;

/// The look-up fields of a receipt, its current status `status` included, as (field, value)
/// pairs of [`RECEIPT_INDEX`] (a field the receipt lacks is not indexed: no filter matches it).
pub(super) fn receipt_index(create: &ReceiptCreate, status: i64) -> Vec<(u8, String)> {
    let mut fields = vec![(RECEIPT_STATUS_FIELD, status.to_string())];
    for (field, value) in
        [(0, &create.worker_service_id), (1, &create.worker_id), (2, &create.requester_id)]
    {
        if let Some(value) = value {
            fields.push((field, value.clone()));
        }
    }
    fields
}

/// The fields a receipt look-up filters on, as (field, value) pairs of [`RECEIPT_INDEX`].
pub(super) fn receipt_filter(filter: &ReceiptFilter) -> Vec<(u8, String)> {
    let mut fields = Vec::new();
    for (field, value) in
        [(0, &filter.worker_service_id), (1, &filter.worker_id), (2, &filter.requester_id)]
    {
        if let Some(value) = value {
            fields.push((field, value.clone()));
        }
    }
    if let Some(status) = filter.status {
        fields.push((RECEIPT_STATUS_FIELD, status.to_string()));
    }
    fields
}

/// One page of ids that have every (field, value) of `fields` in `index`, after `after`, at most
/// `limit`: the first field's entries are walked in id order, the others looked up for each.
/// Without fields, `all` is walked instead.
pub(super) fn look_up(
    index: &impl ReadableTable<(u8, &'static str, &'static str), ()>,
    all: &impl ReadableTable<&'static str, &'static str>,
    fields: &[(u8, String)],
    after: Option<&str>,
    limit: usize,
) -> Result<Vec<String>, redb::Error> {
    let mut ids = Vec::new();
    if limit == 0 {
        return Ok(ids);
    }
    let Some(((field, value), rest)) = fields.split_first() else {
        for entry in all.range(after.unwrap_or("")..)? {
            let id = entry?.0.value().to_owned();
            if after.is_some_and(|after| id == after) {
                continue;
            }
            ids.push(id);
            if ids.len() == limit {
                break;
            }
        }
        return Ok(ids);
    };
    let start = (*field, value.as_str(), after.unwrap_or(""));
    for entry in index.range(start..)? {
        let key = entry?.0;
        let (key_field, key_value, id) = key.value();
        if key_field != *field || key_value != value {
            break;
        }
        if after.is_some_and(|after| id == after) {
            continue;
        }
        let mut matches = true;
        for (field, value) in rest {
            if index.get((*field, value.as_str(), id))?.is_none() {
                matches = false;
                break;
            }
        }
        if matches {
            ids.push(id.to_owned());
            if ids.len() == limit {
                break;
            }
        }
    }
    Ok(ids)
}

/// Writes a worker's record and its index entries, replacing an older record's.
pub(super) fn put_worker(
    txn: &WriteTransaction,
    id: &str,
    record: &WorkerRecord,
) -> Result<(), redb::Error> {
    let json = serde_json::to_string(record).map_err(|e| redb::Error::Corrupted(e.to_string()))?;
    let mut workers = txn.open_table(WORKERS)?;
    let mut index = txn.open_table(WORKER_INDEX)?;
    let old = workers.insert(id, json.as_str())?.map(|old| old.value().to_owned());
    if let Some(old) = old.and_then(|old| serde_json::from_str::<WorkerRecord>(&old).ok()) {
        for (field, value) in worker_index(&old) {
            index.remove((field, value.as_str(), id))?;
        }
    }
    for (field, value) in worker_index(record) {
        index.insert((field, value.as_str(), id), ())?;
    }
    Ok(())
}

/// Decodes a stored JSON record.
pub(super) fn decode_json<T: serde::de::DeserializeOwned>(
    json: &str,
    what: &'static str,
) -> Result<T, StoreError> {
    serde_json::from_str(json).map_err(|_| StoreError::Corrupt { what })
}

/// A receipt's create request and every update, as stored.
pub(super) fn read_receipt(
    receipts: &impl ReadableTable<&'static str, &'static str>,
    updates: &impl ReadableTable<(&'static str, u64), &'static str>,
    id: &str,
) -> Result<Option<(String, Vec<String>)>, redb::Error> {
    let Some(create) = receipts.get(id)?.map(|v| v.value().to_owned()) else {
        return Ok(None);
    };
    let updates = updates
        .range((id, 0)..=(id, u64::MAX))?
        .map(|entry| entry.map(|(_, value)| value.value().to_owned()))
        .collect::<Result<_, _>>()?;
    Ok(Some((create, updates)))
}

/// A receipt's current status, from its stored create request and last update.
fn stored_status(
    txn: &WriteTransaction,
    id: &str,
) -> Result<Option<(ReceiptCreate, i64, u64)>, redb::Error> {
    let Some(create) = txn.open_table(RECEIPTS)?.get(id)?.map(|v| v.value().to_owned()) else {
        return Ok(None);
    };
    let create: ReceiptCreate =
        serde_json::from_str(&create).map_err(|_| redb::Error::Corrupted("receipt".into()))?;
    let updates = txn.open_table(RECEIPT_UPDATES)?;
    let mut count = 0;
    let mut last = None;
    for entry in updates.range((id, 0)..=(id, u64::MAX))? {
        count += 1;
        last = Some(entry?.1.value().to_owned());
    }
    let last: Option<ReceiptUpdate> = last.and_then(|last| serde_json::from_str(&last).ok());
    let status = current_status(&create, last.as_ref());
    Ok(Some((create, status, count)))
}

/// Stores a new receipt and its index entries.
pub(super) fn insert_receipt(
    txn: &WriteTransaction,
    id: &str,
    create: &ReceiptCreate,
) -> Result<(), redb::Error> {
    let json = serde_json::to_string(create).map_err(|e| redb::Error::Corrupted(e.to_string()))?;
    txn.open_table(RECEIPTS)?.insert(id, json.as_str())?;
    let mut index = txn.open_table(RECEIPT_INDEX)?;
    for (field, value) in receipt_index(create, current_status(create, None)) {
        index.insert((field, value.as_str(), id), ())?;
    }
    Ok(())
}

/// Appends an update to a receipt, moves its status in the index, and ends its wait for a
/// worker update; returns the number of updates, or `None` without a receipt.
pub(super) fn append_update(
    txn: &WriteTransaction,
    id: &str,
    worker: &str,
    update: &ReceiptUpdate,
) -> Result<Option<u64>, redb::Error> {
    let Some((create, before, count)) = stored_status(txn, id)? else { return Ok(None) };
    let json = serde_json::to_string(update).map_err(|e| redb::Error::Corrupted(e.to_string()))?;
    txn.open_table(RECEIPT_UPDATES)?.insert((id, count), json.as_str())?;
    let after = current_status(&create, Some(update));
    if after != before {
        let mut index = txn.open_table(RECEIPT_INDEX)?;
        index.remove((RECEIPT_STATUS_FIELD, before.to_string().as_str(), id))?;
        index.insert((RECEIPT_STATUS_FIELD, after.to_string().as_str(), id), ())?;
    }
    txn.open_table(AWAITING)?.remove((worker, id))?;
    Ok(Some(count + 1))
}

/// Whether the receipt of `id` has no update yet.
pub(super) fn receipt_without_updates(
    txn: &WriteTransaction,
    id: &str,
) -> Result<bool, redb::Error> {
    Ok(txn.open_table(RECEIPT_UPDATES)?.range((id, 0)..=(id, u64::MAX))?.next().is_none())
}

pub(super) fn put_sealed(txn: &WriteTransaction, sealed: &SealedBlob) -> Result<(), redb::Error> {
    let mut table = txn.open_table(SEALED)?;
    let current = table.get(sealed.key.as_str())?.map(|v| sealed_version(v.value()));
    if current.is_some_and(|version| version >= sealed.version) {
        return Ok(());
    }
    let mut value = Vec::with_capacity(8 + sealed.blob.len());
    value.extend_from_slice(&sealed.version.to_be_bytes());
    value.extend_from_slice(&sealed.blob);
    table.insert(sealed.key.as_str(), value.as_slice())?;
    Ok(())
}

pub(super) fn sealed_version(value: &[u8]) -> u64 {
    value.first_chunk::<8>().map_or(0, |v| u64::from_be_bytes(*v))
}

/// Removes a finished order and everything about it, and records that its id was used.
pub(super) fn purge(
    txn: &WriteTransaction,
    orders: &mut redb::Table<'_, &str, &[u8]>,
    id: &str,
) -> Result<(), redb::Error> {
    let worker = match orders.remove(id)? {
        Some(record) => decode_order(record.value())?.worker.to_owned(),
        None => String::new(),
    };
    txn.open_table(PURGED)?.insert(purged_key(id), ())?;
    let Some((create, status, _)) = stored_status(txn, id)? else {
        // Updates and index entries exist only for receipts.
        return Ok(());
    };
    txn.open_table(RECEIPTS)?.remove(id)?;
    let mut index = txn.open_table(RECEIPT_INDEX)?;
    for (field, value) in receipt_index(&create, status) {
        index.remove((field, value.as_str(), id))?;
    }
    txn.open_table(AWAITING)?.remove((worker.as_str(), id))?;
    let mut updates = txn.open_table(RECEIPT_UPDATES)?;
    let keys: Vec<u64> = updates
        .range((id, 0)..=(id, u64::MAX))?
        .map(|entry| entry.map(|(key, _)| key.value().1))
        .collect::<Result<_, _>>()?;
    for key in keys {
        updates.remove((id, key))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_order_record_keeps_its_tenant_and_refuses_a_flagged_tenant_length() {
        let finished = Finished { finish: 9, failed: false, response: "{}" };
        for tenant in [None, Some("a0"), Some("")] {
            let bytes = encode_order(7, "w", tenant, b"{\"x\":1}", Some(finished));
            let record = decode_order(&bytes).expect("decodes");
            assert_eq!((record.seq, record.worker, record.tenant), (7, "w", tenant));
            assert_eq!(record.request, b"{\"x\":1}");
            assert_eq!(record.finished.map(|f| (f.finish, f.response)), Some((9, "{}")));
        }
        // A record from before tenants: the worker's length without the flag.
        let old = encode_order(1, "w", None, b"{}", None);
        assert_eq!(&old[8..10], &[0, 1]);
        assert_eq!(decode_order(&old).expect("decodes").tenant, None);
        // The tenant's own length cannot carry the flag.
        let mut bad = encode_order(1, "w", Some("t"), b"{}", None);
        bad[11] |= 0x80;
        assert!(decode_order(&bad).is_err());
        // Truncated anywhere: corrupt, never a panic.
        let whole = encode_order(1, "w", Some("t"), b"{}", None);
        for end in 0..whole.len() {
            assert!(decode_order(&whole[..end]).is_err(), "cut at {end}");
        }
    }
}
