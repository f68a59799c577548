//! `heartline ctl`: a command line for a person at a running daemon, as
//! redis-cli is for Redis.
//!
//! Owns the command-line grammar of `ctl`, and how results and errors are
//! shown: readable lines by default, JSON with `--json` in the admin API's
//! shapes (ids as decimal strings, [`Id`]); ids are decimal in both. It
//! must not speak the protocol itself: everything goes through
//! [`heartline_client`], but `info`, which reads the admin listener over
//! HTTP (`admin`). Errors are typed ([`CtlError`]); the binary turns them
//! into a message and an exit code.

mod admin;

use std::collections::HashSet;
use std::io::Write;
use std::time::{Duration, UNIX_EPOCH};

use clap::{Subcommand, ValueEnum};
use futures_util::{Stream, StreamExt};
use serde::Serialize;

use crate::admin::api::{ClusterInfo, Entry, Id, Info};
use heartline_client::{Backoff, Client, ClientConfig, ClientError, LiveEvent, State, Tls};
use heartline_proto::{limits, Cursor, Item, PresenceEntry, Role, Stats, Status};

pub use admin::AdminError;

/// `heartline ctl`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The daemon's protocol address (TCP); `tls://host:port` for its TLS
    /// listener. Every command but `info` and `cluster` (see their `--admin`) connects here.
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
    /// A token, as `heartline token` prints it (hex): a user's, or with
    /// `--gateway` a gateway's. Every command but `info` and `cluster` needs one.
    #[arg(long, env = "HEARTLINE_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
    /// Machine-readable output: one JSON value per line, ids (users, posts,
    /// versions) as decimal strings.
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
    /// Delete one of your posts; it leaves every timeline.
    Delete {
        /// The post's id, as `post` and `timeline` print it (decimal, or hex
        /// with 0x).
        #[arg(value_name = "POST", value_parser = post_id)]
        post: u64,
    },
    /// Read a page of your home timeline, or of an author's; with --live,
    /// then follow it.
    Timeline {
        /// Read this author's posts (a user id) instead of your home timeline.
        #[arg(long, value_name = "USER")]
        author: Option<u64>,
        /// Items per page: 1 to 100 (the protocol's most).
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u8).range(1..=limits::MAX_PAGE as i64))]
        limit: u8,
        /// Only posts older than this id (decimal or 0x hex).
        #[arg(long, value_name = "POST", value_parser = post_id)]
        max_id: Option<u64>,
        /// Only posts newer than this id, the newest first.
        #[arg(long, value_name = "POST", value_parser = post_id, conflicts_with = "min_id")]
        since_id: Option<u64>,
        /// Only posts newer than this id, the page right after it.
        #[arg(long, value_name = "POST", value_parser = post_id)]
        min_id: Option<u64>,
        /// After the page, print the home timeline's new posts and deletions
        /// as the daemon pushes them, until Ctrl-C.
        #[arg(long, conflicts_with = "author")]
        live: bool,
    },
    /// Follow a user: their posts join your home timeline.
    Follow(OtherUser),
    /// Stop following a user.
    Unfollow(OtherUser),
    /// Block a user (both ways: no follows, no presence).
    Block(OtherUser),
    /// Lift a block you set.
    Unblock(OtherUser),
    /// Server-wide counters: online users, sessions, watches, connections.
    Stats(Reader),
    /// The daemon's version, uptime, memory and counts, from its admin
    /// listener (needs no protocol token; the admin token if it has one).
    Info(InfoArgs),
    /// The cluster as this daemon sees it: members, partitions each owns,
    /// the map's version (from its admin listener, like `info`).
    Cluster(InfoArgs),
}

#[derive(Subcommand, Debug)]
enum PresenceCommand {
    /// The presence of users.
    Get(Users),
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
    Watch(Users),
}

/// The other side of a change to the social graph.
#[derive(clap::Args, Debug)]
struct OtherUser {
    /// The other user's id: the decimal number their tokens are issued for
    /// (`heartline token --user ID`).
    #[arg(value_name = "USER")]
    user: u64,
}

/// Whose presence to read.
#[derive(clap::Args, Debug)]
struct Users {
    /// User ids: the decimal numbers their tokens are issued for
    /// (`heartline token --user ID`), one or more.
    #[arg(required = true, value_name = "USER")]
    users: Vec<u64>,
    #[command(flatten)]
    reader: Reader,
}

/// How a command that only reads connects.
#[derive(clap::Args, Debug)]
struct Reader {
    /// The token is a gateway's (`heartline token --gateway NAME`): read
    /// without a session of your own, so that looking does not make anyone
    /// appear online. Presence is then what an unrelated user sees.
    #[arg(long)]
    gateway: bool,
}

#[derive(clap::Args, Debug)]
struct InfoArgs {
    /// The daemon's admin listener (its `admin.listen`).
    #[arg(long, value_name = "HOST:PORT", default_value_t = default_admin())]
    admin: String,
    /// The admin API's bearer token (the daemon's `admin.token`), if it has one.
    #[arg(long, value_name = "TOKEN", env = "HEARTLINE_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
}

fn default_admin() -> String {
    crate::config::Admin::default().listen.to_string()
}

impl Command {
    /// Whether to connect as a gateway (`--gateway`).
    fn gateway(&self) -> bool {
        match self {
            Command::Presence(PresenceCommand::Get(users) | PresenceCommand::Watch(users)) => users.reader.gateway,
            Command::Stats(reader) => reader.gateway,
            _ => false,
        }
    }

    /// Whether the command follows the daemon until Ctrl-C (and so
    /// reconnects), rather than making one request.
    fn follows(&self) -> bool {
        matches!(
            self,
            Command::Presence(PresenceCommand::Watch(_) | PresenceCommand::Set { hold: true, .. })
                | Command::Timeline { live: true, .. }
        )
    }
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

/// A post id as people paste it: decimal (how `ctl` prints them), or hex
/// with `0x`.
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
    #[error("cannot read http://{addr}{path}")]
    Admin { addr: String, path: &'static str, source: AdminError },
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
    let out = Output { json: args.json };
    match &args.command {
        Command::Info(info) => return show_admin::<Info>(info, "/v1/info", &out).await,
        Command::Cluster(info) => return show_admin::<ClusterInfo>(info, "/v1/cluster", &out).await,
        _ => {}
    }
    let token = crate::auth::from_text(args.token.as_deref().ok_or(CtlError::NoToken)?)?;
    let connect_error = |source| CtlError::Connect { addr: args.addr.clone(), source };
    let tls = tls(&args).map_err(connect_error)?;
    let config = ClientConfig {
        tls,
        role: if args.command.gateway() { Role::Gateway } else { Role::Client },
        // A one-shot command reports a lost connection; one that follows reconnects.
        reconnect: args.command.follows().then(Backoff::default),
        ..ClientConfig::new(args.addr.clone(), token)
    };
    let client = Client::connect(config).await.map_err(connect_error)?;
    match args.command {
        Command::Presence(PresenceCommand::Get(Users { users, .. })) => out.all(&client.query(&users).await?)?,
        Command::Presence(PresenceCommand::Set { status, text, hold }) => {
            client.set_status(status.into(), &text).await?;
            out.done(&format!("status set: {}{}", status_name(status.into()), quoted(&text)))?;
            if hold {
                eprintln!("holding the session; Ctrl-C ends it");
                tokio::signal::ctrl_c().await?;
            }
        }
        Command::Presence(PresenceCommand::Watch(Users { users, .. })) => {
            follow(&client, client.watch(&users).await?, |entry| out.one(&entry)).await?
        }
        Command::Post { text, kind } => {
            let post = client.post(kind, text).await?;
            match out.json {
                true => out.json(&serde_json::json!({ "post": Id(post) }))?,
                false => out.line(&format!("posted {post}"))?,
            }
        }
        Command::Delete { post } => {
            client.delete(post).await?;
            out.done(&format!("deleted post {post}"))?;
        }
        Command::Timeline { author, limit, max_id, since_id, min_id, live } => {
            // LIVE goes on before the page is read, so that nothing posted in
            // between is missed; what the page already shows is not repeated.
            let pushed = match live {
                true => Some(client.live().await?),
                false => None,
            };
            let cursor = Cursor { max_id, since_id, min_id };
            let items = match author {
                Some(author) => client.author_timeline(author, cursor, limit).await?,
                None => client.home_timeline(cursor, limit).await?,
            };
            out.all(&items)?;
            if let Some(pushed) = pushed {
                let shown: HashSet<u64> = items.iter().map(|item| item.post).collect();
                follow(&client, pushed, |event| match event {
                    LiveEvent::Item(item) if shown.contains(&item.post) => Ok(()),
                    // For a person a gap is a note, not a line of the timeline.
                    LiveEvent::Gap if !out.json => {
                        eprintln!("{}", event.show());
                        Ok(())
                    }
                    event => out.one(&event),
                })
                .await?;
            }
        }
        Command::Follow(OtherUser { user }) => {
            client.follow(user).await?;
            out.done(&format!("following user {user}"))?;
        }
        Command::Unfollow(OtherUser { user }) => {
            client.unfollow(user).await?;
            out.done(&format!("no longer following user {user}"))?;
        }
        Command::Block(OtherUser { user }) => {
            client.block(user).await?;
            out.done(&format!("blocked user {user}"))?;
        }
        Command::Unblock(OtherUser { user }) => {
            client.unblock(user).await?;
            out.done(&format!("unblocked user {user}"))?;
        }
        Command::Stats(_) => out.one(&client.stats().await?)?,
        Command::Info(_) | Command::Cluster(_) => unreachable!("answered over HTTP above"),
    }
    client.close().await?;
    Ok(())
}

/// `ctl info` and `ctl cluster`: a GET of `path` from the admin listener.
async fn show_admin<T: Show + serde::de::DeserializeOwned>(
    args: &InfoArgs,
    path: &'static str,
    out: &Output,
) -> Result<(), CtlError> {
    let answer: T = admin::get(&args.admin, path, args.admin_token.as_deref())
        .await
        .map_err(|source| CtlError::Admin { addr: args.admin.clone(), path, source })?;
    out.one(&answer)
}

/// Shows what `events` yields as it comes, until Ctrl-C or the stream ends;
/// says on stderr when the connection is lost and when it is back.
async fn follow<S: Stream + Unpin>(
    client: &Client,
    mut events: S,
    mut show: impl FnMut(S::Item) -> Result<(), CtlError>,
) -> Result<(), CtlError> {
    // The first connection is already seen: each change is a loss or a return.
    let mut state = client.state();
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        tokio::select! {
            event = events.next() => match event {
                Some(event) => show(event)?,
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

    fn one(&self, value: &impl Show) -> Result<(), CtlError> {
        match self.json {
            true => self.json(&value.json()),
            false => Ok(self.line(&value.show())?),
        }
    }

    /// A list: a JSON array, or one line each.
    fn all<T: Show>(&self, values: &[T]) -> Result<(), CtlError> {
        match self.json {
            true => self.json(&values.iter().map(Show::json).collect::<Vec<_>>()),
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

/// How a result reads: for a person, and as JSON.
trait Show {
    fn show(&self) -> String;
    /// The JSON form: the admin API's where it has one; ids as [`Id`].
    fn json(&self) -> impl Serialize + '_;
}

impl Show for PresenceEntry {
    /// `user 42  busy  "in a meeting"  last seen 2026-11-21 12:00:00Z  v123`
    fn show(&self) -> String {
        let last_seen = match self.last_seen_ms {
            0 => "never seen".to_owned(),
            ms => format!("last seen {}", timestamp(ms)),
        };
        let text = quoted(self.text.as_str());
        format!("user {}  {}{text}  {last_seen}  v{}", self.user, status_name(self.status), self.version)
    }

    fn json(&self) -> impl Serialize + '_ {
        Entry::from(self)
    }
}

impl Show for Stats {
    fn show(&self) -> String {
        format!(
            "online users {}\nsessions {}\nwatches {}\nconnections {}",
            self.online_users, self.sessions, self.watches, self.connections
        )
    }

    fn json(&self) -> impl Serialize + '_ {
        self
    }
}

/// A feed item as JSON: the payload in hex, as the protocol's types write
/// bytes.
#[derive(Serialize)]
struct ItemJson {
    post: Id,
    author: Id,
    kind: u8,
    payload: String,
}

impl From<&Item> for ItemJson {
    fn from(item: &Item) -> Self {
        ItemJson { post: Id(item.post), author: Id(item.author), kind: item.kind, payload: hex::encode(&item.payload) }
    }
}

impl Show for Item {
    /// `117711235493986304  user 1  kind 3  "hello"`
    fn show(&self) -> String {
        let payload = String::from_utf8_lossy(&self.payload);
        format!("{}  user {}  kind {}  {payload:?}", self.post, self.author, self.kind)
    }

    fn json(&self) -> impl Serialize + '_ {
        ItemJson::from(self)
    }
}

/// A pushed event as JSON: `{"event":"item",…}`, `{"event":"deleted","post":"…"}`
/// or `{"event":"gap"}`.
#[derive(Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
enum LiveJson {
    Item(ItemJson),
    Deleted { post: Id },
    Gap,
}

impl Show for LiveEvent {
    fn show(&self) -> String {
        match self {
            LiveEvent::Item(item) => item.show(),
            LiveEvent::Deleted { post } => format!("deleted post {post}"),
            LiveEvent::Gap => "items may have been missed; `timeline --min-id` the newest id shown catches up".into(),
        }
    }

    fn json(&self) -> impl Serialize + '_ {
        match self {
            LiveEvent::Item(item) => LiveJson::Item(item.into()),
            LiveEvent::Deleted { post } => LiveJson::Deleted { post: Id(*post) },
            LiveEvent::Gap => LiveJson::Gap,
        }
    }
}

impl Show for Info {
    fn show(&self) -> String {
        let unknown = || "unknown".to_owned();
        let uptime = match (self.uptime_s, self.started_at_ms) {
            (Some(up), Some(at)) => {
                format!("{} (since {})", humantime::format_duration(Duration::from_secs(up)), timestamp(at))
            }
            _ => unknown(),
        };
        let rss = self.rss_bytes.map_or_else(unknown, |b| format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0)));
        let stats = &self.stats;
        format!(
            "version {}\npid {}\nuptime {uptime}\nresident memory {rss}\nconnections {} past HELLO, {} open\nsessions {}\n\
             online users {}\nwatches {}\nposts {} since start\nstore {}",
            self.version,
            self.pid,
            stats.connections,
            self.connections_open,
            stats.sessions,
            stats.online_users,
            stats.watches,
            self.posts,
            if self.store_up { "up" } else { "down" },
        )
    }

    fn json(&self) -> impl Serialize + '_ {
        self
    }
}

impl Show for ClusterInfo {
    fn show(&self) -> String {
        let (Some(node), Some(version)) = (&self.node, self.version) else {
            return "not in a cluster (no [cluster] section): this node runs alone".to_owned();
        };
        let joined = if self.joined { "joined" } else { "not joined (cannot reach NATS?)" };
        let mut text = format!(
            "node {node}, {joined}\nmap version {}, {} partitions, {} members",
            version.0,
            self.partitions,
            self.members.len()
        );
        for m in &self.members {
            let me = if m.node == *node { " (this node)" } else { "" };
            text.push_str(&format!(
                "\n  {:<20} {:>6} partitions  {}  joined at revision {}{me}",
                m.node, m.partitions_owned, m.advertise, m.joined.0
            ));
        }
        text
    }

    fn json(&self) -> impl Serialize + '_ {
        self
    }
}

/// `2026-11-21 12:00:00Z`, from Unix ms.
fn timestamp(ms: u64) -> String {
    let at = humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms));
    at.to_string().replacen('T', " ", 1)
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
        let delete = parse(&["delete", "0x2a"]).unwrap();
        assert!(matches!(delete.command, Command::Delete { post: 42 }), "{delete:?}");
    }

    /// `heartline ctl …` as clap reads it.
    fn parse(args: &[&str]) -> Result<Args, clap::Error> {
        #[derive(clap::Parser)]
        struct Ctl {
            #[command(flatten)]
            args: Args,
        }
        <Ctl as clap::Parser>::try_parse_from(std::iter::once("ctl").chain(args.iter().copied())).map(|c| c.args)
    }

    #[test]
    fn the_page_size_is_the_protocols_and_clap_enforces_it() {
        let help = <Args as clap::Args>::augment_args(clap::Command::new("ctl"))
            .find_subcommand_mut("timeline")
            .unwrap()
            .render_help()
            .to_string();
        assert!(help.contains(&format!("1 to {}", limits::MAX_PAGE)), "{help}");
        for bad in ["0", "101"] {
            let refused = parse(&["timeline", "--limit", bad]).unwrap_err();
            assert_eq!(refused.kind(), clap::error::ErrorKind::ValueValidation, "{bad}");
            assert!(refused.to_string().contains("1..=100"), "{refused}");
        }
        assert!(parse(&["timeline", "--limit", "100"]).is_ok());
    }

    #[test]
    fn gateway_is_a_flag_of_the_commands_that_only_read() {
        for reads in [
            &["presence", "get", "--gateway", "7"][..],
            &["presence", "watch", "7", "--gateway"],
            &["stats", "--gateway"],
        ] {
            assert!(parse(reads).unwrap().command.gateway(), "{reads:?}");
        }
        for writes in
            [&["post", "--gateway", "hi"][..], &["follow", "--gateway", "7"], &["presence", "set", "--gateway", "busy"]]
        {
            assert_eq!(parse(writes).unwrap_err().kind(), clap::error::ErrorKind::UnknownArgument, "{writes:?}");
        }
    }

    #[test]
    fn ids_are_decimal_in_text_and_strings_in_json() {
        let item = Item { post: 117_711_235_493_986_304, author: u64::MAX, kind: 3, payload: "hi".into() };
        assert_eq!(item.show(), r#"117711235493986304  user 18446744073709551615  kind 3  "hi""#);
        assert_eq!(
            serde_json::to_string(&item.json()).unwrap(),
            r#"{"post":"117711235493986304","author":"18446744073709551615","kind":3,"payload":"6869"}"#
        );
        let pushed = LiveEvent::Item(item);
        assert_eq!(
            serde_json::to_string(&pushed.json()).unwrap(),
            r#"{"event":"item","post":"117711235493986304","author":"18446744073709551615","kind":3,"payload":"6869"}"#
        );
        let deleted = LiveEvent::Deleted { post: 42 };
        assert_eq!(deleted.show(), "deleted post 42");
        assert_eq!(serde_json::to_string(&deleted.json()).unwrap(), r#"{"event":"deleted","post":"42"}"#);
        assert_eq!(serde_json::to_string(&LiveEvent::Gap.json()).unwrap(), r#"{"event":"gap"}"#);
        let entry = PresenceEntry { user: 7, status: Status::Away, version: 1 << 60, last_seen_ms: 5, text: "".into() };
        assert_eq!(
            serde_json::to_string(&entry.json()).unwrap(),
            r#"{"user":"7","status":"away","version":"1152921504606846976","last_seen_ms":5,"text":""}"#
        );
    }

    #[test]
    fn info_reads_well() {
        let info = Info {
            version: "0.1.0".into(),
            pid: 4242,
            started_at_ms: Some(1_795_262_400_000),
            uptime_s: Some(3 * 3_600 + 125),
            rss_bytes: Some(25 * 1024 * 1024 + 512 * 1024),
            now_ms: 1_795_273_325_000,
            stats: Stats { online_users: 1, sessions: 2, watches: 3, connections: 4 },
            connections_open: 5,
            posts: 6,
            store_up: true,
        };
        assert_eq!(
            info.show(),
            "version 0.1.0\npid 4242\nuptime 3h 2m 5s (since 2026-11-21 12:00:00Z)\nresident memory 25.5 MiB\n\
             connections 4 past HELLO, 5 open\nsessions 2\nonline users 1\nwatches 3\nposts 6 since start\nstore up"
        );
        let unknown = Info { started_at_ms: None, uptime_s: None, rss_bytes: None, store_up: false, ..info };
        let text = unknown.show();
        assert!(text.contains("uptime unknown\nresident memory unknown\n") && text.ends_with("store down"), "{text}");
    }

    #[test]
    fn cluster_reads_well() {
        use crate::admin::api::ClusterMember;
        let member = |node: &str, joined, owned| ClusterMember {
            node: node.into(),
            advertise: format!("{node}:7400"),
            joined: Id(joined),
            partitions_owned: owned,
        };
        let info = ClusterInfo {
            enabled: true,
            node: Some("a".into()),
            joined: true,
            version: Some(Id(12)),
            partitions: 1_024,
            members: vec![member("a", 3, 500), member("b", 12, 524)],
        };
        assert_eq!(
            info.show(),
            "node a, joined\nmap version 12, 1024 partitions, 2 members\n  \
             a                       500 partitions  a:7400  joined at revision 3 (this node)\n  \
             b                       524 partitions  b:7400  joined at revision 12"
        );
        let json = serde_json::to_value(&info).unwrap();
        assert_eq!((json["version"].as_str(), json["members"][1]["joined"].as_str()), (Some("12"), Some("12")));
        let alone = ClusterInfo::new(None);
        assert!(alone.show().starts_with("not in a cluster"));
        assert_eq!(
            serde_json::to_string(&alone).unwrap(),
            r#"{"enabled":false,"joined":false,"partitions":0,"members":[]}"#
        );
    }
}
