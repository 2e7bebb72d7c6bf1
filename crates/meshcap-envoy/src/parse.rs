//! Reading YAML and JSON with tight limits: inputs are small configuration files, so anything large,
//! deeply nested or alias-heavy is refused before it costs memory or time.

use serde::de::DeserializeOwned;

use crate::error::{Error, Format};

/// The largest input accepted (1 MiB): a Dataplane with hundreds of outbounds is a few tens of KiB.
pub const MAX_INPUT_BYTES: usize = 1 << 20;

fn check_size(what: &'static str, text: &str) -> Result<(), Error> {
    if text.len() > MAX_INPUT_BYTES {
        return Err(Error::TooLarge {
            what,
            size: text.len(),
            limit: MAX_INPUT_BYTES,
        });
    }
    Ok(())
}

fn yaml_options() -> serde_saphyr::Options {
    serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_reader_input_bytes: Some(MAX_INPUT_BYTES),
            max_documents: 1,
            max_depth: 32,
            max_nodes: 100_000,
            max_events: 200_000,
            max_aliases: 64,
            max_anchors: 64,
            max_total_scalar_bytes: MAX_INPUT_BYTES,
            max_merge_keys: 64,
            max_recorded_anchor_events: 10_000,
            max_recorded_anchor_bytes: MAX_INPUT_BYTES,
        },
        alias_limits: serde_saphyr::alias_limits! {
            max_total_replayed_events: 10_000,
            max_replay_stack_depth: 16,
            max_alias_expansions_per_anchor: 64,
        },
        strict_booleans: true,
        with_snippet: false,
    }
}

/// Deserialize one YAML document.
pub(crate) fn from_yaml<T: DeserializeOwned>(what: &'static str, text: &str) -> Result<T, Error> {
    check_size(what, text)?;
    serde_saphyr::from_str_with_options(text, yaml_options()).map_err(|e| Error::Parse {
        what,
        format: Format::Yaml,
        message: e.to_string(),
    })
}

/// Deserialize JSON (serde_json's own recursion limit of 128 applies).
pub(crate) fn from_json<T: DeserializeOwned>(what: &'static str, text: &str) -> Result<T, Error> {
    check_size(what, text)?;
    serde_json::from_str(text).map_err(|e| Error::Parse {
        what,
        format: Format::Json,
        message: e.to_string(),
    })
}

/// JSON when the text starts with `{` (after whitespace), YAML otherwise.
pub(crate) fn sniff(text: &str) -> Format {
    if text.trim_start().starts_with('{') {
        Format::Json
    } else {
        Format::Yaml
    }
}

/// Deserialize `text` in `format`.
pub(crate) fn from_format<T: DeserializeOwned>(what: &'static str, format: Format, text: &str) -> Result<T, Error> {
    match format {
        Format::Yaml => from_yaml(what, text),
        Format::Json => from_json(what, text),
    }
}
