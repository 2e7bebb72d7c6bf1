//! Applying rule sets: [`Executor`] (how commands are started, e.g. inside a network namespace),
//! [`Backend`] detection the way Kuma does it, and the [`Installer`] with `install`, `uninstall` and
//! `verify`.
//!
//! Every change is one `iptables-restore --noflush` transaction per family that first deletes our
//! previous rules (`-D`, found by our comment prefix, by jumping to one of our chains, or by being
//! identical to a rule we are about to add), flushes or deletes our chains (`-F`, `-X`) and then adds
//! the new rules. Other programs' chains and rules are never touched. Before it, the whole ruleset is
//! saved (`iptables-save -c`); if the restore fails, any table that changed is restored from that
//! snapshot and the result is checked against it.

use std::collections::BTreeSet;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use crate::config::{Config, HostFacts, RetryPolicy};
use crate::error::{InstallError, ParseError};
use crate::model::{Position, RuleSet, Table};
use crate::parse::{Line, lines, parse_rule_tokens};
use crate::render::token_quote;
use crate::types::{ChainName, Family};

/// How the iptables tools are started: directly, or behind a command prefix such as
/// `ip netns exec NAME` or `nsenter --net=/proc/PID/ns/net --`. The library never enters namespaces
/// itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Executor {
    prefix: Vec<OsString>,
}

impl Executor {
    /// Run programs directly.
    pub fn local() -> Executor {
        Executor::default()
    }

    /// Run every program as `PREFIX… PROGRAM ARGS…`.
    pub fn with_prefix<I, S>(prefix: I) -> Executor
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        Executor {
            prefix: prefix.into_iter().map(Into::into).collect(),
        }
    }

    /// Run programs inside the named network namespace (`ip netns exec NAME`).
    pub fn netns(name: &str) -> Executor {
        Executor::with_prefix(["ip", "netns", "exec", name])
    }

    /// The prefix.
    pub fn prefix(&self) -> &[OsString] {
        &self.prefix
    }

    /// A [`Command`] for `program` behind the prefix.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        match self.prefix.split_first() {
            None => Command::new(program),
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(program);
                c
            }
        }
    }

    fn describe(&self, program: &OsStr, args: &[&str]) -> String {
        let mut parts: Vec<String> = self.prefix.iter().map(|p| p.to_string_lossy().into_owned()).collect();
        parts.push(program.to_string_lossy().into_owned());
        parts.extend(args.iter().map(|a| a.to_string()));
        parts.join(" ")
    }

    /// Run `program args`, feeding `stdin`; stdout on success.
    fn run(&self, program: &OsStr, args: &[&str], stdin: Option<&str>) -> Result<String, InstallError> {
        let command = self.describe(program, args);
        let mut cmd = self.command(program);
        cmd.args(args)
            .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let spawn = |source| InstallError::Spawn {
            command: command.clone(),
            source,
        };
        let mut child = cmd.spawn().map_err(spawn)?;
        if let Some(input) = stdin
            && let Some(mut pipe) = child.stdin.take()
        {
            use std::io::Write as _;
            // A child that exits early closes the pipe; its exit status tells what happened.
            let _ = pipe.write_all(input.as_bytes());
        }
        let out = child.wait_with_output().map_err(spawn)?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(InstallError::Command {
                command,
                status: out.status,
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            })
        }
    }
}

/// The iptables backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// iptables-nft (nf_tables kernel API).
    Nft,
    /// iptables-legacy (x_tables).
    Legacy,
}

impl Backend {
    fn mode(self) -> &'static str {
        match self {
            Backend::Nft => "nft",
            Backend::Legacy => "legacy",
        }
    }

    fn version_marker(self) -> &'static str {
        match self {
            Backend::Nft => "(nf_tables)",
            Backend::Legacy => "(legacy)",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.mode())
    }
}

/// The three programs of one family and backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Executables {
    iptables: OsString,
    save: OsString,
    restore: OsString,
}

impl Executables {
    /// Explicit programs (names looked up on `PATH`, or paths).
    pub fn new(iptables: impl Into<OsString>, save: impl Into<OsString>, restore: impl Into<OsString>) -> Executables {
        Executables {
            iptables: iptables.into(),
            save: save.into(),
            restore: restore.into(),
        }
    }

    /// `iptables-nft`, `iptables-nft-save`, `iptables-nft-restore` (or the `ip6tables`/`legacy` twins).
    pub fn for_backend(backend: Backend, family: Family) -> Executables {
        let base = match family {
            Family::V4 => "iptables",
            Family::V6 => "ip6tables",
        };
        let m = backend.mode();
        Executables::new(
            format!("{base}-{m}"),
            format!("{base}-{m}-save"),
            format!("{base}-{m}-restore"),
        )
    }

    /// The plain names (`iptables`, `iptables-save`, `iptables-restore`).
    pub fn plain(family: Family) -> Executables {
        let base = match family {
            Family::V4 => "iptables",
            Family::V6 => "ip6tables",
        };
        Executables::new(base, format!("{base}-save"), format!("{base}-restore"))
    }

    /// The `iptables` program.
    pub fn iptables(&self) -> &OsStr {
        &self.iptables
    }

    /// The `iptables-save` program.
    pub fn save(&self) -> &OsStr {
        &self.save
    }

    /// The `iptables-restore` program.
    pub fn restore(&self) -> &OsStr {
        &self.restore
    }
}

/// What marks chains and rules as ours: the chain prefix (`KUMA_MESH` → chains `KUMA_MESH_*`) and the
/// comment prefix (`kuma/mesh/transparent/proxy` → comments `kuma/mesh/transparent/proxy/*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ownership {
    chain_prefix: String,
    comment_prefix: String,
}

impl Default for Ownership {
    fn default() -> Ownership {
        Ownership::new(crate::KUMA_CHAIN_PREFIX, crate::KUMA_COMMENT_PREFIX)
    }
}

impl Ownership {
    /// Custom prefixes.
    pub fn new(chain_prefix: &str, comment_prefix: &str) -> Ownership {
        Ownership {
            chain_prefix: chain_prefix.to_string(),
            comment_prefix: comment_prefix.to_string(),
        }
    }

    /// The prefixes of a configuration.
    pub fn of(config: &Config) -> Ownership {
        Ownership::new(config.chain_prefix(), config.comment_prefix())
    }

    /// Whether a chain name is ours.
    pub fn owns_chain(&self, name: &str) -> bool {
        name.strip_prefix(self.chain_prefix.as_str())
            .is_some_and(|rest| rest.starts_with('_'))
    }

    /// Whether a comment is ours.
    pub fn owns_comment(&self, comment: &str) -> bool {
        comment
            .strip_prefix(self.comment_prefix.as_str())
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    }
}

/// What an install or uninstall did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct InstallReport {
    /// The family.
    pub family: Family,
    /// The backend used.
    pub backend: Backend,
    /// Previous rules of ours deleted from other chains.
    pub removed_rules: usize,
    /// Our chains flushed or deleted.
    pub removed_chains: usize,
    /// Rules added.
    pub added_rules: usize,
    /// How many restore attempts were made (0 when there was nothing to do).
    pub attempts: u32,
    /// The iptables-restore input that was applied (empty when there was nothing to do).
    pub script: String,
}

/// One difference between the installed rules and the model.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Drift {
    /// A chain of the model does not exist.
    MissingChain {
        /// The table.
        table: Table,
        /// The chain.
        chain: String,
    },
    /// A chain with our prefix exists but is not in the model.
    UnexpectedChain {
        /// The table.
        table: Table,
        /// The chain.
        chain: String,
    },
    /// A rule of the model is not installed.
    MissingRule {
        /// The table.
        table: Table,
        /// The chain.
        chain: String,
        /// The rule, as `iptables-save` would print it.
        rule: String,
    },
    /// A rule of ours (in one of our chains, or carrying our comment, or jumping to our chain) is not
    /// in the model.
    UnexpectedRule {
        /// The table.
        table: Table,
        /// The chain.
        chain: String,
        /// The rule as `iptables-save` printed it.
        rule: String,
    },
    /// All rules are there but in another order.
    Misordered {
        /// The table.
        table: Table,
        /// The chain.
        chain: String,
        /// The order found.
        found: Vec<String>,
    },
}

impl fmt::Display for Drift {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Drift::MissingChain { table, chain } => write!(f, "missing chain {table}/{chain}"),
            Drift::UnexpectedChain { table, chain } => write!(f, "unexpected chain {table}/{chain}"),
            Drift::MissingRule { table, chain, rule } => write!(f, "missing rule in {table}/{chain}: {rule}"),
            Drift::UnexpectedRule { table, chain, rule } => write!(f, "unexpected rule in {table}/{chain}: {rule}"),
            Drift::Misordered { table, chain, .. } => write!(f, "rules of {table}/{chain} are out of order"),
        }
    }
}

/// The result of [`Installer::verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriftReport {
    family: Family,
    drifts: Vec<Drift>,
}

impl DriftReport {
    /// The family checked.
    pub fn family(&self) -> Family {
        self.family
    }

    /// The differences found.
    pub fn drifts(&self) -> &[Drift] {
        &self.drifts
    }

    /// Whether the installed rules match the model.
    pub fn is_clean(&self) -> bool {
        self.drifts.is_empty()
    }
}

impl fmt::Display for DriftReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.drifts.is_empty() {
            return write!(f, "{}: installed rules match the model", self.family);
        }
        write!(f, "{}: {} difference(s)", self.family, self.drifts.len())?;
        for d in &self.drifts {
            write!(f, "\n  {d}")?;
        }
        Ok(())
    }
}

/// Installs, removes and verifies rule sets (see the module docs for the transaction it runs).
///
/// `Installer` is a plain value: the executor, optional backend and programs, retry policy and the
/// ownership prefixes. Backend detection runs once and is remembered.
#[derive(Debug)]
pub struct Installer {
    executor: Executor,
    /// The backend, and whether its programs are the plain `iptables*` names.
    backend: OnceLock<(Backend, bool)>,
    executables: [Option<Executables>; 2],
    retry: RetryPolicy,
    ownership: Ownership,
}

impl Clone for Installer {
    fn clone(&self) -> Installer {
        let backend = OnceLock::new();
        if let Some(b) = self.backend.get() {
            let _ = backend.set(*b);
        }
        Installer {
            executor: self.executor.clone(),
            backend,
            executables: self.executables.clone(),
            retry: self.retry,
            ownership: self.ownership.clone(),
        }
    }
}

/// One rule line of a saved table, as the installer needs it.
#[derive(Debug, Clone)]
struct SavedRule {
    chain: String,
    args: Vec<String>,
    jump: Option<String>,
    comments: Vec<String>,
    canonical: Option<String>,
}

#[derive(Debug, Clone, Default)]
struct SavedTable {
    chains: Vec<String>,
    rules: Vec<SavedRule>,
    /// Whether a built-in chain has a policy other than ACCEPT.
    strict_policy: bool,
}

#[derive(Debug, Clone, Default)]
struct Snapshot {
    /// Tables in save order with their raw text (counters kept), for rollback.
    blocks: Vec<(Table, String)>,
    tables: Vec<(Table, SavedTable)>,
}

impl Snapshot {
    fn table(&self, t: Table) -> Option<&SavedTable> {
        self.tables.iter().find(|(n, _)| *n == t).map(|(_, s)| s)
    }

    fn parse(text: &str, family: Family, command: &str) -> Result<Snapshot, InstallError> {
        let err = |source: ParseError| InstallError::Save {
            command: command.to_string(),
            source,
        };
        let mut snap = Snapshot::default();
        let mut current: Option<(Table, SavedTable, String)> = None;
        let raw_lines: Vec<&str> = text.lines().collect();
        for (n, line) in lines(text) {
            let raw = raw_lines.get(n - 1).copied().unwrap_or_default();
            let line = match line {
                Ok(line) => line,
                // A rule of someone else's that this parser cannot type (say, a chain name it
                // rejects) is still kept: its text stays in the snapshot and its jump and comment
                // are read from the plain tokens.
                Err(_) if current.is_some() && raw.trim_start().starts_with(['-', '[']) => {
                    if let Some((_, table, block)) = current.as_mut() {
                        let body = raw.trim_start();
                        let body = if body.starts_with('[') {
                            body.split_once(']').map(|(_, r)| r.trim_start()).unwrap_or(body)
                        } else {
                            body
                        };
                        let mut toks = crate::parse::tokenize(body)
                            .unwrap_or_else(|_| body.split_whitespace().map(str::to_string).collect());
                        if toks.len() >= 2 && matches!(toks[0].as_str(), "-A" | "--append") {
                            let chain = toks[1].clone();
                            toks.drain(..2);
                            let mut r = saved_rule(&chain, toks, family);
                            r.canonical = None;
                            table.rules.push(r);
                        }
                        block.push_str(raw);
                        block.push('\n');
                    }
                    continue;
                }
                Err(k) => return Err(err(ParseError::at(n, k))),
            };
            match line {
                Line::Table(t) => current = Some((t, SavedTable::default(), format!("{raw}\n"))),
                Line::Commit => {
                    if let Some((t, table, mut block)) = current.take() {
                        block.push_str("COMMIT\n");
                        snap.blocks.push((t, block));
                        snap.tables.push((t, table));
                    }
                }
                Line::Chain { name, policy } => {
                    if let Some((_, table, block)) = current.as_mut() {
                        if policy.is_some_and(|p| p != crate::model::Policy::Accept) {
                            table.strict_policy = true;
                        }
                        if !name.is_builtin() {
                            table.chains.push(name.as_str().to_string());
                        }
                        block.push_str(raw);
                        block.push('\n');
                    }
                }
                Line::NewChain(name) => {
                    if let Some((_, table, block)) = current.as_mut() {
                        if !name.is_builtin() {
                            table.chains.push(name.as_str().to_string());
                        }
                        block.push_str(raw);
                        block.push('\n');
                    }
                }
                Line::Rule { chain, args, .. } => {
                    if let Some((_, table, block)) = current.as_mut() {
                        table.rules.push(saved_rule(chain.as_str(), args, family));
                        block.push_str(raw);
                        block.push('\n');
                    }
                }
            }
        }
        Ok(snap)
    }

    /// The tables as text without counters, for comparing two snapshots.
    fn comparable(&self) -> Vec<(Table, String)> {
        self.blocks.iter().map(|(t, b)| (*t, strip_counters(b))).collect()
    }
}

fn strip_counters(block: &str) -> String {
    block
        .lines()
        .map(|l| {
            let l = if l.starts_with('[') {
                l.split_once("] ").map(|(_, r)| r).unwrap_or(l)
            } else {
                l
            };
            if l.starts_with(':') {
                l.split(" [").next().unwrap_or(l).to_string()
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn saved_rule(chain: &str, args: Vec<String>, family: Family) -> SavedRule {
    let mut jump = None;
    let mut comments = Vec::new();
    for w in args.windows(2) {
        match w[0].as_str() {
            "-j" | "--jump" | "-g" | "--goto" => jump = Some(w[1].clone()),
            "--comment" => comments.push(w[1].clone()),
            _ => {}
        }
    }
    let canonical = parse_rule_tokens(args.clone(), Some(family))
        .ok()
        .map(|r| r.canonical().to_save_args());
    SavedRule {
        chain: chain.to_string(),
        args,
        jump,
        comments,
        canonical,
    }
}

/// Which line of the restore input iptables blamed (`line 5: …`, `Error occurred at line: 5`).
fn blamed_line(stderr: &str) -> Option<usize> {
    for marker in ["line: ", "line "] {
        for (i, _) in stderr.match_indices(marker) {
            let digits: String = stderr[i + marker.len()..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            if let Ok(n) = digits.parse::<usize>() {
                return Some(n);
            }
        }
    }
    None
}

struct Plan {
    script: String,
    removed_rules: usize,
    removed_chains: usize,
    added_rules: usize,
    tables: Vec<Table>,
}

impl Installer {
    /// An installer with Kuma's defaults (backend detected, Kuma's retry policy and prefixes).
    pub fn new(executor: Executor) -> Installer {
        Installer {
            executor,
            backend: OnceLock::new(),
            executables: [None, None],
            retry: RetryPolicy::default(),
            ownership: Ownership::default(),
        }
    }

    /// An installer with the retry policy and prefixes of `config`.
    pub fn from_config(config: &Config, executor: Executor) -> Installer {
        Installer::new(executor)
            .with_retry(config.retry())
            .with_ownership(Ownership::of(config))
    }

    /// Use this backend instead of detecting one.
    pub fn with_backend(self, backend: Backend) -> Installer {
        let installer = Installer {
            backend: OnceLock::new(),
            ..self
        };
        let _ = installer.backend.set((backend, false));
        installer
    }

    /// Use these programs for `family` (Kuma's `--iptables-executables`); their `--version` (or
    /// [`with_backend`](Self::with_backend)) decides whether the legacy `--wait` flags are used.
    pub fn with_executables(mut self, family: Family, executables: Executables) -> Installer {
        self.executables[family_index(family)] = Some(executables);
        self
    }

    /// Set the retry and lock-wait policy.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Installer {
        self.retry = retry;
        self
    }

    /// Set what counts as ours.
    pub fn with_ownership(mut self, ownership: Ownership) -> Installer {
        self.ownership = ownership;
        self
    }

    /// The executor.
    pub fn executor(&self) -> &Executor {
        &self.executor
    }

    /// Detect the backend like Kuma: a backend is usable when its `iptables`, `-save` and `-restore`
    /// report that mode in `--version`; if only one is usable it wins; if both already hold rules nft
    /// wins unless only legacy has Docker's `DOCKER_OUTPUT` chain; if only legacy holds rules legacy
    /// wins; otherwise nft. Unlike Kuma, legacy tables are only read when the kernel lists them
    /// (`/proc/net/ip_tables_names`), so detection never instantiates legacy tables.
    pub fn detect_backend(&self) -> Result<Backend, InstallError> {
        if let Some((b, _)) = self.backend.get() {
            return Ok(*b);
        }
        let nft = self.probe_backend(Backend::Nft);
        let legacy = self.probe_backend(Backend::Legacy);
        let chosen = match (nft, legacy) {
            (Err(n), Err(l)) => return Err(InstallError::NoBackend { nft: n, legacy: l }),
            (Ok(n), Err(_)) => (Backend::Nft, n.plain),
            (Err(_), Ok(l)) => (Backend::Legacy, l.plain),
            (Ok(n), Ok(l)) => match (n.has_rules, l.has_rules) {
                (true, true) if l.docker_output && !n.docker_output => (Backend::Legacy, l.plain),
                (false, true) => (Backend::Legacy, l.plain),
                _ => (Backend::Nft, n.plain),
            },
        };
        Ok(self.backend.get_or_init(|| chosen).0)
    }

    /// Whether `program --version` reports `backend`.
    fn reports(&self, program: &OsStr, backend: Backend) -> Result<(), String> {
        let out = self
            .executor
            .run(program, &["--version"], None)
            .map_err(|e| e.to_string())?;
        let ok = match backend {
            Backend::Nft => out.contains(Backend::Nft.version_marker()),
            Backend::Legacy => !out.contains('(') || out.contains(Backend::Legacy.version_marker()),
        };
        if ok {
            Ok(())
        } else {
            Err(format!("`{}` reports `{}`", program.to_string_lossy(), out.trim()))
        }
    }

    /// Probe one backend: `iptables-MODE*`, else the plain `iptables*` programs when they report that
    /// mode; then whether it already holds rules or Docker's `DOCKER_OUTPUT` chain.
    fn probe_backend(&self, backend: Backend) -> Result<BackendState, String> {
        let suffixed = Executables::for_backend(backend, Family::V4);
        let plain = Executables::plain(Family::V4);
        let all = |e: &Executables| -> Result<(), String> {
            [&e.iptables, &e.save, &e.restore]
                .into_iter()
                .try_for_each(|p| self.reports(p, backend))
        };
        let (exes, is_plain) = match all(&suffixed) {
            Ok(()) => (suffixed, false),
            Err(first) => match all(&plain) {
                Ok(()) => (plain, true),
                Err(_) => return Err(first),
            },
        };
        if backend == Backend::Legacy {
            let names = self
                .executor
                .run(OsStr::new("cat"), &["/proc/net/ip_tables_names"], None)
                .unwrap_or_default();
            if names.trim().is_empty() {
                return Ok(BackendState {
                    plain: is_plain,
                    ..BackendState::default()
                });
            }
        }
        let text = self.executor.run(&exes.save, &[], None).map_err(|e| e.to_string())?;
        let snap = Snapshot::parse(&text, Family::V4, &exes.save.to_string_lossy()).map_err(|e| e.to_string())?;
        Ok(BackendState {
            plain: is_plain,
            has_rules: snap
                .tables
                .iter()
                .any(|(_, t)| !t.rules.is_empty() || !t.chains.is_empty()),
            docker_output: snap
                .table(Table::Nat)
                .is_some_and(|t| t.chains.iter().any(|c| c == "DOCKER_OUTPUT")),
        })
    }

    /// The backend and programs for `family`.
    pub fn executables(&self, family: Family) -> Result<(Backend, Executables), InstallError> {
        if let Some(exes) = &self.executables[family_index(family)] {
            let backend = match self.backend.get() {
                Some((b, _)) => *b,
                None if self.reports(&exes.restore, Backend::Nft).is_ok() => Backend::Nft,
                None => Backend::Legacy,
            };
            return Ok((backend, exes.clone()));
        }
        let backend = self.detect_backend()?;
        let plain = self.backend.get().is_some_and(|(_, plain)| *plain);
        let exes = if plain {
            Executables::plain(family)
        } else {
            Executables::for_backend(backend, family)
        };
        Ok((backend, exes))
    }

    /// `iptables-save` of `family` (no counters).
    pub fn save(&self, family: Family) -> Result<String, InstallError> {
        let (_, exes) = self.executables(family)?;
        self.executor.run(&exes.save, &[], None)
    }

    /// Probe the host like Kuma before rendering: `DOCKER_OUTPUT` in nat, the comment match, the
    /// conntrack match and CT target, and the mangle table. The loopback name stays `lo`.
    pub fn probe_host(&self, family: Family) -> Result<HostFacts, InstallError> {
        let (backend, exes) = self.executables(family)?;
        let text = self.executor.run(&exes.save, &[], None)?;
        let snap = Snapshot::parse(&text, family, &exes.save.to_string_lossy())?;
        let help = |args: &[&str]| self.executor.run(&exes.iptables, args, None).is_ok();
        let mangle = match backend {
            Backend::Nft => self.executor.run(&exes.save, &["-t", "mangle"], None).is_ok(),
            Backend::Legacy => true,
        };
        Ok(HostFacts::default()
            .with_docker_output(
                snap.table(Table::Nat)
                    .is_some_and(|t| t.chains.iter().any(|c| c == "DOCKER_OUTPUT")),
            )
            .with_comment_match(help(&["-m", "comment", "-h"]))
            .with_conntrack_zones(help(&["-m", "conntrack", "-h"]) && help(&["-j", "CT", "-h"]))
            .with_mangle(mangle))
    }

    fn snapshot(&self, family: Family) -> Result<(Backend, Executables, Snapshot), InstallError> {
        let (backend, exes) = self.executables(family)?;
        let text = self.executor.run(&exes.save, &["-c"], None)?;
        let snap = Snapshot::parse(&text, family, &exes.save.to_string_lossy())?;
        Ok((backend, exes, snap))
    }

    /// Install `rules`: replace whatever of ours is installed for its family with `rules`, in one
    /// transaction; on failure put the saved state back and say what failed.
    pub fn install(&self, rules: &RuleSet) -> Result<InstallReport, InstallError> {
        let (backend, exes, snap) = self.snapshot(rules.family())?;
        let plan = self.plan(&snap, Some(rules), true);
        self.apply(rules.family(), backend, &exes, &snap, plan)
    }

    /// Remove everything of ours from `family`: our chains, and rules carrying our comment or jumping
    /// to our chains. Rules installed without comments that jump nowhere of ours (e.g. the DNS
    /// REDIRECT with `--disable-comments`) are only found by [`uninstall_rules`](Self::uninstall_rules).
    ///
    /// On the nft backend a table left with nothing but empty built-in chains (ACCEPT policies) after
    /// removing our rules is deleted too, so that install + uninstall leaves `iptables-save` as it was
    /// even when the install created the raw or mangle table. Legacy tables cannot be deleted.
    pub fn uninstall(&self, family: Family) -> Result<InstallReport, InstallError> {
        let (backend, exes, snap) = self.snapshot(family)?;
        let plan = self.plan(&snap, None, false);
        let touched = plan.tables.clone();
        let report = self.apply(family, backend, &exes, &snap, plan)?;
        self.drop_emptied_tables(family, backend, &exes, &touched)?;
        Ok(report)
    }

    /// Delete (nft) the tables among `touched` that are now empty.
    fn drop_emptied_tables(
        &self,
        family: Family,
        backend: Backend,
        exes: &Executables,
        touched: &[Table],
    ) -> Result<(), InstallError> {
        if backend != Backend::Nft || touched.is_empty() {
            return Ok(());
        }
        let (_, _, now) = self.snapshot(family)?;
        let script: String = now
            .tables
            .iter()
            .filter(|(t, saved)| {
                touched.contains(t) && saved.rules.is_empty() && saved.chains.is_empty() && !saved.strict_policy
            })
            .map(|(t, _)| format!("*{t}\nCOMMIT\n"))
            .collect();
        if script.is_empty() {
            return Ok(());
        }
        self.executor.run(&exes.restore, &[], Some(&script)).map(|_| ())
    }

    /// Like [`uninstall`](Self::uninstall), also removing rules identical to rules of `rules`.
    pub fn uninstall_rules(&self, rules: &RuleSet) -> Result<InstallReport, InstallError> {
        let (backend, exes, snap) = self.snapshot(rules.family())?;
        let plan = self.plan(&snap, Some(rules), false);
        let touched = plan.tables.clone();
        let report = self.apply(rules.family(), backend, &exes, &snap, plan)?;
        self.drop_emptied_tables(rules.family(), backend, &exes, &touched)?;
        Ok(report)
    }

    fn owned_chains(&self, snap: &Snapshot, rules: Option<&RuleSet>, table: Table) -> BTreeSet<String> {
        let mut ours: BTreeSet<String> = BTreeSet::new();
        if let Some(t) = snap.table(table) {
            for c in &t.chains {
                let in_model = rules
                    .and_then(|r| r.table(table))
                    .is_some_and(|m| m.user_chains().any(|u| u.as_str() == c));
                if self.ownership.owns_chain(c) || in_model {
                    ours.insert(c.clone());
                }
            }
        }
        ours
    }

    fn is_our_rule(&self, r: &SavedRule, our_chains: &BTreeSet<String>, model: Option<&[String]>) -> bool {
        r.jump
            .as_ref()
            .is_some_and(|j| our_chains.contains(j) || self.ownership.owns_chain(j))
            || r.comments.iter().any(|c| self.ownership.owns_comment(c))
            || model.is_some_and(|m| r.canonical.as_ref().is_some_and(|c| m.contains(c)))
    }

    fn plan(&self, snap: &Snapshot, model: Option<&RuleSet>, add: bool) -> Plan {
        let mut plan = Plan {
            script: String::new(),
            removed_rules: 0,
            removed_chains: 0,
            added_rules: 0,
            tables: Vec::new(),
        };
        for (table, saved) in &snap.tables {
            let ours = self.owned_chains(snap, model, *table);
            let removed = saved.rules.iter().filter(|r| !ours.contains(&r.chain)).filter(|r| {
                let expected = model.map(|rs| expected_canonical(rs, *table, &r.chain));
                self.is_our_rule(r, &ours, expected.as_deref())
            });
            let n = removed.count();
            if n > 0 || !ours.is_empty() {
                plan.tables.push(*table);
                plan.removed_rules += n;
                plan.removed_chains += ours.len();
            }
        }
        if let Some(rs) = model.filter(|_| add) {
            for t in rs.tables() {
                if !t.is_empty() && !plan.tables.contains(&t.table()) {
                    plan.tables.push(t.table());
                }
            }
            plan.added_rules = rs.rule_count();
        }
        plan.script = self.script(snap, &plan.tables, model, add);
        plan
    }

    fn apply(
        &self,
        family: Family,
        backend: Backend,
        exes: &Executables,
        snap: &Snapshot,
        plan: Plan,
    ) -> Result<InstallReport, InstallError> {
        let mut report = InstallReport {
            family,
            backend,
            removed_rules: plan.removed_rules,
            removed_chains: plan.removed_chains,
            added_rules: plan.added_rules,
            attempts: 0,
            script: String::new(),
        };
        if plan.tables.is_empty() {
            return Ok(report);
        }
        let mut args: Vec<String> = Vec::new();
        if backend == Backend::Legacy && self.retry.wait_seconds > 0 {
            args.push(format!("--wait={}", self.retry.wait_seconds));
            if self.retry.wait_interval_micros > 0 {
                args.push(format!("--wait-interval={}", self.retry.wait_interval_micros));
            }
        }
        args.push("--noflush".to_string());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let attempts = self.retry.max_retries.saturating_add(1);
        let mut last = None;
        for attempt in 1..=attempts {
            match self.executor.run(&exes.restore, &args, Some(&plan.script)) {
                Ok(_) => {
                    report.attempts = attempt;
                    report.script = plan.script;
                    return Ok(report);
                }
                Err(e) => {
                    if let Err(rollback) = self.rollback(family, backend, exes, snap) {
                        return Err(InstallError::Rollback {
                            apply: Box::new(self.apply_error(e, attempt, &plan.script)),
                            rollback: Box::new(rollback),
                        });
                    }
                    last = Some(e);
                    if attempt < attempts {
                        std::thread::sleep(self.retry.sleep_between_retries);
                    }
                }
            }
        }
        match last {
            Some(e) => Err(self.apply_error(e, attempts, &plan.script)),
            None => Ok(report),
        }
    }

    fn apply_error(&self, e: InstallError, attempts: u32, script: &str) -> InstallError {
        match e {
            InstallError::Command {
                command,
                status,
                stderr,
            } => {
                let line = blamed_line(&stderr);
                let input = line
                    .and_then(|n| script.lines().nth(n.saturating_sub(1)))
                    .map(str::to_string);
                InstallError::Apply {
                    command,
                    attempts,
                    status,
                    stderr,
                    line,
                    input,
                    script: script.to_string(),
                }
            }
            other => other,
        }
    }

    /// Put every table that differs from `snap` back (flush-restore of its saved text with counters;
    /// a table that did not exist is emptied, which on nft removes it), then check the result.
    fn rollback(
        &self,
        family: Family,
        backend: Backend,
        exes: &Executables,
        snap: &Snapshot,
    ) -> Result<(), InstallError> {
        let now = self.executor.run(&exes.save, &["-c"], None)?;
        let now = Snapshot::parse(&now, family, &exes.save.to_string_lossy())?;
        let before = snap.comparable();
        let after = now.comparable();
        let mut script = String::new();
        let mut changed = Vec::new();
        let all: BTreeSet<Table> = before.iter().chain(after.iter()).map(|(t, _)| *t).collect();
        for t in all {
            let b = before.iter().find(|(n, _)| *n == t).map(|(_, s)| s);
            let a = after.iter().find(|(n, _)| *n == t).map(|(_, s)| s);
            if a == b {
                continue;
            }
            changed.push(t.to_string());
            match snap.blocks.iter().find(|(n, _)| *n == t) {
                Some((_, block)) => script.push_str(block),
                None => script.push_str(&format!("*{t}\nCOMMIT\n")),
            }
        }
        if changed.is_empty() {
            return Ok(());
        }
        let mut args = vec!["--counters"];
        let wait;
        if backend == Backend::Legacy && self.retry.wait_seconds > 0 {
            wait = format!("--wait={}", self.retry.wait_seconds);
            args.push(&wait);
        }
        self.executor.run(&exes.restore, &args, Some(&script))?;
        let check = self.executor.run(&exes.save, &["-c"], None)?;
        let check = Snapshot::parse(&check, family, &exes.save.to_string_lossy())?.comparable();
        let differs: Vec<String> = before
            .iter()
            .filter(|(t, b)| check.iter().find(|(n, _)| n == t).map(|(_, s)| s) != Some(b))
            .map(|(t, _)| t.to_string())
            .chain(
                check
                    .iter()
                    .filter(|(t, _)| !before.iter().any(|(n, _)| n == t))
                    .filter(|_| backend == Backend::Nft)
                    .map(|(t, _)| t.to_string()),
            )
            .collect();
        if differs.is_empty() {
            Ok(())
        } else {
            Err(InstallError::RollbackMismatch { tables: differs })
        }
    }

    /// Compare what is installed for `rules.family()` with `rules` (see [`Drift`]).
    pub fn verify(&self, rules: &RuleSet) -> Result<DriftReport, InstallError> {
        let family = rules.family();
        let (_, exes) = self.executables(family)?;
        let text = self.executor.run(&exes.save, &[], None)?;
        let snap = Snapshot::parse(&text, family, &exes.save.to_string_lossy())?;
        Ok(verify_against(&self.ownership, &snap, rules))
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct BackendState {
    plain: bool,
    has_rules: bool,
    docker_output: bool,
}

fn family_index(f: Family) -> usize {
    match f {
        Family::V4 => 0,
        Family::V6 => 1,
    }
}

fn expected_canonical(rules: &RuleSet, table: Table, chain: &str) -> Vec<String> {
    rules
        .table(table)
        .and_then(|t| t.chain(chain))
        .map(|c| {
            c.effective_rules()
                .iter()
                .map(|r| r.canonical().to_save_args())
                .collect()
        })
        .unwrap_or_default()
}

impl Installer {
    /// The restore input for `tables`: removal of our previous state, then (when `add`) the model.
    fn script(&self, snap: &Snapshot, tables: &[Table], model: Option<&RuleSet>, add: bool) -> String {
        let mut tables = tables.to_vec();
        tables.sort_by_key(|t| t.restore_rank());
        let empty = SavedTable::default();
        let mut out = String::new();
        for table in tables {
            let saved = snap.table(table).unwrap_or(&empty);
            out.push_str(&format!("*{table}\n"));
            out.push_str(&self.removal_lines(snap, table, saved, model, add));
            if let Some(t) = model.filter(|_| add).and_then(|r| r.table(table)) {
                for c in t.user_chains() {
                    if !saved.chains.iter().any(|s| s == c.as_str()) {
                        out.push_str(&format!("-N {c}\n"));
                    }
                }
                for c in t.chains() {
                    for pr in c.rules() {
                        let args = pr.rule.to_restore_args();
                        let head = match pr.position {
                            Position::Append => format!("-A {}", c.name()),
                            Position::Insert(n) => format!("-I {} {n}", c.name()),
                        };
                        if args.is_empty() {
                            out.push_str(&format!("{head}\n"));
                        } else {
                            out.push_str(&format!("{head} {args}\n"));
                        }
                    }
                }
            }
            out.push_str("COMMIT\n");
        }
        out
    }

    /// The `-D`, `-F` and `-X` lines removing our previous state from one table; chains of the model
    /// are kept (flushed) when `add`.
    fn removal_lines(
        &self,
        snap: &Snapshot,
        table: Table,
        saved: &SavedTable,
        model: Option<&RuleSet>,
        add: bool,
    ) -> String {
        let ours = self.owned_chains(snap, model, table);
        let mut out = String::new();
        for r in &saved.rules {
            if ours.contains(&r.chain) {
                continue;
            }
            let expected = model.map(|rs| expected_canonical(rs, table, &r.chain));
            if self.is_our_rule(r, &ours, expected.as_deref()) {
                let args: Vec<String> = r.args.iter().map(|a| token_quote(a)).collect();
                out.push_str(&format!("-D {} {}\n", r.chain, args.join(" ")));
            }
        }
        let keep: BTreeSet<&str> = model
            .filter(|_| add)
            .and_then(|r| r.table(table))
            .map(|t| t.user_chains().map(ChainName::as_str).collect())
            .unwrap_or_default();
        for c in &ours {
            out.push_str(&format!("-F {c}\n"));
        }
        for c in &ours {
            if !keep.contains(c.as_str()) {
                out.push_str(&format!("-X {c}\n"));
            }
        }
        out
    }
}

fn verify_against(ownership: &Ownership, snap: &Snapshot, rules: &RuleSet) -> DriftReport {
    let mut drifts = Vec::new();
    let empty = SavedTable::default();
    let mut tables: Vec<Table> = rules.tables().iter().map(|t| t.table()).collect();
    for (t, _) in &snap.tables {
        if !tables.contains(t) {
            tables.push(*t);
        }
    }
    for table in tables {
        let saved = snap.table(table).unwrap_or(&empty);
        let model = rules.table(table);
        let model_users: Vec<&ChainName> = model.map(|m| m.user_chains().collect()).unwrap_or_default();
        for c in &model_users {
            if !saved.chains.iter().any(|s| s == c.as_str()) {
                drifts.push(Drift::MissingChain {
                    table,
                    chain: c.to_string(),
                });
            }
        }
        for c in &saved.chains {
            if ownership.owns_chain(c) && !model_users.iter().any(|m| m.as_str() == c) {
                drifts.push(Drift::UnexpectedChain {
                    table,
                    chain: c.clone(),
                });
            }
        }
        let mut chains: Vec<String> = model
            .map(|m| m.chains().iter().map(|c| c.name().to_string()).collect())
            .unwrap_or_default();
        for r in &saved.rules {
            if !chains.contains(&r.chain) {
                chains.push(r.chain.clone());
            }
        }
        let our_chains: BTreeSet<String> = saved
            .chains
            .iter()
            .filter(|c| ownership.owns_chain(c) || model_users.iter().any(|m| m.as_str() == c.as_str()))
            .cloned()
            .collect();
        for chain in chains {
            let expected = expected_canonical(rules, table, &chain);
            let whole_chain = our_chains.contains(&chain);
            let found: Vec<String> = saved
                .rules
                .iter()
                .filter(|r| r.chain == chain)
                .filter(|r| {
                    whole_chain
                        || r.jump
                            .as_ref()
                            .is_some_and(|j| our_chains.contains(j) || ownership.owns_chain(j))
                        || r.comments.iter().any(|c| ownership.owns_comment(c))
                        || r.canonical.as_ref().is_some_and(|c| expected.contains(c))
                })
                .map(|r| r.canonical.clone().unwrap_or_else(|| r.args.join(" ")))
                .collect();
            if found == expected {
                continue;
            }
            let mut missing = expected.clone();
            let mut unexpected = Vec::new();
            for f in &found {
                if let Some(i) = missing.iter().position(|m| m == f) {
                    missing.remove(i);
                } else {
                    unexpected.push(f.clone());
                }
            }
            if missing.is_empty() && unexpected.is_empty() {
                drifts.push(Drift::Misordered {
                    table,
                    chain: chain.clone(),
                    found,
                });
                continue;
            }
            for rule in missing {
                drifts.push(Drift::MissingRule {
                    table,
                    chain: chain.clone(),
                    rule,
                });
            }
            for rule in unexpected {
                drifts.push(Drift::UnexpectedRule {
                    table,
                    chain: chain.clone(),
                    rule,
                });
            }
        }
    }
    DriftReport {
        family: rules.family(),
        drifts,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blamed_lines_are_found() {
        assert_eq!(
            blamed_line("iptables-restore v1.8.9 (nf_tables): \nline 5: RULE_APPEND failed (Invalid argument)"),
            Some(5)
        );
        assert_eq!(
            blamed_line("Chain 'X' does not exist\nError occurred at line: 4\nTry"),
            Some(4)
        );
        assert_eq!(blamed_line("no such thing"), None);
    }

    #[test]
    fn ownership_is_by_prefix() {
        let o = Ownership::default();
        assert!(o.owns_chain("KUMA_MESH_OUTBOUND"));
        assert!(!o.owns_chain("KUMA_MESHY"));
        assert!(o.owns_comment("kuma/mesh/transparent/proxy/x"));
        assert!(!o.owns_comment("kuma/mesh/transparent/proxyx"));
    }

    #[test]
    fn executor_prefixes_commands() {
        let c = Executor::netns("a").command("iptables-save");
        assert_eq!(c.get_program(), "ip");
        let args: Vec<_> = c.get_args().collect();
        assert_eq!(args, ["netns", "exec", "a", "iptables-save"]);
    }

    #[test]
    fn plans_remove_only_ours() {
        let save = "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n:DOCKER - [0:0]\n:KUMA_MESH_OUTBOUND - [0:0]\n-A OUTPUT -j DOCKER\n-A OUTPUT -p tcp -j KUMA_MESH_OUTBOUND\n-A OUTPUT -m comment --comment \"kuma/mesh/transparent/proxy/x y\" -j RETURN\n-A DOCKER -j RETURN\n-A KUMA_MESH_OUTBOUND -j RETURN\nCOMMIT\n";
        let snap = Snapshot::parse(save, Family::V4, "save").unwrap();
        let i = Installer::new(Executor::local());
        let plan = i.plan(&snap, None, false);
        assert_eq!(
            plan.script,
            "*nat\n-D OUTPUT -p tcp -j KUMA_MESH_OUTBOUND\n-D OUTPUT -m comment --comment \"kuma/mesh/transparent/proxy/x y\" -j RETURN\n-F KUMA_MESH_OUTBOUND\n-X KUMA_MESH_OUTBOUND\nCOMMIT\n"
        );
        let rules = RuleSet::build(&Config::default(), Family::V4);
        let plan = i.plan(&snap, Some(&rules), true);
        assert!(
            plan.script
                .contains("-F KUMA_MESH_OUTBOUND\n-N KUMA_MESH_INBOUND\n-N KUMA_MESH_INBOUND_REDIRECT\n"),
            "{}",
            plan.script
        );
        assert!(!plan.script.contains("-X KUMA_MESH_OUTBOUND"));
    }
}
