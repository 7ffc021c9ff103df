//! The listener's JSON-RPC methods without HTTP, for a role that speaks for requesters who never
//! reach a listener (the chain connector): it shares only the store, as a listener does.

use std::sync::Arc;

use afallon_store::Store;
use axum::body::Bytes;

use crate::{App, NodeConfig, Roles};

/// Answers JSON-RPC request bodies exactly as a listener on the same store would, in this
/// process. Submissions are answered "pending" (code 5) and their results asked for with
/// `WorkOrderGetResult`, whatever [`NodeConfig::sync_mode`] says.
pub struct LocalListener<S> {
    app: Arc<App<S>>,
}

impl<S> std::fmt::Debug for LocalListener<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalListener").finish_non_exhaustive()
    }
}

impl<S: Store> LocalListener<S> {
    /// A listener on `store` with `config`'s limits; call it from within a tokio runtime.
    pub fn new(config: NodeConfig, store: Arc<S>) -> Self {
        let config = NodeConfig { sync_mode: false, roles: Roles::LISTENER, ..config };
        Self { app: Arc::new(App::new(config, store, Vec::new())) }
    }

    /// The response body to one request body.
    pub async fn call(&self, body: impl Into<Bytes>) -> String {
        crate::rpc::handle(&self.app, body.into()).await
    }
}
