//! The request hot path does not allocate: not when no fault applies, and not when one is injected (the
//! per-downstream-cluster counters allocate once, when a cluster is first seen).
//!
//! A counting global allocator counts the allocations of the measuring thread only (the test harness
//! allocates on its own threads meanwhile).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use meshcap_fault::{FastRng, FaultConfig, FaultFilter, FaultStats};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// Whether this thread's allocations are counted (const-initialised: reading it never allocates).
    static MEASURING: Cell<bool> = const { Cell::new(false) };
}

fn count() {
    if MEASURING.try_with(Cell::get).unwrap_or(false) {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: every method forwards to the system allocator unchanged; the counter has no effect on memory.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const REQUEST: [(&str, &str); 6] = [
    ("host", "10.244.0.6:5000"),
    ("user-agent", "curl/7.88.1"),
    ("accept", "*/*"),
    ("x-request-id", "6c1f5e1e-9f6b-4a57-8b0b-3c2b51a1b7f2"),
    ("content-type", "application/json"),
    ("cookie", "session=abc123"),
];

fn allocations_during(mut f: impl FnMut()) -> usize {
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    MEASURING.with(|m| m.set(true));
    f();
    MEASURING.with(|m| m.set(false));
    ALLOCATIONS.load(Ordering::Relaxed) - before
}

#[test]
fn decisions_do_not_allocate() {
    let filter = |json: &str| {
        FaultFilter::new(
            Arc::new(FaultConfig::from_json(json).unwrap()),
            Arc::new(FaultStats::new("alloc")),
        )
    };
    let zero = filter(r#"{"delay": {"fixed_delay": "5s"}, "abort": {"http_status": 503}}"#);
    let kuma =
        filter(r#"{"delay": {"fixed_delay": "5s", "percentage": {"numerator": 50, "denominator": "TEN_THOUSAND"}}}"#);
    let header = filter(
        r#"{"abort": {"header_abort": {}, "percentage": {"numerator": 100}},
            "delay": {"header_delay": {}, "percentage": {"numerator": 100}},
            "response_rate_limit": {"header_limit": {}, "percentage": {"numerator": 100}},
            "disable_downstream_cluster_stats": false}"#,
    );
    let mut faulted = REQUEST.to_vec();
    faulted.extend([
        ("x-envoy-fault-delay-request", "5"),
        ("x-envoy-fault-abort-request", "503"),
        ("x-envoy-fault-throughput-response", "1"),
        ("x-envoy-downstream-service-cluster", "frontend"),
    ]);
    let mut rng = FastRng::seed_from_u64(1);
    // Warm up: the first request from `frontend` creates its counters.
    let d = header.decide(&faulted[..], Some("c"), &mut rng);
    drop(header.after_delay(d, &faulted[..], &mut rng));

    let n = allocations_during(|| {
        for _ in 0..10_000 {
            drop(zero.decide(&REQUEST[..], Some("c"), &mut rng));
            drop(kuma.decide(&REQUEST[..], Some("c"), &mut rng));
            drop(header.decide(&REQUEST[..], Some("c"), &mut rng));
            let d = header.decide(&faulted[..], Some("c"), &mut rng);
            drop(header.after_delay(d, &faulted[..], &mut rng));
        }
    });
    assert_eq!(n, 0, "allocations on the decision path");
    // The counter does see allocations (the test would be vacuous otherwise).
    assert_eq!(allocations_during(|| drop(std::hint::black_box(vec![1u8; 16]))), 1);
    assert!(kuma.stats().delays_injected() > 0, "the 0.5 % delay fired too");
    assert_eq!(header.stats().downstream_cluster("frontend"), Some((10_001, 10_001)));
}
