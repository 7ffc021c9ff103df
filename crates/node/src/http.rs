//! The HTTP layer, as Avalon's listener behaves (wire spec §1.1): JSON-RPC by `POST` on any path,
//! HTTP 200 for every JSON-RPC outcome, and `Content-Type: application/json` exactly on replies
//! (Avalon's Python client ignores any other). Beside it: `/healthz`, `/readyz`, `/metrics`.

use std::sync::Arc;

use afallon_proto::{ErrorObject, Response, SchemaError};
use afallon_store::Store;
use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{MethodRouter, get};
use serde_json::Number;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::App;

pub(crate) fn serve<S: Store>(
    app: Arc<App<S>>,
    listener: tokio::net::TcpListener,
    mut stopped: watch::Receiver<bool>,
) -> JoinHandle<()> {
    let router = router(app);
    tokio::spawn(async move {
        let shutdown = async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        };
        if let Err(error) = axum::serve(listener, router).with_graceful_shutdown(shutdown).await {
            tracing::error!(%error, "the listener stopped");
        }
    })
}

fn router<S: Store>(app: Arc<App<S>>) -> Router {
    // POST is JSON-RPC on every path, these three included.
    let with_rpc = |route: MethodRouter<Arc<App<S>>>| route.post(rpc::<S>);
    Router::new()
        .route("/healthz", with_rpc(get(|| async { "ok\n" })))
        .route("/readyz", with_rpc(get(ready::<S>)))
        .route("/metrics", with_rpc(get(metrics::<S>)))
        .fallback(rpc::<S>)
        .with_state(app)
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
    let body = match to_bytes(request.into_body(), limit).await {
        Ok(body) => body,
        Err(_) => {
            let error = SchemaError::from_message(format!(
                "Request body is too large: the limit is {limit} bytes"
            ));
            return json(StatusCode::PAYLOAD_TOO_LARGE, Response::bare_error(&error).to_json());
        }
    };
    json(StatusCode::OK, crate::rpc::handle(&app, body).await)
}

async fn ready<S: Store>(State(app): State<Arc<App<S>>>) -> axum::response::Response {
    // Workers are registered before the listener starts; ready means the store answers.
    if app.store.counts().is_ok() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}

async fn metrics<S: Store>(State(app): State<Arc<App<S>>>) -> axum::response::Response {
    let body = app.metrics.render(
        app.store.counts().ok(),
        app.store.commits(),
        app.config.insecure_simulation,
        app.workers.len(),
    );
    let mut response = (StatusCode::OK, Body::from(body)).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4"));
    response
}
