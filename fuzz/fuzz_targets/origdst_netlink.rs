//! meshcap-origdst: the RTM_GETADDR dump parser behind `local_addrs()` must never panic on any datagram.
//!
//! The parser is reachable only under `--cfg fuzzing`, which `cargo fuzz` sets; a plain `cargo build` of this
//! workspace just checks that the target compiles.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    #[cfg(fuzzing)]
    meshcap_origdst::fuzz_logic::netlink_dump(data);
    #[cfg(not(fuzzing))]
    let _ = data;
});
