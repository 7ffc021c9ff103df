//! The requester commands: `submit`, `workers`, `result`, `receipt`. Outputs go to standard
//! output (one line each, or JSON with `--json`); progress and verification notes go to standard
//! error.

use std::path::PathBuf;
use std::time::Duration;

use afallon_client::{Attestation, Client, InputProtection, Submission};
use afallon_crypto::EcdsaSigningKey;
use anyhow::Context as _;
use clap::Args;
use serde_json::json;

/// Where the listener is.
#[derive(Debug, Args)]
pub(crate) struct ConnectArgs {
    /// The listener's URL.
    #[arg(long, env = "AFALLON_URL", default_value = "http://127.0.0.1:1947")]
    url: String,
    /// For an https:// URL: the PEM file of the CA that signed the listener's certificate (the
    /// only CA trusted).
    #[arg(long, env = "AFALLON_CA_FILE")]
    ca_file: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub(crate) json: bool,
}

impl ConnectArgs {
    /// A client for the listener these arguments name.
    pub(crate) fn client(&self) -> anyhow::Result<Client> {
        client(&self.url, self.ca_file.as_deref())
    }
}

/// A client for `url`, trusting the CA in `ca_file` for an https:// URL.
pub(crate) fn client(url: &str, ca_file: Option<&std::path::Path>) -> anyhow::Result<Client> {
    Ok(match ca_file {
        Some(path) => {
            let pem = std::fs::read(path)
                .with_context(|| format!("reading the CA file {}", path.display()))?;
            Client::with_ca(url, &pem)?
        }
        None => Client::new(url)?,
    })
}

/// `afallon result` and `afallon receipt`.
#[derive(Debug, Args)]
pub(crate) struct IdArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    /// The work order's id.
    work_order_id: String,
}

/// `afallon submit`.
#[derive(Debug, Args)]
pub(crate) struct SubmitArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    /// The worker's name (its id is SHA-256 of it).
    #[arg(
        short = 'w',
        long = "worker",
        conflicts_with = "worker_id",
        required_unless_present = "worker_id"
    )]
    worker: Option<String>,
    /// The worker's id in hex, instead of its name.
    #[arg(long)]
    worker_id: Option<String>,
    /// The workload's name (echo-result, heart-disease-eval, inside-out-eval, simple-wallet).
    #[arg(short = 'l', long = "workload")]
    workload: String,
    /// One input item each.
    #[arg(short = 'i', long = "input", num_args = 1.., required = true)]
    inputs: Vec<String>,
    /// Send the inputs unencrypted (encryptedDataEncryptionKey "-").
    #[arg(long)]
    plain: bool,
    /// Sign the request with a fresh requester key.
    #[arg(long)]
    sign: bool,
    /// Create a receipt for the work order and show it when the result is in.
    #[arg(long)]
    receipt: bool,
    /// Expect the result in the submit answer (a listener in synchronous mode); polls otherwise.
    #[arg(long)]
    sync: bool,
    /// The local node's data directory: a simulated worker whose evidence is signed by this
    /// node's simulation key is accepted (unless `--policy` refuses simulation), and DCAP
    /// collateral imported there is used.
    #[arg(long, default_value = "afallon-data")]
    data_dir: PathBuf,
    /// The attestation policy file (TOML, docs/attestation.md) [default: simulation from the
    /// local node, else hardware TEEs only with an up-to-date TCB].
    #[arg(long)]
    policy: Option<PathBuf>,
    /// Accept simulated (or unattested) workers from anywhere. For development only.
    #[arg(long)]
    insecure_allow_simulation: bool,
    /// Go on with a worker whose attestation fails: nothing then vouches for its keys. Never in
    /// production.
    #[arg(long)]
    insecure_accept_unverified_worker: bool,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 60)]
    timeout: u64,
    /// The proxy model: read the worker from the on-chain registry, submit the order on the
    /// chain of this Ethereum node, and take the result from its completion event (the sending
    /// account's key from `AFALLON_ETH_KEY` or `--eth-key-file`).
    #[arg(long, requires = "contracts", value_name = "URL")]
    chain_rpc: Option<String>,
    /// With `--chain-rpc`: the deployment file `afallon deploy-contracts` wrote.
    #[arg(long, requires = "chain_rpc", value_name = "FILE")]
    contracts: Option<PathBuf>,
    /// With `--chain-rpc`: the file with the sending account's private key in hex.
    #[arg(long, requires = "chain_rpc", value_name = "FILE")]
    eth_key_file: Option<PathBuf>,
    /// With `--chain-rpc`: how deep the completion must be before it is taken.
    #[arg(long, requires = "chain_rpc", default_value_t = 0)]
    confirmations: u64,
}

/// Where an order goes: a listener, or a chain (the proxy model).
enum Route {
    Listener(Client),
    #[cfg(feature = "ethereum")]
    Chain(crate::chain::OnChain),
}

impl Route {
    fn of(args: &SubmitArgs) -> anyhow::Result<Self> {
        match (&args.chain_rpc, &args.contracts) {
            (Some(_rpc), Some(_contracts)) => {
                #[cfg(feature = "ethereum")]
                return Ok(Self::Chain(crate::chain::OnChain::new(
                    _rpc,
                    args.eth_key_file.clone(),
                    _contracts,
                    args.confirmations,
                )?));
                #[cfg(not(feature = "ethereum"))]
                anyhow::bail!(
                    "this afallon was built without the proxy model (feature `ethereum`)"
                );
            }
            _ => Ok(Self::Listener(args.connect.client()?)),
        }
    }

    async fn worker_record(&self, worker_id: &str) -> anyhow::Result<afallon_proto::WorkerRecord> {
        match self {
            Self::Listener(client) => Ok(client.worker_record(worker_id).await?),
            #[cfg(feature = "ethereum")]
            Self::Chain(chain) => chain.worker_record(worker_id).await,
        }
    }
}

pub(crate) async fn submit(args: SubmitArgs) -> anyhow::Result<()> {
    let route = Route::of(&args)?;
    let worker_id = match (&args.worker_id, &args.worker) {
        (Some(id), _) => id.clone(),
        (None, Some(name)) => afallon_proto::worker_id_from_name(name),
        (None, None) => anyhow::bail!("name a worker with -w NAME or --worker-id HEX"),
    };
    // Without a policy file, the local node's simulated TEE is accepted (as `afallon up` runs
    // it), and no other simulation.
    let (policy, trusted) = crate::attestation::requester_policy(
        args.policy.as_deref(),
        args.policy.is_none(),
        &args.data_dir,
        args.insecure_allow_simulation,
    )?;
    let record = route.worker_record(&worker_id).await.context("reading the worker's record")?;
    let now = afallon_attest::UnixTime::now();
    let worker =
        match afallon_client::verify_worker_record(&worker_id, record.clone(), &policy, now) {
            Ok(worker) => worker,
            Err(error) if args.insecure_accept_unverified_worker => {
                let why = format!("{error}");
                eprintln!(
                    "WARNING: worker {worker_id} FAILED attestation ({why}); going on because of \
                 --insecure-accept-unverified-worker: NOTHING vouches for its keys"
                );
                afallon_client::accept_worker_record_unverified(&worker_id, record, &why)?
            }
            Err(error) => {
                return Err(error).with_context(|| {
                    format!("verifying worker {worker_id} (accepting {trusted})")
                });
            }
        };
    match &worker.attestation {
        Attestation::Verified(evidence) if worker.is_simulated() => {
            eprintln!(
                "worker {worker_id}: SIMULATED TEE, measurement {}, accepted as {trusted}",
                evidence.measurement.to_hex_upper()
            )
        }
        Attestation::Verified(evidence) => eprintln!(
            "worker {worker_id}: attested, measurement {}",
            evidence.measurement.to_hex_upper()
        ),
        Attestation::Ignored(why) => {
            eprintln!("worker {worker_id}: attestation FAILED and was IGNORED ({why})");
        }
        _ => eprintln!("worker {worker_id}: NO attestation, accepted as {trusted}"),
    }

    let signer = if args.sign || args.receipt { Some(EcdsaSigningKey::generate()?) } else { None };
    let mut builder = worker.work_order(&args.workload)?;
    let protection = worker.item_protection();
    for input in &args.inputs {
        builder.input(
            input.as_bytes(),
            if args.plain { InputProtection::Plain } else { protection },
        )?;
    }
    if protection == InputProtection::SealedKey {
        // An output slot per input (what the built-in workloads answer), each with its own key.
        for _ in &args.inputs {
            builder.output(protection)?;
        }
    }
    let (request, pending) = builder.build(signer.as_ref().filter(|_| args.sign))?;
    let client = match route {
        Route::Listener(client) => client,
        #[cfg(feature = "ethereum")]
        Route::Chain(chain) => {
            let timeout = Duration::from_secs(args.timeout);
            let result = chain.submit_and_wait(&request, args.receipt, timeout).await?;
            let outputs = pending
                .open_with_key(&result, &worker.verifying_key)
                .context("verifying the result")?;
            let receipt = match args.receipt {
                true => {
                    let update = chain.wait_worker_update(&request, &worker, timeout).await?;
                    let status = update.update_type.unwrap_or_default();
                    Some((status, serde_json::to_value(update)?))
                }
                false => None,
            };
            return print_outputs(&args, &request, &worker_id, &worker, &result, &outputs, receipt);
        }
    };
    let submission = client.submit_surely(&request).await.context("submitting")?;
    eprintln!("work order {} submitted", request.work_order_id);
    if args.receipt
        && let Some(signer) = &signer
    {
        client.create_receipt(&request, signer).await.context("creating the receipt")?;
    }
    let timeout = Duration::from_secs(args.timeout);
    let result = match submission {
        Submission::Done(result) => *result,
        Submission::Pending => {
            if args.sync {
                eprintln!("the listener is not in synchronous mode; polling for the result");
            }
            wait(&client, &request.work_order_id, timeout).await?
        }
    };
    let outputs =
        pending.open_with_key(&result, &worker.verifying_key).context("verifying the result")?;
    let receipt = if args.receipt {
        // The worker adds its signed update just after the result is stored.
        let receipt = client.wait_receipt_update(&request.work_order_id, RECEIPT_POLL, timeout);
        Some(receipt.await.context("reading the receipt")?)
    } else {
        None
    };

    let receipt = match receipt {
        Some(receipt) => Some((receipt.receipt_current_status, serde_json::to_value(receipt)?)),
        None => None,
    };
    print_outputs(&args, &request, &worker_id, &worker, &result, &outputs, receipt)
}

/// Prints the verified outputs (and the receipt's status and the receipt, or in the proxy model
/// the worker's verified update), as text or JSON.
fn print_outputs(
    args: &SubmitArgs,
    request: &afallon_proto::WorkOrderRequest,
    worker_id: &str,
    worker: &afallon_client::Worker,
    result: &afallon_proto::WorkOrderResult,
    outputs: &[(i64, Vec<u8>)],
    receipt: Option<(i64, serde_json::Value)>,
) -> anyhow::Result<()> {
    if args.connect.json {
        let outputs: Vec<_> = outputs
            .iter()
            .map(|(index, data)| json!({"index": index, "data": String::from_utf8_lossy(data)}))
            .collect();
        let mut out = json!({
            "workOrderId": request.work_order_id,
            "workerId": worker_id,
            "signatureVerified": true,
            "simulated": worker.is_simulated(),
            "outputs": outputs,
        });
        if let Some((_, receipt)) = receipt {
            out["receipt"] = receipt;
        }
        println!("{out}");
    } else {
        for (_, data) in outputs {
            println!("{}", String::from_utf8_lossy(data));
        }
        if result.ext_verification_key.is_some() {
            eprintln!(
                "signature verified in two steps: the result is signed by a key of its own for this \
                 order, which worker {worker_id}'s key vouched for (a pool)"
            );
        } else {
            eprintln!("signature verified: the result is signed by worker {worker_id}'s key");
        }
        if let Some((status, _)) = receipt {
            eprintln!("receipt status: {}", receipt_status_name(status));
        }
    }
    Ok(())
}

/// Polls with growing intervals: a fast worker answers within milliseconds.
async fn wait(
    client: &Client,
    work_order_id: &str,
    timeout: Duration,
) -> anyhow::Result<afallon_proto::WorkOrderResult> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut interval = Duration::from_millis(5);
    loop {
        if let Some(result) = client.result(work_order_id).await.context("fetching the result")? {
            return Ok(result);
        }
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!("no result for work order {work_order_id} after {timeout:?}");
        }
        tokio::time::sleep(interval).await;
        interval = (interval * 2).min(Duration::from_millis(250));
    }
}

fn receipt_status_name(status: i64) -> String {
    match afallon_proto::ReceiptStatus::from_code(status) {
        Some(s) => format!("{s:?} ({status})").to_lowercase(),
        None => status.to_string(),
    }
}

pub(crate) async fn workers(args: ConnectArgs) -> anyhow::Result<()> {
    let client = args.client()?;
    let found = client.worker_lookup(1).await.context("looking up workers")?;
    let mut rows = Vec::new();
    for id in &found.ids {
        let record =
            client.worker_record(id).await.with_context(|| format!("retrieving worker {id}"))?;
        rows.push((id.clone(), record));
    }
    if args.json {
        let list: Vec<_> =
            rows.iter().map(|(id, record)| json!({"workerId": id, "record": record})).collect();
        println!("{}", serde_json::Value::Array(list));
    } else {
        for (id, record) in rows {
            let data = &record.details.worker_type_data;
            println!(
                "{id}  status {}  {}  proof {}",
                record.status, record.details.key_encryption_algorithm, data.proof_data_type
            );
        }
    }
    Ok(())
}

pub(crate) async fn result(args: IdArgs) -> anyhow::Result<()> {
    let client = args.connect.client()?;
    match client.result(&args.work_order_id).await? {
        Some(result) => println!("{}", serde_json::to_string_pretty(&result)?),
        None => println!("pending"),
    }
    Ok(())
}

/// How often `submit --receipt` reads the receipt while its worker's update is not in.
const RECEIPT_POLL: Duration = Duration::from_millis(25);

pub(crate) async fn receipt(args: IdArgs) -> anyhow::Result<()> {
    let client = args.connect.client()?;
    let receipt = client.receipt(&args.work_order_id).await?;
    let last = client.receipt_update_retrieve(&args.work_order_id, None).await.ok();
    if args.connect.json {
        println!("{}", json!({"receipt": receipt, "lastUpdate": last}));
    } else {
        println!(
            "receipt for work order {}: {}",
            args.work_order_id,
            receipt_status_name(receipt.receipt_current_status)
        );
        if let Some(last) = last {
            println!(
                "updates: {}, last by {}",
                last.update_count,
                last.update.updater_id.unwrap_or_default()
            );
        }
    }
    Ok(())
}
