//! Golden tests against what a real Envoy 1.40 printed for the seed configuration
//! (`shared/reference/envoy`, read through `meshcap_testns::reference_dir`, never copied into the repo).

mod common;

use std::path::PathBuf;

use common::json::{Json, assert_same};

use meshcap_envoy::{BuildVersion, ConfigDumpOptions, HttpFault, Policy, Resources, Timestamp, demo};
use serde_json::Value;

fn reference(test: &str, file: &str) -> Option<String> {
    let dir: PathBuf = meshcap_testns::reference_dir(test)?.join("envoy");
    Some(std::fs::read_to_string(dir.join(file)).unwrap_or_else(|e| panic!("{file}: {e}")))
}

/// The user agent the reference Envoy reported, so that only truly build-specific data differs.
fn envoy_1_40_options() -> ConfigDumpOptions {
    let at = Timestamp::from_unix(1_795_692_936, 386_000_000).expect("timestamp");
    ConfigDumpOptions::new(at).with_user_agent(
        "envoy",
        Some(
            BuildVersion::new(1, 40, 0)
                .with_metadata("revision.sha", "9e5580933739775e8bce696a57a2e1bc99368f23")
                .with_metadata("build.type", "RELEASE")
                .with_metadata("ssl.version", "BoringSSL")
                .with_metadata("revision.status", "Clean"),
        ),
    )
}

/// Replace every `"last_updated": "<time>"` value with `T`.
fn normalise_timestamps(text: &str) -> String {
    const KEY: &str = "\"last_updated\": \"";
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find(KEY) {
        out.push_str(&rest[..i + KEY.len()]);
        rest = &rest[i + KEY.len()..];
        let end = rest.find('"').expect("closing quote");
        out.push('T');
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// Remove the node's `"extensions": [...]` array (the binary's compiled-in extension list) from Envoy's
/// pretty-printed dump, with the comma before it.
fn remove_node_extensions(text: &str) -> String {
    let start = text
        .find(",\n     \"extensions\": [")
        .expect("the reference lists the node's extensions");
    let open = start + text[start..].find('[').expect("array");
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    let mut end = None;
    for (i, c) in text[open..].char_indices() {
        if in_string {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_string = true,
            '[' | '{' => depth += 1,
            ']' | '}' => {
                depth -= 1;
                if depth == 0 {
                    end = Some(open + i + 1);
                    break;
                }
            }
            _ => {}
        }
    }
    let end = end.expect("end of the extensions array");
    format!("{}{}", &text[..start], &text[end..])
}

#[test]
fn config_dump_equals_envoys_own_dump_of_the_seed() {
    let Some(reference) = reference("config_dump_equals_envoys_own_dump_of_the_seed", "config_dump.json") else {
        return;
    };
    let ours = demo::resources().config_dump_json(&envoy_1_40_options());

    // Field for field, in order, as trees: only what Envoy orders at random (protobuf maps and Structs such
    // as the io.kuma.tags metadata, the set of static route configurations) is compared as a set, and the
    // node's extension list (a property of the Envoy binary) is dropped.
    let (mut ours_tree, mut theirs_tree) = (Json::parse(&ours), Json::parse(&reference));
    ours_tree.normalise_config_dump(false);
    theirs_tree.normalise_config_dump(false);
    assert_same("seed /config_dump", &ours_tree, &theirs_tree);

    // And as text. This capture's random orders happen to be the input order we print, so everything but
    // the bootstrap entry is equal byte for byte (timestamps aside): formatting included.
    let marker = "  {\n   \"@type\": \"type.googleapis.com/envoy.admin.v3.ClustersConfigDump\"";
    let tail = |s: &str| normalise_timestamps(&s[s.find(marker).expect("clusters entry")..]);
    assert_eq!(
        tail(&ours),
        tail(&reference),
        "clusters, listeners and routes differ from Envoy's dump"
    );
    assert_eq!(
        normalise_timestamps(&ours),
        normalise_timestamps(&remove_node_extensions(&reference)),
        "the dump differs from Envoy's beyond node.extensions and timestamps"
    );
}

#[test]
fn our_timestamps_are_envoys_format() {
    let Some(reference) = reference("our_timestamps_are_envoys_format", "config_dump.json") else {
        return;
    };
    let ours = demo::resources().config_dump_json(&envoy_1_40_options());
    let stamps = |s: &str| -> Vec<String> {
        s.match_indices("\"last_updated\": \"")
            .map(|(i, k)| s[i + k.len()..].split('"').next().expect("value").to_string())
            .collect()
    };
    let (theirs, ours) = (stamps(&reference), stamps(&ours));
    assert_eq!(theirs.len(), ours.len(), "one last_updated per entry");
    assert!(ours.iter().all(|s| s == "2026-11-26T11:35:36.386Z"));
    for s in theirs {
        assert_eq!(s.len(), ours[0].len(), "{s}: RFC 3339, milliseconds, Z");
        assert!(s.starts_with("2026-11-26T11:35:36.") && s.ends_with('Z'), "{s}");
    }
}

/// Drop what the hand-written reference bootstraps spell out but Envoy treats as defaults (`codec_type:
/// AUTO`, `denominator: HUNDRED`), and their access logs (not part of Kuma's model).
fn normalise_bootstrap(v: &mut Value) {
    match v {
        Value::Object(map) => {
            if map.get("codec_type") == Some(&Value::from("AUTO")) {
                map.remove("codec_type");
            }
            if map.get("denominator") == Some(&Value::from("HUNDRED")) {
                map.remove("denominator");
            }
            map.remove("access_log");
            map.values_mut().for_each(normalise_bootstrap);
        }
        Value::Array(items) => items.iter_mut().for_each(normalise_bootstrap),
        _ => {}
    }
}

fn parse(text: &str) -> Value {
    serde_json::from_str(text).expect("json")
}

#[test]
fn bootstrap_equals_the_seed_bootstrap() {
    let Some(reference) = reference("bootstrap_equals_the_seed_bootstrap", "bootstrap.json") else {
        return;
    };
    let mut theirs = parse(&reference);
    normalise_bootstrap(&mut theirs);
    assert_eq!(parse(&demo::resources().bootstrap_json()), theirs);
}

/// The e2e phases' bootstraps: the seed with other fault configs, given here as raw `HTTPFault` policies
/// taken from the files themselves, and (phase B) as the equivalent Kuma policy.
#[test]
fn fault_variants_equal_the_e2e_bootstraps() {
    for file in ["e2e/bootstrap-abort.json", "e2e/bootstrap-header.json"] {
        let Some(reference) = reference("fault_variants_equal_the_e2e_bootstraps", file) else {
            return;
        };
        let mut theirs = parse(&reference);
        let listener = theirs["static_resources"]["listeners"]
            .as_array()
            .expect("listeners")
            .iter()
            .find(|l| l["name"] == "inbound:10.244.0.6:5000")
            .expect("inbound listener")
            .clone();
        let fault_json =
            listener["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"][0]["typed_config"].to_string();
        let raw: Policy = fault_json.parse().expect("raw HTTPFault");
        assert!(matches!(raw, Policy::HttpFault(_)));
        let ours = Resources::builder(&demo::dataplane())
            .policy(&raw)
            .build()
            .expect("resources");
        normalise_bootstrap(&mut theirs);
        assert_eq!(parse(&ours.bootstrap_json()), theirs, "{file}");

        if file.ends_with("abort.json") {
            let kuma: Policy = "
type: MeshFaultInjection
mesh: default
name: backend-abort
spec:
  targetRef: {kind: Mesh}
  from:
    - targetRef: {kind: Mesh}
      default:
        http:
          - abort: {httpStatus: 503, percentage: 100}
"
            .parse()
            .expect("policy");
            let ours = Resources::builder(&demo::dataplane())
                .policy(&kuma)
                .build()
                .expect("resources");
            assert_eq!(
                parse(&ours.bootstrap_json()),
                theirs,
                "{file} from a MeshFaultInjection"
            );
        }
    }
}

#[test]
fn fault_typed_config_from_the_e2e_file_is_read_as_envoy_reads_it() {
    let Some(reference) = reference("fault_typed_config_from_the_e2e_file", "e2e/bootstrap-header.json") else {
        return;
    };
    let v = parse(&reference);
    let tc = v["static_resources"]["listeners"][4]["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"][0]
        ["typed_config"]
        .to_string();
    let fault = HttpFault::from_json(&tc).expect("fault");
    assert_eq!(fault.max_active_faults, Some(100));
    assert_eq!(
        fault.filter_metadata.as_ref().and_then(|m| m.get("injected_by")),
        Some(&Value::from("e2e"))
    );
}

/// The stat names our model gives (listener address prefixes, cluster stat names, HTTP and TCP prefixes,
/// fault stats) are the ones Envoy created for the seed.
#[test]
fn stat_names_match_envoys_stats() {
    let Some(stats) = reference("stat_names_match_envoys_stats", "stats.txt") else {
        return;
    };
    let has = |name: String| {
        assert!(
            stats.lines().any(|l| l.starts_with(&format!("{name}: "))),
            "Envoy has no stat {name}"
        );
    };
    let resources = demo::resources();
    for l in resources.listeners() {
        has(format!("listener.{}.downstream_cx_total", l.stat_prefix()));
        match l.filter_chain() {
            meshcap_envoy::FilterChain::TcpProxy(t) => has(format!("tcp.{}.downstream_cx_total", t.stat_prefix())),
            meshcap_envoy::FilterChain::HttpConnectionManager(h) => {
                has(format!("http.{}.downstream_rq_total", h.stat_prefix()));
                for stat in [
                    "aborts_injected",
                    "delays_injected",
                    "faults_overflow",
                    "response_rl_injected",
                ] {
                    has(format!("http.{}.fault.{stat}", h.stat_prefix()));
                }
            }
            _ => unreachable!("the seed has tcp and http chains only"),
        }
    }
    for c in resources.clusters() {
        has(format!("cluster.{}.upstream_cx_total", c.stat_name()));
    }
}

/// `/listeners` prints `name::address`; our names and addresses give the same lines.
#[test]
fn listener_names_and_addresses_match_envoys_listing() {
    let Some(listing) = reference("listener_names_and_addresses_match_envoys_listing", "listeners.txt") else {
        return;
    };
    let ours: Vec<String> = demo::resources()
        .listeners()
        .iter()
        .map(|l| format!("{}::{}", l.name(), l.address()))
        .collect();
    let theirs: Vec<&str> = listing.lines().collect();
    assert_eq!(ours, theirs);
}
