/**
 * One WebSocket connection through its life: HELLO, WELCOME (SPEC.md §4.6–§4.7), then
 * frames in and out and heartbeats on absolute deadlines (§5.4, §7). It checks what the
 * server sends against the state machine of §5.3 and closes on a violation (client-close,
 * §4.4), but knows nothing of requests, watches or reconnection: that is the client's job.
 */
import { CODECS } from "../codec/bodies.js";
import type { Device, SettableStatus } from "../codec/enums.js";
import { EncodeError, ProtocolError } from "../codec/errors.js";
import { decodeFrame, encodeFrame } from "../codec/frame.js";
import { HeartbeatState } from "../codec/heartbeat.js";
import { MAX_FRAME, PROTOCOL_VERSION, U32_LIMIT } from "../codec/limits.js";
import type { Message, Welcome } from "../codec/messages.js";
import {
  DisconnectedError,
  HeartlineError,
  InvalidArgumentError,
  ProtocolViolationError,
  RedirectError,
  ServerError,
  TimeoutError,
} from "./errors.js";
import { messageBytes, SOCKET_OPEN, WebSocketConstructor, WebSocketLike } from "./socket.js";

/**
 * A heartbeat interval below this (a server may announce any, even 0) is raised to it, so
 * that a misconfigured server cannot make the client spin.
 */
const MIN_HEARTBEAT_PERIOD_MS = 100;

export interface ConnectionParams {
  url: string;
  WebSocket: WebSocketConstructor;
  token: Uint8Array;
  device: Device;
  /** The session to resume (0n: a new one). */
  resume: bigint;
  /** The session's status as last set: a resumed session keeps it (§7.1). */
  status: SettableStatus;
  timeoutMs: number;
}

export interface ConnectionHandlers {
  /** A frame from the server, after WELCOME, of a type the client may receive. */
  message(message: Message): void;
  /** The connection ended (once). `error` says why. */
  closed(error: HeartlineError): void;
}

const monotonicNow = (): number => globalThis.performance?.now() ?? Date.now();

export class Connection {
  readonly welcome: Welcome;
  /** WELCOME named the session `resume` asked for (§6.7). */
  readonly resumed: boolean;
  private readonly heartbeat: HeartbeatState;
  private readonly welcomedAt: number;
  private readonly periodMs: number;
  private nextTick = 1;
  private heartbeatTimer: ReturnType<typeof setTimeout> | undefined;
  private handlers: ConnectionHandlers | undefined;
  /** Frames that came before handlers were attached. */
  private early: Message[] = [];
  private goawaySeen = false;
  /** The last fatal ERROR not tied to a request: why the server is closing. */
  private fatal: ServerError | undefined;
  private closedWith: HeartlineError | undefined;

  private constructor(private readonly socket: WebSocketLike, welcome: Welcome, params: ConnectionParams) {
    this.welcome = welcome;
    this.welcomedAt = monotonicNow();
    this.resumed = params.resume !== 0n && welcome.session === params.resume;
    this.heartbeat = new HeartbeatState(welcome.heartbeatIntervalMs, this.resumed ? params.status : "online");
    this.periodMs = Math.max(welcome.heartbeatIntervalMs, MIN_HEARTBEAT_PERIOD_MS);
    socket.addEventListener("message", (event: { data: unknown }) => this.onFrame(event.data));
    socket.addEventListener("close", () => this.end(this.fatal ?? new DisconnectedError("the server closed the connection")));
    socket.addEventListener("error", () => this.end(this.fatal ?? new DisconnectedError("the connection failed")));
    this.scheduleHeartbeat();
  }

  /** Opens the socket, sends HELLO and waits for WELCOME, within `params.timeoutMs`. */
  static open(params: ConnectionParams): Promise<Connection> {
    return new Promise((resolve, reject) => {
      let socket: WebSocketLike;
      try {
        socket = new params.WebSocket(params.url);
      } catch (e) {
        reject(new DisconnectedError(`cannot open ${params.url}: ${String(e)}`));
        return;
      }
      socket.binaryType = "arraybuffer";
      let settled = false;
      const settle = (outcome: Connection | HeartlineError): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        if (outcome instanceof Connection) return resolve(outcome);
        if (socket.readyState <= SOCKET_OPEN) socket.close();
        reject(outcome);
      };
      const timer = setTimeout(() => settle(new TimeoutError(`no WELCOME within ${params.timeoutMs} ms`)), params.timeoutMs);
      let refusal: HeartlineError | undefined;
      socket.addEventListener("open", () => {
        const hello = encodeFrame({
          type: "HELLO",
          version: PROTOCOL_VERSION,
          role: "client",
          device: params.device,
          wantUdp: false,
          resume: params.resume,
          token: params.token,
        });
        socket.send(hello);
      });
      socket.addEventListener("message", (event: { data: unknown }) => {
        if (settled) return;
        const outcome = Connection.readWelcome(event.data);
        if (outcome instanceof ServerError || outcome instanceof RedirectError) {
          // The server closes after it (§9.2); report the refusal, not the close.
          refusal = outcome;
          return;
        }
        settle(outcome instanceof HeartlineError ? outcome : new Connection(socket, outcome, params));
      });
      const lost = (): void => settle(refusal ?? new DisconnectedError(`connection to ${params.url} closed during the handshake`));
      socket.addEventListener("close", lost);
      socket.addEventListener("error", lost);
    });
  }

  /** The first frame: WELCOME, the ERROR refusing HELLO or a REDIRECT; anything else is a violation. */
  private static readWelcome(data: unknown): Welcome | HeartlineError {
    const bytes = messageBytes(data);
    if (!bytes) return new ProtocolViolationError("a text WebSocket message");
    let message: Message;
    try {
      message = decodeFrame(bytes).message;
    } catch (e) {
      return new ProtocolViolationError(`before WELCOME: ${e instanceof Error ? e.message : String(e)}`);
    }
    if (message.type === "ERROR") return new ServerError(message.code, message.message, message.req);
    if (message.type === "REDIRECT") return new RedirectError(message.node, message.addr, message.ws, message.version);
    if (message.type !== "WELCOME") return new ProtocolViolationError(`${message.type} before WELCOME`);
    if (message.version < 1 || message.version > PROTOCOL_VERSION) {
      return new ProtocolViolationError(`WELCOME version ${message.version}`);
    }
    return message;
  }

  /** Where frames go from now on; frames that came meanwhile are delivered first. */
  attach(handlers: ConnectionHandlers): void {
    this.handlers = handlers;
    const early = this.early;
    this.early = [];
    for (const message of early) handlers.message(message);
    if (this.closedWith) handlers.closed(this.closedWith);
  }

  get isOpen(): boolean {
    return this.closedWith === undefined;
  }

  /** The session's status as last set by the client: the heartbeat encoder's state (§7.1). */
  noteStatus(status: SettableStatus): void {
    this.heartbeat.status = status;
  }

  /**
   * Sends one frame. Throws {@link InvalidArgumentError} for a message that no valid frame
   * within the server's `max_frame` can carry, {@link DisconnectedError} when closed.
   */
  send(message: Message): void {
    if (!this.isOpen || this.socket.readyState !== SOCKET_OPEN) throw new DisconnectedError("not connected");
    let frame: Uint8Array;
    try {
      frame = encodeFrame(message, Math.min(this.welcome.maxFrame, MAX_FRAME));
    } catch (e) {
      if (e instanceof EncodeError) throw new InvalidArgumentError(e.message);
      throw e;
    }
    this.socket.send(frame);
  }

  /** Closes the socket without sending anything more (client-close, or done). */
  close(error: HeartlineError): void {
    this.end(error);
    if (this.socket.readyState <= SOCKET_OPEN) this.socket.close();
  }

  /** Stops heartbeats after GOAWAY: the server reads nothing more (§4.9). */
  stopHeartbeats(): void {
    clearTimeout(this.heartbeatTimer);
    this.heartbeatTimer = undefined;
  }

  private end(error: HeartlineError): void {
    if (this.closedWith) return;
    this.closedWith = error;
    this.stopHeartbeats();
    this.handlers?.closed(error);
  }

  private onFrame(data: unknown): void {
    if (this.closedWith) return;
    const bytes = messageBytes(data);
    if (!bytes) return this.close(new ProtocolViolationError("a text WebSocket message"));
    let message: Message;
    try {
      message = decodeFrame(bytes, this.welcome.maxFrame).message;
    } catch (e) {
      // An undefined type is skipped (§4.4); every other error is a client-close.
      if (e instanceof ProtocolError && !e.closes) return;
      return this.close(new ProtocolViolationError(e instanceof Error ? e.message : String(e)));
    }
    const violation = this.violationOf(message);
    if (violation) return this.close(new ProtocolViolationError(violation));
    if (message.type === "GOAWAY") {
      this.goawaySeen = true;
      this.stopHeartbeats();
    }
    if (message.type === "ERROR" && message.req === 0n) {
      const error = new ServerError(message.code, message.message, message.req);
      if (error.fatal) this.fatal = error;
    }
    if (this.handlers) this.handlers.message(message);
    else this.early.push(message);
  }

  /** What §5.3 forbids the server to send here, or null. */
  private violationOf(message: Message): string | null {
    if (!CODECS[message.type].serverToClient) return `the server sent ${message.type}, a client-to-server type`;
    if (message.type === "WELCOME") return "a second WELCOME";
    if (message.type === "GOAWAY" && this.goawaySeen) return "a second GOAWAY";
    return null;
  }

  /**
   * Ticks on absolute deadlines from WELCOME: heartbeat k is due k periods after it. Missed
   * ticks are skipped, not bunched: the next heartbeat carries the current tick number.
   */
  private scheduleHeartbeat(): void {
    const due = this.welcomedAt + this.nextTick * this.periodMs;
    this.heartbeatTimer = setTimeout(() => this.sendHeartbeat(), Math.max(0, due - monotonicNow()));
  }

  private sendHeartbeat(): void {
    if (!this.isOpen) return;
    const elapsed = monotonicNow() - this.welcomedAt;
    const tick = Math.max(this.nextTick, Math.floor(elapsed / this.periodMs));
    this.nextTick = tick + 1;
    const heartbeat = this.heartbeat.encode({
      seq: tick % U32_LIMIT,
      ts: Math.floor(elapsed) % U32_LIMIT,
      status: this.heartbeat.status,
    });
    try {
      this.send(heartbeat);
    } catch {
      return; // the close event reports it
    }
    this.scheduleHeartbeat();
  }
}
