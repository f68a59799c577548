/**
 * TCP framing (SPEC.md §4.1): a varint length of at most 3 bytes, a type byte and a body.
 * Decodes one complete frame into a {@link Message} (what a WebSocket message carries),
 * encodes a message into a frame, and splits a byte stream into frames.
 *
 * Errors are {@link ProtocolError}s with the §9 code; `closes` follows §9.1 and treats any
 * error in a server-to-client type as a client-close (§4.4).
 */
import { codecOf, codecOfTypeByte } from "./bodies.js";
import { EncodeError, fail, ProtocolError } from "./errors.js";
import { MAX_FRAME } from "./limits.js";
import type { Message } from "./messages.js";
import { BodyReader } from "./reader.js";
import { BodyWriter } from "./writer.js";

const MAX_LENGTH_BYTES = 3;

/** The length prefix of a frame: its value and how many bytes it took. */
export interface FrameLength {
  length: number;
  prefixSize: number;
}

/**
 * Reads a frame length from the start of `bytes` (§4.1 steps 1–4). Returns null when more
 * bytes are needed to know it; throws FRAME_TOO_LARGE or MALFORMED.
 */
export function readFrameLength(bytes: Uint8Array, maxFrame: number = MAX_FRAME): FrameLength | null {
  let length = 0;
  for (let i = 0; i < MAX_LENGTH_BYTES; i++) {
    if (i >= bytes.length) return null;
    const byte = bytes[i]!;
    length |= (byte & 0x7f) << (7 * i);
    if ((byte & 0x80) === 0) {
      if (i > 0 && byte === 0) fail("frame length not minimal");
      if (length === 0) fail("frame length 0");
      if (length > maxFrame) fail(`frame length ${length} over ${maxFrame}`, "FRAME_TOO_LARGE");
      return { length, prefixSize: i + 1 };
    }
  }
  return fail("a 4th frame length byte", "FRAME_TOO_LARGE");
}

export interface DecodedFrame {
  message: Message;
  /**
   * False for the two forms decoders accept but encoders never produce (§11): a batch
   * wider than necessary, a WELCOME key without a UDP port.
   */
  canonical: boolean;
}

/**
 * Decodes exactly one complete frame, length prefix included. Bytes missing or left over
 * are MALFORMED (a WebSocket message carries exactly one frame). Throws only
 * {@link ProtocolError}; an undefined type is UNKNOWN_TYPE, which does not close.
 */
export function decodeFrame(bytes: Uint8Array, maxFrame: number = MAX_FRAME): DecodedFrame {
  const prefix = readFrameLength(bytes, maxFrame);
  if (prefix === null) fail("frame length truncated");
  const end = prefix.prefixSize + prefix.length;
  if (bytes.length !== end) fail(bytes.length < end ? "frame truncated" : "bytes after the frame");
  const typeByte = bytes[prefix.prefixSize]!;
  const codec = codecOfTypeByte(typeByte);
  if (!codec) throw new ProtocolError("UNKNOWN_TYPE", `type 0x${typeByte.toString(16)}`, typeByte, false);
  const body = new BodyReader(bytes.subarray(prefix.prefixSize + 1, end));
  try {
    const message = codec.decode(body);
    body.finish();
    return { message, canonical: body.canonical };
  } catch (e) {
    if (e instanceof ProtocolError) throw e.inFrame(typeByte, codec.serverToClient || e.closes);
    throw e;
  }
}

/** Encodes `message` as one frame. Throws {@link EncodeError} when it would exceed `maxFrame`. */
export function encodeFrame(message: Message, maxFrame: number = MAX_FRAME): Uint8Array {
  const codec = codecOf(message);
  const body = new BodyWriter();
  body.u8(codec.code);
  codec.encode(body, message);
  const length = body.length;
  if (length > maxFrame) throw new EncodeError(`${message.type} frame of ${length} bytes over max_frame ${maxFrame}`);
  const frame = new BodyWriter();
  frame.varint(length);
  frame.raw(body.bytes());
  return frame.bytes();
}

/**
 * Cuts a TCP byte stream into whole frames (for a transport that is a stream). Feed it
 * chunks as they arrive; it returns the frames completed so far, prefix included.
 */
export class FrameSplitter {
  private pending = new Uint8Array(0);

  constructor(private readonly maxFrame: number = MAX_FRAME) {}

  push(chunk: Uint8Array): Uint8Array[] {
    const data = new Uint8Array(this.pending.length + chunk.length);
    data.set(this.pending);
    data.set(chunk, this.pending.length);
    const frames: Uint8Array[] = [];
    let offset = 0;
    for (;;) {
      const prefix = readFrameLength(data.subarray(offset), this.maxFrame);
      if (prefix === null || data.length - offset < prefix.prefixSize + prefix.length) break;
      const end = offset + prefix.prefixSize + prefix.length;
      frames.push(data.slice(offset, end));
      offset = end;
    }
    this.pending = data.slice(offset);
    return frames;
  }
}
