//! The `rrbalancer` binary: parse the command line, set up logging, run, exit with its code.

use clap::Parser;

fn main() -> std::process::ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp_millis()
        .init();
    rrbalancer::run(rrbalancer::cli::Cli::parse())
}
