//! [`Policy`]: what can be applied to a Dataplane's resources — a Kuma `MeshFaultInjection`, or a raw
//! Envoy `HTTPFault` typed config.

use std::str::FromStr;

use serde::Deserialize;
use serde::de::IgnoredAny;

use crate::error::{Error, Format, ValidationErrorKind, invalid};
use crate::fault_injection::{MeshFaultInjection, RawPolicy};
use crate::http_fault::HttpFault;
use crate::parse;

const WHAT: &str = "policy";

/// A policy file's content.
///
/// * A `MeshFaultInjection` (universal `type: MeshFaultInjection` or Kubernetes `kind: MeshFaultInjection`)
///   is converted exactly as Kuma converts it (see [`crate::fault_injection`]).
/// * A raw `HTTPFault` typed config (an object whose `@type` is
///   [`HTTP_FAULT_TYPE_URL`](crate::http_fault::HTTP_FAULT_TYPE_URL)) is put, as given, on every `http`
///   and `http2` inbound, after the Kuma-derived fault filters.
///
/// ```
/// use meshcap_envoy::Policy;
///
/// let raw: Policy = r#"{"@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault",
///                       "abort": {"http_status": 503, "percentage": {"numerator": 100}}}"#.parse()?;
/// assert!(matches!(raw, Policy::HttpFault(_)));
///
/// let kuma: Policy = meshcap_envoy::demo::FAULT_INJECTION_YAML.parse()?;
/// assert!(matches!(kuma, Policy::MeshFaultInjection(_)));
/// # Ok::<(), meshcap_envoy::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Policy {
    /// A Kuma `MeshFaultInjection`.
    MeshFaultInjection(MeshFaultInjection),
    /// A raw Envoy `HTTPFault`, applied to every HTTP inbound.
    HttpFault(HttpFault),
}

/// Just enough of a policy document to tell the kinds apart.
#[derive(Deserialize)]
struct Probe {
    #[serde(rename = "@type")]
    type_url: Option<IgnoredAny>,
    #[serde(rename = "type")]
    type_: Option<IgnoredAny>,
    kind: Option<IgnoredAny>,
}

impl Policy {
    /// Read a policy from YAML.
    ///
    /// # Errors
    /// [`Error::Parse`] or [`Error::Invalid`] as for the policy kind found; [`Error::Invalid`] at `type`
    /// when the document is neither kind.
    pub fn from_yaml(text: &str) -> Result<Policy, Error> {
        Policy::read(Format::Yaml, text)
    }

    /// Read a policy from JSON.
    ///
    /// # Errors
    /// As [`Policy::from_yaml`].
    pub fn from_json(text: &str) -> Result<Policy, Error> {
        Policy::read(Format::Json, text)
    }

    fn read(format: Format, text: &str) -> Result<Policy, Error> {
        let probe: Probe = parse::from_format(WHAT, format, text)?;
        if probe.type_url.is_some() {
            let fault = match format {
                Format::Yaml => HttpFault::from_yaml(text)?,
                Format::Json => HttpFault::from_json(text)?,
            };
            return Ok(Policy::HttpFault(fault));
        }
        if probe.type_.is_none() && probe.kind.is_none() {
            return Err(invalid(
                "type",
                ValidationErrorKind::Unsupported(
                    "expected a MeshFaultInjection (type: or kind:) or an HTTPFault typed config (@type:)",
                ),
            ));
        }
        let raw: RawPolicy = parse::from_format(WHAT, format, text)?;
        Ok(Policy::MeshFaultInjection(MeshFaultInjection::from_raw(raw)?))
    }
}

impl FromStr for Policy {
    type Err = Error;

    /// JSON when the text starts with `{`, YAML otherwise.
    fn from_str(text: &str) -> Result<Policy, Error> {
        Policy::read(parse::sniff(text), text)
    }
}

impl From<MeshFaultInjection> for Policy {
    fn from(p: MeshFaultInjection) -> Policy {
        Policy::MeshFaultInjection(p)
    }
}

impl From<HttpFault> for Policy {
    fn from(f: HttpFault) -> Policy {
        Policy::HttpFault(f)
    }
}
