//! The deployment files checked as tests: `deploy/k8s` against Kubernetes' schemas
//! (kubernetes-validate) and KEDA's (`tests/deploy/check_k8s.py`), the ScaledObject's query
//! against `crates/store-postgres/sql/queue_depth.sql`, `deploy/nginx/afallon.conf` under a real
//! nginx on loopback, and the limits all of them restate against the listener's defaults.
//!
//! The tools come from `scripts/services` (`AFALLON_TOOLS`, `AFALLON_NGINX`). A missing tool fails
//! the test when `AFALLON_REQUIRE_SERVICES=1` (CI); otherwise the test prints
//! `SKIPPED: <test> needs <tool>` to stderr (nextest shows it: .config/nextest.toml) and passes.

use std::collections::BTreeMap;
use std::env;
use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

#[path = "support/services.rs"]
mod services;

use services::{
    Nginx, TempDir, free_port, nginx, nginx_command, on_path, read, render_nginx, root, tool,
    tools_dir,
};

// ---------------------------------------------------------------------------------------------
// Tools, and what a missing one means.

fn kubernetes_validate() -> Option<PathBuf> {
    let in_venv = tools_dir().join("venv/bin/kubernetes-validate");
    if in_venv.is_file() { Some(in_venv) } else { on_path("kubernetes-validate") }
}

/// A python3 that imports jsonschema and PyYAML: the venv's, else the one on PATH.
fn python_with_validators() -> Option<PathBuf> {
    [Some(tools_dir().join("venv/bin/python3")), on_path("python3")].into_iter().flatten().find(
        |python| {
            Command::new(python)
                .args(["-c", "import jsonschema, yaml"])
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|status| status.success())
        },
    )
}

fn run(command: &mut Command) -> Output {
    command.output().unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"))
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

// ---------------------------------------------------------------------------------------------
// The Kubernetes manifests.

const K8S: &str = "deploy/k8s";
/// The oldest Kubernetes the manifests are for (`preStop.sleep` came in 1.30), and the newest
/// that the pinned kubernetes-validate knows.
const KUBERNETES_VERSIONS: &[&str] = &["1.30", "1.37"];

/// The manifests: every YAML file of deploy/k8s but the kustomization.
fn manifests(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<_> = fs::read_dir(dir)
        .expect("deploy/k8s")
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|e| e == "yaml"))
        .filter(|path| !path.ends_with("kustomization.yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 4, "too few manifests in {}: {files:?}", dir.display());
    files
}

/// `(apiVersion, kind)` of every document of a manifest file (top-level keys only).
fn kinds(file: &Path) -> Vec<(String, String)> {
    let text = fs::read_to_string(file).expect("manifest");
    text.split("\n---")
        .filter_map(|doc| {
            let field = |key: &str| {
                doc.lines().find_map(|line| line.strip_prefix(key)).map(|v| v.trim().to_owned())
            };
            Some((field("apiVersion:")?, field("kind:")?))
        })
        .collect()
}

/// kubernetes-validate --strict over the manifests, at each version; Err with its output if it
/// refused anything, or warned about any kind but KEDA's (which it has no schema for).
fn kubernetes_validate_dir(validate: &Path, dir: &Path) -> Result<String, String> {
    let files = manifests(dir);
    let core = files
        .iter()
        .flat_map(|f| kinds(f))
        .filter(|(api_version, _)| !api_version.starts_with("keda.sh/"))
        .count();
    let mut report = String::new();
    for version in KUBERNETES_VERSIONS {
        let output = run(Command::new(validate).args(["--strict", "-k", version]).args(&files));
        let out = text(&output);
        report.push_str(&out);
        let unexpected: Vec<_> = out
            .lines()
            .filter(|line| !line.starts_with("INFO ") || !line.contains(" passed for resource "))
            .filter(|line| {
                !(line.starts_with("WARN ")
                    && line.contains("Couldn't find schema for kind")
                    && line.contains("with api version keda.sh/v1alpha1"))
            })
            .collect();
        let passed = out.lines().filter(|line| line.contains(" passed for resource ")).count();
        if !output.status.success() || !unexpected.is_empty() || passed != core {
            return Err(format!(
                "kubernetes-validate -k {version}: {}, {passed} of {core} core resources passed, \
                 unexpected lines {unexpected:#?}\n{out}",
                output.status
            ));
        }
    }
    Ok(report)
}

fn check_k8s(python: &Path, dir: &Path) -> Result<String, String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/deploy/check_k8s.py");
    let output = run(Command::new(python)
        .arg(script)
        .arg(root().join(K8S).join("schemas"))
        .args(manifests(dir)));
    let out = text(&output);
    if output.status.success() && out.matches("passed KEDA's schema").count() == 2 {
        Ok(out)
    } else {
        Err(out)
    }
}

/// A copy of deploy/k8s in a temp dir with `from` replaced by `to` in `file`; `from` must occur.
fn broken_copy(file: &str, from: &str, to: &str) -> TempDir {
    let copy = TempDir::new("k8s");
    for path in manifests(&root().join(K8S)) {
        fs::copy(&path, copy.0.join(path.file_name().expect("name"))).expect("copy");
    }
    let target = copy.0.join(file);
    let original = fs::read_to_string(&target).expect("manifest");
    assert!(original.contains(from), "{file} no longer contains {from:?}: update this test");
    fs::write(&target, original.replacen(from, to, 1)).expect("write");
    copy
}

#[test]
fn kubernetes_manifests_pass_kubernetes_validate() {
    let test = "kubernetes_manifests_pass_kubernetes_validate";
    let Some(validate) = tool(test, "kubernetes-validate", kubernetes_validate()) else { return };
    if let Err(report) = kubernetes_validate_dir(&validate, &root().join(K8S)) {
        panic!("{report}");
    }
}

#[test]
fn keda_resources_pass_keda_s_schema_and_references_resolve() {
    let test = "keda_resources_pass_keda_s_schema_and_references_resolve";
    let Some(python) = tool(test, "python3 with jsonschema and PyYAML", python_with_validators())
    else {
        return;
    };
    if let Err(report) = check_k8s(&python, &root().join(K8S)) {
        panic!("{report}");
    }
}

#[test]
fn broken_manifests_are_refused() {
    let test = "broken_manifests_are_refused";
    let validate = tool(test, "kubernetes-validate", kubernetes_validate());
    let python = tool(test, "python3 with jsonschema and PyYAML", python_with_validators());

    if let Some(validate) = validate {
        for (file, from, to, expected) in [
            (
                "listener.yaml",
                "containerPort: 1947",
                "containerPort: \"1947\"",
                "is not of type 'integer'",
            ),
            (
                "worker.yaml",
                "readOnlyRootFilesystem: true",
                "readOnlyRootFilesytem: true",
                "readOnlyRootFilesytem",
            ),
        ] {
            let copy = broken_copy(file, from, to);
            let error = kubernetes_validate_dir(&validate, &copy.0)
                .expect_err(&format!("kubernetes-validate accepted {file} with {to:?}"));
            assert!(
                error.contains(expected),
                "{file} with {to:?}: expected {expected:?} in\n{error}"
            );
        }
    }
    if let Some(python) = python {
        for (file, from, to, expected) in [
            // KEDA reads trigger metadata as strings: a bare number is refused by its schema.
            (
                "keda.yaml",
                "targetQueryValue: \"20\"",
                "targetQueryValue: 20",
                "is not of type 'string'",
            ),
            ("keda.yaml", "minReplicaCount:", "minReplicas:", "'minReplicas' was unexpected"),
            ("keda.yaml", "- type: postgresql", "- type: \"\"", "should be non-empty"),
            (
                "keda.yaml",
                "name: afallon-worker\n  pollingInterval",
                "name: afallon-workers\n  pollingInterval",
                "is not a Deployment of the set",
            ),
            ("keda.yaml", "key: url", "key: uri", "does not use"),
            (
                "worker.yaml",
                "readOnlyRootFilesystem: true",
                "readOnlyRootFilesystem: false",
                "readOnlyRootFilesystem is not true",
            ),
            (
                "listener.yaml",
                "port: admin\n            periodSeconds: 5",
                "port: health\n            periodSeconds: 5",
                "does not name",
            ),
            (
                "worker.yaml",
                "claimName: afallon-worker-data",
                "claimName: afallon-data",
                "names a claim not in the set",
            ),
        ] {
            let copy = broken_copy(file, from, to);
            let error = check_k8s(&python, &copy.0)
                .expect_err(&format!("check_k8s.py accepted {file} with {to:?}"));
            assert!(
                error.contains(expected),
                "{file} with {to:?}: expected {expected:?} in\n{error}"
            );
        }
    }
}

#[test]
fn the_kustomization_lists_every_manifest() {
    let kustomization = read("deploy/k8s/kustomization.yaml");
    let mut listed: Vec<_> = kustomization
        .lines()
        .skip_while(|line| !line.starts_with("resources:"))
        .skip(1)
        .map_while(|line| line.trim_start().strip_prefix("- ").map(str::trim))
        .collect();
    listed.sort_unstable();
    let files: Vec<_> = manifests(&root().join(K8S))
        .iter()
        .map(|path| path.file_name().expect("name").to_string_lossy().into_owned())
        .collect();
    assert_eq!(listed, files, "kustomization.yaml resources and the files of deploy/k8s differ");
}

// ---------------------------------------------------------------------------------------------
// One query, one limit: what several files restate must agree.

/// The value of the one `query:` line of the ScaledObject, unquoted.
fn scaled_object_query(keda: &str) -> String {
    let queries: Vec<_> =
        keda.lines().filter_map(|line| line.trim_start().strip_prefix("query:")).collect();
    assert_eq!(queries.len(), 1, "deploy/k8s/keda.yaml must hold one query: line: {queries:?}");
    let value = queries[0].trim();
    let unquoted = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(value);
    assert!(!unquoted.contains(['\\', '"', '\'']), "keep the query free of quoting: {value}");
    unquoted.to_owned()
}

#[test]
fn the_scaled_object_scales_on_the_store_s_queue_depth_query() {
    let sql = read("crates/store-postgres/sql/queue_depth.sql");
    assert!(
        sql.ends_with('\n') && sql.trim_end().lines().count() == 1,
        "queue_depth.sql must be one newline-terminated line: {sql:?}"
    );
    assert_eq!(scaled_object_query(&read("deploy/k8s/keda.yaml")), sql.trim());
    assert_eq!(scaled_object_query("      query: \"SELECT 1\"\n"), "SELECT 1");
}

/// `key = value` lines of the ConfigMap's afallon.toml (tables' keys included).
fn configmap_settings() -> BTreeMap<String, String> {
    read("deploy/k8s/configmap.yaml")
        .lines()
        .skip_while(|line| line.trim() != "afallon.toml: |")
        .skip(1)
        .filter_map(|line| {
            let (key, value) = line.split_once('=')?;
            let value = value.split('#').next().unwrap_or_default();
            Some((key.trim().to_owned(), value.trim().to_owned()))
        })
        .collect()
}

/// The numeric defaults of `impl Default for Config` in crates/cli/src/config.rs, evaluated
/// (`8 << 20`, `10_000`, `10.0`).
fn cli_defaults() -> BTreeMap<String, f64> {
    let source = read("crates/cli/src/config.rs");
    let start = source.find("impl Default for Config").expect("impl Default for Config");
    source[start..]
        .lines()
        .take_while(|line| !line.starts_with('}'))
        .filter_map(|line| {
            let (key, value) = line.trim().trim_end_matches(',').split_once(": ")?;
            Some((key.to_owned(), number(value)?))
        })
        .collect()
}

fn number(value: &str) -> Option<f64> {
    let value = value.replace('_', "");
    match value.split_once("<<") {
        Some((base, shift)) => {
            Some(base.trim().parse::<u64>().ok()?.checked_shl(shift.trim().parse().ok()?)? as f64)
        }
        None => value.trim().parse().ok(),
    }
}

#[test]
fn configmap_keys_are_settings_with_the_listener_s_defaults() {
    let config = read("crates/cli/src/config.rs");
    let settings = configmap_settings();
    assert!(settings.len() > 5, "found too few settings in the ConfigMap: {settings:?}");
    let defaults = cli_defaults();
    assert!(defaults.contains_key("max_body_bytes"), "defaults not found: {defaults:?}");
    for (key, value) in &settings {
        // Config refuses unknown keys: a misspelt one would stop every pod.
        assert!(
            config.contains(&format!("pub(crate) {key}:")),
            "the ConfigMap sets {key}, which crates/cli/src/config.rs does not know"
        );
        if let (Some(default), Some(value)) = (defaults.get(key), number(value)) {
            assert_eq!(
                value, *default,
                "the ConfigMap's {key} differs from the listener's default"
            );
        }
    }
    assert_eq!(number("8 << 20"), Some(8_388_608.0));
}

/// The arguments of each directive of the nginx config, by name (`;`-terminated lines).
fn nginx_directives(conf: &str) -> BTreeMap<String, Vec<String>> {
    let mut directives = BTreeMap::new();
    for line in conf.lines().map(|line| line.split('#').next().unwrap_or_default().trim()) {
        if let Some(statement) = line.strip_suffix(';') {
            let mut words = statement.split_whitespace().map(str::to_owned);
            if let Some(name) = words.next() {
                directives.entry(name).or_insert_with(|| words.collect());
            }
        }
    }
    directives
}

/// An nginx size (`8m`, `512k`, `100`) in bytes, or a time (`10s`, `1m`) in seconds.
fn nginx_quantity(value: &str, unit_m: f64) -> f64 {
    let (digits, scale) = match value.chars().last() {
        Some('k') => (&value[..value.len() - 1], 1024.0),
        Some('m') => (&value[..value.len() - 1], unit_m),
        Some('s') => (&value[..value.len() - 1], 1.0),
        _ => (value, 1.0),
    };
    digits.parse::<f64>().unwrap_or_else(|_| panic!("not an nginx quantity: {value}")) * scale
}

#[test]
fn nginx_limits_match_the_listener_s() {
    let conf = read("deploy/nginx/afallon.conf");
    let nginx = nginx_directives(&conf);
    let one = |name: &str| -> &str {
        nginx.get(name).and_then(|args| args.first()).unwrap_or_else(|| panic!("no {name}"))
    };
    let size = |name: &str| nginx_quantity(one(name), 1024.0 * 1024.0);
    let seconds = |name: &str| nginx_quantity(one(name), 60.0);
    let listener = |key: &str| -> f64 {
        let settings = configmap_settings();
        number(settings.get(key).unwrap_or_else(|| panic!("the ConfigMap has no {key}")))
            .expect("a number")
    };

    assert_eq!(size("client_max_body_size"), listener("max_body_bytes"));
    assert_eq!(seconds("client_header_timeout"), listener("header_timeout_seconds"));
    assert_eq!(seconds("client_body_timeout"), listener("body_timeout_seconds"));
    assert!(
        seconds("proxy_read_timeout") > listener("sync_timeout_seconds"),
        "proxy_read_timeout must be above the sync timeout, or synchronous answers are cut off"
    );
    assert!(
        seconds("keepalive_timeout") < listener("header_timeout_seconds") / 2.0,
        "nginx must drop an idle upstream connection well before the listener closes it"
    );
    let retry = &nginx["proxy_next_upstream"];
    assert!(
        !retry.iter().any(|word| word == "non_idempotent"),
        "a POST a listener received must not be sent again (docs/deployment.md)"
    );
    for word in ["error", "timeout", "http_502", "http_503"] {
        assert!(retry.iter().any(|w| w == word), "proxy_next_upstream lacks {word}: {retry:?}");
    }
    assert!(nginx.contains_key("least_conn"), "the upstream balances by least_conn");
}

// ---------------------------------------------------------------------------------------------
// nginx for real.

#[test]
fn nginx_accepts_the_documented_config() {
    let test = "nginx_accepts_the_documented_config";
    let Some(nginx) = tool(test, "nginx", nginx()) else { return };
    let dir = TempDir::new("nginx");
    let conf = render_nginx(&dir.0, free_port(), &[free_port(), free_port()], "");
    let output = run(nginx_command(&nginx, &dir.0, &conf).arg("-t"));
    assert!(output.status.success(), "nginx -t refused the config:\n{}", text(&output));

    let broken = TempDir::new("nginx");
    let conf =
        render_nginx(&broken.0, free_port(), &[free_port(), free_port()], "retry_posts on;\n");
    let output = run(nginx_command(&nginx, &broken.0, &conf).arg("-t"));
    assert!(!output.status.success(), "nginx -t accepted an unknown directive");
    assert!(text(&output).contains("retry_posts"), "{}", text(&output));
}

/// What a fake listener saw: method, path and body of each request.
type Seen = Arc<Mutex<Vec<(String, String, Vec<u8>)>>>;

/// A fake listener on loopback: answers every request with 200 and its own name, or (`hang_up`)
/// reads the request and closes the connection without an answer.
fn fake_listener(name: &'static str, hang_up: bool) -> (u16, Seen) {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    let port = listener.local_addr().expect("address").port();
    let seen: Seen = Arc::default();
    let log = Arc::clone(&seen);
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let log = Arc::clone(&log);
            thread::spawn(move || serve_one(stream, name, hang_up, &log));
        }
    });
    (port, seen)
}

fn serve_one(mut stream: TcpStream, name: &str, hang_up: bool, seen: &Seen) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(20)));
    let Some((head, body)) = read_message(&mut stream, true) else { return };
    let mut words = head.split_whitespace();
    let (method, path) =
        (words.next().unwrap_or("").to_owned(), words.next().unwrap_or("").to_owned());
    let length = body.len();
    seen.lock().expect("log").push((method, path, body));
    if hang_up {
        return;
    }
    let answer = format!("{{\"listener\":\"{name}\",\"bytes\":{length}}}");
    let _ = write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{answer}",
        answer.len()
    );
}

/// Reads an HTTP/1.1 message: the head, then its Content-Length body, or (a response without
/// one, on a `Connection: close` exchange) everything to the end.
fn read_message(stream: &mut TcpStream, request: bool) -> Option<(String, Vec<u8>)> {
    let mut data = Vec::new();
    let mut buffer = [0u8; 64 * 1024];
    let end = loop {
        if let Some(at) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
        let n = stream.read(&mut buffer).ok().filter(|&n| n > 0)?;
        data.extend_from_slice(&buffer[..n]);
    };
    let head = String::from_utf8_lossy(&data[..end]).into_owned();
    let mut body = data[end + 4..].to_vec();
    let length: Option<usize> = head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("content-length").then(|| value.trim().parse().ok())?
    });
    if let Some(length) = length.or(request.then_some(0)) {
        while body.len() < length {
            let n = stream.read(&mut buffer).ok().filter(|&n| n > 0)?;
            body.extend_from_slice(&buffer[..n]);
        }
    } else {
        loop {
            match stream.read(&mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(n) => body.extend_from_slice(&buffer[..n]),
            }
        }
    }
    Some((head, body))
}

/// One request through nginx; `(status, body)`. `announce` overrides the Content-Length sent.
fn request(
    port: u16,
    method: &str,
    path: &str,
    body: &[u8],
    announce: Option<usize>,
) -> (u16, String) {
    let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).expect("connect to nginx");
    stream.set_read_timeout(Some(Duration::from_secs(60))).expect("timeout");
    let length = announce.unwrap_or(body.len());
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: afallon.test\r\nContent-Type: application/json\r\n\
         Content-Length: {length}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).expect("send head");
    if let Err(e) = stream.write_all(body) {
        // nginx may answer (413) and close before it has read a body it will not take.
        assert!(matches!(e.kind(), ErrorKind::BrokenPipe | ErrorKind::ConnectionReset), "{e}");
    }
    let (head, body) = read_message(&mut stream, false).expect("an answer from nginx");
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("status");
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn rpc(id: usize) -> Vec<u8> {
    format!("{{\"jsonrpc\":\"2.0\",\"method\":\"WorkOrderSubmit\",\"id\":{id},\"params\":{{}}}}")
        .into_bytes()
}

fn count(seen: &Seen, method: &str, path: &str) -> usize {
    seen.lock().expect("log").iter().filter(|(m, p, _)| m == method && p == path).count()
}

#[test]
fn nginx_balances_json_rpc_passes_health_checks_and_holds_the_body_limit() {
    let test = "nginx_balances_json_rpc_passes_health_checks_and_holds_the_body_limit";
    let Some(nginx) = tool(test, "nginx", nginx()) else { return };
    let (a, seen_a) = fake_listener("a", false);
    let (b, seen_b) = fake_listener("b", false);
    let proxy = Nginx::start(&nginx, &[a, b]);
    let log = || proxy.error_log();

    let (status, body) = request(proxy.port, "GET", "/healthz", b"", None);
    assert_eq!(status, 200, "{body}\n{}", log());
    assert_eq!(count(&seen_a, "GET", "/healthz") + count(&seen_b, "GET", "/healthz"), 1);

    for id in 0..4 {
        let (status, body) = request(proxy.port, "POST", "/", &rpc(id), None);
        assert_eq!(status, 200, "{body}\n{}", log());
    }
    let (to_a, to_b) = (count(&seen_a, "POST", "/"), count(&seen_b, "POST", "/"));
    assert!(to_a >= 1 && to_b >= 1 && to_a + to_b == 4, "not balanced: a {to_a}, b {to_b}");

    // The listener's max_body_bytes exactly: passed on whole; one byte more: 413 from nginx.
    let largest = vec![b' '; 8 << 20];
    let (status, body) = request(proxy.port, "POST", "/", &largest, None);
    assert_eq!(status, 200, "{body}\n{}", log());
    assert!(body.contains(&format!("\"bytes\":{}", 8 << 20)), "{body}");
    let (status, _) = request(proxy.port, "POST", "/", b"", Some((8 << 20) + 1));
    assert_eq!(status, 413);
    assert_eq!(
        count(&seen_a, "POST", "/") + count(&seen_b, "POST", "/"),
        5,
        "413 reached a listener"
    );

    // /metrics: not through the balancer, but still JSON-RPC by POST.
    assert_eq!(request(proxy.port, "GET", "/metrics", b"", None).0, 403);
    assert_eq!(request(proxy.port, "POST", "/metrics", &rpc(9), None).0, 200);
    assert_eq!(count(&seen_a, "GET", "/metrics") + count(&seen_b, "GET", "/metrics"), 0);
}

#[test]
fn nginx_sends_a_post_elsewhere_only_if_no_listener_received_it() {
    let test = "nginx_sends_a_post_elsewhere_only_if_no_listener_received_it";
    let Some(nginx) = tool(test, "nginx", nginx()) else { return };

    // b refuses connections: every POST ends at a, none fails.
    let (a, seen_a) = fake_listener("a", false);
    let proxy = Nginx::start(&nginx, &[a, free_port()]);
    for id in 0..4 {
        let (status, body) = request(proxy.port, "POST", "/", &rpc(id), None);
        assert_eq!(status, 200, "{body}\n{}", proxy.error_log());
    }
    assert_eq!(count(&seen_a, "POST", "/"), 4);
    drop(proxy);

    // b takes the request and hangs up: the POST it received is not sent to a (502), but a GET
    // that failed the same way is.
    let (a, seen_a) = fake_listener("a", false);
    let (b, seen_b) = fake_listener("b", true);
    let proxy = Nginx::start(&nginx, &[a, b]);
    let mut failed = None;
    for id in 0..4 {
        let (status, _) = request(proxy.port, "POST", "/", &rpc(id), None);
        if status == 502 {
            failed = Some(id);
            break;
        }
        assert_eq!(status, 200);
    }
    let Some(failed) = failed else {
        let received = count(&seen_b, "POST", "/");
        panic!("no POST failed: {received} that the listener hanging up received were sent again");
    };
    let body = rpc(failed);
    let copies =
        |seen: &Seen| seen.lock().expect("log").iter().filter(|(_, _, b)| *b == body).count();
    assert_eq!((copies(&seen_a), copies(&seen_b)), (0, 1), "a received POST was sent again");

    let mut gets = 0;
    while count(&seen_b, "GET", "/healthz") == 0 && gets < 4 {
        gets += 1;
        let (status, body) = request(proxy.port, "GET", "/healthz", b"", None);
        assert_eq!(status, 200, "a GET was not retried on the other listener: {body}");
    }
    assert_eq!(count(&seen_b, "GET", "/healthz"), 1, "no GET reached the listener that hangs up");
    assert_eq!(count(&seen_a, "GET", "/healthz"), gets, "every GET was answered by a");
}
