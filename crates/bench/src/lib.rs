//! `afallon bench`: how many work orders a listener turns around per second and how quickly,
//! next to what its cryptography allows.
//!
//! - [`run`] acts as many requesters at once. Each builds a protected work order, submits it,
//!   waits for the result (from the submit answer in synchronous mode, by polling otherwise),
//!   verifies the worker's signature, decrypts, and checks the output. Only results that pass all
//!   of that count; everything else is an error, counted by kind.
//! - [`crypto_limit`] does the worker's cryptographic work for the same orders in-process on
//!   every core, with no network, JSON or store: the ceiling any service could reach.
//!   [`enclave_limit`] runs the whole enclave (JSON included) the same way.
//! - [`look_up_latency`] times receipt and worker look-ups one after the other, and
//!   [`look_up_callers`] keeps many of them going while honest requesters work.
//! - [`hostile_bodies`] builds the most expensive requests that fit within the listener's limits,
//!   and [`send_hostile`] sends them while honest requesters work.

mod hostile;
mod limits;
mod load;
mod look_ups;

pub use hostile::{HostileBody, HostileReport, RawError, hostile_bodies, raw_post, send_hostile};
pub use limits::{Limit, crypto_limit, enclave_limit};
pub use load::{BenchConfig, Failure, Latency, Mode, Report, Stop, judge, run};
pub use look_ups::{LookUpLatency, look_up_callers, look_up_latency};
