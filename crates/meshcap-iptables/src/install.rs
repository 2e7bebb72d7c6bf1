//! Applying rule sets: [`Executor`] (how commands are started, e.g. inside a network namespace),
//! [`Backend`] detection the way Kuma does it, and the [`Installer`] with `install`, `uninstall` and
//! `verify`.
//!
//! Every change is one `iptables-restore --noflush` transaction per family that first deletes our
//! previous rules (`-D`, found by our comment prefix, by jumping to one of our chains, or by being
//! identical to a rule we are about to add), flushes or deletes our chains (`-F`, `-X`) and then adds
//! the new rules. Other programs' chains and rules are never touched. Before it, the whole ruleset is
//! saved (`iptables-save -c`); after it, the rules are read back and compared with the model. If
//! anything fails, every table that changed is restored from the snapshot and checked against it,
//! for every family of the call. The whole call holds an exclusive lock on the network namespace,
//! so two installs never interleave.

use std::collections::BTreeSet;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs::{File, TryLockError};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::config::{Config, HostFacts, RetryPolicy};
use crate::error::{InstallError, Outcome, ParseError, SavedRules, Step};
use crate::model::{Position, RuleSet, Table};
use crate::parse::{Line, lines, parse_rule_tokens};
use crate::render::token_quote;
use crate::safety::{LoopRisk, check_loop_safety};
use crate::types::{ChainName, Family};

/// Where `ip netns` keeps named network namespaces (iproute2's `NETNS_RUN_DIR`).
const NETNS_RUN_DIR: &str = "/var/run/netns";

/// How the iptables tools are started: directly, or behind a command prefix such as
/// `ip netns exec NAME` or `nsenter --net=/proc/PID/ns/net --`. The library never enters namespaces
/// itself.
///
/// An executor also names the lock file that serialises installs in its network namespace: an
/// exclusive `flock` on the namespace file itself (`/proc/self/ns/net` for [`local`](Self::local),
/// `/var/run/netns/NAME` for [`netns`](Self::netns)). Every process that locks the same namespace,
/// whichever path it opens, waits for the others; nothing is created on disk. A custom prefix has no
/// lock unless one is given with [`with_lock_file`](Self::with_lock_file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Executor {
    prefix: Vec<OsString>,
    lock_file: Option<PathBuf>,
}

impl Default for Executor {
    fn default() -> Executor {
        Executor::local()
    }
}

impl Executor {
    /// Run programs directly (in this process's network namespace, locked through
    /// `/proc/self/ns/net`).
    pub fn local() -> Executor {
        Executor {
            prefix: Vec::new(),
            lock_file: Some(PathBuf::from("/proc/self/ns/net")),
        }
    }

    /// Run every program as `PREFIX… PROGRAM ARGS…` (no lock; see
    /// [`with_lock_file`](Self::with_lock_file)).
    pub fn with_prefix<I, S>(prefix: I) -> Executor
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        Executor {
            prefix: prefix.into_iter().map(Into::into).collect(),
            lock_file: None,
        }
    }

    /// Run programs inside the named network namespace (`ip netns exec NAME`), locked through
    /// `/var/run/netns/NAME`.
    pub fn netns(name: &str) -> Executor {
        Executor {
            lock_file: Some(Path::new(NETNS_RUN_DIR).join(name)),
            ..Executor::with_prefix(["ip", "netns", "exec", name])
        }
    }

    /// Lock this file (exclusive `flock`) while installing or uninstalling: the network namespace
    /// file the prefix enters (`/proc/PID/ns/net`, `/var/run/netns/NAME`), so that every installer
    /// of that namespace agrees on it.
    pub fn with_lock_file(mut self, path: impl Into<PathBuf>) -> Executor {
        self.lock_file = Some(path.into());
        self
    }

    /// Do not lock (the caller serialises installs itself).
    pub fn without_lock(mut self) -> Executor {
        self.lock_file = None;
        self
    }

    /// The prefix.
    pub fn prefix(&self) -> &[OsString] {
        &self.prefix
    }

    /// The lock file, if any.
    pub fn lock_file(&self) -> Option<&Path> {
        self.lock_file.as_deref()
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
        let mut child = match cmd.spawn() {
            Ok(child) => child,
            Err(source) if source.kind() == std::io::ErrorKind::NotFound => {
                let missing = self.prefix.first().map(OsString::as_os_str).unwrap_or(program);
                return Err(InstallError::NotFound {
                    command,
                    program: missing.to_string_lossy().into_owned(),
                });
            }
            Err(source) => return Err(InstallError::Spawn { command, source }),
        };
        if let Some(input) = stdin
            && let Some(mut pipe) = child.stdin.take()
        {
            use std::io::Write as _;
            // A child that exits early closes the pipe; its exit status tells what happened.
            let _ = pipe.write_all(input.as_bytes());
        }
        let out = match child.wait_with_output() {
            Ok(out) => out,
            Err(source) => return Err(InstallError::Spawn { command, source }),
        };
        if out.status.success() {
            return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
        }
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        let program = program.to_string_lossy();
        if not_found(&program, out.status.code(), &stderr) {
            return Err(InstallError::NotFound {
                command,
                program: program.into_owned(),
            });
        }
        Err(InstallError::Command {
            command,
            status: out.status,
            stderr,
        })
    }
}

/// Whether a failed command says that `program` does not exist, the way the usual prefixes report a
/// failed exec: `ip netns exec` (`exec of "P" failed: No such file or directory`), `nsenter`
/// (`failed to execute P: No such file or directory`), `env` (`'P': No such file or directory`) and
/// shells (exit status 127).
fn not_found(program: &str, code: Option<i32>, stderr: &str) -> bool {
    let enoent = "No such file or directory";
    code == Some(127)
        || [
            format!("exec of \"{program}\" failed: {enoent}"),
            format!("failed to execute {program}: {enoent}"),
            format!("'{program}': {enoent}"),
        ]
        .iter()
        .any(|m| stderr.contains(m.as_str()))
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
    /// The other backend.
    pub fn other(self) -> Backend {
        match self {
            Backend::Nft => Backend::Legacy,
            Backend::Legacy => Backend::Nft,
        }
    }

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
    /// Rules of ours that were found with the other backend and removed in the same call, so that
    /// the rules are never split across backends.
    pub other_backend: Option<Box<InstallReport>>,
    /// Things the caller should know (rules removed from the other backend, legacy tables that could
    /// not be read, an emptied table that could not be deleted).
    pub warnings: Vec<String>,
}

/// A family that [`Installer::install_config`] (or `uninstall_config`, `verify_config`) left alone,
/// and why.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Skipped {
    /// The family.
    pub family: Family,
    /// Why (the missing program).
    pub reason: String,
}

impl fmt::Display for Skipped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} rules skipped: {}", self.family, self.reason)
    }
}

/// What [`Installer::install_config`] or [`Installer::uninstall_config`] did: one report per family
/// changed, and the families skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Installation {
    /// One report per family, IPv4 first.
    pub reports: Vec<InstallReport>,
    /// Families left alone (IPv6 in dual-stack mode when the ip6tables programs are not installed).
    pub skipped: Vec<Skipped>,
}

/// What [`Installer::verify_config`] found: one report per family (drift and loop risk), and the
/// families skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Verification {
    /// One report per family, IPv4 first.
    pub reports: Vec<DriftReport>,
    /// Families not checked (IPv6 in dual-stack mode when the ip6tables programs are not installed).
    pub skipped: Vec<Skipped>,
}

impl Verification {
    /// Whether every family matches the model and no loop risk was found.
    pub fn is_clean(&self) -> bool {
        self.reports.iter().all(DriftReport::is_clean)
    }
}

impl fmt::Display for Verification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for r in &self.reports {
            if !first {
                f.write_str("\n")?;
            }
            first = false;
            write!(f, "{r}")?;
        }
        for s in &self.skipped {
            if !first {
                f.write_str("\n")?;
            }
            first = false;
            write!(f, "{s}")?;
        }
        Ok(())
    }
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
    /// Rules or chains of ours are installed with the other backend as well: the rules are split
    /// across backends (both apply to every packet). `install` and `uninstall` remove them.
    OtherBackend {
        /// The backend holding them.
        backend: Backend,
        /// Rules of ours in other chains there.
        rules: usize,
        /// Our chains there.
        chains: usize,
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
            Drift::OtherBackend { backend, rules, chains } => write!(
                f,
                "{rules} rule(s) and {chains} chain(s) of ours are installed with the {backend} backend too: run install \
                 or uninstall to remove them"
            ),
        }
    }
}

/// The result of [`Installer::verify`]: the differences from the model and, from
/// [`Installer::verify_config`], whether the proxy's own traffic could loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriftReport {
    family: Family,
    drifts: Vec<Drift>,
    loop_risk: Option<LoopRisk>,
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

    /// The loop risk found by [`Installer::verify_config`] for the proxy's uid.
    pub fn loop_risk(&self) -> Option<&LoopRisk> {
        self.loop_risk.as_ref()
    }

    /// Whether the installed rules match the model (and no loop risk was found).
    pub fn is_clean(&self) -> bool {
        self.drifts.is_empty() && self.loop_risk.is_none()
    }
}

impl fmt::Display for DriftReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.drifts.is_empty() {
            write!(f, "{}: installed rules match the model", self.family)?;
        } else {
            write!(f, "{}: {} difference(s)", self.family, self.drifts.len())?;
            for d in &self.drifts {
                write!(f, "\n  {d}")?;
            }
        }
        if let Some(risk) = &self.loop_risk {
            write!(f, "\n  {risk}")?;
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
    /// Whether the other backend's programs are installed (and are the plain names).
    other: OnceLock<Option<bool>>,
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
        let other = OnceLock::new();
        if let Some(o) = self.other.get() {
            let _ = other.set(*o);
        }
        Installer {
            executor: self.executor.clone(),
            backend,
            other,
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
    /// Whether iptables-nft-save warned that legacy tables exist too.
    legacy_tables_present: bool,
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
        let mut snap = Snapshot {
            legacy_tables_present: text.contains("iptables-legacy tables present"),
            ..Snapshot::default()
        };
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

/// One family's rules with one backend as saved before a change: what a rollback puts back.
#[derive(Debug, Clone)]
struct Saved {
    family: Family,
    backend: Backend,
    exes: Executables,
    snap: Snapshot,
}

impl Saved {
    /// The saved rules as a restore input that returns the family to this state by itself: every
    /// saved table, and on nft an empty block for every other table (which deletes it).
    fn to_saved_rules(&self, executor: &Executor) -> SavedRules {
        let mut text: String = self.snap.blocks.iter().map(|(_, b)| b.as_str()).collect();
        if self.backend == Backend::Nft {
            for t in ALL_TABLES {
                if self.snap.table(t).is_none() {
                    text.push_str(&format!("*{t}\nCOMMIT\n"));
                }
            }
        }
        SavedRules {
            family: self.family,
            backend: self.backend,
            command: executor.describe(&self.exes.restore, &["--counters"]),
            text,
        }
    }
}

const ALL_TABLES: [Table; 5] = [Table::Raw, Table::Mangle, Table::Nat, Table::Filter, Table::Security];

/// The exclusive lock on a network namespace, released when dropped (closing the file releases the
/// `flock`, also when the process dies).
#[derive(Debug)]
struct NamespaceLock {
    _file: Option<File>,
}

/// A step of an install or uninstall that failed, before the outcome is known.
type StepFailure = Box<(Step, InstallError)>;

fn at(step: Step) -> impl FnOnce(InstallError) -> StepFailure {
    move |e| Box::new((step, e))
}

/// The warning added when legacy tables exist that nobody can read.
const UNREADABLE_LEGACY: &str = "iptables-legacy tables exist but the iptables-legacy programs are not installed, so rules \
     there were not checked: install them (Debian: iptables) so that rules of ours there are found and removed";

impl Installer {
    /// An installer with Kuma's defaults (backend detected, Kuma's retry policy and prefixes).
    pub fn new(executor: Executor) -> Installer {
        Installer {
            executor,
            backend: OnceLock::new(),
            other: OnceLock::new(),
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

    /// Use this backend instead of detecting one. Rules of ours found with the other backend are
    /// still removed by `install` and `uninstall`.
    pub fn with_backend(self, backend: Backend) -> Installer {
        let installer = Installer {
            backend: OnceLock::new(),
            other: OnceLock::new(),
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

    /// Set the retry policy. Its `wait_seconds` is also how long `install` and `uninstall` wait for
    /// another installer holding the namespace's lock (0: fail at once).
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
    /// wins; otherwise nft. A backend whose `iptables-save` fails counts as unusable, as in Kuma.
    /// Unlike Kuma, legacy tables are only read when the kernel lists them
    /// (`/proc/net/ip_tables_names`), so detection never instantiates legacy tables.
    pub fn detect_backend(&self) -> Result<Backend, InstallError> {
        if let Some((b, _)) = self.backend.get() {
            return Ok(*b);
        }
        let nft = self.probe_backend(Backend::Nft);
        let legacy = self.probe_backend(Backend::Legacy);
        let chosen = match (&nft, &legacy) {
            (Err(n), Err(l)) => {
                return Err(InstallError::NoBackend {
                    nft: n.clone(),
                    legacy: l.clone(),
                });
            }
            (Ok(n), Err(_)) => (Backend::Nft, n.plain),
            (Err(_), Ok(l)) => (Backend::Legacy, l.plain),
            (Ok(n), Ok(l)) => match (n.has_rules, l.has_rules) {
                (true, true) if l.docker_output && !n.docker_output => (Backend::Legacy, l.plain),
                (false, true) => (Backend::Legacy, l.plain),
                _ => (Backend::Nft, n.plain),
            },
        };
        let other = match chosen.0 {
            Backend::Nft => legacy.ok().map(|l| l.plain),
            Backend::Legacy => nft.ok().map(|n| n.plain),
        };
        let _ = self.other.set(other);
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

    /// The programs of `backend` for `family`: `iptables-MODE*`, else the plain `iptables*` names
    /// when they report that mode (and whether they are the plain names).
    fn programs(&self, backend: Backend, family: Family) -> Result<(Executables, bool), String> {
        let suffixed = Executables::for_backend(backend, family);
        let plain = Executables::plain(family);
        let all = |e: &Executables| -> Result<(), String> {
            [&e.iptables, &e.save, &e.restore]
                .into_iter()
                .try_for_each(|p| self.reports(p, backend))
        };
        match all(&suffixed) {
            Ok(()) => Ok((suffixed, false)),
            Err(first) => match all(&plain) {
                Ok(()) => Ok((plain, true)),
                Err(_) => Err(first),
            },
        }
    }

    /// Probe one backend: its programs, then whether it already holds rules or Docker's
    /// `DOCKER_OUTPUT` chain.
    fn probe_backend(&self, backend: Backend) -> Result<BackendState, String> {
        let (exes, is_plain) = self.programs(backend, Family::V4)?;
        if backend == Backend::Legacy && !self.legacy_tables_listed(Family::V4) {
            return Ok(BackendState {
                plain: is_plain,
                ..BackendState::default()
            });
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

    /// Whether the kernel lists legacy tables of `family` (reading a legacy table that is not listed
    /// would create it).
    fn legacy_tables_listed(&self, family: Family) -> bool {
        let names = match family {
            Family::V4 => "/proc/net/ip_tables_names",
            Family::V6 => "/proc/net/ip6_tables_names",
        };
        self.executor
            .run(OsStr::new("cat"), &[names], None)
            .is_ok_and(|text| !text.trim().is_empty())
    }

    /// The programs of the backend that was not chosen, when they are installed.
    fn other_programs(&self, chosen: Backend, family: Family) -> Option<Executables> {
        let plain = *self
            .other
            .get_or_init(|| self.programs(chosen.other(), Family::V4).ok().map(|(_, plain)| plain));
        plain.map(|plain| {
            if plain {
                Executables::plain(family)
            } else {
                Executables::for_backend(chosen.other(), family)
            }
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

    /// `iptables-save -c` of `family` with `exes`, parsed.
    fn take(&self, family: Family, backend: Backend, exes: &Executables) -> Result<Saved, InstallError> {
        let text = self.executor.run(&exes.save, &["-c"], None)?;
        let snap = Snapshot::parse(&text, family, &exes.save.to_string_lossy())?;
        Ok(Saved {
            family,
            backend,
            exes: exes.clone(),
            snap,
        })
    }

    /// The rules of the other backend for `family` when it holds rules of ours (by prefix, or equal
    /// to a rule of `model`): what would split our rules across backends. `None` when its programs
    /// are not installed or, for legacy, the kernel lists no tables.
    fn other_backend(
        &self,
        chosen: Backend,
        family: Family,
        model: Option<&RuleSet>,
    ) -> Result<Option<Saved>, InstallError> {
        let other = chosen.other();
        let Some(exes) = self.other_programs(chosen, family) else {
            return Ok(None);
        };
        if other == Backend::Legacy && !self.legacy_tables_listed(family) {
            return Ok(None);
        }
        let saved = match self.take(family, other, &exes) {
            Ok(saved) => saved,
            Err(InstallError::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        Ok((!self.plan(&saved.snap, model, false).tables.is_empty()).then_some(saved))
    }

    /// A warning when the chosen (nft) backend reports legacy tables that no program here can read.
    fn unreadable_legacy(&self, saved: &Saved, other: Option<&Saved>) -> Option<String> {
        (saved.backend == Backend::Nft
            && saved.snap.legacy_tables_present
            && other.is_none()
            && self.other_programs(Backend::Nft, saved.family).is_none())
        .then(|| UNREADABLE_LEGACY.to_string())
    }

    /// Take the namespace's lock, waiting up to the retry policy's `wait_seconds`.
    fn lock(&self) -> Result<NamespaceLock, InstallError> {
        let Some(path) = self.executor.lock_file() else {
            return Ok(NamespaceLock { _file: None });
        };
        let lock_error = |source| InstallError::Lock {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(lock_error)?;
        let started = Instant::now();
        let wait = Duration::from_secs(u64::from(self.retry.wait_seconds));
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(NamespaceLock { _file: Some(file) }),
                Err(TryLockError::WouldBlock) => {
                    let waited = started.elapsed();
                    if waited >= wait {
                        return Err(InstallError::Locked {
                            path: path.to_path_buf(),
                            waited,
                        });
                    }
                    std::thread::sleep((wait - waited).min(Duration::from_millis(20)));
                }
                Err(TryLockError::Error(source)) => return Err(lock_error(source)),
            }
        }
    }

    /// Install `rules`: replace whatever of ours is installed for its family with `rules`, in one
    /// transaction, read the result back and compare it with `rules`, and remove rules of ours left
    /// with the other backend. On any failure the saved state is put back; the error says which
    /// step failed and in what state the tables are ([`InstallError::Failed`]).
    ///
    /// # Errors
    ///
    /// [`InstallError::Locked`] when another installer holds the namespace longer than the wait;
    /// otherwise [`InstallError::Failed`].
    pub fn install(&self, rules: &RuleSet) -> Result<InstallReport, InstallError> {
        let _lock = self.lock()?;
        let mut done = Vec::new();
        self.install_one(rules, &mut done).map_err(|failure| {
            let (step, e) = *failure;
            self.fail(rules.family(), step, e, &done)
        })
    }

    /// Install rule sets of several families (IPv4 then IPv6, say) as one unit: when one fails,
    /// every family installed before it in this call is put back too.
    ///
    /// # Errors
    ///
    /// As [`install`](Self::install); [`Outcome::Restored`] lists every family put back.
    pub fn install_all(&self, sets: &[RuleSet]) -> Result<Vec<InstallReport>, InstallError> {
        let _lock = self.lock()?;
        self.install_locked(sets)
    }

    fn install_locked(&self, sets: &[RuleSet]) -> Result<Vec<InstallReport>, InstallError> {
        let mut done = Vec::new();
        let mut reports = Vec::with_capacity(sets.len());
        for rules in sets {
            match self.install_one(rules, &mut done) {
                Ok(report) => reports.push(report),
                Err(failure) => {
                    let (step, e) = *failure;
                    return Err(self.fail(rules.family(), step, e, &done));
                }
            }
        }
        Ok(reports)
    }

    /// What a sidecar's init step calls: probe the host for each family of `config`, build the rules
    /// and install them all with [`install_all`](Self::install_all).
    ///
    /// In dual-stack mode IPv6 is skipped, like Kuma, when the ip6tables programs of the backend are
    /// not installed; [`Installation::skipped`] says so and the caller should warn. Any other
    /// ip6tables failure is an error (set `ipFamilyMode: ipv4` if IPv6 is not wanted). In IPv4 mode
    /// the ip6tables programs are never run.
    ///
    /// # Errors
    ///
    /// As [`install_all`](Self::install_all).
    pub fn install_config(&self, config: &Config) -> Result<Installation, InstallError> {
        let _lock = self.lock()?;
        let (sets, skipped) = self.rule_sets(config)?;
        let reports = self.install_locked(&sets)?;
        Ok(Installation { reports, skipped })
    }

    /// The families of `config` that can be used, each with its rule set built for the probed host.
    fn rule_sets(&self, config: &Config) -> Result<(Vec<RuleSet>, Vec<Skipped>), InstallError> {
        let unchanged = |family, source| InstallError::Failed {
            family,
            step: Step::Detect,
            outcome: Outcome::Unchanged,
            source: Box::new(source),
        };
        let mut sets = Vec::new();
        let mut skipped = Vec::new();
        for &family in config.families() {
            if family == Family::V6 {
                let (_, exes) = self.executables(family).map_err(|e| unchanged(family, e))?;
                let present = [&exes.iptables, &exes.save, &exes.restore]
                    .into_iter()
                    .try_for_each(|p| self.executor.run(p, &["--version"], None).map(|_| ()));
                match present {
                    Ok(()) => {}
                    Err(e @ InstallError::NotFound { .. }) => {
                        skipped.push(Skipped {
                            family,
                            reason: e.to_string(),
                        });
                        continue;
                    }
                    Err(e) => return Err(unchanged(family, e)),
                }
            }
            let host = self.probe_host(family).map_err(|e| unchanged(family, e))?;
            sets.push(RuleSet::build_with(config, family, &host));
        }
        Ok((sets, skipped))
    }

    fn install_one(&self, rules: &RuleSet, done: &mut Vec<Saved>) -> Result<InstallReport, StepFailure> {
        let family = rules.family();
        let (backend, exes) = self.executables(family).map_err(at(Step::Detect))?;
        let saved = self.take(family, backend, &exes).map_err(at(Step::Snapshot))?;
        let other = self
            .other_backend(backend, family, Some(rules))
            .map_err(at(Step::Detect))?;
        done.push(saved.clone());
        let plan = self.plan(&saved.snap, Some(rules), true);
        let mut report = self.apply(&saved, plan).map_err(at(Step::Apply))?;
        let back = self.take(family, backend, &exes).map_err(at(Step::Verify))?;
        let drift = verify_against(&self.ownership, &back.snap, rules);
        if !drift.is_clean() {
            return Err(Box::new((Step::Verify, InstallError::Drift { report: drift })));
        }
        report.warnings.extend(self.unreadable_legacy(&saved, other.as_ref()));
        if let Some(other) = other {
            done.push(other.clone());
            let cleaned = self.remove_from(&other, Some(rules), Step::Cleanup(other.backend))?;
            report.warnings.push(format!(
                "removed {} rule(s) and {} chain(s) of ours that an earlier install left with the {} backend",
                cleaned.removed_rules, cleaned.removed_chains, other.backend
            ));
            report.other_backend = Some(Box::new(cleaned));
        }
        Ok(report)
    }

    /// Remove everything of ours from `family`: our chains, and rules carrying our comment or jumping
    /// to our chains, with whichever backend holds them. Rules installed without comments that jump
    /// nowhere of ours (e.g. the DNS REDIRECT with `--disable-comments`) are only found by
    /// [`uninstall_rules`](Self::uninstall_rules).
    ///
    /// On the nft backend a table left with nothing but empty built-in chains (ACCEPT policies) after
    /// removing our rules is deleted too, so that install + uninstall leaves `iptables-save` as it was
    /// even when the install created the raw or mangle table. Legacy tables cannot be deleted.
    ///
    /// # Errors
    ///
    /// As [`install`](Self::install).
    pub fn uninstall(&self, family: Family) -> Result<InstallReport, InstallError> {
        let _lock = self.lock()?;
        let mut done = Vec::new();
        self.remove_one(family, None, &mut done).map_err(|failure| {
            let (step, e) = *failure;
            self.fail(family, step, e, &done)
        })
    }

    /// Like [`uninstall`](Self::uninstall), also removing rules identical to rules of `rules`.
    ///
    /// # Errors
    ///
    /// As [`install`](Self::install).
    pub fn uninstall_rules(&self, rules: &RuleSet) -> Result<InstallReport, InstallError> {
        let _lock = self.lock()?;
        let mut done = Vec::new();
        self.remove_one(rules.family(), Some(rules), &mut done)
            .map_err(|failure| {
                let (step, e) = *failure;
                self.fail(rules.family(), step, e, &done)
            })
    }

    /// Remove the rules of every family of `config` as one unit (like
    /// [`uninstall_rules`](Self::uninstall_rules) for each, all put back if one fails), skipping
    /// IPv6 like [`install_config`](Self::install_config).
    ///
    /// # Errors
    ///
    /// As [`install_all`](Self::install_all).
    pub fn uninstall_config(&self, config: &Config) -> Result<Installation, InstallError> {
        let _lock = self.lock()?;
        let (sets, skipped) = self.rule_sets(config)?;
        let mut done = Vec::new();
        let mut reports = Vec::with_capacity(sets.len());
        for rules in &sets {
            match self.remove_one(rules.family(), Some(rules), &mut done) {
                Ok(report) => reports.push(report),
                Err(failure) => {
                    let (step, e) = *failure;
                    return Err(self.fail(rules.family(), step, e, &done));
                }
            }
        }
        Ok(Installation { reports, skipped })
    }

    fn remove_one(
        &self,
        family: Family,
        model: Option<&RuleSet>,
        done: &mut Vec<Saved>,
    ) -> Result<InstallReport, StepFailure> {
        let (backend, exes) = self.executables(family).map_err(at(Step::Detect))?;
        let saved = self.take(family, backend, &exes).map_err(at(Step::Snapshot))?;
        let other = self.other_backend(backend, family, model).map_err(at(Step::Detect))?;
        done.push(saved.clone());
        let mut report = self.remove_from(&saved, model, Step::Remove)?;
        report.warnings.extend(self.unreadable_legacy(&saved, other.as_ref()));
        if let Some(other) = other {
            done.push(other.clone());
            let cleaned = self.remove_from(&other, model, Step::Cleanup(other.backend))?;
            report.warnings.push(format!(
                "removed {} rule(s) and {} chain(s) of ours from the {} backend too",
                cleaned.removed_rules, cleaned.removed_chains, other.backend
            ));
            report.other_backend = Some(Box::new(cleaned));
        }
        Ok(report)
    }

    /// Remove ours from the rules `saved` was taken of, read them back to check that nothing of ours
    /// is left, then (nft) delete the tables this emptied, best effort.
    fn remove_from(&self, saved: &Saved, model: Option<&RuleSet>, step: Step) -> Result<InstallReport, StepFailure> {
        let plan = self.plan(&saved.snap, model, false);
        let touched = plan.tables.clone();
        let mut report = self.apply(saved, plan).map_err(at(step))?;
        if touched.is_empty() {
            return Ok(report);
        }
        let back = self
            .take(saved.family, saved.backend, &saved.exes)
            .map_err(at(Step::Verify))?;
        let left = self.plan(&back.snap, model, false);
        if !left.tables.is_empty() {
            let drift = verify_against(&self.ownership, &back.snap, &RuleSet::new(saved.family));
            return Err(Box::new((Step::Verify, InstallError::Drift { report: drift })));
        }
        if let Err(e) = self.drop_emptied_tables(saved, &back.snap, &touched) {
            report
                .warnings
                .push(format!("could not delete the tables left empty: {e}"));
        }
        Ok(report)
    }

    /// Delete (nft) the tables among `touched` that are now empty.
    fn drop_emptied_tables(&self, saved: &Saved, now: &Snapshot, touched: &[Table]) -> Result<(), InstallError> {
        if saved.backend != Backend::Nft {
            return Ok(());
        }
        let script: String = now
            .tables
            .iter()
            .filter(|(t, table)| {
                touched.contains(t) && table.rules.is_empty() && table.chains.is_empty() && !table.strict_policy
            })
            .map(|(t, _)| format!("*{t}\nCOMMIT\n"))
            .collect();
        if script.is_empty() {
            return Ok(());
        }
        self.executor.run(&saved.exes.restore, &[], Some(&script)).map(|_| ())
    }

    /// Put every family of `done` back (last first) and wrap `error` with the outcome.
    fn fail(&self, family: Family, step: Step, error: InstallError, done: &[Saved]) -> InstallError {
        let outcome = if done.is_empty() {
            Outcome::Unchanged
        } else {
            let mut failed: Vec<(&Saved, InstallError)> = Vec::new();
            for saved in done.iter().rev() {
                if let Err(e) = self.restore(saved) {
                    failed.push((saved, e));
                }
            }
            let saved: Vec<SavedRules> = failed.iter().map(|(s, _)| s.to_saved_rules(&self.executor)).collect();
            match failed.into_iter().next() {
                None => {
                    let mut families = Vec::new();
                    for s in done {
                        if !families.contains(&s.family) {
                            families.push(s.family);
                        }
                    }
                    families.sort_by_key(|f| family_index(*f));
                    Outcome::Restored { families }
                }
                Some((_, rollback)) => Outcome::NotRestored {
                    rollback: Box::new(rollback),
                    saved,
                },
            }
        };
        InstallError::Failed {
            family,
            step,
            outcome,
            source: Box::new(error),
        }
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

    /// Run the restore transaction of `plan` against the state `saved` was taken of. Between
    /// attempts the saved state is put back first; after the last failed attempt that is left to the
    /// caller (which puts back every family of the call).
    fn apply(&self, saved: &Saved, plan: Plan) -> Result<InstallReport, InstallError> {
        let mut report = InstallReport {
            family: saved.family,
            backend: saved.backend,
            removed_rules: plan.removed_rules,
            removed_chains: plan.removed_chains,
            added_rules: plan.added_rules,
            attempts: 0,
            script: String::new(),
            other_backend: None,
            warnings: Vec::new(),
        };
        if plan.tables.is_empty() {
            return Ok(report);
        }
        let mut args: Vec<String> = Vec::new();
        if saved.backend == Backend::Legacy && self.retry.wait_seconds > 0 {
            args.push(format!("--wait={}", self.retry.wait_seconds));
            if self.retry.wait_interval_micros > 0 {
                args.push(format!("--wait-interval={}", self.retry.wait_interval_micros));
            }
        }
        args.push("--noflush".to_string());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let attempts = self.retry.max_retries.saturating_add(1);
        for attempt in 1..=attempts {
            match self.executor.run(&saved.exes.restore, &args, Some(&plan.script)) {
                Ok(_) => {
                    report.attempts = attempt;
                    report.script = plan.script;
                    return Ok(report);
                }
                Err(e) => {
                    let hopeless = matches!(e, InstallError::NotFound { .. } | InstallError::Spawn { .. });
                    let e = self.apply_error(e, attempt, &plan.script);
                    if hopeless || attempt == attempts || self.restore(saved).is_err() {
                        return Err(e);
                    }
                    std::thread::sleep(self.retry.sleep_between_retries);
                }
            }
        }
        Ok(report)
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

    /// Put the state `saved` was taken of back, retrying (at least once more) as the retry policy
    /// allows: the rollback is what keeps a failure from losing rules.
    fn restore(&self, saved: &Saved) -> Result<(), InstallError> {
        let attempts = self.retry.max_retries.saturating_add(1).max(2);
        let mut attempt = 1;
        loop {
            match self.rollback(saved) {
                Ok(()) => return Ok(()),
                Err(e) if attempt >= attempts => return Err(e),
                Err(_) => {
                    attempt += 1;
                    std::thread::sleep(self.retry.sleep_between_retries);
                }
            }
        }
    }

    /// Put every table that differs from `saved` back (flush-restore of its saved text with
    /// counters; a table that did not exist is emptied, which on nft removes it), then check the
    /// result.
    fn rollback(&self, saved: &Saved) -> Result<(), InstallError> {
        let (family, backend, exes, snap) = (saved.family, saved.backend, &saved.exes, &saved.snap);
        let now = self.executor.run(&exes.save, &["-c"], None)?;
        let now = Snapshot::parse(&now, family, &exes.save.to_string_lossy())?;
        let before = snap.comparable();
        let after = now.comparable();
        let mut script = String::new();
        let all: BTreeSet<Table> = before.iter().chain(after.iter()).map(|(t, _)| *t).collect();
        for t in all {
            let b = before.iter().find(|(n, _)| *n == t).map(|(_, s)| s);
            let a = after.iter().find(|(n, _)| *n == t).map(|(_, s)| s);
            if a == b {
                continue;
            }
            match snap.blocks.iter().find(|(n, _)| *n == t) {
                Some((_, block)) => script.push_str(block),
                None => script.push_str(&format!("*{t}\nCOMMIT\n")),
            }
        }
        if script.is_empty() {
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

    /// Compare what is installed for `rules.family()` with `rules` (see [`Drift`]), including rules
    /// of ours left with the other backend ([`Drift::OtherBackend`]).
    pub fn verify(&self, rules: &RuleSet) -> Result<DriftReport, InstallError> {
        self.verify_with(rules, None)
    }

    /// What a sidecar calls at start-up: for each family of `config` (IPv6 skipped as in
    /// [`install_config`](Self::install_config)), compare the installed rules with the rules of
    /// `config` for the probed host, and check that outbound TCP of `config.proxy_uid()` (the uid the
    /// sidecar runs as) cannot be redirected back to it ([`check_loop_safety`], against the rules of
    /// both backends).
    ///
    /// # Errors
    ///
    /// When the tools cannot be run; differences and loop risks are in the [`Verification`].
    pub fn verify_config(&self, config: &Config) -> Result<Verification, InstallError> {
        let (sets, skipped) = self.rule_sets(config)?;
        let mut reports = Vec::with_capacity(sets.len());
        for rules in &sets {
            reports.push(self.verify_with(rules, Some(config.proxy_uid()))?);
        }
        Ok(Verification { reports, skipped })
    }

    fn verify_with(&self, rules: &RuleSet, uid: Option<u32>) -> Result<DriftReport, InstallError> {
        let family = rules.family();
        let (backend, exes) = self.executables(family)?;
        let text = self.executor.run(&exes.save, &[], None)?;
        let snap = Snapshot::parse(&text, family, &exes.save.to_string_lossy())?;
        let mut report = verify_against(&self.ownership, &snap, rules);
        let other = self.other_backend(backend, family, Some(rules))?;
        if let Some(other) = &other {
            let plan = self.plan(&other.snap, Some(rules), false);
            report.drifts.push(Drift::OtherBackend {
                backend: other.backend,
                rules: plan.removed_rules,
                chains: plan.removed_chains,
            });
        }
        if let Some(uid) = uid {
            report.loop_risk = check_loop_safety(&text, uid).err();
            if report.loop_risk.is_none()
                && let Some(other) = &other
            {
                let text: String = other.snap.blocks.iter().map(|(_, b)| b.as_str()).collect();
                report.loop_risk = check_loop_safety(&text, uid).err();
            }
        }
        Ok(report)
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
        loop_risk: None,
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
