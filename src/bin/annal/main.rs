//! `annal`: the command-line tool for annal event stores. Inspect a store,
//! script it, move events in and out as JSON lines, verify and repair it.
//! See docs/CLI.md.

#![deny(clippy::unwrap_used)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

mod args;
mod commands;
mod fail;
mod input;
mod json;
mod progress;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // Usage errors exit with code 2, --help and --version with 0 (clap).
    let cli = args::Cli::parse();
    match commands::run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            if !f.message.is_empty() {
                eprintln!("annal: {}", f.message);
            }
            ExitCode::from(f.code)
        }
    }
}
