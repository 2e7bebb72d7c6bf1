//! Print the demo's `/config_dump` (as the reference capture's Envoy would, timestamps aside).
fn main() {
    let at = meshcap_envoy::Timestamp::from_unix(1_795_692_936, 386_000_000).expect("timestamp");
    let opts = meshcap_envoy::ConfigDumpOptions::new(at).with_user_agent(
        "envoy",
        Some(
            meshcap_envoy::BuildVersion::new(1, 40, 0)
                .with_metadata("revision.sha", "9e5580933739775e8bce696a57a2e1bc99368f23")
                .with_metadata("build.type", "RELEASE")
                .with_metadata("ssl.version", "BoringSSL")
                .with_metadata("revision.status", "Clean"),
        ),
    );
    print!("{}", meshcap_envoy::demo::resources().config_dump_json(&opts));
}
