//! The errors a work order can end with, and how each is written into the worker's error
//! response (wire spec §2.4): the enclave's negative code and Avalon's message.

use afallon_proto::EnclaveErrorCode;

/// A work order that could not be processed: the code and message of its error response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[error("{message} ({code:?})")]
pub struct ProcessError {
    /// The enclave error code; the listener maps it to a wire code.
    pub code: EnclaveErrorCode,
    /// The message, as Avalon's enclave words it where Avalon has one.
    pub message: String,
}

impl ProcessError {
    pub(crate) fn value(message: impl Into<String>) -> Self {
        Self { code: EnclaveErrorCode::Value, message: message.into() }
    }

    pub(crate) fn crypto(message: impl Into<String>) -> Self {
        Self { code: EnclaveErrorCode::Crypto, message: message.into() }
    }

    pub(crate) fn missing(field: &str) -> Self {
        Self::value(format!("invalid request; failed to retrieve {field}"))
    }
}

pub(crate) const AES_AUTHENTICATION: &str =
    "Crypto Error (DecryptMessage): AES_GCM authentication failed, plaintext is not trustworthy";
pub(crate) const RSA_SIZE: &str = "Crypto Error (DecryptMessage): RSA ciphertext size is invalid";
pub(crate) const RSA_DECRYPT: &str = "Crypto Error (DecryptMessage): RSA decryption failed";
pub(crate) const REQUEST_HASH: &str =
    "Decryption of client request hash failed. Request is tampered.";
pub(crate) const SIGNATURE: &str =
    "Signature verification of client request failed. Request is tampered.";
pub(crate) const UNKNOWN_WORKLOAD: &str = "Workload cannot be processed by this worker";
pub(crate) const IN_DATA_EMPTY: &str = "Indata is empty";
pub(crate) const DATA_HASH: &str = "input data hash verification failed";
pub(crate) const DATA_EMPTY_HASH: &str =
    "Invalid case: input data is empty but dataHash is non empty";
