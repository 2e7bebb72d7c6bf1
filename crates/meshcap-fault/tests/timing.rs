//! Delays and throttling driven the way a tokio proxy drives them, on tokio's paused clock: exact virtual
//! times, no sleeping in real time.

use std::num::NonZeroU64;
use std::sync::Arc;
use std::time::Duration;

use meshcap_fault::{
    Action, FILL_INTERVAL, FastRng, FaultConfig, FaultFilter, FaultStats, RateLimiter, RequestHeaders,
};
use tokio::time::Instant;

fn header_filter() -> FaultFilter {
    let config = FaultConfig::from_json(
        r#"{"abort": {"header_abort": {}, "percentage": {"numerator": 100}},
            "delay": {"header_delay": {}, "percentage": {"numerator": 100}},
            "response_rate_limit": {"header_limit": {}, "percentage": {"numerator": 100}},
            "max_active_faults": 100}"#,
    )
    .unwrap();
    FaultFilter::new(Arc::new(config), Arc::new(FaultStats::new("timing")))
}

/// What the miniature proxy did with a request.
#[derive(Debug, PartialEq)]
enum Outcome {
    /// Forwarded upstream at this virtual time.
    Forwarded(Duration),
    /// Answered locally with this status at this virtual time.
    Aborted(u16, Duration),
}

/// A proxy's request path: decide, wait out a delay on the (paused) tokio clock, decide again.
async fn handle<H: RequestHeaders + ?Sized>(filter: &FaultFilter, headers: &H, start: Instant) -> Outcome {
    let mut rng = FastRng::seed_from_u64(1);
    let mut decision = filter.decide(headers, None, &mut rng);
    if let Action::Delay(delay) = *decision.action() {
        tokio::time::sleep(delay).await;
        decision = filter.after_delay(decision, headers, &mut rng);
    }
    match decision.action() {
        Action::Abort(a) => Outcome::Aborted(a.http_status(), start.elapsed()),
        _ => Outcome::Forwarded(start.elapsed()),
    }
}

/// A proxy's response path: write `len` body bytes through the limiter; returns (time, bytes) per write.
async fn throttle(kbps: NonZeroU64, len: u64) -> Vec<(Duration, u64)> {
    let start = Instant::now();
    let mut limiter = RateLimiter::new(kbps, start.into_std());
    let mut remaining = len;
    let mut writes = Vec::new();
    loop {
        let now = Instant::now();
        let grant = limiter.poll(remaining, now.into_std());
        remaining -= grant.bytes();
        writes.push((now - start, grant.bytes()));
        match grant.next_poll() {
            None => return writes,
            Some(at) => tokio::time::sleep_until(Instant::from_std(at)).await,
        }
    }
}

#[tokio::test(start_paused = true)]
async fn delay_then_abort_waits_exactly_the_delay() {
    // reference C3: delay 300 ms, then 429 (Envoy took 0.307 s of wall time).
    let f = header_filter();
    let start = Instant::now();
    let h = [
        ("x-envoy-fault-delay-request", "300"),
        ("x-envoy-fault-abort-request", "429"),
    ];
    assert_eq!(
        handle(&f, &h, start).await,
        Outcome::Aborted(429, Duration::from_millis(300))
    );
    assert_eq!((f.stats().delays_injected(), f.stats().aborts_injected()), (1, 1));
}

#[tokio::test(start_paused = true)]
async fn delay_only_forwards_after_the_delay_and_not_before() {
    // reference C4: delay 300 ms, then the request reaches the app.
    let f = header_filter();
    let start = Instant::now();
    let h = [("x-envoy-fault-delay-request", "300")];
    let early = tokio::time::timeout(Duration::from_millis(299), handle(&f, &h, start)).await;
    assert!(early.is_err(), "forwarded before the delay elapsed");
    // The abandoned request (a client that gave up) released its active-fault slot.
    assert_eq!(f.stats().active_faults(), 0);
    let start = Instant::now();
    assert_eq!(
        handle(&f, &h, start).await,
        Outcome::Forwarded(Duration::from_millis(300))
    );
}

#[tokio::test(start_paused = true)]
async fn fixed_delay_is_truncated_to_milliseconds() {
    let config =
        FaultConfig::from_json(r#"{"delay": {"fixed_delay": "0.0015999s", "percentage": {"numerator": 100}}}"#)
            .unwrap();
    let f = FaultFilter::new(Arc::new(config), Arc::new(FaultStats::new("t")));
    let start = Instant::now();
    assert_eq!(
        handle(&f, &[("a", "b")], start).await,
        Outcome::Forwarded(Duration::from_millis(1))
    );
    // Below one millisecond there is no delay at all (and no fault).
    let config =
        FaultConfig::from_json(r#"{"delay": {"fixed_delay": "0.0009s", "percentage": {"numerator": 100}}}"#).unwrap();
    let f = FaultFilter::new(Arc::new(config), Arc::new(FaultStats::new("t")));
    assert_eq!(
        handle(&f, &[("a", "b")], Instant::now()).await,
        Outcome::Forwarded(Duration::ZERO)
    );
    assert_eq!(f.stats().delays_injected(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_small_body_fits_the_first_burst() {
    // reference C9: 50 bytes at 1 KiB/s left at once (51 initial tokens).
    let writes = throttle(NonZeroU64::new(1).unwrap(), 50).await;
    assert_eq!(writes, [(Duration::ZERO, 50)]);
    let writes = throttle(NonZeroU64::new(1).unwrap(), 52).await;
    assert_eq!(writes, [(Duration::ZERO, 51), (FILL_INTERVAL, 1)]);
}

#[tokio::test(start_paused = true)]
async fn ten_kib_at_one_kib_per_second_takes_ten_seconds_in_50ms_ticks() {
    let writes = throttle(NonZeroU64::new(1).unwrap(), 10 * 1024).await;
    // Tokens granted by tick k: 51 + 51.2 k; 10,240 bytes are covered at k = 200, i.e. 10 s.
    assert_eq!(writes.len(), 201);
    assert_eq!(writes.last().unwrap().0, Duration::from_secs(10));
    assert_eq!(writes.iter().map(|w| w.1).sum::<u64>(), 10 * 1024);
    let mut total = 0;
    for (k, (at, bytes)) in writes.iter().enumerate() {
        assert_eq!(*at, FILL_INTERVAL * k as u32, "ticks are 50 ms apart");
        total += bytes;
        // Never ahead of the rate: cumulative bytes within the granted tokens.
        assert!(total as f64 <= 51.0 + 51.2 * k as f64 + 1e-6, "tick {k}: {total} bytes");
        if k > 0 && k < writes.len() - 1 {
            assert!((50..=52).contains(bytes), "tick {k}: {bytes} bytes");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn the_bucket_refills_while_idle_up_to_one_second() {
    let start = Instant::now();
    let mut limiter = RateLimiter::new(NonZeroU64::new(2).unwrap(), start.into_std());
    assert_eq!(limiter.poll(102, start.into_std()).bytes(), 102);
    tokio::time::advance(Duration::from_secs(30)).await;
    // Idle for 30 s: the bucket holds one second (2 KiB), not 30.
    let grant = limiter.poll(10_000, Instant::now().into_std());
    assert_eq!(grant.bytes(), 2048);
    assert_eq!(grant.next_poll(), Some((Instant::now() + FILL_INTERVAL).into_std()));
}

#[tokio::test(start_paused = true)]
async fn throttled_response_keeps_the_fault_active_until_done() {
    let f = header_filter();
    let h = [("x-envoy-fault-throughput-response", "1")];
    let decision = f.decide(&h, None, &mut FastRng::seed_from_u64(1));
    assert_eq!(decision.action(), &Action::Continue);
    let kbps = decision.response_rate_limit().unwrap();
    assert_eq!(f.stats().active_faults(), 1);
    // 51 + 51.2 k tokens reach 1,024 at k = 20.
    let writes = throttle(kbps, 1024).await;
    assert_eq!(writes.last().unwrap().0, Duration::from_secs(1));
    drop(decision);
    assert_eq!((f.stats().active_faults(), f.stats().response_rl_injected()), (0, 1));
}
