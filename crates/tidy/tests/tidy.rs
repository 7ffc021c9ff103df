//! The repository rules, walked over the tree from the workspace root.

use std::fs;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("workspace root")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        if path.is_dir() {
            if name != "target" && name != "corpus" && name != "artifacts" {
                rust_files(&path, out);
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn all_rust_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    rust_files(&root().join("crates"), &mut files);
    rust_files(&root().join("fuzz/fuzz_targets"), &mut files);
    assert!(files.len() > 10, "found too few Rust files: {files:?}");
    files
}

#[test]
fn every_rust_file_opens_with_a_module_doc() {
    let missing: Vec<_> = all_rust_files()
        .into_iter()
        .filter(|path| !fs::read_to_string(path).unwrap_or_default().starts_with("//!"))
        .collect();
    assert!(missing.is_empty(), "these files do not start with a `//!` doc: {missing:#?}");
}

#[test]
fn no_stubs() {
    let stubs: Vec<_> = all_rust_files()
        .into_iter()
        .filter(|path| !path.ends_with("tidy/tests/tidy.rs"))
        .filter(|path| {
            let text = fs::read_to_string(path).unwrap_or_default();
            text.contains(concat!("todo", "!(")) || text.contains(concat!("unimplemented", "!("))
        })
        .collect();
    assert!(stubs.is_empty(), "stubs are not features: {stubs:#?}");
}

/// Which afallon crates each crate may depend on. A new crate must be added here, placed in the
/// direction docs/ARCHITECTURE.md draws (cli → node/client/chain → store/enclave/attest →
/// workloads/crypto/proto).
#[rustfmt::skip]
const ALLOWED: &[(&str, &[&str])] = &[
    ("crypto", &[]),
    ("proto", &["crypto"]),
    ("workloads", &[]),
    ("attest", &["crypto"]),
    ("platform", &["attest", "crypto"]),
    ("enclave", &["attest", "crypto", "proto", "workloads"]),
    ("store", &["proto"]),
    ("store-postgres", &["store"]),
    ("node", &["attest", "crypto", "enclave", "platform", "proto", "store", "workloads"]),
    ("client", &["attest", "crypto", "proto"]),
    ("bench", &["attest", "client", "crypto", "enclave", "platform", "proto", "workloads"]),
    ("chain", &["client", "proto", "store"]),
    (
        "cli",
        &[
            "attest",
            "bench",
            "chain",
            "client",
            "crypto",
            "enclave",
            "node",
            "platform",
            "proto",
            "store-postgres",
        ],
    ),
    ("tidy", &[]),
];

fn workspace_dependencies(manifest: &str) -> Vec<String> {
    let mut deps = Vec::new();
    let mut in_deps = false;
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_deps = line == "[dependencies]" || line == "[build-dependencies]";
            continue;
        }
        if in_deps && let Some(name) = line.strip_prefix("afallon-") {
            let name = name.split(['.', ' ', '=']).next().unwrap_or("");
            deps.push(name.to_owned());
        }
    }
    deps
}

#[test]
fn dependencies_point_downwards() {
    let crates_dir = root().join("crates");
    let mut seen = 0;
    for entry in fs::read_dir(&crates_dir).expect("crates/").flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let manifest = fs::read_to_string(entry.path().join("Cargo.toml")).expect("Cargo.toml");
        let allowed = ALLOWED
            .iter()
            .find(|(crate_name, _)| *crate_name == name)
            .unwrap_or_else(|| panic!("crate {name} is not in tidy's ALLOWED table"))
            .1;
        for dep in workspace_dependencies(&manifest) {
            assert!(
                allowed.contains(&dep.as_str()),
                "crate {name} must not depend on afallon-{dep}"
            );
        }
        seen += 1;
    }
    assert_eq!(seen, ALLOWED.len(), "ALLOWED lists crates that do not exist");
}

#[test]
fn architecture_doc_names_every_crate() {
    let doc =
        fs::read_to_string(root().join("docs/ARCHITECTURE.md")).expect("docs/ARCHITECTURE.md");
    for (name, _) in ALLOWED {
        assert!(
            doc.contains(&format!("crates/{name}")),
            "docs/ARCHITECTURE.md does not mention crates/{name}"
        );
    }
}

/// alloy brings the previous RustCrypto generation: only the chain crate may compile it.
#[test]
fn only_the_chain_crate_depends_on_alloy() {
    for entry in fs::read_dir(root().join("crates")).expect("crates/") {
        let dir = entry.expect("entry").path();
        let manifest = fs::read_to_string(dir.join("Cargo.toml")).unwrap_or_default();
        let uses_alloy = manifest.lines().any(|line| line.trim_start().starts_with("alloy"));
        let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
        assert!(!uses_alloy || name == "chain", "crates/{name} depends on alloy");
    }
}

#[test]
fn the_dependency_parser_sees_dependencies() {
    let manifest = "[package]\nname = \"x\"\n[dependencies]\nafallon-proto.workspace = true\nserde = \"1\"\n[dev-dependencies]\nafallon-node = { path = \"..\" }\n";
    assert_eq!(workspace_dependencies(manifest), vec!["proto".to_owned()]);
}
