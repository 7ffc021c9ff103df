//! The enclave's boundary as messages: a workload's file access leaves the enclave as a request
//! for the host and comes back as its answer (the host untrusted: too long a read is cut, a wrong
//! answer fails the access); tickets are the enclave's own; and a state that cannot be sealed
//! fails its order with a clear error and changes nothing, across a restart too. The same
//! messages cross a pipe, as they do to an enclave process.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use afallon_attest::{
    Evidence, EvidenceKind, Measurement, Platform, PlatformError, ReportData, SealError,
};
use afallon_crypto::{AesKey, OaepHash, RsaPublicKey};
use afallon_enclave::pipe::{self, PipeLink};
use afallon_enclave::{
    Enclave, EnclaveClient, EnclaveConfig, EnclaveLink, FailureKind, HostIoReply, HostIoRequest,
    OrderTicket, Processed, Request, Response, Role, SealedState, StateTicket, sim_measurement,
};
use afallon_platform::SimPlatform;
use afallon_proto::requester::{InputProtection, PendingResult, WorkOrderBuilder};
use afallon_workloads::{DirectoryIo, NoIo, Registry};
use serde_json::json;
use zeroize::Zeroizing;

/// The simulated TEE, whose sealing can be made to fail.
struct FlakySealing {
    platform: SimPlatform,
    failing: AtomicBool,
}

impl Platform for FlakySealing {
    fn kind(&self) -> EvidenceKind {
        self.platform.kind()
    }

    fn measurement(&self) -> Measurement {
        self.platform.measurement()
    }

    fn evidence(&self, report_data: &ReportData) -> Result<Evidence, PlatformError> {
        self.platform.evidence(report_data)
    }

    fn sealing_key(&self) -> AesKey {
        self.platform.sealing_key()
    }

    fn seal(&self, label: &str, payload: &[u8]) -> Result<Vec<u8>, SealError> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(SealError::Platform("the sealing service is down".into()));
        }
        self.platform.seal(label, payload)
    }

    fn unseal(&self, label: &str, blob: &[u8]) -> Result<Zeroizing<Vec<u8>>, SealError> {
        self.platform.unseal(label, blob)
    }
}

fn flaky_platform() -> Arc<FlakySealing> {
    let platform =
        SimPlatform::ephemeral(sim_measurement(&Registry::with_builtins())).expect("platform");
    Arc::new(FlakySealing { platform, failing: AtomicBool::new(false) })
}

fn start(
    platform: Arc<dyn Platform>,
    name: &str,
    sealed_keys: Option<Vec<u8>>,
    states: Vec<SealedState>,
) -> EnclaveClient {
    let enclave = Arc::new(Enclave::new(platform, Registry::with_builtins()));
    EnclaveClient::start(enclave, EnclaveConfig::new(name), sealed_keys, states).expect("start")
}

fn order(enclave: &EnclaveClient, workload: &str, inputs: &[&str]) -> (Vec<u8>, PendingResult) {
    let record = &enclave.worker_record().details.worker_type_data;
    let key = RsaPublicKey::from_pem(&record.encryption_key).expect("key");
    let mut builder = WorkOrderBuilder::new(enclave.worker_id(), &key, OaepHash::Sha1, workload)
        .expect("builder");
    for input in inputs {
        builder.input(input.as_bytes(), InputProtection::Session).expect("input");
    }
    let (request, pending) = builder.build(None).expect("build");
    let body = json!({"jsonrpc": "2.0", "method": "WorkOrderSubmit", "id": 7, "params": request});
    (body.to_string().into_bytes(), pending)
}

fn outputs(enclave: &EnclaveClient, pending: &PendingResult, processed: &Processed) -> Vec<String> {
    assert_eq!(processed.error, None, "{}", processed.response);
    let response: serde_json::Value = serde_json::from_str(&processed.response).expect("json");
    let result = serde_json::from_value(response["result"].clone()).expect("result");
    let key = &enclave.worker_record().details.worker_type_data.verification_key;
    pending
        .open(&result, key)
        .expect("verifies")
        .into_iter()
        .map(|(_, data)| String::from_utf8(data).expect("utf-8"))
        .collect()
}

/// A wallet order processed, and its state change committed (the host stored it), as a host does
/// for an order whose result it keeps: the wallet's answer and the sealed state stored with it.
fn wallet(enclave: &EnclaveClient, operation: &str) -> Result<(String, SealedState), Processed> {
    let (body, pending) = order(enclave, "simple-wallet", &[operation]);
    let (processed, change) = enclave.process(&body, &NoIo).expect("the enclave answers");
    if processed.error.is_some() {
        assert!(change.is_none(), "a failed order holds no state change");
        return Err(processed);
    }
    change.expect("pending").commit().expect("commit");
    let state = processed.state.clone().expect("state");
    Ok((outputs(enclave, &pending, &processed).remove(0), state))
}

#[test]
fn a_state_that_cannot_be_sealed_fails_the_order_and_changes_nothing() {
    let platform = flaky_platform();
    let enclave = start(platform.clone(), "wallet-worker", None, vec![]);
    let keys = enclave.sealed_keys().to_vec();
    let (answer, _) = wallet(&enclave, "deposit alice 100").expect("deposit");
    assert_eq!(answer, "WALLET RESULT: alice::100");

    platform.failing.store(true, Ordering::SeqCst);
    let refused = wallet(&enclave, "deposit alice 5").expect_err("sealing failed");
    let error = refused.error.expect("an error");
    assert_eq!(error.code.code(), -9, "a system error");
    assert_eq!(
        error.message,
        "The workload's state could not be sealed (the platform could not seal: the sealing \
         service is down); the work order changed nothing"
    );
    assert_eq!(refused.state, None, "nothing to store with it");
    let response: serde_json::Value = serde_json::from_str(&refused.response).expect("json");
    assert_eq!(response["error"]["code"], json!(-9), "{response}");
    eprintln!("refused: {}", refused.response);

    platform.failing.store(false, Ordering::SeqCst);
    let (answer, state) = wallet(&enclave, "deposit alice 1").expect("deposit");
    assert_eq!(answer, "WALLET RESULT: alice::101", "the refused deposit changed nothing");
    assert_eq!((state.based_on, state.version), (1, 2));
    let stored = state;

    // A restart from the last stored state: it goes on from the last balance acknowledged.
    drop(enclave);
    let restarted = start(platform, "wallet-worker", Some(keys), vec![stored]);
    let (answer, _) = wallet(&restarted, "deposit alice 1").expect("deposit");
    assert_eq!(answer, "WALLET RESULT: alice::102");
}

#[test]
fn a_workload_reaches_the_host_s_files_only_through_messages() {
    let dir = tempfile::tempdir().expect("tempdir");
    let io = DirectoryIo::new(dir.path()).expect("directory");
    let platform = Arc::new(
        SimPlatform::ephemeral(sim_measurement(&Registry::with_builtins())).expect("platform"),
    );
    let enclave = start(platform.clone(), "io-worker", None, vec![]);
    let inputs = ["write note.txt hello", "read note.txt", "read ../etc/passwd", "read missing"];
    let (body, pending) = order(&enclave, "inside-out-eval", &inputs);
    let (processed, change) = enclave.process(&body, &io).expect("processed");
    assert!(change.is_none());
    assert_eq!(
        outputs(&enclave, &pending, &processed),
        [
            "RESULT: FILE WRITE SUCCESS",
            "RESULT: hello",
            "RESULT: FAILED TO READ: Path is outside the data directory",
            "RESULT: FAILED TO READ: Unable to open file"
        ]
    );
    assert_eq!(std::fs::read(dir.path().join("note.txt")).expect("written"), b"hello");

    // Other workloads get no file access at all, and the host is never asked.
    let (body, _) = order(&enclave, "echo-result", &["read note.txt"]);
    let raw = Arc::new(Enclave::new(platform, Registry::with_builtins()));
    let started = raw.call(Request::Start {
        role: Role::Singleton,
        config: EnclaveConfig::new("io-worker"),
        sealed_keys: Some(enclave.sealed_keys().to_vec()),
        states: vec![],
    });
    assert!(matches!(started, Response::Started(_)), "{started:?}");
    assert!(matches!(
        raw.call(Request::ProcessWorkOrder { raw: body }),
        Response::WorkOrderProcessed { .. }
    ));
}

#[test]
fn the_host_s_answers_are_not_trusted() {
    let platform = Arc::new(
        SimPlatform::ephemeral(sim_measurement(&Registry::with_builtins())).expect("platform"),
    );
    let enclave = Arc::new(Enclave::new(platform, Registry::with_builtins()));
    assert!(matches!(
        enclave.call(Request::ProcessWorkOrder { raw: b"{}".to_vec() }),
        Response::Failed(failure) if failure.kind == FailureKind::NotStarted
    ));
    let client =
        EnclaveClient::start(enclave.clone(), EnclaveConfig::new("io-worker"), None, vec![])
            .expect("start");
    let again = enclave.call(Request::Start {
        role: Role::Singleton,
        config: EnclaveConfig::new("io-worker"),
        sealed_keys: None,
        states: vec![],
    });
    assert!(matches!(again, Response::Failed(f) if f.kind == FailureKind::AlreadyStarted));

    let (body, pending) = order(&client, "inside-out-eval", &["read big", "read other"]);
    let Response::HostIo { order: ticket, request } =
        enclave.call(Request::ProcessWorkOrder { raw: body })
    else {
        panic!("the workload asks for its file");
    };
    assert_eq!(request, HostIoRequest::Read { path: "big".into(), max_len: 1024 });
    // A ticket the enclave never issued.
    let stray = enclave.call(Request::ContinueWorkOrder {
        order: OrderTicket(ticket.0 + 1000),
        reply: HostIoReply::Written,
    });
    assert!(matches!(stray, Response::Failed(f) if f.kind == FailureKind::UnknownTicket));
    // A read longer than asked is cut; an answer of the wrong kind fails the access.
    let next = enclave.call(Request::ContinueWorkOrder {
        order: ticket,
        reply: HostIoReply::Read(vec![b'x'; 5000]),
    });
    let Response::HostIo { order: ticket, .. } = next else { panic!("the second read: {next:?}") };
    let done =
        enclave.call(Request::ContinueWorkOrder { order: ticket, reply: HostIoReply::Written });
    let Response::WorkOrderProcessed { processed, change: None } = done else {
        panic!("done: {done:?}")
    };
    let texts = outputs(&client, &pending, &processed);
    assert_eq!(texts[0], format!("RESULT: {}", "x".repeat(1024)));
    assert_eq!(texts[1], "RESULT: FAILED TO READ: Unable to open file");
    // The ticket was answered: it is no more.
    let late =
        enclave.call(Request::ContinueWorkOrder { order: ticket, reply: HostIoReply::Written });
    assert!(matches!(late, Response::Failed(f) if f.kind == FailureKind::UnknownTicket));
    let commit = enclave.call(Request::CommitState { change: StateTicket(99) });
    assert!(matches!(commit, Response::Failed(f) if f.kind == FailureKind::UnknownTicket));
}

#[test]
fn a_worker_whose_keys_cannot_be_sealed_does_not_start() {
    let platform = flaky_platform();
    platform.failing.store(true, Ordering::SeqCst);
    let enclave = Arc::new(Enclave::new(platform, Registry::with_builtins()));
    let failure = EnclaveClient::start(enclave, EnclaveConfig::new("w"), None, vec![])
        .expect_err("no sealed keys, no worker");
    assert_eq!(failure.kind, FailureKind::Start);
    assert!(failure.message.contains("the sealing service is down"), "{}", failure.message);
}

/// An enclave served over a pair of pipes, as an enclave process serves it, and a link to it.
fn over_pipes(platform: Arc<dyn Platform>) -> (PipeLink, std::thread::JoinHandle<()>) {
    let (calls_in, calls_out) = std::io::pipe().expect("pipe");
    let (answers_in, answers_out) = std::io::pipe().expect("pipe");
    let enclave = Arc::new(Enclave::new(platform, Registry::with_builtins()));
    let served = std::thread::spawn(move || {
        pipe::serve(enclave, calls_in, answers_out).expect("the host's frames decode");
    });
    (PipeLink::over(answers_in, calls_out), served)
}

#[test]
fn the_same_messages_cross_a_pipe() {
    let platform = flaky_platform();
    let (link, served) = over_pipes(platform.clone());
    let link = Arc::new(link);
    let enclave = EnclaveClient::start(link.clone(), EnclaveConfig::new("piped"), None, vec![])
        .expect("start");
    // Orders from several threads at once, each answered to its caller.
    std::thread::scope(|scope| {
        for n in 0..4 {
            let enclave = &enclave;
            scope.spawn(move || {
                let text = format!("order {n}");
                let (body, pending) = order(enclave, "echo-result", &[&text]);
                let (processed, _) = enclave.process(&body, &NoIo).expect("processed");
                assert_eq!(outputs(enclave, &pending, &processed), [format!("RESULT: {text}")]);
            });
        }
    });
    // State tickets and a sealing failure, through the pipe.
    let (answer, _) = wallet(&enclave, "deposit alice 100").expect("deposit");
    assert_eq!(answer, "WALLET RESULT: alice::100");
    platform.failing.store(true, Ordering::SeqCst);
    assert!(wallet(&enclave, "deposit alice 1").is_err());
    platform.failing.store(false, Ordering::SeqCst);
    assert_eq!(
        wallet(&enclave, "deposit alice 2").expect("deposit").0,
        "WALLET RESULT: alice::102"
    );
    // File access, through the pipe.
    let dir = tempfile::tempdir().expect("tempdir");
    let io = DirectoryIo::new(dir.path()).expect("directory");
    let (body, pending) = order(&enclave, "inside-out-eval", &["write f hi", "read f"]);
    let (processed, _) = enclave.process(&body, &io).expect("processed");
    assert_eq!(
        outputs(&enclave, &pending, &processed),
        ["RESULT: FILE WRITE SUCCESS", "RESULT: hi"]
    );
    let update = enclave.receipt_update("ab", "{}", false).expect("signed");
    assert_eq!(update.update_type, Some(2));
    // The enclave's end goes away: every call after fails at once, clearly, and none hangs.
    drop(enclave);
    drop(link);
    served.join().expect("the enclave's side ends when the host closes its side");
}

#[test]
fn a_host_whose_enclave_is_gone_gets_clear_failures() {
    let (calls_in, calls_out) = std::io::pipe().expect("pipe");
    let (answers_in, answers_out) = std::io::pipe().expect("pipe");
    let link = PipeLink::over(answers_in, calls_out);
    // The enclave's side reads one call and ends without answering.
    let gone = std::thread::spawn(move || {
        let mut calls_in = calls_in;
        let frame = pipe::read_frame(&mut calls_in).expect("a frame").expect("not the end");
        assert!(pipe::decode_call(&frame).is_ok());
        drop(answers_out);
    });
    let answer = link.call(Request::ProcessWorkOrder { raw: b"{}".to_vec() });
    assert!(
        matches!(&answer, Response::Failed(f) if f.kind == FailureKind::Transport),
        "{answer:?}"
    );
    gone.join().expect("the enclave's side");
    let after = link.call(Request::ProcessWorkOrder { raw: b"{}".to_vec() });
    assert!(
        matches!(&after, Response::Failed(f) if f.kind == FailureKind::Transport
            && f.message == "the enclave process ended"),
        "{after:?}"
    );
}

#[test]
fn frames_that_are_too_long_or_do_not_decode_end_the_stream() {
    let too_long = (pipe::MAX_FRAME_BYTES as u32 + 1).to_be_bytes();
    assert!(matches!(pipe::read_frame(&mut &too_long[..]), Err(pipe::PipeError::TooLarge(_))));
    assert!(matches!(pipe::read_frame(&mut &[0_u8, 0][..]), Err(pipe::PipeError::Io(_))));
    assert!(pipe::read_frame(&mut &[][..]).expect("the end").is_none());
    assert!(pipe::decode_call(br#"{"call": 1, "request": {"nope": {}}}"#).is_err());
    assert!(pipe::decode_call(br#"{"call": 1, "request": "startWorker", "x": 1}"#).is_err());
    let (call, request) =
        pipe::decode_call(br#"{"call": 7, "request": {"processWorkOrder": {"raw": "e30="}}}"#)
            .expect("a call");
    assert_eq!((call, request), (7, Request::ProcessWorkOrder { raw: b"{}".to_vec() }));
    // A host that sends garbage ends the enclave's service, with an error.
    let platform = flaky_platform();
    let enclave = Arc::new(Enclave::new(platform, Registry::with_builtins()));
    let mut frame = 5_u32.to_be_bytes().to_vec();
    frame.extend_from_slice(b"hello");
    let outcome = pipe::serve(enclave, &frame[..], std::io::sink());
    assert!(matches!(outcome, Err(pipe::PipeError::Malformed(_))), "{outcome:?}");
}
