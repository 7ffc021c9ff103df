//! Connections: accepting them under a cap, TLS, and HTTP/1.1 on each with timeouts. What a
//! request means is `http.rs`'s business; this module decides who gets to send one and for how
//! long.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;

/// How the listener treats connections. The defaults suit a listener facing the internet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpConfig {
    /// How long a client has to send a request's headers, counted from when the connection
    /// opens or its last answer was sent: this also closes idle keep-alive connections.
    pub header_timeout: Duration,
    /// How long a client has to send a request's body once its headers are in.
    pub body_timeout: Duration,
    /// The most connections open at once; beyond it a new connection is answered `503` with a
    /// JSON-RPC busy error and closed.
    pub max_connections: usize,
    /// The most bytes of request bodies over 64 KiB held at once, across connections; a large
    /// request beyond it is answered busy before its body is read. Smaller bodies are bounded
    /// by the connection cap.
    pub max_buffered_body_bytes: usize,
    /// Serve HTTPS with this certificate chain and key (PEM files) instead of plain HTTP.
    pub tls: Option<TlsFiles>,
    /// Serve `/metrics`, `/healthz` and `/readyz` on this address (plain HTTP) instead of the
    /// listener's.
    pub admin_listen: Option<SocketAddr>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            max_connections: 4096,
            max_buffered_body_bytes: 256 << 20,
            tls: None,
            admin_listen: None,
        }
    }
}

/// A certificate chain and its private key, as PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, leaf first.
    pub certificate: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read or holds no PEM object of the kind needed.
    #[error("{path}: {reason}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// rustls refused the certificate and key.
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// Builds the TLS acceptor from PEM files.
pub(crate) fn tls_acceptor(files: &TlsFiles) -> Result<TlsAcceptor, TlsError> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let pem_error = |path: &Path, reason: String| TlsError::Pem { path: path.to_owned(), reason };
    let certificates = CertificateDer::pem_file_iter(&files.certificate)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| pem_error(&files.certificate, e.to_string()))?;
    if certificates.is_empty() {
        return Err(pem_error(&files.certificate, "no certificate in the file".into()));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| pem_error(&files.key, e.to_string()))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(certificates, key)?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The answer to a connection beyond the cap.
fn refusal(max_connections: usize) -> Vec<u8> {
    let body = format!(
        r#"{{"error": {{"code": 8, "message": "Too many connections: the limit is {max_connections}; try again later"}}}}"#
    );
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\nretry-after: 1\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Serves `router` on `listener` until `stopped` turns true, then lets open connections finish
/// their requests.
pub(crate) fn serve(
    router: Router,
    listener: TcpListener,
    config: &HttpConfig,
    tls: Option<TlsAcceptor>,
    mut stopped: watch::Receiver<bool>,
) -> JoinHandle<()> {
    let connections = Arc::new(Semaphore::new(config.max_connections));
    // Refusals and TLS handshakes in progress are bounded too: beyond these, a connection is
    // closed at once, and a handshake waits (within the header timeout) for its turn.
    let refusals = Arc::new(Semaphore::new(REFUSALS));
    let handshakes = Arc::new(Semaphore::new(HANDSHAKES));
    let refusal: Arc<[u8]> = refusal(config.max_connections).into();
    let header_timeout = config.header_timeout;
    tokio::spawn(async move {
        let mut open = tokio::task::JoinSet::new();
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = stopped.wait_for(|stop| *stop) => break,
            };
            let stream = match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Out of file descriptors, say: wait a little rather than spin.
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let Ok(permit) = Arc::clone(&connections).try_acquire_owned() else {
                if let Ok(turn) = Arc::clone(&refusals).try_acquire_owned() {
                    let refusal = Arc::clone(&refusal);
                    tokio::spawn(refuse(stream, refusal, tls.is_some(), turn));
                }
                continue;
            };
            let (router, tls, stopped) = (router.clone(), tls.clone(), stopped.clone());
            let handshakes = Arc::clone(&handshakes);
            open.spawn(async move {
                let _permit = permit;
                match tls {
                    None => connection(stream, router, header_timeout, stopped).await,
                    Some(acceptor) => {
                        // The handshake (and the wait for a turn) counts against the header
                        // timeout.
                        let handshake = async {
                            let _turn = handshakes.acquire().await;
                            acceptor.accept(stream).await
                        };
                        match tokio::time::timeout(header_timeout, handshake).await {
                            Ok(Ok(stream)) => {
                                connection(stream, router, header_timeout, stopped).await
                            }
                            Ok(Err(error)) => tracing::debug!(%error, "TLS handshake failed"),
                            Err(_) => tracing::debug!("TLS handshake timed out"),
                        }
                    }
                }
            });
            // Reap finished connections so the set does not grow.
            while open.try_join_next().is_some() {}
        }
        while open.join_next().await.is_some() {}
    })
}

/// Refusals being written at once.
const REFUSALS: usize = 256;

/// TLS handshakes in progress at once: each costs a signature on the listener's threads.
const HANDSHAKES: usize = 64;

/// Tells a connection beyond the cap so, in plain HTTP, and closes it: the answer is written, the
/// request read and thrown away for up to a second (closing with unread bytes would reset the
/// connection and lose the answer). Over TLS it is closed without an answer: a handshake would
/// cost what the cap is there to save.
async fn refuse(mut stream: TcpStream, refusal: Arc<[u8]>, tls: bool, _turn: OwnedSemaphorePermit) {
    if tls {
        return;
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        stream.write_all(&refusal).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 4096];
        while stream.read(&mut sink).await? > 0 {}
        Ok::<_, std::io::Error>(())
    })
    .await;
}

/// HTTP/1.1 on one connection, closed when the header timeout passes without a complete
/// request, and after its current request once the node stops.
async fn connection<I>(
    io: I,
    router: Router,
    header_timeout: Duration,
    mut stopped: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_buf_size(64 << 10)
        .keep_alive(true);
    let service = TowerToHyperService::new(router);
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(error) = result {
                tracing::debug!(%error, "connection closed");
            }
            return;
        }
        _ = stopped.wait_for(|stop| *stop) => conn.as_mut().graceful_shutdown(),
    }
    let _ = conn.await;
}
