//! Completion notices inside one node: a synchronous submission waits here until a worker of
//! this node stores the order's response, instead of polling the store.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::oneshot;

/// Who waits for which work order.
#[derive(Debug, Default)]
pub(crate) struct Waiters {
    waiting: Mutex<HashMap<String, Vec<oneshot::Sender<()>>>>,
}

impl Waiters {
    /// A notice that fires when `work_order_id` completes.
    pub(crate) fn wait(&self, work_order_id: &str) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        self.lock().entry(work_order_id.to_owned()).or_default().push(tx);
        rx
    }

    /// Wakes everyone waiting for `work_order_id`.
    pub(crate) fn completed(&self, work_order_id: &str) {
        if let Some(waiting) = self.lock().remove(work_order_id) {
            for tx in waiting {
                let _ = tx.send(());
            }
        }
    }

    /// Forgets a waiter that gave up.
    pub(crate) fn forget(&self, work_order_id: &str) {
        let mut map = self.lock();
        if let Some(waiting) = map.get_mut(work_order_id) {
            waiting.retain(|tx| !tx.is_closed());
            if waiting.is_empty() {
                map.remove(work_order_id);
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<oneshot::Sender<()>>>> {
        self.waiting.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
