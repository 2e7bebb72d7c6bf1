//! Loop safety of installed capture rules, without a model: [`check_loop_safety`] follows the nat
//! `OUTPUT` path of an `iptables-save` text the way the kernel would for the proxy's own outbound TCP
//! connections and reports a `REDIRECT` that any of them can reach ([`LoopRisk`]).
//!
//! The walk is conservative. A packet class is "TCP owned by `uid`, leaving through a non-loopback
//! interface towards a non-loopback address, to some destination port", tracked as the set of ports
//! still travelling through the chains. A rule either surely matches the class, surely does not
//! (another protocol, another uid, `-o lo`, a loopback destination), or may match (a destination
//! network, a mark, conntrack state, any match this checker does not model). Only sure matches end
//! the walk (`RETURN`, `ACCEPT`, `DNAT`); a `REDIRECT` that may match is a risk. So `Ok` means no
//! outbound TCP connection of `uid` can be redirected by these rules, and a risk names one port and
//! the rule that would redirect it.

use std::fmt;
use std::net::IpAddr;

use crate::parse::tokenize;

/// Outbound TCP connections of the proxy's uid can be redirected by the installed rules: the proxy
/// would capture its own upstream connections (a loop).
///
/// Returned by [`check_loop_safety`]; the message says which rule redirects, along which chains,
/// which uids the rules do exempt, and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LoopRisk {
    /// The uid that was checked (the one the proxy runs as).
    pub uid: u32,
    /// A destination port whose connections are redirected.
    pub port: u16,
    /// The chains from `OUTPUT` to the one holding the redirect.
    pub chains: Vec<String>,
    /// The redirecting rule as `iptables-save` printed it (`-A CHAIN …`).
    pub rule: String,
    /// The uids (as printed, e.g. `5678` or `100-200`) that the rules exempt from capture for every
    /// outbound TCP connection (owner `RETURN`/`ACCEPT` rules).
    pub exempt_uids: Vec<String>,
}

impl fmt::Display for LoopRisk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "loop risk: outbound tcp connections of uid {} (e.g. to port {}) are redirected by `{}` ({}), so the \
             proxy would capture its own upstream connections; ",
            self.uid,
            self.port,
            self.rule,
            self.chains.join(" -> ")
        )?;
        if self.exempt_uids.is_empty() {
            write!(
                f,
                "no rule exempts any uid (the owner RETURN rule is missing): reinstall the rules with the proxy's uid {}",
                self.uid
            )
        } else if let [only] = self.exempt_uids.as_slice() {
            write!(
                f,
                "the rules exempt uid {only} instead: run the proxy as uid {only} or reinstall the rules for uid {}",
                self.uid
            )
        } else {
            write!(
                f,
                "the rules exempt uids {} instead: run the proxy as one of them or reinstall the rules for uid {}",
                self.exempt_uids.join(", "),
                self.uid
            )
        }
    }
}

impl std::error::Error for LoopRisk {}

/// Check that no outbound TCP connection made by `uid` can be redirected by the nat rules in `save`
/// (the output of `iptables-save` or `ip6tables-save`, any tables, with or without counters).
///
/// This is what a sidecar runs at start-up against the rules of its network namespace, with the uid
/// it runs as: if the owner `RETURN` rule is missing, or the rules were installed for another uid,
/// its upstream connections would be captured again. Rules of other programs are taken into account;
/// lines that cannot be read are treated as rules that may match anything.
///
/// ```
/// use meshcap_iptables::{Config, Family, RuleSet, check_loop_safety};
///
/// let save = RuleSet::build(&Config::default(), Family::V4).render_save();
/// assert!(check_loop_safety(&save, 5678).is_ok());
/// let risk = check_loop_safety(&save, 1000).unwrap_err();
/// assert_eq!(risk.chains, ["OUTPUT", "KUMA_MESH_OUTBOUND", "KUMA_MESH_OUTBOUND_REDIRECT"]);
/// assert_eq!(risk.exempt_uids, ["5678"]);
/// ```
///
/// # Errors
///
/// A [`LoopRisk`] naming the first redirect found.
pub fn check_loop_safety(save: &str, uid: u32) -> Result<(), LoopRisk> {
    let nat = ParsedNat::parse(save);
    let mut walker = Walker {
        nat: &nat,
        uid,
        stack: Vec::new(),
    };
    match walker.walk("OUTPUT", PortSet::all()) {
        Ok(_) => Ok(()),
        Err(found) => Err(LoopRisk {
            uid,
            port: found.port,
            chains: found.chains,
            rule: found.rule,
            exempt_uids: nat.exempt_uids(),
        }),
    }
}

/// Whether a rule matches the probed packet class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// Every packet of the class.
    Yes,
    /// Some, or it cannot tell.
    Maybe,
    /// None.
    No,
}

impl Verdict {
    fn and(self, other: Verdict) -> Verdict {
        match (self, other) {
            (Verdict::No, _) | (_, Verdict::No) => Verdict::No,
            (Verdict::Maybe, _) | (_, Verdict::Maybe) => Verdict::Maybe,
            _ => Verdict::Yes,
        }
    }

    fn negate_if(self, negated: bool) -> Verdict {
        match (self, negated) {
            (Verdict::Yes, true) => Verdict::No,
            (Verdict::No, true) => Verdict::Yes,
            (v, _) => v,
        }
    }
}

/// A set of TCP destination ports (1–65535; nobody connects to port 0) as sorted, disjoint,
/// inclusive ranges.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PortSet(Vec<(u16, u16)>);

impl PortSet {
    fn all() -> PortSet {
        PortSet(vec![(1, u16::MAX)])
    }

    fn empty() -> PortSet {
        PortSet(Vec::new())
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn from_ranges(ranges: Vec<(u16, u16)>) -> PortSet {
        let mut ranges: Vec<(u16, u16)> = ranges
            .into_iter()
            .filter(|&(_, b)| b >= 1)
            .map(|(a, b)| (a.max(1), b))
            .collect();
        ranges.sort_unstable();
        let mut out: Vec<(u16, u16)> = Vec::new();
        for (a, b) in ranges {
            match out.last_mut() {
                Some(last) if u32::from(a) <= u32::from(last.1) + 1 => last.1 = last.1.max(b),
                _ => out.push((a, b)),
            }
        }
        PortSet(out)
    }

    fn union(&self, other: &PortSet) -> PortSet {
        PortSet::from_ranges(self.0.iter().chain(other.0.iter()).copied().collect())
    }

    fn intersect(&self, other: &PortSet) -> PortSet {
        let mut out = Vec::new();
        for &(a, b) in &self.0 {
            for &(c, d) in &other.0 {
                let (lo, hi) = (a.max(c), b.min(d));
                if lo <= hi {
                    out.push((lo, hi));
                }
            }
        }
        PortSet::from_ranges(out)
    }

    fn complement(&self) -> PortSet {
        let mut out = Vec::new();
        let mut next: u32 = 1;
        for &(a, b) in &self.0 {
            if u32::from(a) > next {
                out.push((next as u16, a - 1));
            }
            next = u32::from(b) + 1;
        }
        if next <= u32::from(u16::MAX) {
            out.push((next as u16, u16::MAX));
        }
        PortSet(out)
    }

    fn minus(&self, other: &PortSet) -> PortSet {
        self.intersect(&other.complement())
    }

    /// A port to name in a report: 80 or 443 when present, else the lowest one.
    fn example(&self) -> u16 {
        for p in [80, 443] {
            if self.0.iter().any(|&(a, b)| a <= p && p <= b) {
                return p;
            }
        }
        self.0.first().map(|&(a, _)| a).unwrap_or(0)
    }
}

/// What a rule does with a matching packet.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Action {
    Return,
    /// ACCEPT, DNAT, NETMAP: the nat table is done with the packet.
    Terminate,
    Redirect,
    Jump(String),
    Goto(String),
    /// LOG, MARK, CT and other targets that let the packet continue.
    Continue,
}

/// One rule, decided for the probed uid.
#[derive(Debug)]
struct NatRule {
    chain: String,
    text: String,
    verdict: Verdict,
    /// The destination ports it applies to.
    ports: PortSet,
    target: Option<String>,
}

/// The chains and rules of the nat block of a save text, in order.
#[derive(Debug, Default)]
struct ParsedNat {
    chains: Vec<String>,
    rules: Vec<ParsedRule>,
}

impl ParsedNat {
    /// Read the nat block of `save`; every rule's conditions are summarised (see [`Conditions`]) and
    /// decided for a uid later.
    fn parse(save: &str) -> ParsedNat {
        let mut in_nat = false;
        let mut out = ParsedNat::default();
        for raw in save.lines() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Some(table) = line.strip_prefix('*') {
                in_nat = table.trim() == "nat";
                continue;
            }
            if !in_nat {
                continue;
            }
            if line == "COMMIT" {
                in_nat = false;
                continue;
            }
            if let Some(decl) = line.strip_prefix(':') {
                if let Some(name) = decl.split_whitespace().next() {
                    out.chains.push(name.to_string());
                }
                continue;
            }
            let body = match line.strip_prefix('[') {
                Some(rest) => rest.split_once(']').map(|(_, r)| r.trim_start()).unwrap_or(line),
                None => line,
            };
            let toks = tokenize(body).unwrap_or_else(|_| body.split_whitespace().map(str::to_string).collect());
            let mut it = toks.into_iter();
            match it.next().as_deref() {
                Some("-A" | "--append") => {}
                Some("-N" | "--new-chain") => {
                    if let Some(name) = it.next() {
                        out.chains.push(name);
                    }
                    continue;
                }
                _ => continue,
            }
            let Some(chain) = it.next() else { continue };
            out.rules.push(ParsedRule {
                chain,
                text: body.to_string(),
                conditions: Conditions::parse(it.collect()),
            });
        }
        out
    }
}

#[derive(Debug)]
struct ParsedRule {
    chain: String,
    text: String,
    conditions: Conditions,
}

/// The conditions of a rule that matter for outbound TCP of one uid.
#[derive(Debug, Default)]
struct Conditions {
    /// Everything but owner and port matches, already decided (they do not depend on the uid).
    fixed: Option<Verdict>,
    /// `--uid-owner` matches: (negated, value).
    owners: Vec<(bool, String)>,
    /// `--dport`/`--dports` matches: (negated, ports).
    ports: Vec<(bool, PortSet)>,
    target: Option<String>,
}

impl Conditions {
    fn parse(toks: Vec<String>) -> Conditions {
        let mut c = Conditions::default();
        let mut fixed = Verdict::Yes;
        let mut negated = false;
        let mut i = 0;
        while i < toks.len() {
            let tok = toks[i].as_str();
            let value = toks.get(i + 1).map(String::as_str);
            let mut used = 2;
            match tok {
                "!" => {
                    negated = true;
                    i += 1;
                    continue;
                }
                "-j" | "--jump" | "-g" | "--goto" => {
                    if let Some(v) = value {
                        c.target = Some(if tok.starts_with("-g") || tok == "--goto" {
                            format!("goto:{v}")
                        } else {
                            v.to_string()
                        });
                    }
                    break;
                }
                "-p" | "--protocol" => {
                    let v = match value.map(str::to_ascii_lowercase).as_deref() {
                        Some("tcp" | "6" | "all" | "0") => Verdict::Yes,
                        Some(_) => Verdict::No,
                        None => Verdict::Maybe,
                    };
                    fixed = fixed.and(v.negate_if(negated));
                }
                "-d" | "--destination" | "--dst" => {
                    let v = match value.and_then(network) {
                        Some((_, 0)) => Verdict::Yes,
                        Some((ip, len)) if is_loopback_net(ip, len) => Verdict::No,
                        _ => Verdict::Maybe,
                    };
                    fixed = fixed.and(v.negate_if(negated));
                }
                "-o" | "--out-interface" => {
                    let v = match value {
                        Some("lo") => Verdict::No,
                        Some("+") => Verdict::Yes,
                        _ => Verdict::Maybe,
                    };
                    fixed = fixed.and(v.negate_if(negated));
                }
                "-m" | "--match" => {
                    if !matches!(value, Some("tcp" | "multiport" | "owner" | "comment")) {
                        fixed = fixed.and(Verdict::Maybe);
                    }
                }
                "--comment" => {}
                "--uid-owner" => match value {
                    Some(v) => c.owners.push((negated, v.to_string())),
                    None => fixed = fixed.and(Verdict::Maybe),
                },
                "--dport" | "--destination-port" | "--dports" | "--destination-ports" => match value.and_then(ports) {
                    Some(p) => c.ports.push((negated, p)),
                    None => fixed = fixed.and(Verdict::Maybe),
                },
                _ => {
                    // Any other option (source, input interface, marks, conntrack, ...): it may or may
                    // not match. Its values are skipped up to the next option.
                    fixed = fixed.and(Verdict::Maybe);
                    used = 1;
                    while toks
                        .get(i + used)
                        .is_some_and(|t| !t.starts_with('-') && t.as_str() != "!")
                    {
                        used += 1;
                    }
                }
            }
            negated = false;
            i += used;
        }
        c.fixed = Some(fixed);
        c
    }

    fn fixed(&self) -> Verdict {
        self.fixed.unwrap_or(Verdict::Maybe)
    }

    fn owner_verdict(&self, uid: u32) -> Verdict {
        self.owners.iter().fold(Verdict::Yes, |acc, (negated, value)| {
            let v = match uid_range(value) {
                Some((a, b)) if a <= uid && uid <= b => Verdict::Yes,
                Some(_) => Verdict::No,
                None => Verdict::Maybe,
            };
            acc.and(v.negate_if(*negated))
        })
    }

    fn port_set(&self) -> PortSet {
        self.ports.iter().fold(PortSet::all(), |acc, (negated, p)| {
            let p = if *negated { p.complement() } else { p.clone() };
            acc.intersect(&p)
        })
    }
}

impl ParsedNat {
    /// The uids that rules exempt from capture for every outbound TCP connection.
    fn exempt_uids(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for r in &self.rules {
            let c = &r.conditions;
            let full = c.fixed() == Verdict::Yes && c.port_set() == PortSet::all();
            let returns = matches!(c.target.as_deref(), Some("RETURN" | "ACCEPT"));
            if full && returns {
                for (negated, value) in &c.owners {
                    if !negated && !out.contains(value) {
                        out.push(value.clone());
                    }
                }
            }
        }
        out
    }

    fn rule(&self, r: &ParsedRule, uid: u32) -> NatRule {
        let c = &r.conditions;
        NatRule {
            chain: r.chain.clone(),
            text: format!("-A {} {}", r.chain, rest_of(&r.text)),
            verdict: c.fixed().and(c.owner_verdict(uid)),
            ports: c.port_set(),
            target: c.target.clone(),
        }
    }
}

/// The text of a rule line after `-A CHAIN`.
fn rest_of(text: &str) -> &str {
    let mut parts = text.splitn(3, char::is_whitespace);
    let _ = parts.next();
    let _ = parts.next();
    parts.next().unwrap_or("").trim_start()
}

fn network(text: &str) -> Option<(IpAddr, u8)> {
    let (addr, len) = match text.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (text, None),
    };
    let ip: IpAddr = addr.parse().ok()?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len = match len {
        Some(l) => l.parse::<u8>().ok().filter(|l| *l <= max)?,
        None => max,
    };
    Some((ip, len))
}

/// Whether every address of the network is a loopback address.
fn is_loopback_net(ip: IpAddr, len: u8) -> bool {
    match ip {
        IpAddr::V4(v4) => len >= 8 && v4.octets()[0] == 127,
        IpAddr::V6(v6) => len == 128 && v6.is_loopback(),
    }
}

fn uid_range(text: &str) -> Option<(u32, u32)> {
    match text.split_once('-') {
        Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
        None => {
            let n = text.parse().ok()?;
            Some((n, n))
        }
    }
}

/// `80`, `80:90`, `53,3000:5000` (multiport lists).
fn ports(text: &str) -> Option<PortSet> {
    let mut ranges = Vec::new();
    for part in text.split(',') {
        let (a, b) = match part.split_once(':') {
            Some((a, b)) => (
                if a.is_empty() { 0 } else { a.parse().ok()? },
                if b.is_empty() { u16::MAX } else { b.parse().ok()? },
            ),
            None => {
                let p = part.parse().ok()?;
                (p, p)
            }
        };
        ranges.push((a.min(b), a.max(b)));
    }
    Some(PortSet::from_ranges(ranges))
}

struct Found {
    port: u16,
    chains: Vec<String>,
    rule: String,
}

struct Walker<'a> {
    nat: &'a ParsedNat,
    uid: u32,
    stack: Vec<String>,
}

impl Walker<'_> {
    /// Follow `chain` with the ports in `live`; returns the ports that come back to the caller.
    fn walk(&mut self, chain: &str, mut live: PortSet) -> Result<PortSet, Found> {
        if self.stack.iter().any(|c| c == chain) {
            // A loop between chains: iptables refuses these; treat the jump as returning.
            return Ok(live);
        }
        self.stack.push(chain.to_string());
        let mut returned = PortSet::empty();
        let nat = self.nat;
        for parsed in nat.rules.iter().filter(|r| r.chain == chain) {
            if live.is_empty() {
                break;
            }
            let rule = nat.rule(parsed, self.uid);
            if rule.verdict == Verdict::No {
                continue;
            }
            let hit = live.intersect(&rule.ports);
            if hit.is_empty() {
                continue;
            }
            let sure = rule.verdict == Verdict::Yes;
            match action(rule.target.as_deref(), &nat.chains) {
                Action::Return => {
                    returned = returned.union(&hit);
                    if sure {
                        live = live.minus(&hit);
                    }
                }
                Action::Terminate => {
                    if sure {
                        live = live.minus(&hit);
                    }
                }
                Action::Redirect => {
                    let mut chains = self.stack.clone();
                    if chains.last().map(String::as_str) != Some(rule.chain.as_str()) {
                        chains.push(rule.chain.clone());
                    }
                    return Err(Found {
                        port: hit.example(),
                        chains,
                        rule: rule.text,
                    });
                }
                Action::Jump(target) => {
                    let back = self.walk(&target, hit.clone())?;
                    if sure {
                        live = live.minus(&hit).union(&back);
                    }
                }
                Action::Goto(target) => {
                    let back = self.walk(&target, hit.clone())?;
                    returned = returned.union(&back);
                    if sure {
                        live = live.minus(&hit);
                    }
                }
                Action::Continue => {}
            }
        }
        self.stack.pop();
        Ok(returned.union(&live))
    }
}

fn action(target: Option<&str>, chains: &[String]) -> Action {
    match target {
        None => Action::Continue,
        Some(t) => {
            if let Some(chain) = t.strip_prefix("goto:") {
                return Action::Goto(chain.to_string());
            }
            match t {
                "RETURN" => Action::Return,
                "ACCEPT" | "DNAT" | "NETMAP" | "DROP" | "REJECT" => Action::Terminate,
                "REDIRECT" => Action::Redirect,
                _ if chains.iter().any(|c| c == t) => Action::Jump(t.to_string()),
                _ => Action::Continue,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_sets() {
        let a = PortSet::from_ranges(vec![(10, 20), (15, 30), (40, 40), (31, 35)]);
        assert_eq!(a, PortSet(vec![(10, 35), (40, 40)]));
        assert_eq!(a.complement(), PortSet(vec![(1, 9), (36, 39), (41, u16::MAX)]));
        assert_eq!(a.complement().complement(), a);
        assert_eq!(PortSet::all().minus(&PortSet::all()), PortSet::empty());
        assert_eq!(PortSet::all().minus(&a).intersect(&a), PortSet::empty());
        assert_eq!(ports("53,3000:5000"), Some(PortSet(vec![(53, 53), (3000, 5000)])));
        assert_eq!(ports("x"), None);
        assert_eq!(PortSet::all().example(), 80);
        assert_eq!(PortSet(vec![(1, 9)]).example(), 1);
        assert_eq!(PortSet::from_ranges(vec![(0, 0)]), PortSet::empty());
        assert_eq!(ports(":5"), Some(PortSet(vec![(1, 5)])));
    }

    #[test]
    fn loopback_networks() {
        assert!(is_loopback_net("127.0.0.1".parse().unwrap(), 32));
        assert!(is_loopback_net("127.0.0.0".parse().unwrap(), 8));
        assert!(!is_loopback_net("127.0.0.0".parse().unwrap(), 7));
        assert!(is_loopback_net("::1".parse().unwrap(), 128));
        assert!(!is_loopback_net("::6".parse().unwrap(), 128));
        assert_eq!(network("10.0.0.0/8"), Some(("10.0.0.0".parse().unwrap(), 8)));
        assert_eq!(network("fd00::1"), Some(("fd00::1".parse().unwrap(), 128)));
        assert_eq!(network("10.0.0.0/33"), None);
    }
}
