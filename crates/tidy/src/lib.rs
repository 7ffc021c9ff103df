//! Repository rules checked as tests (see `tests/tidy.rs`); this library is empty.
//!
//! The rules: every Rust file opens with a `//!` doc saying what it owns; crates depend only on
//! the crates below them (the direction docs/ARCHITECTURE.md draws); every crate appears in
//! docs/ARCHITECTURE.md; no `todo!` or `unimplemented!` stubs.
