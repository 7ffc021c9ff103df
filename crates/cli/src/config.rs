//! The service configuration: defaults, then a TOML file, then `AFALLON_*` environment variables,
//! then command-line flags, each layer overriding the one before.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use afallon_enclave::{EnclaveConfig, KeyEncryption};
use afallon_node::{NodeConfig, TlsFiles};
use figment::Figment;
use figment::providers::{Env, Format as _, Serialized, Toml};
use serde::{Deserialize, Serialize};

/// A configuration that cannot be used; the binary exits with code 64.
#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub(crate) struct ConfigError(String);

impl ConfigError {
    /// A configuration error saying `message`.
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

/// The settings of `afallon up`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Config {
    pub(crate) listen: SocketAddr,
    pub(crate) data_dir: PathBuf,
    pub(crate) sync_mode: bool,
    pub(crate) sync_timeout_seconds: u64,
    pub(crate) max_orders: u64,
    pub(crate) max_body_bytes: usize,
    pub(crate) max_data_items: usize,
    pub(crate) header_timeout_seconds: f64,
    pub(crate) body_timeout_seconds: f64,
    pub(crate) max_connections: usize,
    pub(crate) max_buffered_body_bytes: usize,
    /// PEM certificate chain: the listener serves HTTPS (with `tls_key`).
    pub(crate) tls_certificate: Option<PathBuf>,
    pub(crate) tls_key: Option<PathBuf>,
    /// Serve /metrics, /healthz and /readyz here instead of on the listener.
    pub(crate) admin_listen: Option<SocketAddr>,
    pub(crate) lease_seconds: u64,
    pub(crate) processors_per_worker: Option<usize>,
    pub(crate) enclave_threads: Option<usize>,
    /// `afallon up` runs on the simulated TEE unless this is set to false.
    pub(crate) insecure_simulation: bool,
    /// The TEE the workers run on: `sim`, `gramine` or `configfs-tsm`.
    pub(crate) platform: String,
    /// Gramine's attestation directory.
    pub(crate) gramine_dir: PathBuf,
    /// configfs-tsm's report directory.
    pub(crate) tsm_report_dir: PathBuf,
    /// The shared store's URL (`postgres://...`); none: the embedded store in `data_dir`.
    pub(crate) store: Option<String>,
    /// The most ids a look-up answer carries.
    pub(crate) look_up_page: usize,
    /// Run each worker's enclave in a process of its own (`afallon enclave`).
    pub(crate) enclave_process: bool,
    /// A worker pool to host: its name (none: no pool).
    pub(crate) pool: Option<String>,
    /// The pool's KMEs.
    pub(crate) pool_kmes: usize,
    /// The pool's WPEs.
    pub(crate) pool_wpes: usize,
    /// Serve the pool's KME here, to WPE hosts and joining KMEs elsewhere.
    pub(crate) kme_listen: Option<SocketAddr>,
    /// The pool's KMEs run elsewhere, at these endpoints: this node runs WPEs only.
    pub(crate) kmes: Vec<SocketAddr>,
    /// Join the pool by attesting to the KME at this endpoint.
    pub(crate) join: Option<SocketAddr>,
    /// The requester this node's pool WPEs are dedicated to.
    pub(crate) tenant: Option<String>,
    pub(crate) workers: Vec<WorkerSettings>,
}

/// One hosted worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WorkerSettings {
    pub(crate) name: String,
    #[serde(default)]
    pub(crate) organization_id: Option<String>,
    #[serde(default)]
    pub(crate) application_type_id: Option<String>,
    #[serde(default)]
    pub(crate) key_encryption: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 1947)),
            data_dir: PathBuf::from("afallon-data"),
            sync_mode: false,
            sync_timeout_seconds: 30,
            max_orders: 10_000,
            max_body_bytes: 8 << 20,
            max_data_items: 1024,
            header_timeout_seconds: 10.0,
            body_timeout_seconds: 30.0,
            max_connections: 4096,
            max_buffered_body_bytes: 256 << 20,
            tls_certificate: None,
            tls_key: None,
            admin_listen: None,
            lease_seconds: 30,
            processors_per_worker: None,
            enclave_threads: None,
            insecure_simulation: true,
            platform: "sim".into(),
            gramine_dir: PathBuf::from("/dev/attestation"),
            tsm_report_dir: PathBuf::from("/sys/kernel/config/tsm/report"),
            store: None,
            look_up_page: 1000,
            enclave_process: false,
            pool: None,
            pool_kmes: 1,
            pool_wpes: 2,
            kme_listen: None,
            kmes: vec![],
            join: None,
            tenant: None,
            workers: vec![WorkerSettings {
                name: "singleton-worker-1".into(),
                organization_id: None,
                application_type_id: None,
                key_encryption: None,
            }],
        }
    }
}

/// Defaults, then the file (if any), then the environment.
pub(crate) fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
    let mut figment = Figment::from(Serialized::defaults(Config::default()));
    if let Some(file) = file {
        if !file.exists() {
            return Err(ConfigError(format!("config file {} does not exist", file.display())));
        }
        figment = figment.merge(Toml::file(file));
    }
    // Not settings: the CLI's own variables, and the test harness's (scripts/services).
    figment = figment.merge(Env::prefixed("AFALLON_").ignore(&[
        "CONFIG",
        "LOG",
        "URL",
        "TOOLS",
        "NGINX",
        "TEST_POSTGRES",
        "REQUIRE_SERVICES",
        "PG_BIN",
        "SERVICES_NO_INSTALL",
        // The proxy model's account and node (`afallon connector`, `deploy-contracts`, `submit`).
        "ETH_KEY",
        "ETH_RPC",
        "ANVIL",
    ]));
    figment.extract().map_err(|e| ConfigError(e.to_string()))
}

impl Config {
    pub(crate) fn into_node_config(self) -> Result<NodeConfig, ConfigError> {
        let mut node = NodeConfig::new(self.listen, self.data_dir);
        node.sync_mode = self.sync_mode;
        node.sync_timeout = Duration::from_secs(self.sync_timeout_seconds);
        node.max_orders = self.max_orders;
        node.limits.max_request_bytes = self.max_body_bytes;
        node.limits.max_data_items = self.max_data_items;
        // A work order holds about seven JSON values per data item; leave room for extra keys.
        node.limits.max_json_values = node.limits.max_json_values.max(self.max_data_items * 16);
        let seconds = |name: &str, value: f64| {
            if value.is_finite() && value > 0.0 && value < 86_400.0 {
                Ok(Duration::from_secs_f64(value))
            } else {
                Err(ConfigError(format!("{name} must be a number of seconds above 0, got {value}")))
            }
        };
        node.http.header_timeout = seconds("header_timeout_seconds", self.header_timeout_seconds)?;
        node.http.body_timeout = seconds("body_timeout_seconds", self.body_timeout_seconds)?;
        if !(1..=1 << 24).contains(&self.max_connections) {
            return Err(ConfigError("max_connections must be from 1 to 16777216".into()));
        }
        node.http.max_connections = self.max_connections;
        if self.max_buffered_body_bytes < self.max_body_bytes {
            return Err(ConfigError(format!(
                "max_buffered_body_bytes ({}) must be at least max_body_bytes ({}), or no body of \
                 the largest size could ever be read",
                self.max_buffered_body_bytes, self.max_body_bytes
            )));
        }
        node.http.max_buffered_body_bytes = self.max_buffered_body_bytes;
        node.http.admin_listen = self.admin_listen;
        node.http.tls = match (self.tls_certificate, self.tls_key) {
            (Some(certificate), Some(key)) => Some(TlsFiles { certificate, key }),
            (None, None) => None,
            _ => {
                return Err(ConfigError(
                    "tls_certificate and tls_key go together: give both or neither".into(),
                ));
            }
        };
        node.lease = Duration::from_secs(self.lease_seconds.max(1));
        if let Some(processors) = self.processors_per_worker {
            node.processors_per_worker = processors;
        }
        if let Some(threads) = self.enclave_threads {
            node.enclave_threads = threads.max(1);
        }
        node.insecure_simulation = self.insecure_simulation;
        node.platform = match self.platform.as_str() {
            "sim" => afallon_node::TeePlatform::Simulated,
            "gramine" => afallon_node::TeePlatform::Gramine(self.gramine_dir.clone()),
            "configfs-tsm" => afallon_node::TeePlatform::ConfigfsTsm(self.tsm_report_dir.clone()),
            other => {
                return Err(ConfigError(format!(
                    "platform {other:?}: one of sim, gramine, configfs-tsm"
                )));
            }
        };
        if !(1..=100_000).contains(&self.look_up_page) {
            return Err(ConfigError("look_up_page must be from 1 to 100000".into()));
        }
        node.look_up_page = self.look_up_page;
        if self.pool.is_none() && self.tenant.is_some() {
            return Err(ConfigError("a tenant is a pool's: give the pool too".into()));
        }
        if let Some(name) = self.pool {
            if !(1..=16).contains(&self.pool_kmes) || self.pool_wpes > 256 {
                return Err(ConfigError(
                    "a pool has 1 to 16 KMEs and up to 256 WPEs (pool_kmes, pool_wpes)".into(),
                ));
            }
            if self.pool_wpes == 0 && self.kme_listen.is_none() {
                return Err(ConfigError(
                    "a node without the pool's WPEs serves its KME to others: give kme_listen"
                        .into(),
                ));
            }
            let mut pool = afallon_node::PoolConfig::new(name);
            pool.kmes = self.pool_kmes;
            pool.wpes = self.pool_wpes;
            pool.kme_listen = self.kme_listen;
            pool.remote_kmes = self.kmes;
            pool.join = self.join;
            if let Some(tenant) = &self.tenant {
                if !afallon_proto::is_requester_key_id(tenant) {
                    return Err(ConfigError(
                        "a tenant is the requesterId of a requester key: 64 lower-case hex \
                         digits, SHA-256 of the key's uncompressed SEC1 bytes (docs/pools.md)"
                            .into(),
                    ));
                }
                if self.store.is_none() {
                    return Err(ConfigError(
                        "a tenant's WPEs leave everyone else's orders to shared WPEs on other \
                         hosts, which need a shared store: give store = \"postgres://...\""
                            .into(),
                    ));
                }
                if self.pool_wpes == 0 {
                    return Err(ConfigError("a tenant needs the pool's WPEs on this node".into()));
                }
            }
            pool.tenant = self.tenant;
            if !pool.remote_kmes.is_empty() && (pool.join.is_some() || pool.kme_listen.is_some()) {
                return Err(ConfigError(
                    "a node whose pool KMEs run elsewhere (kmes) runs no KME: no join, no kme_listen"
                        .into(),
                ));
            }
            node.pool = Some(pool);
        }
        if self.enclave_process {
            let program = std::env::current_exe().map_err(|error| {
                ConfigError(format!("cannot find this program to start enclave processes: {error}"))
            })?;
            let data_dir = node.data_dir.clone().into_os_string();
            node.enclave_process =
                Some(vec![program.into(), "enclave".into(), "--data-dir".into(), data_dir]);
        }
        if self.workers.is_empty() && node.pool.is_none() {
            return Err(ConfigError("at least one worker (or a pool) must be configured".into()));
        }
        node.workers = self
            .workers
            .into_iter()
            .map(|w| {
                let mut config = EnclaveConfig::new(w.name);
                if let Some(id) = w.organization_id {
                    config.organization_id = id;
                }
                if let Some(id) = w.application_type_id {
                    config.application_type_id = id;
                }
                if let Some(name) = w.key_encryption {
                    config.key_encryption = KeyEncryption::from_name(&name)
                        .ok_or_else(|| ConfigError(format!("unknown key_encryption {name:?}")))?;
                }
                Ok(config)
            })
            .collect::<Result<_, ConfigError>>()?;
        Ok(node)
    }
}

#[cfg(test)]
// figment's test jail takes closures returning its own (large) error type.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;

    #[test]
    fn defaults_file_environment_in_that_order() {
        figment::Jail::expect_with(|jail| {
            let defaults = load(None).expect("defaults");
            assert_eq!(defaults.listen, SocketAddr::from(([127, 0, 0, 1], 1947)));
            assert!(defaults.insecure_simulation);
            assert_eq!(defaults.workers[0].name, "singleton-worker-1");

            jail.create_file(
                "afallon.toml",
                "max_orders = 5\nsync_mode = true\n[[workers]]\nname = \"w2\"\nkey_encryption = \"RSA-OAEP-3072-SHA256\"\n",
            )?;
            let from_file = load(Some(Path::new("afallon.toml"))).expect("file");
            assert_eq!((from_file.max_orders, from_file.sync_mode), (5, true));
            let node = from_file.into_node_config().expect("valid");
            assert_eq!(node.workers[0].worker_name, "w2");
            assert_eq!(node.workers[0].key_encryption, KeyEncryption::RsaOaep3072Sha256);

            jail.set_env("AFALLON_MAX_ORDERS", "7");
            jail.set_env("AFALLON_LISTEN", "0.0.0.0:2000");
            let with_env = load(Some(Path::new("afallon.toml"))).expect("env");
            assert_eq!(with_env.max_orders, 7, "the environment overrides the file");
            assert_eq!(with_env.listen, SocketAddr::from(([0, 0, 0, 0], 2000)));
            Ok(())
        });
    }

    #[test]
    fn the_gramine_deployment_runs_the_node_on_gramine() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/gramine");
        let config = load(Some(&root.join("afallon.toml"))).expect("the Gramine config loads");
        let node = config.into_node_config().expect("a node config");
        assert_eq!(
            node.platform,
            afallon_node::TeePlatform::Gramine(PathBuf::from("/dev/attestation"))
        );
        assert!(!node.insecure_simulation);
        // The manifest template, its placeholders filled as gramine-manifest would: DCAP, no
        // debug, the config and the binary measured, the data directory sealed to MRENCLAVE.
        let template = std::fs::read_to_string(root.join("afallon.manifest.template"))
            .expect("the manifest template");
        let rendered = template.replace("{{ arch_libdir }}", "/lib/x86_64-linux-gnu").replace(
            "{{ gramine.runtimedir() }}",
            "/usr/lib/x86_64-linux-gnu/gramine/runtime/glibc",
        );
        assert!(!rendered.contains("{{"), "a placeholder gramine-manifest would not fill");
        use figment::providers::{Format as _, Toml};
        let manifest: serde_json::Value =
            figment::Figment::from(Toml::string(&rendered)).extract().expect("TOML");
        assert_eq!(manifest["sgx"]["remote_attestation"], "dcap");
        assert_eq!(manifest["sgx"]["debug"], false);
        assert_eq!(manifest["loader"]["argv"][1], "up");
        let trusted = manifest["sgx"]["trusted_files"].to_string();
        assert!(
            trusted.contains("/etc/afallon/afallon.toml")
                && trusted.contains("/usr/local/bin/afallon")
        );
        let mounts = manifest["fs"]["mounts"].as_array().expect("mounts");
        assert!(mounts.iter().any(|m| m["type"] == "encrypted"
            && m["path"] == "/var/lib/afallon"
            && m["key_name"] == "_sgx_mrenclave"));
    }

    #[test]
    fn bad_configuration_is_refused_clearly() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("bad.toml", "max_order = 5\n")?;
            let error = load(Some(Path::new("bad.toml"))).expect_err("unknown key");
            assert!(error.to_string().contains("max_order"), "{error}");
            assert!(load(Some(Path::new("missing.toml"))).is_err());
            jail.create_file(
                "keys.toml",
                "[[workers]]\nname = \"w\"\nkey_encryption = \"RSA-PKCS1\"\n",
            )?;
            let config = load(Some(Path::new("keys.toml"))).expect("parses");
            assert!(config.into_node_config().is_err(), "unknown key encryption");
            jail.create_file("tls.toml", "tls_certificate = \"cert.pem\"\n")?;
            let error = load(Some(Path::new("tls.toml"))).expect("parses").into_node_config();
            assert!(
                error.expect_err("a certificate without a key").to_string().contains("tls_key")
            );
            jail.create_file("timeout.toml", "header_timeout_seconds = 0\n")?;
            let error = load(Some(Path::new("timeout.toml"))).expect("parses").into_node_config();
            assert!(error.expect_err("no timeout").to_string().contains("header_timeout_seconds"));
            const TENANT: &str = "a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1";
            let pg = "store = \"postgres://db/afallon\"\npool = \"p\"\n";
            let refusals = [
                (format!("{pg}tenant = \"a-b\"\n"), "requesterId"),
                (format!("{pg}tenant = \"\"\n"), "requesterId"),
                (format!("{pg}tenant = \"{}\"\n", TENANT.to_uppercase()), "lower-case"),
                (format!("{pg}tenant = \"0x{}\"\n", &TENANT[2..]), "requesterId"),
                (format!("tenant = \"{TENANT}\"\n"), "pool"),
                (format!("pool = \"p\"\ntenant = \"{TENANT}\"\n"), "shared store"),
                (
                    format!(
                        "{pg}pool_wpes = 0\nkme_listen = \"127.0.0.1:0\"\ntenant = \"{TENANT}\"\n"
                    ),
                    "WPEs",
                ),
            ];
            for (tenant, refused_for) in refusals {
                jail.create_file("tenant.toml", &tenant)?;
                let error =
                    load(Some(Path::new("tenant.toml"))).expect("parses").into_node_config();
                let error = error.expect_err(&tenant).to_string();
                assert!(error.contains(refused_for), "{tenant}: {error}");
            }
            jail.create_file("tenant.toml", &format!("{pg}tenant = \"{TENANT}\"\n"))?;
            let config = load(Some(Path::new("tenant.toml"))).expect("parses").into_node_config();
            let pool = config.expect("a tenant").pool.expect("a pool");
            assert_eq!(pool.tenant.as_deref(), Some(TENANT));
            Ok(())
        });
    }
}
