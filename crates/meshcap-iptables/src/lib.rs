//! # meshcap-iptables
//!
//! Kuma's transparent-proxy capture rules as a library: a [`Config`] that mirrors every option of
//! `kumactl install transparent-proxy`, a typed rule model built from it ([`RuleSet::build`]),
//! renderers for iptables-restore input (byte-identical to `kumactl … --dry-run`) and for the
//! canonical `iptables-save` form, a parser of both back into the model, and an [`Installer`] that
//! applies the rules with `iptables-restore --noflush`, removes only its own chains and rules, and
//! puts the previous state back when anything fails.
//!
//! ```
//! use meshcap_iptables::{Config, Family, RuleSet, render_dry_run};
//!
//! let config = Config::builder()
//!     .proxy_uid(5678)
//!     .exclude_inbound_ports("22")?
//!     .capture_all_dns()
//!     .build()?;
//! let v4 = RuleSet::build(&config, Family::V4);
//! let v6 = RuleSet::build(&config, Family::V6);
//!
//! // What `kumactl install transparent-proxy --dry-run` prints.
//! let text = render_dry_run(&[v4.clone(), v6], false);
//! assert!(text.starts_with("### IPv4 ###\n\n* raw\n"));
//!
//! // What `iptables-save` prints once installed, and back.
//! let saved = v4.render_save();
//! assert!(saved.contains("-A KUMA_MESH_INBOUND -p tcp -m comment --comment \"kuma/mesh/transparent/proxy/exclude inbound traffic from port 22 from redirection\" -m tcp --dport 22 -j RETURN\n"));
//! let parsed = meshcap_iptables::parse_save(&saved, Family::V4)?;
//! assert_eq!(parsed.render_save(), saved);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Installing (root, or inside a network namespace through an [`Executor`] prefix such as
//! `ip netns exec NAME`):
//!
//! ```no_run
//! use meshcap_iptables::{Config, Executor, Family, Installer, RuleSet};
//!
//! let config = Config::default();
//! let installer = Installer::new(Executor::netns("pod-1")).with_retry(config.retry());
//! for family in config.families() {
//!     let rules = RuleSet::build(&config, *family);
//!     installer.install(&rules)?;
//!     assert!(installer.verify(&rules)?.is_clean());
//! }
//! # Ok::<(), meshcap_iptables::InstallError>(())
//! ```
//!
//! # Layout
//!
//! * `types` — validated values: [`Port`], [`PortRange`], [`PortList`], [`UidRange`], [`Address`]
//!   (as typed; [`Address::canonical`] is the kernel's network form), [`Interface`], [`ChainName`],
//!   [`Comment`], [`Family`].
//! * `config` — [`Config`] and [`ConfigBuilder`] (Kuma's defaults, kumactl's value syntaxes, typed
//!   [`ConfigError`]s naming the bad value), [`HostFacts`] (what Kuma probes at run time),
//!   [`parse_resolv_conf`]. With the `serde` feature, `config_file` loads Kuma's YAML/JSON schema in
//!   layers (`ConfigBuilder::layer_yaml`).
//! * `model` — [`RuleSet`] → [`TableRules`] → [`ChainRules`] → [`Rule`] ([`Match`]es, [`Target`],
//!   [`Position`]); [`Rule::canonical`] is the form `iptables-save` prints.
//! * `build` — Kuma's rule catalogue ([`RuleSet::build`]); each rule is explained in
//!   `docs/iptables.md`.
//! * `render` — [`RuleSet::render_restore`] (short and verbose), [`RuleSet::render_save`],
//!   [`render_dry_run`].
//! * `parse` — [`Rule`]'s `FromStr`, [`RuleSet::parse`] / [`parse_save`] for restore and save text.
//! * `install` — [`Executor`] (a command prefix), [`Backend`] detection, [`Installer`] with
//!   `install`, `uninstall` and `verify` ([`DriftReport`]).
//! * `nft` — [`RuleSet::render_nft`]: the same rules as a native `nft -f` script in tables of their
//!   own, for hosts managed with nftables directly.
//!
//! # Kuma's quirks
//!
//! Rendering follows Kuma byte for byte for the configurations its goldens cover. Where Kuma's output
//! is wrong, this crate fixes it (none of the fixes changes the output for Kuma's golden parameter
//! sets):
//!
//! * Q2: with `--iptables-logs` and an inserted PREROUTING jump (vnet or insert flag), Kuma's LOG rule
//!   lands after the jump; here it is inserted first.
//! * Q3: with `--redirect-outbound-insert-instead-of-append` and DNS capture, Kuma appends the TCP/53
//!   RETURN after the inserted jump where it never matches; here it is inserted before the jump.
//! * Q5: Kuma redirects vnet DNS to the DNS proxy even when DNS capture is off; here only when on.
//! * Q6: inbound UID exclusions (owner matches cannot see inbound traffic) make Kuma emit a bare
//!   RETURN that disables inbound capture; here they are a [`ConfigError::InboundUidExclusion`].
//! * Q7: more than 15 multiport slots are split over several rules instead of being rejected by the
//!   kernel.
//!
//! Kept as Kuma writes them: `-m udp -p udp` in vnet DNS rules (Q1), outbound port exclusions before
//! the loop-prevention rules (Q4), the `* nat` table header (Q8).
//!
//! # Features
//!
//! * `serde` — load [`Config`] from Kuma's transparent-proxy configuration files (YAML or JSON).
//!
//! Linux only at run time (the installer runs the iptables tools); the model, renderers and parser
//! are portable.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod build;
mod config;
#[cfg(feature = "serde")]
mod config_file;
mod error;
mod install;
mod model;
mod nft;
mod parse;
mod render;
mod safety;
mod types;

pub use config::{
    Config, ConfigBuilder, Direction, DnsMode, ExclusionProtocol, HostFacts, IpFamilyMode, KUMA_CHAIN_PREFIX,
    KUMA_COMMENT_MAX, KUMA_COMMENT_PREFIX, KUMA_DNS_PORT, KUMA_DP_UID, KUMA_INBOUND_PORT, KUMA_OUTBOUND_PORT,
    RetryPolicy, UidExclusion, Vnet, parse_duration, parse_resolv_conf,
};
pub use error::{
    ConfigError, InstallError, Outcome, ParseError, ParseErrorKind, RuleError, SavedRules, Step, ValueError,
};
pub use install::{
    Backend, Drift, DriftReport, Executables, Executor, InstallReport, Installation, Installer, Ownership, Skipped,
    Verification,
};
pub use model::{
    ChainRules, CtState, Log, LogLevel, Match, MultiportDirection, MultiportMatch, OtherMatch, OtherTarget, Policy,
    PortMatch, Position, PositionedRule, Protocol, Redirect, Rule, RuleBuilder, RuleSet, Table, TableRules, Target,
};
pub use nft::{NFT_COMMENT_MAX, NftError};
pub use parse::parse_save;
pub use render::render_dry_run;
pub use safety::{LoopRisk, check_loop_safety};
pub use types::{
    Address, CHAIN_NAME_MAX, COMMENT_MAX, ChainName, Comment, Family, Interface, MULTIPORT_MAX_SLOTS, Negatable, Port,
    PortList, PortRange, UidRange,
};

#[cfg(test)]
mod tests {
    fn send_sync<T: Send + Sync + 'static>() {}

    #[test]
    fn public_types_are_send_and_sync() {
        send_sync::<crate::Config>();
        send_sync::<crate::ConfigBuilder>();
        send_sync::<crate::RuleSet>();
        send_sync::<crate::Rule>();
        send_sync::<crate::Installer>();
        send_sync::<crate::Executor>();
        send_sync::<crate::DriftReport>();
        send_sync::<crate::ConfigError>();
        send_sync::<crate::ParseError>();
        send_sync::<crate::InstallError>();
    }
}
