//! `afallon up --enclave-process`: each worker's enclave runs in a process of its own
//! (`afallon enclave`), reached over pipes with the same messages as in process. Orders of every
//! kind go through it (a stateful wallet, a workload reading and writing the host's files); an
//! enclave process that is killed is replaced by a new one restored from the store, and the
//! wallet's balance goes on from the last one stored.

mod common;

use std::time::{Duration, Instant};

use afallon_client::InputProtection::Session;
use common::{Service, children};

/// The enclave processes of the node `service`.
fn enclave_processes(service: &Service) -> Vec<u32> {
    children(service.pid())
        .into_iter()
        .filter(|(_, cmdline)| cmdline.contains(" enclave --data-dir "))
        .map(|(pid, _)| pid)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enclaves_in_processes_of_their_own_are_replaced_when_they_die() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let service = Service::start(&data, &["--enclave-process"]);
    let enclaves = enclave_processes(&service);
    assert_eq!(enclaves.len(), 1, "one enclave process for the one worker");
    eprintln!("the worker's enclave runs in process {}", enclaves[0]);

    let wallet = async |text: &str| service.order("simple-wallet", &[(text, Session)], None).await;
    assert_eq!(wallet("deposit alice 100").await, ["WALLET RESULT: alice::100"]);
    assert_eq!(
        service
            .order("inside-out-eval", &[("write note hi", Session), ("read note", Session)], None)
            .await,
        ["RESULT: FILE WRITE SUCCESS", "RESULT: hi"]
    );

    // Killed: the next order finds the enclave gone, a new one is started from the store, and
    // the order runs on it.
    let status = std::process::Command::new("kill")
        .args(["-9", &enclaves[0].to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let killed = Instant::now();
    assert_eq!(wallet("deposit alice 5").await, ["WALLET RESULT: alice::105"]);
    eprintln!("the order after the kill completed in {:?}", killed.elapsed());
    let replaced = enclave_processes(&service);
    assert_eq!(replaced.len(), 1, "{replaced:?}");
    assert_ne!(replaced[0], enclaves[0], "a new enclave process");
    assert_eq!(
        service.order("inside-out-eval", &[("read note", Session)], None).await,
        ["RESULT: hi"]
    );
    assert_eq!(wallet("withdraw alice 5").await, ["WALLET RESULT: alice::100"]);

    // The node gone, its enclave process ends with it (its input closes).
    service.kill();
    let deadline = Instant::now() + Duration::from_secs(10);
    while running(replaced[0]) {
        assert!(Instant::now() < deadline, "the enclave process outlived its node");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether the process `pid` runs (it exists and is not a zombie waiting to be reaped).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next()) != Some("Z")
    })
}
