//! What can go wrong for a client request.
//!
//! Owns the [`ClientError`] type and the mapping of ERROR frames and framing
//! failures onto it. It must not decide what to do about an error (retry,
//! reconnect, give up): that is the connection task's job.

use heartline_proto::{ErrorCode, FrameError, Text};

/// A failed client operation.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with ERROR. Programs act on `code`; `message` is
    /// for logs (SPEC.md §4.10). Codes this version does not define arrive as
    /// [`ErrorCode::Internal`] (§9.3).
    #[error("{code}: {message}")]
    Server { code: ErrorCode, message: String },
    /// The socket failed (connect refused, reset, ...).
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The server broke the protocol, so the client closed the connection
    /// (client-close, SPEC.md §4.4).
    #[error("protocol violation by the server: {0}")]
    Protocol(String),
    /// The connection was lost before the reply came: the request may or may
    /// not have taken effect (SPEC.md §10.2).
    #[error("connection lost before the reply; the outcome is unknown")]
    Disconnected,
    /// The client is closed: [`Client::close`](super::Client::close) was
    /// called, or it gave up (see [`Client::state`](super::Client::state)).
    #[error("the client is closed")]
    Closed,
    /// No connection, or no reply, within the configured time.
    #[error("timed out")]
    Timeout,
    /// A request the server would refuse as a protocol violation, so it was
    /// never sent.
    #[error("invalid argument: {0}")]
    InvalidArgument(&'static str),
    /// The server does not own this user and named the one that does
    /// (REDIRECT, SPEC.md §14.3); reported when the redirects in a row
    /// exceeded [`ClientConfig::max_redirects`](super::ClientConfig::max_redirects).
    #[error("redirected to {node} at {addr} once too often")]
    Redirected { node: String, addr: String },
    /// TLS cannot be set up: no trusted certificate, or a bad name. A failed
    /// handshake (an untrusted certificate) is an [`Io`](Self::Io) error.
    #[error("TLS: {0}")]
    Tls(String),
}

impl ClientError {
    /// The error for an ERROR frame.
    pub(crate) fn server(code: u16, message: &Text) -> Self {
        let code = ErrorCode::from_u16(code).unwrap_or(ErrorCode::Internal);
        Self::Server { code, message: message.as_str().to_owned() }
    }

    /// The server's error code, when the server refused.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Self::Server { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// Whether connecting again could succeed: not for a refused token or an
    /// unsupported version, which a retry would only repeat, nor after
    /// DISCONNECTED: the application ended the user's sessions and does not
    /// want them back on their own.
    pub(crate) fn worth_retrying(&self) -> bool {
        !matches!(
            self.code(),
            Some(
                ErrorCode::Disconnected
                    | ErrorCode::BadToken
                    | ErrorCode::TokenExpired
                    | ErrorCode::UnsupportedVersion
                    | ErrorCode::Malformed
                    | ErrorCode::Unauthenticated
                    | ErrorCode::Unexpected
            )
        )
    }
}

impl From<FrameError> for ClientError {
    fn from(e: FrameError) -> Self {
        match e {
            FrameError::Io(e) => Self::Io(e),
            other => Self::Protocol(other.to_string()),
        }
    }
}
