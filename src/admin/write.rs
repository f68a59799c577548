//! The write API: what an application's backend does on a user's behalf
//! without a binary client — set and clear a server-side presence session,
//! disconnect a user, publish and delete posts, follow, unfollow, block,
//! unblock, read timelines — and minting tokens. docs/api.md is the guide;
//! `/v1/openapi.json` ([`super::openapi`]) the contract.
//!
//! Owns the JSON shapes of these routes, their input checks and the mapping
//! of the spec's error codes to HTTP statuses. It must not carry out the
//! writes itself: presence changes go through [`Backend`]'s write methods,
//! feed requests through [`Backend::feed`] as the same PUBLISH, DELETE,
//! GRAPH and TIMELINE a protocol client sends, so both paths share one
//! set of rules (limits, durability before the reply, fan-out admission).
//! Requests here are the backend's: no per-session rate applies.

use bytes::Bytes;
use hyper::{Method, Response, StatusCode};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::api::{parse_id, GraphCounts, Id, BAD_ID};
use super::{json, Backend, Body};
use heartline_proto::auth::{Claims, Subject, MAX_GATEWAY_NAME};
use heartline_proto::{limits, Cursor, ErrorCode, GraphOp, Item, Message, Source, Status, Text};

/// Largest request body: a post of 65,536 bytes as hex, with room to spare.
pub const MAX_BODY: usize = 256 * 1024;
/// Longest token lifetime the API mints: 30 days.
pub const MAX_TOKEN_TTL_S: u64 = 30 * 24 * 3_600;
/// A minted token's lifetime when the request names none: 1 hour.
const DEFAULT_TOKEN_TTL_S: u64 = 3_600;

/// An error as every route of the admin API gives it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApiError {
    /// The spec's error name (SPEC.md §9.1), e.g. `NOT_FOUND`; HTTP-only
    /// conditions have names of their own (docs/api.md).
    pub code: &'static str,
    pub message: String,
}

/// The HTTP status for a spec error code.
fn status_of(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::NotFound => StatusCode::NOT_FOUND,
        ErrorCode::Forbidden => StatusCode::FORBIDDEN,
        ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::LimitExceeded => StatusCode::UNPROCESSABLE_ENTITY,
        ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::Unauthenticated | ErrorCode::BadToken | ErrorCode::TokenExpired => StatusCode::UNAUTHORIZED,
        ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::BAD_REQUEST,
    }
}

/// An error response with a spec code.
pub fn refuse(code: ErrorCode, message: impl Into<String>) -> Response<Body> {
    json(status_of(code), &ApiError { code: code.name(), message: message.into() })
}

/// An error response for a condition the spec has no code for.
pub fn http_error(status: StatusCode, code: &'static str, message: impl Into<String>) -> Response<Body> {
    json(status, &ApiError { code, message: message.into() })
}

fn malformed(message: impl Into<String>) -> Response<Body> {
    refuse(ErrorCode::Malformed, message)
}

/// The body as `T`, or what is wrong with it.
fn body<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, String> {
    serde_json::from_slice(bytes).map_err(|e| format!("the body does not fit this route: {e}"))
}

/// A status a session may be set to.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SessionStatus {
    Online,
    Away,
    Busy,
    /// Online for the user alone; offline to everyone else.
    Invisible,
}

impl From<SessionStatus> for Status {
    fn from(s: SessionStatus) -> Self {
        match s {
            SessionStatus::Online => Status::Online,
            SessionStatus::Away => Status::Away,
            SessionStatus::Busy => Status::Busy,
            SessionStatus::Invisible => Status::Invisible,
        }
    }
}

/// `PUT /v1/users/{user}/presence`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetPresence {
    pub status: SessionStatus,
    /// The user's status text (at most 128 bytes of UTF-8); empty or absent clears it.
    #[serde(default)]
    pub text: String,
}

/// The user's server-side session after a PUT.
#[derive(Debug, Serialize, ToSchema)]
pub struct ServerSession {
    pub user: Id,
    pub session: Id,
    pub status: SessionStatus,
    pub text: String,
    /// It ends this long after the PUT unless another PUT renews it (the daemon's TTL).
    pub expires_in_ms: u32,
}

/// `DELETE /v1/users/{user}/presence`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Cleared {
    pub user: Id,
    /// Whether there was a server-side session to end.
    pub cleared: bool,
}

/// `POST /v1/users/{user}/disconnect`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Disconnected {
    pub user: Id,
    /// Sessions ended: live, in their grace window, server-side, behind gateways.
    pub sessions: usize,
    /// Client connections closed with ERROR DISCONNECTED.
    pub connections: usize,
}

/// `POST /v1/users/{user}/posts`: the payload as UTF-8 text or as hex, not both.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewPost {
    /// The application's content type, 0–255 (0 when absent).
    #[serde(default)]
    pub kind: u8,
    /// The payload as UTF-8 text.
    pub payload: Option<String>,
    /// The payload as lowercase or uppercase hex, for bytes that are not UTF-8.
    pub payload_hex: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Published {
    pub post: Id,
    pub author: Id,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Deleted {
    pub post: Id,
}

/// One timeline item. The payload is given as `payload` when it is UTF-8,
/// else as `payload_hex`.
#[derive(Debug, Serialize, ToSchema)]
pub struct PostItem {
    pub post: Id,
    pub author: Id,
    pub kind: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload_hex: Option<String>,
}

impl From<Item> for PostItem {
    fn from(item: Item) -> Self {
        let (payload, payload_hex) = match std::str::from_utf8(&item.payload) {
            Ok(text) => (Some(text.to_owned()), None),
            Err(_) => (None, Some(hex::encode(&item.payload))),
        };
        PostItem { post: Id(item.post), author: Id(item.author), kind: item.kind, payload, payload_hex }
    }
}

/// A page of a timeline, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct TimelinePage {
    pub items: Vec<PostItem>,
}

/// `GET /v1/users/{user}/timeline` query parameters (SPEC.md §10.3).
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TimelineQuery {
    /// Read this author's posts (as the user may see them) instead of the user's home timeline.
    #[param(value_type = Option<String>)]
    pub author: Option<String>,
    /// Items per page, 1–100 (20 when absent).
    pub limit: Option<u8>,
    /// Only items older than this post id.
    #[param(value_type = Option<String>)]
    pub max_id: Option<String>,
    /// Only items newer than this post id, newest first.
    #[param(value_type = Option<String>)]
    pub since_id: Option<String>,
    /// Only items newer than this post id, the page right after it.
    #[param(value_type = Option<String>)]
    pub min_id: Option<String>,
}

/// `POST /v1/tokens`: a token for a user or for a gateway, not both.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    pub user: Option<Id>,
    /// A gateway's name, 1–64 bytes of UTF-8.
    pub gateway: Option<String>,
    /// Lifetime in seconds, 1–2,592,000 (30 days); 3,600 when absent.
    pub ttl_s: Option<u64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Token {
    /// The token as lowercase hex, as `heartline token` prints it; HELLO
    /// carries the bytes it encodes (SPEC.md §12.1).
    pub token: String,
    /// Unix seconds from which it is refused.
    pub expires_at: u64,
}

const DEFAULT_PAGE: u8 = 20;

/// Routes a write, or a timeline read, under `/v1/users/{user}/…` or
/// `/v1/tokens`; `None` when the path is none of these. The body was read
/// already (bounded) so that an idempotency key can be checked against it.
pub async fn route(
    backend: &dyn Backend,
    method: &Method,
    path: &str,
    query: Option<&str>,
    body: &Bytes,
    now_s: u64,
) -> Option<Response<Body>> {
    if path == "/v1/tokens" {
        return Some(match *method {
            Method::POST => mint(backend, body, now_s),
            _ => super::method_not_allowed("POST"),
        });
    }
    let rest = path.strip_prefix("/v1/users/")?;
    let (user, tail) = rest.split_once('/')?;
    let Some(user) = parse_id(user) else { return Some(malformed(BAD_ID)) };
    let parts: Vec<&str> = tail.split('/').collect();
    Some(match (parts.as_slice(), method) {
        (["presence"], &Method::PUT) => set_presence(backend, user, body),
        (["presence"], &Method::DELETE) => clear_presence(backend, user),
        (["presence"], _) => super::method_not_allowed("PUT, DELETE"),
        (["disconnect"], &Method::POST) => disconnect(backend, user),
        (["disconnect"], _) => super::method_not_allowed("POST"),
        (["posts"], &Method::POST) => publish(backend, user, body).await,
        (["posts"], _) => super::method_not_allowed("POST"),
        (["posts", post], &Method::DELETE) => delete(backend, user, post).await,
        (["posts", _], _) => super::method_not_allowed("DELETE"),
        (["following", other], &Method::PUT | &Method::DELETE) => follow(backend, user, other, method).await,
        (["blocked", other], &Method::PUT | &Method::DELETE) => block(backend, user, other, method).await,
        (["following" | "blocked", _], _) => super::method_not_allowed("PUT, DELETE"),
        (["timeline"], &Method::GET) => timeline(backend, user, query).await,
        (["timeline"], _) => super::method_not_allowed("GET"),
        _ => return None,
    })
}

/// Set a user's server-side presence session.
///
/// Opens the user's one server-side session (a call in progress, a bot)
/// or renews it and changes its status; it counts in the user's aggregate
/// like a device's and ends after the TTL unless set again.
#[utoipa::path(put, path = "/v1/users/{user}/presence", tag = "presence",
    params(("user" = String, Path, description = "The user id, decimal")),
    request_body = SetPresence,
    responses(
        (status = 200, description = "Set; watchers were told", body = ServerSession),
        (status = 400, description = "MALFORMED", body = ApiError),
        (status = 422, description = "LIMIT_EXCEEDED: text too long, or the user's session cap", body = ApiError),
    ))]
pub fn set_presence(backend: &dyn Backend, user: u64, body: &[u8]) -> Response<Body> {
    let request: SetPresence = match self::body(body) {
        Ok(request) => request,
        Err(why) => return malformed(why),
    };
    if request.text.len() > limits::MAX_STATUS_TEXT {
        return refuse(ErrorCode::LimitExceeded, "the status text is over 128 bytes");
    }
    match backend.set_presence(user, request.status.into(), Text::from(request.text.as_str())) {
        Ok(session) => json(
            StatusCode::OK,
            &ServerSession {
                user: Id(user),
                session: Id(session),
                status: request.status,
                text: request.text,
                expires_in_ms: backend.ttl_ms(),
            },
        ),
        Err((code, message)) => refuse(code, message),
    }
}

/// End a user's server-side presence session.
#[utoipa::path(delete, path = "/v1/users/{user}/presence", tag = "presence",
    params(("user" = String, Path, description = "The user id, decimal")),
    responses((status = 200, description = "Ended, or there was none", body = Cleared)))]
pub fn clear_presence(backend: &dyn Backend, user: u64) -> Response<Body> {
    json(StatusCode::OK, &Cleared { user: Id(user), cleared: backend.clear_presence(user) })
}

/// Disconnect a user.
///
/// Ends every session of the user at once — on connections, in a grace
/// window, server-side, behind gateways — and closes the user's client
/// connections with ERROR DISCONNECTED (SPEC.md §9.1), which clients do
/// not answer by reconnecting. Watchers see one change. It does not stop
/// the user from connecting again: revoke their tokens for that.
#[utoipa::path(post, path = "/v1/users/{user}/disconnect", tag = "presence",
    params(("user" = String, Path, description = "The user id, decimal")),
    responses((status = 200, description = "What was ended", body = Disconnected)))]
pub fn disconnect(backend: &dyn Backend, user: u64) -> Response<Body> {
    json(StatusCode::OK, &backend.disconnect(user))
}

/// Publish a post as the user.
///
/// Answered once the post is durable (SPEC.md §10.2); followers' home
/// timelines and live connections get it as they would a client's post.
#[utoipa::path(post, path = "/v1/users/{user}/posts", tag = "feed",
    params(("user" = String, Path, description = "The author's user id, decimal")),
    request_body = NewPost,
    responses(
        (status = 201, description = "Stored", body = Published),
        (status = 400, description = "MALFORMED", body = ApiError),
        (status = 413, description = "PAYLOAD_TOO_LARGE: over the server's `feed.max_payload`", body = ApiError),
        (status = 503, description = "UNAVAILABLE: the store or the fan-out queue cannot take it now; nothing was written", body = ApiError),
    ))]
pub async fn publish(backend: &dyn Backend, user: u64, body: &[u8]) -> Response<Body> {
    let post: NewPost = match self::body(body) {
        Ok(post) => post,
        Err(why) => return malformed(why),
    };
    let payload = match (post.payload, post.payload_hex) {
        (Some(text), None) => Bytes::from(text),
        (None, Some(hex)) => match hex::decode(hex) {
            Ok(bytes) => Bytes::from(bytes),
            Err(_) => return malformed("payload_hex is not hex"),
        },
        _ => return malformed("give payload or payload_hex"),
    };
    match backend.feed(user, Message::Publish { req: 1, kind: post.kind, payload }).await {
        Message::Published { post, .. } => json(StatusCode::CREATED, &Published { post: Id(post), author: Id(user) }),
        other => refused(other),
    }
}

/// Delete one of the user's posts.
#[utoipa::path(delete, path = "/v1/users/{user}/posts/{post}", tag = "feed",
    params(("user" = String, Path, description = "The author's user id, decimal"),
           ("post" = String, Path, description = "The post id, decimal")),
    responses(
        (status = 200, description = "Deleted; followers' live connections were told", body = Deleted),
        (status = 404, description = "NOT_FOUND: no such post of this user", body = ApiError),
        (status = 503, description = "UNAVAILABLE", body = ApiError),
    ))]
pub async fn delete(backend: &dyn Backend, user: u64, post: &str) -> Response<Body> {
    let Some(post) = parse_id(post) else { return malformed("the post id must be an unsigned 64-bit integer") };
    match backend.feed(user, Message::Delete { req: 1, post }).await {
        Message::Ok { .. } => json(StatusCode::OK, &Deleted { post: Id(post) }),
        other => refused(other),
    }
}

/// Follow (PUT) or unfollow (DELETE) a user.
#[utoipa::path(method(put, delete), path = "/v1/users/{user}/following/{other}", tag = "graph",
    params(("user" = String, Path, description = "The follower, decimal"),
           ("other" = String, Path, description = "The user followed, decimal")),
    responses(
        (status = 200, description = "Done (durable); the user's counts after it", body = GraphCounts),
        (status = 422, description = "LIMIT_EXCEEDED: following too many", body = ApiError),
        (status = 503, description = "UNAVAILABLE", body = ApiError),
    ))]
pub async fn follow(backend: &dyn Backend, user: u64, other: &str, method: &Method) -> Response<Body> {
    let op = if method == Method::PUT { GraphOp::Follow } else { GraphOp::Unfollow };
    graph(backend, user, op, other).await
}

/// Block (PUT) or unblock (DELETE) a user. Blocking ends follows both ways.
#[utoipa::path(method(put, delete), path = "/v1/users/{user}/blocked/{other}", tag = "graph",
    params(("user" = String, Path, description = "The blocker, decimal"),
           ("other" = String, Path, description = "The user blocked, decimal")),
    responses(
        (status = 200, description = "Done (durable); the user's counts after it", body = GraphCounts),
        (status = 503, description = "UNAVAILABLE", body = ApiError),
    ))]
pub async fn block(backend: &dyn Backend, user: u64, other: &str, method: &Method) -> Response<Body> {
    let op = if method == Method::PUT { GraphOp::Block } else { GraphOp::Unblock };
    graph(backend, user, op, other).await
}

async fn graph(backend: &dyn Backend, user: u64, op: GraphOp, other: &str) -> Response<Body> {
    let Some(other) = parse_id(other) else { return malformed(BAD_ID) };
    match backend.feed(user, Message::Graph { req: 1, op, user: other }).await {
        Message::Ok { .. } => {
            let (followers, following) = backend.graph_counts(user);
            json(StatusCode::OK, &GraphCounts { user: Id(user), followers, following })
        }
        other => refused(other),
    }
}

/// Read a user's home timeline, or an author's posts as the user sees them.
#[utoipa::path(get, path = "/v1/users/{user}/timeline", tag = "feed",
    params(("user" = String, Path, description = "The reader, decimal"), TimelineQuery),
    responses(
        (status = 200, description = "A page, newest first", body = TimelinePage),
        (status = 400, description = "MALFORMED", body = ApiError),
        (status = 422, description = "LIMIT_EXCEEDED: limit over 100", body = ApiError),
        (status = 503, description = "UNAVAILABLE: older items cannot be read now", body = ApiError),
    ))]
pub async fn timeline(backend: &dyn Backend, user: u64, query: Option<&str>) -> Response<Body> {
    let (source, cursor, limit) = match timeline_request(query.unwrap_or("")) {
        Ok(request) => request,
        Err((code, why)) => return refuse(code, why),
    };
    match backend.feed(user, Message::Timeline { req: 1, source, cursor, limit }).await {
        Message::Page { items, .. } => {
            json(StatusCode::OK, &TimelinePage { items: items.into_iter().map(PostItem::from).collect() })
        }
        other => refused(other),
    }
}

/// A timeline query's source, cursor and limit, checked as TIMELINE's decoder checks them.
fn timeline_request(query: &str) -> Result<(Source, Cursor, u8), (ErrorCode, String)> {
    let params: TimelineQuery =
        serde_urlencoded::from_str(query).map_err(|e| (ErrorCode::Malformed, format!("bad query: {e}")))?;
    let id = |name: &str, value: Option<String>| match value {
        None => Ok(None),
        Some(v) => parse_id(&v)
            .map(Some)
            .ok_or_else(|| (ErrorCode::Malformed, format!("{name} must be an unsigned 64-bit id"))),
    };
    let source = id("author", params.author)?.map_or(Source::Home, Source::Author);
    let cursor = Cursor {
        max_id: id("max_id", params.max_id)?,
        since_id: id("since_id", params.since_id)?,
        min_id: id("min_id", params.min_id)?,
    };
    if cursor.since_id.is_some() && cursor.min_id.is_some() {
        return Err((ErrorCode::Malformed, "since_id with min_id".into()));
    }
    match params.limit.unwrap_or(DEFAULT_PAGE) {
        0 => Err((ErrorCode::Malformed, "limit 0".into())),
        l if usize::from(l) > limits::MAX_PAGE => Err((ErrorCode::LimitExceeded, "limit over 100".into())),
        limit => Ok((source, cursor, limit)),
    }
}

/// Mint a token for a user or a gateway, signed with the daemon's current secret.
///
/// For backends that would rather not hold a secret: the alternative is
/// a JWT the backend signs itself (docs/api.md, SPEC.md §12.1).
#[utoipa::path(post, path = "/v1/tokens", tag = "tokens",
    request_body = TokenRequest,
    responses(
        (status = 201, description = "Minted", body = Token),
        (status = 400, description = "MALFORMED", body = ApiError),
    ))]
pub fn mint(backend: &dyn Backend, body: &[u8], now_s: u64) -> Response<Body> {
    let request: TokenRequest = match self::body(body) {
        Ok(request) => request,
        Err(why) => return malformed(why),
    };
    let subject = match (request.user, request.gateway) {
        (Some(Id(user)), None) => Subject::User(user),
        (None, Some(name)) if (1..=MAX_GATEWAY_NAME).contains(&name.len()) => Subject::Gateway(name),
        (None, Some(_)) => return malformed("a gateway name has 1 to 64 bytes"),
        _ => return malformed("give user or gateway"),
    };
    let ttl_s = request.ttl_s.unwrap_or(DEFAULT_TOKEN_TTL_S);
    if !(1..=MAX_TOKEN_TTL_S).contains(&ttl_s) {
        return malformed("ttl_s must be 1 to 2592000 seconds");
    }
    let claims = Claims { subject, expires_at: now_s.saturating_add(ttl_s) };
    let token = hex::encode(backend.issue(&claims));
    json(StatusCode::CREATED, &Token { token, expires_at: claims.expires_at })
}

/// A feed reply other than the one hoped for: the ERROR it is, as JSON.
fn refused(reply: Message) -> Response<Body> {
    match reply {
        Message::Error { code, message, .. } => {
            refuse(ErrorCode::from_u16(code).unwrap_or(ErrorCode::Internal), message.as_str())
        }
        other => {
            tracing::error!(reply = ?other, "unexpected feed reply to an API request");
            refuse(ErrorCode::Internal, "unexpected reply")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_codes_map_to_http_statuses() {
        assert_eq!(status_of(ErrorCode::NotFound), StatusCode::NOT_FOUND);
        assert_eq!(status_of(ErrorCode::Unavailable), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(status_of(ErrorCode::LimitExceeded), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(status_of(ErrorCode::Malformed), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn items_carry_text_or_hex() {
        let item = |payload: &'static [u8]| Item { post: 1, author: 2, kind: 0, payload: Bytes::from_static(payload) };
        let text = serde_json::to_value(PostItem::from(item(b"hi"))).unwrap();
        assert_eq!(text, serde_json::json!({"post": "1", "author": "2", "kind": 0, "payload": "hi"}));
        let bytes = serde_json::to_value(PostItem::from(item(b"\xff\x00"))).unwrap();
        assert_eq!(bytes, serde_json::json!({"post": "1", "author": "2", "kind": 0, "payload_hex": "ff00"}));
    }

    #[test]
    fn bodies_with_unknown_fields_are_refused() {
        assert!(body::<SetPresence>(br#"{"status":"busy","txt":"typo"}"#).is_err());
        assert!(body::<SetPresence>(br#"{"status":"offline"}"#).is_err(), "offline is not a session status");
        let ok: SetPresence = body(br#"{"status":"busy"}"#).unwrap();
        assert_eq!((ok.text.as_str(), Status::from(ok.status)), ("", Status::Busy));
    }
}
