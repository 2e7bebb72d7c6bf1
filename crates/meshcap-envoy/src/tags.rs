//! [`Tags`]: Kuma's `key: value` tags, kept in the order they were written.

use std::fmt;

use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{ValidationError, ValidationErrorKind};
use crate::names::{PROTOCOL_TAG, SERVICE_TAG};

/// Kuma tags (`kuma.io/service: backend`), in the order they were written, keys unique.
///
/// The order matters only for output: it is the order of the listener's `io.kuma.tags` metadata.
///
/// ```
/// use meshcap_envoy::Tags;
///
/// let tags = Tags::new().with("kuma.io/service", "backend").with("kuma.io/protocol", "http");
/// assert_eq!(tags.service(), Some("backend"));
/// assert_eq!(tags.get("kuma.io/protocol"), Some("http"));
/// assert_eq!(tags.len(), 2);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Tags(Vec<(String, String)>);

impl Tags {
    /// No tags.
    pub fn new() -> Tags {
        Tags(Vec::new())
    }

    /// These tags plus `key: value` (replacing an existing value for `key`, keeping its position).
    #[must_use]
    pub fn with(mut self, key: impl Into<String>, value: impl Into<String>) -> Tags {
        self.insert(key, value);
        self
    }

    /// Set `key` to `value`; returns the previous value.
    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<String>) -> Option<String> {
        let (key, value) = (key.into(), value.into());
        match self.0.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => Some(std::mem::replace(v, value)),
            None => {
                self.0.push((key, value));
                None
            }
        }
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// The `kuma.io/service` tag.
    pub fn service(&self) -> Option<&str> {
        self.get(SERVICE_TAG)
    }

    /// The `kuma.io/protocol` tag.
    pub fn protocol(&self) -> Option<&str> {
        self.get(PROTOCOL_TAG)
    }

    /// The tags in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// How many tags there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Check keys and values against Kuma's character set (letters, digits, `.`, `-`, `_`, `:`, `/`), no
    /// empty key or value. `extra` lists additional characters allowed in values (`*` in selectors).
    pub(crate) fn validate(&self, path: &str, extra: &[char]) -> Result<(), ValidationError> {
        for (key, value) in self.iter() {
            if key.is_empty() {
                return Err(ValidationError::new(path, ValidationErrorKind::Empty));
            }
            if let Some(character) = key.chars().find(|c| !is_tag_char(*c)) {
                return Err(ValidationError::new(
                    path,
                    ValidationErrorKind::InvalidCharacter {
                        value: key.to_string(),
                        character,
                    },
                ));
            }
            let value_path = format!("{path}[{key:?}]");
            if value.is_empty() {
                return Err(ValidationError::new(value_path, ValidationErrorKind::Empty));
            }
            if let Some(character) = value.chars().find(|c| !is_tag_char(*c) && !extra.contains(c)) {
                return Err(ValidationError::new(
                    value_path,
                    ValidationErrorKind::InvalidCharacter {
                        value: value.to_string(),
                        character,
                    },
                ));
            }
        }
        Ok(())
    }
}

/// Kuma's tag character set.
fn is_tag_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':' | '/')
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Tags {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Tags {
        let mut tags = Tags::new();
        for (k, v) in iter {
            tags.insert(k, v);
        }
        tags
    }
}

impl Serialize for Tags {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Tags {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Tags, D::Error> {
        struct TagsVisitor;
        impl<'de> Visitor<'de> for TagsVisitor {
            type Value = Tags;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map of string tags")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Tags, A::Error> {
                let mut tags = Vec::<(String, String)>::new();
                while let Some((key, value)) = access.next_entry::<String, String>()? {
                    if tags.iter().any(|(k, _)| *k == key) {
                        return Err(serde::de::Error::custom(format_args!("duplicate tag {key:?}")));
                    }
                    tags.push((key, value));
                }
                Ok(Tags(tags))
            }
        }
        deserializer.deserialize_map(TagsVisitor)
    }
}
