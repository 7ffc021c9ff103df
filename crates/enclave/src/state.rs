//! Workload state that changes only with the completion that wins.
//!
//! A host may run one order twice (its lease ran out while the first run was still going), and
//! only one run's result is kept. So a stateful workload's change is tentative until the host has
//! stored that order's result: the enclave keeps a [`StateTurn`] for it and names it to the host
//! (`StateTicket`); the host commits it once its completion won, and a turn rolled back (the
//! completion lost, failed, or never happened) restores the state before the order. Until then
//! no other order of that workload runs, so every order runs on the state the last committed
//! order left, and a run that lost changes nothing.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use afallon_workloads::Workload;

/// One stateful workload's turn: held from the start of an order's run until its state change
/// is committed or rolled back.
#[derive(Debug, Default)]
pub(crate) struct StateSlot {
    busy: Mutex<bool>,
    freed: Condvar,
    /// The version of the state in effect (0: the initial state).
    version: AtomicU64,
}

impl StateSlot {
    fn lock(&self) -> MutexGuard<'_, bool> {
        self.busy.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Waits for the workload's turn and takes it, with the state to roll back to.
    pub(crate) fn hold(self: &Arc<Self>, workload: &Arc<dyn Workload>) -> StateTurn {
        let mut busy = self.lock();
        while *busy {
            busy = self.freed.wait(busy).unwrap_or_else(|poisoned| poisoned.into_inner());
        }
        *busy = true;
        drop(busy);
        StateTurn {
            slot: Arc::clone(self),
            rollback: workload.snapshot().map(|before| (Arc::clone(workload), before)),
            version: None,
        }
    }

    /// The state in effect is version `version` (a restart restored it).
    pub(crate) fn set_version(&self, version: u64) {
        self.version.store(version, Ordering::SeqCst);
    }

    fn release(&self) {
        *self.lock() = false;
        self.freed.notify_one();
    }
}

/// A stateful workload's state change from one order, in effect for no other order until it is
/// committed ([`StateTurn::commit`]); dropped uncommitted, it is rolled back. Until either,
/// the workload runs no other order: commit or drop it promptly, and never hold one while
/// processing another order on the same thread.
#[must_use = "a state turn is rolled back when dropped"]
pub(crate) struct StateTurn {
    slot: Arc<StateSlot>,
    /// The workload and its state before the order.
    rollback: Option<(Arc<dyn Workload>, Vec<u8>)>,
    /// The version the state has once committed.
    version: Option<u64>,
}

impl StateTurn {
    /// Keeps the change (the host stored the order's result and the sealed state with it), and
    /// lets the workload's next order run.
    pub(crate) fn commit(mut self) {
        self.rollback = None;
        if let Some(version) = self.version {
            self.slot.set_version(version);
        }
    }

    /// The version of the state this turn started on.
    pub(crate) fn based_on(&self) -> u64 {
        self.slot.version.load(Ordering::SeqCst)
    }

    /// Once committed, the state is version `version`.
    pub(crate) fn will_be(&mut self, version: u64) {
        self.version = Some(version);
    }
}

impl Drop for StateTurn {
    /// Rolls the workload back to the state before the order, then lets the next order run.
    fn drop(&mut self) {
        if let Some((workload, before)) = self.rollback.take() {
            // The snapshot is the workload's own, taken a moment ago under the same turn: it
            // restores. Should a workload refuse it anyway, the sealed state (which never had
            // this change) is what a restart restores.
            let _ = workload.restore(&before);
        }
        self.slot.release();
    }
}

impl std::fmt::Debug for StateTurn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateTurn")
            .field("workload", &self.rollback.as_ref().map(|(workload, _)| workload.name()))
            .finish_non_exhaustive()
    }
}
