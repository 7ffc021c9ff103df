//! The numeric codes on the wire (wire spec §1.3): JSON-RPC error codes, work-order statuses, the
//! enclave's error codes and how the listener maps them, and the registry enums.

/// Work-order status codes, the `code` of JSON-RPC errors about work orders.
///
/// Avalon also uses JSON-RPC *errors* for outcomes that are not failures: [`Self::Pending`] when a
/// submission is accepted or a result is not ready, and [`Self::Success`] when a receipt is
/// created or updated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum WorkOrderStatus {
    /// Success (receipt created or updated).
    Success = 0,
    /// Failed.
    Failed = 1,
    /// Invalid parameter format or value.
    InvalidParameter = 2,
    /// Access denied.
    AccessDenied = 3,
    /// Invalid signature.
    InvalidSignature = 4,
    /// Accepted and queued, scheduled or processing: ask again later.
    Pending = 5,
    /// Defined by the specification, never emitted.
    Scheduled = 6,
    /// Defined by the specification, never emitted.
    Processing = 7,
    /// The work-order store is full of unfinished orders.
    Busy = 8,
    /// The worker does not run the requested workload.
    InvalidWorkload = 9,
    /// Unknown error.
    UnknownError = 10,
}

impl WorkOrderStatus {
    /// The code on the wire.
    pub const fn code(self) -> i64 {
        self as i64
    }
}

/// Generic JSON-RPC error codes of the EEA API (the first table of wire spec §1.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum JrpcErrorCode {
    /// Success.
    Success = 0,
    /// Unknown error.
    UnknownError = 1,
    /// Invalid parameter format or value.
    InvalidParameter = 2,
    /// Access denied.
    AccessDenied = 3,
    /// Invalid signature.
    InvalidSignature = 4,
    /// No more look-up results.
    NoLookupResults = 5,
    /// Unsupported mode.
    UnsupportedMode = 6,
}

impl JrpcErrorCode {
    /// The code on the wire.
    pub const fn code(self) -> i64 {
        self as i64
    }
}

/// The enclave's error codes (`tcf_err_t`), negative, as they appear in stored error responses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum EnclaveErrorCode {
    /// Unknown internal error.
    Unknown = -1,
    /// Out of memory.
    Memory = -2,
    /// I/O error.
    Io = -3,
    /// Runtime error.
    Runtime = -4,
    /// Index out of range.
    Index = -5,
    /// Division by zero.
    DivideByZero = -6,
    /// Overflow.
    Overflow = -7,
    /// A value in the request is invalid (tampering, bad encodings, missing fields).
    Value = -8,
    /// System error.
    System = -9,
    /// The system is busy.
    SystemBusy = -10,
    /// A cryptographic operation failed (AES-GCM authentication, for one).
    Crypto = -11,
    /// The workload is not available on this worker.
    InvalidWorkload = -12,
}

impl EnclaveErrorCode {
    /// The code stored in the error response.
    pub const fn code(self) -> i64 {
        self as i64
    }
}

/// Which listener path reports a stored enclave error: the two map `-12` differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResultPath {
    /// `WorkOrderGetResult`, and asynchronous submission.
    GetResult,
    /// `WorkOrderSubmit` in synchronous mode, which does not special-case `-12`.
    SyncSubmit,
}

/// Maps the code of a stored enclave error response to the code the listener returns
/// (wire spec §1.3): `-8 → 2`, `-1 → 10`, `-12 → 9` (not on the synchronous path), else `1`.
pub const fn listener_code(stored: i64, path: ResultPath) -> i64 {
    match (stored, path) {
        (-8, _) => WorkOrderStatus::InvalidParameter.code(),
        (-1, _) => WorkOrderStatus::UnknownError.code(),
        (-12, ResultPath::GetResult) => WorkOrderStatus::InvalidWorkload.code(),
        _ => WorkOrderStatus::Failed.code(),
    }
}

/// `workerType` of a worker (EEA): the kind of trusted computing it offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum WorkerType {
    /// A TEE (Intel SGX in Avalon's naming; every TEE here).
    TeeSgx = 1,
    /// Multi-party computation.
    Mpc = 2,
    /// Zero-knowledge proofs.
    Zk = 3,
}

impl WorkerType {
    /// The value on the wire.
    pub const fn code(self) -> i64 {
        self as i64
    }
}

/// `status` of a worker (EEA §5.2; the SDK's enum, not the listener's unused one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum WorkerStatus {
    /// Accepting work orders.
    Active = 1,
    /// Temporarily off line.
    OffLine = 2,
    /// Retired for good.
    Decommissioned = 3,
    /// Its keys or platform are known to be compromised.
    Compromised = 4,
}

impl WorkerStatus {
    /// The value on the wire.
    pub const fn code(self) -> i64 {
        self as i64
    }
}

/// Receipt statuses (`receiptCreateStatus`, `updateType`); 5-254 are reserved, 255 means any, and
/// values above 255 are application-specific, so the wire carries plain integers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ReceiptStatus {
    /// Created, work not done yet.
    Pending = 0,
    /// Completed.
    Completed = 1,
    /// Processed by the worker.
    Processed = 2,
    /// Failed.
    Failed = 3,
    /// Rejected.
    Rejected = 4,
}

impl ReceiptStatus {
    /// The value on the wire.
    pub const fn code(self) -> i64 {
        self as i64
    }

    /// The status with this code, if it is one of the five defined.
    pub const fn from_code(code: i64) -> Option<Self> {
        Some(match code {
            0 => Self::Pending,
            1 => Self::Completed,
            2 => Self::Processed,
            3 => Self::Failed,
            4 => Self::Rejected,
            _ => return None,
        })
    }
}

/// What Avalon's listener answers (code 2) to a `WorkOrderSubmit` whose id is taken.
pub const DUPLICATE_WORK_ORDER: &str =
    "Work order id already exists in the database. Hence invalid parameter";

/// What Avalon's listener answers (code 2) to a `WorkOrderGetResult` for an id it does not have.
pub const UNKNOWN_WORK_ORDER: &str =
    "Work order Id not found in the database. Hence invalid parameter";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enclave_codes_map_as_avalon_does() {
        use ResultPath::*;
        assert_eq!(listener_code(EnclaveErrorCode::Value.code(), GetResult), 2);
        assert_eq!(listener_code(EnclaveErrorCode::Unknown.code(), GetResult), 10);
        assert_eq!(listener_code(EnclaveErrorCode::InvalidWorkload.code(), GetResult), 9);
        assert_eq!(listener_code(EnclaveErrorCode::InvalidWorkload.code(), SyncSubmit), 1);
        assert_eq!(listener_code(EnclaveErrorCode::Crypto.code(), GetResult), 1);
        assert_eq!(listener_code(EnclaveErrorCode::Runtime.code(), SyncSubmit), 1);
        assert_eq!(listener_code(1, GetResult), 1);
    }

    #[test]
    fn receipt_status_codes() {
        for code in 0..5 {
            assert_eq!(ReceiptStatus::from_code(code).map(ReceiptStatus::code), Some(code));
        }
        assert_eq!(ReceiptStatus::from_code(5), None);
        assert_eq!(WorkOrderStatus::Pending.code(), 5);
        assert_eq!(WorkOrderStatus::Busy.code(), 8);
    }
}
