//! Kuma's transparent-proxy configuration schema (YAML or JSON, `kumactl … --config FILE`), loaded in
//! layers onto a [`ConfigBuilder`]: a key present in a later source replaces the earlier value, and
//! lists are replaced whole, never merged.

use serde::Deserialize;

use crate::config::{ConfigBuilder, IpFamilyMode, UidExclusion, Vnet, parse_duration};
use crate::error::ConfigError;
use crate::model::LogLevel;
use crate::types::Port;

/// A number or a string (Kuma accepts both for ports and port lists).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Scalar {
    Number(u64),
    Text(String),
}

impl Scalar {
    fn text(&self) -> String {
        match self {
            Scalar::Number(n) => n.to_string(),
            Scalar::Text(s) => s.clone(),
        }
    }
}

/// A port list as Kuma reads it: `[1, "2"]`, `"1,2"` or `1`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum PortsValue {
    List(Vec<Scalar>),
    One(Scalar),
}

impl PortsValue {
    fn text(&self) -> String {
        match self {
            PortsValue::List(v) => v.iter().map(Scalar::text).collect::<Vec<_>>().join(","),
            PortsValue::One(s) => s.text(),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct TrafficFlowLayer {
    enabled: Option<bool>,
    port: Option<Scalar>,
    include_ports: Option<PortsValue>,
    exclude_ports: Option<PortsValue>,
    #[serde(rename = "excludePortsForUIDs")]
    exclude_ports_for_uids: Option<Vec<String>>,
    #[serde(rename = "excludePortsForIPs")]
    exclude_ports_for_ips: Option<Vec<String>>,
    insert_redirect_instead_of_append: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct DnsLayer {
    enabled: Option<bool>,
    port: Option<Scalar>,
    capture_all: Option<bool>,
    skip_conntrack_zone_split: Option<bool>,
    resolv_config_path: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct VnetLayer {
    networks: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RedirectLayer {
    inbound: Option<TrafficFlowLayer>,
    outbound: Option<TrafficFlowLayer>,
    dns: Option<DnsLayer>,
    vnet: Option<VnetLayer>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct LogLayer {
    enabled: Option<bool>,
    level: Option<Scalar>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RetryLayer {
    max_retries: Option<u32>,
    sleep_between_retries: Option<Scalar>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CommentsLayer {
    disabled: Option<bool>,
}

/// One source of Kuma's schema; every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Layer {
    #[serde(rename = "kumaDPUser")]
    kuma_dp_user: Option<Scalar>,
    ip_family_mode: Option<String>,
    redirect: Option<RedirectLayer>,
    drop_invalid_packets: Option<bool>,
    verbose: Option<bool>,
    log: Option<LogLayer>,
    wait: Option<u32>,
    wait_interval: Option<u32>,
    retry: Option<RetryLayer>,
    comments: Option<CommentsLayer>,
    // Accepted for compatibility with Kuma's files; they configure things this crate does not do.
    #[serde(rename = "dryRun")]
    _dry_run: Option<serde::de::IgnoredAny>,
    #[serde(rename = "ebpf")]
    _ebpf: Option<serde::de::IgnoredAny>,
    #[serde(rename = "storeFirewalld")]
    _store_firewalld: Option<serde::de::IgnoredAny>,
    #[serde(rename = "cniMode")]
    _cni_mode: Option<serde::de::IgnoredAny>,
    #[serde(rename = "iptablesExecutables")]
    _iptables_executables: Option<serde::de::IgnoredAny>,
}

fn port(option: &'static str, s: &Scalar) -> Result<Port, ConfigError> {
    s.text()
        .parse::<Port>()
        .map_err(|source| ConfigError::Value { option, source })
}

fn ports(option: &'static str, v: &PortsValue) -> Result<Vec<Port>, ConfigError> {
    let text = v.text();
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    text.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|p| {
            p.parse::<Port>()
                .map_err(|source| ConfigError::Value { option, source })
        })
        .collect()
}

impl ConfigBuilder {
    /// Apply one source of Kuma's transparent-proxy configuration (YAML; JSON is accepted too, being
    /// YAML). Keys present replace earlier values, lists are replaced whole. `source` names the
    /// source in errors (a path, `-`, …).
    ///
    /// `kumaDPUser` may be a name: it then stays pending ([`pending_user_name`](Self::pending_user_name))
    /// until the caller resolves it. `redirect.dns.resolvConfigPath` is only recorded
    /// ([`resolv_conf_path`](Self::resolv_conf_path)): reading it is the caller's job.
    ///
    /// ```
    /// use meshcap_iptables::Config;
    ///
    /// let config = Config::builder()
    ///     .layer_yaml("redirect: {dns: {enabled: true, port: 7777}}", "1.yaml")?
    ///     .layer_yaml(r#"{"redirect": {"dns": {"captureAll": true, "port": 8888}}}"#, "2.json")?
    ///     .build()?;
    /// assert_eq!(config.dns_port().get(), 8888);
    /// # Ok::<(), meshcap_iptables::ConfigError>(())
    /// ```
    pub fn layer_yaml(self, text: &str, source: &str) -> Result<ConfigBuilder, ConfigError> {
        let layer: Layer = if text.trim().is_empty() {
            Layer::default()
        } else {
            serde_saphyr::from_str(text).map_err(|e| ConfigError::Source {
                source_name: source.to_string(),
                message: e.to_string().lines().next().unwrap_or_default().to_lowercase(),
            })?
        };
        self.apply_layer(layer)
    }

    /// The `redirect.dns.resolvConfigPath` of the last source that set one.
    pub fn resolv_conf_path(&self) -> Option<&str> {
        self.resolv_conf_path.as_deref()
    }

    fn apply_layer(mut self, l: Layer) -> Result<ConfigBuilder, ConfigError> {
        if let Some(u) = &l.kuma_dp_user {
            self = self.kuma_dp_user(&u.text());
        }
        if let Some(m) = &l.ip_family_mode {
            self.ip_family_mode = m.parse::<IpFamilyMode>()?;
        }
        if let Some(r) = l.redirect {
            if let Some(i) = r.inbound {
                if let Some(e) = i.enabled {
                    self.inbound_enabled = e;
                }
                if let Some(p) = &i.port {
                    self.inbound_port = port("redirect.inbound.port", p)?;
                }
                if let Some(p) = &i.include_ports {
                    self.inbound_include = ports("redirect.inbound.includePorts", p)?;
                }
                if let Some(p) = &i.exclude_ports {
                    self.inbound_exclude = ports("redirect.inbound.excludePorts", p)?;
                }
                if let Some(u) = i.exclude_ports_for_uids {
                    self.inbound_exclude_uids = u;
                }
                if let Some(ips) = &i.exclude_ports_for_ips {
                    self = self.exclude_inbound_ips(ips)?;
                }
                if let Some(b) = i.insert_redirect_instead_of_append {
                    self.inbound_insert = b;
                }
            }
            if let Some(o) = r.outbound {
                if let Some(e) = o.enabled {
                    self.outbound_enabled = e;
                }
                if let Some(p) = &o.port {
                    self.outbound_port = port("redirect.outbound.port", p)?;
                }
                if let Some(p) = &o.include_ports {
                    self.outbound_include = ports("redirect.outbound.includePorts", p)?;
                }
                if let Some(p) = &o.exclude_ports {
                    self.outbound_exclude = ports("redirect.outbound.excludePorts", p)?;
                }
                if let Some(u) = &o.exclude_ports_for_uids {
                    self.outbound_exclude_uids =
                        u.iter().map(|s| s.parse::<UidExclusion>()).collect::<Result<_, _>>()?;
                }
                if let Some(ips) = &o.exclude_ports_for_ips {
                    self = self.exclude_outbound_ips(ips)?;
                }
                if let Some(b) = o.insert_redirect_instead_of_append {
                    self.outbound_insert = b;
                }
            }
            if let Some(d) = r.dns {
                if let Some(e) = d.enabled {
                    self.dns_enabled = e;
                }
                if let Some(c) = d.capture_all {
                    self.dns_capture_all = c;
                }
                if let Some(p) = &d.port {
                    self.dns_port = port("redirect.dns.port", p)?;
                }
                if let Some(s) = d.skip_conntrack_zone_split {
                    self.dns_skip_zone_split = s;
                }
                if let Some(p) = d.resolv_config_path {
                    self.resolv_conf_path = Some(p);
                }
            }
            if let Some(v) = r.vnet
                && let Some(n) = v.networks
            {
                self.vnets = n.iter().map(|s| s.parse::<Vnet>()).collect::<Result<_, _>>()?;
            }
        }
        if let Some(b) = l.drop_invalid_packets {
            self.drop_invalid = b;
        }
        if let Some(b) = l.verbose {
            self.verbose = b;
        }
        if let Some(log) = l.log {
            if let Some(e) = log.enabled {
                self.log_enabled = e;
            }
            if let Some(level) = &log.level {
                self.log_level = level.text().parse::<LogLevel>().map_err(|source| ConfigError::Value {
                    option: "log.level",
                    source,
                })?;
            }
        }
        if let Some(w) = l.wait {
            self.retry.wait_seconds = w;
        }
        if let Some(w) = l.wait_interval {
            self.retry.wait_interval_micros = w;
        }
        if let Some(r) = l.retry {
            if let Some(n) = r.max_retries {
                self.retry.max_retries = n;
            }
            if let Some(s) = &r.sleep_between_retries {
                self.retry.sleep_between_retries = parse_duration(&s.text())?;
            }
        }
        if let Some(c) = l.comments
            && let Some(d) = c.disabled
        {
            self.comments_disabled = d;
        }
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use crate::{Config, ConfigError, DnsMode};

    #[test]
    fn unknown_keys_and_bad_values_are_errors() {
        let e = Config::builder()
            .layer_yaml("redirect: {dsn: {}}", "x.yaml")
            .unwrap_err();
        assert!(matches!(e, ConfigError::Source { .. }), "{e}");
        assert!(e.to_string().contains("x.yaml"));
        let e = Config::builder()
            .layer_yaml("redirect: {inbound: {excludePorts: [1, 0]}}", "y.yaml")
            .unwrap_err();
        assert!(e.to_string().contains("`0`"), "{e}");
        let e = Config::builder()
            .layer_yaml("redirect: {inbound: {excludePortsForUIDs: ['1']}}", "z.yaml")
            .unwrap()
            .build()
            .unwrap_err();
        assert!(matches!(e, ConfigError::InboundUidExclusion { .. }));
    }

    #[test]
    fn ports_accept_numbers_strings_and_lists() {
        for text in [
            "redirect: {outbound: {excludePorts: [1, '2']}}",
            "redirect: {outbound: {excludePorts: '1,2'}}",
            r#"{"redirect": {"outbound": {"excludePorts": [1, 2]}}}"#,
        ] {
            let c = Config::builder().layer_yaml(text, "t").unwrap().build().unwrap();
            let ports: Vec<u16> = c.outbound().exclude_ports().iter().map(|p| p.get()).collect();
            assert_eq!(ports, [1, 2], "{text}");
        }
    }

    #[test]
    fn later_layers_replace_whole_lists() {
        let c = Config::builder()
            .layer_yaml(
                "redirect: {outbound: {excludePorts: [1, 2, 3]}, dns: {enabled: true}}",
                "1",
            )
            .unwrap()
            .layer_yaml("redirect: {outbound: {excludePorts: [4]}}", "2")
            .unwrap()
            .layer_yaml(
                "retry: {maxRetries: 0, sleepBetweenRetries: 10ms}\nkumaDPUser: 1234\n",
                "3",
            )
            .unwrap()
            .build()
            .unwrap();
        assert_eq!(c.outbound().exclude_ports().len(), 1);
        assert_eq!(c.dns(), &DnsMode::Resolvers(Vec::new()));
        assert_eq!(c.retry().max_retries, 0);
        assert_eq!(c.proxy_uid(), 1234);
    }
}
