//! Wake-ups: what a store announces once a change is committed, so that roles wait instead of
//! polling. Delivery is best effort; a subscriber that fell behind (or whose backend may have
//! missed announcements, say while reconnecting) is told so and re-reads what it waits on.

use tokio::sync::broadcast;

/// A committed change someone may be waiting for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wakeup {
    /// Work was queued for a worker (a submission, or an order whose lease expired).
    Queued {
        /// The worker.
        worker_id: String,
    },
    /// A work order's result was stored, or its submission was forgotten because it could not
    /// be written.
    Finished {
        /// The order.
        work_order_id: String,
    },
    /// A receipt awaits its worker's update.
    ReceiptAwaiting {
        /// The worker.
        worker_id: String,
    },
    /// Announcements may have been missed: re-read everything waited on.
    Missed,
}

/// The sending side, kept by a backend.
#[derive(Debug, Clone)]
pub struct WakeupSender(broadcast::Sender<Wakeup>);

impl WakeupSender {
    /// A sender whose subscribers may fall `capacity` announcements behind before they are told
    /// they missed some.
    pub fn new(capacity: usize) -> Self {
        Self(broadcast::channel(capacity.max(1)).0)
    }

    /// Announces `wakeup` to every subscriber (nobody listening is fine).
    pub fn send(&self, wakeup: Wakeup) {
        let _ = self.0.send(wakeup);
    }

    /// A new subscription.
    pub fn subscribe(&self) -> Wakeups {
        Wakeups(self.0.subscribe())
    }
}

/// A subscription to a store's wake-ups.
#[derive(Debug)]
pub struct Wakeups(broadcast::Receiver<Wakeup>);

impl Wakeups {
    /// The next announcement; [`Wakeup::Missed`] if this subscriber fell behind. `None` once the
    /// store is gone.
    ///
    /// # Cancel safety
    /// Cancel safe: an announcement is taken only when this returns it.
    pub async fn next(&mut self) -> Option<Wakeup> {
        match self.0.recv().await {
            Ok(wakeup) => Some(wakeup),
            Err(broadcast::error::RecvError::Lagged(_)) => Some(Wakeup::Missed),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }
}
