/**
 * @heartline/client: the heartline presence and feed client for browsers and Node, over
 * WebSocket, plus the wire codec it is built on (also at `@heartline/client/codec`).
 *
 * Every u64 of the protocol (user, session and post ids, versions, unix-ms times) is a
 * `bigint`, so ids above 2^53 stay exact.
 */
export { connect, HeartlineClient } from "./client.js";
export type { ClientEvents, ClientState, ConnectOptions, TimelineCursor, TimelineRequest } from "./client.js";
export type { BackoffOptions } from "./client/backoff.js";
export type { WebSocketConstructor, WebSocketLike } from "./client/socket.js";
export {
  ClosedError,
  DisconnectedError,
  HeartlineError,
  InvalidArgumentError,
  ProtocolViolationError,
  RedirectError,
  ServerError,
  TimeoutError,
} from "./client/errors.js";
export { ErrorCode, ProtocolError } from "./codec/errors.js";
export type { ErrorCodeName } from "./codec/errors.js";
export type { Device, GoawayReason, GraphOp, SettableStatus, Status } from "./codec/enums.js";
export type { Cursor, Item, PresenceEntry, ServerStats, TimelineSource, Welcome } from "./codec/messages.js";
export type { MapMember } from "./codec/messages.js";
export { nameHash, ownerOf, partitionOf, weight } from "./route.js";
