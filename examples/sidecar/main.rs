//! `sidecar`: the meshcap example sidecar. Wiring only: argument parsing, logging, and calls into the crates.
//!
//! ```text
//! sidecar demo                                   the README's first command (see docs/sidecar.md)
//! sidecar iptables render|install|uninstall|verify [kumactl flags]
//! sidecar run --dataplane FILE [--policy FILE]... [--admin-address ADDR]
//! sidecar envoy-config --dataplane FILE [--policy FILE]...
//! ```
//!
//! Each subcommand lives in its own module; this file only dispatches.

use clap::{Parser, Subcommand};
use std::process::ExitCode;

mod demo;
mod envoy_config;
mod iptables;

#[derive(Debug, Parser)]
#[command(
    name = "sidecar",
    version,
    about = "meshcap example sidecar: Kuma-style transparent proxying"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The demo: the sidecar in a namespace pair with Kuma's capture rules, and a trace of each request.
    Demo(demo::DemoArgs),
    /// The demo's counter app (started by `demo`).
    #[command(hide = true)]
    DemoApp(demo::app::DemoAppArgs),
    /// Transparent-proxy capture rules: render|install|uninstall|verify with kumactl's flags.
    Iptables(Box<iptables::IptablesArgs>),
    /// Print the Envoy bootstrap (or /config_dump) of a Kuma Dataplane and its policies.
    EnvoyConfig(envoy_config::EnvoyConfigArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Demo(args) => demo::run(args),
        Command::DemoApp(args) => demo::app::run(args),
        Command::Iptables(args) => iptables::run(*args),
        Command::EnvoyConfig(args) => envoy_config::run(args),
    }
}
