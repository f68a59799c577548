//! heartline-loadgen: drives a heartline daemon (and Redis, for comparison)
//! with simulated clients. Today: the `presence` scenario in `gateway` and `tcp` modes
//! against heartline, and the same heartbeat workload against Redis
//! (`--target redis://…`). See BENCHMARKS.md, "Load generator".

mod gateway;
mod procstat;
mod redis;
mod report;
mod tcp;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use heartline::auth::{Keyring, Secret};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Load generator for heartline.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// Simulated clients heartbeating, changing status and watching friends.
    Presence(Presence),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// A few gateway connections carry every client with batch heartbeats.
    Gateway,
    /// One authenticated datagram per client per interval (not yet).
    Udp,
    /// One TCP connection per client (at most 19,000).
    Tcp,
}

#[derive(clap::Args)]
struct Presence {
    /// The daemon's TCP address.
    #[arg(long, default_value = "127.0.0.1:7400")]
    addr: SocketAddr,
    /// Simulated clients.
    #[arg(long, default_value_t = 10_000)]
    clients: u64,
    /// Heartbeat interval per client.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    interval: Duration,
    /// How long to run after the ramp-up.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    duration: Duration,
    #[arg(long, value_enum, default_value_t = Mode::Gateway)]
    mode: Mode,
    /// The daemon's data dir: its `secret` signs the loadgen's tokens.
    #[arg(long, default_value = "heartline-data")]
    data_dir: PathBuf,
    /// Sample this process's CPU and RSS from /proc (the daemon, or redis-server).
    #[arg(long)]
    server_pid: Option<u32>,
    /// Write the report as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// `heartline`, or `redis://HOST:PORT` for the same workload against Redis.
    #[arg(long, default_value = "heartline")]
    target: String,
    /// Share of clients that watch friends (watcher connections are capped at 256).
    #[arg(long, default_value_t = 0.0001)]
    watchers: f64,
    /// Users each watcher watches.
    #[arg(long, default_value_t = 100)]
    friends: usize,
    /// Status changes per second, all of watched users (0: none, no latency).
    #[arg(long, default_value_t = 100.0)]
    status_changes_per_s: f64,
    /// Connects + disconnects per second (not yet: must be 0).
    #[arg(long, default_value_t = 0.0)]
    churn_per_s: f64,
    /// Gateway connections (gateway mode) or Redis connections.
    #[arg(long, default_value_t = 4)]
    gateways: usize,
    /// The first simulated user id.
    #[arg(long, default_value_t = 1)]
    user_base: u64,
    /// Seed for who watches whom.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

fn main() -> Result<()> {
    let Args { scenario: Scenario::Presence(a) } = Args::parse();
    if a.clients == 0 || a.gateways == 0 || a.interval.is_zero() {
        bail!("--clients, --gateways and --interval must be positive");
    }
    if a.churn_per_s != 0.0 {
        bail!("--churn-per-s is not implemented yet");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let report = if let Some(url) = a.target.strip_prefix("redis://") {
        let params = redis::Params {
            addr: url.trim_end_matches('/').to_owned(),
            clients: a.clients,
            interval: a.interval,
            duration: a.duration,
            conns: a.gateways,
            queries_per_s: a.status_changes_per_s,
            friends: a.friends.max(1),
            server_pid: a.server_pid,
            seed: a.seed,
        };
        runtime.block_on(redis::run(params))?
    } else if a.target == "heartline" {
        if a.mode == Mode::Udp {
            bail!("--mode udp is not implemented yet: gateway or tcp");
        }
        let secret_path = a.data_dir.join("secret");
        let secret = Secret::load(&secret_path).with_context(|| format!("reading {}", secret_path.display()))?;
        let keyring = Keyring { current: secret, previous: None };
        if a.mode == Mode::Tcp {
            let params = tcp::Params {
                addr: a.addr,
                clients: a.clients,
                interval: a.interval,
                duration: a.duration,
                keyring,
                user_base: a.user_base,
                server_pid: a.server_pid,
            };
            runtime.block_on(tcp::run(params))?
        } else {
            let params = gateway::Params {
                addr: a.addr,
                clients: a.clients,
                interval: a.interval,
                duration: a.duration,
                gateways: a.gateways,
                watchers: a.watchers,
                friends: a.friends,
                status_changes_per_s: a.status_changes_per_s,
                keyring,
                user_base: a.user_base,
                server_pid: a.server_pid,
                seed: a.seed,
            };
            runtime.block_on(gateway::run(params))?
        }
    } else {
        bail!("--target must be heartline or redis://HOST:PORT, not {}", a.target);
    };
    print!("{}", report.table());
    if let Some(path) = a.json {
        let text = serde_json::to_string_pretty(&report.to_json())?;
        std::fs::write(&path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
