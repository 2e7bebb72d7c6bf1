//! meshcap-proxy: the meshcap data plane. (Being built: see the workspace README.)

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod stats;
