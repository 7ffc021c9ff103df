//! The verification policy: which evidence is good enough.

use afallon_crypto::EcdsaVerifyingKey;

use crate::evidence::{Evidence, EvidenceKind, Measurement, ReportData, VerifiedEvidence};
use crate::sim::verify_sim;

/// Why evidence was refused. Each variant names the check that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The evidence is simulated and the policy does not allow simulation.
    #[error("simulated evidence is refused (simulation is not allowed by this policy)")]
    SimulationRefused,
    /// The evidence could not be decoded.
    #[error("malformed evidence: {0}")]
    Malformed(&'static str),
    /// The evidence is of a version this verifier does not know.
    #[error("unsupported evidence version {0}")]
    UnsupportedVersion(u32),
    /// The evidence's signature does not verify.
    #[error("evidence signature is invalid")]
    BadSignature,
    /// Simulated evidence signed by a simulation key the policy does not trust.
    #[error("simulated evidence is signed by an untrusted simulation key")]
    UntrustedSimulationKey,
    /// The measured enclave is not one the policy allows.
    #[error("measurement {0:?} is not allowed")]
    MeasurementNotAllowed(Measurement),
    /// The report data does not bind the keys being verified.
    #[error("report data does not bind the expected keys")]
    ReportDataMismatch,
}

/// What evidence a verifier accepts.
///
/// The default refuses simulated evidence and accepts any measurement; restrict measurements with
/// [`Policy::allow_measurement`]. Accepting simulated evidence takes
/// [`Policy::insecure_allow_simulation`].
#[derive(Debug, Clone, Default)]
pub struct Policy {
    allow_simulation: bool,
    trusted_simulation_keys: Vec<EcdsaVerifyingKey>,
    allowed_measurements: Vec<Measurement>,
}

impl Policy {
    /// The default policy: no simulation, any measurement.
    pub fn new() -> Self {
        Self::default()
    }

    /// Accepts simulated evidence, which proves nothing about hardware. For development only.
    #[must_use]
    pub fn insecure_allow_simulation(mut self) -> Self {
        self.allow_simulation = true;
        self
    }

    /// Accepts simulated evidence only from this simulation key (repeatable). Without any, every
    /// simulation key is accepted once simulation is allowed.
    #[must_use]
    pub fn trust_simulation_key(mut self, key: EcdsaVerifyingKey) -> Self {
        self.trusted_simulation_keys.push(key);
        self
    }

    /// Accepts this measurement (repeatable). Without any, every measurement is accepted.
    #[must_use]
    pub fn allow_measurement(mut self, measurement: Measurement) -> Self {
        self.allowed_measurements.push(measurement);
        self
    }

    /// Whether this policy accepts simulated evidence.
    pub fn allows_simulation(&self) -> bool {
        self.allow_simulation
    }

    /// Whether this policy accepts a worker with no evidence at all (as Avalon's simulation mode
    /// publishes): only when it accepts simulation from any key.
    pub fn allows_unattested(&self) -> bool {
        self.allow_simulation && self.trusted_simulation_keys.is_empty()
    }

    /// Verifies `evidence` and checks it against the policy and the report data the verified keys
    /// call for.
    ///
    /// # Errors
    /// [`VerifyError`] naming the first check that failed.
    pub fn verify(
        &self,
        evidence: &Evidence,
        expected_report_data: &ReportData,
    ) -> Result<VerifiedEvidence, VerifyError> {
        let verified = match evidence.kind {
            EvidenceKind::Sim => {
                if !self.allow_simulation {
                    return Err(VerifyError::SimulationRefused);
                }
                let (verified, signer) = verify_sim(&evidence.document)?;
                if !self.trusted_simulation_keys.is_empty()
                    && !self.trusted_simulation_keys.contains(&signer)
                {
                    return Err(VerifyError::UntrustedSimulationKey);
                }
                verified
            }
        };
        if !self.allowed_measurements.is_empty()
            && !self.allowed_measurements.contains(&verified.measurement)
        {
            return Err(VerifyError::MeasurementNotAllowed(verified.measurement));
        }
        if verified.report_data != *expected_report_data {
            return Err(VerifyError::ReportDataMismatch);
        }
        Ok(verified)
    }
}
