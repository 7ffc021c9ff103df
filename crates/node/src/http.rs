//! The HTTP layer, as Avalon's listener behaves (wire spec §1.1): JSON-RPC by `POST` on any path,
//! HTTP 200 for every JSON-RPC outcome, and `Content-Type: application/json` exactly on replies
//! (Avalon's Python client ignores any other). Beside it: `/healthz`, `/readyz`, `/metrics`, here
//! or on an address of their own. A body is read within the body timeout, and a large one only
//! when the node's budget for bodies in memory has room for it.

use std::sync::Arc;

use afallon_proto::{ErrorObject, Response, SchemaError};
use afallon_store::{LookUp, Store, StoreHealth, WorkerFilter};
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{MethodRouter, get};
use serde_json::Number;

use crate::App;
use crate::body::{self, BodyError};

/// The listener's routes. With `admin` false, `/healthz`, `/readyz` and `/metrics` are served on
/// an address of their own ([`admin_router`]) and here `GET` on them is refused like on any path.
pub(crate) fn router<S: Store>(app: Arc<App<S>>, admin: bool) -> Router {
    // POST is JSON-RPC on every path, these three included.
    let with_rpc = |route: MethodRouter<Arc<App<S>>>| route.post(rpc::<S>);
    let router = Router::new();
    let router = if admin {
        router
            .route("/healthz", with_rpc(get(healthz)))
            .route("/readyz", with_rpc(get(ready::<S>)))
            .route("/metrics", with_rpc(get(metrics::<S>)))
    } else {
        router
    };
    router.fallback(rpc::<S>).with_state(app)
}

/// `/healthz`, `/readyz` and `/metrics` alone, for an address of their own.
pub(crate) fn admin_router<S: Store>(app: Arc<App<S>>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(ready::<S>))
        .route("/metrics", get(metrics::<S>))
        .with_state(app)
}

async fn healthz() -> &'static str {
    "ok\n"
}

fn json(status: StatusCode, body: String) -> axum::response::Response {
    let mut response = (status, body).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn rpc_error(code: i64, message: &str) -> String {
    Response::Error {
        id: Number::from(0),
        error: ErrorObject { code, message: message.to_owned(), data: None },
    }
    .to_json()
}

/// Whether a request's `Content-Type` is one Avalon's listener accepts (`application/json` or
/// `application/x-www-form-urlencoded`; parameters such as a charset are tolerated).
fn accepted_content_type(request: &Request) -> bool {
    let Some(value) = request.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let media_type = value.split(';').next().unwrap_or("").trim();
    media_type.eq_ignore_ascii_case("application/json")
        || media_type.eq_ignore_ascii_case("application/x-www-form-urlencoded")
}

async fn rpc<S: Store>(
    State(app): State<Arc<App<S>>>,
    request: Request,
) -> axum::response::Response {
    if request.method() != Method::POST {
        let mut response =
            json(StatusCode::METHOD_NOT_ALLOWED, rpc_error(2, "Only POST request is supported"));
        response.headers_mut().insert(header::ALLOW, HeaderValue::from_static("POST"));
        return response;
    }
    if !accepted_content_type(&request) {
        return json(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            rpc_error(1, "UNKNOWN_ERROR: unknown message encoding"),
        );
    }
    let limit = app.config.limits.max_request_bytes;
    let too_large = || {
        let error = SchemaError::from_message(format!(
            "Request body is too large: the limit is {limit} bytes"
        ));
        closing(json(StatusCode::PAYLOAD_TOO_LARGE, Response::bare_error(&error).to_json()))
    };
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|length| length > limit) {
        return too_large();
    }
    let read = body::read(request.into_body(), declared, limit, &app.body_budget);
    let body = match tokio::time::timeout(app.config.http.body_timeout, read).await {
        Ok(Ok(body)) => body,
        Ok(Err(BodyError::TooLarge)) => return too_large(),
        Ok(Err(BodyError::Busy)) => {
            let error = ErrorObject {
                code: afallon_proto::WorkOrderStatus::Busy.code(),
                message: "Too many large requests in flight; try again later".into(),
                data: None,
            };
            let body = Response::Error { id: Number::from(0), error }.to_json();
            return closing(json(StatusCode::SERVICE_UNAVAILABLE, body));
        }
        Ok(Err(BodyError::Broken)) => {
            let error = SchemaError::from_message("Request body could not be read");
            return closing(json(StatusCode::BAD_REQUEST, Response::bare_error(&error).to_json()));
        }
        Err(_) => {
            let error = SchemaError::from_message(format!(
                "Request body not received within {} s",
                app.config.http.body_timeout.as_secs_f64()
            ));
            return closing(json(
                StatusCode::REQUEST_TIMEOUT,
                Response::bare_error(&error).to_json(),
            ));
        }
    };
    json(StatusCode::OK, crate::rpc::handle(&app, body).await)
}

/// Marks a response as the connection's last: what is left of the request is not read.
fn closing(mut response: axum::response::Response) -> axum::response::Response {
    response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

async fn ready<S: Store>(State(app): State<Arc<App<S>>>) -> axum::response::Response {
    // Workers are registered before the listener starts; ready means the store answers and can
    // write (after a failed commit it cannot, until a trial commit succeeds).
    let health = *app.store.health().borrow();
    match health {
        // One cheap read through an index shows the store answers (counting orders would scan).
        StoreHealth::Writable
            if app
                .store
                .look_up_workers(&WorkerFilter::default(), &LookUp::first(1))
                .await
                .is_ok() =>
        {
            (StatusCode::OK, "ready\n").into_response()
        }
        StoreHealth::Writable => (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response(),
        StoreHealth::Failing => {
            (StatusCode::SERVICE_UNAVAILABLE, "not ready: the store cannot write\n").into_response()
        }
        StoreHealth::Lost => (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the store must be reopened; the node stops\n",
        )
            .into_response(),
    }
}

async fn metrics<S: Store>(State(app): State<Arc<App<S>>>) -> axum::response::Response {
    let stats = app.store.stats();
    let body = app.metrics.render(
        app.store.counts().await.ok(),
        crate::metrics::StoreFigures {
            commits: stats.commits,
            failures: stats.write_failures,
            writable: *app.store.health().borrow() == StoreHealth::Writable,
        },
        app.config.insecure_simulation,
        app.workers.len(),
    );
    let mut response = (StatusCode::OK, Body::from(body)).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4"));
    response
}
