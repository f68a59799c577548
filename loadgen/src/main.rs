//! heartline-loadgen: drives a heartline daemon (and Redis, for comparison)
//! with simulated clients. See BENCHMARKS.md, "Load generator".
//!
//! The `presence` scenario has three modes:
//!
//! - `gateway` (default, [`gateway`]): `--gateways` connections OPEN every
//!   client as a sub-session and heartbeat them in BATCH_HEARTBEAT frames, or
//!   with `--udp-batches` in authenticated UDP BATCH datagrams under each
//!   gateway's key. Unbounded by fds: 10M clients on this machine.
//! - `tcp` ([`tcp`]): one real connection per client, one HEARTBEAT frame
//!   per interval. At most 19,000 clients (the fd limit is 20,000).
//! - `tls`, `ws`, `wss` ([`transport`]): the same as tcp mode, the same
//!   code, over the daemon's TCP+TLS listener (`--tls-addr`, trusting
//!   `--ca`, checked against `--tls-name`), its WebSocket listener
//!   (`--ws-addr`, one frame per binary message) or WebSocket over TLS (the
//!   daemon's `websocket.tls`). Every TLS handshake is a full one unless
//!   `--tls-resumption`; `connect_auth` times TCP connect, TLS, the upgrade
//!   and HELLO → WELCOME together.
//! - `udp` ([`udp`]): each client gets UDP credentials through a TCP HELLO
//!   with `want_udp` and sends one HEARTBEAT datagram per interval. The UDP
//!   key is bound to the TCP connection that owns the session (closing it
//!   ends the session after the grace window, SPEC.md §8.8), so each client
//!   keeps its connection: bounded like tcp mode, at most 19,000.
//!
//! In every mode `--status-changes-per-s` with `--watchers`/`--friends`
//! times status change → push (gateway), and `--churn-per-s R` makes R
//! clients a second leave and come back (gateway: CLOSE and re-OPEN of
//! sub-sessions; tcp: BYE, close, reconnect; not in udp mode). The report
//! (table, `--json`) has per-op counts and latency percentiles, a per-second
//! `timeline` ([`report::Timeline`], from the start of the ramp-up) that
//! `--plot FILE.svg` draws ([`plot`]), the daemon's CPU and memory
//! (`--server-pid`) and, for UDP, what the daemon dropped (`--admin`,
//! `--admin-token`, [`scrape`]). The JSON report of either scenario also
//! says what was run, when and against which daemon version
//! ([`report::Run`]). A progress bar shows on a terminal ([`progress`]).
//! With `--cluster`, gateway mode reads the cluster's map from `--addr` and
//! sends every member its own users' OPENs and batches ([`gateway`]);
//! `--node-pids` sums the nodes' CPU and memory.
//! `--target redis://…` runs the same heartbeat workload against Redis
//! ([`redis`]). A failure ends it with one `error:` line, its causes after
//! it.
//!
//! The `feed` scenario ([`feed`]) loads a seeded power-law follow graph
//! (~1.1M users by default, three celebrities with ≥ 1M followers) into the
//! daemon over the wire (`--skip-setup` once it is there), then posts and
//! reads home timelines at fixed rates: `post_ack`, `fanout` (to LIVE
//! followers) and `timeline_read`, labelled with the daemon's `--strategy`;
//! `--target redis://…` does the same with SET, ZADD fanout and ZREVRANGE.

mod feed;
mod gateway;
mod plot;
mod procstat;
mod progress;
mod redis;
mod report;
mod scrape;
mod tcp;
mod transport;
mod udp;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use heartline::auth::Keyring;

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
    /// Posts with fanout to a power-law follow graph, and home-timeline reads.
    Feed(feed::Args),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// A few gateway connections carry every client with batch heartbeats.
    Gateway,
    /// One authenticated datagram per client per interval, each client
    /// holding the TCP connection that owns its UDP key (at most 19,000).
    Udp,
    /// One TCP connection per client (at most 19,000).
    Tcp,
    /// One TCP+TLS connection per client, to `--tls-addr` (at most 19,000).
    Tls,
    /// One WebSocket per client, to `--ws-addr` (at most 19,000).
    Ws,
    /// One WebSocket over TLS per client, to `--ws-addr` (the daemon's
    /// `websocket.tls`; at most 19,000).
    Wss,
}

impl Mode {
    /// The mode as `--mode` spells it.
    fn name(self) -> String {
        self.to_possible_value().map(|v| v.get_name().to_owned()).unwrap_or_default()
    }

    /// Whether the mode's connections are TLS (and need `--ca`).
    fn tls(self) -> bool {
        matches!(self, Mode::Tls | Mode::Wss)
    }
}

/// The flags both scenarios take alike (their place in `--help` is where
/// each scenario flattens them).
#[derive(clap::Args)]
struct Common {
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
    /// The daemon's admin listener: its version for the report, its UDP drop
    /// counters (udp runs) and fanout lag (feed) from /metrics. Unreachable:
    /// a warning, and the report goes without them.
    #[arg(long, default_value = "127.0.0.1:7401")]
    admin: SocketAddr,
    /// The daemon's admin.token, sent as `Authorization: Bearer` to --admin.
    #[arg(long, env = "HEARTLINE_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
}

impl Common {
    /// The Redis address of `--target redis://HOST:PORT`, or `None` for heartline.
    fn redis(&self) -> Result<Option<String>> {
        if let Some(url) = self.target.strip_prefix("redis://") {
            Ok(Some(url.trim_end_matches('/').to_owned()))
        } else if self.target == "heartline" {
            Ok(None)
        } else {
            bail!("--target must be heartline or redis://HOST:PORT, not {}", self.target)
        }
    }

    /// `--admin` and `--admin-token`, for the scraper.
    fn admin(&self) -> scrape::Admin {
        scrape::Admin { addr: self.admin, token: self.admin_token.clone() }
    }

    /// The daemon's version from `--admin` (none against Redis, or with a
    /// warning when it cannot be read).
    fn daemon_version(&self) -> Result<Option<String>> {
        if self.redis()?.is_some() {
            return Ok(None);
        }
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let admin = self.admin();
        Ok(runtime
            .block_on(admin.version())
            .inspect_err(|e| eprintln!("warning: no daemon version from {}/metrics: {e:#}", admin.addr))
            .ok())
    }

    /// The daemon's secret from `--data-dir`, to sign the loadgen's tokens with.
    fn keyring(&self) -> Result<Keyring> {
        let path = self.data_dir.join("secret");
        let secret = heartline::auth::load_secret(&path).with_context(|| format!("reading {}", path.display()))?;
        Ok(Keyring { current: secret, previous: None })
    }
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
    /// Ws and wss modes: the daemon's WebSocket listener (`websocket.listen`).
    #[arg(long, default_value = "127.0.0.1:7402")]
    ws_addr: SocketAddr,
    /// Tls mode: the daemon's TCP+TLS listener (`tls.listen`).
    #[arg(long, default_value = "127.0.0.1:7403")]
    tls_addr: SocketAddr,
    /// Tls and wss modes: PEM file of the CA (or self-signed certificate) to trust.
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Tls and wss modes: the name the daemon's certificate must carry (sent as SNI).
    #[arg(long, default_value = "localhost")]
    tls_name: String,
    /// Tls and wss modes: resume TLS sessions (tickets) instead of a full
    /// handshake per connection.
    #[arg(long)]
    tls_resumption: bool,
    #[command(flatten)]
    common: Common,
    /// Share of clients that watch friends (watcher connections are capped at 256).
    #[arg(long, default_value_t = 0.0001)]
    watchers: f64,
    /// Users each watcher watches.
    #[arg(long, default_value_t = 100)]
    friends: usize,
    /// Status changes per second, all of watched users (0: none, no latency).
    #[arg(long, default_value_t = 100.0)]
    status_changes_per_s: f64,
    /// Clients leaving and coming back per second (gateway: CLOSE + OPEN; tcp: BYE + reconnect).
    #[arg(long, default_value_t = 0.0)]
    churn_per_s: f64,
    /// Tcp and udp modes: handshakes in flight during the ramp-up; 0 connects
    /// every client at once, as after a restart (the thundering herd).
    #[arg(long, default_value_t = 64)]
    handshakes: usize,
    /// Gateway mode: heartbeat batches as UDP datagrams instead of TCP frames.
    #[arg(long)]
    udp_batches: bool,
    /// Gateway mode: `--addr` is a node of a cluster; read its map and open
    /// `--gateways` connections to every member, each user on its owner
    /// (watchers stay on `--addr`).
    #[arg(long)]
    cluster: bool,
    /// With `--cluster`: the nodes' pids (comma-separated), their CPU and RSS
    /// summed in the server figures instead of `--server-pid`'s.
    #[arg(long, value_delimiter = ',')]
    node_pids: Vec<u32>,
    /// Draw the timeline (ops/s, latency p50/p99/max per second) as SVG here.
    #[arg(long)]
    plot: Option<PathBuf>,
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

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // The message and its causes on one line, without a backtrace.
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<()> {
    // As the daemon: the load generator's own page faults would eat the cores it shares.
    heartline::server::net::disable_transparent_huge_pages();
    let run = report::Run::new(std::env::args_os().skip(1).map(|a| a.to_string_lossy().into_owned()));
    match &args.scenario {
        Scenario::Presence(a) => {
            let (report, timeline) = presence(a)?;
            emit(&report, Some(&timeline), run, &a.common)
        }
        Scenario::Feed(f) => emit(&feed::main(f)?, None, run, f.common()),
    }
}

/// Runs the presence scenario and draws its `--plot`.
fn presence(a: &Presence) -> Result<(report::Report, Arc<report::Timeline>)> {
    if a.clients == 0 || a.gateways == 0 || a.interval.is_zero() {
        bail!("--clients, --gateways and --interval must be positive");
    }
    if a.churn_per_s < 0.0 || a.churn_per_s > 0.0 && (a.mode == Mode::Udp || a.common.target != "heartline") {
        bail!("--churn-per-s is for gateway, tcp, tls, ws and wss modes against heartline, and not negative");
    }
    if (a.ca.is_some() || a.tls_resumption) && !a.mode.tls() {
        bail!("--ca and --tls-resumption are for tls and wss modes");
    }
    if a.udp_batches && a.mode != Mode::Gateway {
        bail!("--udp-batches is for gateway mode");
    }
    if (a.cluster || !a.node_pids.is_empty()) && (a.mode != Mode::Gateway || a.common.target != "heartline") {
        bail!("--cluster and --node-pids are for gateway mode against heartline");
    }
    if !a.node_pids.is_empty() && (!a.cluster || a.common.server_pid.is_some()) {
        bail!("--node-pids goes with --cluster, instead of --server-pid");
    }
    let timeline = Arc::new(report::Timeline::new(Instant::now()));
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let report = if let Some(addr) = a.common.redis()? {
        let params = redis::Params {
            addr,
            clients: a.clients,
            interval: a.interval,
            duration: a.duration,
            conns: a.gateways,
            queries_per_s: a.status_changes_per_s,
            friends: a.friends.max(1),
            server_pid: a.common.server_pid,
            seed: a.seed,
        };
        runtime.block_on(redis::run(params))?
    } else {
        let keyring = a.common.keyring()?;
        if a.mode != Mode::Gateway {
            let tls = match (a.mode.tls(), &a.ca) {
                (false, _) => None,
                (true, Some(ca)) => Some(transport::TlsDial::new(ca, &a.tls_name, a.tls_resumption)?),
                (true, None) => bail!("--mode {} needs --ca, the PEM file of the CA to trust", a.mode.name()),
            };
            let addr = match a.mode {
                Mode::Tls => a.tls_addr,
                Mode::Ws | Mode::Wss => a.ws_addr,
                _ => a.addr,
            };
            let params = tcp::Params {
                addr,
                tls,
                clients: a.clients,
                interval: a.interval,
                duration: a.duration,
                keyring,
                user_base: a.user_base,
                server_pid: a.common.server_pid,
                churn_per_s: a.churn_per_s,
                handshakes: a.handshakes,
                timeline: timeline.clone(),
            };
            let mut report = match a.mode {
                Mode::Udp => runtime.block_on(udp::run(udp::Params { tcp: params, admin: a.common.admin() }))?,
                Mode::Tls => runtime.block_on(tcp::run::<transport::Tls>(params))?,
                Mode::Ws => runtime.block_on(tcp::run::<transport::Ws>(params))?,
                Mode::Wss => runtime.block_on(tcp::run::<transport::Wss>(params))?,
                _ => runtime.block_on(tcp::run::<tcp::ClientConn>(params))?,
            };
            if a.mode.tls() {
                report.extra.insert("tls_resumption", f64::from(u8::from(a.tls_resumption)));
            }
            report
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
                server_pid: a.common.server_pid,
                node_pids: a.node_pids.clone(),
                cluster: a.cluster,
                seed: a.seed,
                churn_per_s: a.churn_per_s,
                udp_batches: a.udp_batches,
                admin: a.common.admin(),
                timeline: timeline.clone(),
            };
            runtime.block_on(gateway::run(params))?
        }
    };
    if let Some(path) = &a.plot {
        let title = format!("{} {}, {} clients", report.scenario, report.mode, report.clients);
        plot::write(path, &title, &timeline.rows(), timeline.whole_seconds())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok((report, timeline))
}

/// Prints the table, and writes the JSON report (with what it says about
/// the run, the daemon's version read now, and the timeline when the
/// scenario keeps one) if `--json` asks.
fn emit(
    report: &report::Report,
    timeline: Option<&report::Timeline>,
    mut run: report::Run,
    common: &Common,
) -> Result<()> {
    print!("{}", report.table());
    if let Some(path) = &common.json {
        run.daemon_version = common.daemon_version()?;
        let mut value = report.to_json();
        run.stamp(&mut value);
        if let Some(timeline) = timeline {
            value["timeline"] = timeline.to_json();
        }
        let text = serde_json::to_string_pretty(&value)?;
        std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
