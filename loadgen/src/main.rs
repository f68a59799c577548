//! heartline-loadgen: drives a heartline daemon (and Redis, for comparison)
//! with simulated clients. The scenarios arrive with the client SDK; until
//! then this binary only parses its command line.

use clap::Parser;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Load generator for heartline.
#[derive(Parser)]
#[command(version, about)]
struct Args {}

fn main() -> anyhow::Result<()> {
    let _args = Args::parse();
    anyhow::bail!("no scenario yet: presence and feed scenarios come with the client SDK")
}
