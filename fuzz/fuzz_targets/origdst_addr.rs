//! meshcap-origdst: the address role types parse, print and round-trip; canonicalisation is idempotent; the
//! loop guard only ever matches a listener on the destination's port.

#![no_main]

use libfuzzer_sys::fuzz_target;
use meshcap_origdst::{ClientAddr, ListenAddr, LoopGuard, OriginalDst, canonical};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (dst_text, listen_text) = text.split_once('\n').unwrap_or((text, "0.0.0.0:15001"));
    let (Ok(dst), Ok(listen)) = (dst_text.parse::<OriginalDst>(), listen_text.parse::<ListenAddr>()) else {
        return;
    };
    assert_eq!(dst.to_string().parse::<OriginalDst>().ok(), Some(dst));
    assert_eq!(listen.to_string().parse::<ListenAddr>().ok(), Some(listen));
    let client: ClientAddr = dst_text.parse().expect("same syntax as OriginalDst");
    assert_eq!(client.as_socket_addr(), dst.as_socket_addr());
    assert_eq!(canonical(dst.as_socket_addr()), dst.as_socket_addr());
    assert_eq!(
        canonical(canonical(listen.as_socket_addr())),
        canonical(listen.as_socket_addr())
    );
    for any in [false, true] {
        let guard = LoopGuard::new([listen]).with_local_addrs([dst.ip()]).any_address(any);
        if let Err(l) = guard.check(dst) {
            assert_eq!(l.listener().port(), dst.port());
            assert_eq!(l.dst(), dst);
        }
    }
});
