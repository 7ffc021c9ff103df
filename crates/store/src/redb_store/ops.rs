//! The embedded store's writes, one type each, as the writer applies them inside a batch's
//! transaction.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use redb::ReadableTable;

use afallon_proto::{ReceiptCreate, ReceiptUpdate, WorkerRecord};

use super::lock;
use super::queues::{QueueKey, Queued, Queues};
use super::tables::{
    self, AWAITING, Finished, MAX_RECORD_ID, ORDERS, PURGED, RECEIPTS, SEALED, TENANTS, WORKERS,
};
use super::writer::{Batch, Effect, WriteOp};
use crate::retention::{Admission, admit};
use crate::wakeups::WakeupSender;
use crate::{
    Completion, NewOrder, OrderResult, ReceiptCreation, SealedBlob, SubmitOutcome, Wakeup,
};

pub(super) struct PutWorker {
    pub(super) id: String,
    pub(super) record: WorkerRecord,
}

impl WriteOp for PutWorker {
    type Output = ();

    fn apply(&self, batch: &mut Batch<'_>) -> Result<(), redb::Error> {
        tables::put_worker(batch.txn, &self.id, &self.record)
    }
}

pub(super) struct PutTenant {
    pub(super) worker: String,
    pub(super) requester: String,
}

impl WriteOp for PutTenant {
    type Output = ();

    fn apply(&self, batch: &mut Batch<'_>) -> Result<(), redb::Error> {
        let key = (self.worker.as_str(), self.requester.as_str());
        batch.txn.open_table(TENANTS)?.insert(key, ())?;
        batch.effects.push(Effect::Tenant(self.worker.clone(), self.requester.clone()));
        Ok(())
    }
}

pub(super) struct Submit(pub(super) NewOrder);

impl WriteOp for Submit {
    type Output = SubmitOutcome;

    fn apply(&self, batch: &mut Batch<'_>) -> Result<SubmitOutcome, redb::Error> {
        let order = &self.0;
        if order.worker_id.len() > MAX_RECORD_ID
            || batch.txn.open_table(WORKERS)?.get(order.worker_id.as_str())?.is_none()
        {
            return Ok(SubmitOutcome::NoSuchWorker);
        }
        let mut orders = batch.txn.open_table(ORDERS)?;
        // Capacity first, then duplicates, as Avalon's listener orders its checks.
        let volatile = lock(batch.queues).volatile.len() as u64;
        let finished = batch.sequences.finished.len() as u64;
        match admit(*batch.stored + volatile, finished, batch.options.max_orders) {
            Admission::Room => {}
            Admission::PurgeOldest => {
                if !batch.purge_oldest(&mut orders)? {
                    return Ok(SubmitOutcome::Busy);
                }
                *batch.stored -= 1;
            }
            Admission::Busy => return Ok(SubmitOutcome::Busy),
        }
        let id = order.work_order_id.as_str();
        if orders.get(id)?.is_some() || tables::was_purged(&batch.txn.open_table(PURGED)?, id)? {
            return Ok(SubmitOutcome::Duplicate);
        }
        let seq = batch.sequences.next_submit.fetch_add(1, Ordering::Relaxed);
        let queue = lock(batch.queues).queue_for(&order.worker_id, &order.requester_id);
        let record = tables::encode_order(
            seq,
            &order.worker_id,
            queue.tenant.as_deref(),
            &order.request,
            None,
        );
        orders.insert(id, record.as_slice())?;
        *batch.stored += 1;
        let queued = Queued { id: id.to_owned(), request: Arc::from(order.request.as_slice()) };
        batch.effects.push(Effect::Enqueue { queue, seq, queued });
        Ok(SubmitOutcome::Accepted)
    }

    /// The submission is no longer on its way to the file (stored or refused).
    fn settle(&self, queues: &mut Queues) {
        queues.writing.remove(&self.0.work_order_id);
    }
}

pub(super) struct Persist {
    pub(super) id: String,
}

impl WriteOp for Persist {
    type Output = bool;

    fn apply(&self, batch: &mut Batch<'_>) -> Result<bool, redb::Error> {
        batch.write_volatile(&self.id)
    }

    /// A volatile order whose write failed is forgotten: its requester is told it was not
    /// stored, and whoever waits for it wakes.
    fn undo(&self, queues: &mut Queues, wakeups: &WakeupSender) {
        if queues.forget_volatile(&self.id) {
            wakeups.send(Wakeup::Finished { work_order_id: self.id.clone() });
        }
    }
}

pub(super) struct Complete {
    pub(super) id: String,
    pub(super) holder: String,
    pub(super) result: OrderResult,
    pub(super) sealed: Option<SealedBlob>,
}

impl WriteOp for Complete {
    type Output = Completion;

    fn apply(&self, batch: &mut Batch<'_>) -> Result<Completion, redb::Error> {
        let id = self.id.as_str();
        let held = lock(batch.queues).leases.get(id).is_some_and(|l| l.holder == self.holder);
        if !held {
            return unheld_completion(batch, id);
        }
        if let Some(sealed) = &self.sealed
            && let Some(based_on) = sealed.based_on
        {
            let stored = batch
                .txn
                .open_table(SEALED)?
                .get(sealed.key.as_str())?
                .map(|v| tables::sealed_version(v.value()));
            if stored.unwrap_or(0) > based_on {
                batch
                    .effects
                    .push(Effect::Release { id: self.id.clone(), holder: self.holder.clone() });
                return Ok(Completion::StateConflict);
            }
        }
        let volatile = batch.take_volatile(id)?;
        let mut orders = batch.txn.open_table(ORDERS)?;
        let finished = |finish| Finished {
            finish,
            failed: self.result.failed,
            response: &self.result.response,
        };
        let (queue, seq, record) = match volatile {
            // Written once, with its result.
            Some(order) => {
                let record = order.record(Some(finished(batch.sequences.finish(id))));
                (order.queue, order.seq, record)
            }
            None => {
                let Some(stored) = orders.get(id)? else { return Ok(Completion::Unknown) };
                let stored = tables::decode_order(stored.value())?;
                if stored.finished.is_some() {
                    return Ok(Completion::AlreadyDone);
                }
                let done = finished(batch.sequences.finish(id));
                let record = tables::encode_order(
                    stored.seq,
                    stored.worker,
                    stored.tenant,
                    stored.request,
                    Some(done),
                );
                (QueueKey::new(stored.worker, stored.tenant), stored.seq, record)
            }
        };
        orders.insert(id, record.as_slice())?;
        drop(orders);
        if let Some(sealed) = &self.sealed {
            tables::put_sealed(batch.txn, sealed)?;
        }
        if batch.txn.open_table(RECEIPTS)?.get(id)?.is_some()
            && tables::receipt_without_updates(batch.txn, id)?
        {
            let worker = queue.worker.clone();
            batch.txn.open_table(AWAITING)?.insert((worker.as_str(), id), ())?;
            batch.effects.push(Effect::Announce(Wakeup::ReceiptAwaiting { worker_id: worker }));
        }
        batch.effects.push(Effect::Finish { id: self.id.clone(), queue, seq });
        Ok(Completion::Stored)
    }

    /// The completion was not stored: the order goes back to its queue, and whoever waits for
    /// it wakes (a synchronous requester is answered now).
    fn undo(&self, queues: &mut Queues, wakeups: &WakeupSender) {
        if let Some(worker) = queues.release(&self.id, &self.holder) {
            wakeups.send(Wakeup::Queued { worker_id: worker });
        }
        wakeups.send(Wakeup::Finished { work_order_id: self.id.clone() });
    }
}

/// What a completion from a holder without the order's lease gets: the order is finished, gone,
/// or someone else's (or queued again) to finish.
fn unheld_completion(batch: &Batch<'_>, id: &str) -> Result<Completion, redb::Error> {
    if lock(batch.queues).volatile.contains_key(id) {
        return Ok(Completion::LeaseLost);
    }
    Ok(match batch.txn.open_table(ORDERS)?.get(id)? {
        None => Completion::Unknown,
        Some(record) if tables::decode_order(record.value())?.finished.is_some() => {
            Completion::AlreadyDone
        }
        Some(_) => Completion::LeaseLost,
    })
}

pub(super) struct PutSealed(pub(super) SealedBlob);

impl WriteOp for PutSealed {
    type Output = ();

    fn apply(&self, batch: &mut Batch<'_>) -> Result<(), redb::Error> {
        tables::put_sealed(batch.txn, &self.0)
    }
}

/// Nothing but the commit itself: a reader met an I/O error, and the writer finds out whether
/// the store can still write.
pub(super) struct Probe;

impl WriteOp for Probe {
    type Output = ();

    fn apply(&self, _batch: &mut Batch<'_>) -> Result<(), redb::Error> {
        Ok(())
    }
}

pub(super) struct CreateReceipt {
    pub(super) id: String,
    pub(super) create: ReceiptCreate,
}

impl WriteOp for CreateReceipt {
    type Output = ReceiptCreation;

    fn apply(&self, batch: &mut Batch<'_>) -> Result<ReceiptCreation, redb::Error> {
        let id = self.id.as_str();
        // A receipt is durable, so the order it is for must be too.
        batch.write_volatile(id)?;
        let worker_and_finished = match batch.txn.open_table(ORDERS)?.get(id)? {
            None => return Ok(ReceiptCreation::NoSuchOrder),
            Some(record) => {
                let record = tables::decode_order(record.value())?;
                (record.worker.to_owned(), record.finished.is_some())
            }
        };
        if batch.txn.open_table(RECEIPTS)?.get(id)?.is_some() {
            return Ok(ReceiptCreation::Exists);
        }
        tables::insert_receipt(batch.txn, id, &self.create)?;
        if let (worker, true) = worker_and_finished {
            batch.txn.open_table(AWAITING)?.insert((worker.as_str(), id), ())?;
            batch.effects.push(Effect::Announce(Wakeup::ReceiptAwaiting { worker_id: worker }));
        }
        Ok(ReceiptCreation::Created)
    }
}

pub(super) struct AddUpdate {
    pub(super) id: String,
    pub(super) update: ReceiptUpdate,
}

impl WriteOp for AddUpdate {
    type Output = Option<u64>;

    fn apply(&self, batch: &mut Batch<'_>) -> Result<Option<u64>, redb::Error> {
        // A receipt exists only with its order (a purge removes both).
        let Some(worker) = order_worker(batch, &self.id)? else { return Ok(None) };
        tables::append_update(batch.txn, &self.id, &worker, &self.update)
    }
}

pub(super) struct AddWorkerUpdate {
    pub(super) id: String,
    pub(super) update: ReceiptUpdate,
}

impl WriteOp for AddWorkerUpdate {
    type Output = bool;

    fn apply(&self, batch: &mut Batch<'_>) -> Result<bool, redb::Error> {
        let Some(worker) = order_worker(batch, &self.id)? else { return Ok(false) };
        let awaiting =
            batch.txn.open_table(AWAITING)?.get((worker.as_str(), self.id.as_str()))?.is_some();
        if !awaiting {
            return Ok(false);
        }
        tables::append_update(batch.txn, &self.id, &worker, &self.update)?;
        Ok(true)
    }
}

/// The worker an order is for, if the order is stored.
fn order_worker(batch: &Batch<'_>, id: &str) -> Result<Option<String>, redb::Error> {
    Ok(match batch.txn.open_table(ORDERS)?.get(id)? {
        Some(record) => Some(tables::decode_order(record.value())?.worker.to_owned()),
        None => None,
    })
}
