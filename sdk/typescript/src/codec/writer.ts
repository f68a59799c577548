/**
 * Builds a message body or a frame: the encoding side of the primitives of SPEC.md §2.
 * Encoding is canonical (§11): varints are minimal.
 *
 * Values no valid frame can carry (a negative id, a status text over its limit, …) throw
 * {@link EncodeError}; the writer never produces bytes a v1 decoder would reject.
 */
import { EncodeError } from "./errors.js";
import { U32_LIMIT, U64_MAX } from "./limits.js";

const UTF8 = new TextEncoder();

export class BodyWriter {
  private buf = new Uint8Array(64);
  private len = 0;

  get length(): number {
    return this.len;
  }

  private reserve(extra: number): void {
    if (this.len + extra <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.len + extra) size *= 2;
    const grown = new Uint8Array(size);
    grown.set(this.buf.subarray(0, this.len));
    this.buf = grown;
  }

  raw(data: Uint8Array): void {
    this.reserve(data.length);
    this.buf.set(data, this.len);
    this.len += data.length;
  }

  u8(value: number): void {
    checkInteger(value, 0xff, "u8");
    this.reserve(1);
    this.buf[this.len++] = value;
  }

  u16(value: number): void {
    checkInteger(value, 0xffff, "u16");
    this.u8(value >>> 8);
    this.u8(value & 0xff);
  }

  /** A u64, fixed 8 bytes, big-endian. */
  u64(value: bigint): void {
    checkU64(value, "u64");
    for (let shift = 56n; shift >= 0n; shift -= 8n) this.u8(Number((value >> shift) & 0xffn));
  }

  /** A minimal unsigned LEB128 varint of a u64. */
  varint(value: bigint | number): void {
    if (typeof value === "number") {
      checkInteger(value, Number.MAX_SAFE_INTEGER, "varint");
      if (value < 0x8000_0000) {
        this.reserve(5);
        while (value >= 0x80) {
          this.buf[this.len++] = (value & 0x7f) | 0x80;
          value >>>= 7;
        }
        this.buf[this.len++] = value;
        return;
      }
      value = BigInt(value);
    }
    checkU64(value, "varint");
    while (value >= 0x80n) {
      this.u8(Number(value & 0x7fn) | 0x80);
      value >>= 7n;
    }
    this.u8(Number(value));
  }

  varint32(value: number): void {
    checkInteger(value, U32_LIMIT - 1, "varint32");
    this.varint(value);
  }

  /** bytes(max). */
  blob(data: Uint8Array, max: number, what: string): void {
    if (data.length > max) throw new EncodeError(`${what}: ${data.length} bytes, at most ${max}`);
    this.varint(data.length);
    this.raw(data);
  }

  /** text(max): `max` counts UTF-8 bytes. */
  text(value: string, max: number, what: string): void {
    this.blob(UTF8.encode(value), max, what);
  }

  /** The bytes written so far. */
  bytes(): Uint8Array {
    return this.buf.slice(0, this.len);
  }
}

export function checkInteger(value: number, max: number, what: string): void {
  if (!Number.isInteger(value) || value < 0 || value > max) {
    throw new EncodeError(`${what}: ${value} is not an integer in 0..=${max}`);
  }
}

export function checkU64(value: bigint, what: string): void {
  if (typeof value !== "bigint" || value < 0n || value > U64_MAX) {
    throw new EncodeError(`${what}: ${String(value)} is not a u64 (pass a bigint in 0..=2^64-1)`);
  }
}

/** The number of bytes of the minimal varint of `value`. */
export function varintSize(value: number): number {
  let size = 1;
  while (value >= 0x80) {
    value = Math.floor(value / 128);
    size++;
  }
  return size;
}
