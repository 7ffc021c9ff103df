//! Golden outputs of the built-in workloads, as Avalon's produce them (wire spec §6).

use afallon_workloads::{Context, DirectoryIo, HostIo, Input, NoIo, Output, Registry, Workload};

fn run_with(
    io: &dyn HostIo,
    workload: &dyn Workload,
    inputs: &[(i64, &str)],
) -> Vec<(i64, String)> {
    let context = Context { requester_id: "aa", worker_id: "bb", work_order_id: "cc", io };
    let inputs: Vec<Input> = inputs
        .iter()
        .map(|(index, text)| Input { index: *index, data: text.as_bytes().to_vec() })
        .collect();
    workload
        .process(&context, &inputs)
        .expect("built-ins always produce outputs")
        .into_iter()
        .map(|Output { index, data }| (index, String::from_utf8(data).expect("utf-8")))
        .collect()
}

fn run(workload: &dyn Workload, inputs: &[&str]) -> Vec<String> {
    let inputs: Vec<(i64, &str)> = inputs.iter().enumerate().map(|(i, s)| (i as i64, *s)).collect();
    run_with(&NoIo, workload, &inputs).into_iter().map(|(_, text)| text).collect()
}

fn builtin(name: &str) -> std::sync::Arc<dyn Workload> {
    Registry::with_builtins().get(name).expect("registered").clone()
}

#[test]
fn echo_keeps_every_item_and_its_index() {
    let echo = builtin("echo-result");
    assert_eq!(
        run_with(&NoIo, &*echo, &[(3, "Hello"), (0, ""), (7, "a b")]),
        vec![(3, "RESULT: Hello".into()), (0, "RESULT: ".into()), (7, "RESULT: a b".into())]
    );
}

const PATIENT_47: &str = "Data: 25 10 1 67 102 125 1 95 5 10 1 11 36 1";
const PATIENT_71: &str = "Data: 32 1 1 156 132 125 1 95 1 0 1 1 3 1";

#[test]
fn heart_disease_scores_and_summary() {
    let eval = builtin("heart-disease-eval");
    assert_eq!(run(&*eval, &["Data:"]), ["No accumulated heart disease history"]);
    assert_eq!(run(&*eval, &[PATIENT_47]), ["You have a 47% risk of heart disease"]);
    assert_eq!(run(&*eval, &[PATIENT_71]), ["You have a 71% risk of heart disease"]);
    // The summary is kept across work orders: (47 + 71) / 2.
    assert_eq!(run(&*eval, &[""]), ["Heart disease risk is 59% for 2 people"]);
    // Several items in one order: each is evaluated, the last one answers.
    assert_eq!(
        run(&*eval, &[PATIENT_47, PATIENT_47, "Data:"]),
        ["Heart disease risk is 53% for 4 people"]
    );
}

#[test]
fn heart_disease_errors() {
    let eval = builtin("heart-disease-eval");
    assert_eq!(run(&*eval, &["Data: 1 2 3"]), ["Error with missing or incorrect input format"]);
    assert_eq!(
        run(&*eval, &["Data: x 10 1 67 102 125 1 95 5 10 1 11 36 1"]),
        ["Invalid data found in input data"]
    );
    assert_eq!(
        run(&*eval, &["Data: 99999999999 10 1 67 102 125 1 95 5 10 1 11 36 1"]),
        ["Caught exception while processing workload data"]
    );
    // stoi reads the leading integer: "25.9" is 25.
    assert_eq!(
        run(&*eval, &["Data: 25.9 10 1 67 102 125 1 95 5 10 1 11 36 1"]),
        ["You have a 47% risk of heart disease"]
    );
    // Failed evaluations are not counted.
    assert_eq!(run(&*eval, &["Data:"]), ["Heart disease risk is 47% for 1 people"]);
}

#[test]
fn heart_disease_summary_survives_a_snapshot() {
    let eval = builtin("heart-disease-eval");
    run(&*eval, &[PATIENT_47, PATIENT_71]);
    let snapshot = eval.snapshot().expect("stateful");
    let restarted =
        Registry::with_builtins().get("heart-disease-eval").expect("registered").clone();
    restarted.restore(&snapshot).expect("restore");
    assert_eq!(run(&*restarted, &["Data:"]), ["Heart disease risk is 59% for 2 people"]);
    assert!(restarted.restore(b"garbage").is_err());
}

#[test]
fn wallet_operations_and_errors() {
    let wallet = builtin("simple-wallet");
    assert_eq!(
        run(
            &*wallet,
            &[
                "deposit alice 0100",
                "deposit alice 50",
                "deposit bob 20",
                "withdraw alice 30",
                "transfer alice bob 20",
                "withdraw bob 1000",
                "withdraw carol 5",
                "transfer carol bob 5",
                "transfer alice bob 999",
                "transfer alice carol 5",
                "deposit alice -5",
                "withdraw alice zero",
                "transfer alice bob 0",
                "deposit alice",
                "transfer alice bob",
                "",
                "juggle alice 5",
            ]
        ),
        [
            "WALLET RESULT: alice::0100",
            "WALLET RESULT: alice::150",
            "WALLET RESULT: bob::20",
            "WALLET RESULT: alice::120",
            "WALLET RESULT: alice::100,bob::40",
            "WALLET RESULT: No sufficient balance to withdraw. Available balance: 40",
            "WALLET RESULT: No wallet details found",
            "WALLET RESULT: Debitor wallet not found",
            "WALLET RESULT: No sufficient balance in debitor's account",
            "WALLET RESULT: Creditor wallet not found",
            "WALLET RESULT: Deposit amount should be a positive value",
            "WALLET RESULT: Withdraw amount should be a positive value",
            "WALLET RESULT: Transfer amount should be a positive value",
            "WALLET RESULT: Insufficient arguments supplied to perform wallet operation",
            "WALLET RESULT: Insufficient arguments supplied to perform wallet operation",
            "WALLET RESULT: Insufficient arguments supplied to perform wallet operation",
            "WALLET RESULT: ",
        ]
    );
}

#[test]
fn wallet_ledger_survives_a_snapshot() {
    let wallet = builtin("simple-wallet");
    run(&*wallet, &["deposit alice 0100"]);
    let restarted = Registry::with_builtins().get("simple-wallet").expect("registered").clone();
    restarted.restore(&wallet.snapshot().expect("stateful")).expect("restore");
    assert_eq!(run(&*restarted, &["withdraw alice 1"]), ["WALLET RESULT: alice::99"]);
    assert!(restarted.restore(br#"{"alice": "lots"}"#).is_err());
}

#[test]
fn inside_out_reads_and_writes_in_the_data_directory_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("sub")).expect("mkdir");
    let io = DirectoryIo::new(dir.path()).expect("root");
    let workload = builtin("inside-out-eval");
    let out = run_with(
        &io,
        &*workload,
        &[
            (0, "write sub/note.txt hello"),
            (1, "read sub/note.txt"),
            (2, "read missing.txt"),
            (3, "write nodir/x.txt hi"),
            (4, "read ../etc/passwd"),
            (5, "read /etc/passwd"),
            (6, "write ../../escape.txt x"),
            (7, "read"),
            (8, "write a.txt"),
            (9, "delete a.txt"),
        ],
    );
    let texts: Vec<&str> = out.iter().map(|(_, t)| t.as_str()).collect();
    assert_eq!(
        texts,
        [
            "RESULT: FILE WRITE SUCCESS",
            "RESULT: hello",
            "RESULT: FAILED TO READ: Unable to open file",
            "RESULT: FAILED TO WRITE: Unable to open file",
            "RESULT: FAILED TO READ: Path is outside the data directory",
            "RESULT: FAILED TO READ: Path is outside the data directory",
            "RESULT: FAILED TO WRITE: Path is outside the data directory",
            "RESULT: Insufficient arguments passed for i/o operation",
            "RESULT: Insufficient arguments passed for i/o operation",
            "RESULT: ",
        ]
    );
    assert!(!dir.path().parent().expect("parent").join("escape.txt").exists());
    assert_eq!(std::fs::read(dir.path().join("sub/note.txt")).expect("written"), b"hello");
}

#[test]
fn inside_out_reads_are_capped_and_cut_at_nul() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("big"), vec![b'x'; 5000]).expect("write");
    std::fs::write(dir.path().join("nul"), b"before\0after").expect("write");
    let io = DirectoryIo::new(dir.path()).expect("root");
    let workload = builtin("inside-out-eval");
    let out = run_with(&io, &*workload, &[(0, "read big"), (1, "read nul")]);
    assert_eq!(out[0].1.len(), "RESULT: ".len() + 1024);
    assert_eq!(out[1].1, "RESULT: before");
}
