/**
 * The zigzag transform of SPEC.md §2.3, on signed 64-bit values held in bigints. In v1 it
 * carries only the heartbeat jitter (§7).
 */
import { U64_MAX } from "./limits.js";

const I64_MIN = -(1n << 63n);
const I64_MAX = (1n << 63n) - 1n;

/** zigzag(n) = (n << 1) ^ (n >> 63), as a u64. */
export function zigzag(n: bigint): bigint {
  if (n < I64_MIN || n > I64_MAX) throw new RangeError(`zigzag: ${n} is not an i64`);
  return n >= 0n ? n << 1n : ((-n) << 1n) - 1n;
}

/** unzigzag(z) = (z >> 1) ^ -(z & 1), as an i64. */
export function unzigzag(z: bigint): bigint {
  if (z < 0n || z > U64_MAX) throw new RangeError(`unzigzag: ${z} is not a u64`);
  return (z & 1n) === 0n ? z >> 1n : -(z >> 1n) - 1n;
}
