//! meshcap-proxy: the meshcap data plane. (Being built: see the workspace README.)

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod access_log;
pub mod admin;
pub mod drain;
pub mod hcm;
pub mod http1;
pub mod listen;
pub mod stats;
pub mod tcp_proxy;
pub mod upstream;
