/**
 * The most-significant-bit-first bit stream of the batch layout (SPEC.md §7.4): stream bit
 * 0 is bit 0x80 of the first byte, and each value is written most significant bit first.
 */

export class BitReader {
  private pos = 0;

  constructor(private readonly bytes: Uint8Array) {}

  /** Reads `width` bits (0..=64). The caller has checked that they exist. */
  read(width: number): bigint {
    let value = 0n;
    let remaining = width;
    while (remaining > 0) {
      const chunk = Math.min(remaining, 30);
      value = (value << BigInt(chunk)) | BigInt(this.readSmall(chunk));
      remaining -= chunk;
    }
    return value;
  }

  /** Reads `width` bits, at most 30, as a number. */
  readSmall(width: number): number {
    let value = 0;
    for (let i = 0; i < width; i++) {
      const byte = this.bytes[this.pos >>> 3] ?? 0;
      value = (value << 1) | ((byte >>> (7 - (this.pos & 7))) & 1);
      this.pos++;
    }
    return value;
  }
}

export class BitWriter {
  private readonly bytes: number[] = [];
  private pos = 0;

  /** Appends the low `width` bits (0..=64) of `value`. */
  write(value: bigint, width: number): void {
    for (let bit = width - 1; bit >= 0; bit--) {
      if ((this.pos & 7) === 0) this.bytes.push(0);
      if ((value >> BigInt(bit)) & 1n) this.bytes[this.bytes.length - 1]! |= 0x80 >>> (this.pos & 7);
      this.pos++;
    }
  }

  /** The stream, zero-padded to a byte boundary. */
  finish(): Uint8Array {
    return Uint8Array.from(this.bytes);
  }
}

/** The number of bits needed for `value` (0 for 0): 64 − leading_zeros. */
export function bitLength(value: bigint): number {
  return value === 0n ? 0 : value.toString(2).length;
}
