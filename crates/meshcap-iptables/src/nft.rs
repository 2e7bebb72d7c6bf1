//! A native nftables rendering of a [`RuleSet`] (`nft -f` input), for hosts that manage nftables
//! directly instead of through iptables-nft. Each iptables table becomes an nftables table of its own
//! (`PREFIX-nat`, …) that is flushed and refilled as a whole, so other tables are never touched.

use std::fmt::Write as _;

use crate::model::{CtState, Log, Match, MultiportDirection, Protocol, Rule, RuleSet, Table, Target};
use crate::types::{Address, Comment, Family, Negatable, PortList, PortRange};

/// The longest rule comment nftables accepts; longer comments (most of Kuma's) are cut.
pub const NFT_COMMENT_MAX: usize = 128;

/// A rule that has no nftables translation here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no nftables translation for `{rule}` in {table}/{chain}: {reason}")]
pub struct NftError {
    /// The table.
    pub table: Table,
    /// The chain.
    pub chain: String,
    /// The rule in iptables-save form.
    pub rule: String,
    /// What cannot be translated.
    pub reason: String,
}

/// The base-chain type, hook and priority of a built-in chain (iptables' priorities as numbers:
/// raw -300, mangle -150, dstnat -100, filter 0, security 50, srcnat 100).
fn hook(table: Table, chain: &str) -> Option<(&'static str, &'static str, i32)> {
    let (kind, priority) = match table {
        Table::Nat => (
            "nat",
            match chain {
                "PREROUTING" | "OUTPUT" => -100,
                _ => 100,
            },
        ),
        Table::Raw => ("filter", -300),
        Table::Mangle => (if chain == "OUTPUT" { "route" } else { "filter" }, -150),
        Table::Filter => ("filter", 0),
        Table::Security => ("filter", 50),
    };
    let hook = match chain {
        "PREROUTING" => "prerouting",
        "INPUT" => "input",
        "FORWARD" => "forward",
        "OUTPUT" => "output",
        "POSTROUTING" => "postrouting",
        _ => return None,
    };
    Some((kind, hook, priority))
}

fn op<T>(n: &Negatable<T>) -> &'static str {
    if n.negated { "!= " } else { "" }
}

fn range(r: PortRange) -> String {
    if r.is_single() {
        r.first().to_string()
    } else {
        format!("{}-{}", r.first(), r.last())
    }
}

fn port_set(list: &PortList) -> String {
    let items: Vec<String> = list.entries().iter().map(|r| range(*r)).collect();
    format!("{{ {} }}", items.join(", "))
}

fn iface(name: &str) -> String {
    match name.strip_suffix('+') {
        Some(prefix) => format!("\"{prefix}*\""),
        None => format!("\"{name}\""),
    }
}

fn addr_key(family: Family) -> &'static str {
    match family {
        Family::V4 => "ip",
        Family::V6 => "ip6",
    }
}

fn address(a: &Address) -> String {
    let c = a.canonical();
    if c.prefix_len() == c.family().max_prefix() {
        c.ip().to_string()
    } else {
        c.to_string()
    }
}

/// The nft expressions of one canonical rule, or why there are none.
fn translate(rule: &Rule, family: Family) -> Result<String, String> {
    let mut parts: Vec<String> = Vec::new();
    let mut comment = None;
    let protocol = rule.matches().iter().find_map(|m| match m {
        Match::Protocol(p) if !p.negated => Some(p.value.clone()),
        _ => None,
    });
    for m in rule.matches() {
        match m {
            Match::Source(a) => parts.push(format!("{} saddr {}{}", addr_key(family), op(a), address(&a.value))),
            Match::Destination(a) => parts.push(format!("{} daddr {}{}", addr_key(family), op(a), address(&a.value))),
            Match::InInterface(i) => parts.push(format!("iifname {}{}", op(i), iface(i.value.as_str()))),
            Match::OutInterface(i) => parts.push(format!("oifname {}{}", op(i), iface(i.value.as_str()))),
            Match::Protocol(p) => match &p.value {
                Protocol::All => {}
                Protocol::Icmpv6 => parts.push(format!("meta l4proto {}ipv6-icmp", op(p))),
                other => parts.push(format!("meta l4proto {}{}", op(p), other.name())),
            },
            Match::Tcp(pm) | Match::Udp(pm) => {
                let proto = if matches!(m, Match::Tcp(_)) { "tcp" } else { "udp" };
                if let Some(s) = &pm.source {
                    parts.push(format!("{proto} sport {}{}", op(s), range(s.value)));
                }
                if let Some(d) = &pm.destination {
                    parts.push(format!("{proto} dport {}{}", op(d), range(d.value)));
                }
            }
            Match::Multiport(Some(mp)) => {
                let proto = match &protocol {
                    Some(Protocol::Tcp) => "tcp",
                    Some(Protocol::Udp) => "udp",
                    Some(Protocol::Sctp) => "sctp",
                    _ => return Err("multiport needs -p tcp, udp or sctp".into()),
                };
                let dir = match mp.direction {
                    MultiportDirection::Source => "sport",
                    MultiportDirection::Destination => "dport",
                    MultiportDirection::Either => return Err("multiport --ports has no single nft field".into()),
                };
                parts.push(format!("{proto} {dir} {}{}", op(&mp.ports), port_set(&mp.ports.value)));
            }
            Match::Owner(u) => {
                let uid = if u.value.is_single() {
                    u.value.first().to_string()
                } else {
                    format!("{}-{}", u.value.first(), u.value.last())
                };
                parts.push(format!("meta skuid {}{uid}", op(u)));
            }
            Match::Conntrack(states) => {
                let names = states
                    .value
                    .iter()
                    .map(|s| match s {
                        CtState::Invalid => Ok("invalid"),
                        CtState::New => Ok("new"),
                        CtState::Established => Ok("established"),
                        CtState::Related => Ok("related"),
                        CtState::Untracked => Ok("untracked"),
                        other => Err(format!("conntrack state {other} is a ct status in nftables")),
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                parts.push(format!("ct state {}{{ {} }}", op(states), names.join(", ")));
            }
            Match::Comment(c) => {
                if c.as_str().contains('"') {
                    return Err("nft comments cannot contain double quotes".into());
                }
                // nftables keeps at most 128 bytes of a rule comment.
                comment = Some(Comment::truncated(c.as_str(), NFT_COMMENT_MAX).as_str().to_string());
            }
            Match::Multiport(None) | Match::DestinationPort(_) | Match::SourcePort(_) => {
                return Err("unattached port option".into());
            }
            Match::Other(o) => return Err(format!("match `{}` is not translated", o.module)),
        }
    }
    match rule.target() {
        None => {}
        Some(Target::Accept) => parts.push("accept".into()),
        Some(Target::Drop) => parts.push("drop".into()),
        Some(Target::Return) => parts.push("return".into()),
        Some(Target::Jump(c)) => parts.push(format!("jump {c}")),
        Some(Target::Goto(c)) => parts.push(format!("goto {c}")),
        Some(Target::Redirect(r)) => match r.to_ports {
            Some(p) => parts.push(format!("redirect to :{}", range(p))),
            None => parts.push("redirect".into()),
        },
        Some(Target::Log(Log { prefix, level })) => {
            let mut s = String::from("log");
            if let Some(p) = prefix {
                if p.contains('"') {
                    return Err("log prefixes cannot contain double quotes".into());
                }
                let _ = write!(s, " prefix \"{p}\"");
            }
            if let Some(l) = level {
                const NAMES: [&str; 8] = ["emerg", "alert", "crit", "err", "warn", "notice", "info", "debug"];
                let _ = write!(s, " level {}", NAMES[usize::from(l.get().min(7))]);
            }
            parts.push(s);
        }
        Some(Target::CtZone(z)) => parts.push(format!("ct zone set {z}")),
        Some(Target::Other(o)) => return Err(format!("target `{}` is not translated", o.name)),
    }
    if let Some(c) = comment {
        parts.push(format!("comment \"{c}\""));
    }
    Ok(parts.join(" "))
}

impl RuleSet {
    /// The rule set as an `nft -f` script: one table per iptables table, named `PREFIX-TABLE` in the
    /// `ip`/`ip6` family, each created if missing, flushed and filled (so applying it twice equals
    /// applying it once, and no other table is touched). Built-in chains become base chains at
    /// iptables' priorities (raw -300, mangle -150, dstnat -100, srcnat 100, …); user chains keep
    /// their names; rules appear in the order the kernel ends up with. Comments are cut to the 128
    /// bytes nftables allows ([`NFT_COMMENT_MAX`]).
    ///
    /// ```
    /// use meshcap_iptables::{Config, Family, RuleSet};
    ///
    /// let nft = RuleSet::build(&Config::default(), Family::V4).render_nft("kuma-mesh")?;
    /// assert!(nft.contains("table ip kuma-mesh-nat {"));
    /// assert!(nft.contains("meta l4proto tcp redirect to :15001"));
    /// # Ok::<(), meshcap_iptables::NftError>(())
    /// ```
    pub fn render_nft(&self, prefix: &str) -> Result<String, NftError> {
        let fam = addr_key(self.family());
        let mut tables: Vec<_> = self.tables().iter().filter(|t| !t.is_empty()).collect();
        tables.sort_by_key(|t| t.table().restore_rank());
        let mut out = String::new();
        for t in &tables {
            let name = format!("{prefix}-{}", t.table());
            let _ = writeln!(out, "add table {fam} {name}");
            let _ = writeln!(out, "flush table {fam} {name}");
        }
        for t in tables {
            let name = format!("{prefix}-{}", t.table());
            let _ = writeln!(out, "table {fam} {name} {{");
            for c in t.chains() {
                let chain = c.name().as_str();
                match hook(t.table(), chain) {
                    Some((kind, hook, priority)) => {
                        let _ = writeln!(out, "\tchain {} {{", chain.to_ascii_lowercase());
                        let _ = writeln!(out, "\t\ttype {kind} hook {hook} priority {priority}; policy accept;");
                    }
                    None => {
                        let _ = writeln!(out, "\tchain {chain} {{");
                    }
                }
                for r in c.effective_rules() {
                    let canonical = r.canonical();
                    let line = translate(&canonical, self.family()).map_err(|reason| NftError {
                        table: t.table(),
                        chain: chain.to_string(),
                        rule: canonical.to_save_args(),
                        reason,
                    })?;
                    let _ = writeln!(out, "\t\t{line}");
                }
                out.push_str("\t}\n");
            }
            out.push_str("}\n");
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use crate::{ChainName, Family, RuleSet, Table};

    #[test]
    fn untranslatable_rules_are_named() {
        let mut rs = RuleSet::new(Family::V4);
        let rule = "-m addrtype --dst-type LOCAL -j RETURN".parse().unwrap();
        rs.append(Table::Nat, &ChainName::new("OUTPUT").unwrap(), rule).unwrap();
        let e = rs.render_nft("x").unwrap_err();
        assert_eq!(e.chain, "OUTPUT");
        assert!(e.to_string().contains("addrtype"), "{e}");
    }
}
