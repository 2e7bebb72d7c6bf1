//! Access log format strings and response-flag lists from configuration never panic the parser, and a
//! parsed format always renders.
#![no_main]

use std::time::{Duration, UNIX_EPOCH};

use libfuzzer_sys::fuzz_target;
use meshcap_proxy::access_log::{AccessLogEntry, AccessLogFormat, ResponseFlags};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(format) = AccessLogFormat::parse(&text) {
        let mut entry = AccessLogEntry::new(UNIX_EPOCH + Duration::from_millis(u64::from(data.len() as u32) * 997));
        entry.method = Some("GET".into());
        entry.response_code = 503;
        entry.response_flags = ResponseFlags::FAULT_INJECTED | ResponseFlags::DELAY_INJECTED;
        entry.duration = Some(Duration::from_millis(5));
        // Rendering is deterministic (`%%` may legitimately produce `%START_TIME%` text, so no content
        // check beyond that).
        assert_eq!(format.format(&entry), format.format(&entry));
    }
    if let Ok(flags) = text.parse::<ResponseFlags>() {
        // Printing and parsing again gives the same flags.
        assert_eq!(flags.to_string().parse::<ResponseFlags>().ok(), Some(flags));
    }
});
