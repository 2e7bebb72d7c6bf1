//! Renderers: iptables-restore input exactly as `kumactl install transparent-proxy --dry-run` prints it
//! (short or `--verbose` spelling), and the canonical `iptables-save` form.

use std::fmt::Write as _;

use crate::model::{ChainRules, Log, Match, MultiportMatch, PortMatch, Position, Rule, RuleSet, Table, Target};
use crate::types::{Negatable, PortRange};

/// Short (`-A -p --dport`) or long (`--append --protocol --destination-port`) option names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Spelling {
    Short,
    Long,
}

impl Spelling {
    fn pick(self, short: &'static str, long: &'static str) -> &'static str {
        match self {
            Spelling::Short => short,
            Spelling::Long => long,
        }
    }
}

/// How a rule is written: iptables-restore input (values as typed, Kuma's quoting) or `iptables-save`
/// output (xtables quoting, `106-108` UID ranges).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Form {
    Restore(Spelling),
    Save,
}

/// Quote like `iptables-save` (xtables_save_string): bare when the text is only `[A-Za-z0-9_-]`,
/// otherwise in double quotes with `"`, `\` and `'` backslash-escaped.
pub(crate) fn save_quote(s: &str) -> String {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if matches!(c, '"' | '\\' | '\'') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// Quote like Kuma's restore files (Go's `%q` on printable text): always in double quotes, `"` and `\`
/// escaped.
fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if matches!(c, '"' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// Quote a token only when iptables-restore would otherwise split or unescape it.
pub(crate) fn token_quote(s: &str) -> String {
    if !s.is_empty() && !s.chars().any(|c| c.is_whitespace() || matches!(c, '"' | '\\' | '\'')) {
        return s.to_string();
    }
    go_quote(s)
}

fn push(out: &mut String, tok: &str) {
    if !out.is_empty() {
        out.push(' ');
    }
    out.push_str(tok);
}

fn push_neg<T>(out: &mut String, n: &Negatable<T>) {
    if n.negated {
        push(out, "!");
    }
}

fn port_range_dash(r: PortRange) -> String {
    if r.is_single() {
        r.first().to_string()
    } else {
        format!("{}-{}", r.first(), r.last())
    }
}

fn write_port_match(out: &mut String, module: &str, pm: &PortMatch, form: Form) {
    let sp = match form {
        Form::Restore(sp) => sp,
        Form::Save => Spelling::Short,
    };
    push(out, sp.pick("-m", "--match"));
    push(out, module);
    if let Some(s) = &pm.source {
        push_neg(out, s);
        push(out, sp.pick("--sport", "--source-port"));
        push(out, &s.value.to_string());
    }
    if let Some(d) = &pm.destination {
        push_neg(out, d);
        push(out, sp.pick("--dport", "--destination-port"));
        push(out, &d.value.to_string());
    }
}

fn write_match(out: &mut String, m: &Match, form: Form) {
    let sp = match form {
        Form::Restore(sp) => sp,
        Form::Save => Spelling::Short,
    };
    match m {
        Match::Source(a) => {
            push_neg(out, a);
            push(out, sp.pick("-s", "--source"));
            push(out, &a.value.to_string());
        }
        Match::Destination(a) => {
            push_neg(out, a);
            push(out, sp.pick("-d", "--destination"));
            push(out, &a.value.to_string());
        }
        Match::InInterface(i) => {
            push_neg(out, i);
            push(out, sp.pick("-i", "--in-interface"));
            push(out, i.value.as_str());
        }
        Match::OutInterface(i) => {
            push_neg(out, i);
            push(out, sp.pick("-o", "--out-interface"));
            push(out, i.value.as_str());
        }
        Match::Protocol(p) => {
            push_neg(out, p);
            push(out, sp.pick("-p", "--protocol"));
            push(out, p.value.name());
        }
        Match::DestinationPort(p) => {
            push_neg(out, p);
            push(out, sp.pick("--dport", "--destination-port"));
            push(out, &p.value.to_string());
        }
        Match::SourcePort(p) => {
            push_neg(out, p);
            push(out, sp.pick("--sport", "--source-port"));
            push(out, &p.value.to_string());
        }
        Match::Tcp(pm) => write_port_match(out, "tcp", pm, form),
        Match::Udp(pm) => write_port_match(out, "udp", pm, form),
        Match::Multiport(mp) => {
            push(out, sp.pick("-m", "--match"));
            push(out, "multiport");
            if let Some(MultiportMatch { direction, ports }) = mp {
                push_neg(out, ports);
                push(out, direction.option());
                push(out, &ports.value.to_string());
            }
        }
        Match::Owner(uid) => {
            push(out, sp.pick("-m", "--match"));
            push(out, "owner");
            push_neg(out, uid);
            push(out, "--uid-owner");
            match form {
                Form::Save => push(out, &uid.value.to_save_string()),
                Form::Restore(_) => push(out, &uid.value.to_string()),
            }
        }
        Match::Conntrack(states) => {
            push(out, sp.pick("-m", "--match"));
            push(out, "conntrack");
            push_neg(out, states);
            push(out, "--ctstate");
            let list: Vec<String> = states.value.iter().map(ToString::to_string).collect();
            push(out, &list.join(","));
        }
        Match::Comment(c) => {
            push(out, sp.pick("-m", "--match"));
            push(out, "comment");
            push(out, "--comment");
            match form {
                Form::Save => push(out, &save_quote(c.as_str())),
                Form::Restore(_) => push(out, &go_quote(c.as_str())),
            }
        }
        Match::Other(o) => {
            push(out, sp.pick("-m", "--match"));
            push(out, &o.module);
            for a in &o.args {
                push(out, &token_quote(a));
            }
        }
    }
}

fn write_target(out: &mut String, t: &Target, form: Form) {
    let sp = match form {
        Form::Restore(sp) => sp,
        Form::Save => Spelling::Short,
    };
    let jump = sp.pick("-j", "--jump");
    let quote = |s: &str| match form {
        Form::Save => save_quote(s),
        Form::Restore(_) => token_quote(s),
    };
    match t {
        Target::Accept => {
            push(out, jump);
            push(out, "ACCEPT");
        }
        Target::Drop => {
            push(out, jump);
            push(out, "DROP");
        }
        Target::Return => {
            push(out, jump);
            push(out, "RETURN");
        }
        Target::Jump(c) => {
            push(out, jump);
            push(out, c.as_str());
        }
        Target::Goto(c) => {
            push(out, sp.pick("-g", "--goto"));
            push(out, c.as_str());
        }
        Target::Redirect(r) => {
            push(out, jump);
            push(out, "REDIRECT");
            if let Some(p) = r.to_ports {
                push(out, "--to-ports");
                push(out, &port_range_dash(p));
            }
        }
        Target::Log(Log { prefix, level }) => {
            push(out, jump);
            push(out, "LOG");
            if let Some(p) = prefix {
                push(out, "--log-prefix");
                push(out, &quote(p));
            }
            if let Some(l) = level {
                push(out, "--log-level");
                push(out, &l.to_string());
            }
        }
        Target::CtZone(z) => {
            push(out, jump);
            push(out, "CT");
            push(out, "--zone");
            push(out, &z.to_string());
        }
        Target::Other(o) => {
            push(out, jump);
            push(out, &o.name);
            for a in &o.args {
                push(out, &token_quote(a));
            }
        }
    }
}

fn rule_args(rule: &Rule, form: Form) -> String {
    let mut out = String::new();
    for m in &rule.matches {
        write_match(&mut out, m, form);
    }
    if let Some(t) = &rule.target {
        write_target(&mut out, t, form);
    }
    out
}

impl Rule {
    /// The rule as iptables-restore input, in the order of its matches with values as typed (Kuma's
    /// short spelling): `-p tcp -o lo ! -d 127.0.0.1/32 -m owner --uid-owner 5678 -j RETURN`.
    pub fn to_restore_args(&self) -> String {
        rule_args(self, Form::Restore(Spelling::Short))
    }

    /// As [`to_restore_args`](Self::to_restore_args) with long option names (`--protocol tcp`).
    pub fn to_restore_args_verbose(&self) -> String {
        rule_args(self, Form::Restore(Spelling::Long))
    }

    /// The rule in `iptables-save` spelling (xtables quoting, `106-108` UID ranges), in the order of its
    /// matches; call it on [`canonical`](Self::canonical) for what `iptables-save` prints.
    pub fn to_save_args(&self) -> String {
        rule_args(self, Form::Save)
    }
}

/// `Display` writes the iptables-restore spelling ([`Rule::to_restore_args`]).
impl std::fmt::Display for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_restore_args())
    }
}

fn restore_line(chain: &ChainRules, pos: Position, rule: &Rule, sp: Spelling) -> String {
    let mut line = String::new();
    match pos {
        Position::Append => {
            push(&mut line, sp.pick("-A", "--append"));
            push(&mut line, chain.name().as_str());
        }
        Position::Insert(n) => {
            push(&mut line, sp.pick("-I", "--insert"));
            push(&mut line, chain.name().as_str());
            push(&mut line, &n.to_string());
        }
    }
    let args = rule_args(rule, Form::Restore(sp));
    if !args.is_empty() {
        push(&mut line, &args);
    }
    line
}

fn restore_table(t: &crate::model::TableRules, sp: Spelling) -> Option<String> {
    let verbose = sp == Spelling::Long;
    let mut chains: Vec<String> = t
        .user_chains()
        .map(|c| format!("{} {c}", sp.pick("-N", "--new-chain")))
        .collect();
    let mut rules: Vec<String> = Vec::new();
    for c in t.chains() {
        for pr in c.rules() {
            rules.push(restore_line(c, pr.position, &pr.rule, sp));
        }
    }
    if chains.is_empty() && rules.is_empty() {
        return None;
    }
    if verbose {
        if !chains.is_empty() {
            chains.insert(0, "# Custom Chains:".to_string());
        }
        if !rules.is_empty() {
            rules.insert(0, "# Rules:".to_string());
        }
    }
    let mut parts = vec![format!("* {}", t.table())];
    if !chains.is_empty() {
        parts.push(chains.join("\n"));
    }
    if !rules.is_empty() {
        parts.push(rules.join("\n"));
    }
    parts.push("COMMIT".to_string());
    Some(parts.join(if verbose { "\n\n" } else { "\n" }))
}

impl RuleSet {
    fn render_restore_with(&self, sp: Spelling) -> String {
        let mut tables: Vec<&crate::model::TableRules> = self.tables().iter().collect();
        tables.sort_by_key(|t| t.table().restore_rank());
        let blocks: Vec<String> = tables.iter().filter_map(|t| restore_table(t, sp)).collect();
        if blocks.is_empty() {
            return String::new();
        }
        let mut out = blocks.join(if sp == Spelling::Long { "\n\n" } else { "\n" });
        out.push('\n');
        out
    }

    /// The iptables-restore input Kuma writes for `iptables-restore --noflush`: tables raw, nat, mangle;
    /// `-N` lines, then rules grouped by chain (built-in chains first) in creation order, `-A` or
    /// `-I CHAIN n`; `COMMIT`. Empty tables are left out.
    pub fn render_restore(&self) -> String {
        self.render_restore_with(Spelling::Short)
    }

    /// The same with `kumactl --verbose` spelling: long option names, `# Custom Chains:` and
    /// `# Rules:` headers, blank lines between sections and tables.
    pub fn render_restore_verbose(&self) -> String {
        self.render_restore_with(Spelling::Long)
    }

    /// What `iptables-save` (iptables-nft 1.8.9) prints once the rules are loaded into empty tables,
    /// minus its `#` banner lines: tables in the order mangle, security, raw, filter, nat; every
    /// built-in chain declared with its policy and `[0:0]` counters, user-defined chains sorted by
    /// name; rules in canonical form grouped by chain in declaration order.
    pub fn render_save(&self) -> String {
        let mut tables: Vec<&crate::model::TableRules> = self.tables().iter().collect();
        tables.sort_by_key(|t| t.table().save_rank());
        let mut out = String::new();
        for t in tables {
            render_save_table(&mut out, t);
        }
        out
    }
}

fn render_save_table(out: &mut String, t: &crate::model::TableRules) {
    let table: Table = t.table();
    let _ = writeln!(out, "*{table}");
    let mut order: Vec<&ChainRules> = Vec::new();
    for b in table.builtin_chains() {
        let policy = t
            .chain(b)
            .and_then(ChainRules::policy)
            .unwrap_or(crate::model::Policy::Accept);
        let _ = writeln!(out, ":{b} {policy} [0:0]");
        if let Some(c) = t.chain(b) {
            order.push(c);
        }
    }
    // Built-in chains of another table's set (not expected) keep their place after the table's own.
    for c in t.chains() {
        if !c.is_user_defined() && !table.has_builtin(c.name().as_str()) {
            order.push(c);
        }
    }
    let mut users: Vec<&ChainRules> = t.chains().iter().filter(|c| c.is_user_defined()).collect();
    users.sort_by(|a, b| a.name().as_str().as_bytes().cmp(b.name().as_str().as_bytes()));
    for c in &users {
        let _ = writeln!(out, ":{} - [0:0]", c.name());
    }
    order.extend(users);
    for c in order {
        for r in c.effective_rules() {
            let args = r.canonical().to_save_args();
            if args.is_empty() {
                let _ = writeln!(out, "-A {}", c.name());
            } else {
                let _ = writeln!(out, "-A {} {args}", c.name());
            }
        }
    }
    out.push_str("COMMIT\n");
}

/// What `kumactl install transparent-proxy --dry-run` prints for these rule sets (IPv4 first):
/// `### IPv4 ###`, a blank line, the restore text, and for IPv6 a blank line, `### IPv6 ###`, a blank
/// line and its text; one trailing newline.
pub fn render_dry_run(rule_sets: &[RuleSet], verbose: bool) -> String {
    let mut parts: Vec<String> = Vec::new();
    for rs in rule_sets {
        let text = if verbose {
            rs.render_restore_verbose()
        } else {
            rs.render_restore()
        };
        parts.push(format!("### {} ###", rs.family().label()));
        parts.push(text.trim().to_string());
    }
    let mut out = parts.join("\n\n");
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_matches_xtables() {
        assert_eq!(save_quote("PREROUTING:"), "\"PREROUTING:\"");
        assert_eq!(save_quote("abc-DEF_1"), "abc-DEF_1");
        assert_eq!(save_quote("envoy's"), "\"envoy\\'s\"");
        assert_eq!(save_quote(""), "\"\"");
        assert_eq!(go_quote("a \"b\" \\"), "\"a \\\"b\\\" \\\\\"");
        assert_eq!(token_quote("PREROUTING:"), "PREROUTING:");
        assert_eq!(token_quote("a b"), "\"a b\"");
    }
}
