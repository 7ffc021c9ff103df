//! What `sgx-dcap` and `tdx` share: a quote checked by dcap-qvl against Intel's collateral for
//! its platform, taken from a [`CollateralCache`] (never fetched here), at a given time; and the
//! mapping of what dcap-qvl finds onto afallon's terms.

use std::collections::HashMap;

use afallon_crypto::pem;
use dcap_qvl::QuoteCollateralV3;
use dcap_qvl::quote::Quote;
use dcap_qvl::verify::{QuoteVerifier, VerifiedReport};
use serde::Deserialize;

use std::sync::Arc;

use super::{UnixTime, Verifier, VerifyError, parse_utc};
use crate::evidence::{EvidenceKind, TcbStatus, VerifiedEvidence};

/// Intel's SGX Root CA (DER): the root of PCK certificates and of the TCB info and QE identity
/// signers.
fn intel_sgx_root() -> Vec<u8> {
    include_bytes!("roots/intel-sgx-root-ca.der").to_vec()
}

/// Verifies DCAP quotes of one TEE (SGX enclaves or TDX trust domains) with the collateral it
/// is given, under Intel's SGX Root CA unless told otherwise.
#[derive(Debug, Clone)]
pub struct DcapVerifier {
    tee: Tee,
    collateral: Arc<CollateralCache>,
    root: Vec<u8>,
}

impl DcapVerifier {
    /// The `sgx-dcap` verifier, with `collateral`.
    pub fn sgx(collateral: Arc<CollateralCache>) -> Self {
        Self { tee: Tee::Sgx, collateral, root: intel_sgx_root() }
    }

    /// The `tdx` verifier, with `collateral`.
    pub fn tdx(collateral: Arc<CollateralCache>) -> Self {
        Self { tee: Tee::Tdx, collateral, root: intel_sgx_root() }
    }

    /// The same, trusting the root certificate `root_der` instead of Intel's.
    #[must_use]
    pub fn with_root_der(mut self, root_der: Vec<u8>) -> Self {
        self.root = root_der;
        self
    }
}

impl Verifier for DcapVerifier {
    fn kind(&self) -> EvidenceKind {
        match self.tee {
            Tee::Sgx => EvidenceKind::SgxDcap,
            Tee::Tdx => EvidenceKind::Tdx,
        }
    }

    fn verify(&self, evidence: &[u8], at: UnixTime) -> Result<VerifiedEvidence, VerifyError> {
        let verified = verify_quote(evidence, self.tee, &self.collateral, &self.root, at)?;
        match self.tee {
            Tee::Sgx => super::sgx_dcap::evidence(verified),
            Tee::Tdx => super::tdx::evidence(verified),
        }
    }
}

/// The TEE a piece of collateral is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tee {
    /// SGX enclaves.
    Sgx,
    /// TDX trust domains.
    Tdx,
}

/// Intel's collateral for one platform family (FMSPC): TCB info, QE identity, CRLs and their
/// signers' chains, as PCS and PCCS serve them (dcap-qvl's `QuoteCollateralV3` JSON).
#[derive(Clone)]
pub struct Collateral {
    tee: Tee,
    fmspc: [u8; 6],
    next_update: u64,
    issued: u64,
    inner: QuoteCollateralV3,
}

impl std::fmt::Debug for Collateral {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Collateral")
            .field("tee", &self.tee)
            .field("fmspc", &hex::encode_upper(self.fmspc))
            .field("issued", &self.issued)
            .field("next_update", &self.next_update)
            .finish_non_exhaustive()
    }
}

/// The dates and the platform of signed collateral JSON.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Dated {
    issue_date: String,
    next_update: String,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    fmspc: Option<String>,
}

impl Collateral {
    /// Reads collateral JSON (dcap-qvl's `QuoteCollateralV3` form).
    ///
    /// # Errors
    /// [`VerifyError::Malformed`] if it is not that form, or names no platform.
    pub fn from_json(json: &[u8]) -> Result<Self, VerifyError> {
        let malformed = |what| VerifyError::Malformed(what);
        let inner: QuoteCollateralV3 =
            serde_json::from_slice(json).map_err(|_| malformed("not DCAP collateral JSON"))?;
        let tcb: Dated = serde_json::from_str(&inner.tcb_info)
            .map_err(|_| malformed("the collateral's TCB info"))?;
        let qe: Dated = serde_json::from_str(&inner.qe_identity)
            .map_err(|_| malformed("the collateral's QE identity"))?;
        let tee = match tcb.id.as_deref() {
            Some("SGX") => Tee::Sgx,
            Some("TDX") => Tee::Tdx,
            _ => return Err(malformed("the TCB info names no TEE")),
        };
        let fmspc = tcb
            .fmspc
            .as_deref()
            .and_then(|f| hex::decode(f).ok())
            .and_then(|f| f.try_into().ok())
            .ok_or(malformed("the TCB info's FMSPC"))?;
        let date = |text: &str| parse_utc(text).ok_or(malformed("a collateral date"));
        let issued = date(&tcb.issue_date)?.max(date(&qe.issue_date)?);
        let next_update = date(&tcb.next_update)?.min(date(&qe.next_update)?);
        Ok(Self { tee, fmspc, next_update, issued, inner })
    }

    /// Its platform's name: the TEE and the FMSPC, `sgx-00A067110000`.
    pub fn name(&self) -> String {
        let tee = match self.tee {
            Tee::Sgx => "sgx",
            Tee::Tdx => "tdx",
        };
        format!("{tee}-{}", hex::encode_upper(self.fmspc))
    }

    /// When it was issued: the latest `issueDate` of its TCB info and QE identity.
    pub fn issued(&self) -> UnixTime {
        UnixTime(self.issued)
    }

    /// Until when it may be used: the earliest `nextUpdate` of its TCB info and QE identity.
    pub fn next_update(&self) -> UnixTime {
        UnixTime(self.next_update)
    }
}

/// Collateral by platform, loaded ahead of time (from an offline bundle): verification reads
/// it and never the network.
#[derive(Debug, Clone, Default)]
pub struct CollateralCache {
    by_platform: HashMap<(Tee, [u8; 6]), Collateral>,
}

impl CollateralCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `collateral`, keeping for each platform the one issued last.
    pub fn insert(&mut self, collateral: Collateral) {
        let key = (collateral.tee, collateral.fmspc);
        match self.by_platform.get(&key) {
            Some(held) if held.issued >= collateral.issued => {}
            _ => {
                self.by_platform.insert(key, collateral);
            }
        }
    }

    /// How many platforms it has collateral for.
    pub fn len(&self) -> usize {
        self.by_platform.len()
    }

    /// Whether it has none.
    pub fn is_empty(&self) -> bool {
        self.by_platform.is_empty()
    }

    fn get(&self, tee: Tee, fmspc: [u8; 6]) -> Option<&Collateral> {
        self.by_platform.get(&(tee, fmspc))
    }
}

/// The DER of SGX's FMSPC extension's OID (1.2.840.113741.1.13.1.4), which an OCTET STRING of
/// six bytes follows in a PCK certificate.
const FMSPC_OID: &[u8] = &[0x06, 0x0a, 0x2a, 0x86, 0x48, 0x86, 0xf8, 0x4d, 0x01, 0x0d, 0x01, 0x04];

/// The FMSPC of the PCK certificate a quote carries.
fn fmspc(quote: &[u8]) -> Result<[u8; 6], VerifyError> {
    let quote = Quote::parse(quote).map_err(|_| VerifyError::Malformed("not a DCAP quote"))?;
    let chain = quote
        .raw_cert_chain()
        .map_err(|_| VerifyError::Malformed("the quote carries no PCK certificate chain"))?;
    let chain = std::str::from_utf8(chain)
        .map_err(|_| VerifyError::Malformed("the quote's PCK chain is not PEM"))?;
    let pck = pem::decode(chain)
        .map_err(|_| VerifyError::Malformed("the quote's PCK chain is not PEM"))?;
    let at = pck
        .der
        .windows(FMSPC_OID.len())
        .position(|w| w == FMSPC_OID)
        .ok_or(VerifyError::Malformed("the PCK certificate has no FMSPC"))?;
    match pck.der.get(at + FMSPC_OID.len()..at + FMSPC_OID.len() + 8) {
        Some([0x04, 0x06, rest @ ..]) => {
            rest.try_into().map_err(|_| VerifyError::Malformed("the PCK certificate's FMSPC"))
        }
        _ => Err(VerifyError::Malformed("the PCK certificate's FMSPC")),
    }
}

/// Verifies a quote of `tee` with the collateral `cache` holds for its platform, under `root`,
/// at `at`.
fn verify_quote(
    quote: &[u8],
    tee: Tee,
    cache: &CollateralCache,
    root: &[u8],
    at: UnixTime,
) -> Result<VerifiedReport, VerifyError> {
    let fmspc = fmspc(quote)?;
    let collateral =
        cache.get(tee, fmspc).ok_or_else(|| VerifyError::NoCollateral(hex::encode_upper(fmspc)))?;
    if at.0 < collateral.issued || at.0 > collateral.next_update {
        return Err(VerifyError::CollateralExpired {
            at: at.0,
            issued: collateral.issued,
            next_update: collateral.next_update,
        });
    }
    // The signers' chains must end at the root this verifier pins.
    let ends_at_root = |chain: &str| {
        pem::decode_all(chain).ok().and_then(|blocks| blocks.last().map(|b| b.der == root))
            == Some(true)
    };
    let inner = &collateral.inner;
    if !ends_at_root(&inner.tcb_info_issuer_chain) || !ends_at_root(&inner.qe_identity_issuer_chain)
    {
        return Err(VerifyError::UntrustedRoot);
    }
    QuoteVerifier::new(root.to_vec()).verify(quote, inner, at.0).map_err(|error| {
        let message = format!("{error:#}");
        if message.contains("signature is invalid")
            || message.contains("Signature is invalid")
            || message.contains("hash mismatch")
        {
            VerifyError::BadSignature
        } else {
            VerifyError::Refused(message.chars().take(300).collect())
        }
    })
}

/// afallon's TCB status for Intel's (dcap-qvl's name for it); a TD that should relaunch counts
/// as out of date.
pub(crate) fn tcb_status(status: &str) -> Result<TcbStatus, VerifyError> {
    Ok(match status {
        "UpToDate" => TcbStatus::UpToDate,
        "SWHardeningNeeded" => TcbStatus::SwHardeningNeeded,
        "ConfigurationNeeded" => TcbStatus::ConfigurationNeeded,
        "ConfigurationAndSWHardeningNeeded" => TcbStatus::ConfigurationAndSwHardeningNeeded,
        "OutOfDate" | "TDRelaunchAdvised" => TcbStatus::OutOfDate,
        "OutOfDateConfigurationNeeded" | "TDRelaunchAdvisedConfigurationNeeded" => {
            TcbStatus::OutOfDateConfigurationNeeded
        }
        "Revoked" => TcbStatus::Revoked,
        other => return Err(VerifyError::QuoteRefused(other.chars().take(64).collect())),
    })
}
