//! Look-ups as requesters make them: `WorkOrderReceiptLookUp` with a selective filter (a
//! requester's few receipts) and with one every receipt matches (a full page), and
//! `WorkerLookUp`. Timed one after the other, or kept going by many callers at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use afallon_client::{Client, ClientError};
use serde::Serialize;
use serde_json::{Value, json};

use crate::Latency;

/// How long each kind of look-up took, in milliseconds, and how many ids each answered.
#[derive(Debug, Clone, Serialize)]
pub struct LookUpLatency {
    /// `WorkOrderReceiptLookUp` by `requesterId`, matching that requester's receipts only.
    pub selective: Latency,
    /// Ids in a selective answer.
    pub selective_ids: usize,
    /// `WorkOrderReceiptLookUp` by `workerId`, which every receipt matches: one page.
    pub page: Latency,
    /// Ids in a page.
    pub page_ids: usize,
    /// `WorkerLookUp` by `workerType`.
    pub workers: Latency,
}

/// The three look-ups, in turn.
async fn look_ups(
    client: &Client,
    requester_id: &str,
    worker_id: &str,
) -> Result<[(Duration, usize); 3], ClientError> {
    let mut out = [(Duration::ZERO, 0); 3];
    let calls = [
        ("WorkOrderReceiptLookUp", json!({"requesterId": requester_id})),
        ("WorkOrderReceiptLookUp", json!({"workerId": worker_id})),
        ("WorkerLookUp", json!({"workerType": 1})),
    ];
    for ((method, params), slot) in calls.into_iter().zip(&mut out) {
        let started = Instant::now();
        let answer = client.call(method, params).await?;
        let ids = answer.get("ids").and_then(Value::as_array).map_or(0, Vec::len);
        *slot = (started.elapsed(), ids);
    }
    Ok(out)
}

/// Times `rounds` rounds of the three look-ups, one call at a time.
///
/// # Errors
/// The first look-up that failed.
pub async fn look_up_latency(
    client: &Client,
    requester_id: &str,
    worker_id: &str,
    rounds: usize,
) -> Result<LookUpLatency, ClientError> {
    let mut samples: [Vec<Duration>; 3] = Default::default();
    let mut ids = [0; 3];
    for _ in 0..rounds {
        for (kind, (took, found)) in
            look_ups(client, requester_id, worker_id).await?.into_iter().enumerate()
        {
            samples[kind].push(took);
            ids[kind] = found;
        }
    }
    let [selective, page, workers] = samples;
    let (mut selective, mut page, mut workers) = (selective, page, workers);
    Ok(LookUpLatency {
        selective: Latency::of(&mut selective),
        selective_ids: ids[0],
        page: Latency::of(&mut page),
        page_ids: ids[1],
        workers: Latency::of(&mut workers),
    })
}

/// `callers` tasks making the three look-ups over and over until `stop`; returns how many
/// look-ups were answered and how many failed.
pub async fn look_up_callers(
    client: Arc<Client>,
    requester_id: String,
    worker_id: String,
    callers: usize,
    stop: Arc<AtomicBool>,
) -> (u64, u64) {
    let answered = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..callers)
        .map(|_| {
            let (client, stop) = (Arc::clone(&client), Arc::clone(&stop));
            let (requester_id, worker_id) = (requester_id.clone(), worker_id.clone());
            let (answered, failed) = (Arc::clone(&answered), Arc::clone(&failed));
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    match look_ups(&client, &requester_id, &worker_id).await {
                        Ok(_) => answered.fetch_add(3, Ordering::Relaxed),
                        Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();
    for task in tasks {
        let _ = task.await;
    }
    (answered.load(Ordering::Relaxed), failed.load(Ordering::Relaxed))
}
