//! The open-loop driver: a fixed timeline of intended send times, served by a pool of keep-alive
//! connections.

use std::io;
use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::histogram::Histogram;
use crate::report::{Report, RequestCounts};
use crate::request::Request;
use crate::response::{Response, ResponseError, ResponseParser};
use crate::schedule::{Rate, Schedule};
use crate::timer::PreciseTimer;

const READ_CHUNK: usize = 16 * 1024;
const MIN_BACKOFF: Duration = Duration::from_millis(10);
const MAX_BACKOFF: Duration = Duration::from_millis(500);

/// A configuration value that cannot run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// At least one connection is needed.
    #[error("connections must be at least 1")]
    NoConnections,
    /// The measured window must not be empty.
    #[error("duration must be longer than zero")]
    ZeroDuration,
    /// A request needs time to complete.
    #[error("timeout must be longer than zero")]
    ZeroTimeout,
}

/// What to run: the request, the timeline, the connections and the per-request timeout.
///
/// ```
/// use std::time::Duration;
/// use meshcap_loadgen::{Config, Request};
///
/// let config = Config::builder(Request::new("http://127.0.0.1:5000/".parse()?), "20000".parse()?)
///     .connections(32)
///     .duration(Duration::from_secs(10))
///     .warmup(Duration::from_secs(2))
///     .build()?;
/// assert_eq!(config.schedule().measured_requests(), 200_000);
/// assert_eq!(config.timeout(), Duration::from_secs(5));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct Config {
    request: Request,
    schedule: Schedule,
    connections: usize,
    timeout: Duration,
}

impl Config {
    /// Start a configuration: `request` at `rate`, by default over 32 connections for 10 s after a 2 s
    /// warm-up, with a 5 s timeout.
    pub fn builder(request: Request, rate: Rate) -> ConfigBuilder {
        ConfigBuilder {
            request,
            rate,
            connections: 32,
            duration: Duration::from_secs(10),
            warmup: Duration::from_secs(2),
            timeout: Duration::from_secs(5),
        }
    }

    /// The request.
    pub fn request(&self) -> &Request {
        &self.request
    }

    /// The timeline.
    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    /// How many keep-alive connections serve the timeline.
    pub fn connections(&self) -> usize {
        self.connections
    }

    /// How long a request may take from its intended send time to its response (also the connect
    /// timeout).
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

/// Builds a [`Config`]; see [`Config::builder`].
#[derive(Debug, Clone)]
pub struct ConfigBuilder {
    request: Request,
    rate: Rate,
    connections: usize,
    duration: Duration,
    warmup: Duration,
    timeout: Duration,
}

impl ConfigBuilder {
    /// Number of connections (default 32).
    pub fn connections(mut self, connections: usize) -> Self {
        self.connections = connections;
        self
    }

    /// The measured window (default 10 s).
    pub fn duration(mut self, duration: Duration) -> Self {
        self.duration = duration;
        self
    }

    /// The unrecorded lead-in at the same rate (default 2 s; may be zero).
    pub fn warmup(mut self, warmup: Duration) -> Self {
        self.warmup = warmup;
        self
    }

    /// The per-request timeout (default 5 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Check and build.
    ///
    /// # Errors
    /// [`ConfigError`] for zero connections, an empty duration or a zero timeout.
    pub fn build(self) -> Result<Config, ConfigError> {
        if self.connections == 0 {
            return Err(ConfigError::NoConnections);
        }
        if self.duration.is_zero() {
            return Err(ConfigError::ZeroDuration);
        }
        if self.timeout.is_zero() {
            return Err(ConfigError::ZeroTimeout);
        }
        Ok(Config {
            request: self.request,
            schedule: Schedule::new(self.rate, self.warmup, self.duration),
            connections: self.connections,
            timeout: self.timeout,
        })
    }
}

/// A run that could not start or could not keep time.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// The target's host name did not resolve.
    #[error("cannot resolve `{authority}`")]
    Resolve {
        /// `host:port`.
        authority: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The target's host name resolved to no address.
    #[error("`{authority}` resolved to no address")]
    NoAddress {
        /// `host:port`.
        authority: String,
    },
    /// An initial connection failed: nothing was sent.
    #[error("cannot connect to {addr}")]
    Connect {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The high-resolution timer could not be created or failed.
    #[error("high-resolution timer failed")]
    Timer(#[source] io::Error),
}

/// Run `config` to completion: open the connections, send on the timeline, wait for every measured
/// request to complete or time out, and report.
///
/// Drive it on a current-thread runtime (pin that thread with `taskset` for repeatable numbers), as a
/// spawned task rather than the `block_on` future itself (waking the latter writes the runtime's eventfd
/// on every wake-up); it needs tokio's IO and time drivers. It spawns nothing: the connections are
/// futures of this one.
///
/// # The model
///
/// Request `k` is due at `start + k / rate` ([`Schedule`]). Free connections queue (FIFO) for the next
/// due request; the one at the head sleeps on a high-resolution timer until it is due, takes it and
/// sends it, and the next free connection moves up. When no connection is free at a request's due time,
/// the request waits in the (implicit) queue until one is; it is never dropped and never sent early.
/// Every latency is measured from the **intended** send time, so time spent queued behind a slow
/// response counts (the correction for coordinated omission, as in wrk2). One request per connection
/// at a time: no pipelining.
///
/// A request has a deadline of `intended + timeout`. One that is still queued at its deadline is
/// counted as a timeout without being sent; one whose response has not arrived by then is counted as a
/// timeout and its connection is closed. A reused keep-alive connection that turns out to have been
/// closed by the server (write failure, or end of stream / reset before any byte of the response) is
/// replaced and the request re-sent once, like HTTP clients do for idempotent requests.
///
/// # Errors
/// [`RunError`] when the target does not resolve, an initial connection fails, or the timer fails.
/// Failures during the run (connect, read, write, timeouts, non-2xx) are counted in the [`Report`].
pub async fn run(config: &Config) -> Result<Report, RunError> {
    let authority = config.request.target().socket_authority();
    let addr = tokio::net::lookup_host(&authority)
        .await
        .map_err(|source| RunError::Resolve {
            authority: authority.clone(),
            source,
        })?
        .next()
        .ok_or_else(|| RunError::NoAddress {
            authority: authority.clone(),
        })?;
    let mut streams = Vec::with_capacity(config.connections);
    let mut connecting: FuturesUnordered<_> = (0..config.connections).map(|_| connect(addr, config.timeout)).collect();
    while let Some(result) = connecting.next().await {
        streams.push(result.map_err(|source| RunError::Connect { addr, source })?);
    }
    let timer = PreciseTimer::new().map_err(RunError::Timer)?;
    let start = Instant::now();
    let schedule = config.schedule;
    let shared = Shared {
        addr,
        request: config.request.encode(),
        head_request: config.request.is_head(),
        closes: config.request.closes_connection(),
        timeout: config.timeout,
        schedule,
        start,
        final_deadline: start + schedule.warmup() + schedule.duration() + config.timeout,
        dispatch: tokio::sync::Mutex::new(Dispatch { next: 0, timer }),
        stats: Mutex::new(Stats::new(config.connections as u64)),
    };
    let mut drivers: FuturesUnordered<_> = streams.into_iter().map(|stream| drive(&shared, stream)).collect();
    while let Some(result) = drivers.next().await {
        result?;
    }
    drop(drivers);
    let mut stats = shared.stats.into_inner().unwrap_or_else(PoisonError::into_inner);
    // Requests nobody took (every connection failing until the end) passed their deadline unsent.
    let taken = shared.dispatch.into_inner().next;
    let untaken_measured = schedule
        .total_requests()
        .saturating_sub(taken.max(schedule.warmup_requests()));
    stats.counts.timeout += untaken_measured;
    let window_start = start + schedule.warmup();
    let span = stats.last_response.map_or(schedule.duration(), |last| {
        last.saturating_duration_since(window_start).max(schedule.duration())
    });
    let responses = stats.counts.ok + stats.counts.non_2xx;
    Ok(Report::new(
        config,
        stats.counts,
        (stats.opened, stats.failed),
        responses as f64 / span.as_secs_f64(),
        [stats.latency, stats.service, stats.send_delay],
        stats.first_error,
    ))
}

async fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, format!("no connection within {timeout:?}")))??;
    stream.set_nodelay(true)?;
    Ok(stream)
}

struct Shared {
    addr: SocketAddr,
    request: Vec<u8>,
    head_request: bool,
    closes: bool,
    timeout: Duration,
    schedule: Schedule,
    start: Instant,
    final_deadline: Instant,
    dispatch: tokio::sync::Mutex<Dispatch>,
    stats: Mutex<Stats>,
}

/// The head of the queue of free connections owns this while it waits for the next due request.
struct Dispatch {
    next: u64,
    timer: PreciseTimer,
}

#[derive(Debug, Clone, Copy)]
struct Job {
    intended: Instant,
    measured: bool,
}

struct Stats {
    counts: RequestCounts,
    opened: u64,
    failed: u64,
    latency: Histogram,
    service: Histogram,
    send_delay: Histogram,
    last_response: Option<Instant>,
    first_error: Option<String>,
}

impl Stats {
    fn new(opened: u64) -> Self {
        Self {
            counts: RequestCounts::default(),
            opened,
            failed: 0,
            latency: Histogram::new(),
            service: Histogram::new(),
            send_delay: Histogram::new(),
            last_response: None,
            first_error: None,
        }
    }

    fn note_error(&mut self, what: impl FnOnce() -> String) {
        if self.first_error.is_none() {
            self.first_error = Some(what());
        }
    }
}

impl Shared {
    fn stats(&self) -> MutexGuard<'_, Stats> {
        self.stats.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Wait for and take the next request, or `None` when the timeline is exhausted.
    async fn next_job(&self) -> io::Result<Option<Job>> {
        let mut dispatch = self.dispatch.lock().await;
        let k = dispatch.next;
        if k >= self.schedule.total_requests() {
            return Ok(None);
        }
        let intended = self.start + self.schedule.offset(k);
        dispatch.timer.sleep_until(intended).await?;
        dispatch.next = k + 1;
        Ok(Some(Job {
            intended,
            measured: self.schedule.is_measured(k),
        }))
    }

    /// Count a measured request's outcome; `sent` is `None` for one that timed out while queued.
    fn record(&self, job: Job, sent: Option<Instant>, done: Instant, outcome: &Result<Response, Failure>) {
        if !job.measured {
            return;
        }
        let mut stats = self.stats();
        if let Some(sent) = sent {
            stats
                .send_delay
                .record(nanos(sent.saturating_duration_since(job.intended)));
        }
        match outcome {
            Ok(response) => {
                stats.last_response = Some(stats.last_response.map_or(done, |last| last.max(done)));
                if (200..300).contains(&response.status()) {
                    stats.counts.ok += 1;
                    stats
                        .latency
                        .record(nanos(done.saturating_duration_since(job.intended)));
                    if let Some(sent) = sent {
                        stats.service.record(nanos(done.saturating_duration_since(sent)));
                    }
                } else {
                    stats.counts.non_2xx += 1;
                    stats.note_error(|| format!("status {}", response.status()));
                }
            }
            Err(failure) => {
                match failure {
                    Failure::Timeout => stats.counts.timeout += 1,
                    Failure::Write(_) => stats.counts.write_error += 1,
                    Failure::Read { .. } | Failure::Eof(_) => stats.counts.read_error += 1,
                    Failure::Protocol(_) | Failure::Unsolicited => stats.counts.protocol_error += 1,
                }
                stats.note_error(|| failure.to_string());
            }
        }
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Why one exchange failed.
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error("timeout")]
    Timeout,
    #[error("write: {0}")]
    Write(io::Error),
    #[error("read: {error}")]
    Read { error: io::Error, started: bool },
    #[error("read: {0}")]
    Eof(ResponseError),
    #[error("protocol: {0}")]
    Protocol(ResponseError),
    #[error("protocol: unsolicited bytes after the response")]
    Unsolicited,
}

impl Failure {
    /// Nothing of the response arrived: what a keep-alive connection the server already closed looks like.
    fn before_response(&self) -> bool {
        match self {
            Failure::Write(_) => true,
            Failure::Read { started, .. } => !started,
            Failure::Eof(e) => {
                *e == ResponseError::UnexpectedEof {
                    at: "before the response",
                }
            }
            _ => false,
        }
    }
}

/// One connection: take due requests and exchange them until the timeline is exhausted.
async fn drive(shared: &Shared, stream: TcpStream) -> Result<(), RunError> {
    let mut conn = Some(stream);
    let mut served = 0u64; // responses on the current connection
    let mut buf = Vec::with_capacity(READ_CHUNK);
    let mut parser = if shared.head_request {
        ResponseParser::for_head_request()
    } else {
        ResponseParser::new()
    };
    let mut backoff = MIN_BACKOFF;
    loop {
        let mut stream = match conn.take() {
            Some(stream) => stream,
            None => {
                if Instant::now() >= shared.final_deadline {
                    return Ok(());
                }
                match connect(shared.addr, shared.timeout).await {
                    Ok(stream) => {
                        shared.stats().opened += 1;
                        served = 0;
                        backoff = MIN_BACKOFF;
                        stream
                    }
                    Err(e) => {
                        {
                            let mut stats = shared.stats();
                            stats.failed += 1;
                            stats.note_error(|| format!("connect: {e}"));
                        }
                        let wake = (Instant::now() + backoff).min(shared.final_deadline);
                        tokio::time::sleep_until(wake.into()).await;
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                        continue;
                    }
                }
            }
        };
        let Some(job) = shared.next_job().await.map_err(RunError::Timer)? else {
            return Ok(());
        };
        let deadline = job.intended + shared.timeout;
        let sent = Instant::now();
        if sent >= deadline {
            // Queued past its deadline: a timeout, never sent.
            shared.record(job, None, sent, &Err(Failure::Timeout));
            conn = Some(stream);
            continue;
        }
        let mut outcome = exchange(&mut stream, shared, &mut parser, &mut buf, deadline).await;
        let mut alive = true;
        if served > 0 && outcome.as_ref().is_err_and(Failure::before_response) {
            // A stale keep-alive connection: replace it and send once more.
            alive = false;
            let remaining = deadline.saturating_duration_since(Instant::now());
            match connect(shared.addr, remaining.max(Duration::from_nanos(1))).await {
                Ok(fresh) => {
                    shared.stats().opened += 1;
                    stream = fresh;
                    served = 0;
                    alive = true;
                    outcome = exchange(&mut stream, shared, &mut parser, &mut buf, deadline).await;
                }
                Err(e) => {
                    let mut stats = shared.stats();
                    stats.failed += 1;
                    stats.note_error(|| format!("connect: {e}"));
                }
            }
        }
        let done = Instant::now();
        shared.record(job, Some(sent), done, &outcome);
        if let Ok(response) = outcome {
            served += 1;
            if alive && response.keep_alive() && !shared.closes {
                conn = Some(stream);
            }
        }
    }
}

/// Send the request and read one response, all before `deadline`.
async fn exchange(
    stream: &mut TcpStream,
    shared: &Shared,
    parser: &mut ResponseParser,
    buf: &mut Vec<u8>,
    deadline: Instant,
) -> Result<Response, Failure> {
    let attempt = async {
        stream.write_all(&shared.request).await.map_err(Failure::Write)?;
        parser.reset();
        buf.clear();
        loop {
            if buf.capacity() - buf.len() < READ_CHUNK / 4 {
                buf.reserve(READ_CHUNK);
            }
            let started = !buf.is_empty() || parser.has_started();
            let n = stream
                .read_buf(buf)
                .await
                .map_err(|error| Failure::Read { error, started })?;
            if n == 0 {
                return parser.finish().map_err(Failure::Eof);
            }
            let (used, done) = parser.parse(buf).map_err(Failure::Protocol)?;
            buf.drain(..used);
            if let Some(response) = done {
                return if buf.is_empty() {
                    Ok(response)
                } else {
                    Err(Failure::Unsolicited)
                };
            }
        }
    };
    tokio::time::timeout_at(deadline.into(), attempt)
        .await
        .unwrap_or(Err(Failure::Timeout))
}
