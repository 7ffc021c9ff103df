//! The receipt methods (EEA §7; wire spec §1.8, §3.11), with Avalon's checks and messages, and a
//! working update path (Avalon's crashed).

use afallon_proto::protection::{self, encode_base64};
use afallon_proto::{
    Params, ReceiptCreate, ReceiptLookUpParams, ReceiptRetrieveResult, ReceiptStatus,
    ReceiptUpdate, ReceiptUpdateRetrieveParams, ReceiptUpdateRetrieveResult, Response,
    WorkOrderStatus, receipt_create_digest, receipt_update_digest, request_hash,
    result_update_data, updater_id,
};
use afallon_store::{LookUp, OrderStatus, ReceiptCreation, ReceiptFilter, Store, StoreError};
use serde_json::{Number, Value};

use crate::App;
use crate::rpc::Answer;

fn invalid(id: Number, message: impl Into<String>) -> Answer {
    Response::error(id, WorkOrderStatus::InvalidParameter.code(), message).into()
}

fn success(id: Number, message: &str) -> Answer {
    Response::error(id, WorkOrderStatus::Success.code(), message).into()
}

/// `WorkOrderReceiptCreate`.
pub(crate) async fn create<S: Store>(
    app: &App<S>,
    id: Number,
    receipt: ReceiptCreate,
) -> Result<Answer, StoreError> {
    let work_order_id = receipt.work_order_id.clone().unwrap_or_default();
    let Some(raw_request) = app.store.request(&work_order_id).await? else {
        return Ok(invalid(id, "Work order id does not exist, hence invalid request"));
    };
    if app.store.receipt(&work_order_id).await?.is_some() {
        return Ok(invalid(id, "Work order receipt already exists. Hence invalid parameter"));
    }
    if receipt.receipt_create_status.is_none_or(|s| ReceiptStatus::from_code(s).is_none()) {
        return Ok(invalid(id, "Invalid receiptCreateStatus: it must be 0 to 4"));
    }
    if let Some(rules) = &receipt.signature_rules {
        let parts: Vec<&str> = rules.split('/').collect();
        if parts.len() == 2 && parts != ["SHA-256", "SECP256K1"] {
            return Ok(invalid(id, "Unsupported the signing rules"));
        }
    }
    let Ok(request) = crate::rpc::parse(app, raw_request.into()).await else {
        return Ok(invalid(id, "Work order request hash does not match"));
    };
    let Params::WorkOrderSubmit(request) = request.params else {
        return Ok(invalid(id, "Work order request hash does not match"));
    };
    let expected_hash = encode_base64(request_hash(&request).as_bytes());
    if receipt.work_order_request_hash.as_deref() != Some(expected_hash.as_str()) {
        return Ok(invalid(id, "Work order request hash does not match"));
    }
    let signature_ok = match (&receipt.receipt_verification_key, &receipt.requester_signature) {
        (Some(key), Some(signature)) => protection::verify_digest_base64(
            "requesterSignature",
            key,
            &receipt_create_digest(&receipt),
            signature,
        )
        .is_ok(),
        _ => false,
    };
    if !signature_ok {
        return Ok(invalid(id, "Receipt create requester signature does not match"));
    }
    // If the order finished already, the store has its worker add the update it owes (the
    // worker may run anywhere: the listener holds no worker keys).
    Ok(match app.store.create_receipt(&work_order_id, &receipt).await? {
        ReceiptCreation::Created => success(id, "Receipt created successfully"),
        ReceiptCreation::Exists => {
            invalid(id, "Work order receipt already exists. Hence invalid parameter")
        }
        ReceiptCreation::NoSuchOrder => {
            invalid(id, "Work order id does not exist, hence invalid request")
        }
    })
}

/// `WorkOrderReceiptUpdate`.
pub(crate) async fn update<S: Store>(
    app: &App<S>,
    id: Number,
    update: ReceiptUpdate,
) -> Result<Answer, StoreError> {
    let work_order_id = update.work_order_id.clone().unwrap_or_default();
    let not_created = || {
        format!(
            "Work order receipt with id {work_order_id} is not created yet, hence invalid parameter"
        )
    };
    let Some(stored) = app.store.receipt(&work_order_id).await? else {
        return Ok(invalid(id, not_created()));
    };
    let Some(update_type) = update.update_type else {
        return Ok(invalid(id, "Missing parameter updateType in the request"));
    };
    let current = stored.current_status();
    if current == ReceiptStatus::Completed.code() {
        return Ok(invalid(
            id,
            "Receipt update status is set to completed, No further update allowed",
        ));
    }
    if current == ReceiptStatus::Processed.code()
        && [ReceiptStatus::Pending, ReceiptStatus::Failed, ReceiptStatus::Rejected]
            .iter()
            .any(|s| s.code() == update_type)
    {
        return Ok(invalid(
            id,
            format!(
                "Current receipt status is set to processed, setting it to status {update_type} is not allowed"
            ),
        ));
    }
    if update_type == ReceiptStatus::Completed.code()
        || update_type == ReceiptStatus::Processed.code()
    {
        let expected = match app.store.status(&work_order_id).await? {
            OrderStatus::Done(result) => Some(result_update_data(&result.response)),
            _ => None,
        };
        if expected.is_none() || update.update_data != expected {
            return Ok(invalid(id, "Receipt update data does not match the work order response"));
        }
    }
    let (Some(key), Some(signature)) = (&update.receipt_verification_key, &update.update_signature)
    else {
        return Ok(invalid(id, "Receipt update signature does not match"));
    };
    if update.updater_id.as_ref().is_some_and(|u| *u != updater_id(key)) {
        return Ok(invalid(id, "Updater id does not match the receipt verification key"));
    }
    if protection::verify_digest_base64(
        "updateSignature",
        key,
        &receipt_update_digest(&update),
        signature,
    )
    .is_err()
    {
        return Ok(invalid(id, "Receipt update signature does not match"));
    }
    Ok(match app.store.add_receipt_update(&work_order_id, &update).await? {
        Some(_) => success(id, "Receipt updated successfully"),
        None => invalid(id, not_created()),
    })
}

/// `WorkOrderReceiptRetrieve`.
pub(crate) async fn retrieve<S: Store>(
    app: &App<S>,
    id: Number,
    work_order_id: &str,
) -> Result<Answer, StoreError> {
    let not_found = || {
        format!(
            "Work order receipt for work order id {work_order_id} not found in the database. Hence invalid parameter"
        )
    };
    let Some(stored) = app.store.receipt(work_order_id).await? else {
        return Ok(invalid(id, not_found()));
    };
    let receipt_current_status = stored.current_status();
    let result = ReceiptRetrieveResult { receipt: stored.create, receipt_current_status };
    Ok(Response::Result { id, result: serde_json::to_value(result).unwrap_or(Value::Null) }.into())
}

/// `WorkOrderReceiptUpdateRetrieve`.
pub(crate) async fn update_retrieve<S: Store>(
    app: &App<S>,
    id: Number,
    params: &ReceiptUpdateRetrieveParams,
) -> Result<Answer, StoreError> {
    let work_order_id = params.work_order_id.as_deref().unwrap_or("");
    let Some(stored) = app.store.receipt(work_order_id).await? else {
        return Ok(invalid(
            id,
            format!(
                "Work order receipt for work order id {work_order_id} not found in the database. Hence invalid parameter"
            ),
        ));
    };
    let updates = stored.updates;
    let index = params.update_index.unwrap_or(ReceiptUpdateRetrieveParams::LAST_UPDATE);
    if index <= 0 {
        return Ok(invalid(
            id,
            "Update index should be positive non-zero number. Hence invalid parameter",
        ));
    }
    if updates.is_empty() {
        return Ok(invalid(
            id,
            "There is no updates available to this receipt Hence invalid parameter",
        ));
    }
    let position = if index == ReceiptUpdateRetrieveParams::LAST_UPDATE {
        updates.len() - 1
    } else {
        match usize::try_from(index - 1) {
            Ok(position) if position < updates.len() => position,
            _ => {
                return Ok(invalid(
                    id,
                    "Update index is larger than total update count. Hence invalid parameter",
                ));
            }
        }
    };
    let update = updates[position].clone();
    if params.updater_id.as_ref().is_some_and(|u| Some(u) != update.updater_id.as_ref()) {
        return Ok(invalid(
            id,
            "Update index and updater id doesn't match Hence invalid parameter",
        ));
    }
    let result = ReceiptUpdateRetrieveResult { update, update_count: updates.len() as u64 };
    Ok(Response::Result { id, result: serde_json::to_value(result).unwrap_or(Value::Null) }.into())
}

/// `WorkOrderReceiptLookUp(Next)`: receipts matching every filter given, in work-order id order,
/// one page of at most [`crate::NodeConfig::look_up_page`] ids, found through the store's index.
/// `receiptStatus` (hex) filters on the current status, which Avalon ignored; one that is not
/// hex matches nothing.
pub(crate) async fn look_up<S: Store>(
    app: &App<S>,
    id: Number,
    params: &ReceiptLookUpParams,
    next: bool,
) -> Result<Answer, StoreError> {
    let status = params.receipt_status.as_deref().map(|s| {
        i64::from_str_radix(s.trim_start_matches("0x").trim_start_matches("0X"), 16).unwrap_or(-1)
    });
    let filter = ReceiptFilter {
        worker_service_id: params.worker_service_id.clone(),
        worker_id: params.worker_id.clone(),
        requester_id: params.requester_id.clone(),
        status,
    };
    let after = if next { params.last_look_up_tag.clone() } else { None };
    let page = LookUp { after, limit: app.config.look_up_page };
    let ids = app.store.look_up_receipts(&filter, &page).await?;
    Ok(crate::rpc::look_up_result(id, ids))
}
