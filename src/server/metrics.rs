//! The server's counters and histograms, rendered in Prometheus' text format
//! (`GET /metrics`).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

/// Bucket bounds in seconds: time to first token, and between tokens.
const TTFT_BUCKETS: &[f64] = &[0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
const ITL_BUCKETS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];

pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Histogram {
        Histogram { bounds, counts: vec![0; bounds.len()], sum: 0.0, count: 0 }
    }

    fn observe(&mut self, x: f64) {
        for (i, b) in self.bounds.iter().enumerate() {
            if x <= *b {
                self.counts[i] += 1;
            }
        }
        self.sum += x;
        self.count += 1;
    }

    fn render(&self, name: &str, help: &str, out: &mut String) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {c}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}\n{name}_sum {}\n{name}_count {}", self.count, self.sum, self.count);
    }
}

pub struct Metrics {
    /// (endpoint, status) → count.
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    pub prompt_tokens: AtomicU64,
    pub generated_tokens: AtomicU64,
    /// Generations admitted and not yet ended.
    pub in_flight: AtomicUsize,
    /// Generations admitted that have not produced their first token yet.
    pub waiting: AtomicUsize,
    pub rejected: AtomicU64,
    pub cancelled: AtomicU64,
    ttft: Mutex<Histogram>,
    itl: Mutex<Histogram>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            requests: Mutex::new(BTreeMap::new()),
            prompt_tokens: AtomicU64::new(0),
            generated_tokens: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
            rejected: AtomicU64::new(0),
            cancelled: AtomicU64::new(0),
            ttft: Mutex::new(Histogram::new(TTFT_BUCKETS)),
            itl: Mutex::new(Histogram::new(ITL_BUCKETS)),
        }
    }
}

impl Metrics {
    pub fn request(&self, endpoint: &str, status: u16) {
        *self.requests.lock().unwrap().entry((endpoint.to_string(), status)).or_default() += 1;
    }

    pub fn first_token(&self, seconds: f64) {
        self.ttft.lock().unwrap().observe(seconds);
    }

    pub fn inter_token(&self, seconds: f64) {
        self.itl.lock().unwrap().observe(seconds);
    }

    /// The text exposition; `loaded` is the number of loaded models.
    pub fn render(&self, loaded: usize) -> String {
        let mut o = String::new();
        o.push_str("# HELP gomlx_requests_total HTTP requests by endpoint and status.\n# TYPE gomlx_requests_total counter\n");
        for ((ep, st), n) in self.requests.lock().unwrap().iter() {
            let _ = writeln!(o, "gomlx_requests_total{{endpoint=\"{ep}\",status=\"{st}\"}} {n}");
        }
        let counters = [
            ("gomlx_prompt_tokens_total", "Prompt tokens of generation requests.", self.prompt_tokens.load(Ordering::Relaxed)),
            ("gomlx_generated_tokens_total", "Tokens generated.", self.generated_tokens.load(Ordering::Relaxed)),
            ("gomlx_rejected_total", "Requests refused because the queue was full.", self.rejected.load(Ordering::Relaxed)),
            ("gomlx_cancelled_total", "Generations cancelled by a client that went away.", self.cancelled.load(Ordering::Relaxed)),
        ];
        for (name, help, v) in counters {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
        }
        let mem = |f: fn() -> crate::Result<usize>| f().unwrap_or(0);
        let gauges = [
            ("gomlx_requests_in_flight", "Generations running or queued.", self.in_flight.load(Ordering::Relaxed) as u64),
            ("gomlx_queue_depth", "Generations waiting for their first token.", self.waiting.load(Ordering::Relaxed) as u64),
            ("gomlx_models_loaded", "Models loaded now.", loaded as u64),
            ("gomlx_memory_active_bytes", "MLX active memory.", mem(crate::mlx::memory::active) as u64),
            ("gomlx_memory_peak_bytes", "MLX peak memory.", mem(crate::mlx::memory::peak) as u64),
            ("gomlx_memory_cache_bytes", "MLX buffer cache.", mem(crate::mlx::memory::cache) as u64),
            ("gomlx_process_resident_bytes", "Resident set size of the process (0 where unknown).", resident_bytes()),
        ];
        for (name, help, v) in gauges {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        }
        self.ttft.lock().unwrap().render("gomlx_time_to_first_token_seconds", "From a request's admission to its first token.", &mut o);
        self.itl.lock().unwrap().render("gomlx_inter_token_seconds", "Between consecutive tokens of a generation.", &mut o);
        o
    }
}

/// Per-replica gauges and counters (`gomlx serve --replicas N`), by model and replica index.
pub fn render_replicas(models: &[(String, Vec<crate::engine::ReplicaStats>)], o: &mut String) {
    let series = [
        ("gomlx_replica_outstanding", "Generations and classify jobs in flight on a replica.", "gauge"),
        ("gomlx_replica_requests_total", "Generations and classify jobs a replica was given since its model loaded.", "counter"),
    ];
    for (name, help, kind) in series {
        let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (model, stats) in models {
            for r in stats {
                let v = if kind == "gauge" { r.outstanding as u64 } else { r.requests };
                let _ = writeln!(o, "{name}{{model=\"{}\",replica=\"{}\"}} {v}", model.replace(['\\', '"', '\n'], "_"), r.index);
            }
        }
    }
}

/// The process's resident memory (Linux: /proc/self/statm; 0 elsewhere).
pub fn resident_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|p| p.parse::<u64>().ok()))
        .map(|pages| pages * 4096)
        .unwrap_or(0)
}
