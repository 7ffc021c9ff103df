//! The load generator: many requesters at once, each counting only results it verified and
//! decrypted itself.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use afallon_client::{Client, ClientError, InputProtection, PendingResult, Submission, Worker};
use afallon_crypto::{EcdsaSigningKey, EcdsaVerifyingKey};
use afallon_proto::WorkOrderResult;
use afallon_proto::requester::ResultError;
use serde::Serialize;

/// How requesters get their results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Mode {
    /// Submit (answered with code 5), then poll `WorkOrderGetResult`.
    Async,
    /// Submit and take the result from the answer (a listener in synchronous mode); polls if the
    /// listener answers "pending" instead.
    Sync,
}

/// When to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// After this long.
    Duration(Duration),
    /// After this many orders.
    Count(u64),
}

/// What to send.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// Requesters working at once.
    pub concurrency: usize,
    /// When to stop.
    pub stop: Stop,
    /// The workload's name; for `echo-result` every output is also checked against its input.
    pub workload: String,
    /// Bytes per input (one input per order).
    pub input_size: usize,
    /// How results are fetched.
    pub mode: Mode,
    /// Sign every request (with one key per requester).
    pub signed: bool,
    /// How long a requester waits for one result before counting a timeout.
    pub result_timeout: Duration,
}

/// Why an order did not count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The listener answered with this JSON-RPC error code.
    Rpc(i64),
    /// The connection failed.
    Transport,
    /// The answer was not a JSON-RPC response of the expected shape.
    Protocol,
    /// The worker's signature did not verify.
    Signature,
    /// An output did not decrypt or did not match its hash.
    Decryption,
    /// The output is not what the workload should have answered.
    WrongOutput,
    /// No result in time.
    Timeout,
    /// The request could not be built.
    Build,
}

impl Failure {
    /// The label errors are counted under.
    pub fn label(&self) -> String {
        match self {
            Self::Rpc(code) => format!("code {code}"),
            Self::Transport => "transport".into(),
            Self::Protocol => "protocol".into(),
            Self::Signature => "signature".into(),
            Self::Decryption => "decryption".into(),
            Self::WrongOutput => "wrong output".into(),
            Self::Timeout => "timeout".into(),
            Self::Build => "build".into(),
        }
    }
}

impl From<ClientError> for Failure {
    fn from(error: ClientError) -> Self {
        match error {
            ClientError::Rpc(error) => Self::Rpc(error.code),
            ClientError::Transport(_) => Self::Transport,
            ClientError::Timeout(_) => Self::Timeout,
            ClientError::Result(error) => Self::from(error),
            _ => Self::Protocol,
        }
    }
}

impl From<ResultError> for Failure {
    fn from(error: ResultError) -> Self {
        match error {
            ResultError::Signature(_) => Self::Signature,
            ResultError::WrongWorkOrder(_)
            | ResultError::OtherIds(_)
            | ResultError::OtherRequest
            | ResultError::DuplicateOutput(_) => Self::WrongOutput,
            _ => Self::Decryption,
        }
    }
}

/// Whether a result counts: the signature verifies under `verification_key`, every output
/// decrypts and matches its hash, and, when `expected` is given, the outputs are exactly that.
///
/// # Errors
/// The [`Failure`] that keeps it from counting.
pub fn judge(
    pending: &PendingResult,
    result: &WorkOrderResult,
    verification_key: &EcdsaVerifyingKey,
    expected: Option<&[Vec<u8>]>,
) -> Result<(), Failure> {
    let outputs = pending.open_with_key(result, verification_key)?;
    if let Some(expected) = expected {
        let got: Vec<&[u8]> = outputs.iter().map(|(_, data)| data.as_slice()).collect();
        let want: Vec<&[u8]> = expected.iter().map(Vec::as_slice).collect();
        if got != want {
            return Err(Failure::WrongOutput);
        }
    }
    Ok(())
}

/// Latency percentiles, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Slowest.
    pub max: f64,
}

impl Latency {
    /// The percentiles of `samples` (sorted here).
    pub fn of(samples: &mut [Duration]) -> Self {
        samples.sort_unstable();
        let at = |q: f64| {
            samples
                .get(((samples.len() as f64 * q).ceil() as usize).saturating_sub(1))
                .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
        };
        Self { p50: at(0.50), p95: at(0.95), p99: at(0.99), max: at(1.0) }
    }
}

/// What a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Orders whose results were verified, decrypted and checked.
    pub completed: u64,
    /// Orders that did not count, by kind.
    pub errors: BTreeMap<String, u64>,
    /// Wall time of the run, in seconds.
    pub seconds: f64,
    /// Completed orders per second.
    pub orders_per_second: f64,
    /// From submission to a checked result, completed orders only.
    pub latency_ms: Latency,
}

fn input(input_size: usize, requester: usize, n: u64) -> Vec<u8> {
    let mut input = format!("requester {requester} order {n} ").into_bytes();
    input.resize(input_size.max(input.len()), b'x');
    input
}

/// One order, from build to a judged result.
async fn one_order(
    client: &Client,
    worker: &Worker,
    config: &BenchConfig,
    signer: Option<&EcdsaSigningKey>,
    input: &[u8],
) -> Result<(), Failure> {
    let mut builder = worker.work_order(&config.workload).map_err(|_| Failure::Build)?;
    builder.input(input, InputProtection::Session).map_err(|_| Failure::Build)?;
    let (request, pending) = builder.build(signer).map_err(|_| Failure::Build)?;
    let result = match client.submit(&request).await? {
        Submission::Done(result) => *result,
        Submission::Pending => poll(client, &request.work_order_id, config.result_timeout).await?,
    };
    let expected = (config.workload == "echo-result").then(|| {
        let mut output = b"RESULT: ".to_vec();
        output.extend_from_slice(input);
        vec![output]
    });
    judge(&pending, &result, &worker.verifying_key, expected.as_deref())
}

/// Polls with a short first interval that doubles: few extra requests, little added latency.
async fn poll(
    client: &Client,
    work_order_id: &str,
    timeout: Duration,
) -> Result<WorkOrderResult, Failure> {
    let deadline = Instant::now() + timeout;
    let mut interval = Duration::from_millis(2);
    loop {
        tokio::time::sleep(interval).await;
        if let Some(result) = client.result(work_order_id).await? {
            return Ok(result);
        }
        if Instant::now() >= deadline {
            return Err(Failure::Timeout);
        }
        interval = (interval * 2).min(Duration::from_millis(32));
    }
}

/// Runs the load; `progress(completed, failed)` is called after every order.
pub async fn run(
    client: Arc<Client>,
    worker: Arc<Worker>,
    config: BenchConfig,
    progress: Arc<dyn Fn(u64, u64) + Send + Sync>,
) -> Report {
    let config = Arc::new(config);
    let issued = Arc::new(AtomicU64::new(0));
    let completed = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..config.concurrency.max(1))
        .map(|requester| {
            let (client, worker, config) =
                (Arc::clone(&client), Arc::clone(&worker), Arc::clone(&config));
            let (issued, completed, failed, progress) = (
                Arc::clone(&issued),
                Arc::clone(&completed),
                Arc::clone(&failed),
                Arc::clone(&progress),
            );
            tokio::spawn(async move {
                let signer = if config.signed { EcdsaSigningKey::generate().ok() } else { None };
                let mut latencies = Vec::new();
                let mut errors: BTreeMap<String, u64> = BTreeMap::new();
                loop {
                    let n = issued.fetch_add(1, Ordering::Relaxed);
                    let more = match config.stop {
                        Stop::Count(count) => n < count,
                        Stop::Duration(duration) => started.elapsed() < duration,
                    };
                    if !more {
                        break;
                    }
                    let input = input(config.input_size, requester, n);
                    let sent = Instant::now();
                    match one_order(&client, &worker, &config, signer.as_ref(), &input).await {
                        Ok(()) => {
                            latencies.push(sent.elapsed());
                            completed.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(failure) => {
                            *errors.entry(failure.label()).or_default() += 1;
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    progress(completed.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
                }
                (latencies, errors)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    for task in tasks {
        match task.await {
            Ok((task_latencies, task_errors)) => {
                latencies.extend(task_latencies);
                for (label, count) in task_errors {
                    *errors.entry(label).or_default() += count;
                }
            }
            Err(_) => *errors.entry("requester task failed".into()).or_default() += 1,
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let completed = latencies.len() as u64;
    Report {
        completed,
        errors,
        seconds,
        orders_per_second: completed as f64 / seconds,
        latency_ms: Latency::of(&mut latencies),
    }
}
