//! The per-connection driver.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use crate::http1::{
    BodyFraming, ChunkedDecoder, DecodeStep, ErrorReply, HttpDate, LAST_CHUNK, LocalReplyHead, RequestHead,
    ResponseExtras, ResponseFraming, ResponseHead, UpstreamExtras, encode_chunk, encode_local_reply,
    encode_request_head, encode_response_head,
};

use super::connector::UpstreamConn;
use super::{
    Cluster, ConnInfo, Endpoint, FilterAction, FilterContext, Inner, RequestLog, ResponseFlags, UpstreamConnector,
};

const CONTINUE_100: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";
const RESET_BEFORE_HEADERS: &str = "upstream connect error or disconnect/reset before headers. reset reason: ";

/// How a request ended, for the connection loop.
enum Outcome {
    /// The connection may carry the next request.
    KeepAlive,
    /// Close the connection (the proxy decided).
    Close,
    /// The client went away.
    ClientGone,
}

/// Why waiting for bytes stopped.
enum Wait {
    Eof,
    Timeout,
    Io,
}

/// Per-request facts for the access log and statistics.
struct Exchange<'c> {
    start: Instant,
    start_time: SystemTime,
    status: u16,
    flags: ResponseFlags,
    details: &'static str,
    rx: u64,
    tx: u64,
    upstream: Option<SocketAddr>,
    cluster: Option<&'c Cluster>,
    request_id: [u8; 36],
    request_id_len: usize,
    /// The request body has not been fully read from the client.
    rx_pending: bool,
}

struct Conn<'a, C: UpstreamConnector, IO> {
    inner: &'a Inner<C>,
    info: ConnInfo,
    io: IO,
    rbuf: BytesMut,
    ubuf: BytesMut,
    out: Vec<u8>,
    head: RequestHead,
    resp: ResponseHead,
    date: HttpDate,
    first_request: bool,
}

pub(super) async fn serve<C, IO>(inner: &Inner<C>, io: IO, info: ConnInfo)
where
    C: UpstreamConnector,
    IO: AsyncRead + AsyncWrite + Unpin + Send,
{
    let st = &inner.stats.hcm;
    st.downstream_cx_total.inc();
    st.downstream_cx_active.inc();
    st.downstream_cx_http1_total.inc();
    st.downstream_cx_http1_active.inc();
    let size = inner.config.buffer_size.max(1024);
    let mut conn = Conn {
        inner,
        info,
        io,
        rbuf: BytesMut::with_capacity(size),
        ubuf: BytesMut::with_capacity(size),
        out: Vec::with_capacity(4096),
        head: RequestHead::new(),
        resp: ResponseHead::new(),
        date: HttpDate::default(),
        first_request: true,
    };
    let remote = loop {
        match conn.next_request().await {
            Outcome::KeepAlive => conn.first_request = false,
            Outcome::Close => break false,
            Outcome::ClientGone => break true,
        }
    };
    if !remote {
        let _ = conn.io.shutdown().await;
    }
    st.downstream_cx_destroy.inc();
    if remote {
        st.downstream_cx_destroy_remote.inc();
    } else {
        st.downstream_cx_destroy_local.inc();
    }
    st.downstream_cx_http1_active.dec();
    st.downstream_cx_active.dec();
}

async fn timed<F: Future>(limit: Option<Duration>, f: F) -> Option<F::Output> {
    match limit {
        Some(d) => tokio::time::timeout(d, f).await.ok(),
        None => Some(f.await),
    }
}

async fn timed_until<F: Future>(deadline: Option<Instant>, f: F) -> Option<F::Output> {
    match deadline {
        Some(d) => tokio::time::timeout_at(d, f).await.ok(),
        None => Some(f.await),
    }
}

impl<C, IO> Conn<'_, C, IO>
where
    C: UpstreamConnector,
    IO: AsyncRead + AsyncWrite + Unpin + Send,
{
    fn reserve(buf: &mut BytesMut, size: usize) {
        if buf.capacity() - buf.len() < size / 4 {
            buf.reserve(size);
        }
    }

    /// Read more client bytes into `rbuf`.
    async fn read_client(&mut self, deadline: Option<Instant>) -> Result<usize, Wait> {
        Self::reserve(&mut self.rbuf, self.inner.config.buffer_size);
        match timed_until(deadline, self.io.read_buf(&mut self.rbuf)).await {
            None => Err(Wait::Timeout),
            Some(Ok(0)) => Err(Wait::Eof),
            Some(Ok(n)) => {
                self.inner.stats.hcm.downstream_cx_rx_bytes_total.add(n as u64);
                Ok(n)
            }
            Some(Err(_)) => Err(Wait::Io),
        }
    }

    /// Write to the client; a client that reads nothing for the stream idle timeout is an error.
    async fn write_client(&mut self, bytes: &[u8]) -> io::Result<()> {
        timed(self.inner.config.stream_idle_timeout, self.io.write_all(bytes))
            .await
            .unwrap_or_else(|| Err(io::ErrorKind::TimedOut.into()))?;
        self.inner
            .stats
            .hcm
            .downstream_cx_tx_bytes_total
            .add(bytes.len() as u64);
        Ok(())
    }

    async fn flush_out_to_client(&mut self) -> io::Result<()> {
        let out = std::mem::take(&mut self.out);
        let r = self.write_client(&out).await;
        self.out = out;
        self.out.clear();
        r
    }

    /// Read, validate and handle one request.
    async fn next_request(&mut self) -> Outcome {
        let cfg = &self.inner.config;
        let mut header_deadline = None;
        // Wait for a complete head.
        let head_len = loop {
            if !self.rbuf.is_empty() {
                if header_deadline.is_none() {
                    header_deadline = cfg.request_headers_timeout.map(|d| Instant::now() + d);
                }
                match self.head.parse(&self.rbuf, &cfg.limits) {
                    Ok(Some(n)) => break n,
                    Ok(None) => {}
                    Err(e) => {
                        self.inner.stats.hcm.downstream_cx_protocol_error.inc();
                        return self.codec_error(e.reply()).await;
                    }
                }
            }
            let deadline = if self.rbuf.is_empty() {
                cfg.idle_timeout.map(|d| Instant::now() + d)
            } else {
                header_deadline
            };
            match self.read_client(deadline).await {
                Ok(_) => {}
                Err(Wait::Timeout) if self.rbuf.is_empty() => {
                    self.inner.stats.hcm.downstream_cx_idle_timeout.inc();
                    return Outcome::Close;
                }
                Err(Wait::Timeout) => {
                    self.inner.stats.hcm.downstream_rq_header_timeout.inc();
                    let reply = ErrorReply {
                        status: 408,
                        body: "request header timeout",
                        details: "request_header_timeout",
                    };
                    return self.codec_error(reply).await;
                }
                Err(Wait::Eof | Wait::Io) => return Outcome::ClientGone,
            }
        };
        self.rbuf.advance(head_len);
        self.handle_request().await
    }

    /// Answer an invalid request (or a header timeout) with Envoy's local reply and close.
    async fn codec_error(&mut self, reply: ErrorReply) -> Outcome {
        let st = &self.inner.stats;
        st.hcm.downstream_rq_total.inc();
        st.hcm.downstream_rq_http1_total.inc();
        self.date.update(SystemTime::now());
        self.out.clear();
        let head = LocalReplyHead {
            status: reply.status,
            content_type: b"text/plain",
            headers: &[],
            close: true,
        };
        encode_local_reply(&head, reply.body.as_bytes(), false, self.date.as_bytes(), &mut self.out);
        let _ = self.flush_out_to_client().await;
        st.record_response(reply.status);
        let mut ex = self.exchange();
        ex.status = reply.status;
        ex.details = reply.details;
        ex.flags.insert(ResponseFlags::DOWNSTREAM_PROTOCOL_ERROR);
        ex.tx = reply.body.len() as u64;
        self.log(&ex, false);
        Outcome::Close
    }

    fn exchange<'c>(&self) -> Exchange<'c> {
        Exchange {
            start: Instant::now(),
            start_time: SystemTime::now(),
            status: 0,
            flags: ResponseFlags::empty(),
            details: "",
            rx: 0,
            tx: 0,
            upstream: None,
            cluster: None,
            request_id: [0; 36],
            request_id_len: 0,
            rx_pending: false,
        }
    }

    fn log(&self, ex: &Exchange<'_>, parsed: bool) {
        let Some(sink) = &self.inner.log else { return };
        let head = &self.head;
        let request_id = if ex.request_id_len > 0 {
            Some(&ex.request_id[..ex.request_id_len])
        } else if parsed {
            head.header(b"x-request-id")
        } else {
            None
        };
        let entry = RequestLog {
            start_time: ex.start_time,
            method: parsed.then(|| head.method()),
            path: parsed.then(|| head.target()),
            authority: if parsed { head.host() } else { None },
            request_id,
            user_agent: if parsed { head.header(b"user-agent") } else { None },
            protocol: "HTTP/1.1",
            status: ex.status,
            flags: ex.flags,
            details: ex.details,
            bytes_received: ex.rx,
            bytes_sent: ex.tx,
            duration: ex.start.elapsed(),
            upstream_host: ex.upstream,
            cluster: ex.cluster.map(|c| c.name.as_str()),
            downstream_remote: self.info.peer,
            downstream_local: self.info.local,
        };
        sink.log(&entry);
    }

    /// Whether the request body has been fully read from the client.
    fn body_pending(&self) -> bool {
        !matches!(self.head.framing(), BodyFraming::None | BodyFraming::ContentLength(0))
    }

    /// Send a local reply for a parsed request. Closes when asked, when the client asked, or when
    /// the request body was not read.
    async fn local_reply(
        &mut self,
        ex: &mut Exchange<'_>,
        status: u16,
        body: &[u8],
        headers: &[(&[u8], &[u8])],
        close: bool,
        details: &'static str,
    ) -> Outcome {
        if ex.rx_pending {
            // Envoy counts a reply sent before the request body was read (reference e2e B2).
            self.inner.stats.hcm.downstream_rq_response_before_rq_complete.inc();
        }
        let close = close || !self.head.keep_alive() || ex.rx_pending;
        self.date.update(SystemTime::now());
        self.out.clear();
        let head = LocalReplyHead {
            status,
            content_type: b"text/plain",
            headers,
            close,
        };
        encode_local_reply(&head, body, self.head.is_head(), self.date.as_bytes(), &mut self.out);
        let ok = self.flush_out_to_client().await.is_ok();
        ex.status = status;
        ex.details = details;
        if !self.head.is_head() {
            ex.tx = body.len() as u64;
        }
        self.finish(ex);
        if !ok {
            Outcome::ClientGone
        } else if close {
            Outcome::Close
        } else {
            Outcome::KeepAlive
        }
    }

    fn finish(&mut self, ex: &Exchange<'_>) {
        let st = &self.inner.stats;
        st.hcm.downstream_rq_active.dec();
        if ex.status != 0 {
            st.record_response(ex.status);
        }
        self.log(ex, true);
    }

    async fn handle_request(&mut self) -> Outcome {
        let inner = self.inner;
        let st = &inner.stats.hcm;
        st.downstream_rq_total.inc();
        st.downstream_rq_http1_total.inc();
        st.downstream_rq_active.inc();
        let mut ex = self.exchange();
        ex.rx_pending = self.body_pending();
        if self.head.target_form() == crate::http1::TargetForm::Absolute {
            st.downstream_rq_non_relative_path.inc();
        }

        // Upgrade: only the configured protocols (Envoy's upgrade_configs); otherwise 403.
        let upgrade = match self.head.upgrade() {
            Some(proto) => {
                if !inner
                    .config
                    .upgrade_types
                    .iter()
                    .any(|t| t.as_bytes().eq_ignore_ascii_case(proto))
                {
                    st.downstream_rq_ws_on_non_ws_route.inc();
                    return self.local_reply(&mut ex, 403, b"", &[], true, "upgrade_failed").await;
                }
                true
            }
            None => false,
        };

        // Route: first prefix match on the origin-form path.
        let path = self.head.path();
        let route = match self.head.target_form() {
            crate::http1::TargetForm::Origin | crate::http1::TargetForm::Absolute => inner
                .config
                .routes
                .iter()
                .find(|r| path.starts_with(r.prefix.as_bytes())),
            _ => None,
        };
        let Some(route) = route else {
            st.no_route.inc();
            ex.flags.insert(ResponseFlags::NO_ROUTE_FOUND);
            let close = self.head.method() == "CONNECT";
            return self.local_reply(&mut ex, 404, b"", &[], close, "route_not_found").await;
        };
        let cluster: &Cluster = &route.cluster;
        ex.cluster = Some(cluster);

        if self.head.expect_continue() && self.write_client(CONTINUE_100).await.is_err() {
            self.finish(&ex);
            return Outcome::ClientGone;
        }

        // Request filters (the fault filter): delay, then re-evaluate; local reply; rate limit.
        let mut fctx = FilterContext::default();
        loop {
            match inner.filter.on_request(&self.head, &mut fctx) {
                FilterAction::Continue => break,
                FilterAction::Delay(d) => {
                    tokio::time::sleep(d).await;
                    fctx.record_delay(d);
                }
                FilterAction::LocalReply(reply) => {
                    ex.flags.insert(fctx.flags());
                    let headers: Vec<(&[u8], &[u8])> =
                        reply.headers.iter().map(|(n, v)| (n.as_ref(), v.as_ref())).collect();
                    let outcome = self
                        .local_reply(&mut ex, reply.status, &reply.body, &headers, reply.close, reply.details)
                        .await;
                    inner.filter.on_complete(&fctx);
                    return outcome;
                }
            }
        }
        ex.flags.insert(fctx.flags());
        let rate_limit = fctx.response_rate_limit();
        st.rq_total.inc();

        let outcome = self.proxy(&mut ex, cluster, upgrade, rate_limit).await;
        inner.filter.on_complete(&fctx);
        outcome
    }

    /// Connect (or reuse), forward the request, stream the response back.
    async fn proxy(
        &mut self,
        ex: &mut Exchange<'_>,
        cluster: &Cluster,
        upgrade: bool,
        rate_limit: Option<u64>,
    ) -> Outcome {
        let inner = self.inner;
        let cs = &cluster.stats;
        let addr = match cluster.endpoint {
            Endpoint::Static(a) => Some(a),
            Endpoint::OriginalDestination => self.info.original_dst,
        };
        cs.fields.upstream_rq_total.inc();
        cs.fields.upstream_rq_pending_total.inc();
        let Some(addr) = addr else {
            ex.flags.insert(ResponseFlags::UPSTREAM_CONNECTION_FAILURE);
            let body = [RESET_BEFORE_HEADERS, "remote connection failure"].concat();
            return self
                .local_reply(
                    ex,
                    503,
                    body.as_bytes(),
                    &[],
                    false,
                    "upstream_reset_before_response_started{remote_connection_failure}",
                )
                .await;
        };
        ex.upstream = Some(addr);
        let up = match inner.pool.checkout(addr) {
            Some(c) => c,
            None => {
                cs.fields.upstream_rq_pending_active.inc();
                let r = tokio::time::timeout(cluster.connect_timeout, inner.connector.connect(addr)).await;
                cs.fields.upstream_rq_pending_active.dec();
                match r {
                    Ok(Ok(io)) => {
                        cs.fields.upstream_cx_total.inc();
                        cs.fields.upstream_cx_http1_total.inc();
                        cs.fields.upstream_cx_active.inc();
                        UpstreamConn {
                            io,
                            stats: cluster.stats.clone(),
                            closed_by_remote: false,
                        }
                    }
                    Ok(Err(_)) | Err(_) => {
                        let timeout = r.is_err();
                        cs.fields.upstream_cx_connect_fail.inc();
                        cs.fields.upstream_rq_pending_failure_eject.inc();
                        let reason = if timeout {
                            cs.fields.upstream_cx_connect_timeout.inc();
                            "connection timeout"
                        } else {
                            "remote connection failure"
                        };
                        ex.flags.insert(ResponseFlags::UPSTREAM_CONNECTION_FAILURE);
                        let body = [RESET_BEFORE_HEADERS, reason].concat();
                        let details = if timeout {
                            "upstream_reset_before_response_started{connection_timeout}"
                        } else {
                            "upstream_reset_before_response_started{remote_connection_failure}"
                        };
                        cs.upstream_rq.record(503);
                        return self.local_reply(ex, 503, body.as_bytes(), &[], false, details).await;
                    }
                }
            }
        };
        cs.fields.upstream_rq_active.inc();
        let mut slot = Some(up);
        let outcome = self
            .exchange_with(ex, &mut slot, cluster, addr, upgrade, rate_limit)
            .await;
        cs.fields.upstream_rq_active.dec();
        outcome
    }

    async fn exchange_with(
        &mut self,
        ex: &mut Exchange<'_>,
        slot: &mut Option<UpstreamConn<C::Stream>>,
        cluster: &Cluster,
        addr: SocketAddr,
        upgrade: bool,
        rate_limit: Option<u64>,
    ) -> Outcome {
        let inner = self.inner;
        let cfg = &inner.config;
        let cs = &cluster.stats;
        let Some(up) = slot.as_mut() else {
            return Outcome::Close;
        };
        // The request head.
        let mut rid = [0u8; 36];
        let extras = if self.head.has_request_id() {
            UpstreamExtras {
                request_id: b"",
                forward_upgrade: upgrade,
            }
        } else {
            inner.ids.next(&mut rid);
            ex.request_id = rid;
            ex.request_id_len = 36;
            UpstreamExtras {
                request_id: &rid,
                forward_upgrade: upgrade,
            }
        };
        self.out.clear();
        encode_request_head(&self.head, &extras, &mut self.out);
        let sent_at = Instant::now();
        self.ubuf.clear();
        match write_up(up, &self.out, cfg.stream_idle_timeout).await {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::TimedOut => return self.stream_timeout(ex).await,
            Err(_) => {
                return self
                    .upstream_reset(ex, up, cluster, "connection termination", false)
                    .await;
            }
        }

        // The request body, streamed; an early response from the upstream interrupts it.
        let mut body = RequestBody::new(&self.head, &cfg.limits);
        let mut request_done = body.is_done() || upgrade;
        let mut early = false;
        while !request_done {
            self.out.clear();
            match body.forward(&mut self.rbuf, &mut self.out) {
                Ok(Forwarded { bytes, done }) => {
                    ex.rx += bytes;
                    if !self.out.is_empty() {
                        match write_up(up, &self.out, cfg.stream_idle_timeout).await {
                            Ok(()) => {}
                            Err(e) if e.kind() == io::ErrorKind::TimedOut => return self.stream_timeout(ex).await,
                            Err(_) => {
                                return self
                                    .upstream_reset(ex, up, cluster, "connection termination", false)
                                    .await;
                            }
                        }
                    }
                    if done {
                        request_done = true;
                        ex.rx_pending = false;
                        break;
                    }
                }
                Err(reply) => {
                    // Malformed body: Envoy answers the client and resets the upstream request.
                    cs.fields.upstream_rq_tx_reset.inc();
                    inner.stats.hcm.downstream_cx_protocol_error.inc();
                    ex.flags.insert(ResponseFlags::DOWNSTREAM_PROTOCOL_ERROR);
                    return self
                        .local_reply(ex, reply.status, reply.body.as_bytes(), &[], true, reply.details)
                        .await;
                }
            }
            // Need more: client bytes, or an early response / close from the upstream.
            Self::reserve(&mut self.rbuf, cfg.buffer_size);
            Self::reserve(&mut self.ubuf, cfg.buffer_size);
            let idle = cfg.stream_idle_timeout;
            let step = timed(idle, async {
                tokio::select! {
                    r = self.io.read_buf(&mut self.rbuf) => Step::Client(r),
                    r = up.io.read_buf(&mut self.ubuf) => Step::Upstream(r),
                }
            })
            .await;
            match step {
                None => return self.stream_timeout(ex).await,
                Some(Step::Client(Ok(0) | Err(_))) => {
                    // The client went away mid-body.
                    inner.stats.hcm.downstream_rq_rx_reset.inc();
                    inner.stats.hcm.downstream_cx_destroy_active_rq.inc();
                    cs.fields.upstream_rq_tx_reset.inc();
                    ex.flags.insert(ResponseFlags::DOWNSTREAM_CONNECTION_TERMINATION);
                    self.finish(ex);
                    return Outcome::ClientGone;
                }
                Some(Step::Client(Ok(n))) => inner.stats.hcm.downstream_cx_rx_bytes_total.add(n as u64),
                Some(Step::Upstream(Ok(n))) if n > 0 => {
                    cs.fields.upstream_cx_rx_bytes_total.add(n as u64);
                    early = true;
                    break;
                }
                Some(Step::Upstream(_)) => {
                    up.closed_by_remote = true;
                    return self
                        .upstream_reset(ex, up, cluster, "connection termination", false)
                        .await;
                }
            }
        }

        // The response head (interim 1xx responses are absorbed, as Envoy does by default).
        let to_head = self.head.is_head();
        let head_len = loop {
            if !self.ubuf.is_empty() {
                match self.resp.parse(&self.ubuf, &cfg.limits, to_head) {
                    Ok(Some(n)) if self.resp.is_informational() => {
                        self.ubuf.advance(n);
                        continue;
                    }
                    Ok(Some(n)) => break n,
                    Ok(None) => {}
                    Err(_) => {
                        cs.fields.upstream_cx_protocol_error.inc();
                        ex.flags.insert(ResponseFlags::UPSTREAM_PROTOCOL_ERROR);
                        return self.upstream_reset(ex, up, cluster, "protocol error", true).await;
                    }
                }
            }
            Self::reserve(&mut self.ubuf, cfg.buffer_size);
            match timed(cfg.stream_idle_timeout, up.io.read_buf(&mut self.ubuf)).await {
                None => return self.stream_timeout(ex).await,
                Some(Ok(n)) if n > 0 => cs.fields.upstream_cx_rx_bytes_total.add(n as u64),
                Some(_) => {
                    up.closed_by_remote = true;
                    return self
                        .upstream_reset(ex, up, cluster, "connection termination", false)
                        .await;
                }
            }
        };
        self.ubuf.advance(head_len);
        let status = self.resp.status();
        let service_ms = sent_at.elapsed().as_millis() as u64;
        ex.status = status;
        ex.details = "via_upstream";
        cs.upstream_rq.record(status);
        cs.external_upstream_rq.record(status);

        // Upgrade accepted by the upstream: hand both connections to an L4 copy.
        if upgrade && status == 101 {
            return self.upgrade(ex, up).await;
        }

        let chunked_out = self.resp.forward_chunked();
        let close = !self.head.keep_alive() || !request_done || early || upgrade;
        if early && !request_done {
            inner.stats.hcm.downstream_rq_response_before_rq_complete.inc();
        }
        self.date.update(SystemTime::now());
        self.out.clear();
        let rextras = ResponseExtras {
            upstream_service_time_ms: Some(service_ms),
            date: self.date.as_bytes(),
            close,
            chunked: chunked_out,
        };
        encode_response_head(&self.resp, &rextras, &mut self.out);

        // The response body.
        let mut pacer = rate_limit.map(Pacer::new);
        let mut rbody = ResponseBody::new(self.resp.framing(), &cfg.limits);
        let mut client_ok = true;
        let upstream_clean = true;
        loop {
            match rbody.forward(&mut self.ubuf, &mut self.out, chunked_out) {
                Ok(Forwarded { bytes, done }) => {
                    ex.tx += bytes;
                    if done
                        && upstream_clean
                        && request_done
                        && !early
                        && self.resp.keep_alive()
                        && self.ubuf.is_empty()
                    {
                        // A clean exchange on a persistent connection: back to the pool before the
                        // client sees the end of the response (so its next request finds it).
                        if let Some(conn) = slot.take() {
                            inner.pool.checkin(addr, conn);
                        }
                        if let Some(p) = pacer.as_mut() {
                            p.wait(bytes).await;
                        }
                        if self.flush_out_to_client().await.is_err() {
                            client_ok = false;
                        }
                        break;
                    }
                    if !self.out.is_empty() {
                        if let Some(p) = pacer.as_mut() {
                            p.wait(bytes).await;
                        }
                        if self.flush_out_to_client().await.is_err() {
                            client_ok = false;
                            break;
                        }
                    }
                    if done {
                        break;
                    }
                }
                Err(()) => {
                    // Invalid body: what was decoded (and the head) goes out, then Envoy closes the
                    // client connection mid-body.
                    let _ = self.flush_out_to_client().await;
                    cs.fields.upstream_cx_protocol_error.inc();
                    ex.flags.insert(ResponseFlags::UPSTREAM_PROTOCOL_ERROR);
                    break;
                }
            }
            Self::reserve(&mut self.ubuf, cfg.buffer_size);
            match timed(cfg.stream_idle_timeout, up.io.read_buf(&mut self.ubuf)).await {
                None => {
                    inner.stats.hcm.downstream_rq_idle_timeout.inc();
                    ex.flags.insert(ResponseFlags::STREAM_IDLE_TIMEOUT);
                    break;
                }
                Some(Ok(n)) if n > 0 => cs.fields.upstream_cx_rx_bytes_total.add(n as u64),
                Some(_) => {
                    up.closed_by_remote = true;
                    if rbody.eof() {
                        // Close-delimited body complete.
                        self.out.clear();
                        if chunked_out {
                            self.out.extend_from_slice(LAST_CHUNK);
                        }
                        if self.flush_out_to_client().await.is_err() {
                            client_ok = false;
                        }
                        rbody.done = true;
                    } else {
                        // Truncated body: the upstream reset mid-response.
                        cs.fields.upstream_rq_rx_reset.inc();
                        ex.flags.insert(ResponseFlags::UPSTREAM_CONNECTION_TERMINATION);
                    }
                    break;
                }
            }
        }
        let complete = rbody.done && client_ok;
        cs.fields.upstream_rq_completed.inc();
        cs.external_upstream_rq_completed.inc();
        self.finish(ex);
        if !client_ok {
            Outcome::ClientGone
        } else if !complete || close {
            Outcome::Close
        } else {
            Outcome::KeepAlive
        }
    }

    /// The upstream reset before the response started: Envoy's 503/502 local reply.
    async fn upstream_reset(
        &mut self,
        ex: &mut Exchange<'_>,
        up: &mut UpstreamConn<C::Stream>,
        cluster: &Cluster,
        reason: &'static str,
        protocol_error: bool,
    ) -> Outcome {
        let _ = up;
        let cs = &cluster.stats;
        let (status, details) = if protocol_error {
            (502, "upstream_reset_before_response_started{protocol_error}")
        } else {
            cs.fields.upstream_rq_rx_reset.inc();
            ex.flags.insert(ResponseFlags::UPSTREAM_CONNECTION_TERMINATION);
            (503, "upstream_reset_before_response_started{connection_termination}")
        };
        cs.upstream_rq.record(status);
        let body = [RESET_BEFORE_HEADERS, reason].concat();
        self.local_reply(ex, status, body.as_bytes(), &[], false, details).await
    }

    async fn stream_timeout(&mut self, ex: &mut Exchange<'_>) -> Outcome {
        self.inner.stats.hcm.downstream_rq_idle_timeout.inc();
        ex.flags.insert(ResponseFlags::STREAM_IDLE_TIMEOUT);
        self.local_reply(ex, 408, b"stream timeout", &[], true, "stream_idle_timeout")
            .await
    }

    /// 101 from the upstream: forward the head, then copy bytes both ways until both sides close.
    async fn upgrade(&mut self, ex: &mut Exchange<'_>, up: &mut UpstreamConn<C::Stream>) -> Outcome {
        let st = &self.inner.stats.hcm;
        st.downstream_cx_upgrades_total.inc();
        st.downstream_cx_upgrades_active.inc();
        self.date.update(SystemTime::now());
        self.out.clear();
        let rextras = ResponseExtras {
            upstream_service_time_ms: None,
            date: self.date.as_bytes(),
            close: false,
            chunked: false,
        };
        encode_response_head(&self.resp, &rextras, &mut self.out);
        self.out.extend_from_slice(&self.ubuf);
        self.ubuf.clear();
        let mut ok = self.flush_out_to_client().await.is_ok();
        if ok && !self.rbuf.is_empty() {
            let pending = self.rbuf.split().freeze();
            ok = write_up(up, &pending, self.inner.config.stream_idle_timeout)
                .await
                .is_ok();
        }
        if ok && let Ok((to_up, to_client)) = tokio::io::copy_bidirectional(&mut self.io, &mut up.io).await {
            ex.rx += to_up;
            ex.tx += to_client;
            st.downstream_cx_rx_bytes_total.add(to_up);
            st.downstream_cx_tx_bytes_total.add(to_client);
            up.stats.fields.upstream_cx_tx_bytes_total.add(to_up);
            up.stats.fields.upstream_cx_rx_bytes_total.add(to_client);
        }
        st.downstream_cx_upgrades_active.dec();
        self.finish(ex);
        Outcome::Close
    }
}

enum Step {
    Client(io::Result<usize>),
    Upstream(io::Result<usize>),
}

/// Write to the upstream; an upstream that reads nothing for `idle` is an error (`TimedOut`).
async fn write_up<S: AsyncWrite + Unpin>(
    up: &mut UpstreamConn<S>,
    bytes: &[u8],
    idle: Option<Duration>,
) -> io::Result<()> {
    timed(idle, up.io.write_all(bytes))
        .await
        .unwrap_or_else(|| Err(io::ErrorKind::TimedOut.into()))?;
    up.stats.fields.upstream_cx_tx_bytes_total.add(bytes.len() as u64);
    Ok(())
}

/// Progress of one forwarding step.
struct Forwarded {
    /// Body bytes (payload, not framing) forwarded.
    bytes: u64,
    /// The body is complete.
    done: bool,
}

/// The request body, decoded from the client's framing and re-encoded for the upstream.
enum RequestBody {
    Length { remaining: u64, chunked_out: bool },
    Chunked(ChunkedDecoder),
    Done,
}

impl RequestBody {
    fn new(head: &RequestHead, limits: &crate::http1::Limits) -> RequestBody {
        match head.framing() {
            BodyFraming::None | BodyFraming::ContentLength(0) => {
                if head.forward_chunked() {
                    RequestBody::Length {
                        remaining: 0,
                        chunked_out: true,
                    }
                } else {
                    RequestBody::Done
                }
            }
            BodyFraming::ContentLength(n) => RequestBody::Length {
                remaining: n,
                chunked_out: head.forward_chunked(),
            },
            BodyFraming::Chunked => RequestBody::Chunked(ChunkedDecoder::new(limits)),
        }
    }

    fn is_done(&self) -> bool {
        matches!(self, RequestBody::Done)
    }

    /// Move buffered body bytes from `input` into `out` in the upstream's framing.
    fn forward(&mut self, input: &mut BytesMut, out: &mut Vec<u8>) -> Result<Forwarded, ErrorReply> {
        match self {
            RequestBody::Done => Ok(Forwarded { bytes: 0, done: true }),
            RequestBody::Length { remaining, chunked_out } => {
                let n = (*remaining).min(input.len() as u64) as usize;
                let data = input.split_to(n);
                *remaining -= n as u64;
                if *chunked_out {
                    encode_chunk(&data, out);
                    if *remaining == 0 {
                        out.extend_from_slice(LAST_CHUNK);
                    }
                } else {
                    out.extend_from_slice(&data);
                }
                let done = *remaining == 0;
                if done {
                    *self = RequestBody::Done;
                }
                Ok(Forwarded { bytes: n as u64, done })
            }
            RequestBody::Chunked(dec) => {
                let mut bytes = 0;
                loop {
                    match dec.decode(input).map_err(|e| e.reply())? {
                        DecodeStep::Data(d) => {
                            bytes += d.len() as u64;
                            encode_chunk(&d, out);
                        }
                        DecodeStep::NeedMore => return Ok(Forwarded { bytes, done: false }),
                        DecodeStep::Done => {
                            out.extend_from_slice(LAST_CHUNK);
                            *self = RequestBody::Done;
                            return Ok(Forwarded { bytes, done: true });
                        }
                    }
                }
            }
        }
    }
}

/// The response body, decoded from the upstream's framing and re-encoded for the client.
struct ResponseBody {
    kind: ResponseKind,
    done: bool,
}

enum ResponseKind {
    Length(u64),
    Chunked(ChunkedDecoder),
    UntilClose,
    None,
}

impl ResponseBody {
    fn new(framing: ResponseFraming, limits: &crate::http1::Limits) -> ResponseBody {
        let kind = match framing {
            ResponseFraming::ContentLength(n) if n > 0 => ResponseKind::Length(n),
            ResponseFraming::Chunked => ResponseKind::Chunked(ChunkedDecoder::new(limits)),
            ResponseFraming::CloseDelimited => ResponseKind::UntilClose,
            _ => ResponseKind::None,
        };
        ResponseBody { kind, done: false }
    }

    /// Whether an upstream EOF now ends the body cleanly.
    fn eof(&self) -> bool {
        matches!(self.kind, ResponseKind::UntilClose)
    }

    /// Append buffered body bytes from `input` to `out` (which may already hold the head).
    fn forward(&mut self, input: &mut BytesMut, out: &mut Vec<u8>, chunked_out: bool) -> Result<Forwarded, ()> {
        let mut bytes = 0u64;
        match &mut self.kind {
            ResponseKind::None => self.done = true,
            ResponseKind::Length(remaining) => {
                let n = (*remaining).min(input.len() as u64) as usize;
                out.extend_from_slice(&input[..n]);
                input.advance(n);
                *remaining -= n as u64;
                bytes = n as u64;
                self.done = *remaining == 0;
            }
            ResponseKind::UntilClose => {
                let data: Bytes = input.split().freeze();
                bytes = data.len() as u64;
                if chunked_out {
                    encode_chunk(&data, out);
                } else {
                    out.extend_from_slice(&data);
                }
            }
            ResponseKind::Chunked(dec) => loop {
                match dec.decode(input).map_err(|_| ())? {
                    DecodeStep::Data(d) => {
                        bytes += d.len() as u64;
                        encode_chunk(&d, out);
                    }
                    DecodeStep::Done => {
                        out.extend_from_slice(LAST_CHUNK);
                        self.done = true;
                        break;
                    }
                    _ => break,
                }
            },
        }
        Ok(Forwarded { bytes, done: self.done })
    }
}

/// Paces response bytes to a rate (Envoy's `response_rate_limit`): a token bucket refilled every
/// 1/16 s, starting full, so a small body passes at once as it does through Envoy.
struct Pacer {
    bytes_per_sec: u64,
    tokens: f64,
    last: Instant,
}

impl Pacer {
    fn new(bytes_per_sec: u64) -> Pacer {
        Pacer {
            bytes_per_sec,
            tokens: bytes_per_sec as f64 / 16.0,
            last: Instant::now(),
        }
    }

    async fn wait(&mut self, bytes: u64) {
        let rate = self.bytes_per_sec as f64;
        let cap = (rate / 16.0).max(1.0);
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.last).as_secs_f64() * rate).min(cap);
        self.last = now;
        self.tokens -= bytes as f64;
        if self.tokens < 0.0 {
            let wait = Duration::from_secs_f64(-self.tokens / rate);
            tokio::time::sleep(wait).await;
            self.tokens = 0.0;
            self.last = Instant::now();
        }
    }
}
