//! Kuma's `MeshFaultInjection` policy (v1alpha1, the `spec.from[]` form) and its conversion into
//! `envoy.filters.http.fault` configs exactly as Kuma 2.x does it:
//!
//! 1. a policy applies to an inbound when its mesh is the Dataplane's and its top-level `targetRef`
//!    selects the inbound's tags (`Ignored` inbounds are never selected);
//! 2. the `from[]` entries of all applying policies (policies ordered from least to most specific, then by
//!    name descending) are turned into *rules*: every combination of the source tags they mention, with
//!    negations, gets the merged `default` of the entries covering it (later entries replace `http`);
//! 3. rules with more positive tags come first; each `default.http[]` entry of each rule becomes one
//!    `HTTPFault`, restricted by `x-kuma-tags` header matchers built from the rule's tags (positive tags in one
//!    regex, negated tags in one inverted regex; a rule with no tags gets no matcher);
//! 4. percentages become `FractionalPercent` with Kuma's float arithmetic: an integer `p` gives p/HUNDRED,
//!    else `100·p` if integral gives TEN_THOUSAND, else `round(10000·p)`/MILLION (`0.5` → 50/TEN_THOUSAND).
//!
//! Only `http` and `http2` inbounds get fault filters (as in Kuma; `grpc` and `tcp` ones get none).
//!
//! ```
//! use meshcap_envoy::{Dataplane, MeshFaultInjection, demo};
//! use meshcap_envoy::fault_injection::http_faults;
//!
//! let dp = demo::dataplane();
//! let policy = MeshFaultInjection::from_yaml(demo::FAULT_INJECTION_YAML)?;
//! let faults = http_faults(&dp, &dp.networking().inbound()[0], &[&policy]);
//! assert_eq!(faults.len(), 1);
//! assert_eq!(
//!     serde_json::to_string(&faults[0])?,
//!     r#"{"@type":"type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault","delay":{"fixed_delay":"5s","percentage":{"numerator":50,"denominator":"TEN_THOUSAND"}}}"#
//! );
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use serde::de::IgnoredAny;

use crate::dataplane::{Dataplane, Inbound, InboundState, Protocol};
use crate::error::{Error, ValidationError, ValidationErrorKind, invalid};
use crate::http_fault::{FaultAbort, FaultDelay, FaultRateLimit, FractionalPercent, HeaderMatch, HeaderMatcher};
use crate::http_fault::{HttpFault, StringMatcher, StringPattern};
use crate::names::{SERVICE_TAG, TAGS_HEADER};
use crate::parse;
use crate::tags::Tags;

const WHAT: &str = "policy";

/// A `MeshFaultInjection` policy (universal `type:`/`mesh:`/`name:` form or Kubernetes
/// `apiVersion:`/`kind:`/`metadata:` form).
#[derive(Debug, Clone, PartialEq)]
pub struct MeshFaultInjection {
    mesh: String,
    name: String,
    target_ref: TargetRef,
    from: Vec<FromItem>,
}

/// A `targetRef`: which proxies (top level) or which callers (`from[]`) a policy is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetRef {
    kind: TargetRefKind,
    name: Option<String>,
    tags: Tags,
    proxy_types: Vec<ProxyType>,
}

/// `targetRef.kind` values meshcap understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum TargetRefKind {
    /// Every proxy in the mesh.
    Mesh,
    /// Proxies with the given tags.
    MeshSubset,
    /// Proxies of the named service.
    MeshService,
    /// Proxies of the named service with the given tags.
    MeshServiceSubset,
}

/// `targetRef.proxyTypes` entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ProxyType {
    /// Sidecars (what meshcap is).
    Sidecar,
    /// Gateways.
    Gateway,
}

/// One `spec.from[]` entry: callers and the faults injected for them.
#[derive(Debug, Clone, PartialEq)]
pub struct FromItem {
    target_ref: TargetRef,
    http: Option<Vec<FaultInjectionConf>>,
}

/// One `default.http[]` entry; becomes one `envoy.filters.http.fault` filter.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FaultInjectionConf {
    abort: Option<AbortConf>,
    delay: Option<DelayConf>,
    response_bandwidth: Option<ResponseBandwidthConf>,
}

/// `abort`: reply with `httpStatus` to `percentage` of requests.
#[derive(Debug, Clone, PartialEq)]
pub struct AbortConf {
    http_status: u32,
    percentage: Percentage,
}

/// `delay`: hold `percentage` of requests for `value`.
#[derive(Debug, Clone, PartialEq)]
pub struct DelayConf {
    value: Duration,
    percentage: Percentage,
}

/// `responseBandwidth`: throttle `percentage` of responses to `limit`.
#[derive(Debug, Clone, PartialEq)]
pub struct ResponseBandwidthConf {
    limit: String,
    kbps: u64,
    percentage: Percentage,
}

/// A Kuma percentage: an integer or a decimal string between 0 and 100.
#[derive(Debug, Clone, PartialEq)]
pub struct Percentage {
    text: String,
    value: f64,
}

impl Percentage {
    /// Parse a percentage (`50`, `"0.5"`, `"62.9"`).
    ///
    /// # Errors
    /// [`ValidationErrorKind::InvalidPercentage`] (with an empty path) unless the text is a plain decimal
    /// number between 0 and 100.
    pub fn parse(text: &str) -> Result<Percentage, ValidationError> {
        let bad = || ValidationError::new("", ValidationErrorKind::InvalidPercentage(text.to_string()));
        let (whole, frac) = text.split_once('.').unwrap_or((text, ""));
        let digits_ok = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty() || !digits_ok(whole) || !digits_ok(frac) || (text.contains('.') && frac.is_empty()) {
            return Err(bad());
        }
        let value: f64 = text.parse().map_err(|_| bad())?;
        if !(0.0..=100.0).contains(&value) {
            return Err(bad());
        }
        Ok(Percentage {
            text: text.to_string(),
            value,
        })
    }

    /// The percentage as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The value, 0 to 100.
    pub fn value(&self) -> f64 {
        self.value
    }

    /// Kuma's conversion to a `FractionalPercent` (Go float arithmetic included, so `62.9` gives
    /// 6290/TEN_THOUSAND but `33.3` gives 333000/MILLION).
    pub fn to_fractional(&self) -> FractionalPercent {
        let v = self.value;
        if v.floor() == v {
            return FractionalPercent::hundred(v as u32);
        }
        let ten_thousand = 100.0 * v;
        if ten_thousand.floor() == ten_thousand {
            return FractionalPercent::ten_thousand(ten_thousand as u32);
        }
        FractionalPercent::million((10_000.0 * v).round() as u32)
    }
}

impl MeshFaultInjection {
    /// Read a policy from YAML (strict: unknown fields are errors).
    ///
    /// # Errors
    /// [`Error::Parse`] for malformed text or a wrong shape, [`Error::Invalid`] with the field path for a
    /// value Kuma (or Envoy) would reject.
    pub fn from_yaml(text: &str) -> Result<MeshFaultInjection, Error> {
        MeshFaultInjection::from_raw(parse::from_yaml(WHAT, text)?)
    }

    /// Read a policy from JSON (strict).
    ///
    /// # Errors
    /// As [`MeshFaultInjection::from_yaml`].
    pub fn from_json(text: &str) -> Result<MeshFaultInjection, Error> {
        MeshFaultInjection::from_raw(parse::from_json(WHAT, text)?)
    }

    /// The mesh the policy belongs to (it applies only to Dataplanes of that mesh).
    pub fn mesh(&self) -> &str {
        &self.mesh
    }

    /// The policy name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `spec.targetRef` (`Mesh` when absent).
    pub fn target_ref(&self) -> &TargetRef {
        &self.target_ref
    }

    /// `spec.from`.
    pub fn from(&self) -> &[FromItem] {
        &self.from
    }

    /// Whether the policy applies to `inbound` of `dataplane`: same mesh, a sidecar proxy type, the inbound
    /// not `Ignored`, and its tags selected by the top-level `targetRef`.
    pub fn selects(&self, dataplane: &Dataplane, inbound: &Inbound) -> bool {
        self.mesh == dataplane.mesh()
            && (self.target_ref.proxy_types.is_empty() || self.target_ref.proxy_types.contains(&ProxyType::Sidecar))
            && inbound.state() != Some(InboundState::Ignored)
            && selector_matches(&self.target_ref.selector(), inbound.tags())
    }

    pub(crate) fn from_raw(raw: RawPolicy) -> Result<MeshFaultInjection, Error> {
        let (mesh, name) = match (&raw.kind, &raw.type_) {
            (Some(kind), None) => {
                if kind != "MeshFaultInjection" {
                    return Err(invalid(
                        "kind",
                        ValidationErrorKind::WrongType {
                            expected: "MeshFaultInjection",
                            found: kind.clone(),
                        },
                    ));
                }
                match raw.api_version.as_deref() {
                    Some("kuma.io/v1alpha1") => {}
                    Some(other) => {
                        return Err(invalid(
                            "apiVersion",
                            ValidationErrorKind::WrongType {
                                expected: "kuma.io/v1alpha1",
                                found: other.to_string(),
                            },
                        ));
                    }
                    None => return Err(invalid("apiVersion", ValidationErrorKind::Missing)),
                }
                if raw.mesh.is_some() || raw.name.is_some() {
                    return Err(invalid(
                        "mesh",
                        ValidationErrorKind::Unsupported(
                            "the Kubernetes form takes the mesh from the kuma.io/mesh label and the name from metadata",
                        ),
                    ));
                }
                let meta = raw
                    .metadata
                    .ok_or_else(|| invalid("metadata", ValidationErrorKind::Missing))?;
                let name = meta
                    .name
                    .ok_or_else(|| invalid("metadata.name", ValidationErrorKind::Missing))?;
                let mesh = meta
                    .labels
                    .as_ref()
                    .and_then(|l| l.get("kuma.io/mesh").map(str::to_string))
                    .unwrap_or_else(|| "default".to_string());
                (mesh, name)
            }
            (None, Some(t)) => {
                if t != "MeshFaultInjection" {
                    return Err(invalid(
                        "type",
                        ValidationErrorKind::WrongType {
                            expected: "MeshFaultInjection",
                            found: t.clone(),
                        },
                    ));
                }
                if raw.api_version.is_some() || raw.metadata.is_some() {
                    return Err(invalid(
                        "metadata",
                        ValidationErrorKind::Unsupported("the universal form (type:) has no apiVersion or metadata"),
                    ));
                }
                (
                    raw.mesh.ok_or_else(|| invalid("mesh", ValidationErrorKind::Missing))?,
                    raw.name.ok_or_else(|| invalid("name", ValidationErrorKind::Missing))?,
                )
            }
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "type",
                    ValidationErrorKind::Unsupported(
                        "use either the universal form (type:) or the Kubernetes form (kind:)",
                    ),
                ));
            }
            (None, None) => return Err(invalid("type", ValidationErrorKind::Missing)),
        };
        validate_name("mesh", &mesh)?;
        validate_name("name", &name)?;
        let spec = raw.spec.ok_or_else(|| invalid("spec", ValidationErrorKind::Missing))?;
        if spec.to.is_some() {
            return Err(invalid(
                "spec.to",
                ValidationErrorKind::Unsupported("spec.to only applies to gateways, which meshcap does not support"),
            ));
        }
        if spec.rules.is_some() {
            return Err(invalid(
                "spec.rules",
                ValidationErrorKind::Unsupported("spec.rules is not supported by meshcap; use spec.from"),
            ));
        }
        let target_ref = match spec.target_ref {
            None => TargetRef::mesh(),
            Some(t) => t.into_model("spec.targetRef", true)?,
        };
        let raw_from = spec.from.unwrap_or_default();
        if raw_from.is_empty() {
            return Err(invalid("spec.from", ValidationErrorKind::Empty));
        }
        let mut from = Vec::with_capacity(raw_from.len());
        for (i, f) in raw_from.into_iter().enumerate() {
            let path = format!("spec.from[{i}]");
            let target_ref = f
                .target_ref
                .ok_or_else(|| invalid(format!("{path}.targetRef"), ValidationErrorKind::Missing))?
                .into_model(&format!("{path}.targetRef"), false)?;
            let default = f
                .default
                .ok_or_else(|| invalid(format!("{path}.default"), ValidationErrorKind::Missing))?;
            let http = default
                .http
                .map(|list| {
                    list.into_iter()
                        .enumerate()
                        .map(|(j, c)| c.into_model(&format!("{path}.default.http[{j}]")))
                        .collect::<Result<Vec<_>, _>>()
                })
                .transpose()?;
            from.push(FromItem { target_ref, http });
        }
        Ok(MeshFaultInjection {
            mesh,
            name,
            target_ref,
            from,
        })
    }
}

impl TargetRef {
    /// `kind: Mesh`.
    pub fn mesh() -> TargetRef {
        TargetRef {
            kind: TargetRefKind::Mesh,
            name: None,
            tags: Tags::new(),
            proxy_types: Vec::new(),
        }
    }

    /// The kind.
    pub fn kind(&self) -> TargetRefKind {
        self.kind
    }

    /// `name` (the service, for `MeshService` and `MeshServiceSubset`).
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// `tags` (for `MeshSubset` and `MeshServiceSubset`).
    pub fn tags(&self) -> &Tags {
        &self.tags
    }

    /// `proxyTypes` (empty: all).
    pub fn proxy_types(&self) -> &[ProxyType] {
        &self.proxy_types
    }

    /// The tags this reference selects (`kuma.io/service` from `name`, plus `tags`).
    fn selector(&self) -> Vec<(String, String)> {
        let mut sel = Vec::new();
        if let Some(name) = &self.name {
            sel.push((SERVICE_TAG.to_string(), name.clone()));
        }
        for (k, v) in self.tags.iter() {
            sel.retain(|(key, _)| key != k);
            sel.push((k.to_string(), v.to_string()));
        }
        sel
    }
}

impl FromItem {
    /// `targetRef`: the callers.
    pub fn target_ref(&self) -> &TargetRef {
        &self.target_ref
    }

    /// `default.http` (`None` when absent, which leaves earlier entries' faults in place when merging).
    pub fn http(&self) -> Option<&[FaultInjectionConf]> {
        self.http.as_deref()
    }
}

impl FaultInjectionConf {
    /// `abort`.
    pub fn abort(&self) -> Option<&AbortConf> {
        self.abort.as_ref()
    }

    /// `delay`.
    pub fn delay(&self) -> Option<&DelayConf> {
        self.delay.as_ref()
    }

    /// `responseBandwidth`.
    pub fn response_bandwidth(&self) -> Option<&ResponseBandwidthConf> {
        self.response_bandwidth.as_ref()
    }

    /// The `HTTPFault` Kuma makes from this entry, with the given header matchers.
    pub fn to_http_fault(&self, headers: Vec<HeaderMatcher>) -> HttpFault {
        HttpFault {
            delay: self
                .delay
                .as_ref()
                .map(|d| FaultDelay::fixed(d.value, d.percentage.to_fractional())),
            abort: self
                .abort
                .as_ref()
                .map(|a| FaultAbort::http_status(a.http_status, a.percentage.to_fractional())),
            response_rate_limit: self
                .response_bandwidth
                .as_ref()
                .map(|b| FaultRateLimit::fixed_kbps(b.kbps, b.percentage.to_fractional())),
            headers,
            ..HttpFault::default()
        }
    }
}

impl AbortConf {
    /// `httpStatus`.
    pub fn http_status(&self) -> u32 {
        self.http_status
    }

    /// `percentage`.
    pub fn percentage(&self) -> &Percentage {
        &self.percentage
    }
}

impl DelayConf {
    /// `value`.
    pub fn value(&self) -> Duration {
        self.value
    }

    /// `percentage`.
    pub fn percentage(&self) -> &Percentage {
        &self.percentage
    }
}

impl ResponseBandwidthConf {
    /// `limit` as written (`10kbps`).
    pub fn limit(&self) -> &str {
        &self.limit
    }

    /// The limit in the unit Envoy's `limit_kbps` takes (Kuma multiplies by 1000 per prefix step).
    pub fn kbps(&self) -> u64 {
        self.kbps
    }

    /// `percentage`.
    pub fn percentage(&self) -> &Percentage {
        &self.percentage
    }
}

fn selector_matches(selector: &[(String, String)], tags: &Tags) -> bool {
    selector
        .iter()
        .all(|(k, v)| tags.get(k).is_some_and(|actual| v == "*" || actual == v))
}

/// The fault filters (in order, before the router) Kuma puts on `inbound` of `dataplane` for `policies`.
/// Empty unless the inbound's protocol is `http` or `http2`.
pub fn http_faults(dataplane: &Dataplane, inbound: &Inbound, policies: &[&MeshFaultInjection]) -> Vec<HttpFault> {
    if !matches!(inbound.protocol(), Protocol::Http | Protocol::Http2) {
        return Vec::new();
    }
    let mut applying: Vec<&MeshFaultInjection> = policies
        .iter()
        .copied()
        .filter(|p| p.selects(dataplane, inbound))
        .collect();
    // Kuma's ByTargetRef: less specific kinds first, then names in descending order.
    applying.sort_by(|a, b| {
        a.target_ref
            .kind
            .cmp(&b.target_ref.kind)
            .then_with(|| b.name.cmp(&a.name))
    });
    let items: Vec<(Subset, Option<&Vec<FaultInjectionConf>>)> = applying
        .iter()
        .flat_map(|p| p.from.iter())
        .map(|f| (f.target_ref.subset(), f.http.as_ref()))
        .collect();
    let mut faults = Vec::new();
    for rule in build_rules(&items) {
        let headers = header_matchers(&rule.subset);
        for conf in rule.http.into_iter().flatten() {
            faults.push(conf.to_http_fault(headers.clone()));
        }
    }
    faults
}

// --- Kuma's rules (subsets of callers with negations) -------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Tag {
    key: String,
    value: String,
    not: bool,
}

type Subset = Vec<Tag>;

impl TargetRef {
    fn subset(&self) -> Subset {
        self.selector()
            .into_iter()
            .map(|(key, value)| Tag { key, value, not: false })
            .collect()
    }
}

/// Kuma's `Subset.IsSubset`: whether `other` lies inside `set` (the empty set contains everything).
fn contains(set: &[Tag], other: &[Tag]) -> bool {
    set.iter().all(|tag| {
        let mut same_key = other.iter().filter(|o| o.key == tag.key).peekable();
        same_key.peek().is_some() && same_key.all(|o| tag_contains(tag, o))
    })
}

fn tag_contains(t1: &Tag, t2: &Tag) -> bool {
    match (t1.not, t2.not) {
        (a, b) if a == b => t1.value == t2.value,
        (true, false) => t1.value != t2.value,
        _ => false,
    }
}

/// Kuma's `Subset.Intersect`.
fn intersect(a: &[Tag], b: &[Tag]) -> bool {
    if a.is_empty() || b.is_empty() {
        return true;
    }
    for tag in a.iter().filter(|t| !t.not) {
        let mut positives = b.iter().filter(|o| !o.not && o.key == tag.key).peekable();
        if positives.peek().is_none() {
            return true;
        }
        if positives.any(|o| o != tag) {
            return false;
        }
    }
    true
}

struct Rule<'a> {
    subset: Subset,
    http: Option<&'a Vec<FaultInjectionConf>>,
}

fn build_rules<'a>(items: &[(Subset, Option<&'a Vec<FaultInjectionConf>>)]) -> Vec<Rule<'a>> {
    // Connected components of the "intersects" graph (union-find).
    let mut parent: Vec<usize> = (0..items.len()).collect();
    fn root(parent: &mut [usize], mut i: usize) -> usize {
        while parent[i] != i {
            parent[i] = parent[parent[i]];
            i = parent[i];
        }
        i
    }
    for i in 0..items.len() {
        for j in (i + 1)..items.len() {
            // Kuma adds an undirected edge when either direction intersects (its `Intersect` is not
            // symmetric: it returns early on the first key the other subset lacks).
            if intersect(&items[i].0, &items[j].0) || intersect(&items[j].0, &items[i].0) {
                let (ri, rj) = (root(&mut parent, i), root(&mut parent, j));
                parent[ri] = rj;
            }
        }
    }
    let mut components: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for i in 0..items.len() {
        let r = root(&mut parent, i);
        components.entry(r).or_default().push(i);
    }
    let mut components: Vec<Vec<usize>> = components.into_values().collect();
    // Kuma sorts components by their node ids joined with ':', as strings, descending.
    let key = |c: &Vec<usize>| c.iter().map(usize::to_string).collect::<Vec<_>>().join(":");
    components.sort_by_key(|c| std::cmp::Reverse(key(c)));

    let mut rules = Vec::new();
    for nodes in components {
        let mut tags: Vec<Tag> = nodes.iter().flat_map(|n| items[*n].0.iter().cloned()).collect();
        tags.sort_by(|a, b| a.key.cmp(&b.key).then_with(|| a.value.cmp(&b.value)));
        tags.dedup();
        for ss in SubsetIter::new(tags) {
            let confs: Vec<Option<&'a Vec<FaultInjectionConf>>> = items
                .iter()
                .filter(|(item_subset, _)| contains(item_subset, &ss))
                .map(|(_, http)| *http)
                .collect();
            if confs.is_empty() {
                continue;
            }
            // JSON merge patch: a later `http` replaces an earlier one; an absent one leaves it.
            let http = confs.into_iter().flatten().last();
            rules.push(Rule { subset: ss, http });
        }
    }
    rules.sort_by_key(|r| std::cmp::Reverse(r.subset.iter().filter(|t| !t.not).count()));
    rules
}

/// Kuma's `SubsetIter`: every assignment of negations to the tags, as a binary counter starting from
/// "first tag negated" and ending with "all positive"; contradictory assignments (two positive values for
/// one key) are skipped, redundant negations simplified away.
struct SubsetIter {
    current: Vec<Tag>,
    finished: bool,
}

impl SubsetIter {
    fn new(tags: Vec<Tag>) -> SubsetIter {
        SubsetIter {
            current: tags,
            finished: false,
        }
    }

    fn advance(&mut self) -> bool {
        for tag in &mut self.current {
            if tag.not {
                tag.not = false;
            } else {
                tag.not = true;
                return true;
            }
        }
        false
    }

    fn simplified(&self) -> Option<Subset> {
        let mut keys: Vec<&str> = Vec::new();
        for t in &self.current {
            if !keys.contains(&t.key.as_str()) {
                keys.push(&t.key);
            }
        }
        let mut result = Vec::new();
        for key in keys {
            let same: Vec<&Tag> = self.current.iter().filter(|t| t.key == key).collect();
            let positive: Vec<&&Tag> = same.iter().filter(|t| !t.not).collect();
            match positive.len() {
                0 => result.extend(same.iter().map(|t| (*t).clone())),
                1 => result.push((*positive[0]).clone()),
                _ => return None,
            }
        }
        Some(result)
    }
}

impl Iterator for SubsetIter {
    type Item = Subset;

    fn next(&mut self) -> Option<Subset> {
        if self.finished {
            return None;
        }
        loop {
            if !self.advance() {
                self.finished = true;
                return self.simplified();
            }
            if let Some(s) = self.simplified() {
                return Some(s);
            }
        }
    }
}

/// Kuma's header matchers for a rule's subset.
fn header_matchers(subset: &[Tag]) -> Vec<HeaderMatcher> {
    // Go maps keyed by tag key: the last value for a key wins.
    let mut positive: BTreeMap<&str, &str> = BTreeMap::new();
    let mut negative: BTreeMap<&str, &str> = BTreeMap::new();
    for t in subset {
        if t.not {
            negative.insert(&t.key, &t.value);
        } else {
            positive.insert(&t.key, &t.value);
        }
    }
    let matcher = |tags: &BTreeMap<&str, &str>| {
        HeaderMatcher::new(
            TAGS_HEADER,
            HeaderMatch::String(StringMatcher::new(StringPattern::SafeRegex(matching_regex(tags)))),
        )
    };
    let mut matchers = Vec::new();
    if !positive.is_empty() {
        matchers.push(matcher(&positive));
    }
    if !negative.is_empty() {
        matchers.push(matcher(&negative).inverted());
    }
    matchers
}

/// Kuma's `MatchingRegex` over `x-kuma-tags` (`&key=v1,v2&...&`): keys sorted, `*` matches any value, dots
/// in values escaped.
fn matching_regex(tags: &BTreeMap<&str, &str>) -> String {
    let mut re = String::from(".*");
    for (key, value) in tags {
        re.push('&');
        re.push_str(key);
        re.push('=');
        if *value != "*" {
            re.push_str("[^&]*");
            re.push_str(&value.replace('.', "\\."));
            re.push_str("[,&]");
        }
        re.push_str(".*");
    }
    re
}

// --- the wire form -------------------------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct RawPolicy {
    #[serde(rename = "type")]
    pub(crate) type_: Option<String>,
    mesh: Option<String>,
    name: Option<String>,
    #[allow(dead_code)]
    labels: Option<Tags>,
    #[allow(dead_code)]
    creation_time: Option<IgnoredAny>,
    #[allow(dead_code)]
    modification_time: Option<IgnoredAny>,
    api_version: Option<String>,
    pub(crate) kind: Option<String>,
    metadata: Option<RawMetadata>,
    spec: Option<RawSpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawMetadata {
    name: Option<String>,
    #[allow(dead_code)]
    namespace: Option<String>,
    labels: Option<Tags>,
    #[allow(dead_code)]
    annotations: Option<IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawSpec {
    target_ref: Option<RawTargetRef>,
    from: Option<Vec<RawFrom>>,
    to: Option<IgnoredAny>,
    rules: Option<IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawTargetRef {
    kind: Option<String>,
    name: Option<String>,
    tags: Option<Tags>,
    proxy_types: Option<Vec<String>>,
    mesh: Option<IgnoredAny>,
    namespace: Option<IgnoredAny>,
    labels: Option<IgnoredAny>,
    section_name: Option<IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawFrom {
    target_ref: Option<RawTargetRef>,
    default: Option<RawConf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConf {
    http: Option<Vec<RawFaultConf>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawFaultConf {
    abort: Option<RawAbort>,
    delay: Option<RawDelay>,
    response_bandwidth: Option<RawBandwidth>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawAbort {
    http_status: Option<i64>,
    percentage: Option<RawPercentage>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDelay {
    value: Option<String>,
    percentage: Option<RawPercentage>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBandwidth {
    limit: Option<String>,
    percentage: Option<RawPercentage>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawPercentage {
    Int(i64),
    Float(f64),
    Text(String),
}

fn validate_name(path: &str, value: &str) -> Result<(), ValidationError> {
    if value.is_empty() {
        return Err(ValidationError::new(path, ValidationErrorKind::Empty));
    }
    if let Some(character) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')))
    {
        return Err(ValidationError::new(
            path,
            ValidationErrorKind::InvalidCharacter {
                value: value.to_string(),
                character,
            },
        ));
    }
    Ok(())
}

impl RawTargetRef {
    fn into_model(self, path: &str, top_level: bool) -> Result<TargetRef, ValidationError> {
        use ValidationErrorKind as K;
        for (field, present) in [
            ("mesh", self.mesh.is_some()),
            ("namespace", self.namespace.is_some()),
            ("labels", self.labels.is_some()),
            ("sectionName", self.section_name.is_some()),
        ] {
            if present {
                return Err(ValidationError::new(
                    format!("{path}.{field}"),
                    K::Unsupported("not supported by meshcap (targetRefs select by kind, name and tags)"),
                ));
            }
        }
        let kind_text = self
            .kind
            .ok_or_else(|| ValidationError::new(format!("{path}.kind"), K::Missing))?;
        let kind = match kind_text.as_str() {
            "Mesh" => TargetRefKind::Mesh,
            "MeshSubset" => TargetRefKind::MeshSubset,
            "MeshService" => TargetRefKind::MeshService,
            "MeshServiceSubset" => TargetRefKind::MeshServiceSubset,
            "MeshGateway" if top_level => {
                return Err(ValidationError::new(
                    format!("{path}.kind"),
                    K::Unsupported("gateways are not supported by meshcap"),
                ));
            }
            _ => {
                return Err(ValidationError::new(
                    format!("{path}.kind"),
                    K::UnknownValue {
                        value: kind_text.clone(),
                        expected: "Mesh, MeshSubset, MeshService, MeshServiceSubset",
                    },
                ));
            }
        };
        let kind_name: &'static str = match kind {
            TargetRefKind::Mesh => "Mesh",
            TargetRefKind::MeshSubset => "MeshSubset",
            TargetRefKind::MeshService => "MeshService",
            TargetRefKind::MeshServiceSubset => "MeshServiceSubset",
        };
        let needs_name = matches!(kind, TargetRefKind::MeshService | TargetRefKind::MeshServiceSubset);
        match (&self.name, needs_name) {
            (None, true) => return Err(ValidationError::new(format!("{path}.name"), K::Missing)),
            (Some(n), true) if n.is_empty() => return Err(ValidationError::new(format!("{path}.name"), K::Empty)),
            (Some(_), false) => {
                return Err(ValidationError::new(
                    format!("{path}.name"),
                    K::NotAllowedWithKind(kind_name),
                ));
            }
            _ => {}
        }
        let allows_tags = matches!(kind, TargetRefKind::MeshSubset | TargetRefKind::MeshServiceSubset);
        let tags = self.tags.unwrap_or_default();
        if !tags.is_empty() && !allows_tags {
            return Err(ValidationError::new(
                format!("{path}.tags"),
                K::NotAllowedWithKind(kind_name),
            ));
        }
        tags.validate(&format!("{path}.tags"), &['*'])?;
        if let Some(name) = &self.name {
            Tags::new()
                .with(SERVICE_TAG, name.clone())
                .validate(&format!("{path}.name"), &['*'])
                .map_err(|e| ValidationError::new(format!("{path}.name"), e.kind().clone()))?;
        }
        let mut proxy_types = Vec::new();
        if let Some(list) = self.proxy_types {
            if !top_level {
                return Err(ValidationError::new(
                    format!("{path}.proxyTypes"),
                    K::Unsupported("proxyTypes is only allowed in the top-level targetRef"),
                ));
            }
            for (i, t) in list.iter().enumerate() {
                proxy_types.push(match t.as_str() {
                    "Sidecar" => ProxyType::Sidecar,
                    "Gateway" => ProxyType::Gateway,
                    _ => {
                        return Err(ValidationError::new(
                            format!("{path}.proxyTypes[{i}]"),
                            K::UnknownValue {
                                value: t.clone(),
                                expected: "Sidecar, Gateway",
                            },
                        ));
                    }
                });
            }
        }
        Ok(TargetRef {
            kind,
            name: self.name,
            tags,
            proxy_types,
        })
    }
}

impl RawPercentage {
    fn into_model(self, path: &str) -> Result<Percentage, ValidationError> {
        let text = match self {
            RawPercentage::Int(i) => i.to_string(),
            RawPercentage::Float(f) if f.is_finite() => format!("{f}"),
            RawPercentage::Float(f) => f.to_string(),
            RawPercentage::Text(s) => s,
        };
        Percentage::parse(&text).map_err(|e| ValidationError::new(path, e.kind().clone()))
    }
}

fn percentage(path: &str, raw: Option<RawPercentage>) -> Result<Percentage, ValidationError> {
    match raw {
        // Kuma's IntOrString zero value.
        None => Ok(Percentage {
            text: "0".to_string(),
            value: 0.0,
        }),
        Some(p) => p.into_model(&format!("{path}.percentage")),
    }
}

impl RawFaultConf {
    fn into_model(self, path: &str) -> Result<FaultInjectionConf, ValidationError> {
        use ValidationErrorKind as K;
        let abort = self
            .abort
            .map(|a| -> Result<AbortConf, ValidationError> {
                let p = format!("{path}.abort");
                let status = a
                    .http_status
                    .ok_or_else(|| ValidationError::new(format!("{p}.httpStatus"), K::Missing))?;
                if !(200..600).contains(&status) {
                    return Err(ValidationError::new(
                        format!("{p}.httpStatus"),
                        K::InvalidHttpStatus(status),
                    ));
                }
                Ok(AbortConf {
                    http_status: status as u32,
                    percentage: percentage(&p, a.percentage)?,
                })
            })
            .transpose()?;
        let delay = self
            .delay
            .map(|d| -> Result<DelayConf, ValidationError> {
                let p = format!("{path}.delay");
                let text = d
                    .value
                    .ok_or_else(|| ValidationError::new(format!("{p}.value"), K::Missing))?;
                let nanos = crate::time::parse_go_duration(&text).map_err(|reason| {
                    ValidationError::new(
                        format!("{p}.value"),
                        K::InvalidDuration {
                            value: text.clone(),
                            reason,
                        },
                    )
                })?;
                // Kuma accepts 0s, but Envoy rejects a zero fixed_delay.
                if nanos <= 0 {
                    return Err(ValidationError::new(format!("{p}.value"), K::NonPositiveDuration(text)));
                }
                let nanos = nanos as u128;
                Ok(DelayConf {
                    value: Duration::new((nanos / 1_000_000_000) as u64, (nanos % 1_000_000_000) as u32),
                    percentage: percentage(&p, d.percentage)?,
                })
            })
            .transpose()?;
        let response_bandwidth = self
            .response_bandwidth
            .map(|b| -> Result<ResponseBandwidthConf, ValidationError> {
                let p = format!("{path}.responseBandwidth");
                let limit = b
                    .limit
                    .ok_or_else(|| ValidationError::new(format!("{p}.limit"), K::Missing))?;
                let kbps = parse_bandwidth(&format!("{p}.limit"), &limit)?;
                Ok(ResponseBandwidthConf {
                    limit,
                    kbps,
                    percentage: percentage(&p, b.percentage)?,
                })
            })
            .transpose()?;
        Ok(FaultInjectionConf {
            abort,
            delay,
            response_bandwidth,
        })
    }
}

/// `<digits><optional space><kbps|Mbps|Gbps>` → kbps (×1, ×1000, ×1000000).
fn parse_bandwidth(path: &str, text: &str) -> Result<u64, ValidationError> {
    let bad = || ValidationError::new(path, ValidationErrorKind::InvalidBandwidth(text.to_string()));
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return Err(bad());
    }
    let rest = &text[digits..];
    let unit = rest.strip_prefix(' ').unwrap_or(rest);
    let multiplier: u64 = match unit {
        "kbps" => 1,
        "Mbps" => 1_000,
        "Gbps" => 1_000_000,
        _ => return Err(bad()),
    };
    let value: u64 = text[..digits].parse().map_err(|_| {
        ValidationError::new(
            path,
            ValidationErrorKind::OutOfRange {
                value: text.to_string(),
                range: "at most 18446744073709551615 kbps",
            },
        )
    })?;
    let kbps = value.checked_mul(multiplier).ok_or_else(|| {
        ValidationError::new(
            path,
            ValidationErrorKind::OutOfRange {
                value: text.to_string(),
                range: "at most 18446744073709551615 kbps",
            },
        )
    })?;
    if kbps == 0 {
        return Err(ValidationError::new(
            path,
            ValidationErrorKind::OutOfRange {
                value: text.to_string(),
                range: "envoy needs at least 1 kbps",
            },
        ));
    }
    Ok(kbps)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pct(text: &str) -> FractionalPercent {
        Percentage::parse(text).expect(text).to_fractional()
    }

    #[test]
    fn percentages_convert_like_kuma() {
        assert_eq!(pct("0.5"), FractionalPercent::ten_thousand(50));
        assert_eq!(pct("50"), FractionalPercent::hundred(50));
        assert_eq!(pct("100"), FractionalPercent::hundred(100));
        assert_eq!(pct("0"), FractionalPercent::hundred(0));
        assert_eq!(pct("62.9"), FractionalPercent::ten_thousand(6290));
        assert_eq!(pct("33.3"), FractionalPercent::million(333_000));
        assert_eq!(pct("50.5"), FractionalPercent::ten_thousand(5050));
        assert_eq!(pct("0.001"), FractionalPercent::million(10));
        assert_eq!(pct("12.345"), FractionalPercent::million(123_450));
        for bad in ["", "-1", "100.5", "101", "1e2", "50%", ".5", "5.", "abc", "NaN", " 5"] {
            assert!(Percentage::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bandwidths_convert_like_kuma() {
        assert_eq!(parse_bandwidth("p", "111Mbps"), Ok(111_000));
        assert_eq!(parse_bandwidth("p", "10kbps"), Ok(10));
        assert_eq!(parse_bandwidth("p", "5 Mbps"), Ok(5_000));
        assert_eq!(parse_bandwidth("p", "1Gbps"), Ok(1_000_000));
        for bad in ["kbps", "10", "10 kbps ", "10  kbps", "10mbps", "10bps", "-1kbps"] {
            assert!(parse_bandwidth("p", bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_bandwidth("p", "0kbps").expect_err("zero").to_string(),
            "p: 0kbps is out of range (envoy needs at least 1 kbps)"
        );
    }

    #[test]
    fn regexes_match_kuma() {
        let tags: BTreeMap<&str, &str> = [("kuma.io/service", "demo-client")].into_iter().collect();
        assert_eq!(matching_regex(&tags), ".*&kuma.io/service=[^&]*demo-client[,&].*");
        let tags: BTreeMap<&str, &str> = [("tag2", "value2"), ("tag1", "value1")].into_iter().collect();
        assert_eq!(
            matching_regex(&tags),
            ".*&tag1=[^&]*value1[,&].*&tag2=[^&]*value2[,&].*"
        );
        let tags: BTreeMap<&str, &str> = [("version", "v1.2"), ("zone", "*")].into_iter().collect();
        assert_eq!(matching_regex(&tags), ".*&version=[^&]*v1\\.2[,&].*&zone=.*");
    }

    fn t(key: &str, value: &str, not: bool) -> Tag {
        Tag {
            key: key.to_string(),
            value: value.to_string(),
            not,
        }
    }

    #[test]
    fn subset_iteration_follows_kuma() {
        let all: Vec<Subset> = SubsetIter::new(vec![t("env", "dev", false), t("env", "prod", false)]).collect();
        assert_eq!(
            all,
            vec![
                vec![t("env", "prod", false)],
                vec![t("env", "dev", false)],
                vec![t("env", "dev", true), t("env", "prod", true)],
            ]
        );
        let all: Vec<Subset> = SubsetIter::new(vec![t("a", "1", false)]).collect();
        assert_eq!(all, vec![vec![t("a", "1", true)], vec![t("a", "1", false)]]);
        assert_eq!(SubsetIter::new(Vec::new()).collect::<Vec<_>>(), vec![Vec::<Tag>::new()]);
    }

    #[test]
    fn containment_and_intersection_follow_kuma() {
        let web = vec![t("kuma.io/service", "web", false)];
        let not_web = vec![t("kuma.io/service", "web", true)];
        let api = vec![t("kuma.io/service", "api", false)];
        assert!(contains(&[], &web));
        assert!(contains(&web, &web));
        assert!(!contains(&web, &not_web));
        assert!(contains(&not_web, &api));
        assert!(!contains(&web, &[]));
        assert!(intersect(&[], &web));
        assert!(!intersect(&web, &api));
        assert!(intersect(&web, &[t("zone", "a", false)]));
    }
}
