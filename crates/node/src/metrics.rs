//! Metrics in the Prometheus text format, kept per node (no global registry), so that several
//! nodes can run in one process.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use afallon_store::OrderCounts;

/// Latency buckets in seconds.
const BUCKETS: [f64; 10] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0];

/// What the store reports about its writes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StoreFigures {
    /// Write transactions committed.
    pub(crate) commits: u64,
    /// Commits that failed, with failed attempts to recover from one.
    pub(crate) failures: u64,
    /// Whether the store can write.
    pub(crate) writable: bool,
}

/// The node's counters.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    pub(crate) requests: AtomicU64,
    pub(crate) submitted: AtomicU64,
    pub(crate) rejected: AtomicU64,
    pub(crate) completed_ok: AtomicU64,
    pub(crate) completed_error: AtomicU64,
    pub(crate) requeued: AtomicU64,
    processing_seconds: Histogram,
}

#[derive(Debug, Default)]
struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Metrics {
    pub(crate) fn observe_processing(&self, seconds: f64) {
        let h = &self.processing_seconds;
        for (bucket, bound) in h.buckets.iter().zip(BUCKETS) {
            if seconds <= bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        h.count.fetch_add(1, Ordering::Relaxed);
        h.sum_micros.fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
    }

    pub(crate) fn render(
        &self,
        counts: Option<OrderCounts>,
        store: StoreFigures,
        simulated: bool,
        workers: usize,
    ) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP afallon_store_commits_total Write transactions committed by the store.\n# TYPE afallon_store_commits_total counter\nafallon_store_commits_total {}\n# HELP afallon_store_commit_failures_total Commits that failed (a full disk, an I/O error), with the failed attempts to recover from one (reopening the file, a trial commit).\n# TYPE afallon_store_commit_failures_total counter\nafallon_store_commit_failures_total {}\n# HELP afallon_store_writable 1 when the store can write, 0 after a failed commit until a trial commit succeeds.\n# TYPE afallon_store_writable gauge\nafallon_store_writable {}",
            store.commits,
            store.failures,
            u8::from(store.writable)
        );
        let mut counter = |name: &str, help: &str, value: u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}");
        };
        counter(
            "afallon_rpc_requests_total",
            "JSON-RPC requests received.",
            self.requests.load(Ordering::Relaxed),
        );
        counter(
            "afallon_workorders_submitted_total",
            "Work orders accepted.",
            self.submitted.load(Ordering::Relaxed),
        );
        counter(
            "afallon_workorders_rejected_total",
            "Work-order submissions refused (duplicate, busy, invalid).",
            self.rejected.load(Ordering::Relaxed),
        );
        counter(
            "afallon_workorders_requeued_total",
            "Work orders whose lease expired and that were queued again.",
            self.requeued.load(Ordering::Relaxed),
        );
        let _ = writeln!(
            out,
            "# HELP afallon_workorders_completed_total Work orders processed, by outcome.\n# TYPE afallon_workorders_completed_total counter\nafallon_workorders_completed_total{{outcome=\"success\"}} {}\nafallon_workorders_completed_total{{outcome=\"error\"}} {}",
            self.completed_ok.load(Ordering::Relaxed),
            self.completed_error.load(Ordering::Relaxed)
        );
        if let Some(counts) = counts {
            let _ = writeln!(
                out,
                "# HELP afallon_workorders Work orders in the store, by state.\n# TYPE afallon_workorders gauge\nafallon_workorders{{state=\"queued\"}} {}\nafallon_workorders{{state=\"processing\"}} {}\nafallon_workorders{{state=\"finished\"}} {}",
                counts.queued, counts.processing, counts.finished
            );
        }
        let _ = writeln!(
            out,
            "# HELP afallon_tee_simulated 1 when this node runs workers on the simulated TEE, which protects nothing.\n# TYPE afallon_tee_simulated gauge\nafallon_tee_simulated {}",
            u8::from(simulated)
        );
        let _ = writeln!(
            out,
            "# HELP afallon_workers Workers hosted by this node.\n# TYPE afallon_workers gauge\nafallon_workers {workers}"
        );
        if let Some((resident, peak)) = process_memory() {
            let _ = writeln!(
                out,
                "# HELP process_resident_memory_bytes Resident memory size in bytes.\n# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes {resident}\n# HELP afallon_process_peak_resident_memory_bytes Peak resident memory size in bytes since the process started.\n# TYPE afallon_process_peak_resident_memory_bytes gauge\nafallon_process_peak_resident_memory_bytes {peak}"
            );
        }
        let h = &self.processing_seconds;
        let _ = writeln!(
            out,
            "# HELP afallon_workorder_processing_seconds Time in the enclave per work order.\n# TYPE afallon_workorder_processing_seconds histogram"
        );
        for (bucket, bound) in h.buckets.iter().zip(BUCKETS) {
            let _ = writeln!(
                out,
                "afallon_workorder_processing_seconds_bucket{{le=\"{bound}\"}} {}",
                bucket.load(Ordering::Relaxed)
            );
        }
        let count = h.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "afallon_workorder_processing_seconds_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "afallon_workorder_processing_seconds_sum {}",
            h.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "afallon_workorder_processing_seconds_count {count}");
        out
    }
}

/// Resident and peak resident memory of this process, in bytes (Linux: `/proc/self/status`).
fn process_memory() -> Option<(u64, u64)> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib = |field: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(field))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
    };
    Some((kib("VmRSS:")? * 1024, kib("VmHWM:")? * 1024))
}
