//! Property tests of the HTTP/1.1 codec: arbitrary input never panics; valid input round-trips.

use bytes::BytesMut;
use meshcap_proxy::http1::{
    ChunkedDecoder, DecodeStep, LAST_CHUNK, Limits, RequestHead, ResponseHead, UpstreamExtras, encode_chunk,
    encode_request_head,
};
use proptest::prelude::*;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        ..ProptestConfig::default()
    }
}

/// Head-like bytes: mostly the alphabet of heads, with the awkward bytes mixed in.
fn head_bytes() -> impl Strategy<Value = Vec<u8>> {
    let alphabet = prop::sample::select(
        b"GET POST / HTTP/1.1 host: a\r\n\r\ncontent-length transfer-encoding chunked 0123456789 ,;:\t\x00\x7f\xff\r\n"
            .to_vec(),
    );
    prop::collection::vec(alphabet, 0..300)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_request_heads_never_panic_and_reencode_stably(bytes in head_bytes()) {
        let limits = Limits::default();
        let mut head = RequestHead::new();
        if let Ok(Some(_)) = head.parse(&bytes, &limits) {
            // Whatever we accept re-encodes to a head we accept again, with the same meaning.
            let mut once = Vec::new();
            encode_request_head(&head, &UpstreamExtras { request_id: b"id", forward_upgrade: false }, &mut once);
            let mut again = RequestHead::new();
            let n = again.parse(&once, &limits);
            prop_assert_eq!(n, Ok(Some(once.len())), "re-encoded head refused: {:?}", String::from_utf8_lossy(&once));
            prop_assert_eq!(again.method(), head.method());
            prop_assert_eq!(again.path(), head.path());
            prop_assert_eq!(again.host(), head.host());
            prop_assert_eq!(again.forward_chunked(), head.forward_chunked());
            let mut twice = Vec::new();
            encode_request_head(&again, &UpstreamExtras { request_id: b"id", forward_upgrade: false }, &mut twice);
            prop_assert_eq!(once, twice);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let limits = Limits::default();
        let _ = RequestHead::new().parse(&bytes, &limits);
        let _ = ResponseHead::new().parse(&bytes, &limits, false);
        let mut dec = ChunkedDecoder::new(&limits);
        let mut buf = BytesMut::from(&bytes[..]);
        for _ in 0..bytes.len() + 2 {
            match dec.decode(&mut buf) {
                Ok(DecodeStep::Data(_)) => {}
                _ => break,
            }
        }
    }

    #[test]
    fn chunked_encode_then_decode_is_identity(
        chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..200), 0..20),
        split in 1usize..64,
    ) {
        let mut wire = Vec::new();
        for c in &chunks {
            encode_chunk(c, &mut wire);
        }
        wire.extend_from_slice(LAST_CHUNK);
        wire.extend_from_slice(b"NEXT");
        let mut dec = ChunkedDecoder::new(&Limits::default());
        let mut buf = BytesMut::new();
        let mut body = Vec::new();
        let mut fed = 0;
        loop {
            match dec.decode(&mut buf).expect("valid chunked body") {
                DecodeStep::Data(d) => body.extend_from_slice(&d),
                DecodeStep::Done => break,
                DecodeStep::NeedMore => {
                    prop_assert!(fed < wire.len(), "decoder wants more than the body");
                    let end = (fed + split).min(wire.len());
                    buf.extend_from_slice(&wire[fed..end]);
                    fed = end;
                }
                _ => unreachable!(),
            }
        }
        let mut rest = buf.to_vec();
        rest.extend_from_slice(&wire[fed..]);
        prop_assert_eq!(body, chunks.concat());
        prop_assert_eq!(rest, b"NEXT".to_vec());
    }

    #[test]
    fn valid_requests_round_trip(
        method in prop::sample::select(vec!["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]),
        path in "/[a-zA-Z0-9/._~%-]{0,40}",
        fields in prop::collection::vec(("x-[a-z0-9-]{1,12}", "[ -~]{0,30}"), 0..10),
        body_len in prop::option::of(0u64..10_000),
    ) {
        let mut raw = format!("{method} {path} HTTP/1.1\r\nHost: svc.local:8080\r\n");
        for (n, v) in &fields {
            raw.push_str(&format!("{n}: {v}\r\n"));
        }
        if let Some(n) = body_len {
            raw.push_str(&format!("content-length: {n}\r\n"));
        }
        raw.push_str("\r\n");
        let mut head = RequestHead::new();
        prop_assert_eq!(head.parse(raw.as_bytes(), &Limits::default()), Ok(Some(raw.len())));
        prop_assert_eq!(head.method(), method);
        prop_assert_eq!(head.path(), path.as_bytes());
        prop_assert_eq!(head.host(), Some(&b"svc.local:8080"[..]));
        let got: Vec<(Vec<u8>, Vec<u8>)> = head
            .headers()
            .filter(|(n, _)| n.starts_with(b"x-"))
            .map(|(n, v)| (n.to_vec(), v.to_vec()))
            .collect();
        let want: Vec<(Vec<u8>, Vec<u8>)> = fields
            .iter()
            .map(|(n, v)| (n.as_bytes().to_vec(), v.trim_matches([' ', '\t']).as_bytes().to_vec()))
            .collect();
        prop_assert_eq!(got, want);
    }
}

/// A chunked body in one of the spellings senders use, optionally with one byte flipped.
fn chunked_spelling() -> impl Strategy<Value = Vec<u8>> {
    let chunk = (
        prop::collection::vec(any::<u8>(), 1..40),
        0usize..3,     // leading zeros
        any::<bool>(), // upper-case hex
        prop::sample::select(vec!["", " ", "\t", ";a=b", " ;x", ";q=\"v w\""]),
        prop::sample::select(vec!["\r\n", "\n"]), // after the data
    );
    (
        prop::collection::vec(chunk, 0..6),
        prop::sample::select(vec!["", "x-t: 1\r\n", "a: b\r\nc: d\r\n"]),
        prop::option::of((any::<prop::sample::Index>(), any::<u8>())),
    )
        .prop_map(|(chunks, trailers, flip)| {
            let mut w = Vec::new();
            for (data, zeros, upper, ext, end) in chunks {
                let size = if upper {
                    format!("{:X}", data.len())
                } else {
                    format!("{:x}", data.len())
                };
                w.extend_from_slice("0".repeat(zeros).as_bytes());
                w.extend_from_slice(size.as_bytes());
                w.extend_from_slice(ext.as_bytes());
                w.extend_from_slice(b"\r\n");
                w.extend_from_slice(&data);
                w.extend_from_slice(end.as_bytes());
            }
            w.extend_from_slice(b"0\r\n");
            w.extend_from_slice(trailers.as_bytes());
            w.extend_from_slice(b"\r\n");
            if let Some((i, b)) = flip {
                let i = i.index(w.len());
                w[i] = b;
            }
            w
        })
}

fn ours(body: &[u8]) -> Option<Vec<u8>> {
    let mut dec = ChunkedDecoder::new(&Limits::default());
    let mut buf = BytesMut::from(body);
    let mut out = Vec::new();
    loop {
        match dec.decode(&mut buf).ok()? {
            DecodeStep::Data(d) => out.extend_from_slice(&d),
            DecodeStep::Done => return Some(out),
            _ => return None,
        }
    }
}

/// What a hyper server makes of the same chunked body (None: refused or incomplete).
fn hypers(rt: &tokio::runtime::Runtime, body: &[u8]) -> Option<Vec<u8>> {
    use http_body_util::BodyExt;
    use tokio::io::AsyncWriteExt;
    rt.block_on(async {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let (tx, rx) = tokio::sync::oneshot::channel();
        let tx = std::sync::Mutex::new(Some(tx));
        let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
            let tx = tx.lock().unwrap().take();
            async move {
                let got = req.into_body().collect().await.ok().map(|b| b.to_bytes().to_vec());
                if let Some(tx) = tx {
                    let _ = tx.send(got);
                }
                Ok::<_, hyper::Error>(hyper::Response::new(http_body_util::Empty::<bytes::Bytes>::new()))
            }
        });
        let conn = tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .half_close(true)
                .serve_connection(hyper_util::rt::TokioIo::new(server), svc)
                .await;
        });
        let _ = client
            .write_all(b"POST / HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\n")
            .await;
        let _ = client.write_all(body).await;
        let _ = client.shutdown().await;
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), rx)
            .await
            .ok()
            .and_then(Result::ok)
            .flatten();
        conn.abort();
        got
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Differential against hyper's chunked decoder: the two may disagree on *whether* to accept odd
    /// spellings (Envoy-compatible leniency differs from hyper's), but never on the body of bytes both
    /// accept — the property that keeps a proxy in front of a hyper server smuggling-free.
    #[test]
    fn never_a_different_body_than_hyper(wire in chunked_spelling()) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        if let (Some(a), Some(b)) = (ours(&wire), hypers(&rt, &wire)) {
            prop_assert_eq!(a, b, "{:?}", String::from_utf8_lossy(&wire));
        }
    }

    /// What we emit (canonical chunking) hyper accepts, with the same body.
    #[test]
    fn hyper_accepts_our_encoding(chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..100), 0..8)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let mut wire = Vec::new();
        for c in &chunks {
            encode_chunk(c, &mut wire);
        }
        wire.extend_from_slice(LAST_CHUNK);
        prop_assert_eq!(hypers(&rt, &wire), Some(chunks.concat()));
    }
}
