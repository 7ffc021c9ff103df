//! Evidence, its kinds, and what verifying it establishes.

use std::fmt;

use afallon_crypto::EcdsaVerifyingKey;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

/// An enclave measurement: MRENCLAVE on SGX and a hash of the enclave build in simulation (32
/// bytes), MRTD on TDX and MEASUREMENT on SEV-SNP (48 bytes).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Measurement {
    bytes: [u8; 48],
    len: u8,
}

impl Measurement {
    /// The measurement `bytes`, if they are 32 or 48 long.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        let len = u8::try_from(bytes.len()).ok().filter(|len| matches!(len, 32 | 48))?;
        let mut out = [0; 48];
        out[..bytes.len()].copy_from_slice(bytes);
        Some(Self { bytes: out, len })
    }

    /// Its bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    /// Upper-case hex, as worker records list measurements.
    pub fn to_hex_upper(&self) -> String {
        hex::encode_upper(self.as_bytes())
    }
}

impl From<[u8; 32]> for Measurement {
    fn from(bytes: [u8; 32]) -> Self {
        let mut out = [0; 48];
        out[..32].copy_from_slice(&bytes);
        Self { bytes: out, len: 32 }
    }
}

impl From<[u8; 48]> for Measurement {
    fn from(bytes: [u8; 48]) -> Self {
        Self { bytes, len: 48 }
    }
}

impl fmt::Debug for Measurement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Measurement({})", hex::encode(self.as_bytes()))
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
    /// An SGX enclave's EPID quote as Intel's Attestation Service (IAS) verified it: the signed
    /// report, its signature and the signing certificate (wire spec §4.2).
    SgxEpid,
    /// An SGX enclave's ECDSA (DCAP) quote, checked against Intel's collateral.
    SgxDcap,
    /// A TDX trust domain's quote, checked against Intel's collateral.
    Tdx,
    /// An AMD SEV-SNP guest's attestation report with its VCEK.
    SevSnp,
}

impl EvidenceKind {
    /// The kind's name, as it appears in evidence and in worker records.
    pub fn name(self) -> &'static str {
        match self {
            Self::Sim => "sim",
            Self::SgxEpid => "sgx-epid",
            Self::SgxDcap => "sgx-dcap",
            Self::Tdx => "tdx",
            Self::SevSnp => "sev-snp",
        }
    }

    /// The kind called `name`, if afallon knows it.
    pub fn from_name(name: &str) -> Option<Self> {
        [Self::Sim, Self::SgxEpid, Self::SgxDcap, Self::Tdx]
            .into_iter()
            .find(|kind| kind.name() == name)
    }
}

/// Encoded evidence of some kind, as it travels; verify it with a [`crate::Policy`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evidence {
    /// The kind, which selects the verifier.
    pub kind: EvidenceKind,
    /// The evidence as its kind encodes it: for `sim` a JSON document, for `sgx-epid` the JSON
    /// object of wire spec §4.2.
    pub bytes: Vec<u8>,
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
/// `proofDataType` of an SEV-SNP worker: `proofData` is its evidence JSON.
const SNP_PROOF_DATA_TYPE: &str = "afallon-sev-snp";
/// `proofDataType` of an SGX worker attested by IAS, as Avalon writes it.
const IAS_PROOF_DATA_TYPE: &str = "TEE-SGX-IAS";

impl Evidence {
    /// Where this evidence goes in a worker record.
    ///
    /// Simulated evidence keeps `proofData` empty, as Avalon's simulation mode does, because
    /// Avalon's clients verify any non-empty `proofData` as an Intel IAS report and stop with an
    /// error on anything else; `proofDataType` says the worker is simulated, and the evidence
    /// itself travels in `enclaveCertificate`. IAS evidence is `proofData` as Avalon writes it.
    pub fn to_worker_proof(&self) -> WorkerProof {
        let text = String::from_utf8_lossy(&self.bytes).into_owned();
        match self.kind {
            EvidenceKind::Sim => WorkerProof {
                proof_data_type: SIM_PROOF_DATA_TYPE.to_owned(),
                proof_data: String::new(),
                enclave_certificate: Some(text),
            },
            EvidenceKind::SgxEpid => WorkerProof {
                proof_data_type: IAS_PROOF_DATA_TYPE.to_owned(),
                proof_data: text,
                enclave_certificate: None,
            },
            EvidenceKind::SevSnp => WorkerProof {
                proof_data_type: SNP_PROOF_DATA_TYPE.to_owned(),
                proof_data: text,
                enclave_certificate: None,
            },
            // Quotes as wire spec §4.2 has Avalon's DCAP workers write them.
            EvidenceKind::SgxDcap | EvidenceKind::Tdx => WorkerProof {
                proof_data_type: format!("afallon-{}", self.kind.name()),
                proof_data: serde_json::json!({
                    "verification_report": BASE64.encode(&self.bytes),
                    "report_signature": "",
                    "report_signing_certificate": "",
                })
                .to_string(),
                enclave_certificate: None,
            },
        }
    }

    /// The evidence a worker record carries, if any (Avalon's simulation mode carries none:
    /// `TEE-SGX-IAS` with an empty `proofData`).
    pub fn from_worker_proof(proof: &WorkerProof) -> Option<Self> {
        let evidence = |kind, text: &String| Self { kind, bytes: text.as_bytes().to_vec() };
        match proof.proof_data_type.as_str() {
            SIM_PROOF_DATA_TYPE => {
                proof.enclave_certificate.as_ref().map(|text| evidence(EvidenceKind::Sim, text))
            }
            IAS_PROOF_DATA_TYPE if !proof.proof_data.is_empty() => {
                Some(evidence(EvidenceKind::SgxEpid, &proof.proof_data))
            }
            SNP_PROOF_DATA_TYPE => Some(evidence(EvidenceKind::SevSnp, &proof.proof_data)),
            other => {
                let kind = EvidenceKind::from_name(other.strip_prefix("afallon-")?)
                    .filter(|kind| matches!(kind, EvidenceKind::SgxDcap | EvidenceKind::Tdx))?;
                #[derive(serde::Deserialize)]
                struct Quote {
                    verification_report: String,
                }
                let quote: Quote = serde_json::from_str(&proof.proof_data).ok()?;
                Some(Self { kind, bytes: BASE64.decode(quote.verification_report).ok()? })
            }
        }
    }
}

/// The TCB (trusted computing base) status evidence proves, in Intel's terms (which the other
/// kinds map onto): from the best, [`TcbStatus::UpToDate`], to the worst,
/// [`TcbStatus::Revoked`]; [`TcbStatus::Simulated`] stands apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TcbStatus {
    /// Patched: no known issue.
    UpToDate,
    /// Patched; software mitigations are needed against some issues.
    SwHardeningNeeded,
    /// Patched; the platform's configuration needs changing.
    ConfigurationNeeded,
    /// Patched; both configuration and software mitigations are needed.
    ConfigurationAndSwHardeningNeeded,
    /// Not patched for some known issues (IAS: `GROUP_OUT_OF_DATE`).
    OutOfDate,
    /// Not patched, and the configuration needs changing.
    OutOfDateConfigurationNeeded,
    /// The platform's keys are revoked.
    Revoked,
    /// The evidence names version numbers and no vendor's judgement of them (SEV-SNP): the
    /// policy's minimum versions decide.
    Unrated,
    /// Simulated: no hardware stands behind it.
    Simulated,
}

impl TcbStatus {
    /// How far from up to date (0 is up to date); `None` for simulation, which is not on the
    /// scale.
    pub fn rank(self) -> Option<u8> {
        Some(match self {
            Self::UpToDate => 0,
            Self::SwHardeningNeeded => 1,
            Self::ConfigurationNeeded => 2,
            Self::ConfigurationAndSwHardeningNeeded => 3,
            Self::OutOfDate => 4,
            Self::OutOfDateConfigurationNeeded => 5,
            Self::Revoked => 6,
            Self::Simulated | Self::Unrated => return None,
        })
    }
}

/// An SGX enclave's signer identity: who built it, which product, which security version.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SgxSigner {
    /// MRSIGNER: SHA-256 of the enclave signer's public key.
    pub mr_signer: [u8; 32],
    /// ISVPRODID.
    pub isv_prod_id: u16,
    /// ISVSVN.
    pub isv_svn: u16,
}

impl fmt::Debug for SgxSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SgxSigner")
            .field("mr_signer", &hex::encode(self.mr_signer))
            .field("isv_prod_id", &self.isv_prod_id)
            .field("isv_svn", &self.isv_svn)
            .finish()
    }
}

/// The SNP TCB version a report names: the security patch level of each part.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SnpTcb {
    /// The boot loader's SPL.
    pub bootloader: u8,
    /// The PSP OS's (TEE's) SPL.
    pub tee: u8,
    /// The SNP firmware's SPL.
    pub snp: u8,
    /// The microcode's SPL.
    pub microcode: u8,
}

impl SnpTcb {
    /// The TCB_VERSION of Milan and Genoa: byte 0 boot loader, 1 TEE, 6 SNP, 7 microcode.
    pub(crate) fn from_bytes(bytes: [u8; 8]) -> Self {
        Self { bootloader: bytes[0], tee: bytes[1], snp: bytes[6], microcode: bytes[7] }
    }

    /// Whether every part is at least `minimum`'s.
    pub fn at_least(&self, minimum: &SnpTcb) -> bool {
        self.bootloader >= minimum.bootloader
            && self.tee >= minimum.tee
            && self.snp >= minimum.snp
            && self.microcode >= minimum.microcode
    }
}

/// What a TDX quote measures beyond MRTD (the TD's firmware): the runtime measurement registers
/// (RTMR0 the firmware's configuration, RTMR1 the boot loader and kernel, RTMR2 the kernel's
/// command line and initrd, RTMR3 the application's), and the identities the host set at launch.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TdxMeasurements {
    /// RTMR0 to RTMR3.
    pub rtmrs: [[u8; 48]; 4],
    /// MRCONFIGID.
    pub mr_config_id: [u8; 48],
    /// MROWNER.
    pub mr_owner: [u8; 48],
    /// MROWNERCONFIG.
    pub mr_owner_config: [u8; 48],
}

impl fmt::Debug for TdxMeasurements {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rtmrs: Vec<String> = self.rtmrs.iter().map(hex::encode).collect();
        f.debug_struct("TdxMeasurements")
            .field("rtmrs", &rtmrs)
            .field("mr_config_id", &hex::encode(self.mr_config_id))
            .field("mr_owner", &hex::encode(self.mr_owner))
            .field("mr_owner_config", &hex::encode(self.mr_owner_config))
            .finish()
    }
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
    /// Security advisories that apply to the platform (Intel's `INTEL-SA-…` ids).
    pub advisories: Vec<String>,
    /// For SGX, the enclave's signer identity.
    pub sgx_signer: Option<SgxSigner>,
    /// For simulated evidence, the simulation key that signed it.
    pub simulation_key: Option<EcdsaVerifyingKey>,
    /// For SEV-SNP, the TCB version the report names (and its VCEK was made for).
    pub snp_tcb: Option<SnpTcb>,
    /// For TDX, the measurements beyond MRTD.
    pub tdx: Option<TdxMeasurements>,
    /// When the evidence was made, where it says (an IAS report's timestamp), in seconds since
    /// the epoch.
    pub issued_at: Option<u64>,
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
    fn evidence_round_trips_through_a_worker_record() {
        let evidence = Evidence { kind: EvidenceKind::Sim, bytes: b"{}".to_vec() };
        let proof = evidence.to_worker_proof();
        assert_eq!(proof.proof_data, "");
        assert_eq!(proof.proof_data_type, "afallon-sim");
        assert_eq!(Evidence::from_worker_proof(&proof), Some(evidence));
        let ias = Evidence { kind: EvidenceKind::SgxEpid, bytes: b"{\"a\":1}".to_vec() };
        let proof = ias.to_worker_proof();
        assert_eq!(
            (proof.proof_data_type.as_str(), proof.proof_data.as_str()),
            ("TEE-SGX-IAS", "{\"a\":1}")
        );
        assert_eq!(Evidence::from_worker_proof(&proof), Some(ias));
        for kind in [EvidenceKind::SgxDcap, EvidenceKind::Tdx] {
            let quote = Evidence { kind, bytes: vec![3, 0, 2, 0, 0xff] };
            let proof = quote.to_worker_proof();
            assert_eq!(proof.proof_data_type, format!("afallon-{}", kind.name()));
            assert!(proof.proof_data.contains("\"verification_report\":\"AwACAP8=\""));
            assert_eq!(Evidence::from_worker_proof(&proof), Some(quote));
        }
        let snp = Evidence { kind: EvidenceKind::SevSnp, bytes: b"{\"report\":\"\"}".to_vec() };
        let proof = snp.to_worker_proof();
        assert_eq!(proof.proof_data_type, "afallon-sev-snp");
        assert_eq!(Evidence::from_worker_proof(&proof), Some(snp));
        let not_a_kind = WorkerProof {
            proof_data_type: "afallon-sim".into(),
            proof_data: "{\"verification_report\":\"AA==\"}".into(),
            enclave_certificate: None,
        };
        assert_eq!(Evidence::from_worker_proof(&not_a_kind), None);
        let avalon_sim = WorkerProof {
            proof_data_type: "TEE-SGX-IAS".into(),
            proof_data: String::new(),
            enclave_certificate: None,
        };
        assert_eq!(Evidence::from_worker_proof(&avalon_sim), None);
    }

    #[test]
    fn kinds_are_known_by_name() {
        for kind in
            [EvidenceKind::Sim, EvidenceKind::SgxEpid, EvidenceKind::SgxDcap, EvidenceKind::Tdx]
        {
            assert_eq!(EvidenceKind::from_name(kind.name()), Some(kind));
        }
        assert_eq!(EvidenceKind::from_name("sgx"), None);
    }
}
