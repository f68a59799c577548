/**
 * The batch heartbeat layout (SPEC.md §7.4): the body of BATCH_HEARTBEAT and of a UDP
 * BATCH datagram. Ids ascend strictly and are sent as a first id plus fixed-width gaps;
 * statuses, when present, follow as a flag bit per entry and 3 bits per flagged entry.
 */
import { BitReader, BitWriter, bitLength } from "./bits.js";
import { SettableStatus, STATUSES, wireValue } from "./enums.js";
import { EncodeError, ErrorCodeName, fail } from "./errors.js";
import { MAX_BATCH, U64_MAX } from "./limits.js";
import type { BatchHeartbeat } from "./messages.js";
import type { BodyReader } from "./reader.js";
import type { BodyWriter } from "./writer.js";

export type Batch = Omit<BatchHeartbeat, "type">;

/**
 * Decodes a batch, counts checked before anything is reserved. `overLimit` is the error for
 * a count over 65,536: LIMIT_EXCEEDED on TCP; a UDP receiver drops the datagram (§8.6).
 */
export function decodeBatch(r: BodyReader, overLimit: ErrorCodeName = "LIMIT_EXCEEDED"): Batch {
  const count = r.varint();
  if (count > BigInt(MAX_BATCH)) fail(`batch count ${count} over ${MAX_BATCH}`, overLimit);
  if (count === 0n) return { sessions: [], statuses: [] };
  const n = Number(count);
  const statusesPresent = (r.flags(0x01) & 1) === 1;
  const first = r.varint();
  const width = r.u8();
  if (width > 64) fail(`batch width ${width} over 64`);
  const left = r.left;
  let need = (n - 1) * width + (statusesPresent ? n : 0);
  if (need > 8 * left) fail("batch bit stream shorter than its count needs");
  const bits = new BitReader(r.take(left));
  const sessions: bigint[] = [first];
  let largestGap = 0n;
  for (let i = 1; i < n; i++) {
    const gap = bits.read(width);
    if (gap > largestGap) largestGap = gap;
    const id = sessions[i - 1]! + gap + 1n;
    if (id > U64_MAX) fail("batch id beyond 2^64 - 1");
    sessions.push(id);
  }
  const flagged: number[] = [];
  if (statusesPresent) {
    for (let i = 0; i < n; i++) if (bits.readSmall(1)) flagged.push(i);
    if (flagged.length === 0) fail("batch says statuses present but flags none");
  }
  need += 3 * flagged.length;
  if (left !== Math.ceil(need / 8)) fail("batch bit stream length is not exact");
  const statuses: [number, SettableStatus][] = flagged.map((index) => {
    const code = bits.readSmall(3);
    if (code < 1 || code > 4) fail(`batch status ${code} undefined`);
    return [index, STATUSES[code] as SettableStatus];
  });
  if (bits.read(8 * left - need) !== 0n) fail("batch padding bits are not zero");
  if (width !== bitLength(largestGap)) r.canonical = false; // wider than needed: decode-only
  return { sessions, statuses };
}

/** Encodes a batch with the minimal width; "statuses present" only when one is flagged. */
export function encodeBatch(w: BodyWriter, batch: Batch): void {
  const { sessions, statuses } = batch;
  if (sessions.length > MAX_BATCH) throw new EncodeError(`batch: ${sessions.length} sessions, at most ${MAX_BATCH}`);
  w.varint(sessions.length);
  if (sessions.length === 0) {
    if (statuses.length > 0) throw new EncodeError("batch: statuses without sessions");
    return;
  }
  const gaps: bigint[] = [];
  for (let i = 1; i < sessions.length; i++) {
    const gap = sessions[i]! - sessions[i - 1]! - 1n;
    if (gap < 0n) throw new EncodeError("batch: session ids must ascend strictly");
    gaps.push(gap);
  }
  const statusByIndex = new Map<number, number>();
  let previous = -1;
  for (const [index, status] of statuses) {
    const code = wireValue(STATUSES, status);
    if (!Number.isInteger(index) || index <= previous || index >= sessions.length || code < 1) {
      throw new EncodeError("batch: statuses must name entries in ascending order with a settable status");
    }
    statusByIndex.set(index, code);
    previous = index;
  }
  w.u8(statusByIndex.size > 0 ? 1 : 0);
  w.varint(sessions[0]!);
  const width = bitLength(gaps.reduce((a, b) => (b > a ? b : a), 0n));
  w.u8(width);
  const bits = new BitWriter();
  for (const gap of gaps) bits.write(gap, width);
  if (statusByIndex.size > 0) {
    for (let i = 0; i < sessions.length; i++) bits.write(statusByIndex.has(i) ? 1n : 0n, 1);
    for (const code of statusByIndex.values()) bits.write(BigInt(code), 3);
  }
  w.raw(bits.finish());
}
