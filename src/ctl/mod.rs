//! `heartline ctl`: a command line for a person at a running daemon, as
//! redis-cli is for Redis.
//!
//! Owns the command-line grammar of `ctl`, and how results and errors are
//! shown: readable lines by default, JSON (the protocol types' serde form)
//! with `--json`. It must not speak the protocol itself: everything goes
//! through [`heartline_client`]. Errors are typed ([`CtlError`]); the binary
//! turns them into a message and an exit code.

use std::io::Write;
use std::time::{Duration, UNIX_EPOCH};

use clap::{Subcommand, ValueEnum};
use futures_util::StreamExt;
use serde::Serialize;

use heartline_client::{Backoff, Client, ClientConfig, ClientError, State, Tls};
use heartline_proto::{Cursor, Item, PresenceEntry, Role, Stats, Status};

/// `heartline ctl`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The daemon's TCP address; `tls://host:port` for its TLS listener.
    #[arg(long, default_value = "127.0.0.1:7400", global = true)]
    addr: String,
    /// Connect with TLS (as `tls://` in `--addr` does), trusting the
    /// system's certificate store unless `--ca` is given.
    #[arg(long, global = true)]
    tls: bool,
    /// Trust only the CA certificates in this PEM file (implies `--tls`).
    #[arg(long, value_name = "FILE", global = true)]
    ca: Option<std::path::PathBuf>,
    /// The name the server's certificate must carry, when `--addr` names the
    /// server otherwise (an IP address).
    #[arg(long, value_name = "NAME", global = true)]
    tls_name: Option<String>,
    /// A token, as `heartline token` prints it (hex).
    #[arg(long, env = "HEARTLINE_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
    /// The token is a gateway token: read presence without a session of your
    /// own, so that looking does not make anyone appear online.
    #[arg(long, global = true)]
    gateway: bool,
    /// Machine-readable output: one JSON value per line.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Read, set or follow presence.
    #[command(subcommand)]
    Presence(PresenceCommand),
    /// Publish a post; prints its id.
    Post {
        /// The payload, as text.
        text: String,
        /// The application-defined kind byte.
        #[arg(long, default_value_t = 0)]
        kind: u8,
    },
    /// Read a page of your home timeline, or of an author's.
    Timeline {
        /// Read this author's posts instead of your home timeline.
        #[arg(long)]
        author: Option<u64>,
        /// Items per page (1 to 100).
        #[arg(long, default_value_t = 20)]
        limit: u8,
        /// Only posts older than this id (decimal or 0x hex).
        #[arg(long, value_parser = post_id)]
        max_id: Option<u64>,
        /// Only posts newer than this id, the newest first.
        #[arg(long, value_parser = post_id, conflicts_with = "min_id")]
        since_id: Option<u64>,
        /// Only posts newer than this id, the page right after it.
        #[arg(long, value_parser = post_id)]
        min_id: Option<u64>,
    },
    /// Follow a user.
    Follow { user: u64 },
    /// Stop following a user.
    Unfollow { user: u64 },
    /// Block a user (both ways: no follows, no presence).
    Block { user: u64 },
    /// Server-wide counters.
    Stats,
}

#[derive(Subcommand, Debug)]
enum PresenceCommand {
    /// The presence of users.
    Get {
        #[arg(required = true)]
        users: Vec<u64>,
    },
    /// Set your status and status text. The status belongs to this command's
    /// session and ends with it (at once, when the command exits), unless
    /// --hold keeps it until Ctrl-C; the text stays while you have any
    /// session.
    Set {
        status: StatusArg,
        /// Empty clears it.
        #[arg(default_value = "")]
        text: String,
        /// Keep the session (heartbeating) until Ctrl-C.
        #[arg(long)]
        hold: bool,
    },
    /// Print the presence of users, then every change, until Ctrl-C.
    Watch {
        #[arg(required = true)]
        users: Vec<u64>,
    },
}

/// The statuses a client may set.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum StatusArg {
    Online,
    Away,
    Busy,
    Invisible,
}

impl From<StatusArg> for Status {
    fn from(s: StatusArg) -> Self {
        match s {
            StatusArg::Online => Status::Online,
            StatusArg::Away => Status::Away,
            StatusArg::Busy => Status::Busy,
            StatusArg::Invisible => Status::Invisible,
        }
    }
}

/// A post id as people paste it: decimal, or hex with `0x` (how `ctl` prints them).
fn post_id(s: &str) -> Result<u64, std::num::ParseIntError> {
    match s.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => s.parse(),
    }
}

/// Why a `ctl` command failed.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    #[error("no token: pass --token or set HEARTLINE_TOKEN (`heartline token --user ID` prints one)")]
    NoToken,
    // Sources are not repeated in messages: the binary prints the chain.
    #[error("the token is not hex")]
    TokenText(#[from] crate::auth::AuthError),
    #[error("cannot connect to {addr}")]
    Connect { addr: String, source: ClientError },
    #[error(transparent)]
    Request(#[from] ClientError),
    #[error("cannot write the output")]
    Output(#[from] std::io::Error),
    #[error("cannot encode the output")]
    Json(#[from] serde_json::Error),
}

/// The TLS settings `--tls`, `--ca` and `--tls-name` ask for, if any
/// (`tls://` alone is left to the client: the system's store).
fn tls(args: &Args) -> Result<Option<Tls>, ClientError> {
    let tls = match (&args.ca, args.tls || args.tls_name.is_some()) {
        (Some(ca), _) => Tls::with_ca_file(ca)?,
        (None, true) => Tls::system_roots()?,
        (None, false) => return Ok(None),
    };
    Ok(Some(match &args.tls_name {
        Some(name) => tls.server_name(name)?,
        None => tls,
    }))
}

/// Runs one `ctl` command.
pub async fn run(args: Args) -> Result<(), CtlError> {
    let token = crate::auth::from_text(args.token.as_deref().ok_or(CtlError::NoToken)?)?;
    let follows = matches!(
        args.command,
        Command::Presence(PresenceCommand::Watch { .. } | PresenceCommand::Set { hold: true, .. })
    );
    let connect_error = |source| CtlError::Connect { addr: args.addr.clone(), source };
    let tls = tls(&args).map_err(connect_error)?;
    let config = ClientConfig {
        tls,
        role: if args.gateway { Role::Gateway } else { Role::Client },
        // A one-shot command reports a lost connection; one that follows reconnects.
        reconnect: follows.then(Backoff::default),
        ..ClientConfig::new(args.addr.clone(), token)
    };
    let client = Client::connect(config).await.map_err(connect_error)?;
    let out = Output { json: args.json };
    match args.command {
        Command::Presence(PresenceCommand::Get { users }) => out.all(&client.query(&users).await?)?,
        Command::Presence(PresenceCommand::Set { status, text, hold }) => {
            client.set_status(status.into(), &text).await?;
            out.done(&format!("status set: {}{}", status_name(status.into()), quoted(&text)))?;
            if hold {
                eprintln!("holding the session; Ctrl-C ends it");
                tokio::signal::ctrl_c().await?;
            }
        }
        Command::Presence(PresenceCommand::Watch { users }) => watch(&client, &users, &out).await?,
        Command::Post { text, kind } => {
            let post = client.post(kind, text).await?;
            match out.json {
                true => out.json(&serde_json::json!({ "post": post }))?,
                false => out.line(&format!("posted {post:#018x}"))?,
            }
        }
        Command::Timeline { author, limit, max_id, since_id, min_id } => {
            let cursor = Cursor { max_id, since_id, min_id };
            let items = match author {
                Some(author) => client.author_timeline(author, cursor, limit).await?,
                None => client.home_timeline(cursor, limit).await?,
            };
            out.all(&items)?;
        }
        Command::Follow { user } => {
            client.follow(user).await?;
            out.done(&format!("following user {user}"))?;
        }
        Command::Unfollow { user } => {
            client.unfollow(user).await?;
            out.done(&format!("no longer following user {user}"))?;
        }
        Command::Block { user } => {
            client.block(user).await?;
            out.done(&format!("blocked user {user}"))?;
        }
        Command::Stats => out.one(&client.stats().await?)?,
    }
    client.close().await?;
    Ok(())
}

/// Prints entries as they come until Ctrl-C; says so on stderr while the
/// client reconnects.
async fn watch(client: &Client, users: &[u64], out: &Output) -> Result<(), CtlError> {
    let mut entries = client.watch(users).await?;
    let mut state = client.state();
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        tokio::select! {
            entry = entries.next() => match entry {
                Some(entry) => out.one(&entry)?,
                None => return Ok(()),
            },
            Ok(()) = state.changed() => match &*state.borrow_and_update() {
                State::Reconnecting { attempt } => eprintln!("connection lost; reconnecting (attempt {attempt})"),
                State::Connected { .. } => eprintln!("reconnected"),
                State::Closed(Some(why)) => eprintln!("giving up: {why}"),
                State::Closed(None) => {}
            },
            signal = &mut ctrl_c => return Ok(signal?),
        }
    }
}

/// Where results go: stdout, as lines for people or JSON for programs.
struct Output {
    json: bool,
}

impl Output {
    fn line(&self, line: &str) -> std::io::Result<()> {
        writeln!(std::io::stdout().lock(), "{line}")
    }

    fn json(&self, value: &impl Serialize) -> Result<(), CtlError> {
        Ok(self.line(&serde_json::to_string(value)?)?)
    }

    fn one<T: Serialize + Show>(&self, value: &T) -> Result<(), CtlError> {
        match self.json {
            true => self.json(value),
            false => Ok(self.line(&value.show())?),
        }
    }

    /// A list: a JSON array, or one line each.
    fn all<T: Serialize + Show>(&self, values: &[T]) -> Result<(), CtlError> {
        match self.json {
            true => self.json(&values),
            false => values.iter().try_for_each(|v| self.line(&v.show())).map_err(Into::into),
        }
    }

    /// A request that has no result but success.
    fn done(&self, what: &str) -> Result<(), CtlError> {
        match self.json {
            true => self.json(&serde_json::json!({ "ok": true })),
            false => Ok(self.line(what)?),
        }
    }
}

/// How a result reads for a person.
trait Show {
    fn show(&self) -> String;
}

impl Show for PresenceEntry {
    /// `user 42  busy  "in a meeting"  last seen 2026-11-21 12:00:00Z  v123`
    fn show(&self) -> String {
        let last_seen = match self.last_seen_ms {
            0 => "never seen".to_owned(),
            ms => {
                let at = humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms));
                format!("last seen {}", at.to_string().replacen('T', " ", 1))
            }
        };
        let text = quoted(self.text.as_str());
        format!("user {}  {}{text}  {last_seen}  v{}", self.user, status_name(self.status), self.version)
    }
}

impl Show for Stats {
    fn show(&self) -> String {
        format!(
            "online users {}\nsessions {}\nwatches {}\nconnections {}",
            self.online_users, self.sessions, self.watches, self.connections
        )
    }
}

impl Show for Item {
    fn show(&self) -> String {
        let payload = String::from_utf8_lossy(&self.payload);
        format!("{:#018x}  user {}  kind {}  {payload:?}", self.post, self.author, self.kind)
    }
}

fn status_name(status: Status) -> &'static str {
    match status {
        Status::Offline => "offline",
        Status::Online => "online",
        Status::Away => "away",
        Status::Busy => "busy",
        Status::Invisible => "invisible",
    }
}

/// `  "text"` with escapes (a status text must not drive the terminal), or
/// nothing for an empty text.
fn quoted(text: &str) -> String {
    if text.is_empty() {
        String::new()
    } else {
        format!("  {text:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_presence_line_reads_well() {
        let entry = PresenceEntry {
            user: 42,
            status: Status::Busy,
            version: 123,
            last_seen_ms: 1_795_262_400_000,
            text: "in a meeting".into(),
        };
        assert_eq!(entry.show(), r#"user 42  busy  "in a meeting"  last seen 2026-11-21 12:00:00Z  v123"#);
        let never = PresenceEntry { user: 7, status: Status::Offline, version: 0, last_seen_ms: 0, text: "".into() };
        assert_eq!(never.show(), "user 7  offline  never seen  v0");
    }

    #[test]
    fn post_ids_parse_in_decimal_and_hex() {
        assert_eq!(post_id("0x01968f3a2b4c0005"), Ok(0x01968f3a2b4c0005));
        assert_eq!(post_id("42"), Ok(42));
        assert!(post_id("0xzz").is_err());
    }
}
