//! JSON-RPC dispatch: each method of the listener's public API, with Avalon's checks, codes and
//! messages in Avalon's order (wire spec §1.6, §1.7).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use afallon_proto::{
    LookUpResult, Params, Request, Response, ResultPath, SchemaError, WorkOrderRequest,
    WorkOrderStatus, WorkerLookUpParams, listener_code, parse_request_within,
};
use afallon_store::{
    LookUp, NewOrder, OrderStatus, Store, StoreError, StoreHealth, SubmitOutcome, WorkerFilter,
};
use axum::body::Bytes;
use base64::Engine as _;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Number, Value, json};

use crate::App;

/// What a method answers: a response built here, or one spliced from stored JSON as it is.
pub(crate) enum Answer {
    Response(Response),
    Raw(String),
}

impl From<Response> for Answer {
    fn from(response: Response) -> Self {
        Self::Response(response)
    }
}

/// Parses and validates a request body within the node's limits: inline when it is small, on the
/// blocking pool when it is large, so that it never holds the threads that answer everyone else. Parsing is linear in the body (at most `max_request_bytes`),
/// so a parse that outlives its client does bounded work; everything after it stops with the
/// client.
pub(crate) async fn parse<S>(app: &App<S>, body: Bytes) -> Result<Request, SchemaError> {
    let limits = app.config.limits;
    if body.len() <= crate::body::LARGE_BODY_BYTES {
        return parse_request_within(&body, &limits);
    }
    // At most half the cores parse large bodies at once: the rest keep answering everyone else.
    // The permit (like the body's reservation, which the bytes carry) goes with the parse, so a
    // parse that outlives its client still counts.
    let permit = Arc::clone(&app.large_parses).acquire_owned().await.ok();
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        parse_request_within(&body, &limits)
    })
    .await
    .unwrap_or_else(|error| {
        tracing::error!(%error, "parsing a request panicked");
        Err(SchemaError::from_message("Improper Json request: parsing failed"))
    })
}

/// Handles one request body; the answer is always a JSON-RPC response body.
pub(crate) async fn handle<S: Store>(app: &App<S>, body: Bytes) -> String {
    app.metrics.requests.fetch_add(1, Ordering::Relaxed);
    let request = match parse(app, body.clone()).await {
        Ok(request) => request,
        Err(error) => return Response::bare_error(&error).to_json(),
    };
    let id = request.id.clone();
    match dispatch(app, request, &body).await {
        Ok(Answer::Response(response)) => response.to_json(),
        Ok(Answer::Raw(text)) => text,
        Err(error) => {
            tracing::error!(%error, "store failure while answering a request");
            // Avalon's dispatcher answers an uncaught exception this way.
            Response::Error {
                id,
                error: afallon_proto::ErrorObject {
                    code: -32000,
                    message: "Server error".into(),
                    data: Some(json!({"type": "StoreError", "message": error.to_string()})),
                },
            }
            .to_json()
        }
    }
}

async fn dispatch<S: Store>(
    app: &App<S>,
    request: Request,
    body: &[u8],
) -> Result<Answer, StoreError> {
    let id = request.id;
    Ok(match request.params {
        Params::WorkerLookUp(filter) => paced(app, look_up(app, id, &filter, None)).await?,
        Params::WorkerLookUpNext(params) => {
            paced(app, look_up(app, id, &params.filter, params.look_up_tag.clone())).await?
        }
        Params::WorkerRetrieve(params) => match app.store.worker(&params.worker_id).await? {
            Some(record) => {
                Response::Result { id, result: serde_json::to_value(record).unwrap_or(Value::Null) }
                    .into()
            }
            None => Response::error(
                id,
                WorkOrderStatus::InvalidParameter.code(),
                "Worker Id not found in the database. Hence invalid parameter",
            )
            .into(),
        },
        Params::WorkOrderSubmit(params) => match submit(app, id.clone(), &params, body).await {
            Err(error) if error.not_stored() => not_stored(app, id, &params.work_order_id, &error),
            answer => answer?,
        },
        Params::WorkOrderGetResult(params) => get_result(app, id, &params.work_order_id).await?,
        Params::WorkOrderReceiptCreate(params) => crate::receipts::create(app, id, params).await?,
        Params::WorkOrderReceiptUpdate(params) => crate::receipts::update(app, id, params).await?,
        Params::WorkOrderReceiptRetrieve(params) => {
            crate::receipts::retrieve(app, id, &params.work_order_id).await?
        }
        Params::WorkOrderReceiptUpdateRetrieve(params) => {
            crate::receipts::update_retrieve(app, id, &params).await?
        }
        Params::WorkOrderReceiptLookUp(params) => {
            paced(app, crate::receipts::look_up(app, id, &params, false)).await?
        }
        Params::WorkOrderReceiptLookUpNext(params) => {
            paced(app, crate::receipts::look_up(app, id, &params, true)).await?
        }
        _ => Response::error(
            id,
            WorkOrderStatus::InvalidParameter.code(),
            "Invalid data format for method or method not supported",
        )
        .into(),
    })
}

/// How much longer than its own run a look-up keeps its slot when it is paced: look-ups then
/// take at most 1/(1 + this) of a core (or of the store's time) per slot.
const LOOK_UP_PAUSE: u32 = 4;

/// Runs a look-up in one of the node's look-up slots. Each is cheap (an index walk and one page
/// of ids), but callers looping on them could still take the cores from the orders, or the
/// shared store's time from every process: a look-up's slot stays taken for [`LOOK_UP_PAUSE`]
/// times its run after it answers, so that look-ups wait for each other rather than the orders
/// for them. That is always so in a listener-only process (the store it loads is everyone's);
/// a node with workers paces look-ups while every enclave slot is busy, and answers them at full
/// speed when idle.
async fn paced<T>(app: &App<impl Store>, look_up: impl std::future::Future<Output = T>) -> T {
    let slot = Arc::clone(&app.look_up_slots).acquire_owned().await.ok();
    let started = std::time::Instant::now();
    let answer = look_up.await;
    if app.workers.is_empty() || app.enclave_slots.available_permits() == 0 {
        let pause = started.elapsed() * LOOK_UP_PAUSE;
        tokio::spawn(async move {
            tokio::time::sleep(pause).await;
            drop(slot);
        });
    }
    answer
}

/// The answer of the look-up methods (workers and receipts): the ids found, the last as the tag.
pub(crate) fn look_up_result(id: Number, ids: Vec<String>) -> Answer {
    let result = LookUpResult {
        total_count: ids.len() as u64,
        lookup_tag: ids.last().cloned().unwrap_or_default(),
        ids,
    };
    Response::Result { id, result: serde_json::to_value(result).unwrap_or(Value::Null) }.into()
}

/// `{"jsonrpc": "2.0", "id": id, "result": <stored JSON as it is>}`.
pub(crate) fn raw_result(id: &Number, raw: &str) -> String {
    format!("{{\"jsonrpc\": \"2.0\", \"id\": {id}, \"result\": {raw}}}")
}

/// `WorkerLookUp(Next)`: the workers matching every filter given, in id order, one page of at
/// most [`crate::NodeConfig::look_up_page`] ids; with a tag, only those after it. The store
/// finds them through its index.
async fn look_up<S: Store>(
    app: &App<S>,
    id: Number,
    filter: &WorkerLookUpParams,
    after: Option<String>,
) -> Result<Answer, StoreError> {
    let filter = WorkerFilter {
        worker_type: filter.worker_type,
        organization_id: filter.organization_id.clone(),
        application_type_id: filter.application_type_id.clone(),
    };
    let page = LookUp { after, limit: app.config.look_up_page };
    let ids = app.store.look_up_workers(&filter, &page).await?;
    Ok(look_up_result(id, ids))
}

/// What a submission the store could not write is answered: busy (8), as when the store is
/// full, with a message that says the order was not stored. Nothing of it is kept, so the
/// requester may submit it again, under the same id, later.
fn not_stored<S>(app: &App<S>, id: Number, work_order_id: &str, error: &StoreError) -> Answer {
    tracing::warn!(%error, %work_order_id, "a submission was not stored");
    app.metrics.rejected.fetch_add(1, Ordering::Relaxed);
    app.waiters.forget(work_order_id);
    Response::work_order_error(id, WorkOrderStatus::Busy.code(), NOT_STORED, work_order_id).into()
}

/// What a submission the store could not write is answered, with code 8.
pub(crate) const NOT_STORED: &str = "Storage failure: the work order was not stored; retry later";

/// `WorkOrderSubmit` (wire spec §1.7.1 and §1.7.2).
async fn submit<S: Store>(
    app: &App<S>,
    id: Number,
    params: &WorkOrderRequest,
    body: &[u8],
) -> Result<Answer, StoreError> {
    let work_order_id = &params.work_order_id;
    let refuse = |code: WorkOrderStatus, message: String| {
        app.metrics.rejected.fetch_add(1, Ordering::Relaxed);
        Ok(Response::work_order_error(id.clone(), code.code(), message, work_order_id).into())
    };
    if let Some(signature) = &params.requester_signature
        && base64::engine::general_purpose::STANDARD.decode(signature).is_err()
    {
        return refuse(
            WorkOrderStatus::InvalidParameter,
            "Invalid data format for requesterSignature".into(),
        );
    }
    let completion = app.config.sync_mode.then(|| app.waiters.wait(work_order_id));
    let order = NewOrder {
        work_order_id: work_order_id.clone(),
        worker_id: params.worker_id.clone(),
        requester_id: params.requester_id.clone(),
        request: body.to_vec(),
    };
    // A synchronous submission is answered with its result, so it is written with its result:
    // one durable write instead of two. It is written on its own only if it is to be answered
    // "pending" below.
    let outcome = if completion.is_some() {
        app.store.submit_volatile(order).await?
    } else {
        app.store.submit(order).await?
    };
    match outcome {
        SubmitOutcome::Accepted => {}
        SubmitOutcome::Busy => {
            app.waiters.forget(work_order_id);
            return refuse(
                WorkOrderStatus::Busy,
                "Work order handler is busy updating the result".into(),
            );
        }
        SubmitOutcome::NoSuchWorker => {
            app.waiters.forget(work_order_id);
            return refuse(
                WorkOrderStatus::InvalidParameter,
                format!("worker {} doesn't exists", params.worker_id),
            );
        }
        SubmitOutcome::Duplicate => {
            app.waiters.forget(work_order_id);
            return refuse(
                WorkOrderStatus::InvalidParameter,
                afallon_proto::DUPLICATE_WORK_ORDER.into(),
            );
        }
    }
    app.metrics.submitted.fetch_add(1, Ordering::Relaxed);
    if let Some(completion) = completion {
        // The wait ends early if the store stops writing: the order could not be kept, and its
        // requester hears so now rather than when the wait runs out.
        let mut health = app.store.health();
        let failing = async move {
            let _ = health.wait_for(|health| *health != StoreHealth::Writable).await;
        };
        let done = async {
            let mut notice = completion;
            loop {
                // A notice means the order finished, or that notices may have been missed:
                // either way, the store says. The next notice is asked for before the store is
                // read, so that none falls in between.
                let _ = notice.await;
                notice = app.waiters.wait(work_order_id);
                match app.store.status(work_order_id).await {
                    Ok(OrderStatus::Done(result)) => return Some(result),
                    Ok(OrderStatus::Pending) => {}
                    _ => return None,
                }
            }
        };
        let result = tokio::select! {
            result = tokio::time::timeout(app.config.sync_timeout, done) => result.ok().flatten(),
            () = failing => None,
        };
        app.waiters.forget(work_order_id);
        if let Some(result) = result {
            return Ok(stored_response(
                &id,
                work_order_id,
                &result.response,
                ResultPath::SyncSubmit,
            ));
        }
        // "Pending" is an acknowledgement: the order must survive a crash from now on. If it
        // cannot be written, the store forgets it, and the requester hears it was not stored.
        app.store.persist(work_order_id).await?;
        // Written now (or finished): whatever a read says, the answer is at worst "pending".
        if let Ok(OrderStatus::Done(result)) = app.store.status(work_order_id).await {
            return Ok(stored_response(
                &id,
                work_order_id,
                &result.response,
                ResultPath::SyncSubmit,
            ));
        }
    }
    Ok(Response::work_order_error(
        id,
        WorkOrderStatus::Pending.code(),
        "Work order is computing. Please query for WorkOrderGetResult to view the result",
        work_order_id,
    )
    .into())
}

/// What `WorkOrderGetResult` answers (code 2) for an order that finished and was purged to make
/// room for newer ones.
pub(crate) const PURGED: &str =
    "Work order was purged from storage after it finished; its id cannot be used again";

/// `WorkOrderGetResult` (wire spec §1.7.3).
async fn get_result<S: Store>(
    app: &App<S>,
    id: Number,
    work_order_id: &str,
) -> Result<Answer, StoreError> {
    Ok(match app.store.status(work_order_id).await? {
        OrderStatus::Done(result) => {
            stored_response(&id, work_order_id, &result.response, ResultPath::GetResult)
        }
        OrderStatus::Pending => Response::work_order_error(
            id,
            WorkOrderStatus::Pending.code(),
            "Work order result is yet to be updated",
            work_order_id,
        )
        .into(),
        OrderStatus::Unknown => Response::work_order_error(
            id,
            WorkOrderStatus::InvalidParameter.code(),
            afallon_proto::UNKNOWN_WORK_ORDER,
            work_order_id,
        )
        .into(),
        // Avalon would say "not found"; the code is the same, the message tells a requester
        // that its order did run, and that its id cannot be used again.
        OrderStatus::Purged => Response::work_order_error(
            id,
            WorkOrderStatus::InvalidParameter.code(),
            PURGED,
            work_order_id,
        )
        .into(),
    })
}

#[derive(Deserialize)]
struct StoredResponse<'a> {
    #[serde(borrow)]
    result: Option<&'a RawValue>,
    error: Option<StoredError>,
}

#[derive(Deserialize)]
struct StoredError {
    code: i64,
    message: String,
}

/// A worker's stored response as the listener returns it: the result verbatim, or the error
/// with its code mapped.
fn stored_response(id: &Number, work_order_id: &str, response: &str, path: ResultPath) -> Answer {
    match serde_json::from_str::<StoredResponse<'_>>(response) {
        Ok(StoredResponse { result: Some(result), .. }) => {
            Answer::Raw(raw_result(id, result.get()))
        }
        Ok(StoredResponse { error: Some(error), .. }) => Response::work_order_error(
            id.clone(),
            listener_code(error.code, path),
            error.message,
            work_order_id,
        )
        .into(),
        _ => Response::work_order_error(
            id.clone(),
            WorkOrderStatus::UnknownError.code(),
            "The stored work order response is unreadable",
            work_order_id,
        )
        .into(),
    }
}
