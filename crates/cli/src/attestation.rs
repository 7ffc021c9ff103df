//! `afallon verify` and `afallon collateral`: a requester's attestation policy read from a file,
//! a worker's evidence checked under it (and its key binding) with what was found printed, and
//! DCAP collateral imported into the data directory for offline verification.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use afallon_attest::verify::sgx_dcap::{Collateral, CollateralCache};
use afallon_attest::{Measurement, Policy, SnpTcb, TcbStatus, UnixTime};
use afallon_client::{Attestation, verify_worker_record};
use afallon_platform::SimPlatform;
use afallon_proto::WorkerRecord;
use anyhow::Context as _;
use clap::{Args, Subcommand};
use serde::Deserialize;
use serde_json::json;

use crate::requester::ConnectArgs;

/// A policy file (TOML). Every key may be left out: the default refuses simulation, accepts
/// any measurement and asks for an up-to-date TCB.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PolicyFile {
    /// Accept simulated evidence (from the local node's simulation key, or any with
    /// `--insecure-allow-simulation`).
    #[serde(default)]
    allow_simulation: bool,
    /// Allowed measurements: MRENCLAVE (SGX), MRTD (TDX), MEASUREMENT (SNP), in hex.
    #[serde(default)]
    measurements: Vec<String>,
    /// Allowed SGX signers.
    #[serde(default)]
    sgx_signers: Vec<SignerEntry>,
    /// The lowest TCB status accepted: `UpToDate`, `SwHardeningNeeded`, `ConfigurationNeeded`,
    /// `ConfigurationAndSwHardeningNeeded`, `OutOfDate`, `OutOfDateConfigurationNeeded`.
    minimum_tcb: Option<String>,
    /// Advisories refused (`INTEL-SA-00615`, ...).
    #[serde(default)]
    refused_advisories: Vec<String>,
    /// The lowest SEV-SNP TCB version accepted.
    minimum_snp_tcb: Option<SnpTcbEntry>,
    /// The oldest a dated report (IAS) may be, in seconds.
    max_report_age_seconds: Option<u64>,
    /// Allowed TDX runtime measurements: RTMR0 to RTMR3 in hex, one list of four each.
    #[serde(default)]
    tdx_rtmrs: Vec<[String; 4]>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SignerEntry {
    mr_signer: String,
    isv_prod_id: u16,
    #[serde(default)]
    min_isv_svn: u16,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SnpTcbEntry {
    bootloader: u8,
    tee: u8,
    snp: u8,
    microcode: u8,
}

fn tcb_status(name: &str) -> anyhow::Result<TcbStatus> {
    Ok(match name {
        "UpToDate" => TcbStatus::UpToDate,
        "SwHardeningNeeded" => TcbStatus::SwHardeningNeeded,
        "ConfigurationNeeded" => TcbStatus::ConfigurationNeeded,
        "ConfigurationAndSwHardeningNeeded" => TcbStatus::ConfigurationAndSwHardeningNeeded,
        "OutOfDate" => TcbStatus::OutOfDate,
        "OutOfDateConfigurationNeeded" => TcbStatus::OutOfDateConfigurationNeeded,
        other => anyhow::bail!("minimum_tcb: unknown TCB status {other:?}"),
    })
}

impl PolicyFile {
    /// Reads a policy file.
    pub(crate) fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the policy {}", path.display()))?;
        parse_policy(&text).with_context(|| format!("the policy {}", path.display()))
    }

    /// The policy it describes. Simulation, when allowed, is trusted from `sim_key` alone if
    /// given, from any simulation key otherwise.
    fn policy(
        &self,
        sim_key: Option<afallon_crypto::EcdsaVerifyingKey>,
        collateral: Arc<CollateralCache>,
    ) -> anyhow::Result<Policy> {
        let mut policy = Policy::new().with_dcap_collateral(collateral);
        if self.allow_simulation {
            policy = policy.insecure_allow_simulation();
            if let Some(key) = sim_key {
                policy = policy.trust_simulation_key(key);
            }
        }
        for hex_text in &self.measurements {
            let bytes = hex::decode(hex_text).ok().and_then(|b| Measurement::from_slice(&b));
            let measurement = bytes
                .with_context(|| format!("measurements: {hex_text:?} is not 32 or 48 hex bytes"))?;
            policy = policy.allow_measurement(measurement);
        }
        for signer in &self.sgx_signers {
            let mr_signer = hex::decode(&signer.mr_signer)
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
                .with_context(|| {
                    format!("sgx_signers: {:?} is not 32 hex bytes", signer.mr_signer)
                })?;
            policy = policy.allow_sgx_signer(mr_signer, signer.isv_prod_id, signer.min_isv_svn);
        }
        if let Some(minimum) = &self.minimum_tcb {
            policy = policy.minimum_tcb(tcb_status(minimum)?);
        }
        for advisory in &self.refused_advisories {
            policy = policy.refuse_advisory(advisory.clone());
        }
        if let Some(seconds) = self.max_report_age_seconds {
            policy = policy.max_report_age(seconds);
        }
        for rtmrs in &self.tdx_rtmrs {
            let mut parsed = [[0; 48]; 4];
            for (register, text) in parsed.iter_mut().zip(rtmrs) {
                *register = hex::decode(text)
                    .ok()
                    .and_then(|b| <[u8; 48]>::try_from(b).ok())
                    .with_context(|| format!("tdx_rtmrs: {text:?} is not 48 hex bytes"))?;
            }
            policy = policy.allow_tdx_rtmrs(parsed);
        }
        if let Some(tcb) = &self.minimum_snp_tcb {
            policy = policy.minimum_snp_tcb(SnpTcb {
                bootloader: tcb.bootloader,
                tee: tcb.tee,
                snp: tcb.snp,
                microcode: tcb.microcode,
            });
        }
        Ok(policy)
    }
}

/// Parses a policy file's TOML.
fn parse_policy(text: &str) -> anyhow::Result<PolicyFile> {
    use figment::providers::{Format as _, Toml};
    Ok(figment::Figment::from(Toml::string(text)).extract()?)
}

/// The DCAP collateral imported into `data_dir` (its `collateral` directory), for verification
/// without the network.
pub(crate) fn load_collateral(data_dir: &Path) -> anyhow::Result<CollateralCache> {
    let dir = data_dir.join("collateral");
    let mut cache = CollateralCache::new();
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(cache),
        Err(error) => return Err(error).with_context(|| format!("reading {}", dir.display())),
    };
    for entry in entries {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "json") {
            // One bad file does not stop verification of every other platform.
            match std::fs::read(&path)
                .map_err(anyhow::Error::from)
                .and_then(|json| Collateral::from_json(&json).map_err(anyhow::Error::from))
            {
                Ok(collateral) => cache.insert(collateral),
                Err(error) => {
                    eprintln!("warning: skipping the collateral {}: {error}", path.display())
                }
            }
        }
    }
    Ok(cache)
}

/// `afallon verify`.
#[derive(Debug, Args)]
pub(crate) struct VerifyArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    /// The worker's name (its id is SHA-256 of it), fetched from the listener.
    #[arg(short = 'w', long = "worker", conflicts_with_all = ["worker_id", "record"])]
    worker: Option<String>,
    /// The worker's id in hex, fetched from the listener.
    #[arg(long, conflicts_with = "record")]
    worker_id: Option<String>,
    /// A worker record (the JSON of a `WorkerRetrieve` result) read from this file instead.
    #[arg(long)]
    record: Option<PathBuf>,
    /// The policy file (TOML) [default: hardware TEEs only, an up-to-date TCB].
    #[arg(long)]
    policy: Option<PathBuf>,
    /// Verify as of this time (seconds since the Unix epoch) [default: now].
    #[arg(long)]
    at: Option<u64>,
    /// The local node's data directory: its simulation key (trusted when the policy allows
    /// simulation) and its imported collateral.
    #[arg(long, default_value = "afallon-data")]
    data_dir: PathBuf,
    /// Accept simulated evidence from any simulation key. For development only.
    #[arg(long)]
    insecure_allow_simulation: bool,
}

/// The policy a requester on this machine verifies workers under, and what it trusts in words:
/// the policy file's (or the default: hardware TEEs only, an up-to-date TCB, and simulation if
/// `default_simulation`), with simulation, where allowed, trusted from the local node's key in
/// `data_dir` only (from any key with `insecure_allow_simulation`), and the DCAP collateral
/// imported into `data_dir`.
pub(crate) fn requester_policy(
    policy: Option<&Path>,
    default_simulation: bool,
    data_dir: &Path,
    insecure_allow_simulation: bool,
) -> anyhow::Result<(Policy, String)> {
    let mut file = match policy {
        Some(path) => PolicyFile::load(path)?,
        None => PolicyFile { allow_simulation: default_simulation, ..PolicyFile::default() },
    };
    let (sim_key, trusted) = if insecure_allow_simulation {
        file.allow_simulation = true;
        (None, "any simulated TEE (--insecure-allow-simulation)".to_owned())
    } else {
        let key = SimPlatform::local_attestation_key(&data_dir.join("sim"))
            .context("reading the local simulation key")?;
        // Simulation from the local node's key, or none: never from a key nobody named.
        file.allow_simulation &= key.is_some();
        let trusted = if file.allow_simulation {
            format!("the simulated TEE of the local node in {}", data_dir.display())
        } else {
            "hardware TEEs only".to_owned()
        };
        (key, trusted)
    };
    let collateral = Arc::new(load_collateral(data_dir)?);
    Ok((file.policy(sim_key, collateral)?, trusted))
}

/// `afallon verify`: checks a worker's evidence and key binding under a policy and prints what
/// it found; fails (exit 1) with the check that failed.
pub(crate) async fn verify(args: VerifyArgs) -> anyhow::Result<()> {
    let (policy, _) = requester_policy(
        args.policy.as_deref(),
        false,
        &args.data_dir,
        args.insecure_allow_simulation,
    )?;
    let (worker_id, record): (String, WorkerRecord) =
        match (&args.record, &args.worker_id, &args.worker) {
            (Some(path), id, _) => {
                let text =
                    std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
                let record = serde_json::from_slice(&text)
                    .with_context(|| format!("{} is not a worker record", path.display()))?;
                (id.clone().unwrap_or_else(|| "-".into()), record)
            }
            (None, Some(id), _) => (id.clone(), args.connect.client()?.worker_record(id).await?),
            (None, None, Some(name)) => {
                let id = afallon_proto::worker_id_from_name(name);
                (id.clone(), args.connect.client()?.worker_record(&id).await?)
            }
            (None, None, None) => {
                anyhow::bail!("name a worker (-w NAME, --worker-id HEX) or --record FILE")
            }
        };
    let at = args.at.map_or_else(UnixTime::now, UnixTime);
    let worker = verify_worker_record(&worker_id, record, &policy, at)
        .with_context(|| format!("worker {worker_id} does not verify under the policy"))?;
    let found = match &worker.attestation {
        Attestation::Verified(evidence) => json!({
            "kind": evidence.kind.name(),
            "simulated": worker.is_simulated(),
            "measurement": evidence.measurement.to_hex_upper(),
            "tcbStatus": format!("{:?}", evidence.tcb_status),
            "advisories": evidence.advisories,
            "sgxSigner": evidence.sgx_signer.map(|s| json!({
                "mrSigner": hex::encode_upper(s.mr_signer),
                "isvProdId": s.isv_prod_id,
                "isvSvn": s.isv_svn,
            })),
            "snpTcb": evidence.snp_tcb.map(|t| format!("{t:?}")),
            "tdxRtmrs": evidence.tdx.map(|t| t.rtmrs.map(hex::encode)),
            "bindsVerificationKey": true,
        }),
        _ => json!({"kind": "none", "simulated": true}),
    };
    if args.connect.json {
        println!("{}", json!({"workerId": worker_id, "verified": true, "evidence": found}));
        return Ok(());
    }
    println!("worker {worker_id}: verified at {}", at.0);
    match &worker.attestation {
        Attestation::Verified(evidence) => {
            if worker.is_simulated() {
                println!("  SIMULATED TEE: proves nothing about hardware");
            }
            println!("  evidence       {}", evidence.kind.name());
            println!("  measurement    {}", evidence.measurement.to_hex_upper());
            println!("  TCB status     {:?}", evidence.tcb_status);
            if !evidence.advisories.is_empty() {
                println!("  advisories     {}", evidence.advisories.join(", "));
            }
            if let Some(signer) = evidence.sgx_signer {
                println!(
                    "  SGX signer     {} product {} SVN {}",
                    hex::encode_upper(signer.mr_signer),
                    signer.isv_prod_id,
                    signer.isv_svn
                );
            }
            if let Some(tcb) = evidence.snp_tcb {
                println!("  SNP TCB        {tcb:?}");
            }
            if let Some(tdx) = evidence.tdx {
                // What a policy's `tdx_rtmrs` names.
                for (n, rtmr) in tdx.rtmrs.iter().enumerate() {
                    println!("  RTMR{n}          {}", hex::encode(rtmr));
                }
            }
            println!("  report data    binds the worker's verification key");
        }
        _ => println!("  NO evidence: an unattested worker, accepted because simulation is"),
    }
    Ok(())
}

/// `afallon collateral`.
#[derive(Debug, Args)]
pub(crate) struct CollateralArgs {
    #[command(subcommand)]
    command: CollateralCommand,
}

#[derive(Debug, Subcommand)]
enum CollateralCommand {
    /// Imports DCAP collateral files (the `QuoteCollateralV3` JSON that PCCS and PCS serve, one
    /// platform each, e.g. from an offline bundle) into the data directory.
    Import {
        /// The collateral files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// The data directory to import into.
        #[arg(long, default_value = "afallon-data")]
        data_dir: PathBuf,
    },
}

/// `afallon collateral import`: checks each file, then stores it as
/// `DATA_DIR/collateral/<tee>-<fmspc>.json`, replacing what was there for that platform.
pub(crate) fn collateral(args: CollateralArgs) -> anyhow::Result<()> {
    let CollateralCommand::Import { files, data_dir } = args.command;
    let dir = data_dir.join("collateral");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    for file in files {
        let json = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
        let collateral = Collateral::from_json(&json)
            .with_context(|| format!("{} is not DCAP collateral", file.display()))?;
        let target = dir.join(format!("{}.json", collateral.name()));
        // Never back to older collateral (which could undo a TCB recovery).
        if let Ok(held) = std::fs::read(&target)
            && let Ok(held) = Collateral::from_json(&held)
            && held.issued() > collateral.issued()
        {
            anyhow::bail!(
                "{} was issued before the collateral held for {} (issued {}): not imported",
                file.display(),
                collateral.name(),
                held.issued().0
            );
        }
        let tmp = target.with_extension("tmp");
        std::fs::write(&tmp, &json).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &target).with_context(|| format!("writing {}", target.display()))?;
        println!(
            "imported {} as {} (valid until {})",
            file.display(),
            target.display(),
            collateral.next_update().0
        );
    }
    Ok(())
}
