//! Retention: at most `max_orders` work orders are kept; a new one makes room by purging the
//! oldest finished order, or is refused as busy. The rule is the same for every backend; each
//! applies it inside the transaction that stores the submission.

/// What a submission needs before it can be stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// There is room.
    Room,
    /// The store is full: the oldest finished order is purged first.
    PurgeOldest,
    /// The store is full and nothing is finished: refused as busy.
    Busy,
}

/// Whether a new order fits, with `stored` orders kept (finished or not), `finished` of them
/// finished, under `max_orders`.
///
/// ```
/// use afallon_store::retention::{Admission, admit};
/// assert_eq!(admit(9, 0, 10), Admission::Room);
/// assert_eq!(admit(10, 3, 10), Admission::PurgeOldest);
/// assert_eq!(admit(10, 0, 10), Admission::Busy);
/// ```
pub fn admit(stored: u64, finished: u64, max_orders: u64) -> Admission {
    if stored < max_orders {
        Admission::Room
    } else if finished > 0 {
        Admission::PurgeOldest
    } else {
        Admission::Busy
    }
}
