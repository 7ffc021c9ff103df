//! Wake-ups inside one node: the store's announcements, whichever process caused them, handed to
//! whoever waits here: a synchronous submission until its order finishes, a worker's idle tasks
//! until it has work, its receipt task until a receipt awaits its update. Nothing polls.

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

    /// Wakes everyone: announcements may have been missed, and each re-reads the store.
    pub(crate) fn wake_all(&self) {
        for (_, waiting) in self.lock().drain() {
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

/// Hands the store's wake-ups to the node's waiters and workers until the store is gone or the
/// node stops.
pub(crate) async fn dispatch<S: afallon_store::Store>(
    app: std::sync::Arc<crate::App<S>>,
    mut wakeups: afallon_store::Wakeups,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    use afallon_store::Wakeup;
    loop {
        let wakeup = tokio::select! {
            wakeup = wakeups.next() => wakeup,
            _ = stopped.changed() => return,
        };
        match wakeup {
            None => return,
            Some(Wakeup::Finished { work_order_id }) => app.waiters.completed(&work_order_id),
            Some(Wakeup::Queued { worker_id }) => {
                if let Some(worker) = app.local_worker(&worker_id) {
                    worker.wake.notify_one();
                }
            }
            Some(Wakeup::ReceiptAwaiting { worker_id }) => {
                if let Some(worker) = app.local_worker(&worker_id) {
                    worker.receipts_waiting.notify_one();
                }
            }
            Some(Wakeup::Missed) => {
                app.waiters.wake_all();
                for worker in &app.workers {
                    worker.wake.notify_waiters();
                    worker.wake.notify_one();
                    worker.receipts_waiting.notify_one();
                }
            }
        }
    }
}
