//! Throwaway services for tests that run real ones: finding the tools `scripts/services`
//! provides (and what a missing one means), temporary directories, and nginx on loopback with
//! `deploy/nginx/afallon.conf` rewritten to point at loopback listeners.
//!
//! One file, included by path from every test crate that needs it (`crates/tidy/tests/deploy.rs`,
//! `crates/cli/tests/split.rs`, `crates/enclave/tests/pool_python.rs`), so that the documented
//! config is rendered one way only and a missing tool means the same everywhere.

#![allow(dead_code, unreachable_pub)]

use std::env;
use std::fs;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

/// The workspace's root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("workspace root")
}

pub fn read(relative: &str) -> String {
    let path = root().join(relative);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The tool, or: a failure under `AFALLON_REQUIRE_SERVICES=1`, a loud skip (`None`) otherwise.
pub fn tool(test: &str, what: &str, found: Option<PathBuf>) -> Option<PathBuf> {
    if found.is_some() {
        return found;
    }
    let hint = "run the tests through scripts/test, or `scripts/services run -- cargo nextest run`";
    if env::var("AFALLON_REQUIRE_SERVICES").is_ok_and(|v| v == "1") {
        panic!("{test} needs {what}, and AFALLON_REQUIRE_SERVICES=1 makes that a failure ({hint})");
    }
    eprintln!("SKIPPED: {test} needs {what} ({hint})");
    None
}

/// A database of its own on the test PostgreSQL (`AFALLON_TEST_POSTGRES`), or `None` (said
/// loudly, as [`tool`]) without one.
pub fn fresh_postgres_database(test: &str) -> Option<String> {
    let base = tool(
        test,
        "PostgreSQL (AFALLON_TEST_POSTGRES)",
        env::var_os("AFALLON_TEST_POSTGRES").map(PathBuf::from),
    )?;
    let base = base.to_str().expect("a UTF-8 URL").to_owned();
    let (server, _) = base.rsplit_once('/').expect("postgres://HOST:PORT/DATABASE");
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    let name =
        format!("test_{}_{}_{nanos}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
    let output = Command::new("psql")
        .args([base.as_str(), "-q", "-c", &format!("CREATE DATABASE {name}")])
        .output()
        .expect("psql runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    Some(format!("{server}/{name}"))
}

/// anvil, the Ethereum dev node: `AFALLON_ANVIL`, the one `npm ci` put in `contracts/`, or
/// one on the `PATH`.
pub fn anvil() -> Option<PathBuf> {
    let candidates = [
        env::var_os("AFALLON_ANVIL").map(PathBuf::from),
        Some(root().join("contracts/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil")),
        on_path("anvil"),
    ];
    candidates.into_iter().flatten().find(|anvil| anvil.is_file())
}

pub fn on_path(name: &str) -> Option<PathBuf> {
    let path = env::var_os("PATH")?;
    env::split_paths(&path).map(|dir| dir.join(name)).find(|candidate| candidate.is_file())
}

pub fn tools_dir() -> PathBuf {
    env::var_os("AFALLON_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target/afallon-tools"))
}

pub fn nginx() -> Option<PathBuf> {
    let candidates = [
        env::var_os("AFALLON_NGINX").map(PathBuf::from),
        on_path("nginx"),
        Some(PathBuf::from("/usr/sbin/nginx")),
    ];
    candidates.into_iter().flatten().find(|nginx| {
        Command::new(nginx)
            .arg("-v")
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    })
}

/// A directory of its own under the system's temp dir, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(what: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir =
            env::temp_dir().join(format!("afallon-{what}-{}-{n}-{nanos}", std::process::id()));
        fs::create_dir_all(&dir).expect("temp dir");
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// deploy/nginx/afallon.conf with its listen line on `listen`, its upstream servers on `servers`
/// (loopback ports) and its access log in `dir`, inside a main config that keeps pid, logs and
/// temp files in `dir` and runs one process in the foreground. Returns the main config's path.
///
/// `scripts/bench-split` renders the file the same way (`render_nginx` there, in awk): the two
/// must agree, so change both together.
pub fn render_nginx(dir: &Path, listen: u16, servers: &[u16], extra: &str) -> PathBuf {
    let documented = read("deploy/nginx/afallon.conf");
    let (mut listens, mut upstream_servers, mut logs) = (0, 0, 0);
    let mut in_upstream = false;
    let mut site = String::new();
    for line in documented.lines() {
        let trimmed = line.trim_start();
        let indent = &line[..line.len() - trimmed.len()];
        in_upstream = (in_upstream || trimmed.starts_with("upstream ")) && trimmed != "}";
        let rewritten = if trimmed.starts_with("listen ") {
            listens += 1;
            format!("{indent}listen 127.0.0.1:{listen};")
        } else if in_upstream && trimmed.starts_with("server ") {
            let port = servers.get(upstream_servers).expect("more upstream servers than ports");
            upstream_servers += 1;
            let rest = &trimmed["server ".len()..];
            let (address, parameters) = rest.split_once(' ').unwrap_or((rest, ""));
            let parameters = if address.ends_with(';') { ";" } else { parameters };
            format!("{indent}server 127.0.0.1:{port} {parameters}")
        } else if let Some(rest) = trimmed.strip_prefix("access_log /") {
            logs += 1;
            let format = rest.split_whitespace().nth(1).unwrap_or(";");
            format!("{indent}access_log {}/access.log {format}", dir.display())
        } else {
            line.to_owned()
        };
        site.push_str(&rewritten);
        site.push('\n');
    }
    assert_eq!(
        (listens, upstream_servers, logs),
        (1, servers.len(), 1),
        "afallon.conf no longer has one listen line, {} upstream servers and one access_log \
         path: update render_nginx",
        servers.len()
    );
    site.push_str(extra);
    fs::write(dir.join("afallon.conf"), site).expect("site config");

    let d = dir.display();
    let main = format!(
        "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\n\
         error_log {d}/error.log info;\nevents {{ worker_connections 256; }}\nhttp {{\n\
         client_body_temp_path {d}/client_body;\nproxy_temp_path {d}/proxy;\n\
         fastcgi_temp_path {d}/fastcgi;\nuwsgi_temp_path {d}/uwsgi;\nscgi_temp_path {d}/scgi;\n\
         include {d}/afallon.conf;\n}}\n"
    );
    let path = dir.join("nginx.conf");
    fs::write(&path, main).expect("main config");
    path
}

pub fn nginx_command(nginx: &Path, dir: &Path, conf: &Path) -> Command {
    let mut command = Command::new(nginx);
    command.arg("-p").arg(dir).arg("-e").arg(dir.join("error.log")).arg("-c").arg(conf);
    command
}

pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).and_then(|l| l.local_addr()).expect("port").port()
}

/// nginx in the foreground on the rendered config; killed (a single process) when dropped.
pub struct Nginx {
    child: Child,
    /// Where it listens, on loopback.
    pub port: u16,
    dir: TempDir,
}

impl Nginx {
    pub fn start(nginx: &Path, servers: &[u16]) -> Self {
        let dir = TempDir::new("nginx");
        let port = free_port();
        let conf = render_nginx(&dir.0, port, servers, "");
        let mut child = nginx_command(nginx, &dir.0, &conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nginx");
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(SocketAddr::from((Ipv4Addr::LOCALHOST, port))).is_err() {
            let exited = child.try_wait().expect("nginx status");
            if exited.is_some() || Instant::now() > deadline {
                let log = fs::read_to_string(dir.0.join("error.log")).unwrap_or_default();
                let _ = child.kill();
                panic!("nginx did not come up ({exited:?}):\n{log}");
            }
            thread::sleep(Duration::from_millis(20));
        }
        Self { child, port, dir }
    }

    pub fn error_log(&self) -> String {
        fs::read_to_string(self.dir.0.join("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
