//! What the embedded store keeps in memory only: the queues (a worker's shared one and one per
//! tenant of it), the leases, the synchronous submissions not written yet, and the purge order,
//! all rebuilt from the file when the store opens.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use redb::{Database, ReadableDatabase, ReadableTableMetadata};

use super::tables::{ORDERS, TENANTS, decode_order};

/// An order waiting in memory, with its request, so that claiming reads nothing from disk.
#[derive(Debug, Clone)]
pub(super) struct Queued {
    pub(super) id: String,
    pub(super) request: Arc<[u8]>,
}

impl Volatile {
    /// The order's record as it is written, with its result if `finished`.
    pub(super) fn record(&self, finished: Option<super::tables::Finished<'_>>) -> Vec<u8> {
        let queue = &self.queue;
        super::tables::encode_order(
            self.seq,
            &queue.worker,
            queue.tenant.as_deref(),
            &self.request,
            finished,
        )
    }
}

/// A queue: a worker's shared one, or the one of a tenant of the worker (a requester whose
/// orders only that tenant's claims take).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct QueueKey {
    pub(super) worker: String,
    pub(super) tenant: Option<String>,
}

impl QueueKey {
    pub(super) fn new(worker: &str, tenant: Option<&str>) -> Self {
        Self { worker: worker.to_owned(), tenant: tenant.map(str::to_owned) }
    }
}

#[derive(Debug)]
pub(super) struct Lease {
    /// Who claimed it: the only one who may renew it and complete the order.
    pub(super) holder: String,
    pub(super) queue: QueueKey,
    pub(super) seq: u64,
    pub(super) expires: u64,
    pub(super) request: Arc<[u8]>,
}

/// An order queued by `submit_volatile` and not written yet.
#[derive(Debug, Clone)]
pub(super) struct Volatile {
    pub(super) queue: QueueKey,
    pub(super) seq: u64,
    pub(super) request: Arc<[u8]>,
}

/// The queues and leases: memory only.
#[derive(Debug, Default)]
pub(super) struct Queues {
    pub(super) by_queue: HashMap<QueueKey, BTreeMap<u64, Queued>>,
    /// (worker, requester) of every tenant: the requester's orders for the worker are queued
    /// apart, for the tenant's claims only.
    pub(super) tenants: HashSet<(String, String)>,
    pub(super) leases: HashMap<String, Lease>,
    pub(super) expiries: BTreeSet<(u64, String)>,
    /// Orders stored (finished or not), for retention.
    pub(super) stored: u64,
    /// Orders queued without being written, until their write is committed.
    pub(super) volatile: HashMap<String, Volatile>,
    /// Ids of durable submissions sent to the writer and not yet applied: with `volatile`, what
    /// a submission must not duplicate beyond what the file holds.
    pub(super) writing: HashSet<String>,
}

impl Queues {
    /// The queue of `worker`'s orders from `requester`: the tenant's, if it is one.
    pub(super) fn queue_for(&self, worker: &str, requester: &str) -> QueueKey {
        let tenant = self.tenants.contains(&(worker.to_owned(), requester.to_owned()));
        QueueKey::new(worker, tenant.then_some(requester))
    }

    pub(super) fn enqueue(&mut self, queue: QueueKey, seq: u64, queued: Queued) {
        self.by_queue.entry(queue).or_default().insert(seq, queued);
    }

    /// Forgets a finished order, whether leased or queued again after its lease expired.
    pub(super) fn finish(&mut self, id: &str, queue: &QueueKey, seq: u64) {
        if let Some(lease) = self.leases.remove(id) {
            self.expiries.remove(&(lease.expires, id.to_owned()));
        }
        if let Some(queued) = self.by_queue.get_mut(queue) {
            queued.remove(&seq);
        }
    }

    /// Forgets a volatile order whose write failed (its requester is told it was not stored),
    /// whether queued or leased; returns whether there was one.
    pub(super) fn forget_volatile(&mut self, id: &str) -> bool {
        let Some(volatile) = self.volatile.remove(id) else { return false };
        if let Some(lease) = self.leases.remove(id) {
            self.expiries.remove(&(lease.expires, id.to_owned()));
        }
        if let Some(queued) = self.by_queue.get_mut(&volatile.queue) {
            queued.remove(&volatile.seq);
        }
        true
    }

    /// Ends `holder`'s lease on an order whose completion was not stored, and queues the order
    /// again in its place (that run is over); returns its worker if it did.
    pub(super) fn release(&mut self, id: &str, holder: &str) -> Option<String> {
        if self.leases.get(id).is_none_or(|lease| lease.holder != holder) {
            return None;
        }
        let lease = self.leases.remove(id)?;
        self.expiries.remove(&(lease.expires, id.to_owned()));
        let queued = Queued { id: id.to_owned(), request: lease.request };
        let worker = lease.queue.worker.clone();
        self.enqueue(lease.queue, lease.seq, queued);
        Some(worker)
    }

    /// Queues again every order whose lease ended before `now_ms`; returns their workers.
    pub(super) fn requeue_expired(&mut self, now_ms: u64) -> Vec<String> {
        let expired: Vec<(u64, String)> =
            self.expiries.iter().take_while(|(expires, _)| *expires < now_ms).cloned().collect();
        let mut workers = Vec::with_capacity(expired.len());
        for key in &expired {
            self.expiries.remove(key);
            if let Some(lease) = self.leases.remove(&key.1) {
                let queued = Queued { id: key.1.clone(), request: lease.request };
                workers.push(lease.queue.worker.clone());
                self.enqueue(lease.queue, lease.seq, queued);
            }
        }
        workers
    }
}

/// The order counters, submissions (shared with volatile submissions) and finishes, and the
/// purge order, which only the writer uses: kept in memory (rebuilt from the records when the
/// store opens) rather than in a table of its own, one table fewer to write in every commit.
pub(super) struct Sequences {
    pub(super) next_submit: Arc<AtomicU64>,
    pub(super) next_finish: u64,
    /// Finish sequence → id of every finished order, as of the last commit and this batch.
    pub(super) finished: BTreeMap<u64, String>,
    /// `finished.len()` as of the last commit, for readers.
    pub(super) finished_count: Arc<AtomicU64>,
    /// This batch's changes to `finished`, to undo if it fails: finishes added, entries purged.
    added: Vec<u64>,
    purged: Vec<(u64, String)>,
}

impl Sequences {
    pub(super) fn finish(&mut self, id: &str) -> u64 {
        let finish = self.next_finish;
        self.next_finish += 1;
        self.finished.insert(finish, id.to_owned());
        self.added.push(finish);
        finish
    }

    pub(super) fn pop_oldest_finished(&mut self) -> Option<String> {
        let (finish, id) = self.finished.pop_first()?;
        self.purged.push((finish, id.clone()));
        Some(id)
    }

    /// A new batch begins.
    pub(super) fn begin(&mut self) {
        self.added.clear();
        self.purged.clear();
    }

    /// The batch failed: the finishes it added and the orders it purged are as before.
    pub(super) fn undo(&mut self) {
        if let Some(&first) = self.added.first() {
            self.next_finish = first;
        }
        for finish in self.added.drain(..) {
            self.finished.remove(&finish);
        }
        self.finished.extend(self.purged.drain(..));
    }
}

/// The in-memory state from the file: every unfinished order queued, in submission order.
pub(super) fn rebuild(db: &Database) -> Result<(Queues, Sequences), redb::Error> {
    let txn = db.begin_read()?;
    let orders = txn.open_table(ORDERS)?;
    let mut queues = Queues { stored: orders.len()?, ..Queues::default() };
    for entry in redb::ReadableTable::iter(&txn.open_table(TENANTS)?)? {
        let (key, _) = entry?;
        let (worker, requester) = key.value();
        queues.tenants.insert((worker.to_owned(), requester.to_owned()));
    }
    let mut next_submit = 0;
    let mut finished = BTreeMap::new();
    for entry in redb::ReadableTable::iter(&orders)? {
        let (id, value) = entry?;
        let record = decode_order(value.value())?;
        next_submit = next_submit.max(record.seq + 1);
        match record.finished {
            Some(done) => {
                finished.insert(done.finish, id.value().to_owned());
            }
            None => {
                let id = id.value().to_owned();
                queues.enqueue(
                    QueueKey::new(record.worker, record.tenant),
                    record.seq,
                    Queued { id, request: record.request.into() },
                );
            }
        }
    }
    let next_finish = finished.last_key_value().map_or(0, |(finish, _)| finish + 1);
    let sequences = Sequences {
        next_submit: Arc::new(AtomicU64::new(next_submit)),
        next_finish,
        finished_count: Arc::new(AtomicU64::new(finished.len() as u64)),
        finished,
        added: Vec::new(),
        purged: Vec::new(),
    };
    Ok((queues, sequences))
}
