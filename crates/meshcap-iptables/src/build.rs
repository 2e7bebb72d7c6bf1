//! Kuma's rule catalogue: [`RuleSet::build`] turns a [`Config`] into the rules `kumactl install
//! transparent-proxy` writes for one family, in Kuma's order (see `docs/iptables.md` for each rule).

use crate::config::{Config, DnsMode, HostFacts, KUMA_COMMENT_MAX};
use crate::model::{Log, LogLevel, Match, Position, Rule, RuleSet, Table, Target};
use crate::types::{Address, ChainName, Comment, Family, Negatable, Port, UidRange};

const DNS: Port = Port::known(53);

/// Collects rules for one built-in or user chain, counting inserts like Kuma (`-I CHAIN n`, where `n`
/// counts the inserts made to that chain so far).
struct ChainWriter<'a> {
    set: &'a mut RuleSet,
    table: Table,
    chain: ChainName,
    inserts: u32,
}

impl ChainWriter<'_> {
    fn append(&mut self, rule: Rule) {
        self.push(Position::Append, rule);
    }

    fn insert(&mut self, rule: Rule) {
        self.inserts += 1;
        let pos = Position::insert(self.inserts).unwrap_or(Position::Append);
        self.push(pos, rule);
    }

    fn push(&mut self, pos: Position, rule: Rule) {
        // The builder only produces addresses of the rule set's family.
        let _ = self.set.push(self.table, &self.chain, pos, rule);
    }
}

struct Builder<'a> {
    config: &'a Config,
    family: Family,
    host: &'a HostFacts,
}

impl Builder<'_> {
    fn comment(&self, text: &str) -> Option<Match> {
        (self.config.comments && self.host.comment_match()).then(|| {
            Match::Comment(Comment::truncated(
                &format!("{}/{}", self.config.comment_prefix, text),
                KUMA_COMMENT_MAX,
            ))
        })
    }

    /// A rule: the comment first (Kuma's order), then the matches as given.
    fn rule(&self, text: &str, matches: Vec<Match>, target: Target) -> Rule {
        let mut all: Vec<Match> = self.comment(text).into_iter().collect();
        all.extend(matches);
        Rule {
            matches: all,
            target: Some(target),
        }
    }

    fn uid(&self) -> UidRange {
        UidRange::single(self.config.proxy_uid)
    }

    fn ips(&self, list: &[Address]) -> Vec<Address> {
        list.iter().copied().filter(|a| a.family() == self.family).collect()
    }

    fn resolvers(&self) -> Vec<Address> {
        match &self.config.dns {
            DnsMode::Resolvers(r) => r
                .iter()
                .copied()
                .filter(|ip| self.family.contains(*ip))
                .map(Address::host)
                .collect(),
            _ => Vec::new(),
        }
    }

    fn capture_all(&self) -> bool {
        self.config.dns == DnsMode::CaptureAll
    }

    /// DNS capture for this family: capture-all, or redirect-dns with at least one resolver of the
    /// family (a family without resolvers gets no DNS rules, Kuma's fix for issue #10799).
    fn dns_enabled(&self) -> bool {
        match &self.config.dns {
            DnsMode::Off => false,
            DnsMode::CaptureAll => true,
            DnsMode::Resolvers(_) => !self.resolvers().is_empty(),
        }
    }

    fn zone_split(&self) -> bool {
        self.dns_enabled()
            && self.config.dns_conntrack_zone_split
            && self.host.conntrack_zones()
            && !(self.host.docker_output() && self.capture_all())
    }

    fn vnets(&self) -> Vec<&crate::config::Vnet> {
        self.config
            .vnets
            .iter()
            .filter(|v| v.network().family() == self.family)
            .collect()
    }
}

fn writer<'a>(set: &'a mut RuleSet, table: Table, chain: &ChainName) -> ChainWriter<'a> {
    ChainWriter {
        set,
        table,
        chain: chain.clone(),
        inserts: 0,
    }
}

fn builtin(name: &'static str) -> ChainName {
    ChainName::builtin(name)
}

fn udp_dport(port: Port) -> [Match; 2] {
    [Match::udp(), Match::dport(port)]
}

fn tcp_dport(port: Port) -> [Match; 2] {
    [Match::tcp(), Match::dport(port)]
}

fn redirect(port: Port) -> Target {
    Target::redirect_to(port)
}

impl RuleSet {
    /// Kuma's rules for `family` on a host with everything available ([`HostFacts::default`]).
    pub fn build(config: &Config, family: Family) -> RuleSet {
        RuleSet::build_with(config, family, &HostFacts::default())
    }

    /// Kuma's rules for `family` given what was found on the host.
    pub fn build_with(config: &Config, family: Family, host: &HostFacts) -> RuleSet {
        let b = Builder { config, family, host };
        let mut set = RuleSet::new(family);
        if b.zone_split() {
            build_raw(&b, &mut set);
        }
        build_nat(&b, &mut set);
        if config.drop_invalid_packets && host.mangle() {
            let rule = b.rule(
                "drop packets in the INVALID state to prevent potential issues with malformed or out-of-order packets",
                vec![Match::Conntrack(Negatable::is(vec![crate::model::CtState::Invalid]))],
                Target::Drop,
            );
            writer(&mut set, Table::Mangle, &builtin("PREROUTING")).append(rule);
        }
        set
    }
}

fn build_raw(b: &Builder<'_>, set: &mut RuleSet) {
    let uid = b.uid();
    let lh = b.family.localhost();
    let mut output: Vec<Rule> = Vec::new();
    let mut prerouting: Vec<Rule> = Vec::new();
    output.push(b.rule(
        &format!("assign connection tracking zone 1 to DNS traffic from the kuma-dp user (UID {uid})"),
        [Match::udp(), Match::dport(DNS), Match::uid_owner(uid)].into(),
        Target::CtZone(1),
    ));
    output.push(b.rule(
        "assign connection tracking zone 2 to DNS responses from the kuma-dp DNS proxy",
        [Match::udp(), Match::sport(b.config.dns_port), Match::uid_owner(uid)].into(),
        Target::CtZone(2),
    ));
    if b.capture_all() {
        output.push(b.rule(
            "assign connection tracking zone 2 to all DNS requests",
            udp_dport(DNS).into(),
            Target::CtZone(2),
        ));
        prerouting.push(b.rule(
            "assign connection tracking zone 1 to all DNS responses",
            [Match::udp(), Match::sport(DNS)].into(),
            Target::CtZone(1),
        ));
    } else {
        for ip in b.resolvers() {
            output.push(b.rule(
                &format!("assign connection tracking zone 2 to DNS requests destined for {ip}"),
                [Match::Destination(Negatable::is(ip)), Match::udp(), Match::dport(DNS)].into(),
                Target::CtZone(2),
            ));
            if ip.is_loopback() {
                output.push(b.rule(
                    "assign conntrack zone 1 to DNS responses from the local DNS server to localhost, needed when the DNS query port is altered by a DNAT iptables rule, such as with Docker containers in a custom network",
                    [Match::Source(Negatable::is(ip)), Match::Destination(Negatable::is(lh)), Match::udp()].into(),
                    Target::CtZone(1),
                ));
            }
            prerouting.push(b.rule(
                &format!("assign connection tracking zone 1 to DNS responses from {ip}"),
                [Match::Source(Negatable::is(ip)), Match::udp(), Match::sport(DNS)].into(),
                Target::CtZone(1),
            ));
        }
    }
    let mut w = writer(set, Table::Raw, &builtin("PREROUTING"));
    for r in prerouting {
        w.append(r);
    }
    let mut w = writer(set, Table::Raw, &builtin("OUTPUT"));
    for r in output {
        w.append(r);
    }
}

fn log_rule(b: &Builder<'_>, level: LogLevel, prefix: &str) -> Rule {
    b.rule(
        "log matching packets using kernel logging",
        Vec::new(),
        Target::Log(Log {
            prefix: Some(prefix.to_string()),
            level: Some(level),
        }),
    )
}

fn build_nat(b: &Builder<'_>, set: &mut RuleSet) {
    let c = b.config;
    let inb = &c.inbound;
    let out = &c.outbound;
    // Chains are declared in Kuma's order.
    for chain in [&inb.chain, &out.chain, &inb.redirect_chain, &out.redirect_chain] {
        set.declare_chain(Table::Nat, chain);
    }
    build_prerouting(b, set);
    build_output(b, set);
    build_inbound_chain(b, set);
    build_outbound_chain(b, set);
    for dir in [inb, out] {
        let rule = b.rule(
            &format!("redirect TCP traffic to envoy (port {})", dir.port),
            vec![Match::tcp()],
            redirect(dir.port),
        );
        writer(set, Table::Nat, &dir.redirect_chain).append(rule);
    }
}

fn build_prerouting(b: &Builder<'_>, set: &mut RuleSet) {
    let c = b.config;
    let vnets = b.vnets();
    let inserting = !vnets.is_empty() || c.inbound.insert_instead_of_append;
    let mut w = writer(set, Table::Nat, &builtin("PREROUTING"));
    if let Some(level) = c.log {
        // Kuma appends the LOG rule, so with inserts it lands after the jump (quirk Q2); we insert it
        // first instead so it sees every packet.
        if inserting {
            w.insert(log_rule(b, level, "PREROUTING:"));
        } else {
            w.append(log_rule(b, level, "PREROUTING:"));
        }
    }
    for v in &vnets {
        let iface = v.interface();
        // Kuma emits these DNS redirects even with DNS capture off (quirk Q5), pointing at a proxy that
        // is not listening; we only emit them when this family's DNS is captured.
        if b.dns_enabled() {
            w.insert(b.rule(
                &format!(
                    "redirect DNS requests on interface {iface} to the kuma-dp DNS proxy (listening on port {})",
                    c.dns_port
                ),
                vec![
                    Match::InInterface(Negatable::is(iface.clone())),
                    Match::Udp(Default::default()),
                    Match::udp(),
                    Match::dport(DNS),
                ],
                redirect(c.dns_port),
            ));
        }
        // `! -d 0.0.0.0/0` matches nothing (and iptables-nft rejects it): a /0 network (only possible
        // through `Vnet::new`, its parser rejects it) gets no TCP rule.
        if v.network().prefix_len() == 0 {
            continue;
        }
        w.insert(b.rule(
            &format!(
                "redirect TCP traffic on interface {iface}, excluding destination {}, to the envoy's outbound passthrough port {}",
                v.network(),
                c.outbound.port
            ),
            vec![
                Match::Destination(Negatable::not(v.network())),
                Match::InInterface(Negatable::is(iface.clone())),
                Match::tcp(),
            ],
            redirect(c.outbound.port),
        ));
    }
    let jump = Target::Jump(c.inbound.chain.clone());
    if inserting {
        w.insert(b.rule(
            "redirect remaining TCP traffic to our custom chain for processing",
            vec![Match::tcp()],
            jump,
        ));
    } else {
        w.append(b.rule(
            "redirect inbound TCP traffic to our custom chain for processing",
            vec![Match::tcp()],
            jump,
        ));
    }
}

fn build_output(b: &Builder<'_>, set: &mut RuleSet) {
    let c = b.config;
    let uid = b.uid();
    let insert_jump = c.outbound.insert_instead_of_append;
    let mut w = writer(set, Table::Nat, &builtin("OUTPUT"));
    if let Some(level) = c.log {
        w.insert(log_rule(b, level, "OUTPUT:"));
    }
    let skip = "skip further processing for configured IP addresses, ports and UIDs";
    for x in &c.exclude_outbound_ports_for_uids {
        for proto in x.protocols() {
            // Kuma writes one multiport match however long the list (quirk Q7) and the kernel rejects
            // more than 15 slots; we split the list over several rules.
            for chunk in x.ports().chunks_for_multiport() {
                w.insert(b.rule(
                    skip,
                    vec![
                        Match::Multiport(None),
                        Match::Protocol(Negatable::is(proto.protocol())),
                        Match::DestinationPort(Negatable::is(chunk)),
                        Match::uid_owner(x.uids()),
                    ],
                    Target::Return,
                ));
            }
        }
    }
    for ip in b.ips(&c.outbound.exclude_ips) {
        w.insert(b.rule(skip, vec![Match::Destination(Negatable::is(ip))], Target::Return));
    }
    if b.dns_enabled() {
        let (text, target) = if b.host.docker_output() {
            (
                "redirect DNS traffic from kuma-dp to the DOCKER_OUTPUT chain",
                Target::Jump(ChainName::builtin("DOCKER_OUTPUT")),
            )
        } else {
            ("return early for DNS traffic from kuma-dp", Target::Return)
        };
        w.insert(b.rule(
            text,
            vec![Match::udp(), Match::dport(DNS), Match::uid_owner(uid)],
            target,
        ));
        let tcp_dns = b.rule(
            &format!(
                "allow applications to perform DNS queries over TCP to port 53 without mesh redirection (only traffic not owned by UID {uid} (kuma-dp user))"
            ),
            vec![Match::tcp(), Match::dport(DNS), Match::not_uid_owner(uid)],
            Target::Return,
        );
        // Kuma appends this rule even when the jump below is inserted, so it lands after the jump and
        // never matches (quirk Q3); with an inserted jump we insert it right before the jump.
        if !insert_jump {
            w.append(tcp_dns.clone());
        }
        let dns_redirect = redirect(c.dns_port);
        if b.capture_all() {
            w.insert(b.rule(
                &format!(
                    "redirect all DNS requests to the kuma-dp DNS proxy (listening on port {})",
                    c.dns_port
                ),
                udp_dport(DNS).into(),
                dns_redirect,
            ));
        } else {
            for ip in b.resolvers() {
                w.insert(b.rule(
                    &format!(
                        "redirect DNS requests to {ip} to the kuma-dp DNS proxy (listening on port {})",
                        c.dns_port
                    ),
                    vec![Match::Destination(Negatable::is(ip)), Match::udp(), Match::dport(DNS)],
                    dns_redirect.clone(),
                ));
            }
        }
        if insert_jump {
            w.insert(tcp_dns);
        }
    }
    let jump = b.rule(
        "redirect outbound TCP traffic to our custom chain for processing",
        vec![Match::tcp()],
        Target::Jump(c.outbound.chain.clone()),
    );
    if insert_jump {
        w.insert(jump);
    } else {
        w.append(jump);
    }
}

fn build_inbound_chain(b: &Builder<'_>, set: &mut RuleSet) {
    let c = b.config;
    let inb = &c.inbound;
    let mut w = writer(set, Table::Nat, &inb.chain);
    if !inb.enabled {
        w.append(b.rule(
            "inbound traffic redirection is disabled",
            vec![Match::tcp()],
            Target::Return,
        ));
        return;
    }
    for ip in b.ips(&inb.exclude_ips) {
        w.append(b.rule(
            "skip further processing for configured IP address",
            vec![Match::Source(Negatable::is(ip))],
            Target::Return,
        ));
    }
    let to_redirect = Target::Jump(inb.redirect_chain.clone());
    for p in &inb.include_ports {
        w.append(b.rule(
            &format!("redirect inbound traffic from port {p} to the custom chain for processing"),
            tcp_dport(*p).into(),
            to_redirect.clone(),
        ));
    }
    if inb.include_ports.is_empty() {
        for p in &inb.exclude_ports {
            w.append(b.rule(
                &format!("exclude inbound traffic from port {p} from redirection"),
                tcp_dport(*p).into(),
                Target::Return,
            ));
        }
        w.append(b.rule(
            "redirect all inbound traffic to the custom chain for processing",
            vec![Match::tcp()],
            to_redirect,
        ));
    }
}

fn build_outbound_chain(b: &Builder<'_>, set: &mut RuleSet) {
    let c = b.config;
    let out = &c.outbound;
    let uid = b.uid();
    let lo = b.host.loopback().clone();
    let pt = b.family.inbound_passthrough();
    let lh = b.family.localhost();
    let mut w = writer(set, Table::Nat, &out.chain);
    if !out.enabled {
        w.append(b.rule(
            "outbound traffic redirection is disabled",
            vec![Match::tcp()],
            Target::Return,
        ));
        return;
    }
    if out.include_ports.is_empty() {
        for p in &out.exclude_ports {
            w.append(b.rule(
                &format!("exclude outbound traffic from port {p} from redirection"),
                tcp_dport(*p).into(),
                Target::Return,
            ));
        }
    }
    w.append(b.rule(
        &format!(
            "prevent traffic loops by ensuring traffic from the sidecar proxy (using {pt}) to loopback interface is not redirected again"
        ),
        vec![
            Match::Source(Negatable::is(pt)),
            Match::OutInterface(Negatable::is(lo.clone())),
        ],
        Target::Return,
    ));
    w.append(b.rule(
        &format!(
            "redirect outbound TCP traffic destined for loopback interface, but not targeting address {lh}, and owned by UID {uid} (kuma-dp user) to {} chain for proper handling",
            c.inbound.redirect_chain
        ),
        vec![
            Match::tcp(),
            Match::OutInterface(Negatable::is(lo.clone())),
            Match::Destination(Negatable::not(lh)),
            Match::uid_owner(uid),
        ],
        Target::Jump(c.inbound.redirect_chain.clone()),
    ));
    w.append(b.rule(
        &format!("return outbound TCP traffic destined for loopback interface, owned by any UID other than {uid} (kuma-dp user)"),
        vec![Match::tcp(), Match::OutInterface(Negatable::is(lo)), Match::not_uid_owner(uid)],
        Target::Return,
    ));
    w.append(b.rule(
        &format!("return outbound traffic owned by UID {uid} (kuma-dp user)"),
        vec![Match::uid_owner(uid)],
        Target::Return,
    ));
    w.append(b.rule(
        &format!("return traffic destined for localhost ({lh}) to avoid redirection"),
        vec![Match::Destination(Negatable::is(lh))],
        Target::Return,
    ));
    let to_redirect = Target::Jump(out.redirect_chain.clone());
    if out.include_ports.is_empty() {
        w.append(b.rule(
            "redirect all other outbound traffic to our custom chain for further processing",
            Vec::new(),
            to_redirect,
        ));
    } else {
        for p in &out.include_ports {
            w.append(b.rule(
                &format!("redirect outbound TCP traffic to port {p} to our custom chain for further processing"),
                tcp_dport(*p).into(),
                to_redirect.clone(),
            ));
        }
    }
}
