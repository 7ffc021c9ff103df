//! The EEA Off-Chain Trusted Compute wire protocol as Hyperledger Avalon serves it: what every
//! JSON-RPC message, work order, worker record and receipt is, how params are validated (with
//! Avalon's exact error codes and messages), and how requests and responses are hashed, encrypted
//! and signed on the wire.
//!
//! This crate is pure: it parses and produces bytes and values, and does no I/O. The binding
//! reference is the project's wire specification; where this crate deliberately differs from
//! Avalon (fixed bugs), `docs/compatibility.md` says so.
//!
//! - [`parse_request`] turns a request body into a [`Request`] with typed [`Params`], or into the
//!   [`SchemaError`] Avalon would answer; [`Response`] writes the three response shapes.
//! - [`WorkOrderRequest`], [`WorkOrderResult`], [`DataItem`], [`WorkerRecord`], [`ReceiptCreate`]
//!   and [`ReceiptUpdate`] are the wire's objects.
//! - [`request_hash`], [`response_hash`] and the receipt digests are computed over the literal JSON
//!   strings; [`protection`] holds the encodings and checks built on them, and [`requester`] the
//!   requester's side: build a protected work order, then verify and decrypt its result.
//!
//! ```
//! use afallon_proto::{Params, Response, parse_request};
//!
//! let body = br#"{"jsonrpc": "2.0", "id": 1, "method": "WorkerLookUp", "params": {"workerType": 1}}"#;
//! let request = parse_request(body).expect("valid request");
//! assert!(matches!(request.params, Params::WorkerLookUp(_)));
//!
//! let error = parse_request(br#"{"jsonrpc": "2.0", "id": 1, "method": "WorkerLookUp", "params": {}}"#)
//!     .expect_err("empty params are refused");
//! assert_eq!(
//!     Response::bare_error(&error).to_json(),
//!     r#"{"error": {"code": 2, "message": "Empty params in the request"}}"#
//! );
//! ```

mod codes;
mod hash;
mod id;
mod jsonrpc;
mod limits;
mod methods;
pub mod protection;
pub mod python_json;
mod receipt;
pub mod requester;
mod schema;
mod strict_json;
mod work_order;
mod worker;

pub use codes::{
    DUPLICATE_WORK_ORDER, EnclaveErrorCode, JrpcErrorCode, ReceiptStatus, ResultPath,
    UNKNOWN_WORK_ORDER, WorkOrderStatus, WorkerStatus, WorkerType, listener_code,
};
pub use hash::{
    RequestHashParts, encryption_key_digest, ext_verification_key_digest, request_digest,
    request_hash, response_hash, sealed_request_digest,
};
pub use id::{
    is_requester_key_id, is_schema_hex, requester_id_for_key, worker_id_from_name,
    workload_id_from_name, workload_name_from_id,
};
pub use jsonrpc::{
    ErrorObject, Request, Response, parse_params, parse_params_within, parse_request,
    parse_request_within,
};
pub use limits::RequestLimits;
pub use methods::{
    LookUpResult, Method, Params, ReceiptLookUpParams, ReceiptRetrieveResult,
    ReceiptUpdateRetrieveParams, ReceiptUpdateRetrieveResult, WorkOrderIdParams,
    WorkerLookUpNextParams, WorkerLookUpParams, WorkerRetrieveParams,
};
pub use receipt::{
    ReceiptCreate, ReceiptUpdate, receipt_create_digest, receipt_update_digest, result_update_data,
    updater_id,
};
pub use schema::{MAX_ID_CHARS, SchemaError};
pub use work_order::{DataItem, WorkOrderErrorData, WorkOrderRequest, WorkOrderResult};
pub use worker::{KeyEncryption, WorkerDetails, WorkerRecord, WorkerTypeData};
