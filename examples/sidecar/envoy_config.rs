//! `sidecar envoy-config --dataplane FILE [--policy FILE]...`: the Envoy bootstrap of a Kuma Dataplane
//! (with its policies applied), as `meshcap::envoy` models it. A real Envoy runs the output:
//! `sidecar envoy-config --dataplane dp.yaml > bootstrap.json && envoy -c bootstrap.json`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::SystemTime;

use clap::Args;
use meshcap::envoy::{ConfigDumpOptions, Dataplane, Policy, Resources, Timestamp, ValidationErrorKind};

/// Print the Envoy bootstrap for a Dataplane.
#[derive(Debug, Args)]
pub(crate) struct EnvoyConfigArgs {
    /// The Kuma Dataplane (YAML; JSON when the file ends in .json or starts with `{`).
    #[arg(long, value_name = "FILE")]
    dataplane: PathBuf,
    /// A MeshFaultInjection policy, or a raw Envoy HTTPFault typed config with its `@type` (repeatable).
    #[arg(long = "policy", value_name = "FILE")]
    policies: Vec<PathBuf>,
    /// Endpoints of an outbound service, `SERVICE=IP:PORT[,IP:PORT]...` (repeatable). Without them an
    /// outbound forwards to the original destination, which needs transparent proxying.
    #[arg(long = "endpoints", value_name = "SERVICE=ADDRS")]
    endpoints: Vec<String>,
    /// The admin address in the bootstrap (default 127.0.0.1 and the Dataplane's admin port, else 9901).
    #[arg(long, value_name = "ADDR")]
    admin_address: Option<SocketAddr>,
    /// Print the `/config_dump` of these resources (as meshcap's admin serves it) instead of the bootstrap.
    #[arg(long)]
    config_dump: bool,
}

/// Run the subcommand: the JSON on stdout, errors (with file and field path) on stderr.
pub(crate) fn run(args: EnvoyConfigArgs) -> ExitCode {
    match render(&args) {
        Ok(json) => {
            print!("{json}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("sidecar envoy-config: {e}");
            ExitCode::FAILURE
        }
    }
}

fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))
}

fn is_json(path: &Path, text: &str) -> bool {
    path.extension().is_some_and(|e| e.eq_ignore_ascii_case("json")) || text.trim_start().starts_with('{')
}

fn render(args: &EnvoyConfigArgs) -> Result<String, String> {
    let text = read(&args.dataplane)?;
    let dataplane = if is_json(&args.dataplane, &text) {
        Dataplane::from_json(&text)
    } else {
        Dataplane::from_yaml(&text)
    }
    .map_err(|e| format!("{}: {e}", args.dataplane.display()))?;

    let mut policies = Vec::with_capacity(args.policies.len());
    for path in &args.policies {
        let text = read(path)?;
        let policy = if is_json(path, &text) {
            Policy::from_json(&text)
        } else {
            Policy::from_yaml(&text)
        }
        .map_err(|e| format!("{}: {e}", path.display()))?;
        policies.push(policy);
    }

    let mut builder = Resources::builder(&dataplane).policies(&policies);
    for spec in &args.endpoints {
        let (service, addrs) = spec
            .split_once('=')
            .ok_or_else(|| format!("--endpoints {spec:?}: expected SERVICE=IP:PORT[,IP:PORT]..."))?;
        let addrs = addrs
            .split(',')
            .map(|a| {
                a.trim()
                    .parse::<SocketAddr>()
                    .map_err(|e| format!("--endpoints {spec:?}: {a:?}: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        builder = builder.service_endpoints(service, addrs);
    }
    if let Some(admin) = args.admin_address {
        builder = builder.admin_address(admin);
    }
    let resources = builder.build().map_err(|e| {
        let hint = match e.as_validation().map(|v| v.kind()) {
            Some(ValidationErrorKind::NoUpstream(service)) => {
                format!(" (give them with --endpoints {service}=IP:PORT)")
            }
            _ => String::new(),
        };
        format!("{}: {e}{hint}", args.dataplane.display())
    })?;
    Ok(if args.config_dump {
        resources.config_dump_json(&ConfigDumpOptions::new(Timestamp::from(SystemTime::now())))
    } else {
        resources.bootstrap_json()
    })
}
