//! Criterion benches of the memory store's admit: hot key (one visitor) and cold keys (a
//! million visitors), on one and two threads, next to governor's keyed rate limiter and a plain
//! `Mutex<HashMap>` doing the same job, in the same run; and of its sweep at a million visitors.
//!
//! With `KAPPE_BENCH_STORE=1` it instead runs the `bench-store` measurement
//! ([`kappe::store::bench::run`]) and prints its report; `KAPPE_BENCH_VISITORS`,
//! `KAPPE_BENCH_CAMPAIGNS`, `KAPPE_BENCH_THREADS`, `KAPPE_BENCH_SECONDS`,
//! `KAPPE_BENCH_PIPELINE` and `KAPPE_BENCH_CAP` set its options, as the flags of
//! `kappe bench-store` do.

use std::collections::HashMap;
use std::hint::black_box;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group};
use governor::{Quota, RateLimiter};
use kappe::policy::{Cap, parse_cap_list};
use kappe::store::bench::{BenchOptions, run};
use kappe::store::{AdmitRequest, MemoryOptions, MemoryStore, SweepCursor, VisitorKey};

const COLD_KEYS: u64 = 1_000_000;
const T0: u64 = 1_700_000_000;
const CAP: Cap = Cap {
    limit: 3,
    window_secs: 86_400,
};

fn key(i: u64) -> u64 {
    let mut z = i.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Runs `op(i)` for `iters` iterations split over `threads` threads; the wall time is the cost.
fn threaded(iters: u64, threads: u64, op: &(dyn Fn(u64) + Sync)) -> Duration {
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            s.spawn(move || {
                for i in (t..iters).step_by(threads as usize) {
                    op(i);
                }
            });
        }
    });
    start.elapsed()
}

/// The baseline any store must beat: a global lock around a map of timestamp lists.
struct MutexMap(Mutex<HashMap<u64, Vec<u32>>>);

impl MutexMap {
    fn admit(&self, k: u64, now: u32) -> bool {
        let mut m = self.0.lock().unwrap();
        let ts = m.entry(k).or_default();
        let live = ts.iter().filter(|t| **t + CAP.window_secs > now).count();
        if live >= CAP.limit as usize {
            return false;
        }
        ts.push(now);
        if ts.len() > CAP.limit as usize {
            ts.remove(0);
        }
        true
    }
}

fn admit_benches(c: &mut Criterion) {
    let caps = [CAP];
    let store = MemoryStore::new(MemoryOptions {
        max_visitors: 2 * COLD_KEYS as usize,
        ..MemoryOptions::default()
    });
    for i in 0..COLD_KEYS {
        let _ = store.admit(
            VisitorKey(key(i)),
            &AdmitRequest::campaign("rt-shoes", &caps),
            T0,
        );
    }
    let governor = RateLimiter::keyed(
        Quota::with_period(Duration::from_secs(86_400 / 3))
            .unwrap()
            .allow_burst(NonZeroU32::new(3).unwrap()),
    );
    let mutex = MutexMap(Mutex::new(HashMap::with_capacity(COLD_KEYS as usize)));
    for i in 0..COLD_KEYS {
        let _ = governor.check_key(&key(i));
        mutex.admit(key(i), T0 as u32);
    }

    let mut g = c.benchmark_group("admit");
    g.sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for threads in [1u64, 2] {
        for (temp, pick) in [("hot", 0u64), ("cold", 1)] {
            let k = move |i: u64| {
                if pick == 0 {
                    key(0)
                } else {
                    key(i % COLD_KEYS)
                }
            };
            g.bench_function(format!("kappe/{temp}/{threads}t"), |b| {
                b.iter_custom(|iters| {
                    threaded(iters, threads, &|i| {
                        black_box(
                            store
                                .admit(
                                    VisitorKey(k(i)),
                                    &AdmitRequest::campaign("rt-shoes", &caps),
                                    T0 + 10,
                                )
                                .ok(),
                        );
                    })
                })
            });
            g.bench_function(format!("governor/{temp}/{threads}t"), |b| {
                b.iter_custom(|iters| {
                    threaded(iters, threads, &|i| {
                        black_box(governor.check_key(&k(i)).is_ok());
                    })
                })
            });
            g.bench_function(format!("mutex-hashmap/{temp}/{threads}t"), |b| {
                b.iter_custom(|iters| {
                    threaded(iters, threads, &|i| {
                        black_box(mutex.admit(k(i), T0 as u32 + 10));
                    })
                })
            });
        }
    }
    g.finish();
}

/// A sweep of a million visitors none of whom has expired (the walk is the whole cost): all
/// shards at once, and the steps of 2,048 and 4,096 buckets a running kappe takes per tick
/// (2,048 at a million visitors, 4,096 at most).
fn sweep_benches(c: &mut Criterion) {
    let store = MemoryStore::new(MemoryOptions::default());
    let req = AdmitRequest::campaign("c", std::slice::from_ref(&CAP));
    for i in 0..COLD_KEYS {
        store.admit(VisitorKey(key(i)), &req, T0).unwrap();
    }
    let mut g = c.benchmark_group("sweep");
    g.sample_size(10);
    g.bench_function("1M visitors/every shard", |b| {
        b.iter(|| black_box(store.sweep(T0 + 1)));
    });
    for step in [2048, 4096] {
        let mut cursor = SweepCursor::default();
        g.bench_function(format!("1M visitors/one step of {step} buckets"), |b| {
            b.iter(|| black_box(store.sweep_step(&mut cursor, step, T0 + 1)));
        });
    }
    g.finish();
}

/// Making room in a store at its bound of a million visitors: the admit that finds the store
/// full and evicts 1/16 of it in one go, against one of the sweeper's evicting steps (16,384
/// buckets, the most) that make room ahead of that. New visitors refill the store between
/// iterations, untimed.
fn eviction_benches(c: &mut Criterion) {
    let max = COLD_KEYS as usize;
    let store = MemoryStore::new(MemoryOptions {
        max_visitors: max,
        ..MemoryOptions::default()
    });
    let req = AdmitRequest::campaign("c", std::slice::from_ref(&CAP));
    // New visitors, a thousand a second.
    let mut next = 0u64;
    let mut admit_new = |store: &MemoryStore| {
        store
            .admit(VisitorKey(key(next)), &req, T0 + next / 1000)
            .unwrap();
        next += 1;
        T0 + next / 1000
    };
    let mut g = c.benchmark_group("evict");
    g.sample_size(10);
    g.bench_function("1M visitors/the admit that finds the store full", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                while store.len() < max {
                    admit_new(&store);
                }
                let start = Instant::now();
                admit_new(&store);
                spent += start.elapsed();
            }
            spent
        });
    });
    let mut cursor = SweepCursor::default();
    g.bench_function("1M visitors/one evicting step of 16,384 buckets", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                let mut now = T0;
                while !cursor.evicting() && store.len() < max - max / 32 {
                    now = admit_new(&store);
                }
                let start = Instant::now();
                black_box(store.sweep_step(&mut cursor, 16_384, now));
                spent += start.elapsed();
            }
            spent
        });
    });
    g.finish();
}

criterion_group!(benches, admit_benches, sweep_benches, eviction_benches);

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    if std::env::var_os("KAPPE_BENCH_STORE").is_some() {
        let d = BenchOptions::default();
        let caps = std::env::var("KAPPE_BENCH_CAP")
            .ok()
            .map(|s| parse_cap_list(&s).expect("KAPPE_BENCH_CAP: a cap list such as 3/1d"))
            .unwrap_or(d.caps.clone());
        let opts = BenchOptions {
            visitors: env("KAPPE_BENCH_VISITORS", d.visitors),
            campaigns: env("KAPPE_BENCH_CAMPAIGNS", d.campaigns),
            threads: env("KAPPE_BENCH_THREADS", d.threads),
            seconds: env("KAPPE_BENCH_SECONDS", d.seconds),
            caps,
            pipeline: env("KAPPE_BENCH_PIPELINE", d.pipeline),
            snapshot_dir: None,
        };
        print!("{}", run(&opts));
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
