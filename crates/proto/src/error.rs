//! Error codes of the wire protocol and the error a decoder returns.
//!
//! Owns the numeric code table of SPEC.md §Errors and which codes close the
//! connection. It must not decide *when* the server sends an error; that is
//! the connection logic's job.

use serde::{Deserialize, Serialize};

macro_rules! error_codes {
    ($($name:ident = $code:literal, $wire:literal, closes: $closes:literal;)*) => {
        /// A protocol error code (SPEC.md §Errors).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "SCREAMING_SNAKE_CASE")]
        #[repr(u16)]
        pub enum ErrorCode {
            $($name = $code,)*
        }

        impl ErrorCode {
            /// The code for a wire value; `None` for codes this version does not define.
            pub fn from_u16(code: u16) -> Option<Self> {
                match code {
                    $($code => Some(Self::$name),)*
                    _ => None,
                }
            }

            /// Whether the sender closes the connection after sending this error.
            pub fn closes(self) -> bool {
                match self {
                    $(Self::$name => $closes,)*
                }
            }

            /// The name used in SPEC.md and in the conformance vectors.
            pub fn name(self) -> &'static str {
                match self {
                    $(Self::$name => $wire,)*
                }
            }
        }
    };
}

error_codes! {
    Malformed = 1, "MALFORMED", closes: true;
    UnknownType = 2, "UNKNOWN_TYPE", closes: false;
    FrameTooLarge = 3, "FRAME_TOO_LARGE", closes: true;
    UnsupportedVersion = 4, "UNSUPPORTED_VERSION", closes: true;
    Unauthenticated = 5, "UNAUTHENTICATED", closes: true;
    BadToken = 6, "BAD_TOKEN", closes: true;
    TokenExpired = 7, "TOKEN_EXPIRED", closes: true;
    HandshakeTimeout = 8, "HANDSHAKE_TIMEOUT", closes: true;
    Unexpected = 9, "UNEXPECTED", closes: true;
    Forbidden = 10, "FORBIDDEN", closes: false;
    LimitExceeded = 11, "LIMIT_EXCEEDED", closes: false;
    PayloadTooLarge = 12, "PAYLOAD_TOO_LARGE", closes: false;
    NotFound = 13, "NOT_FOUND", closes: false;
    RateLimited = 14, "RATE_LIMITED", closes: false;
    SlowConsumer = 15, "SLOW_CONSUMER", closes: true;
    SessionExpired = 16, "SESSION_EXPIRED", closes: true;
    Unavailable = 17, "UNAVAILABLE", closes: false;
    TooManyConnections = 18, "TOO_MANY_CONNECTIONS", closes: true;
    Internal = 19, "INTERNAL", closes: false;
    Disconnected = 20, "DISCONNECTED", closes: true;
    Moved = 21, "MOVED", closes: false;
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a frame body or datagram could not be decoded.
///
/// `req` is the request id when the decoder had already read it, so the
/// ERROR frame can name the request it answers (0 otherwise).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {detail}")]
pub struct DecodeError {
    pub code: ErrorCode,
    pub req: u64,
    pub detail: &'static str,
}

impl DecodeError {
    pub(crate) fn new(code: ErrorCode, detail: &'static str) -> Self {
        Self { code, req: 0, detail }
    }

    pub(crate) fn malformed(detail: &'static str) -> Self {
        Self::new(ErrorCode::Malformed, detail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_unknown_codes_are_none() {
        for code in 1..=21u16 {
            let e = ErrorCode::from_u16(code).expect("defined");
            assert_eq!(e as u16, code);
        }
        assert_eq!(ErrorCode::from_u16(0), None);
        assert_eq!(ErrorCode::from_u16(22), None);
    }

    #[test]
    fn only_the_spec_listed_codes_close() {
        let closing: Vec<_> =
            (1..=21u16).filter_map(ErrorCode::from_u16).filter(|c| c.closes()).map(|c| c as u16).collect();
        assert_eq!(closing, [1, 3, 4, 5, 6, 7, 8, 9, 15, 16, 18, 20]);
    }
}
