//! The two JSON documents: Envoy's `/config_dump` and a bootstrap Envoy can run.

use std::net::SocketAddr;

use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

use crate::cluster::{CLUSTER_TYPE_URL, Cluster};
use crate::json::{Any, Fields, ProtoFields, to_envoy_pretty};
use crate::listener::{LISTENER_TYPE_URL, Listener, ROUTE_CONFIGURATION_TYPE_URL, RouteConfiguration, SocketAddress};
use crate::resources::Resources;
use crate::time::Timestamp;

const BOOTSTRAP_DUMP_TYPE_URL: &str = "type.googleapis.com/envoy.admin.v3.BootstrapConfigDump";
const CLUSTERS_DUMP_TYPE_URL: &str = "type.googleapis.com/envoy.admin.v3.ClustersConfigDump";
const LISTENERS_DUMP_TYPE_URL: &str = "type.googleapis.com/envoy.admin.v3.ListenersConfigDump";
const SCOPED_ROUTES_DUMP_TYPE_URL: &str = "type.googleapis.com/envoy.admin.v3.ScopedRoutesConfigDump";
const ROUTES_DUMP_TYPE_URL: &str = "type.googleapis.com/envoy.admin.v3.RoutesConfigDump";
const SECRETS_DUMP_TYPE_URL: &str = "type.googleapis.com/envoy.admin.v3.SecretsConfigDump";

/// What a `/config_dump` says beyond the resources: when they were loaded and who is talking.
///
/// Envoy fills the node's `user_agent_name` (`envoy`) and `user_agent_build_version` from its build, and
/// lists its compiled-in extensions in `node.extensions`. meshcap prints the user agent it is given and no
/// `extensions` list: that list describes a binary, not the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigDumpOptions {
    last_updated: Timestamp,
    user_agent_name: String,
    user_agent_build_version: Option<BuildVersion>,
}

/// `node.user_agent_build_version`: a semantic version and build metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildVersion {
    major: u32,
    minor: u32,
    patch: u32,
    metadata: Vec<(String, String)>,
}

impl BuildVersion {
    /// `major.minor.patch` with no metadata.
    pub fn new(major: u32, minor: u32, patch: u32) -> BuildVersion {
        BuildVersion {
            major,
            minor,
            patch,
            metadata: Vec::new(),
        }
    }

    /// With a metadata entry (`revision.sha`, `build.type`, …), kept in insertion order.
    #[must_use]
    pub fn with_metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> BuildVersion {
        self.metadata.push((key.into(), value.into()));
        self
    }
}

impl ConfigDumpOptions {
    /// Resources loaded at `last_updated`, user agent `meshcap` with no build version.
    pub fn new(last_updated: Timestamp) -> ConfigDumpOptions {
        ConfigDumpOptions {
            last_updated,
            user_agent_name: "meshcap".to_string(),
            user_agent_build_version: None,
        }
    }

    /// With the node's user agent name and build version.
    #[must_use]
    pub fn with_user_agent(
        mut self,
        name: impl Into<String>,
        build_version: Option<BuildVersion>,
    ) -> ConfigDumpOptions {
        self.user_agent_name = name.into();
        self.user_agent_build_version = build_version;
        self
    }

    /// The `last_updated` timestamp of every resource.
    pub fn last_updated(&self) -> Timestamp {
        self.last_updated
    }
}

impl Resources {
    /// Envoy's `/config_dump` for these resources, pretty-printed as Envoy prints it: six entries
    /// (bootstrap, clusters sorted by name, listeners in bootstrap order, scoped routes, route
    /// configurations, secrets), fields in protobuf order, defaults omitted.
    ///
    /// Envoy itself prints protobuf maps and `Struct`s (the `io.kuma.tags` metadata, build metadata) and the
    /// list of static route configurations in an order that changes from run to run; here they come in
    /// insertion order and listener order.
    ///
    /// ```
    /// use meshcap_envoy::{ConfigDumpOptions, Resources, Timestamp, demo};
    ///
    /// let resources = Resources::from_dataplane(&demo::dataplane())?;
    /// let at = Timestamp::from_unix(1_795_692_936, 386_000_000).ok_or("timestamp")?;
    /// let dump: serde_json::Value = serde_json::from_str(&resources.config_dump_json(&ConfigDumpOptions::new(at)))?;
    /// assert_eq!(dump["configs"].as_array().map(Vec::len), Some(6));
    /// assert_eq!(dump["configs"][2]["static_listeners"][0]["last_updated"], "2026-11-26T11:35:36.386Z");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn config_dump_json(&self, options: &ConfigDumpOptions) -> String {
        to_envoy_pretty(&self.config_dump(options))
    }

    /// The `/config_dump` document as a serializable value (for callers writing it themselves).
    pub fn config_dump<'a>(&'a self, options: &'a ConfigDumpOptions) -> impl Serialize + 'a {
        ConfigDump {
            resources: self,
            options,
        }
    }

    /// A bootstrap Envoy runs: `node` (id, cluster), `static_resources` (listeners, clusters), `admin`
    /// (address), pretty-printed.
    pub fn bootstrap_json(&self) -> String {
        to_envoy_pretty(&self.bootstrap())
    }

    /// The bootstrap as a serializable value.
    pub fn bootstrap(&self) -> impl Serialize + '_ {
        BootstrapDoc(BootstrapRef {
            resources: self,
            options: None,
        })
    }
}

/// The bootstrap, with or without the user agent the config dump adds to the node.
struct BootstrapRef<'a> {
    resources: &'a Resources,
    options: Option<&'a ConfigDumpOptions>,
}

struct BootstrapDoc<'a>(BootstrapRef<'a>);

impl Serialize for BootstrapDoc<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        Fields(&self.0).serialize(serializer)
    }
}

impl ProtoFields for BootstrapRef<'_> {
    fn write_fields<M: SerializeMap>(&self, map: &mut M) -> Result<(), M::Error> {
        map.serialize_entry(
            "node",
            &Fields(&Node {
                resources: self.resources,
                options: self.options,
            }),
        )?;
        map.serialize_entry("static_resources", &Fields(&StaticResources(self.resources)))?;
        map.serialize_entry("admin", &Fields(&Admin(self.resources.admin_address())))
    }
}

struct Node<'a> {
    resources: &'a Resources,
    options: Option<&'a ConfigDumpOptions>,
}

impl ProtoFields for Node<'_> {
    fn write_fields<M: SerializeMap>(&self, map: &mut M) -> Result<(), M::Error> {
        map.serialize_entry("id", self.resources.node_id())?;
        if !self.resources.node_cluster().is_empty() {
            map.serialize_entry("cluster", self.resources.node_cluster())?;
        }
        if let Some(o) = self.options {
            map.serialize_entry("user_agent_name", &o.user_agent_name)?;
            if let Some(v) = &o.user_agent_build_version {
                map.serialize_entry("user_agent_build_version", &Fields(v))?;
            }
        }
        Ok(())
    }
}

impl ProtoFields for BuildVersion {
    fn write_fields<M: SerializeMap>(&self, map: &mut M) -> Result<(), M::Error> {
        map.serialize_entry("version", &Fields(&SemanticVersion(self)))?;
        if !self.metadata.is_empty() {
            map.serialize_entry("metadata", &Pairs(&self.metadata))?;
        }
        Ok(())
    }
}

struct SemanticVersion<'a>(&'a BuildVersion);

impl ProtoFields for SemanticVersion<'_> {
    fn write_fields<M: SerializeMap>(&self, map: &mut M) -> Result<(), M::Error> {
        for (key, value) in [
            ("major_number", self.0.major),
            ("minor_number", self.0.minor),
            ("patch", self.0.patch),
        ] {
            if value != 0 {
                map.serialize_entry(key, &value)?;
            }
        }
        Ok(())
    }
}

struct Pairs<'a>(&'a [(String, String)]);

impl Serialize for Pairs<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (k, v) in self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

struct StaticResources<'a>(&'a Resources);

impl ProtoFields for StaticResources<'_> {
    fn write_fields<M: SerializeMap>(&self, map: &mut M) -> Result<(), M::Error> {
        if !self.0.listeners().is_empty() {
            map.serialize_entry("listeners", self.0.listeners())?;
        }
        if !self.0.clusters().is_empty() {
            map.serialize_entry("clusters", self.0.clusters())?;
        }
        Ok(())
    }
}

struct Admin(SocketAddr);

impl ProtoFields for Admin {
    fn write_fields<M: SerializeMap>(&self, map: &mut M) -> Result<(), M::Error> {
        map.serialize_entry("address", &Fields(&SocketAddress(self.0)))
    }
}

struct ConfigDump<'a> {
    resources: &'a Resources,
    options: &'a ConfigDumpOptions,
}

impl Serialize for ConfigDump<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(1))?;
        map.serialize_entry(
            "configs",
            &[
                Entry::Bootstrap(self),
                Entry::Clusters(self),
                Entry::Listeners(self),
                Entry::ScopedRoutes,
                Entry::Routes(self),
                Entry::Secrets,
            ],
        )?;
        map.end()
    }
}

enum Entry<'a> {
    Bootstrap(&'a ConfigDump<'a>),
    Clusters(&'a ConfigDump<'a>),
    Listeners(&'a ConfigDump<'a>),
    ScopedRoutes,
    Routes(&'a ConfigDump<'a>),
    Secrets,
}

impl Serialize for Entry<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        match self {
            Entry::Bootstrap(d) => {
                map.serialize_entry("@type", BOOTSTRAP_DUMP_TYPE_URL)?;
                let bootstrap = BootstrapRef {
                    resources: d.resources,
                    options: Some(d.options),
                };
                map.serialize_entry("bootstrap", &Fields(&bootstrap))?;
                map.serialize_entry("last_updated", &d.options.last_updated.to_string())?;
            }
            Entry::Clusters(d) => {
                map.serialize_entry("@type", CLUSTERS_DUMP_TYPE_URL)?;
                let mut clusters: Vec<&Cluster> = d.resources.clusters().iter().collect();
                clusters.sort_by(|a, b| a.name().cmp(b.name()));
                if !clusters.is_empty() {
                    let entries: Vec<_> = clusters
                        .into_iter()
                        .map(|c| Static::Cluster(c, d.options.last_updated))
                        .collect();
                    let entries: Vec<_> = entries.iter().map(Fields).collect();
                    map.serialize_entry("static_clusters", &entries)?;
                }
            }
            Entry::Listeners(d) => {
                map.serialize_entry("@type", LISTENERS_DUMP_TYPE_URL)?;
                if !d.resources.listeners().is_empty() {
                    let entries: Vec<_> = d
                        .resources
                        .listeners()
                        .iter()
                        .map(|l| Static::Listener(l, d.options.last_updated))
                        .collect();
                    let entries: Vec<_> = entries.iter().map(Fields).collect();
                    map.serialize_entry("static_listeners", &entries)?;
                }
            }
            Entry::ScopedRoutes => map.serialize_entry("@type", SCOPED_ROUTES_DUMP_TYPE_URL)?,
            Entry::Routes(d) => {
                map.serialize_entry("@type", ROUTES_DUMP_TYPE_URL)?;
                let entries: Vec<_> = d
                    .resources
                    .route_configs()
                    .map(|r| Static::RouteConfig(r, d.options.last_updated))
                    .collect();
                let entries: Vec<_> = entries.iter().map(Fields).collect();
                if !entries.is_empty() {
                    map.serialize_entry("static_route_configs", &entries)?;
                }
            }
            Entry::Secrets => map.serialize_entry("@type", SECRETS_DUMP_TYPE_URL)?,
        }
        map.end()
    }
}

/// A `Static*` dump entry: the resource (with `@type`) and `last_updated`.
enum Static<'a> {
    Cluster(&'a Cluster, Timestamp),
    Listener(&'a Listener, Timestamp),
    RouteConfig(&'a RouteConfiguration, Timestamp),
}

impl ProtoFields for Static<'_> {
    fn write_fields<M: SerializeMap>(&self, map: &mut M) -> Result<(), M::Error> {
        let t = match self {
            Static::Cluster(c, t) => {
                map.serialize_entry("cluster", &Any(CLUSTER_TYPE_URL, *c))?;
                t
            }
            Static::Listener(l, t) => {
                map.serialize_entry("listener", &Any(LISTENER_TYPE_URL, *l))?;
                t
            }
            Static::RouteConfig(r, t) => {
                map.serialize_entry("route_config", &Any(ROUTE_CONFIGURATION_TYPE_URL, *r))?;
                t
            }
        };
        map.serialize_entry("last_updated", &t.to_string())
    }
}
