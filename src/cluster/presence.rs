//! Cross-node presence over NATS (docs/cluster.md, "Cross-node presence").
//!
//! Owns this node's second NATS connection and what travels on it:
//! - every presence change of this node's users, published on
//!   `heartline.presence.<partition>` (a PRESENCE_PUSH frame of the
//!   protocol, batched per partition);
//! - the subscriptions to the partitions whose users are watched here and
//!   owned elsewhere, one per partition while it has a watched user;
//! - the snapshots: requests to `heartline.presence.query.<owner>` (a QUERY
//!   frame, answered with a PRESENCE frame), and this node's answers for
//!   its own users;
//! - the resynchronisation when the map moves a watched partition, and
//!   of every followed user after NATS reconnects (diffs may be lost);
//! - last seen of users going offline, written each second to the
//!   replicated bucket `heartline-last-seen`, and read back for users no
//!   node has in memory.
//!
//! Which views are newer, which partitions to follow and what a new owner's
//! snapshot changes are `heartline_core::remote`'s decisions; deliveries go
//! through the node ([`Local`]) the way local changes do, privacy included.
//! This must not decide about presence itself nor block the runtime: store
//! reads run on the blocking pool, and NATS failures only degrade answers
//! to what this node knows (it retries in the background).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use heartline_core::cluster::{partition_of, ClusterMap};
use heartline_core::presence::{Change, View};
use heartline_core::remote::{follows, moved, RemotePresence};
use heartline_proto::{limits, Message, PresenceEntry, Status};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{Backoff, Cluster, FIRST_BACKOFF, MAX_BACKOFF};
use crate::config;

/// Subjects: diffs per partition, queries per node.
const DIFFS: &str = "heartline.presence";
const QUERIES: &str = "heartline.presence.query";
/// The replicated bucket of last seen times.
pub const LAST_SEEN_BUCKET: &str = "heartline-last-seen";
/// How long a snapshot request may take before it is tried again.
const REQUEST_TIMEOUT: Duration = Duration::from_millis(1_000);
/// Attempts at a new owner's snapshot before answering from this node.
const RESYNC_ATTEMPTS: u32 = 10;
/// How often the map is looked at for moved partitions.
const MAP_POLL: Duration = Duration::from_millis(50);
/// How often last seen times are written to the bucket.
const LAST_SEEN_FLUSH: Duration = Duration::from_secs(1);
/// How long reading one last seen from the bucket may hold an answer.
const LAST_SEEN_READ: Duration = Duration::from_millis(500);
/// Bucket reads or writes in flight at once.
const LAST_SEEN_IN_FLIGHT: usize = 256;
/// Commands handled before the changes among them are published.
const BATCH: usize = 4_096;

/// What the node offers this shell.
pub(crate) trait Local: Send + Sync + 'static {
    /// The in-memory view of a user with a record on this node.
    fn lookup(&self, user: u64) -> Option<View>;
    /// The last seen this node's store holds (a blocking read).
    fn stored_last_seen(&self, user: u64) -> Option<u64>;
    /// Pushes `view` of `user` to the user's watchers on this node, through
    /// the privacy point, as a local change is pushed.
    fn deliver_view(&self, user: u64, view: View);
}

enum Command {
    /// A partition got its first watched user, or lost its last.
    Follow(u32),
    Unfollow(u32),
    /// A change of a user of this node.
    Publish(PresenceEntry),
    /// Views for a PRESENCE reply, in the order of `users`.
    Lookup {
        users: Vec<u64>,
        reply: oneshot::Sender<Vec<View>>,
    },
    /// Last seen times the bucket refused, to write again.
    Unwritten(Vec<(u64, u64)>),
    /// NATS connected again, or dropped messages for a slow consumer:
    /// diffs may have been missed, every followed user is asked again.
    Resync,
}

/// The handle the node holds.
pub(crate) struct Remote {
    state: Mutex<RemotePresence>,
    commands: mpsc::UnboundedSender<Command>,
}

impl Remote {
    fn state(&self) -> MutexGuard<'_, RemotePresence> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `user` got its first watcher here (`first`) or lost its last.
    pub(crate) fn watched(&self, user: u64, first: bool) {
        let mut state = self.state();
        let partition = if first { state.watch(user) } else { state.unwatch(user) };
        if let Some(partition) = partition {
            let command = if first { Command::Follow(partition) } else { Command::Unfollow(partition) };
            let _ = self.commands.send(command);
        }
    }

    /// A change of a user this node holds sessions for: to the others.
    pub(crate) fn publish(&self, change: &Change) {
        let entry = PresenceEntry {
            user: change.user,
            status: change.status,
            version: change.version,
            last_seen_ms: change.last_seen_ms,
            text: change.text.clone(),
        };
        let _ = self.commands.send(Command::Publish(entry));
    }

    /// The views of `users` for a PRESENCE reply: this node's, a followed
    /// user's latest, or its owner's snapshot. Asked in order after the
    /// watches that preceded it, so a watch's partition is followed first.
    pub(crate) fn views(&self, users: Vec<u64>) -> oneshot::Receiver<Vec<View>> {
        let (reply, receiver) = oneshot::channel();
        let _ = self.commands.send(Command::Lookup { users, reply });
        receiver
    }
}

/// Starts the shell; it ends at `stop`.
pub(crate) fn start(
    config: &config::Cluster,
    cluster: Cluster,
    local: Arc<dyn Local>,
    stop: CancellationToken,
) -> (Arc<Remote>, JoinHandle<()>) {
    let (commands, receiver) = mpsc::unbounded_channel();
    let remote = Arc::new(Remote { state: Mutex::new(RemotePresence::new(config.partitions)), commands });
    let shell = Shell {
        me: cluster.status().node,
        nats: config.nats.clone(),
        replicas: config.replicas(),
        partitions: config.partitions,
        cluster,
        remote: remote.clone(),
        local,
        stop,
    };
    let task = tokio::spawn(shell.run(receiver));
    (remote, task)
}

/// What every task of the shell shares.
#[derive(Clone)]
struct Shell {
    me: String,
    nats: Vec<String>,
    replicas: usize,
    partitions: u32,
    cluster: Cluster,
    remote: Arc<Remote>,
    local: Arc<dyn Local>,
    stop: CancellationToken,
}

/// A connection to NATS and the bucket (absent while NATS is unreachable).
#[derive(Clone)]
struct Nats {
    client: async_nats::Client,
    /// Set once the bucket is open.
    last_seen: Arc<OnceLock<kv::Store>>,
}

fn query_subject(node: &str) -> String {
    format!("{QUERIES}.{node}")
}

fn encode(msg: &Message) -> Bytes {
    let mut buf = BytesMut::new();
    msg.encode(&mut buf);
    buf.freeze()
}

impl Shell {
    async fn run(self, mut commands: mpsc::UnboundedReceiver<Command>) {
        let mut nats: Option<Nats> = None;
        let connecting = self.clone().connect();
        tokio::pin!(connecting);
        let mut connected = false;
        let mut map = Arc::new(ClusterMap::new(0, Vec::new(), self.partitions));
        let mut subscriptions: HashMap<u32, JoinHandle<()>> = HashMap::new();
        let mut pending: HashMap<u32, Vec<PresenceEntry>> = HashMap::new();
        let mut offline: HashMap<u64, u64> = HashMap::new();
        let mut map_poll = tokio::time::interval(MAP_POLL);
        let mut flush = tokio::time::interval(LAST_SEEN_FLUSH);
        loop {
            tokio::select! {
                _ = self.stop.cancelled() => break,
                ready = &mut connecting, if !connected => {
                    connected = true;
                    let Some(ready) = ready else { break };
                    tokio::spawn(self.clone().serve_queries(ready.clone()));
                    nats = Some(ready);
                    // Everything watched so far is followed now, as after a move.
                    map = Arc::new(ClusterMap::new(0, Vec::new(), self.partitions));
                }
                command = commands.recv() => {
                    let Some(command) = command else { break };
                    // Decided on the newest map: a watch made just after a change must follow it.
                    if let Some(nats) = &nats {
                        map = self.refresh(nats, map, &mut subscriptions).await;
                    }
                    let mut next = Some(command);
                    // What is queued is handled before the batch goes out, up to a bound
                    // so that a steady stream of changes still goes out.
                    for _ in 0..BATCH {
                        let Some(command) = next.take().or_else(|| commands.try_recv().ok()) else { break };
                        match command {
                            Command::Publish(entry) => {
                                if entry.status == Status::Offline {
                                    offline.insert(entry.user, entry.last_seen_ms);
                                }
                                pending.entry(partition_of(entry.user, self.partitions)).or_default().push(entry);
                            }
                            Command::Unwritten(entries) => {
                                for (user, at) in entries {
                                    offline.entry(user).or_insert(at);
                                }
                            }
                            Command::Follow(p) => {
                                if let Some(nats) = &nats {
                                    if follows(&map, &self.me, p) && !subscriptions.contains_key(&p) {
                                        subscriptions.insert(p, self.subscribe(nats, p).await);
                                    }
                                }
                            }
                            Command::Unfollow(p) => {
                                if let Some(task) = subscriptions.remove(&p) {
                                    task.abort();
                                }
                            }
                            Command::Resync => {
                                if let Some(nats) = &nats {
                                    tracing::info!("resynchronising cross-node presence");
                                    let nothing = ClusterMap::new(0, Vec::new(), self.partitions);
                                    self.moved(nats, &nothing, &map, &mut subscriptions).await;
                                }
                            }
                            Command::Lookup { users, reply } => {
                                tokio::spawn(self.clone().lookup(nats.clone(), map.clone(), users, reply));
                            }
                        }
                    }
                    if let Some(nats) = &nats {
                        publish(nats, &mut pending).await;
                    } else {
                        pending.clear();
                    }
                }
                _ = map_poll.tick() => {
                    if let Some(nats) = &nats {
                        map = self.refresh(nats, map, &mut subscriptions).await;
                    }
                }
                _ = flush.tick() => {
                    if let Some(store) = nats.as_ref().and_then(|n| n.last_seen.get().cloned()) {
                        if !offline.is_empty() {
                            let batch: Vec<(u64, u64)> = offline.drain().collect();
                            tokio::spawn(write_last_seen(store, batch, self.remote.commands.clone()));
                        }
                    }
                }
            }
        }
        for (_, task) in subscriptions {
            task.abort();
        }
    }

    /// Connects (trying again with a growing pause) and opens the bucket;
    /// `None` at `stop`.
    async fn connect(self) -> Option<Nats> {
        let mut backoff = Backoff::new(FIRST_BACKOFF, MAX_BACKOFF);
        loop {
            let commands = self.remote.commands.clone();
            let options = async_nats::ConnectOptions::new()
                .name(format!("heartline {} presence", self.me))
                .event_callback(move |event| {
                    if matches!(event, async_nats::Event::Connected | async_nats::Event::SlowConsumer(_)) {
                        let _ = commands.send(Command::Resync);
                    }
                    async {}
                })
                // This node's own diffs are no news to it.
                .no_echo()
                .request_timeout(Some(REQUEST_TIMEOUT))
                .connection_timeout(super::CONNECT_TIMEOUT);
            tokio::select! {
                _ = self.stop.cancelled() => return None,
                client = options.connect(self.nats.as_slice()) => match client {
                    Ok(client) => {
                        tracing::info!("cross-node presence connected");
                        let last_seen = Arc::new(OnceLock::new());
                        tokio::spawn(self.clone().bucket(client.clone(), last_seen.clone()));
                        return Some(Nats { client, last_seen });
                    }
                    Err(e) => tracing::warn!(error = %e, "cross-node presence cannot reach NATS; trying again"),
                },
            }
            if !backoff.wait(&self.stop).await {
                return None;
            }
        }
    }

    /// Opens the last-seen bucket, created when missing (file-backed,
    /// replicated), trying again until it is there; until then last seen
    /// is this node's store's only.
    async fn bucket(self, client: async_nats::Client, into: Arc<OnceLock<kv::Store>>) {
        let js = jetstream::new(client);
        let config = jetstream::stream::Config {
            max_message_size: 64,
            storage: jetstream::stream::StorageType::File,
            num_replicas: self.replicas,
            ..super::kv_stream(LAST_SEEN_BUCKET, "heartline last seen of users gone offline")
        };
        let mut backoff = Backoff::new(FIRST_BACKOFF, MAX_BACKOFF);
        loop {
            match super::ensure_bucket(&js, LAST_SEEN_BUCKET, config.clone()).await {
                Ok(store) => {
                    let _ = into.set(store);
                    return tracing::info!(bucket = LAST_SEEN_BUCKET, "last-seen bucket ready");
                }
                Err(e) => tracing::warn!(error = %e, "no last-seen bucket yet; trying again"),
            }
            if !backoff.wait(&self.stop).await {
                return;
            }
        }
    }

    /// Follows `partition`: its diffs, applied in version order and
    /// delivered to this node's watchers.
    async fn subscribe(&self, nats: &Nats, partition: u32) -> JoinHandle<()> {
        let subscribed = nats.client.subscribe(format!("{DIFFS}.{partition}")).await;
        let shell = self.clone();
        tokio::spawn(async move {
            let mut subscriber = match subscribed {
                Ok(s) => s,
                Err(e) => return tracing::warn!(partition, error = %e, "cannot follow a partition"),
            };
            loop {
                let message = tokio::select! {
                    _ = shell.stop.cancelled() => return,
                    message = subscriber.next() => match message { Some(m) => m, None => return },
                };
                let Ok(Message::PresencePush { entries }) = Message::decode(message.payload) else {
                    tracing::debug!(partition, "ignoring a malformed presence diff");
                    continue;
                };
                for entry in entries {
                    let applied = shell.remote.state().apply(entry.user, View::from_entry(&entry));
                    if let Some(view) = applied {
                        shell.local.deliver_view(entry.user, view);
                    }
                }
            }
        })
    }

    /// The newest map, after acting on what moved since `map`.
    async fn refresh(
        &self,
        nats: &Nats,
        map: Arc<ClusterMap>,
        subscriptions: &mut HashMap<u32, JoinHandle<()>>,
    ) -> Arc<ClusterMap> {
        // Every change of members is a new map, not always a new version
        // (a member seen late may have joined before the newest one).
        let latest = self.cluster.status().map;
        if !Arc::ptr_eq(&latest, &map) {
            self.moved(nats, &map, &latest, subscriptions).await;
        }
        latest
    }

    /// The map moved: partitions watched here whose owner changed are
    /// followed or left, and their users resynchronised.
    async fn moved(
        &self,
        nats: &Nats,
        old: &ClusterMap,
        new: &ClusterMap,
        subscriptions: &mut HashMap<u32, JoinHandle<()>>,
    ) {
        let watched = self.remote.state().watched_partitions();
        for partition in moved(old, new, &watched) {
            let users = self.remote.state().watched_in(partition);
            if old.owner(partition).is_some_and(|o| o.node == self.me) {
                // What this node knew as their owner is what watchers saw.
                for &user in &users {
                    let view = self.local.lookup(user).unwrap_or_default();
                    self.remote.state().seed(user, view);
                }
            }
            let owner = new.owner(partition).filter(|_| follows(new, &self.me, partition)).map(|o| o.node.clone());
            match owner {
                Some(_) if !subscriptions.contains_key(&partition) => {
                    subscriptions.insert(partition, self.subscribe(nats, partition).await);
                }
                None => {
                    if let Some(task) = subscriptions.remove(&partition) {
                        task.abort();
                    }
                }
                Some(_) => {}
            }
            tokio::spawn(self.clone().resync(nats.clone(), owner, users));
        }
    }

    /// Asks the new owner (or this node) for `users` and pushes what differs.
    async fn resync(self, nats: Nats, owner: Option<String>, users: Vec<u64>) {
        // What is known before asking: a diff read meanwhile is newer than the answer.
        let asked: Vec<Option<u64>> = {
            let state = self.remote.state();
            users.iter().map(|&user| state.version_of(user)).collect()
        };
        let mut views = None;
        if let Some(owner) = &owner {
            for _ in 0..RESYNC_ATTEMPTS {
                if self.stop.is_cancelled() {
                    return;
                }
                if let Some(answer) = request(&nats, owner, &users).await {
                    views = Some(answer);
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        let views = match views {
            Some(views) => views,
            None => self.local_views(Some(&nats), &users).await,
        };
        let now = crate::server::now_ms();
        for ((user, view), asked) in users.into_iter().zip(views).zip(asked) {
            let changed = self.remote.state().resync(user, view, now, asked);
            if let Some(view) = changed {
                self.local.deliver_view(user, view);
            }
        }
    }

    /// Views of `users` for a PRESENCE reply.
    async fn lookup(
        self,
        nats: Option<Nats>,
        map: Arc<ClusterMap>,
        users: Vec<u64>,
        reply: oneshot::Sender<Vec<View>>,
    ) {
        let mut views: Vec<Option<View>> = vec![None; users.len()];
        let mut asks: HashMap<String, Vec<usize>> = HashMap::new();
        {
            let state = self.remote.state();
            for (i, &user) in users.iter().enumerate() {
                let partition = partition_of(user, self.partitions);
                if !follows(&map, &self.me, partition) {
                    continue;
                }
                match state.view(user) {
                    Some(view) => views[i] = Some(view.clone()),
                    None => asks
                        .entry(map.owner(partition).map(|o| o.node.clone()).unwrap_or_default())
                        .or_default()
                        .push(i),
                }
            }
        }
        if let Some(nats) = &nats {
            for (owner, indices) in asks {
                let asked: Vec<u64> = indices.iter().map(|&i| users[i]).collect();
                let Some(answer) = request(nats, &owner, &asked).await else { continue };
                let mut state = self.remote.state();
                for (i, view) in indices.into_iter().zip(answer) {
                    // A diff that arrived meanwhile may be newer.
                    state.apply(users[i], view.clone());
                    views[i] = Some(state.view(users[i]).cloned().unwrap_or(view));
                }
            }
        }
        let unknown: Vec<u64> = missing(&users, &views).into_iter().map(|(_, user)| user).collect();
        let mut found = self.local_views(nats.as_ref(), &unknown).await.into_iter();
        let views = views.into_iter().map(|v| v.or_else(|| found.next()).unwrap_or_default()).collect();
        let _ = reply.send(views);
    }

    /// Views of `users` from this node: memory, else the bucket's last
    /// seen, else the store's.
    async fn local_views(&self, nats: Option<&Nats>, users: &[u64]) -> Vec<View> {
        let mut views: Vec<Option<View>> = users.iter().map(|&u| self.local.lookup(u)).collect();
        if let Some(store) = nats.and_then(|n| n.last_seen.get().cloned()) {
            let read: Vec<(usize, Option<u64>)> = futures_util::stream::iter(missing(users, &views))
                .map(|(i, user)| {
                    let store = store.clone();
                    async move { (i, read_last_seen(&store, user).await) }
                })
                .buffer_unordered(LAST_SEEN_IN_FLIGHT)
                .collect()
                .await;
            for (i, last_seen) in read {
                views[i] = last_seen.map(View::offline);
            }
        }
        let missing = missing(users, &views);
        if !missing.is_empty() {
            let local = self.local.clone();
            let stored = tokio::task::spawn_blocking(move || {
                missing.into_iter().map(|(i, u)| (i, local.stored_last_seen(u).unwrap_or(0))).collect::<Vec<_>>()
            })
            .await
            .unwrap_or_default();
            for (i, last_seen) in stored {
                views[i] = Some(View::offline(last_seen));
            }
        }
        views.into_iter().map(Option::unwrap_or_default).collect()
    }

    /// Answers other nodes' snapshot requests for this node's users.
    async fn serve_queries(self, nats: Nats) {
        let mut requests = match nats.client.subscribe(query_subject(&self.me)).await {
            Ok(s) => s,
            Err(e) => return tracing::warn!(error = %e, "cannot serve presence snapshots"),
        };
        loop {
            let request = tokio::select! {
                _ = self.stop.cancelled() => return,
                request = requests.next() => match request { Some(r) => r, None => return },
            };
            let Some(reply) = request.reply else { continue };
            let Ok(Message::Query { req, users }) = Message::decode(request.payload) else { continue };
            let (shell, nats) = (self.clone(), nats.clone());
            tokio::spawn(async move {
                let views = shell.local_views(Some(&nats), &users).await;
                let entries = users.iter().zip(views).map(|(&user, view)| entry(user, &view)).collect();
                let _ = nats.client.publish(reply, encode(&Message::Presence { req, entries })).await;
            });
        }
    }
}

/// The users (with their index) that have no view yet.
fn missing(users: &[u64], views: &[Option<View>]) -> Vec<(usize, u64)> {
    users.iter().zip(views).enumerate().filter(|(_, (_, v))| v.is_none()).map(|(i, (&u, _))| (i, u)).collect()
}

/// The entry a view travels as between nodes: what others see.
fn entry(user: u64, view: &View) -> PresenceEntry {
    let text = if view.status == Status::Offline { Default::default() } else { view.text.clone() };
    PresenceEntry { user, status: view.status, version: view.version, last_seen_ms: view.last_seen_ms, text }
}

/// The views `owner` has of `users`, in their order; `None` when it does
/// not answer in time or answers something else.
async fn request(nats: &Nats, owner: &str, users: &[u64]) -> Option<Vec<View>> {
    let mut views = Vec::with_capacity(users.len());
    for chunk in users.chunks(limits::MAX_IDS) {
        let query = encode(&Message::Query { req: 0, users: chunk.to_vec() });
        let answer = nats.client.request(query_subject(owner), query).await.ok()?;
        let Ok(Message::Presence { entries, .. }) = Message::decode(answer.payload) else { return None };
        if entries.len() != chunk.len() || entries.iter().zip(chunk).any(|(e, &u)| e.user != u) {
            return None;
        }
        views.extend(entries.iter().map(View::from_entry));
    }
    Some(views)
}

/// Publishes the changes waiting, one frame per partition (at most
/// [`limits::MAX_IDS`] entries each).
async fn publish(nats: &Nats, pending: &mut HashMap<u32, Vec<PresenceEntry>>) {
    for (partition, entries) in pending.drain() {
        for chunk in entries.chunks(limits::MAX_IDS) {
            let frame = encode(&Message::PresencePush { entries: chunk.to_vec() });
            if let Err(e) = nats.client.publish(format!("{DIFFS}.{partition}"), frame).await {
                tracing::debug!(partition, error = %e, "a presence diff was not published");
            }
        }
    }
}

fn key(user: u64) -> String {
    user.to_string()
}

/// The last seen the bucket holds for `user`, if any.
async fn read_last_seen(store: &kv::Store, user: u64) -> Option<u64> {
    let value = tokio::time::timeout(LAST_SEEN_READ, store.get(key(user))).await.ok()?.ok()??;
    Some(u64::from_be_bytes(value.as_ref().try_into().ok()?))
}

/// Writes one batch; what the bucket refused goes back to be tried again.
async fn write_last_seen(store: kv::Store, batch: Vec<(u64, u64)>, commands: mpsc::UnboundedSender<Command>) {
    let written: Vec<Option<(u64, u64)>> =
        futures_util::stream::iter(batch)
            .map(|(user, at)| {
                let store = store.clone();
                async move {
                    store.put(key(user), Bytes::copy_from_slice(&at.to_be_bytes())).await.err().map(|_| (user, at))
                }
            })
            .buffer_unordered(LAST_SEEN_IN_FLIGHT)
            .collect()
            .await;
    let unwritten: Vec<(u64, u64)> = written.into_iter().flatten().collect();
    if !unwritten.is_empty() {
        tracing::warn!(count = unwritten.len(), "last seen not written to the bucket; will retry");
        let _ = commands.send(Command::Unwritten(unwritten));
    }
}
