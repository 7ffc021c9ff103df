//! Evidence, its kinds, and what verifying it establishes.

use std::fmt;

/// An enclave measurement (MRENCLAVE on SGX, MRTD on TDX, MEASUREMENT on SEV-SNP, a hash of the
/// enclave build in simulation): 32 bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Measurement(pub [u8; 32]);

impl Measurement {
    /// Upper-case hex, as worker records list measurements.
    pub fn to_hex_upper(&self) -> String {
        hex::encode_upper(self.0)
    }
}

impl fmt::Debug for Measurement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Measurement({})", hex::encode(self.0))
    }
}

/// The 64 bytes an enclave puts into its evidence to bind what it says (its keys) to the TEE.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReportData(pub [u8; 64]);

impl ReportData {
    /// What a singleton worker attests (wire spec §4.1): SHA-256 of its verification-key PEM
    /// string in the first 32 bytes, zeros after.
    pub fn for_verification_key(verification_key_pem: &str) -> Self {
        let mut data = [0u8; 64];
        data[..32]
            .copy_from_slice(afallon_crypto::sha256(verification_key_pem.as_bytes()).as_bytes());
        Self(data)
    }
}

impl fmt::Debug for ReportData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ReportData({})", hex::encode(self.0))
    }
}

/// The kinds of evidence afallon verifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EvidenceKind {
    /// The simulated TEE: signed by a local simulation key, proves nothing about hardware.
    Sim,
}

impl EvidenceKind {
    /// The kind's name, as it appears in evidence and in worker records.
    pub fn name(self) -> &'static str {
        match self {
            Self::Sim => "sim",
        }
    }
}

/// Encoded evidence of some kind, as it travels; verify it with a [`crate::Policy`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evidence {
    /// The kind, which selects the verifier.
    pub kind: EvidenceKind,
    /// The encoded evidence (for `sim`, a JSON document).
    pub document: String,
}

/// How evidence sits in a worker record's `workerTypeData` (wire spec §1.9, §4.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerProof {
    /// `proofDataType`.
    pub proof_data_type: String,
    /// `proofData`.
    pub proof_data: String,
    /// `enclaveCertificate`.
    pub enclave_certificate: Option<String>,
}

/// `proofDataType` of a simulated worker.
const SIM_PROOF_DATA_TYPE: &str = "afallon-sim";

impl Evidence {
    /// Where this evidence goes in a worker record.
    ///
    /// Simulated evidence keeps `proofData` empty, as Avalon's simulation mode does, because
    /// Avalon's clients verify any non-empty `proofData` as an Intel IAS report and stop with an
    /// error on anything else; `proofDataType` says the worker is simulated, and the evidence
    /// itself travels in `enclaveCertificate`.
    pub fn to_worker_proof(&self) -> WorkerProof {
        match self.kind {
            EvidenceKind::Sim => WorkerProof {
                proof_data_type: SIM_PROOF_DATA_TYPE.to_owned(),
                proof_data: String::new(),
                enclave_certificate: Some(self.document.clone()),
            },
        }
    }

    /// The evidence a worker record carries, if any.
    pub fn from_worker_proof(proof: &WorkerProof) -> Option<Self> {
        match proof.proof_data_type.as_str() {
            SIM_PROOF_DATA_TYPE => proof
                .enclave_certificate
                .as_ref()
                .map(|document| Self { kind: EvidenceKind::Sim, document: document.clone() }),
            _ => None,
        }
    }
}

/// The TCB (trusted computing base) status evidence proves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TcbStatus {
    /// Simulated: no hardware stands behind it.
    Simulated,
}

/// What verified evidence establishes. The caller must still check that the report data binds
/// the keys it is about to trust; [`crate::Policy::verify`] does so when given them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedEvidence {
    /// The kind of the evidence.
    pub kind: EvidenceKind,
    /// The measured enclave.
    pub measurement: Measurement,
    /// What the enclave put in its report.
    pub report_data: ReportData,
    /// The platform's TCB status.
    pub tcb_status: TcbStatus,
    /// Security advisories that apply to the platform.
    pub advisories: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_data_binds_the_pem_string() {
        let a = ReportData::for_verification_key(
            "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
        );
        let b = ReportData::for_verification_key(
            "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----",
        );
        assert_ne!(a, b);
        assert_eq!(a.0[32..], [0u8; 32]);
    }

    #[test]
    fn sim_evidence_round_trips_through_a_worker_record() {
        let evidence = Evidence { kind: EvidenceKind::Sim, document: "{}".into() };
        let proof = evidence.to_worker_proof();
        assert_eq!(proof.proof_data, "");
        assert_eq!(proof.proof_data_type, "afallon-sim");
        assert_eq!(Evidence::from_worker_proof(&proof), Some(evidence));
        let avalon_sim = WorkerProof {
            proof_data_type: "TEE-SGX-IAS".into(),
            proof_data: String::new(),
            enclave_certificate: None,
        };
        assert_eq!(Evidence::from_worker_proof(&avalon_sim), None);
    }
}
