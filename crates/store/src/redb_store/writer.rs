//! The embedded store's writer thread: every durable write goes through it, in batches that
//! share one commit (group commit), and it recovers the file after a failed commit.
//!
//! Each write is a [`WriteOp`] with an output type of its own, answered on a channel of that
//! type: the writer cannot answer one kind of write with another's reply.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, mpsc};
use std::time::{Duration, Instant};

use redb::{Database, ReadableTable};
use tokio::sync::{oneshot, watch};

use super::queues::QueueKey;
use super::queues::{Queued, Queues, Sequences, Volatile};
use super::tables::{self, BATCH, HEADROOM, HEADROOM_BYTES, META, ORDERS};
use super::{Opener, RedbStoreOptions, backend, lock, read_db, write_db};
use crate::wakeups::WakeupSender;
use crate::{StoreError, StoreHealth, Wakeup};

/// The first pause between trial commits while the store is failing; it doubles with each
/// trial, up to [`RETRY_MOST`]. A trial that fails leaves redb refusing reads too until the file
/// is opened again, which scans it: trials are spaced so that reads are served nearly all the
/// time, and a store that can write again finds out within a few seconds.
const RETRY_FIRST: Duration = Duration::from_millis(50);
const RETRY_MOST: Duration = Duration::from_secs(5);

/// One kind of write.
pub(super) trait WriteOp: Send + 'static {
    /// What its caller is answered once the batch is committed.
    type Output: Send + 'static;

    /// Applies the write to the batch's transaction.
    fn apply(&self, batch: &mut Batch<'_>) -> Result<Self::Output, redb::Error>;

    /// Runs once the batch is over, committed or not (in memory, under the queues' lock).
    fn settle(&self, _queues: &mut Queues) {}

    /// Runs if the batch failed: what the write changed in memory before it was sent is undone.
    fn undo(&self, _queues: &mut Queues, _wakeups: &WakeupSender) {}
}

/// A write on its way to the writer, with the channel its caller waits on.
pub(super) trait Job: Send {
    fn apply(&mut self, batch: &mut Batch<'_>) -> Result<(), redb::Error>;
    fn settle(&self, queues: &mut Queues);
    fn undo(&self, queues: &mut Queues, wakeups: &WakeupSender);
    fn answer(self: Box<Self>);
    fn fail(self: Box<Self>, error: StoreError);
}

/// A [`WriteOp`] with its output, once applied, and its caller's channel.
pub(super) struct Pending<O: WriteOp> {
    pub(super) op: O,
    output: Option<O::Output>,
    reply: oneshot::Sender<Result<O::Output, StoreError>>,
}

impl<O: WriteOp> Pending<O> {
    pub(super) fn new(op: O) -> (Self, oneshot::Receiver<Result<O::Output, StoreError>>) {
        let (reply, answer) = oneshot::channel();
        (Self { op, output: None, reply }, answer)
    }
}

impl<O: WriteOp> Job for Pending<O> {
    fn apply(&mut self, batch: &mut Batch<'_>) -> Result<(), redb::Error> {
        self.output = Some(self.op.apply(batch)?);
        Ok(())
    }

    fn settle(&self, queues: &mut Queues) {
        self.op.settle(queues);
    }

    fn undo(&self, queues: &mut Queues, wakeups: &WakeupSender) {
        self.op.undo(queues, wakeups);
    }

    fn answer(self: Box<Self>) {
        let answer = self.output.ok_or(StoreError::Corrupt { what: "an unapplied write" });
        let _ = self.reply.send(answer);
    }

    fn fail(self: Box<Self>, error: StoreError) {
        let _ = self.reply.send(Err(error));
    }
}

/// What a committed batch changes in memory.
pub(super) enum Effect {
    Enqueue {
        queue: QueueKey,
        seq: u64,
        queued: Queued,
    },
    Finish {
        id: String,
        queue: QueueKey,
        seq: u64,
    },
    /// A new tenant (worker, requester): the requester's orders from now on go to its queue.
    Tenant(String, String),
    /// A volatile order is now in the file.
    Written(String),
    /// `holder`'s run of the order is over without a result: the order is queued again.
    Release {
        id: String,
        holder: String,
    },
    Announce(Wakeup),
}

/// The writer thread's state.
pub(super) struct Writer {
    pub(super) db: Arc<RwLock<Option<Database>>>,
    pub(super) queues: Arc<Mutex<Queues>>,
    pub(super) options: RedbStoreOptions,
    pub(super) sequences: Sequences,
    pub(super) commits: Arc<AtomicU64>,
    pub(super) failures: Arc<AtomicU64>,
    pub(super) health: Arc<watch::Sender<StoreHealth>>,
    pub(super) wakeups: WakeupSender,
    pub(super) opener: Opener,
    pub(super) path: PathBuf,
    /// The number of the last batch committed, which the file records in [`META`].
    pub(super) committed: u64,
    /// Whether the last commit that failed was a trial (which holds nothing of anyone's, so
    /// finding it in the file after all is harmless).
    pub(super) trial_failed: bool,
}

impl Writer {
    pub(super) fn run(mut self, jobs: &mpsc::Receiver<Box<dyn Job>>) {
        let mut last_commit = Instant::now();
        // The pause before the next trial after a failure. It grows with every trial, and is
        // reset only by a commit of writes: a disk with room for a trial commit but not for
        // the writes waiting is tried less and less often.
        let mut pause = Duration::ZERO;
        let mut next_try = Instant::now();
        loop {
            let health = *self.health.borrow();
            if health != StoreHealth::Writable {
                if health == StoreHealth::Failing && Instant::now() >= next_try {
                    pause = (pause * 2).clamp(RETRY_FIRST, RETRY_MOST);
                    if self.recover() {
                        continue;
                    }
                    next_try = Instant::now() + pause;
                }
                // Until the next trial, every write is answered at once.
                let error = match *self.health.borrow() {
                    StoreHealth::Lost => StoreError::Uncertain,
                    _ => StoreError::Unavailable,
                };
                let wait = next_try.saturating_duration_since(Instant::now());
                let wait = if health == StoreHealth::Lost { RETRY_MOST } else { wait };
                match jobs.recv_timeout(wait) {
                    Ok(job) => {
                        let mut batch = vec![job];
                        batch.extend(jobs.try_iter());
                        self.fail(batch, &error);
                    }
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    Err(mpsc::RecvTimeoutError::Disconnected) => return,
                }
                continue;
            }
            let Ok(first) = jobs.recv() else { return };
            let mut batch = vec![first];
            while batch.len() < self.options.max_batch {
                match jobs.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            // Under load (writes arriving while the last commit ran) a commit costs far more
            // than one more write in it, so gather for a moment; an idle store commits at once.
            let window = self.options.commit_window;
            if !window.is_zero() && last_commit.elapsed() < window {
                let deadline = Instant::now() + window;
                while batch.len() < self.options.max_batch {
                    match jobs.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                        Ok(job) => batch.push(job),
                        Err(_) => break,
                    }
                }
            }
            let outcome = self.commit(&mut batch);
            last_commit = Instant::now();
            match outcome {
                Ok(()) => {
                    pause = Duration::ZERO;
                    for job in batch {
                        job.answer();
                    }
                }
                Err(error) => {
                    // Nothing of the batch is in the file, nor in memory: its writers are told
                    // so, and the store reopens the file before it writes again.
                    self.health.send_replace(StoreHealth::Failing);
                    tracing::error!(%error, writes = batch.len(), "a commit failed: nothing of it was stored; the store reopens its file and tries again");
                    self.fail(batch, &StoreError::NotStored(Arc::new(error)));
                    next_try = Instant::now() + pause;
                }
            }
        }
    }

    /// Applies `batch` in one transaction and commits it; on success its changes take effect in
    /// memory. On failure nothing changes but the failure count.
    fn commit(&mut self, batch: &mut [Box<dyn Job>]) -> Result<(), redb::Error> {
        let stored = lock(&self.queues).stored;
        self.sequences.begin();
        let outcome = {
            let guard = read_db(&self.db);
            match guard.as_ref() {
                Some(db) => apply_batch(
                    db,
                    &self.queues,
                    batch,
                    self.options,
                    stored,
                    &mut self.sequences,
                    self.committed + 1,
                ),
                None => Err(redb::Error::PreviousIo),
            }
        };
        let (stored, effects) = match outcome {
            Ok(done) => done,
            Err(error) => {
                // Its changes to the purge order are undone.
                self.sequences.undo();
                self.failures.fetch_add(1, Ordering::Relaxed);
                return Err(error);
            }
        };
        self.committed += 1;
        self.commits.fetch_add(1, Ordering::Relaxed);
        let sequences = &self.sequences;
        sequences.finished_count.store(sequences.finished.len() as u64, Ordering::Relaxed);
        let mut announce = Vec::new();
        let mut queues = lock(&self.queues);
        queues.stored = stored;
        for effect in effects {
            match effect {
                Effect::Enqueue { queue, seq, queued } => {
                    announce.push(Wakeup::Queued { worker_id: queue.worker.clone() });
                    queues.enqueue(queue, seq, queued);
                }
                Effect::Finish { id, queue, seq } => {
                    queues.finish(&id, &queue, seq);
                    announce.push(Wakeup::Finished { work_order_id: id });
                }
                Effect::Written(id) => {
                    queues.volatile.remove(&id);
                }
                Effect::Release { id, holder } => {
                    if let Some(worker_id) = queues.release(&id, &holder) {
                        announce.push(Wakeup::Queued { worker_id });
                    }
                }
                Effect::Tenant(worker, requester) => {
                    queues.tenants.insert((worker, requester));
                }
                Effect::Announce(wakeup) => announce.push(wakeup),
            }
        }
        for job in batch.iter() {
            job.settle(&mut queues);
        }
        drop(queues);
        // Announced once readers see the change.
        for wakeup in announce {
            self.wakeups.send(wakeup);
        }
        Ok(())
    }

    /// Answers every write of `batch` with `error`, none of it stored: what each changed in
    /// memory before it was sent is undone.
    fn fail(&self, batch: Vec<Box<dyn Job>>, error: &StoreError) {
        let mut queues = lock(&self.queues);
        for job in &batch {
            job.settle(&mut queues);
            job.undo(&mut queues, &self.wakeups);
        }
        drop(queues);
        for job in batch {
            job.fail(error.clone());
        }
    }

    /// Opens the file again (redb recovers it as it opens) and tries two commits of its own
    /// ([`Writer::trial`]); true if they succeeded, and the store writes again. A failed commit of
    /// anyone's found in the file makes the store [`StoreHealth::Lost`].
    fn recover(&mut self) -> bool {
        let on_disk = match self.reopen() {
            Ok(on_disk) => on_disk,
            Err(error) => {
                tracing::warn!(%error, "the store's file cannot be opened again yet");
                self.failures.fetch_add(1, Ordering::Relaxed);
                return false;
            }
        };
        match on_disk {
            batch if batch == self.committed => {}
            batch if self.trial_failed && batch == self.committed + 1 => self.committed = batch,
            batch => {
                tracing::error!(
                    in_file = batch,
                    committed = self.committed,
                    "a commit that failed is in the store's file after all: the store must be reopened by a restart"
                );
                self.health.send_replace(StoreHealth::Lost);
                return false;
            }
        }
        if let Err(error) = self.trial() {
            tracing::warn!(%error, "the store cannot write yet");
            self.trial_failed = true;
            self.failures.fetch_add(1, Ordering::Relaxed);
            // The failed trial left the database refusing everything: opened again, it serves
            // reads until the next trial. (What the trial may have left in the file is checked
            // then.)
            if let Err(error) = self.reopen() {
                tracing::warn!(%error, "the store's file cannot be opened again yet");
            }
            return false;
        }
        self.trial_failed = false;
        tracing::info!("the store writes again");
        self.health.send_replace(StoreHealth::Writable);
        // Whatever was announced while failing, waiters re-read now.
        self.wakeups.send(Wakeup::Missed);
        true
    }

    /// Drops the database and opens the file again (redb recovers it as it opens); returns the
    /// number of the last batch the file holds. Readers hold the lock while they use the
    /// database: once it is out of its slot, nothing uses it, and dropping it closes the file.
    /// Readers meanwhile are told the store is unavailable rather than held up.
    fn reopen(&mut self) -> Result<u64, StoreError> {
        let old = write_db(&self.db).take();
        drop(old);
        let db = (self.opener)(&self.path).map_err(backend)?;
        let on_disk = super::read_marker(&db).map_err(backend);
        *write_db(&self.db) = Some(db);
        on_disk
    }

    /// Two trial commits: one that writes [`HEADROOM_BYTES`], and one that removes them, which
    /// leaves that much room free inside the file for the writes to come.
    fn trial(&mut self) -> Result<(), redb::Error> {
        let room = vec![0; HEADROOM_BYTES];
        for fill in [true, false] {
            let guard = read_db(&self.db);
            let db = guard.as_ref().ok_or(redb::Error::PreviousIo)?;
            let txn = db.begin_write()?;
            {
                let mut headroom = txn.open_table(HEADROOM)?;
                if fill {
                    headroom.insert("room", room.as_slice())?;
                } else {
                    headroom.remove("room")?;
                }
                txn.open_table(META)?.insert(BATCH, self.committed + 1)?;
            }
            txn.commit()?;
            self.committed += 1;
            self.commits.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }
}

fn apply_batch(
    db: &Database,
    queues: &Mutex<Queues>,
    batch: &mut [Box<dyn Job>],
    options: RedbStoreOptions,
    mut stored: u64,
    sequences: &mut Sequences,
    number: u64,
) -> Result<(u64, Vec<Effect>), redb::Error> {
    let txn = db.begin_write()?;
    let mut effects = Vec::new();
    let mut filling =
        Batch { txn: &txn, queues, options, stored: &mut stored, effects: &mut effects, sequences };
    for job in batch.iter_mut() {
        job.apply(&mut filling)?;
    }
    txn.open_table(META)?.insert(BATCH, number)?;
    txn.commit()?;
    Ok((stored, effects))
}

/// One write transaction being filled, with what it changes in memory once committed.
pub(super) struct Batch<'a> {
    pub(super) txn: &'a redb::WriteTransaction,
    pub(super) queues: &'a Mutex<Queues>,
    pub(super) options: RedbStoreOptions,
    /// Orders in the file, as of this transaction.
    pub(super) stored: &'a mut u64,
    pub(super) effects: &'a mut Vec<Effect>,
    pub(super) sequences: &'a mut Sequences,
}

impl Batch<'_> {
    /// Takes the volatile order `id` (if there is one not yet in the file) for the caller to
    /// insert in this transaction, making room for it. It stays volatile in memory until the
    /// transaction commits.
    pub(super) fn take_volatile(&mut self, id: &str) -> Result<Option<Volatile>, redb::Error> {
        let Some(order) = lock(self.queues).volatile.get(id).cloned() else { return Ok(None) };
        let mut orders = self.txn.open_table(ORDERS)?;
        if orders.get(id)?.is_some() {
            return Ok(None);
        }
        // A volatile order was counted when it was queued; if retention is reached meanwhile, the
        // oldest finished order makes room, or the store holds one more than its limit for a while.
        if *self.stored >= self.options.max_orders && self.purge_oldest(&mut orders)? {
            *self.stored -= 1;
        }
        *self.stored += 1;
        self.effects.push(Effect::Written(id.to_owned()));
        Ok(Some(order))
    }

    /// Writes the volatile order `id` (without a result), if there is one; returns whether it
    /// did.
    pub(super) fn write_volatile(&mut self, id: &str) -> Result<bool, redb::Error> {
        let Some(order) = self.take_volatile(id)? else { return Ok(false) };
        self.txn.open_table(ORDERS)?.insert(id, order.record(None).as_slice())?;
        Ok(true)
    }

    /// Purges the oldest finished order; false if none is finished.
    pub(super) fn purge_oldest(
        &mut self,
        orders: &mut redb::Table<'_, &str, &[u8]>,
    ) -> Result<bool, redb::Error> {
        let Some(oldest) = self.sequences.pop_oldest_finished() else { return Ok(false) };
        tables::purge(self.txn, orders, &oldest)?;
        Ok(true)
    }
}
