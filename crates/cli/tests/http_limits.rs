//! Connections that cost the listener without paying: idle sockets, slowloris headers, bodies
//! that stop short, more connections than the cap; and the listener over TLS with health and
//! metrics on an address of their own. Valid orders keep completing throughout, and the
//! server's resident memory stays bounded (figures printed).

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use afallon_client::{Client, InputProtection};
use common::{Service, WORKER};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// `afallon up` with `config` as its config file.
fn start(dir: &Path, config: &str) -> Service {
    let file = dir.join("afallon.toml");
    std::fs::write(&file, config).expect("config");
    let file = file.to_str().expect("utf-8 path").to_owned();
    Service::start(&dir.join("afallon-data"), &["--config", &file])
}

fn addr(service: &Service) -> SocketAddr {
    let authority = service.url.split("://").nth(1).expect("scheme");
    authority.parse().expect("host:port")
}

/// What [`orders_until`] saw: orders verified, orders failed, and the first failure.
#[derive(Debug)]
struct Orders(u64, u64, Option<String>);

/// Echo orders through the SDK, one after another, until `stop`; returns how many verified.
async fn orders_until(client: Client, service: &Service, stop: Arc<AtomicBool>) -> Orders {
    let worker = client
        .verify_worker(&afallon_proto::worker_id_from_name(WORKER), &service.policy())
        .await
        .expect("the worker verifies");
    let (done, failed) = (AtomicU64::new(0), AtomicU64::new(0));
    let mut first_failure = None;
    while !stop.load(Ordering::Relaxed) {
        let mut builder = worker.work_order("echo-result").expect("builder");
        builder.input(b"still here", InputProtection::Session).expect("input");
        let (request, pending) = builder.build(None).expect("build");
        let outcome = async {
            let result = client
                .submit_and_wait(&request, Duration::from_millis(10), Duration::from_secs(20))
                .await?;
            Ok::<_, afallon_client::ClientError>(
                pending.open_with_key(&result, &worker.verifying_key)?,
            )
        };
        match outcome.await {
            Ok(outputs) if outputs == [(0, b"RESULT: still here".to_vec())] => {
                done.fetch_add(1, Ordering::Relaxed);
            }
            other => {
                failed.fetch_add(1, Ordering::Relaxed);
                first_failure.get_or_insert_with(|| format!("{other:?}"));
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Orders(done.into_inner(), failed.into_inner(), first_failure)
}

/// Whether the server closed `stream` (end of file or an error), waiting at most `within`.
async fn closed_by_server(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

fn raise_own_open_files_limit() {
    let limit = rlimit::increase_nofile_limit(8192).expect("raise the test's open-files limit");
    assert!(limit >= 4096, "this test needs 4,096 open files, the limit is {limit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_slowloris_connections_do_not_deny_service() {
    raise_own_open_files_limit();
    let dir = tempfile::tempdir().expect("tempdir");
    let service = start(dir.path(), "header_timeout_seconds = 2\n");
    let addr = addr(&service);
    let before = service.resident_mib();

    // 2,000 connections that send nothing.
    let mut idle = Vec::new();
    for _ in 0..2000 {
        idle.push(TcpStream::connect(addr).await.expect("connect"));
    }
    // 200 that send a request's headers one byte at a time, never finishing.
    let slow_stop = Arc::new(AtomicBool::new(false));
    let mut slow = Vec::new();
    for _ in 0..200 {
        let stop = Arc::clone(&slow_stop);
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        slow.push(tokio::spawn(async move {
            let started = Instant::now();
            let _ = stream.write_all(b"POST / HTTP/1.1\r\nHost: x\r\n").await;
            while !stop.load(Ordering::Relaxed) {
                if stream.write_all(b"X").await.is_err()
                    || closed_by_server(&mut stream, Duration::from_millis(300)).await
                {
                    return Some(started.elapsed());
                }
            }
            None
        }));
    }
    let during = service.resident_mib();

    // Valid orders meanwhile, over the SDK's own connections.
    let stop = Arc::new(AtomicBool::new(false));
    let orders = {
        let stop = Arc::clone(&stop);
        let client = service.client();
        let service = &service;
        async move { orders_until(client, service, stop).await }
    };
    let (orders, closed) = tokio::join!(orders, async {
        let mut closed = 0;
        for stream in &mut idle {
            if closed_by_server(stream, Duration::from_secs(8)).await {
                closed += 1;
            }
        }
        stop.store(true, Ordering::Relaxed);
        closed
    });
    slow_stop.store(true, Ordering::Relaxed);
    let mut slow_closed = Vec::new();
    for task in slow {
        if let Some(after) = task.await.expect("slow task") {
            slow_closed.push(after);
        }
    }
    let after = service.resident_mib();
    let slowest = slow_closed.iter().max().copied().unwrap_or_default();
    println!(
        "2,000 idle and 200 slowloris connections: {closed} idle and {} slow closed by the server \
         (the slowest after {slowest:?}); {} orders verified meanwhile, {} failed; resident \
         memory {before:.1} MiB before, {during:.1} MiB with the connections open, {after:.1} MiB after",
        slow_closed.len(),
        orders.0,
        orders.1
    );
    assert_eq!(closed, 2000, "every idle connection is closed after the header timeout");
    assert_eq!(slow_closed.len(), 200, "every slowloris connection is closed");
    assert!(slowest < Duration::from_secs(6), "closed after the 2-s header timeout: {slowest:?}");
    assert!(orders.0 > 0, "orders completed while the connections were open");
    assert_eq!(orders.1, 0, "no order failed; the first failure: {:?}", orders.2);
}

/// Sends a request's head announcing `length` bytes and then `sent` bytes of body, and stops;
/// returns the status line the server answered (empty if none) and when.
async fn partial_body(addr: SocketAddr, length: usize, sent: usize) -> (String, Duration) {
    let started = Instant::now();
    let Ok(mut stream) = TcpStream::connect(addr).await else {
        return (String::new(), started.elapsed());
    };
    let head = format!(
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    );
    let (mut read, mut write) = stream.split();
    let body = vec![b' '; sent];
    let send = async {
        let _ = write.write_all(head.as_bytes()).await;
        let _ = write.write_all(&body).await;
        // Then nothing more: hold the connection open.
        std::future::pending::<()>().await;
    };
    let mut answer = Vec::new();
    let receive = async {
        let mut buf = [0u8; 4096];
        loop {
            match read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
            if answer.windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
    };
    tokio::select! {
        () = send => {}
        () = receive => {}
        () = tokio::time::sleep(Duration::from_secs(30)) => {}
    }
    let status = String::from_utf8_lossy(&answer).lines().next().unwrap_or("").to_owned();
    (status, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_that_stop_short_are_bounded_and_given_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let service = start(dir.path(), "body_timeout_seconds = 3\n");
    let addr = addr(&service);
    let before = service.resident_mib();

    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (stop, peak, pid_service) = (Arc::clone(&stop), Arc::clone(&peak), &service);
        async move {
            while !stop.load(Ordering::Relaxed) {
                let mib = pid_service.resident_mib();
                peak.fetch_max(mib as u64, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let length = (8 << 20) - 1;
    let attack = async {
        let tasks: Vec<_> =
            (0..150).map(|_| tokio::spawn(partial_body(addr, length, length - 1))).collect();
        let mut answers = Vec::new();
        for task in tasks {
            answers.push(task.await.expect("task"));
        }
        answers
    };
    let orders = {
        let (client, stop) = (service.client(), Arc::clone(&stop));
        let service = &service;
        async move { orders_until(client, service, stop).await }
    };
    let (answers, orders, ()) = tokio::join!(
        async {
            let answers = attack.await;
            stop.store(true, Ordering::Relaxed);
            answers
        },
        orders,
        sampler
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = service.resident_mib();
    let busy = answers.iter().filter(|(s, _)| s.starts_with("HTTP/1.1 503")).count();
    let timed_out = answers.iter().filter(|(s, _)| s.starts_with("HTTP/1.1 408")).count();
    let slowest = answers.iter().map(|(_, t)| *t).max().unwrap_or_default();
    let peak = peak.load(Ordering::Relaxed);
    println!(
        "150 bodies of 8 MiB stopping one byte short: {busy} refused as busy, {timed_out} \
         timed out after the 3-s body timeout (the last after {slowest:?}); {} orders verified \
         meanwhile, {} failed; resident memory {before:.1} MiB before, peak {peak} MiB, \
         {after:.1} MiB after",
        orders.0, orders.1
    );
    assert_eq!(busy + timed_out, 150, "each is answered: {answers:?}");
    assert!(busy > 0, "the body budget refuses some");
    assert!(timed_out > 0, "the budget admits some, and the timeout ends them");
    assert!(
        orders.0 > 0 && orders.1 == 0,
        "orders kept completing; the first failure: {:?}",
        orders.2
    );
    // The default budget is 256 MiB of large bodies; twice that is a generous bound.
    assert!((peak as f64) < before + 512.0, "peak {peak} MiB from {before:.1} MiB");
    assert!(after < before + 128.0, "memory is given back: {after:.1} MiB from {before:.1} MiB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_cap_are_refused_clearly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let service = start(dir.path(), "max_connections = 20\nheader_timeout_seconds = 2\n");
    let addr = addr(&service);
    let mut held = Vec::new();
    for _ in 0..20 {
        held.push(TcpStream::connect(addr).await.expect("connect"));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let body =
        br#"{"jsonrpc": "2.0", "method": "WorkerLookUp", "id": 1, "params": {"workerType": 1}}"#;
    let answer = afallon_bench::raw_post(addr, body, Duration::from_secs(5)).await;
    let answer = String::from_utf8_lossy(&answer.expect("an answer")).into_owned();
    assert!(
        answer.contains(r#""code": 8"#) && answer.contains("Too many connections: the limit is 20"),
        "{answer}"
    );
    // Once the held connections time out, the listener serves again.
    for stream in &mut held {
        assert!(closed_by_server(stream, Duration::from_secs(8)).await);
    }
    let answer = afallon_bench::raw_post(addr, body, Duration::from_secs(5)).await.expect("answer");
    let answer: serde_json::Value = serde_json::from_slice(&answer).expect("JSON");
    assert_eq!(answer["result"]["totalCount"], 1, "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_listener_with_health_and_metrics_apart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certified =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).expect("a certificate");
    let (cert, key, ca) =
        (dir.path().join("cert.pem"), dir.path().join("key.pem"), dir.path().join("ca.pem"));
    std::fs::write(&cert, certified.cert.pem()).expect("write");
    std::fs::write(&key, certified.signing_key.serialize_pem()).expect("write");
    std::fs::write(&ca, certified.cert.pem()).expect("write");
    let config =
        format!("tls_certificate = {cert:?}\ntls_key = {key:?}\nadmin_listen = \"127.0.0.1:0\"\n");
    let service = start(dir.path(), &config);
    assert!(service.url.starts_with("https://"), "{}", service.url);
    let admin = service.printed("health and metrics on ");

    // The SDK trusts exactly the given CA.
    let pem = std::fs::read(&ca).expect("read");
    let client = Client::with_ca(&service.url, &pem).expect("client");
    let stop = Arc::new(AtomicBool::new(false));
    let stopper = {
        let stop = Arc::clone(&stop);
        async move {
            tokio::time::sleep(Duration::from_secs(2)).await;
            stop.store(true, Ordering::Relaxed);
        }
    };
    let (orders, ()) = tokio::join!(orders_until(client, &service, stop), stopper);
    assert!(orders.0 > 0 && orders.1 == 0, "over TLS; the first failure: {:?}", orders.2);
    let stranger = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).expect("cert");
    let untrusting = Client::with_ca(&service.url, stranger.cert.pem().as_bytes()).expect("client");
    assert!(untrusting.worker_lookup(1).await.is_err(), "another CA is not trusted");
    assert!(Client::new(&service.url).is_err(), "https needs a CA");

    // The CLI, as a requester would run it.
    let output = std::process::Command::new(common::BIN)
        .args(["submit", "-w", WORKER, "-l", "echo-result", "-i", "over TLS", "--url"])
        .arg(&service.url)
        .arg("--ca-file")
        .arg(&ca)
        .current_dir(dir.path())
        .output()
        .expect("runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(String::from_utf8_lossy(&output.stdout), "RESULT: over TLS\n");

    // Plain HTTP to the TLS port gets no answer.
    let body =
        br#"{"jsonrpc": "2.0", "method": "WorkerLookUp", "id": 1, "params": {"workerType": 1}}"#;
    let plain = afallon_bench::raw_post(addr(&service), body, Duration::from_secs(5)).await;
    assert!(
        plain.is_err()
            || !String::from_utf8_lossy(&plain.unwrap_or_default()).contains("totalCount")
    );

    // Health and metrics on their own address, not on the listener.
    let admin_client = Client::new(&admin).expect("client");
    assert!(admin_client.metrics().await.expect("metrics").contains("afallon_"));
    let metrics_on_listener = Client::with_ca(&service.url, &pem).expect("client").metrics().await;
    assert!(
        metrics_on_listener.is_ok_and(|text| !text.contains("afallon_")),
        "GET /metrics on the listener is refused like any GET"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connections_are_closed_after_the_header_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let service = start(dir.path(), "header_timeout_seconds = 2\n");
    let mut stream = TcpStream::connect(addr(&service)).await.expect("connect");
    let body =
        br#"{"jsonrpc": "2.0", "method": "WorkerLookUp", "id": 1, "params": {"workerType": 1}}"#;
    let head = format!(
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.expect("write");
    stream.write_all(body).await.expect("write");
    // Read the whole answer (its length is in its head), leaving the connection idle.
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf).await.expect("read");
        assert!(n > 0, "the answer came whole: {}", String::from_utf8_lossy(&answer));
        answer.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&answer).into_owned();
        if let Some((head, rest)) = text.split_once("\r\n\r\n") {
            let length: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().to_owned())
                })
                .and_then(|v| v.parse().ok())
                .expect("content-length");
            if rest.len() >= length {
                assert!(rest.contains("totalCount"), "{rest}");
                break;
            }
        }
    }
    let idle_since = Instant::now();
    assert!(
        closed_by_server(&mut stream, Duration::from_secs(8)).await,
        "the idle connection is closed"
    );
    let after = idle_since.elapsed();
    println!("a kept-alive connection left idle was closed after {after:?} (header timeout 2 s)");
    assert!(after >= Duration::from_millis(1500), "not before the timeout: {after:?}");
}
