//! Error types. Every message is lowercase and names the offending value.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

use crate::install::{Backend, DriftReport};
use crate::types::Family;

/// A single value (port, range, address, name, comment) failed validation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ValueError {
    /// Not a port number in 1–65535.
    #[error("invalid port `{value}`: expected a number from 1 to 65535")]
    Port {
        /// The rejected text.
        value: String,
    },
    /// A range whose first value is greater than its last.
    #[error("reversed range `{value}`: the first value must not exceed the last")]
    ReversedRange {
        /// The rejected text.
        value: String,
    },
    /// A port list with no entries.
    #[error("empty port list")]
    EmptyPortList,
    /// Not a UID or UID range.
    #[error("invalid uid `{value}`: expected a number or a range like 106-108")]
    Uid {
        /// The rejected text.
        value: String,
    },
    /// Not an IP address or CIDR.
    #[error("invalid address `{value}`: expected an IPv4/IPv6 address or CIDR")]
    Address {
        /// The rejected text.
        value: String,
    },
    /// Not a usable interface name.
    #[error("invalid interface name `{value}`: 1 to 15 printable characters without blanks, quotes, `/` or `:`")]
    Interface {
        /// The rejected text.
        value: String,
    },
    /// Not a usable chain name.
    #[error("invalid chain name `{value}`: 1 to 28 printable characters without blanks or quotes")]
    ChainName {
        /// The rejected text.
        value: String,
    },
    /// A comment that is too long or has control characters.
    #[error("invalid comment `{value}`: at most 255 bytes without control characters")]
    Comment {
        /// The rejected text.
        value: String,
    },
    /// Not a protocol name or number.
    #[error("invalid protocol `{value}`")]
    Protocol {
        /// The rejected text.
        value: String,
    },
    /// A log level outside 0–7 (or an unknown level name).
    #[error("invalid log level `{value}`: expected 0 to 7 or a syslog level name")]
    LogLevel {
        /// The rejected text.
        value: String,
    },
}

/// A [`Config`](crate::Config) could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A value of the named option is invalid.
    #[error("{option}: {source}")]
    Value {
        /// The option (Kuma's flag or config key) that carried the value.
        option: &'static str,
        /// What is wrong with the value.
        #[source]
        source: ValueError,
    },
    /// A redirect port also appears in an exclusion list, which would make capture impossible.
    #[error("redirect port {port} of {option} is also listed in {excluded_in}")]
    RedirectPortExcluded {
        /// The redirect option.
        option: &'static str,
        /// The port.
        port: u16,
        /// The exclusion option listing it.
        excluded_in: &'static str,
    },
    /// `--redirect-dns` and `--redirect-all-dns-traffic` were both requested.
    #[error("--redirect-dns and --redirect-all-dns-traffic are mutually exclusive")]
    ConflictingDnsModes,
    /// An `--exclude-outbound-ports-for-uids` entry is malformed.
    #[error("invalid uid exclusion `{value}`: {reason}")]
    UidExclusion {
        /// The rejected entry.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A `--vnet` entry is not `IFACE:CIDR`.
    #[error("invalid virtual network `{value}`: {reason}")]
    Vnet {
        /// The rejected entry.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An unknown `--ip-family-mode`.
    #[error("invalid ip family mode `{value}`: expected `dualstack` or `ipv4`")]
    IpFamilyMode {
        /// The rejected text.
        value: String,
    },
    /// The proxy user was given by name; the library only takes numeric UIDs (resolve names first).
    #[error("kuma-dp user `{name}` is not a numeric uid; resolve the user name to a uid before building")]
    UnresolvedUser {
        /// The user name.
        name: String,
    },
    /// Owner matches cannot see inbound traffic, so inbound UID exclusions cannot work (Kuma quirk Q6).
    #[error(
        "inbound uid exclusions `{value}` are not supported: the owner match only applies to locally generated traffic"
    )]
    InboundUidExclusion {
        /// The rejected entries.
        value: String,
    },
    /// A chain name derived from the prefix is too long or invalid.
    #[error("chain name `{value}` derived from the chain prefix is invalid (at most 28 printable characters)")]
    ChainName {
        /// The derived name.
        value: String,
    },
    /// An invalid duration (`retry.sleepBetweenRetries`).
    #[error("invalid duration `{value}`: expected a value like 2s or 500ms")]
    Duration {
        /// The rejected text.
        value: String,
    },
    /// A configuration source could not be parsed (serde feature).
    #[error("configuration source {source_name}: {message}")]
    Source {
        /// Which source (its position or name).
        source_name: String,
        /// The parser's message.
        message: String,
    },
}

/// Text in iptables-restore or iptables-save syntax could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {kind}")]
pub struct ParseError {
    /// 1-based line number (1 when parsing a single rule).
    pub line: usize,
    /// What went wrong.
    pub kind: ParseErrorKind,
}

/// What went wrong while parsing (see [`ParseError`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseErrorKind {
    /// A double quote was never closed.
    #[error("unterminated quote in `{text}`")]
    UnterminatedQuote {
        /// The text.
        text: String,
    },
    /// An option that this parser does not know.
    #[error("unknown option `{option}`")]
    UnknownOption {
        /// The option.
        option: String,
    },
    /// An option that needs a value came last.
    #[error("option `{option}` needs a value")]
    MissingValue {
        /// The option.
        option: String,
    },
    /// A value failed validation.
    #[error("{0}")]
    Value(#[from] ValueError),
    /// An unknown table name.
    #[error("unknown table `{name}`")]
    UnknownTable {
        /// The name.
        name: String,
    },
    /// A rule or chain line outside a `*table` block.
    #[error("`{text}` appears outside a table block")]
    OutsideTable {
        /// The line.
        text: String,
    },
    /// A line that is neither a table, chain, rule nor COMMIT.
    #[error("unexpected line `{text}`")]
    UnexpectedLine {
        /// The line.
        text: String,
    },
    /// A table block without COMMIT at the end of input.
    #[error("table `{table}` is not committed")]
    MissingCommit {
        /// The table.
        table: String,
    },
    /// An address of the other family.
    #[error("address `{address}` does not belong to {family}")]
    FamilyMismatch {
        /// The address.
        address: String,
        /// The family being parsed.
        family: crate::Family,
    },
    /// A rule that iptables would reject.
    #[error("{0}")]
    Rule(#[from] RuleError),
    /// A rule references a chain position that is not a positive number.
    #[error("invalid rule position `{value}`")]
    Position {
        /// The text.
        value: String,
    },
}

impl ParseError {
    pub(crate) fn at(line: usize, kind: impl Into<ParseErrorKind>) -> ParseError {
        ParseError {
            line,
            kind: kind.into(),
        }
    }
}

/// A combination of matches that iptables would reject.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RuleError {
    /// `--dport`/`--sport` without a loaded match or `-p tcp|udp` to take it.
    #[error("`{option}` needs `-p tcp`/`-p udp` or a tcp, udp or multiport match before it")]
    OrphanPortOption {
        /// The option.
        option: &'static str,
    },
    /// A port list given where only a single port or range is allowed.
    #[error("port list `{ports}` needs a multiport match")]
    PortListWithoutMultiport {
        /// The list.
        ports: String,
    },
    /// More than 15 multiport slots.
    #[error("multiport list `{ports}` uses {slots} slots; the kernel allows 15 (a range takes two)")]
    MultiportTooLong {
        /// The list.
        ports: String,
        /// The number of slots.
        slots: usize,
    },
    /// A multiport match that never got ports.
    #[error("multiport match without ports")]
    EmptyMultiport,
    /// Two options of the same kind where iptables allows one.
    #[error("option `{option}` given twice")]
    Duplicate {
        /// The option.
        option: &'static str,
    },
    /// An address of the other family.
    #[error("address `{address}` does not belong to {family}")]
    FamilyMismatch {
        /// The address.
        address: String,
        /// The family of the rule set.
        family: crate::Family,
    },
}

/// Running the iptables tools failed, or the rule set could not be applied.
///
/// [`Installer`](crate::Installer)'s `install*` and `uninstall*` methods report a failure as
/// [`InstallError::Failed`]: the family, the [`Step`] that failed, the [`Outcome`] (nothing changed,
/// the previous rules put back, or not put back with the saved rules to restore by hand) and, as its
/// [`source`](std::error::Error::source), the command that failed. The other variants are those
/// causes, and [`InstallError::Locked`] when another install holds the namespace.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InstallError {
    /// A program could not be started.
    #[error("could not run `{command}`")]
    Spawn {
        /// The command line.
        command: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A program is not installed (not on `PATH` where the executor runs it).
    #[error("`{program}` is not installed or not on PATH (running `{command}`)")]
    NotFound {
        /// The command line.
        command: String,
        /// The missing program.
        program: String,
    },
    /// A command exited unsuccessfully.
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// Its exit status.
        status: ExitStatus,
        /// Its standard error, trimmed.
        stderr: String,
    },
    /// `iptables-restore` rejected the rules.
    #[error(
        "`{command}` failed after {attempts} attempt(s) ({status}): {stderr}{}{}",
        line.map(|l| format!("; input line {l}")).unwrap_or_default(),
        input.as_ref().map(|t| format!(": `{t}`")).unwrap_or_default()
    )]
    Apply {
        /// The restore command line.
        command: String,
        /// How many times it was tried.
        attempts: u32,
        /// The last exit status.
        status: ExitStatus,
        /// The last standard error, trimmed.
        stderr: String,
        /// The input line iptables blamed, if it said.
        line: Option<usize>,
        /// The text of that input line.
        input: Option<String>,
        /// The full input that was fed to the command.
        script: String,
    },
    /// After a rollback the tables still differ from the snapshot taken before.
    #[error("the tables differ from the saved state after rollback (tables {tables:?})")]
    RollbackMismatch {
        /// The tables whose `iptables-save` text differs.
        tables: Vec<String>,
    },
    /// The rules read back after a successful `iptables-restore` are not the ones applied (another
    /// program changed them at the same moment, or the tool misreported).
    #[error("the rules read back differ from the rules applied: {report}")]
    Drift {
        /// The differences.
        report: DriftReport,
    },
    /// No usable iptables backend was found.
    #[error("no usable iptables backend (install iptables): nft: {nft}; legacy: {legacy}")]
    NoBackend {
        /// Why nft was rejected.
        nft: String,
        /// Why legacy was rejected.
        legacy: String,
    },
    /// The output of `iptables-save` could not be parsed.
    #[error("could not parse the output of `{command}`")]
    Save {
        /// The save command.
        command: String,
        /// The parse error.
        #[source]
        source: ParseError,
    },
    /// Another install or uninstall held the network namespace's lock for longer than the wait.
    #[error(
        "another install or uninstall is running in this network namespace (lock {} held for {}s); nothing was \
         changed: try again when it has finished",
        path.display(),
        waited.as_secs()
    )]
    Locked {
        /// The lock file (the network namespace file).
        path: PathBuf,
        /// How long this call waited.
        waited: Duration,
    },
    /// The lock file could not be opened or locked.
    #[error("could not lock {}; nothing was changed", path.display())]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A step of an install or uninstall failed; the outcome says what state the tables are in.
    #[error("{family}: {step} failed; {outcome}")]
    Failed {
        /// The family being installed or removed when it failed.
        family: Family,
        /// What was being done.
        step: Step,
        /// What state the tables were left in.
        outcome: Outcome,
        /// The failure.
        #[source]
        source: Box<InstallError>,
    },
}

impl InstallError {
    /// The outcome of a failed install or uninstall ([`InstallError::Failed`]).
    pub fn outcome(&self) -> Option<&Outcome> {
        match self {
            InstallError::Failed { outcome, .. } => Some(outcome),
            _ => None,
        }
    }

    /// The rules saved before a change that could not be put back ([`Outcome::NotRestored`]); feed
    /// each to its restore command to return to the previous state.
    pub fn saved_rules(&self) -> &[SavedRules] {
        match self.outcome() {
            Some(Outcome::NotRestored { saved, .. }) => saved,
            _ => &[],
        }
    }
}

/// A step of [`Installer`](crate::Installer)'s install and uninstall.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Step {
    /// Choosing the backend and probing the programs and the host.
    Detect,
    /// Saving the current rules (`iptables-save -c`).
    Snapshot,
    /// The `iptables-restore --noflush` transaction.
    Apply,
    /// Reading the rules back and comparing them with the model.
    Verify,
    /// Removing rules of ours found with the other backend.
    Cleanup(Backend),
    /// The removal transaction of an uninstall.
    Remove,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Detect => f.write_str("detecting the iptables backend and host"),
            Step::Snapshot => f.write_str("saving the current rules"),
            Step::Apply => f.write_str("applying the rules"),
            Step::Verify => f.write_str("reading the rules back"),
            Step::Cleanup(backend) => write!(f, "removing our rules from the {backend} backend"),
            Step::Remove => f.write_str("removing the rules"),
        }
    }
}

/// What state a failed install or uninstall left the tables in.
#[derive(Debug)]
#[non_exhaustive]
pub enum Outcome {
    /// It failed before anything was changed.
    Unchanged,
    /// Every table that changed was restored from the snapshot taken before and checked against it.
    Restored {
        /// The families whose rules were put back.
        families: Vec<Family>,
    },
    /// Putting the previous rules back failed too: the tables may be left changed.
    NotRestored {
        /// Why the rollback failed.
        rollback: Box<InstallError>,
        /// The rules as they were before, to restore by hand.
        saved: Vec<SavedRules>,
    },
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Unchanged => f.write_str("nothing was changed"),
            Outcome::Restored { families } => {
                let names: Vec<&str> = families.iter().map(|f| f.label()).collect();
                write!(f, "the previous {} rules were put back", names.join(" and "))
            }
            Outcome::NotRestored { rollback, saved } => {
                write!(f, "putting the previous rules back failed too ({}", rollback)?;
                let mut cause = std::error::Error::source(rollback.as_ref());
                while let Some(c) = cause {
                    write!(f, ": {c}")?;
                    cause = c.source();
                }
                f.write_str("), so the tables may be left changed: restore them with ")?;
                let commands: Vec<String> = saved
                    .iter()
                    .map(|s| format!("`{} < SAVED` ({} {})", s.command, s.family, s.backend))
                    .collect();
                write!(f, "{} (InstallError::saved_rules holds SAVED)", commands.join(", "))
            }
        }
    }
}

/// The rules of one family and backend as they were before a change (`iptables-save -c` output),
/// with the command that restores them.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SavedRules {
    /// The family.
    pub family: Family,
    /// The backend.
    pub backend: Backend,
    /// The command that puts [`text`](Self::text) back from its standard input, behind the
    /// executor's prefix (`ip netns exec pod-1 iptables-nft-restore --counters`). It replaces the
    /// saved tables whole.
    pub command: String,
    /// The saved rules, with counters.
    pub text: String,
}
