/**
 * The heartline v1 wire codec: every TCP message of SPEC.md §4 (encode and decode with the
 * spec's checks), the heartbeat delta state (§7.1) and the batch layout (§7.4). No I/O.
 *
 * u64 fields are `bigint`s (see messages.ts); decoding throws only {@link ProtocolError}.
 */
export * from "./enums.js";
export * from "./errors.js";
export * from "./limits.js";
export type * from "./messages.js";
export { decodeFrame, encodeFrame, readFrameLength, FrameSplitter } from "./frame.js";
export type { DecodedFrame, FrameLength } from "./frame.js";
export { HeartbeatState } from "./heartbeat.js";
export type { HeartbeatValues } from "./heartbeat.js";
export { decodeBatch, encodeBatch } from "./batch.js";
export type { Batch } from "./batch.js";
export { BodyReader } from "./reader.js";
export { BodyWriter } from "./writer.js";
export { zigzag, unzigzag } from "./zigzag.js";
export { CODECS, codecOfTypeByte } from "./bodies.js";
