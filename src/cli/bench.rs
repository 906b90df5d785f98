//! `gomlx bench` (placeholder).
use super::CliResult;

#[derive(clap::Args, Debug)]
pub struct Args {}

pub fn run(_a: Args) -> CliResult {
    Ok(())
}
