//! A listener that never answers, or answers without end: the SDK gives up with a typed error
//! instead of waiting forever or filling memory.

use std::time::Duration;

use afallon_client::{Client, ClientError};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// A listener on loopback that reads each request and then does `answer` to the connection.
async fn listener<F, Fut>(answer: F) -> String
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf).await;
            tokio::spawn(answer(stream));
        }
    });
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_that_never_answers_times_out() {
    let url = listener(|stream| async move {
        tokio::time::sleep(Duration::from_secs(600)).await;
        drop(stream);
    })
    .await;
    let client = Client::new(&url).expect("client").with_call_timeout(Duration::from_millis(500));
    let error = client.worker_lookup(1).await.expect_err("no answer");
    assert!(matches!(error, ClientError::Timeout(_)), "{error}");
    let error = client
        .wait_result("ab", Duration::from_millis(10), Duration::from_millis(300))
        .await
        .expect_err("no answer");
    assert!(matches!(error, ClientError::Timeout(_)), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_without_end_is_cut_off() {
    let url = listener(|mut stream| async move {
        let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
        if stream.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        let chunk = format!("{:x}\r\n{}\r\n", 1 << 20, " ".repeat(1 << 20));
        while stream.write_all(chunk.as_bytes()).await.is_ok() {}
    })
    .await;
    let client = Client::new(&url).expect("client");
    let error = client.worker_lookup(1).await.expect_err("endless");
    assert!(matches!(error, ClientError::AnswerTooLarge(_)), "{error}");
}
