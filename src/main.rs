//! The `heartline` binary: parses the command line, loads the config, and
//! hands over to the library. anyhow lives here and nowhere else.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use heartline::auth::{self, Claims, Keyring, Subject};
use heartline::config::{Config, Overrides};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// heartline: who is online right now, and what they posted.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon (TCP and UDP on 127.0.0.1:7400, data in ./heartline-data by default).
    Serve(ServeArgs),
    /// Print a token for a user or a gateway, signed with the data dir's secret.
    Token(TokenArgs),
    /// Validate a config file and print the effective settings (defaults, file, environment) as TOML.
    CheckConfig(CheckConfigArgs),
    /// Talk to a running daemon: presence, posts, timelines, the graph, stats.
    Ctl(heartline::ctl::Args),
}

/// `heartline generate-assets --out DIR`, for packaging: hidden, and added to
/// [`Cli`]'s command only when parsing (see [`main`]), so that the man pages
/// and completions it writes from [`Cli`] do not offer it.
const GENERATE_ASSETS: &str = "generate-assets";

#[derive(Args)]
struct GenerateAssetsArgs {
    /// Where to write `man/` (heartline.1 and a page per subcommand) and
    /// `completions/` (bash, zsh, fish); created if missing.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
}

#[derive(Args)]
struct CheckConfigArgs {
    /// The TOML config file to check.
    file: PathBuf,
}

#[derive(Args)]
struct Common {
    /// TOML config file.
    #[arg(long, env = "HEARTLINE_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory (secret and durable store).
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

#[derive(Args)]
struct ServeArgs {
    #[command(flatten)]
    common: Common,
    /// TCP listen address.
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
    /// UDP heartbeat address.
    #[arg(long)]
    udp: Option<std::net::SocketAddr>,
}

#[derive(Args)]
#[group(required = true, multiple = false, id = "subject")]
struct SubjectArgs {
    /// A user id: the token opens client sessions for this user.
    #[arg(long, group = "subject")]
    user: Option<u64>,
    /// A gateway name: the token opens sessions for many users and sends batches.
    #[arg(long, group = "subject")]
    gateway: Option<String>,
}

#[derive(Args)]
struct TokenArgs {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    subject: SubjectArgs,
    /// How long the token is valid (e.g. 1h, 30d).
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
    ttl: Duration,
    /// Create the data dir and its secret if there is none yet (`serve` does
    /// that at its first start); without it a missing secret is an error.
    #[arg(long)]
    init: bool,
}

impl Common {
    fn load(&self, overrides: Overrides) -> anyhow::Result<Config> {
        let overrides = Overrides { data_dir: self.data_dir.clone(), ..overrides };
        Config::load(self.config.as_deref(), &overrides).context("invalid configuration")
    }
}

fn main() -> ExitCode {
    let generate = GenerateAssetsArgs::augment_args(clap::Command::new(GENERATE_ASSETS))
        .about("Write the man pages and shell completions of this command line")
        .hide(true);
    let matches = Cli::command().subcommand(generate).get_matches();
    let done = match matches.subcommand_matches(GENERATE_ASSETS) {
        Some(matches) => GenerateAssetsArgs::from_arg_matches(matches).map_err(Into::into).and_then(generate_assets),
        None => match Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit()).command {
            Command::Serve(args) => serve(args),
            Command::Token(args) => token(args),
            Command::CheckConfig(args) => check_config(args),
            Command::Ctl(args) => ctl(args),
        },
    };
    match done {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            report(&e);
            ExitCode::FAILURE
        }
    }
}

/// Says why the command failed, once: the message and each cause after it
/// on one line (`a: b: c`), without a backtrace. Once `serve` has installed
/// the logger, as an error event (JSON when the logs are, with its priority
/// in the journal); before, on stderr.
fn report(e: &anyhow::Error) {
    if heartline::logging::installed() {
        tracing::error!("{e:#}");
    } else {
        eprintln!("error: {e:#}");
    }
}

fn ctl(args: heartline::ctl::Args) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    Ok(runtime.block_on(heartline::ctl::run(args))?)
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let overrides = Overrides { listen: args.listen, udp: args.udp, data_dir: args.common.data_dir.clone() };
    let config = args.common.load(overrides.clone())?;
    heartline::logging::init(&config.log, config.log_format)?;
    heartline::server::net::disable_transparent_huge_pages();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        // Every handler is registered before the server accepts anyone or tells
        // systemd it is ready: a signal in between must not take its default
        // action (ending the process without GOAWAY or a last-seen flush).
        use tokio::signal::unix::{signal, SignalKind};
        let hup = signal(SignalKind::hangup())?;
        let (mut term, mut int) = (signal(SignalKind::terminate())?, signal(SignalKind::interrupt())?);
        let mut running = heartline::server::start(config).await?;
        let file = args.common.config;
        let load = move || Config::load(file.as_deref(), &overrides);
        if let Some(reloadable) = running.take_reloadable() {
            tokio::spawn(heartline::server::reload::on_sighup(reloadable, hup, load));
        }
        let shutdown = running.shutdown_token();
        tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            tracing::info!("shutting down");
            shutdown.cancel();
        });
        running.stopped().await;
        Ok(())
    })
}

fn check_config(args: CheckConfigArgs) -> anyhow::Result<()> {
    // The message names the file (or the variable) and the setting.
    let mut config = Config::load(Some(&args.file), &Overrides::default()).context("invalid configuration")?;
    // This output ends up in terminals and tickets: never the admin token itself.
    if config.admin.token.is_some() {
        config.admin.token = Some("<redacted>".into());
    }
    print!("{}", config.to_toml());
    Ok(())
}

/// The man pages and completions come from [`Cli`] itself, so they can never
/// describe flags the binary does not have.
fn generate_assets(args: GenerateAssetsArgs) -> anyhow::Result<()> {
    use clap_complete::Shell;
    let (man, completions) = (args.out.join("man"), args.out.join("completions"));
    for dir in [&man, &completions] {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    // heartline.1, heartline-serve.1, …, heartline-ctl-presence-get.1: every visible
    // subcommand, nested ones too, each footed "heartline VERSION" (clap_mangen's own
    // generate_to would foot them with the subcommand's name alone).
    fn pages(command: &clap::Command, dir: &std::path::Path, source: &str) -> std::io::Result<()> {
        for sub in command.get_subcommands().filter(|sub| !sub.is_hide_set()) {
            pages(sub, dir, source)?;
        }
        clap_mangen::Man::new(command.clone()).source(source).generate_to(dir).map(drop)
    }
    // Built once from the top, so that nested pages are named and titled by their whole path.
    let mut command = Cli::command().disable_help_subcommand(true);
    command.build();
    let source = format!("heartline {}", env!("CARGO_PKG_VERSION"));
    pages(&command, &man, &source).context("cannot write the man pages")?;
    // heartline.bash, _heartline (zsh), heartline.fish.
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        clap_complete::generate_to(shell, &mut Cli::command(), "heartline", &completions)
            .with_context(|| format!("cannot write the {shell} completion"))?;
    }
    Ok(())
}

fn token(args: TokenArgs) -> anyhow::Result<()> {
    let config = args.common.load(Overrides::default())?;
    let path = config.data_dir.join("secret");
    let secret = if args.init {
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("cannot create {}", config.data_dir.display()))?;
        auth::load_or_create_secret(&path).with_context(|| format!("cannot read the secret {}", path.display()))?
    } else {
        match auth::load_secret(&path) {
            // A token signed with a secret no daemon uses would be refused:
            // most likely the data dir is not the daemon's.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
                "no secret at {}: is --data-dir (or data_dir in the config) the daemon's? \
                 `heartline serve` creates it at its first start; pass --init to create it now",
                path.display()
            ),
            loaded => loaded.with_context(|| format!("cannot read the secret {}", path.display()))?,
        }
    };
    let subject = match (args.subject.user, args.subject.gateway) {
        (Some(user), None) => Subject::User(user),
        (None, Some(name)) if (1..=auth::MAX_GATEWAY_NAME).contains(&name.len()) => Subject::Gateway(name),
        (None, Some(_)) => bail!("a gateway name has 1 to {} bytes", auth::MAX_GATEWAY_NAME),
        _ => bail!("give --user or --gateway"),
    };
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let claims = Claims { subject, expires_at: now.saturating_add(args.ttl.as_secs()) };
    let keyring = Keyring { current: secret, previous: None };
    println!("{}", auth::to_text(&keyring.issue(&claims)));
    Ok(())
}
