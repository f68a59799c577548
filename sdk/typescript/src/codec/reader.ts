/**
 * Reads the fields of one message body left to right (SPEC.md §2, §2.6): fixed-width
 * integers, varints (§2.2), bytes(max) and text(max) (§2.4), counts checked before any
 * allocation (§3), reserved bits (§2.7), enumerations (§2.8) and exact consumption.
 *
 * Every check that fails throws {@link ProtocolError} with the code the spec names; the
 * first failing check decides it. Nothing else is thrown for any input.
 */
import { ErrorCodeName, fail } from "./errors.js";
import { U32_LIMIT } from "./limits.js";

const UTF8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

export class BodyReader {
  private pos = 0;
  /** Cleared by the forms decoders accept but encoders never produce (§11). */
  canonical = true;

  constructor(private readonly bytes: Uint8Array) {}

  /** Bytes not read yet. */
  get left(): number {
    return this.bytes.length - this.pos;
  }

  /** The next `n` bytes, copied out so that a kept value does not pin the whole input. */
  take(n: number): Uint8Array {
    if (n > this.left) fail(`${n} bytes wanted, ${this.left} left`);
    const chunk = this.bytes.slice(this.pos, this.pos + n);
    this.pos += n;
    return chunk;
  }

  u8(): number {
    if (this.left < 1) fail("body ends early");
    return this.bytes[this.pos++]!;
  }

  u16(): number {
    const high = this.u8();
    return (high << 8) | this.u8();
  }

  /** A u64, fixed 8 bytes, big-endian (post ids). */
  u64(): bigint {
    let value = 0n;
    for (const byte of this.take(8)) value = (value << 8n) | BigInt(byte);
    return value;
  }

  /** An unsigned LEB128 varint of up to 64 bits, minimal, at most 10 bytes (§2.2). */
  varint(): bigint {
    // Up to 4 bytes (28 bits) accumulate in a number; longer values in a bigint.
    let small = 0;
    for (let i = 0; i < 4; i++) {
      const byte = this.varintByte(i);
      small |= (byte & 0x7f) << (7 * i);
      if ((byte & 0x80) === 0) return BigInt(small >>> 0);
    }
    let value = BigInt(small >>> 0);
    for (let i = 4; i < 10; i++) {
      const byte = this.varintByte(i);
      value |= BigInt(byte & 0x7f) << BigInt(7 * i);
      if ((byte & 0x80) === 0) return value;
    }
    return fail("varint longer than 10 bytes"); // unreachable: byte 10 is at most 01
  }

  private varintByte(index: number): number {
    if (this.left < 1) fail("varint truncated");
    const byte = this.bytes[this.pos++]!;
    if (index === 9 && byte > 0x01) fail("varint overflows 64 bits");
    if (index > 0 && byte === 0x00) fail("varint not minimal");
    return byte;
  }

  /** A varint whose value is at most 0xFFFF_FFFF. */
  varint32(): number {
    return this.varintBelow(U32_LIMIT, "MALFORMED");
  }

  /** A varint below `limit` (at most 2^53), as a number; else the named error. */
  varintBelow(limit: number, error: ErrorCodeName): number {
    const value = this.varint();
    if (value >= BigInt(limit)) fail(`varint ${value} not below ${limit}`, error);
    return Number(value);
  }

  /** A u8 enumeration: `table[value]`, where null marks an undefined value. */
  enumeration<T>(table: readonly (T | null)[], what: string, lowest = 0): T {
    const value = this.u8();
    const named = value >= lowest ? table[value] : undefined;
    if (named === undefined || named === null) return fail(`${what} ${value} undefined`);
    return named;
  }

  /** A flag byte whose bits outside `defined` are reserved (§2.7). */
  flags(defined: number): number {
    const value = this.u8();
    if (value & ~defined & 0xff) fail(`reserved flag bit set in 0x${value.toString(16)}`);
    return value;
  }

  /** bytes(max): length checked against `max` (the field's error), then the bytes left. */
  blob(max: number, overMax: ErrorCodeName): Uint8Array {
    const length = this.varint();
    if (length > BigInt(max)) fail(`length ${length} over ${max}`, overMax);
    return this.take(Number(length));
  }

  /** text(max): a bytes(max) that must be valid UTF-8. */
  text(max: number, overMax: ErrorCodeName): string {
    const raw = this.blob(max, overMax);
    try {
      return UTF8.decode(raw);
    } catch {
      return fail("text is not valid UTF-8");
    }
  }

  /**
   * A count: at least `minimum`, at most `limit` (else `overLimit`), and small enough
   * that `count × minEntrySize` bytes remain (§3), checked before anything is reserved.
   */
  count(limit: number, overLimit: ErrorCodeName, minEntrySize: number, minimum = 0): number {
    const count = this.varint();
    if (count < BigInt(minimum)) fail(`count ${count} below ${minimum}`);
    if (count > BigInt(limit)) fail(`count ${count} over ${limit}`, overLimit);
    const n = Number(count);
    if (n * minEntrySize > this.left) fail(`count ${n} larger than the body`);
    return n;
  }

  /** Bytes left over after the last field (§2.6): checked last. */
  finish(): void {
    if (this.left !== 0) fail(`${this.left} trailing bytes`);
  }
}
