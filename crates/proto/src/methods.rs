//! The JSON-RPC methods (wire spec §1.4) with their typed params and results.

use serde::{Deserialize, Serialize};

use crate::receipt::{ReceiptCreate, ReceiptUpdate};
use crate::schema::{self, Schema};
use crate::work_order::WorkOrderRequest;

/// A method of the listener's public API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Method {
    /// Find workers by type, organization and application type.
    WorkerLookUp,
    /// Continue a worker look-up after a tag.
    WorkerLookUpNext,
    /// Fetch one worker's record.
    WorkerRetrieve,
    /// Submit a work order.
    WorkOrderSubmit,
    /// Fetch a work order's result.
    WorkOrderGetResult,
    /// Fetch a receipt.
    WorkOrderReceiptRetrieve,
    /// Add an update to a receipt.
    WorkOrderReceiptUpdate,
    /// Fetch one update of a receipt.
    WorkOrderReceiptUpdateRetrieve,
    /// Find receipts.
    WorkOrderReceiptLookUp,
    /// Create a receipt.
    WorkOrderReceiptCreate,
    /// Continue a receipt look-up after a tag.
    WorkOrderReceiptLookUpNext,
}

impl Method {
    /// Every method, in the order of Avalon's envelope schema.
    pub const ALL: [Self; 11] = [
        Self::WorkerLookUp,
        Self::WorkerLookUpNext,
        Self::WorkerRetrieve,
        Self::WorkOrderSubmit,
        Self::WorkOrderGetResult,
        Self::WorkOrderReceiptRetrieve,
        Self::WorkOrderReceiptUpdate,
        Self::WorkOrderReceiptUpdateRetrieve,
        Self::WorkOrderReceiptLookUp,
        Self::WorkOrderReceiptCreate,
        Self::WorkOrderReceiptLookUpNext,
    ];

    /// The method's name on the wire.
    pub fn name(self) -> &'static str {
        schema::METHOD_NAMES[self as usize]
    }

    /// The method called `name`, if it is one.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.name() == name)
    }

    pub(crate) fn schema(self) -> &'static Schema {
        match self {
            Self::WorkerLookUp => &schema::WORKER_LOOK_UP,
            Self::WorkerLookUpNext => &schema::WORKER_LOOK_UP_NEXT,
            Self::WorkerRetrieve => &schema::WORKER_RETRIEVE,
            Self::WorkOrderSubmit => &schema::WORK_ORDER_SUBMIT,
            Self::WorkOrderGetResult => &schema::WORK_ORDER_GET_RESULT,
            Self::WorkOrderReceiptRetrieve => &schema::RECEIPT_RETRIEVE,
            Self::WorkOrderReceiptUpdate => &schema::RECEIPT_UPDATE,
            Self::WorkOrderReceiptUpdateRetrieve => &schema::RECEIPT_UPDATE_RETRIEVE,
            Self::WorkOrderReceiptLookUp => &schema::RECEIPT_LOOK_UP,
            Self::WorkOrderReceiptCreate => &schema::RECEIPT_CREATE,
            Self::WorkOrderReceiptLookUpNext => &schema::RECEIPT_LOOK_UP_NEXT,
        }
    }
}

/// Validated, typed params of a request; the variant says which method was called.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Params {
    /// `WorkerLookUp`.
    WorkerLookUp(WorkerLookUpParams),
    /// `WorkerLookUpNext`.
    WorkerLookUpNext(WorkerLookUpNextParams),
    /// `WorkerRetrieve`.
    WorkerRetrieve(WorkerRetrieveParams),
    /// `WorkOrderSubmit`.
    WorkOrderSubmit(Box<WorkOrderRequest>),
    /// `WorkOrderGetResult`.
    WorkOrderGetResult(WorkOrderIdParams),
    /// `WorkOrderReceiptRetrieve`.
    WorkOrderReceiptRetrieve(WorkOrderIdParams),
    /// `WorkOrderReceiptUpdate`.
    WorkOrderReceiptUpdate(ReceiptUpdate),
    /// `WorkOrderReceiptUpdateRetrieve`.
    WorkOrderReceiptUpdateRetrieve(ReceiptUpdateRetrieveParams),
    /// `WorkOrderReceiptLookUp`.
    WorkOrderReceiptLookUp(ReceiptLookUpParams),
    /// `WorkOrderReceiptCreate`.
    WorkOrderReceiptCreate(ReceiptCreate),
    /// `WorkOrderReceiptLookUpNext`.
    WorkOrderReceiptLookUpNext(ReceiptLookUpParams),
}

impl Params {
    /// The method these params are for.
    pub fn method(&self) -> Method {
        match self {
            Self::WorkerLookUp(_) => Method::WorkerLookUp,
            Self::WorkerLookUpNext(_) => Method::WorkerLookUpNext,
            Self::WorkerRetrieve(_) => Method::WorkerRetrieve,
            Self::WorkOrderSubmit(_) => Method::WorkOrderSubmit,
            Self::WorkOrderGetResult(_) => Method::WorkOrderGetResult,
            Self::WorkOrderReceiptRetrieve(_) => Method::WorkOrderReceiptRetrieve,
            Self::WorkOrderReceiptUpdate(_) => Method::WorkOrderReceiptUpdate,
            Self::WorkOrderReceiptUpdateRetrieve(_) => Method::WorkOrderReceiptUpdateRetrieve,
            Self::WorkOrderReceiptLookUp(_) => Method::WorkOrderReceiptLookUp,
            Self::WorkOrderReceiptCreate(_) => Method::WorkOrderReceiptCreate,
            Self::WorkOrderReceiptLookUpNext(_) => Method::WorkOrderReceiptLookUpNext,
        }
    }
}

/// `WorkerLookUp` params: every filter is optional, but at least one must be given.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkerLookUpParams {
    /// Match this [`crate::WorkerType`] code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_type: Option<i64>,
    /// Match this organization id exactly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization_id: Option<String>,
    /// Match this application type id exactly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application_type_id: Option<String>,
}

/// `WorkerLookUpNext` params: the look-up filters and the tag to continue after.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkerLookUpNextParams {
    /// The filters.
    #[serde(flatten)]
    pub filter: WorkerLookUpParams,
    /// Skip workers up to and including this id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub look_up_tag: Option<String>,
}

/// `WorkerRetrieve` params.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkerRetrieveParams {
    /// The worker to fetch.
    pub worker_id: String,
}

/// Params of the methods that take only a work-order id (`WorkOrderGetResult`,
/// `WorkOrderReceiptRetrieve`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkOrderIdParams {
    /// The work order.
    pub work_order_id: String,
}

/// `WorkOrderReceiptUpdateRetrieve` params.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReceiptUpdateRetrieveParams {
    /// The work order whose receipt is read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub work_order_id: Option<String>,
    /// If given, the update must be by this updater.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updater_id: Option<String>,
    /// 1-based; [`ReceiptUpdateRetrieveParams::LAST_UPDATE`] selects the last update.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_index: Option<i64>,
}

impl ReceiptUpdateRetrieveParams {
    /// The `updateIndex` that selects the last update: `1 << 32`, as Avalon's listener compares.
    pub const LAST_UPDATE: i64 = 1 << 32;
}

/// `WorkOrderReceiptLookUp` and `WorkOrderReceiptLookUpNext` params.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReceiptLookUpParams {
    /// Match this worker service id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_service_id: Option<String>,
    /// Match this worker id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_id: Option<String>,
    /// Match this requester id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requester_id: Option<String>,
    /// Accepted by the schema, ignored by Avalon's look-up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipt_status: Option<String>,
    /// LookUpNext only: skip receipts up to and including this id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_look_up_tag: Option<String>,
}

/// The result of the look-up methods (workers and receipts).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LookUpResult {
    /// How many ids follow.
    pub total_count: u64,
    /// The last id returned, or `""`.
    pub lookup_tag: String,
    /// The matching ids.
    pub ids: Vec<String>,
}

/// The result of `WorkOrderReceiptRetrieve`: the create params plus the current status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReceiptRetrieveResult {
    /// The receipt as created.
    #[serde(flatten)]
    pub receipt: ReceiptCreate,
    /// `updateType` of the last update, else `receiptCreateStatus`.
    pub receipt_current_status: i64,
}

/// The result of `WorkOrderReceiptUpdateRetrieve`: the update plus the number of updates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReceiptUpdateRetrieveResult {
    /// The selected update.
    #[serde(flatten)]
    pub update: ReceiptUpdate,
    /// How many updates the receipt has.
    pub update_count: u64,
}
