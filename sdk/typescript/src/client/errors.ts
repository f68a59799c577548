/**
 * The typed exceptions the client rejects its promises with. Programs act on
 * {@link ServerError.codeName} (the spec's §9 code), never on message texts.
 */
import { errorCodeName, ErrorCodeName, isFatalCode } from "../codec/errors.js";

export class HeartlineError extends Error {
  constructor(message: string) {
    super(message);
    this.name = new.target.name;
  }
}

/** The server answered with ERROR (SPEC.md §4.10). Undefined codes read as INTERNAL (§9.3). */
export class ServerError extends HeartlineError {
  /** The code as sent, 0..=65,535. */
  readonly code: number;
  readonly codeName: ErrorCodeName;
  /** The request it answers; 0n when it is tied to none. */
  readonly req: bigint;
  /** The detail text, for logs only. */
  readonly serverMessage: string;

  constructor(code: number, serverMessage: string, req: bigint) {
    const codeName = errorCodeName(code);
    super(serverMessage ? `${codeName}: ${serverMessage}` : codeName);
    this.code = code;
    this.codeName = codeName;
    this.req = req;
    this.serverMessage = serverMessage;
  }

  /** Whether the server closes the connection after it (§9.1). */
  get fatal(): boolean {
    return isFatalCode(this.codeName);
  }
}

/**
 * The server does not own the user and names the one that does (REDIRECT, SPEC.md §14.3).
 * The client follows it by itself; it surfaces only when the redirects in a row exceeded
 * `maxRedirects` or the owner has no WebSocket URL.
 */
export class RedirectError extends HeartlineError {
  constructor(
    readonly node: string,
    readonly addr: string,
    /** The owner's WebSocket URL; empty when it has none. */
    readonly ws: string,
    readonly version: bigint,
  ) {
    super(`redirected to ${node} (${ws || addr})`);
  }
}

/** The server broke the protocol; the client closed the connection (client-close, §4.4). */
export class ProtocolViolationError extends HeartlineError {}

/** The connection was lost before the reply: the request may or may not have taken effect (§10.2). */
export class DisconnectedError extends HeartlineError {
  constructor(message = "connection lost before the reply; the outcome is unknown") {
    super(message);
  }
}

/** The client is closed: close() was called, or it gave up reconnecting. */
export class ClosedError extends HeartlineError {
  constructor(message = "the client is closed") {
    super(message);
  }
}

/** No connection, or no reply, within the configured time. */
export class TimeoutError extends HeartlineError {}

/** A request the server would refuse as a protocol violation, so it was never sent. */
export class InvalidArgumentError extends HeartlineError {}

/**
 * Codes after which reconnecting would only repeat the refusal, and DISCONNECTED: the
 * application ended the user's sessions and does not want them back on their own.
 */
const NOT_WORTH_RETRYING: ReadonlySet<ErrorCodeName> = new Set<ErrorCodeName>([
  "DISCONNECTED",
  "BAD_TOKEN",
  "TOKEN_EXPIRED",
  "UNSUPPORTED_VERSION",
  "MALFORMED",
  "UNAUTHENTICATED",
  "UNEXPECTED",
]);

/** Whether connecting again could succeed after `error`. */
export function worthRetrying(error: unknown): boolean {
  return !(error instanceof ServerError && NOT_WORTH_RETRYING.has(error.codeName));
}
