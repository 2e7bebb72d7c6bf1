//! Chunked bodies: the decoder never panics whatever the input and however it is split, the split
//! never changes the outcome, and re-encoding what it decoded decodes to the same body.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use meshcap_proxy::http1::{ChunkedDecoder, DecodeStep, LAST_CHUNK, Limits, encode_chunk};

fn decode(input: &[u8], split: usize) -> Result<(Vec<u8>, usize), ()> {
    let mut dec = ChunkedDecoder::new(&Limits::default());
    let mut buf = BytesMut::new();
    let mut body = Vec::new();
    let mut fed = 0;
    loop {
        match dec.decode(&mut buf).map_err(|_| ())? {
            DecodeStep::Data(d) => body.extend_from_slice(&d),
            DecodeStep::Done => return Ok((body, fed - buf.len())),
            _ => {
                if fed == input.len() {
                    return Err(());
                }
                let end = (fed + split).min(input.len());
                buf.extend_from_slice(&input[fed..end]);
                fed = end;
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&split, input)) = data.split_first() else {
        return;
    };
    let whole = decode(input, input.len().max(1));
    let pieces = decode(input, usize::from(split % 17) + 1);
    assert_eq!(whole, pieces);
    if let Ok((body, _)) = whole {
        let mut wire = Vec::new();
        for c in body.chunks(7) {
            encode_chunk(c, &mut wire);
        }
        wire.extend_from_slice(LAST_CHUNK);
        assert_eq!(decode(&wire, 5), Ok((body, wire.len())));
    }
});
