//! JSON-RPC over HTTP/1.1 (or HTTPS, trusting a given CA): one POST per call,
//! `Content-Type: application/json`, integer ids.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, LengthLimitError, Limited};
use hyper::Uri;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;
use serde_json::{Value, json};

use crate::ClientError;

/// The certificates in `pem`, as the only roots trusted.
fn roots(pem: &[u8]) -> Result<RootCertStore, ClientError> {
    let mut roots = RootCertStore::empty();
    for certificate in CertificateDer::pem_slice_iter(pem) {
        let certificate = certificate.map_err(|e| ClientError::Tls(format!("CA file: {e}")))?;
        roots.add(certificate).map_err(|e| ClientError::Tls(format!("CA certificate: {e}")))?;
    }
    if roots.is_empty() {
        return Err(ClientError::Tls("the CA file holds no certificate".into()));
    }
    Ok(roots)
}

fn tls_config(roots: RootCertStore) -> Result<rustls::ClientConfig, ClientError> {
    Ok(rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| ClientError::Tls(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth())
}

/// A JSON-RPC error object from the listener (including Avalon's bare errors, which have no id).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("JSON-RPC error {code}: {message}")]
pub struct RpcError {
    /// The code.
    pub code: i64,
    /// The message.
    pub message: String,
    /// The data, if any.
    pub data: Option<Value>,
}

impl RpcError {
    /// A submission refused because its id is taken (Avalon's code 2 and message).
    pub fn is_duplicate_id(&self) -> bool {
        self.code == afallon_proto::WorkOrderStatus::InvalidParameter.code()
            && self.message == afallon_proto::DUPLICATE_WORK_ORDER
    }

    /// A result asked for an id the listener does not have (Avalon's code 2 and message).
    pub fn is_unknown_order(&self) -> bool {
        self.code == afallon_proto::WorkOrderStatus::InvalidParameter.code()
            && self.message == afallon_proto::UNKNOWN_WORK_ORDER
    }
}

#[derive(Debug)]
pub(crate) struct Transport {
    http: HttpClient<HttpsConnector<HttpConnector>, Full<Bytes>>,
    url: Uri,
    next_id: AtomicI64,
    /// How long one call may take, answer included.
    pub(crate) timeout: Duration,
}

/// The largest answer read: a result carries at most 8 MiB of outputs, in base64.
const MAX_ANSWER_BYTES: usize = 64 << 20;

/// How long one call may take by default: longer than a listener in synchronous mode waits for a
/// result (30 s) before it answers "pending".
pub(crate) const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(60);

impl Transport {
    /// A transport for `url`: `http://`, or `https://` trusting the certificates in `ca_pem`.
    pub(crate) fn new(url: &str, ca_pem: Option<&[u8]>) -> Result<Self, ClientError> {
        let uri: Uri = url.parse().map_err(|_| ClientError::Url(url.to_owned()))?;
        if uri.host().is_none() {
            return Err(ClientError::Url(url.to_owned()));
        }
        let connector = match (uri.scheme_str(), ca_pem) {
            (Some("http"), _) => HttpsConnectorBuilder::new()
                .with_tls_config(tls_config(RootCertStore::empty())?)
                .https_or_http()
                .enable_http1()
                .build(),
            (Some("https"), Some(ca_pem)) => HttpsConnectorBuilder::new()
                .with_tls_config(tls_config(roots(ca_pem)?)?)
                .https_only()
                .enable_http1()
                .build(),
            (Some("https"), None) => {
                return Err(ClientError::Tls(
                    "an https:// listener needs the CA certificate that signed its certificate"
                        .into(),
                ));
            }
            _ => return Err(ClientError::Url(url.to_owned())),
        };
        Ok(Self {
            http: HttpClient::builder(TokioExecutor::new()).build(connector),
            url: uri,
            next_id: AtomicI64::new(1),
            timeout: DEFAULT_CALL_TIMEOUT,
        })
    }

    /// `GET path` on the listener's host, as text (for `/metrics` and the like).
    pub(crate) async fn get(&self, path: &str) -> Result<String, ClientError> {
        let authority = self.url.authority().map(|a| a.as_str().to_owned()).unwrap_or_default();
        let scheme = self.url.scheme_str().unwrap_or("http");
        let uri: Uri = format!("{scheme}://{authority}{path}")
            .parse()
            .map_err(|_| ClientError::Url(path.to_owned()))?;
        let request = hyper::Request::get(uri).body(Full::new(Bytes::new()));
        let (_, bytes) = self.send(request).await?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// Sends a request and reads the whole answer.
    async fn send(
        &self,
        request: Result<hyper::Request<Full<Bytes>>, hyper::http::Error>,
    ) -> Result<(hyper::StatusCode, Bytes), ClientError> {
        let transport = |e: &dyn std::fmt::Display| ClientError::Transport(e.to_string());
        let request = request.map_err(|e| transport(&e))?;
        // A listener that never answers, or answers without end, is a failure, not a wait.
        let exchange = async {
            let response = self.http.request(request).await.map_err(|e| transport(&e))?;
            let status = response.status();
            let body = Limited::new(response.into_body(), MAX_ANSWER_BYTES);
            let bytes = body.collect().await.map_err(|e| {
                if e.downcast_ref::<LengthLimitError>().is_some() {
                    ClientError::AnswerTooLarge(MAX_ANSWER_BYTES)
                } else {
                    transport(&e)
                }
            })?;
            Ok((status, bytes.to_bytes()))
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| ClientError::Timeout(self.timeout))?
    }

    pub(crate) async fn call(&self, method: &str, params: Value) -> Result<Value, ClientError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let body =
            json!({"jsonrpc": "2.0", "method": method, "id": id, "params": params}).to_string();
        let request = hyper::Request::post(self.url.clone())
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)));
        let (status, bytes) = self.send(request).await?;
        let mut value: Value =
            serde_json::from_slice(&bytes).map_err(|_| match status.as_u16() {
                code @ 502..=504 => ClientError::Unavailable(code),
                _ => ClientError::Protocol(format!(
                    "HTTP {status}: {}",
                    String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
                )),
            })?;
        if let Some(error) = value.get_mut("error") {
            let code = error.get("code").and_then(Value::as_i64).unwrap_or(i64::MIN);
            let message = error.get("message").and_then(Value::as_str).unwrap_or("").to_owned();
            let data = error.get_mut("data").map(Value::take);
            return Err(RpcError { code, message, data }.into());
        }
        match value.get_mut("result") {
            Some(result) => Ok(result.take()),
            None => Err(ClientError::Protocol(format!("HTTP {status}: neither result nor error"))),
        }
    }
}
