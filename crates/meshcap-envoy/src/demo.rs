//! The demo Dataplane and policy: the configuration behind the reference Envoy capture
//! (`bootstrap.json` / `config_dump.json` of the seed), embedded so the sidecar demo and tests can use it.
//!
//! ```
//! use meshcap_envoy::demo;
//!
//! let dp = demo::dataplane();
//! assert_eq!(dp.node_id(), "default.backend-01");
//! assert_eq!(demo::fault_injection().name(), "backend-delay");
//! ```

use crate::dataplane::Dataplane;
use crate::fault_injection::MeshFaultInjection;
use crate::policy::Policy;
use crate::resources::Resources;

/// The demo Dataplane (YAML): `backend-01` in mesh `default` at 10.244.0.6, an HTTP inbound on 5000 for
/// service `backend`, transparent proxying on 15006 / 15001.
pub const DATAPLANE_YAML: &str = include_str!("../demo/dataplane.yaml");

/// The demo `MeshFaultInjection` (YAML): a 5 s delay on 0.5 % of the requests to `backend`.
pub const FAULT_INJECTION_YAML: &str = include_str!("../demo/fault-injection.yaml");

/// [`DATAPLANE_YAML`], parsed.
///
/// # Panics
/// Never: the embedded file is valid (a unit test parses it).
pub fn dataplane() -> Dataplane {
    Dataplane::from_yaml(DATAPLANE_YAML).expect("the embedded demo Dataplane is valid")
}

/// [`FAULT_INJECTION_YAML`], parsed.
///
/// # Panics
/// Never: the embedded file is valid (a unit test parses it).
pub fn fault_injection() -> MeshFaultInjection {
    MeshFaultInjection::from_yaml(FAULT_INJECTION_YAML).expect("the embedded demo policy is valid")
}

/// The demo Dataplane's resources with the demo policy applied: what Envoy ran in the reference capture.
///
/// # Panics
/// Never: the embedded files are valid and generate without conflicts (a unit test builds them).
pub fn resources() -> Resources {
    let policy = Policy::MeshFaultInjection(fault_injection());
    Resources::builder(&dataplane())
        .policy(&policy)
        .build()
        .expect("the demo resources build")
}

#[cfg(test)]
mod tests {
    #[test]
    fn embedded_demo_files_are_valid() {
        let dp = super::dataplane();
        assert_eq!(dp.networking().inbound().len(), 1);
        let p = super::fault_injection();
        assert_eq!(p.from().len(), 1);
        assert_eq!(super::resources().listeners().len(), 5);
    }
}
