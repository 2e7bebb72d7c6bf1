//! Request heads: the parser never panics, and whatever it accepts re-encodes to a head it accepts
//! again with the same meaning (the canonical form is a fixed point).
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshcap_proxy::http1::{Limits, RequestHead, ResponseHead, UpstreamExtras, encode_request_head};

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    let _ = ResponseHead::new().parse(data, &limits, false);
    let mut head = RequestHead::new();
    if let Ok(Some(n)) = head.parse(data, &limits) {
        assert!(n <= data.len());
        let extras = UpstreamExtras {
            request_id: b"fuzz",
            forward_upgrade: head.upgrade().is_some(),
        };
        let mut once = Vec::new();
        encode_request_head(&head, &extras, &mut once);
        let mut again = RequestHead::new();
        assert_eq!(
            again.parse(&once, &limits),
            Ok(Some(once.len())),
            "{:?}",
            String::from_utf8_lossy(&once)
        );
        assert_eq!(again.method(), head.method());
        assert_eq!(again.path(), head.path());
        assert_eq!(again.host(), head.host());
        assert_eq!(again.forward_chunked(), head.forward_chunked());
        let mut twice = Vec::new();
        encode_request_head(&again, &extras, &mut twice);
        assert_eq!(once, twice);
    }
});
