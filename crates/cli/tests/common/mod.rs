//! Starts the real `afallon` binary on a free loopback port, in a data directory of the test's.

#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use afallon_client::{Client, Policy, Worker};

pub const BIN: &str = env!("CARGO_BIN_EXE_afallon");
pub const WORKER: &str = "singleton-worker-1";

/// A running `afallon up`.
pub struct Service {
    child: Child,
    pub url: String,
    pub data_dir: PathBuf,
    /// Lines of its standard output after the address.
    lines: mpsc::Receiver<String>,
}

impl Service {
    /// `afallon up --listen 127.0.0.1:0 --data-dir DIR ARGS...`, once it says where it listens.
    pub fn start(data_dir: &Path, args: &[&str]) -> Self {
        let mut command = Command::new(BIN);
        command.args(["up", "--listen", "127.0.0.1:0", "--data-dir"]).arg(data_dir).args(args);
        Self::spawn(command, data_dir)
    }

    /// As [`Service::start`], run by `sh` with the umask set to `umask` (octal) first.
    pub fn start_with_umask(data_dir: &Path, args: &[&str], umask: &str) -> Self {
        let mut command = Command::new("sh");
        command
            .args(["-c", &format!("umask {umask} && exec \"$0\" \"$@\"")])
            .args([BIN, "up", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(args);
        Self::spawn(command, data_dir)
    }

    /// `afallon ROLE --data-dir DIR ARGS...` (`listener` or `worker`, with `--store` and
    /// `--listen` among `args`), once it prints the line starting with `ready` (its URL follows).
    pub fn start_role(role: &str, data_dir: &Path, args: &[&str], ready: &str) -> Self {
        let mut command = Command::new(BIN);
        command.args([role, "--data-dir"]).arg(data_dir).args(args);
        Self::spawn_until(command, data_dir, ready)
    }

    /// The process id, for signals.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// How the process ended, if it has.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().expect("the process's status")
    }

    fn spawn(command: Command, data_dir: &Path) -> Self {
        Self::spawn_until(command, data_dir, "listening on ")
    }

    /// Runs `command` (the `afallon` binary with arguments), once it prints the line starting
    /// with `ready` (what follows is taken as its URL).
    pub fn spawn_until(mut command: Command, data_dir: &Path, ready: &str) -> Self {
        let mut child = command
            .env("AFALLON_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("the afallon binary starts");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        let url = loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = rx.recv_timeout(left).expect("afallon reports its address");
            if let Some(url) = line.strip_prefix(ready) {
                break url.to_owned();
            }
        };
        Self { child, url, data_dir: data_dir.to_owned(), lines: rx }
    }

    /// The next line of standard output that starts with `prefix`, without it.
    pub fn printed(&self, prefix: &str) -> String {
        loop {
            let line =
                self.lines.recv_timeout(Duration::from_secs(10)).expect("afallon up prints it");
            if let Some(rest) = line.strip_prefix(prefix) {
                return rest.to_owned();
            }
        }
    }

    /// Submits an order of `workload` with `inputs` (answered "pending": the node runs in
    /// asynchronous mode), waits for its result, verifies and decrypts it, and returns its
    /// outputs as text.
    pub async fn order(
        &self,
        workload: &str,
        inputs: &[(&str, afallon_client::InputProtection)],
        signer: Option<&afallon_crypto::EcdsaSigningKey>,
    ) -> Vec<String> {
        let client = self.client();
        let worker = self.worker().await;
        let mut builder = worker.work_order(workload).expect("builder");
        for (input, protection) in inputs {
            builder.input(input.as_bytes(), *protection).expect("input");
        }
        let (request, pending) = builder.build(signer).expect("build");
        assert_eq!(
            client.submit(&request).await.expect("submit"),
            afallon_client::Submission::Pending
        );
        let result = client
            .wait_result(
                &request.work_order_id,
                Duration::from_millis(10),
                Duration::from_secs(300),
            )
            .await
            .expect("result");
        pending
            .open(&result, &worker.verification_key)
            .expect("the signature verifies and the outputs decrypt")
            .into_iter()
            .map(|(_, data)| String::from_utf8(data).expect("utf-8"))
            .collect()
    }

    /// A metric's value, from `/metrics`.
    pub async fn metric(&self, name: &str) -> f64 {
        let metrics = self.client().metrics().await.expect("metrics");
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or_else(|| panic!("no metric {name}"))
    }

    /// The server's resident memory, in MiB.
    pub fn resident_mib(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("the server's /proc status");
        let kib: f64 = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS");
        kib / 1024.0
    }

    /// SIGKILL: no shutdown of any kind.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// A client for it.
    pub fn client(&self) -> Client {
        Client::new(&self.url).expect("client")
    }

    /// The policy a requester on this machine uses: simulation only from this node's key.
    pub fn policy(&self) -> Policy {
        let key = afallon_platform::SimPlatform::local_attestation_key(&self.data_dir.join("sim"))
            .expect("read")
            .expect("the node made its simulation key");
        Policy::new().insecure_allow_simulation().trust_simulation_key(key)
    }

    /// The default worker, verified.
    pub async fn worker(&self) -> Worker {
        self.client()
            .verify_worker(&afallon_proto::worker_id_from_name(WORKER), &self.policy())
            .await
            .expect("the worker verifies")
    }

    /// Runs `afallon ARGS... --url URL` and returns what it printed.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .args(["--url", &self.url])
            .current_dir(self.data_dir.parent().expect("parent"))
            .output()
            .expect("the afallon binary runs")
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The processes whose parent is `parent`, with their command lines.
pub fn children(parent: u32) -> Vec<(u32, String)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        // `pid (comm) state ppid ...`: the command may hold spaces, so read after its ')'.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|ppid| ppid.parse::<u32>().ok());
        if ppid == Some(parent) {
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            found.push((pid, cmdline.trim().to_owned()));
        }
    }
    found
}
