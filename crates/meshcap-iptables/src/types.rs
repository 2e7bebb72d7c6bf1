//! Small validated value types shared by the configuration and the rule model: ports, port ranges and
//! lists, UID ranges, addresses as the user typed them, interface and chain names, comments.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::num::NonZeroU16;
use std::str::FromStr;

use crate::error::ValueError;

/// An IP family: which of `iptables` / `ip6tables` a rule set is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    /// IPv4 (`iptables`).
    V4,
    /// IPv6 (`ip6tables`).
    V6,
}

impl Family {
    /// Both families, IPv4 first (the order Kuma applies them in).
    pub const ALL: [Family; 2] = [Family::V4, Family::V6];

    /// Whether `ip` belongs to this family.
    pub fn contains(self, ip: IpAddr) -> bool {
        matches!((self, ip), (Family::V4, IpAddr::V4(_)) | (Family::V6, IpAddr::V6(_)))
    }

    /// The family of an address.
    pub fn of(ip: IpAddr) -> Family {
        match ip {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    /// Kuma's inbound passthrough source (`127.0.0.6/32`, `::6/128`): Envoy re-originates inbound
    /// connections from it.
    pub fn inbound_passthrough(self) -> Address {
        match self {
            Family::V4 => Address::known(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 6)), 32),
            Family::V6 => Address::known(IpAddr::V6(Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 6)), 128),
        }
    }

    /// Localhost as a host network (`127.0.0.1/32`, `::1/128`).
    pub fn localhost(self) -> Address {
        match self {
            Family::V4 => Address::known(IpAddr::V4(Ipv4Addr::LOCALHOST), 32),
            Family::V6 => Address::known(IpAddr::V6(Ipv6Addr::LOCALHOST), 128),
        }
    }

    /// The longest prefix length of the family (32 or 128).
    pub fn max_prefix(self) -> u8 {
        match self {
            Family::V4 => 32,
            Family::V6 => 128,
        }
    }

    /// `"IPv4"` or `"IPv6"`, as in the dry-run section headers.
    pub fn label(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// A TCP/UDP port, 1–65535.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Port(NonZeroU16);

impl Port {
    /// A port from its number; `None` for 0.
    pub const fn new(port: u16) -> Option<Port> {
        match NonZeroU16::new(port) {
            Some(p) => Some(Port(p)),
            None => None,
        }
    }

    /// The port number.
    pub const fn get(self) -> u16 {
        self.0.get()
    }

    pub(crate) const fn known(port: u16) -> Port {
        match Port::new(port) {
            Some(p) => p,
            None => panic!("port constant must not be 0"),
        }
    }
}

impl fmt::Display for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for Port {
    type Err = ValueError;

    fn from_str(s: &str) -> Result<Port, ValueError> {
        let t = s.trim();
        let n: u32 = t.parse().map_err(|_| ValueError::Port { value: s.to_string() })?;
        u16::try_from(n)
            .ok()
            .and_then(Port::new)
            .ok_or_else(|| ValueError::Port { value: s.to_string() })
    }
}

impl TryFrom<u16> for Port {
    type Error = ValueError;

    fn try_from(n: u16) -> Result<Port, ValueError> {
        Port::new(n).ok_or(ValueError::Port { value: n.to_string() })
    }
}

impl From<Port> for u16 {
    fn from(p: Port) -> u16 {
        p.get()
    }
}

/// A single port or an inclusive range `first:last` of ports (`first <= last`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortRange {
    first: Port,
    last: Port,
}

impl PortRange {
    /// A range; error when `first > last`.
    pub fn new(first: Port, last: Port) -> Result<PortRange, ValueError> {
        if first > last {
            return Err(ValueError::ReversedRange {
                value: format!("{first}-{last}"),
            });
        }
        Ok(PortRange { first, last })
    }

    /// A range holding one port.
    pub const fn single(port: Port) -> PortRange {
        PortRange {
            first: port,
            last: port,
        }
    }

    /// All ports, `1:65535`.
    pub const fn all() -> PortRange {
        PortRange {
            first: Port::known(1),
            last: Port::known(65535),
        }
    }

    /// The first port.
    pub fn first(self) -> Port {
        self.first
    }

    /// The last port (equal to [`first`](Self::first) for a single port).
    pub fn last(self) -> Port {
        self.last
    }

    /// Whether the range holds exactly one port.
    pub fn is_single(self) -> bool {
        self.first == self.last
    }

    /// Whether `port` lies in the range.
    pub fn contains(self, port: Port) -> bool {
        self.first <= port && port <= self.last
    }

    /// How many of the 15 `multiport` slots the entry takes (a range takes two).
    pub fn multiport_slots(self) -> usize {
        if self.is_single() { 1 } else { 2 }
    }
}

impl From<Port> for PortRange {
    fn from(p: Port) -> PortRange {
        PortRange::single(p)
    }
}

/// Renders iptables' form: `53` or `1000:2000`.
impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_single() {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}:{}", self.first, self.last)
        }
    }
}

/// Parses `53`, `1000:2000` or `1000-2000`.
impl FromStr for PortRange {
    type Err = ValueError;

    fn from_str(s: &str) -> Result<PortRange, ValueError> {
        let t = s.trim();
        match t.split_once([':', '-']) {
            None => Ok(PortRange::single(t.parse()?)),
            Some((a, b)) => {
                let (first, last) = (a.parse::<Port>()?, b.parse::<Port>()?);
                PortRange::new(first, last).map_err(|_| ValueError::ReversedRange { value: s.to_string() })
            }
        }
    }
}

/// A non-empty list of ports and port ranges, as `--dport`/`--dports` take it (`53,3000:5000`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PortList(Vec<PortRange>);

impl PortList {
    /// A list from its entries; error when empty.
    pub fn new(entries: Vec<PortRange>) -> Result<PortList, ValueError> {
        if entries.is_empty() {
            return Err(ValueError::EmptyPortList);
        }
        Ok(PortList(entries))
    }

    /// A list of one entry.
    pub fn single(entry: impl Into<PortRange>) -> PortList {
        PortList(vec![entry.into()])
    }

    /// The entries.
    pub fn entries(&self) -> &[PortRange] {
        &self.0
    }

    /// The single entry when the list has exactly one.
    pub fn as_single(&self) -> Option<PortRange> {
        match self.0.as_slice() {
            [one] => Some(*one),
            _ => None,
        }
    }

    /// The number of `multiport` slots used (ranges count twice; the kernel allows 15).
    pub fn multiport_slots(&self) -> usize {
        self.0.iter().map(|r| r.multiport_slots()).sum()
    }

    /// Split into lists that each fit in one `multiport` match (at most 15 slots), keeping order.
    pub fn chunks_for_multiport(&self) -> Vec<PortList> {
        let mut out = Vec::new();
        let mut cur: Vec<PortRange> = Vec::new();
        let mut used = 0;
        for r in &self.0 {
            if used + r.multiport_slots() > MULTIPORT_MAX_SLOTS {
                out.push(PortList(std::mem::take(&mut cur)));
                used = 0;
            }
            used += r.multiport_slots();
            cur.push(*r);
        }
        if !cur.is_empty() {
            out.push(PortList(cur));
        }
        out
    }
}

/// The kernel's limit of ports in one `multiport` match (a range takes two).
pub const MULTIPORT_MAX_SLOTS: usize = 15;

impl fmt::Display for PortList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

/// Parses `53,3000:5000` (ranges with `:` or `-`).
impl FromStr for PortList {
    type Err = ValueError;

    fn from_str(s: &str) -> Result<PortList, ValueError> {
        let entries = s
            .split(',')
            .map(|p| p.parse::<PortRange>())
            .collect::<Result<Vec<_>, _>>()?;
        PortList::new(entries)
    }
}

/// A UID or an inclusive UID range, as `-m owner --uid-owner` takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UidRange {
    first: u32,
    last: u32,
}

impl UidRange {
    /// A range; error when `first > last`.
    pub fn new(first: u32, last: u32) -> Result<UidRange, ValueError> {
        if first > last {
            return Err(ValueError::ReversedRange {
                value: format!("{first}-{last}"),
            });
        }
        Ok(UidRange { first, last })
    }

    /// A single UID.
    pub const fn single(uid: u32) -> UidRange {
        UidRange { first: uid, last: uid }
    }

    /// The first UID.
    pub fn first(self) -> u32 {
        self.first
    }

    /// The last UID.
    pub fn last(self) -> u32 {
        self.last
    }

    /// Whether the range is one UID.
    pub fn is_single(self) -> bool {
        self.first == self.last
    }

    /// The form `iptables-save` prints (`106-108`), as opposed to [`Display`](fmt::Display)'s input
    /// form (`106:108`).
    pub fn to_save_string(self) -> String {
        if self.is_single() {
            self.first.to_string()
        } else {
            format!("{}-{}", self.first, self.last)
        }
    }
}

/// Renders the iptables input form Kuma writes: `5678` or `106:108`.
impl fmt::Display for UidRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_single() {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}:{}", self.first, self.last)
        }
    }
}

/// Parses `5678`, `106-108` or `106:108`.
impl FromStr for UidRange {
    type Err = ValueError;

    fn from_str(s: &str) -> Result<UidRange, ValueError> {
        let bad = || ValueError::Uid { value: s.to_string() };
        let t = s.trim();
        let parse = |x: &str| x.trim().parse::<u32>().map_err(|_| bad());
        match t.split_once([':', '-']) {
            None => Ok(UidRange::single(parse(t)?)),
            Some((a, b)) => {
                UidRange::new(parse(a)?, parse(b)?).map_err(|_| ValueError::ReversedRange { value: s.to_string() })
            }
        }
    }
}

/// An IP address or network as written by the user (`10.0.0.1`, `172.32.16.8/16`).
///
/// Kuma writes addresses into the restore file exactly as typed; `iptables-save` prints the network
/// ([`canonical`](Self::canonical)): host bits cleared and the prefix always present.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Address {
    ip: IpAddr,
    prefix: Option<u8>,
}

impl Address {
    /// An address; `prefix` `None` means a host address written without `/len`. Error when `prefix`
    /// exceeds the family's maximum (32 or 128).
    pub fn new(ip: IpAddr, prefix: Option<u8>) -> Result<Address, ValueError> {
        if prefix.is_some_and(|p| p > Family::of(ip).max_prefix()) {
            return Err(ValueError::Address {
                value: format!("{ip}/{}", prefix.unwrap_or_default()),
            });
        }
        Ok(Address { ip, prefix })
    }

    const fn known(ip: IpAddr, prefix: u8) -> Address {
        Address {
            ip,
            prefix: Some(prefix),
        }
    }

    /// A host address (no prefix written).
    pub fn host(ip: IpAddr) -> Address {
        Address { ip, prefix: None }
    }

    /// The address as written.
    pub fn ip(self) -> IpAddr {
        self.ip
    }

    /// The prefix length as written, if any.
    pub fn prefix(self) -> Option<u8> {
        self.prefix
    }

    /// The effective prefix length (32/128 when none was written).
    pub fn prefix_len(self) -> u8 {
        self.prefix.unwrap_or(self.family().max_prefix())
    }

    /// The address family.
    pub fn family(self) -> Family {
        Family::of(self.ip)
    }

    /// The network as the kernel stores it: host bits cleared, prefix explicit
    /// (`172.32.16.8/16` → `172.32.0.0/16`, `10.0.0.1` → `10.0.0.1/32`).
    pub fn canonical(self) -> Address {
        let len = self.prefix_len();
        let ip = match self.ip {
            IpAddr::V4(a) => {
                let mask = if len == 0 { 0 } else { u32::MAX << (32 - u32::from(len)) };
                IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask))
            }
            IpAddr::V6(a) => {
                let mask = if len == 0 {
                    0
                } else {
                    u128::MAX << (128 - u32::from(len))
                };
                IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask))
            }
        };
        Address { ip, prefix: Some(len) }
    }

    /// Whether the address is a loopback address (`127.0.0.0/8`, `::1`).
    pub fn is_loopback(self) -> bool {
        self.ip.is_loopback()
    }
}

impl From<IpAddr> for Address {
    fn from(ip: IpAddr) -> Address {
        Address::host(ip)
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.prefix {
            Some(p) => write!(f, "{}/{p}", self.ip),
            None => write!(f, "{}", self.ip),
        }
    }
}

/// Parses `ADDR` or `ADDR/LEN` (IPv4 or IPv6).
impl FromStr for Address {
    type Err = ValueError;

    fn from_str(s: &str) -> Result<Address, ValueError> {
        let bad = || ValueError::Address { value: s.to_string() };
        let t = s.trim();
        let (ip, prefix) = match t.split_once('/') {
            None => (t, None),
            Some((ip, len)) => {
                if len.is_empty() || !len.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad());
                }
                (ip, Some(len.parse::<u8>().map_err(|_| bad())?))
            }
        };
        let ip: IpAddr = ip.parse().map_err(|_| bad())?;
        if prefix.is_some_and(|p| p > Family::of(ip).max_prefix()) {
            return Err(bad());
        }
        Ok(Address { ip, prefix })
    }
}

fn name_char_ok(c: char) -> bool {
    c.is_ascii_graphic() && !matches!(c, '"' | '\'' | '\\' | '/' | ':')
}

/// A network interface name for `-i`/`-o` (at most 15 bytes; a trailing `+` is iptables' wildcard).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Interface(String);

impl Interface {
    /// Validate a name.
    pub fn new(name: impl Into<String>) -> Result<Interface, ValueError> {
        let name = name.into();
        if name.is_empty() || name.len() > 15 || name.starts_with(['-', '!']) || !name.chars().all(name_char_ok) {
            return Err(ValueError::Interface { value: name });
        }
        Ok(Interface(name))
    }

    /// The loopback interface, `lo`.
    pub fn loopback() -> Interface {
        Interface("lo".to_string())
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Interface {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Interface {
    type Err = ValueError;

    fn from_str(s: &str) -> Result<Interface, ValueError> {
        Interface::new(s)
    }
}

/// The name of a chain (built-in like `OUTPUT` or user-defined like `KUMA_MESH_OUTBOUND`), at most 28
/// bytes of printable ASCII without blanks or quotes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChainName(String);

/// The longest chain name iptables accepts.
pub const CHAIN_NAME_MAX: usize = 28;

impl ChainName {
    /// Validate a name.
    pub fn new(name: impl Into<String>) -> Result<ChainName, ValueError> {
        let name = name.into();
        if name.is_empty()
            || name.len() > CHAIN_NAME_MAX
            || name.starts_with(['-', '!'])
            || !name
                .chars()
                .all(|c| c.is_ascii_graphic() && !matches!(c, '"' | '\'' | '\\'))
        {
            return Err(ValueError::ChainName { value: name });
        }
        Ok(ChainName(name))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this is one of the built-in chains (`PREROUTING`, `INPUT`, `FORWARD`, `OUTPUT`,
    /// `POSTROUTING`).
    pub fn is_builtin(&self) -> bool {
        BUILTIN_CHAINS.contains(&self.0.as_str())
    }

    pub(crate) fn builtin(name: &'static str) -> ChainName {
        ChainName(name.to_string())
    }
}

pub(crate) const BUILTIN_CHAINS: [&str; 5] = ["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"];

impl fmt::Display for ChainName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for ChainName {
    type Err = ValueError;

    fn from_str(s: &str) -> Result<ChainName, ValueError> {
        ChainName::new(s)
    }
}

impl AsRef<str> for ChainName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// The text of a `-m comment --comment` match: at most 255 bytes, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Comment(String);

/// The longest comment the kernel stores.
pub const COMMENT_MAX: usize = 255;

impl Comment {
    /// Validate a comment.
    pub fn new(text: impl Into<String>) -> Result<Comment, ValueError> {
        let text = text.into();
        if text.len() > COMMENT_MAX || text.chars().any(char::is_control) {
            return Err(ValueError::Comment { value: text });
        }
        Ok(Comment(text))
    }

    /// A comment cut to `max` bytes (at a character boundary), control characters replaced by blanks.
    pub fn truncated(text: &str, max: usize) -> Comment {
        let mut s: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
        let max = max.min(COMMENT_MAX);
        if s.len() > max {
            let mut cut = max;
            while !s.is_char_boundary(cut) {
                cut -= 1;
            }
            s.truncate(cut);
        }
        Comment(s)
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Comment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Comment {
    type Err = ValueError;

    fn from_str(s: &str) -> Result<Comment, ValueError> {
        Comment::new(s)
    }
}

/// A `!`-negatable value of a match option.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Negatable<T> {
    /// Whether the option is inverted with `!`.
    pub negated: bool,
    /// The value.
    pub value: T,
}

impl<T> Negatable<T> {
    /// A plain (not negated) value.
    pub fn is(value: T) -> Negatable<T> {
        Negatable { negated: false, value }
    }

    /// A negated value (`! -d 127.0.0.1/32`).
    pub fn not(value: T) -> Negatable<T> {
        Negatable { negated: true, value }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_validate() {
        assert!("0".parse::<Port>().is_err());
        assert!("65536".parse::<Port>().is_err());
        assert!("x".parse::<Port>().is_err());
        assert_eq!("65535".parse::<Port>().unwrap().get(), 65535);
        assert!("5000-3000".parse::<PortRange>().is_err());
        assert_eq!("3000-5000".parse::<PortRange>().unwrap().to_string(), "3000:5000");
        assert_eq!("53,3000:5000".parse::<PortList>().unwrap().to_string(), "53,3000:5000");
    }

    #[test]
    fn multiport_chunks_respect_fifteen_slots() {
        let list: PortList = (1..=20)
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join(",")
            .parse()
            .unwrap();
        let chunks = list.chunks_for_multiport();
        assert_eq!(chunks.len(), 2);
        assert_eq!(chunks[0].multiport_slots(), 15);
        let ranges: PortList = "1:2,3:4,5:6,7:8,9:10,11:12,13:14,15".parse().unwrap();
        assert_eq!(ranges.chunks_for_multiport().len(), 1);
        let ranges: PortList = "1:2,3:4,5:6,7:8,9:10,11:12,13:14,15:16".parse().unwrap();
        assert_eq!(ranges.chunks_for_multiport().len(), 2);
    }

    #[test]
    fn addresses_canonicalise_like_the_kernel() {
        let a: Address = "172.32.16.8/16".parse().unwrap();
        assert_eq!(a.to_string(), "172.32.16.8/16");
        assert_eq!(a.canonical().to_string(), "172.32.0.0/16");
        assert_eq!("::1/64".parse::<Address>().unwrap().canonical().to_string(), "::/64");
        assert_eq!(
            "10.0.0.1".parse::<Address>().unwrap().canonical().to_string(),
            "10.0.0.1/32"
        );
        assert_eq!(
            "0.0.0.0/0".parse::<Address>().unwrap().canonical().to_string(),
            "0.0.0.0/0"
        );
        for bad in ["10.0.0.1/33", "10.0.0/8", "fe80::/129", "10.0.0.1/", "1.2.3.4/+3"] {
            assert!(bad.parse::<Address>().is_err(), "{bad}");
        }
    }

    #[test]
    fn names_validate() {
        assert!(Interface::new("br+").is_ok());
        assert!(Interface::new("a-very-long-interface").is_err());
        assert!(Interface::new("eth 0").is_err());
        assert!(ChainName::new("KUMA_MESH_OUTBOUND_REDIRECT").is_ok());
        assert!(ChainName::new("X".repeat(29)).is_err());
        assert!(Comment::new("a\nb").is_err());
        assert_eq!(Comment::truncated(&"é".repeat(200), 254).as_str().len(), 254);
    }
}
