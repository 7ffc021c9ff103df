//! The PostgreSQL backend of the store (being written); for now, the SQL it shares with the
//! deployment: [`QUEUE_DEPTH_SQL`], which KEDA's `postgresql` trigger in
//! `deploy/k8s/keda.yaml` runs verbatim to scale workers (a tidy test keeps the two equal).

/// The number of work orders without a response yet (queued or being processed): the queue depth
/// that worker replicas are scaled on. One line; the text of `sql/queue_depth.sql`.
pub const QUEUE_DEPTH_SQL: &str = include_str!("../sql/queue_depth.sql");
