/**
 * The TCP heartbeat state both ends keep per session (SPEC.md §7.1) and the delta encoding
 * of §7.2: the client turns its next (seq, ts, status) into a HEARTBEAT message, the server
 * applies a decoded HEARTBEAT to move its copy. `seq` and `ts` wrap modulo 2^32.
 */
import type { SettableStatus } from "./enums.js";
import { EncodeError, fail } from "./errors.js";
import { U32_LIMIT } from "./limits.js";
import type { Heartbeat } from "./messages.js";

export interface HeartbeatValues {
  /** The heartbeat tick number. */
  seq: number;
  /** The client's monotonic ms since WELCOME, modulo 2^32. */
  ts: number;
  status: SettableStatus;
}

function mod32(value: number): number {
  return ((value % U32_LIMIT) + U32_LIMIT) % U32_LIMIT;
}

export class HeartbeatState implements HeartbeatValues {
  seq: number;
  ts: number;
  status: SettableStatus;

  /**
   * The state at WELCOME: seq 0, ts 0, the session's status (online for a new session, the
   * kept one for a resumed session) and the announced interval.
   */
  constructor(readonly intervalMs: number, status: SettableStatus = "online", seq = 0, ts = 0) {
    this.seq = seq;
    this.ts = ts;
    this.status = status;
  }

  /** Encoder (client): the HEARTBEAT carrying `next`, and the state moved to it. */
  encode(next: HeartbeatValues): Heartbeat {
    for (const value of [next.seq, next.ts]) {
      if (!Number.isInteger(value) || value < 0 || value >= U32_LIMIT) throw new EncodeError(`heartbeat seq/ts ${value} is not a u32`);
    }
    const dseq = mod32(next.seq - this.seq);
    const jitterMs = mod32(next.ts - this.ts) - this.intervalMs;
    const status = next.status !== this.status ? next.status : null;
    this.seq = next.seq;
    this.ts = next.ts;
    this.status = next.status;
    return { type: "HEARTBEAT", jitterMs, dseq, status };
  }

  /**
   * Decoder (server): applies a decoded HEARTBEAT. `interval + jitter` outside 0..2^32 is
   * MALFORMED and leaves the state unchanged.
   */
  apply(heartbeat: Heartbeat): void {
    const dts = this.intervalMs + heartbeat.jitterMs;
    if (dts < 0 || dts >= U32_LIMIT) fail(`heartbeat time step ${dts} outside 0..2^32`);
    this.seq = mod32(this.seq + heartbeat.dseq);
    this.ts = mod32(this.ts + dts);
    if (heartbeat.status !== null) this.status = heartbeat.status;
  }
}
