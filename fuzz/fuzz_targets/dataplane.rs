//! Dataplane parsing (YAML and JSON) and everything downstream of a Dataplane that parsed: its own JSON
//! and YAML read back equal, resource generation, both JSON renderings, the lookup. Policy parsing too.
//! Nothing may panic; round trips must hold.

#![no_main]

use libfuzzer_sys::fuzz_target;
use meshcap_envoy::{ConfigDumpOptions, Dataplane, Policy, Resources, Timestamp, TrafficDirection};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for parsed in [Dataplane::from_yaml(text), Dataplane::from_json(text)] {
        let Ok(dataplane) = parsed else {
            continue;
        };
        let json = dataplane.to_json();
        assert_eq!(Dataplane::from_json(&json).expect("our JSON reads back"), dataplane);
        let yaml = dataplane.to_yaml().expect("yaml");
        assert_eq!(Dataplane::from_yaml(&yaml).expect("our YAML reads back"), dataplane);

        let policies: Vec<Policy> = text.parse().into_iter().collect();
        let Ok(resources) = Resources::builder(&dataplane).policies(&policies).build() else {
            continue;
        };
        let _ = resources.bootstrap_json();
        let at = Timestamp::from_unix(0, 0).expect("epoch");
        let dump = resources.config_dump_json(&ConfigDumpOptions::new(at));
        assert!(
            dump.ends_with("SecretsConfigDump\"\n  }\n ]\n}\n"),
            "six entries, secrets last"
        );
        for listener in resources.listeners() {
            for direction in [TrafficDirection::Inbound, TrafficDirection::Outbound] {
                let owner = resources
                    .listener_for(direction, listener.address())
                    .expect("own address");
                assert_eq!(owner.address(), listener.address());
            }
        }
    }
    let _ = text.parse::<Policy>();
});
