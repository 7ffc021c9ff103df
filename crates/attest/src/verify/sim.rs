//! The `sim` evidence format: a JSON document signed by a simulation attestation key, written by
//! the simulated platform (`afallon_platform::SimPlatform`) and verified here. It proves nothing about
//! hardware; only a policy that allows simulation accepts it.

use afallon_crypto::{EcdsaSignature, EcdsaSigningKey, EcdsaVerifyingKey, Sha256};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};

use super::{UnixTime, Verifier, VerifyError};
use crate::evidence::{EvidenceKind, Measurement, ReportData, TcbStatus, VerifiedEvidence};

const EVIDENCE_DOMAIN: &[u8] = b"afallon-sim-evidence-v1\0";
const VERSION: u32 = 1;

/// The `sim` evidence document.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SimDocument {
    kind: String,
    version: u32,
    measurement: String,
    report_data: String,
    attestation_key: String,
    signature: String,
}

fn evidence_digest(
    measurement: &Measurement,
    report_data: &ReportData,
) -> afallon_crypto::Sha256Digest {
    let mut h = Sha256::new();
    h.update(EVIDENCE_DOMAIN);
    h.update(measurement.as_bytes());
    h.update(&report_data.0);
    h.finalize()
}

/// `sim` evidence that an enclave measured `measurement` chose `report_data`, signed by `key`:
/// what the simulated platform (`afallon_platform::SimPlatform`) produces.
pub fn sign(key: &EcdsaSigningKey, measurement: &Measurement, report_data: &ReportData) -> Vec<u8> {
    let signature = key.sign_digest(&evidence_digest(measurement, report_data));
    let document = SimDocument {
        kind: EvidenceKind::Sim.name().to_owned(),
        version: VERSION,
        measurement: hex::encode(measurement.as_bytes()),
        report_data: hex::encode(report_data.0),
        attestation_key: key.verifying_key().to_pem(),
        signature: BASE64.encode(signature.to_der()),
    };
    // A struct of strings and an integer always serializes.
    serde_json::to_vec(&document).unwrap_or_default()
}

/// Verifies `sim` evidence: its form and its signature by the simulation key it names, which it
/// returns in [`VerifiedEvidence::simulation_key`]. Time plays no part.
#[derive(Debug, Clone, Copy, Default)]
pub struct SimVerifier;

impl Verifier for SimVerifier {
    fn kind(&self) -> EvidenceKind {
        EvidenceKind::Sim
    }

    fn verify(&self, evidence: &[u8], _at: UnixTime) -> Result<VerifiedEvidence, VerifyError> {
        let document: SimDocument = serde_json::from_slice(evidence)
            .map_err(|_| VerifyError::Malformed("not a sim evidence document"))?;
        if document.kind != EvidenceKind::Sim.name() {
            return Err(VerifyError::Malformed("kind is not sim"));
        }
        if document.version != VERSION {
            return Err(VerifyError::UnsupportedVersion(document.version));
        }
        let measurement: [u8; 32] = hex::decode(&document.measurement)
            .ok()
            .and_then(|m| m.try_into().ok())
            .ok_or(VerifyError::Malformed("measurement is not 32 hex bytes"))?;
        let report_data: [u8; 64] = hex::decode(&document.report_data)
            .ok()
            .and_then(|r| r.try_into().ok())
            .ok_or(VerifyError::Malformed("reportData is not 64 hex bytes"))?;
        let key = EcdsaVerifyingKey::from_pem(&document.attestation_key)
            .map_err(|_| VerifyError::Malformed("attestationKey is not a secp256k1 public key"))?;
        let signature = BASE64
            .decode(&document.signature)
            .ok()
            .and_then(|der| EcdsaSignature::from_der(&der).ok())
            .ok_or(VerifyError::Malformed("signature is not base64 DER"))?;
        let (measurement, report_data) = (Measurement::from(measurement), ReportData(report_data));
        key.verify_digest(&evidence_digest(&measurement, &report_data), &signature)
            .map_err(|_| VerifyError::BadSignature)?;
        Ok(VerifiedEvidence {
            kind: EvidenceKind::Sim,
            measurement,
            report_data,
            tcb_status: TcbStatus::Simulated,
            advisories: Vec::new(),
            sgx_signer: None,
            simulation_key: Some(key),
            snp_tcb: None,
            tdx: None,
            issued_at: None,
        })
    }
}
