//! Every validation error, with its exact message (path first).

use meshcap_envoy::{
    Cluster, ClusterKind, Dataplane, Error, FilterChain, Listener, MeshFaultInjection, Policy, Resources, TcpProxy,
    TrafficDirection, ValidationErrorKind,
};

/// A valid Dataplane's YAML with `networking` replaced.
fn with_networking(networking: &str) -> String {
    format!("type: Dataplane\nmesh: default\nname: backend-01\nnetworking:\n{networking}")
}

const INBOUND: &str = "  inbound:\n    - port: 5000\n      tags: {kuma.io/service: backend}\n";

fn dataplane_error(yaml: &str) -> String {
    match Dataplane::from_yaml(yaml) {
        Ok(dp) => panic!("accepted:\n{yaml}\n=> {dp:?}"),
        Err(e) => e.to_string(),
    }
}

/// Parse errors carry the position; compare the message before it.
fn without_position(message: String) -> String {
    match message.find(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message,
    }
}

#[test]
fn dataplane_field_errors_name_the_path() {
    let address = "  address: 10.244.0.6\n";
    let cases: Vec<(String, &str)> = vec![
        (
            "type: Mesh\nmesh: default\nname: a\nnetworking: {address: 10.0.0.1}".into(),
            "type: \"Mesh\" must be \"Dataplane\"",
        ),
        (
            "mesh: default\nname: a\nnetworking:\n  address: 10.0.0.1\n".to_string()
                + INBOUND.trim_end()
                + "\nmetrics: {type: prometheus}",
            "metrics: per-dataplane metrics backends are not supported by meshcap",
        ),
        (
            "mesh: default\nname: a\nprobes: {port: 9000}\nnetworking:\n  address: 10.0.0.1\n".to_string() + INBOUND,
            "probes: virtual probes are not supported by meshcap",
        ),
        (
            "name: a\nnetworking:\n  address: 10.0.0.1\n".to_string() + INBOUND,
            "mesh: is required",
        ),
        (
            "mesh: default\nnetworking:\n  address: 10.0.0.1\n".to_string() + INBOUND,
            "name: is required",
        ),
        ("mesh: default\nname: a\n".into(), "networking: is required"),
        (
            "mesh: ''\nname: a\nnetworking:\n  address: 10.0.0.1\n".to_string() + INBOUND,
            "mesh: must not be empty",
        ),
        (
            "mesh: default\nname: backend 01\nnetworking:\n  address: 10.0.0.1\n".to_string() + INBOUND,
            "name: \"backend 01\" contains the invalid character ' '",
        ),
        (
            "mesh: default\nname: a\nlabels: {'': x}\nnetworking:\n  address: 10.0.0.1\n".to_string() + INBOUND,
            "labels: must not be empty",
        ),
        (with_networking(INBOUND), "networking.address: is required"),
        (
            with_networking(&format!("  address: backend.local\n{INBOUND}")),
            "networking.address: \"backend.local\" is not an IP address",
        ),
        (
            with_networking(&format!("  address: 0.0.0.0\n{INBOUND}")),
            "networking.address: 0.0.0.0 is an unspecified address",
        ),
        (
            with_networking(&format!("{address}  advertisedAddress: ''\n{INBOUND}")),
            "networking.advertisedAddress: must not be empty",
        ),
        (
            with_networking(&format!(
                "{address}  gateway: {{tags: {{kuma.io/service: gw}}}}\n{INBOUND}"
            )),
            "networking.gateway: gateway dataplanes are not supported by meshcap",
        ),
        (
            with_networking(address),
            "networking.inbound: at least one inbound is required",
        ),
        (
            with_networking(&format!("{address}  inbound: []\n")),
            "networking.inbound: at least one inbound is required",
        ),
        (
            with_networking(&format!("{address}  inbound:\n    - tags: {{kuma.io/service: a}}\n")),
            "networking.inbound[0].port: is required",
        ),
        (
            with_networking(&format!(
                "{address}{INBOUND}    - port: 0\n      tags: {{kuma.io/service: a}}\n"
            )),
            "networking.inbound[1].port: 0 is not a valid port",
        ),
        (
            with_networking(&format!(
                "{address}  inbound:\n    - port: 70000\n      tags: {{kuma.io/service: a}}\n"
            )),
            "networking.inbound[0].port: 70000 is not a valid port",
        ),
        (
            with_networking(&format!(
                "{address}  inbound:\n    - port: -1\n      tags: {{kuma.io/service: a}}\n"
            )),
            "networking.inbound[0].port: -1 is not a valid port",
        ),
        (
            with_networking(&format!(
                "{address}  inbound:\n    - port: 5000\n      servicePort: 65536\n      tags: {{kuma.io/service: a}}\n"
            )),
            "networking.inbound[0].servicePort: 65536 is not a valid port",
        ),
        (
            with_networking(&format!(
                "{address}  inbound:\n    - port: 5000\n      serviceAddress: app.local\n      tags: {{kuma.io/service: a}}\n"
            )),
            "networking.inbound[0].serviceAddress: \"app.local\" is not an IP address",
        ),
        (
            with_networking(&format!(
                "{address}  inbound:\n    - port: 5000\n      serviceAddress: 0.0.0.0\n      tags: {{kuma.io/service: a}}\n"
            )),
            "networking.inbound[0].serviceAddress: 0.0.0.0 is an unspecified address",
        ),
        (
            with_networking(&format!(
                "{address}  inbound:\n    - port: 5000\n      address: 10.0.0.300\n      tags: {{kuma.io/service: a}}\n"
            )),
            "networking.inbound[0].address: \"10.0.0.300\" is not an IP address",
        ),
        (
            with_networking(&format!(
                "{address}  inbound:\n    - port: 5000\n      address: '::'\n      tags: {{kuma.io/service: a}}\n"
            )),
            "networking.inbound[0].address: :: is an unspecified address",
        ),
        (
            with_networking(&format!(
                "{address}  inbound:\n    - port: 5000\n      state: Broken\n      tags: {{kuma.io/service: a}}\n"
            )),
            "networking.inbound[0].state: \"Broken\" is not one of Ready, NotReady, Ignored",
        ),
        (
            with_networking(&format!(
                "{address}  inbound:\n    - port: 5000\n      serviceProbe: {{tcp: {{}}}}\n      tags: {{kuma.io/service: a}}\n"
            )),
            "networking.inbound[0].serviceProbe: service probes are run by a control plane, which meshcap does not have",
        ),
        (
            with_networking(&format!(
                "{address}  inbound:\n    - port: 5000\n      name: ''\n      tags: {{kuma.io/service: a}}\n"
            )),
            "networking.inbound[0].name: must not be empty",
        ),
        (
            with_networking(&format!("{address}  inbound:\n    - port: 5000\n")),
            "networking.inbound[0].tags: the kuma.io/service tag is required",
        ),
        (
            with_networking(&format!(
                "{address}  inbound:\n    - port: 5000\n      tags: {{kuma.io/protocol: http}}\n"
            )),
            "networking.inbound[0].tags: the kuma.io/service tag is required",
        ),
        (
            with_networking(&format!(
                "{address}  inbound:\n    - port: 5000\n      tags: {{kuma.io/service: ''}}\n"
            )),
            "networking.inbound[0].tags[\"kuma.io/service\"]: must not be empty",
        ),
        (
            with_networking(&format!(
                "{address}  inbound:\n    - port: 5000\n      tags: {{kuma.io/service: a, 'my tag': x}}\n"
            )),
            "networking.inbound[0].tags: \"my tag\" contains the invalid character ' '",
        ),
        (
            with_networking(&format!(
                "{address}  inbound:\n    - port: 5000\n      tags: {{kuma.io/service: a, env: 'a&b'}}\n"
            )),
            "networking.inbound[0].tags[\"env\"]: \"a&b\" contains the invalid character '&'",
        ),
        (
            with_networking(&format!(
                "{address}  inbound:\n    - port: 5000\n      tags: {{kuma.io/service: a, kuma.io/protocol: https}}\n"
            )),
            "networking.inbound[0].tags[\"kuma.io/protocol\"]: \"https\" is not a protocol (expected one of tcp, http, http2, grpc, kafka)",
        ),
        (
            with_networking(&format!(
                "{address}{INBOUND}    - port: 5000\n      tags: {{kuma.io/service: b}}\n"
            )),
            "networking.inbound[1].port: 10.244.0.6:5000 is already used by networking.inbound[0]",
        ),
        (
            with_networking(&format!(
                "{address}  inbound:\n    - port: 15006\n      tags: {{kuma.io/service: a}}\n  transparentProxying: {{redirectPortInbound: 15006, redirectPortOutbound: 15001}}\n"
            )),
            "networking.inbound[0].port: 15006 is the transparent-proxying redirectPortInbound port",
        ),
        (
            with_networking(&format!(
                "{address}{INBOUND}  outbound:\n    - port: 15001\n      tags: {{kuma.io/service: db}}\n  transparentProxying: {{redirectPortInbound: 15006, redirectPortOutbound: 15001}}\n"
            )),
            "networking.outbound[0].port: 15001 is the transparent-proxying redirectPortOutbound port",
        ),
        (
            with_networking(&format!(
                "{address}{INBOUND}  outbound:\n    - tags: {{kuma.io/service: db}}\n"
            )),
            "networking.outbound[0].port: is required",
        ),
        (
            with_networking(&format!(
                "{address}{INBOUND}  outbound:\n    - port: 0\n      tags: {{kuma.io/service: db}}\n"
            )),
            "networking.outbound[0].port: 0 is not a valid port",
        ),
        (
            with_networking(&format!(
                "{address}{INBOUND}  outbound:\n    - port: 10001\n      address: localhost\n      tags: {{kuma.io/service: db}}\n"
            )),
            "networking.outbound[0].address: \"localhost\" is not an IP address",
        ),
        (
            with_networking(&format!(
                "{address}{INBOUND}  outbound:\n    - port: 10001\n      address: 0.0.0.0\n      tags: {{kuma.io/service: db}}\n"
            )),
            "networking.outbound[0].address: 0.0.0.0 is an unspecified address",
        ),
        (
            with_networking(&format!("{address}{INBOUND}  outbound:\n    - port: 10001\n")),
            "networking.outbound[0].tags: the kuma.io/service tag is required",
        ),
        (
            with_networking(&format!(
                "{address}{INBOUND}  outbound:\n    - port: 10001\n      backendRef: {{kind: MeshService, name: db}}\n"
            )),
            "networking.outbound[0].backendRef: backendRef needs MeshService resolution by a control plane; use tags with kuma.io/service",
        ),
        (
            with_networking(&format!(
                "{address}{INBOUND}  outbound:\n    - port: 10001\n      tags: {{kuma.io/service: db}}\n    - port: 10001\n      address: 127.0.0.1\n      tags: {{kuma.io/service: cache}}\n"
            )),
            "networking.outbound[1]: 127.0.0.1:10001 is already used by networking.outbound[0]",
        ),
        (
            with_networking(&format!(
                "{address}{INBOUND}  outbound:\n    - port: 5000\n      address: 10.244.0.6\n      tags: {{kuma.io/service: db}}\n"
            )),
            "networking.outbound[0]: 10.244.0.6:5000 is already used by networking.inbound[0]",
        ),
        (
            with_networking(&format!(
                "{address}{INBOUND}  transparentProxying: {{redirectPortOutbound: 15001}}\n"
            )),
            "networking.transparentProxying.redirectPortInbound: is required",
        ),
        (
            with_networking(&format!(
                "{address}{INBOUND}  transparentProxying: {{redirectPortInbound: 15006}}\n"
            )),
            "networking.transparentProxying.redirectPortOutbound: is required",
        ),
        (
            with_networking(&format!(
                "{address}{INBOUND}  transparentProxying: {{redirectPortInbound: 0, redirectPortOutbound: 15001}}\n"
            )),
            "networking.transparentProxying.redirectPortInbound: 0 is not a valid port",
        ),
        (
            with_networking(&format!(
                "{address}{INBOUND}  transparentProxying: {{redirectPortInbound: 15006, redirectPortOutbound: 99999}}\n"
            )),
            "networking.transparentProxying.redirectPortOutbound: 99999 is not a valid port",
        ),
        (
            with_networking(&format!(
                "{address}{INBOUND}  transparentProxying: {{redirectPortInbound: 15006, redirectPortOutbound: 15006}}\n"
            )),
            "networking.transparentProxying.redirectPortOutbound: 15006 is also redirectPortInbound; the two redirect ports must differ",
        ),
        (
            with_networking(&format!(
                "{address}{INBOUND}  transparentProxying: {{redirectPortInbound: 15006, redirectPortOutbound: 15001, ipFamilyMode: IPv5}}\n"
            )),
            "networking.transparentProxying.ipFamilyMode: \"IPv5\" is not one of DualStack, IPv4, IPv6",
        ),
        (
            with_networking(&format!(
                "{address}{INBOUND}  transparentProxying: {{redirectPortInbound: 15006, redirectPortOutbound: 15001, reachableServices: [db]}}\n"
            )),
            "networking.transparentProxying.reachableServices: only a control plane can act on this field, and meshcap has none",
        ),
        (
            with_networking(&format!(
                "{address}{INBOUND}  transparentProxying: {{redirectPortInbound: 15006, redirectPortOutbound: 15001, directAccessServices: ['*']}}\n"
            )),
            "networking.transparentProxying.directAccessServices: only a control plane can act on this field, and meshcap has none",
        ),
        (
            with_networking(&format!(
                "{address}{INBOUND}  transparentProxying: {{redirectPortInbound: 15006, redirectPortOutbound: 15001, reachableBackends: {{refs: []}}}}\n"
            )),
            "networking.transparentProxying.reachableBackends: only a control plane can act on this field, and meshcap has none",
        ),
        (
            with_networking(&format!(
                "{address}{INBOUND}  transparentProxying: {{redirectPortInbound: 15006, redirectPortOutbound: 15001, redirectPortInboundV6: 15010}}\n"
            )),
            "networking.transparentProxying.redirectPortInboundV6: only a control plane can act on this field, and meshcap has none",
        ),
        (
            with_networking(&format!("{address}{INBOUND}  admin: {{port: 0}}\n")),
            "networking.admin.port: 0 is not a valid port",
        ),
    ];
    let mut failures = Vec::new();
    for (yaml, expected) in &cases {
        let got = dataplane_error(yaml);
        if got != *expected {
            failures.push(format!("input:\n{yaml}\nexpected: {expected}\n     got: {got}\n"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn validation_errors_are_typed() {
    let err = dataplane_error_value(&with_networking(
        "  address: 10.244.0.6\n  inbound:\n    - port: 0\n      tags: {kuma.io/service: a}\n",
    ));
    let v = err.as_validation().expect("a validation error");
    assert_eq!(v.path(), "networking.inbound[0].port");
    assert_eq!(v.kind(), &ValidationErrorKind::InvalidPort(0));
}

fn dataplane_error_value(yaml: &str) -> Error {
    Dataplane::from_yaml(yaml).expect_err("invalid")
}

#[test]
fn json_errors_match_yaml_errors() {
    let json = r#"{"type":"Dataplane","mesh":"default","name":"a","networking":{"address":"10.0.0.1","inbound":[{"port":5000,"tags":{"kuma.io/service":"a"}},{"port":0,"tags":{"kuma.io/service":"b"}}]}}"#;
    assert_eq!(
        Dataplane::from_json(json).expect_err("port 0").to_string(),
        "networking.inbound[1].port: 0 is not a valid port"
    );
    assert_eq!(
        json.parse::<Dataplane>().expect_err("port 0").to_string(),
        "networking.inbound[1].port: 0 is not a valid port"
    );
}

#[test]
fn parse_errors_say_where() {
    let cases = [
        (
            Dataplane::from_yaml(&with_networking(&format!(
                "  address: 10.0.0.1\n  adress: x\n{INBOUND}"
            ))),
            "invalid dataplane yaml: unknown field `adress`, expected one of address, advertisedAddress, inbound, outbound, transparentProxying, admin, gateway at line 6, column 3",
        ),
        (
            Dataplane::from_json(r#"{"mesh":"default","nmae":"x"}"#),
            "invalid dataplane json: unknown field `nmae`, expected one of `type`, `mesh`, `name`, `labels`, `creationTime`, `modificationTime`, `networking`, `metrics`, `probes` at line 1 column 24",
        ),
        (
            Dataplane::from_yaml(&with_networking(&format!(
                "  address: 10.0.0.1\n  address: 10.0.0.2\n{INBOUND}"
            ))),
            "invalid dataplane yaml: duplicate mapping key: address, set DuplicateKeyPolicy in Options if acceptable at line 6, column 3",
        ),
        (
            Dataplane::from_json(
                r#"{"mesh":"default","name":"a","networking":{"address":"10.0.0.1","inbound":[{"port":5000,"tags":{"kuma.io/service":"a","kuma.io/service":"b"}}]}}"#,
            ),
            "invalid dataplane json: duplicate tag \"kuma.io/service\" at line 1 column 140",
        ),
        (
            Dataplane::from_yaml(&with_networking("  address: 10.0.0.1\n  inbound:\n    - port: five\n")),
            "invalid dataplane yaml: invalid i64 at line 7, column 13",
        ),
        (
            Dataplane::from_yaml("mesh: a\n---\nmesh: b\n"),
            "invalid dataplane yaml: budget breached: Documents { documents: 2 } at line 2, column 1",
        ),
        (
            Dataplane::from_json("{"),
            "invalid dataplane json: EOF while parsing an object at line 1 column 1",
        ),
    ];
    for (result, expected) in cases {
        assert_eq!(result.expect_err(expected).to_string(), expected);
    }
}

#[test]
fn oversized_input_is_refused_before_parsing() {
    let yaml = format!("# {}\n", "x".repeat(meshcap_envoy::MAX_INPUT_BYTES));
    assert_eq!(
        Dataplane::from_yaml(&yaml).expect_err("too large").to_string(),
        format!("dataplane is {} bytes, more than the 1048576-byte limit", yaml.len())
    );
    assert!(matches!(
        Policy::from_json(&yaml),
        Err(Error::TooLarge { what: "policy", .. })
    ));
}

#[test]
fn alias_bombs_are_refused() {
    // Inside a field that is read as "anything" (and rejected only afterwards), so the aliases really are
    // replayed: 8^12 nodes if nothing stopped it.
    let mut yaml = String::from("mesh: default\nname: a\nmetrics:\n  a0: &a0 [x, x, x, x, x, x, x, x]\n");
    for i in 1..12 {
        yaml.push_str(&format!(
            "  a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n",
            p = i - 1
        ));
    }
    let err = Dataplane::from_yaml(&yaml).expect_err("alias bomb").to_string();
    assert!(err.starts_with("invalid dataplane yaml: "), "{err}");
    assert!(
        err.contains("alias") || err.contains("budget"),
        "refused by the YAML budget: {err}"
    );
}

// --- generation errors -----------------------------------------------------------------------------------

#[test]
fn generation_errors_name_the_path() {
    let dp = Dataplane::from_yaml(&with_networking(
        "  address: 10.244.0.6\n  inbound:\n    - port: 5000\n      tags: {kuma.io/service: a}\n    - port: 5001\n      address: 10.244.0.7\n      servicePort: 5000\n      tags: {kuma.io/service: b}\n  transparentProxying: {redirectPortInbound: 15006, redirectPortOutbound: 15001}\n",
    ))
    .expect("valid dataplane");
    assert_eq!(
        Resources::from_dataplane(&dp).expect_err("conflict").to_string(),
        "networking.inbound[1]: the local cluster localhost:5000 already points at 10.244.0.6:5000, not 10.244.0.7:5000"
    );

    let dp = Dataplane::from_yaml(&with_networking(&format!(
        "  address: 10.244.0.6\n{INBOUND}  outbound:\n    - port: 10001\n      tags: {{kuma.io/service: db}}\n    - port: 10002\n      tags: {{kuma.io/service: db, kuma.io/protocol: http}}\n  transparentProxying: {{redirectPortInbound: 15006, redirectPortOutbound: 15001}}\n"
    )))
    .expect("valid dataplane");
    assert_eq!(
        Resources::from_dataplane(&dp).expect_err("conflict").to_string(),
        "networking.outbound[1].tags[\"kuma.io/protocol\"]: service \"db\" is already used with protocol tcp, not http"
    );

    let dp = Dataplane::from_yaml(&with_networking(&format!(
        "  address: 10.244.0.6\n{INBOUND}  outbound:\n    - port: 10001\n      tags: {{kuma.io/service: db}}\n"
    )))
    .expect("valid dataplane");
    assert_eq!(
        Resources::from_dataplane(&dp).expect_err("no upstream").to_string(),
        "networking.outbound[0]: service \"db\" has no endpoints (there is no control plane to discover them) and, without transparent proxying, no original destination to forward to"
    );
    Resources::builder(&dp)
        .service_endpoints("db", vec!["10.0.0.9:5432".parse().expect("addr")])
        .build()
        .expect("with endpoints it builds");
}

#[test]
fn hand_made_resources_are_checked() {
    let tcp = |cluster: &str| FilterChain::TcpProxy(TcpProxy::new("s", cluster));
    let listener = |name: &str, addr: &str, cluster: &str| {
        Listener::new(
            name,
            addr.parse().expect("addr"),
            TrafficDirection::Inbound,
            tcp(cluster),
        )
    };
    let cluster = |name: &str| Cluster::new(name, ClusterKind::OriginalDst, std::time::Duration::from_secs(5));
    let err = |r: Result<Resources, Error>| r.expect_err("invalid").to_string();
    assert_eq!(
        err(Resources::new(
            "n",
            "c",
            vec![listener("a", "10.0.0.1:1", "x"), listener("a", "10.0.0.1:2", "x")],
            vec![cluster("x")]
        )),
        "listeners[1]: the listener name \"a\" is used twice"
    );
    assert_eq!(
        err(Resources::new(
            "n",
            "c",
            vec![listener("a", "10.0.0.1:1", "x"), listener("b", "10.0.0.1:1", "x")],
            vec![cluster("x")]
        )),
        "listeners[1]: 10.0.0.1:1 is already used by a"
    );
    assert_eq!(
        err(Resources::new(
            "n",
            "c",
            vec![listener("a", "10.0.0.1:1", "x")],
            vec![cluster("x"), cluster("x")]
        )),
        "clusters[1]: the cluster name \"x\" is used twice"
    );
    assert_eq!(
        err(Resources::new(
            "n",
            "c",
            vec![listener("a", "10.0.0.1:1", "y")],
            vec![cluster("x")]
        )),
        "listeners[0]: \"y\" is not one of the name of a cluster"
    );
}

// --- policies ---------------------------------------------------------------------------------------------

fn policy_error(yaml: &str) -> String {
    match MeshFaultInjection::from_yaml(yaml) {
        Ok(p) => panic!("accepted:\n{yaml}\n=> {p:?}"),
        Err(e) => e.to_string(),
    }
}

/// A universal policy with the given `spec`.
fn spec(spec: &str) -> String {
    format!("type: MeshFaultInjection\nmesh: default\nname: p\nspec:\n{spec}")
}

/// A policy whose single `from` entry has one `http` item.
fn http_item(item: &str) -> String {
    spec(&format!(
        "  targetRef: {{kind: Mesh}}\n  from:\n    - targetRef: {{kind: Mesh}}\n      default:\n        http:\n          - {item}\n"
    ))
}

#[test]
fn policy_errors_name_the_path() {
    let from = "  from:\n    - targetRef: {kind: Mesh}\n      default: {http: []}\n";
    let cases: Vec<(String, &str)> = vec![
        (
            format!("type: MeshTrace\nmesh: default\nname: p\nspec:\n{from}"),
            "type: \"MeshTrace\" must be \"MeshFaultInjection\"",
        ),
        (format!("mesh: default\nname: p\nspec:\n{from}"), "type: is required"),
        (
            format!("type: MeshFaultInjection\nname: p\nspec:\n{from}"),
            "mesh: is required",
        ),
        (
            format!("type: MeshFaultInjection\nmesh: default\nspec:\n{from}"),
            "name: is required",
        ),
        (
            format!("type: MeshFaultInjection\nmesh: default\nname: p q\nspec:\n{from}"),
            "name: \"p q\" contains the invalid character ' '",
        ),
        (
            format!("type: MeshFaultInjection\nkind: MeshFaultInjection\nmesh: default\nname: p\nspec:\n{from}"),
            "type: use either the universal form (type:) or the Kubernetes form (kind:)",
        ),
        (
            format!("type: MeshFaultInjection\napiVersion: kuma.io/v1alpha1\nmesh: default\nname: p\nspec:\n{from}"),
            "metadata: the universal form (type:) has no apiVersion or metadata",
        ),
        (
            format!("apiVersion: kuma.io/v1alpha1\nkind: MeshTimeout\nmetadata: {{name: p}}\nspec:\n{from}"),
            "kind: \"MeshTimeout\" must be \"MeshFaultInjection\"",
        ),
        (
            format!("apiVersion: kuma.io/v1beta1\nkind: MeshFaultInjection\nmetadata: {{name: p}}\nspec:\n{from}"),
            "apiVersion: \"kuma.io/v1beta1\" must be \"kuma.io/v1alpha1\"",
        ),
        (
            format!("kind: MeshFaultInjection\nmetadata: {{name: p}}\nspec:\n{from}"),
            "apiVersion: is required",
        ),
        (
            format!("apiVersion: kuma.io/v1alpha1\nkind: MeshFaultInjection\nspec:\n{from}"),
            "metadata: is required",
        ),
        (
            format!(
                "apiVersion: kuma.io/v1alpha1\nkind: MeshFaultInjection\nmetadata: {{namespace: x}}\nspec:\n{from}"
            ),
            "metadata.name: is required",
        ),
        (
            format!(
                "apiVersion: kuma.io/v1alpha1\nkind: MeshFaultInjection\nmesh: default\nmetadata: {{name: p}}\nspec:\n{from}"
            ),
            "mesh: the Kubernetes form takes the mesh from the kuma.io/mesh label and the name from metadata",
        ),
        (
            "type: MeshFaultInjection\nmesh: default\nname: p\n".into(),
            "spec: is required",
        ),
        (spec("  targetRef: {kind: Mesh}\n"), "spec.from: must not be empty"),
        (
            spec("  targetRef: {kind: Mesh}\n  from: []\n"),
            "spec.from: must not be empty",
        ),
        (
            spec(
                "  targetRef: {kind: MeshGateway, name: gw}\n  to:\n    - targetRef: {kind: Mesh}\n      default: {http: []}\n",
            ),
            "spec.to: spec.to only applies to gateways, which meshcap does not support",
        ),
        (
            spec(&format!("  targetRef: {{kind: Mesh}}\n  rules: []\n{from}")),
            "spec.rules: spec.rules is not supported by meshcap; use spec.from",
        ),
        (
            spec(&format!("  targetRef: {{name: x}}\n{from}")),
            "spec.targetRef.kind: is required",
        ),
        (
            spec(&format!("  targetRef: {{kind: MeshGateway, name: gw}}\n{from}")),
            "spec.targetRef.kind: gateways are not supported by meshcap",
        ),
        (
            spec(&format!("  targetRef: {{kind: MeshHTTPRoute, name: r}}\n{from}")),
            "spec.targetRef.kind: \"MeshHTTPRoute\" is not one of Mesh, MeshSubset, MeshService, MeshServiceSubset",
        ),
        (
            spec(&format!("  targetRef: {{kind: MeshService}}\n{from}")),
            "spec.targetRef.name: is required",
        ),
        (
            spec(&format!("  targetRef: {{kind: MeshService, name: ''}}\n{from}")),
            "spec.targetRef.name: must not be empty",
        ),
        (
            spec(&format!("  targetRef: {{kind: Mesh, name: x}}\n{from}")),
            "spec.targetRef.name: is not allowed with kind Mesh",
        ),
        (
            spec(&format!(
                "  targetRef: {{kind: MeshService, name: x, tags: {{a: b}}}}\n{from}"
            )),
            "spec.targetRef.tags: is not allowed with kind MeshService",
        ),
        (
            spec(&format!(
                "  targetRef: {{kind: MeshSubset, tags: {{a: 'b c'}}}}\n{from}"
            )),
            "spec.targetRef.tags[\"a\"]: \"b c\" contains the invalid character ' '",
        ),
        (
            spec(&format!("  targetRef: {{kind: MeshService, name: 'web&x'}}\n{from}")),
            "spec.targetRef.name: \"web&x\" contains the invalid character '&'",
        ),
        (
            spec(&format!("  targetRef: {{kind: Mesh, proxyTypes: [Ingress]}}\n{from}")),
            "spec.targetRef.proxyTypes[0]: \"Ingress\" is not one of Sidecar, Gateway",
        ),
        (
            spec(&format!("  targetRef: {{kind: Mesh, sectionName: http}}\n{from}")),
            "spec.targetRef.sectionName: not supported by meshcap (targetRefs select by kind, name and tags)",
        ),
        (
            spec(&format!("  targetRef: {{kind: Mesh, mesh: other}}\n{from}")),
            "spec.targetRef.mesh: not supported by meshcap (targetRefs select by kind, name and tags)",
        ),
        (
            spec("  targetRef: {kind: Mesh}\n  from:\n    - default: {http: []}\n"),
            "spec.from[0].targetRef: is required",
        ),
        (
            spec("  targetRef: {kind: Mesh}\n  from:\n    - targetRef: {kind: Mesh}\n"),
            "spec.from[0].default: is required",
        ),
        (
            spec(
                "  targetRef: {kind: Mesh}\n  from:\n    - targetRef: {kind: MeshGateway, name: gw}\n      default: {http: []}\n",
            ),
            "spec.from[0].targetRef.kind: \"MeshGateway\" is not one of Mesh, MeshSubset, MeshService, MeshServiceSubset",
        ),
        (
            spec(
                "  targetRef: {kind: Mesh}\n  from:\n    - targetRef: {kind: Mesh, proxyTypes: [Sidecar]}\n      default: {http: []}\n",
            ),
            "spec.from[0].targetRef.proxyTypes: proxyTypes is only allowed in the top-level targetRef",
        ),
        (
            spec(
                "  targetRef: {kind: Mesh}\n  from:\n    - targetRef: {kind: MeshSubset, name: x}\n      default: {http: []}\n",
            ),
            "spec.from[0].targetRef.name: is not allowed with kind MeshSubset",
        ),
        (
            http_item("abort: {percentage: 50}"),
            "spec.from[0].default.http[0].abort.httpStatus: is required",
        ),
        (
            http_item("abort: {httpStatus: 600, percentage: 50}"),
            "spec.from[0].default.http[0].abort.httpStatus: 600 is not an http status envoy can abort with (200..=599)",
        ),
        (
            http_item("abort: {httpStatus: 199, percentage: 50}"),
            "spec.from[0].default.http[0].abort.httpStatus: 199 is not an http status envoy can abort with (200..=599)",
        ),
        (
            http_item("abort: {httpStatus: 503, percentage: 101}"),
            "spec.from[0].default.http[0].abort.percentage: \"101\" is not a percentage between 0 and 100",
        ),
        (
            http_item("abort: {httpStatus: 503, percentage: -1}"),
            "spec.from[0].default.http[0].abort.percentage: \"-1\" is not a percentage between 0 and 100",
        ),
        (
            http_item("abort: {httpStatus: 503, percentage: '50%'}"),
            "spec.from[0].default.http[0].abort.percentage: \"50%\" is not a percentage between 0 and 100",
        ),
        (
            http_item("abort: {httpStatus: 503, percentage: 100.5}"),
            "spec.from[0].default.http[0].abort.percentage: \"100.5\" is not a percentage between 0 and 100",
        ),
        (
            http_item("delay: {percentage: 50}"),
            "spec.from[0].default.http[0].delay.value: is required",
        ),
        (
            http_item("delay: {value: 5, percentage: 50}"),
            "spec.from[0].default.http[0].delay.value: \"5\" is not a duration: missing unit (ns, us, ms, s, m or h)",
        ),
        (
            http_item("delay: {value: 5d, percentage: 50}"),
            "spec.from[0].default.http[0].delay.value: \"5d\" is not a duration: unknown unit (expected ns, us, ms, s, m or h)",
        ),
        (
            http_item("delay: {value: 0s, percentage: 50}"),
            "spec.from[0].default.http[0].delay.value: \"0s\" must be greater than 0s",
        ),
        (
            http_item("delay: {value: -1s, percentage: 50}"),
            "spec.from[0].default.http[0].delay.value: \"-1s\" must be greater than 0s",
        ),
        (
            http_item("responseBandwidth: {percentage: 50}"),
            "spec.from[0].default.http[0].responseBandwidth.limit: is required",
        ),
        (
            http_item("responseBandwidth: {limit: 10mbps, percentage: 50}"),
            "spec.from[0].default.http[0].responseBandwidth.limit: \"10mbps\" is not a bandwidth such as 10kbps, 5 Mbps or 1Gbps",
        ),
        (
            http_item("responseBandwidth: {limit: 0kbps, percentage: 50}"),
            "spec.from[0].default.http[0].responseBandwidth.limit: 0kbps is out of range (envoy needs at least 1 kbps)",
        ),
        (
            http_item("responseBandwidth: {limit: 99999999999999999Gbps, percentage: 50}"),
            "spec.from[0].default.http[0].responseBandwidth.limit: 99999999999999999Gbps is out of range (at most 18446744073709551615 kbps)",
        ),
    ];
    let mut failures = Vec::new();
    for (yaml, expected) in &cases {
        let got = without_position(policy_error(yaml));
        if got != *expected {
            failures.push(format!("input:\n{yaml}\nexpected: {expected}\n     got: {got}\n"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn policy_files_of_neither_kind_are_refused() {
    assert_eq!(
        "{\"abort\": {\"http_status\": 503}}"
            .parse::<Policy>()
            .expect_err("no @type")
            .to_string(),
        "type: expected a MeshFaultInjection (type: or kind:) or an HTTPFault typed config (@type:)"
    );
    assert_eq!(
        without_position(
            "type: MeshFaultInjection\nmesh: default\nname: p\nspec: {}\nextra: 1\n"
                .parse::<Policy>()
                .expect_err("unknown field")
                .to_string()
        ),
        "invalid policy yaml: unknown field `extra`, expected one of type, mesh, name, labels, creationTime, modificationTime, apiVersion, kind, metadata, spec"
    );
    assert_eq!(
        "{\"@type\": \"type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault\", \"abort\": {\"http_status\": 600}}"
            .parse::<Policy>()
            .expect_err("600")
            .to_string(),
        "http_fault.abort.http_status: 600 is not an http status envoy can abort with (200..=599)"
    );
}
