//! The data directory is private whatever the umask: the node, started with umask 000, keeps its
//! directories 0700 and its files 0600, and tightens a data directory left too open.

#![cfg(unix)]

mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use afallon_client::{InputProtection, Submission};
use afallon_crypto::EcdsaSigningKey;
use common::Service;

/// Every path under `root` (itself included) with its permission bits; symbolic links are not
/// followed.
fn modes(root: &Path) -> Vec<(PathBuf, bool, u32)> {
    let mut out = Vec::new();
    let mut pending = vec![root.to_owned()];
    while let Some(path) = pending.pop() {
        let meta = std::fs::symlink_metadata(&path).expect("metadata");
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path).expect("read_dir") {
                pending.push(entry.expect("entry").path());
            }
        }
        out.push((path, meta.is_dir(), meta.permissions().mode() & 0o777));
    }
    out
}

fn assert_private(data: &Path) {
    let modes = modes(data);
    let names: Vec<String> = modes
        .iter()
        .map(|(path, _, _)| path.strip_prefix(data).expect("inside").display().to_string())
        .collect();
    for expected in ["store.redb", "sim", "sim/sim-attestation-key", "sim/sim-node-secret"] {
        assert!(names.iter().any(|n| n == expected), "{expected} missing from {names:?}");
    }
    assert!(names.iter().any(|n| n.starts_with("workload-files/")), "{names:?}");
    for (path, is_dir, mode) in &modes {
        let want = if *is_dir { 0o700 } else { 0o600 };
        assert_eq!(*mode, want, "{} is {mode:o}, not {want:o}", path.display());
    }
    eprintln!("{} paths under the data directory, all private", modes.len());
}

/// A signed wallet order with a receipt, so that the store holds a request, a response, a
/// receipt and sealed state.
async fn wallet_order(service: &Service, input: &str) {
    let client = service.client();
    let worker = service.worker().await;
    let requester = EcdsaSigningKey::generate().expect("rng");
    let mut builder = worker.work_order("simple-wallet").expect("builder");
    builder.input(input.as_bytes(), InputProtection::Session).expect("input");
    let (request, pending) = builder.build(Some(&requester)).expect("build");
    assert_eq!(client.submit(&request).await.expect("submit"), Submission::Pending);
    client.create_receipt(&request, &requester).await.expect("receipt");
    let result = client
        .wait_result(&request.work_order_id, Duration::from_millis(10), Duration::from_secs(60))
        .await
        .expect("result");
    pending.open(&result, &worker.verification_key).expect("opens");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_directory_is_private_whatever_the_umask() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("afallon-data");
    let service = Service::start_with_umask(&data, &[], "000");
    wallet_order(&service, "deposit dave 10").await;
    assert_private(&data);
    service.kill();

    // Left world-readable (by an older version, or by hand): tightened at the next start.
    for (path, is_dir, _) in modes(&data) {
        let open = if is_dir { 0o777 } else { 0o666 };
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(open)).expect("chmod");
    }
    let service = Service::start_with_umask(&data, &[], "000");
    assert_private(&data);
    wallet_order(&service, "deposit dave 5").await;
    assert_private(&data);
}
