//! `kappe bench-store`: drives the memory store with V visitors x M campaigns on T threads for
//! S seconds under a cap policy, and reports throughput, latency, resident bytes per stored
//! (visitor, campaign), and snapshot write and load times. The CLI subcommand parses the flags
//! and calls [`run`]; this module owns the measurement.
//!
//! Bytes per key come from the process's resident memory (`VmRSS`, the same figure as
//! `/proc/self/statm`) before and after loading, so they include map buckets, spilled records
//! and allocator overhead: what an operator would see.

use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::clock::UnixSecs;
use crate::policy::Cap;
use crate::store::memory::{MemoryOptions, MemoryStore};
use crate::store::{Admission, AdmitRequest, VisitorKey, snapshot};

/// What to drive the store with.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    pub visitors: usize,
    pub campaigns: usize,
    pub threads: usize,
    pub seconds: f64,
    pub caps: Vec<Cap>,
    /// How many admits ahead the driver prefetches each visitor's index entry, like
    /// `redis-benchmark -P`: 0 issues each admit cold, one at a time.
    pub pipeline: usize,
    /// Where to write the snapshot; the system's temporary directory when `None`.
    pub snapshot_dir: Option<PathBuf>,
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions {
            visitors: 1_000_000,
            campaigns: 1,
            threads: 1,
            seconds: 5.0,
            caps: vec![Cap {
                limit: 3,
                window_secs: 86_400,
            }],
            pipeline: 0,
            snapshot_dir: None,
        }
    }
}

/// What was measured.
#[derive(Clone, Debug)]
pub struct BenchReport {
    pub options: BenchOptions,
    pub keys: u64,
    pub load_secs: f64,
    pub operations: u64,
    pub admitted: u64,
    pub run_secs: f64,
    pub p50_ns: u64,
    pub p99_ns: u64,
    pub rss_before: u64,
    pub rss_after: u64,
    pub spilled_visitors: u64,
    pub estimated_bytes: u64,
    pub snapshot_bytes: u64,
    pub snapshot_write_secs: f64,
    pub snapshot_load_secs: f64,
    /// Set when the snapshot could not be written or read back.
    pub snapshot_error: Option<String>,
    /// Nanoseconds per dependent load in a random chase over [`PROBE_BYTES`]: the wait one
    /// admit into a table larger than the CPU's caches cannot avoid.
    pub memory_latency_ns: f64,
}

impl BenchReport {
    /// Operations (admit calls, admitted or denied) per second, all threads together.
    pub fn ops_per_sec(&self) -> f64 {
        self.operations as f64 / self.run_secs.max(1e-9)
    }

    /// Resident bytes per stored (visitor, campaign).
    pub fn bytes_per_key(&self) -> f64 {
        self.rss_after.saturating_sub(self.rss_before) as f64 / self.keys.max(1) as f64
    }
}

impl fmt::Display for BenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = &self.options;
        let caps: Vec<String> = o.caps.iter().map(Cap::to_string).collect();
        writeln!(
            f,
            "store: {} visitors x {} campaigns = {} keys, cap {}, {} thread(s), pipeline {}, {:.1} s",
            o.visitors,
            o.campaigns,
            self.keys,
            caps.join(","),
            o.threads,
            o.pipeline,
            self.run_secs
        )?;
        writeln!(f, "load:        {:.2} s", self.load_secs)?;
        writeln!(
            f,
            "throughput:  {:.0} admits/s ({:.0} per thread), {:.1}% admitted",
            self.ops_per_sec(),
            self.ops_per_sec() / o.threads.max(1) as f64,
            100.0 * self.admitted as f64 / self.operations.max(1) as f64
        )?;
        writeln!(
            f,
            "latency:     p50 {} ns, p99 {} ns",
            self.p50_ns, self.p99_ns
        )?;
        writeln!(
            f,
            "memory:      {:.1} bytes per key resident ({} MiB -> {} MiB), store estimate {} MiB, {} spilled visitors",
            self.bytes_per_key(),
            self.rss_before >> 20,
            self.rss_after >> 20,
            self.estimated_bytes >> 20,
            self.spilled_visitors
        )?;
        match &self.snapshot_error {
            Some(e) => writeln!(f, "snapshot:    failed: {e}")?,
            None => writeln!(
                f,
                "snapshot:    {} MiB, write {:.2} s, load {:.2} s",
                self.snapshot_bytes >> 20,
                self.snapshot_write_secs,
                self.snapshot_load_secs
            )?,
        }
        writeln!(
            f,
            "machine:     {:.0} ns per dependent load in a {} MiB random chase (the memory latency a cold admit waits for)",
            self.memory_latency_ns,
            PROBE_BYTES >> 20,
        )
    }
}

/// The process's resident set in bytes (0 where `/proc` is unavailable).
pub fn resident_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// A uniformly spread visitor key for visitor number `i`, like a keyed hash would give.
fn visitor(i: u64) -> VisitorKey {
    let mut z = i.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    VisitorKey(z ^ (z >> 31))
}

/// A small fast generator for picking keys; cryptographic quality is not needed here.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// The memory the latency probe chases through: far larger than the CPU's caches, like the
/// index of a million visitors.
pub const PROBE_BYTES: usize = 64 << 20;

/// Cache lines per block of the probe's table. The table is built from blocks of the size of a
/// store shard's index at a million visitors, so it sits in the same kind of memory (and pages).
const PROBE_BLOCK_LINES: usize = 4096;

/// Nanoseconds per load when each load's address depends on the one before, over `bytes` of
/// memory in a random cyclic order (one load per 64-byte line): the machine's memory latency
/// as a hash table much larger than the caches sees it.
pub fn memory_latency_ns(bytes: usize, steps: usize) -> f64 {
    const WORDS_PER_LINE: usize = 16;
    let lines = (bytes / 64).clamp(2, u32::MAX as usize);
    let next = one_cycle(lines);
    let mut table: Vec<Vec<u32>> = (0..lines.div_ceil(PROBE_BLOCK_LINES))
        .map(|_| vec![0u32; PROBE_BLOCK_LINES * WORDS_PER_LINE])
        .collect();
    for (i, n) in next.into_iter().enumerate() {
        table[i / PROBE_BLOCK_LINES][(i % PROBE_BLOCK_LINES) * WORDS_PER_LINE] = n;
    }
    let start = Instant::now();
    let mut p = 0usize;
    for _ in 0..steps.max(1) {
        p = table[p / PROBE_BLOCK_LINES][(p % PROBE_BLOCK_LINES) * WORDS_PER_LINE] as usize;
    }
    let ns = start.elapsed().as_nanos() as f64 / steps.max(1) as f64;
    std::hint::black_box(p);
    ns
}

/// A random successor for each of `n` indices forming one cycle through all of them
/// (Sattolo's shuffle), so a chase never settles into a short loop the caches could hold.
fn one_cycle(n: usize) -> Vec<u32> {
    let mut next: Vec<u32> = (0..n as u32).collect();
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    for i in (1..n).rev() {
        let j = (rng.next() % i as u64) as usize;
        next.swap(i, j);
    }
    next
}

/// Admits generated at a time by each driving thread.
const BATCH: usize = 1024;

/// Loads the store, drives it, snapshots it, and reports. Uses the wall clock for `now`.
pub fn run(opts: &BenchOptions) -> BenchReport {
    let threads = opts.threads.max(1);
    let campaigns: Vec<String> = (0..opts.campaigns.max(1))
        .map(|m| format!("campaign-{m}"))
        .collect();
    let t0: UnixSecs = crate::clock::Clock::System.now();
    let rss_before = resident_bytes();
    let store = MemoryStore::new(MemoryOptions {
        max_visitors: opts.visitors.max(1),
        max_campaigns: campaigns.len() + 16,
        max_retention_secs: 30 * 86_400,
    });
    let load_start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let (store, campaigns) = (&store, &campaigns);
            s.spawn(move || {
                for i in (t..opts.visitors).step_by(threads) {
                    for c in campaigns {
                        let _ = store.admit(
                            visitor(i as u64),
                            &AdmitRequest::campaign(c, &opts.caps),
                            t0,
                        );
                    }
                }
            });
        }
    });
    let load_secs = load_start.elapsed().as_secs_f64();
    let rss_after = resident_bytes();
    let keys = (opts.visitors * campaigns.len()) as u64;

    let stop = AtomicBool::new(false);
    let run_start = Instant::now();
    let results: Vec<(u64, u64, Vec<u32>)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (store, campaigns, stop) = (&store, &campaigns, &stop);
                s.spawn(move || {
                    let mut rng = XorShift(0x2545_f491_4f6c_dd1d ^ ((t as u64 + 1) << 32));
                    let (mut ops, mut admitted) = (0u64, 0u64);
                    let mut samples = Vec::with_capacity(1 << 16);
                    let mut now = t0;
                    let nv = opts.visitors.max(1) as u64;
                    let nc = campaigns.len() as u64;
                    let depth = opts.pipeline.min(BATCH / 2);
                    let mut batch = Vec::with_capacity(BATCH);
                    while !stop.load(Ordering::Relaxed) {
                        batch.clear();
                        batch.extend((0..BATCH).map(|_| {
                            let r = rng.next();
                            (visitor(r % nv), ((r >> 40) % nc) as usize)
                        }));
                        for (v, _) in &batch[..depth] {
                            store.prefetch(*v);
                        }
                        for (k, &(v, c)) in batch.iter().enumerate() {
                            if depth > 0
                                && let Some((ahead, _)) = batch.get(k + depth)
                            {
                                store.prefetch(*ahead);
                            }
                            let req = AdmitRequest::campaign(&campaigns[c], &opts.caps);
                            let out = if k % 64 == 0 {
                                let start = Instant::now();
                                let out = store.admit(v, &req, now);
                                samples
                                    .push(start.elapsed().as_nanos().min(u32::MAX as u128) as u32);
                                out
                            } else {
                                store.admit(v, &req, now)
                            };
                            admitted += u64::from(matches!(out, Ok(Admission::Admitted)));
                        }
                        ops += BATCH as u64;
                        now = t0 + run_start.elapsed().as_secs();
                    }
                    (ops, admitted, samples)
                })
            })
            .collect();
        std::thread::sleep(Duration::from_secs_f64(opts.seconds.max(0.01)));
        stop.store(true, Ordering::Relaxed);
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect()
    });
    let run_secs = run_start.elapsed().as_secs_f64();
    let operations = results.iter().map(|r| r.0).sum();
    let admitted = results.iter().map(|r| r.1).sum();
    let mut samples: Vec<u32> = results.into_iter().flat_map(|r| r.2).collect();
    samples.sort_unstable();
    let pct = |p: f64| {
        samples
            .get(((samples.len() as f64 * p) as usize).min(samples.len().saturating_sub(1)))
            .map_or(0, |v| u64::from(*v))
    };
    let stats = store.stats();

    let mut report = BenchReport {
        options: opts.clone(),
        keys,
        load_secs,
        operations,
        admitted,
        run_secs,
        p50_ns: pct(0.50),
        p99_ns: pct(0.99),
        rss_before,
        rss_after,
        spilled_visitors: stats.spilled_visitors,
        estimated_bytes: stats.estimated_bytes,
        snapshot_bytes: 0,
        snapshot_write_secs: 0.0,
        snapshot_load_secs: 0.0,
        snapshot_error: None,
        memory_latency_ns: 0.0,
    };
    let dir = opts.snapshot_dir.clone().unwrap_or_else(std::env::temp_dir);
    let path = dir.join(format!("kappe-bench-store-{}.state", std::process::id()));
    let start = Instant::now();
    match snapshot::write(&store, &path, t0) {
        Ok(summary) => {
            report.snapshot_write_secs = start.elapsed().as_secs_f64();
            report.snapshot_bytes = summary.bytes;
            let options = store.options();
            drop(store);
            let start = Instant::now();
            match snapshot::load(&path, options) {
                Ok(loaded) => {
                    report.snapshot_load_secs = start.elapsed().as_secs_f64();
                    if loaded.len() as u64 != summary.visitors {
                        report.snapshot_error = Some(format!(
                            "loaded {} visitors, wrote {}",
                            loaded.len(),
                            summary.visitors
                        ));
                    }
                }
                Err(e) => report.snapshot_error = Some(e.to_string()),
            }
        }
        Err(e) => report.snapshot_error = Some(e.to_string()),
    }
    let _ = std::fs::remove_file(&path);
    report.memory_latency_ns = memory_latency_ns(PROBE_BYTES, 2_000_000);
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny run loads every key, counts operations, respects the cap, and round-trips its
    /// snapshot.
    #[test]
    fn small_run_reports_consistent_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let report = run(&BenchOptions {
            visitors: 2_000,
            campaigns: 2,
            threads: 2,
            seconds: 0.2,
            caps: vec![Cap {
                limit: 3,
                window_secs: 86_400,
            }],
            pipeline: 4,
            snapshot_dir: Some(dir.path().to_owned()),
        });
        assert_eq!(report.keys, 4_000);
        assert!(report.operations > 0);
        // Each key had one impression from loading, so at most two more fit under 3/1d.
        assert!(report.admitted <= 2 * 4_000, "{}", report.admitted);
        assert!(report.p50_ns <= report.p99_ns);
        assert_eq!(report.snapshot_error, None);
        assert!(report.snapshot_bytes > 0);
        assert!(report.to_string().contains("admits/s"));
        assert!(report.memory_latency_ns > 0.0);
    }

    /// The probe visits every line of its table once per cycle: a chase as long as the table
    /// ends where it started, and a shorter one does not.
    #[test]
    fn the_latency_probe_is_one_cycle() {
        let ns = memory_latency_ns(1 << 16, 1 << 10);
        assert!(ns.is_finite() && ns > 0.0);
        let lines = (1usize << 16) / 64;
        let next = one_cycle(lines);
        let mut p = 0usize;
        for step in 1..=lines {
            p = next[p] as usize;
            assert_eq!(
                p == 0,
                step == lines,
                "back at the start after {step} steps"
            );
        }
    }
}
