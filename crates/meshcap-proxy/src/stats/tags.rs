//! Envoy's default tag extraction: from a flat statistic name to a tag-extracted name plus tags.
//!
//! Envoy stores statistics under flat dotted names and, for Prometheus, pulls well-known parts out of
//! the name as labels: `listener.0.0.0.0_15001.worker_0.downstream_cx_total` becomes the metric
//! `listener.worker_downstream_cx_total` with the tags `envoy.worker_id="0"` and
//! `envoy.listener_address="0.0.0.0_15001"`. This module reproduces Envoy's built-in extractor set
//! (`source/common/config/well_known_names.cc`) and its matching rules
//! (`source/common/stats/tag_producer_impl.cc`, `tag_extractor_impl.cc`):
//!
//! * every extractor looks at the **original** name; each match records a tag and a byte range to
//!   remove, and the tag-extracted name is the original with all those ranges removed;
//! * extractors are tried in a fixed order: first the ones that apply to any name, then the ones keyed
//!   by the first `.`-separated token of the name (`cluster`, `http`, `listener`, `tcp`, …), each group
//!   in Envoy's declaration order (regex extractors before token patterns) — which is also the order
//!   of the labels in the output;
//! * of several extractors producing the same tag name (the two `envoy.http_conn_manager_prefix`
//!   ones), only the first match counts.
//!
//! Two kinds of extractor exist, as in Envoy: regular expressions (RE2 syntax, matched unanchored;
//! the first capture group is removed from the name, the second, if any, is the value) and token
//! patterns such as `http.*.fault.$.**` (`*` one token, `**` one or more tokens, `$` the value token).
//!
//! ```
//! use meshcap_proxy::stats::tags::TagExtractor;
//!
//! let e = TagExtractor::envoy_default().extract("listener.10.244.0.6_5000.http.localhost_5000.downstream_rq_2xx");
//! assert_eq!(e.name, "listener.http.downstream_rq_xx");
//! let tags: Vec<(&str, &str)> = e.tags.iter().map(|t| (t.name, t.value.as_str())).collect();
//! assert_eq!(tags, [
//!     ("envoy.response_code_class", "2"),
//!     ("envoy.http_conn_manager_prefix", "localhost_5000"),
//!     ("envoy.listener_address", "10.244.0.6_5000"),
//! ]);
//! ```

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use regex::bytes::Regex;

/// One extracted tag.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Tag {
    /// The tag name, e.g. `envoy.cluster_name`.
    pub name: &'static str,
    /// The value taken from the statistic name, e.g. `localhost_5000`.
    pub value: String,
}

/// The result of tag extraction.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Extracted {
    /// The statistic name with the tag values removed (`cluster.upstream_rq_total`).
    pub name: String,
    /// The tags, in extraction order.
    pub tags: Vec<Tag>,
}

// Envoy's well-known tag names.
const RESPONSE_CODE: &str = "envoy.response_code";
const RESPONSE_CODE_CLASS: &str = "envoy.response_code_class";
const DYNAMO_PARTITION_ID: &str = "envoy.dynamo_partition_id";
const DYNAMO_OPERATION: &str = "envoy.dynamo_operation";
const DYNAMO_TABLE: &str = "envoy.dynamo_table";
const MONGO_CALLSITE: &str = "envoy.mongo_callsite";
const MONGO_COLLECTION: &str = "envoy.mongo_collection";
const MONGO_CMD: &str = "envoy.mongo_cmd";
const MONGO_PREFIX: &str = "envoy.mongo_prefix";
const GRPC_BRIDGE_METHOD: &str = "envoy.grpc_bridge_method";
const GRPC_BRIDGE_SERVICE: &str = "envoy.grpc_bridge_service";
const HTTP_USER_AGENT: &str = "envoy.http_user_agent";
const VIRTUAL_CLUSTER: &str = "envoy.virtual_cluster";
const VIRTUAL_HOST: &str = "envoy.virtual_host";
const FAULT_DOWNSTREAM_CLUSTER: &str = "envoy.fault_downstream_cluster";
const SSL_CIPHER: &str = "envoy.ssl_cipher";
const SSL_CURVE: &str = "envoy.ssl_curve";
const SSL_SIGALG: &str = "envoy.ssl_sigalg";
const SSL_VERSION: &str = "envoy.ssl_version";
const SSL_CIPHER_SUITE: &str = "cipher_suite";
const TCP_PREFIX: &str = "envoy.tcp_prefix";
const UDP_PREFIX: &str = "envoy.udp_prefix";
const CLIENTSSL_PREFIX: &str = "envoy.clientssl_prefix";
const RATELIMIT_PREFIX: &str = "envoy.ratelimit_prefix";
const CLUSTER_NAME: &str = "envoy.cluster_name";
const HTTP_CONN_MANAGER_PREFIX: &str = "envoy.http_conn_manager_prefix";
const EXT_AUTHZ_PREFIX: &str = "envoy.ext_authz_prefix";
const WORKER_ID: &str = "envoy.worker_id";
const LISTENER_ADDRESS: &str = "envoy.listener_address";
const RDS_ROUTE_CONFIG: &str = "envoy.rds_route_config";
const ROUTE: &str = "envoy.route";
const THRIFT_PREFIX: &str = "envoy.thrift_prefix";
const REDIS_PREFIX: &str = "envoy.redis_prefix";
const LOCAL_HTTP_RATELIMIT_PREFIX: &str = "envoy.local_http_ratelimit_prefix";
const LOCAL_NETWORK_RATELIMIT_PREFIX: &str = "envoy.local_network_ratelimit_prefix";
const LOCAL_LISTENER_RATELIMIT_PREFIX: &str = "envoy.local_listener_ratelimit_prefix";
const DNS_FILTER_PREFIX: &str = "envoy.dns_filter_prefix";

// Pattern pieces shared by several regular expressions (Envoy's `<ADDRESS>`, `<TAG_VALUE>`, …).
// `(?-u)` keeps `\d` and `\w` ASCII-only, as in RE2.
const ADDRESS: &str = r"(?:(?:\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}|\[[a-fA-F_\d]+\])_\d+)";
const TAG_VALUE: &str = r"[^.]+";
const CIPHER: &str = r"[\w-]+";
const LISTENER_OR_CLUSTER: &str = r"(?:listener|cluster)\..*?";

/// `(tag name, pattern, required substring, value that never counts as a match)`; the pattern uses
/// the placeholders `<ADDRESS>`, `<TAG_VALUE>`, `<CIPHER>`, `<LC>`. The worker-id pattern also covers
/// `thread_local_cluster_manager.worker_N.` as Envoy 1.40 was observed to do
/// (`envoy_thread_local_cluster_manager_worker_clusters_inflated{envoy_worker_id="0"}`).
const REGEX_EXTRACTORS: &[(&str, &str, &str, &str)] = &[
    (RESPONSE_CODE, r"_rq(_(\d{3}))$", "_rq_", ""),
    (RESPONSE_CODE_CLASS, r"_rq_((\d))xx$", "_rq_", ""),
    (
        DYNAMO_PARTITION_ID,
        r"^http\.<TAG_VALUE>\.dynamodb\.table\.<TAG_VALUE>\.capacity\.<TAG_VALUE>(\.__partition_id=(\w{7}))$",
        ".dynamodb.table.",
        "",
    ),
    (
        DYNAMO_OPERATION,
        r"^http\.<TAG_VALUE>\.dynamodb.(?:operation|table\.<TAG_VALUE>\.capacity)(\.(<TAG_VALUE>))(?:\.|$)",
        ".dynamodb.",
        "",
    ),
    (
        DYNAMO_TABLE,
        r"^http\.<TAG_VALUE>\.dynamodb.(?:table|error)\.((<TAG_VALUE>)\.)",
        ".dynamodb.",
        "",
    ),
    (
        SSL_CIPHER,
        r"^listener\..*?\.ssl\.ciphers(\.(<CIPHER>))$",
        ".ssl.ciphers.",
        "",
    ),
    (SSL_CURVE, r"^<LC>\.ssl\.curves(\.(<CIPHER>))$", ".ssl.curves.", ""),
    (SSL_SIGALG, r"^<LC>\.ssl\.sigalgs(\.(<CIPHER>))$", ".ssl.sigalgs.", ""),
    (
        SSL_VERSION,
        r"^<LC>\.ssl\.versions(\.(TLSv\d\.\d))$",
        ".ssl.versions.",
        "",
    ),
    (
        SSL_CIPHER_SUITE,
        r"^cluster\.<TAG_VALUE>\.ssl\.ciphers(\.(<CIPHER>))$",
        ".ssl.ciphers.",
        "",
    ),
    (
        HTTP_CONN_MANAGER_PREFIX,
        r"^listener\..*?\.http\.((<TAG_VALUE>)\.)",
        ".http.",
        "",
    ),
    (
        WORKER_ID,
        r"^(?:listener\.(?:<ADDRESS>|<TAG_VALUE>)\.|server\.|listener_manager\.|thread_local_cluster_manager\.)worker_((\d+)\.)",
        "",
        "",
    ),
    (LISTENER_ADDRESS, r"^listener\.((<ADDRESS>|<TAG_VALUE>)\.)", "", "admin"),
    (
        RDS_ROUTE_CONFIG,
        r"^http\.<TAG_VALUE>\.rds\.(([\w.-]+)\.)\w+?$",
        ".rds.",
        "",
    ),
];

/// `(tag name, token pattern)`.
const TOKEN_EXTRACTORS: &[(&str, &str)] = &[
    (MONGO_CALLSITE, "mongo.*.collection.*.callsite.$.query.**"),
    (MONGO_COLLECTION, "mongo.*.collection.$.**.query.*"),
    (MONGO_CMD, "mongo.*.cmd.$.**"),
    (GRPC_BRIDGE_METHOD, "cluster.*.grpc.*.$.**"),
    (HTTP_USER_AGENT, "http.*.user_agent.$.**"),
    (VIRTUAL_CLUSTER, "vhost.*.vcluster.$.**"),
    (FAULT_DOWNSTREAM_CLUSTER, "http.*.fault.$.**"),
    (GRPC_BRIDGE_SERVICE, "cluster.*.grpc.$.**"),
    (TCP_PREFIX, "tcp.$.**"),
    (UDP_PREFIX, "udp.$.**"),
    (CLIENTSSL_PREFIX, "auth.clientssl.$.**"),
    (RATELIMIT_PREFIX, "ratelimit.$.**"),
    (CLUSTER_NAME, "cluster.$.**"),
    (EXT_AUTHZ_PREFIX, "cluster.*.ext_authz.$.**"),
    (EXT_AUTHZ_PREFIX, "http.*.ext_authz.$.**"),
    (HTTP_CONN_MANAGER_PREFIX, "http.$.**"),
    (VIRTUAL_HOST, "vhost.$.**"),
    (MONGO_PREFIX, "mongo.$.**"),
    (ROUTE, "vhost.*.route.$.**"),
    (THRIFT_PREFIX, "thrift.$.**"),
    (REDIS_PREFIX, "redis.$.**"),
    (LOCAL_HTTP_RATELIMIT_PREFIX, "$.http_local_rate_limit.**"),
    (LOCAL_NETWORK_RATELIMIT_PREFIX, "local_rate_limit.$.**"),
    (LOCAL_LISTENER_RATELIMIT_PREFIX, "listener_local_ratelimit.$.**"),
    (DNS_FILTER_PREFIX, "dns_filter.$.**"),
];

enum Matcher {
    Regex {
        regex: Regex,
        substr: &'static str,
        negative: &'static str,
    },
    Tokens {
        tokens: Vec<&'static str>,
        value_index: usize,
    },
}

struct Extractor {
    tag: &'static str,
    /// Whether another extractor yields the same tag name (then only the first match counts).
    shared_tag: bool,
    matcher: Matcher,
}

/// A tag extractor set; [`TagExtractor::envoy_default`] is Envoy's built-in one.
pub struct TagExtractor {
    /// Extractors that apply to any name.
    any: Vec<Extractor>,
    /// Extractors that apply only when the first token of the name is the key.
    by_prefix: HashMap<&'static str, Vec<Extractor>>,
    /// Results by name: statistic names are stable, so scrapes after the first hit this.
    cache: Mutex<HashMap<Box<str>, Arc<Extracted>>>,
}

/// Entries kept in the extraction cache before it starts over (a bound against unbounded name churn).
const CACHE_LIMIT: usize = 1 << 16;

impl fmt::Debug for TagExtractor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TagExtractor")
            .field("any", &self.any.len())
            .field("by_prefix", &self.by_prefix.len())
            .finish()
    }
}

/// The first token a regular expression requires (`^cluster\.` → `cluster`), as Envoy computes it to
/// index extractors; empty when the expression can match names with any first token.
fn regex_prefix(pattern: &str) -> &str {
    let Some(rest) = pattern.strip_prefix('^') else {
        return "";
    };
    let end = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(rest.len());
    if end > 0 && (rest[end..].starts_with(r"\.") || rest[end..].starts_with(r"(?=\.)")) {
        &rest[..end]
    } else {
        ""
    }
}

fn expand(pattern: &str) -> String {
    let body = pattern
        .replace("<ADDRESS>", ADDRESS)
        .replace("<TAG_VALUE>", TAG_VALUE)
        .replace("<CIPHER>", CIPHER)
        .replace("<LC>", LISTENER_OR_CLUSTER);
    format!("(?-u){body}")
}

impl TagExtractor {
    /// Envoy's default tag extractors (`use_all_default_tags`), built once.
    pub fn envoy_default() -> &'static TagExtractor {
        static DEFAULT: OnceLock<TagExtractor> = OnceLock::new();
        DEFAULT.get_or_init(TagExtractor::build_default)
    }

    fn build_default() -> TagExtractor {
        let mut all: Vec<(&'static str, Extractor)> = Vec::new();
        for &(tag, pattern, substr, negative) in REGEX_EXTRACTORS {
            // The patterns are constants of this module and covered by the tests: a failure here is a
            // bug in this file, not bad input.
            let regex = Regex::new(&expand(pattern)).expect("built-in tag extraction pattern compiles");
            all.push((
                regex_prefix(pattern),
                Extractor {
                    tag,
                    shared_tag: false,
                    matcher: Matcher::Regex {
                        regex,
                        substr,
                        negative,
                    },
                },
            ));
        }
        for &(tag, pattern) in TOKEN_EXTRACTORS {
            let tokens: Vec<&'static str> = pattern.split('.').collect();
            let value_index = tokens.iter().position(|t| *t == "$").unwrap_or(0);
            let prefix = match tokens.first() {
                Some(&first) if !matches!(first, "$" | "*" | "**") => first,
                _ => "",
            };
            all.push((
                prefix,
                Extractor {
                    tag,
                    shared_tag: false,
                    matcher: Matcher::Tokens { tokens, value_index },
                },
            ));
        }
        let mut count: HashMap<&'static str, usize> = HashMap::new();
        for (_, e) in &all {
            *count.entry(e.tag).or_default() += 1;
        }
        let mut any = Vec::new();
        let mut by_prefix: HashMap<&'static str, Vec<Extractor>> = HashMap::new();
        for (prefix, mut e) in all {
            e.shared_tag = count[e.tag] > 1;
            if prefix.is_empty() {
                any.push(e);
            } else {
                by_prefix.entry(prefix).or_default().push(e);
            }
        }
        TagExtractor {
            any,
            by_prefix,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// [`extract`](Self::extract), remembering the result for the next call with the same name.
    pub fn extract_cached(&self, name: &str) -> Arc<Extracted> {
        if let Some(hit) = self.cache.lock().unwrap_or_else(PoisonError::into_inner).get(name) {
            return hit.clone();
        }
        let extracted = Arc::new(self.extract(name));
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if cache.len() >= CACHE_LIMIT {
            cache.clear();
        }
        cache.insert(name.into(), extracted.clone());
        extracted
    }

    /// Split `name` into its tag-extracted name and tags.
    pub fn extract(&self, name: &str) -> Extracted {
        let first = name.split_once('.').map(|(first, _)| first);
        let keyed = first
            .and_then(|f| self.by_prefix.get(f))
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        let tokens: Vec<&str> = name.split('.').collect();
        let mut tags: Vec<Tag> = Vec::new();
        let mut remove: Vec<(usize, usize)> = Vec::new();
        for e in self.any.iter().chain(keyed) {
            if e.shared_tag && tags.iter().any(|t| t.name == e.tag) {
                continue;
            }
            if let Some((value, range)) = e.matcher.apply(name, &tokens) {
                tags.push(Tag { name: e.tag, value });
                remove.push(range);
            }
        }
        Extracted {
            name: remove_ranges(name, &mut remove),
            tags,
        }
    }
}

impl Matcher {
    /// The tag value and the byte range of `name` to remove, when this extractor matches.
    fn apply(&self, name: &str, tokens: &[&str]) -> Option<(String, (usize, usize))> {
        match self {
            Matcher::Regex {
                regex,
                substr,
                negative,
            } => {
                if !substr.is_empty() && !name.contains(substr) {
                    return None;
                }
                // The DFA answers "no match" far faster than a capturing search.
                if !regex.is_match(name.as_bytes()) {
                    return None;
                }
                let caps = regex.captures(name.as_bytes())?;
                let remove = caps.get(1).filter(|m| !m.is_empty())?;
                let value = caps.get(2).filter(|m| !m.is_empty()).unwrap_or(remove);
                let value = std::str::from_utf8(value.as_bytes()).ok()?;
                if !negative.is_empty() && value == *negative {
                    return None;
                }
                Some((value.to_string(), (remove.start(), remove.end())))
            }
            Matcher::Tokens {
                tokens: pattern,
                value_index,
            } => {
                let mut found = None;
                if !match_tokens(pattern, *value_index, tokens, 0, 0, 0, &mut found) {
                    return None;
                }
                let (index, start) = found?;
                let value = tokens[index];
                let mut start = start;
                let mut end = start + value.len();
                if index + 1 < tokens.len() {
                    end += 1; // the dot after the value
                } else {
                    start = start.saturating_sub(1); // the value ends the name: remove the dot before it
                }
                Some((value.to_string(), (start, end)))
            }
        }
    }
}

/// Match `input[i..]` against `pattern[p..]` (Envoy's token pattern semantics: `*` is one token, `**` at
/// the end one or more tokens, `**` elsewhere zero or more); `offset` is the byte offset of `input[i]` in
/// the name. On success `found` holds the index of the value token and its byte offset.
fn match_tokens(
    pattern: &[&str],
    value_index: usize,
    input: &[&str],
    mut i: usize,
    mut p: usize,
    mut offset: usize,
    found: &mut Option<(usize, usize)>,
) -> bool {
    while i < input.len() && p < pattern.len() {
        if p == value_index {
            *found = Some((i, offset));
        } else if pattern[p] == "**" {
            if p == pattern.len() - 1 {
                return true;
            }
            p += 1;
            while i < input.len() {
                if match_tokens(pattern, value_index, input, i, p, offset, found) {
                    return true;
                }
                offset += input[i].len() + 1;
                i += 1;
            }
            return false;
        } else if pattern[p] != "*" && pattern[p] != input[i] {
            return false;
        }
        offset += input[i].len() + 1;
        i += 1;
        p += 1;
    }
    i == input.len() && p == pattern.len()
}

/// Remove the given byte ranges (possibly overlapping) from `name`.
fn remove_ranges(name: &str, ranges: &mut [(usize, usize)]) -> String {
    if ranges.is_empty() {
        return name.to_string();
    }
    ranges.sort_unstable();
    let mut out = String::with_capacity(name.len());
    let mut pos = 0;
    for &(start, end) in ranges.iter() {
        if start > pos {
            out.push_str(&name[pos..start]);
        }
        pos = pos.max(end);
    }
    if pos < name.len() {
        out.push_str(&name[pos..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn x(name: &str) -> (String, Vec<(&'static str, String)>) {
        let e = TagExtractor::envoy_default().extract(name);
        (e.name, e.tags.into_iter().map(|t| (t.name, t.value)).collect())
    }

    fn tags(pairs: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
        pairs.iter().map(|(n, v)| (*n, v.to_string())).collect()
    }

    #[test]
    fn prefixes_are_computed_like_envoy() {
        assert_eq!(regex_prefix(r"^listener\..*?"), "listener");
        assert_eq!(regex_prefix(r"^(?:listener\.|server\.)worker_"), "");
        assert_eq!(regex_prefix(r"_rq_((\d))xx$"), "");
        assert_eq!(regex_prefix(r"^http(?=\.)x"), "http");
    }

    #[test]
    fn listener_worker_and_address() {
        assert_eq!(
            x("listener.0.0.0.0_15001.worker_0.downstream_cx_total"),
            (
                "listener.worker_downstream_cx_total".into(),
                tags(&[(WORKER_ID, "0"), (LISTENER_ADDRESS, "0.0.0.0_15001")])
            )
        );
        assert_eq!(
            x("listener.[__]_15006.downstream_cx_active"),
            (
                "listener.downstream_cx_active".into(),
                tags(&[(LISTENER_ADDRESS, "[__]_15006")])
            )
        );
        // `admin` is never a listener address.
        assert_eq!(
            x("listener.admin.main_thread.downstream_cx_total"),
            ("listener.admin.main_thread.downstream_cx_total".into(), vec![])
        );
        assert_eq!(
            x("listener.admin.http.admin.downstream_rq_5xx"),
            (
                "listener.admin.http.downstream_rq_xx".into(),
                tags(&[(RESPONSE_CODE_CLASS, "5"), (HTTP_CONN_MANAGER_PREFIX, "admin")])
            )
        );
    }

    #[test]
    fn http_cluster_tcp_fault() {
        assert_eq!(
            x("http.localhost_5000.fault.aborts_injected"),
            (
                "http.fault.aborts_injected".into(),
                tags(&[(HTTP_CONN_MANAGER_PREFIX, "localhost_5000")])
            )
        );
        assert_eq!(
            x("http.localhost_5000.fault.frontend.aborts_injected"),
            (
                "http.fault.aborts_injected".into(),
                tags(&[
                    (FAULT_DOWNSTREAM_CLUSTER, "frontend"),
                    (HTTP_CONN_MANAGER_PREFIX, "localhost_5000")
                ])
            )
        );
        assert_eq!(
            x("cluster.localhost_5000.upstream_rq_200"),
            (
                "cluster.upstream_rq".into(),
                tags(&[(RESPONSE_CODE, "200"), (CLUSTER_NAME, "localhost_5000")])
            )
        );
        assert_eq!(
            x("cluster.inbound_passthrough_ipv4.circuit_breakers.default.cx_open"),
            (
                "cluster.circuit_breakers.default.cx_open".into(),
                tags(&[(CLUSTER_NAME, "inbound_passthrough_ipv4")])
            )
        );
        assert_eq!(
            x("tcp.outbound_passthrough_ipv4.downstream_cx_total"),
            (
                "tcp.downstream_cx_total".into(),
                tags(&[(TCP_PREFIX, "outbound_passthrough_ipv4")])
            )
        );
        assert_eq!(
            x("http.async-client.no_route"),
            (
                "http.no_route".into(),
                tags(&[(HTTP_CONN_MANAGER_PREFIX, "async-client")])
            )
        );
    }

    #[test]
    fn names_without_tags_are_unchanged() {
        for n in [
            "server.live",
            "cluster_manager.active_clusters",
            "http1.response_flood",
            "envoy.overload_actions.reset_high_memory_stream.count",
            "listener_manager.listener_added",
            "tcp",
            "",
        ] {
            assert_eq!(x(n), (n.to_string(), vec![]), "{n}");
        }
        assert_eq!(
            x("server.worker_0.watchdog_miss"),
            ("server.worker_watchdog_miss".into(), tags(&[(WORKER_ID, "0")]))
        );
    }

    #[test]
    fn token_patterns() {
        // `**` needs at least one token: a bare prefix is not a tag.
        assert_eq!(x("tcp.prefix"), ("tcp.prefix".into(), vec![]));
        // A value at the end removes the dot before it.
        assert_eq!(
            x("prefix_x.http_local_rate_limit.enabled"),
            (
                "http_local_rate_limit.enabled".into(),
                tags(&[(LOCAL_HTTP_RATELIMIT_PREFIX, "prefix_x")])
            )
        );
        assert_eq!(
            x("mongo.p.collection.c.callsite.s.query.total"),
            (
                "mongo.collection.callsite.query.total".into(),
                tags(&[(MONGO_CALLSITE, "s"), (MONGO_COLLECTION, "c"), (MONGO_PREFIX, "p")])
            )
        );
        assert_eq!(
            x("cluster.c.grpc.svc.m.success"),
            (
                "cluster.grpc.success".into(),
                tags(&[
                    (GRPC_BRIDGE_METHOD, "m"),
                    (GRPC_BRIDGE_SERVICE, "svc"),
                    (CLUSTER_NAME, "c")
                ])
            )
        );
    }

    #[test]
    fn cached_extraction_equals_direct() {
        let e = TagExtractor::envoy_default();
        for name in ["listener.0.0.0.0_15001.worker_0.downstream_cx_total", "server.live", ""] {
            let first = e.extract_cached(name);
            let again = e.extract_cached(name);
            assert!(Arc::ptr_eq(&first, &again));
            assert_eq!(*first, e.extract(name));
        }
    }

    #[test]
    fn hostile_names_do_not_panic() {
        for n in [
            ".",
            "..",
            "listener.",
            "listener..x",
            "cluster.",
            "http.a.fault.",
            "ß.é.ü",
            "_rq_",
            "x_rq_9xx",
        ] {
            let _ = x(n);
        }
    }
}
