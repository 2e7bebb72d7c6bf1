//! `sidecar iptables render|install|uninstall|verify`: kumactl's transparent-proxy flags onto
//! `meshcap::iptables`. The host lookups the library leaves to its caller live here: `--kuma-dp-user`
//! names via /etc/passwd, resolvers from resolv.conf, `--config` files and stdin, IPv6 presence.

use std::io::Read as _;
use std::process::ExitCode;

use clap::{ArgAction, Args, Subcommand};
use meshcap::iptables::{
    Config, ConfigBuilder, Executor, Family, Installer, IpFamilyMode, Port, RuleSet, parse_duration, parse_resolv_conf,
    render_dry_run,
};

/// Transparent-proxy capture rules (Kuma's `kumactl install transparent-proxy`).
#[derive(Debug, Args)]
pub(crate) struct IptablesArgs {
    #[command(subcommand)]
    action: Action,
}

#[derive(Debug, Subcommand)]
enum Action {
    /// Print the iptables-restore input (like `kumactl install transparent-proxy --dry-run`).
    Render(Flags),
    /// Apply the rules (replacing a previous installation) with iptables-restore --noflush.
    Install(Flags),
    /// Remove our chains and rules, leaving everything else as it was.
    Uninstall(Flags),
    /// Compare the installed rules with the configuration; exit 1 on drift.
    Verify(Flags),
}

/// kumactl's flag names.
#[derive(Debug, Args)]
struct Flags {
    /// The kuma-dp user: a UID or a user name from /etc/passwd (default 5678, or user kuma-dp).
    #[arg(long, value_name = "USER")]
    kuma_dp_user: Option<String>,
    /// Port Envoy's inbound passthrough listener binds.
    #[arg(long, value_name = "PORT")]
    redirect_inbound_port: Option<String>,
    /// Port Envoy's outbound passthrough listener binds.
    #[arg(long, value_name = "PORT")]
    redirect_outbound_port: Option<String>,
    /// Capture inbound traffic (false for gateways).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true", action = ArgAction::Set)]
    redirect_inbound: Option<bool>,
    /// Inbound ports not captured (comma list).
    #[arg(long, value_name = "PORTS")]
    exclude_inbound_ports: Option<String>,
    /// Outbound ports not captured (comma list).
    #[arg(long, value_name = "PORTS")]
    exclude_outbound_ports: Option<String>,
    /// Source addresses/CIDRs not captured inbound (repeatable, comma lists).
    #[arg(long, value_name = "IPS")]
    exclude_inbound_ips: Vec<String>,
    /// Destination addresses/CIDRs not captured outbound (repeatable, comma lists).
    #[arg(long, value_name = "IPS")]
    exclude_outbound_ips: Vec<String>,
    /// `[protocol:][ports:]uids` whose outbound traffic is not captured (repeatable).
    #[arg(long, value_name = "SPEC")]
    exclude_outbound_ports_for_uids: Vec<String>,
    /// Redirect DNS to the resolvers of resolv.conf to the DNS proxy.
    #[arg(long)]
    redirect_dns: bool,
    /// Redirect all DNS traffic to the DNS proxy.
    #[arg(long)]
    redirect_all_dns_traffic: bool,
    /// The DNS proxy port.
    #[arg(long, value_name = "PORT")]
    redirect_dns_port: Option<String>,
    /// Do not split DNS conntrack zones (no raw table rules).
    #[arg(long)]
    skip_dns_conntrack_zone_split: bool,
    /// A local virtual network `IFACE:CIDR` whose traffic goes to the outbound listener (repeatable).
    #[arg(long, value_name = "IFACE:CIDR")]
    vnet: Vec<String>,
    /// `dualstack` or `ipv4`.
    #[arg(long, value_name = "MODE")]
    ip_family_mode: Option<String>,
    /// Drop packets in conntrack state INVALID (mangle table).
    #[arg(long)]
    drop_invalid_packets: bool,
    /// Log matching packets with the LOG target.
    #[arg(long)]
    iptables_logs: bool,
    /// Do not add comments to the rules.
    #[arg(long)]
    disable_comments: bool,
    /// Insert the PREROUTING jump at the top instead of appending it.
    #[arg(long)]
    redirect_inbound_insert_instead_of_append: bool,
    /// Insert the OUTPUT jump at the top instead of appending it.
    #[arg(long)]
    redirect_outbound_insert_instead_of_append: bool,
    /// Seconds to wait for the xtables lock (legacy backend; 0 = do not wait).
    #[arg(long, value_name = "SECONDS")]
    wait: Option<u32>,
    /// Microseconds between lock attempts (legacy backend).
    #[arg(long, value_name = "MICROS")]
    wait_interval: Option<u32>,
    /// Retries of a failed iptables-restore.
    #[arg(long, value_name = "N")]
    max_retries: Option<u32>,
    /// Pause between retries (e.g. 2s).
    #[arg(long, value_name = "DURATION")]
    sleep_between_retries: Option<String>,
    /// Kuma transparent-proxy config files (YAML/JSON; comma lists; `-` for stdin); later ones win.
    #[arg(long, value_name = "FILE")]
    config: Vec<String>,
    /// Long option names and section headers in the restore text; print it on install.
    #[arg(long)]
    verbose: bool,
    /// Run the iptables tools inside this network namespace (`ip netns exec NAME`).
    #[arg(long, value_name = "NAME")]
    netns: Option<String>,
}

/// Run the subcommand. Configuration errors exit 2 with one line; operational failures exit 1.
pub(crate) fn run(args: IptablesArgs) -> ExitCode {
    let (action, flags) = match args.action {
        Action::Render(f) => ("render", f),
        Action::Install(f) => ("install", f),
        Action::Uninstall(f) => ("uninstall", f),
        Action::Verify(f) => ("verify", f),
    };
    let config = match flags.config() {
        Ok(c) => c,
        Err(message) => {
            eprintln!("sidecar iptables {action}: {message}");
            return ExitCode::from(2);
        }
    };
    let executor = match &flags.netns {
        Some(ns) => Executor::netns(ns),
        None => Executor::local(),
    };
    let installer = Installer::from_config(&config, executor.clone());
    let result = match action {
        "render" => {
            let sets: Vec<RuleSet> = config.families().iter().map(|f| RuleSet::build(&config, *f)).collect();
            print!("{}", render_dry_run(&sets, config.verbose()));
            Ok(ExitCode::SUCCESS)
        }
        "install" => install(&config, &installer, &executor),
        "uninstall" => uninstall(&config, &installer),
        _ => verify(&config, &installer, &executor),
    };
    result.unwrap_or_else(|e| {
        eprintln!("sidecar iptables {action}: {e}");
        ExitCode::FAILURE
    })
}

type Outcome = Result<ExitCode, Box<dyn std::error::Error>>;

/// The families to touch: IPv6 only when the mode allows it and the host (namespace) has a
/// non-loopback IPv6 address, as kumactl decides.
fn families(config: &Config, executor: &Executor) -> Vec<Family> {
    let mut out = vec![Family::V4];
    if config.ip_family_mode() == IpFamilyMode::DualStack {
        let has_v6 = executor
            .command("cat")
            .arg("/proc/net/if_inet6")
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .any(|l| !l.trim_end().ends_with(" lo"))
            })
            .unwrap_or(false);
        if has_v6 {
            out.push(Family::V6);
        } else {
            eprintln!("sidecar iptables: no IPv6 address besides loopback; IPv6 rules skipped");
        }
    }
    out
}

fn install(config: &Config, installer: &Installer, executor: &Executor) -> Outcome {
    for family in families(config, executor) {
        if family == Family::V6 {
            // Envoy re-originates inbound IPv6 traffic from ::6, which must exist on lo (kumactl does this).
            let _ = executor
                .command("ip")
                .args(["-6", "addr", "replace", "::6/128", "dev", "lo"])
                .status();
        }
        let host = installer.probe_host(family)?;
        let rules = RuleSet::build_with(config, family, &host);
        let report = installer.install(&rules)?;
        if config.verbose() {
            print!("{}", report.script);
        }
        println!(
            "{family}: installed {} rules with the {} backend (replaced {} rules and {} chains)",
            report.added_rules, report.backend, report.removed_rules, report.removed_chains
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn uninstall(config: &Config, installer: &Installer) -> Outcome {
    for family in config.families() {
        let report = installer.uninstall(*family)?;
        println!(
            "{family}: removed {} rules and {} chains",
            report.removed_rules, report.removed_chains
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn verify(config: &Config, installer: &Installer, executor: &Executor) -> Outcome {
    let mut clean = true;
    for family in families(config, executor) {
        let host = installer.probe_host(family)?;
        let report = installer.verify(&RuleSet::build_with(config, family, &host))?;
        println!("{report}");
        clean &= report.is_clean();
    }
    Ok(if clean { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

impl Flags {
    /// Defaults, then the `--config` sources in order, then the flags.
    fn config(&self) -> Result<Config, String> {
        let mut b = Config::builder();
        for source in self
            .config
            .iter()
            .flat_map(|c| c.split(','))
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            let text = if source == "-" {
                let mut s = String::new();
                std::io::stdin()
                    .read_to_string(&mut s)
                    .map_err(|e| format!("--config -: {e}"))?;
                s
            } else {
                std::fs::read_to_string(source).map_err(|e| format!("--config {source}: {e}"))?
            };
            b = b.layer_yaml(&text, source).map_err(|e| e.to_string())?;
        }
        b = self.apply(b).map_err(|e| e.to_string())?;
        if let Some(name) = b.pending_user_name().map(str::to_string) {
            let uid = lookup_uid(&name).ok_or_else(|| format!("--kuma-dp-user: no user `{name}` in /etc/passwd"))?;
            b = b.proxy_uid(uid);
        } else if self.kuma_dp_user.is_none() && self.config.is_empty() && !uid_exists(meshcap::iptables::KUMA_DP_UID) {
            // kumactl's default: UID 5678, else the user `kuma-dp`.
            if let Some(uid) = lookup_uid("kuma-dp") {
                b = b.proxy_uid(uid);
            }
        }
        if b.needs_dns_resolvers() {
            let path = b.resolv_conf_path().unwrap_or("/etc/resolv.conf").to_string();
            let text = std::fs::read_to_string(&path).map_err(|e| format!("--redirect-dns: {path}: {e}"))?;
            b = b.dns_resolvers(parse_resolv_conf(&text));
        }
        b.build().map_err(|e| e.to_string())
    }

    fn apply(&self, mut b: ConfigBuilder) -> Result<ConfigBuilder, meshcap::iptables::ConfigError> {
        if let Some(u) = &self.kuma_dp_user {
            b = b.kuma_dp_user(u);
        }
        if let Some(p) = &self.redirect_inbound_port {
            b = b.redirect_inbound_port(port("--redirect-inbound-port", p)?);
        }
        if let Some(p) = &self.redirect_outbound_port {
            b = b.redirect_outbound_port(port("--redirect-outbound-port", p)?);
        }
        if let Some(on) = self.redirect_inbound {
            b = b.redirect_inbound(on);
        }
        if let Some(l) = &self.exclude_inbound_ports {
            b = b.exclude_inbound_ports(l)?;
        }
        if let Some(l) = &self.exclude_outbound_ports {
            b = b.exclude_outbound_ports(l)?;
        }
        if !self.exclude_inbound_ips.is_empty() {
            b = b.exclude_inbound_ips(&self.exclude_inbound_ips)?;
        }
        if !self.exclude_outbound_ips.is_empty() {
            b = b.exclude_outbound_ips(&self.exclude_outbound_ips)?;
        }
        if !self.exclude_outbound_ports_for_uids.is_empty() {
            b = b.exclude_outbound_ports_for_uids(&self.exclude_outbound_ports_for_uids)?;
        }
        if self.redirect_all_dns_traffic {
            b = b.capture_all_dns();
        }
        if self.redirect_dns {
            // Resolvers are read from resolv.conf once the whole configuration is known.
            b = b.redirect_dns([]);
        }
        if let Some(p) = &self.redirect_dns_port {
            b = b.redirect_dns_port(port("--redirect-dns-port", p)?);
        }
        if self.skip_dns_conntrack_zone_split {
            b = b.skip_dns_conntrack_zone_split(true);
        }
        if !self.vnet.is_empty() {
            b = b.vnets(&self.vnet)?;
        }
        if let Some(m) = &self.ip_family_mode {
            b = b.ip_family_mode(m.parse()?);
        }
        if self.drop_invalid_packets {
            b = b.drop_invalid_packets(true);
        }
        if self.iptables_logs {
            b = b.iptables_logs(true);
        }
        if self.disable_comments {
            b = b.disable_comments(true);
        }
        if self.redirect_inbound_insert_instead_of_append {
            b = b.inbound_insert_instead_of_append(true);
        }
        if self.redirect_outbound_insert_instead_of_append {
            b = b.outbound_insert_instead_of_append(true);
        }
        if let Some(w) = self.wait {
            b = b.wait(w);
        }
        if let Some(w) = self.wait_interval {
            b = b.wait_interval(w);
        }
        if let Some(n) = self.max_retries {
            b = b.max_retries(n);
        }
        if let Some(s) = &self.sleep_between_retries {
            b = b.sleep_between_retries(parse_duration(s)?);
        }
        if self.verbose {
            b = b.verbose(true);
        }
        Ok(b)
    }
}

fn port(option: &'static str, text: &str) -> Result<Port, meshcap::iptables::ConfigError> {
    text.parse::<Port>()
        .map_err(|source| meshcap::iptables::ConfigError::Value { option, source })
}

/// The (user, uid) pairs of /etc/passwd.
fn passwd() -> Vec<(String, u32)> {
    let text = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split(':');
            let user = fields.next()?;
            let uid = fields.nth(1)?.parse::<u32>().ok()?;
            Some((user.to_string(), uid))
        })
        .collect()
}

/// A user's UID from /etc/passwd.
fn lookup_uid(name: &str) -> Option<u32> {
    passwd().into_iter().find(|(user, _)| user == name).map(|(_, uid)| uid)
}

fn uid_exists(uid: u32) -> bool {
    passwd().iter().any(|(_, u)| *u == uid)
}
