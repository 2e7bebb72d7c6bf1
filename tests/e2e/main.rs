//! End-to-end replay of the real Envoy recordings (`<reference>/envoy/e2e`, made by
//! `reference/envoy/scripts/e2e.sh`) against a proxy under test, in network namespaces with real iptables
//! rules and real clients.
//!
//! The topology is the recordings': a pod namespace (10.244.0.6) running the apps on 5000 and 5001, the
//! capture rules and the proxy as uid 5678; a peer namespace (10.244.0.5) with an app on 8080. Every
//! recorded case is replayed with the recorded curl command and checked against what was recorded: the
//! client's transcript (status line, header names, order and values, body; `date`, the value of
//! `x-envoy-upstream-service-time` and ephemeral ports masked), the statistics that moved and by how much
//! (`*-stats-delta.txt`), and the access-log lines. hyper (a keep-alive client) checks the same answers
//! over one connection.
//!
//! The proxy under test is pluggable ([`support::proxy::ProxyKind`]): the real Envoy 1.40 running the
//! bootstrap `sidecar envoy-config` generates (this proves that the harness reproduces the recordings and
//! that the generated bootstrap behaves as the recorded one), and meshcap's `sidecar run`, with the same
//! assertions.
//!
//! Needs root, iptables, curl and (for the Envoy suite) Envoy; skips loudly without them, fails under
//! `MESHCAP_REQUIRE_PRIVILEGED=1`. Needs the recordings (`MESHCAP_REFERENCE_DIR`).

mod cases;
mod support;

use support::proxy::ProxyKind;

/// The suite for one proxy under test.
macro_rules! suite {
    ($module:ident, $kind:expr) => {
        mod $module {
            use super::{ProxyKind, cases};

            const KIND: ProxyKind = $kind;

            fn name(case: &str) -> String {
                format!("{}::{case}", stringify!($module))
            }

            #[test]
            fn a_capture_and_hand_off() {
                cases::a_capture_and_hand_off(KIND, &name("a_capture_and_hand_off"));
            }

            #[test]
            fn b_abort_everything() {
                cases::b_abort_everything(KIND, &name("b_abort_everything"));
            }

            #[test]
            fn c_header_controlled_faults() {
                cases::c_header_controlled_faults(KIND, &name("c_header_controlled_faults"));
            }

            #[test]
            fn upstream_refused_is_503() {
                cases::upstream_refused_is_503(KIND, &name("upstream_refused_is_503"));
            }

            #[test]
            fn explicit_mode_without_capture() {
                cases::explicit_mode_without_capture(KIND, &name("explicit_mode_without_capture"));
            }

            #[test]
            fn kuma_rules_let_the_app_call_its_own_ip_directly() {
                cases::kuma_rules_let_the_app_call_its_own_ip_directly(
                    KIND,
                    &name("kuma_rules_let_the_app_call_its_own_ip_directly"),
                );
            }
        }
    };
}

suite!(envoy, ProxyKind::Envoy);
