//! Crash safety: work orders are submitted under load, the server is killed with SIGKILL at a
//! random moment and restarted on the same data; every order that had been answered (with code 5,
//! or in synchronous mode with its result) must end with exactly one result, which verifies and
//! decrypts to what was asked, and is the result given before the crash if one was.

mod common;

use std::sync::Arc;
use std::time::Duration;

use afallon_client::{Client, InputProtection, PendingResult, Submission, Worker};
use afallon_proto::WorkOrderResult;
use common::Service;
use tokio::sync::Mutex;

/// An order the service acknowledged, with what the requester keeps to read the result.
struct Acked {
    work_order_id: String,
    input: String,
    pending: PendingResult,
    /// The result, when the answer was the result (synchronous mode).
    answer: Option<WorkOrderResult>,
}

async fn submit_until_error(
    client: Arc<Client>,
    worker: Arc<Worker>,
    task: usize,
    acked: Arc<Mutex<Vec<Acked>>>,
) -> usize {
    let mut sent = 0;
    for n in 0..10_000 {
        let input = format!("order {task}-{n}");
        let mut builder = worker.work_order("echo-result").expect("builder");
        builder.input(input.as_bytes(), InputProtection::Session).expect("input");
        let (request, pending) = builder.build(None).expect("build");
        match client.submit(&request).await {
            Ok(submission) => {
                let answer = match submission {
                    Submission::Done(result) => Some(*result),
                    Submission::Pending => None,
                };
                acked.lock().await.push(Acked {
                    work_order_id: request.work_order_id,
                    input,
                    pending,
                    answer,
                });
                sent += 1;
            }
            // The server died: stop.
            Err(_) => break,
        }
    }
    sent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_orders_survive_sigkill() {
    kill_under_load_and_check(&[]).await;
}

/// Synchronous submissions are written only with their results: every result given out must
/// still be there after the crash.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_answered_synchronously_survive_sigkill() {
    kill_under_load_and_check(&["--sync"]).await;
}

async fn kill_under_load_and_check(args: &[&str]) {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("afallon-data");
    let service = Service::start(&data, args);
    let client = Arc::new(service.client());
    let worker = Arc::new(service.worker().await);
    let acked = Arc::new(Mutex::new(Vec::new()));

    let tasks: Vec<_> = (0..8)
        .map(|task| {
            tokio::spawn(submit_until_error(
                Arc::clone(&client),
                Arc::clone(&worker),
                task,
                Arc::clone(&acked),
            ))
        })
        .collect();
    // A random moment between 150 and 1,150 ms into the load.
    let random: [u8; 2] = afallon_crypto::random_array().expect("rng");
    let delay = Duration::from_millis(150 + u64::from(u16::from_le_bytes(random) % 1000));
    tokio::time::sleep(delay).await;
    service.kill();
    let mut sent = 0;
    for task in tasks {
        sent += task.await.expect("task");
    }
    let acked = Arc::try_unwrap(acked).ok().expect("tasks are done").into_inner();
    let answered = acked.iter().filter(|order| order.answer.is_some()).count();
    eprintln!("killed after {delay:?}: {sent} orders acknowledged, {answered} with their result");
    assert!(!acked.is_empty(), "the load ran before the kill");

    let service = Service::start(&data, args);
    let client = service.client();
    // The restarted worker has the same keys: results verify under the key verified before.
    let worker_after = service.worker().await;
    assert_eq!(worker_after.verification_key, worker.verification_key);
    for order in &acked {
        let result = client
            .wait_result(&order.work_order_id, Duration::from_millis(20), Duration::from_secs(120))
            .await
            .unwrap_or_else(|e| panic!("acknowledged order {} lost: {e}", order.work_order_id));
        let outputs =
            order.pending.open(&result, &worker.verification_key).expect("verifies and decrypts");
        assert_eq!(outputs, vec![(0, format!("RESULT: {}", order.input).into_bytes())]);
        if let Some(answer) = &order.answer {
            assert_eq!(&result, answer, "order {} has another result now", order.work_order_id);
        }
        // Asked again, the same result: answered once, not recomputed.
        let again: WorkOrderResult =
            client.result(&order.work_order_id).await.expect("result").expect("done");
        assert_eq!(
            again, result,
            "order {} answered twice with different results",
            order.work_order_id
        );
    }
}
