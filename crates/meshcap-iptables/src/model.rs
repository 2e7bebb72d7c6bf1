//! The typed rule model: [`RuleSet`] → [`TableRules`] → [`ChainRules`] → [`Rule`] (typed [`Match`]es, a
//! [`Target`], positions).
//!
//! A [`Rule`] keeps its matches in the order they are written on the command line, because Kuma's
//! restore files depend on it (`-p tcp -o lo ! -d 127.0.0.1/32 …`). [`Rule::canonical`] gives the form
//! the kernel stores and `iptables-save` prints: basic matches first (`-s -d -i -o -p`), extension
//! matches in load order, bare `--dport`/`--sport` options attached to the match that takes them, and
//! addresses reduced to networks.

use std::fmt;
use std::num::NonZeroU32;
use std::str::FromStr;

use crate::error::{RuleError, ValueError};
use crate::types::{Address, ChainName, Comment, Family, Interface, Negatable, PortList, PortRange, UidRange};

/// An iptables table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Table {
    /// `raw`: before connection tracking (Kuma: DNS conntrack zones).
    Raw,
    /// `mangle` (Kuma: drop invalid packets).
    Mangle,
    /// `nat` (Kuma: all redirection).
    Nat,
    /// `filter` (never touched by Kuma).
    Filter,
    /// `security`.
    Security,
}

impl Table {
    /// The table name.
    pub fn name(self) -> &'static str {
        match self {
            Table::Raw => "raw",
            Table::Mangle => "mangle",
            Table::Nat => "nat",
            Table::Filter => "filter",
            Table::Security => "security",
        }
    }

    /// The built-in chains of the table, in the order `iptables-save` declares them.
    pub fn builtin_chains(self) -> &'static [&'static str] {
        match self {
            Table::Raw => &["PREROUTING", "OUTPUT"],
            Table::Mangle => &["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"],
            Table::Nat => &["PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"],
            Table::Filter | Table::Security => &["INPUT", "FORWARD", "OUTPUT"],
        }
    }

    /// Whether `chain` is a built-in chain of this table.
    pub fn has_builtin(self, chain: &str) -> bool {
        self.builtin_chains().contains(&chain)
    }

    /// Position in Kuma's restore files (raw, nat, mangle, then the others).
    pub(crate) fn restore_rank(self) -> u8 {
        match self {
            Table::Raw => 0,
            Table::Nat => 1,
            Table::Mangle => 2,
            Table::Filter => 3,
            Table::Security => 4,
        }
    }

    /// Position in `iptables-nft-save` 1.8.9 output (mangle, security, raw, filter, nat).
    pub(crate) fn save_rank(self) -> u8 {
        match self {
            Table::Mangle => 0,
            Table::Security => 1,
            Table::Raw => 2,
            Table::Filter => 3,
            Table::Nat => 4,
        }
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Table {
    type Err = String;

    fn from_str(s: &str) -> Result<Table, String> {
        Ok(match s {
            "raw" => Table::Raw,
            "mangle" => Table::Mangle,
            "nat" => Table::Nat,
            "filter" => Table::Filter,
            "security" => Table::Security,
            other => return Err(other.to_string()),
        })
    }
}

/// The policy of a built-in chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Policy {
    /// `ACCEPT`.
    Accept,
    /// `DROP`.
    Drop,
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Policy::Accept => "ACCEPT",
            Policy::Drop => "DROP",
        })
    }
}

/// A layer-4 protocol for `-p`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Protocol {
    /// `tcp`.
    Tcp,
    /// `udp`.
    Udp,
    /// `icmp`.
    Icmp,
    /// `ipv6-icmp` (iptables-save's name for ICMPv6).
    Icmpv6,
    /// `sctp`.
    Sctp,
    /// `all`.
    All,
    /// Any other name or number, as written.
    Other(String),
}

impl Protocol {
    /// The name iptables prints.
    pub fn name(&self) -> &str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Icmp => "icmp",
            Protocol::Icmpv6 => "ipv6-icmp",
            Protocol::Sctp => "sctp",
            Protocol::All => "all",
            Protocol::Other(s) => s,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Protocol {
    type Err = ValueError;

    fn from_str(s: &str) -> Result<Protocol, ValueError> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "tcp" | "6" => Protocol::Tcp,
            "udp" | "17" => Protocol::Udp,
            "icmp" | "1" => Protocol::Icmp,
            "ipv6-icmp" | "icmpv6" | "58" => Protocol::Icmpv6,
            "sctp" | "132" => Protocol::Sctp,
            "all" | "0" => Protocol::All,
            _ if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') => {
                Protocol::Other(s.to_string())
            }
            _ => return Err(ValueError::Protocol { value: s.to_string() }),
        })
    }
}

/// A connection-tracking state for `-m conntrack --ctstate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum CtState {
    /// `INVALID`.
    Invalid,
    /// `NEW`.
    New,
    /// `RELATED`.
    Related,
    /// `ESTABLISHED`.
    Established,
    /// `UNTRACKED`.
    Untracked,
    /// `SNAT`.
    Snat,
    /// `DNAT`.
    Dnat,
}

impl CtState {
    fn name(self) -> &'static str {
        match self {
            CtState::Invalid => "INVALID",
            CtState::New => "NEW",
            CtState::Related => "RELATED",
            CtState::Established => "ESTABLISHED",
            CtState::Untracked => "UNTRACKED",
            CtState::Snat => "SNAT",
            CtState::Dnat => "DNAT",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<CtState> {
        Some(match s {
            "INVALID" => CtState::Invalid,
            "NEW" => CtState::New,
            "RELATED" => CtState::Related,
            "ESTABLISHED" => CtState::Established,
            "UNTRACKED" => CtState::Untracked,
            "SNAT" => CtState::Snat,
            "DNAT" => CtState::Dnat,
            _ => return None,
        })
    }
}

impl fmt::Display for CtState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A syslog level 0–7 for the `LOG` target (4, `warning`, is iptables' default).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LogLevel(u8);

impl LogLevel {
    /// `debug` (7), Kuma's default.
    pub const DEBUG: LogLevel = LogLevel(7);
    /// `warning` (4), iptables' default (omitted by `iptables-save`).
    pub const WARNING: LogLevel = LogLevel(4);

    /// A level from its number; error above 7.
    pub fn new(level: u8) -> Result<LogLevel, ValueError> {
        if level > 7 {
            return Err(ValueError::LogLevel {
                value: level.to_string(),
            });
        }
        Ok(LogLevel(level))
    }

    /// The number.
    pub fn get(self) -> u8 {
        self.0
    }
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Parses a number 0–7 or a syslog name (`emerg` … `debug`).
impl FromStr for LogLevel {
    type Err = ValueError;

    fn from_str(s: &str) -> Result<LogLevel, ValueError> {
        const NAMES: [&str; 8] = ["emerg", "alert", "crit", "error", "warning", "notice", "info", "debug"];
        if let Some(i) = NAMES.iter().position(|n| n.eq_ignore_ascii_case(s)) {
            return Ok(LogLevel(i as u8));
        }
        if s.eq_ignore_ascii_case("panic") {
            return Ok(LogLevel(0));
        }
        if s.eq_ignore_ascii_case("warn") {
            return Ok(LogLevel(4));
        }
        s.parse::<u8>()
            .ok()
            .and_then(|n| LogLevel::new(n).ok())
            .ok_or_else(|| ValueError::LogLevel { value: s.to_string() })
    }
}

/// The port options of a `tcp` or `udp` match.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct PortMatch {
    /// `--sport`.
    pub source: Option<Negatable<PortRange>>,
    /// `--dport`.
    pub destination: Option<Negatable<PortRange>>,
}

/// Which ports a `multiport` match looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MultiportDirection {
    /// `--sports`.
    Source,
    /// `--dports`.
    Destination,
    /// `--ports` (either).
    Either,
}

impl MultiportDirection {
    pub(crate) fn option(self) -> &'static str {
        match self {
            MultiportDirection::Source => "--sports",
            MultiportDirection::Destination => "--dports",
            MultiportDirection::Either => "--ports",
        }
    }
}

/// The ports of a `multiport` match (at most 15 slots; a range takes two).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MultiportMatch {
    /// Source, destination or either.
    pub direction: MultiportDirection,
    /// The ports, optionally negated.
    pub ports: Negatable<PortList>,
}

/// A match module this model does not type, kept verbatim: `-m NAME ARGS…`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OtherMatch {
    /// The module name.
    pub module: String,
    /// Its options, one token each (`!` is a token).
    pub args: Vec<String>,
}

/// One match of a rule, in command-line order.
///
/// `-s`, `-d`, `-i`, `-o` and `-p` are the basic matches; the rest are extension matches (`-m NAME`).
/// [`Match::DestinationPort`] and [`Match::SourcePort`] are *bare* `--dport`/`--sport` options, the way
/// Kuma writes `-p tcp --dport 53`: iptables hands them to the earliest loaded `tcp`/`udp` match, else
/// to a `multiport` match still without ports (`-m multiport -p tcp --dport 1,2`), else it loads the
/// protocol's own match at that point. [`Rule::canonical`] performs that attachment.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Match {
    /// `-s ADDR`.
    Source(Negatable<Address>),
    /// `-d ADDR`.
    Destination(Negatable<Address>),
    /// `-i IFACE`.
    InInterface(Negatable<Interface>),
    /// `-o IFACE`.
    OutInterface(Negatable<Interface>),
    /// `-p PROTO`.
    Protocol(Negatable<Protocol>),
    /// A bare `--dport PORTS` (see the type docs).
    DestinationPort(Negatable<PortList>),
    /// A bare `--sport PORTS` (see the type docs).
    SourcePort(Negatable<PortList>),
    /// `-m tcp [--sport P] [--dport P]`.
    Tcp(PortMatch),
    /// `-m udp [--sport P] [--dport P]`.
    Udp(PortMatch),
    /// `-m multiport [--dports L]`; `None` until a later bare `--dport` supplies the ports.
    Multiport(Option<MultiportMatch>),
    /// `-m owner [!] --uid-owner UIDS`.
    Owner(Negatable<UidRange>),
    /// `-m conntrack [!] --ctstate S[,S…]`.
    Conntrack(Negatable<Vec<CtState>>),
    /// `-m comment --comment TEXT`.
    Comment(Comment),
    /// Any other match module, verbatim.
    Other(OtherMatch),
}

impl Match {
    /// `-p tcp`.
    pub fn tcp() -> Match {
        Match::Protocol(Negatable::is(Protocol::Tcp))
    }

    /// `-p udp`.
    pub fn udp() -> Match {
        Match::Protocol(Negatable::is(Protocol::Udp))
    }

    /// A bare `--dport PORT` (after `-p tcp|udp`).
    pub fn dport(ports: impl Into<PortRange>) -> Match {
        Match::DestinationPort(Negatable::is(PortList::single(ports.into())))
    }

    /// A bare `--sport PORT` (after `-p tcp|udp`).
    pub fn sport(ports: impl Into<PortRange>) -> Match {
        Match::SourcePort(Negatable::is(PortList::single(ports.into())))
    }

    /// `-m owner --uid-owner UID`.
    pub fn uid_owner(uid: UidRange) -> Match {
        Match::Owner(Negatable::is(uid))
    }

    /// `-m owner ! --uid-owner UID`.
    pub fn not_uid_owner(uid: UidRange) -> Match {
        Match::Owner(Negatable::not(uid))
    }

    fn is_basic(&self) -> bool {
        matches!(
            self,
            Match::Source(_)
                | Match::Destination(_)
                | Match::InInterface(_)
                | Match::OutInterface(_)
                | Match::Protocol(_)
        )
    }

    fn basic_rank(&self) -> usize {
        match self {
            Match::Source(_) => 0,
            Match::Destination(_) => 1,
            Match::InInterface(_) => 2,
            Match::OutInterface(_) => 3,
            _ => 4,
        }
    }

    fn basic_option(&self) -> &'static str {
        match self {
            Match::Source(_) => "-s",
            Match::Destination(_) => "-d",
            Match::InInterface(_) => "-i",
            Match::OutInterface(_) => "-o",
            _ => "-p",
        }
    }

    fn addresses(&self) -> Option<Address> {
        match self {
            Match::Source(a) | Match::Destination(a) => Some(a.value),
            _ => None,
        }
    }
}

/// The `REDIRECT` target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Redirect {
    /// `--to-ports`; `None` keeps the original port.
    pub to_ports: Option<PortRange>,
}

/// The `LOG` target.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Log {
    /// `--log-prefix` (at most 29 characters in the kernel).
    pub prefix: Option<String>,
    /// `--log-level`; `None` is the default, warning (4).
    pub level: Option<LogLevel>,
}

/// A target this model does not type, kept verbatim: `-j NAME ARGS…`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OtherTarget {
    /// The target name.
    pub name: String,
    /// Its options, one token each.
    pub args: Vec<String>,
}

/// What a rule does with a matching packet.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Target {
    /// `-j ACCEPT`.
    Accept,
    /// `-j DROP`.
    Drop,
    /// `-j RETURN`.
    Return,
    /// `-j CHAIN`: continue in a user-defined chain.
    Jump(ChainName),
    /// `-g CHAIN`: go to a user-defined chain without returning here.
    Goto(ChainName),
    /// `-j REDIRECT [--to-ports P]` (nat only).
    Redirect(Redirect),
    /// `-j LOG …`.
    Log(Log),
    /// `-j CT --zone N` (raw only).
    CtZone(u16),
    /// Any other target, verbatim.
    Other(OtherTarget),
}

impl Target {
    /// `-j REDIRECT --to-ports PORT`.
    pub fn redirect_to(port: crate::Port) -> Target {
        Target::Redirect(Redirect {
            to_ports: Some(PortRange::single(port)),
        })
    }

    /// The chain this target continues in, for `-j CHAIN` and `-g CHAIN`.
    pub fn chain(&self) -> Option<&ChainName> {
        match self {
            Target::Jump(c) | Target::Goto(c) => Some(c),
            _ => None,
        }
    }

    fn canonical(&self) -> Target {
        match self {
            Target::Log(Log { prefix, level }) => Target::Log(Log {
                prefix: prefix.clone().filter(|p| !p.is_empty()),
                level: level.filter(|l| *l != LogLevel::WARNING),
            }),
            other => other.clone(),
        }
    }
}

/// One rule: matches in command-line order, then an optional target.
///
/// Built with [`Rule::builder`] or parsed with [`FromStr`] (the text after `-A CHAIN`, in either
/// iptables-restore or iptables-save spelling). A `Rule` is always a combination iptables accepts
/// (ports attach to a match, multiport lists fit, at most one of each basic match), so
/// [`canonical`](Rule::canonical) cannot fail.
///
/// ```
/// use meshcap_iptables::{Match, Rule, Target};
///
/// let rule: Rule = r#"-m comment --comment "hi" -p udp --dport 53 -j RETURN"#.parse()?;
/// assert_eq!(rule.comment().map(|c| c.as_str()), Some("hi"));
/// assert_eq!(rule.target(), Some(&Target::Return));
/// assert_eq!(
///     rule.canonical().to_save_args(),
///     r#"-p udp -m comment --comment hi -m udp --dport 53 -j RETURN"#
/// );
/// # Ok::<(), meshcap_iptables::ParseError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Rule {
    pub(crate) matches: Vec<Match>,
    pub(crate) target: Option<Target>,
}

impl Rule {
    /// Start building a rule.
    pub fn builder() -> RuleBuilder {
        RuleBuilder::default()
    }

    /// The matches, in command-line order.
    pub fn matches(&self) -> &[Match] {
        &self.matches
    }

    /// The target, if the rule has one.
    pub fn target(&self) -> Option<&Target> {
        self.target.as_ref()
    }

    /// The first comment of the rule.
    pub fn comment(&self) -> Option<&Comment> {
        self.matches.iter().find_map(|m| match m {
            Match::Comment(c) => Some(c),
            _ => None,
        })
    }

    /// The same rule without comment matches.
    pub fn without_comments(&self) -> Rule {
        Rule {
            matches: self
                .matches
                .iter()
                .filter(|m| !matches!(m, Match::Comment(_)))
                .cloned()
                .collect(),
            target: self.target.clone(),
        }
    }

    /// The form the kernel keeps and `iptables-save` prints: basic matches in the order `-s -d -i -o
    /// -p`, extension matches in load order with bare port options attached, networks instead of
    /// addresses, `LOG --log-level 4` dropped (the default).
    pub fn canonical(&self) -> Rule {
        canonicalize(&self.matches, self.target.as_ref()).unwrap_or_else(|_| self.clone())
    }

    /// Whether every address of the rule belongs to `family`.
    pub fn fits(&self, family: Family) -> Result<(), RuleError> {
        for m in &self.matches {
            if let Some(a) = m.addresses()
                && a.family() != family
            {
                return Err(RuleError::FamilyMismatch {
                    address: a.to_string(),
                    family,
                });
            }
        }
        Ok(())
    }

    pub(crate) fn from_parts(matches: Vec<Match>, target: Option<Target>) -> Result<Rule, RuleError> {
        canonicalize(&matches, target.as_ref())?;
        Ok(Rule { matches, target })
    }
}

/// Builds a [`Rule`] match by match (see [`Rule::builder`]).
#[derive(Debug, Clone, Default)]
pub struct RuleBuilder {
    matches: Vec<Match>,
    target: Option<Target>,
}

impl RuleBuilder {
    /// Add a match (after the ones added so far).
    pub fn matching(mut self, m: Match) -> RuleBuilder {
        self.matches.push(m);
        self
    }

    /// Add a comment match.
    pub fn comment(self, comment: Comment) -> RuleBuilder {
        self.matching(Match::Comment(comment))
    }

    /// Set the target.
    pub fn target(mut self, target: Target) -> RuleBuilder {
        self.target = Some(target);
        self
    }

    /// Check the combination and build the rule.
    pub fn build(self) -> Result<Rule, RuleError> {
        Rule::from_parts(self.matches, self.target)
    }
}

fn canonicalize(matches: &[Match], target: Option<&Target>) -> Result<Rule, RuleError> {
    let mut basic: Vec<Match> = Vec::new();
    let mut ext: Vec<Match> = Vec::new();
    let mut protocol: Option<&Negatable<Protocol>> = None;
    for m in matches {
        if m.is_basic() {
            if basic.iter().any(|b| b.basic_rank() == m.basic_rank()) {
                return Err(RuleError::Duplicate {
                    option: m.basic_option(),
                });
            }
            // `-s 0.0.0.0/0` and `-d ::/0` match everything; iptables drops them.
            if let Match::Source(a) | Match::Destination(a) = m
                && !a.negated
                && a.value.prefix_len() == 0
            {
                continue;
            }
            let m = match m {
                Match::Source(a) => Match::Source(Negatable {
                    negated: a.negated,
                    value: a.value.canonical(),
                }),
                Match::Destination(a) => Match::Destination(Negatable {
                    negated: a.negated,
                    value: a.value.canonical(),
                }),
                Match::Protocol(p) => {
                    protocol = Some(p);
                    m.clone()
                }
                other => other.clone(),
            };
            basic.push(m);
            continue;
        }
        match m {
            Match::DestinationPort(ports) | Match::SourcePort(ports) => {
                let dest = matches!(m, Match::DestinationPort(_));
                let option = if dest { "--dport" } else { "--sport" };
                attach_port(&mut ext, protocol, ports, dest, option)?;
            }
            other => ext.push(other.clone()),
        }
    }
    for m in &ext {
        if let Match::Multiport(mp) = m {
            let Some(mp) = mp else {
                return Err(RuleError::EmptyMultiport);
            };
            let slots = mp.ports.value.multiport_slots();
            if slots > crate::types::MULTIPORT_MAX_SLOTS {
                return Err(RuleError::MultiportTooLong {
                    ports: mp.ports.value.to_string(),
                    slots,
                });
            }
        }
    }
    basic.sort_by_key(Match::basic_rank);
    basic.extend(ext);
    Ok(Rule {
        matches: basic,
        target: target.map(Target::canonical),
    })
}

fn attach_port(
    ext: &mut Vec<Match>,
    protocol: Option<&Negatable<Protocol>>,
    ports: &Negatable<PortList>,
    dest: bool,
    option: &'static str,
) -> Result<(), RuleError> {
    let single = |ports: &Negatable<PortList>| -> Result<Negatable<PortRange>, RuleError> {
        ports
            .value
            .as_single()
            .map(|r| Negatable {
                negated: ports.negated,
                value: r,
            })
            .ok_or_else(|| RuleError::PortListWithoutMultiport {
                ports: ports.value.to_string(),
            })
    };
    let fill = |pm: &mut PortMatch| -> Result<(), RuleError> {
        let slot = if dest { &mut pm.destination } else { &mut pm.source };
        if slot.is_some() {
            return Err(RuleError::Duplicate { option });
        }
        *slot = Some(single(ports)?);
        Ok(())
    };
    // An explicitly loaded tcp/udp match takes the exact option name first.
    if let Some(pm) = ext.iter_mut().find_map(|m| match m {
        Match::Tcp(pm) | Match::Udp(pm) => Some(pm),
        _ => None,
    }) {
        return fill(pm);
    }
    // Then a multiport match (by option-prefix abbreviation, as getopt does).
    if let Some(mp) = ext.iter_mut().find_map(|m| match m {
        Match::Multiport(mp) => Some(mp),
        _ => None,
    }) {
        if mp.is_some() {
            return Err(RuleError::Duplicate { option });
        }
        *mp = Some(MultiportMatch {
            direction: if dest {
                MultiportDirection::Destination
            } else {
                MultiportDirection::Source
            },
            ports: ports.clone(),
        });
        return Ok(());
    }
    // Else the protocol's own match is loaded here.
    let mut pm = PortMatch::default();
    fill(&mut pm)?;
    match protocol {
        Some(Negatable {
            negated: false,
            value: Protocol::Tcp,
        }) => ext.push(Match::Tcp(pm)),
        Some(Negatable {
            negated: false,
            value: Protocol::Udp,
        }) => ext.push(Match::Udp(pm)),
        _ => return Err(RuleError::OrphanPortOption { option }),
    }
    Ok(())
}

/// Where a rule goes in its chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Position {
    /// `-A CHAIN`: at the end.
    Append,
    /// `-I CHAIN N`: before the rule now at position `N` (1 = first).
    Insert(NonZeroU32),
}

impl Position {
    /// `-I CHAIN n`; `None` for 0.
    pub fn insert(n: u32) -> Option<Position> {
        NonZeroU32::new(n).map(Position::Insert)
    }
}

/// A rule with its position command.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PositionedRule {
    /// Append or insert.
    pub position: Position,
    /// The rule.
    pub rule: Rule,
}

/// One chain of a [`TableRules`]: its name, policy (built-in chains) and rules in creation order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainRules {
    name: ChainName,
    policy: Option<Policy>,
    rules: Vec<PositionedRule>,
}

impl ChainRules {
    /// The chain name.
    pub fn name(&self) -> &ChainName {
        &self.name
    }

    /// Whether the chain is user-defined (declared with `-N` / `:NAME -`).
    pub fn is_user_defined(&self) -> bool {
        !self.name.is_builtin()
    }

    /// The policy of a built-in chain when known (parsed from `iptables-save`).
    pub fn policy(&self) -> Option<Policy> {
        self.policy
    }

    /// The rules in creation order, with their position commands.
    pub fn rules(&self) -> &[PositionedRule] {
        &self.rules
    }

    /// The rules in the order the kernel ends up with when they are applied to an empty chain
    /// (inserts counted from the top, appends at the end).
    pub fn effective_rules(&self) -> Vec<&Rule> {
        let mut out: Vec<&Rule> = Vec::with_capacity(self.rules.len());
        for pr in &self.rules {
            match pr.position {
                Position::Append => out.push(&pr.rule),
                Position::Insert(n) => {
                    let at = (n.get() as usize - 1).min(out.len());
                    out.insert(at, &pr.rule);
                }
            }
        }
        out
    }
}

/// The chains and rules of one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableRules {
    table: Table,
    chains: Vec<ChainRules>,
}

impl TableRules {
    /// The table.
    pub fn table(&self) -> Table {
        self.table
    }

    /// Built-in chains (in the table's order) then user-defined chains (in declaration order).
    pub fn chains(&self) -> &[ChainRules] {
        &self.chains
    }

    /// A chain by name.
    pub fn chain(&self, name: &str) -> Option<&ChainRules> {
        self.chains.iter().find(|c| c.name.as_str() == name)
    }

    /// The user-defined chains, in declaration order.
    pub fn user_chains(&self) -> impl Iterator<Item = &ChainName> {
        self.chains.iter().filter(|c| c.is_user_defined()).map(|c| &c.name)
    }

    /// Whether the table has no rules and no user-defined chains.
    pub fn is_empty(&self) -> bool {
        self.chains.iter().all(|c| c.rules.is_empty() && !c.is_user_defined())
    }

    /// The number of rules.
    pub fn rule_count(&self) -> usize {
        self.chains.iter().map(|c| c.rules.len()).sum()
    }

    fn chain_mut(&mut self, name: &ChainName) -> &mut ChainRules {
        if let Some(i) = self.chains.iter().position(|c| &c.name == name) {
            return &mut self.chains[i];
        }
        let new = ChainRules {
            name: name.clone(),
            policy: None,
            rules: Vec::new(),
        };
        let at = if name.is_builtin() {
            let order = self.table.builtin_chains();
            let rank = |n: &str| order.iter().position(|b| *b == n).unwrap_or(order.len());
            let mine = rank(name.as_str());
            self.chains
                .iter()
                .position(|c| !c.name.is_builtin() || rank(c.name.as_str()) > mine)
                .unwrap_or(self.chains.len())
        } else {
            self.chains.len()
        };
        self.chains.insert(at, new);
        &mut self.chains[at]
    }
}

/// A complete rule set for one IP family: what Kuma writes into one iptables-restore file, or what
/// one `iptables-save` printed.
///
/// ```
/// use meshcap_iptables::{Config, Family, RuleSet};
///
/// let rules = RuleSet::build(&Config::default(), Family::V4);
/// assert!(rules.render_restore().starts_with("* nat\n-N KUMA_MESH_INBOUND\n"));
/// // The iptables-save form parses back into the same rules.
/// let saved = rules.render_save();
/// assert_eq!(RuleSet::parse(&saved, Family::V4)?.render_save(), saved);
/// # Ok::<(), meshcap_iptables::ParseError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleSet {
    family: Family,
    tables: Vec<TableRules>,
}

impl RuleSet {
    /// An empty rule set.
    pub fn new(family: Family) -> RuleSet {
        RuleSet {
            family,
            tables: Vec::new(),
        }
    }

    /// The family.
    pub fn family(&self) -> Family {
        self.family
    }

    /// The tables, in the order they were first used.
    pub fn tables(&self) -> &[TableRules] {
        &self.tables
    }

    /// A table by name.
    pub fn table(&self, table: Table) -> Option<&TableRules> {
        self.tables.iter().find(|t| t.table == table)
    }

    /// Whether there are no tables with rules or chains.
    pub fn is_empty(&self) -> bool {
        self.tables.iter().all(TableRules::is_empty)
    }

    /// The number of rules over all tables.
    pub fn rule_count(&self) -> usize {
        self.tables.iter().map(TableRules::rule_count).sum()
    }

    fn table_mut(&mut self, table: Table) -> &mut TableRules {
        if let Some(i) = self.tables.iter().position(|t| t.table == table) {
            return &mut self.tables[i];
        }
        self.tables.push(TableRules {
            table,
            chains: Vec::new(),
        });
        let last = self.tables.len() - 1;
        &mut self.tables[last]
    }

    /// Make sure `table` is present (an empty block), e.g. for a table listed by `iptables-save`.
    pub fn add_table(&mut self, table: Table) {
        self.table_mut(table);
    }

    /// Declare a user-defined chain (`-N NAME`); declaring it twice is harmless.
    pub fn declare_chain(&mut self, table: Table, name: &ChainName) {
        self.table_mut(table).chain_mut(name);
    }

    /// Set the policy of a built-in chain.
    pub fn set_policy(&mut self, table: Table, chain: &ChainName, policy: Policy) {
        self.table_mut(table).chain_mut(chain).policy = Some(policy);
    }

    /// Add a rule to a chain (declaring a user-defined chain on first use). Error when an address of
    /// the rule belongs to the other family.
    pub fn push(&mut self, table: Table, chain: &ChainName, position: Position, rule: Rule) -> Result<(), RuleError> {
        rule.fits(self.family)?;
        self.table_mut(table)
            .chain_mut(chain)
            .rules
            .push(PositionedRule { position, rule });
        Ok(())
    }

    /// Append a rule (`-A`).
    pub fn append(&mut self, table: Table, chain: &ChainName, rule: Rule) -> Result<(), RuleError> {
        self.push(table, chain, Position::Append, rule)
    }

    /// The user-defined chains of all tables.
    pub fn user_chains(&self) -> impl Iterator<Item = (Table, &ChainName)> {
        self.tables
            .iter()
            .flat_map(|t| t.user_chains().map(move |c| (t.table, c)))
    }
}
