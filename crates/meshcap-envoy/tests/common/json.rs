//! An order-preserving JSON tree, so tests can compare Envoy's output with ours field order included,
//! after normalising what Envoy itself prints in a nondeterministic order.

use std::fmt::{self, Write as _};

use serde::Deserialize;
use serde::de::{MapAccess, SeqAccess, Visitor};

/// A JSON value whose objects keep their key order.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Json {
    Null,
    Bool(bool),
    Number(String),
    String(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Json, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Json;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("json")
            }
            fn visit_unit<E>(self) -> Result<Json, E> {
                Ok(Json::Null)
            }
            fn visit_bool<E>(self, v: bool) -> Result<Json, E> {
                Ok(Json::Bool(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Json, E> {
                Ok(Json::Number(v.to_string()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Json, E> {
                Ok(Json::Number(v.to_string()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Json, E> {
                Ok(Json::Number(v.to_string()))
            }
            fn visit_str<E>(self, v: &str) -> Result<Json, E> {
                Ok(Json::String(v.to_string()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Json, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = a.next_element()? {
                    items.push(item);
                }
                Ok(Json::Array(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Json, A::Error> {
                let mut entries = Vec::new();
                while let Some((k, v)) = a.next_entry()? {
                    entries.push((k, v));
                }
                Ok(Json::Object(entries))
            }
        }
        d.deserialize_any(V)
    }
}

impl Json {
    pub(crate) fn parse(text: &str) -> Json {
        serde_json::from_str(text).expect("valid json")
    }

    pub(crate) fn get_mut(&mut self, key: &str) -> Option<&mut Json> {
        match self {
            Json::Object(entries) => entries.iter_mut().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    pub(crate) fn remove(&mut self, key: &str) {
        if let Json::Object(entries) = self {
            entries.retain(|(k, _)| k != key);
        }
    }

    /// Sort object keys here and in every nested object (for protobuf `Struct`s and maps).
    fn sort_keys_deep(&mut self) {
        match self {
            Json::Object(entries) => {
                entries.sort_by(|a, b| a.0.cmp(&b.0));
                entries.iter_mut().for_each(|(_, v)| v.sort_keys_deep());
            }
            Json::Array(items) => items.iter_mut().for_each(Json::sort_keys_deep),
            _ => {}
        }
    }

    /// Make two config dumps comparable: timestamps replaced, protobuf maps and `Struct`s (whose order
    /// Envoy randomizes) sorted, static route configurations (a hash set in Envoy) sorted, and the node's
    /// build-specific fields dropped when `drop_user_agent`.
    pub(crate) fn normalise_config_dump(&mut self, drop_user_agent: bool) {
        self.normalise_walk();
        if let Some(Json::Array(configs)) = self.get_mut("configs") {
            for entry in configs {
                if let Some(node) = entry.get_mut("bootstrap").and_then(|b| b.get_mut("node")) {
                    node.remove("extensions");
                    if drop_user_agent {
                        node.remove("user_agent_name");
                        node.remove("user_agent_build_version");
                    }
                }
                if let Some(Json::Array(routes)) = entry.get_mut("static_route_configs") {
                    routes.sort_by_key(Json::render);
                }
            }
        }
    }

    fn normalise_walk(&mut self) {
        match self {
            Json::Object(entries) => {
                for (k, v) in entries.iter_mut() {
                    match k.as_str() {
                        "last_updated" => *v = Json::String("T".to_string()),
                        "filter_metadata" | "metadata" | "typed_extension_protocol_options"
                            if matches!(v, Json::Object(_)) =>
                        {
                            v.sort_keys_deep()
                        }
                        _ => v.normalise_walk(),
                    }
                }
            }
            Json::Array(items) => items.iter_mut().for_each(Json::normalise_walk),
            _ => {}
        }
    }

    /// Pretty text (one key per line), for line diffs.
    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        self.render_into(&mut out, 0);
        out
    }

    fn render_into(&self, out: &mut String, indent: usize) {
        let pad = |out: &mut String, n: usize| out.push_str(&" ".repeat(n));
        match self {
            Json::Null => out.push_str("null"),
            Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Json::Number(n) => out.push_str(n),
            Json::String(s) => {
                let _ = write!(out, "{}", serde_json::Value::String(s.clone()));
            }
            Json::Array(items) => {
                out.push_str("[\n");
                for (i, item) in items.iter().enumerate() {
                    pad(out, indent + 1);
                    item.render_into(out, indent + 1);
                    out.push_str(if i + 1 < items.len() { ",\n" } else { "\n" });
                }
                pad(out, indent);
                out.push(']');
            }
            Json::Object(entries) => {
                out.push_str("{\n");
                for (i, (k, v)) in entries.iter().enumerate() {
                    pad(out, indent + 1);
                    let _ = write!(out, "{}: ", serde_json::Value::String(k.clone()));
                    v.render_into(out, indent + 1);
                    out.push_str(if i + 1 < entries.len() { ",\n" } else { "\n" });
                }
                pad(out, indent);
                out.push('}');
            }
        }
    }
}

/// Panic with the first differing lines (and some context) when `ours` and `theirs` differ.
pub(crate) fn assert_same(label: &str, ours: &Json, theirs: &Json) {
    let (a, b) = (ours.render(), theirs.render());
    if a == b {
        return;
    }
    let (al, bl): (Vec<&str>, Vec<&str>) = (a.lines().collect(), b.lines().collect());
    let first = al
        .iter()
        .zip(&bl)
        .position(|(x, y)| x != y)
        .unwrap_or(al.len().min(bl.len()));
    let from = first.saturating_sub(8);
    let show = |lines: &[&str]| lines.iter().skip(from).take(20).copied().collect::<Vec<_>>().join("\n");
    panic!(
        "{label}: documents differ at line {}:\n--- ours\n{}\n--- envoy\n{}",
        first + 1,
        show(&al),
        show(&bl)
    );
}
