//! The load generator's response framing: never panics whatever the server sends, never consumes more
//! than it is given, and frames the same response however the bytes are split across reads.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshcap_loadgen::{Response, ResponseParser};

/// Feed `input` in pieces of `step` bytes, keeping unconsumed bytes as a connection would. Returns the
/// framed response and how many bytes it spanned, or `None` for an error or an incomplete response.
fn frame(input: &[u8], step: usize, head: bool) -> Option<(Response, usize)> {
    let mut parser = if head {
        ResponseParser::for_head_request()
    } else {
        ResponseParser::new()
    };
    let mut pending = Vec::new();
    let (mut fed, mut consumed) = (0, 0);
    loop {
        let (used, done) = parser.parse(&pending).ok()?;
        assert!(used <= pending.len(), "consumed {used} of {} bytes", pending.len());
        pending.drain(..used);
        consumed += used;
        if let Some(response) = done {
            // Asking again consumes nothing and gives the same answer.
            assert_eq!(parser.parse(&pending).ok(), Some((0, Some(response))));
            return Some((response, consumed));
        }
        if fed == input.len() {
            return parser
                .finish()
                .ok()
                .map(|response| (response, consumed + pending.len()));
        }
        let end = (fed + step).min(input.len());
        pending.extend_from_slice(&input[fed..end]);
        fed = end;
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, input)) = data.split_first() else {
        return;
    };
    let head = control & 0x80 != 0;
    let whole = frame(input, input.len().max(1), head);
    let pieces = frame(input, usize::from(control % 13) + 1, head);
    assert_eq!(whole, pieces, "the split changed the framing");
    if let Some((response, spanned)) = whole {
        assert!(spanned <= input.len());
        assert!(response.body_bytes() <= spanned as u64);
    }
});
