/**
 * The protocol's error codes (SPEC.md §9) and the one exception the codec throws on bad
 * input, {@link ProtocolError}, which names the code a v1 receiver must produce.
 *
 * Owns the code table (number, name, whether the connection closes). It does not decide
 * what a client does about an error; that belongs to the client.
 */

/** SPEC.md §9.1: the error codes of protocol version 1. */
export const ErrorCode = {
  MALFORMED: 1,
  UNKNOWN_TYPE: 2,
  FRAME_TOO_LARGE: 3,
  UNSUPPORTED_VERSION: 4,
  UNAUTHENTICATED: 5,
  BAD_TOKEN: 6,
  TOKEN_EXPIRED: 7,
  HANDSHAKE_TIMEOUT: 8,
  UNEXPECTED: 9,
  FORBIDDEN: 10,
  LIMIT_EXCEEDED: 11,
  PAYLOAD_TOO_LARGE: 12,
  NOT_FOUND: 13,
  RATE_LIMITED: 14,
  SLOW_CONSUMER: 15,
  SESSION_EXPIRED: 16,
  UNAVAILABLE: 17,
  TOO_MANY_CONNECTIONS: 18,
  INTERNAL: 19,
  DISCONNECTED: 20,
  MOVED: 21,
} as const;

export type ErrorCodeName = keyof typeof ErrorCode;
export type ErrorCodeNumber = (typeof ErrorCode)[ErrorCodeName];

const NAME_BY_NUMBER = new Map<number, ErrorCodeName>(
  (Object.keys(ErrorCode) as ErrorCodeName[]).map((name) => [ErrorCode[name], name]),
);

/** Codes after which the server closes the connection ("closes = yes" in §9.1). */
const FATAL: ReadonlySet<ErrorCodeName> = new Set<ErrorCodeName>([
  "MALFORMED",
  "FRAME_TOO_LARGE",
  "UNSUPPORTED_VERSION",
  "UNAUTHENTICATED",
  "BAD_TOKEN",
  "TOKEN_EXPIRED",
  "HANDSHAKE_TIMEOUT",
  "UNEXPECTED",
  "SLOW_CONSUMER",
  "SESSION_EXPIRED",
  "TOO_MANY_CONNECTIONS",
  "DISCONNECTED",
]);

/**
 * The name of a code received in an ERROR frame. Codes this version does not define
 * (0, 22..=65,535) read as INTERNAL (§9.3).
 */
export function errorCodeName(code: number): ErrorCodeName {
  return NAME_BY_NUMBER.get(code) ?? "INTERNAL";
}

/** Whether the server closes the connection after sending this code (§9.1). */
export function isFatalCode(name: ErrorCodeName): boolean {
  return FATAL.has(name);
}

/**
 * Input that breaks the protocol: the error a v1 decoder must report for it. The codec
 * throws nothing else on bad input. `frameType` is the type byte when the frame got that
 * far; `closes` says whether the connection ends: always for a server-to-client type
 * (client-close, §4.4), else as §9.1 says.
 */
export class ProtocolError extends Error {
  readonly codeName: ErrorCodeName;
  readonly code: ErrorCodeNumber;
  readonly frameType: number | undefined;
  readonly closes: boolean;

  constructor(codeName: ErrorCodeName, detail: string, frameType?: number, closes?: boolean) {
    super(`${codeName}: ${detail}`);
    this.name = "ProtocolError";
    this.codeName = codeName;
    this.code = ErrorCode[codeName];
    this.frameType = frameType;
    this.closes = closes ?? isFatalCode(codeName);
  }

  /** The same error, attributed to a frame type (and so to its direction). */
  inFrame(frameType: number, closes: boolean): ProtocolError {
    return new ProtocolError(this.codeName, this.message.slice(this.codeName.length + 2), frameType, closes);
  }
}

/** Throws MALFORMED (or the named code): the shorthand every decoder uses. */
export function fail(detail: string, codeName: ErrorCodeName = "MALFORMED"): never {
  throw new ProtocolError(codeName, detail);
}

/** A value the caller asked to encode that no valid frame can carry. */
export class EncodeError extends RangeError {
  constructor(detail: string) {
    super(detail);
    this.name = "EncodeError";
  }
}
