//! The e2e harness (see the crate docs of `main.rs`).

pub(crate) mod app;
pub(crate) mod http;
pub(crate) mod pod;
pub(crate) mod proxy;
pub(crate) mod recording;
pub(crate) mod replay;
pub(crate) mod stats;
